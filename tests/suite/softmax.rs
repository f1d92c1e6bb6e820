//! Exact softmax attention: GPU vs the CPU reference, causal × f32/f16/packed f16, at sizes off
//! the power of two, outputs poisoned with NaN before dispatch; large logits; the real MiniLM data.

use crate::attend_common;
use crate::common;

use attend_common::*;
// attend_common's normwise-scaled variant, not common's (atol, rtol) one.
use attend_common::assert_close_elementwise;
use common::*;
use longseq::attention::{softmax_attention, softmax_attention_into, SoftmaxAttentionOptions};
use longseq::reference;
use longseq::types::attention::check_shapes;
use longseq::{Context, Element, Error, Tensor};

/// Runs GPU and CPU on the same (dtype-rounded) inputs; returns (gpu, cpu).
fn run<T: Element>(
    ctx: &Context,
    shape_qk: &[usize],
    shape_v: &[usize],
    x: (&[f32], &[f32], &[f32]),
    o: &SoftmaxAttentionOptions,
    conv: impl Fn(&[f32]) -> Vec<T>,
) -> (Vec<f64>, Vec<f64>) {
    let (q, k, v) = (conv(x.0), conv(x.1), conv(x.2));
    let d = check_shapes("test", shape_qk, shape_qk, shape_v).unwrap();
    let tq = Tensor::from_slice(ctx, &q, shape_qk).unwrap();
    let tk = Tensor::from_slice(ctx, &k, shape_qk).unwrap();
    let tv = Tensor::from_slice(ctx, &v, shape_v).unwrap();
    let out = Tensor::<T>::nan(ctx, &d.out_shape).unwrap();
    softmax_attention_into(ctx, &tq, &tk, &tv, &out, o).unwrap();
    let got = to_f64(&out.to_vec(ctx).unwrap());
    let want = reference::attention::softmax_attention(&q, &k, &v, &d, o).unwrap();
    let bits = |x: &[T]| bytemuck::cast_slice::<T, u8>(x).to_vec();
    assert!(bits(&tk.to_vec(ctx).unwrap()) == bits(&k), "k was modified");
    (got, want)
}

/// (rows, L, Dk, Dv) over L ∈ {1, 63, 65, 1000}, D ∈ {1, 3, 32, 65}.
const CASES: [(usize, usize, usize, usize); 6] = [
    (2, 1, 1, 3),
    (3, 63, 32, 65),
    (2, 65, 65, 1),
    (2, 65, 3, 32),
    (1, 1000, 65, 3),
    (2, 1000, 32, 65),
];

