//! CPU path vs the f64 reference: the linear scan `h_t = a_t h_{t−1} + b_t` (real and complex,
//! f32 and f16 storage, rows short and long enough to be chunked, NaN in an operand) and the
//! HiPPO online approximation (every measure and step of the GPU tests), typed errors.

use crate::common;
use crate::cpu_check;

use common::{randn, rng};
use cpu_check::*;
use longseq::cpu::ssm::{hippo_approx, linear_scan, ScanOperands};
use longseq::reference::ssm as rs;
use longseq::ssm::{HippoApproxOptions, Measure, Method, Step};
use longseq::{reference, Element, Error};
use num_complex::Complex64;
use rand::Rng;

/// `[rows, len]` operands with |a| in [0.5, 1), 20% sign flips, b ~ N(0, 1).
fn operands<T: Element>(rows: usize, len: usize, complex: bool, seed: u64) -> [Vec<T>; 4] {
    let n = rows * len;
    let mut g = rng(seed);
    let mut a_re = Vec::with_capacity(n);
    let mut a_im = Vec::with_capacity(n);
    for _ in 0..n {
        let mag: f64 = g.random_range(0.5..1.0);
        let ph: f64 = if complex {
            g.random_range(-3.1..3.1)
        } else {
            0.0
        };
        let sign = if g.random_bool(0.2) { -1.0 } else { 1.0 };
        a_re.push(T::from_f64(sign * mag * ph.cos()));
        a_im.push(T::from_f64(mag * ph.sin()));
    }
    let q = |v: Vec<f32>| v.into_iter().map(|x| T::from_f64(x as f64)).collect();
    [
        a_re,
        a_im,
        q(randn(&mut g, n, 1.0)),
        q(randn(&mut g, n, 1.0)),
    ]
}

fn scan_case<T: Element>(rows: usize, len: usize, complex: bool, seed: u64, nan_at: Option<usize>) {
    let [a_re, a_im, mut b_re, b_im] = operands::<T>(rows, len, complex, seed);
    if let Some(i) = nan_at {
        b_re[i] = T::from_f64(f64::NAN);
    }
    let ops = ScanOperands {
        a_re: &a_re,
        a_im: complex.then_some(&a_im[..]),
        b_re: &b_re,
        b_im: complex.then_some(&b_im[..]),
    };
    let (h_re, h_im) = linear_scan(&ops, &[rows, len]).unwrap();
    assert_eq!(h_im.is_some(), complex);
    let z = |re: &[T], im: &[T], i: usize| {
        Complex64::new(re[i].to_f64(), if complex { im[i].to_f64() } else { 0.0 })
    };
    let a: Vec<Complex64> = (0..rows * len).map(|i| z(&a_re, &a_im, i)).collect();
    let b: Vec<Complex64> = (0..rows * len).map(|i| z(&b_re, &b_im, i)).collect();
    let want = rs::linear_scan(&a, &b, len).unwrap();
    let label = format!("{:?} rows {rows} L {len} complex {complex}", T::DTYPE);
    let w_re: Vec<f64> = want.iter().map(|x| x.re).collect();
    check(&format!("{label} re"), &h_re, &w_re, tol::<T>());
    if let Some(h_im) = h_im {
        let w_im: Vec<f64> = want.iter().map(|x| x.im).collect();
        check(&format!("{label} im"), &h_im, &w_im, tol::<T>());
    }
}

#[test]
fn linear_scan_matches_the_recurrence() {
    let mut seed = 0;
    for (rows, len) in [
        (1usize, 1usize),
        (6, 3),
        (6, 33),
        (3, 257),
        (6, 1000),
        (1, 4097),
        (1, 65_537),
    ] {
        for complex in [false, true] {
            seed += 1;
            scan_case::<f32>(rows, len, complex, seed, None);
            scan_case::<half::f16>(rows, len, complex, seed, None);
        }
    }
}

#[test]
fn linear_scan_nan_reaches_only_later_positions() {
    // Short rows (one thread per row) and one long chunked row.
    scan_case::<f32>(4, 50, true, 9, Some(77));
    scan_case::<f32>(1, 20_000, false, 10, Some(9_000));
}

