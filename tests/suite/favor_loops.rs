//! FAVOR+ at sizes where a kernel's per-invocation loop used to pass lavapipe's ~65 535
//! iterations (issue 11, item 1): every invocation of the old `favor_intra` looped
//! (CH²/WG)·M times for the weights and CH²·Dv/WG times for the outputs, so at chunk 64 and
//! M = 1024 (or Dv ≥ 1024) it stopped early and rows came out wrong with no error. The work is now
//! split across invocations and dispatches, so every M and Dv runs; GPU vs the f64 reference.
//! The chunk engine's own loops run once per padded feature of a register tile: with CPU tiles,
//! causal, Dk ≈ 2100 features (trig FAVOR+ at M = 1024 has 2M) stopped early; the engine now
//! picks smaller tiles or chunks for such dims and refuses (typed error) what no choice runs.

use crate::common;

use common::*;
use longseq::attention::linear::check_shapes;
use longseq::attention::{draw_omega, favor_attention_into, FavorKind, FavorOptions, OmegaDraw};
use longseq::reference;
use longseq::{Context, Tensor};

/// `x ≤ tol`, false for NaN.
fn within(x: f64, tol: f64) -> bool {
    x <= tol
}

/// (relative error, output rows with an element off by more than 1e-4 relative to the row's norm).
fn run(
    ctx: &Context,
    (rows, l, dk, dv, m): (usize, usize, usize, usize, usize),
    o: &FavorOptions,
    (seed, sigma): (u64, f32),
) -> (f64, usize) {
    let mut g = rng(seed);
    let q = randn(&mut g, rows * l * dk, sigma);
    let k = randn(&mut g, rows * l * dk, sigma);
    let v = randn(&mut g, rows * l * dv, 1.0);
    // Orthogonal draws QR a Dk×Dk matrix: minutes at Dk = 6001, so i.i.d. rows there.
    let draw = if dk > 1024 {
        OmegaDraw::Gaussian
    } else {
        OmegaDraw::OrthogonalChi
    };
    let w = draw_omega(m, dk, draw, seed).unwrap();
    let (sq, sv) = ([rows, l, dk], [rows, l, dv]);
    let d = check_shapes("t", &sq, &sq, &sv).unwrap();
    let t = |x: &[f32], s: &[usize]| Tensor::from_slice(ctx, x, s).unwrap();
    let out = Tensor::<f32>::nan(ctx, &sv).unwrap();
    let tw = Tensor::from_slice(ctx, &w, &[m, dk]).unwrap();
    favor_attention_into(ctx, &t(&q, &sq), &t(&k, &sq), &t(&v, &sv), &tw, &out, o).unwrap();
    let got = to_f64(&out.to_vec(ctx).unwrap());
    let want = reference::attention::favor_attention(&q, &k, &v, &d, &w, o).unwrap();
    let bad = got
        .chunks(dv)
        .zip(want.chunks(dv))
        .filter(|(g, w)| {
            let n = w.iter().fold(0f64, |a, x| a.max(x.abs())).max(1e-30);
            g.iter()
                .zip(*w)
                .any(|(a, b)| !within((a - b).abs(), 1e-4 * n))
        })
        .count();
    (rel_err(&got, &want), bad)
}

/// (rows, L, Dk, Dv, M): M = 1024 and 1500 (the weights' loop), Dv = 1100 (the outputs' loop),
/// L past one chunk of 64 and off the power of two.
const CASES: [(usize, usize, usize, usize, usize); 3] = [
    (1, 150, 16, 8, 1024),
    (2, 97, 9, 5, 1500),
    (1, 130, 8, 1100, 20),
];

/// Failures (printed as they come, so one run gives every figure).
fn check(ctx: &Context, label: &str) -> Vec<String> {
    let mut fails = Vec::new();
    for (i, &dims) in CASES.iter().enumerate() {
        for kind in [FavorKind::Positive, FavorKind::Trig] {
            for causal in [false, true] {
                let o = FavorOptions { kind, causal };
                let (e, bad) = run(ctx, dims, &o, (40 + i as u64, 0.5));
                let case = format!("{label} {dims:?} {kind:?} causal={causal}");
                eprintln!("{case}: rel err {e:.3e}, {bad} rows off");
                // Trig weights have both signs (an ill-conditioned ratio): a looser bound.
                let tol = if kind == FavorKind::Trig {
                    1e-3
                } else {
                    TOL_F32
                };
                if !within(e, tol) || (kind == FavorKind::Positive && bad > 0) {
                    fails.push(format!(
                        "{case}: rel err {e:.3e} (tol {tol:.0e}), {bad} rows off"
                    ));
                }
            }
        }
    }
    fails
}

#[test]
fn large_m_and_dv_run_whole_loops() {
    let mut fails = check(ctx(), "cpu tiles");
    fails.extend(check(ctx_gpu_tiles(), "gpu tiles"));
    assert!(fails.is_empty(), "{fails:#?}");
}

