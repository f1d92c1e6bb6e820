//! FFT (Stockham) against rustfft, and the causal FFT convolution against direct convolution,
//! at lengths off the power of two, outputs poisoned with NaN before dispatch.

use crate::common;

use common::*;
use longseq::reference::ssm as rs;
use longseq::ssm::{causal_conv, causal_conv_into, fft, FftDirection};
use longseq::{Context, ContextOptions, Element, Error, Tensor};
use num_complex::Complex64;
use rustfft::FftPlanner;

#[test]
fn fft_matches_rustfft() {
    let mut planner = FftPlanner::<f64>::new();
    for (seed, &n) in [1usize, 2, 4, 8, 32, 128, 2048, 8192].iter().enumerate() {
        for dir in [FftDirection::Forward, FftDirection::Inverse] {
            for real in [false, true] {
                let rows = 3;
                let mut g = rng(seed as u64 * 7 + real as u64);
                let re = randn(&mut g, rows * n, 1.0);
                let im = if real {
                    vec![0.0; rows * n]
                } else {
                    randn(&mut g, rows * n, 1.0)
                };
                let c = ctx();
                let tre = Tensor::from_slice(c, &re, &[rows, n]).unwrap();
                let tim = Tensor::from_slice(c, &im, &[rows, n]).unwrap();
                let (ore, oim) = fft(c, &tre, (!real).then_some(&tim), dir).unwrap();
                let (gre, gim) = (ore.to_vec(c).unwrap(), oim.to_vec(c).unwrap());
                let plan = match dir {
                    FftDirection::Forward => planner.plan_fft_forward(n),
                    FftDirection::Inverse => planner.plan_fft_inverse(n),
                };
                let scale = if dir == FftDirection::Inverse {
                    1.0 / n as f64
                } else {
                    1.0
                };
                let mut got = Vec::new();
                let mut want = Vec::new();
                for r in 0..rows {
                    let mut v: Vec<Complex64> = (0..n)
                        .map(|t| Complex64::new(re[r * n + t] as f64, im[r * n + t] as f64))
                        .collect();
                    plan.process(&mut v);
                    for t in 0..n {
                        want.extend([v[t].re * scale, v[t].im * scale]);
                        got.extend([gre[r * n + t] as f64, gim[r * n + t] as f64]);
                    }
                }
                let e = rel_err(&got, &want);
                println!("fft n={n} {dir:?} real={real}: {e:.2e}");
                assert!(e <= TOL_F32, "n={n} {dir:?} real={real}: {e:.3e}");
            }
        }
    }
}

fn conv_case<T: Element>(c: &Context, b: usize, h: usize, len: usize, seed: u64) -> f64 {
    let mut g = rng(seed);
    let r = |x: Vec<f32>| -> Vec<T> { x.into_iter().map(|v| T::from_f64(v as f64)).collect() };
    let u = r(randn(&mut g, b * h * len, 1.0));
    // A decaying kernel, as SSM kernels are, plus noise.
    let k: Vec<T> = r((0..h * len)
        .map(|i| (-((i % len) as f32) / 50.0).exp() * (0.3 * i as f32).cos())
        .zip(randn(&mut g, h * len, 0.05))
        .map(|(a, b)| a + b)
        .collect());
    let d = r(randn(&mut g, h, 1.0));
    let tu = Tensor::from_slice(c, &u, &[b, h, len]).unwrap();
    let tk = Tensor::from_slice(c, &k, &[h, len]).unwrap();
    let td = Tensor::from_slice(c, &d, &[h]).unwrap();
    let out = Tensor::<T>::nan(c, &[b, h, len]).unwrap();
    causal_conv_into(c, &tu, &tk, &td, &out).unwrap();
    let got = to_f64(&out.to_vec(c).unwrap());
    let (u, k, d) = (to_f64(&u), to_f64(&k), to_f64(&d));
    let direct = rs::causal_conv_direct(&u, &k, &d, h, len).unwrap();
    let via_fft = rs::causal_conv(&u, &k, &d, h, len).unwrap();
    assert_close("reference fft vs direct", &via_fft, &direct, 1e-12);
    assert_eq!(to_f64(&tu.to_vec(c).unwrap()), u, "u was modified");
    let tol = if T::DTYPE == longseq::DType::F32 {
        TOL_F32
    } else {
        TOL_F16
    };
    assert_elementwise(&got, &direct, tol);
    rel_err(&got, &direct)
}

