//! Lightning attention on the CPU path (Lightning Attention-2, arXiv 2401.04658): causal linear
//! attention with per-head decay `λ_h = exp(−s_h)`, `o_t = φ(q_t) Σ_{j≤t} λ^(t−j) φ(k_j)ᵀ v_j`, in
//! blocks of B rows. With `P_c = Σ_{j<c0} λ^(c0−1−j) φ(k_j)ᵀ v_j` the state before block c:
//! every block's own `D_c = Σ_{j∈c} λ^(c1−1−j) φ(k_j)ᵀ v_j` by sgemm in parallel, the scan
//! `P_{c+1} = λ^B P_c + D_c`, then per block `λ^(t−c0+1) φ(q_t) P_c` (sgemm) plus the decayed,
//! masked intra-block scores applied over `j ≤ t` only. Only non-negative powers of λ appear.

use rayon::prelude::*;

use super::linear::apply_lower;
use super::map_features;
use crate::attention::lightning::LightningOptions;
use crate::attention::linear::AttnDims;
use crate::cpu::{check_len, load, sgemm, store, Mat, MatMut};
use crate::types::attention::resolve_slopes;
use crate::{Element, Error, Result};

const OP: &str = "cpu::lightning_attention";
/// Block length when the options leave it open.
const DEFAULT_BLOCK: usize = 64;

/// `q, k: [R, L, Dk]`, `v: [R, L, Dv]` with R = B·H rows, row r being head `r % heads`;
/// `slopes: [heads]` (`None`: ALiBi) -> `o: [R, L, Dv]` in the inputs' dtype, f32 arithmetic.
/// Errors: [`Error::InvalidArgument`] for heads not dividing R, a block of 0 or bad slopes,
/// [`Error::Shape`] for slopes of the wrong length, [`Error::DataLength`].
pub fn lightning_attention<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    heads: usize,
    slopes: Option<&[f32]>,
    opts: &LightningOptions,
) -> Result<Vec<T>> {
    let mut out = vec![T::from_f64(0.0); d.rows * d.len * d.dv];
    lightning_attention_into(q, k, v, d, heads, slopes, opts, &mut out)?;
    Ok(out)
}

/// [`lightning_attention`] writing into `out: [R, L, Dv]`.
#[allow(clippy::too_many_arguments)]
pub fn lightning_attention_into<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    heads: usize,
    slopes: Option<&[f32]>,
    opts: &LightningOptions,
    out: &mut [T],
) -> Result<()> {
    crate::types::attention::check_plain(OP, opts.layout, None)?;
    if heads == 0 || !d.rows.is_multiple_of(heads) {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "heads",
            reason: format!("{heads} does not divide the {} rows", d.rows),
        });
    }
    let s = resolve_slopes(OP, heads, slopes)?;
    let b = match opts.block {
        None => DEFAULT_BLOCK,
        Some(0) => {
            return Err(Error::InvalidArgument {
                op: OP,
                name: "block",
                reason: "0 is not a block length >= 1".into(),
            })
        }
        Some(b) => b as usize,
    };
    let (r, l, dk, dv) = (d.rows, d.len, d.dk, d.dv);
    check_len(q, &[r, l, dk])?;
    check_len(k, &[r, l, dk])?;
    check_len(v, &[r, l, dv])?;
    check_len(out, &[r, l, dv])?;
    let (q, k, v) = (load(q), load(k), load(v));
    out.par_chunks_mut(l * dv).enumerate().for_each(|(row, o)| {
        let fq = map_features(opts.feature_map, &q[row * l * dk..][..l * dk]);
        let fk = map_features(opts.feature_map, &k[row * l * dk..][..l * dk]);
        let mut o32 = vec![0.0f32; l * dv];
        let v = &v[row * l * dv..][..l * dv];
        decayed_row(&fq, &fk, v, (l, dk, dv), s[row % heads], b, &mut o32);
        definition_nonfinite(&fq, &fk, v, (l, dk, dv), &mut o32);
        store(&o32, o);
    });
    Ok(())
}

