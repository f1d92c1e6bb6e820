//! Token embedding lookup on the GPU: `x = one_hot(ids) · W = W[ids]`.

use crate::bind::{upload_u32, Bind};
use crate::driver::{self, Input, Pass, Plan, RowOp};
use crate::schedule::{rows_per_pass, Schedule};
use crate::sizes::workgroup_size;
pub use crate::types::positions::check_embedding;
use crate::{Context, Element, Result, Tensor};

const OP: &str = "embedding";

crate::uniform! {
    /// The `Params` uniform of shaders/embedding.wgsl.
    pub(crate) struct Params {
        d: u32,
        v0: u32,
        nv: u32,
        t_off: u32,
        x_off: u32,
        i_off: u32,
        total: u32,
        _pad: u32,
    }
}

/// Embedding lookup: `table: [V, D]` (f32 or f16), `ids: [L]` or `[B, L]` (u32, row-major,
/// shape `ids_shape`) -> `x: [.., L, D]` in the table's dtype, `x[b, l, :] = table[ids[b, l], :]`.
///
/// The ids are checked on the host before anything is dispatched. Errors: [`Error::Shape`](crate::Error::Shape) for
/// a bad table or ids shape, [`Error::DataLength`](crate::Error::DataLength) when `ids` does not match `ids_shape`,
/// [`Error::IndexOutOfRange`](crate::Error::IndexOutOfRange) at the first id `>= V` (its `[b, l]` position),
/// [`Error::TooLarge`](crate::Error::TooLarge) when one table row or output row does not fit a storage binding.
pub fn embedding<T: Element>(
    ctx: &Context,
    table: &Tensor<T>,
    ids: &[u32],
    ids_shape: &[usize],
) -> Result<Tensor<T>> {
    driver::run(
        ctx,
        &Embedding {
            table,
            ids,
            ids_shape,
        },
    )
}

/// [`embedding`] writing into an existing `out: [.., L, D]`, one submission.
pub fn embedding_into<T: Element>(
    ctx: &Context,
    table: &Tensor<T>,
    ids: &[u32],
    ids_shape: &[usize],
    out: &Tensor<T>,
) -> Result<()> {
    driver::run_into(
        ctx,
        &Embedding {
            table,
            ids,
            ids_shape,
        },
        out,
    )
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
    driver::record(
        s,
        &Embedding {
            table,
            ids,
            ids_shape,
        },
        out,
    )
}

struct Embedding<'a, T: Element> {
    table: &'a Tensor<T>,
    ids: &'a [u32],
    ids_shape: &'a [usize],
}

impl<T: Element> RowOp for Embedding<'_, T> {
    type T = T;
    /// Table rows per slice, ids on the device.
    type Dims = (u64, wgpu::Buffer);
    const NAME: &'static str = OP;

    fn plan(&self, ctx: &Context) -> Result<(Self::Dims, Plan)> {
        let shape = check_embedding(self.table.shape(), self.ids, self.ids_shape)?;
        let (v, d) = (self.table.shape()[0], self.table.shape()[1] as u64);
        let es = size_of::<T>() as u64;
        let t_per = rows_per_pass(ctx, OP, &[("table", d * es)], v)? as u64;
        let plan = Plan::new(shape, self.ids.len() as u64, d).bytes("ids", 4);
        Ok(((t_per, upload_u32(ctx, self.ids)), plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        vec![Input::of("table", self.table)]
    }

    fn record_rows(&self, s: &mut Schedule<'_>, dims: &Self::Dims, p: &Pass<'_>) -> Result<()> {
        let ctx = s.context();
        let (t_per, id_buf) = dims;
        let wg = workgroup_size(ctx);
        let pipeline = ctx
            .pipelines
            .get(ctx, "embedding", "lookup", p.storage, &[("WG", wg)])?;
        let (v, d) = (self.table.shape()[0] as u64, self.table.shape()[1] as u64);
        let (nn, es) = (p.nr, size_of::<T>() as u64);
        let (bi, i_off) = Bind::elems(ctx, 2, id_buf, 4, p.r0, nn);
        let (bx, x_off) = p.out.bind(ctx, 3, nn * d);
        let mut v0 = 0u64;
        while v0 < v {
            let nv = (*t_per).min(v - v0);
            let (bt, t_off) = Bind::elems(ctx, 1, self.table.buffer(), es, v0 * d, nv * d);
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
        Ok(())
    }
}
