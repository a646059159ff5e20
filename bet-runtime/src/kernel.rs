//! Dot-product kernels in the spec's accumulation order, and the item scan.
//!
//! The spec (§7.1) fixes: 8 partial sums by `t mod 8`, separate multiply and
//! add roundings, and the reduction `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`.
//! The portable kernel writes exactly that; the AVX2/F16C kernel in
//! `audited.rs` computes 8 rows at once with one 8-lane accumulator per row,
//! which is the same sums in the same order, so both give the same bits.
//!
//! Items are scanned in storage order by *runs* of equal width (the writer
//! stores the widest rows first, so a file has at most `vector_width + 1`
//! runs). Within a run rows are contiguous with a constant stride, which is
//! what lets a block of 8 rows be scored together.
#![forbid(unsafe_code)]

use bet_format::{BLOCK_ROWS, RaggedTable, Row, Values};
use half::f16;

use crate::topk::{Collector, Filter, Scored};

/// Which implementation scores dot products. Results are bit-identical either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Plain Rust, every target.
    Portable,
    /// x86-64 with AVX2 and F16C, 8 rows per step (detected at run time under `std`).
    Avx2F16c,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Kernel {
        if crate::audited::avx2_f16c_available() { Kernel::Avx2F16c } else { Kernel::Portable }
    }
    /// Whether this CPU runs `self`.
    pub fn is_supported(self) -> bool {
        match self {
            Kernel::Portable => true,
            Kernel::Avx2F16c => crate::audited::avx2_f16c_available(),
        }
    }
}

/// Widening to f32 (exact for f16).
pub(crate) trait Widen: Copy {
    fn widen(self) -> f32;
}
impl Widen for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}
impl Widen for f16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// The spec's reduction tree.
#[inline(always)]
pub(crate) fn reduce(a: [f32; 8]) -> f32 {
    let [a0, a1, a2, a3, a4, a5, a6, a7] = a;
    let (s0, s1, s2, s3) = (a0 + a4, a1 + a5, a2 + a6, a3 + a7);
    (s0 + s2) + (s1 + s3)
}

/// `dot(u, x)` over `min(u.len(), x.len())` terms, in the spec's order.
#[inline]
pub(crate) fn dot<T: Widen>(u: &[f32], x: &[T]) -> f32 {
    let m = u.len().min(x.len());
    let (Some(u), Some(x)) = (u.get(..m), x.get(..m)) else { return 0.0 };
    let mut acc = [0.0f32; 8];
    let mut uc = u.chunks_exact(8);
    let mut xc = x.chunks_exact(8);
    for (a, b) in (&mut uc).zip(&mut xc) {
        for ((acc, a), b) in acc.iter_mut().zip(a).zip(b) {
            *acc += *a * b.widen();
        }
    }
    for ((acc, a), b) in acc.iter_mut().zip(uc.remainder()).zip(xc.remainder()) {
        *acc += *a * b.widen();
    }
    reduce(acc)
}

/// NaN scores are reported as the canonical quiet NaN (bit patterns of NaN differ by target).
#[inline(always)]
pub(crate) fn canonical(s: f32) -> f32 {
    if s.is_nan() { f32::NAN } else { s }
}

/// Most users [`rank_dense_users`] ranks in one pass over the items. Measured by changing this
/// constant, on a Gowalla `input` file (`bet rank` of 2,000 users, BENCHMARKS.md has the file's
/// command; a training run shared the cores): 4 users a pass 0.34 ms a user, 8 0.33 ms, 16
/// 0.28 ms, one at a time 1.1 ms. Measured again (2026-12-06, 4,096 users, three runs of each
/// alternated, a training run on the cores), 16 was no faster than 8: 0.38–0.43 against
/// 0.37–0.41 ms of CPU a user. So 8 on every target: a pass keeps its users' state on the
/// stack, 704 bytes for 8 on x86_64 (a unit test holds it under 1 KiB), and 32-bit devices'
/// stacks are often a few KiB.
#[cfg(feature = "alloc")]
pub(crate) const USERS_PER_PASS: usize = 8;

/// One user of a pass: its final vector, its filter and its top-k so far.
#[cfg(feature = "alloc")]
pub(crate) struct PassUser<'v, 'f, 'o> {
    /// The user's final vector.
    pub vector: &'v [f32],
    /// Which items the user may get.
    pub filter: Filter<'f>,
    /// The user's best items so far.
    pub collector: Collector<'o>,
}

