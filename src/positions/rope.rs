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

use crate::attention::linear::workgroup_size;
use crate::cast::record_pack_f16;
use crate::pipeline::Storage;
use crate::schedule::{rows_per_pass, scratch, Bind, Schedule};
use crate::{Context, Element, Error, Result, Tensor};

const OP: &str = "rope";

/// Which elements of a row form the rotated pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RopeLayout {
    /// `(x[2i], x[2i+1])`, as in RoFormer and Meta's LLaMA reference code.
    #[default]
    Interleaved,
    /// `(x[i], x[i + D/2])`, GPT-NeoX / Hugging Face `rotate_half`.
    HalfSplit,
}

/// How the rotation is stretched for sequences longer than the trained length.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum RopeScaling {
    /// `θ_i = base^(−2i/D)`.
    #[default]
    None,
    /// Position interpolation: position `m` becomes `m / factor`.
    Linear { factor: f64 },
    /// NTK-aware: `base' = base · factor^(D/(D−2))` (needs D > 2).
    Ntk { factor: f64 },
    /// NTK-aware with the factor taken from the current length `n` (largest position + 1):
    /// `s = max(1, factor·n/original_length − (factor − 1))`; `factor = 1` gives `n / L_train`.
    DynamicNtk { factor: f64, original_length: usize },
    /// YaRN: with `r_i = original_length / λ_i` (`λ_i = 2π/θ_i`, the wavelength) and the ramp
    /// `γ_i = clamp((r_i − α)/(β − α), 0, 1)`, `θ'_i = (1 − γ_i)·θ_i/factor + γ_i·θ_i`; the
    /// output is multiplied by `0.1·ln(factor) + 1` (√(1/t), applied to q and to k). The paper
    /// uses α = 1, β = 32 for LLaMA.
    Yarn {
        factor: f64,
        original_length: usize,
        alpha: f64,
        beta: f64,
    },
}

/// Options for [`rope`] and the CPU reference [`crate::reference::positions::rope`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeOptions {
    /// Base of the frequencies (default 10 000).
    pub base: f64,
    pub layout: RopeLayout,
    pub scaling: RopeScaling,
}

impl Default for RopeOptions {
    fn default() -> Self {
        Self {
            base: 10_000.0,
            layout: RopeLayout::Interleaved,
            scaling: RopeScaling::None,
        }
    }
}

/// The position of each of the `L` rows of a sequence.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Positions<'a> {
    /// Row `l` is at position `offset + l` (an offset > 0 for a KV-cache continuation).
    Offset(u32),
    /// Row `l` is at position `p[l]`; `p: [L]`.
    Explicit(&'a [u32]),
}

impl Positions<'_> {
    /// The `L` positions, checked (length, and `offset + L − 1` within u32).
    pub fn resolve(&self, len: usize) -> Result<Vec<u32>> {
        match *self {
            Positions::Offset(o) => {
                if o as u64 + len as u64 > u32::MAX as u64 + 1 {
                    return Err(Error::InvalidArgument {
                        op: OP,
                        name: "offset",
                        reason: format!("{o} + L = {len} passes u32::MAX"),
                    });
                }
                Ok((0..len as u32).map(|l| o + l).collect())
            }
            Positions::Explicit(p) => {
                if p.len() != len {
                    return Err(Error::Shape {
                        op: OP,
                        name: "positions",
                        expected: format!("[{len}] (L of x)"),
                        got: vec![p.len()],
                    });
                }
                Ok(p.to_vec())
            }
        }
    }
}

/// Checks `x: [.., L, D]` (rank >= 2, D even) and the options; returns (rows, L, D).
pub fn check_rope(shape: &[usize], opts: &RopeOptions) -> Result<(usize, usize, usize)> {
    if shape.len() < 2 || shape.contains(&0) {
        return Err(Error::Shape {
            op: OP,
            name: "x",
            expected: "[.., L, D] with every dim >= 1".into(),
            got: shape.to_vec(),
        });
    }
    let (l, d) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    if d % 2 != 0 {
        return Err(Error::Shape {
            op: OP,
            name: "x",
            expected: "[.., L, D] with D even (RoPE rotates pairs)".into(),
            got: shape.to_vec(),
        });
    }
    fn bad<R>(name: &'static str, reason: String) -> Result<R> {
        Err(Error::InvalidArgument {
            op: OP,
            name,
            reason,
        })
    }
    if !(opts.base.is_finite() && opts.base > 0.0) {
        return bad("base", format!("{} is not a finite number > 0", opts.base));
    }
    let check_factor = |f: f64| -> Result<()> {
        if !(f.is_finite() && f >= 1.0) {
            return bad("factor", format!("{f} is not a finite number >= 1"));
        }
        Ok(())
    };
    let check_len = |n: usize| -> Result<()> {
        if n == 0 {
            return bad("original_length", "must be >= 1".into());
        }
        Ok(())
    };
    match opts.scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => check_factor(factor)?,
        RopeScaling::Ntk { factor } | RopeScaling::DynamicNtk { factor, .. } => {
            check_factor(factor)?;
            if let RopeScaling::DynamicNtk {
                original_length, ..
            } = opts.scaling
            {
                check_len(original_length)?;
            }
            if d <= 2 {
                return bad(
                    "scaling",
                    format!("NTK scaling needs D > 2 (the exponent is D/(D−2)); D = {d}"),
                );
            }
        }
        RopeScaling::Yarn {
            factor,
            original_length,
            alpha,
            beta,
        } => {
            check_factor(factor)?;
            check_len(original_length)?;
            if !(alpha.is_finite() && beta.is_finite() && 0.0 <= alpha && alpha < beta) {
                return bad(
                    "alpha, beta",
                    format!("need 0 <= alpha < beta, finite; got {alpha}, {beta}"),
                );
            }
        }
    }
    Ok((shape[..shape.len() - 2].iter().product(), l, d))
}

/// The rotation frequencies `θ'_i` (rad per position, i < D/2) after scaling, for a sequence
/// whose largest position is `max_pos`, and the output scale (YaRN's `0.1·ln s + 1`, else 1).
/// Options must have passed [`check_rope`].
pub fn frequencies(d: usize, max_pos: u32, opts: &RopeOptions) -> (Vec<f64>, f64) {
    let theta = |base: f64| -> Vec<f64> {
        (0..d / 2)
            .map(|i| base.powf(-2.0 * i as f64 / d as f64))
            .collect()
    };
    let ntk_base = |s: f64| opts.base * s.powf(d as f64 / (d as f64 - 2.0));
    match opts.scaling {
        RopeScaling::None => (theta(opts.base), 1.0),
        RopeScaling::Linear { factor } => {
            (theta(opts.base).iter().map(|t| t / factor).collect(), 1.0)
        }
        RopeScaling::Ntk { factor } => (theta(ntk_base(factor)), 1.0),
        RopeScaling::DynamicNtk {
            factor,
            original_length,
        } => {
            let n = max_pos as f64 + 1.0;
            let s = (factor * n / original_length as f64 - (factor - 1.0)).max(1.0);
            (theta(ntk_base(s)), 1.0)
        }
        RopeScaling::Yarn {
            factor,
            original_length,
            alpha,
            beta,
        } => {
            let f = theta(opts.base)
                .into_iter()
                .map(|t| {
                    let r = original_length as f64 * t / (2.0 * std::f64::consts::PI);
                    let g = ((r - alpha) / (beta - alpha)).clamp(0.0, 1.0);
                    (1.0 - g) * t / factor + g * t
                })
                .collect();
            (f, 0.1 * factor.ln() + 1.0)
        }
    }
}

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
