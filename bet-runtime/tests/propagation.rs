//! LightGCN `input` files: the runtime propagates the stored ego rows over the stored graph
//! (spec §7.5). Checked against a plain `f64` propagation written from the spec's formula, and
//! across every entry point (score, scores, top-k with filters, caller vectors).

use bet_format::testing::{INPUT_GRAPH, input_file_bytes};
use bet_format::{AlignedBytes, BetFile};
use bet_runtime::{Error, Filter, ItemSet, Model, Scored, UserVector};

/// Final vectors from the formula: mean of layers 0..=L of `X_{k+1} = Â X_k`, in f64.
fn reference_final_vectors(file: &BetFile<'_>) -> Vec<Vec<f64>> {
    reference_propagation(file, |v| v)
}

/// The same propagation of `map(value)` for every stored value: with `f64::abs` (the weights are
/// non-negative) it bounds the size of every term the f32 propagation added, which is what its
/// rounding error scales with, even where the terms cancel.
#[allow(clippy::needless_range_loop)] // indices mirror the formula
fn reference_propagation(file: &BetFile<'_>, map: fn(f64) -> f64) -> Vec<Vec<f64>> {
    let s = file.summary();
    let (nu, ni, d) = (s.n_users as usize, s.n_items as usize, s.vector_width as usize);
    let g = file.graph().expect("an input file has a graph");
    let mut x = vec![vec![0.0f64; d]; nu + ni];
    for u in 0..nu {
        let row = file.users().row(u as u32).unwrap();
        for t in 0..row.width() {
            x[u][t] = map(f64::from(row.get(t).unwrap()));
        }
    }
    for i in 0..ni {
        let row = file.items().row(i as u32).unwrap();
        for t in 0..row.width() {
            x[nu + i][t] = map(f64::from(row.get(t).unwrap()));
        }
    }
    let mut edges = Vec::new();
    for u in 0..nu {
        for &i in g.items_of(u as u32).unwrap() {
            edges.push((u, nu + i as usize));
        }
    }
    let mut degree = vec![0.0f64; nu + ni];
    for &(a, b) in &edges {
        degree[a] += 1.0;
        degree[b] += 1.0;
    }
    let mut sum = x.clone();
    for _ in 0..g.layers {
        let mut next = vec![vec![0.0f64; d]; nu + ni];
        for &(a, b) in &edges {
            let w = 1.0 / (degree[a] * degree[b]).sqrt();
            for t in 0..d {
                next[a][t] += w * x[b][t];
                next[b][t] += w * x[a][t];
            }
        }
        for (s, n) in sum.iter_mut().zip(&next) {
            s.iter_mut().zip(n).for_each(|(s, n)| *s += n);
        }
        x = next;
    }
    let scale = 1.0 / f64::from(g.layers + 1);
    sum.iter_mut().for_each(|r| r.iter_mut().for_each(|v| *v *= scale));
    sum
}

