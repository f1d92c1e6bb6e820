//! The S4 DPLR convolution kernel on the CPU path (Gu et al. 2022, arXiv 2111.00396,
//! Algorithm 1) for `A = Λ − P Qᴴ`, bilinear discretisation: the truncated generating function
//! at the n-th roots of unity `w_k = e^{−2πik/n}` (n = 2^⌈log₂ L⌉) through Cauchy sums and the
//! rank-1 Woodbury correction, then one inverse FFT per head (rustfft); heads in parallel.
//!
//! With `k'_ab = Σ_m a_m b_m · 2 / ((2/Δ)(1−w) − (1+w) Λ_m)` (that is `2/(1+w)` times S4's
//! Cauchy sums, finite at w = −1), `K̂(w) = k'_00 − k'_01 k'_10 (1+w) / (2 + (1+w) k'_11)` with
//! a = (C̃, Q*) and b = (B, P). The Cauchy sums are f64: the Woodbury term subtracts nearly equal
//! quantities, and this O(H·n·N) part is small next to the convolutions that use K.

use num_complex::Complex64;
use rayon::prelude::*;
use rustfft::FftPlanner;

pub use crate::types::ssm::DplrSsm;
use crate::{Error, Result};

const OP: &str = "cpu::s4_dplr_kernel";

/// The S4 kernel `K: [H, L]` (f32, row-major) of a DPLR SSM with bilinear discretisation.
/// Errors: as [`crate::ssm::s4_dplr_kernel()`] ([`Error::Shape`] / [`Error::InvalidArgument`]
/// for inconsistent parameters or `len = 0`).
pub fn s4_dplr_kernel(m: &DplrSsm, len: usize) -> Result<Vec<f32>> {
    m.check(OP)?;
    if len == 0 {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "len",
            reason: "L must be >= 1".into(),
        });
    }
    let n = len.next_power_of_two();
    let ct = m.c_tilde(n);
    let ifft = FftPlanner::<f64>::new().plan_fft_inverse(n);
    let nn = m.n;
    let mut k = vec![0.0f32; m.h * len];
    k.par_chunks_mut(len).enumerate().for_each(|(hh, kr)| {
        let modes = hh * nn..(hh + 1) * nn;
        let (lam, p, q, b) = (
            &m.lambda[modes.clone()],
            &m.p[modes.clone()],
            &m.q[modes.clone()],
            &m.b[modes.clone()],
        );
        let ct = &ct[modes];
        let two_dt = 2.0 / m.dt[hh];
        let two = Complex64::new(2.0, 0.0);
        let mut spec: Vec<Complex64> = (0..n)
            .map(|kk| {
                // k/n turns reduced to [−1/2, 1/2) so the angle is exact before cos/sin.
                let t = if 2 * kk >= n {
                    kk as f64 / n as f64 - 1.0
                } else {
                    kk as f64 / n as f64
                };
                let w = Complex64::from_polar(1.0, -std::f64::consts::TAU * t);
                let (one_m, one_p) = (1.0 - w, 1.0 + w);
                let g = one_m * two_dt;
                let (mut k00, mut k01, mut k10, mut k11): (
                    Complex64,
                    Complex64,
                    Complex64,
                    Complex64,
                ) = Default::default();
                for i in 0..nn {
                    let r = two / (g - one_p * lam[i]);
                    let (ctr, qr) = (ct[i] * r, q[i].conj() * r);
                    k00 += ctr * b[i];
                    k01 += ctr * p[i];
                    k10 += qr * b[i];
                    k11 += qr * p[i];
                }
                k00 - k01 * k10 * one_p / (two + one_p * k11)
            })
            .collect();
        ifft.process(&mut spec);
        for (o, z) in kr.iter_mut().zip(&spec) {
            *o = (z.re / n as f64) as f32;
        }
    });
    Ok(k)
}
