//! S4's diagonal-plus-low-rank SSM on the CPU in f64: `A = Λ − P Qᴴ` (rank 1), bilinear
//! discretisation, the dense kernel `K_l = Re(C Ā^l B̄)` by the recurrence, and the C̃ of
//! Algorithm 1 (Gu et al. 2022, arXiv 2111.00396).

use num_complex::Complex64;

use crate::{Error, Result};

/// `lambda, p, q, b, c: [H, N]` complex (full state, any N >= 1: no conjugate pairing),
/// `dt: [H]`. `A_h = diag(Λ_h) − P_h Q_hᴴ`.
#[derive(Clone, Debug, PartialEq)]
pub struct DplrSsm {
    /// Heads H.
    pub h: usize,
    /// State size N.
    pub n: usize,
    /// Λ, the diagonal part: `[H, N]`.
    pub lambda: Vec<Complex64>,
    /// P of the low-rank term: `[H, N]`.
    pub p: Vec<Complex64>,
    /// Q of the low-rank term: `[H, N]`.
    pub q: Vec<Complex64>,
    /// B: `[H, N]`.
    pub b: Vec<Complex64>,
    /// C: `[H, N]`.
    pub c: Vec<Complex64>,
    /// Step Δ per head, > 0: `[H]`.
    pub dt: Vec<f64>,
}

type Mat = Vec<Complex64>;

impl DplrSsm {
    /// Checks the lengths against `h`, `n`, and that Δ is finite and > 0; `op` names the caller in errors.
    pub fn check(&self, op: &'static str) -> Result<()> {
        let (h, n) = (self.h, self.n);
        if h == 0 || n == 0 {
            return Err(Error::InvalidArgument {
                op,
                name: "h, n",
                reason: format!("H = {h} and N = {n} must both be >= 1"),
            });
        }
        for (name, len) in [
            ("Lambda", self.lambda.len()),
            ("P", self.p.len()),
            ("Q", self.q.len()),
            ("B", self.b.len()),
            ("C", self.c.len()),
        ] {
            if len != h * n {
                return Err(Error::Shape {
                    op,
                    name,
                    expected: format!("{} elements ([H, N] = [{h}, {n}])", h * n),
                    got: vec![len],
                });
            }
        }
        if self.dt.len() != h {
            return Err(Error::Shape {
                op,
                name: "dt",
                expected: format!("[{h}]"),
                got: vec![self.dt.len()],
            });
        }
        if let Some(i) = self.dt.iter().position(|x| !(x.is_finite() && *x > 0.0)) {
            return Err(Error::InvalidArgument {
                op,
                name: "dt",
                reason: format!("dt[{i}] = {} is not a finite number > 0", self.dt[i]),
            });
        }
        Ok(())
    }

    /// Dense bilinear `(Ā [N, N], B̄ [N])` of head `hh`.
    pub fn bilinear(&self, hh: usize) -> (Mat, Vec<Complex64>) {
        let n = self.n;
        let r = hh * n..(hh + 1) * n;
        let (lam, p, q, b) = (
            &self.lambda[r.clone()],
            &self.p[r.clone()],
            &self.q[r.clone()],
            &self.b[r],
        );
        let half = self.dt[hh] / 2.0;
        let a = |i: usize, j: usize| {
            let d = if i == j {
                lam[i]
            } else {
                Complex64::new(0.0, 0.0)
            };
            d - p[i] * q[j].conj()
        };
        let one = Complex64::new(1.0, 0.0);
        let id = |i: usize, j: usize| {
            if i == j {
                one
            } else {
                Complex64::new(0.0, 0.0)
            }
        };
        // Solve (I − Δ/2 A) [Ā | B̄] = [I + Δ/2 A | Δ B].
        let mut m: Mat = (0..n * n)
            .map(|k| id(k / n, k % n) - a(k / n, k % n) * half)
            .collect();
        let w = n + 1;
        let mut rhs: Mat = (0..n * w)
            .map(|k| {
                let (i, j) = (k / w, k % w);
                if j < n {
                    id(i, j) + a(i, j) * half
                } else {
                    b[i] * self.dt[hh]
                }
            })
            .collect();
        solve(&mut m, &mut rhs, n, w);
        let ab = (0..n * n).map(|k| rhs[(k / n) * w + k % n]).collect();
        let bb = (0..n).map(|i| rhs[i * w + n]).collect();
        (ab, bb)
    }

    /// `C̃ = C (I − Ā^len)` for every head, `[H, N]` (Ā^len by repeated squaring).
    pub fn c_tilde(&self, len: usize) -> Vec<Complex64> {
        let n = self.n;
        let mut out = Vec::with_capacity(self.h * n);
        for hh in 0..self.h {
            let (ab, _) = self.bilinear(hh);
            let mut pw = identity(n);
            let mut base = ab;
            let mut e = len;
            while e > 0 {
                if e & 1 == 1 {
                    pw = matmul(&pw, &base, n);
                }
                base = matmul(&base, &base, n);
                e >>= 1;
            }
            let c = &self.c[hh * n..(hh + 1) * n];
            for j in 0..n {
                let s: Complex64 = (0..n).map(|m| c[m] * pw[m * n + j]).sum();
                out.push(c[j] - s);
            }
        }
        out
    }
}

fn identity(n: usize) -> Mat {
    (0..n * n)
        .map(|k| Complex64::new(if k / n == k % n { 1.0 } else { 0.0 }, 0.0))
        .collect()
}

fn matmul(a: &Mat, b: &Mat, n: usize) -> Mat {
    let mut c = vec![Complex64::new(0.0, 0.0); n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                c[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    c
}

/// Gaussian elimination with partial pivoting: `rhs [n, w] ← m⁻¹ rhs`.
fn solve(m: &mut Mat, rhs: &mut Mat, n: usize, w: usize) {
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&x, &y| m[x * n + col].norm().total_cmp(&m[y * n + col].norm()))
            .unwrap();
        if piv != col {
            for j in 0..n {
                m.swap(piv * n + j, col * n + j);
            }
            for j in 0..w {
                rhs.swap(piv * w + j, col * w + j);
            }
        }
        let d = m[col * n + col];
        for r in col + 1..n {
            let f = m[r * n + col] / d;
            for j in col..n {
                let v = m[col * n + j];
                m[r * n + j] -= f * v;
            }
            for j in 0..w {
                let v = rhs[col * w + j];
                rhs[r * w + j] -= f * v;
            }
        }
    }
    for col in (0..n).rev() {
        let d = m[col * n + col];
        for j in 0..w {
            let mut v = rhs[col * w + j];
            for k in col + 1..n {
                v -= m[col * n + k] * rhs[k * w + j];
            }
            rhs[col * w + j] = v / d;
        }
    }
}
