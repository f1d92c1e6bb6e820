//! The Mamba selective scan (S6; Gu & Dao 2023, *Mamba: Linear-Time Sequence Modeling with
//! Selective State Spaces*, arXiv 2312.00752, Algorithm 2 and eqs. 2a–2b) with the argument
//! names and layout of mamba's `selective_scan_ref`, parallel over L, and its decode step
//! (mamba's `selective_state_update`):
//!
//! ```text
//! Δ_t   = softplus(delta_t + delta_bias)        (softplus only with delta_softplus)
//! h_t   = exp(Δ_t A) h_{t−1} + Δ_t B_t u_t       (Ā = exp(ΔA), B̄ u = ΔB u, per state n)
//! out_t = (Σ_n C_t h_t + D u_t) · silu(z_t)      (D and z optional)
//! ```
//!
//! The scan is chunked: every (b, d, block of states, chunk of L) lane runs its chunk from a zero
//! state to a (Π Ā, local state) pair; an associative scan over the chunks (the combine of
//! [`super::linear_scan`], blocks of chunks per invocation, level upon level) gives each chunk
//! its carried-in state; the lanes replay their chunks from it and reduce over N. No loop in the
//! shader grows with L. Arithmetic and states f32; storage f32 or f16.
//! Reference: [`crate::reference::mamba`].

use crate::bind::{bind_whole, scratch, Bind};
use crate::driver::{self, Input, Pass, Plan, RowOp};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
use crate::sizes::workgroup_size;
use crate::{Context, Element, Error, Result, Tensor};

crate::uniform! {
    /// The `Params` uniform of shaders/selective_scan.wgsl.
    pub(crate) struct Params {
        rows: u32,
        len: u32,
        n: u32,
        dim: u32,
        r0: u32,
        chunk: u32,
        nchunks: u32,
        flags: u32,
        x_off: u32,
        bc_off: u32,
        out_off: u32,
        st_off: u32,
        b0: u32,
        m: u32,
        blk: u32,
        total: u32,
    }
}

/// Steps per chunk (one lane's sequential run in passes 1 and 3).
const CHUNK: u64 = 64;
/// Chunks one invocation scans sequentially in the carry scan (per level).
const CARRY_BLOCK: u64 = 256;
/// States per lane (`NB` in the shader).
const NB: u64 = 16;

/// Inputs of [`selective_scan`], named and laid out as mamba's `selective_scan_ref`. For
/// [`selective_state_update`] drop the L axis: `u, delta, z: [B, D]`, `B, C: [B, N]`.
#[derive(Clone, Copy)]
pub struct SelectiveScanInputs<'a, T: Element> {
    /// `u: [B, D, L]`.
    pub u: &'a Tensor<T>,
    /// `delta: [B, D, L]`, Δ before `delta_bias` and softplus.
    pub delta: &'a Tensor<T>,
    /// `A: [D, N]`, real; ≤ 0 for a decaying state (Mamba's `−exp(A_log)`): a positive A grows
    /// the state as `exp(ΣΔ·A)` and can overflow f32.
    pub a: &'a Tensor<T>,
    /// `B: [B, N, L]`.
    pub b: &'a Tensor<T>,
    /// `C: [B, N, L]`.
    pub c: &'a Tensor<T>,
    /// `D: [D]`, the skip term `D u`.
    pub d: Option<&'a Tensor<T>>,
    /// `z: [B, D, L]`: the output is multiplied by `silu(z)`.
    pub z: Option<&'a Tensor<T>>,
    /// `delta_bias: [D]`, added to Δ before the softplus.
    pub delta_bias: Option<&'a Tensor<T>>,
    /// Δ ← softplus(Δ) (= ln(1 + e^Δ)).
    pub delta_softplus: bool,
    /// `initial_state: [B, D, N]` f32 (zero when absent).
    pub initial_state: Option<&'a Tensor<f32>>,
}

impl<'a, T: Element> SelectiveScanInputs<'a, T> {
    /// The required inputs; D, z, delta_bias, softplus and the initial state off.
    pub fn new(
        u: &'a Tensor<T>,
        delta: &'a Tensor<T>,
        a: &'a Tensor<T>,
        b: &'a Tensor<T>,
        c: &'a Tensor<T>,
    ) -> Self {
        Self {
            u,
            delta,
            a,
            b,
            c,
            d: None,
            z: None,
            delta_bias: None,
            delta_softplus: false,
            initial_state: None,
        }
    }
}

