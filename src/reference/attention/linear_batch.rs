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

/// Lightning attention (TransNormerLLM, arXiv 2307.14995) per sequence, from its definition
/// `o_t = λ_h^(t+1) φ(q_t)ᵀ S_{−1} + Σ_{j≤t} λ_h^(t−j) (φ(q_t)·φ(k_j)) v_j` (t counted from the
/// sequence start, `S_{−1}` = the initial state `[B, H, Dk, Dv]`, none: zero,
/// `λ_h = exp(−slopes[h])`), so NaN/±Inf follow the definition's terms as in
/// [`super::lightning::lightning_attention`]; the final state is the recurrence's
/// `S_t = λ_h S_{t−1} + φ(k_t) v_tᵀ` after the last token. q, k, v as `d` lays them out (Hkv = Hq).
/// Returns `o` (q's shape with Dv, in the layout) and the final S `[B, H, Dk, Dv]`.
///
/// # Errors
/// [`Error::DataLength`] for slices or a state that do not match `d`, [`Error::InvalidArgument`]
/// for grouped heads or slopes not of length H.
pub fn lightning_attention_batch<T: Element>(
    qkv: (&[T], &[T], &[T]),
    d: &GqaDims,
    slopes: &[f32],
    feature_map: crate::types::FeatureMap,
    initial: Option<&[f64]>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    lightning_attention_varlen(qkv, d, slopes, feature_map, None, initial)
}

/// [`lightning_attention_batch`] with optional packed sequences (`cu`, B = 1): each sequence
/// restarts from its own initial state (`[N, H, Dk, Dv]`, N = the count of `cu`); outputs past the
/// last offset are NaN (the op leaves them untouched); returns the final S `[N, H, Dk, Dv]`.
///
/// # Errors
/// As [`lightning_attention_batch`]; [`Error::InvalidArgument`] for `cu` with B ≠ 1.
pub fn lightning_attention_varlen<T: Element>(
    (q, k, v): (&[T], &[T], &[T]),
    d: &GqaDims,
    slopes: &[f32],
    feature_map: crate::types::FeatureMap,
    cu: Option<&CuSeqlens>,
    initial: Option<&[f64]>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    const OP: &str = "reference::lightning_attention_batch";
    let (b, h, l, dk, dv) = (d.batch, d.q_heads, d.q_len, d.dk, d.dv);
    let bad = |name, reason: &str| Error::InvalidArgument {
        op: OP,
        name,
        reason: reason.into(),
    };
    if d.kv_heads != h || d.kv_len != l || slopes.len() != h {
        return Err(bad("d", "needs Hkv = Hq, Lk = Lq and H slopes"));
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
    let seqs: Vec<(usize, std::ops::Range<usize>)> = match cu {
        None => (0..b).map(|i| (i, 0..l)).collect(),
        Some(c) if b == 1 => (0..c.count()).map(|i| (0, c.range(i))).collect(),
        Some(_) => return Err(bad("cu_seqlens", "needs B = 1")),
    };
    let n = seqs.len();
    let mut s = match initial {
        Some(s0) if s0.len() == n * h * dk * dv => s0.to_vec(),
        Some(s0) => {
            return Err(Error::DataLength {
                shape: vec![n, h, dk, dv],
                expected: n * h * dk * dv,
                got: s0.len(),
            })
        }
        None => vec![0.0; n * h * dk * dv],
    };
    let (sk, sv) = (d.layout.strides(h, l, dk), d.layout.strides(h, l, dv));
    let phi = |x: T| feature_map.apply(x.to_f64());
    let fill = if cu.is_some() { f64::NAN } else { 0.0 };
    let mut o = vec![fill; b * h * l * dv];
    for (si, (bi, range)) in seqs.into_iter().enumerate() {
        for hi in 0..h {
            let lambda = (-(slopes[hi] as f64)).exp();
            let st = &mut s[(si * h + hi) * dk * dv..][..dk * dv];
            let n = range.len();
            let gather = |x: &[T], sx: &crate::types::Strides, w: usize, f: &dyn Fn(T) -> f64| {
                let mut out = Vec::with_capacity(n * w);
                for t in range.clone() {
                    out.extend((0..w).map(|a| f(x[sx.index(bi, hi, t, a)])));
                }
                out
            };
            let fq = gather(q, &sk, dk, &phi);
            let fk = gather(k, &sk, dk, &phi);
            let vr = gather(v, &sv, dv, &|x: T| x.to_f64());
            let mut row = vec![0.0f64; n * dv];
            super::lightning::decayed_row((&fq, &fk, &vr), (n, dk, dv), lambda, &mut row);
            for (i, t) in range.clone().enumerate() {
                // The initial state's term λ^(i+1) φ(q_t)·S_{−1} (sign kept past an underflow).
                let pow = lambda.powi(i as i32 + 1);
                for e in 0..dv {
                    let y: f64 = (0..dk).map(|a| fq[i * dk + a] * st[a * dv + e]).sum();
                    let y = if initial.is_none() {
                        0.0
                    } else if y.is_finite() {
                        pow * y
                    } else {
                        y
                    };
                    o[sv.index(bi, hi, t, e)] = row[i * dv + e] + y;
                }
            }
            // The final state: the recurrence over the sequence.
            for i in 0..n {
                for a in 0..dk {
                    for e in 0..dv {
                        let x = &mut st[a * dv + e];
                        *x = lambda * *x + fk[i * dk + a] * vr[i * dv + e];
                    }
                }
            }
        }
    }
    Ok((o, s))
}

/// NormAttention (TransNormer, arXiv 2210.10340, eq. 8) per sequence: the numerator
/// `Σ_j (φ(q_i)·φ(k_j)) v_j` of [`linear_attention_batch`] without its denominator (over the
/// sequence's keys, `j ≤ i` when causal), then the norm over Dv of every token. Layout, grouped
/// heads and packed sequences as [`linear_attention_batch`]; tokens past the last offset are NaN.
///
/// # Errors
/// As [`linear_attention_batch`]; [`Error::InvalidArgument`] / [`Error::Shape`] for a bad norm
/// (ε, gain or bias).
pub fn norm_attention_batch<T: Element>(
    qkv: (&[T], &[T], &[T]),
    d: &GqaDims,
    affine: &crate::types::attention::Affine<'_>,
    opts: &crate::types::attention::NormAttentionOptions,
    cu: Option<&CuSeqlens>,
) -> Result<Vec<f64>> {
    let op = "reference::norm_attention_batch";
    crate::types::attention::check_norm(op, opts.norm, opts.eps, affine, d.dv)?;
    let lin = LinearAttentionOptions {
        feature_map: opts.feature_map,
        causal: opts.causal,
        denominator: false,
        layout: d.layout,
        ..Default::default()
    };
    let mut o = linear_attention_batch(qkv, d, &lin, cu, None)?.o;
    let s = d.layout.strides(d.q_heads, d.q_len, d.dv);
    let mut row = vec![0.0; d.dv];
    for b in 0..d.batch {
        for h in 0..d.q_heads {
            for t in 0..d.q_len {
                for (e, x) in row.iter_mut().enumerate() {
                    *x = o[s.index(b, h, t, e)];
                }
                if row.iter().all(|x| x.is_nan()) {
                    continue; // past the last offset
                }
                opts.norm
                    .apply(&mut row, opts.eps as f64, affine.gain, affine.bias);
                for (e, x) in row.iter().enumerate() {
                    o[s.index(b, h, t, e)] = *x;
                }
            }
        }
    }
    Ok(o)
}
