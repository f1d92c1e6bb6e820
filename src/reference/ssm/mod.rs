//! CPU references for the state-space ops.

pub mod approx;

pub use approx::hippo_approx;
