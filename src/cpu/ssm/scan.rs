//! The S4D recurrent mode on the CPU path: `x_t = Ā x_{t−1} + B̄ u_t`, `y_t = 2 Re(C x_t) + D u_t`
//! per (batch, head) row in parallel, the N2 modes of a row stepped together (f32 state; Ā, B̄
//! from the f64 discretisation).

use rayon::prelude::*;

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
