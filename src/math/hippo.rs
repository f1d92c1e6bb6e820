//! HiPPO transition matrices (Gu et al. 2020, *HiPPO: Recurrent Memory with Optimal Polynomial
//! Projections*, arXiv 2008.07669, §2-3 and Appendix D) and reconstruction from coefficients.
//!
//! Sign convention (S4's): `A` carries the minus sign, the memory obeys `ċ(t) = A c(t) + B f(t)`
//! for the time-invariant measures and `ċ(t) = (1/t) (A c(t) + B f(t))` for LegS. Every basis is
//! orthonormal under its measure, so `c_n(t) = ⟨f, g_n⟩` and `f ≈ Σ_n c_n g_n` on the measure's
//! support. Matrices are f64, row-major, `A: [N, N]`, `B: [N]` (one input).
//!
//! | measure | support | basis `g_n(x)` | `A_nk` | `B_n` |
//! |---|---|---|---|---|
//! | LegS | `[0, t]`, weight `1/t` | `√(2n+1) P_n(2x/t − 1)` | `−√(2n+1)√(2k+1)` (n > k), `−(n+1)` (n = k), 0 | `√(2n+1)` |
//! | LegT | `[t−θ, t]`, weight `1/θ` | `√(2n+1) P_n(2(x−t)/θ + 1)` | `−√(2n+1)√(2k+1)/θ · (1 if k < n, (−1)^(n−k) if k ≥ n)` | `√(2n+1)/θ` |
//! | LagT | `(−∞, t]`, weight 1 | `L_n(t−x) e^{−(t−x)/2}` | `−1` (k < n), `−1/2` (k = n), 0 | `1` |
//! | FouT | `[t−θ, t]`, weight `1/θ` | `1, √2 cos(2πk s), √2 sin(2πk s)`, `s = (x−t)/θ` | `−e eᵀ/θ` + rotation `±2πk/θ` | `e/θ` |
//!
//! LegS, LagT: the ODE is exact for every `f`. LegT, FouT: the value `f(t−θ)` leaving the window is
//! replaced by its reconstruction (the paper's approximation), exact when `f` lies in the span.
//! LegT and LagT follow the conventions of state-spaces/s4 `hippo.py::transition` (`legt` with
//! θ = 1 up to any constant time rescale a version of that file applies; `lagt` with β = 1);
//! tests/data/hippo_numpy.txt is an independent numpy transcription of them. FouT orders the
//! basis `[1, cos 1, sin 1, cos 2, sin 2, …]` with `e = [1, √2, 0, √2, 0, …]`, derived here from the
//! paper's recipe (window `[t−θ, t]`, frequencies `2πk/θ`); s4's `fout` orders and scales its
//! states differently, so its matrices are not ours.

use crate::{Error, Result};

const OP: &str = "hippo";

/// A HiPPO measure (the family of projections the memory keeps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Measure {
    /// Scaled Legendre: uniform over the whole history `[0, t]` (time-varying ODE).
    LegS,
    /// Translated Legendre: uniform over the sliding window `[t − θ, t]`.
    LegT,
    /// Translated Laguerre: exponentially decaying over `(−∞, t]`.
    LagT,
    /// Translated Fourier: uniform over the sliding window `[t − θ, t]`.
    FouT,
}

impl Measure {
    /// Parses `legs | legt | lagt | fout` (case-insensitive).
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "legs" => Measure::LegS,
            "legt" => Measure::LegT,
            "lagt" => Measure::LagT,
            "fout" => Measure::FouT,
            _ => {
                return Err(Error::InvalidArgument {
                    op: OP,
                    name: "measure",
                    reason: format!("{s:?} is not one of legs, legt, lagt, fout"),
                })
            }
        })
    }

    /// Whether the measure's ODE has constant coefficients (all but LegS).
    pub fn time_invariant(self) -> bool {
        self != Measure::LegS
    }
}

/// A continuous state space `ċ = A c + B f`: `a: [N, N]` and `b: [N, M]`, row-major f64.
#[derive(Clone, Debug, PartialEq)]
pub struct StateSpace {
    /// State size N.
    pub n: usize,
    /// Number of inputs (columns of `b`).
    pub m: usize,
    /// A: `[N, N]`, row-major.
    pub a: Vec<f64>,
    /// B: `[N, M]`, row-major.
    pub b: Vec<f64>,
}

fn check_n(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "n",
            reason: "the state size must be >= 1".into(),
        });
    }
    Ok(())
}

fn check_theta(theta: f64) -> Result<()> {
    if !(theta.is_finite() && theta > 0.0) {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "theta",
            reason: format!("{theta} is not a finite window length > 0"),
        });
    }
    Ok(())
}

