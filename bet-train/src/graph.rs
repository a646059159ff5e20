//! The normalised user–item graph of LightGCN, and its sparse product.
//!
//! Nodes are users `0..U` then items `U..U+V`; an edge joins a user and an item of the training
//! split. LightGCN's propagation matrix is `Â = D^-1/2 A D^-1/2` (symmetric, no self loops), so
//! `Â_ui = 1 / sqrt(deg(u) · deg(i))`. Because `Â` is symmetric, the backward pass of `Y = Â X`
//! is `dX = Â dY`: the same product. Each output row is summed by one thread in column order,
//! so results do not depend on the thread count.

use num_traits::Float;
use rayon::prelude::*;

use crate::split::Split;

/// A square sparse matrix in CSR form with `f64` values (cast to the compute type on use).
#[derive(Clone, Debug, PartialEq)]
pub struct Adjacency {
    n: usize,
    /// First item node: products run over user rows, then item rows (see `product`).
    boundary: usize,
    row_ptr: Vec<usize>,
    col: Vec<u32>,
    val: Vec<f64>,
}

impl Adjacency {
    /// LightGCN's `D^-1/2 A D^-1/2` over the training split.
    pub fn lightgcn(split: &Split) -> Adjacency {
        let (mut offsets, mut items) = (vec![0u32], Vec::new());
        for u in 0..split.n_users {
            items.extend_from_slice(split.train.of(u));
            offsets.push(items.len() as u32);
        }
        Adjacency::lightgcn_from_user_items(split.n_users, split.n_items, &offsets, &items)
    }

    /// The matrix whose row `r` has the entries `(r, c)` for `c` in `neighbours[r]` (sorted here),
    /// each of value `value(r, c)`. Rows `boundary..` are the item side (see `product`).
    pub(crate) fn from_neighbours(
        boundary: usize,
        mut neighbours: Vec<Vec<u32>>,
        value: impl Fn(usize, usize) -> f64,
    ) -> Adjacency {
        let n = neighbours.len();
        let mut row_ptr = Vec::with_capacity(n + 1);
        let (mut col, mut val) = (Vec::new(), Vec::new());
        row_ptr.push(0);
        for (r, l) in neighbours.iter_mut().enumerate() {
            l.sort_unstable();
            for &c in l.iter() {
                col.push(c);
                val.push(value(r, c as usize));
            }
            row_ptr.push(col.len());
        }
        Adjacency { n, boundary, row_ptr, col, val }
    }

    /// The user side of a bipartite graph built by [`Adjacency::lightgcn`]: for users
    /// `0..n_users`, offsets into a list of their item indices (node minus `n_users`), increasing.
    pub fn user_items(&self, n_users: usize) -> (Vec<u32>, Vec<u32>) {
        let end = self.row_ptr.get(n_users).copied().unwrap_or(0);
        let offsets = self.row_ptr.iter().take(n_users + 1).map(|&p| p as u32).collect();
        let items = self.col[..end].iter().map(|&c| c - n_users as u32).collect();
        (offsets, items)
    }

    /// LightGCN's `D^-1/2 A D^-1/2` from a user-side CSR (`n_users + 1` offsets, each user's
    /// items): the graph an exported `input` file stores, rebuilt.
    pub fn lightgcn_from_user_items(n_users: usize, n_items: usize, offsets: &[u32], items: &[u32]) -> Adjacency {
        let mut neighbours: Vec<Vec<u32>> = vec![Vec::new(); n_users + n_items];
        for u in 0..n_users {
            for &i in &items[offsets[u] as usize..offsets[u + 1] as usize] {
                neighbours[u].push((n_users + i as usize) as u32);
                neighbours[n_users + i as usize].push(u as u32);
            }
        }
        let degree: Vec<f64> = neighbours.iter().map(|l| l.len() as f64).collect();
        Adjacency::from_neighbours(n_users, neighbours, |r, c| 1.0 / (degree[r] * degree[c]).sqrt())
    }

    /// Nodes.
    pub fn nodes(&self) -> usize {
        self.n
    }

    /// Non-zeros.
    pub fn nnz(&self) -> usize {
        self.col.len()
    }

    /// `y = Â x` for row-major `n × d` matrices.
    pub fn spmm<T: Float + Send + Sync>(&self, x: &[T], d: usize, y: &mut [T]) {
        self.product(x, d, y, Extra::None, None, None);
    }

    /// `y = Â x + add`, skipping source rows whose `src_nonzero` flag is false (they are known to
    /// be zero: the first backward product only has the batch's rows).
    pub fn spmm_plus<T: Float + Send + Sync>(
        &self,
        x: &[T],
        d: usize,
        y: &mut [T],
        add: &[T],
        src_nonzero: Option<&[bool]>,
    ) {
        self.product(x, d, y, Extra::Add(add), src_nonzero, None);
    }

    /// `y = Â x` and `sum += y` in one pass (a forward layer and the running layer sum).
    pub fn spmm_accumulate<T: Float + Send + Sync>(&self, x: &[T], d: usize, y: &mut [T], sum: &mut [T]) {
        self.product(x, d, y, Extra::Sum(sum), None, None);
    }

