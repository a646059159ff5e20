//! LightGCN (and MF, its 0-layer case) with per-entity widths: forward pass, BPR loss, and the
//! exact gradient with respect to the ego table.
//!
//! Widths keep the **first** `d_n` of `d` dimensions of each node. Where the mask applies is the
//! [`Placement`]: `Input` cuts the ego table before propagation (the paper's; final vectors are
//! then dense), `Output` cuts the final vectors (what a device stores), `Both` does both. The
//! final vector is the mean of layers `0..=L` of `X_{k+1} = Â X_k`. The BPR loss of a batch of
//! `(user, positive, negative)` triples is `mean softplus(s_neg − s_pos)` plus
//! `reg · Σ (‖e_u‖² + ‖e_p‖² + ‖e_n‖²) / B` over the (masked, for `Input`/`Both`) ego rows, as in
//! the reference. Generic over the float type so that the gradient check runs in `f64`.

use num_traits::Float;

use crate::graph::Adjacency;

/// Where the width mask applies in a propagating model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Ego table cut; final vectors dense (the paper's; not exportable within the budget).
    Input,
    /// Full-width ego table; final vectors cut (exportable).
    Output,
    /// Both cut.
    Both,
}

impl Placement {
    fn masks_input(self) -> bool {
        matches!(self, Placement::Input | Placement::Both)
    }
    fn masks_output(self) -> bool {
        matches!(self, Placement::Output | Placement::Both)
    }
}

/// A LightGCN (or, with 0 layers, MF) model over users `0..U` and items `U..U+V`.
#[derive(Clone, Debug)]
pub struct LightGcn<T> {
    /// Users.
    pub n_users: usize,
    /// Items.
    pub n_items: usize,
    /// Full width d (d_max).
    pub d: usize,
    /// Propagation layers (3 for LightGCN, 0 for MF).
    pub layers: usize,
    /// Mask placement.
    pub placement: Placement,
    /// Width of every node, users then items.
    pub widths: Vec<u32>,
    /// The ego table, `(U + V) × d`, row-major.
    pub ego: Vec<T>,
}

/// The forward pass, kept for the backward pass.
pub struct Forward<T> {
    /// Final vectors, `(U + V) × d`.
    pub output: Vec<T>,
}

/// Buffers reused from step to step, so a training step allocates nothing after the first
/// (a Gowalla-sized table is 36 MB; fresh buffers cost page faults on every step).
#[derive(Debug)]
pub struct Workspace<T> {
    /// Final vectors of the last forward pass, `(U + V) × d`.
    pub output: Vec<T>,
    /// Gradient of the last `loss_and_grad_into` with respect to the ego table.
    pub grad: Vec<T>,
    x: Vec<T>,
    next: Vec<T>,
    seed: Vec<T>,
    touched: Vec<bool>,
    touched_rows: Vec<usize>,
}

impl<T> Default for Workspace<T> {
    fn default() -> Self {
        Workspace {
            output: Vec::new(),
            grad: Vec::new(),
            x: Vec::new(),
            next: Vec::new(),
            seed: Vec::new(),
            touched: Vec::new(),
            touched_rows: Vec::new(),
        }
    }
}

fn resize<T: Float>(v: &mut Vec<T>, n: usize) {
    if v.len() != n {
        v.clear();
        v.resize(n, T::zero());
    }
}

fn mask_rows<T: Float + Send + Sync>(x: &mut [T], d: usize, widths: &[u32]) {
    use rayon::prelude::*;
    x.par_chunks_mut(d * 1024).enumerate().for_each(|(b, block)| {
        for (row, &w) in block.chunks_mut(d).zip(&widths[b * 1024..]) {
            for v in row.iter_mut().skip(w as usize) {
                *v = T::zero();
            }
        }
    });
}

fn scale_all<T: Float + Send + Sync>(x: &mut [T], by: T) {
    use rayon::prelude::*;
    x.par_chunks_mut(1 << 16).for_each(|c| c.iter_mut().for_each(|v| *v = *v * by));
}

fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).fold(T::zero(), |s, (&x, &y)| s + x * y)
}

/// `ln(1 + e^x)` without overflow.
fn softplus<T: Float>(x: T) -> T {
    x.max(T::zero()) + (-x.abs()).exp().ln_1p()
}

fn sigmoid<T: Float>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

impl<T: Float + Send + Sync> LightGcn<T> {
    fn nodes(&self) -> usize {
        self.n_users + self.n_items
    }

    /// Final vectors: masked ego, `layers` propagations, mean, masked output.
    pub fn forward(&self, adj: &Adjacency) -> Forward<T> {
        let mut ws = Workspace::default();
        self.forward_into(adj, &mut ws);
        Forward { output: ws.output }
    }

