//! S4D kernel (Vandermonde, ZOH) and FFT causal convolution at H = 256, N = 64 (N2 = 32), B = 1,
//! L ∈ {1024, 4096, 16384} (W3 is L = 16384), each alone and in one submission; the f64 CPU
//! reference at L = 1024; the GPU scan mode against the conv mode at H = 16; and linear_scan on
//! the transposed shapes [262144, 1] and [1, 262144] (issue 10: long rows must not be far slower).
//! GPU timings cover the submissions and the wait for the device; inputs are uploaded and
//! pipelines compiled first. Each GPU case also prints its median of five runs with GFLOP/s and
//! GB/s from the op's own counts:
//! - kernel: 8·H·N2·L FLOPs (one complex product and the real part of another per (h, n, l)),
//!   4·H·L bytes written;
//! - conv: three real FFTs of n = 2^⌈log₂ 2L⌉ points per row, 2.5·n·log₂ n FLOPs each (the usual
//!   real-FFT count), plus 6·n for the spectral product; 12·H·L bytes (u and K read, y written);
//! - scan: 6 FLOPs per element (complex-by-real combine, real operands: 3), 12 bytes per element.
//!
//! `cargo bench --bench ssm -- gpu` skips the slow f64 reference.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use longseq::reference::ssm as rs;
use longseq::ssm::{
    causal_conv_into, linear_scan_into, s4d_conv_into, s4d_init, s4d_kernel_into, s4d_scan_into,
    DiagonalSsm, Discretization, S4dInit, ScanOperands,
};
use longseq::{Context, Tensor};
use num_complex::Complex64;
use rand::{Rng, SeedableRng};

fn model(h: usize, n2: usize, rng: &mut impl Rng) -> rs::DiagonalSsm {
    let a1 = s4d_init(S4dInit::Lin, n2).unwrap();
    let mut z = || Complex64::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0));
    let b = (0..h * n2).map(|_| z()).collect();
    let c = (0..h * n2).map(|_| z()).collect();
    rs::DiagonalSsm {
        h,
        n2,
        a: (0..h).flat_map(|_| a1.clone()).collect(),
        b,
        c,
        dt: (0..h)
            .map(|i| 10f64.powf(-3.0 + 2.0 * i as f64 / h as f64))
            .collect(),
        d: vec![1.0; h],
    }
}

fn gpu_time(ctx: &Context, iters: u64, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        f();
        ctx.wait().unwrap();
    }
    t.elapsed()
}

/// Prints the median of five waited runs of `f` with GFLOP/s and GB/s.
fn report(ctx: &Context, what: &str, flops: f64, bytes: f64, mut f: impl FnMut()) {
    f();
    ctx.wait().unwrap();
    let mut t: Vec<f64> = (0..5)
        .map(|_| gpu_time(ctx, 1, &mut f).as_secs_f64())
        .collect();
    t.sort_by(f64::total_cmp);
    eprintln!(
        "{what}: median {:.2} ms, {:.2} GFLOP/s, {:.2} GB/s",
        t[2] * 1e3,
        flops / t[2] / 1e9,
        bytes / t[2] / 1e9
    );
}

/// FLOPs of [`causal_conv`](longseq::ssm::causal_conv) on `rows` rows of length l.
fn conv_flops(rows: usize, l: usize) -> f64 {
    let n = (2 * l).next_power_of_two() as f64;
    rows as f64 * (3.0 * 2.5 * n * n.log2() + 6.0 * n)
}

