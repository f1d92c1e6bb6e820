//! How well do linear-attention feature maps approximate real softmax attention? On the shipped
//! MiniLM capture (layers 0 and 5, 12 heads, L = 403, head dim 32), the relative Frobenius error
//! `‖O − O_softmax‖_F / ‖O_softmax‖_F` of elu1, relu and Performer FAVOR+ (orthogonal random
//! features, M ∈ {16 .. 1024}, mean ± std over 5 seeds), with the GPU time of each method.
//!
//! `cargo run --release --example performer_minilm [-- --out DIR]` writes DIR/performer_minilm.md
//! (the table) and DIR/performer_minilm.png (error vs M, ± std over the seeds); DIR defaults to
//! `longseq-out/`. `LONGSEQ_QUICK=1` runs M ≤ 64 and 2 seeds.

#[path = "common/args.rs"]
mod args;
#[path = "common/plot.rs"]
mod plot;

use std::fmt::Write as _;
use std::time::Instant;

use longseq::attention::{
    draw_omega, favor_attention, linear_attention, FavorKind, FavorOptions, FeatureMap,
    LinearAttentionOptions, OmegaDraw,
};
use longseq::{Context, Tensor};
use plot::{line_plot, Axes, Series};
use safetensors::SafeTensors;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/minilm_two_cities_qkv.safetensors"
);

fn read(st: &SafeTensors<'_>, name: &str) -> (Vec<f32>, Vec<usize>) {
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

fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, var.sqrt())
}

/// One row of the table: method, M (0 = none), errors per layer over seeds, GPU ms per run.
struct Row {
    method: String,
    m: usize,
    err: [Vec<f64>; 2],
    ms: Vec<f64>,
}

/// Runs `f` once to compile when `warm_up`, then times `reps` runs (submission, device work,
/// readback).
fn timed<T>(
    warm_up: bool,
    reps: usize,
    mut f: impl FnMut() -> longseq::Result<T>,
) -> longseq::Result<(T, f64)> {
    if warm_up {
        f()?;
    }
    let t = Instant::now();
    let mut out = f()?;
    for _ in 1..reps {
        out = f()?;
    }
    Ok((out, t.elapsed().as_secs_f64() * 1e3 / reps as f64))
}

