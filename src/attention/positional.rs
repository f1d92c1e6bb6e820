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

use super::softmax::{attend_plan, attend_rows, check_batch, record_attend_rows, upload_seqs};
use super::softmax::{Attend, PosBias};
use super::softmax_plan::Geom;
use super::SoftmaxAttentionOptions;
use crate::bind::upload_f32;
use crate::driver::{self, Input, Pass, Plan, RowOp};
use crate::schedule::Schedule;
pub use crate::types::attention::{
    check_positional, heads_of, slopes_for, Alibi, PositionalOptions, ReRope,
};
use crate::types::attention::{check_scale, rerope_table};
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
    driver::run(ctx, &Positional { q, k, v, opts, pos })
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
    driver::run_into(ctx, &Positional { q, k, v, opts, pos }, out)
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
    driver::record(s, &Positional { q, k, v, opts, pos }, out)
}

struct Positional<'a, T: Element> {
    q: &'a Tensor<T>,
    k: &'a Tensor<T>,
    v: &'a Tensor<T>,
    opts: &'a SoftmaxAttentionOptions,
    pos: &'a PositionalOptions<'a>,
}

/// The checked sizes and the position terms' device tables.
struct PosDims {
    d: Geom,
    cfg: Attend,
    window: u32,
    logn_inv: f32,
    slopes: Option<wgpu::Buffer>,
    /// ReRoPE (window, half-split, cos/sin table).
    rerope: Option<(u32, bool, wgpu::Buffer)>,
    /// Packed sequences' per-token table.
    seqs: Option<wgpu::Buffer>,
}

impl<T: Element> RowOp for Positional<'_, T> {
    type T = T;
    type Dims = PosDims;
    const NAME: &'static str = OP;

    fn plan(&self, ctx: &Context) -> Result<(PosDims, Plan)> {
        let (o, pos) = (self.opts, self.pos);
        let shapes = (self.q.shape(), self.k.shape(), self.v.shape());
        let causal = o.causal || pos.window.is_some();
        let cu = o.cu_seqlens.as_ref();
        let (d, out_shape) = check_batch(OP, shapes, o.layout, causal, cu)?;
        check_scale(OP, o.scale)?;
        check_positional(pos, d.dk)?;
        let heads = d.hq;
        let slopes = match &pos.alibi {
            Some(a) => Some(upload_f32(ctx, &slopes_for(a, heads)?)),
            None => None,
        };
        // Relative positions never exceed L − 1, so the table needs no more rows than that.
        let rerope = match pos.rerope {
            Some(r) => {
                let w = r.window.min(d.lq.max(d.lk) - 1).max(1);
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
                let half = r.layout == RopeLayout::HalfSplit;
                Some((w as u32, half, upload_f32(ctx, &t)))
            }
            None => None,
        };
        let cfg = Attend {
            causal: self.opts.causal || pos.window.is_some(),
            scale: self.opts.scale_for(d.dk),
            block: 0,
            relu: false,
        };
        let mut plan = attend_plan::<T>(&d, out_shape);
        plan.partial_out = cu.is_some();
        let dims = PosDims {
            seqs: upload_seqs(ctx, cu, d.lq),
            d,
            cfg,
            window: pos.window.map_or(0, |w| w.min(u32::MAX as usize) as u32),
            logn_inv: pos
                .log_n_train
                .map_or(0.0, |n| (1.0 / (n as f64).ln()) as f32),
            slopes,
            rerope,
        };
        Ok((dims, plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        super::qkv_inputs(self.q, self.k, self.v)
    }

    fn record_rows(&self, s: &mut Schedule<'_>, pd: &PosDims, p: &Pass<'_>) -> Result<()> {
        let bias = PosBias {
            seqs: pd.seqs.as_ref(),
            window: pd.window,
            slopes: pd.slopes.as_ref(),
            logn_inv: pd.logn_inv,
            rerope: pd.rerope.as_ref().map(|(w, h, t)| (*w, *h, t)),
        };
        let qkv = (self.q, self.k, self.v);
        record_attend_rows(
            s,
            qkv,
            &pd.d,
            attend_rows(&pd.d, p),
            &pd.cfg,
            &bias,
            p.storage,
            &p.out,
        )
    }
}
