//! Attention ops: kernelized linear attention, its feature maps, Performer (FAVOR+) features and
//! recurrent decoding; exact softmax attention; Lightning attention; TransNormer's NormAttention
//! and DiagAttention.
//!
//! Every op takes `q, k: [B, H, L, Dk]` (or `[H, L, Dk]`), `v: [.., L, Dv]` in f32 or f16 and
//! returns `o: [.., L, Dv]` in the same dtype; each has `op`, `op_into` (an existing output) and
//! `record_op` (into a [`crate::Schedule`]). The f64 references are in
//! [`crate::reference::attention`].
//!
//! Linear attention (Katharopoulos et al. 2020, eqs. 4-6 and 16-20), causal, φ = elu + 1:
//! ```
//! use longseq::attention::{linear_attention, FeatureMap, LinearAttentionOptions};
//! use longseq::{Context, Tensor};
//! # fn main() -> longseq::Result<()> {
//! let ctx = Context::new()?;
//! let x: Vec<f32> = (0..2 * 3 * 10 * 8).map(|i| (i as f32 * 0.37).sin()).collect();
//! let q = Tensor::from_slice(&ctx, &x, &[2, 3, 10, 8])?; // [B, H, L, D]
//! let opts = LinearAttentionOptions {
//!     feature_map: FeatureMap::Elu1,
//!     causal: true,
//!     ..Default::default()
//! };
//! let o = linear_attention(&ctx, &q, &q, &q, &opts)?;
//! assert_eq!(o.shape(), &[2, 3, 10, 8]);
//! # Ok(()) }
//! ```
//!
//! Exact softmax attention (Vaswani et al. 2017; online softmax), checked against its reference:
//! ```
//! use longseq::attention::{linear::check_shapes, softmax_attention, SoftmaxAttentionOptions};
//! use longseq::{reference, Context, Tensor};
//! # fn main() -> longseq::Result<()> {
//! let ctx = Context::new()?;
//! let shape = [4, 33, 16]; // [H, L, D]
//! let x: Vec<f32> = (0..4 * 33 * 16).map(|i| (i as f32 * 0.11).cos()).collect();
//! let q = Tensor::from_slice(&ctx, &x, &shape)?;
//! let opts = SoftmaxAttentionOptions { causal: true, ..Default::default() };
//! let got = softmax_attention(&ctx, &q, &q, &q, &opts)?.to_vec(&ctx)?;
//! let dims = check_shapes("example", &shape, &shape, &shape)?;
//! let want = reference::attention::softmax_attention(&x, &x, &x, &dims, &opts)?;
//! let err = got.iter().zip(&want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
//! assert!(err < 1e-4);
//! # Ok(()) }
//! ```
//!
//! Lightning attention with ALiBi decays (TransNormerLLM, arXiv 2307.14995) and TransNormer's
//! NormAttention (arXiv 2210.10340, eq. 8) in f16 storage:
//! ```
//! use longseq::attention::{
//!     lightning_attention, norm_attention, Affine, LightningOptions, NormAttentionOptions,
//! };
//! use longseq::half::f16;
//! use longseq::{Context, Tensor};
//! # fn main() -> longseq::Result<()> {
//! let ctx = Context::new()?;
//! let x: Vec<f16> = (0..4 * 50 * 8).map(|i| f16::from_f32((i as f32 * 0.3).sin())).collect();
//! let q = Tensor::from_slice(&ctx, &x, &[4, 50, 8])?; // [H, L, D]
//! // slopes: None = ALiBi's, one per head; λ_h = exp(−slope_h).
//! let o = lightning_attention(&ctx, &q, &q, &q, None, &LightningOptions::default())?;
//! let n = norm_attention(&ctx, &q, &q, &q, &Affine::default(), &NormAttentionOptions::default())?;
//! assert_eq!((o.shape(), n.shape()), (&[4, 50, 8][..], &[4, 50, 8][..]));
//! # Ok(()) }
//! ```
//!
//! Performer's FAVOR+ (Choromanski et al. 2021): positive random features from ω `[M, Dk]`:
//! ```
//! use longseq::attention::{draw_omega, favor_attention, FavorOptions, OmegaDraw};
//! use longseq::{Context, Tensor};
//! # fn main() -> longseq::Result<()> {
//! let ctx = Context::new()?;
//! let (h, l, d, m) = (2, 40, 16, 64);
//! let x: Vec<f32> = (0..h * l * d).map(|i| 0.3 * (i as f32 * 0.7).sin()).collect();
//! let q = Tensor::from_slice(&ctx, &x, &[h, l, d])?;
//! let omega = draw_omega(m, d, OmegaDraw::OrthogonalChi, 7)?;
//! let omega = Tensor::from_slice(&ctx, &omega, &[m, d])?;
//! let o = favor_attention(&ctx, &q, &q, &q, &omega, &FavorOptions::default())?;
//! assert!(o.to_vec(&ctx)?.iter().all(|v| v.is_finite()));
//! # Ok(()) }
//! ```

pub(crate) mod chunk;
pub mod favor;
pub mod favor_batch;
mod favor_core;
pub mod gla;
pub use crate::types::feature_map;
pub mod lightning;
pub(crate) mod lightning_fix;
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
pub use favor_batch::{
    favor_attention_batch, favor_attention_batch_into, favor_attention_batch_with_state,
    favor_attention_batch_with_state_into, FavorState,
};
pub use gla::{gla, gla_into, gla_step, gla_step_into, record_gla, GlaInputs};
pub use lightning::{
    alibi_slopes, lightning_attention, lightning_attention_into, lightning_attention_varlen,
    lightning_attention_varlen_into, lightning_attention_varlen_with_state,
    lightning_attention_with_state, record_lightning_attention, LightningOptions,
};
pub use linear::{
    linear_attention, linear_attention_into, linear_attention_varlen, linear_attention_varlen_into,
    linear_attention_varlen_with_state, linear_attention_with_state, record_linear_attention,
    LinearAttentionOptions, LinearState,
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
    diag_attention, diag_attention_into, norm_attention, norm_attention_batch,
    norm_attention_batch_into, norm_attention_into, record_diag_attention, record_norm_attention,
    Affine, DiagAttentionOptions, DiagWeights, Norm, NormAttentionOptions,
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
