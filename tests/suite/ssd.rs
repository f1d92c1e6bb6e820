//! Mamba-2 SSD on the GPU (chunked) against the f64 step-by-step recurrence (reference::ssd):
//! ragged l, f32 and f16 storage (native and packed), strong decays, l past lavapipe's loop
//! limit, two calls through the state (also recorded into one submission), split passes, bad
//! input.
//!
//! Tolerances: normwise max|gpu − ref| / max|ref| ≤ tol, and elementwise
//! |gpu − ref| ≤ tol · (|ref| + rms(ref)) (the rms floor: y = C H cancels to near zero at some
//! t, where no relative bound can hold); f32 tol 1e-5, f16 2e-3.

use crate::common;

use common::*;
use longseq::reference::ssd::{ssd_ref, ssd_ref_varlen, SsdDims, SsdRef};
use longseq::schedule::Schedule;
use longseq::ssm::{record_ssd, ssd, ssd_into, SsdInputs};
use longseq::types::batch::CuSeqlens;
use longseq::{Context, Element, Error, Tensor};
use rand::rngs::StdRng;
use rand::Rng;

/// How the log-decays are drawn.
#[derive(Clone, Copy)]
enum Decay {
    /// A in [−1, −0.01].
    Usual,
    /// A in [−30, 0]: most steps forget everything.
    Strong,
    /// A in [−0.01, −0.001]: the state carries across thousands of steps (many chunks).
    Slow,
}

/// Host inputs in f64, rounded to the storage dtype T (the initial state to f32).
struct Host {
    dims: SsdDims,
    x: Vec<f64>,
    a: Vec<f64>,
    b: Vec<f64>,
    c: Vec<f64>,
    h0: Option<Vec<f64>>,
}

fn uni(g: &mut StdRng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| g.random_range(lo..hi)).collect()
}

fn dims(batch: usize, len: usize, heads: usize, head_dim: usize, state: usize) -> SsdDims {
    SsdDims {
        batch,
        len,
        heads,
        head_dim,
        state,
    }
}

impl Host {
    fn new<T: Element>(d: SsdDims, decay: Decay, init: bool, seed: u64) -> Self {
        let mut g = rng(seed);
        let q = |v: Vec<f32>| -> Vec<f64> {
            v.into_iter()
                .map(|x| T::from_f64(x as f64).to_f64())
                .collect()
        };
        let tokens = d.batch * d.len * d.heads;
        let x = q(randn(&mut g, tokens * d.head_dim, 1.0));
        let (lo, hi) = match decay {
            Decay::Usual => (-1.0, -0.01),
            Decay::Strong => (-30.0, 0.0),
            Decay::Slow => (-0.01, -0.001),
        };
        let a = uni(&mut g, tokens, lo, hi);
        let a = a.into_iter().map(|v| T::from_f64(v).to_f64()).collect();
        let b = q(randn(&mut g, tokens * d.state, 1.0));
        let c = q(randn(&mut g, tokens * d.state, 1.0));
        let st = d.batch * d.heads * d.state * d.head_dim;
        let h0 = init.then(|| randn(&mut g, st, 1.0).into_iter().map(f64::from).collect());
        Host {
            dims: d,
            x,
            a,
            b,
            c,
            h0,
        }
    }

    fn reference(&self) -> (Vec<f64>, Vec<f64>) {
        let r = SsdRef {
            x: &self.x,
            a: &self.a,
            b: &self.b,
            c: &self.c,
            initial_state: self.h0.as_deref(),
        };
        ssd_ref(self.dims, &r).unwrap()
    }

    /// Steps [lo, hi) of every input (the initial state left out).
    fn steps(&self, lo: usize, hi: usize) -> Host {
        let d = self.dims;
        let cut = |v: &[f64], per: usize| -> Vec<f64> {
            let row = d.len * d.heads * per;
            (0..d.batch)
                .flat_map(|b| {
                    v[b * row + lo * d.heads * per..b * row + hi * d.heads * per].to_vec()
                })
                .collect()
        };
        Host {
            dims: SsdDims { len: hi - lo, ..d },
            x: cut(&self.x, d.head_dim),
            a: cut(&self.a, 1),
            b: cut(&self.b, d.state),
            c: cut(&self.c, d.state),
            h0: None,
        }
    }
}

/// The host inputs as tensors on one context.
struct Dev<T: Element> {
    t: [Tensor<T>; 4],
    h0: Option<Tensor<f32>>,
}

impl<T: Element> Dev<T> {
    fn new(ctx: &Context, h: &Host) -> Self {
        Self::new_states(ctx, h, h.dims.batch)
    }

