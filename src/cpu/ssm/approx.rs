//! HiPPO online function approximation on the CPU path (Gu et al. 2020, arXiv 2008.07669, §2-3):
//! `c_k = Ā_k c_{k−1} + B̄_k f_k` over each signal, signals in parallel, f32 state.
//!
//! - Fixed step: `(Ā, B̄)` discretised once in f64 (as the GPU op), then one N×N mat-vec per
//!   sample.
//! - Scaled step (LegS): `Δ = 1/k` changes every step, so `Ā_k` is never formed. LegS's
//!   `A_nj = −u_n u_j (n > j), −(n+1) (n = j)`, `B_n = u_n`, `u_n = √(2n+1)` give
//!   `(A c)_n = −u_n P_n − (n+1) c_n` with `P_n = Σ_{j<n} u_j c_j`, and the implicit half of the
//!   generalised bilinear transform `(I − αΔA) x = r` is a forward substitution carrying
//!   `Q_n = Σ_{j<n} u_j x_j`: O(N) per step instead of an N×N solve.

use rayon::prelude::*;

use crate::cpu::{check_len, load};
use crate::types::ssm::{check_options, check_shape, fixed_step_matrices};
pub use crate::types::ssm::{HippoApproxOptions, Step};
use crate::{check_no_nan, Element, Result};

const OP: &str = "cpu::hippo_approx";

/// HiPPO coefficients of every prefix of each signal: `f: [B, L]` or `[L]` (shape `f_shape`) ->
/// `c: [B, L, N]` (or `[L, N]`) f32. Errors: as [`crate::ssm::hippo_approx()`] ([`crate::Error::NaN`]
/// at the first NaN of `f`, before any work), plus [`crate::Error::DataLength`].
pub fn hippo_approx<T: Element>(
    f: &[T],
    f_shape: &[usize],
    opts: &HippoApproxOptions,
) -> Result<Vec<f32>> {
    check_options(OP, opts)?;
    let (rows, len, _) = check_shape(OP, f_shape, opts.n)?;
    check_len(f, &[rows, len])?;
    check_no_nan(OP, "f", f)?;
    let n = opts.n;
    let f = load(f);
    let mut c = vec![0.0f32; rows * len * n];
    match opts.step {
        Step::Fixed(dt) => {
            let (ab, bb) = fixed_step_matrices(opts, dt)?;
            let ab: Vec<f32> = ab.iter().map(|&x| x as f32).collect();
            let bb: Vec<f32> = bb.iter().map(|&x| x as f32).collect();
            c.par_chunks_mut(len * n)
                .zip(f.par_chunks(len))
                .for_each(|(cr, fr)| fixed_row(&ab, &bb, fr, cr, n));
        }
        Step::Scaled => {
            let alpha = opts.method.gbt_alpha().unwrap_or(0.5) as f32;
            let u: Vec<f32> = (0..n).map(|i| ((2 * i + 1) as f32).sqrt()).collect();
            c.par_chunks_mut(len * n)
                .zip(f.par_chunks(len))
                .for_each(|(cr, fr)| legs_row(&u, alpha, fr, cr));
        }
    }
    Ok(c)
}

/// One signal with a fixed `(Ā [N, N] row-major, B̄ [N])`.
fn fixed_row(ab: &[f32], bb: &[f32], f: &[f32], c: &mut [f32], n: usize) {
    let mut prev = vec![0.0f32; n];
    for (t, &x) in f.iter().enumerate() {
        let out = &mut c[t * n..][..n];
        for (i, o) in out.iter_mut().enumerate() {
            let row = &ab[i * n..][..n];
            *o = bb[i] * x + row.iter().zip(&prev).map(|(a, p)| a * p).sum::<f32>();
        }
        prev.copy_from_slice(out);
    }
}

/// One signal through LegS with the scaled step, generalised bilinear transform of weight α.
fn legs_row(u: &[f32], alpha: f32, f: &[f32], c: &mut [f32]) {
    let n = u.len();
    let mut prev = vec![0.0f32; n];
    for (t, &x) in f.iter().enumerate() {
        let dt = 1.0 / (t + 1) as f32;
        let (a, e) = (alpha * dt, (1.0 - alpha) * dt);
        let out = &mut c[t * n..][..n];
        let (mut sp, mut sq) = (0.0f32, 0.0f32);
        for i in 0..n {
            let (ui, d, ci) = (u[i], (i + 1) as f32, prev[i]);
            let r = ci + e * (-ui * sp - d * ci) + dt * ui * x;
            let xi = (r - a * ui * sq) / (1.0 + a * d);
            out[i] = xi;
            sp += ui * ci;
            sq += ui * xi;
        }
        prev.copy_from_slice(out);
    }
}
