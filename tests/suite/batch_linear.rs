//! Issue 14 for the linear family: `[B, L, H, D]` through strides, grouped heads (GQA/MQA) and
//! Lq ≠ Lk (non-causal), against the per-sequence f64 reference
//! (`reference::attention::linear_attention_batch`), with NaN-poisoned outputs, f32 and f16 (native
//! and packed), both tile families, and bindings small enough to split along B and L.

use crate::common;

use common::*;
use longseq::attention::{linear::check_gqa, LinearAttentionOptions};
use longseq::attention::{linear_attention, linear_attention_into, FeatureMap};
use longseq::reference::attention::linear_attention_batch;
use longseq::types::Layout;
use longseq::{Context, Element, Error, Tensor};

/// (B, T, H, D), fla's order.
type Bthd = (usize, usize, usize, usize);

/// (B, Hq, Hkv, Lq, Lk, Dk, Dv).
type Sizes = (usize, usize, usize, usize, usize, usize, usize);

fn opts(feature_map: FeatureMap, causal: bool, layout: Layout) -> LinearAttentionOptions {
    LinearAttentionOptions {
        feature_map,
        causal,
        // Maps that are not positive run without the denominator (NormAttention's use).
        denominator: matches!(feature_map, FeatureMap::Elu1 | FeatureMap::Relu),
        layout,
        ..Default::default()
    }
}

/// Runs one case into a NaN-poisoned output and compares with the reference (normwise and
/// elementwise); inputs are fresh N(0, 0.5²) draws stored as `T`.
fn check<T: Element>(c: &Context, s: Sizes, o: &LinearAttentionOptions, seed: u64, tol: f64) {
    let (b, hq, hkv, lq, lk, dk, dv) = s;
    let l = o.layout;
    let mut r = rng(seed);
    let mut make = |h, len, d| {
        let shape = l.shape(b, h, len, d);
        let x: Vec<T> = randn(&mut r, b * h * len * d, 0.5)
            .iter()
            .map(|&v| T::from_f64(v as f64))
            .collect();
        (x, shape)
    };
    let ((q, sq), (k, sk), (v, sv)) = (make(hq, lq, dk), make(hkv, lk, dk), make(hkv, lk, dv));
    let d = check_gqa("test", &sq, &sk, &sv, l, o.causal).unwrap();
    let want = linear_attention_batch((&q, &k, &v), &d, o, None, None)
        .unwrap()
        .o;
    let t = |x: &[T], sh: &[usize]| Tensor::from_slice(c, x, sh).unwrap();
    let nan = vec![T::from_f64(f64::NAN); want.len()];
    let out = t(&nan, &d.out_shape);
    linear_attention_into(c, &t(&q, &sq), &t(&k, &sk), &t(&v, &sv), &out, o).unwrap();
    let got = to_f64(&out.to_vec(c).unwrap());
    let label = format!("{:?} {:?} causal={} {s:?}", l, o.feature_map, o.causal);
    assert!(
        got.iter().all(|x| x.is_finite()),
        "{label}: NaN left in the output"
    );
    assert_close_both(&label, &got, &want, tol);
}

fn contexts_f32() -> [&'static Context; 2] {
    [ctx(), ctx_gpu_tiles()]
}

fn contexts_f16() -> [&'static Context; 4] {
    [ctx(), ctx_packed(), ctx_gpu_tiles(), ctx_gpu_tiles_packed()]
}

/// fla's shapes (B, T, H, D) in both layouts, every feature map, causal and not.
#[test]
fn fla_shapes_both_layouts_f32() {
    let shapes = [(1, 63, 1, 64), (2, 500, 3, 60), (2, 1000, 3, 128)];
    for (i, &(b, t, h, d)) in shapes.iter().enumerate() {
        for layout in [Layout::Bhld, Layout::Blhd] {
            for causal in [false, true] {
                // Every map at the small shape; the larger ones with elu + 1 and relu.
                let maps: &[FeatureMap] = match i {
                    0 => &[
                        FeatureMap::Elu1,
                        FeatureMap::Relu,
                        FeatureMap::Elu,
                        FeatureMap::Identity,
                    ],
                    _ => &[FeatureMap::Elu1],
                };
                for &fm in maps {
                    for c in contexts_f32() {
                        let o = opts(fm, causal, layout);
                        check::<f32>(c, (b, h, h, t, t, d, d), &o, 11 + i as u64, TOL_F32);
                    }
                }
            }
        }
    }
}

