//! Issue 14 for the S4D ops (scan and convolution modes, each against the reference and the
//! convolution against the scan): `u, y` as `[B, H, L]` or `[B, L, H]` through strides, packed
//! sequences (cu_seqlens), and the state in and out (two calls == one call), against the
//! per-sequence f64 recurrence (`reference::ssm::s4d_recurrence_batch`), with NaN-poisoned
//! outputs, f32 and f16 (native and packed).
//!
//! Tolerances: f32 1e-4 normwise (the recurrence's f32 rounding over L; the S4D modes agree to
//! that bar in tests/suite/ssm_scan.rs), f16 2e-3 (inputs and outputs stored in f16, f32 arithmetic);
//! elementwise with rtol = 10·tol and atol = tol·max|ref| (`assert_close_both`).

use crate::common;

use common::*;
use longseq::reference::ssm::{self as rs, SeqBatch};
use longseq::ssm::{
    s4d_conv_batch, s4d_conv_batch_into, s4d_init, s4d_scan_batch, s4d_scan_batch_into,
    DiagonalSsm, Discretization, S4dBatch, S4dInit,
};
use longseq::types::batch::{CuSeqlens, Layout};
use longseq::{Context, Element, Error, Tensor};
use num_complex::Complex64;

const TOL: f64 = 1e-4;
const CU: [i64; 6] = [0, 15, 100, 300, 1200, 2000];

/// A random S4D model (S4D-Lin A, random B and C, Δ spread over heads), rounded to f32.
fn model(seed: u64, h: usize, n2: usize) -> rs::DiagonalSsm {
    let mut g = rng(seed);
    let a1 = s4d_init(S4dInit::Lin, n2).unwrap();
    let f = |x: f64| x as f32 as f64;
    let mut cn = || {
        let v = randn(&mut g, 2, 0.7);
        Complex64::new(v[0] as f64, v[1] as f64)
    };
    let b = (0..h * n2).map(|_| cn()).collect();
    let c = (0..h * n2).map(|_| cn()).collect();
    rs::DiagonalSsm {
        h,
        n2,
        a: (0..h)
            .flat_map(|_| a1.iter().map(|z| Complex64::new(f(z.re), f(z.im))))
            .collect(),
        b,
        c,
        dt: (0..h)
            .map(|i| f(10f64.powf(-2.5 + 1.5 * i as f64 / h as f64)))
            .collect(),
        d: (0..h).map(|i| f(0.5 - 0.2 * i as f64)).collect(),
    }
}

/// The model's parameters rounded to `T`, as the GPU stores them (the reference sees the same).
fn stored<T: Element>(m: rs::DiagonalSsm) -> rs::DiagonalSsm {
    let r = |x: f64| to_f64(&[T::from_f64(x)])[0];
    let z = |v: &[Complex64]| v.iter().map(|z| Complex64::new(r(z.re), r(z.im))).collect();
    rs::DiagonalSsm {
        a: z(&m.a),
        b: z(&m.b),
        c: z(&m.c),
        dt: m.dt.iter().map(|&x| r(x)).collect(),
        d: m.d.iter().map(|&x| r(x)).collect(),
        ..m
    }
}

/// f32 (re, im) pairs `[N, H, N2, 2]` as complex.
fn complex(x: &[f32]) -> Vec<Complex64> {
    x.chunks(2)
        .map(|p| Complex64::new(p[0] as f64, p[1] as f64))
        .collect()
}

fn flat(x: &[Complex64]) -> Vec<f64> {
    x.iter().flat_map(|z| [z.re, z.im]).collect()
}

/// Which mode runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Scan,
    Conv,
}

