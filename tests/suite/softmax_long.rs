//! Softmax attention past the adapter's per-invocation loop limit and past the storage-binding
//! limit (issue 11.1, 11.4), and with logits beyond any finite sentinel (issue 11.2).
//!
//! lavapipe stops an invocation's loops silently after ~65 535 iterations in all; before the key
//! range was split across dispatches, causal L = 8192, D = 64 gave rows of zeros from row ~5500 on.
//! The long cases check a spread of rows (and the last ones) against a direct f64 evaluation of
//! the definition, so the test stays seconds long.

use crate::attend_common;
use crate::common;

use attend_common::*;
use common::*;
use longseq::attention::{
    diag_attention_into, softmax_attention_into, softmax_attention_positional_into,
    DiagAttentionOptions, DiagWeights, PositionalOptions, SoftmaxAttentionOptions,
};
use longseq::types::attention::check_shapes;
use longseq::{reference, Context, Element, Tensor};

/// `o_i = Σ_j softmax_j(scale·q_i·k_j) v_j` over the keys `j` query `i` sees (j ≤ i when causal,
/// and j > i − window), in f64 from the definition, for the listed `(row, i)` only.
#[allow(clippy::too_many_arguments)]
fn direct<T: Element>(
    (q, k, v): (&[T], &[T], &[T]),
    (l, dk, dv): (usize, usize, usize),
    scale: f64,
    causal: bool,
    window: Option<usize>,
    which: &[(usize, usize)],
) -> Vec<f64> {
    let mut out = Vec::with_capacity(which.len() * dv);
    for &(r, i) in which {
        let hi = if causal || window.is_some() { i + 1 } else { l };
        let lo = window.map_or(0, |w| (i + 1).saturating_sub(w));
        let s: Vec<f64> = (lo..hi)
            .map(|j| {
                let dot: f64 = (0..dk)
                    .map(|a| q[(r * l + i) * dk + a].to_f64() * k[(r * l + j) * dk + a].to_f64())
                    .sum();
                scale * dot
            })
            .collect();
        let m = s.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
        let w: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = w.iter().sum();
        for e in 0..dv {
            let acc: f64 = (lo..hi)
                .map(|j| w[j - lo] * v[(r * l + j) * dv + e].to_f64())
                .sum();
            out.push(acc / z);
        }
    }
    out
}

/// Every 61st query of every row, plus each row's last 8.
fn sample(rows: usize, l: usize) -> Vec<(usize, usize)> {
    let mut w = Vec::new();
    for r in 0..rows {
        w.extend((0..l).step_by(61).map(|i| (r, i)));
        w.extend((l.saturating_sub(8)..l).map(|i| (r, i)));
    }
    w
}

fn pick(out: &[f64], dv: usize, l: usize, which: &[(usize, usize)]) -> Vec<f64> {
    which
        .iter()
        .flat_map(|&(r, i)| out[(r * l + i) * dv..][..dv].to_vec())
        .collect()
}

struct Case {
    rows: usize,
    l: usize,
    d: usize,
    causal: bool,
    window: Option<usize>,
}

/// Runs the case on the GPU (output NaN-poisoned first) and checks the sampled rows.
fn check<T: Element>(
    ctx: &Context,
    c: &Case,
    seed: u64,
    conv: impl Fn(&[f32]) -> Vec<T>,
    tol: f64,
) {
    let mut g = rng(seed);
    let n = c.rows * c.l * c.d;
    let (q, k, v) = (
        conv(&randn(&mut g, n, 1.0)),
        conv(&randn(&mut g, n, 1.0)),
        conv(&randn(&mut g, n, 1.0)),
    );
    let shape = [c.rows, c.l, c.d];
    let t = |x: &[T]| Tensor::from_slice(ctx, x, &shape).unwrap();
    let out = Tensor::<T>::nan(ctx, &shape).unwrap();
    let o = SoftmaxAttentionOptions {
        causal: c.causal,
        scale: None,
        ..Default::default()
    };
    let pos = PositionalOptions {
        window: c.window,
        ..Default::default()
    };
    softmax_attention_positional_into(ctx, &t(&q), &t(&k), &t(&v), &out, &o, &pos).unwrap();
    let got = to_f64(&out.to_vec(ctx).unwrap());
    let label = format!(
        "{} rows={} L={} D={} causal={} window={:?}",
        T::DTYPE,
        c.rows,
        c.l,
        c.d,
        c.causal,
        c.window
    );
    let zero_rows = got
        .chunks(c.d)
        .filter(|r| r.iter().all(|&x| x == 0.0))
        .count();
    assert_eq!(zero_rows, 0, "{label}: {zero_rows} rows of zeros");
    assert!(
        got.iter().all(|x| x.is_finite()),
        "{label}: non-finite output"
    );
    let which = sample(c.rows, c.l);
    let scale = o.scale_for(c.d) as f64;
    let want = direct(
        (&q, &k, &v),
        (c.l, c.d, c.d),
        scale,
        c.causal,
        c.window,
        &which,
    );
    let e = rel_err(&pick(&got, c.d, c.l, &which), &want);
    eprintln!("{label}: {e:.2e}");
    assert!(e <= tol, "{label}: relative error {e:.3e} > {tol:.1e}");
}

/// The case of issue 11.1: causal, B·H = 1, L = 8192, D = 64 (rows of zeros before).
#[test]
fn causal_l8192_d64_has_no_lost_rows() {
    let c = Case {
        rows: 1,
        l: 8192,
        d: 64,
        causal: true,
        window: None,
    };
    for fam in FAMILIES {
        check(fctx(fam, true), &c, 1, |x| x.to_vec(), TOL_F32);
    }
}

