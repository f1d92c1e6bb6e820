//! `longseq ssm`: the S4D kernel, FFT convolution or scan from a safetensors file.

use std::time::Instant;

use longseq::reference::ssm as rs;
use longseq::ssm::{causal_conv, s4d_kernel, s4d_scan, DiagonalSsm, Discretization};
use longseq::{Context, Tensor};
use num_complex::Complex64;

use crate::devices::{self, Devices};
use crate::io::{self, CliError, Out};

/// A diagonal (S4D) state-space model over tensors in a safetensors file, on the GPU and/or the
/// CPU reference (f64).
///
/// Reads (f16, f32 or f64):
///   A_re, A_im, B_re, B_im, C_re, C_im  [H, N2]  diagonal complex A, B, C in conjugate-pair
///                                                storage (state size N = 2·N2; each stored mode
///                                                stands for itself and its conjugate)
///   dt                                  [H]      step Δ per head (> 0)
///   D                                   [H]      skip term
///   u                                   [B, H, L] input (modes conv and scan; in mode kernel only
///                                                its L is used, or pass --len)
/// Writes (f32):
///   K  [H, L]     mode kernel: K[h, l] = 2 Re Σ_n C_n B̄_n Ā_n^l
///   y  [B, H, L]  mode conv: y = K ∗ u + D·u by FFT; mode scan: the recurrence
///                 x_t = Ā x_{t−1} + B̄ u_t, y_t = 2 Re Σ_n C_n x_t + D u_t by parallel scan
/// Prints each device's time and, when the reference ran, each result's max-abs and normwise
/// relative difference to it. A missing
/// tensor or a shape mismatch exits with code 2.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// safetensors file holding the input tensors.
    #[arg(long)]
    input: String,
    /// What to compute.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Discretisation of (A, B) with step dt.
    #[arg(long, value_enum, default_value = "zoh")]
    discretization: Disc,
    /// Kernel length L for mode kernel when the file has no `u`.
    #[arg(long)]
    len: Option<usize>,
    /// Where to run: gpu, cpu (the f32 CPU path), reference (f64), or a comma-separated list
    /// (default gpu,reference; cpu,reference when there is no GPU adapter).
    #[arg(long)]
    device: Option<Devices>,
    /// Where to write `K` or `y`.
    #[arg(long)]
    output: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// The S4D convolution kernel K [H, L].
    Kernel,
    /// y = K ∗ u + D·u through the FFT.
    Conv,
    /// y from the recurrence, by parallel associative scan.
    Scan,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Disc {
    /// Zero-order hold: Ā = exp(ΔA), B̄ = (exp(ΔA) − 1)/A · B.
    Zoh,
    /// Bilinear: Ā = (1 − ΔA/2)⁻¹(1 + ΔA/2), B̄ = (1 − ΔA/2)⁻¹ ΔB.
    Bilinear,
}

fn shape_err(name: &str, got: &[usize], want: &str) -> CliError {
    CliError::Input(format!(
        "tensor `{name}` has shape {got:?}, expected {want}"
    ))
}

