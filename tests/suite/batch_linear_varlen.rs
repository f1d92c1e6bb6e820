//! Issue 14, packed variable-length sequences (fla's `cu_seqlens`, B = 1) for linear attention
//! and Lightning on the GPU, against the per-sequence f64 references
//! (`reference::attention::{linear_attention_batch, lightning_attention_varlen}`): outputs
//! poisoned with NaN (tokens past the last offset must stay NaN), both layouts, both tile
//! families, f32 and f16 (native and packed), GQA, a state in and out per
//! sequence (two calls = one call), many short sequences and empty ones.

use crate::common;

use common::*;
use longseq::attention::linear::check_gqa;
use longseq::attention::{
    lightning_attention_varlen_into, lightning_attention_varlen_with_state,
    linear_attention_varlen_into, linear_attention_varlen_with_state, FeatureMap, LightningOptions,
    LinearAttentionOptions, LinearState,
};
use longseq::reference::attention::{lightning_attention_varlen, linear_attention_batch};
use longseq::types::{CuSeqlens, GqaDims, Layout};
use longseq::{Context, Element, Error, Tensor};

/// fla's varlen offsets, packed in L = 2011 (11 tokens past the last offset).
const CU: [i64; 6] = [0, 15, 100, 300, 1200, 2000];

fn opts(feature_map: FeatureMap, causal: bool, layout: Layout) -> LinearAttentionOptions {
    LinearAttentionOptions {
        feature_map,
        causal,
        denominator: matches!(feature_map, FeatureMap::Elu1 | FeatureMap::Relu),
        layout,
        ..Default::default()
    }
}

/// Inputs of one case: q, k, v as `T` (fresh N(0, 0.5²) draws) and their dims.
struct Case<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    d: GqaDims,
}

/// (Hq, Hkv, L, Dk, Dv) with B = 1 in `layout`.
fn case<T: Element>(
    (hq, hkv, l, dk, dv): (usize, usize, usize, usize, usize),
    layout: Layout,
    seed: u64,
) -> Case<T> {
    let mut r = rng(seed);
    let mut make = |n| -> Vec<T> {
        randn(&mut r, n, 0.5)
            .iter()
            .map(|&x| T::from_f64(x as f64))
            .collect()
    };
    let (q, k, v) = (make(hq * l * dk), make(hkv * l * dk), make(hkv * l * dv));
    let (sq, sk, sv) = (
        layout.shape(1, hq, l, dk),
        layout.shape(1, hkv, l, dk),
        layout.shape(1, hkv, l, dv),
    );
    let d = check_gqa("test", &sq, &sk, &sv, layout, false).unwrap();
    Case { q, k, v, d }
}

fn tensors<T: Element>(c: &Context, x: &Case<T>) -> [Tensor<T>; 3] {
    let d = &x.d;
    let (b, hq, hkv, l) = (d.batch, d.q_heads, d.kv_heads, d.q_len);
    let t = |v: &[T], sh: [usize; 4]| Tensor::from_slice(c, v, &sh).unwrap();
    [
        t(&x.q, d.layout.shape(b, hq, l, d.dk)),
        t(&x.k, d.layout.shape(b, hkv, l, d.dk)),
        t(&x.v, d.layout.shape(b, hkv, l, d.dv)),
    ]
}

/// Linear attention over `cu` into a NaN-poisoned output against the reference.
fn check_linear<T: Element>(
    c: &Context,
    x: &Case<T>,
    cu: &[i64],
    o: &LinearAttentionOptions,
    tol: f64,
) {
    let cs = CuSeqlens::new("test", cu, x.d.q_len).unwrap();
    let want = linear_attention_batch((&x.q, &x.k, &x.v), &x.d, o, Some(&cs), None)
        .unwrap()
        .o;
    let [q, k, v] = tensors(c, x);
    let out = Tensor::<T>::nan(c, &x.d.out_shape).unwrap();
    linear_attention_varlen_into(c, &q, &k, &v, &cs, &out, o).unwrap();
    let got = to_f64(&out.to_vec(c).unwrap());
    let label = format!(
        "{:?} {:?} causal={} H={}/{} L={} cu={}",
        o.layout,
        o.feature_map,
        o.causal,
        x.d.q_heads,
        x.d.kv_heads,
        x.d.q_len,
        cu.len() - 1
    );
    // The reference's NaN past the last offset must be the poison the op left there.
    assert_close_both(&label, &got, &want, tol);
}

fn contexts() -> [&'static Context; 2] {
    [ctx(), ctx_gpu_tiles()]
}

