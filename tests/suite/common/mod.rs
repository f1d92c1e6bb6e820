//! Shared harness for the GPU tests: one context per storage mode, random inputs, comparison.
#![allow(dead_code)]

/// Files and the binary for the CLI tests (the binary needs the `cli` feature).
#[cfg(feature = "cli")]
pub mod files;

use std::sync::OnceLock;

use half::f16;
use longseq::{Context, ContextOptions, Element};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// Tolerances, normwise: max |gpu − cpu| / max |cpu|.
pub const TOL_F32: f64 = 1e-5;
pub const TOL_F16: f64 = 2e-3;

pub fn open(opts: ContextOptions) -> Context {
    match Context::with_options(&opts) {
        Ok(c) => c,
        Err(e) => panic!(
            "GPU tests need an adapter and found none ({e}).\n\
             Install the lavapipe software adapter: `apt-get install mesa-vulkan-drivers` \
             (or run scripts/test, which does it when run as root)."
        ),
    }
}

/// The default context (native f16 when the adapter has SHADER_F16).
pub fn ctx() -> &'static Context {
    static C: OnceLock<Context> = OnceLock::new();
    C.get_or_init(|| open(ContextOptions::default()))
}

/// A context without SHADER_F16: f16 tensors go through the packed-u32 path.
pub fn ctx_packed() -> &'static Context {
    static C: OnceLock<Context> = OnceLock::new();
    C.get_or_init(|| {
        open(ContextOptions {
            shader_f16: false,
            ..Default::default()
        })
    })
}

/// The default context with the chunk engine's GPU tile family forced (lavapipe picks CPU tiles).
pub fn ctx_gpu_tiles() -> &'static Context {
    static C: OnceLock<Context> = OnceLock::new();
    C.get_or_init(|| {
        open(ContextOptions {
            tiles: Some(longseq::TileFamily::Gpu),
            ..Default::default()
        })
    })
}

/// [`ctx_gpu_tiles`] without SHADER_F16.
pub fn ctx_gpu_tiles_packed() -> &'static Context {
    static C: OnceLock<Context> = OnceLock::new();
    C.get_or_init(|| {
        open(ContextOptions {
            shader_f16: false,
            tiles: Some(longseq::TileFamily::Gpu),
            ..Default::default()
        })
    })
}

/// A context whose storage bindings are capped at `bytes`, to force ops to split their work.
pub fn ctx_small_bindings(bytes: u64) -> Context {
    open(ContextOptions {
        max_storage_binding_size: Some(bytes),
        ..Default::default()
    })
}

