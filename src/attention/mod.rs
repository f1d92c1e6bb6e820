//! Attention ops: kernelized linear attention, its feature maps, Performer (FAVOR+) features and
//! recurrent decoding; exact softmax attention; Lightning attention; TransNormer's NormAttention
//! and DiagAttention.

pub mod chunk;
pub mod favor;
pub mod feature_map;
pub mod lightning;
pub mod linear;
pub mod positional;
pub mod recurrent;
pub mod softmax;
pub mod transnormer;

pub use chunk::TileFamily;
pub use favor::{
    draw_omega, favor_attention, favor_attention_into, record_favor_attention, FavorKind,
    FavorOptions, OmegaDraw,
};
pub use feature_map::FeatureMap;
pub use lightning::{
    alibi_slopes, lightning_attention, lightning_attention_into, record_lightning_attention,
    LightningOptions,
};
pub use linear::{
    linear_attention, linear_attention_into, record_linear_attention, LinearAttentionOptions,
};
pub use positional::{
    record_softmax_attention_positional, softmax_attention_positional,
    softmax_attention_positional_into, Alibi, PositionalOptions, ReRope,
};
pub use recurrent::{prefill, step, Features, RecurrentState};
pub use softmax::{
    record_softmax_attention, softmax_attention, softmax_attention_into, SoftmaxAttentionOptions,
};
pub use transnormer::{
    diag_attention, diag_attention_into, norm_attention, norm_attention_into,
    record_diag_attention, record_norm_attention, Affine, DiagAttentionOptions, DiagWeights, Norm,
    NormAttentionOptions,
};
