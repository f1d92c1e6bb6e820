//! CPU references for the state-space ops (f64, num-complex, rustfft).

pub mod fft;
pub mod kernel;

pub use fft::{causal_conv, causal_conv_direct};
pub use kernel::{s4d_kernel, DiagonalSsm, Discretization};