pub fn run(a: Args) -> Result<(), CliError> {
    let bytes = io::read_file(&a.input)?;
    let st = io::parse(&bytes, &a.input)?;
    let rd = |n: &str| io::read(&st, n, &a.input);
    let a_re = rd("A_re")?;
    if a_re.shape.len() != 2 || a_re.shape.contains(&0) {
        return Err(shape_err("A_re", &a_re.shape, "[H, N2]"));
    }
    let (h, n2) = (a_re.shape[0], a_re.shape[1]);
    let mut parts = vec![a_re];
    for n in ["A_im", "B_re", "B_im", "C_re", "C_im"] {
        let t = rd(n)?;
        if t.shape != [h, n2] {
            return Err(shape_err(n, &t.shape, &format!("[{h}, {n2}] ([H, N2])")));
        }
        parts.push(t);
    }
    let (dt, d) = (rd("dt")?, rd("D")?);
    for (n, t) in [("dt", &dt), ("D", &d)] {
        if t.shape != [h] {
            return Err(shape_err(n, &t.shape, &format!("[{h}] ([H])")));
        }
    }
    let u = match rd("u") {
        Ok(u) => {
            if u.shape.len() != 3 || u.shape[1] != h || u.shape.contains(&0) {
                return Err(shape_err("u", &u.shape, &format!("[B, {h}, L]")));
            }
            Some(u)
        }
        Err(e) if a.mode != Mode::Kernel => return Err(e),
        Err(_) => None,
    };
    let len = match (a.len, &u) {
        (Some(l), _) if a.mode == Mode::Kernel => l,
        (_, Some(u)) => u.shape[2],
        _ => {
            return Err(CliError::Input(
                "mode kernel without `u` needs --len".into(),
            ))
        }
    };
    if len == 0 {
        return Err(CliError::Input("L must be >= 1".into()));
    }
    let cz = |re: &io::HostTensor, im: &io::HostTensor| -> Vec<Complex64> {
        re.data
            .iter()
            .zip(&im.data)
            .map(|(&x, &y)| Complex64::new(x, y))
            .collect()
    };
    let m = rs::DiagonalSsm {
        h,
        n2,
        a: cz(&parts[0], &parts[1]),
        b: cz(&parts[2], &parts[3]),
        c: cz(&parts[4], &parts[5]),
        dt: dt.data.clone(),
        d: d.data.clone(),
    };
    m.check("ssm")?;
    let disc = match a.discretization {
        Disc::Zoh => Discretization::Zoh,
        Disc::Bilinear => Discretization::Bilinear,
    };
    let (out_name, out_shape) = match a.mode {
        Mode::Kernel => ("K", vec![h, len]),
        _ => ("y", u.as_ref().unwrap().shape.clone()),
    };
    let mut dev = a.device.unwrap_or_default();
    let ctx = dev.open()?;
    println!(
        "input: {} H = {h}, N = {} (N2 = {n2}), L = {len}{}; mode {:?}, {:?}",
        a.input,
        2 * n2,
        u.as_ref()
            .map(|u| format!(", B = {}", u.shape[0]))
            .unwrap_or_default(),
        a.mode,
        a.discretization
    );
    let u64_ = u.as_ref().map(|u| u.data.clone());
    let gpu = match &ctx {
        Some(c) => Some(run_gpu(c, &m, u.as_ref(), len, a.mode, disc)?),
        None => None,
    };
    let cpu = if dev.cpu {
        let u32_ = u.as_ref().map(|u| (u.to_f32(), u.shape.clone()));
        let y = devices::timed("cpu", &devices::cpu_note(), || {
            let k = || longseq::cpu::ssm::s4d_kernel::<f32>(&m, len, disc);
            Ok(match (a.mode, &u32_) {
                (Mode::Kernel, _) => k()?,
                (Mode::Conv, Some((u, shape))) => {
                    let d: Vec<f32> = m.d.iter().map(|&x| x as f32).collect();
                    longseq::cpu::ssm::causal_conv(u, shape, &k()?, &[h, len], &d)?
                }
                (Mode::Scan, Some((u, shape))) => longseq::cpu::ssm::s4d_scan(&m, u, shape, disc)?,
                _ => unreachable!("conv and scan read u"),
            })
        })?;
        Some(y.into_iter().map(f64::from).collect())
    } else {
        None
    };
    let reference = if dev.reference {
        Some(devices::timed("reference", "f64", || {
            Ok(match a.mode {
                Mode::Kernel => rs::s4d_kernel(&m, len, disc)?,
                Mode::Conv => {
                    let k = rs::s4d_kernel(&m, len, disc)?;
                    rs::causal_conv(u64_.as_ref().unwrap(), &k, &m.d, h, len)?
                }
                Mode::Scan => rs::s4d_recurrence(&m, u64_.as_ref().unwrap(), len, disc)?,
            })
        })?)
    } else {
        None
    };
    let result = devices::report(gpu, cpu, reference);
    if let Some(path) = &a.output {
        let o: Vec<f32> = result.iter().map(|&x| x as f32).collect();
        io::write(path, vec![(out_name, out_shape.clone(), Out::F32(o))])?;
        println!("wrote {out_name} {out_shape:?} f32 to {path}");
    }
    Ok(())
}

/// Uploads (f32), runs once to compile the pipelines, then times one run including readback.
fn run_gpu(
    ctx: &Context,
    m: &rs::DiagonalSsm,
    u: Option<&io::HostTensor>,
    len: usize,
    mode: Mode,
    disc: Discretization,
) -> Result<Vec<f64>, CliError> {
    let dev = DiagonalSsm::<f32>::from_host(ctx, m)?;
    let tu = match u {
        Some(u) => Some(Tensor::from_slice(ctx, &u.to_f32(), &u.shape)?),
        None => None,
    };
    let go = || -> longseq::Result<Vec<f32>> {
        match mode {
            Mode::Kernel => s4d_kernel(ctx, &dev, len, disc)?.to_vec(ctx),
            Mode::Conv => {
                let k = s4d_kernel(ctx, &dev, len, disc)?;
                causal_conv(ctx, tu.as_ref().unwrap(), &k, &dev.d)?.to_vec(ctx)
            }
            Mode::Scan => s4d_scan(ctx, &dev, tu.as_ref().unwrap(), disc)?.to_vec(ctx),
        }
    };
    go()?;
    let t = Instant::now();
    let o = go()?;
    println!(
        "gpu: {:.3} ms (dispatch + readback, pipelines compiled beforehand)",
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(o.into_iter().map(f64::from).collect())
}
