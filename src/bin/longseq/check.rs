//! What every command shares around a run: the GPU storage dtype (chosen from the file unless
//! given), f16 range checks, the GPU-vs-reference comparison with its per-dtype tolerance (exit 3
//! past it), and the f64 reference's cost estimate (skipped with a notice past a bound, a spinner
//! while it runs).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::compare;
use crate::io::CliError;

static TOLERANCE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

/// `--tolerance`: replaces every dtype's tolerance for this run.
pub fn set_tolerance(t: f64) {
    let _ = TOLERANCE.set(t);
}

/// GPU storage dtype; arithmetic is f32 either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageDtype {
    F32,
    F16,
}

impl StorageDtype {
    /// `f32` or `f16`.
    pub fn name(self) -> &'static str {
        match self {
            StorageDtype::F32 => "f32",
            StorageDtype::F16 => "f16",
        }
    }

    /// Largest accepted max |gpu − ref| / max |ref|. f32: f32 arithmetic over long sums
    /// (softmax, scans) loses a few digits; f16: the output itself is rounded to 2⁻¹¹, plus f16
    /// intermediates. The reference runs on the inputs as stored on the GPU (f16-rounded for f16),
    /// so input rounding is not part of the difference.
    pub fn tolerance(self) -> f64 {
        if let Some(t) = TOLERANCE.get() {
            return *t;
        }
        match self {
            StorageDtype::F32 => 1e-4,
            StorageDtype::F16 => 5e-3,
        }
    }

    /// `--dtype` when given, else f16 when every input tensor is stored in f16, else f32.
    pub fn resolve(given: Option<Self>, inputs: &[safetensors::Dtype]) -> Self {
        given.unwrap_or(
            if !inputs.is_empty() && inputs.iter().all(|d| *d == safetensors::Dtype::F16) {
                StorageDtype::F16
            } else {
                StorageDtype::F32
            },
        )
    }

    /// The values as the GPU will store them: f32 as given; for f16, rounded to f16 (so the
    /// reference sees the same numbers), an input error when a finite value is beyond f16's
    /// range (it would turn into ±Inf and NaN downstream).
    pub fn storable(self, name: &str, x: Vec<f32>) -> Result<Vec<f32>, CliError> {
        match self {
            StorageDtype::F32 => Ok(x),
            StorageDtype::F16 => {
                let max = half::f16::MAX.to_f32();
                if let Some(i) = x.iter().position(|v| v.is_finite() && v.abs() > max) {
                    return Err(CliError::Input(format!(
                        "`{name}` holds {} at flat index {i}, beyond f16's range (±{max}); \
                         use --dtype f32 or rescale the input",
                        x[i]
                    )));
                }
                Ok(x.into_iter()
                    .map(|v| half::f16::from_f32(v).to_f32())
                    .collect())
            }
        }
    }
}

/// Prints `<name> vs reference (<what>, tolerance …): …` and fails with exit code 3 past the
/// dtype's tolerance (a differing NaN/±Inf pattern always fails).
pub fn vs_reference(
    name: &str,
    what: &str,
    x: &[f64],
    reference: &[f64],
    dtype: StorageDtype,
) -> Result<(), CliError> {
    let (abs, rel) = compare(x, reference);
    let tol = dtype.tolerance();
    println!(
        "{name} vs reference ({what}, tolerance {tol:.0e} on max|diff|/max|ref|): max abs diff {abs:.3e}, relative {rel:.3e}"
    );
    if rel <= tol {
        Ok(())
    } else {
        let why = if rel.is_nan() {
            "their NaN/Inf patterns differ".to_string()
        } else {
            format!("relative difference {rel:.3e} > tolerance {tol:.0e}")
        };
        Err(CliError::Mismatch(format!(
            "{name} ({what}) and f64 reference disagree: {why}; no output written"
        )))
    }
}

/// f64 reference operations per second assumed for the cost estimate (measured on the reference
/// kernels, one core of a 2020s x86 CPU, release build; debug builds are ~4× slower).
const REFERENCE_RATE: f64 = if cfg!(debug_assertions) { 1.0e8 } else { 4.0e8 };

/// Past this estimate the default devices (and `both`) skip the reference, with a notice,
/// unless it is named or forced.
pub const REFERENCE_BOUND_S: f64 = 20.0;

/// Work this long (estimated) shows a spinner with elapsed time on a terminal.
const SPINNER_AFTER_S: f64 = 2.0;

/// The estimated seconds of an f64 reference doing `ops` multiply-adds.
pub fn reference_seconds(ops: f64) -> f64 {
    ops / REFERENCE_RATE
}

/// Runs `f` with a spinner on stderr (elapsed time, `msg`) when `est_s` is over a couple of
/// seconds; indicatif draws nothing when stderr is not a terminal.
pub fn with_spinner<T>(est_s: f64, msg: &str, f: impl FnOnce() -> T) -> T {
    if est_s < SPINNER_AFTER_S {
        return f();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    let r = f();
    pb.finish_and_clear();
    r
}

/// 0.4 s, 12 s, 3.5 min, 2.1 h.
pub fn human(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}
