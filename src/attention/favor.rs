//! Performer attention: linear attention with FAVOR+ random features (Choromanski et al. 2021,
//! *Rethinking Attention with Performers*, arXiv 2009.14794, Lemma 1, §2.3-2.4).
//!
//! With `x' = x·d^(−1/4)` (so `x'ᵀy' = xᵀy/√d`) and `ω: [M, Dk]`:
//! - positive features `φ⁺(x) = M^(−1/2) [exp(ω_rᵀx' − ‖x'‖²/2)]_{r<M}`, F = M, an unbiased and
//!   positive estimate of the softmax kernel `exp(qᵀk/√d)`;
//! - trig features `φ(x) = M^(−1/2) exp(‖x'‖²/2) [sin(ω_rᵀx'), cos(ω_rᵀx')]`, F = 2M, unbiased but
//!   not positive (the denominator can come near 0).
//!
//! The output is the linear-attention ratio `O_i = Σ_j (φ(q_i)·φ(k_j)) v_j / Σ_j φ(q_i)·φ(k_j)`
//! (no ε). Denominator guard: a row whose denominator is exactly 0 (every weight underflowed)
//! outputs 0, as the CPU reference does. Features are f32 on the GPU whatever the storage dtype;
//! ω is always f32.
//!
//! Stabilisers (constants subtracted inside exp that cancel in the ratio). With logits
//! `a_r(x) = ω_rᵀx' − ‖x'‖²/2`, positive features use one key stabiliser per feature r and chunk c
//! of the chunk engine: `m_r(c)` = the largest `a_r(k_j)` over keys in chunks `0..=c` (causal) or
//! over all L. Each query row i takes `C_i = max_r (a_r(q_i) + m*_r(i))`, `m*_r(i)` the maximum
//! over the keys i sees: `C_i` is row i's largest log-term, so that term is exactly `M^(−1)` and
//! none exceeds it, however far its logits lie from other rows' (norm-40 inputs with sinks:
//! tests/suite/favor_range.rs).
//! - Non-causal: keys `exp(a_r(k_j) − m_r)`, queries `exp(a_r(q_i) + m_r − C_i)`, both ≤ 1.
//! - Causal: the engine carries the state of earlier chunks, its row r rescaled by
//!   `exp(m_r(c−1) − m_r(c))` when a chunk brings a larger maximum (online softmax); the query of
//!   a row in chunk c meets only the state entering c, at scale `m_r(c−1) ≤ m*_r(i)`. The chunk's
//!   own keys `j ≤ i` are added in the log domain, `M^(−1) Σ_r exp(a_r(q_i) + a_r(k_j) − C_i)`
//!   (`favor_intra`), so no key is scaled by the maximum of a later key.
//!
//! Range that holds (f32), causal and not: every term within ≈ 87 (in log) of its row's largest
//! one is kept (smaller ones underflow, as exp does past ≈ −745 in the f64 reference), whatever
//! the spread of logits across rows, along L or inside a chunk (a key later in row i's chunk that
//! raises a feature's maximum by any amount no longer costs row i anything: tests/suite/favor_range.rs,
//! a sink inside a chunk). A row with every weight 0 outputs 0.
//! Trig features, causal (without a state out): the key log-scale `‖k'‖²/2` is one number per
//! key, kept as a running maximum per chunk (the engine's state rescaled when a larger one
//! arrives) and per row (`favor::trig`). Every term within ≈ 87 (in log) of its row's largest
//! key is kept, whatever later keys bring (tests/suite/favor_range.rs: keys from position 200 on
//! ≈ 125 above the earlier ones; before, those rows were all 0). Trig sums of cosines cancel, so
//! a row's relative error in f32 follows the estimator's own sensitivity to rounding (there:
//! ≈ 1e-2 at ‖q‖, ‖k‖ ≈ 40-60, M = 256), not 1e-5.
//! Trig non-causal, and the state a prefill writes (one log-scale per row for recurrent
//! decoding), keep one key stabiliser per head over all L: a key whose log-scale lies more than
//! ≈ 87 below the head's maximum underflows to 0 (about 745 in the f64 reference, which uses
//! that scheme). Non-causal, every row sees the key holding that maximum, so no row is lost to
//! it; a prefill's output rows are computed a second time with the causal scheme above (twice
//! the work) so that no row is lost there either.