fn main() -> std::process::ExitCode {
    args::main_with(run)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::var("LONGSEQ_QUICK").is_ok_and(|v| v == "1");
    let out_dir = args::Args::new().out_dir()?.display().to_string();
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.adapter_line());
    let bytes = std::fs::read(DATA)?;
    let st = SafeTensors::deserialize(&bytes)?;
    let ms_list: Vec<usize> = if quick {
        vec![16, 32, 64]
    } else {
        vec![16, 32, 64, 128, 256, 512, 1024]
    };
    let seeds: u64 = if quick { 2 } else { 5 };

    let mut rows: Vec<Row> = vec![];
    for fm in [FeatureMap::Elu1, FeatureMap::Relu] {
        rows.push(Row {
            method: fm.name().into(),
            m: 0,
            err: [vec![], vec![]],
            ms: vec![],
        });
    }
    for &m in &ms_list {
        rows.push(Row {
            method: "FAVOR+".into(),
            m,
            err: [vec![], vec![]],
            ms: vec![],
        });
    }
    let bar = indicatif::ProgressBar::new(2 * rows.len() as u64);
    for (li, layer) in ["layer0.", "layer5."].into_iter().enumerate() {
        let (q, shape) = read(&st, &format!("{layer}q"));
        let (k, _) = read(&st, &format!("{layer}k"));
        let (v, _) = read(&st, &format!("{layer}v"));
        let (exact, _) = read(&st, &format!("{layer}softmax_out"));
        let dk = shape[2];
        let tq = Tensor::from_slice(&ctx, &q, &shape)?;
        let tk = Tensor::from_slice(&ctx, &k, &shape)?;
        let tv = Tensor::from_slice(&ctx, &v, &shape)?;
        for row in rows.iter_mut() {
            if row.m == 0 {
                let opts = LinearAttentionOptions {
                    feature_map: row.method.parse().map_err(|e: String| e)?,
                    ..Default::default()
                };
                let (o, ms) = timed(true, 3, || {
                    linear_attention(&ctx, &tq, &tk, &tv, &opts)?.to_vec(&ctx)
                })?;
                row.err[li].push(rel_frobenius(&o, &exact));
                row.ms.push(ms);
            } else {
                for seed in 0..seeds {
                    let w = draw_omega(row.m, dk, OmegaDraw::OrthogonalChi, seed)?;
                    let tw = Tensor::from_slice(&ctx, &w, &[row.m, dk])?;
                    let opts = FavorOptions {
                        kind: FavorKind::Positive,
                        causal: false,
                    };
                    let (o, ms) = timed(seed == 0, 1, || {
                        favor_attention(&ctx, &tq, &tk, &tv, &tw, &opts)?.to_vec(&ctx)
                    })?;
                    row.err[li].push(rel_frobenius(&o, &exact));
                    row.ms.push(ms);
                }
            }
            let (e, s) = mean_std(&row.err[li]);
            bar.println(format!(
                "{layer} {} M={}: error {e:.4} ± {s:.4}",
                row.method, row.m
            ));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let mut md = String::new();
    writeln!(
        md,
        "# Linear-attention approximations of softmax attention on MiniLM\n\n\
         Relative Frobenius error `‖O − O_softmax‖_F / ‖O_softmax‖_F` against the exact softmax \
         output stored with the data (all-MiniLM-L6-v2 on *A Tale of Two Cities*, 12 heads, \
         L = 403, head dim 32, non-causal). FAVOR+: positive random features with orthogonal \
         ω (chi norms), mean ± std over {seeds} seeds. GPU time: one call (12 heads) including \
         readback, mean over runs, on `{}`.\n",
        ctx.adapter_line()
    )?;
    writeln!(
        md,
        "| method | M | layer 0 error | layer 5 error | GPU time (ms) |"
    )?;
    writeln!(md, "|---|---:|---|---|---:|")?;
    for r in &rows {
        let cell = |x: &[f64]| {
            let (m, s) = mean_std(x);
            if x.len() > 1 {
                format!("{m:.4} ± {s:.4}")
            } else {
                format!("{m:.4}")
            }
        };
        let m = if r.m == 0 {
            "–".into()
        } else {
            r.m.to_string()
        };
        writeln!(
            md,
            "| {} | {m} | {} | {} | {:.1} |",
            r.method,
            cell(&r.err[0]),
            cell(&r.err[1]),
            mean_std(&r.ms).0
        )?;
    }
    let md_path = format!("{out_dir}/performer_minilm.md");
    std::fs::write(&md_path, &md)?;
    print!("\n{md}");

    let (x0, x1) = (ms_list[0] as f64, *ms_list.last().unwrap() as f64);
    let mut series = vec![];
    for (li, name) in ["layer 0", "layer 5"].into_iter().enumerate() {
        series.push(Series {
            name: format!("FAVOR+ {name} (mean of {seeds} seeds)"),
            points: rows
                .iter()
                .filter(|r| r.m > 0)
                .map(|r| (r.m as f64, mean_std(&r.err[li]).0))
                .collect(),
            std: rows
                .iter()
                .filter(|r| r.m > 0)
                .map(|r| mean_std(&r.err[li]).1)
                .collect(),
        });
        for r in rows.iter().filter(|r| r.m == 0) {
            let e = r.err[li][0];
            series.push(Series {
                name: format!("{} {name} (no M)", r.method),
                points: vec![(x0, e), (x1, e)],
                ..Default::default()
            });
        }
    }
    let png = format!("{out_dir}/performer_minilm.png");
    line_plot(
        &png,
        &Axes {
            title: "MiniLM: error vs exact softmax attention",
            x_label: "random features M",
            y_label: "relative Frobenius error",
            log_x: true,
            log_y: false,
        },
        &series,
    )?;
    println!("wrote {md_path} and {png}");
    Ok(())
}
