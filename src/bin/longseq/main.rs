//! `longseq`: run the library's ops on tensors in safetensors files, on the GPU and the CPU
//! reference, and compare them. `longseq help <command>` documents each command's tensors and
//! shows one line that runs it on the data shipped in `data/`.

mod attention;
mod check;
mod devices;
mod discretize;
mod embed;
mod hippo;
mod hippo_approx;
mod io;
mod mamba;
mod methods;
mod rope;
mod ssd;
mod ssm;
mod ssm_batch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use io::CliError;

#[derive(Parser)]
#[command(
    name = "longseq",
    version,
    about = "Sub-quadratic sequence kernels on any GPU (wgpu), checked against a CPU reference",
    allow_negative_numbers = true,
    after_help = "Exit codes: 0 success, 1 run failure (device), 2 bad input or options, \
                  3 GPU and reference disagree beyond the stated tolerance."
)]
struct Cli {
    /// Override the per-dtype tolerance of the GPU-vs-reference check (max|diff| / max|ref|;
    /// default 1e-4 for f32 storage, 5e-3 for f16).
    #[arg(long, global = true, value_name = "T")]
    tolerance: Option<f64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter (name, backend, device type) and describe the one longseq picks:
    /// LONGSEQ_ADAPTER="llvmpipe vulkan" picks by name and/or backend (every word must match).
    Info,
    Attention(attention::Args),
    Embed(embed::Args),
    Rope(rope::Args),
    Hippo(hippo::Args),
    Discretize(discretize::Args),
    HippoApprox(hippo_approx::Args),
    Ssm(ssm::Args),
    Mamba(mamba::Args),
    Ssd(ssd::Args),
}

/// Without `XDG_RUNTIME_DIR` (a fresh shell, ssh, CI), EGL's Wayland probe in wgpu's GL backend
/// prints "error: XDG_RUNTIME_DIR is invalid or not set" while adapters are listed, which reads
/// as a failure. The CLI is headless and needs no compositor, so it points the variable at a
/// private empty directory of its own first (Linux only; the library never touches it).
#[cfg(target_os = "linux")]
fn quiet_gl_probe() {
    use std::os::unix::fs::PermissionsExt;
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    let name = match std::env::var("USER") {
        Ok(u) if !u.is_empty() => format!("longseq-runtime-{u}"),
        _ => "longseq-runtime".to_string(),
    };
    let dir = std::env::temp_dir().join(name);
    let private = std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)));
    if private.is_ok() {
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
    }
}

#[cfg(not(target_os = "linux"))]
fn quiet_gl_probe() {}

fn main() -> ExitCode {
    quiet_gl_probe();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    if let Some(t) = cli.tolerance {
        if t.is_nan() || t < 0.0 {
            eprintln!("error: --tolerance {t}: must be a number >= 0");
            return ExitCode::from(2);
        }
        check::set_tolerance(t);
    }
    let r = match cli.command {
        Command::Info => info(),
        Command::Attention(a) => attention::run(a),
        Command::Embed(a) => embed::run(a),
        Command::Rope(a) => rope::run(a),
        Command::Hippo(a) => hippo::run(a),
        Command::Discretize(a) => discretize::run(a),
        Command::HippoApprox(a) => hippo_approx::run(a),
        Command::Ssm(a) => ssm::run(a),
        Command::Mamba(a) => mamba::run(a),
        Command::Ssd(a) => ssd::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.code())
        }
    }
}

/// Help and version print in full; a usage error is its first line (clap's "error: …") and exit
/// code 2, not a usage dump.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let text = e.render().to_string();
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    eprintln!("{} (see --help)", line.trim_end());
    ExitCode::from(2)
}

fn info() -> Result<(), CliError> {
    let all = longseq::Context::adapters();
    if all.is_empty() {
        return Err(CliError::Run(
            longseq::Error::NoAdapter {
                detail: String::new(),
            }
            .to_string(),
        ));
    }
    println!("adapters ({}):", all.len());
    for i in &all {
        println!("  {}", longseq::Context::info_line(i));
    }
    let ctx = longseq::Context::new()?;
    println!("picked:\n{}", ctx.describe());
    Ok(())
}

/// Largest absolute and normwise relative difference (max |a−b| / max |b|); NaN where the NaN
/// patterns differ or where one side is ±Inf and the other is not the same infinity.
pub fn compare(a: &[f64], b: &[f64]) -> (f64, f64) {
    let mut diff = 0.0f64;
    let mut scale = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        if x.is_nan() != y.is_nan() || (x.is_infinite() || y.is_infinite()) && x != y {
            return (f64::NAN, f64::NAN);
        }
        if !x.is_finite() {
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
