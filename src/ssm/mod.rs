//! State-space sequence ops (HiPPO, S4 family): HiPPO matrices, discretisation, HiPPO online
//! function approximation (and reading a series with gaps for it), the S4D and S4 (DPLR)
//! convolution kernels, FFT convolution and the parallel associative scan; each GPU op is a WGSL
//! shader with a CPU reference in [`crate::reference::ssm`].
//!
//! HiPPO-LegS (Gu et al. 2020): the matrices, and the online approximation of a signal, whose
//! last coefficients reconstruct its history:
//! ```
//! use longseq::ssm::{hippo, hippo_approx, HippoApproxOptions, Measure};
//! use longseq::{Context, Tensor};
//! # fn main() -> longseq::Result<()> {
//! let ctx = Context::new()?;
//! let ss = hippo(Measure::LegS, 16, 1.0)?; // A [N, N], B [N], f64 on the host
//! assert_eq!((ss.a.len(), ss.b.len()), (16 * 16, 16));
//! let f: Vec<f32> = (0..200).map(|t| (t as f32 * 0.05).sin()).collect();
//! let f = Tensor::from_slice(&ctx, &f, &[1, 200])?; // [B, L]
//! let opts = HippoApproxOptions { n: 16, ..Default::default() };
//! let c = hippo_approx(&ctx, &f, &opts)?; // coefficients of every prefix
//! assert_eq!(c.shape(), &[1, 200, 16]);
//! # Ok(()) }
//! ```
//!
//! S4D (Gu et al. 2022, *On the Parameterization and Initialization of Diagonal State Space
//! Models*): the convolution kernel, FFT convolution and the scan give the same output:
//! ```
//! use longseq::ssm::{causal_conv, s4d_init, s4d_kernel, s4d_scan, DiagonalSsm, Discretization, S4dInit};
//! use longseq::types::ssm::DiagonalSsm as HostSsm;
//! use longseq::{Context, Tensor};
//! use num_complex::Complex64;
//! # fn main() -> longseq::Result<()> {
//! let ctx = Context::new()?;
//! let (h, n2, len) = (2, 8, 100);
//! let a = s4d_init(S4dInit::Lin, n2)?; // A = −1/2 + iπn
//! let host = HostSsm {
//!     h,
//!     n2,
//!     a: [a.clone(), a].concat(),
//!     b: vec![Complex64::new(1.0, 0.0); h * n2],
//!     c: (0..h * n2).map(|i| Complex64::new(0.5, 0.1 * i as f64)).collect(),
//!     dt: vec![0.01, 0.05],
//!     d: vec![0.5, -0.5],
//! };
//! let ssm = DiagonalSsm::<f32>::from_host(&ctx, &host)?;
//! let u: Vec<f32> = (0..h * len).map(|t| (t as f32 * 0.3).sin()).collect();
//! let u = Tensor::from_slice(&ctx, &u, &[1, h, len])?; // [B, H, L]
//! let k = s4d_kernel(&ctx, &ssm, len, Discretization::Zoh)?; // K: [H, L]
//! let conv = causal_conv(&ctx, &u, &k, &ssm.d)?.to_vec(&ctx)?;
//! let scan = s4d_scan(&ctx, &ssm, &u, Discretization::Zoh)?.to_vec(&ctx)?;
//! let err = conv.iter().zip(&scan).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
//! assert!(err < 1e-3, "{err}");
//! # Ok(()) }
//! ```
//!
//! The associative scan `h_t = a_t h_{t−1} + b_t` (Blelloch 1990), real operands `[.., L]`:
//! ```
//! use longseq::ssm::{linear_scan, ScanOperands};
//! use longseq::{Context, Tensor};
//! # fn main() -> longseq::Result<()> {
//! let ctx = Context::new()?;
//! let a = Tensor::from_slice(&ctx, &[0.5f32; 6], &[2, 3])?;
//! let b = Tensor::from_slice(&ctx, &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
//! let ops = ScanOperands { a_re: &a, a_im: None, b_re: &b, b_im: None };
//! let (h, h_im) = linear_scan(&ctx, &ops)?;
//! assert!(h_im.is_none());
//! assert_eq!(h.to_vec(&ctx)?, vec![1.0, 2.5, 4.25, 4.0, 7.0, 9.5]);
//! # Ok(()) }
//! ```

pub mod approx;
pub mod batch;
pub(crate) mod conv;
pub(crate) mod conv_batch;
pub use crate::math::{discretize, hippo};
pub use crate::series;
pub mod dplr;
pub mod fft;
pub mod kernel;
pub mod scan;
pub mod selective;
pub mod ssd;

#[cfg(not(target_arch = "wasm32"))]
pub use approx::{hippo_approx, hippo_approx_into};
pub use approx::{record_hippo_approx, sample_grid, HippoApproxOptions, NanCheck, Step};
pub use batch::{s4d_scan_batch, s4d_scan_batch_into, S4dBatch};
pub use conv::{s4d_conv, s4d_conv_into};
pub use conv_batch::{s4d_conv_batch, s4d_conv_batch_into};
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
pub use ssd::{record_ssd, ssd, ssd_into, SsdInputs};
