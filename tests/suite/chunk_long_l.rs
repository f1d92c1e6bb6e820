//! The chunk engine at long L (issue 11.1): no invocation may loop longer than lavapipe runs
//! (~65 535 iterations), so linear attention (causal and not) and Lightning are checked against
//! the f64 reference at L = 8192, 16384 and 65537 (NormAttention at 8192), both tile families; and
//! Lightning split along L past the binding limit (issue 11.4). Outputs are poisoned with NaN.

use crate::common;

use common::*;
use longseq::attention::linear::check_shapes;
use longseq::attention::{
    lightning_attention_into, linear_attention_into, norm_attention_into, Affine, FeatureMap,
    LightningOptions, LinearAttentionOptions, NormAttentionOptions,
};
use longseq::{reference, Context, ContextOptions, Tensor, TileFamily};

const LENS: [usize; 3] = [8192, 16384, 65537];

/// Normwise (common::assert_close) and elementwise `|g − w| ≤ atol + rtol·|w|`, with atol scaled
/// by the output's RMS so small-magnitude outputs cannot hide under the norm.
fn check(label: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_close(label, got, want, tol);
    let rms = (want.iter().map(|w| w * w).sum::<f64>() / want.len() as f64).sqrt();
    let (atol, rtol) = (tol * rms, 10.0 * tol);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= atol + rtol * w.abs(),
            "{label}: element {i}: {g} vs {w}"
        );
    }
}

fn inputs(l: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (dk, dv) = (8, 5);
    let mut g = rng(seed);
    (
        randn(&mut g, 2 * l * dk, 0.5),
        randn(&mut g, 2 * l * dk, 0.5),
        randn(&mut g, 2 * l * dv, 1.0),
    )
}

/// q, k, v `[2, L, 8]`, `[2, L, 5]` on `ctx`, and an output poisoned with NaN.
fn tensors(ctx: &Context, l: usize, x: &(Vec<f32>, Vec<f32>, Vec<f32>)) -> [Tensor<f32>; 4] {
    let (sk, sv) = ([2, l, 8], [2, l, 5]);
    [
        Tensor::from_slice(ctx, &x.0, &sk).unwrap(),
        Tensor::from_slice(ctx, &x.1, &sk).unwrap(),
        Tensor::from_slice(ctx, &x.2, &sv).unwrap(),
        Tensor::from_slice(ctx, &vec![f32::NAN; 2 * l * 5], &sv).unwrap(),
    ]
}

fn contexts() -> [&'static Context; 2] {
    [ctx(), ctx_gpu_tiles()]
}

#[test]
fn linear_attention_at_long_l() {
    for l in LENS {
        let x = inputs(l, l as u64);
        let d = check_shapes("t", &[2, l, 8], &[2, l, 8], &[2, l, 5]).unwrap();
        for causal in [false, true] {
            let o = LinearAttentionOptions {
                feature_map: FeatureMap::Elu1,
                causal,
                ..Default::default()
            };
            let want = reference::attention::linear_attention(&x.0, &x.1, &x.2, &d, &o).unwrap();
            for c in contexts() {
                let [q, k, v, out] = tensors(c, l, &x);
                linear_attention_into(c, &q, &k, &v, &out, &o).unwrap();
                let got = to_f64(&out.to_vec(c).unwrap());
                let label = format!("{:?} L={l} causal={causal}", c.tile_family());
                check(&label, &got, &want, TOL_F32);
            }
        }
    }
}

#[test]
fn lightning_at_long_l() {
    let slopes = [0.01f32, 0.3];
    for l in LENS {
        let x = inputs(l, 7 + l as u64);
        let d = check_shapes("t", &[2, l, 8], &[2, l, 8], &[2, l, 5]).unwrap();
        let o = LightningOptions::default();
        let want =
            reference::attention::lightning_attention(&x.0, &x.1, &x.2, &d, 2, Some(&slopes), &o)
                .unwrap();
        for c in contexts() {
            let [q, k, v, out] = tensors(c, l, &x);
            lightning_attention_into(c, &q, &k, &v, Some(&slopes), &out, &o).unwrap();
            let got = to_f64(&out.to_vec(c).unwrap());
            check(
                &format!("{:?} L={l}", c.tile_family()),
                &got,
                &want,
                TOL_F32,
            );
        }
    }
}

