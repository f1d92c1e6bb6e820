//! ±Inf inputs (issue 11, item 2): the GPU's and the CPU path's NaN / ±Inf pattern must equal the
//! f64 reference's exactly (same positions NaN, same positions ±Inf with the same sign) for
//! NormAttention (causal and not) and Lightning with ±Inf in q, k or v. The reference's pattern is
//! the definition's, `o_i = Σ_j λ^(i−j) (φ(q_i)·φ(k_j)) v_j` (Norm: λ = 1, then the norm).

use crate::common;

use common::*;
use longseq::attention::linear::check_shapes;
use longseq::attention::{
    lightning_attention_into, norm_attention_into, Affine, FeatureMap, LightningOptions,
    NormAttentionOptions,
};
use longseq::{cpu, reference, Context, Tensor};

const ROWS: usize = 2;
const L: usize = 37;
const DK: usize = 6;
const DV: usize = 5;

/// Pattern of one output: 0 finite, 1 NaN, 2 +Inf, 3 −Inf.
fn pattern(x: &[f64]) -> Vec<u8> {
    x.iter()
        .map(|v| match v {
            v if v.is_nan() => 1,
            v if *v == f64::INFINITY => 2,
            v if *v == f64::NEG_INFINITY => 3,
            _ => 0,
        })
        .collect()
}

/// Differences between the patterns: (count, first index).
fn mismatch(got: &[f64], want: &[f64]) -> (usize, Option<usize>) {
    let (g, w) = (pattern(got), pattern(want));
    let bad: Vec<usize> = (0..g.len()).filter(|&i| g[i] != w[i]).collect();
    (bad.len(), bad.first().copied())
}

fn inputs(seed: u64) -> [Vec<f32>; 3] {
    let mut g = rng(seed);
    [
        randn(&mut g, ROWS * L * DK, 0.5),
        randn(&mut g, ROWS * L * DK, 0.5),
        randn(&mut g, ROWS * L * DV, 1.0),
    ]
}

fn tensors(c: &Context, x: &[Vec<f32>; 3]) -> [Tensor<f32>; 4] {
    let (sk, sv) = ([ROWS, L, DK], [ROWS, L, DV]);
    [
        Tensor::from_slice(c, &x[0], &sk).unwrap(),
        Tensor::from_slice(c, &x[1], &sk).unwrap(),
        Tensor::from_slice(c, &x[2], &sv).unwrap(),
        Tensor::from_slice(c, &vec![f32::NAN; ROWS * L * DV], &sv).unwrap(),
    ]
}

/// (which input, flat index, value) placements: one entry of one row of L, mid-sequence, and a
/// query at t = 0 (the state entering the first chunk is an empty sum: no Inf·0 there).
fn placements() -> Vec<(usize, usize, f32)> {
    let mut p = Vec::new();
    for inf in [f32::INFINITY, f32::NEG_INFINITY] {
        p.push((2, (L / 2) * DV + 1, inf));
        p.push((1, (L / 3) * DK + 2, inf));
        p.push((0, (L / 2) * DK + 3, inf));
        p.push((0, 3, inf));
    }
    p
}

fn report(label: &str, got: &[f64], want: &[f64]) -> usize {
    let (n, first) = mismatch(got, want);
    let count = |x: &[f64], k: u8| pattern(x).iter().filter(|&&p| p == k).count();
    eprintln!(
        "{label}: mismatches {n} (first {first:?}); gpu NaN {} +Inf {} −Inf {}; ref NaN {} +Inf {} −Inf {}",
        count(got, 1),
        count(got, 2),
        count(got, 3),
        count(want, 1),
        count(want, 2),
        count(want, 3)
    );
    n
}

