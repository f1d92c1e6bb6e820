//! The S4D convolution mode over real-world batches (issue 14): the options of [`S4dBatch`] and
//! the outputs of [`super::s4d_scan_batch`], by FFT convolution (shaders/s4d_batch.wgsl).
//!
//! u is gathered through its strides into zero-padded f32 rows, one per (sequence, head), so a
//! packed sequence's row holds only its own tokens and nothing crosses a boundary; the rows are
//! convolved with the kernel K ([`super::causal_conv`], K and D widened to f32) and y is written
//! back through the strides. The state enters by its state form: an initial state adds
//! `2 Re Σ_n C_n Ā_n^{t+1} x0_n` to `y_t`, and the final state is the reduction
//! `Ā^len x0 + Σ_j Ā^{len−1−j} B̄ u_j`, with Ā's powers formed as in [`super::s4d_kernel`]
//! (exact phase reduction, no repeated products).

use super::batch::{state_shape, Resolved, S4dBatch};
use super::kernel::{check_disc, record_modes, DiagonalSsm, Discretization};
use crate::bind::{bind_buffer, bind_whole, Bind};
use crate::driver::{self, Input, Pass, Plan, RowOp};
use crate::schedule::Schedule;
use crate::sizes::workgroup_size;
use crate::{Context, Element, Error, Result, Tensor};

const OP: &str = "s4d_conv";

crate::uniform! {
    /// The `Params` uniform of shaders/s4d_batch.wgsl.
    pub(crate) struct Params {
        h: u32,
        n2: u32,
        len: u32,
        lp: u32,
        rows: u32,
        total: u32,
        hs: u32,
        ts: u32,
        y_off: u32,
        nseq: u32,
        flags: u32,
        _p: u32,
    }
}

/// The S4D convolution mode over a batch in `b`'s layout, from each sequence's initial state:
/// `y_t = Σ_{s≤t} K_s u_{t−s} + D u_t + 2 Re Σ_n C_n Ā_n^{t+1} x0_n` per sequence, with
/// `K_l = 2 Re Σ_n C_n B̄_n Ā_n^l` (Gu et al. 2022, arXiv 2206.11893); the same outputs as
/// [`super::s4d_scan_batch`]: `y` shaped like u and the final state `[N, H, N2, 2]` f32
/// (`x_len = Ā^len x0 + Σ_j Ā^{len−1−j} B̄ u_j`; an empty sequence's is its initial state), so
/// two calls equal one. K is formed in T (as in [`super::s4d_conv`]), the convolution runs in
/// f32.
///
/// # Errors
/// [`Error::Shape`] (u, the states, B ≠ 1 with packed sequences), [`Error::InvalidArgument`]
/// (cu_seqlens past L, a rule other than ZOH and bilinear, a sequence longer than 65 535 · WG
/// tokens, WG = 256 on most adapters), [`Error::TooLarge`] when u or its gathered rows
/// `[N, H, longest sequence]` (f32) exceed a storage binding, and those of
/// [`super::causal_conv`].
pub fn s4d_conv_batch<T: Element>(
    ctx: &Context,
    ssm: &DiagonalSsm<T>,
    u: &Tensor<T>,
    disc: Discretization,
    b: &S4dBatch<'_>,
) -> Result<(Tensor<T>, Tensor<f32>)> {
    let fin = Tensor::<f32>::empty(ctx, &state_shape(OP, ssm, u, b)?)?;
    let y = Tensor::empty(ctx, u.shape())?;
    s4d_conv_batch_into(ctx, ssm, u, disc, b, (&y, &fin))?;
    Ok((y, fin))
}

/// [`s4d_conv_batch`] into existing `y` (shaped like u; with packed sequences, its tokens past
/// the last offset keep their values) and `final_state: [N, H, N2, 2]`, one submission.
pub fn s4d_conv_batch_into<T: Element>(
    ctx: &Context,
    ssm: &DiagonalSsm<T>,
    u: &Tensor<T>,
    disc: Discretization,
    b: &S4dBatch<'_>,
    (y, final_state): (&Tensor<T>, &Tensor<f32>),
) -> Result<()> {
    let op = ConvBatch {
        ssm,
        u,
        disc,
        batch: Resolved::new(b, Some(final_state)),
    };
    driver::run_into(ctx, &op, y)
}

/// The final-state reduction's workgroup: a power of two (its tree sum halves it).
fn reduce_wg(ctx: &Context) -> u32 {
    1 << workgroup_size(ctx).ilog2()
}

struct ConvBatch<'a, T: Element> {
    ssm: &'a DiagonalSsm<T>,
    u: &'a Tensor<T>,
    disc: Discretization,
    batch: Resolved<'a>,
}

struct Dims {
    h: u64,
    n2: u64,
    len: u64,
    /// The longest sequence (the gathered rows' length), >= 1.
    lp: u64,
    /// Sequences N.
    n: u64,
    seqs: Option<wgpu::Buffer>,
    modes: Option<wgpu::Buffer>,
}

