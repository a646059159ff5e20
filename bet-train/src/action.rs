//! The budget-aware action sampler of the BET search, and the baseline width generators.
//!
//! An *action* gives every user and every item a width in `1..=d_max`; the widths sum to
//! **exactly** the limit (see [`crate::budget`]). The reference sampler (`bet-algorithm.md` §3)
//! floors, clamps to 1 and rejects draws over `d_max`, so it can overshoot the budget by about 6%
//! and wastes what flooring leaves over. This module keeps the reference's distributions and
//! frequency-rank assignment but is exact by construction.
//!
//! # One action ([`ActionSampler::sample`])
//! 1. `w` is drawn uniformly from the interval where an exact split is feasible: the user share
//!    `B_U = w · limit` must satisfy `|U| ≤ B_U ≤ d_max·|U|` and the item share `limit − B_U`
//!    likewise for `|V|`. `B_U` is `round(w · limit)`, clamped into that integer interval, and
//!    `B_V = limit − B_U`. **Deviation:** the paper's `w ~ U(0, 1)` can ask one side for more
//!    than `d_max` per entity or less than 1, which is what makes the reference overshoot or loop.
//! 2. Per side, independently: a [`Distribution`] uniformly from the four, `β ~ U(0, β_max]`
//!    (20, 5, 20, 0.5), and one inverse-CDF draw per entity (the weights).
//! 3. Per side: every entity gets width 1; the `B − N` extra values are shared in proportion to
//!    the weights sorted in decreasing order, each capped at `d_max − 1` extra; what a capped
//!    entity cannot take goes to the uncapped ones in the same proportions (water filling).
//!    The real shares are floored, and the leftover units are handed out one by one, largest
//!    fractional part first, ties to the earlier position. The side sums to exactly `B`, every width
//!    is in `1..=d_max`, and widths never increase along the sorted weights.
//! 4. Assignment by **training-frequency rank**: entities sorted by frequency, decreasing, ties
//!    to the lower index; the k-th gets the k-th largest width. [`SizeAssignment`] is indexed by
//!    user / item index, so fine-tuning and retraining see the same frequency-ranked widths (the
//!    reference's search passes the sorted arrays by index, a bug: §3.5).
//!
//! **Deviation:** a draw whose widths would exceed `d_max` is never rejected and redrawn, as the
//! reference does; the excess is redistributed (step 3). Rejection biases which distributions and
//! β values survive (heavy-tailed draws are rejected most), and with an infeasible `w` it never
//! ends. Here every draw is used and [`ActionSampler::sample`] has no unbounded loop.
//!
//! Random stream per action: `w`, the user distribution, `β_U`, the item distribution, `β_V`,
//! then one uniform per user and one per item. The same generator state gives the same action.
//!
//! # Baselines
//! - [`random_widths`] (MR): uniform random widths in `1..=d_max`, repaired to the limit.
//! - [`frequency_widths`] (freq^α): widths proportional to `frequency^α` over all users and items
//!   together (frequency 0 gets the minimum).
//! - The equal-width baseline (ES) is [`crate::train::equal_widths`].
//!
//! Both repair the same way ([`repair_to_limit`]): raw values `v` are scaled by the one factor `λ`
//! for which `Σ clamp(λ·v, 1, d_max)` equals the limit, then rounded exactly as in step 3 (raw
//! values that already sum to the limit are unchanged). Widths never increase as `v` decreases.
//!
//! # Normal distribution
//! [`normal_cdf`] and [`normal_quantile`] are computed here (no statistics crate: the usual one
//! pulls a second `rand`). Φ comes from the Mills ratio `m(z) = (1 − Φ(z))/φ(z)`, which solves
//! `m' = z·m − 1`: a table of `m` at multiples of 1/8 up to 8 (power series below 0.5, the
//! Laplace continued fraction above, built at compile time), then a 24-term Taylor expansion from
//! the nearest node; beyond 8 the continued fraction directly. `exp(−z²/2)` is computed with `z`
//! split in halves so the square is exact. Φ⁻¹ solves `ln(1 − Φ(x)) = ln t` by Halley steps (in
//! logs, so tails down to 1e-300 work), or `Φ(x) − ½ = q` for `p` in `[0.2, 0.8]`. Against mpmath at
//! 4,500 points (z in [−37.5, 9], p from 1e-300 to 1 − 1e-15) the worst relative errors were
//! 6.3e-16 (Φ) and 6.6e-16 (Φ⁻¹, 3 ε); the tests hold them to 2e-15.
//!
//! ```
//! use bet_train::action::ActionSampler;
//! use rand::SeedableRng;
//! let sampler = ActionSampler::new(40, 8, &[5, 0, 9], &[1, 1, 3, 7]).unwrap();
//! let action = sampler.sample(&mut rand_pcg::Pcg64Mcg::seed_from_u64(7));
//! assert_eq!(action.widths.total(), 40);
//! assert!(action.widths.users[2] >= action.widths.users[0]); // user 2 is the most frequent
//! assert!(ActionSampler::new(60, 8, &[5, 0, 9], &[1, 1, 3, 7]).is_err()); // 7 entities hold at most 56
//! ```

use std::cmp::Reverse;
use std::ops::RangeInclusive;

use rand::{Rng, RngExt};

use crate::{Error, Result};

// ---------------------------------------------------------------------------------------------
// Standard normal distribution.

/// √(π/2) = m(0).
const SQRT_HALF_PI: f64 = 1.253_314_137_315_500_3;
/// 1/√(2π).
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
/// √(2π).
const SQRT_2PI: f64 = 2.506_628_274_631_000_5;
/// ln √(2π).
const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// Spacing of the Mills-ratio table.
const MILLS_STEP: f64 = 0.125;
/// Nodes 0, 1/8, ..., 8.
const MILLS_NODES: usize = 65;
/// Beyond this, the continued fraction converges in a few terms.
const MILLS_TABLE_END: f64 = 8.0 + MILLS_STEP / 2.0;
/// `m(k/8)` for `k` in `0..65`.
const MILLS: [f64; MILLS_NODES] = mills_table();

const fn mills_table() -> [f64; MILLS_NODES] {
    let mut table = [0.0; MILLS_NODES];
    let mut k = 0;
    while k < MILLS_NODES {
        let z = k as f64 * MILLS_STEP;
        table[k] =
            if z < 0.5 { mills_series(z) } else { mills_continued_fraction(z, if z < 1.5 { 2000 } else { 300 }) };
        k += 1;
    }
    table
}

/// The Taylor series of `m` at 0: `a_0 = √(π/2)`, `a_1 = −1`, `a_{n+1} = a_{n−1}/(n+1)`.
const fn mills_series(z: f64) -> f64 {
    let (mut before, mut last) = (SQRT_HALF_PI, -1.0);
    let mut sum = SQRT_HALF_PI - z;
    let mut power = z;
    let mut n = 1;
    while n < 80 {
        let next = before / (n + 1) as f64;
        power *= z;
        sum += next * power;
        before = last;
        last = next;
        n += 1;
    }
    sum
}

/// `m(z) = 1/(z + 1/(z + 2/(z + 3/(z + ...))))`, evaluated backwards from `terms` (z > 0).
const fn mills_continued_fraction(z: f64, terms: u32) -> f64 {
    let mut tail = 0.0;
    let mut k = terms;
    while k > 0 {
        tail = k as f64 / (z + tail);
        k -= 1;
    }
    1.0 / (z + tail)
}

