//! Exact softmax attention on the GPU: `O = softmax(Q Kᵀ · scale) V`, the baseline every
//! approximation is measured against.
//!
//! Tiled with the online softmax (Milakov & Gimelshein 2018, *Online normalizer calculation for
//! softmax*; Dao et al. 2022, *FlashAttention*): each workgroup holds a tile of queries, walks the
//! keys tile by tile and keeps a running maximum `m` and sum `l` per query, rescaling its partial
//! output by `exp(m_old − m_new)` whenever the maximum grows. No `L × L` buffer exists, so memory is
//! O(L); logits of any size stay finite because every exponent is `≤ 0`.

use crate::bind::{scratch, Bind};
use crate::driver::{self, Input, OutSlot, Pass, Plan, RowOp};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
use crate::sizes::{softmax_tiles, NA};
pub use crate::types::attention::SoftmaxAttentionOptions;
use crate::types::attention::{check_scale, check_shapes, AttnDims};
use crate::{Context, Element, Error, Result, Tensor};

crate::uniform! {
    /// The `Params` uniform of shaders/softmax_attention.wgsl.
    pub(crate) struct Params {
        rows: u32,
        len: u32,
        dk: u32,
        dv: u32,
        n_qt: u32,
        n_cb: u32,
        flags: u32,
        block: u32,
        scale: f32,
        q_off: u32,
        k_off: u32,
        v_off: u32,
        o_off: u32,
        total: u32,
        _pad: [u32; 2],
        heads: u32,
        r0: u32,
        window: u32,
        pflags: u32,
        logn_inv: f32,
        rw: u32,
        _pad2: [u32; 2],
    }
}

/// Position terms inside the attend kernel (see [`crate::attention::positional`]); the default
/// adds none.
#[derive(Clone, Copy, Default)]
pub(crate) struct PosBias<'b> {
    /// H, to find a row's head.
    pub heads: u32,
    /// Sliding window w (keys j in (i − w, i]); 0 = none.
    pub window: u32,
    /// ALiBi slopes, `[H]` f32.
    pub slopes: Option<&'b wgpu::Buffer>,
    /// 1 / ln L_train; 0 = no log-n scale.
    pub logn_inv: f32,
    /// ReRoPE: (window, half-split layout, cos/sin table `[2w + 1, Dk/2, 2]` f32).
    pub rerope: Option<(u32, bool, &'b wgpu::Buffer)>,
}

/// What one pass of the attend kernel computes (shared with DiagAttention).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Attend {
    pub causal: bool,
    pub scale: f32,
    /// Keys only from the query's own block of this many positions; 0 = no blocks.
    pub block: u32,
    /// Weights relu(logit), unnormalised, instead of the softmax.
    pub relu: bool,
}

/// Records the attend kernel over rows `[r0, r0 + nr)` with inputs read as `storage`, position
/// terms from `pos`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_attend_rows<T: Element>(
    s: &mut Schedule<'_>,
    (q, k, v): (&Tensor<T>, &Tensor<T>, &Tensor<T>),
    d: &AttnDims,
    (r0, nr): (u64, u64),
    cfg: &Attend,
    pos: &PosBias<'_>,
    storage: Storage,
    out: &OutSlot<'_>,
) -> Result<()> {
    let ctx = s.context();
    let (wg, bq, bk, dkc) = softmax_tiles(ctx);
    let consts = [
        ("WG", wg),
        ("BQ", bq),
        ("BK", bk),
        ("DKC", dkc),
        ("WMODE", cfg.relu as u32),
    ];
    let pl = ctx
        .pipelines
        .get(ctx, "softmax_attention", "attend", storage, &consts)?;
    let es = size_of::<T>() as u64;
    let (len, dk, dv) = (d.len as u64, d.dk as u64, d.dv as u64);
    let n_qt = len.div_ceil(bq as u64);
    let n_cb = dv.div_ceil(((wg / bq) * NA) as u64);
    let (bq_, q_off) = Bind::elems(ctx, 1, q.buffer(), es, r0 * len * dk, nr * len * dk);
    let (bk_, k_off) = Bind::elems(ctx, 2, k.buffer(), es, r0 * len * dk, nr * len * dk);
    let (bv, v_off) = Bind::elems(ctx, 3, v.buffer(), es, r0 * len * dv, nr * len * dv);
    let (bo, o_off) = out.bind(ctx, 4, nr * len * dv);
    let total = nr * n_qt * n_cb;
    if total > u32::MAX as u64 {
        return Err(Error::TooLarge {
            op: "softmax_attention",
            what: format!("{total} workgroups in one pass"),
            needed: total,
            limit: u32::MAX as u64,
        });
    }
    let prm = Params {
        rows: nr as u32,
        len: len as u32,
        dk: dk as u32,
        dv: dv as u32,
        n_qt: n_qt as u32,
        n_cb: n_cb as u32,
        flags: cfg.causal as u32,
        block: cfg.block,
        scale: cfg.scale,
        q_off,
        k_off,
        v_off,
        o_off,
        total: total as u32,
        _pad: [0; 2],
        heads: pos.heads.max(1),
        r0: r0 as u32,
        window: pos.window,
        pflags: pos.slopes.is_some() as u32
            | (pos.rerope.is_some() as u32) << 1
            | (pos.rerope.is_some_and(|r| r.1) as u32) << 2,
        logn_inv: pos.logn_inv,
        rw: pos.rerope.map_or(0, |r| r.0),
        _pad2: [0; 2],
    };
    // Unused position inputs still need a binding.
    let dummy = scratch(ctx, 16);
    let (sb, rb) = (
        pos.slopes.unwrap_or(&dummy),
        pos.rerope.map_or(&dummy, |r| r.2),
    );
    let bs = Bind {
        slot: 5,
        buffer: sb,
        offset: 0,
        size: sb.size(),
    };
    let br = Bind {
        slot: 6,
        buffer: rb,
        offset: 0,
        size: rb.size(),
    };
    s.dispatch(&pl, &prm, &[bq_, bk_, bv, bo, bs, br], total)
}

