//! S4 DPLR kernel (Cauchy + Woodbury + inverse FFT) on the GPU against the dense f64 kernel
//! Re(C Ā^l B̄) by the recurrence, N in {1, 2, 3, 64, 65} (odd N included), L up to 4096.

use crate::common;

use common::*;
use longseq::reference::ssm::{dplr_kernel_dense, DplrSsm};
use longseq::ssm::s4_dplr_kernel;
use longseq::Error;
use num_complex::Complex64;
use rand::Rng;

fn model(seed: u64, h: usize, n: usize) -> DplrSsm {
    let mut g = rng(seed);
    let f = |x: f64| x as f32 as f64;
    let z = |s: f64, g: &mut rand::rngs::StdRng| {
        Complex64::new(
            f(s * g.random_range(-1.0..1.0)),
            f(s * g.random_range(-1.0..1.0)),
        )
    };
    let lambda = (0..h * n)
        .map(|i| {
            Complex64::new(
                f(-g.random_range(0.2..1.0)),
                f(std::f64::consts::PI * (i % n) as f64 + g.random_range(-0.5..0.5)),
            )
        })
        .collect();
    let p = (0..h * n).map(|_| z(0.3, &mut g)).collect();
    let q = (0..h * n).map(|_| z(0.3, &mut g)).collect();
    let b = (0..h * n).map(|_| z(1.0, &mut g)).collect();
    let c = (0..h * n).map(|_| z(1.0, &mut g)).collect();
    let dt = (0..h)
        .map(|_| f(10f64.powf(g.random_range(-3.0..-1.0))))
        .collect();
    DplrSsm {
        h,
        n,
        lambda,
        p,
        q,
        b,
        c,
        dt,
    }
}

#[test]
fn dplr_kernel_equals_dense() {
    let c = ctx();
    let mut seed = 0;
    for &n in &[1usize, 2, 3, 64, 65] {
        for &len in &[1usize, 3, 33, 1000, 4096] {
            if n == 65 && len > 1000 {
                continue; // the dense f64 reference is O(N² L) per head
            }
            seed += 1;
            let m = model(seed, 2, n);
            let got: Vec<f64> = s4_dplr_kernel(c, &m, len)
                .unwrap()
                .to_vec(c)
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect();
            let want = dplr_kernel_dense(&m, len).unwrap();
            let e = rel_err(&got, &want);
            println!("dplr N={n} L={len}: {e:.2e}");
            assert!(e <= 1e-4, "N={n} L={len}: {e:.3e}");
        }
    }
}

#[test]
fn dplr_bad_input() {
    let c = ctx();
    let mut m = model(1, 2, 3);
    assert!(matches!(
        s4_dplr_kernel(c, &m, 0),
        Err(Error::InvalidArgument { .. })
    ));
    m.q.pop();
    assert!(matches!(
        s4_dplr_kernel(c, &m, 5),
        Err(Error::Shape { name: "Q", .. })
    ));
}

/// With P = Q = 0 and modes in conjugate pairs, the dense DPLR reference is the S4D bilinear
/// kernel 2 Re Σ over one mode of each pair: the two references agree.
#[test]
fn dense_reference_reduces_to_s4d() {
    use longseq::reference::ssm::{s4d_kernel, DiagonalSsm, Discretization};
    let s = model(9, 2, 4);
    let n2 = 4;
    let pairs = |v: &[Complex64]| -> Vec<Complex64> {
        v.chunks(n2)
            .flat_map(|row| row.iter().copied().chain(row.iter().map(|z| z.conj())))
            .collect()
    };
    let zero = vec![Complex64::new(0.0, 0.0); 2 * 2 * n2];
    let m = DplrSsm {
        h: 2,
        n: 2 * n2,
        lambda: pairs(&s.lambda),
        p: zero.clone(),
        q: zero,
        b: pairs(&s.b),
        c: pairs(&s.c),
        dt: s.dt.clone(),
    };
    let d = DiagonalSsm {
        h: 2,
        n2,
        a: s.lambda.clone(),
        b: s.b.clone(),
        c: s.c.clone(),
        dt: s.dt.clone(),
        d: vec![0.0; 2],
    };
    let want = s4d_kernel(&d, 500, Discretization::Bilinear).unwrap();
    assert_close(
        "dense DPLR vs S4D",
        &dplr_kernel_dense(&m, 500).unwrap(),
        &want,
        1e-12,
    );
}
