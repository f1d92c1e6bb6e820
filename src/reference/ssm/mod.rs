//! CPU references for the state-space ops (f64, num-complex, rustfft).

pub mod approx;
pub mod batch;
pub mod dplr;
pub mod fft;
pub mod kernel;
pub mod scan;

pub use approx::hippo_approx;
pub use batch::{s4d_recurrence_batch, SeqBatch};
pub use dplr::{dplr_kernel_dense, DplrSsm};
pub use fft::{causal_conv, causal_conv_direct};
pub use kernel::{s4d_kernel, DiagonalSsm, Discretization};
pub use scan::{linear_scan, s4d_recurrence, s4d_scan_step};
