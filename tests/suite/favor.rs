//! Performer (FAVOR+) attention: GPU vs the CPU reference with a fixed ω, the reference vs an
//! independent unstabilised estimator, error against exact softmax falling with M, ω draws,
//! the denominator guard and bad input.

use crate::common;
use crate::favor_ref;

use common::*;
use favor_ref::unstabilised_favor;
use longseq::attention::linear::check_shapes;
use longseq::attention::{
    draw_omega, favor_attention, favor_attention_into, FavorKind, FavorOptions, OmegaDraw,
};
use longseq::reference;
use longseq::{Context, Element, Error, Tensor};

const KINDS: [FavorKind; 2] = [FavorKind::Positive, FavorKind::Trig];

/// GPU (output poisoned with NaN) vs reference on the same dtype-rounded inputs: the relative
/// error.
fn run<T: Element>(
    ctx: &Context,
    dims: (usize, usize, usize, usize),
    x: (&[f32], &[f32], &[f32]),
    omega: &[f32],
    o: &FavorOptions,
    conv: impl Fn(&[f32]) -> Vec<T>,
) -> f64 {
    let (got, want) = outputs(ctx, dims, x, omega, o, conv);
    rel_err(&got, &want)
}

/// The GPU output (poisoned with NaN first) and the reference's, after checking q is unmodified.
fn outputs<T: Element>(
    ctx: &Context,
    (rows, l, dk, dv): (usize, usize, usize, usize),
    x: (&[f32], &[f32], &[f32]),
    omega: &[f32],
    o: &FavorOptions,
    conv: impl Fn(&[f32]) -> Vec<T>,
) -> (Vec<f64>, Vec<f64>) {
    let (q, k, v) = (conv(x.0), conv(x.1), conv(x.2));
    let (sq, sv) = ([rows, l, dk], [rows, l, dv]);
    let d = check_shapes("test", &sq, &sq, &sv).unwrap();
    let m = omega.len() / dk;
    let tw = Tensor::from_slice(ctx, omega, &[m, dk]).unwrap();
    let out = Tensor::<T>::nan(ctx, &d.out_shape).unwrap();
    let t = |x: &[T], s: &[usize]| Tensor::from_slice(ctx, x, s).unwrap();
    let tq = t(&q, &sq);
    favor_attention_into(ctx, &tq, &t(&k, &sq), &t(&v, &sv), &tw, &out, o).unwrap();
    let got = to_f64(&out.to_vec(ctx).unwrap());
    let want = reference::attention::favor_attention(&q, &k, &v, &d, omega, o).unwrap();
    // Bitwise, so an input holding NaN compares equal to itself.
    let bits = |x: Vec<f64>| -> Vec<u64> { x.iter().map(|v| v.to_bits()).collect() };
    assert_eq!(bits(to_f64(&tq.to_vec(ctx).unwrap())), bits(to_f64(&q)));
    (got, want)
}

/// (rows, L, Dk, Dv, M): L and D off the power of two, M not a multiple of Dk.
const CASES: [(usize, usize, usize, usize, usize); 5] = [
    (2, 1, 3, 2, 5),
    (3, 63, 16, 65, 24),
    (1, 65, 65, 32, 100),
    (2, 200, 8, 8, 256),
    (1, 130, 32, 1, 7),
];

