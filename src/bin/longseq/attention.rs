//! `longseq attention`: attention over `{P}q`, `{P}k`, `{P}v` from a safetensors file.

use half::f16;
use longseq::attention::linear::check_shapes;
use longseq::attention::{
    draw_omega, DiagAttentionOptions, DiagWeights, FavorKind, FavorOptions, FeatureMap,
    LightningOptions, LinearAttentionOptions, Norm, NormAttentionOptions, OmegaDraw,
    SoftmaxAttentionOptions,
};
use longseq::attention::{Alibi, PositionalOptions, ReRope};
use longseq::positions::RopeLayout;
use longseq::{Context, Element, Tensor};

use crate::check::StorageDtype;
use crate::devices::{self, Devices};
use crate::io::{self, CliError, Out};
use crate::methods::Op;
use crate::rel_frobenius;

mod batch;
mod favor_batch;
mod gla_batch;
mod linear_batch;
mod staging;
pub(crate) use batch::read_cu_seqlens;

/// Attention over tensors in a safetensors file, on the GPU, the f32 CPU path and/or the f64
/// reference.
///
/// Reads `{P}q`, `{P}k` ([H, L, Dk] or [B, H, L, Dk]) and `{P}v` ([.., L, Dv]), f16, f32 or f64.
/// Prints the adapter, the shapes, each device's wall time, each result's max-abs and normwise
/// relative difference to the reference when it ran and, when `{P}softmax_out` exists, the relative Frobenius error against
/// it. `--feature-map favor|favor-trig` runs Performer attention with ω drawn from `--seed`
/// (`--num-features M` rows) or read from tensor `--omega NAME` ([M, Dk], used exactly as given).
/// Writes tensor `o` ([.., L, Dv], f32, same rank as q): the GPU result, else the CPU path's,
/// else the reference's. A missing tensor, a shape mismatch or a bad option exits with code 2;
/// a result further from the reference than its tolerance (GPU: f32 1e-4, f16 5e-3; CPU path
/// 1e-4; on max|diff| / max|ref|) exits with code 3 and writes nothing.
/// Softmax and diag also take `--layout blhd` ([B, L, H, D]), `--cu-seqlens NAME` (packed
/// sequences, B = 1; tokens past the last offset are written as 0) and grouped heads from the
/// k/v shapes (k, v: [B, Hkv, Lk, ·], Hkv dividing Hq), on the GPU and the reference; softmax
/// without --causal or --window also takes Lk ≠ Lq (diag's blocks need Lk = Lq).
/// Linear attention (elementwise maps; also GQA and Lk ≠ Lq), lightning and norm (also Lk ≠ Lq
/// without --causal) take --layout and --cu-seqlens too; a causal linear or lightning run on that path, or one given
/// `--initial-state NAME` ([N, Hq, Dk, Dv]; linear with its denominator also reads NAME_z
/// [N, Hq, Dk]), also writes `final_state` (and `final_z`) per sequence. `--device cpu` runs the
/// per-sequence f64 reference there (no f32 CPU path reads strides or packed sequences yet).
/// Favor features take --layout and --cu-seqlens (features and sums per sequence; grouped kv heads; Lq =
/// Lk); causal favor (positive) also --initial-state NAME with NAME_z and NAME_max ([N, H, M]: the
/// running key maxima the state is scaled by) and then writes final_state [N, H, M, Dv],
/// final_z and final_max.
/// Gla with rank-4 q, k, v, g takes --layout blhd, --cu-seqlens and --initial-state NAME
/// ([B or N, H, Dk, Dv]) on the GPU, the f32 CPU path and the reference, and also writes
/// `final_state` [B or N, H, Dk, Dv].
#[derive(clap::Args)]
#[command(
    verbatim_doc_comment,
    allow_negative_numbers = true,
    after_help = "Example (shipped data, from the repository root):\n  \
longseq attention --input data/minilm_two_cities_qkv.safetensors --prefix layer0. --method softmax --output o.safetensors"
)]
pub struct Args {
    /// safetensors file holding the input tensors.
    #[arg(long)]
    input: String,
    /// Memory layout of q, k, v and the output: bhld = [B, H, L, D], blhd = [B, L, H, D].
    #[arg(long, default_value = "bhld", value_parser = ["bhld", "blhd"])]
    layout: String,
    /// Packed variable-length sequences: the name of an i32/i64 offsets tensor in --input (B = 1).
    #[arg(long, value_name = "NAME")]
    cu_seqlens: Option<String>,
    /// Causal linear / lightning: tensor NAME [N, Hq, Dk, Dv] (N = B, or the packed sequences)
    /// is the state S before the first token, and NAME_z [N, Hq, Dk] the denominator's z (linear
    /// with its denominator). The output file then also gets final_state (and final_z).
    /// Causal favor: NAME [N, H, M, Dv], NAME_z and NAME_max [N, H, M] (final_max too).
    /// gla: NAME [B, H, Dk, Dv] ([N, H, Dk, Dv] with --cu-seqlens) is the state S before the
    /// first token (read as f32).
    #[arg(long, value_name = "NAME")]
    initial_state: Option<String>,
    /// Prefix of the tensor names, e.g. `layer0.`.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Attention method.
    #[arg(long, value_enum, default_value = "linear")]
    method: Method,
    /// Feature map φ for linear and norm attention: elu1 (elu + 1), relu, elu, identity; for
    /// linear attention also Performer random features favor (positive, FAVOR+) and favor-trig
    /// (sin/cos). (Lightning uses q and k as given.)
    #[arg(long, default_value = "elu1")]
    feature_map: Phi,
    /// favor*: number M of random features (ω: [M, Dk]); with --omega it must equal M.
    #[arg(long)]
    num_features: Option<usize>,
    /// favor*: seed for drawing ω.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// favor*: how ω is drawn.
    #[arg(long, value_enum, default_value = "orthogonal-chi")]
    omega_draw: Draw,
    /// favor*: name of a tensor [M, Dk] in the input file used as ω exactly as given (no
    /// rescaling, no redraw).
    #[arg(long)]
    omega: Option<String>,
    /// Causal: row i attends to rows j <= i. (Lightning is always causal.)
    #[arg(long)]
    causal: bool,
    /// ε added to the denominator (linear), or inside the norm (norm, diag with relu weights).
    #[arg(long, default_value_t = 1e-6)]
    eps: f32,
    /// Output norm over Dv for norm attention and diag with relu weights:
    /// simple-rmsnorm, rmsnorm, layernorm (unit gain, zero bias).
    #[arg(long, default_value = "simple-rmsnorm")]
    norm: Norm,
    /// Block length: DiagAttention's w (default 64), Lightning's block (default: largest of
    /// 64/32/16/8 that fits the device).
    #[arg(long)]
    block: Option<u32>,
    /// DiagAttention's weights inside a block: softmax, or relu followed by --norm.
    #[arg(long, value_enum, default_value = "softmax")]
    weights: Weights,
    /// Lightning's per-head decay rates s_h (λ_h = exp(−s_h)): the ALiBi slopes 2^(−8(h+1)/H).
    #[arg(long, value_enum, default_value = "alibi", conflicts_with = "decay")]
    slopes: Slopes,
    /// Lightning's decay rates from tensor NAME ([H], s_h >= 0) of the input file (no prefix).
    #[arg(long, value_name = "NAME")]
    decay: Option<String>,
    /// Logit scale for softmax and diag, output scale for gla (default 1/sqrt(Dk)).
    #[arg(long)]
    scale: Option<f32>,
    /// Softmax: ALiBi bias −m_h·|i − j| on the logits, m_h = 2^(−8h/H), h = 1..H, for H a power
    /// of two (the ALiBi reference code's interleaved slopes otherwise).
    #[arg(long)]
    alibi: bool,
    /// Softmax: multiply the logits of query i by max(1, ln n_i / ln L_TRAIN), n_i = keys it sees.
    #[arg(long, value_name = "L_TRAIN")]
    log_n_scale: Option<usize>,
    /// Softmax: sliding window, query i sees keys j in (i − W, i] (implies causal).
    #[arg(long, value_name = "W")]
    window: Option<usize>,
    /// Softmax: ReRoPE, rotary inside the kernel on the raw q and k with the relative position
    /// i − j clipped to [−W, W].
    #[arg(long, value_name = "W")]
    rerope: Option<usize>,
    /// ReRoPE's rotary base.
    #[arg(long, default_value_t = 10_000.0)]
    rerope_base: f64,
    /// ReRoPE's pair layout: interleaved (x[2i], x[2i+1]) or half (x[i], x[i + D/2]).
    #[arg(long, value_enum, default_value = "interleaved")]
    rerope_layout: crate::rope::Pairs,
    /// Output the numerator alone (no normalisation).
    #[arg(long)]
    no_denominator: bool,
    /// Where to run: gpu, cpu (the f32 CPU path), reference (f64), or a comma-separated list
    /// (default gpu,reference; cpu,reference when there is no GPU adapter; both = gpu,reference).
    #[arg(long)]
    device: Option<Devices>,
    /// Run the f64 reference even when its estimated time is past the bound.
    #[arg(long)]
    force_reference: bool,
    /// GPU storage dtype (arithmetic is f32 either way); default f16 when q, k and v are stored
    /// in f16, else f32.
    #[arg(long, value_enum)]
    dtype: Option<StorageDtype>,
    /// NaN in the inputs: propagate to the outputs that depend on it, or refuse (exit 2).
    #[arg(long, value_enum, default_value = "propagate")]
    nan: NanPolicy,
    /// Where to write tensor `o`.
    #[arg(long)]
    output: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Method {
    /// Kernelized linear attention (Katharopoulos et al. 2020).
    Linear,
    /// Exact softmax attention, tiled with the online softmax (O(L) memory).
    Softmax,
    /// TransNormer's NormAttention: Norm(φ(Q)(φ(K)ᵀV)).
    Norm,
    /// TransNormer's DiagAttention: attention inside blocks of --block positions.
    Diag,
    /// Lightning attention: causal linear attention with per-head decay, block-wise.
    Lightning,
    /// Gated linear attention (Yang et al. 2024): causal, reads the log forget gates `{P}g`
    /// ([.., L, Dk] like q, ≤ 0); S_t = diag(exp g_t) S_{t−1} + k_tᵀ v_t, o_t = scale q_t S_t.
    Gla,
}

/// `--feature-map`: an elementwise φ or Performer random features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phi {
    Map(FeatureMap),
    Favor(FavorKind),
}

