//! Kernelized linear attention on the GPU (Katharopoulos et al. 2020, *Transformers are RNNs*,
//! arXiv 2006.16236, eqs. 4-6 and 16-20).
//!
//! Non-causal: `O_i = φ(Q_i)ᵀ S / (φ(Q_i)ᵀ z + ε)` with `S = Σ_j φ(K_j) V_jᵀ`, `z = Σ_j φ(K_j)`.
//! Causal: the sums run over `j ≤ i`, computed in the chunked parallel form: per chunk of rows,
//! a masked intra-chunk product plus the prefix state of all earlier chunks, so the work is
//! spread over L rather than one sequential loop per head. Any L; the last chunk is ragged.
//! The same chunk kernels serve precomputed features (Performer, [`super::favor`]) and the
//! prefill of recurrent decoding ([`super::recurrent`]).

use crate::bind::{scratch, Bind};
use crate::driver::{self, Input, Pass, Plan, RowOp};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
use crate::sizes::{chunk_len, workgroup_size};
use crate::types::attention::check_options;
pub use crate::types::attention::{check_shapes, AttnDims, LinearAttentionOptions};
use crate::{Context, Element, Result, Tensor};

crate::uniform! {
    /// The `Params` uniform of shaders/linear_attention.wgsl.
    pub(crate) struct Params {
        rows: u32,
        len: u32,
        dk: u32,
        dv: u32,
        n_chunks: u32,
        flags: u32,
        eps: f32,
        q_off: u32,
        k_off: u32,
        v_off: u32,
        o_off: u32,
        total: u32,
        s_off: u32,
        z_off: u32,
        _pad: [u32; 2],
    }
}

const OP: &str = "linear_attention";

/// Linear attention: `q, k: [B, H, L, Dk]` (or `[H, L, Dk]`), `v: [.., L, Dv]` -> `o: [.., L, Dv]`
/// in the inputs' dtype. f16 tensors are stored as f16; all arithmetic and state is f32.
///
/// NaN in an input reaches exactly the outputs that depend on it. Errors: [`Error::Shape`](crate::Error::Shape) for
/// mismatched shapes, [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a bad ε, [`Error::TooLarge`](crate::Error::TooLarge) when one
/// (batch, head) row does not fit a storage binding.
pub fn linear_attention<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    opts: &LinearAttentionOptions,
) -> Result<Tensor<T>> {
    driver::run(ctx, &Linear::new(q, k, v, opts))
}

/// [`linear_attention`] writing into an existing `out: [.., L, Dv]`, one submission.
pub fn linear_attention_into<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    out: &Tensor<T>,
    opts: &LinearAttentionOptions,
) -> Result<()> {
    driver::run_into(ctx, &Linear::new(q, k, v, opts), out)
}

/// Records linear attention into a [`Schedule`] (for chaining ops in one submission).
pub fn record_linear_attention<T: Element>(
    s: &mut Schedule<'_>,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    out: &Tensor<T>,
    opts: &LinearAttentionOptions,
) -> Result<()> {
    driver::record(s, &Linear::new(q, k, v, opts), out)
}

/// The linear-attention op; with `state` = (S `[R, Dk, Dv]`, z `[R, Dk]`) f32 buffers, also
/// each row's sums over all L (the decoding state after a causal prefill).
pub(crate) struct Linear<'a, T: Element> {
    pub q: &'a Tensor<T>,
    pub k: &'a Tensor<T>,
    pub v: &'a Tensor<T>,
    pub opts: LinearAttentionOptions,
    pub state: Option<(&'a wgpu::Buffer, &'a wgpu::Buffer)>,
}

impl<'a, T: Element> Linear<'a, T> {
    pub fn new(
        q: &'a Tensor<T>,
        k: &'a Tensor<T>,
        v: &'a Tensor<T>,
        opts: &LinearAttentionOptions,
    ) -> Self {
        Self {
            q,
            k,
            v,
            opts: *opts,
            state: None,
        }
    }
}

