//! RoPE: GPU vs the f64 reference for every scaling × layout × dtype (f32, f16, packed f16) on
//! ragged shapes and large positions; the relative property; typed errors.

use crate::common;

use common::*;
use longseq::positions::{rope, rope_into, Positions, RopeLayout, RopeOptions, RopeScaling};
use longseq::{reference, Context, Element, Error, Tensor};
use rand::Rng;

const LAYOUTS: [RopeLayout; 2] = [RopeLayout::Interleaved, RopeLayout::HalfSplit];

fn scalings() -> [RopeScaling; 6] {
    [
        RopeScaling::None,
        RopeScaling::Linear { factor: 4.0 },
        RopeScaling::Ntk { factor: 8.0 },
        RopeScaling::DynamicNtk {
            factor: 1.0,
            original_length: 256,
        },
        RopeScaling::DynamicNtk {
            factor: 2.0,
            original_length: 300,
        },
        RopeScaling::Yarn {
            factor: 4.0,
            original_length: 256,
            alpha: 1.0,
            beta: 32.0,
        },
    ]
}

/// GPU (output poisoned with NaN) vs the reference on the same dtype-rounded input.
fn run<T: Element>(
    ctx: &Context,
    shape: &[usize],
    x: &[f32],
    pos: Positions<'_>,
    o: &RopeOptions,
    conv: impl Fn(&[f32]) -> Vec<T>,
) -> f64 {
    let xs = conv(x);
    let tx = Tensor::from_slice(ctx, &xs, shape).unwrap();
    let out = Tensor::<T>::nan(ctx, shape).unwrap();
    rope_into(ctx, &tx, pos, &out, o).unwrap();
    let got = to_f64(&out.to_vec(ctx).unwrap());
    let want = reference::positions::rope(&xs, shape, pos, o).unwrap();
    assert_eq!(to_f64(&tx.to_vec(ctx).unwrap()), to_f64(&xs));
    rel_err(&got, &want)
}

