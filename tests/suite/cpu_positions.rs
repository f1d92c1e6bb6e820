//! CPU path vs the f64 reference: embedding lookup and RoPE for every scaling and layout, f32
//! and f16 storage, ragged shapes, far positions, NaN/±Inf inputs, outputs poisoned with NaN
//! first, inputs unchanged, typed errors.

use crate::common;
use crate::cpu_check;

use common::{randn, rng};
use cpu_check::*;
use longseq::cpu::positions::{embedding, embedding_into, rope, rope_into};
use longseq::positions::{Positions, RopeLayout, RopeOptions, RopeScaling};
use longseq::{reference, Element, Error};
use rand::Rng;

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

fn rope_case<T: Element>(
    shape: &[usize],
    x: &[T],
    pos: Positions<'_>,
    o: &RopeOptions,
    label: &str,
) {
    let before: Vec<f64> = x.iter().map(|v| v.to_f64()).collect();
    let mut out = poisoned::<T>(x.len());
    rope_into(x, shape, pos, &mut out, o).unwrap();
    let want = reference::positions::rope(x, shape, pos, o).unwrap();
    check(label, &out, &want, tol::<T>());
    let after: Vec<f64> = x.iter().map(|v| v.to_f64()).collect();
    assert!(
        before
            .iter()
            .zip(&after)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "{label}: input modified"
    );
}

#[test]
fn rope_matches_the_reference_for_every_scaling_layout_and_dtype() {
    let mut g = rng(42);
    let far: Vec<u32> = (0..63).map(|_| g.random_range(0..1_000_000)).collect();
    let cases: [(&[usize], Positions<'_>); 4] = [
        (&[3, 7, 6], Positions::Offset(0)),
        (&[2, 3, 63, 66], Positions::Explicit(&far)),
        (&[5, 129, 64], Positions::Offset(1857)),
        (&[1, 1, 2], Positions::Offset(4_000_000_000)),
    ];
    let mut seed = 0;
    for (shape, pos) in cases {
        for layout in [RopeLayout::Interleaved, RopeLayout::HalfSplit] {
            for scaling in scalings() {
                let d = *shape.last().unwrap();
                if d == 2
                    && matches!(
                        scaling,
                        RopeScaling::Ntk { .. } | RopeScaling::DynamicNtk { .. }
                    )
                {
                    continue; // NTK needs D > 2
                }
                let o = RopeOptions {
                    base: 10_000.0,
                    layout,
                    scaling,
                    ..Default::default()
                };
                seed += 1;
                let n: usize = shape.iter().product();
                let x = randn(&mut rng(seed), n, 1.0);
                let label = format!("{shape:?} {layout:?} {scaling:?}");
                rope_case(shape, &x, pos, &o, &format!("f32 {label}"));
                rope_case(shape, &to_f16(&x), pos, &o, &format!("f16 {label}"));
            }
        }
    }
}

#[test]
fn rope_nan_and_inf_follow_the_reference() {
    let shape = [2, 9, 8];
    let mut x = randn(&mut rng(7), 144, 1.0);
    x[5] = f32::NAN;
    x[40] = f32::INFINITY;
    x[77] = f32::NEG_INFINITY;
    let o = RopeOptions::default();
    let mut out = poisoned::<f32>(x.len());
    rope_into(&x, &shape, Positions::Offset(3), &mut out, &o).unwrap();
    let want = reference::positions::rope(&x, &shape, Positions::Offset(3), &o).unwrap();
    check("nan/inf", &out, &want, F32);
}

#[test]
fn rope_bad_input_is_a_typed_error() {
    let o = RopeOptions::default();
    let x = vec![1.0f32; 30];
    assert!(matches!(
        rope(&x, &[3, 5, 4], Positions::Offset(0), &o),
        Err(Error::DataLength { .. })
    ));
    assert!(matches!(
        rope(&x, &[2, 5, 3], Positions::Offset(0), &o),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        rope(&x, &[3, 5, 2], Positions::Explicit(&[1, 2]), &o),
        Err(Error::Shape { .. }) | Err(Error::DataLength { .. })
    ));
    let bad = RopeOptions { base: -1.0, ..o };
    assert!(matches!(
        rope(&x, &[3, 5, 2], Positions::Offset(0), &bad),
        Err(Error::InvalidArgument { .. })
    ));
}

fn embedding_case<T: Element>(table: &[T], v: usize, d: usize, ids: &[u32], ids_shape: &[usize]) {
    let n: usize = ids_shape.iter().product();
    let mut out = poisoned::<T>(n * d);
    embedding_into(table, &[v, d], ids, ids_shape, &mut out).unwrap();
    let want = reference::positions::embedding(table, &[v, d], ids, ids_shape).unwrap();
    // A lookup is a copy: exact, in every dtype.
    let got: Vec<f64> = out.iter().map(|x| x.to_f64()).collect();
    assert!(
        got.iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan()),
        "embedding V={v} D={d} {ids_shape:?}"
    );
}

#[test]
fn embedding_is_the_one_hot_product_exactly() {
    let mut g = rng(3);
    for (v, d, ids_shape) in [
        (1usize, 1usize, vec![1usize]),
        (37, 5, vec![3, 17]),
        (1000, 67, vec![129]),
    ] {
        // Finite entries only: the one-hot product spreads a NaN or ±Inf entry (0·NaN) to
        // every row, a lookup does not.
        let table = randn(&mut g, v * d, 1.0);
        let n: usize = ids_shape.iter().product();
        let ids: Vec<u32> = (0..n).map(|_| g.random_range(0..v as u32)).collect();
        embedding_case(&table, v, d, &ids, &ids_shape);
        embedding_case(&to_f16(&table), v, d, &ids, &ids_shape);
    }
}

#[test]
fn embedding_bad_input_is_a_typed_error() {
    let t = vec![0.5f32; 40];
    assert!(matches!(
        embedding(&t, &[10, 4], &[1, 10, 2], &[3]),
        Err(Error::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        embedding(&t, &[10, 4], &[1, 2], &[3]),
        Err(Error::DataLength { .. })
    ));
    assert!(matches!(
        embedding(&t[..39], &[10, 4], &[1, 2], &[2]),
        Err(Error::DataLength { .. })
    ));
    assert!(matches!(
        embedding(&t, &[10, 0], &[1], &[1]),
        Err(Error::Shape { .. })
    ));
}
