//! TransNormer's NormAttention and DiagAttention: GPU vs the quadratic CPU references, causal ×
//! f32/f16/packed f16 × norms × ragged sizes, outputs poisoned with NaN before dispatch.

use crate::common;

use common::*;
use longseq::attention::linear::{check_shapes, AttnDims};
use longseq::attention::{
    diag_attention, diag_attention_into, norm_attention, norm_attention_into, softmax_attention,
    Affine, DiagAttentionOptions, DiagWeights, FeatureMap, Norm, NormAttentionOptions,
    SoftmaxAttentionOptions,
};
use longseq::reference;
use longseq::{Context, Element, Error, Tensor};

struct Inputs<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    sq: Vec<usize>,
    sv: Vec<usize>,
    d: AttnDims,
}

fn inputs<T: Element>(
    (rows, l, dk, dv): (usize, usize, usize, usize),
    seed: u64,
    conv: impl Fn(&[f32]) -> Vec<T>,
) -> Inputs<T> {
    let mut g = rng(seed);
    let q = conv(&randn(&mut g, rows * l * dk, 0.7));
    let k = conv(&randn(&mut g, rows * l * dk, 0.7));
    let v = conv(&randn(&mut g, rows * l * dv, 1.0));
    let (sq, sv) = (vec![rows, l, dk], vec![rows, l, dv]);
    let d = check_shapes("test", &sq, &sq, &sv).unwrap();
    Inputs { q, k, v, sq, sv, d }
}

type Op<'a, T> = &'a dyn Fn(&Tensor<T>, &Tensor<T>, &Tensor<T>, &Tensor<T>);

/// Uploads, runs `op` into a NaN-poisoned output and reads it back.
fn gpu<T: Element>(ctx: &Context, x: &Inputs<T>, op: Op<'_, T>) -> Vec<f64> {
    let t = |d: &[T], s: &[usize]| Tensor::from_slice(ctx, d, s).unwrap();
    let out = Tensor::<T>::nan(ctx, &x.d.out_shape).unwrap();
    op(&t(&x.q, &x.sq), &t(&x.k, &x.sq), &t(&x.v, &x.sv), &out);
    to_f64(&out.to_vec(ctx).unwrap())
}

const CASES: [(usize, usize, usize, usize); 4] = [
    (2, 1, 3, 1),
    (3, 63, 32, 65),
    (2, 65, 65, 3),
    (1, 1000, 32, 32),
];

fn affine_for(norm: Norm, dv: usize, seed: u64) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    if norm == Norm::SimpleRmsNorm {
        return (None, None);
    }
    let mut g = rng(seed);
    let gain: Vec<f32> = randn(&mut g, dv, 0.3).iter().map(|x| 1.0 + x).collect();
    (Some(gain), Some(randn(&mut g, dv, 0.1)))
}

fn norm_sweep<T: Element>(ctx: &Context, tol: f64, label: &str, conv: impl Fn(&[f32]) -> Vec<T>) {
    let norms = [Norm::SimpleRmsNorm, Norm::RmsNorm, Norm::LayerNorm];
    let maps = [FeatureMap::Elu, FeatureMap::Elu1, FeatureMap::Relu];
    let mut seed = 500;
    for (ci, &case) in CASES.iter().enumerate() {
        for causal in [false, true] {
            seed += 1;
            let x = inputs(case, seed, &conv);
            let norm = norms[(ci + causal as usize) % 3];
            let fm = maps[(ci + 2 * causal as usize) % 3];
            let (g, b) = affine_for(norm, case.3, seed);
            let aff = Affine {
                gain: g.as_deref(),
                bias: b.as_deref(),
            };
            let o = NormAttentionOptions {
                feature_map: fm,
                causal,
                norm,
                eps: 1e-6,
            };
            let got = gpu(ctx, &x, &|q, k, v, out| {
                norm_attention_into(ctx, q, k, v, &aff, out, &o).unwrap()
            });
            let want =
                reference::attention::norm_attention(&x.q, &x.k, &x.v, &x.d, &aff, &o).unwrap();
            let e = rel_err(&got, &want);
            let l = format!("{label} {fm:?} {norm:?} causal={causal} {case:?}");
            eprintln!("norm {l}: {e:.2e}");
            assert!(e <= tol, "{l}: {e:.3e} > {tol:.1e}");
        }
    }
}

