//! CPU reference for RoPE and its scalings, straight from the papers' equations in f64
//! (RoFormer eq. 34; PI, Chen et al. 2023 eq. 3; NTK-aware base; YaRN, Peng et al. 2023 eqs. 17-23).

use std::f64::consts::PI;

use crate::types::batch::Layout;
use crate::types::positions::{check_rope, Positions, RopeLayout, RopeOptions, RopeScaling};
use crate::{Element, Error, Result};

/// The angle of pair `i` at position `m` in a head of size `d`, for a sequence whose current
/// length is `n`, and the output scale.
fn angle(m: f64, i: usize, d: usize, n: f64, o: &RopeOptions) -> (f64, f64) {
    let d_f = d as f64;
    let theta = |base: f64| base.powf(-2.0 * i as f64 / d_f);
    match o.scaling {
        RopeScaling::None => (m * theta(o.base), 1.0),
        // PI: f'(x, m) = f(x, m·L/L'), i.e. m / s.
        RopeScaling::Linear { factor } => (m / factor * theta(o.base), 1.0),
        RopeScaling::Ntk { factor } => (m * theta(o.base * factor.powf(d_f / (d_f - 2.0))), 1.0),
        RopeScaling::DynamicNtk {
            factor,
            original_length,
        } => {
            let s = f64::max(1.0, factor * n / original_length as f64 - (factor - 1.0));
            (m * theta(o.base * s.powf(d_f / (d_f - 2.0))), 1.0)
        }
        RopeScaling::Yarn {
            factor,
            original_length,
            alpha,
            beta,
        } => {
            let th = theta(o.base);
            let wavelength = 2.0 * PI / th;
            let r = original_length as f64 / wavelength;
            let gamma = if r < alpha {
                0.0
            } else if r > beta {
                1.0
            } else {
                (r - alpha) / (beta - alpha)
            };
            let h = (1.0 - gamma) * th / factor + gamma * th;
            (m * h, 0.1 * factor.ln() + 1.0)
        }
    }
}

/// RoPE of `x: [.., L, D]` (shape `shape`) at `positions`, in f64. Same errors as
/// [`crate::positions::rope()`].
pub fn rope<T: Element>(
    x: &[T],
    shape: &[usize],
    positions: Positions<'_>,
    opts: &RopeOptions,
) -> Result<Vec<f64>> {
    let (rows, l, d) = check_rope(shape, opts)?;
    crate::types::positions::check_plain_rope("reference::rope", opts)?;
    if x.len() != rows * l * d {
        return Err(Error::DataLength {
            shape: shape.to_vec(),
            expected: rows * l * d,
            got: x.len(),
        });
    }
    let pos = positions.resolve(l)?;
    let n = pos.iter().map(|&p| p as f64 + 1.0).fold(0.0, f64::max);
    let mut out = vec![0.0; x.len()];
    for r in 0..rows {
        for (t, &m) in pos.iter().enumerate() {
            let base = (r * l + t) * d;
            for i in 0..d / 2 {
                let (a_idx, b_idx) = match opts.layout {
                    RopeLayout::Interleaved => (2 * i, 2 * i + 1),
                    RopeLayout::HalfSplit => (i, i + d / 2),
                };
                let (phi, scale) = angle(m as f64, i, d, n, opts);
                let (a, b) = (x[base + a_idx].to_f64(), x[base + b_idx].to_f64());
                out[base + a_idx] = scale * (a * phi.cos() - b * phi.sin());
                out[base + b_idx] = scale * (a * phi.sin() + b * phi.cos());
            }
        }
    }
    Ok(out)
}

/// RoPE over real-world batches from the per-sequence definition: `x` in `opts.seq_layout`
/// (`[B, L, H, D]` when blhd), and with `opts.cu_seqlens` each packed sequence rotated as its own
/// call of [`rope`] (positions restart: `Offset(o)` puts its first token at `o`; explicit
/// positions are sliced). Tokens past the last offset are NaN here (the op leaves them untouched).
pub fn rope_batch<T: Element>(
    x: &[T],
    shape: &[usize],
    positions: Positions<'_>,
    opts: &RopeOptions,
) -> Result<Vec<f64>> {
    let plain = RopeOptions {
        seq_layout: Layout::Bhld,
        cu_seqlens: None,
        ..opts.clone()
    };
    if opts.seq_layout == Layout::Bhld && opts.cu_seqlens.is_none() {
        return rope(x, shape, positions, &plain);
    }
    let (b, h, l, d) = match (opts.seq_layout, shape.len()) {
        (Layout::Blhd, 4) => Layout::Blhd.dims([shape[0], shape[1], shape[2], shape[3]]),
        (Layout::Bhld, n) if n >= 2 => {
            let (rows, l, d) = check_rope(shape, &plain)?;
            (1, rows, l, d)
        }
        _ => {
            return Err(Error::Shape {
                op: "reference::rope_batch",
                name: "x",
                expected: "[B, L, H, D] for blhd, [.., L, D] for bhld".into(),
                got: shape.to_vec(),
            })
        }
    };
    if x.len() != b * h * l * d {
        return Err(Error::DataLength {
            shape: shape.to_vec(),
            expected: b * h * l * d,
            got: x.len(),
        });
    }
    let all = positions.resolve(l)?;
    let st = opts.seq_layout.strides(h, l, d);
    let seqs: Vec<std::ops::Range<usize>> = match &opts.cu_seqlens {
        Some(c) => (0..c.count()).map(|i| c.range(i)).collect(),
        None => std::iter::once(0..l).collect(),
    };
    let mut out = vec![f64::NAN; x.len()];
    for r in seqs.into_iter().filter(|r| !r.is_empty()) {
        let n = r.len();
        let mut sub = Vec::with_capacity(b * h * n * d);
        for bi in 0..b {
            for hi in 0..h {
                for t in r.clone() {
                    sub.extend((0..d).map(|e| x[st.index(bi, hi, t, e)]));
                }
            }
        }
        let pos = match positions {
            Positions::Offset(o) => Positions::Offset(o),
            Positions::Explicit(_) => Positions::Explicit(&all[r.clone()]),
        };
        let y = rope(&sub, &[b * h, n, d], pos, &plain)?;
        let mut it = y.into_iter();
        for bi in 0..b {
            for hi in 0..h {
                for t in r.clone() {
                    for e in 0..d {
                        out[st.index(bi, hi, t, e)] = it.next().unwrap_or(f64::NAN);
                    }
                }
            }
        }
    }
    Ok(out)
}
