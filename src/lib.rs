//! # longseq
//!
//! Sub-quadratic sequence kernels as hand-written WGSL compute shaders, dispatched through wgpu on
//! any adapter (Vulkan, Metal, DX12, WebGPU; lavapipe on the CPU), each checked by a plain-Rust
//! CPU reference with f64 accumulation in [`reference`](mod@reference).
//!
//! ```no_run
//! use longseq::{attention::{linear_attention, FeatureMap, LinearAttentionOptions}, Context, Tensor};
//! # fn main() -> longseq::Result<()> {
//! let ctx = Context::new()?; // LONGSEQ_ADAPTER=substring picks an adapter by name
//! let (h, l, d) = (2, 100, 16);
//! let x: Vec<f32> = (0..h * l * d).map(|i| (i as f32 * 0.37).sin()).collect();
//! let q = Tensor::from_slice(&ctx, &x, &[h, l, d])?; // q: [H, L, Dk] or [B, H, L, Dk]
//! let opts = LinearAttentionOptions { feature_map: FeatureMap::Elu1, causal: true, ..Default::default() };
//! let o = linear_attention(&ctx, &q, &q, &q, &opts)?; // o: [H, L, Dv]
//! let host: Vec<f32> = o.to_vec(&ctx)?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

/// Declares a `#[repr(C)]` uniform struct mirrored by a WGSL `Params` struct, with its layout
/// (size and member offsets) for the reflection test of the kernel registry (`kernels.rs`).
macro_rules! uniform {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($(#[$fm:meta])* $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name { $($(#[$fm])* $f: $t),* }

        impl crate::pipeline::Uniform for $name {
            fn layout() -> crate::pipeline::Layout {
                crate::pipeline::Layout {
                    size: size_of::<Self>(),
                    fields: vec![$((stringify!($f), std::mem::offset_of!($name, $f))),*],
                }
            }
        }
    };
}
pub(crate) use uniform;

pub mod attention;
mod bind;
mod cast;
pub mod context;
pub mod cpu;
mod driver;
pub mod dtype;
pub mod error;
#[cfg(test)]
mod kernels;
pub mod math;
mod pipeline;
pub mod positions;
pub mod profile;
pub mod reference;
pub mod schedule;
pub mod series;
mod sizes;
pub mod ssm;
pub mod tensor;
pub mod types;
mod unroll;

pub use context::{Context, ContextOptions, TileFamily};

/// README.md's code blocks run as doctests, so its library snippet compiles as written.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
pub use dtype::{DType, Element};
pub use error::{Error, Result};
/// The wgpu and half this crate is built on, so applications use the same versions.
pub use half;
pub use schedule::Schedule;
pub use tensor::Tensor;
pub use wgpu;

/// Runs `f` inside validation and out-of-memory error scopes, so a device-side failure becomes
/// an [`Error::Device`] instead of wgpu's default panic.
pub(crate) fn error_scope<R>(ctx: &Context, f: impl FnOnce() -> Result<R>) -> Result<R> {
    let oom = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let val = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let r = f();
    // On the web nothing may block: the scopes are popped and their errors go to the device's
    // uncaptured-error handler (the browser console) instead of this result.
    #[cfg(target_arch = "wasm32")]
    {
        drop(val.pop());
        drop(oom.pop());
        r
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let e1 = pollster::block_on(val.pop());
        let e2 = pollster::block_on(oom.pop());
        let r = r?;
        match e1.or(e2) {
            Some(e) => Err(Error::device(e)),
            None => Ok(r),
        }
    }
}

/// Returns [`Error::NaN`] at the first NaN in `data` (for callers whose NaN policy is "error").
pub fn check_no_nan<T: Element>(op: &'static str, name: &str, data: &[T]) -> Result<()> {
    match data.iter().position(|x| x.to_f64().is_nan()) {
        Some(index) => Err(Error::NaN {
            op,
            name: name.into(),
            index,
        }),
        None => Ok(()),
    }
}
