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
    key_span, plan_attend, query_span, reg_fits, tiles, AttentionTiles, Geom, Tiles,
};
use crate::bind::upload_u32;
use crate::bind::{scratch, Bind};
use crate::driver::{self, Input, OutSlot, Pass, Plan, RowOp};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
use crate::types::attention::check_scale;
pub use crate::types::attention::SoftmaxAttentionOptions;
use crate::types::batch::Strides;
use crate::types::batch::{CuSeqlens, GqaDims, Layout};
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
        group: u32,
        q_bs: u32,
        q_hs: u32,
        q_ts: u32,
        k_bs: u32,
        k_hs: u32,
        k_ts: u32,
        v_bs: u32,
        v_hs: u32,
        v_ts: u32,
        o_bs: u32,
        o_hs: u32,
        o_ts: u32,
        seqs: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// Position terms inside the attend kernel (see [`crate::attention::positional`]); the default
/// adds none.
#[derive(Clone, Copy, Default)]
pub(crate) struct PosBias<'b> {
    /// Sliding window w (keys j in (i − w, i]); 0 = none.
    pub window: u32,
    /// ALiBi slopes, `[H]` f32.
    pub slopes: Option<&'b wgpu::Buffer>,
    /// 1 / ln L_train; 0 = no log-n scale.
    pub logn_inv: f32,
    /// ReRoPE: (window, half-split layout, cos/sin table `[2w + 1, Dk/2, 2]` f32).
    pub rerope: Option<(u32, bool, &'b wgpu::Buffer)>,
    /// Packed sequences: the `[Lq, 2]` u32 table of each token's sequence `[start, end)`
    /// ([`seq_bounds`]).
    pub seqs: Option<&'b wgpu::Buffer>,
}

