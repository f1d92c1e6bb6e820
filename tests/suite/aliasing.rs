//! An output that aliases an input is refused the same way by every op family: the driver's
//! `Error::InvalidArgument { name: "out", .. }` naming the input, before any work is recorded,
//! and the input is left as it was. (Issue 11, item 5: `s4d_scan_into` with out = u used to give
//! `Error::Device`, `linear_scan_into` with h = b silently worked in place.)

use crate::common;

use common::*;
use longseq::attention::{
    favor_attention_into, lightning_attention_into, linear_attention_into, softmax_attention_into,
    FavorOptions, LightningOptions, LinearAttentionOptions, SoftmaxAttentionOptions,
};
use longseq::positions::{embedding_into, rope_into, Positions, RopeOptions};
use longseq::ssm::{
    causal_conv_into, linear_scan_into, s4d_init, s4d_kernel_into, s4d_scan_into, DiagonalSsm,
    Discretization, S4dInit, ScanOperands,
};
use longseq::types::ssm::DiagonalSsm as HostSsm;
use longseq::{Error, Result, Tensor};
use num_complex::Complex64;

/// `r` is the driver's alias error naming `input`, and `t` still holds `before`.
fn refused(label: &str, r: Result<()>, input: &str, t: &Tensor<f32>, before: &[f32]) {
    match r {
        Err(Error::InvalidArgument {
            name: "out",
            reason,
            ..
        }) => assert!(
            reason.contains(&format!("aliases input `{input}`")),
            "{label}: reason `{reason}` does not name `{input}`"
        ),
        other => panic!("{label}: expected the alias error, got {other:?}"),
    }
    assert_eq!(
        t.to_vec(ctx()).unwrap(),
        before,
        "{label}: the input changed"
    );
}

fn tensor(seed: u64, shape: &[usize]) -> (Tensor<f32>, Vec<f32>) {
    let n = shape.iter().product();
    let x = randn(&mut rng(seed), n, 0.8);
    (Tensor::from_slice(ctx(), &x, shape).unwrap(), x)
}

#[test]
fn scans_refuse_an_output_aliasing_an_input() {
    let c = ctx();
    let (a, _) = tensor(1, &[2, 3, 11]);
    let (b, bx) = tensor(2, &[2, 3, 11]);
    let ops = ScanOperands {
        a_re: &a,
        a_im: None,
        b_re: &b,
        b_im: None,
    };
    refused(
        "linear_scan_into h = b",
        linear_scan_into(c, &ops, &b, None),
        "b_re",
        &b,
        &bx,
    );

    let (h, n2, len) = (3, 5, 11);
    let a1 = s4d_init(S4dInit::Lin, n2).unwrap();
    let cn = |z: f32| Complex64::new(z as f64, 0.3);
    let host = HostSsm {
        h,
        n2,
        a: (0..h).flat_map(|_| a1.clone()).collect(),
        b: randn(&mut rng(3), h * n2, 0.7)
            .into_iter()
            .map(cn)
            .collect(),
        c: randn(&mut rng(4), h * n2, 0.7)
            .into_iter()
            .map(cn)
            .collect(),
        dt: vec![0.01; h],
        d: vec![0.5; h],
    };
    let ssm = DiagonalSsm::<f32>::from_host(c, &host).unwrap();
    let (u, ux) = tensor(5, &[2, h, len]);
    refused(
        "s4d_scan_into out = u",
        s4d_scan_into(c, &ssm, &u, &u, Discretization::Zoh),
        "u",
        &u,
        &ux,
    );
    // The kernel's output [H, L] has A_re's shape when L = N2.
    let are = ssm.a_re.to_vec(c).unwrap();
    refused(
        "s4d_kernel_into out = A_re",
        s4d_kernel_into(c, &ssm, &ssm.a_re, Discretization::Zoh),
        "A_re",
        &ssm.a_re,
        &are,
    );
    let (k, _) = tensor(6, &[h, len]);
    let (d, _) = tensor(7, &[h]);
    refused(
        "causal_conv_into out = u",
        causal_conv_into(c, &u, &k, &d, &u),
        "u",
        &u,
        &ux,
    );
    refused(
        "s4d_conv_into out = u",
        longseq::ssm::s4d_conv_into(c, &ssm, &u, &u, Discretization::Zoh),
        "u",
        &u,
        &ux,
    );
}

#[test]
fn attention_refuses_an_output_aliasing_an_input() {
    let c = ctx();
    let shape = [2, 7, 4];
    let (q, qx) = tensor(10, &shape);
    let (k, _) = tensor(11, &shape);
    let (v, vx) = tensor(12, &shape);
    let lin = LinearAttentionOptions::default();
    refused(
        "linear_attention_into out = v",
        linear_attention_into(c, &q, &k, &v, &v, &lin),
        "v",
        &v,
        &vx,
    );
    let soft = SoftmaxAttentionOptions::default();
    refused(
        "softmax_attention_into out = q",
        softmax_attention_into(c, &q, &k, &v, &q, &soft),
        "q",
        &q,
        &qx,
    );
    let light = LightningOptions::default();
    refused(
        "lightning_attention_into out = q",
        lightning_attention_into(c, &q, &k, &v, None, &q, &light),
        "q",
        &q,
        &qx,
    );
    let (omega, _) = tensor(13, &[8, 4]);
    let favor = FavorOptions::default();
    refused(
        "favor_attention_into out = v",
        favor_attention_into(c, &q, &k, &v, &omega, &v, &favor),
        "v",
        &v,
        &vx,
    );
}