impl std::str::FromStr for Phi {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "favor" => Ok(Phi::Favor(FavorKind::Positive)),
            "favor-trig" => Ok(Phi::Favor(FavorKind::Trig)),
            _ => s.parse().map(Phi::Map).map_err(|_| {
                format!("unknown feature map `{s}` (expected elu1, relu, elu, identity, favor or favor-trig)")
            }),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Draw {
    /// Blocks of Dk orthogonal rows, norms of independent Gaussian vectors.
    OrthogonalChi,
    /// Blocks of Dk orthogonal rows, every norm √Dk.
    OrthogonalSqrtD,
    /// i.i.d. N(0, 1) entries.
    Gaussian,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Linear => "linear",
            Method::Softmax => "softmax",
            Method::Norm => "norm",
            Method::Diag => "diag",
            Method::Lightning => "lightning",
            Method::Gla => "gla",
        }
    }
}

impl Draw {
    fn name(self) -> &'static str {
        match self {
            Draw::OrthogonalChi => "orthogonal-chi",
            Draw::OrthogonalSqrtD => "orthogonal-sqrt-d",
            Draw::Gaussian => "gaussian",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Weights {
    Softmax,
    Relu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Slopes {
    Alibi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum NanPolicy {
    Propagate,
    Error,
}

pub fn run(a: Args) -> Result<(), CliError> {
    io::check_output(a.output.as_deref())?;
    let bytes = io::read_file(&a.input)?;
    let st = io::parse(&bytes, &a.input)?;
    let name = |s: &str| format!("{}{s}", a.prefix);
    let q = io::read(&st, &name("q"), &a.input)?;
    let k = io::read(&st, &name("k"), &a.input)?;
    let v = io::read(&st, &name("v"), &a.input)?;
    if a.nan == NanPolicy::Error {
        // Before any path is chosen, so the batch path refuses NaN the same way.
        for (n, t) in [("q", &q), ("k", &k), ("v", &v)] {
            longseq::check_no_nan("attention", n, &t.to_f32())?;
        }
    }
    let layout = longseq::types::batch::Layout::parse(&a.layout).unwrap_or_default();
    let packed = layout != longseq::types::batch::Layout::Bhld || a.cu_seqlens.is_some();
    if a.method == Method::Gla && (packed || a.initial_state.is_some() || q.shape.len() == 4) {
        return gla_batch::run(&a, &st, (q, k, v), layout);
    }
    if favor_batch::wanted(&a, layout, &q.shape, &k.shape) {
        return favor_batch::run(&a, &st, (q, k, v), layout);
    }
    if linear_batch::wanted(&a, layout, &q.shape, &k.shape, &v.shape) {
        return linear_batch::run(&a, &st, (q, k, v), layout);
    }
    if batch::wanted(&a, layout, &q.shape, &k.shape, &v.shape) {
        return batch::run(&a, &st, (q, k, v), layout);
    }
    let dims = check_shapes("attention", &q.shape, &k.shape, &v.shape)?;
    let shapes = format!(
        "q {:?} {}, k {:?} {}, v {:?} {}",
        q.shape,
        io::dtype_name(q.dtype),
        k.shape,
        io::dtype_name(k.dtype),
        v.shape,
        io::dtype_name(v.dtype)
    );
    let dtype = StorageDtype::resolve(a.dtype, &[q.dtype, k.dtype, v.dtype]);
    let q_shape = q.shape.clone();
    let mut dev = a.device.unwrap_or_default();
    let gpu_runs = dev.gpu;
    let store = |n: &str, t: &io::HostTensor| {
        if gpu_runs {
            dtype.storable(&name(n), t.to_f32())
        } else {
            Ok(t.to_f32())
        }
    };
    let (q, k, v) = (store("q", &q)?, store("k", &k)?, store("v", &v)?);
    let mut op = op_from_args(&a, &st, &q_shape)?;
    if let Op::Gla { g, .. } = &mut op {
        let t = io::read(&st, &name("g"), &a.input)?;
        if t.shape != q_shape {
            return Err(CliError::Input(format!(
                "tensor `{}` has shape {:?}, expected {q_shape:?} (like q)",
                name("g"),
                t.shape
            )));
        }
        let gv = t.to_f32();
        if a.nan == NanPolicy::Error {
            longseq::check_no_nan("attention", "g", &gv)?;
        }
        // GLA's gates are log forget gates: a positive one grows the state without bound.
        if let Some(i) = gv.iter().position(|&x| x > 0.0) {
            return Err(CliError::Input(format!(
                "tensor `{}` holds {} > 0 at flat index {i}; GLA's log forget gates must be <= 0",
                name("g"),
                gv[i]
            )));
        }
        *g = store("g", &t)?;
    }
    let ctx = dev.open()?;
    println!("input: {} {shapes}", a.input);
    match &ctx {
        Some(_) => println!("method: {}; GPU storage {}", op.describe(), dtype.name()),
        None => println!("method: {}", op.describe()),
    }

    let gpu = match &ctx {
        Some(c) => Some(match dtype {
            StorageDtype::F32 => run_gpu::<f32>(c, (&q, &k, &v), &dims, &op, |x| x.to_vec())?,
            StorageDtype::F16 => run_gpu::<f16>(c, (&q, &k, &v), &dims, &op, |x| {
                x.iter().map(|&y| f16::from_f32(y)).collect()
            })?,
        }),
        None => None,
    };
    let cpu = if dev.cpu {
        Some(devices::timed("cpu", &devices::cpu_note(), || {
            Ok(op.fast(&q, &k, &v, &dims)?)
        })?)
    } else {
        None
    };
    let reference = dev.reference(a.force_reference, op.reference_ops(&dims), "f64", || {
        op.cpu(&q, &k, &v, &dims)
    })?;
    let Some(result) = devices::report(gpu.map(|g| (g, dtype)), cpu, reference)? else {
        return Ok(());
    };
    if let Some(what) = op.compares_to_softmax() {
        if let Ok(s) = io::read(&st, &name("softmax_out"), &a.input) {
            if s.shape == dims.out_shape {
                println!(
                    "vs {} (exact non-causal softmax, {what}): relative Frobenius error {:.3e}",
                    name("softmax_out"),
                    rel_frobenius(&result, &s.data)
                );
            }
        }
    }
    if let Some(path) = &a.output {
        let o: Vec<f32> = result.iter().map(|&x| x as f32).collect();
        io::write(path, vec![("o", dims.out_shape.clone(), Out::F32(o))])?;
        println!("wrote o {:?} f32 to {path}", dims.out_shape);
    }
    Ok(())
}

/// Uploads, runs once to compile the pipelines, then times one run including readback.
fn run_gpu<T: Element>(
    ctx: &Context,
    (q, k, v): (&[f32], &[f32], &[f32]),
    dims: &longseq::attention::linear::AttnDims,
    op: &Op,
    conv: impl Fn(&[f32]) -> Vec<T>,
) -> Result<Vec<f64>, CliError> {
    let s = |n: usize| {
        let mut sh = dims.out_shape.clone();
        *sh.last_mut().unwrap() = n;
        sh
    };
    let tq = Tensor::from_slice(ctx, &conv(q), &s(dims.dk))?;
    let tk = Tensor::from_slice(ctx, &conv(k), &s(dims.dk))?;
    let tv = Tensor::from_slice(ctx, &conv(v), &s(dims.dv))?;
    let o = devices::gpu_timed(|| op.gpu(ctx, &tq, &tk, &tv)?.to_vec(ctx))?;
    Ok(o.iter().map(|x| x.to_f64()).collect())
}

/// The method and its options from the flags; `--decay NAME` is read from the input file.
fn op_from_args(
    a: &Args,
    st: &safetensors::SafeTensors<'_>,
    q_shape: &[usize],
) -> Result<Op, CliError> {
    let weights = match a.weights {
        Weights::Softmax => DiagWeights::Softmax,
        Weights::Relu => DiagWeights::Relu,
    };
    let dk = q_shape[q_shape.len() - 1];
    let map = || match a.feature_map {
        Phi::Map(fm) => Ok(fm),
        Phi::Favor(_) => Err(CliError::Input(format!(
            "--feature-map favor/favor-trig goes with --method linear, not {}",
            a.method.name()
        ))),
    };
    if !matches!(a.feature_map, Phi::Favor(_)) && (a.num_features.is_some() || a.omega.is_some()) {
        return Err(CliError::Input(
            "--num-features and --omega go with --feature-map favor or favor-trig".into(),
        ));
    }
    if a.block == Some(0) {
        return Err(CliError::Input(
            "--block 0: the block length must be >= 1".into(),
        ));
    }
    if a.method != Method::Softmax && positional(a).is_some() {
        return Err(CliError::Input(
            "--alibi, --log-n-scale, --window and --rerope need --method softmax".into(),
        ));
    }
    Ok(match a.method {
        Method::Linear => match a.feature_map {
            Phi::Map(fm) => Op::Linear(LinearAttentionOptions {
                feature_map: fm,
                causal: a.causal,
                eps: a.eps,
                denominator: !a.no_denominator,
                ..Default::default()
            }),
            Phi::Favor(kind) => {
                let (omega, m) = omega(a, st, dk)?;
                Op::Favor {
                    omega,
                    m,
                    opts: FavorOptions {
                        kind,
                        causal: a.causal,
                    },
                    source: match &a.omega {
                        Some(n) => format!("tensor `{n}`"),
                        None => format!("{} draw, seed {}", a.omega_draw.name(), a.seed),
                    },
                }
            }
        },
        Method::Softmax => {
            let opts = SoftmaxAttentionOptions {
                causal: a.causal,
                scale: a.scale,
                ..Default::default()
            };
            match positional(a) {
                Some(pos) => Op::SoftmaxPositional {
                    opts,
                    pos,
                    heads: q_shape[q_shape.len() - 3],
                },
                None => Op::Softmax(opts),
            }
        }
        Method::Norm => Op::Norm(NormAttentionOptions {
            feature_map: map()?,
            causal: a.causal,
            norm: a.norm,
            eps: a.eps,
        }),
        Method::Diag => Op::Diag(DiagAttentionOptions {
            block: a.block.unwrap_or(64),
            causal: a.causal,
            scale: a.scale,
            weights,
            norm: a.norm,
            eps: a.eps,
            ..Default::default()
        }),
        Method::Lightning => {
            let Slopes::Alibi = a.slopes;
            let slopes = match &a.decay {
                Some(name) => {
                    let t = io::read(st, name, &a.input)?;
                    if t.shape.len() != 1 {
                        return Err(CliError::Input(format!(
                            "--decay tensor `{name}` has shape {:?}; expected [H]",
                            t.shape
                        )));
                    }
                    Some(t.to_f32())
                }
                None => None,
            };
            Op::Lightning {
                opts: LightningOptions {
                    block: a.block,
                    ..Default::default()
                },
                slopes,
                heads: q_shape[q_shape.len() - 3],
            }
        }
        // The gates are read (and rounded to the storage dtype) by `run`.
        Method::Gla => Op::Gla {
            g: Vec::new(),
            scale: a.scale,
        },
    })
}

/// The softmax position terms from the flags; None when no flag asks for one.
fn positional(a: &Args) -> Option<PositionalOptions<'static>> {
    let pos = PositionalOptions {
        alibi: a.alibi.then_some(Alibi::Standard),
        log_n_train: a.log_n_scale,
        window: a.window,
        rerope: a.rerope.map(|window| ReRope {
            window,
            base: a.rerope_base,
            layout: match a.rerope_layout {
                crate::rope::Pairs::Interleaved => RopeLayout::Interleaved,
                crate::rope::Pairs::Half => RopeLayout::HalfSplit,
            },
        }),
    };
    (pos != PositionalOptions::default()).then_some(pos)
}

/// ω for favor*: the tensor named by --omega as given, or drawn from --seed.
fn omega(
    a: &Args,
    st: &safetensors::SafeTensors<'_>,
    dk: usize,
) -> Result<(Vec<f32>, usize), CliError> {
    match (&a.omega, a.num_features) {
        (Some(name), m) => {
            let w = io::read(st, name, &a.input)?;
            if w.shape.len() != 2 || w.shape[1] != dk || w.shape[0] == 0 {
                return Err(CliError::Input(format!(
                    "--omega `{name}` has shape {:?}; expected [M, {dk}] with M >= 1",
                    w.shape
                )));
            }
            if m.is_some_and(|m| m != w.shape[0]) {
                return Err(CliError::Input(format!(
                    "--num-features {} but --omega `{name}` has M = {}",
                    m.unwrap_or(0),
                    w.shape[0]
                )));
            }
            Ok((w.to_f32(), w.shape[0]))
        }
        (None, Some(m)) => {
            let draw = match a.omega_draw {
                Draw::OrthogonalChi => OmegaDraw::OrthogonalChi,
                Draw::OrthogonalSqrtD => OmegaDraw::OrthogonalSqrtD,
                Draw::Gaussian => OmegaDraw::Gaussian,
            };
            Ok((draw_omega(m, dk, draw, a.seed)?, m))
        }
        (None, None) => Err(CliError::Input(
            "--feature-map favor needs --num-features M or --omega NAME".into(),
        )),
    }
}
