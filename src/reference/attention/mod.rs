//! CPU references for the attention ops.

pub mod linear;

pub use linear::linear_attention;
