//! Mamba-2's state-space duality layer (SSD; Dao & Gu 2024, *Transformers are SSMs*, arXiv
//! 2405.21060, §6–7) in the chunked (block) form of the paper's minimal implementation:
//!
//! ```text
//! H_t = exp(A_t) H_{t−1} + B_tᵀ x_t        (H: [n, p] per (batch, head); A_t a log-decay)
//! y_t = C_t H_t
//! ```
//!
//! Chunks of [`CHUNK`] steps: the intra-chunk output is the decay-masked `(C Bᵀ ∘ L) X` (the
//! quadratic, attention-like form inside a chunk), each chunk's state from zero is
//! `Σ_s exp(A_{s+1} + … + A_end) B_sᵀ x_s`, an associative scan (that of
//! [`super::selective_scan`], blocks of chunks per invocation, level upon level) carries the
//! states across chunks, and each output adds `exp(A_start + … + A_t) C_t H_in`. Decay exponents
//! are running sums inside a chunk, never differences of a cumulative sum, so a strong decay
//! (A down to −30 per step) neither overflows nor costs the precision of the weights near 1. No
//! loop in the shader grows with l. Arithmetic and states f32; storage f32 or f16.
//! Reference: [`crate::reference::ssd`].

use crate::bind::{scratch, Bind};
use crate::driver::{self, Input, Pass, Plan, RowOp};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
use crate::sizes::workgroup_size;
use crate::ssm::selective::record_carry_scan;
use crate::types::batch::CuSeqlens;
use crate::{Context, Element, Error, Result, Tensor};

crate::uniform! {
    /// The `Params` uniform of shaders/ssd.wgsl.
    pub(crate) struct Params {
        rows: u32,
        len: u32,
        heads: u32,
        n: u32,
        p: u32,
        chunk: u32,
        nchunks: u32,
        flags: u32,
        x_off: u32,
        a_off: u32,
        bc_off: u32,
        out_off: u32,
        st_off: u32,
        npb: u32,
        total: u32,
        _pad: u32,
    }
}

/// Steps per chunk (the block length of the block decomposition).
pub const CHUNK: usize = 64;
/// Columns of p per invocation (`PB` in the shader): the register tile.
const PB: u64 = 32;

const OP: &str = "ssd";

/// Inputs of [`ssd`], in the layout of Mamba-2's minimal SSD (`ssd_minimal_discrete`).
#[derive(Clone, Copy)]
pub struct SsdInputs<'a, T: Element> {
    /// `X: [b, l, h, p]`.
    pub x: &'a Tensor<T>,
    /// `A: [b, l, h]`, the log-decay of every step and head (Mamba-2's `A · dt`). It should be
    /// ≤ 0: a positive A grows the state as `exp(ΣA)` and can overflow f32.
    pub a: &'a Tensor<T>,
    /// `B: [b, l, h, n]`.
    pub b: &'a Tensor<T>,
    /// `C: [b, l, h, n]`.
    pub c: &'a Tensor<T>,
    /// `initial_state: [b, h, n, p]` f32, or `[N, h, n, p]` with `cu_seqlens` (zero when absent).
    pub initial_state: Option<&'a Tensor<f32>>,
    /// Packed sequences along l (b = 1): sequence i is steps `[offsets[i], offsets[i + 1])` and
    /// runs from its own initial state; `final_state` is then `[N, h, n, p]`. Y past the last
    /// offset is left untouched. Each sequence is its own set of dispatches (one submission).
    pub cu_seqlens: Option<&'a CuSeqlens>,
}

impl<'a, T: Element> SsdInputs<'a, T> {
    /// X, A, B, C without an initial state.
    pub fn new(x: &'a Tensor<T>, a: &'a Tensor<T>, b: &'a Tensor<T>, c: &'a Tensor<T>) -> Self {
        Self {
            x,
            a,
            b,
            c,
            initial_state: None,
            cu_seqlens: None,
        }
    }
}