/// The Mills ratio `(1 − Φ(z))/φ(z)` for `z ≥ 0`.
fn mills(z: f64) -> f64 {
    if z > MILLS_TABLE_END {
        return mills_continued_fraction(z, 30);
    }
    let k = ((z / MILLS_STEP).round() as usize).min(MILLS_NODES - 1);
    let z0 = k as f64 * MILLS_STEP;
    let h = z - z0;
    // Coefficients from m' = z·m − 1: a_1 = z0·a_0 − 1, (n+1)·a_{n+1} = z0·a_n + a_{n−1}.
    let (mut before, mut last) = (MILLS[k], z0 * MILLS[k] - 1.0);
    let mut sum = before + last * h;
    let mut power = h;
    for n in 1..24 {
        let next = (z0 * last + before) / (n + 1) as f64;
        power *= h;
        sum += next * power;
        before = last;
        last = next;
    }
    sum
}

/// `φ(z) = exp(−z²/2)/√(2π)`, with `z²` split so that the large part is exact.
fn gauss(z: f64) -> f64 {
    let high = f64::from_bits(z.to_bits() & (!0u64 << 27)); // 26 significant bits: high² is exact
    let low = z - high;
    (-0.5 * high * high).exp() * (-0.5 * low * (z + high)).exp() * FRAC_1_SQRT_2PI
}

/// `1 − Φ(z)` for `z ≥ 0`.
fn upper_tail(z: f64) -> f64 {
    if z > 40.0 { 0.0 } else { gauss(z) * mills(z) }
}

/// `Φ(z) − ½` for `z ≥ 0`, accurate also for tiny `z`.
fn half_central(z: f64) -> f64 {
    if z < 1.0 {
        // Φ(z) − ½ = φ(z) · Σ z^(2k+1) / (2k+1)!!
        let (mut term, mut sum) = (z, z);
        let z2 = z * z;
        let mut k = 0;
        while term > 1e-18 * sum && k < 60 {
            term *= z2 / (2 * k + 3) as f64;
            sum += term;
            k += 1;
        }
        gauss(z) * sum
    } else {
        0.5 - upper_tail(z)
    }
}

/// The standard normal CDF Φ (NaN for NaN).
pub fn normal_cdf(z: f64) -> f64 {
    if z.is_nan() {
        f64::NAN
    } else if z >= 0.0 {
        1.0 - upper_tail(z)
    } else {
        upper_tail(-z)
    }
}

/// The standard normal quantile Φ⁻¹ (`−∞` at 0, `+∞` at 1, NaN outside `[0, 1]`).
pub fn normal_quantile(p: f64) -> f64 {
    let q = p - 0.5; // exact for p ≥ ¼
    if !(0.0..=1.0).contains(&p) {
        f64::NAN
    } else if q.abs() <= 0.3 {
        central_quantile(q.abs()).copysign(q)
    } else if p < 0.5 {
        -upper_quantile(p)
    } else {
        upper_quantile(1.0 - p) // exact for p ≥ ½
    }
}

/// The `x ≥ 0` with `1 − Φ(x) = t`, for `t` in `[0, ½]`: Halley steps on `ln(1 − Φ(x)) − ln t`
/// (concave and decreasing, so the plain Newton step, used when Halley's denominator is small,
/// converges from anywhere), from Abramowitz & Stegun 26.2.23 (error < 4.5e-4).
fn upper_quantile(t: f64) -> f64 {
    if t >= 0.5 {
        return 0.0;
    }
    if t <= 0.0 {
        return f64::INFINITY;
    }
    let ln_t = t.ln();
    let s = (-2.0 * ln_t).sqrt();
    let mut x = (s
        - (2.515_517 + s * (0.802_853 + s * 0.010_328)) / (1.0 + s * (1.432_788 + s * (0.189_269 + s * 0.001_308))))
        .max(0.0);
    for _ in 0..100 {
        let m = mills(x);
        let f = -0.5 * x * x - LN_SQRT_2PI + m.ln() - ln_t;
        let newton = m * f;
        let denominator = 1.0 - 0.5 * f * (x * m - 1.0);
        let step = if denominator > 0.5 { newton / denominator } else { newton };
        let next = (x + step).max(0.0);
        // Halley converges cubically: a step this small leaves an error far below an ulp. (Near 0
        // the answer is only known to about ε absolutely anyway, as t is near ½.)
        if (next - x).abs() <= 1e-7 * next.max(1.0) {
            return next;
        }
        x = next;
    }
    x
}

/// The `x ≥ 0` with `Φ(x) − ½ = q`, for `q` in `[0, 0.3]`: Halley steps from the inverted series
/// `x ≈ y + y³/6 + 7y⁵/120`, `y = q·√(2π)`.
fn central_quantile(q: f64) -> f64 {
    let y = q * SQRT_2PI;
    let mut x = y * (1.0 + y * y * (1.0 / 6.0 + y * y * (7.0 / 120.0)));
    if x == 0.0 {
        return 0.0;
    }
    for _ in 0..100 {
        let u = (half_central(x) - q) / gauss(x);
        let denominator = 1.0 + 0.5 * x * u;
        let step = if denominator > 0.5 { u / denominator } else { u };
        let next = (x - step).max(0.0);
        if (next - x).abs() <= 1e-7 * next {
            return next;
        }
        x = next;
    }
    x
}

// ---------------------------------------------------------------------------------------------
// The four distributions.

/// The weight distributions of the sampler (`bet-algorithm.md` §3.3), each with a shape `β`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Distribution {
    /// Density `β·x^(β−1)` on `[0, 1]`; draw `U^(1/β)`.
    PowerLaw,
    /// Exp(1) truncated to `[0, β]`; draw `−ln(1 − U·(1 − e^(−β)))`.
    TruncatedExponential,
    /// N(0, 1) truncated to `[0, β]`; draw `Φ⁻¹(½ + U·(Φ(β) − ½))`.
    TruncatedNormal,
    /// Log-normal with σ = β, μ = 0; draw `exp(β·Φ⁻¹(U))`.
    LogNormal,
}

impl Distribution {
    /// All four, in the order the sampler indexes them.
    pub const ALL: [Distribution; 4] = [
        Distribution::PowerLaw,
        Distribution::TruncatedExponential,
        Distribution::TruncatedNormal,
        Distribution::LogNormal,
    ];

    /// The largest β (`β ~ U(0, β_max]`): 20, 5, 20 and 0.5.
    pub fn beta_max(self) -> f64 {
        match self {
            Distribution::PowerLaw => 20.0,
            Distribution::TruncatedExponential => 5.0,
            Distribution::TruncatedNormal => 20.0,
            Distribution::LogNormal => 0.5,
        }
    }

