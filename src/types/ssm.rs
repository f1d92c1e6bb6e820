//! Host-side SSM parameters, options and their checks, shared by the GPU ops ([`crate::ssm`]) and
//! the CPU reference ([`crate::reference::ssm`]).

use num_complex::Complex64;

use crate::math::discretize::{check_dt, discretize, discretize_diag};
use crate::math::hippo::{hippo, Measure};
use crate::{Error, Result};

pub use crate::math::discretize::Discretization;
pub use crate::math::dplr::DplrSsm;

/// A diagonal complex SSM in conjugate-pair storage, on the host in f64: `a, b, c: [H, N2]`
/// (row-major), `dt: [H]`, `d: [H]` (the skip term of `y = K ∗ u + D u`). Only one mode of each
/// conjugate pair is stored, so the state size is `N = 2·N2` and `K_l = 2 Re Σ_n C_n B̄_n Ā_n^l`.
/// A real mode (odd N) is not representable as a pair; pass it as a pair with C halved.
#[derive(Clone, Debug, PartialEq)]
pub struct DiagonalSsm {
    /// Heads H.
    pub h: usize,
    /// Stored modes per head N2 (state size N = 2·N2).
    pub n2: usize,
    /// A, continuous-time: `[H, N2]`.
    pub a: Vec<Complex64>,
    /// B: `[H, N2]`.
    pub b: Vec<Complex64>,
    /// C: `[H, N2]`.
    pub c: Vec<Complex64>,
    /// Step Δ per head, > 0: `[H]`.
    pub dt: Vec<f64>,
    /// Skip term D per head: `[H]`.
    pub d: Vec<f64>,
}

impl DiagonalSsm {
    /// Checks the lengths against `h`, `n2` and that Δ is finite and > 0.
    pub fn check(&self, op: &'static str) -> Result<()> {
        let (h, n2) = (self.h, self.n2);
        if h == 0 || n2 == 0 {
            return Err(Error::InvalidArgument {
                op,
                name: "h, n2",
                reason: format!("H = {h} and N2 = {n2} must both be >= 1"),
            });
        }
        for (name, len, want) in [
            ("A", self.a.len(), h * n2),
            ("B", self.b.len(), h * n2),
            ("C", self.c.len(), h * n2),
            ("dt", self.dt.len(), h),
            ("D", self.d.len(), h),
        ] {
            if len != want {
                return Err(Error::Shape {
                    op,
                    name,
                    expected: format!("{want} elements ([H, N2] = [{h}, {n2}] or [H])"),
                    got: vec![len],
                });
            }
        }
        if let Some(i) = self.dt.iter().position(|x| !(x.is_finite() && *x > 0.0)) {
            return Err(Error::InvalidArgument {
                op,
                name: "dt",
                reason: format!("dt[{i}] = {} is not a finite number > 0", self.dt[i]),
            });
        }
        Ok(())
    }

    /// `(Ā_n, B̄_n)` of every mode, `[H, N2]`, by [`discretize_diag`] per head.
    /// Errors: non-finite A or B, a bilinear pole (`1 − ΔA/2 = 0`).
    pub fn discretize(&self, disc: Discretization) -> Result<(Vec<Complex64>, Vec<Complex64>)> {
        let mut ab = Vec::with_capacity(self.a.len());
        let mut bb = Vec::with_capacity(self.a.len());
        for (h, &dt) in self.dt.iter().enumerate() {
            let r = h * self.n2..(h + 1) * self.n2;
            let (a, b) = discretize_diag(&self.a[r.clone()], &self.b[r], dt, disc)?;
            ab.extend(a);
            bb.extend(b);
        }
        Ok((ab, bb))
    }
}

/// Initialisations of the diagonal A (S4D paper §4), `N = 2·N2` the state size, `n = 0..N2−1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S4dInit {
    /// `A_n = −1/2 + iπn`.
    Lin,
    /// `A_n = −1/2 + i(N/π)(N/(2n+1) − 1)`.
    Inv,
    /// The eigenvalues of the normal part of HiPPO-LegS, `−1/2 + iσ_n` with `σ_n > 0`, ascending.
    LegS,
}