/// Ranks up to [`USERS_PER_PASS`] users in one pass over dense item rows (`width` floats each,
/// in item order). Each score is `canonical(dot(user, row))`, exactly what the one-user path
/// computes, and each user's candidates reach its collector in item order, so every top-k is
/// the one-user path's, bit for bit. What changes is the memory traffic: a row is read from
/// memory once for all the users of the pass (then from L1), where one user at a time streams
/// the whole item table (21 MB for Gowalla at 128 wide) per user. `width` must not be 0.
#[cfg(feature = "alloc")]
#[inline(always)]
pub(crate) fn rank_dense_users(items: &[f32], width: usize, users: &mut [Option<PassUser<'_, '_, '_>>]) {
    for (index, row) in (0u32..).zip(items.chunks_exact(width.max(1))) {
        for user in users.iter_mut().flatten() {
            let score = canonical(dot(user.vector, row));
            // The cheap test first: once a user's collector is full, few items beat its worst.
            // (Both tests are pure, so their order does not change what is offered.)
            if user.collector.may_enter(score) && user.filter.admits(index) {
                user.collector.offer(Scored { index, score });
            }
        }
    }
}

/// `dot` of `u` with a row of either dtype.
#[inline]
pub(crate) fn dot_values(u: &[f32], x: Values<'_>) -> f32 {
    match x {
        Values::F32(v) => dot(u, v),
        Values::F16(v) => dot(u, v),
    }
}

/// `dot(u, x)` for `x` at `start + t * stride` of `values`, `m` terms, in the spec's order.
#[inline]
fn dot_strided<T: Widen>(u: &[f32], values: &[T], start: usize, stride: usize, m: usize) -> f32 {
    let mut acc = [0.0f32; 8];
    for (t, a) in u.iter().enumerate().take(m) {
        let x = start.checked_add(t.saturating_mul(stride)).and_then(|i| values.get(i)).map_or(0.0, |x| x.widen());
        if let Some(slot) = acc.get_mut(t % 8) {
            *slot += *a * x;
        }
    }
    reduce(acc)
}

/// `dot` of `u` with a row in any value order.
#[inline]
pub(crate) fn dot_row(u: &[f32], row: Row<'_>) -> f32 {
    if let Some(v) = row.contiguous() {
        return dot_values(u, v);
    }
    let m = u.len().min(row.width());
    let (values, start, stride) = row.parts();
    match values {
        Values::F32(v) => dot_strided(u, v, start, stride, m),
        Values::F16(v) => dot_strided(u, v, start, stride, m),
    }
}

/// A run of storage rows of equal width.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Run {
    pub first_row: u32,
    pub rows: u32,
    pub width: u32,
    /// Offset of the first row's first value.
    pub first_value: u32,
}

/// Most runs kept in a [`RunTable`]; files with more runs are scanned row by row.
pub(crate) const MAX_RUNS: usize = 160;

/// The runs of a table, computed once when a model is opened (no allocation).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunTable {
    runs: [Run; MAX_RUNS],
    len: usize,
    /// More runs than fit: scan `row_ptr` instead.
    overflow: bool,
}

impl RunTable {
    pub(crate) fn build(row_ptr: &[u32]) -> RunTable {
        let mut t = RunTable { runs: [Run::default(); MAX_RUNS], len: 0, overflow: false };
        for_each_run(row_ptr, |run| {
            if let Some(slot) = t.runs.get_mut(t.len) {
                *slot = run;
                t.len += 1;
                true
            } else {
                t.overflow = true;
                false
            }
        });
        t
    }
}

/// Calls `f` for every maximal run of equal width; stops early when `f` returns false.
fn for_each_run(row_ptr: &[u32], mut f: impl FnMut(Run) -> bool) {
    let n = row_ptr.len().saturating_sub(1);
    let mut r = 0usize;
    while r < n {
        let (Some(&a), Some(&b)) = (row_ptr.get(r), row_ptr.get(r + 1)) else { return };
        let width = b.saturating_sub(a);
        let mut e = r + 1;
        while e < n {
            match (row_ptr.get(e), row_ptr.get(e + 1)) {
                (Some(&x), Some(&y)) if y.saturating_sub(x) == width => e += 1,
                _ => break,
            }
        }
        if !f(Run { first_row: r as u32, rows: (e - r) as u32, width, first_value: a }) {
            return;
        }
        r = e;
    }
}

/// Where scored rows go: a top-k collector with a filter, or a dense score array.
pub(crate) enum Sink<'s, 'o, 'f> {
    TopK { collector: &'s mut Collector<'o>, filter: &'s Filter<'f> },
    All { out: &'s mut [f32] },
}

impl Sink<'_, '_, '_> {
    #[inline(always)]
    fn take(&mut self, items: &RaggedTable<'_>, row: u32, score: f32) {
        match self {
            Sink::TopK { collector, filter } => {
                if collector.may_enter(score)
                    && let Some(index) = items.index_of_storage_row(row)
                    && filter.admits(index)
                {
                    collector.offer(Scored { index, score });
                }
            }
            Sink::All { out } => {
                if let Some(slot) = items.index_of_storage_row(row).and_then(|i| out.get_mut(i as usize)) {
                    *slot = score;
                }
            }
        }
    }
}

