//! An independent FAVOR estimator for the tests: Lemma 1's features with no stabiliser and the
//! quadratic form of the ratio, in f64.
#![allow(dead_code)]

use longseq::attention::FavorKind;

/// The estimator with no stabiliser, straight from Lemma 1 and the quadratic form: weights
/// `A_ij = φ(q_i)·φ(k_j)` with unshifted exp, `O = A V / A 1`. `[L, Dk]` one head, f64.
pub fn unstabilised_favor(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    (l, dk, dv): (usize, usize, usize),
    omega: &[f32],
    kind: FavorKind,
    causal: bool,
) -> Vec<f64> {
    let m = omega.len() / dk;
    let phi = |x: &[f64]| -> Vec<f64> {
        let xs: Vec<f64> = x.iter().map(|a| a / (dk as f64).powf(0.25)).collect();
        let sq: f64 = xs.iter().map(|a| a * a).sum();
        let dot = |r: usize| -> f64 {
            (0..dk)
                .map(|a| omega[r * dk + a] as f64 * xs[a])
                .sum::<f64>()
        };
        let c = 1.0 / (m as f64).sqrt();
        match kind {
            FavorKind::Positive => (0..m).map(|r| c * (dot(r) - sq / 2.0).exp()).collect(),
            FavorKind::Trig => (0..m)
                .map(|r| c * (sq / 2.0).exp() * dot(r).sin())
                .chain((0..m).map(|r| c * (sq / 2.0).exp() * dot(r).cos()))
                .collect(),
        }
    };
    let fq: Vec<Vec<f64>> = q.chunks(dk).map(phi).collect();
    let fk: Vec<Vec<f64>> = k.chunks(dk).map(phi).collect();
    let mut out = vec![0.0; l * dv];
    for i in 0..l {
        let (mut den, mut num) = (0.0, vec![0.0; dv]);
        for j in 0..if causal { i + 1 } else { l } {
            let a: f64 = fq[i].iter().zip(&fk[j]).map(|(x, y)| x * y).sum();
            den += a;
            for e in 0..dv {
                num[e] += a * v[j * dv + e];
            }
        }
        for e in 0..dv {
            out[i * dv + e] = num[e] / den;
        }
    }
    out
}
