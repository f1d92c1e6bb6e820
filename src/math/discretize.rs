//! Discretisation of `ẋ = A x + B u` with step Δ into `x_k = Ā x_{k−1} + B̄ u_k`, f64 on the host.
//!
//! | method | `Ā` | `B̄` |
//! |---|---|---|
//! | forward Euler | `I + ΔA` | `ΔB` |
//! | backward Euler | `(I − ΔA)⁻¹` | `(I − ΔA)⁻¹ ΔB` |
//! | bilinear (Tustin) | `(I − ΔA/2)⁻¹ (I + ΔA/2)` | `(I − ΔA/2)⁻¹ ΔB` |
//! | zero-order hold | `exp(ΔA)` | `A⁻¹ (exp(ΔA) − I) B` |
//!
//! The same as scipy.signal.cont2discrete's `euler`, `backward_diff`, `bilinear` and `zoh`
//! (checked against it in `tests/suite/discretize.rs`). Dense ZOH takes both blocks from the exponential
//! of `[[A, B], [0, 0]]·Δ` (Van Loan), which needs no inverse of `A` and so works for singular `A`.
//! Diagonal complex ZOH uses `expm1`, so `B̄ = (e^{ΔA} − 1)/A · B` keeps its digits when `ΔA` is tiny.

use nalgebra::DMatrix;
use num_complex::Complex64;

use crate::{Error, Result};

/// The discretisation rule under the name this module has always used.
pub type Method = Discretization;

/// How the continuous `(A, B)` is discretised with step Δ (REFERENCES.md, "Discretisation"); the
/// one discretisation rule of the crate ([`Method`] is another name for it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Discretization {
    /// Forward Euler: `Ā = I + ΔA`, `B̄ = ΔB`.
    Euler,
    /// Backward Euler (scipy's `backward_diff`): `Ā = (I − ΔA)⁻¹`, `B̄ = (I − ΔA)⁻¹ ΔB`.
    BackwardEuler,
    /// Bilinear (Tustin): `Ā = (1 − ΔA/2)⁻¹(1 + ΔA/2)`, `B̄ = (1 − ΔA/2)⁻¹ ΔB`.
    Bilinear,
    /// Zero-order hold: `Ā = exp(ΔA)`, `B̄ = (exp(ΔA) − 1)/A · B`.
    #[default]
    Zoh,
}

impl Discretization {
    /// Parses `zoh | bilinear | euler | backward-euler` (also `tustin`, `backward_diff`).
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "zoh" => Discretization::Zoh,
            "bilinear" | "tustin" => Discretization::Bilinear,
            "euler" | "forward-euler" => Discretization::Euler,
            "backward-euler" | "backward_euler" | "backward_diff" => Discretization::BackwardEuler,
            _ => {
                return Err(Error::InvalidArgument {
                    op: "discretize",
                    name: "method",
                    reason: format!("{s:?} is not one of zoh, bilinear, euler, backward-euler"),
                })
            }
        })
    }

    /// α of the generalised bilinear transform `Ā = (I − αΔA)⁻¹ (I + (1−α)ΔA)`, `B̄ = (I − αΔA)⁻¹ ΔB`
    /// (None for ZOH, which is not of that form).
    pub fn gbt_alpha(self) -> Option<f64> {
        match self {
            Discretization::Euler => Some(0.0),
            Discretization::BackwardEuler => Some(1.0),
            Discretization::Bilinear => Some(0.5),
            Discretization::Zoh => None,
        }
    }
}

const OP: &str = "discretize";

pub(crate) fn check_dt(op: &'static str, dt: f64) -> Result<()> {
    if !(dt.is_finite() && dt > 0.0) {
        return Err(Error::InvalidArgument {
            op,
            name: "dt",
            reason: format!("{dt} is not a finite step > 0"),
        });
    }
    Ok(())
}

fn check_finite(name: &'static str, x: impl Iterator<Item = f64>) -> Result<()> {
    for (index, v) in x.enumerate() {
        if v.is_nan() {
            return Err(Error::NaN {
                op: OP,
                name: name.into(),
                index,
            });
        }
        if !v.is_finite() {
            return Err(Error::InvalidArgument {
                op: OP,
                name,
                reason: format!("element {index} is {v}"),
            });
        }
    }
    Ok(())
}

