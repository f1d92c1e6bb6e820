//! Issue 14 for Performer attention (FAVOR+): `[B, L, H, D]` layouts, packed sequences (fla's
//! `cu_seqlens`) and, for causal positive features, the state in and out, on the GPU
//! (`attention::favor_attention_batch*`) against the per-sequence f64 reference
//! (`reference::attention::favor_attention_batch`): outputs poisoned with NaN (tokens past the
//! last offset must stay NaN), fla's shapes, f32, native and packed f16, two calls = one call,
//! and bad input as typed errors.

use crate::common;

use common::*;
use longseq::attention::linear::check_gqa;
use longseq::attention::{
    draw_omega, favor_attention_batch_into, favor_attention_batch_with_state,
    favor_attention_batch_with_state_into, FavorKind, FavorOptions, FavorState, OmegaDraw,
};
use longseq::reference::attention::favor_attention_batch;
use longseq::types::{CuSeqlens, GqaDims, Layout};
use longseq::{Context, Element, Error, Tensor};

/// fla's varlen offsets, packed in L = 2011 (11 tokens past the last offset).
const CU: [i64; 6] = [0, 15, 100, 300, 1200, 2000];

/// Inputs of one case: q, k, v as `T` and their dims.
struct Case<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    d: GqaDims,
    omega: Vec<f32>,
}

/// (B, L, H, D) in `layout`, M random features (fresh N(0, 0.5²) inputs).
fn case<T: Element>(
    (b, l, h, d): (usize, usize, usize, usize),
    m: usize,
    layout: Layout,
    seed: u64,
) -> Case<T> {
    gqa_case((b, l, h, h, d), m, layout, seed)
}

/// As [`case`] with Hkv kv heads (grouped heads: Hkv divides Hq).
fn gqa_case<T: Element>(
    (b, l, h, hkv, d): (usize, usize, usize, usize, usize),
    m: usize,
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
    let (q, k, v) = (
        make(b * h * l * d),
        make(b * hkv * l * d),
        make(b * hkv * l * d),
    );
    let (s, skv) = (layout.shape(b, h, l, d), layout.shape(b, hkv, l, d));
    let dims = check_gqa("test", &s, &skv, &skv, layout, true).unwrap();
    let omega = draw_omega(m, d, OmegaDraw::OrthogonalChi, seed).unwrap();
    Case {
        q,
        k,
        v,
        d: dims,
        omega,
    }
}

fn tensors<T: Element>(c: &Context, x: &Case<T>) -> ([Tensor<T>; 3], Tensor<f32>) {
    let s = x.d.layout.shape(x.d.batch, x.d.q_heads, x.d.q_len, x.d.dk);
    let skv = x.d.layout.shape(x.d.batch, x.d.kv_heads, x.d.q_len, x.d.dk);
    let t = |v: &[T], s: &[usize]| Tensor::from_slice(c, v, s).unwrap();
    let m = x.omega.len() / x.d.dk;
    let w = Tensor::from_slice(c, &x.omega, &[m, x.d.dk]).unwrap();
    ([t(&x.q, &s), t(&x.k, &skv), t(&x.v, &skv)], w)
}

/// The GPU op into a NaN-poisoned output against the reference.
fn check<T: Element>(c: &Context, x: &Case<T>, cu: Option<&[i64]>, o: &FavorOptions, tol: f64) {
    let cs = cu.map(|cu| CuSeqlens::new("test", cu, x.d.q_len).unwrap());
    let want = favor_attention_batch((&x.q, &x.k, &x.v), &x.d, &x.omega, o, cs.as_ref(), None)
        .unwrap()
        .o;
    let ([q, k, v], w) = tensors(c, x);
    let out = Tensor::<T>::nan(c, &x.d.out_shape).unwrap();
    favor_attention_batch_into(c, (&q, &k, &v), &w, x.d.layout, cs.as_ref(), &out, o).unwrap();
    let got = to_f64(&out.to_vec(c).unwrap());
    let label = format!(
        "{:?} {:?} causal={} B={} L={} H={}/{} D={} cu={:?}",
        x.d.layout, o.kind, o.causal, x.d.batch, x.d.q_len, x.d.q_heads, x.d.kv_heads, x.d.dk, cu
    );
    assert_close_both(&label, &got, &want, tol);
    // Inputs are never modified.
    assert_eq!(to_f64(&q.to_vec(c).unwrap()), to_f64(&x.q));
}

fn positive(causal: bool) -> FavorOptions {
    FavorOptions {
        kind: FavorKind::Positive,
        causal,
    }
}