/// A context whose workgroup memory is capped at `bytes`, so ops take their smaller-tile
/// fallbacks (shorter chunks, smaller blocks, a narrower softmax Dk chunk).
pub fn ctx_small_workgroup_memory(bytes: u32) -> Context {
    open(ContextOptions {
        max_workgroup_storage_size: Some(bytes),
        ..Default::default()
    })
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `n` draws of N(0, σ²), never all zero.
pub fn randn(rng: &mut StdRng, n: usize, sigma: f32) -> Vec<f32> {
    (0..n)
        .map(|_| sigma * rng.sample::<f32, _>(StandardNormal))
        .collect()
}

pub fn to_f16(x: &[f32]) -> Vec<f16> {
    x.iter().map(|&v| f16::from_f32(v)).collect()
}

pub fn to_f64<T: Element>(x: &[T]) -> Vec<f64> {
    x.iter().map(|v| v.to_f64()).collect()
}

/// Outputs that are NaN in one of `got` and the reference `want` but not in the other.
pub fn nan_mismatches(got: &[f64], want: &[f64]) -> usize {
    assert_eq!(got.len(), want.len(), "length mismatch");
    got.iter()
        .zip(want)
        .filter(|(g, w)| g.is_nan() != w.is_nan())
        .count()
}

/// Normwise relative error, or +∞ when the NaN patterns differ (NaN never passes by accident).
pub fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let mut scale = 0.0f64;
    let mut diff = 0.0f64;
    for (g, w) in got.iter().zip(want) {
        if g.is_nan() != w.is_nan() {
            return f64::INFINITY;
        }
        if w.is_nan() {
            continue;
        }
        if !g.is_finite() || !w.is_finite() {
            if g != w {
                return f64::INFINITY;
            }
            continue;
        }
        scale = scale.max(w.abs());
        diff = diff.max((g - w).abs());
    }
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

pub fn assert_close(label: &str, got: &[f64], want: &[f64], tol: f64) {
    let e = rel_err(got, want);
    assert!(e <= tol, "{label}: relative error {e:.3e} > {tol:.1e}");
}

/// Elementwise error: the worst `|got − want| / (atol + rtol·|want|)` (≤ 1 passes) and its
/// index; +∞ at the first element whose NaN or ±Inf pattern differs from the reference. Small
/// outputs that a normwise check hides under the largest one (an S4D kernel's tail) count here.
pub fn elem_err(got: &[f64], want: &[f64], atol: f64, rtol: f64) -> (f64, usize) {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let mut worst = (0.0f64, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g.is_nan() || w.is_nan() || !g.is_finite() || !w.is_finite() {
            let same = (g.is_nan() && w.is_nan()) || g == w;
            if !same {
                return (f64::INFINITY, i);
            }
            continue;
        }
        let r = (g - w).abs() / (atol + rtol * w.abs());
        if r > worst.0 {
            worst = (r, i);
        }
    }
    worst
}

/// Asserts `|gpu − ref| ≤ atol + rtol·|ref|` for every element, NaN/±Inf following the
/// reference; the message names the worst element.
pub fn assert_close_elementwise(label: &str, got: &[f64], want: &[f64], atol: f64, rtol: f64) {
    let (r, i) = elem_err(got, want, atol, rtol);
    assert!(
        r <= 1.0,
        "{label}: element {i}: gpu {} vs ref {} exceeds atol {atol:.1e} + rtol {rtol:.1e}·|ref| \
         ({r:.2}×)",
        got[i],
        want[i]
    );
}

/// Both checks at the brief's per-dtype tolerance `tol`: normwise `tol`, and elementwise with
/// `rtol = 10·tol` and `atol = tol·max|ref|` (so outputs near zero are judged on the output's
/// scale, the rest on their own).
pub fn assert_close_both(label: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_close(label, got, want, tol);
    let scale = want
        .iter()
        .filter(|w| w.is_finite())
        .fold(0.0f64, |m, w| m.max(w.abs()));
    assert_close_elementwise(label, got, want, tol * scale, 10.0 * tol);
}

/// Linear attention straight from the quadratic form of eq. 4 (no S, no z): an independent check
/// on the reference. `q, k: [R, L, Dk]`, `v: [R, L, Dv]` in f64.
#[allow(clippy::too_many_arguments)]
pub fn naive_linear_attention(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    (rows, l, dk, dv): (usize, usize, usize, usize),
    phi: impl Fn(f64) -> f64,
    causal: bool,
    eps: f64,
    denominator: bool,
) -> Vec<f64> {
    let mut out = vec![0.0; rows * l * dv];
    for r in 0..rows {
        for i in 0..l {
            let jmax = if causal { i + 1 } else { l };
            let mut den = eps;
            let mut num = vec![0.0; dv];
            for j in 0..jmax {
                let w: f64 = (0..dk)
                    .map(|a| phi(q[(r * l + i) * dk + a]) * phi(k[(r * l + j) * dk + a]))
                    .sum();
                den += w;
                for e in 0..dv {
                    num[e] += w * v[(r * l + j) * dv + e];
                }
            }
            for e in 0..dv {
                out[(r * l + i) * dv + e] = if denominator { num[e] / den } else { num[e] };
            }
        }
    }
    out
}
