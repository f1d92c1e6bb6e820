//! `--device`: which paths a command runs — `gpu` (wgpu), `cpu` (the f32 CPU path,
//! `longseq::cpu`), `reference` (the f64 checker), or a comma-separated list — with one
//! `<device>: <ms> ms` line each and, when the reference ran, each other result's difference to
//! it. The default is `gpu,reference`; without a GPU adapter it becomes `cpu,reference` with a
//! one-line notice. `both` is kept as another name for `gpu,reference`.

use std::str::FromStr;
use std::time::Instant;

use crate::io::CliError;

/// The paths to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Devices {
    pub gpu: bool,
    pub cpu: bool,
    pub reference: bool,
    /// Given on the command line (no fallback when the GPU is missing).
    explicit: bool,
}

impl Default for Devices {
    fn default() -> Self {
        Self {
            gpu: true,
            cpu: false,
            reference: true,
            explicit: false,
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
        };
        for name in s.split(',').map(str::trim) {
            match name {
                "gpu" => d.gpu = true,
                "cpu" => d.cpu = true,
                "reference" => d.reference = true,
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
    /// Opens the GPU context when `gpu` is asked for. Without an adapter, the default falls back
    /// to the CPU path (one line on stderr); an explicit `gpu` is an error.
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

/// The results of the paths that ran, compared with the reference when it ran; returns the one
/// to write out (GPU, else CPU path, else reference).
pub fn report(
    gpu: Option<Vec<f64>>,
    cpu: Option<Vec<f64>>,
    reference: Option<Vec<f64>>,
) -> Vec<f64> {
    if let Some(r) = &reference {
        for (name, x) in [("gpu", &gpu), ("cpu", &cpu)] {
            if let Some(x) = x {
                let (abs, rel) = crate::compare(x, r);
                println!("{name} vs reference: max abs diff {abs:.3e}, relative {rel:.3e}");
            }
        }
    }
    gpu.or(cpu).or(reference).expect("at least one device ran")
}

/// `rayon`'s thread count, for the CPU path's timing line.
pub fn cpu_note() -> String {
    format!("f32 CPU path, {} threads", rayon::current_num_threads())
}
