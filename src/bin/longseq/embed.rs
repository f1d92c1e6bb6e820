//! `longseq embed`: embedding lookup `x = one_hot(ids) · table` over tensors in a safetensors file.

use std::time::Instant;

use half::f16;
use longseq::positions::embedding;
use longseq::{Context, Element, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::check::StorageDtype;
use crate::devices::{self, Devices};
use crate::io::{self, CliError, Out};

/// Embedding lookup over tensors in a safetensors file, on the GPU and/or the CPU reference.
///
/// Reads `{P}{table}` ([V, D]; f16, f32 or f64) and `{P}{ids}` ([L] or [B, L]; u8, u16, u32,
/// i32 or i64, every id in 0 ..= V − 1); P = --prefix, names from --table and --ids. With
/// --init normal the table is not read but drawn: [V, D] = [--vocab, --dim] of N(0, 1/D) entries
/// from --seed (the shipped MiniLM file has token ids but no table). Writes tensor `x`
/// ([.., L, D], f32): x[b, l, :] = table[ids[b, l], :].
/// The CPU reference computes the dense product one_hot(ids) · table (O(B·L·V·D)); the GPU
/// gathers rows. An id out of range (its [b, l] position is named), a missing tensor or a bad
/// shape exits with code 2 before anything runs.
#[derive(clap::Args)]
#[command(
    verbatim_doc_comment,
    allow_negative_numbers = true,
    after_help = "Example (shipped data, from the repository root):\n  \
longseq embed --input data/minilm_two_cities_qkv.safetensors --ids token_ids --init normal --vocab 30522 --dim 32 --output x.safetensors"
)]
pub struct Args {
    /// safetensors file holding the ids (and the table unless --init).
    #[arg(long)]
    input: String,
    /// Prefix of the tensor names.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Name of the token-id tensor (after the prefix).
    #[arg(long, default_value = "ids")]
    ids: String,
    /// Name of the table tensor (after the prefix).
    #[arg(long, default_value = "table", conflicts_with = "init")]
    table: String,
    /// Draw the table instead of reading it: normal, N(0, 1/D) entries.
    #[arg(long, value_enum, requires_all = ["vocab", "dim"])]
    init: Option<TableInit>,
    /// --init: vocabulary size V (every id must be below it).
    #[arg(long)]
    vocab: Option<usize>,
    /// --init: embedding width D.
    #[arg(long)]
    dim: Option<usize>,
    /// --init: seed of the draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to run: gpu, cpu (the f32 CPU path), reference (f64), or a comma-separated list
    /// (default gpu,reference; cpu,reference when there is no GPU adapter; both = gpu,reference).
    #[arg(long)]
    device: Option<Devices>,
    /// Run the f64 reference even when its estimated time is past the bound.
    #[arg(long)]
    force_reference: bool,
    /// GPU storage dtype of the table and x; default f16 when the table is stored in f16.
    #[arg(long, value_enum)]
    dtype: Option<StorageDtype>,
    /// Where to write tensor `x`.
    #[arg(long)]
    output: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TableInit {
    /// i.i.d. N(0, 1/D) entries.
    Normal,
}

/// The table `[V, D]` (f32), its shape and stored dtype: read, or drawn for --init.
fn table(
    a: &Args,
    st: &safetensors::SafeTensors<'_>,
) -> Result<(Vec<f32>, Vec<usize>, &'static str), CliError> {
    match (a.init, a.vocab, a.dim) {
        (Some(TableInit::Normal), Some(v), Some(d)) => {
            if v == 0 || d == 0 {
                return Err(CliError::Input("--vocab and --dim must be >= 1".into()));
            }
            let mut rng = StdRng::seed_from_u64(a.seed);
            let s = 1.0 / (d as f64).sqrt();
            let w = (0..v * d)
                .map(|_| (rng.sample::<f64, _>(StandardNormal) * s) as f32)
                .collect();
            Ok((w, vec![v, d], "f32, drawn N(0, 1/D)"))
        }
        (Some(_), _, _) => Err(CliError::Input("--init needs --vocab and --dim".into())),
        (None, _, _) => {
            let name = format!("{}{}", a.prefix, a.table);
            let t = io::read(st, &name, &a.input)?;
            let kind = if t.dtype == safetensors::Dtype::F16 {
                "f16"
            } else {
                "f32"
            };
            Ok((t.to_f32(), t.shape, kind))
        }
    }
}

pub fn run(a: Args) -> Result<(), CliError> {
    io::check_output(a.output.as_deref())?;
    let bytes = io::read_file(&a.input)?;
    let st = io::parse(&bytes, &a.input)?;
    let (w, table_shape, stored) = table(&a, &st)?;
    let ids_name = format!("{}{}", a.prefix, a.ids);
    let (ids, ids_shape) = io::read_u32(&st, &ids_name, &a.input)?;
    let shape = longseq::positions::embedding::check_embedding(&table_shape, &ids, &ids_shape)?;
    let file_dtype = if stored == "f16" {
        safetensors::Dtype::F16
    } else {
        safetensors::Dtype::F32
    };
    let dtype = StorageDtype::resolve(a.dtype, &[file_dtype]);
    let mut dev = a.device.unwrap_or_default();
    let w = if dev.gpu {
        dtype.storable("table", w)?
    } else {
        w
    };
    let ctx = dev.open()?;
    println!(
        "input: {} table {table_shape:?} ({stored}), {ids_name} {ids_shape:?}{}",
        a.input,
        match &ctx {
            Some(_) => format!("; GPU storage {}", dtype.name()),
            None => String::new(),
        }
    );
    let gpu = match &ctx {
        Some(c) => Some(match dtype {
            StorageDtype::F32 => {
                run_gpu::<f32>(c, &w, &table_shape, &ids, &ids_shape, |x| x.to_vec())?
            }
            StorageDtype::F16 => run_gpu::<f16>(c, &w, &table_shape, &ids, &ids_shape, |x| {
                x.iter().map(|&y| f16::from_f32(y)).collect()
            })?,
        }),
        None => None,
    };
    let reference_run =
        || longseq::reference::positions::embedding(&w, &table_shape, &ids, &ids_shape);
    let cpu = if dev.cpu {
        let x = devices::timed("cpu", &devices::cpu_note(), || {
            Ok(longseq::cpu::positions::embedding(
                &w,
                &table_shape,
                &ids,
                &ids_shape,
            )?)
        })?;
        Some(x.into_iter().map(f64::from).collect())
    } else {
        None
    };
    let ops = (ids.len() * table_shape[0] * table_shape[1]) as f64;
    let reference = dev.reference(a.force_reference, ops, "f64 one-hot product", reference_run)?;
    let Some(result) = devices::report(gpu.map(|g| (g, dtype)), cpu, reference)? else {
        return Ok(());
    };
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