/// fla's offsets at (H, D) = (1, 64) and (3, 60), both layouts, causal and not, both families.
#[test]
fn fla_offsets_f32() {
    for (i, &(h, d)) in [(1, 64), (3, 60)].iter().enumerate() {
        for layout in [Layout::Bhld, Layout::Blhd] {
            let x = case::<f32>((h, h, 2011, d, d), layout, 10 + i as u64);
            for causal in [false, true] {
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
                    for c in contexts() {
                        check_linear(c, &x, &CU, &opts(fm, causal, layout), TOL_F32);
                    }
                }
            }
        }
    }
}

/// D = 128 and grouped heads (6 query heads on 2 key/value heads), Dk ≠ Dv.
#[test]
fn wide_heads_and_gqa() {
    for layout in [Layout::Bhld, Layout::Blhd] {
        let x = case::<f32>((3, 3, 2011, 128, 128), layout, 21);
        check_linear(
            ctx(),
            &x,
            &CU,
            &opts(FeatureMap::Elu1, true, layout),
            TOL_F32,
        );
        let x = case::<f32>((6, 2, 311, 24, 40), layout, 22);
        let cu = [0, 7, 7, 60, 61, 300];
        for causal in [false, true] {
            for c in contexts() {
                check_linear(c, &x, &cu, &opts(FeatureMap::Elu1, causal, layout), TOL_F32);
            }
        }
    }
}

/// f16 storage with packed sequences, native and without SHADER_F16 (the packed-f16 output is
/// staged from the poisoned tensor: the tokens past the last offset must stay NaN).
#[test]
fn f16_native_and_packed() {
    for layout in [Layout::Bhld, Layout::Blhd] {
        let x = case::<half::f16>((3, 3, 2011, 60, 60), layout, 31);
        for causal in [false, true] {
            for c in [ctx(), ctx_gpu_tiles(), ctx_packed()] {
                check_linear(c, &x, &CU, &opts(FeatureMap::Elu1, causal, layout), TOL_F16);
            }
        }
    }
}

/// 1000 short sequences: all of length 10 (one run of equal lengths), and lengths 1..=19 with
/// empty ones among them (a run per change of length).
#[test]
fn many_short_sequences() {
    let equal: Vec<i64> = (0..=1000).map(|i| 10 * i).collect();
    let mut r = rng(41);
    let mut mixed = vec![0i64];
    for i in 0..1000 {
        let n = if i % 97 == 0 {
            0
        } else {
            1 + (randn(&mut r, 1, 1.0)[0].abs() * 6.0) as i64 % 19
        };
        mixed.push(mixed.last().unwrap() + n);
    }
    for layout in [Layout::Bhld, Layout::Blhd] {
        for cu in [&equal, &mixed] {
            let l = *cu.last().unwrap() as usize + 5;
            let x = case::<f32>((2, 2, l, 16, 12), layout, 42);
            for causal in [false, true] {
                check_linear(
                    ctx(),
                    &x,
                    cu,
                    &opts(FeatureMap::Elu1, causal, layout),
                    TOL_F32,
                );
            }
        }
    }
}