#[test]
fn input_files_score_after_propagation_as_the_formula_says() {
    let bytes = AlignedBytes::new(&input_file_bytes());
    let file = BetFile::new_checked(bytes.as_ref()).unwrap();
    assert_eq!(file.graph().unwrap().edges(), INPUT_GRAPH.1.len());
    let reference = reference_final_vectors(&file);
    let mut model = Model::new(bytes.clone()).unwrap();

    // Before propagation every dot-product entry point refuses: the stored rows are ego rows.
    assert!(model.needs_propagation());
    let mut out = [Scored::EMPTY; 5];
    let none = Filter { exclude: None, allow: None };
    assert_eq!(model.score(0, 0), Err(Error::NotPropagated));
    assert_eq!(model.top_k(0, 5, &none, &mut out), Err(Error::NotPropagated));
    assert_eq!(model.scores(0, &mut [0.0; 5]), Err(Error::NotPropagated));
    assert_eq!(model.top_k_for_vector(UserVector::Dot(&[1.0]), 5, &none, &mut out), Err(Error::NotPropagated));

    model.propagate().unwrap();
    assert!(!model.needs_propagation());
    assert_eq!(model.propagated_bytes(), (3 + 5) * 4 * 4);
    model.propagate().unwrap(); // a second call changes nothing
    let (nu, ni) = (3usize, 5usize);
    let mut all = [0.0f32; 5];
    let mut nonzero = 0;
    for u in 0..nu {
        model.scores(u as u32, &mut all).unwrap();
        for i in 0..ni {
            let want: f64 = reference[u].iter().zip(&reference[nu + i]).map(|(a, b)| a * b).sum();
            let got = model.score(u as u32, i as u32).unwrap();
            assert!((f64::from(got) - want).abs() <= 1e-6, "user {u} item {i}: {got} vs {want}");
            assert_eq!(got.to_bits(), all[i].to_bits(), "score and scores agree bit for bit");
            nonzero += usize::from(got != 0.0);
        }
        // Top-k is the scores, ranked (ties by index), with exclusions applied.
        let seen = [1u32];
        let filter = Filter { exclude: Some(ItemSet::Sorted(&seen)), allow: None };
        let n = model.top_k(u as u32, 5, &filter, &mut out).unwrap();
        assert_eq!(n, 4);
        let mut want: Vec<u32> = (0..5).filter(|&i| i != 1).collect();
        want.sort_by(|&a, &b| all[b as usize].total_cmp(&all[a as usize]).then(a.cmp(&b)));
        assert_eq!(out[..n].iter().map(|s| s.index).collect::<Vec<_>>(), want);
        // An allow-list walks only its items.
        let allow = [0u32, 3];
        let filter = Filter { exclude: None, allow: Some(ItemSet::Sorted(&allow)) };
        let n = model.top_k(u as u32, 5, &filter, &mut out).unwrap();
        assert_eq!(n, 2);
        assert!(out[..n].iter().all(|s| allow.contains(&s.index)));
    }
    // Propagation reaches past each row's width and past empty rows: item 2 has no user, so its
    // final vector is its (empty) ego row; items with users get dense vectors.
    assert!(nonzero >= 10, "propagated scores are mostly non-zero ({nonzero})");
    assert!(reference[nu + 2].iter().all(|&v| v == 0.0));
    assert!(reference[nu].iter().filter(|&&v| v != 0.0).count() > 1, "item 0 (width 1) is dense after propagation");

    // A caller's vector is scored against the propagated items.
    let v = [0.5f32, -1.0, 0.25, 2.0];
    let n = model.top_k_for_vector(UserVector::Dot(&v), 5, &none, &mut out).unwrap();
    assert_eq!(n, 5);
    let best = out[0];
    let want: f64 = v.iter().zip(&reference[nu + best.index as usize]).map(|(&a, b)| f64::from(a) * b).sum();
    assert!((f64::from(best.score) - want).abs() <= 1e-6);

    // Releasing the vectors returns the model to its unpropagated state; propagating again
    // gives the same bits.
    let before = model.score(1, 3).unwrap();
    model.release_propagated();
    assert!(model.needs_propagation());
    assert_eq!(model.propagated_bytes(), 0);
    assert_eq!(model.score(1, 3), Err(Error::NotPropagated));
    model.propagate().unwrap();
    assert_eq!(model.score(1, 3).unwrap().to_bits(), before.to_bits());
}

#[test]
fn other_files_need_no_propagation() {
    let bytes = AlignedBytes::new(&bet_format::testing::tiny_file_bytes());
    let mut model = Model::new(bytes).unwrap();
    assert!(!model.needs_propagation());
    let before = model.score(0, 1).unwrap();
    model.propagate().unwrap();
    assert_eq!(model.propagated_bytes(), 0);
    assert_eq!(model.score(0, 1).unwrap().to_bits(), before.to_bits());
}

/// 32 cases unless `PROPTEST_CASES` says otherwise (CI's cross runs use fewer).
fn config() -> proptest::prelude::ProptestConfig {
    proptest::prelude::ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(32),
        ..proptest::prelude::ProptestConfig::default()
    }
}

