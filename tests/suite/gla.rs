//! Gated linear attention on the GPU (chunked) against the f64 step-by-step recurrence
//! (reference::gla): ragged L, Dk and Dv past one register block, f32 and f16 storage (native
//! and packed), strong gates (g down to −30 per step), L past lavapipe's loop limit, decode steps
//! == chunked, two calls through the state (also recorded into one submission), split passes,
//! bad input.
//!
//! Tolerances: normwise max|gpu − ref| / max|ref| ≤ tol, and elementwise
//! |gpu − ref| ≤ tol · (|ref| + rms(ref)) (the rms floor: q S cancels to near zero at some t,
//! where no relative bound can hold); f32 tol 1e-5, f16 2e-3.

use crate::common;

use common::*;
use longseq::attention::{gla, gla_into, gla_step, record_gla, GlaInputs};
use longseq::reference::gla::{gla_ref, GlaDims, GlaRef};
use longseq::schedule::Schedule;
use longseq::{Context, Element, Error, Tensor};
use rand::rngs::StdRng;
use rand::Rng;

/// How the log forget gates are drawn.
#[derive(Clone, Copy)]
enum Gates {
    /// g in [−1, −0.001].
    Usual,
    /// g in [−30, 0]: most channels forget everything every step.
    Strong,
    /// g in [−0.01, −0.0001]: the state carries across thousands of steps (many chunks).
    Slow,
}

/// Sizes: batch, heads, L, Dk, Dv.
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

/// Host inputs in f64, rounded to the storage dtype T (the initial state to f32).
struct Host {
    s: Sz,
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    g: Vec<f64>,
    h0: Option<Vec<f64>>,
    scale: Option<f32>,
}

impl Host {
    fn new<T: Element>(s: Sz, gates: Gates, init: bool, seed: u64) -> Self {
        let mut r = rng(seed);
        let q =
            |v: Vec<f64>| -> Vec<f64> { v.into_iter().map(|x| T::from_f64(x).to_f64()).collect() };
        let nrm = |r: &mut StdRng, n: usize| -> Vec<f64> {
            randn(r, n, 1.0).into_iter().map(f64::from).collect()
        };
        let rows = s.b * s.h;
        let nk = rows * s.l * s.dk;
        let (lo, hi) = match gates {
            Gates::Usual => (-1.0, -0.001),
            Gates::Strong => (-30.0, 0.0),
            Gates::Slow => (-0.01, -0.0001),
        };
        let (qq, kk, vv) = (
            q(nrm(&mut r, nk)),
            q(nrm(&mut r, nk)),
            q(nrm(&mut r, rows * s.l * s.dv)),
        );
        let g = q((0..nk).map(|_| r.random_range(lo..hi)).collect());
        let h0 = init.then(|| {
            let v = nrm(&mut r, rows * s.dk * s.dv);
            v.into_iter().map(|x| x as f32 as f64).collect()
        });
        Host {
            s,
            q: qq,
            k: kk,
            v: vv,
            g,
            h0,
            scale: None,
        }
    }

    fn reference(&self) -> (Vec<f64>, Vec<f64>) {
        let s = self.s;
        let dims = GlaDims {
            rows: s.b * s.h,
            len: s.l,
            dk: s.dk,
            dv: s.dv,
        };
        let r = GlaRef {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            g: &self.g,
            initial_state: self.h0.as_deref(),
            scale: self.scale.map(f64::from),
        };
        gla_ref(dims, &r).unwrap()
    }

    /// Steps [lo, hi) of every input (no initial state).
    fn steps(&self, lo: usize, hi: usize) -> Host {
        let s = self.s;
        let cut = |v: &[f64], d: usize| -> Vec<f64> {
            (0..s.b * s.h)
                .flat_map(|r| v[(r * s.l + lo) * d..(r * s.l + hi) * d].to_vec())
                .collect()
        };
        Host {
            s: Sz { l: hi - lo, ..s },
            q: cut(&self.q, s.dk),
            k: cut(&self.k, s.dk),
            v: cut(&self.v, s.dv),
            g: cut(&self.g, s.dk),
            h0: None,
            scale: self.scale,
        }
    }
}

