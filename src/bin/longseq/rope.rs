//! `longseq rope`: rotary position embedding of `x` from a safetensors file.

use std::time::Instant;

use half::f16;
use longseq::positions::rope::check_rope;
use longseq::positions::{rope, Positions, RopeLayout, RopeOptions, RopeScaling};
use longseq::{Context, Element, Tensor};

use crate::embed::StorageDtype;
use crate::io::{self, CliError, Out};
use crate::{compare, open_gpu, Device};

/// Rotary position embedding (RoPE) of `x`, on the GPU and/or the CPU reference.
///
/// Reads `x` ([.., L, D], D even; f16, f32 or f64): q or k, e.g. [B, H, L, D]. Row l of every
/// head is at position offset + l, or at positions[l] when the file holds an integer tensor
/// `positions` ([L]; then --offset must be 0). Pair i (interleaved: x[2i], x[2i+1]; half:
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
/// Bad options (odd D, s < 1, α >= β, ...) exit with code 2.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// safetensors file holding `x` (and optionally `positions`).
    #[arg(long)]
    input: String,
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
    /// Which elements form the rotated pairs.
    #[arg(long, value_enum, default_value = "interleaved")]
    layout: Layout,
    /// Position of row 0.
    #[arg(long, default_value_t = 0)]
    offset: u32,
    /// Where to run.
    #[arg(long, value_enum, default_value = "both")]
    device: Device,
    /// GPU storage dtype (arithmetic is f32 either way).
    #[arg(long, value_enum, default_value = "f32")]
    dtype: StorageDtype,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// Pairs (x[2i], x[2i+1]) (RoFormer, LLaMA reference code).
    Interleaved,
    /// Pairs (x[i], x[i + D/2]) (GPT-NeoX, Hugging Face rotate_half).
    Half,
}

fn options(a: &Args) -> Result<RopeOptions, CliError> {
    let need_len = || {
        a.original_length.ok_or_else(|| {
            CliError::Input(format!(
                "--scaling {:?} needs --original-length (the trained context length)",
                a.scaling
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
    let layout = match a.layout {
        Layout::Interleaved => RopeLayout::Interleaved,
        Layout::Half => RopeLayout::HalfSplit,
    };
    Ok(RopeOptions {
        base: a.base,
        layout,
        scaling,
    })
}

pub fn run(a: Args) -> Result<(), CliError> {
    let bytes = io::read_file(&a.input)?;
    let st = io::parse(&bytes, &a.input)?;
    let x = io::read(&st, "x", &a.input)?;
    let opts = options(&a)?;
    let (_, len, _) = check_rope(&x.shape, &opts)?;
    let explicit = if st.names().contains(&"positions") {
        let (p, shape) = io::read_u32(&st, "positions", &a.input)?;
        if shape != [len] {
            return Err(CliError::Input(format!(
                "tensor `positions` has shape {shape:?}, expected [{len}] (L of x)"
            )));
        }
        if a.offset != 0 {
            return Err(CliError::Input(
                "--offset and a `positions` tensor both give the positions; use one".into(),
            ));
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
    let xs = x.to_f32();
    let ctx = open_gpu(a.device)?;
    if let Some(c) = &ctx {
        println!("adapter: {}", c.adapter_line());
    }
    println!(
        "input: {} x {:?} {:?}; positions {}; {:?}, base {}, {:?}; GPU storage {:?}",
        a.input,
        x.shape,
        x.dtype,
        match &explicit {
            Some(_) => "from tensor `positions`".to_string(),
            None => format!("{} + l", a.offset),
        },
        opts.layout,
        opts.base,
        opts.scaling,
        a.dtype
    );
    let gpu = match &ctx {
        Some(c) => Some(match a.dtype {
            StorageDtype::F32 => run_gpu::<f32>(c, &xs, &x.shape, pos, &opts, |v| v.to_vec())?,
            StorageDtype::F16 => run_gpu::<f16>(c, &xs, &x.shape, pos, &opts, |v| {
                v.iter().map(|&y| f16::from_f32(y)).collect()
            })?,
        }),
        None => None,
    };
    let cpu = if a.device != Device::Gpu {
        let t = Instant::now();
        let r = longseq::reference::positions::rope(&xs, &x.shape, pos, &opts)?;
        println!(
            "cpu: {:.3} ms (f64 reference)",
            t.elapsed().as_secs_f64() * 1e3
        );
        Some(r)
    } else {
        None
    };
    if let (Some(g), Some(c)) = (&gpu, &cpu) {
        let (abs, rel) = compare(g, c);
        println!("gpu vs cpu: max abs diff {abs:.3e}, relative {rel:.3e}");
    }
    let result = gpu.or(cpu).expect("gpu or cpu ran");
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
