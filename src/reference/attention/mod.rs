//! CPU references for the attention ops.

pub mod favor;
pub mod linear;

pub use favor::favor_attention;
pub use linear::linear_attention;