impl Sink<'_, '_, '_> {
    /// The score a row must reach to matter (`None`: every row matters).
    #[inline(always)]
    fn threshold(&self) -> Option<f32> {
        match self {
            Sink::TopK { collector, .. } => collector.threshold(),
            Sink::All { .. } => None,
        }
    }
}

/// Scores every item against the user vector `user` (its width is `user.len()`; `padded` is the
/// same vector followed by at least 8 zeros, for block kernels) and hands each score to `sink`.
pub(crate) fn scan_items(
    kernel: Kernel,
    runs: &RunTable,
    items: &RaggedTable<'_>,
    user: &[f32],
    padded: &[f32],
    sink: &mut Sink<'_, '_, '_>,
) {
    let avx2 = if kernel == Kernel::Avx2F16c { crate::audited::avx2_token() } else { None };
    let mut do_run = |run: Run| {
        score_run(avx2, run, items, user, padded, sink);
        true
    };
    if runs.overflow {
        for_each_run(items.row_ptr(), do_run);
    } else {
        for run in runs.runs.get(..runs.len).unwrap_or(&[]) {
            do_run(*run);
        }
    }
}

fn score_run(
    avx2: Option<crate::audited::Avx2Token>,
    run: Run,
    items: &RaggedTable<'_>,
    user: &[f32],
    padded: &[f32],
    sink: &mut Sink<'_, '_, '_>,
) {
    let w = run.width as usize;
    let m = user.len().min(w);
    let end_row = run.first_row.saturating_add(run.rows);
    if m == 0 {
        // Every dot product is the empty sum, +0.0.
        for row in run.first_row..end_row {
            sink.take(items, row, 0.0);
        }
        return;
    }
    // Offset of storage row `r`'s slot in this run (rows of a run are contiguous, blocked or not).
    let at = |r: u32| run.first_value as usize + (r - run.first_row) as usize * w;
    if items.is_blocked() {
        // Aligned groups of 8 inside the run are blocked; the rows before the first and after
        // the last such group share a group with another run, so they are row-major.
        let head_end = run.first_row.next_multiple_of(BLOCK_ROWS).min(end_row);
        let body_end = (end_row & !(BLOCK_ROWS - 1)).max(head_end);
        score_row_major(avx2, items, run.first_row, head_end, at(run.first_row), w, user, padded, sink);
        score_groups(avx2, items, head_end, body_end, at(head_end), w, user, sink);
        score_row_major(avx2, items, body_end, end_row, at(body_end), w, user, padded, sink);
    } else {
        score_row_major(avx2, items, run.first_row, end_row, at(run.first_row), w, user, padded, sink);
    }
}

/// Rows `row..end_row` of width `w`, row-major and contiguous from value `first`.
#[allow(clippy::too_many_arguments)]
fn score_row_major(
    avx2: Option<crate::audited::Avx2Token>,
    items: &RaggedTable<'_>,
    mut row: u32,
    end_row: u32,
    mut first: usize,
    w: usize,
    user: &[f32],
    padded: &[f32],
    sink: &mut Sink<'_, '_, '_>,
) {
    let values = items.values();
    let m = user.len().min(w);
    if let Some(token) = avx2 {
        // The kernel runs until a block has a score at or above the current threshold, so the
        // common case (nothing enters the top-k) costs no per-row work outside it.
        while row < end_row {
            let rows = (end_row - row) as usize;
            let slice = crate::audited::RunSlice { values, first, stride: w, rows };
            let Some(hit) = crate::audited::scan_blocks(token, slice, padded, m, sink.threshold()) else {
                break;
            };
            let passed = (8 * hit.skipped).min(hit.covered);
            row += passed as u32;
            first += passed * w;
            if hit.mask == 0 {
                if passed == 0 {
                    break;
                }
                continue;
            }
            let in_block = (hit.covered - passed).min(8);
            for (j, s) in hit.scores.iter().enumerate().take(in_block) {
                if hit.mask & (1 << j) != 0 {
                    sink.take(items, row + j as u32, *s);
                }
            }
            row += in_block as u32;
            first += in_block * w;
        }
    }
    let u = user.get(..m).unwrap_or(&[]);
    while row < end_row {
        let s = values.slice(first, first + m).map_or(0.0, |x| dot_values(u, x));
        sink.take(items, row, s);
        row += 1;
        first += w;
    }
}

