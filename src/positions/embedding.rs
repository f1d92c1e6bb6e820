//! Token embedding lookup on the GPU: `x = one_hot(ids) · W = W[ids]`.

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

use crate::bind::{scratch, Bind};
use crate::cast::record_pack_f16;
use crate::pipeline::Storage;
use crate::schedule::{rows_per_pass, Schedule};
use crate::sizes::workgroup_size;
pub use crate::types::positions::check_embedding;
use crate::{Context, Element, Error, Result, Tensor};

const OP: &str = "embedding";

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    d: u32,
    v0: u32,
    nv: u32,
    t_off: u32,
    x_off: u32,
    i_off: u32,
    total: u32,
    _pad: u32,
}

/// Embedding lookup: `table: [V, D]` (f32 or f16), `ids: [L]` or `[B, L]` (u32, row-major,
/// shape `ids_shape`) -> `x: [.., L, D]` in the table's dtype, `x[b, l, :] = table[ids[b, l], :]`.
///
/// The ids are checked on the host before anything is dispatched. Errors: [`Error::Shape`] for
/// a bad table or ids shape, [`Error::DataLength`] when `ids` does not match `ids_shape`,
/// [`Error::IndexOutOfRange`] at the first id `>= V` (its `[b, l]` position),
/// [`Error::TooLarge`] when one table row or output row does not fit a storage binding.
pub fn embedding<T: Element>(
    ctx: &Context,
    table: &Tensor<T>,
    ids: &[u32],
    ids_shape: &[usize],
) -> Result<Tensor<T>> {
    let shape = check_embedding(table.shape(), ids, ids_shape)?;
    let out = Tensor::empty(ctx, &shape)?;
    embedding_into(ctx, table, ids, ids_shape, &out)?;
    Ok(out)
}

/// [`embedding`] writing into an existing `out: [.., L, D]`, one submission.
pub fn embedding_into<T: Element>(
    ctx: &Context,
    table: &Tensor<T>,
    ids: &[u32],
    ids_shape: &[usize],
    out: &Tensor<T>,
) -> Result<()> {
    crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        record_embedding(&mut s, table, ids, ids_shape, out)?;
        s.submit();
        Ok(())
    })
}

/// Records the embedding lookup into a [`Schedule`]. Work is split over output rows and, when
/// the table exceeds one storage binding, over slices of table rows (each pass writes the
/// outputs whose id falls in its slice).
pub fn record_embedding<T: Element>(
    s: &mut Schedule<'_>,
    table: &Tensor<T>,
    ids: &[u32],
    ids_shape: &[usize],
    out: &Tensor<T>,
) -> Result<()> {
    let ctx = s.context();
    let shape = check_embedding(table.shape(), ids, ids_shape)?;
    if out.shape() != shape.as_slice() {
        return Err(Error::Shape {
            op: OP,
            name: "out",
            expected: format!("{shape:?}"),
            got: out.shape().to_vec(),
        });
    }
    if out.buffer() == table.buffer() {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "out",
            reason: "aliases input `table`".into(),
        });
    }
    let storage = Storage::for_dtype(ctx, T::DTYPE);
    let wg = workgroup_size(ctx);
    let pipeline = ctx
        .pipelines
        .get(ctx, "embedding", "lookup", storage, &[("WG", wg)])?;
    let (v, d) = (table.shape()[0] as u64, table.shape()[1] as u64);
    let n = ids.len() as u64;
    let es = size_of::<T>() as u64;
    let ob = storage.out_elem_bytes();
    let t_per = rows_per_pass(ctx, OP, &[("table", d * es)], v as usize)? as u64;
    let n_per = rows_per_pass(ctx, OP, &[("x", d * ob), ("ids", 4)], n as usize)? as u64;
    let id_buf = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("longseq ids"),
            contents: bytemuck::cast_slice(ids),
            usage: wgpu::BufferUsages::STORAGE,
        });
    let n_max = n_per.min(n);
    let packed_out = (storage == Storage::F16Packed).then(|| scratch(ctx, n_max * d * 4));
    let mut n0 = 0u64;
    while n0 < n {
        let nn = n_per.min(n - n0);
        let (bi, i_off) = Bind::elems(ctx, 2, &id_buf, 4, n0, nn);
        let (bx, x_off) = match &packed_out {
            Some(buf) => (
                Bind {
                    slot: 3,
                    buffer: buf,
                    offset: 0,
                    size: nn * d * 4,
                },
                0,
            ),
            None => Bind::elems(ctx, 3, out.buffer(), es, n0 * d, nn * d),
        };
        let mut v0 = 0u64;
        while v0 < v {
            let nv = t_per.min(v - v0);
            let (bt, t_off) = Bind::elems(ctx, 1, table.buffer(), es, v0 * d, nv * d);
            let prm = Params {
                d: d as u32,
                v0: v0 as u32,
                nv: nv as u32,
                t_off,
                x_off,
                i_off,
                total: (nn * d) as u32,
                _pad: 0,
            };
            s.dispatch(&pipeline, &prm, &[bt, bi, bx], (nn * d).div_ceil(wg as u64))?;
            v0 += nv;
        }
        if let Some(buf) = &packed_out {
            record_pack_f16(s, buf, out.buffer(), n0 * d, nn * d)?;
        }
        n0 += nn;
    }
    Ok(())
}
