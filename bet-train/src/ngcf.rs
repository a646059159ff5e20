//! NGCF as the BET reference trains it (`bet-algorithm.md` §2.3), with per-entity widths: forward
//! pass, BPR loss, and the exact gradient of every parameter.
//!
//! Nodes are users `0..U` then items `U..U+V`. The propagation matrix is [`NgcfAdjacency`],
//! `Â = D⁻¹(A + I)` over the training pairs (row-normalised, self loops). Three layers of width
//! `d`, row-vector convention (`x·W`, `W` is `d_in × d_out` row-major):
//!
//! ```text
//! S_l     = Â E_l
//! E_{l+1} = LeakyReLU_0.2( S_l W_gc_l + b_gc_l + (E_l ⊙ S_l) W_bi_l + b_bi_l )
//! N_{l+1} = E_{l+1} / max(‖E_{l+1}‖₂, 1e-12)            (per row, torch's F.normalize)
//! ```
//!
//! The next layer propagates the unnormalised `E_{l+1}` (as the reference does); the final vector
//! of a node is `[E_0; N_1; N_2; N_3]`, `4d` wide, stored **layer-interleaved**: column `4j + l` is
//! dimension `j` of layer `l`, so a prefix of the row keeps the leading dimensions of every layer.
//! The score is the dot product of the user's and the item's final vectors.
//!
//! Widths ([`Placement`]): `Input` masks the ego rows to their first `min(w, d)` dimensions before
//! propagation (final vectors are then dense); `Output` keeps a full ego table and zeroes final
//! columns `c ≥ w` (so `w`, `1..=4d`, counts shipped values of the interleaved vector); `Both`
//! does both. The BPR loss of `(user, positive item, negative item)` triples is
//! `mean softplus(s_neg − s_pos) + reg · Σ (‖f_u‖² + ‖f_p‖² + ‖f_n‖²) / B` over the final (masked)
//! vectors of the batch rows, the reference's regularisation ([`NGCF_REG`]).
//!
//! Dropout: the reference uses node dropout 0.1 and message dropout 0.1 in training and, by a bug,
//! at evaluation too. This port has **no dropout**: training is deterministic and evaluation never
//! drops.
//!
//! Determinism: every sparse output row is summed by one thread in a fixed order, dense products
//! run over fixed row blocks, and weight gradients are summed block by block in block order, so
//! results do not depend on the thread count. Generic over the float type so that the gradient
//! check runs in `f64`.
//!
//! The dense helpers at the bottom ([`Real`], blocked GEMMs, Xavier init) are shared with
//! [`crate::ncf`].

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, LinalgScalar};
use num_traits::Float;
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use rayon::prelude::*;

use crate::eval::DenseScorer;
use crate::graph::Adjacency;
use crate::lightgcn::Placement;
use crate::split::Split;

/// Propagation layers (the reference's three layers of `d`).
pub const NGCF_LAYERS: usize = 3;
/// The reference's regularisation weight for NGCF (on the final `4d` vectors).
pub const NGCF_REG: f32 = 1e-3;
/// LeakyReLU's negative slope.
const SLOPE: f64 = 0.2;
/// F.normalize's floor on the norm.
const NORM_EPS: f64 = 1e-12;
/// Mixed into the seed of the initialisation stream.
const SEED_MIX: u64 = 0x4E47_4346_1A17_0003;

/// `Â = D⁻¹(A + I)` of the bipartite user–item graph, in CSR form over the pattern of `A + I`.
///
/// Row `r` holds `r` itself and its neighbours, sorted; every entry of the row is
/// `1 / (deg(r) + 1)`. `Â` is not symmetric; since `A + I` is, `Âᵀ = (A + I) D⁻¹` walks the same
/// pattern with the column's weight. Both are kept as [`Adjacency`] matrices, so NGCF's
/// products are LightGCN's kernel (one thread per output row, summed in column order).
#[derive(Clone, Debug, PartialEq)]
pub struct NgcfAdjacency {
    forward: Adjacency,
    transposed: Adjacency,
}

impl NgcfAdjacency {
    /// From `(user, item)` pairs (0-based item ids); duplicate pairs count once.
    ///
    /// # Panics
    /// If a pair is out of range or there are more than `u32::MAX` nodes.
    pub fn from_pairs(n_users: usize, n_items: usize, pairs: impl IntoIterator<Item = (u32, u32)>) -> NgcfAdjacency {
        let n = n_users + n_items;
        assert!(u32::try_from(n).is_ok(), "too many nodes");
        let mut neighbours: Vec<Vec<u32>> = (0..n as u32).map(|r| vec![r]).collect();
        for (u, i) in pairs {
            let (u, i) = (u as usize, i as usize);
            assert!(u < n_users && i < n_items, "pair ({u}, {i}) out of range");
            neighbours[u].push((n_users + i) as u32);
            neighbours[n_users + i].push(u as u32);
        }
        for l in &mut neighbours {
            l.sort_unstable();
            l.dedup();
        }
        let inv: Vec<f64> = neighbours.iter().map(|l| 1.0 / l.len() as f64).collect();
        NgcfAdjacency {
            forward: Adjacency::from_neighbours(n_users, neighbours.clone(), |r, _| inv[r]),
            transposed: Adjacency::from_neighbours(n_users, neighbours, |_, c| inv[c]),
        }
    }

