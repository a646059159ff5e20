//! The BET search (paper §3, Algorithm 1) and its baselines, through one pipeline.
//!
//! 1. **Pretraining**: one full-width model per dataset, backbone and seed, trained to
//!    convergence and cached in the checkpoint directory; every method and budget shares it.
//! 2. **Search** (`bet`, `bet-random`, `bet-plain`): for `t = 0..T`, draw `m` budget-exact
//!    candidates ([`crate::action::ActionSampler`]), pick one — strategy I (greedy on predicted
//!    fitness) at `t mod 5 ∈ {0,1,2}`, II (random) at 3, III (nearest in the current predictor's
//!    embedding space to the best evaluated action) at 4, the paper's order — fine-tune a fresh
//!    copy of the pretrained model with those widths for `h` epochs, and score it by eq. 12/13 on
//!    a fixed validation user subset; the pair trains the predictor (2 updates per iteration).
//!    `bet-random` always picks at random; `bet-plain` uses the histogram MLP predictor.
//!    Baselines evaluate fixed candidates the same way: `es` (equal widths), `mr` (uniform random
//!    widths, repaired), `freq` (freq^α for α ∈ {0.25, 0.5, 1}).
//! 3. **Selective retraining**: the top `k` evaluated actions are trained from scratch on the
//!    training split (same schedule, early stopping and seed as every method), the final action
//!    is the best on validation (eq. 14); test is reported, never used to select or stop.
//!    With `refit` (`bet search --refit`), the chosen widths are then trained once more, from
//!    scratch with the same seed, on train ∪ validation ([`crate::split::Split::refit`]) for the
//!    step count the chosen retraining kept, and that model is the result: the reference code's
//!    and CIESS's final fit, with the choice still made on validation.
//! 4. **Export**: the chosen model as a `.bet` file, its metrics measured on the file by
//!    `bet-runtime`.
//!
//! Resume: after every iteration the search records the evaluated fitness values in a small
//! checkpoint. Everything else (candidates, predictor, selections) is a deterministic function of
//! the seed and those values, so a resumed search replays the recorded iterations without
//! fine-tuning and continues, ending with the same file byte for byte. Pretraining and each
//! retraining checkpoint through [`crate::train::train`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

use crate::action::{ActionSampler, SizeAssignment, frequency_widths, random_widths};
use crate::backbone::{Backbone, BackboneKind};
use crate::checkpoint::CheckpointPlan;
use crate::eval::{Metrics, Target, evaluate};
use crate::lightgcn::Placement;
use crate::predictor::{PredictorKind, ReplayBuffer, UPDATES_PER_ITERATION, Widths, replay_updates};
use crate::split::Split;
use crate::train::{TrainConfig, equal_widths, restore, snapshot, train};
use crate::{Error, Result};

/// Which method chooses the widths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    /// BET: DeepSets predictor, strategies I/II/III.
    Bet,
    /// BET with random selection only (Table 2 ablation).
    BetRandom,
    /// BET with the plain histogram-MLP predictor (Table 2 ablation).
    BetPlain,
    /// Equal widths, the remainder to the most frequent.
    Es,
    /// Uniform random widths, repaired to the limit.
    Mr,
    /// Widths proportional to frequency^α, α chosen on validation.
    Freq,
}

impl Method {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Bet => "bet",
            Method::BetRandom => "bet-random",
            Method::BetPlain => "bet-plain",
            Method::Es => "es",
            Method::Mr => "mr",
            Method::Freq => "freq",
        }
    }
}

/// The exponents the freq^α baseline tries: each is a candidate like a search's evaluated actions
/// (fitness, then the top `--retrain-top` retrained), and validation chooses among them.
pub const FREQ_ALPHAS: [f64; 3] = [0.25, 0.5, 1.0];

/// Settings of a search.
#[derive(Clone, Debug)]
pub struct SearchConfig {
    /// The method.
    pub method: Method,
    /// Backbone.
    pub backbone: BackboneKind,
    /// Mask placement: `Some` for LightGCN and NGCF, `None` for MF and NCF.
    pub placement: Option<Placement>,
    /// Full width.
    pub d_max: u32,
    /// The exact limit of stored values.
    pub limit: u64,
    /// Iterations T.
    pub iterations: usize,
    /// Candidates per iteration m.
    pub candidates: usize,
    /// Fine-tuning epochs per evaluated action h.
    pub finetune_epochs: usize,
    /// Actions retrained from scratch.
    pub retrain_top: usize,
    /// Users of the fixed validation subset fitness is measured on.
    pub fitness_users: usize,
    /// Pretraining settings (early stopping on validation).
    pub train: TrainConfig,
    /// Cap on each selective retraining's steps; the retraining otherwise runs as `train` (a
    /// reduced protocol can keep the shared pretraining short and still retrain to convergence).
    pub retrain_max_steps: usize,
    /// Refit the chosen widths on train ∪ validation ([`Split::refit`]) for the steps its
    /// retraining kept, and return that model (the reference code's and CIESS's final fit; the
    /// choice itself is still made on validation, never on test).
    pub refit: bool,
    /// Predictor updates after each evaluated action, each on one pair drawn from all pairs so
    /// far: [`UPDATES_PER_ITERATION`] (2) in the reference and by default; more is a documented
    /// deviation (`bet search --predictor-updates`, docs/search.md).
    pub predictor_updates: usize,
    /// Seed of everything.
    pub seed: u64,
    /// Checkpoint directory (outside the work tree).
    pub checkpoint_dir: PathBuf,
    /// A description of the data and split (fingerprints).
    pub data_fingerprint: String,
}