    /// A short name for logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::PowerLaw => "power-law",
            Distribution::TruncatedExponential => "truncated-exponential",
            Distribution::TruncatedNormal => "truncated-normal",
            Distribution::LogNormal => "log-normal",
        }
    }

    /// β clamped into `(0, β_max]` (NaN and non-positive values become the smallest positive).
    fn clamp_beta(self, beta: f64) -> f64 {
        if beta > 0.0 { beta.min(self.beta_max()) } else { f64::MIN_POSITIVE }
    }

    /// Draws β uniformly from `(0, β_max]` (never 0, so the power law stays defined).
    pub fn draw_beta<R: Rng + ?Sized>(self, rng: &mut R) -> f64 {
        self.beta_max() * (1.0 - rng.random::<f64>())
    }

    /// The inverse CDF at `u` in `(0, 1)`; β is clamped into `(0, β_max]`. Never NaN for `u` in
    /// `[0, 1]`; the power law with a tiny β may give 0.
    pub fn quantile(self, beta: f64, u: f64) -> f64 {
        Inverse::new(self, beta).at(u)
    }

    /// One draw by inverse CDF from a uniform in the open interval (0, 1).
    pub fn sample<R: Rng + ?Sized>(self, beta: f64, rng: &mut R) -> f64 {
        self.quantile(beta, open_unit(rng))
    }

    /// The CDF at `x` (β clamped as in [`Distribution::quantile`]).
    pub fn cdf(self, beta: f64, x: f64) -> f64 {
        let beta = self.clamp_beta(beta);
        if x.is_nan() {
            return f64::NAN;
        }
        let p = match self {
            Distribution::PowerLaw if x <= 0.0 => 0.0,
            Distribution::PowerLaw => (beta * x.ln()).exp(),
            Distribution::TruncatedExponential if x <= 0.0 => 0.0,
            Distribution::TruncatedExponential => (-x.min(beta)).exp_m1() / (-beta).exp_m1(),
            Distribution::TruncatedNormal if x <= 0.0 => 0.0,
            Distribution::TruncatedNormal => half_central(x.min(beta)) / half_central(beta),
            Distribution::LogNormal if x <= 0.0 => 0.0,
            Distribution::LogNormal => normal_cdf(x.ln() / beta),
        };
        p.clamp(0.0, 1.0)
    }

    /// Weights for uniforms sorted in decreasing order: non-increasing, the largest exactly 1,
    /// never NaN. The power law is computed in logs (`exp((ln u − ln u_max)/β)`), so a tiny β
    /// gives one weight 1 and the rest (near) 0 instead of all zeros.
    fn sorted_weights(self, beta: f64, uniforms_desc: &[f64]) -> Vec<f64> {
        let Some(&top) = uniforms_desc.first() else { return Vec::new() };
        let mut weights: Vec<f64> = match self {
            Distribution::PowerLaw => {
                let (beta, ln_top) = (self.clamp_beta(beta), top.ln());
                uniforms_desc.iter().map(|&u| ((u.ln() - ln_top) / beta).exp()).collect()
            }
            _ => {
                let inverse = Inverse::new(self, beta);
                uniforms_desc.iter().map(|&u| inverse.at(u)).collect()
            }
        };
        let max = weights.iter().copied().fold(0.0, f64::max);
        if !(max > 0.0 && max.is_finite()) {
            return vec![1.0; weights.len()];
        }
        let mut previous = 1.0f64;
        for weight in &mut weights {
            // Normalise, and remove any last-bit non-monotonicity of the numerical quantiles.
            let w = *weight / max;
            *weight = if w.is_nan() { 0.0 } else { w.min(previous) };
            previous = *weight;
        }
        weights
    }
}

/// A distribution's inverse CDF with its per-β constants computed once.
struct Inverse {
    distribution: Distribution,
    beta: f64,
    /// Truncated exponential: `1 − e^(−β)`; truncated normal: `Φ(β) − ½`.
    mass: f64,
    /// Truncated normal: `1 − Φ(β)`.
    tail: f64,
}

impl Inverse {
    fn new(distribution: Distribution, beta: f64) -> Inverse {
        let beta = distribution.clamp_beta(beta);
        let (mass, tail) = match distribution {
            Distribution::TruncatedExponential => (-(-beta).exp_m1(), 0.0),
            Distribution::TruncatedNormal => (half_central(beta), upper_tail(beta)),
            Distribution::PowerLaw | Distribution::LogNormal => (0.0, 0.0),
        };
        Inverse { distribution, beta, mass, tail }
    }

    fn at(&self, u: f64) -> f64 {
        let (beta, u) = (self.beta, if u.is_nan() { 0.5 } else { u.clamp(0.0, 1.0) });
        match self.distribution {
            Distribution::PowerLaw => (u.ln() / beta).exp(),
            Distribution::TruncatedExponential => (-(-u * self.mass).ln_1p()).clamp(0.0, beta),
            Distribution::TruncatedNormal => {
                let q = u * self.mass;
                let x = if q <= 0.3 {
                    central_quantile(q)
                } else {
                    // ½ − q without cancellation: (½ − (Φ(β) − ½)) + (1 − u)·(Φ(β) − ½).
                    upper_quantile(self.tail + (1.0 - u) * self.mass)
                };
                x.clamp(0.0, beta)
            }
            Distribution::LogNormal => (beta * normal_quantile(u)).exp(),
        }
    }
}

