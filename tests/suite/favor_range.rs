//! FAVOR+ at large activation norms (issue 11, item 3): positive features of real-ish queries and
//! keys rescaled to ‖q‖, ‖k‖ ≈ 40 (Dk = 64, M = 256) span far more than f32's exponent range.
//! With one key stabiliser per head, some rows lost every weight and came out 0 (relative error
//! 0.58); with per-feature key stabilisers folded into the query side, no row is lost. Causal, a
//! key inside a row's own chunk whose norm drops (a sink: its logits jump by ~10²) used to
//! underflow the earlier rows of that chunk; the chunk's own keys now go in the log domain.

use crate::common;

use common::*;
use longseq::attention::linear::check_shapes;
use longseq::attention::{draw_omega, favor_attention_into, FavorKind, FavorOptions, OmegaDraw};
use longseq::reference;
use longseq::{Context, Element, Tensor};
use rand::Rng;

const NORM: f32 = 40.0;

/// Where keys of small norm (4, like attention-sink tokens) sit among the norm-40 keys.
#[derive(Clone, Copy)]
enum Sinks {
    None,
    /// About 1 % of positions, at random.
    Random,
    /// One key at this position.
    At(usize),
    /// Keys from this position on have norm 1.5·40 (‖k'‖²/2 larger by ≈ 125 than the earlier keys').
    LargeFrom(usize),
}

/// Activations with structure as in a trained model: a large offset shared by every row (its sign
/// opposite for queries and keys, so qᵀk/√d is very negative: ≈ −150), a few dominant directions
/// and heavy-ish tails, each row rescaled to ‖x‖ ≈ 40 (± 10 %), except the `sinks`.
fn activations(seed: u64, l: usize, d: usize, sign: f32, sinks: Sinks) -> Vec<f32> {
    let mean: Vec<f32> = randn(&mut rng(1), d, 15.0)
        .iter()
        .map(|m| sign * m)
        .collect();
    let mut g = rng(seed);
    let dirs: Vec<Vec<f32>> = (0..4).map(|_| randn(&mut g, d, 1.0)).collect();
    let mut x = Vec::with_capacity(l * d);
    for t in 0..l {
        let coef = randn(&mut g, dirs.len(), 1.5);
        let noise = randn(&mut g, d, 0.5);
        let tail: f32 = if g.random::<f32>() < 0.1 { 3.0 } else { 1.0 };
        let row: Vec<f32> = (0..d)
            .map(|a| {
                let low: f32 = dirs.iter().zip(&coef).map(|(v, c)| v[a] * c).sum();
                mean[a] + low + tail * noise[a]
            })
            .collect();
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        let sink = match sinks {
            Sinks::None => false,
            Sinks::Random => g.random::<f32>() < 0.01,
            Sinks::At(p) => p == t,
            Sinks::LargeFrom(_) => false,
        };
        let s = if sink {
            4.0
        } else if matches!(sinks, Sinks::LargeFrom(p) if t >= p) {
            1.5 * NORM * (0.9 + 0.2 * g.random::<f32>())
        } else {
            NORM * (0.9 + 0.2 * g.random::<f32>())
        };
        x.extend(row.iter().map(|v| v * s / n));
    }
    x
}

/// (relative error, rows all zero on the GPU but not in the reference, [`sensitivity`]).
fn run<T: Element>(
    ctx: &Context,
    dims: (usize, usize, usize, usize, usize),
    case: (FavorKind, bool, Sinks),
    seed: u64,
    conv: impl Fn(&[f32]) -> Vec<T>,
) -> (f64, usize, f64) {
    run_as(ctx, dims, case, (seed, Path::Op), conv)
}

/// Which implementation [`run_as`] checks.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// `favor_attention_into` on the GPU.
    Op,
    /// Recurrent decoding's prefill on the GPU (rows and state).
    Prefill,
    /// The f32 CPU path, `longseq::cpu::attention::favor_attention`.
    Cpu,
}