#[test]
fn fla_shapes_blhd_f16() {
    for &(b, t, h, d) in &[(1, 63, 1, 64), (2, 500, 3, 60)] {
        for causal in [false, true] {
            for c in contexts_f16() {
                let o = opts(FeatureMap::Elu1, causal, Layout::Blhd);
                check::<half::f16>(c, (b, h, h, t, t, d, d), &o, 5, TOL_F16);
            }
        }
    }
}

/// Hq a multiple of Hkv (GQA, and MQA with Hkv = 1), Dk ≠ Dv, both layouts.
#[test]
fn grouped_heads_match_the_reference() {
    for layout in [Layout::Bhld, Layout::Blhd] {
        for (hq, hkv) in [(6, 2), (4, 1), (3, 3)] {
            for causal in [false, true] {
                for c in contexts_f32() {
                    let o = opts(FeatureMap::Elu1, causal, layout);
                    check::<f32>(c, (2, hq, hkv, 77, 77, 24, 40), &o, 3, TOL_F32);
                }
                let o = opts(FeatureMap::Relu, causal, layout);
                check::<half::f16>(ctx_packed(), (2, hq, hkv, 77, 77, 24, 40), &o, 4, TOL_F16);
            }
        }
    }
}

/// Non-causal cross-attention: queries and keys of different lengths (either longer), with GQA.
#[test]
fn cross_attention_lq_ne_lk() {
    for layout in [Layout::Bhld, Layout::Blhd] {
        for (lq, lk) in [(37, 150), (150, 37), (1, 70)] {
            for c in contexts_f32() {
                let o = opts(FeatureMap::Elu1, false, layout);
                check::<f32>(c, (2, 4, 2, lq, lk, 20, 12), &o, 9, TOL_F32);
            }
        }
    }
}

/// NormAttention into a NaN-poisoned output against the reference (the numerator over the Lk
/// keys, then the norm of each of the Lq rows); inputs fresh N(0, 0.5²) draws stored as `T`.
fn check_norm<T: Element>(
    c: &Context,
    s: Sizes,
    layout: Layout,
    causal: bool,
    seed: u64,
    tol: f64,
) {
    use longseq::attention::{norm_attention_batch_into, Affine, Norm, NormAttentionOptions};
    use longseq::reference::attention::norm_attention_batch;
    let (b, hq, hkv, lq, lk, dk, dv) = s;
    let mut r = rng(seed);
    let mut make = |h, len, d| {
        let shape = layout.shape(b, h, len, d);
        let x: Vec<T> = randn(&mut r, b * h * len * d, 0.5)
            .iter()
            .map(|&v| T::from_f64(v as f64))
            .collect();
        (x, shape)
    };
    let ((q, sq), (k, sk), (v, sv)) = (make(hq, lq, dk), make(hkv, lk, dk), make(hkv, lk, dv));
    let d = check_gqa("test", &sq, &sk, &sv, layout, causal).unwrap();
    let o = NormAttentionOptions {
        causal,
        norm: Norm::LayerNorm,
        ..Default::default()
    };
    let none = Affine::default();
    let want = norm_attention_batch((&q, &k, &v), &d, &none, &o, None).unwrap();
    let t = |x: &[T], sh: &[usize]| Tensor::from_slice(c, x, sh).unwrap();
    let out = Tensor::<T>::nan(c, &d.out_shape).unwrap();
    let (q, k, v) = (t(&q, &sq), t(&k, &sk), t(&v, &sv));
    norm_attention_batch_into(c, &q, &k, &v, &none, layout, None, &out, &o).unwrap();
    let got = to_f64(&out.to_vec(c).unwrap());
    let label = format!("norm {layout:?} causal={causal} {s:?}");
    assert_close_both(&label, &got, &want, tol);
}