/// One evaluated action of the search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluated {
    /// Iteration.
    pub iteration: usize,
    /// How it was chosen: `greedy`, `random`, `nearest`, or the baseline's name.
    pub strategy: String,
    /// Predicted fitness when chosen (`None` before the predictor saw data or for baselines).
    pub predicted: Option<f64>,
    /// Measured fitness (eq. 13 on the fitness users over the pretrained model's).
    pub fitness: f64,
    /// Seconds of fine-tuning and evaluation.
    pub seconds: f64,
}

/// The fittest evaluated action (the first of equals): strategy III's anchor, and what
/// `bet search --status` names as the best so far. `None` before any evaluation.
pub fn fittest(evaluated: &[Evaluated]) -> Option<usize> {
    (0..evaluated.len()).max_by(|&a, &b| evaluated[a].fitness.total_cmp(&evaluated[b].fitness).then(b.cmp(&a)))
}

/// One action of the selective retraining.
#[derive(Clone, Debug)]
pub struct Retrained {
    /// Index into [`SearchOutcome::evaluated`].
    pub evaluated: usize,
    /// Steps the retraining ran (early stopping or its cap).
    pub steps: usize,
    /// The step whose state was kept (the best on validation).
    pub best_step: usize,
    /// Validation metrics of the kept state (trainer-evaluated, all users).
    pub validation: Metrics,
    /// The cap of a shorter retraining of these widths that this one continued, if any
    /// ([`crate::checkpoint::ShorterRun`]).
    pub extended_from: Option<usize>,
}

/// The final fit on train ∪ validation (`SearchConfig::refit`).
#[derive(Clone, Debug)]
pub struct Refit {
    /// Steps it ran: the chosen retraining's kept step.
    pub steps: usize,
    /// Wall seconds (across resumes).
    pub seconds: f64,
    /// The step count of a shorter refit of these widths that this one continued, if any.
    pub extended_from: Option<usize>,
    /// The split it trained on ([`crate::split::Split::refit`]), to measure the model on.
    pub split: crate::split::Split,
}

/// What a search did.
pub struct SearchOutcome {
    /// The chosen widths (users then items).
    pub widths: Vec<u32>,
    /// The chosen model, trained from scratch (on train ∪ validation when refit).
    pub model: Box<dyn Backbone>,
    /// The final fit on train ∪ validation, when asked for.
    pub refit: Option<Refit>,
    /// Every evaluated action, in order.
    pub evaluated: Vec<Evaluated>,
    /// The retrained actions, in the order they were retrained.
    pub retrained: Vec<Retrained>,
    /// Steps the pretraining ran (early stopping or its cap).
    pub pretrain_steps: usize,
    /// The pretrained model's validation eq. 13 on the fitness users (eq. 12's denominator).
    pub reference_fitness: f64,
    /// Wall seconds per phase: pretraining, search, retraining (the refit included). Each counts every process that
    /// worked on the phase (from the checkpoints and the search record), so a resumed search
    /// reports its whole cost; a pretraining reused from the cache reports what it cost when it
    /// ran.
    pub seconds: [f64; 3],
}

/// The search's resumable record: the fitness of every evaluated action so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct SearchRecord {
    fingerprint: String,
    /// Fitness bits (exact) per evaluated action, in order.
    fitness_bits: Vec<u64>,
    seconds: Vec<f64>,
    /// Wall seconds of the search phase up to the last save, summed over every process that
    /// ran it (so a resumed search reports its whole cost). Absent in older records.
    #[serde(default)]
    search_seconds: f64,
}

fn load_record(path: &Path, fingerprint: &str) -> Result<SearchRecord> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let r: SearchRecord =
                serde_json::from_slice(&bytes).map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
            if r.fingerprint != fingerprint {
                return Err(Error::Checkpoint(format!("{}: belongs to another search", path.display())));
            }
            Ok(r)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(SearchRecord { fingerprint: fingerprint.to_string(), ..Default::default() })
        }
        Err(e) => Err(Error::Io { path: path.to_path_buf(), source: e }),
    }
}

fn seeded(seed: u64, stream: u64) -> Pcg64Mcg {
    Pcg64Mcg::seed_from_u64(crate::synthetic::splitmix_finalize(
        seed.wrapping_add(stream.wrapping_mul(crate::synthetic::GOLDEN_GAMMA)),
    ))
}

/// A fixed seeded half of the users (the reference samples a fresh 50% per evaluation; a fixed
/// subset removes that noise).
fn fitness_subset(n_users: usize, take: usize, seed: u64) -> Vec<u32> {
    let mut all: Vec<u32> = (0..n_users as u32).collect();
    if take < all.len() {
        let mut rng = seeded(seed, 0xF17);
        for i in 0..take {
            let j = rng.random_range(i..all.len());
            all.swap(i, j);
        }
        all.truncate(take);
        all.sort_unstable();
    }
    all
}

/// What identifies a pretrained model in the checkpoint directory: shared by every method and
/// budget, and across placements exactly when the backbone's full-width model does not depend
/// on the placement ([`BackboneKind::full_width_depends_on_placement`]); sharing it otherwise
/// would fine-tune the wrong model.
fn pretrain_description(config: &SearchConfig) -> String {
    let mut description = format!(
        "bet-pretrain/2 {} model {} d_max {} seed {} config {}",
        config.data_fingerprint,
        config.backbone.name(),
        config.d_max,
        config.seed,
        config.train.key()
    );
    if config.backbone.full_width_depends_on_placement() {
        description.push_str(" placement ");
        description.push_str(Placement::name_of(config.placement));
    }
    description
}

