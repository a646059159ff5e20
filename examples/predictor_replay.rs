//! How well the fitness predictor predicts, replayed on a finished search's evaluated actions.
//!
//! The search trains its predictor online as the reference does: after each evaluated action,
//! two updates, each on one pair drawn from all pairs so far. This replays a search's actions
//! and measured fitness from its record (no fine-tuning, nothing written) and, for several
//! numbers of updates per iteration, predicts each action *before* training on it, as the search
//! would have; it prints the Pearson and Spearman correlation of those predictions with the
//! measured fitness (iterations 5 on), and the search's own predictions for comparison.
//!
//! ```sh
//! cargo run --release -p bet-train --example predictor_replay -- DATASET_DIR SPARSITY SEED [CHECKPOINT_DIR]
//! # the full-protocol BET search of BENCHMARKS.md at 90%, seed 3:
//! cargo run --release -p bet-train --example predictor_replay -- ../shared/data/gowalla 0.9 3
//! ```
//!
//! The search's settings are the full protocol's (`input`, T 50, m 100, h 10, pretraining capped
//! at 1,500 steps in rounds of 500, patience 2): they name the record, which must exist.

use std::path::PathBuf;

use bet_train::backbone::BackboneKind;
use bet_train::lightgcn::Placement;
use bet_train::predictor::{PredictorKind, ReplayBuffer, Widths, replay_updates};
use bet_train::search::{Method, SearchConfig, evaluated_actions};
use bet_train::split::{Protocol, Split};
use bet_train::train::TrainConfig;
use rand::SeedableRng;

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma) * (x - ma)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb) * (y - mb)).sum();
    cov / (va * vb).sqrt()
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut r = vec![0.0; v.len()];
    for (rank, i) in order.into_iter().enumerate() {
        r[i] = rank as f64;
    }
    r
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: predictor_replay DATASET_DIR SPARSITY SEED [CHECKPOINT_DIR]".into());
    }
    let seed: u64 = args[3].parse()?;
    let keep = bet_train::budget::keep_from_flags(Some(&args[2]), None)?;
    let data = bet_train::data::load(std::path::Path::new(&args[1]))?;
    let split = Split::new(&data, Protocol::Paper, seed)?;
    let limit = bet_train::budget::limit(keep, 128, split.n_users, split.n_items, 1)?;
    let sha: String = data.sha256.iter().map(|b| format!("{b:02x}")).collect();
    // The same settings, field for field, as `bet search` builds from the full protocol's flags.
    let config = SearchConfig {
        method: Method::Bet,
        backbone: BackboneKind::LightGcn,
        placement: Some(Placement::Input),
        d_max: 128,
        limit,
        iterations: 50,
        candidates: 100,
        finetune_epochs: 10,
        retrain_top: 5,
        fitness_users: split.n_users.div_ceil(2),
        train: TrainConfig { round_steps: 500, patience: 2, max_steps: 1500, seed, ..TrainConfig::default() },
        retrain_max_steps: 12_000,
        refit: true,
        predictor_updates: bet_train::predictor::UPDATES_PER_ITERATION,
        seed,
        checkpoint_dir: args.get(4).map(PathBuf::from).unwrap_or_else(bet_train::checkpoint::default_dir),
        data_fingerprint: format!("data {sha} split {} seed {seed}", split.protocol.name()),
    };
    let (evaluated, actions) = evaluated_actions(&split, &config)?;
    if evaluated.len() < 10 {
        return Err(format!("the record holds {} evaluated actions; 10 or more needed", evaluated.len()).into());
    }
    let nu = split.n_users;
    let fitness: Vec<f64> = evaluated.iter().map(|e| e.fitness).collect();
    let from = 5;
    let report = |name: &str, predicted: &[f64]| {
        let (p, f) = (&predicted[from..], &fitness[from..]);
        let mae = p.iter().zip(f).map(|(a, b)| (a - b).abs()).sum::<f64>() / p.len() as f64;
        println!(
            "{name:<34} Pearson {:+.3}  Spearman {:+.3}  mean |error| {mae:.4}",
            pearson(p, f),
            pearson(&ranks(p), &ranks(f))
        );
    };
    println!(
        "{} evaluated actions, fitness {:.4}..{:.4}; correlations over iterations {from}..{}",
        evaluated.len(),
        fitness.iter().cloned().fold(f64::INFINITY, f64::min),
        fitness.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        evaluated.len() - 1
    );
    let recorded: Vec<f64> = evaluated.iter().map(|e| e.predicted.unwrap_or(f64::NAN)).collect();
    report("the search's own predictions", &recorded);
    let (user_freq, item_freq) = (split.user_frequency(), split.item_frequency());
    for updates in [2usize, 8, 32, 128] {
        let mut predictor = PredictorKind::DeepSets.build(&user_freq, &item_freq, 128, seed)?;
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed ^ 0x0B0D);
        let mut buffer = ReplayBuffer::new();
        let mut predicted = vec![];
        for (widths, &f) in actions.iter().zip(&fitness) {
            let view = Widths::new(&widths[..nu], &widths[nu..]);
            predicted.push(predictor.predict(view)?);
            buffer.push(view, f)?;
            replay_updates(&mut *predictor, &buffer, updates, &mut rng)?;
        }
        report(&format!("online, {updates} updates per iteration"), &predicted);
    }
    Ok(())
}