impl<T: Element> RowOp for Linear<'_, T> {
    type T = T;
    type Dims = AttnDims;
    const NAME: &'static str = OP;

    fn plan(&self, ctx: &Context) -> Result<(AttnDims, Plan)> {
        let d = check_shapes(OP, self.q.shape(), self.k.shape(), self.v.shape())?;
        check_options(OP, &self.opts)?;
        let (len, dk, dv) = (d.len as u64, d.dk as u64, d.dv as u64);
        let plan = super::qkv_plan::<T>(&d)
            .bytes("state", core_state_bytes(ctx, len, dk, dv))
            .bytes("S", dk * dv * 4);
        Ok((d, plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        super::qkv_inputs(self.q, self.k, self.v)
    }

    fn record_rows(&self, s: &mut Schedule<'_>, d: &AttnDims, p: &Pass<'_>) -> Result<()> {
        let ctx = s.context();
        let (len, dk, dv) = (d.len as u64, d.dk as u64, d.dv as u64);
        let (r0, nr, es) = (p.r0, p.nr, size_of::<T>() as u64);
        let chunks = scratch(ctx, nr * core_state_bytes(ctx, len, dk, dv));
        let core = Core {
            len,
            dk,
            dv,
            causal: self.opts.causal,
            denominator: self.opts.denominator,
            eps: self.opts.eps,
        };
        let binds = CoreBinds {
            q: Bind::elems(ctx, 1, self.q.buffer(), es, r0 * len * dk, nr * len * dk),
            k: Bind::elems(ctx, 2, self.k.buffer(), es, r0 * len * dk, nr * len * dk),
            v: Bind::elems(ctx, 3, self.v.buffer(), es, r0 * len * dv, nr * len * dv),
            o: p.out.bind(ctx, 5, nr * len * dv),
            total: self.state.map(|(bs, bz)| {
                (
                    Bind::elems(ctx, 6, bs, 4, r0 * dk * dv, nr * dk * dv),
                    Bind::elems(ctx, 7, bz, 4, r0 * dk, nr * dk),
                )
            }),
        };
        let fmap = self.opts.feature_map.shader_id();
        record_core(s, p.storage, fmap, &core, nr, &binds, &chunks)
    }
}

/// Sizes and flags of one run of the chunked kernels (per pass of rows).
pub(crate) struct Core {
    pub len: u64,
    /// Feature dim (Dk for elementwise maps, m' for precomputed features).
    pub dk: u64,
    pub dv: u64,
    pub causal: bool,
    pub denominator: bool,
    pub eps: f32,
}

/// Bindings of one pass (binding, element offset inside it): q, k, v, o at slots 1, 2, 3, 5; for
/// prefill, `total` = (S out, z out) at slots 6, 7, which receive each row's sums over all L.
pub(crate) struct CoreBinds<'b> {
    pub q: (Bind<'b>, u32),
    pub k: (Bind<'b>, u32),
    pub v: (Bind<'b>, u32),
    pub o: (Bind<'b>, u32),
    pub total: Option<((Bind<'b>, u32), (Bind<'b>, u32))>,
}

/// Bytes of chunk state one row needs (n_chunks · (Dk·Dv + Dk) f32).
pub(crate) fn core_state_bytes(ctx: &Context, len: u64, dk: u64, dv: u64) -> u64 {
    len.div_ceil(chunk_len(ctx) as u64) * (dk * dv + dk) * 4
}

/// Records chunk_state -> [chunk_total] -> scan_chunks -> chunk_apply for `nr` rows. `fmap` is the
/// `FMAP` constant (2 = identity, for features computed beforehand); `state` holds at least
/// `nr · core_state_bytes` bytes.
pub(crate) fn record_core(
    s: &mut Schedule<'_>,
    storage: Storage,
    fmap: u32,
    c: &Core,
    nr: u64,
    b: &CoreBinds<'_>,
    state: &wgpu::Buffer,
) -> Result<()> {
    let ctx = s.context();
    let chunk = chunk_len(ctx);
    let wg = workgroup_size(ctx);
    let n_chunks = c.len.div_ceil(chunk as u64);
    let width = c.dk * c.dv + c.dk;
    let consts = [("FMAP", fmap), ("WG", wg), ("CHUNK", chunk)];
    let pl = |entry| {
        ctx.pipelines
            .get(ctx, "linear_attention", entry, storage, &consts)
    };
    let bs = Bind {
        slot: 4,
        buffer: state,
        offset: 0,
        size: nr * n_chunks * width * 4,
    };
    let mut prm = Params {
        rows: nr as u32,
        len: c.len as u32,
        dk: c.dk as u32,
        dv: c.dv as u32,
        n_chunks: n_chunks as u32,
        flags: c.causal as u32 | (c.denominator as u32) << 1,
        eps: c.eps,
        q_off: b.q.1,
        k_off: b.k.1,
        v_off: b.v.1,
        o_off: b.o.1,
        total: (nr * n_chunks) as u32,
        s_off: b.total.map_or(0, |t| t.0 .1),
        z_off: b.total.map_or(0, |t| t.1 .1),
        _pad: [0; 2],
    };
    s.dispatch(
        &*pl("chunk_state")?,
        &prm,
        &[b.k.0, b.v.0, bs],
        nr * n_chunks,
    )?;
    prm.total = (nr * width) as u32;
    let groups = (nr * width).div_ceil(wg as u64);
    if let Some((ts, tz)) = b.total {
        s.dispatch(&*pl("chunk_total")?, &prm, &[bs, ts.0, tz.0], groups)?;
    }
    s.dispatch(&*pl("scan_chunks")?, &prm, &[bs], groups)?;
    prm.total = (nr * n_chunks) as u32;
    let binds = [b.q.0, b.k.0, b.v.0, bs, b.o.0];
    s.dispatch(&*pl("chunk_apply")?, &prm, &binds, nr * n_chunks)
}
