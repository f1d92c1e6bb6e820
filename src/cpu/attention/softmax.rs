//! Exact softmax attention on the CPU path, blockwise with the online softmax (FlashAttention
//! style, O(L) memory): per (row, block of [`QB`] queries) in parallel, key tiles of [`KB`]
//! through sgemm (`S = scale·Q Kᵀ`, then `O ← O·e^{m−m'} + P V`), running max and sum per query.
//! Causal: the tiles before the query block go through sgemm; the diagonal block is applied over
//! `j ≤ i` only, so a NaN in a later key or value never reaches an earlier query.

use rayon::prelude::*;

use super::linear::apply_lower;
use crate::attention::linear::AttnDims;
use crate::attention::softmax::SoftmaxAttentionOptions;
use crate::cpu::{check_len, exp_nonpos, load, sgemm, store, Mat, MatMut};
use crate::types::attention::{check_plain, check_scale};
use crate::{Element, Result};

/// Queries per block.
const QB: usize = 64;
/// Keys per tile.
const KB: usize = 256;

/// `q, k: [R, L, Dk]`, `v: [R, L, Dv]` -> `o: [R, L, Dv]` in the inputs' dtype, f32 arithmetic;
/// the scale is [`SoftmaxAttentionOptions::scale_for`]. Errors: [`crate::Error::InvalidArgument`]
/// for a non-finite scale, [`crate::Error::DataLength`].
pub fn softmax_attention<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    opts: &SoftmaxAttentionOptions,
) -> Result<Vec<T>> {
    let mut out = vec![T::from_f64(0.0); d.rows * d.len * d.dv];
    softmax_attention_into(q, k, v, d, opts, &mut out)?;
    Ok(out)
}

/// [`softmax_attention`] writing into `out: [R, L, Dv]`.
pub fn softmax_attention_into<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    opts: &SoftmaxAttentionOptions,
    out: &mut [T],
) -> Result<()> {
    check_scale("cpu::softmax_attention", opts.scale)?;
    check_plain(
        "cpu::softmax_attention",
        opts.layout,
        opts.cu_seqlens.as_ref(),
    )?;
    let (r, l, dk, dv) = (d.rows, d.len, d.dk, d.dv);
    check_len(q, &[r, l, dk])?;
    check_len(k, &[r, l, dk])?;
    check_len(v, &[r, l, dv])?;
    check_len(out, &[r, l, dv])?;
    let scale = opts.scale_for(dk);
    let (q, k, v) = (load(q), load(k), load(v));
    out.par_chunks_mut(l * dv).enumerate().for_each(|(row, o)| {
        o.par_chunks_mut(QB * dv).enumerate().for_each(|(b, ob)| {
            let i0 = b * QB;
            let base = row * l;
            let qb = Mat::rm(&q[(base + i0) * dk..], ob.len() / dv, dk, dk);
            let kr = &k[base * dk..][..l * dk];
            let vr = &v[base * dv..][..l * dv];
            let mut acc = vec![0.0f32; ob.len()];
            flash_block(qb, kr, vr, (l, dk, dv), i0, opts.causal, scale, &mut acc);
            store(&acc, ob);
        });
    });
    Ok(())
}

/// Online-softmax state of one query block.
struct Online {
    m: Vec<f32>,
    sum: Vec<f32>,
}

impl Online {
    /// Rescales rows of `acc` and the sums to a new max per row taken over `s` (scores of one
    /// tile, `[nq, nk]`, only the first `n(i)` of row i valid); turns `s` into `e^{s−m'}`.
    fn update(
        &mut self,
        s: &mut [f32],
        nk: usize,
        valid: impl Fn(usize) -> usize,
        acc: &mut [f32],
        dv: usize,
    ) {
        for (i, srow) in s.chunks_mut(nk).enumerate() {
            let n = valid(i);
            let srow = &mut srow[..n];
            let tile_max = srow.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
            let m_new = self.m[i].max(tile_max);
            let corr = if self.m[i] == m_new {
                1.0
            } else {
                (self.m[i] - m_new).exp()
            };
            srow.iter_mut().for_each(|x| *x = exp_nonpos(*x - m_new));
            let sum: f32 = srow.iter().sum();
            self.sum[i] = self.sum[i] * corr + sum;
            self.m[i] = m_new;
            if corr != 1.0 {
                acc[i * dv..][..dv].iter_mut().for_each(|a| *a *= corr);
            }
        }
    }
}

/// One block of queries `qb: [nq, Dk]` starting at `i0` against keys `0..L` (`0..=i` causal).
#[allow(clippy::too_many_arguments)]
fn flash_block(
    qb: Mat<'_>,
    k: &[f32],
    v: &[f32],
    (l, dk, dv): (usize, usize, usize),
    i0: usize,
    causal: bool,
    scale: f32,
    acc: &mut [f32],
) {
    let nq = qb.rows;
    let mut st = Online {
        m: vec![f32::NEG_INFINITY; nq],
        sum: vec![0.0; nq],
    };
    let full_end = if causal { i0 } else { l };
    let mut s = vec![0.0f32; nq * KB];
    for j0 in (0..full_end).step_by(KB) {
        let nk = KB.min(full_end - j0);
        let kt = Mat::rm(&k[j0 * dk..], nk, dk, dk).t();
        sgemm(qb, kt, 0.0, MatMut::rm(&mut s, nq, nk, nk));
        s[..nq * nk].iter_mut().for_each(|x| *x *= scale);
        st.update(&mut s[..nq * nk], nk, |_| nk, acc, dv);
        let vt = Mat::rm(&v[j0 * dv..], nk, dv, dv);
        sgemm(
            Mat::rm(&s, nq, nk, nk),
            vt,
            1.0,
            MatMut::rm(acc, nq, dv, dv),
        );
    }
    if causal {
        // The diagonal block: query i0+i sees keys i0..=i0+i.
        let kt = Mat::rm(&k[i0 * dk..], nq, dk, dk).t();
        sgemm(qb, kt, 0.0, MatMut::rm(&mut s, nq, nq, nq));
        s[..nq * nq].iter_mut().for_each(|x| *x *= scale);
        st.update(&mut s[..nq * nq], nq, |i| i + 1, acc, dv);
        apply_lower(&mut s[..nq * nq], nq, &v[i0 * dv..][..nq * dv], dv, acc);
    }
    for (i, row) in acc.chunks_mut(dv).enumerate() {
        let inv = st.sum[i];
        row.iter_mut().for_each(|a| *a /= inv);
    }
}
