//! The Mamba selective scan (S6) on the GPU against the f64 sequential recurrence
//! (reference::mamba): ragged L, f32 and f16 storage, strong gates, L past lavapipe's loop
//! limit, chunked == decode steps, a two-call split through the state (also recorded into one
//! submission), split passes, bad input.
//!
//! Tolerances: normwise max|gpu − ref| / max|ref| ≤ tol, and elementwise
//! |gpu − ref| ≤ tol · (|ref| + rms(ref)) (the rms floor: y = Σ_n C h cancels to near zero at
//! some t, where no relative bound can hold); f32 tol 1e-5, f16 2e-3.

use crate::common;

use common::*;
use longseq::reference::mamba::{selective_scan_ref, ScanDims, SelectiveScanRef};
use longseq::schedule::Schedule;
use longseq::ssm::{
    record_selective_scan, selective_scan, selective_scan_into, selective_state_update,
    SelectiveScanInputs,
};
use longseq::{Context, Element, Error, Tensor};
use rand::rngs::StdRng;
use rand::Rng;

/// Which optional inputs a case has, and how strong its gates are.
#[derive(Clone, Copy)]
struct Opts {
    full: bool,
    softplus: bool,
    /// Δ drawn in [-5, 20] (softplus) and A down to −16, z in ±30.
    strong: bool,
    /// Long memory: A in [−0.01, −0.001], Δ in [0.01, 1] (no softplus), so the state carries
    /// across thousands of steps (and many chunks).
    slow: bool,
}

const FULL: Opts = Opts {
    full: true,
    softplus: true,
    strong: false,
    slow: false,
};

/// Host inputs in f64, already rounded to the storage dtype T.
struct Host {
    dims: ScanDims,
    u: Vec<f64>,
    delta: Vec<f64>,
    a: Vec<f64>,
    b: Vec<f64>,
    c: Vec<f64>,
    d: Vec<f64>,
    z: Vec<f64>,
    bias: Vec<f64>,
    h0: Vec<f64>,
    o: Opts,
}

fn uni(g: &mut StdRng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| g.random_range(lo..hi)).collect()
}

impl Host {
    fn new<T: Element>(dims: ScanDims, o: Opts, seed: u64) -> Self {
        let mut g = rng(seed);
        let ScanDims {
            batch,
            dim,
            state,
            len,
        } = dims;
        let q =
            |v: Vec<f64>| -> Vec<f64> { v.into_iter().map(|x| T::from_f64(x).to_f64()).collect() };
        let x = batch * dim * len;
        let nrm = |g: &mut StdRng, n: usize, s: f32| -> Vec<f64> {
            randn(g, n, s).into_iter().map(f64::from).collect()
        };
        let u = q(nrm(&mut g, x, 1.0));
        let delta = q(match (o.strong, o.softplus) {
            (true, _) => uni(&mut g, x, -5.0, 20.0),
            (false, true) => nrm(&mut g, x, 1.0),
            (false, false) => uni(&mut g, x, 0.01, 1.0),
        });
        let (amin, amax) = match (o.strong, o.slow) {
            (true, _) => (16.0, 0.05),
            (_, true) => (0.01, 0.001),
            _ => (2.0, 0.05),
        };
        let a = q(uni(&mut g, dim * state, -amin, -amax));
        let b = q(nrm(&mut g, batch * state * len, 1.0));
        let c = q(nrm(&mut g, batch * state * len, 1.0));
        let d = q(nrm(&mut g, dim, 1.0));
        let z = q(if o.strong {
            uni(&mut g, x, -30.0, 30.0)
        } else {
            nrm(&mut g, x, 1.5)
        });
        let bias = q(uni(&mut g, dim, -1.0, 1.0));
        let h0 = q(nrm(&mut g, batch * dim * state, 1.0))
            .into_iter()
            .map(|v| v as f32 as f64)
            .collect();
        Host {
            dims,
            u,
            delta,
            a,
            b,
            c,
            d,
            z,
            bias,
            h0,
            o,
        }
    }

