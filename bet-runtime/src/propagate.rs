//! LightGCN propagation of an `input`-placement file (feature `alloc`; spec §7.5).
//!
//! Such a file stores each user's and item's **ego** row (its first `w` values; the budget counts
//! these) and the training graph. The vectors that are scored are the mean of layers `0..=L` of
//! `X_{k+1} = Â X_k`, with `Â_ui = 1 / sqrt(deg(u) · deg(i))`: dense, `d_max` wide, so they are
//! computed once, when the model is loaded, into memory the runtime allocates
//! ([`crate::Model::propagate`]). That memory is `(n_users + n_items) · d_max` floats for the
//! result, plus as much again and the smaller side's rows once more while propagating: a phone or
//! a server holds it, a microcontroller does not (it reads `output`/`both` files, whose stored rows
//! are already final).
//!
//! Every sum runs in the order the spec fixes (neighbours by increasing index, one multiplication
//! and one addition per term, no fused multiply-add), and the edge weights are computed in `f64`
//! with correctly rounded `sqrt` and division before rounding to `f32`, as the trainer does, so
//! the vectors are bit-identical to the trainer's.
//!
//! ```
//! # fn main() -> Result<(), bet_runtime::Error> {
//! # let bytes = bet_format::AlignedBytes::new(&bet_format::testing::input_file_bytes());
//! let mut model = bet_runtime::Model::new(bytes)?;
//! assert!(model.needs_propagation());          // scoring now would be refused
//! model.propagate()?;                          // allocates the final vectors once
//! let s = model.score(0, 1)?;
//! assert!(s.is_finite());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use bet_format::{BetFile, PropagationGraph};

use crate::Error;

/// The propagated (final) vectors of every user and item, `width` floats each, index order.
#[derive(Clone, Debug)]
pub(crate) struct FinalVectors {
    width: usize,
    n_users: usize,
    /// Users' rows, then items' rows.
    rows: Vec<f32>,
}

/// `len` copies of `value`, or [`Error::OutOfMemory`] instead of an abort.
fn filled<T: Clone>(len: usize, value: T) -> Result<Vec<T>, Error> {
    let bytes = len.saturating_mul(core::mem::size_of::<T>()) as u64;
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::OutOfMemory { bytes })?;
    v.resize(len, value);
    Ok(v)
}

/// `offsets[k] .. offsets[k + 1]` of a CSR offset array (empty past the end).
fn bounds(offsets: &[u32], k: usize) -> (u32, u32) {
    (offsets.get(k).copied().unwrap_or(0), offsets.get(k + 1).copied().unwrap_or(0))
}

/// `Â_ui` for degrees `du`, `di` (both ≥ 1 on an edge): `f32(1 / sqrt(du · di))` in `f64`.
fn edge_weight(du: u32, di: u32) -> f32 {
    (1.0 / libm::sqrt(f64::from(du) * f64::from(di))) as f32
}

/// The item side of the graph: each item's users (increasing) and, for each, the position of
/// the edge in the user-side list (to share its weight).
struct ItemSide {
    offsets: Vec<u32>,
    users: Vec<u32>,
    edge: Vec<u32>,
}

fn item_side(g: &PropagationGraph<'_>, n_items: usize) -> Result<ItemSide, Error> {
    let edges = g.items.len();
    let mut offsets = filled(n_items.checked_add(1).ok_or(Error::OutOfMemory { bytes: u64::MAX })?, 0u32)?;
    for &i in g.items {
        if let Some(slot) = offsets.get_mut(i as usize + 1) {
            *slot += 1;
        }
    }
    for k in 1..offsets.len() {
        let previous = offsets.get(k - 1).copied().unwrap_or(0);
        if let Some(slot) = offsets.get_mut(k) {
            *slot += previous;
        }
    }
    let mut fill = offsets.clone();
    let (mut users, mut edge) = (filled(edges, 0u32)?, filled(edges, 0u32)?);
    // Users in increasing order, so each item's list comes out increasing (a counting sort).
    for u in 0..g.user_offsets.len().saturating_sub(1) {
        let (start, end) = bounds(g.user_offsets, u);
        for e in start..end {
            let Some(&i) = g.items.get(e as usize) else { continue };
            let Some(at) = fill.get_mut(i as usize) else { continue };
            if let (Some(us), Some(ed)) = (users.get_mut(*at as usize), edge.get_mut(*at as usize)) {
                *us = u as u32;
                *ed = e;
            }
            *at += 1;
        }
    }
    Ok(ItemSide { offsets, users, edge })
}

