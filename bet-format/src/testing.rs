//! Small model builders for examples, tests and benchmarks (feature `std`).
//!
//! Values come from a fixed integer hash (no RNG crate), so every call with
//! the same arguments returns the same model, and so the same file bytes.

use std::vec::Vec;

use crate::{
    AlignedBytes, Decimal, MaskPlacement, ModelContents, ModelKind, Provenance, StorageOrder, TableInput, ValueDtype,
    ValueLayout,
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

/// Deterministic values for `widths`, with full 24-bit mantissas, so that sums round and a
/// wrong accumulation order shows (an f16 file stores them rounded to f16).
pub fn values_for(widths: &[u32], seed: u64) -> Vec<f32> {
    let total: u64 = widths.iter().map(|&w| u64::from(w)).sum();
    (0..total).map(|i| hash_value(seed, i)).collect()
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
        value_layout: ValueLayout::RowMajor,
        user_ids: None,
        item_ids: None,
        graph: None,
    }
    .to_bytes()
    .unwrap_or_default()
}

/// The graph of [`input_file_bytes`]: 3 users, 5 items, user-side CSR (item 2 has no user, user
/// 2 has one item).
pub const INPUT_GRAPH: ([u32; 4], [u32; 6]) = ([0, 3, 5, 6], [0, 1, 3, 1, 4, 3]);

/// The bytes of a tiny LightGCN file with the `input` placement (3 users, 5 items, d_max 4,
/// 2 layers, f32, blocked and width-ordered): ego rows plus [`INPUT_GRAPH`] (spec §4.2, §7.5).
pub fn input_file_bytes() -> Vec<u8> {
    let uw = [4u32, 1, 2];
    let iw = [1u32, 4, 0, 3, 2];
    let uv = values_for(&uw, 3);
    let iv = values_for(&iw, 4);
    let (offsets, items) = INPUT_GRAPH;
    ModelContents {
        model: ModelKind::LightGcn,
        placement: MaskPlacement::Input,
        d_max: 4,
        users: TableInput { widths: &uw, values: &uv },
        items: TableInput { widths: &iw, values: &iv },
        ncf: None,
        keep: Some(Decimal { units: 1, scale: 0 }),
        provenance: synthetic_provenance(),
        value_dtype: ValueDtype::F32,
        storage: StorageOrder::WidthDescending,
        value_layout: crate::ValueLayout::Blocked8,
        user_ids: None,
        item_ids: None,
        graph: Some(crate::GraphInput { layers: 2, user_offsets: &offsets, items: &items }),
    }
    .to_bytes()
    .unwrap_or_default()
}

/// A file of [`random_input_file`] and the graph it was written with.
#[derive(Clone, Debug)]
pub struct RandomInputFile {
    /// The file.
    pub bytes: Vec<u8>,
    /// The graph's user-side CSR offsets, as written.
    pub user_offsets: Vec<u32>,
    /// The graph's items, as written.
    pub items: Vec<u32>,
}

/// A random LightGCN `input` file drawn from `seed`, for property tests: widths in `0..=d_max`,
/// each (user, item) pair an edge with probability about 1/2, no budget.
pub fn random_input_file(
    n_users: usize,
    n_items: usize,
    d_max: u32,
    layers: u32,
    seed: u64,
    value_dtype: ValueDtype,
    value_layout: ValueLayout,
) -> Result<RandomInputFile, crate::Error> {
    let width = |k: u64| ((hash_value(seed, k) + 1.0) * 0.5 * (d_max + 1) as f32) as u32 % (d_max + 1);
    let uw: Vec<u32> = (0..n_users as u64).map(width).collect();
    let iw: Vec<u32> = (0..n_items as u64).map(|i| width(100 + i)).collect();
    let (uv, iv) = (values_for(&uw, seed + 1), values_for(&iw, seed + 2));
    let (mut offsets, mut items) = (vec![0u32], Vec::new());
    for u in 0..n_users as u64 {
        items.extend((0..n_items as u32).filter(|&i| hash_value(seed + 3 + u, u64::from(i)) < 0.0));
        offsets.push(items.len() as u32);
    }
    let bytes = ModelContents {
        model: ModelKind::LightGcn,
        placement: MaskPlacement::Input,
        d_max,
        users: TableInput { widths: &uw, values: &uv },
        items: TableInput { widths: &iw, values: &iv },
        ncf: None,
        keep: None,
        provenance: synthetic_provenance(),
        value_dtype,
        storage: StorageOrder::WidthDescending,
        value_layout,
        user_ids: None,
        item_ids: None,
        graph: Some(crate::GraphInput { layers, user_offsets: &offsets, items: &items }),
    }
    .to_bytes()?;
    Ok(RandomInputFile { bytes, user_offsets: offsets, items })
}

