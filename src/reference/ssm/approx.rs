//! HiPPO online approximation as the plain recurrence `c_k = Ā_k c_{k−1} + B̄_k f_k` with dense
//! f64 matrices (Gu et al. 2020, §3; discretised as in [`crate::ssm::discretize`](fn@crate::ssm::discretize)): for the scaled
//! step every `(Ā_k, B̄_k)` is the discretisation of the dense LegS `(A, B)` at Δ = 1/k, with no
//! use of LegS's structure (the shader's O(N) step relies on it).

use crate::math::discretize::discretize;
use crate::math::hippo::hippo;
use crate::types::ssm::{
    check_options, check_shape, fixed_step_matrices, HippoApproxOptions, Step,
};
use crate::{check_no_nan, Element, Error, Result};

fn step(ab: &[f64], bb: &[f64], prev: &[f64], x: f64, out: &mut [f64]) {
    let n = prev.len();
    for i in 0..n {
        let row = &ab[i * n..][..n];
        out[i] = bb[i] * x + row.iter().zip(prev).map(|(a, c)| a * c).sum::<f64>();
    }
}

/// `f: [B, L]` row-major (shape `f_shape`, `[L]` or `[B, L]`) -> `c: [B, L, N]` in f64.
///
/// Errors: as [`crate::ssm::hippo_approx`]; NaN in `f` is [`Error::NaN`] before any work.
pub fn hippo_approx<T: Element>(
    f: &[T],
    f_shape: &[usize],
    opts: &HippoApproxOptions,
) -> Result<Vec<f64>> {
    let op = "reference::hippo_approx";
    check_options(op, opts)?;
    let (rows, len, _) = check_shape(op, f_shape, opts.n)?;
    if f.len() != rows * len {
        return Err(Error::DataLength {
            shape: f_shape.to_vec(),
            expected: rows * len,
            got: f.len(),
        });
    }
    check_no_nan(op, "f", f)?;
    let n = opts.n;
    let mut c = vec![0.0f64; rows * len * n];
    let zero = vec![0.0; n];
    let fixed = match opts.step {
        Step::Fixed(dt) => Some(fixed_step_matrices(opts, dt)?),
        Step::Scaled => None,
    };
    let ss = hippo(opts.measure, n, opts.theta)?;
    let mut next = vec![0.0; n];
    for t in 0..len {
        let scaled;
        let (ab, bb) = match &fixed {
            Some((a, b)) => (a, b),
            None => {
                scaled = discretize(&ss.a, &ss.b, n, 1, 1.0 / (t + 1) as f64, opts.method)?;
                (&scaled.0, &scaled.1)
            }
        };
        for r in 0..rows {
            let base = (r * len + t) * n;
            let prev = if t == 0 {
                &zero[..]
            } else {
                &c[base - n..base]
            };
            step(ab, bb, prev, f[r * len + t].to_f64(), &mut next);
            c[base..base + n].copy_from_slice(&next);
        }
    }
    Ok(c)
}
