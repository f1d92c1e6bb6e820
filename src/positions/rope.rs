//! Rotary position embedding (RoPE; Su et al. 2021, *RoFormer*, arXiv 2104.09864, eq. 34) on the
//! GPU, with the context-extension scalings: linear position interpolation (Chen et al. 2023,
//! arXiv 2306.15595), NTK-aware base scaling (bloc97 2023), dynamic NTK, and YaRN (Peng et al.
//! 2023, arXiv 2309.00071, eqs. 17-23).
//!
//! Pair `i` of a row at integer position `m` turns by `m·θ_i`, `θ_i = base^(−2i/D)`. The
//! frequencies (after scaling) are computed on the host in f64; the GPU reduces `m·θ_i` modulo
//! one turn exactly in 64-bit fixed point, so large positions lose no accuracy (an f16 angle
//! would be off by whole radians past a few thousand tokens).

use crate::bind::{upload_u32, Bind};
use crate::driver::{self, Input, Pass, Plan, RowOp};
use crate::schedule::Schedule;
use crate::sizes::workgroup_size;
use crate::types::batch::{CuSeqlens, Layout};
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

crate::uniform! {
    /// The `Params` uniform of shaders/rope.wgsl.
    pub(crate) struct Params {
        rows: u32,
        len: u32,
        half: u32,
        x_off: u32,
        o_off: u32,
        total: u32,
        mscale: f32,
        hin: u32,
        seqs: u32,
        _pad1: u32,
        _pad2: u32,
        _pad3: u32,
    }
}

/// RoPE: `x: [B, H, L, D]` (any rank >= 2: `[.., L, D]`, D even; f32 or f16; or `[B, L, H, D]`
/// with `opts.seq_layout` blhd) -> the rotated x in its shape and dtype. Apply it to q and to k.
/// Angles never pass through f16. With `opts.cu_seqlens` (B = 1) positions restart per sequence.
///
/// Errors: [`Error::Shape`](crate::Error::Shape) for odd D or an empty dim, `positions` not of
/// length L, a blhd x not of rank 4, packed sequences with B > 1; `cu_seqlens` past L;
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a base <= 0, a factor < 1 or not finite, α >= β, NTK with
/// D = 2, an offset running past u32; [`Error::TooLarge`](crate::Error::TooLarge) when one row does not fit a binding.
pub fn rope<T: Element>(
    ctx: &Context,
    x: &Tensor<T>,
    positions: Positions<'_>,
    opts: &RopeOptions,
) -> Result<Tensor<T>> {
    driver::run(ctx, &Rope { x, positions, opts })
}

/// [`rope`] writing into an existing `out` of x's shape, one submission.
pub fn rope_into<T: Element>(
    ctx: &Context,
    x: &Tensor<T>,
    positions: Positions<'_>,
    out: &Tensor<T>,
    opts: &RopeOptions,
) -> Result<()> {
    driver::run_into(ctx, &Rope { x, positions, opts }, out)
}

/// Records RoPE into a [`Schedule`], split over (batch, head) rows to fit storage bindings.
pub fn record_rope<T: Element>(
    s: &mut Schedule<'_>,
    x: &Tensor<T>,
    positions: Positions<'_>,
    out: &Tensor<T>,
    opts: &RopeOptions,
) -> Result<()> {
    driver::record(s, &Rope { x, positions, opts }, out)
}

struct Rope<'a, T: Element> {
    x: &'a Tensor<T>,
    positions: Positions<'a>,
    opts: &'a RopeOptions,
}

/// L, D, heads between positions, the YaRN magnitude scale, positions, frequencies (turn words,
/// one row per packed sequence) and each position's sequence on the device.
struct RopeDims {
    len: u64,
    d: u64,
    hin: u64,
    mscale: f32,
    pos: wgpu::Buffer,
    freq: wgpu::Buffer,
    seq: Option<wgpu::Buffer>,
}

/// (driver rows, L, heads between positions, D) of x: rows of `[.., L, D]`, or batch entries of
/// `[B, L, H, D]`; packed sequences need B = 1 and a last offset within L.
fn rope_geom(shape: &[usize], opts: &RopeOptions) -> Result<(usize, usize, usize, usize)> {
    let bad_shape = |expected: &str| Error::Shape {
        op: OP,
        name: "x",
        expected: expected.into(),
        got: shape.to_vec(),
    };
    let (rows, len, hin, d) = match opts.seq_layout {
        Layout::Bhld => {
            let (rows, len, d) = check_rope(shape, opts)?;
            (rows, len, 1, d)
        }
        Layout::Blhd => {
            if shape.len() != 4 {
                return Err(bad_shape("[B, L, H, D] (rank 4) for the blhd layout"));
            }
            let (b, h, l, d) = Layout::Blhd.dims([shape[0], shape[1], shape[2], shape[3]]);
            check_rope(&[b, h, l, d], opts)?;
            (b, l, h, d)
        }
    };
    if let Some(cu) = &opts.cu_seqlens {
        if shape.len() == 4 && shape[0] != 1 {
            return Err(bad_shape("B = 1 with cu_seqlens (packed sequences)"));
        }
        let last = *cu.offsets().last().unwrap_or(&0) as usize;
        if last > len {
            return Err(Error::InvalidArgument {
                op: OP,
                name: "cu_seqlens",
                reason: format!("last offset {last} is past the packed length L = {len}"),
            });
        }
    }
    Ok((rows, len, hin, d))
}

