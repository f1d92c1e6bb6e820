//! CPU path, recurrent decoding: prefill of a prefix then one step per position equals the f64
//! reference's causal output on the whole sequence, for every feature map (elementwise and
//! FAVOR), f32 and f16 storage, ragged sizes; a FAVOR key larger than any before rescales the
//! state; bad input is a typed error.

use crate::common;
use crate::cpu_check;

use common::{randn, rng};
use cpu_check::*;
use longseq::attention::linear::check_shapes;
use longseq::attention::{
    draw_omega, FavorKind, FavorOptions, FeatureMap, LinearAttentionOptions, OmegaDraw,
};
use longseq::cpu::attention::{prefill, step, Features, RecurrentState};
use longseq::{reference, Element, Error};

fn all_features(dk: usize, m: usize) -> Vec<(&'static str, Features)> {
    let lin = |fm: FeatureMap| {
        Features::Linear(LinearAttentionOptions {
            feature_map: fm,
            causal: true,
            denominator: !matches!(fm, FeatureMap::Identity | FeatureMap::Elu),
            ..Default::default()
        })
    };
    let omega = draw_omega(m, dk, OmegaDraw::OrthogonalChi, 21).unwrap();
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
fn slice<T: Copy>(x: &[T], (rows, l, d): (usize, usize, usize), a: usize, b: usize) -> Vec<T> {
    (0..rows)
        .flat_map(|r| x[(r * l + a) * d..(r * l + b) * d].iter().copied())
        .collect()
}

/// The reference's causal output on the whole sequence.
fn want<T: Element>(
    f: &Features,
    q: &[T],
    k: &[T],
    v: &[T],
    shape: (usize, usize, usize, usize),
) -> Vec<f64> {
    let (rows, l, dk, dv) = shape;
    let d = check_shapes("test", &[rows, l, dk], &[rows, l, dk], &[rows, l, dv]).unwrap();
    match f {
        Features::Linear(o) => reference::attention::linear_attention(q, k, v, &d, o).unwrap(),
        Features::Favor { omega, kind } => {
            let o = FavorOptions {
                kind: *kind,
                causal: true,
            };
            reference::attention::favor_attention(q, k, v, &d, omega, &o).unwrap()
        }
    }
}

/// Prefill of `p` positions (an empty state when p = 0), then steps: `[R, L, Dv]`.
fn decode<T: Element>(
    f: &Features,
    (rows, l, dk, dv): (usize, usize, usize, usize),
    (q, k, v): (&[T], &[T], &[T]),
    p: usize,
) -> Vec<T> {
    let mut out = poisoned::<T>(rows * l * dv);
    let mut state = if p > 0 {
        let d = check_shapes("test", &[rows, p, dk], &[rows, p, dk], &[rows, p, dv]).unwrap();
        let (o, state) = prefill(
            &slice(q, (rows, l, dk), 0, p),
            &slice(k, (rows, l, dk), 0, p),
            &slice(v, (rows, l, dv), 0, p),
            &d,
            f,
        )
        .unwrap();
        assert_eq!(state.s.len(), rows * state.z.len() / rows * dv);
        for r in 0..rows {
            out[r * l * dv..][..p * dv].copy_from_slice(&o[r * p * dv..][..p * dv]);
        }
        state
    } else {
        RecurrentState::empty(f, &[rows], dk, dv).unwrap()
    };
    for i in p..l {
        let o = step(
            &mut state,
            &slice(q, (rows, l, dk), i, i + 1),
            &slice(k, (rows, l, dk), i, i + 1),
            &slice(v, (rows, l, dv), i, i + 1),
        )
        .unwrap();
        assert_eq!(o.len(), rows * dv);
        for r in 0..rows {
            out[(r * l + i) * dv..][..dv].copy_from_slice(&o[r * dv..][..dv]);
        }
    }
    out
}

fn check_all<T: Element>(conv: impl Fn(&[f32]) -> Vec<T>, label: &str) {
    let shape @ (rows, l, dk, dv) = (3usize, 80usize, 5usize, 3usize);
    let mut g = rng(31);
    let q = conv(&randn(&mut g, rows * l * dk, 0.6));
    let k = conv(&randn(&mut g, rows * l * dk, 0.6));
    let v = conv(&randn(&mut g, rows * l * dv, 1.0));
    for (name, f) in all_features(dk, 11) {
        let w = want(&f, &q, &k, &v, shape);
        // Prefix lengths: none, one position, inside the first chunk, past a chunk boundary.
        for p in [0, 1, 37, 70] {
            let got = decode(&f, shape, (&q, &k, &v), p);
            check(&format!("{label} {name} prefix {p}"), &got, &w, tol::<T>());
        }
    }
}

#[test]
fn prefill_then_steps_equals_the_causal_reference_f32() {
    check_all(|x| x.to_vec(), "f32");
}

#[test]
fn prefill_then_steps_equals_the_causal_reference_f16() {
    check_all(to_f16, "f16");
}

#[test]
fn favor_state_rescales_when_a_larger_key_arrives() {
    let (rows, l, dk, dv) = (2usize, 40usize, 4usize, 3usize);
    let mut g = rng(5);
    let q = randn(&mut g, rows * l * dk, 0.5);
    let mut k = randn(&mut g, rows * l * dk, 0.2);
    let v = randn(&mut g, rows * l * dv, 1.0);
    // Late keys far larger than any in the prefix: the stabiliser must move up.
    for r in 0..rows {
        for x in &mut k[(r * l + 30) * dk..(r * l + 31) * dk] {
            *x *= 40.0;
        }
    }
    for (name, f) in all_features(dk, 9).into_iter().skip(4) {
        let w = want(&f, &q, &k, &v, (rows, l, dk, dv));
        let got = decode(&f, (rows, l, dk, dv), (&q, &k, &v), 10);
        check(&format!("rescale {name}"), &got, &w, F32);
    }
}

#[test]
fn nan_in_a_step_reaches_only_later_outputs() {
    let (rows, l, dk, dv) = (2usize, 20usize, 4usize, 3usize);
    let mut g = rng(8);
    let q = randn(&mut g, rows * l * dk, 0.5);
    let k = randn(&mut g, rows * l * dk, 0.5);
    let mut v = randn(&mut g, rows * l * dv, 1.0);
    v[(l + 12) * dv + 1] = f32::NAN; // row 1, position 12
    let f = &all_features(dk, 7)[0].1;
    let w = want(f, &q, &k, &v, (rows, l, dk, dv));
    let got = decode(f, (rows, l, dk, dv), (&q, &k, &v), 5);
    check("nan", &got, &w, F32);
}

#[test]
fn bad_input_is_a_typed_error() {
    let f = &all_features(4, 7)[0].1;
    assert!(matches!(
        RecurrentState::empty(f, &[], 4, 3),
        Err(Error::InvalidArgument { .. })
    ));
    let mut st = RecurrentState::empty(f, &[2], 4, 3).unwrap();
    assert!(matches!(
        step(&mut st, &[0.1f32; 8], &[0.1; 8], &[0.1; 5]),
        Err(Error::DataLength { .. })
    ));
    let bad = Features::Linear(LinearAttentionOptions {
        eps: -1.0,
        ..Default::default()
    });
    assert!(RecurrentState::empty(&bad, &[2], 4, 3).is_err());
    let short = Features::Favor {
        omega: vec![0.1; 7],
        kind: FavorKind::Positive,
    };
    assert!(RecurrentState::empty(&short, &[2], 4, 3).is_err());
}
