//! The only module with `unsafe` code: the x86-64 AVX2/F16C kernels, the mmap constructor and
//! the C API (`capi`, feature `capi`).
//!
//! Audit notes
//! - `scan_blocks` is safe to call: it checks every index it will read before entering the
//!   `unsafe` kernel, and it enters only when the CPU has AVX2 and F16C (checked at run time
//!   under `std`, at compile time otherwise). Unaligned loads (`loadu`) are used throughout.
//! - The kernel keeps one 8-lane accumulator per row: lane `l` of row `j` sums the products of
//!   dimensions `t ≡ l (mod 8)` in increasing `t`, with separate multiply and add (no FMA), then
//!   reduces with the spec's tree. That is exactly `kernel::dot`, so results are bit-identical.
//!   Lanes past `m` in the last chunk are zeroed *after* the multiply, so values past a row's
//!   width (the next row's data, maybe NaN) never reach an accumulator; adding `+0.0` leaves an
//!   accumulator unchanged because it never holds `-0.0` (it starts at `+0.0`, and a
//!   round-to-nearest sum is `-0.0` only when both operands are).
//! - `scan_groups` does the same for blocked groups (8 rows stored dimension-major): one
//!   accumulator per lane `l`, holding 8 rows; each sums `t ≡ l (mod 8)` in increasing `t`,
//!   and the reduction tree is applied vertically — again exactly `kernel::dot` per row.
//! - `rank_dense_users_avx2` calls safe code compiled with AVX2 enabled; the only `unsafe` is
//!   the call itself, made only with a token proving the CPU has AVX2.
//! - `Model::map` is an `unsafe fn`: the caller promises the file is not modified or truncated
//!   while mapped (that would be undefined behaviour or SIGBUS, as for every mmap reader).

use bet_format::Values;

#[cfg(feature = "capi")]
pub mod capi;