use bytemuck::Zeroable;

use super::chunk::{self, Job};
pub(crate) mod intra;
pub(crate) mod trig;
pub(crate) use super::favor_core::{record_core, Core};
use crate::bind::Bind;
use crate::driver::{self, Input, Pass, Plan, RowOp};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
pub(crate) use crate::types::attention::check_omega;
use crate::types::attention::{check_shapes, AttnDims};
pub use crate::types::attention::{draw_omega, FavorKind, FavorOptions, OmegaDraw};
use crate::{Context, Element, Result, Tensor};
pub(super) use intra::{intra_bytes, record_intra, IntraW};

const OP: &str = "favor_attention";

crate::uniform! {
    /// The `Params` uniform of shaders/favor.wgsl.
    pub(crate) struct Params {
        rows: u32,
        len: u32,
        dk: u32,
        m: u32,
        x_off: u32,
        head_off: u32,
        total: u32,
        scale: f32,
        norm: f32,
        chunk: u32,
        n_chunks: u32,
        o_off: u32,
        a0: u32,
        a1: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

impl Params {
    /// What every feature pass over rows `[nr, len, Dk]` with M random features shares: x at
    /// element offset `x_off`, the `x' = x·Dk^(−1/4)` and `M^(−1/2)` scales, and the chunking
    /// `(chunk, n_chunks)` of the causal passes ((0, 0) when not chunked).
    fn features(
        (nr, len, dk, m): (u64, u64, u64, u64),
        x_off: u32,
        (chunk, nc): (u64, u64),
    ) -> Self {
        Self {
            rows: nr as u32,
            len: len as u32,
            dk: dk as u32,
            m: m as u32,
            x_off,
            total: (nr * len) as u32,
            scale: (dk as f32).powf(-0.25),
            norm: (m as f32).powf(-0.5),
            chunk: chunk as u32,
            n_chunks: nc as u32,
            ..Zeroable::zeroed()
        }
    }
}

pub(crate) const WG: u32 = 64;

/// Where the key stabiliser goes: `None` = per position (queries); `Some` = per head, written to
/// the binding at slot 5 (a scratch buffer, or a decoding state's log-scale).
pub(crate) type HeadOut<'b> = Option<(Bind<'b>, u32)>;

/// Records FAVOR features of `nr` rows of `x` (bound at slot 1 with its element offset) into
/// `feat: [nr, len, F]` f32 (its logits first, in place), using `logscale: [nr, len]` f32.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_features(
    s: &mut Schedule<'_>,
    storage: Storage,
    kind: FavorKind,
    x: (Bind<'_>, u32),
    omega: &wgpu::Buffer,
    (nr, len, dk, m): (u64, u64, u64, u64),
    feat: &wgpu::Buffer,
    logscale: &wgpu::Buffer,
    head: HeadOut<'_>,
) -> Result<()> {
    let ctx = s.context();
    let f = kind.num_features(m as usize) as u64;
    let consts = [("WG", WG), ("TRIG", (kind == FavorKind::Trig) as u32)];
    let pl = |entry| ctx.pipelines.get(ctx, "favor", entry, storage, &consts);
    let b_omega = Bind::prefix_at(2, omega, m * dk * 4).0;
    let b_feat = Bind::prefix_at(3, feat, nr * len * f * 4).0;
    let b_log = Bind::prefix_at(4, logscale, nr * len * 4).0;
    let mut prm = Params {
        head_off: head.map_or(0, |h| h.1),
        ..Params::features((nr, len, dk, m), x.1, (0, 0))
    };
    let row_max = kind == FavorKind::Positive;
    let st = (storage, kind == FavorKind::Trig);
    record_logits(s, st, &prm, [x.0, b_omega, b_feat, b_log], row_max)?;
    prm.total = (nr * len * f) as u32;
    let groups = (nr * len * f).div_ceil(WG as u64);
    match head {
        None => s.dispatch(&*pl("favor_exp_row")?, &prm, &[b_feat, b_log], groups),
        Some((h, _)) => {
            prm.total = nr as u32;
            let hm = pl("head_max")?;
            let block = SCAN_BLOCK * WG as u64;
            dispatch_blocks(s, &hm, &prm, &[b_log, h], nr, (len, block))?;
            prm.total = (nr * len * f) as u32;
            s.dispatch(&*pl("favor_exp_head")?, &prm, &[b_feat, b_log, h], groups)
        }
    }
}

/// Records the logits of `prm.total` tokens (binds: x, ω, feat, logscale) with `favor_proj`, in
/// register tiles: positive `ω_r·x' − ‖x'‖²/2` (and with `row_max`, each token's largest one in
/// logscale, `favor_logits`); trig `ω_r·x'` in both halves of feat and `‖x'‖²/2` in logscale.
/// (One storage load per FMA, or one workgroup per token, was the FAVOR+ bottleneck on CPU
/// adapters.)
pub(super) fn record_logits(
    s: &mut Schedule<'_>,
    (storage, trig): (Storage, bool),
    prm: &Params,
    b: [Bind<'_>; 4],
    row_max: bool,
) -> Result<()> {
    let ctx = s.context();
    let pt = ctx.tile_family().proj_tile();
    let tiles = (prm.total as u64).div_ceil(pt as u64) * (prm.m as u64).div_ceil(pt as u64);
    let proj = Params {
        total: tiles as u32,
        ..*prm
    };
    // Rows of x and ω on 4-element boundaries: favor_proj reads them as vec4 (views at 12, 13).
    let vec = prm.x_off.is_multiple_of(4) && prm.dk.is_multiple_of(4);
    let pl = |entry, vec: bool| {
        let consts = [
            ("WG", WG),
            ("TRIG", trig as u32),
            ("VEC_X", vec as u32),
            ("PT", pt),
        ];
        ctx.pipelines.get(ctx, "favor", entry, storage, &consts)
    };
    let [x, omega, feat, log] = b;
    // Without VEC_X the views are never read: the context's zero quad fills their slots.
    let (x4, omega4) = match vec {
        true => (Bind { slot: 12, ..x }, Bind { slot: 13, ..omega }),
        false => {
            let z = ctx.zero_quad();
            (Bind::all(12, z), Bind::all(13, z))
        }
    };
    let b = [x, omega, feat, log, x4, omega4];
    let groups = tiles.div_ceil(WG as u64);
    let pp = pl("favor_proj", vec)?;
    dispatch_blocks(s, &pp, &proj, &b, groups, (prm.dk as u64, PROJ_DK_BLOCK))?;
    s.mark("favor_proj");
    if row_max {
        let rm = pl("favor_logits", false)?;
        let groups = (prm.total as u64).div_ceil(WG as u64);
        dispatch_blocks(
            s,
            &rm,
            prm,
            &[feat, log],
            groups,
            (prm.m as u64, SCAN_BLOCK),
        )?;
        s.mark("favor_logits");
    }
    Ok(())
}

/// Dispatches `pl` once per block `[a0, a1)` of `0..n` (`block` long, the last shorter; one empty
/// block when n = 0) with `prm`'s a0, a1 set, so an invocation looping over that dim stays under
/// lavapipe's 65 535 iterations.
pub(super) fn dispatch_blocks(
    s: &mut Schedule<'_>,
    pl: &wgpu::ComputePipeline,
    prm: &Params,
    binds: &[Bind<'_>],
    groups: u64,
    (n, block): (u64, u64),
) -> Result<()> {
    for a0 in (0..n.max(1)).step_by(block as usize) {
        let blk = Params {
            a0: a0 as u32,
            a1: (a0 + block).min(n) as u32,
            ..*prm
        };
        s.dispatch(pl, &blk, binds, groups)?;
    }
    Ok(())
}

/// Iterations per invocation and dispatch of the loops over chunks (`key_max_scan`), over
/// positions (`head_max`, times WG), over features (`favor_logits`, `query_max`, the `favor_exp_*`
/// passes) and over values (`extend_v`): lavapipe stops an invocation silently past 65 535.
pub(super) const SCAN_BLOCK: u64 = 32_768;

/// Dk per `favor_proj` dispatch: each step over Dk runs its register loops as well, and past
/// Dk ≈ 3 800 in one invocation lavapipe stopped it early (tests/suite/favor_loops.rs).
const PROJ_DK_BLOCK: u64 = 1024;

/// Records positive FAVOR features of queries `xq` into `fq` and keys `xk` into `fk` (both
/// `[nr, len, M]` f32) with one key stabiliser per (chunk of `chunk` keys, feature) in
/// `kmax: [nr, nc, M]` f32, for the chunk engine's `logs`: the maximum key logit per feature over
/// chunks `0..=c` (causal) or over all L. Each query row is scaled so its largest term over the
/// keys it sees is exactly `M^(−1)` (see the module docs). `logscale: [nr, len]` f32 scratch.
/// Causal (`logits` = (query, key) `[nr, len, M]` f32): the query features meet only the state
/// entering their chunk; the logits and each row's stabiliser (in `logscale`) stay for
/// [`record_intra`].
#[allow(clippy::too_many_arguments)]
pub(super) fn record_positive(
    s: &mut Schedule<'_>,
    storage: Storage,
    (xq, xk): ((Bind<'_>, u32), (Bind<'_>, u32)),
    omega: &wgpu::Buffer,
    (nr, len, dk, m): (u64, u64, u64, u64),
    (fq, fk, kmax, logscale): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
    (logits, chunk): (Option<(&wgpu::Buffer, &wgpu::Buffer)>, u64),
    m0: Option<(Bind<'_>, u32)>,
) -> Result<()> {
    let causal = logits.is_some();
    let ctx = s.context();
    let nc = len.div_ceil(chunk);
    let consts = [("WG", WG), ("TRIG", 0), ("CAUSAL", causal as u32)];
    let pl = |entry| ctx.pipelines.get(ctx, "favor", entry, storage, &consts);
    let b_omega = Bind::prefix_at(2, omega, m * dk * 4).0;
    let b_log = Bind::prefix_at(4, logscale, nr * len * 4).0;
    let b_fk = Bind::prefix_at(3, fk, nr * len * m * 4).0;
    let b_fq = Bind::prefix_at(3, fq, nr * len * m * 4).0;
    let b_max = Bind::prefix_at(7, kmax, nr * nc * m * 4).0;
    // Non-causal runs never touch slots 6 and 8; the key features and the log-scales fill them.
    let b_run = Bind::prefix_at(8, logits.map_or(fk, |l| l.0), nr * len * m * 4).0;
    let b_lk = match logits {
        Some((_, lk)) => Bind::prefix_at(6, lk, nr * len * m * 4).0,
        None => Bind::prefix_at(6, logscale, nr * len * 4).0,
    };
    let mut prm = Params::features((nr, len, dk, m), xk.1, (chunk, nc));
    let groups = |n: u64| n.div_ceil(WG as u64);
    record_logits(
        s,
        (storage, false),
        &prm,
        [xk.0, b_omega, b_fk, b_log],
        false,
    )?;
    prm.total = (nr * nc * m) as u32;
    s.dispatch(
        &*pl("key_chunk_max")?,
        &prm,
        &[b_fk, b_max],
        groups(nr * nc * m),
    )?;
    // An initial state's log-scale m0 is a maximum over earlier keys: it joins chunk 0's.
    let fold = |s: &mut Schedule<'_>, dst: &wgpu::Buffer, stride: u64, count: u64| match m0 {
        Some(m0) => super::favor_batch::record_fold_max(s, m0, dst, (nr, m, stride, count)),
        None => Ok(()),
    };
    fold(s, kmax, nc * m, 1)?;
    s.mark("key_chunk_max");
    prm.total = (nr * m) as u32;
    let scan = pl("key_max_scan")?;
    for c0 in (0..nc).step_by(SCAN_BLOCK as usize) {
        prm.a0 = c0 as u32;
        prm.a1 = (c0 + SCAN_BLOCK).min(nc) as u32;
        s.dispatch(&scan, &prm, &[b_max], groups(nr * m))?;
    }
    (prm.a0, prm.a1) = (0, 0);
    if !causal {
        prm.total = (nr * nc * m) as u32;
        let fill = pl("key_max_fill")?;
        s.dispatch(&fill, &prm, &[b_max], groups(nr * nc * m))?;
    }
    if causal {
        prm.total = (nr * nc * m) as u32;
        let binds = [b_fk, b_max, b_run];
        s.dispatch(&*pl("key_running_max")?, &prm, &binds, groups(nr * nc * m))?;
        fold(s, b_run.buffer, len * m, chunk.min(len))?;
    }
    prm.total = (nr * len) as u32;
    let ek = pl("favor_exp_keys")?;
    let binds = [b_fk, b_max, b_lk];
    dispatch_blocks(s, &ek, &prm, &binds, groups(nr * len), (m, SCAN_BLOCK))?;
    s.mark("key_max_exp");
    prm.x_off = xq.1;
    prm.total = (nr * len) as u32;
    record_logits(
        s,
        (storage, false),
        &prm,
        [xq.0, b_omega, b_fq, b_log],
        false,
    )?;
    let binds = [b_fq, b_max, b_run, b_log];
    for entry in ["query_max", "favor_exp_query"] {
        let pp = pl(entry)?;
        dispatch_blocks(s, &pp, &prm, &binds, groups(nr * len), (m, SCAN_BLOCK))?;
    }
    s.mark("favor_exp_query");
    Ok(())
}

/// Records `xv = [v | 1]` (`[n, Dv + 1]` f32) from `x` (`[n, Dv]`, bound at slot 1).
pub(super) fn record_extend_v(
    s: &mut Schedule<'_>,
    storage: Storage,
    x: (Bind<'_>, u32),
    xv: &wgpu::Buffer,
    (n, dv): (u64, u64),
) -> Result<()> {
    let ctx = s.context();
    let pl = ctx
        .pipelines
        .get(ctx, "favor", "extend_v", storage, &[("WG", WG)])?;
    let b = Bind::prefix_at(3, xv, n * (dv + 1) * 4).0;
    let prm = Params {
        dk: dv as u32,
        x_off: x.1,
        total: n as u32,
        ..Zeroable::zeroed()
    };
    // One invocation per position, its Dv + 1 values in blocks of SCAN_BLOCK.
    let groups = n.div_ceil(WG as u64);
    dispatch_blocks(s, &pl, &prm, &[x.0, b], groups, (dv + 1, SCAN_BLOCK))
}

/// Records `xf[0..n] = f32(x[first..first + n])` (x bound at slot 1, xf at slot 6).
pub(crate) fn record_cast_f32(
    s: &mut Schedule<'_>,
    storage: Storage,
    x: (Bind<'_>, u32),
    xf: &wgpu::Buffer,
    n: u64,
) -> Result<()> {
    record_elementwise(s, "cast_f32", storage, &[("WG", WG)], x, (6, xf), n)
}

/// Records `feat[0..n] = φ(x[first..first + n])` for an elementwise feature map (FMAP id).
pub(crate) fn record_map_features(
    s: &mut Schedule<'_>,
    storage: Storage,
    fmap: u32,
    x: (Bind<'_>, u32),
    feat: &wgpu::Buffer,
    n: u64,
) -> Result<()> {
    let consts = [("WG", WG), ("FMAP", fmap)];
    record_elementwise(s, "map_features", storage, &consts, x, (3, feat), n)
}

/// One elementwise pass of `favor.wgsl` over `n` elements: x at slot 1, the f32 result at `out`.
fn record_elementwise(
    s: &mut Schedule<'_>,
    entry: &'static str,
    storage: Storage,
    consts: &[(&'static str, u32)],
    x: (Bind<'_>, u32),
    (slot, out): (u32, &wgpu::Buffer),
    n: u64,
) -> Result<()> {
    let ctx = s.context();
    let p = ctx.pipelines.get(ctx, "favor", entry, storage, consts)?;
    let prm = Params {
        x_off: x.1,
        total: n as u32,
        ..Zeroable::zeroed()
    };
    s.dispatch(
        &p,
        &prm,
        &[x.0, Bind::prefix_at(slot, out, n * 4).0],
        n.div_ceil(WG as u64),
    )
}

/// Performer attention: `q, k: [B, H, L, Dk]` (or `[H, L, Dk]`), `v: [.., L, Dv]`,
/// `omega: [M, Dk]` f32 -> `o: [.., L, Dv]` in the inputs' dtype (f16 storage keeps f32 features,
/// state and accumulation). ω is used exactly as given; draw one with [`draw_omega`].
///
/// Errors: [`Error::Shape`](crate::Error::Shape) for mismatched shapes or ω not `[M, Dk]`, [`Error::InvalidArgument`](crate::Error::InvalidArgument)
/// for M = 0, [`Error::TooLarge`](crate::Error::TooLarge) when one (batch, head) row does not fit a storage binding.
pub fn favor_attention<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    omega: &Tensor<f32>,
    opts: &FavorOptions,
) -> Result<Tensor<T>> {
    driver::run(ctx, &Favor::new(q, k, v, omega, opts))
}

/// [`favor_attention`] writing into an existing `out: [.., L, Dv]`, one submission.
pub fn favor_attention_into<T: Element>(
    ctx: &Context,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    omega: &Tensor<f32>,
    out: &Tensor<T>,
    opts: &FavorOptions,
) -> Result<()> {
    driver::run_into(ctx, &Favor::new(q, k, v, omega, opts), out)
}

/// Records [`favor_attention`] into a [`Schedule`].
pub fn record_favor_attention<T: Element>(
    s: &mut Schedule<'_>,
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    omega: &Tensor<f32>,
    out: &Tensor<T>,
    opts: &FavorOptions,
) -> Result<()> {
    driver::record(s, &Favor::new(q, k, v, omega, opts), out)
}

/// Where a prefill writes each row's final state: S `[R, F, Dv]`, z `[R, F]`, log-scale `[R]`.
pub(crate) struct StateOut<'a> {
    pub s: &'a wgpu::Buffer,
    pub z: &'a wgpu::Buffer,
    pub c: &'a wgpu::Buffer,
}

/// The FAVOR op; with `state`, also the state after the last row (prefill, causal).
pub(crate) struct Favor<'a, T: Element> {
    pub q: &'a Tensor<T>,
    pub k: &'a Tensor<T>,
    pub v: &'a Tensor<T>,
    pub omega: &'a Tensor<f32>,
    pub kind: FavorKind,
    pub causal: bool,
    pub state: Option<StateOut<'a>>,
}

impl<'a, T: Element> Favor<'a, T> {
    pub fn new(
        q: &'a Tensor<T>,
        k: &'a Tensor<T>,
        v: &'a Tensor<T>,
        omega: &'a Tensor<f32>,
        opts: &FavorOptions,
    ) -> Self {
        Self {
            q,
            k,
            v,
            omega,
            kind: opts.kind,
            causal: opts.causal,
            state: None,
        }
    }
}

impl<'a, T: Element> RowOp for Favor<'a, T> {
    type T = T;
    /// Sizes and M.
    type Dims = (AttnDims, u64);
    const NAME: &'static str = OP;

    fn plan(&self, ctx: &Context) -> Result<(Self::Dims, Plan)> {
        let d = check_shapes(OP, self.q.shape(), self.k.shape(), self.v.shape())?;
        let m = check_omega(OP, self.omega.shape(), d.dk)? as u64;
        let (len, dk, dv) = (d.len as u64, d.dk as u64, d.dv as u64);
        let f = self.kind.num_features(m as usize) as u64;
        let es = size_of::<T>() as u64;
        // A causal prefill also runs the split core for its rows (record_rows).
        let split = self.causal;
        let job = core_job(len, f, dv, self.causal, split);
        let mut plan = Plan::new(d.out_shape.clone(), d.rows as u64, len * dv)
            .bytes("q", len * dk * es)
            .bytes("v", len * job.dv * 4)
            .bytes("features", len * f * 4)
            .bytes("key maxima", len * f * 4)
            .bytes("S", f * job.dv * 4);
        if split {
            plan = plan
                .bytes("query logits", len * f * 4)
                .bytes("key logits", len * f * 4)
                .bytes("numerator and denominator", len * job.dv * 4)
                .bytes(
                    "intra-chunk weights",
                    intra_bytes(len, chunk::chunk_len(ctx, &job) as u64),
                );
        }
        plan.row_bytes.extend(chunk::row_bytes(ctx, &job));
        // The chunk kernels run on f32 features, so they write f32.
        plan.f32_out = true;
        Ok(((d, m), plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        let mut i = super::qkv_inputs(self.q, self.k, self.v);
        i.push(Input::of("omega", self.omega));
        i
    }

    fn record_rows(&self, s: &mut Schedule<'_>, (d, m): &Self::Dims, p: &Pass<'_>) -> Result<()> {
        let ctx = s.context();
        let (len, dk, dv) = (d.len as u64, d.dk as u64, d.dv as u64);
        let (r0, nr, es) = (p.r0, p.nr, size_of::<T>() as u64);
        let x = |t: &'a Tensor<T>, n: u64| {
            Bind::elems(ctx, 1, t.buffer(), es, r0 * len * n, nr * len * n)
        };
        let run = Core {
            kind: self.kind,
            causal: self.causal,
            storage: p.storage,
            omega: self.omega.buffer(),
            sizes: (nr, len, dk, dv, *m),
            x: [x(self.q, dk), x(self.k, dk), x(self.v, dv)],
            prefill: self.state.as_ref().map(|st| (st, r0)),
            carry: None,
        };
        record_core(s, &run, &p.out)?;
        if run.prefill.is_none() || !self.causal {
            return Ok(());
        }
        // The prefill's state keeps one log-scale per row (head-wide stabiliser), which can zero
        // a row before a far larger key; its rows are recomputed with the running maxima.
        let rows = Core {
            prefill: None,
            ..run
        };
        record_core(s, &rows, &p.out)
    }
}

/// The chunk engine on precomputed f32 features (identity map, denominator, ε = 0). `split`
/// (causal positive FAVOR+): values `[v | 1]` and no denominator, so the engine returns the
/// numerator and denominator over earlier chunks, `[L, Dv + 1]`, for [`record_intra`].
pub(super) fn core_job(len: u64, f: u64, dv: u64, causal: bool, split: bool) -> Job {
    Job {
        storage: Storage::F32,
        fmap: crate::types::FeatureMap::Identity.shader_id(),
        causal,
        denominator: !split,
        eps: 0.0,
        chunk: None,
        len,
        dk: f,
        dv: dv + split as u64,
        rescale: split,
        softmax: None,
    }
}
