//! RoPE on q and k followed by causal softmax attention with a sliding window of 512, vs the same
//! with full causal softmax, at L ∈ {2048, 8192, 32768} (B·H = 1, D = 64). The window makes the
//! cost linear in L; full attention is quadratic. Each timed iteration records RoPE(q), RoPE(k)
//! and the attention into one submission and waits for the device; pipelines are compiled by a
//! warm-up run.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use longseq::attention::{
    record_softmax_attention_positional, PositionalOptions, SoftmaxAttentionOptions,
};
use longseq::positions::{record_rope, Positions, RopeOptions};
use longseq::{Context, Schedule, Tensor};
use rand::{Rng, SeedableRng};

fn bench(c: &mut Criterion) {
    let ctx = Context::new().expect(
        "positional_attention bench needs a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)",
    );
    eprintln!("adapter: {}", ctx.adapter_line());
    let d = 64usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut g = c.benchmark_group("rope_softmax");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    let opts = SoftmaxAttentionOptions {
        causal: true,
        scale: None,
        ..Default::default()
    };
    let rope_opts = RopeOptions::default();
    for l in [2048usize, 8192, 32768] {
        let n = l * d;
        let x: Vec<f32> = (0..3 * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let shape = [1, 1, l, d];
        let t = |i: usize| Tensor::from_slice(&ctx, &x[i * n..(i + 1) * n], &shape).unwrap();
        let (q, k, v) = (t(0), t(1), t(2));
        let (qr, kr) = (
            Tensor::<f32>::empty(&ctx, &shape).unwrap(),
            Tensor::<f32>::empty(&ctx, &shape).unwrap(),
        );
        let out = Tensor::<f32>::empty(&ctx, &shape).unwrap();
        g.throughput(Throughput::Elements(l as u64));
        for (name, window) in [("window_512", Some(512)), ("full", None)] {
            let pos = PositionalOptions {
                window,
                ..Default::default()
            };
            let run = || {
                let mut s = Schedule::new(&ctx);
                record_rope(&mut s, &q, Positions::Offset(0), &qr, &rope_opts).unwrap();
                record_rope(&mut s, &k, Positions::Offset(0), &kr, &rope_opts).unwrap();
                record_softmax_attention_positional(&mut s, &qr, &kr, &v, &out, &opts, &pos)
                    .unwrap();
                s.submit();
                ctx.wait().unwrap();
            };
            run();
            g.bench_with_input(BenchmarkId::new(name, l), &l, |b, _| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        run();
                    }
                    t.elapsed()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
