//! The fast CPU path: every op in f32 (storage and accumulation; f64 only where an algorithm
//! needs it), threaded with rayon over (batch, head) and chunks, matrix products through
//! `matrixmultiply`'s sgemm, real FFTs through `realfft`. Same options structs and shapes as the
//! GPU ops; host slices in and out. The f64 [`crate::reference`] checks it; this path is for speed
//! (the no-GPU default of the CLI and the honest CPU baseline of the benches).
//!
//! Inputs are `&[T]` with `T` f32 or f16 (f16 is widened to f32 once on entry); outputs are in
//! the inputs' dtype, as a new `Vec` or written into `&mut [T]` by the `_into` forms.

pub mod attention;
pub(crate) mod gated;
mod gemm;
pub mod positions;
pub mod ssm;

use std::borrow::Cow;
use std::cell::Cell;

use crate::{DType, Element, Error, Result};

pub(crate) use gemm::{sgemm, Mat, MatMut};

/// `x` as f32: borrowed when `T` is f32, widened once when it is f16.
pub(crate) fn load<T: Element>(x: &[T]) -> Cow<'_, [f32]> {
    match T::DTYPE {
        DType::F32 => Cow::Borrowed(bytemuck::cast_slice(x)),
        DType::F16 => Cow::Owned(
            bytemuck::cast_slice::<T, half::f16>(x)
                .iter()
                .map(|h| h.to_f32())
                .collect(),
        ),
    }
}

thread_local! {
    /// Per-thread f32 work space of [`with_scratch`].
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Scratch kept past a call only up to this many f32 (16 MiB per thread).
const SCRATCH_KEEP: usize = 1 << 22;

/// Runs `f` with this thread's reusable f32 buffer (contents unspecified; grow it with
/// [`carve`]). Reusing it saves the allocation and page faults of fresh blocks on every call;
/// a nested call (rayon may run another task on this thread) gets its own empty buffer.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
    let mut buf = SCRATCH.with(Cell::take);
    let r = f(&mut buf);
    if buf.capacity() <= SCRATCH_KEEP {
        SCRATCH.with(|s| s.set(buf));
    }
    r
}

/// Splits `buf`, grown as needed, into consecutive slices of lengths `lens` (contents
/// unspecified: callers write before they read).
pub(crate) fn carve<const N: usize>(buf: &mut Vec<f32>, lens: [usize; N]) -> [&mut [f32]; N] {
    let total: usize = lens.iter().sum();
    if buf.len() < total {
        buf.resize(total, 0.0);
    }
    let mut rest = &mut buf[..total];
    let mut out: [&mut [f32]; N] = std::array::from_fn(|_| <&mut [f32]>::default());
    for (o, &n) in out.iter_mut().zip(&lens) {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(n);
        *o = head;
        rest = tail;
    }
    out
}

/// Writes `src` into `dst`, rounding to `T`.
pub(crate) fn store<T: Element>(src: &[f32], dst: &mut [T]) {
    match T::DTYPE {
        DType::F32 => dst.copy_from_slice(bytemuck::cast_slice(src)),
        DType::F16 => {
            for (d, s) in bytemuck::cast_slice_mut::<T, half::f16>(dst)
                .iter_mut()
                .zip(src)
            {
                *d = half::f16::from_f32(*s);
            }
        }
    }
}

/// [`Error::DataLength`] unless `x` holds `shape`'s element count.
pub(crate) fn check_len<T>(x: &[T], shape: &[usize]) -> Result<()> {
    let expected: usize = shape.iter().product();
    if x.len() != expected {
        return Err(Error::DataLength {
            shape: shape.to_vec(),
            expected,
            got: x.len(),
        });
    }
    Ok(())
}

/// `e^x` for `x ≤ 0` (NaN in, NaN out), written so that loops over it vectorize: Cody-Waite
/// reduction `x = n ln2 + r`, Cephes' degree-6 polynomial for `e^r` (about 1 ulp), `2^n` built in
/// the exponent bits. Below −87 (where e^x leaves the normal range) it returns e^−87 ≈ 1.6e-38
/// instead of a subnormal or 0: absolutely within 2e-38.
#[inline(always)]
pub(crate) fn exp_nonpos(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MAGIC: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer in the low bits
    let x = if x < -87.0 { -87.0 } else { x };
    let y = x * LOG2E + MAGIC;
    let n = y - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // y's low mantissa bits hold n (two's complement, |n| < 2^22): 2^n = (n + 127) << 23.
    let scale = f32::from_bits(y.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23);
    e * scale
}