    /// [`Adjacency::spmm_accumulate`] for the rows whose `rows` flag is set only; other rows of
    /// `y` and `sum` are left as they were (the last forward layer of a training step: the loss
    /// reads only the batch's rows).
    pub fn spmm_accumulate_rows<T: Float + Send + Sync>(
        &self,
        x: &[T],
        d: usize,
        y: &mut [T],
        sum: &mut [T],
        rows: &[bool],
    ) {
        assert_eq!(rows.len(), self.n);
        self.product(x, d, y, Extra::Sum(sum), None, Some(rows));
    }

    fn product<T: Float + Send + Sync>(
        &self,
        x: &[T],
        d: usize,
        y: &mut [T],
        extra: Extra<'_, T>,
        src_nonzero: Option<&[bool]>,
        dst_rows: Option<&[bool]>,
    ) {
        assert_eq!(x.len(), self.n * d);
        assert_eq!(y.len(), self.n * d);
        if let Some(f) = src_nonzero {
            assert_eq!(f.len(), self.n);
        }
        if d == 0 {
            return; // nothing to write, and a zero-sized chunk would be refused below
        }
        let block = d * ROWS_PER_TASK;
        // Each task runs under `pulp`'s dispatch, which compiles the (inlined) row loop for the
        // best instruction set the CPU has (AVX-512 or AVX2 on x86-64) and picks it at run time. The
        // operations and their order are the same on every path, so results are identical.
        let arch = pulp::Arch::new();
        // User rows gather only item rows and item rows only user rows (the graph is
        // bipartite; NGCF's self loops add each row's own). Both threads work on one side at a
        // time, so the rows they gather (one table side, 15-21 MB on Gowalla) fit the last-level
        // cache together.
        let mut extra = extra;
        let (y_users, y_items) = y.split_at_mut(self.boundary * d);
        for (y, first) in [(y_users, 0), (y_items, self.boundary)] {
            let range = first * d..first * d + y.len();
            let task = |b: usize, out: &mut [T], add: Option<&[T]>, sum: Option<&mut [T]>| {
                arch.dispatch(RowTask {
                    adj: self,
                    x,
                    d,
                    first: first + b * ROWS_PER_TASK,
                    out,
                    add,
                    sum,
                    src_nonzero,
                    dst_rows,
                });
            };
            match &mut extra {
                Extra::None => y.par_chunks_mut(block).enumerate().for_each(|(b, out)| task(b, out, None, None)),
                Extra::Add(add) => {
                    assert_eq!(add.len(), self.n * d);
                    y.par_chunks_mut(block)
                        .zip(add[range].par_chunks(block))
                        .enumerate()
                        .for_each(|(b, (out, add))| task(b, out, Some(add), None))
                }
                Extra::Sum(sum) => {
                    assert_eq!(sum.len(), self.n * d);
                    y.par_chunks_mut(block)
                        .zip(sum[range].par_chunks_mut(block))
                        .enumerate()
                        .for_each(|(b, (out, sum))| task(b, out, None, Some(sum)))
                }
            }
        }
    }
}

/// One parallel task of a product: rows `first..` of the output, written into `out`.
struct RowTask<'a, T> {
    adj: &'a Adjacency,
    x: &'a [T],
    d: usize,
    first: usize,
    out: &'a mut [T],
    add: Option<&'a [T]>,
    sum: Option<&'a mut [T]>,
    src_nonzero: Option<&'a [bool]>,
    dst_rows: Option<&'a [bool]>,
}

impl<T: Float> pulp::WithSimd for RowTask<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let RowTask { adj, x, d, first, out, add, mut sum, src_nonzero, dst_rows } = self;
        for (k, row) in out.chunks_mut(d).enumerate() {
            let r = first + k;
            if dst_rows.is_some_and(|f| !f[r]) {
                continue;
            }
            product_row(adj, x, d, r, row, src_nonzero);
            if let Some(add) = add {
                row.iter_mut().zip(&add[k * d..(k + 1) * d]).for_each(|(o, &a)| *o = *o + a);
            }
            if let Some(sum) = sum.as_deref_mut() {
                sum[k * d..(k + 1) * d].iter_mut().zip(row.iter()).for_each(|(s, &o)| *s = *s + o);
            }
        }
    }
}