    /// The forward pass into `ws.output`, reusing the workspace's buffers.
    pub fn forward_into(&self, adj: &Adjacency, ws: &mut Workspace<T>) {
        let (n, d) = (self.nodes(), self.d);
        let Workspace { output, x, next, .. } = ws;
        resize(output, n * d);
        output.copy_from_slice(&self.ego);
        if self.placement.masks_input() {
            mask_rows(output, d, &self.widths);
        }
        if self.layers > 0 {
            resize(x, n * d);
            resize(next, n * d);
            // Layer 1 reads the (masked) ego rows, which `output` holds before the sums start.
            x.copy_from_slice(output);
            for _ in 0..self.layers {
                adj.spmm_accumulate(x, d, next, output);
                std::mem::swap(x, next);
            }
        }
        let scale = T::one() / T::from(self.layers + 1).unwrap_or(T::one());
        if self.layers > 0 {
            scale_all(output, scale);
        }
        if self.placement.masks_output() {
            mask_rows(output, d, &self.widths);
        }
    }

    /// The score of user `u` and item `i` from a forward pass.
    pub fn score(&self, f: &Forward<T>, u: usize, i: usize) -> T {
        let d = self.d;
        let item = self.n_users + i;
        dot(&f.output[u * d..(u + 1) * d], &f.output[item * d..(item + 1) * d])
    }

    /// The BPR loss of `batch` (user, positive item, negative item) and its gradient with
    /// respect to the ego table.
    pub fn loss_and_grad(&self, adj: &Adjacency, batch: &[(u32, u32, u32)], reg: T) -> (T, Vec<T>) {
        let mut ws = Workspace::default();
        let loss = self.loss_and_grad_into(adj, batch, reg, &mut ws);
        (loss, ws.grad)
    }

    /// [`LightGcn::loss_and_grad`] with reused buffers: the gradient is left in `ws.grad`.
    pub fn loss_and_grad_into(&self, adj: &Adjacency, batch: &[(u32, u32, u32)], reg: T, ws: &mut Workspace<T>) -> T {
        let (n, d) = (self.nodes(), self.d);
        self.forward_into(adj, ws);
        let b = T::from(batch.len()).unwrap_or(T::one());
        let mut loss = T::zero();
        // The seed of the backward pass (d loss / d final vectors) is non-zero only on the
        // batch's rows: zero the rows the last step touched instead of the whole table.
        resize(&mut ws.seed, n * d);
        if ws.touched.len() != n {
            ws.touched = vec![false; n];
            ws.touched_rows.clear();
            ws.seed.iter_mut().for_each(|v| *v = T::zero());
        }
        for &r in &ws.touched_rows {
            ws.seed[r * d..(r + 1) * d].iter_mut().for_each(|v| *v = T::zero());
            ws.touched[r] = false;
        }
        ws.touched_rows.clear();
        // The regularised part of an ego row: its first `width` values when the input is masked
        // (the rest are zero), the whole row otherwise. A borrowed slice: no allocation per row.
        let ego_row = |r: usize| -> &[T] {
            let row = &self.ego[r * d..(r + 1) * d];
            if self.placement.masks_input() { &row[..(self.widths[r] as usize).min(d)] } else { row }
        };
        let mut reg_sum = T::zero();
        let out = &ws.output;
        for &(u, p, q) in batch {
            let (u, p, q) = (u as usize, self.n_users + p as usize, self.n_users + q as usize);
            let fu = &out[u * d..(u + 1) * d];
            let fp = &out[p * d..(p + 1) * d];
            let fq = &out[q * d..(q + 1) * d];
            let x = dot(fu, fq) - dot(fu, fp);
            loss = loss + softplus(x);
            // d softplus(x) / dx = sigmoid(x); x = s_neg - s_pos.
            let g = sigmoid(x) / b;
            for k in 0..d {
                ws.seed[u * d + k] = ws.seed[u * d + k] + g * (fq[k] - fp[k]);
                ws.seed[p * d + k] = ws.seed[p * d + k] - g * fu[k];
                ws.seed[q * d + k] = ws.seed[q * d + k] + g * fu[k];
            }
            for r in [u, p, q] {
                let row = ego_row(r);
                reg_sum = reg_sum + dot(row, row);
                if !ws.touched[r] {
                    ws.touched[r] = true;
                    ws.touched_rows.push(r);
                }
            }
        }
        loss = loss / b + reg * reg_sum / b;

        // Backward through the output mask and the mean (only touched rows are non-zero).
        let scale = T::one() / T::from(self.layers + 1).unwrap_or(T::one());
        for &r in &ws.touched_rows {
            let row = &mut ws.seed[r * d..(r + 1) * d];
            let keep = if self.placement.masks_output() { self.widths[r] as usize } else { d };
            for (k, v) in row.iter_mut().enumerate() {
                *v = if k < keep { *v * scale } else { T::zero() };
            }
        }
        // Through the layers (Â is symmetric): grad = s + Â(s + Â(s + Â s)), Horner's rule.
        resize(&mut ws.grad, n * d);
        if self.layers == 0 {
            ws.grad.copy_from_slice(&ws.seed);
        } else {
            let Workspace { grad, x, next, seed, touched, .. } = ws;
            resize(x, n * d);
            resize(next, n * d);
            // The first product's source is the seed: skip its zero rows.
            let mut cur: &mut Vec<T> = x;
            let mut other: &mut Vec<T> = next;
            for layer in 0..self.layers {
                let last = layer + 1 == self.layers;
                let dst: &mut Vec<T> = if last { &mut *grad } else { &mut *other };
                if layer == 0 {
                    adj.spmm_plus(seed, d, dst, seed, Some(touched));
                } else {
                    adj.spmm_plus(cur, d, dst, seed, None);
                }
                if !last {
                    std::mem::swap(&mut cur, &mut other);
                }
            }
        }
        if self.placement.masks_input() {
            mask_rows(&mut ws.grad, d, &self.widths);
        }
        // Regularisation: 2 · reg / B · e for every occurrence of a row in the batch.
        let two_reg = (reg + reg) / b;
        for &(u, p, q) in batch {
            for r in [u as usize, self.n_users + p as usize, self.n_users + q as usize] {
                let row = ego_row(r);
                for (k, v) in row.iter().enumerate() {
                    ws.grad[r * d + k] = ws.grad[r * d + k] + two_reg * *v;
                }
            }
        }
        loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Dataset, Interaction, Part};
    use crate::split::{Protocol, Split};

