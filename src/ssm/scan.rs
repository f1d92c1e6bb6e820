//! Parallel associative scan for `h_t = a_t h_{t−1} + b_t` (real or complex, any L) in WGSL,
//! multi-level across workgroups, and the S4D recurrent mode built on it: whole-sequence scan and
//! single step (Blelloch 1990; Smith et al. 2023, *S5*, arXiv 2208.04933, §2.2).
//!
//! Elements `(a, b)` combine as `(a_i, b_i) • (a_j, b_j) = (a_j a_i, a_j b_i + b_j)`. A chunked
//! scan: each invocation scans a chunk of CH positions serially and writes its total; the totals
//! are scanned the same way, level upon level, until one chunk per row remains, then every chunk
//! is prefixed with the resolved total of the chunks before it. Work spreads over rows and L
//! alike, so `[1, 2^18]` and `[2^18, 1]` cost about the same.

use super::kernel::{check_disc, record_modes, DiagonalSsm, Discretization};
use crate::bind::{bind_buffer, bind_whole, scratch, Bind};
use crate::driver::{self, Input, Pass, Plan, RowOp};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
use crate::sizes::workgroup_size;
use crate::{Context, Element, Error, Result, Tensor, TileFamily};

crate::uniform! {
    /// The `Params` uniform of shaders/scan.wgsl.
    pub(crate) struct Params {
        rows: u32,
        m: u32,
        total: u32,
        flags: u32,
        in_off: u32,
        out_off: u32,
        h: u32,
        n2: u32,
        bh0: u32,
        stride: u32,
        t0: u32,
        _p: u32,
        hs: u32,
        ts: u32,
        nseq: u32,
        sflags: u32,
    }
}

impl Params {
    fn new(rows: u64, m: u64) -> Self {
        Self {
            rows: rows as u32,
            m: m as u32,
            total: (rows * m) as u32,
            flags: 0,
            in_off: 0,
            out_off: 0,
            h: 1,
            n2: 1,
            bh0: 0,
            stride: m as u32,
            t0: 0,
            _p: 0,
            hs: m as u32,
            ts: 1,
            nseq: 0,
            sflags: 0,
        }
    }
}

/// Scan positions per chunk: rows whose scan state (`per_pos` vec4 values per position) exceeds
/// a storage binding are scanned chunk by chunk along L, each chunk starting from the previous
/// one's last prefix (`carry`).
fn chunk_len(ctx: &Context, len: u64, per_pos: u64) -> u64 {
    let lim = ctx.limits();
    let slack = lim.min_storage_buffer_offset_alignment as u64 + 4;
    let max = (lim.max_storage_buffer_binding_size - slack) / (16 * per_pos);
    len.min(max.max(1))
}

/// Positions per invocation of the chunked scan (`CH` in shaders/scan.wgsl): CPU adapters
/// (lavapipe) run few, long invocations best; GPUs want more of them.
fn scan_chunk(ctx: &Context) -> u32 {
    match ctx.tile_family() {
        TileFamily::Cpu => 64,
        TileFamily::Gpu => 16,
    }
}

/// Scans `rows` rows of length `len` held in `x` (vec4 elements, level 0) in place: each chunk
/// of CH positions serially (`chunk_up`), the chunk totals the same way one level up, until one
/// chunk per row remains, then every chunk is prefixed with the resolved total of the chunks
/// before it (`chunk_down`). Parallel over rows and L alike.
fn record_levels(
    s: &mut Schedule<'_>,
    storage: Storage,
    x: &wgpu::Buffer,
    rows: u64,
    len: u64,
) -> Result<()> {
    let ctx = s.context();
    let (wg, ch) = (workgroup_size(ctx), scan_chunk(ctx));
    let (w, c) = (wg as u64, ch as u64);
    let pl = |e| {
        let k = [("WG", wg), ("CH", ch)];
        ctx.pipelines.get(ctx, "scan", e, storage, &k)
    };
    let (up, down) = (pl("chunk_up")?, pl("chunk_down")?);
    let mut sizes = vec![len];
    while *sizes.last().unwrap() > c {
        sizes.push(sizes.last().unwrap().div_ceil(c));
    }
    sizes.push(1);
    let levels: Vec<wgpu::Buffer> = sizes[1..]
        .iter()
        .map(|m| scratch(ctx, rows * m * 16))
        .collect();
    let buf = |k: usize| if k == 0 { x } else { &levels[k - 1] };
    let top = sizes.len() - 1;
    let binds = |k: usize| {
        let (m, nch) = (sizes[k], sizes[k].div_ceil(c));
        [
            Bind::prefix(5, buf(k), rows * m * 16),
            Bind::prefix(6, buf(k + 1), rows * nch * 16),
        ]
    };
    for (k, &m) in sizes[..top].iter().enumerate() {
        let n = rows * m.div_ceil(c);
        let mut prm = Params::new(rows, m);
        prm.total = n as u32;
        s.dispatch(&up, &prm, &binds(k), n.div_ceil(w))?;
    }
    for k in (0..top).rev().filter(|&k| sizes[k] > c) {
        let prm = Params::new(rows, sizes[k]);
        s.dispatch(&down, &prm, &binds(k), (rows * sizes[k]).div_ceil(w))?;
    }
    Ok(())
}

