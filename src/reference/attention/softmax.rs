//! Exact softmax attention from its definition: `o_i = Σ_j p_ij v_j`,
//! `p_ij = exp(s_ij − max_j s_ij) / Σ_j exp(s_ij − max_j s_ij)`, `s_ij = scale · q_i·k_j`, over all
//! `j` (or `j ≤ i` when causal), two passes per query in f64.

use crate::types::attention::{check_plain, check_scale, AttnDims, SoftmaxAttentionOptions};
use crate::{Element, Error, Result};

pub(crate) fn check_len<T>(x: &[T], rows: usize, l: usize, n: usize) -> Result<()> {
    if x.len() != rows * l * n {
        return Err(Error::DataLength {
            shape: vec![rows, l, n],
            expected: rows * l * n,
            got: x.len(),
        });
    }
    Ok(())
}

/// `q, k: [R, L, Dk]`, `v: [R, L, Dv]` row-major (R = product of leading dims, from
/// [`crate::attention::linear::check_shapes`]) -> `o: [R, L, Dv]` in f64. The scale is
/// [`SoftmaxAttentionOptions::scale_for`], the same f32 value the GPU uses.
pub fn softmax_attention<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    opts: &SoftmaxAttentionOptions,
) -> Result<Vec<f64>> {
    check_scale("reference::softmax_attention", opts.scale)?;
    check_plain(
        "reference::softmax_attention",
        opts.layout,
        opts.cu_seqlens.as_ref(),
    )?;
    let (l, dk, dv) = (d.len, d.dk, d.dv);
    check_len(q, d.rows, l, dk)?;
    check_len(k, d.rows, l, dk)?;
    check_len(v, d.rows, l, dv)?;
    let scale = opts.scale_for(dk) as f64;
    let mut out = vec![0.0f64; d.rows * l * dv];
    let mut s = vec![0.0f64; l];
    for r in 0..d.rows {
        let (qr, kr, vr) = (
            &q[r * l * dk..][..l * dk],
            &k[r * l * dk..][..l * dk],
            &v[r * l * dv..][..l * dv],
        );
        for i in 0..l {
            let n = if opts.causal { i + 1 } else { l };
            for (j, sj) in s[..n].iter_mut().enumerate() {
                let dot: f64 = (0..dk)
                    .map(|a| qr[i * dk + a].to_f64() * kr[j * dk + a].to_f64())
                    .sum();
                *sj = scale * dot;
            }
            // A NaN logit makes the whole row NaN (its weight and hence the sum are NaN).
            let m = s[..n].iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
            let mut sum = 0.0;
            for sj in &mut s[..n] {
                *sj = (*sj - m).exp();
                sum += *sj;
            }
            let o = &mut out[(r * l + i) * dv..][..dv];
            for (e, oe) in o.iter_mut().enumerate() {
                let acc: f64 = (0..n).map(|j| s[j] * vr[j * dv + e].to_f64()).sum();
                *oe = acc / sum;
            }
        }
    }
    Ok(out)
}