/// As [`run`], on the given [`Path`].
fn run_as<T: Element>(
    ctx: &Context,
    (rows, l, dk, dv, m): (usize, usize, usize, usize, usize),
    (kind, causal, sinks): (FavorKind, bool, Sinks),
    (seed, path): (u64, Path),
    conv: impl Fn(&[f32]) -> Vec<T>,
) -> (f64, usize, f64) {
    let mut q = Vec::new();
    let mut k = Vec::new();
    for r in 0..rows as u64 {
        q.extend(activations(seed + 10 * r, l, dk, 1.0, Sinks::None));
        k.extend(activations(seed + 10 * r + 1, l, dk, -1.0, sinks));
    }
    let v = randn(&mut rng(seed + 7), rows * l * dv, 1.0);
    let w = draw_omega(m, dk, OmegaDraw::OrthogonalChi, seed).unwrap();
    let o = FavorOptions { kind, causal };
    let (q, k, v) = (conv(&q), conv(&k), conv(&v));
    let (sq, sv) = ([rows, l, dk], [rows, l, dv]);
    let d = check_shapes("t", &sq, &sq, &sv).unwrap();
    let t = |x: &[T], s: &[usize]| Tensor::from_slice(ctx, x, s).unwrap();
    let out = Tensor::<T>::nan(ctx, &sv).unwrap();
    let tw = Tensor::from_slice(ctx, &w, &[m, dk]).unwrap();
    let (tq, tk, tv) = (t(&q, &sq), t(&k, &sq), t(&v, &sv));
    let got = if path == Path::Cpu {
        to_f64(&longseq::cpu::attention::favor_attention(&q, &k, &v, &d, &w, &o).unwrap())
    } else {
        if path == Path::Prefill {
            use longseq::attention::recurrent::{prefill_into, Features, RecurrentState};
            let f = Features::Favor { omega: tw, kind };
            let st = RecurrentState::empty(ctx, &f, &[rows], dk, dv).unwrap();
            prefill_into(ctx, &tq, &tk, &tv, &out, &st).unwrap();
        } else {
            favor_attention_into(ctx, &tq, &tk, &tv, &tw, &out, &o).unwrap();
        }
        to_f64(&out.to_vec(ctx).unwrap())
    };
    let want = reference::attention::favor_attention(&q, &k, &v, &d, &w, &o).unwrap();
    assert!(
        want.iter().all(|x| x.is_finite()),
        "the f64 estimator is finite here"
    );
    let lost = got
        .chunks(dv)
        .zip(want.chunks(dv))
        .filter(|(g, w)| g.iter().all(|&x| x == 0.0) && w.iter().any(|&x| x != 0.0))
        .count();
    (
        rel_err(&got, &want),
        lost,
        sensitivity(&q, &k, &v, &d, &w, &o, &want),
    )
}

/// Trig only (else 0): the estimator's own sensitivity to f32 rounding, the relative change of the
/// f64 reference when q and k move by 2^-23 relative (random sign). Sums of cosines cancel, so
/// some rows lose digits in any f32 evaluation; the GPU's error is measured against this.
fn sensitivity<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &longseq::attention::linear::AttnDims,
    w: &[f32],
    o: &FavorOptions,
    want: &[f64],
) -> f64 {
    if o.kind != FavorKind::Trig {
        return 0.0;
    }
    let mut g = rng(99);
    let mut nudge = |x: &[T]| -> Vec<f32> {
        let s = 2f64.powi(-23);
        let f = |y: f64, r: bool| (y * (1.0 + if r { s } else { -s })) as f32;
        to_f64(x)
            .iter()
            .map(|&y| f(y, g.random::<bool>()))
            .collect()
    };
    let (qp, kp) = (nudge(q), nudge(k));
    let v32: Vec<f32> = to_f64(v).iter().map(|&y| y as f32).collect();
    let moved = reference::attention::favor_attention(&qp, &kp, &v32, d, w, o).unwrap();
    rel_err(&moved, want)
}

const DIMS: (usize, usize, usize, usize, usize) = (2, 333, 64, 24, 256);

/// Non-causal with random sinks; causal with one sink at 256 (a chunk boundary for every chunk
/// length the engine picks), at 300 (inside a chunk for chunks of 8 to 64: the rows before it in
/// its chunk used to lose precision, relative error ~1 with those rows ~0) and at random.
const CASES: [(bool, Sinks); 5] = [
    (false, Sinks::Random),
    (true, Sinks::At(256)),
    (true, Sinks::None),
    (true, Sinks::At(300)),
    (true, Sinks::Random),
];

fn check<T: Element>(ctx: &Context, label: &str, tol: f64, conv: impl Fn(&[f32]) -> Vec<T>) {
    for (i, case) in CASES.into_iter().enumerate() {
        let case3 = (FavorKind::Positive, case.0, case.1);
        let (e, lost, _) = run(ctx, DIMS, case3, 11 + i as u64, &conv);
        let causal = case.0;
        eprintln!("{label} causal={causal}: rel err {e:.3e}, {lost} rows lost");
        assert_eq!(lost, 0, "{label} case {i}: rows lost");
        assert!(
            e <= tol,
            "{label} case {i}: relative error {e:.3e} > {tol:.1e}"
        );
    }
}

