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
