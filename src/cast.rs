//! Packing f32 results into f16 tensors on adapters without SHADER_F16, and unpacking a
//! tensor's f16 values into the f32 staging first when an op leaves some of them untouched.

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
    record_pieces(s, src, dst, first, n, record_pack_piece)
}

/// Records `dst[0 .. n] = f32(src[first .. first + n])` (the inverse of [`record_pack_f16`]).
pub(crate) fn record_unpack_f16(
    s: &mut Schedule<'_>,
    src: &wgpu::Buffer,
    first: u64,
    n: u64,
    dst: &wgpu::Buffer,
) -> Result<()> {
    record_pieces(s, dst, src, first, n, record_unpack_piece)
}

type Piece = fn(&mut Schedule<'_>, &wgpu::Buffer, u64, &wgpu::Buffer, u64, u64) -> Result<()>;

/// Splits `n` elements between an f32 buffer and f16 `half` (from element `first`) into pieces.
fn record_pieces(
    s: &mut Schedule<'_>,
    f32s: &wgpu::Buffer,
    half: &wgpu::Buffer,
    first: u64,
    n: u64,
    piece_fn: Piece,
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
        piece_fn(s, f32s, i0 * 4, half, first + i0, m)?;
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

fn record_unpack_piece(
    s: &mut Schedule<'_>,
    dst: &wgpu::Buffer,
    dst_offset: u64,
    src: &wgpu::Buffer,
    first: u64,
    n: u64,
) -> Result<()> {
    let ctx = s.context();
    let wg = crate::sizes::workgroup_size(ctx);
    let p = ctx
        .pipelines
        .get(ctx, "cast", "unpack_f16", Storage::F32, &[("WG", wg)])?;
    let (bs, start) = Bind::elems(ctx, 3, src, 2, first, n);
    let prm = PackParams {
        start,
        n: n as u32,
        first_word: start / 2,
        words: (start as u64 + n).div_ceil(2) as u32 - start / 2,
    };
    let bd = Bind {
        slot: 4,
        buffer: dst,
        offset: dst_offset,
        size: n * 4,
    };
    s.dispatch(&p, &prm, &[bs, bd], n.div_ceil(wg as u64))
}
