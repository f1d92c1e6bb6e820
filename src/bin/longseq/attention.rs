//! `longseq attention`: attention over `{P}q`, `{P}k`, `{P}v` from a safetensors file.

use std::time::Instant;

use half::f16;
use longseq::attention::linear::check_shapes;
use longseq::attention::{linear_attention, FeatureMap, LinearAttentionOptions};
use longseq::{Context, Element, Tensor};

use crate::io::{self, CliError, Out};
use crate::{compare, open_gpu, rel_frobenius, Device};

/// Attention over tensors in a safetensors file, on the GPU and/or the CPU reference.
///
/// Reads `{P}q`, `{P}k` ([H, L, Dk] or [B, H, L, Dk]) and `{P}v` ([.., L, Dv]), f16, f32 or f64.
/// Prints the adapter, the shapes, GPU and CPU wall times, the max-abs and normwise relative
/// difference GPU vs CPU and, when `{P}softmax_out` exists, the relative Frobenius error against
/// it. Writes tensor `o` ([.., L, Dv], f32, same rank as q): the GPU result, or the CPU one when
/// only the CPU ran. A missing tensor or a shape mismatch exits with code 2.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// safetensors file holding the input tensors.
    #[arg(long)]
    input: String,
    /// Prefix of the tensor names, e.g. `layer0.`.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Attention method.
    #[arg(long, value_enum, default_value = "linear")]
    method: Method,
    /// Feature map φ for linear attention: elu1 (elu + 1), relu, identity.
    #[arg(long, default_value = "elu1")]
    feature_map: FeatureMap,
    /// Causal: row i attends to rows j <= i.
    #[arg(long)]
    causal: bool,
    /// ε added to the denominator.
    #[arg(long, default_value_t = 1e-6)]
    eps: f32,
    /// Output the numerator alone (no normalisation).
    #[arg(long)]
    no_denominator: bool,
    /// Where to run.
    #[arg(long, value_enum, default_value = "both")]
    device: Device,
    /// GPU storage dtype (arithmetic is f32 either way).
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Dtype,
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Dtype {
    F32,
    F16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum NanPolicy {
    Propagate,
    Error,
}

pub fn run(a: Args) -> Result<(), CliError> {
    let bytes = io::read_file(&a.input)?;
    let st = io::parse(&bytes, &a.input)?;
    let name = |s: &str| format!("{}{s}", a.prefix);
    let q = io::read(&st, &name("q"), &a.input)?;
    let k = io::read(&st, &name("k"), &a.input)?;
    let v = io::read(&st, &name("v"), &a.input)?;
    let dims = check_shapes("attention", &q.shape, &k.shape, &v.shape)?;
    let shapes = format!(
        "q {:?} {:?}, k {:?} {:?}, v {:?} {:?}",
        q.shape, q.dtype, k.shape, k.dtype, v.shape, v.dtype
    );
    let (q, k, v) = (q.to_f32(), k.to_f32(), v.to_f32());
    if a.nan == NanPolicy::Error {
        longseq::check_no_nan("attention", "q", &q)?;
        longseq::check_no_nan("attention", "k", &k)?;
        longseq::check_no_nan("attention", "v", &v)?;
    }
    let Method::Linear = a.method;
    let opts = LinearAttentionOptions {
        feature_map: a.feature_map,
        causal: a.causal,
        eps: a.eps,
        denominator: !a.no_denominator,
    };
    let ctx = open_gpu(a.device)?;
    if let Some(c) = &ctx {
        println!("adapter: {}", c.adapter_line());
    }
    println!("input: {} {shapes}", a.input);
    println!(
        "method: linear, feature map {}, {}, eps {}, denominator {}, GPU storage {:?}",
        a.feature_map.name(),
        if a.causal { "causal" } else { "non-causal" },
        a.eps,
        !a.no_denominator,
        a.dtype
    );

    let gpu = match &ctx {
        Some(c) => Some(match a.dtype {
            Dtype::F32 => run_gpu::<f32>(c, (&q, &k, &v), &dims, &opts, |x| x.to_vec())?,
            Dtype::F16 => run_gpu::<f16>(c, (&q, &k, &v), &dims, &opts, |x| {
                x.iter().map(|&y| f16::from_f32(y)).collect()
            })?,
        }),
        None => None,
    };
    let cpu = if a.device != Device::Gpu {
        let t = Instant::now();
        let o = longseq::reference::attention::linear_attention(&q, &k, &v, &dims, &opts)?;
        println!(
            "cpu: {:.3} ms (f64 reference)",
            t.elapsed().as_secs_f64() * 1e3
        );
        Some(o)
    } else {
        None
    };
    if let (Some(g), Some(c)) = (&gpu, &cpu) {
        let (abs, rel) = compare(g, c);
        println!("gpu vs cpu: max abs diff {abs:.3e}, relative {rel:.3e}");
    }
    let result = gpu.or(cpu).expect("gpu or cpu ran");
    if let Ok(s) = io::read(&st, &name("softmax_out"), &a.input) {
        if s.shape == dims.out_shape {
            println!(
                "vs {}: relative Frobenius error {:.4}",
                name("softmax_out"),
                rel_frobenius(&result, &s.data)
            );
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
    opts: &LinearAttentionOptions,
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
    linear_attention(ctx, &tq, &tk, &tv, opts)?.to_vec(ctx)?;
    let t = Instant::now();
    let o = linear_attention(ctx, &tq, &tk, &tv, opts)?.to_vec(ctx)?;
    println!(
        "gpu: {:.3} ms (dispatch + readback, pipelines compiled beforehand)",
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(o.iter().map(|x| x.to_f64()).collect())
}
