//! State-space sequence ops (HiPPO, S4 family): HiPPO matrices, discretisation, HiPPO online
//! function approximation (and reading a series with gaps for it), the S4D and S4 (DPLR)
//! convolution kernels, FFT convolution and the parallel associative scan; each GPU op is a WGSL
//! shader with a CPU reference in [`crate::reference::ssm`].

pub mod approx;
pub use crate::math::{discretize, hippo};
pub use crate::series;
pub mod dplr;
pub mod fft;
pub mod kernel;
pub mod scan;
pub mod selective;

#[cfg(not(target_arch = "wasm32"))]
pub use approx::{hippo_approx, hippo_approx_into};
pub use approx::{record_hippo_approx, sample_grid, HippoApproxOptions, NanCheck, Step};
pub use discretize::{discretize, discretize_diag, Method};
pub use dplr::{record_s4_dplr_kernel, s4_dplr_kernel, s4_dplr_kernel_into};
pub use fft::{
    causal_conv, causal_conv_into, fft, fft_into, record_causal_conv, record_fft, FftDirection,
};
pub use hippo::{hippo, reconstruct, Measure, StateSpace};
pub use kernel::{
    record_s4d_kernel, s4d_init, s4d_kernel, s4d_kernel_into, DiagonalSsm, Discretization, S4dInit,
};
pub use scan::{
    linear_scan, linear_scan_into, record_linear_scan, record_s4d_scan, record_s4d_step, s4d_scan,
    s4d_scan_into, s4d_step, s4d_step_into, ScanOperands,
};
pub use selective::{
    record_selective_scan, record_selective_state_update, selective_scan, selective_scan_into,
    selective_state_update, selective_state_update_into, SelectiveScanInputs,
};