/// NormAttention at fla's shapes (B, T, H, D), both layouts, causal and not, f32 (both tile
/// families) and f16 (native and packed) at the middle shape.
#[test]
fn norm_fla_shapes_both_layouts() {
    let shapes = [(1, 63, 1, 64), (2, 500, 3, 60), (2, 1000, 3, 128)];
    for (i, &(b, t, h, d)) in shapes.iter().enumerate() {
        let s = (b, h, h, t, t, d, d);
        for layout in [Layout::Bhld, Layout::Blhd] {
            for causal in [false, true] {
                for c in contexts_f32() {
                    check_norm::<f32>(c, s, layout, causal, 40 + i as u64, TOL_F32);
                }
                if i == 1 {
                    for c in [ctx(), ctx_packed()] {
                        check_norm::<half::f16>(c, s, layout, causal, 45, TOL_F16);
                    }
                }
            }
        }
    }
}

/// NormAttention's cross-attention (not causal): Lq ≠ Lk either way, GQA, both layouts, f32 and
/// f16 (native and packed), against the reference.
#[test]
fn norm_cross_attention_lq_ne_lk() {
    use longseq::attention::{Affine, NormAttentionOptions};
    for layout in [Layout::Bhld, Layout::Blhd] {
        for (lq, lk) in [(37, 150), (150, 37), (1, 70)] {
            let s = (2, 4, 2, lq, lk, 20, 12);
            for c in contexts_f32() {
                check_norm::<f32>(c, s, layout, false, 31, TOL_F32);
            }
            for c in [ctx(), ctx_packed()] {
                check_norm::<half::f16>(c, s, layout, false, 32, TOL_F16);
            }
        }
    }
    // The causal mask needs Lq = Lk: a typed error.
    let c = ctx();
    let q = Tensor::<f32>::nan(c, &[1, 2, 10, 4]).unwrap();
    let k = Tensor::<f32>::nan(c, &[1, 2, 12, 4]).unwrap();
    let o = NormAttentionOptions {
        causal: true,
        ..Default::default()
    };
    let e = longseq::attention::norm_attention_batch(
        c,
        &q,
        &k,
        &k,
        &Affine::default(),
        Layout::Bhld,
        None,
        &o,
    )
    .err()
    .expect("a typed error");
    assert!(matches!(e, Error::Shape { .. }), "{e}");
}

/// Bindings too small for a whole batch entry: `[B, L, H, D]` splits along B (passes of whole
/// batch entries) and along L (segments of all heads of one entry carrying the state).
#[test]
fn small_bindings_split_along_b_and_l() {
    for cap in [40 << 10, 200 << 10, 1 << 20] {
        let c = ctx_small_bindings(cap);
        for layout in [Layout::Bhld, Layout::Blhd] {
            for causal in [false, true] {
                let o = opts(FeatureMap::Elu1, causal, layout);
                check::<f32>(&c, (3, 3, 3, 300, 300, 32, 24), &o, 21, TOL_F32);
                if !causal {
                    check::<f32>(&c, (2, 4, 2, 130, 400, 32, 24), &o, 22, TOL_F32);
                }
            }
            let o = opts(FeatureMap::Elu1, true, layout);
            check::<half::f16>(&c, (2, 3, 3, 300, 300, 32, 24), &o, 23, TOL_F16);
        }
    }
}

