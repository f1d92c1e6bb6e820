//! S4D convolution kernel: GPU vs the f64 CPU reference over L, N, discretisation, init and
//! dtype; large phases; tiny Δ; the inits; bad input.

use crate::common;

use common::*;
use half::f16;
use longseq::reference::ssm as rs;
use longseq::ssm::{s4d_init, s4d_kernel, s4d_kernel_into, DiagonalSsm, Discretization, S4dInit};
use longseq::{Context, Element, Error, Tensor};
use num_complex::Complex64;
use rand::Rng;

const DISCS: [Discretization; 2] = [Discretization::Zoh, Discretization::Bilinear];

/// H heads with A from `init`, B and C standard complex normal, Δ log-uniform in [1e-3, 1e-1].
fn random_ssm(seed: u64, h: usize, n2: usize, init: S4dInit) -> rs::DiagonalSsm {
    let mut g = rng(seed);
    let a1 = s4d_init(init, n2).unwrap();
    let cn = |g: &mut _| {
        let v = randn(g, 2, 0.7);
        Complex64::new(v[0] as f64, v[1] as f64)
    };
    let a = (0..h).flat_map(|_| a1.clone()).collect();
    let b = (0..h * n2).map(|_| cn(&mut g)).collect();
    let c = (0..h * n2).map(|_| cn(&mut g)).collect();
    let dt = (0..h)
        .map(|_| 10f64.powf(g.random_range(-3.0..-1.0)))
        .collect();
    let d = randn(&mut g, h, 1.0).into_iter().map(f64::from).collect();
    rs::DiagonalSsm {
        h,
        n2,
        a,
        b,
        c,
        dt,
        d,
    }
}

/// The host SSM with every value rounded through `T`, as the GPU sees it.
fn rounded<T: Element>(m: &rs::DiagonalSsm) -> rs::DiagonalSsm {
    let r = |x: f64| T::from_f64(x).to_f64();
    let rc = |z: &Complex64| Complex64::new(r(z.re), r(z.im));
    rs::DiagonalSsm {
        a: m.a.iter().map(rc).collect(),
        b: m.b.iter().map(rc).collect(),
        c: m.c.iter().map(rc).collect(),
        dt: m.dt.iter().map(|&x| r(x)).collect(),
        d: m.d.iter().map(|&x| r(x)).collect(),
        ..m.clone()
    }
}

fn gpu_vs_cpu<T: Element>(
    ctx: &Context,
    m: &rs::DiagonalSsm,
    len: usize,
    disc: Discretization,
) -> f64 {
    let dev = DiagonalSsm::<T>::from_host(ctx, m).unwrap();
    let out = Tensor::<T>::nan(ctx, &[m.h, len]).unwrap();
    s4d_kernel_into(ctx, &dev, &out, disc).unwrap();
    let got = to_f64(&out.to_vec(ctx).unwrap());
    let want = rs::s4d_kernel(&rounded::<T>(m), len, disc).unwrap();
    rel_err(&got, &want)
}

#[test]
fn s4d_kernel_f32_matches_reference() {
    let mut seed = 0;
    for &len in &[1, 3, 33, 1000, 4097] {
        for &n2 in &[1, 32] {
            for init in [S4dInit::Lin, S4dInit::Inv] {
                for disc in DISCS {
                    seed += 1;
                    let m = random_ssm(seed, 3, n2, init);
                    let e = gpu_vs_cpu::<f32>(ctx(), &m, len, disc);
                    println!("f32 L={len} N={} {init:?} {disc:?}: {e:.2e}", 2 * n2);
                    assert!(
                        e <= TOL_F32,
                        "f32 L={len} N2={n2} {init:?} {disc:?}: {e:.3e}"
                    );
                }
            }
        }
    }
}

