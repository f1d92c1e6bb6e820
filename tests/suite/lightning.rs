//! Lightning attention: the block-wise GPU kernel against the plain recurrence, for weak to strong
//! decays, ragged L, f32/f16/packed f16, outputs poisoned with NaN before dispatch.

use crate::common;

use common::*;
use longseq::attention::linear::check_shapes;
use longseq::attention::{
    alibi_slopes, lightning_attention, lightning_attention_into, FeatureMap, LightningOptions,
};
use longseq::reference;
use longseq::{Context, Element, Error, Tensor};

/// Runs GPU and CPU on the same (dtype-rounded) inputs of shape `[.., H, L, D]`; returns (gpu, cpu).
fn run<T: Element>(
    ctx: &Context,
    shape_qk: &[usize],
    shape_v: &[usize],
    x: (&[f32], &[f32], &[f32]),
    slopes: Option<&[f32]>,
    o: &LightningOptions,
    conv: impl Fn(&[f32]) -> Vec<T>,
) -> (Vec<f64>, Vec<f64>) {
    let (q, k, v) = (conv(x.0), conv(x.1), conv(x.2));
    let d = check_shapes("test", shape_qk, shape_qk, shape_v).unwrap();
    let heads = shape_qk[shape_qk.len() - 3];
    let tq = Tensor::from_slice(ctx, &q, shape_qk).unwrap();
    let tk = Tensor::from_slice(ctx, &k, shape_qk).unwrap();
    let tv = Tensor::from_slice(ctx, &v, shape_v).unwrap();
    let out = Tensor::<T>::nan(ctx, &d.out_shape).unwrap();
    lightning_attention_into(ctx, &tq, &tk, &tv, slopes, &out, o).unwrap();
    let got = to_f64(&out.to_vec(ctx).unwrap());
    let want = reference::attention::lightning_attention(&q, &k, &v, &d, heads, slopes, o).unwrap();
    (got, want)
}

/// (heads, L, Dk, Dv) over L ∈ {1, 63, 65, 1000}.
const CASES: [(usize, usize, usize, usize); 5] = [
    (2, 1, 3, 1),
    (3, 63, 32, 65),
    (2, 65, 1, 3),
    (2, 65, 65, 32),
    (2, 1000, 32, 32),
];

fn sweep(dtype: &str) {
    let mut seed = 300;
    let o = LightningOptions {
        block: Some(64),
        ..Default::default()
    };
    for &(h, l, dk, dv) in &CASES {
        for s in [0.01f32, 0.5, 2.0] {
            seed += 1;
            let mut g = rng(seed);
            let q = randn(&mut g, h * l * dk, 0.5);
            let k = randn(&mut g, h * l * dk, 0.5);
            let v = randn(&mut g, h * l * dv, 1.0);
            let (sq, sv) = ([h, l, dk], [h, l, dv]);
            let sl = vec![s; h];
            let label = format!("{dtype} s={s} H={h} L={l} Dk={dk} Dv={dv}");
            let x = (&q[..], &k[..], &v[..]);
            let ((got, want), tol) = match dtype {
                "f32" => (
                    run(ctx(), &sq, &sv, x, Some(&sl), &o, |x| x.to_vec()),
                    TOL_F32,
                ),
                "f16" => (run(ctx(), &sq, &sv, x, Some(&sl), &o, to_f16), TOL_F16),
                _ => (
                    run(ctx_packed(), &sq, &sv, x, Some(&sl), &o, to_f16),
                    TOL_F16,
                ),
            };
            let e = rel_err(&got, &want);
            eprintln!("{label}: {e:.2e}");
            assert!(e <= tol, "{label}: relative error {e:.3e} > {tol:.1e}");
        }
    }
}

#[test]
fn blockwise_matches_the_recurrence_f32() {
    sweep("f32");
}

#[test]
fn blockwise_matches_the_recurrence_f16_native() {
    assert!(ctx().shader_f16());
    sweep("f16");
}

#[test]
fn blockwise_matches_the_recurrence_f16_packed() {
    assert!(!ctx_packed().shader_f16());
    sweep("f16-packed");
}

/// ALiBi slopes by default on [B, H, L, D] with H = 6 (not a power of two), any block size, and
/// φ applied in the kernel.
#[test]
fn alibi_default_any_block_and_feature_map() {
    let (b, h, l, d) = (2, 6, 130, 7);
    let mut g = rng(17);
    let q = randn(&mut g, b * h * l * d, 0.7);
    let k = randn(&mut g, b * h * l * d, 0.7);
    let v = randn(&mut g, b * h * l * d, 1.0);
    let s = [b, h, l, d];
    for (block, fm) in [
        (None, FeatureMap::Identity),
        (Some(1), FeatureMap::Identity),
        (Some(7), FeatureMap::Elu1),
        (Some(64), FeatureMap::Relu),
        (Some(50), FeatureMap::Elu),
    ] {
        let o = LightningOptions {
            block,
            feature_map: fm,
            ..Default::default()
        };
        let (got, want) = run(ctx(), &s, &s, (&q, &k, &v), None, &o, |x| x.to_vec());
        assert_close(&format!("block {block:?} {fm:?}"), &got, &want, TOL_F32);
    }
}

