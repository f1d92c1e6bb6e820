//! Softmax attention with position terms on the CPU path: the blockwise online softmax of
//! [`super::softmax`] (per (row, block of [`QB`] queries) in parallel, key tiles of [`KB`]) with
//! the terms of [`crate::attention::positional`] applied per (i, j) in each tile:
//!
//! - ALiBi (Press et al. 2022): logit bias `−m_h·|i − j|`;
//! - log-n scaling (Chiang & Cholak 2022): logits × `κ_i = max(1, ln n_i / ln L_train)`, `n_i` the
//!   keys query i sees;
//! - sliding window: query i sees `j ∈ (i − w, i]`, so only the tiles inside it are visited;
//! - ReRoPE (Su 2023): `q_i·R(clamp(i − j, −w, w))·k_j`. A tile wholly at `|i − j| ≥ w` is one
//!   sgemm with the block's queries rotated by ±w once; tiles across the band go per (i, j).
//!
//! The logit is `scale · κ_i · dot(i, j) − m_h·|i − j|`. A key a query does not see never enters
//! its output, so a NaN in a masked key or value stays out (rows then go over the seen keys only).

use rayon::prelude::*;

use crate::attention::linear::AttnDims;
use crate::attention::softmax::SoftmaxAttentionOptions;
use crate::cpu::{check_len, exp_nonpos, load, sgemm, store, Mat, MatMut};
use crate::types::attention::{
    check_positional, check_scale, rerope_table, slopes_for, PositionalOptions,
};
use crate::types::RopeLayout;
use crate::{Element, Error, Result};

/// Queries per block.
const QB: usize = 64;
/// Keys per tile.
const KB: usize = 256;

const OP: &str = "cpu::softmax_attention_positional";

/// `q, k: [R, L, Dk]`, `v: [R, L, Dv]` with R = B·H rows, row r being head `r % heads` (for the
/// ALiBi slope) -> `o: [R, L, Dv]` in the inputs' dtype, f32 arithmetic; with ReRoPE, q and k are
/// the raw (unrotated) projections. Errors: those of
/// [`crate::attention::softmax_attention_positional`], [`Error::InvalidArgument`] for heads not
/// dividing R, [`Error::DataLength`] when a slice does not hold its shape.
pub fn softmax_attention_positional<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    heads: usize,
    opts: &SoftmaxAttentionOptions,
    pos: &PositionalOptions<'_>,
) -> Result<Vec<T>> {
    let mut out = vec![T::from_f64(0.0); d.rows * d.len * d.dv];
    softmax_attention_positional_into(q, k, v, d, heads, opts, pos, &mut out)?;
    Ok(out)
}

/// The checked position terms of one call.
struct Terms {
    l: usize,
    dk: usize,
    dv: usize,
    scale: f32,
    /// Keys j ≤ i only (causal, or any window).
    causal: bool,
    window: Option<usize>,
    /// `1 / ln L_train`.
    logn_inv: Option<f64>,
    /// ReRoPE: the clip w (≤ L − 1, ≥ 1), the layout, cos/sin of every δ ∈ [−w, w]
    /// (`[(2w + 1), Dk/2, 2]`).
    rerope: Option<(usize, RopeLayout, Vec<f32>)>,
}

impl Terms {
    /// Keys `[lo, hi)` that query `i` sees.
    fn keys(&self, i: usize) -> (usize, usize) {
        let lo = self.window.map_or(0, |w| (i + 1).saturating_sub(w));
        let hi = if self.causal { i + 1 } else { self.l };
        (lo, hi)
    }

    /// `scale · κ_i`.
    fn logit_scale(&self, i: usize) -> f32 {
        let (lo, hi) = self.keys(i);
        let kappa = self
            .logn_inv
            .map_or(1.0, |inv| f64::max(1.0, ((hi - lo) as f64).ln() * inv));
        (self.scale as f64 * kappa) as f32
    }
}

