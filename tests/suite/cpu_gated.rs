//! SSD and GLA on the CPU path (one gated chunk engine) against the f64 step-by-step
//! recurrences (reference::ssd, reference::gla): ragged lengths, both layouts for GLA, packed
//! sequences (cu_seqlens, each from its own initial state, against per-sequence references),
//! strong gates, f32 and f16 storage, bad input.
//!
//! Tolerances as tests/suite/ssd.rs: normwise max|cpu − ref| / max|ref| ≤ tol and elementwise
//! |cpu − ref| ≤ tol · (|ref| + rms(ref)) (outputs cancel to near zero at some t);
//! f32 1e-5, f16 storage 2e-3 (the reference sees the f16-rounded inputs).

use crate::common;

use common::{assert_close, rng, to_f64};
use longseq::cpu::attention::{gla, GlaHost, GlaShape};
use longseq::cpu::ssm::{ssd, SsdDims, SsdHost};
use longseq::reference::gla::{gla_ref, gla_ref_varlen, GlaDims, GlaRef};
use longseq::reference::ssd::{ssd_ref, ssd_ref_varlen, SsdRef};
use longseq::types::batch::{CuSeqlens, Layout};
use longseq::{Element, Error};
use rand::Rng;

const CU: [usize; 6] = [0, 15, 100, 300, 1200, 2000];

fn check(label: &str, got: &[f64], want: &[f64], tol: f64) {
    assert!(
        got.iter().all(|x| x.is_finite()),
        "{label}: non-finite output"
    );
    assert_close(label, got, want, tol);
    let rms = (want.iter().map(|x| x * x).sum::<f64>() / want.len() as f64).sqrt();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let e = (g - w).abs();
        assert!(
            e <= tol * (w.abs() + rms),
            "{label}: element {i}: {g} vs {w} (|diff| {e:.3e})"
        );
    }
}

