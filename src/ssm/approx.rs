//! HiPPO online function approximation on the GPU (Gu et al. 2020, arXiv 2008.07669, §2-3):
//! stream each signal `f: [B, L]` through the memory recurrence and keep every coefficient
//! vector, `c: [B, L, N]`, `c[b, t]` being the memory after sample `f[b, t]`.
//!
//! - [`Step::Scaled`] (LegS only): step `k = t + 1` discretises `ċ = (1/t)(A c + B f)` with
//!   Δ = 1/k, i.e. `c_k = Ā_k c_{k−1} + B̄_k f_k` with `(Ā_k, B̄_k)` the generalised bilinear
//!   transform of `(A, B)` at step 1/k. `c_k` then projects the history onto `[0, k]` (in units
//!   of samples): reconstruct with [`super::hippo::reconstruct`] at `t = k`.
//! - [`Step::Fixed`] (any measure): `(Ā, B̄)` = [`super::discretize::discretize`] of `(A, B)` at
//!   step Δ, the same for every step; `c_k` then describes time `t = k·Δ`.
//!
//! The state starts at zero. `f` is f32 or f16 storage; the state and `c` are f32.

use bytemuck::{Pod, Zeroable};

use super::discretize::{check_dt, discretize, Method};
use super::hippo::{hippo, Measure};
use crate::pipeline::Storage;
use crate::schedule::{rows_per_pass, Bind, Schedule};
use crate::{Context, Element, Error, Result, Tensor};

const OP: &str = "hippo_approx";

/// Loop iterations per invocation and dispatch (half of lavapipe's 65 535 limit).
const LOOP_BUDGET: u64 = 1 << 15;

/// Largest state for a fixed step: `2·N` f32 of workgroup memory within the 16 KiB default.
pub const MAX_FIXED_N: usize = 2048;

/// How time advances per sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Step {
    /// Δ = 1/k at step k: LegS's scale-invariant memory over the whole history.
    Scaled,
    /// The same Δ at every step (a time-invariant system).
    Fixed(f64),
}

/// Options for [`hippo_approx`] and [`crate::reference::ssm::hippo_approx`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HippoApproxOptions {
    /// State size N >= 1.
    pub n: usize,
    pub measure: Measure,
    /// Window θ of LegT and FouT, in the same time unit as the step.
    pub theta: f64,
    pub step: Step,
    /// Discretisation rule (default bilinear). [`Step::Scaled`] takes Euler, backward Euler or
    /// bilinear; [`Step::Fixed`] also ZOH.
    pub method: Method,
}

impl Default for HippoApproxOptions {
    fn default() -> Self {
        Self {
            n: 64,
            measure: Measure::LegS,
            theta: 1.0,
            step: Step::Scaled,
            method: Method::Bilinear,
        }
    }
}

/// Validates `opts` (see [`HippoApproxOptions`]).
pub fn check_options(op: &'static str, opts: &HippoApproxOptions) -> Result<()> {
    let bad = |name, reason: String| Err(Error::InvalidArgument { op, name, reason });
    if opts.n == 0 {
        return bad("n", "the state size must be >= 1".into());
    }
    match opts.step {
        Step::Scaled if opts.measure != Measure::LegS => bad(
            "step",
            format!(
                "the scaled step 1/k is LegS's; {:?} takes a fixed dt",
                opts.measure
            ),
        ),
        Step::Scaled if opts.method == Method::Zoh => bad(
            "method",
            "the scaled step takes euler, backward-euler or bilinear".into(),
        ),
        Step::Fixed(dt) => check_dt(op, dt),
        Step::Scaled => Ok(()),
    }?;
    if matches!(opts.measure, Measure::LegT | Measure::FouT)
        && !(opts.theta.is_finite() && opts.theta > 0.0)
    {
        return bad(
            "theta",
            format!("{} is not a finite window > 0", opts.theta),
        );
    }
    Ok(())
}

/// `(B, L)` of a signal tensor `f: [L]` or `[B, L]`, and the output shape.
pub fn check_shape(op: &'static str, f: &[usize], n: usize) -> Result<(usize, usize, Vec<usize>)> {
    let (b, l) = match *f {
        [l] => (1, l),
        [b, l] => (b, l),
        _ => (0, 0),
    };
    if b == 0 || l == 0 {
        return Err(Error::Shape {
            op,
            name: "f",
            expected: "[L] or [B, L] with every dim >= 1".into(),
            got: f.to_vec(),
        });
    }
    let mut out = f.to_vec();
    out.push(n);
    Ok((b, l, out))
}

