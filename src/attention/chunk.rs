//! The chunk engine (shaders/chunk_attention.wgsl): one chunked, register-tiled algorithm for
//! kernelized linear attention (any feature map, causal or not, with or without the denominator),
//! Lightning attention (per-head decay), NormAttention's numerator, FAVOR+'s core (features
//! precomputed), the causal prefill of recurrent decoding (the state after all of L) and
//! DiagAttention's softmax blocks (a chunk per block, no state: [`Job::softmax`]).
//!
//! Passes: φ once per element (`prep_qk`, `prep_v`, into zero-padded f32 tiles; 4-aligned rows
//! are read as vec4, and V needing no padding is read in place, without `prep_v`), per-chunk states
//! `Σ_j λ^(C−1−j) φ(k_j) v_jᵀ` (`chunk_state`), the carried state over chunks (`scan`), then per
//! chunk the masked score block in workgroup memory and the output (`chunk_apply`). Tile sizes
//! come from the adapter ([`TileFamily`]); the padded head dims Dkp, Dvp are compile-time constants
//! of each pipeline (cached per value). A row whose tensors exceed the storage-binding limit is
//! split along L into segments that carry the state from one to the next.

use crate::bind::Bind;
use crate::driver::Pass;
use crate::pipeline::Storage;
use crate::schedule::{rows_per_pass, Schedule};
pub(crate) use crate::sizes::resolve_chunk;
use crate::sizes::{default_chunk, fits, pad_slots};
use crate::types::{CuSeqlens, GqaDims, Layout, Strides, TileFamily};
use crate::{Context, Result};

/// Sizes of one engine run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Job {
    /// Storage of q, k, v and o (features precomputed in f32 use [`Storage::F32`]).
    pub storage: Storage,
    /// `FMAP` of the shader (2 = identity).
    pub fmap: u32,
    pub causal: bool,
    pub denominator: bool,
    pub eps: f32,
    /// Rows per chunk; `None` = [`default_chunk`].
    pub chunk: Option<u32>,
    pub len: u64,
    /// Feature dim (Dk, or m' for precomputed features).
    pub dk: u64,
    pub dv: u64,
    /// Causal FAVOR+ with per-chunk key stabilisers (RESCALE): no score block, the chunk's own
    /// keys come from `favor_intra`.
    pub rescale: bool,
    /// DiagAttention's softmax weights with this logit scale (SOFTMAX): a chunk is a block, the
    /// map is the identity, and no state crosses chunks (no `chunk_state`, `scan`, carry).
    pub softmax: Option<f32>,
}

/// Decay rates: `[H]` f32 on the device, and H (row r of the whole tensor is head r mod H).
#[derive(Clone, Copy)]
pub(crate) struct Decay<'b> {
    pub slopes: &'b wgpu::Buffer,
    pub heads: u32,
}

/// Padded sizes derived from a [`Job`] on a context.
#[derive(Clone, Copy, Debug)]
struct Geo {
    family: TileFamily,
    chunk: u32,
    cp: u32,
    dkp: u64,
    dvp: u64,
    /// No chunk states (SOFTMAX).
    stateless: bool,
}

impl Geo {
    /// The context's tile family and default chunk, unless the job's Dk or Dv make an
    /// invocation's loops too long: then the first of (family, chunk 64, 32, 16, 8) that keeps
    /// them within [`LOOP_BUDGET`] (the other family's 4×4 tiles cost less per feature).
    fn new(ctx: &Context, job: &Job) -> Self {
        // A sequence shorter than the default chunk is one chunk of its own length.
        let short = |c: u32| c.min(job.len.max(1) as u32);
        let own = ctx.tile_family();
        let first = Self::with(
            own,
            job.chunk.unwrap_or_else(|| short(default_chunk(ctx))),
            job,
        );
        if first.trips(job) <= LOOP_BUDGET {
            return first;
        }
        let other = match own {
            TileFamily::Cpu => TileFamily::Gpu,
            TileFamily::Gpu => TileFamily::Cpu,
        };
        let chunks: Vec<u32> = match job.chunk {
            Some(c) => vec![c],
            None => [64, 32, 16, 8].map(short).to_vec(),
        };
        [own, other]
            .into_iter()
            .flat_map(|f| chunks.iter().map(move |&c| (f, c)))
            .map(|(f, c)| Self::with(f, c, job))
            .find(|g| fits(ctx, g.cp as u64) && g.trips(job) <= LOOP_BUDGET)
            .unwrap_or(first)
    }

    fn with(family: TileFamily, chunk: u32, job: &Job) -> Self {
        let (tr, tc, _, _) = family.tiles();
        Self {
            family,
            chunk,
            cp: pad_slots(family, chunk),
            dkp: job.dk.next_multiple_of(tr as u64),
            dvp: job.dv.next_multiple_of(tc as u64),
            stateless: job.softmax.is_some(),
        }
    }

    /// Loop iterations of one `chunk_apply` invocation (the engine's longest): one per feature
    /// of a TR×SC score tile and of a TR×TC output tile (the tiles' own loops are unrolled in
    /// the source), plus the tile loops.
    fn trips(&self, job: &Job) -> u64 {
        self.trips_with(job, self.pair(job))
    }

