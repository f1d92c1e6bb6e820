//! Linear attention over real-world batches, from the definition (Katharopoulos et al. 2020,
//! eqs. 6 and 16-20), one sequence at a time: grouped heads (query head `h` reads key/value head
//! `h / (Hq / Hkv)`), either [`Layout`], packed sequences ([`CuSeqlens`]) and a state carried in
//! and out:
//!
//! `S_i = S_{i−1} + φ(k_i) v_iᵀ`, `z_i = z_{i−1} + φ(k_i)` from `(S_0, z_0)` = the initial state,
//! `o_i = φ(q_i)ᵀ S_i / (φ(q_i)ᵀ z_i + ε)`; non-causal uses the full sums over the keys. The final
//! state is `(S, z)` after the last token. Denominator guard as
//! [`super::linear::linear_attention`]: an exact 0 denominator gives 0.

use crate::types::attention::LinearAttentionOptions;
use crate::types::{CuSeqlens, GqaDims};
use crate::{Element, Error, Result};

/// Output and final state of [`linear_attention_batch`].
#[derive(Clone, Debug, PartialEq)]
pub struct LinearBatchOut {
    /// `o`: q's shape with Dv, in the layout of the dims; tokens past the last offset of
    /// `cu_seqlens` are NaN (the op leaves them untouched).
    pub o: Vec<f64>,
    /// Final S `[N, Hq, Dk, Dv]` (N sequences: B, or the count of `cu_seqlens`).
    pub s: Vec<f64>,
    /// Final z `[N, Hq, Dk]`.
    pub z: Vec<f64>,
}

/// Linear attention of q, k, v (laid out as `d` says) with optional packed sequences (B = 1; each
/// sequence restarts from its own state) and an optional initial state `(S [N, Hq, Dk, Dv],
/// z [N, Hq, Dk])`. Non-causal with `cu_seqlens` needs Lq = Lk (the same packing).
///
/// # Errors
/// [`Error::DataLength`] for slices that do not match `d`, [`Error::InvalidArgument`] for a bad ε,
/// packed sequences with B ≠ 1 or Lq ≠ Lk, or a state of the wrong length.
pub fn linear_attention_batch<T: Element>(
    (q, k, v): (&[T], &[T], &[T]),
    d: &GqaDims,
    opts: &LinearAttentionOptions,
    cu: Option<&CuSeqlens>,
    initial: Option<(&[f64], &[f64])>,
) -> Result<LinearBatchOut> {
    const OP: &str = "reference::linear_attention_batch";
    crate::types::attention::check_options(OP, opts)?;
    let (b, hq, hkv, lq, lk, dk, dv) = (
        d.batch, d.q_heads, d.kv_heads, d.q_len, d.kv_len, d.dk, d.dv,
    );
    for (x, h, l, n) in [(q, hq, lq, dk), (k, hkv, lk, dk), (v, hkv, lk, dv)] {
        if x.len() != b * h * l * n {
            return Err(Error::DataLength {
                shape: d.layout.shape(b, h, l, n).to_vec(),
                expected: b * h * l * n,
                got: x.len(),
            });
        }
    }
    let bad = |name, reason: &str| Error::InvalidArgument {
        op: OP,
        name,
        reason: reason.into(),
    };
    // Sequences as (batch entry, token range).
    let seqs: Vec<(usize, std::ops::Range<usize>)> = match cu {
        None => (0..b).map(|i| (i, 0..lq)).collect(),
        Some(c) if b == 1 && lq == lk => (0..c.count()).map(|i| (0, c.range(i))).collect(),
        Some(_) => return Err(bad("cu_seqlens", "needs B = 1 and Lq = Lk")),
    };
    let n = seqs.len();
    if let Some((s0, z0)) = initial {
        if s0.len() != n * hq * dk * dv || z0.len() != n * hq * dk {
            return Err(bad(
                "initial_state",
                "needs S [N, Hq, Dk, Dv] and z [N, Hq, Dk]",
            ));
        }
    }
    let (sq, sk, sv) = (
        d.layout.strides(hq, lq, dk),
        d.layout.strides(hkv, lk, dk),
        d.layout.strides(hkv, lk, dv),
    );
    let so = d.layout.strides(hq, lq, dv);
    let phi = |x: T| opts.feature_map.apply(x.to_f64());
    let eps = opts.eps as f64;
    let mut out = LinearBatchOut {
        o: vec![f64::NAN; b * hq * lq * dv],
        s: vec![0.0; n * hq * dk * dv],
        z: vec![0.0; n * hq * dk],
    };
    let mut fq = vec![0.0f64; dk];
    for (si, (bi, range)) in seqs.into_iter().enumerate() {
        for h in 0..hq {
            let hk = d.kv_head(h);
            let st = si * hq + h;
            let s = &mut out.s[st * dk * dv..][..dk * dv];
            let z = &mut out.z[st * dk..][..dk];
            if let Some((s0, z0)) = initial {
                s.copy_from_slice(&s0[st * dk * dv..][..dk * dv]);
                z.copy_from_slice(&z0[st * dk..][..dk]);
            }
            let accumulate = |j: usize, s: &mut [f64], z: &mut [f64]| {
                for a in 0..dk {
                    let fk = phi(k[sk.index(bi, hk, j, a)]);
                    z[a] += fk;
                    for e in 0..dv {
                        s[a * dv + e] += fk * v[sv.index(bi, hk, j, e)].to_f64();
                    }
                }
            };
            // Non-causal without packing: every key (Lk of them); packed: the sequence's keys.
            let keys = if cu.is_none() { 0..lk } else { range.clone() };
            if !opts.causal {
                for j in keys {
                    accumulate(j, s, z);
                }
            }
            for i in range.clone() {
                if opts.causal {
                    accumulate(i, s, z);
                }
                for (a, f) in fq.iter_mut().enumerate() {
                    *f = phi(q[sq.index(bi, h, i, a)]);
                }
                let den: f64 = fq.iter().zip(z.iter()).map(|(x, y)| x * y).sum::<f64>() + eps;
                for e in 0..dv {
                    let num: f64 = (0..dk).map(|a| fq[a] * s[a * dv + e]).sum();
                    out.o[so.index(bi, h, i, e)] = if !opts.denominator {
                        num
                    } else if den == 0.0 {
                        0.0
                    } else {
                        num / den
                    };
                }
            }
        }
    }
    Ok(out)
}