/// Every case, kind and causality in `dtype` (f32, f16, f16-packed), with the adapter's tile family
/// or (`gpu_tiles`) the GPU family forced (small projection tiles).
fn sweep(dtype: &str, gpu_tiles: bool) {
    let (c, cp) = if gpu_tiles {
        (ctx_gpu_tiles(), ctx_gpu_tiles_packed())
    } else {
        (ctx(), ctx_packed())
    };
    let mut seed = 100;
    for &(rows, l, dk, dv, m) in &CASES {
        for kind in KINDS {
            for causal in [false, true] {
                seed += 1;
                let mut g = rng(seed);
                let q = randn(&mut g, rows * l * dk, 0.7);
                let k = randn(&mut g, rows * l * dk, 0.7);
                let v = randn(&mut g, rows * l * dv, 1.0);
                let draw = if seed % 2 == 0 {
                    OmegaDraw::Gaussian
                } else {
                    OmegaDraw::OrthogonalChi
                };
                let w = draw_omega(m, dk, draw, seed).unwrap();
                let o = FavorOptions { kind, causal };
                let dims = (rows, l, dk, dv);
                let x = (&q[..], &k[..], &v[..]);
                let (e, tol) = match dtype {
                    "f32" => (
                        run(c, dims, x, &w, &o, |x| x.to_vec()),
                        tol_f32(kind, &q, &k, (rows, l, dk), &w, causal),
                    ),
                    "f16" => (run(c, dims, x, &w, &o, to_f16), TOL_F16),
                    _ => (run(cp, dims, x, &w, &o, to_f16), TOL_F16),
                };
                assert!(
                    e <= tol,
                    "{dtype} gpu_tiles={gpu_tiles} {kind:?} causal={causal} rows={rows} L={l} Dk={dk} Dv={dv} M={m}: \
                     relative error {e:.3e} > {tol:.1e}"
                );
            }
        }
    }
}

#[test]
fn gpu_matches_reference_f32() {
    sweep("f32", false);
}

#[test]
fn gpu_matches_reference_f16_native() {
    assert!(ctx().shader_f16());
    sweep("f16", false);
}

#[test]
fn gpu_matches_reference_f16_packed() {
    assert!(!ctx_packed().shader_f16());
    sweep("f16-packed", false);
}

#[test]
fn gpu_tile_family_matches_reference_f32_and_f16() {
    sweep("f32", true);
    sweep("f16", true);
    sweep("f16-packed", true);
}

/// f32 tolerance: TOL_F32, or for trig features f32 rounding (1e-7) times the ratio's condition
/// number when that is larger (the trig weights have both signs, so the sums can cancel).
fn tol_f32(
    kind: FavorKind,
    q: &[f32],
    k: &[f32],
    (rows, l, dk): (usize, usize, usize),
    w: &[f32],
    causal: bool,
) -> f64 {
    if kind == FavorKind::Positive {
        return TOL_F32;
    }
    let n = l * dk;
    let cond = (0..rows)
        .map(|r| trig_condition(&q[r * n..][..n], &k[r * n..][..n], (l, dk), w, causal))
        .fold(1.0, f64::max);
    TOL_F32.max(1e-7 * cond)
}

/// L = 16 384 (issue 11, item 1: long L for every op whose invocations loop over L): the
/// head-wide maximum loops over L/WG positions and the key scans over L/chunk chunks per
/// invocation. Positive features causal and not, trig non-causal (its condition number in O(L·F):
/// the key sums are shared), f32 against the f64 reference.
#[test]
fn long_l_matches_the_reference() {
    use longseq::reference::attention::favor::favor_features;
    let (rows, l, dk, dv, m) = (1, 16_384, 8, 4, 16);
    let mut g = rng(77);
    let q = randn(&mut g, rows * l * dk, 0.5);
    let k = randn(&mut g, rows * l * dk, 0.5);
    let v = randn(&mut g, rows * l * dv, 1.0);
    let w = draw_omega(m, dk, OmegaDraw::OrthogonalChi, 5).unwrap();
    let x = (&q[..], &k[..], &v[..]);
    for (kind, causal) in [
        (FavorKind::Positive, false),
        (FavorKind::Positive, true),
        (FavorKind::Trig, false),
    ] {
        let tol = if kind == FavorKind::Positive {
            TOL_F32
        } else {
            let fq = favor_features(&to_f64(&q), dk, &w, kind, false);
            let fk = favor_features(&to_f64(&k), dk, &w, kind, true);
            let f = fq.len() / l;
            let (mut ks, mut ka) = (vec![0.0f64; f], vec![0.0f64; f]);
            for j in 0..l {
                for r in 0..f {
                    ks[r] += fk[j * f + r];
                    ka[r] += fk[j * f + r].abs();
                }
            }
            let cond = (0..l)
                .map(|i| {
                    let qi = &fq[i * f..][..f];
                    let abs: f64 = (0..f).map(|r| qi[r].abs() * ka[r]).sum();
                    let den: f64 = (0..f).map(|r| qi[r] * ks[r]).sum();
                    abs / den.abs()
                })
                .fold(1.0, f64::max);
            TOL_F32.max(1e-7 * cond)
        };
        let o = FavorOptions { kind, causal };
        let e = run(ctx(), (rows, l, dk, dv), x, &w, &o, |x| x.to_vec());
        eprintln!("{kind:?} causal={causal} L={l}: {e:.2e} (tol {tol:.1e})");
        assert!(
            e <= tol,
            "{kind:?} causal={causal}: relative error {e:.3e} > {tol:.1e}"
        );
    }
}

