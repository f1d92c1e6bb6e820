//! The literal case of issue 11.4: B·H = 1, L = 2²⁰, D = 64, f32 (q alone is 256 MiB, past the
//! 128 MiB storage-binding limit): linear attention (causal and not) and Lightning split one row
//! along L and match the f64 reference (recurrent forms, O(L·D²)). Outputs are poisoned with NaN.
//! CPU tile family only (the split is the same code for both; tests/suite/chunk_long_l.rs covers both
//! families at long L with a capped binding).

use crate::common;

use common::*;
use longseq::attention::linear::check_shapes;
use longseq::attention::{
    lightning_attention_into, linear_attention_into, FeatureMap, LightningOptions,
    LinearAttentionOptions,
};
use longseq::{reference, Tensor};

const L: usize = 1 << 20;
const D: usize = 64;

fn inputs(seed: u64) -> [Vec<f32>; 3] {
    let mut g = rng(seed);
    [0.3, 0.3, 1.0].map(|s| randn(&mut g, L * D, s))
}

/// Runs `f` on q, k, v and a NaN-poisoned output `[1, L, D]`; returns the output.
fn gpu(
    x: &[Vec<f32>; 3],
    f: impl Fn(&Tensor<f32>, &Tensor<f32>, &Tensor<f32>, &Tensor<f32>),
) -> Vec<f64> {
    let c = ctx();
    let t = |v: &[f32]| Tensor::from_slice(c, v, &[1, L, D]).unwrap();
    let out = t(&vec![f32::NAN; L * D]);
    f(&t(&x[0]), &t(&x[1]), &t(&x[2]), &out);
    to_f64(&out.to_vec(c).unwrap())
}

#[test]
fn linear_attention_at_l_2p20_d64() {
    let x = inputs(20);
    let d = check_shapes("t", &[1, L, D], &[1, L, D], &[1, L, D]).unwrap();
    for causal in [false, true] {
        let o = LinearAttentionOptions {
            feature_map: FeatureMap::Elu1,
            causal,
            ..Default::default()
        };
        let got = gpu(&x, |q, k, v, out| {
            linear_attention_into(ctx(), q, k, v, out, &o).unwrap()
        });
        let want = reference::attention::linear_attention(&x[0], &x[1], &x[2], &d, &o).unwrap();
        assert_close_both(&format!("causal={causal}"), &got, &want, TOL_F32);
    }
}

#[test]
fn lightning_at_l_2p20_d64() {
    let x = inputs(21);
    let d = check_shapes("t", &[1, L, D], &[1, L, D], &[1, L, D]).unwrap();
    let slopes = [0.05f32];
    let o = LightningOptions::default();
    let got = gpu(&x, |q, k, v, out| {
        lightning_attention_into(ctx(), q, k, v, Some(&slopes), out, &o).unwrap()
    });
    let want =
        reference::attention::lightning_attention(&x[0], &x[1], &x[2], &d, 1, Some(&slopes), &o)
            .unwrap();
    assert_close_both("lightning", &got, &want, TOL_F32);
}
