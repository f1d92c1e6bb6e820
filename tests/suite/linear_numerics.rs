//! Numerically hard linear-attention inputs: f16 storage with large features over a long
//! sequence, and the denominator guard when every weight of a row is 0.

use crate::common;

use common::*;
use longseq::attention::linear::check_shapes;
use longseq::attention::{linear_attention_into, FeatureMap, LinearAttentionOptions};
use longseq::reference;
use longseq::{Context, Element, Tensor};

fn gpu<T: Element>(
    ctx: &Context,
    (rows, l, dk, dv): (usize, usize, usize, usize),
    (q, k, v): (&[T], &[T], &[T]),
    o: &LinearAttentionOptions,
) -> Vec<f64> {
    let t = |x: &[T], s: &[usize]| Tensor::from_slice(ctx, x, s).unwrap();
    let out = Tensor::<T>::nan(ctx, &[rows, l, dv]).unwrap();
    let (sq, sv) = ([rows, l, dk], [rows, l, dv]);
    linear_attention_into(ctx, &t(q, &sq), &t(k, &sq), &t(v, &sv), &out, o).unwrap();
    to_f64(&out.to_vec(ctx).unwrap())
}

/// elu1 with every key near +8 and L = 4096: φ(k) ≈ 9, so z reaches ≈ 3.7e4 per feature and the
/// denominator ≈ 6e5, past f16's 65504. f16 storage with f32 state stays finite and within f16
/// tolerance of the reference (computed on the same f16-rounded inputs).
#[test]
fn f16_elu1_keys_near_8_long_sequence() {
    let (rows, l, dk, dv) = (2, 4096, 16, 16);
    let mut g = rng(77);
    let q = randn(&mut g, rows * l * dk, 1.0);
    let k: Vec<f32> = randn(&mut g, rows * l * dk, 0.05)
        .iter()
        .map(|x| 8.0 + x)
        .collect();
    let v = randn(&mut g, rows * l * dv, 1.0);
    let (q, k, v) = (to_f16(&q), to_f16(&k), to_f16(&v));
    let d = check_shapes("t", &[rows, l, dk], &[rows, l, dk], &[rows, l, dv]).unwrap();
    for causal in [false, true] {
        let o = LinearAttentionOptions {
            feature_map: FeatureMap::Elu1,
            causal,
            ..Default::default()
        };
        let want = reference::attention::linear_attention(&q, &k, &v, &d, &o).unwrap();
        for (name, c) in [("native", ctx()), ("packed", ctx_packed())] {
            let got = gpu(c, (rows, l, dk, dv), (&q, &k, &v), &o);
            assert!(got.iter().all(|x| x.is_finite()), "{name} causal={causal}");
            assert_close(&format!("{name} causal={causal}"), &got, &want, TOL_F16);
        }
    }
}

/// Rows whose features are all 0 with ε = 0: relu of a query ≤ 0 everywhere, and elu1 of a
/// query at −1000 (e^−1000 is 0 in f64 as in f32). The reference defines 0/0 as 0; the GPU gives
/// the same, and no output is NaN or infinite.
#[test]
fn denominator_guard_all_features_zero() {
    let (rows, l, dk, dv) = (2, 70, 3, 4);
    let mut g = rng(9);
    for (fm, bad) in [(FeatureMap::Relu, -0.5f32), (FeatureMap::Elu1, -1000.0)] {
        let mut q = randn(&mut g, rows * l * dk, 1.0);
        let mut k = randn(&mut g, rows * l * dk, 1.0);
        let v = randn(&mut g, rows * l * dv, 1.0);
        // Row 0: queries at positions 0..10 all `bad`; row 1: every key `bad` (so every weight 0).
        q[..10 * dk].fill(bad);
        k[l * dk..].fill(bad);
        let d = check_shapes("t", &[rows, l, dk], &[rows, l, dk], &[rows, l, dv]).unwrap();
        for causal in [false, true] {
            let o = LinearAttentionOptions {
                feature_map: fm,
                causal,
                eps: 0.0,
                denominator: true,
                ..Default::default()
            };
            let want = reference::attention::linear_attention(&q, &k, &v, &d, &o).unwrap();
            assert!(want[..10 * dv].iter().all(|&x| x == 0.0));
            assert!(want[l * dv..].iter().all(|&x| x == 0.0));
            assert!(want[10 * dv..l * dv].iter().any(|&x| x != 0.0));
            let label = format!("{fm:?} causal={causal}");
            let got = gpu(ctx(), (rows, l, dk, dv), (&q, &k, &v), &o);
            assert!(got.iter().all(|x| x.is_finite()), "{label}");
            assert_close(&label, &got, &want, TOL_F32);
            let (q16, k16, v16) = (to_f16(&q), to_f16(&k), to_f16(&v));
            let want16 = reference::attention::linear_attention(&q16, &k16, &v16, &d, &o).unwrap();
            for c in [ctx(), ctx_packed()] {
                let got = gpu(c, (rows, l, dk, dv), (&q16, &k16, &v16), &o);
                assert!(got.iter().all(|x| x.is_finite()), "f16 {label}");
                assert_close(&format!("f16 {label}"), &got, &want16, TOL_F16);
            }
        }
    }
}
