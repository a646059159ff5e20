//! The runtime against the spec: every score bit-identical to a literal implementation of
//! docs/format.md §7, every top-k identical to a full sort, both kernels identical, and the
//! golden files identical to the independent Python reader (`tests/reference_reader.py`).

mod common;

use bet_format::{AlignedBytes, ModelKind, StorageOrder, ValueDtype, ValueLayout};
use bet_runtime::{Filter, ItemSet, Kernel, Model, Scored, UserVector};
use common::*;
use proptest::prelude::*;

fn kernels() -> Vec<Kernel> {
    [Kernel::Portable, Kernel::Avx2F16c].into_iter().filter(|k| k.is_supported()).collect()
}

type Keep<'a> = Box<dyn Fn(u32) -> bool + 'a>;

fn check_model(owned: &Owned, k: usize) {
    let bytes = AlignedBytes::new(&owned.bytes());
    let n_items = owned.iw.len() as u32;
    for kernel in kernels() {
        let mut model = Model::new(bytes.clone()).unwrap();
        model.set_kernel(kernel).unwrap();
        let mut all = vec![0.0f32; n_items as usize];
        let mut out = vec![Scored::EMPTY; k.min(n_items as usize)];
        for u in 0..owned.uw.len() as u32 {
            let want = owned.reference_scores(u as usize);
            model.scores(u, &mut all).unwrap();
            let got: Vec<u32> = all.iter().map(|&s| bits(s)).collect();
            assert_eq!(got, want.iter().map(|&s| bits(s)).collect::<Vec<_>>(), "{kernel:?} user {u} scores");
            for (i, &w) in want.iter().enumerate().step_by(7) {
                assert_eq!(bits(model.score(u, i as u32).unwrap()), bits(w));
            }
            // Exclude every third item, allow-list every other item (sorted and bitset forms).
            let excl: Vec<u32> = (0..n_items).filter(|i| (i + u) % 3 == 0).collect();
            let allow: Vec<u32> = (0..n_items).filter(|i| i % 2 == 0).collect();
            let mut allow_bits = vec![0u64; n_items.div_ceil(64) as usize];
            for &i in &allow {
                allow_bits[(i / 64) as usize] |= 1 << (i % 64);
            }
            let cases: [(Filter, Keep); 4] = [
                (Filter::NONE, Box::new(|_| true)),
                (Filter { exclude: Some(ItemSet::Sorted(&excl)), allow: None }, Box::new(|i| (i + u) % 3 != 0)),
                (
                    Filter { exclude: Some(ItemSet::Sorted(&excl)), allow: Some(ItemSet::Sorted(&allow)) },
                    Box::new(|i| (i + u) % 3 != 0 && i % 2 == 0),
                ),
                (Filter { exclude: None, allow: Some(ItemSet::Bits(&allow_bits)) }, Box::new(|i| i % 2 == 0)),
            ];
            for (filter, keep) in &cases {
                let n = model.top_k(u, k, filter, &mut out).unwrap();
                let got: Vec<(u32, u32)> = out[..n].iter().map(|s| (s.index, bits(s.score))).collect();
                assert_eq!(got, reference_top_k(&want, k, keep), "{kernel:?} user {u} top-{k}");
            }
            // The caller-vector form with the user's own row gives the same answer.
            let um = owned.user_row(u as usize);
            let ug_row;
            let v = if owned.model == ModelKind::Ncf {
                let start: usize = owned.uw[..u as usize].iter().map(|&w| w as usize).sum();
                ug_row = owned.ug[start..start + owned.uw[u as usize] as usize]
                    .iter()
                    .map(|&x| if owned.dtype == ValueDtype::F16 { half::f16::from_f32(x).to_f32() } else { x })
                    .collect::<Vec<_>>();
                UserVector::Ncf { mlp: &um, gmf: &ug_row }
            } else {
                UserVector::Dot(&um)
            };
            let n = model.top_k_for_vector(v, k, &Filter::NONE, &mut out).unwrap();
            let got: Vec<(u32, u32)> = out[..n].iter().map(|s| (s.index, bits(s.score))).collect();
            assert_eq!(got, reference_top_k(&want, k, |_| true), "{kernel:?} user {u} vector form");
        }
    }
}

#[test]
fn every_model_kind_dtype_and_order_matches_the_spec() {
    let mut seed = 100;
    for model in [ModelKind::Mf, ModelKind::LightGcn, ModelKind::Ngcf, ModelKind::Ncf] {
        for dtype in [ValueDtype::F32, ValueDtype::F16] {
            for order in [StorageOrder::Index, StorageOrder::WidthDescending] {
                for layout in [ValueLayout::RowMajor, ValueLayout::Blocked8] {
                    let d = if model == ModelKind::Ncf { 16 } else { 40 };
                    let owned = Owned::random(model, d, 9, 300, seed, dtype, order).with_layout(layout);
                    for k in [1, 10, 400] {
                        check_model(&owned, k);
                    }
                    seed += 5;
                }
            }
        }
    }
}