/// Elementwise `|got − want| <= tol·(max|want| / 10 + |want|)`, same NaN and ±Inf pattern: small
/// tails must not hide under the normwise norm.
fn assert_elementwise(got: &[f64], want: &[f64], tol: f64) {
    let scale = want
        .iter()
        .filter(|w| w.is_finite())
        .fold(0.0f64, |m, w| m.max(w.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if !w.is_finite() || !g.is_finite() {
            assert!(
                g == w || g.is_nan() && w.is_nan(),
                "[{i}]: got {g}, want {w}"
            );
            continue;
        }
        let bound = tol * (scale / 10.0 + w.abs());
        assert!(
            (g - w).abs() <= bound,
            "[{i}]: got {g}, want {w}, bound {bound:.2e}"
        );
    }
}

/// A context whose workgroup memory is capped at `bytes`: the FFT convolution then runs its
/// multi-pass path (or the four-step with small sub-FFTs).
fn ctx_small_wg(bytes: u32) -> Context {
    Context::with_options(&ContextOptions {
        max_workgroup_storage_size: Some(bytes),
        ..Default::default()
    })
    .expect("an adapter (install lavapipe: apt-get install mesa-vulkan-drivers)")
}

#[test]
fn causal_conv_f32_equals_direct_convolution() {
    for (i, &len) in [1usize, 3, 33, 1000, 4097].iter().enumerate() {
        let e = conv_case::<f32>(ctx(), 2, 3, len, i as u64);
        println!("conv f32 L={len}: {e:.2e}");
        assert!(e <= TOL_F32, "L={len}: {e:.3e}");
    }
}

#[test]
fn causal_conv_f16_storage_both_paths() {
    for (name, c) in [("native", ctx()), ("packed", ctx_packed())] {
        for (i, &len) in [1usize, 33, 1000].iter().enumerate() {
            let e = conv_case::<half::f16>(c, 2, 3, len, 50 + i as u64);
            println!("conv f16 {name} L={len}: {e:.2e}");
            assert!(e <= TOL_F16, "{name} L={len}: {e:.3e}");
        }
    }
}

/// Both paths: workgroup memory capped at 1 KiB (128 complex values) runs the four-step with
/// 32- and 64-point sub-FFTs up to n = 4096 and the multi-pass Stockham path above.
#[test]
fn causal_conv_small_workgroup_memory() {
    let c = ctx_small_wg(1024);
    for (i, &len) in [1usize, 2, 5, 1000, 2049, 3001].iter().enumerate() {
        let e = conv_case::<f32>(&c, 2, 3, len, 200 + i as u64);
        println!("conv f32 small wg L={len}: {e:.2e}");
        assert!(e <= TOL_F32, "L={len}: {e:.3e}");
    }
    let e = conv_case::<half::f16>(&c, 1, 3, 3001, 7);
    assert!(e <= TOL_F16, "f16 L=3001: {e:.3e}");
}

/// u with NaN, +Inf and −Inf at some times: conv == the definition, non-finite only from those
/// times on and of the same kind (±Inf, NaN); the FFT reference agrees with the direct form.
fn nonfinite_case<T: Element>(c: &Context, len: usize, seed: u64) {
    let (b, h) = (2, 3);
    let mut g = rng(seed);
    let mut u = randn(&mut g, b * h * len, 1.0);
    // Row 0 clean; row 1 one NaN; row 2 one +Inf; row 3 +Inf and −Inf; row 4 several of each.
    let mut put = |r: usize, t: usize, v: f32| u[r * len + t.min(len - 1)] = v;
    put(1, len / 2, f32::NAN);
    put(2, len / 3, f32::INFINITY);
    put(3, len / 4, f32::INFINITY);
    put(3, len / 4 + 3, f32::NEG_INFINITY);
    for j in 0..5 {
        put(
            4,
            len / 5 + 7 * j,
            [f32::INFINITY, f32::NEG_INFINITY, f32::NAN][j % 3],
        );
    }
    put(5, len - 1, f32::NEG_INFINITY);
    let k: Vec<f32> = (0..h * len)
        .map(|i| (-((i % len) as f32) / 40.0).exp() * (0.2 * i as f32).cos() + 0.01)
        .collect();
    let d = [1.0f32, -0.5, 0.25];
    let r = |x: &[f32]| -> Vec<T> { x.iter().map(|&v| T::from_f64(v as f64)).collect() };
    let (u, k, d) = (r(&u), r(&k), r(&d));
    let tu = Tensor::from_slice(c, &u, &[b, h, len]).unwrap();
    let tk = Tensor::from_slice(c, &k, &[h, len]).unwrap();
    let td = Tensor::from_slice(c, &d, &[h]).unwrap();
    let out = Tensor::<T>::nan(c, &[b, h, len]).unwrap();
    causal_conv_into(c, &tu, &tk, &td, &out).unwrap();
    let got = to_f64(&out.to_vec(c).unwrap());
    let (u, k, d) = (to_f64(&u), to_f64(&k), to_f64(&d));
    let direct = rs::causal_conv_direct(&u, &k, &d, h, len).unwrap();
    let via_fft = rs::causal_conv(&u, &k, &d, h, len).unwrap();
    assert_elementwise(&via_fft, &direct, 1e-12);
    let tol = if T::DTYPE == longseq::DType::F32 {
        TOL_F32
    } else {
        TOL_F16
    };
    assert_elementwise(&got, &direct, tol);
    let bad = direct.iter().filter(|v| !v.is_finite()).count();
    println!(
        "non-finite L={len}: {bad} of {} outputs non-finite, as the definition",
        got.len()
    );
    assert!(bad > 0 && (len < 40 || bad < got.len() / 2));
}

#[test]
fn causal_conv_nonfinite_inputs_follow_the_definition() {
    for (i, &len) in [1usize, 40, 1000, 3001].iter().enumerate() {
        nonfinite_case::<f32>(ctx(), len, 300 + i as u64);
        nonfinite_case::<f32>(&ctx_small_wg(1024), len, 310 + i as u64);
    }
    nonfinite_case::<half::f16>(ctx(), 1000, 320);
    nonfinite_case::<half::f16>(ctx_packed(), 1000, 321);
}

/// Past the NF_MAX (32) recorded non-finite samples a row is NaN from its first one on, and
/// still finite and exact before it.
#[test]
fn causal_conv_many_nonfinite_inputs() {
    let c = ctx();
    let len = 500;
    let mut u = randn(&mut rng(5), len, 1.0);
    for t in (100..300).step_by(5) {
        u[t] = f32::INFINITY;
    }
    let k: Vec<f32> = (0..len).map(|i| (-(i as f32) / 30.0).exp()).collect();
    let tu = Tensor::from_slice(c, &u, &[1, 1, len]).unwrap();
    let tk = Tensor::from_slice(c, &k, &[1, len]).unwrap();
    let td = Tensor::from_slice(c, &[1.0f32], &[1]).unwrap();
    let y = to_f64(&causal_conv(c, &tu, &tk, &td).unwrap().to_vec(c).unwrap());
    let direct = rs::causal_conv_direct(&to_f64(&u), &to_f64(&k), &[1.0], 1, len).unwrap();
    assert!(rel_err(&y[..100], &direct[..100]) <= TOL_F32);
    assert!(y[100..].iter().all(|v| v.is_nan()));
}

/// One FFT row (or the H kernel spectra) past the binding: the error names the largest L.
#[test]
fn causal_conv_too_long_names_largest_len() {
    let c = ctx_small_bindings(1 << 20);
    let (h, len) = (2, 40_000);
    let t = |n: usize, s: &[usize]| Tensor::from_slice(&c, &vec![1.0f32; n], s).unwrap();
    let err = match causal_conv(
        &c,
        &t(h * len, &[1, h, len]),
        &t(h * len, &[h, len]),
        &t(h, &[h]),
    ) {
        Err(e) => e,
        Ok(_) => panic!("L = {len} past the binding ran"),
    };
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, Error::TooLarge { .. }));
    assert!(msg.contains("largest L on this adapter: 16384"), "{msg}");
    let ok = 16384;
    let y = causal_conv(
        &c,
        &t(h * ok, &[1, h, ok]),
        &t(h * ok, &[h, ok]),
        &t(h, &[h]),
    );
    assert!(y.is_ok());
}

