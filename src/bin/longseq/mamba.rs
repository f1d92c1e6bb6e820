//! `longseq mamba`: the Mamba selective scan (S6) from a safetensors file.

use half::f16;
use longseq::cpu::ssm::SelectiveScanHost;
use longseq::reference::mamba::{selective_scan_ref, ScanDims, SelectiveScanRef};
use longseq::ssm::{selective_scan, SelectiveScanInputs};
use longseq::{Context, Element, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::check::StorageDtype;
use crate::devices::{self, Devices};
use crate::io::{self, CliError, HostTensor, Out};

/// The Mamba selective scan (S6; Gu & Dao 2023, arXiv 2312.00752, Alg. 2) on the GPU and/or the
/// f64 reference, with the tensor names and layout of mamba's `selective_scan_ref`.
///
/// Reads (f16, f32 or f64) from --input, or draws them with --init (below):
///   u              [B, D, L]  input
///   delta          [B, D, L]  Δ (before delta_bias and softplus)
///   A              [D, N]     real, ≤ 0 for a decaying state (−exp(A_log))
///   B, C           [B, N, L]  input-dependent projections
///   D              [D]        optional skip term
///   z              [B, D, L]  optional gate: out ·= silu(z)
///   delta_bias     [D]        optional, added to Δ
///   initial_state  [B, D, N]  optional (zero when absent)
/// --init draws a Mamba-initialised layer (Gu & Dao 2023, §3.6 and the reference code's init):
/// A[d, n] = −(n + 1) (S4D-real), D = 1, delta_bias = softplus⁻¹(dt) with dt log-uniform in
/// [1e-3, 1e-1], and u, delta, B, C, z ~ N(0, 1), from --seed, as [--batch, --dim, --len] with
/// --state N.
/// Computes Δ = softplus(delta + delta_bias) (softplus with --delta-softplus),
/// h_t = exp(Δ A) h_{t−1} + Δ B_t u_t, out_t = (Σ_n C_t h_t + D u_t) · silu(z_t).
/// Writes (f32): out [B, D, L], last_state [B, D, N].
/// With --device both, prints the difference GPU vs CPU (exit 3 past the dtype's tolerance).
/// A missing tensor, a shape mismatch or a bad option exits with code 2.
#[derive(clap::Args)]
#[command(
    verbatim_doc_comment,
    after_help = "Example (no input file needed):\n  \
longseq mamba --init --dim 64 --state 16 --len 1000 --seed 0 --delta-softplus --output out.safetensors"
)]
pub struct Args {
    /// safetensors file holding the input tensors.
    #[arg(long, required_unless_present = "init", conflicts_with = "init")]
    input: Option<String>,
    /// Draw a Mamba-initialised layer and its inputs instead of reading them.
    #[arg(long)]
    init: bool,
    /// --init: batch B.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// --init: channels D.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// --init: state size N.
    #[arg(long, default_value_t = 16)]
    state: usize,
    /// --init: length L.
    #[arg(long, default_value_t = 1024)]
    len: usize,
    /// --init: seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Apply softplus to Δ (after delta_bias), as Mamba does (always on with --init, whose
    /// delta_bias is softplus⁻¹ of the step).
    #[arg(long)]
    delta_softplus: bool,
    /// GPU storage dtype (arithmetic and state are f32 either way); default f16 when every
    /// input tensor is f16.
    #[arg(long, value_enum)]
    dtype: Option<StorageDtype>,
    /// Where to run: gpu, cpu, reference (f64), or a comma-separated list (default
    /// gpu,reference; cpu,reference when there is no GPU adapter).
    #[arg(long)]
    device: Option<Devices>,
    /// Run the f64 reference even when its estimated time is past the bound.
    #[arg(long)]
    force_reference: bool,
    /// Where to write `out` and `last_state`.
    #[arg(long)]
    output: Option<String>,
}

const REQUIRED: [&str; 5] = ["u", "delta", "A", "B", "C"];
const OPTIONAL: [&str; 4] = ["D", "z", "delta_bias", "initial_state"];

/// The tensors read from the file: the five required, then the optional ones when present.
struct Inputs {
    dims: ScanDims,
    req: Vec<HostTensor>,
    opt: Vec<Option<HostTensor>>,
}

fn shape_err(name: &str, got: &[usize], want: String) -> CliError {
    CliError::Input(format!(
        "tensor `{name}` has shape {got:?}, expected {want}"
    ))
}

