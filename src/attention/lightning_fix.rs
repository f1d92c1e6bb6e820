//! Lightning attention's NaN/±Inf pattern across chunks (issue 11): after the chunk engine, the
//! entries whose definition `o_t[e] = Σ_{s0≤j≤t} λ^(t−j) (φ(q_t)·φ(k_j)) v_j[e]` is not finite
//! (q_t holds a NaN/±Inf, or the engine's value is not finite) are recomputed in definition order
//! as the sum of the definition's non-finite terms (`λ^(t−j) > 0` keeps their signs; finite terms
//! change no ±Inf/NaN), so the pattern is the reference's and not the state form's (`φ(q_t)·S`
//! sums ±Inf over features). shaders/lightning_fix.wgsl.
//!
//! Cost: one check per (row, token) always (O(L·(Dk + Dv)) reads); the rest runs through an
//! indirect dispatch whose grid the check writes, so finite inputs pay nothing more. A call with
//! a non-finite input pays O(L²·Dk) per value dim of the rows it touches, in dispatches over
//! blocks of keys (no invocation loops past ~48 000 iterations).
//!
//! The initial-state term `λ^(t+1) φ(q_t)·S_0` of the stateful calls is a sum over features in
//! the definition too: the pass adds it, when not finite, to the entries it recomputes.
//!
//! Not covered (the engine's state form stays): a row span larger than one storage binding (L
//! split into segments).

use super::chunk::Geom;
use crate::bind::{scratch, upload_u32, Bind};
use crate::driver::Pass;
use crate::schedule::{fold_grid, Schedule};
use crate::types::CuSeqlens;
use crate::Result;

const WG: u32 = 64;
/// Loop iterations one `terms` invocation may spend per dispatch (lavapipe stops an
/// invocation's loops, all together, at 65 535).
const LOOP_BUDGET: u64 = 40_000;