/// The NormAttention reference is the quadratic form, so one long L (the engine is the same).
#[test]
fn norm_attention_at_long_l() {
    for l in [8192] {
        let x = inputs(l, 11 + l as u64);
        let d = check_shapes("t", &[2, l, 8], &[2, l, 8], &[2, l, 5]).unwrap();
        for causal in [false, true] {
            let o = NormAttentionOptions {
                causal,
                feature_map: FeatureMap::Elu1,
                ..Default::default()
            };
            let aff = Affine::default();
            let want =
                reference::attention::norm_attention(&x.0, &x.1, &x.2, &d, &aff, &o).unwrap();
            for c in contexts() {
                let [q, k, v, out] = tensors(c, l, &x);
                norm_attention_into(c, &q, &k, &v, &aff, &out, &o).unwrap();
                let got = to_f64(&out.to_vec(c).unwrap());
                let label = format!("{:?} L={l} causal={causal}", c.tile_family());
                check(&label, &got, &want, TOL_F32);
            }
        }
    }
}

/// One Lightning row larger than a 64 KiB binding runs in segments of L carrying the decayed
/// state (issue 11.4), f32 and f16, both tile families.
#[test]
fn lightning_splits_one_row_along_l() {
    let l = 10_000;
    let x = inputs(l, 3);
    let d = check_shapes("t", &[2, l, 8], &[2, l, 8], &[2, l, 5]).unwrap();
    let slopes = [0.02f32, 0.5];
    let o = LightningOptions::default();
    for tiles in [TileFamily::Cpu, TileFamily::Gpu] {
        let c = open(ContextOptions {
            max_storage_binding_size: Some(64 * 1024),
            tiles: Some(tiles),
            ..Default::default()
        });
        let want =
            reference::attention::lightning_attention(&x.0, &x.1, &x.2, &d, 2, Some(&slopes), &o)
                .unwrap();
        let [q, k, v, out] = tensors(&c, l, &x);
        lightning_attention_into(&c, &q, &k, &v, Some(&slopes), &out, &o).unwrap();
        check(
            &format!("{tiles:?} f32"),
            &to_f64(&out.to_vec(&c).unwrap()),
            &want,
            TOL_F32,
        );
        let (qh, kh, vh) = (to_f16(&x.0), to_f16(&x.1), to_f16(&x.2));
        let (sk, sv) = ([2, l, 8], [2, l, 5]);
        let q = Tensor::from_slice(&c, &qh, &sk).unwrap();
        let k = Tensor::from_slice(&c, &kh, &sk).unwrap();
        let v = Tensor::from_slice(&c, &vh, &sv).unwrap();
        let out = Tensor::from_slice(&c, &to_f16(&vec![f32::NAN; 2 * l * 5]), &sv).unwrap();
        lightning_attention_into(&c, &q, &k, &v, Some(&slopes), &out, &o).unwrap();
        let want =
            reference::attention::lightning_attention(&qh, &kh, &vh, &d, 2, Some(&slopes), &o)
                .unwrap();
        check(
            &format!("{tiles:?} f16"),
            &to_f64(&out.to_vec(&c).unwrap()),
            &want,
            TOL_F16,
        );
    }
}

/// Non-causal runs sum the states of several chunks per `chunk_state` invocation (at this shape 2
/// with CPU tiles, 16 with GPU tiles; 47 chunks, so the last group is short), f32 and f16, both
/// tile families; and split along L past a 256 KiB binding, where each segment's groups add to
/// the carried sum.
#[test]
fn non_causal_state_groups_match_the_reference() {
    let (rows, l, dk, dv) = (5, 3000, 64, 64);
    let mut g = rng(47);
    let q = randn(&mut g, rows * l * dk, 0.5);
    let k = randn(&mut g, rows * l * dk, 0.5);
    let v = randn(&mut g, rows * l * dv, 1.0);
    let (sk, sv) = ([rows, l, dk], [rows, l, dv]);
    let d = check_shapes("t", &sk, &sk, &sv).unwrap();
    let split = |tiles| {
        open(ContextOptions {
            max_storage_binding_size: Some(256 * 1024),
            tiles: Some(tiles),
            ..Default::default()
        })
    };
    let (cpu_split, gpu_split) = (split(TileFamily::Cpu), split(TileFamily::Gpu));
    let cs: [&Context; 4] = [ctx(), ctx_gpu_tiles(), &cpu_split, &gpu_split];
    for fm in [FeatureMap::Elu1, FeatureMap::Relu] {
        let o = LinearAttentionOptions {
            feature_map: fm,
            causal: false,
            ..Default::default()
        };
        for (i, c) in cs.iter().enumerate() {
            let label = format!("{fm:?} {:?} split={}", c.tile_family(), i >= 2);
            let want = reference::attention::linear_attention(&q, &k, &v, &d, &o).unwrap();
            let [tq, tk, tv] = [(&q, &sk), (&k, &sk), (&v, &sv)]
                .map(|(x, s)| Tensor::from_slice(c, x, s).unwrap());
            let out = Tensor::<f32>::nan(c, &sv).unwrap();
            linear_attention_into(c, &tq, &tk, &tv, &out, &o).unwrap();
            check(&label, &to_f64(&out.to_vec(c).unwrap()), &want, TOL_F32);
            let (qh, kh, vh) = (to_f16(&q), to_f16(&k), to_f16(&v));
            let want = reference::attention::linear_attention(&qh, &kh, &vh, &d, &o).unwrap();
            let [tq, tk, tv] = [(&qh, &sk), (&kh, &sk), (&vh, &sv)]
                .map(|(x, s)| Tensor::from_slice(c, x, s).unwrap());
            let out = Tensor::<half::f16>::nan(c, &sv).unwrap();
            linear_attention_into(c, &tq, &tk, &tv, &out, &o).unwrap();
            let label = format!("{label} f16");
            check(&label, &to_f64(&out.to_vec(c).unwrap()), &want, TOL_F16);
        }
    }
}

