//! Lightning attention: causal linear attention with a per-head exponential decay, computed
//! block-wise (Qin et al. 2024, *Lightning Attention-2*, arXiv 2401.04658; TransNormerLLM,
//! arXiv 2307.14995):
//!
//! `o_t = q_t Σ_{j≤t} λ_h^(t−j) k_jᵀ v_j`, `λ_h = exp(−s_h)`,
//!
//! in blocks of B rows: a masked, decayed product inside the block plus the state of all earlier
//! blocks, `KV ← λ^B KV + Σ_j λ^(B−1−j) k_jᵀ v_j`. Only non-negative powers of λ are ever formed,
//! so strong decays (s = 2, B = 64) underflow harmlessly instead of overflowing. Cost O(L·B·D).
//!
//! NaN/±Inf inputs follow the definition's terms `λ^(t−j) (φ(q_t)·φ(k_j)) v_j` (the reference's
//! pattern) inside a block and across blocks: after the block form, the entries whose definition
//! is not finite are recomputed in definition order (src/attention/lightning_fix.rs), so an Inf
//! in v_j gives `sign(φ(q_t)·φ(k_j))·Inf` (not the NaN of `φ(q_t)·KV` summing ±Inf over
//! features) and an Inf in q_t gives NaN where its terms disagree in sign; the initial state's
//! term of [`lightning_attention_with_state`], `λ^(t+1) φ(q_t)·S_0` (a sum over features in the
//! definition too), joins those sums. Not covered: rows whose span exceeds one storage binding
//! (L split into segments), which keep the state form's pattern.

use super::chunk::{self, Decay, Geom, Io, Job};
use super::lightning_fix::{record_fix, FixIo};
use super::FeatureMap;
use crate::bind::upload_f32;
use crate::driver::{self, Input, Pass, Plan, RowOp};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
pub use crate::types::attention::{alibi_slopes, LightningOptions};
use crate::types::attention::{check_gqa, resolve_slopes, AttnDims};
use crate::types::{CuSeqlens, GqaDims};
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
    /// Where the rows live; `None`: contiguous `[R, L, D]` rows.
    pub geom: Option<Geom>,
    /// State in (S `[R, Dk, Dv]`, z `[R, Dk]`) and the final state out, f32.
    pub initial: Option<(&'b wgpu::Buffer, &'b wgpu::Buffer)>,
    pub totals: Option<(&'b wgpu::Buffer, &'b wgpu::Buffer)>,
    /// Packed sequences (B = 1; checked by the caller): states are then per sequence.
    pub seqs: Option<&'b CuSeqlens>,
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
            rescale: false,
            softmax: None,
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
        totals: cfg.totals,
        geom: cfg
            .geom
            .unwrap_or_else(|| Geom::dense(d.len as u64, d.dk as u64, d.dv as u64)),
        initial: cfg.initial,
        seqs: cfg.seqs,
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
        geom: None,
        initial: None,
        totals: None,
        seqs: None,
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
    driver::run(ctx, &Lightning::new((q, k, v), slopes, opts))
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
    driver::run_into(ctx, &Lightning::new((q, k, v), slopes, opts), out)
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
    driver::record(s, &Lightning::new((q, k, v), slopes, opts), out)
}

struct Lightning<'a, T: Element> {
    q: &'a Tensor<T>,
    k: &'a Tensor<T>,
    v: &'a Tensor<T>,
    slopes: Option<&'a [f32]>,
    opts: &'a LightningOptions,
    /// State in and out: S `[B·H, Dk, Dv]`, z `[B·H, Dk]` f32.
    initial: Option<(&'a wgpu::Buffer, &'a wgpu::Buffer)>,
    totals: Option<(&'a wgpu::Buffer, &'a wgpu::Buffer)>,
    seqs: Option<&'a CuSeqlens>,
}

