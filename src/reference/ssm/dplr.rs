//! S4's diagonal-plus-low-rank SSM on the CPU in f64: `A = Λ − P Qᴴ` (rank 1), bilinear
//! discretisation, the dense kernel `K_l = Re(C Ā^l B̄)` by the recurrence, and the C̃ of
//! Algorithm 1 (Gu et al. 2022, arXiv 2111.00396).

use num_complex::Complex64;

pub use crate::types::ssm::DplrSsm;
use crate::Result;

/// The dense kernel `K[h, l] = Re(C Ā^l B̄)`, l < len, by `x ← Ā x` from `x = B̄`, f64.
pub fn dplr_kernel_dense(m: &DplrSsm, len: usize) -> Result<Vec<f64>> {
    m.check("dplr_kernel")?;
    let n = m.n;
    let mut k = vec![0.0; m.h * len];
    for hh in 0..m.h {
        let (ab, mut x) = m.bilinear(hh);
        let c = &m.c[hh * n..(hh + 1) * n];
        for l in 0..len {
            k[hh * len + l] = c.iter().zip(&x).map(|(a, b)| a * b).sum::<Complex64>().re;
            x = (0..n)
                .map(|i| (0..n).map(|j| ab[i * n + j] * x[j]).sum())
                .collect();
        }
    }
    Ok(k)
}
