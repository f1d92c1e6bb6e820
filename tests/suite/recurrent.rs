//! Recurrent decoding: prefill of a prefix then one step per position equals the causal parallel
//! output on the whole sequence, for every feature map and dtype; bad input is a typed error.

use crate::common;

use common::*;
use longseq::attention::linear::check_shapes;
use longseq::attention::{
    draw_omega, favor_attention, linear_attention, prefill, step, FavorKind, FavorOptions,
    FeatureMap, Features, LinearAttentionOptions, OmegaDraw, RecurrentState,
};
use longseq::reference;
use longseq::{Context, Element, Error, Tensor};

fn all_features(ctx: &Context, dk: usize, m: usize) -> Vec<(&'static str, Features)> {
    let lin = |fm: FeatureMap| {
        Features::Linear(LinearAttentionOptions {
            feature_map: fm,
            causal: true,
            // identity and elu are not positive: no denominator.
            denominator: !matches!(fm, FeatureMap::Identity | FeatureMap::Elu),
            ..Default::default()
        })
    };
    let w = draw_omega(m, dk, OmegaDraw::OrthogonalChi, 21).unwrap();
    let omega = Tensor::from_slice(ctx, &w, &[m, dk]).unwrap();
    vec![
        ("elu1", lin(FeatureMap::Elu1)),
        ("relu", lin(FeatureMap::Relu)),
        ("identity", lin(FeatureMap::Identity)),
        ("elu", lin(FeatureMap::Elu)),
        (
            "favor",
            Features::Favor {
                omega: omega.clone(),
                kind: FavorKind::Positive,
            },
        ),
        (
            "favor-trig",
            Features::Favor {
                omega,
                kind: FavorKind::Trig,
            },
        ),
    ]
}

/// Positions `[a, b)` of `x: [R, L, D]`.
fn slice(x: &[f32], (rows, l, d): (usize, usize, usize), a: usize, b: usize) -> Vec<f32> {
    (0..rows)
        .flat_map(|r| x[(r * l + a) * d..(r * l + b) * d].iter().copied())
        .collect()
}

/// The causal parallel output on the whole sequence, on the GPU.
fn parallel<T: Element>(
    ctx: &Context,
    f: &Features,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
) -> Vec<f64> {
    let o = match f {
        Features::Linear(o) => linear_attention(ctx, q, k, v, o).unwrap(),
        Features::Favor { omega, kind } => {
            let o = FavorOptions {
                kind: *kind,
                causal: true,
            };
            favor_attention(ctx, q, k, v, omega, &o).unwrap()
        }
    };
    to_f64(&o.to_vec(ctx).unwrap())
}

/// Prefill of `p` positions (or an empty state when p = 0), then steps; returns `[R, L, Dv]`.
fn decode<T: Element>(
    ctx: &Context,
    f: &Features,
    (rows, l, dk, dv): (usize, usize, usize, usize),
    x: (&[f32], &[f32], &[f32]),
    p: usize,
    conv: &impl Fn(&[f32]) -> Vec<T>,
) -> Vec<f64> {
    let mut out = vec![f64::NAN; rows * l * dv];
    let t = |x: &[f32], s: &[usize]| Tensor::from_slice(ctx, &conv(x), s).unwrap();
    let mut state = if p > 0 {
        let (sq, sv) = ([rows, p, dk], [rows, p, dv]);
        let (o, state) = prefill(
            ctx,
            &t(&slice(x.0, (rows, l, dk), 0, p), &sq),
            &t(&slice(x.1, (rows, l, dk), 0, p), &sq),
            &t(&slice(x.2, (rows, l, dv), 0, p), &sv),
            f,
        )
        .unwrap();
        assert_eq!(state.s.shape(), &[rows, state.z.shape()[1], dv]);
        let o = to_f64(&o.to_vec(ctx).unwrap());
        for r in 0..rows {
            out[r * l * dv..][..p * dv].copy_from_slice(&o[r * p * dv..][..p * dv]);
        }
        state
    } else {
        RecurrentState::empty(ctx, f, &[rows], dk, dv).unwrap()
    };
    for i in p..l {
        let o = step(
            ctx,
            &mut state,
            &t(&slice(x.0, (rows, l, dk), i, i + 1), &[rows, dk]),
            &t(&slice(x.1, (rows, l, dk), i, i + 1), &[rows, dk]),
            &t(&slice(x.2, (rows, l, dv), i, i + 1), &[rows, dv]),
        )
        .unwrap();
        assert_eq!(o.shape(), &[rows, dv]);
        let o = to_f64(&o.to_vec(ctx).unwrap());
        for r in 0..rows {
            out[(r * l + i) * dv..][..dv].copy_from_slice(&o[r * dv..][..dv]);
        }
    }
    out
}