/// Discretises a dense real system: `a: [N, N]`, `b: [N, M]` row-major -> `(Ā: [N, N], B̄: [N, M])`.
///
/// Errors: [`Error::Shape`] when the lengths do not match `n`, `m`; [`Error::InvalidArgument`] for
/// `n = 0`, a step that is not finite and > 0, an infinite entry, or a singular `I − αΔA`;
/// [`Error::NaN`] for a NaN entry.
pub fn discretize(
    a: &[f64],
    b: &[f64],
    n: usize,
    m: usize,
    dt: f64,
    method: Method,
) -> Result<(Vec<f64>, Vec<f64>)> {
    if n == 0 || a.len() != n * n {
        return Err(Error::Shape {
            op: OP,
            name: "A",
            expected: "[N, N] with N >= 1".into(),
            got: vec![a.len()],
        });
    }
    if b.len() != n * m {
        return Err(Error::Shape {
            op: OP,
            name: "B",
            expected: format!("[{n}, {m}]"),
            got: vec![b.len()],
        });
    }
    check_dt(OP, dt)?;
    check_finite("A", a.iter().copied())?;
    check_finite("B", b.iter().copied())?;
    let am = DMatrix::from_row_slice(n, n, a);
    let bm = DMatrix::from_row_slice(n, m, b);
    let (ad, bd) = match method.gbt_alpha() {
        Some(alpha) => {
            let id = DMatrix::<f64>::identity(n, n);
            let lhs = &id - &am * (alpha * dt);
            let rhs_a = &id + &am * ((1.0 - alpha) * dt);
            let lu = lhs.lu();
            let singular = || Error::InvalidArgument {
                op: OP,
                name: "A",
                reason: format!("I − {alpha}·dt·A is singular"),
            };
            if alpha == 0.0 {
                (rhs_a, &bm * dt)
            } else {
                let ad = lu.solve(&rhs_a).ok_or_else(singular)?;
                let bd = lu.solve(&(&bm * dt)).ok_or_else(singular)?;
                (ad, bd)
            }
        }
        None => {
            let mut big = DMatrix::<f64>::zeros(n + m, n + m);
            big.view_mut((0, 0), (n, n)).copy_from(&(&am * dt));
            big.view_mut((0, n), (n, m)).copy_from(&(&bm * dt));
            let e = big.exp();
            (
                e.view((0, 0), (n, n)).into_owned(),
                e.view((0, n), (n, m)).into_owned(),
            )
        }
    };
    let row_major = |x: &DMatrix<f64>| x.transpose().as_slice().to_vec();
    Ok((row_major(&ad), row_major(&bd)))
}

/// `e^z − 1` for complex `z` without cancellation when `|z|` is tiny.
pub fn expm1(z: Complex64) -> Complex64 {
    let (x, y) = (z.re, z.im);
    let em1 = x.exp_m1();
    let half = (0.5 * y).sin();
    // e^x cos y − 1 = expm1(x) cos y − 2 sin²(y/2)
    Complex64::new(em1 * y.cos() - 2.0 * half * half, x.exp() * y.sin())
}

/// Discretises a diagonal complex system, elementwise: `a, b: [N]` (the diagonal of `A` and the
/// matching entries of `B`) -> `(Ā: [N], B̄: [N])`. ZOH: `Ā = e^{ΔA}`, `B̄ = expm1(ΔA)/(ΔA) · ΔB`
/// (`ΔB` where `A = 0`).
///
/// Errors: [`Error::Shape`] for unequal lengths, [`Error::InvalidArgument`] for a bad step or a
/// pole at `1 − αΔA = 0`, [`Error::NaN`] for NaN entries.
pub fn discretize_diag(
    a: &[Complex64],
    b: &[Complex64],
    dt: f64,
    method: Method,
) -> Result<(Vec<Complex64>, Vec<Complex64>)> {
    if b.len() != a.len() {
        return Err(Error::Shape {
            op: OP,
            name: "B",
            expected: format!("[{}] (the length of A)", a.len()),
            got: vec![b.len()],
        });
    }
    check_dt(OP, dt)?;
    check_finite("A", a.iter().flat_map(|z| [z.re, z.im]))?;
    check_finite("B", b.iter().flat_map(|z| [z.re, z.im]))?;
    let mut ad = Vec::with_capacity(a.len());
    let mut bd = Vec::with_capacity(a.len());
    for (i, (&ai, &bi)) in a.iter().zip(b).enumerate() {
        let z = ai * dt;
        let (x, y) = match method.gbt_alpha() {
            Some(alpha) => {
                let den = Complex64::new(1.0, 0.0) - z * alpha;
                if den.norm() == 0.0 {
                    return Err(Error::InvalidArgument {
                        op: OP,
                        name: "A",
                        reason: format!("1 − {alpha}·dt·A[{i}] is zero"),
                    });
                }
                ((1.0 + z * (1.0 - alpha)) / den, bi * dt / den)
            }
            None => {
                let ratio = if z.norm() == 0.0 {
                    Complex64::new(1.0, 0.0)
                } else {
                    expm1(z) / z
                };
                (z.exp(), ratio * bi * dt)
            }
        };
        ad.push(x);
        bd.push(y);
    }
    Ok((ad, bd))
}
