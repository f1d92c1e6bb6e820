//! Issue 15, GLA on the GPU over real-world batches: q, k, v, g, o as `[B, L, H, D]` (fla's
//! layout, read through strides in the kernel) and packed sequences (`cu_seqlens`, nothing
//! crossing a boundary, initial state `[N, H, Dk, Dv]` in, final state out), against the f64
//! recurrence (`reference::gla::{gla_ref, gla_ref_varlen}`) on the same rounded values. Outputs
//! are NaN-poisoned first: every covered element must be written and every token past the last
//! offset left NaN. Ragged L, fla's shapes (Dk = Dv = 64) and its cu_seqlens, strong gates (g
//! down to −30), f32 and f16 (with and without SHADER_F16, packed sequences too), passes split
//! across whole batch entries / heads, decode steps == the packed chunked form, bad input.
//!
//! Tolerances as tests/suite/gla.rs: normwise max|gpu − ref| / max|ref| ≤ tol and elementwise
//! |gpu − ref| ≤ tol · (|ref| + rms(ref)); f32 1e-5, f16 2e-3.

use crate::common;

use common::*;
use longseq::attention::{gla, gla_into, gla_step, GlaInputs};
use longseq::reference::gla::{gla_ref, gla_ref_varlen, GlaDims, GlaRef};
use longseq::types::batch::{CuSeqlens, Layout};
use longseq::{Context, Element, Error, Tensor};
use rand::Rng;

const CU: [usize; 6] = [0, 15, 100, 300, 1200, 2000];

/// Batch, heads, L, Dk, Dv.
#[derive(Clone, Copy, Debug)]
struct Sz {
    b: usize,
    h: usize,
    l: usize,
    dk: usize,
    dv: usize,
}

fn sz(b: usize, h: usize, l: usize, dk: usize, dv: usize) -> Sz {
    Sz { b, h, l, dk, dv }
}

/// Inputs in f64 `[B, H, L, D]`, rounded to T; `h0` (f32-rounded) for `slots` states.
struct Host {
    s: Sz,
    x: [Vec<f64>; 4],
    h0: Option<Vec<f64>>,
}

impl Host {
    /// g in [`g_lo`, 0).
    fn new<T: Element>(s: Sz, g_lo: f64, slots: Option<usize>, seed: u64) -> Self {
        let mut r = rng(seed);
        let round = |v: Vec<f32>| -> Vec<f64> {
            v.into_iter()
                .map(|x| T::from_f64(x as f64).to_f64())
                .collect()
        };
        let nk = s.b * s.h * s.l * s.dk;
        let q = round(randn(&mut r, nk, 1.0));
        let k = round(randn(&mut r, nk, 1.0));
        let v = round(randn(&mut r, s.b * s.h * s.l * s.dv, 1.0));
        let g = (0..nk)
            .map(|_| T::from_f64(r.random_range(g_lo..-1e-3)).to_f64())
            .collect();
        let h0 = slots.map(|n| {
            let v = randn(&mut r, n * s.h * s.dk * s.dv, 1.0);
            v.into_iter().map(f64::from).collect()
        });
        Host {
            s,
            x: [q, k, v, g],
            h0,
        }
    }

    fn gref(&self) -> GlaRef<'_> {
        let [q, k, v, g] = &self.x;
        GlaRef {
            q,
            k,
            v,
            g,
            initial_state: self.h0.as_deref(),
            scale: None,
        }
    }

    fn dims(&self) -> GlaDims {
        let s = self.s;
        GlaDims {
            rows: s.b * s.h,
            len: s.l,
            dk: s.dk,
            dv: s.dv,
        }
    }

    /// `(o: [B, H, L, Dv], final_state)`, over `cu` when given.
    fn reference(&self, cu: Option<&[usize]>) -> (Vec<f64>, Vec<f64>) {
        match cu {
            Some(cu) => gla_ref_varlen(self.dims(), cu, &self.gref()).unwrap(),
            None => gla_ref(self.dims(), &self.gref()).unwrap(),
        }
    }
}

/// `[B, H, L, d]` ↔ `lay` (`to`: into `lay`).
fn permute(x: &[f64], s: Sz, d: usize, lay: Layout, to: bool) -> Vec<f64> {
    let st = lay.strides(s.h, s.l, d);
    let mut out = vec![0.0; x.len()];
    for b in 0..s.b {
        for h in 0..s.h {
            for t in 0..s.l {
                let (p, q) = ((((b * s.h) + h) * s.l + t) * d, st.index(b, h, t, 0));
                let (dst, src) = if to { (q, p) } else { (p, q) };
                out[dst..][..d].copy_from_slice(&x[src..][..d]);
            }
        }
    }
    out
}

