//! Attention ops: kernelized linear attention and its feature maps.

pub mod feature_map;
pub mod linear;

pub use feature_map::FeatureMap;
pub use linear::{
    linear_attention, linear_attention_into, record_linear_attention, LinearAttentionOptions,
};
