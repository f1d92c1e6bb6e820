//! Batched FFT in WGSL (Stockham autosort, radix 4 with one radix-2 pass for odd powers of two)
//! and the causal FFT convolution `y = K ∗ u + D·u` of S4 (Gu et al. 2022, arXiv 2111.00396,
//! §3.3), padded internally to a power of two `n >= 2L` so nothing wraps around.

use wgpu::util::DeviceExt;

use super::conv::{FourStep, NF_W};
use crate::bind::{bind_buffer, scratch, Bind};
use crate::driver::{self, Input, Pass, Plan, RowOp};
use crate::pipeline::Storage;
use crate::schedule::Schedule;
use crate::sizes::workgroup_size;
use crate::{Context, Element, Error, Result, Tensor};

/// Direction of [`fft`]: forward `X_k = Σ_j x_j e^{−2πijk/n}`, inverse with `e^{+2πijk/n}` and
/// the factor `1/n` (numpy's convention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FftDirection {
    /// `e^{−2πijk/n}`, no scaling.
    Forward,
    /// `e^{+2πijk/n}`, scaled by `1/n`.
    Inverse,
}

crate::uniform! {
    /// The `Params` uniform of shaders/fft.wgsl.
    pub(crate) struct Params {
        rows: u32,
        len: u32,
        n: u32,
        total: u32,
        ns: u32,
        sign: f32,
        scale: f32,
        x_off: u32,
        y_off: u32,
        row0: u32,
        h: u32,
        flags: u32,
    }
}

impl Params {
    fn new(rows: u64, len: u64, n: u64) -> Self {
        Self {
            rows: rows as u32,
            len: len as u32,
            n: n as u32,
            total: 0,
            ns: 1,
            sign: -1.0,
            scale: 1.0,
            x_off: 0,
            y_off: 0,
            row0: 0,
            h: 1,
            flags: 0,
        }
    }
}

/// Radices for `n = 2^k`: radix 4 while it divides what is left, radix 2 last if k is odd.
fn radices(n: u64) -> Vec<u32> {
    let mut r = Vec::new();
    let mut m = n;
    while m >= 4 {
        r.push(4);
        m /= 4;
    }
    if m == 2 {
        r.push(2);
    }
    r
}

/// `tw[j] = e^{−2πij/n}`, j < n, computed in f64 and rounded once.
pub(crate) fn twiddles(ctx: &Context, n: u64) -> wgpu::Buffer {
    let tw: Vec<f32> = (0..n)
        .flat_map(|j| {
            let a = -2.0 * std::f64::consts::PI * j as f64 / n as f64;
            [a.cos() as f32, a.sin() as f32]
        })
        .collect();
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("longseq fft twiddles"),
            contents: bytemuck::cast_slice(&tw),
            usage: wgpu::BufferUsages::STORAGE,
        })
}

fn spec(slot: u32, buffer: &wgpu::Buffer, rows: u64, n: u64) -> Bind<'_> {
    Bind {
        slot,
        buffer,
        offset: 0,
        size: rows * n * 8,
    }
}

/// Records the Stockham passes over `rows` rows of length n held in `a` (complex, vec2<f32>);
/// `b` is the ping-pong partner. Returns true when the result ended in `b`.
pub(crate) fn record_passes(
    s: &mut Schedule<'_>,
    storage: Storage,
    tw: &wgpu::Buffer,
    (a, b): (&wgpu::Buffer, &wgpu::Buffer),
    rows: u64,
    n: u64,
    dir: FftDirection,
) -> Result<bool> {
    let ctx = s.context();
    let wg = workgroup_size(ctx);
    let mut prm = Params::new(rows, n, n);
    prm.sign = match dir {
        FftDirection::Forward => -1.0,
        FftDirection::Inverse => 1.0,
    };
    let btw = bind_buffer(ctx, "fft", "twiddles", 4, tw)?;
    let mut in_b = false;
    for radix in radices(n) {
        let pl = ctx.pipelines.get(
            ctx,
            "fft",
            "stockham",
            storage,
            &[("WG", wg), ("RADIX", radix)],
        )?;
        let (src, dst) = if in_b { (b, a) } else { (a, b) };
        let threads = rows * n / radix as u64;
        prm.total = threads as u32;
        s.dispatch(
            &pl,
            &prm,
            &[spec(2, src, rows, n), spec(3, dst, rows, n), btw],
            threads.div_ceil(wg as u64),
        )?;
        prm.ns *= radix;
        in_b = !in_b;
    }
    Ok(in_b)
}

