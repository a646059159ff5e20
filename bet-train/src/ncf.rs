//! NCF (NeuMF with one hidden layer, `bet-algorithm.md` §2.2) with per-entity widths: the score
//! function of `docs/format.md` §7.3, BPR loss, the exact gradient of every parameter, and a fast
//! all-items scorer for evaluation.
//!
//! For user `u` (width `wu`) and item `i` (width `wi`), with `um`, `im`, `ug`, `ig` the MLP and GMF
//! rows masked to their entity's first `w` dimensions:
//!
//! ```text
//! h[j]  = relu( (W1u[j]·um + W1i[j]·im) + b1[j] )          j in 0..d, relu(x) = x if x > 0 else 0
//! g[j]  = ug[j] · ig[j]  for j < min(wu, wi), else 0
//! score = (wh·h + wg·g) + b_out                             (a logit: no sigmoid)
//! ```
//!
//! `W1` is `d` rows of `2d` (`W1u[j] = W1[j][0..d]`, `W1i[j] = W1[j][d..2d]`), `wh = w_out[0..d]`,
//! `wg = w_out[d..2d]`. The GMF and MLP tables share each entity's width, a documented deviation
//! from the reference, whose GMF rows all had one uniform size. The BPR loss of
//! `(user, positive item, negative item)` triples is `mean softplus(s_neg − s_pos)` plus
//! `reg · Σ (squared norms of the six masked rows) / B` ([`NCF_REG`]); dense weights are not
//! regularised. The ReLU's derivative at exactly 0 is taken as 0.
//!
//! Batch work runs as blocked GEMMs (see [`crate::ngcf`]'s helpers) with results independent of
//! the thread count. Evaluation uses the projection trick: `W1·[um; im] = W1u·um + W1i·im`, so
//! [`Ncf::projections`] computes `W1u·um + b1` per user and `W1i·im` per item once and each pair
//! then costs a `d`-wide add, ReLU and dot plus the GMF dot.

use ndarray::{ArrayView2, Axis};
use num_traits::Float;
use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;
use rayon::prelude::*;

use crate::eval::Scorer;
use crate::ngcf::{Real, col_sums, matmul, matmul_tn, sigmoid, softplus, xavier_uniform};

/// The reference's regularisation weight for NCF (on the six masked rows of a triple).
pub const NCF_REG: f32 = 1e-2;
/// Mixed into the seed of the initialisation stream.
const SEED_MIX: u64 = 0x4E43_4600_1A17_0002;

const USER_MLP: usize = 0;
const ITEM_MLP: usize = 1;
const USER_GMF: usize = 2;
const ITEM_GMF: usize = 3;
const W1: usize = 4;
const B1: usize = 5;
const W_OUT: usize = 6;
const B_OUT: usize = 7;
/// Users per task of the all-items scorer.
const USER_TILE: usize = 8;
/// Items per cache tile of the all-items scorer.
const ITEM_TILE: usize = 256;

/// An NCF model over `U` users and `V` items.
#[derive(Clone, Debug)]
pub struct Ncf<T> {
    /// Users.
    pub n_users: usize,
    /// Items.
    pub n_items: usize,
    /// Full width d (d_max); the hidden layer is `d` wide.
    pub d: usize,
    /// Width of every entity, users then items, in `1..=d` (shared by its MLP and GMF rows).
    pub widths: Vec<u32>,
    /// Every trainable tensor, in the order of [`Ncf::tensor_names`]: `user_mlp` (`U × d`),
    /// `item_mlp` (`V × d`), `user_gmf` (`U × d`), `item_gmf` (`V × d`), `w1` (`d × 2d`), `b1`
    /// (`d`), `w_out` (`2d`), `b_out` (1).
    pub tensors: Vec<Vec<T>>,
}

/// Buffers of [`Ncf::loss_and_grad_into`] kept across steps.
pub struct NcfWorkspace<T> {
    /// The gradient of every tensor after a step, in the order and shapes of the tensors.
    pub grads: Vec<Vec<T>>,
    /// Hidden pre-activations of the batch's pairs.
    a: Vec<T>,
    /// Their gradient.
    da: Vec<T>,
    /// The gradient of the gathered item rows.
    dim: Vec<T>,
}

