//! Train / validation / test splits, seeded and independent of the thread count.
//!
//! - [`Protocol::Paper`] (BET paper, `bet-algorithm.md` §1): all pairs merged, then per user a
//!   seeded shuffle, cut at `round(0.75 n)` (train+validation | test), and the first part cut at
//!   `round(2/3 n75)` (train | validation); `round` is half-to-even, as Python's. About 50/25/25.
//! - [`Protocol::Given`]: the source's own train/test; validation carved from each user's train
//!   part with the same second cut (a third of it, after a seeded shuffle).
//! - [`Protocol::Temporal`]: per user by timestamp (ties by item index): the oldest pairs train,
//!   then validation, the newest test, with the paper's cut sizes.
//!
//! [`Split::refit`] folds validation into training (the final fit on train ∪ validation the
//! reference code and CIESS use before their test figures; `bet search --refit`): training then
//! holds about 75%, validation is empty, test is unchanged, and so is every item a test ranking
//! excludes.
//!
//! Every user's shuffle uses its own generator seeded from `(seed, user)`, so the split does not
//! depend on thread count or order. Item lists are sorted, so a split is a function of the data's
//! pairs and the seed.

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

use crate::data::{Dataset, Part};
use crate::error::{Error, Result};

/// How to split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Merge everything, per-user seeded 50/25/25 (the paper's).
    Paper,
    /// The source's train/test, validation carved from train.
    Given,
    /// Per-user by time.
    Temporal,
}

impl Protocol {
    /// The name stored in provenance and reports.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Paper => "paper-50-25-25",
            Protocol::Given => "given-train-test",
            Protocol::Temporal => "temporal-50-25-25",
        }
    }
}

/// Per-user sorted item lists (CSR): user `u`'s items are `items[row_ptr[u]..row_ptr[u+1]]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserItems {
    row_ptr: Vec<usize>,
    items: Vec<u32>,
}

impl UserItems {
    fn from_lists(lists: Vec<Vec<u32>>) -> UserItems {
        let mut row_ptr = Vec::with_capacity(lists.len() + 1);
        let mut items = Vec::new();
        row_ptr.push(0);
        for mut l in lists {
            l.sort_unstable();
            items.extend(l);
            row_ptr.push(items.len());
        }
        UserItems { row_ptr, items }
    }
    /// User `u`'s items, sorted.
    pub fn of(&self, user: usize) -> &[u32] {
        match (self.row_ptr.get(user), self.row_ptr.get(user + 1)) {
            (Some(&a), Some(&b)) => &self.items[a..b],
            _ => &[],
        }
    }
    /// Number of users.
    pub fn users(&self) -> usize {
        self.row_ptr.len().saturating_sub(1)
    }
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// A split dataset.
#[derive(Clone, Debug)]
pub struct Split {
    /// Users.
    pub n_users: usize,
    /// Items.
    pub n_items: usize,
    /// Training pairs.
    pub train: UserItems,
    /// Validation pairs.
    pub validation: UserItems,
    /// Test pairs.
    pub test: UserItems,
    /// The protocol.
    pub protocol: Protocol,
    /// The seed.
    pub seed: u64,
    /// Whether validation has been folded into training ([`Split::refit`]).
    pub refit: bool,
}

/// Python's `round` for `x = num / den >= 0`: to the nearest integer, halves to even.
fn round_half_even(num: u64, den: u64) -> u64 {
    let q = num / den;
    let r2 = 2 * (num % den);
    if r2 > den || (r2 == den && q % 2 == 1) { q + 1 } else { q }
}

/// The paper's cut sizes for `n` pairs: (train, validation, test).
pub fn cut_sizes(n: usize) -> (usize, usize, usize) {
    let n = n as u64;
    let n75 = round_half_even(3 * n, 4);
    let train = round_half_even(2 * n75, 3);
    (train as usize, (n75 - train) as usize, (n - n75) as usize)
}

fn user_rng(seed: u64, user: usize) -> Pcg64Mcg {
    // A distinct, reproducible stream per user (SplitMix mixing of the pair).
    use crate::synthetic::{GOLDEN_GAMMA, splitmix_finalize};
    Pcg64Mcg::seed_from_u64(splitmix_finalize(seed ^ (user as u64).wrapping_mul(GOLDEN_GAMMA)))
}

fn shuffle(items: &mut [u32], rng: &mut Pcg64Mcg) {
    for i in (1..items.len()).rev() {
        let j = rng.random_range(0..=i);
        items.swap(i, j);
    }
}

impl Split {
    /// Splits `data` with `protocol` and `seed`.
    pub fn new(data: &Dataset, protocol: Protocol, seed: u64) -> Result<Split> {
        let n = data.n_users;
        let mut per_user: Vec<Vec<(u32, Part, Option<i64>)>> = vec![Vec::new(); n];
        for it in &data.interactions {
            per_user[it.user as usize].push((it.item, it.part, it.timestamp));
        }
        let (mut train, mut val, mut test) = (vec![Vec::new(); n], vec![Vec::new(); n], vec![Vec::new(); n]);
        for (u, rows) in per_user.iter_mut().enumerate() {
            rows.sort_unstable_by_key(|r| r.0);
            let mut rng = user_rng(seed, u);
            match protocol {
                Protocol::Paper => {
                    let mut items: Vec<u32> = rows.iter().map(|r| r.0).collect();
                    shuffle(&mut items, &mut rng);
                    let (a, b, _) = cut_sizes(items.len());
                    test[u] = items.split_off(a + b);
                    val[u] = items.split_off(a);
                    train[u] = items;
                }
                Protocol::Given => {
                    let mut items: Vec<u32> = rows.iter().filter(|r| r.1 == Part::Train).map(|r| r.0).collect();
                    test[u] = rows.iter().filter(|r| r.1 == Part::Test).map(|r| r.0).collect();
                    shuffle(&mut items, &mut rng);
                    let keep = round_half_even(2 * items.len() as u64, 3) as usize;
                    val[u] = items.split_off(keep);
                    train[u] = items;
                }
                Protocol::Temporal => {
                    if let Some(r) = rows.iter().find(|r| r.2.is_none()) {
                        return Err(Error::Protocol {
                            protocol: protocol.name(),
                            reason: format!("user {u}, item {} has no timestamp", r.0),
                        });
                    }
                    rows.sort_by_key(|r| (r.2, r.0));
                    let mut items: Vec<u32> = rows.iter().map(|r| r.0).collect();
                    let (a, b, _) = cut_sizes(items.len());
                    test[u] = items.split_off(a + b);
                    val[u] = items.split_off(a);
                    train[u] = items;
                }
            }
        }
        let split = Split {
            n_users: n,
            n_items: data.n_items,
            train: UserItems::from_lists(train),
            validation: UserItems::from_lists(val),
            test: UserItems::from_lists(test),
            protocol,
            seed,
            refit: false,
        };
        if split.train.is_empty() {
            return Err(Error::Protocol { protocol: protocol.name(), reason: "the training split is empty".into() });
        }
        Ok(split)
    }

