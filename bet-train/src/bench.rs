//! `bet bench topk`: the runtime's speed on a Gowalla-sized file, beside dense baselines.
//!
//! Everything the goals compare is measured in one run: one-user top-20 (warm, and cold by
//! rotating over more distinct files than the last-level cache holds), a batch of 1,024 users,
//! open + validate, the same work on a dense f32 table with ndarray `.dot`, and single-core
//! read bandwidth, from which the floor (bytes a query must read / bandwidth) is computed.
//! Medians are reported; machines here are shared and noisy, so quote ratios.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bet_format::{AlignedBytes, Decimal, ValueDtype};
use bet_runtime::{Filter, ItemSet, Kernel, Model, Scored};
use ndarray::{Array1, Array2};
use serde_json::json;

use crate::synthetic::{SplitMix, SyntheticModel, zipf_frequencies};

/// Options of `bet bench topk`.
#[derive(Debug, Clone)]
pub struct TopkOptions {
    /// Gowalla directory (`train.txt`): real popularity and real training exclusions.
    pub data: Option<PathBuf>,
    /// Queries per warm/cold measurement.
    pub queries: usize,
    /// Megabytes of distinct files to rotate over for the cold measurement.
    pub cold_megabytes: usize,
    /// Kernel to use (`None`: detect).
    pub kernel: Option<Kernel>,
}

/// The Gowalla numbers, used when no data directory is given.
pub const GOWALLA_USERS: usize = 29_858;
/// Items in Gowalla.
pub const GOWALLA_ITEMS: usize = 40_981;

/// Per-user training item lists (sorted) of the LightGCN directory holding `path` (`train.txt`).
pub fn read_lightgcn_lists(path: &Path) -> crate::Result<Vec<Vec<u32>>> {
    let data = crate::data::load_lightgcn(path.parent().unwrap_or(Path::new(".")))?;
    let mut lists: Vec<Vec<u32>> = vec![vec![]; data.n_users];
    for it in data.interactions.iter().filter(|it| it.part == crate::data::Part::Train) {
        lists[it.user as usize].push(it.item);
    }
    for l in &mut lists {
        l.sort_unstable();
    }
    Ok(lists)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

fn time<R>(f: impl FnOnce() -> R) -> (f64, R) {
    let t = Instant::now();
    let r = f();
    (t.elapsed().as_secs_f64(), r)
}

/// Single-core read bandwidth in bytes/s: best of 5 sums over a 512 MiB buffer.
pub fn read_bandwidth() -> f64 {
    let words = 64 << 20; // 512 MiB of u64
    let buf: Vec<u64> = (0..words as u64).collect();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let (t, s) = time(|| {
            let mut acc = [0u64; 8];
            for c in buf.chunks_exact(8) {
                for (a, x) in acc.iter_mut().zip(c) {
                    *a = a.wrapping_add(*x);
                }
            }
            acc.iter().fold(0u64, |a, b| a.wrapping_add(*b))
        });
        black_box(s);
        best = best.min(t);
    }
    (words * 8) as f64 / best
}

struct Workload {
    users: Vec<u32>,
    exclusions: Vec<Vec<u32>>,
    user_freq: Vec<u32>,
    item_freq: Vec<u32>,
    source: String,
}

fn workload(opts: &TopkOptions) -> crate::Result<Workload> {
    match &opts.data {
        Some(dir) => {
            let mut lists = read_lightgcn_lists(&dir.join("train.txt"))?;
            let n_items = lists.iter().flatten().map(|&i| i as usize + 1).max().unwrap_or(0).max(GOWALLA_ITEMS);
            lists.resize(lists.len().max(GOWALLA_USERS), vec![]);
            let mut item_freq = vec![0u32; n_items];
            for &i in lists.iter().flatten() {
                item_freq[i as usize] += 1;
            }
            let user_freq = lists.iter().map(|l| l.len() as u32).collect();
            let mut rng = SplitMix(7);
            let users = (0..opts.queries).map(|_| (rng.next_u64() % lists.len() as u64) as u32).collect();
            Ok(Workload {
                users,
                exclusions: lists,
                user_freq,
                item_freq,
                source: format!("{} (train.txt)", dir.display()),
            })
        }
        None => {
            let mut rng = SplitMix(7);
            let users = (0..opts.queries).map(|_| (rng.next_u64() % GOWALLA_USERS as u64) as u32).collect();
            Ok(Workload {
                users,
                exclusions: vec![vec![]; GOWALLA_USERS],
                user_freq: zipf_frequencies(GOWALLA_USERS, 1),
                item_freq: zipf_frequencies(GOWALLA_ITEMS, 2),
                source: "synthetic Zipf popularity, no exclusions".into(),
            })
        }
    }
}