/// The host inputs as `lay` tensors on `c`.
struct Dev<T: Element> {
    t: [Tensor<T>; 4],
    h0: Option<Tensor<f32>>,
    lay: Layout,
}

impl<T: Element> Dev<T> {
    fn new(c: &Context, h: &Host, lay: Layout) -> Self {
        let s = h.s;
        let dims = [s.dk, s.dk, s.dv, s.dk];
        let t = std::array::from_fn(|i| {
            let x: Vec<T> = permute(&h.x[i], s, dims[i], lay, true)
                .into_iter()
                .map(T::from_f64)
                .collect();
            Tensor::from_slice(c, &x, &lay.shape(s.b, s.h, s.l, dims[i])).unwrap()
        });
        let h0 = h.h0.as_ref().map(|v| {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            let n = v.len() / (s.h * s.dk * s.dv);
            Tensor::from_slice(c, &v, &[n, s.h, s.dk, s.dv]).unwrap()
        });
        Dev { t, h0, lay }
    }

    fn inputs<'a>(&'a self, cu: Option<&'a CuSeqlens>) -> GlaInputs<'a, T> {
        let [q, k, v, g] = &self.t;
        GlaInputs {
            initial_state: self.h0.as_ref(),
            layout: self.lay,
            cu_seqlens: cu,
            ..GlaInputs::new(q, k, v, g)
        }
    }
}

fn rms(w: &[f64]) -> f64 {
    (w.iter().map(|x| x * x).sum::<f64>() / w.len().max(1) as f64).sqrt()
}

/// Finite, normwise and elementwise (see the file's doc).
fn check(label: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{label}");
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{label}: non-finite output"
    );
    assert_close(label, got, want, tol);
    let s = rms(want);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (w.abs() + s),
            "{label}: element {i}: gpu {g} vs ref {w} (tol {tol:.0e}, rms {s:.3e})"
        );
    }
}

/// The GPU into NaN-poisoned o and final_state, in `lay`, over `cu` (B = 1) when given, against
/// the reference: tokens inside the sequences match, tokens past the last offset stay NaN.
fn case<T: Element>(c: &Context, h: &Host, lay: Layout, cu: Option<&[usize]>, tol: f64) {
    let s = h.s;
    let dev = Dev::<T>::new(c, h, lay);
    let cs = cu.map(|o| {
        let o: Vec<i64> = o.iter().map(|&x| x as i64).collect();
        CuSeqlens::new("test", &o, s.l).unwrap()
    });
    let slots = cu.map_or(s.b, |o| o.len() - 1);
    let o = Tensor::<T>::nan(c, &lay.shape(s.b, s.h, s.l, s.dv)).unwrap();
    let last = Tensor::<f32>::nan(c, &[slots, s.h, s.dk, s.dv]).unwrap();
    gla_into(c, &dev.inputs(cs.as_ref()), &o, &last).unwrap();
    let (want, want_last) = h.reference(cu);
    let got = permute(&to_f64(&o.to_vec(c).unwrap()), s, s.dv, lay, false);
    let end = cu.map_or(s.l, |o| o[o.len() - 1]);
    let (mut g, mut w) = (Vec::new(), Vec::new());
    for r in 0..s.b * s.h {
        let row = r * s.l * s.dv;
        g.extend_from_slice(&got[row..][..end * s.dv]);
        w.extend_from_slice(&want[row..][..end * s.dv]);
        let past = &got[row + end * s.dv..row + s.l * s.dv];
        assert!(
            past.iter().all(|x| x.is_nan()),
            "{s:?}: o past the end written"
        );
    }
    let label = format!("{:?} {} {s:?} cu {}", T::DTYPE, lay.name(), cu.is_some());
    check(&format!("{label} o"), &g, &w, tol);
    let got_last = to_f64(&last.to_vec(c).unwrap());
    check(&format!("{label} final_state"), &got_last, &want_last, tol);
}

#[test]
fn blhd_ragged_lengths_match_the_recurrence() {
    for (i, l) in [1usize, 63, 65, 1000, 4097].into_iter().enumerate() {
        let s = sz(2, 3, l, 5, 4);
        let h = Host::new::<f32>(s, -1.0, (i % 2 == 0).then_some(2), i as u64);
        case::<f32>(ctx(), &h, Layout::Blhd, None, TOL_F32);
    }
}

#[test]
fn packed_sequences_match_per_sequence_runs_in_both_layouts() {
    // fla's shapes: H = 4, Dk = Dv = 64 over its cu_seqlens, one initial state per sequence; L
    // past the last offset, whose tokens must stay untouched.
    let s = sz(1, 4, 2100, 64, 64);
    let h = Host::new::<f32>(s, -1.0, Some(CU.len() - 1), 100);
    for lay in [Layout::Blhd, Layout::Bhld] {
        case::<f32>(ctx(), &h, lay, Some(&CU), TOL_F32);
    }
}

