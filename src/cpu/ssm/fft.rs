//! FFT and causal FFT convolution on the CPU path: complex FFTs through `rustfft`, the
//! convolution through real FFTs (`realfft`) at `n = 2^⌈log₂ 2L⌉`, f32, rows in parallel.

use num_complex::Complex32;
use rayon::prelude::*;
use realfft::RealFftPlanner;
use rustfft::FftPlanner;

use crate::cpu::{check_len, load, store};
use crate::ssm::fft::conv_dims;
use crate::ssm::FftDirection;
use crate::{Element, Error, Result};

/// Batched FFT over the last axis of `re, im: shape = [.., n]` (n a power of two; `im = None`:
/// real rows), as the GPU's [`crate::ssm::fft`]: the inverse is scaled by 1/n. Returns
/// `(re, im)` of the same shape.
pub fn fft(
    re: &[f32],
    im: Option<&[f32]>,
    shape: &[usize],
    dir: FftDirection,
) -> Result<(Vec<f32>, Vec<f32>)> {
    const OP: &str = "cpu::fft";
    let n = shape.last().copied().unwrap_or(0);
    if shape.is_empty() || shape.contains(&0) || !n.is_power_of_two() {
        return Err(Error::Shape {
            op: OP,
            name: "re",
            expected: "[.., n] with n a power of two and every dim >= 1".into(),
            got: shape.to_vec(),
        });
    }
    check_len(re, shape)?;
    if let Some(im) = im {
        check_len(im, shape)?;
    }
    let plan = match dir {
        FftDirection::Forward => FftPlanner::<f32>::new().plan_fft_forward(n),
        FftDirection::Inverse => FftPlanner::<f32>::new().plan_fft_inverse(n),
    };
    let scale = if dir == FftDirection::Inverse {
        1.0 / n as f32
    } else {
        1.0
    };
    let (mut out_re, mut out_im) = (vec![0.0f32; re.len()], vec![0.0f32; re.len()]);
    out_re
        .par_chunks_mut(n)
        .zip(out_im.par_chunks_mut(n))
        .enumerate()
        .for_each(|(r, (or, oi))| {
            let mut buf: Vec<Complex32> = (0..n)
                .map(|t| Complex32::new(re[r * n + t], im.map_or(0.0, |x| x[r * n + t])))
                .collect();
            plan.process(&mut buf);
            for ((a, b), z) in or.iter_mut().zip(oi.iter_mut()).zip(&buf) {
                *a = z.re * scale;
                *b = z.im * scale;
            }
        });
    Ok((out_re, out_im))
}

/// Causal convolution `y[b, h, t] = Σ_{s≤t} K[h, s] u[b, h, t−s] + D[h] u[b, h, t]` for
/// `u: u_shape = [B, H, L]` (or `[H, L]`), `k: [H, L]`, `d: [H]`, any L, by real FFTs:
/// `y = irfft(rfft(u, n)·rfft(K, n))[:L] + D u`. Output shaped like u, in its dtype, f32
/// arithmetic; a row holding NaN or ±Inf takes the direct sum, so its non-finite outputs start
/// where the definition says. Errors: [`Error::Shape`] as the GPU op, [`Error::DataLength`].
pub fn causal_conv<T: Element>(
    u: &[T],
    u_shape: &[usize],
    k: &[T],
    k_shape: &[usize],
    d: &[T],
) -> Result<Vec<T>> {
    let mut out = vec![T::from_f64(0.0); u.len()];
    causal_conv_into(u, u_shape, k, k_shape, d, &mut out)?;
    Ok(out)
}

/// [`causal_conv`] writing into `out` (shaped like u).
pub fn causal_conv_into<T: Element>(
    u: &[T],
    u_shape: &[usize],
    k: &[T],
    k_shape: &[usize],
    d: &[T],
    out: &mut [T],
) -> Result<()> {
    let (_, h, l) = conv_dims(u_shape, k_shape, &[d.len()])?;
    check_len(u, u_shape)?;
    check_len(k, k_shape)?;
    check_len(out, u_shape)?;
    let (u, k, d) = (load(u), load(k), load(d));
    let n = (2 * l).next_power_of_two();
    let mut planner = RealFftPlanner::<f32>::new();
    let (fwd, inv) = (planner.plan_fft_forward(n), planner.plan_fft_inverse(n));
    let nf = n / 2 + 1;
    // rfft(K)/n per head (the 1/n of the inverse folded in).
    let mut kf = vec![Complex32::new(0.0, 0.0); h * nf];
    kf.par_chunks_mut(nf).enumerate().for_each(|(i, spec)| {
        let mut x = vec![0.0f32; n];
        x[..l].copy_from_slice(&k[i * l..][..l]);
        fwd.process(&mut x, spec).expect("rfft sizes");
        spec.iter_mut().for_each(|z| *z *= 1.0 / n as f32);
    });
    out.par_chunks_mut(l).enumerate().for_each(|(r, y)| {
        let ur = &u[r * l..][..l];
        let dh = d[r % h];
        if !ur.iter().all(|v| v.is_finite()) {
            // The FFT would spread a non-finite sample over the whole row; the definition puts it
            // only in the outputs from its time on, so such rows take the direct O(L²) sum.
            let kr = &k[(r % h) * l..][..l];
            let x: Vec<f32> = (0..l)
                .map(|t| {
                    let acc: f64 = (0..=t).map(|j| kr[t - j] as f64 * ur[j] as f64).sum();
                    (acc + dh as f64 * ur[t] as f64) as f32
                })
                .collect();
            store(&x, y);
            return;
        }
        let mut x = vec![0.0f32; n];
        x[..l].copy_from_slice(ur);
        let mut spec = fwd.make_output_vec();
        fwd.process(&mut x, &mut spec).expect("rfft sizes");
        spec.iter_mut()
            .zip(&kf[(r % h) * nf..][..nf])
            .for_each(|(a, b)| *a *= b);
        // irfft ignores the imaginary parts of the DC and Nyquist bins (0 for real data).
        spec[0].im = 0.0;
        spec[nf - 1].im = 0.0;
        inv.process(&mut spec, &mut x).expect("irfft sizes");
        for (t, xt) in x[..l].iter_mut().enumerate() {
            *xt += dh * ur[t];
        }
        store(&x[..l], y);
    });
    Ok(())
}
