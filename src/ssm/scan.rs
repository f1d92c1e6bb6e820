//! Parallel associative scan for `h_t = a_t h_{t−1} + b_t` (real or complex, any L) in WGSL,
//! multi-level across workgroups, and the S4D recurrent mode built on it: whole-sequence scan and
//! single step (Blelloch 1990; Smith et al. 2023, *S5*, arXiv 2208.04933, §2.2).
//!
//! Elements `(a, b)` combine as `(a_i, b_i) • (a_j, b_j) = (a_j a_i, a_j b_i + b_j)` with identity
//! `(1, 0)` (pads ragged blocks). Each workgroup scans a block of `WG` in workgroup memory and
//! writes its total; the totals are scanned the same way, level upon level, until one block
//! remains, then every block is prefixed with the resolved total of the blocks before it.

use bytemuck::{Pod, Zeroable};

use super::kernel::{record_modes, DiagonalSsm, Discretization};
use crate::bind::{bind_buffer, bind_whole, scratch, Bind};
use crate::cast::record_pack_f16;
use crate::pipeline::Storage;
use crate::schedule::{rows_per_pass, Schedule};
use crate::sizes::workgroup_size;
use crate::{Context, Element, Error, Result, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    m: u32,
    total: u32,
    flags: u32,
    in_off: u32,
    out_off: u32,
    h: u32,
    n2: u32,
    bh0: u32,
    _p: [u32; 3],
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
            _p: [0; 3],
        }
    }
}

/// Scans `rows` rows of length `len` held in `x` (vec4 elements, level 0) in place.
fn record_levels(
    s: &mut Schedule<'_>,
    storage: Storage,
    x: &wgpu::Buffer,
    rows: u64,
    len: u64,
) -> Result<()> {
    let ctx = s.context();
    let wg = workgroup_size(ctx);
    let w = wg as u64;
    let pl = |e| ctx.pipelines.get(ctx, "scan", e, storage, &[("WG", wg)]);
    let (up, down) = (pl("scan_up")?, pl("scan_down")?);
    let mut sizes = vec![len];
    while *sizes.last().unwrap() > w {
        sizes.push(sizes.last().unwrap().div_ceil(w));
    }
    sizes.push(1);
    let levels: Vec<wgpu::Buffer> = sizes[1..]
        .iter()
        .map(|m| scratch(ctx, rows * m * 16))
        .collect();
    let buf = |k: usize| if k == 0 { x } else { &levels[k - 1] };
    let top = sizes.len() - 1;
    for (k, &m) in sizes[..top].iter().enumerate() {
        let nblk = m.div_ceil(w);
        let mut prm = Params::new(rows, m);
        prm.total = (rows * nblk) as u32;
        let binds = [
            Bind::prefix(5, buf(k), rows * m * 16),
            Bind::prefix(6, buf(k + 1), rows * nblk * 16),
        ];
        s.dispatch(&up, &prm, &binds, rows * nblk)?;
    }
    for k in (0..top).rev() {
        let m = sizes[k];
        if m <= w {
            continue;
        }
        let nblk = m.div_ceil(w);
        let prm = Params::new(rows, m);
        let binds = [
            Bind::prefix(5, buf(k), rows * m * 16),
            Bind::prefix(6, buf(k + 1), rows * nblk * 16),
        ];
        s.dispatch(&down, &prm, &binds, (rows * m).div_ceil(w))?;
    }
    Ok(())
}

/// Operands of [`linear_scan`]: `a_re, b_re: [.., L]` and, for complex operands, `a_im`, `b_im`
/// of the same shape (a missing imaginary part is zero).
#[derive(Clone, Copy)]
pub struct ScanOperands<'a, T: Element> {
    pub a_re: &'a Tensor<T>,
    pub a_im: Option<&'a Tensor<T>>,
    pub b_re: &'a Tensor<T>,
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
    ops.check()?;
    let shape = ops.a_re.shape();
    let h_re = Tensor::empty(ctx, shape)?;
    let h_im = if ops.complex() {
        Some(Tensor::empty(ctx, shape)?)
    } else {
        None
    };
    linear_scan_into(ctx, ops, &h_re, h_im.as_ref())?;
    Ok((h_re, h_im))
}

