//! TransNormer's two attentions (Qin et al. 2022, *The Devil in Linear Transformer*, arXiv
//! 2210.10340):
//!
//! - NormAttention: `O = Norm(φ(Q) (φ(K)ᵀ V))`, linear attention without the denominator, its
//!   output normalised instead (bounded gradients). Causal: the sum runs over `j ≤ i`.
//! - DiagAttention: attention only inside non-overlapping blocks of `w` positions (the paper's
//!   models use 64), softmax or relu + norm, with the causal mask inside the block when causal.
//!
//! Norm acts per (batch, head, position) over Dv. (TransNormer's code normalises the concatenation
//! of all heads; with one head that is the same.)

use super::chunk::{self, Geom as ChunkGeom, Io, Job};
use super::lightning::{decayed_plan, record_decayed_pass, Decayed};
use super::lightning_fix::{record_fix, FixIo};
use super::softmax::{attend_plan, attend_rows, check_batch, record_attend_rows, upload_seqs};
use super::softmax::{Attend, PosBias};
use super::softmax_plan::Geom;
use crate::bind::{scratch, upload_f32, Bind};
use crate::driver::{self, Input, OutSlot, Pass, Plan, RowOp};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
use crate::sizes::workgroup_size;
use crate::types::attention::{check_diag, check_norm, check_shapes, AttnDims};
pub use crate::types::attention::{
    Affine, DiagAttentionOptions, DiagWeights, Norm, NormAttentionOptions,
};
use crate::types::batch::{CuSeqlens, Layout};
use crate::{Context, DType, Element, Error, Result, Tensor};

crate::uniform! {
    /// The `Params` uniform of shaders/transnormer.wgsl.
    pub(crate) struct NormParams {
        n: u32,
        dv: u32,
        eps: f32,
        o_off: u32,
    }
}

/// Storage that reads `T` inputs and writes f32: f16 always goes through packed words here, so
/// the unnormalised sums stay f32 until the norm.
fn f32_out_storage(dtype: DType) -> Storage {
    match dtype {
        DType::F32 => Storage::F32,
        DType::F16 => Storage::F16Packed,
    }
}

/// The norm over `[n, dv]` f32 rows of `src` into `out` (stored as `storage`).
#[allow(clippy::too_many_arguments)]
fn record_norm_rows(
    s: &mut Schedule<'_>,
    src: &wgpu::Buffer,
    (n, dv): (u64, u64),
    norm: Norm,
    eps: f32,
    (gain, bias): (&wgpu::Buffer, &wgpu::Buffer),
    storage: Storage,
    out: &OutSlot<'_>,
) -> Result<()> {
    let ctx = s.context();
    let wg = workgroup_size(ctx);
    let wide = dv > NORM_ROW_DV;
    let entry = if wide { "norm_rows_wide" } else { "norm_rows" };
    let consts = [("NORM", norm.shader_id()), ("WG", wg)];
    let pl = ctx
        .pipelines
        .get(ctx, "transnormer", entry, storage, &consts)?;
    let bx = Bind {
        slot: 1,
        buffer: src,
        offset: 0,
        size: n * dv * 4,
    };
    let (bo, o_off) = out.bind(ctx, 4, n * dv);
    let prm = NormParams {
        n: n as u32,
        dv: dv as u32,
        eps,
        o_off,
    };
    let binds = [bx, Bind::all(2, gain), Bind::all(3, bias), bo];
    let groups = if wide { n } else { n.div_ceil(wg as u64) };
    s.dispatch(&pl, &prm, &binds, groups)
}

/// Widest row `norm_rows` takes in one invocation (it loops Dv three times; lavapipe stops an
/// invocation past 65 535 iterations); wider rows run one workgroup per row (`norm_rows_wide`).
const NORM_ROW_DV: u64 = 8192;

/// A norm's device parameters: gain and bias of length Dv (ones and zeros when not given).
struct NormCfg {
    norm: Norm,
    eps: f32,
    gain: wgpu::Buffer,
    bias: wgpu::Buffer,
}