#[test]
fn packed_ragged_and_empty_sequences() {
    // Lengths 1, 63, 0, 65, 1000 and an L past the end; Dk, Dv past one register block.
    let cu = [0usize, 1, 64, 64, 129, 1129];
    let s = sz(1, 3, 1200, 37, 70);
    for (i, lay) in [Layout::Blhd, Layout::Bhld].into_iter().enumerate() {
        let init = (i == 0).then_some(cu.len() - 1);
        let h = Host::new::<f32>(s, -1.0, init, 110 + i as u64);
        case::<f32>(ctx(), &h, lay, Some(&cu), TOL_F32);
    }
}

#[test]
fn f16_blhd_and_packed_native_and_without_shader_f16() {
    let s = sz(2, 2, 1000, 5, 4);
    let h = Host::new::<half::f16>(s, -1.0, Some(2), 120);
    case::<half::f16>(ctx(), &h, Layout::Blhd, None, TOL_F16);
    case::<half::f16>(ctx_packed(), &h, Layout::Blhd, None, TOL_F16);
    let s = sz(1, 2, 2000, 16, 8);
    let h = Host::new::<half::f16>(s, -1.0, Some(CU.len() - 1), 121);
    for lay in [Layout::Blhd, Layout::Bhld] {
        case::<half::f16>(ctx(), &h, lay, Some(&CU), TOL_F16);
    }
    // Without SHADER_F16 the f16 output is staged from the poisoned tensor: the 11 tokens past
    // the last offset stay NaN.
    let h = Host::new::<half::f16>(sz(1, 2, 2011, 16, 8), -1.0, Some(CU.len() - 1), 122);
    for lay in [Layout::Blhd, Layout::Bhld] {
        case::<half::f16>(ctx_packed(), &h, lay, Some(&CU), TOL_F16);
    }
}

#[test]
fn strong_gates_neither_overflow_nor_nan() {
    let s = sz(2, 2, 1000, 6, 5);
    let h = Host::new::<f32>(s, -30.0, Some(2), 130);
    case::<f32>(ctx(), &h, Layout::Blhd, None, TOL_F32);
    let h16 = Host::new::<half::f16>(s, -30.0, Some(2), 131);
    case::<half::f16>(ctx(), &h16, Layout::Blhd, None, TOL_F16);
    case::<half::f16>(ctx_packed(), &h16, Layout::Blhd, None, TOL_F16);
    let s = sz(1, 2, 2000, 8, 8);
    let h = Host::new::<f32>(s, -30.0, Some(CU.len() - 1), 132);
    case::<f32>(ctx(), &h, Layout::Blhd, Some(&CU), TOL_F32);
}

#[test]
fn passes_split_across_whole_batch_entries_and_heads() {
    // Bindings capped at 64 KiB: a (batch, head) row's segment sums (800 · 2 · 8 B) and v
    // (800 · 4 f32) are 12.8 kB, so a pass takes 5 rows: one [B, L, H, D] entry of 3 heads, or 5
    // of the 7 heads of the packed [1, 7, L, D] and then the other 2.
    let c = ctx_small_bindings(64 * 1024);
    let h = Host::new::<f32>(sz(3, 3, 800, 2, 4), -1.0, Some(3), 140);
    case::<f32>(&c, &h, Layout::Blhd, None, TOL_F32);
    let cu = [0usize, 100, 350, 790];
    let h = Host::new::<f32>(sz(1, 7, 800, 2, 4), -1.0, Some(3), 141);
    case::<f32>(&c, &h, Layout::Bhld, Some(&cu), TOL_F32);
}