/// Causal runs on CPU tiles whose rows × tiles fill the adapter scan inside `chunk_state`
/// (SCAN_IN): each (row, tile) runs every chunk in order from the carry. Linear (f32, f16),
/// Lightning and NormAttention at 16 rows × L = 1500 (ragged last chunk), Dk = Dv = 64; and one
/// row with Dk = Dv = 256 whole and split along L past a 1 MiB binding, where every segment
/// after the first starts from the carried (decayed) state.
#[test]
fn causal_scan_in_chunk_state_matches_the_reference() {
    let split = open(ContextOptions {
        max_storage_binding_size: Some(1024 * 1024),
        tiles: Some(TileFamily::Cpu),
        ..Default::default()
    });
    for (rows, l, dd, cs) in [
        (16, 1500, 64, vec![ctx()]),
        (1, 3000, 256, vec![ctx(), &split]),
    ] {
        let mut g = rng(rows as u64 + dd as u64);
        let q = randn(&mut g, rows * l * dd, 0.3);
        let k = randn(&mut g, rows * l * dd, 0.3);
        let v = randn(&mut g, rows * l * dd, 1.0);
        let sh = [rows, l, dd];
        let d = check_shapes("t", &sh, &sh, &sh).unwrap();
        let slopes: Vec<f32> = (0..rows).map(|h| 0.002 + 0.05 * h as f32).collect();
        for c in cs {
            let label = format!("rows={rows} L={l} D={dd} split={}", !std::ptr::eq(c, ctx()));
            let [tq, tk, tv] = [&q, &k, &v].map(|x| Tensor::from_slice(c, x, &sh).unwrap());
            let o = LinearAttentionOptions {
                feature_map: FeatureMap::Elu1,
                causal: true,
                ..Default::default()
            };
            let want = reference::attention::linear_attention(&q, &k, &v, &d, &o).unwrap();
            let out = Tensor::<f32>::nan(c, &sh).unwrap();
            linear_attention_into(c, &tq, &tk, &tv, &out, &o).unwrap();
            check(
                &format!("linear {label}"),
                &to_f64(&out.to_vec(c).unwrap()),
                &want,
                TOL_F32,
            );
            let lo = LightningOptions::default();
            let want =
                reference::attention::lightning_attention(&q, &k, &v, &d, rows, Some(&slopes), &lo)
                    .unwrap();
            let out = Tensor::<f32>::nan(c, &sh).unwrap();
            lightning_attention_into(c, &tq, &tk, &tv, Some(&slopes), &out, &lo).unwrap();
            check(
                &format!("lightning {label}"),
                &to_f64(&out.to_vec(c).unwrap()),
                &want,
                TOL_F32,
            );
            if dd == 64 {
                let no = NormAttentionOptions {
                    causal: true,
                    feature_map: FeatureMap::Elu1,
                    ..Default::default()
                };
                let aff = Affine::default();
                let want = reference::attention::norm_attention(&q, &k, &v, &d, &aff, &no).unwrap();
                let out = Tensor::<f32>::nan(c, &sh).unwrap();
                norm_attention_into(c, &tq, &tk, &tv, &aff, &out, &no).unwrap();
                check(
                    &format!("norm {label}"),
                    &to_f64(&out.to_vec(c).unwrap()),
                    &want,
                    TOL_F32,
                );
                let (qh, kh, vh) = (to_f16(&q), to_f16(&k), to_f16(&v));
                let want = reference::attention::linear_attention(&qh, &kh, &vh, &d, &o).unwrap();
                let [tq, tk, tv] = [&qh, &kh, &vh].map(|x| Tensor::from_slice(c, x, &sh).unwrap());
                let out = Tensor::<half::f16>::nan(c, &sh).unwrap();
                linear_attention_into(c, &tq, &tk, &tv, &out, &o).unwrap();
                let got = to_f64(&out.to_vec(c).unwrap());
                check(&format!("linear f16 {label}"), &got, &want, TOL_F16);
            }
        }
    }
}
