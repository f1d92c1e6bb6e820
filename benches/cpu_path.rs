//! GPU, the f32 CPU path (`longseq::cpu`) and the f64 reference side by side at several L, in
//! one run: causal linear attention (B·H = 16, D = 64), the S4D kernel + FFT convolution
//! (H = 64, N = 64) and RoPE (B·H = 16, D = 64). Throughput is sequence positions per second.
//! GPU timings cover the submission and the wait for the device (inputs uploaded and pipelines
//! compiled first). Filter with e.g. `cargo bench --bench cpu_path -- cpu`.

use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use longseq::attention::linear::check_shapes;
use longseq::attention::{linear_attention_into, LinearAttentionOptions};
use longseq::positions::{rope_into, Positions, RopeOptions};
use longseq::reference::ssm as rs;
use longseq::ssm::{
    causal_conv_into, s4d_init, s4d_kernel_into, DiagonalSsm, Discretization, S4dInit,
};
use longseq::{cpu, reference, Context, Tensor};
use num_complex::Complex64;
use rand::{Rng, SeedableRng};

fn gpu<F: FnMut()>(g: &mut BenchmarkGroup<'_, WallTime>, ctx: &Context, l: usize, mut f: F) {
    f();
    ctx.wait().unwrap();
    g.bench_with_input(BenchmarkId::new("gpu", l), &l, |b, _| {
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

fn linear(c: &mut Criterion, ctx: &Context, rng: &mut impl Rng) {
    let (rows, d) = (16usize, 64usize);
    let mut g = c.benchmark_group("cpu_path/linear_attention_causal");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for l in [1024usize, 4096, 16384] {
        let n = rows * l * d;
        let x: Vec<f32> = (0..3 * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let (q, k, v) = (&x[..n], &x[n..2 * n], &x[2 * n..]);
        let shape = [rows, l, d];
        let dims = check_shapes("bench", &shape, &shape, &shape).unwrap();
        let opts = LinearAttentionOptions {
            causal: true,
            ..Default::default()
        };
        g.throughput(Throughput::Elements((rows * l) as u64));
        let t = |x: &[f32]| Tensor::from_slice(ctx, x, &shape).unwrap();
        let (tq, tk, tv) = (t(q), t(k), t(v));
        let out = Tensor::<f32>::empty(ctx, &shape).unwrap();
        gpu(&mut g, ctx, l, || {
            linear_attention_into(ctx, &tq, &tk, &tv, &out, &opts).unwrap()
        });
        let mut o = vec![0.0f32; n];
        g.bench_with_input(BenchmarkId::new("cpu", l), &l, |b, _| {
            b.iter(|| cpu::attention::linear_attention_into(q, k, v, &dims, &opts, &mut o).unwrap())
        });
        if l <= 4096 {
            g.bench_with_input(BenchmarkId::new("reference", l), &l, |b, _| {
                b.iter(|| reference::attention::linear_attention(q, k, v, &dims, &opts).unwrap())
            });
        }
    }
    g.finish();
}

fn ssm(c: &mut Criterion, ctx: &Context, rng: &mut impl Rng) {
    let (h, n2) = (64usize, 32usize);
    let a1 = s4d_init(S4dInit::Lin, n2).unwrap();
    let mut z = || Complex64::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0));
    let m = rs::DiagonalSsm {
        h,
        n2,
        a: (0..h).flat_map(|_| a1.clone()).collect(),
        b: (0..h * n2).map(|_| z()).collect(),
        c: (0..h * n2).map(|_| z()).collect(),
        dt: (0..h)
            .map(|i| 10f64.powf(-3.0 + 2.0 * i as f64 / h as f64))
            .collect(),
        d: vec![1.0; h],
    };
    let disc = Discretization::Zoh;
    let dev = DiagonalSsm::<f32>::from_host(ctx, &m).unwrap();
    let d32 = vec![1.0f32; h];
    let mut g = c.benchmark_group("cpu_path/s4d_conv");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for l in [1024usize, 4096, 16384] {
        let u: Vec<f32> = (0..h * l).map(|_| rng.random_range(-1.0..1.0)).collect();
        let u64_: Vec<f64> = u.iter().map(|&x| x as f64).collect();
        g.throughput(Throughput::Elements((h * l) as u64));
        let tu = Tensor::from_slice(ctx, &u, &[1, h, l]).unwrap();
        let tk = Tensor::<f32>::empty(ctx, &[h, l]).unwrap();
        let ty = Tensor::<f32>::empty(ctx, &[1, h, l]).unwrap();
        gpu(&mut g, ctx, l, || {
            s4d_kernel_into(ctx, &dev, &tk, disc).unwrap();
            causal_conv_into(ctx, &tu, &tk, &dev.d, &ty).unwrap();
        });
        let (mut k, mut y) = (vec![0.0f32; h * l], vec![0.0f32; h * l]);
        g.bench_with_input(BenchmarkId::new("cpu", l), &l, |b, _| {
            b.iter(|| {
                cpu::ssm::s4d_kernel_into(&m, l, disc, &mut k).unwrap();
                cpu::ssm::causal_conv_into(&u, &[1, h, l], &k, &[h, l], &d32, &mut y).unwrap();
            })
        });
        if l <= 4096 {
            g.bench_with_input(BenchmarkId::new("reference", l), &l, |b, _| {
                b.iter(|| {
                    let k = rs::s4d_kernel(&m, l, disc).unwrap();
                    rs::causal_conv(&u64_, &k, &m.d, h, l).unwrap()
                })
            });
        }
    }
    g.finish();
}

fn rope(c: &mut Criterion, ctx: &Context, rng: &mut impl Rng) {
    let (rows, d) = (16usize, 64usize);
    let opts = RopeOptions::default();
    let mut g = c.benchmark_group("cpu_path/rope");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for l in [1024usize, 4096, 16384] {
        let shape = [rows, l, d];
        let x: Vec<f32> = (0..rows * l * d)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        g.throughput(Throughput::Elements((rows * l) as u64));
        let tx = Tensor::from_slice(ctx, &x, &shape).unwrap();
        let out = Tensor::<f32>::empty(ctx, &shape).unwrap();
        let pos = Positions::Offset(0);
        gpu(&mut g, ctx, l, || {
            rope_into(ctx, &tx, pos, &out, &opts).unwrap()
        });
        let mut o = vec![0.0f32; x.len()];
        g.bench_with_input(BenchmarkId::new("cpu", l), &l, |b, _| {
            b.iter(|| cpu::positions::rope_into(&x, &shape, pos, &mut o, &opts).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("reference", l), &l, |b, _| {
            b.iter(|| reference::positions::rope(&x, &shape, pos, &opts).unwrap())
        });
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    let ctx = Context::new().expect(
        "cpu_path bench needs a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)",
    );
    eprintln!(
        "adapter: {}; CPU path threads: {}",
        ctx.adapter_line(),
        rayon::current_num_threads()
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    linear(c, &ctx, &mut rng);
    ssm(c, &ctx, &mut rng);
    rope(c, &ctx, &mut rng);
}

criterion_group!(benches, bench);
criterion_main!(benches);
