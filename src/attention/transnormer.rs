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

use std::str::FromStr;

use bytemuck::{Pod, Zeroable};

use super::lightning::{
    decayed_rows_per_pass, record_decayed_rows, resolve_block, upload_f32, Decayed,
};
use super::linear::{check_shapes, workgroup_size, AttnDims};
use super::softmax::{
    check_out, check_scale, record_attend, record_attend_rows, row_bytes, Attend, OutSlot,
};
use super::FeatureMap;
use crate::cast::record_pack_f16;
use crate::pipeline::Storage;
use crate::schedule::{rows_per_pass, scratch, Bind, Schedule};
use crate::{Context, DType, Element, Error, Result, Tensor};

/// The output norm over Dv (`x` one output row, `d = Dv`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Norm {
    /// `x / (‖x‖₂ · d^(−1/2) + ε)`, TransNormer's default.
    #[default]
    SimpleRmsNorm,
    /// `g ⊙ x / (‖x‖₂ · d^(−1/2) + ε) + b` (TransNormer's RMSNorm: ε outside the root).
    RmsNorm,
    /// `g ⊙ (x − mean) / √(var + ε) + b`, biased variance (as torch.nn.LayerNorm).
    LayerNorm,
}

impl Norm {
    pub fn name(self) -> &'static str {
        match self {
            Norm::SimpleRmsNorm => "simple-rmsnorm",
            Norm::RmsNorm => "rmsnorm",
            Norm::LayerNorm => "layernorm",
        }
    }

    /// Applies the norm to one row in place (the CPU reference's definition, f64).
    pub fn apply(self, x: &mut [f64], eps: f64, gain: Option<&[f32]>, bias: Option<&[f32]>) {
        let n = x.len() as f64;
        let g = |d: usize| gain.map_or(1.0, |g| g[d] as f64);
        let b = |d: usize| bias.map_or(0.0, |b| b[d] as f64);
        match self {
            Norm::SimpleRmsNorm | Norm::RmsNorm => {
                let rms = x.iter().map(|v| v * v).sum::<f64>().sqrt() / n.sqrt();
                for (d, v) in x.iter_mut().enumerate() {
                    *v = g(d) * (*v / (rms + eps)) + b(d);
                }
            }
            Norm::LayerNorm => {
                let mean = x.iter().sum::<f64>() / n;
                let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                let inv = 1.0 / (var + eps).sqrt();
                for (d, v) in x.iter_mut().enumerate() {
                    *v = g(d) * (*v - mean) * inv + b(d);
                }
            }
        }
    }

    fn shader_id(self) -> u32 {
        match self {
            Norm::SimpleRmsNorm => 0,
            Norm::RmsNorm => 1,
            Norm::LayerNorm => 2,
        }
    }
}

impl FromStr for Norm {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "simple-rmsnorm" => Ok(Norm::SimpleRmsNorm),
            "rmsnorm" => Ok(Norm::RmsNorm),
            "layernorm" => Ok(Norm::LayerNorm),
            _ => Err(format!(
                "unknown norm `{s}` (expected simple-rmsnorm, rmsnorm or layernorm)"
            )),
        }
    }
}

/// The norm's learned parameters, host values of length Dv: gain `g` (default ones) and bias
/// `b` (default zeros). SimpleRMSNorm takes neither.
#[derive(Clone, Copy, Debug, Default)]
pub struct Affine<'a> {
    pub gain: Option<&'a [f32]>,
    pub bias: Option<&'a [f32]>,
}

/// Options for [`norm_attention`] and [`crate::reference::attention::norm_attention`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormAttentionOptions {
    /// φ for Q and K; the paper's code uses [`FeatureMap::Elu`] (the default here).
    pub feature_map: FeatureMap,
    pub causal: bool,
    pub norm: Norm,
    /// ε of the norm (default 1e-6).
    pub eps: f32,
}

impl Default for NormAttentionOptions {
    fn default() -> Self {
        Self {
            feature_map: FeatureMap::Elu,
            causal: false,
            norm: Norm::SimpleRmsNorm,
            eps: 1e-6,
        }
    }
}

/// How DiagAttention weighs the keys of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DiagWeights {
    /// `softmax_j(scale · q_i·k_j)` over the block.
    #[default]
    Softmax,
    /// `relu(scale · q_i·k_j)`, the weighted sum then normalised by the options' norm.
    Relu,
}