/// The reference's stabilisers cancel: it equals the unstabilised estimator, and so does the GPU.
#[test]
fn reference_and_gpu_equal_the_unstabilised_estimator() {
    let (l, dk, dv, m) = (45, 6, 4, 33);
    let mut g = rng(8);
    let q = randn(&mut g, l * dk, 1.0);
    let k = randn(&mut g, l * dk, 1.0);
    let v = randn(&mut g, l * dv, 1.0);
    let w = draw_omega(m, dk, OmegaDraw::OrthogonalSqrtD, 4).unwrap();
    let d = check_shapes("t", &[1, l, dk], &[1, l, dk], &[1, l, dv]).unwrap();
    let c = ctx();
    let t = |x: &[f32], s: &[usize]| Tensor::from_slice(c, x, s).unwrap();
    for kind in KINDS {
        for causal in [false, true] {
            let o = FavorOptions { kind, causal };
            let want = unstabilised_favor(
                &to_f64(&q),
                &to_f64(&k),
                &to_f64(&v),
                (l, dk, dv),
                &w,
                kind,
                causal,
            );
            let r = reference::attention::favor_attention(&q, &k, &v, &d, &w, &o).unwrap();
            assert_close(&format!("reference {kind:?} {causal}"), &r, &want, 1e-10);
            let out = favor_attention(
                c,
                &t(&q, &[1, l, dk]),
                &t(&k, &[1, l, dk]),
                &t(&v, &[1, l, dv]),
                &t(&w, &[m, dk]),
                &o,
            )
            .unwrap();
            let got = to_f64(&out.to_vec(c).unwrap());
            let tol = tol_f32(kind, &q, &k, (1, l, dk), &w, causal);
            assert_close(&format!("gpu {kind:?} {causal}"), &got, &want, tol);
        }
    }
}

/// Exact softmax attention `softmax(q kᵀ/√d) v` in f64, one head `[L, D]`.
fn softmax_attention(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    (l, dk, dv): (usize, usize, usize),
) -> Vec<f64> {
    let mut out = vec![0.0; l * dv];
    for i in 0..l {
        let s: Vec<f64> = (0..l)
            .map(|j| {
                (0..dk).map(|a| q[i * dk + a] * k[j * dk + a]).sum::<f64>() / (dk as f64).sqrt()
            })
            .collect();
        let mx = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
        let tot: f64 = w.iter().sum();
        for e in 0..dv {
            out[i * dv + e] = (0..l).map(|j| w[j] * v[j * dv + e]).sum::<f64>() / tot;
        }
    }
    out
}

fn frobenius_rel(got: &[f64], want: &[f64]) -> f64 {
    let d: f64 = got.iter().zip(want).map(|(a, b)| (a - b).powi(2)).sum();
    let n: f64 = want.iter().map(|b| b * b).sum();
    (d / n).sqrt()
}

/// Unit-norm rows: ‖q‖ = ‖k‖ = 1.
fn unit_rows(x: &mut [f32], d: usize) {
    for r in x.chunks_mut(d) {
        let n = r.iter().map(|a| a * a).sum::<f32>().sqrt();
        r.iter_mut().for_each(|a| *a /= n);
    }
}

