//! CPU references for the attention ops.

pub mod linear;
pub mod softmax;

pub use linear::linear_attention;
pub use softmax::softmax_attention;
