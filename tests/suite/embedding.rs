//! Embedding lookup: GPU vs the one-hot matrix-product reference, per dtype, on ragged sizes, a
//! grid past 65 535 workgroups, a table split over storage bindings, and out-of-range ids.

use crate::common;

use common::*;
use longseq::positions::{embedding, embedding_into};
use longseq::{reference, Context, Element, Error, Tensor};
use rand::Rng;

/// GPU vs CPU on a random table and random ids; returns the normwise error.
fn run<T: Element>(
    ctx: &Context,
    (v, d): (usize, usize),
    ids_shape: &[usize],
    seed: u64,
    conv: impl Fn(&[f32]) -> Vec<T>,
) -> f64 {
    let mut g = rng(seed);
    let table = conv(&randn(&mut g, v * d, 1.0));
    let n: usize = ids_shape.iter().product();
    let ids: Vec<u32> = (0..n).map(|_| g.random_range(0..v as u32)).collect();
    let tt = Tensor::from_slice(ctx, &table, &[v, d]).unwrap();
    let mut shape = ids_shape.to_vec();
    shape.push(d);
    let out = Tensor::<T>::nan(ctx, &shape).unwrap();
    embedding_into(ctx, &tt, &ids, ids_shape, &out).unwrap();
    let got = to_f64(&out.to_vec(ctx).unwrap());
    let want = reference::positions::embedding(&table, &[v, d], &ids, ids_shape).unwrap();
    assert_eq!(to_f64(&tt.to_vec(ctx).unwrap()), to_f64(&table));
    rel_err(&got, &want)
}

/// ((V, D), ids shape): V and D off the power of two, [L] and [B, L].
const CASES: [((usize, usize), &[usize]); 6] = [
    ((1, 1), &[1]),
    ((7, 3), &[2, 5]),
    ((2, 65), &[63]),
    ((1000, 65), &[3, 63]),
    ((50, 128), &[1000]),
    ((301, 1), &[2, 1001]),
];

#[test]
fn gpu_matches_the_one_hot_product_f32_f16_packed() {
    for (i, &(vd, ids)) in CASES.iter().enumerate() {
        let s = i as u64 + 1;
        let e32 = run(ctx(), vd, ids, s, |x| x.to_vec());
        assert_close_e(&format!("f32 {vd:?} {ids:?}"), e32, TOL_F32);
        let e16 = run(ctx(), vd, ids, s, to_f16);
        assert_close_e(&format!("f16 {vd:?} {ids:?}"), e16, TOL_F16);
        let ep = run(ctx_packed(), vd, ids, s, to_f16);
        assert_close_e(&format!("f16 packed {vd:?} {ids:?}"), ep, TOL_F16);
        // A lookup copies: f32 is exact.
        assert_eq!(e32, 0.0, "{vd:?} {ids:?}");
    }
}

fn assert_close_e(label: &str, e: f64, tol: f64) {
    assert!(e <= tol, "{label}: relative error {e:.3e} > {tol:.1e}");
}

#[test]
fn a_grid_past_65535_workgroups_is_folded() {
    // 17M outputs at 256 per workgroup: ~66 400 workgroups, more than one grid dimension holds.
    let n = 17_000_000;
    let e = run(ctx(), (3, 1), &[2, n / 2], 7, |x| x.to_vec());
    assert_eq!(e, 0.0);
}

#[test]
fn a_table_larger_than_a_binding_is_split_into_slices() {
    // 4 KiB bindings: the 100 x 16 f32 table (6.4 KB) takes two passes, the outputs several.
    let small = ctx_small_bindings(4096);
    let e = run(&small, (100, 16), &[3, 41], 11, |x| x.to_vec());
    assert_eq!(e, 0.0);
    let e = run(&small, (100, 16), &[3, 41], 12, to_f16);
    assert!(e <= TOL_F16, "{e}");
}

#[test]
fn an_id_out_of_range_is_an_error_naming_its_position_and_nothing_runs() {
    let c = ctx();
    let table = Tensor::from_slice(c, &randn(&mut rng(3), 10 * 4, 1.0), &[10, 4]).unwrap();
    let mut ids = vec![1u32; 2 * 6];
    ids[6 + 3] = 10;
    ids[6 + 5] = 99;
    let out = Tensor::<f32>::nan(c, &[2, 6, 4]).unwrap();
    match embedding_into(c, &table, &ids, &[2, 6], &out) {
        Err(Error::IndexOutOfRange {
            position,
            index,
            bound,
            ..
        }) => assert_eq!((position, index, bound), (vec![1, 3], 10, 10)),
        other => panic!("expected IndexOutOfRange, got {other:?}"),
    }
    assert!(out.to_vec(c).unwrap().iter().all(|x| x.is_nan()));
    let bad = reference::positions::embedding(&[0.0f32; 40], &[10, 4], &ids, &[2, 6]);
    assert!(matches!(bad, Err(Error::IndexOutOfRange { .. })));
}

#[test]
fn bad_shapes_are_errors() {
    let c = ctx();
    let table = Tensor::from_slice(c, &[1.0f32; 6], &[2, 3]).unwrap();
    let t3 = Tensor::from_slice(c, &[1.0f32; 6], &[1, 2, 3]).unwrap();
    assert!(matches!(
        embedding(c, &t3, &[0], &[1]),
        Err(Error::Shape { name: "table", .. })
    ));
    assert!(matches!(
        embedding(c, &table, &[0, 1], &[3]),
        Err(Error::DataLength { .. })
    ));
    assert!(matches!(
        embedding(c, &table, &[0], &[1, 1, 1]),
        Err(Error::Shape { name: "ids", .. })
    ));
    let wrong = Tensor::<f32>::nan(c, &[2, 2]).unwrap();
    assert!(matches!(
        embedding_into(c, &table, &[0, 1], &[2], &wrong),
        Err(Error::Shape { name: "out", .. })
    ));
}