impl NormCfg {
    fn new(ctx: &Context, norm: Norm, eps: f32, affine: &Affine<'_>, dv: usize) -> Self {
        Self {
            norm,
            eps,
            gain: upload_f32(ctx, &affine.gain.map_or(vec![1.0; dv], <[f32]>::to_vec)),
            bias: upload_f32(ctx, &affine.bias.map_or(vec![0.0; dv], <[f32]>::to_vec)),
        }
    }

    /// Runs `numerator` (which writes f32 rows `[nr, L, Dv]` into the slot it is given), then
    /// the norm into the pass's output.
    fn record<T: Element>(
        &self,
        s: &mut Schedule<'_>,
        d: &AttnDims,
        p: &Pass<'_>,
        keep: Option<Vec<(u64, u64)>>,
        numerator: impl FnOnce(&mut Schedule<'_>, Storage, &OutSlot<'_>) -> Result<()>,
    ) -> Result<()> {
        let (len, dv) = (d.len as u64, d.dv as u64);
        let sums = scratch(s.context(), p.nr * len * dv * 4);
        let slot = OutSlot {
            buffer: &sums,
            elem_bytes: 4,
            first: 0,
        };
        numerator(s, f32_out_storage(T::DTYPE), &slot)?;
        let affine = (&self.gain, &self.bias);
        let (n, norm, eps) = ((p.nr * len, dv), self.norm, self.eps);
        let Some(keep) = keep else {
            return record_norm_rows(s, &sums, n, norm, eps, affine, p.storage, &p.out);
        };
        // Packed sequences: the norm runs into a copy of the pass's output, then only the
        // tokens of a sequence are copied out, so the rest of `out` stays untouched.
        let eb = p.out.elem_bytes;
        let tmp = s.context().device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("longseq norm staging"),
            size: (p.nr * len * dv * eb).div_ceil(4).max(1) * 4,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let slot = OutSlot {
            buffer: &tmp,
            elem_bytes: eb,
            first: 0,
        };
        record_norm_rows(s, &sums, n, norm, eps, affine, p.storage, &slot)?;
        for (start, count) in keep {
            let (a, b, c) = (start * eb, (p.out.first + start) * eb, count * eb);
            if (a | b | c) % 4 != 0 {
                return Err(Error::InvalidArgument {
                    op: NORM_OP,
                    name: "cu_seqlens",
                    reason: "f16 outputs with packed sequences need an even L·Dv and an even \
                             last offset·Dv here (copies move 4-byte words); use f32"
                        .into(),
                });
            }
            s.copy(&tmp, a, p.out.buffer, b, c);
        }
        Ok(())
    }
}

/// Bytes per row of the f32 sums before the norm.
fn sums_bytes(d: &AttnDims) -> u64 {
    (d.len * d.dv) as u64 * 4
}

const NORM_OP: &str = "norm_attention";

/// NormAttention: `q, k: [B, H, L, Dk]` (or `[H, L, Dk]`), `v: [.., L, Dv]` ->
/// `o = Norm(φ(q)(φ(k)ᵀ v))`: [.., L, Dv] in the inputs' dtype; causal sums run over `j ≤ i`.
/// The unnormalised sums are f32 (also for f16 tensors) until the norm.
///
/// Errors: [`Error::Shape`] (q/k/v, gain or bias not of length Dv), [`Error::InvalidArgument`]
/// (ε, parameters given to SimpleRMSNorm), [`Error::TooLarge`].
pub fn norm_attention<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    affine: &Affine<'_>,
    opts: &NormAttentionOptions,
) -> Result<Tensor<T>> {
    driver::run(
        ctx,
        &NormOp {
            q,
            k,
            v,
            affine,
            opts,
            layout: Layout::Bhld,
            cu: None,
        },
    )
}