/// The `N2` diagonal entries of A for one head under `init` (the same for every head).
/// Errors: [`Error::InvalidArgument`] for `n2 = 0`.
pub fn s4d_init(init: S4dInit, n2: usize) -> Result<Vec<Complex64>> {
    if n2 == 0 {
        return Err(Error::InvalidArgument {
            op: "s4d_init",
            name: "n2",
            reason: "N2 must be >= 1".into(),
        });
    }
    let n = (2 * n2) as f64;
    let pi = std::f64::consts::PI;
    Ok(match init {
        S4dInit::Lin => (0..n2)
            .map(|j| Complex64::new(-0.5, pi * j as f64))
            .collect(),
        S4dInit::Inv => (0..n2)
            .map(|j| Complex64::new(-0.5, n / pi * (n / (2 * j + 1) as f64 - 1.0)))
            .collect(),
        S4dInit::LegS => crate::math::eigen::legs_normal_eigenvalues(2 * n2)
            .into_iter()
            .map(|s| Complex64::new(-0.5, s))
            .collect(),
    })
}

/// Largest state for a fixed step: `2·N` f32 of workgroup memory within the 16 KiB default.
pub const MAX_FIXED_N: usize = 2048;

/// How time advances per sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Step {
    /// Δ = 1/k at step k: LegS's scale-invariant memory over the whole history.
    Scaled,
    /// The same Δ at every step (a time-invariant system).
    Fixed(f64),
}

/// Options for [`hippo_approx`](fn@crate::ssm::hippo_approx) and [`crate::reference::ssm::hippo_approx`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HippoApproxOptions {
    /// State size N >= 1.
    pub n: usize,
    /// The HiPPO measure.
    pub measure: Measure,
    /// Window θ of LegT and FouT, in the same time unit as the step.
    pub theta: f64,
    /// Step rule: scaled (LegS) or a fixed Δ.
    pub step: Step,
    /// Discretisation rule (default bilinear). [`Step::Scaled`] takes Euler, backward Euler or
    /// bilinear; [`Step::Fixed`] also ZOH.
    pub method: Discretization,
}

impl Default for HippoApproxOptions {
    fn default() -> Self {
        Self {
            n: 64,
            measure: Measure::LegS,
            theta: 1.0,
            step: Step::Scaled,
            method: Discretization::Bilinear,
        }
    }
}

/// Validates `opts` (see [`HippoApproxOptions`]).
pub fn check_options(op: &'static str, opts: &HippoApproxOptions) -> Result<()> {
    let bad = |name, reason: String| Err(Error::InvalidArgument { op, name, reason });
    if opts.n == 0 {
        return bad("n", "the state size must be >= 1".into());
    }
    match opts.step {
        Step::Scaled if opts.measure != Measure::LegS => bad(
            "step",
            format!(
                "the scaled step 1/k is LegS's; {:?} takes a fixed dt",
                opts.measure
            ),
        ),
        Step::Scaled if opts.method == Discretization::Zoh => bad(
            "method",
            "the scaled step takes euler, backward-euler or bilinear".into(),
        ),
        Step::Fixed(dt) => check_dt(op, dt),
        Step::Scaled => Ok(()),
    }?;
    if matches!(opts.measure, Measure::LegT | Measure::FouT)
        && !(opts.theta.is_finite() && opts.theta > 0.0)
    {
        return bad(
            "theta",
            format!("{} is not a finite window > 0", opts.theta),
        );
    }
    Ok(())
}

/// `(B, L)` of a signal tensor `f: [L]` or `[B, L]`, and the output shape.
pub fn check_shape(op: &'static str, f: &[usize], n: usize) -> Result<(usize, usize, Vec<usize>)> {
    let (b, l) = match *f {
        [l] => (1, l),
        [b, l] => (b, l),
        _ => (0, 0),
    };
    if b == 0 || l == 0 {
        return Err(Error::Shape {
            op,
            name: "f",
            expected: "[L] or [B, L] with every dim >= 1".into(),
            got: f.to_vec(),
        });
    }
    let mut out = f.to_vec();
    out.push(n);
    Ok((b, l, out))
}

/// The times of samples `0 .. len` and the current time after the last one: sample `j` sits at
/// `x = j + 1` (scaled step, in samples) or `x = (j + 1)·Δ` (fixed step); `t` is the last of them.
/// Feed these to [`crate::math::hippo::reconstruct`] with the coefficients `c[len − 1]`.
pub fn sample_grid(step: Step, len: usize) -> (Vec<f64>, f64) {
    let unit = match step {
        Step::Scaled => 1.0,
        Step::Fixed(dt) => dt,
    };
    let xs: Vec<f64> = (1..=len).map(|k| k as f64 * unit).collect();
    (xs, len as f64 * unit)
}

/// `(Ā: [N, N], B̄: [N])` for a fixed step, f64.
pub fn fixed_step_matrices(opts: &HippoApproxOptions, dt: f64) -> Result<(Vec<f64>, Vec<f64>)> {
    let ss = hippo(opts.measure, opts.n, opts.theta)?;
    discretize(&ss.a, &ss.b, ss.n, 1, dt, opts.method)
}