/// Storage bindings capped at 128 KiB so a pass holds 7 of the 20 rows (16 KiB spectra each).
#[test]
fn causal_conv_split_into_passes() {
    let c = ctx_small_bindings(128 * 1024);
    let e = conv_case::<f32>(&c, 4, 5, 700, 77);
    println!("conv split: {e:.2e}");
    assert!(e <= TOL_F32, "{e:.3e}");
}

/// An impulse at t = L−1 with a ones kernel: nothing may wrap around to earlier samples.
#[test]
fn causal_conv_impulse_is_causal() {
    let c = ctx();
    for &len in &[1usize, 3, 33, 1000, 4097] {
        let mut u = vec![0.0f32; len];
        u[len - 1] = 1.0;
        let tu = Tensor::from_slice(c, &u, &[1, 1, len]).unwrap();
        let tk = Tensor::from_slice(c, &vec![1.0f32; len], &[1, len]).unwrap();
        let td = Tensor::from_slice(c, &[0.0f32], &[1]).unwrap();
        let y = causal_conv(c, &tu, &tk, &td).unwrap().to_vec(c).unwrap();
        let before = y[..len - 1].iter().fold(0.0f32, |m, v| m.max(v.abs()));
        println!(
            "impulse L={len}: max |y[t < L-1]| = {before:.1e}, y[L-1] = {}",
            y[len - 1]
        );
        assert!(before <= 1e-6, "L={len}: leak {before:e}");
        assert!((y[len - 1] - 1.0).abs() <= 1e-6);
    }
}