    /// Over the training pairs of `split`.
    pub fn from_split(split: &Split) -> NgcfAdjacency {
        let pairs = (0..split.n_users).flat_map(|u| split.train.of(u).iter().map(move |&i| (u as u32, i)));
        NgcfAdjacency::from_pairs(split.n_users, split.n_items, pairs)
    }

    /// Nodes.
    pub fn nodes(&self) -> usize {
        self.forward.nodes()
    }

    /// Non-zeros (edges in both directions plus one self loop per node).
    pub fn nnz(&self) -> usize {
        self.forward.nnz()
    }

    /// `y = Â x` for row-major `n × d` matrices: `y_r = Σ_{c ∈ row r} x_c / (deg(r) + 1)`.
    pub fn spmm<T: Real>(&self, x: &[T], d: usize, y: &mut [T]) {
        self.forward.spmm(x, d, y);
    }

    /// `y = Âᵀ x = (A + I) D⁻¹ x`: `y_r = Σ_{c ∈ row r} x_c / (deg(c) + 1)`.
    pub fn spmm_t<T: Real>(&self, x: &[T], d: usize, y: &mut [T]) {
        self.transposed.spmm(x, d, y);
    }
}

/// Buffers reused from step to step: a training step takes its `(U + V) × d` tables from here
/// and gives them back, so it allocates (and page-faults) nothing after the first step.
#[derive(Debug)]
pub struct NgcfWorkspace<T> {
    /// Gradient of every tensor after the last [`Ngcf::loss_and_grad_into`], in the order and
    /// shapes of [`Ngcf::tensors`].
    pub grads: Vec<Vec<T>>,
    free: Vec<Vec<T>>,
}

impl<T> Default for NgcfWorkspace<T> {
    fn default() -> Self {
        NgcfWorkspace { grads: Vec::new(), free: Vec::new() }
    }
}

impl<T: Real> NgcfWorkspace<T> {
    /// A buffer of `len` zeros (a kept one when there is one).
    fn zeros(&mut self, len: usize) -> Vec<T> {
        let mut v = self.free.pop().unwrap_or_default();
        v.clear();
        v.resize(len, T::zero());
        v
    }

    /// A buffer of `len` values whose contents are left from an earlier step: only for outputs
    /// that are written whole before anything reads them (zeroing those is a wasted pass).
    fn overwritten(&mut self, len: usize) -> Vec<T> {
        let mut v = self.free.pop().unwrap_or_default();
        v.resize(len, T::zero());
        v
    }

    /// Gives buffers back for later steps.
    fn give(&mut self, buffers: impl IntoIterator<Item = Vec<T>>) {
        self.free.extend(buffers);
    }
}

/// An NGCF model of [`NGCF_LAYERS`] layers over users `0..U` and items `U..U+V`.
#[derive(Clone, Debug)]
pub struct Ngcf<T> {
    /// Users.
    pub n_users: usize,
    /// Items.
    pub n_items: usize,
    /// Embedding width d (every layer is `d` wide; final vectors are `4d`).
    pub d: usize,
    /// Mask placement.
    pub placement: Placement,
    /// Width of every node, users then items: `1..=d` counts ego dimensions (`Input`), `1..=4d`
    /// counts values of the interleaved final vector (`Output`, `Both`; the ego is cut to
    /// `min(w, d)` under `Both`).
    pub widths: Vec<u32>,
    /// Every trainable tensor, in the order of [`Ngcf::tensor_names`]: `ego` (`(U + V) × d`),
    /// then per layer `w_gc` (`d × d`), `b_gc` (`d`), `w_bi` (`d × d`), `b_bi` (`d`).
    pub tensors: Vec<Vec<T>>,
}

fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).fold(T::zero(), |s, (&x, &y)| s + x * y)
}

/// `ln(1 + e^x)` without overflow.
pub(crate) fn softplus<T: Float>(x: T) -> T {
    x.max(T::zero()) + (-x.abs()).exp().ln_1p()
}

pub(crate) fn sigmoid<T: Float>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

fn cast<T: Float>(v: f64) -> T {
    T::from(v).unwrap_or(T::zero())
}