#[test]
fn alibi_slopes_follow_the_alibi_rule() {
    let s8 = alibi_slopes(8);
    let want: Vec<f32> = (1..=8).map(|h| 2f32.powi(-h)).collect();
    assert_eq!(s8, want);
    // H = 6: the 4 slopes of H = 4, then slopes 1 and 3 (0-based 0, 2) of H = 8.
    let s6 = alibi_slopes(6);
    assert_eq!(&s6[..4], &alibi_slopes(4)[..]);
    assert_eq!(s6[4], alibi_slopes(8)[0]);
    assert_eq!(s6[5], alibi_slopes(8)[2]);
}

/// With storage bindings capped at 64 KiB the op runs in several passes; heads stay aligned.
#[test]
fn splits_work_past_the_storage_binding_limit() {
    let ctx = ctx_small_bindings(64 * 1024);
    let (b, h, l, d) = (3, 5, 101, 17);
    let mut g = rng(23);
    let q = randn(&mut g, b * h * l * d, 0.5);
    let k = randn(&mut g, b * h * l * d, 0.5);
    let v = randn(&mut g, b * h * l * d, 1.0);
    let s = [b, h, l, d];
    let sl = [0.01f32, 0.1, 0.5, 1.0, 2.0];
    let o = LightningOptions::default();
    let (got, want) = run(&ctx, &s, &s, (&q, &k, &v), Some(&sl), &o, |x| x.to_vec());
    assert_close("f32", &got, &want, TOL_F32);
    let (got, want) = run(&ctx, &s, &s, (&q, &k, &v), Some(&sl), &o, to_f16);
    assert_close("f16", &got, &want, TOL_F16);
}

/// The recurrence against the quadratic definition `o_t = Σ_{j≤t} λ^(t−j) (q_t·k_j) v_j`.
#[test]
fn reference_matches_the_quadratic_form() {
    let (h, l, dk, dv) = (2, 40, 3, 4);
    let mut g = rng(29);
    let q = randn(&mut g, h * l * dk, 1.0);
    let k = randn(&mut g, h * l * dk, 1.0);
    let v = randn(&mut g, h * l * dv, 1.0);
    let d = check_shapes("t", &[h, l, dk], &[h, l, dk], &[h, l, dv]).unwrap();
    let sl = [0.3f32, 2.0];
    let o = LightningOptions::default();
    let got = reference::attention::lightning_attention(&q, &k, &v, &d, h, Some(&sl), &o).unwrap();
    let mut want = vec![0.0; h * l * dv];
    for r in 0..h {
        let lam = (-(sl[r] as f64)).exp();
        for t in 0..l {
            for j in 0..=t {
                let w: f64 = (0..dk)
                    .map(|a| q[(r * l + t) * dk + a] as f64 * k[(r * l + j) * dk + a] as f64)
                    .sum::<f64>()
                    * lam.powi((t - j) as i32);
                for e in 0..dv {
                    want[(r * l + t) * dv + e] += w * v[(r * l + j) * dv + e] as f64;
                }
            }
        }
    }
    assert_close("reference", &got, &want, 1e-12);
}

#[test]
fn nan_reaches_exactly_the_outputs_the_recurrence_makes_nan() {
    let (h, l, dk, dv) = (3, 150, 4, 5);
    let mut g = rng(31);
    let mut q = randn(&mut g, h * l * dk, 1.0);
    let mut k = randn(&mut g, h * l * dk, 1.0);
    let mut v = randn(&mut g, h * l * dv, 1.0);
    k[(l + 70) * dk + 2] = f32::NAN;
    v[(2 * l + 5) * dv + 1] = f32::NAN;
    q[3 * dk] = f32::NAN;
    let s = [h, l, dk];
    let sv = [h, l, dv];
    let sl = [2.0f32, 2.0, 0.5];
    let o = LightningOptions::default();
    let (got, want) = run(ctx(), &s, &sv, (&q, &k, &v), Some(&sl), &o, |x| x.to_vec());
    assert!(want.iter().any(|x| x.is_nan()) && want.iter().any(|x| !x.is_nan()));
    let mism = nan_mismatches(&got, &want);
    assert_eq!(mism, 0, "NaN pattern differs at {mism} outputs");
    assert_close("non-NaN outputs", &got, &want, TOL_F32);
}

#[test]
fn bad_input_is_a_typed_error() {
    let c = ctx();
    let x = Tensor::from_slice(c, &vec![0.25f32; 2 * 3 * 5 * 4], &[2, 3, 5, 4]).unwrap();
    let o = LightningOptions::default();
    assert!(matches!(
        lightning_attention(c, &x, &x, &x, Some(&[0.5, 0.5]), &o),
        Err(Error::Shape { name: "slopes", .. })
    ));
    for bad in [-0.1f32, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            lightning_attention(c, &x, &x, &x, Some(&[0.5, bad, 0.5]), &o),
            Err(Error::InvalidArgument { name: "slopes", .. })
        ));
    }
    for block in [0u32, 100_000] {
        let o = LightningOptions {
            block: Some(block),
            ..o
        };
        assert!(matches!(
            lightning_attention(c, &x, &x, &x, None, &o),
            Err(Error::InvalidArgument { name: "block", .. })
        ));
    }
    let y = Tensor::from_slice(c, &vec![0.25f32; 2 * 3 * 6 * 4], &[2, 3, 6, 4]).unwrap();
    assert!(matches!(
        lightning_attention(c, &x, &y, &x, None, &o),
        Err(Error::Shape { name: "k", .. })
    ));
}