#[test]
fn caller_vectors_of_any_width() {
    let owned = Owned::random(ModelKind::LightGcn, 64, 2, 500, 8, ValueDtype::F16, StorageOrder::WidthDescending)
        .with_layout(ValueLayout::Blocked8);
    let model = Model::new(AlignedBytes::new(&owned.bytes())).unwrap();
    let mut out = vec![Scored::EMPTY; 20];
    for width in [0usize, 1, 7, 8, 9, 33, 64] {
        let v: Vec<f32> = (0..width).map(|t| ((t * 37 % 11) as f32 - 5.0) / 8.0).collect();
        let want = owned.reference_scores_for(&v, &[]);
        let n = model.top_k_for_vector(UserVector::Dot(&v), 20, &Filter::NONE, &mut out).unwrap();
        let got: Vec<(u32, u32)> = out[..n].iter().map(|s| (s.index, bits(s.score))).collect();
        assert_eq!(got, reference_top_k(&want, 20, |_| true), "width {width}");
    }
    let too_wide = vec![0.0; 65];
    assert!(matches!(
        model.top_k_for_vector(UserVector::Dot(&too_wide), 5, &Filter::NONE, &mut out),
        Err(bet_runtime::Error::VectorTooWide { width: 65, max: 64 })
    ));
}

#[test]
fn bad_requests_get_typed_errors() {
    use bet_runtime::Error;
    let owned = Owned::random(ModelKind::Mf, 8, 3, 100, 1, ValueDtype::F32, StorageOrder::WidthDescending);
    let model = Model::new(AlignedBytes::new(&owned.bytes())).unwrap();
    let mut out = vec![Scored::EMPTY; 10];
    assert_eq!(model.top_k(3, 5, &Filter::NONE, &mut out), Err(Error::UserOutOfRange { user: 3, n_users: 3 }));
    assert_eq!(model.score(0, 100), Err(Error::ItemOutOfRange { item: 100, n_items: 100 }));
    assert_eq!(model.top_k(0, 11, &Filter::NONE, &mut out), Err(Error::OutputTooSmall { needed: 11, got: 10 }));
    let unsorted = [5u32, 3];
    let f = Filter { exclude: Some(ItemSet::Sorted(&unsorted)), allow: None };
    assert_eq!(model.top_k(0, 5, &f, &mut out), Err(Error::UnsortedItemList { position: 1 }));
    let out_of_range = [5u32, 100];
    let f = Filter { exclude: Some(ItemSet::Sorted(&out_of_range)), allow: None };
    assert_eq!(model.top_k(0, 5, &f, &mut out), Err(Error::ItemOutOfRange { item: 100, n_items: 100 }));
    let short_bits = [0u64; 1];
    let f = Filter { exclude: None, allow: Some(ItemSet::Bits(&short_bits)) };
    assert_eq!(model.top_k(0, 5, &f, &mut out), Err(Error::BitsetLength { expected: 2, got: 1 }));
    assert_eq!(
        model.top_k_for_vector(UserVector::Ncf { mlp: &[], gmf: &[] }, 5, &Filter::NONE, &mut out),
        Err(Error::WrongVectorKind { model: "mf" })
    );
    // k above the item count needs only n_items slots, and returns every item.
    let mut big = vec![Scored::EMPTY; 100];
    assert_eq!(model.top_k(0, 105, &Filter::NONE, &mut big), Ok(100));
    assert_eq!(model.top_k(0, 0, &Filter::NONE, &mut []), Ok(0));
    // Batch: every user's slot.
    let users = [2u32, 0, 1];
    let mut batch = vec![Scored::EMPTY; 3 * 4];
    let mut counts = [0usize; 3];
    model.top_k_batch(&users, 4, |_, _| Filter::NONE, &mut batch, &mut counts).unwrap();
    for (i, &u) in users.iter().enumerate() {
        let n = model.top_k(u, 4, &Filter::NONE, &mut out).unwrap();
        assert_eq!(&batch[i * 4..i * 4 + counts[i]], &out[..n]);
    }
    assert_eq!(
        model.top_k_batch(&users, 4, |_, _| Filter::NONE, &mut batch[..11], &mut counts),
        Err(Error::OutputTooSmall { needed: 12, got: 11 })
    );
}

