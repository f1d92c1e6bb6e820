//! Mamba-2's state-space duality layer (SSD; Dao & Gu 2024, *Transformers are SSMs: Generalized
//! Models and Efficient Algorithms Through Structured State Space Duality*, arXiv 2405.21060,
//! §6–7) in f64, written from its recurrence (the scalar-times-identity A of eq. 16), step by
//! step, with the paper's minimal implementation's layout:
//!
//! ```text
//! H_t = exp(A[b, t, h]) H_{t−1} + B[b, t, h, :]ᵀ X[b, t, h, :]     (H_t: [N, P] per (b, h))
//! Y[b, t, h, :] = C[b, t, h, :] H_t
//! ```
//!
//! with `H_{−1}` = `initial_state[b, h]` (zeros when absent); `final_state[b, h]` = `H_{L−1}`.

use crate::{Error, Result};

const OP: &str = "ssd_ref";

/// The sizes of an SSD call: batch, length L, heads H, head dim P, state size N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SsdDims {
    /// Batch b.
    pub batch: usize,
    /// Length l.
    pub len: usize,
    /// Heads h.
    pub heads: usize,
    /// Head dim p (columns of X, Y and the state).
    pub head_dim: usize,
    /// State size n (columns of B and C, rows of the state).
    pub state: usize,
}

/// The inputs, flat row-major f64.
#[derive(Clone, Copy, Debug)]
pub struct SsdRef<'a> {
    /// `X: [b, l, h, p]`.
    pub x: &'a [f64],
    /// `A: [b, l, h]`, the log-decay of every step and head (≤ 0 for a decaying state).
    pub a: &'a [f64],
    /// `B: [b, l, h, n]`.
    pub b: &'a [f64],
    /// `C: [b, l, h, n]`.
    pub c: &'a [f64],
    /// `initial_state: [b, h, n, p]` (zero when absent).
    pub initial_state: Option<&'a [f64]>,
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

/// The SSD recurrence of [`SsdRef`] sequentially in f64. Returns `(Y: [b, l, h, p],
/// final_state: [b, h, n, p])`. Errors: [`Error::Shape`] when a slice's length does not match
/// `dims`, [`Error::InvalidArgument`] for a zero size.
pub fn ssd_ref(dims: SsdDims, x: &SsdRef<'_>) -> Result<(Vec<f64>, Vec<f64>)> {
    let SsdDims {
        batch,
        len,
        heads,
        head_dim: p,
        state: n,
    } = dims;
    if [batch, len, heads, p, n].contains(&0) {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "dims",
            reason: format!("every size must be >= 1, got {dims:?}"),
        });
    }
    let tokens = batch * len * heads;
    check("X", x.x.len(), tokens * p, "[b, l, h, p]")?;
    check("A", x.a.len(), tokens, "[b, l, h]")?;
    check("B", x.b.len(), tokens * n, "[b, l, h, n]")?;
    check("C", x.c.len(), tokens * n, "[b, l, h, n]")?;
    let st = batch * heads * n * p;
    if let Some(h0) = x.initial_state {
        check("initial_state", h0.len(), st, "[b, h, n, p]")?;
    }
    let mut y = vec![0.0; tokens * p];
    let mut state = match x.initial_state {
        Some(h0) => h0.to_vec(),
        None => vec![0.0; st],
    };
    for bi in 0..batch {
        for t in 0..len {
            for hi in 0..heads {
                let tok = (bi * len + t) * heads + hi;
                let decay = x.a[tok].exp();
                let h = &mut state[(bi * heads + hi) * n * p..][..n * p];
                let (xt, bt, ct) = (
                    &x.x[tok * p..][..p],
                    &x.b[tok * n..][..n],
                    &x.c[tok * n..][..n],
                );
                let yt = &mut y[tok * p..][..p];
                for (ni, row) in h.chunks_exact_mut(p).enumerate() {
                    for (pi, s) in row.iter_mut().enumerate() {
                        *s = decay * *s + bt[ni] * xt[pi];
                        yt[pi] += ct[ni] * *s;
                    }
                }
            }
        }
    }
    Ok((y, state))
}