/// Operands of [`linear_scan`]: `a_re, b_re: [.., L]` and, for complex operands, `a_im`, `b_im`
/// of the same shape (a missing imaginary part is zero).
#[derive(Clone, Copy)]
pub struct ScanOperands<'a, T: Element> {
    /// Re a: `[.., L]`.
    pub a_re: &'a Tensor<T>,
    /// Im a, same shape; `None` is zero.
    pub a_im: Option<&'a Tensor<T>>,
    /// Re b: `[.., L]`.
    pub b_re: &'a Tensor<T>,
    /// Im b, same shape; `None` is zero.
    pub b_im: Option<&'a Tensor<T>>,
}

const OP: &str = "linear_scan";

impl<T: Element> ScanOperands<'_, T> {
    fn check(&self) -> Result<(usize, usize)> {
        let s = self.a_re.shape();
        if s.is_empty() || s.contains(&0) {
            return Err(Error::Shape {
                op: OP,
                name: "a_re",
                expected: "[.., L], e.g. [B, H, N, L], every dim >= 1".into(),
                got: s.to_vec(),
            });
        }
        for (name, t) in [
            ("a_im", self.a_im),
            ("b_re", Some(self.b_re)),
            ("b_im", self.b_im),
        ] {
            if let Some(t) = t {
                if t.shape() != s {
                    return Err(Error::Shape {
                        op: OP,
                        name,
                        expected: format!("{s:?} (the shape of a_re)"),
                        got: t.shape().to_vec(),
                    });
                }
            }
        }
        let len = s[s.len() - 1];
        Ok((self.a_re.len() / len, len))
    }
    fn complex(&self) -> bool {
        self.a_im.is_some() || self.b_im.is_some()
    }
}

/// `h_t = a_t h_{t−1} + b_t`, `h_{−1} = 0`, along the last axis of `a, b: [.., L]` (e.g.
/// `[B, H, N, L]`), any L. Returns `(h_re, h_im)`, `h_im` present when an operand is complex.
/// Storage dtype T, arithmetic f32. Errors: [`Error::Shape`], [`Error::TooLarge`] when one row's
/// scan state (16·L bytes) exceeds a storage binding.
pub fn linear_scan<T: Element>(
    ctx: &Context,
    ops: &ScanOperands<'_, T>,
) -> Result<(Tensor<T>, Option<Tensor<T>>)> {
    let mut h = driver::run_multi(ctx, &LinearScan { ops })?;
    let h_im = (h.len() == 2).then(|| h.pop().expect("two outputs"));
    Ok((h.pop().expect("an output"), h_im))
}

/// [`linear_scan`] into existing outputs (`h_im` required exactly when an operand is complex).
pub fn linear_scan_into<T: Element>(
    ctx: &Context,
    ops: &ScanOperands<'_, T>,
    h_re: &Tensor<T>,
    h_im: Option<&Tensor<T>>,
) -> Result<()> {
    let outs = scan_outs(ops, h_re, h_im)?;
    driver::run_into_multi(ctx, &LinearScan { ops }, &outs)
}

/// Records [`linear_scan`] into a [`Schedule`].
pub fn record_linear_scan<T: Element>(
    s: &mut Schedule<'_>,
    ops: &ScanOperands<'_, T>,
    h_re: &Tensor<T>,
    h_im: Option<&Tensor<T>>,
) -> Result<()> {
    let outs = scan_outs(ops, h_re, h_im)?;
    driver::record_multi(s, &LinearScan { ops }, &outs)
}

