//! CPU references for embeddings and position encodings.

pub mod embedding;
pub mod rope;

pub use embedding::embedding;
pub use rope::{rope, rope_batch};
