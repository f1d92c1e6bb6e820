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
pub use crate::types::positions::{
    check_rope, frequencies, Positions, RopeLayout, RopeOptions, RopeScaling,
};
use crate::{Context, Element, Result, Tensor};

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
        _pad: u32,
    }
}

/// RoPE: `x: [B, H, L, D]` (any rank >= 2: `[.., L, D]`, D even; f32 or f16) -> the rotated
/// `[.., L, D]` in x's dtype. Apply it to q and to k. Angles never pass through f16.
///
/// Errors: [`Error::Shape`](crate::Error::Shape) for odd D or an empty dim, or `positions` not of length L;
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

/// L, D, the YaRN magnitude scale, positions and frequencies (turn words) on the device.
struct RopeDims {
    len: u64,
    d: u64,
    mscale: f32,
    pos: wgpu::Buffer,
    freq: wgpu::Buffer,
}

impl<T: Element> RowOp for Rope<'_, T> {
    type T = T;
    type Dims = RopeDims;
    const NAME: &'static str = OP;

    fn plan(&self, ctx: &Context) -> Result<(RopeDims, Plan)> {
        let (rows, len, d) = check_rope(self.x.shape(), self.opts)?;
        let pos = self.positions.resolve(len)?;
        let max_pos = pos.iter().copied().max().unwrap_or(0);
        let (theta, mscale) = frequencies(d, max_pos, self.opts);
        let (l, d) = (len as u64, d as u64);
        let es = size_of::<T>() as u64;
        let plan = Plan::new(self.x.shape().to_vec(), rows as u64, l * d).bytes("x", l * d * es);
        let dims = RopeDims {
            len: l,
            d,
            mscale: mscale as f32,
            pos: upload_u32(ctx, &pos),
            freq: upload_u32(ctx, &turn_words(&theta)),
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
        let (bx, x_off) = Bind::elems(ctx, 1, self.x.buffer(), es, p.r0 * l * d, nr * l * d);
        let (bo, o_off) = p.out.bind(ctx, 4, nr * l * d);
        let total = nr * l * (d / 2);
        let prm = Params {
            rows: nr as u32,
            len: l as u32,
            half: (d / 2) as u32,
            x_off,
            o_off,
            total: total as u32,
            mscale: rd.mscale,
            _pad: 0,
        };
        let binds = [bx, Bind::all(2, &rd.pos), Bind::all(3, &rd.freq), bo];
        s.dispatch(&pipeline, &prm, &binds, total.div_ceil(wg as u64))
    }
}
