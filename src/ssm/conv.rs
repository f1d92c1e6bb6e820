//! The fast path of [`super::causal_conv`]: a four-step FFT (Bailey 1990) whose n1- and n2-point
//! sub-FFTs run in workgroup memory (radix-4 Stockham), two real rows packed in one complex row,
//! and the split, the product with the kernel spectra and the inverse row FFTs fused into one
//! dispatch: three dispatches per pass over the data instead of one per radix stage
//! (shaders/fft_conv.wgsl).

use super::kernel::{DiagonalSsm, Discretization};
use crate::bind::{bind_buffer, scratch, Bind};
use crate::driver::{self, Pass};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
use crate::sizes::workgroup_size;
use crate::{Context, Element, Error, Result, Tensor};

/// u32 words per row recording its non-finite samples (`NF_W` in the shaders).
pub(crate) const NF_W: u64 = 34;

crate::uniform! {
    /// The `Params` uniform of shaders/fft_conv.wgsl.
    pub(crate) struct Params {
        n: u32,
        n1: u32,
        n2: u32,
        len: u32,
        rows: u32,
        total: u32,
        h: u32,
        row0: u32,
        x_off: u32,
        y_off: u32,
        g: u32,
        flags: u32,
        scale: f32,
        _p: [u32; 3],
    }
}

/// The four-step split `n = n1·n2` (n1 <= n2) and the workgroup sizes it runs with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FourStep {
    pub n: u64,
    n1: u64,
    n2: u64,
    /// Columns per workgroup in the column passes.
    g: u64,
    wg: u32,
    /// Complex elements per half of workgroup memory (`SH`).
    sh: u32,
}

impl FourStep {
    /// The workgroup size and `SH`: half the workgroup memory in complex elements, a power of
    /// two (the Stockham stages ping-pong between the halves).
    fn capacity(ctx: &Context) -> (u32, u32) {
        // CPU adapters run a workgroup's invocations 8 lanes at a time and switch between the
        // groups at every barrier: one group of 8 measured 2-20x faster on lavapipe than 256.
        let wg = match ctx.adapter_info().device_type {
            wgpu::DeviceType::Cpu => 8.min(workgroup_size(ctx)),
            _ => workgroup_size(ctx),
        };
        let half = ctx.limits().max_compute_workgroup_storage_size as u64 / 16;
        (wg, 1 << half.max(1).ilog2())
    }

    /// The plan for `n` (a power of two), or None when a row pair of n2 points does not fit
    /// workgroup memory.
    pub(crate) fn new(ctx: &Context, n: u64) -> Option<Self> {
        let (wg, sh) = Self::capacity(ctx);
        let k = n.trailing_zeros();
        let n1 = 1u64 << (k / 2);
        let n2 = n / n1;
        if 2 * n2 > sh as u64 {
            return None;
        }
        let g = (sh as u64 / n1).min(n2);
        Some(Self {
            n,
            n1,
            n2,
            g,
            wg,
            sh,
        })
    }

    fn params(&self, rows: u64, len: u64, h: u64) -> Params {
        Params {
            n: self.n as u32,
            n1: self.n1 as u32,
            n2: self.n2 as u32,
            len: len as u32,
            rows: rows as u32,
            total: 0,
            h: h as u32,
            row0: 0,
            x_off: 0,
            y_off: 0,
            g: self.g as u32,
            flags: 0,
            scale: 1.0 / self.n as f32,
            _p: [0; 3],
        }
    }

    /// Workgroups of the column passes and of the row passes for `pairs` row pairs.
    fn grids(&self, pairs: u64) -> (u64, u64) {
        let per = if self.n1 == 1 { 1 } else { self.n1 / 2 + 1 };
        (pairs * (self.n2 / self.g), pairs * per)
    }

    fn pipeline(
        &self,
        ctx: &Context,
        entry: &'static str,
        storage: Storage,
    ) -> Result<std::sync::Arc<wgpu::ComputePipeline>> {
        let c = [("WG", self.wg), ("SH", self.sh)];
        ctx.pipelines.get(ctx, "fft_conv", entry, storage, &c)
    }

    /// Records the kernel spectra `[H, n]` (transposed order) of `k: [H, len]`.
    pub(crate) fn record_kspec(
        &self,
        s: &mut Schedule<'_>,
        storage: Storage,
        tw: &wgpu::Buffer,
        k: &wgpu::Buffer,
        (h, len): (u64, u64),
    ) -> Result<wgpu::Buffer> {
        let ctx = s.context();
        let pairs = h.div_ceil(2);
        let (z, kf) = (
            scratch(ctx, pairs * self.n * 8),
            scratch(ctx, h * self.n * 8),
        );
        let (cols, rows) = self.grids(pairs);
        let mut prm = self.params(h, len, h);
        let bt = Bind::all(4, tw);
        let bk = bind_buffer(ctx, "causal_conv", "K", 1, k)?;
        prm.total = cols as u32;
        // No patching of K (flags 0): the non-finite record is never touched.
        let nf = scratch(ctx, NF_W * 4);
        let binds = [bk, Bind::all(2, &z), bt, Bind::all(8, &nf)];
        s.dispatch(
            &*self.pipeline(ctx, "col_fwd", storage)?,
            &prm,
            &binds,
            cols,
        )?;
        s.mark("kspec_col_fwd");
        prm.total = rows as u32;
        let binds = [Bind::all(2, &z), Bind::all(3, &kf), bt];
        s.dispatch(
            &*self.pipeline(ctx, "row_kspec", storage)?,
            &prm,
            &binds,
            rows,
        )?;
        s.mark("row_kspec");
        Ok(kf)
    }

