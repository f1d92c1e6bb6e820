//! Gated linear attention at B = 1, H = 8, L = 4096, Dk = Dv = 64, f32, gates g in
//! [−0.1, −0.001], no initial state. GPU time covers the submission and the wait for the device;
//! inputs are uploaded and pipelines compiled first. Throughput is in FLOPs of the recurrence,
//! 5·B·H·L·Dk·Dv (S ← diag(e^g) S + kᵀv: 3 per state element; q S: 2), so criterion's elem/s
//! read as FLOP/s; the median GFLOP/s of five runs is printed too. `cargo bench --bench gla`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use longseq::attention::{gla_into, GlaInputs};
use longseq::{Context, Tensor};
use rand::{Rng, SeedableRng};

const SHAPES: [(usize, usize, usize, usize, usize); 1] = [(1, 8, 4096, 64, 64)];

fn bench(c: &mut Criterion) {
    let ctx = Context::new()
        .expect("gla bench needs a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)");
    eprintln!("adapter: {}", ctx.adapter_line());
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut g = c.benchmark_group("gla");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for (b, h, l, dk, dv) in SHAPES {
        let mut t = |d: usize, lo: f32, hi: f32| {
            let v: Vec<f32> = (0..b * h * l * d)
                .map(|_| rng.random_range(lo..hi))
                .collect();
            Tensor::from_slice(&ctx, &v, &[b, h, l, d]).unwrap()
        };
        let (q, k, v) = (t(dk, -1.0, 1.0), t(dk, -1.0, 1.0), t(dv, -1.0, 1.0));
        let gates = t(dk, -0.1, -0.001);
        let inp = GlaInputs::new(&q, &k, &v, &gates);
        let o = Tensor::<f32>::empty(&ctx, &[b, h, l, dv]).unwrap();
        let last = Tensor::<f32>::empty(&ctx, &[b, h, dk, dv]).unwrap();
        let run = || {
            gla_into(&ctx, &inp, &o, &last).unwrap();
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
        let f = (5 * b * h * l * dk * dv) as u64;
        eprintln!(
            "gla B={b} H={h} L={l} Dk={dk} Dv={dv}: median {:.2} ms, {:.2} GFLOP/s ({f} FLOPs)",
            times[2] * 1e3,
            f as f64 / times[2] / 1e9
        );
        g.throughput(Throughput::Elements(f));
        let id = format!("B{b}_H{h}_L{l}_Dk{dk}_Dv{dv}");
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