    fn reference(&self) -> (Vec<f64>, Vec<f64>) {
        let f = self.o.full;
        let x = SelectiveScanRef {
            u: &self.u,
            delta: &self.delta,
            a: &self.a,
            b: &self.b,
            c: &self.c,
            d: f.then_some(&self.d[..]),
            z: f.then_some(&self.z[..]),
            delta_bias: f.then_some(&self.bias[..]),
            delta_softplus: self.o.softplus,
            initial_state: f.then_some(&self.h0[..]),
        };
        selective_scan_ref(self.dims, &x).unwrap()
    }
}

/// The host inputs as tensors on one context.
struct Dev<T: Element> {
    t: Vec<Tensor<T>>,
    h0: Tensor<f32>,
    full: bool,
    softplus: bool,
}

impl<T: Element> Dev<T> {
    fn new(c: &Context, h: &Host, step: bool) -> Self {
        let ScanDims {
            batch,
            dim,
            state,
            len,
        } = h.dims;
        let (xs, bs) = if step {
            (vec![batch, dim], vec![batch, state])
        } else {
            (vec![batch, dim, len], vec![batch, state, len])
        };
        let up = |v: &[f64], s: &[usize]| {
            let v: Vec<T> = v.iter().map(|&x| T::from_f64(x)).collect();
            Tensor::from_slice(c, &v, s).unwrap()
        };
        let h0: Vec<f32> = h.h0.iter().map(|&x| x as f32).collect();
        Dev {
            t: vec![
                up(&h.u, &xs),
                up(&h.delta, &xs),
                up(&h.a, &[dim, state]),
                up(&h.b, &bs),
                up(&h.c, &bs),
                up(&h.d, &[dim]),
                up(&h.z, &xs),
                up(&h.bias, &[dim]),
            ],
            h0: Tensor::from_slice(c, &h0, &[batch, dim, state]).unwrap(),
            full: h.o.full,
            softplus: h.o.softplus,
        }
    }

    fn inputs(&self) -> SelectiveScanInputs<'_, T> {
        let t = &self.t;
        let mut x = SelectiveScanInputs::new(&t[0], &t[1], &t[2], &t[3], &t[4]);
        x.delta_softplus = self.softplus;
        if self.full {
            x.d = Some(&t[5]);
            x.z = Some(&t[6]);
            x.delta_bias = Some(&t[7]);
            x.initial_state = Some(&self.h0);
        }
        x
    }
}

fn rms(w: &[f64]) -> f64 {
    (w.iter().map(|x| x * x).sum::<f64>() / w.len() as f64).sqrt()
}

/// Normwise and elementwise check (see the file's doc).
fn check(label: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_close(label, got, want, tol);
    let s = rms(want);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (w.abs() + s),
            "{label}: element {i}: gpu {g} vs ref {w} (tol {tol:.0e}, rms {s:.3e})"
        );
    }
}

/// GPU (outputs poisoned with NaN) vs reference for one case; panics past `tol`.
fn case<T: Element>(c: &Context, dims: ScanDims, o: Opts, seed: u64, tol: f64) {
    let h = Host::new::<T>(dims, o, seed);
    let dev = Dev::<T>::new(c, &h, false);
    let ScanDims {
        batch,
        dim,
        state,
        len,
    } = dims;
    let out = Tensor::<T>::nan(c, &[batch, dim, len]).unwrap();
    let last = Tensor::<f32>::nan(c, &[batch, dim, state]).unwrap();
    selective_scan_into(c, &dev.inputs(), &out, &last).unwrap();
    let (want, want_last) = h.reference();
    let label = format!("{:?} {dims:?}", T::DTYPE);
    let got = to_f64(&out.to_vec(c).unwrap());
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{label}: non-finite output"
    );
    check(&format!("{label} out"), &got, &want, tol);
    let got_last = to_f64(&last.to_vec(c).unwrap());
    check(&format!("{label} last_state"), &got_last, &want_last, tol);
}