/// Batched FFT over the last axis: `re, im: [.., n]` (f32, n a power of two >= 1) to the
/// spectrum `(re, im)` of the same shape. `im = None` transforms real rows. Errors:
/// [`Error::Shape`] for mismatched shapes or n not a power of two, [`Error::TooLarge`] when one
/// row's spectrum exceeds a storage binding.
pub fn fft(
    ctx: &Context,
    re: &Tensor<f32>,
    im: Option<&Tensor<f32>>,
    dir: FftDirection,
) -> Result<(Tensor<f32>, Tensor<f32>)> {
    let mut outs = driver::run_multi(ctx, &Fft { re, im, dir })?;
    let out_im = outs.pop().expect("two outputs");
    Ok((outs.pop().expect("two outputs"), out_im))
}

/// [`fft`] into existing `out_re, out_im` of re's shape, one submission.
pub fn fft_into(
    ctx: &Context,
    re: &Tensor<f32>,
    im: Option<&Tensor<f32>>,
    dir: FftDirection,
    (out_re, out_im): (&Tensor<f32>, &Tensor<f32>),
) -> Result<()> {
    driver::run_into_multi(ctx, &Fft { re, im, dir }, &[out_re, out_im])
}

/// Records [`fft`] into a [`Schedule`].
pub fn record_fft(
    s: &mut Schedule<'_>,
    re: &Tensor<f32>,
    im: Option<&Tensor<f32>>,
    dir: FftDirection,
    (out_re, out_im): (&Tensor<f32>, &Tensor<f32>),
) -> Result<()> {
    driver::record_multi(s, &Fft { re, im, dir }, &[out_re, out_im])
}

const FFT: &str = "fft";

struct Fft<'a> {
    re: &'a Tensor<f32>,
    im: Option<&'a Tensor<f32>>,
    dir: FftDirection,
}

impl RowOp for Fft<'_> {
    type T = f32;
    /// n and the twiddle table.
    type Dims = (u64, wgpu::Buffer);
    const NAME: &'static str = FFT;

    fn plan(&self, ctx: &Context) -> Result<(Self::Dims, Plan)> {
        let shape = self.re.shape();
        let n = shape.last().copied().unwrap_or(0);
        if shape.is_empty() || shape.contains(&0) || !n.is_power_of_two() {
            return Err(Error::Shape {
                op: FFT,
                name: "re",
                expected: "[.., n] with n a power of two and every dim >= 1".into(),
                got: shape.to_vec(),
            });
        }
        if let Some(t) = self.im {
            if t.shape() != shape {
                return Err(Error::Shape {
                    op: FFT,
                    name: "im",
                    expected: format!("{shape:?} (the shape of re)"),
                    got: t.shape().to_vec(),
                });
            }
        }
        let n = n as u64;
        let rows = self.re.len() as u64 / n;
        let mut plan = Plan::new(shape.to_vec(), rows, n).bytes("spectrum", n * 8);
        plan.n_outs = 2;
        Ok(((n, twiddles(ctx, n)), plan))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        let mut i = vec![Input::of("re", self.re)];
        i.extend(self.im.map(|t| Input::of("im", t)));
        i
    }

    fn record_rows(&self, s: &mut Schedule<'_>, (n, tw): &Self::Dims, p: &Pass<'_>) -> Result<()> {
        let ctx = s.context();
        let (n, r0, nr) = (*n, p.r0, p.nr);
        let wg = workgroup_size(ctx) as u64;
        let (a, b) = (scratch(ctx, nr * n * 8), scratch(ctx, nr * n * 8));
        let st = Storage::F32;
        let pl = |e| ctx.pipelines.get(ctx, "fft", e, st, &[("WG", wg as u32)]);
        let mut prm = Params::new(nr, n, n);
        prm.total = (nr * n) as u32;
        let (bx, x_off) = Bind::elems(ctx, 1, self.re.buffer(), 4, r0 * n, nr * n);
        prm.x_off = x_off;
        let groups = (nr * n).div_ceil(wg);
        match self.im {
            None => s.dispatch(&*pl("load_real")?, &prm, &[bx, spec(3, &a, nr, n)], groups)?,
            Some(t) => {
                let (bxi, _) = Bind::elems(ctx, 7, t.buffer(), 4, r0 * n, nr * n);
                let binds = [bx, bxi, spec(3, &a, nr, n)];
                s.dispatch(&*pl("load_complex")?, &prm, &binds, groups)?
            }
        }
        let in_b = record_passes(s, st, tw, (&a, &b), nr, n, self.dir)?;
        let res = if in_b { &b } else { &a };
        if self.dir == FftDirection::Inverse {
            prm.scale = 1.0 / n as f32;
        }
        let (by, y_off) = p.outs[0].bind(ctx, 6, nr * n);
        let (byi, _) = p.outs[1].bind(ctx, 8, nr * n);
        prm.y_off = y_off;
        let binds = [spec(2, res, nr, n), by, byi];
        s.dispatch(&*pl("store_complex")?, &prm, &binds, groups)
    }
}

