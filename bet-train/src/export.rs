//! Export: a trained model as a `.bet` file, and the parity check that what is shipped is what
//! was measured.
//!
//! [`write_model`] lays out a backbone's [`ExportTables`] (each entity's first `width` values of
//! its final vector; NCF's two tables and dense weights) with the writer of `bet-format`:
//! rows widest first and blocked by 8 (the runtime's fast layout), `f32` or `f16` values, the
//! exact budget, both id maps when the data had external ids, and the provenance with the
//! measured metrics.
//!
//! [`parity`] then opens the file with `bet-runtime` and compares it with the trainer: every
//! score of the given users, each user's top 20, and the metrics recomputed from the runtime's
//! own top-k (through [`evaluate_runtime`]).
//!
//! ```no_run
//! # fn demo(model: &dyn bet_train::backbone::Backbone, data: &bet_train::data::Dataset,
//! #         split: &bet_train::split::Split) -> bet_train::Result<()> {
//! use bet_train::export::{ExportSettings, parity, write_model};
//! let settings = ExportSettings { keep: None, seed: 1, threads: 2, dtype: bet_format::ValueDtype::F32 };
//! let bytes = write_model(model, data, split, &settings, None, None)?;
//! let runtime = bet_runtime::Model::new(bet_format::AlignedBytes::new(&bytes))?;
//! let report = parity(&*model.scorer(), &runtime, split, bet_train::eval::Target::Test, None)?;
//! assert!(report.max_abs_diff <= 1e-5 * report.max_abs_score.max(1.0));
//! # Ok(()) }
//! ```

use bet_format::{
    Decimal, GraphInput, ModelContents, NcfInput, Provenance, Quality, StorageOrder, TableInput, ValueDtype,
    ValueLayout,
};
use bet_runtime::{Filter, ItemSet, Model, Scored};
use rayon::prelude::*;

use crate::Result;
use crate::backbone::{Backbone, ExportTables};
use crate::data::Dataset;
use crate::eval::{DenseScorer, Metrics, Scorer, Target, evaluate, top_ranked, user_metrics_of};
use crate::graph::Adjacency;
use crate::lightgcn::{LightGcn, Placement};
use crate::ncf::{Ncf, NcfProjections};
use crate::split::Split;

/// The trainer's name and version, as exported files and JSON reports record it.
pub const TRAINER_VERSION: &str = concat!("bet ", env!("CARGO_PKG_VERSION"));

/// The git commit the trainer was built from (`build.rs`); empty when unknown, never made up.
pub const GIT_COMMIT: &str = match option_env!("BET_GIT_COMMIT") {
    Some(commit) => commit,
    None => "",
};

/// How to write a file.
#[derive(Clone, Copy, Debug)]
pub struct ExportSettings {
    /// The kept fraction the model was trained under (`None`: unbudgeted).
    pub keep: Option<Decimal>,
    /// The run's seed (provenance).
    pub seed: u64,
    /// The run's thread count (provenance).
    pub threads: u32,
    /// Storage dtype of the embedding values.
    pub dtype: ValueDtype,
}

fn quality(m: &Metrics) -> Quality {
    Quality {
        recall: [m.recall[0] as f32, m.recall[1] as f32, m.recall[2] as f32],
        ndcg: [m.ndcg[0] as f32, m.ndcg[1] as f32, m.ndcg[2] as f32],
    }
}

/// Users on which [`ship`] compares the file with the trainer's evaluation of the shipped values.
pub const SHIP_PARITY_USERS: usize = 2000;

/// What [`ship`] wrote and measured.
#[derive(Clone, Debug)]
pub struct Shipped {
    /// Size of the file written.
    pub bytes: usize,
    /// Validation metrics, measured on the file by `bet-runtime` (recorded in its metadata).
    pub validation: Metrics,
    /// Test metrics, measured on the file by `bet-runtime` (recorded in its metadata).
    pub test: Metrics,
    /// The file against the trainer scoring exactly the shipped values, on the first
    /// [`SHIP_PARITY_USERS`] users' test targets.
    pub parity: Parity,
}