fn dense_topk(t: &Array2<f32>, u: &Array1<f32>, exclude: &[u32], k: usize) -> Vec<u32> {
    let mut s = t.dot(u);
    for &i in exclude {
        s[i as usize] = f32::NEG_INFINITY;
    }
    let mut idx: Vec<u32> = (0..s.len() as u32).collect();
    idx.select_nth_unstable_by(k, |&a, &b| s[b as usize].total_cmp(&s[a as usize]));
    idx.truncate(k);
    idx.sort_by(|&a, &b| s[b as usize].total_cmp(&s[a as usize]));
    idx
}

/// Runs the benchmark and returns its JSON report (also printed line by line as it goes).
pub fn run_topk(opts: &TopkOptions) -> crate::Result<serde_json::Value> {
    const K: usize = 20;
    let w = workload(opts)?;
    let n_items = w.item_freq.len();
    crate::out!("workload: {} users x {} items, {} queries, {}", w.user_freq.len(), n_items, w.users.len(), w.source);
    let bandwidth = read_bandwidth();
    crate::out!("single-core read bandwidth: {:.2} GB/s", bandwidth / 1e9);

    // Dense baseline: f32 table, ndarray .dot (one thread: matrixmultiply's gemv does not thread).
    let mut rng = SplitMix(11);
    let table = Array2::from_shape_simple_fn((n_items, 128), || rng.symmetric() * 0.1);
    let user_table = Array2::from_shape_simple_fn((w.user_freq.len(), 128), || rng.symmetric() * 0.1);
    for &u in w.users.iter().take(50) {
        black_box(dense_topk(&table, &user_table.row(u as usize).to_owned(), &w.exclusions[u as usize], K));
    }
    let dense_one = median(
        w.users
            .iter()
            .map(|&u| {
                let uv = user_table.row(u as usize).to_owned();
                time(|| black_box(dense_topk(&table, &uv, &w.exclusions[u as usize], K))).0
            })
            .collect(),
    );
    crate::out!("dense f32 ndarray .dot one-user top-{K}: median {:.1} us", dense_one * 1e6);
    let batch_users: Vec<u32> = w.users.iter().copied().take(1024).collect();
    let dense_batch = median(
        (0..3)
            .map(|_| {
                time(|| {
                    let ub = Array2::from_shape_fn((batch_users.len(), 128), |(r, c)| {
                        user_table[[batch_users[r] as usize, c]]
                    });
                    let mut s = ub.dot(&table.t());
                    let mut tops = Vec::with_capacity(batch_users.len());
                    for (r, &u) in batch_users.iter().enumerate() {
                        let mut row = s.row_mut(r);
                        for &i in &w.exclusions[u as usize] {
                            row[i as usize] = f32::NEG_INFINITY;
                        }
                        let mut idx: Vec<u32> = (0..n_items as u32).collect();
                        idx.select_nth_unstable_by(K, |&a, &b| row[b as usize].total_cmp(&row[a as usize]));
                        idx.truncate(K);
                        tops.push(idx);
                    }
                    black_box(tops)
                })
                .0
            })
            .collect(),
    );
    crate::out!("dense f32 ndarray batch of {}: median {:.1} ms", batch_users.len(), dense_batch * 1e3);

    let mut budgets = vec![];
    for keep_text in ["0.1", "0.05"] {
        let keep = Decimal::parse(keep_text)?;
        let synthetic = SyntheticModel::budgeted(&w.user_freq, &w.item_freq, 128, keep, 5)?;
        let bytes = synthetic.to_bytes(ValueDtype::F16, "gowalla-sized synthetic")?;
        let aligned = AlignedBytes::new(&bytes);
        let mut model = Model::new(aligned.as_bytes())?;
        if let Some(k) = opts.kernel {
            model.set_kernel(k)?;
        }
        let file = model.file()?;
        let item_bytes = file.items().values().len() as u64 * 2;
        let floor = item_bytes as f64 / bandwidth;
        let mut out = [Scored::EMPTY; K];

        let query = |m: &Model<&[u8]>, u: u32, out: &mut [Scored]| {
            let ex = &w.exclusions[u as usize];
            let filter = Filter { exclude: Some(ItemSet::Sorted(ex)), allow: None };
            m.top_k(u, K, &filter, out).map(black_box)
        };
        for &u in w.users.iter().take(200) {
            query(&model, u, &mut out)?;
        }
        let warm = median(w.users.iter().map(|&u| time(|| query(&model, u, &mut out)).0).collect());

        // Cold: rotate over distinct copies totalling more than the last-level cache.
        let copies = (opts.cold_megabytes << 20).div_ceil(bytes.len()).max(2);
        let buffers: Vec<AlignedBytes> = (0..copies).map(|_| AlignedBytes::new(&bytes)).collect();
        let mut models = buffers.iter().map(|b| Model::new(b.as_bytes())).collect::<Result<Vec<_>, _>>()?;
        if let Some(k) = opts.kernel {
            for m in &mut models {
                m.set_kernel(k)?;
            }
        }
        let cold = median(
            w.users.iter().enumerate().map(|(q, &u)| time(|| query(&models[q % copies], u, &mut out)).0).collect(),
        );

        let mut batch_out = vec![Scored::EMPTY; batch_users.len() * K];
        let mut counts = vec![0usize; batch_users.len()];
        let batch = median(
            (0..5)
                .map(|_| {
                    time(|| {
                        model.top_k_batch(
                            &batch_users,
                            K,
                            |_, u| Filter { exclude: Some(ItemSet::Sorted(&w.exclusions[u as usize])), allow: None },
                            &mut batch_out,
                            &mut counts,
                        )
                    })
                    .0
                })
                .collect(),
        );
        let open = median(
            (0..21).map(|_| time(|| black_box(Model::new(aligned.as_bytes()).map(|m| m.summary()))).0).collect(),
        );
        let open_crc = median(
            (0..11)
                .map(|_| time(|| black_box(Model::new(aligned.as_bytes()).and_then(|m| m.verify_checksums()))).0)
                .collect(),
        );
        let s = model.summary();
        crate::out!(
            "keep {keep_text} f16 ({:?} kernel): file {:.2} MB, item values {:.2} MB, limit {}, stored {}",
            model.kernel(),
            bytes.len() as f64 / 1e6,
            item_bytes as f64 / 1e6,
            s.budget.map_or(0, |b| b.limit),
            s.budget.map_or(0, |b| b.stored)
        );
        crate::out!(
            "  one-user top-{K}: warm {:.1} us, cold {:.1} us; floor {:.1} us (cold/floor {:.2}); {:.1}x faster than dense warm",
            warm * 1e6,
            cold * 1e6,
            floor * 1e6,
            cold / floor,
            dense_one / warm
        );
        crate::out!(
            "  batch of {}: {:.2} ms ({:.0} users/s; dense {:.1}x slower); open+validate {:.0} us, with CRCs {:.0} us",
            batch_users.len(),
            batch * 1e3,
            batch_users.len() as f64 / batch,
            dense_batch / batch,
            open * 1e6,
            open_crc * 1e6
        );
        budgets.push(json!({
            "keep": keep_text,
            "dtype": "f16",
            "kernel": format!("{:?}", model.kernel()),
            "file_bytes": bytes.len(),
            "item_value_bytes": item_bytes,
            "limit": s.budget.map(|b| b.limit),
            "stored": s.budget.map(|b| b.stored),
            "one_user_warm_us": warm * 1e6,
            "one_user_cold_us": cold * 1e6,
            "cold_copies": copies,
            "floor_us": floor * 1e6,
            "cold_over_floor": cold / floor,
            "speedup_vs_dense_warm": dense_one / warm,
            "batch_1024_ms": batch * 1e3,
            "open_validate_us": open * 1e6,
            "open_validate_crc_us": open_crc * 1e6,
        }));
    }
    Ok(json!({
        "schema": "bet-bench-topk/1",
        "workload": w.source,
        "queries": w.users.len(),
        "k": K,
        "read_bandwidth_gb_s": bandwidth / 1e9,
        "dense_ndarray_one_user_us": dense_one * 1e6,
        "dense_ndarray_batch_1024_ms": dense_batch * 1e3,
        "budgets": budgets,
    }))
}

