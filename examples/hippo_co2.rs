//! HiPPO online function approximation on the real Mauna Loa CO₂ series (weekly, 1958-2001,
//! L = 2284, 59 weeks missing): the GPU streams the series through the LegS memory (the whole
//! history, step 1/k) and the LegT memory (a sliding 5-year window, step 1 week) with N ∈ {16, 64,
//! 256}, then reconstructs the series from the last coefficients alone. Prints a table of
//! reconstruction errors and writes three PNG plots of signal vs reconstruction.
//!
//! `cargo run --release --example hippo_co2 -- --fill linear [--out DIR]` writes
//! DIR/hippo_co2_{legs,legt,legs_zoom}.png (DIR defaults to `longseq-out/`).
//! Without `--fill linear` the missing weeks are an error (one sentence, exit code 2), as they
//! should be.

#[path = "common/args.rs"]
mod args;
#[path = "common/plot.rs"]
mod plot;

use std::time::Instant;

use longseq::ssm::series::{csv_column, fill, Fill};
use longseq::ssm::{
    hippo_approx, reconstruct, sample_grid, HippoApproxOptions, Measure, Method, Step,
};
use longseq::{reference, Context, Tensor};
use plot::{line_plot, Axes, Series};

const CSV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/co2_mauna_loa_weekly.csv");
const WINDOW_WEEKS: f64 = 260.0;

/// YYYYMMDD -> decimal year.
fn year(d: f64) -> f64 {
    let d = d as u64;
    let (y, m, day) = (d / 10000, d / 100 % 100, d % 100);
    y as f64 + (m as f64 - 1.0) / 12.0 + (day as f64 - 1.0) / 365.25
}

struct Row {
    label: String,
    n: usize,
    samples: usize,
    rmse: f64,
    max: f64,
    rmse_late: f64,
    gpu_ms: f64,
    recon: Vec<f64>,
}