/// FAVOR+ is an unbiased estimator of the softmax kernel whose variance falls as 1/M, so the
/// error against exact softmax, averaged over seeds, falls as M grows.
#[test]
fn error_against_softmax_falls_as_m_grows() {
    let (l, dk, dv) = (40, 8, 4);
    let c = ctx();
    let t = |x: &[f32], s: &[usize]| Tensor::from_slice(c, x, s).unwrap();
    for (kind, draw) in [
        (FavorKind::Positive, OmegaDraw::Gaussian),
        (FavorKind::Positive, OmegaDraw::OrthogonalChi),
        (FavorKind::Trig, OmegaDraw::OrthogonalChi),
    ] {
        let mut means = vec![];
        for m in [4, 32, 256] {
            let mut tot = 0.0;
            for seed in 0..5u64 {
                let mut g = rng(1000 + seed);
                let mut q = randn(&mut g, l * dk, 1.0);
                let mut k = randn(&mut g, l * dk, 1.0);
                let v = randn(&mut g, l * dv, 1.0);
                unit_rows(&mut q, dk);
                unit_rows(&mut k, dk);
                let exact = softmax_attention(&to_f64(&q), &to_f64(&k), &to_f64(&v), (l, dk, dv));
                let w = draw_omega(m, dk, draw, 77 + seed).unwrap();
                let o = FavorOptions {
                    kind,
                    causal: false,
                };
                let out = favor_attention(
                    c,
                    &t(&q, &[1, l, dk]),
                    &t(&k, &[1, l, dk]),
                    &t(&v, &[1, l, dv]),
                    &t(&w, &[m, dk]),
                    &o,
                )
                .unwrap();
                tot += frobenius_rel(&to_f64(&out.to_vec(c).unwrap()), &exact);
            }
            means.push(tot / 5.0);
        }
        assert!(
            means[0] > means[1] && means[1] > means[2] && means[2] < 0.1,
            "{kind:?} {draw:?}: mean errors at M = 4, 32, 256: {means:?}"
        );
    }
}

#[test]
fn omega_draws_have_the_promised_structure() {
    let (m, d) = (23, 5); // four full blocks and a partial one
    let w = draw_omega(m, d, OmegaDraw::OrthogonalSqrtD, 9).unwrap();
    assert_eq!(w.len(), m * d);
    let row = |i: usize| &w[i * d..(i + 1) * d];
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum::<f64>();
    for i in 0..m {
        assert!(
            (dot(row(i), row(i)) - d as f64).abs() < 1e-4,
            "row {i} norm"
        );
        for j in (i / d * d)..i {
            assert!(
                dot(row(i), row(j)).abs() < 1e-4,
                "rows {i}, {j} not orthogonal"
            );
        }
    }
    let chi = draw_omega(m, d, OmegaDraw::OrthogonalChi, 9).unwrap();
    let norms: Vec<f64> = chi.chunks(d).map(|r| dot(r, r).sqrt()).collect();
    assert!(
        norms.iter().any(|n| (n - norms[0]).abs() > 1e-3),
        "chi norms all equal"
    );
    for i in 0..d {
        for j in 0..i {
            assert!(dot(&chi[i * d..][..d], &chi[j * d..][..d]).abs() < 1e-3);
        }
    }
    assert_eq!(
        draw_omega(m, d, OmegaDraw::Gaussian, 3).unwrap(),
        draw_omega(m, d, OmegaDraw::Gaussian, 3).unwrap()
    );
    assert_ne!(
        draw_omega(m, d, OmegaDraw::Gaussian, 3).unwrap(),
        draw_omega(m, d, OmegaDraw::Gaussian, 4).unwrap()
    );
}

