//! Attention on the CPU path (f32, rayon, sgemm).

pub mod favor;
pub mod gla;
pub mod lightning;
pub mod linear;
pub mod positional;
pub mod recurrent;
pub mod softmax;
pub mod transnormer;

pub use favor::{favor_attention, favor_attention_into};
pub use gla::{gla, GlaHost, GlaShape};
pub use lightning::{lightning_attention, lightning_attention_into};
pub use linear::{linear_attention, linear_attention_into};
pub use positional::{softmax_attention_positional, softmax_attention_positional_into};
pub use recurrent::{prefill, step, Features, RecurrentState};
pub use softmax::{softmax_attention, softmax_attention_into};
pub use transnormer::{diag_attention, norm_attention};

use crate::attention::FeatureMap;
use crate::cpu::exp_nonpos;

/// φ in f32, the same branches as [`FeatureMap::apply`] (NaN maps to NaN).
#[inline]
pub(crate) fn phi(fm: FeatureMap, x: f32) -> f32 {
    match fm {
        FeatureMap::Elu1 => {
            if x > 0.0 {
                x + 1.0
            } else {
                x.exp()
            }
        }
        FeatureMap::Relu => {
            if x < 0.0 {
                0.0
            } else {
                x
            }
        }
        FeatureMap::Elu => {
            if x > 0.0 {
                x
            } else {
                x.exp_m1()
            }
        }
        FeatureMap::Identity => x,
    }
}

/// `φ` of every element of `x`; elu+1 through the vectorizing [`exp_nonpos`].
pub(crate) fn map_features(fm: FeatureMap, x: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    map_features_into(fm, x, &mut out);
    out
}

/// `out = φ(x)` elementwise. elu+1 runs in AVX2 when the CPU has it (checked at run time: the
/// crate is built for generic x86-64, whose SSE2 gives a quarter of the width).
pub(crate) fn map_features_into(fm: FeatureMap, x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), out.len(), "map_features_into lengths");
    #[cfg(target_arch = "x86_64")]
    if fm == FeatureMap::Elu1 && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked above).
        unsafe { elu1_avx2(x, out) };
        return;
    }
    match fm {
        FeatureMap::Elu1 => elu1(x, out),
        _ => out.iter_mut().zip(x).for_each(|(o, &v)| *o = phi(fm, v)),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn elu1_avx2(x: &[f32], out: &mut [f32]) {
    elu1(x, out)
}

/// elu+1 written branch-free so that it vectorizes (inlined into each target's copy).
#[inline(always)]
fn elu1(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        // NaN fails `v > 0` both times, so it reaches exp and comes back NaN.
        let e = exp_nonpos(if v > 0.0 { 0.0 } else { v });
        *o = if v > 0.0 { v + 1.0 } else { e };
    }
}
