//! Exact softmax attention on the GPU: `O = softmax(Q Kᵀ · scale) V`, the baseline every
//! approximation is measured against.
//!
//! Tiled with the online softmax (Milakov & Gimelshein 2018, *Online normalizer calculation for
//! softmax*; Dao et al. 2022, *FlashAttention*): each workgroup holds a tile of queries, walks the
//! keys tile by tile and keeps a running maximum `m` and sum `l` per query, rescaling its partial
//! output by `exp(m_old − m_new)` whenever the maximum grows. No `L × L` buffer exists, so memory is
//! O(L); logits of any size stay finite because every exponent is `≤ 0`.
//!
//! Two kernel families (FlashAttention-2 order: a Q block resident, K/V tiles through workgroup
//! memory, online softmax), chosen per adapter ([`AttentionTiles`]): `attend_reg` holds 16×8
//! logit and 16×16 output register tiles per invocation (CPU adapters, where loads are scalar
//! loops and FMAs are wide); `attend` spreads a tile over 256 invocations with 8 logits and 8
//! output columns each (GPUs). `softmax_plan.rs` sizes passes and key segments.

use super::softmax_plan::{
    key_span, plan_attend, query_span, reg_fits, tiles, AttentionTiles, Tiles,
};
use crate::bind::{scratch, Bind};
use crate::driver::{self, Input, OutSlot, Pass, Plan, RowOp};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
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
        q0: u32,
        nq: u32,
        heads: u32,
        r0: u32,
        window: u32,
        pflags: u32,
        logn_inv: f32,
        rw: u32,
        klo: u32,
        khi: u32,
        ml_off: u32,
        neg_inf: f32,
        qt0: u32,
        _pad: u32,
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

/// Records the attend kernel over rows `[r0, r0 + nr)` into `out` (which holds `[nr, L, Dv]`
/// elements from `out.first` on) with inputs read as `storage`, position terms from `pos`. A
/// row too large for one binding runs in blocks of queries; keys run in segments, one dispatch
/// each, carrying the online-softmax state between them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_attend_rows<T: Element>(
    s: &mut Schedule<'_>,
    qkv: (&Tensor<T>, &Tensor<T>, &Tensor<T>),
    d: &AttnDims,
    (r0, nr): (u64, u64),
    cfg: &Attend,
    pos: &PosBias<'_>,
    storage: Storage,
    out: &OutSlot<'_>,
) -> Result<()> {
    let ctx = s.context();
    let mut t = tiles(ctx, d, pos.rerope.is_some());
    if t.family == AttentionTiles::Cpu && !reg_fits(ctx, &t, d) {
        t = tiles(ctx, d, true);
    }
    let es = size_of::<T>() as u64;
    let plan = plan_attend(ctx, OP, &t, d, nr, (es, out.elem_bytes))?;
    let (len, dv) = (d.len as u64, d.dv as u64);
    let mut r = r0;
    while r < r0 + nr {
        let n = plan.rows.min(r0 + nr - r);
        let mut i = 0;
        while i < len {
            let m = plan.queries.min(len - i);
            let slot = OutSlot {
                buffer: out.buffer,
                elem_bytes: out.elem_bytes,
                first: out.first + ((r - r0) * len + i) * dv,
            };
            let pass = AttendPass {
                rows: (r, n),
                queries: (i, m),
                keys: plan.keys,
            };
            record_attend_pass(s, qkv, d, &t, &pass, cfg, pos, storage, &slot)?;
            i += m;
        }
        r += n;
    }
    Ok(())
}

/// One pass of the attend kernel: rows `[r, r + n)`, queries `[i, i + m)` (`n == 1` or
/// `m == L`), one dispatch per segment of `keys` keys.
struct AttendPass {
    rows: (u64, u64),
    queries: (u64, u64),
    keys: u64,
}