/// The host inputs as tensors on one context; `step` drops the L axis (L must be 1).
struct Dev<T: Element> {
    t: [Tensor<T>; 4],
    h0: Option<Tensor<f32>>,
    scale: Option<f32>,
}

impl<T: Element> Dev<T> {
    fn new(c: &Context, h: &Host, step: bool) -> Self {
        let s = h.s;
        let up = |v: &[f64], d: usize| {
            let v: Vec<T> = v.iter().map(|&x| T::from_f64(x)).collect();
            let shape = if step {
                vec![s.b, s.h, d]
            } else {
                vec![s.b, s.h, s.l, d]
            };
            Tensor::from_slice(c, &v, &shape).unwrap()
        };
        let h0 = h.h0.as_ref().map(|v| {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            Tensor::from_slice(c, &v, &[s.b, s.h, s.dk, s.dv]).unwrap()
        });
        Dev {
            t: [
                up(&h.q, s.dk),
                up(&h.k, s.dk),
                up(&h.v, s.dv),
                up(&h.g, s.dk),
            ],
            h0,
            scale: h.scale,
        }
    }

    fn inputs(&self) -> GlaInputs<'_, T> {
        let [q, k, v, g] = &self.t;
        GlaInputs {
            initial_state: self.h0.as_ref(),
            scale: self.scale,
            ..GlaInputs::new(q, k, v, g)
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
fn case<T: Element>(c: &Context, s: Sz, gates: Gates, init: bool, seed: u64, tol: f64) {
    let h = Host::new::<T>(s, gates, init, seed);
    let dev = Dev::<T>::new(c, &h, false);
    let o = Tensor::<T>::nan(c, &[s.b, s.h, s.l, s.dv]).unwrap();
    let last = Tensor::<f32>::nan(c, &[s.b, s.h, s.dk, s.dv]).unwrap();
    gla_into(c, &dev.inputs(), &o, &last).unwrap();
    let (want, want_last) = h.reference();
    let label = format!("{:?} {s:?}", T::DTYPE);
    check(
        &format!("{label} o"),
        &to_f64(&o.to_vec(c).unwrap()),
        &want,
        tol,
    );
    let got_last = to_f64(&last.to_vec(c).unwrap());
    check(&format!("{label} final_state"), &got_last, &want_last, tol);
}

#[test]
fn f32_ragged_lengths_match_the_recurrence() {
    for (i, l) in [1usize, 63, 64, 65, 1000, 4097].into_iter().enumerate() {
        case::<f32>(
            ctx(),
            sz(2, 2, l, 5, 4),
            Gates::Usual,
            i % 2 == 0,
            i as u64,
            TOL_F32,
        );
    }
}

#[test]
fn dims_past_one_register_block() {
    // Dk = 37: two channel blocks of 32; Dv = 70: two column blocks of 64; both ragged.
    case::<f32>(
        ctx(),
        sz(1, 2, 300, 37, 70),
        Gates::Usual,
        true,
        10,
        TOL_F32,
    );
}

#[test]
fn a_given_scale() {
    let h = {
        let mut h = Host::new::<f32>(sz(1, 2, 100, 6, 3), Gates::Usual, true, 12);
        h.scale = Some(0.7);
        h
    };
    let c = ctx();
    let dev = Dev::<f32>::new(c, &h, false);
    let (o, _) = gla(c, &dev.inputs()).unwrap();
    check(
        "scale 0.7",
        &to_f64(&o.to_vec(c).unwrap()),
        &h.reference().0,
        TOL_F32,
    );
}

#[test]
fn f16_storage_native_and_packed() {
    for (i, l) in [1usize, 63, 1000].into_iter().enumerate() {
        let s = sz(2, 2, l, 5, 4);
        case::<half::f16>(ctx(), s, Gates::Usual, true, 20 + i as u64, TOL_F16);
        case::<half::f16>(ctx_packed(), s, Gates::Usual, true, 30 + i as u64, TOL_F16);
    }
}

#[test]
fn strong_gates_neither_overflow_nor_nan() {
    let s = sz(2, 2, 1000, 6, 5);
    case::<f32>(ctx(), s, Gates::Strong, true, 40, TOL_F32);
    case::<half::f16>(ctx(), s, Gates::Strong, true, 41, TOL_F16);
    case::<half::f16>(ctx_packed(), s, Gates::Strong, true, 42, TOL_F16);
}

#[test]
fn both_tile_families_f32_and_f16_with_and_without_shader_f16() {
    // GLA has no tiles of its own: the GPU family (forced; lavapipe picks the CPU one) gives the
    // same results, f16 stored natively and packed.
    let s = sz(2, 2, 300, 5, 4);
    case::<f32>(ctx_gpu_tiles(), s, Gates::Usual, true, 200, TOL_F32);
    case::<half::f16>(ctx_gpu_tiles(), s, Gates::Usual, true, 201, TOL_F16);
    case::<half::f16>(ctx_gpu_tiles_packed(), s, Gates::Usual, true, 202, TOL_F16);
}

#[test]
fn length_past_the_invocation_loop_limit() {
    // 65537 steps: 1025 chunks, two levels of the carry scan; slow gates so the carries matter.
    let s = sz(1, 2, 65_537, 2, 3);
    case::<f32>(ctx(), s, Gates::Slow, true, 50, TOL_F32);
    case::<f32>(ctx(), s, Gates::Usual, false, 51, TOL_F32);
}

#[test]
fn passes_split_across_rows() {
    // Bindings capped at 64 KiB: a (batch, head) row of q (800 · 6 f32) is 19.2 kB.
    let c = ctx_small_bindings(64 * 1024);
    case::<f32>(&c, sz(2, 3, 800, 6, 4), Gates::Usual, true, 60, TOL_F32);
}

#[test]
fn decode_steps_equal_the_chunked_form() {
    let c = ctx();
    let s = sz(2, 2, 70, 5, 4);
    let h = Host::new::<f32>(s, Gates::Usual, true, 70);
    let dev = Dev::<f32>::new(c, &h, false);
    let (o, last) = gla(c, &dev.inputs()).unwrap();
    let o = to_f64(&o.to_vec(c).unwrap());
    let mut state = dev.h0.clone().unwrap();
    let mut steps = vec![0.0; o.len()];
    for t in 0..s.l {
        let sd = Dev::<f32>::new(c, &h.steps(t, t + 1), true);
        let x = GlaInputs {
            initial_state: Some(&state),
            ..sd.inputs()
        };
        let (y, next) = gla_step(c, &x).unwrap();
        assert_eq!(y.shape(), [s.b, s.h, s.dv]);
        for (r, row) in y.to_vec(c).unwrap().chunks(s.dv).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                steps[(r * s.l + t) * s.dv + j] = v as f64;
            }
        }
        state = next;
    }
    check("decode vs chunked o", &steps, &o, TOL_F32);
    let (s1, s2) = (
        to_f64(&state.to_vec(c).unwrap()),
        to_f64(&last.to_vec(c).unwrap()),
    );
    check("decode vs chunked state", &s1, &s2, TOL_F32);
    check("decode vs reference", &steps, &h.reference().0, TOL_F32);
}

