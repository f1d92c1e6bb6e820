//! Linear attention as the recurrence of Katharopoulos et al. 2020, eqs. 16-20:
//! `S_i = S_{i−1} + φ(K_i) V_iᵀ`, `z_i = z_{i−1} + φ(K_i)`, `O_i = φ(Q_i)ᵀ S_i / (φ(Q_i)ᵀ z_i + ε)`;
//! non-causal uses the full sums (eq. 6). Denominator guard: when `φ(Q_i)ᵀ z_i + ε` is exactly 0
//! (ε = 0 and every weight 0) the output row is 0 rather than 0/0.

use crate::types::attention::{AttnDims, LinearAttentionOptions};
use crate::{Element, Error, Result};

/// `q, k: [R, L, Dk]`, `v: [R, L, Dv]` row-major (R = product of leading dims, from
/// [`crate::attention::linear::check_shapes`]) -> `o: [R, L, Dv]` in f64.
pub fn linear_attention<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    opts: &LinearAttentionOptions,
) -> Result<Vec<f64>> {
    let op = "reference::linear_attention";
    crate::types::attention::check_rows_options(op, opts)?;
    let (l, dk, dv) = (d.len, d.dk, d.dv);
    for (x, n) in [(q, dk), (k, dk), (v, dv)] {
        if x.len() != d.rows * l * n {
            return Err(Error::DataLength {
                shape: vec![d.rows, l, n],
                expected: d.rows * l * n,
                got: x.len(),
            });
        }
    }
    let phi = |x: T| opts.feature_map.apply(x.to_f64());
    let eps = opts.eps as f64;
    let mut out = vec![0.0f64; d.rows * l * dv];
    let mut s = vec![0.0f64; dk * dv];
    let mut z = vec![0.0f64; dk];
    let mut fq = vec![0.0f64; dk];
    for r in 0..d.rows {
        let (qr, kr, vr) = (
            &q[r * l * dk..][..l * dk],
            &k[r * l * dk..][..l * dk],
            &v[r * l * dv..][..l * dv],
        );
        s.fill(0.0);
        z.fill(0.0);
        let accumulate = |j: usize, s: &mut [f64], z: &mut [f64]| {
            for a in 0..dk {
                let fk = phi(kr[j * dk + a]);
                z[a] += fk;
                for e in 0..dv {
                    s[a * dv + e] += fk * vr[j * dv + e].to_f64();
                }
            }
        };
        if !opts.causal {
            for j in 0..l {
                accumulate(j, &mut s, &mut z);
            }
        }
        for i in 0..l {
            if opts.causal {
                accumulate(i, &mut s, &mut z);
            }
            for a in 0..dk {
                fq[a] = phi(qr[i * dk + a]);
            }
            let den: f64 = fq.iter().zip(&z).map(|(x, y)| x * y).sum::<f64>() + eps;
            let o = &mut out[(r * l + i) * dv..][..dv];
            for (e, oe) in o.iter_mut().enumerate() {
                let num: f64 = (0..dk).map(|a| fq[a] * s[a * dv + e]).sum();
                *oe = if !opts.denominator {
                    num
                } else if den == 0.0 {
                    // Denominator guard: every weight is 0 (and ε = 0), so 0/0 is defined as 0.
                    0.0
                } else {
                    num / den
                };
            }
        }
    }
    Ok(out)
}