impl<T: Real> Ngcf<T> {
    /// Names of [`Ngcf::tensors`], in order.
    pub fn tensor_names() -> &'static [&'static str] {
        &[
            "ego", "w_gc_0", "b_gc_0", "w_bi_0", "b_bi_0", "w_gc_1", "b_gc_1", "w_bi_1", "b_bi_1", "w_gc_2", "b_gc_2",
            "w_bi_2", "b_bi_2",
        ]
    }

    /// A fresh model with the reference's Xavier-uniform initialisation of every tensor, drawn in
    /// order (user rows, item rows, then per layer `w_gc`, `b_gc`, `w_bi`, `b_bi`) from one
    /// stream seeded by `seed`.
    ///
    /// Xavier uniform on a `rows × cols` tensor draws `U(−a, a)`, `a = sqrt(6 / (rows + cols))`,
    /// with torch's `xavier_uniform_` convention `fan_in = cols`, `fan_out = rows`: the user and
    /// item tables are separate tensors (`U × d` and `V × d`, as in the reference), each weight is
    /// `d × d` and each bias a `1 × d` matrix.
    ///
    /// # Panics
    /// If `widths` is not one width in `1..=4d` per node.
    pub fn new(n_users: usize, n_items: usize, d: usize, widths: Vec<u32>, seed: u64, placement: Placement) -> Self {
        assert_eq!(widths.len(), n_users + n_items, "one width per node");
        assert!(widths.iter().all(|&w| w >= 1 && w as usize <= 4 * d), "widths in 1..=4d");
        let mut rng = Pcg64Mcg::seed_from_u64(seed ^ SEED_MIX);
        let mut ego = xavier_uniform(&mut rng, n_users, d);
        ego.extend(xavier_uniform::<T>(&mut rng, n_items, d));
        let mut tensors = vec![ego];
        for _ in 0..NGCF_LAYERS {
            for rows in [d, 1, d, 1] {
                tensors.push(xavier_uniform(&mut rng, rows, d));
            }
        }
        Ngcf { n_users, n_items, d, placement, widths, tensors }
    }

    /// Nodes.
    pub fn nodes(&self) -> usize {
        self.n_users + self.n_items
    }

    fn masks_input(&self) -> bool {
        matches!(self.placement, Placement::Input | Placement::Both)
    }

    fn masks_output(&self) -> bool {
        matches!(self.placement, Placement::Output | Placement::Both)
    }

    /// Dimensions of node `r`'s ego row that take part.
    fn ego_width(&self, r: usize) -> usize {
        if self.masks_input() { (self.widths[r] as usize).min(self.d) } else { self.d }
    }

    /// Values of node `r`'s final vector that are kept.
    fn out_width(&self, r: usize) -> usize {
        if self.masks_output() { (self.widths[r] as usize).min(4 * self.d) } else { 4 * self.d }
    }

    /// Tensor `k` as a `d × d` matrix.
    fn mat(&self, k: usize) -> ArrayView2<'_, T> {
        ArrayView2::from_shape((self.d, self.d), &self.tensors[k]).expect("weights are d x d")
    }

    /// `E_0 ..= E_L` and the layers' neighbourhood sums `S_l = Â E_l` (`l < L`), `(U + V) × d`
    /// each; the backward pass reuses the sums instead of recomputing three sparse products.
    fn propagate(&self, adj: &NgcfAdjacency, ws: &mut NgcfWorkspace<T>) -> (Vec<Vec<T>>, Vec<Vec<T>>) {
        let (n, d) = (self.nodes(), self.d);
        assert_eq!(adj.nodes(), n, "adjacency of another graph");
        let mut e0 = ws.overwritten(n * d);
        e0.copy_from_slice(&self.tensors[0]);
        if self.masks_input() {
            e0.par_chunks_mut(d).enumerate().for_each(|(r, row)| {
                let w = self.ego_width(r);
                row[w..].iter_mut().for_each(|v| *v = T::zero());
            });
        }
        let mut es = vec![e0];
        let mut sums = Vec::with_capacity(NGCF_LAYERS);
        for l in 0..NGCF_LAYERS {
            let e = &es[l];
            // `spmm` writes every row; `p` is written whole below.
            let mut s = ws.overwritten(n * d);
            adj.spmm(e, d, &mut s);
            let mut p = ws.overwritten(n * d);
            p.par_iter_mut().zip(e.par_iter()).zip(s.par_iter()).for_each(|((o, &a), &b)| *o = a * b);
            let mut z = ws.overwritten(n * d);
            matmul(&s, self.mat(1 + 4 * l), T::zero(), &mut z);
            matmul(&p, self.mat(3 + 4 * l), T::one(), &mut z);
            ws.give([p]);
            let (b_gc, b_bi) = (&self.tensors[2 + 4 * l], &self.tensors[4 + 4 * l]);
            let slope = cast::<T>(SLOPE);
            z.par_chunks_mut(d).for_each(|row| {
                for ((v, &bg), &bb) in row.iter_mut().zip(b_gc).zip(b_bi) {
                    let x = *v + bg + bb;
                    *v = if x > T::zero() { x } else { x * slope };
                }
            });
            es.push(z);
            sums.push(s);
        }
        (es, sums)
    }

    /// Node `r`'s final vector (interleaved, masked) into `out` (`4d`).
    fn final_row(&self, es: &[Vec<T>], r: usize, out: &mut [T]) {
        let d = self.d;
        for (j, &v) in es[0][r * d..(r + 1) * d].iter().enumerate() {
            out[4 * j] = v;
        }
        for (l, e) in es.iter().enumerate().skip(1) {
            let row = &e[r * d..(r + 1) * d];
            let den = dot(row, row).sqrt().max(cast(NORM_EPS));
            for (j, &v) in row.iter().enumerate() {
                out[4 * j + l] = v / den;
            }
        }
        let w = self.out_width(r);
        out[w..].iter_mut().for_each(|v| *v = T::zero());
    }

    /// Final vectors, `(U + V) × 4d`, layer-interleaved (column `4j + l` is dimension `j` of
    /// layer `l`), masked by the placement.
    pub fn forward(&self, adj: &NgcfAdjacency) -> Vec<T> {
        let (es, _) = self.propagate(adj, &mut NgcfWorkspace::default());
        let w4 = 4 * self.d;
        let mut out = vec![T::zero(); self.nodes() * w4];
        if w4 > 0 {
            out.par_chunks_mut(w4).enumerate().for_each(|(r, row)| self.final_row(&es, r, row));
        }
        out
    }

    /// The score of user `u` and item `i` (0-based item id) from final vectors `output`.
    pub fn score(&self, output: &[T], u: usize, i: usize) -> T {
        let w4 = 4 * self.d;
        let item = self.n_users + i;
        dot(&output[u * w4..(u + 1) * w4], &output[item * w4..(item + 1) * w4])
    }

    /// `g[r] += ∂ N_l[r] / ∂ E_l[r] ᵀ · dN` for the batch rows, `dN` read from `df` column `4j + l`.
    fn add_norm_grad(&self, e: &[T], l: usize, rows: &[usize], df: &[T], g: &mut [T]) {
        let (d, w4) = (self.d, 4 * self.d);
        let eps = cast::<T>(NORM_EPS);
        let mut dn = vec![T::zero(); d];
        for (slot, &r) in rows.iter().enumerate() {
            for (j, v) in dn.iter_mut().enumerate() {
                *v = df[slot * w4 + 4 * j + l];
            }
            let row = &e[r * d..(r + 1) * d];
            let gr = &mut g[r * d..(r + 1) * d];
            let norm = dot(row, row).sqrt();
            if norm > eps {
                // N = e / ‖e‖: dE = (dN − N (N · dN)) / ‖e‖.
                let c = row.iter().zip(&dn).fold(T::zero(), |s, (&x, &y)| s + (x / norm) * y);
                for ((o, &x), &y) in gr.iter_mut().zip(row).zip(&dn) {
                    *o = *o + (y - (x / norm) * c) / norm;
                }
            } else {
                // N = e / eps (the clamp is active).
                for (o, &y) in gr.iter_mut().zip(&dn) {
                    *o = *o + y / eps;
                }
            }
        }
    }

    /// The BPR loss of `batch` (user, positive item, negative item; 0-based item ids) and the
    /// gradient of every tensor, in the order and shapes of [`Ngcf::tensors`].
    pub fn loss_and_grad(&self, adj: &NgcfAdjacency, batch: &[(u32, u32, u32)], reg: T) -> (T, Vec<Vec<T>>) {
        let mut ws = NgcfWorkspace::default();
        let loss = self.loss_and_grad_into(adj, batch, reg, &mut ws);
        (loss, ws.grads)
    }

    /// [`Ngcf::loss_and_grad`] with reused buffers: the gradients are left in `ws.grads`.
    pub fn loss_and_grad_into(
        &self,
        adj: &NgcfAdjacency,
        batch: &[(u32, u32, u32)],
        reg: T,
        ws: &mut NgcfWorkspace<T>,
    ) -> T {
        let (n, d, w4, nu) = (self.nodes(), self.d, 4 * self.d, self.n_users);
        let (es, sums) = self.propagate(adj, ws);
        let b = cast::<T>(batch.len().max(1) as f64);

        // The distinct rows of the batch and their final vectors.
        let mut rows: Vec<usize> =
            batch.iter().flat_map(|&(u, p, q)| [u as usize, nu + p as usize, nu + q as usize]).collect();
        rows.sort_unstable();
        rows.dedup();
        let slot = |r: usize| rows.binary_search(&r).expect("a batch row");
        let mut f = vec![T::zero(); rows.len() * w4];
        f.par_chunks_mut(w4.max(1)).zip(rows.par_iter()).for_each(|(out, &r)| self.final_row(&es, r, out));

        // Loss and its gradient with respect to the final vectors of those rows.
        let mut df = vec![T::zero(); rows.len() * w4];
        let (mut loss, mut reg_sum) = (T::zero(), T::zero());
        let two_reg = (reg + reg) / b;
        for &(u, p, q) in batch {
            let (su, sp, sq) = (slot(u as usize), slot(nu + p as usize), slot(nu + q as usize));
            let (fu, fp, fq) = (&f[su * w4..][..w4], &f[sp * w4..][..w4], &f[sq * w4..][..w4]);
            let x = dot(fu, fq) - dot(fu, fp);
            loss = loss + softplus(x);
            // d softplus(x) / dx = sigmoid(x); x = s_neg − s_pos.
            let g = sigmoid(x) / b;
            for k in 0..w4 {
                df[su * w4 + k] = df[su * w4 + k] + g * (fq[k] - fp[k]);
                df[sp * w4 + k] = df[sp * w4 + k] - g * fu[k];
                df[sq * w4 + k] = df[sq * w4 + k] + g * fu[k];
            }
            for (s, row) in [(su, fu), (sp, fp), (sq, fq)] {
                reg_sum = reg_sum + dot(row, row);
                for (o, &v) in df[s * w4..(s + 1) * w4].iter_mut().zip(row) {
                    *o = *o + two_reg * v;
                }
            }
        }
        loss = loss / b + reg * reg_sum / b;
        // Through the output mask: masked values are constants.
        for (s, &r) in rows.iter().enumerate() {
            let w = self.out_width(r);
            df[s * w4 + w..(s + 1) * w4].iter_mut().for_each(|v| *v = T::zero());
        }

        // Backward through the layers. `g` holds ∂loss/∂E_{l+1} on entry to layer l.
        // The ego gradient is built in `g`; the other tensors' gradients are written whole.
        let mut grads = std::mem::take(&mut ws.grads);
        grads.resize_with(self.tensors.len(), Vec::new);
        for (grad, t) in grads.iter_mut().zip(&self.tensors).skip(1) {
            grad.clear();
            grad.resize(t.len(), T::zero());
        }
        let mut g = ws.zeros(n * d);
        self.add_norm_grad(&es[NGCF_LAYERS], NGCF_LAYERS, &rows, &df, &mut g);
        let slope = cast::<T>(SLOPE);
        for l in (0..NGCF_LAYERS).rev() {
            // g becomes dZ through the LeakyReLU (E_{l+1} has the sign of Z; slope 1 iff Z > 0).
            g.par_iter_mut().zip(es[l + 1].par_iter()).for_each(|(v, &e)| {
                if e <= T::zero() {
                    *v = *v * slope;
                }
            });
            let (e, s) = (&es[l], &sums[l]);
            let mut t = ws.overwritten(n * d);
            t.par_iter_mut().zip(e.par_iter()).zip(s.par_iter()).for_each(|((o, &a), &b)| *o = a * b);
            grads[1 + 4 * l] = matmul_tn(s, d, &g, d);
            grads[3 + 4 * l] = matmul_tn(&t, d, &g, d);
            let db = col_sums(&g, d);
            grads[2 + 4 * l].copy_from_slice(&db);
            grads[4 + 4 * l].copy_from_slice(&db);
            // t = dZ W_biᵀ = ∂loss/∂(E ⊙ S); ds = dZ W_gcᵀ + t ⊙ E = ∂loss/∂S.
            matmul(&g, self.mat(3 + 4 * l).reversed_axes(), T::zero(), &mut t);
            let mut ds = ws.overwritten(n * d);
            matmul(&g, self.mat(1 + 4 * l).reversed_axes(), T::zero(), &mut ds);
            ds.par_iter_mut().zip(t.par_iter()).zip(e.par_iter()).for_each(|((o, &tv), &ev)| *o = *o + tv * ev);
            // ∂loss/∂E_l = Âᵀ ds + t ⊙ S (+ the output's share, below).
            adj.spmm_t(&ds, d, &mut g);
            g.par_iter_mut().zip(t.par_iter()).zip(s.par_iter()).for_each(|((o, &tv), &sv)| *o = *o + tv * sv);
            ws.give([t, ds]);
            if l > 0 {
                self.add_norm_grad(&es[l], l, &rows, &df, &mut g);
            } else {
                for (slot, &r) in rows.iter().enumerate() {
                    for j in 0..d {
                        g[r * d + j] = g[r * d + j] + df[slot * w4 + 4 * j];
                    }
                }
            }
        }
        if self.masks_input() {
            g.par_chunks_mut(d.max(1)).enumerate().for_each(|(r, row)| {
                let w = self.ego_width(r);
                row[w..].iter_mut().for_each(|v| *v = T::zero());
            });
        }
        let old_ego = std::mem::replace(&mut grads[0], g);
        ws.give([old_ego]);
        ws.give(es);
        ws.give(sums);
        ws.grads = grads;
        loss
    }
}

