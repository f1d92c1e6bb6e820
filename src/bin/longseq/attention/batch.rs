//! `longseq attention --method softmax|diag` over real-world batches (issue 14): `--layout blhd`,
//! `--cu-seqlens NAME`, grouped heads and Lq ≠ Lk (from the k/v shapes), on the GPU and the f64
//! reference from the definitions. Tokens past the last packed offset are written as 0 (the GPU
//! op leaves them untouched in a zeroed output).

use half::f16;
use longseq::reference::attention::{diag_attention_batch, softmax_attention_batch};
use longseq::types::batch::{CuSeqlens, GqaDims, Layout};
use longseq::{Context, Element, Tensor};

use super::{op_from_args, Args, Method};
use crate::check::StorageDtype;
use crate::devices;
use crate::io::{self, CliError, HostTensor, Out};
use crate::methods::Op;

/// Whether the flags or the shapes need this path.
pub(super) fn wanted(a: &Args, layout: Layout, q: &[usize], k: &[usize], v: &[usize]) -> bool {
    let plain = layout == Layout::Bhld && a.cu_seqlens.is_none();
    let gqa = k != q || v[..v.len().saturating_sub(1)] != q[..q.len().saturating_sub(1)];
    !plain || (gqa && matches!(a.method, Method::Softmax | Method::Diag))
}

/// Reads the offsets tensor `name` (any integer dtype, i32/i64 as fla writes it) and checks it
/// against the packed length `len`.
pub(crate) fn read_cu_seqlens(
    st: &safetensors::SafeTensors<'_>,
    name: &str,
    path: &str,
    len: usize,
) -> Result<CuSeqlens, CliError> {
    let (offs, shape) = io::read_u32(st, name, path)?;
    if shape.len() != 1 {
        return Err(CliError::Input(format!(
            "--cu-seqlens tensor `{name}` has shape {shape:?}; expected [N + 1]"
        )));
    }
    let offs: Vec<i64> = offs.into_iter().map(i64::from).collect();
    Ok(CuSeqlens::new("attention", &offs, len)?)
}

