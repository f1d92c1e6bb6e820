//! Kernelized linear attention on the CPU path (Katharopoulos et al. 2020, eqs. 4-6, 16-20).
//!
//! With at least as many (batch, head) rows as threads, each row is one task (`full_row`,
//! `causal_row`): φ is mapped per block into the thread's scratch, `S = φ(K)ᵀ V` and
//! `z = Σ φ(k_j)` build up block by block (non-causal; then `o = φ(Q) S / (φ(Q) z + ε)`), or
//! the chunks below go in order with a running state (causal). Fewer rows than threads take the
//! form below, parallel inside the row (also the row kernel of FAVOR+, NormAttention, prefill).
//!
//! Per (batch, head) row, V is extended by a column of ones so that one product gives both the
//! state `S = Σ φ(K_j) V_jᵀ` and the normaliser `z = Σ φ(K_j)`: `[S | z] = φ(K)ᵀ [V | 1]`, then
//! `[num | den] = φ(Q) [S | z]`. Causal uses the chunked form (chunks of [`CAUSAL_CHUNK`] rows):
//! every chunk's `φ(K_c)ᵀ [V_c | 1]` in parallel, an exclusive prefix over chunks, then per chunk
//! `φ(Q_c) [S|z]_{<c}` (sgemm) plus the masked intra-chunk block `tril(φ(Q_c) φ(K_c)ᵀ) [V_c | 1]`.
//! The intra-chunk block is applied row by row over `j ≤ i` only (not as a masked product), so a
//! NaN in a later key or value never reaches an earlier output: the reference's NaN pattern.

use rayon::prelude::*;

use super::{map_features, map_features_into};
use crate::attention::linear::{AttnDims, LinearAttentionOptions};
use crate::attention::FeatureMap;
use crate::cpu::{carve, check_len, load, sgemm, store, with_scratch, Mat, MatMut};
use crate::types::attention::check_rows_options;
use crate::{Element, Result};

/// Rows per chunk of the causal form (the GPU's and the chunk-64 form of fla / Lightning).
pub const CAUSAL_CHUNK: usize = 64;
/// Rows per parallel slice of the non-causal sums.
const SLICE: usize = 512;
/// Keys (and queries) per block of the one-task-per-row non-causal form: their features stay
/// in L2 between φ and the product.
const BLOCK: usize = 256;

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
    let fm = opts.feature_map;
    if r >= rayon::current_num_threads() {
        // Rows enough for every thread: one task per row, φ mapped block by block into the
        // thread's scratch (no L-long feature copies, no allocation per call).
        out.par_chunks_mut(l * dv).enumerate().for_each(|(row, o)| {
            let qr = &q[row * l * dk..][..l * dk];
            let kr = &k[row * l * dk..][..l * dk];
            let vr = &v[row * l * dv..][..l * dv];
            with_scratch(|buf| {
                let dims = (l, dk, dv);
                match opts.causal {
                    false => full_row(fm, (qr, kr, vr), dims, denominator, o, buf),
                    true => causal_row(fm, (qr, kr, vr), dims, denominator, o, buf),
                }
            });
        });
        return Ok(());
    }
    out.par_chunks_mut(l * dv).enumerate().for_each(|(row, o)| {
        let fq = map_features(fm, &q[row * l * dk..][..l * dk]);
        let fk = map_features(fm, &k[row * l * dk..][..l * dk]);
        let v = &v[row * l * dv..][..l * dv];
        let mut o32 = vec![0.0f32; l * dv];
        linear_row(&fq, &fk, v, (l, dk, dv), opts.causal, denominator, &mut o32);
        store(&o32, o);
    });
    Ok(())
}

/// Non-causal, one row, single-threaded: `S = Σ_blocks φ(K_b)ᵀ V_b` and `z = Σ φ(k_j)` over key
/// blocks of [`BLOCK`], then per query block `o = φ(Q_b) S / (φ(Q_b) z + ε)`.
fn full_row<T: Element>(
    fm: FeatureMap,
    (q, k, v): (&[f32], &[f32], &[f32]),
    (l, m, dv): (usize, usize, usize),
    denominator: Option<f32>,
    out: &mut [T],
    buf: &mut Vec<f32>,
) {
    let [f, s, z, acc] = carve(buf, [BLOCK * m, m * dv, m, BLOCK * dv]);
    z.fill(0.0);
    for (b, kb) in k.chunks(BLOCK * m).enumerate() {
        let n = kb.len() / m;
        let f = &mut f[..n * m];
        map_features_into(fm, kb, f);
        if denominator.is_some() {
            for row in f.chunks_exact(m) {
                z.iter_mut().zip(row).for_each(|(a, x)| *a += x);
            }
        }
        let vb = Mat::rm(&v[b * BLOCK * dv..], n, dv, dv);
        let beta = if b == 0 { 0.0 } else { 1.0 };
        sgemm(Mat::rm(f, n, m, m).t(), vb, beta, MatMut::rm(s, m, dv, dv));
    }
    if l == 0 {
        return;
    }
    for (qb, ob) in q.chunks(BLOCK * m).zip(out.chunks_mut(BLOCK * dv)) {
        let n = qb.len() / m;
        let (f, acc) = (&mut f[..n * m], &mut acc[..n * dv]);
        map_features_into(fm, qb, f);
        sgemm(
            Mat::rm(f, n, m, m),
            Mat::rm(s, m, dv, dv),
            0.0,
            MatMut::rm(acc, n, dv, dv),
        );
        if let Some(eps) = denominator {
            for (o, fq) in acc.chunks_exact_mut(dv).zip(f.chunks_exact(m)) {
                let den = fq.iter().zip(&*z).map(|(a, b)| a * b).sum::<f32>() + eps;
                divide(o, den);
            }
        }
        store(acc, ob);
    }
}