/// The checkpoint of a training from scratch of `widths` (a retraining or the refit): keyed by
/// the phase, the data, backbone, placement, seed, the training settings and the widths, so a
/// resumed search finds it and nothing else shares it. The same training under lower caps are
/// its shorter runs ([`crate::train::plan_with_lower_caps`]): raising `--retrain-max-steps`, or a
/// refit growing with the kept step, continues what a lower cap trained.
fn from_scratch_plan(phase: &str, config: &SearchConfig, train: &TrainConfig, widths: &[u32]) -> CheckpointPlan {
    let widths = crate::checkpoint::fingerprint(&format!("{widths:?}"));
    crate::train::plan_with_lower_caps(&config.checkpoint_dir, train, |train| {
        format!(
            "{phase} {} model {} placement {} seed {} config {} widths {widths}",
            config.data_fingerprint,
            config.backbone.name(),
            Placement::name_of(config.placement),
            config.seed,
            train.key(),
        )
    })
}

/// The search record's fingerprint and file: keyed by the data, the pretrained model, the method,
/// placement, limit, T, m, h and the fitness subset, so a resumed search finds its own.
fn search_record(config: &SearchConfig, pretrain_plan: &CheckpointPlan, fitness_users: usize) -> (String, PathBuf) {
    let mut description = format!(
        "bet-search/2 {} pretrain {} method {} placement {} limit {} T {} m {} h {} fitness users {}",
        config.data_fingerprint,
        pretrain_plan.fingerprint,
        config.method.name(),
        Placement::name_of(config.placement),
        config.limit,
        config.iterations,
        config.candidates,
        config.finetune_epochs,
        fitness_users
    );
    // The reference's predictor schedule leaves the key as it was before the setting existed,
    // so searches recorded then are found again.
    let has_predictor = matches!(config.method, Method::Bet | Method::BetRandom | Method::BetPlain);
    if has_predictor && config.predictor_updates != UPDATES_PER_ITERATION {
        description.push_str(&format!(" predictor updates {}", config.predictor_updates));
    }
    let fingerprint = crate::checkpoint::fingerprint(&description);
    let path = config.checkpoint_dir.join(format!("search-{fingerprint}.json"));
    (fingerprint, path)
}

/// Runs the whole method; `progress(phase, done, total)` follows it.
pub fn run_search(
    split: &Split,
    config: &SearchConfig,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<SearchOutcome> {
    let (nu, ni) = (split.n_users, split.n_items);
    let d = config.d_max as usize;

    // 1. Pretraining, shared by every method and budget of this data, backbone and seed.
    let mut model = config.backbone.build(split, d, config.placement, vec![config.d_max; nu + ni], config.seed)?;
    let pretrain_plan = CheckpointPlan::new(&config.checkpoint_dir, &pretrain_description(config));
    let pretraining = train(&mut *model, split, &config.train, Some(&pretrain_plan), |s, _| {
        progress("pretrain", s, config.train.max_steps)
    })?;
    let pretrained = snapshot(&*model);
    let pretrain_seconds = pretraining.seconds;
    let users = fitness_subset(nu, config.fitness_users, config.seed);
    let reference = evaluate(&*model.scorer(), split, Target::Validation, Some(&users)).ensemble();
    if reference.is_nan() || reference <= 0.0 {
        return Err(Error::Settings("the pretrained model scores 0 on validation; fitness is undefined".into()));
    }

    // 2. The search (or the baseline's candidates), resumable through the fitness record.
    let search_started = Instant::now();
    let (fingerprint, record_path) = search_record(config, &pretrain_plan, users.len());
    let mut record = load_record(&record_path, &fingerprint)?;
    // The search phase's time: what earlier processes recorded, plus this one's since `mark`.
    let mut mark = search_started;
    let finetune = TrainConfig::finetune(split, config.finetune_epochs, config.seed);
    let mut evaluate_widths = |model: &mut dyn Backbone, widths: &[u32], index: usize| -> Result<(f64, f64)> {
        if let Some(&bits) = record.fitness_bits.get(index) {
            return Ok((f64::from_bits(bits), record.seconds.get(index).copied().unwrap_or(0.0)));
        }
        let t = Instant::now();
        restore(model, &pretrained);
        model.set_widths(widths.to_vec());
        train(model, split, &finetune, None, |_, _| {})?;
        let fitness = evaluate(&*model.scorer(), split, Target::Validation, Some(&users)).ensemble() / reference;
        let seconds = t.elapsed().as_secs_f64();
        record.fitness_bits.push(fitness.to_bits());
        record.seconds.push(seconds);
        record.search_seconds += mark.elapsed().as_secs_f64();
        mark = Instant::now();
        let json = serde_json::to_vec(&record).map_err(|e| Error::Checkpoint(e.to_string()))?;
        bet_format::write_atomic(&record_path, &json)?;
        Ok((fitness, seconds))
    };
    let (evaluated, actions) = search_phase(split, config, &mut progress, |widths, index| {
        evaluate_widths(&mut *model, widths, index).map(Some)
    })?;
    let search_seconds = record.search_seconds + mark.elapsed().as_secs_f64();

    // 3. Selective retraining of the top actions from scratch, choice on validation (eq. 14).
    let top = retrain_candidates(&evaluated, &actions, config.retrain_top);
    let mut best: Option<(f64, usize, Box<dyn Backbone>)> = None;
    let mut retrained = vec![];
    // Training time from the checkpoints (whole runs, across resumes) plus this process's
    // validations.
    let mut retrain_seconds = 0.0;
    for (k, &i) in top.iter().enumerate() {
        let (retrain, plan) = retrain_plan(config, &actions[i]);
        let phase = format!("retrain {} of {}", k + 1, top.len());
        let mut fresh = config.backbone.build(split, d, config.placement, actions[i].clone(), config.seed)?;
        let run = train(&mut *fresh, split, &retrain, Some(&plan), |s, _| progress(&phase, s, retrain.max_steps))?;
        retrain_seconds += run.seconds;
        let validation_started = Instant::now();
        let m = evaluate(&*fresh.scorer(), split, Target::Validation, None);
        retrain_seconds += validation_started.elapsed().as_secs_f64();
        retrained.push(Retrained {
            evaluated: i,
            steps: run.steps,
            best_step: run.best_step,
            validation: m,
            extended_from: run.extended_from,
        });
        if best.as_ref().is_none_or(|(score, _, _)| m.ensemble() > *score) {
            best = Some((m.ensemble(), i, fresh));
        }
    }
    let (_, chosen, mut model) = best.ok_or_else(|| Error::Settings("no action to retrain".into()))?;
    let mut refit = None;
    if config.refit {
        // The kept step of the chosen retraining: early stopping chose it on validation, which
        // the refit trains on, so the refit cannot choose again and runs exactly that long.
        let steps = retrained.iter().find(|r| r.evaluated == chosen).map_or(0, |r| r.best_step).max(1);
        progress("refit", 0, steps);
        let refit_split = split.refit();
        let (fit, plan) = refit_plan(config, steps, &actions[chosen]);
        let mut fresh =
            config.backbone.build(&refit_split, d, config.placement, actions[chosen].clone(), config.seed)?;
        let run = train(&mut *fresh, &refit_split, &fit, Some(&plan), |s, _| progress("refit", s, steps))?;
        retrain_seconds += run.seconds;
        refit = Some(Refit {
            steps: run.steps,
            seconds: run.seconds,
            extended_from: run.extended_from,
            split: refit_split,
        });
        model = fresh;
    }
    Ok(SearchOutcome {
        widths: actions[chosen].clone(),
        model,
        refit,
        evaluated,
        retrained,
        pretrain_steps: pretraining.steps,
        reference_fitness: reference,
        seconds: [pretrain_seconds, search_seconds, retrain_seconds],
    })
}

/// One training run's progress, from its checkpoint header (no parameters are used).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrainingStatus {
    /// Steps done.
    pub steps: usize,
    /// The run's step cap.
    pub max_steps: usize,
    /// The run ended (early stopping or its cap).
    pub finished: bool,
    /// Step of the best validation state so far (early stopping; the last step without it).
    pub best_step: usize,
    /// The best validation eq. 13 so far on the training's validation users (trainer-evaluated;
    /// `None` before the first round or without early stopping).
    pub best_validation: Option<f64>,
    /// Wall seconds so far, over every process that worked on the run.
    pub seconds: f64,
    /// Not started under this cap: the cap of the shorter run whose checkpoint it will continue
    /// (the figures above are that run's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extends: Option<usize>,
    /// Validation eq. 13 after each round so far, as `(step, eq. 13)` on the training's
    /// validation users (trainer-evaluated): whether a run was still improving at its cap.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub validation_rounds: Vec<(usize, f64)>,
}