/// Lightning attention (TransNormerLLM, arXiv 2307.14995) per sequence, from its recurrence:
/// `S_t = λ_h S_{t−1} + φ(k_t) v_tᵀ` from `S_{−1}` = the initial state (`[B, H, Dk, Dv]`, none:
/// zero), `o_t = φ(q_t)ᵀ S_t`, `λ_h = exp(−slopes[h])`; q, k, v as `d` lays them out (Hkv = Hq).
/// Returns `o` (q's shape with Dv, in the layout) and the final S `[B, H, Dk, Dv]`.
///
/// # Errors
/// [`Error::DataLength`] for slices or a state that do not match `d`, [`Error::InvalidArgument`]
/// for grouped heads or slopes not of length H.
pub fn lightning_attention_batch<T: Element>(
    (q, k, v): (&[T], &[T], &[T]),
    d: &GqaDims,
    slopes: &[f32],
    feature_map: crate::types::FeatureMap,
    initial: Option<&[f64]>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    const OP: &str = "reference::lightning_attention_batch";
    let (b, h, l, dk, dv) = (d.batch, d.q_heads, d.q_len, d.dk, d.dv);
    if d.kv_heads != h || d.kv_len != l || slopes.len() != h {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "d",
            reason: "needs Hkv = Hq, Lk = Lq and H slopes".into(),
        });
    }
    for (x, n) in [
        (q, b * h * l * dk),
        (k, b * h * l * dk),
        (v, b * h * l * dv),
    ] {
        if x.len() != n {
            return Err(Error::DataLength {
                shape: vec![n],
                expected: n,
                got: x.len(),
            });
        }
    }
    let mut s = match initial {
        Some(s0) if s0.len() == b * h * dk * dv => s0.to_vec(),
        Some(s0) => {
            return Err(Error::DataLength {
                shape: vec![b, h, dk, dv],
                expected: b * h * dk * dv,
                got: s0.len(),
            })
        }
        None => vec![0.0; b * h * dk * dv],
    };
    let (sk, sv) = (d.layout.strides(h, l, dk), d.layout.strides(h, l, dv));
    let phi = |x: T| feature_map.apply(x.to_f64());
    let mut o = vec![0.0; b * h * l * dv];
    for bi in 0..b {
        for hi in 0..h {
            let lambda = (-(slopes[hi] as f64)).exp();
            let st = &mut s[(bi * h + hi) * dk * dv..][..dk * dv];
            for t in 0..l {
                for a in 0..dk {
                    let fk = phi(k[sk.index(bi, hi, t, a)]);
                    for e in 0..dv {
                        let x = &mut st[a * dv + e];
                        *x = lambda * *x + fk * v[sv.index(bi, hi, t, e)].to_f64();
                    }
                }
                for e in 0..dv {
                    o[sv.index(bi, hi, t, e)] = (0..dk)
                        .map(|a| phi(q[sk.index(bi, hi, t, a)]) * st[a * dv + e])
                        .sum();
                }
            }
        }
    }
    Ok((o, s))
}
