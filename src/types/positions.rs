//! Shapes, options and host-side math for the position ops (RoPE, embedding), shared by the GPU
//! ops ([`crate::positions`]) and the CPU reference ([`crate::reference::positions`]).

use super::batch::{CuSeqlens, Layout};
use crate::{Error, Result};

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
    Linear {
        /// The interpolation factor s >= 1.
        factor: f64,
    },
    /// NTK-aware: `base' = base · factor^(D/(D−2))` (needs D > 2).
    Ntk {
        /// The context-extension factor s >= 1.
        factor: f64,
    },
    /// NTK-aware with the factor taken from the current length `n` (largest position + 1):
    /// `s = max(1, factor·n/original_length − (factor − 1))`; `factor = 1` gives `n / L_train`.
    DynamicNtk {
        /// The context-extension factor >= 1.
        factor: f64,
        /// The trained context length.
        original_length: usize,
    },
    /// YaRN: with `r_i = original_length / λ_i` (`λ_i = 2π/θ_i`, the wavelength) and the ramp
    /// `γ_i = clamp((r_i − α)/(β − α), 0, 1)`, `θ'_i = (1 − γ_i)·θ_i/factor + γ_i·θ_i`; the
    /// output is multiplied by `0.1·ln(factor) + 1` (√(1/t), applied to q and to k). The paper
    /// uses α = 1, β = 32 for LLaMA.
    Yarn {
        /// Context-extension factor s > 1.
        factor: f64,
        /// The trained context length.
        original_length: usize,
        /// Ramp start α (in rotations over the trained length).
        alpha: f64,
        /// Ramp end β > α.
        beta: f64,
    },
}

/// Options for [`rope`](fn@crate::positions::rope) and the CPU reference [`crate::reference::positions::rope`](fn@crate::reference::positions::rope).
#[derive(Clone, Debug, PartialEq)]
pub struct RopeOptions {
    /// Base of the frequencies (default 10 000).
    pub base: f64,
    /// Pair layout of the rotation.
    pub layout: RopeLayout,
    /// Context-extension scaling of the frequencies.
    pub scaling: RopeScaling,
    /// Memory order of a rank-4 x: `[B, H, L, D]` (default) or `[B, L, H, D]` (named apart
    /// from `layout`, the pair layout).
    pub seq_layout: Layout,
    /// Packed variable-length sequences (B = 1): positions restart at each sequence
    /// (`Positions::Offset(o)` puts token `t` of sequence `[s0, s1)` at `o + t − s0`; explicit
    /// positions are taken as given), the scaling sees each sequence's own positions (dynamic
    /// NTK), and tokens past the last offset are left untouched.
    pub cu_seqlens: Option<CuSeqlens>,
}

impl Default for RopeOptions {
    fn default() -> Self {
        Self {
            base: 10_000.0,
            layout: RopeLayout::Interleaved,
            scaling: RopeScaling::None,
            seq_layout: Layout::Bhld,
            cu_seqlens: None,
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
                        op: "rope",
                        name: "offset",
                        reason: format!("{o} + L = {len} passes u32::MAX"),
                    });
                }
                Ok((0..len as u32).map(|l| o + l).collect())
            }
            Positions::Explicit(p) => {
                if p.len() != len {
                    return Err(Error::Shape {
                        op: "rope",
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
            op: "rope",
            name: "x",
            expected: "[.., L, D] with every dim >= 1".into(),
            got: shape.to_vec(),
        });
    }
    let (l, d) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    if d % 2 != 0 {
        return Err(Error::Shape {
            op: "rope",
            name: "x",
            expected: "[.., L, D] with D even (RoPE rotates pairs)".into(),
            got: shape.to_vec(),
        });
    }
    fn bad<R>(name: &'static str, reason: String) -> Result<R> {
        Err(Error::InvalidArgument {
            op: "rope",
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

/// Checks `table: [V, D]` and `ids` (shape `ids_shape`, `[L]` or `[B, L]`, every id < V) and
/// returns the output shape `ids_shape + [D]`. The first id out of range is an
/// [`Error::IndexOutOfRange`] naming its position.
pub fn check_embedding(table: &[usize], ids: &[u32], ids_shape: &[usize]) -> Result<Vec<usize>> {
    if table.len() != 2 || table.contains(&0) {
        return Err(Error::Shape {
            op: "embedding",
            name: "table",
            expected: "[V, D] with V, D >= 1".into(),
            got: table.to_vec(),
        });
    }
    if !(ids_shape.len() == 1 || ids_shape.len() == 2) || ids_shape.contains(&0) {
        return Err(Error::Shape {
            op: "embedding",
            name: "ids",
            expected: "[L] or [B, L] with every dim >= 1".into(),
            got: ids_shape.to_vec(),
        });
    }
    let n: usize = ids_shape.iter().product();
    if ids.len() != n {
        return Err(Error::DataLength {
            shape: ids_shape.to_vec(),
            expected: n,
            got: ids.len(),
        });
    }
    let v = table[0];
    if let Some(i) = ids.iter().position(|&id| id as u64 >= v as u64) {
        let l = *ids_shape.last().unwrap();
        let position = if ids_shape.len() == 2 {
            vec![i / l, i % l]
        } else {
            vec![i]
        };
        return Err(Error::IndexOutOfRange {
            op: "embedding",
            name: "ids",
            position,
            index: ids[i] as u64,
            bound: v as u64,
        });
    }
    let mut out = ids_shape.to_vec();
    out.push(table[1]);
    Ok(out)
}

/// The paths that read plain `[.., L, D]` rows (the f32 CPU path, the classic reference) take
/// neither a blhd layout nor packed sequences.
pub(crate) fn check_plain_rope(op: &'static str, opts: &RopeOptions) -> Result<()> {
    if opts.seq_layout != Layout::Bhld || opts.cu_seqlens.is_some() {
        let name = if opts.cu_seqlens.is_some() {
            "cu_seqlens"
        } else {
            "seq_layout"
        };
        return Err(Error::InvalidArgument {
            op,
            name,
            reason: "blhd layouts and packed sequences are not supported on this path (use the \
                     GPU op, or reference::positions::rope_batch)"
                .into(),
        });
    }
    Ok(())
}