fn check_all<T: Element>(ctx: &Context, label: &str, conv: impl Fn(&[f32]) -> Vec<T>, tol: f64) {
    let (rows, l, dk, dv, m) = (3, 80, 5, 3, 11);
    let mut g = rng(31);
    let q = randn(&mut g, rows * l * dk, 0.6);
    let k = randn(&mut g, rows * l * dk, 0.6);
    let v = randn(&mut g, rows * l * dv, 1.0);
    let (sq, sv) = ([rows, l, dk], [rows, l, dv]);
    let t = |x: &[f32], s: &[usize]| Tensor::from_slice(ctx, &conv(x), s).unwrap();
    for (name, f) in all_features(ctx, dk, m) {
        let want = parallel(ctx, &f, &t(&q, &sq), &t(&k, &sq), &t(&v, &sv));
        // Prefix lengths: none, one position, inside the first chunk, past a chunk boundary.
        for p in [0, 1, 37, 70] {
            let got = decode(ctx, &f, (rows, l, dk, dv), (&q, &k, &v), p, &conv);
            let e = rel_err(&got, &want);
            assert!(
                e <= tol,
                "{label} {name} prefix {p}: relative error {e:.3e}"
            );
        }
    }
}

#[test]
fn prefill_then_steps_equals_causal_parallel_f32() {
    check_all(ctx(), "f32", |x| x.to_vec(), TOL_F32);
}

#[test]
fn prefill_then_steps_equals_causal_parallel_f16() {
    check_all(ctx(), "f16", to_f16, TOL_F16);
    check_all(ctx_packed(), "f16 packed", to_f16, TOL_F16);
}

/// With storage bindings capped at 64 KiB, prefill and steps run in several passes of rows.
#[test]
fn decoding_splits_rows_past_the_storage_binding_limit() {
    let c = ctx_small_bindings(64 * 1024);
    let (rows, l, dk, dv, m) = (40, 6, 8, 16, 64); // trig: F = 128, S is 8 KiB a row
    let mut g = rng(51);
    let q = randn(&mut g, rows * l * dk, 0.5);
    let k = randn(&mut g, rows * l * dk, 0.5);
    let v = randn(&mut g, rows * l * dv, 1.0);
    let t = |x: &[f32], s: &[usize]| Tensor::from_slice(&c, x, s).unwrap();
    let (sq, sv) = ([rows, l, dk], [rows, l, dv]);
    for (name, f) in all_features(&c, dk, m) {
        let want = parallel(&c, &f, &t(&q, &sq), &t(&k, &sq), &t(&v, &sv));
        let got = decode(
            &c,
            &f,
            (rows, l, dk, dv),
            (&q, &k, &v),
            3,
            &|x: &[f32]| x.to_vec(),
        );
        assert_close(name, &got, &want, TOL_F32);
    }
}

/// The decoded output (prefill of 17, then steps) against the f64 references on the same
/// dtype-rounded inputs, normwise and elementwise.
fn check_references<T: Element>(
    c: &Context,
    label: &str,
    conv: impl Fn(&[f32]) -> Vec<T>,
    tol: f64,
) {
    let (rows, l, dk, dv, m) = (2, 40, 4, 6, 9);
    let mut g = rng(41);
    let q = randn(&mut g, rows * l * dk, 0.6);
    let k = randn(&mut g, rows * l * dk, 0.6);
    let v = randn(&mut g, rows * l * dv, 1.0);
    let (qt, kt, vt) = (conv(&q), conv(&k), conv(&v));
    let d = check_shapes("t", &[rows, l, dk], &[rows, l, dk], &[rows, l, dv]).unwrap();
    for (name, f) in all_features(c, dk, m) {
        let want = match &f {
            Features::Linear(o) => reference::attention::linear_attention(&qt, &kt, &vt, &d, o),
            Features::Favor { omega, kind } => {
                let w = omega.to_vec(c).unwrap();
                let o = FavorOptions {
                    kind: *kind,
                    causal: true,
                };
                reference::attention::favor_attention(&qt, &kt, &vt, &d, &w, &o)
            }
        }
        .unwrap();
        let got = decode(c, &f, (rows, l, dk, dv), (&q, &k, &v), 17, &conv);
        assert_close_both(&format!("{label} {name}"), &got, &want, tol);
    }
}

