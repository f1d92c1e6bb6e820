//! S4D kernel + FFT convolution (conv mode), GPU vs the f64 CPU reference, at H = 256, N = 64
//! (N2 = 32), B = 1, L ∈ {1024, 4096, 16384}; and the GPU scan mode against the GPU conv mode at
//! H = 16 (the scan holds N2·L complex states per (b, h): 16 B each). GPU timings cover the
//! submissions and the wait for the device; inputs are uploaded and pipelines compiled first.
//! On lavapipe with 2 cores a full run takes tens of minutes (the f64 reference forms every
//! Ā^l by binary powering); filter with e.g. `cargo bench --bench ssm -- gpu`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use longseq::reference::ssm as rs;
use longseq::ssm::{
    causal_conv_into, s4d_init, s4d_kernel_into, s4d_scan_into, DiagonalSsm, Discretization,
    S4dInit,
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

fn bench(c: &mut Criterion) {
    let ctx = Context::new()
        .expect("ssm bench needs a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)");
    eprintln!("adapter: {}", ctx.adapter_line());
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let disc = Discretization::Zoh;
    let mut g = c.benchmark_group("s4d_conv_mode");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let (h, n2) = (256usize, 32usize);
    let m = model(h, n2, &mut rng);
    let dev = DiagonalSsm::<f32>::from_host(&ctx, &m).unwrap();
    for l in [1024usize, 4096, 16384] {
        let u: Vec<f32> = (0..h * l).map(|_| rng.random_range(-1.0..1.0)).collect();
        let tu = Tensor::from_slice(&ctx, &u, &[1, h, l]).unwrap();
        let k = Tensor::<f32>::empty(&ctx, &[h, l]).unwrap();
        let y = Tensor::<f32>::empty(&ctx, &[1, h, l]).unwrap();
        let run = || {
            s4d_kernel_into(&ctx, &dev, &k, disc).unwrap();
            causal_conv_into(&ctx, &tu, &k, &dev.d, &y).unwrap();
        };
        run();
        ctx.wait().unwrap();
        g.throughput(Throughput::Elements((h * l) as u64));
        g.bench_with_input(BenchmarkId::new("gpu", l), &l, |b, _| {
            b.iter_custom(|iters| gpu_time(&ctx, iters, run))
        });
        let u64_: Vec<f64> = u.iter().map(|&x| x as f64).collect();
        g.bench_with_input(BenchmarkId::new("cpu", l), &l, |b, _| {
            b.iter(|| {
                let k = rs::s4d_kernel(&m, l, disc).unwrap();
                rs::causal_conv(&u64_, &k, &m.d, h, l).unwrap()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("s4d_scan_vs_conv");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    let h = 16;
    let m = model(h, n2, &mut rng);
    let dev = DiagonalSsm::<f32>::from_host(&ctx, &m).unwrap();
    for l in [1024usize, 4096, 16384] {
        let u: Vec<f32> = (0..h * l).map(|_| rng.random_range(-1.0..1.0)).collect();
        let tu = Tensor::from_slice(&ctx, &u, &[1, h, l]).unwrap();
        let k = Tensor::<f32>::empty(&ctx, &[h, l]).unwrap();
        let y = Tensor::<f32>::empty(&ctx, &[1, h, l]).unwrap();
        let conv = || {
            s4d_kernel_into(&ctx, &dev, &k, disc).unwrap();
            causal_conv_into(&ctx, &tu, &k, &dev.d, &y).unwrap();
        };
        let scan = || s4d_scan_into(&ctx, &dev, &tu, &y, disc).unwrap();
        conv();
        scan();
        ctx.wait().unwrap();
        g.throughput(Throughput::Elements((h * l) as u64));
        g.bench_with_input(BenchmarkId::new("gpu_conv", l), &l, |b, _| {
            b.iter_custom(|iters| gpu_time(&ctx, iters, conv))
        });
        g.bench_with_input(BenchmarkId::new("gpu_scan", l), &l, |b, _| {
            b.iter_custom(|iters| gpu_time(&ctx, iters, scan))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
