//! Lightning attention (Lightning Attention-2, arXiv 2401.04658; TransNormerLLM, arXiv
//! 2307.14995): `o_t = Σ_{j≤t} λ^(t−j) (φ(q_t)·φ(k_j)) v_j`, `λ = exp(−s_h)`, in f64, through
//! the recurrence `S_t = λ S_{t−1} + φ(k_t)ᵀ v_t`, `o_t = φ(q_t) S_t` for finite terms and the
//! definition's own terms where an input is NaN/±Inf (see `decayed_row`).

use super::softmax::check_len;
use crate::types::attention::{resolve_slopes, AttnDims, LightningOptions};
use crate::{Element, Error, Result};

/// `q, k: [R, L, Dk]`, `v: [R, L, Dv]` with R = B·H rows, row r being head `r % heads`;
/// `slopes: [heads]` (`None`: ALiBi) -> `o: [R, L, Dv]` in f64. The block size does not enter.
pub fn lightning_attention<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    heads: usize,
    slopes: Option<&[f32]>,
    opts: &LightningOptions,
) -> Result<Vec<f64>> {
    let op = "reference::lightning_attention";
    crate::types::attention::check_plain(op, opts.layout, None)?;
    if heads == 0 || !d.rows.is_multiple_of(heads) {
        return Err(Error::InvalidArgument {
            op,
            name: "heads",
            reason: format!("{heads} does not divide the {} rows", d.rows),
        });
    }
    let s = resolve_slopes(op, heads, slopes)?;
    let (l, dk, dv) = (d.len, d.dk, d.dv);
    check_len(q, d.rows, l, dk)?;
    check_len(k, d.rows, l, dk)?;
    check_len(v, d.rows, l, dv)?;
    let phi = |x: T| opts.feature_map.apply(x.to_f64());
    let mut out = vec![0.0f64; d.rows * l * dv];
    for r in 0..d.rows {
        let lambda = (-(s[r % heads] as f64)).exp();
        let fq: Vec<f64> = q[r * l * dk..][..l * dk].iter().map(|&x| phi(x)).collect();
        let fk: Vec<f64> = k[r * l * dk..][..l * dk].iter().map(|&x| phi(x)).collect();
        let vr: Vec<f64> = v[r * l * dv..][..l * dv]
            .iter()
            .map(|x| x.to_f64())
            .collect();
        let o = &mut out[r * l * dv..][..l * dv];
        decayed_row((&fq, &fk, &vr), (l, dk, dv), lambda, o);
    }
    Ok(out)
}

/// One row `o_t = Σ_{j≤t} λ^(t−j) (φ(q_t)·φ(k_j)) v_j` (Lightning Attention-2's definition).
/// Finite terms go through the recurrence `S_t = λ S_{t−1} + φ(k_t)ᵀ v_t` (equal in exact
/// arithmetic, O(L)); a key/value position with a non-finite entry is left out of S and its
/// terms are added as the definition writes them, and a query row with one sums every term so.
/// So NaN/±Inf follow the definition: an Inf in v_j gives `sign(φ(q_t)·φ(k_j))·Inf`, not the
/// NaN of `φ(q_t)·S_t` summing ±Inf over features; an Inf in q_t gives NaN where its terms
/// `(φ(q_t)·φ(k_j)) v_j` disagree in sign, not the ±Inf of the state form. A term is formed as
/// `λ^(t−j)·((φ(q_t)·φ(k_j)) v_j[e])` and, when the product is not finite, as the product alone
/// (`λ^(t−j) > 0` in exact arithmetic: an underflow of the power must not turn ±Inf into NaN).
pub(crate) fn decayed_row(
    (fq, fk, v): (&[f64], &[f64], &[f64]),
    (l, dk, dv): (usize, usize, usize),
    lambda: f64,
    o: &mut [f64],
) {
    let finite = |x: &[f64]| x.iter().all(|y| y.is_finite());
    let bad: Vec<usize> = (0..l)
        .filter(|&j| !finite(&fk[j * dk..][..dk]) || !finite(&v[j * dv..][..dv]))
        .collect();
    // One term λ^(t−j) (φ(q_t)·φ(k_j)) v_j[e], accumulated into `acc`.
    let term = |t: usize, j: usize, acc: &mut [f64]| {
        let w: f64 = (0..dk).map(|a| fq[t * dk + a] * fk[j * dk + a]).sum();
        let pow = lambda.powi((t - j) as i32);
        for (e, x) in acc.iter_mut().enumerate() {
            let y = w * v[j * dv + e];
            *x += if y.is_finite() { pow * y } else { y };
        }
    };
    let mut st = vec![0.0f64; dk * dv];
    for t in 0..l {
        let good = bad.binary_search(&t).is_err();
        for a in 0..dk {
            let fka = if good { fk[t * dk + a] } else { 0.0 };
            for e in 0..dv {
                let x = &mut st[a * dv + e];
                *x = lambda * *x + if good { fka * v[t * dv + e] } else { 0.0 };
            }
        }
        let ot = &mut o[t * dv..][..dv];
        if finite(&fq[t * dk..][..dk]) {
            for (e, x) in ot.iter_mut().enumerate() {
                *x = (0..dk).map(|a| fq[t * dk + a] * st[a * dv + e]).sum();
            }
            for &j in bad.iter().take_while(|&&j| j <= t) {
                term(t, j, ot);
            }
        } else {
            ot.fill(0.0);
            for j in 0..=t {
                term(t, j, ot);
            }
        }
    }
}
