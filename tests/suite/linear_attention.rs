//! Linear attention: GPU vs the CPU reference for every feature map × causal × dtype, at sizes off
//! the power of two, outputs poisoned with NaN before dispatch.

use crate::common;

use common::*;
use half::f16;
use longseq::attention::linear::check_shapes;
use longseq::attention::{
    linear_attention, linear_attention_into, FeatureMap, LinearAttentionOptions,
};
use longseq::reference;
use longseq::{Context, ContextOptions, Element, Error, Tensor, TileFamily};

const MAPS: [FeatureMap; 3] = [FeatureMap::Elu1, FeatureMap::Relu, FeatureMap::Identity];

fn opts(fm: FeatureMap, causal: bool) -> LinearAttentionOptions {
    LinearAttentionOptions {
        feature_map: fm,
        causal,
        // φ = identity is not positive: its denominator can vanish, so it runs without one.
        denominator: fm != FeatureMap::Identity,
        ..Default::default()
    }
}

/// Runs GPU and CPU on the same (dtype-rounded) inputs; returns the normwise error.
fn run<T: Element>(
    ctx: &Context,
    shape_qk: &[usize],
    shape_v: &[usize],
    x: (&[f32], &[f32], &[f32]),
    o: &LinearAttentionOptions,
    conv: impl Fn(&[f32]) -> Vec<T>,
) -> f64 {
    let (q, k, v) = (conv(x.0), conv(x.1), conv(x.2));
    let d = check_shapes("test", shape_qk, shape_qk, shape_v).unwrap();
    let tq = Tensor::from_slice(ctx, &q, shape_qk).unwrap();
    let tk = Tensor::from_slice(ctx, &k, shape_qk).unwrap();
    let tv = Tensor::from_slice(ctx, &v, shape_v).unwrap();
    let out = Tensor::<T>::nan(ctx, &d.out_shape).unwrap();
    linear_attention_into(ctx, &tq, &tk, &tv, &out, o).unwrap();
    let got = to_f64(&out.to_vec(ctx).unwrap());
    let want = reference::attention::linear_attention(&q, &k, &v, &d, o).unwrap();
    // The inputs must not have been modified.
    assert_eq!(to_f64(&tq.to_vec(ctx).unwrap()), to_f64(&q));
    rel_err(&got, &want)
}

/// (rows, L, Dk, Dv): a spread over L ∈ {1, 2, 63, 64, 65, 1000}, D ∈ {1, 3, 32, 64, 65, 128}.
const CASES: [(usize, usize, usize, usize); 7] = [
    (2, 1, 3, 1),
    (3, 2, 1, 3),
    (2, 63, 32, 65),
    (1, 64, 64, 64),
    (2, 65, 65, 32),
    (1, 1000, 128, 64),
    (2, 1000, 3, 128),
];

fn sweep(dtype: &str) {
    sweep_on(dtype, ctx(), ctx_packed());
}

fn sweep_on(dtype: &str, ctx: &Context, ctx_packed: &Context) {
    let mut seed = 0;
    for &(rows, l, dk, dv) in &CASES {
        for fm in MAPS {
            for causal in [false, true] {
                seed += 1;
                let mut g = rng(seed);
                let q = randn(&mut g, rows * l * dk, 0.7);
                let k = randn(&mut g, rows * l * dk, 0.7);
                let v = randn(&mut g, rows * l * dv, 1.0);
                let (sq, sv) = ([rows, l, dk], [rows, l, dv]);
                let o = opts(fm, causal);
                let label = format!(
                    "{dtype} {fm:?} causal={causal} rows={rows} L={l} Dk={dk} Dv={dv} {:?}",
                    ctx.tile_family()
                );
                let (e, tol) = match dtype {
                    "f32" => (
                        run(ctx, &sq, &sv, (&q, &k, &v), &o, |x| x.to_vec()),
                        TOL_F32,
                    ),
                    "f16" => (run(ctx, &sq, &sv, (&q, &k, &v), &o, to_f16), TOL_F16),
                    _ => (run(ctx_packed, &sq, &sv, (&q, &k, &v), &o, to_f16), TOL_F16),
                };
                assert!(e <= tol, "{label}: relative error {e:.3e} > {tol:.1e}");
            }
        }
    }
}

#[test]
fn gpu_matches_reference_f32() {
    sweep("f32");
}