    /// Records the convolution of rows `[r0, r0 + nr)` of `u: [R, len]` (bound from element
    /// `first`), with kernel spectra `kf`, raw `k: [H, len]` and `d: [H]`, into the pass's output.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_conv(
        &self,
        s: &mut Schedule<'_>,
        p: &Pass<'_>,
        tw: &wgpu::Buffer,
        kf: &wgpu::Buffer,
        (u, es): (&wgpu::Buffer, u64),
        (k, d): (&wgpu::Buffer, &wgpu::Buffer),
        (h, len): (u64, u64),
    ) -> Result<()> {
        let ctx = s.context();
        let (r0, nr) = (p.r0, p.nr);
        let pairs = nr.div_ceil(2);
        let z = scratch(ctx, pairs * self.n * 8);
        // Fresh buffers are zeroed: the non-finite record starts empty.
        let nf = scratch(ctx, nr * NF_W * 4);
        let (cols, rows) = self.grids(pairs);
        let mut prm = self.params(nr, len, h);
        prm.row0 = r0 as u32;
        prm.flags = 1;
        let (bu, x_off) = Bind::elems(ctx, 1, u, es, r0 * len, nr * len);
        prm.x_off = x_off;
        let (by, y_off) = p.out.bind(ctx, 6, nr * len);
        prm.y_off = y_off;
        let (bz, bt, bnf) = (Bind::all(2, &z), Bind::all(4, tw), Bind::all(8, &nf));
        let bkf = Bind::all(3, kf);
        let bd = bind_buffer(ctx, "causal_conv", "D", 5, d)?;
        let bk = bind_buffer(ctx, "causal_conv", "K", 7, k)?;
        let st = p.storage;

        prm.total = cols as u32;
        s.dispatch(
            &*self.pipeline(ctx, "col_fwd", st)?,
            &prm,
            &[bu, bz, bt, bnf],
            cols,
        )?;
        s.mark("col_fwd");
        prm.total = rows as u32;
        let binds = [bz, bkf, bt];
        s.dispatch(&*self.pipeline(ctx, "row_conv", st)?, &prm, &binds, rows)?;
        s.mark("row_conv");
        prm.total = cols as u32;
        // The record read back without atomics (slot 9, the same buffer).
        let binds = [bu, bz, bt, bd, by, bk, Bind::all(9, &nf)];
        s.dispatch(&*self.pipeline(ctx, "col_inv", st)?, &prm, &binds, cols)?;
        s.mark("col_inv");
        Ok(())
    }
}

/// The S4D convolution mode in one submission: the kernel `K = s4d_kernel(ssm, L, disc)` then
/// `y = K ∗ u + D u` by [`super::causal_conv`], for `u: [B, H, L]` (or `[H, L]`) → y shaped like
/// u (Gu et al. 2022, arXiv 2206.11893). K is kept in T between the two, as in the two calls.
/// Errors: those of [`super::s4d_kernel`] and [`super::causal_conv`].
pub fn s4d_conv<T: Element>(
    ctx: &Context,
    ssm: &DiagonalSsm<T>,
    u: &Tensor<T>,
    disc: Discretization,
) -> Result<Tensor<T>> {
    let out = Tensor::empty(ctx, u.shape())?;
    s4d_conv_into(ctx, ssm, u, &out, disc)?;
    Ok(out)
}

/// [`s4d_conv`] into an existing `out` shaped like u.
pub fn s4d_conv_into<T: Element>(
    ctx: &Context,
    ssm: &DiagonalSsm<T>,
    u: &Tensor<T>,
    out: &Tensor<T>,
    disc: Discretization,
) -> Result<()> {
    let (h, _) = ssm.dims("s4d_conv")?;
    let shape = u.shape();
    if !(shape.len() == 2 || shape.len() == 3) || shape.contains(&0) {
        return Err(Error::Shape {
            op: "s4d_conv",
            name: "u",
            expected: format!("[B, {h}, L] or [{h}, L], every dim >= 1"),
            got: shape.to_vec(),
        });
    }
    let k = Tensor::<T>::empty(ctx, &[h, shape[shape.len() - 1]])?;
    driver::submit(ctx, |s| {
        super::record_s4d_kernel(s, ssm, &k, disc)?;
        super::record_causal_conv(s, u, &k, &ssm.d, out)
    })
}