fn conv_mode(c: &mut Criterion, ctx: &Context, rng: &mut impl Rng) {
    let disc = Discretization::Zoh;
    let mut g = c.benchmark_group("s4d_conv_mode");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let (h, n2) = (256usize, 32usize);
    let m = model(h, n2, rng);
    let dev = DiagonalSsm::<f32>::from_host(ctx, &m).unwrap();
    for l in [1024usize, 4096, 16384] {
        let u: Vec<f32> = (0..h * l).map(|_| rng.random_range(-1.0..1.0)).collect();
        let tu = Tensor::from_slice(ctx, &u, &[1, h, l]).unwrap();
        let k = Tensor::<f32>::empty(ctx, &[h, l]).unwrap();
        let y = Tensor::<f32>::empty(ctx, &[1, h, l]).unwrap();
        let (kf, kb) = (8.0 * (h * n2 * l) as f64, 4.0 * (h * l) as f64);
        let (cf, cb) = (conv_flops(h, l), 12.0 * (h * l) as f64);
        report(
            ctx,
            &format!("s4d_kernel H={h} N2={n2} L={l}"),
            kf,
            kb,
            || s4d_kernel_into(ctx, &dev, &k, disc).unwrap(),
        );
        report(ctx, &format!("causal_conv H={h} L={l}"), cf, cb, || {
            causal_conv_into(ctx, &tu, &k, &dev.d, &y).unwrap()
        });
        let run = || s4d_conv_into(ctx, &dev, &tu, &y, disc).unwrap();
        report(ctx, &format!("s4d_conv H={h} L={l}"), kf + cf, kb + cb, run);
        g.throughput(Throughput::Elements((h * l) as u64));
        g.bench_with_input(BenchmarkId::new("gpu", l), &l, |b, _| {
            b.iter_custom(|iters| gpu_time(ctx, iters, run))
        });
        if l == 1024 {
            let u64_: Vec<f64> = u.iter().map(|&x| x as f64).collect();
            g.bench_with_input(BenchmarkId::new("cpu_reference", l), &l, |b, _| {
                b.iter(|| {
                    let k = rs::s4d_kernel(&m, l, disc).unwrap();
                    rs::causal_conv(&u64_, &k, &m.d, h, l).unwrap()
                })
            });
        }
    }
    g.finish();
}

fn scan_vs_conv(c: &mut Criterion, ctx: &Context, rng: &mut impl Rng) {
    let disc = Discretization::Zoh;
    let mut g = c.benchmark_group("s4d_scan_vs_conv");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    let (h, n2) = (16, 32);
    let m = model(h, n2, rng);
    let dev = DiagonalSsm::<f32>::from_host(ctx, &m).unwrap();
    for l in [1024usize, 4096, 16384] {
        let u: Vec<f32> = (0..h * l).map(|_| rng.random_range(-1.0..1.0)).collect();
        let tu = Tensor::from_slice(ctx, &u, &[1, h, l]).unwrap();
        let y = Tensor::<f32>::empty(ctx, &[1, h, l]).unwrap();
        let conv = || s4d_conv_into(ctx, &dev, &tu, &y, disc).unwrap();
        let scan = || s4d_scan_into(ctx, &dev, &tu, &y, disc).unwrap();
        // Scan mode: the combine (6 FLOPs complex) per state and step, and the C read-out (2).
        let sf = 8.0 * (h * n2 * l) as f64;
        report(
            ctx,
            &format!("s4d_scan H={h} L={l}"),
            sf,
            8.0 * (h * l) as f64,
            scan,
        );
        g.throughput(Throughput::Elements((h * l) as u64));
        g.bench_with_input(BenchmarkId::new("gpu_conv", l), &l, |b, _| {
            b.iter_custom(|iters| gpu_time(ctx, iters, conv))
        });
        g.bench_with_input(BenchmarkId::new("gpu_scan", l), &l, |b, _| {
            b.iter_custom(|iters| gpu_time(ctx, iters, scan))
        });
    }
    g.finish();
}

fn scan_shapes(c: &mut Criterion, ctx: &Context, rng: &mut impl Rng) {
    let mut g = c.benchmark_group("linear_scan");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    let n = 262_144usize;
    for shape in [[n, 1], [1, n], [16, n / 16]] {
        let mut t = |lo: f32, hi: f32| {
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
            Tensor::from_slice(ctx, &v, &shape).unwrap()
        };
        let (a, b) = (t(0.5, 1.0), t(-1.0, 1.0));
        let h = Tensor::<f32>::empty(ctx, &shape).unwrap();
        let ops = ScanOperands {
            a_re: &a,
            a_im: None,
            b_re: &b,
            b_im: None,
        };
        let run = || linear_scan_into(ctx, &ops, &h, None).unwrap();
        let id = format!("{}x{}", shape[0], shape[1]);
        report(
            ctx,
            &format!("linear_scan {id}"),
            3.0 * n as f64,
            12.0 * n as f64,
            run,
        );
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("gpu", &id), &id, |bch, _| {
            bch.iter_custom(|iters| gpu_time(ctx, iters, run))
        });
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    let ctx = Context::new()
        .expect("ssm bench needs a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)");
    eprintln!("adapter: {}", ctx.adapter_line());
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    conv_mode(c, &ctx, &mut rng);
    scan_vs_conv(c, &ctx, &mut rng);
    scan_shapes(c, &ctx, &mut rng);
}

criterion_group!(benches, bench);
criterion_main!(benches);
