//! Exact softmax attention on the GPU: `O = softmax(Q Kᵀ · scale) V`, the baseline every
//! approximation is measured against.
//!
//! Tiled with the online softmax (Milakov & Gimelshein 2018, *Online normalizer calculation for
//! softmax*; Dao et al. 2022, *FlashAttention*): each workgroup holds a tile of queries, walks the
//! keys tile by tile and keeps a running maximum `m` and sum `l` per query, rescaling its partial
//! output by `exp(m_old − m_new)` whenever the maximum grows. No `L × L` buffer exists, so memory is
//! O(L); logits of any size stay finite because every exponent is `≤ 0`.

use bytemuck::{Pod, Zeroable};

use super::linear::{check_shapes, workgroup_size, AttnDims};
use crate::cast::record_pack_f16;
use crate::pipeline::Storage;
use crate::schedule::{rows_per_pass, scratch, Bind, Schedule};
use crate::{Context, Element, Error, Result, Tensor};

/// Options for [`softmax_attention`] and the CPU reference
/// [`crate::reference::attention::softmax_attention`].
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct SoftmaxAttentionOptions {
    /// Query `i` attends to keys `j ≤ i` only.
    pub causal: bool,
    /// Multiplies `Q Kᵀ`; `None` means `1/√Dk` (Vaswani et al. 2017).
    pub scale: Option<f32>,
}

impl SoftmaxAttentionOptions {
    /// The scale actually applied for head dim `dk`: `scale`, or `1/√dk` rounded to f32. The GPU
    /// and the CPU reference both use this f32 value.
    pub fn scale_for(&self, dk: usize) -> f32 {
        self.scale
            .unwrap_or_else(|| (1.0 / (dk as f64).sqrt()) as f32)
    }
}

pub(crate) fn check_scale(op: &'static str, scale: Option<f32>) -> Result<()> {
    match scale {
        Some(s) if !s.is_finite() => Err(Error::InvalidArgument {
            op,
            name: "scale",
            reason: format!("{s} is not finite"),
        }),
        _ => Ok(()),
    }
}

/// Checks that `out` has the output shape and is none of the inputs.
pub(crate) fn check_out<T: Element>(
    op: &'static str,
    d: &AttnDims,
    inputs: &[(&str, &Tensor<T>)],
    out: &Tensor<T>,
) -> Result<()> {
    if out.shape() != d.out_shape.as_slice() {
        return Err(Error::Shape {
            op,
            name: "out",
            expected: format!("{:?}", d.out_shape),
            got: out.shape().to_vec(),
        });
    }
    for (name, t) in inputs {
        if t.buffer() == out.buffer() {
            return Err(Error::InvalidArgument {
                op,
                name: "out",
                reason: format!("aliases input `{name}`"),
            });
        }
    }
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
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

/// Output columns per invocation (`NA` in the shader).
const NA: u32 = 8;
/// Logits per invocation (`SPT` in the shader).
const SPT: u32 = 8;

/// Tile sizes of the attend kernel.
#[derive(Clone, Copy, Debug)]
struct Tiles {
    wg: u32,
    bq: u32,
    bk: u32,
    dkc: u32,
}

/// Eight invocations share a query: together they hold its logits of a key tile and 64 output
/// columns. Workgroup memory holds the Q chunk, the K chunk and the weight tile; the Dk chunk is
/// the largest that fits.
fn tiles(ctx: &Context) -> Tiles {
    let wg = workgroup_size(ctx);
    let tpq = 8.min(wg);
    let bq = (wg / tpq).max(1);
    let bk = tpq * SPT;
    let mem = ctx.limits().max_compute_workgroup_storage_size;
    let mut dkc = 64u32;
    while dkc > 1 && (bq * dkc + dkc * bk + bq * bk + 3 * bq) * 4 > mem {
        dkc /= 2;
    }
    Tiles {
        wg: bq * tpq,
        bq,
        bk,
        dkc,
    }
}

/// Loop iterations one invocation may spend in one dispatch. llvmpipe stops every loop of an
/// invocation silently once their iterations together reach 65 535 (Mesa's
/// `LP_MAX_TGSI_LOOP_ITERATIONS`, shared by all loops of a shader); the margin covers the few
/// loops outside the key tiles, and the count below already assumes nothing is unrolled.
const LOOP_BUDGET: u64 = 48_000;

/// Upper bound on the loop iterations one invocation spends per key tile (every loop counted as
/// if none were unrolled).
fn iterations_per_tile(t: &Tiles, dk: u64) -> u64 {
    let (wg, bq, bk, dkc) = (t.wg as u64, t.bq as u64, t.bk as u64, t.dkc as u64);
    let (spt, na) = (SPT as u64, NA as u64);
    let chunks = dk.div_ceil(dkc);
    chunks * (1 + (bq * dkc).div_ceil(wg) + (bk * dkc).div_ceil(wg))
        + dk * (spt + 1)
        + 2 * spt
        + 3 * bk
        + na * (bk + 1)
        + 1
}

/// How the attend kernel covers `rows × L` queries and keys: passes of `rows` rows and `queries`
/// queries (`rows == 1` or `queries == L`), each pass one dispatch per segment of `keys` keys.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AttendPlan {
    pub rows: u64,
    pub queries: u64,
    pub keys: u64,
}

