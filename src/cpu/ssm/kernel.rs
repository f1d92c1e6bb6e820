//! S4D convolution kernel on the CPU path (Gu et al. 2022, arXiv 2206.11893, eq. 5):
//! `K[h, l] = 2 Re Σ_n C_n B̄_n Ā_n^l`.
//!
//! `Ā^l` is never a running product (its f32 rounding grows like l·ε). Positions go in blocks of
//! [`BLOCK`]: per mode, the block anchor `C B̄ Ā^{bB}` is formed in f64 from `exp(bB·log Ā)` with
//! the phase reduced modulo 2π, and the in-block powers `Ā^j`, `j < B`, are one f64 table rounded
//! to f32. The inner loop is then `K[bB + j] += 2 Re(anchor · Ā^j)` in f32 over 64 lanes.

use num_complex::Complex64;
use rayon::prelude::*;

use crate::cpu::{check_len, store};
use crate::reference::ssm::DiagonalSsm;
use crate::ssm::Discretization;
use crate::{Element, Result};

const BLOCK: usize = 64;

/// `K: [H, L]` of a host SSM, in `T`, arithmetic as above. Errors: those of
/// [`DiagonalSsm::check`] and [`DiagonalSsm::discretize`] (bad Δ, non-finite A or B, a bilinear
/// pole).
pub fn s4d_kernel<T: Element>(
    ssm: &DiagonalSsm,
    len: usize,
    disc: Discretization,
) -> Result<Vec<T>> {
    let mut out = vec![T::from_f64(0.0); ssm.h * len];
    s4d_kernel_into(ssm, len, disc, &mut out)?;
    Ok(out)
}

/// [`s4d_kernel`] writing into `out: [H, L]`.
pub fn s4d_kernel_into<T: Element>(
    ssm: &DiagonalSsm,
    len: usize,
    disc: Discretization,
    out: &mut [T],
) -> Result<()> {
    ssm.check("cpu::s4d_kernel")?;
    check_len(out, &[ssm.h, len])?;
    if len == 0 {
        return Ok(());
    }
    let (ab, bb) = ssm.discretize(disc)?;
    let n2 = ssm.n2;
    out.par_chunks_mut(len).enumerate().for_each(|(h, o)| {
        let modes = h * n2..(h + 1) * n2;
        let w: Vec<Complex64> = modes.clone().map(|i| ssm.c[i] * bb[i]).collect();
        let logs: Vec<Complex64> = ab[modes].iter().map(|a| a.ln()).collect();
        let mut k = vec![0.0f32; len];
        kernel_row(&w, &logs, &mut k);
        store(&k, o);
    });
    Ok(())
}

/// `e^{t·log a}` in f64, the phase reduced modulo 2π before cos/sin.
fn exp_scaled(log_a: Complex64, t: f64) -> Complex64 {
    let phase = (t * log_a.im).rem_euclid(std::f64::consts::TAU);
    Complex64::from_polar((t * log_a.re).exp(), phase)
}

/// One head: `k[l] = 2 Re Σ_n w_n e^{l·log Ā_n}`.
fn kernel_row(w: &[Complex64], logs: &[Complex64], k: &mut [f32]) {
    let n2 = w.len();
    // Ā_n^j for j < BLOCK, split into re and im rows of 64 lanes.
    let mut pre = vec![[0.0f32; BLOCK]; n2];
    let mut pim = vec![[0.0f32; BLOCK]; n2];
    for n in 0..n2 {
        for j in 0..BLOCK {
            let p = exp_scaled(logs[n], j as f64);
            pre[n][j] = p.re as f32;
            pim[n][j] = p.im as f32;
        }
    }
    for (b, kb) in k.chunks_mut(BLOCK).enumerate() {
        let mut acc = [0.0f32; BLOCK];
        for n in 0..n2 {
            let c = 2.0 * w[n] * exp_scaled(logs[n], (b * BLOCK) as f64);
            let (cr, ci) = (c.re as f32, c.im as f32);
            for j in 0..BLOCK {
                acc[j] += cr * pre[n][j] - ci * pim[n][j];
            }
        }
        kb.copy_from_slice(&acc[..kb.len()]);
    }
}