pub(super) fn run(
    a: &Args,
    st: &safetensors::SafeTensors<'_>,
    (q, k, v): (HostTensor, HostTensor, HostTensor),
    layout: Layout,
) -> Result<(), CliError> {
    if !matches!(a.method, Method::Softmax | Method::Diag) {
        return Err(CliError::Input(format!(
            "--layout blhd, --cu-seqlens and grouped heads go with --method softmax, diag, norm, \
             lightning or linear with an elementwise feature map, not {} (FAVOR+ reads [B, H, L, D] \
             rows only yet)",
            a.method.name()
        )));
    }
    let rank3 = q.shape.len() == 3 && k.shape.len() == 3 && v.shape.len() == 3;
    let lift = |s: &[usize]| {
        if rank3 {
            [&[1][..], s].concat()
        } else {
            s.to_vec()
        }
    };
    // Diag's blocks and causal masks need Lq = Lk (the check's causal rule).
    let same_len = a.causal || a.window.is_some() || a.method == Method::Diag;
    let g = GqaDims::check(
        "attention",
        &lift(&q.shape),
        &lift(&k.shape),
        &lift(&v.shape),
        layout,
        same_len,
    )?;
    let cu = match &a.cu_seqlens {
        Some(n) => Some(read_cu_seqlens(st, n, &a.input, g.q_len)?),
        None => None,
    };
    let mut op = op_from_args(a, st, &lift(&q.shape))?;
    match &mut op {
        Op::Softmax(o) | Op::SoftmaxPositional { opts: o, .. } => {
            (o.layout, o.cu_seqlens) = (layout, cu.clone());
        }
        Op::Diag(o) => (o.layout, o.cu_seqlens) = (layout, cu.clone()),
        _ => unreachable!("checked above"),
    }
    let mut out_shape = g.out_shape.clone();
    if rank3 {
        out_shape.remove(0);
    }
    let dtype = StorageDtype::resolve(a.dtype, &[q.dtype, k.dtype, v.dtype]);
    let mut dev = a.device.unwrap_or_default();
    if dev.cpu {
        return Err(CliError::Input(
            "the f32 CPU path takes neither --layout blhd, --cu-seqlens nor grouped heads / \
             Lq != Lk yet: use --device gpu,reference"
                .into(),
        ));
    }
    let shapes = (q.shape.clone(), k.shape.clone(), v.shape.clone());
    let store = |n: &str, t: &HostTensor| match dev.gpu {
        true => dtype.storable(&format!("{}{n}", a.prefix), t.to_f32()),
        false => Ok(t.to_f32()),
    };
    let (q, k, v) = (store("q", &q)?, store("k", &k)?, store("v", &v)?);
    let ctx = dev.open()?;
    println!(
        "input: {} q {:?}, k {:?}, v {:?} ({}, Hq = {}, Hkv = {}, Lq = {}, Lk = {}{})",
        a.input,
        shapes.0,
        shapes.1,
        shapes.2,
        layout.name(),
        g.q_heads,
        g.kv_heads,
        g.q_len,
        g.kv_len,
        cu.as_ref().map_or(String::new(), |c| format!(
            ", {} packed sequences",
            c.count()
        ))
    );
    println!("method: {}", op.describe());
    let gpu = match &ctx {
        Some(c) => Some((
            match dtype {
                StorageDtype::F32 => gpu_run::<f32>(c, (&q, &k, &v), &shapes, &op, |x| x.to_vec())?,
                StorageDtype::F16 => gpu_run::<f16>(c, (&q, &k, &v), &shapes, &op, |x| {
                    x.iter().map(|&y| f16::from_f32(y)).collect()
                })?,
            },
            dtype,
        )),
        None => None,
    };
    let keys = g.kv_len as f64;
    let ops = (g.batch * g.q_heads * g.q_len) as f64 * keys * (g.dk + g.dv) as f64;
    let reference = dev.reference(a.force_reference, ops, "f64", || {
        let mut r = match &op {
            Op::Softmax(o) => softmax_attention_batch(&q, &k, &v, &g, o, &Default::default()),
            Op::SoftmaxPositional { opts, pos, .. } => {
                softmax_attention_batch(&q, &k, &v, &g, opts, pos)
            }
            Op::Diag(o) => diag_attention_batch(&q, &k, &v, &g, o),
            _ => unreachable!("checked above"),
        }?;
        // The op leaves tokens past the last offset untouched: 0 in a fresh output.
        if let Some(c) = &cu {
            let last = *c.offsets().last().unwrap_or(&0) as usize;
            let s = layout.strides(g.q_heads, g.q_len, g.dv);
            for h in 0..g.q_heads {
                for t in last..g.q_len {
                    for e in 0..g.dv {
                        r[s.index(0, h, t, e)] = 0.0;
                    }
                }
            }
        }
        Ok(r)
    })?;
    let Some(result) = devices::report(gpu, None, reference)? else {
        return Ok(());
    };
    if let Some(path) = &a.output {
        let o: Vec<f32> = result.iter().map(|&x| x as f32).collect();
        io::write(path, vec![("o", out_shape.clone(), Out::F32(o))])?;
        println!("wrote o {out_shape:?} f32 ({}) to {path}", layout.name());
    }
    Ok(())
}

/// Uploads in the given shapes, runs once to compile the pipelines, then times one run.
fn gpu_run<T: Element>(
    ctx: &Context,
    (q, k, v): (&[f32], &[f32], &[f32]),
    (qs, ks, vs): &(Vec<usize>, Vec<usize>, Vec<usize>),
    op: &Op,
    conv: impl Fn(&[f32]) -> Vec<T>,
) -> Result<Vec<f64>, CliError> {
    let tq = Tensor::from_slice(ctx, &conv(q), qs)?;
    let tk = Tensor::from_slice(ctx, &conv(k), ks)?;
    let tv = Tensor::from_slice(ctx, &conv(v), vs)?;
    let o = devices::gpu_timed(|| op.gpu(ctx, &tq, &tk, &tv)?.to_vec(ctx))?;
    Ok(o.iter().map(|x| x.to_f64()).collect())
}
