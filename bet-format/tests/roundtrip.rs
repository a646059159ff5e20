//! proptest: write -> read round trips over random shapes, dtypes, orders and ids.

use bet_format::testing::synthetic_provenance;
use bet_format::*;
use half::f16;
use proptest::prelude::*;

fn table(max_rows: usize, d: u32) -> impl Strategy<Value = (Vec<u32>, Vec<f32>)> {
    prop::collection::vec(0..=d, 0..max_rows).prop_flat_map(|widths| {
        let total: usize = widths.iter().map(|&w| w as usize).sum();
        (Just(widths), prop::collection::vec(-4.0f32..4.0, total))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128), ..ProptestConfig::default() })]

    #[test]
    fn write_then_read_gives_back_every_row(
        d in 1u32..24,
        seed_tables in (1u32..24).prop_flat_map(|d| (table(30, d), table(40, d), Just(d))),
        f16_values in any::<bool>(),
        by_width in any::<bool>(),
        with_ids in any::<bool>(),
        blocked in any::<bool>(),
    ) {
        let _ = d;
        let ((uw, uv), (iw, iv), d) = seed_tables;
        let user_ids: Vec<Vec<u8>> = (0..uw.len()).map(|i| format!("user-{}", i * 7919 % 1000).into_bytes()).collect();
        let item_ids: Vec<Vec<u8>> = (0..iw.len()).map(|i| (i as u32).to_be_bytes().to_vec()).collect();
        let uref: Vec<&[u8]> = user_ids.iter().map(|v| v.as_slice()).collect();
        let iref: Vec<&[u8]> = item_ids.iter().map(|v| v.as_slice()).collect();
        let unique_users = { let mut s = uref.clone(); s.sort(); s.dedup(); s.len() == uref.len() };
        let contents = ModelContents {
            model: ModelKind::Mf,
            placement: MaskPlacement::NotApplicable,
            d_max: d,
            users: TableInput { widths: &uw, values: &uv },
            items: TableInput { widths: &iw, values: &iv },
            ncf: None,
            keep: Some(Decimal { units: 1, scale: 0 }),
            provenance: synthetic_provenance(),
            value_dtype: if f16_values { ValueDtype::F16 } else { ValueDtype::F32 },
            storage: if by_width { StorageOrder::WidthDescending } else { StorageOrder::Index },
            value_layout: if blocked { ValueLayout::Blocked8 } else { ValueLayout::RowMajor },
            user_ids: (with_ids && unique_users).then_some(&uref[..]),
            item_ids: with_ids.then_some(&iref[..]),
            graph: None,
        };
        let bytes = contents.to_bytes().unwrap();
        prop_assert_eq!(&bytes, &contents.to_bytes().unwrap(), "writer is not deterministic");
        let aligned = AlignedBytes::new(&bytes);
        let file = BetFile::new_checked(aligned.as_bytes()).unwrap();
        file.verify_checksums().unwrap();
        file.validate_values().unwrap();
        prop_assert_eq!(file.embedding_values(), (uv.len() + iv.len()) as u64);
        for (tab, widths, values, ids) in [(file.users(), &uw, &uv, &uref), (file.items(), &iw, &iv, &iref)] {
            prop_assert_eq!(tab.rows() as usize, widths.len());
            let mut start = 0usize;
            for (i, &w) in widths.iter().enumerate() {
                prop_assert_eq!(tab.width(i as u32), Some(w));
                let row = tab.row(i as u32).unwrap();
                prop_assert_eq!(row.width(), w as usize);
                for t in 0..w as usize {
                    let want = values[start + t];
                    let want = if f16_values { f16::from_f32(want).to_f32() } else { want };
                    prop_assert_eq!(row.get(t), Some(want));
                }
                start += w as usize;
                let r = tab.storage_row(i as u32).unwrap();
                prop_assert_eq!(tab.index_of_storage_row(r), Some(i as u32));
            }
            prop_assert_eq!(tab.width(widths.len() as u32), None);
            if by_width {
                let w: Vec<u32> = tab.row_ptr().windows(2).map(|p| p[1] - p[0]).collect();
                prop_assert!(w.windows(2).all(|p| p[0] >= p[1]), "storage not width-descending");
            }
            let _ = ids;
        }
        if let Some(map) = file.item_ids() {
            for (i, id) in iref.iter().enumerate() {
                prop_assert_eq!(map.index_of(id), Some(i as u32));
                prop_assert_eq!(map.external_id(i as u32), Some(*id));
            }
        }
        if let Some(map) = file.user_ids() {
            for (i, id) in uref.iter().enumerate() {
                prop_assert_eq!(map.index_of(id), Some(i as u32));
            }
        }
    }

    #[test]
    fn any_single_byte_change_is_caught(pos in any::<prop::sample::Index>(), delta in 1u8..=255) {
        let bytes = bet_format::testing::tiny_file_bytes();
        let mut bad = bytes.clone();
        let i = pos.index(bad.len());
        bad[i] = bad[i].wrapping_add(delta);
        let aligned = AlignedBytes::new(&bad);
        let caught = BetFile::new_checked(aligned.as_bytes()).and_then(|f| f.verify_checksums()).is_err();
        prop_assert!(caught, "change at byte {} went unnoticed", i);
    }
}