/// The decoded output also equals the f64 references (not only the GPU's parallel form).
#[test]
fn decoding_matches_the_references() {
    check_references(ctx(), "f32", |x| x.to_vec(), TOL_F32);
}

/// f16 decoding (f16 storage, f32 state) against the f64 reference, native and packed f16.
#[test]
fn f16_decoding_matches_the_references() {
    check_references(ctx(), "f16", to_f16, TOL_F16);
    check_references(ctx_packed(), "f16 packed", to_f16, TOL_F16);
}

/// A FAVOR key aligned with ω_0 raises the largest key log-feature (‖ω_0‖²/2) above all before
/// it: the state's log-scale grows, S and z are rescaled, and the outputs still equal the
/// parallel form.
#[test]
fn favor_state_rescales_when_a_larger_key_arrives() {
    let c = ctx();
    let (rows, l, dk, dv, m) = (1, 12, 4, 2, 16);
    let mut g = rng(5);
    let q = randn(&mut g, l * dk, 0.5);
    let mut k = randn(&mut g, l * dk, 0.1);
    let v = randn(&mut g, l * dv, 1.0);
    let mut w = draw_omega(m, dk, OmegaDraw::OrthogonalChi, 8).unwrap();
    w[..dk].iter_mut().for_each(|x| *x *= 3.0);
    let f = &Features::Favor {
        omega: Tensor::from_slice(c, &w, &[m, dk]).unwrap(),
        kind: FavorKind::Positive,
    };
    let s = (dk as f32).powf(0.25);
    for a in 0..dk {
        k[9 * dk + a] = w[a] * s;
    }
    let t = |x: &[f32], s: &[usize]| Tensor::from_slice(c, x, s).unwrap();
    let (sq, sv) = ([rows, l, dk], [rows, l, dv]);
    let want = parallel(c, f, &t(&q, &sq), &t(&k, &sq), &t(&v, &sv));
    let (_, mut state) = prefill(
        c,
        &t(&q[..9 * dk], &[1, 9, dk]),
        &t(&k[..9 * dk], &[1, 9, dk]),
        &t(&v[..9 * dv], &[1, 9, dv]),
        f,
    )
    .unwrap();
    let before = state.log_scale.to_vec(c).unwrap()[0];
    let at = |x: &[f32], d: usize| t(&x[9 * d..10 * d], &[1, d]);
    step(c, &mut state, &at(&q, dk), &at(&k, dk), &at(&v, dv)).unwrap();
    let after = state.log_scale.to_vec(c).unwrap()[0];
    assert!(after > before + 3.0, "log-scale {before} -> {after}");
    let got = decode(c, f, (rows, l, dk, dv), (&q, &k, &v), 5, &|x: &[f32]| {
        x.to_vec()
    });
    assert!(got.iter().all(|x| x.is_finite()));
    assert_close("rescaled", &got, &want, TOL_F32);
}

#[test]
fn bad_input_is_a_typed_error() {
    let c = ctx();
    let t = |s: &[usize]| Tensor::from_slice(c, &vec![0.5f32; s.iter().product()], s).unwrap();
    let f = Features::Linear(LinearAttentionOptions::default());
    let (_, mut state) = prefill(c, &t(&[2, 3, 4]), &t(&[2, 3, 4]), &t(&[2, 3, 5]), &f).unwrap();
    assert_eq!(state.lead(), &[2]);
    let (q, v) = (t(&[2, 4]), t(&[2, 5]));
    assert!(matches!(
        step(c, &mut state, &t(&[2, 3]), &q, &v),
        Err(Error::Shape { name: "q_t", .. })
    ));
    assert!(matches!(
        step(c, &mut state, &q, &t(&[3, 4]), &v),
        Err(Error::Shape { name: "k_t", .. })
    ));
    assert!(matches!(
        step(c, &mut state, &q, &q, &t(&[2, 4])),
        Err(Error::Shape { name: "v_t", .. })
    ));
    let bad_omega = Features::Favor {
        omega: t(&[8, 3]),
        kind: FavorKind::Positive,
    };
    assert!(matches!(
        prefill(
            c,
            &t(&[2, 3, 4]),
            &t(&[2, 3, 4]),
            &t(&[2, 3, 5]),
            &bad_omega
        ),
        Err(Error::Shape { name: "omega", .. })
    ));
    assert!(matches!(
        RecurrentState::empty(c, &f, &[], 4, 5),
        Err(Error::InvalidArgument { .. })
    ));
}
