//! TransNormer's attentions from their definitions (Qin et al. 2022), quadratic forms in f64:
//! NormAttention `o_i = Norm(Σ_j (φ(q_i)·φ(k_j)) v_j)` and DiagAttention, softmax (or relu +
//! norm) attention run on each block of w positions as if it were its own sequence.

use super::softmax::check_len;
use crate::types::attention::{
    check_diag, check_norm, Affine, AttnDims, DiagAttentionOptions, DiagWeights,
    NormAttentionOptions,
};
use crate::{Element, Result};

/// `q, k: [R, L, Dk]`, `v: [R, L, Dv]` -> `o: [R, L, Dv]` in f64.
pub fn norm_attention<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    affine: &Affine<'_>,
    opts: &NormAttentionOptions,
) -> Result<Vec<f64>> {
    check_norm(
        "reference::norm_attention",
        opts.norm,
        opts.eps,
        affine,
        d.dv,
    )?;
    let (l, dk, dv) = (d.len, d.dk, d.dv);
    check_len(q, d.rows, l, dk)?;
    check_len(k, d.rows, l, dk)?;
    check_len(v, d.rows, l, dv)?;
    let phi = |x: T| opts.feature_map.apply(x.to_f64());
    let fq: Vec<f64> = q.iter().map(|&x| phi(x)).collect();
    let fk: Vec<f64> = k.iter().map(|&x| phi(x)).collect();
    let mut out = vec![0.0f64; d.rows * l * dv];
    for r in 0..d.rows {
        for i in 0..l {
            let n = if opts.causal { i + 1 } else { l };
            let o = &mut out[(r * l + i) * dv..][..dv];
            for j in 0..n {
                let w: f64 = (0..dk)
                    .map(|a| fq[(r * l + i) * dk + a] * fk[(r * l + j) * dk + a])
                    .sum();
                for (e, oe) in o.iter_mut().enumerate() {
                    *oe += w * v[(r * l + j) * dv + e].to_f64();
                }
            }
            opts.norm
                .apply(o, opts.eps as f64, affine.gain, affine.bias);
        }
    }
    Ok(out)
}

/// `q, k: [R, L, Dk]`, `v: [R, L, Dv]` -> `o: [R, L, Dv]` in f64.
pub fn diag_attention<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    affine: &Affine<'_>,
    opts: &DiagAttentionOptions,
) -> Result<Vec<f64>> {
    let op = "reference::diag_attention";
    check_diag(op, opts)?;
    crate::types::attention::check_plain(op, opts.layout, opts.cu_seqlens.as_ref())?;
    let relu = opts.weights == DiagWeights::Relu;
    if relu {
        check_norm(op, opts.norm, opts.eps, affine, d.dv)?;
    }
    let (l, dk, dv) = (d.len, d.dk, d.dv);
    check_len(q, d.rows, l, dk)?;
    check_len(k, d.rows, l, dk)?;
    check_len(v, d.rows, l, dv)?;
    let scale = opts.scale_for(dk) as f64;
    let w = opts.block as usize;
    let mut out = vec![0.0f64; d.rows * l * dv];
    let mut s = vec![0.0f64; w.min(l)];
    for r in 0..d.rows {
        for b0 in (0..l).step_by(w) {
            let b1 = (b0 + w).min(l);
            for i in b0..b1 {
                let keys = b0..if opts.causal { i + 1 } else { b1 };
                let n = keys.len();
                for (sj, j) in s.iter_mut().zip(keys.clone()) {
                    let dot: f64 = (0..dk)
                        .map(|a| {
                            q[(r * l + i) * dk + a].to_f64() * k[(r * l + j) * dk + a].to_f64()
                        })
                        .sum();
                    *sj = scale * dot;
                }
                let mut total = 1.0;
                if relu {
                    for sj in &mut s[..n] {
                        // NaN stays NaN.
                        if *sj < 0.0 {
                            *sj = 0.0;
                        }
                    }
                } else {
                    let m = s[..n].iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
                    total = 0.0;
                    for sj in &mut s[..n] {
                        *sj = (*sj - m).exp();
                        total += *sj;
                    }
                }
                let o = &mut out[(r * l + i) * dv..][..dv];
                for (e, oe) in o.iter_mut().enumerate() {
                    let acc: f64 = keys
                        .clone()
                        .zip(&s[..n])
                        .map(|(j, p)| p * v[(r * l + j) * dv + e].to_f64())
                        .sum();
                    *oe = acc / total;
                }
                if relu {
                    opts.norm
                        .apply(o, opts.eps as f64, affine.gain, affine.bias);
                }
            }
        }
    }
    Ok(out)
}
