//! `longseq rope`: rotary position embedding of `x` from a safetensors file.

use std::time::Instant;

use half::f16;
use longseq::positions::rope::check_rope;
use longseq::positions::{rope, Positions, RopeLayout, RopeOptions, RopeScaling};
use longseq::{Context, Element, Tensor};

use crate::check::StorageDtype;
use crate::devices::{self, Devices};
use crate::io::{self, CliError, Out};

/// Rotary position embedding (RoPE) of `x`, on the GPU and/or the CPU reference.
///
/// Reads `{P}{T}` (P = --prefix, T = --tensor, default `x`; [.., L, D], D even; f16, f32 or
/// f64): q or k, e.g. [B, H, L, D]. Row l of every head is at position offset + l, or at
/// positions[l] when the file holds an integer tensor `{P}positions` ([L]; then --offset must
/// be 0). Pair i (interleaved: x[2i], x[2i+1]; half:
/// x[i], x[i + D/2]) at position m turns by m·θ_i, θ_i = base^(−2i/D):
///   (a, b) -> (a cos mθ − b sin mθ, a sin mθ + b cos mθ).
/// Scalings (s = --factor, L_train = --original-length):
///   none         θ_i as above
///   linear       position interpolation: m -> m / s
///   ntk          base -> base · s^(D/(D−2))
///   dynamic-ntk  ntk with s' = max(1, s·n/L_train − (s − 1)), n = largest position + 1
///   yarn         θ_i -> (1 − γ_i)·θ_i/s + γ_i·θ_i, γ_i = clamp((L_train·θ_i/2π − α)/(β − α), 0, 1),
///                output × (0.1·ln s + 1)
/// Writes tensor `x` (same shape, f32): the GPU result, or the CPU one when only the CPU ran.
/// Bad options (odd D, s < 1, α >= β, ...) exit with code 2; GPU and reference further apart
/// than the dtype's tolerance exit with code 3.
#[derive(clap::Args)]
#[command(
    verbatim_doc_comment,
    allow_negative_numbers = true,
    after_help = "Example (shipped data, from the repository root):\n  \
longseq rope --input data/minilm_two_cities_qkv.safetensors --prefix layer0. --tensor q --scaling yarn --factor 4 --original-length 128 --output q_rope.safetensors"
)]
pub struct Args {
    /// safetensors file holding the tensor (and optionally `positions`).
    #[arg(long)]
    input: String,
    /// Memory layout of x, as in `attention`: bhld = [B, H, L, D] (any [.., L, D]), blhd =
    /// [B, L, H, D]. The older spellings `--layout interleaved|half` still name the pairs.
    #[arg(
        long,
        alias = "seq-layout",
        default_value = "bhld",
        value_parser = ["bhld", "blhd", "interleaved", "half"]
    )]
    layout: String,
    /// Packed variable-length sequences: the name of an i32/i64 offsets tensor in --input (B = 1);
    /// positions restart at each sequence, tokens past the last offset are written as 0.
    #[arg(long, value_name = "NAME")]
    cu_seqlens: Option<String>,
    /// Prefix of the tensor names, e.g. `layer0.`.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Name of the tensor to rotate (after the prefix), e.g. `q` or `k`.
    #[arg(long, default_value = "x")]
    tensor: String,
    /// Base of the rotation frequencies.
    #[arg(long, default_value_t = 10_000.0)]
    base: f64,
    /// Context-extension scaling.
    #[arg(long, value_enum, default_value = "none")]
    scaling: Scaling,
    /// Scaling factor s (>= 1).
    #[arg(long, default_value_t = 1.0)]
    factor: f64,
    /// Trained context length L_train (dynamic-ntk and yarn).
    #[arg(long)]
    original_length: Option<usize>,
    /// YaRN ramp start α (in rotations over L_train).
    #[arg(long, default_value_t = 1.0)]
    yarn_alpha: f64,
    /// YaRN ramp end β (in rotations over L_train).
    #[arg(long, default_value_t = 32.0)]
    yarn_beta: f64,
    /// Which elements form the rotated pairs (default interleaved).
    #[arg(long, value_enum)]
    pairs: Option<Pairs>,
    /// Position of row 0.
    #[arg(long, default_value_t = 0)]
    offset: u32,
    /// Where to run: gpu, cpu (the f32 CPU path), reference (f64), or a comma-separated list
    /// (default gpu,reference; cpu,reference when there is no GPU adapter; both = gpu,reference).
    #[arg(long)]
    device: Option<Devices>,
    /// Run the f64 reference even when its estimated time is past the bound.
    #[arg(long)]
    force_reference: bool,
    /// GPU storage dtype (arithmetic is f32 either way); default f16 when the tensor is f16.
    #[arg(long, value_enum)]
    dtype: Option<StorageDtype>,
    /// Where to write tensor `x`.
    #[arg(long)]
    output: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Scaling {
    None,
    Linear,
    Ntk,
    DynamicNtk,
    Yarn,
}

