//! State-space sequence ops (HiPPO, S4 family): HiPPO matrices, discretisation, HiPPO online
//! function approximation (and reading a series with gaps for it), the S4D and S4 (DPLR)
//! convolution kernels, FFT convolution and the parallel associative scan; each GPU op is a WGSL
//! shader with a CPU reference in [`crate::reference::ssm`].

pub mod approx;
pub mod discretize;
pub mod dplr;
pub mod fft;
pub mod hippo;
pub mod kernel;
pub mod scan;
pub mod series;

#[cfg(not(target_arch = "wasm32"))]
pub use approx::{hippo_approx, hippo_approx_into};
pub use approx::{record_hippo_approx, sample_grid, HippoApproxOptions, NanCheck, Step};
pub use discretize::{discretize, discretize_diag, Method};
pub use dplr::s4_dplr_kernel;
pub use fft::{causal_conv, causal_conv_into, fft, record_causal_conv, FftDirection};
pub use hippo::{hippo, reconstruct, Measure, StateSpace};
pub use kernel::{
    record_s4d_kernel, s4d_init, s4d_kernel, s4d_kernel_into, DiagonalSsm, Discretization, S4dInit,
};
pub use scan::{linear_scan, linear_scan_into, s4d_scan, s4d_scan_into, s4d_step, ScanOperands};

use crate::schedule::Bind;
use crate::{Context, Element, Error, Result, Tensor};

/// A whole tensor bound at `slot`, or [`Error::TooLarge`] past the storage-binding limit.
pub(crate) fn bind_whole<'b, T: Element>(
    ctx: &Context,
    op: &'static str,
    name: &str,
    slot: u32,
    t: &'b Tensor<T>,
) -> Result<Bind<'b>> {
    bind_buffer(ctx, op, name, slot, t.buffer())
}

pub(crate) fn bind_buffer<'b>(
    ctx: &Context,
    op: &'static str,
    name: &str,
    slot: u32,
    buffer: &'b wgpu::Buffer,
) -> Result<Bind<'b>> {
    let limit = ctx.limits().max_storage_buffer_binding_size;
    if buffer.size() > limit {
        return Err(Error::TooLarge {
            op,
            what: format!("`{name}`"),
            needed: buffer.size(),
            limit,
        });
    }
    Ok(Bind {
        slot,
        buffer,
        offset: 0,
        size: buffer.size(),
    })
}

pub(crate) fn workgroup_size(ctx: &Context) -> u32 {
    crate::attention::linear::workgroup_size(ctx)
}
