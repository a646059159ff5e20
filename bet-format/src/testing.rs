//! Small model builders for examples, tests and benchmarks (feature `std`).
//!
//! Values come from a fixed integer hash (no RNG crate), so every call with
//! the same arguments returns the same model, and so the same file bytes.

use std::vec::Vec;

use crate::{
    AlignedBytes, Decimal, MaskPlacement, ModelContents, ModelKind, Provenance, StorageOrder, TableInput, ValueDtype,
};

/// Re-export under the name the docs use.
pub type Aligned = AlignedBytes;

/// A deterministic value in [-1, 1) from `(seed, i)` (SplitMix64 finaliser).
pub fn hash_value(seed: u64, i: u64) -> f32 {
    let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(i).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // 24 random bits -> exactly representable in f32 and in f16 after scaling down.
    ((z >> 40) as f32 / (1u64 << 23) as f32) - 1.0
}

/// Deterministic values for `widths`, quantised to multiples of 1/1024 so that
/// they are exact in f16 too.
pub fn values_for(widths: &[u32], seed: u64) -> Vec<f32> {
    let total: u64 = widths.iter().map(|&w| u64::from(w)).sum();
    (0..total).map(|i| (hash_value(seed, i) * 1024.0).round() / 1024.0).collect()
}

/// A provenance block for synthetic files.
pub fn synthetic_provenance() -> Provenance<'static> {
    Provenance {
        dataset: "synthetic",
        dataset_sha256: [0; 32],
        split: "none",
        seed: 0,
        threads: 1,
        trainer_version: "bet-format testing",
        git_commit: "",
        validation: None,
        test: None,
    }
}

/// The bytes of a tiny MF file (3 users, 5 items, d_max 4, f32, width-ordered storage).
pub fn tiny_file_bytes() -> Vec<u8> {
    let uw = [4u32, 1, 2];
    let iw = [1u32, 4, 0, 3, 2];
    let uv = values_for(&uw, 1);
    let iv = values_for(&iw, 2);
    ModelContents {
        model: ModelKind::Mf,
        placement: MaskPlacement::NotApplicable,
        d_max: 4,
        users: TableInput { widths: &uw, values: &uv },
        items: TableInput { widths: &iw, values: &iv },
        ncf: None,
        keep: Some(Decimal { units: 1, scale: 0 }),
        provenance: synthetic_provenance(),
        value_dtype: ValueDtype::F32,
        storage: StorageOrder::WidthDescending,
        user_ids: None,
        item_ids: None,
    }
    .to_bytes()
    .unwrap_or_default()
}