/// f32: the reference within f32 rounding of logits of size ~10² (1e-5 relative after exp).
#[test]
fn norm_40_rows_are_not_lost_f32() {
    check(ctx(), "f32 cpu tiles", 1e-4, |x| x.to_vec());
    check(ctx_gpu_tiles(), "f32 gpu tiles", 1e-4, |x| x.to_vec());
}

/// f16 storage (f32 features): the reference on the same f16-rounded inputs.
#[test]
fn norm_40_rows_are_not_lost_f16() {
    check(ctx(), "f16 native", 2e-3, to_f16);
    check(ctx_packed(), "f16 packed", 2e-3, to_f16);
    check(ctx_gpu_tiles_packed(), "f16 packed gpu tiles", 2e-3, to_f16);
}

/// Trig features, causal, keys of norm 60 from position 200 on (their ‖k'‖²/2 ≈ 225 against
/// ≈ 100 before). With one key stabiliser per head (the largest ‖k'‖²/2 over all L) every weight
/// of rows 0..200 lies ≈ 125 below it and underflows in f32: those rows came out 0. With the
/// running maximum per chunk (and per row inside its chunk) no row is lost. Both tile families;
/// f32 and f16 storage. Trig estimates cancel (their sum of cosines has random sign), so the
/// tolerance is looser than the positive path's.
fn check_trig<T: Element>(ctx: &Context, label: &str, tol: f64, conv: impl Fn(&[f32]) -> Vec<T>) {
    for (i, from) in [200usize, 257].into_iter().enumerate() {
        let case = (FavorKind::Trig, true, Sinks::LargeFrom(from));
        let (e, lost, sens) = run(ctx, DIMS, case, 21 + i as u64, &conv);
        eprintln!(
            "{label} trig causal, large keys from {from}: rel err {e:.3e} (sensitivity {sens:.3e}), \
             {lost} rows lost"
        );
        assert_eq!(lost, 0, "{label} trig, large keys from {from}: rows lost");
        let bound = tol + 10.0 * sens;
        assert!(
            e <= bound,
            "{label} trig from {from}: relative error {e:.3e} > {bound:.1e}"
        );
    }
}

#[test]
fn trig_causal_rows_before_larger_keys_are_not_lost_f32() {
    check_trig(ctx(), "f32 cpu tiles", 1e-3, |x| x.to_vec());
    check_trig(ctx_gpu_tiles(), "f32 gpu tiles", 1e-3, |x| x.to_vec());
}

/// Recurrent decoding's prefill (its state keeps one log-scale per row): its rows, positive and
/// trig, with keys of norm 60 from position 200 on. Before, rows 0..200 came out 0 (the prefill
/// used the head-wide key stabiliser for its rows too).
#[test]
fn prefill_rows_before_larger_keys_are_not_lost() {
    for kind in [FavorKind::Positive, FavorKind::Trig] {
        let case = (kind, true, Sinks::LargeFrom(200));
        let (e, lost, sens) = run_as(ctx(), DIMS, case, (31, Path::Prefill), |x| x.to_vec());
        eprintln!("prefill {kind:?}: rel err {e:.3e} (sensitivity {sens:.3e}), {lost} rows lost");
        assert_eq!(lost, 0, "prefill {kind:?}: rows lost");
        let bound = 1e-3 + 10.0 * sens;
        assert!(
            e <= bound,
            "prefill {kind:?}: relative error {e:.3e} > {bound:.1e}"
        );
    }
}

/// The f32 CPU path, causal trig (its own running maximum) and positive, same keys. Before, trig
/// used the head-wide stabiliser there too.
#[test]
fn cpu_path_rows_before_larger_keys_are_not_lost() {
    for kind in [FavorKind::Positive, FavorKind::Trig] {
        for (i, from) in [200usize, 257].into_iter().enumerate() {
            let case = (kind, true, Sinks::LargeFrom(from));
            let (e, lost, sens) = run_as(ctx(), DIMS, case, (21 + i as u64, Path::Cpu), |x| {
                x.to_vec()
            });
            eprintln!(
                "cpu {kind:?} from {from}: rel err {e:.3e} (sensitivity {sens:.3e}), {lost} lost"
            );
            assert_eq!(lost, 0, "cpu {kind:?} from {from}: rows lost");
            let bound = 1e-3 + 10.0 * sens;
            assert!(
                e <= bound,
                "cpu {kind:?} from {from}: relative error {e:.3e} > {bound:.1e}"
            );
        }
    }
}

#[test]
fn trig_causal_rows_before_larger_keys_are_not_lost_f16() {
    check_trig(ctx(), "f16 native", 2e-2, to_f16);
    check_trig(ctx_packed(), "f16 packed", 2e-2, to_f16);
}
