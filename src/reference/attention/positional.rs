//! Softmax attention with position terms as a dense masked computation: the full `L × L` logit
//! matrix per (batch, head), masked, biased and scaled from the equations, in f64.

use crate::types::attention::{
    check_positional, slopes_for, AttnDims, PositionalOptions, SoftmaxAttentionOptions,
};
use crate::types::RopeLayout;
use crate::{Element, Error, Result};

/// `q, k: [R, L, Dk]`, `v: [R, L, Dv]` with R = B·H (row r is head `r % heads`) -> `o` in f64.
/// Logit `s_ij = scale · κ_i · q_i·k_j − m_h|i − j|` over the unmasked `j` (causal, window);
/// with ReRoPE, `q_i·k_j` is `rope(q_i, clamp(i − j, −w, w)) · k_j`.
pub fn softmax_attention_positional<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    heads: usize,
    opts: &SoftmaxAttentionOptions,
    pos: &PositionalOptions<'_>,
) -> Result<Vec<f64>> {
    let (l, dk, dv) = (d.len, d.dk, d.dv);
    check_positional(pos, dk)?;
    crate::types::attention::check_plain(
        "reference::softmax_attention_positional",
        opts.layout,
        opts.cu_seqlens.as_ref(),
    )?;
    for (x, n) in [(q.len(), dk), (k.len(), dk), (v.len(), dv)] {
        if x != d.rows * l * n {
            return Err(Error::DataLength {
                shape: vec![d.rows, l, n],
                expected: d.rows * l * n,
                got: x,
            });
        }
    }
    let slopes = match &pos.alibi {
        Some(a) => Some(slopes_for(a, heads)?),
        None => None,
    };
    let scale = opts.scale_for(dk) as f64;
    let mut out = vec![0.0; d.rows * l * dv];
    let mut s = vec![0.0f64; l * l];
    for r in 0..d.rows {
        let h = r % heads;
        let qr = |i: usize, a: usize| q[(r * l + i) * dk + a].to_f64();
        let kr = |j: usize, a: usize| k[(r * l + j) * dk + a].to_f64();
        // The mask: which (i, j) are seen.
        let seen = |i: usize, j: usize| {
            let causal = opts.causal || pos.window.is_some();
            (!causal || j <= i) && pos.window.is_none_or(|w| j + w > i)
        };
        for i in 0..l {
            let n_i = (0..l).filter(|&j| seen(i, j)).count() as f64;
            let kappa = pos
                .log_n_train
                .map_or(1.0, |lt| f64::max(1.0, n_i.ln() / (lt as f64).ln()));
            for j in 0..l {
                let dot = match pos.rerope {
                    None => (0..dk).map(|a| qr(i, a) * kr(j, a)).sum::<f64>(),
                    Some(rr) => {
                        // Rotate q_i by the clipped relative position; k stays at position 0.
                        let w = rr.window as i64;
                        let delta = (i as i64 - j as i64).clamp(-w, w) as f64;
                        (0..dk / 2)
                            .map(|p| {
                                let (ia, ib) = match rr.layout {
                                    RopeLayout::Interleaved => (2 * p, 2 * p + 1),
                                    RopeLayout::HalfSplit => (p, p + dk / 2),
                                };
                                let phi = delta * rr.base.powf(-2.0 * p as f64 / dk as f64);
                                let (c, sn) = (phi.cos(), phi.sin());
                                let ra = qr(i, ia) * c - qr(i, ib) * sn;
                                let rb = qr(i, ia) * sn + qr(i, ib) * c;
                                ra * kr(j, ia) + rb * kr(j, ib)
                            })
                            .sum()
                    }
                };
                let bias = slopes
                    .as_ref()
                    .map_or(0.0, |m| m[h] as f64 * (i as f64 - j as f64).abs());
                s[i * l + j] = if seen(i, j) {
                    scale * kappa * dot - bias
                } else {
                    f64::NEG_INFINITY
                };
            }
            let row = &mut s[i * l..(i + 1) * l];
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut z = 0.0;
            for x in row.iter_mut() {
                *x = (*x - m).exp();
                z += *x;
            }
            // Over the seen keys only: a masked key's value (NaN included) is not in the sum.
            for e in 0..dv {
                out[(r * l + i) * dv + e] = (0..l)
                    .filter(|&j| seen(i, j))
                    .map(|j| row[j] / z * v[(r * l + j) * dv + e].to_f64())
                    .sum();
            }
        }
    }
    Ok(out)
}