impl TrainingStatus {
    fn read(plan: &CheckpointPlan, train: &TrainConfig) -> Result<Option<TrainingStatus>> {
        // The header alone: the tensors (hundreds of megabytes on Gowalla) are not needed here.
        let status = |h: crate::checkpoint::CheckpointHeader, extends: Option<usize>| TrainingStatus {
            steps: h.step as usize,
            max_steps: train.max_steps,
            finished: h.finished,
            best_step: if train.early_stopping { h.best_step as usize } else { h.step as usize },
            best_validation: h.best_score,
            seconds: h.seconds,
            extends,
            validation_rounds: h
                .rounds
                .iter()
                .map(|&(step, metrics, users)| (step as usize, crate::train::metrics_from(metrics, users).ensemble()))
                .collect(),
        };
        if let Some(h) = crate::checkpoint::CheckpointHeader::peek(&plan.path, &plan.fingerprint)? {
            return Ok(Some(status(h, None)));
        }
        // Not started under this cap: what the shorter run it will continue has done.
        Ok(crate::train::shorter_to_continue(plan, train)?.map(|(run, h)| status(h, Some(run.max_steps))))
    }
}

/// One planned selective retraining.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetrainStatus {
    /// Index into [`SearchStatus::evaluated`].
    pub evaluated: usize,
    /// Its fitness in the search.
    pub fitness: f64,
    /// Its training so far (`None`: not started).
    pub training: Option<TrainingStatus>,
}

/// The final fit's progress (`SearchConfig::refit`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RefitStatus {
    /// Index into [`SearchStatus::evaluated`] of the chosen widths.
    pub evaluated: usize,
    /// Its training so far.
    pub training: TrainingStatus,
}

/// How far a search has come, read from its checkpoints without training anything: what
/// `bet search --status` prints, so a run that a session's end or a kill stopped can report what
/// finished, and with what wall time per phase, before it is resumed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SearchStatus {
    /// The pretraining (`None`: not started).
    pub pretrain: Option<TrainingStatus>,
    /// Actions the search evaluates in all (T, or the baseline's candidates).
    pub planned: usize,
    /// The actions evaluated so far, in order.
    pub evaluated: Vec<Evaluated>,
    /// Wall seconds of the search phase so far (over every process that ran it).
    pub search_seconds: f64,
    /// The planned retrainings, in order; empty until the search is complete.
    pub retrain: Vec<RetrainStatus>,
    /// The final fit, once its checkpoint exists.
    pub refit: Option<RefitStatus>,
    /// Whether a final fit is part of the run.
    pub refit_planned: bool,
}

