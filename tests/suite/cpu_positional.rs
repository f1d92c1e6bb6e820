//! CPU path vs the f64 reference: softmax attention with ALiBi, log-n scaling, a sliding window
//! and ReRoPE (both layouts), at ragged sizes around the query block (64) and key tile (256),
//! f32 and f16 storage, NaN-poisoned outputs, NaN inputs inside and outside the mask, errors.

use crate::common;
use crate::cpu_check;

use common::{randn, rng};
use cpu_check::*;
use half::f16;
use longseq::attention::linear::{check_shapes, AttnDims};
use longseq::attention::{Alibi, PositionalOptions, ReRope, SoftmaxAttentionOptions};
use longseq::positions::RopeLayout;
use longseq::{cpu, reference, Element, Error};

/// (B, H, L, Dk, Dv).
const CASES: [(usize, usize, usize, usize, usize); 6] = [
    (1, 2, 1, 4, 1),
    (2, 3, 2, 2, 3),
    (1, 2, 63, 32, 65),
    (2, 1, 65, 16, 8),
    (1, 3, 300, 8, 5),
    (1, 2, 700, 32, 16),
];

fn rr(window: usize, layout: RopeLayout) -> ReRope {
    ReRope {
        window,
        base: 10_000.0,
        layout,
    }
}

/// Every term alone and mixed, causal and not (a window is causal either way).
fn terms(slopes: &[f32]) -> Vec<(&'static str, bool, PositionalOptions<'_>)> {
    let none = PositionalOptions::default();
    let half = RopeLayout::HalfSplit;
    let inter = RopeLayout::Interleaved;
    vec![
        (
            "alibi",
            false,
            PositionalOptions {
                alibi: Some(Alibi::Standard),
                ..none
            },
        ),
        (
            "alibi causal",
            true,
            PositionalOptions {
                alibi: Some(Alibi::Standard),
                ..none
            },
        ),
        (
            "slopes causal",
            true,
            PositionalOptions {
                alibi: Some(Alibi::Slopes(slopes)),
                ..none
            },
        ),
        (
            "log-n",
            false,
            PositionalOptions {
                log_n_train: Some(16),
                ..none
            },
        ),
        (
            "window 50",
            false,
            PositionalOptions {
                window: Some(50),
                ..none
            },
        ),
        (
            "rerope 24 half",
            false,
            PositionalOptions {
                rerope: Some(rr(24, half)),
                ..none
            },
        ),
        (
            "rerope 7 inter causal",
            true,
            PositionalOptions {
                rerope: Some(rr(7, inter)),
                ..none
            },
        ),
        (
            "rerope 300 causal",
            true,
            PositionalOptions {
                rerope: Some(rr(300, half)),
                ..none
            },
        ),
        (
            "all",
            false,
            PositionalOptions {
                alibi: Some(Alibi::Standard),
                log_n_train: Some(32),
                window: Some(100),
                rerope: Some(rr(24, inter)),
            },
        ),
    ]
}

struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    d: AttnDims,
    heads: usize,
}

fn inputs((b, h, l, dk, dv): (usize, usize, usize, usize, usize), seed: u64) -> Inputs {
    let mut g = rng(seed);
    let (qk, vs) = ([b, h, l, dk], [b, h, l, dv]);
    Inputs {
        q: randn(&mut g, b * h * l * dk, 1.0),
        k: randn(&mut g, b * h * l * dk, 1.0),
        v: randn(&mut g, b * h * l * dv, 1.0),
        d: check_shapes("test", &qk, &qk, &vs).unwrap(),
        heads: h,
    }
}

fn case<T: Element>(
    x: &Inputs,
    conv: impl Fn(&[f32]) -> Vec<T>,
    causal: bool,
    pos: &PositionalOptions<'_>,
    label: &str,
) {
    let (q, k, v) = (conv(&x.q), conv(&x.k), conv(&x.v));
    let o = SoftmaxAttentionOptions {
        causal,
        scale: None,
        ..Default::default()
    };
    let mut out = poisoned::<T>(x.d.rows * x.d.len * x.d.dv);
    cpu::attention::softmax_attention_positional_into(&q, &k, &v, &x.d, x.heads, &o, pos, &mut out)
        .unwrap();
    let want = reference::attention::positional::softmax_attention_positional(
        &q, &k, &v, &x.d, x.heads, &o, pos,
    )
    .unwrap();
    check(label, &out, &want, tol::<T>());
}

