//! The linear recurrence `h_t = a_t h_{t−1} + b_t` and the S4D recurrent mode on the CPU in f64,
//! step by step (the sequential definition the parallel scan must reproduce).

use num_complex::Complex64;

use super::kernel::{DiagonalSsm, Discretization};
use crate::{Error, Result};

/// `h_t = a_t h_{t−1} + b_t`, `h_{−1} = 0`, over rows of length `len` (`a, b: [R, L]`).
pub fn linear_scan(a: &[Complex64], b: &[Complex64], len: usize) -> Result<Vec<Complex64>> {
    if len == 0 || a.len() != b.len() || !a.len().is_multiple_of(len) {
        return Err(Error::Shape {
            op: "linear_scan",
            name: "b",
            expected: format!("{} elements, a multiple of L = {len}", a.len()),
            got: vec![b.len()],
        });
    }
    let mut h = vec![Complex64::new(0.0, 0.0); a.len()];
    for (r, row) in h.chunks_mut(len).enumerate() {
        let mut x = Complex64::new(0.0, 0.0);
        for (t, ht) in row.iter_mut().enumerate() {
            x = a[r * len + t] * x + b[r * len + t];
            *ht = x;
        }
    }
    Ok(h)
}

/// One step of the S4D recurrence for `state: [B, H, N2]` and `u: [B, H]`:
/// `x ← Ā x + B̄ u`, `y = 2 Re Σ_n C_n x_n + D u`. Returns `(new state, y)`.
pub fn s4d_scan_step(
    ssm: &DiagonalSsm,
    state: &[Complex64],
    u: &[f64],
    disc: Discretization,
) -> Result<(Vec<Complex64>, Vec<f64>)> {
    ssm.check("s4d_step")?;
    let (h, n2) = (ssm.h, ssm.n2);
    if u.is_empty() || !u.len().is_multiple_of(h) || state.len() != u.len() * n2 {
        return Err(Error::Shape {
            op: "s4d_step",
            name: "state",
            expected: format!("[B, {h}, {n2}] with u [B, {h}]"),
            got: vec![state.len(), u.len()],
        });
    }
    let (ab, bb) = ssm.discretize(disc)?;
    let mut x = state.to_vec();
    let mut y = vec![0.0; u.len()];
    for (i, yi) in y.iter_mut().enumerate() {
        let hh = i % h;
        let mut acc = 0.0;
        for n in 0..n2 {
            let m = hh * n2 + n;
            let xn = &mut x[i * n2 + n];
            *xn = ab[m] * *xn + bb[m] * u[i];
            acc += (ssm.c[m] * *xn).re;
        }
        *yi = 2.0 * acc + ssm.d[hh] * u[i];
    }
    Ok((x, y))
}

/// The S4D recurrent mode over `u: [B, H, L]` from a zero state, step by step: `y: [B, H, L]`.
pub fn s4d_recurrence(
    ssm: &DiagonalSsm,
    u: &[f64],
    len: usize,
    disc: Discretization,
) -> Result<Vec<f64>> {
    ssm.check("s4d_recurrence")?;
    let h = ssm.h;
    if len == 0 || u.is_empty() || !u.len().is_multiple_of(h * len) {
        return Err(Error::Shape {
            op: "s4d_recurrence",
            name: "u",
            expected: format!("[B, {h}, {len}]"),
            got: vec![u.len()],
        });
    }
    let bh = u.len() / len;
    let mut state = vec![Complex64::new(0.0, 0.0); bh * ssm.n2];
    let mut y = vec![0.0; u.len()];
    for t in 0..len {
        let ut: Vec<f64> = (0..bh).map(|r| u[r * len + t]).collect();
        let (x, yt) = s4d_scan_step(ssm, &state, &ut, disc)?;
        state = x;
        for r in 0..bh {
            y[r * len + t] = yt[r];
        }
    }
    Ok(y)
}