    /// The split for a final fit on train ∪ validation: each user's training items are its
    /// training and validation items (sorted), validation is empty, test is the same. A test
    /// evaluation excludes exactly what it excluded before (training and validation items), so
    /// test figures of a refit model are comparable with those of the model it replaces; nothing
    /// is left to select or stop on, so a refit runs a number of steps chosen beforehand.
    pub fn refit(&self) -> Split {
        let lists = (0..self.n_users).map(|u| [self.train.of(u), self.validation.of(u)].concat()).collect();
        Split {
            n_users: self.n_users,
            n_items: self.n_items,
            train: UserItems::from_lists(lists),
            validation: UserItems::from_lists(vec![Vec::new(); self.n_users]),
            test: self.test.clone(),
            protocol: self.protocol,
            seed: self.seed,
            refit: true,
        }
    }

    /// The name stored in provenance and reports: the protocol's, marked when refit.
    pub fn name(&self) -> String {
        if self.refit {
            format!("{}+refit-train-validation", self.protocol.name())
        } else {
            self.protocol.name().to_string()
        }
    }

    /// Training interactions per user (the frequencies BET ranks users by).
    pub fn user_frequency(&self) -> Vec<u32> {
        (0..self.n_users).map(|u| self.train.of(u).len() as u32).collect()
    }