/// fla's (B, T, H, D) = (1, 63, 1, 64) and (2, 500, 3, 60), both layouts, causal and not.
#[test]
fn fla_shapes_f32() {
    for (i, &shape) in [(1, 63, 1, 64), (2, 500, 3, 60)].iter().enumerate() {
        for layout in [Layout::Bhld, Layout::Blhd] {
            let x = case::<f32>(shape, 72, layout, 10 + i as u64);
            for causal in [false, true] {
                check(ctx(), &x, None, &positive(causal), TOL_F32);
            }
        }
    }
}

/// Grouped heads: GQA (Hq = 4, Hkv = 2) and MQA (Hkv = 1), both layouts, causal and not, with
/// and without fla's offsets, positive and trig features; query head h reads kv head h / (Hq / Hkv).
#[test]
fn grouped_heads_gqa_and_mqa() {
    for (i, hkv) in [2, 1].into_iter().enumerate() {
        for layout in [Layout::Bhld, Layout::Blhd] {
            let x = gqa_case::<f32>((2, 137, 4, hkv, 24), 40, layout, 70 + i as u64);
            for causal in [false, true] {
                check(ctx(), &x, None, &positive(causal), TOL_F32);
            }
            let trig = FavorOptions {
                kind: FavorKind::Trig,
                causal: false,
            };
            check(ctx(), &x, None, &trig, TOL_F32);
            let p = gqa_case::<f32>((1, 2011, 4, hkv, 24), 40, layout, 80 + i as u64);
            check(ctx(), &p, Some(&CU), &positive(true), TOL_F32);
        }
        // The grouped reference equals the ungrouped one on kv heads repeated Hq / Hkv times.
        let x = gqa_case::<f32>((2, 137, 4, hkv, 24), 40, Layout::Bhld, 70 + i as u64);
        let rep = |v: &[f32]| -> Vec<f32> {
            let per = 137 * 24;
            (0..2 * 4)
                .flat_map(|r| {
                    let src = (r / 4) * hkv + (r % 4) / (4 / hkv);
                    v[src * per..][..per].to_vec()
                })
                .collect()
        };
        let s = Layout::Bhld.shape(2, 4, 137, 24);
        let full = check_gqa("test", &s, &s, &s, Layout::Bhld, true).unwrap();
        let (k, v) = (rep(&x.k), rep(&x.v));
        for causal in [false, true] {
            let o = positive(causal);
            let g = favor_attention_batch((&x.q, &x.k, &x.v), &x.d, &x.omega, &o, None, None);
            let f = favor_attention_batch((&x.q, &k, &v), &full, &x.omega, &o, None, None);
            assert_eq!(g.unwrap().o, f.unwrap().o, "Hkv = {hkv}, causal = {causal}");
        }
    }
}

/// (2, 1000, 3, 128), seq-first, causal (the state-carrying path).
#[test]
fn fla_wide_heads_f32() {
    let x = case::<f32>((2, 1000, 3, 128), 130, Layout::Blhd, 31);
    check(ctx(), &x, None, &positive(true), TOL_F32);
}

/// fla's offsets at (H, D) = (3, 60), both layouts, causal and not; tokens past 2000 stay NaN.
#[test]
fn fla_offsets_f32() {
    for layout in [Layout::Bhld, Layout::Blhd] {
        let x = case::<f32>((1, 2011, 3, 60), 64, layout, 40);
        for causal in [false, true] {
            check(ctx(), &x, Some(&CU), &positive(causal), TOL_F32);
        }
    }
}

/// Trigonometric features per sequence (non-causal: its ratio is well conditioned here).
#[test]
fn trig_features_per_sequence() {
    let x = case::<f32>((1, 130, 2, 16), 24, Layout::Blhd, 50);
    let o = FavorOptions {
        kind: FavorKind::Trig,
        causal: false,
    };
    check(ctx(), &x, Some(&[0, 7, 70, 120]), &o, 1e-4);
}

/// f16 storage (f32 arithmetic), native and packed (no SHADER_F16), whole batches and packed
/// sequences (the packed-f16 output is staged from the poisoned tensor: tokens past the last
/// offset stay NaN).
#[test]
fn f16_native_and_packed() {
    let x = case::<half::f16>((1, 2011, 3, 60), 64, Layout::Blhd, 60);
    for causal in [false, true] {
        check(ctx(), &x, Some(&CU), &positive(causal), TOL_F16);
        check(ctx_packed(), &x, Some(&CU), &positive(causal), TOL_F16);
    }
    let y = case::<half::f16>((2, 300, 3, 33), 40, Layout::Blhd, 61);
    check(ctx_packed(), &y, None, &positive(true), TOL_F16);
}

/// Host copy of tokens `[t0, t1)` of a `[B, L, H, D]` (blhd) tensor.
fn tokens<T: Copy>(
    x: &[T],
    (b, l, h, d): (usize, usize, usize, usize),
    (t0, t1): (usize, usize),
) -> Vec<T> {
    (0..b)
        .flat_map(|bi| {
            x[(bi * l + t0) * h * d..(bi * l + t1) * h * d]
                .iter()
                .copied()
        })
        .collect()
}