    /// Whether `chunk_apply` pairs row tiles r and nrt − 1 − r in one invocation (PAIR):
    /// causal, with a score block, and only while the doubled tile loop stays in the budget.
    fn pair(&self, job: &Job) -> bool {
        job.causal && !job.rescale && self.trips_with(job, true) <= LOOP_BUDGET
    }

    fn trips_with(&self, job: &Job, pair: bool) -> u64 {
        let (tr, tc, wa, _) = self.family.tiles();
        let (tr, tc, cp) = (tr as u64, tc as u64, self.cp as u64);
        let per = |tiles: u64| tiles.div_ceil(wa as u64);
        let scores = match (job.causal || self.stateless) && !job.rescale {
            true => {
                // The score block's live tiles (on or below the diagonal when causal), TR×SC
                // each, and the search for a tile's row (at most cp / tr steps).
                let sc = score_cols(tc as u32) as u64;
                let (nbj, nbi) = (cp / tr, cp / sc);
                let above = match job.causal {
                    true => (tr / sc) * nbj * (nbj - 1) / 2,
                    false => 0,
                };
                per(nbj * nbi - above) * (self.dkp + nbj)
            }
            false => 0,
        };
        // The softmax's two sweeps over a row's keys (the other denominators ride in the
        // output tiles' loops).
        let den = match self.stateless {
            true => per(cp / 4) * 2 * cp,
            false => 0,
        };
        // PAIR: two output tiles per invocation (row tiles r and nrt − 1 − r).
        let (nrt, tv) = (cp / tr, self.dvp / tc);
        let tiles = match pair {
            true => per(nrt.div_ceil(2) * tv) * 2,
            false => per(nrt * tv),
        };
        let apply = tiles * (self.dkp + cp + tr);
        scores + den + apply
    }

    fn chunks(&self, len: u64) -> u64 {
        len.div_ceil(self.chunk as u64)
    }
    /// TR×TC tiles of one row's KV state (one `chunk_state` invocation each, per group).
    fn kv_tiles(&self) -> u64 {
        let (tr, tc, _, _) = self.family.tiles();
        (self.dkp / tr as u64) * (self.dvp / tc as u64)
    }
    /// State entries per chunk (KV then z), f32.
    fn width(&self) -> u64 {
        self.dkp * self.dvp + self.dkp
    }
    /// Scratch bytes per row for a segment of `len` rows of L.
    fn scratch_bytes(&self, len: u64) -> [(&'static str, u64); 4] {
        let slots = self.chunks(len) * self.cp as u64;
        let states = match self.stateless {
            true => 0,
            false => self.chunks(len) * self.width() * 4,
        };
        [
            ("features", slots * self.dkp * 4),
            ("padded v", slots * self.dvp * 4),
            ("chunk state", states),
            ("carried state", self.width() * 4),
        ]
    }
}

/// Rows per chunk the engine uses for `job` on `ctx` (FAVOR+ stabilises its keys per chunk).
pub(crate) fn chunk_len(ctx: &Context, job: &Job) -> u32 {
    Geo::new(ctx, job).chunk
}

/// Whether the engine runs `job` on `ctx`: its chunk's score block fits workgroup memory and no
/// invocation loops too long (else callers take another kernel).
pub(crate) fn runs(ctx: &Context, job: &Job) -> bool {
    let geo = Geo::new(ctx, job);
    fits(ctx, geo.cp as u64) && geo.trips(job) <= LOOP_BUDGET
}

/// Bytes per row of every scratch binding of the engine for a row of `len`, for callers that plan
/// their own passes with [`rows_per_pass`].
pub(crate) fn row_bytes(ctx: &Context, job: &Job) -> Vec<(&'static str, u64)> {
    Geo::new(ctx, job).scratch_bytes(job.len).to_vec()
}

/// Loop iterations one invocation may run: lavapipe stops an invocation silently once its loops
/// together reach 65 535 (the margin covers [`Geo::trips`]' estimate).
const LOOP_BUDGET: u64 = 60_000;

/// Longest segment of L that one pass runs: the scan loops once per chunk, and lavapipe stops a
/// loop silently past ~65 535 iterations.
const MAX_CHUNKS_PER_SEGMENT: u64 = 32_768;

crate::uniform! {
    /// The `Params` uniform of shaders/chunk_attention.wgsl.
    pub(crate) struct Params {
    len: u32,
    n_chunks: u32,
    dk: u32,
    dv: u32,
    dkp: u32,
    dvp: u32,
    total: u32,
    first: u32,
    eps: f32,
    heads: u32,
    row0: u32,
    q_off: u32,
    k_off: u32,
    v_off: u32,
    o_off: u32,
    s_off: u32,
    z_off: u32,
    lq: u32,
    lk: u32,
    hq: u32,
    group: u32,
    g0: u32,
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
    scale: f32,
    _pad1: u32,
    }
}

/// Where the rows of a run live: row `g` is (batch `g / hq`, query head `g % hq`); k and v rows
/// read key/value head `h / group` (GQA); each tensor is read through its own strides, so any
/// [`Layout`] runs without a transpose. q and o hold `lq` tokens, k and v `lk` (`lq ≠ lk` only
/// when not causal).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geom {
    pub hq: u64,
    pub group: u64,
    pub lq: u64,
    pub lk: u64,
    /// Rows a binding takes together: 1 when a row is contiguous (`[B, H, L, D]`), else Hq (a
    /// batch entry of `[B, L, H, D]` is the smallest contiguous block).
    pub unit: u64,
    pub q: Strides,
    pub k: Strides,
    pub v: Strides,
    pub o: Strides,
}

