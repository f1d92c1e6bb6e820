//! CPU reference for the embedding lookup, as the matrix product `x = one_hot(ids) · W`.

use crate::types::positions::check_embedding;
use crate::{Element, Result};

/// `table: [V, D]`, `ids: [L]` or `[B, L]` -> `x: [.., L, D]` in f64, computed as the dense
/// product of the one-hot matrix `[N, V]` with `W` (O(N·V·D); the equation, not a gather).
/// Same errors as [`crate::positions::embedding`](fn@crate::positions::embedding).
pub fn embedding<T: Element>(
    table: &[T],
    table_shape: &[usize],
    ids: &[u32],
    ids_shape: &[usize],
) -> Result<Vec<f64>> {
    check_embedding(table_shape, ids, ids_shape)?;
    let (v, d) = (table_shape[0], table_shape[1]);
    if table.len() != v * d {
        return Err(crate::Error::DataLength {
            shape: table_shape.to_vec(),
            expected: v * d,
            got: table.len(),
        });
    }
    let mut x = vec![0.0f64; ids.len() * d];
    for (n, &id) in ids.iter().enumerate() {
        let row = &mut x[n * d..(n + 1) * d];
        for r in 0..v {
            let one_hot = if r as u64 == id as u64 { 1.0 } else { 0.0 };
            for (c, acc) in row.iter_mut().enumerate() {
                *acc += one_hot * table[r * d + c].to_f64();
            }
        }
    }
    Ok(x)
}