/// Causal and not, GPU (both tile families) and CPU path. Before: non-causal with ±Inf in v gave
/// 185 NaN where the reference has 37 (0·Inf in the chunk state's zero-padded feature rows).
#[test]
fn norm_attention_inf_patterns_follow_the_reference() {
    let d = check_shapes("t", &[ROWS, L, DK], &[ROWS, L, DK], &[ROWS, L, DV]).unwrap();
    let mut bad = 0;
    for (which, at, val) in placements() {
        let mut x = inputs(5);
        x[which][at] = val;
        for causal in [false, true] {
            let o = NormAttentionOptions {
                causal,
                feature_map: FeatureMap::Elu1,
                ..Default::default()
            };
            let aff = Affine::default();
            let want =
                reference::attention::norm_attention(&x[0], &x[1], &x[2], &d, &aff, &o).unwrap();
            let label = format!("norm input {which} at {at} {val} causal={causal}");
            for c in [ctx(), ctx_gpu_tiles()] {
                let [q, k, v, out] = tensors(c, &x);
                norm_attention_into(c, &q, &k, &v, &aff, &out, &o).unwrap();
                let got = to_f64(&out.to_vec(c).unwrap());
                bad += report(&format!("gpu {label}"), &got, &want);
            }
            let mut got = vec![f32::NAN; ROWS * L * DV];
            cpu::attention::norm_attention(&x[0], &x[1], &x[2], &d, &aff, &o, &mut got).unwrap();
            bad += report(&format!("cpu {label}"), &to_f64(&got), &want);
        }
    }
    assert_eq!(bad, 0, "NaN/±Inf patterns differ from the reference");
}

/// One block (L < 64): exact. Before (reference as the plain recurrence `φ(q_t)·S_t`): ±Inf in v
/// gave 19 ±Inf on the GPU where the reference had NaN (the state form sums ±Inf over features;
/// the definition's terms are `sign(φ(q)·φ(k))·Inf`), ±Inf in q gave 5 NaN where it had ±Inf.
#[test]
fn lightning_inf_patterns_follow_the_reference() {
    let d = check_shapes("t", &[ROWS, L, DK], &[ROWS, L, DK], &[ROWS, L, DV]).unwrap();
    let slopes = [0.05f32, 0.4];
    let o = LightningOptions::default();
    let mut bad = 0;
    for (which, at, val) in placements() {
        let mut x = inputs(6);
        x[which][at] = val;
        bad += lightning_case(&x, &d, &slopes, &o, &format!("input {which} at {at} {val}"));
    }
    assert_eq!(bad, 0, "NaN/±Inf patterns differ from the reference");
}

/// Across blocks (block 8) with a positive feature map: ±Inf in k or v reaches later blocks
/// through the state and keeps the definition's pattern.
#[test]
fn lightning_inf_in_k_or_v_across_blocks_follows_the_reference() {
    let d = check_shapes("t", &[ROWS, L, DK], &[ROWS, L, DK], &[ROWS, L, DV]).unwrap();
    let slopes = [0.05f32, 0.4];
    let o = LightningOptions {
        block: Some(8),
        feature_map: FeatureMap::Elu1,
        ..Default::default()
    };
    let mut bad = 0;
    for (which, at, val) in placements().into_iter().filter(|p| p.0 != 0) {
        let mut x = inputs(7);
        x[which][at] = val;
        bad += lightning_case(&x, &d, &slopes, &o, &format!("block 8 input {which} {val}"));
    }
    assert_eq!(bad, 0, "NaN/±Inf patterns differ from the reference");
}

/// Across blocks (block 8) with features of both signs (identity map) and ±Inf in q, k or v, and
/// with elu+1 and ±Inf in q. Before (the state form `φ(q_t)·S` across blocks, GPU and CPU path):
/// an Inf in v gave NaN where the definition has `sign(φ(q_t)·φ(k_j))·Inf`, an Inf in q gave ±Inf
/// where the definition has NaN: 75 mismatches in all (e.g. ±Inf in v at token 91: 26 NaN where
/// the reference has 15, 11 mismatches per run). After: 0 mismatches.
#[test]
fn lightning_inf_in_q_and_mixed_sign_features_across_blocks_follow_the_reference() {
    let d = check_shapes("t", &[ROWS, L, DK], &[ROWS, L, DK], &[ROWS, L, DV]).unwrap();
    let slopes = [0.05f32, 0.4];
    let mut bad = 0;
    for fm in [FeatureMap::Identity, FeatureMap::Elu1] {
        let o = LightningOptions {
            block: Some(8),
            feature_map: fm,
            ..Default::default()
        };
        for (which, at, val) in placements() {
            if fm == FeatureMap::Elu1 && which != 0 {
                continue; // covered above
            }
            let mut x = inputs(8);
            x[which][at] = val;
            // A second non-finite value in another row: NaN in k late in the row.
            x[1][(L + L - 3) * DK + 1] = f32::NAN;
            let label = format!("block 8 {fm:?} input {which} at {at} {val}");
            bad += lightning_case(&x, &d, &slopes, &o, &label);
        }
    }
    assert_eq!(bad, 0, "NaN/±Inf patterns differ from the reference");
}

