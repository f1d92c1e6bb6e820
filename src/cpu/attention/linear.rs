//! Kernelized linear attention on the CPU path (Katharopoulos et al. 2020, eqs. 4-6, 16-20).
//!
//! Per (batch, head) row, V is extended by a column of ones so that one product gives both the
//! state `S = Σ φ(K_j) V_jᵀ` and the normaliser `z = Σ φ(K_j)`: `[S | z] = φ(K)ᵀ [V | 1]`, then
//! `[num | den] = φ(Q) [S | z]`. Causal uses the chunked form (chunks of [`CAUSAL_CHUNK`] rows):
//! every chunk's `φ(K_c)ᵀ [V_c | 1]` in parallel, an exclusive prefix over chunks, then per chunk
//! `φ(Q_c) [S|z]_{<c}` (sgemm) plus the masked intra-chunk block `tril(φ(Q_c) φ(K_c)ᵀ) [V_c | 1]`.
//! The intra-chunk block is applied row by row over `j ≤ i` only (not as a masked product), so a
//! NaN in a later key or value never reaches an earlier output: the reference's NaN pattern.

use rayon::prelude::*;

use super::map_features;
use crate::attention::linear::{AttnDims, LinearAttentionOptions};
use crate::cpu::{check_len, load, sgemm, store, Mat, MatMut};
use crate::types::attention::check_rows_options;
use crate::{Element, Result};

/// Rows per chunk of the causal form (the GPU's and the chunk-64 form of fla / Lightning).
pub const CAUSAL_CHUNK: usize = 64;
/// Rows per parallel slice of the non-causal sums.
const SLICE: usize = 512;

const OP: &str = "cpu::linear_attention";

/// Linear attention: `q, k: [R, L, Dk]`, `v: [R, L, Dv]` row-major (R = B·H, sizes from
/// [`crate::attention::linear::check_shapes`]) -> `o: [R, L, Dv]` in the inputs' dtype, f32
/// arithmetic. Errors: [`crate::Error::InvalidArgument`] for a bad ε,
/// [`crate::Error::DataLength`] when a slice does not hold its shape.
pub fn linear_attention<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    opts: &LinearAttentionOptions,
) -> Result<Vec<T>> {
    let mut out = vec![T::from_f64(0.0); d.rows * d.len * d.dv];
    linear_attention_into(q, k, v, d, opts, &mut out)?;
    Ok(out)
}

/// [`linear_attention`] writing into `out: [R, L, Dv]`.
pub fn linear_attention_into<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    opts: &LinearAttentionOptions,
    out: &mut [T],
) -> Result<()> {
    check_rows_options(OP, opts)?;
    let (r, l, dk, dv) = (d.rows, d.len, d.dk, d.dv);
    check_len(q, &[r, l, dk])?;
    check_len(k, &[r, l, dk])?;
    check_len(v, &[r, l, dv])?;
    check_len(out, &[r, l, dv])?;
    let (q, k, v) = (load(q), load(k), load(v));
    let denominator = opts.denominator.then_some(opts.eps);
    out.par_chunks_mut(l * dv).enumerate().for_each(|(row, o)| {
        let fq = map_features(opts.feature_map, &q[row * l * dk..][..l * dk]);
        let fk = map_features(opts.feature_map, &k[row * l * dk..][..l * dk]);
        let v = &v[row * l * dv..][..l * dv];
        let mut o32 = vec![0.0f32; l * dv];
        linear_row(&fq, &fk, v, (l, dk, dv), opts.causal, denominator, &mut o32);
        store(&o32, o);
    });
    Ok(())
}

