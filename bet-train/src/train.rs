//! BPR training of any [`Backbone`] with per-entity widths: the reference's sampler, Adam with its
//! schedules, early stopping on validation, fine-tuning, checkpoints and resume.
//!
//! - Sampler (`bet-algorithm.md` §1): a batch is 10,000 distinct users drawn uniformly from users
//!   with training items (with replacement when there are fewer); each gets one positive drawn
//!   uniformly from its training items and one negative drawn uniformly from all items, redrawn
//!   until it is not a training item. Step `t`'s batch comes from a generator seeded by
//!   `(seed, t)`, so a run is a function of the seed and a resumed run needs no generator state.
//! - Adam (β 0.9/0.999, ε 1e-8, one per tensor). Training: lr 0.03 × 0.95 every 200 steps, floor
//!   0.001 ([`Schedule::TRAIN`]); fine-tuning: a fresh Adam, lr 0.03 × 0.98 every 200 steps,
//!   floor 0.001, for a number of epochs of `ceil(train pairs / 10,000)` steps and no early
//!   stopping ([`Schedule::FINETUNE`], [`TrainConfig::finetune`]).
//! - Rounds of `round_steps` steps; after each, validation on a fixed user subset; the best state
//!   is kept (`>=`, eq. 13); training stops after `patience` rounds without improvement.
//! - With a [`CheckpointPlan`], the whole state is saved after every round and at least every
//!   `every` (see [`crate::checkpoint`]); a run finds its checkpoint and resumes from it.

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

use crate::Result;
use crate::backbone::Backbone;
use crate::checkpoint::{CheckpointHeader, CheckpointPlan, TrainState};
use crate::eval::{Metrics, Target, evaluate};
use crate::split::Split;

/// Training settings.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Users per batch.
    pub batch_users: usize,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Regularisation weight (`None`: the backbone's reference value).
    pub reg: Option<f32>,
    /// Steps per round (between validations).
    pub round_steps: usize,
    /// Rounds without improvement before stopping.
    pub patience: usize,
    /// Hard cap on steps.
    pub max_steps: usize,
    /// Seed of initialisation and sampling.
    pub seed: u64,
    /// Users evaluated on validation after each round (a fixed seeded subset; all when larger
    /// than the user count).
    pub validation_users: usize,
    /// Validate after each round, keep the best state and stop early. Off for fine-tuning,
    /// which runs exactly `max_steps` steps and keeps the last state.
    pub early_stopping: bool,
}

/// A learning-rate schedule: `initial · decay^(step / every)`, at least `floor`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Initial rate.
    pub initial: f32,
    /// Factor applied every `every` steps.
    pub decay: f32,
    /// Steps between decays.
    pub every: usize,
    /// Lowest rate.
    pub floor: f32,
}

impl Schedule {
    /// Pretraining and retraining (the reference's `train_till_convergence`).
    pub const TRAIN: Schedule = Schedule { initial: 0.03, decay: 0.95, every: 200, floor: 0.001 };
    /// Fine-tuning per search iteration (the reference's `train_T_epochs`).
    pub const FINETUNE: Schedule = Schedule { initial: 0.03, decay: 0.98, every: 200, floor: 0.001 };

    /// The rate at `step`.
    pub fn rate(&self, step: usize) -> f32 {
        (self.initial * self.decay.powi((step / self.every.max(1)) as i32)).max(self.floor)
    }
}

/// Steps in one epoch: `ceil(training pairs / batch users)` (the reference's; 52 on Gowalla).
pub fn epoch_steps(split: &Split, batch_users: usize) -> usize {
    split.train.len().div_ceil(batch_users.max(1)).max(1)
}

impl TrainConfig {
    /// Fine-tuning for `epochs` epochs: the fine-tuning schedule, no validation, no early stop.
    pub fn finetune(split: &Split, epochs: usize, seed: u64) -> TrainConfig {
        let base = TrainConfig::default();
        TrainConfig {
            schedule: Schedule::FINETUNE,
            max_steps: epochs * epoch_steps(split, base.batch_users),
            round_steps: usize::MAX,
            early_stopping: false,
            seed,
            ..base
        }
    }
}

