//! `longseq ssm`: the S4D kernel, FFT convolution or scan from a safetensors file.

use longseq::reference::ssm as rs;
use longseq::ssm::{
    causal_conv, s4d_init, s4d_kernel, s4d_scan, DiagonalSsm, Discretization, S4dInit,
};
use longseq::{Context, Tensor};
use num_complex::Complex64;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::check::StorageDtype;
use crate::devices::{self, Devices};
use crate::io::{self, CliError, Out};
use crate::ssm_batch;
use longseq::types::batch::Layout;

/// A diagonal (S4D) state-space model over tensors in a safetensors file, or initialised by
/// --init, on the GPU and/or the CPU reference (f64).
///
/// Reads (f16, f32 or f64) from --input unless --init:
///   A_re, A_im, B_re, B_im, C_re, C_im  [H, N2]  diagonal complex A, B, C in conjugate-pair
///                                                storage (state size N = 2·N2; each stored mode
///                                                stands for itself and its conjugate)
///   dt                                  [H]      step Δ per head (> 0)
///   D                                   [H]      skip term
///   u                                   [B, H, L] input (modes conv and scan; in mode kernel only
///                                                its L is used, or pass --len); [B, L, H] with
///                                                --layout blhd
/// Modes scan and conv also take (issue 14) --layout blhd (u and y as [B, L, H]; bhld = [B, H, L], the
/// attention CLI's names without D), --cu-seqlens NAME (an i32/i64 tensor of N + 1 offsets in
/// --input: packed sequences, B = 1; each starts from its own state, nothing crosses a boundary,
/// y past the last offset is written as 0) and --initial-state NAME ([N, H, N2, 2] in --input:
/// each sequence's complex state per stored mode as (re, im); N = B, or the packed count); with
/// any of them it also writes final_state [N, H, N2, 2], the state after each sequence's last
/// token (feed it back as --initial-state to continue), on gpu and reference (not cpu).
/// --init s4d-lin|s4d-inv|legs builds the model instead (S4D paper §4, arXiv 2206.11893):
/// A from the init (the same for every head), B = 1, C ~ CN(0, 1), Δ log-uniform in
/// [1e-3, 1e-1], D ~ N(0, 1), from --seed, with --heads H and --state N (even); u is drawn
/// N(0, 1) as [--batch, H, --len] (or read from --input's `u` when given).
/// Writes (f32):
///   K  [H, L]     mode kernel: K[h, l] = 2 Re Σ_n C_n B̄_n Ā_n^l
///   y  [B, H, L]  mode conv: y = K ∗ u + D·u by FFT; mode scan: the recurrence
///                 x_t = Ā x_{t−1} + B̄ u_t, y_t = 2 Re Σ_n C_n x_t + D u_t by parallel scan
/// Prints each device's time and, when the reference ran, each result's max-abs and normwise
/// relative difference to it (exit 3 past 1e-4). A missing tensor, a shape mismatch or a bad
/// option exits with code 2.
#[derive(clap::Args)]
#[command(
    verbatim_doc_comment,
    allow_negative_numbers = true,
    after_help = "Example (no input file needed):\n  \
longseq ssm --mode conv --init s4d-lin --heads 4 --state 64 --len 4096 --seed 0 --output y.safetensors"
)]
pub struct Args {
    /// safetensors file holding the input tensors (optional with --init).
    #[arg(long, required_unless_present = "init")]
    input: Option<String>,
    /// What to compute.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Build the model from an S4D initialisation instead of reading it.
    #[arg(long, value_enum)]
    init: Option<Init>,
    /// --init: number of heads H.
    #[arg(long, default_value_t = 1)]
    heads: usize,
    /// --init: state size N (even; N/2 stored conjugate pairs).
    #[arg(long, default_value_t = 64)]
    state: usize,
    /// --init: batch B of the drawn u.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// --init: seed for C, Δ, D and u.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Discretisation of (A, B) with step dt.
    #[arg(long, value_enum, default_value = "zoh")]
    discretization: Disc,
    /// Sequence length L: the kernel length of mode kernel when there is no `u`, the length of
    /// the drawn u with --init.
    #[arg(long)]
    len: Option<usize>,
    /// Where to run: gpu, cpu (the f32 CPU path), reference (f64), or a comma-separated list
    /// (default gpu,reference; cpu,reference when there is no GPU adapter; both = gpu,reference).
    #[arg(long)]
    device: Option<Devices>,
    /// Run the f64 reference even when its estimated time is past the bound.
    #[arg(long)]
    force_reference: bool,
    /// Where to write `K` or `y` (and `final_state` in mode scan with the options below).
    #[arg(long)]
    output: Option<String>,
    /// Memory layout of u and y: bhld = [B, H, L], blhd = [B, L, H] (mode scan).
    #[arg(long, default_value = "bhld", value_parser = ["bhld", "blhd"])]
    layout: String,
    /// Packed sequences: the name of an i32/i64 offsets tensor [N + 1] in --input (B = 1, mode
    /// scan).
    #[arg(long, value_name = "NAME")]
    cu_seqlens: Option<String>,
    /// The state before each sequence: the name of a tensor [N, H, N2, 2] in --input (mode scan).
    #[arg(long, value_name = "NAME")]
    initial_state: Option<String>,
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

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Kernel => "kernel",
            Mode::Conv => "conv",
            Mode::Scan => "scan",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Init {
    /// A_n = −1/2 + iπn.
    S4dLin,
    /// A_n = −1/2 + i(N/π)(N/(2n+1) − 1).
    S4dInv,
    /// The eigenvalues of HiPPO-LegS's normal part.
    Legs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Disc {
    /// Zero-order hold: Ā = exp(ΔA), B̄ = (exp(ΔA) − 1)/A · B.
    Zoh,
    /// Bilinear: Ā = (1 − ΔA/2)⁻¹(1 + ΔA/2), B̄ = (1 − ΔA/2)⁻¹ ΔB.
    Bilinear,
}

fn layout(a: &Args) -> Layout {
    Layout::parse(&a.layout).unwrap_or_default()
}

fn shape_err(name: &str, got: &[usize], want: &str) -> CliError {
    CliError::Input(format!(
        "tensor `{name}` has shape {got:?}, expected {want}"
    ))
}

/// The input `u` as f64 with its shape `[B, H, L]`.
type Input = (Vec<f64>, Vec<usize>);

/// The model and `u` read from the file.
fn from_file(a: &Args, path: &str) -> Result<(rs::DiagonalSsm, Option<Input>), CliError> {
    let bytes = io::read_file(path)?;
    let st = io::parse(&bytes, path)?;
    let rd = |n: &str| io::read(&st, n, path);
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
    let u = read_u(a, &st, path, h)?;
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
        dt: dt.data,
        d: d.data,
    };
    Ok((m, u))
}

/// `u` ([B, H, L]) from the file: required in modes conv and scan.
fn read_u(
    a: &Args,
    st: &safetensors::SafeTensors<'_>,
    path: &str,
    h: usize,
) -> Result<Option<Input>, CliError> {
    match io::read(st, "u", path) {
        Ok(u) => {
            let (hi, want) = match layout(a) {
                Layout::Bhld => (1, format!("[B, {h}, L]")),
                Layout::Blhd => (2, format!("[B, L, {h}] (--layout blhd)")),
            };
            if u.shape.len() != 3 || u.shape[hi] != h || u.shape.contains(&0) {
                return Err(shape_err("u", &u.shape, &want));
            }
            Ok(Some((u.data, u.shape)))
        }
        Err(e) if a.mode != Mode::Kernel => Err(e),
        Err(_) => Ok(None),
    }
}

/// The model from an S4D init (and `u` drawn, or read from --input).
fn from_init(a: &Args, init: Init) -> Result<(rs::DiagonalSsm, Option<Input>), CliError> {
    let (h, n) = (a.heads, a.state);
    if h == 0 || n < 2 || n % 2 != 0 {
        return Err(CliError::Input(format!(
            "--init needs --heads >= 1 and an even --state >= 2 (got {h} and {n})"
        )));
    }
    let n2 = n / 2;
    let a_diag = s4d_init(
        match init {
            Init::S4dLin => S4dInit::Lin,
            Init::S4dInv => S4dInit::Inv,
            Init::Legs => S4dInit::LegS,
        },
        n2,
    )?;
    let mut rng = StdRng::seed_from_u64(a.seed);
    let half = std::f64::consts::FRAC_1_SQRT_2;
    let c: Vec<Complex64> = (0..h * n2)
        .map(|_| {
            let (re, im): (f64, f64) = (rng.sample(StandardNormal), rng.sample(StandardNormal));
            Complex64::new(re * half, im * half)
        })
        .collect();
    let (lo, hi) = (1e-3f64.ln(), 1e-1f64.ln());
    let dt: Vec<f64> = (0..h)
        .map(|_| (lo + rng.random::<f64>() * (hi - lo)).exp())
        .collect();
    let d: Vec<f64> = (0..h).map(|_| rng.sample(StandardNormal)).collect();
    let m = rs::DiagonalSsm {
        h,
        n2,
        a: (0..h).flat_map(|_| a_diag.iter().copied()).collect(),
        b: vec![Complex64::new(1.0, 0.0); h * n2],
        c,
        dt,
        d,
    };
    let u = match &a.input {
        Some(path) => {
            let bytes = io::read_file(path)?;
            let st = io::parse(&bytes, path)?;
            read_u(a, &st, path, h)?
        }
        None if a.mode == Mode::Kernel => None,
        None => {
            let len = a.len.ok_or_else(|| {
                CliError::Input("--init without --input draws u: give --len".into())
            })?;
            if a.batch == 0 || len == 0 {
                return Err(CliError::Input("--batch and --len must be >= 1".into()));
            }
            let u = (0..a.batch * h * len)
                .map(|_| rng.sample(StandardNormal))
                .collect();
            let shape = match layout(a) {
                Layout::Bhld => vec![a.batch, h, len],
                Layout::Blhd => vec![a.batch, len, h],
            };
            Some((u, shape))
        }
    };
    Ok((m, u))
}

pub fn run(a: Args) -> Result<(), CliError> {
    io::check_output(a.output.as_deref())?;
    let (m, u) = match (a.init, &a.input) {
        (Some(init), _) => from_init(&a, init)?,
        (None, Some(path)) => from_file(&a, path)?,
        (None, None) => return Err(CliError::Input("give --input F or --init".into())),
    };
    let h = m.h;
    let n2 = m.n2;
    let len = match (a.len, &u) {
        (Some(l), _) if a.mode == Mode::Kernel => l,
        (_, Some(u)) => match layout(&a) {
            Layout::Bhld => u.1[2],
            Layout::Blhd => u.1[1],
        },
        _ => {
            return Err(CliError::Input(
                "mode kernel without `u` needs --len".into(),
            ))
        }
    };
    if len == 0 {
        return Err(CliError::Input("L must be >= 1".into()));
    }
    m.check("ssm")?;
    let disc = match a.discretization {
        Disc::Zoh => Discretization::Zoh,
        Disc::Bilinear => Discretization::Bilinear,
    };
    let (out_name, out_shape) = match (a.mode, &u) {
        (Mode::Kernel, _) | (_, None) => ("K", vec![h, len]),
        (_, Some(u)) => ("y", u.1.clone()),
    };
    let mut dev = a.device.unwrap_or_default();
    let ctx = dev.open()?;
    println!(
        "input: {} H = {h}, N = {} (N2 = {n2}), L = {len}{}; mode {}, {}",
        match (a.init, &a.input) {
            (Some(i), _) => format!(
                "--init {} (seed {})",
                match i {
                    Init::S4dLin => "s4d-lin",
                    Init::S4dInv => "s4d-inv",
                    Init::Legs => "legs",
                },
                a.seed
            ),
            (None, Some(p)) => p.clone(),
            (None, None) => unreachable!("checked above"),
        },
        2 * n2,
        u.as_ref()
            .map(|u| format!(", B = {}", u.1[0]))
            .unwrap_or_default(),
        a.mode.name(),
        match disc {
            Discretization::Zoh => "zoh",
            Discretization::Bilinear => "bilinear",
            #[allow(unreachable_patterns)]
            _ => "discretised",
        }
    );
    let batch = ssm_batch::Batch {
        layout: layout(&a),
        cu_seqlens: a.cu_seqlens.as_deref(),
        initial_state: a.initial_state.as_deref(),
        input: a.input.as_deref(),
        output: a.output.as_deref(),
        force_reference: a.force_reference,
        conv: a.mode == Mode::Conv,
    };
    if batch.wanted() {
        return match (a.mode, &u) {
            (Mode::Scan | Mode::Conv, Some((u, shape))) => {
                ssm_batch::run(&batch, &m, (u, shape), disc, &mut dev, ctx.as_ref())
            }
            _ => Err(CliError::Input(
                "--layout blhd, --cu-seqlens and --initial-state go with --mode scan or conv"
                    .into(),
            )),
        };
    }
    let gpu = match &ctx {
        Some(c) => Some(run_gpu(c, &m, u.as_ref(), len, a.mode, disc)?),
        None => None,
    };
    let cpu = if dev.cpu {
        let u32_ = u
            .as_ref()
            .map(|u| (u.0.iter().map(|&x| x as f32).collect::<Vec<f32>>(), &u.1));
        let y = devices::timed("cpu", &devices::cpu_note(), || {
            let k = || longseq::cpu::ssm::s4d_kernel::<f32>(&m, len, disc);
            Ok(match (a.mode, &u32_) {
                (Mode::Conv, Some((u, shape))) => {
                    let d: Vec<f32> = m.d.iter().map(|&x| x as f32).collect();
                    longseq::cpu::ssm::causal_conv(u, shape, &k()?, &[h, len], &d)?
                }
                (Mode::Scan, Some((u, shape))) => longseq::cpu::ssm::s4d_scan(&m, u, shape, disc)?,
                _ => k()?,
            })
        })?;
        Some(y.into_iter().map(f64::from).collect())
    } else {
        None
    };
    let batch = u.as_ref().map_or(1, |u| u.1[0]) as f64;
    let (hf, nf, lf) = (h as f64, n2 as f64, len as f64);
    let ops = match a.mode {
        Mode::Kernel => hf * nf * lf * 4.0,
        Mode::Conv => hf * nf * lf * 4.0 + batch * hf * lf * lf.log2().max(1.0) * 12.0,
        Mode::Scan => batch * hf * nf * lf * 8.0,
    };
    let reference = dev.reference(a.force_reference, ops, "f64", || match a.mode {
        Mode::Kernel => rs::s4d_kernel(&m, len, disc),
        Mode::Conv => {
            let k = rs::s4d_kernel(&m, len, disc)?;
            rs::causal_conv(&u.as_ref().unwrap().0, &k, &m.d, h, len)
        }
        Mode::Scan => rs::s4d_recurrence(&m, &u.as_ref().unwrap().0, len, disc),
    })?;
    let gpu = gpu.map(|g| (g, StorageDtype::F32));
    let Some(result) = devices::report(gpu, cpu, reference)? else {
        return Ok(());
    };
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
    u: Option<&Input>,
    len: usize,
    mode: Mode,
    disc: Discretization,
) -> Result<Vec<f64>, CliError> {
    let dev = DiagonalSsm::<f32>::from_host(ctx, m)?;
    let tu = match u {
        Some((u, shape)) => {
            let u32s: Vec<f32> = u.iter().map(|&x| x as f32).collect();
            Some(Tensor::from_slice(ctx, &u32s, shape)?)
        }
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
    let o = devices::gpu_timed(go)?;
    Ok(o.into_iter().map(f64::from).collect())
}
