//! Lightning attention as its plain recurrence (TransNormerLLM, arXiv 2307.14995):
//! `S_t = λ S_{t−1} + φ(k_t)ᵀ v_t`, `o_t = φ(q_t) S_t`, `λ = exp(−s_h)`, in f64.

use super::softmax::check_len;
use crate::types::attention::{resolve_slopes, AttnDims, LightningOptions};
use crate::{Element, Error, Result};

/// `q, k: [R, L, Dk]`, `v: [R, L, Dv]` with R = B·H rows, row r being head `r % heads`;
/// `slopes: [heads]` (`None`: ALiBi) -> `o: [R, L, Dv]` in f64. The block size does not enter.
pub fn lightning_attention<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    heads: usize,
    slopes: Option<&[f32]>,
    opts: &LightningOptions,
) -> Result<Vec<f64>> {
    let op = "reference::lightning_attention";
    crate::types::attention::check_plain(op, opts.layout, None)?;
    if heads == 0 || !d.rows.is_multiple_of(heads) {
        return Err(Error::InvalidArgument {
            op,
            name: "heads",
            reason: format!("{heads} does not divide the {} rows", d.rows),
        });
    }
    let s = resolve_slopes(op, heads, slopes)?;
    let (l, dk, dv) = (d.len, d.dk, d.dv);
    check_len(q, d.rows, l, dk)?;
    check_len(k, d.rows, l, dk)?;
    check_len(v, d.rows, l, dv)?;
    let phi = |x: T| opts.feature_map.apply(x.to_f64());
    let mut out = vec![0.0f64; d.rows * l * dv];
    let mut st = vec![0.0f64; dk * dv];
    for r in 0..d.rows {
        let lambda = (-(s[r % heads] as f64)).exp();
        st.fill(0.0);
        for t in 0..l {
            let row = r * l + t;
            for a in 0..dk {
                let fk = phi(k[row * dk + a]);
                for e in 0..dv {
                    let x = &mut st[a * dv + e];
                    *x = lambda * *x + fk * v[row * dv + e].to_f64();
                }
            }
            for e in 0..dv {
                out[row * dv + e] = (0..dk).map(|a| phi(q[row * dk + a]) * st[a * dv + e]).sum();
            }
        }
    }
    Ok(out)
}