#[test]
fn s4d_kernel_f16_storage_both_paths() {
    for (name, c) in [("native", ctx()), ("packed", ctx_packed())] {
        for (i, &len) in [1usize, 33, 1000].iter().enumerate() {
            for disc in DISCS {
                let m = random_ssm(100 + i as u64, 2, 32, S4dInit::Lin);
                let e = gpu_vs_cpu::<f16>(c, &m, len, disc);
                println!("f16 {name} L={len} {disc:?}: {e:.2e}");
                assert!(e <= TOL_F16, "f16 {name} L={len} {disc:?}: {e:.3e}");
            }
        }
    }
}

/// Weak decay and fast rotation: `l·Δ·Im A` reaches ~10⁴ rad at L = 4097 while |Ā^l| stays near 1.
/// ZOH forms its phase step exactly and keeps f32 accuracy; bilinear's phase step arg(Ā) carries
/// one f32 rounding, which l multiplies (bound l·|arg Ā|·2⁻²³: ~1e-3 here).
#[test]
fn s4d_kernel_large_phase_keeps_accuracy() {
    let (h, n2) = (2, 16);
    let mut m = random_ssm(7, h, n2, S4dInit::Lin);
    for (i, a) in m.a.iter_mut().enumerate() {
        *a = Complex64::new(-1e-4, 5.0 + 3.7 * (i % n2) as f64);
    }
    m.dt = vec![0.05, 0.0371];
    let max_phase = 4096.0 * 0.05 * (5.0 + 3.7 * 15.0);
    for disc in DISCS {
        let e = gpu_vs_cpu::<f32>(ctx(), &m, 4097, disc);
        println!("large phase (max {max_phase:.0} rad) {disc:?}: {e:.2e}");
        let tol = match disc {
            Discretization::Bilinear => 1e-3,
            _ => TOL_F32,
        };
        assert!(e <= tol, "{disc:?}: {e:.3e}");
    }
}

/// ZOH with Δ = 1e-7: B̄ ≈ ΔB must keep its digits (no e^{ΔA} − 1 cancellation).
#[test]
fn s4d_kernel_tiny_dt() {
    let mut m = random_ssm(9, 2, 8, S4dInit::Inv);
    m.dt = vec![1e-7, 3e-7];
    for disc in DISCS {
        let e = gpu_vs_cpu::<f32>(ctx(), &m, 65, disc);
        println!("dt=1e-7 {disc:?}: {e:.2e}");
        assert!(e <= 1e-6, "{disc:?}: {e:.3e}");
    }
}

/// The reference against the impulse response of the recurrence x_{l+1} = Ā x_l, x_0 = B̄,
/// K_l = 2 Re C x_l: repeated products instead of powu, in f64.
#[test]
fn reference_kernel_is_the_impulse_response() {
    for disc in DISCS {
        let m = random_ssm(11, 2, 5, S4dInit::Inv);
        let len = 300;
        let k = rs::s4d_kernel(&m, len, disc).unwrap();
        let (ab, bb) = m.discretize(disc).unwrap();
        let mut want = vec![0.0; m.h * len];
        for i in 0..m.h * m.n2 {
            let mut x = bb[i];
            for l in 0..len {
                want[(i / m.n2) * len + l] += 2.0 * (m.c[i] * x).re;
                x *= ab[i];
            }
        }
        assert_close("reference vs recurrence", &k, &want, 1e-12);
    }
}