    /// With `slots` initial states (N with cu_seqlens).
    fn new_states(ctx: &Context, h: &Host, slots: usize) -> Self {
        let d = h.dims;
        let up = |v: &[f64], s: &[usize]| {
            let v: Vec<T> = v.iter().map(|&x| T::from_f64(x)).collect();
            Tensor::from_slice(ctx, &v, s).unwrap()
        };
        let (b, l, hh, p, n) = (d.batch, d.len, d.heads, d.head_dim, d.state);
        let h0 = h.h0.as_ref().map(|v| {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            Tensor::from_slice(ctx, &v, &[slots, hh, n, p]).unwrap()
        });
        Dev {
            t: [
                up(&h.x, &[b, l, hh, p]),
                up(&h.a, &[b, l, hh]),
                up(&h.b, &[b, l, hh, n]),
                up(&h.c, &[b, l, hh, n]),
            ],
            h0,
        }
    }

    fn inputs(&self) -> SsdInputs<'_, T> {
        let [x, a, b, c] = &self.t;
        SsdInputs {
            initial_state: self.h0.as_ref(),
            ..SsdInputs::new(x, a, b, c)
        }
    }
}

fn rms(w: &[f64]) -> f64 {
    (w.iter().map(|x| x * x).sum::<f64>() / w.len() as f64).sqrt()
}

