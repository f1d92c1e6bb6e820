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

use super::linear::check_shapes;
use super::softmax::{check_out, check_scale, record_attend_pos, Attend, PosBias};
use super::SoftmaxAttentionOptions;
use crate::positions::RopeLayout;
use crate::schedule::Schedule;
use crate::{Context, Element, Error, Result, Tensor};

const OP: &str = "softmax_attention";

/// ALiBi slopes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Alibi<'a> {
    /// `2^(−8h/H)` for H a power of two, the reference code's interleaving otherwise
    /// ([`super::alibi_slopes`]).
    Standard,
    /// One slope per head, `[H]`.
    Slopes(&'a [f32]),
}

/// ReRoPE: rotary inside the kernel with relative positions clipped at `window`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReRope {
    pub window: usize,
    /// Rotary base (10 000 in RoFormer).
    pub base: f64,
    pub layout: RopeLayout,
}

/// Position terms for [`softmax_attention_positional`]; the default adds none.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PositionalOptions<'a> {
    pub alibi: Option<Alibi<'a>>,
    /// `L_train` for the log-n logit scale (>= 2).
    pub log_n_train: Option<usize>,
    /// Sliding window `w` (>= 1): keys `j ∈ (i − w, i]`, causal whatever `causal` says.
    pub window: Option<usize>,
    pub rerope: Option<ReRope>,
}

/// The number of heads H of `q: [H, L, D]` or `[B, H, L, D]`.
pub fn heads_of(shape: &[usize]) -> usize {
    shape[shape.len() - 3]
}

/// The slopes for `heads` heads, checked.
pub fn slopes_for(alibi: &Alibi<'_>, heads: usize) -> Result<Vec<f32>> {
    match alibi {
        Alibi::Standard => Ok(super::alibi_slopes(heads)),
        Alibi::Slopes(s) => {
            if s.len() != heads {
                return Err(Error::Shape {
                    op: OP,
                    name: "alibi slopes",
                    expected: format!("[{heads}] (H of q)"),
                    got: vec![s.len()],
                });
            }
            if let Some(x) = s.iter().find(|x| !x.is_finite()) {
                return Err(Error::InvalidArgument {
                    op: OP,
                    name: "alibi slopes",
                    reason: format!("{x} is not finite"),
                });
            }
            Ok(s.to_vec())
        }
    }
}

/// Checks the position options against head dim `dk`.
pub fn check_positional(pos: &PositionalOptions<'_>, dk: usize) -> Result<()> {
    let bad = |name, reason: String| Error::InvalidArgument {
        op: OP,
        name,
        reason,
    };
    if pos.window == Some(0) {
        return Err(bad("window", "must be >= 1".into()));
    }
    if let Some(n) = pos.log_n_train {
        if n < 2 {
            return Err(bad("log_n_train", format!("{n}: ln L_train must be > 0")));
        }
    }
    if let Some(r) = pos.rerope {
        if r.window == 0 {
            return Err(bad("rerope window", "must be >= 1".into()));
        }
        if !(r.base.is_finite() && r.base > 0.0) {
            return Err(bad("rerope base", format!("{} is not > 0", r.base)));
        }
        if !dk.is_multiple_of(2) {
            return Err(bad(
                "rerope",
                format!("Dk = {dk} is odd; rotary needs pairs"),
            ));
        }
    }
    Ok(())
}

/// cos and sin of `Δ·θ_p` for Δ in [−w, w] and pair p: `[2w + 1, D/2, 2]`, f64 -> f32.
fn rerope_table(w: usize, d: usize, base: f64) -> Vec<f32> {
    let mut t = Vec::with_capacity((2 * w + 1) * d);
    for delta in -(w as i64)..=w as i64 {
        for p in 0..d / 2 {
            let phi = delta as f64 * base.powf(-2.0 * p as f64 / d as f64);
            t.push(phi.cos() as f32);
            t.push(phi.sin() as f32);
        }
    }
    t
}

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
