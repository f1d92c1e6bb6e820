//! Lightning attention: causal linear attention with a per-head exponential decay, computed
//! block-wise (Qin et al. 2024, *Lightning Attention-2*, arXiv 2401.04658; TransNormerLLM,
//! arXiv 2307.14995):
//!
//! `o_t = q_t Σ_{j≤t} λ_h^(t−j) k_jᵀ v_j`, `λ_h = exp(−s_h)`,
//!
//! in blocks of B rows: a masked, decayed product inside the block plus the state of all earlier
//! blocks, `KV ← λ^B KV + Σ_j λ^(B−1−j) k_jᵀ v_j`. Only non-negative powers of λ are ever formed,
//! so strong decays (s = 2, B = 64) underflow harmlessly instead of overflowing. Cost O(L·B·D).

use super::chunk::{self, Decay, Io, Job};
use super::FeatureMap;
use crate::bind::upload_f32;
use crate::driver::{self, Input, Pass, Plan, RowOp};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
pub use crate::types::attention::{alibi_slopes, LightningOptions};
use crate::types::attention::{check_shapes, heads_of, resolve_slopes, AttnDims};
use crate::{Context, Element, Result, Tensor};

/// One run of the chunk engine with a per-head decay and no denominator (shared with
/// NormAttention, which has no decay).
pub(crate) struct Decayed<'b> {
    pub feature_map: FeatureMap,
    pub causal: bool,
    pub block: u32,
    /// `[H]` f32 decay rates on the device; `None`: λ = 1.
    pub slopes: Option<&'b wgpu::Buffer>,
    pub heads: u32,
}

impl Decayed<'_> {
    fn job(&self, storage: Storage, d: &AttnDims) -> Job {
        Job {
            storage,
            fmap: self.feature_map.shader_id(),
            causal: self.causal,
            denominator: false,
            eps: 0.0,
            chunk: Some(self.block),
            len: d.len as u64,
            dk: d.dk as u64,
            dv: d.dv as u64,
        }
    }
}

/// Records the chunk engine over one driver pass of `q, k, v` into `p`'s output slot.
pub(crate) fn record_decayed_pass<T: Element>(
    s: &mut Schedule<'_>,
    (q, k, v): (&Tensor<T>, &Tensor<T>, &Tensor<T>),
    d: &AttnDims,
    cfg: &Decayed<'_>,
    p: &Pass<'_>,
) -> Result<()> {
    let io = Io {
        q: q.buffer(),
        k: k.buffer(),
        v: v.buffer(),
        in_bytes: size_of::<T>() as u64,
        totals: None,
        geom: chunk::Geom::dense(d.len as u64, d.dk as u64, d.dv as u64),
        initial: None,
    };
    let decay = cfg.slopes.map(|slopes| Decay {
        slopes,
        heads: cfg.heads,
    });
    chunk::record_pass(s, OP, &cfg.job(p.storage, d), decay, &io, p)
}

/// The plan of the decayed engine: q/k/v rows plus the engine's scratch; rows split along L.
pub(crate) fn decayed_plan<T: Element>(ctx: &Context, d: &AttnDims, block: u32) -> Plan {
    let cfg = Decayed {
        feature_map: FeatureMap::Identity,
        causal: true,
        block,
        slopes: None,
        heads: 1,
    };
    let mut plan = super::qkv_plan::<T>(d);
    plan.row_bytes
        .extend(chunk::row_bytes(ctx, &cfg.job(Storage::F32, d)));
    plan.split_len = true;
    plan
}

const OP: &str = "lightning_attention";

/// Lightning attention: `q, k: [B, H, L, Dk]` (or `[H, L, Dk]`), `v: [.., L, Dv]` ->
/// `o: [.., L, Dv]` in the inputs' dtype, causal, no denominator (TransNormerLLM normalises the
/// output afterwards). `slopes: [H]` decay rates `s_h ≥ 0` (λ_h = exp(−s_h)); `None` uses
/// [`alibi_slopes`]. f16 tensors are stored as f16; state and arithmetic are f32.
///
/// Errors: [`Error::Shape`](crate::Error::Shape) (mismatched q/k/v, slopes not of length H), [`Error::InvalidArgument`](crate::Error::InvalidArgument)
/// (a slope negative or not finite, a block outside `1..=max`). Any L: a row larger than a storage
/// binding runs in segments of L that carry the decayed state.
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
        let block = chunk::resolve_chunk(ctx, OP, self.opts.block)?;
        let plan = decayed_plan::<T>(ctx, &d, block);
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
            slopes: Some(slopes),
            heads: *heads,
        };
        record_decayed_pass(s, (self.q, self.k, self.v), d, &cfg, p)
    }
}
