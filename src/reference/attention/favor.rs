//! Performer attention with FAVOR features (Choromanski et al. 2021, Lemma 1, §2.3-2.4) in f64:
//! `x' = x·d^(−1/4)`; positive `φ⁺(x) = M^(−1/2) exp(ωx' − ‖x'‖²/2)`; trig
//! `φ(x) = M^(−1/2) exp(‖x'‖²/2) [sin ωx', cos ωx']`; then
//! `O_i = Σ_j (φ(q_i)·φ(k_j)) v_j / Σ_j φ(q_i)·φ(k_j)` over `j ≤ i` (causal) or all j.
//!
//! Stabiliser (it cancels in the ratio): each query row's log-features are shifted by their
//! maximum (positive) or by `‖q'‖²/2` (trig); keys by the maximum over the whole head (all L).
//! Causal positive features instead stabilise each row by the keys it sees (`causal_positive`),
//! so a later, far larger key does not zero an earlier row.
//! Denominator guard: a row whose denominator is exactly 0 (every weight underflowed to 0)
//! outputs 0 instead of 0/0.

use crate::types::attention::{check_omega, AttnDims, FavorKind, FavorOptions};
use crate::{Element, Error, Result};

/// Log-features of one position `x: [Dk]`: (`[F]` values inside exp or angles, log-scale).
/// Positive: (`ω_rᵀx' − ‖x'‖²/2`, their max); trig: (`ω_rᵀx'` twice, `‖x'‖²/2`).
fn logits(x: &[f64], omega: &[f32], m: usize, kind: FavorKind) -> (Vec<f64>, f64) {
    let dk = x.len();
    let s = (dk as f64).powf(-0.25);
    let xs: Vec<f64> = x.iter().map(|a| a * s).collect();
    let half_sq = 0.5 * xs.iter().map(|a| a * a).sum::<f64>();
    let dots: Vec<f64> = (0..m)
        .map(|r| (0..dk).map(|a| omega[r * dk + a] as f64 * xs[a]).sum())
        .collect();
    match kind {
        FavorKind::Positive => {
            let u: Vec<f64> = dots.iter().map(|d| d - half_sq).collect();
            let mx = u.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (u, mx)
        }
        FavorKind::Trig => ([dots.clone(), dots].concat(), half_sq),
    }
}

/// Features `[L, F]` of one head's `x: [L, Dk]`, stabilised per position (`per_head = false`)
/// or by the maximum log-scale over all L (`per_head = true`).
pub fn favor_features(
    x: &[f64],
    dk: usize,
    omega: &[f32],
    kind: FavorKind,
    per_head: bool,
) -> Vec<f64> {
    let m = omega.len() / dk;
    let rows: Vec<(Vec<f64>, f64)> = x.chunks(dk).map(|r| logits(r, omega, m, kind)).collect();
    let head = rows.iter().map(|r| r.1).fold(f64::NEG_INFINITY, f64::max);
    let norm = (m as f64).powf(-0.5);
    let mut out = Vec::with_capacity(rows.len() * kind.num_features(m));
    for (u, ls) in &rows {
        let c = if per_head { head } else { *ls };
        match kind {
            FavorKind::Positive => out.extend(u.iter().map(|y| norm * (y - c).exp())),
            FavorKind::Trig => {
                let g = norm * (ls - c).exp();
                out.extend(u[..m].iter().map(|y| g * y.sin()));
                out.extend(u[m..].iter().map(|y| g * y.cos()));
            }
        }
    }
    out
}