fn dims(batch: usize, dim: usize, state: usize, len: usize) -> ScanDims {
    ScanDims {
        batch,
        dim,
        state,
        len,
    }
}

#[test]
fn f32_ragged_lengths_match_the_recurrence() {
    for (i, len) in [1usize, 63, 65, 1000, 4097].into_iter().enumerate() {
        case::<f32>(ctx(), dims(2, 3, 5, len), FULL, i as u64, TOL_F32);
    }
    // No optional input, Δ used as given.
    let bare = Opts {
        full: false,
        softplus: false,
        strong: false,
        slow: false,
    };
    case::<f32>(ctx(), dims(1, 4, 7, 1000), bare, 9, TOL_F32);
}

#[test]
fn more_states_than_one_block() {
    // N = 37: three blocks of 16 states, the last ragged.
    case::<f32>(ctx(), dims(2, 3, 37, 300), FULL, 11, TOL_F32);
}

#[test]
fn f16_storage_native_and_packed() {
    for (i, len) in [1usize, 63, 1000].into_iter().enumerate() {
        case::<half::f16>(ctx(), dims(2, 3, 5, len), FULL, 20 + i as u64, TOL_F16);
        case::<half::f16>(
            ctx_packed(),
            dims(2, 3, 5, len),
            FULL,
            30 + i as u64,
            TOL_F16,
        );
    }
}

#[test]
fn strong_gates_neither_overflow_nor_nan() {
    let strong = Opts {
        full: true,
        softplus: true,
        strong: true,
        slow: false,
    };
    case::<f32>(ctx(), dims(2, 3, 16, 1000), strong, 40, TOL_F32);
    case::<half::f16>(ctx(), dims(2, 3, 16, 1000), strong, 41, TOL_F16);
    case::<half::f16>(ctx_packed(), dims(2, 3, 16, 1000), strong, 42, TOL_F16);
}

#[test]
fn both_tile_families_f32_and_f16_with_and_without_shader_f16() {
    // The selective scan has no tiles of its own: the GPU family (forced; lavapipe picks the
    // CPU one) gives the same results, f16 stored natively and packed.
    let d = dims(2, 3, 5, 300);
    case::<f32>(ctx_gpu_tiles(), d, FULL, 200, TOL_F32);
    case::<half::f16>(ctx_gpu_tiles(), d, FULL, 201, TOL_F16);
    case::<half::f16>(ctx_gpu_tiles_packed(), d, FULL, 202, TOL_F16);
}

#[test]
fn length_past_the_invocation_loop_limit() {
    // 65537 steps: 1025 chunks, two levels of the carry scan; long memory so the carries matter.
    let slow = Opts {
        full: true,
        softplus: false,
        strong: false,
        slow: true,
    };
    case::<f32>(ctx(), dims(1, 2, 3, 65_537), slow, 50, TOL_F32);
    case::<f32>(ctx(), dims(1, 2, 3, 65_537), FULL, 51, TOL_F32);
}

#[test]
fn passes_split_across_batches() {
    // Bindings capped so a pass holds a few (b, d) rows, passes straddling batches.
    let c = ctx_small_bindings(64 * 1024);
    // 12 rows, 5 per pass (one row of B is 12 kB): passes [0, 5), [5, 10), [10, 12).
    case::<f32>(&c, dims(3, 4, 6, 500), FULL, 60, TOL_F32);
}

