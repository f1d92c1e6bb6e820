//! `longseq hippo-approx`: the HiPPO online memory of a CSV column.

use std::time::Instant;

use longseq::ssm::series::{csv_column, fill, Fill};
use longseq::ssm::{
    hippo_approx, reconstruct, sample_grid, HippoApproxOptions, Measure, Method, Step,
};
use longseq::Tensor;

use crate::check::StorageDtype;
use crate::devices::{self, Devices};
use crate::io::{self, CliError, Out};

/// Stream a CSV column through the HiPPO memory (Gu et al. 2020) and reconstruct it.
///
/// The shipped CO₂ series has 59 missing weeks: without --fill linear that is an input error
/// (exit 2) naming the first one. GPU and reference further apart than 1e-4 exit with code 3.
/// legs uses the scaled step 1/k (memory of the whole history); legt, lagt and fout use a fixed
/// step --dt (time unit of --theta; default 1/L, the series spanning time 1). Missing values are
/// an error unless --fill linear. Prints the reconstruction error from the last coefficients.
/// Writes tensors:
///   f      [L] f64     the series as used (after filling)
///   c      [L, N] f32  the coefficients after each sample (the GPU's, else the CPU path's,
///                      else the reference's)
///   recon  [L] f64     f reconstructed from c[L−1] at every sample time (0 outside the measure's
///                      support, e.g. before the window of legt and fout)
#[derive(clap::Args)]
#[command(
    verbatim_doc_comment,
    allow_negative_numbers = true,
    after_help = "Example (shipped data, from the repository root):\n  \
longseq hippo-approx --csv data/co2_mauna_loa_weekly.csv --column co2 --fill linear --n 32 --measure legt --theta 0.1 --output co2.safetensors"
)]
pub struct Args {
    /// CSV file with a header line.
    #[arg(long)]
    csv: String,
    /// Column to read.
    #[arg(long)]
    column: String,
    /// State size N >= 1.
    #[arg(long)]
    n: usize,
    /// legs, legt, lagt or fout.
    #[arg(long, default_value = "legs")]
    measure: String,
    /// Window θ of legt and fout.
    #[arg(long, default_value_t = 1.0)]
    theta: f64,
    /// Fixed step for legt, lagt, fout (and legs, to make it time-invariant); default 1/L.
    #[arg(long)]
    dt: Option<f64>,
    /// bilinear, euler, backward-euler (and zoh with a fixed step).
    #[arg(long, default_value = "bilinear")]
    method: String,
    /// Missing values: error or linear (interpolate).
    #[arg(long, default_value = "error")]
    fill: String,
    /// Where to run: gpu, cpu (the f32 CPU path), reference (f64), or a comma-separated list
    /// (default gpu,reference; cpu,reference when there is no GPU adapter; both = gpu,reference).
    /// The reference does an N×N solve per step for legs: slow for large N, skipped past the
    /// time bound unless named or --force-reference.
    #[arg(long)]
    device: Option<Devices>,
    /// Run the f64 reference even when its estimated time is past the bound.
    #[arg(long)]
    force_reference: bool,
    /// safetensors file to write.
    #[arg(long)]
    output: String,
}