#[test]
fn two_calls_through_the_state_equal_one() {
    let c = ctx();
    let (l, cut) = (1000, 357);
    let s = sz(2, 2, l, 5, 4);
    let h = Host::new::<f32>(s, Gates::Slow, true, 80);
    let dev = Dev::<f32>::new(c, &h, false);
    let (o, last) = gla(c, &dev.inputs()).unwrap();
    let (d1, d2) = (
        Dev::<f32>::new(c, &h.steps(0, cut), false),
        Dev::<f32>::new(c, &h.steps(cut, l), false),
    );
    let mut x1 = d1.inputs();
    x1.initial_state = dev.h0.as_ref();
    let (o1, s1) = gla(c, &x1).unwrap();
    let mut x2 = d2.inputs();
    x2.initial_state = Some(&s1);
    let (o2, s2) = gla(c, &x2).unwrap();
    // The same two calls recorded into one submission: the second reads the first's state.
    let nan = |t: &Tensor<f32>| Tensor::<f32>::nan(c, t.shape()).unwrap();
    let (r1, rs1, r2, rs2) = (nan(&o1), nan(&s1), nan(&o2), nan(&s2));
    let mut sch = Schedule::new(c);
    record_gla(&mut sch, &x1, &r1, &rs1).unwrap();
    x2.initial_state = Some(&rs1);
    record_gla(&mut sch, &x2, &r2, &rs2).unwrap();
    sch.submit();
    for (a, b) in [(&r1, &o1), (&rs1, &s1), (&r2, &o2), (&rs2, &s2)] {
        assert_eq!(a.to_vec(c).unwrap(), b.to_vec(c).unwrap());
    }
    let (o1, o2) = (
        to_f64(&o1.to_vec(c).unwrap()),
        to_f64(&o2.to_vec(c).unwrap()),
    );
    let (n1, n2) = (cut * s.dv, (l - cut) * s.dv);
    let joined: Vec<f64> = (0..s.b * s.h)
        .flat_map(|r| {
            o1[r * n1..(r + 1) * n1]
                .iter()
                .chain(&o2[r * n2..(r + 1) * n2])
                .copied()
        })
        .collect();
    check("split o", &joined, &to_f64(&o.to_vec(c).unwrap()), TOL_F32);
    let (s2, last) = (
        to_f64(&s2.to_vec(c).unwrap()),
        to_f64(&last.to_vec(c).unwrap()),
    );
    check("split state", &s2, &last, TOL_F32);
    let (want, want_last) = h.reference();
    check("split o vs reference", &joined, &want, TOL_F32);
    check("split state vs reference", &s2, &want_last, TOL_F32);
}