/// Normwise and elementwise check (see the file's doc).
fn check(label: &str, got: &[f64], want: &[f64], tol: f64) {
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

/// GPU into NaN-poisoned outputs vs the reference; panics past `tol`.
fn case<T: Element>(ctx: &Context, d: SsdDims, decay: Decay, init: bool, seed: u64, tol: f64) {
    let h = Host::new::<T>(d, decay, init, seed);
    let dev = Dev::<T>::new(ctx, &h);
    let y = Tensor::<T>::nan(ctx, &[d.batch, d.len, d.heads, d.head_dim]).unwrap();
    let last = Tensor::<f32>::nan(ctx, &[d.batch, d.heads, d.state, d.head_dim]).unwrap();
    ssd_into(ctx, &dev.inputs(), &y, &last).unwrap();
    let (want, want_last) = h.reference();
    let label = format!("{:?} {d:?}", T::DTYPE);
    check(
        &format!("{label} Y"),
        &to_f64(&y.to_vec(ctx).unwrap()),
        &want,
        tol,
    );
    let got_last = to_f64(&last.to_vec(ctx).unwrap());
    check(&format!("{label} final_state"), &got_last, &want_last, tol);
}

#[test]
fn f32_ragged_lengths_match_the_recurrence() {
    for (i, len) in [1usize, 63, 64, 65, 1000, 4097].into_iter().enumerate() {
        let init = i % 2 == 0;
        case::<f32>(
            ctx(),
            dims(2, len, 3, 5, 4),
            Decay::Usual,
            init,
            i as u64,
            TOL_F32,
        );
    }
}

/// Packed sequences (b = 1) into NaN-poisoned outputs, each from its own initial state, vs the
/// per-sequence references; Y past the last offset stays NaN (untouched).
fn varlen_case<T: Element>(
    ctx: &Context,
    d: SsdDims,
    offs: &[usize],
    decay: Decay,
    seed: u64,
    tol: f64,
) {
    let nseq = offs.len() - 1;
    let mut h = Host::new::<T>(d, decay, false, seed);
    let mut g = rng(seed + 1000);
    let st = d.heads * d.state * d.head_dim;
    let h0: Vec<f64> = randn(&mut g, nseq * st, 1.0)
        .into_iter()
        .map(f64::from)
        .collect();
    h.h0 = Some(h0.clone());
    let dev = Dev::<T>::new_states(ctx, &h, nseq);
    let cu = CuSeqlens::new(
        "t",
        &offs.iter().map(|&o| o as i64).collect::<Vec<_>>(),
        d.len,
    )
    .unwrap();
    let x = SsdInputs {
        cu_seqlens: Some(&cu),
        ..dev.inputs()
    };
    let y = Tensor::<T>::nan(ctx, &[1, d.len, d.heads, d.head_dim]).unwrap();
    let last = Tensor::<f32>::nan(ctx, &[nseq, d.heads, d.state, d.head_dim]).unwrap();
    ssd_into(ctx, &x, &y, &last).unwrap();
    let r = SsdRef {
        x: &h.x,
        a: &h.a,
        b: &h.b,
        c: &h.c,
        initial_state: Some(&h0),
    };
    let (want, want_last) = ssd_ref_varlen(d, offs, &r).unwrap();
    let label = format!("{:?} {d:?} cu {offs:?}", T::DTYPE);
    let got = to_f64(&y.to_vec(ctx).unwrap());
    let end = offs[nseq] * d.heads * d.head_dim;
    assert!(
        got[end..].iter().all(|v| v.is_nan()),
        "{label}: Y past the last offset was written"
    );
    check(&format!("{label} Y"), &got[..end], &want[..end], tol);
    let got_last = to_f64(&last.to_vec(ctx).unwrap());
    check(&format!("{label} final_state"), &got_last, &want_last, tol);
}

#[test]
fn cu_seqlens_each_sequence_from_its_own_state() {
    let cu = [0, 15, 100, 300, 1200, 2000];
    let d = dims(1, 2000, 3, 5, 4);
    varlen_case::<f32>(ctx(), d, &cu, Decay::Usual, 90, TOL_F32);
    varlen_case::<f32>(ctx(), d, &cu, Decay::Strong, 91, TOL_F32);
    varlen_case::<half::f16>(ctx(), d, &cu, Decay::Usual, 92, TOL_F16);
    varlen_case::<half::f16>(ctx_packed(), d, &cu, Decay::Usual, 93, TOL_F16);
    // An empty sequence (its final state is its initial state) and tokens past the last offset,
    // which stay NaN also with packed f16 (its output is staged from the tensor's values).
    let d = dims(1, 2050, 2, 37, 3);
    let cu = [0, 7, 7, 2000];
    varlen_case::<half::f16>(ctx_packed(), d, &cu, Decay::Slow, 95, TOL_F16);
    varlen_case::<f32>(
        ctx_gpu_tiles(),
        d,
        &[0, 7, 7, 2000],
        Decay::Slow,
        94,
        TOL_F32,
    );
}

#[test]
fn head_dim_past_one_register_tile() {
    // p = 37: two column blocks of 32, the last ragged; n = 9.
    case::<f32>(
        ctx(),
        dims(1, 300, 2, 37, 9),
        Decay::Usual,
        true,
        10,
        TOL_F32,
    );
}

#[test]
fn f16_storage_native_and_packed() {
    for (i, len) in [1usize, 63, 1000].into_iter().enumerate() {
        let d = dims(2, len, 3, 5, 4);
        case::<half::f16>(ctx(), d, Decay::Usual, true, 20 + i as u64, TOL_F16);
        case::<half::f16>(ctx_packed(), d, Decay::Usual, true, 30 + i as u64, TOL_F16);
    }
}

#[test]
fn strong_decays_neither_overflow_nor_nan() {
    let d = dims(2, 1000, 3, 6, 5);
    case::<f32>(ctx(), d, Decay::Strong, true, 40, TOL_F32);
    case::<half::f16>(ctx(), d, Decay::Strong, true, 41, TOL_F16);
    case::<half::f16>(ctx_packed(), d, Decay::Strong, true, 42, TOL_F16);
}

#[test]
fn both_tile_families_f32_and_f16_with_and_without_shader_f16() {
    // SSD has no tiles of its own: the GPU family (forced; lavapipe picks the CPU one) gives the
    // same results, f16 stored natively and packed.
    let d = dims(2, 300, 3, 5, 4);
    case::<f32>(ctx_gpu_tiles(), d, Decay::Usual, true, 200, TOL_F32);
    case::<half::f16>(ctx_gpu_tiles(), d, Decay::Usual, true, 201, TOL_F16);
    case::<half::f16>(ctx_gpu_tiles_packed(), d, Decay::Usual, true, 202, TOL_F16);
}

#[test]
fn length_past_the_invocation_loop_limit() {
    // 65537 steps: 1025 chunks, two levels of the carry scan; slow decay so the carries matter.
    let d = dims(1, 65_537, 2, 3, 2);
    case::<f32>(ctx(), d, Decay::Slow, true, 50, TOL_F32);
    case::<f32>(ctx(), d, Decay::Usual, false, 51, TOL_F32);
}

#[test]
fn passes_split_across_batches() {
    // Bindings capped at 64 KiB: one batch of X (700 · 2 · 6 f32) is 33.6 kB, a pass per batch.
    let c = ctx_small_bindings(64 * 1024);
    case::<f32>(&c, dims(3, 700, 2, 6, 4), Decay::Usual, true, 60, TOL_F32);
}

#[test]
fn two_calls_through_the_state_equal_one() {
    let c = ctx();
    let (len, cut) = (1000, 357);
    let d = dims(2, len, 3, 5, 4);
    let h = Host::new::<f32>(d, Decay::Slow, true, 80);
    let dev = Dev::<f32>::new(c, &h);
    let (y, last) = ssd(c, &dev.inputs()).unwrap();
    let (d1, d2) = (
        Dev::<f32>::new(c, &h.steps(0, cut)),
        Dev::<f32>::new(c, &h.steps(cut, len)),
    );
    let mut x1 = d1.inputs();
    x1.initial_state = dev.h0.as_ref();
    let (y1, s1) = ssd(c, &x1).unwrap();
    let mut x2 = d2.inputs();
    x2.initial_state = Some(&s1);
    let (y2, s2) = ssd(c, &x2).unwrap();
    // The same two calls recorded into one submission: the second reads the first's state.
    let nan = |t: &Tensor<f32>| Tensor::<f32>::nan(c, t.shape()).unwrap();
    let (r1, rs1, r2, rs2) = (nan(&y1), nan(&s1), nan(&y2), nan(&s2));
    let mut sch = Schedule::new(c);
    record_ssd(&mut sch, &x1, &r1, &rs1).unwrap();
    x2.initial_state = Some(&rs1);
    record_ssd(&mut sch, &x2, &r2, &rs2).unwrap();
    sch.submit();
    for (a, b) in [(&r1, &y1), (&rs1, &s1), (&r2, &y2), (&rs2, &s2)] {
        assert_eq!(a.to_vec(c).unwrap(), b.to_vec(c).unwrap());
    }
    // Per batch, the first call's steps then the second's.
    let row = |n: usize| n * d.heads * d.head_dim;
    let (y1, y2) = (
        to_f64(&y1.to_vec(c).unwrap()),
        to_f64(&y2.to_vec(c).unwrap()),
    );
    let joined: Vec<f64> = (0..d.batch)
        .flat_map(|b| {
            let a = y1[b * row(cut)..(b + 1) * row(cut)].iter();
            a.chain(&y2[b * row(len - cut)..(b + 1) * row(len - cut)])
                .copied()
        })
        .collect();
    let y = to_f64(&y.to_vec(c).unwrap());
    check("split Y", &joined, &y, TOL_F32);
    let (s2, last) = (
        to_f64(&s2.to_vec(c).unwrap()),
        to_f64(&last.to_vec(c).unwrap()),
    );
    check("split state", &s2, &last, TOL_F32);
    let (want, want_last) = h.reference();
    check("split Y vs reference", &joined, &want, TOL_F32);
    check("split state vs reference", &s2, &want_last, TOL_F32);
}

#[test]
fn bad_input_is_a_typed_error_and_inputs_stay_unmodified() {
    let c = ctx();
    let d = dims(2, 10, 3, 4, 5);
    let h = Host::new::<f32>(d, Decay::Usual, true, 90);
    let dev = Dev::<f32>::new(c, &h);
    let t = |s: &[usize]| Tensor::from_slice(c, &vec![0.5f32; s.iter().product()], s).unwrap();
    let (wrong_l, wrong_a, wrong_n) = (t(&[2, 9, 3, 4]), t(&[2, 10, 2]), t(&[2, 10, 3, 6]));
    let (rank3, wrong_state) = (t(&[2, 10, 3]), t(&[2, 3, 4, 4]));
    let shape_err = |x: SsdInputs<'_, f32>, name: &str| match ssd(c, &x) {
        Err(Error::Shape { name: n, .. }) => assert_eq!(n, name),
        other => panic!("{name}: expected a shape error, got {:?}", other.err()),
    };
    shape_err(
        SsdInputs {
            x: &rank3,
            ..dev.inputs()
        },
        "X",
    );
    shape_err(
        SsdInputs {
            a: &wrong_a,
            ..dev.inputs()
        },
        "A",
    );
    shape_err(
        SsdInputs {
            b: &wrong_l,
            ..dev.inputs()
        },
        "B",
    );
    shape_err(
        SsdInputs {
            c: &wrong_n,
            ..dev.inputs()
        },
        "C",
    );
    let x = SsdInputs {
        initial_state: Some(&wrong_state),
        ..dev.inputs()
    };
    shape_err(x, "initial_state");
    let x = dev.inputs();
    let y = Tensor::<f32>::nan(c, &[2, 10, 3, 4]).unwrap();
    let h0 = dev.h0.as_ref().unwrap();
    assert!(matches!(
        ssd_into(c, &x, &y, h0),
        Err(Error::InvalidArgument { .. })
    ));
    let last = Tensor::<f32>::nan(c, &[2, 3, 5, 4]).unwrap();
    assert!(matches!(
        ssd_into(c, &x, &wrong_l, &last),
        Err(Error::Shape { name: "out", .. })
    ));
    assert!(matches!(
        ssd_into(c, &x, &y, &wrong_state),
        Err(Error::Shape {
            name: "final_state",
            ..
        })
    ));
    ssd_into(c, &x, &y, &last).unwrap();
    assert_eq!(to_f64(&dev.t[0].to_vec(c).unwrap()), h.x);
    assert_eq!(to_f64(&dev.t[1].to_vec(c).unwrap()), h.a);
    assert_eq!(to_f64(&h0.to_vec(c).unwrap()), h.h0.clone().unwrap());
}