fn state_f64(c: &Context, st: &FavorState) -> [Vec<f64>; 3] {
    [&st.s, &st.z, &st.m].map(|t| to_f64(&t.to_vec(c).unwrap()))
}

/// A sequence processed in two calls (the second from the first's final state) equals one call,
/// and the final state equals the reference's (S, z and the running key maxima m).
#[test]
fn two_calls_equal_one_call() {
    let (b, l, h, d, l1) = (2, 300, 3, 40, 137);
    let x = case::<f32>((b, l, h, d), 48, Layout::Blhd, 70);
    let c = ctx();
    let o = positive(true);
    let ([q, k, v], w) = tensors(c, &x);
    let (full, st) =
        favor_attention_batch_with_state(c, (&q, &k, &v), &w, Layout::Blhd, None, None, &o)
            .unwrap();
    let full = to_f64(&full.to_vec(c).unwrap());
    let want = favor_attention_batch((&x.q, &x.k, &x.v), &x.d, &x.omega, &o, None, None).unwrap();
    assert_close_both("one call", &full, &want.o, TOL_F32);
    let [s, z, m] = state_f64(c, &st);
    assert_close_both("final S", &s, &want.s, TOL_F32);
    assert_close_both("final z", &z, &want.z, TOL_F32);
    assert_close_both("final m", &m, &want.m, TOL_F32);
    // Two calls: tokens [0, l1) then [l1, l).
    let part = |t0, t1| {
        let sh = [b, t1 - t0, h, d];
        let t = |v: &[f32]| Tensor::from_slice(c, &tokens(v, (b, l, h, d), (t0, t1)), &sh).unwrap();
        (t(&x.q), t(&x.k), t(&x.v))
    };
    let (q1, k1, v1) = part(0, l1);
    let (o1, st1) =
        favor_attention_batch_with_state(c, (&q1, &k1, &v1), &w, Layout::Blhd, None, None, &o)
            .unwrap();
    let (q2, k2, v2) = part(l1, l);
    let out2 = Tensor::<f32>::nan(c, &[b, l - l1, h, d]).unwrap();
    let st2 = favor_attention_batch_with_state_into(
        c,
        (&q2, &k2, &v2),
        &w,
        Layout::Blhd,
        None,
        Some(&st1),
        &out2,
        &o,
    )
    .unwrap();
    let (o1, o2) = (o1.to_vec(c).unwrap(), out2.to_vec(c).unwrap());
    let joined: Vec<f64> = (0..b)
        .flat_map(|bi| {
            let a = &o1[bi * l1 * h * d..][..l1 * h * d];
            let z = &o2[bi * (l - l1) * h * d..][..(l - l1) * h * d];
            a.iter().chain(z).map(|&y| y as f64).collect::<Vec<_>>()
        })
        .collect();
    assert_close_both("two calls", &joined, &want.o, TOL_F32);
    let [s2, z2, m2] = state_f64(c, &st2);
    assert_close_both("two calls: S", &s2, &want.s, TOL_F32);
    assert_close_both("two calls: z", &z2, &want.z, TOL_F32);
    assert_eq!(m2, m, "the running maxima are exact");
}

/// Packed sequences from a random initial state (each sequence its own, an empty sequence
/// returns its initial state) against the reference, both layouts.
#[test]
fn packed_sequences_with_initial_state() {
    let cu: [i64; 6] = [0, 15, 100, 100, 300, 310];
    let (h, d, m) = (3, 33, 40);
    for layout in [Layout::Bhld, Layout::Blhd] {
        let x = case::<f32>((1, 317, h, d), m, layout, 80);
        let c = ctx();
        let n = cu.len() - 1;
        let mut g = rng(81);
        let s0: Vec<f32> = randn(&mut g, n * h * m * d, 1.0);
        let z0: Vec<f32> = randn(&mut g, n * h * m, 1.0)
            .iter()
            .map(|x| 1.0 + x.abs())
            .collect();
        let m0: Vec<f32> = randn(&mut g, n * h * m, 1.0);
        let f = |x: &[f32]| x.iter().map(|&y| y as f64).collect::<Vec<f64>>();
        let init = FavorState {
            s: Tensor::from_slice(c, &s0, &[n, h, m, d]).unwrap(),
            z: Tensor::from_slice(c, &z0, &[n, h, m]).unwrap(),
            m: Tensor::from_slice(c, &m0, &[n, h, m]).unwrap(),
        };
        let cs = CuSeqlens::new("test", &cu, 317).unwrap();
        let o = positive(true);
        let (f0, f1, f2) = (f(&s0), f(&z0), f(&m0));
        let want = favor_attention_batch(
            (&x.q, &x.k, &x.v),
            &x.d,
            &x.omega,
            &o,
            Some(&cs),
            Some((&f0, &f1, &f2)),
        )
        .unwrap();
        let ([q, k, v], w) = tensors(c, &x);
        let out = Tensor::<f32>::nan(c, &x.d.out_shape).unwrap();
        let st = favor_attention_batch_with_state_into(
            c,
            (&q, &k, &v),
            &w,
            layout,
            Some(&cs),
            Some(&init),
            &out,
            &o,
        )
        .unwrap();
        let label = format!("{layout:?}");
        assert_close_both(&label, &to_f64(&out.to_vec(c).unwrap()), &want.o, TOL_F32);
        let [s, z, mm] = state_f64(c, &st);
        assert_close_both("S", &s, &want.s, TOL_F32);
        assert_close_both("z", &z, &want.z, TOL_F32);
        assert_close_both("m", &mm, &want.m, TOL_F32);
        // The initial state is not modified.
        assert_eq!(init.s.to_vec(c).unwrap(), s0);
    }
}

