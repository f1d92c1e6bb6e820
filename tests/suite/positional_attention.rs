//! Softmax attention with ALiBi, log-n scaling, a sliding window and ReRoPE: the tiled GPU kernel
//! vs a dense masked CPU computation, on ragged L, per dtype; typed errors.

use crate::common;

use common::*;
use longseq::attention::linear::check_shapes;
use longseq::attention::{
    softmax_attention_positional, softmax_attention_positional_into, Alibi, PositionalOptions,
    ReRope, SoftmaxAttentionOptions,
};
use longseq::positions::RopeLayout;
use longseq::{reference, Context, Element, Error, Tensor};

#[allow(clippy::too_many_arguments)]
fn run<T: Element>(
    ctx: &Context,
    shape_qk: &[usize],
    shape_v: &[usize],
    x: (&[f32], &[f32], &[f32]),
    o: &SoftmaxAttentionOptions,
    pos: &PositionalOptions<'_>,
    conv: impl Fn(&[f32]) -> Vec<T>,
) -> f64 {
    let (q, k, v) = (conv(x.0), conv(x.1), conv(x.2));
    let d = check_shapes("test", shape_qk, shape_qk, shape_v).unwrap();
    let tq = Tensor::from_slice(ctx, &q, shape_qk).unwrap();
    let tk = Tensor::from_slice(ctx, &k, shape_qk).unwrap();
    let tv = Tensor::from_slice(ctx, &v, shape_v).unwrap();
    let out = Tensor::<T>::nan(ctx, &d.out_shape).unwrap();
    softmax_attention_positional_into(ctx, &tq, &tk, &tv, &out, o, pos).unwrap();
    let got = to_f64(&out.to_vec(ctx).unwrap());
    let heads = shape_qk[shape_qk.len() - 3];
    let want = reference::attention::positional::softmax_attention_positional(
        &q, &k, &v, &d, heads, o, pos,
    )
    .unwrap();
    rel_err(&got, &want)
}