/// One case: u random in `T`, an optional random initial state, y NaN-poisoned; y and the final
/// state against the reference; tokens in no sequence must stay NaN. Returns (y, final state).
#[allow(clippy::too_many_arguments)]
fn check<T: Element>(
    c: &Context,
    mode: Mode,
    (b, h, n2, len): (usize, usize, usize, usize),
    layout: Layout,
    cu: Option<&CuSeqlens>,
    with_x0: bool,
    seed: u64,
    tol: f64,
) -> (Vec<f64>, Vec<f64>) {
    let m = stored::<T>(model(seed, h, n2));
    let dev = DiagonalSsm::<T>::from_host(c, &m).unwrap();
    let mut g = rng(seed + 1);
    let u: Vec<T> = randn(&mut g, b * h * len, 1.0)
        .iter()
        .map(|&v| T::from_f64(v as f64))
        .collect();
    let shape = match layout {
        Layout::Bhld => [b, h, len],
        Layout::Blhd => [b, len, h],
    };
    let n = cu.map_or(b, |c| c.count());
    let x0: Vec<f32> = randn(&mut g, n * h * n2 * 2, 0.5);
    let tu = Tensor::from_slice(c, &u, &shape).unwrap();
    let tx0 = Tensor::from_slice(c, &x0, &[n, h, n2, 2]).unwrap();
    let y = Tensor::<T>::nan(c, &shape).unwrap();
    let fin = Tensor::<f32>::nan(c, &[n, h, n2, 2]).unwrap();
    let opts = S4dBatch {
        layout,
        cu_seqlens: cu,
        initial_state: with_x0.then_some(&tx0),
    };
    let disc = Discretization::Zoh;
    match mode {
        Mode::Scan => s4d_scan_batch_into(c, &dev, &tu, disc, &opts, (&y, &fin)).unwrap(),
        Mode::Conv => s4d_conv_batch_into(c, &dev, &tu, disc, &opts, (&y, &fin)).unwrap(),
    }
    let sb = SeqBatch {
        batch: b,
        len,
        layout,
        cu_seqlens: cu,
    };
    let mut want = vec![f64::NAN; u.len()];
    let x0c = complex(&x0);
    let wfin = rs::s4d_recurrence_batch(
        &m,
        &to_f64(&u),
        &sb,
        with_x0.then_some(&x0c[..]),
        disc,
        &mut want,
    )
    .unwrap();
    let got = to_f64(&y.to_vec(c).unwrap());
    let label = format!(
        "{mode:?} {layout:?} {:?} x0={with_x0} {b}x{h}x{n2}x{len}",
        T::DTYPE
    );
    // NaN where the reference wrote nothing: untouched tokens keep the poison.
    assert_close_both(&format!("{label} y"), &got, &want, tol);
    let gfin = to_f64(&fin.to_vec(c).unwrap());
    assert_close_both(&format!("{label} final state"), &gfin, &flat(&wfin), tol);
    (got, gfin)
}

fn both_layouts_ragged_lengths_f32(mode: Mode) {
    for (i, &s) in [
        (2, 3, 16, 63),
        (1, 1, 8, 1),
        (2, 3, 32, 1000),
        (3, 2, 7, 257),
    ]
    .iter()
    .enumerate()
    {
        for layout in [Layout::Bhld, Layout::Blhd] {
            for x0 in [false, true] {
                check::<f32>(ctx(), mode, s, layout, None, x0, i as u64, TOL);
            }
        }
    }
}

fn packed_sequences_f32(mode: Mode) {
    // L past the last offset: those tokens stay untouched (NaN).
    let cu = CuSeqlens::new("test", &CU, 2050).unwrap();
    let empty = CuSeqlens::new("test", &[0, 7, 7, 300], 301).unwrap();
    for layout in [Layout::Bhld, Layout::Blhd] {
        for x0 in [false, true] {
            check::<f32>(ctx(), mode, (1, 3, 16, 2050), layout, Some(&cu), x0, 3, TOL);
            check::<f32>(
                ctx(),
                mode,
                (1, 2, 5, 301),
                layout,
                Some(&empty),
                x0,
                4,
                TOL,
            );
        }
    }
}

fn f16_native_and_packed(mode: Mode) {
    let cu = CuSeqlens::new("test", &[0, 15, 100, 300, 377], 400).unwrap();
    for layout in [Layout::Bhld, Layout::Blhd] {
        for (c, name) in [(ctx(), "native"), (ctx_packed(), "packed")] {
            println!("f16 {name} {layout:?}");
            check::<half::f16>(c, mode, (2, 3, 16, 500), layout, None, true, 5, TOL_F16);
        }
        // Packed sequences in f16, native and without SHADER_F16 (the packed-f16 output is
        // staged from the poisoned y: tokens past the last offset stay NaN).
        for c in [ctx(), ctx_packed()] {
            let s = (1, 3, 16, 400);
            check::<half::f16>(c, mode, s, layout, Some(&cu), true, 6, TOL_F16);
        }
    }
}

#[test]
fn scan_both_layouts_ragged_lengths_f32() {
    both_layouts_ragged_lengths_f32(Mode::Scan);
}

#[test]
fn conv_both_layouts_ragged_lengths_f32() {
    both_layouts_ragged_lengths_f32(Mode::Conv);
}

#[test]
fn scan_packed_sequences_f32() {
    packed_sequences_f32(Mode::Scan);
}

#[test]
fn conv_packed_sequences_f32() {
    packed_sequences_f32(Mode::Conv);
}

