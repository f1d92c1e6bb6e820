//! Batched FFT in WGSL (Stockham autosort, radix 4 with one radix-2 pass for odd powers of two)
//! and the causal FFT convolution `y = K ∗ u + D·u` of S4 (Gu et al. 2022, arXiv 2111.00396,
//! §3.3), padded internally to a power of two `n >= 2L` so nothing wraps around.

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

use super::{bind_buffer, workgroup_size};
use crate::cast::record_pack_f16;
use crate::pipeline::Storage;
use crate::schedule::{rows_per_pass, scratch, Bind, Schedule};
use crate::{Context, Element, Error, Result, Tensor};

/// Direction of [`fft`]: forward `X_k = Σ_j x_j e^{−2πijk/n}`, inverse with `e^{+2πijk/n}` and
/// the factor `1/n` (numpy's convention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FftDirection {
    Forward,
    Inverse,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
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
    _p: u32,
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
            _p: 0,
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
    const OP: &str = "fft";
    let shape = re.shape();
    let n = shape.last().copied().unwrap_or(0);
    if shape.is_empty() || shape.contains(&0) || !n.is_power_of_two() {
        return Err(Error::Shape {
            op: OP,
            name: "re",
            expected: "[.., n] with n a power of two and every dim >= 1".into(),
            got: shape.to_vec(),
        });
    }
    if let Some(t) = im {
        if t.shape() != shape {
            return Err(Error::Shape {
                op: OP,
                name: "im",
                expected: format!("{shape:?} (the shape of re)"),
                got: t.shape().to_vec(),
            });
        }
    }
    let out_re = Tensor::<f32>::empty(ctx, shape)?;
    let out_im = Tensor::<f32>::empty(ctx, shape)?;
    let rows = (re.len() / n) as u64;
    let n = n as u64;
    crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        let wg = workgroup_size(ctx) as u64;
        let per = rows_per_pass(ctx, OP, &[("spectrum", n * 8)], rows as usize)? as u64;
        let nr_max = per.min(rows);
        let (a, b) = (scratch(ctx, nr_max * n * 8), scratch(ctx, nr_max * n * 8));
        let tw = twiddles(ctx, n);
        let st = Storage::F32;
        let pl = |e| ctx.pipelines.get(ctx, "fft", e, st, &[("WG", wg as u32)]);
        let mut r0 = 0;
        while r0 < rows {
            let nr = per.min(rows - r0);
            let mut prm = Params::new(nr, n, n);
            prm.total = (nr * n) as u32;
            let (bx, x_off) = Bind::elems(ctx, 1, re.buffer(), 4, r0 * n, nr * n);
            prm.x_off = x_off;
            match im {
                None => s.dispatch(
                    &*pl("load_real")?,
                    &prm,
                    &[bx, spec(3, &a, nr, n)],
                    (nr * n).div_ceil(wg),
                )?,
                Some(t) => {
                    let (bxi, _) = Bind::elems(ctx, 7, t.buffer(), 4, r0 * n, nr * n);
                    s.dispatch(
                        &*pl("load_complex")?,
                        &prm,
                        &[bx, bxi, spec(3, &a, nr, n)],
                        (nr * n).div_ceil(wg),
                    )?
                }
            }
            let in_b = record_passes(&mut s, st, &tw, (&a, &b), nr, n, dir)?;
            let res = if in_b { &b } else { &a };
            if dir == FftDirection::Inverse {
                prm.scale = 1.0 / n as f32;
            }
            let (by, y_off) = Bind::elems(ctx, 6, out_re.buffer(), 4, r0 * n, nr * n);
            let (byi, _) = Bind::elems(ctx, 8, out_im.buffer(), 4, r0 * n, nr * n);
            prm.y_off = y_off;
            s.dispatch(
                &*pl("store_complex")?,
                &prm,
                &[spec(2, res, nr, n), by, byi],
                (nr * n).div_ceil(wg),
            )?;
            r0 += nr;
        }
        s.submit();
        Ok(())
    })?;
    Ok((out_re, out_im))
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
    conv_dims(u.shape(), k.shape(), d.shape())?;
    let out = Tensor::empty(ctx, u.shape())?;
    causal_conv_into(ctx, u, k, d, &out)?;
    Ok(out)
}

/// [`causal_conv`] into an existing `out` shaped like u, one submission.
pub fn causal_conv_into<T: Element>(
    ctx: &Context,
    u: &Tensor<T>,
    k: &Tensor<T>,
    d: &Tensor<T>,
    out: &Tensor<T>,
) -> Result<()> {
    crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        record_causal_conv(&mut s, u, k, d, out)?;
        s.submit();
        Ok(())
    })
}