/// Long rows: Dk = 64 keeps the definition-order pass to ~600 keys per dispatch, so L = 1500
/// takes three dispatches; an Inf in q late in the row and one in v early, identity map.
/// Before (state form across chunks): 1372 mismatches (1375 NaN where the reference has 3).
#[test]
fn lightning_inf_patterns_hold_over_several_key_blocks() {
    let (rows, l, dk, dv) = (2usize, 1500usize, 64usize, 3usize);
    let d = check_shapes("t", &[rows, l, dk], &[rows, l, dk], &[rows, l, dv]).unwrap();
    let mut g = rng(9);
    let mut x = [
        randn(&mut g, rows * l * dk, 0.3),
        randn(&mut g, rows * l * dk, 0.3),
        randn(&mut g, rows * l * dv, 1.0),
    ];
    x[0][1400 * dk + 5] = f32::INFINITY;
    x[2][(l + 100) * dv + 2] = f32::NEG_INFINITY;
    let slopes = [0.001f32, 0.01];
    let o = LightningOptions {
        feature_map: FeatureMap::Identity,
        ..Default::default()
    };
    let want =
        reference::attention::lightning_attention(&x[0], &x[1], &x[2], &d, 2, Some(&slopes), &o)
            .unwrap();
    let c = ctx();
    let t = |v: &[f32], n| Tensor::from_slice(c, v, &[rows, l, n]).unwrap();
    let (q, k, v) = (t(&x[0], dk), t(&x[1], dk), t(&x[2], dv));
    let out = Tensor::<f32>::nan(c, &[rows, l, dv]).unwrap();
    lightning_attention_into(c, &q, &k, &v, Some(&slopes), &out, &o).unwrap();
    let got = to_f64(&out.to_vec(c).unwrap());
    assert_eq!(report("gpu lightning L=1500", &got, &want), 0);
    let fin = |x: &[f64]| {
        x.iter()
            .map(|v| if v.is_finite() { *v } else { 0.0 })
            .collect()
    };
    let (gf, wf): (Vec<f64>, Vec<f64>) = (fin(&got), fin(&want));
    assert_close_both("finite outputs", &gf, &wf, TOL_F32);
}

/// Packed sequences in `[B, L, H, D]` with ±Inf across blocks (identity map): the pass follows
/// each sequence's start and the layout's strides; the per-sequence reference is the definition.
/// Before: 58 mismatches over both tile families (±Inf in v gave NaN across blocks).
#[test]
fn lightning_varlen_blhd_inf_patterns_follow_the_reference() {
    use longseq::attention::lightning_attention_varlen_into;
    use longseq::attention::linear::check_gqa;
    use longseq::types::{CuSeqlens, Layout};
    let (h, l, dk, dv) = (2usize, 50usize, 4usize, 3usize);
    let layout = Layout::Blhd;
    let (sq, sv) = (layout.shape(1, h, l, dk), layout.shape(1, h, l, dv));
    let dims = check_gqa("t", &sq, &sq, &sv, layout, true).unwrap();
    let cu = CuSeqlens::new("t", &[0, 20, 50], l).unwrap();
    let slopes = [0.05f32, 0.3];
    let o = LightningOptions {
        layout,
        block: Some(8),
        feature_map: FeatureMap::Identity,
    };
    let mut bad = 0;
    for (which, tok, val) in [
        (0usize, 30usize, f32::INFINITY),
        (2, 22, f32::NEG_INFINITY),
        (1, 5, f32::INFINITY),
        (2, 3, f32::INFINITY),
    ] {
        let mut g = rng(10 + tok as u64);
        let mut x = [
            randn(&mut g, h * l * dk, 0.5),
            randn(&mut g, h * l * dk, 0.5),
            randn(&mut g, h * l * dv, 1.0),
        ];
        let w = if which == 2 { dv } else { dk };
        x[which][(tok * h + 1) * w + 1] = val; // head 1 of token `tok`
        let (want, _) = reference::attention::lightning_attention_varlen(
            (&x[0], &x[1], &x[2]),
            &dims,
            &slopes,
            o.feature_map,
            Some(&cu),
            None,
        )
        .unwrap();
        for c in [ctx(), ctx_gpu_tiles()] {
            let t = |v: &[f32], s: &[usize]| Tensor::from_slice(c, v, s).unwrap();
            let (q, k, v) = (t(&x[0], &sq), t(&x[1], &sq), t(&x[2], &sv));
            let out = Tensor::<f32>::nan(c, &sv).unwrap();
            lightning_attention_varlen_into(c, &q, &k, &v, Some(&slopes), &cu, &out, &o).unwrap();
            let got = to_f64(&out.to_vec(c).unwrap());
            bad += report(
                &format!("varlen blhd input {which} token {tok}"),
                &got,
                &want,
            );
        }
    }
    assert_eq!(bad, 0, "NaN/±Inf patterns differ from the reference");
}