/// The outputs, after checking that `h_im` is given exactly when an operand is complex.
fn scan_outs<'a, T: Element>(
    ops: &ScanOperands<'_, T>,
    h_re: &'a Tensor<T>,
    h_im: Option<&'a Tensor<T>>,
) -> Result<Vec<&'a Tensor<T>>> {
    ops.check()?;
    if ops.complex() != h_im.is_some() {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "h_im",
            reason: "required exactly when an operand is complex".into(),
        });
    }
    Ok([Some(h_re), h_im].into_iter().flatten().collect())
}

struct LinearScan<'a, 'b, T: Element> {
    ops: &'a ScanOperands<'b, T>,
}

impl<T: Element> RowOp for LinearScan<'_, '_, T> {
    type T = T;
    /// L and the chunk length.
    type Dims = (u64, u64);
    const NAME: &'static str = OP;

    fn plan(&self, ctx: &Context) -> Result<(Self::Dims, Plan)> {
        let (rows, len) = self.ops.check()?;
        let (rows, len) = (rows as u64, len as u64);
        let es = size_of::<T>() as u64;
        let lc = chunk_len(ctx, len, 1);
        let mut plan = Plan::new(self.ops.a_re.shape().to_vec(), rows, len)
            .bytes("scan state", lc * 16)
            .bytes("a", len * es);
        plan.n_outs = 1 + self.ops.complex() as usize;
        Ok(((len, lc), plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        let o = self.ops;
        let mut i = vec![Input::of("a_re", o.a_re), Input::of("b_re", o.b_re)];
        i.extend(o.a_im.map(|t| Input::of("a_im", t)));
        i.extend(o.b_im.map(|t| Input::of("b_im", t)));
        i
    }

    fn record_rows(&self, s: &mut Schedule<'_>, d: &Self::Dims, p: &Pass<'_>) -> Result<()> {
        let ctx = s.context();
        let (ops, storage, (len, lc)) = (self.ops, p.storage, *d);
        let wg = workgroup_size(ctx);
        let pl = |e| ctx.pipelines.get(ctx, "scan", e, storage, &[("WG", wg)]);
        let es = size_of::<T>() as u64;
        let (first, n) = (p.r0 * len, p.nr * len);
        let (x, carry) = (scratch(ctx, p.nr * lc * 16), scratch(ctx, p.nr * 16));
        let (ba, off) = Bind::elems(ctx, 1, ops.a_re.buffer(), es, first, n);
        let bai = Bind::elems(ctx, 2, ops.a_im.unwrap_or(ops.a_re).buffer(), es, first, n).0;
        let bb = Bind::elems(ctx, 3, ops.b_re.buffer(), es, first, n).0;
        let bbi = Bind::elems(ctx, 4, ops.b_im.unwrap_or(ops.b_re).buffer(), es, first, n).0;
        let bc = Bind::all(17, &carry);
        let mut outs = Vec::new();
        let mut out_off = 0;
        for (out, slot) in p.outs.iter().zip([7, 8]) {
            let (b, off) = out.bind(ctx, slot, n);
            out_off = off;
            outs.push(b);
        }
        let entry = match p.outs.len() {
            2 => "store_complex",
            _ => "store_real",
        };
        let chunks = len.div_ceil(lc);
        for c in 0..chunks {
            let t0 = c * lc;
            let m = lc.min(len - t0);
            let mut prm = Params::new(p.nr, m);
            prm.flags = ops.a_im.is_some() as u32 | (ops.b_im.is_some() as u32) << 1;
            prm.flags |= ((c > 0) as u32) << 2;
            (prm.stride, prm.t0, prm.in_off) = (len as u32, t0 as u32, off);
            let bx = Bind::prefix(5, &x, p.nr * m * 16);
            let groups = (p.nr * m).div_ceil(wg as u64);
            s.dispatch(&*pl("load_ab")?, &prm, &[ba, bai, bb, bbi, bx, bc], groups)?;
            record_levels(s, storage, &x, p.nr, m)?;
            if c + 1 < chunks {
                let g = p.nr.div_ceil(wg as u64);
                s.dispatch(&*pl("save_carry")?, &prm, &[bx, bc], g)?;
            }
            prm.out_off = out_off;
            let mut binds = vec![bx];
            binds.extend(&outs);
            s.dispatch(&*pl(entry)?, &prm, &binds, groups)?;
        }
        Ok(())
    }
}

const SSM: &str = "s4d_scan";

fn u_dims(op: &'static str, u: &[usize], h: usize, rank: usize, what: &str) -> Result<()> {
    if u.len() != rank || u[1] != h || u.contains(&0) {
        return Err(Error::Shape {
            op,
            name: "u",
            expected: format!("{what} with H = {h}, every dim >= 1"),
            got: u.to_vec(),
        });
    }
    Ok(())
}

/// The S4D recurrent mode over a whole sequence: `x_t = Ā x_{t−1} + B̄ u_t` (x_{−1} = 0) by
/// parallel scan, `y_t = 2 Re Σ_n C_n x_{n,t} + D u_t`, for `u: [B, H, L]` → `y: [B, H, L]`. Equal to
/// the FFT convolution with [`super::s4d_kernel`] up to rounding. Errors: [`Error::Shape`],
/// [`Error::TooLarge`] when one (b, h) row's states (16·N2·L bytes) exceed a storage binding.
pub fn s4d_scan<T: Element>(
    ctx: &Context,
    ssm: &DiagonalSsm<T>,
    u: &Tensor<T>,
    disc: Discretization,
) -> Result<Tensor<T>> {
    driver::run(ctx, &S4dScan::new(ssm, u, disc))
}

/// [`s4d_scan`] into an existing `out: [B, H, L]`.
pub fn s4d_scan_into<T: Element>(
    ctx: &Context,
    ssm: &DiagonalSsm<T>,
    u: &Tensor<T>,
    out: &Tensor<T>,
    disc: Discretization,
) -> Result<()> {
    driver::run_into(ctx, &S4dScan::new(ssm, u, disc), out)
}

/// Records [`s4d_scan`] into a [`Schedule`].
pub fn record_s4d_scan<T: Element>(
    s: &mut Schedule<'_>,
    ssm: &DiagonalSsm<T>,
    u: &Tensor<T>,
    out: &Tensor<T>,
    disc: Discretization,
) -> Result<()> {
    driver::record(s, &S4dScan::new(ssm, u, disc), out)
}

/// The S4D scan; `batch` adds the layout, packed sequences and the state in and out
/// ([`super::batch`]).
pub(crate) struct S4dScan<'a, T: Element> {
    pub ssm: &'a DiagonalSsm<T>,
    pub u: &'a Tensor<T>,
    pub disc: Discretization,
    pub batch: super::batch::Resolved<'a>,
}

impl<'a, T: Element> S4dScan<'a, T> {
    fn new(ssm: &'a DiagonalSsm<T>, u: &'a Tensor<T>, disc: Discretization) -> Self {
        Self {
            ssm,
            u,
            disc,
            batch: Default::default(),
        }
    }
}

/// H, N2, L, the chunk length, the discretised-mode table (recorded in the prologue) and the
/// packed-sequence table.
pub(crate) struct ScanDims {
    h: u64,
    n2: u64,
    len: u64,
    lc: u64,
    modes: Option<wgpu::Buffer>,
    seqs: Option<wgpu::Buffer>,
}

impl<T: Element> RowOp for S4dScan<'_, T> {
    type T = T;
    type Dims = ScanDims;
    const NAME: &'static str = SSM;

