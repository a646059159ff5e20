//! Top-k selection into a caller buffer, and item filters.
//!
//! The ranking (spec §7.4): higher score first, ties to the lower index, NaN
//! below every number (NaNs among themselves by index). The collector keeps a
//! binary min-heap of the best `k` in the caller's slice — the root is the
//! worst kept candidate, so most items are rejected by one comparison — and
//! sorts it in place at the end. No allocation, no panic.
#![forbid(unsafe_code)]

use crate::Error;

/// One ranked item (`repr(C)`: the C API's `Scored` array element).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct Scored {
    /// Item index.
    pub index: u32,
    /// Its score (NaN is reported as the canonical quiet NaN).
    pub score: f32,
}

impl Scored {
    /// A placeholder to initialise buffers with.
    ///
    /// cbindgen:ignore
    pub const EMPTY: Scored = Scored { index: u32::MAX, score: f32::NAN };
}

/// A set of item indices: a strictly increasing list, or a bitset of `ceil(n_items / 64)` words
/// (bit `i % 64` of word `i / 64`).
#[derive(Clone, Copy, Debug)]
pub enum ItemSet<'a> {
    /// Strictly increasing indices.
    Sorted(&'a [u32]),
    /// Bitset.
    Bits(&'a [u64]),
}

impl ItemSet<'_> {
    /// Whether `item` is in the set (after [`ItemSet::check`]).
    #[inline]
    pub fn contains(&self, item: u32) -> bool {
        match self {
            ItemSet::Sorted(list) => list.binary_search(&item).is_ok(),
            ItemSet::Bits(words) => words.get((item / 64) as usize).is_some_and(|w| (w >> (item % 64)) & 1 == 1),
        }
    }

    /// Validates the set against `n_items`: a list must be strictly increasing and in range
    /// (binary search on an unsorted list would silently give wrong answers); a bitset must
    /// have exactly the right length.
    pub fn check(&self, n_items: u32) -> Result<(), Error> {
        match self {
            ItemSet::Sorted(list) => {
                for (i, w) in list.windows(2).enumerate() {
                    if let [a, b] = w
                        && a >= b
                    {
                        return Err(Error::UnsortedItemList { position: i + 1 });
                    }
                }
                match list.last() {
                    Some(&last) if last >= n_items => Err(Error::ItemOutOfRange { item: last, n_items }),
                    _ => Ok(()),
                }
            }
            ItemSet::Bits(words) => {
                let expected = n_items.div_ceil(64) as usize;
                if words.len() != expected {
                    return Err(Error::BitsetLength { expected, got: words.len() });
                }
                Ok(())
            }
        }
    }
}

/// Which items may be returned: not excluded, and allowed (when an allow-list is given).
#[derive(Clone, Copy, Debug, Default)]
pub struct Filter<'a> {
    /// Items never returned (e.g. the user's training items).
    pub exclude: Option<ItemSet<'a>>,
    /// If given, only these items are candidates (e.g. items in stock).
    pub allow: Option<ItemSet<'a>>,
}

impl Filter<'_> {
    /// No exclusions, every item a candidate.
    pub const NONE: Filter<'static> = Filter { exclude: None, allow: None };

    pub(crate) fn check(&self, n_items: u32) -> Result<(), Error> {
        if let Some(s) = &self.exclude {
            s.check(n_items)?;
        }
        if let Some(s) = &self.allow {
            s.check(n_items)?;
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn admits(&self, item: u32) -> bool {
        self.exclude.as_ref().is_none_or(|s| !s.contains(item)) && self.allow.as_ref().is_none_or(|s| s.contains(item))
    }
}

/// `a` ranks strictly before `b`.
#[inline]
pub(crate) fn ranks_before(a: Scored, b: Scored) -> bool {
    match (a.score.is_nan(), b.score.is_nan()) {
        (false, false) => a.score > b.score || (a.score == b.score && a.index < b.index),
        (false, true) => true,
        (true, false) => false,
        (true, true) => a.index < b.index,
    }
}

/// The best `k` candidates seen so far, as a min-heap (worst at the root) in a caller slice.
pub(crate) struct Collector<'o> {
    heap: &'o mut [Scored],
    len: usize,
}