/// The times of samples `0 .. len` and the current time after the last one: sample `j` sits at
/// `x = j + 1` (scaled step, in samples) or `x = (j + 1)·Δ` (fixed step); `t` is the last of them.
/// Feed these to [`super::hippo::reconstruct`] with the coefficients `c[len − 1]`.
pub fn sample_grid(step: Step, len: usize) -> (Vec<f64>, f64) {
    let unit = match step {
        Step::Scaled => 1.0,
        Step::Fixed(dt) => dt,
    };
    let xs: Vec<f64> = (1..=len).map(|k| k as f64 * unit).collect();
    (xs, len as f64 * unit)
}

/// `(Ā: [N, N], B̄: [N])` for a fixed step, f64.
pub fn fixed_step_matrices(opts: &HippoApproxOptions, dt: f64) -> Result<(Vec<f64>, Vec<f64>)> {
    let ss = hippo(opts.measure, opts.n, opts.theta)?;
    discretize(&ss.a, &ss.b, ss.n, 1, dt, opts.method)
}

fn whole(slot: u32, t: &Tensor<f32>) -> Bind<'_> {
    Bind {
        slot,
        buffer: t.buffer(),
        offset: 0,
        size: t.buffer().size(),
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    len: u32,
    n: u32,
    f_off: u32,
    c_off: u32,
    row0: u32,
    total: u32,
    alpha: f32,
    t0: u32,
    t1: u32,
    pad: [u32; 2],
}

/// Where [`record_hippo_approx`] notes the first NaN of the series; read it after submitting.
pub struct NanCheck {
    flag: Tensor<f32>,
}

impl NanCheck {
    /// Waits for the device and returns [`Error::NaN`] (flat index `b·L + t` into `f`) if the
    /// series held a NaN. Not on wasm32 (nothing may block there): use
    /// [`NanCheck::check_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn check(&self, ctx: &Context) -> Result<()> {
        pollster::block_on(self.check_async(ctx))
    }

    /// [`NanCheck::check`] without blocking: the flag is read back asynchronously.
    pub async fn check_async(&self, ctx: &Context) -> Result<()> {
        let bits = self.flag.to_vec_async(ctx).await?[0].to_bits();
        if bits == u32::MAX {
            return Ok(());
        }
        Err(Error::NaN {
            op: OP,
            name: "f".into(),
            index: bits as usize,
        })
    }
}

/// HiPPO coefficients of every prefix of each signal: `f: [B, L]` (or `[L]`), f32 or f16 ->
/// `c: [B, L, N]` (or `[L, N]`) f32. Blocks until the device is done, to check for NaN.
///
/// Errors: [`Error::Shape`], [`Error::InvalidArgument`] for bad options, [`Error::NaN`] (flat
/// index into `f`) when the series holds NaN, [`Error::TooLarge`] when one signal's coefficients
/// do not fit a storage binding or the state does not fit workgroup memory (fixed step).
/// Not on wasm32 (it blocks): record with [`record_hippo_approx`] and await
/// [`NanCheck::check_async`] there.
#[cfg(not(target_arch = "wasm32"))]
pub fn hippo_approx<T: Element>(
    ctx: &Context,
    f: &Tensor<T>,
    opts: &HippoApproxOptions,
) -> Result<Tensor<f32>> {
    let (_, _, shape) = check_shape(OP, f.shape(), opts.n)?;
    let out = Tensor::empty(ctx, &shape)?;
    hippo_approx_into(ctx, f, &out, opts)?;
    Ok(out)
}

/// [`hippo_approx`] writing into an existing `out: [B, L, N]` f32, one submission (not on
/// wasm32).
#[cfg(not(target_arch = "wasm32"))]
pub fn hippo_approx_into<T: Element>(
    ctx: &Context,
    f: &Tensor<T>,
    out: &Tensor<f32>,
    opts: &HippoApproxOptions,
) -> Result<()> {
    let check = crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        let check = record_hippo_approx(&mut s, f, out, opts)?;
        s.submit();
        Ok(check)
    })?;
    check.check(ctx)
}

