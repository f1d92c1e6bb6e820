//! CPU path vs the f64 reference: linear attention for every feature map × causal × dtype at
//! ragged sizes, NaN-poisoned outputs, NaN inputs, errors.

use crate::common;
use crate::cpu_check;

use common::{randn, rng};
use cpu_check::*;
use longseq::attention::linear::check_shapes;
use longseq::attention::{FeatureMap, LinearAttentionOptions};
use longseq::{cpu, reference, Element, Error};

const MAPS: [FeatureMap; 4] = [
    FeatureMap::Elu1,
    FeatureMap::Relu,
    FeatureMap::Elu,
    FeatureMap::Identity,
];

/// (rows, L, Dk, Dv): L around the chunk (64) and the slice (512), odd head dims.
const CASES: [(usize, usize, usize, usize); 8] = [
    (2, 1, 3, 1),
    (3, 2, 1, 3),
    (2, 63, 32, 65),
    (1, 64, 64, 64),
    (2, 65, 65, 32),
    (1, 1000, 128, 64),
    (2, 1000, 3, 128),
    (3, 1537, 16, 8),
];

fn opts(fm: FeatureMap, causal: bool) -> LinearAttentionOptions {
    LinearAttentionOptions {
        feature_map: fm,
        causal,
        // elu and identity are not positive: their denominator can vanish.
        denominator: matches!(fm, FeatureMap::Elu1 | FeatureMap::Relu),
        ..Default::default()
    }
}

fn run<T: Element>(
    x: (&[f32], &[f32], &[f32]),
    dims: (usize, usize, usize, usize),
    o: &LinearAttentionOptions,
    label: &str,
) {
    let (rows, l, dk, dv) = dims;
    let conv = |v: &[f32]| v.iter().map(|&a| T::from_f64(a as f64)).collect::<Vec<T>>();
    let (q, k, v) = (conv(x.0), conv(x.1), conv(x.2));
    let d = check_shapes("test", &[rows, l, dk], &[rows, l, dk], &[rows, l, dv]).unwrap();
    let mut out = poisoned::<T>(rows * l * dv);
    cpu::attention::linear_attention_into(&q, &k, &v, &d, o, &mut out).unwrap();
    let want = reference::attention::linear_attention(&q, &k, &v, &d, o).unwrap();
    check(label, &out, &want, tol::<T>());
}

#[test]
fn cpu_matches_reference_every_map_causal_and_not() {
    let mut seed = 0;
    for &(rows, l, dk, dv) in &CASES {
        for fm in MAPS {
            for causal in [false, true] {
                seed += 1;
                let mut g = rng(seed);
                let q = randn(&mut g, rows * l * dk, 0.7);
                let k = randn(&mut g, rows * l * dk, 0.7);
                let v = randn(&mut g, rows * l * dv, 1.0);
                let o = opts(fm, causal);
                let label = format!("{fm:?} causal={causal} rows={rows} L={l} Dk={dk} Dv={dv}");
                run::<f32>((&q, &k, &v), (rows, l, dk, dv), &o, &format!("f32 {label}"));
                run::<half::f16>((&q, &k, &v), (rows, l, dk, dv), &o, &format!("f16 {label}"));
            }
        }
    }
}

#[test]
fn nan_reaches_exactly_the_outputs_that_depend_on_it() {
    let (rows, l, dk, dv) = (3, 150, 8, 4);
    for causal in [false, true] {
        let mut g = rng(7);
        let mut q = randn(&mut g, rows * l * dk, 1.0);
        let mut k = randn(&mut g, rows * l * dk, 1.0);
        let mut v = randn(&mut g, rows * l * dv, 1.0);
        k[(l + 70) * dk + 2] = f32::NAN; // row 1, position 70
        v[5 * dv + 1] = f32::NAN; // row 0, position 5, column 1
        q[(2 * l + 3) * dk] = f32::NAN; // row 2, position 3
        let o = opts(FeatureMap::Elu1, causal);
        run::<f32>(
            (&q, &k, &v),
            (rows, l, dk, dv),
            &o,
            &format!("NaN causal={causal}"),
        );
    }
}

#[test]
fn zero_denominator_gives_zero_and_bad_input_is_a_typed_error() {
    // relu of negative queries: every weight is 0; with ε = 0 the guard gives 0, not NaN.
    let (l, d) = (70, 4);
    let q = vec![-1.0f32; l * d];
    let k = vec![0.5f32; l * d];
    let v = vec![2.0f32; l * d];
    let dims = check_shapes("test", &[1, l, d], &[1, l, d], &[1, l, d]).unwrap();
    for causal in [false, true] {
        let o = LinearAttentionOptions {
            feature_map: FeatureMap::Relu,
            causal,
            eps: 0.0,
            denominator: true,
            ..Default::default()
        };
        let out = cpu::attention::linear_attention(&q, &k, &v, &dims, &o).unwrap();
        assert!(out.iter().all(|&x| x == 0.0));
    }
    let bad = LinearAttentionOptions {
        eps: f32::NAN,
        ..Default::default()
    };
    assert!(matches!(
        cpu::attention::linear_attention(&q, &k, &v, &dims, &bad),
        Err(Error::InvalidArgument { name: "eps", .. })
    ));
    assert!(matches!(
        cpu::attention::linear_attention(&q[1..], &k, &v, &dims, &Default::default()),
        Err(Error::DataLength { .. })
    ));
}
