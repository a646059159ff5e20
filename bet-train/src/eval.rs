//! Full-ranking evaluation: Recall@k and NDCG@k for k in {5, 10, 20}, and the paper's eq. 13.
//!
//! For each user with held-out items P: score every item, drop the user's training items (and
//! validation items when the target is test), rank (higher first, ties to the lower index, NaN
//! last — the runtime's order), and count hits in the top k. Recall@k = hits / |P| (not
//! min(|P|, k)); NDCG@k = DCG/IDCG with binary gains, discount 1/log2(rank + 1), and IDCG over
//! min(|P|, k) hits. Users without held-out items are skipped and counted. Metrics are means over
//! evaluated users; eq. 13 is the mean of the six. Users are scored in parallel; results are
//! summed in user order, so they do not depend on the thread count.

use rayon::prelude::*;

use crate::split::{Split, UserItems};

/// The ks reported everywhere.
pub const KS: [usize; 3] = [5, 10, 20];
const K_MAX: usize = 20;
thread_local! {
    /// The evaluation's score buffer of this thread.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Scores tested together against the threshold in the fast top-20 selection.
const SKIP_BLOCK: usize = 32;

/// Something that scores every item for a user.
pub trait Scorer: Sync {
    /// Number of items.
    fn n_items(&self) -> usize;
    /// Writes the scores of `users` into `out` (`users.len()` rows of `n_items`).
    fn score_users(&self, users: &[u32], out: &mut [f32]);
    /// Each user's top 20 items without the items of its two sorted exclusion lists, best
    /// first, by the same rules as ranking whole rows of the same scores, for a scorer that can rank
    /// without writing whole rows of scores. `None` (the default) makes the caller score whole
    /// rows with [`Scorer::score_users`] and rank them.
    fn rank_users(&self, _users: &[u32], _excluded: &[[&[u32]; 2]]) -> Option<Vec<Vec<u32>>> {
        None
    }
}

/// Which held-out part is the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Validation items; training items excluded.
    Validation,
    /// Test items; training and validation items excluded.
    Test,
}

/// Ranking quality.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Recall@5, @10, @20.
    pub recall: [f64; 3],
    /// NDCG@5, @10, @20.
    pub ndcg: [f64; 3],
    /// Users evaluated (with at least one held-out item).
    pub users: usize,
    /// Users skipped for having no held-out item.
    pub skipped: usize,
}

impl Metrics {
    /// Eq. 13: the mean of Recall and NDCG at 5, 10 and 20.
    pub fn ensemble(&self) -> f64 {
        (self.recall.iter().sum::<f64>() + self.ndcg.iter().sum::<f64>()) / 6.0
    }
    /// As the file format's quality record.
    pub fn to_quality(&self) -> bet_format::Quality {
        bet_format::Quality { recall: self.recall.map(|x| x as f32), ndcg: self.ndcg.map(|x| x as f32) }
    }
}

/// `Recall@5/10/20 r5/r10/r20  NDCG@5/10/20 n5/n10/n20  eq.13 e`, four decimals: the one line
/// every command prints.
impl core::fmt::Display for Metrics {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (r, n) = (self.recall, self.ndcg);
        write!(
            f,
            "Recall@5/10/20 {:.4}/{:.4}/{:.4}  NDCG@5/10/20 {:.4}/{:.4}/{:.4}  eq.13 {:.4}",
            r[0],
            r[1],
            r[2],
            n[0],
            n[1],
            n[2],
            self.ensemble()
        )
    }
}

/// `a` ranks before `b` (the runtime's order).
fn before(a: (f32, u32), b: (f32, u32)) -> bool {
    match (a.0.is_nan(), b.0.is_nan()) {
        (false, false) => a.0 > b.0 || (a.0 == b.0 && a.1 < b.1),
        (false, true) => true,
        (true, false) => false,
        (true, true) => a.1 < b.1,
    }
}

/// The top `K_MAX` of `scores` without the items of the sorted lists in `excluded`, best first.
///
/// Fast path: excluded scores are overwritten with −∞ and one pass keeps the best 20 with a
/// single comparison per item (scanning in index order, an equal score never displaces the kept
/// one, which has the lower index). If an excluded item still made the list (fewer than 20 items
/// beat −∞), the exact path decides.
/// The top 20 of a user's scores with two sorted exclusion lists (ranking rules of the runtime).
pub(crate) fn top_ranked(scores: &mut [f32], excluded: [&[u32]; 2]) -> Vec<u32> {
    top(scores, excluded)
}

/// Recall and NDCG at 5, 10 and 20 of one user's ranked list.
pub(crate) fn user_metrics_of(ranked: &[u32], positives: &[u32]) -> [f64; 6] {
    user_metrics(ranked, positives)
}

