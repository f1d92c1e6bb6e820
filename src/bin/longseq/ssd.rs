//! `longseq ssd`: Mamba-2's SSD layer from a safetensors file.

use half::f16;
use longseq::reference::ssd::{ssd_ref, ssd_ref_varlen, SsdDims, SsdRef};
use longseq::ssm::{ssd, SsdInputs};
use longseq::types::batch::CuSeqlens;
use longseq::{Context, Element, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::check::StorageDtype;
use crate::devices::{self, Devices};
use crate::io::{self, CliError, HostTensor, Out};

/// Mamba-2's state-space duality layer (SSD; Dao & Gu 2024, arXiv 2405.21060, §6–7), chunked on
/// the GPU and/or the f64 step-by-step recurrence, in the layout of the paper's minimal SSD.
///
/// Reads (f16, f32 or f64) from --input, or draws them with --init (below):
///   X              [b, l, h, p]  input (Mamba-2 passes x · dt)
///   A              [b, l, h]     log-decay per step and head, ≤ 0 (Mamba-2's A · dt)
///   B, C           [b, l, h, n]  input-dependent projections
///   initial_state  [b, h, n, p]  optional (zero when absent; [N, h, n, p] with --cu-seqlens)
/// --init draws a Mamba-2-initialised layer: per head A_h = −U[1, 16] and dt_bias =
/// softplus⁻¹(dt₀), dt₀ log-uniform in [1e-3, 1e-1]; per step dt = softplus(N(0, 1) + dt_bias),
/// A = A_h · dt, X = N(0, 1) · dt, B, C ~ N(0, 1); from --seed, with --batch, --len, --heads,
/// --head-dim and --state.
/// Computes H_t = exp(A_t) H_{t−1} + B_tᵀ x_t, y_t = C_t H_t.
/// --cu-seqlens NAME packs N sequences along l (b = 1; NAME: [N + 1] integer offsets, as fla's
/// cu_seqlens): each runs from its own initial state; final_state is then [N, h, n, p] and Y is 0
/// past the last offset.
/// Writes (f32): Y [b, l, h, p], final_state [b, h, n, p].
/// With --device both, prints the difference GPU vs CPU (exit 3 past the dtype's tolerance).
/// A missing tensor, a shape mismatch or a bad option exits with code 2.
#[derive(clap::Args)]
#[command(
    verbatim_doc_comment,
    after_help = "Example (no input file needed):\n  \
longseq ssd --init --heads 4 --head-dim 32 --state 16 --len 1000 --seed 0 --output y.safetensors"
)]
pub struct Args {
    /// safetensors file holding the input tensors.
    #[arg(long, required_unless_present = "init", conflicts_with = "init")]
    input: Option<String>,
    /// Draw a Mamba-2-initialised layer and its inputs instead of reading them.
    #[arg(long)]
    init: bool,
    /// --init: batch b.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// --init: length l.
    #[arg(long, default_value_t = 1024)]
    len: usize,
    /// --init: heads h.
    #[arg(long, default_value_t = 8)]
    heads: usize,
    /// --init: head dim p.
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
    /// --init: state size n.
    #[arg(long, default_value_t = 64)]
    state: usize,
    /// --init: seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// GPU storage dtype (arithmetic and state are f32 either way); default f16 when every
    /// input tensor is f16.
    #[arg(long, value_enum)]
    dtype: Option<StorageDtype>,
    /// Where to run: gpu, cpu (the f32 CPU path), reference (f64), or a comma-separated list
    /// (default gpu,reference; cpu,reference when there is no GPU adapter).
    #[arg(long)]
    device: Option<Devices>,
    /// Run the f64 reference even when its estimated time is past the bound.
    #[arg(long)]
    force_reference: bool,
    /// Packed sequences: the name of an [N + 1] integer tensor of offsets in --input (b = 1).
    #[arg(long, conflicts_with = "init")]
    cu_seqlens: Option<String>,
    /// Where to write `Y` and `final_state`.
    #[arg(long)]
    output: Option<String>,
}

const REQUIRED: [&str; 4] = ["X", "A", "B", "C"];

/// X, A, B, C and the optional initial state.
struct Inputs {
    dims: SsdDims,
    req: Vec<HostTensor>,
    h0: Option<HostTensor>,
    cu: Option<CuSeqlens>,
}

fn shape_err(name: &str, got: &[usize], want: String) -> CliError {
    CliError::Input(format!(
        "tensor `{name}` has shape {got:?}, expected {want}"
    ))
}