/// A state in and out per sequence: against the reference from a drawn initial state, and two
/// calls (each sequence split in two, the second call starting from the first's final state)
/// equal one call. Empty sequences return their initial state.
#[test]
fn state_per_sequence_two_calls_equal_one() {
    let c = ctx();
    let cu = [0i64, 15, 15, 100, 300, 377];
    let (h, dk, dv) = (3, 20, 12);
    for layout in [Layout::Bhld, Layout::Blhd] {
        let x = case::<f32>((h, h, 380, dk, dv), layout, 51);
        let o = opts(FeatureMap::Elu1, true, layout);
        let cs = CuSeqlens::new("t", &cu, 380).unwrap();
        let n = cs.count();
        let mut r = rng(52);
        let s0 = randn(&mut r, n * h * dk * dv, 0.3);
        let z0: Vec<f32> = randn(&mut r, n * h * dk, 0.3)
            .iter()
            .map(|x| x.abs())
            .collect();
        let init = LinearState {
            s: Tensor::from_slice(c, &s0, &[n, h, dk, dv]).unwrap(),
            z: Tensor::from_slice(c, &z0, &[n, h, dk]).unwrap(),
        };
        let [q, k, v] = tensors(c, &x);
        let (out, fin) =
            linear_attention_varlen_with_state(c, &q, &k, &v, &cs, Some(&init), &o).unwrap();
        let (s0d, z0d) = (to_f64(&s0), to_f64(&z0));
        let want = linear_attention_batch(
            (&x.q, &x.k, &x.v),
            &x.d,
            &o,
            Some(&cs),
            Some((&s0d[..], &z0d[..])),
        )
        .unwrap();
        let mut got = to_f64(&out.to_vec(c).unwrap());
        // The new output tensor holds 0 past the last offset; the reference marks it NaN.
        for (g, w) in got.iter_mut().zip(&want.o) {
            if w.is_nan() {
                assert_eq!(*g, 0.0, "a token past the last offset was written");
                *g = f64::NAN;
            }
        }
        let label = format!("{layout:?} state");
        assert_close_both(&label, &got, &want.o, TOL_F32);
        assert_close_both(&label, &to_f64(&fin.s.to_vec(c).unwrap()), &want.s, TOL_F32);
        assert_close_both(&label, &to_f64(&fin.z.to_vec(c).unwrap()), &want.z, TOL_F32);
        // Empty sequence 1: final = initial, exactly.
        let fs = fin.s.to_vec(c).unwrap();
        let w = h * dk * dv;
        assert_eq!(&fs[w..2 * w], &s0[w..2 * w]);

        // Two calls: the first `a_i` tokens of each sequence, then the rest.
        let split: Vec<(usize, usize)> = (0..n)
            .map(|i| {
                let r = cs.range(i);
                (r.start, r.start + r.len() / 3)
            })
            .collect();
        let gather = |part: usize| -> (Vec<i64>, Vec<usize>) {
            let mut off = vec![0i64];
            let mut toks = vec![];
            for (i, &(s, m)) in split.iter().enumerate() {
                let t: Vec<usize> = if part == 0 {
                    (s..m).collect()
                } else {
                    (m..cs.range(i).end).collect()
                };
                off.push(off.last().unwrap() + t.len() as i64);
                toks.extend(t);
            }
            (off, toks)
        };
        let pick = |src: &[f32], d: usize, toks: &[usize]| -> Vec<f32> {
            let st = layout.strides(h, 380, d);
            let l2 = toks.len();
            let s2 = layout.strides(h, l2, d);
            let mut y = vec![0f32; h * l2 * d];
            for hh in 0..h {
                for (j, &t) in toks.iter().enumerate() {
                    for e in 0..d {
                        y[s2.index(0, hh, j, e)] = src[st.index(0, hh, t, e)];
                    }
                }
            }
            y
        };
        let mut state = Some(init);
        let mut outs = vec![];
        for part in 0..2 {
            let (off, toks) = gather(part);
            let l2 = toks.len();
            let cu2 = CuSeqlens::new("t", &off, l2).unwrap();
            let t = |src: &[f32], d: usize| {
                Tensor::from_slice(c, &pick(src, d, &toks), &layout.shape(1, h, l2, d)).unwrap()
            };
            let (q2, k2, v2) = (t(&x.q, dk), t(&x.k, dk), t(&x.v, dv));
            let (o2, f2) =
                linear_attention_varlen_with_state(c, &q2, &k2, &v2, &cu2, state.as_ref(), &o)
                    .unwrap();
            outs.push((o2.to_vec(c).unwrap(), toks));
            state = Some(f2);
        }
        let full = out.to_vec(c).unwrap();
        let two: Vec<f64> = {
            let mut y = to_f64(&full);
            let st = layout.strides(h, 380, dv);
            for (o2, toks) in &outs {
                let s2 = layout.strides(h, toks.len(), dv);
                for hh in 0..h {
                    for (j, &t) in toks.iter().enumerate() {
                        for e in 0..dv {
                            y[st.index(0, hh, t, e)] = o2[s2.index(0, hh, j, e)] as f64;
                        }
                    }
                }
            }
            y
        };
        let st = state.unwrap();
        assert_close_both(
            &format!("{layout:?} two calls"),
            &two,
            &to_f64(&full),
            TOL_F32,
        );
        let s1 = to_f64(&fin.s.to_vec(c).unwrap());
        assert_close_both(
            &format!("{layout:?} two calls S"),
            &to_f64(&st.s.to_vec(c).unwrap()),
            &s1,
            TOL_F32,
        );
    }
}