crate::uniform! {
    /// The `Params` uniform of shaders/lightning_fix.wgsl.
    pub(crate) struct Params {
        total: u32,
        len: u32,
        dk: u32,
        dv: u32,
        j0: u32,
        j1: u32,
        hq: u32,
        g0: u32,
        n_seq: u32,
        q_off: u32,
        k_off: u32,
        v_off: u32,
        o_off: u32,
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
        gx: u32,
        gy: u32,
        gz: u32,
        s0_on: u32,
        packed: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

/// What the pass reads: q, k, v buffers (elements of `in_bytes`), the rows' geometry, the
/// feature map's shader id, the packed sequences.
pub(crate) struct FixIo<'b> {
    pub q: &'b wgpu::Buffer,
    pub k: &'b wgpu::Buffer,
    pub v: &'b wgpu::Buffer,
    pub in_bytes: u64,
    pub geom: Geom,
    pub fmap: u32,
    pub seqs: Option<&'b CuSeqlens>,
    pub dims: (u64, u64, u64),
    /// The initial state S `[N, Hq, Dk, Dv]` f32 of a stateful call.
    pub initial: Option<&'b wgpu::Buffer>,
}

/// The uniform for `work` items over rows from `g0`, with the bindings' element offsets
/// `offs` (q, k, v, o) and the grid of the indirect dispatches.
fn params(
    gm: &Geom,
    (work, len, dk, dv): (u64, u64, u64, u64),
    g0: u64,
    n_seq: usize,
    [q_off, k_off, v_off, o_off]: [u32; 4],
    grid: [u32; 3],
) -> Params {
    let st = |x: usize| x as u32;
    Params {
        total: work as u32,
        len: len as u32,
        dk: dk as u32,
        dv: dv as u32,
        j0: 0,
        j1: 0,
        hq: gm.hq as u32,
        g0: g0 as u32,
        n_seq: n_seq as u32,
        q_off,
        k_off,
        v_off,
        o_off,
        q_bs: st(gm.q.batch),
        q_hs: st(gm.q.head),
        q_ts: st(gm.q.token),
        k_bs: st(gm.k.batch),
        k_hs: st(gm.k.head),
        k_ts: st(gm.k.token),
        v_bs: st(gm.v.batch),
        v_hs: st(gm.v.head),
        v_ts: st(gm.v.token),
        o_bs: st(gm.o.batch),
        o_hs: st(gm.o.head),
        o_ts: st(gm.o.token),
        gx: grid[0],
        gy: grid[1],
        gz: grid[2],
        s0_on: 0,
        packed: 0,
        _pad0: 0,
        _pad1: 0,
    }
}

/// Records the definition-order pass over the rows of `p` (after the engine wrote them).
pub(crate) fn record_fix(s: &mut Schedule<'_>, io: &FixIo<'_>, p: &Pass<'_>) -> Result<()> {
    let ctx = s.context();
    let gm = &io.geom;
    let (len, dk, dv) = io.dims;
    let (r0, nr) = (p.r0, p.nr);
    if len == 0 || dv == 0 || nr == 0 {
        return Ok(());
    }
    let limit = ctx.limits().max_storage_buffer_binding_size;
    let es = io.in_bytes;
    let (qf, qn) = gm.span(&gm.q, (r0, nr), (0, len), dk, false);
    let (kf, kn) = gm.span(&gm.k, (r0, nr), (0, len), dk, true);
    let (vf, vn) = gm.span(&gm.v, (r0, nr), (0, len), dv, true);
    let (of, on) = gm.span(&gm.o, (r0, nr), (0, len), dv, false);
    let o_base = gm.flat(&gm.o, r0, 0, false);
    let ob = p.out.elem_bytes;
    let work = nr * len * dv;
    let fits = [(qn, es), (kn, es), (vn, es), (on, ob), (work, 4)]
        .iter()
        .all(|&(n, b)| n * b + 256 <= limit);
    if !fits || work > u32::MAX as u64 {
        return Ok(()); // documented: the engine's state form stays
    }
    let (bq, q_off) = Bind::elems(ctx, 1, io.q, es, qf, qn);
    let (bk, k_off) = Bind::elems(ctx, 2, io.k, es, kf, kn);
    let (bv, v_off) = Bind::elems(ctx, 3, io.v, es, vf, vn);
    let (bo, o_off) = Bind::elems(ctx, 7, p.out.buffer, ob, p.out.first + of - o_base, on);
    let starts: Vec<u32> = match io.seqs {
        Some(cu) => cu.offsets().to_vec(),
        None => vec![0, len as u32],
    };
    let starts_buf = upload_u32(ctx, &starts);
    let acc = scratch(ctx, work * 4);
    let args = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("longseq lightning_fix args"),
        size: 16,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::INDIRECT,
        mapped_at_creation: false,
    });
    let grid = fold_grid(ctx, work.div_ceil(WG as u64))?;
    let offs = [q_off, k_off, v_off, o_off];
    let mut prm = params(
        gm,
        (nr * len, len, dk, dv),
        r0,
        starts.len() - 1,
        offs,
        grid,
    );
    let storage = p.storage;
    let consts = [("WG", WG), ("FMAP", io.fmap)];
    let pl = |entry| {
        ctx.pipelines
            .get(ctx, "lightning_fix", entry, storage, &consts)
    };
    // Each entry point binds only what it reads: `args` is never storage where it is INDIRECT.
    let (b_st, b_acc) = (whole(4, &starts_buf), whole(5, &acc));
    let detect = [bq, b_st, whole(6, &args), bo];
    s.dispatch(
        &*pl("detect")?,
        &prm,
        &detect,
        (nr * len).div_ceil(WG as u64),
    )?;
    prm.total = work as u32;
    prm.s0_on = io.initial.is_some() as u32;
    prm.packed = io.seqs.is_some() as u32;
    // The first dispatch also runs the initial state's term (Dk more iterations).
    let block = (LOOP_BUDGET.saturating_sub(dk) / (dk + 2)).max(1);
    let terms = pl("terms")?;
    // terms reads binding 8 whatever s0_on says: the context's zeros stand in without a state.
    let binds = [
        bq,
        bk,
        bv,
        b_st,
        b_acc,
        bo,
        whole(8, io.initial.unwrap_or(ctx.zero_quad())),
    ];
    let mut j0 = 0;
    while j0 < len {
        prm.j0 = j0 as u32;
        prm.j1 = (j0 + block).min(len) as u32;
        s.dispatch_indirect(&terms, &prm, &binds, &args);
        j0 += block;
    }
    let wb = pl("write_back")?;
    s.dispatch_indirect(&wb, &prm, &[bq, b_st, b_acc, bo], &args);
    Ok(())
}

fn whole(slot: u32, buffer: &wgpu::Buffer) -> Bind<'_> {
    Bind {
        slot,
        buffer,
        offset: 0,
        size: buffer.size(),
    }
}