/// Whether the AVX2 + F16C kernel can run on this CPU.
pub(crate) fn avx2_f16c_available() -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(all(not(feature = "std"), target_arch = "x86_64"))]
    {
        cfg!(all(target_feature = "avx2", target_feature = "f16c"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Proof that the CPU runs the AVX2/F16C kernel; only [`avx2_token`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2Token(());

/// A token when the CPU has AVX2 and F16C.
pub(crate) fn avx2_token() -> Option<Avx2Token> {
    avx2_f16c_available().then_some(Avx2Token(()))
}

/// [`crate::kernel::rank_dense_users`] compiled with AVX2 enabled: the same Rust, so the same
/// operations in the same order (Rust never fuses a multiply and an add, and `fma` is not
/// enabled), only on 8-wide registers; the scores are bit-identical to the portable build's (the
/// proptest `batches_over_propagated_vectors_answer_as_one_user_at_a_time` compares both).
#[cfg(feature = "alloc")]
#[inline]
pub(crate) fn rank_dense_users_avx2(
    token: Avx2Token,
    items: &[f32],
    width: usize,
    users: &mut [Option<crate::kernel::PassUser<'_, '_, '_>>],
) {
    let Avx2Token(()) = token;
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn with_avx2(items: &[f32], width: usize, users: &mut [Option<crate::kernel::PassUser<'_, '_, '_>>]) {
            crate::kernel::rank_dense_users(items, width, users);
        }
        // SAFETY: the token exists only when the CPU runs AVX2, the one requirement of a
        // `target_feature` function; its body is safe code.
        unsafe { with_avx2(items, width, users) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    crate::kernel::rank_dense_users(items, width, users);
}

/// Rows of equal width, contiguous in a values section.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunSlice<'a> {
    /// The table's values.
    pub values: Values<'a>,
    /// Offset of the first row's first value.
    pub first: usize,
    /// The rows' width.
    pub stride: usize,
    /// How many rows.
    pub rows: usize,
}

/// Where a block scan stopped.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockHit {
    /// Blocks of 8 rows fully passed over (all below the threshold).
    pub skipped: usize,
    /// Rows covered by the blocks the scan was allowed to run (at most the `rows` asked for).
    pub covered: usize,
    /// Bit `j` set when row `j` of the next block reaches the threshold; 0 when the scan ran out.
    pub mask: u32,
    /// The next block's scores (valid when `mask != 0`).
    pub scores: [f32; 8],
}

/// Scores `rows` consecutive rows of width `stride`, starting at value `first`, against `user`
/// (`m` terms each), 8 rows per block; stops at the first block in which some score is
/// `>= threshold` (any block when `threshold` is `None`). A last block of fewer than 8 rows reads
/// (and ignores) the rows that follow it. Returns `None` when the first block would read outside
/// `values` or `user` (the caller then uses the portable kernel); otherwise the number of blocks
/// is cut to what fits.
#[inline]
#[allow(unused_variables)]
pub(crate) fn scan_blocks(
    token: Avx2Token,
    run: RunSlice<'_>,
    user: &[f32],
    m: usize,
    threshold: Option<f32>,
) -> Option<BlockHit> {
    let Avx2Token(()) = token;
    let RunSlice { values, first, stride, rows } = run;
    #[cfg(target_arch = "x86_64")]
    {
        if m == 0 || m > stride || rows == 0 {
            return None;
        }
        let chunk_values = m.div_ceil(8) * 8;
        if user.len() < chunk_values {
            return None;
        }
        // Block b reads up to index first + (8b + 7)*stride + chunk_values (exclusive); keep the
        // blocks for which that is within `values`.
        let room = values.len().checked_sub(first)?.checked_sub(chunk_values)?.checked_sub(7 * stride)?;
        let blocks = rows.div_ceil(8).min(room / (8 * stride) + 1);
        let rows = rows.min(8 * blocks);
        let (t, open) = match threshold {
            Some(t) => (t, false),
            None => (f32::NEG_INFINITY, true),
        };
        let mut hit = BlockHit { skipped: 0, covered: rows, mask: 0, scores: [0.0; 8] };
        // SAFETY: the CPU supports AVX2 and F16C (the token exists). For every block b < blocks,
        // row j < 8 and chunk c < ceil(m/8), the kernel reads values
        // `first + (8b + j)*stride + 8c .. +8`, whose end is at most
        // first + (8(blocks-1) + 7)*stride + chunk_values <= values.len() by the cut above;
        // and `user[8c .. 8c+8]`, within `user.len() >= chunk_values`.
        unsafe {
            match values {
                Values::F32(v) => {
                    x86::scan_f32(v.as_ptr().add(first), stride, rows, user.as_ptr(), m, t, open, &mut hit)
                }
                Values::F16(v) => x86::scan_f16(
                    v.as_ptr().add(first).cast::<u16>(),
                    stride,
                    rows,
                    user.as_ptr(),
                    m,
                    t,
                    open,
                    &mut hit,
                ),
            }
        }
        Some(hit)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Scores `groups` blocked groups (8 rows of width `stride` each, stored dimension-major:
/// value `t` of row `j` at `8t + j` from the group's start) starting at value `first`, `m`
/// terms each; stops at the first group with a score `>= threshold` (any, when `None`).
/// `None` when the first group does not fit in `values` or `user` is shorter than `m`.
#[inline]
#[allow(unused_variables)]
pub(crate) fn scan_groups(
    token: Avx2Token,
    run: RunSlice<'_>,
    user: &[f32],
    m: usize,
    threshold: Option<f32>,
) -> Option<BlockHit> {
    let Avx2Token(()) = token;
    let RunSlice { values, first, stride, rows: groups } = run;
    #[cfg(target_arch = "x86_64")]
    {
        if m == 0 || m > stride || groups == 0 || user.len() < m {
            return None;
        }
        let group_values = stride.checked_mul(8)?;
        let room = values.len().checked_sub(first)? / group_values;
        let groups = groups.min(room);
        if groups == 0 {
            return None;
        }
        let (t, open) = match threshold {
            Some(t) => (t, false),
            None => (f32::NEG_INFINITY, true),
        };
        let mut hit = BlockHit { skipped: 0, covered: groups * 8, mask: 0, scores: [0.0; 8] };
        // SAFETY: the CPU supports AVX2 and F16C (the token exists). Group g < groups reads values
        // `first + g*8*stride + 8t .. +8` for t < m <= stride, all below
        // first + groups*8*stride <= values.len() by the cut above; and `user[t]` for t < m.
        unsafe {
            match values {
                Values::F32(v) => {
                    x86::groups_any(v.as_ptr().add(first), true, stride, groups, user.as_ptr(), m, t, open, &mut hit)
                }
                Values::F16(v) => x86::groups_any(
                    v.as_ptr().add(first).cast::<u16>(),
                    false,
                    stride,
                    groups,
                    user.as_ptr(),
                    m,
                    t,
                    open,
                    &mut hit,
                ),
            }
        }
        Some(hit)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    /// Bytes ahead of the current group that are requested early, so that a cold table streams
    /// from memory while earlier groups are scored.
    const PREFETCH_BYTES: usize = 4096;

    /// Prefetches the lines of the group `PREFETCH_BYTES` ahead of the one at `base` (`len`
    /// elements). Safe: the address is computed with wrapping arithmetic and a prefetch never
    /// faults or reads into the program, whatever the address.
    #[inline(always)]
    fn prefetch_ahead<E>(base: *const E, len: usize) {
        let bytes = len * core::mem::size_of::<E>();
        let ahead = base.cast::<i8>().wrapping_add(PREFETCH_BYTES);
        let mut off = 0;
        while off < bytes {
            // SAFETY: `_mm_prefetch` is a hint (SSE, baseline on x86-64); it does not access
            // memory architecturally and never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(off)) };
            off += 64;
        }
    }

    /// All-ones in the first 8, zeros in the last 8: a load at `8 - rem` masks lanes `< rem`.
    static MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

    /// Reduces 8 accumulators (one per row) with the spec's tree; lane `j` of the result is row `j`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn reduce_rows(acc: [__m256; 8]) -> __m256 {
        let [a0, a1, a2, a3, a4, a5, a6, a7] = acc;
        // V_j = [lo(a_j) + hi(a_j) | lo(a_{j+4}) + hi(a_{j+4})]: lanes s_0..s_3 of rows j and j+4.
        let v = |x: __m256, y: __m256| {
            _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(x, y), _mm256_permute2f128_ps::<0x31>(x, y))
        };
        let (v0, v1, v2, v3) = (v(a0, a4), v(a1, a5), v(a2, a6), v(a3, a7));
        // 4x4 transpose within each 128-bit half: T_l holds s_l of rows 0..3 | 4..7.
        let t0 = _mm256_unpacklo_ps(v0, v1);
        let t1 = _mm256_unpackhi_ps(v0, v1);
        let t2 = _mm256_unpacklo_ps(v2, v3);
        let t3 = _mm256_unpackhi_ps(v2, v3);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        _mm256_add_ps(_mm256_add_ps(s0, s2), _mm256_add_ps(s1, s3))
    }

    macro_rules! scan_kernel {
        ($name:ident, $elem:ty, $load:expr) => {
            /// # Safety
            /// The CPU must support AVX2 and F16C. For `b < ceil(rows / 8)`, `j < 8`, `c < ceil(m / 8)`,
            /// the 8 elements at `data + (8b + j)*stride + 8c` and the 8 floats at `user + 8c`
            /// must be readable.
            #[target_feature(enable = "avx2,f16c")]
            #[allow(clippy::too_many_arguments)]
            pub(super) unsafe fn $name(
                data: *const $elem,
                stride: usize,
                rows: usize,
                user: *const f32,
                m: usize,
                threshold: f32,
                open: bool,
                hit: &mut super::BlockHit,
            ) {
                let load = $load;
                let full = m / 8;
                let rem = m % 8;
                let thr = _mm256_set1_ps(threshold);
                // SAFETY: MASKS has 16 entries and 8 - rem + 8 <= 16.
                let lanes = unsafe { _mm256_loadu_ps(MASKS.as_ptr().add(8 - rem).cast::<f32>()) };
                let blocks = rows.div_ceil(8);
                for b in 0..blocks {
                    // SAFETY (all loads below): within the caller's contract.
                    let base = unsafe { data.add(b * 8 * stride) };
                    let mut acc = [_mm256_setzero_ps(); 8];
                    for c in 0..full {
                        let u = unsafe { _mm256_loadu_ps(user.add(8 * c)) };
                        for (j, acc) in acc.iter_mut().enumerate() {
                            let x = unsafe { load(base.add(j * stride + 8 * c)) };
                            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(u, x));
                        }
                    }
                    if rem > 0 {
                        let u = unsafe { _mm256_loadu_ps(user.add(8 * full)) };
                        for (j, acc) in acc.iter_mut().enumerate() {
                            let x = unsafe { load(base.add(j * stride + 8 * full)) };
                            *acc = _mm256_add_ps(*acc, _mm256_and_ps(_mm256_mul_ps(u, x), lanes));
                        }
                    }
                    let scores = reduce_rows(acc);
                    let valid = (rows - 8 * b).min(8);
                    let mask =
                        if open { 0xff } else { _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(scores, thr)) as u32 }
                            & ((1u32 << valid) - 1);
                    if mask != 0 {
                        // SAFETY: `hit.scores` holds 8 floats.
                        unsafe { _mm256_storeu_ps(hit.scores.as_mut_ptr(), scores) };
                        hit.skipped = b;
                        hit.mask = mask;
                        return;
                    }
                }
                hit.skipped = blocks;
                hit.mask = 0;
            }
        };
    }

    macro_rules! group_kernel {
        ($name:ident, $elem:ty, $load:expr) => {
            /// # Safety
            /// The CPU must support AVX2 and F16C. For `g < groups` and `t < m`, the 8 elements at
            /// `data + g*8*stride + 8t` and the float at `user + t` must be readable.
            #[target_feature(enable = "avx2,f16c")]
            #[allow(clippy::too_many_arguments)]
            pub(super) unsafe fn $name(
                data: *const $elem,
                stride: usize,
                groups: usize,
                user: *const f32,
                m: usize,
                threshold: f32,
                open: bool,
                hit: &mut super::BlockHit,
            ) {
                let load = $load;
                let thr = _mm256_set1_ps(threshold);
                for g in 0..groups {
                    // SAFETY (all loads below): within the caller's contract.
                    let base = unsafe { data.add(g * 8 * stride) };
                    prefetch_ahead(base, 8 * stride);
                    // acc[l] holds lane l (dimensions t = l mod 8) of all 8 rows at once.
                    let mut acc = [_mm256_setzero_ps(); 8];
                    let mut t = 0;
                    while t + 8 <= m {
                        for (l, acc) in acc.iter_mut().enumerate() {
                            let u = unsafe { _mm256_broadcast_ss(&*user.add(t + l)) };
                            let x = unsafe { load(base.add(8 * (t + l))) };
                            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(u, x));
                        }
                        t += 8;
                    }
                    for (l, acc) in acc.iter_mut().enumerate().take(m - t) {
                        let u = unsafe { _mm256_broadcast_ss(&*user.add(t + l)) };
                        let x = unsafe { load(base.add(8 * (t + l))) };
                        *acc = _mm256_add_ps(*acc, _mm256_mul_ps(u, x));
                    }
                    let [a0, a1, a2, a3, a4, a5, a6, a7] = acc;
                    let (s0, s1, s2, s3) =
                        (_mm256_add_ps(a0, a4), _mm256_add_ps(a1, a5), _mm256_add_ps(a2, a6), _mm256_add_ps(a3, a7));
                    let scores = _mm256_add_ps(_mm256_add_ps(s0, s2), _mm256_add_ps(s1, s3));
                    let mask =
                        if open { 0xff } else { _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(scores, thr)) as u32 };
                    if mask != 0 {
                        // SAFETY: `hit.scores` holds 8 floats.
                        unsafe { _mm256_storeu_ps(hit.scores.as_mut_ptr(), scores) };
                        hit.skipped = g;
                        hit.mask = mask;
                        return;
                    }
                }
                hit.skipped = groups;
                hit.mask = 0;
            }
        };
    }

    macro_rules! fixed_group_kernel {
        ($name:ident, $elem:ty, $load:expr) => {
            /// The group kernel for a compile-time `M = m <= 16`, fully unrolled.
            ///
            /// Each lane accumulator starts from its first product instead of `+0.0 + p`, and
            /// lanes with no terms are left out of the tree instead of adding `+0.0`; those steps
            /// can only change the sign of a zero, so a final `+ 0.0` (which maps `-0.0` to
            /// `+0.0` and leaves every other value alone) gives the spec's bits exactly: the
            /// spec's sum is never `-0.0`.
            ///
            /// # Safety
            /// As for the general group kernel.
            #[target_feature(enable = "avx2,f16c")]
            #[allow(clippy::too_many_arguments)]
            pub(super) unsafe fn $name<const M: usize>(
                data: *const $elem,
                stride: usize,
                groups: usize,
                user: *const f32,
                threshold: f32,
                open: bool,
                hit: &mut super::BlockHit,
            ) {
                let load = $load;
                let thr = _mm256_set1_ps(threshold);
                let zero = _mm256_setzero_ps();
                for g in 0..groups {
                    // SAFETY (all loads below): within the caller's contract (t < M = m).
                    let base = unsafe { data.add(g * 8 * stride) };
                    prefetch_ahead(base, 8 * stride);
                    let mut lane: [Option<__m256>; 8] = [None; 8];
                    for t in 0..M {
                        let u = unsafe { _mm256_broadcast_ss(&*user.add(t)) };
                        let p = _mm256_mul_ps(u, unsafe { load(base.add(8 * t)) });
                        lane[t % 8] = Some(match lane[t % 8] {
                            Some(a) => _mm256_add_ps(a, p),
                            None => p,
                        });
                    }
                    let join = |a: Option<__m256>, b: Option<__m256>| match (a, b) {
                        (Some(a), Some(b)) => Some(_mm256_add_ps(a, b)),
                        (a, None) => a,
                        (None, b) => b,
                    };
                    let [a0, a1, a2, a3, a4, a5, a6, a7] = lane;
                    let (s0, s1, s2, s3) = (join(a0, a4), join(a1, a5), join(a2, a6), join(a3, a7));
                    let scores = _mm256_add_ps(join(join(s0, s2), join(s1, s3)).unwrap_or(zero), zero);
                    let mask =
                        if open { 0xff } else { _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(scores, thr)) as u32 };
                    if mask != 0 {
                        // SAFETY: `hit.scores` holds 8 floats.
                        unsafe { _mm256_storeu_ps(hit.scores.as_mut_ptr(), scores) };
                        hit.skipped = g;
                        hit.mask = mask;
                        return;
                    }
                }
                hit.skipped = groups;
                hit.mask = 0;
            }
        };
    }

    fixed_group_kernel!(fixed_f32, f32, |p: *const f32| unsafe { _mm256_loadu_ps(p) });
    fixed_group_kernel!(fixed_f16, u16, |p: *const u16| unsafe {
        _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>()))
    });

    /// Dispatches to the unrolled kernel for `m <= 16`, else the general one.
    ///
    /// # Safety
    /// As for the general group kernel.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn groups_any<E: Copy>(
        data: *const E,
        f32_data: bool,
        stride: usize,
        groups: usize,
        user: *const f32,
        m: usize,
        threshold: f32,
        open: bool,
        hit: &mut super::BlockHit,
    ) {
        macro_rules! dispatch {
            ($($m:literal)*) => {
                // SAFETY: forwarded contract; the element type matches `f32_data`.
                unsafe {
                    match (m, f32_data) {
                        $(
                            ($m, true) => fixed_f32::<$m>(data.cast(), stride, groups, user, threshold, open, hit),
                            ($m, false) => fixed_f16::<$m>(data.cast(), stride, groups, user, threshold, open, hit),
                        )*
                        (_, true) => groups_f32(data.cast(), stride, groups, user, m, threshold, open, hit),
                        (_, false) => groups_f16(data.cast(), stride, groups, user, m, threshold, open, hit),
                    }
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
    }

    group_kernel!(groups_f32, f32, |p: *const f32| unsafe { _mm256_loadu_ps(p) });
    group_kernel!(groups_f16, u16, |p: *const u16| unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>())) });

    scan_kernel!(scan_f32, f32, |p: *const f32| unsafe { _mm256_loadu_ps(p) });
    scan_kernel!(scan_f16, u16, |p: *const u16| unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>())) });
}

#[cfg(feature = "std")]
impl crate::Model<memmap2::Mmap> {
    /// Maps the file at `path` read-only and validates it (no copy).
    ///
    /// # Safety
    /// The file must not be modified or truncated while the model is alive: the mapped bytes
    /// would change under a validated view (undefined behaviour), and a truncation makes reads
    /// fault with SIGBUS. Use [`crate::Model::read`] when that cannot be promised.
    pub unsafe fn map(path: &std::path::Path) -> Result<crate::Model<memmap2::Mmap>, crate::Error> {
        let file = std::fs::File::open(path).map_err(|e| crate::Error::Io(e.kind()))?;
        // SAFETY: the caller upholds the no-modification contract above.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| crate::Error::Io(e.kind()))?;
        crate::Model::new(map)
    }
}
