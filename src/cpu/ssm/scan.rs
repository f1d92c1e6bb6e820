//! The S4D recurrent mode on the CPU path: `x_t = Ā x_{t−1} + B̄ u_t`, `y_t = 2 Re(C x_t) + D u_t`
//! per (batch, head) row in parallel, the N2 modes of a row stepped together (f32 state; Ā, B̄
//! from the f64 discretisation).

use rayon::prelude::*;

use num_complex::Complex32;

use crate::cpu::{check_len, load, store};
use crate::reference::ssm::DiagonalSsm;
use crate::ssm::Discretization;
use crate::{Element, Error, Result};

/// `u: [B, H, L]` (or `[H, L]`, `u_shape`) from a zero state -> `y` shaped like u, in its dtype.
/// Errors: those of [`DiagonalSsm::check`] and its discretisation, [`Error::Shape`] for u.
pub fn s4d_scan<T: Element>(
    ssm: &DiagonalSsm,
    u: &[T],
    u_shape: &[usize],
    disc: Discretization,
) -> Result<Vec<T>> {
    const OP: &str = "cpu::s4d_scan";
    ssm.check(OP)?;
    let r = u_shape.len();
    if !(r == 2 || r == 3) || u_shape.contains(&0) || u_shape[r - 2] != ssm.h {
        return Err(Error::Shape {
            op: OP,
            name: "u",
            expected: format!("[B, {}, L] or [{}, L], every dim >= 1", ssm.h, ssm.h),
            got: u_shape.to_vec(),
        });
    }
    check_len(u, u_shape)?;
    let (len, n2) = (u_shape[r - 1], ssm.n2);
    let (ab, bb) = ssm.discretize(disc)?;
    let u = load(u);
    let mut y = vec![T::from_f64(0.0); u.len()];
    y.par_chunks_mut(len).enumerate().for_each(|(row, yr)| {
        let h = row % ssm.h;
        let modes = h * n2..(h + 1) * n2;
        let f = |v: f64| v as f32;
        let (ar, ai): (Vec<f32>, Vec<f32>) =
            ab[modes.clone()].iter().map(|z| (f(z.re), f(z.im))).unzip();
        let (br, bi): (Vec<f32>, Vec<f32>) =
            bb[modes.clone()].iter().map(|z| (f(z.re), f(z.im))).unzip();
        let (cr, ci): (Vec<f32>, Vec<f32>) =
            ssm.c[modes].iter().map(|z| (f(z.re), f(z.im))).unzip();
        let (mut xr, mut xi) = (vec![0.0f32; n2], vec![0.0f32; n2]);
        let d = ssm.d[h] as f32;
        let ur = &u[row * len..][..len];
        let mut out = vec![0.0f32; len];
        for (t, &ut) in ur.iter().enumerate() {
            let mut acc = 0.0f32;
            for n in 0..n2 {
                let (pr, pi) = (xr[n], xi[n]);
                xr[n] = ar[n] * pr - ai[n] * pi + br[n] * ut;
                xi[n] = ar[n] * pi + ai[n] * pr + bi[n] * ut;
                acc += cr[n] * xr[n] - ci[n] * xi[n];
            }
            out[t] = 2.0 * acc + d * ut;
        }
        store(&out, yr);
    });
    Ok(y)
}

/// Operands of [`linear_scan`], host slices of one shape `[.., L]`: `a_re`, `b_re` and, for
/// complex operands, `a_im`, `b_im` (a missing imaginary part is zero). The host mirror of
/// [`crate::ssm::ScanOperands`].
#[derive(Clone, Copy)]
pub struct ScanOperands<'a, T: Element> {
    /// Real part of the multiplier a.
    pub a_re: &'a [T],
    /// Imaginary part of a (None: real).
    pub a_im: Option<&'a [T]>,
    /// Real part of the input b.
    pub b_re: &'a [T],
    /// Imaginary part of b (None: real).
    pub b_im: Option<&'a [T]>,
}

/// Rows shorter than this are scanned whole by one thread; longer ones (when there are fewer
/// rows than threads) in chunks: each chunk's local scan and product of `a`, a sequential carry
/// over chunks, then each chunk again from its carry.
const SCAN_CHUNK: usize = 4096;