/// Positions, frequency rows, magnitude scale, sequence of each position.
type Packed = (Vec<u32>, Vec<u32>, f64, Vec<u32>);

/// Positions, frequency rows (turn words), the magnitude scale and each position's sequence
/// (u32::MAX past the last offset) for packed sequences; each sequence is its own call.
fn packed(
    cu: &CuSeqlens,
    positions: Positions<'_>,
    len: usize,
    d: usize,
    opts: &RopeOptions,
) -> Result<Packed> {
    let all = positions.resolve(len)?;
    let mut pos = all.clone();
    let mut seq = vec![u32::MAX; len];
    let mut freq = Vec::new();
    let mut mscale = 1.0;
    for s in 0..cu.count() {
        let r = cu.range(s);
        for t in r.clone() {
            seq[t] = s as u32;
            if let Positions::Offset(o) = positions {
                pos[t] = o + (t - r.start) as u32;
            }
        }
        let max_pos = r.clone().map(|t| pos[t]).max().unwrap_or(0);
        let (theta, m) = frequencies(d, max_pos, opts);
        // The magnitude scale depends on the scaling's factor only, the same for every sequence.
        mscale = m;
        freq.extend(turn_words(&theta));
    }
    Ok((pos, freq, mscale, seq))
}

impl<T: Element> RowOp for Rope<'_, T> {
    type T = T;
    type Dims = RopeDims;
    const NAME: &'static str = OP;

    fn plan(&self, ctx: &Context) -> Result<(RopeDims, Plan)> {
        let (rows, len, hin, d) = rope_geom(self.x.shape(), self.opts)?;
        let cu = self.opts.cu_seqlens.as_ref();
        let (pos, freq, mscale, seq) = match &self.opts.cu_seqlens {
            None => {
                let pos = self.positions.resolve(len)?;
                let max_pos = pos.iter().copied().max().unwrap_or(0);
                let (theta, mscale) = frequencies(d, max_pos, self.opts);
                (pos, turn_words(&theta), mscale, None)
            }
            Some(cu) => {
                let (pos, freq, mscale, seq) = packed(cu, self.positions, len, d, self.opts)?;
                (pos, freq, mscale, Some(seq))
            }
        };
        let (l, d, h) = (len as u64, d as u64, hin as u64);
        let es = size_of::<T>() as u64;
        let row = l * h * d;
        let mut plan = Plan::new(self.x.shape().to_vec(), rows as u64, row).bytes("x", row * es);
        plan.partial_out = cu.is_some();
        let dims = RopeDims {
            len: l,
            d,
            hin: h,
            mscale: mscale as f32,
            pos: upload_u32(ctx, &pos),
            freq: upload_u32(ctx, &freq),
            seq: seq.map(|s| upload_u32(ctx, &s)),
        };
        Ok((dims, plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        vec![Input::of("x", self.x)]
    }

    fn record_rows(&self, s: &mut Schedule<'_>, rd: &RopeDims, p: &Pass<'_>) -> Result<()> {
        let ctx = s.context();
        let wg = workgroup_size(ctx);
        let layout = match self.opts.layout {
            RopeLayout::Interleaved => 0,
            RopeLayout::HalfSplit => 1,
        };
        let consts = [("WG", wg), ("LAYOUT", layout)];
        let pipeline = ctx
            .pipelines
            .get(ctx, "rope", "rotate", p.storage, &consts)?;
        let (l, d, nr, es) = (rd.len, rd.d, p.nr, size_of::<T>() as u64);
        let row = l * rd.hin * d;
        let (bx, x_off) = Bind::elems(ctx, 1, self.x.buffer(), es, p.r0 * row, nr * row);
        let (bo, o_off) = p.out.bind(ctx, 4, nr * row);
        let total = nr * row / 2;
        let prm = Params {
            rows: nr as u32,
            len: l as u32,
            half: (d / 2) as u32,
            x_off,
            o_off,
            total: total as u32,
            mscale: rd.mscale,
            hin: rd.hin as u32,
            seqs: rd.seq.is_some() as u32,
            _pad1: 0,
            _pad2: 0,
            _pad3: 0,
        };
        // Without packed sequences `seq` is never read; positions stand in for its binding.
        let seq = Bind::all(5, rd.seq.as_ref().unwrap_or(&rd.pos));
        let binds = [bx, Bind::all(2, &rd.pos), Bind::all(3, &rd.freq), bo, seq];
        s.dispatch(&pipeline, &prm, &binds, total.div_ceil(wg as u64))
    }
}
