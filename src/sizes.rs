//! Device-derived sizes: workgroup size, chunk and block lengths, tiles. Every size an op picks
//! from the device's limits is computed here, so one place says how limits become shapes.

use crate::types::TileFamily;
use crate::{Context, Error, Result};

pub(crate) fn workgroup_size(ctx: &Context) -> u32 {
    256.min(ctx.limits().max_compute_invocations_per_workgroup)
        .min(ctx.limits().max_compute_workgroup_size_x)
}

/// Chunk length and padded slot count the adapter can hold: the `CP × CP` score tile and `CP`
/// denominators must fit workgroup memory.
pub(crate) fn fits(ctx: &Context, cp: u64) -> bool {
    (cp * cp + cp) * 4 <= ctx.limits().max_compute_workgroup_storage_size as u64
}

pub(crate) fn pad_slots(family: TileFamily, chunk: u32) -> u32 {
    let (tr, tc, _, _) = family.tiles();
    chunk.next_multiple_of(tr.max(tc).max(4))
}

/// The default chunk length: the largest of 64, 32, 16, 8 whose tiles fit.
pub(crate) fn default_chunk(ctx: &Context) -> u32 {
    let f = ctx.tile_family();
    [64, 32, 16, 8]
        .into_iter()
        .find(|&c| fits(ctx, pad_slots(f, c) as u64))
        .unwrap_or(4)
}

/// The largest chunk length (≤ 256) whose tiles fit.
pub(crate) fn max_chunk(ctx: &Context) -> u32 {
    let f = ctx.tile_family();
    (1..=256u32)
        .rev()
        .find(|&c| fits(ctx, pad_slots(f, c) as u64))
        .unwrap_or(1)
}

/// The chunk length to use (`None`: [`default_chunk`]), or [`Error::InvalidArgument`] when it
/// does not fit workgroup memory.
pub(crate) fn resolve_chunk(ctx: &Context, op: &'static str, block: Option<u32>) -> Result<u32> {
    let max = max_chunk(ctx);
    match block {
        None => Ok(default_chunk(ctx).min(max)),
        Some(b) if b >= 1 && b <= max => Ok(b),
        Some(b) => Err(Error::InvalidArgument {
            op,
            name: "block",
            reason: format!("{b} is not in 1..={max} (the B×B tile must fit workgroup memory)"),
        }),
    }
}

/// Output columns per invocation (`NA` in the shader).
pub(crate) const NA: u32 = 8;

/// (workgroup size, queries per tile, keys per tile, Dk chunk). Eight invocations share a query:
/// together they hold its 32 logits of a key tile and 64 output columns. Workgroup memory holds
/// the Q chunk, the K chunk and the weight tile; the Dk chunk is the largest that fits.
pub(crate) fn softmax_tiles(ctx: &Context) -> (u32, u32, u32, u32) {
    let wg = workgroup_size(ctx);
    let tpq = 8.min(wg);
    let bq = (wg / tpq).max(1);
    let bk = tpq * 8;
    let mem = ctx.limits().max_compute_workgroup_storage_size;
    let mut dkc = 64u32;
    while dkc > 1 && (bq * dkc + dkc * bk + bq * bk + 3 * bq) * 4 > mem {
        dkc /= 2;
    }
    (bq * tpq, bq, bk, dkc)
}