fn top(scores: &mut [f32], excluded: [&[u32]; 2]) -> Vec<u32> {
    mark_excluded(scores, 0, excluded);
    let mut ranking = Ranking::new();
    ranking.offer(scores, 0);
    ranking.finish(excluded).unwrap_or_else(|| top_exact(scores, excluded))
}

/// Overwrites with −∞ the scores of excluded items among items `first..first + scores.len()`.
fn mark_excluded(scores: &mut [f32], first: usize, excluded: [&[u32]; 2]) {
    let end = first + scores.len();
    for list in excluded {
        let from = list.partition_point(|&i| (i as usize) < first);
        for &i in list[from..].iter().take_while(|&&i| (i as usize) < end) {
            scores[i as usize - first] = f32::NEG_INFINITY;
        }
    }
}

/// The fast top-20 selection, fed with consecutive ranges of one user's scores in item order
/// (a whole row by [`top`], 16 at a time by [`DenseScorer`]'s fused ranking), so both give the same
/// list from the same scores.
struct Ranking {
    best: Vec<(f32, u32)>,
    threshold: f32,
    /// A NaN threshold (fewer than 20 numbers among the scores) was met: the exact path decides.
    needs_exact: bool,
}

impl Ranking {
    fn new() -> Ranking {
        Ranking { best: Vec::with_capacity(K_MAX + 1), threshold: f32::NEG_INFINITY, needs_exact: false }
    }

    /// Whether [`Ranking::offer`] could take any of `scores` (excluded or not): false when the
    /// ranking has fallen back to the exact path (`offer` then ignores scores), or when the
    /// list is full, its threshold a number, and no score above it (`offer` would skip them).
    #[inline(always)]
    fn may_take(&self, scores: &[f32]) -> bool {
        let threshold = self.threshold;
        if self.needs_exact {
            return false;
        }
        if self.best.len() < K_MAX || threshold.is_nan() {
            return true;
        }
        scores.iter().fold(false, |hit, &s| hit | (s > threshold))
    }

    /// Offers the scores of items `first..first + scores.len()` (excluded ones already −∞).
    fn offer(&mut self, scores: &[f32], first: usize) {
        if self.needs_exact {
            return;
        }
        // Blocks of SKIP_BLOCK scores: once the list is full, a block none of whose scores
        // exceeds the threshold (a branch-free, vectorisable test; NaN counts as exceeding, so
        // it takes the careful path) is skipped whole. Most blocks are, once the threshold has
        // risen.
        for (b, block) in scores.chunks(SKIP_BLOCK).enumerate() {
            let threshold = self.threshold;
            if self.best.len() == K_MAX
                && !threshold.is_nan()
                && !block.iter().fold(false, |hit, &s| hit | (s > threshold) | s.is_nan())
            {
                continue;
            }
            for (j, &s) in block.iter().enumerate() {
                let i = (first + b * SKIP_BLOCK + j) as u32;
                // Only a strictly greater score can enter a full list (scanning in index
                // order, an equal score never displaces the kept one, which has the lower
                // index); NaN never does. A NaN threshold is rare: exact path.
                if self.best.len() == K_MAX && s.partial_cmp(&self.threshold) != Some(std::cmp::Ordering::Greater) {
                    if self.threshold.is_nan() {
                        self.needs_exact = true;
                        return;
                    }
                    continue;
                }
                let at = self.best.partition_point(|&b| before(b, (s, i)));
                self.best.insert(at, (s, i));
                self.best.truncate(K_MAX);
                if self.best.len() == K_MAX {
                    self.threshold = self.best[K_MAX - 1].0;
                }
            }
        }
    }

    /// The list, or `None` when the exact path must decide: a NaN threshold, or an excluded
    /// item kept at −∞ (fewer than 20 items beat −∞).
    fn finish(self, excluded: [&[u32]; 2]) -> Option<Vec<u32>> {
        let excluded_kept = self
            .best
            .iter()
            .any(|&(s, i)| s == f32::NEG_INFINITY && excluded.iter().any(|l| l.binary_search(&i).is_ok()));
        if self.needs_exact || excluded_kept {
            return None;
        }
        Some(self.best.into_iter().map(|b| b.1).collect())
    }
}

