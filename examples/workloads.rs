//! The workloads of issue 10 on the CPU path (and, with `--reference`, the f64 reference), median
//! wall times, to set beside `scripts/jax_workloads.py` (JAX-CPU) run on the same machine.
//!
//! W1: non-causal elu+1 linear attention, B·H = 16, L = 4096, D = 64, f32, ε = 1e-6.
//! W2: W1 causal (chunked, chunk 64).
//! W3: S4D kernel (ZOH) + causal FFT convolution, H = 256, N = 64 (32 pairs), L = 16384,
//!     A_n = −1/2 + iπn, B = 1, C ~ CN(0, 1), Δ log-uniform in [1e-3, 1e-1], D = 1.
//!
//! `cargo run --release --example workloads -- [--runs N] [--reference] [--only W1,W2,W3]`

use std::time::Instant;

use longseq::attention::linear::check_shapes;
use longseq::attention::{FeatureMap, LinearAttentionOptions};
use longseq::reference::ssm::DiagonalSsm;
use longseq::ssm::Discretization;
use longseq::{cpu, reference};
use num_complex::Complex64;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

/// Median ms of `runs` calls after one warm-up call.
fn time<R>(runs: usize, mut f: impl FnMut() -> R) -> (f64, f64, f64) {
    std::hint::black_box(f());
    let t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            std::hint::black_box(f());
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let (lo, hi) = (
        t.iter().cloned().fold(f64::MAX, f64::min),
        t.iter().cloned().fold(0.0, f64::max),
    );
    (median(t), lo, hi)
}

fn report(name: &str, path: &str, (med, lo, hi): (f64, f64, f64), runs: usize) {
    println!("{name} {path} {med:.1} ms (min {lo:.1}, max {hi:.1}, {runs} runs)");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .map(|i| args[i + 1].clone())
    };
    let runs: usize = flag("--runs").map_or(7, |s| s.parse().expect("--runs N"));
    let only = flag("--only").unwrap_or_else(|| "W1,W2,W3".into());
    let with_ref = args.iter().any(|a| a == "--reference");
    let mut g = rand::rngs::StdRng::seed_from_u64(0);

    let (h, l, d) = (16, 4096, 64);
    let mut uni = |n: usize| {
        (0..n)
            .map(|_| g.random_range(-1.0f32..1.0))
            .collect::<Vec<f32>>()
    };
    let (q, k, v) = (uni(h * l * d), uni(h * l * d), uni(h * l * d));
    let dims = check_shapes("workloads", &[h, l, d], &[h, l, d], &[h, l, d]).unwrap();
    for (name, causal) in [("W1", false), ("W2", true)] {
        if !only.contains(name) {
            continue;
        }
        let o = LinearAttentionOptions {
            feature_map: FeatureMap::Elu1,
            causal,
            eps: 1e-6,
            denominator: true,
        };
        let t = time(runs, || {
            cpu::attention::linear_attention(&q, &k, &v, &dims, &o).unwrap()
        });
        report(name, "cpu", t, runs);
        if with_ref {
            let r = runs.min(3);
            let t = time(r, || {
                reference::attention::linear_attention(&q, &k, &v, &dims, &o).unwrap()
            });
            report(name, "reference", t, r);
        }
    }
    if only.contains("W3") {
        let (hh, n2, l3) = (256, 32, 16384);
        let mut g = rand::rngs::StdRng::seed_from_u64(1);
        let a: Vec<Complex64> = (0..hh * n2)
            .map(|i| Complex64::new(-0.5, std::f64::consts::PI * (i % n2) as f64))
            .collect();
        let c: Vec<Complex64> = (0..hh * n2)
            .map(|_| {
                let s = std::f64::consts::FRAC_1_SQRT_2;
                Complex64::new(
                    s * g.sample::<f64, _>(StandardNormal),
                    s * g.sample::<f64, _>(StandardNormal),
                )
            })
            .collect();
        let dt: Vec<f64> = (0..hh)
            .map(|_| g.random_range(1e-3f64.ln()..1e-1f64.ln()).exp())
            .collect();
        let ssm = DiagonalSsm {
            h: hh,
            n2,
            a,
            b: vec![Complex64::new(1.0, 0.0); hh * n2],
            c,
            dt,
            d: vec![1.0; hh],
        };
        let u: Vec<f32> = (0..hh * l3).map(|_| g.sample(StandardNormal)).collect();
        let ones = vec![1.0f32; hh];
        let t = time(runs.div_ceil(2).max(3), || {
            let kern = cpu::ssm::s4d_kernel::<f32>(&ssm, l3, Discretization::Zoh).unwrap();
            cpu::ssm::causal_conv(&u, &[hh, l3], &kern, &[hh, l3], &ones).unwrap()
        });
        report("W3", "cpu", t, runs.div_ceil(2).max(3));
        if with_ref {
            let u64: Vec<f64> = u.iter().map(|&x| x as f64).collect();
            let t = time(1, || {
                let kern = reference::ssm::s4d_kernel(&ssm, l3, Discretization::Zoh).unwrap();
                reference::ssm::causal_conv(&u64, &kern, &ssm.d, hh, l3).unwrap()
            });
            report("W3", "reference", t, 1);
        }
    }
}