impl<T> Default for NcfWorkspace<T> {
    fn default() -> Self {
        NcfWorkspace { grads: Vec::new(), a: Vec::new(), da: Vec::new(), dim: Vec::new() }
    }
}

/// Per-entity hidden-layer projections for fast scoring (see [`Ncf::projections`]).
#[derive(Clone, Debug)]
pub struct NcfProjections<T> {
    /// `W1u·um + b1` per user, `U × d`.
    pub users: Vec<T>,
    /// `W1i·im` per item, `V × d`.
    pub items: Vec<T>,
}

fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).fold(T::zero(), |s, (&x, &y)| s + x * y)
}

fn relu<T: Float>(x: T) -> T {
    if x > T::zero() { x } else { T::zero() }
}

/// `Σ_j w[j] · relu(a[j] + b[j])` with eight independent partial sums (vectorisable).
fn relu_dot<T: Float>(a: &[T], b: &[T], w: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let n = a.len().min(b.len()).min(w.len());
    let whole = n / 8 * 8;
    for ((ca, cb), cw) in a[..whole].chunks_exact(8).zip(b[..whole].chunks_exact(8)).zip(w[..whole].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] = acc[l] + cw[l] * relu(ca[l] + cb[l]);
        }
    }
    let mut tail = T::zero();
    for j in whole..n {
        tail = tail + w[j] * relu(a[j] + b[j]);
    }
    acc.iter().fold(T::zero(), |s, &v| s + v) + tail
}

/// `Σ_j a[j] · b[j]` with eight independent partial sums (vectorisable).
fn dot8<T: Float>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let n = a.len().min(b.len());
    let whole = n / 8 * 8;
    for (ca, cb) in a[..whole].chunks_exact(8).zip(b[..whole].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] = acc[l] + ca[l] * cb[l];
        }
    }
    let tail = a[whole..n].iter().zip(&b[whole..n]).fold(T::zero(), |s, (&x, &y)| s + x * y);
    acc.iter().fold(T::zero(), |s, &v| s + v) + tail
}

