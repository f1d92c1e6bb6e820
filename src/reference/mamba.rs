//! The Mamba selective scan (S6) in f64, written from the recurrence of Gu & Dao 2023, *Mamba:
//! Linear-Time Sequence Modeling with Selective State Spaces* (arXiv 2312.00752), Algorithm 2 and
//! eqs. 2a–2b with the ZOH-for-A / Euler-for-B discretisation of §3.5 (the one mamba's
//! `selective_scan_ref` uses), with that function's argument names and layout:
//!
//! ```text
//! Δ_t   = softplus(delta[b, d, t] + delta_bias[d])   (softplus only with delta_softplus)
//! h_t   = exp(Δ_t A[d, n]) h_{t−1} + Δ_t B[b, n, t] u[b, d, t]          (Ā = exp(ΔA), B̄ = ΔB)
//! y_t   = Σ_n C[b, n, t] h_t[n] + D[d] u[b, d, t]
//! out_t = y_t · silu(z[b, d, t])                      (only when z is given)
//! ```
//!
//! with `h_{−1}` = `initial_state[b, d, :]` (zeros when absent); `last_state[b, d, :]` = `h_{L−1}`.

use crate::{Error, Result};

const OP: &str = "selective_scan_ref";

/// The sizes of a selective scan: batch B, channels D, state size N, length L.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanDims {
    /// Batch B.
    pub batch: usize,
    /// Channels D.
    pub dim: usize,
    /// State size N.
    pub state: usize,
    /// Length L.
    pub len: usize,
}

/// The inputs, flat row-major f64, named as in mamba's `selective_scan_ref`.
#[derive(Clone, Copy, Debug)]
pub struct SelectiveScanRef<'a> {
    /// `u: [B, D, L]`.
    pub u: &'a [f64],
    /// `delta: [B, D, L]` (Δ before bias and softplus).
    pub delta: &'a [f64],
    /// `A: [D, N]`, real (Mamba's `−exp(A_log)`: negative for a decaying state).
    pub a: &'a [f64],
    /// `B: [B, N, L]` (input-dependent, shared by the D channels).
    pub b: &'a [f64],
    /// `C: [B, N, L]`.
    pub c: &'a [f64],
    /// `D: [D]`, the skip term.
    pub d: Option<&'a [f64]>,
    /// `z: [B, D, L]`, the gate.
    pub z: Option<&'a [f64]>,
    /// `delta_bias: [D]`.
    pub delta_bias: Option<&'a [f64]>,
    /// Apply softplus to Δ + bias (Mamba's default).
    pub delta_softplus: bool,
    /// `initial_state: [B, D, N]`.
    pub initial_state: Option<&'a [f64]>,
}