#[test]
fn decode_steps_equal_the_chunked_scan() {
    let c = ctx();
    let (batch, dim, state, len) = (2, 3, 5, 70);
    let h = Host::new::<f32>(dims(batch, dim, state, len), FULL, 70);
    let dev = Dev::<f32>::new(c, &h, false);
    let (out, last) = selective_scan(c, &dev.inputs()).unwrap();
    let out = to_f64(&out.to_vec(c).unwrap());
    // Step t reads column t of every [.., L] input.
    let col = |v: &[f64], rows: usize, t: usize| -> Vec<f64> {
        (0..rows).map(|r| v[r * len + t]).collect()
    };
    let mut state_t = dev.h0.clone();
    let mut steps = vec![0.0; batch * dim * len];
    for t in 0..len {
        let mut sh = Host::new::<f32>(dims(batch, dim, state, 1), FULL, 0);
        sh.u = col(&h.u, batch * dim, t);
        sh.delta = col(&h.delta, batch * dim, t);
        sh.z = col(&h.z, batch * dim, t);
        sh.b = col(&h.b, batch * state, t);
        sh.c = col(&h.c, batch * state, t);
        (sh.a, sh.d, sh.bias) = (h.a.clone(), h.d.clone(), h.bias.clone());
        let sd = Dev::<f32>::new(c, &sh, true);
        let mut x = sd.inputs();
        x.initial_state = Some(&state_t);
        let (y, next) = selective_state_update(c, &x).unwrap();
        assert_eq!(y.shape(), [batch, dim]);
        for (r, v) in y.to_vec(c).unwrap().into_iter().enumerate() {
            steps[r * len + t] = v as f64;
        }
        state_t = next;
    }
    check("decode vs chunked out", &steps, &out, TOL_F32);
    let (s1, s2) = (
        to_f64(&state_t.to_vec(c).unwrap()),
        to_f64(&last.to_vec(c).unwrap()),
    );
    check("decode vs chunked state", &s1, &s2, TOL_F32);
    let (want, _) = h.reference();
    check("decode vs reference", &steps, &want, TOL_F32);
}

#[test]
fn two_calls_through_the_state_equal_one() {
    let c = ctx();
    let (batch, dim, state, len, cut) = (2, 3, 5, 1000, 357);
    let h = Host::new::<f32>(dims(batch, dim, state, len), FULL, 80);
    let dev = Dev::<f32>::new(c, &h, false);
    let (out, last) = selective_scan(c, &dev.inputs()).unwrap();
    let part = |lo: usize, hi: usize| {
        let cut_rows = |v: &[f64], rows: usize| -> Vec<f64> {
            (0..rows)
                .flat_map(|r| v[r * len + lo..r * len + hi].to_vec())
                .collect()
        };
        let mut p = Host::new::<f32>(dims(batch, dim, state, hi - lo), FULL, 0);
        p.u = cut_rows(&h.u, batch * dim);
        p.delta = cut_rows(&h.delta, batch * dim);
        p.z = cut_rows(&h.z, batch * dim);
        p.b = cut_rows(&h.b, batch * state);
        p.c = cut_rows(&h.c, batch * state);
        (p.a, p.d, p.bias) = (h.a.clone(), h.d.clone(), h.bias.clone());
        Dev::<f32>::new(c, &p, false)
    };
    let (d1, d2) = (part(0, cut), part(cut, len));
    let mut x1 = d1.inputs();
    x1.initial_state = Some(&dev.h0);
    let (o1, s1) = selective_scan(c, &x1).unwrap();
    let mut x2 = d2.inputs();
    x2.initial_state = Some(&s1);
    let (o2, s2) = selective_scan(c, &x2).unwrap();
    // The same two calls recorded into one submission: the second reads the first's state.
    let (r1, rs1) = (
        Tensor::<f32>::nan(c, o1.shape()).unwrap(),
        Tensor::<f32>::nan(c, s1.shape()).unwrap(),
    );
    let (r2, rs2) = (
        Tensor::<f32>::nan(c, o2.shape()).unwrap(),
        Tensor::<f32>::nan(c, s2.shape()).unwrap(),
    );
    let mut sch = Schedule::new(c);
    record_selective_scan(&mut sch, &x1, &r1, &rs1).unwrap();
    x2.initial_state = Some(&rs1);
    record_selective_scan(&mut sch, &x2, &r2, &rs2).unwrap();
    sch.submit();
    assert_eq!(r2.to_vec(c).unwrap(), o2.to_vec(c).unwrap());
    assert_eq!(rs2.to_vec(c).unwrap(), s2.to_vec(c).unwrap());
    assert_eq!(r1.to_vec(c).unwrap(), o1.to_vec(c).unwrap());
    let (o1, o2) = (o1.to_vec(c).unwrap(), o2.to_vec(c).unwrap());
    let (cut2, rest) = (cut, len - cut);
    let joined: Vec<f64> = (0..batch * dim)
        .flat_map(|r| {
            let a = o1[r * cut2..(r + 1) * cut2].iter();
            a.chain(&o2[r * rest..(r + 1) * rest]).map(|&v| v as f64)
        })
        .collect();
    check(
        "split out",
        &joined,
        &to_f64(&out.to_vec(c).unwrap()),
        TOL_F32,
    );
    let (s2, last) = (
        to_f64(&s2.to_vec(c).unwrap()),
        to_f64(&last.to_vec(c).unwrap()),
    );
    check("split state", &s2, &last, TOL_F32);
}