#[test]
fn scan_f16_native_and_packed() {
    f16_native_and_packed(Mode::Scan);
}

#[test]
fn conv_f16_native_and_packed() {
    f16_native_and_packed(Mode::Conv);
}

/// fla's (B, T, H) = (1, 63, 1), (2, 500, 3), (2, 1000, 3) (N2 = 32 for its D = 64), both
/// layouts, with and without an initial state, and its cu_seqlens packed in L = 2011: the
/// convolution mode against the reference (in `check`) and against the scan.
#[test]
fn conv_equals_scan_at_fla_shapes() {
    let cu = CuSeqlens::new("test", &CU, 2011).unwrap();
    let cases = [
        ((1, 1, 32, 63), None),
        ((2, 3, 32, 500), None),
        ((2, 3, 32, 1000), None),
        ((1, 3, 32, 2011), Some(&cu)),
    ];
    for (i, (s, cu)) in cases.into_iter().enumerate() {
        for layout in [Layout::Bhld, Layout::Blhd] {
            for x0 in [false, true] {
                let seed = 20 + i as u64;
                let (yc, fc) = check::<f32>(ctx(), Mode::Conv, s, layout, cu, x0, seed, TOL);
                let (ys, fs) = check::<f32>(ctx(), Mode::Scan, s, layout, cu, x0, seed, TOL);
                let label = format!("conv vs scan {s:?} {layout:?} x0={x0}");
                assert_close_both(&label, &yc, &ys, TOL);
                assert_close_both(&format!("{label} state"), &fc, &fs, TOL);
            }
        }
    }
    // f16, native and packed, over the offsets.
    for c in [ctx(), ctx_packed()] {
        let s = (1, 3, 32, 2011);
        let (yc, fc) =
            check::<half::f16>(c, Mode::Conv, s, Layout::Blhd, Some(&cu), true, 30, TOL_F16);
        let (ys, fs) =
            check::<half::f16>(c, Mode::Scan, s, Layout::Blhd, Some(&cu), true, 30, TOL_F16);
        assert_close_both("f16 conv vs scan", &yc, &ys, TOL_F16);
        assert_close_both("f16 conv vs scan state", &fc, &fs, TOL_F16);
    }
}

/// Runs `u` (host, in `layout`) in one call, and in two calls split at token `cut` with the
/// first call's final state as the second's initial state: the same y and final state.
fn two_calls_equal_one(mode: Mode) {
    let c = ctx();
    let (b, h, n2, len, cut) = (2, 3, 16, 1100, 417);
    let m = model(9, h, n2);
    let dev = DiagonalSsm::<f32>::from_host(c, &m).unwrap();
    let u = randn(&mut rng(10), b * h * len, 1.0);
    let disc = Discretization::Zoh;
    let run = |u: &Tensor<f32>, o: &S4dBatch<'_>| match mode {
        Mode::Scan => s4d_scan_batch(c, &dev, u, disc, o).unwrap(),
        Mode::Conv => s4d_conv_batch(c, &dev, u, disc, o).unwrap(),
    };
    for layout in [Layout::Bhld, Layout::Blhd] {
        let sb = |l| SeqBatch {
            batch: b,
            len: l,
            layout,
            cu_seqlens: None,
        };
        let shape = |l| match layout {
            Layout::Bhld => vec![b, h, l],
            Layout::Blhd => vec![b, l, h],
        };
        // Tokens [t0, t1) of u as their own tensor.
        let part = |t0: usize, t1: usize| -> Vec<f32> {
            let (full, p) = (sb(len), sb(t1 - t0));
            let mut x = vec![0.0; b * h * (t1 - t0)];
            for bb in 0..b {
                for hh in 0..h {
                    for t in t0..t1 {
                        x[p.index(bb, hh, t - t0, h)] = u[full.index(bb, hh, t, h)];
                    }
                }
            }
            x
        };
        let opts = S4dBatch {
            layout,
            ..Default::default()
        };
        let tu = Tensor::from_slice(c, &u, &shape(len)).unwrap();
        let (y, fin) = run(&tu, &opts);
        let u1 = Tensor::from_slice(c, &part(0, cut), &shape(cut)).unwrap();
        let u2 = Tensor::from_slice(c, &part(cut, len), &shape(len - cut)).unwrap();
        let (y1, f1) = run(&u1, &opts);
        let o2 = S4dBatch {
            initial_state: Some(&f1),
            ..opts
        };
        let (y2, f2) = run(&u2, &o2);
        // Reassemble the two y into one in the layout.
        let (y1, y2) = (y1.to_vec(c).unwrap(), y2.to_vec(c).unwrap());
        let mut both = vec![f32::NAN; u.len()];
        for bb in 0..b {
            for hh in 0..h {
                for t in 0..len {
                    let (src, i) = match t < cut {
                        true => (&y1, sb(cut).index(bb, hh, t, h)),
                        false => (&y2, sb(len - cut).index(bb, hh, t - cut, h)),
                    };
                    both[sb(len).index(bb, hh, t, h)] = src[i];
                }
            }
        }
        let label = format!("{mode:?} {layout:?} two calls");
        assert_close_both(&label, &to_f64(&both), &to_f64(&y.to_vec(c).unwrap()), TOL);
        let (fa, fb) = (f2.to_vec(c).unwrap(), fin.to_vec(c).unwrap());
        assert_close_both(&format!("{label} state"), &to_f64(&fa), &to_f64(&fb), TOL);
    }
}