/// [`norm_attention`] writing into an existing `out: [.., L, Dv]`, one submission.
pub fn norm_attention_into<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    affine: &Affine<'_>,
    out: &Tensor<T>,
    opts: &NormAttentionOptions,
) -> Result<()> {
    driver::run_into(
        ctx,
        &NormOp {
            q,
            k,
            v,
            affine,
            opts,
            layout: Layout::Bhld,
            cu: None,
        },
        out,
    )
}

/// Records NormAttention into a [`Schedule`].
pub fn record_norm_attention<T: Element>(
    s: &mut Schedule<'_>,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    affine: &Affine<'_>,
    out: &Tensor<T>,
    opts: &NormAttentionOptions,
) -> Result<()> {
    driver::record(
        s,
        &NormOp {
            q,
            k,
            v,
            affine,
            opts,
            layout: Layout::Bhld,
            cu: None,
        },
        out,
    )
}

struct NormOp<'a, T: Element> {
    q: &'a Tensor<T>,
    k: &'a Tensor<T>,
    v: &'a Tensor<T>,
    affine: &'a Affine<'a>,
    opts: &'a NormAttentionOptions,
    layout: Layout,
    cu: Option<&'a CuSeqlens>,
}

/// NormAttention over real-world batches: q, k, v in `layout` (`[B, H, L, D]`, or fla's
/// `[B, L, H, D]` read through strides), grouped heads (q `[B, Hq, L, Dk]`, k `[B, Hkv, L, Dk]`,
/// v `[B, Hkv, L, Dv]`, Hkv dividing Hq) and optional packed sequences `cu` (B = 1): each
/// sequence is attended on its own, nothing crosses a boundary, and the outputs of tokens past
/// the last offset are left untouched (zero in the new tensor). Not causal and without packed
/// sequences, k and v `[B, Hkv, Lk, ·]` may hold Lk ≠ Lq tokens (cross-attention; o has q's Lq).
///
/// # Errors
/// As [`norm_attention`] and [`super::linear_attention_varlen`]; f16 with packed sequences also
/// needs L·Dv and last offset·Dv even ([`Error::InvalidArgument`]).
#[allow(clippy::too_many_arguments)]
pub fn norm_attention_batch<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    affine: &Affine<'_>,
    layout: Layout,
    cu: Option<&CuSeqlens>,
    opts: &NormAttentionOptions,
) -> Result<Tensor<T>> {
    let op = NormOp {
        q,
        k,
        v,
        affine,
        opts,
        layout,
        cu,
    };
    driver::run(ctx, &op)
}

/// [`norm_attention_batch`] writing into an existing `out` (q's shape with Dv); tokens past the
/// last offset keep what `out` held.
#[allow(clippy::too_many_arguments)]
pub fn norm_attention_batch_into<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    affine: &Affine<'_>,
    layout: Layout,
    cu: Option<&CuSeqlens>,
    out: &Tensor<T>,
    opts: &NormAttentionOptions,
) -> Result<()> {
    let op = NormOp {
        q,
        k,
        v,
        affine,
        opts,
        layout,
        cu,
    };
    driver::run_into(ctx, &op, out)
}