impl SearchStatus {
    /// The phase the run is in (or would resume in): `pretrain`, `search`, `retrain`, `refit`,
    /// or `export` when every training is done (the file and report are written at the end of
    /// the run that finishes them).
    pub fn phase(&self) -> &'static str {
        let done = |t: &Option<TrainingStatus>| t.as_ref().is_some_and(|t| t.finished);
        if !done(&self.pretrain) {
            "pretrain"
        } else if self.evaluated.len() < self.planned {
            "search"
        } else if !self.retrain.iter().all(|r| done(&r.training)) {
            "retrain"
        } else if self.refit_planned && !self.refit.as_ref().is_some_and(|r| r.training.finished) {
            "refit"
        } else {
            "export"
        }
    }

    /// Wall seconds per phase so far: pretraining, search, retraining (the refit included), as
    /// [`SearchOutcome::seconds`] counts them apart from the final validations.
    pub fn seconds(&self) -> [f64; 3] {
        let retrain: f64 = self.retrain.iter().filter_map(|r| r.training.as_ref()).map(|t| t.seconds).sum();
        let refit = self.refit.as_ref().map_or(0.0, |r| r.training.seconds);
        [self.pretrain.as_ref().map_or(0.0, |t| t.seconds), self.search_seconds, retrain + refit]
    }
}

/// Reads how far the search `config` describes has come, from its checkpoint directory, without
/// training or writing anything. The search's actions are replayed from the record (candidates
/// and predictor, no fine-tuning), so the retrainings it names are the ones the run trains. The
/// refit's widths are chosen on validation after the retrainings; the status finds them by the
/// checkpoint that exists among the retrained actions (the first in retraining order, should
/// more than one exist).
pub fn search_status(split: &Split, config: &SearchConfig) -> Result<SearchStatus> {
    let pretrain_plan = CheckpointPlan::new(&config.checkpoint_dir, &pretrain_description(config));
    let pretrain = TrainingStatus::read(&pretrain_plan, &config.train)?;
    let planned = match config.method {
        Method::Bet | Method::BetRandom | Method::BetPlain => config.iterations,
        Method::Es | Method::Mr => 1,
        Method::Freq => FREQ_ALPHAS.len(),
    };
    let mut status = SearchStatus {
        pretrain,
        planned,
        evaluated: vec![],
        search_seconds: 0.0,
        retrain: vec![],
        refit: None,
        refit_planned: config.refit,
    };
    if !status.pretrain.as_ref().is_some_and(|t| t.finished) {
        return Ok(status);
    }
    let (search_seconds, evaluated, actions) = replay_search(split, config, &pretrain_plan)?;
    status.search_seconds = search_seconds;
    status.evaluated = evaluated;
    if status.evaluated.len() < status.planned {
        return Ok(status);
    }
    for i in retrain_candidates(&status.evaluated, &actions, config.retrain_top) {
        let (retrain, plan) = retrain_plan(config, &actions[i]);
        let training = TrainingStatus::read(&plan, &retrain)?;
        status.retrain.push(RetrainStatus { evaluated: i, fitness: status.evaluated[i].fitness, training });
    }
    if config.refit {
        for r in &status.retrain {
            let Some(kept) = r.training.as_ref().filter(|t| t.finished).map(|t| t.best_step.max(1)) else {
                continue;
            };
            let (fit, plan) = refit_plan(config, kept, &actions[r.evaluated]);
            if let Some(training) = TrainingStatus::read(&plan, &fit)? {
                status.refit = Some(RefitStatus { evaluated: r.evaluated, training });
                break;
            }
        }
    }
    Ok(status)
}

/// The actions a search has evaluated so far and their widths (users then items, each entity's
/// width), replayed from its record in the checkpoint directory without fine-tuning: what an
/// analysis of a finished or running search needs (`examples/predictor_replay.rs`).
pub fn evaluated_actions(split: &Split, config: &SearchConfig) -> Result<(Vec<Evaluated>, Vec<Vec<u32>>)> {
    let pretrain_plan = CheckpointPlan::new(&config.checkpoint_dir, &pretrain_description(config));
    replay_search(split, config, &pretrain_plan).map(|(_, evaluated, actions)| (evaluated, actions))
}

/// The search as far as its record goes, without fine-tuning: the record's search seconds, the
/// evaluated actions and their widths.
fn replay_search(
    split: &Split,
    config: &SearchConfig,
    pretrain_plan: &CheckpointPlan,
) -> Result<(f64, Vec<Evaluated>, Vec<Vec<u32>>)> {
    let users = fitness_subset(split.n_users, config.fitness_users, config.seed);
    let (fingerprint, record_path) = search_record(config, pretrain_plan, users.len());
    let record = load_record(&record_path, &fingerprint)?;
    let (evaluated, actions) = search_phase(split, config, &mut |_, _, _| {}, |_, index| {
        Ok(record
            .fitness_bits
            .get(index)
            .map(|&bits| (f64::from_bits(bits), record.seconds.get(index).copied().unwrap_or(0.0))))
    })?;
    Ok((record.search_seconds, evaluated, actions))
}

