//! Causal FAVOR+'s intra-chunk terms: each chunk's own keys `j ≤ i` added in the log domain
//! (positive features) or at the row's own key log-scale (trig), in 8×8 register tiles (see the
//! module docs of [`super`] and `favor_intra_w` / `favor_intra` in shaders/favor.wgsl).

use bytemuck::Zeroable;

use super::{trig, Params, WG};
use crate::bind::{scratch, Bind};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
use crate::Result;

/// Features per dispatch of `favor_intra_w`: each of its invocations loops once per feature, and
/// lavapipe stops an invocation silently past 65 535 loop iterations (all loops together).
const FEAT_BLOCK: u64 = 32_768;

/// Rows and columns of the intra-chunk register tiles (IT in shaders/favor.wgsl, substituted).
const INTRA_TILE: u64 = 8;

/// Bytes per row of L of [`record_intra`]'s weights `[nc, chunk, chunk]` f32, for a row of `len`.
pub(crate) fn intra_bytes(len: u64, chunk: u64) -> u64 {
    len.div_ceil(chunk) * chunk * chunk * 4
}

/// The intra-chunk weights' inputs: positive logits (query, key) `[nr, len, M]` and each row's
/// stabiliser, as [`super::record_positive`] left them; or trig sines and cosines (query, key)
/// `[nr, len, 2M]` and the scales, as [`trig::record_causal`] left them.
pub(crate) enum IntraW<'a> {
    Positive {
        lq: &'a wgpu::Buffer,
        lk: &'a wgpu::Buffer,
        logscale: &'a wgpu::Buffer,
    },
    Trig {
        uq: &'a wgpu::Buffer,
        uk: &'a wgpu::Buffer,
        sc: &'a trig::Scales,
    },
}

/// Causal FAVOR+ (positive, or trig): adds each chunk's own keys `j ≤ i` in the log domain to `nd`
/// (`[nr, len, Dv + 1]` f32, the engine's numerator and denominator over earlier chunks) and
/// writes the ratio into the pass's output. `xv = [v | 1]`, logits and `logscale` as
/// [`super::record_positive`] left them. The weights go through a scratch `[nr, nc, chunk, chunk]` (its
/// lower triangle), one invocation per 8×8 register tile of weights and of outputs, so no
/// invocation loops more than `FEAT_BLOCK` or `chunk` times whatever M and Dv.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_intra(
    s: &mut Schedule<'_>,
    (nr, len, dv, m): (u64, u64, u64, u64),
    chunk: u64,
    weights: IntraW<'_>,
    (xv, nd): (&wgpu::Buffer, &wgpu::Buffer),
    out: (Bind<'_>, u32),
) -> Result<()> {
    let ctx = s.context();
    let nc = len.div_ceil(chunk);
    let trig = matches!(weights, IntraW::Trig { .. }) as u32;
    let pl = |entry| {
        let consts = [("WG", WG), ("TRIG", trig), ("IT", INTRA_TILE as u32)];
        ctx.pipelines
            .get(ctx, "favor", entry, Storage::F32, &consts)
    };
    let n_w = nr * nc * chunk * chunk;
    let wij = scratch(ctx, n_w * 4);
    let b_w = Bind::prefix_at(11, &wij, n_w * 4).0;
    let mut prm = Params {
        rows: nr as u32,
        len: len as u32,
        dk: dv as u32,
        m: m as u32,
        total: n_w as u32,
        norm: (m as f32).powf(-0.5),
        chunk: chunk as u32,
        n_chunks: nc as u32,
        o_off: out.1,
        ..Zeroable::zeroed()
    };
    let per_key = |slot, b| Bind::prefix_at(slot, b, nr * len * 4).0;
    let (entry, f, logits) = match weights {
        IntraW::Positive { lq, lk, logscale } => {
            let feats = |slot, b| Bind::prefix_at(slot, b, nr * len * m * 4).0;
            let b = vec![per_key(4, logscale), feats(6, lk), feats(8, lq), b_w];
            ("favor_intra_w", m, b)
        }
        IntraW::Trig { uq, uk, sc } => {
            let feats = |slot, b| Bind::prefix_at(slot, b, nr * len * 2 * m * 4).0;
            let (hk, krun) = (per_key(4, &sc.hk), per_key(8, &sc.krun));
            (
                "trig_intra_w",
                2 * m,
                vec![feats(3, uq), hk, feats(6, uk), krun, b_w],
            )
        }
    };
    let w_pl = pl(entry)?;
    // Register tiles of INTRA_TILE rows and columns (IT in shaders/favor.wgsl): the weights'
    // lower triangle, and the output's rows × value dims.
    let nt = chunk.div_ceil(INTRA_TILE);
    let w_tiles = nr * nc * nt * (nt + 1) / 2;
    prm.total = w_tiles as u32;
    let groups = w_tiles.div_ceil(WG as u64);
    super::dispatch_blocks(s, &w_pl, &prm, &logits, groups, (f, FEAT_BLOCK))?;
    s.mark("favor_intra_w");
    let w = nr * len * (dv + 1) * 4;
    let binds = [
        Bind::prefix_at(3, xv, w).0,
        Bind::prefix_at(9, nd, w).0,
        out.0,
        b_w,
    ];
    let o_tiles = nr * nc * nt * dv.div_ceil(INTRA_TILE);
    prm.total = o_tiles as u32;
    s.dispatch(
        &*pl("favor_intra")?,
        &prm,
        &binds,
        o_tiles.div_ceil(WG as u64),
    )?;
    s.mark("favor_intra");
    Ok(())
}