impl<'o> Collector<'o> {
    /// `out` must already be cut to exactly `k` slots.
    pub(crate) fn new(out: &'o mut [Scored]) -> Collector<'o> {
        Collector { heap: out, len: 0 }
    }

    /// Whether a candidate with this score could enter, judged before its index is known
    /// (a tie with the root needs the index; report it as "maybe").
    #[inline(always)]
    pub(crate) fn may_enter(&self, score: f32) -> bool {
        if self.len < self.heap.len() {
            return true;
        }
        match self.heap.first() {
            // `!(score < root)` admits ties and, when the root is NaN, everything; a NaN
            // candidate only when the root is NaN too.
            Some(root) => {
                if root.score.is_nan() {
                    true
                } else {
                    score >= root.score
                }
            }
            None => false,
        }
    }

    /// The score a candidate must reach (`>=`) to possibly enter, or `None` while every
    /// candidate may enter (the heap is not full, or its root is NaN). Lets a block of scores be
    /// rejected with one vector compare.
    #[inline(always)]
    pub(crate) fn threshold(&self) -> Option<f32> {
        if self.len < self.heap.len() {
            return None;
        }
        match self.heap.first() {
            Some(root) if !root.score.is_nan() => Some(root.score),
            Some(_) => None,
            None => Some(f32::INFINITY),
        }
    }

    /// Offers a candidate (call after `may_enter` and the filter).
    #[inline]
    pub(crate) fn offer(&mut self, candidate: Scored) {
        let k = self.heap.len();
        if self.len < k {
            let mut i = self.len;
            self.len += 1;
            // Sift up: parents must rank after (be worse than) children.
            while i > 0 {
                let parent = (i - 1) / 2;
                let (Some(&p), true) = (self.heap.get(parent), i < k) else { break };
                if ranks_before(p, candidate) {
                    if let Some(slot) = self.heap.get_mut(i) {
                        *slot = p;
                    }
                    i = parent;
                } else {
                    break;
                }
            }
            if let Some(slot) = self.heap.get_mut(i) {
                *slot = candidate;
            }
        } else if let Some(&root) = self.heap.first()
            && ranks_before(candidate, root)
        {
            self.sift_down_from_root(candidate);
        }
    }

    fn sift_down_from_root(&mut self, item: Scored) {
        let n = self.len;
        let mut i = 0;
        loop {
            let l = 2 * i + 1;
            if l >= n {
                break;
            }
            let r = l + 1;
            let (Some(&lv), rv) = (self.heap.get(l), self.heap.get(r).copied()) else { break };
            // The worse child moves up.
            let (c, cv) = match rv {
                Some(rv) if r < n && ranks_before(lv, rv) => (r, rv),
                _ => (l, lv),
            };
            if ranks_before(item, cv) {
                if let Some(slot) = self.heap.get_mut(i) {
                    *slot = cv;
                }
                i = c;
            } else {
                break;
            }
        }
        if let Some(slot) = self.heap.get_mut(i) {
            *slot = item;
        }
    }

    /// Sorts the kept candidates best first and returns how many there are.
    pub(crate) fn finish(self) -> usize {
        let n = self.len;
        if let Some(kept) = self.heap.get_mut(..n) {
            kept.sort_unstable_by(|a, b| {
                if ranks_before(*a, *b) {
                    core::cmp::Ordering::Less
                } else if ranks_before(*b, *a) {
                    core::cmp::Ordering::Greater
                } else {
                    core::cmp::Ordering::Equal
                }
            });
            for s in kept.iter_mut() {
                if s.score.is_nan() {
                    s.score = f32::NAN;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(scores: &[f32], k: usize) -> Vec<(u32, u32)> {
        let mut out = vec![Scored::EMPTY; k];
        let mut c = Collector::new(&mut out);
        for (i, &s) in scores.iter().enumerate() {
            if c.may_enter(s) {
                c.offer(Scored { index: i as u32, score: s });
            }
        }
        let n = c.finish();
        out[..n].iter().map(|s| (s.index, s.score.to_bits())).collect()
    }

    fn reference(scores: &[f32], k: usize) -> Vec<(u32, u32)> {
        let mut all: Vec<Scored> =
            scores.iter().enumerate().map(|(i, &s)| Scored { index: i as u32, score: s }).collect();
        all.sort_by(|a, b| if ranks_before(*a, *b) { core::cmp::Ordering::Less } else { core::cmp::Ordering::Greater });
        all.truncate(k);
        all.iter().map(|s| (s.index, if s.score.is_nan() { f32::NAN.to_bits() } else { s.score.to_bits() })).collect()
    }

    #[test]
    fn ties_nan_and_signed_zero() {
        let s = [1.0, f32::NAN, 1.0, f32::NEG_INFINITY, -0.0, 0.0, f32::NAN, 3.0];
        assert_eq!(
            run(&s, 8),
            vec![
                (7, 3f32.to_bits()),
                (0, 1f32.to_bits()),
                (2, 1f32.to_bits()),
                (4, (-0.0f32).to_bits()),
                (5, 0f32.to_bits()),
                (3, f32::NEG_INFINITY.to_bits()),
                (1, f32::NAN.to_bits()),
                (6, f32::NAN.to_bits()),
            ]
        );
        assert_eq!(run(&s, 2), vec![(7, 3f32.to_bits()), (0, 1f32.to_bits())]);
        assert_eq!(run(&s, 0), vec![]);
        assert_eq!(run(&s, 20).len(), 8);
    }

    #[test]
    fn matches_a_full_sort_on_many_inputs() {
        let mut x = 12345u64;
        for round in 0..300 {
            let n = (round % 50) + 1;
            let scores: Vec<f32> = (0..n)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    match (x >> 60) % 8 {
                        0 => f32::NAN,
                        1 => 0.5,
                        _ => ((x >> 33) % 7) as f32 - 3.0,
                    }
                })
                .collect();
            for k in [0, 1, 3, n / 2, n, n + 5] {
                assert_eq!(run(&scores, k), reference(&scores, k), "scores {scores:?} k {k}");
            }
        }
    }
}