#[test]
fn bad_input_is_a_typed_error_and_inputs_stay_unmodified() {
    let c = ctx();
    let h = Host::new::<f32>(sz(2, 3, 10, 4, 5), Gates::Usual, true, 90);
    let dev = Dev::<f32>::new(c, &h, false);
    let t = |s: &[usize]| Tensor::from_slice(c, &vec![0.5f32; s.iter().product()], s).unwrap();
    let (wrong_l, wrong_dk, wrong_h) = (t(&[2, 3, 9, 4]), t(&[2, 3, 10, 3]), t(&[2, 2, 10, 5]));
    let (rank3, wrong_state) = (t(&[2, 3, 10]), t(&[2, 3, 5, 4]));
    let shape_err = |x: GlaInputs<'_, f32>, name: &str| match gla(c, &x) {
        Err(Error::Shape { name: n, .. }) => assert_eq!(n, name),
        other => panic!("{name}: expected a shape error, got {:?}", other.err()),
    };
    shape_err(
        GlaInputs {
            q: &rank3,
            ..dev.inputs()
        },
        "q",
    );
    shape_err(
        GlaInputs {
            k: &wrong_l,
            ..dev.inputs()
        },
        "k",
    );
    shape_err(
        GlaInputs {
            g: &wrong_dk,
            ..dev.inputs()
        },
        "g",
    );
    shape_err(
        GlaInputs {
            v: &wrong_h,
            ..dev.inputs()
        },
        "v",
    );
    let x = GlaInputs {
        initial_state: Some(&wrong_state),
        ..dev.inputs()
    };
    shape_err(x, "initial_state");
    let x = GlaInputs {
        scale: Some(f32::NAN),
        ..dev.inputs()
    };
    assert!(matches!(
        gla(c, &x),
        Err(Error::InvalidArgument { name: "scale", .. })
    ));
    // A step given [B, H, L, D] inputs.
    assert!(matches!(
        gla_step(c, &dev.inputs()),
        Err(Error::Shape { name: "q", .. })
    ));
    let x = dev.inputs();
    let o = Tensor::<f32>::nan(c, &[2, 3, 10, 5]).unwrap();
    let h0 = dev.h0.as_ref().unwrap();
    assert!(matches!(
        gla_into(c, &x, &o, h0),
        Err(Error::InvalidArgument { .. })
    ));
    let last = Tensor::<f32>::nan(c, &[2, 3, 4, 5]).unwrap();
    assert!(matches!(
        gla_into(c, &x, &wrong_l, &last),
        Err(Error::Shape { name: "out", .. })
    ));
    gla_into(c, &x, &o, &last).unwrap();
    assert_eq!(to_f64(&dev.t[0].to_vec(c).unwrap()), h.q);
    assert_eq!(to_f64(&dev.t[3].to_vec(c).unwrap()), h.g);
    assert_eq!(to_f64(&h0.to_vec(c).unwrap()), h.h0.clone().unwrap());
}
