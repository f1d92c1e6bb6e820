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

use crate::bind::Bind;
use crate::driver::{self, Input, Pass, Plan, RowOp};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
pub use crate::types::ssm::{
    check_options, check_shape, fixed_step_matrices, sample_grid, HippoApproxOptions, Step,
    MAX_FIXED_N,
};
use crate::{Context, Element, Error, Result, Tensor};

const OP: &str = "hippo_approx";

/// Loop iterations per invocation and dispatch (half of lavapipe's 65 535 limit).
const LOOP_BUDGET: u64 = 1 << 15;

crate::uniform! {
    /// The `Params` uniform of shaders/hippo.wgsl.
    pub(crate) struct Params {
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
    let flag = nan_flag(ctx)?;
    let out = driver::run(
        ctx,
        &HippoApprox {
            f,
            opts,
            flag: &flag,
        },
    )?;
    NanCheck { flag }.check(ctx)?;
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
    let flag = nan_flag(ctx)?;
    driver::run_into(
        ctx,
        &HippoApprox {
            f,
            opts,
            flag: &flag,
        },
        out,
    )?;
    NanCheck { flag }.check(ctx)
}

/// Records the approximation into a [`Schedule`]; NaN in `f` propagates into `out` and is
/// reported by the returned [`NanCheck`] once the schedule has been submitted.
pub fn record_hippo_approx<T: Element>(
    s: &mut Schedule<'_>,
    f: &Tensor<T>,
    out: &Tensor<f32>,
    opts: &HippoApproxOptions,
) -> Result<NanCheck> {
    let flag = nan_flag(s.context())?;
    driver::record(
        s,
        &HippoApprox {
            f,
            opts,
            flag: &flag,
        },
        out,
    )?;
    Ok(NanCheck { flag })
}

/// The NaN flag: the first NaN's flat index, `u32::MAX` bits while there is none.
fn nan_flag(ctx: &Context) -> Result<Tensor<f32>> {
    Tensor::<f32>::from_slice(ctx, &[f32::from_bits(u32::MAX)], &[1])
}

struct HippoApprox<'a, T: Element> {
    f: &'a Tensor<T>,
    opts: &'a HippoApproxOptions,
    flag: &'a Tensor<f32>,
}

/// L, the fixed-step matrices (Āᵀ, B̄, NMAX) when the step is fixed, the pipeline and its
/// workgroup size, steps per dispatch, the GBT α.
struct ApproxDims {
    len: u64,
    fixed: Option<(Tensor<f32>, Tensor<f32>, u32)>,
    pipeline: std::sync::Arc<wgpu::ComputePipeline>,
    wg: u32,
    steps_per_dispatch: u64,
    alpha: f32,
}

impl<T: Element> RowOp for HippoApprox<'_, T> {
    type T = f32;
    type Dims = ApproxDims;
    const NAME: &'static str = OP;

    fn plan(&self, ctx: &Context) -> Result<(ApproxDims, Plan)> {
        let opts = self.opts;
        check_options(OP, opts)?;
        let (rows, len, shape) = check_shape(OP, self.f.shape(), opts.n)?;
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
        let storage = Storage::for_dtype(ctx, T::DTYPE);
        let lim = ctx.limits();
        let fixed = match opts.step {
            Step::Fixed(dt) => {
                // The size check first: the matrices cost O(N³) on the host.
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
                let (ab, bb) = fixed_step_matrices(opts, dt)?;
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
        let plan = Plan::new(shape, rows as u64, l64 * n).bytes("f", l64 * es);
        let dims = ApproxDims {
            len: l64,
            fixed,
            pipeline,
            wg,
            steps_per_dispatch: LOOP_BUDGET / iters_per_step,
            alpha: opts.method.gbt_alpha().unwrap_or(0.5) as f32,
        };
        Ok((dims, plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        vec![Input::of("f", self.f), Input::of("NaN flag", self.flag)]
    }

    fn record_rows(&self, s: &mut Schedule<'_>, d: &ApproxDims, p: &Pass<'_>) -> Result<()> {
        let ctx = s.context();
        let (l64, n, es) = (d.len, self.opts.n as u64, size_of::<T>() as u64);
        let (r0, nr) = (p.r0, p.nr);
        let (bf, f_off) = Bind::elems(ctx, 1, self.f.buffer(), es, r0 * l64, nr * l64);
        let (bc, c_off) = p.out.bind(ctx, 2, nr * l64 * n);
        let bflag = Bind::prefix(5, self.flag.buffer(), 4);
        let mut prm = Params {
            rows: nr as u32,
            len: l64 as u32,
            n: n as u32,
            f_off,
            c_off,
            row0: r0 as u32,
            total: nr as u32,
            alpha: d.alpha,
            t0: 0,
            t1: 0,
            pad: [0; 2],
        };
        let mut t0 = 0u64;
        while t0 < l64 {
            let t1 = (t0 + d.steps_per_dispatch).min(l64);
            (prm.t0, prm.t1) = (t0 as u32, t1 as u32);
            match &d.fixed {
                Some((ta, tb, _)) => {
                    let (ba, bb) = (Bind::all(3, ta.buffer()), Bind::all(4, tb.buffer()));
                    s.dispatch(&d.pipeline, &prm, &[bf, bc, ba, bb, bflag], nr)?;
                }
                None => {
                    let groups = nr.div_ceil(d.wg as u64);
                    s.dispatch(&d.pipeline, &prm, &[bf, bc, bflag], groups)?;
                }
            }
            t0 = t1;
        }
        Ok(())
    }
}