/// `h_t = a_t h_{t−1} + b_t`, `h_{−1} = 0`, along the last axis of `shape` (`[.., L]`). Returns
/// `(h_re, h_im)`, `h_im` present when an operand is complex; f32 arithmetic, outputs in T.
/// Errors: [`Error::Shape`] for an empty shape or dim, [`crate::Error::DataLength`] when an
/// operand does not hold `shape`.
pub fn linear_scan<T: Element>(
    ops: &ScanOperands<'_, T>,
    shape: &[usize],
) -> Result<(Vec<T>, Option<Vec<T>>)> {
    if shape.is_empty() || shape.contains(&0) {
        return Err(Error::Shape {
            op: "cpu::linear_scan",
            name: "a_re",
            expected: "[.., L], e.g. [B, H, N, L], every dim >= 1".into(),
            got: shape.to_vec(),
        });
    }
    for x in [Some(ops.a_re), ops.a_im, Some(ops.b_re), ops.b_im]
        .into_iter()
        .flatten()
    {
        check_len(x, shape)?;
    }
    let len = shape[shape.len() - 1];
    let zip = |re: &[T], im: Option<&[T]>| -> Vec<Complex32> {
        let re = load(re);
        match im {
            Some(im) => re
                .iter()
                .zip(load(im).iter())
                .map(|(&r, &i)| Complex32::new(r, i))
                .collect(),
            None => re.iter().map(|&r| Complex32::new(r, 0.0)).collect(),
        }
    };
    let finish = |h: Vec<f32>| {
        let mut out = vec![T::from_f64(0.0); h.len()];
        store(&h, &mut out);
        out
    };
    if ops.a_im.is_none() && ops.b_im.is_none() {
        let h = scan_rows(&load(ops.a_re), &load(ops.b_re), len, 0.0f32);
        return Ok((finish(h), None));
    }
    let h = scan_rows(
        &zip(ops.a_re, ops.a_im),
        &zip(ops.b_re, ops.b_im),
        len,
        Complex32::new(0.0, 0.0),
    );
    let (re, im) = h.iter().map(|z| (z.re, z.im)).unzip();
    Ok((finish(re), Some(finish(im))))
}

/// The scan over rows of length `len`, rows in parallel, long rows chunked.
fn scan_rows<S>(a: &[S], b: &[S], len: usize, zero: S) -> Vec<S>
where
    S: Copy + Send + Sync + std::ops::Mul<Output = S> + std::ops::Add<Output = S>,
{
    let mut h = vec![zero; a.len()];
    let rows = a.len() / len;
    let chunked = len > SCAN_CHUNK && rows < rayon::current_num_threads();
    h.par_chunks_mut(len).enumerate().for_each(|(r, hr)| {
        let (ar, br) = (&a[r * len..][..len], &b[r * len..][..len]);
        if !chunked {
            let mut x = zero;
            for ((ht, &at), &bt) in hr.iter_mut().zip(ar).zip(br) {
                x = at * x + bt;
                *ht = x;
            }
            return;
        }
        // Local scans from zero, and each chunk's product of a (as h = P·h_in + local).
        let prods: Vec<S> = hr
            .par_chunks_mut(SCAN_CHUNK)
            .zip(ar.par_chunks(SCAN_CHUNK).zip(br.par_chunks(SCAN_CHUNK)))
            .map(|(hc, (ac, bc))| {
                let (mut x, mut p) = (zero, None::<S>);
                for ((ht, &at), &bt) in hc.iter_mut().zip(ac).zip(bc) {
                    x = at * x + bt;
                    *ht = x;
                    p = Some(p.map_or(at, |p| at * p));
                }
                p.unwrap_or(zero)
            })
            .collect();
        let mut carry = vec![zero; prods.len()];
        for c in 1..prods.len() {
            // hr still holds chunk c−1's local scan: its true last value is P·carry + local.
            carry[c] = prods[c - 1] * carry[c - 1] + hr[c * SCAN_CHUNK - 1];
        }
        hr.par_chunks_mut(SCAN_CHUNK)
            .zip(ar.par_chunks(SCAN_CHUNK))
            .zip(carry.par_iter())
            .skip(1)
            .for_each(|((hc, ac), &cin)| {
                let mut p = cin;
                for (ht, &at) in hc.iter_mut().zip(ac) {
                    p = at * p;
                    *ht = *ht + p;
                }
            });
    });
    h
}