/// `ln(1 + eᵡ)`, exact in f64 over the whole range.
pub fn softplus(x: f64) -> f64 {
    if x > 40.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// `z · σ(z)`.
pub fn silu(z: f64) -> f64 {
    z / (1.0 + (-z).exp())
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

impl SelectiveScanRef<'_> {
    fn check(&self, s: ScanDims) -> Result<()> {
        if [s.batch, s.dim, s.state, s.len].contains(&0) {
            return Err(Error::InvalidArgument {
                op: OP,
                name: "dims",
                reason: format!("every size must be >= 1, got {s:?}"),
            });
        }
        let x = s.batch * s.dim * s.len;
        let bc = s.batch * s.state * s.len;
        check("u", self.u.len(), x, "[B, D, L]")?;
        check("delta", self.delta.len(), x, "[B, D, L]")?;
        check("A", self.a.len(), s.dim * s.state, "[D, N]")?;
        check("B", self.b.len(), bc, "[B, N, L]")?;
        check("C", self.c.len(), bc, "[B, N, L]")?;
        for (name, t, n, sh) in [
            ("D", self.d, s.dim, "[D]"),
            ("z", self.z, x, "[B, D, L]"),
            ("delta_bias", self.delta_bias, s.dim, "[D]"),
            (
                "initial_state",
                self.initial_state,
                s.batch * s.dim * s.state,
                "[B, D, N]",
            ),
        ] {
            if let Some(t) = t {
                check(name, t.len(), n, sh)?;
            }
        }
        Ok(())
    }
}

/// The selective scan of [`SelectiveScanRef`] sequentially in f64. Returns `(out: [B, D, L],
/// last_state: [B, D, N])`. Errors: [`Error::Shape`] when a slice's length does not match `dims`,
/// [`Error::InvalidArgument`] for a zero size.
pub fn selective_scan_ref(
    dims: ScanDims,
    x: &SelectiveScanRef<'_>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    x.check(dims)?;
    let ScanDims {
        batch,
        dim,
        state: n,
        len,
    } = dims;
    let mut out = vec![0.0; batch * dim * len];
    let mut last = vec![0.0; batch * dim * n];
    for b in 0..batch {
        for d in 0..dim {
            let row = (b * dim + d) * len;
            let st = (b * dim + d) * n;
            let mut h: Vec<f64> = match x.initial_state {
                Some(h0) => h0[st..st + n].to_vec(),
                None => vec![0.0; n],
            };
            for t in 0..len {
                let mut dt = x.delta[row + t] + x.delta_bias.map_or(0.0, |v| v[d]);
                if x.delta_softplus {
                    dt = softplus(dt);
                }
                let u = x.u[row + t];
                let mut y = 0.0;
                for (k, hk) in h.iter_mut().enumerate() {
                    let bc = (b * n + k) * len + t;
                    *hk = (dt * x.a[d * n + k]).exp() * *hk + dt * x.b[bc] * u;
                    y += x.c[bc] * *hk;
                }
                y += x.d.map_or(0.0, |v| v[d]) * u;
                if let Some(z) = x.z {
                    y *= silu(z[row + t]);
                }
                out[row + t] = y;
            }
            last[st..st + n].copy_from_slice(&h);
        }
    }
    Ok((out, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One channel, one state, A = ln(1/2), Δ = 1: h halves each step and adds B u.
    #[test]
    fn a_hand_computed_case() {
        let dims = ScanDims {
            batch: 1,
            dim: 1,
            state: 1,
            len: 3,
        };
        let x = SelectiveScanRef {
            u: &[1.0, 2.0, 3.0],
            delta: &[1.0; 3],
            a: &[0.5f64.ln()],
            b: &[1.0, 1.0, 2.0],
            c: &[1.0, 2.0, 1.0],
            d: Some(&[10.0]),
            z: None,
            delta_bias: None,
            delta_softplus: false,
            initial_state: Some(&[4.0]),
        };
        let (out, last) = selective_scan_ref(dims, &x).unwrap();
        // h: 0.5·4 + 1 = 3; 1.5 + 2 = 3.5; 1.75 + 6 = 7.75.
        let want = [3.0 + 10.0, 2.0 * 3.5 + 20.0, 7.75 + 30.0];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-12, "{out:?} vs {want:?}");
        }
        assert!((last[0] - 7.75).abs() < 1e-12);
    }

    #[test]
    fn softplus_and_silu_are_exact_at_the_extremes() {
        assert_eq!(softplus(100.0), 100.0);
        assert!((softplus(-50.0) - (-50f64).exp()).abs() < 1e-30);
        assert!((softplus(0.0) - 2f64.ln()).abs() < 1e-15);
        assert_eq!(silu(-1000.0), -0.0);
        assert!((silu(1.0) - 1.0 / (1.0 + (-1f64).exp())).abs() < 1e-15);
    }

    #[test]
    fn a_wrong_length_is_a_shape_error() {
        let dims = ScanDims {
            batch: 1,
            dim: 2,
            state: 1,
            len: 2,
        };
        let x = SelectiveScanRef {
            u: &[0.0; 4],
            delta: &[0.0; 4],
            a: &[0.0; 2],
            b: &[0.0; 2],
            c: &[0.0; 3],
            d: None,
            z: None,
            delta_bias: None,
            delta_softplus: true,
            initial_state: None,
        };
        assert!(matches!(
            selective_scan_ref(dims, &x),
            Err(Error::Shape { name: "C", .. })
        ));
    }
}