/// The batch reference (layouts, packing, state) follows the definition as the plain one does:
/// before, it ran the recurrence `φ(q_t)·S_t` and gave ±Inf where the definition has NaN.
#[test]
fn batch_reference_follows_the_definition_with_inf() {
    use longseq::attention::linear::check_gqa;
    use longseq::types::Layout;
    let d = check_shapes("t", &[ROWS, L, DK], &[ROWS, L, DK], &[ROWS, L, DV]).unwrap();
    let shape_k = [1, ROWS, L, DK];
    let dims = check_gqa(
        "t",
        &shape_k,
        &shape_k,
        &[1, ROWS, L, DV],
        Layout::Bhld,
        true,
    )
    .unwrap();
    let slopes = [0.05f32, 0.4];
    let o = LightningOptions {
        feature_map: FeatureMap::Identity,
        ..Default::default()
    };
    let mut bad = 0;
    for (which, at, val) in placements() {
        let mut x = inputs(11);
        x[which][at] = val;
        let want = reference::attention::lightning_attention(
            &x[0],
            &x[1],
            &x[2],
            &d,
            ROWS,
            Some(&slopes),
            &o,
        )
        .unwrap();
        let (got, _) = reference::attention::lightning_attention_batch(
            (&x[0], &x[1], &x[2]),
            &dims,
            &slopes,
            o.feature_map,
            None,
        )
        .unwrap();
        bad += report(&format!("batch reference input {which} {val}"), &got, &want);
    }
    assert_eq!(
        bad, 0,
        "the batch reference's pattern differs from the definition's"
    );
}

/// Mismatches of the GPU (both tile families) and the CPU path against the reference.
fn lightning_case(
    x: &[Vec<f32>; 3],
    d: &longseq::attention::linear::AttnDims,
    slopes: &[f32],
    o: &LightningOptions,
    label: &str,
) -> usize {
    let want =
        reference::attention::lightning_attention(&x[0], &x[1], &x[2], d, 2, Some(slopes), o)
            .unwrap();
    let mut bad = 0;
    for c in [ctx(), ctx_gpu_tiles()] {
        let [q, k, v, out] = tensors(c, x);
        lightning_attention_into(c, &q, &k, &v, Some(slopes), &out, o).unwrap();
        let got = to_f64(&out.to_vec(c).unwrap());
        bad += report(&format!("gpu lightning {label}"), &got, &want);
    }
    let got =
        cpu::attention::lightning_attention(&x[0], &x[1], &x[2], d, 2, Some(slopes), o).unwrap();
    bad + report(&format!("cpu lightning {label}"), &to_f64(&got), &want)
}

/// NormAttention across chunks (L = 150: three chunks of 64), causal, features of both signs
/// (identity and elu maps), ±Inf in q, k or v, GPU (both tile families) and CPU path. The chunk
/// state sums ±Inf over features where the definition has `sign(φ(q_i)·φ(k_j))·Inf` per term.
#[test]
fn norm_attention_inf_across_chunks_follows_the_reference() {
    let (rows, l, dk, dv) = (2usize, 150usize, 6usize, 5usize);
    let d = check_shapes("t", &[rows, l, dk], &[rows, l, dk], &[rows, l, dv]).unwrap();
    let mut bad = 0;
    let places = [
        (2, 20 * dv + 1, f32::INFINITY),
        (2, 90 * dv + 2, f32::NEG_INFINITY),
        (1, 30 * dk + 2, f32::INFINITY),
        (0, 100 * dk + 3, f32::INFINITY),
        (0, (l + 70) * dk + 1, f32::NEG_INFINITY),
    ];
    for fm in [FeatureMap::Identity, FeatureMap::Elu] {
        for &(which, at, val) in &places {
            let mut g = rng(12);
            let mut x = [
                randn(&mut g, rows * l * dk, 0.5),
                randn(&mut g, rows * l * dk, 0.5),
                randn(&mut g, rows * l * dv, 1.0),
            ];
            x[which][at] = val;
            let o = NormAttentionOptions {
                causal: true,
                feature_map: fm,
                ..Default::default()
            };
            let aff = Affine::default();
            let want =
                reference::attention::norm_attention(&x[0], &x[1], &x[2], &d, &aff, &o).unwrap();
            let label = format!("norm L=150 {fm:?} input {which} at {at} {val}");
            for c in [ctx(), ctx_gpu_tiles()] {
                let t = |x: &[f32], s: &[usize]| Tensor::from_slice(c, x, s).unwrap();
                let (sk, sv) = ([rows, l, dk], [rows, l, dv]);
                let out = Tensor::<f32>::nan(c, &sv).unwrap();
                let (q, k, v) = (t(&x[0], &sk), t(&x[1], &sk), t(&x[2], &sv));
                norm_attention_into(c, &q, &k, &v, &aff, &out, &o).unwrap();
                let got = to_f64(&out.to_vec(c).unwrap());
                bad += report(&format!("gpu {label}"), &got, &want);
            }
            let mut got = vec![f32::NAN; rows * l * dv];
            cpu::attention::norm_attention(&x[0], &x[1], &x[2], &d, &aff, &o, &mut got).unwrap();
            bad += report(&format!("cpu {label}"), &to_f64(&got), &want);
        }
    }
    assert_eq!(bad, 0, "NaN/±Inf patterns differ from the reference");
}