/// `out = Σ_k w_k · x[src_k]` over `(src_k, w_k)` in the given order, `width` floats per row.
#[inline]
fn gather_row(out: &mut [f32], x: &[f32], width: usize, terms: impl Iterator<Item = (usize, f32)>) {
    out.iter_mut().for_each(|v| *v = 0.0);
    for (src, w) in terms {
        let Some(row) = src.checked_mul(width).and_then(|s| x.get(s..s.checked_add(width)?)) else { continue };
        for (o, &v) in out.iter_mut().zip(row) {
            *o += w * v;
        }
    }
}

/// Each user's next-layer row from the items' current rows (`items`, item index order).
fn users_from_items(out: &mut [f32], items: &[f32], width: usize, g: &PropagationGraph<'_>, weights: &[f32]) {
    for (u, row) in out.chunks_exact_mut(width).enumerate() {
        let (a, b) = bounds(g.user_offsets, u);
        let terms = (a..b).map(|e| {
            let i = g.items.get(e as usize).copied().unwrap_or(0) as usize;
            (i, weights.get(e as usize).copied().unwrap_or(0.0))
        });
        gather_row(row, items, width, terms);
    }
}

/// Each item's next-layer row from the users' current rows (`users`, user index order).
fn items_from_users(out: &mut [f32], users: &[f32], width: usize, side: &ItemSide, weights: &[f32]) {
    for (i, row) in out.chunks_exact_mut(width).enumerate() {
        let (a, b) = bounds(&side.offsets, i);
        let terms = (a..b).map(|k| {
            let u = side.users.get(k as usize).copied().unwrap_or(0) as usize;
            let e = side.edge.get(k as usize).copied().unwrap_or(0) as usize;
            (u, weights.get(e).copied().unwrap_or(0.0))
        });
        gather_row(row, users, width, terms);
    }
}

impl FinalVectors {
    /// Propagates `file`'s ego rows over its graph (spec §7.5).
    pub(crate) fn compute(file: &BetFile<'_>) -> Result<FinalVectors, Error> {
        let s = file.summary();
        let g = file.graph().ok_or(Error::NotPropagating)?;
        let (n_users, n_items) = (s.n_users as usize, s.n_items as usize);
        let width = s.vector_width as usize;
        let nodes = n_users.checked_add(n_items).ok_or(Error::OutOfMemory { bytes: u64::MAX })?;
        let len = nodes.checked_mul(width).ok_or(Error::OutOfMemory { bytes: u64::MAX })?;
        let user_rows = n_users * width; // ≤ len: cannot overflow

        // Layer 0: the stored rows, zero past each width.
        let mut x = filled(len, 0.0f32)?;
        {
            let (users, items) = x.split_at_mut(user_rows);
            for (u, row) in users.chunks_exact_mut(width.max(1)).enumerate() {
                if let Some(r) = file.users().row(u as u32) {
                    r.widen_into(row);
                }
            }
            for (i, row) in items.chunks_exact_mut(width.max(1)).enumerate() {
                if let Some(r) = file.items().row(i as u32) {
                    r.widen_into(row);
                }
            }
        }
        let mut sum = x.clone();

        let user_degree = |u: usize| -> u32 {
            let (a, b) = bounds(g.user_offsets, u);
            b.saturating_sub(a)
        };
        let side = item_side(&g, n_items)?;
        let item_degree = |i: usize| -> u32 {
            let (a, b) = bounds(&side.offsets, i);
            b.saturating_sub(a)
        };
        // One weight per edge, in the user-side order.
        let mut weights = filled(g.items.len(), 0.0f32)?;
        for u in 0..n_users {
            let (a, b) = bounds(g.user_offsets, u);
            for e in a..b {
                let i = g.items.get(e as usize).copied().unwrap_or(0) as usize;
                if let Some(w) = weights.get_mut(e as usize) {
                    *w = edge_weight(user_degree(u), item_degree(i));
                }
            }
        }

        if width > 0 {
            // Layer k + 1 replaces layer k in `x` with one scratch buffer the size of the smaller
            // side, not a second full buffer: the graph is bipartite, so one side's new rows read
            // only the other side's old ones. The side that goes to scratch is computed first
            // (from the other side's layer-k rows), then the other side is rewritten in place
            // (from the first side's layer-k rows, still in `x`), and scratch is copied back.
            // Every row is the same sum in the same order as with two full buffers.
            let users_first = n_users <= n_items;
            let mut scratch = filled(if users_first { user_rows } else { len - user_rows }, 0.0f32)?;
            for _ in 0..g.layers {
                let (users, items) = x.split_at_mut(user_rows);
                if users_first {
                    users_from_items(&mut scratch, items, width, &g, &weights);
                    items_from_users(items, users, width, &side, &weights);
                    users.copy_from_slice(&scratch);
                } else {
                    items_from_users(&mut scratch, users, width, &side, &weights);
                    users_from_items(users, items, width, &g, &weights);
                    items.copy_from_slice(&scratch);
                }
                for (s, &v) in sum.iter_mut().zip(&x) {
                    *s += v;
                }
            }
        }
        // The mean of L + 1 layers: a multiplication by the f32 reciprocal, as the trainer does.
        let scale = 1.0f32 / (g.layers as f32 + 1.0);
        sum.iter_mut().for_each(|v| *v *= scale);
        drop(x);
        Ok(FinalVectors { width, n_users, rows: sum })
    }