impl TrainConfig {
    /// The settings as they go into a checkpoint's key: every field by name, in a fixed order and
    /// format. A checkpoint is found again only under the same key, so the text must change
    /// exactly when the training would (not when a `Debug` format or a field's position does):
    /// the destructuring below names every field, so adding one does not compile until it is
    /// written here too, and a unit test pins the text.
    pub fn key(&self) -> String {
        let TrainConfig {
            batch_users,
            schedule: Schedule { initial, decay, every, floor },
            reg,
            round_steps,
            patience,
            max_steps,
            seed,
            validation_users,
            early_stopping,
        } = self;
        let reg = reg.map_or_else(|| "reference".to_string(), |r| r.to_string());
        format!(
            "batch users {batch_users} rate {initial} decay {decay} every {every} floor {floor} reg {reg} \
             round steps {round_steps} patience {patience} max steps {max_steps} seed {seed} \
             validation users {validation_users} early stopping {early_stopping}"
        )
    }
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            batch_users: 10_000,
            schedule: Schedule::TRAIN,
            reg: None,
            round_steps: 2000,
            patience: 2,
            max_steps: 100_000,
            seed: 1,
            validation_users: usize::MAX,
            early_stopping: true,
        }
    }
}

/// The BPR sampler.
pub struct Sampler {
    seed: u64,
    active: Vec<u32>,
}

impl Sampler {
    /// A sampler over users with training items.
    pub fn new(split: &Split, seed: u64) -> Sampler {
        let active = (0..split.n_users as u32).filter(|&u| !split.train.of(u as usize).is_empty()).collect();
        Sampler { seed, active }
    }

    /// The batch of step `step`: `users` triples `(user, positive, negative)`, a function of the
    /// seed and the step only.
    pub fn batch(&self, split: &Split, users: usize, step: u64) -> Vec<(u32, u32, u32)> {
        let mut rng = Pcg64Mcg::seed_from_u64(crate::synthetic::splitmix_finalize(
            (self.seed ^ 0x5EED_5A3F).wrapping_add(step.wrapping_mul(crate::synthetic::GOLDEN_GAMMA)),
        ));
        if self.active.is_empty() {
            return vec![];
        }
        let chosen: Vec<u32> = if self.active.len() > users {
            // Partial Fisher-Yates: `users` distinct users.
            let mut pool = self.active.clone();
            for i in 0..users {
                let j = rng.random_range(i..pool.len());
                pool.swap(i, j);
            }
            pool.truncate(users);
            pool
        } else {
            (0..users).map(|_| self.active[rng.random_range(0..self.active.len())]).collect()
        };
        chosen
            .into_iter()
            .map(|u| {
                let items = split.train.of(u as usize);
                let p = items[rng.random_range(0..items.len())];
                // A user who has every item has no negative; such a user cannot occur in a split
                // with held-out items, but the loop must end anyway.
                let mut n = p;
                for _ in 0..10_000 {
                    let c = rng.random_range(0..split.n_items as u32);
                    if items.binary_search(&c).is_err() {
                        n = c;
                        break;
                    }
                }
                (u, p, n)
            })
            .collect()
    }
}

/// Adam over a flat parameter vector.
pub struct Adam {
    pub(crate) m: Vec<f32>,
    pub(crate) v: Vec<f32>,
    pub(crate) t: i32,
}