impl<T: Element> RowOp for NormOp<'_, T> {
    type T = T;
    /// Sizes, block, the norm, where the rows live (none: contiguous `[R, L, D]` rows).
    /// The output's dims (L = Lq), the chunk engine's (L = max(Lq, Lk)).
    type Dims = ((AttnDims, AttnDims), u32, NormCfg, Option<ChunkGeom>);
    const NAME: &'static str = NORM_OP;

    fn plan(&self, ctx: &Context) -> Result<(Self::Dims, Plan)> {
        let o = self.opts;
        let (q, k, v) = (self.q.shape(), self.k.shape(), self.v.shape());
        let lead = |x: &[usize]| x[..x.len().saturating_sub(1)].to_vec();
        // Rank 3 `[H, L, D]` stays on the dense path (Lq = Lk).
        let dense = self.layout == Layout::Bhld
            && self.cu.is_none()
            && (q.len() != 4 || lead(q) == lead(k));
        let (d, jd, geom) = if dense {
            let d = check_shapes(NORM_OP, q, k, v)?;
            (d.clone(), d, None)
        } else {
            // Cross-attention (Lq ≠ Lk) when not causal, as linear attention's.
            let g = super::linear::check_gqa(NORM_OP, q, k, v, self.layout, o.causal)?;
            super::linear::check_varlen(NORM_OP, &g, self.cu)?;
            let d = AttnDims {
                rows: g.batch * g.q_heads,
                len: g.q_len,
                dk: g.dk,
                dv: g.dv,
                out_shape: g.out_shape.clone(),
            };
            let jd = AttnDims {
                len: g.q_len.max(g.kv_len),
                ..d.clone()
            };
            (d, jd, Some(ChunkGeom::of(&g)))
        };
        check_norm(NORM_OP, o.norm, o.eps, self.affine, d.dv)?;
        let block = super::chunk::resolve_chunk(ctx, NORM_OP, None)?;
        let mut plan = decayed_plan::<T>(ctx, &jd, block).bytes("sums", sums_bytes(&d));
        if o.causal {
            // The definition-order sums of lightning_fix for non-finite inputs.
            plan = plan.bytes("definition sums", sums_bytes(&d));
        }
        plan.out_row = (d.len * d.dv) as u64;
        // The norm runs over whole rows of f32 sums: no split along L here.
        plan.split_len = false;
        plan.row_group = geom.map_or(1, |g| g.unit);
        plan.partial_out = self.cu.is_some();
        let norm = NormCfg::new(ctx, o.norm, o.eps, self.affine, d.dv);
        Ok((((d, jd), block, norm, geom), plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        super::qkv_inputs(self.q, self.k, self.v)
    }

    fn record_rows(&self, s: &mut Schedule<'_>, dims: &Self::Dims, p: &Pass<'_>) -> Result<()> {
        let ((d, jd), block, norm, geom) = dims;
        let cfg = Decayed {
            feature_map: self.opts.feature_map,
            causal: self.opts.causal,
            block: *block,
            slopes: None,
            heads: 1,
            geom: *geom,
            initial: None,
            totals: None,
            seqs: self.cu,
        };
        let qkv = (self.q, self.k, self.v);
        // Packed sequences: the output elements of tokens [0, last offset) in the pass's rows.
        let keep = match (self.cu, geom) {
            (Some(cu), Some(g)) => {
                let last = *cu.offsets().last().unwrap_or(&0) as u64;
                let (len, dv) = (d.len as u64, d.dv as u64);
                Some(match g.unit {
                    1 => (0..p.nr).map(|r| (r * len * dv, last * dv)).collect(),
                    _ => vec![(0, last * g.o.token as u64)],
                })
            }
            _ => None,
        };
        norm.record::<T>(s, d, p, keep, |s, storage, slot| {
            let sub = Pass {
                r0: p.r0,
                nr: p.nr,
                storage,
                out: OutSlot {
                    buffer: slot.buffer,
                    elem_bytes: slot.elem_bytes,
                    first: slot.first,
                },
                outs: Vec::new(),
            };
            record_decayed_pass(s, qkv, jd, &cfg, &sub)?;
            if !self.opts.causal {
                return Ok(());
            }
            // NaN/±Inf of the causal sums as the definition (Lightning's fix pass, λ = 1).
            let (len, dk, dv) = (d.len as u64, d.dk as u64, d.dv as u64);
            let io = FixIo {
                q: self.q.buffer(),
                k: self.k.buffer(),
                v: self.v.buffer(),
                in_bytes: size_of::<T>() as u64,
                geom: geom.unwrap_or_else(|| ChunkGeom::dense(len, dk, dv)),
                fmap: self.opts.feature_map.shader_id(),
                seqs: self.cu,
                dims: (len, dk, dv),
                initial: None,
            };
            record_fix(s, &io, &sub)
        })
    }
}

const DIAG_OP: &str = "diag_attention";

/// DiagAttention: `q, k: [B, H, L, Dk]` (or `[H, L, Dk]`), `v: [.., L, Dv]` -> `o: [.., L, Dv]`
/// in the inputs' dtype. Query i attends only to keys of its own block `⌊i/w⌋` (and `j ≤ i` when
/// causal) with softmax weights, or relu weights followed by the norm. Cost O(L·w·D).
/// Softmax blocks of w ≤ 64 run on the chunk engine (a chunk per block: register-tiled scores,
/// the row softmax in workgroup memory, then the weights times V); longer blocks, relu weights and
/// packed sequences on the tiled softmax kernels.
///
/// Errors: [`Error::Shape`], [`Error::InvalidArgument`] (block 0, a non-finite scale, ε,
/// parameters given to SimpleRMSNorm), [`Error::TooLarge`].
pub fn diag_attention<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    affine: &Affine<'_>,
    opts: &DiagAttentionOptions,
) -> Result<Tensor<T>> {
    driver::run(
        ctx,
        &DiagOp {
            q,
            k,
            v,
            affine,
            opts,
        },
    )
}

