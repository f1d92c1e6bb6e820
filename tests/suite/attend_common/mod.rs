//! Shared by the exact-attention tests (softmax, positional, DiagAttention): one context per tile
//! family × f16 path, so every check runs both kernel families on lavapipe, and the elementwise
//! check beside the normwise one.
#![allow(dead_code)]

use std::sync::OnceLock;

use longseq::attention::{force_attention_tiles, AttentionTiles};
use longseq::{Context, ContextOptions};

/// Both families, register tiles (lavapipe's default) first.
pub const FAMILIES: [AttentionTiles; 2] = [AttentionTiles::Cpu, AttentionTiles::Gpu];

/// A context using `tiles`; `native_f16` false reads f16 as packed u32 words.
pub fn fctx(tiles: AttentionTiles, native_f16: bool) -> &'static Context {
    static C: [OnceLock<Context>; 4] = [const { OnceLock::new() }; 4];
    let i = (tiles == AttentionTiles::Gpu) as usize * 2 + native_f16 as usize;
    C[i].get_or_init(|| {
        let c = Context::with_options(&ContextOptions {
            shader_f16: native_f16,
            ..Default::default()
        })
        .expect("GPU tests need an adapter: `apt-get install mesa-vulkan-drivers` (lavapipe)");
        force_attention_tiles(&c, Some(tiles));
        c
    })
}

/// A context with storage bindings capped at `bytes`, using `tiles`.
pub fn fctx_small(tiles: AttentionTiles, bytes: u64, native_f16: bool) -> Context {
    let c = Context::with_options(&ContextOptions {
        shader_f16: native_f16,
        max_storage_binding_size: Some(bytes),
        ..Default::default()
    })
    .expect("GPU tests need an adapter: `apt-get install mesa-vulkan-drivers` (lavapipe)");
    force_attention_tiles(&c, Some(tiles));
    c
}

/// Elementwise `|got − want| ≤ tol · (|want| + rms(want))` with the same NaN/±Inf pattern:
/// a small-magnitude output cannot hide under the normwise check's largest one.
pub fn assert_close_elementwise(label: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{label}: length mismatch");
    let finite: Vec<f64> = want.iter().copied().filter(|x| x.is_finite()).collect();
    let rms = (finite.iter().map(|x| x * x).sum::<f64>() / finite.len().max(1) as f64).sqrt();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() || g.is_nan() || !w.is_finite() {
            assert!(
                g.is_nan() == w.is_nan() && (w.is_nan() || g == w),
                "{label}: element {i} is {g}, reference {w}"
            );
            continue;
        }
        let bound = tol * (w.abs() + rms);
        assert!(
            (g - w).abs() <= bound,
            "{label}: element {i}: |{g} − {w}| > {bound:.2e}"
        );
    }
}
