//! The CPU reference path: every op written from its paper's equation in plain Rust with f64
//! accumulation, independent of the shaders. Tests compare the GPU against it; the CLI runs it
//! when no adapter is present.

pub mod attention;
pub mod gla;
pub mod mamba;
pub mod positions;
pub mod ssd;
pub mod ssm;