#[test]
fn position_ops_refuse_an_output_aliasing_an_input() {
    let c = ctx();
    let (x, xx) = tensor(20, &[2, 9, 6]);
    refused(
        "rope_into out = x",
        rope_into(c, &x, Positions::Offset(0), &x, &RopeOptions::default()),
        "x",
        &x,
        &xx,
    );
    // The lookup's output [L, D] has the table's shape [V, D] when L = V.
    let (table, tx) = tensor(21, &[5, 6]);
    refused(
        "embedding_into out = table",
        embedding_into(c, &table, &[4, 0, 3, 1, 2], &[5], &table),
        "table",
        &table,
        &tx,
    );
}

/// The ops the first tests leave out (issue 11, item 5, "every op"): NormAttention and
/// DiagAttention, positional softmax, the packed-sequence linear and Lightning calls, the fused
/// S4D convolution and the FFT refuse an output aliasing an input the same way.
#[test]
fn remaining_ops_refuse_an_output_aliasing_an_input() {
    use longseq::attention::{
        diag_attention_into, lightning_attention_varlen_into, linear_attention_varlen_into,
        norm_attention_into, softmax_attention_positional_into, Affine, DiagAttentionOptions,
        NormAttentionOptions, PositionalOptions,
    };
    use longseq::ssm::{fft_into, FftDirection};
    use longseq::types::CuSeqlens;
    let c = ctx();
    let shape = [1, 2, 7, 4];
    let (q, qx) = tensor(30, &shape);
    let (k, kx) = tensor(31, &shape);
    let (v, vx) = tensor(32, &shape);
    let aff = Affine::default();
    refused(
        "norm_attention_into out = v",
        norm_attention_into(c, &q, &k, &v, &aff, &v, &NormAttentionOptions::default()),
        "v",
        &v,
        &vx,
    );
    refused(
        "diag_attention_into out = q",
        diag_attention_into(c, &q, &k, &v, &aff, &q, &DiagAttentionOptions::default()),
        "q",
        &q,
        &qx,
    );
    refused(
        "softmax_attention_positional_into out = k",
        softmax_attention_positional_into(
            c,
            &q,
            &k,
            &v,
            &k,
            &SoftmaxAttentionOptions::default(),
            &PositionalOptions::default(),
        ),
        "k",
        &k,
        &kx,
    );
    let cu = CuSeqlens::new("t", &[0, 3, 7], 7).unwrap();
    refused(
        "linear_attention_varlen_into out = v",
        linear_attention_varlen_into(c, &q, &k, &v, &cu, &v, &LinearAttentionOptions::default()),
        "v",
        &v,
        &vx,
    );
    refused(
        "lightning_attention_varlen_into out = q",
        lightning_attention_varlen_into(c, &q, &k, &v, None, &cu, &q, &LightningOptions::default()),
        "q",
        &q,
        &qx,
    );
    let (re, rex) = tensor(33, &[3, 16]);
    let (im, _) = tensor(34, &[3, 16]);
    refused(
        "fft_into out = re",
        fft_into(c, &re, Some(&im), FftDirection::Forward, (&re, &im)),
        "re",
        &re,
        &rex,
    );
}

/// The gated recurrences: GLA's output aliasing v, SSD's Y aliasing X (the final state is a
/// second output of its own).
#[test]
fn gated_recurrences_refuse_an_output_aliasing_an_input() {
    use longseq::attention::{gla_into, GlaInputs};
    use longseq::ssm::{ssd_into, SsdInputs};
    let c = ctx();
    let shape = [1, 2, 7, 4];
    let (q, _) = tensor(40, &shape);
    let (k, _) = tensor(41, &shape);
    let (v, vx) = tensor(42, &shape);
    let g = Tensor::from_slice(c, &[-0.1f32; 56], &shape).unwrap();
    let fin = Tensor::<f32>::empty(c, &[1, 2, 4, 4]).unwrap();
    let gi = GlaInputs::new(&q, &k, &v, &g);
    refused("gla_into o = v", gla_into(c, &gi, &v, &fin), "v", &v, &vx);
    // SSD: X [b, l, h, p], A [b, l, h], B and C [b, l, h, n].
    let (x, xx) = tensor(43, &[1, 7, 2, 4]);
    let a = Tensor::from_slice(c, &[-0.2f32; 14], &[1, 7, 2]).unwrap();
    let (b, _) = tensor(44, &[1, 7, 2, 3]);
    let (cc, _) = tensor(45, &[1, 7, 2, 3]);
    let fs = Tensor::<f32>::empty(c, &[1, 2, 3, 4]).unwrap();
    let si = SsdInputs {
        x: &x,
        a: &a,
        b: &b,
        c: &cc,
        initial_state: None,
        cu_seqlens: None,
    };
    refused("ssd_into y = X", ssd_into(c, &si, &x, &fs), "X", &x, &xx);
}