/// Blocked groups covering rows `row..end_row` (a multiple of 8 rows) of width `w`, from value `first`.
#[allow(clippy::too_many_arguments)]
fn score_groups(
    avx2: Option<crate::audited::Avx2Token>,
    items: &RaggedTable<'_>,
    mut row: u32,
    end_row: u32,
    mut first: usize,
    w: usize,
    user: &[f32],
    sink: &mut Sink<'_, '_, '_>,
) {
    let values = items.values();
    let m = user.len().min(w);
    let group_values = 8 * w;
    if let Some(token) = avx2 {
        while row < end_row {
            let groups = ((end_row - row) / 8) as usize;
            let slice = crate::audited::RunSlice { values, first, stride: w, rows: groups };
            let Some(hit) = crate::audited::scan_groups(token, slice, user, m, sink.threshold()) else { break };
            row += 8 * hit.skipped as u32;
            first += hit.skipped * group_values;
            if hit.mask == 0 {
                if hit.skipped == 0 {
                    break;
                }
                continue;
            }
            for (j, s) in hit.scores.iter().enumerate() {
                if hit.mask & (1 << j) != 0 {
                    sink.take(items, row + j as u32, *s);
                }
            }
            row += 8;
            first += group_values;
        }
    }
    while row < end_row {
        let scores = match values {
            Values::F32(v) => group_scores(user, v, first, m),
            Values::F16(v) => group_scores(user, v, first, m),
        };
        for (j, s) in scores.iter().enumerate() {
            sink.take(items, row + j as u32, *s);
        }
        row += 8;
        first += group_values;
    }
}

/// Portable scores of one blocked group: lane `l` of row `j` in `acc[l][j]`, so the inner loop
/// runs over 8 rows (vectorisable) while each row keeps the spec's order.
fn group_scores<T: Widen>(user: &[f32], values: &[T], first: usize, m: usize) -> [f32; 8] {
    let mut acc = [[0.0f32; 8]; 8];
    for (t, u) in user.iter().enumerate().take(m) {
        let Some(x) = first.checked_add(8 * t).and_then(|s| values.get(s..s.checked_add(8)?)) else { break };
        if let Some(lane) = acc.get_mut(t % 8) {
            for (a, x) in lane.iter_mut().zip(x) {
                *a += *u * x.widen();
            }
        }
    }
    let mut out = [0.0f32; 8];
    for (j, o) in out.iter_mut().enumerate() {
        let [a0, a1, a2, a3, a4, a5, a6, a7] = acc;
        *o = reduce([a0[j], a1[j], a2[j], a3[j], a4[j], a5[j], a6[j], a7[j]]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pass's users live on the stack of whoever ranks: its state stays within the 1 KiB
    /// [`USERS_PER_PASS`] promises.
    #[cfg(feature = "alloc")]
    #[test]
    fn a_pass_fits_the_stack_it_promises() {
        let pass = core::mem::size_of::<[Option<PassUser<'_, '_, '_>>; USERS_PER_PASS]>();
        assert!(pass <= 1024, "{pass} bytes for {USERS_PER_PASS} users");
    }

    #[test]
    fn reduction_order_is_the_spec_tree() {
        // Values chosen so that any other association rounds differently.
        let a = [1e8, 1.0, -1e8, 1.0, 1.0, 0.5, 1.0, 0.25];
        let [a0, a1, a2, a3, a4, a5, a6, a7] = a;
        assert_eq!(reduce(a).to_bits(), (((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))).to_bits());
        let sequential: f32 = a.iter().sum();
        assert_ne!(reduce(a).to_bits(), sequential.to_bits(), "test values do not discriminate orders");
    }

    #[test]
    fn dot_uses_the_shorter_width_and_skips_non_finite_tails() {
        let u = [1.0, 2.0, 3.0];
        let x = [1.0, 1.0, 1.0, f32::NAN, f32::INFINITY];
        assert_eq!(dot(&u, &x), 6.0);
        assert_eq!(dot(&x, &u), 6.0);
        assert_eq!(dot::<f32>(&[], &x), 0.0);
        assert_eq!(dot(&u[..1], &[f16::from_f32(2.0)]), 2.0);
    }

    #[test]
    fn runs_cover_rows_exactly() {
        let ptr = [0u32, 3, 6, 9, 11, 13, 13, 14];
        let mut seen = vec![];
        for_each_run(&ptr, |r| {
            seen.push((r.first_row, r.rows, r.width, r.first_value));
            true
        });
        assert_eq!(seen, vec![(0, 3, 3, 0), (3, 2, 2, 9), (5, 1, 0, 13), (6, 1, 1, 13)]);
        let t = RunTable::build(&ptr);
        assert_eq!((t.len, t.overflow), (4, false));
        let many: Vec<u32> = (0..=(MAX_RUNS as u32 + 5)).map(|i| i * (i + 1) / 2).collect();
        assert!(RunTable::build(&many).overflow);
    }
}
