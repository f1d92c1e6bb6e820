//! Attention on the CPU path (f32, rayon, sgemm).

pub mod favor;
pub mod lightning;
pub mod linear;
pub mod recurrent;
pub mod softmax;
pub mod transnormer;

pub use favor::{favor_attention, favor_attention_into};
pub use lightning::{lightning_attention, lightning_attention_into};
pub use linear::{linear_attention, linear_attention_into};
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
    match fm {
        FeatureMap::Elu1 => x
            .iter()
            .map(|&v| {
                // NaN fails `v > 0` both times, so it reaches exp and comes back NaN.
                let e = exp_nonpos(if v > 0.0 { 0.0 } else { v });
                if v > 0.0 {
                    v + 1.0
                } else {
                    e
                }
            })
            .collect(),
        _ => x.iter().map(|&v| phi(fm, v)).collect(),
    }
}