/// Plans passes so that every binding fits the storage-binding limit and no invocation loops
/// longer than [`LOOP_BUDGET`]. `out_bytes` is the size of an element of the written slot.
pub(crate) fn plan_attend(
    ctx: &Context,
    op: &'static str,
    d: &AttnDims,
    in_bytes: u64,
    out_bytes: u64,
) -> Result<AttendPlan> {
    let t = tiles(ctx);
    let (len, dk, dv) = (d.len as u64, d.dk as u64, d.dv as u64);
    let per_tile = iterations_per_tile(&t, dk);
    // A segment may start mid-tile, so it can cost one tile more than its length says.
    let seg_tiles = (LOOP_BUDGET / per_tile).saturating_sub(1);
    if seg_tiles == 0 {
        let max_dk = (1..dk)
            .rev()
            .find(|&x| LOOP_BUDGET / iterations_per_tile(&t, x) >= 2);
        return Err(Error::TooLarge {
            op,
            what: format!(
                "head dim Dk = {dk} (one key tile needs {per_tile} loop iterations per \
                 invocation; the largest Dk that runs is {})",
                max_dk.unwrap_or(0)
            ),
            needed: dk,
            limit: max_dk.unwrap_or(0),
        });
    }
    let seg_loop = seg_tiles * t.bk as u64;
    let split = len > seg_loop;
    let limit = ctx.limits().max_storage_buffer_binding_size;
    let room = limit.saturating_sub(ctx.limits().min_storage_buffer_offset_alignment as u64 + 4);
    // Bytes per query (q, o, f32 state) and per key (k, v).
    let mut per_query = vec![dk * in_bytes, dv * out_bytes];
    if split {
        per_query.push(dv * 4 + 8);
    }
    let per_key = [dk * in_bytes, dv * in_bytes];
    let row_fits = per_query.iter().chain(&per_key).all(|&b| len * b <= room);
    if row_fits {
        let mut rb: Vec<(&str, u64)> = per_query
            .iter()
            .map(|&b| ("q, o, state", len * b))
            .collect();
        rb.extend(per_key.iter().map(|&b| ("k, v", len * b)));
        let rows = rows_per_pass(ctx, op, &rb, d.rows)? as u64;
        return Ok(AttendPlan {
            rows,
            queries: len,
            keys: seg_loop.min(len),
        });
    }
    // One row per pass, split along L: queries into blocks, keys into segments that fit.
    let mut state = per_query.clone();
    state.push(dv * 4 + 8);
    let queries = state
        .iter()
        .map(|&b| room / b.max(1))
        .min()
        .unwrap_or(0)
        .min(len);
    let mut keys = per_key.iter().map(|&b| room / b.max(1)).min().unwrap_or(0);
    keys = seg_loop.min(keys);
    if keys > t.bk as u64 {
        keys = keys / t.bk as u64 * t.bk as u64;
    }
    if queries == 0 || keys == 0 {
        return Err(Error::TooLarge {
            op,
            what: "one query's or key's vectors".into(),
            needed: dk.max(dv) * in_bytes.max(out_bytes),
            limit,
        });
    }
    Ok(AttendPlan {
        rows: 1,
        queries,
        keys: keys.min(len),
    })
}

/// Where a pass writes: `elem_bytes`-sized elements of `buffer` from element `first` on.
pub(crate) struct OutSlot<'b> {
    pub buffer: &'b wgpu::Buffer,
    pub elem_bytes: u64,
    pub first: u64,
}

/// Bytes per (batch, head) row that one pass binds, for [`rows_per_pass`].
pub(crate) fn row_bytes(d: &AttnDims, in_bytes: u64, out_bytes: u64) -> Vec<(&'static str, u64)> {
    let (l, dk, dv) = (d.len as u64, d.dk as u64, d.dv as u64);
    vec![
        ("q", l * dk * in_bytes),
        ("v", l * dv * in_bytes),
        ("o", l * dv * out_bytes),
    ]
}