/// `u, delta, z: [B, D, L]`, `A: [D, N]`, `B, C: [B, N, L]` → out `[B, D, L]` (dtype T) and
/// `last_state: [B, D, N]` (f32), any B, D, N, L ≥ 1. Errors: [`Error::Shape`] for any shape
/// that does not fit these (mismatched B, D, N or L), [`Error::WrongContext`],
/// [`Error::TooLarge`] when one (b, d) row's inputs and scratch exceed a storage binding.
pub fn selective_scan<T: Element>(
    ctx: &Context,
    x: &SelectiveScanInputs<'_, T>,
) -> Result<(Tensor<T>, Tensor<f32>)> {
    let last = Tensor::<f32>::empty(ctx, &state_shape(x)?)?;
    let out = driver::run(ctx, &Selective::new(x, &last, false))?;
    Ok((out, last))
}

/// [`selective_scan`] into existing `out: [B, D, L]` and `last_state: [B, D, N]` (which must not
/// be `initial_state`).
pub fn selective_scan_into<T: Element>(
    ctx: &Context,
    x: &SelectiveScanInputs<'_, T>,
    out: &Tensor<T>,
    last_state: &Tensor<f32>,
) -> Result<()> {
    driver::run_into(ctx, &Selective::new(x, last_state, false), out)
}

/// Records [`selective_scan_into`] into a [`Schedule`].
pub fn record_selective_scan<T: Element>(
    s: &mut Schedule<'_>,
    x: &SelectiveScanInputs<'_, T>,
    out: &Tensor<T>,
    last_state: &Tensor<f32>,
) -> Result<()> {
    driver::record(s, &Selective::new(x, last_state, false), out)
}

/// One decode step (mamba's `selective_state_update`): `u, delta, z: [B, D]`, `B, C: [B, N]`,
/// state `[B, D, N]` in (`initial_state`, zero when absent) → `(y: [B, D], new_state)`; equal to
/// [`selective_scan`] with L = 1. Errors as [`selective_scan`].
pub fn selective_state_update<T: Element>(
    ctx: &Context,
    x: &SelectiveScanInputs<'_, T>,
) -> Result<(Tensor<T>, Tensor<f32>)> {
    let new_state = Tensor::<f32>::empty(ctx, &state_shape(x)?)?;
    let y = driver::run(ctx, &Selective::new(x, &new_state, true))?;
    Ok((y, new_state))
}

/// [`selective_state_update`] into existing `y: [B, D]` and `new_state: [B, D, N]`.
pub fn selective_state_update_into<T: Element>(
    ctx: &Context,
    x: &SelectiveScanInputs<'_, T>,
    y: &Tensor<T>,
    new_state: &Tensor<f32>,
) -> Result<()> {
    driver::run_into(ctx, &Selective::new(x, new_state, true), y)
}

/// Records [`selective_state_update_into`] into a [`Schedule`].
pub fn record_selective_state_update<T: Element>(
    s: &mut Schedule<'_>,
    x: &SelectiveScanInputs<'_, T>,
    y: &Tensor<T>,
    new_state: &Tensor<f32>,
) -> Result<()> {
    driver::record(s, &Selective::new(x, new_state, true), y)
}

const SCAN: &str = "selective_scan";
const STEP: &str = "selective_state_update";

/// `[B, D, N]` from `u` and `A` (or a shape error naming the one that is off).
fn state_shape<T: Element>(x: &SelectiveScanInputs<'_, T>) -> Result<[usize; 3]> {
    let (u, a) = (x.u.shape(), x.a.shape());
    if u.len() < 2 || a.len() != 2 {
        let bad = if u.len() < 2 { ("u", u) } else { ("A", a) };
        return Err(Error::Shape {
            op: SCAN,
            name: bad.0,
            expected: "u: [B, D, L] (or [B, D] for a step), A: [D, N]".into(),
            got: bad.1.to_vec(),
        });
    }
    Ok([u[0], u[1], a[1]])
}