#[test]
fn golden_files_match_the_independent_python_reader() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let golden = root.join("bet-format/tests/golden");
    let mut files: Vec<_> = std::fs::read_dir(&golden).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let output = std::process::Command::new("python3")
        .arg(root.join("tests/reference_reader.py"))
        .args(&files)
        .args(["--users", "0,1,2,3", "--k", "10"])
        .output()
        .expect("python3 is needed for the reference-reader test");
    assert!(output.status.success(), "reference reader failed: {}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let reports = json["files"].as_array().unwrap();
    assert_eq!(reports.len(), files.len());
    let mut compared = 0;
    for (path, report) in files.iter().zip(reports) {
        let model = Model::read(path).unwrap();
        assert_eq!(report["n_items"].as_u64().unwrap(), u64::from(model.summary().n_items));
        for result in report["results"].as_array().unwrap() {
            let user = result["user"].as_u64().unwrap() as u32;
            let want: Vec<(u32, u32)> = result["top"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_u64().unwrap() as u32, u32::from_str_radix(p[1].as_str().unwrap(), 16).unwrap()))
                .collect();
            for kernel in kernels() {
                let mut m = Model::read(path).unwrap();
                m.set_kernel(kernel).unwrap();
                m.propagate().unwrap(); // the `input` fixture's ego rows (spec §7.5); else nothing
                let mut out = [Scored::EMPTY; 10];
                let n = m.top_k(user, 10, &Filter::NONE, &mut out).unwrap();
                let got: Vec<(u32, u32)> = out[..n].iter().map(|s| (s.index, bits(s.score))).collect();
                assert_eq!(got, want, "{} user {user} ({kernel:?})", path.display());
                compared += 1;
            }
        }
    }
    assert!(compared >= 10, "too few comparisons: {compared}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24), ..ProptestConfig::default() })]
    #[test]
    fn random_models_match_the_spec(
        kind in 0usize..4, d in 1u32..48, users in 1usize..5, items in 1usize..120, seed in 0u64..1000,
        f16 in any::<bool>(), by_width in any::<bool>(), k in 1usize..30, blocked in any::<bool>(),
    ) {
        let model = [ModelKind::Mf, ModelKind::LightGcn, ModelKind::Ngcf, ModelKind::Ncf][kind];
        let d = if model == ModelKind::Ncf { d.min(24) } else { d };
        let owned = Owned::random(
            model, d, users, items, seed,
            if f16 { ValueDtype::F16 } else { ValueDtype::F32 },
            if by_width { StorageOrder::WidthDescending } else { StorageOrder::Index },
        ).with_layout(if blocked { ValueLayout::Blocked8 } else { ValueLayout::RowMajor });
        check_model(&owned, k);
    }
}

#[test]
fn signed_zero_products_give_the_spec_bits_in_every_kernel() {
    // Negative user values times zero item values: every product is -0.0. The spec's sums start
    // at +0.0, so the score is +0.0; a kernel that skipped that start would return -0.0.
    let mut owned = Owned::random(ModelKind::Mf, 16, 2, 64, 3, ValueDtype::F32, StorageOrder::WidthDescending)
        .with_layout(ValueLayout::Blocked8);
    owned.uw = vec![3, 12];
    owned.uv = vec![-1.0; 15];
    owned.iw = vec![3; 32].into_iter().chain(vec![12; 32]).collect();
    owned.iv = (0..32 * 3 + 32 * 12).map(|i| if i % 5 == 0 { 0.5 } else { 0.0 }).collect();
    let want_zero = owned.reference_scores(0).iter().filter(|s| s.to_bits() == 0).count();
    assert!(want_zero > 8, "the test needs exact zero scores");
    check_model(&owned, 64);
}

#[test]
fn mapped_read_and_borrowed_models_agree() {
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bet-format/tests/golden");
    for entry in std::fs::read_dir(golden).unwrap() {
        let path = entry.unwrap().path();
        let mut read = Model::read(&path).unwrap();
        // SAFETY: the golden files are read-only fixtures nobody modifies during the test.
        let mut mapped = unsafe { Model::map(&path) }.unwrap();
        let bytes = AlignedBytes::new(&std::fs::read(&path).unwrap());
        let mut borrowed = Model::new(bytes.as_bytes()).unwrap();
        // The `input` fixture's ego rows are propagated once per model (no-op for the others).
        read.propagate().unwrap();
        mapped.propagate().unwrap();
        borrowed.propagate().unwrap();
        mapped.verify_checksums().unwrap();
        let n = read.summary().n_items as usize;
        for user in 0..read.summary().n_users {
            let (mut a, mut b, mut c) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
            read.scores(user, &mut a).unwrap();
            mapped.scores(user, &mut b).unwrap();
            borrowed.scores(user, &mut c).unwrap();
            let bits = |v: &[f32]| v.iter().map(|&s| common::bits(s)).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{}", path.display());
            assert_eq!(bits(&a), bits(&c), "{}", path.display());
        }
    }
}