/// A uniform in the open interval (0, 1): `(k + ½)/2⁵³`.
fn open_unit<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    ((rng.random::<u64>() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

// ---------------------------------------------------------------------------------------------
// Widths.

/// Widths of every user and item, indexed by user / item index (not by rank).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SizeAssignment {
    /// Width of user `u` at `users[u]`.
    pub users: Vec<u32>,
    /// Width of item `i` at `items[i]`.
    pub items: Vec<u32>,
}

impl SizeAssignment {
    /// The number of values: the sum of all widths.
    pub fn total(&self) -> u64 {
        self.users.iter().chain(&self.items).map(|&w| u64::from(w)).sum()
    }

    /// Users then items: the trainer's node layout.
    pub fn as_node_widths(&self) -> Vec<u32> {
        self.users.iter().chain(&self.items).copied().collect()
    }

    /// Splits node widths (users then items) at `n_users`; `None` if there are fewer.
    pub fn from_node_widths(widths: &[u32], n_users: usize) -> Option<SizeAssignment> {
        (n_users <= widths.len())
            .then(|| SizeAssignment { users: widths[..n_users].to_vec(), items: widths[n_users..].to_vec() })
    }

    /// `h[d − 1]` = how many users and items have width `d`, for `d` in `1..=d_max` (widths
    /// outside that range are not counted).
    pub fn histogram(&self, d_max: u32) -> Vec<u64> {
        let mut h = vec![0u64; d_max as usize];
        for &w in self.users.iter().chain(&self.items) {
            if (1..=d_max).contains(&w) {
                h[w as usize - 1] += 1;
            }
        }
        h
    }
}

/// Entity indices by training frequency, decreasing; ties to the lower index.
pub fn frequency_rank_order(frequency: &[u32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..frequency.len()).collect();
    order.sort_by_key(|&i| Reverse(frequency[i])); // stable: ties keep index order
    order
}

/// Refuses `d_max == 0` and limits outside `[n, d_max·n]`.
fn check_limit(limit: u64, d_max: u32, n_users: usize, n_items: usize) -> Result<()> {
    if d_max == 0 {
        return Err(Error::Settings("d_max must be at least 1".into()));
    }
    let n = n_users as u128 + n_items as u128;
    let most = n * u128::from(d_max);
    if u128::from(limit) < n || u128::from(limit) > most {
        return Err(Error::Budget(format!(
            "a limit of {limit} values cannot be met exactly by {n_users} users and {n_items} items with widths \
             in 1..={d_max}: it must lie between {n} (width 1 each) and {most} (width {d_max} each)"
        )));
    }
    Ok(())
}

/// `x_i = clamp(λ·v_i, lo, hi)` with `Σ x_i = total` as nearly as floats allow (`v` non-increasing
/// and finite; zeros stay at `lo`). Σ is non-decreasing in λ and, with prefix sums over the sorted
/// `v`, costs two binary searches, so λ is found by bisecting the bit patterns of positive floats
/// (at most 63 steps). Rounding error here only shifts which entity gets a unit: [`round_exact`]
/// makes the sum exact.
fn fill(v: &[f64], total: f64, lo: f64, hi: f64) -> Vec<f64> {
    let n = v.len();
    let positive = &v[..v.iter().take_while(|&&x| x > 0.0).count()];
    if positive.is_empty() || hi <= lo || total <= n as f64 * lo {
        return vec![lo; n];
    }
    let clip = |lambda: f64, x: f64| {
        let y = lambda * x;
        if x <= 0.0 || y <= lo {
            lo
        } else if y >= hi {
            hi
        } else {
            y
        }
    };
    let mut prefix = Vec::with_capacity(positive.len() + 1);
    prefix.push(0.0);
    for &x in positive {
        prefix.push(prefix[prefix.len() - 1] + x);
    }
    let sum_at = |lambda: f64| {
        let capped = positive.partition_point(|&x| lambda * x >= hi);
        let above_lo = positive.partition_point(|&x| lambda * x > lo);
        capped as f64 * hi + lambda * (prefix[above_lo] - prefix[capped]) + (n - above_lo) as f64 * lo
    };
    // Invariant: Σ(below) ≤ total < Σ(above); λ = 0 gives n·lo.
    let lambda = if sum_at(f64::MAX) <= total {
        f64::MAX
    } else {
        let (mut below, mut above) = (0u64, f64::MAX.to_bits());
        while above - below > 1 {
            let middle = below + (above - below) / 2;
            if sum_at(f64::from_bits(middle)) <= total {
                below = middle;
            } else {
                above = middle;
            }
        }
        f64::from_bits(below)
    };
    v.iter().map(|&x| clip(lambda, x)).collect()
}

/// Integers in `lo..=hi` summing to exactly `total`, non-increasing, from real targets that
/// should be non-increasing and sum to about `total` (needs `n·lo ≤ total ≤ n·hi`).
///
/// Floors first; the missing units go one each to the largest fractional parts (ties to the
/// lower position). Any difference left by float rounding is then settled in passes: +1 to the
/// first entries below `hi`, or −1 to the last entries above `lo`, which keeps the order.
fn round_exact(targets: &[f64], total: u64, lo: u32, hi: u32) -> Vec<u32> {
    let (lo_f, hi_f) = (f64::from(lo), f64::from(hi));
    let mut widths = Vec::with_capacity(targets.len());
    let mut fractions = Vec::with_capacity(targets.len());
    let mut previous = hi_f;
    for &x in targets {
        let x = if x.is_nan() { lo_f } else { x.clamp(lo_f, hi_f).min(previous) };
        previous = x;
        let floor = x.floor();
        widths.push(floor as u32);
        fractions.push(x - floor);
    }
    let sum: u64 = widths.iter().map(|&w| u64::from(w)).sum();
    if sum < total {
        let mut missing = total - sum;
        let mut candidates: Vec<usize> = (0..widths.len()).filter(|&i| fractions[i] > 0.0 && widths[i] < hi).collect();
        candidates.sort_by(|&a, &b| fractions[b].total_cmp(&fractions[a]).then(a.cmp(&b)));
        for &i in candidates.iter().take(usize::try_from(missing).unwrap_or(usize::MAX)) {
            widths[i] += 1;
            missing -= 1;
        }
        while missing > 0 {
            let before = missing;
            for w in widths.iter_mut().filter(|w| **w < hi) {
                if missing == 0 {
                    break;
                }
                *w += 1;
                missing -= 1;
            }
            if missing == before {
                break; // infeasible total (callers check): never loop
            }
        }
    } else {
        let mut excess = sum - total;
        while excess > 0 {
            let before = excess;
            for w in widths.iter_mut().rev().filter(|w| **w > lo) {
                if excess == 0 {
                    break;
                }
                *w -= 1;
                excess -= 1;
            }
            if excess == before {
                break;
            }
        }
    }
    widths
}

/// Scales raw values to widths summing to exactly `limit`: `clamp(λ·v, 1, d_max)` for the one
/// λ that meets the limit, rounded exactly (largest remainder, then order-keeping passes).
///
/// `values[k]` is entity `k`'s raw value (finite and ≥ 0; anything else counts as 0), and
/// entities with larger values never get smaller widths; equal values are ranked by lower index
/// first. Values that already are integer widths summing to the limit come back unchanged.
/// Entities with value 0 get width 1 unless the limit needs more, in which case they share the
/// rest as equally as possible, lower index first.
pub fn repair_to_limit(values: &[f64], limit: u64, d_max: u32) -> Result<Vec<u32>> {
    check_limit(limit, d_max, values.len(), 0)?;
    let clean = |x: f64| if x.is_finite() && x > 0.0 { x } else { 0.0 };
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| clean(values[b]).total_cmp(&clean(values[a])).then(a.cmp(&b)));
    let sorted: Vec<f64> = order.iter().map(|&k| clean(values[k])).collect();
    Ok(repair_in_order(&order, &sorted, limit, d_max))
}

/// [`repair_to_limit`] for entities already in rank `order`, with their raw values in that order
/// (non-increasing, finite, ≥ 0). The limit must be feasible.
fn repair_in_order(order: &[usize], sorted: &[f64], limit: u64, d_max: u32) -> Vec<u32> {
    let max = sorted.first().copied().unwrap_or(0.0);
    let scaled: Vec<f64> = sorted.iter().map(|&x| if max > 0.0 { x / max } else { 0.0 }).collect();
    let targets = fill(&scaled, limit as f64, 1.0, f64::from(d_max));
    let rounded = round_exact(&targets, limit, 1, d_max);
    let mut widths = vec![0u32; order.len()];
    for (&k, &w) in order.iter().zip(&rounded) {
        widths[k] = w;
    }
    widths
}

/// MR baseline: uniform random widths in `1..=d_max` for every user, then every item, repaired to
/// exactly `limit` by [`repair_to_limit`] (one common scale factor, clipped to `1..=d_max`).
pub fn random_widths<R: Rng + ?Sized>(
    limit: u64,
    d_max: u32,
    n_users: usize,
    n_items: usize,
    rng: &mut R,
) -> Result<SizeAssignment> {
    check_limit(limit, d_max, n_users, n_items)?;
    let raw: Vec<f64> = (0..n_users + n_items).map(|_| f64::from(rng.random_range(1..=d_max))).collect();
    let widths = repair_to_limit(&raw, limit, d_max)?;
    Ok(SizeAssignment { users: widths[..n_users].to_vec(), items: widths[n_users..].to_vec() })
}

