//! Performer attention (FAVOR, [`super::favor`]) over real-world batches in f64, one sequence at a
//! time from the definition: either [`crate::types::Layout`], packed sequences ([`CuSeqlens`]: each
//! sequence gets its own features and sums, nothing crosses a boundary) and, for causal positive
//! features, the state in and out. The state per (sequence, head) and feature r is
//! `m_r = max_j a_r(k_j)`, `S_r = Σ_j exp(a_r(k_j) − m_r) v_j`, `z_r = Σ_j exp(a_r(k_j) − m_r)` over
//! the keys seen (`a_r(k) = ω_rᵀk' − ‖k'‖²/2`), as [`crate::attention::favor_batch`] documents; a
//! row i takes `o_i = Σ_r e_ir S_r / Σ_r e_ir z_r`, `e_ir = exp(a_r(q_i) + m_r(i) − C_i)` with the
//! state after key i ([`super::favor::causal_positive`]).

use super::favor::{causal_positive, favor_attention, FavorRunState};
use crate::types::attention::{check_omega, AttnDims, FavorKind, FavorOptions};
use crate::types::{CuSeqlens, GqaDims};
use crate::{Element, Error, Result};

/// Output and final state of [`favor_attention_batch`].
#[derive(Clone, Debug, PartialEq)]
pub struct FavorBatchOut {
    /// `o`: q's shape with Dv, in the layout of the dims; tokens past the last offset are NaN
    /// (the op leaves them untouched).
    pub o: Vec<f64>,
    /// Final S `[N, H, M, Dv]` (causal positive; empty otherwise).
    pub s: Vec<f64>,
    /// Final z `[N, H, M]`.
    pub z: Vec<f64>,
    /// Final m `[N, H, M]` (−∞ for a feature no key has reached).
    pub m: Vec<f64>,
}

/// FAVOR attention of q, k, v (laid out as `d` says; Hkv dividing Hq, query head h reading kv
/// head h / (Hq / Hkv); Lq = Lk) with optional packed
/// sequences (B = 1) and, for causal positive features, an optional initial state
/// `(S [N, H, M, Dv], z [N, H, M], m [N, H, M])`.
///
/// # Errors
/// [`Error::DataLength`] for slices that do not match `d`; [`Error::Shape`] / [`Error::InvalidArgument`]
/// for ω not `[M, Dk]`; [`Error::InvalidArgument`] for Hkv not dividing Hq, Lq ≠ Lk, packed sequences with
/// B ≠ 1, a state with other than causal positive features, or one of the wrong length.
pub fn favor_attention_batch<T: Element>(
    (q, k, v): (&[T], &[T], &[T]),
    d: &GqaDims,
    omega: &[f32],
    opts: &FavorOptions,
    cu: Option<&CuSeqlens>,
    initial: Option<(&[f64], &[f64], &[f64])>,
) -> Result<FavorBatchOut> {
    const OP: &str = "reference::favor_attention_batch";
    let (b, h, l, dk, dv) = (d.batch, d.q_heads, d.q_len, d.dk, d.dv);
    let bad = |name, reason: &str| Error::InvalidArgument {
        op: OP,
        name,
        reason: reason.into(),
    };
    let hkv = d.kv_heads;
    if hkv == 0 || h % hkv != 0 || d.kv_len != l {
        return Err(bad("d", "needs Hkv dividing Hq and Lk = Lq"));
    }
    let m = check_omega(OP, &[omega.len() / dk.max(1), dk], dk)?;
    for (x, hx, n) in [(q, h, dk), (k, hkv, dk), (v, hkv, dv)] {
        if x.len() != b * hx * l * n {
            return Err(Error::DataLength {
                shape: d.layout.shape(b, hx, l, n).to_vec(),
                expected: b * hx * l * n,
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
    let stateful = opts.causal && opts.kind == FavorKind::Positive;
    if let Some((s0, z0, m0)) = initial {
        if !stateful {
            return Err(bad("initial_state", "needs causal positive features"));
        }
        if s0.len() != n * h * m * dv || z0.len() != n * h * m || m0.len() != n * h * m {
            return Err(bad(
                "initial_state",
                "needs S [N, H, M, Dv], z [N, H, M] and m [N, H, M]",
            ));
        }
    }
    let (sq, so) = (d.layout.strides(h, l, dk), d.layout.strides(h, l, dv));
    let (sk, sv) = (d.layout.strides(hkv, l, dk), d.layout.strides(hkv, l, dv));
    let mut out = FavorBatchOut {
        o: vec![f64::NAN; b * h * l * dv],
        s: Vec::new(),
        z: Vec::new(),
        m: Vec::new(),
    };
    if stateful {
        out.s = vec![0.0; n * h * m * dv];
        out.z = vec![0.0; n * h * m];
        out.m = vec![f64::NEG_INFINITY; n * h * m];
    }
    for (si, (bi, range)) in seqs.into_iter().enumerate() {
        let len = range.len();
        for hh in 0..h {
            // The sequence's rows of this head, dense.
            // Query head hh reads kv head hh / (Hq / Hkv).
            let rows = |x: &[T], st: &crate::types::Strides, w: usize, hx: usize| -> Vec<T> {
                range
                    .clone()
                    .flat_map(|t| (0..w).map(move |e| (t, e)))
                    .map(|(t, e)| x[st.index(bi, hx, t, e)])
                    .collect()
            };
            let hk = hh / (h / hkv);
            let qr = rows(q, &sq, dk, hh);
            let (kr, vr) = (rows(k, &sk, dk, hk), rows(v, &sv, dv, hk));
            let mut o = vec![0.0f64; len * dv];
            let row = si * h + hh;
            if stateful {
                let mut st = FavorRunState::empty(m, dv);
                if let Some((s0, z0, m0)) = initial {
                    st.mx.copy_from_slice(&m0[row * m..][..m]);
                    for r in 0..m {
                        st.s[r * (dv + 1)..][..dv].copy_from_slice(&s0[(row * m + r) * dv..][..dv]);
                        st.s[r * (dv + 1) + dv] = z0[row * m + r];
                    }
                }
                let f = |x: &[T]| x.iter().map(|a| a.to_f64()).collect::<Vec<f64>>();
                causal_positive(
                    (&f(&qr), &f(&kr), &f(&vr)),
                    (dk, dv),
                    omega,
                    &mut o,
                    &mut st,
                );
                out.m[row * m..][..m].copy_from_slice(&st.mx);
                for r in 0..m {
                    let sr = &st.s[r * (dv + 1)..][..dv + 1];
                    out.s[(row * m + r) * dv..][..dv].copy_from_slice(&sr[..dv]);
                    out.z[row * m + r] = sr[dv];
                }
            } else if len > 0 {
                let ad = AttnDims {
                    rows: 1,
                    len,
                    dk,
                    dv,
                    out_shape: vec![1, len, dv],
                };
                o = favor_attention(&qr, &kr, &vr, &ad, omega, opts)?;
            }
            for (t, i) in range.clone().enumerate() {
                for e in 0..dv {
                    out.o[so.index(bi, hh, i, e)] = o[t * dv + e];
                }
            }
        }
    }
    Ok(out)
}