/// `q, k: [R, L, Dk]`, `v: [R, L, Dv]` row-major, `omega: [M, Dk]` -> `o: [R, L, Dv]` in f64.
pub fn favor_attention<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    d: &AttnDims,
    omega: &[f32],
    opts: &FavorOptions,
) -> Result<Vec<f64>> {
    let op = "reference::favor_attention";
    check_omega(op, &[omega.len() / d.dk.max(1), d.dk], d.dk)?;
    if !omega.len().is_multiple_of(d.dk) {
        return Err(Error::DataLength {
            shape: vec![omega.len() / d.dk, d.dk],
            expected: omega.len() / d.dk * d.dk,
            got: omega.len(),
        });
    }
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
    let f = opts.kind.num_features(omega.len() / dk);
    let f64s = |x: &[T]| x.iter().map(|a| a.to_f64()).collect::<Vec<f64>>();
    let mut out = vec![0.0; d.rows * l * dv];
    for r in 0..d.rows {
        let fq = favor_features(
            &f64s(&q[r * l * dk..][..l * dk]),
            dk,
            omega,
            opts.kind,
            false,
        );
        let fk = favor_features(
            &f64s(&k[r * l * dk..][..l * dk]),
            dk,
            omega,
            opts.kind,
            true,
        );
        let vr = &v[r * l * dv..][..l * dv];
        if opts.causal && opts.kind == FavorKind::Positive {
            let (qr, kr) = (&q[r * l * dk..][..l * dk], &k[r * l * dk..][..l * dk]);
            let o = &mut out[r * l * dv..][..l * dv];
            let mut st = FavorRunState::empty(omega.len() / dk, dv);
            causal_positive(
                (&f64s(qr), &f64s(kr), &f64s(vr)),
                (dk, dv),
                omega,
                o,
                &mut st,
            );
            continue;
        }
        // Recurrent form of the ratio (eqs. 16-20 of Katharopoulos et al.) on the features.
        let mut s = vec![0.0f64; f * dv];
        let mut z = vec![0.0f64; f];
        let add = |j: usize, s: &mut [f64], z: &mut [f64]| {
            for a in 0..f {
                let w = fk[j * f + a];
                z[a] += w;
                for e in 0..dv {
                    s[a * dv + e] += w * vr[j * dv + e].to_f64();
                }
            }
        };
        if !opts.causal {
            (0..l).for_each(|j| add(j, &mut s, &mut z));
        }
        for i in 0..l {
            if opts.causal {
                add(i, &mut s, &mut z);
            }
            let phi = &fq[i * f..][..f];
            let den: f64 = phi.iter().zip(&z).map(|(a, b)| a * b).sum();
            for e in 0..dv {
                let num: f64 = (0..f).map(|a| phi[a] * s[a * dv + e]).sum();
                out[(r * l + i) * dv + e] = if den == 0.0 { 0.0 } else { num / den };
            }
        }
    }
    Ok(out)
}

/// The state of [`causal_positive`] per feature r: `mx[r]` the running maximum of the key logits
/// `m_r`, and `s[r] = Σ_j exp(a_r(k_j) − m_r) [v_j, 1]` (`[M, Dv + 1]`: S then z).
#[derive(Clone, Debug, PartialEq)]
pub struct FavorRunState {
    /// `[M]` (−∞ before any key).
    pub mx: Vec<f64>,
    /// `[M, Dv + 1]`.
    pub s: Vec<f64>,
}

impl FavorRunState {
    /// Before any key: m = −∞, S = z = 0.
    pub fn empty(m: usize, dv: usize) -> Self {
        Self {
            mx: vec![f64::NEG_INFINITY; m],
            s: vec![0.0; m * (dv + 1)],
        }
    }
}

/// Causal positive features, each row stabilised by what it sees (the keys `j ≤ i`): per feature
/// r the state holds `Σ_j exp(a_r(k_j) − m_r) [v_j, 1]` with `m_r` the running maximum of the key
/// logits, rescaled when it grows (online softmax); row i takes
/// `exp(a_r(q_i) + m_r − C_i)`, `C_i = max_r (a_r(q_i) + m_r)` (M^(−1/2) factors cancel). So a
/// later key never underflows an earlier row; terms more than ≈ 745 below a row's largest drop.
/// Starts from `st` and leaves the state after the last row there.
pub fn causal_positive(
    (q, k, v): (&[f64], &[f64], &[f64]),
    (dk, dv): (usize, usize),
    omega: &[f32],
    o: &mut [f64],
    st: &mut FavorRunState,
) {
    let m = omega.len() / dk;
    let (mx, s) = (&mut st.mx, &mut st.s);
    for (i, oi) in o.chunks_mut(dv).enumerate() {
        let (uk, _) = logits(&k[i * dk..][..dk], omega, m, FavorKind::Positive);
        for r in 0..m {
            // NaN never becomes the stabiliser (as the GPU's fmax).
            let new = if uk[r] > mx[r] { uk[r] } else { mx[r] };
            let scale = if mx[r] == new {
                1.0
            } else {
                (mx[r] - new).exp()
            };
            let w = (uk[r] - new).exp();
            let sr = &mut s[r * (dv + 1)..][..dv + 1];
            for (e, x) in sr.iter_mut().enumerate() {
                let ve = if e < dv { v[i * dv + e] } else { 1.0 };
                *x = scale * *x + w * ve;
            }
            mx[r] = new;
        }
        let (uq, _) = logits(&q[i * dk..][..dk], omega, m, FavorKind::Positive);
        let c = (0..m)
            .map(|r| uq[r] + mx[r])
            .fold(f64::NEG_INFINITY, |a, b| if b > a { b } else { a });
        let mut acc = vec![0.0f64; dv + 1];
        for r in 0..m {
            let p = (uq[r] + mx[r] - c).exp();
            for (a, x) in acc.iter_mut().zip(&s[r * (dv + 1)..][..dv + 1]) {
                *a += p * x;
            }
        }
        let den = acc[dv];
        for (e, y) in oi.iter_mut().enumerate() {
            *y = if den == 0.0 { 0.0 } else { acc[e] / den };
        }
    }
}
