//! S4 DPLR convolution kernel on the GPU (Gu et al. 2022, *Efficiently Modeling Long Sequences
//! with Structured State Spaces*, arXiv 2111.00396, Algorithm 1) for `A = Λ − P Qᴴ`, bilinear
//! discretisation: Cauchy sums at the roots of unity, the rank-1 Woodbury correction, inverse FFT.
//!
//! The generating function is truncated at `n = 2^⌈log₂ L⌉` (the FFT's length) and the first L
//! taps kept, which are exact: the truncation only needs `C̃ = C(I − Ā^n)`. C̃ is formed on the host
//! in f64 (S4 trains C̃ directly as its parameter); the O(H·N·n) Cauchy/Woodbury evaluation and
//! the inverse FFT run on the GPU. Any N >= 1 (odd N included: no conjugate pairing is assumed);
//! the kernel's real part is returned (real for a real A, B, C).

use super::fft::{record_passes, twiddles, FftDirection};
use crate::bind::{bind_buffer, scratch, upload_f32, Bind};
use crate::driver::{self, Input, Pass, Plan, RowOp};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
use crate::sizes::workgroup_size;
pub use crate::types::ssm::DplrSsm;
use crate::{Context, Error, Result, Tensor};

const OP: &str = "s4_dplr_kernel";

crate::uniform! {
    /// The `Params` uniform of shaders/dplr.wgsl.
    pub(crate) struct Params {
        h: u32,
        nn: u32,
        n: u32,
        len: u32,
        total: u32,
        scale: f32,
        k_off: u32,
        _p: u32,
    }
}

/// The S4 kernel `K: [H, L]` (f32) of a DPLR SSM with bilinear discretisation. Errors:
/// [`Error::Shape`] / [`Error::InvalidArgument`] for inconsistent parameters or `len = 0`,
/// [`Error::TooLarge`] when `[H, n]` complex spectra exceed a storage binding.
pub fn s4_dplr_kernel(ctx: &Context, m: &DplrSsm, len: usize) -> Result<Tensor<f32>> {
    driver::run(ctx, &DplrKernel { m, len })
}

/// [`s4_dplr_kernel`] into an existing `out: [H, L]` f32 (L is taken from it), one submission.
pub fn s4_dplr_kernel_into(ctx: &Context, m: &DplrSsm, out: &Tensor<f32>) -> Result<()> {
    let len = out.shape().get(1).copied().unwrap_or(0);
    driver::run_into(ctx, &DplrKernel { m, len }, out)
}

/// Records [`s4_dplr_kernel_into`] into a [`Schedule`].
pub fn record_s4_dplr_kernel(s: &mut Schedule<'_>, m: &DplrSsm, out: &Tensor<f32>) -> Result<()> {
    let len = out.shape().get(1).copied().unwrap_or(0);
    driver::record(s, &DplrKernel { m, len }, out)
}

struct DplrKernel<'a> {
    m: &'a DplrSsm,
    len: usize,
}

impl RowOp for DplrKernel<'_> {
    type T = f32;
    /// n, then the per-mode parameters (Λ, P, Q, B, C̃) and Δ on the device.
    type Dims = (u64, wgpu::Buffer, wgpu::Buffer);
    const NAME: &'static str = OP;

    /// One pass over all heads: the spectra are bound whole.
    fn plan(&self, ctx: &Context) -> Result<(Self::Dims, Plan)> {
        let (m, len) = (self.m, self.len);
        m.check(OP)?;
        if len == 0 {
            return Err(Error::InvalidArgument {
                op: OP,
                name: "len",
                reason: "L must be >= 1".into(),
            });
        }
        let n = len.next_power_of_two() as u64;
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
        let ct = m.c_tilde(n as usize);
        let mut prm: Vec<f32> = Vec::with_capacity(m.h * m.n * 10);
        for (i, &cti) in ct.iter().enumerate() {
            for z in [m.lambda[i], m.p[i], m.q[i], m.b[i], cti] {
                prm.extend([z.re as f32, z.im as f32]);
            }
        }
        let dt: Vec<f32> = m.dt.iter().map(|&x| x as f32).collect();
        let plan = Plan::new(vec![m.h, len], 1, h * len as u64).bytes("spectra", h * n * 8);
        Ok(((n, upload_f32(ctx, &prm), upload_f32(ctx, &dt)), plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        Vec::new()
    }

    fn record_rows(&self, s: &mut Schedule<'_>, d: &Self::Dims, pass: &Pass<'_>) -> Result<()> {
        let ctx = s.context();
        let (n, bprm, bdt) = d;
        let (n, h, len) = (*n, self.m.h as u64, self.len as u64);
        let wg = workgroup_size(ctx);
        let (a, b) = (scratch(ctx, h * n * 8), scratch(ctx, h * n * 8));
        let pl = |e| {
            ctx.pipelines
                .get(ctx, "dplr", e, Storage::F32, &[("WG", wg)])
        };
        let (bk, k_off) = pass.out.bind(ctx, 5, h * len);
        let mut p = Params {
            h: h as u32,
            nn: self.m.n as u32,
            n: n as u32,
            len: len as u32,
            total: (h * n) as u32,
            scale: 1.0 / n as f32,
            k_off,
            _p: 0,
        };
        let binds = [
            bind_buffer(ctx, OP, "parameters", 1, bprm)?,
            bind_buffer(ctx, OP, "dt", 2, bdt)?,
            Bind::prefix(3, &a, h * n * 8),
        ];
        s.dispatch(&*pl("cauchy")?, &p, &binds, (h * n).div_ceil(wg as u64))?;
        let tw = twiddles(ctx, n);
        let inv = FftDirection::Inverse;
        let in_b = record_passes(s, Storage::F32, &tw, (&a, &b), h, n, inv)?;
        let res = if in_b { &b } else { &a };
        p.total = (h * len) as u32;
        let binds = [Bind::prefix(4, res, h * n * 8), bk];
        s.dispatch(
            &*pl("store_real")?,
            &p,
            &binds,
            (h * len).div_ceil(wg as u64),
        )
    }
}
