//! `longseq`: run the library's ops on tensors in safetensors files, on the GPU and the CPU
//! reference, and compare them. `longseq help <command>` documents each command's tensors.

mod attention;
mod devices;
mod discretize;
mod embed;
mod hippo;
mod hippo_approx;
mod io;
mod methods;
mod rope;
mod ssm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use io::CliError;

#[derive(Parser)]
#[command(
    name = "longseq",
    version,
    about = "Sub-quadratic sequence kernels on any GPU (wgpu), checked against a CPU reference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the adapter longseq picks (LONGSEQ_ADAPTER=substring chooses by name), its backend,
    /// device type, f16 support and the limits the ops use.
    Info,
    Attention(attention::Args),
    Embed(embed::Args),
    Rope(rope::Args),
    Hippo(hippo::Args),
    Discretize(discretize::Args),
    HippoApprox(hippo_approx::Args),
    Ssm(ssm::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Info => info(),
        Command::Attention(a) => attention::run(a),
        Command::Embed(a) => embed::run(a),
        Command::Rope(a) => rope::run(a),
        Command::Hippo(a) => hippo::run(a),
        Command::Discretize(a) => discretize::run(a),
        Command::HippoApprox(a) => hippo_approx::run(a),
        Command::Ssm(a) => ssm::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Input(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(CliError::Run(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
    }
}

fn info() -> Result<(), CliError> {
    let ctx = longseq::Context::new()?;
    println!("{}", ctx.describe());
    Ok(())
}

/// Opens the GPU context for `--device gpu|both`. With `both` and no adapter, says so in one line
/// and returns None so the command runs the CPU path alone.
pub fn open_gpu(device: Device) -> Result<Option<longseq::Context>, CliError> {
    if device == Device::Cpu {
        return Ok(None);
    }
    match longseq::Context::new() {
        Ok(c) => Ok(Some(c)),
        Err(e @ longseq::Error::NoAdapter { .. }) if device == Device::Both => {
            eprintln!("{e}; running the CPU path only");
            Ok(None)
        }
        Err(e) => Err(CliError::Run(e.to_string())),
    }
}

/// Where to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// GPU only (an error without an adapter).
    Gpu,
    /// CPU reference only (`reference` is another name for it).
    #[value(alias = "reference")]
    Cpu,
    /// Both, compared; CPU only (with a one-line notice) when there is no adapter.
    Both,
}

/// Largest absolute and normwise relative difference (max |a−b| / max |b|); NaN where the NaN
/// patterns differ.
pub fn compare(a: &[f64], b: &[f64]) -> (f64, f64) {
    let mut diff = 0.0f64;
    let mut scale = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        if x.is_nan() != y.is_nan() {
            return (f64::NAN, f64::NAN);
        }
        if x.is_nan() {
            continue;
        }
        diff = diff.max((x - y).abs());
        scale = scale.max(y.abs());
    }
    (diff, if scale > 0.0 { diff / scale } else { diff })
}

/// ‖a − b‖_F / ‖b‖_F.
pub fn rel_frobenius(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}
