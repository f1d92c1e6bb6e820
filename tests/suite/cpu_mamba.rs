//! The Mamba selective scan on the CPU path against the f64 sequential recurrence
//! (reference::mamba): ragged sizes, every optional input, strong gates, f32 and f16 storage,
//! NaN inputs, bad input.
//!
//! Tolerances as tests/suite/mamba.rs: normwise max|cpu − ref| / max|ref| ≤ tol and elementwise
//! |cpu − ref| ≤ tol · (|ref| + rms(ref)) (y = Σ_n C h cancels to near zero at some t);
//! f32 1e-5, f16 storage 2e-3.

use crate::common;

use common::rng;
use half::f16;
use longseq::cpu::ssm::{selective_scan, ScanDims, SelectiveScanHost};
use longseq::reference::mamba::{selective_scan_ref, SelectiveScanRef};
use longseq::{Element, Error};
use rand::Rng;

struct Case {
    u: Vec<f32>,
    delta: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    d: Vec<f32>,
    z: Vec<f32>,
    bias: Vec<f32>,
    h0: Vec<f32>,
}

/// Without softplus Δ is drawn positive (a negative Δ with A < 0 grows the state).
fn case(s: ScanDims, seed: u64, softplus: bool, strong: bool) -> Case {
    let mut g = rng(seed);
    let mut u = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..n).map(|_| g.random_range(lo..hi)).collect()
    };
    let x = s.batch * s.dim * s.len;
    let bc = s.batch * s.state * s.len;
    let (dlo, dhi, amin, zr) = if strong {
        (-5.0, 20.0, -16.0, 30.0)
    } else {
        (-3.0, 1.0, -2.0, 3.0)
    };
    Case {
        u: u(x, -1.0, 1.0),
        delta: if softplus {
            u(x, dlo, dhi)
        } else {
            u(x, 0.01, 1.0)
        },
        a: u(s.dim * s.state, amin, -0.01),
        b: u(bc, -1.0, 1.0),
        c: u(bc, -1.0, 1.0),
        d: u(s.dim, -1.0, 1.0),
        z: u(x, -zr, zr),
        bias: u(s.dim, -0.5, 0.5),
        h0: u(s.batch * s.dim * s.state, -1.0, 1.0),
    }
}

fn check(label: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{label}: length");
    let fin: Vec<f64> = want.iter().copied().filter(|x| x.is_finite()).collect();
    let max = fin.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let rms = (fin.iter().map(|x| x * x).sum::<f64>() / fin.len().max(1) as f64).sqrt();
    let mut worst = 0.0f64;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if !w.is_finite() {
            assert!(
                g.is_nan() && w.is_nan() || g == w,
                "{label}: element {i} is {g}, reference {w}"
            );
            continue;
        }
        let e = (g - w).abs();
        assert!(
            e <= tol * (w.abs() + rms),
            "{label}: element {i}: {g} vs {w} (|diff| {e:.3e})"
        );
        worst = worst.max(e);
    }
    assert!(
        worst <= tol * max.max(f64::MIN_POSITIVE),
        "{label}: normwise {:.3e}",
        worst / max
    );
}

fn run<T: Element>(s: ScanDims, x: &Case, full: bool, softplus: bool, label: &str, tol: f64) {
    let cv = |v: &[f32]| v.iter().map(|&a| T::from_f64(a as f64)).collect::<Vec<T>>();
    let (u, delta, a, b, c, d, z, bias) = (
        cv(&x.u),
        cv(&x.delta),
        cv(&x.a),
        cv(&x.b),
        cv(&x.c),
        cv(&x.d),
        cv(&x.z),
        cv(&x.bias),
    );
    let mut h = SelectiveScanHost::new(&u, &delta, &a, &b, &c);
    h.delta_softplus = softplus;
    if full {
        (h.d, h.z, h.delta_bias, h.initial_state) =
            (Some(&d[..]), Some(&z[..]), Some(&bias[..]), Some(&x.h0[..]));
    }
    let (out, last) = selective_scan(s, &h).unwrap();
    let f = |v: &[T]| v.iter().map(|a| a.to_f64()).collect::<Vec<f64>>();
    let (u, delta, a, b, c, d, z, bias) = (
        f(&u),
        f(&delta),
        f(&a),
        f(&b),
        f(&c),
        f(&d),
        f(&z),
        f(&bias),
    );
    let h0: Vec<f64> = x.h0.iter().map(|&v| v as f64).collect();
    let r = SelectiveScanRef {
        u: &u,
        delta: &delta,
        a: &a,
        b: &b,
        c: &c,
        d: full.then_some(&d[..]),
        z: full.then_some(&z[..]),
        delta_bias: full.then_some(&bias[..]),
        delta_softplus: softplus,
        initial_state: full.then_some(&h0[..]),
    };
    let (want, want_last) = selective_scan_ref(s, &r).unwrap();
    check(&format!("{label} out"), &f(&out), &want, tol);
    let last: Vec<f64> = last.iter().map(|&v| v as f64).collect();
    check(&format!("{label} last_state"), &last, &want_last, 1e-5);
}

fn dims(batch: usize, dim: usize, state: usize, len: usize) -> ScanDims {
    ScanDims {
        batch,
        dim,
        state,
        len,
    }
}

#[test]
fn cpu_matches_reference() {
    let shapes = [
        dims(1, 1, 1, 1),
        dims(2, 3, 5, 7),
        dims(1, 5, 16, 300),
        dims(3, 2, 17, 1001),
    ];
    for (i, &s) in shapes.iter().enumerate() {
        for (full, softplus, strong) in [
            (false, false, false),
            (true, true, false),
            (true, true, true),
        ] {
            let x = case(s, 60 + i as u64, softplus, strong);
            let label = format!("{s:?} full={full} softplus={softplus} strong={strong}");
            run::<f32>(s, &x, full, softplus, &format!("f32 {label}"), 1e-5);
            run::<f16>(s, &x, full, softplus, &format!("f16 {label}"), 2e-3);
        }
    }
}

#[test]
fn nan_reaches_its_row_from_its_step_on() {
    let s = dims(1, 3, 4, 50);
    let mut x = case(s, 5, true, false);
    x.u[50 + 20] = f32::NAN; // channel 1, step 20
    run::<f32>(s, &x, true, true, "NaN u", 1e-5);
}

#[test]
fn bad_input_is_a_typed_error() {
    let s = dims(1, 2, 3, 4);
    let x = case(s, 1, true, false);
    let h = SelectiveScanHost::new(&x.u, &x.delta, &x.a, &x.b, &x.c);
    assert!(matches!(
        selective_scan(dims(1, 2, 3, 0), &h),
        Err(Error::InvalidArgument { .. })
    ));
    let short = SelectiveScanHost { c: &x.c[1..], ..h };
    assert!(matches!(
        selective_scan(s, &short),
        Err(Error::Shape { name: "C", .. })
    ));
    let bad_d = SelectiveScanHost {
        d: Some(&x.u[..3]),
        ..h
    };
    assert!(matches!(
        selective_scan(s, &bad_d),
        Err(Error::Shape { name: "D", .. })
    ));
}
