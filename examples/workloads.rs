//! The workloads W1, W2, W3 of the speed issue, timed on each longseq path in one run (median of
//! `--runs` runs after a warm-up; GPU times include the wait for the device). `scripts/bench-vs-jax`
//! runs this beside JAX-CPU.
//!
//! - W1: non-causal elu+1 linear attention, B·H = 16, L = 4096, D = 64, f32, ε = 1e-6.
//! - W2: W1 causal (chunked).
//! - W3: S4D kernel (ZOH) + causal FFT convolution, H = 256, N = 64 (32 conjugate pairs),
//!   L = 16384, A_n = −1/2 + iπn, B = 1, C ~ CN(0, 1), Δ log-uniform in [1e-3, 1e-1], D = 1.
//! - W4: Mamba-2 SSD, b = 1, l = 4096, h = 24, p = 64, n = 64, A in [−1, −0.001], f32.
//! - W5: gated linear attention, B = 1, H = 8, L = 4096, Dk = Dv = 64, g in [−0.1, −0.001], f32.
//!
//! - W6: Mamba selective scan (S6), B = 1, D = 1536, N = 16, L = 4096, delta_softplus with
//!   delta_bias, D skip, no z, f32 (as scripts/jax_workloads.py's W6).
//!
//! W4, W5 and W6 count the FLOPs of their recurrences (5 per state element and step; W6 adds
//! the discretisation, ~9 per state element and step in all).
//!
//! `cargo run --release --example workloads -- [--device gpu,cpu,reference] [--runs N] [--l L]
//! [--l3 L] [--only W1,W2,W3,W4,W5,W6]`

#[path = "common/timing.rs"]
mod timing;

use timing::median_ms;

use longseq::attention::linear::check_shapes;
use longseq::attention::{linear_attention_into, LinearAttentionOptions};
use longseq::reference::ssm as rs;
use longseq::ssm::{causal_conv_into, s4d_conv_into, s4d_kernel_into, DiagonalSsm, Discretization};
use longseq::{cpu, reference, Context, Tensor};
use num_complex::Complex64;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

struct Args {
    devices: Vec<String>,
    runs: usize,
    l: usize,
    l3: usize,
    only: Vec<String>,
    /// W3: also time the kernel and the convolution alone.
    parts: bool,
    /// W1, W2: also time each pass of the chunk engine (submit and wait after each).
    passes: bool,
}

