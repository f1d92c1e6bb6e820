//! CPU path vs the f64 reference: softmax, Lightning, NormAttention and DiagAttention at ragged
//! sizes, f32 and f16 storage, NaN-poisoned outputs, NaN inputs, typed errors.

use crate::common;
use crate::cpu_check;

use common::{randn, rng};
use cpu_check::*;
use half::f16;
use longseq::attention::linear::{check_shapes, AttnDims};
use longseq::attention::{
    Affine, DiagAttentionOptions, DiagWeights, FeatureMap, LightningOptions, Norm,
    NormAttentionOptions, SoftmaxAttentionOptions,
};
use longseq::{cpu, reference, Element, Error};

/// (rows, L, Dk, Dv): around the query block (64), the key tile (256), odd head dims.
const CASES: [(usize, usize, usize, usize); 7] = [
    (2, 1, 3, 1),
    (3, 2, 1, 3),
    (2, 63, 32, 65),
    (1, 64, 64, 64),
    (2, 65, 65, 32),
    (1, 300, 16, 8),
    (2, 1000, 32, 32),
];

struct Inputs<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    d: AttnDims,
}

fn inputs<T: Element>(
    (r, l, dk, dv): (usize, usize, usize, usize),
    seed: u64,
    sq: f32,
) -> Inputs<T> {
    let mut g = rng(seed);
    let c = |x: Vec<f32>| {
        x.into_iter()
            .map(|a| T::from_f64(a as f64))
            .collect::<Vec<T>>()
    };
    Inputs {
        q: c(randn(&mut g, r * l * dk, sq)),
        k: c(randn(&mut g, r * l * dk, sq)),
        v: c(randn(&mut g, r * l * dv, 1.0)),
        d: check_shapes("test", &[r, l, dk], &[r, l, dk], &[r, l, dv]).unwrap(),
    }
}

fn with_nan(x: &mut Inputs<f32>) {
    let (l, dk, dv) = (x.d.len, x.d.dk, x.d.dv);
    x.k[(l + 70) * dk + 2] = f32::NAN; // row 1, position 70
    x.v[(5 + 2 * l) * dv + 1] = f32::NAN; // row 2, position 5, column 1
    x.q[3 * dk] = f32::NAN; // row 0, position 3
}

fn softmax_case<T: Element>(x: &Inputs<T>, causal: bool, label: &str) {
    let o = SoftmaxAttentionOptions {
        causal,
        scale: None,
        ..Default::default()
    };
    let mut out = poisoned::<T>(x.d.rows * x.d.len * x.d.dv);
    cpu::attention::softmax_attention_into(&x.q, &x.k, &x.v, &x.d, &o, &mut out).unwrap();
    let want = reference::attention::softmax_attention(&x.q, &x.k, &x.v, &x.d, &o).unwrap();
    check(label, &out, &want, tol::<T>());
}

#[test]
fn softmax_matches_reference() {
    for (i, &case) in CASES.iter().enumerate() {
        for causal in [false, true] {
            let label = format!("softmax causal={causal} {case:?}");
            softmax_case(
                &inputs::<f32>(case, 10 + i as u64, 1.0),
                causal,
                &format!("f32 {label}"),
            );
            softmax_case(
                &inputs::<f16>(case, 10 + i as u64, 1.0),
                causal,
                &format!("f16 {label}"),
            );
        }
    }
    for causal in [false, true] {
        let mut x = inputs::<f32>((3, 150, 8, 4), 3, 1.0);
        with_nan(&mut x);
        softmax_case(&x, causal, &format!("softmax NaN causal={causal}"));
    }
    let x = inputs::<f32>((1, 5, 2, 2), 1, 1.0);
    let bad = SoftmaxAttentionOptions {
        causal: false,
        scale: Some(f32::INFINITY),
        ..Default::default()
    };
    assert!(matches!(
        cpu::attention::softmax_attention(&x.q, &x.k, &x.v, &x.d, &bad),
        Err(Error::InvalidArgument { name: "scale", .. })
    ));
}

fn lightning_case<T: Element>(
    x: &Inputs<T>,
    slopes: Option<&[f32]>,
    o: &LightningOptions,
    label: &str,
) {
    let heads = slopes.map_or(x.d.rows, |s| s.len());
    let mut out = poisoned::<T>(x.d.rows * x.d.len * x.d.dv);
    cpu::attention::lightning_attention_into(&x.q, &x.k, &x.v, &x.d, heads, slopes, o, &mut out)
        .unwrap();
    let want = reference::attention::lightning_attention(&x.q, &x.k, &x.v, &x.d, heads, slopes, o)
        .unwrap();
    check(label, &out, &want, tol::<T>());
}

