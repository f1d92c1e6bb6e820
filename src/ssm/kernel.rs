//! S4D convolution kernel on the GPU (Gu et al. 2022, *On the Parameterization and
//! Initialization of Diagonal State Space Models*, arXiv 2206.11893): `K[h, l] = 2 Re Σ_n C_n B̄_n
//! Ā_n^l` for a diagonal complex A in conjugate-pair storage, with ZOH or bilinear discretisation,
//! and the S4D-Lin / S4D-Inv / S4D-LegS initialisations of A.
//!
//! `Ā^l` is never formed by repeated products (their f32 rounding grows like l·ε): the shader
//! takes `exp(l·log|Ā|)` and the phase `l·arg(Ā)` reduced modulo one turn exactly in 64-bit
//! fixed-point integers, so cos and sin only ever see angles in [−π, π] even when `l·Δ·Im A` runs
//! to thousands of radians. For ZOH the phase step `Δ·Im A/2π` is itself formed exactly (split
//! products summed in integers), so the kernel keeps f32 accuracy at any phase (measured 2.6e-7
//! relative at 1.2·10⁴ rad). For bilinear the step `arg Ā` carries one f32 rounding, which l
//! multiplies: phase error up to about `l·|arg Ā|·2⁻²³` (1.7e-4 relative at 1.2·10⁴ rad).

use num_complex::Complex64;

use crate::bind::{bind_buffer, bind_whole, scratch};
use crate::driver::{self, Input, Pass, Plan, RowOp};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
use crate::sizes::workgroup_size;
use crate::types::ssm as host;
pub use crate::types::ssm::{s4d_init, Discretization, S4dInit};
use crate::{Context, Element, Error, Result, Tensor};

const OP: &str = "s4d_kernel";

/// A diagonal complex SSM on the device, conjugate-pair storage: `a_re, a_im, b_re, b_im, c_re,
/// c_im: [H, N2]`, `dt: [H]` (Δ), `d: [H]` (skip term). The state size is `N = 2·N2`: each stored
/// mode stands for itself and its conjugate, so `K_l = 2 Re Σ_{n<N2} C_n B̄_n Ā_n^l`. An odd N
/// (a real eigenvalue without partner) is not representable: store it as a pair with C halved.
/// Tensors are handles; cloning shares the buffers.
#[derive(Clone)]
pub struct DiagonalSsm<T: Element> {
    /// Re A, continuous-time (Re A < 0 for a stable mode): `[H, N2]`.
    pub a_re: Tensor<T>,
    /// Im A: `[H, N2]`.
    pub a_im: Tensor<T>,
    /// Re B: `[H, N2]`.
    pub b_re: Tensor<T>,
    /// Im B: `[H, N2]`.
    pub b_im: Tensor<T>,
    /// Re C: `[H, N2]`.
    pub c_re: Tensor<T>,
    /// Im C: `[H, N2]`.
    pub c_im: Tensor<T>,
    /// Step Δ per head, > 0: `[H]`.
    pub dt: Tensor<T>,
    /// Skip term D per head: `[H]`.
    pub d: Tensor<T>,
}

impl<T: Element> DiagonalSsm<T> {
    /// Every parameter tensor, for the driver's alias and context checks.
    pub(crate) fn inputs(&self) -> Vec<Input<'_>> {
        vec![
            Input::of("A_re", &self.a_re),
            Input::of("A_im", &self.a_im),
            Input::of("B_re", &self.b_re),
            Input::of("B_im", &self.b_im),
            Input::of("C_re", &self.c_re),
            Input::of("C_im", &self.c_im),
            Input::of("dt", &self.dt),
            Input::of("D", &self.d),
        ]
    }

    /// Uploads a host SSM, rounding to `T`.
    pub fn from_host(ctx: &Context, m: &host::DiagonalSsm) -> Result<Self> {
        m.check("DiagonalSsm::from_host")?;
        let hn = [m.h, m.n2];
        let up = |v: Vec<f64>, shape: &[usize]| {
            let v: Vec<T> = v.into_iter().map(T::from_f64).collect();
            Tensor::from_slice(ctx, &v, shape)
        };
        let re = |z: &[Complex64]| z.iter().map(|x| x.re).collect::<Vec<_>>();
        let im = |z: &[Complex64]| z.iter().map(|x| x.im).collect::<Vec<_>>();
        Ok(Self {
            a_re: up(re(&m.a), &hn)?,
            a_im: up(im(&m.a), &hn)?,
            b_re: up(re(&m.b), &hn)?,
            b_im: up(im(&m.b), &hn)?,
            c_re: up(re(&m.c), &hn)?,
            c_im: up(im(&m.c), &hn)?,
            dt: up(m.dt.clone(), &[m.h])?,
            d: up(m.d.clone(), &[m.h])?,
        })
    }

    /// `(H, N2)` after checking every tensor's shape.
    pub fn dims(&self, op: &'static str) -> Result<(usize, usize)> {
        let s = self.a_re.shape();
        if s.len() != 2 || s.contains(&0) {
            return Err(Error::Shape {
                op,
                name: "A_re",
                expected: "[H, N2], both >= 1".into(),
                got: s.to_vec(),
            });
        }
        for (name, t) in [
            ("A_im", &self.a_im),
            ("B_re", &self.b_re),
            ("B_im", &self.b_im),
            ("C_re", &self.c_re),
            ("C_im", &self.c_im),
        ] {
            if t.shape() != s {
                return Err(Error::Shape {
                    op,
                    name,
                    expected: format!("{s:?} (the shape of A_re)"),
                    got: t.shape().to_vec(),
                });
            }
        }
        for (name, t) in [("dt", &self.dt), ("D", &self.d)] {
            if t.shape() != [s[0]] {
                return Err(Error::Shape {
                    op,
                    name,
                    expected: format!("[{}] ([H])", s[0]),
                    got: t.shape().to_vec(),
                });
            }
        }
        Ok((s[0], s[1]))
    }
}

