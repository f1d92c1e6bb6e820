//! Performer attention with FAVOR features on the CPU path (Choromanski et al. 2021, Lemma 1,
//! §2.3-2.4), the definitions and stabilisers of [`crate::reference::attention::favor_attention`]:
//! `x' = x·d^(−1/4)`, the projections `ω x'` of a whole head by one sgemm, positive
//! `M^(−1/2) exp(ωx' − ‖x'‖²/2 − c)` or trig `M^(−1/2) exp(‖x'‖²/2 − c) [sin ωx', cos ωx']` (c: the
//! row's maximum for queries, the head's for keys), then the linear-attention row kernel with
//! ε = 0 and the zero-denominator guard.

use rayon::prelude::*;

use super::linear::linear_row;
use crate::attention::favor::check_omega;
use crate::attention::linear::AttnDims;
use crate::attention::{FavorKind, FavorOptions};
use crate::cpu::{check_len, exp_nonpos, load, sgemm, store, Mat, MatMut};
use crate::{Element, Error, Result};

/// `q, k: [R, L, Dk]`, `v: [R, L, Dv]`, `omega: [M, Dk]` -> `o: [R, L, Dv]` in the inputs'
/// dtype, f32 arithmetic. Errors: [`Error::Shape`] for ω, [`Error::DataLength`].
pub fn favor_attention<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    omega: &[f32],
    opts: &FavorOptions,
) -> Result<Vec<T>> {
    let mut out = vec![T::from_f64(0.0); d.rows * d.len * d.dv];
    favor_attention_into(q, k, v, d, omega, opts, &mut out)?;
    Ok(out)
}

/// [`favor_attention`] writing into `out: [R, L, Dv]`.
pub fn favor_attention_into<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    omega: &[f32],
    opts: &FavorOptions,
    out: &mut [T],
) -> Result<()> {
    let op = "cpu::favor_attention";
    let (r, l, dk, dv) = (d.rows, d.len, d.dk, d.dv);
    let m = omega.len() / dk.max(1);
    check_omega(op, &[m, dk], dk)?;
    if omega.len() != m * dk || m == 0 {
        return Err(Error::DataLength {
            shape: vec![m, dk],
            expected: m.max(1) * dk,
            got: omega.len(),
        });
    }
    check_len(q, &[r, l, dk])?;
    check_len(k, &[r, l, dk])?;
    check_len(v, &[r, l, dv])?;
    check_len(out, &[r, l, dv])?;
    let f = opts.kind.num_features(m);
    let (q, k, v) = (load(q), load(k), load(v));
    out.par_chunks_mut(l * dv).enumerate().for_each(|(row, o)| {
        if opts.causal && opts.kind == FavorKind::Positive {
            let lq = positive_logits(&q[row * l * dk..][..l * dk], dk, omega);
            let lk = positive_logits(&k[row * l * dk..][..l * dk], dk, omega);
            let mut o32 = vec![0.0f32; l * dv];
            causal_positive((&lq, &lk, &v[row * l * dv..][..l * dv]), m, dv, &mut o32);
            store(&o32, o);
            return;
        }
        if opts.causal {
            let (xq, xk) = (&q[row * l * dk..][..l * dk], &k[row * l * dk..][..l * dk]);
            let mut o32 = vec![0.0f32; l * dv];
            causal_trig(
                (xq, xk, &v[row * l * dv..][..l * dv]),
                (dk, dv),
                omega,
                &mut o32,
            );
            store(&o32, o);
            return;
        }
        let (fq, _) = features(&q[row * l * dk..][..l * dk], dk, omega, opts.kind, false);
        let (fk, _) = features(&k[row * l * dk..][..l * dk], dk, omega, opts.kind, true);
        let mut o32 = vec![0.0f32; l * dv];
        linear_row(
            &fq,
            &fk,
            &v[row * l * dv..][..l * dv],
            (l, f, dv),
            opts.causal,
            Some(0.0),
            &mut o32,
        );
        store(&o32, o);
    });
    Ok(())
}

