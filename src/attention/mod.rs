//! Attention ops: kernelized linear attention, its feature maps, Performer (FAVOR+) features and
//! recurrent decoding.

pub mod favor;
pub mod feature_map;
pub mod linear;
pub mod recurrent;

pub use favor::{
    draw_omega, favor_attention, favor_attention_into, record_favor_attention, FavorKind,
    FavorOptions, OmegaDraw,
};
pub use feature_map::FeatureMap;
pub use linear::{
    linear_attention, linear_attention_into, record_linear_attention, LinearAttentionOptions,
};
pub use recurrent::{prefill, step, Features, RecurrentState};