/// Causal, one row, single-threaded, chunks of [`CAUSAL_CHUNK`] in order with a running
/// `[S | z]`: `acc = φ(Q_c) [S|z] + tril(φ(Q_c) φ(K_c)ᵀ) [V_c | 1]`, then `[S|z] += φ(K_c)ᵀ [V_c | 1]`.
fn causal_row<T: Element>(
    fm: FeatureMap,
    (q, k, v): (&[f32], &[f32], &[f32]),
    (l, m, dv): (usize, usize, usize),
    denominator: Option<f32>,
    out: &mut [T],
    buf: &mut Vec<f32>,
) {
    const C: usize = CAUSAL_CHUNK;
    let we = dv + denominator.is_some() as usize;
    let [state, fq, fk, vext, a, acc, o32] =
        carve(buf, [m * we, C * m, C * m, C * we, C * C, C * we, C * dv]);
    state.fill(0.0);
    for c in 0..l.div_ceil(C) {
        let (c0, n) = (c * C, C.min(l - c * C));
        let (fq, fk) = (&mut fq[..n * m], &mut fk[..n * m]);
        map_features_into(fm, &q[c0 * m..][..n * m], fq);
        map_features_into(fm, &k[c0 * m..][..n * m], fk);
        let vext = &mut vext[..n * we];
        for (dst, src) in vext
            .chunks_exact_mut(we)
            .zip(v[c0 * dv..][..n * dv].chunks_exact(dv))
        {
            dst[..dv].copy_from_slice(src);
            dst[dv..].fill(1.0);
        }
        let acc = &mut acc[..n * we];
        let fqc = Mat::rm(fq, n, m, m);
        sgemm(
            fqc,
            Mat::rm(state, m, we, we),
            0.0,
            MatMut::rm(acc, n, we, we),
        );
        intra_chunk(fqc, fk, vext, we, &mut a[..n * n], acc);
        let fkt = Mat::rm(fk, n, m, m).t();
        sgemm(
            fkt,
            Mat::rm(vext, n, we, we),
            1.0,
            MatMut::rm(state, m, we, we),
        );
        let o32 = &mut o32[..n * dv];
        finish(acc, we, dv, denominator, o32);
        store(o32, &mut out[c0 * dv..][..n * dv]);
    }
}

/// `o /= den`, or 0 when `den` is exactly 0 (the denominator guard).
fn divide(o: &mut [f32], den: f32) {
    if den == 0.0 {
        o.fill(0.0);
    } else {
        o.iter_mut().for_each(|x| *x /= den);
    }
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
            // Causal chunk 0's state is an empty sum: no Inf·0 for an Inf in q.
            if !causal || c > 0 {
                sgemm(
                    fqc,
                    Mat::rm(s, m, we, we),
                    0.0,
                    MatMut::rm(&mut acc, lc, we, we),
                );
            }
            if causal {
                let mut a = vec![0.0f32; lc * lc];
                intra_chunk(fqc, &fk[c0 * m..], &vext[c0 * we..], we, &mut a, &mut acc);
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
/// `a: [lc, lc]` is scratch.
fn intra_chunk(fqc: Mat<'_>, fk: &[f32], vext: &[f32], we: usize, a: &mut [f32], acc: &mut [f32]) {
    let (lc, m) = (fqc.rows, fqc.cols);
    let fkc = Mat::rm(fk, lc, m, m).t();
    sgemm(fqc, fkc, 0.0, MatMut::rm(a, lc, lc, lc));
    apply_lower(a, lc, &vext[..lc * we], we, acc);
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
                o.copy_from_slice(&a[..dv]);
                divide(o, a[dv] + eps);
            }
        }
    }
}
