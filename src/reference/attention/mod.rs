//! CPU references for the attention ops.

pub mod lightning;
pub mod linear;
pub mod softmax;

pub use lightning::lightning_attention;
pub use linear::linear_attention;
pub use softmax::softmax_attention;
