//! BPR training of LightGCN / MF with per-entity widths: the reference's sampler, Adam with its
//! schedule, early stopping on validation.
//!
//! - Sampler (`bet-algorithm.md` §1): a batch is 10,000 distinct users drawn uniformly from users
//!   with training items (with replacement when there are fewer); each gets one positive drawn
//!   uniformly from its training items and one negative drawn uniformly from all items, redrawn
//!   until it is not a training item. One seeded stream, so a run is a function of the seed.
//! - Adam (β 0.9/0.999, ε 1e-8) at lr 0.03, multiplied by 0.95 every 200 steps, floor 0.001.
//! - Rounds of `round_steps` steps; after each, validation on a fixed user subset; the best state
//!   is kept (`>=`, eq. 13); training stops after `patience` rounds without improvement.
//!
//! Status: this is the core loop; checkpoints and resume, NGCF and NCF, and the speed work of
//! issue 4 are still to come (see `docs/training.md`).

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

use crate::eval::{DenseScorer, Metrics, Target, evaluate};
use crate::graph::Adjacency;
use crate::lightgcn::{LightGcn, Placement};
use crate::split::Split;

/// Training settings.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Users per batch.
    pub batch_users: usize,
    /// Initial learning rate.
    pub lr: f32,
    /// Regularisation weight.
    pub reg: f32,
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
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            batch_users: 10_000,
            lr: 0.03,
            reg: 1e-4,
            round_steps: 2000,
            patience: 2,
            max_steps: 100_000,
            seed: 1,
            validation_users: usize::MAX,
        }
    }
}

/// The BPR sampler.
pub struct Sampler {
    rng: Pcg64Mcg,
    active: Vec<u32>,
}

impl Sampler {
    /// A sampler over users with training items.
    pub fn new(split: &Split, seed: u64) -> Sampler {
        let active = (0..split.n_users as u32).filter(|&u| !split.train.of(u as usize).is_empty()).collect();
        Sampler { rng: Pcg64Mcg::seed_from_u64(seed ^ 0x5EED_5A3F), active }
    }

    /// One batch of `(user, positive, negative)`.
    pub fn batch(&mut self, split: &Split, users: usize) -> Vec<(u32, u32, u32)> {
        let chosen: Vec<u32> = if self.active.len() > users {
            // Partial Fisher-Yates: `users` distinct users.
            let mut pool = self.active.clone();
            for i in 0..users {
                let j = self.rng.random_range(i..pool.len());
                pool.swap(i, j);
            }
            pool.truncate(users);
            pool
        } else {
            (0..users).map(|_| self.active[self.rng.random_range(0..self.active.len())]).collect()
        };
        chosen
            .into_iter()
            .map(|u| {
                let items = split.train.of(u as usize);
                let p = items[self.rng.random_range(0..items.len())];
                let n = loop {
                    let c = self.rng.random_range(0..split.n_items as u32);
                    if items.binary_search(&c).is_err() {
                        break c;
                    }
                };
                (u, p, n)
            })
            .collect()
    }
}

/// Adam over a flat parameter vector.
pub struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    /// For `n` parameters.
    pub fn new(n: usize) -> Adam {
        Adam { m: vec![0.0; n], v: vec![0.0; n], t: 0 }
    }
    /// One update of `params` with `grad` at learning rate `lr`.
    pub fn step(&mut self, params: &mut [f32], grad: &[f32], lr: f32) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        self.t += 1;
        let (c1, c2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        for (((p, g), m), v) in params.iter_mut().zip(grad).zip(&mut self.m).zip(&mut self.v) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
        }
    }
}

/// The reference's schedule: ×0.95 every 200 steps, floor 0.001.
pub fn learning_rate(initial: f32, step: usize) -> f32 {
    (initial * 0.95f32.powi((step / 200) as i32)).max(0.001)
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
    /// Steps run.
    pub steps: usize,
    /// Step of the best validation state.
    pub best_step: usize,
    /// Validation metrics after each round (trainer-evaluated).
    pub rounds: Vec<(usize, Metrics)>,
    /// Mean loss of the last round.
    pub last_loss: f32,
}

/// Final vectors of a model as a dense scorer.
pub fn scorer(model: &LightGcn<f32>, adj: &Adjacency) -> DenseScorer {
    let f = model.forward(adj);
    let d = model.d;
    let users = ndarray::Array2::from_shape_vec((model.n_users, d), f.output[..model.n_users * d].to_vec())
        .unwrap_or_else(|_| ndarray::Array2::zeros((model.n_users, d)));
    let items = ndarray::Array2::from_shape_vec((model.n_items, d), f.output[model.n_users * d..].to_vec())
        .unwrap_or_else(|_| ndarray::Array2::zeros((model.n_items, d)));
    DenseScorer { users, items }
}

/// A fresh model: N(0, 0.01²) ego table, the given widths (users then items).
pub fn new_model(
    split: &Split,
    d: usize,
    layers: usize,
    placement: Placement,
    widths: Vec<u32>,
    seed: u64,
) -> LightGcn<f32> {
    let n = split.n_users + split.n_items;
    LightGcn {
        n_users: split.n_users,
        n_items: split.n_items,
        d,
        layers,
        placement,
        widths,
        ego: normal_init(n * d, 0.01, seed),
    }
}

/// Trains `model` to convergence (early stopping on validation); leaves the best state in it.
pub fn train(
    model: &mut LightGcn<f32>,
    split: &Split,
    adj: &Adjacency,
    config: &TrainConfig,
    mut on_step: impl FnMut(usize, f32),
) -> TrainReport {
    let mut sampler = Sampler::new(split, config.seed);
    let mut adam = Adam::new(model.ego.len());
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
    let mut best = (f64::NEG_INFINITY, 0usize, model.ego.clone());
    let mut rounds = vec![];
    let (mut step, mut since_best, mut last_loss) = (0usize, 0usize, 0.0f32);
    while step < config.max_steps {
        let mut loss_sum = 0.0f32;
        let round_end = (step + config.round_steps).min(config.max_steps);
        let steps_this_round = round_end - step;
        while step < round_end {
            let batch = sampler.batch(split, config.batch_users);
            let (loss, grad) = model.loss_and_grad(adj, &batch, config.reg);
            adam.step(&mut model.ego, &grad, learning_rate(config.lr, step));
            loss_sum += loss;
            step += 1;
            on_step(step, loss);
        }
        last_loss = loss_sum / steps_this_round.max(1) as f32;
        let m = evaluate(&scorer(model, adj), split, Target::Validation, Some(&validation_users));
        rounds.push((step, m));
        if m.ensemble() >= best.0 {
            best = (m.ensemble(), step, model.ego.clone());
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= config.patience {
                break;
            }
        }
    }
    model.ego = best.2;
    TrainReport { steps: step, best_step: best.1, rounds, last_loss }
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

    #[test]
    fn adam_moves_against_the_gradient() {
        let mut p = vec![1.0f32, -1.0];
        let mut adam = Adam::new(2);
        adam.step(&mut p, &[2.0, -3.0], 0.1);
        assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] + 0.9).abs() < 1e-6, "{p:?}");
    }
}
