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

fn mask_rows<T: Float>(x: &mut [T], d: usize, widths: &[u32]) {
    for (row, &w) in x.chunks_mut(d).zip(widths) {
        for v in row.iter_mut().skip(w as usize) {
            *v = T::zero();
        }
    }
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
        let (n, d) = (self.nodes(), self.d);
        let mut x = self.ego.clone();
        if self.placement.masks_input() {
            mask_rows(&mut x, d, &self.widths);
        }
        let mut sum = x.clone();
        let mut next = vec![T::zero(); n * d];
        for _ in 0..self.layers {
            adj.spmm(&x, d, &mut next);
            std::mem::swap(&mut x, &mut next);
            for (s, &v) in sum.iter_mut().zip(&x) {
                *s = *s + v;
            }
        }
        let scale = T::one() / T::from(self.layers + 1).unwrap_or(T::one());
        sum.iter_mut().for_each(|v| *v = *v * scale);
        if self.placement.masks_output() {
            mask_rows(&mut sum, d, &self.widths);
        }
        Forward { output: sum }
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
        let (n, d) = (self.nodes(), self.d);
        let f = self.forward(adj);
        let b = T::from(batch.len()).unwrap_or(T::one());
        let mut loss = T::zero();
        let mut d_out = vec![T::zero(); n * d];
        // The regularised part of an ego row: its first `width` values when the input is masked
        // (the rest are zero), the whole row otherwise. A borrowed slice: no allocation per row.
        let ego_row = |r: usize| -> &[T] {
            let row = &self.ego[r * d..(r + 1) * d];
            if self.placement.masks_input() { &row[..(self.widths[r] as usize).min(d)] } else { row }
        };
        let mut reg_sum = T::zero();
        for &(u, p, q) in batch {
            let (u, p, q) = (u as usize, self.n_users + p as usize, self.n_users + q as usize);
            let fu = &f.output[u * d..(u + 1) * d];
            let fp = &f.output[p * d..(p + 1) * d];
            let fq = &f.output[q * d..(q + 1) * d];
            let x = dot(fu, fq) - dot(fu, fp);
            loss = loss + softplus(x);
            // d softplus(x) / dx = sigmoid(x); x = s_neg - s_pos.
            let g = sigmoid(x) / b;
            for k in 0..d {
                d_out[u * d + k] = d_out[u * d + k] + g * (fq[k] - fp[k]);
                d_out[p * d + k] = d_out[p * d + k] - g * fu[k];
                d_out[q * d + k] = d_out[q * d + k] + g * fu[k];
            }
            for r in [u, p, q] {
                let row = ego_row(r);
                reg_sum = reg_sum + dot(row, row);
            }
        }
        loss = loss / b + reg * reg_sum / b;

        // Backward through the output mask, the mean and the layers (Â is symmetric).
        if self.placement.masks_output() {
            mask_rows(&mut d_out, d, &self.widths);
        }
        let scale = T::one() / T::from(self.layers + 1).unwrap_or(T::one());
        d_out.iter_mut().for_each(|v| *v = *v * scale);
        let mut g = d_out.clone();
        let mut tmp = vec![T::zero(); n * d];
        for _ in 0..self.layers {
            adj.spmm(&g, d, &mut tmp);
            for (t, &o) in tmp.iter_mut().zip(&d_out) {
                *t = *t + o;
            }
            std::mem::swap(&mut g, &mut tmp);
        }
        if self.placement.masks_input() {
            mask_rows(&mut g, d, &self.widths);
        }
        // Regularisation: 2 · reg / B · e for every occurrence of a row in the batch.
        let two_reg = (reg + reg) / b;
        for &(u, p, q) in batch {
            for r in [u as usize, self.n_users + p as usize, self.n_users + q as usize] {
                let row = ego_row(r);
                for (k, v) in row.iter().enumerate() {
                    g[r * d + k] = g[r * d + k] + two_reg * *v;
                }
            }
        }
        (loss, g)
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