/// [`softmax_attention_positional`] writing into `out: [R, L, Dv]`.
#[allow(clippy::too_many_arguments)]
pub fn softmax_attention_positional_into<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    heads: usize,
    opts: &SoftmaxAttentionOptions,
    pos: &PositionalOptions<'_>,
    out: &mut [T],
) -> Result<()> {
    check_scale(OP, opts.scale)?;
    crate::types::attention::check_plain(OP, opts.layout, opts.cu_seqlens.as_ref())?;
    check_positional(pos, d.dk)?;
    if heads == 0 || !d.rows.is_multiple_of(heads) {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "heads",
            reason: format!("{heads} does not divide the {} rows", d.rows),
        });
    }
    let slopes = match &pos.alibi {
        Some(a) => Some(slopes_for(a, heads)?),
        None => None,
    };
    let (r, l, dk, dv) = (d.rows, d.len, d.dk, d.dv);
    check_len(q, &[r, l, dk])?;
    check_len(k, &[r, l, dk])?;
    check_len(v, &[r, l, dv])?;
    check_len(out, &[r, l, dv])?;
    let t = Terms {
        l,
        dk,
        dv,
        scale: opts.scale_for(dk),
        causal: opts.causal || pos.window.is_some(),
        window: pos.window,
        logn_inv: pos.log_n_train.map(|n| 1.0 / (n as f64).ln()),
        rerope: pos.rerope.map(|rr| {
            // |i − j| ≤ L − 1, so a wider clip changes nothing and needs no bigger table.
            let w = rr.window.min(l.saturating_sub(1)).max(1);
            (w, rr.layout, rerope_table(w, dk, rr.base))
        }),
    };
    let (q, k, v) = (load(q), load(k), load(v));
    out.par_chunks_mut(l * dv).enumerate().for_each(|(row, o)| {
        let slope = slopes.as_ref().map_or(0.0, |s| s[row % heads]);
        let (kr, vr) = (&k[row * l * dk..][..l * dk], &v[row * l * dv..][..l * dv]);
        o.par_chunks_mut(QB * dv).enumerate().for_each(|(b, ob)| {
            let (i0, nq) = (b * QB, ob.len() / dv);
            let qb = &q[(row * l + i0) * dk..][..nq * dk];
            let mut acc = vec![0.0f32; nq * dv];
            block(&t, qb, i0, (kr, vr), slope, &mut acc);
            store(&acc, ob);
        });
    });
    Ok(())
}

/// `x: [n, Dk]` rotated by δ (the table row of δ), per the layout.
fn rotate(x: &[f32], dk: usize, layout: RopeLayout, cs: &[f32], out: &mut [f32]) {
    let half = dk / 2;
    for (xr, or) in x.chunks_exact(dk).zip(out.chunks_exact_mut(dk)) {
        for p in 0..half {
            let (a, b) = pair(layout, p, half);
            let (c, s) = (cs[2 * p], cs[2 * p + 1]);
            or[a] = xr[a] * c - xr[b] * s;
            or[b] = xr[a] * s + xr[b] * c;
        }
    }
}

/// The indices of rotary pair `p`.
#[inline]
fn pair(layout: RopeLayout, p: usize, half: usize) -> (usize, usize) {
    match layout {
        RopeLayout::Interleaved => (2 * p, 2 * p + 1),
        RopeLayout::HalfSplit => (p, p + half),
    }
}

/// Online-softmax state of one query block.
struct Online {
    m: Vec<f32>,
    sum: Vec<f32>,
}

/// One block of queries `qb: [nq, Dk]` starting at `i0` against the keys it sees.
fn block(t: &Terms, qb: &[f32], i0: usize, (k, v): (&[f32], &[f32]), slope: f32, acc: &mut [f32]) {
    let (dk, dv, nq) = (t.dk, t.dv, qb.len() / t.dk);
    let mut st = Online {
        m: vec![f32::NEG_INFINITY; nq],
        sum: vec![0.0; nq],
    };
    // Queries rotated by +w and −w: the product for tiles wholly outside the ReRoPE band.
    let rotated = t.rerope.as_ref().map(|(w, layout, table)| {
        let mut r = vec![0.0f32; 2 * nq * dk];
        let (plus, minus) = r.split_at_mut(nq * dk);
        rotate(qb, dk, *layout, &table[2 * w * dk..][..dk], plus);
        rotate(qb, dk, *layout, &table[..dk], minus);
        r
    });
    let (lo, _) = t.keys(i0);
    let (_, hi) = t.keys(i0 + nq - 1);
    let mut s = vec![0.0f32; nq * KB];
    let mut ranges = vec![(0usize, 0usize); nq];
    for j0 in (lo..hi).step_by(KB) {
        let nk = KB.min(hi - j0);
        let s = &mut s[..nq * nk];
        for (i, rg) in ranges.iter_mut().enumerate() {
            let (a, b) = t.keys(i0 + i);
            *rg = (a.clamp(j0, j0 + nk) - j0, b.clamp(j0, j0 + nk) - j0);
        }
        let kt = &k[j0 * dk..][..nk * dk];
        dots(t, qb, i0, (j0, kt), rotated.as_deref(), &ranges, s);
        let masked = update(t, &mut st, s, (i0, j0, nk), &ranges, slope, acc);
        let vt = &v[j0 * dv..][..nk * dv];
        if !masked || vt.iter().all(|x| x.is_finite()) {
            // Weights outside a row's range are 0, and 0·finite = 0 exactly.
            let p = Mat::rm(s, nq, nk, nk);
            sgemm(p, Mat::rm(vt, nk, dv, dv), 1.0, MatMut::rm(acc, nq, dv, dv));
        } else {
            for (i, &(a, b)) in ranges.iter().enumerate() {
                let row = &mut acc[i * dv..][..dv];
                for j in a..b {
                    let p = s[i * nk + j];
                    row.iter_mut()
                        .zip(&vt[j * dv..][..dv])
                        .for_each(|(r, x)| *r += p * x);
                }
            }
        }
    }
    for (row, &sum) in acc.chunks_mut(dv).zip(&st.sum) {
        row.iter_mut().for_each(|a| *a /= sum);
    }
}

