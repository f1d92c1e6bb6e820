//! Mamba-2 SSD at b = 1, l = 4096, h = 24, p = 64, n = 64 (Mamba-2-130M's heads, head dim and
//! state size), f32, no initial state. GPU time covers the submission and the wait for the device;
//! inputs are uploaded and pipelines compiled first. Throughput is in FLOPs of the recurrence,
//! 5·b·l·h·n·p (H ← e^A H + Bᵀx: 3 per state element; y = C H: 2), so criterion's elem/s read as
//! FLOP/s; the median GFLOP/s of five runs is printed too. `cargo bench --bench ssd`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use longseq::ssm::{ssd_into, SsdInputs};
use longseq::{Context, Tensor};
use rand::{Rng, SeedableRng};

const SHAPES: [(usize, usize, usize, usize, usize); 1] = [(1, 4096, 24, 64, 64)];

fn bench(c: &mut Criterion) {
    let ctx = Context::new()
        .expect("ssd bench needs a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)");
    eprintln!("adapter: {}", ctx.adapter_line());
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut g = c.benchmark_group("ssd");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for (b, l, h, p, n) in SHAPES {
        let mut t = |shape: &[usize], lo: f32, hi: f32| {
            let len = shape.iter().product();
            let v: Vec<f32> = (0..len).map(|_| rng.random_range(lo..hi)).collect();
            Tensor::from_slice(&ctx, &v, shape).unwrap()
        };
        let x = t(&[b, l, h, p], -1.0, 1.0);
        let a = t(&[b, l, h], -1.0, -0.001);
        let bm = t(&[b, l, h, n], -1.0, 1.0);
        let cm = t(&[b, l, h, n], -1.0, 1.0);
        let inp = SsdInputs::new(&x, &a, &bm, &cm);
        let y = Tensor::<f32>::empty(&ctx, &[b, l, h, p]).unwrap();
        let last = Tensor::<f32>::empty(&ctx, &[b, h, n, p]).unwrap();
        let run = || {
            ssd_into(&ctx, &inp, &y, &last).unwrap();
            ctx.wait().unwrap();
        };
        run();
        let mut times: Vec<f64> = (0..5)
            .map(|_| {
                let t0 = Instant::now();
                run();
                t0.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let f = (5 * b * l * h * n * p) as u64;
        eprintln!(
            "ssd b={b} l={l} h={h} p={p} n={n}: median {:.2} ms, {:.2} GFLOP/s ({f} FLOPs)",
            times[2] * 1e3,
            f as f64 / times[2] / 1e9
        );
        g.throughput(Throughput::Elements(f));
        let id = format!("b{b}_l{l}_h{h}_p{p}_n{n}");
        g.bench_with_input(BenchmarkId::new("gpu_f32", &id), &id, |bch, _| {
            bch.iter_custom(|iters| {
                let t0 = Instant::now();
                for _ in 0..iters {
                    run();
                }
                t0.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