const OP: &str = "softmax_attention";

/// Exact softmax attention: `q, k: [B, H, L, Dk]` (or `[H, L, Dk]`), `v: [.., L, Dv]` ->
/// `o: [.., L, Dv]` in the inputs' dtype, `o_i = Σ_j softmax_j(scale · q_i·k_j) v_j` over all `j`
/// (or `j ≤ i` when causal). f16 tensors are stored as f16; logits, weights and sums are f32.
///
/// A NaN in `q_i` or in a key `q_i` sees makes row `o_i` NaN; a NaN in `v_j[d]` makes column `d`
/// NaN for every query that sees `j`. Errors: [`Error::Shape`], [`Error::InvalidArgument`] (a
/// non-finite scale, `out` aliasing an input), [`Error::TooLarge`] when one (batch, head) row does
/// not fit a storage binding.
pub fn softmax_attention<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    opts: &SoftmaxAttentionOptions,
) -> Result<Tensor<T>> {
    driver::run(ctx, &Softmax { q, k, v, opts })
}

/// [`softmax_attention`] writing into an existing `out: [.., L, Dv]`, one submission.
pub fn softmax_attention_into<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    out: &Tensor<T>,
    opts: &SoftmaxAttentionOptions,
) -> Result<()> {
    driver::run_into(ctx, &Softmax { q, k, v, opts }, out)
}

/// Records softmax attention into a [`Schedule`] (for chaining ops in one submission).
pub fn record_softmax_attention<T: Element>(
    s: &mut Schedule<'_>,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    out: &Tensor<T>,
    opts: &SoftmaxAttentionOptions,
) -> Result<()> {
    driver::record(s, &Softmax { q, k, v, opts }, out)
}

struct Softmax<'a, T: Element> {
    q: &'a Tensor<T>,
    k: &'a Tensor<T>,
    v: &'a Tensor<T>,
    opts: &'a SoftmaxAttentionOptions,
}

impl<T: Element> RowOp for Softmax<'_, T> {
    type T = T;
    type Dims = (AttnDims, Attend);
    const NAME: &'static str = OP;

    fn plan(&self, _: &Context) -> Result<(Self::Dims, Plan)> {
        let d = check_shapes(OP, self.q.shape(), self.k.shape(), self.v.shape())?;
        check_scale(OP, self.opts.scale)?;
        let cfg = Attend {
            causal: self.opts.causal,
            scale: self.opts.scale_for(d.dk),
            block: 0,
            relu: false,
        };
        let plan = super::qkv_plan::<T>(&d);
        Ok(((d, cfg), plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        super::qkv_inputs(self.q, self.k, self.v)
    }

    fn record_rows(&self, s: &mut Schedule<'_>, (d, cfg): &Self::Dims, p: &Pass<'_>) -> Result<()> {
        let qkv = (self.q, self.k, self.v);
        let pos = PosBias::default();
        record_attend_rows(s, qkv, d, (p.r0, p.nr), cfg, &pos, p.storage, &p.out)
    }
}