fn main() -> std::process::ExitCode {
    args::main_with(run)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = args::Args::new();
    let fill_mode = match args.value("--fill")? {
        Some(v) => Fill::parse(&v)?,
        None => Fill::Error,
    };
    let out = args.out_dir()?;
    let text = std::fs::read_to_string(CSV)?;
    let raw = csv_column(&text, "co2")?;
    let dates = fill(&csv_column(&text, "date")?, Fill::Error)?;
    let f = fill(&raw, fill_mode).map_err(|e| {
        format!(
            "{e}; the series has missing weeks: run with `-- --fill linear` to interpolate them"
        )
    })?;
    let l = f.len();
    let years: Vec<f64> = dates.iter().map(|&d| year(d)).collect();
    let missing = raw.iter().filter(|v| v.is_none()).count();

    let ctx = Context::new()?;
    println!("adapter: {}", ctx.adapter_line());
    println!(
        "Mauna Loa CO2, weekly {:.1}..{:.1}: L = {l}, {missing} missing weeks filled linearly",
        years[0],
        years[l - 1]
    );
    let f32s: Vec<f32> = f.iter().map(|&x| x as f32).collect();
    let tf = Tensor::from_slice(&ctx, &f32s, &[l])?;

    let mut rows = vec![];
    let bar = indicatif::ProgressBar::new(6);
    for (measure, step) in [
        (Measure::LegS, Step::Scaled),
        (Measure::LegT, Step::Fixed(1.0)),
    ] {
        for n in [16, 64, 256] {
            let opts = HippoApproxOptions {
                n,
                measure,
                theta: WINDOW_WEEKS,
                step,
                method: Method::Bilinear,
            };
            hippo_approx(&ctx, &tf, &opts)?; // compiles the pipeline
            let t = Instant::now();
            let c = hippo_approx(&ctx, &tf, &opts)?.to_vec(&ctx)?;
            let gpu_ms = t.elapsed().as_secs_f64() * 1e3;
            if n == 16 {
                // The f64 reference (dense per-step solves) is affordable at N = 16.
                let want = reference::ssm::hippo_approx(&f32s, &[l], &opts)?;
                let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
                let diff = c
                    .iter()
                    .zip(&want)
                    .fold(0.0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
                bar.println(format!(
                    "{} N=16: GPU vs f64 reference, relative {:.2e}",
                    if measure == Measure::LegS {
                        "LegS"
                    } else {
                        "LegT"
                    },
                    diff / scale
                ));
            }
            let last: Vec<f64> = c[(l - 1) * n..].iter().map(|&x| x as f64).collect();
            let (xs, t_end) = sample_grid(step, l);
            let recon = reconstruct(measure, WINDOW_WEEKS, &last, t_end, &xs)?;
            let inside: Vec<usize> = (0..l)
                .filter(|&i| measure == Measure::LegS || xs[i] >= t_end - WINDOW_WEEKS)
                .collect();
            let se: f64 = inside.iter().map(|&i| (recon[i] - f[i]).powi(2)).sum();
            // LegS's bilinear start-up transient lives in the first samples: also score after it.
            let late: Vec<usize> = inside.iter().copied().filter(|&i| i >= l / 20).collect();
            let se_late: f64 = late.iter().map(|&i| (recon[i] - f[i]).powi(2)).sum();
            let max = inside
                .iter()
                .fold(0.0f64, |m, &i| m.max((recon[i] - f[i]).abs()));
            rows.push(Row {
                label: match measure {
                    Measure::LegS => "LegS (whole history)".into(),
                    _ => format!("LegT ({WINDOW_WEEKS} weeks)"),
                },
                n,
                samples: inside.len(),
                rmse: (se / inside.len() as f64).sqrt(),
                max,
                rmse_late: (se_late / late.len() as f64).sqrt(),
                gpu_ms,
                recon,
            });
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    println!("\nreconstruction of the series from the last coefficient vector c[L-1] alone");
    println!(
        "| memory               |   N | samples | RMSE (ppm) | max error (ppm) | RMSE after first 5% | GPU ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {:<20} | {:>3} | {:>7} | {:>10.3} | {:>15.3} | {:>19.3} | {:>6.1} |",
            r.label, r.n, r.samples, r.rmse, r.max, r.rmse_late, r.gpu_ms
        );
    }

    let signal = |lo: usize| Series {
        name: "CO2 (filled)".into(),
        points: (lo..l).map(|i| (years[i], f[i])).collect(),
        ..Default::default()
    };
    let skip = l / 20;
    let zoom = l - 6 * 52;
    let mut legs = vec![signal(skip)];
    let mut legs_zoom = vec![signal(zoom)];
    let mut legt = vec![signal(l - WINDOW_WEEKS as usize)];
    for r in &rows {
        let series = |lo: usize| Series {
            name: format!("N = {}", r.n),
            points: (lo..l).map(|i| (years[i], r.recon[i])).collect(),
            ..Default::default()
        };
        if r.label.starts_with("LegS") {
            legs.push(series(skip));
            legs_zoom.push(series(zoom));
        } else {
            legt.push(series(l - WINDOW_WEEKS as usize));
        }
    }
    let p1 = out.join("hippo_co2_legs.png").display().to_string();
    line_plot(
        &p1,
        &Axes {
            title:
                "HiPPO-LegS memory of Mauna Loa CO2, reconstructed from c[L-1] (first 5% not shown)",
            x_label: "year",
            y_label: "CO2 (ppm)",
            log_x: false,
            log_y: false,
        },
        &legs,
    )?;
    let p2 = out.join("hippo_co2_legt.png").display().to_string();
    line_plot(
        &p2,
        &Axes {
            title: "HiPPO-LegT memory, last 5 years (260-week window), reconstructed from c[L-1]",
            x_label: "year",
            y_label: "CO2 (ppm)",
            log_x: false,
            log_y: false,
        },
        &legt,
    )?;
    let p3 = out.join("hippo_co2_legs_zoom.png").display().to_string();
    line_plot(
        &p3,
        &Axes {
            title:
                "HiPPO-LegS memory of 44 years, its last 6 years: the seasonal cycle needs large N",
            x_label: "year",
            y_label: "CO2 (ppm)",
            log_x: false,
            log_y: false,
        },
        &legs_zoom,
    )?;
    println!("\nwrote {p1}, {p2} and {p3}");
    Ok(())
}