struct Selective<'a, 'b, T: Element> {
    x: &'a SelectiveScanInputs<'b, T>,
    last: &'a Tensor<f32>,
    step: bool,
}

/// B, D, N, L of a checked call.
#[derive(Clone, Copy)]
struct Dims {
    batch: u64,
    dim: u64,
    n: u64,
    len: u64,
}

fn shape_is(
    op: &'static str,
    name: &'static str,
    got: &[usize],
    want: &[usize],
    what: &str,
) -> Result<()> {
    if got == want {
        return Ok(());
    }
    Err(Error::Shape {
        op,
        name,
        expected: format!("{want:?} ({what})"),
        got: got.to_vec(),
    })
}

impl<'a, 'b, T: Element> Selective<'a, 'b, T> {
    fn new(x: &'a SelectiveScanInputs<'b, T>, last: &'a Tensor<f32>, step: bool) -> Self {
        Self { x, last, step }
    }

    fn name(&self) -> &'static str {
        if self.step {
            STEP
        } else {
            SCAN
        }
    }

    /// Every shape against u's B, D, L and A's N.
    fn check(&self) -> Result<Dims> {
        let (op, x) = (self.name(), self.x);
        let u = x.u.shape();
        let rank = if self.step { 2 } else { 3 };
        if u.len() != rank || u.contains(&0) {
            return Err(Error::Shape {
                op,
                name: "u",
                expected: format!(
                    "{} with every dim >= 1",
                    if self.step { "[B, D]" } else { "[B, D, L]" }
                ),
                got: u.to_vec(),
            });
        }
        let (bt, d) = (u[0], u[1]);
        let len = if self.step { 1 } else { u[2] };
        let a = x.a.shape();
        if a.len() != 2 || a[0] != d || a[1] == 0 {
            return Err(Error::Shape {
                op,
                name: "A",
                expected: format!("[{d}, N] ([D, N], D from u, N >= 1)"),
                got: a.to_vec(),
            });
        }
        let n = a[1];
        let (xs, bcs, xw, bw): (Vec<usize>, Vec<usize>, &str, &str) = if self.step {
            (vec![bt, d], vec![bt, n], "[B, D]", "[B, N]")
        } else {
            (vec![bt, d, len], vec![bt, n, len], "[B, D, L]", "[B, N, L]")
        };
        shape_is(op, "delta", x.delta.shape(), &xs, xw)?;
        shape_is(op, "B", x.b.shape(), &bcs, bw)?;
        shape_is(op, "C", x.c.shape(), &bcs, bw)?;
        if let Some(z) = x.z {
            shape_is(op, "z", z.shape(), &xs, xw)?;
        }
        for (name, t) in [("D", x.d), ("delta_bias", x.delta_bias)] {
            if let Some(t) = t {
                shape_is(op, name, t.shape(), &[d], "[D]")?;
            }
        }
        let st = [bt, d, n];
        if let Some(h) = x.initial_state {
            shape_is(op, "initial_state", h.shape(), &st, "[B, D, N]")?;
            if h.buffer() == self.last.buffer() {
                return Err(Error::InvalidArgument {
                    op,
                    name: "last_state",
                    reason: "aliases input `initial_state`".into(),
                });
            }
        }
        shape_is(op, "last_state", self.last.shape(), &st, "[B, D, N]")?;
        Ok(Dims {
            batch: bt as u64,
            dim: d as u64,
            n: n as u64,
            len: len as u64,
        })
    }

    fn flags(&self) -> u32 {
        let x = self.x;
        x.d.is_some() as u32
            | (x.z.is_some() as u32) << 1
            | (x.delta_bias.is_some() as u32) << 2
            | (x.delta_softplus as u32) << 3
            | (x.initial_state.is_some() as u32) << 4
    }
}

impl<T: Element> RowOp for Selective<'_, '_, T> {
    type T = T;
    type Dims = Dims;
    const NAME: &'static str = SCAN;