/// Lightning with an initial state (issue 11, item 4): the state's term `λ^(t+1) φ(q_t)·S_0` is a
/// sum over features in the definition too, so with ±Inf in q it is ±Inf or NaN there; the
/// definition-order pass must add it to the entries it recomputes. L = 150 over blocks of 8,
/// identity map (features of both signs), GPU (both tile families) vs the batch reference.
/// Before (the pass left the state's term out): ±Inf where the reference has NaN early in a row.
#[test]
fn lightning_with_initial_state_inf_follows_the_reference() {
    use longseq::attention::lightning_attention_with_state;
    use longseq::attention::linear::check_gqa;
    use longseq::types::Layout;
    let (h, l, dk, dv) = (2usize, 150usize, 6usize, 5usize);
    let (sk, sv) = ([1, h, l, dk], [1, h, l, dv]);
    let dims = check_gqa("t", &sk, &sk, &sv, Layout::Bhld, true).unwrap();
    let slopes = [0.05f32, 0.4];
    let o = LightningOptions {
        block: Some(8),
        feature_map: FeatureMap::Identity,
        ..Default::default()
    };
    // ±Inf in q early in a row (few key terms, so the state's term decides the sign or NaN),
    // late in a row, and in k or v.
    let places = [
        (0, 3, f32::INFINITY),
        (0, 2 * dk + 1, f32::NEG_INFINITY),
        (0, (l + 1) * dk + 4, f32::INFINITY),
        (0, 100 * dk + 3, f32::INFINITY),
        (2, 30 * dv + 1, f32::INFINITY),
        (1, 60 * dk + 2, f32::NEG_INFINITY),
    ];
    let mut bad = 0;
    for &(which, at, val) in &places {
        let mut g = rng(21);
        let mut x = [
            randn(&mut g, h * l * dk, 0.5),
            randn(&mut g, h * l * dk, 0.5),
            randn(&mut g, h * l * dv, 1.0),
        ];
        let s0 = randn(&mut g, h * dk * dv, 1.0);
        x[which][at] = val;
        let s0_64: Vec<f64> = s0.iter().map(|&y| y as f64).collect();
        let (want, _) = reference::attention::lightning_attention_batch(
            (&x[0], &x[1], &x[2]),
            &dims,
            &slopes,
            o.feature_map,
            Some(&s0_64),
        )
        .unwrap();
        for c in [ctx(), ctx_gpu_tiles()] {
            let t = |y: &[f32], s: &[usize]| Tensor::from_slice(c, y, s).unwrap();
            let (q, k, v) = (t(&x[0], &sk), t(&x[1], &sk), t(&x[2], &sv));
            let ts0 = t(&s0, &[1, h, dk, dv]);
            let (out, _) =
                lightning_attention_with_state(c, &q, &k, &v, Some(&slopes), Some(&ts0), &o)
                    .unwrap();
            let got = to_f64(&out.to_vec(c).unwrap());
            let label = format!("gpu lightning S0 input {which} at {at} {val}");
            bad += report(&label, &got, &want);
        }
    }
    assert_eq!(bad, 0, "NaN/±Inf patterns differ from the reference");
}