#[test]
fn s4d_inits() {
    let pi = std::f64::consts::PI;
    let lin = s4d_init(S4dInit::Lin, 4).unwrap();
    assert_eq!(lin[3], Complex64::new(-0.5, 3.0 * pi));
    let inv = s4d_init(S4dInit::Inv, 4).unwrap();
    // N = 8: (8/π)(8/(2n+1) − 1).
    assert!((inv[1].im - 8.0 / pi * (8.0 / 3.0 - 1.0)).abs() < 1e-12);
    // N = 2: S = [[0, √3/2], [−√3/2, 0]] has eigenvalues ±i√3/2.
    let l2 = s4d_init(S4dInit::LegS, 1).unwrap();
    assert!((l2[0] - Complex64::new(-0.5, 3f64.sqrt() / 2.0)).norm() < 1e-12);
    for n2 in [2, 8, 32] {
        let n = 2 * n2;
        let legs = s4d_init(S4dInit::LegS, n2).unwrap();
        // Normal S: Σ|λ|² = ‖S‖²_F, i.e. 2 Σ σ² = 2 Σ_{j>k} (2j+1)(2k+1)/4.
        let fro: f64 = (0..n)
            .flat_map(|j| (0..j).map(move |k| ((2 * j + 1) * (2 * k + 1)) as f64 / 4.0))
            .sum();
        let s2: f64 = legs.iter().map(|z| z.im * z.im).sum();
        assert!((s2 - fro).abs() <= 1e-10 * fro, "N={n}: {s2} vs {fro}");
        assert!(legs.windows(2).all(|w| w[0].im < w[1].im) && legs[0].im > 0.0);
        // The kernel runs on it.
        let mut m = random_ssm(3, 1, n2, S4dInit::Lin);
        m.a = legs;
        assert!(gpu_vs_cpu::<f32>(ctx(), &m, 100, Discretization::Zoh) <= TOL_F32);
    }
}

#[test]
fn s4d_kernel_bad_input() {
    let c = ctx();
    let m = random_ssm(1, 2, 3, S4dInit::Lin);
    let dev = DiagonalSsm::<f32>::from_host(c, &m).unwrap();
    let mut bad = dev.clone();
    bad.c_im = Tensor::from_slice(c, &[0.0f32; 4], &[2, 2]).unwrap();
    assert!(matches!(
        s4d_kernel(c, &bad, 10, Discretization::Zoh),
        Err(Error::Shape { name: "C_im", .. })
    ));
    let mut bad = dev.clone();
    bad.dt = Tensor::from_slice(c, &[0.1f32; 3], &[3]).unwrap();
    assert!(matches!(
        s4d_kernel(c, &bad, 10, Discretization::Zoh),
        Err(Error::Shape { name: "dt", .. })
    ));
    assert!(matches!(
        s4d_kernel(c, &dev, 0, Discretization::Zoh),
        Err(Error::InvalidArgument { .. })
    ));
    let out = Tensor::<f32>::nan(c, &[3, 10]).unwrap();
    assert!(matches!(
        s4d_kernel_into(c, &dev, &out, Discretization::Zoh),
        Err(Error::Shape { name: "out", .. })
    ));
    let mut hm = m.clone();
    hm.dt[1] = -1.0;
    assert!(matches!(
        DiagonalSsm::<f32>::from_host(c, &hm),
        Err(Error::InvalidArgument { name: "dt", .. })
    ));
    hm.dt[1] = 0.1;
    hm.b.pop();
    assert!(matches!(
        rs::s4d_kernel(&hm, 5, Discretization::Zoh),
        Err(Error::Shape { name: "B", .. })
    ));
}

#[test]
fn s4d_kernel_long_sequence() {
    for disc in DISCS {
        let m = random_ssm(21, 2, 32, S4dInit::Lin);
        let e = gpu_vs_cpu::<f32>(ctx(), &m, 65537, disc);
        println!("f32 L=65537 {disc:?}: {e:.2e}");
        assert!(e <= TOL_F32, "{disc:?}: {e:.3e}");
    }
}

/// Storage bindings capped at 16 KiB (4096 f32 outputs): one head's row of 10 001 splits along
/// L into passes that start and end inside rows; f16 through the packed path too.
#[test]
fn s4d_kernel_split_along_len() {
    let c = ctx_small_bindings(16 * 1024);
    let m = random_ssm(31, 3, 8, S4dInit::Lin);
    for disc in DISCS {
        let e = gpu_vs_cpu::<f32>(&c, &m, 10_001, disc);
        println!("f32 split along L {disc:?}: {e:.2e}");
        assert!(e <= TOL_F32, "{disc:?}: {e:.3e}");
    }
    let e = gpu_vs_cpu::<f16>(&c, &m, 5_000, Discretization::Zoh);
    assert!(e <= TOL_F16, "f16: {e:.3e}");
}
