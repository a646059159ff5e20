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
    for &i in excluded.iter().flat_map(|l| l.iter()) {
        if let Some(s) = scores.get_mut(i as usize) {
            *s = f32::NEG_INFINITY;
        }
    }
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(K_MAX + 1);
    let mut threshold = f32::NEG_INFINITY;
    // Blocks of SKIP_BLOCK scores: once the list is full, a block none of whose scores exceeds
    // the threshold (a branch-free, vectorisable test; NaN counts as exceeding, so it takes the
    // careful path) is skipped whole. Most blocks are, once the threshold has risen.
    for (b, block) in scores.chunks(SKIP_BLOCK).enumerate() {
        if best.len() == K_MAX
            && !threshold.is_nan()
            && !block.iter().fold(false, |hit, &s| hit | (s > threshold) | s.is_nan())
        {
            continue;
        }
        for (j, &s) in block.iter().enumerate() {
            let i = b * SKIP_BLOCK + j;
            // Only a strictly greater score can enter a full list; NaN never does. A NaN
            // threshold (fewer than 20 numbers) is rare: exact path.
            if best.len() == K_MAX && s.partial_cmp(&threshold) != Some(std::cmp::Ordering::Greater) {
                if threshold.is_nan() {
                    return top_exact(scores, excluded);
                }
                continue;
            }
            let at = best.partition_point(|&b| before(b, (s, i as u32)));
            best.insert(at, (s, i as u32));
            best.truncate(K_MAX);
            if best.len() == K_MAX {
                threshold = best[K_MAX - 1].0;
            }
        }
    }
    let excluded_kept =
        best.iter().any(|&(s, i)| s == f32::NEG_INFINITY && excluded.iter().any(|l| l.binary_search(&i).is_ok()));
    if excluded_kept {
        return top_exact(scores, excluded);
    }
    best.into_iter().map(|b| b.1).collect()
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
            let mut scores = SCORES.with(|b| std::mem::take(&mut *b.borrow_mut()));
            scores.resize(chunk.len() * n_items, 0.0);
            scorer.score_users(chunk, &mut scores);
            let mut sums = MetricSums::default();
            for (row, &u) in scores.chunks_exact_mut(n_items.max(1)).zip(chunk) {
                let positives = held_out.of(u as usize);
                sums.add_user((!positives.is_empty()).then(|| {
                    let ranked =
                        top(row, [split.train.of(u as usize), extra_excluded.map_or(&[][..], |e| e.of(u as usize))]);
                    user_metrics(&ranked, positives)
                }));
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

/// Dense embeddings scored by dot product (user-block × item-table GEMM).
pub struct DenseScorer {
    /// Users × d.
    pub users: ndarray::Array2<f32>,
    /// Items × d.
    pub items: ndarray::Array2<f32>,
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

    #[test]
    fn dense_scorer_matches_dot_products_and_threads_do_not_matter() {
        let users = ndarray::Array2::from_shape_fn((130, 8), |(u, c)| ((u * 7 + c * 3) % 11) as f32 - 5.0);
        let items = ndarray::Array2::from_shape_fn((50, 8), |(i, c)| ((i * 5 + c) % 13) as f32 - 6.0);
        let scorer = DenseScorer { users: users.clone(), items: items.clone() };
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
