//! Gated linear attention (GLA; Yang et al. 2024, *Gated Linear Attention Transformers with
//! Hardware-Efficient Training*, arXiv 2312.06635, §4), chunked, with its decode step, and the
//! GPU's gated chunk engine (`Gated`, shaders/gla.wgsl) that Mamba-2's SSD
//! ([`crate::ssm::ssd`]) also runs on (one gate channel per step and head instead of Dk):
//!
//! ```text
//! S_t = diag(exp g_t) S_{t−1} + k_tᵀ v_t      (S: [Dk, Dv] per (batch, head); g_t ≤ 0 in log space)
//! o_t = scale · q_t S_t                      (scale defaults to Dk^−1/2)
//! ```
//!
//! Chunks of [`CHUNK`] steps: inside a chunk the attention-like coefficients
//! `Σ_d q_t[d] exp(g_{s+1} + … + g_t)[d] k_s[d]` are formed with the exponents summed in log
//! space from t backwards (never `exp(−Σg)`: every exponent is ≤ 0, so g down to −30 per step
//! neither overflows nor loses the weights near 1); each chunk's state from zero and the chunk's
//! decay are scanned across chunks (the associative scan of [`crate::ssm::selective_scan`]);
//! each output adds `q_t exp(decay to t) S_in`. No loop in the shader grows with L. Arithmetic
//! and states f32; storage f32 or f16. q, k, v, g, o are `[B, H, L, D]` or fla's `[B, L, H, D]`
//! ([`GlaInputs::layout`], read through strides in the kernel, no transpose), and packed
//! sequences ([`GlaInputs::cu_seqlens`]) each run from their own state, nothing crossing a
//! boundary. Reference: [`crate::reference::gla`].

use crate::bind::{scratch, Bind};
use crate::driver::{self, Input, Pass, Plan, RowOp};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
use crate::sizes::workgroup_size;
use crate::ssm::selective::record_carry_scan;
use crate::types::batch::{CuSeqlens, Layout, Strides};
use crate::{Context, Element, Error, Result, Tensor};