impl<T: Real> Ncf<T> {
    /// Names of [`Ncf::tensors`], in order.
    pub fn tensor_names() -> &'static [&'static str] {
        &["user_mlp", "item_mlp", "user_gmf", "item_gmf", "w1", "b1", "w_out", "b_out"]
    }

    /// A fresh model: Xavier-uniform tables, `w1` and `w_out`, drawn in that order (`user_mlp`,
    /// `item_mlp`, `user_gmf`, `item_gmf`, `w1`, `w_out`) from one stream seeded by `seed`;
    /// biases zero.
    ///
    /// Xavier uniform on a `rows × cols` tensor draws `U(−a, a)`, `a = sqrt(6 / (rows + cols))`,
    /// with torch's `xavier_uniform_` convention `fan_in = cols`, `fan_out = rows`: a table is
    /// `rows × d`, `w1` is `d × 2d` and `w_out` a `1 × 2d` matrix.
    ///
    /// # Panics
    /// If `widths` is not one width in `1..=d` per entity.
    pub fn new(n_users: usize, n_items: usize, d: usize, widths: Vec<u32>, seed: u64) -> Self {
        assert_eq!(widths.len(), n_users + n_items, "one width per entity");
        assert!(widths.iter().all(|&w| w >= 1 && w as usize <= d), "widths in 1..=d");
        let mut rng = Pcg64Mcg::seed_from_u64(seed ^ SEED_MIX);
        let tensors = vec![
            xavier_uniform(&mut rng, n_users, d),
            xavier_uniform(&mut rng, n_items, d),
            xavier_uniform(&mut rng, n_users, d),
            xavier_uniform(&mut rng, n_items, d),
            xavier_uniform(&mut rng, d, 2 * d),
            vec![T::zero(); d],
            xavier_uniform(&mut rng, 1, 2 * d),
            vec![T::zero(); 1],
        ];
        Ncf { n_users, n_items, d, widths, tensors }
    }

    fn user_width(&self, u: usize) -> usize {
        (self.widths[u] as usize).min(self.d)
    }

    fn item_width(&self, i: usize) -> usize {
        (self.widths[self.n_users + i] as usize).min(self.d)
    }

    /// Row `r` of tensor `t` (a `· × d` table), cut to its first `w` values.
    fn row(&self, t: usize, r: usize, w: usize) -> &[T] {
        &self.tensors[t][r * self.d..r * self.d + w]
    }

    /// The score of user `u` and item `i` (0-based item id), exactly as `docs/format.md` §7.3
    /// orders the arithmetic.
    pub fn score(&self, u: usize, i: usize) -> T {
        let d = self.d;
        let (wu, wi) = (self.user_width(u), self.item_width(i));
        let (um, im) = (self.row(USER_MLP, u, wu), self.row(ITEM_MLP, i, wi));
        let (ug, ig) = (self.row(USER_GMF, u, wu), self.row(ITEM_GMF, i, wi));
        let (w1, b1, w_out) = (&self.tensors[W1], &self.tensors[B1], &self.tensors[W_OUT]);
        let h: Vec<T> = (0..d)
            .map(|j| {
                let row = &w1[j * 2 * d..(j + 1) * 2 * d];
                relu((dot(&row[..wu], um) + dot(&row[d..d + wi], im)) + b1[j])
            })
            .collect();
        let m = wu.min(wi);
        let g: Vec<T> = (0..d).map(|j| if j < m { ug[j] * ig[j] } else { T::zero() }).collect();
        (dot(&w_out[..d], &h) + dot(&w_out[d..], &g)) + self.tensors[B_OUT][0]
    }

    /// `W1` as a `d × 2d` matrix.
    fn w1(&self) -> ArrayView2<'_, T> {
        ArrayView2::from_shape((self.d, 2 * self.d), &self.tensors[W1]).expect("w1 is d x 2d")
    }

    /// Rows of table `t` (masked to widths), one per `(row, width)`, as a dense `n × d` matrix.
    fn gather(&self, t: usize, rows: impl Iterator<Item = (usize, usize)>) -> Vec<T> {
        let d = self.d;
        let mut out = Vec::new();
        for (r, w) in rows {
            out.extend_from_slice(self.row(t, r, w));
            out.resize(out.len() + d - w, T::zero());
        }
        out
    }

    /// The BPR loss of `batch` (user, positive item, negative item; 0-based item ids) and the
    /// gradient of every tensor, in the order and shapes of [`Ncf::tensors`].
    pub fn loss_and_grad(&self, batch: &[(u32, u32, u32)], reg: T) -> (T, Vec<Vec<T>>) {
        let mut workspace = NcfWorkspace::default();
        let loss = self.loss_and_grad_into(batch, reg, &mut workspace);
        (loss, workspace.grads)
    }

    /// [`Ncf::loss_and_grad`] with buffers kept across steps: the gradient is left in
    /// `workspace.grads`. At full width on Gowalla the gradient tensors are 72 MB; made fresh
    /// every step, their pages fault in again every step.
    pub fn loss_and_grad_into(&self, batch: &[(u32, u32, u32)], reg: T, workspace: &mut NcfWorkspace<T>) -> T {
        let (d, bn) = (self.d, batch.len());
        let b = T::from(bn.max(1)).unwrap_or(T::one());
        let NcfWorkspace { grads, a, da, dim } = workspace;
        grads.resize_with(self.tensors.len(), Vec::new);
        for (g, t) in grads.iter_mut().zip(&self.tensors) {
            // Every entry is accumulated into, so every entry starts at zero.
            g.clear();
            g.resize(t.len(), T::zero());
        }
        if d == 0 || bn == 0 {
            return T::zero();
        }
        let user = |k: usize| batch[k % bn].0 as usize;
        // Pair k < B is (user, positive), pair B + k is (user, negative).
        let item = |k: usize| if k < bn { batch[k].1 as usize } else { batch[k - bn].2 as usize };
        let um = self.gather(USER_MLP, (0..bn).map(|k| (user(k), self.user_width(user(k)))));
        let im = self.gather(ITEM_MLP, (0..2 * bn).map(|k| (item(k), self.item_width(item(k)))));
        let w1 = self.w1();
        let (w1u, w1i) = w1.split_at(Axis(1), d);
        let mut au = vec![T::zero(); bn * d];
        matmul(&um, w1u.reversed_axes(), T::zero(), &mut au);
        // a: hidden pre-activations of the 2B pairs (overwritten whole: beta is zero).
        a.resize(2 * bn * d, T::zero());
        matmul(&im, w1i.reversed_axes(), T::zero(), a);
        let b1 = &self.tensors[B1];
        a.par_chunks_mut(d).enumerate().for_each(|(k, row)| {
            let ur = &au[(k % bn) * d..][..d];
            for ((v, &x), &c) in row.iter_mut().zip(ur).zip(b1) {
                *v = (x + *v) + c;
            }
        });
        let (wh, wg) = self.tensors[W_OUT].split_at(d);
        let b_out = self.tensors[B_OUT][0];
        let gmf = |k: usize| -> (usize, usize, usize) {
            let (u, i) = (user(k), item(k));
            (u, i, self.user_width(u).min(self.item_width(i)))
        };
        let scores: Vec<T> = a
            .par_chunks(d)
            .enumerate()
            .map(|(k, row)| {
                let (u, i, m) = gmf(k);
                let g = self.row(USER_GMF, u, m).iter().zip(self.row(ITEM_GMF, i, m)).zip(wg);
                (row.iter().zip(wh).fold(T::zero(), |s, (&x, &w)| s + w * relu(x))
                    + g.fold(T::zero(), |s, ((&x, &y), &w)| s + w * (x * y)))
                    + b_out
            })
            .collect();

        // Loss, dL/da, and the GMF, output-layer and regularisation gradients.
        let (mut loss, mut reg_sum) = (T::zero(), T::zero());
        let two_reg = (reg + reg) / b;
        // dL/da: written only where the ReLU passes, so it starts at zero.
        da.clear();
        da.resize(2 * bn * d, T::zero());
        for k in 0..bn {
            let x = scores[bn + k] - scores[k];
            loss = loss + softplus(x);
            let c = sigmoid(x) / b;
            for (pair, ds) in [(k, T::zero() - c), (bn + k, c)] {
                let (u, i, m) = gmf(pair);
                let arow = &a[pair * d..(pair + 1) * d];
                for j in 0..d {
                    grads[W_OUT][j] = grads[W_OUT][j] + ds * relu(arow[j]);
                    if arow[j] > T::zero() {
                        da[pair * d + j] = ds * wh[j];
                    }
                }
                for j in 0..m {
                    let (ug, ig) = (self.tensors[USER_GMF][u * d + j], self.tensors[ITEM_GMF][i * d + j]);
                    grads[W_OUT][d + j] = grads[W_OUT][d + j] + ds * (ug * ig);
                    grads[USER_GMF][u * d + j] = grads[USER_GMF][u * d + j] + ds * wg[j] * ig;
                    grads[ITEM_GMF][i * d + j] = grads[ITEM_GMF][i * d + j] + ds * wg[j] * ug;
                }
                grads[B_OUT][0] = grads[B_OUT][0] + ds;
            }
            let (u, p, q) = (batch[k].0 as usize, batch[k].1 as usize, batch[k].2 as usize);
            let (wu, wp, wq) = (self.user_width(u), self.item_width(p), self.item_width(q));
            for (t, r, w) in [
                (USER_MLP, u, wu),
                (ITEM_MLP, p, wp),
                (ITEM_MLP, q, wq),
                (USER_GMF, u, wu),
                (ITEM_GMF, p, wp),
                (ITEM_GMF, q, wq),
            ] {
                let row = self.row(t, r, w);
                reg_sum = reg_sum + dot(row, row);
                for (o, &v) in grads[t][r * d..r * d + w].iter_mut().zip(row) {
                    *o = *o + two_reg * v;
                }
            }
        }
        loss = loss / b + reg * reg_sum / b;

        // Backward through the hidden layer: a = (W1u·um + W1i·im) + b1.
        let dau: Vec<T> = da[..bn * d].iter().zip(&da[bn * d..]).map(|(&x, &y)| x + y).collect();
        grads[B1] = col_sums(&dau, d);
        let dw1u = matmul_tn(&dau, d, &um, d);
        let dw1i = matmul_tn(da, d, &im, d);
        for (j, row) in grads[W1].chunks_mut(2 * d).enumerate() {
            row[..d].copy_from_slice(&dw1u[j * d..(j + 1) * d]);
            row[d..].copy_from_slice(&dw1i[j * d..(j + 1) * d]);
        }
        let mut dum = vec![T::zero(); bn * d];
        matmul(&dau, w1u, T::zero(), &mut dum);
        // Overwritten whole (beta is zero).
        dim.resize(2 * bn * d, T::zero());
        matmul(da, w1i, T::zero(), dim);
        // Scatter into the tables in batch order, masked.
        for k in 0..bn {
            let u = user(k);
            let wu = self.user_width(u);
            for (o, &v) in grads[USER_MLP][u * d..u * d + wu].iter_mut().zip(&dum[k * d..]) {
                *o = *o + v;
            }
        }
        for k in 0..2 * bn {
            let i = item(k);
            let wi = self.item_width(i);
            for (o, &v) in grads[ITEM_MLP][i * d..i * d + wi].iter_mut().zip(&dim[k * d..]) {
                *o = *o + v;
            }
        }
        loss
    }

    /// Hidden-layer projections of every user (`W1u·um + b1`) and item (`W1i·im`).
    pub fn projections(&self) -> NcfProjections<T> {
        let d = self.d;
        let w1 = self.w1();
        let (w1u, w1i) = w1.split_at(Axis(1), d);
        let um = self.gather(USER_MLP, (0..self.n_users).map(|u| (u, self.user_width(u))));
        let im = self.gather(ITEM_MLP, (0..self.n_items).map(|i| (i, self.item_width(i))));
        let mut users = vec![T::zero(); self.n_users * d];
        matmul(&um, w1u.reversed_axes(), T::zero(), &mut users);
        let b1 = &self.tensors[B1];
        if d > 0 {
            users.par_chunks_mut(d).for_each(|row| row.iter_mut().zip(b1).for_each(|(v, &c)| *v = *v + c));
        }
        let mut items = vec![T::zero(); self.n_items * d];
        matmul(&im, w1i.reversed_axes(), T::zero(), &mut items);
        NcfProjections { users, items }
    }

    /// Scores of every item for each of `users` into `out` (`users.len()` rows of `n_items`),
    /// from `projections` of this model; parallel over users.
    pub fn score_users_with(&self, projections: &NcfProjections<T>, users: &[u32], out: &mut [T]) {
        let (d, ni) = (self.d, self.n_items);
        assert_eq!(out.len(), users.len() * ni, "out is users x items");
        if ni == 0 {
            return;
        }
        let (wh, wg) = self.tensors[W_OUT].split_at(d);
        let b_out = self.tensors[B_OUT][0];
        let item_gmf = &self.tensors[ITEM_GMF];
        // Tiles of users × items, so that an item tile's projections and GMF rows are read from
        // cache by every user of the tile instead of from memory once per user.
        out.par_chunks_mut(ni * USER_TILE).zip(users.par_chunks(USER_TILE)).for_each(|(rows, tile)| {
            // Per user: width, projection, and wg ⊙ ug (cut at the user's width).
            let prep: Vec<(usize, &[T], Vec<T>)> = tile
                .iter()
                .map(|&u| {
                    let (u, wu) = (u as usize, self.user_width(u as usize));
                    let wgug = self.row(USER_GMF, u, wu).iter().zip(wg).map(|(&x, &w)| w * x).collect();
                    (wu, &projections.users[u * d..(u + 1) * d], wgug)
                })
                .collect();
            for start in (0..ni).step_by(ITEM_TILE) {
                let end = (start + ITEM_TILE).min(ni);
                for (row, (wu, pu, wgug)) in rows.chunks_mut(ni).zip(&prep) {
                    for (o, i) in row[start..end].iter_mut().zip(start..end) {
                        let m = (*wu).min(self.item_width(i));
                        let pi = &projections.items[i * d..(i + 1) * d];
                        *o = (relu_dot(pu, pi, wh) + dot8(&wgug[..m], &item_gmf[i * d..i * d + m])) + b_out;
                    }
                }
            }
        });
    }

    /// Scores of every item for each of `users` into `out` (`users.len()` rows of `n_items`).
    /// Computes the projections on every call; for repeated calls use [`Ncf::projections`] and
    /// [`Ncf::score_users_with`] (or [`Ncf::scorer`]).
    pub fn score_users(&self, users: &[u32], out: &mut [T]) {
        self.score_users_with(&self.projections(), users, out);
    }
}