/// One row: `fq, fk: [L, Dk]`, `v: [L, Dv]`, decay rate `s`, block `b` -> `out: [L, Dv]`.
fn decayed_row(
    fq: &[f32],
    fk: &[f32],
    v: &[f32],
    (l, dk, dv): (usize, usize, usize),
    s: f32,
    b: usize,
    out: &mut [f32],
) {
    // λ^n for n = 0..=b, each straight from exp so none carries accumulated rounding.
    let pow: Vec<f32> = (0..=b)
        .map(|n| (-(s as f64) * n as f64).exp() as f32)
        .collect();
    let n_blocks = l.div_ceil(b);
    let mut states = vec![0.0f32; n_blocks * dk * dv];
    states
        .par_chunks_mut(dk * dv)
        .enumerate()
        .for_each(|(c, st)| {
            let (c0, lc) = (c * b, b.min(l - c * b));
            let mut kd = fk[c0 * dk..][..lc * dk].to_vec();
            for (j, row) in kd.chunks_mut(dk).enumerate() {
                let w = pow[lc - 1 - j];
                row.iter_mut().for_each(|x| *x *= w);
            }
            let kt = Mat::rm(&kd, lc, dk, dk).t();
            sgemm(
                kt,
                Mat::rm(&v[c0 * dv..], lc, dv, dv),
                0.0,
                MatMut::rm(st, dk, dv, dv),
            );
        });
    // P_0 = 0; P_{c+1} = λ^{B_c} P_c + D_c, stored in place as the state before each block.
    let mut run = vec![0.0f32; dk * dv];
    for (c, st) in states.chunks_mut(dk * dv).enumerate() {
        let decay = pow[b.min(l - c * b)];
        for (x, p) in st.iter_mut().zip(run.iter_mut()) {
            let own = *x;
            *x = *p;
            *p = decay * *p + own;
        }
    }
    out.par_chunks_mut(b * dv).enumerate().for_each(|(c, oc)| {
        let (c0, lc) = (c * b, oc.len() / dv);
        let qc = Mat::rm(&fq[c0 * dk..], lc, dk, dk);
        // Block 0's state is an empty sum (oc stays 0): no Inf·0 for an Inf in q.
        if c > 0 {
            sgemm(
                qc,
                Mat::rm(&states[c * dk * dv..], dk, dv, dv),
                0.0,
                MatMut::rm(oc, lc, dv, dv),
            );
        }
        let mut a = vec![0.0f32; lc * lc];
        sgemm(
            qc,
            Mat::rm(&fk[c0 * dk..], lc, dk, dk).t(),
            0.0,
            MatMut::rm(&mut a, lc, lc, lc),
        );
        for i in 0..lc {
            oc[i * dv..][..dv].iter_mut().for_each(|x| *x *= pow[i + 1]);
            for j in 0..=i {
                a[i * lc + j] *= pow[i - j];
            }
        }
        apply_lower(&mut a, lc, &v[c0 * dv..][..lc * dv], dv, oc);
    });
}

/// Where the definition `o_t[e] = Σ_{j≤t} λ^(t−j) (φ(q_t)·φ(k_j)) v_j[e]` is not finite (q_t holds
/// a NaN/±Inf, or the block form gave a non-finite value), it is the sum of its non-finite terms
/// (`λ^(t−j) > 0` keeps their signs): those entries are recomputed so, as the GPU's
/// lightning_fix pass does, and NaN/±Inf follow the definition, not the state form `φ(q_t)·P_c`
/// across blocks. Rows with finite inputs cost one scan. NormAttention's causal sums use it with
/// λ = 1.
pub(crate) fn definition_nonfinite(
    fq: &[f32],
    fk: &[f32],
    v: &[f32],
    (l, dk, dv): (usize, usize, usize),
    out: &mut [f32],
) {
    let all_finite = |x: &[f32]| x.iter().all(|y| y.is_finite());
    if all_finite(fq) && all_finite(out) {
        return;
    }
    for t in 0..l {
        let qt = &fq[t * dk..][..dk];
        let q_bad = !all_finite(qt);
        for e in 0..dv {
            if !q_bad && out[t * dv + e].is_finite() {
                continue;
            }
            let mut acc = 0.0f32;
            for j in 0..=t {
                let w: f32 = qt.iter().zip(&fk[j * dk..][..dk]).map(|(a, b)| a * b).sum();
                let y = w * v[j * dv + e];
                if !y.is_finite() {
                    acc += y;
                }
            }
            if !acc.is_finite() {
                out[t * dv + e] = acc;
            }
        }
    }
}