/// Ships `model`: writes its `.bet` file, measures validation and test on that file with
/// `bet-runtime`, compares the file with the trainer's evaluation of the shipped values
/// ([`shipped_scorer`], [`parity`]), then writes the file again with the measured metrics in its
/// metadata, atomically, to `out`. What is shipped is what was measured: the metrics returned are
/// the file's, never the in-memory model's. LightGCN's `input` placement (the paper's) ships its
/// ego rows and training graph, and is measured after the runtime propagates them; a model that
/// cannot be exported (NGCF's `input` placement) is refused before anything is written.
pub fn ship(
    model: &dyn Backbone,
    data: &Dataset,
    split: &Split,
    settings: &ExportSettings,
    out: &std::path::Path,
) -> Result<Shipped> {
    // Refuses NGCF's input placement before anything is written.
    let tables = model.export_tables()?;
    let draft = write_tables(&tables, data, split, settings, None, None)?;
    let mut runtime = Model::new(bet_format::AlignedBytes::new(&draft))?;
    runtime.propagate()?; // an `input` file's vectors, as a device computes them; else nothing

    let validation = evaluate_runtime(&runtime, split, Target::Validation, None)?;
    let test = evaluate_runtime(&runtime, split, Target::Test, None)?;
    let check_users: Vec<u32> = (0..split.n_users.min(SHIP_PARITY_USERS) as u32).collect();
    let shipped = shipped_scorer(&tables, settings.dtype);
    let parity = parity(&*shipped, &runtime, split, Target::Test, Some(&check_users))?;
    // A refit model trained on validation: it has no validation figure to record.
    let recorded = (validation.users > 0).then_some(&validation);
    let bytes = write_tables(&tables, data, split, settings, recorded, Some(&test))?;
    bet_format::write_atomic(out, &bytes)?;
    Ok(Shipped { bytes: bytes.len(), validation, test, parity })
}

/// The bytes of the `.bet` file of `model`, trained on `split` of `data`; `validation` and `test`
/// are the metrics to record (measured on the file, see [`parity`]).
pub fn write_model(
    model: &dyn Backbone,
    data: &Dataset,
    split: &Split,
    settings: &ExportSettings,
    validation: Option<&Metrics>,
    test: Option<&Metrics>,
) -> Result<Vec<u8>> {
    write_tables(&model.export_tables()?, data, split, settings, validation, test)
}

/// [`write_model`] from tables already taken out of the model (they cost a propagation for the
/// graph models, so [`ship`] takes them once for its two writes and its parity check).
fn write_tables(
    tables: &ExportTables,
    data: &Dataset,
    split: &Split,
    settings: &ExportSettings,
    validation: Option<&Metrics>,
    test: Option<&Metrics>,
) -> Result<Vec<u8>> {
    let user_ids: Vec<&[u8]> = data.user_ids.iter().map(|s| s.as_bytes()).collect();
    let item_ids: Vec<&[u8]> = data.item_ids.iter().map(|s| s.as_bytes()).collect();
    let with_ids = !user_ids.is_empty() && user_ids.len() == split.n_users && item_ids.len() == split.n_items;
    let split_name = split.name();
    let contents = ModelContents {
        model: tables.model,
        placement: tables.placement,
        d_max: tables.d_max,
        users: TableInput { widths: &tables.user_widths, values: &tables.user_values },
        items: TableInput { widths: &tables.item_widths, values: &tables.item_values },
        ncf: tables.ncf.as_ref().map(|(ug, ig, dense)| NcfInput { user_gmf: ug, item_gmf: ig, dense }),
        keep: settings.keep,
        provenance: Provenance {
            dataset: &data.name,
            dataset_sha256: data.sha256,
            split: &split_name,
            seed: settings.seed,
            threads: settings.threads,
            trainer_version: TRAINER_VERSION,
            git_commit: GIT_COMMIT,
            validation: validation.map(quality),
            test: test.map(quality),
        },
        value_dtype: settings.dtype,
        storage: StorageOrder::WidthDescending,
        value_layout: ValueLayout::Blocked8,
        user_ids: if with_ids { Some(&user_ids) } else { None },
        item_ids: if with_ids { Some(&item_ids) } else { None },
        graph: tables.graph.as_ref().map(|g| GraphInput {
            layers: g.layers,
            user_offsets: &g.user_offsets,
            items: &g.items,
        }),
    };
    Ok(contents.to_bytes()?)
}

