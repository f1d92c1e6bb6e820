//! The scans on transposed shapes of the same size, timed in one run (median of `--runs` waited
//! runs after a warm-up): issue 10 asks that long rows with few channels not be far slower than
//! many short rows.
//!
//! - `linear_scan` (real, then complex) on `[R, L]` with R·L = 2^18: `[262144, 1]`, `[1, 262144]`,
//!   `[16, 16384]`, `[4096, 64]`.
//! - `s4d_scan` (ZOH, N2 = 4) on `u: [1, H, L]` with H·L = 2^16: `H = 1, L = 65536` against
//!   `H = 4096, L = 16`.
//!
//! Each line prints the median in ms and its ratio to the fastest shape of its group. Timings on a
//! loaded machine are comparable only within one run.
//!
//! `cargo run --release --example scan_shapes -- [--runs N]`

#[path = "common/timing.rs"]
mod timing;

use longseq::reference::ssm as rs;
use longseq::ssm::{
    linear_scan_into, s4d_init, s4d_scan_into, DiagonalSsm, Discretization, S4dInit, ScanOperands,
};
use longseq::{Context, Tensor};
use num_complex::Complex64;
use rand::{Rng, SeedableRng};
use timing::median_ms;

fn runs() -> usize {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match argv.as_slice() {
        [] => 7,
        [k, v] if k == "--runs" => v.parse().unwrap_or_else(|_| usage()),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: scan_shapes [--runs N]");
    std::process::exit(2)
}

/// Prints each (label, ms) with its ratio to the group's fastest.
fn print_group(title: &str, rows: &[(String, f64)]) {
    let best = rows.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
    println!("{title}");
    for (label, ms) in rows {
        println!("  {label:<24} {ms:9.2} ms   x{:.2}", ms / best);
    }
}

fn linear_shapes(ctx: &Context, runs: usize, rng: &mut impl Rng, complex: bool) {
    let n = 1usize << 18;
    let mut out = Vec::new();
    for shape in [[n, 1], [1, n], [16, n / 16], [4096, n / 4096]] {
        let mut t = |lo: f32, hi: f32| {
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
            Tensor::from_slice(ctx, &v, &shape).unwrap()
        };
        let (a, ai, b, bi) = (t(0.5, 1.0), t(-0.3, 0.3), t(-1.0, 1.0), t(-1.0, 1.0));
        let h = Tensor::<f32>::empty(ctx, &shape).unwrap();
        let hi = Tensor::<f32>::empty(ctx, &shape).unwrap();
        let ops = ScanOperands {
            a_re: &a,
            a_im: complex.then_some(&ai),
            b_re: &b,
            b_im: complex.then_some(&bi),
        };
        let ms = median_ms(runs, || {
            linear_scan_into(ctx, &ops, &h, complex.then_some(&hi)).unwrap();
            ctx.wait().unwrap();
        });
        out.push((format!("[{}, {}]", shape[0], shape[1]), ms));
    }
    let kind = if complex { "complex" } else { "real" };
    print_group(&format!("linear_scan f32 {kind}, 2^18 elements"), &out);
}

fn model(h: usize, n2: usize, rng: &mut impl Rng) -> rs::DiagonalSsm {
    let a1 = s4d_init(S4dInit::Lin, n2).unwrap();
    let mut z = || Complex64::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0));
    rs::DiagonalSsm {
        h,
        n2,
        a: (0..h).flat_map(|_| a1.clone()).collect(),
        b: (0..h * n2).map(|_| z()).collect(),
        c: (0..h * n2).map(|_| z()).collect(),
        dt: (0..h)
            .map(|i| 10f64.powf(-3.0 + 2.0 * i as f64 / h as f64))
            .collect(),
        d: vec![1.0; h],
    }
}

fn s4d_shapes(ctx: &Context, runs: usize, rng: &mut impl Rng) {
    let (n, n2) = (1usize << 16, 4);
    let mut out = Vec::new();
    for h in [1, 4096] {
        let len = n / h;
        let dev = DiagonalSsm::<f32>::from_host(ctx, &model(h, n2, rng)).unwrap();
        let u: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let tu = Tensor::from_slice(ctx, &u, &[1, h, len]).unwrap();
        let y = Tensor::<f32>::empty(ctx, &[1, h, len]).unwrap();
        let ms = median_ms(runs, || {
            s4d_scan_into(ctx, &dev, &tu, &y, Discretization::Zoh).unwrap();
            ctx.wait().unwrap();
        });
        out.push((format!("H = {h}, L = {len}"), ms));
    }
    print_group(&format!("s4d_scan f32, N2 = {n2}, H·L = 2^16"), &out);
}

fn main() {
    let runs = runs();
    let ctx =
        Context::new().expect("a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)");
    println!("adapter: {}; median of {runs} runs", ctx.adapter_line());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    linear_shapes(&ctx, runs, &mut rng, false);
    linear_shapes(&ctx, runs, &mut rng, true);
    s4d_shapes(&ctx, runs, &mut rng);
}
