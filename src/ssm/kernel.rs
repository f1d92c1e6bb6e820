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

use bytemuck::{Pod, Zeroable};
use num_complex::Complex64;

use super::{bind_buffer, bind_whole, workgroup_size};
use crate::cast::record_pack_f16;
use crate::pipeline::Storage;
use crate::reference;
pub use crate::reference::ssm::Discretization;
use crate::schedule::{rows_per_pass, scratch, Bind, Schedule};
use crate::{Context, Element, Error, Result, Tensor};

const OP: &str = "s4d_kernel";

/// A diagonal complex SSM on the device, conjugate-pair storage: `a_re, a_im, b_re, b_im, c_re,
/// c_im: [H, N2]`, `dt: [H]` (Δ), `d: [H]` (skip term). The state size is `N = 2·N2`: each stored
/// mode stands for itself and its conjugate, so `K_l = 2 Re Σ_{n<N2} C_n B̄_n Ā_n^l`. An odd N
/// (a real eigenvalue without partner) is not representable: store it as a pair with C halved.
/// Tensors are handles; cloning shares the buffers.
#[derive(Clone)]
pub struct DiagonalSsm<T: Element> {
    pub a_re: Tensor<T>,
    pub a_im: Tensor<T>,
    pub b_re: Tensor<T>,
    pub b_im: Tensor<T>,
    pub c_re: Tensor<T>,
    pub c_im: Tensor<T>,
    pub dt: Tensor<T>,
    pub d: Tensor<T>,
}

impl<T: Element> DiagonalSsm<T> {
    /// Uploads a host SSM, rounding to `T`.
    pub fn from_host(ctx: &Context, m: &reference::ssm::DiagonalSsm) -> Result<Self> {
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

/// Initialisations of the diagonal A (S4D paper §4), `N = 2·N2` the state size, `n = 0..N2−1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S4dInit {
    /// `A_n = −1/2 + iπn`.
    Lin,
    /// `A_n = −1/2 + i(N/π)(N/(2n+1) − 1)`.
    Inv,
    /// The eigenvalues of the normal part of HiPPO-LegS, `−1/2 + iσ_n` with `σ_n > 0`, ascending.
    LegS,
}

/// The `N2` diagonal entries of A for one head under `init` (the same for every head).
/// Errors: [`Error::InvalidArgument`] for `n2 = 0`.
pub fn s4d_init(init: S4dInit, n2: usize) -> Result<Vec<Complex64>> {
    if n2 == 0 {
        return Err(Error::InvalidArgument {
            op: "s4d_init",
            name: "n2",
            reason: "N2 must be >= 1".into(),
        });
    }
    let n = (2 * n2) as f64;
    let pi = std::f64::consts::PI;
    Ok(match init {
        S4dInit::Lin => (0..n2)
            .map(|j| Complex64::new(-0.5, pi * j as f64))
            .collect(),
        S4dInit::Inv => (0..n2)
            .map(|j| Complex64::new(-0.5, n / pi * (n / (2 * j + 1) as f64 - 1.0)))
            .collect(),
        S4dInit::LegS => legs_normal_eigenvalues(2 * n2)
            .into_iter()
            .map(|s| Complex64::new(-0.5, s))
            .collect(),
    })
}

/// HiPPO-LegS is `A = −1/2 I + S − P Pᵀ` with `P_n = √(n + 1/2)` and S skew-symmetric,
/// `S_nk = −√(2n+1)√(2k+1)/2` for n > k (S4, arXiv 2111.00396, §3.3). S has eigenvalues ±iσ;
/// these are the N/2 values σ > 0 in ascending order. The Hermitian iS is diagonalised through
/// its real symmetric embedding `[[0, Sᵀ], [S, 0]]` (each eigenvalue of iS twice) with cyclic
/// Jacobi rotations in f64.
fn legs_normal_eigenvalues(n: usize) -> Vec<f64> {
    let m = 2 * n;
    let mut a = vec![0.0f64; m * m];
    for i in 0..n {
        for k in 0..i {
            let s = -0.5 * ((2 * i + 1) as f64).sqrt() * ((2 * k + 1) as f64).sqrt();
            // S[i][k] = s, S[k][i] = −s; embedding rows n.. hold S, rows ..n hold Sᵀ.
            a[(n + i) * m + k] = s;
            a[(n + k) * m + i] = -s;
            a[k * m + n + i] = s;
            a[i * m + n + k] = -s;
        }
    }
    jacobi_eigenvalues(&mut a, m);
    let mut ev: Vec<f64> = (0..m).map(|i| a[i * m + i]).collect();
    ev.sort_by(|x, y| y.total_cmp(x));
    // The n largest are the positive σ (each twice), then zeros/negatives.
    let mut s: Vec<f64> = ev[..n].iter().step_by(2).copied().collect();
    s.truncate(n / 2);
    s.sort_by(f64::total_cmp);
    s
}

/// Cyclic Jacobi on a symmetric `m × m` matrix, in place; the diagonal ends as the eigenvalues.
fn jacobi_eigenvalues(a: &mut [f64], m: usize) {
    for _sweep in 0..100 {
        let off: f64 = (0..m)
            .flat_map(|i| (0..m).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * m + j] * a[i * m + j])
            .sum();
        let diag: f64 = (0..m).map(|i| a[i * m + i] * a[i * m + i]).sum();
        if off <= 1e-30 * diag.max(1e-300) {
            return;
        }
        for p in 0..m {
            for q in p + 1..m {
                let apq = a[p * m + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * m + q] - a[p * m + p]) / (2.0 * apq);
                let sgn = if theta >= 0.0 { 1.0 } else { -1.0 };
                let t = sgn / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..m {
                    let (akp, akq) = (a[k * m + p], a[k * m + q]);
                    a[k * m + p] = c * akp - s * akq;
                    a[k * m + q] = s * akp + c * akq;
                }
                for k in 0..m {
                    let (apk, aqk) = (a[p * m + k], a[q * m + k]);
                    a[p * m + k] = c * apk - s * aqk;
                    a[q * m + k] = s * apk + c * aqk;
                }
            }
        }
    }
}