#[test]
fn linear_scan_bad_input_is_a_typed_error() {
    let x = vec![0.5f32; 12];
    let ops = ScanOperands {
        a_re: &x,
        a_im: None,
        b_re: &x[..10],
        b_im: None,
    };
    assert!(matches!(
        linear_scan(&ops, &[3, 4]),
        Err(Error::DataLength { .. })
    ));
    let ops = ScanOperands { b_re: &x, ..ops };
    assert!(matches!(
        linear_scan(&ops, &[3, 0]),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(linear_scan(&ops, &[]), Err(Error::Shape { .. })));
}

/// f32: 1e-5 normwise. Elementwise the atol is 1e-5·max|ref|: coefficients that are ~0 in exact
/// arithmetic (high modes at early samples) carry the f32 rounding of the O(1) ones.
const HIPPO: Tol = Tol {
    norm: 1e-5,
    rtol: 1e-4,
    atol: 1e-5,
};

fn modes() -> Vec<HippoApproxOptions> {
    let o = |measure, step, method, theta| HippoApproxOptions {
        n: 0,
        measure,
        theta,
        step,
        method,
    };
    vec![
        o(Measure::LegS, Step::Scaled, Method::Bilinear, 1.0),
        o(Measure::LegS, Step::Scaled, Method::BackwardEuler, 1.0),
        o(Measure::LegT, Step::Fixed(0.01), Method::Zoh, 1.0),
        o(Measure::LagT, Step::Fixed(0.05), Method::Bilinear, 1.0),
        o(Measure::FouT, Step::Fixed(0.01), Method::Zoh, 0.5),
        o(Measure::LegS, Step::Fixed(0.002), Method::Bilinear, 1.0),
    ]
}

#[test]
fn hippo_approx_matches_the_reference() {
    let mut seed = 100;
    for (b, l, n) in [
        (2usize, 1usize, 1usize),
        (3, 3, 2),
        (2, 33, 3),
        (1, 3, 64),
        (5, 33, 65),
        (1, 1000, 64),
        (2, 4097, 3),
    ] {
        for mut o in modes() {
            o.n = n;
            seed += 1;
            let f = randn(&mut rng(seed), b * l, 1.0);
            let label = format!(
                "{:?} {:?} {:?} B={b} L={l} N={n}",
                o.measure, o.step, o.method
            );
            let want = reference::ssm::hippo_approx(&f, &[b, l], &o).unwrap();
            let got = hippo_approx(&f, &[b, l], &o).unwrap();
            check(&format!("f32 {label}"), &got, &want, HIPPO);
            // f16 storage of the series; the state and c stay f32.
            let fh = to_f16(&f);
            let want = reference::ssm::hippo_approx(&fh, &[b, l], &o).unwrap();
            let got = hippo_approx(&fh, &[b, l], &o).unwrap();
            check(&format!("f16 {label}"), &got, &want, HIPPO);
        }
    }
}

#[test]
fn hippo_approx_nan_and_bad_options_are_typed_errors() {
    let mut f = randn(&mut rng(1), 20, 1.0);
    f[13] = f32::NAN;
    let o = HippoApproxOptions {
        n: 4,
        ..Default::default()
    };
    assert!(matches!(
        hippo_approx(&f, &[2, 10], &o),
        Err(Error::NaN { index: 13, .. })
    ));
    let f = randn(&mut rng(2), 20, 1.0);
    assert!(matches!(
        hippo_approx(&f, &[3, 10], &o),
        Err(Error::DataLength { .. })
    ));
    assert!(matches!(
        hippo_approx(&f, &[2, 0], &o),
        Err(Error::Shape { .. })
    ));
    let bad = HippoApproxOptions { n: 0, ..o };
    assert!(matches!(
        hippo_approx(&f, &[2, 10], &bad),
        Err(Error::InvalidArgument { .. })
    ));
    let bad = HippoApproxOptions {
        measure: Measure::LegT,
        ..o
    };
    assert!(matches!(
        hippo_approx(&f, &[2, 10], &bad),
        Err(Error::InvalidArgument { .. })
    ));
}