/// `n` values uniform in [lo, hi), rounded to T and back.
fn draw<T: Element>(g: &mut impl Rng, n: usize, lo: f64, hi: f64) -> (Vec<T>, Vec<f64>) {
    let t: Vec<T> = (0..n)
        .map(|_| T::from_f64(g.random_range(lo..hi)))
        .collect();
    let f = to_f64(&t);
    (t, f)
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// SSD of `d` (cu_seqlens when given), gates in [amin, −0.001], with an initial state.
fn ssd_case<T: Element>(d: SsdDims, amin: f64, cu: Option<&[usize]>, seed: u64, tol: f64) {
    let mut g = rng(seed);
    let tokens = d.batch * d.len * d.heads;
    let (x, xf) = draw::<T>(&mut g, tokens * d.head_dim, -1.0, 1.0);
    let (a, af) = draw::<T>(&mut g, tokens, amin, -0.001);
    let (b, bf) = draw::<T>(&mut g, tokens * d.state, -1.0, 1.0);
    let (c, cf) = draw::<T>(&mut g, tokens * d.state, -1.0, 1.0);
    let slots = cu.map_or(d.batch, |o| o.len() - 1);
    let h0: Vec<f64> = (0..slots * d.heads * d.state * d.head_dim)
        .map(|_| g.random_range(-1.0..1.0) as f32 as f64)
        .collect();
    let r = SsdRef {
        x: &xf,
        a: &af,
        b: &bf,
        c: &cf,
        initial_state: Some(&h0),
    };
    let (wy, ws) = match cu {
        Some(o) => ssd_ref_varlen(d, o, &r).unwrap(),
        None => ssd_ref(d, &r).unwrap(),
    };
    let offs: Option<Vec<i64>> = cu.map(|o| o.iter().map(|&v| v as i64).collect());
    let cus = offs.map(|o| CuSeqlens::new("t", &o, d.len).unwrap());
    let h0f = f32s(&h0);
    let host = SsdHost {
        initial_state: Some(&h0f),
        cu_seqlens: cus.as_ref(),
        ..SsdHost::new(&x, &a, &b, &c)
    };
    let (y, s) = ssd(d, &host).unwrap();
    let label = format!("ssd {d:?} cu {cu:?}");
    check(&format!("{label} Y"), &to_f64(&y), &wy, tol);
    check(&format!("{label} state"), &to_f64(&s), &ws, tol);
}

fn sd(batch: usize, len: usize, heads: usize, head_dim: usize, state: usize) -> SsdDims {
    SsdDims {
        batch,
        len,
        heads,
        head_dim,
        state,
    }
}

#[test]
fn ssd_f32_ragged_lengths() {
    for (i, l) in [1, 63, 64, 65, 1000, 4097].into_iter().enumerate() {
        ssd_case::<f32>(sd(2, l, 3, 17, 9), -1.0, None, i as u64, 1e-5);
    }
}

#[test]
fn ssd_strong_decays_and_f16() {
    ssd_case::<f32>(sd(1, 1000, 2, 33, 16), -30.0, None, 10, 1e-5);
    ssd_case::<half::f16>(sd(2, 300, 3, 24, 12), -1.0, None, 11, 2e-3);
}

#[test]
fn ssd_cu_seqlens_each_sequence_from_its_state() {
    ssd_case::<f32>(sd(1, 2000, 3, 20, 10), -1.0, Some(&CU), 20, 1e-5);
    // Tokens past the last offset; an empty sequence.
    ssd_case::<f32>(sd(1, 2050, 2, 8, 5), -0.5, Some(&[0, 7, 7, 2000]), 21, 1e-5);
    ssd_case::<half::f16>(sd(1, 2000, 2, 16, 8), -30.0, Some(&CU), 22, 2e-3);
}

/// `[B, H, L, D]` → `layout`.
fn to_layout<T: Copy>(x: &[T], b: usize, h: usize, l: usize, d: usize, lay: Layout) -> Vec<T> {
    let st = lay.strides(h, l, d);
    let mut out = x.to_vec();
    for bi in 0..b {
        for hi in 0..h {
            for t in 0..l {
                let src = ((bi * h + hi) * l + t) * d;
                out[st.index(bi, hi, t, 0)..][..d].copy_from_slice(&x[src..][..d]);
            }
        }
    }
    out
}

/// GLA of `s` in `lay` (cu_seqlens when given), gates in [gmin, −0.001], with an initial state.
fn gla_case<T: Element>(
    s: GlaShape,
    lay: Layout,
    gmin: f64,
    cu: Option<&[usize]>,
    seed: u64,
    tol: f64,
) {
    let mut g = rng(seed);
    let (b, h, l) = (s.batch, s.heads, s.len);
    let nk = b * h * l * s.dk;
    let (q, qf) = draw::<T>(&mut g, nk, -1.0, 1.0);
    let (k, kf) = draw::<T>(&mut g, nk, -1.0, 1.0);
    let (gg, gf) = draw::<T>(&mut g, nk, gmin, -0.001);
    let (v, vf) = draw::<T>(&mut g, b * h * l * s.dv, -1.0, 1.0);
    let slots = cu.map_or(b, |o| o.len() - 1);
    let h0: Vec<f64> = (0..slots * h * s.dk * s.dv)
        .map(|_| g.random_range(-1.0..1.0) as f32 as f64)
        .collect();
    let r = GlaRef {
        q: &qf,
        k: &kf,
        v: &vf,
        g: &gf,
        initial_state: Some(&h0),
        scale: None,
    };
    let dims = GlaDims {
        rows: b * h,
        len: l,
        dk: s.dk,
        dv: s.dv,
    };
    let (wo, ws) = match cu {
        Some(o) => gla_ref_varlen(dims, o, &r).unwrap(),
        None => gla_ref(dims, &r).unwrap(),
    };
    let lk = |x: &[T]| to_layout(x, b, h, l, s.dk, lay);
    let (q, k, gg, v) = (lk(&q), lk(&k), lk(&gg), to_layout(&v, b, h, l, s.dv, lay));
    let offs: Option<Vec<i64>> = cu.map(|o| o.iter().map(|&v| v as i64).collect());
    let cus = offs.map(|o| CuSeqlens::new("t", &o, l).unwrap());
    let h0f = f32s(&h0);
    let host = GlaHost {
        initial_state: Some(&h0f),
        layout: lay,
        cu_seqlens: cus.as_ref(),
        ..GlaHost::new(&q, &k, &v, &gg)
    };
    let (o, st) = gla(s, &host).unwrap();
    let wo = to_layout(&wo, b, h, l, s.dv, lay);
    let label = format!("gla {s:?} {lay:?} cu {cu:?}");
    check(&format!("{label} o"), &to_f64(&o), &wo, tol);
    check(&format!("{label} state"), &to_f64(&st), &ws, tol);
}

fn gs(batch: usize, heads: usize, len: usize, dk: usize, dv: usize) -> GlaShape {
    GlaShape {
        batch,
        heads,
        len,
        dk,
        dv,
    }
}

#[test]
fn gla_f32_ragged_lengths_both_layouts() {
    for (i, l) in [1, 15, 17, 63, 65, 1000, 4097].into_iter().enumerate() {
        for lay in [Layout::Bhld, Layout::Blhd] {
            gla_case::<f32>(gs(2, 3, l, 19, 13), lay, -1.0, None, i as u64, 1e-5);
        }
    }
}

#[test]
fn gla_strong_gates_and_f16() {
    gla_case::<f32>(gs(1, 2, 1000, 33, 24), Layout::Bhld, -30.0, None, 30, 1e-5);
    gla_case::<half::f16>(gs(2, 2, 300, 20, 12), Layout::Blhd, -1.0, None, 31, 2e-3);
}

#[test]
fn gla_cu_seqlens_each_sequence_from_its_state() {
    for lay in [Layout::Bhld, Layout::Blhd] {
        gla_case::<f32>(gs(1, 3, 2000, 12, 10), lay, -1.0, Some(&CU), 40, 1e-5);
        gla_case::<half::f16>(gs(1, 2, 2000, 16, 8), lay, -30.0, Some(&CU), 41, 2e-3);
    }
    gla_case::<f32>(
        gs(1, 2, 2050, 8, 6),
        Layout::Blhd,
        -0.5,
        Some(&[0, 7, 7, 2000]),
        42,
        1e-5,
    );
}

#[test]
fn bad_input_is_a_typed_error() {
    let z = vec![0.5f32; 2 * 4 * 2 * 3];
    let a = vec![-0.1f32; 2 * 4 * 2];
    let cu = CuSeqlens::new("t", &[0, 2, 4], 4).unwrap();
    let d = sd(2, 4, 2, 3, 3);
    let host = SsdHost {
        cu_seqlens: Some(&cu),
        ..SsdHost::new(&z, &a, &z, &z)
    };
    assert!(matches!(
        ssd(d, &host),
        Err(Error::InvalidArgument {
            name: "cu_seqlens",
            ..
        })
    ));
    assert!(matches!(
        ssd(d, &SsdHost::new(&z[1..], &a, &z, &z)),
        Err(Error::DataLength { .. })
    ));
    let q = vec![0.5f32; 2 * 2 * 4 * 3];
    let s = gs(2, 2, 4, 3, 3);
    let bad = GlaHost {
        scale: Some(f32::NAN),
        ..GlaHost::new(&q, &q, &q, &q)
    };
    assert!(matches!(
        gla(s, &bad),
        Err(Error::InvalidArgument { name: "scale", .. })
    ));
    assert!(matches!(
        gla(gs(0, 2, 4, 3, 3), &GlaHost::new(&q, &q, &q, &q)),
        Err(Error::InvalidArgument { name: "dims", .. })
    ));
}

/// Non-finite `got` exactly where `want` is, finite values within `tol` of the finite rms.
fn same_pattern(label: &str, got: &[f64], want: &[f64], tol: f64) {
    let fin: Vec<f64> = want.iter().copied().filter(|x| x.is_finite()).collect();
    let rms = (fin.iter().map(|x| x * x).sum::<f64>() / fin.len() as f64).sqrt();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if w.is_finite() {
            assert!(
                (g - w).abs() <= tol * (w.abs() + rms),
                "{label}: {i}: {g} vs {w}"
            );
        } else {
            assert!(
                g.is_nan() == w.is_nan() && (w.is_nan() || g == w),
                "{label}: {i}: {g} where the reference has {w}"
            );
        }
    }
}

