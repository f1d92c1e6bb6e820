//! HiPPO matrices: the structure and the ODE the paper derives, checked against projections
//! computed by quadrature; reconstruction of polynomials through the discrete recurrences.

use longseq::reference;
use longseq::ssm::hippo::basis;
use longseq::ssm::{hippo, reconstruct, HippoApproxOptions, Measure, Method, Step};
use longseq::Error;

const MEASURES: [Measure; 4] = [Measure::LegS, Measure::LegT, Measure::LagT, Measure::FouT];

/// Composite Simpson on [lo, hi] with `m` (even) intervals, for every output of `g` at once.
fn simpson(lo: f64, hi: f64, m: usize, k: usize, g: impl Fn(f64, &mut [f64])) -> Vec<f64> {
    let h = (hi - lo) / m as f64;
    let mut acc = vec![0.0; k];
    let mut buf = vec![0.0; k];
    for i in 0..=m {
        let w = if i == 0 || i == m {
            1.0
        } else if i % 2 == 1 {
            4.0
        } else {
            2.0
        };
        // The last node exactly at `hi`: lo + m·h may round past the support's end.
        let x = if i == m { hi } else { lo + i as f64 * h };
        g(x, &mut buf);
        for (a, b) in acc.iter_mut().zip(&buf) {
            *a += w * b;
        }
    }
    acc.iter().map(|a| a * h / 3.0).collect()
}

/// `c(t) = ⟨f, g_n⟩` under the measure at time t, by quadrature (f = 0 before x = 0).
fn project(measure: Measure, theta: f64, n: usize, t: f64, f: &dyn Fn(f64) -> f64) -> Vec<f64> {
    let (lo, weight) = match measure {
        Measure::LegS => (0.0, 1.0 / t),
        Measure::LegT | Measure::FouT => (t - theta, 1.0 / theta),
        Measure::LagT => (0.0, 1.0),
    };
    simpson(lo, t, 20_000, n, |x, out| {
        basis(measure, t, theta, x, out);
        let fx = f(x) * weight;
        out.iter_mut().for_each(|g| *g *= fx);
    })
}