/// The trainer's scorer of exactly what a file stores: the export tables with their values
/// rounded to the file's dtype (f16: round to nearest even, as the writer does), zero past each
/// width. NCF keeps its dense weights (stored as f32).
pub fn shipped_scorer(tables: &ExportTables, dtype: ValueDtype) -> Box<dyn Scorer + Send> {
    let round = |v: &[f32]| -> Vec<f32> {
        match dtype {
            ValueDtype::F16 => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
            _ => v.to_vec(),
        }
    };
    let width = match tables.model {
        bet_format::ModelKind::Ngcf => 4 * tables.d_max as usize,
        _ => tables.d_max as usize,
    };
    let pad = |widths: &[u32], values: &[f32]| -> Vec<f32> {
        let values = round(values);
        let mut out = vec![0.0f32; widths.len() * width];
        let mut at = 0;
        for (row, &w) in out.chunks_mut(width.max(1)).zip(widths) {
            row[..w as usize].copy_from_slice(&values[at..at + w as usize]);
            at += w as usize;
        }
        out
    };
    let (nu, ni) = (tables.user_widths.len(), tables.item_widths.len());
    let users = pad(&tables.user_widths, &tables.user_values);
    let items = pad(&tables.item_widths, &tables.item_values);
    if let Some(graph) = &tables.graph {
        // The stored ego rows propagated over the stored graph, by the trainer's own forward pass.
        let adj = Adjacency::lightgcn_from_user_items(nu, ni, &graph.user_offsets, &graph.items);
        let model = LightGcn {
            n_users: nu,
            n_items: ni,
            d: width,
            layers: graph.layers as usize,
            placement: Placement::Input,
            widths: tables.user_widths.iter().chain(&tables.item_widths).copied().collect(),
            ego: [users, items].concat(),
        };
        let finals = model.forward(&adj).output;
        let (u, i) = finals.split_at(nu * width);
        return Box::new(DenseScorer::new(
            ndarray::Array2::from_shape_vec((nu, width), u.to_vec())
                .unwrap_or_else(|_| ndarray::Array2::zeros((nu, width))),
            ndarray::Array2::from_shape_vec((ni, width), i.to_vec())
                .unwrap_or_else(|_| ndarray::Array2::zeros((ni, width))),
        ));
    }
    match &tables.ncf {
        None => Box::new(DenseScorer::new(
            ndarray::Array2::from_shape_vec((nu, width), users).unwrap_or_else(|_| ndarray::Array2::zeros((nu, width))),
            ndarray::Array2::from_shape_vec((ni, width), items).unwrap_or_else(|_| ndarray::Array2::zeros((ni, width))),
        )),
        Some((user_gmf, item_gmf, dense)) => {
            let d = width;
            let (w1, rest) = dense.split_at(2 * d * d);
            let (b1, rest) = rest.split_at(d);
            let (w_out, b_out) = rest.split_at(2 * d);
            let model = Ncf {
                n_users: nu,
                n_items: ni,
                d,
                widths: tables.user_widths.iter().chain(&tables.item_widths).copied().collect(),
                tensors: vec![
                    users,
                    items,
                    pad(&tables.user_widths, user_gmf),
                    pad(&tables.item_widths, item_gmf),
                    w1.to_vec(),
                    b1.to_vec(),
                    w_out.to_vec(),
                    b_out.to_vec(),
                ],
            };
            let projections = model.projections();
            Box::new(ShippedNcf { model, projections })
        }
    }
}

struct ShippedNcf {
    model: Ncf<f32>,
    projections: NcfProjections<f32>,
}

impl Scorer for ShippedNcf {
    fn n_items(&self) -> usize {
        self.model.n_items
    }
    fn score_users(&self, users: &[u32], out: &mut [f32]) {
        self.model.score_users_with(&self.projections, users, out);
    }
}

/// What [`parity`] measured.
#[derive(Clone, Debug)]
pub struct Parity {
    /// Largest |trainer score − runtime score| over the users checked and all items.
    pub max_abs_diff: f64,
    /// Largest |trainer score| seen.
    pub max_abs_score: f64,
    /// Users whose top 20 (excluded items removed) is the same list, in the same order, in both.
    pub same_top20: usize,
    /// Users whose top 20 is the same set of items in both (order aside, as Recall@20 sees it).
    pub same_top20_set: usize,
    /// Users whose two top-20 lists differ only by near-ties: at every rank the two items'
    /// trainer scores lie within twice that user's largest score difference. Whatever the
    /// rounding (an f16 file against the f32 model), a correct top-k over the runtime's own
    /// scores always passes this, since a k-th largest value moves by at most the largest
    /// perturbation; a list that fails it was ranked wrongly or filtered wrongly.
    pub same_top20_within_error: usize,
    /// Users checked.
    pub users: usize,
    /// Metrics of the trainer's scores.
    pub trainer: Metrics,
    /// Metrics recomputed from the runtime's top-k.
    pub runtime: Metrics,
}