fn diag_sweep<T: Element>(ctx: &Context, tol: f64, label: &str, conv: impl Fn(&[f32]) -> Vec<T>) {
    let mut seed = 700;
    for (ci, &case) in CASES.iter().enumerate() {
        for causal in [false, true] {
            for (w, weights) in [
                (1u32, DiagWeights::Softmax),
                (7, DiagWeights::Relu),
                (64, DiagWeights::Softmax),
                (40, DiagWeights::Relu),
            ] {
                seed += 1;
                let x = inputs(case, seed, &conv);
                let norm =
                    [Norm::SimpleRmsNorm, Norm::RmsNorm, Norm::LayerNorm][(ci + w as usize) % 3];
                let (g, b) = match weights {
                    DiagWeights::Relu => affine_for(norm, case.3, seed),
                    DiagWeights::Softmax => (None, None),
                };
                let aff = Affine {
                    gain: g.as_deref(),
                    bias: b.as_deref(),
                };
                let o = DiagAttentionOptions {
                    block: w,
                    causal,
                    weights,
                    norm,
                    ..Default::default()
                };
                let got = gpu(ctx, &x, &|q, k, v, out| {
                    diag_attention_into(ctx, q, k, v, &aff, out, &o).unwrap()
                });
                let want =
                    reference::attention::diag_attention(&x.q, &x.k, &x.v, &x.d, &aff, &o).unwrap();
                let e = rel_err(&got, &want);
                let l = format!("{label} w={w} {weights:?} {norm:?} causal={causal} {case:?}");
                eprintln!("diag {l}: {e:.2e}");
                assert!(e <= tol, "{l}: {e:.3e} > {tol:.1e}");
            }
        }
    }
}

#[test]
fn norm_attention_matches_reference() {
    norm_sweep(ctx(), TOL_F32, "f32", |x| x.to_vec());
    norm_sweep(ctx(), TOL_F16, "f16", to_f16);
    norm_sweep(ctx_packed(), TOL_F16, "f16-packed", to_f16);
}

#[test]
fn diag_attention_matches_reference() {
    diag_sweep(ctx(), TOL_F32, "f32", |x| x.to_vec());
    diag_sweep(ctx_gpu_tiles(), TOL_F32, "f32 gpu tiles", |x| x.to_vec());
    diag_sweep(ctx(), TOL_F16, "f16", to_f16);
    diag_sweep(ctx_packed(), TOL_F16, "f16-packed", to_f16);
}

/// One block spanning L is exact softmax attention.
#[test]
fn diag_with_one_block_is_softmax_attention() {
    let c = ctx();
    let x = inputs((2, 90, 8, 5), 3, |x| x.to_vec());
    for causal in [false, true] {
        let t = |d: &[f32], s: &[usize]| Tensor::from_slice(c, d, s).unwrap();
        let (q, k, v) = (t(&x.q, &x.sq), t(&x.k, &x.sq), t(&x.v, &x.sv));
        let o = DiagAttentionOptions {
            block: 500,
            causal,
            ..Default::default()
        };
        let a = diag_attention(c, &q, &k, &v, &Affine::default(), &o).unwrap();
        let so = SoftmaxAttentionOptions {
            causal,
            scale: None,
            ..Default::default()
        };
        let b = softmax_attention(c, &q, &k, &v, &so).unwrap();
        let (a, b) = (to_f64(&a.to_vec(c).unwrap()), to_f64(&b.to_vec(c).unwrap()));
        assert_close("diag(w >= L) vs softmax", &a, &b, 1e-6);
    }
}

