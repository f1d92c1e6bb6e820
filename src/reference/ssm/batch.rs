//! The S4D recurrence over real-world batches in f64, sequence by sequence and step by step
//! (issue 14): `u, y` as `[B, H, L]` or `[B, L, H]`, packed sequences, states in and out.

use num_complex::Complex64;

use super::kernel::{DiagonalSsm, Discretization};
use crate::types::batch::{CuSeqlens, Layout};
use crate::{Error, Result};

/// Where `u` lives and how it splits: B, L, the layout and the packed sequences (B = 1).
#[derive(Clone, Copy, Debug)]
pub struct SeqBatch<'a> {
    /// B (1 with packed sequences).
    pub batch: usize,
    /// L, the (packed) sequence length.
    pub len: usize,
    /// `[B, H, L]` ([`Layout::Bhld`]) or `[B, L, H]` ([`Layout::Blhd`]).
    pub layout: Layout,
    /// Packed sequences, B = 1.
    pub cu_seqlens: Option<&'a CuSeqlens>,
}

impl SeqBatch<'_> {
    /// Flat index of (b, h, t) for `heads` heads.
    pub fn index(&self, b: usize, h: usize, t: usize, heads: usize) -> usize {
        match self.layout {
            Layout::Bhld => (b * heads + h) * self.len + t,
            Layout::Blhd => (b * self.len + t) * heads + h,
        }
    }

    /// The sequences as (batch entry, token range): B whole rows, or the packed ones.
    pub fn sequences(&self) -> Vec<(usize, std::ops::Range<usize>)> {
        match self.cu_seqlens {
            Some(cu) => (0..cu.count()).map(|i| (0, cu.range(i))).collect(),
            None => (0..self.batch).map(|b| (b, 0..self.len)).collect(),
        }
    }
}

/// For each sequence i (B rows, or the packed ones) and head h, from `x_{−1}` = `x0[i, h]`
/// (`[N, H, N2]`, none = 0): `x_t = Ā x_{t−1} + B̄ u_t`, `y_t = 2 Re Σ_n C_n x_{n,t} + D u_t`,
/// written into `y` (shaped like u; tokens in no sequence are not written). Returns the state
/// after each sequence's last token, `[N, H, N2]` (an empty sequence keeps x0).
pub fn s4d_recurrence_batch(
    ssm: &DiagonalSsm,
    u: &[f64],
    sb: &SeqBatch<'_>,
    x0: Option<&[Complex64]>,
    disc: Discretization,
    y: &mut [f64],
) -> Result<Vec<Complex64>> {
    ssm.check("s4d_recurrence_batch")?;
    let (h, n2) = (ssm.h, ssm.n2);
    let seqs = sb.sequences();
    let n = seqs.len();
    let bad = u.len() != sb.batch * h * sb.len
        || y.len() != u.len()
        || x0.is_some_and(|x| x.len() != n * h * n2)
        || (sb.cu_seqlens.is_some() && sb.batch != 1);
    if bad {
        return Err(Error::Shape {
            op: "s4d_recurrence_batch",
            name: "u",
            expected: format!(
                "B·H·L = {}·{h}·{} elements, y alike, x0 [{n}, {h}, {n2}]",
                sb.batch, sb.len
            ),
            got: vec![u.len(), y.len(), x0.map_or(0, |x| x.len())],
        });
    }
    let (ab, bb) = ssm.discretize(disc)?;
    let mut fin = vec![Complex64::new(0.0, 0.0); n * h * n2];
    for (i, (b, range)) in seqs.into_iter().enumerate() {
        for hh in 0..h {
            let s = (i * h + hh) * n2;
            let mut x: Vec<Complex64> = match x0 {
                Some(x0) => x0[s..s + n2].to_vec(),
                None => vec![Complex64::new(0.0, 0.0); n2],
            };
            for t in range.clone() {
                let e = sb.index(b, hh, t, h);
                let mut acc = 0.0;
                for (k, xk) in x.iter_mut().enumerate() {
                    let m = hh * n2 + k;
                    *xk = ab[m] * *xk + bb[m] * u[e];
                    acc += (ssm.c[m] * *xk).re;
                }
                y[e] = 2.0 * acc + ssm.d[hh] * u[e];
            }
            fin[s..s + n2].copy_from_slice(&x);
        }
    }
    Ok(fin)
}
