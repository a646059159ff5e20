//! The BET search's fitness predictors: the paper's DeepSets network ([`DeepSetsPredictor`]) and the
//! "plain" MLP of the Table 2 ablation ([`PlainPredictor`]), behind one trait ([`FitnessPredictor`])
//! so the search can swap them. Forward and backward passes are written by hand, in `f64`.
//!
//! An action is a width for every user and item ([`Widths`]). The DeepSets predictor (paper §3.3,
//! eqs. 7–10; `bet-algorithm.md` §4) sees it as `d_max` sets `S_d` = all users **and** items of
//! width `d`:
//! - `q_u = ρ_U(f_u / max f_U)`, `q_v = ρ_V(f_v / max f_V)`: 1 → 16 → 16;
//! - `s_d = μ([mean_{n∈S_d} q_n ; d/d_max])`: 17 → 64 → 64; an empty set's mean is the zero vector
//!   and still goes through `μ`;
//! - `h_a = (1/d_max) Σ_d s_d` over all `d_max` sets: the action's embedding ([`FitnessPredictor::embed`],
//!   used by selection strategy III);
//! - `r̂ = π(h_a)`: 64 → 64 → 1.
//!
//! Every layer is followed by LeakyReLU(0.01), the last one included (as in the reference, so a
//! negative prediction is shrunk ×0.01). `π`'s weights are Xavier-uniform; every other weight and
//! every bias is PyTorch's default `U(±1/√fan_in)`. `q_n` does not depend on the action, so all
//! entities are encoded once per parameter state (at construction and after every update); a
//! candidate then costs one pass over its widths (segment sums), `d_max` evaluations of `μ` and one
//! of `π`.
//!
//! The plain predictor is an MLP on the two `d_max`-bin width histograms (users' counts per width
//! over `|U|`, then items' counts over `|V|`): `2·d_max` → 64 → 64 → 1, LeakyReLU after every
//! layer, PyTorch default init everywhere; its embedding is its last hidden layer.
//!
//! Training (both): [`FitnessPredictor::update`] is one MSE step on one pair with Adam (β
//! 0.9/0.999, ε 1e-8, PyTorch's update); the learning rate starts at [`LR_START`] and after every
//! update becomes `max(LR_FLOOR, LR_DECAY · lr)`, so it reaches the floor after 16 updates.
//! [`train_iteration`] performs the reference's [`UPDATES_PER_ITERATION`] updates per search
//! iteration, each on a pair drawn uniformly with replacement from the [`ReplayBuffer`] of all
//! evaluated pairs.
//!
//! Where the reference code (`module/DeepSets.py`, `module/Action.py`) departs from the paper, this
//! module follows the paper (`bet-algorithm.md` §8 rows 6–9):
//! - items' input is `f_v / max f_V`; the reference feeds the raw item **index**;
//! - users' input is `f_u / max f_U`; the reference min-max normalises;
//! - set pooling is the mean; the reference divides the masked mean over the padded length by
//!   `|S_d|` again (`sum / (L·|S_d|)`);
//! - the size feature is `d / d_max`; the reference uses `(d − 1)/127`.
//!
//! For strategy III (row 10) the caller should re-embed the anchor with the current predictor
//! ([`FitnessPredictor::embed`] always uses the current parameters); the reference uses a stale
//! embedding stored when the anchor was selected. Initial weights are seeded draws from this
//! crate's generator, not PyTorch's stream.

use rand::{Rng, RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

use crate::{Error, Result};

/// Width of `ρ_U`/`ρ_V`'s hidden layer and output (`q_n`).
pub const ENTITY_DIM: usize = 16;
/// Width of `μ`'s hidden layer and output (`s_d`, `h_a`).
pub const SET_DIM: usize = 64;
/// Width of the decoder's (and the plain MLP's) hidden layers.
pub const HIDDEN_DIM: usize = 64;
/// Negative slope of every LeakyReLU.
pub const LEAKY_SLOPE: f64 = 0.01;
/// Adam's learning rate for the first update.
pub const LR_START: f64 = 0.01;
/// Factor applied to the learning rate after every update.
pub const LR_DECAY: f64 = 0.9;
/// Lowest learning rate.
pub const LR_FLOOR: f64 = 0.002;
/// Predictor updates per search iteration in the reference (`N` in the paper).
pub const UPDATES_PER_ITERATION: usize = 2;

const ADAM_BETA1: f64 = 0.9;
const ADAM_BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;
const SEED_SALT: u64 = 0xD5E7_5EED_0F17_0E55;

/// One action: the width of every user and every item, indexed by user and item index.
#[derive(Clone, Copy, Debug)]
pub struct Widths<'a> {
    /// Users' widths, each in `1..=d_max`.
    pub users: &'a [u32],
    /// Items' widths, each in `1..=d_max`.
    pub items: &'a [u32],
}

