//! The symmetric eigensolver behind S4D-LegS initialisation (host, f64).

/// HiPPO-LegS is `A = −1/2 I + S − P Pᵀ` with `P_n = √(n + 1/2)` and S skew-symmetric,
/// `S_nk = −√(2n+1)√(2k+1)/2` for n > k (S4, arXiv 2111.00396, §3.3). S has eigenvalues ±iσ;
/// these are the N/2 values σ > 0 in ascending order. The Hermitian iS is diagonalised through
/// its real symmetric embedding `[[0, Sᵀ], [S, 0]]` (each eigenvalue of iS twice) with cyclic
/// Jacobi rotations in f64.
pub(crate) fn legs_normal_eigenvalues(n: usize) -> Vec<f64> {
    let m = 2 * n;
    let mut a = vec![0.0f64; m * m];
    for i in 0..n {
        for k in 0..i {
            let s = -0.5 * ((2 * i + 1) as f64).sqrt() * ((2 * k + 1) as f64).sqrt();
            // S[i][k] = s, S[k][i] = −s; embedding rows n.. hold S, rows ..n hold Sᵀ.
            a[(n + i) * m + k] = s;
            a[(n + k) * m + i] = -s;
            a[k * m + n + i] = s;
            a[i * m + n + k] = -s;
        }
    }
    jacobi_eigenvalues(&mut a, m);
    let mut ev: Vec<f64> = (0..m).map(|i| a[i * m + i]).collect();
    ev.sort_by(|x, y| y.total_cmp(x));
    // The n largest are the positive σ (each twice), then zeros/negatives.
    let mut s: Vec<f64> = ev[..n].iter().step_by(2).copied().collect();
    s.truncate(n / 2);
    s.sort_by(f64::total_cmp);
    s
}

/// Cyclic Jacobi on a symmetric `m × m` matrix, in place; the diagonal ends as the eigenvalues.
fn jacobi_eigenvalues(a: &mut [f64], m: usize) {
    for _sweep in 0..100 {
        let off: f64 = (0..m)
            .flat_map(|i| (0..m).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * m + j] * a[i * m + j])
            .sum();
        let diag: f64 = (0..m).map(|i| a[i * m + i] * a[i * m + i]).sum();
        if off <= 1e-30 * diag.max(1e-300) {
            return;
        }
        for p in 0..m {
            for q in p + 1..m {
                let apq = a[p * m + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * m + q] - a[p * m + p]) / (2.0 * apq);
                let sgn = if theta >= 0.0 { 1.0 } else { -1.0 };
                let t = sgn / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..m {
                    let (akp, akq) = (a[k * m + p], a[k * m + q]);
                    a[k * m + p] = c * akp - s * akq;
                    a[k * m + q] = s * akp + c * akq;
                }
                for k in 0..m {
                    let (apk, aqk) = (a[p * m + k], a[q * m + k]);
                    a[p * m + k] = c * apk - s * aqk;
                    a[q * m + k] = s * apk + c * aqk;
                }
            }
        }
    }
}
