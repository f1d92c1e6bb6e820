//! Packing f32 results into f16 tensors on adapters without SHADER_F16.

use crate::bind::Bind;
use crate::pipeline::Storage;
use crate::schedule::Schedule;
use crate::Result;

crate::uniform! {
    /// The `Params` uniform of shaders/cast.wgsl.
    pub(crate) struct PackParams {
        start: u32,
        n: u32,
        first_word: u32,
        words: u32,
    }
}

/// Records `dst[first .. first + n] = f16(src[0 .. n])`, where `dst` holds f16 pairs in u32 words,
/// in pieces whose `src` range fits a storage binding (a row split along L can be that long).
pub(crate) fn record_pack_f16(
    s: &mut Schedule<'_>,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
    first: u64,
    n: u64,
) -> Result<()> {
    let ctx = s.context();
    let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
    let limit = ctx.limits().max_storage_buffer_binding_size;
    // Piece starts stay aligned in `src`; a word two pieces share is read-modify-written in order.
    let quantum = (align / 4).max(1);
    let piece = ((limit - align) / 4 / quantum * quantum).max(quantum);
    let mut i0 = 0;
    while i0 < n {
        let m = piece.min(n - i0);
        record_pack_piece(s, src, i0 * 4, dst, first + i0, m)?;
        i0 += m;
    }
    Ok(())
}

fn record_pack_piece(
    s: &mut Schedule<'_>,
    src: &wgpu::Buffer,
    src_offset: u64,
    dst: &wgpu::Buffer,
    first: u64,
    n: u64,
) -> Result<()> {
    let ctx = s.context();
    let wg = crate::sizes::workgroup_size(ctx);
    let p = ctx
        .pipelines
        .get(ctx, "cast", "pack_f16", Storage::F32, &[("WG", wg)])?;
    let (bd, start) = Bind::elems(ctx, 2, dst, 2, first, n);
    let start = start as u64;
    let first_word = start / 2;
    let words = (start + n).div_ceil(2) - first_word;
    let prm = PackParams {
        start: start as u32,
        n: n as u32,
        first_word: first_word as u32,
        words: words as u32,
    };
    let bs = Bind {
        slot: 1,
        buffer: src,
        offset: src_offset,
        size: n * 4,
    };
    s.dispatch(&p, &prm, &[bs, bd], words.div_ceil(wg as u64))
}