    /// User `u`'s final vector.
    pub(crate) fn user(&self, u: u32) -> &[f32] {
        let start = (u as usize).saturating_mul(self.width);
        self.rows.get(start..start.saturating_add(self.width)).unwrap_or(&[])
    }

    /// Item `i`'s final vector.
    pub(crate) fn item(&self, i: u32) -> &[f32] {
        let start = (self.n_users + i as usize).saturating_mul(self.width);
        self.rows.get(start..start.saturating_add(self.width)).unwrap_or(&[])
    }

    /// Every item's final vector, item order, `width` floats each.
    pub(crate) fn items(&self) -> &[f32] {
        self.rows.get(self.n_users.saturating_mul(self.width)..).unwrap_or(&[])
    }

    /// Floats per vector.
    pub(crate) fn width(&self) -> usize {
        self.width
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.rows.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bet_format::{AlignedBytes, ValueDtype, ValueLayout};

    /// Spec §7.5 with two full buffers, the plain way: every node's next row from the whole
    /// current layer, then summed. `compute` must give the same bits with its in-place update.
    fn two_buffer_propagation(file: &BetFile<'_>) -> Vec<f32> {
        let s = file.summary();
        let (nu, ni, d) = (s.n_users as usize, s.n_items as usize, s.vector_width as usize);
        let g = file.graph().unwrap();
        let mut x = vec![0.0f32; (nu + ni) * d];
        for u in 0..nu {
            file.users().row(u as u32).unwrap().widen_into(&mut x[u * d..(u + 1) * d]);
        }
        for i in 0..ni {
            file.items().row(i as u32).unwrap().widen_into(&mut x[(nu + i) * d..(nu + i + 1) * d]);
        }
        let mut item_users = vec![vec![]; ni];
        for u in 0..nu {
            for &i in g.items_of(u as u32).unwrap() {
                item_users[i as usize].push(u);
            }
        }
        let weight =
            |u: usize, i: usize| edge_weight(g.items_of(u as u32).unwrap().len() as u32, item_users[i].len() as u32);
        let mut sum = x.clone();
        for _ in 0..g.layers {
            let mut next = vec![0.0f32; x.len()];
            for u in 0..nu {
                for &i in g.items_of(u as u32).unwrap() {
                    let w = weight(u, i as usize);
                    for t in 0..d {
                        next[u * d + t] += w * x[(nu + i as usize) * d + t];
                    }
                }
            }
            for (i, users) in item_users.iter().enumerate() {
                for &u in users {
                    let w = weight(u, i);
                    for t in 0..d {
                        next[(nu + i) * d + t] += w * x[u * d + t];
                    }
                }
            }
            sum.iter_mut().zip(&next).for_each(|(s, v)| *s += v);
            x = next;
        }
        let scale = 1.0f32 / (g.layers as f32 + 1.0);
        sum.iter_mut().for_each(|v| *v *= scale);
        sum
    }

    #[test]
    fn in_place_layers_match_two_full_buffers_bit_for_bit() {
        // More users than items, fewer, and equal: each side goes to scratch in one of them.
        for (n_users, n_items, seed) in [(23usize, 9usize, 1u64), (7, 31, 2), (12, 12, 3)] {
            let bytes = bet_format::testing::random_input_file(
                n_users,
                n_items,
                11,
                3,
                seed,
                ValueDtype::F32,
                ValueLayout::RowMajor,
            )
            .unwrap()
            .bytes;
            let bytes = AlignedBytes::new(&bytes);
            let file = BetFile::new_checked(bytes.as_ref()).unwrap();
            let got = FinalVectors::compute(&file).unwrap();
            let want = two_buffer_propagation(&file);
            assert_eq!(got.rows.len(), want.len());
            let differing = got.rows.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differing, 0, "{n_users} users, {n_items} items: {differing} values differ");
            assert!(want.iter().any(|v| *v != 0.0), "a propagation that moves something");
        }
    }
}