/// One (batch, head) row on features: `fq, fk: [L, M]`, `v: [L, Dv]` -> `out: [L, Dv]`.
/// `denominator`: `Some(ε)` divides by `φ(q_i)·z + ε` (0 when that is exactly 0), `None` gives the
/// numerator alone. Shared with FAVOR+ and recurrent prefill.
pub(crate) fn linear_row(
    fq: &[f32],
    fk: &[f32],
    v: &[f32],
    (l, m, dv): (usize, usize, usize),
    causal: bool,
    denominator: Option<f32>,
    out: &mut [f32],
) {
    let we = dv + denominator.is_some() as usize;
    let vext = extend(v, l, dv, we);
    let chunk = if causal { CAUSAL_CHUNK } else { SLICE };
    let n_chunks = l.div_ceil(chunk);
    // [S | z] of every chunk on its own.
    let mut states = vec![0.0f32; n_chunks * m * we];
    states
        .par_chunks_mut(m * we)
        .enumerate()
        .for_each(|(c, s)| {
            let (c0, lc) = (c * chunk, chunk.min(l - c * chunk));
            let fkc = Mat::rm(&fk[c0 * m..], lc, m, m).t();
            let vc = Mat::rm(&vext[c0 * we..], lc, we, we);
            sgemm(fkc, vc, 0.0, MatMut::rm(s, m, we, we));
        });
    if causal {
        // Exclusive prefix over chunks: chunk c sees the state of chunks 0..c.
        let mut run = vec![0.0f32; m * we];
        for s in states.chunks_mut(m * we) {
            for (x, acc) in s.iter_mut().zip(run.iter_mut()) {
                let own = *x;
                *x = *acc;
                *acc += own;
            }
        }
    } else {
        let (first, rest) = states.split_at_mut(m * we);
        for s in rest.chunks(m * we) {
            first.iter_mut().zip(s).for_each(|(a, b)| *a += b);
        }
        states.truncate(m * we);
    }
    out.par_chunks_mut(chunk * dv)
        .enumerate()
        .for_each(|(c, oc)| {
            let (c0, lc) = (c * chunk, oc.len() / dv);
            let s = if causal {
                &states[c * m * we..][..m * we]
            } else {
                &states[..]
            };
            let fqc = Mat::rm(&fq[c0 * m..], lc, m, m);
            let mut acc = vec![0.0f32; lc * we];
            sgemm(
                fqc,
                Mat::rm(s, m, we, we),
                0.0,
                MatMut::rm(&mut acc, lc, we, we),
            );
            if causal {
                intra_chunk(fqc, &fk[c0 * m..], &vext[c0 * we..], we, &mut acc);
            }
            finish(&acc, we, dv, denominator, oc);
        });
}

/// `[V | 1]`: `v: [L, Dv]` -> `[L, we]` (we = Dv + 1 with the ones column, else Dv).
fn extend(v: &[f32], l: usize, dv: usize, we: usize) -> Vec<f32> {
    if we == dv {
        return v.to_vec();
    }
    let mut x = vec![1.0f32; l * we];
    for (dst, src) in x.chunks_mut(we).zip(v.chunks(dv)) {
        dst[..dv].copy_from_slice(src);
    }
    x
}

/// `acc[i] += Σ_{j ≤ i} (φq_i·φk_j) vext_j` inside one chunk. The scores come from one sgemm.
/// When the chunk's values are all finite, the upper triangle is set to 0 and one more sgemm
/// applies it (0·finite = 0 exactly); otherwise the rows go over `j ≤ i` only, so a NaN or ±Inf
/// in a later value never meets an earlier query (0·NaN would be NaN).
fn intra_chunk(fqc: Mat<'_>, fk: &[f32], vext: &[f32], we: usize, acc: &mut [f32]) {
    let (lc, m) = (fqc.rows, fqc.cols);
    let mut a = vec![0.0f32; lc * lc];
    let fkc = Mat::rm(fk, lc, m, m).t();
    sgemm(fqc, fkc, 0.0, MatMut::rm(&mut a, lc, lc, lc));
    apply_lower(&mut a, lc, &vext[..lc * we], we, acc);
}

/// `acc += tril(a) · x` for `a: [n, n]`, `x: [n, w]`; the upper triangle of `a` is overwritten.
pub(crate) fn apply_lower(a: &mut [f32], n: usize, x: &[f32], w: usize, acc: &mut [f32]) {
    if x.iter().all(|v| v.is_finite()) {
        for i in 0..n {
            a[i * n + i + 1..(i + 1) * n].fill(0.0);
        }
        sgemm(
            Mat::rm(a, n, n, n),
            Mat::rm(x, n, w, w),
            1.0,
            MatMut::rm(acc, n, w, w),
        );
        return;
    }
    for i in 0..n {
        let row = &mut acc[i * w..][..w];
        for j in 0..=i {
            let p = a[i * n + j];
            for (r, y) in row.iter_mut().zip(&x[j * w..][..w]) {
                *r += p * y;
            }
        }
    }
}

/// `out_i = num_i / den_i` with the denominator guard (0 when `den + ε` is exactly 0).
pub(crate) fn finish(acc: &[f32], we: usize, dv: usize, denominator: Option<f32>, out: &mut [f32]) {
    for (o, a) in out.chunks_mut(dv).zip(acc.chunks(we)) {
        match denominator {
            None => o.copy_from_slice(&a[..dv]),
            Some(eps) => {
                let den = a[dv] + eps;
                if den == 0.0 {
                    o.fill(0.0);
                } else {
                    o.iter_mut().zip(&a[..dv]).for_each(|(x, y)| *x = y / den);
                }
            }
        }
    }
}