crate::uniform! {
    /// The `Params` uniform of shaders/gla.wgsl.
    pub(crate) struct Params {
        rows: u32,
        len: u32,
        dk: u32,
        dv: u32,
        nchunks: u32,
        flags: u32,
        scale: f32,
        nvb: u32,
        q_off: u32,
        v_off: u32,
        out_off: u32,
        st_off: u32,
        total: u32,
        hpr: u32,
        rs_k: u32,
        hs_k: u32,
        ts_k: u32,
        rs_v: u32,
        hs_v: u32,
        ts_v: u32,
        g_off: u32,
        rs_g: u32,
        hs_g: u32,
        ts_g: u32,
        gd: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// Steps per chunk (`CH` in the shader).
pub const CHUNK: usize = 64;
/// Value columns per invocation (`VB` in the shader): the register tile.
const VB: u64 = 64;

const OP: &str = "gla";
const STEP: &str = "gla_step";

/// Inputs of [`gla`]. For [`gla_step`] drop the L axis: `q, k, g: [B, H, Dk]`, `v: [B, H, Dv]`
/// (either layout; no cu_seqlens).
#[derive(Clone, Copy)]
pub struct GlaInputs<'a, T: Element> {
    /// `q: [B, H, L, Dk]` (`[B, L, H, Dk]` with [`Layout::Blhd`]).
    pub q: &'a Tensor<T>,
    /// `k`, like q.
    pub k: &'a Tensor<T>,
    /// `v: [B, H, L, Dv]` (`[B, L, H, Dv]` with [`Layout::Blhd`]).
    pub v: &'a Tensor<T>,
    /// `g`, like q: log forget gates. They should be ≤ 0 (GLA's `log σ(·)/τ`): a positive g
    /// grows the state as `exp(Σg)` and can overflow f32.
    pub g: &'a Tensor<T>,
    /// `initial_state: [B, H, Dk, Dv]` f32, or `[N, H, Dk, Dv]` with cu_seqlens (zero when
    /// absent).
    pub initial_state: Option<&'a Tensor<f32>>,
    /// The output scale; `None`: Dk^−1/2.
    pub scale: Option<f32>,
    /// Memory order of q, k, v, g and o (default [`Layout::Bhld`]).
    pub layout: Layout,
    /// Packed sequences along L (flash-linear-attention's `cu_seqlens`, B = 1): sequence i is
    /// tokens `[offsets[i], offsets[i + 1])` and runs from `initial_state[i]`; `final_state` is
    /// `[N, H, Dk, Dv]`. o past the last offset is left untouched. Each sequence is its own set
    /// of dispatches (one submission).
    pub cu_seqlens: Option<&'a CuSeqlens>,
}

impl<'a, T: Element> GlaInputs<'a, T> {
    /// q, k, v, g without an initial state, scale Dk^−1/2.
    pub fn new(q: &'a Tensor<T>, k: &'a Tensor<T>, v: &'a Tensor<T>, g: &'a Tensor<T>) -> Self {
        Self {
            q,
            k,
            v,
            g,
            initial_state: None,
            scale: None,
            layout: Layout::Bhld,
            cu_seqlens: None,
        }
    }
}

/// `q, k, g: [B, H, L, Dk]`, `v: [B, H, L, Dv]` (or `[B, L, H, D]`, [`GlaInputs::layout`]) →
/// `o` like v (dtype T) and `final_state: [B, H, Dk, Dv]` (f32; `[N, H, Dk, Dv]` with
/// cu_seqlens), any sizes ≥ 1. Errors: [`Error::Shape`] for shapes that do not fit these,
/// [`Error::InvalidArgument`] for a non-finite scale, cu_seqlens with B ≠ 1 or past L,
/// [`Error::WrongContext`], [`Error::TooLarge`]
/// when one (batch, head) row's inputs and scratch (all H of them for `[B, L, H, D]`) exceed a
/// storage binding.
pub fn gla<T: Element>(ctx: &Context, x: &GlaInputs<'_, T>) -> Result<(Tensor<T>, Tensor<f32>)> {
    run(ctx, x, false)
}

/// [`gla`] into existing `o` (v's shape) and `final_state` (`[B or N, H, Dk, Dv]`, which must
/// not be `initial_state`). With cu_seqlens, o past the last offset keeps its contents.
pub fn gla_into<T: Element>(
    ctx: &Context,
    x: &GlaInputs<'_, T>,
    o: &Tensor<T>,
    final_state: &Tensor<f32>,
) -> Result<()> {
    driver::run_into(ctx, &Gated::gla(x, final_state, false)?, o)
}

/// Records [`gla_into`] into a [`Schedule`].
pub fn record_gla<T: Element>(
    s: &mut Schedule<'_>,
    x: &GlaInputs<'_, T>,
    o: &Tensor<T>,
    final_state: &Tensor<f32>,
) -> Result<()> {
    driver::record(s, &Gated::gla(x, final_state, false)?, o)
}

/// One decode step: `q, k, g: [B, H, Dk]`, `v: [B, H, Dv]`, the state `[B, H, Dk, Dv]` in
/// (`initial_state`, zero when absent) → `(o: [B, H, Dv], new_state)`; equal to [`gla`] with
/// L = 1. Errors as [`gla`].
pub fn gla_step<T: Element>(
    ctx: &Context,
    x: &GlaInputs<'_, T>,
) -> Result<(Tensor<T>, Tensor<f32>)> {
    run(ctx, x, true)
}

/// [`gla_step`] into existing `o: [B, H, Dv]` and `new_state: [B, H, Dk, Dv]`.
pub fn gla_step_into<T: Element>(
    ctx: &Context,
    x: &GlaInputs<'_, T>,
    o: &Tensor<T>,
    new_state: &Tensor<f32>,
) -> Result<()> {
    driver::run_into(ctx, &Gated::gla(x, new_state, true)?, o)
}

fn run<T: Element>(
    ctx: &Context,
    x: &GlaInputs<'_, T>,
    step: bool,
) -> Result<(Tensor<T>, Tensor<f32>)> {
    let d = check(x, step)?;
    let st = [d.slots, d.heads, d.dk, d.dv];
    let last = Tensor::<f32>::empty(ctx, &st)?;
    let o = driver::run(ctx, &Gated::gla(x, &last, step)?)?;
    Ok((o, last))
}

/// B, H, L, Dk, Dv of a checked call; slots = B, or N with cu_seqlens.
#[derive(Clone, Copy)]
pub(crate) struct Dims {
    pub batch: usize,
    pub slots: usize,
    pub heads: usize,
    pub len: usize,
    pub dk: usize,
    pub dv: usize,
}

fn shape_is(op: &'static str, name: &'static str, got: &[usize], want: &[usize]) -> Result<()> {
    if got == want {
        return Ok(());
    }
    Err(Error::Shape {
        op,
        name,
        expected: format!("{want:?}"),
        got: got.to_vec(),
    })
}

/// Every input shape against q's B, H, L, Dk (in the layout) and v's Dv; cu_seqlens; the scale.
fn check<T: Element>(x: &GlaInputs<'_, T>, step: bool) -> Result<Dims> {
    let op = if step { STEP } else { OP };
    let rank = if step { 3 } else { 4 };
    let qs = x.q.shape();
    let names = match (step, x.layout) {
        (true, _) => "[B, H, Dk]",
        (false, Layout::Bhld) => "[B, H, L, Dk]",
        (false, Layout::Blhd) => "[B, L, H, Dk]",
    };
    if qs.len() != rank || qs.contains(&0) {
        return Err(Error::Shape {
            op,
            name: "q",
            expected: format!("{names} with every dim >= 1"),
            got: qs.to_vec(),
        });
    }
    shape_is(op, "k", x.k.shape(), qs)?;
    shape_is(op, "g", x.g.shape(), qs)?;
    let vs = x.v.shape();
    let lead = &qs[..rank - 1];
    if vs.len() != rank || vs[..rank - 1] != *lead || vs[rank - 1] == 0 {
        let mut want: Vec<String> = lead.iter().map(|v| v.to_string()).collect();
        want.push("Dv".into());
        return Err(Error::Shape {
            op,
            name: "v",
            expected: format!("[{}] (Dv >= 1)", want.join(", ")),
            got: vs.to_vec(),
        });
    }
    let (dk, dv) = (qs[rank - 1], vs[rank - 1]);
    let (batch, heads, len) = match (step, x.layout) {
        (true, _) => (qs[0], qs[1], 1),
        (false, lay) => {
            let (b, h, l, _) = lay.dims([qs[0], qs[1], qs[2], qs[3]]);
            (b, h, l)
        }
    };
    if step && x.cu_seqlens.is_some() {
        return Err(Error::InvalidArgument {
            op,
            name: "cu_seqlens",
            reason: "a decode step takes one token per batch entry; no packed sequences".into(),
        });
    }
    let slots = crate::cpu::gated::check_cu(op, batch, len, x.cu_seqlens)?;
    if let Some(h0) = x.initial_state {
        shape_is(op, "initial_state", h0.shape(), &[slots, heads, dk, dv])?;
    }
    if x.scale.is_some_and(|s| !s.is_finite()) {
        return Err(Error::InvalidArgument {
            op,
            name: "scale",
            reason: format!("must be finite, got {:?}", x.scale),
        });
    }
    Ok(Dims {
        batch,
        slots,
        heads,
        len,
        dk,
        dv,
    })
}

/// One call of the gated chunk engine: `q, k: [.., Dk]`, `v: [.., Dv]`, `g: [.., gd]` (gd = Dk:
/// GLA's gate per key channel; 1: one gate per step and head, SSD) in `layout`, checked by the
/// front end (`d`). `SSD` names the op in the driver's errors.
pub(crate) struct Gated<'a, T: Element, const SSD: bool> {
    pub op: &'static str,
    /// The names of q, k, v, g in errors.
    pub names: [&'static str; 4],
    pub q: &'a Tensor<T>,
    pub k: &'a Tensor<T>,
    pub v: &'a Tensor<T>,
    pub g: &'a Tensor<T>,
    pub gd: usize,
    pub initial_state: Option<&'a Tensor<f32>>,
    pub last: &'a Tensor<f32>,
    pub scale: f32,
    pub layout: Layout,
    pub cu_seqlens: Option<&'a CuSeqlens>,
    pub d: Dims,
}

impl<'a, T: Element> Gated<'a, T, false> {
    /// GLA (or its step) after [`check`].
    fn gla(x: &GlaInputs<'a, T>, last: &'a Tensor<f32>, step: bool) -> Result<Self> {
        let d = check(x, step)?;
        Ok(Self {
            op: if step { STEP } else { OP },
            names: ["q", "k", "v", "g"],
            q: x.q,
            k: x.k,
            v: x.v,
            g: x.g,
            gd: d.dk,
            initial_state: x.initial_state,
            last,
            scale: x.scale.unwrap_or(1.0 / (d.dk as f32).sqrt()),
            // A step's [B, H, D] is the same memory in either layout.
            layout: if step { Layout::Bhld } else { x.layout },
            cu_seqlens: x.cu_seqlens,
            d,
        })
    }
}

impl<T: Element, const SSD: bool> RowOp for Gated<'_, T, SSD> {
    type T = T;
    type Dims = Dims;
    const NAME: &'static str = if SSD { "ssd" } else { OP };

    fn plan(&self, _: &Context) -> Result<(Dims, Plan)> {
        let (op, d) = (self.op, self.d);
        let st = [d.slots, d.heads, d.dk, d.dv];
        shape_is(op, "final_state", self.last.shape(), &st)?;
        if self.initial_state.map(|t| t.buffer()) == Some(self.last.buffer()) {
            return Err(Error::InvalidArgument {
                op,
                name: "final_state",
                reason: "aliases input `initial_state`".into(),
            });
        }
        let es = size_of::<T>() as u64;
        let (len, dk, dv) = (d.len as u64, d.dk as u64, d.dv as u64);
        let nchunks = len.div_ceil(CHUNK as u64);
        // A row is one (batch, head); [B, L, H, D] interleaves a batch entry's heads, so a pass
        // then takes whole entries.
        let gd = self.gd as u64;
        let mut plan = Plan::new(
            self.v.shape().to_vec(),
            (d.batch * d.heads) as u64,
            len * dv,
        )
        .bytes("q", len * dk * es)
        .bytes("v", len * dv * es)
        .bytes("g", len * gd * es)
        .bytes("segment sums", len * gd * 8)
        .bytes("chunk carries", dk * dv * nchunks * 8)
        .bytes("chunk states", dk * dv * nchunks * 4)
        .bytes("states", dk * dv * 4);
        if self.layout == Layout::Blhd {
            plan.row_group = d.heads as u64;
        }
        plan.partial_out = self.cu_seqlens.is_some();
        Ok((d, plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        let [nq, nk, nv, ng] = self.names;
        let mut i = vec![
            Input::of(nq, self.q),
            Input::of(nk, self.k),
            Input::of(nv, self.v),
            Input::of(ng, self.g),
        ];
        i.extend(self.initial_state.map(|t| Input::of("initial_state", t)));
        i.push(Input::of("final_state", self.last));
        i
    }

    fn record_rows(&self, s: &mut Schedule<'_>, d: &Dims, p: &Pass<'_>) -> Result<()> {
        let (lay, h, len) = (self.layout, d.heads, d.len);
        let (sk, sv) = (lay.strides(h, len, d.dk), lay.strides(h, len, d.dv));
        let sg = lay.strides(h, len, self.gd);
        let Some(cu) = self.cu_seqlens else {
            // Whole rows r0.. (whole batch entries with [B, L, H, D]).
            let hpr = match lay {
                Layout::Bhld => 1,
                Layout::Blhd => h as u64,
            };
            let group = |st: Strides, dim: usize| Geom {
                first: p.r0 * (len * dim) as u64,
                rs: hpr * (len * dim) as u64,
                hs: if hpr == 1 { 0 } else { st.head as u64 },
                ts: st.token as u64,
            };
            let span = Span {
                lanes: p.nr,
                hpr,
                len: len as u64,
                k: group(sk, d.dk),
                v: group(sv, d.dv),
                g: group(sg, self.gd),
                slot0: p.r0,
            };
            return self.record_span(s, d, p, span);
        };
        // B = 1: heads r0.. of each packed sequence, a span each.
        for i in 0..cu.count() {
            let r = cu.range(i);
            let at = |st: Strides| Geom {
                first: p.r0 * st.head as u64 + (r.start * st.token) as u64,
                rs: 0,
                hs: st.head as u64,
                ts: st.token as u64,
            };
            let span = Span {
                lanes: p.nr,
                hpr: p.nr,
                len: r.len() as u64,
                k: at(sk),
                v: at(sv),
                g: at(sg),
                slot0: (i * h) as u64 + p.r0,
            };
            self.record_span(s, d, p, span)?;
        }
        Ok(())
    }
}

/// Where a span's lanes live in one tensor: lane i, token t at
/// `first + (i / hpr) · rs + (i % hpr) · hs + t · ts` (elements).
#[derive(Clone, Copy)]
struct Geom {
    first: u64,
    rs: u64,
    hs: u64,
    ts: u64,
}

impl Geom {
    /// Elements from `first` to one past the last one `lanes` lanes of `len` tokens of `dim`
    /// channels touch.
    fn extent(&self, lanes: u64, hpr: u64, len: u64, dim: u64) -> u64 {
        let last = lanes - 1;
        (last / hpr) * self.rs + (last % hpr) * self.hs + (len - 1) * self.ts + dim
    }
}

/// `lanes` (batch or sequence, head) pairs of `len` tokens: q, k at `k`, v and o at `v` (o
/// relative to the pass's first row), g at `g`, states from lane `slot0`.
#[derive(Clone, Copy)]
struct Span {
    lanes: u64,
    hpr: u64,
    len: u64,
    k: Geom,
    v: Geom,
    g: Geom,
    slot0: u64,
}

impl<T: Element, const SSD: bool> Gated<'_, T, SSD> {
    fn record_span(&self, s: &mut Schedule<'_>, d: &Dims, p: &Pass<'_>, sp: Span) -> Result<()> {
        let ctx = s.context();
        let es = size_of::<T>() as u64;
        let (nr, len) = (sp.lanes, sp.len);
        let (dk, dv) = (d.dk as u64, d.dv as u64);
        let sn = dk * dv;
        let (s0, sl) = (sp.slot0 * sn, nr * sn);
        let (blast, st_off) = Bind::elems(ctx, 9, self.last.buffer(), 4, s0, sl);
        let bh0 = match self.initial_state {
            Some(h) => Bind::elems(ctx, 5, h.buffer(), 4, s0, sl).0,
            None => Bind::all(5, ctx.zero_quad()),
        };
        let nchunks = len.div_ceil(CHUNK as u64);
        let mut prm = Params {
            rows: nr as u32,
            len: len as u32,
            dk: dk as u32,
            dv: dv as u32,
            nchunks: nchunks as u32,
            flags: self.initial_state.is_some() as u32,
            scale: self.scale,
            nvb: dv.div_ceil(VB) as u32,
            q_off: 0,
            v_off: 0,
            out_off: 0,
            st_off,
            total: 0,
            hpr: sp.hpr as u32,
            rs_k: sp.k.rs as u32,
            hs_k: sp.k.hs as u32,
            ts_k: sp.k.ts as u32,
            rs_v: sp.v.rs as u32,
            hs_v: sp.v.hs as u32,
            ts_v: sp.v.ts as u32,
            g_off: 0,
            rs_g: sp.g.rs as u32,
            hs_g: sp.g.hs as u32,
            ts_g: sp.g.ts as u32,
            gd: self.gd as u32,
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        };
        if len == 0 {
            // An empty sequence: its final state is its initial state.
            let carry = scratch(ctx, 8);
            return record_final(s, p.storage, &mut prm, [bh0, Bind::all(7, &carry), blast]);
        }
        let (nk, nv) = (
            sp.k.extent(nr, sp.hpr, len, dk),
            sp.v.extent(nr, sp.hpr, len, dv),
        );
        let ng = sp.g.extent(nr, sp.hpr, len, self.gd as u64);
        let (bq, q_off) = Bind::elems(ctx, 1, self.q.buffer(), es, sp.k.first, nk);
        let bk = Bind::elems(ctx, 2, self.k.buffer(), es, sp.k.first, nk).0;
        let (bv, v_off) = Bind::elems(ctx, 3, self.v.buffer(), es, sp.v.first, nv);
        let (bg, g_off) = Bind::elems(ctx, 4, self.g.buffer(), es, sp.g.first, ng);
        // The pass's output starts at its first row.
        let o0 = p.out.first + sp.v.first - p.r0 * d.len as u64 * dv;
        let (bout, out_off) = Bind::elems(ctx, 8, p.out.buffer, p.out.elem_bytes, o0, nv);
        (prm.q_off, prm.v_off, prm.out_off, prm.g_off) = (q_off, v_off, out_off, g_off);
        let pool = &ctx.chunk_scratch;
        let bufs = [
            pool.take(ctx, nr * len * self.gd as u64 * 8),
            pool.take(ctx, nr * sn * nchunks * 8),
            pool.take(ctx, nr * sn * nchunks * 4),
        ];
        let binds = [bq, bk, bv, bg, bh0, bout, blast];
        let r = record_passes(s, p.storage, &mut prm, &bufs, binds);
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
        .get(ctx, "gla", "final_state", storage, &[("WG", wg)])?;
    let total = prm.rows as u64 * prm.dk as u64 * prm.dv as u64;
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
    [bq, bk, bv, bg, bh0, bout, blast]: [Bind<'_>; 7],
) -> Result<()> {
    let ctx = s.context();
    let wg = workgroup_size(ctx);
    let pl = |e| ctx.pipelines.get(ctx, "gla", e, storage, &[("WG", wg)]);
    let groups = |t: u64| t.div_ceil(wg as u64);
    let rows = prm.rows as u64;
    let (len, dk, dv) = (prm.len as u64, prm.dk as u64, prm.dv as u64);
    let (nchunks, nvb, gd) = (prm.nchunks as u64, prm.nvb as u64, prm.gd as u64);
    let (bseg, bcarry, bhin) = (Bind::all(6, seg), Bind::all(7, carry), Bind::all(10, hin));
    let mut go = |s: &mut Schedule<'_>, entry, binds: &[Bind<'_>], total: u64| -> Result<()> {
        prm.total = total as u32;
        s.dispatch(&*pl(entry)?, &*prm, binds, groups(total))
    };
    go(s, "seg_sums", &[bg, bseg], rows * nchunks * gd)?;
    let binds = [bk, bv, bseg, bcarry];
    go(s, "chunk_state", &binds, rows * dk * nvb * nchunks)?;
    record_carry_scan(s, storage, carry, rows * dk * dv, nchunks)?;
    go(
        s,
        "chunk_in",
        &[bh0, bcarry, bhin],
        rows * nchunks * dk * dv,
    )?;
    let binds = [bq, bk, bv, bg, bseg, bhin, bout];
    go(s, "chunk_out", &binds, rows * len * nvb)?;
    go(s, "final_state", &[bh0, bcarry, blast], rows * dk * dv)
}