/// Positions per invocation of `vandermonde` (`RUN`, a compile-time constant so the RUN
/// accumulators are unrolled into registers): one exp/cos/sin triple per mode serves RUN outputs.
/// 32 measured ~20 % faster than 8 on W3's kernel (lavapipe).
fn vandermonde_run(wg: u32) -> u64 {
    32.min(wg as u64)
}

/// u32 words per mode in the discretised-mode table (see shaders/ssm_kernel.wgsl).
pub(crate) const MODE_WORDS: u64 = 7;

crate::uniform! {
    /// The `Params` uniform of shaders/ssm_kernel.wgsl.
    pub(crate) struct Params {
        h: u32,
        n2: u32,
        len: u32,
        total: u32,
        h0: u32,
        k_off: u32,
        l0: u32,
        ne: u32,
    }
}

/// S4D kernel `K: [H, L]` in the parameters' dtype (f32 arithmetic), from `ssm` discretised by
/// `disc`. Errors: [`Error::Shape`] for inconsistent parameter shapes, [`Error::InvalidArgument`]
/// for `len = 0` or a rule other than ZOH and bilinear, [`Error::TooLarge`] when one head's row
/// or the parameters exceed a binding.
pub fn s4d_kernel<T: Element>(
    ctx: &Context,
    ssm: &DiagonalSsm<T>,
    len: usize,
    disc: Discretization,
) -> Result<Tensor<T>> {
    driver::run(ctx, &S4dKernel { ssm, len, disc })
}

/// [`s4d_kernel`] into an existing `out: [H, L]` (L is taken from it), one submission.
pub fn s4d_kernel_into<T: Element>(
    ctx: &Context,
    ssm: &DiagonalSsm<T>,
    out: &Tensor<T>,
    disc: Discretization,
) -> Result<()> {
    let len = out_len(ssm, out)?;
    driver::run_into(ctx, &S4dKernel { ssm, len, disc }, out)
}

/// Records the S4D kernel into a [`Schedule`].
pub fn record_s4d_kernel<T: Element>(
    s: &mut Schedule<'_>,
    ssm: &DiagonalSsm<T>,
    out: &Tensor<T>,
    disc: Discretization,
) -> Result<()> {
    let len = out_len(ssm, out)?;
    driver::record(s, &S4dKernel { ssm, len, disc }, out)
}

/// L of `out: [H, L]`.
fn out_len<T: Element>(ssm: &DiagonalSsm<T>, out: &Tensor<T>) -> Result<usize> {
    let (h, _) = ssm.dims(OP)?;
    match *out.shape() {
        [oh, l] if oh == h && l > 0 => Ok(l),
        _ => Err(Error::Shape {
            op: OP,
            name: "out",
            expected: format!("[{h}, L >= 1] ([H, L])"),
            got: out.shape().to_vec(),
        }),
    }
}

struct S4dKernel<'a, T: Element> {
    ssm: &'a DiagonalSsm<T>,
    len: usize,
    disc: Discretization,
}

