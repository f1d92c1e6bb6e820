//! CPU path vs the f64 reference: S4D kernel (ZOH, bilinear, large phases), causal FFT
//! convolution, batched FFT; NaN-poisoned outputs, NaN inputs, typed errors.

use crate::common;
use crate::cpu_check;

use common::{randn, rng};
use cpu_check::*;
use half::f16;
use longseq::reference::ssm as rs;
use longseq::ssm::{s4d_init, Discretization, FftDirection, S4dInit};
use longseq::{cpu, Element, Error};
use num_complex::Complex64;
use rand::Rng;

const DISCS: [Discretization; 2] = [Discretization::Zoh, Discretization::Bilinear];

fn random_ssm(seed: u64, h: usize, n2: usize, init: S4dInit) -> rs::DiagonalSsm {
    let mut g = rng(seed);
    let a1 = s4d_init(init, n2).unwrap();
    let mut cn = || {
        let v = randn(&mut g, 2, 0.7);
        Complex64::new(v[0] as f64, v[1] as f64)
    };
    let b = (0..h * n2).map(|_| cn()).collect();
    let c = (0..h * n2).map(|_| cn()).collect();
    let dt = (0..h)
        .map(|_| 10f64.powf(g.random_range(-3.0..-1.0)))
        .collect();
    let d = randn(&mut g, h, 1.0).into_iter().map(f64::from).collect();
    rs::DiagonalSsm {
        h,
        n2,
        a: (0..h).flat_map(|_| a1.clone()).collect(),
        b,
        c,
        dt,
        d,
    }
}

fn kernel_case<T: Element>(m: &rs::DiagonalSsm, len: usize, disc: Discretization, label: &str) {
    let mut out = poisoned::<T>(m.h * len);
    cpu::ssm::s4d_kernel_into(m, len, disc, &mut out).unwrap();
    let want = rs::s4d_kernel(m, len, disc).unwrap();
    check(label, &out, &want, tol::<T>());
}

#[test]
fn s4d_kernel_matches_reference() {
    let mut seed = 0;
    for init in [S4dInit::Lin, S4dInit::Inv, S4dInit::LegS] {
        for (h, n2, len) in [
            (1, 1, 1),
            (3, 5, 63),
            (2, 32, 65),
            (4, 16, 1000),
            (1, 7, 4097),
        ] {
            for disc in DISCS {
                seed += 1;
                let m = random_ssm(seed, h, n2, init);
                let label = format!("{init:?} {disc:?} H={h} N2={n2} L={len}");
                kernel_case::<f32>(&m, len, disc, &format!("f32 {label}"));
                kernel_case::<f16>(&m, len, disc, &format!("f16 {label}"));
            }
        }
    }
}

/// `l·Δ·Im A` reaches ~10⁴ rad at L = 4097 with |Ā^l| near 1: the f64 anchors keep f32 accuracy
/// for both discretisations.
#[test]
fn s4d_kernel_large_phase_keeps_accuracy() {
    let (h, n2) = (2, 16);
    let mut m = random_ssm(7, h, n2, S4dInit::Lin);
    for (i, a) in m.a.iter_mut().enumerate() {
        *a = Complex64::new(-1e-4, 5.0 + 3.7 * (i % n2) as f64);
    }
    m.dt = vec![0.05, 0.0371];
    for disc in DISCS {
        kernel_case::<f32>(&m, 4097, disc, &format!("large phase {disc:?}"));
    }
    m.c[3] = Complex64::new(f64::NAN, 0.0);
    kernel_case::<f32>(&m, 100, Discretization::Zoh, "NaN in C");
    m.dt[1] = 0.0;
    assert!(matches!(
        cpu::ssm::s4d_kernel::<f32>(&m, 10, Discretization::Zoh),
        Err(Error::InvalidArgument { name: "dt", .. })
    ));
}

fn conv_case<T: Element>(b: usize, h: usize, len: usize, seed: u64, nan: bool) {
    let mut g = rng(seed);
    let c = |x: Vec<f32>| {
        x.into_iter()
            .map(|a| T::from_f64(a as f64))
            .collect::<Vec<T>>()
    };
    let mut u = randn(&mut g, b * h * len, 1.0);
    if nan {
        u[len / 2] = f32::NAN; // row 0
    }
    let (u, k, d) = (
        c(u),
        c(randn(&mut g, h * len, 0.3)),
        c(randn(&mut g, h, 1.0)),
    );
    let f = |x: &[T]| x.iter().map(|v| v.to_f64()).collect::<Vec<f64>>();
    let u_shape: Vec<usize> = if b == 1 {
        vec![h, len]
    } else {
        vec![b, h, len]
    };
    let mut out = poisoned::<T>(u.len());
    cpu::ssm::causal_conv_into(&u, &u_shape, &k, &[h, len], &d, &mut out).unwrap();
    let want = rs::fft::causal_conv(&f(&u), &f(&k), &f(&d), h, len).unwrap();
    if nan {
        // As the definition y_t = Σ_{j≤t} K_j u_{t−j} + D u_t says: NaN from time len/2 on only.
        assert!(want[..len / 2].iter().all(|x| x.is_finite()));
        assert!(want[len / 2..len].iter().all(|x| x.is_nan()));
    }
    check(
        &format!("conv B={b} H={h} L={len} NaN={nan}"),
        &out,
        &want,
        tol::<T>(),
    );
}