#[test]
fn causal_l16384_f16() {
    let c = Case {
        rows: 1,
        l: 16_384,
        d: 4,
        causal: true,
        window: None,
    };
    for fam in FAMILIES {
        check(fctx(fam, true), &c, 2, to_f16, TOL_F16);
    }
}

/// Non-causal: every tile walks all keys, across several segments; packed f16 too.
#[test]
fn non_causal_l5001() {
    let c = Case {
        rows: 1,
        l: 5001,
        d: 4,
        causal: false,
        window: None,
    };
    for fam in FAMILIES {
        check(fctx(fam, true), &c, 4, |x| x.to_vec(), TOL_F32);
        check(fctx(fam, false), &c, 3, to_f16, TOL_F16);
    }
}

/// L = 65 537 with a sliding window (O(L·w) work); tiles straddle key segments.
#[test]
fn windowed_l65537() {
    let c = Case {
        rows: 1,
        l: 65_537,
        d: 8,
        causal: true,
        window: Some(200),
    };
    for fam in FAMILIES {
        check(fctx(fam, true), &c, 5, |x| x.to_vec(), TOL_F32);
    }
}

/// DiagAttention at L = 65 537, blocks of 700: some blocks straddle key segments.
#[test]
fn diag_attention_l65537_both_weights() {
    let (rows, l, d) = (1, 65_537, 4);
    let mut g = rng(6);
    let n = rows * l * d;
    let (q, k, v) = (
        randn(&mut g, n, 0.5),
        randn(&mut g, n, 0.5),
        randn(&mut g, n, 1.0),
    );
    let shape = [rows, l, d];
    let dims = check_shapes("t", &shape, &shape, &shape).unwrap();
    for (fam, weights) in FAMILIES
        .into_iter()
        .flat_map(|f| [(f, DiagWeights::Softmax), (f, DiagWeights::Relu)])
    {
        let c = fctx(fam, true);
        let t = |x: &[f32]| Tensor::from_slice(c, x, &shape).unwrap();
        let opts = DiagAttentionOptions {
            block: 700,
            causal: true,
            weights,
            ..Default::default()
        };
        let out = Tensor::<f32>::nan(c, &shape).unwrap();
        let aff = Default::default();
        diag_attention_into(c, &t(&q), &t(&k), &t(&v), &aff, &out, &opts).unwrap();
        let got = to_f64(&out.to_vec(c).unwrap());
        let want = reference::attention::diag_attention(&q, &k, &v, &dims, &aff, &opts).unwrap();
        let e = rel_err(&got, &want);
        eprintln!("{fam:?} diag {weights:?}: {e:.2e}");
        assert!(
            e <= TOL_F32,
            "{fam:?} diag {weights:?}: relative error {e:.3e}"
        );
    }
}

/// One row larger than a storage binding (64 KiB here) runs, split along L, instead of failing
/// with TooLarge; f32 and both f16 paths.
#[test]
fn one_row_past_the_binding_limit_splits_along_l() {
    for fam in FAMILIES {
        past_the_binding_limit(fam);
    }
}

fn past_the_binding_limit(fam: longseq::attention::AttentionTiles) {
    let c64 = fctx_small(fam, 64 * 1024, true);
    let (rows, l, d) = (2, 3001, 8);
    for causal in [false, true] {
        let c = Case {
            rows,
            l,
            d,
            causal,
            window: None,
        };
        check(&c64, &c, 7, |x| x.to_vec(), TOL_F32);
        check(&c64, &c, 8, to_f16, TOL_F16);
    }
    let packed = fctx_small(fam, 64 * 1024, false);
    let c = Case {
        rows,
        l,
        d,
        causal: true,
        window: None,
    };
    check(&packed, &c, 9, to_f16, TOL_F16);
}

/// Logit scale 1e30: every logit is beyond ±1e30, so a "−1e30 = no key yet" sentinel gave 0/0
/// rows. With a real −∞ the softmax is the one-hot argmax, as in f64.
#[test]
fn huge_logit_scale_gives_the_argmax_not_nan() {
    let (rows, l, d) = (3, 200, 16);
    let mut g = rng(10);
    let n = rows * l * d;
    let (q, k, v) = (
        randn(&mut g, n, 1.0),
        randn(&mut g, n, 1.0),
        randn(&mut g, n, 1.0),
    );
    let shape = [rows, l, d];
    let dims = check_shapes("t", &shape, &shape, &shape).unwrap();
    for (fam, scale) in FAMILIES
        .into_iter()
        .flat_map(|f| [(f, 1e30f32), (f, -1e30)])
    {
        let c = fctx(fam, true);
        let t = |x: &[f32]| Tensor::from_slice(c, x, &shape).unwrap();
        for causal in [false, true] {
            let o = SoftmaxAttentionOptions {
                causal,
                scale: Some(scale),
                ..Default::default()
            };
            let out = Tensor::<f32>::nan(c, &shape).unwrap();
            softmax_attention_into(c, &t(&q), &t(&k), &t(&v), &out, &o).unwrap();
            let got = to_f64(&out.to_vec(c).unwrap());
            let want = reference::attention::softmax_attention(&q, &k, &v, &dims, &o).unwrap();
            assert!(want.iter().all(|x| x.is_finite()));
            let nan = got.iter().filter(|x| x.is_nan()).count();
            assert_eq!(
                nan, 0,
                "{fam:?} scale {scale} causal={causal}: {nan} NaN outputs"
            );
            assert_close(
                &format!("{fam:?} scale {scale} causal={causal}"),
                &got,
                &want,
                TOL_F32,
            );
        }
    }
}