impl<T: Element> RowOp for S4dKernel<'_, T> {
    type T = T;
    /// N2 and the discretised-mode table (recorded in the prologue).
    type Dims = (u64, Option<wgpu::Buffer>);
    const NAME: &'static str = OP;

    fn plan(&self, _: &Context) -> Result<(Self::Dims, Plan)> {
        let (h, n2) = self.ssm.dims(OP)?;
        if self.len == 0 {
            return Err(Error::InvalidArgument {
                op: OP,
                name: "len",
                reason: "L must be >= 1".into(),
            });
        }
        check_disc(OP, self.disc)?;
        // Rows of the driver are single outputs: a pass is any flat range of [H, L], so one
        // head's row past the binding limit splits along L.
        let plan = Plan::new(vec![h, self.len], (h * self.len) as u64, 1);
        Ok(((n2 as u64, None), plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        self.ssm.inputs()
    }

    fn record_prologue(&self, s: &mut Schedule<'_>, d: &mut Self::Dims) -> Result<()> {
        d.1 = Some(record_modes(s, self.ssm, self.disc)?);
        Ok(())
    }

    fn record_rows(&self, s: &mut Schedule<'_>, d: &Self::Dims, p: &Pass<'_>) -> Result<()> {
        let ctx = s.context();
        let wg = workgroup_size(ctx);
        let run = vandermonde_run(wg);
        let [c0, c1] = consts(self.disc, wg)?;
        let consts = [c0, c1, ("RUN", run as u32)];
        let p_vand = ctx
            .pipelines
            .get(ctx, "ssm_kernel", "vandermonde", p.storage, &consts)?;
        let modes = d.1.as_ref().expect("the prologue records the modes");
        let bm = bind_buffer(ctx, OP, "modes", 8, modes)?;
        let len = self.len as u64;
        let (h0, l0) = (p.r0 / len, p.r0 % len);
        let nh = (l0 + p.nr).div_ceil(len);
        let tiles = len.div_ceil(wg as u64 * run);
        let (bk, k_off) = p.out.bind(ctx, 9, p.nr);
        let prm = Params {
            h: nh as u32,
            n2: d.0 as u32,
            len: len as u32,
            total: (nh * tiles) as u32,
            h0: h0 as u32,
            k_off,
            l0: l0 as u32,
            ne: p.nr as u32,
        };
        s.dispatch(&p_vand, &prm, &[bm, bk], nh * tiles)
    }
}

/// The shader forms ZOH and bilinear modes; the other rules are host-only.
pub(crate) fn check_disc(op: &'static str, disc: Discretization) -> Result<u32> {
    match disc {
        Discretization::Zoh => Ok(0),
        Discretization::Bilinear => Ok(1),
        other => Err(Error::InvalidArgument {
            op,
            name: "disc",
            reason: format!("{other:?}: the S4D kernels take zoh or bilinear"),
        }),
    }
}

/// The `WG` and `DISC` constants.
fn consts(disc: Discretization, wg: u32) -> Result<[(&'static str, u32); 2]> {
    Ok([("WG", wg), ("DISC", check_disc(OP, disc)?)])
}

/// Records the discretisation of every mode into a new `[H, N2, MODE_WORDS]` table: C·B̄,
/// log|Ā|, the phase of Ā in fixed-point turns, B̄ (see shaders/ssm_kernel.wgsl).
pub(crate) fn record_modes<T: Element>(
    s: &mut Schedule<'_>,
    ssm: &DiagonalSsm<T>,
    disc: Discretization,
) -> Result<wgpu::Buffer> {
    let ctx = s.context();
    let (h, n2) = ssm.dims(OP)?;
    let storage = Storage::for_dtype(ctx, T::DTYPE);
    let wg = workgroup_size(ctx);
    let p_disc = ctx
        .pipelines
        .get(ctx, "ssm_kernel", "discretize", storage, &consts(disc, wg)?)?;
    let n_modes = (h * n2) as u64;
    let modes = scratch(ctx, n_modes * MODE_WORDS * 4);
    let mut binds = Vec::new();
    for (slot, (name, t)) in [
        ("A_re", &ssm.a_re),
        ("A_im", &ssm.a_im),
        ("B_re", &ssm.b_re),
        ("B_im", &ssm.b_im),
        ("C_re", &ssm.c_re),
        ("C_im", &ssm.c_im),
        ("dt", &ssm.dt),
    ]
    .into_iter()
    .enumerate()
    {
        binds.push(bind_whole(ctx, OP, name, slot as u32 + 1, t)?);
    }
    binds.push(bind_buffer(ctx, OP, "modes", 8, &modes)?);
    let prm = Params {
        h: h as u32,
        n2: n2 as u32,
        len: 0,
        total: n_modes as u32,
        h0: 0,
        k_off: 0,
        l0: 0,
        ne: 0,
    };
    s.dispatch(&p_disc, &prm, &binds, n_modes.div_ceil(wg as u64))?;
    Ok(modes)
}
