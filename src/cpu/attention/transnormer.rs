//! TransNormer's attentions on the CPU path (Qin et al. 2022): NormAttention
//! `o_i = Norm(Σ_j (φ(q_i)·φ(k_j)) v_j)` through the linear-attention row kernel (no denominator,
//! chunked when causal), and DiagAttention, softmax (or relu + norm) attention inside blocks of
//! w positions, one parallel task per (row, block), scores by sgemm.

use rayon::prelude::*;

use super::linear::linear_row;
use super::map_features;
use crate::attention::linear::AttnDims;
use crate::attention::transnormer::{
    Affine, DiagAttentionOptions, DiagWeights, Norm, NormAttentionOptions,
};
use crate::cpu::{check_len, exp_nonpos, load, sgemm, store, Mat, MatMut};
use crate::types::attention::{check_diag, check_norm, check_plain};
use crate::{Element, Result};

/// The norm of one row in place, f32 (the definitions of [`Norm::apply`]).
fn norm_row(norm: Norm, x: &mut [f32], eps: f32, affine: &Affine<'_>) {
    let n = x.len() as f32;
    let g = |d: usize| affine.gain.map_or(1.0, |g| g[d]);
    let b = |d: usize| affine.bias.map_or(0.0, |b| b[d]);
    match norm {
        Norm::SimpleRmsNorm | Norm::RmsNorm => {
            let rms = x.iter().map(|v| v * v).sum::<f32>().sqrt() / n.sqrt();
            for (d, v) in x.iter_mut().enumerate() {
                *v = g(d) * (*v / (rms + eps)) + b(d);
            }
        }
        Norm::LayerNorm => {
            let mean = x.iter().sum::<f32>() / n;
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
            let inv = 1.0 / (var + eps).sqrt();
            for (d, v) in x.iter_mut().enumerate() {
                *v = g(d) * (*v - mean) * inv + b(d);
            }
        }
    }
}

fn lens<T>(q: &[T], k: &[T], v: &[T], out: &[T], d: &AttnDims) -> Result<()> {
    let (r, l, dk, dv) = (d.rows, d.len, d.dk, d.dv);
    check_len(q, &[r, l, dk])?;
    check_len(k, &[r, l, dk])?;
    check_len(v, &[r, l, dv])?;
    check_len(out, &[r, l, dv])
}

/// NormAttention: `q, k: [R, L, Dk]`, `v: [R, L, Dv]` -> `o: [R, L, Dv]`, gain and bias `[Dv]`.
/// Errors: those of the GPU op's checks, [`crate::Error::DataLength`].
pub fn norm_attention<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    affine: &Affine<'_>,
    opts: &NormAttentionOptions,
    out: &mut [T],
) -> Result<()> {
    check_norm("cpu::norm_attention", opts.norm, opts.eps, affine, d.dv)?;
    lens(q, k, v, out, d)?;
    let (l, dk, dv) = (d.len, d.dk, d.dv);
    let (q, k, v) = (load(q), load(k), load(v));
    out.par_chunks_mut(l * dv).enumerate().for_each(|(row, o)| {
        let fq = map_features(opts.feature_map, &q[row * l * dk..][..l * dk]);
        let fk = map_features(opts.feature_map, &k[row * l * dk..][..l * dk]);
        let mut o32 = vec![0.0f32; l * dv];
        linear_row(
            &fq,
            &fk,
            &v[row * l * dv..][..l * dv],
            (l, dk, dv),
            opts.causal,
            None,
            &mut o32,
        );
        if opts.causal {
            // NaN/±Inf as the definition (λ = 1), not the chunk state's sum over features.
            let v = &v[row * l * dv..][..l * dv];
            super::lightning::definition_nonfinite(&fq, &fk, v, (l, dk, dv), &mut o32);
        }
        o32.chunks_mut(dv)
            .for_each(|x| norm_row(opts.norm, x, opts.eps, affine));
        store(&o32, o);
    });
    Ok(())
}

/// DiagAttention: `q, k: [R, L, Dk]`, `v: [R, L, Dv]` -> `o: [R, L, Dv]`; blocks of `opts.block`
/// positions, the last one ragged. Errors: those of the GPU op's checks,
/// [`crate::Error::DataLength`].
pub fn diag_attention<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    affine: &Affine<'_>,
    opts: &DiagAttentionOptions,
    out: &mut [T],
) -> Result<()> {
    let op = "cpu::diag_attention";
    check_diag(op, opts)?;
    check_plain(op, opts.layout, opts.cu_seqlens.as_ref())?;
    let relu = opts.weights == DiagWeights::Relu;
    if relu {
        check_norm(op, opts.norm, opts.eps, affine, d.dv)?;
    }
    lens(q, k, v, out, d)?;
    let (l, dk, dv) = (d.len, d.dk, d.dv);
    let w = (opts.block as usize).min(l);
    let scale = opts.scale_for(dk);
    let (q, k, v) = (load(q), load(k), load(v));
    out.par_chunks_mut(l * dv).enumerate().for_each(|(row, o)| {
        o.par_chunks_mut(w * dv).enumerate().for_each(|(b, ob)| {
            let (b0, n) = ((row * l) + b * w, ob.len() / dv);
            let mut s = vec![0.0f32; n * n];
            let qb = Mat::rm(&q[b0 * dk..], n, dk, dk);
            let kb = Mat::rm(&k[b0 * dk..], n, dk, dk).t();
            sgemm(qb, kb, 0.0, MatMut::rm(&mut s, n, n, n));
            let mut acc = vec![0.0f32; n * dv];
            for (i, (srow, orow)) in s.chunks_mut(n).zip(acc.chunks_mut(dv)).enumerate() {
                let keys = if opts.causal { i + 1 } else { n };
                let srow = &mut srow[..keys];
                srow.iter_mut().for_each(|x| *x *= scale);
                let mut total = 1.0f32;
                if relu {
                    // NaN stays NaN.
                    srow.iter_mut().for_each(|x| {
                        if *x < 0.0 {
                            *x = 0.0
                        }
                    });
                } else {
                    let m = srow.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
                    srow.iter_mut().for_each(|x| *x = exp_nonpos(*x - m));
                    total = srow.iter().sum();
                }
                for (j, &p) in srow.iter().enumerate() {
                    for (a, y) in orow.iter_mut().zip(&v[(b0 + j) * dv..][..dv]) {
                        *a += p * y;
                    }
                }
                orow.iter_mut().for_each(|a| *a /= total);
                if relu {
                    norm_row(opts.norm, orow, opts.eps, affine);
                }
            }
            store(&acc, ob);
        });
    });
    Ok(())
}
