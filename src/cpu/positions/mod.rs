//! Positions on the CPU path: embedding lookup and rotary embeddings.