impl<T: Element> RowOp for ConvBatch<'_, T> {
    type T = T;
    type Dims = Dims;
    const NAME: &'static str = OP;

    /// One pass over the whole batch: the gathered rows mix heads and sequences.
    fn plan(&self, ctx: &Context) -> Result<(Dims, Plan)> {
        let (h, n2) = self.ssm.dims(OP)?;
        let (b, len) = self.batch.dims(OP, self.u.shape(), h, n2)?;
        check_disc(OP, self.disc)?;
        let cu = self.batch.cu;
        let n = cu.map_or(b, |c| c.count());
        let lp = match cu {
            Some(c) => (0..n).map(|i| c.range(i).len()).max().unwrap_or(0),
            None => len,
        }
        .max(1) as u64;
        // The final-state reduction loops lp / WG times per invocation (lavapipe stops loops
        // past ~65 535 iterations).
        let most = 65_535 * reduce_wg(ctx) as u64;
        if lp > most {
            return Err(Error::InvalidArgument {
                op: OP,
                name: "u",
                reason: format!(
                    "a sequence of {lp} tokens; the convolution mode takes at most {most} \
                     (use s4d_scan_batch)"
                ),
            });
        }
        let total = self.u.len() as u64;
        let rows = (n * h) as u64;
        let mut plan = Plan::new(self.u.shape().to_vec(), 1, total)
            .bytes("u", total * size_of::<T>() as u64)
            .bytes("gathered rows", rows * lp * 4);
        plan.partial_out = cu.is_some();
        let d = Dims {
            h: h as u64,
            n2: n2 as u64,
            len: len as u64,
            lp,
            n: n as u64,
            seqs: self.batch.seq_table(ctx, len),
            modes: None,
        };
        Ok((d, plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        let mut i = self.ssm.inputs();
        i.push(Input::of("u", self.u));
        i.extend(self.batch.inputs());
        i
    }

    fn record_prologue(&self, s: &mut Schedule<'_>, d: &mut Dims) -> Result<()> {
        d.modes = Some(record_modes(s, self.ssm, self.disc)?);
        Ok(())
    }

    fn record_rows(&self, s: &mut Schedule<'_>, d: &Dims, p: &Pass<'_>) -> Result<()> {
        let ctx = s.context();
        let wg = workgroup_size(ctx);
        let w = wg as u64;
        let pl = |e| {
            ctx.pipelines
                .get(ctx, "s4d_batch", e, p.storage, &[("WG", wg)])
        };
        let (h, n2, len, lp) = (d.h, d.n2, d.len, d.lp);
        let rows = d.n * h;
        let modes = d.modes.as_ref().expect("the prologue records the modes");
        let (hs, ts) = self.batch.strides(h, len);
        let (nseq, flags) = self.batch.seq_flags();
        let mut prm = Params {
            h: h as u32,
            n2: n2 as u32,
            len: len as u32,
            lp: lp as u32,
            rows: rows as u32,
            total: 0,
            hs,
            ts,
            y_off: 0,
            nseq,
            flags,
            _p: 0,
        };
        // Unused optional inputs are bound to the mode table (read-only, never read).
        let bseq = Bind::all(3, d.seqs.as_ref().unwrap_or(modes));
        let bx0 = Bind::all(7, self.batch.initial.map_or(modes, |t| t.buffer()));
        let bm = bind_buffer(ctx, OP, "modes", 4, modes)?;

        let ug = Tensor::<f32>::empty(ctx, &[d.n as usize, h as usize, lp as usize])?;
        let bug = bind_whole(ctx, OP, "gathered rows", 2, &ug)?;
        prm.total = (rows * lp) as u32;
        let binds = [bind_whole(ctx, OP, "u", 1, self.u)?, bug, bseq];
        s.dispatch(&*pl("gather")?, &prm, &binds, (rows * lp).div_ceil(w))?;

        // K in T (as s4d_conv keeps it), then K and D in f32 for the row convolution.
        let kt = Tensor::<T>::empty(ctx, &[h as usize, lp as usize])?;
        super::record_s4d_kernel(s, self.ssm, &kt, self.disc)?;
        let k32 = Tensor::<f32>::empty(ctx, &[h as usize, lp as usize])?;
        let d32 = Tensor::<f32>::empty(ctx, &[h as usize])?;
        for (src, dst) in [(kt.buffer(), &k32), (self.ssm.d.buffer(), &d32)] {
            let n = dst.len() as u64;
            prm.total = n as u32;
            let binds = [Bind::all(11, src), Bind::all(12, dst.buffer())];
            s.dispatch(&*pl("widen")?, &prm, &binds, n.div_ceil(w))?;
        }
        let yc = Tensor::<f32>::empty(ctx, ug.shape())?;
        super::record_causal_conv(s, &ug, &k32, &d32, &yc)?;

        let total = self.u.len() as u64;
        let (by, y_off) = p.out.bind(ctx, 9, total);
        (prm.total, prm.y_off) = (total as u32, y_off);
        let binds = [
            bseq,
            bm,
            bind_whole(ctx, OP, "C_re", 5, &self.ssm.c_re)?,
            bind_whole(ctx, OP, "C_im", 6, &self.ssm.c_im)?,
            bx0,
            Bind::all(8, yc.buffer()),
            by,
        ];
        s.dispatch(&*pl("finish")?, &prm, &binds, total.div_ceil(w))?;

        if let Some(fin) = self.batch.final_state {
            prm.total = (rows * n2) as u32;
            let c = [("WG", reduce_wg(ctx))];
            let pf = ctx
                .pipelines
                .get(ctx, "s4d_batch", "final_state", p.storage, &c)?;
            let binds = [bseq, bm, bx0, bug, Bind::all(10, fin.buffer())];
            s.dispatch(&pf, &prm, &binds, rows * n2)?;
        }
        Ok(())
    }
}
