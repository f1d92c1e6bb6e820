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

use bytemuck::{Pod, Zeroable};

use super::lightning::{decayed_rows_per_pass, record_decayed_rows, Decayed};
use super::softmax::{check_out, record_attend, record_attend_rows, row_bytes, Attend, OutSlot};
use crate::bind::{scratch, upload_f32, Bind};
use crate::cast::record_pack_f16;
use crate::pipeline::Storage;
use crate::schedule::{rows_per_pass, Schedule};
use crate::sizes::{resolve_block, workgroup_size};
use crate::types::attention::{check_diag, check_norm, check_shapes, AttnDims};
pub use crate::types::attention::{
    Affine, DiagAttentionOptions, DiagWeights, Norm, NormAttentionOptions,
};
use crate::{Context, DType, Element, Error, Result, Tensor};

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
    let binds = [bx, Bind::all(2, gain), Bind::all(3, bias), bo];
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
