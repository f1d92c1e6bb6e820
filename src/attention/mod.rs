//! Attention ops: kernelized linear attention and its feature maps; exact softmax attention;
//! Lightning attention.

pub mod feature_map;
pub mod lightning;
pub mod linear;
pub mod softmax;

pub use feature_map::FeatureMap;
pub use lightning::{
    alibi_slopes, lightning_attention, lightning_attention_into, record_lightning_attention,
    LightningOptions,
};
pub use linear::{
    linear_attention, linear_attention_into, record_linear_attention, LinearAttentionOptions,
};
pub use softmax::{
    record_softmax_attention, softmax_attention, softmax_attention_into, SoftmaxAttentionOptions,
};