const CONV: &str = "causal_conv";

/// Checks `u: [B, H, L]` (or `[H, L]`), `k: [H, L]`, `d: [H]`; returns `(rows, H, L)`.
pub(crate) fn conv_dims(u: &[usize], k: &[usize], d: &[usize]) -> Result<(usize, usize, usize)> {
    if !(u.len() == 2 || u.len() == 3) || u.contains(&0) {
        return Err(Error::Shape {
            op: CONV,
            name: "u",
            expected: "[B, H, L] or [H, L], every dim >= 1".into(),
            got: u.to_vec(),
        });
    }
    let (h, l) = (u[u.len() - 2], u[u.len() - 1]);
    if k != [h, l] {
        return Err(Error::Shape {
            op: CONV,
            name: "K",
            expected: format!("[{h}, {l}] ([H, L] of u)"),
            got: k.to_vec(),
        });
    }
    if d != [h] {
        return Err(Error::Shape {
            op: CONV,
            name: "D",
            expected: format!("[{h}] ([H])"),
            got: d.to_vec(),
        });
    }
    Ok((u.iter().product::<usize>() / l, h, l))
}

/// Causal convolution `y[b, h, t] = Σ_{s≤t} K[h, s] u[b, h, t−s] + D[h] u[b, h, t]` for
/// `u: [B, H, L]` (or `[H, L]`), `k: [H, L]`, `d: [H]`, any L, by FFT at `n = 2^⌈log₂ 2L⌉`:
/// `y = irfft(rfft(u, n)·rfft(K, n))[:L] + D u`. Output shaped like u, in its dtype; arithmetic
/// f32. Errors: [`Error::Shape`], [`Error::TooLarge`] when the H kernel spectra (8·H·n bytes) or
/// one row's do not fit a storage binding.
pub fn causal_conv<T: Element>(
    ctx: &Context,
    u: &Tensor<T>,
    k: &Tensor<T>,
    d: &Tensor<T>,
) -> Result<Tensor<T>> {
    driver::run(ctx, &CausalConv { u, k, d })
}

/// [`causal_conv`] into an existing `out` shaped like u, one submission.
pub fn causal_conv_into<T: Element>(
    ctx: &Context,
    u: &Tensor<T>,
    k: &Tensor<T>,
    d: &Tensor<T>,
    out: &Tensor<T>,
) -> Result<()> {
    driver::run_into(ctx, &CausalConv { u, k, d }, out)
}

/// Records [`causal_conv`] into a [`Schedule`].
pub fn record_causal_conv<T: Element>(
    s: &mut Schedule<'_>,
    u: &Tensor<T>,
    k: &Tensor<T>,
    d: &Tensor<T>,
    out: &Tensor<T>,
) -> Result<()> {
    driver::record(s, &CausalConv { u, k, d }, out)
}

struct CausalConv<'a, T: Element> {
    u: &'a Tensor<T>,
    k: &'a Tensor<T>,
    d: &'a Tensor<T>,
}

/// H, L, the FFT size n, twiddles, and the kernel spectra `[H, n]` (recorded in the prologue).
struct ConvDims {
    h: u64,
    len: u64,
    n: u64,
    tw: wgpu::Buffer,
    kf: Option<wgpu::Buffer>,
    /// The four-step path when a row pair fits workgroup memory.
    fast: Option<FourStep>,
}