impl Parity {
    /// The runtime reproduces the scorer it was compared with: Recall@k and NDCG@k equal within
    /// 1e-6, and at least 99.9% of top-20 lists identical (only exact score ties may order
    /// differently). Meant for a scorer of the shipped values ([`shipped_scorer`]).
    pub fn agrees(&self) -> bool {
        let close = |a: [f64; 3], b: [f64; 3]| a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-6);
        close(self.trainer.recall, self.runtime.recall)
            && close(self.trainer.ndcg, self.runtime.ndcg)
            && self.same_top20 * 1000 >= self.users * 999
    }
}

/// User `u`'s excluded items, sorted: the training items, plus the validation items when
/// scoring test. Validation needs no copy (the training list is sorted already); for test the
/// two sorted lists are merged into `buffer`, reused across users.
fn excluded<'a>(split: &'a Split, target: Target, u: usize, buffer: &'a mut Vec<u32>) -> &'a [u32] {
    let train = split.train.of(u);
    if target == Target::Validation {
        return train;
    }
    let validation = split.validation.of(u);
    buffer.clear();
    let (mut a, mut b) = (0, 0);
    while a < train.len() || b < validation.len() {
        let next = match (train.get(a), validation.get(b)) {
            (Some(&x), Some(&y)) if x == y => {
                a += 1;
                b += 1;
                x
            }
            (Some(&x), Some(&y)) if x < y => {
                a += 1;
                x
            }
            (Some(&x), None) => {
                a += 1;
                x
            }
            (_, Some(&y)) => {
                b += 1;
                y
            }
            (None, None) => break,
        };
        // Each item once, even if a list repeats it (as the sort-and-dedup this replaces).
        if buffer.last() != Some(&next) {
            buffer.push(next);
        }
    }
    buffer
}

/// Metrics of `target` from the runtime's `top_k` (k = 20) with the user's excluded items.
pub fn evaluate_runtime<B: AsRef<[u8]> + Sync>(
    runtime: &Model<B>,
    split: &Split,
    target: Target,
    users: Option<&[u32]>,
) -> Result<Metrics> {
    let all: Vec<u32> = (0..split.n_users as u32).collect();
    let users = users.unwrap_or(&all);
    let held_out = match target {
        Target::Validation => &split.validation,
        Target::Test => &split.test,
    };
    let kk = 20.min(split.n_items);
    // Blocks of users through `top_k_batch` (an `input` file's dense vectors are then read once
    // per pass of several users); the per-user figures are added in user order, as before.
    let per_block: Vec<Vec<Option<[f64; 6]>>> = users
        .par_chunks(64)
        .map(|block| -> Result<Vec<Option<[f64; 6]>>> {
            let ranked: Vec<u32> = block.iter().copied().filter(|&u| !held_out.of(u as usize).is_empty()).collect();
            let mut buffer = Vec::new();
            let exclusions: Vec<Vec<u32>> =
                ranked.iter().map(|&u| excluded(split, target, u as usize, &mut buffer).to_vec()).collect();
            let mut out = vec![Scored::EMPTY; ranked.len() * kk];
            let mut counts = vec![0usize; ranked.len()];
            let filter_of = |j: usize, _| Filter { exclude: Some(ItemSet::Sorted(&exclusions[j])), allow: None };
            runtime.top_k_batch(&ranked, kk, filter_of, &mut out, &mut counts)?;
            let mut j = 0; // position in `ranked`
            let mut metrics = Vec::with_capacity(block.len());
            for &u in block {
                let positives = held_out.of(u as usize);
                if positives.is_empty() {
                    metrics.push(None);
                    continue;
                }
                let top = out.get(j * kk..j * kk + counts[j]).unwrap_or(&[]);
                let indices: Vec<u32> = top.iter().map(|s| s.index).collect();
                metrics.push(Some(user_metrics_of(&indices, positives)));
                j += 1;
            }
            Ok(metrics)
        })
        .collect::<Result<_>>()?;
    let mut sums = crate::eval::MetricSums::default();
    for m in per_block.into_iter().flatten() {
        sums.add_user(m);
    }
    Ok(sums.means())
}

