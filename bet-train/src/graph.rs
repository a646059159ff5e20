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
#[derive(Clone, Debug)]
pub struct Adjacency {
    n: usize,
    row_ptr: Vec<usize>,
    col: Vec<u32>,
    val: Vec<f64>,
}

impl Adjacency {
    /// LightGCN's `D^-1/2 A D^-1/2` over the training split.
    pub fn lightgcn(split: &Split) -> Adjacency {
        let (u_n, i_n) = (split.n_users, split.n_items);
        let n = u_n + i_n;
        let mut neighbours: Vec<Vec<u32>> = vec![Vec::new(); n];
        for u in 0..u_n {
            for &i in split.train.of(u) {
                neighbours[u].push((u_n + i as usize) as u32);
                neighbours[u_n + i as usize].push(u as u32);
            }
        }
        let degree: Vec<f64> = neighbours.iter().map(|l| l.len() as f64).collect();
        let mut row_ptr = Vec::with_capacity(n + 1);
        let (mut col, mut val) = (Vec::new(), Vec::new());
        row_ptr.push(0);
        for (r, l) in neighbours.iter_mut().enumerate() {
            l.sort_unstable();
            for &c in l.iter() {
                col.push(c);
                val.push(1.0 / (degree[r] * degree[c as usize]).sqrt());
            }
            row_ptr.push(col.len());
        }
        Adjacency { n, row_ptr, col, val }
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
        assert_eq!(x.len(), self.n * d);
        assert_eq!(y.len(), self.n * d);
        y.par_chunks_mut(d * 256).enumerate().for_each(|(block, out)| {
            for (k, row) in out.chunks_mut(d).enumerate() {
                let r = block * 256 + k;
                row.iter_mut().for_each(|v| *v = T::zero());
                for e in self.row_ptr[r]..self.row_ptr[r + 1] {
                    let w = T::from(self.val[e]).unwrap_or(T::zero());
                    let src = &x[self.col[e] as usize * d..][..d];
                    for (o, &s) in row.iter_mut().zip(src) {
                        *o = *o + w * s;
                    }
                }
            }
        });
    }
}
