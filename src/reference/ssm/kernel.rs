//! S4D convolution kernel on the CPU in f64 (Gu et al. 2022, *On the Parameterization and
//! Initialization of Diagonal State Space Models*, arXiv 2206.11893, eq. 5 and §3).

pub use crate::types::ssm::{DiagonalSsm, Discretization};
use crate::Result;

/// S4D kernel `K: [H, L]`, `K[h, l] = 2 Re Σ_n C_n B̄_n Ā_n^l` (l = 0..L−1), f64. `Ā^l` is taken
/// by `powu` (binary powering), independent of the GPU's reduced-phase exponentials.
pub fn s4d_kernel(ssm: &DiagonalSsm, len: usize, disc: Discretization) -> Result<Vec<f64>> {
    ssm.check("s4d_kernel")?;
    let (ab, bb) = ssm.discretize(disc)?;
    let mut k = vec![0.0; ssm.h * len];
    for h in 0..ssm.h {
        for n in 0..ssm.n2 {
            let i = h * ssm.n2 + n;
            let w = ssm.c[i] * bb[i];
            for (l, kl) in k[h * len..(h + 1) * len].iter_mut().enumerate() {
                *kl += 2.0 * (w * ab[i].powu(l as u32)).re;
            }
        }
    }
    Ok(k)
}