impl Ngcf<f32> {
    /// Final vectors as a dense scorer (`4d` wide) for evaluation.
    pub fn scorer(&self, adj: &NgcfAdjacency) -> DenseScorer {
        let out = self.forward(adj);
        let (w4, split) = (4 * self.d, self.n_users * 4 * self.d);
        let table = |rows: usize, v: &[f32]| {
            ndarray::Array2::from_shape_vec((rows, w4), v.to_vec()).expect("final vectors are rows x 4d")
        };
        DenseScorer::new(table(self.n_users, &out[..split]), table(self.n_items, &out[split..]))
    }
}

// ---- Dense helpers shared with `ncf.rs` ----

/// The float types the dense backbones compute in (`f32` for training, `f64` for gradient checks).
pub trait Real: Float + LinalgScalar + Send + Sync {}
impl<T: Float + LinalgScalar + Send + Sync> Real for T {}

/// Rows per parallel task of the dense products: fixed, so results do not depend on the thread
/// count.
pub(crate) const BLOCK: usize = 512;

/// `out = a · b + beta · out` for row-major `a` (`n × k`, `k = b.nrows()`) and `out`
/// (`n × b.ncols()`), over fixed row blocks in parallel.
pub(crate) fn matmul<T: Real>(a: &[T], b: ArrayView2<'_, T>, beta: T, out: &mut [T]) {
    let (k, m) = b.dim();
    if k == 0 || m == 0 {
        out.iter_mut().for_each(|v| *v = *v * beta);
        return;
    }
    assert_eq!(a.len() % k, 0);
    assert_eq!(out.len(), a.len() / k * m);
    out.par_chunks_mut(BLOCK * m).zip(a.par_chunks(BLOCK * k)).for_each(|(o, x)| {
        let rows = x.len() / k;
        let x = ArrayView2::from_shape((rows, k), x).expect("block of a");
        let mut o = ArrayViewMut2::from_shape((rows, m), o).expect("block of out");
        general_mat_mul(T::one(), &x, &b, beta, &mut o);
    });
}

