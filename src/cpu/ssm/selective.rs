//! The Mamba selective scan (S6) on the CPU path (Gu & Dao 2023, arXiv 2312.00752, Algorithm 2,
//! eqs. 2a–2b with ZOH for A and Euler for B, as mamba's `selective_scan_ref`):
//! `Δ_t = softplus(δ_t + bias)`, `h_t = exp(Δ_t A) h_{t−1} + Δ_t B_t u_t`,
//! `y_t = C_t·h_t + D u_t`, times `silu(z_t)` when z is given.
//!
//! One sequential f32 recurrence per (batch, channel) row, rows in parallel (rayon); B and C are
//! transposed once per batch to `[L, N]` so that each step reads one contiguous N-vector.

use rayon::prelude::*;

use crate::cpu::load;
pub use crate::reference::mamba::ScanDims;
use crate::{Element, Error, Result};

const OP: &str = "cpu::selective_scan";

/// Host inputs of [`selective_scan`]: the fields and layouts of
/// [`crate::ssm::SelectiveScanInputs`], as slices.
#[derive(Clone, Copy)]
pub struct SelectiveScanHost<'a, T: Element> {
    /// `u: [B, D, L]`.
    pub u: &'a [T],
    /// `delta: [B, D, L]`, Δ before `delta_bias` and softplus.
    pub delta: &'a [T],
    /// `A: [D, N]`, real (≤ 0 for a decaying state).
    pub a: &'a [T],
    /// `B: [B, N, L]`.
    pub b: &'a [T],
    /// `C: [B, N, L]`.
    pub c: &'a [T],
    /// `D: [D]`, the skip term `D u`.
    pub d: Option<&'a [T]>,
    /// `z: [B, D, L]`: the output is multiplied by `silu(z)`.
    pub z: Option<&'a [T]>,
    /// `delta_bias: [D]`, added to Δ before the softplus.
    pub delta_bias: Option<&'a [T]>,
    /// Δ ← softplus(Δ) (= ln(1 + e^Δ)).
    pub delta_softplus: bool,
    /// `initial_state: [B, D, N]` (zero when absent).
    pub initial_state: Option<&'a [f32]>,
}

impl<'a, T: Element> SelectiveScanHost<'a, T> {
    /// The required inputs; D, z, delta_bias, softplus and the initial state off.
    pub fn new(u: &'a [T], delta: &'a [T], a: &'a [T], b: &'a [T], c: &'a [T]) -> Self {
        Self {
            u,
            delta,
            a,
            b,
            c,
            d: None,
            z: None,
            delta_bias: None,
            delta_softplus: false,
            initial_state: None,
        }
    }

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
        let st = s.batch * s.dim * s.state;
        let opt = |t: Option<&[T]>| t.map(<[T]>::len);
        for (name, got, want, shape) in [
            ("u", Some(self.u.len()), x, "[B, D, L]"),
            ("delta", Some(self.delta.len()), x, "[B, D, L]"),
            ("A", Some(self.a.len()), s.dim * s.state, "[D, N]"),
            ("B", Some(self.b.len()), bc, "[B, N, L]"),
            ("C", Some(self.c.len()), bc, "[B, N, L]"),
            ("D", opt(self.d), s.dim, "[D]"),
            ("z", opt(self.z), x, "[B, D, L]"),
            ("delta_bias", opt(self.delta_bias), s.dim, "[D]"),
            (
                "initial_state",
                self.initial_state.map(<[f32]>::len),
                st,
                "[B, D, N]",
            ),
        ] {
            if let Some(got) = got.filter(|&g| g != want) {
                return Err(Error::Shape {
                    op: OP,
                    name,
                    expected: format!("{want} elements ({shape})"),
                    got: vec![got],
                });
            }
        }
        Ok(())
    }
}

/// `ln(1 + eˣ)` in f32 (x past 20: x, where e^−x is below f32's rounding of x).
fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// `[N, L]` → `[L, N]`.
fn transpose(x: &[f32], n: usize, l: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; n * l];
    for (k, row) in x.chunks_exact(l).enumerate() {
        for (s, &v) in row.iter().enumerate() {
            t[s * n + k] = v;
        }
    }
    t
}

/// The selective scan: `out: [B, D, L]` in T (f32 arithmetic and state) and
/// `last_state: [B, D, N]` f32. Errors: [`Error::InvalidArgument`] for a zero size,
/// [`Error::Shape`] when a slice's length does not fit `dims`.
pub fn selective_scan<T: Element>(
    dims: ScanDims,
    x: &SelectiveScanHost<'_, T>,
) -> Result<(Vec<T>, Vec<f32>)> {
    x.check(dims)?;
    let ScanDims {
        batch,
        dim,
        state: n,
        len: l,
    } = dims;
    let (u, delta, a) = (load(x.u), load(x.delta), load(x.a));
    let (d, z, bias) = (x.d.map(load), x.z.map(load), x.delta_bias.map(load));
    let (bt, ct): (Vec<Vec<f32>>, Vec<Vec<f32>>) = (0..batch)
        .into_par_iter()
        .map(|b| {
            let t = |m: &[T]| transpose(&load(&m[b * n * l..][..n * l]), n, l);
            (t(x.b), t(x.c))
        })
        .unzip();
    let mut out = vec![T::from_f64(0.0); batch * dim * l];
    let mut last = vec![0.0f32; batch * dim * n];
    out.par_chunks_mut(l)
        .zip(last.par_chunks_mut(n))
        .enumerate()
        .for_each(|(r, (o, h))| {
            let (b, ch) = (r / dim, r % dim);
            match x.initial_state {
                Some(h0) => h.copy_from_slice(&h0[r * n..][..n]),
                None => h.fill(0.0),
            }
            let ar = &a[ch * n..][..n];
            let skip = d.as_ref().map_or(0.0, |d| d[ch]);
            let bias = bias.as_ref().map_or(0.0, |v| v[ch]);
            for (t, ot) in o.iter_mut().enumerate() {
                let mut dt = delta[r * l + t] + bias;
                if x.delta_softplus {
                    dt = softplus(dt);
                }
                let ut = u[r * l + t];
                let (bs, cs) = (&bt[b][t * n..][..n], &ct[b][t * n..][..n]);
                let mut y = 0.0f32;
                for k in 0..n {
                    h[k] = (dt * ar[k]).exp() * h[k] + dt * bs[k] * ut;
                    y += cs[k] * h[k];
                }
                y += skip * ut;
                if let Some(z) = &z {
                    let zt = z[r * l + t];
                    y *= zt / (1.0 + (-zt).exp());
                }
                *ot = T::from_f64(y as f64);
            }
        });
    Ok((out, last))
}