/// `bet bench eval`: full-ranking evaluation (Recall/NDCG@5,10,20 on test, training and
/// validation items excluded) of every user of Gowalla's paper split with random 128-wide dense
/// vectors, the work `eval_torch.py` and `score_numpy.py` \[4\] time. Returns the median seconds.
pub fn run_eval(data_dir: &Path, repeats: usize) -> crate::Result<serde_json::Value> {
    use crate::eval::{DenseScorer, Target, evaluate};
    let data = crate::data::load(data_dir)?;
    let split = crate::split::Split::new(&data, crate::split::Protocol::Paper, 1)?;
    let mut rng = SplitMix(3);
    let users = Array2::from_shape_simple_fn((split.n_users, 128), || rng.symmetric() * 0.1);
    let items = Array2::from_shape_simple_fn((split.n_items, 128), || rng.symmetric() * 0.1);
    let scorer = DenseScorer::new(users, items);
    let mut times = vec![];
    let mut last = None;
    for _ in 0..repeats.max(1) {
        let (t, m) = time(|| evaluate(&scorer, &split, Target::Test, None));
        crate::out!(
            "full-ranking evaluation of {} users x {} items: {:.2} s (Recall@20 {:.4}, random vectors)",
            m.users,
            split.n_items,
            t,
            m.recall[2]
        );
        times.push(t);
        last = Some(m);
    }
    let threads = rayon::current_num_threads();
    let med = median(times.clone());
    crate::out!("median {med:.2} s over {} runs, {threads} threads", times.len());
    Ok(json!({
        "schema": "bet-bench-eval/1",
        "users": last.map_or(0, |m| m.users),
        "items": split.n_items,
        "threads": threads,
        "seconds": times,
        "median_seconds": med,
    }))
}