#[test]
fn gpu_matches_the_dense_masked_computation() {
    let slopes = [0.3f32, 0.05, 1.2];
    let rr = |window, layout| ReRope {
        window,
        base: 10_000.0,
        layout,
    };
    let cases: Vec<(&str, bool, PositionalOptions<'_>)> = vec![
        (
            "alibi",
            false,
            PositionalOptions {
                alibi: Some(Alibi::Standard),
                ..Default::default()
            },
        ),
        (
            "alibi causal",
            true,
            PositionalOptions {
                alibi: Some(Alibi::Standard),
                ..Default::default()
            },
        ),
        (
            "alibi slopes",
            true,
            PositionalOptions {
                alibi: Some(Alibi::Slopes(&slopes)),
                ..Default::default()
            },
        ),
        (
            "log-n",
            false,
            PositionalOptions {
                log_n_train: Some(16),
                ..Default::default()
            },
        ),
        (
            "log-n causal",
            true,
            PositionalOptions {
                log_n_train: Some(16),
                ..Default::default()
            },
        ),
        (
            "window 1",
            true,
            PositionalOptions {
                window: Some(1),
                ..Default::default()
            },
        ),
        (
            "window 7",
            false,
            PositionalOptions {
                window: Some(7),
                ..Default::default()
            },
        ),
        (
            "window 64",
            true,
            PositionalOptions {
                window: Some(64),
                ..Default::default()
            },
        ),
        (
            "rerope interleaved",
            true,
            PositionalOptions {
                rerope: Some(rr(8, RopeLayout::Interleaved)),
                ..Default::default()
            },
        ),
        (
            "rerope half",
            false,
            PositionalOptions {
                rerope: Some(rr(5, RopeLayout::HalfSplit)),
                ..Default::default()
            },
        ),
        (
            "rerope wide",
            true,
            PositionalOptions {
                rerope: Some(rr(100_000, RopeLayout::HalfSplit)),
                ..Default::default()
            },
        ),
        (
            "all",
            true,
            PositionalOptions {
                alibi: Some(Alibi::Slopes(&slopes)),
                log_n_train: Some(8),
                window: Some(20),
                rerope: Some(rr(6, RopeLayout::Interleaved)),
            },
        ),
    ];
    // (B, H, L, Dk, Dv): L in {1, 63, 65, 130}, Dk even (ReRoPE pairs).
    let shapes = [
        (1, 3, 1, 4, 3),
        (2, 3, 63, 16, 5),
        (1, 3, 65, 64, 64),
        (1, 3, 130, 34, 7),
    ];
    let mut worst = [0.0f64; 3];
    let mut seed = 100;
    for &(b, h, l, dk, dv) in &shapes {
        for (name, causal, pos) in &cases {
            seed += 1;
            let mut g = rng(seed);
            let q = randn(&mut g, b * h * l * dk, 0.5);
            let k = randn(&mut g, b * h * l * dk, 0.5);
            let v = randn(&mut g, b * h * l * dv, 1.0);
            let (sq, sv) = ([b, h, l, dk], [b, h, l, dv]);
            let o = SoftmaxAttentionOptions {
                causal: *causal,
                scale: None,
                ..Default::default()
            };
            let x = (&q[..], &k[..], &v[..]);
            let errs = [
                (run(ctx(), &sq, &sv, x, &o, pos, |v| v.to_vec()), TOL_F32),
                (run(ctx(), &sq, &sv, x, &o, pos, to_f16), TOL_F16),
                (run(ctx_packed(), &sq, &sv, x, &o, pos, to_f16), TOL_F16),
            ];
            for (i, (e, tol)) in errs.into_iter().enumerate() {
                assert!(
                    e <= tol,
                    "{name} {:?} dtype #{i}: relative error {e:.3e}",
                    sq
                );
                worst[i] = worst[i].max(e);
            }
        }
    }
    eprintln!(
        "worst relative error: f32 {:.2e}, f16 {:.2e}, f16 packed {:.2e}",
        worst[0], worst[1], worst[2]
    );
}

#[test]
fn bad_options_are_typed_errors() {
    let c = ctx();
    let x = Tensor::from_slice(c, &randn(&mut rng(1), 2 * 5 * 4, 1.0), &[2, 5, 4]).unwrap();
    let odd = Tensor::from_slice(c, &randn(&mut rng(2), 2 * 5 * 3, 1.0), &[2, 5, 3]).unwrap();
    let o = SoftmaxAttentionOptions::default();
    let rr = ReRope {
        window: 4,
        base: 10_000.0,
        layout: RopeLayout::Interleaved,
    };
    let bad: Vec<(&Tensor<f32>, PositionalOptions<'_>)> = vec![
        (
            &x,
            PositionalOptions {
                window: Some(0),
                ..Default::default()
            },
        ),
        (
            &x,
            PositionalOptions {
                log_n_train: Some(1),
                ..Default::default()
            },
        ),
        (
            &x,
            PositionalOptions {
                alibi: Some(Alibi::Slopes(&[f32::NAN, 1.0])),
                ..Default::default()
            },
        ),
        (
            &x,
            PositionalOptions {
                rerope: Some(ReRope { window: 0, ..rr }),
                ..Default::default()
            },
        ),
        (
            &odd,
            PositionalOptions {
                rerope: Some(rr),
                ..Default::default()
            },
        ),
    ];
    for (t, pos) in bad {
        let r = softmax_attention_positional(c, t, t, t, &o, &pos);
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. })),
            "{pos:?}: {:?}",
            r.err()
        );
    }
    let wrong = PositionalOptions {
        alibi: Some(Alibi::Slopes(&[1.0])),
        ..Default::default()
    };
    assert!(matches!(
        softmax_attention_positional(c, &x, &x, &x, &o, &wrong),
        Err(Error::Shape { .. })
    ));
}