/// The search loop (or the baseline's fixed candidates): `evaluate(widths, index)` measures an
/// action (fitness, seconds), or answers `None` to stop before it (`--status` stops where the
/// record ends). Candidates, predictor and selections are a function of the seed and the
/// fitness values, so every caller that feeds the same values sees the same actions.
fn search_phase(
    split: &Split,
    config: &SearchConfig,
    progress: &mut impl FnMut(&str, usize, usize),
    mut evaluate: impl FnMut(&[u32], usize) -> Result<Option<(f64, f64)>>,
) -> Result<(Vec<Evaluated>, Vec<Vec<u32>>)> {
    let (nu, ni) = (split.n_users, split.n_items);
    let (user_freq, item_freq) = (split.user_frequency(), split.item_frequency());
    let mut evaluated: Vec<Evaluated> = vec![];
    let mut actions: Vec<Vec<u32>> = vec![];
    match config.method {
        Method::Bet | Method::BetRandom | Method::BetPlain => {
            let sampler = ActionSampler::new(config.limit, config.d_max, &user_freq, &item_freq)?;
            let kind = if config.method == Method::BetPlain { PredictorKind::Plain } else { PredictorKind::DeepSets };
            let mut predictor = kind.build(&user_freq, &item_freq, config.d_max, config.seed)?;
            let mut buffer = ReplayBuffer::new();
            let mut update_rng = seeded(config.seed, 0x0B0D);
            for t in 0..config.iterations {
                progress("search", t, config.iterations);
                let mut rng = seeded(config.seed, 0x5EA2C4 + t as u64);
                let candidates: Vec<SizeAssignment> =
                    (0..config.candidates.max(1)).map(|_| sampler.sample(&mut rng).widths).collect();
                let views: Vec<Widths<'_>> = candidates.iter().map(|c| Widths::new(&c.users, &c.items)).collect();
                let predicted = predictor.predict_many(&views)?;
                let strategy = if config.method == Method::BetRandom { 3 } else { t % 5 };
                let (pick, name) = match strategy {
                    3 => (rng.random_range(0..candidates.len()), "random"),
                    4 if !evaluated.is_empty() => {
                        // The best evaluated action, re-embedded with the current predictor.
                        let best = fittest(&evaluated).unwrap_or(0);
                        let anchor = predictor.embed(Widths::new(&actions[best][..nu], &actions[best][nu..]))?;
                        let embeddings = predictor.embed_many(&views)?;
                        let distance =
                            |e: &Vec<f64>| e.iter().zip(&anchor).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
                        let pick = (0..candidates.len())
                            .min_by(|&a, &b| {
                                distance(&embeddings[a]).total_cmp(&distance(&embeddings[b])).then(a.cmp(&b))
                            })
                            .unwrap_or(0);
                        (pick, "nearest")
                    }
                    _ => {
                        let pick = (0..candidates.len())
                            .max_by(|&a, &b| predicted[a].total_cmp(&predicted[b]).then(b.cmp(&a)))
                            .unwrap_or(0);
                        (pick, "greedy")
                    }
                };
                let widths = candidates[pick].as_node_widths();
                let Some((fitness, seconds)) = evaluate(&widths, evaluated.len())? else { break };
                buffer.push(views[pick], fitness)?;
                replay_updates(&mut *predictor, &buffer, config.predictor_updates, &mut update_rng)?;
                evaluated.push(Evaluated {
                    iteration: t,
                    strategy: name.into(),
                    predicted: Some(predicted[pick]),
                    fitness,
                    seconds,
                });
                actions.push(widths);
            }
        }
        Method::Es | Method::Mr | Method::Freq => {
            let fixed: Vec<(String, Vec<u32>)> = match config.method {
                Method::Es => vec![("es".into(), equal_widths(config.limit, &user_freq, &item_freq, config.d_max))],
                Method::Mr => {
                    let mut rng = seeded(config.seed, 0x3A);
                    vec![("mr".into(), random_widths(config.limit, config.d_max, nu, ni, &mut rng)?.as_node_widths())]
                }
                _ => FREQ_ALPHAS
                    .into_iter()
                    .map(|a| -> Result<(String, Vec<u32>)> {
                        Ok((
                            format!("freq^{a}"),
                            frequency_widths(config.limit, config.d_max, &user_freq, &item_freq, a)?.as_node_widths(),
                        ))
                    })
                    .collect::<Result<_>>()?,
            };
            let candidates = fixed.len();
            for (i, (name, widths)) in fixed.into_iter().enumerate() {
                progress("search", i, candidates);
                // freq^α picks its α by fitness. ES and MR have one candidate, retrained as is;
                // its fitness is measured all the same (one fine-tuning), so a report can set
                // the baseline beside the actions a search evaluated.
                let Some((fitness, seconds)) = evaluate(&widths, i)? else { break };
                evaluated.push(Evaluated { iteration: i, strategy: name, predicted: None, fitness, seconds });
                actions.push(widths);
            }
        }
    }
    Ok((evaluated, actions))
}

/// The evaluated actions retrained from scratch: the `top` best by fitness, distinct widths
/// only, ties to the earlier iteration.
fn retrain_candidates(evaluated: &[Evaluated], actions: &[Vec<u32>], top: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..evaluated.len()).collect();
    order.sort_by(|&a, &b| {
        let (fa, fb) = (evaluated[a].fitness, evaluated[b].fitness);
        fb.partial_cmp(&fa).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
    });
    let mut distinct: Vec<usize> = vec![];
    for i in order {
        if !distinct.iter().any(|&j| actions[j] == actions[i]) {
            distinct.push(i);
        }
    }
    distinct.into_iter().take(top.max(1)).collect()
}

/// A selective retraining's settings and checkpoint.
fn retrain_plan(config: &SearchConfig, widths: &[u32]) -> (TrainConfig, CheckpointPlan) {
    let retrain = TrainConfig { max_steps: config.retrain_max_steps, ..config.train.clone() };
    let plan = from_scratch_plan("bet-retrain/2", config, &retrain, widths);
    (retrain, plan)
}

/// The final fit's settings and checkpoint: `steps` (the chosen retraining's kept step) on
/// train ∪ validation, without early stopping.
fn refit_plan(config: &SearchConfig, steps: usize, widths: &[u32]) -> (TrainConfig, CheckpointPlan) {
    let fit = TrainConfig { max_steps: steps, early_stopping: false, ..config.train.clone() };
    let plan = from_scratch_plan("bet-refit/2", config, &fit, widths);
    (fit, plan)
}