/// The same data in both layouts gives the same output, transposed.
#[test]
fn layouts_agree() {
    let c = ctx();
    let (b, h, l, d) = (2, 3, 45, 16);
    let x = randn(&mut rng(31), b * h * l * d, 0.5);
    // x in bhld; y = the same tensor in blhd.
    let (sb, sl) = (Layout::Bhld.strides(h, l, d), Layout::Blhd.strides(h, l, d));
    let mut y = vec![0.0f32; x.len()];
    for (bi, hi, ti, di) in itertools_free(b, h, l, d) {
        y[sl.index(bi, hi, ti, di)] = x[sb.index(bi, hi, ti, di)];
    }
    for causal in [false, true] {
        let run = |data: &[f32], layout: Layout| {
            let t = Tensor::from_slice(c, data, &layout.shape(b, h, l, d)).unwrap();
            let o = opts(FeatureMap::Elu1, causal, layout);
            linear_attention(c, &t, &t, &t, &o)
                .unwrap()
                .to_vec(c)
                .unwrap()
        };
        let (ob, ol) = (run(&x, Layout::Bhld), run(&y, Layout::Blhd));
        for (bi, hi, ti, di) in itertools_free(b, h, l, d) {
            assert_eq!(ob[sb.index(bi, hi, ti, di)], ol[sl.index(bi, hi, ti, di)]);
        }
    }
}

fn itertools_free(b: usize, h: usize, l: usize, d: usize) -> Vec<(usize, usize, usize, usize)> {
    let mut v = Vec::with_capacity(b * h * l * d);
    for bi in 0..b {
        for hi in 0..h {
            for ti in 0..l {
                for di in 0..d {
                    v.push((bi, hi, ti, di));
                }
            }
        }
    }
    v
}

#[test]
fn bad_batches_are_typed_errors() {
    let c = ctx();
    let t = |s: &[usize]| Tensor::from_slice(c, &vec![0.25f32; s.iter().product()], s).unwrap();
    let shape = |r: longseq::Result<Tensor<f32>>| match r {
        Err(Error::Shape { name, .. }) => name,
        other => panic!("expected a shape error, got {:?}", other.err()),
    };
    let blhd = opts(FeatureMap::Elu1, false, Layout::Blhd);
    let causal = opts(FeatureMap::Elu1, true, Layout::Blhd);
    // [B, L, H, D]: Hkv = 4 does not divide Hq = 6.
    let (q, k) = (t(&[1, 5, 6, 8]), t(&[1, 5, 4, 8]));
    assert_eq!(shape(linear_attention(c, &q, &k, &k, &blhd)), "k");
    // Lq ≠ Lk with the causal mask.
    let (q, k) = (t(&[1, 5, 2, 8]), t(&[1, 7, 2, 8]));
    assert_eq!(shape(linear_attention(c, &q, &k, &k, &causal)), "k");
    // blhd needs rank 4.
    let x = t(&[5, 2, 8]);
    assert_eq!(shape(linear_attention(c, &x, &x, &x, &blhd)), "q");
    // The CPU path reads rows [R, L, D] only: blhd is refused, not misread.
    let d = longseq::attention::linear::check_shapes("t", &[2, 5, 8], &[2, 5, 8], &[2, 5, 8]);
    let xs = vec![0.5f32; 80];
    assert!(matches!(
        longseq::cpu::attention::linear_attention(&xs, &xs, &xs, &d.unwrap(), &blhd),
        Err(Error::InvalidArgument { name: "layout", .. })
    ));
}

/// Tokens `[t0, t1)` of a `(B, H, L, D)` tensor in `layout`.
fn tokens(
    x: &[f32],
    layout: Layout,
    (b, h, l, d): (usize, usize, usize, usize),
    t0: usize,
    t1: usize,
) -> Vec<f32> {
    let (src, dst) = (layout.strides(h, l, d), layout.strides(h, t1 - t0, d));
    let mut y = vec![0.0; b * h * (t1 - t0) * d];
    for (bi, hi, ti, di) in itertools_free(b, h, t1 - t0, d) {
        y[dst.index(bi, hi, ti, di)] = x[src.index(bi, hi, t0 + ti, di)];
    }
    y
}