/// The per-token table of packed sequences: token `t` of sequence `i` gets
/// `[offsets[i], offsets[i + 1])`; a token past the last offset gets the empty `[last, last)`.
pub(crate) fn seq_bounds(cu: &crate::types::batch::CuSeqlens, len: usize) -> Vec<u32> {
    let off = cu.offsets();
    let last = *off.last().unwrap_or(&0);
    let mut t = vec![last; 2 * len];
    for w in off.windows(2) {
        for i in w[0]..w[1] {
            t[2 * i as usize] = w[0];
            t[2 * i as usize + 1] = w[1];
        }
    }
    t
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

/// Records the attend kernel over rows `[r0, r0 + nr)` into `out` (whose element `out.first`
/// is row `r0`'s token 0, the rows laid out as `d.o()` says) with inputs read as `storage`, position terms from `pos`. A
/// row too large for one binding runs in blocks of queries; keys run in segments, one dispatch
/// each, carrying the online-softmax state between them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_attend_rows<T: Element>(
    s: &mut Schedule<'_>,
    qkv: (&Tensor<T>, &Tensor<T>, &Tensor<T>),
    d: &Geom,
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
    let len = d.lq as u64;
    let so = d.o();
    let mut r = r0;
    while r < r0 + nr {
        let n = plan.rows.min(r0 + nr - r);
        let mut i = 0;
        while i < len {
            let m = plan.queries.min(len - i);
            let slot = OutSlot {
                buffer: out.buffer,
                elem_bytes: out.elem_bytes,
                first: out.first + d.q_base(&so, r) - d.q_base(&so, r0) + i * so.token as u64,
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

/// Records one [`AttendPass`]; `out.first` is its first row's query `i`.
#[allow(clippy::too_many_arguments)]
fn record_attend_pass<T: Element>(
    s: &mut Schedule<'_>,
    (q, k, v): (&Tensor<T>, &Tensor<T>, &Tensor<T>),
    d: &Geom,
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
    // attend_reg reads v a vec4 at a time when its rows are 4-aligned (checked per segment).
    let reg = t.family == AttentionTiles::Cpu;
    let pl = |vec_v: bool| {
        let mut c = consts.clone();
        if reg {
            c.push(("VEC_V", vec_v as u32));
        }
        ctx.pipelines
            .get(ctx, "softmax_attention", entry, storage, &c)
    };
    let es = size_of::<T>() as u64;
    let (dk, dv) = (d.dk as u64, d.dv as u64);
    let ((r0, nr), (q0, nq)) = (pass.rows, pass.queries);
    let rl = r0 + nr - 1;
    let (sq, sk, sv, so) = (d.q(), d.k(), d.v(), d.o());
    let v_rows4 = [d.dv, sv.batch, sv.head, sv.token]
        .iter()
        .all(|&x| x.is_multiple_of(4));
    let n_cb = t.n_cb as u64;
    // Each binding spans its first row's first token to its last row's last token.
    let q_span = |s: &Strides, n: u64, w: u64| {
        d.q_base(s, rl) - d.q_base(s, r0) + (n - 1) * s.token as u64 + w
    };
    let kv_span = |s: &Strides, n: u64, w: u64| {
        d.kv_base(s, rl) - d.kv_base(s, r0) + (n - 1) * s.token as u64 + w
    };
    let first_q = d.q_base(&sq, r0) + q0 * sq.token as u64;
    let (bq_, q_off) = Bind::elems(ctx, 1, q.buffer(), es, first_q, q_span(&sq, nq, dk));
    let (bo, o_off) = out.bind(ctx, 4, q_span(&so, nq, dv));
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
    // Unused inputs still need a binding: the context's zero quad for the read-only ones; a
    // buffer cannot be bound read-only and read-write in one dispatch, hence a second dummy.
    let (dummy, dummy_rw) = (ctx.zero_quad(), scratch(ctx, 16));
    let bs = whole(5, pos.slopes.unwrap_or(dummy));
    let br = whole(6, pos.rerope.map_or(dummy, |r| r.2));
    let bst = whole(7, state.as_ref().unwrap_or(&dummy_rw));
    let bsq = whole(8, pos.seqs.unwrap_or(dummy));
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
        let nk = khi - klo;
        let k0 = d.kv_base(&sk, r0) + klo * sk.token as u64;
        let v0 = d.kv_base(&sv, r0) + klo * sv.token as u64;
        let (bk_, k_off) = Bind::elems(ctx, 2, k.buffer(), es, k0, kv_span(&sk, nk, dk));
        let (bv, v_off) = Bind::elems(ctx, 3, v.buffer(), es, v0, kv_span(&sv, nk, dv));
        let u = |x: usize| x as u32;
        let prm = Params {
            rows: nr as u32,
            len: d.lk as u32,
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
            heads: d.hq as u32,
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
            group: u(d.hq / d.hkv),
            q_bs: u(sq.batch),
            q_hs: u(sq.head),
            q_ts: u(sq.token),
            k_bs: u(sk.batch),
            k_hs: u(sk.head),
            k_ts: u(sk.token),
            v_bs: u(sv.batch),
            v_hs: u(sv.head),
            v_ts: u(sv.token),
            o_bs: u(so.batch),
            o_hs: u(so.head),
            o_ts: u(so.token),
            seqs: pos.seqs.is_some() as u32,
            _pad1: 0,
            _pad2: 0,
        };
        // `attend_reg` has no ReRoPE, so its layout has no `rot`; slot 9 is v's vec4 view.
        let vec_v = v_rows4 && v_off.is_multiple_of(4);
        let bv4 = if vec_v {
            Bind { slot: 9, ..bv }
        } else {
            whole(9, dummy)
        };
        let binds = match t.family {
            AttentionTiles::Gpu => vec![bq_, bk_, bv, bo, bs, br, bst, bsq],
            AttentionTiles::Cpu => vec![bq_, bk_, bv, bo, bs, bst, bsq, bv4],
        };
        s.dispatch(&*pl(vec_v)?, &prm, &binds, total)?;
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

/// The driver's plan for an attend op: rows are (batch, head) pairs in bhld and batch entries in
/// blhd (where one head's tokens are not contiguous but a batch entry is); a row too large for a
/// binding is split along L by [`record_attend_rows`] itself.
pub(crate) fn attend_plan<T: Element>(g: &Geom, out_shape: Vec<usize>) -> Plan {
    let es = size_of::<T>() as u64;
    let (lq, lk, dk, dv) = (g.lq as u64, g.lk as u64, g.dk as u64, g.dv as u64);
    let (hq, hkv) = (g.hq as u64, g.hkv as u64);
    let mut plan = match g.layout {
        Layout::Bhld => Plan::new(out_shape, g.rows(), lq * dv)
            .bytes("q", lq * dk * es)
            .bytes("v", lk * dv * es),
        Layout::Blhd => Plan::new(out_shape, g.b as u64, lq * hq * dv)
            .bytes("q", lq * hq * dk * es)
            .bytes("v", lk * hkv * dv * es),
    };
    plan.split_len = true;
    plan
}

/// The attention rows `(r0, nr)` of a driver pass (see [`attend_plan`]).
pub(crate) fn attend_rows(g: &Geom, p: &Pass<'_>) -> (u64, u64) {
    match g.layout {
        Layout::Bhld => (p.r0, p.nr),
        Layout::Blhd => (p.r0 * g.hq as u64, p.nr * g.hq as u64),
    }
}

/// Checks q, k, v (rank 4 in `layout`, or rank 3 read as B = 1) with grouped heads and Lq ≠ Lk
/// ([`GqaDims::check`]) and packed sequences (B = 1, Lq = Lk, last offset ≤ L); returns the sizes
/// and the output shape (q's rank).
pub(crate) fn check_batch(
    op: &'static str,
    (q, k, v): (&[usize], &[usize], &[usize]),
    layout: Layout,
    causal: bool,
    cu: Option<&CuSeqlens>,
) -> Result<(Geom, Vec<usize>)> {
    let rank3 = q.len() == 3 && k.len() == 3 && v.len() == 3;
    let lift = |s: &[usize]| match rank3 {
        true => [&[1][..], s].concat(),
        false => s.to_vec(),
    };
    let g = GqaDims::check(op, &lift(q), &lift(k), &lift(v), layout, causal)?;
    let mut out = g.out_shape.clone();
    if rank3 {
        out.remove(0);
    }
    if let Some(cu) = cu {
        if g.batch != 1 || g.q_len != g.kv_len {
            return Err(Error::Shape {
                op,
                name: "q",
                expected: "B = 1 and Lq = Lk with cu_seqlens (packed sequences)".into(),
                got: q.to_vec(),
            });
        }
        let last = *cu.offsets().last().unwrap_or(&0) as usize;
        if last > g.q_len {
            return Err(Error::InvalidArgument {
                op,
                name: "cu_seqlens",
                reason: format!(
                    "last offset {last} is past the packed length L = {}",
                    g.q_len
                ),
            });
        }
    }
    Ok((Geom::from_gqa(&g), out))
}

/// The device table of [`seq_bounds`], when there are packed sequences.
pub(crate) fn upload_seqs(
    ctx: &Context,
    cu: Option<&CuSeqlens>,
    len: usize,
) -> Option<wgpu::Buffer> {
    cu.map(|c| upload_u32(ctx, &seq_bounds(c, len)))
}

struct Softmax<'a, T: Element> {
    q: &'a Tensor<T>,
    k: &'a Tensor<T>,
    v: &'a Tensor<T>,
    opts: &'a SoftmaxAttentionOptions,
}

impl<T: Element> RowOp for Softmax<'_, T> {
    type T = T;
    type Dims = (Geom, Attend, Option<wgpu::Buffer>);
    const NAME: &'static str = OP;

    fn plan(&self, ctx: &Context) -> Result<(Self::Dims, Plan)> {
        let o = self.opts;
        let shapes = (self.q.shape(), self.k.shape(), self.v.shape());
        let (g, out) = check_batch(OP, shapes, o.layout, o.causal, o.cu_seqlens.as_ref())?;
        check_scale(OP, o.scale)?;
        let cfg = Attend {
            causal: o.causal,
            scale: o.scale_for(g.dk),
            block: 0,
            relu: false,
        };
        let mut plan = attend_plan::<T>(&g, out);
        plan.partial_out = o.cu_seqlens.is_some();
        let seqs = upload_seqs(ctx, o.cu_seqlens.as_ref(), g.lq);
        Ok(((g, cfg, seqs), plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        super::qkv_inputs(self.q, self.k, self.v)
    }

    fn record_rows(
        &self,
        s: &mut Schedule<'_>,
        (g, cfg, seqs): &Self::Dims,
        p: &Pass<'_>,
    ) -> Result<()> {
        let qkv = (self.q, self.k, self.v);
        let pos = PosBias {
            seqs: seqs.as_ref(),
            ..Default::default()
        };
        record_attend_rows(s, qkv, g, attend_rows(g, p), cfg, &pos, p.storage, &p.out)
    }
}