#[test]
fn fft_and_conv_bad_input() {
    let c = ctx();
    let t = |n: usize, s: &[usize]| Tensor::from_slice(c, &vec![1.0f32; n], s).unwrap();
    assert!(matches!(
        fft(c, &t(6, &[2, 3]), None, FftDirection::Forward),
        Err(Error::Shape { name: "re", .. })
    ));
    assert!(matches!(
        fft(
            c,
            &t(8, &[2, 4]),
            Some(&t(4, &[1, 4])),
            FftDirection::Forward
        ),
        Err(Error::Shape { name: "im", .. })
    ));
    let u = t(2 * 3 * 5, &[2, 3, 5]);
    assert!(matches!(
        causal_conv(c, &u, &t(12, &[3, 4]), &t(3, &[3])),
        Err(Error::Shape { name: "K", .. })
    ));
    assert!(matches!(
        causal_conv(c, &u, &t(15, &[3, 5]), &t(2, &[2])),
        Err(Error::Shape { name: "D", .. })
    ));
    assert!(matches!(
        causal_conv_into(c, &u, &t(15, &[3, 5]), &t(3, &[3]), &u),
        Err(Error::InvalidArgument { name: "out", .. })
    ));
}

/// L = 65 537 (n = 262 144): against the f64 FFT reference, itself checked against direct
/// convolution at the shorter lengths above.
#[test]
fn causal_conv_long_sequence() {
    let c = ctx();
    let (b, h, len) = (1, 2, 65537);
    let mut g = rng(99);
    let u = randn(&mut g, b * h * len, 1.0);
    let k: Vec<f32> = (0..h * len)
        .map(|i| (-((i % len) as f32) / 3000.0).exp())
        .zip(randn(&mut g, h * len, 0.01))
        .map(|(a, b)| a + b)
        .collect();
    let d = [0.5f32, -1.0];
    let tu = Tensor::from_slice(c, &u, &[b, h, len]).unwrap();
    let tk = Tensor::from_slice(c, &k, &[h, len]).unwrap();
    let td = Tensor::from_slice(c, &d, &[h]).unwrap();
    let out = Tensor::<f32>::nan(c, &[b, h, len]).unwrap();
    causal_conv_into(c, &tu, &tk, &td, &out).unwrap();
    let got = to_f64(&out.to_vec(c).unwrap());
    let want = rs::causal_conv(&to_f64(&u), &to_f64(&k), &to_f64(&d), h, len).unwrap();
    let e = rel_err(&got, &want);
    println!("conv f32 L=65537: {e:.2e}");
    assert!(e <= TOL_F32, "{e:.3e}");
}