/// Causal linear attention with a state: one call from an initial state equals two calls (the
/// second from the first's final state), and both match the reference, outputs and final S, z.
/// The second size fills the CPU tiles' SCAN_IN threshold (16 rows × 16 tiles): there
/// chunk_state starts from the initial state itself.
#[test]
fn state_in_and_out_two_calls_equal_one() {
    for dims in [(2, 4, 2, 300, 24, 20, 137), (2, 8, 4, 300, 64, 64, 137)] {
        state_in_and_out(dims);
    }
    use longseq::attention::{linear_attention_with_state, LinearState};
    // Without an initial state the state starts at zero; non-causal is refused.
    let c = ctx();
    let x = Tensor::from_slice(c, &randn(&mut rng(2), 2 * 9 * 8, 0.5), &[2, 9, 8]).unwrap();
    let o = opts(FeatureMap::Elu1, true, Layout::Bhld);
    let (a, _) = linear_attention_with_state(c, &x, &x, &x, None, &o).unwrap();
    let zero = LinearState::zeros(c, 1, 2, 8, 8).unwrap();
    let (b2, _) = linear_attention_with_state(c, &x, &x, &x, Some(&zero), &o).unwrap();
    assert_eq!(a.to_vec(c).unwrap(), b2.to_vec(c).unwrap());
    let nc = opts(FeatureMap::Elu1, false, Layout::Bhld);
    assert!(matches!(
        linear_attention_with_state(c, &x, &x, &x, None, &nc),
        Err(Error::InvalidArgument { name: "causal", .. })
    ));
    let bad = LinearState::zeros(c, 2, 2, 8, 8).unwrap();
    assert!(matches!(
        linear_attention_with_state(c, &x, &x, &x, Some(&bad), &o),
        Err(Error::Shape {
            name: "initial_state",
            ..
        })
    ));
}

fn state_in_and_out(
    (b, hq, hkv, l, dk, dv, cut): (usize, usize, usize, usize, usize, usize, usize),
) {
    use longseq::attention::{linear_attention_with_state, LinearState};
    for layout in [Layout::Bhld, Layout::Blhd] {
        for c in contexts_f32() {
            let mut r = rng(41);
            let q = randn(&mut r, b * hq * l * dk, 0.5);
            let k = randn(&mut r, b * hkv * l * dk, 0.5);
            let v = randn(&mut r, b * hkv * l * dv, 0.5);
            let s0 = randn(&mut r, b * hq * dk * dv, 0.5);
            let z0: Vec<f32> = randn(&mut r, b * hq * dk, 0.5)
                .iter()
                .map(|x| x.abs() + 1.0)
                .collect();
            let o = opts(FeatureMap::Elu1, true, layout);
            let t = |x: &[f32], h, len, d| {
                Tensor::from_slice(c, x, &layout.shape(b, h, len, d)).unwrap()
            };
            let init = LinearState {
                s: Tensor::from_slice(c, &s0, &[b, hq, dk, dv]).unwrap(),
                z: Tensor::from_slice(c, &z0, &[b, hq, dk]).unwrap(),
            };
            let run = |t0: usize, t1: usize, st: &LinearState| {
                let part =
                    |x: &[f32], h, d| t(&tokens(x, layout, (b, h, l, d), t0, t1), h, t1 - t0, d);
                let (qa, ka, va) = (part(&q, hq, dk), part(&k, hkv, dk), part(&v, hkv, dv));
                linear_attention_with_state(c, &qa, &ka, &va, Some(st), &o).unwrap()
            };
            let (whole, fw) = run(0, l, &init);
            let (first, f1) = run(0, cut, &init);
            let (second, f2) = run(cut, l, &f1);
            // Outputs: the two halves, put back together, equal the one call.
            let whole = whole.to_vec(c).unwrap();
            let (sa, sb) = (first.to_vec(c).unwrap(), second.to_vec(c).unwrap());
            let (so, s1, s2) = (
                layout.strides(hq, l, dv),
                layout.strides(hq, cut, dv),
                layout.strides(hq, l - cut, dv),
            );
            let mut joined = vec![f32::NAN; whole.len()];
            for (bi, hi, ti, di) in itertools_free(b, hq, l, dv) {
                joined[so.index(bi, hi, ti, di)] = if ti < cut {
                    sa[s1.index(bi, hi, ti, di)]
                } else {
                    sb[s2.index(bi, hi, ti - cut, di)]
                };
            }
            let label = format!("{layout:?} two calls vs one");
            assert_close_both(&label, &to_f64(&joined), &to_f64(&whole), TOL_F32);
            for (x, y) in [(&fw.s, &f2.s), (&fw.z, &f2.z)] {
                let (x, y) = (to_f64(&x.to_vec(c).unwrap()), to_f64(&y.to_vec(c).unwrap()));
                assert_close_both(&format!("{label}: final state"), &y, &x, TOL_F32);
            }
            // Against the reference from the same initial state.
            let d = check_gqa(
                "t",
                &layout.shape(b, hq, l, dk),
                &layout.shape(b, hkv, l, dk),
                &layout.shape(b, hkv, l, dv),
                layout,
                true,
            )
            .unwrap();
            let init64 = (to_f64(&s0), to_f64(&z0));
            let want =
                linear_attention_batch((&q, &k, &v), &d, &o, None, Some((&init64.0, &init64.1)))
                    .unwrap();
            assert_close_both(
                &format!("{label}: o vs reference"),
                &to_f64(&whole),
                &want.o,
                TOL_F32,
            );
            assert_close_both(
                "final S vs reference",
                &to_f64(&fw.s.to_vec(c).unwrap()),
                &want.s,
                TOL_F32,
            );
            assert_close_both(
                "final z vs reference",
                &to_f64(&fw.z.to_vec(c).unwrap()),
                &want.z,
                TOL_F32,
            );
        }
    }
}

