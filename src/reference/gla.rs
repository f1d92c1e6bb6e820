//! Gated linear attention (GLA; Yang et al. 2024, *Gated Linear Attention Transformers with
//! Hardware-Efficient Training*, arXiv 2312.06635, eq. 3 with the gates in log space) in f64,
//! step by step:
//!
//! ```text
//! S_t = diag(exp g_t) S_{t−1} + k_tᵀ v_t      (S: [Dk, Dv] per (batch, head); g_t ≤ 0)
//! o_t = scale · q_t S_t                      (scale defaults to Dk^−1/2)
//! ```
//!
//! with `S_{−1}` = `initial_state[b, h]` (zeros when absent); `final_state[b, h]` = `S_{L−1}`.

use crate::{Error, Result};

const OP: &str = "gla_ref";

/// The sizes of a GLA call: `rows` = B·H independent (batch, head) pairs, length L, key dim Dk,
/// value dim Dv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlaDims {
    /// (batch, head) pairs B·H.
    pub rows: usize,
    /// Length L.
    pub len: usize,
    /// Key (and gate) dim Dk.
    pub dk: usize,
    /// Value dim Dv.
    pub dv: usize,
}

/// The inputs, flat row-major f64.
#[derive(Clone, Copy, Debug)]
pub struct GlaRef<'a> {
    /// `q: [B, H, L, Dk]`.
    pub q: &'a [f64],
    /// `k: [B, H, L, Dk]`.
    pub k: &'a [f64],
    /// `v: [B, H, L, Dv]`.
    pub v: &'a [f64],
    /// `g: [B, H, L, Dk]`, log forget gates (≤ 0).
    pub g: &'a [f64],
    /// `initial_state: [B, H, Dk, Dv]` (zero when absent).
    pub initial_state: Option<&'a [f64]>,
    /// The output scale (`None`: Dk^−1/2).
    pub scale: Option<f64>,
}

fn check(name: &'static str, got: usize, want: usize, shape: &str) -> Result<()> {
    if got == want {
        return Ok(());
    }
    Err(Error::Shape {
        op: OP,
        name,
        expected: format!("{want} elements ({shape})"),
        got: vec![got],
    })
}

/// The GLA recurrence of [`GlaRef`] sequentially in f64. Returns `(o: [B, H, L, Dv],
/// final_state: [B, H, Dk, Dv])`. Errors: [`Error::Shape`] when a slice's length does not match
/// `dims`, [`Error::InvalidArgument`] for a zero size.
pub fn gla_ref(dims: GlaDims, x: &GlaRef<'_>) -> Result<(Vec<f64>, Vec<f64>)> {
    let GlaDims { rows, len, dk, dv } = dims;
    if [rows, len, dk, dv].contains(&0) {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "dims",
            reason: format!("every size must be >= 1, got {dims:?}"),
        });
    }
    let tk = rows * len * dk;
    check("q", x.q.len(), tk, "[B, H, L, Dk]")?;
    check("k", x.k.len(), tk, "[B, H, L, Dk]")?;
    check("g", x.g.len(), tk, "[B, H, L, Dk]")?;
    check("v", x.v.len(), rows * len * dv, "[B, H, L, Dv]")?;
    if let Some(h0) = x.initial_state {
        check("initial_state", h0.len(), rows * dk * dv, "[B, H, Dk, Dv]")?;
    }
    let scale = x.scale.unwrap_or(1.0 / (dk as f64).sqrt());
    let mut o = vec![0.0; rows * len * dv];
    let mut state = match x.initial_state {
        Some(h0) => h0.to_vec(),
        None => vec![0.0; rows * dk * dv],
    };
    for r in 0..rows {
        let s = &mut state[r * dk * dv..][..dk * dv];
        for t in 0..len {
            let at = (r * len + t) * dk;
            let (qt, kt, gt) = (&x.q[at..][..dk], &x.k[at..][..dk], &x.g[at..][..dk]);
            let vt = &x.v[(r * len + t) * dv..][..dv];
            let ot = &mut o[(r * len + t) * dv..][..dv];
            for (d, row) in s.chunks_exact_mut(dv).enumerate() {
                let decay = gt[d].exp();
                for (j, sv) in row.iter_mut().enumerate() {
                    *sv = decay * *sv + kt[d] * vt[j];
                    ot[j] += scale * qt[d] * *sv;
                }
            }
        }
    }
    Ok((o, state))
}

