//! S4D convolution kernel on the CPU in f64 (Gu et al. 2022, *On the Parameterization and
//! Initialization of Diagonal State Space Models*, arXiv 2206.11893, eq. 5 and §3).

use num_complex::Complex64;

use crate::{Error, Result};

/// How the continuous (A, B) is discretised with step Δ (REFERENCES.md, "Discretisation").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Discretization {
    /// Zero-order hold: `Ā = exp(ΔA)`, `B̄ = (exp(ΔA) − 1)/A · B`.
    #[default]
    Zoh,
    /// Bilinear (Tustin): `Ā = (1 − ΔA/2)⁻¹(1 + ΔA/2)`, `B̄ = (1 − ΔA/2)⁻¹ ΔB`.
    Bilinear,
}

/// A diagonal complex SSM in conjugate-pair storage, on the host in f64: `a, b, c: [H, N2]`
/// (row-major), `dt: [H]`, `d: [H]` (the skip term of `y = K ∗ u + D u`). Only one mode of each
/// conjugate pair is stored, so the state size is `N = 2·N2` and `K_l = 2 Re Σ_n C_n B̄_n Ā_n^l`.
/// A real mode (odd N) is not representable as a pair; pass it as a pair with C halved.
#[derive(Clone, Debug, PartialEq)]
pub struct DiagonalSsm {
    pub h: usize,
    pub n2: usize,
    pub a: Vec<Complex64>,
    pub b: Vec<Complex64>,
    pub c: Vec<Complex64>,
    pub dt: Vec<f64>,
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

    /// `(Ā_n, B̄_n)` of every mode, `[H, N2]`, by [`crate::ssm::discretize_diag`] per head.
    /// Errors: non-finite A or B, a bilinear pole (`1 − ΔA/2 = 0`).
    pub fn discretize(&self, disc: Discretization) -> Result<(Vec<Complex64>, Vec<Complex64>)> {
        let method = match disc {
            Discretization::Zoh => crate::ssm::Method::Zoh,
            Discretization::Bilinear => crate::ssm::Method::Bilinear,
        };
        let mut ab = Vec::with_capacity(self.a.len());
        let mut bb = Vec::with_capacity(self.a.len());
        for (h, &dt) in self.dt.iter().enumerate() {
            let r = h * self.n2..(h + 1) * self.n2;
            let (a, b) = crate::ssm::discretize_diag(&self.a[r.clone()], &self.b[r], dt, method)?;
            ab.extend(a);
            bb.extend(b);
        }
        Ok((ab, bb))
    }
}

/// S4D kernel `K: [H, L]`, `K[h, l] = 2 Re Σ_n C_n B̄_n Ā_n^l` (l = 0..L−1), f64. `Ā^l` is taken
/// by `powu` (binary powering), independent of the GPU's reduced-phase exponentials.
pub fn s4d_kernel(ssm: &DiagonalSsm, len: usize, disc: Discretization) -> Result<Vec<f64>> {
    ssm.check("s4d_kernel")?;
    let (ab, bb) = ssm.discretize(disc)?;
    let mut k = vec![0.0; ssm.h * len];
    for h in 0..ssm.h {
        for n in 0..ssm.n2 {
            let i = h * ssm.n2 + n;
            let w = ssm.c[i] * bb[i];
            for (l, kl) in k[h * len..(h + 1) * len].iter_mut().enumerate() {
                *kl += 2.0 * (w * ab[i].powu(l as u32)).re;
            }
        }
    }
    Ok(k)
}
