//! f16 without SHADER_F16 (outputs staged in f32 and packed into words) with packed sequences
//! whose last offset < L: every op leaves the tokens past the last offset bit-identical to what
//! the output held (here NaNs with varied payloads and signs), and writes every covered token.
//! The values of the covered tokens are checked against the references in each op's own tests.

use crate::common;

use common::*;
use half::f16;
use longseq::attention::{
    favor_attention_batch_into, gla_into, linear_attention_varlen_into, FavorKind, FavorOptions,
    FeatureMap, GlaInputs, LinearAttentionOptions,
};
use longseq::ssm::{
    s4d_conv_batch_into, s4d_init, s4d_scan_batch_into, ssd_into, DiagonalSsm, Discretization,
    S4dBatch, S4dInit, SsdInputs,
};
use longseq::types::batch::{CuSeqlens, Layout};
use longseq::{Context, Tensor};
use num_complex::Complex64;

/// Packed length and offsets: 9 tokens past the last offset, an empty sequence.
const L: usize = 150;
const CU: [i64; 5] = [0, 15, 15, 100, 141];
const LAST: usize = 141;

fn randn_f16(c: &Context, shape: &[usize], seed: u64, sigma: f32) -> Tensor<f16> {
    let n = shape.iter().product();
    let x: Vec<f16> = randn(&mut rng(seed), n, sigma)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    Tensor::from_slice(c, &x, shape).unwrap()
}

/// An output of NaNs with varied payloads and signs (quiet and signalling), and their bits.
fn poisoned(c: &Context, shape: &[usize]) -> (Tensor<f16>, Vec<u16>) {
    let n: usize = shape.iter().product();
    let bits: Vec<u16> = (0..n)
        .map(|i| 0x7C01 | ((i * 37) as u16 & 0x3FF) | ((i as u16 & 1) << 15))
        .collect();
    let x: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b)).collect();
    (Tensor::from_slice(c, &x, shape).unwrap(), bits)
}

/// `out` ([1, L, ...] seq-first): tokens past LAST keep `bits`, the others are written (finite).
fn check_tail(label: &str, c: &Context, out: &Tensor<f16>, bits: &[u16]) {
    let got: Vec<u16> = out.to_vec(c).unwrap().iter().map(|x| x.to_bits()).collect();
    let per_token = got.len() / L;
    let cut = LAST * per_token;
    assert_eq!(
        &got[cut..],
        &bits[cut..],
        "{label}: a token past the last offset changed"
    );
    let covered = got[..cut].iter().map(|&b| f16::from_bits(b));
    assert!(
        covered.clone().all(|x| x.is_finite()),
        "{label}: a covered token was not written"
    );
}

#[test]
fn linear_favor_gla_ssd_and_s4d_keep_the_tail_bit_for_bit() {
    let c = ctx_packed();
    assert!(!c.shader_f16(), "f16 through the packed-u32 path");
    let cu = CuSeqlens::new("test", &CU, L).unwrap();
    let (h, d) = (3, 12);
    let sh = [1, L, h, d];
    let [q, k, v] = [1, 2, 3].map(|s| randn_f16(c, &sh, s, 0.5));

    for causal in [false, true] {
        let o = LinearAttentionOptions {
            feature_map: FeatureMap::Elu1,
            causal,
            denominator: true,
            layout: Layout::Blhd,
            ..Default::default()
        };
        let (out, bits) = poisoned(c, &sh);
        linear_attention_varlen_into(c, &q, &k, &v, &cu, &out, &o).unwrap();
        check_tail(&format!("linear causal={causal}"), c, &out, &bits);

        let w = Tensor::from_slice(c, &randn(&mut rng(4), 16 * d, 1.0), &[16, d]).unwrap();
        let fo = FavorOptions {
            kind: FavorKind::Positive,
            causal,
        };
        let (out, bits) = poisoned(c, &sh);
        favor_attention_batch_into(c, (&q, &k, &v), &w, Layout::Blhd, Some(&cu), &out, &fo)
            .unwrap();
        check_tail(&format!("favor causal={causal}"), c, &out, &bits);
    }

    // GLA: log gates in (-1, 0).
    let g: Vec<f16> = randn(&mut rng(5), L * h * d, 1.0)
        .iter()
        .map(|x| f16::from_f32(-0.05 - 0.5 * x.abs().min(1.8)))
        .collect();
    let g = Tensor::from_slice(c, &g, &sh).unwrap();
    let mut x = GlaInputs::new(&q, &k, &v, &g);
    (x.layout, x.cu_seqlens) = (Layout::Blhd, Some(&cu));
    let (out, bits) = poisoned(c, &sh);
    let last = Tensor::<f32>::empty(c, &[CU.len() - 1, h, d, d]).unwrap();
    gla_into(c, &x, &out, &last).unwrap();
    check_tail("gla", c, &out, &bits);

    // SSD: X [1, L, h, p], A [1, L, h] (log decays < 0), B, C [1, L, h, n].
    let (p, n) = (5, 4);
    let xs = randn_f16(c, &[1, L, h, p], 6, 1.0);
    let a: Vec<f16> = randn(&mut rng(7), L * h, 1.0)
        .iter()
        .map(|x| f16::from_f32(-0.1 - x.abs().min(2.0)))
        .collect();
    let a = Tensor::from_slice(c, &a, &[1, L, h]).unwrap();
    let (b, cc) = (
        randn_f16(c, &[1, L, h, n], 8, 0.5),
        randn_f16(c, &[1, L, h, n], 9, 0.5),
    );
    let mut si = SsdInputs::new(&xs, &a, &b, &cc);
    si.cu_seqlens = Some(&cu);
    let (out, bits) = poisoned(c, &[1, L, h, p]);
    let last = Tensor::<f32>::empty(c, &[CU.len() - 1, h, n, p]).unwrap();
    ssd_into(c, &si, &out, &last).unwrap();
    check_tail("ssd", c, &out, &bits);

    // S4D scan and convolution, u, y: [1, L, H].
    let n2 = 8;
    let a1 = s4d_init(S4dInit::Lin, n2).unwrap();
    let host = longseq::types::ssm::DiagonalSsm {
        h,
        n2,
        a: (0..h).flat_map(|_| a1.clone()).collect(),
        b: vec![Complex64::new(1.0, 0.0); h * n2],
        c: (0..h * n2)
            .map(|i| Complex64::new(0.5, 0.1 * i as f64))
            .collect(),
        dt: vec![0.01, 0.03, 0.1],
        d: vec![0.5, -0.5, 0.25],
    };
    let m = DiagonalSsm::<f16>::from_host(c, &host).unwrap();
    let u = randn_f16(c, &[1, L, h], 10, 1.0);
    let opts = S4dBatch {
        layout: Layout::Blhd,
        cu_seqlens: Some(&cu),
        initial_state: None,
    };
    let fin = Tensor::<f32>::empty(c, &[CU.len() - 1, h, n2, 2]).unwrap();
    let disc = Discretization::Zoh;
    let (out, bits) = poisoned(c, &[1, L, h]);
    s4d_scan_batch_into(c, &m, &u, disc, &opts, (&out, &fin)).unwrap();
    check_tail("s4d scan", c, &out, &bits);
    let (out, bits) = poisoned(c, &[1, L, h]);
    s4d_conv_batch_into(c, &m, &u, disc, &opts, (&out, &fin)).unwrap();
    check_tail("s4d conv", c, &out, &bits);
}
