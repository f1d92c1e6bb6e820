//! Linear attention, GPU vs the CPU reference, at B·H = 16, D = 64, L ∈ {1024, 4096, 16384},
//! causal and not. The GPU timing covers the submission and the wait for the device; inputs are
//! uploaded beforehand and pipelines compiled by a warm-up run. Throughput: criterion's
//! "elements" are FLOPs (so `Gelem/s` reads GFLOP/s); the bytes per call (q, k, v read, o
//! written) are printed for GB/s.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use longseq::attention::linear::check_shapes;
use longseq::attention::{linear_attention_into, LinearAttentionOptions};
use longseq::{reference, Context, Tensor};
use rand::{Rng, SeedableRng};

fn bench(c: &mut Criterion) {
    let ctx = Context::new().expect("linear_attention bench needs a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)");
    eprintln!("adapter: {}", ctx.adapter_line());
    let (rows, d) = (16usize, 64usize);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for causal in [false, true] {
        let mut g = c.benchmark_group(if causal {
            "linear_attention_causal"
        } else {
            "linear_attention"
        });
        g.sample_size(10).measurement_time(Duration::from_secs(8));
        for l in [1024usize, 4096, 16384] {
            let n = rows * l * d;
            let x: Vec<f32> = (0..3 * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let (q, k, v) = (&x[..n], &x[n..2 * n], &x[2 * n..]);
            let shape = [rows, l, d];
            let dims = check_shapes("bench", &shape, &shape, &shape).unwrap();
            let opts = LinearAttentionOptions {
                causal,
                ..Default::default()
            };
            let tq = Tensor::from_slice(&ctx, q, &shape).unwrap();
            let tk = Tensor::from_slice(&ctx, k, &shape).unwrap();
            let tv = Tensor::from_slice(&ctx, v, &shape).unwrap();
            let out = Tensor::<f32>::empty(&ctx, &shape).unwrap();
            linear_attention_into(&ctx, &tq, &tk, &tv, &out, &opts).unwrap();
            ctx.wait().unwrap();
            g.throughput(Throughput::Elements(flops(rows, l, d, d, causal)));
            let bytes = rows * l * 4 * d * 4;
            eprintln!("L = {l}: {bytes} bytes per call (GB/s = bytes / time)");
            g.bench_with_input(BenchmarkId::new("gpu", l), &l, |b, _| {
                b.iter_custom(|iters| {
                    let t = Instant::now();
                    for _ in 0..iters {
                        linear_attention_into(&ctx, &tq, &tk, &tv, &out, &opts).unwrap();
                        ctx.wait().unwrap();
                    }
                    t.elapsed()
                })
            });
            g.bench_with_input(BenchmarkId::new("cpu", l), &l, |b, _| {
                b.iter(|| reference::attention::linear_attention(q, k, v, &dims, &opts).unwrap())
            });
        }
        g.finish();
    }
}

/// FLOPs of the chunked form: the state `Σ φ(k) vᵀ` and its product with φ(q) (2·L·Dk·Dv each,
/// plus the denominator's 2·L·Dk each); causal adds the 64-row score block and its product with V.
fn flops(rows: usize, l: usize, dk: usize, dv: usize, causal: bool) -> u64 {
    let base = 4 * l * dk * dv + 4 * l * dk;
    let intra = if causal { 2 * l * 64 * (dk + dv) } else { 0 };
    (rows * (base + intra)) as u64
}

criterion_group!(benches, bench);
criterion_main!(benches);