/// Linear attention (elu+1) at large Dk and Dv, causal and not, both tile families, vs the f64
/// reference. Before, CPU tiles, causal, Dk = 2100: rows left unwritten (relative error inf).
#[test]
fn linear_attention_large_dk_and_dv_run_whole_loops() {
    use longseq::attention::{linear_attention_into, LinearAttentionOptions};
    let dims = [
        (1usize, 70usize, 2100usize, 3usize),
        // Near the loop budget with the tile loops unrolled in the source (estimate ~58 600).
        (1, 10, 26_000, 2),
        (2, 70, 520, 520),
        (1, 70, 300, 1100),
        (1, 100, 40, 1100),
    ];
    let mut fails = Vec::new();
    for (label, c) in [("cpu tiles", ctx()), ("gpu tiles", ctx_gpu_tiles())] {
        for &(rows, l, dk, dv) in &dims {
            for causal in [false, true] {
                let mut g = rng(dk as u64 + dv as u64);
                let q = randn(&mut g, rows * l * dk, 0.3);
                let k = randn(&mut g, rows * l * dk, 0.3);
                let v = randn(&mut g, rows * l * dv, 1.0);
                let o = LinearAttentionOptions {
                    causal,
                    ..Default::default()
                };
                let (sq, sv) = ([rows, l, dk], [rows, l, dv]);
                let d = check_shapes("t", &sq, &sq, &sv).unwrap();
                let t = |x: &[f32], s: &[usize]| Tensor::from_slice(c, x, s).unwrap();
                let out = Tensor::<f32>::nan(c, &sv).unwrap();
                let (tq, tk, tv) = (t(&q, &sq), t(&k, &sq), t(&v, &sv));
                linear_attention_into(c, &tq, &tk, &tv, &out, &o).unwrap();
                let got = to_f64(&out.to_vec(c).unwrap());
                let want = reference::attention::linear_attention(&q, &k, &v, &d, &o).unwrap();
                let e = rel_err(&got, &want);
                let case = format!("{label} L={l} Dk={dk} Dv={dv} causal={causal}");
                eprintln!("{case}: rel err {e:.3e}");
                if !within(e, TOL_F32) {
                    fails.push(format!("{case}: rel err {e:.3e}"));
                }
            }
        }
    }
    assert!(fails.is_empty(), "{fails:#?}");
}

/// Dims no tile or chunk choice runs within the loop limit: a typed error, the output untouched.
#[test]
fn feature_dims_past_every_choice_are_a_typed_error() {
    use longseq::attention::{linear_attention_into, LinearAttentionOptions};
    let c = ctx();
    let (l, dk, dv) = (10usize, 40_000usize, 2usize);
    let mut g = rng(3);
    let q = randn(&mut g, l * dk, 0.1);
    let v = randn(&mut g, l * dv, 1.0);
    let t = |x: &[f32], s: &[usize]| Tensor::from_slice(c, x, s).unwrap();
    let out = Tensor::<f32>::nan(c, &[1, l, dv]).unwrap();
    let o = LinearAttentionOptions {
        causal: true,
        ..Default::default()
    };
    let (tq, tv) = (t(&q, &[1, l, dk]), t(&v, &[1, l, dv]));
    let r = linear_attention_into(c, &tq, &tq, &tv, &out, &o);
    assert!(
        matches!(r, Err(longseq::Error::InvalidArgument { .. })),
        "{r:?}"
    );
    assert!(out.to_vec(c).unwrap().iter().all(|x| x.is_nan()));
}

/// `favor_proj` (the projections ω_r·x') looped over Dk in each invocation: at Dk = 70 001
/// lavapipe stopped it early (every row off; Dk = 6 001 still ran). It now runs Dk in blocks of
/// 1024 across dispatches, each subtracting its share of ‖x'‖²/2. Inputs of σ = 0.1 keep the f32
/// rounding of 70 001-term logits under the bound. Positive features, causal and not, both tile
/// families (scalar reads: Dk is odd); `dk_blocks_on_the_vec4_path` covers the vec4 reads and
/// trig's accumulated log-scale.
#[test]
fn large_dk_runs_the_whole_projection() {
    let mut fails = Vec::new();
    for (label, ctx) in [("cpu tiles", ctx()), ("gpu tiles", ctx_gpu_tiles())] {
        for causal in [false, true] {
            let o = FavorOptions {
                kind: FavorKind::Positive,
                causal,
            };
            let dims = (1, 21, 70_001, 3, 16);
            let (e, bad) = run(ctx, dims, &o, (77, 0.1));
            let case = format!("{label} {dims:?} causal={causal}");
            eprintln!("{case}: rel err {e:.3e}, {bad} rows off");
            if !within(e, 1e-4) || bad > 0 {
                fails.push(format!("{case}: rel err {e:.3e}, {bad} rows off"));
            }
        }
    }
    assert!(fails.is_empty(), "{fails:#?}");
}

/// Dk = 2052 (a multiple of 4: `favor_proj` reads x and ω as vec4) in three blocks of Dk: the
/// positive logits subtract each block's share of ‖x'‖²/2, trig accumulates ‖x'‖²/2 into its
/// log-scale and rewrites both halves of its features per block. Positive and trig, causal and
/// not, both tile families, against the f64 reference.
#[test]
fn dk_blocks_on_the_vec4_path() {
    let mut fails = Vec::new();
    for (label, ctx) in [("cpu tiles", ctx()), ("gpu tiles", ctx_gpu_tiles())] {
        for kind in [FavorKind::Positive, FavorKind::Trig] {
            for causal in [false, true] {
                let o = FavorOptions { kind, causal };
                let dims = (2, 37, 2052, 5, 12);
                let (e, bad) = run(ctx, dims, &o, (91, 0.2));
                let case = format!("{label} {kind:?} {dims:?} causal={causal}");
                if !within(e, 1e-4) || bad > 0 {
                    fails.push(format!("{case}: rel err {e:.3e}, {bad} rows off"));
                }
            }
        }
    }
    assert!(fails.is_empty(), "{fails:#?}");
}