    fn plan(&self, ctx: &Context) -> Result<(Self::Dims, Plan)> {
        let (h, n2) = self.ssm.dims(SSM)?;
        let u = self.u.shape();
        let (b, len) = self.batch.dims(SSM, u, h, n2)?;
        check_disc(SSM, self.disc)?;
        let (bh, len, n2) = ((b * h) as u64, len as u64, n2 as u64);
        let es = size_of::<T>() as u64;
        // A pass takes whole groups of rows: their states chunk together.
        let group = self.batch.row_group(h);
        let lc = chunk_len(ctx, len, n2 * group);
        let mut plan = Plan::new(u.to_vec(), bh, len)
            .bytes("states", n2 * lc * 16)
            .bytes("u", len * es);
        plan.row_group = group;
        plan.partial_out = self.batch.cu.is_some();
        let seqs = self.batch.seq_table(ctx, len as usize);
        let d = ScanDims {
            h: h as u64,
            n2,
            len,
            lc,
            modes: None,
            seqs,
        };
        Ok((d, plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        let mut i = self.ssm.inputs();
        i.push(Input::of("u", self.u));
        i.extend(self.batch.inputs());
        i
    }

    fn record_prologue(&self, s: &mut Schedule<'_>, d: &mut Self::Dims) -> Result<()> {
        d.modes = Some(record_modes(s, self.ssm, self.disc)?);
        Ok(())
    }

    fn record_rows(&self, s: &mut Schedule<'_>, d: &Self::Dims, p: &Pass<'_>) -> Result<()> {
        let ctx = s.context();
        let (h, n2, len, lc) = (d.h, d.n2, d.len, d.lc);
        let modes = d.modes.as_ref().expect("the prologue records the modes");
        let wg = workgroup_size(ctx);
        let w = wg as u64;
        let pl = |e| ctx.pipelines.get(ctx, "scan", e, p.storage, &[("WG", wg)]);
        let (r0, nr, es) = (p.r0, p.nr, size_of::<T>() as u64);
        let rows = nr * n2;
        let (x, carry) = (scratch(ctx, rows * lc * 16), scratch(ctx, rows * 16));
        let (ssm, bt) = (self.ssm, &self.batch);
        let (bu, in_off) = Bind::elems(ctx, 10, self.u.buffer(), es, r0 * len, nr * len);
        let (by, out_off) = p.out.bind(ctx, 14, nr * len);
        let bm = bind_buffer(ctx, SSM, "modes", 9, modes)?;
        // Unused optional inputs are bound to the mode table (read-only, never read).
        let bseq = Bind::all(18, d.seqs.as_ref().unwrap_or(modes));
        let bx0 = Bind::all(15, bt.initial.map_or(modes, |t| t.buffer()));
        let bc = Bind::all(17, &carry);
        let cd = [
            bind_whole(ctx, SSM, "C_re", 11, &ssm.c_re)?,
            bind_whole(ctx, SSM, "C_im", 12, &ssm.c_im)?,
            bind_whole(ctx, SSM, "D", 13, &ssm.d)?,
        ];
        let chunks = len.div_ceil(lc);
        for c in 0..chunks {
            let t0 = c * lc;
            let m = lc.min(len - t0);
            let mut prm = Params::new(rows, m);
            (prm.h, prm.n2, prm.bh0) = (h as u32, n2 as u32, r0 as u32);
            (prm.stride, prm.t0, prm.in_off, prm.out_off) =
                (len as u32, t0 as u32, in_off, out_off);
            (prm.hs, prm.ts) = bt.strides(h, len);
            (prm.nseq, prm.sflags) = bt.seq_flags();
            prm.flags = ((c > 0) as u32) << 2;
            let bx = Bind::prefix(5, &x, rows * m * 16);
            let groups = (rows * m).div_ceil(w);
            let binds = [bm, bu, bx, bc, bseq, bx0];
            s.dispatch(&*pl("load_ssm")?, &prm, &binds, groups)?;
            record_levels(s, p.storage, &x, rows, m)?;
            if c + 1 < chunks {
                s.dispatch(&*pl("save_carry")?, &prm, &[bx, bc], rows.div_ceil(w))?;
            }
            if let Some(fin) = bt.final_state {
                let n = rows * prm.nseq.max(1) as u64;
                prm.total = n as u32;
                let binds = [bx, bseq, bx0, Bind::all(16, fin.buffer())];
                s.dispatch(&*pl("save_state")?, &prm, &binds, n.div_ceil(w))?;
            }
            prm.total = (nr * m) as u32;
            let binds = [bx, bu, by, cd[0], cd[1], cd[2], bseq];
            s.dispatch(&*pl("out_ssm")?, &prm, &binds, (nr * m).div_ceil(w))?;
        }
        Ok(())
    }
}

/// One step of the S4D recurrent mode: `x ← Ā x + B̄ u`, `y = 2 Re Σ_n C_n x_n + D u`, for
/// `state: [B, H, N2, 2]` (f32 (re, im) pairs) and `u: [B, H]`. Returns the new state and
/// `y: [B, H]`; the input state is not modified. Errors: [`Error::Shape`].
pub fn s4d_step<T: Element>(
    ctx: &Context,
    ssm: &DiagonalSsm<T>,
    state: &Tensor<f32>,
    u: &Tensor<T>,
    disc: Discretization,
) -> Result<(Tensor<f32>, Tensor<T>)> {
    let new_state = Tensor::<f32>::empty(ctx, state.shape())?;
    let op = S4dStep {
        ssm,
        state,
        u,
        disc,
        new_state: &new_state,
    };
    let y = driver::run(ctx, &op)?;
    Ok((new_state, y))
}

/// [`s4d_step`] into an existing `new_state` (shaped like `state`, not it) and `y: [B, H]`.
pub fn s4d_step_into<T: Element>(
    ctx: &Context,
    ssm: &DiagonalSsm<T>,
    state: &Tensor<f32>,
    u: &Tensor<T>,
    disc: Discretization,
    (new_state, y): (&Tensor<f32>, &Tensor<T>),
) -> Result<()> {
    let op = S4dStep {
        ssm,
        state,
        u,
        disc,
        new_state,
    };
    driver::run_into(ctx, &op, y)
}

/// Records [`s4d_step_into`] into a [`Schedule`].
pub fn record_s4d_step<T: Element>(
    s: &mut Schedule<'_>,
    ssm: &DiagonalSsm<T>,
    state: &Tensor<f32>,
    u: &Tensor<T>,
    disc: Discretization,
    (new_state, y): (&Tensor<f32>, &Tensor<T>),
) -> Result<()> {
    let op = S4dStep {
        ssm,
        state,
        u,
        disc,
        new_state,
    };
    driver::record(s, &op, y)
}

const STEP: &str = "s4d_step";

struct S4dStep<'a, T: Element> {
    ssm: &'a DiagonalSsm<T>,
    state: &'a Tensor<f32>,
    u: &'a Tensor<T>,
    disc: Discretization,
    new_state: &'a Tensor<f32>,
}

impl<T: Element> RowOp for S4dStep<'_, T> {
    type T = T;
    /// H, N2 and the discretised-mode table (recorded in the prologue).
    type Dims = (u64, u64, Option<wgpu::Buffer>);
    const NAME: &'static str = STEP;