/// Features `[L, F]` of one head's `x: [L, Dk]`, stabilised per position or per head, and the
/// head's stabiliser c (the largest log-feature; the features are `e^−c` times the true ones).
pub(crate) fn features(
    x: &[f32],
    dk: usize,
    omega: &[f32],
    kind: FavorKind,
    per_head: bool,
) -> (Vec<f32>, f32) {
    let (l, m) = (x.len() / dk, omega.len() / dk);
    let s = (dk as f32).powf(-0.25);
    let xs: Vec<f32> = x.iter().map(|a| a * s).collect();
    let half_sq: Vec<f32> = xs
        .chunks(dk)
        .map(|r| 0.5 * r.iter().map(|a| a * a).sum::<f32>())
        .collect();
    let mut dots = vec![0.0f32; l * m];
    sgemm(
        Mat::rm(&xs, l, dk, dk),
        Mat::rm(omega, m, dk, dk).t(),
        0.0,
        MatMut::rm(&mut dots, l, m, m),
    );
    let norm = (m as f32).powf(-0.5);
    match kind {
        FavorKind::Positive => {
            for (u, hs) in dots.chunks_mut(m).zip(&half_sq) {
                u.iter_mut().for_each(|y| *y -= hs);
            }
            let row_max = |u: &[f32]| u.iter().fold(f32::NEG_INFINITY, |a, &y| a.max(y));
            let head = dots
                .chunks(m)
                .map(row_max)
                .fold(f32::NEG_INFINITY, f32::max);
            for u in dots.chunks_mut(m) {
                let c = if per_head { head } else { row_max(u) };
                u.iter_mut().for_each(|y| *y = norm * exp_nonpos(*y - c));
            }
            (dots, head)
        }
        FavorKind::Trig => {
            let head = half_sq.iter().fold(f32::NEG_INFINITY, |a, &y| a.max(y));
            let mut out = vec![0.0f32; l * 2 * m];
            for ((o, u), hs) in out.chunks_mut(2 * m).zip(dots.chunks(m)).zip(&half_sq) {
                let c = if per_head { head } else { *hs };
                let g = norm * exp_nonpos(hs - c);
                for (a, y) in u.iter().enumerate() {
                    o[a] = g * y.sin();
                    o[m + a] = g * y.cos();
                }
            }
            (out, head)
        }
    }
}

/// The positive features' logits `ωx' − ‖x'‖²/2` of one head's `x: [L, Dk]`, as `[L, M]`.
fn positive_logits(x: &[f32], dk: usize, omega: &[f32]) -> Vec<f32> {
    let (l, m) = (x.len() / dk, omega.len() / dk);
    let s = (dk as f32).powf(-0.25);
    let xs: Vec<f32> = x.iter().map(|a| a * s).collect();
    let mut dots = vec![0.0f32; l * m];
    sgemm(
        Mat::rm(&xs, l, dk, dk),
        Mat::rm(omega, m, dk, dk).t(),
        0.0,
        MatMut::rm(&mut dots, l, m, m),
    );
    for (u, r) in dots.chunks_mut(m).zip(xs.chunks(dk)) {
        let hs = 0.5 * r.iter().map(|a| a * a).sum::<f32>();
        u.iter_mut().for_each(|y| *y -= hs);
    }
    dots
}