#[test]
fn nonfinite_values_reach_only_later_steps() {
    // A NaN and a +Inf in the values mid-chunk: rows before them stay finite (the masked part of
    // a chunk's product must not add 0·NaN), as in the step-by-step recurrences.
    let mut g = rng(50);
    let d = sd(1, 150, 2, 5, 4);
    let tokens = d.len * d.heads;
    let (mut x, _) = draw::<f32>(&mut g, tokens * d.head_dim, -1.0, 1.0);
    let (a, af) = draw::<f32>(&mut g, tokens, -1.0, -0.001);
    let (b, bf) = draw::<f32>(&mut g, tokens * d.state, -1.0, 1.0);
    let (c, cf) = draw::<f32>(&mut g, tokens * d.state, -1.0, 1.0);
    x[(40 * d.heads) * d.head_dim + 2] = f32::NAN;
    x[(100 * d.heads + 1) * d.head_dim] = f32::INFINITY;
    let xf = to_f64(&x);
    let r = SsdRef {
        x: &xf,
        a: &af,
        b: &bf,
        c: &cf,
        initial_state: None,
    };
    let (wy, _) = ssd_ref(d, &r).unwrap();
    let (y, _) = ssd(d, &SsdHost::new(&x, &a, &b, &c)).unwrap();
    same_pattern("ssd", &to_f64(&y), &wy, 1e-5);
    assert!(wy
        .iter()
        .take(40 * d.heads * d.head_dim)
        .all(|v| v.is_finite()));

    let s = gs(1, 2, 70, 6, 5);
    let nk = s.heads * s.len * s.dk;
    let (q, qf) = draw::<f32>(&mut g, nk, -1.0, 1.0);
    let (k, kf) = draw::<f32>(&mut g, nk, -1.0, 1.0);
    let (gg, gf) = draw::<f32>(&mut g, nk, -1.0, -0.001);
    let (mut v, _) = draw::<f32>(&mut g, s.heads * s.len * s.dv, -1.0, 1.0);
    v[9 * s.dv + 1] = f32::NAN;
    v[(s.len + 30) * s.dv + 3] = f32::NEG_INFINITY;
    let vf = to_f64(&v);
    let r = GlaRef {
        q: &qf,
        k: &kf,
        v: &vf,
        g: &gf,
        initial_state: None,
        scale: None,
    };
    let dims = GlaDims {
        rows: s.heads,
        len: s.len,
        dk: s.dk,
        dv: s.dv,
    };
    let (wo, _) = gla_ref(dims, &r).unwrap();
    let (o, _) = gla(s, &GlaHost::new(&q, &k, &v, &gg)).unwrap();
    same_pattern("gla", &to_f64(&o), &wo, 1e-5);
    assert!(wo.iter().take(9 * s.dv).all(|v| v.is_finite()));
}