/// [`linear_scan`] into existing outputs (`h_im` required exactly when an operand is complex).
pub fn linear_scan_into<T: Element>(
    ctx: &Context,
    ops: &ScanOperands<'_, T>,
    h_re: &Tensor<T>,
    h_im: Option<&Tensor<T>>,
) -> Result<()> {
    let (rows, len) = ops.check()?;
    let shape = ops.a_re.shape();
    for (name, t) in [("h_re", Some(h_re)), ("h_im", h_im)] {
        if let Some(t) = t {
            if t.shape() != shape {
                return Err(Error::Shape {
                    op: OP,
                    name,
                    expected: format!("{shape:?} (the shape of a_re)"),
                    got: t.shape().to_vec(),
                });
            }
        }
    }
    if ops.complex() != h_im.is_some() {
        return Err(Error::InvalidArgument {
            op: OP,
            name: "h_im",
            reason: "required exactly when an operand is complex".into(),
        });
    }
    crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        let storage = Storage::for_dtype(ctx, T::DTYPE);
        let wg = workgroup_size(ctx);
        let w = wg as u64;
        let pl = |e| ctx.pipelines.get(ctx, "scan", e, storage, &[("WG", wg)]);
        let (rows, len) = (rows as u64, len as u64);
        let es = size_of::<T>() as u64;
        let ob = storage.out_elem_bytes();
        let per = rows_per_pass(
            ctx,
            OP,
            &[("scan state", len * 16), ("a", len * es), ("h", len * ob)],
            rows as usize,
        )? as u64;
        let nr_max = per.min(rows);
        let x = scratch(ctx, nr_max * len * 16);
        let packed = (storage == Storage::F16Packed).then(|| {
            (
                scratch(ctx, nr_max * len * 4),
                scratch(ctx, nr_max * len * 4),
            )
        });
        let mut r0 = 0;
        while r0 < rows {
            let nr = per.min(rows - r0);
            let (first, n) = (r0 * len, nr * len);
            let mut prm = Params::new(nr, len);
            prm.flags = ops.a_im.is_some() as u32 | (ops.b_im.is_some() as u32) << 1;
            let (ba, off) = Bind::elems(ctx, 1, ops.a_re.buffer(), es, first, n);
            let bai = Bind::elems(ctx, 2, ops.a_im.unwrap_or(ops.a_re).buffer(), es, first, n).0;
            let bb = Bind::elems(ctx, 3, ops.b_re.buffer(), es, first, n).0;
            let bbi = Bind::elems(ctx, 4, ops.b_im.unwrap_or(ops.b_re).buffer(), es, first, n).0;
            prm.in_off = off;
            let bx = Bind::prefix(5, &x, n * 16);
            s.dispatch(
                &*pl("load_ab")?,
                &prm,
                &[ba, bai, bb, bbi, bx],
                n.div_ceil(w),
            )?;
            record_levels(&mut s, storage, &x, nr, len)?;
            let mut binds = vec![bx];
            let outs: Vec<(&Tensor<T>, u32)> = match h_im {
                Some(hi) => vec![(h_re, 7), (hi, 8)],
                None => vec![(h_re, 7)],
            };
            for (i, &(t, slot)) in outs.iter().enumerate() {
                match &packed {
                    Some((p0, p1)) => {
                        binds.push(Bind::prefix(slot, if i == 0 { p0 } else { p1 }, n * 4))
                    }
                    None => {
                        let (b, off) = Bind::elems(ctx, slot, t.buffer(), es, first, n);
                        prm.out_off = off;
                        binds.push(b);
                    }
                }
            }
            let entry = if h_im.is_some() {
                "store_complex"
            } else {
                "store_real"
            };
            s.dispatch(&*pl(entry)?, &prm, &binds, n.div_ceil(w))?;
            if let Some((p0, p1)) = &packed {
                for (i, &(t, _)) in outs.iter().enumerate() {
                    record_pack_f16(&mut s, if i == 0 { p0 } else { p1 }, t.buffer(), first, n)?;
                }
            }
            r0 += nr;
        }
        s.submit();
        Ok(())
    })
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
    let out = Tensor::empty(ctx, u.shape())?;
    s4d_scan_into(ctx, ssm, u, &out, disc)?;
    Ok(out)
}