/// The exact (slow) selection: walks the exclusion lists beside the scores.
fn top_exact(scores: &[f32], excluded: [&[u32]; 2]) -> Vec<u32> {
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(K_MAX + 1);
    let (mut e0, mut e1) = (excluded[0].iter().peekable(), excluded[1].iter().peekable());
    for (i, &s) in scores.iter().enumerate() {
        let i = i as u32;
        let mut skip = false;
        while let Some(&&x) = e0.peek() {
            if x < i {
                e0.next();
            } else {
                skip |= x == i;
                break;
            }
        }
        while let Some(&&x) = e1.peek() {
            if x < i {
                e1.next();
            } else {
                skip |= x == i;
                break;
            }
        }
        if skip || (best.len() == K_MAX && !before((s, i), best[K_MAX - 1])) {
            continue;
        }
        let at = best.partition_point(|&b| before(b, (s, i)));
        best.insert(at, (s, i));
        best.truncate(K_MAX);
    }
    best.into_iter().map(|b| b.1).collect()
}

/// Per-user metrics: `[recall@5, @10, @20, ndcg@5, @10, @20]`.
fn user_metrics(ranked: &[u32], positives: &[u32]) -> [f64; 6] {
    let mut out = [0.0; 6];
    for (j, &k) in KS.iter().enumerate() {
        let mut hits = 0usize;
        let mut dcg = 0.0;
        for (r, item) in ranked.iter().take(k).enumerate() {
            if positives.binary_search(item).is_ok() {
                hits += 1;
                dcg += 1.0 / ((r + 2) as f64).log2();
            }
        }
        let idcg: f64 = (0..positives.len().min(k)).map(|r| 1.0 / ((r + 2) as f64).log2()).sum();
        out[j] = hits as f64 / positives.len() as f64;
        out[3 + j] = dcg / idcg;
    }
    out
}

/// Evaluates `scorer` on `split` for the given users (all users when `users` is `None`).
pub fn evaluate<S: Scorer + ?Sized>(scorer: &S, split: &Split, target: Target, users: Option<&[u32]>) -> Metrics {
    let all: Vec<u32>;
    let users = match users {
        Some(u) => u,
        None => {
            all = (0..split.n_users as u32).collect();
            &all
        }
    };
    let (held_out, extra_excluded): (&UserItems, Option<&UserItems>) = match target {
        Target::Validation => (&split.validation, None),
        Target::Test => (&split.test, Some(&split.validation)),
    };
    let n_items = scorer.n_items();
    // Users per GEMM: large enough that packing the item table is paid rarely.
    const CHUNK: usize = 1024;
    let per_chunk: Vec<MetricSums> = users
        .par_chunks(CHUNK)
        // One scores buffer per worker thread, kept across blocks and calls: a fresh 80 MB
        // buffer per block costs page faults (`map_init` would make one per rayon split).
        .map(|chunk| {
            let exclusions: Vec<[&[u32]; 2]> = chunk
                .iter()
                .map(|&u| [split.train.of(u as usize), extra_excluded.map_or(&[][..], |e| e.of(u as usize))])
                .collect();
            if let Some(lists) = scorer.rank_users(chunk, &exclusions) {
                let mut sums = MetricSums::default();
                for (ranked, &u) in lists.iter().zip(chunk) {
                    let positives = held_out.of(u as usize);
                    sums.add_user((!positives.is_empty()).then(|| user_metrics(ranked, positives)));
                }
                return sums;
            }
            let mut scores = SCORES.with(|b| std::mem::take(&mut *b.borrow_mut()));
            scores.resize(chunk.len() * n_items, 0.0);
            scorer.score_users(chunk, &mut scores);
            let mut sums = MetricSums::default();
            for ((row, &u), &excluded) in scores.chunks_exact_mut(n_items.max(1)).zip(chunk).zip(&exclusions) {
                let positives = held_out.of(u as usize);
                sums.add_user((!positives.is_empty()).then(|| user_metrics(&top(row, excluded), positives)));
            }
            SCORES.with(|b| *b.borrow_mut() = scores);
            sums
        })
        .collect();
    let mut total = MetricSums::default();
    for sums in per_chunk {
        total.merge(&sums);
    }
    total.means()
}

/// Running sums of the six per-user metrics (Recall@5/10/20, NDCG@5/10/20) and the user
/// counts; both evaluators (trainer scores, runtime top-k) reduce through it, so they average
/// the same way.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MetricSums {
    total: [f64; 6],
    evaluated: usize,
    skipped: usize,
}

impl MetricSums {
    /// Adds one user's metrics, or counts the user as skipped (no held-out item).
    pub(crate) fn add_user(&mut self, metrics: Option<[f64; 6]>) {
        match metrics {
            Some(m) => {
                for (t, x) in self.total.iter_mut().zip(m) {
                    *t += x;
                }
                self.evaluated += 1;
            }
            None => self.skipped += 1,
        }
    }

    /// Adds another partial sum (in a fixed order, so results do not depend on threads).
    pub(crate) fn merge(&mut self, other: &MetricSums) {
        for (t, x) in self.total.iter_mut().zip(other.total) {
            *t += x;
        }
        self.evaluated += other.evaluated;
        self.skipped += other.skipped;
    }