    fn tiny() -> (Split, usize, usize) {
        let (nu, ni) = (5, 6);
        let mut interactions = vec![];
        for u in 0..nu as u32 {
            for i in 0..ni as u32 {
                if (u * 7 + i * 3) % 4 != 0 {
                    interactions.push(Interaction { user: u, item: i, part: Part::Train, timestamp: None });
                }
            }
        }
        let data = Dataset {
            name: "tiny".into(),
            n_users: nu,
            n_items: ni,
            user_ids: vec![],
            item_ids: vec![],
            interactions,
            sha256: [0; 32],
            report: Default::default(),
        };
        (Split::new(&data, Protocol::Paper, 3).unwrap(), nu, ni)
    }

    fn check(layers: usize, placement: Placement) {
        let (split, nu, ni) = tiny();
        let adj = Adjacency::lightgcn(&split);
        let d = 6;
        let widths: Vec<u32> = (0..nu + ni).map(|r| (r % d + 1) as u32).collect();
        let ego: Vec<f64> = (0..(nu + ni) * d).map(|k| ((k * 37 % 101) as f64 / 101.0 - 0.5) * 0.8).collect();
        let mut model = LightGcn { n_users: nu, n_items: ni, d, layers, placement, widths, ego };
        let batch = [(0u32, 1u32, 2u32), (3, 4, 0), (0, 5, 1), (4, 2, 3)];
        let reg = 0.03;
        let (_, grad) = model.loss_and_grad(&adj, &batch, reg);
        let h = 1e-6;
        let mut worst: f64 = 0.0;
        for (k, &analytic) in grad.iter().enumerate() {
            let keep = model.ego[k];
            model.ego[k] = keep + h;
            let up = model.loss_and_grad(&adj, &batch, reg).0;
            model.ego[k] = keep - h;
            let down = model.loss_and_grad(&adj, &batch, reg).0;
            model.ego[k] = keep;
            let numeric = (up - down) / (2.0 * h);
            let err = (numeric - analytic).abs() / (1e-7 + numeric.abs().max(analytic.abs()));
            if numeric.abs() > 1e-9 || analytic.abs() > 1e-9 {
                worst = worst.max(err);
            }
        }
        assert!(worst < 1e-6, "layers {layers} {placement:?}: worst relative gradient error {worst:e}");
    }

    #[test]
    fn gradients_match_central_differences() {
        for placement in [Placement::Input, Placement::Output, Placement::Both] {
            check(3, placement);
        }
        check(0, Placement::Input); // MF
    }

    #[test]
    fn input_placement_gives_dense_outputs_and_output_placement_cuts_them() {
        let (split, nu, ni) = tiny();
        let adj = Adjacency::lightgcn(&split);
        let d = 4;
        let widths = vec![1u32; nu + ni];
        let ego = vec![1.0f64; (nu + ni) * d];
        let mut m = LightGcn { n_users: nu, n_items: ni, d, layers: 3, placement: Placement::Input, widths, ego };
        let dense = m.forward(&adj);
        assert!(dense.output.chunks(d).all(|r| r[1] == 0.0), "input mask keeps columns past the width zero");
        m.ego.iter_mut().enumerate().for_each(|(k, v)| *v = (k % 5) as f64);
        let f = m.forward(&adj);
        assert!(f.output.chunks(d).any(|r| r[1] == 0.0 && r[0] != 0.0));
        m.placement = Placement::Output;
        let cut = m.forward(&adj);
        assert!(cut.output.chunks(d).all(|r| r[1..].iter().all(|&v| v == 0.0)));
    }
}
