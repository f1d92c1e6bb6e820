//! Rotary position embedding (RoPE; Su et al. 2021, *RoFormer*, arXiv 2104.09864, eq. 34) on the
//! GPU, with the context-extension scalings: linear position interpolation (Chen et al. 2023,
//! arXiv 2306.15595), NTK-aware base scaling (bloc97 2023), dynamic NTK, and YaRN (Peng et al.
//! 2023, arXiv 2309.00071, eqs. 17-23).
//!
//! Pair `i` of a row at integer position `m` turns by `m·θ_i`, `θ_i = base^(−2i/D)`. The
//! frequencies (after scaling) are computed on the host in f64; the GPU reduces `m·θ_i` modulo
//! one turn exactly in 64-bit fixed point, so large positions lose no accuracy (an f16 angle
//! would be off by whole radians past a few thousand tokens).

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

use crate::bind::{scratch, Bind};
use crate::cast::record_pack_f16;
use crate::pipeline::Storage;
use crate::schedule::{rows_per_pass, Schedule};
use crate::sizes::workgroup_size;
pub use crate::types::positions::{
    check_rope, frequencies, Positions, RopeLayout, RopeOptions, RopeScaling,
};
use crate::{Context, Element, Error, Result, Tensor};

const OP: &str = "rope";

/// θ/2π as a 64-bit fraction of a turn, split (hi, lo) for the shader.
fn turn_words(theta: &[f64]) -> Vec<u32> {
    theta
        .iter()
        .flat_map(|&t| {
            let turns = t / (2.0 * std::f64::consts::PI);
            let frac = turns - turns.floor();
            let w = (frac * 18_446_744_073_709_551_616.0) as u64;
            [(w >> 32) as u32, w as u32]
        })
        .collect()
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    len: u32,
    half: u32,
    x_off: u32,
    o_off: u32,
    total: u32,
    mscale: f32,
    _pad: u32,
}

/// RoPE: `x: [B, H, L, D]` (any rank >= 2: `[.., L, D]`, D even; f32 or f16) -> the rotated
/// `[.., L, D]` in x's dtype. Apply it to q and to k. Angles never pass through f16.
///
/// Errors: [`Error::Shape`] for odd D or an empty dim, or `positions` not of length L;
/// [`Error::InvalidArgument`] for a base <= 0, a factor < 1 or not finite, α >= β, NTK with
/// D = 2, an offset running past u32; [`Error::TooLarge`] when one row does not fit a binding.
pub fn rope<T: Element>(
    ctx: &Context,
    x: &Tensor<T>,
    positions: Positions<'_>,
    opts: &RopeOptions,
) -> Result<Tensor<T>> {
    check_rope(x.shape(), opts)?;
    let out = Tensor::empty(ctx, x.shape())?;
    rope_into(ctx, x, positions, &out, opts)?;
    Ok(out)
}

/// [`rope`] writing into an existing `out` of x's shape, one submission.
pub fn rope_into<T: Element>(
    ctx: &Context,
    x: &Tensor<T>,
    positions: Positions<'_>,
    out: &Tensor<T>,
    opts: &RopeOptions,
) -> Result<()> {
    crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        record_rope(&mut s, x, positions, out, opts)?;
        s.submit();
        Ok(())
    })
}

/// Records RoPE into a [`Schedule`], split over (batch, head) rows to fit storage bindings.
pub fn record_rope<T: Element>(
    s: &mut Schedule<'_>,
    x: &Tensor<T>,
    positions: Positions<'_>,
    out: &Tensor<T>,
    opts: &RopeOptions,
) -> Result<()> {
    let ctx = s.context();
    let (rows, len, d) = check_rope(x.shape(), opts)?;
    let pos = positions.resolve(len)?;
    if out.shape() != x.shape() {
        return Err(Error::Shape {
            op: OP,
            name: "out",
            expected: format!("{:?} (the shape of x)", x.shape()),
            got: out.shape().to_vec(),
        });
    }
    if out.buffer() == x.buffer() {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "out",
            reason: "aliases input `x`".into(),
        });
    }
    let max_pos = pos.iter().copied().max().unwrap_or(0);
    let (theta, mscale) = frequencies(d, max_pos, opts);
    let storage = Storage::for_dtype(ctx, T::DTYPE);
    let wg = workgroup_size(ctx);
    let layout = match opts.layout {
        RopeLayout::Interleaved => 0,
        RopeLayout::HalfSplit => 1,
    };
    let pipeline = ctx.pipelines.get(
        ctx,
        "rope",
        "rotate",
        storage,
        &[("WG", wg), ("LAYOUT", layout)],
    )?;
    let init = |label, data: &[u32]| {
        ctx.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(data),
                usage: wgpu::BufferUsages::STORAGE,
            })
    };
    let pos_buf = init("longseq rope positions", &pos);
    let freq_buf = init("longseq rope frequencies", &turn_words(&theta));
    let (l, d) = (len as u64, d as u64);
    let es = size_of::<T>() as u64;
    let ob = storage.out_elem_bytes();
    let per = rows_per_pass(ctx, OP, &[("x", l * d * es), ("o", l * d * ob)], rows)? as u64;
    let packed_out =
        (storage == Storage::F16Packed).then(|| scratch(ctx, per.min(rows as u64) * l * d * 4));
    let whole = |slot, buffer| Bind {
        slot,
        buffer,
        offset: 0,
        size: buffer.size(),
    };
    let mut r0 = 0u64;
    while r0 < rows as u64 {
        let nr = per.min(rows as u64 - r0);
        let (bx, x_off) = Bind::elems(ctx, 1, x.buffer(), es, r0 * l * d, nr * l * d);
        let (bo, o_off) = match &packed_out {
            Some(buf) => (
                Bind {
                    slot: 4,
                    buffer: buf,
                    offset: 0,
                    size: nr * l * d * 4,
                },
                0,
            ),
            None => Bind::elems(ctx, 4, out.buffer(), es, r0 * l * d, nr * l * d),
        };
        let total = nr * l * (d / 2);
        let prm = Params {
            rows: nr as u32,
            len: l as u32,
            half: (d / 2) as u32,
            x_off,
            o_off,
            total: total as u32,
            mscale: mscale as f32,
            _pad: 0,
        };
        let binds = [bx, whole(2, &pos_buf), whole(3, &freq_buf), bo];
        s.dispatch(&pipeline, &prm, &binds, total.div_ceil(wg as u64))?;
        if let Some(buf) = &packed_out {
            record_pack_f16(s, buf, out.buffer(), r0 * l * d, nr * l * d)?;
        }
        r0 += nr;
    }
    Ok(())
}