/// freq^α baseline: widths proportional to `frequency^α` over all users and items together,
/// clipped to `1..=d_max` and repaired to exactly `limit` by [`repair_to_limit`]. Frequency 0
/// gets the minimum; widths never decrease with frequency (ties: lower node index first, users
/// before items). `alpha` must be finite and ≥ 0 (the paper's baselines use 0.25, 0.5 and 1).
pub fn frequency_widths(
    limit: u64,
    d_max: u32,
    user_freq: &[u32],
    item_freq: &[u32],
    alpha: f64,
) -> Result<SizeAssignment> {
    if !(alpha.is_finite() && alpha >= 0.0) {
        return Err(Error::Settings(format!("freq^alpha widths need a finite alpha >= 0, not {alpha}")));
    }
    check_limit(limit, d_max, user_freq.len(), item_freq.len())?;
    let frequency: Vec<u32> = user_freq.iter().chain(item_freq).copied().collect();
    // Ranked by frequency itself, not by f^α: a tiny α could make distinct frequencies equal floats.
    let order = frequency_rank_order(&frequency);
    let top = order.first().map_or(0, |&k| frequency[k]);
    let sorted: Vec<f64> = order
        .iter()
        .map(|&k| if frequency[k] == 0 { 0.0 } else { (f64::from(frequency[k]) / f64::from(top)).powf(alpha) })
        .collect();
    let widths = repair_in_order(&order, &sorted, limit, d_max);
    Ok(SizeAssignment { users: widths[..user_freq.len()].to_vec(), items: widths[user_freq.len()..].to_vec() })
}

// ---------------------------------------------------------------------------------------------
// The action sampler.

/// One sampled action: what was drawn and the widths it gives.
#[derive(Clone, Debug, PartialEq)]
pub struct Action {
    /// Distribution of the user weights.
    pub user_distribution: Distribution,
    /// β of the user weights.
    pub user_beta: f64,
    /// Distribution of the item weights.
    pub item_distribution: Distribution,
    /// β of the item weights.
    pub item_beta: f64,
    /// The users' share of the limit, drawn from [`ActionSampler::w_range`].
    pub w: f64,
    /// The widths, by user and item index.
    pub widths: SizeAssignment,
}

impl Action {
    /// Values given to users (`B_U`).
    pub fn user_budget(&self) -> u64 {
        self.widths.users.iter().map(|&w| u64::from(w)).sum()
    }

    /// Values given to items (`B_V = limit − B_U`).
    pub fn item_budget(&self) -> u64 {
        self.widths.items.iter().map(|&w| u64::from(w)).sum()
    }
}

/// Draws budget-exact actions for one dataset, limit and `d_max` (see the module documentation).
#[derive(Clone, Debug)]
pub struct ActionSampler {
    limit: u64,
    d_max: u32,
    user_order: Vec<usize>,
    item_order: Vec<usize>,
    user_budgets: RangeInclusive<u64>,
}

impl ActionSampler {
    /// A sampler for `limit` values over users and items with these training frequencies.
    /// Refuses `d_max == 0`, a side without entities, and limits that cannot be met exactly
    /// (below `|U| + |V|` or above `d_max·(|U| + |V|)`).
    pub fn new(limit: u64, d_max: u32, user_freq: &[u32], item_freq: &[u32]) -> Result<ActionSampler> {
        if user_freq.is_empty() || item_freq.is_empty() {
            return Err(Error::Settings(format!(
                "the action sampler needs users and items, got {} users and {} items",
                user_freq.len(),
                item_freq.len()
            )));
        }
        check_limit(limit, d_max, user_freq.len(), item_freq.len())?;
        let (n_u, n_v, d) = (user_freq.len() as u64, item_freq.len() as u64, u64::from(d_max));
        // |U| ≤ B_U ≤ d·|U| and |V| ≤ limit − B_U ≤ d·|V|; nonempty because the limit is feasible
        // (and d·n fits in u64 since limit ≥ n and limit ≤ d·n were checked in u128).
        let lo = n_u.max(limit.saturating_sub(d.saturating_mul(n_v)));
        let hi = d.saturating_mul(n_u).min(limit - n_v);
        Ok(ActionSampler {
            limit,
            d_max,
            user_order: frequency_rank_order(user_freq),
            item_order: frequency_rank_order(item_freq),
            user_budgets: lo..=hi,
        })
    }

    /// The limit every action meets exactly.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The largest width.
    pub fn d_max(&self) -> u32 {
        self.d_max
    }

    /// The user budgets `B_U` for which both sides can be met exactly.
    pub fn user_budget_range(&self) -> RangeInclusive<u64> {
        self.user_budgets.clone()
    }

    /// The interval `w` is drawn from: the user budget range divided by the limit.
    pub fn w_range(&self) -> (f64, f64) {
        let limit = self.limit as f64;
        (*self.user_budgets.start() as f64 / limit, *self.user_budgets.end() as f64 / limit)
    }

