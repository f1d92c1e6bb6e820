//! Discretisation: against scipy.signal.cont2discrete (tests/data, generated once by the script
//! beside it), closed forms, and the digits kept at tiny steps.

use longseq::ssm::discretize::expm1;
use longseq::ssm::{discretize, discretize_diag, hippo, Measure, Method};
use longseq::Error;
use num_complex::Complex64;

fn rel(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((g - w).abs()));
    assert!(diff.is_finite());
    diff / scale
}

struct Case {
    method: Method,
    dt: f64,
    n: usize,
    m: usize,
    mats: Vec<Vec<f64>>, // A, B, Ad, Bd
}

fn load_scipy() -> Vec<Case> {
    let text = include_str!("../data/cont2discrete.txt");
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    let mut out = vec![];
    while let Some(head) = lines.next() {
        let w: Vec<&str> = head.split_whitespace().collect();
        assert_eq!(w[0], "case");
        let mats = (0..4)
            .map(|_| {
                lines
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .map(|v| v.parse().unwrap())
                    .collect()
            })
            .collect();
        out.push(Case {
            method: Method::parse(w[1]).unwrap(),
            dt: w[2].parse().unwrap(),
            n: w[3].parse().unwrap(),
            m: w[4].parse().unwrap(),
            mats,
        });
    }
    out
}

#[test]
fn equals_scipy_cont2discrete() {
    let cases = load_scipy();
    assert_eq!(cases.len(), 64);
    let mut worst = 0.0f64;
    for c in &cases {
        let (ad, bd) = discretize(&c.mats[0], &c.mats[1], c.n, c.m, c.dt, c.method).unwrap();
        let (ea, eb) = (rel(&ad, &c.mats[2]), rel(&bd, &c.mats[3]));
        assert!(
            ea <= 1e-9 && eb <= 1e-9,
            "{:?} dt={} n={} m={}: Ad err {ea:.2e}, Bd err {eb:.2e}",
            c.method,
            c.dt,
            c.n,
            c.m
        );
        worst = worst.max(ea).max(eb);
    }
    eprintln!("worst relative error vs scipy: {worst:.2e}");
}

#[test]
fn closed_forms_for_a_scalar_system() {
    let (a, b, dt) = (-0.8f64, 1.7f64, 0.3f64);
    let want = [
        (Method::Euler, 1.0 + dt * a, dt * b),
        (
            Method::BackwardEuler,
            1.0 / (1.0 - dt * a),
            dt * b / (1.0 - dt * a),
        ),
        (
            Method::Bilinear,
            (1.0 + dt * a / 2.0) / (1.0 - dt * a / 2.0),
            dt * b / (1.0 - dt * a / 2.0),
        ),
        (Method::Zoh, (dt * a).exp(), ((dt * a).exp() - 1.0) / a * b),
    ];
    for (m, wa, wb) in want {
        let (ad, bd) = discretize(&[a], &[b], 1, 1, dt, m).unwrap();
        assert!(
            (ad[0] - wa).abs() <= 1e-15 && (bd[0] - wb).abs() <= 1e-15,
            "{m:?}"
        );
        let (zd, zb) =
            discretize_diag(&[Complex64::new(a, 0.0)], &[Complex64::new(b, 0.0)], dt, m).unwrap();
        assert!(
            (zd[0].re - wa).abs() <= 1e-15 && zd[0].im == 0.0,
            "{m:?} diag"
        );
        assert!((zb[0].re - wb).abs() <= 1e-15, "{m:?} diag B");
    }
}

#[test]
fn dense_zoh_of_a_rotation_is_a_rotation() {
    // A = [[0, −w], [w, 0]]: exp(ΔA) is the rotation by wΔ; B̄ = A⁻¹(exp(ΔA) − I)B.
    let (w, dt) = (2.3f64, 0.4f64);
    let (ad, bd) = discretize(&[0.0, -w, w, 0.0], &[1.0, 0.0], 2, 1, dt, Method::Zoh).unwrap();
    let (c, s) = ((w * dt).cos(), (w * dt).sin());
    assert!(rel(&ad, &[c, -s, s, c]) < 1e-14);
    assert!(rel(&bd, &[s / w, (1.0 - c) / w]) < 1e-14);
}

#[test]
fn zoh_of_singular_a_is_the_integrator() {
    // Double integrator: Ā = [[1, Δ], [0, 1]], B̄ = [Δ²/2, Δ].
    let dt = 0.37;
    let (ad, bd) = discretize(&[0.0, 1.0, 0.0, 0.0], &[0.0, 1.0], 2, 1, dt, Method::Zoh).unwrap();
    assert!(rel(&ad, &[1.0, dt, 0.0, 1.0]) < 1e-15);
    assert!(rel(&bd, &[dt * dt / 2.0, dt]) < 1e-15);
}

#[test]
fn diagonal_equals_dense_for_real_diagonals() {
    let a = [-0.3, -1.9, -4.0, 0.0];
    let b = [0.5, -1.2, 2.0, 0.7];
    let mut dense = vec![0.0; 16];
    for i in 0..4 {
        dense[i * 4 + i] = a[i];
    }
    let ca: Vec<Complex64> = a.iter().map(|&x| Complex64::new(x, 0.0)).collect();
    let cb: Vec<Complex64> = b.iter().map(|&x| Complex64::new(x, 0.0)).collect();
    for m in [
        Method::Euler,
        Method::BackwardEuler,
        Method::Bilinear,
        Method::Zoh,
    ] {
        let (ad, bd) = discretize(&dense, &b, 4, 1, 0.21, m).unwrap();
        let (zd, zb) = discretize_diag(&ca, &cb, 0.21, m).unwrap();
        for i in 0..4 {
            assert!((ad[i * 4 + i] - zd[i].re).abs() < 1e-14, "{m:?}");
            assert!((bd[i] - zb[i].re).abs() < 1e-14, "{m:?}");
        }
    }
}

