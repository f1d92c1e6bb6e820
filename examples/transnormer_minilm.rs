//! TransNormer's attentions, Lightning and linear attention against exact softmax attention.
//!
//! 1. On the shipped MiniLM capture (layers 0 and 5, 12 heads, L = 403, D = 32): the relative
//!    Frobenius error of each method against the stored float64 `softmax_out`, and its GPU time.
//! 2. On random data (B·H = 1, D = 32 unless --bh / --d say otherwise), GPU time against L: where
//!    each sub-quadratic method overtakes exact softmax.
//!
//! `cargo run --release --example transnormer_minilm -- [--max-l L] [--bh N] [--d D] [--out DIR]`
//! Writes DIR/transnormer_minilm.md and DIR/transnormer_minilm.png (DIR defaults to
//! `longseq-out/`). On a CPU adapter (lavapipe) the sweep stops at L = 2048 unless --max-l says
//! otherwise (16 384 elsewhere), and softmax is not run again once one run took longer than 10 s.

#[path = "common/args.rs"]
mod args;
#[path = "common/plot.rs"]
mod plot;

use std::error::Error;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use longseq::attention::{
    diag_attention_into, lightning_attention_into, linear_attention_into, norm_attention_into,
    softmax_attention_into, Affine, DiagAttentionOptions, FeatureMap, LightningOptions,
    LinearAttentionOptions, NormAttentionOptions, SoftmaxAttentionOptions,
};
use longseq::{Context, Tensor};
use rand::{Rng, SeedableRng};
use safetensors::SafeTensors;

#[derive(Clone, Copy)]
enum Method {
    Softmax,
    Diag(u32),
    Norm,
    Linear,
    Lightning,
}

impl Method {
    fn name(self) -> String {
        match self {
            Method::Softmax => "softmax (exact)".into(),
            Method::Diag(w) => format!("diag w={w}"),
            Method::Norm => "norm (elu, simple-rmsnorm)".into(),
            Method::Linear => "linear elu1".into(),
            Method::Lightning => "lightning (causal, alibi)".into(),
        }
    }

    fn run(self, ctx: &Context, x: &[Tensor<f32>; 3], out: &Tensor<f32>) -> longseq::Result<()> {
        let [q, k, v] = x;
        let none = Affine::default();
        match self {
            Method::Softmax => {
                softmax_attention_into(ctx, q, k, v, out, &SoftmaxAttentionOptions::default())
            }
            Method::Diag(w) => {
                let o = DiagAttentionOptions {
                    block: w,
                    ..Default::default()
                };
                diag_attention_into(ctx, q, k, v, &none, out, &o)
            }
            Method::Norm => {
                norm_attention_into(ctx, q, k, v, &none, out, &NormAttentionOptions::default())
            }
            Method::Linear => {
                let o = LinearAttentionOptions {
                    feature_map: FeatureMap::Elu1,
                    ..Default::default()
                };
                linear_attention_into(ctx, q, k, v, out, &o)
            }
            Method::Lightning => {
                lightning_attention_into(ctx, q, k, v, None, out, &LightningOptions::default())
            }
        }
    }