impl Adam {
    /// For `n` parameters.
    pub fn new(n: usize) -> Adam {
        Adam { m: vec![0.0; n], v: vec![0.0; n], t: 0 }
    }
    /// One update of `params` with `grad` at learning rate `lr` (elementwise, in parallel
    /// blocks: the result does not depend on the thread count).
    pub fn step(&mut self, params: &mut [f32], grad: &[f32], lr: f32) {
        use rayon::prelude::*;
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        self.t += 1;
        let (c1, c2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        const BLOCK: usize = 1 << 14;
        params
            .par_chunks_mut(BLOCK)
            .zip(grad.par_chunks(BLOCK))
            .zip(self.m.par_chunks_mut(BLOCK))
            .zip(self.v.par_chunks_mut(BLOCK))
            .for_each(|(((p, g), m), v)| {
                for (((p, g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                }
            });
    }
}

/// The reference's training schedule from `initial`: ×0.95 every 200 steps, floor 0.001.
pub fn learning_rate(initial: f32, step: usize) -> f32 {
    Schedule { initial, ..Schedule::TRAIN }.rate(step)
}

/// Normal(0, σ²) values from a seeded stream (Box–Muller).
pub fn normal_init(n: usize, sigma: f32, seed: u64) -> Vec<f32> {
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0x1A17_1A17);
    (0..n)
        .map(|_| {
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random::<f64>();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32 * sigma
        })
        .collect()
}

/// What a training run did.
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// Steps run (in total, including steps before a resume).
    pub steps: usize,
    /// Step of the best validation state.
    pub best_step: usize,
    /// Validation metrics after each round (trainer-evaluated).
    pub rounds: Vec<(usize, Metrics)>,
    /// Mean loss of the last round.
    pub last_loss: f32,
    /// The step this run resumed from (0 for a fresh run).
    pub resumed_from: usize,
    /// The cap of the shorter run whose checkpoint this run continued, if it did
    /// ([`crate::checkpoint::ShorterRun`]).
    pub extended_from: Option<usize>,
    /// Wall seconds of the whole run, including those of processes before a resume (kept in
    /// the checkpoint; without one, this process's time).
    pub seconds: f64,
}

fn metrics_of(m: &Metrics) -> [f64; 6] {
    [m.recall[0], m.recall[1], m.recall[2], m.ndcg[0], m.ndcg[1], m.ndcg[2]]
}

pub(crate) fn metrics_from(a: [f64; 6], users: usize) -> Metrics {
    Metrics { recall: [a[0], a[1], a[2]], ndcg: [a[3], a[4], a[5]], users, skipped: 0 }
}

/// A copy of every parameter tensor.
pub(crate) fn snapshot(model: &dyn Backbone) -> Vec<Vec<f32>> {
    model.tensors().iter().map(|t| t.to_vec()).collect()
}

/// Copies `from` back into the parameter tensors.
pub(crate) fn restore(model: &mut dyn Backbone, from: &[Vec<f32>]) {
    for (dst, src) in model.tensors_mut().into_iter().zip(from) {
        dst.copy_from_slice(src);
    }
}

/// Trains `model` (early stopping on validation, or a fixed number of steps for fine-tuning);
/// leaves the best (or last) state in it. `on_step(step, loss)` follows progress.
pub fn train(
    model: &mut dyn Backbone,
    split: &Split,
    config: &TrainConfig,
    checkpoint: Option<&CheckpointPlan>,
    mut on_step: impl FnMut(usize, f32),
) -> Result<TrainReport> {
    let sampler = Sampler::new(split, config.seed);
    let shapes = model.tensor_shapes();
    let mut adam: Vec<Adam> = shapes.iter().map(|&n| Adam::new(n)).collect();
    let reg = config.reg.unwrap_or_else(|| model.default_reg());
    let validation_users: Vec<u32> = {
        let mut all: Vec<u32> = (0..split.n_users as u32).collect();
        if config.validation_users < all.len() {
            let mut rng = Pcg64Mcg::seed_from_u64(config.seed ^ 0xE7A1);
            for i in 0..config.validation_users {
                let j = rng.random_range(i..all.len());
                all.swap(i, j);
            }
            all.truncate(config.validation_users);
            all.sort_unstable();
        }
        all
    };
    let mut header = CheckpointHeader {
        fingerprint: checkpoint.map(|c| c.fingerprint.clone()).unwrap_or_default(),
        ..CheckpointHeader::default()
    };
    let mut best: Vec<Vec<f32>> = vec![];
    let mut resumed_from = 0;
    let mut extended_from = None;
    let loaded = match checkpoint {
        Some(plan) => match TrainState::load(&plan.path, &plan.fingerprint)? {
            Some(state) => Some((plan, state)),
            None => continue_shorter(plan, config)?.map(|(cap, state)| {
                extended_from = Some(cap);
                (plan, state)
            }),
        },
        None => None,
    };
    if let Some((plan, state)) = loaded {
        let ok = state.params.iter().map(|t| t.len()).eq(shapes.iter().copied())
            && state.adam_m.iter().map(|t| t.len()).eq(shapes.iter().copied())
            && state.adam_v.iter().map(|t| t.len()).eq(shapes.iter().copied());
        if !ok {
            return Err(crate::Error::Checkpoint(format!(
                "{}: tensor shapes do not match this model",
                plan.path.display()
            )));
        }
        restore(model, &state.params);
        for ((a, m), v) in adam.iter_mut().zip(state.adam_m).zip(state.adam_v) {
            a.m = m;
            a.v = v;
            a.t = state.header.adam_t;
        }
        best = state.best;
        header = state.header;
        resumed_from = header.step as usize;
    }
    let save = |model: &dyn Backbone, adam: &[Adam], best: &[Vec<f32>], header: &CheckpointHeader| -> Result<()> {
        if let Some(plan) = checkpoint {
            let state = TrainState {
                header: CheckpointHeader { adam_t: adam.first().map_or(0, |a| a.t), ..header.clone() },
                params: snapshot(model),
                adam_m: adam.iter().map(|a| a.m.clone()).collect(),
                adam_v: adam.iter().map(|a| a.v.clone()).collect(),
                best: best.to_vec(),
            };
            state.save(&plan.path)?;
        }
        Ok(())
    };
    let mut last_save = std::time::Instant::now();
    // Time already spent (by earlier processes) plus this process's, stored at every save.
    let (seconds_before, started) = (header.seconds, std::time::Instant::now());
    while !header.finished && (header.step as usize) < config.max_steps {
        let step = header.step as usize;
        let batch = sampler.batch(split, config.batch_users, header.step);
        let loss = model.step(&batch, reg, &mut adam, config.schedule.rate(step));
        header.loss_sum += f64::from(loss);
        header.step += 1;
        let step = header.step as usize;
        on_step(step, loss);
        let round_done = step.is_multiple_of(config.round_steps.max(1)) || step == config.max_steps;
        if round_done {
            let since_round = (step - 1) % config.round_steps.max(1) + 1;
            header.round_losses.push(header.loss_sum / since_round as f64);
            header.loss_sum = 0.0;
            if config.early_stopping {
                let m = evaluate(&*model.scorer(), split, Target::Validation, Some(&validation_users));
                header.rounds.push((header.step, metrics_of(&m), m.users));
                if header.best_score.is_none_or(|b| m.ensemble() >= b) {
                    header.best_score = Some(m.ensemble());
                    header.best_step = header.step;
                    best = snapshot(model);
                    header.since_best = 0;
                } else {
                    header.since_best += 1;
                    if header.since_best >= config.patience as u64 {
                        header.finished = true;
                    }
                }
            }
        }
        if header.step as usize >= config.max_steps {
            header.finished = true;
        }
        let due = round_done
            || header.finished
            || checkpoint.is_some_and(|c| {
                last_save.elapsed() >= c.every || c.every_steps.is_some_and(|n| header.step.is_multiple_of(n.max(1)))
            });
        if due && checkpoint.is_some() {
            let stopped_early = header.finished && stopped_early(&header, config) && !best.is_empty();
            if stopped_early {
                // The final model is the best state: store it as the parameters. A run that
                // reached its cap instead keeps its last state (the best one is in its own
                // group and restored below), so a longer cap can continue it.
                restore(model, &best);
            }
            header.last_state = !stopped_early;
            header.seconds = seconds_before + started.elapsed().as_secs_f64();
            save(&*model, &adam, &best, &header)?;
            last_save = std::time::Instant::now();
        }
    }
    if config.early_stopping && !best.is_empty() {
        restore(model, &best);
    }
    let rounds = header.rounds.iter().map(|&(s, m, users)| (s as usize, metrics_from(m, users))).collect();
    Ok(TrainReport {
        steps: header.step as usize,
        best_step: if config.early_stopping { header.best_step as usize } else { header.step as usize },
        rounds,
        last_loss: header.round_losses.last().copied().unwrap_or(0.0) as f32,
        resumed_from,
        extended_from,
        seconds: seconds_before + started.elapsed().as_secs_f64(),
    })
}

/// Most lower caps [`plan_with_lower_caps`] lists.
pub const MAX_SHORTER_CAPS: usize = 1000;

/// The checkpoint plan of the training `config` described by `describe(config)`, with the same
/// training under every lower cap at a round boundary (highest first, at most
/// [`MAX_SHORTER_CAPS`]) as its shorter runs: a run with a raised cap continues what a lower cap
/// trained where that is exactly the same run ([`can_continue`]).
pub fn plan_with_lower_caps(
    dir: &std::path::Path,
    config: &TrainConfig,
    describe: impl Fn(&TrainConfig) -> String,
) -> CheckpointPlan {
    let mut plan = CheckpointPlan::new(dir, &describe(config));
    let round = config.round_steps.max(1);
    let mut cap = config.max_steps.saturating_sub(1) / round * round;
    while cap > 0 && plan.shorter.len() < MAX_SHORTER_CAPS {
        let shorter = TrainConfig { max_steps: cap, ..config.clone() };
        plan = plan.with_shorter(cap, CheckpointPlan::new(dir, &describe(&shorter)));
        cap -= round;
    }
    plan
}

/// Whether the run whose checkpoint header is `h` stopped early (patience ran out) rather than
/// at its cap.
fn stopped_early(h: &CheckpointHeader, config: &TrainConfig) -> bool {
    config.early_stopping && h.since_best >= config.patience as u64
}

/// Whether a run with `config` can take over the checkpoint (header `h`) of the same training
/// capped at `shorter_cap`, and be the run it would have been from scratch (see
/// [`crate::checkpoint::ShorterRun`]): the shorter run was interrupted before its cap, or it
/// finished at a round boundary (validation happened where the longer run validates too) and
/// either stopped early (the longer run stops there as well) or stored its last state.
/// Checkpoints written before [`CheckpointHeader::last_state`] existed stored the best state
/// at the cap; they qualify only when the best state is the last one.
pub fn can_continue(h: &CheckpointHeader, shorter_cap: usize, config: &TrainConfig) -> bool {
    let Ok(step) = usize::try_from(h.step) else { return false };
    if shorter_cap >= config.max_steps || step > shorter_cap {
        return false;
    }
    if !h.finished {
        return true;
    }
    if !step.is_multiple_of(config.round_steps.max(1)) {
        return false;
    }
    stopped_early(h, config)
        || (step == shorter_cap && (h.last_state || !config.early_stopping || h.best_step == h.step))
}

/// The first shorter run of `plan` that a run with `config` can continue: its cap and its
/// header as this run takes it over (a run that reached the lower cap goes on, so it is not
/// finished; one that stopped early is final). `--status` reports it; [`train`] loads it.
pub(crate) fn shorter_to_continue<'p>(
    plan: &'p CheckpointPlan,
    config: &TrainConfig,
) -> Result<Option<(&'p crate::checkpoint::ShorterRun, CheckpointHeader)>> {
    for run in &plan.shorter {
        let Some(mut header) = CheckpointHeader::peek(&run.path, &run.fingerprint)? else { continue };
        if can_continue(&header, run.max_steps, config) {
            header.finished = header.finished && stopped_early(&header, config);
            return Ok(Some((run, header)));
        }
    }
    Ok(None)
}