/// Lightning (decayed, no denominator) in both layouts at fla's shapes, f32 and f16, and with
/// bindings small enough to split a `[B, L, H, D]` batch entry along L.
#[test]
fn lightning_both_layouts_match_the_reference() {
    use longseq::attention::{alibi_slopes, lightning_attention_into, LightningOptions};
    use longseq::reference::attention::lightning_attention_batch;
    let small = ctx_small_bindings(40 << 10);
    let cases: [(&Context, Bthd, bool); 6] = [
        (ctx(), (1, 63, 1, 64), false),
        (ctx_gpu_tiles(), (2, 500, 3, 60), false),
        (ctx(), (2, 1000, 3, 128), false),
        (ctx_packed(), (2, 500, 3, 60), true),
        (ctx_gpu_tiles(), (1, 63, 1, 64), true),
        (&small, (2, 300, 3, 32), false),
    ];
    for (c, (b, l, h, d), f16) in cases {
        for layout in [Layout::Bhld, Layout::Blhd] {
            let mut r = rng(61);
            let shape = layout.shape(b, h, l, d);
            let x: Vec<Vec<f32>> = (0..3).map(|_| randn(&mut r, b * h * l * d, 0.5)).collect();
            let slopes = alibi_slopes(h);
            let o = LightningOptions {
                layout,
                ..Default::default()
            };
            let dims = check_gqa("t", &shape, &shape, &shape, layout, true).unwrap();
            let label = format!("lightning {layout:?} {:?} f16={f16}", (b, l, h, d));
            let got = if f16 {
                let x: Vec<Vec<half::f16>> = x.iter().map(|v| to_f16(v)).collect();
                let t = |v: &[half::f16]| Tensor::from_slice(c, v, &shape).unwrap();
                let out = Tensor::<half::f16>::nan(c, &shape).unwrap();
                let (q, k, v) = (t(&x[0]), t(&x[1]), t(&x[2]));
                lightning_attention_into(c, &q, &k, &v, None, &out, &o).unwrap();
                let (want, _) = lightning_attention_batch(
                    (&x[0], &x[1], &x[2]),
                    &dims,
                    &slopes,
                    o.feature_map,
                    None,
                )
                .unwrap();
                (to_f64(&out.to_vec(c).unwrap()), want, TOL_F16)
            } else {
                let t = |v: &[f32]| Tensor::from_slice(c, v, &shape).unwrap();
                let out = Tensor::<f32>::nan(c, &shape).unwrap();
                let (q, k, v) = (t(&x[0]), t(&x[1]), t(&x[2]));
                lightning_attention_into(c, &q, &k, &v, None, &out, &o).unwrap();
                let (want, _) = lightning_attention_batch(
                    (&x[0], &x[1], &x[2]),
                    &dims,
                    &slopes,
                    o.feature_map,
                    None,
                )
                .unwrap();
                (to_f64(&out.to_vec(c).unwrap()), want, TOL_F32)
            };
            assert!(got.0.iter().all(|x| x.is_finite()), "{label}: NaN left");
            assert_close_both(&label, &got.0, &got.1, got.2);
        }
    }
}

