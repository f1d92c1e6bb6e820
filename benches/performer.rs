//! Performer FAVOR+ (M = 256 positive random features) vs elu1 linear attention, GPU and the CPU
//! reference, at B·H = 16, D = 64, L ∈ {1024, 4096, 16384}, non-causal. The GPU timing covers the
//! submission and the wait for the device; inputs and ω are uploaded beforehand, and criterion's
//! warm-up phase compiles the pipelines. `cargo bench --bench performer -- /1024` runs one length.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use longseq::attention::linear::check_shapes;
use longseq::attention::{
    draw_omega, favor_attention_into, linear_attention_into, FavorOptions, LinearAttentionOptions,
    OmegaDraw,
};
use longseq::{reference, Context, Tensor};
use rand::{Rng, SeedableRng};

fn bench(c: &mut Criterion) {
    let ctx = Context::new().expect(
        "performer bench needs a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)",
    );
    eprintln!("adapter: {}", ctx.adapter_line());
    let (rows, d, m) = (16usize, 64usize, 256usize);
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let w = draw_omega(m, d, OmegaDraw::OrthogonalChi, 0).unwrap();
    let tw = Tensor::from_slice(&ctx, &w, &[m, d]).unwrap();
    let mut g = c.benchmark_group("performer");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for l in [1024usize, 4096, 16384] {
        let n = rows * l * d;
        // Unit-scale rows (‖x‖ ≈ 1), as after a layer norm and the 1/√d of attention.
        let x: Vec<f32> = (0..3 * n)
            .map(|_| rng.random_range(-1.0..1.0) / (d as f32).sqrt())
            .collect();
        let (q, k, v) = (&x[..n], &x[n..2 * n], &x[2 * n..]);
        let shape = [rows, l, d];
        let dims = check_shapes("bench", &shape, &shape, &shape).unwrap();
        let tq = Tensor::from_slice(&ctx, q, &shape).unwrap();
        let tk = Tensor::from_slice(&ctx, k, &shape).unwrap();
        let tv = Tensor::from_slice(&ctx, v, &shape).unwrap();
        let out = Tensor::<f32>::empty(&ctx, &shape).unwrap();
        let elu1 = LinearAttentionOptions::default();
        let favor = FavorOptions::default();
        let run_elu1 = || linear_attention_into(&ctx, &tq, &tk, &tv, &out, &elu1).unwrap();
        let run_favor = || favor_attention_into(&ctx, &tq, &tk, &tv, &tw, &out, &favor).unwrap();
        g.throughput(Throughput::Elements((rows * l) as u64));
        for (name, f) in [
            ("gpu_elu1", &run_elu1 as &dyn Fn()),
            ("gpu_favor256", &run_favor),
        ] {
            g.bench_with_input(BenchmarkId::new(name, l), &l, |b, _| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        f();
                        ctx.wait().unwrap();
                    }
                    t.elapsed()
                })
            });
        }
        g.bench_with_input(BenchmarkId::new("cpu_elu1", l), &l, |b, _| {
            b.iter(|| reference::attention::linear_attention(q, k, v, &dims, &elu1).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("cpu_favor256", l), &l, |b, _| {
            b.iter(|| reference::attention::favor_attention(q, k, v, &dims, &w, &favor).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
