//! Device-derived sizes: workgroup size, chunk and block lengths, tiles. Every size an op picks
//! from the device's limits is computed here, so one place says how limits become shapes.

use crate::{Context, Error, Result};

/// Rows per chunk: the largest of 64, 32, 16, 8 whose score tile (C² f32) and denominators fit
/// the device's workgroup memory.
pub(crate) fn chunk_len(ctx: &Context) -> u32 {
    let mem = ctx.limits().max_compute_workgroup_storage_size as u64;
    [64u64, 32, 16, 8]
        .into_iter()
        .find(|c| (c * c + c) * 4 <= mem)
        .unwrap_or(4) as u32
}

pub(crate) fn workgroup_size(ctx: &Context) -> u32 {
    256.min(ctx.limits().max_compute_invocations_per_workgroup)
        .min(ctx.limits().max_compute_workgroup_size_x)
}

pub(crate) fn max_block(ctx: &Context) -> u32 {
    let mem = ctx.limits().max_compute_workgroup_storage_size as u64;
    let mut b = 1u64;
    while ((b + 1) * (b + 1) + b + 2) * 4 <= mem && b < 256 {
        b += 1;
    }
    b as u32
}

/// The block size to use, or [`Error::InvalidArgument`].
pub(crate) fn resolve_block(ctx: &Context, op: &'static str, block: Option<u32>) -> Result<u32> {
    let max = max_block(ctx);
    match block {
        None => Ok([64, 32, 16, 8]
            .into_iter()
            .find(|&b| b <= max)
            .unwrap_or(max)),
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