/// [`s4d_scan`] into an existing `out: [B, H, L]`.
pub fn s4d_scan_into<T: Element>(
    ctx: &Context,
    ssm: &DiagonalSsm<T>,
    u: &Tensor<T>,
    out: &Tensor<T>,
    disc: Discretization,
) -> Result<()> {
    let (h, n2) = ssm.dims(SSM)?;
    u_dims(SSM, u.shape(), h, 3, "[B, H, L]")?;
    if out.shape() != u.shape() {
        return Err(Error::Shape {
            op: SSM,
            name: "out",
            expected: format!("{:?} (the shape of u)", u.shape()),
            got: out.shape().to_vec(),
        });
    }
    crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        let storage = Storage::for_dtype(ctx, T::DTYPE);
        let wg = workgroup_size(ctx);
        let w = wg as u64;
        let pl = |e| ctx.pipelines.get(ctx, "scan", e, storage, &[("WG", wg)]);
        let modes = record_modes(&mut s, ssm, disc)?;
        let (bh, len, n2) = ((u.shape()[0] * h) as u64, u.shape()[2] as u64, n2 as u64);
        let es = size_of::<T>() as u64;
        let per = rows_per_pass(
            ctx,
            SSM,
            &[("states", n2 * len * 16), ("u", len * es), ("y", len * 4)],
            bh as usize,
        )? as u64;
        let nr_max = per.min(bh);
        let x = scratch(ctx, nr_max * n2 * len * 16);
        let packed = (storage == Storage::F16Packed).then(|| scratch(ctx, nr_max * len * 4));
        let bm = bind_buffer(ctx, SSM, "modes", 9, &modes)?;
        let c_binds = [
            bind_whole(ctx, SSM, "C_re", 11, &ssm.c_re)?,
            bind_whole(ctx, SSM, "C_im", 12, &ssm.c_im)?,
            bind_whole(ctx, SSM, "D", 13, &ssm.d)?,
        ];
        let mut r0 = 0;
        while r0 < bh {
            let nr = per.min(bh - r0);
            let rows = nr * n2;
            let mut prm = Params::new(rows, len);
            prm.h = h as u32;
            prm.n2 = n2 as u32;
            prm.bh0 = r0 as u32;
            let (bu, off) = Bind::elems(ctx, 10, u.buffer(), es, r0 * len, nr * len);
            prm.in_off = off;
            let bx = Bind::prefix(5, &x, rows * len * 16);
            s.dispatch(
                &*pl("load_ssm")?,
                &prm,
                &[bm, bu, bx],
                (rows * len).div_ceil(w),
            )?;
            record_levels(&mut s, storage, &x, rows, len)?;
            let by = match &packed {
                Some(buf) => Bind::prefix(14, buf, nr * len * 4),
                None => {
                    let (b, off) = Bind::elems(ctx, 14, out.buffer(), es, r0 * len, nr * len);
                    prm.out_off = off;
                    b
                }
            };
            prm.total = (nr * len) as u32;
            let mut binds = vec![bx, bu, by];
            binds.extend(c_binds);
            s.dispatch(&*pl("out_ssm")?, &prm, &binds, (nr * len).div_ceil(w))?;
            if let Some(buf) = &packed {
                record_pack_f16(&mut s, buf, out.buffer(), r0 * len, nr * len)?;
            }
            r0 += nr;
        }
        s.submit();
        Ok(())
    })
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
    const STEP: &str = "s4d_step";
    let (h, n2) = ssm.dims(STEP)?;
    u_dims(STEP, u.shape(), h, 2, "[B, H]")?;
    let b = u.shape()[0];
    if state.shape() != [b, h, n2, 2] {
        return Err(Error::Shape {
            op: STEP,
            name: "state",
            expected: format!("[{b}, {h}, {n2}, 2] ([B, H, N2, (re, im)])"),
            got: state.shape().to_vec(),
        });
    }
    let new_state = Tensor::<f32>::empty(ctx, state.shape())?;
    let y = Tensor::<T>::empty(ctx, u.shape())?;
    crate::error_scope(ctx, || {
        let mut s = Schedule::new(ctx);
        let storage = Storage::for_dtype(ctx, T::DTYPE);
        let wg = workgroup_size(ctx);
        let modes = record_modes(&mut s, ssm, disc)?;
        let p = ctx
            .pipelines
            .get(ctx, "scan", "step", storage, &[("WG", wg)])?;
        let n = (b * h) as u64;
        let packed = (storage == Storage::F16Packed).then(|| scratch(ctx, n * 4));
        let by = match &packed {
            Some(buf) => Bind::prefix(14, buf, n * 4),
            None => bind_whole(ctx, STEP, "y", 14, &y)?,
        };
        let binds = [
            bind_buffer(ctx, STEP, "modes", 9, &modes)?,
            bind_whole(ctx, STEP, "u", 10, u)?,
            bind_whole(ctx, STEP, "C_re", 11, &ssm.c_re)?,
            bind_whole(ctx, STEP, "C_im", 12, &ssm.c_im)?,
            bind_whole(ctx, STEP, "D", 13, &ssm.d)?,
            by,
            bind_whole(ctx, STEP, "state", 15, state)?,
            bind_whole(ctx, STEP, "state", 16, &new_state)?,
        ];
        let mut prm = Params::new(n, 1);
        prm.h = h as u32;
        prm.n2 = n2 as u32;
        s.dispatch(&p, &prm, &binds, n.div_ceil(wg as u64))?;
        if let Some(buf) = &packed {
            record_pack_f16(&mut s, buf, y.buffer(), 0, n)?;
        }
        s.submit();
        Ok(())
    })?;
    Ok((new_state, y))
}