/// An SVG plot of a search: measured fitness per iteration (dots), predicted fitness (circles)
/// and the best so far (a step line).
pub fn search_svg(evaluated: &[Evaluated], title: &str) -> String {
    let (w, h, pad) = (640.0, 360.0, 48.0);
    let values: Vec<f64> =
        evaluated.iter().flat_map(|e| [Some(e.fitness), e.predicted]).flatten().filter(|v| v.is_finite()).collect();
    let lo = values.iter().cloned().fold(f64::INFINITY, f64::min).min(1.0);
    let hi = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max).max(lo + 1e-9);
    let n = evaluated.len().max(2) as f64;
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (n - 1.0);
    let y = |v: f64| h - pad - (h - 2.0 * pad) * (v - lo) / (hi - lo);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{pad}\" y=\"20\">{}</text>\n\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"black\"/>\n\
         <text x=\"4\" y=\"{}\">{hi:.3}</text><text x=\"4\" y=\"{}\">{lo:.3}</text>\n\
         <text x=\"{}\" y=\"{}\">iteration</text><text x=\"{pad}\" y=\"{}\">fitness (eq. 12): ● measured ○ predicted — best so far</text>\n",
        title.replace('&', "&amp;").replace('<', "&lt;"),
        h - pad,
        w - pad,
        h - pad,
        h - pad,
        pad + 4.0,
        h - pad,
        w / 2.0,
        h - 12.0,
        h - 28.0,
    );
    let mut best = f64::NEG_INFINITY;
    let mut path = String::new();
    for (i, e) in evaluated.iter().enumerate() {
        if e.fitness.is_finite() {
            s += &format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#1f77b4\"/>\n", x(i), y(e.fitness));
            best = best.max(e.fitness);
        }
        if let Some(p) = e.predicted.filter(|p| p.is_finite()) {
            s += &format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"none\" stroke=\"#ff7f0e\"/>\n", x(i), y(p));
        }
        if best.is_finite() {
            path += &format!("{}{:.1},{:.1} ", if path.is_empty() { "M" } else { "L" }, x(i), y(best));
        }
    }
    if !path.is_empty() {
        s += &format!("<path d=\"{path}\" fill=\"none\" stroke=\"#2ca02c\" stroke-width=\"2\"/>\n");
    }
    s += "</svg>\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use crate::split::Protocol;

    fn scores(model: &dyn Backbone, n_users: usize) -> Vec<f32> {
        let scorer = model.scorer();
        let users: Vec<u32> = (0..n_users as u32).collect();
        let mut out = vec![0.0; n_users * scorer.n_items()];
        scorer.score_users(&users, &mut out);
        out
    }

    /// The pretraining is shared across placements exactly when the full-width model is the same
    /// model under each: LightGCN yes, NGCF no (its `output` keeps d_max of 4·d_max values).
    #[test]
    fn fittest_is_the_first_of_the_fittest() {
        let at = |fitness: f64| Evaluated {
            iteration: 0,
            strategy: "greedy".into(),
            predicted: None,
            fitness,
            seconds: 0.0,
        };
        assert_eq!(fittest(&[]), None);
        assert_eq!(fittest(&[at(0.5), at(0.9), at(0.7), at(0.9)]), Some(1), "ties go to the earlier action");
        assert_eq!(fittest(&[at(0.9), at(0.2)]), Some(0));
        assert_eq!(fittest(&[at(0.1), at(0.2), at(0.3)]), Some(2));
    }

    #[test]
    fn pretraining_is_shared_across_placements_only_when_full_width_models_agree() {
        let pairs = [(0, 0), (0, 1), (1, 1), (1, 2), (2, 3), (2, 0), (3, 2), (3, 3)];
        let split = Split::new(&Dataset::from_pairs("t", 4, 4, &pairs), Protocol::Given, 1).unwrap();
        let d = 4usize;
        let config = |backbone, placement| SearchConfig {
            method: Method::Es,
            backbone,
            placement: Some(placement),
            d_max: d as u32,
            limit: 16,
            iterations: 1,
            candidates: 1,
            finetune_epochs: 1,
            retrain_top: 1,
            fitness_users: 4,
            train: TrainConfig::default(),
            retrain_max_steps: TrainConfig::default().max_steps,
            refit: false,
            predictor_updates: UPDATES_PER_ITERATION,
            seed: 1,
            checkpoint_dir: PathBuf::from("unused"),
            data_fingerprint: "t".into(),
        };
        for kind in [BackboneKind::LightGcn, BackboneKind::Ngcf] {
            let full = |placement| kind.build(&split, d, Some(placement), vec![d as u32; 8], 3).unwrap();
            let reference = scores(&*full(Placement::Input), 4);
            for placement in [Placement::Output, Placement::Both] {
                let same_model = scores(&*full(placement), 4) == reference;
                let same_key = pretrain_description(&config(kind, placement))
                    == pretrain_description(&config(kind, Placement::Input));
                assert_eq!(same_model, kind == BackboneKind::LightGcn, "{kind:?} {placement:?}");
                assert_eq!(same_model, !kind.full_width_depends_on_placement(), "{kind:?} {placement:?}");
                assert_eq!(same_key, same_model, "{kind:?} {placement:?}: the cache key must follow the model");
            }
        }
    }

    /// A BET search on [`crate::split::small_test_split`] in seconds: T 3, m 4, h 1, top 2, with the refit.
    fn small_config(dir: &Path, train: TrainConfig, retrain_max_steps: usize) -> SearchConfig {
        SearchConfig {
            method: Method::Bet,
            backbone: BackboneKind::LightGcn,
            placement: Some(Placement::Input),
            d_max: 4,
            limit: 140,
            iterations: 3,
            candidates: 4,
            finetune_epochs: 1,
            retrain_top: 2,
            fitness_users: 15,
            train,
            retrain_max_steps,
            refit: true,
            predictor_updates: UPDATES_PER_ITERATION,
            seed: 1,
            checkpoint_dir: dir.to_path_buf(),
            data_fingerprint: "t".into(),
        }
    }

    /// `search_status` follows a run phase by phase: a finished run reads as the outcome said, and
    /// a retraining whose checkpoint is gone (a kill before its first save) reads as not
    /// started, with the search and the other retraining intact.
    #[test]
    fn status_reads_each_phase_from_the_checkpoints() {
        let split = crate::split::small_test_split();
        let dir = tempfile::tempdir().unwrap();
        let config =
            small_config(dir.path(), TrainConfig { round_steps: 2, max_steps: 4, ..TrainConfig::default() }, 4);
        let nothing = search_status(&split, &config).unwrap();
        assert_eq!((nothing.phase(), nothing.pretrain.is_none()), ("pretrain", true));
        let outcome = run_search(&split, &config, |_, _, _| {}).unwrap();
        let done = search_status(&split, &config).unwrap();
        assert_eq!(done.phase(), "export");
        assert_eq!(done.evaluated, outcome.evaluated);
        let indices: Vec<usize> = done.retrain.iter().map(|r| r.evaluated).collect();
        assert_eq!(indices, outcome.retrained.iter().map(|r| r.evaluated).collect::<Vec<_>>());
        assert_eq!(indices.len(), 2);
        assert_eq!(done.refit.as_ref().map(|r| r.training.steps), outcome.refit.as_ref().map(|r| r.steps));
        // Each retraining's validation history: a round every 2 steps, its best the best kept.
        for r in &done.retrain {
            let t = r.training.as_ref().unwrap();
            let steps: Vec<usize> = t.validation_rounds.iter().map(|&(s, _)| s).collect();
            assert_eq!(steps, (1..=t.steps / 2).map(|k| 2 * k).collect::<Vec<_>>());
            let best = t.validation_rounds.iter().map(|&(_, v)| v).fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(Some(best), t.best_validation);
        }
        // The checkpoints hold the time up to their last save; the outcome's phases end later.
        for (phase, (status, whole)) in done.seconds().into_iter().zip(outcome.seconds).enumerate() {
            assert!(status > 0.0 && status <= whole, "phase {phase}: status {status} s, outcome {whole} s");
        }

        let pretrain_plan = CheckpointPlan::new(&config.checkpoint_dir, &pretrain_description(&config));
        let (_, _, actions) = replay_search(&split, &config, &pretrain_plan).unwrap();
        std::fs::remove_file(retrain_plan(&config, &actions[indices[1]]).1.path).unwrap();
        let cut = search_status(&split, &config).unwrap();
        assert_eq!(cut.phase(), "retrain");
        assert_eq!(cut.evaluated, outcome.evaluated);
        assert!(cut.retrain[0].training.as_ref().is_some_and(|t| t.finished) && cut.retrain[1].training.is_none());
    }

    /// Raising the retraining cap continues every retraining (and the refit) from what the lower
    /// cap trained, and ends with the model a search at the higher cap trains from scratch.
    #[test]
    fn a_higher_retraining_cap_continues_the_lower_caps_runs() {
        let split = crate::split::small_test_split();
        let (dir, fresh_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let train = TrainConfig { round_steps: 2, max_steps: 4, patience: 50, ..TrainConfig::default() };
        let config = |cap: usize, dir: &Path| small_config(dir, train.clone(), cap);
        let lower = run_search(&split, &config(4, dir.path()), |_, _, _| {}).unwrap();
        assert!(lower.retrained.iter().all(|r| r.steps == 4 && r.extended_from.is_none()));
        let status = search_status(&split, &config(10, dir.path())).unwrap();
        assert_eq!(status.phase(), "retrain");
        for r in &status.retrain {
            let t = r.training.as_ref().unwrap();
            assert_eq!((t.steps, t.max_steps, t.finished, t.extends), (4, 10, false, Some(4)));
        }
        let higher = run_search(&split, &config(10, dir.path()), |_, _, _| {}).unwrap();
        let scratch = run_search(&split, &config(10, fresh_dir.path()), |_, _, _| {}).unwrap();
        assert!(higher.retrained.iter().all(|r| r.extended_from == Some(4) && r.steps == 10));
        assert!(scratch.retrained.iter().all(|r| r.extended_from.is_none()));
        let kept = |o: &SearchOutcome| o.retrained.iter().map(|r| (r.evaluated, r.best_step)).collect::<Vec<_>>();
        assert_eq!(kept(&higher), kept(&scratch));
        assert_eq!(higher.widths, scratch.widths);
        assert_eq!(higher.refit.as_ref().map(|r| r.steps), scratch.refit.as_ref().map(|r| r.steps));
        assert_eq!(snapshot(&*higher.model), snapshot(&*scratch.model));
    }

    /// `--predictor-updates` names a search's record only when it departs from the reference's
    /// 2 and the method has a predictor: records written before the setting existed are found
    /// again, and a baseline is not recomputed for a setting it does not use.
    #[test]
    fn predictor_updates_name_the_search_only_when_they_matter() {
        let dir = Path::new("unused");
        let bet = small_config(dir, TrainConfig::default(), 4);
        let plan = CheckpointPlan::new(dir, "pretraining");
        let key = |c: &SearchConfig| search_record(c, &plan, 15).0;
        let more = |c: &SearchConfig| SearchConfig { predictor_updates: 8, ..c.clone() };
        assert_ne!(key(&bet), key(&more(&bet)));
        let es = SearchConfig { method: Method::Es, ..bet.clone() };
        assert_eq!(key(&es), key(&more(&es)));
        let description = format!(
            "bet-search/2 t pretrain {} method bet placement input limit 140 T 3 m 4 h 1 fitness users 15",
            plan.fingerprint
        );
        assert_eq!(key(&bet), crate::checkpoint::fingerprint(&description), "the reference's key is unchanged");
    }
}
