//! `longseq embed`: embedding lookup `x = one_hot(ids) · table` over tensors in a safetensors file.

use std::time::Instant;

use half::f16;
use longseq::positions::embedding;
use longseq::{Context, Element, Tensor};

use crate::io::{self, CliError, Out};
use crate::{compare, open_gpu, Device};

/// Embedding lookup over tensors in a safetensors file, on the GPU and/or the CPU reference.
///
/// Reads `table` ([V, D]; f16, f32 or f64) and `ids` ([L] or [B, L]; U8, U16, U32, I32 or I64,
/// every id in 0 ..= V − 1). Writes tensor `x` ([.., L, D], f32): x[b, l, :] = table[ids[b, l], :].
/// The CPU reference computes the dense product one_hot(ids) · table (O(B·L·V·D)); the GPU
/// gathers rows. An id out of range (its [b, l] position is named), a missing tensor or a bad
/// shape exits with code 2 before anything runs.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// safetensors file holding `table` and `ids`.
    #[arg(long)]
    input: String,
    /// Where to run.
    #[arg(long, value_enum, default_value = "both")]
    device: Device,
    /// GPU storage dtype of the table and x.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: StorageDtype,
    /// Where to write tensor `x`.
    #[arg(long)]
    output: Option<String>,
}

/// GPU storage dtype (arithmetic is f32 either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageDtype {
    F32,
    F16,
}

pub fn run(a: Args) -> Result<(), CliError> {
    let bytes = io::read_file(&a.input)?;
    let st = io::parse(&bytes, &a.input)?;
    let table = io::read(&st, "table", &a.input)?;
    let (ids, ids_shape) = io::read_u32(&st, "ids", &a.input)?;
    let shape = longseq::positions::embedding::check_embedding(&table.shape, &ids, &ids_shape)?;
    let w = table.to_f32();
    let ctx = open_gpu(a.device)?;
    if let Some(c) = &ctx {
        println!("adapter: {}", c.adapter_line());
    }
    println!(
        "input: {} table {:?} {:?}, ids {:?}; GPU storage {:?}",
        a.input, table.shape, table.dtype, ids_shape, a.dtype
    );
    let gpu = match &ctx {
        Some(c) => Some(match a.dtype {
            StorageDtype::F32 => {
                run_gpu::<f32>(c, &w, &table.shape, &ids, &ids_shape, |x| x.to_vec())?
            }
            StorageDtype::F16 => run_gpu::<f16>(c, &w, &table.shape, &ids, &ids_shape, |x| {
                x.iter().map(|&y| f16::from_f32(y)).collect()
            })?,
        }),
        None => None,
    };
    let cpu = if a.device != Device::Gpu {
        let t = Instant::now();
        let x = longseq::reference::positions::embedding(&w, &table.shape, &ids, &ids_shape)?;
        println!(
            "cpu: {:.3} ms (f64 one-hot product)",
            t.elapsed().as_secs_f64() * 1e3
        );
        Some(x)
    } else {
        None
    };
    if let (Some(g), Some(c)) = (&gpu, &cpu) {
        let (abs, rel) = compare(g, c);
        println!("gpu vs cpu: max abs diff {abs:.3e}, relative {rel:.3e}");
    }
    let result = gpu.or(cpu).expect("gpu or cpu ran");
    if let Some(path) = &a.output {
        let x: Vec<f32> = result.iter().map(|&v| v as f32).collect();
        io::write(path, vec![("x", shape.clone(), Out::F32(x))])?;
        println!("wrote x {shape:?} f32 to {path}");
    }
    Ok(())
}

/// Uploads, runs once to compile the pipeline, then times one run including readback.
fn run_gpu<T: Element>(
    ctx: &Context,
    w: &[f32],
    table_shape: &[usize],
    ids: &[u32],
    ids_shape: &[usize],
    conv: impl Fn(&[f32]) -> Vec<T>,
) -> Result<Vec<f64>, CliError> {
    let t = Tensor::from_slice(ctx, &conv(w), table_shape)?;
    embedding(ctx, &t, ids, ids_shape)?.to_vec(ctx)?;
    let start = Instant::now();
    let x = embedding(ctx, &t, ids, ids_shape)?.to_vec(ctx)?;
    println!(
        "gpu: {:.3} ms (dispatch + readback, pipeline compiled beforehand)",
        start.elapsed().as_secs_f64() * 1e3
    );
    Ok(x.iter().map(|v| v.to_f64()).collect())
}