fn read_inputs(path: &str, cu_name: Option<&str>) -> Result<Inputs, CliError> {
    let bytes = io::read_file(path)?;
    let st = io::parse(&bytes, path)?;
    let req = REQUIRED
        .iter()
        .map(|n| io::read(&st, n, path))
        .collect::<Result<Vec<_>, _>>()?;
    let h0 = match st.tensor("initial_state") {
        Ok(_) => Some(io::read(&st, "initial_state", path)?),
        Err(_) => None,
    };
    let x = &req[0].shape;
    if x.len() != 4 || x.contains(&0) {
        return Err(shape_err("X", x, "[b, l, h, p] with every dim >= 1".into()));
    }
    let (b, l, h, p) = (x[0], x[1], x[2], x[3]);
    let bs = &req[2].shape;
    if bs.len() != 4 || bs[..3] != [b, l, h] || bs[3] == 0 {
        return Err(shape_err("B", bs, format!("[{b}, {l}, {h}, n] (n >= 1)")));
    }
    let n = bs[3];
    let cu = match cu_name {
        Some(name) => {
            if b != 1 {
                return Err(shape_err("X", x, "[1, l, h, p] with --cu-seqlens".into()));
            }
            let cu = crate::attention::read_cu_seqlens(&st, name, path, l)?;
            Some(cu)
        }
        None => None,
    };
    let slots = cu.as_ref().map_or(b, CuSeqlens::count);
    let mut want = vec![
        ("A", &req[1], vec![b, l, h]),
        ("C", &req[3], vec![b, l, h, n]),
    ];
    if let Some(t) = &h0 {
        want.push(("initial_state", t, vec![slots, h, n, p]));
    }
    for (name, t, shape) in want {
        if t.shape != shape {
            return Err(shape_err(name, &t.shape, format!("{shape:?}")));
        }
    }
    // A is a log-decay: a positive one grows the state without bound.
    let av = req[1].to_f32();
    if let Some(i) = av.iter().position(|&x| x > 0.0) {
        return Err(CliError::Input(format!(
            "tensor `A` holds {} > 0 at flat index {i}; SSD's log-decays must be <= 0",
            av[i]
        )));
    }
    let dims = SsdDims {
        batch: b,
        len: l,
        heads: h,
        head_dim: p,
        state: n,
    };
    Ok(Inputs { dims, req, h0, cu })
}

pub fn run(a: Args) -> Result<(), CliError> {
    io::check_output(a.output.as_deref())?;
    let (mut x, source) = match &a.input {
        Some(path) => (read_inputs(path, a.cu_seqlens.as_deref())?, path.clone()),
        None => (draw_inputs(&a)?, format!("--init (seed {})", a.seed)),
    };
    let dtypes: Vec<_> = x.req.iter().map(|t| t.dtype).collect();
    let dtype = StorageDtype::resolve(a.dtype, &dtypes);
    // The reference sees the values as the GPU stores them (the state stays f32).
    for (name, t) in REQUIRED.iter().zip(x.req.iter_mut()) {
        t.data = stored(dtype, name, t)?;
    }
    if let Some(t) = &mut x.h0 {
        t.data = stored(StorageDtype::F32, "initial_state", t)?;
    }
    let SsdDims {
        batch,
        len,
        heads,
        head_dim,
        state,
    } = x.dims;
    let mut dev = a.device.unwrap_or_default();
    let slots = x.cu.as_ref().map_or(batch, CuSeqlens::count);
    let ctx = dev.open()?;
    println!(
        "input: {source} b = {batch}, l = {len}, h = {heads}, p = {head_dim}, n = {state}{}",
        match &ctx {
            Some(_) => format!("; GPU storage {}", dtype.name()),
            None => String::new(),
        }
    );
    let gpu = match (&ctx, dtype) {
        (Some(c), StorageDtype::F32) => Some(run_gpu::<f32>(c, &x)?),
        (Some(c), StorageDtype::F16) => Some(run_gpu::<f16>(c, &x)?),
        (None, _) => None,
    };
    let ops = (batch * len * heads * head_dim * state) as f64 * 4.0;
    let reference = || {
        let r = SsdRef {
            x: &x.req[0].data,
            a: &x.req[1].data,
            b: &x.req[2].data,
            c: &x.req[3].data,
            initial_state: x.h0.as_ref().map(|t| &t.data[..]),
        };
        match &x.cu {
            Some(cu) => {
                let offs: Vec<usize> = cu.offsets().iter().map(|&o| o as usize).collect();
                ssd_ref_varlen(x.dims, &offs, &r)
            }
            None => ssd_ref(x.dims, &r),
        }
    };
    // `Y` and `final_state` are compared (and written) as one vector.
    let cat = |(o, s): (Vec<f64>, Vec<f64>)| [o, s].concat();
    let cpu = match dev.cpu {
        true => Some(cat(devices::timed("cpu", &devices::cpu_note(), || {
            run_cpu(&x)
        })?)),
        false => None,
    };
    let checked = dev.reference(a.force_reference, ops, "f64", reference)?;
    let Some(mut y) = devices::report(gpu.map(|g| (cat(g), dtype)), cpu, checked.map(cat))? else {
        return Ok(());
    };
    let last = y.split_off(batch * len * heads * head_dim);
    if let Some(path) = &a.output {
        let f = |v: Vec<f64>| Out::F32(v.into_iter().map(|x| x as f32).collect());
        io::write(
            path,
            vec![
                ("Y", vec![batch, len, heads, head_dim], f(y)),
                ("final_state", vec![slots, heads, state, head_dim], f(last)),
            ],
        )?;
        println!(
            "wrote Y [{batch}, {len}, {heads}, {head_dim}] and final_state \
             [{slots}, {heads}, {state}, {head_dim}] f32 to {path}"
        );
    }
    Ok(())
}