#[test]
fn bad_input_is_a_typed_error_and_inputs_stay_unmodified() {
    let c = ctx();
    let h = Host::new::<f32>(dims(2, 3, 4, 10), FULL, 90);
    let dev = Dev::<f32>::new(c, &h, false);
    let t = |v: &[f32], s: &[usize]| Tensor::from_slice(c, v, s).unwrap();
    let wrong_l = t(&vec![0.5; 2 * 3 * 9], &[2, 3, 9]);
    let wrong_n = t(&vec![0.5; 2 * 5 * 10], &[2, 5, 10]);
    let wrong_d = t(&[0.5; 4 * 4], &[4, 4]);
    let wrong_vec = t(&[0.5; 4], &[4]);
    let wrong_state = t(&[0.5; 2 * 3 * 5], &[2, 3, 5]);
    let rank2 = t(&[0.5; 6], &[2, 3]);
    let shape_err = |x: SelectiveScanInputs<'_, f32>, name: &str| match selective_scan(c, &x) {
        Err(Error::Shape { name: n, .. }) => assert_eq!(n, name),
        other => panic!("{name}: expected a shape error, got {:?}", other.err()),
    };
    let mut x = dev.inputs();
    x.delta = &wrong_l;
    shape_err(x, "delta");
    let mut x = dev.inputs();
    x.b = &wrong_n;
    shape_err(x, "B");
    let mut x = dev.inputs();
    x.c = &wrong_l;
    shape_err(x, "C");
    let mut x = dev.inputs();
    x.a = &wrong_d;
    shape_err(x, "A");
    let mut x = dev.inputs();
    x.d = Some(&wrong_vec);
    shape_err(x, "D");
    let mut x = dev.inputs();
    x.delta_bias = Some(&wrong_vec);
    shape_err(x, "delta_bias");
    let mut x = dev.inputs();
    x.z = Some(&wrong_l);
    shape_err(x, "z");
    let mut x = dev.inputs();
    x.initial_state = Some(&wrong_state);
    shape_err(x, "initial_state");
    let mut x = dev.inputs();
    x.u = &rank2;
    shape_err(x, "u");
    // A step given [B, D, L] inputs.
    assert!(matches!(
        selective_state_update(c, &dev.inputs()),
        Err(Error::Shape { name: "u", .. })
    ));
    // last_state aliasing initial_state, and a wrong out shape.
    let out = Tensor::<f32>::nan(c, &[2, 3, 10]).unwrap();
    let x = dev.inputs();
    assert!(matches!(
        selective_scan_into(c, &x, &out, &dev.h0),
        Err(Error::InvalidArgument { .. })
    ));
    let last = Tensor::<f32>::nan(c, &[2, 3, 4]).unwrap();
    assert!(matches!(
        selective_scan_into(c, &x, &wrong_l, &last),
        Err(Error::Shape { name: "out", .. })
    ));
    // A successful call leaves every input as uploaded.
    selective_scan_into(c, &x, &out, &last).unwrap();
    let u: Vec<f64> = to_f64(&dev.t[0].to_vec(c).unwrap());
    assert_eq!(u, h.u);
    let h0 = to_f64(&dev.h0.to_vec(c).unwrap());
    assert_eq!(h0, h.h0);
}