/// Compares a trainer scorer (the model itself, or [`shipped_scorer`] of its export) with the
/// runtime reading the file, on `users` (all by default).
pub fn parity<B: AsRef<[u8]> + Sync>(
    scorer: &(dyn Scorer + '_),
    runtime: &Model<B>,
    split: &Split,
    target: Target,
    users: Option<&[u32]>,
) -> Result<Parity> {
    let all: Vec<u32> = (0..split.n_users as u32).collect();
    let users = users.unwrap_or(&all);
    let n_items = split.n_items;
    let per_block: Vec<(f64, f64, [usize; 3])> = users
        .par_chunks(64)
        .map(|block| -> Result<(f64, f64, [usize; 3])> {
            let mut trainer = vec![0.0f32; block.len() * n_items];
            scorer.score_users(block, &mut trainer);
            let mut device = vec![0.0f32; n_items];
            let mut buffer = Vec::new();
            let (mut diff, mut max_abs, mut same) = (0.0f64, 0.0f64, [0usize; 3]);
            for (row, &u) in trainer.chunks_exact_mut(n_items.max(1)).zip(block) {
                runtime.scores(u, &mut device)?;
                let (mut user_diff, mut user_max) = (0.0f64, 0.0f64);
                for (&a, &b) in row.iter().zip(&device) {
                    user_diff = user_diff.max(f64::from((a - b).abs()));
                    user_max = user_max.max(f64::from(a.abs()));
                }
                diff = diff.max(user_diff);
                max_abs = max_abs.max(user_max);
                let filter = Filter {
                    exclude: Some(ItemSet::Sorted(excluded(split, target, u as usize, &mut buffer))),
                    allow: None,
                };
                let mut out = [Scored::EMPTY; 20];
                let n = runtime.top_k(u, 20, &filter, &mut out)?;
                let device_top: Vec<u32> = out[..n].iter().map(|s| s.index).collect();
                let extra: &[u32] = if target == Target::Test { split.validation.of(u as usize) } else { &[] };
                let trainer_top = top_ranked(row, [split.train.of(u as usize), extra]);
                same[0] += usize::from(device_top == trainer_top);
                // Near-ties: rank by rank, the trainer's scores of the two lists' items differ by at
                // most twice the user's largest score difference (plus a few ulps, as the
                // runtime's top-k may sum in another order than its `scores`).
                let slack = 2.0 * user_diff + 4.0 * f64::from(f32::EPSILON) * user_max.max(1.0);
                let score = |i: u32| row.get(i as usize).map_or(f64::NAN, |&s| f64::from(s));
                let near = device_top.len() == trainer_top.len()
                    && device_top.iter().zip(&trainer_top).all(|(&a, &b)| (score(a) - score(b)).abs() <= slack);
                same[2] += usize::from(near);
                let (mut a, mut b) = (device_top, trainer_top);
                a.sort_unstable();
                b.sort_unstable();
                same[1] += usize::from(a == b);
            }
            Ok((diff, max_abs, same))
        })
        .collect::<Result<_>>()?;
    let (mut max_abs_diff, mut max_abs_score, mut same) = (0.0f64, 0.0f64, [0usize; 3]);
    for (d, m, s) in per_block {
        max_abs_diff = max_abs_diff.max(d);
        max_abs_score = max_abs_score.max(m);
        for (total, part) in same.iter_mut().zip(s) {
            *total += part;
        }
    }
    let [same_top20, same_top20_set, same_top20_within_error] = same;
    let trainer = evaluate(scorer, split, target, Some(users));
    let runtime_metrics = evaluate_runtime(runtime, split, target, Some(users))?;
    Ok(Parity {
        max_abs_diff,
        max_abs_score,
        same_top20,
        same_top20_set,
        same_top20_within_error,
        users: users.len(),
        trainer,
        runtime: runtime_metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The merge equals sorting and deduplicating the concatenation, for every user of a split.
    #[test]
    fn excluded_items_are_the_sorted_union() {
        let pairs: Vec<(u32, u32)> =
            (0..40u32).flat_map(|u| (0..12u32).map(move |k| (u % 7, (u * 5 + k * 3) % 19))).collect();
        let data = crate::data::Dataset::from_pairs("t", 7, 19, &pairs);
        let split = Split::new(&data, crate::split::Protocol::Paper, 3).unwrap();
        let mut buffer = vec![99];
        let mut merged = 0;
        for u in 0..split.n_users {
            assert_eq!(excluded(&split, Target::Validation, u, &mut buffer), split.train.of(u));
            let mut want = [split.train.of(u), split.validation.of(u)].concat();
            want.sort_unstable();
            want.dedup();
            merged += usize::from(!split.validation.of(u).is_empty());
            assert_eq!(excluded(&split, Target::Test, u, &mut buffer), &want[..], "user {u}");
        }
        assert!(merged > 0, "the case has validation items to merge");
    }
}
