//! Token embeddings and position encodings: embedding lookup, rotary position embedding (RoPE)
//! and its context-extension scalings.
//!
//! Embedding lookup, then RoPE (Su et al. 2021, eq. 34) on the result viewed as one head:
//! ```
//! use longseq::positions::{embedding, rope, Positions, RopeOptions};
//! use longseq::{Context, Tensor};
//! # fn main() -> longseq::Result<()> {
//! let ctx = Context::new()?;
//! let (vocab, d) = (11, 8);
//! let w: Vec<f32> = (0..vocab * d).map(|i| (i as f32 * 0.21).cos()).collect();
//! let table = Tensor::from_slice(&ctx, &w, &[vocab, d])?; // [V, D]
//! let x = embedding(&ctx, &table, &[3, 1, 4, 1, 5, 9], &[1, 6])?; // ids [B, L] -> [B, L, D]
//! assert_eq!(x.shape(), &[1, 6, 8]);
//! // Positions 100.. (a KV-cache continuation); the first pair of token 0 turns by 100 rad.
//! let r = rope(&ctx, &x, Positions::Offset(100), &RopeOptions::default())?;
//! let (x0, r0) = (x.to_vec(&ctx)?, r.to_vec(&ctx)?);
//! let (c, s) = (100f32.cos(), 100f32.sin());
//! assert!((r0[0] - (x0[0] * c - x0[1] * s)).abs() < 1e-4);
//! # Ok(()) }
//! ```

pub mod embedding;
pub mod rope;

pub use embedding::{embedding, embedding_into, record_embedding};
pub use rope::{record_rope, rope, rope_into, Positions, RopeLayout, RopeOptions, RopeScaling};