impl Geom {
    /// Contiguous rows `[R, L, D]` (every op before layouts: rows are independent sequences).
    pub fn dense(len: u64, dk: u64, dv: u64) -> Self {
        let st = |d: u64| Strides {
            batch: (len * d) as usize,
            head: 0,
            token: d as usize,
        };
        Self {
            hq: 1,
            group: 1,
            lq: len,
            lk: len,
            unit: 1,
            q: st(dk),
            k: st(dk),
            v: st(dv),
            o: st(dv),
        }
    }

    /// The rows of a checked grouped-heads call in its layout.
    pub fn of(g: &GqaDims) -> Self {
        let heads = (g.q_heads, g.kv_heads);
        Self::grouped(g.layout, heads, (g.q_len, g.kv_len), (g.dk, g.dv))
    }

    /// The same for the sizes of an attend call (softmax attention, DiagAttention).
    pub fn of_attend(g: &super::softmax_plan::Geom) -> Self {
        Self::grouped(g.layout, (g.hq, g.hkv), (g.lq, g.lk), (g.dk, g.dv))
    }

    fn grouped(
        l: Layout,
        (hq, hkv): (usize, usize),
        (lq, lk): (usize, usize),
        (dk, dv): (usize, usize),
    ) -> Self {
        Self {
            hq: hq as u64,
            group: (hq / hkv) as u64,
            lq: lq as u64,
            lk: lk as u64,
            unit: match l {
                Layout::Bhld => 1,
                Layout::Blhd => hq as u64,
            },
            q: l.strides(hq, lq, dk),
            k: l.strides(hkv, lk, dk),
            v: l.strides(hkv, lk, dv),
            o: l.strides(hq, lq, dv),
        }
    }

    /// Flat element index of token `t` of row `g` in a tensor of strides `st` (`kv`: a k/v
    /// tensor, whose head is the query head / group).
    pub(crate) fn flat(&self, st: &Strides, g: u64, t: u64, kv: bool) -> u64 {
        let h = g % self.hq;
        let h = if kv { h / self.group } else { h };
        (g / self.hq) * st.batch as u64 + h * st.head as u64 + t * st.token as u64
    }

    /// The first element and the element count of rows `[r0, r0 + nr)`, tokens `[t0, t0 + n)`
    /// (`n ≥ 1`) of a tensor with feature dim `d`.
    pub(crate) fn span(
        &self,
        st: &Strides,
        (r0, nr): (u64, u64),
        (t0, n): (u64, u64),
        d: u64,
        kv: bool,
    ) -> (u64, u64) {
        let first = self.flat(st, r0, t0, kv);
        (
            first,
            self.flat(st, r0 + nr - 1, t0 + n - 1, kv) + d - first,
        )
    }
}

