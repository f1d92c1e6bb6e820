//! Lightning attention: causal linear attention with a per-head exponential decay, computed
//! block-wise (Qin et al. 2024, *Lightning Attention-2*, arXiv 2401.04658; TransNormerLLM,
//! arXiv 2307.14995):
//!
//! `o_t = q_t Σ_{j≤t} λ_h^(t−j) k_jᵀ v_j`, `λ_h = exp(−s_h)`,
//!
//! in blocks of B rows: a masked, decayed product inside the block plus the state of all earlier
//! blocks, `KV ← λ^B KV + Σ_j λ^(B−1−j) k_jᵀ v_j`. Only non-negative powers of λ are ever formed,
//! so strong decays (s = 2, B = 64) underflow harmlessly instead of overflowing. Cost O(L·B·D).

use super::FeatureMap;
use crate::bind::{scratch, upload_f32, Bind};
use crate::driver::{self, Input, OutSlot, Pass, Plan, RowOp};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
use crate::sizes::{resolve_block, workgroup_size};
pub use crate::types::attention::{alibi_slopes, LightningOptions};
use crate::types::attention::{check_shapes, heads_of, resolve_slopes, AttnDims};
use crate::{Context, Element, Result, Tensor};

crate::uniform! {
    /// The `Params` uniform of shaders/lightning_attention.wgsl.
    pub(crate) struct Params {
        rows: u32,
        len: u32,
        dk: u32,
        dv: u32,
        n_blocks: u32,
        flags: u32,
        heads: u32,
        row0: u32,
        q_off: u32,
        k_off: u32,
        v_off: u32,
        o_off: u32,
        total: u32,
        _pad: [u32; 3],
    }
}

/// One pass of the decayed kernel (shared with NormAttention, which uses s = 0).
pub(crate) struct Decayed<'b> {
    pub feature_map: FeatureMap,
    pub causal: bool,
    pub block: u32,
    /// `[H]` f32 decay rates on the device.
    pub slopes: &'b wgpu::Buffer,
    pub heads: u32,
}

/// Records block_state, scan_blocks and block_apply over rows `[r0, r0 + nr)`.
pub(crate) fn record_decayed_rows<T: Element>(
    s: &mut Schedule<'_>,
    (q, k, v): (&Tensor<T>, &Tensor<T>, &Tensor<T>),
    d: &AttnDims,
    (r0, nr): (u64, u64),
    cfg: &Decayed<'_>,
    storage: Storage,
    out: &OutSlot<'_>,
) -> Result<()> {
    let ctx = s.context();
    let wg = workgroup_size(ctx);
    let consts = [
        ("FMAP", cfg.feature_map.shader_id()),
        ("WG", wg),
        ("CHUNK", cfg.block),
    ];
    let pl = |entry| {
        ctx.pipelines
            .get(ctx, "lightning_attention", entry, storage, &consts)
    };
    let (p_state, p_scan, p_apply) = (pl("block_state")?, pl("scan_blocks")?, pl("block_apply")?);
    let es = size_of::<T>() as u64;
    let (len, dk, dv) = (d.len as u64, d.dk as u64, d.dv as u64);
    let n_blocks = len.div_ceil(cfg.block as u64);
    let state = scratch(ctx, nr * n_blocks * dk * dv * 4);
    let (bq, q_off) = Bind::elems(ctx, 1, q.buffer(), es, r0 * len * dk, nr * len * dk);
    let (bk, k_off) = Bind::elems(ctx, 2, k.buffer(), es, r0 * len * dk, nr * len * dk);
    let (bv, v_off) = Bind::elems(ctx, 3, v.buffer(), es, r0 * len * dv, nr * len * dv);
    let bsl = Bind {
        slot: 4,
        buffer: cfg.slopes,
        offset: 0,
        size: cfg.slopes.size(),
    };
    let bs = Bind {
        slot: 5,
        buffer: &state,
        offset: 0,
        size: state.size(),
    };
    let (bo, o_off) = out.bind(ctx, 6, nr * len * dv);
    let mut prm = Params {
        rows: nr as u32,
        len: len as u32,
        dk: dk as u32,
        dv: dv as u32,
        n_blocks: n_blocks as u32,
        flags: cfg.causal as u32,
        heads: cfg.heads,
        row0: (r0 % cfg.heads as u64) as u32,
        q_off,
        k_off,
        v_off,
        o_off,
        total: (nr * n_blocks) as u32,
        _pad: [0; 3],
    };
    s.dispatch(&p_state, &prm, &[bk, bv, bsl, bs], nr * n_blocks)?;
    prm.total = (nr * dk * dv) as u32;
    s.dispatch(
        &p_scan,
        &prm,
        &[bsl, bs],
        (nr * dk * dv).div_ceil(wg as u64),
    )?;
    prm.total = (nr * n_blocks) as u32;
    s.dispatch(&p_apply, &prm, &[bq, bk, bv, bsl, bs, bo], nr * n_blocks)
}

