//! Causal convolution `y = K ∗ u + D·u` on the CPU in f64: by FFT (rustfft, n >= 2L) and
//! directly (O(L²)), as independent checks on each other and on the GPU.

use num_complex::Complex64;
use rustfft::FftPlanner;

use crate::{Error, Result};

fn check(u: &[f64], k: &[f64], d: &[f64], h: usize, len: usize) -> Result<usize> {
    if h == 0 || len == 0 || k.len() != h * len || d.len() != h || !u.len().is_multiple_of(h * len)
    {
        return Err(Error::Shape {
            op: "causal_conv",
            name: "u",
            expected: format!("[B, {h}, {len}] with K [{h}, {len}] and D [{h}]"),
            got: vec![u.len(), k.len(), d.len()],
        });
    }
    Ok(u.len() / len)
}

/// `y[r, t] = Σ_{s≤t} K[h, s] u[r, t−s] + D[h] u[r, t]`, h = r mod H, for `u: [B·H, L]`,
/// `k: [H, L]`, `d: [H]`, straight from the definition.
pub fn causal_conv_direct(
    u: &[f64],
    k: &[f64],
    d: &[f64],
    h: usize,
    len: usize,
) -> Result<Vec<f64>> {
    let rows = check(u, k, d, h, len)?;
    let mut y = vec![0.0; u.len()];
    for r in 0..rows {
        let (kr, ur) = (&k[(r % h) * len..][..len], &u[r * len..][..len]);
        for t in 0..len {
            let mut acc = d[r % h] * ur[t];
            for s in 0..=t {
                acc += kr[s] * ur[t - s];
            }
            y[r * len + t] = acc;
        }
    }
    Ok(y)
}

/// The same by FFT in f64 (rustfft) at `n = 2^⌈log₂ 2L⌉`: `irfft(rfft(u)·rfft(K))[:L] + D u`.
/// A row of u with a NaN or ±Inf is evaluated by the definition instead, where they reach only
/// the outputs from their time on (an FFT would spread them over the whole row).
pub fn causal_conv(u: &[f64], k: &[f64], d: &[f64], h: usize, len: usize) -> Result<Vec<f64>> {
    let rows = check(u, k, d, h, len)?;
    let n = (2 * len).next_power_of_two();
    let mut planner = FftPlanner::<f64>::new();
    let (fwd, inv) = (planner.plan_fft_forward(n), planner.plan_fft_inverse(n));
    let spectrum = |x: &[f64]| {
        let mut v: Vec<Complex64> = x.iter().map(|&a| Complex64::new(a, 0.0)).collect();
        v.resize(n, Complex64::new(0.0, 0.0));
        fwd.process(&mut v);
        v
    };
    let kf: Vec<Vec<Complex64>> = (0..h).map(|i| spectrum(&k[i * len..][..len])).collect();
    let mut y = vec![0.0; u.len()];
    for r in 0..rows {
        let ur = &u[r * len..][..len];
        if ur.iter().any(|x| !x.is_finite()) {
            let (kr, dr) = (&k[(r % h) * len..][..len], &d[r % h..][..1]);
            let yr = causal_conv_direct(ur, kr, dr, 1, len)?;
            y[r * len..][..len].copy_from_slice(&yr);
            continue;
        }
        let mut v = spectrum(ur);
        for (a, b) in v.iter_mut().zip(&kf[r % h]) {
            *a *= b;
        }
        inv.process(&mut v);
        for t in 0..len {
            y[r * len + t] = v[t].re / n as f64 + d[r % h] * ur[t];
        }
    }
    Ok(y)
}