/// Records the approximation into a [`Schedule`]; NaN in `f` propagates into `out` and is
/// reported by the returned [`NanCheck`] once the schedule has been submitted.
pub fn record_hippo_approx<T: Element>(
    s: &mut Schedule<'_>,
    f: &Tensor<T>,
    out: &Tensor<f32>,
    opts: &HippoApproxOptions,
) -> Result<NanCheck> {
    let ctx = s.context();
    check_options(OP, opts)?;
    let (rows, len, shape) = check_shape(OP, f.shape(), opts.n)?;
    if out.shape() != shape.as_slice() {
        return Err(Error::Shape {
            op: OP,
            name: "out",
            expected: format!("{shape:?}"),
            got: out.shape().to_vec(),
        });
    }
    let n = opts.n as u64;
    let (l64, es) = (len as u64, size_of::<T>() as u64);
    if l64 * n > u32::MAX as u64 || (rows as u64) * l64 > u32::MAX as u64 - 1 {
        return Err(Error::TooLarge {
            op: OP,
            what: "the index range of c".into(),
            needed: rows as u64 * l64 * n,
            limit: u32::MAX as u64,
        });
    }
    let per = rows_per_pass(ctx, OP, &[("f", l64 * es), ("c", l64 * n * 4)], rows)?;
    let storage = Storage::for_dtype(ctx, T::DTYPE);
    let flag = Tensor::<f32>::from_slice(ctx, &[f32::from_bits(u32::MAX)], &[1])?;
    let lim = ctx.limits();
    let fixed = match opts.step {
        Step::Fixed(dt) => {
            let (ab, bb) = fixed_step_matrices(opts, dt)?;
            let nmax = (opts.n.next_power_of_two().max(64)) as u64;
            let mem = lim.max_compute_workgroup_storage_size as u64;
            if opts.n > MAX_FIXED_N || 2 * nmax * 4 > mem {
                return Err(Error::TooLarge {
                    op: OP,
                    what: format!("a state of N = {} in workgroup memory", opts.n),
                    needed: 2 * nmax * 4,
                    limit: mem,
                });
            }
            let nn = opts.n;
            let ab: Vec<f32> = (0..nn * nn)
                .map(|k| ab[(k % nn) * nn + k / nn] as f32)
                .collect(); // transposed: see shaders/hippo.wgsl
            let bb: Vec<f32> = bb.iter().map(|&x| x as f32).collect();
            let ta = Tensor::from_slice(ctx, &ab, &[opts.n, opts.n])?;
            let tb = Tensor::from_slice(ctx, &bb, &[opts.n])?;
            Some((ta, tb, nmax as u32))
        }
        Step::Scaled => None,
    };
    let max_wg = lim
        .max_compute_invocations_per_workgroup
        .min(lim.max_compute_workgroup_size_x);
    let (pipeline, wg) = match &fixed {
        Some((_, _, nmax)) => {
            let wg = (opts.n as u32)
                .next_power_of_two()
                .clamp(32, 256)
                .min(max_wg);
            let consts = [("WG", wg), ("NMAX", *nmax)];
            (
                ctx.pipelines.get(ctx, "hippo", "lti", storage, &consts)?,
                wg,
            )
        }
        None => {
            let wg = 64.min(max_wg);
            let consts = [("WG", wg), ("NMAX", 64)];
            (
                ctx.pipelines.get(ctx, "hippo", "legs", storage, &consts)?,
                wg,
            )
        }
    };
    let alpha = opts.method.gbt_alpha().unwrap_or(0.5) as f32;
    // Loop iterations one invocation runs per step. lavapipe (llvmpipe) stops an invocation
    // silently after 65 535 loop iterations, all loops together, so a long series is cut into
    // dispatches of at most LOOP_BUDGET iterations each; real GPUs' watchdogs like that too.
    let iters_per_step = match &fixed {
        Some(_) => n.div_ceil(wg as u64) * (n + 1) + 2,
        None => n + 2,
    };
    if iters_per_step > LOOP_BUDGET {
        return Err(Error::TooLarge {
            op: OP,
            what: format!(
                "one step of N = {} (loop iterations per invocation)",
                opts.n
            ),
            needed: iters_per_step,
            limit: LOOP_BUDGET,
        });
    }
    let steps_per_dispatch = LOOP_BUDGET / iters_per_step;
    let bflag = Bind {
        slot: 5,
        buffer: flag.buffer(),
        offset: 0,
        size: 4,
    };
    let mut r0 = 0u64;
    while r0 < rows as u64 {
        let nr = (per as u64).min(rows as u64 - r0);
        let (bf, f_off) = Bind::elems(ctx, 1, f.buffer(), es, r0 * l64, nr * l64);
        let (bc, c_off) = Bind::elems(ctx, 2, out.buffer(), 4, r0 * l64 * n, nr * l64 * n);
        let mut prm = Params {
            rows: nr as u32,
            len: len as u32,
            n: n as u32,
            f_off,
            c_off,
            row0: r0 as u32,
            total: nr as u32,
            alpha,
            t0: 0,
            t1: 0,
            pad: [0; 2],
        };
        let mut t0 = 0u64;
        while t0 < l64 {
            let t1 = (t0 + steps_per_dispatch).min(l64);
            (prm.t0, prm.t1) = (t0 as u32, t1 as u32);
            match &fixed {
                Some((ta, tb, _)) => {
                    let binds = [bf, bc, whole(3, ta), whole(4, tb), bflag];
                    s.dispatch(&pipeline, &prm, &binds, nr)?;
                }
                None => {
                    s.dispatch(&pipeline, &prm, &[bf, bc, bflag], nr.div_ceil(wg as u64))?;
                }
            }
            t0 = t1;
        }
        r0 += nr;
    }
    Ok(NanCheck { flag })
}
