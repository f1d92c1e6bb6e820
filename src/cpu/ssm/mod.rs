//! State-space ops on the CPU path.

pub mod fft;
pub mod kernel;
pub mod scan;

pub use fft::{causal_conv, causal_conv_into, fft};
pub use kernel::{s4d_kernel, s4d_kernel_into};
pub use scan::s4d_scan;
