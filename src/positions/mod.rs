//! Token embeddings and position encodings: embedding lookup, rotary position embedding (RoPE)
//! and its context-extension scalings.

pub mod embedding;
pub mod rope;

pub use embedding::{embedding, embedding_into, record_embedding};
pub use rope::{record_rope, rope, rope_into, Positions, RopeLayout, RopeOptions, RopeScaling};