    fn plan(&self, _: &Context) -> Result<(Dims, Plan)> {
        let d = self.check()?;
        let es = size_of::<T>() as u64;
        let nblk = d.n.div_ceil(NB);
        let nchunks = d.len.div_ceil(CHUNK);
        let shape = self.x.u.shape().to_vec();
        // B and C rows are per batch; a pass's binding of them spans at most one more batch
        // than its rows do, which counting a whole [N, L] per row covers.
        let plan = Plan::new(shape, d.batch * d.dim, d.len)
            .bytes("u", d.len * es)
            .bytes("B", d.n * d.len * es)
            .bytes("states", d.n * 4)
            .bytes("chunk carries", d.n * nchunks * 8)
            .bytes("partial outputs", nblk * d.len * 4);
        Ok((d, plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        let x = self.x;
        let mut i = vec![
            Input::of("u", x.u),
            Input::of("delta", x.delta),
            Input::of("A", x.a),
            Input::of("B", x.b),
            Input::of("C", x.c),
        ];
        i.extend(x.d.map(|t| Input::of("D", t)));
        i.extend(x.z.map(|t| Input::of("z", t)));
        i.extend(x.delta_bias.map(|t| Input::of("delta_bias", t)));
        i.extend(x.initial_state.map(|t| Input::of("initial_state", t)));
        i.push(Input::of("last_state", self.last));
        i
    }

    fn record_rows(&self, s: &mut Schedule<'_>, d: &Dims, p: &Pass<'_>) -> Result<()> {
        let ctx = s.context();
        let (x, op) = (self.x, self.name());
        let es = size_of::<T>() as u64;
        let (r0, nr, len, n) = (p.r0, p.nr, d.len, d.n);
        let b0 = r0 / d.dim;
        let nbatch = (r0 + nr - 1) / d.dim - b0 + 1;
        let (bu, x_off) = Bind::elems(ctx, 1, x.u.buffer(), es, r0 * len, nr * len);
        let bdelta = Bind::elems(ctx, 2, x.delta.buffer(), es, r0 * len, nr * len).0;
        let bz = Bind::elems(ctx, 7, x.z.unwrap_or(x.u).buffer(), es, r0 * len, nr * len).0;
        let (bb, bc_off) = Bind::elems(ctx, 4, x.b.buffer(), es, b0 * n * len, nbatch * n * len);
        let bc = Bind::elems(ctx, 5, x.c.buffer(), es, b0 * n * len, nbatch * n * len).0;
        let ba = bind_whole(ctx, op, "A", 3, x.a)?;
        let bd = bind_whole(ctx, op, "D", 6, x.d.unwrap_or(x.a))?;
        let bbias = bind_whole(ctx, op, "delta_bias", 8, x.delta_bias.unwrap_or(x.a))?;
        let (blast, st_off) = Bind::elems(ctx, 14, self.last.buffer(), 4, r0 * n, nr * n);
        let bh0 = match x.initial_state {
            Some(h) => Bind::elems(ctx, 9, h.buffer(), 4, r0 * n, nr * n).0,
            None => Bind::all(9, ctx.zero_quad()),
        };
        let (bout, out_off) = p.out.bind(ctx, 13, nr * len);
        let mut prm = Params {
            rows: nr as u32,
            len: len as u32,
            n: n as u32,
            dim: d.dim as u32,
            r0: r0 as u32,
            chunk: CHUNK as u32,
            nchunks: len.div_ceil(CHUNK) as u32,
            flags: self.flags(),
            x_off,
            bc_off,
            out_off,
            st_off,
            b0: b0 as u32,
            m: 0,
            blk: CARRY_BLOCK as u32,
            total: nr as u32,
        };
        // Pooled: creating tens of MiB of buffers per call costs lavapipe more than the kernels.
        let pool = &ctx.chunk_scratch;
        let nblk = n.div_ceil(NB);
        let nchunks = prm.nchunks as u64;
        let bufs = [
            pool.take(ctx, nr * len * 8),
            pool.take(ctx, nr * n * nchunks * 8),
            pool.take(ctx, nr * nblk * len * 4),
        ];
        let r = self.record_passes(
            s,
            &mut prm,
            &bufs,
            [bu, bdelta, bbias, ba, bb, bc],
            [bh0, blast, bd, bz, bout],
        );
        pool.give(bufs);
        r
    }
}

impl<T: Element> Selective<'_, '_, T> {
    /// prep, chunk_state and the carry scan (not for a step), chunk_apply, finish; `bufs` are
    /// the (Δ, Δu), carry and partial-output scratch.
    fn record_passes(
        &self,
        s: &mut Schedule<'_>,
        prm: &mut Params,
        [dtu, carry, ypart]: &[wgpu::Buffer; 3],
        [bu, bdelta, bbias, ba, bb, bc]: [Bind<'_>; 6],
        [bh0, blast, bd, bz, bout]: [Bind<'_>; 5],
    ) -> Result<()> {
        let ctx = s.context();
        let storage = Storage::for_dtype(ctx, T::DTYPE);
        let wg = workgroup_size(ctx);
        let pl = |e| {
            ctx.pipelines
                .get(ctx, "selective_scan", e, storage, &[("WG", wg)])
        };
        let groups = |t: u64| t.div_ceil(wg as u64);
        let (nr, len, n) = (prm.rows as u64, prm.len as u64, prm.n as u64);
        let nchunks = prm.nchunks as u64;
        let lanes = nr * n.div_ceil(NB) * nchunks;
        let bdtu = Bind::all(15, dtu);
        prm.total = (nr * len) as u32;
        s.dispatch(
            &*pl("prep")?,
            prm,
            &[bu, bdelta, bbias, bdtu],
            groups(nr * len),
        )?;
        let bcarry = Bind::all(10, carry);
        prm.total = lanes as u32;
        // The decode step (L = 1, one chunk) starts from the initial state: no carries.
        if !self.step {
            let binds = [ba, bb, bdtu, bcarry];
            s.dispatch(&*pl("chunk_state")?, prm, &binds, groups(lanes))?;
            record_carry_scan(s, storage, carry, nr * n, nchunks)?;
        }
        let byp = Bind::all(12, ypart);
        let binds = [ba, bb, bc, bh0, bdtu, bcarry, byp, blast];
        s.dispatch(&*pl("chunk_apply")?, prm, &binds, groups(lanes))?;
        prm.total = (nr * len) as u32;
        let binds = [bu, bd, bz, byp, bout];
        s.dispatch(&*pl("finish")?, prm, &binds, groups(nr * len))
    }
}

/// Inclusive associative scan of `rows` rows of `len` (Ā product, state) pairs in `carry`:
/// each invocation scans a block of [`CARRY_BLOCK`] sequentially and writes its total; the totals
/// are scanned the same way until one block remains, then every block is prefixed with the
/// resolved total of the blocks before it.
pub(crate) fn record_carry_scan(
    s: &mut Schedule<'_>,
    storage: Storage,
    carry: &wgpu::Buffer,
    rows: u64,
    len: u64,
) -> Result<()> {
    let ctx = s.context();
    let wg = workgroup_size(ctx);
    let pl = |e| {
        ctx.pipelines
            .get(ctx, "selective_scan", e, storage, &[("WG", wg)])
    };
    let (up, down) = (pl("carry_up")?, pl("carry_down")?);
    let k = CARRY_BLOCK;
    let mut sizes = vec![len];
    while *sizes.last().expect("non-empty") > k {
        sizes.push(sizes.last().expect("non-empty").div_ceil(k));
    }
    let levels: Vec<wgpu::Buffer> = sizes[1..]
        .iter()
        .chain([&1])
        .map(|m| scratch(ctx, rows * m * 8))
        .collect();
    let buf = |i: usize| if i == 0 { carry } else { &levels[i - 1] };
    let prm = |m: u64, total: u64| Params {
        rows: rows as u32,
        m: m as u32,
        blk: k as u32,
        total: total as u32,
        ..bytemuck::Zeroable::zeroed()
    };
    let binds = |i: usize, m: u64| {
        [
            Bind::prefix(10, buf(i), rows * m * 8),
            Bind::prefix(11, buf(i + 1), rows * m.div_ceil(k) * 8),
        ]
    };
    for (i, &m) in sizes.iter().enumerate() {
        let t = rows * m.div_ceil(k);
        s.dispatch(&up, &prm(m, t), &binds(i, m), t.div_ceil(wg as u64))?;
    }
    for (i, &m) in sizes.iter().enumerate().rev() {
        if m > k {
            let t = rows * m;
            s.dispatch(&down, &prm(m, t), &binds(i, m), t.div_ceil(wg as u64))?;
        }
    }
    Ok(())
}
