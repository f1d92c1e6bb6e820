//! Causal trig FAVOR+ with one key stabiliser per chunk (issue 11, item 3). A key's features
//! carry the scalar `exp(‖k'‖²/2)`, so its log-scale `hk = ‖k'‖²/2` is one number per key. The
//! chunk engine's state is kept at the running maximum `kc[c]` of hk over chunks `0..=c` and
//! rescaled when a larger one arrives (online softmax, its RESCALE with kc broadcast over F);
//! row i takes every term relative to `krun_i`, the maximum of hk over keys `0..=i`:
//! - earlier chunks: query features `M^(−1/2) exp(kc[c−1] − krun_i) [sin, cos](ω·q')`;
//! - its own chunk (`trig_intra_w`): `exp(hk_j − krun_i) Σ_a u_a(q_i) u_a(k_j)`, `j ≤ i`.
//!
//! So the key that holds row i's maximum has scale exactly 1, whatever later keys bring (with one
//! stabiliser per head, a later key ≥ 87 above every earlier one underflowed their rows to 0).

use super::{record_logits, Params, SCAN_BLOCK, WG};
use crate::bind::{scratch, Bind};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
use crate::{Context, Result};

/// Per-key log-scales `hk` and running maxima `krun` (`[nr, len]`), chunk maxima `kc` (`[nr, nc]`).
pub(crate) struct Scales {
    pub hk: wgpu::Buffer,
    pub krun: wgpu::Buffer,
    pub kc: wgpu::Buffer,
}

impl Scales {
    pub fn new(ctx: &Context, nr: u64, len: u64, nc: u64) -> Self {
        Self {
            hk: scratch(ctx, nr * len * 4),
            krun: scratch(ctx, nr * len * 4),
            kc: scratch(ctx, nr * nc * 4),
        }
    }
}

/// Records causal trig features: queries into `fq`, keys into `fk` (`[nr, len, F]` f32, F = 2M),
/// their sines and cosines into `uq`, `uk` (same shape, for the intra-chunk weights), kc broadcast
/// over F into `kmax: [nr, nc, F]` (the engine's RESCALE) and the scales `sc`. `logscale: [nr, len]`
/// f32 scratch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_causal(
    s: &mut Schedule<'_>,
    storage: Storage,
    (xq, xk): ((Bind<'_>, u32), (Bind<'_>, u32)),
    omega: &wgpu::Buffer,
    (nr, len, dk, m): (u64, u64, u64, u64),
    (fq, fk, kmax, logscale): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
    (uq, uk): (&wgpu::Buffer, &wgpu::Buffer),
    chunk: u64,
    sc: &Scales,
) -> Result<()> {
    let ctx = s.context();
    let (f, nc) = (2 * m, len.div_ceil(chunk));
    let consts = [("WG", WG), ("TRIG", 1)];
    let pl = |entry| ctx.pipelines.get(ctx, "favor", entry, storage, &consts);
    let b_omega = Bind::prefix_at(2, omega, m * dk * 4).0;
    let feats = |slot, b| Bind::prefix_at(slot, b, nr * len * f * 4).0;
    let per_key = |slot, b| Bind::prefix_at(slot, b, nr * len * 4).0;
    let per_chunk = |slot, b| Bind::prefix_at(slot, b, nr * nc * 4).0;
    let groups = |n: u64| n.div_ceil(WG as u64);
    let mut prm = Params::features((nr, len, dk, m), xk.1, (chunk, nc));
    record_logits(
        s,
        (storage, true),
        &prm,
        [xk.0, b_omega, feats(3, fk), per_key(4, &sc.hk)],
        false,
    )?;
    // The positive path's per-feature maxima with one "feature": hk.
    let scalar = Params { m: 1, ..prm };
    let (hk3, kc7) = (per_key(3, &sc.hk), per_chunk(7, &sc.kc));
    let p1 = Params {
        total: (nr * nc) as u32,
        ..scalar
    };
    s.dispatch(&*pl("key_chunk_max")?, &p1, &[hk3, kc7], groups(nr * nc))?;
    let scan = pl("key_max_scan")?;
    for c0 in (0..nc).step_by(SCAN_BLOCK as usize) {
        let p2 = Params {
            total: nr as u32,
            a0: c0 as u32,
            a1: (c0 + SCAN_BLOCK).min(nc) as u32,
            ..scalar
        };
        s.dispatch(&scan, &p2, &[kc7], groups(nr))?;
    }
    let krun8 = per_key(8, &sc.krun);
    s.dispatch(
        &*pl("key_running_max")?,
        &p1,
        &[hk3, kc7, krun8],
        groups(nr * nc),
    )?;
    prm.total = (nr * nc * f) as u32;
    let b_max = Bind::prefix_at(7, kmax, nr * nc * f * 4).0;
    let kc4 = per_chunk(4, &sc.kc);
    s.dispatch(
        &*pl("trig_fill_max")?,
        &prm,
        &[kc4, b_max],
        groups(nr * nc * f),
    )?;
    prm.total = (nr * len * f) as u32;
    let binds = [feats(3, fk), per_key(4, &sc.hk), feats(6, uk), kc7];
    s.dispatch(&*pl("trig_exp_keys")?, &prm, &binds, groups(nr * len * f))?;
    prm.x_off = xq.1;
    prm.total = (nr * len) as u32;
    record_logits(
        s,
        (storage, true),
        &prm,
        [xq.0, b_omega, feats(3, fq), per_key(4, logscale)],
        false,
    )?;
    prm.total = (nr * len * f) as u32;
    let binds = [feats(3, fq), feats(6, uq), kc7, krun8];
    s.dispatch(&*pl("trig_exp_query")?, &prm, &binds, groups(nr * len * f))
}