/// `(A: [N, N], B: [N, 1])` of `measure` with `N = n >= 1` states; `theta` is the window length of
/// LegT and FouT (ignored by LegS and LagT). See the module docs for the convention.
///
/// Errors: [`Error::InvalidArgument`] for `n = 0` or a window that is not finite and > 0.
pub fn hippo(measure: Measure, n: usize, theta: f64) -> Result<StateSpace> {
    check_n(n)?;
    if matches!(measure, Measure::LegT | Measure::FouT) {
        check_theta(theta)?;
    }
    let mut a = vec![0.0; n * n];
    let mut b = vec![0.0; n];
    let r = |i: usize| ((2 * i + 1) as f64).sqrt();
    match measure {
        Measure::LegS => {
            for i in 0..n {
                for k in 0..i {
                    a[i * n + k] = -r(i) * r(k);
                }
                a[i * n + i] = -((i + 1) as f64);
                b[i] = r(i);
            }
        }
        Measure::LegT => {
            for i in 0..n {
                for k in 0..n {
                    let sign = if k < i || (k - i) % 2 == 0 { 1.0 } else { -1.0 };
                    a[i * n + k] = -r(i) * r(k) * sign / theta;
                }
                b[i] = r(i) / theta;
            }
        }
        Measure::LagT => {
            for i in 0..n {
                for k in 0..i {
                    a[i * n + k] = -1.0;
                }
                a[i * n + i] = -0.5;
                b[i] = 1.0;
            }
        }
        Measure::FouT => {
            let e: Vec<f64> = (0..n)
                .map(|i| match i {
                    0 => 1.0,
                    _ if i % 2 == 1 => std::f64::consts::SQRT_2,
                    _ => 0.0,
                })
                .collect();
            for i in 0..n {
                for k in 0..n {
                    a[i * n + k] = -e[i] * e[k] / theta;
                }
                b[i] = e[i] / theta;
            }
            // cos_k at 2k−1, sin_k at 2k: d/dt cos_k = (2πk/θ) sin_k, d/dt sin_k = −(2πk/θ) cos_k.
            let mut k = 1;
            while 2 * k < n {
                let w = 2.0 * std::f64::consts::PI * k as f64 / theta;
                a[(2 * k - 1) * n + 2 * k] += w;
                a[2 * k * n + 2 * k - 1] -= w;
                k += 1;
            }
        }
    }
    Ok(StateSpace { n, m: 1, a, b })
}

/// `P_0(x) .. P_{n-1}(x)` (Legendre) by the three-term recurrence.
pub fn legendre(n: usize, x: f64, out: &mut [f64]) {
    for i in 0..n {
        out[i] = match i {
            0 => 1.0,
            1 => x,
            _ => (((2 * i - 1) as f64) * x * out[i - 1] - ((i - 1) as f64) * out[i - 2]) / i as f64,
        };
    }
}

/// `L_0(x) .. L_{n-1}(x)` (Laguerre) by the three-term recurrence.
pub fn laguerre(n: usize, x: f64, out: &mut [f64]) {
    for i in 0..n {
        out[i] = match i {
            0 => 1.0,
            1 => 1.0 - x,
            _ => (((2 * i - 1) as f64 - x) * out[i - 1] - ((i - 1) as f64) * out[i - 2]) / i as f64,
        };
    }
}

/// The basis functions `g_0(x) .. g_{N-1}(x)` of `measure` at the current time `t`, written to
/// `out: [N]`; zero outside the measure's support.
pub fn basis(measure: Measure, t: f64, theta: f64, x: f64, out: &mut [f64]) {
    let n = out.len();
    let outside = match measure {
        Measure::LegS => x < 0.0 || x > t,
        Measure::LegT | Measure::FouT => x < t - theta || x > t,
        Measure::LagT => x > t,
    };
    if outside {
        out.fill(0.0);
        return;
    }
    match measure {
        Measure::LegS | Measure::LegT => {
            let z = match measure {
                Measure::LegS if t > 0.0 => 2.0 * x / t - 1.0,
                Measure::LegS => 1.0,
                _ => 2.0 * (x - t) / theta + 1.0,
            };
            legendre(n, z, out);
            for (i, g) in out.iter_mut().enumerate() {
                *g *= ((2 * i + 1) as f64).sqrt();
            }
        }
        Measure::LagT => {
            let y = t - x;
            laguerre(n, y, out);
            let w = (-0.5 * y).exp();
            out.iter_mut().for_each(|g| *g *= w);
        }
        Measure::FouT => {
            let s = (x - t) / theta;
            for (i, g) in out.iter_mut().enumerate() {
                let k = i.div_ceil(2);
                let ph = 2.0 * std::f64::consts::PI * k as f64 * s;
                *g = match i {
                    0 => 1.0,
                    _ if i % 2 == 1 => std::f64::consts::SQRT_2 * ph.cos(),
                    _ => std::f64::consts::SQRT_2 * ph.sin(),
                };
            }
        }
    }
}

/// Reconstructs `f(x) ≈ Σ_n c_n g_n(x)` on any grid `xs` from the coefficients `c: [N]` held at
/// time `t` (for LegS after k steps of size 1/k, `t = k` in step units). Points outside the
/// measure's support give 0.
///
/// Errors: [`Error::InvalidArgument`] for an empty `c`, a non-finite `t`, or a bad window.
pub fn reconstruct(
    measure: Measure,
    theta: f64,
    c: &[f64],
    t: f64,
    xs: &[f64],
) -> Result<Vec<f64>> {
    check_n(c.len())?;
    if matches!(measure, Measure::LegT | Measure::FouT) {
        check_theta(theta)?;
    }
    if !t.is_finite() {
        return Err(Error::InvalidArgument {
            op: "hippo::reconstruct",
            name: "t",
            reason: format!("{t} is not finite"),
        });
    }
    let mut g = vec![0.0; c.len()];
    Ok(xs
        .iter()
        .map(|&x| {
            basis(measure, t, theta, x, &mut g);
            g.iter().zip(c).map(|(g, c)| g * c).sum()
        })
        .collect())
}