/// [`diag_attention`] writing into an existing `out: [.., L, Dv]`, one submission.
pub fn diag_attention_into<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    affine: &Affine<'_>,
    out: &Tensor<T>,
    opts: &DiagAttentionOptions,
) -> Result<()> {
    driver::run_into(
        ctx,
        &DiagOp {
            q,
            k,
            v,
            affine,
            opts,
        },
        out,
    )
}

/// Records DiagAttention into a [`Schedule`].
pub fn record_diag_attention<T: Element>(
    s: &mut Schedule<'_>,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    affine: &Affine<'_>,
    out: &Tensor<T>,
    opts: &DiagAttentionOptions,
) -> Result<()> {
    driver::record(
        s,
        &DiagOp {
            q,
            k,
            v,
            affine,
            opts,
        },
        out,
    )
}

struct DiagOp<'a, T: Element> {
    q: &'a Tensor<T>,
    k: &'a Tensor<T>,
    v: &'a Tensor<T>,
    affine: &'a Affine<'a>,
    opts: &'a DiagAttentionOptions,
}

/// Blocks up to this long with softmax weights run on the chunk engine (a chunk per block).
const ENGINE_BLOCK: u32 = 64;

/// DiagAttention on the chunk engine: softmax weights, no packed sequences, a block of at most
/// [`ENGINE_BLOCK`] that the engine's tiles fit; `None` otherwise (the attend kernels).
fn engine_job(ctx: &Context, d: &Geom, cfg: &Attend, packed: bool) -> Option<Job> {
    if cfg.relu || packed || cfg.block > ENGINE_BLOCK || d.lq == 0 {
        return None;
    }
    let job = Job {
        storage: Storage::F32,
        fmap: crate::attention::FeatureMap::Identity.shader_id(),
        causal: cfg.causal,
        denominator: false,
        eps: 0.0,
        chunk: Some(cfg.block),
        len: d.lq as u64,
        dk: d.dk as u64,
        dv: d.dv as u64,
        rescale: false,
        softmax: Some(cfg.scale),
    };
    chunk::runs(ctx, &job).then_some(job)
}

