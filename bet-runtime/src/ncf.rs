//! NCF scoring (spec §7.3), with the user's half of the hidden layer computed once per query.
//!
//! `h[j] = relu((dot(W1u[j], um) + dot(W1i[j], im)) + b1[j])`: the first dot depends only on
//! the user, so [`NcfUser::new`] computes it once; per item the cost is `d` dots of the item's
//! width plus two `d`-wide dots. Buffers are fixed arrays of `MAX_NCF_WIDTH` floats on the stack.
#![forbid(unsafe_code)]

use bet_format::{MAX_NCF_WIDTH, NcfDense, Row, Values};

use crate::kernel::{dot, dot_row};

const W: usize = MAX_NCF_WIDTH as usize;

/// The per-query user half of the NCF function.
pub(crate) struct NcfUser {
    /// `dot(W1u[j], um)` for `j < d`.
    projected: [f32; W],
    /// The user's GMF row, zero past its width.
    gmf: [f32; W],
    gmf_width: usize,
}

fn w1_halves<'a>(dense: &NcfDense<'a>, j: usize) -> (&'a [f32], &'a [f32]) {
    let d = dense.d;
    let row = dense.w1.get(j * 2 * d..(j + 1) * 2 * d).unwrap_or(&[]);
    row.split_at_checked(d).unwrap_or((&[], &[]))
}

impl NcfUser {
    /// `mlp` and `gmf` are the user's stored rows (any width up to `d`; absent = width 0).
    pub(crate) fn new(dense: &NcfDense<'_>, mlp: Option<Row<'_>>, gmf: Option<Row<'_>>) -> NcfUser {
        let mut um = [0.0f32; W];
        let wu = mlp.map_or(0, |r| r.widen_into(&mut um));
        let mut user = NcfUser { projected: [0.0; W], gmf: [0.0; W], gmf_width: 0 };
        user.gmf_width = gmf.map_or(0, |r| r.widen_into(&mut user.gmf));
        user.project(dense, um.get(..wu).unwrap_or(&[]));
        user
    }

    /// The same from caller-supplied vectors.
    pub(crate) fn from_slices(dense: &NcfDense<'_>, mlp: &[f32], gmf: &[f32]) -> NcfUser {
        let mut user = NcfUser { projected: [0.0; W], gmf: [0.0; W], gmf_width: 0 };
        user.gmf_width = Values::F32(gmf).widen_into(&mut user.gmf);
        user.project(dense, mlp);
        user
    }

    fn project(&mut self, dense: &NcfDense<'_>, um: &[f32]) {
        for (j, p) in self.projected.iter_mut().enumerate().take(dense.d) {
            *p = dot(w1_halves(dense, j).0, um);
        }
    }

    /// The score of one item given its MLP and GMF rows.
    pub(crate) fn score(&self, dense: &NcfDense<'_>, mlp: Option<Row<'_>>, gmf: Option<Row<'_>>) -> f32 {
        let d = dense.d.min(W);
        let mut h = [0.0f32; W];
        for (j, h) in h.iter_mut().enumerate().take(d) {
            let item_half = w1_halves(dense, j).1;
            let item = mlp.map_or(0.0, |r| dot_row(item_half, r));
            let pre = (self.projected.get(j).copied().unwrap_or(0.0) + item) + dense.b1.get(j).copied().unwrap_or(0.0);
            *h = if pre > 0.0 { pre } else { 0.0 };
        }
        let mut g = [0.0f32; W];
        if let Some(gmf) = gmf {
            let m = self.gmf_width.min(gmf.width()).min(d);
            for (j, g) in g.iter_mut().enumerate().take(m) {
                *g = self.gmf.get(j).copied().unwrap_or(0.0) * gmf.get(j).unwrap_or(0.0);
            }
        }
        let (wh, wg) = dense.w_out.split_at_checked(d).unwrap_or((&[], &[]));
        (dot(wh, h.get(..d).unwrap_or(&[])) + dot(wg, g.get(..d).unwrap_or(&[]))) + dense.b_out
    }
}