/// Options for [`diag_attention`] and [`crate::reference::attention::diag_attention`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiagAttentionOptions {
    /// Block length w ≥ 1 (default 64); the last block is ragged.
    pub block: u32,
    pub causal: bool,
    /// Logit scale; `None` means `1/√Dk`.
    pub scale: Option<f32>,
    pub weights: DiagWeights,
    /// The norm after relu weights (ignored for softmax).
    pub norm: Norm,
    /// ε of the norm (default 1e-6).
    pub eps: f32,
}

impl Default for DiagAttentionOptions {
    fn default() -> Self {
        Self {
            block: 64,
            causal: false,
            scale: None,
            weights: DiagWeights::Softmax,
            norm: Norm::SimpleRmsNorm,
            eps: 1e-6,
        }
    }
}

impl DiagAttentionOptions {
    pub fn scale_for(&self, dk: usize) -> f32 {
        self.scale
            .unwrap_or_else(|| (1.0 / (dk as f64).sqrt()) as f32)
    }
}

pub(crate) fn check_norm(
    op: &'static str,
    norm: Norm,
    eps: f32,
    affine: &Affine<'_>,
    dv: usize,
) -> Result<()> {
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::InvalidArgument {
            op,
            name: "eps",
            reason: format!("{eps} is not a finite number >= 0"),
        });
    }
    for (name, x) in [("gain", affine.gain), ("bias", affine.bias)] {
        let Some(x) = x else { continue };
        if norm == Norm::SimpleRmsNorm {
            return Err(Error::InvalidArgument {
                op,
                name: if name == "gain" { "gain" } else { "bias" },
                reason: "simple-rmsnorm has no learned parameters".into(),
            });
        }
        if x.len() != dv {
            return Err(Error::Shape {
                op,
                name: if name == "gain" { "gain" } else { "bias" },
                expected: format!("[{dv}] (Dv)"),
                got: vec![x.len()],
            });
        }
    }
    Ok(())
}

pub(crate) fn check_diag(op: &'static str, o: &DiagAttentionOptions) -> Result<()> {
    if o.block == 0 {
        return Err(Error::InvalidArgument {
            op,
            name: "block",
            reason: "the block length must be >= 1".into(),
        });
    }
    check_scale(op, o.scale)
}

fn whole(slot: u32, buffer: &wgpu::Buffer) -> Bind<'_> {
    Bind {
        slot,
        buffer,
        offset: 0,
        size: buffer.size(),
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct NormParams {
    n: u32,
    dv: u32,
    eps: f32,
    o_off: u32,
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
    out: OutSlot<'_>,
) -> Result<()> {
    let ctx = s.context();
    let wg = workgroup_size(ctx);
    let pl = ctx.pipelines.get(
        ctx,
        "transnormer",
        "norm_rows",
        storage,
        &[("NORM", norm.shader_id()), ("WG", wg)],
    )?;
    let bx = Bind {
        slot: 1,
        buffer: src,
        offset: 0,
        size: n * dv * 4,
    };
    let (bo, o_off) = Bind::elems(ctx, 4, out.buffer, out.elem_bytes, out.first, n * dv);
    let prm = NormParams {
        n: n as u32,
        dv: dv as u32,
        eps,
        o_off,
    };
    let binds = [bx, whole(2, gain), whole(3, bias), bo];
    s.dispatch(&pl, &prm, &binds, n.div_ceil(wg as u64))
}

/// Runs `numerator` (which writes f32 rows `[nr, L, Dv]` into the given scratch) then the norm
/// into `out`, pass by pass.
fn record_normalised<T: Element>(
    s: &mut Schedule<'_>,
    d: &AttnDims,
    per: u64,
    (norm, eps, affine): (Norm, f32, &Affine<'_>),
    out: &Tensor<T>,
    mut numerator: impl FnMut(&mut Schedule<'_>, (u64, u64), OutSlot<'_>) -> Result<()>,
) -> Result<()> {
    let ctx = s.context();
    let (len, dv) = (d.len as u64, d.dv as u64);
    let gain = upload_f32(ctx, &affine.gain.map_or(vec![1.0; d.dv], <[f32]>::to_vec));
    let bias = upload_f32(ctx, &affine.bias.map_or(vec![0.0; d.dv], <[f32]>::to_vec));
    let storage = Storage::for_dtype(ctx, T::DTYPE);
    let es = size_of::<T>() as u64;
    let rows_max = per.min(d.rows as u64);
    let sums = scratch(ctx, rows_max * len * dv * 4);
    let packed = (storage == Storage::F16Packed).then(|| scratch(ctx, rows_max * len * dv * 4));
    let mut r0 = 0u64;
    while r0 < d.rows as u64 {
        let nr = per.min(d.rows as u64 - r0);
        let slot = OutSlot {
            buffer: &sums,
            elem_bytes: 4,
            first: 0,
        };
        numerator(s, (r0, nr), slot)?;
        let dst = match &packed {
            Some(buf) => OutSlot {
                buffer: buf,
                elem_bytes: 4,
                first: 0,
            },
            None => OutSlot {
                buffer: out.buffer(),
                elem_bytes: es,
                first: r0 * len * dv,
            },
        };
        record_norm_rows(
            s,
            &sums,
            (nr * len, dv),
            norm,
            eps,
            (&gain, &bias),
            storage,
            dst,
        )?;
        if let Some(buf) = &packed {
            record_pack_f16(s, buf, out.buffer(), r0 * len * dv, nr * len * dv)?;
        }
        r0 += nr;
    }
    Ok(())
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
    let dims = check_shapes(NORM_OP, q.shape(), k.shape(), v.shape())?;
    check_norm(NORM_OP, opts.norm, opts.eps, affine, dims.dv)?;
    let out = Tensor::empty(ctx, &dims.out_shape)?;
    norm_attention_into(ctx, q, k, v, affine, &out, opts)?;
    Ok(out)
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
    crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        record_norm_attention(&mut s, q, k, v, affine, out, opts)?;
        s.submit();
        Ok(())
    })
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
    let ctx = s.context();
    let d = check_shapes(NORM_OP, q.shape(), k.shape(), v.shape())?;
    check_norm(NORM_OP, opts.norm, opts.eps, affine, d.dv)?;
    check_out(NORM_OP, &d, &[("q", q), ("k", k), ("v", v)], out)?;
    let block = resolve_block(ctx, NORM_OP, None)?;
    let es = size_of::<T>() as u64;
    let per = decayed_rows_per_pass(ctx, NORM_OP, &d, block, es, 4)?;
    let zero = upload_f32(ctx, &[0.0]);
    let cfg = Decayed {
        feature_map: opts.feature_map,
        causal: opts.causal,
        block,
        slopes: &zero,
        heads: 1,
        decay: false,
    };
    let storage = f32_out_storage(T::DTYPE);
    let norm = (opts.norm, opts.eps, affine);
    record_normalised(s, &d, per, norm, out, |s, rows, slot| {
        record_decayed_rows(s, (q, k, v), &d, rows, &cfg, storage, slot)
    })
}