/// Records one [`AttendPass`]; `out` holds its `[n, m, Dv]` outputs from `out.first` on.
#[allow(clippy::too_many_arguments)]
fn record_attend_pass<T: Element>(
    s: &mut Schedule<'_>,
    (q, k, v): (&Tensor<T>, &Tensor<T>, &Tensor<T>),
    d: &AttnDims,
    t: &Tiles,
    pass: &AttendPass,
    cfg: &Attend,
    pos: &PosBias<'_>,
    storage: Storage,
    out: &OutSlot<'_>,
) -> Result<()> {
    let ctx = s.context();
    let mut consts = vec![
        ("WG", t.wg),
        ("BQ", t.bq),
        ("BK", t.bk),
        ("DKC", t.dkc),
        ("WMODE", cfg.relu as u32),
    ];
    let entry = match t.family {
        AttentionTiles::Gpu => "attend",
        AttentionTiles::Cpu => {
            // `attend`'s workgroup arrays are not part of `attend_reg`; keep them small.
            consts = vec![("WG", t.wg), ("RDKC", t.dkc), ("WMODE", cfg.relu as u32)];
            "attend_reg"
        }
    };
    let pl = ctx
        .pipelines
        .get(ctx, "softmax_attention", entry, storage, &consts)?;
    let es = size_of::<T>() as u64;
    let (len, dk, dv) = (d.len as u64, d.dk as u64, d.dv as u64);
    let ((r0, nr), (q0, nq)) = (pass.rows, pass.queries);
    let n_cb = t.n_cb as u64;
    let first_q = r0 * len * dk + q0 * dk;
    let (bq_, q_off) = Bind::elems(ctx, 1, q.buffer(), es, first_q, nr * nq * dk);
    let (bo, o_off) = out.bind(ctx, 4, nr * nq * dv);
    let n_qt_all = nq.div_ceil(t.bq as u64);
    if nr * n_qt_all * n_cb > u32::MAX as u64 {
        return Err(Error::TooLarge {
            op: OP,
            what: format!("{} workgroups in one pass", nr * n_qt_all * n_cb),
            needed: nr * n_qt_all * n_cb,
            limit: u32::MAX as u64,
        });
    }
    // Keys the pass's queries see; segments outside it are skipped.
    let (kmin, kmax) = key_span(d, cfg, pos, (q0, nq));
    let n_seg = (kmax - kmin).div_ceil(pass.keys);
    let ml_off = nr * nq * dv;
    let state = (n_seg > 1).then(|| scratch(ctx, (ml_off + nr * nq * 2) * 4));
    // Unused inputs still need a binding; a buffer cannot be bound read-only and read-write in
    // one dispatch, hence two dummies.
    let (dummy, dummy_rw) = (scratch(ctx, 16), scratch(ctx, 16));
    let bs = whole(5, pos.slopes.unwrap_or(&dummy));
    let br = whole(6, pos.rerope.map_or(&dummy, |r| r.2));
    let bst = whole(7, state.as_ref().unwrap_or(&dummy_rw));
    for seg in 0..n_seg {
        let klo = kmin + seg * pass.keys;
        let khi = (klo + pass.keys).min(kmax);
        // Only the query tiles that see a key of this segment.
        let (qa, qb) = query_span(cfg, pos, (q0, nq), (klo, khi));
        let bq = t.bq as u64;
        let (qt0, qt1) = ((qa - q0) / bq, (qb - q0).div_ceil(bq));
        if qt1 <= qt0 {
            continue;
        }
        let n_qt = qt1 - qt0;
        let total = nr * n_qt * n_cb;
        let span = (nr - 1) * len + (khi - klo);
        let (bk_, k_off) = Bind::elems(ctx, 2, k.buffer(), es, (r0 * len + klo) * dk, span * dk);
        let (bv, v_off) = Bind::elems(ctx, 3, v.buffer(), es, (r0 * len + klo) * dv, span * dv);
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
            q0: q0 as u32,
            nq: nq as u32,
            heads: pos.heads.max(1),
            r0: r0 as u32,
            window: pos.window,
            pflags: pos.slopes.is_some() as u32
                | (pos.rerope.is_some() as u32) << 1
                | (pos.rerope.is_some_and(|r| r.1) as u32) << 2,
            logn_inv: pos.logn_inv,
            rw: pos.rerope.map_or(0, |r| r.0),
            klo: klo as u32,
            khi: khi as u32,
            ml_off: ml_off as u32,
            neg_inf: f32::NEG_INFINITY,
            qt0: qt0 as u32,
            _pad: 0,
        };
        // `attend_reg` has no ReRoPE, so its layout has no `rot`.
        let binds = match t.family {
            AttentionTiles::Gpu => vec![bq_, bk_, bv, bo, bs, br, bst],
            AttentionTiles::Cpu => vec![bq_, bk_, bv, bo, bs, bst],
        };
        s.dispatch(&pl, &prm, &binds, total)?;
    }
    Ok(())
}

fn whole(slot: u32, b: &wgpu::Buffer) -> Bind<'_> {
    Bind {
        slot,
        buffer: b,
        offset: 0,
        size: b.size(),
    }
}

const OP: &str = "softmax_attention";

/// Exact softmax attention: `q, k: [B, H, L, Dk]` (or `[H, L, Dk]`), `v: [.., L, Dv]` ->
/// `o: [.., L, Dv]` in the inputs' dtype, `o_i = Σ_j softmax_j(scale · q_i·k_j) v_j` over all `j`
/// (or `j ≤ i` when causal). f16 tensors are stored as f16; logits, weights and sums are f32.
///
/// A NaN in `q_i` or in a key `q_i` sees makes row `o_i` NaN; a NaN in `v_j[d]` makes column `d`
/// NaN for every query that sees `j`. A logit of −∞ weighs exactly 0; the running maximum starts
/// at a real −∞, so logits of any finite size (scale 1e30 included) give the argmax, never 0/0.
/// Any L runs: keys go in segments (one dispatch each, bounded loops on every adapter) merged by
/// the online softmax, and a row larger than a storage binding runs in blocks of queries.
/// Errors: [`Error::Shape`], [`Error::InvalidArgument`] (a non-finite scale, `out` aliasing an
/// input), [`Error::TooLarge`] for a head dim so large that one key tile passes the adapter's
/// loop limit (the message names the largest that runs).
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

/// The driver's plan for an attend op: a row too large for a binding is split along L by
/// [`record_attend_rows`] itself.
pub(crate) fn attend_plan<T: Element>(d: &AttnDims) -> Plan {
    let mut plan = super::qkv_plan::<T>(d);
    plan.split_len = true;
    plan
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
        let plan = attend_plan::<T>(&d);
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