#[test]
fn scan_two_calls_equal_one() {
    two_calls_equal_one(Mode::Scan);
}

#[test]
fn conv_two_calls_equal_one() {
    two_calls_equal_one(Mode::Conv);
}

#[test]
fn bad_batches_are_typed_errors() {
    let c = ctx();
    let m = DiagonalSsm::<f32>::from_host(c, &model(1, 2, 4)).unwrap();
    let disc = Discretization::Zoh;
    let u = Tensor::<f32>::nan(c, &[2, 2, 50]).unwrap();
    let cu = CuSeqlens::new("test", &[0, 10, 50], 50).unwrap();
    let long = CuSeqlens::new("test", &[0, 10, 60], 60).unwrap();
    let u1 = Tensor::<f32>::nan(c, &[1, 2, 50]).unwrap();
    let x0 = Tensor::<f32>::nan(c, &[3, 2, 4, 2]).unwrap();
    let cases: [(&Tensor<f32>, S4dBatch<'_>); 4] = [
        // B = 2 with packed sequences.
        (
            &u,
            S4dBatch {
                cu_seqlens: Some(&cu),
                ..Default::default()
            },
        ),
        // The last offset past this u's L.
        (
            &u1,
            S4dBatch {
                cu_seqlens: Some(&long),
                ..Default::default()
            },
        ),
        // An initial state for 3 sequences, 2 given.
        (
            &u,
            S4dBatch {
                initial_state: Some(&x0),
                ..Default::default()
            },
        ),
        // [B, L, H] read with H = 50.
        (
            &u,
            S4dBatch {
                layout: Layout::Blhd,
                ..Default::default()
            },
        ),
    ];
    for (u, o) in cases {
        let e = s4d_scan_batch(c, &m, u, disc, &o)
            .err()
            .expect("a typed error");
        assert!(
            matches!(e, Error::Shape { .. } | Error::InvalidArgument { .. }),
            "{e}"
        );
        let e = s4d_conv_batch(c, &m, u, disc, &o)
            .err()
            .expect("a typed error");
        assert!(
            matches!(e, Error::Shape { .. } | Error::InvalidArgument { .. }),
            "{e}"
        );
    }
}

/// Bindings small enough that the rows split into passes (a pass can start inside a batch entry
/// for [B, H, L]; whole entries for [B, L, H]) and the states into chunks along L (the carry and
/// the final state cross chunks; packed sequences cross chunk boundaries).
#[test]
fn split_into_passes_and_chunks() {
    let c = ctx_small_bindings(64 * 1024);
    let cu = CuSeqlens::new("test", &[0, 15, 100, 300, 700, 990], 1000).unwrap();
    for layout in [Layout::Bhld, Layout::Blhd] {
        check::<f32>(
            &c,
            Mode::Scan,
            (2, 3, 16, 1000),
            layout,
            None,
            true,
            11,
            TOL,
        );
        check::<f32>(
            &c,
            Mode::Scan,
            (1, 3, 16, 1000),
            layout,
            Some(&cu),
            true,
            12,
            TOL,
        );
    }
}

/// The convolution mode with 64 KiB bindings: the row convolution runs in several passes.
#[test]
fn conv_split_into_passes() {
    let c = ctx_small_bindings(64 * 1024);
    let cu = CuSeqlens::new("test", &[0, 15, 100, 300, 700, 990], 1000).unwrap();
    for layout in [Layout::Bhld, Layout::Blhd] {
        let s = (2, 3, 16, 1000);
        check::<f32>(&c, Mode::Conv, s, layout, None, true, 11, TOL);
        let s = (1, 3, 16, 1000);
        check::<f32>(&c, Mode::Conv, s, layout, Some(&cu), true, 12, TOL);
    }
}