/// The state of the shorter run [`shorter_to_continue`] finds, with its cap, marked as this
/// run's; `None` when there is none.
fn continue_shorter(plan: &CheckpointPlan, config: &TrainConfig) -> Result<Option<(usize, TrainState)>> {
    let Some((run, header)) = shorter_to_continue(plan, config)? else { return Ok(None) };
    let Some(mut state) = TrainState::load(&run.path, &run.fingerprint)? else { return Ok(None) };
    state.header =
        CheckpointHeader { fingerprint: plan.fingerprint.clone(), finished: header.finished, ..state.header };
    Ok(Some((run.max_steps, state)))
}

/// Equal widths under `limit` (the ES baseline): every entity gets `limit / n`, capped at
/// `d_max`; the remainder goes one value each to the most frequent entities (users and items
/// ranked together by training frequency, ties by index).
pub fn equal_widths(limit: u64, user_freq: &[u32], item_freq: &[u32], d_max: u32) -> Vec<u32> {
    let n = (user_freq.len() + item_freq.len()) as u64;
    let base = (limit / n).min(u64::from(d_max)) as u32;
    let mut widths = vec![base; n as usize];
    if base < d_max {
        let mut order: Vec<usize> = (0..n as usize).collect();
        let freq = |k: usize| if k < user_freq.len() { user_freq[k] } else { item_freq[k - user_freq.len()] };
        order.sort_by(|&a, &b| freq(b).cmp(&freq(a)).then(a.cmp(&b)));
        for &k in order.iter().take((limit - u64::from(base) * n) as usize) {
            widths[k] += 1;
        }
    }
    widths
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checkpoint key's text is pinned: changing it orphans every checkpoint cached under
    /// the old one, so it may change only on purpose (with the key's version), never because a
    /// `Debug` format or a field moved. Every field that changes the training changes the key.
    #[test]
    fn the_checkpoint_key_names_every_setting_and_is_pinned() {
        let base = TrainConfig::default();
        assert_eq!(
            base.key(),
            "batch users 10000 rate 0.03 decay 0.95 every 200 floor 0.001 reg reference round steps 2000 \
             patience 2 max steps 100000 seed 1 validation users 18446744073709551615 early stopping true"
        );
        let variants = [
            TrainConfig { batch_users: 2048, ..base.clone() },
            TrainConfig { schedule: Schedule::FINETUNE, ..base.clone() },
            TrainConfig { schedule: Schedule { floor: 0.002, ..Schedule::TRAIN }, ..base.clone() },
            TrainConfig { schedule: Schedule { every: 100, ..Schedule::TRAIN }, ..base.clone() },
            TrainConfig { schedule: Schedule { initial: 0.01, ..Schedule::TRAIN }, ..base.clone() },
            TrainConfig { reg: Some(1e-4), ..base.clone() },
            TrainConfig { round_steps: 500, ..base.clone() },
            TrainConfig { patience: 3, ..base.clone() },
            TrainConfig { max_steps: 1500, ..base.clone() },
            TrainConfig { seed: 2, ..base.clone() },
            TrainConfig { validation_users: 100, ..base.clone() },
            TrainConfig { early_stopping: false, ..base.clone() },
        ];
        let mut keys: Vec<String> = variants.iter().map(TrainConfig::key).collect();
        keys.push(base.key());
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "two settings share a key");
    }

    #[test]
    fn schedule_and_equal_widths() {
        assert_eq!(learning_rate(0.03, 0), 0.03);
        assert!((learning_rate(0.03, 200) - 0.0285).abs() < 1e-7);
        assert_eq!(learning_rate(0.03, 1_000_000), 0.001);
        let w = equal_widths(23, &[5, 1], &[9, 0, 2], 128);
        assert_eq!(w, vec![5, 4, 5, 4, 5]); // 23 = 5 * 4 + 3 to the most frequent: item 0, user 0, item 2
        assert_eq!(w.iter().map(|&x| x as u64).sum::<u64>(), 23);
        assert_eq!(equal_widths(10_000, &[1], &[1], 128), vec![128, 128]);
    }

    /// A run's wall time lives in its checkpoint: a resumed (or already finished) run reports
    /// what earlier processes spent plus its own, not only the time since its restart.
    #[test]
    fn wall_time_survives_a_resume() {
        let data = crate::data::Dataset::from_pairs("t", 3, 4, &[(0, 0), (0, 1), (1, 1), (1, 2), (2, 3), (2, 0)]);
        let split = Split::new(&data, crate::split::Protocol::Given, 1).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let plan = CheckpointPlan::new(dir.path(), "wall time");
        let config = TrainConfig { round_steps: 2, max_steps: 4, ..TrainConfig::default() };
        let build =
            || crate::backbone::LightGcnBackbone::new(&split, 4, 1, crate::lightgcn::Placement::Output, vec![4; 7], 1);
        let first = train(&mut build(), &split, &config, Some(&plan), |_, _| {}).unwrap();
        let mut state = TrainState::load(&plan.path, &plan.fingerprint).unwrap().unwrap();
        assert!(state.header.finished && state.header.seconds > 0.0 && state.header.seconds <= first.seconds);
        // Pretend earlier processes spent 1,000 s on it.
        state.header.seconds = 1000.0;
        state.save(&plan.path).unwrap();
        let again = train(&mut build(), &split, &config, Some(&plan), |_, _| {}).unwrap();
        assert_eq!(again.resumed_from, 4);
        assert!(again.seconds >= 1000.0 && again.seconds < 1000.0 + 60.0, "{}", again.seconds);
    }

    /// Raising the cap continues a shorter run's checkpoint and ends exactly where the higher
    /// cap ends from scratch; a shorter checkpoint that is not the same run is not continued,
    /// and one that stopped early is taken as final.
    #[test]
    fn a_longer_cap_continues_a_shorter_run_exactly() {
        let data = crate::data::Dataset::from_pairs(
            "t",
            4,
            5,
            &[(0, 0), (0, 1), (1, 1), (1, 2), (2, 3), (2, 0), (3, 4), (3, 2), (0, 4), (1, 3), (2, 1), (3, 0)],
        );
        let split = Split::new(&data, crate::split::Protocol::Given, 1).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let build =
            || crate::backbone::LightGcnBackbone::new(&split, 4, 1, crate::lightgcn::Placement::Output, vec![4; 9], 1);
        let short =
            TrainConfig { round_steps: 2, max_steps: 8, patience: 100, batch_users: 2, ..TrainConfig::default() };
        let long = TrainConfig { max_steps: 16, ..short.clone() };
        let mut scratch = build();
        let from_scratch = train(&mut scratch, &split, &long, None, |_, _| {}).unwrap();
        let rounds = |r: &TrainReport| r.rounds.iter().map(|(s, m)| (*s, m.ensemble().to_bits())).collect::<Vec<_>>();

        let plan8 = CheckpointPlan::new(dir.path(), "cap 8");
        train(&mut build(), &split, &short, Some(&plan8), |_, _| {}).unwrap();
        let state8 = TrainState::load(&plan8.path, &plan8.fingerprint).unwrap().unwrap();
        assert!(state8.header.finished && state8.header.last_state && state8.header.step == 8);
        assert!(can_continue(&state8.header, 8, &long));
        let plan16 = CheckpointPlan::new(dir.path(), "cap 16").with_shorter(8, plan8.clone());
        let mut extended = build();
        let report = train(&mut extended, &split, &long, Some(&plan16), |_, _| {}).unwrap();
        assert_eq!((report.extended_from, report.resumed_from, report.steps), (Some(8), 8, 16));
        assert_eq!(snapshot(&extended), snapshot(&scratch));
        assert_eq!((report.best_step, rounds(&report)), (from_scratch.best_step, rounds(&from_scratch)));
        // The longer run now has its own checkpoint; the shorter one is left as it was.
        assert!(TrainState::load(&plan16.path, &plan16.fingerprint).unwrap().unwrap().header.finished);
        assert_eq!(TrainState::load(&plan8.path, &plan8.fingerprint).unwrap().unwrap(), state8);

        // A checkpoint written before `last_state` existed, whose best state (not the last)
        // was stored at the cap: not the same run, so the longer one starts from scratch.
        let plan_old = CheckpointPlan::new(dir.path(), "cap 8, old");
        let mut old = state8.clone();
        (old.header.fingerprint, old.header.last_state, old.header.best_step) =
            (plan_old.fingerprint.clone(), false, 6);
        old.save(&plan_old.path).unwrap();
        let plan = CheckpointPlan::new(dir.path(), "cap 16, after old").with_shorter(8, plan_old);
        let mut fresh = build();
        let report = train(&mut fresh, &split, &long, Some(&plan), |_, _| {}).unwrap();
        assert_eq!((report.extended_from, report.resumed_from, report.steps), (None, 0, 16));
        assert_eq!(snapshot(&fresh), snapshot(&scratch));

        // A run that stopped early at 8 is the longer run's final state too.
        let plan_early = CheckpointPlan::new(dir.path(), "cap 8, stopped early");
        let mut early = state8.clone();
        (early.header.fingerprint, early.header.since_best) = (plan_early.fingerprint.clone(), 100);
        early.save(&plan_early.path).unwrap();
        let plan = CheckpointPlan::new(dir.path(), "cap 16, after early").with_shorter(8, plan_early);
        let report = train(&mut build(), &split, &long, Some(&plan), |_, _| {}).unwrap();
        assert_eq!((report.extended_from, report.steps), (Some(8), 8));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]
        /// Over random rounds, patience and caps (on round boundaries or not, with and without
        /// early stopping), a run with the higher cap ends exactly as from scratch whether or
        /// not it took over the lower cap's checkpoint, and it takes it over whenever
        /// [`can_continue`] says the lower run is the same run.
        #[test]
        fn a_raised_cap_ends_as_from_scratch(
            round in 1usize..4,
            patience in 1usize..4,
            lower in 1usize..14,
            extra in 1usize..10,
            early_stopping: bool,
        ) {
            let split = crate::split::small_test_split();
            let build = || {
                crate::backbone::LightGcnBackbone::new(&split, 4, 1, crate::lightgcn::Placement::Output, vec![4; 70], 1)
            };
            let short = TrainConfig {
                round_steps: round,
                patience,
                max_steps: lower,
                batch_users: 64,
                early_stopping,
                ..TrainConfig::default()
            };
            let long = TrainConfig { max_steps: lower + extra, ..short.clone() };
            let dir = tempfile::tempdir().unwrap();
            let plan_short = CheckpointPlan::new(dir.path(), "lower");
            let plan_long = CheckpointPlan::new(dir.path(), "higher").with_shorter(lower, plan_short.clone());
            train(&mut build(), &split, &short, Some(&plan_short), |_, _| {}).unwrap();
            let header = CheckpointHeader::peek(&plan_short.path, &plan_short.fingerprint).unwrap().unwrap();
            let mut continued = build();
            let report = train(&mut continued, &split, &long, Some(&plan_long), |_, _| {}).unwrap();
            let mut scratch = build();
            let expected = train(&mut scratch, &split, &long, None, |_, _| {}).unwrap();
            proptest::prop_assert_eq!(report.extended_from.is_some(), can_continue(&header, lower, &long));
            proptest::prop_assert_eq!((report.steps, report.best_step), (expected.steps, expected.best_step));
            proptest::prop_assert!(snapshot(&continued) == snapshot(&scratch), "another model");
        }
    }

    /// Which shorter checkpoints a longer cap may continue, case by case.
    #[test]
    fn which_shorter_runs_can_be_continued() {
        let long = TrainConfig { round_steps: 500, patience: 2, max_steps: 24_000, ..TrainConfig::default() };
        let at_cap = CheckpointHeader {
            step: 12_000,
            finished: true,
            best_step: 11_500,
            since_best: 1,
            last_state: true,
            ..Default::default()
        };
        let cases = [
            ("reached its cap, last state stored", at_cap.clone(), 12_000, &long, true),
            (
                "interrupted before its cap",
                CheckpointHeader { finished: false, step: 7_123, ..at_cap.clone() },
                12_000,
                &long,
                true,
            ),
            (
                "stopped early",
                CheckpointHeader { step: 9_000, since_best: 2, last_state: false, ..at_cap.clone() },
                12_000,
                &long,
                true,
            ),
            (
                "best stored over the last (older checkpoint)",
                CheckpointHeader { last_state: false, ..at_cap.clone() },
                12_000,
                &long,
                false,
            ),
            (
                "older checkpoint whose best is its last",
                CheckpointHeader { last_state: false, best_step: 12_000, since_best: 0, ..at_cap.clone() },
                12_000,
                &long,
                true,
            ),
            (
                "cap off a round boundary (validated where the longer run does not)",
                CheckpointHeader { step: 12_100, ..at_cap.clone() },
                12_100,
                &long,
                false,
            ),
            ("not shorter", at_cap.clone(), 24_000, &long, false),
            ("past its own cap (damaged)", at_cap.clone(), 11_000, &long, false),
        ];
        for (what, header, cap, config, expected) in cases {
            assert_eq!(can_continue(&header, cap, config), expected, "{what}");
        }
    }

    #[test]
    fn adam_moves_against_the_gradient() {
        let mut p = vec![1.0f32, -1.0];
        let mut adam = Adam::new(2);
        adam.step(&mut p, &[2.0, -3.0], 0.1);
        assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] + 0.9).abs() < 1e-6, "{p:?}");
    }
}
