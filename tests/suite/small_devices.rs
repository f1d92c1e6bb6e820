//! Adapters with little workgroup memory: `ContextOptions::max_workgroup_storage_size` caps it so
//! the ops' smaller-tile fallbacks (shorter chunks, smaller Lightning blocks, a narrower softmax
//! Dk chunk) run here on lavapipe, and each is checked against the f64 reference normwise and
//! elementwise. 16384 bytes is WebGPU's guaranteed minimum.

use crate::common;

use common::*;
use longseq::attention::linear::check_shapes;
use longseq::attention::{
    lightning_attention, linear_attention, softmax_attention, FeatureMap, LightningOptions,
    LinearAttentionOptions, SoftmaxAttentionOptions,
};
use longseq::reference::attention as ra;
use longseq::{Context, Tensor};

/// q, k, v `[2, 3, L, D]` on the device and their host copies.
struct Qkv {
    host: [Vec<f32>; 3],
    dev: [Tensor<f32>; 3],
    shape: [usize; 4],
}

fn qkv(c: &Context, seed: u64, len: usize, d: usize) -> Qkv {
    let shape = [2, 3, len, d];
    let n = shape.iter().product();
    let host = [0, 1, 2].map(|i| randn(&mut rng(seed + i), n, 0.6));
    let dev = [0, 1, 2].map(|i| Tensor::from_slice(c, &host[i], &shape).unwrap());
    Qkv { host, dev, shape }
}

fn capped(bytes: u32) -> Context {
    let c = ctx_small_workgroup_memory(bytes);
    let got = c.limits().max_compute_workgroup_storage_size;
    assert!(got <= bytes, "the cap did not take: {got} > {bytes}");
    c
}

#[test]
fn linear_and_lightning_run_their_small_tiles() {
    for cap in [16384, 4096] {
        let c = capped(cap);
        let x = qkv(&c, 40, 203, 20);
        let d = check_shapes("test", &x.shape, &x.shape, &x.shape).unwrap();
        let [q, k, v] = &x.dev;
        for causal in [false, true] {
            let o = LinearAttentionOptions {
                feature_map: FeatureMap::Elu1,
                causal,
                ..Default::default()
            };
            let got = to_f64(
                &linear_attention(&c, q, k, v, &o)
                    .unwrap()
                    .to_vec(&c)
                    .unwrap(),
            );
            let [hq, hk, hv] = &x.host;
            let want = ra::linear_attention(hq, hk, hv, &d, &o).unwrap();
            assert_close_both(
                &format!("linear cap {cap} causal {causal}"),
                &got,
                &want,
                TOL_F32,
            );
        }
        let o = LightningOptions::default();
        let got = to_f64(
            &lightning_attention(&c, q, k, v, None, &o)
                .unwrap()
                .to_vec(&c)
                .unwrap(),
        );
        let [hq, hk, hv] = &x.host;
        let want = ra::lightning_attention(hq, hk, hv, &d, 3, None, &o).unwrap();
        assert_close_both(&format!("lightning cap {cap}"), &got, &want, TOL_F32);
    }
}

#[test]
fn softmax_runs_a_narrower_dk_chunk() {
    let c = capped(16384);
    // Dk = 70 spans several 16-wide Dk chunks, ragged at the end.
    let x = qkv(&c, 50, 131, 70);
    let d = check_shapes("test", &x.shape, &x.shape, &x.shape).unwrap();
    let [q, k, v] = &x.dev;
    for causal in [false, true] {
        let o = SoftmaxAttentionOptions {
            causal,
            ..Default::default()
        };
        let got = to_f64(
            &softmax_attention(&c, q, k, v, &o)
                .unwrap()
                .to_vec(&c)
                .unwrap(),
        );
        let [hq, hk, hv] = &x.host;
        let want = ra::softmax_attention(hq, hk, hv, &d, &o).unwrap();
        assert_close_both(&format!("softmax causal {causal}"), &got, &want, TOL_F32);
    }
}
