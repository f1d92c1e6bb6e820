//! The one op driver. An op describes its checks, output shape, rows and bytes per row, and how
//! to record a pass over a range of rows ([`RowOp`]); the driver owns everything around that:
//! validation (once), the context and alias checks on `out`, splitting the rows into passes that
//! fit the storage-binding limit, packed-f16 staging, the row loop and the error scope. It gives
//! every op its three entry points: [`run`] (`op`), [`run_into`] (`op_into`), [`record`]
//! (`record_op`).

use crate::bind::Bind;
use crate::cast::{record_pack_f16, record_unpack_f16};
use crate::pipeline::Storage;
use crate::schedule::{rows_per_pass, Schedule};
use crate::{Context, DType, Element, Error, Result, Tensor};

/// What an op's checks found: the output and how its work splits into independent rows.
pub(crate) struct Plan {
    pub out_shape: Vec<usize>,
    /// Independent rows (e.g. (batch, head) pairs); a pass takes a contiguous range of them.
    pub rows: u64,
    /// Output elements per row (the output is `[rows, out_row]` in memory).
    pub out_row: u64,
    /// Bytes per row of every binding of a pass besides the output (inputs, per-row scratch).
    pub row_bytes: Vec<(&'static str, u64)>,
    /// The op writes f32 for every non-f32 output (its kernels keep f32 outputs), so f16
    /// outputs are staged and packed even with `SHADER_F16`.
    pub f32_out: bool,
    /// Outputs of the op, all of `out_shape` (e.g. the real and imaginary parts).
    pub n_outs: usize,
    /// The op splits one row along L itself: a row too large for a binding gets a pass of its
    /// own instead of [`Error::TooLarge`].
    pub split_len: bool,
    /// A pass takes a multiple of this many rows (e.g. the H rows of a `[B, L, H, D]` batch
    /// entry, so the pass's output is contiguous); 1 = any count.
    pub row_group: u64,
    /// The op leaves some output elements untouched (packed sequences: the tokens past the last
    /// offset), so a staged output starts from the tensor's values.
    pub partial_out: bool,
}

impl Plan {
    pub fn new(out_shape: Vec<usize>, rows: u64, out_row: u64) -> Self {
        Self {
            out_shape,
            rows,
            out_row,
            row_bytes: Vec::new(),
            f32_out: false,
            n_outs: 1,
            split_len: false,
            row_group: 1,
            partial_out: false,
        }
    }

    /// Adds a binding of `bytes` bytes per row.
    pub fn bytes(mut self, what: &'static str, bytes: u64) -> Self {
        self.row_bytes.push((what, bytes));
        self
    }
}

/// A named input, for the alias and context checks.
pub(crate) struct Input<'a> {
    pub name: &'static str,
    pub buffer: &'a wgpu::Buffer,
    pub context: u64,
}

impl<'a> Input<'a> {
    pub fn of<E: Element>(name: &'static str, t: &'a Tensor<E>) -> Self {
        Self {
            name,
            buffer: t.buffer(),
            context: t.context_id(),
        }
    }
}

/// Where a pass writes: `elem_bytes`-sized elements of `buffer` from element `first` on.
pub(crate) struct OutSlot<'b> {
    pub buffer: &'b wgpu::Buffer,
    pub elem_bytes: u64,
    pub first: u64,
}

impl<'b> OutSlot<'b> {
    /// The first `n` elements of the slot bound at `slot`, and the element offset inside it.
    pub fn bind(&self, ctx: &Context, slot: u32, n: u64) -> (Bind<'b>, u32) {
        Bind::elems(ctx, slot, self.buffer, self.elem_bytes, self.first, n)
    }
}

/// One pass: rows `[r0, r0 + nr)`, the storage the op's kernels read `T` with, and where the
/// pass's `nr · out_row` output elements go (`outs[0]` = `out`; more for multi-output ops).
pub(crate) struct Pass<'b> {
    pub r0: u64,
    pub nr: u64,
    pub storage: Storage,
    pub out: OutSlot<'b>,
    pub outs: Vec<OutSlot<'b>>,
}