/// Packed sequences (`cu_seqlens`): with b = 1, sequence i is steps `offsets[i]..offsets[i + 1]`
/// of `dims.len`, each run by [`ssd_ref`] from its own initial state (`[N, h, n, p]`, zero when
/// absent). Returns `(Y: [1, l, h, p]` (zero past the last offset), `final_state: [N, h, n, p])`.
/// Errors as [`ssd_ref`], and [`Error::InvalidArgument`] for b ≠ 1 or offsets that are not
/// non-decreasing from 0 within l.
pub fn ssd_ref_varlen(
    dims: SsdDims,
    offsets: &[usize],
    x: &SsdRef<'_>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let SsdDims {
        heads: h,
        head_dim: p,
        state: n,
        ..
    } = dims;
    let ok = dims.batch == 1
        && offsets.len() >= 2
        && offsets[0] == 0
        && offsets.windows(2).all(|w| w[0] <= w[1])
        && offsets[offsets.len() - 1] <= dims.len;
    if !ok {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "cu_seqlens",
            reason: format!("{offsets:?} with {dims:?}"),
        });
    }
    let nseq = offsets.len() - 1;
    let st = h * n * p;
    if let Some(h0) = x.initial_state {
        check("initial_state", h0.len(), nseq * st, "[N, h, n, p]")?;
    }
    let mut y = vec![0.0; dims.len * h * p];
    let mut last = vec![0.0; nseq * st];
    for (i, w) in offsets.windows(2).enumerate() {
        let (t0, t1) = (w[0], w[1]);
        let h0 = x.initial_state.map(|s| &s[i * st..][..st]);
        if t1 == t0 {
            last[i * st..][..st].copy_from_slice(h0.unwrap_or(&vec![0.0; st][..]));
            continue;
        }
        let d = SsdDims {
            len: t1 - t0,
            ..dims
        };
        let r = SsdRef {
            x: &x.x[t0 * h * p..t1 * h * p],
            a: &x.a[t0 * h..t1 * h],
            b: &x.b[t0 * h * n..t1 * h * n],
            c: &x.c[t0 * h * n..t1 * h * n],
            initial_state: h0,
        };
        let (ys, s) = ssd_ref(d, &r)?;
        y[t0 * h * p..t1 * h * p].copy_from_slice(&ys);
        last[i * st..][..st].copy_from_slice(&s);
    }
    Ok((y, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One head, N = P = 1: the scalar recurrence h_t = e^{a_t} h_{t−1} + b_t x_t, y_t = c_t h_t.
    #[test]
    fn scalar_case_by_hand() {
        let dims = SsdDims {
            batch: 1,
            len: 3,
            heads: 1,
            head_dim: 1,
            state: 1,
        };
        let (a, x, b, c) = (
            [0.0, -1.0, -2.0],
            [1.0, 2.0, 3.0],
            [2.0, 1.0, 0.5],
            [1.0, 3.0, -1.0],
        );
        let h0 = [0.5];
        let r = SsdRef {
            x: &x,
            a: &a,
            b: &b,
            c: &c,
            initial_state: Some(&h0),
        };
        let (y, last) = ssd_ref(dims, &r).unwrap();
        let h1 = 0.5 + 2.0;
        let h2 = (-1.0f64).exp() * h1 + 2.0;
        let h3 = (-2.0f64).exp() * h2 + 1.5;
        assert_eq!(y, vec![h1, 3.0 * h2, -h3]);
        assert_eq!(last, vec![h3]);
    }

    #[test]
    fn a_wrong_length_is_a_shape_error() {
        let dims = SsdDims {
            batch: 1,
            len: 2,
            heads: 1,
            head_dim: 1,
            state: 1,
        };
        let r = SsdRef {
            x: &[1.0, 2.0],
            a: &[0.0],
            b: &[1.0, 1.0],
            c: &[1.0, 1.0],
            initial_state: None,
        };
        assert!(matches!(
            ssd_ref(dims, &r),
            Err(Error::Shape { name: "A", .. })
        ));
    }
}
