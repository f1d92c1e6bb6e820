//! Exact softmax attention, causal and not, f32, D = 64, at L ∈ {1024, 4096}. B·H = 16 at
//! L = 1024 (W1's batch·heads) and B·H = 2 at L = 4096 (W1's B·H = 16 costs ~70 GFLOP per call
//! there, minutes per criterion sample on lavapipe; GFLOP/s depends on the tile work, not on B·H
//! once the workgroups fill the adapter). Throughput is in FLOP: one "element" = one FLOP
//! (`4 · B·H · D · pairs`, pairs = L² or L(L + 1)/2), so criterion's Gelem/s reads as GFLOP/s.
//! Each timed iteration submits one call and waits for the device.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use longseq::attention::{record_softmax_attention, SoftmaxAttentionOptions};
use longseq::{Context, Schedule, Tensor};
use rand::{Rng, SeedableRng};

fn bench(c: &mut Criterion) {
    let ctx = Context::new().expect(
        "softmax_attention bench needs a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)",
    );
    eprintln!("adapter: {}", ctx.adapter_line());
    let d = 64usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut g = c.benchmark_group("softmax_attention");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(3));
    for (bh, l) in [(16usize, 1024usize), (2, 4096)] {
        let n = bh * l * d;
        let x: Vec<f32> = (0..3 * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let shape = [1, bh, l, d];
        let t = |i: usize| Tensor::from_slice(&ctx, &x[i * n..(i + 1) * n], &shape).unwrap();
        let (q, k, v) = (t(0), t(1), t(2));
        let out = Tensor::<f32>::empty(&ctx, &shape).unwrap();
        for causal in [false, true] {
            let opts = SoftmaxAttentionOptions {
                causal,
                scale: None,
                ..Default::default()
            };
            let pairs = if causal { l * (l + 1) / 2 } else { l * l };
            g.throughput(Throughput::Elements((4 * bh * d * pairs) as u64));
            let run = || {
                let mut s = Schedule::new(&ctx);
                record_softmax_attention(&mut s, &q, &k, &v, &out, &opts).unwrap();
                s.submit();
                ctx.wait().unwrap();
            };
            run();
            let name = if causal { "causal" } else { "full" };
            let id = BenchmarkId::new(name, format!("bh{bh}_l{l}"));
            g.bench_with_input(id, &l, |b, _| {
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