proptest::proptest! {
    #![proptest_config(config())]
    /// Random graphs (isolated users and items included), widths, layer counts, dtypes and
    /// storage orders: the written file reads back with the same graph, and every propagated
    /// score matches the formula in f64.
    #[test]
    fn random_input_models_propagate_as_the_formula_says(
        n_users in 1usize..10,
        n_items in 1usize..10,
        d_max in 1u32..11,
        layers in 1u32..5,
        seed in 0u64..1_000_000,
        f16 in proptest::bool::ANY,
        blocked in proptest::bool::ANY,
    ) {
        let dtype = if f16 { bet_format::ValueDtype::F16 } else { bet_format::ValueDtype::F32 };
        let layout = if blocked { bet_format::ValueLayout::Blocked8 } else { bet_format::ValueLayout::RowMajor };
        let file = bet_format::testing::random_input_file(n_users, n_items, d_max, layers, seed, dtype, layout).unwrap();
        let (bytes, offsets, items) = (file.bytes, file.user_offsets, file.items);
        let bytes = AlignedBytes::new(&bytes);
        let file = BetFile::new_checked(bytes.as_ref()).unwrap();
        let g = file.graph().unwrap();
        proptest::prop_assert_eq!((g.layers, g.user_offsets, g.items), (layers, &offsets[..], &items[..]));
        let reference = reference_final_vectors(&file);
        let magnitude = reference_propagation(&file, f64::abs);
        let mut model = Model::new(bytes.clone()).unwrap();
        model.propagate().unwrap();
        let mut scores = vec![0.0f32; n_items];
        for u in 0..n_users {
            model.scores(u as u32, &mut scores).unwrap();
            for (i, &got) in scores.iter().enumerate() {
                let want: f64 = reference[u].iter().zip(&reference[n_users + i]).map(|(a, b)| a * b).sum();
                let scale: f64 = magnitude[u].iter().zip(&magnitude[n_users + i]).map(|(a, b)| a * b).sum();
                proptest::prop_assert!((f64::from(got) - want).abs() <= 1e-5 * scale.max(1e-3), "user {} item {}: {} vs {}", u, i, got, want);
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(config())]
    /// `top_k_batch` over propagated vectors ranks several users per pass over the items: with
    /// either kernel, every user's answer (bits, count) is the one-user `top_k`'s, whatever the
    /// filters (exclusions, bitset and sorted allow-lists), the batch length (partial last pass,
    /// repeated users) and `k`; a user out of range gives the one-user error, after the users
    /// before it are answered.
    #[test]
    fn batches_over_propagated_vectors_answer_as_one_user_at_a_time(
        n_users in 1usize..24,
        n_items in 1usize..40,
        d_max in 1u32..40,
        seed in 0u64..1_000_000,
        k in 0usize..45,
        batch in proptest::collection::vec(0u32..24, 0..40),
        bad_at in proptest::option::of(0usize..40),
    ) {
        let file = bet_format::testing::random_input_file(
            n_users, n_items, d_max, 3, seed, bet_format::ValueDtype::F32, bet_format::ValueLayout::RowMajor,
        ).unwrap();
        let bytes = AlignedBytes::new(&file.bytes);
        let mut users: Vec<u32> = batch.iter().map(|&u| u % n_users as u32).collect();
        if let Some(j) = bad_at.filter(|&j| j < users.len()) {
            users[j] = n_users as u32; // out of range
        }
        // Per position: exclusions of every third item from a user-dependent start; every fourth
        // position a bitset allow-list, every seventh a sorted allow-list.
        let exclusions: Vec<Vec<u32>> =
            users.iter().map(|&u| (u as usize % 3..n_items).step_by(3).map(|i| i as u32).collect()).collect();
        let bits: Vec<u64> = vec![0xA5A5_5A5A_F0F0_0F0F; n_items.div_ceil(64)];
        let allowed: Vec<u32> = (0..n_items as u32).filter(|i| i % 2 == 0).collect();
        let filter_of = |j: usize| Filter {
            exclude: Some(ItemSet::Sorted(&exclusions[j])),
            allow: match j {
                j if j % 4 == 1 => Some(ItemSet::Bits(&bits)),
                j if j % 7 == 2 => Some(ItemSet::Sorted(&allowed)),
                _ => None,
            },
        };
        let kk = k.min(n_items);
        for kernel in [bet_runtime::Kernel::Portable, bet_runtime::Kernel::Avx2F16c] {
            if !kernel.is_supported() {
                continue;
            }
            let mut model = Model::new(bytes.clone()).unwrap();
            model.set_kernel(kernel).unwrap();
            model.propagate().unwrap();
            let mut out = vec![Scored::EMPTY; users.len() * kk];
            let mut counts = vec![usize::MAX; users.len()];
            let got = model.top_k_batch(&users, k, |j, _| filter_of(j), &mut out, &mut counts);
            let mut one = vec![Scored::EMPTY; kk];
            for (j, &user) in users.iter().enumerate() {
                match model.top_k(user, k, &filter_of(j), &mut one) {
                    Ok(n) => {
                        proptest::prop_assert_eq!(counts[j], n, "{:?} position {} user {}", kernel, j, user);
                        let (a, b) = (&out[j * kk..j * kk + n], &one[..n]);
                        let bits = |s: &[Scored]| s.iter().map(|s| (s.index, s.score.to_bits())).collect::<Vec<_>>();
                        proptest::prop_assert_eq!(bits(a), bits(b), "{:?} position {} user {}", kernel, j, user);
                    }
                    Err(e) => {
                        proptest::prop_assert_eq!(got, Err(e), "{:?}: the batch stops with the first error", kernel);
                        break;
                    }
                }
            }
            if users.iter().all(|&u| (u as usize) < n_users) {
                proptest::prop_assert!(got.is_ok());
            }
        }
    }
}