/// The NormAttention reference (quadratic form) against the linear-attention reference without
/// denominator (recurrent form), normalised afterwards.
/// NaN and ±Inf inputs give NaN exactly where the reference does, on both paths (the chunk
/// engine: softmax weights in blocks ≤ 64; the attend kernels: longer blocks, relu weights) and
/// both tile families: a NaN in q, k or v, a +Inf logit (a row of NaN) and −Inf logits (weights
/// exactly 0).
#[test]
fn diag_nan_and_inf_follow_the_reference_pattern() {
    let (rows, l, dk, dv) = (3, 150, 8, 6);
    let mut g = rng(91);
    let mut q = randn(&mut g, rows * l * dk, 1.0);
    let mut k = randn(&mut g, rows * l * dk, 1.0);
    let mut v = randn(&mut g, rows * l * dv, 1.0);
    q[3 * dk] = f32::NAN; // row 0, position 3
    k[(l + 70) * dk + 2] = f32::NAN; // row 1, position 70
    v[(2 * l + 5) * dv + 1] = f32::NAN; // row 2, position 5
    q[(l + 100) * dk + 1] = f32::INFINITY; // row 1, position 100: ±Inf logits
    k[(2 * l + 120) * dk] = f32::NEG_INFINITY; // row 2, position 120
    let sq = vec![rows, l, dk];
    let sv = vec![rows, l, dv];
    let d = check_shapes("test", &sq, &sq, &sv).unwrap();
    let x = Inputs { q, k, v, sq, sv, d };
    let none = Affine::default();
    for c in [ctx(), ctx_gpu_tiles()] {
        for causal in [false, true] {
            for (block, weights) in [
                (64, DiagWeights::Softmax),
                (10, DiagWeights::Softmax),
                (100, DiagWeights::Softmax),
                (7, DiagWeights::Relu),
            ] {
                let o = DiagAttentionOptions {
                    block,
                    causal,
                    weights,
                    ..Default::default()
                };
                let got = gpu(c, &x, &|q, k, v, out| {
                    diag_attention_into(c, q, k, v, &none, out, &o).unwrap()
                });
                let want = reference::attention::diag_attention(&x.q, &x.k, &x.v, &x.d, &none, &o)
                    .unwrap();
                assert!(want.iter().any(|x| x.is_nan()) && want.iter().any(|x| !x.is_nan()));
                let label = format!("w={block} {weights:?} causal={causal}");
                assert_eq!(
                    nan_mismatches(&got, &want),
                    0,
                    "{label}: NaN pattern differs"
                );
                assert_close_elementwise(&label, &got, &want, 10.0 * TOL_F32, 10.0 * TOL_F32);
            }
        }
    }
}