#[test]
fn gpu_matches_the_equations_for_every_scaling_layout_and_dtype() {
    let mut g = rng(42);
    let far: Vec<u32> = (0..63).map(|_| g.random_range(0..1_000_000)).collect();
    // (shape, positions): B·H and L off the power of two, D in {2, 6, 64, 66}, offsets past the
    // trained length (1857 is where an f16 angle is off by 0.78 in cos), positions up to 1e6.
    let cases: [(&[usize], Positions<'_>); 4] = [
        (&[2, 3, 65, 64], Positions::Offset(0)),
        (&[1, 1000, 6], Positions::Offset(1857)),
        (&[3, 63, 66], Positions::Explicit(&far)),
        (&[5, 7, 2], Positions::Offset(3)),
    ];
    let mut worst = [0.0f64; 3];
    for (ci, &(shape, pos)) in cases.iter().enumerate() {
        let n: usize = shape.iter().product();
        let d = *shape.last().unwrap();
        let x = randn(&mut rng(ci as u64), n, 1.0);
        for scaling in scalings() {
            let ntk = matches!(
                scaling,
                RopeScaling::Ntk { .. } | RopeScaling::DynamicNtk { .. }
            );
            if ntk && d == 2 {
                continue;
            }
            for layout in LAYOUTS {
                let o = RopeOptions {
                    base: if ci == 2 { 500_000.0 } else { 10_000.0 },
                    layout,
                    scaling,
                    ..Default::default()
                };
                let label = format!("{shape:?} {pos:?} {scaling:?} {layout:?}");
                let errs = [
                    (run(ctx(), shape, &x, pos, &o, |v| v.to_vec()), TOL_F32),
                    (run(ctx(), shape, &x, pos, &o, to_f16), TOL_F16),
                    (run(ctx_packed(), shape, &x, pos, &o, to_f16), TOL_F16),
                ];
                for (k, (e, tol)) in errs.into_iter().enumerate() {
                    assert!(e <= tol, "{label} dtype #{k}: relative error {e:.3e}");
                    worst[k] = worst[k].max(e);
                }
            }
        }
    }
    eprintln!(
        "worst relative error: f32 {:.2e}, f16 {:.2e}, f16 packed {:.2e}",
        worst[0], worst[1], worst[2]
    );
}

#[test]
fn rows_split_over_small_bindings() {
    let small = ctx_small_bindings(4096);
    let shape = [4, 3, 50, 8];
    let x = randn(&mut rng(5), 4 * 3 * 50 * 8, 1.0);
    let o = RopeOptions {
        layout: RopeLayout::HalfSplit,
        scaling: RopeScaling::Linear { factor: 2.0 },
        ..Default::default()
    };
    let e = run(&small, &shape, &x, Positions::Offset(10), &o, |v| {
        v.to_vec()
    });
    assert!(e <= TOL_F32, "{e}");
    let e = run(&small, &shape, &x, Positions::Offset(10), &o, to_f16);
    assert!(e <= TOL_F16, "{e}");
}

/// q at every position in row 0, k at every position in row 1: q_m · k_n must depend only on
/// m − n (RoFormer eq. 16), and must change with it.
#[test]
fn scores_depend_only_on_the_relative_position() {
    let (l, d) = (400usize, 64usize);
    let mut g = rng(9);
    let (q, k) = (randn(&mut g, d, 1.0), randn(&mut g, d, 1.0));
    let mut x = Vec::with_capacity(2 * l * d);
    for _ in 0..l {
        x.extend_from_slice(&q);
    }
    for _ in 0..l {
        x.extend_from_slice(&k);
    }
    let c = ctx();
    let tx = Tensor::from_slice(c, &x, &[2, l, d]).unwrap();
    for scaling in scalings() {
        for layout in LAYOUTS {
            let o = RopeOptions {
                layout,
                scaling,
                ..Default::default()
            };
            let r = rope(c, &tx, Positions::Offset(0), &o)
                .unwrap()
                .to_vec(c)
                .unwrap();
            let dot = |m: usize, n: usize| -> f64 {
                (0..d)
                    .map(|a| r[m * d + a] as f64 * r[(l + n) * d + a] as f64)
                    .sum()
            };
            let norm = (0..d).map(|a| (q[a] * q[a]) as f64).sum::<f64>().sqrt()
                * (0..d).map(|a| (k[a] * k[a]) as f64).sum::<f64>().sqrt();
            for delta in [0usize, 1, 7, 150] {
                let base = dot(delta, 0);
                let spread = (1..l - delta)
                    .map(|t| (dot(delta + t, t) - base).abs())
                    .fold(0.0, f64::max);
                assert!(
                    spread <= 1e-5 * norm,
                    "{scaling:?} {layout:?} m−n={delta}: spread {:.2e}",
                    spread / norm
                );
            }
            assert!((dot(7, 0) - dot(0, 0)).abs() > 1e-3 * norm);
        }
    }
}

#[test]
fn bad_input_gives_typed_errors_and_runs_nothing() {
    let c = ctx();
    let odd = Tensor::from_slice(c, &[1.0f32; 2 * 5], &[2, 5]).unwrap();
    let d = RopeOptions::default();
    assert!(matches!(
        rope(c, &odd, Positions::Offset(0), &d),
        Err(Error::Shape { name: "x", .. })
    ));
    let x = Tensor::from_slice(c, &randn(&mut rng(1), 3 * 4, 1.0), &[3, 4]).unwrap();
    let out = Tensor::<f32>::nan(c, &[3, 4]).unwrap();
    let bad_opts = [
        RopeScaling::Linear { factor: 0.5 },
        RopeScaling::Linear { factor: f64::NAN },
        RopeScaling::Ntk {
            factor: f64::INFINITY,
        },
        RopeScaling::DynamicNtk {
            factor: 1.0,
            original_length: 0,
        },
        RopeScaling::Yarn {
            factor: 2.0,
            original_length: 16,
            alpha: 32.0,
            beta: 1.0,
        },
        RopeScaling::Yarn {
            factor: -1.0,
            original_length: 16,
            alpha: 1.0,
            beta: 32.0,
        },
    ];
    for scaling in bad_opts {
        let o = RopeOptions {
            scaling,
            ..Default::default()
        };
        let r = rope_into(c, &x, Positions::Offset(0), &out, &o);
        assert!(
            matches!(r, Err(Error::InvalidArgument { .. })),
            "{scaling:?}: {r:?}"
        );
    }
    let o = RopeOptions {
        base: 0.0,
        ..Default::default()
    };
    assert!(matches!(
        rope(c, &x, Positions::Offset(0), &o),
        Err(Error::InvalidArgument { name: "base", .. })
    ));
    let two = Tensor::from_slice(c, &[1.0f32; 6], &[3, 2]).unwrap();
    let ntk = RopeOptions {
        scaling: RopeScaling::Ntk { factor: 2.0 },
        ..Default::default()
    };
    assert!(matches!(
        rope(c, &two, Positions::Offset(0), &ntk),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        rope(c, &x, Positions::Explicit(&[0, 1]), &d),
        Err(Error::Shape {
            name: "positions",
            ..
        })
    ));
    assert!(matches!(
        rope(c, &x, Positions::Offset(u32::MAX - 1), &d),
        Err(Error::InvalidArgument { name: "offset", .. })
    ));
    assert!(matches!(
        rope_into(c, &x, Positions::Offset(0), &x, &d),
        Err(Error::InvalidArgument { name: "out", .. })
    ));
    assert!(out.to_vec(c).unwrap().iter().all(|v| v.is_nan()));
}