/// The plan of the decayed kernel: q/k/v rows plus the per-block state.
pub(crate) fn decayed_plan<T: Element>(d: &AttnDims, block: u32) -> Plan {
    let n_blocks = (d.len as u64).div_ceil(block as u64);
    super::qkv_plan::<T>(d).bytes("state", n_blocks * (d.dk * d.dv) as u64 * 4)
}

const OP: &str = "lightning_attention";

/// Lightning attention: `q, k: [B, H, L, Dk]` (or `[H, L, Dk]`), `v: [.., L, Dv]` ->
/// `o: [.., L, Dv]` in the inputs' dtype, causal, no denominator (TransNormerLLM normalises the
/// output afterwards). `slopes: [H]` decay rates `s_h ≥ 0` (λ_h = exp(−s_h)); `None` uses
/// [`alibi_slopes`]. f16 tensors are stored as f16; state and arithmetic are f32.
///
/// Errors: [`Error::Shape`](crate::Error::Shape) (mismatched q/k/v, slopes not of length H), [`Error::InvalidArgument`](crate::Error::InvalidArgument)
/// (a slope negative or not finite, a block outside `1..=max`), [`Error::TooLarge`](crate::Error::TooLarge).
pub fn lightning_attention<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    slopes: Option<&[f32]>,
    opts: &LightningOptions,
) -> Result<Tensor<T>> {
    driver::run(
        ctx,
        &Lightning {
            q,
            k,
            v,
            slopes,
            opts,
        },
    )
}

/// [`lightning_attention`] writing into an existing `out: [.., L, Dv]`, one submission.
pub fn lightning_attention_into<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    slopes: Option<&[f32]>,
    out: &Tensor<T>,
    opts: &LightningOptions,
) -> Result<()> {
    driver::run_into(
        ctx,
        &Lightning {
            q,
            k,
            v,
            slopes,
            opts,
        },
        out,
    )
}

/// Records Lightning attention into a [`Schedule`].
pub fn record_lightning_attention<T: Element>(
    s: &mut Schedule<'_>,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    slopes: Option<&[f32]>,
    out: &Tensor<T>,
    opts: &LightningOptions,
) -> Result<()> {
    driver::record(
        s,
        &Lightning {
            q,
            k,
            v,
            slopes,
            opts,
        },
        out,
    )
}

struct Lightning<'a, T: Element> {
    q: &'a Tensor<T>,
    k: &'a Tensor<T>,
    v: &'a Tensor<T>,
    slopes: Option<&'a [f32]>,
    opts: &'a LightningOptions,
}

impl<T: Element> RowOp for Lightning<'_, T> {
    type T = T;
    /// Sizes, block, slopes on the device, heads.
    type Dims = (AttnDims, u32, wgpu::Buffer, u32);
    const NAME: &'static str = OP;

    fn plan(&self, ctx: &Context) -> Result<(Self::Dims, Plan)> {
        let d = check_shapes(OP, self.q.shape(), self.k.shape(), self.v.shape())?;
        let heads = heads_of(self.q.shape());
        let sl = resolve_slopes(OP, heads, self.slopes)?;
        let block = resolve_block(ctx, OP, self.opts.block)?;
        let plan = decayed_plan::<T>(&d, block);
        Ok(((d, block, upload_f32(ctx, &sl), heads as u32), plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        super::qkv_inputs(self.q, self.k, self.v)
    }

    fn record_rows(&self, s: &mut Schedule<'_>, dims: &Self::Dims, p: &Pass<'_>) -> Result<()> {
        let (d, block, slopes, heads) = dims;
        let cfg = Decayed {
            feature_map: self.opts.feature_map,
            causal: true,
            block: *block,
            slopes,
            heads: *heads,
        };
        let qkv = (self.q, self.k, self.v);
        record_decayed_rows(s, qkv, d, (p.r0, p.nr), &cfg, p.storage, &p.out)
    }
}
