//! S4 DPLR convolution kernel on the GPU (Gu et al. 2022, *Efficiently Modeling Long Sequences
//! with Structured State Spaces*, arXiv 2111.00396, Algorithm 1) for `A = Λ − P Qᴴ`, bilinear
//! discretisation: Cauchy sums at the roots of unity, the rank-1 Woodbury correction, inverse FFT.
//!
//! The generating function is truncated at `n = 2^⌈log₂ L⌉` (the FFT's length) and the first L
//! taps kept, which are exact: the truncation only needs `C̃ = C(I − Ā^n)`. C̃ is formed on the host
//! in f64 (S4 trains C̃ directly as its parameter); the O(H·N·n) Cauchy/Woodbury evaluation and
//! the inverse FFT run on the GPU. Any N >= 1 (odd N included: no conjugate pairing is assumed);
//! the kernel's real part is returned (real for a real A, B, C).

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

use super::fft::{record_passes, twiddles, FftDirection};
use crate::bind::{bind_buffer, scratch, Bind};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
use crate::sizes::workgroup_size;
pub use crate::types::ssm::DplrSsm;
use crate::{Context, Error, Result, Tensor};

const OP: &str = "s4_dplr_kernel";

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    h: u32,
    nn: u32,
    n: u32,
    len: u32,
    total: u32,
    scale: f32,
    k_off: u32,
    _p: u32,
}

/// The S4 kernel `K: [H, L]` (f32) of a DPLR SSM with bilinear discretisation. Errors:
/// [`Error::Shape`] / [`Error::InvalidArgument`] for inconsistent parameters or `len = 0`,
/// [`Error::TooLarge`] when `[H, n]` complex spectra exceed a storage binding.
pub fn s4_dplr_kernel(ctx: &Context, m: &DplrSsm, len: usize) -> Result<Tensor<f32>> {
    m.check(OP)?;
    if len == 0 {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "len",
            reason: "L must be >= 1".into(),
        });
    }
    let out = Tensor::<f32>::empty(ctx, &[m.h, len])?;
    let n = len.next_power_of_two() as u64;
    let ct = m.c_tilde(n as usize);
    let mut prm: Vec<f32> = Vec::with_capacity(m.h * m.n * 10);
    for (i, &cti) in ct.iter().enumerate() {
        for z in [m.lambda[i], m.p[i], m.q[i], m.b[i], cti] {
            prm.extend([z.re as f32, z.im as f32]);
        }
    }
    let dt: Vec<f32> = m.dt.iter().map(|&x| x as f32).collect();
    let up = |v: &[f32]| {
        ctx.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("longseq dplr params"),
                contents: bytemuck::cast_slice(v),
                usage: wgpu::BufferUsages::STORAGE,
            })
    };
    let (bprm, bdt) = (up(&prm), up(&dt));
    crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        let wg = workgroup_size(ctx);
        let h = m.h as u64;
        let limit = ctx.limits().max_storage_buffer_binding_size;
        if h * n * 8 > limit {
            return Err(Error::TooLarge {
                op: OP,
                what: "the spectra [H, n]".into(),
                needed: h * n * 8,
                limit,
            });
        }
        let (a, b) = (scratch(ctx, h * n * 8), scratch(ctx, h * n * 8));
        let pl = |e| {
            ctx.pipelines
                .get(ctx, "dplr", e, Storage::F32, &[("WG", wg)])
        };
        let mut p = Params {
            h: h as u32,
            nn: m.n as u32,
            n: n as u32,
            len: len as u32,
            total: (h * n) as u32,
            scale: 1.0 / n as f32,
            k_off: 0,
            _p: 0,
        };
        let spec = |slot, buf| Bind {
            slot,
            buffer: buf,
            offset: 0,
            size: h * n * 8,
        };
        s.dispatch(
            &*pl("cauchy")?,
            &p,
            &[
                bind_buffer(ctx, OP, "parameters", 1, &bprm)?,
                bind_buffer(ctx, OP, "dt", 2, &bdt)?,
                spec(3, &a),
            ],
            (h * n).div_ceil(wg as u64),
        )?;
        let tw = twiddles(ctx, n);
        let in_b = record_passes(
            &mut s,
            Storage::F32,
            &tw,
            (&a, &b),
            h,
            n,
            FftDirection::Inverse,
        )?;
        let res = if in_b { &b } else { &a };
        p.total = (h * len as u64) as u32;
        let bk = bind_buffer(ctx, OP, "K", 5, out.buffer())?;
        s.dispatch(
            &*pl("store_real")?,
            &p,
            &[spec(4, res), bk],
            (h * len as u64).div_ceil(wg as u64),
        )?;
        s.submit();
        Ok(())
    })?;
    Ok(out)
}
