//! State-space ops on the CPU path.

pub mod approx;
pub mod dplr;
pub mod fft;
pub mod kernel;
pub mod scan;
pub mod selective;
pub mod ssd;

pub use approx::hippo_approx;
pub use dplr::s4_dplr_kernel;
pub use fft::{causal_conv, causal_conv_into, fft};
pub use kernel::{s4d_kernel, s4d_kernel_into};
pub use scan::{linear_scan, s4d_scan, ScanOperands};
pub use selective::{selective_scan, ScanDims, SelectiveScanHost};
pub use ssd::{ssd, SsdDims, SsdHost};