#[test]
fn gpu_matches_reference_f16_native() {
    assert!(
        ctx().shader_f16(),
        "adapter {} lacks SHADER_F16; lavapipe has it",
        ctx().adapter_line()
    );
    sweep("f16");
}

#[test]
fn gpu_matches_reference_f16_packed_without_shader_f16() {
    assert!(!ctx_packed().shader_f16());
    sweep("f16-packed");
}

/// The other tile family of the chunk engine (lavapipe's default is the CPU one).
#[test]
fn gpu_tile_family_matches_reference() {
    assert_eq!(ctx().tile_family(), TileFamily::Cpu);
    let (c, p) = (ctx_gpu_tiles(), ctx_gpu_tiles_packed());
    assert_eq!(c.tile_family(), TileFamily::Gpu);
    sweep_on("f32", c, p);
    sweep_on("f16", c, p);
    sweep_on("f16-packed", c, p);
}

#[test]
fn four_dim_input_and_f32_default_options() {
    let mut g = rng(99);
    let (b, h, l, d) = (2, 3, 77, 5);
    let q = randn(&mut g, b * h * l * d, 1.0);
    let k = randn(&mut g, b * h * l * d, 1.0);
    let v = randn(&mut g, b * h * l * d, 1.0);
    let shape = [b, h, l, d];
    let e = run(
        ctx(),
        &shape,
        &shape,
        (&q, &k, &v),
        &LinearAttentionOptions::default(),
        |x| x.to_vec(),
    );
    assert!(e <= TOL_F32, "{e}");
}

/// B·H = 70 000 rows of tiny L: more workgroups than one grid dimension allows.
#[test]
fn grid_folds_past_65535_workgroups() {
    let (rows, l, dk, dv) = (70_000, 2, 3, 2);
    let mut g = rng(7);
    let q = randn(&mut g, rows * l * dk, 1.0);
    let k = randn(&mut g, rows * l * dk, 1.0);
    let v = randn(&mut g, rows * l * dv, 1.0);
    for causal in [false, true] {
        let o = opts(FeatureMap::Elu1, causal);
        let e = run(
            ctx(),
            &[rows, l, dk],
            &[rows, l, dv],
            (&q, &k, &v),
            &o,
            |x| x.to_vec(),
        );
        assert!(e <= TOL_F32, "causal={causal}: {e}");
        let e = run(
            ctx_packed(),
            &[rows, l, dk],
            &[rows, l, dv],
            (&q, &k, &v),
            &o,
            to_f16,
        );
        assert!(e <= TOL_F16, "packed f16 causal={causal}: {e}");
    }
}

/// With storage bindings capped at 64 KiB the op runs in many passes with unaligned offsets.
#[test]
fn splits_work_past_the_storage_binding_limit() {
    let ctx = ctx_small_bindings(64 * 1024);
    let (rows, l, dk, dv) = (23, 101, 33, 33); // 101·33 elements a row: odd, so f16 rows straddle words
    let mut g = rng(11);
    let q = randn(&mut g, rows * l * dk, 0.5);
    let k = randn(&mut g, rows * l * dk, 0.5);
    let v = randn(&mut g, rows * l * dv, 1.0);
    for causal in [false, true] {
        let o = opts(FeatureMap::Elu1, causal);
        let e = run(
            &ctx,
            &[rows, l, dk],
            &[rows, l, dv],
            (&q, &k, &v),
            &o,
            |x| x.to_vec(),
        );
        assert!(e <= TOL_F32, "f32 causal={causal}: {e}");
        let e = run(
            &ctx,
            &[rows, l, dk],
            &[rows, l, dv],
            (&q, &k, &v),
            &o,
            to_f16,
        );
        assert!(e <= TOL_F16, "f16 causal={causal}: {e}");
    }
}

/// One (batch, head) row larger than a storage binding is split along L into segments that carry
/// the state (issue 11.4: B·H = 1, L = 2^20 must run); here with 64 KiB bindings and L = 10 000.
#[test]
fn splits_one_row_along_l_past_the_binding_limit() {
    for tiles in [TileFamily::Cpu, TileFamily::Gpu] {
        let ctx = open(ContextOptions {
            max_storage_binding_size: Some(64 * 1024),
            tiles: Some(tiles),
            ..Default::default()
        });
        let (l, dk, dv) = (10_000, 8, 5);
        let mut g = rng(12);
        let q = randn(&mut g, l * dk, 0.5);
        let k = randn(&mut g, l * dk, 0.5);
        let v = randn(&mut g, l * dv, 1.0);
        for causal in [false, true] {
            let o = opts(FeatureMap::Elu1, causal);
            let x = (&q[..], &k[..], &v[..]);
            let e = run(&ctx, &[1, l, dk], &[1, l, dv], x, &o, |x| x.to_vec());
            assert!(e <= TOL_F32, "{tiles:?} f32 causal={causal}: {e}");
            let e = run(&ctx, &[1, l, dk], &[1, l, dv], x, &o, to_f16);
            assert!(e <= TOL_F16, "{tiles:?} f16 causal={causal}: {e}");
        }
    }
}