/// Records the attend kernel over rows `[r0, r0 + nr)` into `out`, which holds `[nr, L, Dv]`
/// elements from `out.first` on, with inputs read as `storage`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_attend_rows<T: Element>(
    s: &mut Schedule<'_>,
    qkv: (&Tensor<T>, &Tensor<T>, &Tensor<T>),
    d: &AttnDims,
    (r0, nr): (u64, u64),
    cfg: &Attend,
    storage: Storage,
    out: OutSlot<'_>,
) -> Result<()> {
    let ctx = s.context();
    let es = size_of::<T>() as u64;
    let plan = plan_attend(ctx, "attention", d, es, out.elem_bytes)?;
    let (len, dv) = (d.len as u64, d.dv as u64);
    let pos = PosBias::default();
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
            let pass = Pass {
                rows: (r, n),
                queries: (i, m),
                keys: plan.keys,
            };
            record_attend_pass(s, qkv, d, &pass, cfg, &pos, storage, slot)?;
            i += m;
        }
        r += n;
    }
    Ok(())
}

/// One pass of the attend kernel: rows `[r, r + n)`, queries `[i, i + m)` (`n == 1` or
/// `m == L`), one dispatch per segment of `keys` keys.
struct Pass {
    rows: (u64, u64),
    queries: (u64, u64),
    keys: u64,
}