#[test]
fn cpu_matches_reference_every_term() {
    let slopes = [0.3f32, 0.05, 1.2];
    for (i, &shape) in CASES.iter().enumerate() {
        let x = inputs(shape, 40 + i as u64);
        for (name, causal, pos) in terms(&slopes[..shape.1]) {
            let label = format!("{name} {shape:?}");
            case::<f32>(&x, |a| a.to_vec(), causal, &pos, &format!("f32 {label}"));
            case::<f16>(&x, to_f16, causal, &pos, &format!("f16 {label}"));
        }
    }
}

#[test]
fn nan_follows_the_mask() {
    // Row 0: NaN in q at 3 (its outputs only); row 1: NaN in k at 70 and in v at 200 (causal:
    // the queries from there on; windowed: those whose window holds them).
    let mut x = inputs((1, 2, 300, 8, 4), 7);
    let (l, dk, dv) = (x.d.len, x.d.dk, x.d.dv);
    x.q[3 * dk] = f32::NAN;
    x.k[(l + 70) * dk + 2] = f32::NAN;
    x.v[(l + 200) * dv + 1] = f32::NAN;
    let half = RopeLayout::HalfSplit;
    for (name, causal, pos) in [
        (
            "causal alibi",
            true,
            PositionalOptions {
                alibi: Some(Alibi::Standard),
                ..Default::default()
            },
        ),
        (
            "window 40",
            false,
            PositionalOptions {
                window: Some(40),
                ..Default::default()
            },
        ),
        (
            "rerope causal",
            true,
            PositionalOptions {
                rerope: Some(rr(16, half)),
                ..Default::default()
            },
        ),
        (
            "alibi",
            false,
            PositionalOptions {
                alibi: Some(Alibi::Standard),
                ..Default::default()
            },
        ),
    ] {
        case::<f32>(&x, |a| a.to_vec(), causal, &pos, &format!("NaN {name}"));
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let x = inputs((1, 2, 5, 4, 2), 1);
    let o = SoftmaxAttentionOptions::default();
    let run = |heads: usize, pos: PositionalOptions<'_>| {
        cpu::attention::softmax_attention_positional(&x.q, &x.k, &x.v, &x.d, heads, &o, &pos)
    };
    let pos = PositionalOptions::default();
    assert!(matches!(
        run(3, pos),
        Err(Error::InvalidArgument { name: "heads", .. })
    ));
    let w0 = PositionalOptions {
        window: Some(0),
        ..pos
    };
    assert!(matches!(
        run(2, w0),
        Err(Error::InvalidArgument { name: "window", .. })
    ));
    let bad = [f32::NAN, 1.0];
    let nan_slope = PositionalOptions {
        alibi: Some(Alibi::Slopes(&bad)),
        ..pos
    };
    assert!(matches!(
        run(2, nan_slope),
        Err(Error::InvalidArgument { .. })
    ));
    let short = [1.0f32];
    let one_slope = PositionalOptions {
        alibi: Some(Alibi::Slopes(&short)),
        ..pos
    };
    assert!(matches!(run(2, one_slope), Err(Error::Shape { .. })));
    let mut out = vec![0.0f32; 3];
    assert!(matches!(
        cpu::attention::softmax_attention_positional_into(
            &x.q, &x.k, &x.v, &x.d, 2, &o, &pos, &mut out
        ),
        Err(Error::DataLength { .. })
    ));
    let mut odd = inputs((1, 1, 5, 3, 2), 2);
    odd.heads = 1;
    let rp = PositionalOptions {
        rerope: Some(rr(2, RopeLayout::HalfSplit)),
        ..pos
    };
    assert!(matches!(
        cpu::attention::softmax_attention_positional(&odd.q, &odd.k, &odd.v, &odd.d, 1, &o, &rp),
        Err(Error::InvalidArgument { .. })
    ));
}