fn max_abs(x: &[f64]) -> f64 {
    x.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

fn matvec(a: &[f64], c: &[f64]) -> Vec<f64> {
    let n = c.len();
    (0..n)
        .map(|i| (0..n).map(|k| a[i * n + k] * c[k]).sum())
        .collect()
}

#[test]
fn legs_structure() {
    for n in [1, 2, 3, 64, 65] {
        let ss = hippo(Measure::LegS, n, 1.0).unwrap();
        assert_eq!((ss.n, ss.m, ss.a.len(), ss.b.len()), (n, 1, n * n, n));
        for i in 0..n {
            assert_eq!(ss.a[i * n + i], -((i + 1) as f64));
            assert!((ss.b[i] - ((2 * i + 1) as f64).sqrt()).abs() < 1e-15);
            for k in 0..n {
                let v = ss.a[i * n + k];
                if k > i {
                    assert_eq!(v, 0.0, "LegS A must be lower triangular");
                } else if k < i {
                    let want = -(((2 * i + 1) * (2 * k + 1)) as f64).sqrt();
                    assert!((v - want).abs() < 1e-12);
                }
            }
        }
    }
}

#[test]
fn every_measure_builds_for_small_and_odd_n() {
    for m in MEASURES {
        for n in [1, 2, 3, 64, 65] {
            let ss = hippo(m, n, 0.8).unwrap();
            assert!(ss.a.iter().chain(&ss.b).all(|x| x.is_finite()));
            // Every diagonal entry is negative: the memory forgets, it does not blow up.
            assert!((0..n)
                .all(|i| ss.a[i * n + i] < 0.0 || (m == Measure::FouT && i % 2 == 0 && i > 0)));
        }
    }
}

#[test]
fn bases_are_orthonormal_under_their_measures() {
    let (t, theta, n) = (3.0, 1.3, 7);
    for m in MEASURES {
        // LagT's measure runs to −∞: integrate far enough back that e^{−y} is negligible.
        let lo = match m {
            Measure::LegS => 0.0,
            Measure::LagT => t - 80.0,
            _ => t - theta,
        };
        let w = match m {
            Measure::LegS => 1.0 / t,
            Measure::LagT => 1.0,
            _ => 1.0 / theta,
        };
        let gram = simpson(lo, t, 40_000, n * n, |x, out| {
            let mut g = vec![0.0; n];
            basis(m, t, theta, x, &mut g);
            for i in 0..n {
                for k in 0..n {
                    out[i * n + k] = g[i] * g[k] * w;
                }
            }
        });
        for i in 0..n {
            for k in 0..n {
                let want = if i == k { 1.0 } else { 0.0 };
                assert!(
                    (gram[i * n + k] - want).abs() < 1e-8,
                    "{m:?} ⟨g{i}, g{k}⟩ = {}",
                    gram[i * n + k]
                );
            }
        }
    }
}

/// ċ from central differences of quadrature projections against the matrices' right-hand side.
fn ode_residual(m: Measure, n: usize, theta: f64, t: f64, f: &dyn Fn(f64) -> f64) -> f64 {
    let ss = hippo(m, n, theta).unwrap();
    let h = 1e-4;
    let cp = project(m, theta, n, t + h, f);
    let cm = project(m, theta, n, t - h, f);
    let c = project(m, theta, n, t, f);
    let dc: Vec<f64> = cp
        .iter()
        .zip(&cm)
        .map(|(p, q)| (p - q) / (2.0 * h))
        .collect();
    let scale = if m == Measure::LegS { 1.0 / t } else { 1.0 };
    let ac = matvec(&ss.a, &c);
    let rhs: Vec<f64> = (0..n).map(|i| scale * (ac[i] + ss.b[i] * f(t))).collect();
    let diff: Vec<f64> = dc.iter().zip(&rhs).map(|(a, b)| a - b).collect();
    max_abs(&diff) / max_abs(&rhs).max(max_abs(&dc))
}

#[test]
fn legs_and_lagt_odes_are_exact_for_any_signal() {
    let f = |x: f64| (3.0 * x).sin() + 0.5 * x * x - 0.2;
    for n in [1, 2, 3, 8] {
        let e = ode_residual(Measure::LegS, n, 1.0, 2.0, &f);
        assert!(e < 1e-6, "LegS N={n}: residual {e:.2e}");
        let e = ode_residual(Measure::LagT, n, 1.0, 2.0, &f);
        assert!(e < 1e-6, "LagT N={n}: residual {e:.2e}");
    }
}

#[test]
fn legt_ode_is_exact_for_polynomials_of_degree_below_n() {
    let f = |x: f64| 1.0 - 2.0 * x + 0.7 * x.powi(3) - 0.1 * x.powi(5);
    for n in [6, 7, 9] {
        let e = ode_residual(Measure::LegT, n, 1.3, 2.2, &f);
        assert!(e < 1e-6, "LegT N={n}: residual {e:.2e}");
    }
    // Degree >= N: the window's far end is not reconstructed exactly, so the ODE is not exact.
    let e = ode_residual(Measure::LegT, 3, 1.3, 2.2, &f);
    assert!(
        e > 1e-3,
        "LegT N=3 should not be exact for degree 5 ({e:.2e})"
    );
}

#[test]
fn fout_ode_is_exact_for_periodic_signals_in_its_span() {
    let theta = 1.5;
    let tau = 2.0 * std::f64::consts::PI / theta;
    let f = move |x: f64| 0.3 + (tau * x).cos() - 0.7 * (2.0 * tau * x).sin();
    for n in [5, 6, 9] {
        let e = ode_residual(Measure::FouT, n, theta, 2.2, &f);
        assert!(e < 1e-6, "FouT N={n}: residual {e:.2e}");
    }
}

#[test]
fn reconstruct_inverts_projection_in_the_span() {
    // A polynomial of degree < N is its own projection: reconstruct(project(f)) = f on the support.
    let f = |x: f64| 2.0 - x + 0.25 * x.powi(3);
    let (t, theta, n) = (2.0, 1.2, 5);
    for m in [Measure::LegS, Measure::LegT] {
        let c = project(m, theta, n, t, &f);
        let lo = if m == Measure::LegS { 0.0 } else { t - theta };
        let xs: Vec<f64> = (0..=50).map(|i| lo + (t - lo) * i as f64 / 50.0).collect();
        let got = reconstruct(m, theta, &c, t, &xs).unwrap();
        for (x, g) in xs.iter().zip(&got) {
            assert!((g - f(*x)).abs() < 1e-9, "{m:?} at {x}: {g} vs {}", f(*x));
        }
    }
}

/// Max error of the LegS online memory (reference recurrence, bilinear) reconstructing a cubic
/// sampled at L points of (0, 1].
fn legs_online_error(l: usize, method: Method) -> f64 {
    let p = |x: f64| 1.0 + 2.0 * x - 3.0 * x * x + 1.5 * x.powi(3);
    let f: Vec<f64> = (1..=l).map(|k| p(k as f64 / l as f64)).collect();
    let opts = HippoApproxOptions {
        n: 8,
        step: Step::Scaled,
        method,
        ..Default::default()
    };
    let f32s: Vec<f32> = f.iter().map(|&x| x as f32).collect();
    let c = reference::ssm::hippo_approx(&f32s, &[l], &opts).unwrap();
    let last = &c[(l - 1) * 8..];
    // Sample k sits at x = k (step units); the memory spans [0, L].
    let xs: Vec<f64> = (1..=l).map(|k| k as f64).collect();
    let rec = reconstruct(Measure::LegS, 1.0, last, l as f64, &xs).unwrap();
    let want: Vec<f64> = f32s.iter().map(|&x| x as f64).collect();
    let e: Vec<f64> = rec.iter().zip(&want).map(|(r, w)| (r - w).abs()).collect();
    max_abs(&e)
}

#[test]
fn legs_online_memory_reconstructs_a_cubic_as_the_step_shrinks() {
    let e = [100, 1000].map(|l| legs_online_error(l, Method::Bilinear));
    eprintln!(
        "LegS N=8 bilinear reconstruction error: L=100 {:.2e}, L=1000 {:.2e}",
        e[0], e[1]
    );
    // First order in 1/L: the start-up transient stays in the running projection with weight ~1/k.
    assert!(e[1] < e[0] / 5.0 && e[1] < 5e-2, "{e:?}");
    let e = [100, 1000].map(|l| legs_online_error(l, Method::Euler));
    eprintln!(
        "LegS N=8 euler reconstruction error: L=100 {:.2e}, L=1000 {:.2e}",
        e[0], e[1]
    );
    assert!(e[1] < e[0] / 5.0, "{e:?}");
}

#[test]
fn bad_arguments_are_typed_errors() {
    assert!(matches!(
        hippo(Measure::LegS, 0, 1.0),
        Err(Error::InvalidArgument { name: "n", .. })
    ));
    for th in [0.0, -1.0, f64::NAN] {
        assert!(matches!(
            hippo(Measure::LegT, 4, th),
            Err(Error::InvalidArgument { name: "theta", .. })
        ));
    }
    assert!(Measure::parse("legz").is_err());
    assert_eq!(Measure::parse("FouT").unwrap(), Measure::FouT);
    assert!(reconstruct(Measure::LegS, 1.0, &[], 1.0, &[0.5]).is_err());
}