fn widths_from(seed: u64, n: usize, max: u32) -> Vec<u32> {
    (0..n as u64).map(|i| ((hash_value(seed, i) + 1.0) * 0.5 * (max + 1) as f32) as u32).map(|w| w.min(max)).collect()
}

/// One golden fixture: its file name and its bytes.
pub struct GoldenCase {
    /// File name under `bet-format/tests/golden/`.
    pub name: &'static str,
    /// The exact bytes the writer must produce.
    pub bytes: Vec<u8>,
}

/// The golden fixtures. `bet-format/tests/golden.rs` checks that the writer reproduces the
/// checked-in files byte for byte; `cargo run -p bet-format --example make_golden` wrote them once.
pub fn golden_cases() -> Result<Vec<GoldenCase>, crate::Error> {
    use crate::NcfInput;
    let mut out = Vec::new();
    let prov = synthetic_provenance();

    // 1. MF, f32, index order, external ids, a budget.
    let uw = [8u32, 3, 0, 5, 1];
    let iw = [2u32, 8, 7, 0, 1, 3, 4, 6, 5];
    let (uv, iv) = (values_for(&uw, 11), values_for(&iw, 12));
    let user_ids: [&[u8]; 5] = [b"alice", b"bob", b"carol", b"dave", b"eve"];
    let item_ids: [&[u8]; 9] = [b"i-100", b"i-7", b"i-42", b"x", b"a", b"i-1", b"\xff\x00", b"", b"zz"];
    out.push(GoldenCase {
        name: "mf_f32_ids.bet",
        bytes: ModelContents {
            model: ModelKind::Mf,
            placement: MaskPlacement::NotApplicable,
            d_max: 8,
            users: TableInput { widths: &uw, values: &uv },
            items: TableInput { widths: &iw, values: &iv },
            ncf: None,
            keep: Some(Decimal { units: 5, scale: 1 }),
            provenance: prov,
            value_dtype: ValueDtype::F32,
            storage: StorageOrder::Index,
            value_layout: ValueLayout::RowMajor,
            user_ids: Some(&user_ids),
            item_ids: Some(&item_ids),
            graph: None,
        }
        .to_bytes()?,
    });

    // 2. LightGCN, f16, width order, widths that are not multiples of 8.
    let uw = widths_from(21, 6, 16);
    let iw = widths_from(22, 24, 16);
    let (uv, iv) = (values_for(&uw, 23), values_for(&iw, 24));
    out.push(GoldenCase {
        name: "lightgcn_f16_width.bet",
        bytes: ModelContents {
            model: ModelKind::LightGcn,
            placement: MaskPlacement::Output,
            d_max: 16,
            users: TableInput { widths: &uw, values: &uv },
            items: TableInput { widths: &iw, values: &iv },
            ncf: None,
            keep: Some(Decimal { units: 6, scale: 1 }),
            provenance: Provenance { dataset: "golden", split: "paper-50-25-25", seed: 7, threads: 2, ..prov },
            value_dtype: ValueDtype::F16,
            storage: StorageOrder::WidthDescending,
            value_layout: ValueLayout::RowMajor,
            user_ids: None,
            item_ids: None,
            graph: None,
        }
        .to_bytes()?,
    });

    // 3. NGCF: vector width 4 * d_max, no budget.
    let uw = widths_from(31, 4, 16);
    let iw = widths_from(32, 7, 16);
    let (uv, iv) = (values_for(&uw, 33), values_for(&iw, 34));
    out.push(GoldenCase {
        name: "ngcf_f32_width.bet",
        bytes: ModelContents {
            model: ModelKind::Ngcf,
            placement: MaskPlacement::Both,
            d_max: 4,
            users: TableInput { widths: &uw, values: &uv },
            items: TableInput { widths: &iw, values: &iv },
            ncf: None,
            keep: None,
            provenance: prov,
            value_dtype: ValueDtype::F32,
            storage: StorageOrder::WidthDescending,
            value_layout: ValueLayout::RowMajor,
            user_ids: None,
            item_ids: None,
            graph: None,
        }
        .to_bytes()?,
    });

    // 4. NCF, f16 tables, f32 dense weights.
    let d = 8u32;
    let uw = widths_from(41, 4, d);
    let iw = widths_from(42, 6, d);
    let (uv, iv) = (values_for(&uw, 43), values_for(&iw, 44));
    let (ug, ig) = (values_for(&uw, 45), values_for(&iw, 46));
    let dense_len = crate::ncf_dense_len(d).unwrap_or(0);
    let dense: Vec<f32> = (0..dense_len as u64).map(|i| hash_value(47, i) * 0.5).collect();
    out.push(GoldenCase {
        name: "ncf_f16.bet",
        bytes: ModelContents {
            model: ModelKind::Ncf,
            placement: MaskPlacement::NotApplicable,
            d_max: d,
            users: TableInput { widths: &uw, values: &uv },
            items: TableInput { widths: &iw, values: &iv },
            ncf: Some(NcfInput { user_gmf: &ug, item_gmf: &ig, dense: &dense }),
            keep: Some(Decimal { units: 1, scale: 0 }),
            provenance: prov,
            value_dtype: ValueDtype::F16,
            storage: StorageOrder::WidthDescending,
            value_layout: ValueLayout::RowMajor,
            user_ids: None,
            item_ids: None,
            graph: None,
        }
        .to_bytes()?,
    });

    // 5. Ranking edge cases: NaN, infinities, signed zeros, exact ties, empty rows.
    let uw = [3u32, 2, 0];
    let uv = [1.0, -1.0, 0.5, 1.0, 0.0];
    let iw = [3u32, 3, 1, 2, 3, 0, 3, 1];
    #[rustfmt::skip]
    let iv = [
        1.0, 0.0, 0.0,        // item 0: score u0 = 1
        f32::NAN, 1.0, 1.0,   // item 1: NaN
        1.0,                  // item 2: 1 (tie with 0 and 4)
        f32::INFINITY, 0.0,   // item 3: +inf for u0, +inf for u1
        1.0, 0.0, 0.0,        // item 4: 1 (tie)
                              // item 5: width 0 -> +0.0
        -0.0, 0.0, -4.0,      // item 6: u0: -0 + 0 + -2 = -2
        f32::NEG_INFINITY,    // item 7: -inf
    ];
    out.push(GoldenCase {
        name: "mf_special_values.bet",
        bytes: ModelContents {
            model: ModelKind::Mf,
            placement: MaskPlacement::NotApplicable,
            d_max: 3,
            users: TableInput { widths: &uw, values: &uv },
            items: TableInput { widths: &iw, values: &iv },
            ncf: None,
            keep: None,
            provenance: prov,
            value_dtype: ValueDtype::F32,
            storage: StorageOrder::WidthDescending,
            value_layout: ValueLayout::RowMajor,
            user_ids: None,
            item_ids: None,
            graph: None,
        }
        .to_bytes()?,
    });
    // 6. Blocked value order: widths from a small set, so many aligned groups of 8 share a width.
    let pick = |seed: u64, n: usize| -> Vec<u32> {
        (0..n as u64).map(|i| [3u32, 5, 9, 16][((hash_value(seed, i) + 1.0) * 1.999) as usize % 4]).collect()
    };
    let uw = pick(61, 10);
    let iw = pick(62, 70);
    let (uv, iv) = (values_for(&uw, 63), values_for(&iw, 64));
    out.push(GoldenCase {
        name: "lightgcn_f16x8_blocked.bet",
        bytes: ModelContents {
            model: ModelKind::LightGcn,
            placement: MaskPlacement::Both,
            d_max: 16,
            users: TableInput { widths: &uw, values: &uv },
            items: TableInput { widths: &iw, values: &iv },
            ncf: None,
            keep: Some(Decimal { units: 75, scale: 2 }),
            provenance: prov,
            value_dtype: ValueDtype::F16,
            storage: StorageOrder::WidthDescending,
            value_layout: ValueLayout::Blocked8,
            user_ids: None,
            item_ids: None,
            graph: None,
        }
        .to_bytes()?,
    });
    // 7. LightGCN `input` (1.1): ego rows (f16, blocked) and a propagation graph with users and
    //    items of degree 0, 3 layers, d_max 12 (not a multiple of 8).
    let uw = widths_from(71, 14, 12);
    let iw = widths_from(72, 19, 12);
    let (uv, iv) = (values_for(&uw, 73), values_for(&iw, 74));
    let (mut offsets, mut items) = (vec![0u32], Vec::new());
    for u in 0..uw.len() as u64 {
        // User u keeps item i with probability about 1/3; user 5 and item 18 have no edge.
        items.extend((0..18u32).filter(|&i| u != 5 && hash_value(75 + u, u64::from(i)) < -0.33));
        offsets.push(items.len() as u32);
    }
    out.push(GoldenCase {
        name: "lightgcn_input_graph.bet",
        bytes: ModelContents {
            model: ModelKind::LightGcn,
            placement: MaskPlacement::Input,
            d_max: 12,
            users: TableInput { widths: &uw, values: &uv },
            items: TableInput { widths: &iw, values: &iv },
            ncf: None,
            keep: Some(Decimal { units: 6, scale: 1 }),
            provenance: prov,
            value_dtype: ValueDtype::F16,
            storage: StorageOrder::WidthDescending,
            value_layout: ValueLayout::Blocked8,
            user_ids: None,
            item_ids: None,
            graph: Some(crate::GraphInput { layers: 3, user_offsets: &offsets, items: &items }),
        }
        .to_bytes()?,
    });
    Ok(out)
}
