//! Exact softmax attention vs linear attention (elu1) vs Lightning attention on the GPU at
//! B·H = 16, D = 64, L ∈ {512, 2048, 8192, 32768}, non-causal softmax/linear and causal Lightning:
//! where the linear-cost methods overtake the quadratic one. The timing covers the submission
//! and the wait for the device; inputs are uploaded beforehand, pipelines compiled by a warm-up.
//!
//! `LONGSEQ_BENCH_MAX_L=N` drops the lengths above N; on a CPU adapter (lavapipe) softmax runs
//! only up to L = 512 unless `LONGSEQ_BENCH_SOFTMAX_MAX_L` says otherwise (one softmax run at
//! L = 32768 is ~4 TFLOP of work).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use longseq::attention::{
    lightning_attention_into, linear_attention_into, softmax_attention_into, LightningOptions,
    LinearAttentionOptions, SoftmaxAttentionOptions,
};
use longseq::{Context, Tensor};
use rand::{Rng, SeedableRng};

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

fn bench(c: &mut Criterion) {
    let ctx = Context::new().expect(
        "attention_crossover bench needs a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)",
    );
    eprintln!("adapter: {}", ctx.adapter_line());
    let cpu_adapter = ctx.adapter_info().device_type == wgpu::DeviceType::Cpu;
    let max_l = env_usize("LONGSEQ_BENCH_MAX_L").unwrap_or(usize::MAX);
    let softmax_max_l = env_usize("LONGSEQ_BENCH_SOFTMAX_MAX_L").unwrap_or(if cpu_adapter {
        512
    } else {
        usize::MAX
    });
    let (rows, d) = (16usize, 64usize);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut g = c.benchmark_group("attention_crossover");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for l in [512usize, 2048, 8192, 32768]
        .into_iter()
        .filter(|&l| l <= max_l)
    {
        let n = rows * l * d;
        let x: Vec<f32> = (0..3 * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let shape = [rows, l, d];
        let t = |i: usize| Tensor::from_slice(&ctx, &x[i * n..(i + 1) * n], &shape).unwrap();
        let (tq, tk, tv) = (t(0), t(1), t(2));
        let out = Tensor::<f32>::empty(&ctx, &shape).unwrap();
        g.throughput(Throughput::Elements((rows * l) as u64));
        let mut timed = |name: &str, run: &dyn Fn()| {
            run();
            ctx.wait().unwrap();
            g.bench_with_input(BenchmarkId::new(name, l), &l, |b, _| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        run();
                        ctx.wait().unwrap();
                    }
                    t.elapsed()
                })
            });
        };
        if l <= softmax_max_l {
            let o = SoftmaxAttentionOptions::default();
            timed("softmax", &|| {
                softmax_attention_into(&ctx, &tq, &tk, &tv, &out, &o).unwrap()
            });
        }
        let o = LinearAttentionOptions::default();
        timed("linear_elu1", &|| {
            linear_attention_into(&ctx, &tq, &tk, &tv, &out, &o).unwrap()
        });
        let o = LightningOptions::default();
        timed("lightning", &|| {
            lightning_attention_into(&ctx, &tq, &tk, &tv, None, &out, &o).unwrap()
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