impl<'a> Widths<'a> {
    /// An action from users' and items' widths.
    pub fn new(users: &'a [u32], items: &'a [u32]) -> Widths<'a> {
        Widths { users, items }
    }
}

/// A fitness predictor of the BET search: scores candidate actions, embeds them (strategy III)
/// and learns online from evaluated actions.
pub trait FitnessPredictor {
    /// Predicted (normalised) fitness of one action.
    fn predict(&self, action: Widths<'_>) -> Result<f64>;

    /// Predicted fitness of every candidate, in order; the same values as [`Self::predict`] one at a time.
    fn predict_many(&self, actions: &[Widths<'_>]) -> Result<Vec<f64>> {
        actions.iter().map(|&a| self.predict(a)).collect()
    }

    /// The action's embedding under the current parameters (DeepSets: `h_a`; plain: the last
    /// hidden layer).
    fn embed(&self, action: Widths<'_>) -> Result<Vec<f64>>;

    /// Embeddings of every candidate, in order.
    fn embed_many(&self, actions: &[Widths<'_>]) -> Result<Vec<Vec<f64>>> {
        actions.iter().map(|&a| self.embed(a)).collect()
    }

    /// One Adam step on the squared error `(r̂ − target)²` of one pair, then the learning-rate
    /// decay. Returns the loss before the step.
    fn update(&mut self, action: Widths<'_>, target_fitness: f64) -> Result<f64>;

    /// The learning rate the next update will use.
    fn learning_rate(&self) -> f64;

    /// Updates performed so far.
    fn updates(&self) -> usize;
}

/// Which predictor the search uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictorKind {
    /// The paper's DeepSets network.
    DeepSets,
    /// The Table 2 ablation: an MLP on the width histograms.
    Plain,
}

impl PredictorKind {
    /// A freshly initialised predictor of this kind.
    pub fn build(
        self,
        user_freq: &[u32],
        item_freq: &[u32],
        d_max: u32,
        seed: u64,
    ) -> Result<Box<dyn FitnessPredictor + Send + Sync>> {
        Ok(match self {
            PredictorKind::DeepSets => Box::new(DeepSetsPredictor::new(user_freq, item_freq, d_max, seed)?),
            PredictorKind::Plain => Box::new(PlainPredictor::new(user_freq, item_freq, d_max, seed)?),
        })
    }
}

/// All evaluated `(action, fitness)` pairs, the predictor's training data.
#[derive(Clone, Debug, Default)]
pub struct ReplayBuffer {
    pairs: Vec<(Vec<u32>, Vec<u32>, f64)>,
}

impl ReplayBuffer {
    /// An empty buffer.
    pub fn new() -> ReplayBuffer {
        ReplayBuffer::default()
    }

    /// Stores an evaluated action and its (normalised) fitness.
    pub fn push(&mut self, action: Widths<'_>, fitness: f64) -> Result<()> {
        check_target(fitness)?;
        self.pairs.push((action.users.to_vec(), action.items.to_vec(), fitness));
        Ok(())
    }

    /// Pairs stored.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether no pair is stored.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The `i`-th pair.
    pub fn get(&self, i: usize) -> Option<(Widths<'_>, f64)> {
        self.pairs.get(i).map(|(u, v, r)| (Widths::new(u, v), *r))
    }
}

/// `updates` predictor updates, each on one pair drawn uniformly with replacement from `buffer`.
/// Returns each update's loss (before its step).
pub fn replay_updates<P, R>(predictor: &mut P, buffer: &ReplayBuffer, updates: usize, rng: &mut R) -> Result<Vec<f64>>
where
    P: FitnessPredictor + ?Sized,
    R: Rng + ?Sized,
{
    if buffer.is_empty() {
        return Err(Error::Settings("predictor: the replay buffer is empty".into()));
    }
    (0..updates)
        .map(|_| {
            let (users, items, fitness) = &buffer.pairs[rng.random_range(0..buffer.len())];
            predictor.update(Widths::new(users, items), *fitness)
        })
        .collect()
}

/// One search iteration's predictor training as in the reference: [`UPDATES_PER_ITERATION`]
/// updates on pairs drawn uniformly with replacement from `buffer`.
pub fn train_iteration<P, R>(predictor: &mut P, buffer: &ReplayBuffer, rng: &mut R) -> Result<Vec<f64>>
where
    P: FitnessPredictor + ?Sized,
    R: Rng + ?Sized,
{
    replay_updates(predictor, buffer, UPDATES_PER_ITERATION, rng)
}

// ---------------------------------------------------------------------------------------------
// Layers

fn leaky(z: f64) -> f64 {
    if z > 0.0 { z } else { LEAKY_SLOPE * z }
}

// PyTorch's convention at 0: the negative slope.
fn leaky_grad(z: f64) -> f64 {
    if z > 0.0 { 1.0 } else { LEAKY_SLOPE }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn uniform(rng: &mut Pcg64Mcg, bound: f64) -> f64 {
    (2.0 * rng.random::<f64>() - 1.0) * bound
}

/// A linear layer `z = W x + b` whose parameters live in a flat vector at `off`: `W` row-major
/// (`n_out × n_in`), then `b`.
#[derive(Clone, Copy, Debug)]
struct Linear {
    off: usize,
    n_in: usize,
    n_out: usize,
}

impl Linear {
    fn new(next: &mut usize, n_in: usize, n_out: usize) -> Linear {
        let l = Linear { off: *next, n_in, n_out };
        *next += l.len();
        l
    }

    fn len(&self) -> usize {
        self.n_out * (self.n_in + 1)
    }

    fn split<'p>(&self, p: &'p [f64]) -> (&'p [f64], &'p [f64]) {
        p[self.off..self.off + self.len()].split_at(self.n_in * self.n_out)
    }

    fn forward(&self, p: &[f64], x: &[f64], z: &mut [f64]) {
        let (w, b) = self.split(p);
        for ((zo, row), &bo) in z.iter_mut().zip(w.chunks_exact(self.n_in)).zip(b) {
            *zo = bo + dot(row, x);
        }
    }

    /// Adds `dz xᵀ` and `dz` to the gradient; writes `Wᵀ dz` into `dx` if asked.
    fn backward(&self, p: &[f64], x: &[f64], dz: &[f64], g: &mut [f64], dx: Option<&mut [f64]>) {
        let (gw, gb) = g[self.off..self.off + self.len()].split_at_mut(self.n_in * self.n_out);
        for ((grow, gbo), &d) in gw.chunks_exact_mut(self.n_in).zip(gb).zip(dz) {
            *gbo += d;
            for (gi, &xi) in grow.iter_mut().zip(x) {
                *gi += d * xi;
            }
        }
        if let Some(dx) = dx {
            dx.fill(0.0);
            let (w, _) = self.split(p);
            for (row, &d) in w.chunks_exact(self.n_in).zip(dz) {
                for (dxi, &wi) in dx.iter_mut().zip(row) {
                    *dxi += d * wi;
                }
            }
        }
    }

    /// Weights `U(±weight_bound)`, biases PyTorch's default `U(±1/√fan_in)`.
    fn init(&self, p: &mut [f64], weight_bound: f64, rng: &mut Pcg64Mcg) {
        let bias_bound = 1.0 / (self.n_in as f64).sqrt();
        let (w, b) = p[self.off..self.off + self.len()].split_at_mut(self.n_in * self.n_out);
        w.iter_mut().for_each(|v| *v = uniform(rng, weight_bound));
        b.iter_mut().for_each(|v| *v = uniform(rng, bias_bound));
    }

    /// PyTorch's default weight bound (`kaiming_uniform_(a = √5)`): `1/√fan_in`.
    fn default_bound(&self) -> f64 {
        1.0 / (self.n_in as f64).sqrt()
    }

    /// Xavier-uniform bound `√(6/(fan_in + fan_out))`.
    fn xavier_bound(&self) -> f64 {
        (6.0 / (self.n_in + self.n_out) as f64).sqrt()
    }
}

/// Linear layers, each followed by LeakyReLU.
#[derive(Clone, Debug)]
struct Mlp {
    layers: Vec<Linear>,
}

/// One pass through an [`Mlp`]: per layer the pre-activations `z`, the activations `a` and
/// scratch for their gradients.
struct Trace {
    z: Vec<Vec<f64>>,
    a: Vec<Vec<f64>>,
    dz: Vec<Vec<f64>>,
    da: Vec<Vec<f64>>,
}

impl Mlp {
    fn new(next: &mut usize, sizes: &[usize]) -> Mlp {
        Mlp { layers: sizes.windows(2).map(|s| Linear::new(next, s[0], s[1])).collect() }
    }

    fn trace(&self) -> Trace {
        let bufs = || self.layers.iter().map(|l| vec![0.0; l.n_out]).collect::<Vec<_>>();
        Trace { z: bufs(), a: bufs(), dz: bufs(), da: bufs() }
    }

    fn forward(&self, p: &[f64], x: &[f64], t: &mut Trace) {
        for (k, l) in self.layers.iter().enumerate() {
            let (before, after) = t.a.split_at_mut(k);
            let input = if k == 0 { x } else { &before[k - 1] };
            l.forward(p, input, &mut t.z[k]);
            for (a, &z) in after[0].iter_mut().zip(&t.z[k]) {
                *a = leaky(z);
            }
        }
    }

    fn output<'t>(&self, t: &'t Trace) -> &'t [f64] {
        t.a.last().map_or(&[], Vec::as_slice)
    }

    /// Backpropagates `d_out = ∂L/∂(output)` through the pass in `t` (which must be the forward
    /// pass of `x`): adds the parameter gradients to `g` and writes `∂L/∂x` into `dx` if asked.
    fn backward(&self, p: &[f64], x: &[f64], t: &mut Trace, d_out: &[f64], g: &mut [f64], mut dx: Option<&mut [f64]>) {
        let Trace { z, a, dz, da } = t;
        let n = self.layers.len();
        da[n - 1].copy_from_slice(d_out);
        for k in (0..n).rev() {
            for ((dzi, &dai), &zi) in dz[k].iter_mut().zip(&da[k]).zip(&z[k]) {
                *dzi = dai * leaky_grad(zi);
            }
            if k == 0 {
                self.layers[0].backward(p, x, &dz[0], g, dx.as_deref_mut());
            } else {
                self.layers[k].backward(p, &a[k - 1], &dz[k], g, Some(&mut da[k - 1]));
            }
        }
    }
}

/// Adam as PyTorch implements it, with the predictor's per-update learning-rate decay.
#[derive(Clone, Debug)]
struct Adam {
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
    lr: f64,
    updates: usize,
}

impl Adam {
    fn new(n: usize) -> Adam {
        Adam { m: vec![0.0; n], v: vec![0.0; n], t: 0, lr: LR_START, updates: 0 }
    }

    fn step(&mut self, p: &mut [f64], g: &[f64]) {
        self.t = self.t.saturating_add(1);
        let bc1 = 1.0 - ADAM_BETA1.powi(self.t);
        let bc2_sqrt = (1.0 - ADAM_BETA2.powi(self.t)).sqrt();
        let step = self.lr / bc1;
        for (((pi, &gi), mi), vi) in p.iter_mut().zip(g).zip(&mut self.m).zip(&mut self.v) {
            *mi = ADAM_BETA1 * *mi + (1.0 - ADAM_BETA1) * gi;
            *vi = ADAM_BETA2 * *vi + (1.0 - ADAM_BETA2) * gi * gi;
            *pi -= step * *mi / (vi.sqrt() / bc2_sqrt + ADAM_EPS);
        }
        self.lr = (LR_DECAY * self.lr).max(LR_FLOOR);
        self.updates += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

fn check_d_max(d_max: u32) -> Result<()> {
    if d_max == 0 || d_max > bet_format::MAX_VECTOR_WIDTH {
        return Err(Error::Settings(format!(
            "predictor: d_max {d_max} is outside 1..={}",
            bet_format::MAX_VECTOR_WIDTH
        )));
    }
    Ok(())
}

/// `f / max f` for one side; the side must be non-empty with some non-zero frequency.
fn normalised_freq(freq: &[u32], side: &str) -> Result<Vec<f64>> {
    let max = freq.iter().copied().max().unwrap_or(0);
    if max == 0 {
        return Err(Error::Settings(format!(
            "predictor: no {side} has a training interaction ({} {side}s), f / max f is undefined",
            freq.len()
        )));
    }
    Ok(freq.iter().map(|&f| f as f64 / max as f64).collect())
}

fn check_widths(action: Widths<'_>, n_users: usize, n_items: usize, d_max: u32) -> Result<()> {
    for (side, widths, n) in [("user", action.users, n_users), ("item", action.items, n_items)] {
        if widths.len() != n {
            return Err(Error::Settings(format!(
                "predictor: the action has {} {side} widths for {n} {side}s",
                widths.len()
            )));
        }
        if let Some((i, w)) = widths.iter().enumerate().find(|&(_, &w)| w == 0 || w > d_max) {
            return Err(Error::Settings(format!("predictor: {side} {i} has width {w}, outside 1..={d_max}")));
        }
    }
    Ok(())
}

fn check_target(target: f64) -> Result<()> {
    if !target.is_finite() {
        return Err(Error::Settings(format!("predictor: fitness {target} is not finite")));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// DeepSets

/// The paper's DeepSets fitness predictor (see the module documentation).
#[derive(Clone, Debug)]
pub struct DeepSetsPredictor {
    d_max: u32,
    x_users: Vec<f64>,
    x_items: Vec<f64>,
    rho_u: Mlp,
    rho_v: Mlp,
    mu: Mlp,
    pi: Mlp,
    params: Vec<f64>,
    adam: Adam,
    /// `q_u` for every user (`n_users × ENTITY_DIM`) under the current parameters.
    q_users: Vec<f64>,
    /// `q_v` for every item.
    q_items: Vec<f64>,
}

/// Per-width sums of `q_n` and set sizes of one action.
struct Pool {
    sums: Vec<f64>,
    counts: Vec<usize>,
}

impl DeepSetsPredictor {
    /// A freshly initialised predictor for users and items with these training frequencies.
    pub fn new(user_freq: &[u32], item_freq: &[u32], d_max: u32, seed: u64) -> Result<DeepSetsPredictor> {
        check_d_max(d_max)?;
        let x_users = normalised_freq(user_freq, "user")?;
        let x_items = normalised_freq(item_freq, "item")?;
        let mut next = 0;
        let rho_u = Mlp::new(&mut next, &[1, ENTITY_DIM, ENTITY_DIM]);
        let rho_v = Mlp::new(&mut next, &[1, ENTITY_DIM, ENTITY_DIM]);
        let mu = Mlp::new(&mut next, &[ENTITY_DIM + 1, SET_DIM, SET_DIM]);
        let pi = Mlp::new(&mut next, &[SET_DIM, HIDDEN_DIM, 1]);
        let mut params = vec![0.0; next];
        let mut rng = Pcg64Mcg::seed_from_u64(seed ^ SEED_SALT);
        for l in rho_u.layers.iter().chain(&rho_v.layers).chain(&mu.layers) {
            l.init(&mut params, l.default_bound(), &mut rng);
        }
        for l in &pi.layers {
            l.init(&mut params, l.xavier_bound(), &mut rng);
        }
        let mut p = DeepSetsPredictor {
            d_max,
            x_users,
            x_items,
            rho_u,
            rho_v,
            mu,
            pi,
            adam: Adam::new(params.len()),
            params,
            q_users: Vec::new(),
            q_items: Vec::new(),
        };
        p.encode_all();
        Ok(p)
    }

    /// The largest width.
    pub fn d_max(&self) -> u32 {
        self.d_max
    }

    /// Number of trainable parameters.
    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    fn check(&self, action: Widths<'_>) -> Result<()> {
        check_widths(action, self.x_users.len(), self.x_items.len(), self.d_max)
    }

    /// Re-encodes every entity with the current `ρ_U`, `ρ_V`.
    fn encode_all(&mut self) {
        self.q_users = encode(&self.rho_u, &self.params, &self.x_users);
        self.q_items = encode(&self.rho_v, &self.params, &self.x_items);
    }

    fn pool(&self, action: Widths<'_>) -> Pool {
        let dm = self.d_max as usize;
        let mut sums = vec![0.0; dm * ENTITY_DIM];
        let mut counts = vec![0; dm];
        for (q, widths) in [(&self.q_users, action.users), (&self.q_items, action.items)] {
            for (qn, &w) in q.chunks_exact(ENTITY_DIM).zip(widths) {
                let b = w as usize - 1;
                counts[b] += 1;
                for (s, &v) in sums[b * ENTITY_DIM..(b + 1) * ENTITY_DIM].iter_mut().zip(qn) {
                    *s += v;
                }
            }
        }
        Pool { sums, counts }
    }

    /// `μ`'s input for width `b + 1`: `[mean of q over S_d (0 if empty) ; d/d_max]`.
    fn set_input(&self, pool: &Pool, b: usize, out: &mut [f64]) {
        let c = pool.counts[b];
        let sums = &pool.sums[b * ENTITY_DIM..(b + 1) * ENTITY_DIM];
        for (o, &s) in out.iter_mut().zip(sums) {
            *o = if c == 0 { 0.0 } else { s / c as f64 };
        }
        out[ENTITY_DIM] = (b + 1) as f64 / self.d_max as f64;
    }

    /// `h_a` of a validated action.
    fn embedding(&self, pool: &Pool) -> Vec<f64> {
        let dm = self.d_max as usize;
        let mut t = self.mu.trace();
        let mut input = [0.0; ENTITY_DIM + 1];
        let mut h = vec![0.0; SET_DIM];
        for b in 0..dm {
            self.set_input(pool, b, &mut input);
            self.mu.forward(&self.params, &input, &mut t);
            for (hi, &s) in h.iter_mut().zip(self.mu.output(&t)) {
                *hi += s;
            }
        }
        h.iter_mut().for_each(|hi| *hi /= dm as f64);
        h
    }

    fn decode(&self, h: &[f64]) -> f64 {
        let mut t = self.pi.trace();
        self.pi.forward(&self.params, h, &mut t);
        self.pi.output(&t)[0]
    }

    /// Loss `(r̂ − target)²` of a validated action and its gradient w.r.t. every parameter.
    fn loss_grad(&self, action: Widths<'_>, target: f64) -> (f64, Vec<f64>) {
        let p = &self.params;
        let dm = self.d_max as usize;
        let pool = self.pool(action);
        let h = self.embedding(&pool);
        let mut tp = self.pi.trace();
        self.pi.forward(p, &h, &mut tp);
        let r = self.pi.output(&tp)[0];
        let loss = (r - target) * (r - target);
        let mut g = vec![0.0; p.len()];

        // π, then h_a = (1/d_max) Σ s_d.
        let mut dh = vec![0.0; SET_DIM];
        self.pi.backward(p, &h, &mut tp, &[2.0 * (r - target)], &mut g, Some(&mut dh));
        dh.iter_mut().for_each(|v| *v /= dm as f64);

        // μ for every set; the mean's gradient reaches each member divided by |S_d|.
        let mut tm = self.mu.trace();
        let mut input = [0.0; ENTITY_DIM + 1];
        let mut dinput = [0.0; ENTITY_DIM + 1];
        let mut dq = vec![0.0; dm * ENTITY_DIM];
        for b in 0..dm {
            self.set_input(&pool, b, &mut input);
            self.mu.forward(p, &input, &mut tm);
            self.mu.backward(p, &input, &mut tm, &dh, &mut g, Some(&mut dinput));
            let c = pool.counts[b];
            if c > 0 {
                for (d, &di) in dq[b * ENTITY_DIM..(b + 1) * ENTITY_DIM].iter_mut().zip(&dinput) {
                    *d = di / c as f64;
                }
            }
        }

        // ρ_U and ρ_V for every entity.
        for (rho, xs, widths) in
            [(&self.rho_u, &self.x_users, action.users), (&self.rho_v, &self.x_items, action.items)]
        {
            let mut t = rho.trace();
            for (&x, &w) in xs.iter().zip(widths) {
                let b = w as usize - 1;
                rho.forward(p, &[x], &mut t);
                rho.backward(p, &[x], &mut t, &dq[b * ENTITY_DIM..(b + 1) * ENTITY_DIM], &mut g, None);
            }
        }
        (loss, g)
    }
}

fn encode(rho: &Mlp, p: &[f64], xs: &[f64]) -> Vec<f64> {
    let mut t = rho.trace();
    let mut out = Vec::with_capacity(xs.len() * ENTITY_DIM);
    for &x in xs {
        rho.forward(p, &[x], &mut t);
        out.extend_from_slice(rho.output(&t));
    }
    out
}

impl FitnessPredictor for DeepSetsPredictor {
    fn predict(&self, action: Widths<'_>) -> Result<f64> {
        self.check(action)?;
        Ok(self.decode(&self.embedding(&self.pool(action))))
    }

    fn embed(&self, action: Widths<'_>) -> Result<Vec<f64>> {
        self.check(action)?;
        Ok(self.embedding(&self.pool(action)))
    }

    fn update(&mut self, action: Widths<'_>, target_fitness: f64) -> Result<f64> {
        self.check(action)?;
        check_target(target_fitness)?;
        let (loss, g) = self.loss_grad(action, target_fitness);
        self.adam.step(&mut self.params, &g);
        self.encode_all();
        Ok(loss)
    }

    fn learning_rate(&self) -> f64 {
        self.adam.lr
    }

    fn updates(&self) -> usize {
        self.adam.updates
    }
}

// ---------------------------------------------------------------------------------------------
// Plain

/// The Table 2 ablation: an MLP on the users' and items' width histograms (see the module
/// documentation).
#[derive(Clone, Debug)]
pub struct PlainPredictor {
    d_max: u32,
    n_users: usize,
    n_items: usize,
    net: Mlp,
    params: Vec<f64>,
    adam: Adam,
}

impl PlainPredictor {
    /// A freshly initialised predictor. Only the numbers of users and items are taken from the
    /// frequencies (the same arguments as [`DeepSetsPredictor::new`], so the two can be swapped).
    pub fn new(user_freq: &[u32], item_freq: &[u32], d_max: u32, seed: u64) -> Result<PlainPredictor> {
        check_d_max(d_max)?;
        for (side, n) in [("user", user_freq.len()), ("item", item_freq.len())] {
            if n == 0 {
                return Err(Error::Settings(format!("predictor: no {side}s")));
            }
        }
        let mut next = 0;
        let net = Mlp::new(&mut next, &[2 * d_max as usize, HIDDEN_DIM, HIDDEN_DIM, 1]);
        let mut params = vec![0.0; next];
        let mut rng = Pcg64Mcg::seed_from_u64(seed ^ SEED_SALT ^ 0x9_1A1);
        for l in &net.layers {
            l.init(&mut params, l.default_bound(), &mut rng);
        }
        Ok(PlainPredictor {
            d_max,
            n_users: user_freq.len(),
            n_items: item_freq.len(),
            net,
            adam: Adam::new(params.len()),
            params,
        })
    }

    /// Number of trainable parameters.
    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    fn check(&self, action: Widths<'_>) -> Result<()> {
        check_widths(action, self.n_users, self.n_items, self.d_max)
    }

    /// Users' counts per width over `|U|`, then items' over `|V|`.
    fn histogram(&self, action: Widths<'_>) -> Vec<f64> {
        let dm = self.d_max as usize;
        let mut x = vec![0.0; 2 * dm];
        for (half, widths) in x.chunks_exact_mut(dm).zip([action.users, action.items]) {
            let share = 1.0 / widths.len() as f64;
            for &w in widths {
                half[w as usize - 1] += share;
            }
        }
        x
    }

    fn run(&self, action: Widths<'_>) -> (Vec<f64>, Trace) {
        let x = self.histogram(action);
        let mut t = self.net.trace();
        self.net.forward(&self.params, &x, &mut t);
        (x, t)
    }

    fn loss_grad(&self, action: Widths<'_>, target: f64) -> (f64, Vec<f64>) {
        let (x, mut t) = self.run(action);
        let r = self.net.output(&t)[0];
        let mut g = vec![0.0; self.params.len()];
        self.net.backward(&self.params, &x, &mut t, &[2.0 * (r - target)], &mut g, None);
        ((r - target) * (r - target), g)
    }
}

impl FitnessPredictor for PlainPredictor {
    fn predict(&self, action: Widths<'_>) -> Result<f64> {
        self.check(action)?;
        Ok(self.net.output(&self.run(action).1)[0])
    }

    fn embed(&self, action: Widths<'_>) -> Result<Vec<f64>> {
        self.check(action)?;
        let (_, t) = self.run(action);
        Ok(t.a[t.a.len() - 2].clone())
    }

    fn update(&mut self, action: Widths<'_>, target_fitness: f64) -> Result<f64> {
        self.check(action)?;
        check_target(target_fitness)?;
        let (loss, g) = self.loss_grad(action, target_fitness);
        self.adam.step(&mut self.params, &g);
        Ok(loss)
    }

    fn learning_rate(&self) -> f64 {
        self.adam.lr
    }

    fn updates(&self) -> usize {
        self.adam.updates
    }
}