    /// Fastest of a few runs (after a warm-up that compiles the pipelines), device waited on.
    fn time(self, ctx: &Context, x: &[Tensor<f32>; 3], out: &Tensor<f32>) -> longseq::Result<f64> {
        self.run(ctx, x, out)?;
        ctx.wait()?;
        let mut best = f64::INFINITY;
        let start = Instant::now();
        for _ in 0..5 {
            let t = Instant::now();
            self.run(ctx, x, out)?;
            ctx.wait()?;
            best = best.min(t.elapsed().as_secs_f64());
            if start.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
        Ok(best)
    }
}

fn tensor(st: &SafeTensors<'_>, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st.tensor(name).expect("tensor in the MiniLM file");
    (bytemuck::pod_collect_to_vec(t.data()), t.shape().to_vec())
}

fn rel_frobenius(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

fn main() -> std::process::ExitCode {
    args::main_with(run)
}

fn run() -> Result<(), Box<dyn Error>> {
    let args = args::Args::new();
    let flag = |f: &str| args.value(f);
    let ctx = Context::new()?;
    let cpu_adapter = ctx.adapter_info().device_type == wgpu::DeviceType::Cpu;
    let max_l: usize = match flag("--max-l")? {
        Some(s) => s.parse()?,
        None if cpu_adapter => 2048,
        None => 16384,
    };
    let out_dir = args.out_dir()?.display().to_string();
    let mut md = String::new();
    writeln!(md, "# TransNormer and Lightning vs exact softmax\n")?;
    writeln!(md, "adapter: {}\n", ctx.adapter_line())?;
    println!("adapter: {}", ctx.adapter_line());

    // Part 1: the MiniLM capture.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/minilm_two_cities_qkv.safetensors"
    );
    let bytes = std::fs::read(path)?;
    let st = SafeTensors::deserialize(&bytes)?;
    let methods = [
        Method::Softmax,
        Method::Diag(16),
        Method::Diag(32),
        Method::Diag(64),
        Method::Diag(128),
        Method::Norm,
        Method::Linear,
    ];
    let mut rows: Vec<(String, Vec<f64>, f64)> =
        methods.iter().map(|m| (m.name(), vec![], 0.0)).collect();
    for layer in [0, 5] {
        let [(q, shape), (k, _), (v, _), (want, _)] =
            ["q", "k", "v", "softmax_out"].map(|n| tensor(&st, &format!("layer{layer}.{n}")));
        let x = [&q, &k, &v].map(|d| Tensor::from_slice(&ctx, d, &shape).unwrap());
        let out = Tensor::<f32>::nan(&ctx, &shape)?;
        for (m, row) in methods.iter().zip(&mut rows) {
            let t = m.time(&ctx, &x, &out)?;
            let got = out.to_vec(&ctx)?;
            row.1.push(rel_frobenius(&got, &want));
            row.2 += t / 2.0;
        }
    }
    writeln!(
        md,
        "## MiniLM layers 0 and 5 (12 heads, L = 403, D = 32), non-causal\n\n\
         Relative Frobenius error against the stored float64 softmax output; GPU time is the \
         fastest of up to 5 runs, averaged over the two layers.\n\n\
         | method | error layer 0 | error layer 5 | GPU ms |\n|---|---|---|---|"
    )?;
    for (name, e, t) in &rows {
        writeln!(
            md,
            "| {name} | {:.3e} | {:.3e} | {:.2} |",
            e[0],
            e[1],
            t * 1e3
        )?;
    }

    // Part 2: time against L on random data.
    let sweep = [
        Method::Softmax,
        Method::Diag(64),
        Method::Norm,
        Method::Linear,
        Method::Lightning,
    ];
    let ls: Vec<usize> = [64usize, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
        .into_iter()
        .filter(|&l| l <= max_l)
        .collect();
    let bh: usize = flag("--bh")?.map_or(Ok(1), |s| s.parse())?;
    let d: usize = flag("--d")?.map_or(Ok(32), |s| s.parse())?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut times: Vec<Vec<Option<f64>>> = vec![vec![]; sweep.len()];
    let bar = indicatif::ProgressBar::new((ls.len() * sweep.len()) as u64);
    for &l in &ls {
        let shape = [bh, l, d];
        let x = [0, 1, 2].map(|_| {
            let data: Vec<f32> = (0..bh * l * d)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            Tensor::from_slice(&ctx, &data, &shape).unwrap()
        });
        let out = Tensor::<f32>::empty(&ctx, &shape)?;
        for (m, ts) in sweep.iter().zip(&mut times) {
            let skip = matches!(m, Method::Softmax) && ts.iter().flatten().any(|&t: &f64| t > 10.0);
            let t = if skip {
                None
            } else {
                Some(m.time(&ctx, &x, &out)?)
            };
            bar.println(format!(
                "L = {l:6} {:28} {:>12}",
                m.name(),
                t.map_or("skipped".into(), |t| format!("{:.2} ms", t * 1e3))
            ));
            bar.inc(1);
            ts.push(t);
        }
    }
    bar.finish_and_clear();
    writeln!(
        md,
        "\n## GPU time (ms) against L, random data, B·H = {bh}, D = {d}, non-causal (lightning causal)\n"
    )?;
    write!(md, "| L |")?;
    for m in &sweep {
        write!(md, " {} |", m.name())?;
    }
    write!(md, "\n|---|")?;
    for _ in &sweep {
        write!(md, "---|")?;
    }
    writeln!(md)?;
    for (i, l) in ls.iter().enumerate() {
        write!(md, "| {l} |")?;
        for ts in &times {
            match ts[i] {
                Some(t) => write!(md, " {:.2} |", t * 1e3)?,
                None => write!(md, " not run |")?,
            }
        }
        writeln!(md)?;
    }
    writeln!(md, "\n## Where each method overtakes exact softmax\n")?;
    for (m, ts) in sweep.iter().zip(&times).skip(1) {
        // The smallest L from which the method is faster at every measured L.
        let mut from = None;
        for (i, l) in ls.iter().enumerate().rev() {
            match (ts[i], times[0][i]) {
                (Some(t), Some(s)) if t < s => from = Some(*l),
                (_, None) => continue,
                _ => break,
            }
        }
        let line = match from {
            Some(l) => format!("- {}: faster than softmax from L = {l} on", m.name()),
            None => format!("- {}: not faster than softmax at the measured L", m.name()),
        };
        println!("{line}");
        writeln!(md, "{line}")?;
    }

    let md_path = format!("{out_dir}/transnormer_minilm.md");
    std::fs::write(&md_path, &md)?;
    println!("\n{md}\nwrote {md_path}");
    let series: Vec<plot::Series> = sweep
        .iter()
        .zip(&times)
        .map(|(m, ts)| plot::Series {
            name: m.name(),
            points: ls
                .iter()
                .zip(ts)
                .filter_map(|(&l, t)| t.map(|t| (l as f64, t * 1e3)))
                .collect(),
            ..Default::default()
        })
        .collect();
    let png = format!("{out_dir}/transnormer_minilm.png");
    plot::line_plot(
        &png,
        &plot::Axes {
            title: &format!("GPU time vs sequence length (B·H = {bh}, D = {d})"),
            x_label: "L",
            y_label: "ms",
            log_x: true,
            log_y: true,
        },
        &series,
    )?;
    println!("wrote {png}");
    Ok(())
}
