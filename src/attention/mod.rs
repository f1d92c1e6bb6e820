//! Attention ops: kernelized linear attention, its feature maps, Performer (FAVOR+) features and
//! recurrent decoding; exact softmax attention; Lightning attention; TransNormer's NormAttention
//! and DiagAttention.

pub(crate) mod chunk;
pub mod favor;
pub use crate::types::feature_map;
pub mod lightning;
pub mod linear;
pub mod positional;
pub mod recurrent;
pub mod softmax;
mod softmax_plan;
pub mod transnormer;

pub use crate::types::FeatureMap;
pub use favor::{
    draw_omega, favor_attention, favor_attention_into, record_favor_attention, FavorKind,
    FavorOptions, OmegaDraw,
};
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
pub use recurrent::{
    prefill, prefill_into, record_prefill, record_step, step, step_into, Features, RecurrentState,
};
pub use softmax::{
    record_softmax_attention, softmax_attention, softmax_attention_into, SoftmaxAttentionOptions,
};
pub use softmax_plan::{force_attention_tiles, AttentionTiles};
pub use transnormer::{
    diag_attention, diag_attention_into, norm_attention, norm_attention_into,
    record_diag_attention, record_norm_attention, Affine, DiagAttentionOptions, DiagWeights, Norm,
    NormAttentionOptions,
};

use crate::driver::{Input, Plan};
use crate::types::attention::AttnDims;
use crate::{Element, Tensor};

/// The plan of an op over `q, k: [.., L, Dk]`, `v: [.., L, Dv]` -> `o: [.., L, Dv]`, one
/// (batch, head) pair per row.
pub(crate) fn qkv_plan<T: Element>(d: &AttnDims) -> Plan {
    let (l, dk, dv) = (d.len as u64, d.dk as u64, d.dv as u64);
    let es = size_of::<T>() as u64;
    Plan::new(d.out_shape.clone(), d.rows as u64, l * dv)
        .bytes("q", l * dk * es)
        .bytes("v", l * dv * es)
}

pub(crate) fn qkv_inputs<'a, T: Element>(
    q: &'a Tensor<T>,
    k: &'a Tensor<T>,
    v: &'a Tensor<T>,
) -> Vec<Input<'a>> {
    vec![Input::of("q", q), Input::of("k", k), Input::of("v", v)]
}