fn args() -> Args {
    let mut a = Args {
        devices: vec!["gpu".into(), "cpu".into(), "reference".into()],
        runs: 5,
        l: 4096,
        l3: 16384,
        only: vec!["W1".into(), "W2".into(), "W3".into()],
        parts: false,
        passes: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.chunks(2);
    for kv in &mut it {
        let (k, v) = match kv {
            [k, v] => (k.as_str(), v.as_str()),
            _ => usage(),
        };
        let list = || v.split(',').map(str::to_string).collect();
        match k {
            "--device" => a.devices = list(),
            "--only" => a.only = list(),
            "--runs" => a.runs = v.parse().unwrap_or_else(|_| usage()),
            "--l" => a.l = v.parse().unwrap_or_else(|_| usage()),
            "--l3" => a.l3 = v.parse().unwrap_or_else(|_| usage()),
            "--parts" => a.parts = v == "1",
            "--passes" => a.passes = v == "1",
            _ => usage(),
        }
    }
    a
}

fn usage() -> ! {
    eprintln!(
        "usage: workloads [--device gpu,cpu,reference] [--runs N] [--l L] [--l3 L] [--only W1,..,W6] [--parts 1] [--passes 1]"
    );
    std::process::exit(2)
}

fn report(w: &str, device: &str, ms: f64, gflop: f64) {
    println!("{w} {device} {ms:.1} ms ({:.2} GFLOP/s)", gflop / ms * 1e3);
}

fn linear(a: &Args, ctx: Option<&Context>, causal: bool) {
    let w = if causal { "W2" } else { "W1" };
    let (rows, l, d) = (16usize, a.l, 64usize);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let n = rows * l * d;
    let x: Vec<f32> = (0..3 * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let (q, k, v) = (&x[..n], &x[n..2 * n], &x[2 * n..]);
    let shape = [rows, l, d];
    let opts = LinearAttentionOptions {
        causal,
        ..Default::default()
    };
    // Two (L·D·D) contractions per row: φ(K)ᵀV and φ(Q)S (the causal form adds the C-wide blocks).
    let gflop = (2.0 * 2.0 * (rows * l * d * d) as f64) / 1e9;
    for dev in &a.devices {
        match (dev.as_str(), ctx) {
            ("gpu", Some(ctx)) => {
                let t = |s: &[f32]| Tensor::from_slice(ctx, s, &shape).unwrap();
                let (tq, tk, tv) = (t(q), t(k), t(v));
                let out = Tensor::<f32>::empty(ctx, &shape).unwrap();
                let ms = median_ms(a.runs, || {
                    linear_attention_into(ctx, &tq, &tk, &tv, &out, &opts).unwrap();
                    ctx.wait().unwrap();
                });
                report(w, "gpu", ms, gflop);
                if a.passes {
                    pass_table(w, a.runs, || {
                        linear_attention_into(ctx, &tq, &tk, &tv, &out, &opts).unwrap();
                        ctx.wait().unwrap();
                    });
                }
            }
            ("cpu", _) => {
                let dims = check_shapes(w, &shape, &shape, &shape).unwrap();
                let mut out = vec![0.0f32; n];
                let ms = median_ms(a.runs, || {
                    cpu::attention::linear_attention_into(q, k, v, &dims, &opts, &mut out).unwrap();
                });
                report(w, "cpu", ms, gflop);
            }
            ("reference", _) => {
                let dims = check_shapes(w, &shape, &shape, &shape).unwrap();
                let ms = median_ms(a.runs.min(3), || {
                    reference::attention::linear_attention(q, k, v, &dims, &opts).unwrap();
                });
                report(w, "reference", ms, gflop);
            }
            _ => {}
        }
    }
}

/// Runs `f` `runs` times with pass timing on and prints each pass's mean ms per run.
fn pass_table(w: &str, runs: usize, mut f: impl FnMut()) {
    longseq::profile::set_enabled(true);
    f();
    longseq::profile::pass_times();
    let runs = runs.max(1);
    let s = std::time::Instant::now();
    for _ in 0..runs {
        f();
    }
    let wall = s.elapsed().as_secs_f64() * 1e3 / runs as f64;
    longseq::profile::set_enabled(false);
    let times = longseq::profile::pass_times();
    let sum: f64 = times
        .iter()
        .map(|t| t.total.as_secs_f64() * 1e3)
        .sum::<f64>()
        / runs as f64;
    for t in &times {
        let ms = t.total.as_secs_f64() * 1e3 / runs as f64;
        let cpu = t.cpu.as_secs_f64() * 1e3 / runs as f64;
        println!(
            "{w} pass {:<12} {:>4} dispatches/run {ms:8.1} ms ({:4.1}%) cpu {cpu:8.0} ms",
            t.name,
            t.count / runs as u64,
            100.0 * ms / wall
        );
    }
    println!(
        "{w} passes sum {sum:.1} ms of {wall:.1} ms per run (timed run, waits after each pass)"
    );
}

fn s4d(a: &Args, ctx: Option<&Context>) {
    let (h, n2, l) = (256usize, 32usize, a.l3);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut cn = || {
        let (re, im): (f64, f64) = (rng.sample(StandardNormal), rng.sample(StandardNormal));
        Complex64::new(re, im) * std::f64::consts::FRAC_1_SQRT_2
    };
    let c: Vec<Complex64> = (0..h * n2).map(|_| cn()).collect();
    let m = rs::DiagonalSsm {
        h,
        n2,
        a: (0..h)
            .flat_map(|_| (0..n2).map(|n| Complex64::new(-0.5, std::f64::consts::PI * n as f64)))
            .collect(),
        b: vec![Complex64::new(1.0, 0.0); h * n2],
        c,
        dt: (0..h)
            .map(|_| (rng.random_range((1e-3f64).ln()..(1e-1f64).ln())).exp())
            .collect(),
        d: vec![1.0; h],
    };
    let u: Vec<f32> = (0..h * l).map(|_| rng.sample(StandardNormal)).collect();
    // Vandermonde: ~8 flop per (h, n, l); three real FFTs of 2L: ~3 · 2.5 · 2L log2(2L) per row.
    let n_fft = 2.0 * l as f64;
    let gflop = (8.0 * (h * n2 * l) as f64 + 3.0 * 2.5 * n_fft * n_fft.log2() * h as f64) / 1e9;
    let disc = Discretization::Zoh;
    for dev in &a.devices {
        match (dev.as_str(), ctx) {
            ("gpu", Some(ctx)) => {
                let ssm = DiagonalSsm::<f32>::from_host(ctx, &m).unwrap();
                let tu = Tensor::from_slice(ctx, &u, &[1, h, l]).unwrap();
                let y = Tensor::<f32>::empty(ctx, &[1, h, l]).unwrap();
                // Kernel and convolution in one submission.
                let ms = median_ms(a.runs, || {
                    s4d_conv_into(ctx, &ssm, &tu, &y, disc).unwrap();
                    ctx.wait().unwrap();
                });
                report("W3", "gpu", ms, gflop);
                if a.passes {
                    pass_table("W3", a.runs, || {
                        s4d_conv_into(ctx, &ssm, &tu, &y, disc).unwrap();
                        ctx.wait().unwrap();
                    });
                }
                if a.parts {
                    // The two halves alone: where the time goes.
                    let k = Tensor::<f32>::empty(ctx, &[h, l]).unwrap();
                    let ms = median_ms(a.runs, || {
                        s4d_kernel_into(ctx, &ssm, &k, disc).unwrap();
                        ctx.wait().unwrap();
                    });
                    report("W3-kernel", "gpu", ms, 8.0 * (h * n2 * l) as f64 / 1e9);
                    let ms = median_ms(a.runs, || {
                        causal_conv_into(ctx, &tu, &k, &ssm.d, &y).unwrap();
                        ctx.wait().unwrap();
                    });
                    let fft = 3.0 * 2.5 * n_fft * n_fft.log2() * h as f64 / 1e9;
                    report("W3-conv", "gpu", ms, fft);
                }
            }
            ("cpu", _) => {
                let (mut k, mut y) = (vec![0.0f32; h * l], vec![0.0f32; h * l]);
                let ones = vec![1.0f32; h];
                let ms = median_ms(a.runs, || {
                    cpu::ssm::s4d_kernel_into(&m, l, disc, &mut k).unwrap();
                    cpu::ssm::causal_conv_into(&u, &[h, l], &k, &[h, l], &ones, &mut y).unwrap();
                });
                report("W3", "cpu", ms, gflop);
            }
            ("reference", _) => {
                let u64_: Vec<f64> = u.iter().map(|&x| x as f64).collect();
                let ms = median_ms(1, || {
                    let k = rs::s4d_kernel(&m, l, disc).unwrap();
                    rs::causal_conv(&u64_, &k, &m.d, h, l).unwrap();
                });
                report("W3", "reference", ms, gflop);
            }
            _ => {}
        }
    }
}

/// `n` uniform draws in [lo, hi), f32.
fn uniform(rng: &mut rand::rngs::StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

fn ssd_workload(a: &Args, ctx: Option<&Context>) {
    use longseq::reference::ssd::{ssd_ref, SsdDims, SsdRef};
    use longseq::ssm::{ssd_into, SsdInputs};
    let (b, l, h, p, n) = (1usize, a.l, 24usize, 64usize, 64usize);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let tok = b * l * h;
    let x = uniform(&mut rng, tok * p, -1.0, 1.0);
    let am = uniform(&mut rng, tok, -1.0, -0.001);
    let bm = uniform(&mut rng, tok * n, -1.0, 1.0);
    let cm = uniform(&mut rng, tok * n, -1.0, 1.0);
    let gflop = 5.0 * (tok * n * p) as f64 / 1e9;
    for dev in &a.devices {
        match (dev.as_str(), ctx) {
            ("gpu", Some(ctx)) => {
                let t = |v: &[f32], s: &[usize]| Tensor::from_slice(ctx, v, s).unwrap();
                let (tx, ta) = (t(&x, &[b, l, h, p]), t(&am, &[b, l, h]));
                let (tb, tc) = (t(&bm, &[b, l, h, n]), t(&cm, &[b, l, h, n]));
                let inp = SsdInputs::new(&tx, &ta, &tb, &tc);
                let y = Tensor::<f32>::empty(ctx, &[b, l, h, p]).unwrap();
                let last = Tensor::<f32>::empty(ctx, &[b, h, n, p]).unwrap();
                let ms = median_ms(a.runs, || {
                    ssd_into(ctx, &inp, &y, &last).unwrap();
                    ctx.wait().unwrap();
                });
                report("W4", "gpu", ms, gflop);
            }
            ("cpu", _) => {
                let dims = cpu::ssm::SsdDims {
                    batch: b,
                    len: l,
                    heads: h,
                    head_dim: p,
                    state: n,
                };
                let host = cpu::ssm::SsdHost::new(&x, &am, &bm, &cm);
                let ms = median_ms(a.runs, || {
                    cpu::ssm::ssd(dims, &host).unwrap();
                });
                report("W4", "cpu", ms, gflop);
            }
            ("reference", _) => {
                let f = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| x as f64).collect() };
                let (x, am, bm, cm) = (f(&x), f(&am), f(&bm), f(&cm));
                let dims = SsdDims {
                    batch: b,
                    len: l,
                    heads: h,
                    head_dim: p,
                    state: n,
                };
                let r = SsdRef {
                    x: &x,
                    a: &am,
                    b: &bm,
                    c: &cm,
                    initial_state: None,
                };
                let ms = median_ms(a.runs.min(3), || {
                    ssd_ref(dims, &r).unwrap();
                });
                report("W4", "reference", ms, gflop);
            }
            _ => {}
        }
    }
}

fn gla_workload(a: &Args, ctx: Option<&Context>) {
    use longseq::attention::{gla_into, GlaInputs};
    use longseq::reference::gla::{gla_ref, GlaDims, GlaRef};
    let (bh, l, dk, dv) = (8usize, a.l, 64usize, 64usize);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let q = uniform(&mut rng, bh * l * dk, -1.0, 1.0);
    let k = uniform(&mut rng, bh * l * dk, -1.0, 1.0);
    let v = uniform(&mut rng, bh * l * dv, -1.0, 1.0);
    let g = uniform(&mut rng, bh * l * dk, -0.1, -0.001);
    let gflop = 5.0 * (bh * l * dk * dv) as f64 / 1e9;
    for dev in &a.devices {
        match (dev.as_str(), ctx) {
            ("gpu", Some(ctx)) => {
                let t = |x: &[f32], d: usize| Tensor::from_slice(ctx, x, &[1, bh, l, d]).unwrap();
                let (tq, tk, tv, tg) = (t(&q, dk), t(&k, dk), t(&v, dv), t(&g, dk));
                let inp = GlaInputs::new(&tq, &tk, &tv, &tg);
                let o = Tensor::<f32>::empty(ctx, &[1, bh, l, dv]).unwrap();
                let last = Tensor::<f32>::empty(ctx, &[1, bh, dk, dv]).unwrap();
                let ms = median_ms(a.runs, || {
                    gla_into(ctx, &inp, &o, &last).unwrap();
                    ctx.wait().unwrap();
                });
                report("W5", "gpu", ms, gflop);
            }
            ("cpu", _) => {
                let shape = cpu::attention::GlaShape {
                    batch: 1,
                    heads: bh,
                    len: l,
                    dk,
                    dv,
                };
                let host = cpu::attention::GlaHost::new(&q, &k, &v, &g);
                let ms = median_ms(a.runs, || {
                    cpu::attention::gla(shape, &host).unwrap();
                });
                report("W5", "cpu", ms, gflop);
            }
            ("reference", _) => {
                let f = |x: &[f32]| -> Vec<f64> { x.iter().map(|&y| y as f64).collect() };
                let (q, k, v, g) = (f(&q), f(&k), f(&v), f(&g));
                let dims = GlaDims {
                    rows: bh,
                    len: l,
                    dk,
                    dv,
                };
                let r = GlaRef {
                    q: &q,
                    k: &k,
                    v: &v,
                    g: &g,
                    initial_state: None,
                    scale: None,
                };
                let ms = median_ms(a.runs.min(3), || {
                    gla_ref(dims, &r).unwrap();
                });
                report("W5", "reference", ms, gflop);
            }
            _ => {}
        }
    }
}

fn mamba_workload(a: &Args, ctx: Option<&Context>) {
    use longseq::reference::mamba::{selective_scan_ref, ScanDims, SelectiveScanRef};
    use longseq::ssm::{selective_scan_into, SelectiveScanInputs};
    let (b, d, n, l) = (1usize, 1536usize, 16usize, a.l);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let u = uniform(&mut rng, b * d * l, -1.0, 1.0);
    let delta = uniform(&mut rng, b * d * l, -3.0, 1.0);
    let am = uniform(&mut rng, d * n, -16.0, -0.5);
    let bm = uniform(&mut rng, b * n * l, -1.0, 1.0);
    let cm = uniform(&mut rng, b * n * l, -1.0, 1.0);
    let dm = uniform(&mut rng, d, -1.0, 1.0);
    let bias = uniform(&mut rng, d, -0.5, 0.5);
    let gflop = 9.0 * (b * d * n * l) as f64 / 1e9;
    let dims = ScanDims {
        batch: b,
        dim: d,
        state: n,
        len: l,
    };
    for dev in &a.devices {
        match (dev.as_str(), ctx) {
            ("gpu", Some(ctx)) => {
                let t = |v: &[f32], s: &[usize]| Tensor::from_slice(ctx, v, s).unwrap();
                let (tu, tdl) = (t(&u, &[b, d, l]), t(&delta, &[b, d, l]));
                let (ta, tb, tc) = (t(&am, &[d, n]), t(&bm, &[b, n, l]), t(&cm, &[b, n, l]));
                let (td, tbias) = (t(&dm, &[d]), t(&bias, &[d]));
                let inp = SelectiveScanInputs {
                    d: Some(&td),
                    delta_bias: Some(&tbias),
                    delta_softplus: true,
                    ..SelectiveScanInputs::new(&tu, &tdl, &ta, &tb, &tc)
                };
                let y = Tensor::<f32>::empty(ctx, &[b, d, l]).unwrap();
                let last = Tensor::<f32>::empty(ctx, &[b, d, n]).unwrap();
                let ms = median_ms(a.runs, || {
                    selective_scan_into(ctx, &inp, &y, &last).unwrap();
                    ctx.wait().unwrap();
                });
                report("W6", "gpu", ms, gflop);
            }
            ("cpu", _) => {
                let host = cpu::ssm::SelectiveScanHost {
                    d: Some(&dm),
                    delta_bias: Some(&bias),
                    delta_softplus: true,
                    ..cpu::ssm::SelectiveScanHost::new(&u, &delta, &am, &bm, &cm)
                };
                let ms = median_ms(a.runs, || {
                    cpu::ssm::selective_scan(dims, &host).unwrap();
                });
                report("W6", "cpu", ms, gflop);
            }
            ("reference", _) => {
                let f = |x: &[f32]| -> Vec<f64> { x.iter().map(|&y| y as f64).collect() };
                let (u, delta, am, bm, cm, dm, bias) =
                    (f(&u), f(&delta), f(&am), f(&bm), f(&cm), f(&dm), f(&bias));
                let r = SelectiveScanRef {
                    u: &u,
                    delta: &delta,
                    a: &am,
                    b: &bm,
                    c: &cm,
                    d: Some(&dm),
                    z: None,
                    delta_bias: Some(&bias),
                    delta_softplus: true,
                    initial_state: None,
                };
                let ms = median_ms(a.runs.min(3), || {
                    selective_scan_ref(dims, &r).unwrap();
                });
                report("W6", "reference", ms, gflop);
            }
            _ => {}
        }
    }
}

fn main() {
    let a = args();
    let ctx = if a.devices.iter().any(|d| d == "gpu") {
        match Context::new() {
            Ok(c) => {
                eprintln!("adapter: {}", c.adapter_line());
                Some(c)
            }
            Err(e) => {
                eprintln!("no GPU adapter ({e}); timing the other devices only");
                None
            }
        }
    } else {
        None
    };
    for w in &a.only {
        match w.as_str() {
            "W1" => linear(&a, ctx.as_ref(), false),
            "W2" => linear(&a, ctx.as_ref(), true),
            "W3" => s4d(&a, ctx.as_ref()),
            "W4" => ssd_workload(&a, ctx.as_ref()),
            "W5" => gla_workload(&a, ctx.as_ref()),
            "W6" => mamba_workload(&a, ctx.as_ref()),
            _ => usage(),
        }
    }
}
