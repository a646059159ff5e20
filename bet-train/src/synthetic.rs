//! Synthetic budgeted models for the demo and the benchmarks.
//!
//! Until the trainer exists, files are written from seeded random values with widths that fall
//! with popularity as BET assigns them (wider rows for frequent users and items), scaled so that
//! the total fills, and never exceeds, the exact budget limit.

use bet_format::{
    Decimal, MaskPlacement, ModelContents, ModelKind, Provenance, StorageOrder, TableInput, ValueDtype, ValueLayout,
};

/// A model held in index order, ready for [`ModelContents`].
pub struct SyntheticModel {
    /// Budget dimension.
    pub d_max: u32,
    /// Kept fraction.
    pub keep: Decimal,
    /// User widths.
    pub user_widths: Vec<u32>,
    /// Item widths.
    pub item_widths: Vec<u32>,
    /// User values, index order.
    pub user_values: Vec<f32>,
    /// Item values, index order.
    pub item_values: Vec<f32>,
}

/// SplitMix64: a tiny seeded generator (no RNG crate needed for synthetic data).
pub struct SplitMix(pub u64);

/// SplitMix64's increment (the golden ratio in 64 bits).
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function: a bijective mix of 64 bits. Also derives per-entity seeds.
pub fn splitmix_finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SplitMix {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        splitmix_finalize(self.0)
    }
    /// Uniform in [-1, 1).
    pub fn symmetric(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Widths by popularity: `w = clamp(floor(a / (rank + 1)^0.6), 1, d_max)`, where `rank` is the
/// position in decreasing `frequency` (ties by index).
fn widths_for(frequency: &[u32], a: f64, d_max: u32) -> Vec<u32> {
    let mut order: Vec<usize> = (0..frequency.len()).collect();
    order.sort_by(|&x, &y| frequency[y].cmp(&frequency[x]).then(x.cmp(&y)));
    let mut w = vec![0u32; frequency.len()];
    for (rank, &i) in order.iter().enumerate() {
        w[i] = ((a / ((rank + 1) as f64).powf(0.6)).floor() as u32).clamp(1, d_max);
    }
    w
}

impl SyntheticModel {
    /// Widths from popularity scaled to the largest total within the limit, random values.
    pub fn budgeted(
        user_frequency: &[u32],
        item_frequency: &[u32],
        d_max: u32,
        keep: Decimal,
        seed: u64,
    ) -> crate::Result<SyntheticModel> {
        let limit = crate::budget::limit(keep, d_max, user_frequency.len(), item_frequency.len(), 1)?;
        let total = |a: f64| -> u64 {
            widths_for(user_frequency, a, d_max)
                .iter()
                .chain(&widths_for(item_frequency, a, d_max))
                .map(|&w| u64::from(w))
                .sum()
        };
        let (mut lo, mut hi) = (0.0f64, 1e9f64);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if total(mid) <= limit { lo = mid } else { hi = mid }
        }
        let user_widths = widths_for(user_frequency, lo, d_max);
        let item_widths = widths_for(item_frequency, lo, d_max);
        let mut rng = SplitMix(seed);
        let mut values = |w: &[u32]| -> Vec<f32> {
            let n: u64 = w.iter().map(|&x| u64::from(x)).sum();
            (0..n).map(|_| rng.symmetric() * 0.1).collect()
        };
        let user_values = values(&user_widths);
        let item_values = values(&item_widths);
        Ok(SyntheticModel { d_max, keep, user_widths, item_widths, user_values, item_values })
    }

    /// The `.bet` bytes (LightGCN, output placement, widest rows first).
    pub fn to_bytes(&self, dtype: ValueDtype, dataset: &str) -> crate::Result<Vec<u8>> {
        let contents = ModelContents {
            model: ModelKind::LightGcn,
            placement: MaskPlacement::Output,
            d_max: self.d_max,
            users: TableInput { widths: &self.user_widths, values: &self.user_values },
            items: TableInput { widths: &self.item_widths, values: &self.item_values },
            ncf: None,
            keep: Some(self.keep),
            provenance: Provenance {
                dataset,
                dataset_sha256: [0; 32],
                split: "synthetic (random values, popularity widths)",
                seed: 0,
                threads: 1,
                trainer_version: crate::export::TRAINER_VERSION,
                git_commit: "",
                validation: None,
                test: None,
            },
            value_dtype: dtype,
            storage: StorageOrder::WidthDescending,
            value_layout: ValueLayout::Blocked8,
            user_ids: None,
            item_ids: None,
            graph: None,
        };
        Ok(contents.to_bytes()?)
    }
}

/// Zipf-like frequencies `floor(c / (i + 1)^s) + 1`, shuffled by index, for when no data is at hand.
pub fn zipf_frequencies(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix(seed);
    let mut f: Vec<u32> = (0..n).map(|i| (5000.0 / ((i + 1) as f64).powf(0.8)) as u32 + 1).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        f.swap(i, j);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgeted_widths_fit_the_limit_and_follow_popularity() {
        let users = zipf_frequencies(300, 1);
        let items = zipf_frequencies(500, 2);
        let keep = Decimal::parse("0.1").unwrap();
        let m = SyntheticModel::budgeted(&users, &items, 64, keep, 3).unwrap();
        let limit = bet_format::Budget::limit_for(keep, 64, 800).unwrap();
        let total: u64 = m.user_widths.iter().chain(&m.item_widths).map(|&w| u64::from(w)).sum();
        assert!(total <= limit && total + 64 > limit / 2, "total {total}, limit {limit}");
        let most = (0..500).max_by_key(|&i| (items[i], std::cmp::Reverse(i))).unwrap();
        let least = (0..500).min_by_key(|&i| (items[i], i)).unwrap();
        assert!(m.item_widths[most] >= m.item_widths[least]);
        assert!(m.user_widths.iter().chain(&m.item_widths).all(|&w| (1..=64).contains(&w)));
    }
}