impl<'a, T: Element> Lightning<'a, T> {
    fn new(
        (q, k, v): (&'a Tensor<T>, &'a Tensor<T>, &'a Tensor<T>),
        slopes: Option<&'a [f32]>,
        opts: &'a LightningOptions,
    ) -> Self {
        Self {
            q,
            k,
            v,
            slopes,
            opts,
            initial: None,
            totals: None,
            seqs: None,
        }
    }
}

/// q, k, v in `layout` with one set of heads (Lightning has no grouped heads) and Lq = Lk.
fn check_lightning(
    q: &[usize],
    k: &[usize],
    v: &[usize],
    layout: crate::types::Layout,
) -> Result<(GqaDims, AttnDims)> {
    let g = check_gqa(OP, q, k, v, layout, true)?;
    if g.kv_heads != g.q_heads {
        return Err(crate::Error::Shape {
            op: OP,
            name: "k",
            expected: format!("q's {} heads (no grouped heads here)", g.q_heads),
            got: k.to_vec(),
        });
    }
    let d = AttnDims {
        rows: g.batch * g.q_heads,
        len: g.q_len,
        dk: g.dk,
        dv: g.dv,
        out_shape: g.out_shape.clone(),
    };
    Ok((g, d))
}

impl<T: Element> RowOp for Lightning<'_, T> {
    type T = T;
    /// Sizes, block, slopes on the device, heads, where the rows live.
    type Dims = (AttnDims, u32, wgpu::Buffer, u32, Geom);
    const NAME: &'static str = OP;

    fn plan(&self, ctx: &Context) -> Result<(Self::Dims, Plan)> {
        let (q, k, v) = (self.q.shape(), self.k.shape(), self.v.shape());
        let (g, d) = check_lightning(q, k, v, self.opts.layout)?;
        super::linear::check_varlen(OP, &g, self.seqs)?;
        let heads = g.q_heads;
        let sl = resolve_slopes(OP, heads, self.slopes)?;
        let block = chunk::resolve_chunk(ctx, OP, self.opts.block)?;
        let geom = Geom::of(&g);
        let mut plan = decayed_plan::<T>(ctx, &d, block);
        plan.row_group = geom.unit;
        plan.partial_out = self.seqs.is_some();
        // The definition-order sums of lightning_fix for non-finite inputs.
        plan.row_bytes
            .push(("definition sums", (d.len * d.dv * 4) as u64));
        Ok(((d, block, upload_f32(ctx, &sl), heads as u32, geom), plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        super::qkv_inputs(self.q, self.k, self.v)
    }

    fn record_rows(&self, s: &mut Schedule<'_>, dims: &Self::Dims, p: &Pass<'_>) -> Result<()> {
        let (d, block, slopes, heads, geom) = dims;
        let cfg = Decayed {
            feature_map: self.opts.feature_map,
            causal: true,
            block: *block,
            slopes: Some(slopes),
            heads: *heads,
            geom: Some(*geom),
            initial: self.initial,
            totals: self.totals,
            seqs: self.seqs,
        };
        record_decayed_pass(s, (self.q, self.k, self.v), d, &cfg, p)?;
        let io = FixIo {
            q: self.q.buffer(),
            k: self.k.buffer(),
            v: self.v.buffer(),
            in_bytes: size_of::<T>() as u64,
            geom: *geom,
            fmap: self.opts.feature_map.shader_id(),
            seqs: self.seqs,
            dims: (d.len as u64, d.dk as u64, d.dv as u64),
            initial: self.initial.map(|i| i.0),
        };
        record_fix(s, &io, p)
    }
}

/// [`lightning_attention`] that starts from `initial` = S `[B, H, Dk, Dv]` f32 (none: zero) and
/// also returns the state after the last token, `S_L = λ^L S_0 + Σ_j λ^(L−1−j) φ(k_j) v_jᵀ`, so
/// a sequence processed in two calls equals one call. Layouts as [`lightning_attention`].
///
/// # Errors
/// As [`lightning_attention`]; [`Error::Shape`](crate::Error::Shape) for a state of the wrong
/// shape, [`Error::WrongContext`](crate::Error::WrongContext) for one from another context.
pub fn lightning_attention_with_state<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    slopes: Option<&[f32]>,
    initial: Option<&Tensor<f32>>,
    opts: &LightningOptions,
) -> Result<(Tensor<T>, Tensor<f32>)> {
    stateful(ctx, (q, k, v), slopes, None, initial, opts)
}

/// [`lightning_attention`] over packed sequences (fla's `cu_seqlens`, B = 1): sequence i holds
/// tokens `[cu[i], cu[i + 1])` and its decay restarts there; nothing crosses a boundary and the
/// outputs past the last offset are left untouched (zero in the new tensor).
///
/// # Errors
/// As [`lightning_attention`] and [`super::linear_attention_varlen`].
pub fn lightning_attention_varlen<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    slopes: Option<&[f32]>,
    cu: &CuSeqlens,
    opts: &LightningOptions,
) -> Result<Tensor<T>> {
    let mut op = Lightning::new((q, k, v), slopes, opts);
    op.seqs = Some(cu);
    driver::run(ctx, &op)
}