const DIAG_OP: &str = "diag_attention";

/// DiagAttention: `q, k: [B, H, L, Dk]` (or `[H, L, Dk]`), `v: [.., L, Dv]` -> `o: [.., L, Dv]`
/// in the inputs' dtype. Query i attends only to keys of its own block `⌊i/w⌋` (and `j ≤ i` when
/// causal) with softmax weights, or relu weights followed by the norm. Cost O(L·w·D).
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
    let dims = check_shapes(DIAG_OP, q.shape(), k.shape(), v.shape())?;
    check_diag(DIAG_OP, opts)?;
    let out = Tensor::empty(ctx, &dims.out_shape)?;
    diag_attention_into(ctx, q, k, v, affine, &out, opts)?;
    Ok(out)
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
    crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        record_diag_attention(&mut s, q, k, v, affine, out, opts)?;
        s.submit();
        Ok(())
    })
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
    let ctx = s.context();
    let d = check_shapes(DIAG_OP, q.shape(), k.shape(), v.shape())?;
    check_diag(DIAG_OP, opts)?;
    check_out(DIAG_OP, &d, &[("q", q), ("k", k), ("v", v)], out)?;
    let relu = opts.weights == DiagWeights::Relu;
    if relu {
        check_norm(DIAG_OP, opts.norm, opts.eps, affine, d.dv)?;
    } else if affine.gain.is_some() || affine.bias.is_some() {
        return Err(Error::InvalidArgument {
            op: DIAG_OP,
            name: "gain",
            reason: "softmax weights take no norm parameters".into(),
        });
    }
    let cfg = Attend {
        causal: opts.causal,
        scale: opts.scale_for(d.dk),
        block: opts.block.min(d.len as u32),
        relu,
    };
    if !relu {
        return record_attend(s, DIAG_OP, (q, k, v), &d, &cfg, out);
    }
    let es = size_of::<T>() as u64;
    let per = rows_per_pass(ctx, DIAG_OP, &row_bytes(&d, es, 4), d.rows)? as u64;
    let storage = f32_out_storage(T::DTYPE);
    let norm = (opts.norm, opts.eps, affine);
    record_normalised(s, &d, per, norm, out, |s, rows, slot| {
        record_attend_rows(s, (q, k, v), &d, rows, &cfg, storage, slot)
    })
}