/// An op the driver can run: rows of independent work writing one output tensor.
pub(crate) trait RowOp {
    /// The output's element type.
    type T: Element;
    /// What the checks computed and a pass needs (sizes, resolved options).
    type Dims;
    /// The op's name in errors.
    const NAME: &'static str;
    /// Every check on the inputs and options (not on `out`); runs once per call.
    fn plan(&self, ctx: &Context) -> Result<(Self::Dims, Plan)>;
    /// Every input tensor, named, for the alias and context checks.
    fn inputs(&self) -> Vec<Input<'_>>;
    /// Records work done once per call before the passes (e.g. tables every pass reads).
    fn record_prologue(&self, _s: &mut Schedule<'_>, _d: &mut Self::Dims) -> Result<()> {
        Ok(())
    }
    /// Records the work of one pass.
    fn record_rows(&self, s: &mut Schedule<'_>, d: &Self::Dims, pass: &Pass<'_>) -> Result<()>;
}

/// `op`: checks, allocates the output and runs the op in one submission.
pub(crate) fn run<O: RowOp>(ctx: &Context, op: &O) -> Result<Tensor<O::T>> {
    Ok(run_multi(ctx, op)?.swap_remove(0))
}

/// [`run`] for an op with several outputs ([`Plan::n_outs`]).
pub(crate) fn run_multi<O: RowOp>(ctx: &Context, op: &O) -> Result<Vec<Tensor<O::T>>> {
    check_inputs::<O>(ctx, &op.inputs())?;
    let (mut d, plan) = op.plan(ctx)?;
    let outs = (0..plan.n_outs)
        .map(|_| Tensor::empty(ctx, &plan.out_shape))
        .collect::<Result<Vec<_>>>()?;
    submit(ctx, |s| {
        drive(s, op, &mut d, &plan, &outs.iter().collect::<Vec<_>>())
    })?;
    Ok(outs)
}

/// `op_into`: the op written into an existing `out`, one submission.
pub(crate) fn run_into<O: RowOp>(ctx: &Context, op: &O, out: &Tensor<O::T>) -> Result<()> {
    run_into_multi(ctx, op, &[out])
}

/// [`run_into`] for an op with several outputs.
pub(crate) fn run_into_multi<O: RowOp>(
    ctx: &Context,
    op: &O,
    outs: &[&Tensor<O::T>],
) -> Result<()> {
    submit(ctx, |s| record_multi(s, op, outs))
}

/// Records `f` into a new [`Schedule`] and submits it, inside the device error scopes.
pub(crate) fn submit(ctx: &Context, f: impl FnOnce(&mut Schedule<'_>) -> Result<()>) -> Result<()> {
    crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        f(&mut s)?;
        s.submit();
        Ok(())
    })
}

/// `record_op`: the op recorded into a [`Schedule`] (for chaining ops in one submission).
pub(crate) fn record<O: RowOp>(s: &mut Schedule<'_>, op: &O, out: &Tensor<O::T>) -> Result<()> {
    record_multi(s, op, &[out])
}

/// [`record`] for an op with several outputs.
pub(crate) fn record_multi<O: RowOp>(
    s: &mut Schedule<'_>,
    op: &O,
    outs: &[&Tensor<O::T>],
) -> Result<()> {
    let ctx = s.context();
    let inputs = op.inputs();
    check_inputs::<O>(ctx, &inputs)?;
    let (mut d, plan) = op.plan(ctx)?;
    debug_assert_eq!(outs.len(), plan.n_outs);
    for (i, out) in outs.iter().enumerate() {
        check_out::<O>(ctx, &plan, &inputs, out)?;
        if outs[..i].iter().any(|o| o.buffer() == out.buffer()) {
            return Err(Error::InvalidArgument {
                op: O::NAME,
                name: "out",
                reason: "two outputs share one buffer".into(),
            });
        }
    }
    drive(s, op, &mut d, &plan, outs)
}

