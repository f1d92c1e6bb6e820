//! CPU references for the state-space ops (f64, num-complex, rustfft).

pub mod kernel;

pub use kernel::{s4d_kernel, DiagonalSsm, Discretization};