fn read_inputs(path: &str) -> Result<Inputs, CliError> {
    let bytes = io::read_file(path)?;
    let st = io::parse(&bytes, path)?;
    let req = REQUIRED
        .iter()
        .map(|n| io::read(&st, n, path))
        .collect::<Result<Vec<_>, _>>()?;
    let opt: Vec<Option<HostTensor>> = OPTIONAL
        .iter()
        .map(|n| match st.tensor(n) {
            Ok(_) => io::read(&st, n, path).map(Some),
            Err(_) => Ok(None),
        })
        .collect::<Result<_, _>>()?;
    let u = &req[0].shape;
    if u.len() != 3 || u.contains(&0) {
        return Err(shape_err("u", u, "[B, D, L] with every dim >= 1".into()));
    }
    let (b, d, l) = (u[0], u[1], u[2]);
    let a = &req[2].shape;
    if a.len() != 2 || a[0] != d || a[1] == 0 {
        return Err(shape_err("A", a, format!("[{d}, N] ([D, N], N >= 1)")));
    }
    let n = a[1];
    let want = |name: &str| -> (Vec<usize>, &str) {
        match name {
            "u" | "delta" | "z" => (vec![b, d, l], "[B, D, L]"),
            "A" => (vec![d, n], "[D, N]"),
            "B" | "C" => (vec![b, n, l], "[B, N, L]"),
            "initial_state" => (vec![b, d, n], "[B, D, N]"),
            _ => (vec![d], "[D]"),
        }
    };
    let named = REQUIRED.iter().zip(req.iter().map(Some));
    for (name, t) in named.chain(OPTIONAL.iter().zip(opt.iter().map(Option::as_ref))) {
        let Some(t) = t else { continue };
        let (shape, what) = want(name);
        if t.shape != shape {
            return Err(shape_err(name, &t.shape, format!("{shape:?} ({what})")));
        }
    }
    let dims = ScanDims {
        batch: b,
        dim: d,
        state: n,
        len: l,
    };
    Ok(Inputs { dims, req, opt })
}

pub fn run(mut a: Args) -> Result<(), CliError> {
    io::check_output(a.output.as_deref())?;
    // A drawn layer's delta_bias is softplus⁻¹(dt): without softplus Δ can be negative and the
    // state grows without bound, so --init always applies it.
    a.delta_softplus |= a.input.is_none();
    let (mut x, source) = match &a.input {
        Some(path) => (read_inputs(path)?, path.clone()),
        None => (draw_inputs(&a)?, format!("--init (seed {})", a.seed)),
    };
    let dtypes: Vec<_> = x.req.iter().map(|t| t.dtype).collect();
    let dtype = StorageDtype::resolve(a.dtype, &dtypes);
    // The reference sees the values as the GPU stores them (the state stays f32).
    for (name, t) in REQUIRED.iter().zip(x.req.iter_mut()) {
        t.data = stored(dtype, name, t)?;
    }
    for (name, t) in OPTIONAL.iter().zip(x.opt.iter_mut()) {
        if let Some(t) = t {
            let dt = if *name == "initial_state" {
                StorageDtype::F32
            } else {
                dtype
            };
            t.data = stored(dt, name, t)?;
        }
    }
    let ScanDims {
        batch,
        dim,
        state,
        len,
    } = x.dims;
    let mut dev = a.device.unwrap_or_default();
    let ctx = dev.open()?;
    println!(
        "input: {source} B = {batch}, D = {dim}, N = {state}, L = {len}{}{}",
        if a.delta_softplus {
            ", delta_softplus"
        } else {
            ""
        },
        match &ctx {
            Some(_) => format!("; GPU storage {}", dtype.name()),
            None => String::new(),
        }
    );
    let gpu = match (&ctx, dtype) {
        (Some(c), StorageDtype::F32) => Some(run_gpu::<f32>(c, &x, a.delta_softplus)?),
        (Some(c), StorageDtype::F16) => Some(run_gpu::<f16>(c, &x, a.delta_softplus)?),
        (None, _) => None,
    };
    let ops = (batch * dim * state * len) as f64 * 6.0;
    let reference = || {
        let o = |i: usize| x.opt[i].as_ref().map(|t| &t.data[..]);
        let r = SelectiveScanRef {
            u: &x.req[0].data,
            delta: &x.req[1].data,
            a: &x.req[2].data,
            b: &x.req[3].data,
            c: &x.req[4].data,
            d: o(0),
            z: o(1),
            delta_bias: o(2),
            delta_softplus: a.delta_softplus,
            initial_state: o(3),
        };
        selective_scan_ref(x.dims, &r)
    };
    // `out` and `last_state` are compared (and written) as one vector.
    let cat = |(o, s): (Vec<f64>, Vec<f64>)| [o, s].concat();
    let fast = || -> longseq::Result<(Vec<f64>, Vec<f64>)> {
        let f = |v: &[f64]| v.iter().map(|&y| y as f32).collect::<Vec<f32>>();
        let req: Vec<Vec<f32>> = x.req.iter().map(|t| f(&t.data)).collect();
        let opt: Vec<Option<Vec<f32>>> = x
            .opt
            .iter()
            .map(|t| t.as_ref().map(|t| f(&t.data)))
            .collect();
        let o = |i: usize| opt[i].as_deref();
        let h = SelectiveScanHost {
            u: &req[0],
            delta: &req[1],
            a: &req[2],
            b: &req[3],
            c: &req[4],
            d: o(0),
            z: o(1),
            delta_bias: o(2),
            delta_softplus: a.delta_softplus,
            initial_state: o(3),
        };
        let (out, last) = longseq::cpu::ssm::selective_scan(x.dims, &h)?;
        let w = |v: Vec<f32>| v.into_iter().map(f64::from).collect();
        Ok((w(out), w(last)))
    };
    let cpu = match dev.cpu {
        true => Some(cat(devices::timed("cpu", &devices::cpu_note(), || {
            Ok(fast()?)
        })?)),
        false => None,
    };
    let checked = dev.reference(a.force_reference, ops, "f64", reference)?;
    let Some(result) = devices::report(gpu.map(|g| (cat(g), dtype)), cpu, checked.map(cat))? else {
        return Ok(());
    };
    let (out, last) = {
        let mut out = result;
        let last = out.split_off(batch * dim * len);
        (out, last)
    };
    if let Some(path) = &a.output {
        let f = |v: Vec<f64>| Out::F32(v.into_iter().map(|x| x as f32).collect());
        io::write(
            path,
            vec![
                ("out", vec![batch, dim, len], f(out)),
                ("last_state", vec![batch, dim, state], f(last)),
            ],
        )?;
        println!("wrote out [{batch}, {dim}, {len}] and last_state [{batch}, {dim}, {state}] f32 to {path}");
    }
    Ok(())
}