    /// Means over the evaluated users (0 when there are none).
    pub(crate) fn means(&self) -> Metrics {
        let mean = |x: f64| if self.evaluated == 0 { 0.0 } else { x / self.evaluated as f64 };
        let t = &self.total;
        Metrics {
            recall: [mean(t[0]), mean(t[1]), mean(t[2])],
            ndcg: [mean(t[3]), mean(t[4]), mean(t[5])],
            users: self.evaluated,
            skipped: self.skipped,
        }
    }
}

/// Dense embeddings scored by dot product.
///
/// Whole rows of scores ([`Scorer::score_users`]) come from a GEMM. Evaluation ranks without
/// them where the CPU has AVX2 and FMA ([`Scorer::rank_users`]): the item table is packed once
/// into panels of 16 items, a micro-kernel keeps a group of users × 16 items of sums in
/// registers (6 users in twelve AVX2 registers; 24 users in 24 of AVX-512's 32 registers where
/// the CPU has AVX-512), and a user's 16 sums go to its top-20 selection only when one beats its
/// current 20th, so no score is stored (a 1,024-user block of whole rows is 168 MB on Gowalla,
/// written and read back through memory).
/// Each score there is one chain of fused multiply-adds over the `d` values in order, so it does
/// not depend on the blocking, the thread count or the vector width: both kernels give the same
/// bits.
pub struct DenseScorer {
    users: ndarray::Array2<f32>,
    items: ndarray::Array2<f32>,
    /// The item table in panels of [`PANEL`] items, value-major, built on first use.
    packed: std::sync::OnceLock<Vec<f32>>,
}

/// Items per packed panel (two AVX2 vectors, one AVX-512 vector).
const PANEL: usize = 16;
/// Users whose rows stay in L2 together while the item panels pass (96 KB at d = 128); a
/// multiple of every kernel's group.
const USER_BLOCK: usize = 192;
/// The most users a kernel scores in one call (AVX-512's group).
const MAX_GROUP: usize = 24;

impl DenseScorer {
    /// A scorer of `users` (users × d) against `items` (items × d).
    pub fn new(users: ndarray::Array2<f32>, items: ndarray::Array2<f32>) -> DenseScorer {
        assert_eq!(users.ncols(), items.ncols(), "users and items of a dense scorer have one width");
        DenseScorer {
            users: users.as_standard_layout().into_owned(),
            items: items.as_standard_layout().into_owned(),
            packed: std::sync::OnceLock::new(),
        }
    }

    /// Panel `p` holds, for each value `t`, the `t`-th values of items `16p..16p + 16` (zeros
    /// past the last item).
    fn packed(&self) -> &[f32] {
        self.packed.get_or_init(|| {
            let (n, d) = self.items.dim();
            let panels = n.div_ceil(PANEL);
            let mut out = vec![0.0f32; panels * PANEL * d];
            for (i, row) in self.items.outer_iter().enumerate() {
                let (p, lane) = (i / PANEL, i % PANEL);
                for (t, &v) in row.iter().enumerate() {
                    out[(p * d + t) * PANEL + lane] = v;
                }
            }
            out
        })
    }
}

impl Scorer for DenseScorer {
    fn n_items(&self) -> usize {
        self.items.nrows()
    }

    fn score_users(&self, users: &[u32], out: &mut [f32]) {
        let d = self.users.ncols();
        let block = ndarray::Array2::from_shape_fn((users.len(), d), |(r, c)| self.users[[users[r] as usize, c]]);
        let mut view =
            ndarray::ArrayViewMut2::from_shape((users.len(), self.items.nrows()), out).expect("out has users x items");
        ndarray::linalg::general_mat_mul(1.0, &block, &self.items.t(), 0.0, &mut view);
    }