impl<T: Element> RowOp for CausalConv<'_, T> {
    type T = T;
    type Dims = ConvDims;
    const NAME: &'static str = CONV;

    fn plan(&self, ctx: &Context) -> Result<(ConvDims, Plan)> {
        let (rows, h, len) = conv_dims(self.u.shape(), self.k.shape(), self.d.shape())?;
        let (rows, h, len) = (rows as u64, h as u64, len as u64);
        let n = (2 * len).next_power_of_two();
        let limit = ctx.limits().max_storage_buffer_binding_size;
        let slack = ctx.limits().min_storage_buffer_offset_alignment as u64 + 4;
        if h * n * 8 > limit || n * 8 + slack > limit {
            // One FFT row cannot be split: name the largest L that runs here.
            let n_max = 1u64 << ((limit - slack) / (8 * h)).max(1).ilog2();
            return Err(Error::TooLarge {
                op: CONV,
                what: format!(
                    "the kernel spectra [H, n] at n = {n} (largest L on this adapter: {})",
                    n_max / 2
                ),
                needed: h * n * 8,
                limit,
            });
        }
        let es = size_of::<T>() as u64;
        let plan = Plan::new(self.u.shape().to_vec(), rows, len)
            .bytes("spectrum", n * 8)
            .bytes("u", len * es);
        let tw = twiddles(ctx, n);
        let fast = FourStep::new(ctx, n);
        Ok((
            ConvDims {
                h,
                len,
                n,
                tw,
                kf: None,
                fast,
            },
            plan,
        ))
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        vec![
            Input::of("u", self.u),
            Input::of("K", self.k),
            Input::of("D", self.d),
        ]
    }

    /// Kernel spectra, once for all rows.
    fn record_prologue(&self, s: &mut Schedule<'_>, c: &mut ConvDims) -> Result<()> {
        let ctx = s.context();
        let storage = Storage::for_dtype(ctx, T::DTYPE);
        let wg = workgroup_size(ctx);
        let (h, n) = (c.h, c.n);
        if let Some(fs) = &c.fast {
            let kf = fs.record_kspec(s, storage, &c.tw, self.k.buffer(), (h, c.len))?;
            c.kf = Some(kf);
            return Ok(());
        }
        let (s1, s2) = (scratch(ctx, h * n * 8), scratch(ctx, h * n * 8));
        let pl = ctx
            .pipelines
            .get(ctx, "fft", "load_real", storage, &[("WG", wg)])?;
        let mut prm = Params::new(h, c.len, n);
        prm.h = h as u32;
        prm.total = (h * n) as u32;
        let bk = bind_buffer(ctx, CONV, "K", 1, self.k.buffer())?;
        s.dispatch(
            &pl,
            &prm,
            &[bk, spec(3, &s2, h, n)],
            (h * n).div_ceil(wg as u64),
        )?;
        let k_in_s1 = record_passes(s, storage, &c.tw, (&s2, &s1), h, n, FftDirection::Forward)?;
        c.kf = Some(if k_in_s1 { s1 } else { s2 });
        Ok(())
    }

    fn record_rows(&self, s: &mut Schedule<'_>, c: &ConvDims, p: &Pass<'_>) -> Result<()> {
        let ctx = s.context();
        let (storage, wg) = (p.storage, workgroup_size(ctx));
        let wgu = wg as u64;
        let (h, len, n, r0, nr) = (c.h, c.len, c.n, p.r0, p.nr);
        let kf =
            c.kf.as_ref()
                .expect("the prologue records the kernel spectra");
        let es = size_of::<T>() as u64;
        if let Some(fs) = &c.fast {
            let (k, d) = (self.k.buffer(), self.d.buffer());
            return fs.record_conv(s, p, &c.tw, kf, (self.u.buffer(), es), (k, d), (h, len));
        }
        let (a, b) = (scratch(ctx, nr * n * 8), scratch(ctx, nr * n * 8));
        let pl = |e| ctx.pipelines.get(ctx, "fft", e, storage, &[("WG", wg)]);
        let mut prm = Params::new(nr, len, n);
        prm.h = h as u32;
        prm.row0 = r0 as u32;
        let (bu, x_off) = Bind::elems(ctx, 1, self.u.buffer(), es, r0 * len, nr * len);
        prm.x_off = x_off;
        // Non-finite samples: recorded, loaded as 0, their terms added by store_conv. The fresh
        // buffer is zeroed.
        prm.flags = 1;
        let nf = scratch(ctx, nr * NF_W * 4);
        let bnf = Bind::all(9, &nf);
        prm.total = (nr * len) as u32;
        s.dispatch(
            &*pl("detect_nf")?,
            &prm,
            &[bu, bnf],
            (nr * len).div_ceil(wgu),
        )?;
        prm.total = (nr * n) as u32;
        let groups = (nr * n).div_ceil(wgu);
        s.dispatch(&*pl("load_real")?, &prm, &[bu, spec(3, &a, nr, n)], groups)?;
        let in_b = record_passes(s, storage, &c.tw, (&a, &b), nr, n, FftDirection::Forward)?;
        let (uf, other) = if in_b { (&b, &a) } else { (&a, &b) };
        let binds = [spec(2, kf, h, n), spec(3, uf, nr, n)];
        s.dispatch(&*pl("pointwise")?, &prm, &binds, groups)?;
        let in_b = record_passes(s, storage, &c.tw, (uf, other), nr, n, FftDirection::Inverse)?;
        let yf = if in_b { other } else { uf };
        let (by, y_off) = p.out.bind(ctx, 6, nr * len);
        prm.y_off = y_off;
        prm.scale = 1.0 / n as f32;
        prm.total = (nr * len) as u32;
        let bd = bind_buffer(ctx, CONV, "D", 5, self.d.buffer())?;
        let bk = bind_buffer(ctx, CONV, "K", 7, self.k.buffer())?;
        let binds = [bu, spec(2, yf, nr, n), bd, by, bk, bnf];
        s.dispatch(&*pl("store_conv")?, &prm, &binds, (nr * len).div_ceil(wgu))
    }
}