/// `X: [b, l, h, p]`, `A: [b, l, h]`, `B, C: [b, l, h, n]` → `Y: [b, l, h, p]` (dtype T) and
/// `final_state: [b, h, n, p]` (f32; `[N, h, n, p]` with cu_seqlens), any sizes ≥ 1 (a ragged
/// last chunk included). Errors: [`Error::Shape`] for shapes that do not fit these,
/// [`Error::InvalidArgument`] for cu_seqlens with b ≠ 1 or past l, [`Error::WrongContext`],
/// [`Error::TooLarge`] when one batch's inputs and scratch exceed a storage binding.
pub fn ssd<T: Element>(ctx: &Context, x: &SsdInputs<'_, T>) -> Result<(Tensor<T>, Tensor<f32>)> {
    let d = check(x)?;
    let last = Tensor::<f32>::empty(ctx, &[d.slots, d.heads, d.n, d.p].map(|v| v as usize))?;
    let y = driver::run(ctx, &Ssd { x, last: &last })?;
    Ok((y, last))
}

/// [`ssd`] into existing `y: [b, l, h, p]` and `final_state: [b, h, n, p]` (which must not be
/// `initial_state`).
pub fn ssd_into<T: Element>(
    ctx: &Context,
    x: &SsdInputs<'_, T>,
    y: &Tensor<T>,
    final_state: &Tensor<f32>,
) -> Result<()> {
    driver::run_into(
        ctx,
        &Ssd {
            x,
            last: final_state,
        },
        y,
    )
}

/// Records [`ssd_into`] into a [`Schedule`].
pub fn record_ssd<T: Element>(
    s: &mut Schedule<'_>,
    x: &SsdInputs<'_, T>,
    y: &Tensor<T>,
    final_state: &Tensor<f32>,
) -> Result<()> {
    driver::record(
        s,
        &Ssd {
            x,
            last: final_state,
        },
        y,
    )
}

/// b, l, h, p, n of a checked call; slots = b, or N with cu_seqlens.
#[derive(Clone, Copy)]
struct Dims {
    batch: u64,
    slots: u64,
    len: u64,
    heads: u64,
    p: u64,
    n: u64,
}

fn shape_is(name: &'static str, got: &[usize], want: &[usize], what: &str) -> Result<()> {
    if got == want {
        return Ok(());
    }
    Err(Error::Shape {
        op: OP,
        name,
        expected: format!("{want:?} ({what})"),
        got: got.to_vec(),
    })
}

/// Every input shape against X's b, l, h, p and B's n.
fn check<T: Element>(x: &SsdInputs<'_, T>) -> Result<Dims> {
    let xs = x.x.shape();
    if xs.len() != 4 || xs.contains(&0) {
        return Err(Error::Shape {
            op: OP,
            name: "X",
            expected: "[b, l, h, p] with every dim >= 1".into(),
            got: xs.to_vec(),
        });
    }
    let (b, l, h, p) = (xs[0], xs[1], xs[2], xs[3]);
    shape_is("A", x.a.shape(), &[b, l, h], "[b, l, h], from X")?;
    let bs = x.b.shape();
    if bs.len() != 4 || bs[..3] != [b, l, h] || bs[3] == 0 {
        return Err(Error::Shape {
            op: OP,
            name: "B",
            expected: format!("[{b}, {l}, {h}, n] ([b, l, h, n], n >= 1)"),
            got: bs.to_vec(),
        });
    }
    let n = bs[3];
    shape_is("C", x.c.shape(), &[b, l, h, n], "[b, l, h, n], like B")?;
    let slots = crate::cpu::gated::check_cu(OP, b, l, x.cu_seqlens)?;
    if let Some(h0) = x.initial_state {
        let what = "[b, h, n, p] ([N, h, n, p] with cu_seqlens)";
        shape_is("initial_state", h0.shape(), &[slots, h, n, p], what)?;
    }
    Ok(Dims {
        batch: b as u64,
        slots: slots as u64,
        len: l as u64,
        heads: h as u64,
        p: p as u64,
        n: n as u64,
    })
}

struct Ssd<'a, 'b, T: Element> {
    x: &'a SsdInputs<'b, T>,
    last: &'a Tensor<f32>,
}

impl<T: Element> RowOp for Ssd<'_, '_, T> {
    type T = T;
    type Dims = Dims;
    const NAME: &'static str = OP;