#[test]
fn decode_steps_equal_the_packed_chunked_form() {
    // Chunked (packed, blhd) == the f64 recurrence (in `case`) == decode steps from each
    // sequence's initial state.
    let c = ctx();
    let cu = [0usize, 3, 70, 75];
    let s = sz(1, 2, 75, 5, 4);
    let h = Host::new::<f32>(s, -1.0, Some(cu.len() - 1), 150);
    case::<f32>(c, &h, Layout::Blhd, Some(&cu), TOL_F32);
    let dev = Dev::<f32>::new(c, &h, Layout::Blhd);
    let cs = CuSeqlens::new("test", &cu.map(|x| x as i64), s.l).unwrap();
    let (o, last) = gla(c, &dev.inputs(Some(&cs))).unwrap();
    let o = permute(&to_f64(&o.to_vec(c).unwrap()), s, s.dv, Layout::Blhd, false);
    let last = to_f64(&last.to_vec(c).unwrap());
    let sn = s.h * s.dk * s.dv;
    let h0 = h.h0.as_ref().unwrap();
    let (mut steps, mut states) = (vec![0.0; o.len()], Vec::new());
    for w in cu.windows(2) {
        let i = states.len() / sn;
        let st: Vec<f32> = h0[i * sn..][..sn].iter().map(|&x| x as f32).collect();
        let mut state = Tensor::from_slice(c, &st, &[1, s.h, s.dk, s.dv]).unwrap();
        for t in w[0]..w[1] {
            let tok = |x: &[f64], d: usize| -> Tensor<f32> {
                let v: Vec<f32> = (0..s.h)
                    .flat_map(|r| x[(r * s.l + t) * d..][..d].iter().map(|&y| y as f32))
                    .collect();
                Tensor::from_slice(c, &v, &[1, s.h, d]).unwrap()
            };
            let [q, k, v, g] =
                [(0, s.dk), (1, s.dk), (2, s.dv), (3, s.dk)].map(|(j, d)| tok(&h.x[j], d));
            let x = GlaInputs {
                initial_state: Some(&state),
                layout: Layout::Blhd,
                ..GlaInputs::new(&q, &k, &v, &g)
            };
            let (y, next) = gla_step(c, &x).unwrap();
            for (r, row) in y.to_vec(c).unwrap().chunks(s.dv).enumerate() {
                for (j, &val) in row.iter().enumerate() {
                    steps[(r * s.l + t) * s.dv + j] = val as f64;
                }
            }
            state = next;
        }
        states.extend(to_f64(&state.to_vec(c).unwrap()));
    }
    check("decode vs packed chunked o", &steps, &o, TOL_F32);
    check("decode vs packed chunked state", &states, &last, TOL_F32);
}

#[test]
fn bad_batches_are_typed_errors_and_inputs_stay_unmodified() {
    let c = ctx();
    let s = sz(2, 3, 20, 4, 5);
    let h = Host::new::<f32>(s, -1.0, Some(2), 160);
    let dev = Dev::<f32>::new(c, &h, Layout::Blhd);
    let cu = CuSeqlens::new("test", &[0, 7, 20], 20).unwrap();
    let invalid = |x: GlaInputs<'_, f32>, name: &str| match gla(c, &x) {
        Err(Error::InvalidArgument { name: n, .. }) => assert_eq!(n, name),
        other => panic!("{name}: expected InvalidArgument, got {:?}", other.err()),
    };
    // cu_seqlens needs B = 1.
    invalid(dev.inputs(Some(&cu)), "cu_seqlens");
    let h1 = Host::new::<f32>(sz(1, 3, 20, 4, 5), -1.0, Some(1), 161);
    let d1 = Dev::<f32>::new(c, &h1, Layout::Blhd);
    // Offsets past L (built for a longer tensor).
    let long = CuSeqlens::new("test", &[0, 7, 30], 30).unwrap();
    invalid(d1.inputs(Some(&long)), "cu_seqlens");
    // [B, H, Dk, Dv] initial state where [N, H, Dk, Dv] is due.
    match gla(c, &d1.inputs(Some(&cu))) {
        Err(Error::Shape { name, .. }) => assert_eq!(name, "initial_state"),
        other => panic!("expected a shape error, got {:?}", other.err()),
    }
    // The layout decides where H is: [B, L, H, D] tensors read as [B, H, L, D] misfit v.
    let bad_v = Tensor::from_slice(c, &vec![0.5f32; 2 * 20 * 4 * 5], &[2, 20, 4, 5]).unwrap();
    let x = GlaInputs {
        v: &bad_v,
        ..dev.inputs(None)
    };
    assert!(matches!(gla(c, &x), Err(Error::Shape { name: "v", .. })));
    // A decode step takes no packed sequences.
    let q = Tensor::from_slice(c, &[0.5f32; 12], &[1, 3, 4]).unwrap();
    let v = Tensor::from_slice(c, &[0.5f32; 15], &[1, 3, 5]).unwrap();
    let x = GlaInputs {
        cu_seqlens: Some(&cu),
        ..GlaInputs::new(&q, &q, &v, &q)
    };
    assert!(matches!(
        gla_step(c, &x),
        Err(Error::InvalidArgument {
            name: "cu_seqlens",
            ..
        })
    ));
    // A good call leaves its inputs as they were.
    let (o, _) = gla(c, &dev.inputs(None)).unwrap();
    assert_eq!(o.shape(), [2, 20, 3, 5]);
    for (i, d) in [s.dk, s.dk, s.dv, s.dk].into_iter().enumerate() {
        let want = permute(&h.x[i], s, d, Layout::Blhd, true);
        assert_eq!(to_f64(&dev.t[i].to_vec(c).unwrap()), want);
    }
    let h0: Vec<f64> = h.h0.clone().unwrap();
    assert_eq!(to_f64(&dev.h0.as_ref().unwrap().to_vec(c).unwrap()), h0);
}
