//! The Mamba selective scan (S6) at B = 1, D = 1536, N = 16, L = 4096 (Mamba-130M's inner width
//! and state size), f32, with D, z, delta_bias and softplus. GPU time covers the submission and
//! the wait for the device; inputs are uploaded and pipelines compiled first. Throughput is in
//! FLOPs with the count VMamba's `flops_selective_scan_fn` uses for the scan:
//! 9·B·D·N·L + 2·B·D·L (D and z), so criterion's elem/s read as FLOP/s; the median GFLOP/s of
//! a few untimed-by-criterion runs is printed too. Filter with e.g. `cargo bench --bench mamba`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use longseq::ssm::{selective_scan_into, SelectiveScanInputs};
use longseq::{Context, Tensor};
use rand::{Rng, SeedableRng};

const SHAPES: [(usize, usize, usize, usize); 1] = [(1, 1536, 16, 4096)];

fn flops(b: usize, d: usize, n: usize, l: usize) -> u64 {
    (9 * b * d * n * l + 2 * b * d * l) as u64
}

fn bench(c: &mut Criterion) {
    let ctx = Context::new()
        .expect("mamba bench needs a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)");
    eprintln!("adapter: {}", ctx.adapter_line());
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut g = c.benchmark_group("selective_scan");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for (b, d, n, l) in SHAPES {
        let mut t = |len: usize, shape: &[usize], lo: f32, hi: f32| {
            let v: Vec<f32> = (0..len).map(|_| rng.random_range(lo..hi)).collect();
            Tensor::from_slice(&ctx, &v, shape).unwrap()
        };
        let u = t(b * d * l, &[b, d, l], -1.0, 1.0);
        let delta = t(b * d * l, &[b, d, l], -4.0, 1.0);
        let a = t(d * n, &[d, n], -8.0, -0.5);
        let bm = t(b * n * l, &[b, n, l], -1.0, 1.0);
        let cm = t(b * n * l, &[b, n, l], -1.0, 1.0);
        let dd = t(d, &[d], -1.0, 1.0);
        let z = t(b * d * l, &[b, d, l], -2.0, 2.0);
        let bias = t(d, &[d], -1.0, 1.0);
        let mut x = SelectiveScanInputs::new(&u, &delta, &a, &bm, &cm);
        (x.d, x.z, x.delta_bias, x.delta_softplus) = (Some(&dd), Some(&z), Some(&bias), true);
        let out = Tensor::<f32>::empty(&ctx, &[b, d, l]).unwrap();
        let last = Tensor::<f32>::empty(&ctx, &[b, d, n]).unwrap();
        let run = || {
            selective_scan_into(&ctx, &x, &out, &last).unwrap();
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
        let f = flops(b, d, n, l);
        eprintln!(
            "selective_scan B={b} D={d} N={n} L={l}: median {:.2} ms, {:.2} GFLOP/s ({f} FLOPs)",
            times[2] * 1e3,
            f as f64 / times[2] / 1e9
        );
        g.throughput(Throughput::Elements(f));
        let id = format!("B{b}_D{d}_N{n}_L{l}");
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