/// Bad input: typed errors, never a panic.
#[test]
fn bad_input_is_a_typed_error() {
    let c = ctx();
    let x = case::<f32>((2, 20, 2, 8), 8, Layout::Blhd, 90);
    let ([q, k, v], w) = tensors(c, &x);
    let cs = CuSeqlens::new("test", &[0, 5, 20], 20).unwrap();
    // B = 2 with packed sequences.
    let r = favor_attention_batch_into(
        c,
        (&q, &k, &v),
        &w,
        Layout::Blhd,
        Some(&cs),
        &q,
        &positive(false),
    );
    assert!(r.is_err());
    let out = Tensor::<f32>::empty(c, &x.d.out_shape).unwrap();
    let r = favor_attention_batch_into(
        c,
        (&q, &k, &v),
        &w,
        Layout::Blhd,
        Some(&cs),
        &out,
        &positive(false),
    );
    assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
    // A state with non-causal attention, and one of the wrong shape.
    let r = favor_attention_batch_with_state(
        c,
        (&q, &k, &v),
        &w,
        Layout::Blhd,
        None,
        None,
        &positive(false),
    );
    assert!(matches!(r, Err(Error::InvalidArgument { .. })));
    let bad = FavorState::empty(c, 1, 2, 8, 8).unwrap();
    let r = favor_attention_batch_with_state(
        c,
        (&q, &k, &v),
        &w,
        Layout::Blhd,
        None,
        Some(&bad),
        &positive(true),
    );
    assert!(
        matches!(
            r,
            Err(Error::Shape {
                name: "initial_state",
                ..
            })
        ),
        "{:?}",
        r.err()
    );
    // Hkv not dividing Hq.
    let k1 = Tensor::<f32>::empty(c, &[2, 20, 3, 8]).unwrap();
    let r = favor_attention_batch_into(
        c,
        (&q, &k1, &k1),
        &w,
        Layout::Blhd,
        None,
        &out,
        &positive(true),
    );
    assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
    // ω of the wrong head dim.
    let w2 = Tensor::<f32>::empty(c, &[8, 7]).unwrap();
    let r = favor_attention_batch_into(
        c,
        (&q, &k, &v),
        &w2,
        Layout::Blhd,
        None,
        &out,
        &positive(true),
    );
    assert!(
        matches!(r, Err(Error::Shape { name: "omega", .. })),
        "{r:?}"
    );
}

/// Issue 11, item 5: a sequence past the storage-binding limit (capped at 256 KiB here) is a
/// `TooLarge` that names the longest L that runs; that L runs and matches the reference. Before,
/// the error named only the binding, not the L that fits, and the plan left out the chunk
/// engine's scratch.
#[test]
fn a_sequence_past_the_binding_limit_names_the_longest_l_that_runs() {
    let c = ctx_small_bindings(256 << 10);
    let (h, d, m) = (2usize, 8usize, 16usize);
    for o in [positive(true), positive(false)] {
        let x = case::<f32>((1, 3000, h, d), m, Layout::Blhd, 77);
        let ([q, k, v], w) = tensors(&c, &x);
        let out = Tensor::<f32>::nan(&c, &x.d.out_shape).unwrap();
        let r = favor_attention_batch_into(&c, (&q, &k, &v), &w, Layout::Blhd, None, &out, &o);
        let Err(Error::TooLarge { what, .. }) = r else {
            panic!("L = 3000 at 256 KiB: {r:?}");
        };
        eprintln!("causal={}: {what}", o.causal);
        let l_max: usize = what
            .split("L = ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no L in {what:?}"));
        assert!((100..3000).contains(&l_max), "{what}");
        let x = case::<f32>((1, l_max, h, d), m, Layout::Blhd, 78);
        check(&c, &x, None, &o, TOL_F32);
    }
}