    fn rank_users(&self, users: &[u32], excluded: &[[&[u32]; 2]]) -> Option<Vec<Vec<u32>>> {
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(simd) = pulp::x86::V4::try_new() {
                return Some(self.rank_fused(fma::Avx512(simd), users, excluded));
            }
            let simd = pulp::x86::V3::try_new()?;
            Some(self.rank_fused(fma::Avx2(simd), users, excluded))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (users, excluded);
            None
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl DenseScorer {
    fn rank_fused<K: fma::PanelKernel>(&self, kernel: K, users: &[u32], excluded: &[[&[u32]; 2]]) -> Vec<Vec<u32>> {
        let group_size = K::GROUP;
        let (n_items, d) = self.items.dim();
        let packed = self.packed();
        let user_values = self.users.as_slice().expect("standard layout (made so in new)");
        let mut rankings: Vec<Ranking> = users.iter().map(|_| Ranking::new()).collect();
        // Blocks of users: the block's rows (96 KB at d = 128) stay in L2 while the panels pass;
        // each panel (8 KB) stays in L1 while every group of users of the block passes
        // over it. Each user's 16 sums of a panel go to its selection only when one of them
        // beats its threshold (a vector test, rarely true once the threshold has risen), so no
        // score is stored.
        let mut group_values = vec![0.0f32; USER_BLOCK.div_ceil(group_size) * group_size * d];
        let mut sums = [[0.0f32; PANEL]; MAX_GROUP];
        for (b, block) in users.chunks(USER_BLOCK).enumerate() {
            // The block's users in groups, value-major (`[t][group]`, zeros past the last).
            group_values.fill(0.0);
            for (k, &u) in block.iter().enumerate() {
                let (g, lane) = (k / group_size, k % group_size);
                for (t, &v) in user_values[u as usize * d..(u as usize + 1) * d].iter().enumerate() {
                    group_values[(g * d + t) * group_size + lane] = v;
                }
            }
            let groups = block.len().div_ceil(group_size);
            let rankings = &mut rankings[b * USER_BLOCK..b * USER_BLOCK + block.len()];
            let excluded = &excluded[b * USER_BLOCK..b * USER_BLOCK + block.len()];
            for p in 0..n_items.div_ceil(PANEL) {
                let panel = &packed[p * PANEL * d..(p + 1) * PANEL * d];
                let (first, n) = (p * PANEL, PANEL.min(n_items - p * PANEL));
                // One call under the kernel's target features for all groups: kernel and tests
                // inline.
                kernel.vectorize(|| {
                    for g in 0..groups {
                        let group = &group_values[g * group_size * d..(g + 1) * group_size * d];
                        kernel.panel(group, panel, d, &mut sums);
                        let used = group_size.min(block.len() - g * group_size);
                        for (r, sums) in sums.iter().take(used).enumerate() {
                            let k = g * group_size + r;
                            if rankings[k].may_take(sums) {
                                let mut scores = *sums;
                                mark_excluded(&mut scores[..n], first, excluded[k]);
                                rankings[k].offer(&scores[..n], first);
                            }
                        }
                    }
                });
            }
        }
        let mut row = Vec::new();
        rankings
            .into_iter()
            .zip(users)
            .zip(excluded)
            .map(|((ranking, &u), &excluded)| {
                ranking.finish(excluded).unwrap_or_else(|| {
                    // Rare (NaN, or fewer than 20 items to rank): the user's whole row of the
                    // same sums, exact path.
                    row.clear();
                    let mut group = vec![0.0f32; group_size * d];
                    for (t, &v) in user_values[u as usize * d..(u as usize + 1) * d].iter().enumerate() {
                        group[t * group_size] = v;
                    }
                    for p in 0..n_items.div_ceil(PANEL) {
                        let panel = &packed[p * PANEL * d..(p + 1) * PANEL * d];
                        kernel.vectorize(|| kernel.panel(&group, panel, d, &mut sums));
                        row.extend_from_slice(&sums[0]);
                    }
                    row.truncate(n_items);
                    top(&mut row, excluded)
                })
            })
            .collect()
    }
}

/// The micro-kernels of [`DenseScorer`]'s fused ranking (AVX2 and FMA; AVX-512).
#[cfg(target_arch = "x86_64")]
mod fma {
    use super::{MAX_GROUP, PANEL};
    use pulp::{f32x8, f32x16, x86::V3, x86::V4};

    /// A micro-kernel: the sums of a group of users with the items of one packed panel.
    pub(super) trait PanelKernel: Copy {
        /// Users per call.
        const GROUP: usize;
        /// Runs `f` compiled for the kernel's instruction set (so [`PanelKernel::panel`]
        /// inlines into it).
        fn vectorize<R>(self, f: impl FnOnce() -> R) -> R;
        /// Writes into `sums[r]` the sums of user `r` of `group` (value-major: `[t][GROUP]`)
        /// with the 16 items of `panel` (`[t][16]`), each a chain of fused multiply-adds over
        /// `t = 0..d` in order.
        fn panel(self, group: &[f32], panel: &[f32], d: usize, sums: &mut [[f32; PANEL]; MAX_GROUP]);
    }

    /// AVX2 and FMA: 6 users × 16 items, 12 of the 16 registers.
    #[derive(Clone, Copy)]
    pub(super) struct Avx2(pub V3);

    impl PanelKernel for Avx2 {
        const GROUP: usize = 6;
        #[inline(always)]
        fn vectorize<R>(self, f: impl FnOnce() -> R) -> R {
            self.0.vectorize(f)
        }
        #[inline(always)]
        fn panel(self, group: &[f32], panel: &[f32], d: usize, sums: &mut [[f32; PANEL]; MAX_GROUP]) {
            let simd = self.0;
            let group = &group[..6 * d].as_chunks::<6>().0[..d];
            let panel = &panel[..16 * d].as_chunks::<16>().0[..d];
            let z = simd.splat_f32x8(0.0);
            let mut a = [[z; 2]; 6];
            for (u, x) in group.iter().zip(panel) {
                let [x0, x1]: [f32x8; 2] = pulp::cast(*x);
                for i in 0..6 {
                    let u = simd.splat_f32x8(u[i]);
                    a[i][0] = simd.mul_add_f32x8(u, x0, a[i][0]);
                    a[i][1] = simd.mul_add_f32x8(u, x1, a[i][1]);
                }
            }
            for (out, a) in sums.iter_mut().zip(a) {
                *out = pulp::cast(a);
            }
        }
    }

    /// AVX-512: 24 users × 16 items, 24 of the 32 registers. Each sum is the same chain of
    /// fused multiply-adds as [`Avx2`]'s, so the two give the same bits.
    #[derive(Clone, Copy)]
    pub(super) struct Avx512(pub V4);

    impl PanelKernel for Avx512 {
        const GROUP: usize = 24;
        #[inline(always)]
        fn vectorize<R>(self, f: impl FnOnce() -> R) -> R {
            self.0.vectorize(f)
        }
        #[inline(always)]
        fn panel(self, group: &[f32], panel: &[f32], d: usize, sums: &mut [[f32; PANEL]; MAX_GROUP]) {
            let simd = self.0;
            let group = &group[..24 * d].as_chunks::<24>().0[..d];
            let panel = &panel[..16 * d].as_chunks::<16>().0[..d];
            let mut a = [simd.splat_f32x16(0.0); 24];
            for (u, x) in group.iter().zip(panel) {
                let x: f32x16 = pulp::cast(*x);
                for i in 0..24 {
                    a[i] = simd.mul_add_f32x16(simd.splat_f32x16(u[i]), x, a[i]);
                }
            }
            for (out, a) in sums.iter_mut().zip(a) {
                *out = pulp::cast(a);
            }
        }
    }
}

/// The most-popular baseline: every user gets the items' training frequencies as scores.
pub struct PopularityScorer {
    /// Training frequency per item.
    pub frequency: Vec<u32>,
}

impl Scorer for PopularityScorer {
    fn n_items(&self) -> usize {
        self.frequency.len()
    }
    fn score_users(&self, users: &[u32], out: &mut [f32]) {
        for row in out.chunks_mut(self.frequency.len().max(1)).take(users.len()) {
            for (o, &f) in row.iter_mut().zip(&self.frequency) {
                *o = f as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<Vec<f32>>);
    impl Scorer for Fixed {
        fn n_items(&self) -> usize {
            self.0[0].len()
        }
        fn score_users(&self, users: &[u32], out: &mut [f32]) {
            for (row, &u) in out.chunks_mut(self.n_items()).zip(users) {
                row.copy_from_slice(&self.0[u as usize]);
            }
        }
    }

    fn split_of(train: Vec<Vec<u32>>, val: Vec<Vec<u32>>, test: Vec<Vec<u32>>, n_items: usize) -> Split {
        let csr = |l: Vec<Vec<u32>>| {
            let mut row_ptr = vec![0];
            let mut items = vec![];
            for mut x in l {
                x.sort_unstable();
                items.extend(x);
                row_ptr.push(items.len());
            }
            (row_ptr, items)
        };
        let n_users = train.len();
        let mk = |l| {
            let (row_ptr, items) = csr(l);
            crate::split::tests_support::user_items(row_ptr, items)
        };
        Split {
            n_users,
            n_items,
            train: mk(train),
            validation: mk(val),
            test: mk(test),
            protocol: crate::split::Protocol::Paper,
            seed: 0,
            refit: false,
        }
    }

    #[test]
    fn fast_selection_equals_the_exact_one() {
        let mut x = 99u64;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            x >> 33
        };
        for round in 0..2000 {
            let n = 1 + (round % 60);
            let scores: Vec<f32> = (0..n)
                .map(|_| match next() % 10 {
                    0 => f32::NAN,
                    1 => f32::NEG_INFINITY,
                    2 | 3 => 0.5,
                    _ => (next() % 7) as f32 - 3.0,
                })
                .collect();
            let mut ex: Vec<u32> = (0..n as u32).filter(|_| next() % 3 == 0).collect();
            let ex2: Vec<u32> = (0..n as u32).filter(|i| i % 7 == 3 && ex.binary_search(i).is_err()).collect();
            ex.dedup();
            let want = top_exact(&scores, [&ex, &ex2]);
            let got = top(&mut scores.clone(), [&ex, &ex2]);
            assert_eq!(got, want, "scores {scores:?} excluded {ex:?} {ex2:?}");
        }
    }

    #[test]
    fn hand_computed_recall_and_ndcg() {
        // 30 items; scores descending by index except where set. Item 0 is a training item
        // (excluded); validation positives {2, 7, 25}.
        let mut s: Vec<f32> = (0..30).map(|i| 100.0 - i as f32).collect();
        s[25] = 99.5; // ranks right after item 0 would, so first among non-excluded
        let split = split_of(vec![vec![0]], vec![vec![2, 7, 25]], vec![vec![]], 30);
        let m = evaluate(&Fixed(vec![s]), &split, Target::Validation, None);
        // Ranking without item 0: 25, 1, 2, 3, 4, 5, 6, 7, ... -> hits at ranks 1, 3, 8.
        let d = |r: usize| 1.0 / ((r + 1) as f64).log2();
        let idcg3 = d(1) + d(2) + d(3);
        assert!((m.recall[0] - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.recall[1] - 1.0).abs() < 1e-12);
        assert!((m.ndcg[0] - (d(1) + d(3)) / idcg3).abs() < 1e-12);
        assert!((m.ndcg[1] - (d(1) + d(3) + d(8)) / idcg3).abs() < 1e-12);
        assert_eq!((m.users, m.skipped), (1, 0));
        assert!((m.ensemble() - (m.recall.iter().sum::<f64>() + m.ndcg.iter().sum::<f64>()) / 6.0).abs() < 1e-15);
    }

    #[test]
    fn ties_go_to_the_lower_index_and_test_excludes_validation() {
        // All scores equal: the ranking is 0, 1, 2, ... minus exclusions.
        let s = vec![1.0f32; 40];
        // Test positives {21, 22}; train {0..10} and validation {10..20} excluded, so the top 20
        // is 20..40: both positives at ranks 2 and 3.
        let split = split_of(vec![(0..10).collect()], vec![(10..20).collect()], vec![vec![21, 22]], 40);
        let m = evaluate(&Fixed(vec![s.clone()]), &split, Target::Test, None);
        let d = |r: usize| 1.0 / ((r + 1) as f64).log2();
        assert_eq!(m.recall, [1.0, 1.0, 1.0]);
        assert!((m.ndcg[0] - (d(2) + d(3)) / (d(1) + d(2))).abs() < 1e-12);
        // On validation (only train excluded), positives 10..20: ranks 1..10.
        let m = evaluate(&Fixed(vec![s]), &split, Target::Validation, None);
        assert_eq!(m.recall, [0.5, 1.0, 1.0]);
        assert!((m.ndcg[1] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn nan_ranks_last_and_empty_users_are_skipped() {
        let mut s = vec![0.0f32; 25];
        s[3] = f32::NAN;
        s[4] = -1.0;
        let split = split_of(vec![vec![], vec![]], vec![vec![3], vec![]], vec![vec![], vec![]], 25);
        let m = evaluate(&Fixed(vec![s.clone(), s]), &split, Target::Validation, None);
        // Item 3 (NaN) ranks 25th: outside the top 20.
        assert_eq!(m.recall, [0.0, 0.0, 0.0]);
        assert_eq!((m.users, m.skipped), (1, 1));
    }

    /// The fused ranking (sums fed to the selection 16 at a time) gives the lists that scoring
    /// whole rows and ranking them gives. Small integer vectors make every score exact in both
    /// (so equal), with many ties (broken by the lower index), exclusions, a user whose scores
    /// are all NaN, and sizes that are not multiples of the panel, the group or the user block.
    #[test]
    fn fused_ranking_equals_ranking_whole_rows() {
        for (n_users, n_items, d) in [(1, 5, 3), (7, 23, 8), (200, 1100, 16), (13, 530, 5)] {
            let mut users = ndarray::Array2::from_shape_fn((n_users, d), |(u, c)| ((u * 7 + c * 3) % 5) as f32 - 2.0);
            let items = ndarray::Array2::from_shape_fn((n_items, d), |(i, c)| ((i * 5 + c) % 4) as f32 - 1.0);
            if n_users > 3 {
                users[[3, 0]] = f32::NAN;
            }
            let scorer = DenseScorer::new(users, items);
            let all: Vec<u32> = (0..n_users as u32).collect();
            let lists: Vec<Vec<u32>> =
                all.iter().map(|&u| (0..n_items as u32).filter(|i| (i + u) % 3 == 0).collect()).collect();
            let excluded: Vec<[&[u32]; 2]> = lists.iter().map(|l| [&l[..], &[2u32][..]]).collect();
            // Where the CPU has AVX2 and FMA the fused path must be taken (so this test
            // exercises it); elsewhere there is nothing to compare.
            #[cfg(target_arch = "x86_64")]
            let fused_expected = pulp::x86::V3::try_new().is_some();
            #[cfg(not(target_arch = "x86_64"))]
            let fused_expected = false;
            let fused = scorer.rank_users(&all, &excluded);
            assert_eq!(fused.is_some(), fused_expected);
            let Some(fused) = fused else {
                return;
            };
            let mut row = vec![0.0; n_items];
            for (&u, (got, &excluded)) in all.iter().zip(fused.iter().zip(&excluded)) {
                scorer.score_users(&[u], &mut row);
                assert_eq!(got, &top(&mut row, excluded), "{n_users}x{n_items}x{d}: user {u}");
            }
            // `rank_users` takes the widest kernel the CPU has; the AVX2 one (groups of 6, not
            // 24) must rank the same where AVX-512 is what `rank_users` took.
            #[cfg(target_arch = "x86_64")]
            if let Some(v3) = pulp::x86::V3::try_new() {
                assert_eq!(scorer.rank_fused(fma::Avx2(v3), &all, &excluded), fused, "{n_users}x{n_items}x{d}: AVX2");
            }
        }
    }

    /// The AVX-512 kernel gives the AVX2 kernel's sums bit for bit (each is the same chain of
    /// fused multiply-adds), so a ranking does not depend on which one the CPU has. Values
    /// that are not small integers, so rounding happens and a different order of operations
    /// would show. Where the CPU lacks AVX-512 there is nothing to compare.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_kernel_gives_the_avx2_kernels_bits() {
        use fma::PanelKernel;
        let (Some(v3), Some(v4)) = (pulp::x86::V3::try_new(), pulp::x86::V4::try_new()) else {
            return;
        };
        let (wide, narrow) = (fma::Avx512(v4), fma::Avx2(v3));
        let mut x = 7u64;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.7
        };
        for d in [1, 5, 16, 128] {
            let users: Vec<Vec<f32>> = (0..24).map(|_| (0..d).map(|_| next()).collect()).collect();
            let panel: Vec<f32> = (0..16 * d).map(|_| next()).collect();
            let mut wide_group = vec![0.0f32; 24 * d];
            for (r, row) in users.iter().enumerate() {
                for (t, &v) in row.iter().enumerate() {
                    wide_group[t * 24 + r] = v;
                }
            }
            let mut wide_sums = [[0.0f32; PANEL]; MAX_GROUP];
            wide.vectorize(|| wide.panel(&wide_group, &panel, d, &mut wide_sums));
            for (chunk, rows) in users.chunks(6).enumerate() {
                let mut group = vec![0.0f32; 6 * d];
                for (r, row) in rows.iter().enumerate() {
                    for (t, &v) in row.iter().enumerate() {
                        group[t * 6 + r] = v;
                    }
                }
                let mut sums = [[0.0f32; PANEL]; MAX_GROUP];
                narrow.vectorize(|| narrow.panel(&group, &panel, d, &mut sums));
                for r in 0..6 {
                    let (a, b) = (sums[r].map(f32::to_bits), wide_sums[chunk * 6 + r].map(f32::to_bits));
                    assert_eq!(a, b, "d {d}, user {}", chunk * 6 + r);
                }
            }
        }
    }

    #[test]
    fn dense_scorer_matches_dot_products_and_threads_do_not_matter() {
        let users = ndarray::Array2::from_shape_fn((130, 8), |(u, c)| ((u * 7 + c * 3) % 11) as f32 - 5.0);
        let items = ndarray::Array2::from_shape_fn((50, 8), |(i, c)| ((i * 5 + c) % 13) as f32 - 6.0);
        let scorer = DenseScorer::new(users.clone(), items.clone());
        let mut out = vec![0.0; 2 * 50];
        scorer.score_users(&[3, 129], &mut out);
        assert_eq!(out[50 + 7], users.row(129).dot(&items.row(7)));
        let val: Vec<Vec<u32>> = (0..130)
            .map(|u| vec![(u % 50) as u32, ((u * 3) % 50) as u32])
            .map(|mut v: Vec<u32>| {
                v.dedup();
                v
            })
            .collect();
        let split = split_of(vec![vec![]; 130], val, vec![vec![]; 130], 50);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| evaluate(&scorer, &split, Target::Validation, None));
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
            .install(|| evaluate(&scorer, &split, Target::Validation, None));
        assert_eq!(one, two);
    }
}