    fn plan(&self, _: &Context) -> Result<(Dims, Plan)> {
        let d = check(self.x)?;
        let st = [d.slots, d.heads, d.n, d.p].map(|v| v as usize);
        shape_is("final_state", self.last.shape(), &st, "[b or N, h, n, p]")?;
        if self.x.initial_state.map(|t| t.buffer()) == Some(self.last.buffer()) {
            return Err(Error::InvalidArgument {
                op: OP,
                name: "final_state",
                reason: "aliases input `initial_state`".into(),
            });
        }
        let es = size_of::<T>() as u64;
        let tokens = d.len * d.heads;
        let nchunks = d.len.div_ceil(CHUNK as u64);
        // A row is one batch: the [l, h, ..] layout interleaves the heads along l.
        let plan = Plan::new(self.x.x.shape().to_vec(), d.batch, tokens * d.p)
            .bytes("X", tokens * d.p * es)
            .bytes("B", tokens * d.n * es)
            .bytes("segment sums", tokens * 8)
            .bytes("chunk carries", d.heads * d.n * d.p * nchunks * 8)
            .bytes("chunk states", d.heads * d.n * d.p * nchunks * 4)
            .bytes("states", d.heads * d.n * d.p * 4);
        Ok((d, plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        let x = self.x;
        let mut i = vec![
            Input::of("X", x.x),
            Input::of("A", x.a),
            Input::of("B", x.b),
            Input::of("C", x.c),
        ];
        i.extend(x.initial_state.map(|t| Input::of("initial_state", t)));
        i.push(Input::of("final_state", self.last));
        i
    }

    fn record_rows(&self, s: &mut Schedule<'_>, d: &Dims, p: &Pass<'_>) -> Result<()> {
        let Some(cu) = self.x.cu_seqlens else {
            let span = Span {
                tok0: p.r0 * d.len,
                rows: p.nr,
                len: d.len,
                slot0: p.r0,
            };
            return self.record_span(s, d, p, span);
        };
        // b = 1: one pass, and a span per packed sequence.
        for i in 0..cu.count() {
            let r = cu.range(i);
            let span = Span {
                tok0: r.start as u64,
                rows: 1,
                len: r.len() as u64,
                slot0: i as u64,
            };
            self.record_span(s, d, p, span)?;
        }
        Ok(())
    }
}

/// `rows` consecutive lanes' worth of batches of `len` steps from token `tok0` (a flat
/// (batch, step) index), their states at `slot0`.
#[derive(Clone, Copy)]
struct Span {
    tok0: u64,
    rows: u64,
    len: u64,
    slot0: u64,
}

impl<T: Element> Ssd<'_, '_, T> {
    fn record_span(&self, s: &mut Schedule<'_>, d: &Dims, p: &Pass<'_>, sp: Span) -> Result<()> {
        let ctx = s.context();
        let x = self.x;
        let es = size_of::<T>() as u64;
        let (h, nr) = (d.heads, sp.rows);
        let tokens = sp.len * h;
        let sn = h * d.n * d.p;
        let first = sp.tok0 * h;
        let (bx, x_off) = Bind::elems(ctx, 1, x.x.buffer(), es, first * d.p, nr * tokens * d.p);
        let (ba, a_off) = Bind::elems(ctx, 2, x.a.buffer(), es, first, nr * tokens);
        let (b0, bn) = (first * d.n, nr * tokens * d.n);
        let (bb, bc_off) = Bind::elems(ctx, 3, x.b.buffer(), es, b0, bn);
        let bc = Bind::elems(ctx, 4, x.c.buffer(), es, b0, bn).0;
        let (s0, sl) = (sp.slot0 * sn, nr * sn);
        let (blast, st_off) = Bind::elems(ctx, 9, self.last.buffer(), 4, s0, sl);
        let dummy = scratch(ctx, 4);
        let bh0 = match x.initial_state {
            Some(hs) => Bind::elems(ctx, 5, hs.buffer(), 4, s0, sl).0,
            None => Bind::all(5, &dummy),
        };
        // The pass's output starts at its first batch.
        let out0 = p.out.first + (sp.tok0 - p.r0 * d.len) * h * d.p;
        let (bout, out_off) = Bind::elems(
            ctx,
            8,
            p.out.buffer,
            p.out.elem_bytes,
            out0,
            nr * tokens * d.p,
        );
        let nchunks = sp.len.div_ceil(CHUNK as u64);
        let mut prm = Params {
            rows: nr as u32,
            len: sp.len as u32,
            heads: h as u32,
            n: d.n as u32,
            p: d.p as u32,
            chunk: CHUNK as u32,
            nchunks: nchunks as u32,
            flags: x.initial_state.is_some() as u32,
            x_off,
            a_off,
            bc_off,
            out_off,
            st_off,
            npb: d.p.div_ceil(PB) as u32,
            total: 0,
            _pad: 0,
        };
        if sp.len == 0 {
            // An empty sequence: its final state is its initial state.
            let carry = scratch(ctx, 8);
            return record_final(s, p.storage, &mut prm, [bh0, Bind::all(7, &carry), blast]);
        }
        let pool = &ctx.chunk_scratch;
        let bufs = [
            pool.take(ctx, nr * tokens * 8),
            pool.take(ctx, nr * sn * nchunks * 8),
            pool.take(ctx, nr * sn * nchunks * 4),
        ];
        let r = record_passes(
            s,
            p.storage,
            &mut prm,
            &bufs,
            [bx, ba, bb, bc, bh0, bout, blast],
        );
        pool.give(bufs);
        r
    }
}

/// The final_state pass alone (with `nchunks` 0 it copies the initial state, or zeros).
fn record_final(
    s: &mut Schedule<'_>,
    storage: Storage,
    prm: &mut Params,
    binds: [Bind<'_>; 3],
) -> Result<()> {
    let ctx = s.context();
    let wg = workgroup_size(ctx);
    let pl = ctx
        .pipelines
        .get(ctx, "ssd", "final_state", storage, &[("WG", wg)])?;
    let total = prm.rows as u64 * prm.heads as u64 * prm.n as u64 * prm.p as u64;
    prm.total = total as u32;
    s.dispatch(&pl, &*prm, &binds, total.div_ceil(wg as u64))
}

/// seg_sums, chunk_state, the carry scan, chunk_in, chunk_out, final_state; `bufs` are the
/// segment-sum, carry and chunk-state scratch.
fn record_passes(
    s: &mut Schedule<'_>,
    storage: Storage,
    prm: &mut Params,
    [seg, carry, hin]: &[wgpu::Buffer; 3],
    [bx, ba, bb, bc, bh0, bout, blast]: [Bind<'_>; 7],
) -> Result<()> {
    let ctx = s.context();
    let wg = workgroup_size(ctx);
    let pl = |e| ctx.pipelines.get(ctx, "ssd", e, storage, &[("WG", wg)]);
    let groups = |t: u64| t.div_ceil(wg as u64);
    let lanes = prm.rows as u64 * prm.heads as u64;
    let (len, n, p) = (prm.len as u64, prm.n as u64, prm.p as u64);
    let (nchunks, npb) = (prm.nchunks as u64, prm.npb as u64);
    let (bseg, bcarry, bhin) = (Bind::all(6, seg), Bind::all(7, carry), Bind::all(10, hin));
    let mut go = |s: &mut Schedule<'_>, entry, binds: &[Bind<'_>], total: u64| -> Result<()> {
        prm.total = total as u32;
        s.dispatch(&*pl(entry)?, &*prm, binds, groups(total))
    };
    go(s, "seg_sums", &[ba, bseg], lanes * nchunks)?;
    go(
        s,
        "chunk_state",
        &[bx, bb, bseg, bcarry],
        lanes * n * npb * nchunks,
    )?;
    record_carry_scan(s, storage, carry, lanes * n * p, nchunks)?;
    go(s, "chunk_in", &[bh0, bcarry, bhin], lanes * nchunks * n * p)?;
    let binds = [bx, ba, bb, bc, bseg, bhin, bout];
    go(s, "chunk_out", &binds, lanes * len * npb)?;
    go(s, "final_state", &[bh0, bcarry, blast], lanes * n * p)
}