#[test]
fn nan_reaches_exactly_the_outputs_the_reference_makes_nan() {
    // Dv = 16 takes the vec4 reads with V in place (CPU tiles), Dv = 5 the scalar path.
    for (fm, causal, dv) in [
        (FeatureMap::Elu1, false, 5),
        (FeatureMap::Elu1, true, 5),
        (FeatureMap::Relu, false, 5),
        (FeatureMap::Relu, true, 5),
        (FeatureMap::Elu1, false, 16),
        (FeatureMap::Elu1, true, 16),
    ] {
        let (rows, l, dk) = (3, 150, 4);
        let mut g = rng(5);
        let mut q = randn(&mut g, rows * l * dk, 1.0);
        let mut k = randn(&mut g, rows * l * dk, 1.0);
        let mut v = randn(&mut g, rows * l * dv, 1.0);
        k[(l + 70) * dk + 2] = f32::NAN; // row 1, position 70
        v[5 * dv + 1] = f32::NAN; // row 0, position 5, column 1
        v[140 * dv + 2] = f32::NAN; // row 0, position 140 (the ragged last chunk)
        q[(2 * l + 3) * dk] = f32::NAN; // row 2, position 3
        let o = opts(fm, causal);
        let d = check_shapes("t", &[rows, l, dk], &[rows, l, dk], &[rows, l, dv]).unwrap();
        let want = reference::attention::linear_attention(&q, &k, &v, &d, &o).unwrap();
        assert!(want.iter().any(|x| x.is_nan()) && want.iter().any(|x| !x.is_nan()));
        let c = ctx();
        let out = Tensor::<f32>::nan(c, &d.out_shape).unwrap();
        let t = |x: &[f32], s: &[usize]| Tensor::from_slice(c, x, s).unwrap();
        linear_attention_into(
            c,
            &t(&q, &[rows, l, dk]),
            &t(&k, &[rows, l, dk]),
            &t(&v, &[rows, l, dv]),
            &out,
            &o,
        )
        .unwrap();
        let got = to_f64(&out.to_vec(c).unwrap());
        let mism = nan_mismatches(&got, &want);
        assert_eq!(
            mism, 0,
            "{fm:?} causal={causal} Dv={dv}: NaN pattern differs at {mism} outputs"
        );
        assert_close("non-NaN outputs", &got, &want, TOL_F32);
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let c = ctx();
    let t = |s: &[usize]| Tensor::from_slice(c, &vec![0.25f32; s.iter().product()], s).unwrap();
    let o = LinearAttentionOptions::default();
    let shape_err = |r: longseq::Result<Tensor<f32>>, which: &str| match r {
        Err(Error::Shape { name, .. }) => assert_eq!(name, which),
        other => panic!("expected a shape error on {which}, got {:?}", other.err()),
    };
    shape_err(
        linear_attention(c, &t(&[2, 5, 4]), &t(&[2, 5, 3]), &t(&[2, 5, 4]), &o),
        "k",
    );
    // Lq ≠ Lk is cross-attention, defined only without the causal mask.
    let causal = LinearAttentionOptions { causal: true, ..o };
    shape_err(
        linear_attention(c, &t(&[2, 5, 4]), &t(&[2, 6, 4]), &t(&[2, 6, 4]), &causal),
        "k",
    );
    shape_err(
        linear_attention(c, &t(&[2, 5, 4]), &t(&[2, 5, 4]), &t(&[2, 4, 4]), &o),
        "v",
    );
    shape_err(
        linear_attention(c, &t(&[2, 5, 4]), &t(&[2, 5, 4]), &t(&[3, 5, 4]), &o),
        "v",
    );
    shape_err(
        linear_attention(c, &t(&[5, 4]), &t(&[5, 4]), &t(&[5, 4]), &o),
        "q",
    );
    shape_err(
        linear_attention(c, &t(&[2, 0, 4]), &t(&[2, 0, 4]), &t(&[2, 0, 4]), &o),
        "q",
    );
    let x = t(&[2, 5, 4]);
    let bad_eps = LinearAttentionOptions { eps: f32::NAN, ..o };
    assert!(matches!(
        linear_attention(c, &x, &x, &x, &bad_eps),
        Err(Error::InvalidArgument { .. })
    ));
    let out = t(&[2, 5, 3]);
    assert!(matches!(
        linear_attention_into(c, &x, &x, &x, &out, &o),
        Err(Error::Shape { name: "out", .. })
    ));
    assert!(matches!(
        linear_attention_into(c, &x, &x, &x, &x, &o),
        Err(Error::InvalidArgument { name: "out", .. })
    ));
    assert!(matches!(
        Tensor::from_slice(c, &[1.0f32; 3], &[2, 2]),
        Err(Error::DataLength { .. })
    ));
}

/// The reference (recurrent form, eqs. 16-20) against the quadratic form of eq. 4.
#[test]
fn reference_matches_the_quadratic_form() {
    let (rows, l, dk, dv) = (2, 37, 5, 3);
    let mut g = rng(3);
    let q = randn(&mut g, rows * l * dk, 1.0);
    let k = randn(&mut g, rows * l * dk, 1.0);
    let v = randn(&mut g, rows * l * dv, 1.0);
    let d = check_shapes("t", &[rows, l, dk], &[rows, l, dk], &[rows, l, dv]).unwrap();
    for fm in MAPS {
        for causal in [false, true] {
            let o = opts(fm, causal);
            let want = naive_linear_attention(
                &to_f64(&q),
                &to_f64(&k),
                &to_f64(&v),
                (rows, l, dk, dv),
                |x| fm.apply(x),
                causal,
                o.eps as f64,
                o.denominator,
            );
            let got = reference::attention::linear_attention(&q, &k, &v, &d, &o).unwrap();
            assert_close(&format!("{fm:?} causal={causal}"), &got, &want, 1e-12);
        }
    }
}

#[test]
fn f16_input_is_unchanged_and_output_is_f16() {
    let c = ctx();
    let x = to_f16(&randn(&mut rng(1), 2 * 9 * 3, 1.0));
    let t = Tensor::<f16>::from_slice(c, &x, &[2, 9, 3]).unwrap();
    let o = linear_attention(c, &t, &t, &t, &LinearAttentionOptions::default()).unwrap();
    assert_eq!(o.shape(), &[2, 9, 3]);
    assert_eq!(t.to_vec(c).unwrap(), x);
}

/// Two ops recorded into one schedule and submitted once: the second reads the first's output.
#[test]
fn a_chain_of_ops_runs_in_one_submission() {
    let c = ctx();
    let (rows, l, d) = (3, 70, 8);
    let mut g = rng(21);
    let q = randn(&mut g, rows * l * d, 0.8);
    let k = randn(&mut g, rows * l * d, 0.8);
    let v = randn(&mut g, rows * l * d, 1.0);
    let shape = [rows, l, d];
    let t = |x: &[f32]| Tensor::from_slice(c, x, &shape).unwrap();
    let (tq, tk, tv) = (t(&q), t(&k), t(&v));
    let mid = Tensor::<f32>::nan(c, &shape).unwrap();
    let out = Tensor::<f32>::nan(c, &shape).unwrap();
    let o1 = opts(FeatureMap::Elu1, true);
    let o2 = opts(FeatureMap::Relu, false);
    let mut s = longseq::Schedule::new(c);
    longseq::attention::record_linear_attention(&mut s, &tq, &tk, &tv, &mid, &o1).unwrap();
    longseq::attention::record_linear_attention(&mut s, &tq, &tk, &mid, &out, &o2).unwrap();
    s.submit();
    let got = to_f64(&pollster::block_on(out.to_vec_async(c)).unwrap());
    let d3 = check_shapes("t", &shape, &shape, &shape).unwrap();
    let m = reference::attention::linear_attention(&q, &k, &v, &d3, &o1).unwrap();
    let m32: Vec<f32> = m.iter().map(|&x| x as f32).collect();
    let want = reference::attention::linear_attention(&q, &k, &m32, &d3, &o2).unwrap();
    assert_close("chain", &got, &want, TOL_F32);
}