#[test]
fn causal_conv_matches_reference() {
    let mut seed = 100;
    for (b, h, len) in [(1, 1, 1), (1, 3, 2), (2, 5, 63), (3, 2, 1000), (1, 4, 4097)] {
        seed += 1;
        conv_case::<f32>(b, h, len, seed, false);
        conv_case::<f16>(b, h, len, seed, false);
    }
    conv_case::<f32>(2, 3, 100, 7, true);
    let x = vec![1.0f32; 12];
    assert!(matches!(
        cpu::ssm::causal_conv(&x, &[3, 4], &x[..8], &[2, 4], &x[..3]),
        Err(Error::Shape { name: "K", .. })
    ));
    assert!(matches!(
        cpu::ssm::causal_conv(&x, &[3, 4], &x, &[3, 4], &x[..2]),
        Err(Error::Shape { name: "D", .. })
    ));
}

#[test]
fn fft_matches_a_direct_dft() {
    for (rows, n) in [(1, 1), (3, 8), (2, 256)] {
        let mut g = rng(n as u64);
        let re = randn(&mut g, rows * n, 1.0);
        let im = randn(&mut g, rows * n, 1.0);
        for dir in [FftDirection::Forward, FftDirection::Inverse] {
            for with_im in [false, true] {
                let (gr, gi) =
                    cpu::ssm::fft(&re, with_im.then_some(&im[..]), &[rows, n], dir).unwrap();
                let sign = if dir == FftDirection::Forward {
                    -1.0
                } else {
                    1.0
                };
                let scale = if dir == FftDirection::Forward {
                    1.0
                } else {
                    1.0 / n as f64
                };
                let (mut wr, mut wi) = (vec![0.0; rows * n], vec![0.0; rows * n]);
                for r in 0..rows {
                    for f in 0..n {
                        let mut acc = Complex64::new(0.0, 0.0);
                        for t in 0..n {
                            let x = Complex64::new(
                                re[r * n + t] as f64,
                                if with_im { im[r * n + t] as f64 } else { 0.0 },
                            );
                            let ang = sign * std::f64::consts::TAU * (f * t % n) as f64 / n as f64;
                            acc += x * Complex64::from_polar(1.0, ang);
                        }
                        wr[r * n + f] = acc.re * scale;
                        wi[r * n + f] = acc.im * scale;
                    }
                }
                check(&format!("fft re n={n} {dir:?}"), &gr, &wr, F32);
                check(&format!("fft im n={n} {dir:?}"), &gi, &wi, F32);
            }
        }
    }
    assert!(matches!(
        cpu::ssm::fft(&[1.0; 6], None, &[6], FftDirection::Forward),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn s4d_scan_matches_the_reference_recurrence() {
    for (b, h, n2, len) in [(1, 1, 1, 1), (2, 3, 5, 63), (1, 4, 16, 1000)] {
        for disc in DISCS {
            let m = random_ssm(b as u64 * 31 + len as u64, h, n2, S4dInit::Lin);
            let mut g = rng(len as u64);
            let u = randn(&mut g, b * h * len, 1.0);
            let u64_: Vec<f64> = u.iter().map(|&x| x as f64).collect();
            let got = cpu::ssm::s4d_scan(&m, &u, &[b, h, len], disc).unwrap();
            let want = rs::s4d_recurrence(&m, &u64_, len, disc).unwrap();
            check(
                &format!("scan {disc:?} B={b} H={h} N2={n2} L={len}"),
                &got,
                &want,
                Tol {
                    norm: 1e-5,
                    rtol: 1e-3,
                    atol: 1e-5,
                },
            );
        }
    }
    let m = random_ssm(1, 2, 3, S4dInit::Lin);
    assert!(matches!(
        cpu::ssm::s4d_scan(&m, &[0.0f32; 12], &[3, 4], Discretization::Zoh),
        Err(Error::Shape { name: "u", .. })
    ));
}

/// A random DPLR model: Λ with negative real parts and spread phases, small P, Q.
fn dplr_model(seed: u64, h: usize, n: usize) -> rs::DplrSsm {
    let mut g = rng(seed);
    let mut z =
        |s: f64| Complex64::new(s * g.random_range(-1.0..1.0), s * g.random_range(-1.0..1.0));
    let p = (0..h * n).map(|_| z(0.3)).collect();
    let q = (0..h * n).map(|_| z(0.3)).collect();
    let b = (0..h * n).map(|_| z(1.0)).collect();
    let c = (0..h * n).map(|_| z(1.0)).collect();
    let mut g = rng(seed + 1000);
    let lambda = (0..h * n)
        .map(|i| {
            Complex64::new(
                -g.random_range(0.2..1.0),
                std::f64::consts::PI * (i % n) as f64 + g.random_range(-0.5..0.5),
            )
        })
        .collect();
    let dt = (0..h)
        .map(|_| 10f64.powf(g.random_range(-3.0..-1.0)))
        .collect();
    rs::DplrSsm {
        h,
        n,
        lambda,
        p,
        q,
        b,
        c,
        dt,
    }
}

#[test]
fn dplr_kernel_matches_the_dense_reference() {
    let mut seed = 0;
    for (h, n, len) in [
        (2usize, 1usize, 1usize),
        (3, 2, 3),
        (2, 3, 33),
        (2, 64, 1000),
        (1, 65, 300),
        (2, 8, 4096),
    ] {
        seed += 1;
        let m = dplr_model(seed, h, n);
        let got = cpu::ssm::s4_dplr_kernel(&m, len).unwrap();
        let want = rs::dplr_kernel_dense(&m, len).unwrap();
        check(&format!("dplr H={h} N={n} L={len}"), &got, &want, F32);
    }
}

#[test]
fn dplr_bad_input_is_a_typed_error() {
    let mut m = dplr_model(1, 2, 3);
    assert!(matches!(
        cpu::ssm::s4_dplr_kernel(&m, 0),
        Err(Error::InvalidArgument { .. })
    ));
    m.q.pop();
    assert!(matches!(
        cpu::ssm::s4_dplr_kernel(&m, 5),
        Err(Error::Shape { .. })
    ));
}