/// Lightning with a state: two calls (the second from the first's final state) equal one call
/// from the same initial state, and the final state matches the reference.
#[test]
fn lightning_state_two_calls_equal_one() {
    use longseq::attention::{lightning_attention_with_state, LightningOptions};
    use longseq::reference::attention::lightning_attention_batch;
    let (b, h, l, dk, dv, cut) = (2, 3, 260, 20, 28, 101);
    let slopes = [0.02f32, 0.3, 1.5];
    for layout in [Layout::Bhld, Layout::Blhd] {
        for c in contexts_f32() {
            let mut r = rng(71);
            let q = randn(&mut r, b * h * l * dk, 0.5);
            let k = randn(&mut r, b * h * l * dk, 0.5);
            let v = randn(&mut r, b * h * l * dv, 0.5);
            let s0 = randn(&mut r, b * h * dk * dv, 0.5);
            let o = LightningOptions {
                layout,
                ..Default::default()
            };
            let init = Tensor::from_slice(c, &s0, &[b, h, dk, dv]).unwrap();
            let run = |t0: usize, t1: usize, st: &Tensor<f32>| {
                let part = |x: &[f32], d| {
                    let y = tokens(x, layout, (b, h, l, d), t0, t1);
                    Tensor::from_slice(c, &y, &layout.shape(b, h, t1 - t0, d)).unwrap()
                };
                let (qa, ka, va) = (part(&q, dk), part(&k, dk), part(&v, dv));
                lightning_attention_with_state(c, &qa, &ka, &va, Some(&slopes), Some(st), &o)
                    .unwrap()
            };
            let (whole, fw) = run(0, l, &init);
            let (first, f1) = run(0, cut, &init);
            let (second, f2) = run(cut, l, &f1);
            let (sa, sb) = (first.to_vec(c).unwrap(), second.to_vec(c).unwrap());
            let whole = to_f64(&whole.to_vec(c).unwrap());
            let (so, s1, s2) = (
                layout.strides(h, l, dv),
                layout.strides(h, cut, dv),
                layout.strides(h, l - cut, dv),
            );
            let mut joined = vec![f64::NAN; whole.len()];
            for (bi, hi, ti, di) in itertools_free(b, h, l, dv) {
                joined[so.index(bi, hi, ti, di)] = if ti < cut {
                    sa[s1.index(bi, hi, ti, di)] as f64
                } else {
                    sb[s2.index(bi, hi, ti - cut, di)] as f64
                };
            }
            let label = format!("lightning {layout:?}");
            assert_close_both(
                &format!("{label} two calls vs one"),
                &joined,
                &whole,
                TOL_F32,
            );
            let (fw, f2) = (
                to_f64(&fw.to_vec(c).unwrap()),
                to_f64(&f2.to_vec(c).unwrap()),
            );
            assert_close_both(
                &format!("{label} final state, two calls"),
                &f2,
                &fw,
                TOL_F32,
            );
            let sh = |d| layout.shape(b, h, l, d);
            let dims = check_gqa("t", &sh(dk), &sh(dk), &sh(dv), layout, true).unwrap();
            let (want, ws) = lightning_attention_batch(
                (&q, &k, &v),
                &dims,
                &slopes,
                o.feature_map,
                Some(&to_f64(&s0)),
            )
            .unwrap();
            assert_close_both(&format!("{label} o vs reference"), &whole, &want, TOL_F32);
            assert_close_both(&format!("{label} final S vs reference"), &fw, &ws, TOL_F32);
        }
    }
}