/// `aᵀ · g` (`k × m`) for row-major `a` (`n × k`) and `g` (`n × m`): per-block products summed in
/// block order.
pub(crate) fn matmul_tn<T: Real>(a: &[T], k: usize, g: &[T], m: usize) -> Vec<T> {
    if k == 0 || m == 0 {
        return vec![T::zero(); k * m];
    }
    assert_eq!(a.len() / k, g.len() / m);
    let parts: Vec<Vec<T>> = a
        .par_chunks(BLOCK * k)
        .zip(g.par_chunks(BLOCK * m))
        .map(|(x, y)| {
            let rows = x.len() / k;
            let x = ArrayView2::from_shape((rows, k), x).expect("block of a");
            let y = ArrayView2::from_shape((rows, m), y).expect("block of g");
            let mut p = vec![T::zero(); k * m];
            let mut view = ArrayViewMut2::from_shape((k, m), &mut p[..]).expect("k x m");
            general_mat_mul(T::one(), &x.t(), &y, T::zero(), &mut view);
            p
        })
        .collect();
    sum_parts(parts, k * m)
}

/// Column sums of row-major `x` (`n × m`), per block then in block order.
pub(crate) fn col_sums<T: Real>(x: &[T], m: usize) -> Vec<T> {
    if m == 0 {
        return vec![];
    }
    let parts: Vec<Vec<T>> = x
        .par_chunks(BLOCK * m)
        .map(|c| {
            let mut s = vec![T::zero(); m];
            for row in c.chunks(m) {
                s.iter_mut().zip(row).for_each(|(a, &v)| *a = *a + v);
            }
            s
        })
        .collect();
    sum_parts(parts, m)
}