/// Every input must come from `ctx`.
fn check_inputs<O: RowOp>(ctx: &Context, inputs: &[Input<'_>]) -> Result<()> {
    for i in inputs {
        if i.context != ctx.id() {
            return Err(Error::WrongContext {
                op: O::NAME,
                name: i.name,
            });
        }
    }
    Ok(())
}

/// `out` has the output shape, comes from `ctx` and is none of the inputs.
fn check_out<O: RowOp>(
    ctx: &Context,
    plan: &Plan,
    inputs: &[Input<'_>],
    out: &Tensor<O::T>,
) -> Result<()> {
    if out.shape() != plan.out_shape.as_slice() {
        return Err(Error::Shape {
            op: O::NAME,
            name: "out",
            expected: format!("{:?}", plan.out_shape),
            got: out.shape().to_vec(),
        });
    }
    if out.context_id() != ctx.id() {
        return Err(Error::WrongContext {
            op: O::NAME,
            name: "out",
        });
    }
    if let Some(i) = inputs.iter().find(|i| i.buffer == out.buffer()) {
        return Err(Error::InvalidArgument {
            op: O::NAME,
            name: "out",
            reason: format!("aliases input `{}`", i.name),
        });
    }
    Ok(())
}

/// The row loop: passes that fit the binding limit, packed f16 through an f32 scratch (filled
/// from `out` first when the op leaves some of it untouched).
fn drive<O: RowOp>(
    s: &mut Schedule<'_>,
    op: &O,
    d: &mut O::Dims,
    plan: &Plan,
    outs: &[&Tensor<O::T>],
) -> Result<()> {
    let ctx = s.context();
    let storage = Storage::for_dtype(ctx, O::T::DTYPE);
    let staged = storage == Storage::F16Packed || (plan.f32_out && O::T::DTYPE != DType::F32);
    let out_bytes = if staged { 4 } else { size_of::<O::T>() as u64 };
    let mut row_bytes = plan.row_bytes.clone();
    row_bytes.push(("out", plan.out_row * out_bytes));
    let per = match rows_per_pass(ctx, O::NAME, &row_bytes, plan.rows as usize) {
        Err(Error::TooLarge { .. }) if plan.split_len => 1,
        per => per? as u64,
    };
    let g = plan.row_group.max(1);
    let per = match per / g * g {
        0 if plan.split_len => g,
        0 => {
            return Err(Error::TooLarge {
                op: O::NAME,
                what: format!("{g} rows (one batch entry)"),
                needed: g * row_bytes.iter().map(|x| x.1).max().unwrap_or(0),
                limit: ctx.limits().max_storage_buffer_binding_size,
            })
        }
        n => n,
    };
    // COPY_DST: ops that keep parts of their output copy the rest in (NormAttention's packing).
    let stage = || {
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("longseq f16 staging"),
            size: (per.min(plan.rows) * plan.out_row * 4).max(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    };
    let stages: Vec<wgpu::Buffer> = match staged {
        true => (0..outs.len()).map(|_| stage()).collect(),
        false => Vec::new(),
    };
    op.record_prologue(s, d)?;
    let mut r0 = 0u64;
    while r0 < plan.rows {
        let nr = per.min(plan.rows - r0);
        let slot = |i: usize| match stages.get(i) {
            Some(buf) => OutSlot {
                buffer: buf,
                elem_bytes: 4,
                first: 0,
            },
            None => OutSlot {
                buffer: outs[i].buffer(),
                elem_bytes: out_bytes,
                first: r0 * plan.out_row,
            },
        };
        let pass = Pass {
            r0,
            nr,
            storage,
            out: slot(0),
            outs: (0..outs.len()).map(slot).collect(),
        };
        if plan.partial_out {
            for (buf, out) in stages.iter().zip(outs) {
                record_unpack_f16(s, out.buffer(), r0 * plan.out_row, nr * plan.out_row, buf)?;
            }
        }
        op.record_rows(s, d, &pass)?;
        for (buf, out) in stages.iter().zip(outs) {
            let n = nr * plan.out_row;
            record_pack_f16(s, buf, out.buffer(), r0 * plan.out_row, n)?;
        }
        r0 += nr;
    }
    Ok(())
}
