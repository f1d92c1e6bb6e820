//! Position terms inside exact softmax attention, computed per (i, j) in the tiled kernel so no
//! `L × L` buffer exists:
//!
//! - ALiBi (Press et al. 2022, *Train Short, Test Long*, arXiv 2108.12409): logit bias
//!   `−m_h·|i − j|`, the standard slopes `m_h = 2^(−8h/H)` (h = 1..H) or given ones.
//! - log-n scaling (Chiang & Cholak 2022; Su 2021): logits × `max(1, ln n_i / ln L_train)`, where
//!   `n_i` is the number of keys query `i` sees.
//! - Sliding window: query `i` sees keys `j ∈ (i − w, i]` (causal); the work is O(L·w).
//! - ReRoPE (Su 2023, *Rectified Rotary Position Embeddings*): rotary with the relative position
//!   clipped at `w`, `q_i·R(clamp(i − j, −w, w))·k_j`, applied inside the kernel to raw q and k.
//!
//! The logit is `scale · κ_i · dot(i, j) − m_h·|i − j|`.

use wgpu::util::DeviceExt;

use super::softmax::{check_out, record_attend_pos, Attend, PosBias};
use super::SoftmaxAttentionOptions;
use crate::schedule::Schedule;
pub use crate::types::attention::{
    check_positional, heads_of, slopes_for, Alibi, PositionalOptions, ReRope,
};
use crate::types::attention::{check_scale, check_shapes, rerope_table};
use crate::types::RopeLayout;
use crate::{Context, Element, Error, Result, Tensor};

const OP: &str = "softmax_attention";

/// Exact softmax attention with position terms: `q, k: [B, H, L, Dk]` (or `[H, L, Dk]`),
/// `v: [.., L, Dv]` -> `o: [.., L, Dv]`. With ReRoPE, q and k are the raw (unrotated) projections.
///
/// Errors: those of [`super::softmax_attention`]; [`Error::InvalidArgument`] for a window or
/// ReRoPE window of 0, `L_train < 2`, a non-finite slope, ReRoPE with odd Dk;
/// [`Error::Shape`] for slopes not of length H.
pub fn softmax_attention_positional<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    opts: &SoftmaxAttentionOptions,
    pos: &PositionalOptions<'_>,
) -> Result<Tensor<T>> {
    let dims = check_shapes(OP, q.shape(), k.shape(), v.shape())?;
    let out = Tensor::empty(ctx, &dims.out_shape)?;
    softmax_attention_positional_into(ctx, q, k, v, &out, opts, pos)?;
    Ok(out)
}

/// [`softmax_attention_positional`] writing into an existing `out`, one submission.
pub fn softmax_attention_positional_into<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    out: &Tensor<T>,
    opts: &SoftmaxAttentionOptions,
    pos: &PositionalOptions<'_>,
) -> Result<()> {
    crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        record_softmax_attention_positional(&mut s, q, k, v, out, opts, pos)?;
        s.submit();
        Ok(())
    })
}

/// Records [`softmax_attention_positional`] into a [`Schedule`].
pub fn record_softmax_attention_positional<T: Element>(
    s: &mut Schedule<'_>,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    out: &Tensor<T>,
    opts: &SoftmaxAttentionOptions,
    pos: &PositionalOptions<'_>,
) -> Result<()> {
    let ctx = s.context();
    let d = check_shapes(OP, q.shape(), k.shape(), v.shape())?;
    check_scale(OP, opts.scale)?;
    check_out(OP, &d, &[("q", q), ("k", k), ("v", v)], out)?;
    check_positional(pos, d.dk)?;
    let heads = heads_of(q.shape());
    let init = |label, data: &[f32]| {
        ctx.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(data),
                usage: wgpu::BufferUsages::STORAGE,
            })
    };
    let slopes = match &pos.alibi {
        Some(a) => Some(init("longseq alibi slopes", &slopes_for(a, heads)?)),
        None => None,
    };
    // Relative positions never exceed L − 1, so the table needs no more rows than that.
    let rerope = pos
        .rerope
        .map(|r| (r.window.min(d.len.max(1) - 1).max(1), r));
    let table = match rerope {
        Some((w, r)) => {
            let t = rerope_table(w, d.dk, r.base);
            let bytes = t.len() as u64 * 4;
            let limit = ctx.limits().max_storage_buffer_binding_size;
            if bytes > limit {
                return Err(Error::TooLarge {
                    op: OP,
                    what: "the ReRoPE cos/sin table".into(),
                    needed: bytes,
                    limit,
                });
            }
            Some(init("longseq rerope table", &t))
        }
        None => None,
    };
    let bias = PosBias {
        heads: heads as u32,
        window: pos.window.map_or(0, |w| w.min(u32::MAX as usize) as u32),
        slopes: slopes.as_ref(),
        logn_inv: pos
            .log_n_train
            .map_or(0.0, |n| (1.0 / (n as f64).ln()) as f32),
        rerope: match (rerope, &table) {
            (Some((w, r)), Some(t)) => Some((w as u32, r.layout == RopeLayout::HalfSplit, t)),
            _ => None,
        },
    };
    let cfg = Attend {
        causal: opts.causal || pos.window.is_some(),
        scale: opts.scale_for(d.dk),
        block: 0,
        relu: false,
    };
    record_attend_pos(s, OP, (q, k, v), &d, &cfg, &bias, out)
}