    /// Training interactions per item (items seen only in validation or test get 0).
    pub fn item_frequency(&self) -> Vec<u32> {
        let mut f = vec![0u32; self.n_items];
        for &i in &self.train.items {
            f[i as usize] += 1;
        }
        f
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::UserItems;
    pub(crate) fn user_items(row_ptr: Vec<usize>, items: Vec<u32>) -> UserItems {
        UserItems { row_ptr, items }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Interaction;

    fn dataset(pairs: &[(u32, u32, Part, Option<i64>)], n_users: usize, n_items: usize) -> Dataset {
        Dataset {
            name: "t".into(),
            n_users,
            n_items,
            user_ids: (0..n_users).map(|i| i.to_string()).collect(),
            item_ids: (0..n_items).map(|i| i.to_string()).collect(),
            interactions: pairs
                .iter()
                .map(|&(user, item, part, timestamp)| Interaction { user, item, part, timestamp })
                .collect(),
            sha256: [0; 32],
            report: Default::default(),
        }
    }

    #[test]
    fn cut_sizes_follow_pythons_round() {
        // bet-algorithm.md §1: n = 10 -> 8 / 2, then 5 / 3: 5 train, 3 validation, 2 test.
        assert_eq!(cut_sizes(10), (5, 3, 2));
        assert_eq!(cut_sizes(1), (1, 0, 0));
        assert_eq!(cut_sizes(2), (1, 1, 0)); // round(1.5) = 2, round(4/3) = 1
        assert_eq!(cut_sizes(3), (1, 1, 1));
        assert_eq!(cut_sizes(6), (3, 1, 2)); // round(4.5) = 4 (even), round(8/3) = 3
        assert_eq!(cut_sizes(14), (7, 3, 4)); // round(10.5) = 10, round(20/3) = 7
        for n in 0..500 {
            let (a, b, c) = cut_sizes(n);
            assert_eq!(a + b + c, n);
        }
    }

    #[test]
    fn paper_split_is_a_seeded_partition() {
        let pairs: Vec<_> = (0..4u32).flat_map(|u| (0..(3 + 4 * u)).map(move |i| (u, i, Part::Train, None))).collect();
        let data = dataset(&pairs, 4, 20);
        let a = Split::new(&data, Protocol::Paper, 7).unwrap();
        let b = Split::new(&data, Protocol::Paper, 7).unwrap();
        let c = Split::new(&data, Protocol::Paper, 8).unwrap();
        assert_eq!(a.train, b.train);
        assert_ne!((a.train.clone(), a.test.clone()), (c.train.clone(), c.test.clone()));
        for u in 0..4 {
            let mut all: Vec<u32> = [a.train.of(u), a.validation.of(u), a.test.of(u)].concat();
            all.sort_unstable();
            assert_eq!(all, (0..(3 + 4 * u as u32)).collect::<Vec<_>>());
            let (tr, va, te) = cut_sizes(all.len());
            assert_eq!((a.train.of(u).len(), a.validation.of(u).len(), a.test.of(u).len()), (tr, va, te));
        }
        let f = a.item_frequency();
        assert_eq!(f.iter().sum::<u32>() as usize, a.train.len());
        assert_eq!(a.user_frequency().iter().sum::<u32>() as usize, a.train.len());
    }

    /// The refit split trains on train ∪ validation and keeps test; a test ranking excludes the
    /// same items before and after.
    #[test]
    fn refit_folds_validation_into_training() {
        let pairs: Vec<_> = (0..5u32).flat_map(|u| (0..(4 + 3 * u)).map(move |i| (u, i, Part::Train, None))).collect();
        let data = dataset(&pairs, 5, 20);
        let split = Split::new(&data, Protocol::Paper, 3).unwrap();
        let refit = split.refit();
        assert!(refit.refit && !split.refit);
        assert_eq!(refit.validation.len(), 0);
        assert_eq!(refit.test, split.test);
        assert_eq!(refit.train.len(), split.train.len() + split.validation.len());
        for u in 0..5 {
            let mut want = [split.train.of(u), split.validation.of(u)].concat();
            want.sort_unstable();
            assert_eq!(refit.train.of(u), &want[..]);
            let excluded = |s: &Split| {
                let mut e = [s.train.of(u), s.validation.of(u)].concat();
                e.sort_unstable();
                e
            };
            assert_eq!(excluded(&refit), excluded(&split));
        }
        assert_eq!(refit.item_frequency().iter().sum::<u32>() as usize, refit.train.len());
        assert_eq!(split.name(), "paper-50-25-25");
        assert_eq!(refit.name(), "paper-50-25-25+refit-train-validation");
    }

    #[test]
    fn given_and_temporal_protocols() {
        let mut pairs = vec![];
        for i in 0..6 {
            pairs.push((0, i, Part::Train, Some(100 - i as i64)));
        }
        pairs.push((0, 9, Part::Test, Some(1)));
        let data = dataset(&pairs, 1, 10);
        let g = Split::new(&data, Protocol::Given, 1).unwrap();
        assert_eq!(g.test.of(0), &[9]);
        assert_eq!((g.train.of(0).len(), g.validation.of(0).len()), (4, 2));
        // Temporal: oldest first. Times: item 9 at 1, item 5 at 95, item 4 at 96, ... item 0 at 100.
        let t = Split::new(&data, Protocol::Temporal, 1).unwrap();
        assert_eq!(cut_sizes(7), (3, 2, 2));
        assert_eq!(t.train.of(0), &[4, 5, 9]);
        assert_eq!(t.validation.of(0), &[2, 3]);
        assert_eq!(t.test.of(0), &[0, 1]);
        let no_time = dataset(&[(0, 1, Part::Train, None)], 1, 2);
        let e = Split::new(&no_time, Protocol::Temporal, 1).unwrap_err().to_string();
        assert!(e.contains("no timestamp"), "{e}");
    }
}

/// A 30-user, 40-item split (8 items a user, paper protocol, seed 1) for tests that train or
/// search end to end in milliseconds.
#[cfg(test)]
pub(crate) fn small_test_split() -> Split {
    let mut pairs = vec![];
    for u in 0..30u32 {
        for k in 0..8u32 {
            pairs.push((u, (u * 7 + k * k * 3 + k) % 40));
        }
    }
    Split::new(&crate::data::Dataset::from_pairs("t", 30, 40, &pairs), Protocol::Paper, 1).unwrap()
}