/// Positions per invocation in the `vandermonde` entry (`RUN` in shaders/ssm_kernel.wgsl).
const VANDERMONDE_RUN: u64 = 8;

/// u32 words per mode in the discretised-mode table (see shaders/ssm_kernel.wgsl).
pub(crate) const MODE_WORDS: u64 = 7;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    h: u32,
    n2: u32,
    len: u32,
    total: u32,
    h0: u32,
    k_off: u32,
    _p: [u32; 2],
}

/// S4D kernel `K: [H, L]` in the parameters' dtype (f32 arithmetic), from `ssm` discretised by
/// `disc`. Errors: [`Error::Shape`] for inconsistent parameter shapes, [`Error::InvalidArgument`]
/// for `len = 0`, [`Error::TooLarge`] when one head's row or the parameters exceed a binding.
pub fn s4d_kernel<T: Element>(
    ctx: &Context,
    ssm: &DiagonalSsm<T>,
    len: usize,
    disc: Discretization,
) -> Result<Tensor<T>> {
    let (h, _) = ssm.dims(OP)?;
    if len == 0 {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "len",
            reason: "L must be >= 1".into(),
        });
    }
    let out = Tensor::empty(ctx, &[h, len])?;
    s4d_kernel_into(ctx, ssm, &out, disc)?;
    Ok(out)
}

/// [`s4d_kernel`] into an existing `out: [H, L]` (L is taken from it), one submission.
pub fn s4d_kernel_into<T: Element>(
    ctx: &Context,
    ssm: &DiagonalSsm<T>,
    out: &Tensor<T>,
    disc: Discretization,
) -> Result<()> {
    crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        record_s4d_kernel(&mut s, ssm, out, disc)?;
        s.submit();
        Ok(())
    })
}

/// Records the S4D kernel into a [`Schedule`].
pub fn record_s4d_kernel<T: Element>(
    s: &mut Schedule<'_>,
    ssm: &DiagonalSsm<T>,
    out: &Tensor<T>,
    disc: Discretization,
) -> Result<()> {
    let ctx = s.context();
    let (h, n2) = ssm.dims(OP)?;
    let os = out.shape();
    if os.len() != 2 || os[0] != h || os[1] == 0 {
        return Err(Error::Shape {
            op: OP,
            name: "out",
            expected: format!("[{h}, L >= 1] ([H, L])"),
            got: os.to_vec(),
        });
    }
    let len = os[1] as u64;
    let storage = Storage::for_dtype(ctx, T::DTYPE);
    let wg = workgroup_size(ctx);
    let p_vand = ctx
        .pipelines
        .get(ctx, "ssm_kernel", "vandermonde", storage, &consts(disc, wg))?;
    let modes = record_modes(s, ssm, disc)?;
    let bm = bind_buffer(ctx, OP, "modes", 8, &modes)?;
    let mut prm = Params {
        h: h as u32,
        n2: n2 as u32,
        len: len as u32,
        total: 0,
        h0: 0,
        k_off: 0,
        _p: [0; 2],
    };
    let es = size_of::<T>() as u64;
    let ob = storage.out_elem_bytes();
    let per = rows_per_pass(ctx, OP, &[("K", len * ob)], h)? as u64;
    let packed = (storage == Storage::F16Packed).then(|| scratch(ctx, per.min(h as u64) * len * 4));
    let tiles = len.div_ceil(wg as u64 * VANDERMONDE_RUN);
    let mut h0 = 0u64;
    while h0 < h as u64 {
        let nh = per.min(h as u64 - h0);
        let (bk, k_off) = match &packed {
            Some(buf) => (
                Bind {
                    slot: 9,
                    buffer: buf,
                    offset: 0,
                    size: nh * len * 4,
                },
                0,
            ),
            None => Bind::elems(ctx, 9, out.buffer(), es, h0 * len, nh * len),
        };
        prm.h = nh as u32;
        prm.h0 = h0 as u32;
        prm.k_off = k_off;
        prm.total = (nh * tiles) as u32;
        s.dispatch(&p_vand, &prm, &[bm, bk], nh * tiles)?;
        if let Some(buf) = &packed {
            record_pack_f16(s, buf, out.buffer(), h0 * len, nh * len)?;
        }
        h0 += nh;
    }
    Ok(())
}

fn consts(disc: Discretization, wg: u32) -> [(&'static str, u32); 2] {
    let d = match disc {
        Discretization::Zoh => 0,
        Discretization::Bilinear => 1,
    };
    [("WG", wg), ("DISC", d)]
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
        .get(ctx, "ssm_kernel", "discretize", storage, &consts(disc, wg))?;
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
        _p: [0; 2],
    };
    s.dispatch(&p_disc, &prm, &binds, n_modes.div_ceil(wg as u64))?;
    Ok(modes)
}