/// A key far out along ω_0 (position 1) would set a head-wide stabiliser so high that the first
/// key's features underflow, even in f64 (position 0 then hit the 0/0 guard). Causal rows are
/// stabilised by the keys they see: row 0 is exactly v_0 in both paths. Nothing is NaN or
/// infinite, and the GPU equals the reference.
#[test]
fn a_later_huge_key_does_not_zero_an_earlier_causal_row() {
    let (l, dk, dv, m) = (6, 4, 3, 5);
    let mut w = draw_omega(m, dk, OmegaDraw::Gaussian, 1).unwrap();
    w[..dk].copy_from_slice(&[40.0, 0.0, 0.0, 0.0]);
    let mut g = rng(2);
    let mut q = randn(&mut g, l * dk, 0.3);
    let mut k = randn(&mut g, l * dk, 0.3);
    let v = randn(&mut g, l * dv, 1.0);
    k[..dk].fill(0.0);
    let s = (dk as f32).powf(0.25);
    k[dk..2 * dk].copy_from_slice(&[40.0 * s, 0.0, 0.0, 0.0]);
    q[..dk].fill(0.0);
    let d = check_shapes("t", &[1, l, dk], &[1, l, dk], &[1, l, dv]).unwrap();
    let c = ctx();
    let t = |x: &[f32], s: &[usize]| Tensor::from_slice(c, x, s).unwrap();
    for causal in [true, false] {
        let o = FavorOptions {
            kind: FavorKind::Positive,
            causal,
        };
        let want = reference::attention::favor_attention(&q, &k, &v, &d, &w, &o).unwrap();
        if causal {
            let v0: Vec<f64> = v[..dv].iter().map(|&x| x as f64).collect();
            assert_close("reference row 0 = v_0", &want[..dv], &v0, 1e-12);
        }
        let out = Tensor::<f32>::nan(c, &[1, l, dv]).unwrap();
        let (tq, tk, tv) = (t(&q, &[1, l, dk]), t(&k, &[1, l, dk]), t(&v, &[1, l, dv]));
        favor_attention_into(c, &tq, &tk, &tv, &t(&w, &[m, dk]), &out, &o).unwrap();
        let got = to_f64(&out.to_vec(c).unwrap());
        assert!(got.iter().all(|x| x.is_finite()), "{got:?}");
        assert_close(&format!("causal={causal}"), &got, &want, TOL_F32);
        // The CPU path too (it once stabilised keys by the head's maximum: row 0 came out 0).
        let mut cpu_out = vec![f32::NAN; l * dv];
        longseq::cpu::attention::favor_attention_into(&q, &k, &v, &d, &w, &o, &mut cpu_out)
            .unwrap();
        assert_close(
            &format!("cpu causal={causal}"),
            &to_f64(&cpu_out),
            &want,
            TOL_F32,
        );
    }
}

