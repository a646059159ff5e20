//! The `bet` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use bet_format::{Decimal, ValueDtype};
use bet_runtime::{Filter, Kernel, Model, Scored};
use bet_train::report::{self, Limits};
use bet_train::synthetic::{SyntheticModel, zipf_frequencies};
use clap::{Parser, Subcommand, ValueEnum};
use rayon::prelude::*;

#[derive(Parser)]
#[command(name = "bet", version, about = "Budgeted embedding tables: inspect, verify and benchmark .bet files")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum ModelArg {
    /// LightGCN, 3 layers.
    Lightgcn,
    /// Matrix factorisation.
    Mf,
    /// NGCF, 3 layers (final vectors 4 x d_max, layer-interleaved).
    Ngcf,
    /// NCF / NeuMF (GMF + one-hidden-layer MLP; both tables count against the budget).
    Ncf,
}

#[derive(Clone, Copy, ValueEnum)]
enum PlacementArg {
    /// Ego table cut, final vectors dense (the paper's; LightGCN ships ego rows + graph, NGCF cannot export).
    Input,
    /// Final vectors cut (exportable).
    Output,
    /// Both cut.
    Both,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtocolArg {
    /// Merge train and test, per-user seeded 50/25/25 (the paper's).
    Paper,
    /// The dataset's own train/test, validation carved from train.
    Given,
    /// Per user by timestamp (CSV with timestamps, MovieLens).
    Temporal,
}

#[derive(Clone, Copy, ValueEnum)]
enum KernelArg {
    Auto,
    Portable,
    Avx2,
}

#[derive(Subcommand)]
enum Command {
    /// Show what a .bet file holds: kind, counts, budget, widths, sections, checksums, provenance.
    Inspect {
        /// The file.
        file: PathBuf,
        /// Print the versioned JSON report (schema bet-inspect/1) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The size-budget gate: exit 0 if valid and within limits, 1 if over a limit, 2 if corrupt.
    Verify {
        /// The file.
        file: PathBuf,
        /// Most parameters allowed (embedding values + dense weights).
        #[arg(long, value_name = "N")]
        max_params: Option<u64>,
        /// Most file bytes allowed.
        #[arg(long, value_name = "N")]
        max_bytes: Option<u64>,
        /// Fail (exit 1) if the runtime would need a heap to score the file: an `input`-placement
        /// file, whose ego rows are propagated into allocated memory at load.
        #[arg(long)]
        no_heap: bool,
    },
    /// Rank items with bet-runtime: one line per user, `user U: item:scorebits ...`.
    Rank {
        /// The file.
        file: PathBuf,
        /// Users (comma-separated indices).
        #[arg(long, value_delimiter = ',', default_value = "0")]
        users: Vec<u32>,
        /// How many items per user.
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Items never returned (comma-separated indices).
        #[arg(long, value_delimiter = ',')]
        exclude: Vec<u32>,
        /// Also rank for this caller-supplied user vector (comma-separated decimals; no
        /// exclusions), printed as `vector: ...`.
        #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
        vector: Vec<f32>,
    },
    /// Compare the top-k lists two files give every user (say an f16 file against the f32
    /// file of the same model): how many are the same list, and the same set.
    Compare {
        /// The first file.
        a: PathBuf,
        /// The second file (same users and items).
        b: PathBuf,
        /// How many items per user.
        #[arg(long, default_value_t = 20)]
        k: usize,
        /// Also write the result as JSON (schema bet-compare/1) here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Train a backbone with equal widths under a budget (BPR, early stopping), then evaluate.
    Train(TrainArgs),
    /// The BET search (or a baseline) under an exact budget: pretrain, search, retrain the best,
    /// export a .bet file whose metrics bet-runtime measured. No arguments: the shipped sample.
    Search(SearchArgs),
    /// Load a dataset, split it, and report the split and a most-popular baseline (trainer-evaluated).
    Data {
        /// A LightGCN directory (train.txt, test.txt), a CSV/TSV file, or a MovieLens .dat file.
        #[arg(default_value = "data/gowalla-sample")]
        dataset: PathBuf,
        /// Split protocol.
        #[arg(long, value_enum, default_value = "paper")]
        protocol: ProtocolArg,
        /// Seed of the split.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Write a synthetic budgeted model, inspect it, verify it and rank items with the runtime.
    Demo {
        /// Where to write demo.bet.
        #[arg(long, default_value = "target/bet-demo")]
        out: PathBuf,
        /// Sparsity (0.9 keeps 10% of a full 128-wide table).
        #[arg(long, default_value = "0.9")]
        sparsity: String,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// One BPR training step (and optionally one epoch) of a full-width backbone.
    Train {
        /// Dataset directory (LightGCN format).
        #[arg(long, default_value = "../shared/data/gowalla")]
        data: PathBuf,
        /// Backbone.
        #[arg(long, value_enum, default_value = "lightgcn")]
        model: ModelArg,
        /// Timed steps (after one untimed warm-up step).
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Also time one epoch.
        #[arg(long)]
        epoch: bool,
        /// Worker threads.
        #[arg(long)]
        threads: Option<usize>,
        /// Write the JSON result (schema bet-bench-train/1) here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Full-ranking evaluation of every Gowalla user with 128-wide vectors.
    Eval {
        /// Gowalla directory.
        #[arg(long, default_value = "../shared/data/gowalla")]
        data: PathBuf,
        /// Repetitions.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
    /// One-user and batch top-20 on a Gowalla-sized file against dense baselines.
    Topk {
        /// Gowalla directory (train.txt) for real popularity and exclusions.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Queries per measurement.
        #[arg(long, default_value_t = 2000)]
        queries: usize,
        /// Megabytes of distinct files rotated over for cold-cache queries.
        #[arg(long, default_value_t = 192)]
        cold_megabytes: usize,
        /// Scoring kernel.
        #[arg(long, value_enum, default_value = "auto")]
        kernel: KernelArg,
        /// Also write the JSON report here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Inspect { file, json } => match report::inspect(&file) {
            Ok(r) if json => {
                bet_train::out!("{}", serde_json::to_string_pretty(&r)?);
                Ok(ExitCode::SUCCESS)
            }
            Ok(r) => {
                bet_train::out!("{}", r.render().trim_end_matches('\n'));
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {}: {e}", file.display());
                Ok(ExitCode::from(2))
            }
        },
        Command::Verify { file, max_params, max_bytes, no_heap } => {
            let v = report::verify(&file, Limits { max_params, max_bytes, no_heap });
            if v.exit_code == 0 {
                bet_train::out!("{}", v.line);
            } else {
                eprintln!("{}", v.line);
            }
            Ok(ExitCode::from(v.exit_code))
        }
        Command::Demo { out, sparsity } => demo(&out, &sparsity),
        Command::Data { dataset, protocol, seed, json } => data_report(&dataset, protocol, seed, json.as_deref()),
        Command::Search(args) => {
            let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
            pool.install(|| search_command(args, threads))
        }
        Command::Train(args) => {
            let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
            pool.install(|| train_command(args, threads))
        }
        Command::Rank { file, users, k, mut exclude, vector } => {
            exclude.sort_unstable();
            exclude.dedup();
            let model = open_model(&file)?;
            let n = k.min(model.summary().n_items as usize);
            let mut out = vec![Scored::EMPTY; n];
            let filter = Filter { exclude: Some(bet_runtime::ItemSet::Sorted(&exclude)), allow: None };
            let line = |label: String, top: &[Scored]| {
                let cells: Vec<String> = top.iter().map(|s| format!("{}:{:08x}", s.index, s.score.to_bits())).collect();
                bet_train::out!("{label}: {}", cells.join(" "));
            };
            // In batches, on every core: over an `input` file's dense vectors the runtime ranks
            // several users per pass over the items (the same answers as one at a time). Lines
            // are printed in the users' order, up to the first user that fails.
            const BATCH: usize = 64;
            let ranked: Vec<_> = users
                .par_chunks(BATCH)
                .map(|batch| {
                    let (mut top, mut counts) = (vec![Scored::EMPTY; n * batch.len()], vec![0usize; batch.len()]);
                    let result = model.top_k_batch(batch, n, |_, _| filter, &mut top, &mut counts);
                    (top, counts, result)
                })
                .collect();
            for (batch, (top, counts, result)) in users.chunks(BATCH).zip(ranked) {
                if let Err(e) = result {
                    // The users before the failing one, then its error (as one at a time).
                    for &user in batch {
                        let mut one = vec![Scored::EMPTY; n];
                        match model.top_k(user, n, &filter, &mut one) {
                            Ok(got) => line(format!("user {user}"), &one[..got]),
                            Err(_) => break,
                        }
                    }
                    return Err(e.into());
                }
                for (j, (user, &got)) in batch.iter().zip(&counts).enumerate() {
                    line(format!("user {user}"), top.get(j * n..j * n + got).unwrap_or(&[]));
                }
            }
            if !vector.is_empty() {
                let got = model.top_k_for_vector(bet_runtime::UserVector::Dot(&vector), k, &Filter::NONE, &mut out)?;
                line("vector".into(), &out[..got]);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare { a, b, k, json } => {
            let (ma, mb) = (open_model(&a)?, open_model(&b)?);
            let (sa, sb) = (ma.summary(), mb.summary());
            if (sa.n_users, sa.n_items) != (sb.n_users, sb.n_items) {
                anyhow::bail!(
                    "{} has {} users and {} items, {} has {} and {}: not two files of one model",
                    a.display(),
                    sa.n_users,
                    sa.n_items,
                    b.display(),
                    sb.n_users,
                    sb.n_items
                );
            }
            let n = k.min(sa.n_items as usize);
            let (mut ta, mut tb) = (vec![Scored::EMPTY; n], vec![Scored::EMPTY; n]);
            let (mut same_order, mut same_set, mut overlap) = (0u64, 0u64, 0u64);
            let (mut la, mut lb) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for user in 0..sa.n_users {
                let ga = ma.top_k(user, n, &Filter::NONE, &mut ta)?;
                let gb = mb.top_k(user, n, &Filter::NONE, &mut tb)?;
                la.clear();
                la.extend(ta[..ga].iter().map(|s| s.index));
                lb.clear();
                lb.extend(tb[..gb].iter().map(|s| s.index));
                same_order += u64::from(la == lb);
                // Sorted in place once the order has been compared: sets and overlap.
                la.sort_unstable();
                lb.sort_unstable();
                same_set += u64::from(la == lb);
                overlap += la.iter().filter(|i| lb.binary_search(i).is_ok()).count() as u64;
            }
            let users = u64::from(sa.n_users).max(1);
            let share = |c: u64| 100.0 * c as f64 / users as f64;
            bet_train::out!(
                "{} users, top {n}: same list {same_order} ({:.1}%), same set {same_set} ({:.1}%), mean overlap {:.2} of {n}",
                sa.n_users,
                share(same_order),
                share(same_set),
                overlap as f64 / users as f64
            );
            if let Some(path) = json {
                let v = serde_json::json!({
                    "schema": "bet-compare/1",
                    "a": a.display().to_string(),
                    "b": b.display().to_string(),
                    "users": sa.n_users,
                    "k": n,
                    "same_list": same_order,
                    "same_set": same_set,
                    "mean_overlap": overlap as f64 / users as f64,
                });
                bet_format::write_atomic(&path, serde_json::to_string_pretty(&v)?.as_bytes())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { which: BenchCommand::Train { data, model, steps, epoch, threads, json } } => {
            let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
            let v = pool.install(|| bet_train::bench::run_train(&data, backbone_kind(model), steps, epoch))?;
            if let Some(path) = json {
                bet_format::write_atomic(&path, serde_json::to_string_pretty(&v)?.as_bytes())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { which: BenchCommand::Eval { data, repeats } } => {
            bet_train::bench::run_eval(&data, repeats)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { which: BenchCommand::Topk { data, queries, cold_megabytes, kernel, json } } => {
            let kernel = match kernel {
                KernelArg::Auto => None,
                KernelArg::Portable => Some(Kernel::Portable),
                KernelArg::Avx2 => Some(Kernel::Avx2F16c),
            };
            let report =
                bet_train::bench::run_topk(&bet_train::bench::TopkOptions { data, queries, cold_megabytes, kernel })?;
            if let Some(path) = json {
                bet_format::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `bet train` flags.
#[derive(clap::Args)]
struct TrainArgs {
    /// A LightGCN directory, a CSV/TSV file or a MovieLens .dat file.
    #[arg(long, default_value = "data/gowalla-sample")]
    dataset: PathBuf,
    /// Backbone.
    #[arg(long, value_enum, default_value = "lightgcn")]
    model: ModelArg,
    /// Sparsity (0.9 keeps 10%); exact decimal.
    #[arg(long, conflicts_with = "keep")]
    sparsity: Option<String>,
    /// Kept fraction (alias of sparsity: --keep 0.1 = --sparsity 0.9).
    #[arg(long)]
    keep: Option<String>,
    /// Where the width mask applies (LightGCN, default both; NGCF, default output: the best
    /// exportable ones on validation); MF and NCF have none.
    #[arg(long, value_enum)]
    placement: Option<PlacementArg>,
    /// Full width d_max.
    #[arg(long, default_value_t = 128)]
    d_max: u32,
    /// Split protocol.
    #[arg(long, value_enum, default_value = "paper")]
    protocol: ProtocolArg,
    /// Seed (split, initialisation, sampling).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads (results are reproducible per seed and thread count).
    #[arg(long)]
    threads: Option<usize>,
    /// Steps between validations.
    #[arg(long, default_value_t = 2000, value_parser = at_least_one)]
    round_steps: usize,
    /// Rounds without improvement before stopping.
    #[arg(long, default_value_t = 2)]
    patience: usize,
    /// Hard cap on steps.
    #[arg(long, default_value_t = 100_000, value_parser = at_least_one)]
    max_steps: usize,
    /// Write a JSON report (schema bet-train/1) here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Directory of checkpoints (default: the user cache directory, never the work tree).
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Ignore (and overwrite) an existing checkpoint of this run instead of resuming from it.
    #[arg(long)]
    fresh: bool,
    /// Checkpoint at least every N steps (besides every round and every minute).
    #[arg(long, value_name = "N")]
    checkpoint_every: Option<u64>,
    /// Write the final parameters here (a checkpoint-format file; `--init` reads it).
    #[arg(long, value_name = "FILE")]
    save_state: Option<PathBuf>,
    /// Start from the parameters in FILE (written by `--save-state`) instead of a fresh init.
    #[arg(long, value_name = "FILE")]
    init: Option<PathBuf>,
    /// Fine-tune for N epochs (fresh Adam, lr 0.03 x 0.98 every 200 steps, no early stopping)
    /// instead of training to convergence; usually with --init.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    epochs: Option<usize>,
    /// Also export the trained model as a .bet file here, measured by bet-runtime (not with
    /// NGCF's input placement, which has no budgeted file).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Storage dtype of the values exported with --out.
    #[arg(long, value_enum, default_value = "f32", requires = "out")]
    dtype: DtypeArg,
    /// After early stopping, train again from scratch on train ∪ validation for the kept step
    /// count; that model is evaluated on test and exported (the reference code's final fit).
    #[arg(long, conflicts_with_all = ["epochs", "init"])]
    refit: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum MethodArg {
    /// BET (DeepSets predictor, strategies I/II/III).
    Bet,
    /// Equal widths.
    Es,
    /// Uniform random widths, repaired to the limit.
    Mr,
    /// Widths proportional to frequency^alpha, alpha in {0.25, 0.5, 1} chosen on validation.
    Freq,
    /// BET with random selection only.
    BetRandom,
    /// BET with the plain histogram-MLP predictor.
    BetPlain,
}

#[derive(Clone, Copy, ValueEnum)]
enum DtypeArg {
    F32,
    F16,
}

#[derive(clap::Args)]
struct SearchArgs {
    /// A LightGCN directory, a CSV/TSV file or a MovieLens .dat file.
    #[arg(long, default_value = "data/gowalla-sample")]
    dataset: PathBuf,
    /// Backbone.
    #[arg(long, value_enum, default_value = "lightgcn")]
    model: ModelArg,
    /// Sparsity (0.9 keeps 10%); exact decimal.
    #[arg(long, conflicts_with = "keep", default_value = "0.9")]
    sparsity: String,
    /// Kept fraction (alias of sparsity).
    #[arg(long)]
    keep: Option<String>,
    /// Which method picks the widths.
    #[arg(long, value_enum, default_value = "bet")]
    method: MethodArg,
    /// Where the width mask applies (LightGCN, default input; NGCF, default output: the best
    /// on validation). `input` is the paper's: LightGCN ships its ego rows and training graph,
    /// which the runtime propagates when it loads the file (memory for dense vectors: use `both`
    /// for devices without a heap); NGCF's cannot be exported. MF and NCF have none.
    #[arg(long, value_enum)]
    placement: Option<PlacementArg>,
    /// Full width d_max.
    #[arg(long, default_value_t = 128)]
    d_max: u32,
    /// Seed of everything.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads (results are reproducible per seed and thread count).
    #[arg(long)]
    threads: Option<usize>,
    /// Output model; the JSON report and the SVG plot go beside it (.json, .svg).
    #[arg(long, default_value = "model.bet")]
    out: PathBuf,
    /// Storage dtype of the exported values.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DtypeArg,
    /// Search iterations T.
    #[arg(long, default_value_t = 50, value_parser = at_least_one)]
    iterations: usize,
    /// Candidates per iteration m.
    #[arg(long, default_value_t = 100, value_parser = at_least_one)]
    candidates: usize,
    /// Fine-tuning epochs per evaluated action h (default 10; 15 for NGCF).
    #[arg(long, value_parser = at_least_one)]
    finetune_epochs: Option<usize>,
    /// Actions retrained from scratch at the end.
    #[arg(long, default_value_t = 5, value_parser = at_least_one)]
    retrain_top: usize,
    /// Steps between validations in (pre/re)training (default: 2,000, at most 50 epochs).
    #[arg(long, value_parser = at_least_one)]
    round_steps: Option<usize>,
    /// Rounds without improvement before stopping.
    #[arg(long, default_value_t = 2)]
    patience: usize,
    /// Hard cap on (pre/re)training steps.
    #[arg(long, default_value_t = 100_000, value_parser = at_least_one)]
    max_steps: usize,
    /// Hard cap on each retraining's steps alone (default: --max-steps): keeps a capped
    /// pretraining, shared with earlier runs, while the retrained candidates train further.
    /// Raising it on a finished or interrupted search continues each retraining from the lower
    /// cap's checkpoint where that is exactly the same run (docs/search.md, "Resume").
    #[arg(long, value_parser = at_least_one)]
    retrain_max_steps: Option<usize>,
    /// Predictor updates after each evaluated action (the reference's 2 by default; more is a
    /// documented deviation: on Gowalla's recorded searches, replayed, 2 updates leave the
    /// predictor uncorrelated with fitness; see docs/search.md).
    #[arg(long, default_value_t = bet_train::predictor::UPDATES_PER_ITERATION, value_parser = at_least_one)]
    predictor_updates: usize,
    /// After choosing on validation, train the chosen widths once more from scratch on train ∪
    /// validation for the steps its retraining kept, and ship that model (the reference code's
    /// and CIESS's final fit; its test figures are then comparable with the paper's).
    #[arg(long)]
    refit: bool,
    /// Directory of checkpoints (default: the user cache directory, never the work tree).
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Print how far this search has come (the same flags name the same run), read from its
    /// checkpoints: phases, wall time per phase, every evaluated action, each retraining's steps.
    /// Trains and writes nothing, so it can watch a running search or one a kill stopped.
    #[arg(long)]
    status: bool,
    /// With --status: print it as JSON (schema bet-search-status/1).
    #[arg(long, requires = "status")]
    json: bool,
}

/// A count that must be at least 1 (iterations, candidates, epochs, steps): zero is refused when
/// the flags are read, not after a pretraining it would waste or by a silent `max(1)`.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn search_command(a: SearchArgs, threads: usize) -> anyhow::Result<ExitCode> {
    use bet_train::eval::Target;
    use bet_train::export::{ExportSettings, ship};
    use bet_train::lightgcn::Placement;
    use bet_train::search::{Method, SearchConfig, run_search, search_svg};
    use bet_train::train::{TrainConfig, epoch_steps};
    let started = std::time::Instant::now();
    let keep = bet_train::budget::keep_from_flags(
        if a.keep.is_some() { None } else { Some(a.sparsity.as_str()) },
        a.keep.as_deref(),
    )?;
    let kind = backbone_kind(a.model);
    kind.check_d_max(a.d_max)?;
    let data = bet_train::data::load(&a.dataset)?;
    let split = bet_train::split::Split::new(&data, bet_train::split::Protocol::Paper, a.seed)?;
    let limit = bet_train::budget::limit(keep, a.d_max, split.n_users, split.n_items, kind.tables())?;
    let placement = kind.placement(a.placement.map(placement_of))?;
    let method = match a.method {
        MethodArg::Bet => Method::Bet,
        MethodArg::Es => Method::Es,
        MethodArg::Mr => Method::Mr,
        MethodArg::Freq => Method::Freq,
        MethodArg::BetRandom => Method::BetRandom,
        MethodArg::BetPlain => Method::BetPlain,
    };
    let epoch = epoch_steps(&split, 10_000);
    let sha: String = data.sha256.iter().map(|b| format!("{b:02x}")).collect();
    let config = SearchConfig {
        method,
        backbone: kind,
        placement,
        d_max: a.d_max,
        // NCF's two tables share each entity's width: the widths split half the limit.
        limit: limit / u64::from(kind.tables()),
        iterations: a.iterations,
        candidates: a.candidates,
        finetune_epochs: a.finetune_epochs.unwrap_or(if kind == bet_train::backbone::BackboneKind::Ngcf {
            15
        } else {
            10
        }),
        retrain_top: a.retrain_top,
        fitness_users: split.n_users.div_ceil(2),
        train: TrainConfig {
            round_steps: a.round_steps.unwrap_or((50 * epoch).min(2000)),
            patience: a.patience,
            max_steps: a.max_steps,
            seed: a.seed,
            ..TrainConfig::default()
        },
        retrain_max_steps: a.retrain_max_steps.unwrap_or(a.max_steps),
        refit: a.refit,
        predictor_updates: a.predictor_updates,
        seed: a.seed,
        checkpoint_dir: a.checkpoint_dir.clone().unwrap_or_else(bet_train::checkpoint::default_dir),
        data_fingerprint: format!("data {sha} split {} seed {}", split.protocol.name(), a.seed),
    };
    eprintln!(
        "{}: {} users, {} items; {} {} ({}), keep {keep} -> limit {limit}; T {} m {} h {} top {}; {threads} threads; checkpoints in {}",
        data.name,
        split.n_users,
        split.n_items,
        method.name(),
        kind.name(),
        Placement::name_of(placement),
        config.iterations,
        config.candidates,
        config.finetune_epochs,
        config.retrain_top,
        config.checkpoint_dir.display()
    );
    if a.status {
        let status = bet_train::search::search_status(&split, &config)?;
        print_search_status(&status, a.json, &config)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut progress = Progress::new(0, "{elapsed_precise} {msg} {pos}/{len}");
    let outcome =
        run_search(&split, &config, |phase, done, total| progress.update(phase, done as u64, total as u64, None))?;
    progress.finish();
    let model = &*outcome.model;
    // A refit model is measured on the refit split: test excludes the same items, and there is
    // no validation left to measure it on.
    let split = outcome.refit.as_ref().map_or(&split, |r| &r.split);
    let stored: u64 = outcome.widths.iter().map(|&w| u64::from(w)).sum::<u64>() * u64::from(kind.tables());
    let line = |name: &str, source: &str, m: &bet_train::eval::Metrics| bet_train::out!("{name} ({source}): {m}");
    let timing = format!(
        "pretrain {:.0} s, search {:.0} s, retrain {:.0} s",
        outcome.seconds[0], outcome.seconds[1], outcome.seconds[2]
    );
    if let Some(refit) = &outcome.refit {
        bet_train::out!(
            "refit on train+validation: {} steps (the chosen retraining's kept step), {:.0} s",
            refit.steps,
            refit.seconds
        );
    }
    // NGCF's input placement leaves the propagated vectors dense and its propagation has weights
    // the format does not carry: such a model has no budgeted file, so it is measured by the
    // trainer, labelled so, and nothing is exported. (LightGCN's ships ego rows and its graph.)
    let (validation, test, evaluated_by, file, parity_json) = if let Err(refusal) = model.check_exportable() {
        let scorer = model.scorer();
        let validation = bet_train::eval::evaluate(&*scorer, split, Target::Validation, None);
        let test = bet_train::eval::evaluate(&*scorer, split, Target::Test, None);
        bet_train::out!(
            "{} chose widths storing {stored} of {limit} ego values; not exported: {refusal}; {timing}",
            method.name()
        );
        if validation.users > 0 {
            line("validation", "trainer-evaluated", &validation);
        }
        line("test", "trainer-evaluated", &test);
        (
            validation,
            test,
            "trainer (input placement cannot be exported)",
            serde_json::Value::Null,
            serde_json::Value::Null,
        )
    } else {
        // Export, then measure the file with the runtime; the metrics go into its metadata.
        let dtype = dtype_of(a.dtype);
        let settings = ExportSettings { keep: Some(keep), seed: a.seed, threads: threads as u32, dtype };
        let shipped = ship(model, &data, split, &settings, &a.out)?;
        let (validation, test, agreement) = (shipped.validation, shipped.test, shipped.parity);
        bet_train::out!(
            "{} wrote {} ({} bytes): {stored} of {limit} values; {timing}",
            method.name(),
            a.out.display(),
            shipped.bytes
        );
        let source = format!("from {} by bet-runtime", a.out.display());
        if validation.users > 0 {
            line("validation", &source, &validation);
        }
        line("test", &source, &test);
        let parity_json = parity_report(&agreement);
        let file = serde_json::json!({"path": a.out.display().to_string(), "bytes": shipped.bytes});
        (validation, test, "bet-runtime (the exported file)", file, parity_json)
    };
    let m = metrics_report;
    let mut histogram = vec![0u64; a.d_max as usize + 1];
    for &w in &outcome.widths {
        histogram[w as usize] += 1;
    }
    let report = serde_json::json!({
        "schema": "bet-search/1",
        "provenance": provenance_report(),
        "dataset": data.name, "sha256": sha, "model": kind.name(),
        "placement": Placement::name_of(placement), "method": method.name(),
        "keep": keep.to_string(), "limit": limit, "stored_values": stored, "d_max": a.d_max,
        "width_histogram": histogram,
        "seed": a.seed, "threads": threads,
        "iterations": config.iterations, "candidates": config.candidates, "finetune_epochs": config.finetune_epochs,
        "retrain_top": config.retrain_top, "round_steps": config.train.round_steps,
        "patience": config.train.patience, "max_steps": config.train.max_steps,
        "retrain_max_steps": config.retrain_max_steps,
        "predictor_updates": config.predictor_updates,
        "reference_fitness": outcome.reference_fitness,
        "evaluated": outcome.evaluated,
        "pretrain_steps": outcome.pretrain_steps,
        "retrained": outcome.retrained.iter().map(|r| serde_json::json!({
            "evaluated": r.evaluated, "steps": r.steps, "best_step": r.best_step,
            "validation_trainer": m(&r.validation), "extended_from": r.extended_from,
        })).collect::<Vec<_>>(),
        "refit": outcome.refit.as_ref().map(|r| serde_json::json!({
            "steps": r.steps, "seconds": r.seconds, "split": split.name(), "extended_from": r.extended_from,
        })),
        "evaluated_by": evaluated_by,
        // A refit model trained on validation: its validation figure is the chosen retraining's
        // (in "retrained"), not this model's.
        "validation": if validation.users > 0 { m(&validation) } else { serde_json::Value::Null },
        "test": m(&test),
        "parity": parity_json,
        "seconds": {"pretrain": outcome.seconds[0], "search": outcome.seconds[1], "retrain": outcome.seconds[2], "total": started.elapsed().as_secs_f64()},
        "file": file,
    });
    bet_format::write_atomic(&a.out.with_extension("json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    let title = format!("{} {} on {} (keep {keep})", method.name(), kind.name(), data.name);
    bet_format::write_atomic(&a.out.with_extension("svg"), search_svg(&outcome.evaluated, &title).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `bet search --status`: what finished, per phase, for a person or (`--json`) a machine.
fn print_search_status(
    status: &bet_train::search::SearchStatus,
    json: bool,
    config: &bet_train::search::SearchConfig,
) -> anyhow::Result<()> {
    let seconds = status.seconds();
    if json {
        let report = serde_json::json!({
            "schema": "bet-search-status/1",
            "provenance": provenance_report(),
            "method": config.method.name(),
            "seed": config.seed,
            "limit": config.limit,
            "phase": status.phase(),
            "seconds": {"pretrain": seconds[0], "search": seconds[1], "retrain": seconds[2]},
            "status": status,
        });
        bet_train::out!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let training = |t: &bet_train::search::TrainingStatus| {
        let best = t
            .best_validation
            .map_or(String::new(), |v| format!(", best validation eq. 13 {v:.4} at step {}", t.best_step));
        let extends = t.extends.map_or(String::new(), |cap| format!(" (taken over from the run capped at {cap})"));
        format!(
            "{} {} of {} steps{best}, {:.0} s{extends}",
            if t.finished { "finished," } else { "at" },
            t.steps,
            t.max_steps,
            t.seconds
        )
    };
    bet_train::out!("phase: {}", status.phase());
    match &status.pretrain {
        Some(t) => bet_train::out!("pretrain: {}", training(t)),
        None => bet_train::out!("pretrain: not started"),
    }
    let best = bet_train::search::fittest(&status.evaluated).map(|i| (i, &status.evaluated[i]));
    match best {
        Some((i, e)) => bet_train::out!(
            "search: {} of {} evaluated, {:.0} s; best fitness {:.4} (action {i}, {})",
            status.evaluated.len(),
            status.planned,
            seconds[1],
            e.fitness,
            e.strategy
        ),
        None => bet_train::out!("search: 0 of {} evaluated", status.planned),
    }
    for e in &status.evaluated {
        let predicted = e.predicted.map_or(String::from("-"), |p| format!("{p:.4}"));
        bet_train::out!(
            "  {:>3} {:<8} fitness {:.4} predicted {predicted} {:.0} s",
            e.iteration,
            e.strategy,
            e.fitness,
            e.seconds
        );
    }
    for (k, r) in status.retrain.iter().enumerate() {
        let what = r.training.as_ref().map_or(String::from("not started"), training);
        bet_train::out!(
            "retrain {} of {} (action {}, fitness {:.4}): {what}",
            k + 1,
            status.retrain.len(),
            r.evaluated,
            r.fitness
        );
    }
    if status.refit_planned {
        match &status.refit {
            Some(r) => bet_train::out!("refit (action {}): {}", r.evaluated, training(&r.training)),
            None => bet_train::out!("refit: not started"),
        }
    }
    Ok(())
}

/// Which build wrote a report: the trainer's version and the git commit it was built from (empty
/// when unknown, as in an exported file's provenance), so a figure can be traced to its code.
fn provenance_report() -> serde_json::Value {
    serde_json::json!({
        "trainer": bet_train::export::TRAINER_VERSION,
        "git_commit": bet_train::export::GIT_COMMIT,
    })
}

/// Metrics as the JSON reports write them.
fn metrics_report(m: &bet_train::eval::Metrics) -> serde_json::Value {
    serde_json::json!({"recall": m.recall, "ndcg": m.ndcg, "eq13": m.ensemble(), "users": m.users})
}

/// The parity check as the JSON reports write it. What is shipped is what was measured: a
/// disagreement is also printed as a warning, loudly, not hidden in the report.
fn parity_report(p: &bet_train::export::Parity) -> serde_json::Value {
    if !p.agrees() {
        eprintln!(
            "warning: the file's scores disagree with the trainer's evaluation of the shipped values on {} users \
             (same top-20 for {}; trainer {}; runtime {})",
            p.users, p.same_top20, p.trainer, p.runtime
        );
    }
    serde_json::json!({
        "users": p.users,
        "max_abs_diff": p.max_abs_diff,
        "same_top20": p.same_top20,
        "same_top20_set": p.same_top20_set,
        "same_top20_within_error": p.same_top20_within_error,
        "agrees": p.agrees()
    })
}

fn dtype_of(d: DtypeArg) -> bet_format::ValueDtype {
    match d {
        DtypeArg::F32 => bet_format::ValueDtype::F32,
        DtypeArg::F16 => bet_format::ValueDtype::F16,
    }
}

fn placement_of(p: PlacementArg) -> bet_train::lightgcn::Placement {
    use bet_train::lightgcn::Placement;
    match p {
        PlacementArg::Input => Placement::Input,
        PlacementArg::Output => Placement::Output,
        PlacementArg::Both => Placement::Both,
    }
}

/// How often a run without a terminal logs where it is.
const PLAIN_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Progress of a long command on stderr. On a terminal, an indicatif bar. Elsewhere (a
/// background run's log, CI) the bar is hidden and a plain line is written instead when the
/// phase changes and at most once a minute, so the log of a run that was killed or is still
/// going says how far it got.
struct Progress {
    bar: indicatif::ProgressBar,
    plain: Option<PlainProgress>,
}

/// The state of the plain lines: when the command started, when the last line was written and
/// for which phase.
struct PlainProgress {
    started: std::time::Instant,
    last: Option<std::time::Instant>,
    phase: String,
}

impl Progress {
    fn new(length: u64, template: &str) -> Self {
        let bar = indicatif::ProgressBar::new(length);
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        if !terminal {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        bar.set_style(
            indicatif::ProgressStyle::with_template(template)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let plain =
            (!terminal).then(|| PlainProgress { started: std::time::Instant::now(), last: None, phase: String::new() });
        Progress { bar, plain }
    }

    /// `done` of `total` in `phase`, with an optional message (a loss).
    fn update(&mut self, phase: &str, done: u64, total: u64, message: Option<String>) {
        if let Some(plain) = &mut self.plain {
            let due = plain.last.is_none_or(|t| t.elapsed() >= PLAIN_PROGRESS_EVERY);
            if due || plain.phase != phase {
                let message = message.as_deref().map(|m| format!(" {m}")).unwrap_or_default();
                eprintln!("[{:>6} s] {phase}: {done}/{total}{message}", plain.started.elapsed().as_secs());
                plain.last = Some(std::time::Instant::now());
                plain.phase = phase.to_string();
            }
            return;
        }
        self.bar.set_message(match message {
            Some(m) => format!("{phase} {m}"),
            None => phase.to_string(),
        });
        self.bar.set_length(total);
        self.bar.set_position(done);
    }

    fn finish(self) {
        self.bar.finish_and_clear();
    }
}

fn backbone_kind(m: ModelArg) -> bet_train::backbone::BackboneKind {
    use bet_train::backbone::BackboneKind;
    match m {
        ModelArg::Mf => BackboneKind::Mf,
        ModelArg::Lightgcn => BackboneKind::LightGcn,
        ModelArg::Ngcf => BackboneKind::Ngcf,
        ModelArg::Ncf => BackboneKind::Ncf,
    }
}

fn protocol_of(p: ProtocolArg) -> bet_train::split::Protocol {
    match p {
        ProtocolArg::Paper => bet_train::split::Protocol::Paper,
        ProtocolArg::Given => bet_train::split::Protocol::Given,
        ProtocolArg::Temporal => bet_train::split::Protocol::Temporal,
    }
}

fn train_command(a: TrainArgs, threads: usize) -> anyhow::Result<ExitCode> {
    use bet_train::backbone::BackboneKind;
    use bet_train::checkpoint::{CheckpointHeader, TrainState};
    use bet_train::eval::{Target, evaluate};
    use bet_train::lightgcn::Placement;
    use bet_train::train::{TrainConfig, equal_widths, train};
    let started = std::time::Instant::now();
    let keep = match (a.sparsity.as_deref(), a.keep.as_deref()) {
        (None, None) => bet_format::Decimal { units: 1, scale: 0 },
        (s, k) => bet_train::budget::keep_from_flags(s, k)?,
    };
    let kind = backbone_kind(a.model);
    kind.check_d_max(a.d_max)?;
    let data = bet_train::data::load(&a.dataset)?;
    let split = bet_train::split::Split::new(&data, protocol_of(a.protocol), a.seed)?;
    let limit = bet_train::budget::limit(keep, a.d_max, split.n_users, split.n_items, kind.tables())?;
    // NCF's two tables share each entity's width, so its widths split half the limit.
    // Without --sparsity/--keep the model is unbudgeted: every width d_max (for NCF that is
    // twice keep-1's limit, since its two tables both count).
    let budgeted = a.sparsity.is_some() || a.keep.is_some();
    let widths = if budgeted {
        // NCF's two tables share each entity's width, so its widths split half the limit.
        equal_widths(limit / u64::from(kind.tables()), &split.user_frequency(), &split.item_frequency(), a.d_max)
    } else {
        vec![a.d_max; split.n_users + split.n_items]
    };
    let stored: u64 = widths.iter().map(|&w| u64::from(w)).sum::<u64>() * u64::from(kind.tables());
    let placement = kind.placement(a.placement.map(placement_of))?;
    let layers = match kind {
        BackboneKind::Mf | BackboneKind::Ncf => 0,
        BackboneKind::LightGcn | BackboneKind::Ngcf => 3,
    };
    let mut model = kind.build(&split, a.d_max as usize, placement, widths.clone(), a.seed)?;
    if a.out.is_some() {
        // Refuse --out for a model without a budgeted file before hours of training, not after.
        model.check_exportable().context("--out")?;
    }
    let mut init_sha = String::from("none");
    if let Some(path) = &a.init {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let state = TrainState::from_bytes(&bytes, "model")
            .with_context(|| format!("{}: not a model state written by --save-state", path.display()))?;
        let shapes = model.tensor_shapes();
        if !state.params.iter().map(|t| t.len()).eq(shapes.iter().copied()) {
            anyhow::bail!("{}: its tensors do not fit this model (other data, model or d_max?)", path.display());
        }
        for (dst, src) in model.tensors_mut().into_iter().zip(&state.params) {
            dst.copy_from_slice(src);
        }
        init_sha = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
    }
    let config = match a.epochs {
        Some(epochs) => TrainConfig::finetune(&split, epochs, a.seed),
        None => TrainConfig {
            round_steps: a.round_steps,
            patience: a.patience,
            max_steps: a.max_steps,
            seed: a.seed,
            ..TrainConfig::default()
        },
    };
    let sha: String = data.sha256.iter().map(|b| format!("{b:02x}")).collect();
    let model_name = kind.name();
    let describe = |config: &TrainConfig| {
        format!(
            "bet-train/2 data {sha} protocol {} seed {} model {model_name} layers {layers} placement {} \
             d_max {} keep {keep} budgeted {budgeted} init {init_sha} config {}",
            protocol_of(a.protocol).name(),
            a.seed,
            Placement::name_of(placement),
            a.d_max,
            config.key(),
        )
    };
    let description = describe(&config);
    let dir = a.checkpoint_dir.clone().unwrap_or_else(bet_train::checkpoint::default_dir);
    // A raised --max-steps continues what a lower one trained, where that is the same run.
    let mut plan = bet_train::train::plan_with_lower_caps(&dir, &config, describe);
    plan.every_steps = a.checkpoint_every;
    if a.fresh {
        // Starting over means from scratch: no shorter run is taken over either.
        plan.shorter.clear();
        match std::fs::remove_file(&plan.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", plan.path.display()));
            }
            _ => {}
        }
    }
    eprintln!(
        "{}: {} users, {} items; train {} / validation {} / test {}; {}; {} threads",
        data.name,
        split.n_users,
        split.n_items,
        split.train.len(),
        split.validation.len(),
        split.test.len(),
        if budgeted {
            format!("keep {keep} -> limit {limit}, equal widths store {stored}")
        } else {
            format!("unbudgeted: every width {} ({stored} values)", a.d_max)
        },
        threads
    );
    eprintln!("checkpoint: {}", plan.path.display());
    let total = config.max_steps.min(a.max_steps) as u64;
    let mut progress = Progress::new(total, "{elapsed_precise} {msg} step {pos}/{len}");
    let report = train(&mut *model, &split, &config, Some(&plan), |step, loss| {
        progress.update("train", step as u64, total, Some(format!("loss {loss:.4}")))
    })?;
    progress.finish();
    match report.extended_from {
        Some(cap) => eprintln!("continued the run capped at {cap} steps from step {}", report.resumed_from),
        None if report.resumed_from > 0 => eprintln!("resumed from step {}", report.resumed_from),
        None => {}
    }
    // The early-stopped model's validation, before a refit replaces it.
    let val = evaluate(&*model.scorer(), &split, Target::Validation, None);
    let refit_split = a.refit.then(|| split.refit());
    let mut refit_report = None;
    if let Some(refit_split) = &refit_split {
        // Early stopping chose the step count on validation; the refit trains on validation, so
        // it runs exactly that many steps, from scratch with the same seed.
        let fit = TrainConfig { max_steps: report.best_step.max(1), early_stopping: false, ..config.clone() };
        model = kind.build(refit_split, a.d_max as usize, placement, widths.clone(), a.seed)?;
        let mut refit_plan =
            bet_train::train::plan_with_lower_caps(&dir, &fit, |fit| format!("{description} refit {}", fit.key()));
        refit_plan.every_steps = a.checkpoint_every;
        let total = fit.max_steps as u64;
        let mut progress = Progress::new(total, "{elapsed_precise} {msg} step {pos}/{len}");
        let run = train(&mut *model, refit_split, &fit, Some(&refit_plan), |step, loss| {
            progress.update("refit", step as u64, total, Some(format!("loss {loss:.4}")))
        })?;
        progress.finish();
        refit_report = Some(run);
    }
    let split = refit_split.as_ref().unwrap_or(&split);
    if let Some(path) = &a.save_state {
        let state = TrainState {
            header: CheckpointHeader {
                fingerprint: "model".into(),
                step: refit_report.as_ref().map_or(report.steps, |r| r.steps) as u64,
                ..Default::default()
            },
            params: model.tensors().iter().map(|t| t.to_vec()).collect(),
            adam_m: vec![],
            adam_v: vec![],
            best: vec![],
        };
        state.save(path)?;
    }
    let test = evaluate(&*model.scorer(), split, Target::Test, None);
    let line = |name: &str, m: &bet_train::eval::Metrics| bet_train::out!("{name} (trainer-evaluated): {m}");
    bet_train::out!(
        "trained {} steps (best at step {}), last-round loss {:.4}, {:.1} s",
        report.steps,
        report.best_step,
        report.last_loss,
        started.elapsed().as_secs_f64()
    );
    if let Some(run) = &refit_report {
        bet_train::out!("validation of the early-stopped model (trainer-evaluated): {val}");
        bet_train::out!(
            "refit on train+validation: {} steps, {:.1} s; the model below is the refit",
            run.steps,
            run.seconds
        );
    } else {
        line("validation", &val);
    }
    line("test", &test);
    let file = match &a.out {
        None => serde_json::Value::Null,
        Some(out) => {
            let dtype = dtype_of(a.dtype);
            let settings = bet_train::export::ExportSettings {
                keep: budgeted.then_some(keep),
                seed: a.seed,
                threads: threads as u32,
                dtype,
            };
            let shipped = bet_train::export::ship(&*model, &data, split, &settings, out)?;
            let source = format!("from {} by bet-runtime", out.display());
            bet_train::out!("wrote {} ({} bytes, {stored} values)", out.display(), shipped.bytes);
            if shipped.validation.users > 0 {
                bet_train::out!("validation ({source}): {}", shipped.validation);
            }
            bet_train::out!("test ({source}): {}", shipped.test);
            serde_json::json!({
                "path": out.display().to_string(), "bytes": shipped.bytes, "dtype": format!("{dtype:?}").to_lowercase(),
                "evaluated_by": "bet-runtime (the exported file)",
                "validation": if shipped.validation.users > 0 { metrics_report(&shipped.validation) } else { serde_json::Value::Null },
                "test": metrics_report(&shipped.test),
                "parity": parity_report(&shipped.parity),
            })
        }
    };
    if let Some(path) = &a.report {
        let m = metrics_report;
        let json = serde_json::json!({
            "schema": "bet-train/1",
            "provenance": provenance_report(),
            "evaluated_by": "trainer",
            "dataset": data.name, "sha256": data.sha256.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "model": model_name, "resumed_from": report.resumed_from,
            "placement": Placement::name_of(placement), "d_max": a.d_max,
            "keep": if budgeted { serde_json::json!(keep.to_string()) } else { serde_json::Value::Null },
            "limit": if budgeted { serde_json::json!(limit) } else { serde_json::Value::Null },
            "stored_values": stored, "widths": if budgeted { "equal" } else { "full" },
            "protocol": protocol_of(a.protocol).name(), "seed": a.seed, "threads": threads,
            "steps": report.steps, "best_step": report.best_step,
            "rounds": report.rounds.iter().map(|(s, r)| serde_json::json!({"step": s, "validation": m(r)})).collect::<Vec<_>>(),
            "refit": refit_report.as_ref().map(|r| serde_json::json!({"steps": r.steps, "seconds": r.seconds, "split": split.name()})),
            // With --refit: the early-stopped model's validation (the refit trained on it).
            "validation": m(&val), "test": m(&test), "seconds": started.elapsed().as_secs_f64(),
            "file": file,
        });
        bet_format::write_atomic(path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn data_report(path: &Path, protocol: ProtocolArg, seed: u64, json: Option<&Path>) -> anyhow::Result<ExitCode> {
    use bet_train::eval::{PopularityScorer, Target, evaluate};
    use bet_train::split::Split;
    let data = bet_train::data::load(path)?;
    let r = &data.report;
    let sha: String = data.sha256.iter().map(|b| format!("{b:02x}")).collect();
    bet_train::out!(
        "{}: {} users, {} items, {} interactions ({} rows, {} duplicates merged), sha256 {sha}",
        data.name,
        data.n_users,
        data.n_items,
        data.interactions.len(),
        r.rows,
        r.duplicates
    );
    let protocol = protocol_of(protocol);
    let split = Split::new(&data, protocol, seed)?;
    bet_train::out!(
        "split {} (seed {seed}): train {}, validation {}, test {}",
        protocol.name(),
        split.train.len(),
        split.validation.len(),
        split.test.len()
    );
    let popular = PopularityScorer { frequency: split.item_frequency() };
    let mut results = serde_json::Map::new();
    for (name, target) in [("validation", Target::Validation), ("test", Target::Test)] {
        let m = evaluate(&popular, &split, target, None);
        bet_train::out!(
            "most-popular baseline, {name} (trainer-evaluated, {} users, {} without held-out items): {m}",
            m.users,
            m.skipped
        );
        results.insert(
            name.into(),
            serde_json::json!({"recall": m.recall, "ndcg": m.ndcg, "users": m.users, "skipped": m.skipped}),
        );
    }
    if let Some(path) = json {
        let report = serde_json::json!({
            "schema": "bet-data/1", "dataset": data.name, "sha256": sha, "users": data.n_users, "items": data.n_items,
            "interactions": data.interactions.len(), "duplicates_merged": r.duplicates, "protocol": protocol.name(), "seed": seed,
            "train": split.train.len(), "validation": split.validation.len(), "test": split.test.len(),
            "most_popular_trainer_evaluated": results,
        });
        bet_format::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn demo(out: &Path, sparsity: &str) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("demo.bet");
    let keep = Decimal::from_sparsity(sparsity).context("--sparsity")?;
    let (n_users, n_items) = (2_000, 3_000);
    let model = SyntheticModel::budgeted(&zipf_frequencies(n_users, 1), &zipf_frequencies(n_items, 2), 128, keep, 42)?;
    let bytes = model.to_bytes(ValueDtype::F16, "demo (synthetic)")?;
    bet_format::write_atomic(&path, &bytes)?;
    bet_train::out!("== wrote {} ({} bytes)\n", path.display(), bytes.len());
    bet_train::out!("== bet inspect {}", path.display());
    bet_train::out!("{}", report::inspect(&path).map_err(|e| anyhow::anyhow!("{e}"))?.render().trim_end_matches('\n'));
    let limit = bet_format::Budget::limit_for(keep, 128, (n_users + n_items) as u64)?;
    bet_train::out!("\n== bet verify {} --max-params {limit}", path.display());
    let v = report::verify(&path, Limits { max_params: Some(limit), max_bytes: None, no_heap: false });
    bet_train::out!("{} (exit {})", v.line, v.exit_code);
    let tight = limit / 2;
    bet_train::out!("\n== bet verify {} --max-params {tight}   (a gate that must fail)", path.display());
    let v2 = report::verify(&path, Limits { max_params: Some(tight), max_bytes: None, no_heap: false });
    bet_train::out!("{} (exit {})", v2.line, v2.exit_code);
    anyhow::ensure!(v.exit_code == 0 && v2.exit_code == 1, "the size gate did not behave");

    let model = open_model(&path)?;
    bet_train::out!("\n== top-10 with bet-runtime ({:?} kernel)", model.kernel());
    let mut top = [Scored::EMPTY; 10];
    for user in [0u32, 1, 2] {
        let n = model.top_k(user, 10, &Filter::NONE, &mut top)?;
        let items: Vec<String> = top[..n].iter().map(|s| format!("{}:{:.4}", s.index, s.score)).collect();
        bet_train::out!("user {user}: {}", items.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads and validates a `.bet` file for scoring; a LightGCN `input` file's ego rows are
/// propagated over its graph first (the one allocation `bet-runtime` makes, spec §7.5).
fn open_model(path: &std::path::Path) -> anyhow::Result<Model<bet_format::AlignedBytes>> {
    let mut model = Model::read(path).with_context(|| format!("opening {}", path.display()))?;
    model.propagate().with_context(|| format!("propagating {}", path.display()))?;
    Ok(model)
}