    /// One pass: the state is bound whole.
    fn plan(&self, _: &Context) -> Result<(Self::Dims, Plan)> {
        let (h, n2) = self.ssm.dims(STEP)?;
        u_dims(STEP, self.u.shape(), h, 2, "[B, H]")?;
        check_disc(STEP, self.disc)?;
        let b = self.u.shape()[0];
        for (name, t) in [("state", self.state), ("new_state", self.new_state)] {
            if t.shape() != [b, h, n2, 2] {
                return Err(Error::Shape {
                    op: STEP,
                    name,
                    expected: format!("[{b}, {h}, {n2}, 2] ([B, H, N2, (re, im)])"),
                    got: t.shape().to_vec(),
                });
            }
        }
        if self.new_state.buffer() == self.state.buffer() {
            return Err(Error::InvalidArgument {
                op: STEP,
                name: "new_state",
                reason: "aliases input `state`".into(),
            });
        }
        let n = (b * h) as u64;
        let es = size_of::<T>() as u64;
        let plan = Plan::new(self.u.shape().to_vec(), 1, n)
            .bytes("state", n * n2 as u64 * 8)
            .bytes("u", n * es);
        Ok(((h as u64, n2 as u64, None), plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        let mut i = self.ssm.inputs();
        i.push(Input::of("u", self.u));
        i.push(Input::of("state", self.state));
        i.push(Input::of("new_state", self.new_state));
        i
    }

    fn record_prologue(&self, s: &mut Schedule<'_>, d: &mut Self::Dims) -> Result<()> {
        d.2 = Some(record_modes(s, self.ssm, self.disc)?);
        Ok(())
    }

    fn record_rows(&self, s: &mut Schedule<'_>, d: &Self::Dims, p: &Pass<'_>) -> Result<()> {
        let ctx = s.context();
        let (h, n2, ssm) = (d.0, d.1, self.ssm);
        let modes = d.2.as_ref().expect("the prologue records the modes");
        let wg = workgroup_size(ctx);
        let pl = ctx
            .pipelines
            .get(ctx, "scan", "step", p.storage, &[("WG", wg)])?;
        let n = self.u.len() as u64;
        let binds = [
            bind_buffer(ctx, STEP, "modes", 9, modes)?,
            bind_whole(ctx, STEP, "u", 10, self.u)?,
            bind_whole(ctx, STEP, "C_re", 11, &ssm.c_re)?,
            bind_whole(ctx, STEP, "C_im", 12, &ssm.c_im)?,
            bind_whole(ctx, STEP, "D", 13, &ssm.d)?,
            p.out.bind(ctx, 14, n).0,
            bind_whole(ctx, STEP, "state", 15, self.state)?,
            bind_whole(ctx, STEP, "state", 16, self.new_state)?,
        ];
        let mut prm = Params::new(n, 1);
        prm.h = h as u32;
        prm.n2 = n2 as u32;
        s.dispatch(&pl, &prm, &binds, n.div_ceil(wg as u64))
    }
}