/// Lightning over fla's offsets (ALiBi slopes), both layouts and families, NaN-poisoned; and
/// with a state per sequence.
#[test]
fn lightning_varlen() {
    for layout in [Layout::Bhld, Layout::Blhd] {
        let x = case::<f32>((3, 3, 2011, 60, 60), layout, 61);
        let cs = CuSeqlens::new("t", &CU, 2011).unwrap();
        let slopes = longseq::attention::alibi_slopes(3);
        let lo = LightningOptions {
            layout,
            ..Default::default()
        };
        let (want, want_s) = lightning_attention_varlen(
            (&x.q, &x.k, &x.v),
            &x.d,
            &slopes,
            FeatureMap::Identity,
            Some(&cs),
            None,
        )
        .unwrap();
        for c in contexts() {
            let [q, k, v] = tensors(c, &x);
            let out = Tensor::<f32>::nan(c, &x.d.out_shape).unwrap();
            lightning_attention_varlen_into(c, &q, &k, &v, None, &cs, &out, &lo).unwrap();
            let got = to_f64(&out.to_vec(c).unwrap());
            assert_close_both(&format!("lightning {layout:?}"), &got, &want, TOL_F32);
            let (_, fin) =
                lightning_attention_varlen_with_state(c, &q, &k, &v, None, &cs, None, &lo).unwrap();
            let fs = to_f64(&fin.to_vec(c).unwrap());
            assert_close_both(
                &format!("lightning {layout:?} state"),
                &fs,
                &want_s,
                TOL_F32,
            );
        }
        // f16 without SHADER_F16: the tokens past the last offset keep the poison.
        let xh = case::<half::f16>((3, 3, 2011, 60, 60), layout, 62);
        let (want, _) = lightning_attention_varlen(
            (&xh.q, &xh.k, &xh.v),
            &xh.d,
            &slopes,
            FeatureMap::Identity,
            Some(&cs),
            None,
        )
        .unwrap();
        let c = ctx_packed();
        let [q, k, v] = tensors(c, &xh);
        let out = Tensor::<half::f16>::nan(c, &xh.d.out_shape).unwrap();
        lightning_attention_varlen_into(c, &q, &k, &v, None, &cs, &out, &lo).unwrap();
        let got = to_f64(&out.to_vec(c).unwrap());
        assert_close_both(
            &format!("lightning f16 packed {layout:?}"),
            &got,
            &want,
            TOL_F16,
        );
    }
}

/// Bad packing is a typed error: B ≠ 1, a last offset past L (offsets built for a longer L).
#[test]
fn bad_packing_is_a_typed_error() {
    let c = ctx();
    let x = vec![0.25f32; 2 * 3 * 40 * 8];
    let q = Tensor::from_slice(c, &x, &[2, 3, 40, 8]).unwrap();
    let cu = CuSeqlens::new("t", &[0, 10, 40], 40).unwrap();
    let o = opts(FeatureMap::Elu1, true, Layout::Bhld);
    let e = longseq::attention::linear_attention_varlen(c, &q, &q, &q, &cu, &o)
        .err()
        .unwrap();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let q1 = Tensor::from_slice(c, &x[..3 * 30 * 8], &[1, 3, 30, 8]).unwrap();
    let e = longseq::attention::linear_attention_varlen(c, &q1, &q1, &q1, &cu, &o)
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            Error::InvalidArgument {
                name: "cu_seqlens",
                ..
            }
        ),
        "{e}"
    );
    let lo = LightningOptions::default();
    let e = longseq::attention::lightning_attention_varlen(c, &q, &q, &q, None, &cu, &lo)
        .err()
        .unwrap();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
}

/// NormAttention over fla's offsets and in blhd (no packing), both families, NaN-poisoned, f32
/// and f16 (native and packed), against the per-sequence reference (numerator, then the norm per token).
#[test]
fn norm_attention_layout_and_varlen() {
    use longseq::attention::{norm_attention_batch_into, Affine, Norm, NormAttentionOptions};
    use longseq::reference::attention::norm_attention_batch;
    fn one<T: Element>(
        c: &Context,
        x: &Case<T>,
        cu: Option<&[i64]>,
        o: &NormAttentionOptions,
        tol: f64,
    ) {
        let cs = cu.map(|cu| CuSeqlens::new("t", cu, x.d.q_len).unwrap());
        let none = Affine::default();
        let want = norm_attention_batch((&x.q, &x.k, &x.v), &x.d, &none, o, cs.as_ref()).unwrap();
        let [q, k, v] = tensors(c, x);
        let out = Tensor::<T>::nan(c, &x.d.out_shape).unwrap();
        norm_attention_batch_into(c, &q, &k, &v, &none, x.d.layout, cs.as_ref(), &out, o).unwrap();
        let got = to_f64(&out.to_vec(c).unwrap());
        let label = format!(
            "norm {:?} causal={} packed={}",
            x.d.layout,
            o.causal,
            cu.is_some()
        );
        assert_close_both(&label, &got, &want, tol);
    }
    for layout in [Layout::Bhld, Layout::Blhd] {
        let x = case::<f32>((3, 3, 2011, 60, 60), layout, 71);
        let xh = case::<half::f16>((3, 3, 2011, 60, 60), layout, 72);
        for causal in [false, true] {
            let o = NormAttentionOptions {
                causal,
                norm: Norm::LayerNorm,
                ..Default::default()
            };
            for c in contexts() {
                one(c, &x, Some(&CU), &o, TOL_F32);
                one(c, &xh, Some(&CU), &o, TOL_F16);
            }
            // Without SHADER_F16: the staged output starts from the poison, which stays past 2000.
            one(ctx_packed(), &xh, Some(&CU), &o, TOL_F16);
            if layout == Layout::Blhd {
                one(ctx(), &x, None, &o, TOL_F32);
            }
        }
    }
}