/// Records one [`Pass`]; `out` holds its `[n, m, Dv]` outputs from `out.first` on.
#[allow(clippy::too_many_arguments)]
fn record_attend_pass<T: Element>(
    s: &mut Schedule<'_>,
    (q, k, v): (&Tensor<T>, &Tensor<T>, &Tensor<T>),
    d: &AttnDims,
    pass: &Pass,
    cfg: &Attend,
    pos: &PosBias<'_>,
    storage: Storage,
    out: OutSlot<'_>,
) -> Result<()> {
    let ctx = s.context();
    let t = tiles(ctx);
    let consts = [
        ("WG", t.wg),
        ("BQ", t.bq),
        ("BK", t.bk),
        ("DKC", t.dkc),
        ("WMODE", cfg.relu as u32),
    ];
    let pl = ctx
        .pipelines
        .get(ctx, "softmax_attention", "attend", storage, &consts)?;
    let es = size_of::<T>() as u64;
    let (len, dk, dv) = (d.len as u64, d.dk as u64, d.dv as u64);
    let ((r0, nr), (q0, nq)) = (pass.rows, pass.queries);
    let n_qt = nq.div_ceil(t.bq as u64);
    let n_cb = dv.div_ceil(((t.wg / t.bq) * NA) as u64);
    let (bq_, q_off) = Bind::elems(
        ctx,
        1,
        q.buffer(),
        es,
        r0 * len * dk + q0 * dk,
        nr * nq * dk,
    );
    let (bo, o_off) = Bind::elems(ctx, 4, out.buffer, out.elem_bytes, out.first, nr * nq * dv);
    if nr * n_qt * n_cb > u32::MAX as u64 {
        return Err(Error::TooLarge {
            op: "softmax_attention",
            what: format!("{} workgroups in one pass", nr * n_qt * n_cb),
            needed: nr * n_qt * n_cb,
            limit: u32::MAX as u64,
        });
    }
    // Keys the pass's queries see; segments outside it are skipped.
    let (kmin, kmax) = key_span(d, cfg, pos, (q0, nq));
    let n_seg = (kmax - kmin).div_ceil(pass.keys);
    let ml_off = nr * nq * dv;
    let state = (n_seg > 1).then(|| scratch(ctx, (ml_off + nr * nq * 2) * 4));
    // Unused inputs still need a binding.
    let dummy = scratch(ctx, 16);
    let bs = whole(5, pos.slopes.unwrap_or(&dummy));
    let br = whole(6, pos.rerope.map_or(&dummy, |r| r.2));
    // A buffer cannot be bound read-only and read-write in one dispatch.
    let dummy_rw = scratch(ctx, 16);
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
        let binds = [bq_, bk_, bv, bo, bs, br, bst];
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

/// Queries of `[q0, q0 + nq)` that may see a key of `[klo, khi)` (a superset; never empty
/// when the keys come from [`key_span`]).
fn query_span(
    cfg: &Attend,
    pos: &PosBias<'_>,
    (q0, nq): (u64, u64),
    (klo, khi): (u64, u64),
) -> (u64, u64) {
    let (mut qa, mut qb) = (q0, q0 + nq);
    if cfg.causal || pos.window > 0 {
        qa = qa.max(klo);
    }
    if pos.window > 0 {
        qb = qb.min(khi + pos.window as u64 - 1);
    }
    if cfg.block > 0 {
        let b = cfg.block as u64;
        qa = qa.max(klo / b * b);
        qb = qb.min(((khi - 1) / b + 1) * b);
    }
    (qa, qb.max(qa))
}

/// Keys `[lo, hi)` that some query of `[q0, q0 + nq)` sees (key ranges are monotone in i).
fn key_span(d: &AttnDims, cfg: &Attend, pos: &PosBias<'_>, (q0, nq): (u64, u64)) -> (u64, u64) {
    let len = d.len as u64;
    let last = q0 + nq - 1;
    let causal = cfg.causal || pos.window > 0;
    let mut hi = if causal { last + 1 } else { len };
    let mut lo = 0;
    if cfg.block > 0 {
        let b = cfg.block as u64;
        lo = q0 / b * b;
        hi = hi.min((last / b + 1) * b).min(len);
    }
    if pos.window > 0 {
        lo = lo.max((q0 + 1).saturating_sub(pos.window as u64));
    }
    (lo, hi)
}

/// Records the attend kernel over all rows into `out` (any storage; packed f16 goes through an f32
/// scratch and the pack kernel).
pub(crate) fn record_attend<T: Element>(
    s: &mut Schedule<'_>,
    op: &'static str,
    qkv: (&Tensor<T>, &Tensor<T>, &Tensor<T>),
    d: &AttnDims,
    cfg: &Attend,
    out: &Tensor<T>,
) -> Result<()> {
    record_attend_pos(s, op, qkv, d, cfg, &PosBias::default(), out)
}

/// [`record_attend`] with position terms.
pub(crate) fn record_attend_pos<T: Element>(
    s: &mut Schedule<'_>,
    op: &'static str,
    qkv: (&Tensor<T>, &Tensor<T>, &Tensor<T>),
    d: &AttnDims,
    cfg: &Attend,
    pos: &PosBias<'_>,
    out: &Tensor<T>,
) -> Result<()> {
    let ctx = s.context();
    let storage = Storage::for_dtype(ctx, T::DTYPE);
    let es = size_of::<T>() as u64;
    let plan = plan_attend(ctx, op, d, es, storage.out_elem_bytes())?;
    let (len, dv) = (d.len as u64, d.dv as u64);
    let packed = (storage == Storage::F16Packed)
        .then(|| scratch(ctx, plan.rows.min(d.rows as u64) * plan.queries * dv * 4));
    let mut r0 = 0u64;
    while r0 < d.rows as u64 {
        let nr = plan.rows.min(d.rows as u64 - r0);
        let mut q0 = 0u64;
        while q0 < len {
            let nq = plan.queries.min(len - q0);
            let first = (r0 * len + q0) * dv;
            let slot = match &packed {
                Some(buf) => OutSlot {
                    buffer: buf,
                    elem_bytes: 4,
                    first: 0,
                },
                None => OutSlot {
                    buffer: out.buffer(),
                    elem_bytes: es,
                    first,
                },
            };
            let pass = Pass {
                rows: (r0, nr),
                queries: (q0, nq),
                keys: plan.keys,
            };
            record_attend_pass(s, qkv, d, &pass, cfg, pos, storage, slot)?;
            if let Some(buf) = &packed {
                record_pack_f16(s, buf, out.buffer(), first, nr * nq * dv)?;
            }
            q0 += nq;
        }
        r0 += nr;
    }
    Ok(())
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
    let dims = check_shapes(OP, q.shape(), k.shape(), v.shape())?;
    check_scale(OP, opts.scale)?;
    let out = Tensor::empty(ctx, &dims.out_shape)?;
    softmax_attention_into(ctx, q, k, v, &out, opts)?;
    Ok(out)
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
    crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        record_softmax_attention(&mut s, q, k, v, out, opts)?;
        s.submit();
        Ok(())
    })
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
    let d = check_shapes(OP, q.shape(), k.shape(), v.shape())?;
    check_scale(OP, opts.scale)?;
    check_out(OP, &d, &[("q", q), ("k", k), ("v", v)], out)?;
    let cfg = Attend {
        causal: opts.causal,
        scale: opts.scale_for(d.dk),
        block: 0,
        relu: false,
    };
    record_attend(s, OP, (q, k, v), &d, &cfg, out)
}