    /// Draws one action (no rejection, no unbounded loop).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Action {
        let (lo, hi) = (*self.user_budgets.start(), *self.user_budgets.end());
        let w = (lo as f64 + rng.random::<f64>() * (hi - lo) as f64) / self.limit as f64;
        let user_budget = ((w * self.limit as f64).round() as u64).clamp(lo, hi);
        let user_distribution = Distribution::ALL[rng.random_range(0..4)];
        let user_beta = user_distribution.draw_beta(rng);
        let item_distribution = Distribution::ALL[rng.random_range(0..4)];
        let item_beta = item_distribution.draw_beta(rng);
        let users = self.side(user_distribution, user_beta, user_budget, &self.user_order, rng);
        let items = self.side(item_distribution, item_beta, self.limit - user_budget, &self.item_order, rng);
        Action {
            user_distribution,
            user_beta,
            item_distribution,
            item_beta,
            w,
            widths: SizeAssignment { users, items },
        }
    }

    /// One side: weights, 1 + proportional share of `budget − n` capped at `d_max − 1`, exact
    /// rounding, then the k-th most frequent entity gets the k-th largest width.
    fn side<R: Rng + ?Sized>(
        &self,
        distribution: Distribution,
        beta: f64,
        budget: u64,
        order: &[usize],
        rng: &mut R,
    ) -> Vec<u32> {
        let n = order.len();
        let mut uniforms: Vec<f64> = (0..n).map(|_| open_unit(rng)).collect();
        uniforms.sort_unstable_by(|a, b| b.total_cmp(a));
        let weights = distribution.sorted_weights(beta, &uniforms);
        let extra = budget - n as u64;
        let targets = fill(&weights, extra as f64, 0.0, f64::from(self.d_max - 1));
        let extras = round_exact(&targets, extra, 0, self.d_max - 1);
        let mut widths = vec![0u32; n];
        for (&entity, &e) in order.iter().zip(&extras) {
            widths[entity] = e + 1;
        }
        widths
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_pcg::Pcg64Mcg;

    fn rel_err(got: f64, want: f64) -> f64 {
        if got == want { 0.0 } else { ((got - want) / want).abs() }
    }

    /// Φ at the binary inputs (the doubles nearest these decimals), from mpmath at 50 digits.
    const PHI: [(f64, f64); 33] = [
        (-37.5, 4.605353009581955e-308),
        (-30.0, 4.906713927148187e-198),
        (-20.0, 2.7536241186062337e-89),
        (-12.0, 1.776482112077679e-33),
        (-10.0, 7.619853024160525e-24),
        (-8.05, 4.1397018162731465e-16),
        (-8.0, 6.220960574271784e-16),
        (-6.0, 9.86587645037698e-10),
        (-5.0, 2.866515718791939e-07),
        (-3.0, 0.0013498980316300946),
        (-2.2, 0.013903447513498604),
        (-1.96, 0.024997895148220435),
        (-1.0, 0.15865525393145705),
        (-0.5, 0.3085375387259869),
        (-0.1, 0.460172162722971),
        (-1e-5, 0.49999601057719606),
        (-1e-12, 0.49999999999960104),
        (0.0, 0.5),
        (1e-10, 0.5000000000398942),
        (0.03, 0.5119664734141126),
        (0.3, 0.6179114221889527),
        (0.5, 0.6914624612740131),
        (0.7, 0.758036347776927),
        (1.0, 0.8413447460685429),
        (1.5, 0.9331927987311419),
        (1.96, 0.9750021048517795),
        (2.5, 0.9937903346742238),
        (3.0, 0.9986501019683699),
        (4.0, 0.9999683287581669),
        (6.0, 0.9999999990134123),
        (7.9, 0.9999999999999986),
        (8.07, 0.9999999999999997),
        (9.0, 1.0),
    ];

    /// Φ⁻¹ at exact binary inputs, from mpmath at 50 digits.
    const PHI_INV: [(f64, f64); 18] = [
        (1e-300, -37.0470962993612),
        (1e-100, -21.273453560965326),
        (1e-20, -9.262340089798407),
        (1e-10, -6.361340902404057),
        (1e-5, -4.264890793922825),
        (0.001, -3.0902323061678136),
        (0.025, -1.9599639845400543),
        (0.1, -1.2815515655446004),
        (0.3, -0.5244005127080408),
        (0.49, -0.025068908258711057),
        (0.4999999999, -2.506628482030354e-10),
        (0.5, 0.0),
        (0.5000001, 2.506628273311648e-07),
        (0.7, 0.5244005127080407),
        (0.975, 1.9599639845400538),
        (0.999, 3.090232306167813),
        (0.9999999, 5.199337582290661),
        (0.999999999999, 7.0344869100478356),
    ];

    #[test]
    fn normal_cdf_matches_reference_values() {
        for &(z, p) in &PHI {
            let got = normal_cdf(z);
            assert!(rel_err(got, p) < 2e-15, "Φ({z}) = {got:e}, want {p:e}");
        }
        assert_eq!(normal_cdf(1.96), 0.9750021048517795);
        assert!(rel_err(normal_cdf(-8.0), 6.22096057427178e-16) < 1e-14);
        assert_eq!(normal_cdf(-45.0), 0.0);
        assert_eq!(normal_cdf(f64::INFINITY), 1.0);
        assert_eq!(normal_cdf(f64::NEG_INFINITY), 0.0);
        assert!(normal_cdf(f64::NAN).is_nan());
        // Subnormal tail: still the right magnitude.
        assert!(rel_err(normal_cdf(-38.0), 2.88542835e-316) < 1e-6);
        // Monotone across the table's nodes and the switch to the continued fraction.
        let grid: Vec<f64> = (-9000..=9000).map(|k| k as f64 * 1e-3).collect();
        assert!(grid.windows(2).all(|w| normal_cdf(w[0]) <= normal_cdf(w[1])));
    }

    #[test]
    fn normal_quantile_matches_reference_values() {
        for &(p, x) in &PHI_INV {
            let got = normal_quantile(p);
            assert!(rel_err(got, x) < 2e-15, "Φ⁻¹({p:e}) = {got:e}, want {x:e}");
        }
        assert!(rel_err(normal_quantile(0.975), 1.959963984540054) < 1e-15);
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
        assert!(normal_quantile(-0.1).is_nan() && normal_quantile(1.5).is_nan() && normal_quantile(f64::NAN).is_nan());
        // Round trips in both tails and the middle.
        for k in 1..2000 {
            let p = k as f64 / 2000.0;
            assert!(rel_err(normal_cdf(normal_quantile(p)), p) < 4e-15, "p = {p}");
            let t = (-(k as f64) * 0.35).exp(); // down to 1e-304
            let x = normal_quantile(t);
            // x itself is only known to half an ulp, which moves Φ by |x|·ulp(x)/2 relatively.
            assert!(rel_err(normal_cdf(x), t) < 4e-15 + x * x * f64::EPSILON, "t = {t:e}");
        }
    }

    #[test]
    fn tail_helpers_are_accurate_and_consistent() {
        // 1 − Φ(z) and Φ(z) − ½ against reference values (mpmath).
        assert!(rel_err(upper_tail(8.0), 6.220960574271784e-16) < 2e-15);
        assert!(rel_err(upper_tail(20.0), 2.7536241186062337e-89) < 2e-15);
        assert!(rel_err(half_central(1e-10), 3.989422804014327e-11) < 2e-15);
        assert!(rel_err(half_central(0.5), 0.1914624612740131) < 2e-15);
        assert!(rel_err(half_central(2.0), 0.4772498680518208) < 2e-15);
        for k in 1..400 {
            let q = k as f64 * 0.3 / 400.0;
            assert!(rel_err(half_central(central_quantile(q)), q) < 4e-15);
            let t = k as f64 * 0.5 / 400.0;
            assert!(rel_err(upper_tail(upper_quantile(t)), t) < 4e-15);
        }
    }

    #[test]
    fn quantiles_invert_the_cdfs() {
        for d in Distribution::ALL {
            for beta in [1e-3, 0.1, 0.37, 1.0, 4.5, 20.0].map(|f| f * d.beta_max() / 20.0) {
                for k in 1..100 {
                    let u = k as f64 / 100.0;
                    let x = d.quantile(beta, u);
                    if x < f64::MIN_POSITIVE {
                        // Only the power law underflows: u^(1/β) below the normal range has too few bits.
                        assert!(d == Distribution::PowerLaw && u.ln() / beta < -708.0, "{d:?} β={beta} u={u}");
                        continue;
                    }
                    assert!((d.cdf(beta, x) - u).abs() < 1e-9, "{d:?} β={beta} u={u} x={x}");
                }
            }
        }
    }

    #[test]
    fn extreme_beta_never_gives_nan() {
        for d in Distribution::ALL {
            for beta in [0.0, -1.0, f64::NAN, f64::MIN_POSITIVE, 1e-300, 1e-12, 1e6, f64::INFINITY] {
                for u in [0.0, 1e-300, 1e-9, 0.5, 1.0 - 1e-16, 1.0] {
                    let x = d.quantile(beta, u);
                    assert!(x >= 0.0 && !x.is_nan(), "{d:?} β={beta} u={u}: {x}");
                    let p = d.cdf(beta, x);
                    assert!((0.0..=1.0).contains(&p), "{d:?} β={beta} x={x}: {p}");
                }
                let uniforms: Vec<f64> = (1..50).rev().map(|k| k as f64 / 50.0).collect();
                let w = d.sorted_weights(beta, &uniforms);
                assert_eq!(w[0], 1.0);
                assert!(w.iter().all(|x| (0.0..=1.0).contains(x)) && w.windows(2).all(|p| p[0] >= p[1]));
            }
        }
        // The power law with a vanishing β: one weight 1, the rest 0, not all zeros.
        let w = Distribution::PowerLaw.sorted_weights(1e-300, &[0.9, 0.5, 0.1]);
        assert_eq!(w, vec![1.0, 0.0, 0.0]);
    }

    #[test]
    fn sorted_weights_are_the_tested_draws_rescaled() {
        let mut rng = Pcg64Mcg::seed_from_u64(3);
        for d in Distribution::ALL {
            for beta in [0.05, 0.5, 1.0].map(|f| f * d.beta_max()) {
                let mut u: Vec<f64> = (0..500).map(|_| open_unit(&mut rng)).collect();
                u.sort_unstable_by(|a, b| b.total_cmp(a));
                let draws: Vec<f64> = u.iter().map(|&u| d.quantile(beta, u)).collect();
                let top = draws.iter().copied().fold(0.0, f64::max);
                for (w, x) in d.sorted_weights(beta, &u).iter().zip(&draws) {
                    assert!((w - x / top).abs() <= 1e-12 * (x / top) + 1e-300, "{d:?} β={beta}");
                }
            }
        }
    }

    /// Kolmogorov–Smirnov statistic of `draws` against `cdf`.
    fn ks_statistic(mut draws: Vec<f64>, cdf: impl Fn(f64) -> f64) -> f64 {
        draws.sort_by(f64::total_cmp);
        let n = draws.len() as f64;
        draws.iter().enumerate().fold(0.0, |d, (i, &x)| {
            let f = cdf(x);
            d.max((i as f64 + 1.0) / n - f).max(f - i as f64 / n)
        })
    }

    /// 1.2 × the 5% critical value: a correct sampler fails with probability about 1%.
    fn ks_limit(n: usize) -> f64 {
        1.2 * 1.36 / (n as f64).sqrt()
    }

    #[test]
    fn draws_follow_their_cdfs() {
        let n = 5_000;
        for (k, d) in Distribution::ALL.into_iter().enumerate() {
            for (j, beta) in [0.002, 0.05, 0.3, 0.77, 1.0].map(|f| f * d.beta_max()).into_iter().enumerate() {
                let mut rng = Pcg64Mcg::seed_from_u64(1_000 + 10 * k as u64 + j as u64);
                let draws: Vec<f64> = (0..n).map(|_| d.sample(beta, &mut rng)).collect();
                let stat = ks_statistic(draws, |x| d.cdf(beta, x));
                assert!(stat < ks_limit(n), "{d:?} β={beta}: KS D = {stat:.4} ≥ {:.4}", ks_limit(n));
            }
        }
    }

    #[test]
    fn sampler_draws_w_beta_and_distributions_as_documented() {
        let sampler = ActionSampler::new(40, 8, &[3, 1, 2], &[0, 5, 5, 1, 2]).unwrap();
        let (w_lo, w_hi) = sampler.w_range();
        assert_eq!((w_lo, w_hi), (3.0 / 40.0, 24.0 / 40.0)); // B_U in 40 − 8·5 = 0 → 3 ..= min(24, 35)
        let mut rng = Pcg64Mcg::seed_from_u64(11);
        let actions: Vec<Action> = (0..3_000).map(|_| sampler.sample(&mut rng)).collect();
        let n = actions.len();
        let stat =
            ks_statistic(actions.iter().map(|a| a.w).collect(), |w| ((w - w_lo) / (w_hi - w_lo)).clamp(0.0, 1.0));
        assert!(stat < ks_limit(n), "w: KS D = {stat}");
        let scaled_betas = actions
            .iter()
            .flat_map(|a| [a.user_beta / a.user_distribution.beta_max(), a.item_beta / a.item_distribution.beta_max()]);
        let stat = ks_statistic(scaled_betas.collect(), |x| x.clamp(0.0, 1.0));
        assert!(stat < ks_limit(2 * n), "β/β_max: KS D = {stat}");
        for d in Distribution::ALL {
            let picks = actions.iter().filter(|a| a.user_distribution == d).count() as f64 / n as f64;
            assert!((picks - 0.25).abs() < 0.03, "{d:?} picked {picks}");
        }
    }

    #[test]
    fn same_seed_same_action() {
        let uf: Vec<u32> = (0..300).map(|k| (k * 7919) % 31).collect();
        let vf: Vec<u32> = (0..500).map(|k| (k * 104_729) % 17).collect();
        let sampler = ActionSampler::new(20_000, 64, &uf, &vf).unwrap();
        let run = |seed| {
            let mut rng = Pcg64Mcg::seed_from_u64(seed);
            (0..8).map(|_| sampler.sample(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
        let mr = |seed| random_widths(9_000, 32, 100, 200, &mut Pcg64Mcg::seed_from_u64(seed)).unwrap();
        assert_eq!(mr(1), mr(1));
    }

    #[test]
    fn infeasible_settings_are_refused() {
        let f = [1u32, 2, 3];
        assert!(matches!(ActionSampler::new(5, 4, &f, &f), Err(Error::Budget(_))));
        assert!(matches!(ActionSampler::new(25, 4, &f, &f), Err(Error::Budget(_))));
        assert!(ActionSampler::new(6, 4, &f, &f).is_ok() && ActionSampler::new(24, 4, &f, &f).is_ok());
        assert!(matches!(ActionSampler::new(6, 0, &f, &f), Err(Error::Settings(_))));
        assert!(matches!(ActionSampler::new(6, 4, &[], &f), Err(Error::Settings(_))));
        assert!(ActionSampler::new(u64::MAX, u32::MAX, &f, &f).is_err());
        let message = ActionSampler::new(5, 4, &f, &f).unwrap_err().to_string();
        assert!(message.contains("between 6") && message.contains("24"), "{message}");
        let mut rng = Pcg64Mcg::seed_from_u64(0);
        assert!(matches!(random_widths(5, 4, 3, 3, &mut rng), Err(Error::Budget(_))));
        assert!(matches!(random_widths(7, 0, 3, 3, &mut rng), Err(Error::Settings(_))));
        assert!(matches!(frequency_widths(25, 4, &f, &f, 0.5), Err(Error::Budget(_))));
        for alpha in [-0.5, f64::NAN, f64::INFINITY] {
            assert!(matches!(frequency_widths(10, 4, &f, &f, alpha), Err(Error::Settings(_))));
        }
        assert!(repair_to_limit(&[1.0, 2.0], 9, 4).is_err());
        assert_eq!(random_widths(0, 4, 0, 0, &mut rng).unwrap(), SizeAssignment::default());
    }

    #[test]
    fn baselines_on_small_examples() {
        // freq^1 over users and items together: 4·(9, 3, 0 | 6, 3) scaled to 20 in 1..=8.
        let w = frequency_widths(20, 8, &[9, 3, 0], &[6, 3], 1.0).unwrap();
        assert_eq!(w.total(), 20);
        assert_eq!(w.users[2], 1); // frequency 0: the minimum
        assert_eq!(w.users[0], 8); // capped; the rest shared in proportion
        assert!(w.items[0] >= w.users[1] && w.users[1] >= w.items[1]);
        // A vanishing α makes every f^α 1.0, but the frequency order still decides the leftovers.
        let w = frequency_widths(7, 4, &[1, 2], &[3], 1e-30).unwrap();
        assert_eq!(w, SizeAssignment { users: vec![2, 2], items: vec![3] });
        // Zero-frequency entities get more than 1 only when the limit needs it, shared evenly.
        let w = frequency_widths(22, 4, &[5, 0, 0], &[0, 0, 0], 0.5).unwrap();
        assert_eq!(w, SizeAssignment { users: vec![4, 4, 4], items: vec![4, 3, 3] });
        // Repairing widths that already meet the limit changes nothing.
        let widths = [3.0, 1.0, 8.0, 8.0, 2.0, 5.0];
        assert_eq!(repair_to_limit(&widths, 27, 8).unwrap(), vec![3, 1, 8, 8, 2, 5]);
        // Scaled up to 40: one factor, clipped at 8, the excess shared in proportion.
        let doubled = repair_to_limit(&widths, 40, 8).unwrap();
        // λ = 8/3: 3 → 8, 1 → 2.67, 2 → 5.33 (8s capped); the leftover unit goes to 2.67.
        assert_eq!(doubled, vec![8, 3, 8, 8, 5, 8]);
        let s = SizeAssignment { users: vec![1, 3], items: vec![3, 2] };
        assert_eq!(s.histogram(3), vec![1, 1, 2]);
        assert_eq!(s.as_node_widths(), vec![1, 3, 3, 2]);
        assert_eq!(SizeAssignment::from_node_widths(&s.as_node_widths(), 2), Some(s));
    }

    #[test]
    fn shares_and_rounding_are_as_documented() {
        // Extra 10, cap 4: the first share (λ·1) is capped, the other 6 go in proportion
        // (3, 1.5, 1.5); the tied leftover unit goes to the higher rank.
        let targets = fill(&[1.0, 0.5, 0.25, 0.25], 10.0, 0.0, 4.0);
        assert!(targets.iter().zip([4.0, 3.0, 1.5, 1.5]).all(|(x, y)| (x - y).abs() < 1e-12), "{targets:?}");
        assert_eq!(round_exact(&targets, 10, 0, 4), vec![4, 3, 2, 1]);
        // Float slop in either direction, and a total that needs passes.
        assert_eq!(round_exact(&[2.999_999_9, 2.000_000_1, 1.0], 6, 1, 3), vec![3, 2, 1]);
        assert_eq!(round_exact(&[3.0, 3.0, 3.0], 7, 1, 3), vec![3, 2, 2]);
        assert_eq!(round_exact(&[1.0, 1.0, 1.0], 8, 1, 3), vec![3, 3, 2]);
        // Zero weights stay at the floor until everyone else is capped.
        assert_eq!(fill(&[1.0, 0.0], 3.0, 1.0, 2.0), vec![2.0, 1.0]);
        // The extremes of the feasible range: all 1, all d_max.
        let f = [4u32, 0, 9, 9];
        for (limit, width) in [(8, 1), (8 * 7, 7)] {
            let a = ActionSampler::new(limit, 7, &f, &f).unwrap().sample(&mut Pcg64Mcg::seed_from_u64(1));
            assert_eq!(a.widths.as_node_widths(), vec![width; 8]);
        }
    }

    /// Widths along `order` (by frequency, decreasing; ties to the lower index) never increase.
    fn non_increasing_by_frequency(widths: &[u32], frequency: &[u32]) -> bool {
        let mut order: Vec<usize> = (0..frequency.len()).collect();
        order.sort_by(|&a, &b| frequency[b].cmp(&frequency[a]).then(a.cmp(&b)));
        order.windows(2).all(|p| widths[p[0]] >= widths[p[1]])
    }

    fn in_range(widths: &[u32], d_max: u32) -> bool {
        widths.iter().all(|w| (1..=d_max).contains(w))
    }

    fn dataset() -> impl Strategy<Value = (Vec<u32>, Vec<u32>, u32)> {
        let size = || prop_oneof![2 => 1usize..=40, 1 => 1usize..=3_000];
        let top = || prop::sample::select(vec![0u32, 1, 3, 40, u32::MAX]);
        (size(), size(), top(), top(), prop::sample::select(vec![1u32, 2, 7, 64, 128])).prop_flat_map(
            |(n_u, n_v, top_u, top_v, d_max)| {
                (prop::collection::vec(0..=top_u, n_u), prop::collection::vec(0..=top_v, n_v), Just(d_max))
            },
        )
    }

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

        /// Every action and baseline meets the limit exactly with widths in 1..=d_max, ordered by
        /// frequency rank; w and the side budgets are feasible. Sixteen limits per dataset (2,048
        /// with the default 128 cases), the extremes included.
        #[test]
        fn every_width_vector_is_exact(
            (user_freq, item_freq, d_max) in dataset(),
            fractions in prop::collection::vec(prop_oneof![Just(0.0), Just(1.0), 0.0..=1.0f64], 16),
            seed in any::<u64>(),
        ) {
            let (n_u, n_v) = (user_freq.len() as u64, item_freq.len() as u64);
            let n = n_u + n_v;
            let mut rng = Pcg64Mcg::seed_from_u64(seed);
            for (k, fraction) in fractions.into_iter().enumerate() {
                let limit = n + (fraction * ((u64::from(d_max) - 1) * n) as f64).round() as u64;
                let sampler = ActionSampler::new(limit, d_max, &user_freq, &item_freq).unwrap();
                let (w_lo, w_hi) = sampler.w_range();
                let budgets = sampler.user_budget_range();
                prop_assert!(budgets.start() <= budgets.end());
                let action = sampler.sample(&mut rng);
                let widths = &action.widths;
                prop_assert_eq!(widths.total(), limit);
                prop_assert!(in_range(&widths.users, d_max) && in_range(&widths.items, d_max));
                prop_assert!(non_increasing_by_frequency(&widths.users, &user_freq));
                prop_assert!(non_increasing_by_frequency(&widths.items, &item_freq));
                prop_assert!(w_lo <= action.w && action.w <= w_hi);
                let b_u = action.user_budget();
                prop_assert!(budgets.contains(&b_u));
                prop_assert!(n_u <= b_u && b_u <= u64::from(d_max) * n_u);
                prop_assert!(n_v <= action.item_budget() && action.item_budget() <= u64::from(d_max) * n_v);
                prop_assert_eq!(b_u, ((action.w * limit as f64).round() as u64).clamp(*budgets.start(), *budgets.end()));

                let mr = random_widths(limit, d_max, user_freq.len(), item_freq.len(), &mut rng).unwrap();
                prop_assert_eq!(mr.total(), limit);
                prop_assert!(in_range(&mr.users, d_max) && in_range(&mr.items, d_max));

                let alpha = [0.25, 0.5, 1.0][k % 3];
                let fw = frequency_widths(limit, d_max, &user_freq, &item_freq, alpha).unwrap();
                prop_assert_eq!(fw.total(), limit);
                prop_assert!(in_range(&fw.users, d_max) && in_range(&fw.items, d_max));
                let all_freq: Vec<u32> = user_freq.iter().chain(&item_freq).copied().collect();
                prop_assert!(non_increasing_by_frequency(&fw.as_node_widths(), &all_freq));

                // Widths that meet the limit are their own repair.
                let nodes = action.widths.as_node_widths();
                let raw: Vec<f64> = nodes.iter().map(|&w| f64::from(w)).collect();
                prop_assert_eq!(repair_to_limit(&raw, limit, d_max).unwrap(), nodes);
            }
        }

        /// Limits outside the feasible range are errors, never panics.
        #[test]
        fn infeasible_limits_are_errors(
            n_u in 0usize..50, n_v in 0usize..50, d_max in 0u32..130, limit in any::<u64>(), below in any::<bool>(),
        ) {
            let n = (n_u + n_v) as u64;
            let limit = if below { limit % (n + 1) } else { limit };
            let feasible = d_max > 0 && n_u > 0 && n_v > 0 && limit >= n && limit <= u64::from(d_max) * n;
            let (uf, vf) = (vec![1u32; n_u], vec![2u32; n_v]);
            prop_assert_eq!(ActionSampler::new(limit, d_max, &uf, &vf).is_ok(), feasible);
            let baseline_ok = d_max > 0 && limit >= n && limit <= u64::from(d_max) * n;
            prop_assert_eq!(frequency_widths(limit, d_max, &uf, &vf, 0.5).is_ok(), baseline_ok);
            let mut rng = Pcg64Mcg::seed_from_u64(limit);
            prop_assert_eq!(random_widths(limit, d_max, n_u, n_v, &mut rng).is_ok(), baseline_ok);
        }
    }
}