/// An [`Ncf`] with its projections precomputed, as an evaluation [`Scorer`].
pub struct NcfScorer<'a> {
    model: &'a Ncf<f32>,
    projections: NcfProjections<f32>,
}

impl Ncf<f32> {
    /// This model as an evaluation scorer (projections computed once).
    pub fn scorer(&self) -> NcfScorer<'_> {
        NcfScorer { model: self, projections: self.projections() }
    }
}

impl Scorer for NcfScorer<'_> {
    fn n_items(&self) -> usize {
        self.model.n_items
    }
    fn score_users(&self, users: &[u32], out: &mut [f32]) {
        self.model.score_users_with(&self.projections, users, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NU: usize = 5;
    const NI: usize = 6;
    const D: usize = 6;

    fn model() -> Ncf<f64> {
        let widths: Vec<u32> = (0..NU + NI).map(|r| ((r * 5) % D + 1) as u32).collect();
        let mut m = Ncf::<f64>::new(NU, NI, D, widths, 3);
        // Non-zero biases, so that their paths are exercised too.
        m.tensors[B1] = (0..D).map(|j| 0.1 * (j as f64 - 2.5)).collect();
        m.tensors[B_OUT][0] = 0.3;
        m
    }

    const BATCH: [(u32, u32, u32); 5] = [(0, 1, 2), (3, 4, 0), (0, 5, 1), (4, 2, 3), (2, 2, 5)];

    /// Every entry of every tensor against Richardson-extrapolated central differences,
    /// `(4 D(h/2) − D(h)) / 3` with h = 1e-3 (error O(h⁴)), as in `ngcf.rs` (which says why), and
    /// plain differences at h = 1e-6 for information.
    #[test]
    fn gradients_match_central_differences() {
        let mut model = model();
        let h = 1e-3;
        // Keep away from the ReLU's kink by construction: no pre-activation of the batch within
        // 3h of 0 (a step across it would show as a failure, never as a false pass).
        let mut nearest = f64::INFINITY;
        for &(u, p, q) in &BATCH {
            for i in [p as usize, q as usize] {
                let (wu, wi) = (model.user_width(u as usize), model.item_width(i));
                for j in 0..D {
                    let row = &model.tensors[W1][j * 2 * D..(j + 1) * 2 * D];
                    let a = dot(&row[..wu], model.row(USER_MLP, u as usize, wu))
                        + dot(&row[D..D + wi], model.row(ITEM_MLP, i, wi))
                        + model.tensors[B1][j];
                    nearest = nearest.min(a.abs());
                }
            }
        }
        assert!(nearest > 3.0 * h, "a pre-activation is {nearest:e} from the kink");
        let reg = 0.03;
        let (loss, grads) = model.loss_and_grad(&BATCH, reg);
        assert!(loss.is_finite());
        let errors =
            crate::gradcheck::compare(&mut model, |m| &mut m.tensors, |m| m.loss_and_grad(&BATCH, reg).0, &grads, h);
        let (worst, worst_plain, smallest) = (errors.worst, errors.worst_plain, errors.smallest);
        eprintln!("ncf: worst relative gradient error {worst:e} (plain h = 1e-6: {worst_plain:e})");
        assert!(smallest > 1e-6, "an entry of magnitude {smallest:e} is below what the check resolves");
        assert!(worst < 1e-6, "worst relative gradient error {worst:e}");
    }

    /// A workspace kept across steps gives what fresh buffers give, bit for bit: after a batch
    /// whose ReLUs pass in many places, a smaller batch's gradient must not keep any of them
    /// (`da` is written only where the ReLU passes, so it must start at zero each step).
    #[test]
    fn a_reused_workspace_gives_fresh_results() {
        let model = model();
        let mut workspace = NcfWorkspace::default();
        for batch in [&BATCH[..], &BATCH[2..4], &BATCH[..1], &BATCH[..]] {
            let loss = model.loss_and_grad_into(batch, 0.03, &mut workspace);
            let (fresh_loss, fresh) = model.loss_and_grad(batch, 0.03);
            assert_eq!(loss.to_bits(), fresh_loss.to_bits());
            assert_eq!(workspace.grads, fresh, "batch of {}", batch.len());
        }
    }

    #[test]
    fn loss_uses_the_score_function() {
        let m = model();
        let (loss, _) = m.loss_and_grad(&BATCH, 0.0);
        let expected = BATCH
            .iter()
            .map(|&(u, p, q)| softplus(m.score(u as usize, q as usize) - m.score(u as usize, p as usize)))
            .sum::<f64>()
            / BATCH.len() as f64;
        assert!((loss - expected).abs() < 1e-12, "{loss} vs {expected}");
    }

    #[test]
    fn masked_columns_do_not_score_and_get_no_gradient() {
        let m = model();
        let (_, grads) = m.loss_and_grad(&BATCH, 0.05);
        let mut other = m.clone();
        for t in [USER_MLP, ITEM_MLP, USER_GMF, ITEM_GMF] {
            let offset = if t == ITEM_MLP || t == ITEM_GMF { NU } else { 0 };
            for (r, row) in other.tensors[t].chunks_mut(D).enumerate() {
                for (j, v) in row.iter_mut().enumerate().skip(m.widths[offset + r] as usize) {
                    assert_eq!(grads[t][r * D + j], 0.0, "tensor {t} row {r} dim {j}");
                    *v = 1e3;
                }
            }
        }
        for u in 0..NU {
            for i in 0..NI {
                assert_eq!(other.score(u, i), m.score(u, i));
            }
        }
        assert_eq!(other.loss_and_grad(&BATCH, 0.05).0, m.loss_and_grad(&BATCH, 0.05).0);
    }

    #[test]
    fn fast_scorer_agrees_with_the_pair_score() {
        let (nu, ni, d) = (11, 300, 20); // more than one tile of users and of items
        let widths: Vec<u32> = (0..nu + ni).map(|r| ((r * 7) % d + 1) as u32).collect();
        let mut m = Ncf::<f32>::new(nu, ni, d, widths, 3);
        m.tensors[B1] = (0..d).map(|j| 0.05 * (j as f32 - 10.0)).collect();
        m.tensors[B_OUT][0] = -0.2;
        let users = [6u32, 0, 3, 3, 10, 1, 2, 7, 8, 9];
        let mut out = vec![0.0f32; users.len() * ni];
        m.score_users(&users, &mut out);
        let mut via_scorer = vec![0.0f32; users.len() * ni];
        Scorer::score_users(&m.scorer(), &users, &mut via_scorer);
        assert_eq!(out, via_scorer);
        for (row, &u) in out.chunks(ni).zip(&users) {
            for (i, &s) in row.iter().enumerate() {
                let exact = m.score(u as usize, i);
                assert!((s - exact).abs() <= 1e-5 * exact.abs().max(1.0), "user {u} item {i}: {s} vs {exact}");
            }
        }
    }
}