fn sum_parts<T: Real>(parts: Vec<Vec<T>>, len: usize) -> Vec<T> {
    let mut total = vec![T::zero(); len];
    for p in parts {
        total.iter_mut().zip(&p).for_each(|(t, &v)| *t = *t + v);
    }
    total
}

/// `rows × cols` values of Xavier uniform, `U(−a, a)` with `a = sqrt(6 / (rows + cols))`.
pub(crate) fn xavier_uniform<T: Float>(rng: &mut Pcg64Mcg, rows: usize, cols: usize) -> Vec<T> {
    let a = (6.0 / (rows + cols).max(1) as f64).sqrt();
    (0..rows * cols).map(|_| cast((2.0 * rng.random::<f64>() - 1.0) * a)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NU: usize = 5;
    const NI: usize = 6;

    fn pairs() -> Vec<(u32, u32)> {
        let mut v = vec![];
        for u in 0..NU as u32 {
            for i in 0..NI as u32 {
                if (u * 7 + i * 3) % 4 != 0 {
                    v.push((u, i));
                }
            }
        }
        v
    }

    /// Checks every entry of every tensor against central differences; returns the worst relative
    /// error of the extrapolated check and, for information, of plain differences at h = 1e-6.
    ///
    /// Plain central differences at h = 1e-6 bottom out at about 2e-10 absolute here (an ulp or
    /// two of the loss, divided by 2h), and NGCF's gradient has many entries below 1e-4 (the
    /// normalisation keeps them small), so they cannot show 1e-6 relative agreement. The asserted
    /// check uses Richardson-extrapolated central differences, `(4 D(h/2) − D(h)) / 3` with
    /// h = 1e-3 (error O(h⁴), about 1e-12 absolute here). Its preconditions are asserted: every
    /// pre-activation is at least 3h from LeakyReLU's kink, and every checked entry is above 1e-6
    /// in magnitude (below that, the formula's 1e-7 floor would ask for 1e-13 absolute). Seed 4
    /// meets both; seed 7 also passes except for one entry of magnitude 3e-9 under `Input`.
    fn check(placement: Placement) -> (f64, f64) {
        let adj = NgcfAdjacency::from_pairs(NU, NI, pairs());
        let d = 4;
        let max_w = if placement == Placement::Input { d } else { 4 * d };
        let widths: Vec<u32> = (0..NU + NI).map(|r| ((r * 5) % max_w + 1) as u32).collect();
        let mut model = Ngcf::<f64>::new(NU, NI, d, widths, 4, placement);
        let h = 1e-3;
        // |pre-activation| >= |E_{l+1}| (LeakyReLU keeps the sign and shrinks by at most 0.2).
        // A step across the kink would show as a failure, never as a false pass.
        let (es, _) = model.propagate(&adj, &mut NgcfWorkspace::default());
        let nearest = es[1..].iter().flatten().fold(f64::INFINITY, |m, &v| m.min(v.abs()));
        assert!(nearest > 3.0 * h, "{placement:?}: a pre-activation is near the kink ({nearest:e})");
        let batch = [(0u32, 1u32, 2u32), (3, 4, 0), (0, 5, 1), (4, 2, 3), (2, 2, 5)];
        let reg = 0.03;
        let (_, grads) = model.loss_and_grad(&adj, &batch, reg);
        assert_eq!(grads.len(), model.tensors.len());
        let errors = crate::gradcheck::compare(
            &mut model,
            |m| &mut m.tensors,
            |m| m.loss_and_grad(&adj, &batch, reg).0,
            &grads,
            h,
        );
        let (worst, worst_plain, smallest) = (errors.worst, errors.worst_plain, errors.smallest);
        assert!(smallest > 1e-6, "{placement:?}: an entry of magnitude {smallest:e} is below what the check resolves");
        assert!(worst < 1e-6, "{placement:?}: worst relative gradient error {worst:e}");
        (worst, worst_plain)
    }

    #[test]
    fn gradients_match_central_differences() {
        for placement in [Placement::Input, Placement::Output, Placement::Both] {
            let (worst, plain) = check(placement);
            eprintln!("ngcf {placement:?}: worst relative gradient error {worst:e} (plain h = 1e-6: {plain:e})");
        }
    }

    #[test]
    fn adjacency_rows_and_transpose() {
        let adj = NgcfAdjacency::from_pairs(2, 3, [(0, 0), (0, 2), (1, 2), (0, 0)]);
        assert_eq!(adj.nnz(), 5 + 2 * 3);
        // Row sums of Â are 1: Â · 1 = 1.
        let ones = vec![1.0f64; 5 * 2];
        let mut y = vec![0.0; 10];
        adj.spmm(&ones, 2, &mut y);
        assert!(y.iter().all(|&v| (v - 1.0).abs() < 1e-15), "{y:?}");
        // <y, Â x> = <Âᵀ y, x>.
        let x: Vec<f64> = (0..10).map(|k| (k as f64 * 0.7).sin()).collect();
        let z: Vec<f64> = (0..10).map(|k| (k as f64 * 1.3).cos()).collect();
        let (mut ax, mut atz) = (vec![0.0; 10], vec![0.0; 10]);
        adj.spmm(&x, 2, &mut ax);
        adj.spmm_t(&z, 2, &mut atz);
        assert!((dot(&z, &ax) - dot(&atz, &x)).abs() < 1e-12);
        // Item 1 has no edge: its row is itself.
        assert_eq!(&y[2 * 3..2 * 4], &[1.0, 1.0]);
    }

    #[test]
    fn adjacency_from_split_matches_its_pairs() {
        use crate::data::{Dataset, Interaction, Part};
        use crate::split::Protocol;
        let interactions = pairs()
            .into_iter()
            .map(|(user, item)| Interaction { user, item, part: Part::Train, timestamp: None })
            .collect();
        let data = Dataset {
            name: "tiny".into(),
            n_users: NU,
            n_items: NI,
            user_ids: vec![],
            item_ids: vec![],
            interactions,
            sha256: [0; 32],
            report: Default::default(),
        };
        let split = Split::new(&data, Protocol::Paper, 3).unwrap();
        let train = (0..NU).flat_map(|u| split.train.of(u).iter().map(move |&i| (u as u32, i)));
        assert_eq!(NgcfAdjacency::from_split(&split), NgcfAdjacency::from_pairs(NU, NI, train));
    }

    #[test]
    fn widths_and_placement_shape_the_final_vectors() {
        let adj = NgcfAdjacency::from_pairs(NU, NI, pairs());
        let d = 4;
        let widths: Vec<u32> = (0..NU + NI).map(|r| (r % 3 + 1) as u32).collect();
        let input = Ngcf::<f64>::new(NU, NI, d, widths.clone(), 1, Placement::Input);
        let out = input.forward(&adj);
        for (r, row) in out.chunks(4 * d).enumerate() {
            let w = widths[r] as usize;
            for j in 0..d {
                // Layer 0 is the masked ego; the normalised layers are dense unit vectors.
                assert_eq!(row[4 * j] == 0.0, j >= w, "node {r} dim {j}");
                assert!(row[4 * j] == 0.0 || row[4 * j] == input.tensors[0][r * d + j]);
            }
            for l in 1..4 {
                let norm: f64 = (0..d).map(|j| row[4 * j + l] * row[4 * j + l]).sum();
                assert!((norm - 1.0).abs() < 1e-12);
            }
        }
        // Masked ego columns get no gradient and do not move the loss.
        let batch = [(0u32, 1u32, 2u32), (3, 4, 0)];
        let (loss, grads) = input.loss_and_grad(&adj, &batch, 0.01);
        let mut other = input.clone();
        for (r, row) in other.tensors[0].chunks_mut(d).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                if j >= widths[r] as usize {
                    assert_eq!(grads[0][r * d + j], 0.0);
                    *v = 123.0;
                }
            }
        }
        assert_eq!(other.loss_and_grad(&adj, &batch, 0.01).0, loss);
        // Output placement: exactly the first w interleaved values survive.
        other.placement = Placement::Output;
        let cut = other.forward(&adj);
        for (r, row) in cut.chunks(4 * d).enumerate() {
            assert!(row[widths[r] as usize..].iter().all(|&v| v == 0.0));
            assert!(row[..widths[r] as usize].iter().all(|&v| v != 0.0));
        }
        assert_eq!(other.score(&cut, 1, 2), dot(&cut[4 * d..8 * d], &cut[(NU + 2) * 4 * d..(NU + 3) * 4 * d]));
    }

    /// A workspace that carries buffers over from other steps (some handed out unzeroed) gives
    /// the gradients of a fresh one, bit for bit: nothing stale leaks into a step. Its kept
    /// buffers start poisoned with NaN, so a buffer read before it is written shows.
    #[test]
    fn a_reused_workspace_gives_the_gradients_of_a_fresh_one() {
        let (nu, ni, d) = (40, 60, 4);
        let pairs = (0..nu as u32).flat_map(|u| (0..3u32).map(move |k| (u, (u * 7 + k * 11) % ni as u32)));
        let adj = NgcfAdjacency::from_pairs(nu, ni, pairs);
        let widths: Vec<u32> = (0..nu + ni).map(|r| (r % (4 * d) + 1) as u32).collect();
        for placement in [Placement::Input, Placement::Output, Placement::Both] {
            let model = Ngcf::<f32>::new(nu, ni, d, widths.clone(), 2, placement);
            let batch = |shift: u32| -> Vec<(u32, u32, u32)> {
                (0..30u32)
                    .map(|k| ((k + shift) % nu as u32, (k * 5 + shift) % ni as u32, (k * 3 + 1) % ni as u32))
                    .collect()
            };
            let mut ws = NgcfWorkspace::default();
            ws.give((0..24).map(|_| vec![f32::NAN; (nu + ni) * d]));
            for shift in [0, 9, 17] {
                let reused = model.loss_and_grad_into(&adj, &batch(shift), NGCF_REG, &mut ws);
                let (fresh, grads) = model.loss_and_grad(&adj, &batch(shift), NGCF_REG);
                assert_eq!(reused.to_bits(), fresh.to_bits(), "{placement:?} {shift}");
                let bits = |g: &[Vec<f32>]| g.iter().flatten().map(|v| v.to_bits()).collect::<Vec<u32>>();
                assert_eq!(bits(&ws.grads), bits(&grads), "{placement:?} {shift}");
            }
            assert!(!ws.free.is_empty(), "buffers are kept for the next step");
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (nu, ni, d) = (700, 900, 8);
        let pairs = (0..nu as u32).flat_map(|u| (0..5u32).map(move |k| (u, (u * 31 + k * 97) % ni as u32)));
        let adj = NgcfAdjacency::from_pairs(nu, ni, pairs);
        let widths: Vec<u32> = (0..nu + ni).map(|r| (r % (4 * d) + 1) as u32).collect();
        let model = Ngcf::<f32>::new(nu, ni, d, widths, 5, Placement::Both);
        let batch: Vec<(u32, u32, u32)> =
            (0..600u32).map(|k| (k, (k * 13) % ni as u32, (k * 7 + 3) % ni as u32)).collect();
        let run = || model.loss_and_grad(&adj, &batch, NGCF_REG);
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
        let many = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(run);
        assert_eq!(one.0.to_bits(), many.0.to_bits());
        assert!(one.1.iter().flatten().zip(many.1.iter().flatten()).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(one.0.is_finite() && one.1.iter().flatten().any(|&v| v != 0.0));
    }
}
