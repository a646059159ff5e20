//! Test support: analytic gradients against finite differences, shared by the backbones'
//! gradient checks (NCF, NGCF).
//!
//! Plain central differences at h = 1e-6 bottom out at about 2e-10 absolute on these losses (an
//! ulp or two of the loss over 2h), which is not enough for entries of magnitude 1e-6. So the
//! check uses Richardson-extrapolated central differences, `(4 D(h/2) − D(h)) / 3`, whose error
//! is O(h⁴); the plain ones are reported for information.

/// Relative error with a floor, so that two tiny values do not blow up the ratio.
pub(crate) fn rel_err(numeric: f64, analytic: f64) -> f64 {
    (numeric - analytic).abs() / (1e-7 + numeric.abs().max(analytic.abs()))
}

/// What a check found over every entry with a gradient above 1e-9 (numeric or analytic).
pub(crate) struct GradientErrors {
    /// Worst relative error of the Richardson-extrapolated differences.
    pub worst: f64,
    /// Worst relative error of plain central differences at h = 1e-6.
    pub worst_plain: f64,
    /// Smallest magnitude among the checked entries (what the check must resolve).
    pub smallest: f64,
}

/// Compares `grads` (one per tensor) with differences of `loss`, moving each entry of the
/// tensors `tensors` returns by ±h and ±h/2 and putting it back.
pub(crate) fn compare<M>(
    model: &mut M,
    tensors: fn(&mut M) -> &mut Vec<Vec<f64>>,
    loss: impl Fn(&M) -> f64,
    grads: &[Vec<f64>],
    h: f64,
) -> GradientErrors {
    assert_eq!(grads.len(), tensors(model).len(), "one gradient per tensor");
    let mut errors = GradientErrors { worst: 0.0, worst_plain: 0.0, smallest: f64::INFINITY };
    for (t, grad) in grads.iter().enumerate() {
        assert_eq!(grad.len(), tensors(model)[t].len());
        for (k, &analytic) in grad.iter().enumerate() {
            let keep = tensors(model)[t][k];
            let mut central = |step: f64| {
                tensors(model)[t][k] = keep + step;
                let up = loss(model);
                tensors(model)[t][k] = keep - step;
                let down = loss(model);
                tensors(model)[t][k] = keep;
                (up - down) / (2.0 * step)
            };
            let plain = central(1e-6);
            let numeric = (4.0 * central(h / 2.0) - central(h)) / 3.0;
            if numeric.abs() > 1e-9 || analytic.abs() > 1e-9 {
                errors.worst = errors.worst.max(rel_err(numeric, analytic));
                errors.worst_plain = errors.worst_plain.max(rel_err(plain, analytic));
                errors.smallest = errors.smallest.min(numeric.abs().max(analytic.abs()));
            }
        }
    }
    errors
}