/// A Mamba-2-initialised layer and its inputs (see the command's doc).
fn draw_inputs(a: &Args) -> Result<Inputs, CliError> {
    let (b, l, h, p, n) = (a.batch, a.len, a.heads, a.head_dim, a.state);
    if [b, l, h, p, n].contains(&0) {
        return Err(CliError::Input(
            "--init needs --batch, --len, --heads, --head-dim and --state >= 1".into(),
        ));
    }
    let mut g = StdRng::seed_from_u64(a.seed);
    let a_head: Vec<f64> = (0..h).map(|_| -g.random_range(1.0..16.0)).collect();
    let (lo, hi) = (1e-3f64.ln(), 1e-1f64.ln());
    // softplus⁻¹(dt₀) = dt₀ + ln(1 − e^−dt₀).
    let dt_bias: Vec<f64> = (0..h)
        .map(|_| {
            let dt = (lo + g.random::<f64>() * (hi - lo)).exp();
            dt + (-(-dt).exp_m1()).ln()
        })
        .collect();
    let tokens = b * l * h;
    let dt: Vec<f64> = (0..tokens)
        .map(|i| {
            longseq::reference::mamba::softplus(g.sample::<f64, _>(StandardNormal) + dt_bias[i % h])
        })
        .collect();
    let mut normal = |k: usize| -> Vec<f64> { (0..k).map(|_| g.sample(StandardNormal)).collect() };
    let xs: Vec<f64> = normal(tokens * p)
        .into_iter()
        .enumerate()
        .map(|(i, v)| v * dt[i / p])
        .collect();
    let bm = normal(tokens * n);
    let cm = normal(tokens * n);
    let t = |data: Vec<f64>, shape: Vec<usize>| HostTensor {
        data,
        shape,
        dtype: safetensors::Dtype::F32,
    };
    let am = (0..tokens).map(|i| a_head[i % h] * dt[i]).collect();
    let req = vec![
        t(xs, vec![b, l, h, p]),
        t(am, vec![b, l, h]),
        t(bm, vec![b, l, h, n]),
        t(cm, vec![b, l, h, n]),
    ];
    let dims = SsdDims {
        batch: b,
        len: l,
        heads: h,
        head_dim: p,
        state: n,
    };
    Ok(Inputs {
        dims,
        req,
        h0: None,
        cu: None,
    })
}

fn stored(dtype: StorageDtype, name: &str, t: &HostTensor) -> Result<Vec<f64>, CliError> {
    Ok(dtype
        .storable(name, t.to_f32())?
        .into_iter()
        .map(f64::from)
        .collect())
}

/// Uploads, runs once to compile the pipelines, then times one run including readback.
fn run_gpu<T: Element>(ctx: &Context, x: &Inputs) -> Result<(Vec<f64>, Vec<f64>), CliError> {
    let up = |t: &HostTensor| -> longseq::Result<Tensor<T>> {
        let v: Vec<T> = t.data.iter().map(|&v| T::from_f64(v)).collect();
        Tensor::from_slice(ctx, &v, &t.shape)
    };
    let req = x.req.iter().map(up).collect::<longseq::Result<Vec<_>>>()?;
    let h0 = match &x.h0 {
        Some(t) => Some(Tensor::from_slice(ctx, &t.to_f32(), &t.shape)?),
        None => None,
    };
    let inp = SsdInputs {
        initial_state: h0.as_ref(),
        cu_seqlens: x.cu.as_ref(),
        ..SsdInputs::new(&req[0], &req[1], &req[2], &req[3])
    };
    let go = || -> longseq::Result<(Vec<f64>, Vec<f64>)> {
        let (y, s) = ssd(ctx, &inp)?;
        let y = y.to_vec(ctx)?.into_iter().map(Element::to_f64).collect();
        let s = s.to_vec(ctx)?.into_iter().map(f64::from).collect();
        Ok((y, s))
    };
    devices::gpu_timed(go)
}

/// The f32 CPU path on the stored values.
fn run_cpu(x: &Inputs) -> Result<(Vec<f64>, Vec<f64>), CliError> {
    let f: Vec<Vec<f32>> = x.req.iter().map(HostTensor::to_f32).collect();
    let h0 = x.h0.as_ref().map(HostTensor::to_f32);
    let host = longseq::cpu::ssm::SsdHost {
        initial_state: h0.as_deref(),
        cu_seqlens: x.cu.as_ref(),
        ..longseq::cpu::ssm::SsdHost::new(&f[0], &f[1], &f[2], &f[3])
    };
    let (y, s) = longseq::cpu::ssm::ssd(x.dims, &host)?;
    let w = |v: Vec<f32>| v.into_iter().map(f64::from).collect();
    Ok((w(y), w(s)))
}
