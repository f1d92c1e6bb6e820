//! CPU references for the attention ops.

pub mod batch;
pub mod favor;
pub mod favor_batch;
pub mod lightning;
pub mod linear;
pub mod linear_batch;
pub mod positional;
pub mod softmax;
pub mod transnormer;

pub use batch::{diag_attention_batch, softmax_attention_batch};
pub use favor::favor_attention;
pub use favor_batch::{favor_attention_batch, FavorBatchOut};
pub use lightning::lightning_attention;
pub use linear::linear_attention;
pub use linear_batch::{
    lightning_attention_batch, lightning_attention_varlen, linear_attention_batch,
    norm_attention_batch, LinearBatchOut,
};
pub use softmax::softmax_attention;
pub use transnormer::{diag_attention, norm_attention};