/// Records [`causal_conv`] into a [`Schedule`].
pub fn record_causal_conv<T: Element>(
    s: &mut Schedule<'_>,
    u: &Tensor<T>,
    k: &Tensor<T>,
    d: &Tensor<T>,
    out: &Tensor<T>,
) -> Result<()> {
    let ctx = s.context();
    let (rows, h, len) = conv_dims(u.shape(), k.shape(), d.shape())?;
    if out.shape() != u.shape() {
        return Err(Error::Shape {
            op: CONV,
            name: "out",
            expected: format!("{:?} (the shape of u)", u.shape()),
            got: out.shape().to_vec(),
        });
    }
    for (name, t) in [("u", u), ("K", k), ("D", d)] {
        if t.buffer() == out.buffer() {
            return Err(Error::InvalidArgument {
                op: CONV,
                name: "out",
                reason: format!("aliases input `{name}`"),
            });
        }
    }
    let storage = Storage::for_dtype(ctx, T::DTYPE);
    let wg = workgroup_size(ctx);
    let wgu = wg as u64;
    let (rows, h, len) = (rows as u64, h as u64, len as u64);
    let n = (2 * len).next_power_of_two();
    let es = size_of::<T>() as u64;
    let ob = storage.out_elem_bytes();
    let per = rows_per_pass(
        ctx,
        CONV,
        &[("spectrum", n * 8), ("u", len * es), ("y", len * ob)],
        rows as usize,
    )? as u64;
    let nr_max = per.min(rows);
    let limit = ctx.limits().max_storage_buffer_binding_size;
    if h * n * 8 > limit {
        return Err(Error::TooLarge {
            op: CONV,
            what: "the kernel spectra [H, n]".into(),
            needed: h * n * 8,
            limit,
        });
    }
    let s1 = scratch(ctx, h * n * 8);
    let s2 = scratch(ctx, h.max(nr_max) * n * 8);
    let s3 = scratch(ctx, nr_max * n * 8);
    let tw = twiddles(ctx, n);
    let pl = |e| ctx.pipelines.get(ctx, "fft", e, storage, &[("WG", wg)]);

    // Kernel spectra, once for all rows.
    let mut prm = Params::new(h, len, n);
    prm.h = h as u32;
    prm.total = (h * n) as u32;
    let bk = bind_buffer(ctx, CONV, "K", 1, k.buffer())?;
    s.dispatch(
        &*pl("load_real")?,
        &prm,
        &[bk, spec(3, &s2, h, n)],
        (h * n).div_ceil(wgu),
    )?;
    let k_in_s1 = record_passes(s, storage, &tw, (&s2, &s1), h, n, FftDirection::Forward)?;
    let (kf, free) = if k_in_s1 { (&s1, &s2) } else { (&s2, &s1) };
    let free_rows = if k_in_s1 { h.max(nr_max) } else { h };
    // The free buffer must hold a pass of u rows.
    let spare;
    let free = if free_rows >= nr_max {
        free
    } else {
        spare = scratch(ctx, nr_max * n * 8);
        &spare
    };
    let packed = (storage == Storage::F16Packed).then(|| scratch(ctx, nr_max * len * 4));
    let bd = bind_buffer(ctx, CONV, "D", 5, d.buffer())?;

    let mut r0 = 0;
    while r0 < rows {
        let nr = per.min(rows - r0);
        let mut prm = Params::new(nr, len, n);
        prm.h = h as u32;
        prm.row0 = r0 as u32;
        let (bu, x_off) = Bind::elems(ctx, 1, u.buffer(), es, r0 * len, nr * len);
        prm.x_off = x_off;
        prm.total = (nr * n) as u32;
        s.dispatch(
            &*pl("load_real")?,
            &prm,
            &[bu, spec(3, free, nr, n)],
            (nr * n).div_ceil(wgu),
        )?;
        let in_b = record_passes(s, storage, &tw, (free, &s3), nr, n, FftDirection::Forward)?;
        let (uf, other) = if in_b { (&s3, free) } else { (free, &s3) };
        s.dispatch(
            &*pl("pointwise")?,
            &prm,
            &[spec(2, kf, h, n), spec(3, uf, nr, n)],
            (nr * n).div_ceil(wgu),
        )?;
        let in_b = record_passes(s, storage, &tw, (uf, other), nr, n, FftDirection::Inverse)?;
        let yf = if in_b { other } else { uf };
        let (by, y_off) = match &packed {
            Some(buf) => (
                Bind {
                    slot: 6,
                    buffer: buf,
                    offset: 0,
                    size: nr * len * 4,
                },
                0,
            ),
            None => Bind::elems(ctx, 6, out.buffer(), es, r0 * len, nr * len),
        };
        prm.y_off = y_off;
        prm.scale = 1.0 / n as f32;
        prm.total = (nr * len) as u32;
        s.dispatch(
            &*pl("store_conv")?,
            &prm,
            &[bu, spec(2, yf, nr, n), bd, by],
            (nr * len).div_ceil(wgu),
        )?;
        if let Some(buf) = &packed {
            record_pack_f16(s, buf, out.buffer(), r0 * len, nr * len)?;
        }
        r0 += nr;
    }
    Ok(())
}