/// `s[i, j] = q_i·k_j` for the tile `kt: [nk, Dk]` at `j0` (ReRoPE-rotated); entries outside a
/// row's range are left unspecified.
fn dots(
    t: &Terms,
    qb: &[f32],
    i0: usize,
    (j0, kt): (usize, &[f32]),
    rotated: Option<&[f32]>,
    ranges: &[(usize, usize)],
    s: &mut [f32],
) {
    let (dk, nq, nk) = (t.dk, ranges.len(), kt.len() / t.dk);
    let ktt = Mat::rm(kt, nk, dk, dk).t();
    let gemm = |a: &[f32], s: &mut [f32]| {
        sgemm(Mat::rm(a, nq, dk, dk), ktt, 0.0, MatMut::rm(s, nq, nk, nk))
    };
    let (Some((w, layout, table)), Some(rot)) = (&t.rerope, rotated) else {
        return gemm(qb, s);
    };
    let w = *w as i64;
    let (d_min, d_max) = (
        i0 as i64 - (j0 + nk - 1) as i64,
        (i0 + nq - 1) as i64 - j0 as i64,
    );
    if d_min >= w {
        return gemm(&rot[..nq * dk], s);
    }
    if d_max <= -w {
        return gemm(&rot[nq * dk..], s);
    }
    let half = dk / 2;
    for (i, &(a, b)) in ranges.iter().enumerate() {
        let qi = &qb[i * dk..][..dk];
        for j in a..b {
            let delta = (i0 + i) as i64 - (j0 + j) as i64;
            let cs = &table[(delta.clamp(-w, w) + w) as usize * dk..][..dk];
            let kj = &kt[j * dk..][..dk];
            let mut dot = 0.0f32;
            for p in 0..half {
                let (ia, ib) = pair(*layout, p, half);
                let (c, sn) = (cs[2 * p], cs[2 * p + 1]);
                dot += c * (qi[ia] * kj[ia] + qi[ib] * kj[ib])
                    + sn * (qi[ia] * kj[ib] - qi[ib] * kj[ia]);
            }
            s[i * nk + j] = dot;
        }
    }
}

/// Turns the dots of one tile into logits, then into `e^{logit − m'}` (0 outside each row's
/// range), rescaling `acc` and the sums to the new maxima. Returns whether any row's range
/// leaves out part of the tile.
fn update(
    t: &Terms,
    st: &mut Online,
    s: &mut [f32],
    (i0, j0, nk): (usize, usize, usize),
    ranges: &[(usize, usize)],
    slope: f32,
    acc: &mut [f32],
) -> bool {
    let dv = t.dv;
    let mut masked = false;
    for (i, (row, &(a, b))) in s.chunks_mut(nk).zip(ranges).enumerate() {
        masked |= a > 0 || b < nk;
        row[..a.min(b)].fill(0.0);
        row[b.max(a)..].fill(0.0);
        if a >= b {
            continue;
        }
        let qi = i0 + i;
        let ks = t.logit_scale(qi);
        let seen = &mut row[a..b];
        for (jj, x) in seen.iter_mut().enumerate() {
            let dist = (qi as f32) - (j0 + a + jj) as f32;
            *x = ks * *x - slope * dist.abs();
        }
        let tile_max = seen.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let m_new = st.m[i].max(tile_max);
        let corr = if st.m[i] == m_new {
            1.0
        } else {
            (st.m[i] - m_new).exp()
        };
        seen.iter_mut().for_each(|x| *x = exp_nonpos(*x - m_new));
        st.sum[i] = st.sum[i] * corr + seen.iter().sum::<f32>();
        st.m[i] = m_new;
        if corr != 1.0 {
            acc[i * dv..][..dv].iter_mut().for_each(|x| *x *= corr);
        }
    }
    masked
}
