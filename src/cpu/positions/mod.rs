//! Positions on the CPU path: embedding lookup and rotary embeddings (RoPE with its scalings).
//! Same shapes, options and errors as [`crate::positions`]; host slices in and out.

use rayon::prelude::*;

use crate::cpu::{check_len, load, store};
use crate::types::positions::{check_embedding, check_rope, frequencies};
pub use crate::types::positions::{Positions, RopeLayout, RopeOptions};
use crate::{Element, Result};

/// Embedding lookup: `table: [V, D]`, `ids: [L]` or `[B, L]` (shape `ids_shape`) ->
/// `x: [.., L, D]` in the table's dtype, `x[b, l, :] = table[ids[b, l], :]` (a copy, exact).
/// Errors: as [`crate::positions::embedding()`], plus [`crate::Error::DataLength`] when
/// `table` does not hold `table_shape`.
pub fn embedding<T: Element>(
    table: &[T],
    table_shape: &[usize],
    ids: &[u32],
    ids_shape: &[usize],
) -> Result<Vec<T>> {
    let shape = check_embedding(table_shape, ids, ids_shape)?;
    let mut out = vec![T::from_f64(0.0); shape.iter().product()];
    embedding_into(table, table_shape, ids, ids_shape, &mut out)?;
    Ok(out)
}

/// [`embedding`] writing into `out: [.., L, D]`.
pub fn embedding_into<T: Element>(
    table: &[T],
    table_shape: &[usize],
    ids: &[u32],
    ids_shape: &[usize],
    out: &mut [T],
) -> Result<()> {
    let shape = check_embedding(table_shape, ids, ids_shape)?;
    check_len(table, table_shape)?;
    check_len(out, &shape)?;
    let d = table_shape[1];
    out.par_chunks_mut(d)
        .zip(ids.par_iter())
        .for_each(|(row, &id)| row.copy_from_slice(&table[id as usize * d..][..d]));
    Ok(())
}

/// RoPE: `x: [.., L, D]` (shape `shape`, D even) -> the rotated `[.., L, D]` in x's dtype.
/// The angles `m·θ_i` are formed in f64 and reduced to one turn before cos/sin (a large position
/// times θ in f32 would be off by whole radians); the rotation itself is f32.
/// Errors: as [`crate::positions::rope()`], plus [`crate::Error::DataLength`].
pub fn rope<T: Element>(
    x: &[T],
    shape: &[usize],
    positions: Positions<'_>,
    opts: &RopeOptions,
) -> Result<Vec<T>> {
    let mut out = vec![T::from_f64(0.0); x.len()];
    rope_into(x, shape, positions, &mut out, opts)?;
    Ok(out)
}

/// [`rope`] writing into `out` of x's shape.
pub fn rope_into<T: Element>(
    x: &[T],
    shape: &[usize],
    positions: Positions<'_>,
    out: &mut [T],
    opts: &RopeOptions,
) -> Result<()> {
    let (_, len, d) = check_rope(shape, opts)?;
    crate::types::positions::check_plain_rope("cpu::rope", opts)?;
    check_len(x, shape)?;
    check_len(out, shape)?;
    let pos = positions.resolve(len)?;
    let max_pos = pos.iter().copied().max().unwrap_or(0);
    let (theta, mscale) = frequencies(d, max_pos, opts);
    let half = d / 2;
    // cos and sin of every (position, pair), times YaRN's magnitude scale: [L, D/2] each.
    let (cos, sin): (Vec<f32>, Vec<f32>) = pos
        .par_iter()
        .flat_map_iter(|&m| {
            theta.iter().map(move |&t| {
                let turns = m as f64 * t / std::f64::consts::TAU;
                let (s, c) = ((turns - turns.round()) * std::f64::consts::TAU).sin_cos();
                ((mscale * c) as f32, (mscale * s) as f32)
            })
        })
        .unzip();
    let x = load(x);
    out.par_chunks_mut(len * d)
        .zip(x.par_chunks(len * d))
        .for_each(|(o, xr)| {
            let mut buf = vec![0.0f32; d];
            for t in 0..len {
                let (c, s) = (&cos[t * half..][..half], &sin[t * half..][..half]);
                let xt = &xr[t * d..][..d];
                match opts.layout {
                    RopeLayout::Interleaved => {
                        for i in 0..half {
                            let (a, b) = (xt[2 * i], xt[2 * i + 1]);
                            buf[2 * i] = a * c[i] - b * s[i];
                            buf[2 * i + 1] = a * s[i] + b * c[i];
                        }
                    }
                    RopeLayout::HalfSplit => {
                        let (lo, hi) = xt.split_at(half);
                        let (blo, bhi) = buf.split_at_mut(half);
                        for i in 0..half {
                            blo[i] = lo[i] * c[i] - hi[i] * s[i];
                            bhi[i] = lo[i] * s[i] + hi[i] * c[i];
                        }
                    }
                }
                store(&buf, &mut o[t * d..][..d]);
            }
        });
    Ok(())
}