/// Bindings of one pass (binding, element offset inside it): q, k, v and o, and for prefill the
/// state after all of L = (S `[R, Dk, Dv]`, z `[R, Dk]`) f32. Slots are assigned here.
pub(crate) struct PassBinds<'b> {
    pub q: (Bind<'b>, u32),
    pub k: (Bind<'b>, u32),
    pub v: (Bind<'b>, u32),
    pub o: (Bind<'b>, u32),
    pub totals: Option<((Bind<'b>, u32), (Bind<'b>, u32))>,
    /// The state entering the first segment: S `[R, Dk, Dv]`, z `[R, Dk]` f32 (none: zero).
    pub initial: Option<((Bind<'b>, u32), (Bind<'b>, u32))>,
}

/// Whether every q, k, v row this pass reads starts on a 4-element boundary of its binding and
/// spans whole quads (offsets, strides, Dk and Dv multiples of 4): the prep passes then read them
/// as vec4 (one load per four elements instead of four).
fn rows_aligned(job: &Job, gm: &Geom, b: &PassBinds<'_>) -> bool {
    let q4 = |x: u64| x.is_multiple_of(4);
    let st = |s: &Strides| [s.batch, s.head, s.token].iter().all(|&x| q4(x as u64));
    q4(job.dk)
        && q4(job.dv)
        && [b.q.1, b.k.1, b.v.1].iter().all(|&o| q4(o as u64))
        && st(&gm.q)
        && st(&gm.k)
        && st(&gm.v)
}

/// Columns per tile of the causal score block (SC in shaders/chunk_attention.wgsl): half a TC
/// tile where that stays a whole number of vec4 (lavapipe, W2: the lower triangle's 20 half tiles
/// fill both SIMD batches of the 16-invocation workgroup where 10 full ones did not).
fn score_cols(tc: u32) -> u32 {
    if tc >= 8 {
        tc / 2
    } else {
        tc
    }
}

fn at(slot: u32, b: Bind<'_>) -> Bind<'_> {
    Bind { slot, ..b }
}

fn whole(slot: u32, buffer: &wgpu::Buffer) -> Bind<'_> {
    Bind {
        slot,
        buffer,
        offset: 0,
        size: buffer.size(),
    }
}

/// One segment of one pass: `nr` rows, `len` rows of L starting a sequence (`first`) or not, of
/// which q holds `lq` and k/v `lk`; `row0` = index of the first row in the whole tensor (for its
/// head's decay and its place in the layout).
#[derive(Clone, Copy)]
pub(crate) struct Segment {
    pub nr: u64,
    pub len: u64,
    pub lq: u64,
    pub lk: u64,
    pub first: bool,
    pub row0: u64,
}

/// What one call of [`record_segment`] does: the chunk states and their scan into `carry`, the
/// output, or both. A non-causal run split along L sums every segment before applying any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sweep {
    Sum,
    Apply,
    Both,
}

/// Records the engine over one segment of `nr` rows. `carry` holds `nr · width` f32 and keeps the
/// state between segments of the same rows. `logs` (causal FAVOR+): the key features' log-scale
/// per chunk and feature `[nr, nc, Dk]` f32; the scan rescales the carried state between chunks,
/// the state entering chunk c stays at chunk c−1's scale and the caller adds the intra-chunk term.
#[allow(clippy::too_many_arguments)]
fn record_segment(
    s: &mut Schedule<'_>,
    job: &Job,
    (geo, gm): (&Geo, &Geom),
    decay: Option<Decay<'_>>,
    seg: Segment,
    b: &PassBinds<'_>,
    carry: &wgpu::Buffer,
    sweep: Sweep,
    logs: Option<&wgpu::Buffer>,
) -> Result<()> {
    let ctx = s.context();
    let nc = geo.chunks(seg.len);
    let slots = nc * geo.cp as u64;
    let feat = seg.nr * slots * geo.dkp * 4;
    let pool = &ctx.chunk_scratch;
    // SOFTMAX writes no weighted keys and no chunk states: stand-ins for their bindings.
    let lean = |n: u64| if geo.stateless { 16 } else { n };
    let (qt, kt, kw) = (
        pool.take(ctx, feat),
        pool.take(ctx, feat),
        pool.take(ctx, lean(feat)),
    );
    let vp = pool.take(ctx, seg.nr * slots * geo.dvp * 4);
    let state = pool.take(ctx, lean(seg.nr * nc * geo.width() * 4));
    let r = record_passes(
        s,
        job,
        (geo, gm),
        decay,
        seg,
        b,
        carry,
        sweep,
        logs,
        [&qt, &kt, &kw, &vp, &state],
    );
    pool.give([qt, kt, kw, vp, state]);
    r
}

#[allow(clippy::too_many_arguments)]
fn record_passes(
    s: &mut Schedule<'_>,
    job: &Job,
    (geo, gm): (&Geo, &Geom),
    decay: Option<Decay<'_>>,
    seg: Segment,
    b: &PassBinds<'_>,
    carry: &wgpu::Buffer,
    sweep: Sweep,
    logs: Option<&wgpu::Buffer>,
    [qt, kt, kw, vp, state]: [&wgpu::Buffer; 5],
) -> Result<()> {
    let ctx = s.context();
    if geo.trips(job) > LOOP_BUDGET {
        return Err(crate::Error::InvalidArgument {
            op: "chunk_attention",
            name: "dk",
            reason: format!(
                "Dk = {} with Dv = {} needs ~{} loop iterations per invocation (limit {}); \
                 use fewer features or a smaller Dv",
                job.dk,
                job.dv,
                geo.trips(job),
                LOOP_BUDGET
            ),
        });
    }
    let (tr, tc, wg_apply, wg) = geo.family.tiles();
    let nc = geo.chunks(seg.len);
    let slots = nc * geo.cp as u64;
    // Without decay the slopes are never read: the context's zero quad fills their slot.
    let (slopes, heads) = match decay {
        Some(d) => (d.slopes, d.heads),
        None => (ctx.zero_quad(), 1),
    };
    let vec_in = rows_aligned(job, gm, b);
    let scan_in = scan_in_state(geo, job, seg);
    let group = match scan_in {
        true => 1,
        false => state_group(geo, job, seg.nr, nc, decay.is_some()),
    };
    // States chunk_state writes per row: SCAN_IN writes the carry (and, causal, every chunk's
    // entering state) from one invocation per tile.
    let ng = match scan_in {
        true => 1,
        false => nc.div_ceil(group as u64),
    };
    // V read in place by the contractions (no padding to make): prep_v is skipped.
    let v_direct = vec_in && geo.dvp == job.dv && geo.cp == geo.chunk;
    let consts = |w: u32| {
        [
            ("FMAP", job.fmap),
            ("VEC_IN", vec_in as u32),
            ("V_DIRECT", v_direct as u32),
            ("WG", w),
            ("CHUNK", geo.chunk),
            ("CP", geo.cp),
            ("CAUSAL", job.causal as u32),
            ("DECAY", decay.is_some() as u32),
            ("DEN", job.denominator as u32),
            ("RESCALE", logs.is_some() as u32),
            ("SOFTMAX", geo.stateless as u32),
            ("PAIR", geo.pair(job) as u32),
            ("GROUP", group),
            ("SCAN_IN", scan_in as u32),
            ("TR", tr),
            ("TC", tc),
            ("SC", score_cols(tc)),
            ("DKP", geo.dkp as u32),
            ("DVP", geo.dvp as u32),
        ]
    };
    let pl = |entry, w| {
        let mut c = consts(w);
        if matches!(entry, "scan" | "totals" | "load_state") {
            // They read no input: one pipeline whatever the inputs' alignment.
            for (name, v) in c.iter_mut() {
                if matches!(*name, "VEC_IN" | "V_DIRECT") {
                    *v = 0;
                }
            }
        }
        ctx.pipelines
            .get(ctx, "chunk_attention", entry, job.storage, &c)
    };
    let bsl = whole(4, slopes);
    let w4 = geo.width() / 4;
    let mut prm = Params {
        len: seg.len as u32,
        n_chunks: nc as u32,
        dk: job.dk as u32,
        dv: job.dv as u32,
        dkp: geo.dkp as u32,
        dvp: geo.dvp as u32,
        total: 0,
        first: seg.first as u32,
        eps: job.eps,
        heads,
        row0: (seg.row0 % heads as u64) as u32,
        q_off: b.q.1,
        k_off: b.k.1,
        v_off: b.v.1,
        o_off: b.o.1,
        s_off: b.totals.map_or(0, |t| t.0 .1),
        z_off: b.totals.map_or(0, |t| t.1 .1),
        lq: seg.lq as u32,
        lk: seg.lk as u32,
        hq: gm.hq as u32,
        group: gm.group as u32,
        g0: seg.row0 as u32,
        q_bs: gm.q.batch as u32,
        q_hs: gm.q.head as u32,
        q_ts: gm.q.token as u32,
        k_bs: gm.k.batch as u32,
        k_hs: gm.k.head as u32,
        k_ts: gm.k.token as u32,
        v_bs: gm.v.batch as u32,
        v_hs: gm.v.head as u32,
        v_ts: gm.v.token as u32,
        o_bs: gm.o.batch as u32,
        o_hs: gm.o.head as u32,
        o_ts: gm.o.token as u32,
        scale: job.softmax.unwrap_or(0.0),
        _pad1: 0,
    };
    let groups = |n: u64, w: u32| n.div_ceil(w as u64);
    if let Some((ls, lz)) = b.initial {
        let n = seg.nr * geo.width();
        let lp = Params {
            total: n as u32,
            s_off: ls.1,
            z_off: lz.1,
            ..prm
        };
        let binds = [whole(10, carry), at(12, ls.0), at(13, lz.0)];
        s.dispatch(&*pl("load_state", wg)?, &lp, &binds, groups(n, wg))?;
        s.mark("load_state");
    }
    let n = seg.nr * slots / 4 * geo.dkp / 4;
    prm.total = n as u32;
    // Without VEC_IN the vec4 views are never read; the context's zero quad fills their slots.
    let view = |slot, bind| match vec_in {
        true => at(slot, bind),
        false => whole(slot, ctx.zero_quad()),
    };
    let binds = [
        at(1, b.q.0),
        at(2, b.k.0),
        bsl,
        whole(5, qt),
        whole(6, kt),
        whole(7, kw),
        view(15, b.q.0),
        view(16, b.k.0),
    ];
    s.dispatch(&*pl("prep_qk", wg)?, &prm, &binds, groups(n, wg))?;
    s.mark("prep_qk");
    let n = seg.nr * slots * geo.dvp / 4;
    prm.total = n as u32;
    if !v_direct {
        let binds = [at(3, b.v.0), whole(8, vp), view(17, b.v.0)];
        s.dispatch(&*pl("prep_v", wg)?, &prm, &binds, groups(n, wg))?;
        s.mark("prep_v");
    }
    if sweep != Sweep::Apply && !geo.stateless {
        let n = seg.nr * ng * geo.kv_tiles();
        prm.total = n as u32;
        let binds = [
            bsl,
            whole(7, kw),
            whole(8, vp),
            whole(9, state),
            whole(10, carry),
            view(17, b.v.0),
        ];
        s.dispatch(&*pl("chunk_state", wg)?, &prm, &binds, groups(n, wg))?;
        s.mark("chunk_state");
    }
    if sweep != Sweep::Apply && !geo.stateless && !scan_in {
        let n = seg.nr * w4;
        // The scan sums one state per group (GROUP > 1 only without CAUSAL, DECAY and RESCALE,
        // where it reads no chunk lengths).
        let sp = Params {
            total: n as u32,
            n_chunks: ng as u32,
            ..prm
        };
        // Without RESCALE, slot 14 is never read; any buffer fills it.
        let binds = [
            bsl,
            whole(9, state),
            whole(10, carry),
            whole(14, logs.unwrap_or(slopes)),
        ];
        s.dispatch(&*pl("scan", wg)?, &sp, &binds, groups(n, wg))?;
        s.mark("scan");
    }
    if sweep == Sweep::Sum {
        return Ok(());
    }
    if let Some((ts, tz)) = b.totals {
        let n = seg.nr * (job.dk * job.dv + job.dk);
        prm.total = n as u32;
        let binds = [whole(10, carry), at(12, ts.0), at(13, tz.0)];
        s.dispatch(&*pl("totals", wg)?, &prm, &binds, groups(n, wg))?;
        s.mark("totals");
    }
    prm.total = (seg.nr * nc) as u32;
    let st = if job.causal {
        whole(9, state)
    } else {
        whole(9, carry)
    };
    let binds = [
        bsl,
        whole(5, qt),
        whole(6, kt),
        whole(8, vp),
        st,
        at(11, b.o.0),
        view(17, b.v.0),
    ];
    s.dispatch(&*pl("chunk_apply", wg_apply)?, &prm, &binds, seg.nr * nc)?;
    s.mark("chunk_apply");
    Ok(())
}

/// Whether `chunk_state` runs each (row, tile) through every chunk of the segment in order and
/// does the scan's work (SCAN_IN): causal runs on CPU adapters, whose few cores the rows × tiles
/// invocations still fill, while the segment stays within 8192 rows of L (an invocation's loop).
/// W2 on lavapipe: the scan pass (~11 ms, a read and a write of every chunk state) goes, paired
/// median 0.91 of W2's time; W1 (non-causal, groups of 16 chunks and a scan of 4) lost 3% with it.
fn scan_in_state(geo: &Geo, job: &Job, seg: Segment) -> bool {
    let tiles = seg.nr * geo.kv_tiles();
    geo.family == TileFamily::Cpu
        && job.causal
        && !job.rescale
        && !geo.stateless
        && seg.len <= 8192
        && tiles >= 256
}

/// Chunks one `chunk_state` invocation sums: 1 where every chunk's own state is needed (causal,
/// decay, RESCALE), else as many as keep its rows of L within 1024 and the pass at 1024
/// invocations or more (a power of two, so few pipelines). Non-causal W1 on lavapipe: the scan
/// went from 11 ms to under 1 and chunk_state wrote 16× fewer states.
fn state_group(geo: &Geo, job: &Job, nr: u64, nc: u64, decay: bool) -> u32 {
    if job.causal || job.rescale || decay || geo.stateless {
        return 1;
    }
    let tiles = nr * geo.kv_tiles();
    let mut g = (1024 / geo.chunk.max(1) as u64).max(1);
    g = 1 << g.ilog2();
    while g > 1 && (g / 2 >= nc || tiles * nc.div_ceil(g) < 1024) {
        g /= 2;
    }
    g as u32
}

/// Records the engine over rows `[r0, r0 + nr)` (all of L) that the caller has bound, e.g. one
/// pass of a caller's own row loop (FAVOR+ binds its features). The caller sized `nr` with
/// [`row_bytes`] in its plan; L must fit one segment ([`MAX_CHUNKS_PER_SEGMENT`] chunks).
/// `logs`: see [`record_segment`] (chunks of [`chunk_len`] rows).
pub(crate) fn record_rows(
    s: &mut Schedule<'_>,
    job: &Job,
    decay: Option<Decay<'_>>,
    (r0, nr): (u64, u64),
    b: &PassBinds<'_>,
    logs: Option<&wgpu::Buffer>,
) -> Result<()> {
    let ctx = s.context();
    let geo = Geo::new(ctx, job);
    if geo.chunks(job.len) > MAX_CHUNKS_PER_SEGMENT {
        return Err(crate::Error::TooLarge {
            op: "chunk_attention",
            what: format!("L = {} in one pass", job.len),
            needed: job.len,
            limit: MAX_CHUNKS_PER_SEGMENT * geo.chunk as u64,
        });
    }
    let carry = ctx.chunk_scratch.take(ctx, nr * geo.width() * 4);
    let seg = Segment {
        nr,
        len: job.len,
        lq: job.len,
        lk: job.len,
        first: true,
        row0: r0,
    };
    let gm = Geom::dense(job.len, job.dk, job.dv);
    let r = record_segment(
        s,
        job,
        (&geo, &gm),
        decay,
        seg,
        b,
        &carry,
        Sweep::Both,
        logs,
    );
    ctx.chunk_scratch.give([carry]);
    r
}

/// Whole input tensors of one engine run (element buffers of the job's storage).
pub(crate) struct Io<'b> {
    pub q: &'b wgpu::Buffer,
    pub k: &'b wgpu::Buffer,
    pub v: &'b wgpu::Buffer,
    /// Bytes per stored input element (4 for f32, 2 for f16).
    pub in_bytes: u64,
    /// Totals for prefill: S `[rows, Dk, Dv]`, z `[rows, Dk]` f32.
    pub totals: Option<(&'b wgpu::Buffer, &'b wgpu::Buffer)>,
    /// Where the rows live (layout, heads, lengths).
    pub geom: Geom,
    /// The state entering token 0 (causal): S `[rows, Dk, Dv]`, z `[rows, Dk]` f32; none = zero.
    /// With `seqs`, both are per sequence: `[N, Hq, ..]`.
    pub initial: Option<(&'b wgpu::Buffer, &'b wgpu::Buffer)>,
    /// Packed sequences (B = 1, checked by the caller): each runs from its own state.
    pub seqs: Option<&'b CuSeqlens>,
}

/// Bytes per row of the bindings of a run over `len` rows of L (inputs, output, scratch).
fn seg_bytes(geo: &Geo, job: &Job, es: u64, ob: u64, len: u64) -> Vec<(&'static str, u64)> {
    let mut rb = vec![
        ("q", len * job.dk * es),
        ("v", len * job.dv * es),
        ("o", len * job.dv * ob),
        ("S", job.dk * job.dv * 4),
    ];
    rb.extend(geo.scratch_bytes(len));
    rb
}

/// Records one driver pass (rows `[p.r0, p.r0 + p.nr)`, output at `p.out`, which holds the pass's
/// rows in the output's layout from `p.out.first` on). With packed sequences each sequence runs
/// from its own state ([`record_varlen`]); otherwise all of L at once ([`record_span`]).
pub(crate) fn record_pass<'b>(
    s: &mut Schedule<'_>,
    op: &'static str,
    job: &Job,
    decay: Option<Decay<'_>>,
    io: &Io<'b>,
    p: &Pass<'_>,
) -> Result<()> {
    if let Some(cu) = io.seqs {
        return record_varlen(s, op, job, decay, io, p, cu);
    }
    let geo = Geo::new(s.context(), job);
    let sp = Span {
        gm: io.geom,
        rows: (p.r0, p.nr),
        len: job.len,
        base: [0; 4],
        state0: 0,
    };
    record_span(s, op, job, (&geo, decay), io, p, &sp)
}