/// Row `r` of `Â x`, summed in column order.
#[inline(always)]
fn product_row<T: Float>(adj: &Adjacency, x: &[T], d: usize, r: usize, out: &mut [T], src_nonzero: Option<&[bool]>) {
    let (start, end) = (adj.row_ptr[r], adj.row_ptr[r + 1]);
    let (cols, vals) = (&adj.col[start..end], &adj.val[start..end]);
    if d == WIDE {
        // The common width gets a fixed-size accumulator that stays in registers / L1.
        let mut acc = [T::zero(); WIDE];
        for (&c, &v) in cols.iter().zip(vals) {
            if src_nonzero.is_some_and(|f| !f[c as usize]) {
                continue;
            }
            let w = T::from(v).unwrap_or(T::zero());
            let src: &[T; WIDE] = match x[c as usize * WIDE..][..WIDE].try_into() {
                Ok(s) => s,
                Err(_) => unreachable!("a WIDE-long slice converts to [T; WIDE]"),
            };
            for (a, &s) in acc.iter_mut().zip(src) {
                *a = *a + w * s;
            }
        }
        out.copy_from_slice(&acc);
    } else {
        out.iter_mut().for_each(|v| *v = T::zero());
        for (&c, &v) in cols.iter().zip(vals) {
            if src_nonzero.is_some_and(|f| !f[c as usize]) {
                continue;
            }
            let w = T::from(v).unwrap_or(T::zero());
            for (o, &s) in out.iter_mut().zip(&x[c as usize * d..][..d]) {
                *o = *o + w * s;
            }
        }
    }
}

/// Rows per parallel task: enough to amortise scheduling, small enough to balance skewed degrees.
const ROWS_PER_TASK: usize = 256;
/// The width with a fixed-size (register-friendly) accumulator: d_max of every paper setting.
const WIDE: usize = 128;

/// What a product does besides writing `Â x`.
enum Extra<'a, T> {
    None,
    Add(&'a [T]),
    Sum(&'a mut [T]),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use crate::split::{Protocol, Split};

    /// Every product variant against a dense `Â x`, at the fixed-accumulator width and another.
    #[test]
    fn products_match_a_dense_reference() {
        let pairs: Vec<(u32, u32)> =
            (0..7u32).flat_map(|u| (0..9u32).filter(move |i| (u * 5 + i * 3) % 4 != 1).map(move |i| (u, i))).collect();
        let split = Split::new(&Dataset::from_pairs("t", 7, 9, &pairs), Protocol::Given, 1).unwrap();
        let adj = Adjacency::lightgcn(&split);
        let n = adj.nodes();
        let mut dense = vec![0.0f64; n * n];
        for r in 0..n {
            for e in adj.row_ptr[r]..adj.row_ptr[r + 1] {
                dense[r * n + adj.col[e] as usize] = adj.val[e];
                let c = adj.col[e] as usize;
                let degrees = ((adj.row_ptr[r + 1] - adj.row_ptr[r]) * (adj.row_ptr[c + 1] - adj.row_ptr[c])) as f64;
                assert!((adj.val[e] - 1.0 / degrees.sqrt()).abs() < 1e-15, "D^-1/2 A D^-1/2 at ({r}, {c})");
            }
        }
        for d in [WIDE, 5] {
            let x: Vec<f64> = (0..n * d).map(|k| ((k * 7919) % 113) as f64 / 113.0 - 0.5).collect();
            let add: Vec<f64> = (0..n * d).map(|k| ((k * 31) % 17) as f64).collect();
            let expect: Vec<f64> = (0..n * d)
                .map(|k| {
                    let (r, j) = (k / d, k % d);
                    (0..n).map(|c| dense[r * n + c] * x[c * d + j]).sum::<f64>()
                })
                .collect();
            let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-12);
            let mut y = vec![0.0; n * d];
            adj.spmm(&x, d, &mut y);
            assert!(close(&y, &expect), "spmm, d = {d}");
            let mut sum = add.clone();
            adj.spmm_accumulate(&x, d, &mut y, &mut sum);
            let want: Vec<f64> = expect.iter().zip(&add).map(|(e, a)| e + a).collect();
            assert!(close(&y, &expect) && close(&sum, &want), "accumulate, d = {d}");
            adj.spmm_plus(&x, d, &mut y, &add, None);
            assert!(close(&y, &want), "plus, d = {d}");
            // Skipping rows flagged zero equals the product of x with those rows zeroed.
            let flags: Vec<bool> = (0..n).map(|r| r % 3 != 0).collect();
            let mut xz = x.clone();
            for r in (0..n).filter(|r| r % 3 == 0) {
                xz[r * d..(r + 1) * d].iter_mut().for_each(|v| *v = 0.0);
            }
            let mut y2 = vec![0.0; n * d];
            adj.spmm_plus(&xz, d, &mut y2, &add, None);
            adj.spmm_plus(&x, d, &mut y, &add, Some(&flags));
            assert!(close(&y, &y2), "skip, d = {d}");
            // In f32, bit for bit the plain loop in column order, whatever path the dispatch
            // chose (vector widths change nothing because each output value is one chain).
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let mut y32 = vec![0.0f32; n * d];
            adj.spmm(&x32, d, &mut y32);
            for r in 0..n {
                for j in 0..d {
                    let mut acc = 0.0f32;
                    for e in adj.row_ptr[r]..adj.row_ptr[r + 1] {
                        acc += adj.val[e] as f32 * x32[adj.col[e] as usize * d + j];
                    }
                    assert_eq!(acc.to_bits(), y32[r * d + j].to_bits(), "f32 row {r} column {j}, d = {d}");
                }
            }
        }
    }
}
