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
use rayon::prelude::*;

use crate::graph::Adjacency;

/// Where the width mask applies in a propagating model (LightGCN, NGCF). MF and NCF have none:
/// [`crate::backbone::BackboneKind::build`] takes an `Option<Placement>`.
/// Each backbone's default is [`crate::backbone::BackboneKind::default_placement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Ego table cut; final vectors dense (the paper's). LightGCN exports the cut ego rows and the
    /// training graph, propagated by the runtime at load; NGCF's cannot be exported (its
    /// propagation has weights and its final vectors are dense).
    Input,
    /// Full-width ego table; final vectors cut (exportable).
    Output,
    /// Both cut (exportable).
    Both,
}

impl Placement {
    /// The name reports, headers and the command line use.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Input => "input",
            Placement::Output => "output",
            Placement::Both => "both",
        }
    }

    /// The name of an optional placement: `none` for the models without one (MF, NCF).
    pub fn name_of(placement: Option<Placement>) -> &'static str {
        placement.map_or("none", Placement::name)
    }

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
    coef: Vec<T>,
    row_start: Vec<u32>,
    entries: Vec<(u32, u8)>,
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
            coef: Vec::new(),
            row_start: Vec::new(),
            entries: Vec::new(),
        }
    }
}

/// Triples per parallel task of the loss.
const LOSS_CHUNK: usize = 512;
/// Rows per parallel task of the row-wise passes.
const ROWS_PER_TASK: usize = 256;

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
        let Workspace { output, x, next, .. } = ws;
        self.forward_rows(adj, output, x, next, None);
    }

    /// The forward pass; with `needed`, the last layer is computed for those rows only (the
    /// other rows of `output` are then incomplete: a training step reads only batch rows).
    fn forward_rows(
        &self,
        adj: &Adjacency,
        output: &mut Vec<T>,
        x: &mut Vec<T>,
        next: &mut Vec<T>,
        needed: Option<&[bool]>,
    ) {
        let (n, d) = (self.nodes(), self.d);
        resize(output, n * d);
        output.copy_from_slice(&self.ego);
        if self.placement.masks_input() {
            mask_rows(output, d, &self.widths);
        }
        if self.layers > 0 {
            resize(x, n * d);
            resize(next, n * d);
            for layer in 0..self.layers {
                // Layer 1 reads the ego rows: the table itself when unmasked, else a masked copy.
                let src: &[T] = if layer > 0 {
                    x
                } else if self.placement.masks_input() {
                    x.copy_from_slice(output);
                    x
                } else {
                    &self.ego
                };
                match needed {
                    Some(rows) if layer + 1 == self.layers => adj.spmm_accumulate_rows(src, d, next, output, rows),
                    _ => adj.spmm_accumulate(src, d, next, output),
                }
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
        let b = T::from(batch.len()).unwrap_or(T::one());
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
        let node = |t: &(u32, u32, u32)| (t.0 as usize, self.n_users + t.1 as usize, self.n_users + t.2 as usize);
        // Group the batch's contributions by the row they go to (a counting sort), so rows are
        // filled in parallel, each summing its contributions in batch order: the same
        // operations in the same order as one loop over the batch.
        ws.row_start.clear();
        ws.row_start.resize(n + 1, 0);
        for t in batch {
            let (u, p, q) = node(t);
            for r in [u, p, q] {
                ws.row_start[r + 1] += 1;
            }
        }
        for r in 0..n {
            ws.row_start[r + 1] += ws.row_start[r];
            if ws.row_start[r + 1] > ws.row_start[r] {
                ws.touched[r] = true;
                ws.touched_rows.push(r);
            }
        }
        ws.entries.clear();
        ws.entries.resize(3 * batch.len(), (0, 0));
        {
            let mut fill: Vec<u32> = ws.row_start[..n].to_vec();
            for (t, tr) in batch.iter().enumerate() {
                let (u, p, q) = node(tr);
                for (role, r) in [u, p, q].into_iter().enumerate() {
                    ws.entries[fill[r] as usize] = (t as u32, role as u8);
                    fill[r] += 1;
                }
            }
        }
        {
            let Workspace { output, x, next, touched, .. } = &mut *ws;
            self.forward_rows(adj, output, x, next, Some(touched));
        }
        // The regularised part of an ego row: its first `width` values when the input is masked
        // (the rest are zero), the whole row otherwise. A borrowed slice: no allocation per row.
        let masks_input = self.placement.masks_input();
        let ego_row = |r: usize| -> &[T] {
            let row = &self.ego[r * d..(r + 1) * d];
            if masks_input { &row[..(self.widths[r] as usize).min(d)] } else { row }
        };
        let out = &ws.output;
        // Per triple, in parallel: the BPR coefficient g = sigmoid(s_neg - s_pos) / B; loss and
        // regularisation summed per fixed chunk, chunks added in order (thread-independent).
        let parts: Vec<(Vec<T>, T, T)> = batch
            .par_chunks(LOSS_CHUNK)
            .map(|chunk| {
                let (mut loss, mut reg_sum) = (T::zero(), T::zero());
                let g = chunk
                    .iter()
                    .map(|t| {
                        let (u, p, q) = node(t);
                        let fu = &out[u * d..(u + 1) * d];
                        let x = dot(fu, &out[q * d..(q + 1) * d]) - dot(fu, &out[p * d..(p + 1) * d]);
                        loss = loss + softplus(x);
                        for r in [u, p, q] {
                            let row = ego_row(r);
                            reg_sum = reg_sum + dot(row, row);
                        }
                        // d softplus(x) / dx = sigmoid(x); x = s_neg - s_pos.
                        sigmoid(x) / b
                    })
                    .collect();
                (g, loss, reg_sum)
            })
            .collect();
        let (mut loss, mut reg_sum) = (T::zero(), T::zero());
        ws.coef.clear();
        for (g, l, r) in parts {
            ws.coef.extend(g);
            loss = loss + l;
            reg_sum = reg_sum + r;
        }
        let loss = loss / b + reg * reg_sum / b;
        // Then, per row: the seed, and backward through the output mask and the mean.
        let scale = T::one() / T::from(self.layers + 1).unwrap_or(T::one());
        let masks_output = self.placement.masks_output();
        {
            let Workspace { seed, row_start, entries, coef, output, .. } = &mut *ws;
            let (row_start, entries, coef, out) = (&*row_start, &*entries, &*coef, &*output);
            seed.par_chunks_mut(d * ROWS_PER_TASK).enumerate().for_each(|(blk, rows)| {
                for (k, row) in rows.chunks_mut(d).enumerate() {
                    let r = blk * ROWS_PER_TASK + k;
                    let list = &entries[row_start[r] as usize..row_start[r + 1] as usize];
                    if list.is_empty() {
                        continue;
                    }
                    for &(t, role) in list {
                        let (u, p, q) = node(&batch[t as usize]);
                        let g = coef[t as usize];
                        let (fu, fp, fq) =
                            (&out[u * d..(u + 1) * d], &out[p * d..(p + 1) * d], &out[q * d..(q + 1) * d]);
                        match role {
                            0 => row.iter_mut().enumerate().for_each(|(j, v)| *v = *v + g * (fq[j] - fp[j])),
                            1 => row.iter_mut().zip(fu).for_each(|(v, &f)| *v = *v - g * f),
                            _ => row.iter_mut().zip(fu).for_each(|(v, &f)| *v = *v + g * f),
                        }
                    }
                    let keep = if masks_output { self.widths[r] as usize } else { d };
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = if j < keep { *v * scale } else { T::zero() };
                    }
                }
            });
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
        // Regularisation: 2 · reg / B · e for every occurrence of a row in the batch (rows in
        // parallel; a row's additions are all the same value, so their order is immaterial).
        let two_reg = (reg + reg) / b;
        let row_start = &ws.row_start;
        ws.grad.par_chunks_mut(d * ROWS_PER_TASK).enumerate().for_each(|(blk, rows)| {
            for (k, row) in rows.chunks_mut(d).enumerate() {
                let r = blk * ROWS_PER_TASK + k;
                for _ in row_start[r]..row_start[r + 1] {
                    for (g, v) in row.iter_mut().zip(ego_row(r)) {
                        *g = *g + two_reg * *v;
                    }
                }
            }
        });
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
        let (loss, grad) = model.loss_and_grad(&adj, &batch, reg);
        // The step's loss (last layer computed for batch rows only) is the BPR loss of the full
        // forward pass.
        let f = model.forward(&adj);
        let mut expect = 0.0;
        for &(u, p, q) in &batch {
            let x = model.score(&f, u as usize, q as usize) - model.score(&f, u as usize, p as usize);
            expect += (1.0 + x.exp()).ln() / batch.len() as f64;
            for r in [u as usize, nu + p as usize, nu + q as usize] {
                let w = if placement == Placement::Output { d } else { model.widths[r] as usize };
                expect += reg * model.ego[r * d..r * d + w].iter().map(|v| v * v).sum::<f64>() / batch.len() as f64;
            }
        }
        assert!((loss - expect).abs() < 1e-12, "loss {loss} vs {expect}");
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

    /// Several row blocks and loss chunks: the gradient is the same bits on 1 and 3 threads.
    #[test]
    fn gradient_does_not_depend_on_the_thread_count() {
        let (nu, ni) = (700usize, 600usize);
        let pairs: Vec<(u32, u32)> = (0..nu as u32)
            .flat_map(|u| (0..6u32).map(move |k| (u, (u.wrapping_mul(2654435761).wrapping_add(k * 97)) % ni as u32)))
            .collect();
        let split = Split::new(&Dataset::from_pairs("t", nu, ni, &pairs), Protocol::Given, 1).unwrap();
        let adj = Adjacency::lightgcn(&split);
        let d = 128;
        let widths: Vec<u32> = (0..nu + ni).map(|r| (r % d + 1) as u32).collect();
        let ego: Vec<f32> = (0..(nu + ni) * d).map(|k| ((k * 7919 % 1009) as f32 / 1009.0 - 0.5) * 0.1).collect();
        let sampler = crate::train::Sampler::new(&split, 5);
        let batch = sampler.batch(&split, 2000, 0);
        for placement in [Placement::Input, Placement::Output] {
            let model = LightGcn {
                n_users: nu,
                n_items: ni,
                d,
                layers: 3,
                placement,
                widths: widths.clone(),
                ego: ego.clone(),
            };
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| model.loss_and_grad(&adj, &batch, 1e-4))
            };
            let (l1, g1) = run(1);
            let (l3, g3) = run(3);
            assert_eq!(l1.to_bits(), l3.to_bits());
            assert!(g1.iter().zip(&g3).all(|(a, b)| a.to_bits() == b.to_bits()), "{placement:?}");
            assert!(g1.iter().any(|&v| v != 0.0));
        }
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