/// Rows recorded together over all of their `len` tokens: rows `rows` of `gm`, whose token 0 is
/// element `base` (q, k, v, o) of the tensors, and whose state rows start at row `state0`.
struct Span {
    gm: Geom,
    rows: (u64, u64),
    len: u64,
    base: [u64; 4],
    state0: u64,
}

/// Packed sequences (B = 1): each sequence is a span that starts from its own state (`first`, or
/// the initial state of sequence i = state rows `i·Hq..`) and ends in its own final state. A run
/// of consecutive sequences of equal length is one span whose "batch" stride is that length (one
/// set of dispatches for, e.g., 1000 sequences of 10 tokens) when the pass has every head; tokens
/// past the last offset are never bound.
fn record_varlen<'b>(
    s: &mut Schedule<'_>,
    op: &'static str,
    job: &Job,
    decay: Option<Decay<'_>>,
    io: &Io<'b>,
    p: &Pass<'_>,
    cu: &CuSeqlens,
) -> Result<()> {
    let ctx = s.context();
    let gm = io.geom;
    let off: Vec<u64> = cu.offsets().iter().map(|&o| o as u64).collect();
    let n = cu.count();
    // One chunk size (one set of pipelines) for every sequence: the longest one's.
    let geo = Geo::new(
        ctx,
        &Job {
            len: cu.max_len().max(1) as u64,
            ..*job
        },
    );
    let all = p.r0 == 0 && p.nr == gm.hq;
    let (hq, (dk, dv)) = (gm.hq, (job.dk, job.dv));
    let mut i = 0;
    while i < n {
        let (t0, len) = (off[i], off[i + 1] - off[i]);
        let mut c = 1;
        while all && i + c < n && off[i + c + 1] - off[i + c] == len {
            c += 1;
        }
        if len == 0 {
            // An empty sequence's final state is its initial state (fresh totals are zero).
            if let (Some((ts, tz)), Some((is, iz))) = (io.totals, io.initial) {
                let r = (i as u64 * hq + p.r0, p.nr);
                let (a, b) = (r.0 * dk * dv * 4, r.0 * dk * 4);
                s.copy(is, a, ts, a, r.1 * dk * dv * 4);
                s.copy(iz, b, tz, b, r.1 * dk * 4);
            }
            i += 1;
            continue;
        }
        let run = |st: Strides| Strides {
            batch: len as usize * st.token,
            ..st
        };
        let sp = Span {
            gm: Geom {
                lq: len,
                lk: len,
                unit: if c > 1 { hq } else { gm.unit },
                q: run(gm.q),
                k: run(gm.k),
                v: run(gm.v),
                o: run(gm.o),
                ..gm
            },
            rows: if all {
                (0, c as u64 * hq)
            } else {
                (p.r0, p.nr)
            },
            len,
            base: [gm.q, gm.k, gm.v, gm.o].map(|st| t0 * st.token as u64),
            state0: i as u64 * hq,
        };
        record_span(s, op, &Job { len, ..*job }, (&geo, decay), io, p, &sp)?;
        i += c;
    }
    Ok(())
}