#[test]
fn lightning_matches_reference() {
    let mut seed = 300;
    for &case in &CASES {
        for s in [0.01f32, 0.5, 2.0] {
            seed += 1;
            let sl = vec![s; case.0];
            for block in [None, Some(16), Some(100)] {
                let o = LightningOptions {
                    block,
                    ..Default::default()
                };
                let label = format!("lightning s={s} block={block:?} {case:?}");
                lightning_case(
                    &inputs::<f32>(case, seed, 0.5),
                    Some(&sl),
                    &o,
                    &format!("f32 {label}"),
                );
            }
            let o = LightningOptions {
                block: None,
                feature_map: FeatureMap::Elu1,
                ..Default::default()
            };
            lightning_case(
                &inputs::<f16>(case, seed, 0.5),
                None,
                &o,
                &format!("f16 alibi {case:?}"),
            );
        }
    }
    let mut x = inputs::<f32>((3, 150, 8, 4), 4, 0.5);
    with_nan(&mut x);
    lightning_case(&x, None, &LightningOptions::default(), "lightning NaN");
    let bad = LightningOptions {
        block: Some(0),
        ..Default::default()
    };
    assert!(matches!(
        cpu::attention::lightning_attention(&x.q, &x.k, &x.v, &x.d, 3, None, &bad),
        Err(Error::InvalidArgument { name: "block", .. })
    ));
    assert!(matches!(
        cpu::attention::lightning_attention(
            &x.q,
            &x.k,
            &x.v,
            &x.d,
            3,
            Some(&[0.5, -1.0, 0.5]),
            &Default::default()
        ),
        Err(Error::InvalidArgument { name: "slopes", .. })
    ));
}

fn affine_for(norm: Norm, dv: usize, seed: u64) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    if norm == Norm::SimpleRmsNorm {
        return (None, None);
    }
    let mut g = rng(seed);
    let gain: Vec<f32> = randn(&mut g, dv, 0.3).iter().map(|x| 1.0 + x).collect();
    (Some(gain), Some(randn(&mut g, dv, 0.1)))
}

#[test]
fn norm_and_diag_attention_match_reference() {
    let norms = [Norm::SimpleRmsNorm, Norm::RmsNorm, Norm::LayerNorm];
    let maps = [FeatureMap::Elu, FeatureMap::Elu1, FeatureMap::Relu];
    let mut seed = 500;
    for (ci, &case) in CASES.iter().enumerate() {
        for causal in [false, true] {
            seed += 1;
            let norm = norms[(ci + causal as usize) % 3];
            let (g, b) = affine_for(norm, case.3, seed);
            let affine = Affine {
                gain: g.as_deref(),
                bias: b.as_deref(),
            };
            let x = inputs::<f32>(case, seed, 0.7);
            let n = x.d.rows * x.d.len * x.d.dv;
            let o = NormAttentionOptions {
                feature_map: maps[(ci + 2 * causal as usize) % 3],
                causal,
                norm,
                eps: 1e-5,
            };
            let mut out = poisoned::<f32>(n);
            cpu::attention::norm_attention(&x.q, &x.k, &x.v, &x.d, &affine, &o, &mut out).unwrap();
            let want =
                reference::attention::norm_attention(&x.q, &x.k, &x.v, &x.d, &affine, &o).unwrap();
            check(&format!("norm {o:?} {case:?}"), &out, &want, F32);
            for (weights, block) in [
                (DiagWeights::Softmax, 64),
                (DiagWeights::Relu, 17),
                (DiagWeights::Softmax, 5000),
            ] {
                let o = DiagAttentionOptions {
                    block,
                    causal,
                    scale: None,
                    weights,
                    norm,
                    eps: 1e-5,
                    ..Default::default()
                };
                let mut out = poisoned::<f32>(n);
                cpu::attention::diag_attention(&x.q, &x.k, &x.v, &x.d, &affine, &o, &mut out)
                    .unwrap();
                let want =
                    reference::attention::diag_attention(&x.q, &x.k, &x.v, &x.d, &affine, &o)
                        .unwrap();
                check(&format!("diag {o:?} {case:?}"), &out, &want, F32);
            }
        }
    }
}

#[test]
fn favor_matches_reference() {
    use longseq::attention::{draw_omega, FavorKind, FavorOptions, OmegaDraw};
    let mut seed = 700;
    for &case in &CASES {
        for kind in [FavorKind::Positive, FavorKind::Trig] {
            for causal in [false, true] {
                seed += 1;
                let m = 1 + (seed as usize * 7) % 40;
                let omega = draw_omega(m, case.2, OmegaDraw::OrthogonalChi, seed).unwrap();
                let o = FavorOptions { kind, causal };
                let x = inputs::<f32>(case, seed, 0.5);
                let mut out = poisoned::<f32>(x.d.rows * x.d.len * x.d.dv);
                cpu::attention::favor_attention_into(&x.q, &x.k, &x.v, &x.d, &omega, &o, &mut out)
                    .unwrap();
                let want =
                    reference::attention::favor_attention(&x.q, &x.k, &x.v, &x.d, &omega, &o)
                        .unwrap();
                // Trig features are not positive: their denominator can come near 0.
                let t = if kind == FavorKind::Trig {
                    Tol {
                        norm: 1e-4,
                        rtol: 1e-3,
                        atol: 1e-5,
                    }
                } else {
                    F32
                };
                check(
                    &format!("favor {kind:?} causal={causal} M={m} {case:?}"),
                    &out,
                    &want,
                    t,
                );
            }
        }
    }
}