fn sweep(dtype: &str) {
    // f16 skips the largest case to keep the file's run time modest on lavapipe.
    let n = if dtype == "f32" {
        CASES.len()
    } else {
        CASES.len() - 1
    };
    for fam in FAMILIES {
        let mut seed = 100;
        for &(rows, l, dk, dv) in &CASES[..n] {
            for causal in [false, true] {
                seed += 1;
                let mut g = rng(seed);
                let q = randn(&mut g, rows * l * dk, 1.0);
                let k = randn(&mut g, rows * l * dk, 1.0);
                let v = randn(&mut g, rows * l * dv, 1.0);
                let (sq, sv) = ([rows, l, dk], [rows, l, dv]);
                let o = SoftmaxAttentionOptions {
                    causal,
                    scale: None,
                    ..Default::default()
                };
                let label =
                    format!("{fam:?} {dtype} causal={causal} rows={rows} L={l} Dk={dk} Dv={dv}");
                let x = (&q[..], &k[..], &v[..]);
                let ((got, want), tol) = match dtype {
                    "f32" => (
                        run(fctx(fam, true), &sq, &sv, x, &o, |x| x.to_vec()),
                        TOL_F32,
                    ),
                    "f16" => (run(fctx(fam, true), &sq, &sv, x, &o, to_f16), TOL_F16),
                    _ => (run(fctx(fam, false), &sq, &sv, x, &o, to_f16), TOL_F16),
                };
                let e = rel_err(&got, &want);
                eprintln!("{label}: {e:.2e}");
                assert!(e <= tol, "{label}: relative error {e:.3e} > {tol:.1e}");
                assert_close_elementwise(&label, &got, &want, 10.0 * tol);
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
    assert!(ctx().shader_f16(), "lavapipe has SHADER_F16");
    sweep("f16");
}

#[test]
fn gpu_matches_reference_f16_packed_without_shader_f16() {
    assert!(!ctx_packed().shader_f16());
    sweep("f16-packed");
}

/// Logits |q·k| near 100 and beyond: exp would overflow f32 without the running maximum.
#[test]
fn large_logits_stay_finite_and_exact() {
    let (rows, l, d) = (2, 300, 16);
    let mut g = rng(42);
    // q·k/4 has standard deviation 6²·4/4 = 36, so the largest logits are a few hundred.
    let q = randn(&mut g, rows * l * d, 6.0);
    let k = randn(&mut g, rows * l * d, 6.0);
    let v = randn(&mut g, rows * l * d, 1.0);
    let s = [rows, l, d];
    let dims = check_shapes("t", &s, &s, &s).unwrap();
    let qd = to_f64(&q);
    let kd = to_f64(&k);
    let max_logit = (0..l)
        .flat_map(|i| (0..l).map(move |j| (i, j)))
        .map(|(i, j)| (0..d).map(|a| qd[i * d + a] * kd[j * d + a]).sum::<f64>() / 4.0)
        .fold(0.0f64, |m, x| m.max(x.abs()));
    assert!(max_logit > 100.0, "test inputs too tame: {max_logit}");
    for causal in [false, true] {
        let o = SoftmaxAttentionOptions {
            causal,
            scale: None,
            ..Default::default()
        };
        for fam in FAMILIES {
            let (got, want) = run(fctx(fam, true), &s, &s, (&q, &k, &v), &o, |x| x.to_vec());
            assert!(got.iter().all(|x| x.is_finite()), "non-finite output");
            assert_close(&format!("{fam:?} causal={causal}"), &got, &want, TOL_F32);
            let (got, want) = run(fctx(fam, false), &s, &s, (&q, &k, &v), &o, to_f16);
            assert!(got.iter().all(|x| x.is_finite()), "non-finite f16 output");
            assert_close(
                &format!("{fam:?} f16 causal={causal}"),
                &got,
                &want,
                TOL_F16,
            );
        }
    }
    let _ = dims;
}

#[test]
fn explicit_scale_and_four_dim_input() {
    let mut g = rng(9);
    let (b, h, l, d) = (2, 3, 77, 5);
    let q = randn(&mut g, b * h * l * d, 1.0);
    let k = randn(&mut g, b * h * l * d, 1.0);
    let v = randn(&mut g, b * h * l * d, 1.0);
    let s = [b, h, l, d];
    for scale in [0.05f32, 1.3, -0.7] {
        let o = SoftmaxAttentionOptions {
            causal: true,
            scale: Some(scale),
            ..Default::default()
        };
        let (got, want) = run(ctx(), &s, &s, (&q, &k, &v), &o, |x| x.to_vec());
        assert_close(&format!("scale {scale}"), &got, &want, TOL_F32);
    }
}

/// B·H = 70 000 rows of tiny L: more workgroups than one grid dimension allows.
#[test]
fn grid_folds_past_65535_workgroups() {
    let (rows, l, dk, dv) = (65_600, 1, 3, 2);
    let mut g = rng(7);
    let q = randn(&mut g, rows * l * dk, 1.0);
    let k = randn(&mut g, rows * l * dk, 1.0);
    let v = randn(&mut g, rows * l * dv, 1.0);
    let o = SoftmaxAttentionOptions::default();
    let (sq, sv) = ([rows, l, dk], [rows, l, dv]);
    let (got, want) = run(ctx(), &sq, &sv, (&q, &k, &v), &o, |x| x.to_vec());
    assert_close("f32", &got, &want, TOL_F32);
}

/// With storage bindings capped at 64 KiB the op runs in many passes with unaligned offsets.
#[test]
fn splits_work_past_the_storage_binding_limit() {
    for fam in FAMILIES {
        splits_past_the_binding_limit(&fctx_small(fam, 64 * 1024, true));
    }
}

fn splits_past_the_binding_limit(ctx: &Context) {
    let (rows, l, dk, dv) = (13, 101, 33, 33);
    let mut g = rng(11);
    let q = randn(&mut g, rows * l * dk, 1.0);
    let k = randn(&mut g, rows * l * dk, 1.0);
    let v = randn(&mut g, rows * l * dv, 1.0);
    let (sq, sv) = ([rows, l, dk], [rows, l, dv]);
    for causal in [false, true] {
        let o = SoftmaxAttentionOptions {
            causal,
            scale: None,
            ..Default::default()
        };
        let (got, want) = run(ctx, &sq, &sv, (&q, &k, &v), &o, |x| x.to_vec());
        assert_close(&format!("f32 causal={causal}"), &got, &want, TOL_F32);
        let (got, want) = run(ctx, &sq, &sv, (&q, &k, &v), &o, to_f16);
        assert_close(&format!("f16 causal={causal}"), &got, &want, TOL_F16);
    }
}

/// A head dim so large that one key tile alone would pass the adapter's loop limit is a typed
/// error naming the largest Dk that runs (a row past the binding limit splits along L instead:
/// tests/suite/softmax_long.rs).
#[test]
fn head_dim_past_the_loop_limit_is_too_large() {
    for fam in FAMILIES {
        head_dim_too_large(fctx(fam, true));
    }
}

fn head_dim_too_large(c: &Context) {
    let big = vec![0.5f32; 2 * 8192];
    let t = Tensor::from_slice(c, &big, &[1, 2, 8192]).unwrap();
    match softmax_attention(c, &t, &t, &t, &SoftmaxAttentionOptions::default()) {
        Err(Error::TooLarge { what, limit, .. }) => {
            assert!(what.contains("Dk = 8192"), "{what}");
            assert!(limit >= 1024, "largest Dk {limit}");
        }
        other => panic!("expected TooLarge, got {:?}", other.err()),
    }
}

#[test]
fn nan_reaches_exactly_the_outputs_the_reference_makes_nan() {
    // Dv = 8: attend_reg reads V as vec4; 6: a partial last quad.
    for (causal, dv) in [(false, 5), (true, 5), (true, 6), (true, 8)] {
        let (rows, l, dk) = (3, 150, 4);
        let mut g = rng(5);
        let mut q = randn(&mut g, rows * l * dk, 1.0);
        let mut k = randn(&mut g, rows * l * dk, 1.0);
        let mut v = randn(&mut g, rows * l * dv, 1.0);
        k[(l + 70) * dk + 2] = f32::NAN; // row 1, position 70
        v[(5 + 2 * l) * dv + 1] = f32::NAN; // row 2, position 5, column 1
        q[3 * dk] = f32::NAN; // row 0, position 3
        let o = SoftmaxAttentionOptions {
            causal,
            scale: None,
            ..Default::default()
        };
        let s = [rows, l, dk];
        let sv = [rows, l, dv];
        for fam in FAMILIES {
            let (got, want) = run(fctx(fam, true), &s, &sv, (&q, &k, &v), &o, |x| x.to_vec());
            assert!(want.iter().any(|x| x.is_nan()) && want.iter().any(|x| !x.is_nan()));
            let mism = nan_mismatches(&got, &want);
            assert_eq!(
                mism, 0,
                "{fam:?} causal={causal} Dv={dv}: NaN pattern differs at {mism}"
            );
            assert_close_elementwise(&format!("{fam:?} NaN"), &got, &want, 10.0 * TOL_F32);
        }
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let c = ctx();
    let t = |s: &[usize]| Tensor::from_slice(c, &vec![0.25f32; s.iter().product()], s).unwrap();
    let o = SoftmaxAttentionOptions::default();
    let shape_err = |r: longseq::Result<Tensor<f32>>, which: &str| match r {
        Err(Error::Shape { name, .. }) => assert_eq!(name, which),
        other => panic!("expected a shape error on {which}, got {:?}", other.err()),
    };
    // Lq ≠ Lk is cross-attention (issue 14); a k whose Dk differs from q's is not.
    shape_err(
        softmax_attention(c, &t(&[2, 5, 4]), &t(&[2, 5, 3]), &t(&[2, 5, 4]), &o),
        "k",
    );
    shape_err(
        softmax_attention(c, &t(&[2, 5, 4]), &t(&[2, 5, 4]), &t(&[2, 4, 4]), &o),
        "v",
    );
    shape_err(
        softmax_attention(c, &t(&[5, 4]), &t(&[5, 4]), &t(&[5, 4]), &o),
        "q",
    );
    let x = t(&[2, 5, 4]);
    for bad in [f32::NAN, f32::INFINITY] {
        let o = SoftmaxAttentionOptions {
            scale: Some(bad),
            ..o.clone()
        };
        assert!(matches!(
            softmax_attention(c, &x, &x, &x, &o),
            Err(Error::InvalidArgument { name: "scale", .. })
        ));
    }
    assert!(matches!(
        softmax_attention_into(c, &x, &x, &x, &t(&[2, 5, 3]), &o),
        Err(Error::Shape { name: "out", .. })
    ));
    assert!(matches!(
        softmax_attention_into(c, &x, &x, &x, &x, &o),
        Err(Error::InvalidArgument { name: "out", .. })
    ));
}

/// The reference against a direct evaluation of softmax without the max shift, on tame logits.
#[test]
fn reference_matches_the_unshifted_definition() {
    let (rows, l, dk, dv) = (2, 37, 5, 3);
    let mut g = rng(3);
    let q = randn(&mut g, rows * l * dk, 1.0);
    let k = randn(&mut g, rows * l * dk, 1.0);
    let v = randn(&mut g, rows * l * dv, 1.0);
    let d = check_shapes("t", &[rows, l, dk], &[rows, l, dk], &[rows, l, dv]).unwrap();
    for causal in [false, true] {
        let o = SoftmaxAttentionOptions {
            causal,
            scale: Some(0.3),
            ..Default::default()
        };
        let got = reference::attention::softmax_attention(&q, &k, &v, &d, &o).unwrap();
        let mut want = vec![0.0; rows * l * dv];
        for r in 0..rows {
            for i in 0..l {
                let n = if causal { i + 1 } else { l };
                let w: Vec<f64> = (0..n)
                    .map(|j| {
                        let s: f64 = (0..dk)
                            .map(|a| {
                                q[(r * l + i) * dk + a] as f64 * k[(r * l + j) * dk + a] as f64
                            })
                            .sum();
                        (0.3f32 as f64 * s).exp()
                    })
                    .collect();
                let z: f64 = w.iter().sum();
                for e in 0..dv {
                    want[(r * l + i) * dv + e] = (0..n)
                        .map(|j| w[j] * v[(r * l + j) * dv + e] as f64)
                        .sum::<f64>()
                        / z;
                }
            }
        }
        assert_close(&format!("causal={causal}"), &got, &want, 1e-12);
    }
}

fn load(st: &safetensors::SafeTensors<'_>, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st.tensor(name).unwrap();
    let x: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (x, t.shape().to_vec())
}

/// The shipped MiniLM capture: layer-0 and layer-5 q, k, v against `softmax_out`, which was
/// computed in float64 outside this crate.
#[test]
fn reproduces_minilm_softmax_out() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/minilm_two_cities_qkv.safetensors"
    );
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for layer in [0, 5] {
        let (q, s) = load(&st, &format!("layer{layer}.q"));
        let (k, _) = load(&st, &format!("layer{layer}.k"));
        let (v, _) = load(&st, &format!("layer{layer}.v"));
        let (want, _) = load(&st, &format!("layer{layer}.softmax_out"));
        let c = ctx();
        let t = |x: &[f32]| Tensor::from_slice(c, x, &s).unwrap();
        let out = Tensor::<f32>::nan(c, &s).unwrap();
        let o = SoftmaxAttentionOptions::default();
        softmax_attention_into(c, &t(&q), &t(&k), &t(&v), &out, &o).unwrap();
        let got = to_f64(&out.to_vec(c).unwrap());
        let e = rel_err(&got, &to_f64(&want));
        eprintln!("layer {layer}: GPU vs stored softmax_out: {e:.2e}");
        assert!(e <= 1e-5, "layer {layer}: {e:.3e}");
    }
}