#[test]
fn complex_zoh_matches_the_series_at_tiny_steps() {
    // B̄/Δ = (e^{ΔA} − 1)/(ΔA) · B = B (1 + ΔA/2 + (ΔA)²/6 + …): the leading digits must survive.
    let a = [Complex64::new(-0.5, 3.0), Complex64::new(-0.5, 2500.0)];
    let b = [Complex64::new(1.0, -0.25), Complex64::new(0.3, 0.9)];
    for dt in [1e-7, 1e-10, 1e-13] {
        let (ad, bd) = discretize_diag(&a, &b, dt, Method::Zoh).unwrap();
        for i in 0..2 {
            let z = a[i] * dt;
            let want = b[i] * dt * (1.0 + z / 2.0 + z * z / 6.0);
            let e = (bd[i] - want).norm() / want.norm();
            assert!(e < 1e-12, "dt={dt}: B̄ relative error {e:.2e}");
            // Ā − 1 = expm1(ΔA) to >= 6 significant digits.
            let want_m1 = z * (1.0 + z / 2.0 + z * z / 6.0);
            let e = (expm1(z) - want_m1).norm() / want_m1.norm();
            assert!(e < 1e-12, "dt={dt}: expm1 relative error {e:.2e}");
            assert!((ad[i] - (1.0 + want_m1)).norm() < 1e-15);
        }
    }
}

#[test]
fn dense_zoh_keeps_six_digits_at_dt_1e7() {
    // (Ā − I)/Δ → A and B̄/Δ → B as Δ → 0; at Δ = 1e-7 the first-order terms must carry >= 6
    // significant digits, i.e. agree with A + ΔA²/2 and B + ΔAB/2 to 1e-6 relative.
    let ss = hippo(Measure::LegS, 8, 1.0).unwrap();
    let n = ss.n;
    let dt = 1e-7;
    let (ad, bd) = discretize(&ss.a, &ss.b, n, 1, dt, Method::Zoh).unwrap();
    let mut a2 = vec![0.0; n * n];
    let mut ab = vec![0.0; n];
    for i in 0..n {
        for j in 0..n {
            a2[i * n + j] = (0..n).map(|k| ss.a[i * n + k] * ss.a[k * n + j]).sum();
        }
        ab[i] = (0..n).map(|k| ss.a[i * n + k] * ss.b[k]).sum();
    }
    let got_a: Vec<f64> = (0..n * n)
        .map(|i| (ad[i] - if i % (n + 1) == 0 { 1.0 } else { 0.0 }) / dt)
        .collect();
    let want_a: Vec<f64> = (0..n * n).map(|i| ss.a[i] + dt * a2[i] / 2.0).collect();
    let got_b: Vec<f64> = bd.iter().map(|x| x / dt).collect();
    let want_b: Vec<f64> = (0..n).map(|i| ss.b[i] + dt * ab[i] / 2.0).collect();
    let (ea, eb) = (rel(&got_a, &want_a), rel(&got_b, &want_b));
    eprintln!("ZOH dt=1e-7: (Ā−I)/Δ rel err {ea:.2e}, B̄/Δ rel err {eb:.2e}");
    assert!(ea < 1e-6 && eb < 1e-6);
}

#[test]
fn bad_input_is_a_typed_error() {
    let a = [-1.0, 0.0, 0.0, -1.0];
    assert!(matches!(
        discretize(&a, &[1.0], 2, 1, 0.1, Method::Zoh),
        Err(Error::Shape { name: "B", .. })
    ));
    assert!(matches!(
        discretize(&a[..3], &[1.0, 1.0], 2, 1, 0.1, Method::Zoh),
        Err(Error::Shape { name: "A", .. })
    ));
    for dt in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            discretize(&a, &[1.0, 1.0], 2, 1, dt, Method::Bilinear),
            Err(Error::InvalidArgument { name: "dt", .. })
        ));
    }
    assert!(matches!(
        discretize(
            &[-1.0, f64::NAN, 0.0, -1.0],
            &[1.0, 1.0],
            2,
            1,
            0.1,
            Method::Zoh
        ),
        Err(Error::NaN { index: 1, .. })
    ));
    // I − ΔA singular: A = 1/Δ for backward Euler.
    assert!(matches!(
        discretize(&[10.0], &[1.0], 1, 1, 0.1, Method::BackwardEuler),
        Err(Error::InvalidArgument { name: "A", .. })
    ));
    assert!(matches!(
        discretize_diag(&[Complex64::new(20.0, 0.0)], &[], 0.1, Method::Bilinear),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        discretize_diag(
            &[Complex64::new(20.0, 0.0)],
            &[Complex64::new(1.0, 0.0)],
            0.1,
            Method::Bilinear
        ),
        Err(Error::InvalidArgument { name: "A", .. })
    ));
    assert!(Method::parse("rk4").is_err());
}