impl<T: Element> RowOp for DiagOp<'_, T> {
    type T = T;
    /// Sizes, the attend pass, the norm after relu weights, the packed sequences' table, the
    /// chunk engine's job (softmax weights in short blocks).
    type Dims = (
        Geom,
        Attend,
        Option<NormCfg>,
        Option<wgpu::Buffer>,
        Option<Job>,
    );
    const NAME: &'static str = DIAG_OP;

    fn plan(&self, ctx: &Context) -> Result<(Self::Dims, Plan)> {
        let (o, affine) = (self.opts, self.affine);
        let shapes = (self.q.shape(), self.k.shape(), self.v.shape());
        let cu = o.cu_seqlens.as_ref();
        // Blocks are positions of one sequence: Lq = Lk (the check's causal rule).
        let (d, out_shape) = check_batch(DIAG_OP, shapes, o.layout, true, cu)?;
        check_diag(DIAG_OP, o)?;
        let relu = o.weights == DiagWeights::Relu;
        if relu && cu.is_some() {
            return Err(Error::InvalidArgument {
                op: DIAG_OP,
                name: "cu_seqlens",
                reason: "packed sequences take softmax weights only (the norm would touch \
                         tokens past the last offset)"
                    .into(),
            });
        }
        if relu {
            check_norm(DIAG_OP, o.norm, o.eps, affine, d.dv)?;
        } else if affine.gain.is_some() || affine.bias.is_some() {
            return Err(Error::InvalidArgument {
                op: DIAG_OP,
                name: "gain",
                reason: "softmax weights take no norm parameters".into(),
            });
        }
        let cfg = Attend {
            causal: o.causal,
            scale: o.scale_for(d.dk),
            block: o.block.min(d.lq as u32),
            relu,
        };
        if let Some(job) = engine_job(ctx, &d, &cfg, cu.is_some()) {
            let es = size_of::<T>() as u64;
            let gm = ChunkGeom::of_attend(&d);
            let mut plan = Plan::new(out_shape, d.rows(), gm.lq * job.dv)
                .bytes("q", job.len * job.dk * es)
                .bytes("v", job.len * job.dv * es);
            plan.row_bytes.extend(chunk::row_bytes(ctx, &job));
            plan.split_len = true;
            plan.row_group = gm.unit;
            return Ok(((d, cfg, None, None, Some(job)), plan));
        }
        let mut plan = attend_plan::<T>(&d, out_shape);
        plan.partial_out = cu.is_some();
        let mut norm = None;
        if relu {
            plan = plan.bytes("sums", sums_bytes(&norm_dims(&d)));
            norm = Some(NormCfg::new(ctx, o.norm, o.eps, affine, d.dv));
        }
        let seqs = upload_seqs(ctx, cu, d.lq);
        Ok(((d, cfg, norm, seqs, None), plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        super::qkv_inputs(self.q, self.k, self.v)
    }

    fn record_rows(&self, s: &mut Schedule<'_>, dims: &Self::Dims, p: &Pass<'_>) -> Result<()> {
        let (d, cfg, norm, seqs, engine) = dims;
        if let Some(job) = engine {
            let io = Io {
                q: self.q.buffer(),
                k: self.k.buffer(),
                v: self.v.buffer(),
                in_bytes: size_of::<T>() as u64,
                totals: None,
                geom: ChunkGeom::of_attend(d),
                initial: None,
                seqs: None,
            };
            let job = Job {
                storage: p.storage,
                ..*job
            };
            return chunk::record_pass(s, DIAG_OP, &job, None, &io, p);
        }
        let (qkv, rows) = ((self.q, self.k, self.v), attend_rows(d, p));
        let pos = PosBias {
            seqs: seqs.as_ref(),
            ..Default::default()
        };
        match norm {
            None => record_attend_rows(s, qkv, d, rows, cfg, &pos, p.storage, &p.out),
            Some(norm) => norm.record::<T>(s, &norm_dims(d), p, None, |s, storage, slot| {
                record_attend_rows(s, qkv, d, rows, cfg, &pos, storage, slot)
            }),
        }
    }
}

/// The norm's view of a driver row: its tokens (all heads' in blhd, where a row is a batch
/// entry); the norm runs per token over Dv, contiguous in both layouts.
fn norm_dims(g: &Geom) -> AttnDims {
    let heads = match g.layout {
        Layout::Bhld => 1,
        Layout::Blhd => g.hq,
    };
    AttnDims {
        rows: 1,
        len: g.lq * heads,
        dk: g.dk,
        dv: g.dv,
        out_shape: Vec::new(),
    }
}