/// `bet bench train`: the time of one BPR step (sampling excluded) of a full-width backbone on a
/// dataset's paper split, the time of one epoch, and for LightGCN the step's distance from its
/// memory floor (the bytes its sparse products gather over the measured read bandwidth).
pub fn run_train(
    data_dir: &Path,
    kind: crate::backbone::BackboneKind,
    steps: usize,
    epoch: bool,
) -> crate::Result<serde_json::Value> {
    use crate::train::{Adam, Sampler, Schedule, epoch_steps};
    let data = crate::data::load(data_dir)?;
    let split = crate::split::Split::new(&data, crate::split::Protocol::Paper, 1)?;
    let n = split.n_users + split.n_items;
    let d = 128;
    let mut model = kind.build(&split, d, kind.placement(None)?, vec![128; n], 1)?;
    let mut adam: Vec<Adam> = model.tensor_shapes().iter().map(|&len| Adam::new(len)).collect();
    let sampler = Sampler::new(&split, 1);
    let reg = model.default_reg();
    let mut times = vec![];
    for step in 0..steps.max(1) + 1 {
        let batch = sampler.batch(&split, 10_000, step as u64);
        let (t, loss) = time(|| model.step(&batch, reg, &mut adam, Schedule::TRAIN.rate(step)));
        black_box(loss);
        if step > 0 {
            times.push(t); // the first step allocates the buffers
        }
    }
    let med = median(times.clone());
    let threads = rayon::current_num_threads();
    crate::out!(
        "{} step on {} ({} users, {} items, {} training pairs, batch 10,000, d 128): median {:.1} ms, min {:.1} ms \
         over {} steps, {threads} threads",
        kind.name(),
        data.name,
        split.n_users,
        split.n_items,
        split.train.len(),
        med * 1e3,
        times.iter().cloned().fold(f64::INFINITY, f64::min) * 1e3,
        times.len()
    );
    let mut out = json!({
        "schema": "bet-bench-train/1",
        "model": kind.name(),
        "dataset": data.name,
        "threads": threads,
        "step_seconds": times,
        "median_step_seconds": med,
    });
    if kind == crate::backbone::BackboneKind::LightGcn {
        // Six sparse products (3 forward, 3 backward) each gather one d-wide f32 row per
        // non-zero they visit: the last forward layer visits only the batch's rows, the first
        // backward product only sources in the batch (the same count, Â being symmetric).
        let nnz = 2 * split.train.len();
        let (user_freq, item_freq) = (split.user_frequency(), split.item_frequency());
        let batch = sampler.batch(&split, 10_000, 0);
        let mut in_batch = vec![false; n];
        for &(u, p, q) in &batch {
            for r in [u as usize, split.n_users + p as usize, split.n_users + q as usize] {
                in_batch[r] = true;
            }
        }
        let degree = |r: usize| if r < split.n_users { user_freq[r] } else { item_freq[r - split.n_users] } as usize;
        let batch_nnz: usize = (0..n).filter(|&r| in_batch[r]).map(degree).sum();
        let gathered = (4 * nnz + 2 * batch_nnz) as f64 * d as f64 * 4.0;
        let adam_bytes = (n * d) as f64 * 4.0 * 7.0; // read p, g, m, v; write p, m, v
        let bandwidth = read_bandwidth_threads();
        let floor = (gathered + adam_bytes) / bandwidth;
        crate::out!(
            "floor: {:.0} MB gathered by the products + {:.0} MB of Adam traffic at {:.1} GB/s measured read \
             bandwidth ({threads} threads) = {:.1} ms; the step is {:.1}x its floor",
            gathered / 1e6,
            adam_bytes / 1e6,
            bandwidth / 1e9,
            floor * 1e3,
            med / floor
        );
        out["floor_seconds"] = json!(floor);
        out["bandwidth_bytes_per_second"] = json!(bandwidth);
    }
    if epoch {
        let steps = epoch_steps(&split, 10_000);
        let (t, _) = time(|| {
            for step in 0..steps {
                let batch = sampler.batch(&split, 10_000, step as u64);
                black_box(model.step(&batch, reg, &mut adam, Schedule::TRAIN.rate(step)));
            }
        });
        crate::out!("one epoch ({steps} steps, sampling included): {t:.2} s");
        out["epoch_seconds"] = json!(t);
        out["epoch_steps"] = json!(steps);
    }
    Ok(out)
}

/// Read bandwidth with every worker thread of the pool: each sums its own part of a 1 GiB
/// buffer; best of 5.
pub fn read_bandwidth_threads() -> f64 {
    use rayon::prelude::*;
    let words = 128 << 20; // 1 GiB of u64
    let buf: Vec<u64> = (0..words as u64).collect();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let (t, s) = time(|| {
            buf.par_chunks(1 << 20)
                .map(|part| {
                    let mut acc = [0u64; 8];
                    for c in part.chunks_exact(8) {
                        for (a, x) in acc.iter_mut().zip(c) {
                            *a = a.wrapping_add(*x);
                        }
                    }
                    acc.iter().fold(0u64, |a, b| a.wrapping_add(*b))
                })
                .reduce(|| 0, u64::wrapping_add)
        });
        black_box(s);
        best = best.min(t);
    }
    (words * 8) as f64 / best
}