/// A Mamba-initialised layer and N(0, 1) inputs (see the command's doc).
fn draw_inputs(a: &Args) -> Result<Inputs, CliError> {
    let (b, d, n, l) = (a.batch, a.dim, a.state, a.len);
    if [b, d, n, l].contains(&0) {
        return Err(CliError::Input(
            "--init needs --batch, --dim, --state and --len >= 1".into(),
        ));
    }
    let mut rng = StdRng::seed_from_u64(a.seed);
    let mut t = |shape: Vec<usize>, f: &mut dyn FnMut(&mut StdRng, usize) -> f64| {
        let len = shape.iter().product();
        HostTensor {
            data: (0..len).map(|i| f(&mut rng, i)).collect(),
            shape,
            dtype: safetensors::Dtype::F32,
        }
    };
    let mut normal = |g: &mut StdRng, _: usize| g.sample::<f64, _>(StandardNormal);
    let (lo, hi) = (1e-3f64.ln(), 1e-1f64.ln());
    // softplus⁻¹(dt) = dt + ln(1 − e^−dt).
    let mut bias = |g: &mut StdRng, _: usize| {
        let dt = (lo + g.random::<f64>() * (hi - lo)).exp();
        dt + (-(-dt).exp_m1()).ln()
    };
    let req = vec![
        t(vec![b, d, l], &mut normal),
        t(vec![b, d, l], &mut normal),
        t(vec![d, n], &mut |_, i| -((i % n) as f64 + 1.0)),
        t(vec![b, n, l], &mut normal),
        t(vec![b, n, l], &mut normal),
    ];
    let opt = vec![
        Some(t(vec![d], &mut |_, _| 1.0)),
        Some(t(vec![b, d, l], &mut normal)),
        Some(t(vec![d], &mut bias)),
        None,
    ];
    let dims = ScanDims {
        batch: b,
        dim: d,
        state: n,
        len: l,
    };
    Ok(Inputs { dims, req, opt })
}

fn stored(dtype: StorageDtype, name: &str, t: &HostTensor) -> Result<Vec<f64>, CliError> {
    Ok(dtype
        .storable(name, t.to_f32())?
        .into_iter()
        .map(f64::from)
        .collect())
}

/// Uploads, runs once to compile the pipelines, then times one run including readback.
fn run_gpu<T: Element>(
    ctx: &Context,
    x: &Inputs,
    softplus: bool,
) -> Result<(Vec<f64>, Vec<f64>), CliError> {
    let up = |t: &HostTensor| -> longseq::Result<Tensor<T>> {
        let v: Vec<T> = t.data.iter().map(|&v| T::from_f64(v)).collect();
        Tensor::from_slice(ctx, &v, &t.shape)
    };
    let req = x.req.iter().map(up).collect::<longseq::Result<Vec<_>>>()?;
    let opt = x.opt[..3]
        .iter()
        .map(|t| t.as_ref().map(up).transpose())
        .collect::<longseq::Result<Vec<_>>>()?;
    let h0 = match &x.opt[3] {
        Some(t) => Some(Tensor::from_slice(ctx, &t.to_f32(), &t.shape)?),
        None => None,
    };
    let mut inp = SelectiveScanInputs::new(&req[0], &req[1], &req[2], &req[3], &req[4]);
    inp.d = opt[0].as_ref();
    inp.z = opt[1].as_ref();
    inp.delta_bias = opt[2].as_ref();
    inp.delta_softplus = softplus;
    inp.initial_state = h0.as_ref();
    let go = || -> longseq::Result<(Vec<f64>, Vec<f64>)> {
        let (o, s) = selective_scan(ctx, &inp)?;
        let o = o.to_vec(ctx)?.into_iter().map(Element::to_f64).collect();
        let s = s.to_vec(ctx)?.into_iter().map(f64::from).collect();
        Ok((o, s))
    };
    devices::gpu_timed(go)
}