#[test]
fn norm_reference_matches_normalised_linear_reference() {
    let x = inputs((2, 33, 4, 6), 8, |x| x.to_vec());
    for causal in [false, true] {
        let o = NormAttentionOptions {
            causal,
            feature_map: FeatureMap::Elu,
            ..Default::default()
        };
        let got =
            reference::attention::norm_attention(&x.q, &x.k, &x.v, &x.d, &Affine::default(), &o)
                .unwrap();
        let lo = longseq::attention::LinearAttentionOptions {
            feature_map: FeatureMap::Elu,
            causal,
            denominator: false,
            ..Default::default()
        };
        let mut want = reference::attention::linear_attention(&x.q, &x.k, &x.v, &x.d, &lo).unwrap();
        for row in want.chunks_mut(6) {
            Norm::SimpleRmsNorm.apply(row, 1e-6, None, None);
        }
        assert_close(&format!("causal={causal}"), &got, &want, 1e-12);
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let c = ctx();
    let x = Tensor::from_slice(c, &[0.25f32; 2 * 5 * 4], &[2, 5, 4]).unwrap();
    let none = Affine::default();
    let d0 = DiagAttentionOptions {
        block: 0,
        ..Default::default()
    };
    assert!(matches!(
        diag_attention(c, &x, &x, &x, &none, &d0),
        Err(Error::InvalidArgument { name: "block", .. })
    ));
    let g3 = [1.0f32; 3];
    let rms = NormAttentionOptions {
        norm: Norm::RmsNorm,
        ..Default::default()
    };
    let short = Affine {
        gain: Some(&g3),
        bias: None,
    };
    assert!(matches!(
        norm_attention(c, &x, &x, &x, &short, &rms),
        Err(Error::Shape { name: "gain", .. })
    ));
    let g4 = [1.0f32; 4];
    let ok = Affine {
        gain: Some(&g4),
        bias: None,
    };
    assert!(matches!(
        norm_attention(c, &x, &x, &x, &ok, &NormAttentionOptions::default()),
        Err(Error::InvalidArgument { name: "gain", .. })
    ));
    let bad_eps = NormAttentionOptions {
        eps: f32::NAN,
        ..Default::default()
    };
    assert!(matches!(
        norm_attention(c, &x, &x, &x, &none, &bad_eps),
        Err(Error::InvalidArgument { name: "eps", .. })
    ));
    let y = Tensor::from_slice(c, &[0.25f32; 2 * 6 * 4], &[2, 6, 4]).unwrap();
    assert!(matches!(
        norm_attention(c, &x, &y, &x, &none, &NormAttentionOptions::default()),
        Err(Error::Shape { name: "k", .. })
    ));
    let bad_scale = DiagAttentionOptions {
        scale: Some(f32::INFINITY),
        ..Default::default()
    };
    assert!(matches!(
        diag_attention(c, &x, &x, &x, &none, &bad_scale),
        Err(Error::InvalidArgument { name: "scale", .. })
    ));
}

/// `FeatureMap::Elu` (added for NormAttention) also drives the linear-attention kernel.
#[test]
fn linear_attention_with_the_elu_map_matches_reference() {
    let c = ctx();
    let x = inputs((2, 77, 5, 6), 12, |x| x.to_vec());
    for causal in [false, true] {
        let o = longseq::attention::LinearAttentionOptions {
            feature_map: FeatureMap::Elu,
            causal,
            denominator: false,
            ..Default::default()
        };
        let got = gpu(c, &x, &|q, k, v, out| {
            longseq::attention::linear_attention_into(c, q, k, v, out, &o).unwrap()
        });
        let want = reference::attention::linear_attention(&x.q, &x.k, &x.v, &x.d, &o).unwrap();
        assert_close(&format!("elu causal={causal}"), &got, &want, TOL_F32);
    }
}

/// The output norm (`norm_rows`) looped over Dv three times in one invocation per row: at wide
/// Dv lavapipe could stop it early (issue 11, item 1). Rows wider than its bound now run one
/// workgroup per row. NormAttention's chunk engine refuses such Dv first (typed error), so the
/// norm is reached through DiagAttention (ReLU blocks): RMSNorm and LayerNorm, causal and not,
/// both tile families, f32.
#[test]
fn norm_rows_of_wide_dv_run_whole_loops() {
    let mut fails = Vec::new();
    for (label, ctx) in [("cpu tiles", ctx()), ("gpu tiles", ctx_gpu_tiles())] {
        for (i, (norm, causal)) in [(Norm::RmsNorm, false), (Norm::LayerNorm, true)]
            .into_iter()
            .enumerate()
        {
            let case = (1, 5, 4, 40_001);
            let x = inputs(case, 900 + i as u64, |x| x.to_vec());
            let (g, b) = affine_for(norm, case.3, 901 + i as u64);
            let aff = Affine {
                gain: g.as_deref(),
                bias: b.as_deref(),
            };
            let o = DiagAttentionOptions {
                block: 3,
                causal,
                weights: DiagWeights::Relu,
                norm,
                ..Default::default()
            };
            let got = gpu(ctx, &x, &|q, k, v, out| {
                diag_attention_into(ctx, q, k, v, &aff, out, &o).unwrap()
            });
            let want =
                reference::attention::diag_attention(&x.q, &x.k, &x.v, &x.d, &aff, &o).unwrap();
            let e = rel_err(&got, &want);
            let l = format!("{label} {norm:?} causal={causal} {case:?}");
            eprintln!("wide norm {l}: rel err {e:.2e}");
            if e.is_nan() || e > TOL_F32 {
                fails.push(format!("{l}: {e:.3e}"));
            }
        }
    }
    assert!(fails.is_empty(), "{fails:#?}");
}
