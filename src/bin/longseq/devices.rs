//! `--device`: which paths a command runs — `gpu` (wgpu), `cpu` (the f32 CPU path,
//! `longseq::cpu`), `reference` (the f64 checker), or a comma-separated list — with one
//! `<device>: <ms> ms (<note>)` line each and, when the reference ran, each other result's
//! difference to it against the stated tolerance (exit 3 past it). The default is
//! `gpu,reference` for every command; without a GPU adapter it becomes `cpu,reference` with a
//! one-line notice. `both` is another name for `gpu,reference`.
//!
//! The reference is skipped (one notice line) when its estimated time is past
//! [`check::REFERENCE_BOUND_S`] and it was not named: the default list and `both` skip it,
//! an explicit `reference` always runs, and so does `--force-reference`.

use std::str::FromStr;
use std::time::Instant;

use crate::check::{self, StorageDtype};
use crate::io::CliError;

/// The paths to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Devices {
    pub gpu: bool,
    pub cpu: bool,
    pub reference: bool,
    /// Given on the command line (no fallback when the GPU is missing).
    explicit: bool,
    /// `reference` was named (not implied by the default or `both`): never skipped for cost.
    reference_named: bool,
}

impl Default for Devices {
    fn default() -> Self {
        Self {
            gpu: true,
            cpu: false,
            reference: true,
            explicit: false,
            reference_named: false,
        }
    }
}

impl FromStr for Devices {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut d = Devices {
            gpu: false,
            cpu: false,
            reference: false,
            explicit: true,
            reference_named: false,
        };
        for name in s.split(',').map(str::trim) {
            match name {
                "gpu" => d.gpu = true,
                "cpu" => d.cpu = true,
                "reference" => (d.reference, d.reference_named) = (true, true),
                "both" => (d.gpu, d.reference) = (true, true),
                _ => {
                    return Err(format!(
                        "unknown device `{name}` (expected gpu, cpu, reference or a comma-separated list)"
                    ))
                }
            }
        }
        Ok(d)
    }
}

impl Devices {
    /// Opens the GPU context when `gpu` is asked for and prints the adapter. Without an adapter,
    /// the default falls back to the CPU path (one line on stderr); an explicit `gpu` is an error.
    pub fn open(&mut self) -> Result<Option<longseq::Context>, CliError> {
        if !self.gpu {
            return Ok(None);
        }
        match longseq::Context::new() {
            Ok(c) => {
                println!("adapter: {}", c.adapter_line());
                Ok(Some(c))
            }
            Err(e @ longseq::Error::NoAdapter { .. }) if !self.explicit => {
                eprintln!("{e}; running the CPU path instead");
                (self.gpu, self.cpu) = (false, true);
                Ok(None)
            }
            Err(e) => Err(CliError::Run(e.to_string())),
        }
    }

    /// Runs the f64 reference when it is in the list, unless it was not named, its estimate
    /// for `ops` multiply-adds is past the bound and `force` is off: then one notice line and
    /// None. A spinner shows while it runs; prints `reference: <ms> ms (<what>)`.
    pub fn reference<T>(
        &self,
        force: bool,
        ops: f64,
        what: &str,
        f: impl FnOnce() -> longseq::Result<T>,
    ) -> Result<Option<T>, CliError> {
        if !self.reference {
            return Ok(None);
        }
        let est = check::reference_seconds(ops);
        if !self.reference_named && est > check::REFERENCE_BOUND_S && !force {
            eprintln!(
                "notice: skipping the f64 reference ({what}, estimated {}); the results are not \
                 checked; --force-reference or --device ...,reference runs it",
                check::human(est)
            );
            return Ok(None);
        }
        let t = Instant::now();
        let r = check::with_spinner(
            est,
            &format!("{what} reference, est. {}", check::human(est)),
            f,
        )?;
        println!(
            "reference: {:.3} ms ({what})",
            t.elapsed().as_secs_f64() * 1e3
        );
        Ok(Some(r))
    }
}

/// Runs `f` once, printing `<device>: <ms> ms (<note>)`.
pub fn timed<R>(
    device: &str,
    note: &str,
    f: impl FnOnce() -> Result<R, CliError>,
) -> Result<R, CliError> {
    let t = Instant::now();
    let r = f()?;
    println!(
        "{device}: {:.3} ms ({note})",
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(r)
}

/// Runs `go` once to compile its pipelines, then times a second run, printing the `gpu:` line.
pub fn gpu_timed<R, E>(go: impl Fn() -> Result<R, E>) -> Result<R, CliError>
where
    CliError: From<E>,
{
    go()?;
    let t = Instant::now();
    let r = go()?;
    println!(
        "gpu: {:.3} ms (dispatch + readback, pipelines compiled beforehand)",
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(r)
}

/// `rayon`'s thread count, for the CPU path's timing line.
pub fn cpu_note() -> String {
    format!("f32 CPU path, {} threads", rayon::current_num_threads())
}

/// Compares the results that ran with the reference when it ran, one line each
/// (`gpu vs reference (<dtype> storage, …)`, `cpu vs reference (f32, …)`), and fails with exit
/// code 3 when any is past its tolerance. Returns the result to write: the GPU's, else the CPU
/// path's, else the reference's (None when nothing ran).
pub fn report(
    gpu: Option<(Vec<f64>, StorageDtype)>,
    cpu: Option<Vec<f64>>,
    reference: Option<Vec<f64>>,
) -> Result<Option<Vec<f64>>, CliError> {
    if let Some(r) = &reference {
        let g = gpu.as_ref().map(|(g, dtype)| {
            check::vs_reference("gpu", &format!("{} storage", dtype.name()), g, r, *dtype)
        });
        let c = cpu
            .as_ref()
            .map(|c| check::vs_reference("cpu", "f32", c, r, StorageDtype::F32));
        g.unwrap_or(Ok(()))?;
        c.unwrap_or(Ok(()))?;
    }
    Ok(gpu.map(|g| g.0).or(cpu).or(reference))
}