/// Packed sequences (`cu_seqlens`): with `q, k, g: [1, H, L, Dk]`, `v: [1, H, L, Dv]` (`dims.rows`
/// = H), sequence i is steps `offsets[i]..offsets[i + 1]` of every head, each run by [`gla_ref`]
/// from its own initial state (`[N, H, Dk, Dv]`, zero when absent). Returns `(o: [1, H, L, Dv]`
/// (zero past the last offset), `final_state: [N, H, Dk, Dv])`. Errors as [`gla_ref`], and
/// [`Error::InvalidArgument`] for offsets that are not non-decreasing from 0 within L.
pub fn gla_ref_varlen(
    dims: GlaDims,
    offsets: &[usize],
    x: &GlaRef<'_>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let GlaDims {
        rows: h,
        len,
        dk,
        dv,
    } = dims;
    let ok = offsets.len() >= 2
        && offsets[0] == 0
        && offsets.windows(2).all(|w| w[0] <= w[1])
        && offsets[offsets.len() - 1] <= len;
    if !ok {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "cu_seqlens",
            reason: format!("{offsets:?} with {dims:?}"),
        });
    }
    let nseq = offsets.len() - 1;
    let st = h * dk * dv;
    if let Some(h0) = x.initial_state {
        check("initial_state", h0.len(), nseq * st, "[N, H, Dk, Dv]")?;
    }
    let mut o = vec![0.0; h * len * dv];
    let mut last = vec![0.0; nseq * st];
    for (i, w) in offsets.windows(2).enumerate() {
        let (t0, n) = (w[0], w[1] - w[0]);
        let h0 = x.initial_state.map(|s| &s[i * st..][..st]);
        if n == 0 {
            last[i * st..][..st].copy_from_slice(h0.unwrap_or(&vec![0.0; st][..]));
            continue;
        }
        // Each head's rows t0..t0 + n, gathered into [H, n, D].
        let cut = |a: &[f64], d: usize| -> Vec<f64> {
            (0..h)
                .flat_map(|r| a[(r * len + t0) * d..][..n * d].iter().copied())
                .collect()
        };
        let (q, k, v, g) = (cut(x.q, dk), cut(x.k, dk), cut(x.v, dv), cut(x.g, dk));
        let r = GlaRef {
            q: &q,
            k: &k,
            v: &v,
            g: &g,
            initial_state: h0,
            scale: x.scale,
        };
        let (os, s) = gla_ref(
            GlaDims {
                rows: h,
                len: n,
                dk,
                dv,
            },
            &r,
        )?;
        for r in 0..h {
            o[(r * len + t0) * dv..][..n * dv].copy_from_slice(&os[r * n * dv..][..n * dv]);
        }
        last[i * st..][..st].copy_from_slice(&s);
    }
    Ok((o, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dk = Dv = 1: the scalar recurrence s_t = e^{g_t} s_{t−1} + k_t v_t, o_t = scale q_t s_t.
    #[test]
    fn scalar_case_by_hand() {
        let dims = GlaDims {
            rows: 1,
            len: 2,
            dk: 1,
            dv: 1,
        };
        let r = GlaRef {
            q: &[1.0, 2.0],
            k: &[3.0, 1.0],
            v: &[0.5, -1.0],
            g: &[-1.0, -2.0],
            initial_state: Some(&[4.0]),
            scale: Some(0.5),
        };
        let (o, last) = gla_ref(dims, &r).unwrap();
        let s1 = (-1.0f64).exp() * 4.0 + 1.5;
        let s2 = (-2.0f64).exp() * s1 - 1.0;
        assert_eq!(o, vec![0.5 * s1, s2]);
        assert_eq!(last, vec![s2]);
    }
}