impl Scaling {
    fn name(self) -> &'static str {
        match self {
            Scaling::None => "none",
            Scaling::Linear => "linear",
            Scaling::Ntk => "ntk",
            Scaling::DynamicNtk => "dynamic-ntk",
            Scaling::Yarn => "yarn",
        }
    }
}

/// The scaling as the report shows it: `yarn (s = 4, L_train 128, α 1, β 32)`.
fn describe_scaling(s: &RopeScaling) -> String {
    match *s {
        RopeScaling::None => "no scaling".into(),
        RopeScaling::Linear { factor } => format!("linear (s = {factor})"),
        RopeScaling::Ntk { factor } => format!("ntk (s = {factor})"),
        RopeScaling::DynamicNtk {
            factor,
            original_length,
        } => format!("dynamic-ntk (s = {factor}, L_train {original_length})"),
        RopeScaling::Yarn {
            factor,
            original_length,
            alpha,
            beta,
        } => format!("yarn (s = {factor}, L_train {original_length}, α {alpha}, β {beta})"),
        #[allow(unreachable_patterns)]
        _ => "scaled".into(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pairs {
    /// Pairs (x[2i], x[2i+1]) (RoFormer, LLaMA reference code).
    Interleaved,
    /// Pairs (x[i], x[i + D/2]) (GPT-NeoX, Hugging Face rotate_half).
    Half,
}

fn options(a: &Args) -> Result<RopeOptions, CliError> {
    let need_len = || {
        a.original_length.ok_or_else(|| {
            CliError::Input(format!(
                "--scaling {} needs --original-length (the trained context length)",
                a.scaling.name()
            ))
        })
    };
    let s = a.factor;
    let scaling = match a.scaling {
        Scaling::None => RopeScaling::None,
        Scaling::Linear => RopeScaling::Linear { factor: s },
        Scaling::Ntk => RopeScaling::Ntk { factor: s },
        Scaling::DynamicNtk => RopeScaling::DynamicNtk {
            factor: s,
            original_length: need_len()?,
        },
        Scaling::Yarn => RopeScaling::Yarn {
            factor: s,
            original_length: need_len()?,
            alpha: a.yarn_alpha,
            beta: a.yarn_beta,
        },
    };
    let old = match a.layout.as_str() {
        "interleaved" => Some(Pairs::Interleaved),
        "half" => Some(Pairs::Half),
        _ => None,
    };
    let layout = match (a.pairs, old) {
        (Some(p), Some(o)) if p != o => {
            return Err(CliError::Input(format!(
                "--layout {} and --pairs {} disagree; use --pairs for the pairs and --layout \
                 bhld|blhd for the memory layout",
                a.layout,
                if p == Pairs::Half {
                    "half"
                } else {
                    "interleaved"
                }
            )))
        }
        (Some(Pairs::Half), _) | (None, Some(Pairs::Half)) => RopeLayout::HalfSplit,
        _ => RopeLayout::Interleaved,
    };
    Ok(RopeOptions {
        base: a.base,
        layout,
        scaling,
        ..Default::default()
    })
}

pub fn run(a: Args) -> Result<(), CliError> {
    io::check_output(a.output.as_deref())?;
    let bytes = io::read_file(&a.input)?;
    let st = io::parse(&bytes, &a.input)?;
    let x_name = format!("{}{}", a.prefix, a.tensor);
    let pos_name = format!("{}positions", a.prefix);
    let x = io::read(&st, &x_name, &a.input)?;
    let mut opts = options(&a)?;
    // bhld when --layout names the pairs (the older spelling).
    opts.seq_layout = longseq::types::batch::Layout::parse(&a.layout).unwrap_or_default();
    let len = match opts.seq_layout {
        longseq::types::batch::Layout::Blhd if x.shape.len() == 4 => x.shape[1],
        _ => check_rope(&x.shape, &opts)?.1,
    };
    if let Some(n) = &a.cu_seqlens {
        let cu = crate::attention::read_cu_seqlens(&st, n, &a.input, len)?;
        opts.cu_seqlens = Some(cu);
    }
    let explicit = if st.names().contains(&pos_name.as_str()) {
        let (p, shape) = io::read_u32(&st, &pos_name, &a.input)?;
        if shape != [len] {
            return Err(CliError::Input(format!(
                "tensor `{pos_name}` has shape {shape:?}, expected [{len}] (L of {x_name})"
            )));
        }
        if a.offset != 0 {
            return Err(CliError::Input(format!(
                "--offset and a `{pos_name}` tensor both give the positions; use one"
            )));
        }
        Some(p)
    } else {
        None
    };
    let pos = match &explicit {
        Some(p) => Positions::Explicit(p),
        None => Positions::Offset(a.offset),
    };
    pos.resolve(len)?;
    let dtype = StorageDtype::resolve(a.dtype, &[x.dtype]);
    let mut dev = a.device.unwrap_or_default();
    let xs = if dev.gpu {
        dtype.storable(&x_name, x.to_f32())?
    } else {
        x.to_f32()
    };
    let ctx = dev.open()?;
    println!(
        "input: {} {x_name} {:?} {}; positions {}; {} pairs, base {}, {}{}",
        a.input,
        x.shape,
        io::dtype_name(x.dtype),
        match &explicit {
            Some(_) => format!("from tensor `{pos_name}`"),
            None => format!("{} + l", a.offset),
        },
        match opts.layout {
            RopeLayout::Interleaved => "interleaved",
            RopeLayout::HalfSplit => "half",
        },
        opts.base,
        describe_scaling(&opts.scaling),
        match &ctx {
            Some(_) => format!("; GPU storage {}", dtype.name()),
            None => String::new(),
        }
    );
    let gpu = match &ctx {
        Some(c) => Some(match dtype {
            StorageDtype::F32 => run_gpu::<f32>(c, &xs, &x.shape, pos, &opts, |v| v.to_vec())?,
            StorageDtype::F16 => run_gpu::<f16>(c, &xs, &x.shape, pos, &opts, |v| {
                v.iter().map(|&y| f16::from_f32(y)).collect()
            })?,
        }),
        None => None,
    };
    let reference_run = || {
        let mut r = longseq::reference::positions::rope_batch(&xs, &x.shape, pos, &opts)?;
        // Tokens past the last packed offset: untouched by the op, 0 in a fresh output.
        if opts.cu_seqlens.is_some() {
            r.iter_mut().filter(|v| v.is_nan()).for_each(|v| *v = 0.0);
        }
        Ok(r)
    };
    let cpu = if dev.cpu {
        let y = devices::timed("cpu", &devices::cpu_note(), || {
            Ok(longseq::cpu::positions::rope(&xs, &x.shape, pos, &opts)?)
        })?;
        Some(y.into_iter().map(f64::from).collect())
    } else {
        None
    };
    let reference = dev.reference(
        a.force_reference,
        xs.len() as f64 * 8.0,
        "f64",
        reference_run,
    )?;
    let Some(result) = devices::report(gpu.map(|g| (g, dtype)), cpu, reference)? else {
        return Ok(());
    };
    if let Some(path) = &a.output {
        let o: Vec<f32> = result.iter().map(|&v| v as f32).collect();
        io::write(path, vec![("x", x.shape.clone(), Out::F32(o))])?;
        println!("wrote x {:?} f32 to {path}", x.shape);
    }
    Ok(())
}

/// Uploads, runs once to compile the pipeline, then times one run including readback.
fn run_gpu<T: Element>(
    ctx: &Context,
    x: &[f32],
    shape: &[usize],
    pos: Positions<'_>,
    opts: &RopeOptions,
    conv: impl Fn(&[f32]) -> Vec<T>,
) -> Result<Vec<f64>, CliError> {
    let t = Tensor::from_slice(ctx, &conv(x), shape)?;
    rope(ctx, &t, pos, opts)?.to_vec(ctx)?;
    let start = Instant::now();
    let r = rope(ctx, &t, pos, opts)?.to_vec(ctx)?;
    println!(
        "gpu: {:.3} ms (dispatch + readback, pipeline compiled beforehand)",
        start.elapsed().as_secs_f64() * 1e3
    );
    Ok(r.iter().map(|v| v.to_f64()).collect())
}