/// Causal positive FAVOR+ of one head from its logits, each row stabilised by the keys it sees
/// (the reference's online per-feature maximum): the state holds `Σ_j e^(a_r(k_j) − m_r) [v_j, 1]`
/// with `m_r` the running maximum of feature r's key logits, rescaled when it grows, and row i
/// weighs feature r by `e^(a_r(q_i) + m_r − C_i)`. A head-wide key stabiliser would let a later
/// large key underflow every earlier row to zero.
fn causal_positive((lq, lk, v): (&[f32], &[f32], &[f32]), m: usize, dv: usize, o: &mut [f32]) {
    let mut mx = vec![f32::NEG_INFINITY; m];
    let mut s = vec![0.0f32; m * (dv + 1)];
    let mut acc = vec![0.0f32; dv + 1];
    for (i, oi) in o.chunks_mut(dv).enumerate() {
        let (uk, uq, vi) = (&lk[i * m..][..m], &lq[i * m..][..m], &v[i * dv..][..dv]);
        for r in 0..m {
            // NaN never becomes the stabiliser (as the reference and the GPU's fmax).
            let new = if uk[r] > mx[r] { uk[r] } else { mx[r] };
            let scale = if mx[r] == new {
                1.0
            } else {
                (mx[r] - new).exp()
            };
            let w = (uk[r] - new).exp();
            let sr = &mut s[r * (dv + 1)..][..dv + 1];
            for (x, &ve) in sr.iter_mut().zip(vi.iter().chain([1.0f32].iter())) {
                *x = scale * *x + w * ve;
            }
            mx[r] = new;
        }
        let c = (0..m)
            .map(|r| uq[r] + mx[r])
            .fold(f32::NEG_INFINITY, |a, b| if b > a { b } else { a });
        acc.fill(0.0);
        for r in 0..m {
            let p = (uq[r] + mx[r] - c).exp();
            for (a, x) in acc.iter_mut().zip(&s[r * (dv + 1)..][..dv + 1]) {
                *a += p * x;
            }
        }
        let den = acc[dv];
        for (y, &a) in oi.iter_mut().zip(&acc[..dv]) {
            *y = if den == 0.0 { 0.0 } else { a / den };
        }
    }
}

/// Causal trigonometric FAVOR of one head, each row stabilised by the keys it sees: a key's
/// features carry one scalar `e^(‖k'‖²/2)`, so the state holds `Σ_j e^(h_j − m) u(k_j) [v_j, 1]`
/// (`u = [sin ωx', cos ωx']`, `h_j = ‖k_j'‖²/2`, m their running maximum, rescaled when it grows)
/// and row i takes `u(q_i)·S / u(q_i)·z` (the query's own scale cancels). A head-wide stabiliser
/// would let a later, much larger key underflow every earlier row to zero.
fn causal_trig(
    (q, k, v): (&[f32], &[f32], &[f32]),
    (dk, dv): (usize, usize),
    omega: &[f32],
    o: &mut [f32],
) {
    let m = omega.len() / dk;
    let (uq, _) = features(q, dk, omega, FavorKind::Trig, false);
    let s4 = (dk as f32).powf(-0.25);
    let h: Vec<f32> = k
        .chunks(dk)
        .map(|r| 0.5 * r.iter().map(|a| (a * s4) * (a * s4)).sum::<f32>())
        .collect();
    // Per-row stabilised trig features are M^(−1/2)·u: the scale cancels in the ratio.
    let (uk, _) = features(k, dk, omega, FavorKind::Trig, false);
    let f = 2 * m;
    let mut mx = f32::NEG_INFINITY;
    let mut s = vec![0.0f32; f * (dv + 1)];
    let mut acc = vec![0.0f32; dv + 1];
    for (i, oi) in o.chunks_mut(dv).enumerate() {
        let vi = &v[i * dv..][..dv];
        // NaN never becomes the stabiliser (as the GPU's running maximum).
        let new = if h[i] > mx { h[i] } else { mx };
        if new != mx {
            let scale = (mx - new).exp();
            s.iter_mut().for_each(|x| *x *= scale);
            mx = new;
        }
        let w = (h[i] - mx).exp();
        for (a, &ua) in uk[i * f..][..f].iter().enumerate() {
            let sa = &mut s[a * (dv + 1)..][..dv + 1];
            for (x, &ve) in sa.iter_mut().zip(vi.iter().chain([1.0f32].iter())) {
                *x += w * ua * ve;
            }
        }
        acc.fill(0.0);
        for (a, &ua) in uq[i * f..][..f].iter().enumerate() {
            for (y, x) in acc.iter_mut().zip(&s[a * (dv + 1)..][..dv + 1]) {
                *y += ua * x;
            }
        }
        let den = acc[dv];
        for (y, &a) in oi.iter_mut().zip(&acc[..dv]) {
            *y = if den == 0.0 { 0.0 } else { a / den };
        }
    }
}