/// [`lightning_attention_varlen`] writing into an existing `out` (q's shape with Dv); the tokens
/// past the last offset keep what `out` held.
#[allow(clippy::too_many_arguments)]
pub fn lightning_attention_varlen_into<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    slopes: Option<&[f32]>,
    cu: &CuSeqlens,
    out: &Tensor<T>,
    opts: &LightningOptions,
) -> Result<()> {
    let mut op = Lightning::new((q, k, v), slopes, opts);
    op.seqs = Some(cu);
    driver::run_into(ctx, &op, out)
}

/// [`lightning_attention_varlen`] with a state per sequence: `initial` S `[N, H, Dk, Dv]` f32
/// (none: zero) for the N sequences of `cu`; returns each sequence's state after its last token.
///
/// # Errors
/// As [`lightning_attention_varlen`] and [`lightning_attention_with_state`].
#[allow(clippy::too_many_arguments)]
pub fn lightning_attention_varlen_with_state<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    slopes: Option<&[f32]>,
    cu: &CuSeqlens,
    initial: Option<&Tensor<f32>>,
    opts: &LightningOptions,
) -> Result<(Tensor<T>, Tensor<f32>)> {
    stateful(ctx, (q, k, v), slopes, Some(cu), initial, opts)
}

fn stateful<T: Element>(
    ctx: &Context,
    (q, k, v): (&Tensor<T>, &Tensor<T>, &Tensor<T>),
    slopes: Option<&[f32]>,
    cu: Option<&CuSeqlens>,
    initial: Option<&Tensor<f32>>,
    opts: &LightningOptions,
) -> Result<(Tensor<T>, Tensor<f32>)> {
    let (g, _) = check_lightning(q.shape(), k.shape(), v.shape(), opts.layout)?;
    let n = cu.map_or(g.batch, CuSeqlens::count);
    let (b, h, dk, dv) = (n, g.q_heads, g.dk, g.dv);
    if let Some(s0) = initial {
        if s0.shape() != [b, h, dk, dv] {
            return Err(crate::Error::Shape {
                op: OP,
                name: "initial_state",
                expected: format!("{:?} ([B, H, Dk, Dv])", [b, h, dk, dv]),
                got: s0.shape().to_vec(),
            });
        }
        if s0.context_id() != ctx.id() {
            return Err(crate::Error::WrongContext {
                op: OP,
                name: "initial_state",
            });
        }
    }
    // The engine carries z too; Lightning has no denominator, so z stays internal (zero in).
    let z_in = Tensor::<f32>::empty(ctx, &[b, h, dk])?;
    let out = Tensor::empty(ctx, &g.out_shape)?;
    let fin = Tensor::<f32>::empty(ctx, &[b, h, dk, dv])?;
    let z_out = Tensor::<f32>::empty(ctx, &[b, h, dk])?;
    let mut op = Lightning::new((q, k, v), slopes, opts);
    op.initial = initial.map(|s0| (s0.buffer(), z_in.buffer()));
    op.totals = Some((fin.buffer(), z_out.buffer()));
    op.seqs = cu;
    driver::submit(ctx, |s| driver::record(s, &op, &out))?;
    Ok((out, fin))
}