/// Bindings capped at 64 KiB: many passes, f32 and f16. Dk = 7: unaligned row offsets (scalar
/// projection reads); Dk = 8: every pass's rows start 4-aligned at a non-zero offset, so the
/// projection reads x as vec4 from inside the binding.
#[test]
fn splits_work_past_the_storage_binding_limit() {
    let ctx = ctx_small_bindings(64 * 1024);
    for dk in [7usize, 8] {
        let (rows, l, dv, m) = (9, 101, 33, 40);
        let mut g = rng(12 + dk as u64);
        let q = randn(&mut g, rows * l * dk, 0.5);
        let k = randn(&mut g, rows * l * dk, 0.5);
        let v = randn(&mut g, rows * l * dv, 1.0);
        let w = draw_omega(m, dk, OmegaDraw::OrthogonalChi, 5).unwrap();
        for causal in [false, true] {
            let o = FavorOptions {
                kind: FavorKind::Positive,
                causal,
            };
            let x = (&q[..], &k[..], &v[..]);
            let e = run(&ctx, (rows, l, dk, dv), x, &w, &o, |x| x.to_vec());
            assert!(e <= TOL_F32, "f32 Dk={dk} causal={causal}: {e}");
            let e = run(&ctx, (rows, l, dk, dv), x, &w, &o, to_f16);
            assert!(e <= TOL_F16, "f16 Dk={dk} causal={causal}: {e}");
        }
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let c = ctx();
    let t = |s: &[usize]| Tensor::from_slice(c, &vec![0.25f32; s.iter().product()], s).unwrap();
    let x = t(&[2, 5, 4]);
    let o = FavorOptions::default();
    let omega_err = |w: &Tensor<f32>| favor_attention(c, &x, &x, &x, w, &o).err();
    assert!(matches!(
        omega_err(&t(&[8, 3])),
        Some(Error::Shape { name: "omega", .. })
    ));
    assert!(matches!(
        omega_err(&t(&[32])),
        Some(Error::Shape { name: "omega", .. })
    ));
    assert!(matches!(
        omega_err(&t(&[2, 8, 4])),
        Some(Error::Shape { name: "omega", .. })
    ));
    assert!(matches!(
        omega_err(&t(&[0, 4])),
        Some(Error::InvalidArgument { name: "omega", .. })
    ));
    // Dk of k differs from q's.
    assert!(matches!(
        favor_attention(c, &x, &t(&[2, 5, 3]), &x, &t(&[8, 4]), &o).err(),
        Some(Error::Shape { name: "k", .. })
    ));
    assert!(matches!(
        draw_omega(0, 4, OmegaDraw::Gaussian, 0),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        favor_attention_into(c, &x, &x, &x, &t(&[8, 4]), &x, &o),
        Err(Error::InvalidArgument { name: "out", .. })
    ));
}

/// Condition number of the trig ratio: max over rows of Σ_j Σ_r |φ_r(q_i) φ_r(k_j)| / |den_i|.
/// Rounding in the features is amplified by it, since the trig weights have both signs.
pub fn trig_condition(
    q: &[f32],
    k: &[f32],
    (l, dk): (usize, usize),
    omega: &[f32],
    causal: bool,
) -> f64 {
    use longseq::reference::attention::favor::favor_features;
    let fq = favor_features(&to_f64(q), dk, omega, FavorKind::Trig, false);
    let fk = favor_features(&to_f64(k), dk, omega, FavorKind::Trig, true);
    let f = fq.len() / l;
    let mut worst: f64 = 1.0;
    for i in 0..l {
        let (mut abs, mut den) = (0.0, 0.0);
        for j in 0..if causal { i + 1 } else { l } {
            for r in 0..f {
                let p = fq[i * f + r] * fk[j * f + r];
                abs += p.abs();
                den += p;
            }
        }
        worst = worst.max(abs / den.abs());
    }
    worst
}

/// A NaN in one entry of q, k or v (mid-sequence, in a ragged chunk): the GPU output's NaN
/// positions equal the f64 reference's, and the rest agree to the f32 tolerance; positive and
/// trig, causal and not, both tile families, Dk and Dv multiples of 4 (vec4 reads) and not.
#[test]
fn a_nan_in_q_k_or_v_follows_the_reference_pattern() {
    let (rows, l, m) = (2usize, 150usize, 24usize);
    for (dk, dv) in [(16usize, 8usize), (6, 5)] {
        let mut g = rng(77 + dk as u64);
        let x = [
            randn(&mut g, rows * l * dk, 0.5),
            randn(&mut g, rows * l * dk, 0.5),
            randn(&mut g, rows * l * dv, 1.0),
        ];
        let w = draw_omega(m, dk, OmegaDraw::OrthogonalChi, 5).unwrap();
        for (which, at) in [(0usize, 70usize), (1, 100), (2, 131)] {
            let mut x = x.clone();
            let d = if which == 2 { dv } else { dk };
            x[which][(l + at) * d + 1] = f32::NAN;
            for c in [ctx(), ctx_gpu_tiles()] {
                for kind in KINDS {
                    for causal in [false, true] {
                        let o = FavorOptions { kind, causal };
                        let xs = (&x[0][..], &x[1][..], &x[2][..]);
                        let dims = (rows, l, dk, dv);
                        let (got, want) = outputs(c, dims, xs, &w, &o, |x| x.to_vec());
                        let case =
                            format!("{kind:?} causal={causal} Dk={dk} Dv={dv} NaN in {which}");
                        let bad = nan_mismatches(&got, &want);
                        assert_eq!(bad, 0, "{case}: NaN pattern differs in {bad} entries");
                        assert!(want.iter().any(|v| v.is_nan()), "{case}: no NaN to follow");
                        // rel_err skips the outputs NaN in both.
                        let e = rel_err(&got, &want);
                        let tol = tol_f32(kind, &x[0], &x[1], (rows, l, dk), &w, causal);
                        assert!(e <= tol.max(1e-4), "{case}: relative error {e:.2e}");
                    }
                }
            }
        }
    }
}
