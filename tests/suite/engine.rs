//! The host plumbing shared by every op: tensors that remember their context, shapes that
//! overflow, wrapping an application's buffer and encoder, the entry points the driver adds.

use crate::common;

use common::{assert_close, ctx, ctx_small_bindings, randn, rng, to_f64, TOL_F32};
use longseq::attention::{
    linear_attention, softmax_attention, FeatureMap, LinearAttentionOptions,
    SoftmaxAttentionOptions,
};
use longseq::positions::{record_rope, rope, Positions, RopeOptions};
use longseq::ssm::{fft, fft_into, linear_scan_into, FftDirection, ScanOperands};
use longseq::{wgpu, Error, Schedule, Tensor};

#[test]
fn a_shape_whose_element_count_overflows_is_a_typed_error() {
    let c = ctx();
    let r = Tensor::<f32>::from_slice(c, &[1.0; 4], &[(1 << 62) + 1, 1, 4]);
    assert!(
        matches!(r, Err(Error::ShapeOverflow { .. })),
        "{:?}",
        r.err()
    );
    let r = Tensor::<f32>::empty(c, &[usize::MAX, 2]);
    assert!(
        matches!(r, Err(Error::ShapeOverflow { .. })),
        "{:?}",
        r.err()
    );
    let r = Tensor::<f32>::nan(c, &[1 << 40, 1 << 40]);
    assert!(
        matches!(r, Err(Error::ShapeOverflow { .. })),
        "{:?}",
        r.err()
    );
}

#[test]
fn a_tensor_used_with_another_context_is_a_typed_error() {
    let (c1, c2) = (ctx(), ctx_small_bindings(1 << 20));
    let x = randn(&mut rng(1), 2 * 5 * 4, 1.0);
    let q = Tensor::from_slice(c1, &x, &[2, 5, 4]).unwrap();
    let opts = SoftmaxAttentionOptions::default();
    let r = softmax_attention(&c2, &q, &q, &q, &opts);
    assert!(
        matches!(r, Err(Error::WrongContext { name: "q", .. })),
        "{:?}",
        r.err()
    );
    assert!(matches!(q.to_vec(&c2), Err(Error::WrongContext { .. })));
    // `out` from another context.
    let out = Tensor::<f32>::empty(&c2, &[2, 5, 4]).unwrap();
    let r = longseq::attention::softmax_attention_into(c1, &q, &q, &q, &out, &opts);
    assert!(
        matches!(r, Err(Error::WrongContext { name: "out", .. })),
        "{:?}",
        r.err()
    );
}

/// A buffer the application made itself, wrapped without a copy, gives the same result.
#[test]
fn an_application_buffer_wraps_as_a_tensor() {
    let c = ctx();
    let (h, l, d) = (2, 37, 8);
    let x = randn(&mut rng(2), h * l * d, 1.0);
    let buf = c.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("app buffer"),
        size: (x.len() * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    c.queue().write_buffer(&buf, 0, bytemuck::cast_slice(&x));
    let wrapped = Tensor::<f32>::from_buffer(c, buf.clone(), &[h, l, d]).unwrap();
    let copied = Tensor::from_slice(c, &x, &[h, l, d]).unwrap();
    let opts = LinearAttentionOptions {
        feature_map: FeatureMap::Elu1,
        causal: true,
        ..Default::default()
    };
    let a = linear_attention(c, &wrapped, &wrapped, &wrapped, &opts).unwrap();
    let b = linear_attention(c, &copied, &copied, &copied, &opts).unwrap();
    let (a, b) = (to_f64(&a.to_vec(c).unwrap()), to_f64(&b.to_vec(c).unwrap()));
    assert_close("wrapped buffer", &a, &b, TOL_F32);
    // Too small for the shape, or without STORAGE usage.
    let r = Tensor::<f32>::from_buffer(c, buf, &[h, l, d + 1]);
    assert!(
        matches!(r, Err(Error::InvalidArgument { .. })),
        "{:?}",
        r.err()
    );
    let staging = c.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    let r = Tensor::<f32>::from_buffer(c, staging, &[4]);
    assert!(
        matches!(r, Err(Error::InvalidArgument { .. })),
        "{:?}",
        r.err()
    );
}

/// Ops recorded into the application's own encoder run when the application submits it.
#[test]
fn ops_record_into_an_application_encoder() {
    let c = ctx();
    let x = randn(&mut rng(3), 3 * 11 * 6, 1.0);
    let x = Tensor::from_slice(c, &x, &[3, 11, 6]).unwrap();
    let opts = RopeOptions::default();
    let want = rope(c, &x, Positions::Offset(5), &opts).unwrap();
    let out = Tensor::<f32>::nan(c, &[3, 11, 6]).unwrap();
    let enc = c
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    let mut s = Schedule::from_encoder(c, enc);
    record_rope(&mut s, &x, Positions::Offset(5), &out, &opts).unwrap();
    let enc = s.into_encoder();
    c.queue().submit([enc.finish()]);
    let got = to_f64(&out.to_vec(c).unwrap());
    assert_close("app encoder", &got, &to_f64(&want.to_vec(c).unwrap()), 0.0);
}

#[test]
fn fft_into_matches_fft_and_checks_its_outputs() {
    let c = ctx();
    let re = randn(&mut rng(4), 3 * 16, 1.0);
    let re = Tensor::from_slice(c, &re, &[3, 16]).unwrap();
    let (wr, wi) = fft(c, &re, None, FftDirection::Forward).unwrap();
    let (gr, gi) = (
        Tensor::<f32>::nan(c, &[3, 16]).unwrap(),
        Tensor::<f32>::nan(c, &[3, 16]).unwrap(),
    );
    fft_into(c, &re, None, FftDirection::Forward, (&gr, &gi)).unwrap();
    for (g, w) in [(&gr, &wr), (&gi, &wi)] {
        let (g, w) = (to_f64(&g.to_vec(c).unwrap()), to_f64(&w.to_vec(c).unwrap()));
        assert_close("fft_into", &g, &w, 0.0);
    }
    let r = fft_into(c, &re, None, FftDirection::Forward, (&re, &gi));
    assert!(matches!(r, Err(Error::InvalidArgument { name: "out", .. })));
    let r = fft_into(c, &re, None, FftDirection::Forward, (&gr, &gr));
    assert!(matches!(r, Err(Error::InvalidArgument { name: "out", .. })));
}

/// The alias check the driver adds to ops that lacked it.
#[test]
fn linear_scan_into_refuses_an_output_aliasing_an_input() {
    let c = ctx();
    let a = Tensor::from_slice(c, &randn(&mut rng(5), 20, 0.5), &[2, 10]).unwrap();
    let b = Tensor::from_slice(c, &randn(&mut rng(6), 20, 1.0), &[2, 10]).unwrap();
    let ops = ScanOperands {
        a_re: &a,
        a_im: None,
        b_re: &b,
        b_im: None,
    };
    let r = linear_scan_into(c, &ops, &b, None);
    assert!(
        matches!(r, Err(Error::InvalidArgument { name: "out", .. })),
        "{:?}",
        r.err()
    );
}
