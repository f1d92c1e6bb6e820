//! Exact softmax attention (and DiagAttention's softmax blocks) over real-world batches, from the
//! definitions, one query at a time in f64: q `[B, Hq, Lq, Dk]`, k `[B, Hkv, Lk, Dk]`,
//! v `[B, Hkv, Lk, Dv]` in either [`Layout`] (indexed through [`crate::types::batch::Strides`]);
//! query head `h` reads key/value head `h / (Hq / Hkv)` (GQA, Ainslie et al. 2023); with packed
//! sequences (`cu_seqlens`, B = 1) query `i` of sequence `[s0, s1)` sees keys of `[s0, s1)` only and
//! its positions count from `s0`. Outputs of tokens past the last offset are NaN here (the ops leave
//! them untouched, so a NaN-poisoned output must still read NaN).

use crate::types::attention::{
    check_positional, check_scale, slopes_for, DiagAttentionOptions, DiagWeights,
    PositionalOptions, SoftmaxAttentionOptions,
};
use crate::types::batch::{CuSeqlens, GqaDims};
use crate::types::RopeLayout;
use crate::{Element, Error, Result};

/// What query `i` may see besides its sequence.
struct Mask {
    causal: bool,
    window: Option<usize>,
    /// DiagAttention's blocks of w positions (counted from the sequence start).
    block: Option<usize>,
}

/// Softmax attention with the position options, `o` in `g.layout`: logit
/// `s_ij = scale · κ_i · q_i·k_j − m_h |i − j|` over the keys `j` query `i` sees (causal `j ≤ i`,
/// window `j > i − w`, its own sequence), ReRoPE rotating `q_i` by `clamp(i − j, −w, w)`.
pub fn softmax_attention_batch<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    g: &GqaDims,
    opts: &SoftmaxAttentionOptions,
    pos: &PositionalOptions<'_>,
) -> Result<Vec<f64>> {
    check_scale("reference::softmax_attention_batch", opts.scale)?;
    check_positional(pos, g.dk)?;
    let mask = Mask {
        causal: opts.causal || pos.window.is_some(),
        window: pos.window,
        block: None,
    };
    let scale = opts.scale_for(g.dk) as f64;
    attend(q, k, v, g, opts.cu_seqlens.as_ref(), &mask, scale, pos)
}

/// DiagAttention with softmax weights (TransNormer, arXiv 2210.10340): blocks of `opts.block`
/// positions restarting at each packed sequence.
pub fn diag_attention_batch<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    g: &GqaDims,
    opts: &DiagAttentionOptions,
) -> Result<Vec<f64>> {
    if opts.weights != DiagWeights::Softmax || opts.block == 0 {
        return Err(Error::InvalidArgument {
            op: "reference::diag_attention_batch",
            name: "weights",
            reason: "softmax weights and a block >= 1 only".into(),
        });
    }
    let mask = Mask {
        causal: opts.causal,
        window: None,
        block: Some(opts.block as usize),
    };
    let scale = opts.scale_for(g.dk) as f64;
    let none = PositionalOptions::default();
    attend(q, k, v, g, opts.cu_seqlens.as_ref(), &mask, scale, &none)
}

#[allow(clippy::too_many_arguments)]
fn attend<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    g: &GqaDims,
    cu: Option<&CuSeqlens>,
    mask: &Mask,
    scale: f64,
    pos: &PositionalOptions<'_>,
) -> Result<Vec<f64>> {
    let (sq, sk, sv) = (
        g.layout.strides(g.q_heads, g.q_len, g.dk),
        g.layout.strides(g.kv_heads, g.kv_len, g.dk),
        g.layout.strides(g.kv_heads, g.kv_len, g.dv),
    );
    let so = g.layout.strides(g.q_heads, g.q_len, g.dv);
    let n = |h: usize, l: usize, d: usize| g.batch * h * l * d;
    for (x, want) in [
        (q.len(), n(g.q_heads, g.q_len, g.dk)),
        (k.len(), n(g.kv_heads, g.kv_len, g.dk)),
        (v.len(), n(g.kv_heads, g.kv_len, g.dv)),
    ] {
        if x != want {
            return Err(Error::DataLength {
                shape: g.out_shape.clone(),
                expected: want,
                got: x,
            });
        }
    }
    let slopes = match &pos.alibi {
        Some(a) => Some(slopes_for(a, g.q_heads)?),
        None => None,
    };
    // Sequence [s0, s1) of each query token; None past the last offset.
    let seq_of = |i: usize| -> Option<(usize, usize)> {
        match cu {
            None => Some((0, g.kv_len)),
            Some(c) => (0..c.count())
                .map(|s| c.range(s))
                .find(|r| r.contains(&i))
                .map(|r| (r.start, r.end)),
        }
    };
    let mut out = vec![f64::NAN; n(g.q_heads, g.q_len, g.dv)];
    for b in 0..g.batch {
        for h in 0..g.q_heads {
            let hk = g.kv_head(h);
            for i in 0..g.q_len {
                let Some((s0, s1)) = seq_of(i) else { continue };
                let seen: Vec<usize> = (s0..s1)
                    .filter(|&j| !mask.causal || j <= i)
                    .filter(|&j| mask.window.is_none_or(|w| j + w > i))
                    .filter(|&j| mask.block.is_none_or(|w| (i - s0) / w == (j - s0) / w))
                    .collect();
                let kappa = pos.log_n_train.map_or(1.0, |lt| {
                    f64::max(1.0, (seen.len() as f64).ln() / (lt as f64).ln())
                });
                let qi = |a: usize| q[sq.index(b, h, i, a)].to_f64();
                let kj = |j: usize, a: usize| k[sk.index(b, hk, j, a)].to_f64();
                let logits: Vec<f64> = seen
                    .iter()
                    .map(|&j| {
                        let dot = match pos.rerope {
                            None => (0..g.dk).map(|a| qi(a) * kj(j, a)).sum::<f64>(),
                            Some(rr) => {
                                let w = rr.window as i64;
                                let delta = (i as i64 - j as i64).clamp(-w, w) as f64;
                                (0..g.dk / 2)
                                    .map(|p| {
                                        let (ia, ib) = match rr.layout {
                                            RopeLayout::Interleaved => (2 * p, 2 * p + 1),
                                            RopeLayout::HalfSplit => (p, p + g.dk / 2),
                                        };
                                        let th = rr.base.powf(-2.0 * p as f64 / g.dk as f64);
                                        let (c, sn) = ((delta * th).cos(), (delta * th).sin());
                                        let ra = qi(ia) * c - qi(ib) * sn;
                                        let rb = qi(ia) * sn + qi(ib) * c;
                                        ra * kj(j, ia) + rb * kj(j, ib)
                                    })
                                    .sum()
                            }
                        };
                        let bias = slopes
                            .as_ref()
                            .map_or(0.0, |m| m[h] as f64 * (i as f64 - j as f64).abs());
                        scale * kappa * dot - bias
                    })
                    .collect();
                let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = logits.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = w.iter().sum();
                for e in 0..g.dv {
                    out[so.index(b, h, i, e)] = seen
                        .iter()
                        .zip(&w)
                        .map(|(&j, wj)| wj / z * v[sv.index(b, hk, j, e)].to_f64())
                        .sum();
                }
            }
        }
    }
    Ok(out)
}