pub fn run(a: Args) -> Result<(), CliError> {
    io::check_output(Some(&a.output))?;
    let text = std::fs::read_to_string(&a.csv)
        .map_err(|e| CliError::Input(format!("cannot read {}: {e}", a.csv)))?;
    let raw = csv_column(&text, &a.column)?;
    let f = fill(&raw, Fill::parse(&a.fill)?)?;
    let l = f.len();
    if l == 0 {
        return Err(CliError::Input(format!("column {:?} is empty", a.column)));
    }
    let measure = Measure::parse(&a.measure)?;
    let step = match (measure, a.dt) {
        (_, Some(dt)) => Step::Fixed(dt),
        (Measure::LegS, None) => Step::Scaled,
        (_, None) => Step::Fixed(1.0 / l as f64),
    };
    let opts = HippoApproxOptions {
        n: a.n,
        measure,
        theta: a.theta,
        step,
        method: Method::parse(&a.method)?,
    };
    let missing = raw.iter().filter(|v| v.is_none()).count();
    println!(
        "{}: column {}, L = {l} ({missing} filled), {} N = {}, step {}, {}",
        a.csv,
        a.column,
        a.measure.to_lowercase(),
        a.n,
        match step {
            Step::Scaled => "1/k".to_string(),
            Step::Fixed(dt) => dt.to_string(),
        },
        a.method.to_lowercase()
    );
    let f32s: Vec<f32> = f.iter().map(|&x| x as f32).collect();
    let mut dev = a.device.unwrap_or_default();
    let ctx = dev.open()?;
    let gpu = match &ctx {
        Some(ctx) => {
            let t = Instant::now();
            let tf = Tensor::from_slice(ctx, &f32s, &[l])?;
            let c = hippo_approx(ctx, &tf, &opts)?.to_vec(ctx)?;
            println!(
                "gpu: {:.1} ms (upload, run, readback)",
                t.elapsed().as_secs_f64() * 1e3
            );
            Some(c)
        }
        None => None,
    };
    let (lf, nf) = (l as f64, a.n as f64);
    let ops = match step {
        Step::Scaled => lf * nf * nf * nf / 3.0,
        _ => lf * nf * nf * 2.0,
    };
    let reference_run = || longseq::reference::ssm::hippo_approx(&f32s, &[l], &opts);
    let cpu = if dev.cpu {
        let c = devices::timed("cpu", &devices::cpu_note(), || {
            Ok(longseq::cpu::ssm::hippo_approx(&f32s, &[l], &opts)?)
        })?;
        Some(c.into_iter().map(f64::from).collect())
    } else {
        None
    };
    let reference = dev.reference(a.force_reference, ops, "f64", reference_run)?;
    let gpu: Option<Vec<f64>> = gpu.map(|g| g.iter().map(|&x| x as f64).collect());
    // Overflow is the method's, not a GPU fault: say so before comparing.
    for c in gpu.iter().chain(&cpu).chain(&reference) {
        if let Some(i) = c.iter().position(|x| !x.is_finite()) {
            return Err(CliError::Run(format!(
                "the memory left the f32/f64 range at sample {} (forward Euler with the scaled \
                 step grows like a binomial for N beyond ~30); use --method bilinear",
                i / a.n
            )));
        }
    }
    let Some(c) = devices::report(gpu.map(|g| (g, StorageDtype::F32)), cpu, reference)? else {
        return Err(CliError::Run(
            "nothing ran: no GPU, and the reference was skipped".into(),
        ));
    };
    let (xs, t) = sample_grid(step, l);
    let recon = reconstruct(measure, a.theta, &c[(l - 1) * a.n..], t, &xs)?;
    let (mut se, mut max, mut cnt) = (0.0, 0.0f64, 0usize);
    for (x, (r, y)) in xs.iter().zip(recon.iter().zip(&f)) {
        let inside = match measure {
            Measure::LegT | Measure::FouT => *x >= t - a.theta,
            _ => true,
        };
        if inside {
            se += (r - y) * (r - y);
            max = max.max((r - y).abs());
            cnt += 1;
        }
    }
    println!(
        "reconstruction from c[L-1] over {cnt} samples: RMSE {:.4}, max abs error {max:.4}",
        (se / cnt.max(1) as f64).sqrt()
    );
    let c32: Vec<f32> = c.iter().map(|&x| x as f32).collect();
    io::write(
        &a.output,
        vec![
            ("f", vec![l], Out::F64(f)),
            ("c", vec![l, a.n], Out::F32(c32)),
            ("recon", vec![l], Out::F64(recon)),
        ],
    )?;
    println!(
        "wrote f [{l}], c [{l}, {}] f32, recon [{l}] to {}",
        a.n, a.output
    );
    Ok(())
}