/// Records a [`Span`]. Rows that fit a binding run together over all of L; otherwise (the driver
/// then gives one unit of rows per pass when a unit is too large, see
/// [`crate::driver::Plan::split_len`]) each unit ([`Geom::unit`] rows: a row, or a batch entry of
/// `[B, L, H, D]`) runs in segments of whole chunks that fit, carrying the state: causal segments
/// in order, non-causal ones summed first, then applied.
fn record_span<'b>(
    s: &mut Schedule<'_>,
    op: &'static str,
    job: &Job,
    (geo, decay): (&Geo, Option<Decay<'_>>),
    io: &Io<'b>,
    p: &Pass<'_>,
    sp: &Span,
) -> Result<()> {
    let ctx = s.context();
    let gm = &sp.gm;
    let (es, len) = (io.in_bytes, sp.len);
    let ob = p.out.elem_bytes;
    let plan = |l: u64| seg_bytes(geo, job, es, ob, l);
    let fits =
        |l: u64, n: u64| rows_per_pass(ctx, op, &plan(l), n as usize).is_ok_and(|m| m as u64 >= n);
    let (pr0, pnr) = sp.rows;
    let whole = geo.chunks(len) <= MAX_CHUNKS_PER_SEGMENT && fits(len, pnr);
    let (rows, seg_len) = if whole {
        (vec![(pr0, pnr)], len)
    } else {
        let (c, u) = (geo.chunk as u64, gm.unit.min(pnr));
        let mut chunks = geo.chunks(len).min(MAX_CHUNKS_PER_SEGMENT);
        while chunks > 1 && !fits(chunks * c, u) {
            chunks = chunks.div_ceil(2);
        }
        if !fits(chunks * c, u) {
            rows_per_pass(ctx, op, &plan(chunks * c), 1)?;
            return Err(crate::Error::TooLarge {
                op,
                what: format!("{u} heads of one token range (a [B, L, H, D] batch entry)"),
                needed: plan(c).iter().map(|x| x.1).max().unwrap_or(0) * u,
                limit: ctx.limits().max_storage_buffer_binding_size,
            });
        }
        let units = (pr0..pr0 + pnr)
            .step_by(u as usize)
            .map(|r| (r, u))
            .collect();
        (units, chunks * c)
    };
    let carry = ctx.chunk_scratch.take(ctx, rows[0].1 * geo.width() * 4);
    let segs: Vec<u64> = (0..len).step_by(seg_len as usize).collect();
    let sweeps: &[Sweep] = if job.causal || segs.len() == 1 || geo.stateless {
        &[Sweep::Both]
    } else {
        &[Sweep::Sum, Sweep::Apply]
    };
    // Where the pass's output slot starts, in the whole output.
    let o_base = io.geom.flat(&io.geom.o, p.r0, 0, false);
    let [qb, kb, vb, obase] = sp.base;
    let mut res = Ok(());
    'rows: for &(r0, nr) in &rows {
        for &sweep in sweeps {
            for &t0 in &segs {
                let sl = seg_len.min(len - t0);
                // Tokens of q (and o) and of k, v in this segment; an empty range binds token 0.
                let part = |l: u64| (t0.min(l), sl.min(l.saturating_sub(t0)));
                let ((tq, nq), (tk, nk)) = (part(gm.lq), part(gm.lk));
                let span = |st, (t, n): (u64, u64), d, kv| {
                    gm.span(st, (r0, nr), if n == 0 { (0, 1) } else { (t, n) }, d, kv)
                };
                let state_binds = |(bs, bz): (&'b wgpu::Buffer, &'b wgpu::Buffer)| {
                    let (dk, dv, r) = (job.dk, job.dv, r0 + sp.state0);
                    (
                        Bind::elems(ctx, 12, bs, 4, r * dk * dv, nr * dk * dv),
                        Bind::elems(ctx, 13, bz, 4, r * dk, nr * dk),
                    )
                };
                let bind = |slot, buf, st, t, d, kv, base| {
                    let (first, n) = span(st, t, d, kv);
                    Bind::elems(ctx, slot, buf, es, base + first, n)
                };
                let (o_first, o_n) = span(&gm.o, (tq, nq), job.dv, false);
                let b = PassBinds {
                    q: bind(1, io.q, &gm.q, (tq, nq), job.dk, false, qb),
                    k: bind(2, io.k, &gm.k, (tk, nk), job.dk, true, kb),
                    v: bind(3, io.v, &gm.v, (tk, nk), job.dv, true, vb),
                    o: Bind::elems(
                        ctx,
                        11,
                        p.out.buffer,
                        ob,
                        p.out.first + obase + o_first - o_base,
                        o_n,
                    ),
                    totals: io.totals.filter(|_| t0 + sl == len).map(state_binds),
                    initial: io
                        .initial
                        .filter(|_| t0 == 0 && sweep != Sweep::Apply)
                        .map(state_binds),
                };
                let seg = Segment {
                    nr,
                    len: sl,
                    lq: nq,
                    lk: nk,
                    first: t0 == 0 && b.initial.is_none(),
                    row0: r0,
                };
                let sub = Job { len: sl, ..*job };
                res = record_segment(s, &sub, (geo, gm), decay, seg, &b, &carry, sweep, None);
                if res.is_err() {
                    break 'rows;
                }
            }
        }
    }
    ctx.chunk_scratch.give([carry]);
    res
}
