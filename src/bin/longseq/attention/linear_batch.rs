//! `longseq attention --method linear|lightning` over real-world batches (issue 14): `--layout
//! blhd`, `--cu-seqlens NAME`, grouped heads and Lq ≠ Lk (linear, from the k/v shapes), and a
//! state in and out for causal runs (`--initial-state NAME`, with z in `NAME_z` when there is a
//! denominator; the output file gets `final_state` `[N, Hq, Dk, Dv]` and, for linear attention
//! with its denominator, `final_z` `[N, Hq, Dk]`). GPU against the per-sequence f64 reference;
//! `--device cpu` runs that reference (no f32 CPU path reads strides or packed sequences yet).
//! Tokens past the last packed offset are written as 0 (the GPU op leaves them untouched in a
//! zeroed output).

use half::f16;
use longseq::attention::{
    alibi_slopes, lightning_attention_varlen_with_state, lightning_attention_with_state,
    linear_attention, linear_attention_varlen, linear_attention_varlen_with_state,
    linear_attention_with_state, norm_attention_batch as norm_attention_batch_gpu, Affine,
    LightningOptions, LinearAttentionOptions, LinearState, NormAttentionOptions,
};
use longseq::reference::attention::{
    lightning_attention_varlen as lightning_ref, linear_attention_batch, norm_attention_batch,
};
use longseq::types::batch::{CuSeqlens, GqaDims, Layout};
use longseq::{Context, Element, Tensor};

use super::{op_from_args, read_cu_seqlens, staging, Args, Method, Phi};
use crate::io::{CliError, HostTensor};
use crate::methods::Op;

/// Whether this path runs: linear attention with an elementwise map, or Lightning, when the
/// layout, packing, grouped heads or an initial state ask for it.
pub(super) fn wanted(a: &Args, layout: Layout, q: &[usize], k: &[usize], v: &[usize]) -> bool {
    let gqa = k != q || v[..v.len().saturating_sub(1)] != q[..q.len().saturating_sub(1)];
    let plain = layout == Layout::Bhld && a.cu_seqlens.is_none() && !gqa;
    let family = matches!(
        (a.method, a.feature_map),
        (Method::Linear | Method::Norm, Phi::Map(_)) | (Method::Lightning, _)
    );
    family && (!plain || a.initial_state.is_some())
}

/// The op after the checks: options, the packing and the state going in.
struct Run {
    g: GqaDims,
    linear: Option<LinearAttentionOptions>,
    lightning: Option<(LightningOptions, Vec<f32>)>,
    norm: Option<NormAttentionOptions>,
    cu: Option<CuSeqlens>,
    /// S `[N, Hq, Dk, Dv]` and z `[N, Hq, Dk]` (z zero without a denominator).
    initial: Option<(Vec<f32>, Vec<f32>)>,
    causal: bool,
    /// Whether z is an output (linear attention with its denominator).
    has_z: bool,
}

/// A final (S, z) read back from the GPU, when causal.
type F32State = Option<(Vec<f32>, Vec<f32>)>;

/// What a device returns: o, and the final (S, z) when causal.
type Outcome = (Vec<f64>, Option<(Vec<f64>, Vec<f64>)>);

pub(super) fn run(
    a: &Args,
    st: &safetensors::SafeTensors<'_>,
    qkv: (HostTensor, HostTensor, HostTensor),
    layout: Layout,
) -> Result<(), CliError> {
    let r = plan(a, st, &staging::lift((&qkv.0, &qkv.1, &qkv.2)).1, layout)?;
    let sg = staging::stage(a, qkv)?;
    let (g, dtype, mut dev) = (&r.g, sg.dtype, sg.dev);
    let out_shape = sg.out_shape(g);
    let shapes = &sg.shapes;
    let [q, k, v] = &sg.qkv;
    let ctx = dev.open()?;
    println!(
        "input: {} q {:?}, k {:?}, v {:?} ({}, Hq = {}, Hkv = {}, Lq = {}, Lk = {}{}{})",
        a.input,
        shapes.0,
        shapes.1,
        shapes.2,
        layout.name(),
        g.q_heads,
        g.kv_heads,
        g.q_len,
        g.kv_len,
        r.cu.as_ref().map_or(String::new(), |c| format!(
            ", {} packed sequences",
            c.count()
        )),
        if r.initial.is_some() {
            ", initial state"
        } else {
            ""
        }
    );
    println!("method: {}", describe(&r));
    let ops = (g.q_heads * g.q_len.max(g.kv_len) * g.dk * g.dv) as f64 * 2.0;
    let [gpu, cpu, refr] = staging::run_devices(
        a,
        (&dev, ctx.as_ref(), dtype),
        ops,
        (
            |c: &Context| gpu_run::<f32>(c, &sg, &r, |x| x.to_vec()),
            |c: &Context| gpu_run::<f16>(c, &sg, &r, staging::f16s),
        ),
        || reference(&r, (q, k, v)),
    )?;
    let n = r.cu.as_ref().map_or(g.batch, CuSeqlens::count);
    let (h, dk, dv) = (g.q_heads, g.dk, g.dv);
    let named = |x: Option<Outcome>| {
        x.map(|(o, st)| {
            let mut v = Vec::new();
            if let Some((s, z)) = st {
                v.push(("final_state", vec![n, h, dk, dv], s));
                if r.has_z {
                    v.push(("final_z", vec![n, h, dk], z));
                }
            }
            (o, v)
        })
    };
    staging::finish(a, dtype, &out_shape, [named(gpu), named(cpu), named(refr)])
}

fn describe(r: &Run) -> String {
    if let Some(o) = &r.norm {
        return format!(
            "norm attention ({:?}, {}, {:?})",
            o.feature_map,
            if o.causal { "causal" } else { "non-causal" },
            o.norm
        );
    }
    match (&r.linear, &r.lightning) {
        (Some(o), _) => format!(
            "linear attention ({:?}, {}{})",
            o.feature_map,
            if o.causal { "causal" } else { "non-causal" },
            if o.denominator {
                ""
            } else {
                ", no denominator"
            }
        ),
        _ => "lightning attention (causal, per-head decay)".into(),
    }
}

/// Checks the shapes, reads the offsets and the initial state, and resolves the options.
fn plan(
    a: &Args,
    st: &safetensors::SafeTensors<'_>,
    (qs, ks, vs): &(Vec<usize>, Vec<usize>, Vec<usize>),
    layout: Layout,
) -> Result<Run, CliError> {
    let lightning = a.method == Method::Lightning;
    let causal = a.causal || lightning;
    let g = GqaDims::check("attention", qs, ks, vs, layout, causal)?;
    let cu = match &a.cu_seqlens {
        Some(n) => Some(read_cu_seqlens(st, n, &a.input, g.q_len)?),
        None => None,
    };
    let mut r = Run {
        g,
        linear: None,
        lightning: None,
        norm: None,
        cu,
        initial: None,
        causal,
        has_z: false,
    };
    match op_from_args(a, st, qs)? {
        Op::Linear(o) => {
            r.has_z = causal && o.denominator;
            r.linear = Some(LinearAttentionOptions { layout, ..o });
        }
        Op::Lightning { opts, slopes, .. } => {
            let sl = slopes.unwrap_or_else(|| alibi_slopes(r.g.q_heads));
            r.lightning = Some((LightningOptions { layout, ..opts }, sl));
        }
        Op::Norm(o) => {
            r.norm = Some(o);
            // NormAttention's output is normalised per token: it has no state to carry.
            r.causal = false;
        }
        _ => unreachable!("wanted() admits linear, norm and lightning only"),
    }
    if let Some(name) = &a.initial_state {
        if !r.causal {
            return Err(CliError::Input(
                "--initial-state needs a causal linear or lightning run (--causal; norm has no \
                 state)"
                    .into(),
            ));
        }
        let n = r.cu.as_ref().map_or(r.g.batch, CuSeqlens::count);
        let (h, dk, dv) = (r.g.q_heads, r.g.dk, r.g.dv);
        let read = |name: &str, want| staging::read_state(a, st, name, want);
        let s = read(name, vec![n, h, dk, dv])?;
        let z = match r.has_z {
            true => read(&format!("{name}_z"), vec![n, h, dk])?,
            false => vec![0.0; n * h * dk],
        };
        r.initial = Some((s, z));
    }
    Ok(r)
}

/// The per-sequence f64 reference (tokens past the last offset written as 0, as the op leaves
/// them in a fresh output).
fn reference(r: &Run, (q, k, v): (&[f32], &[f32], &[f32])) -> Result<Outcome, CliError> {
    let g = &r.g;
    let init: Option<(Vec<f64>, Vec<f64>)> = r.initial.as_ref().map(|(s, z)| {
        (
            s.iter().map(|&x| x as f64).collect(),
            z.iter().map(|&x| x as f64).collect(),
        )
    });
    if let Some(opts) = &r.norm {
        let mut o = norm_attention_batch((q, k, v), g, &Affine::default(), opts, r.cu.as_ref())?;
        staging::zero_past_last(&r.g, r.cu.as_ref(), &mut o);
        return Ok((o, None));
    }
    let (mut o, state) = match (&r.linear, &r.lightning) {
        (Some(opts), _) => {
            let init = init.as_ref().map(|(s, z)| (&s[..], &z[..]));
            let b = linear_attention_batch((q, k, v), g, opts, r.cu.as_ref(), init)?;
            (b.o, (b.s, b.z))
        }
        (None, Some((opts, sl))) => {
            let init = init.as_ref().map(|(s, _)| &s[..]);
            let (o, s) = lightning_ref((q, k, v), g, sl, opts.feature_map, r.cu.as_ref(), init)?;
            let z = vec![0.0; s.len() / g.dv.max(1)];
            (o, (s, z))
        }
        _ => unreachable!("plan sets one"),
    };
    staging::zero_past_last(&r.g, r.cu.as_ref(), &mut o);
    Ok((o, r.causal.then_some(state)))
}

/// Uploads in the given shapes, runs once to compile the pipelines, then times one run.
fn gpu_run<T: Element>(
    ctx: &Context,
    sg: &staging::Staged,
    r: &Run,
    conv: impl Fn(&[f32]) -> Vec<T>,
) -> Result<Outcome, CliError> {
    let [tq, tk, tv] = sg.upload(ctx, conv)?;
    let g = &r.g;
    let n = r.cu.as_ref().map_or(g.batch, CuSeqlens::count);
    let init = match &r.initial {
        Some((s, z)) => Some(LinearState {
            s: Tensor::from_slice(ctx, s, &[n, g.q_heads, g.dk, g.dv])?,
            z: Tensor::from_slice(ctx, z, &[n, g.q_heads, g.dk])?,
        }),
        None => None,
    };
    let cu = r.cu.as_ref();
    let go = || -> longseq::Result<(Vec<T>, F32State)> {
        if let Some(o) = &r.norm {
            let none = Affine::default();
            let x = norm_attention_batch_gpu(ctx, &tq, &tk, &tv, &none, g.layout, cu, o)?;
            return Ok((x.to_vec(ctx)?, None));
        }
        let (o, st) = match (&r.linear, &r.lightning, cu) {
            (Some(o), _, Some(c)) if r.causal => {
                let (x, s) =
                    linear_attention_varlen_with_state(ctx, &tq, &tk, &tv, c, init.as_ref(), o)?;
                (x, Some((s.s, Some(s.z))))
            }
            (Some(o), _, None) if r.causal => {
                let (x, s) = linear_attention_with_state(ctx, &tq, &tk, &tv, init.as_ref(), o)?;
                (x, Some((s.s, Some(s.z))))
            }
            (Some(o), _, Some(c)) => (linear_attention_varlen(ctx, &tq, &tk, &tv, c, o)?, None),
            (Some(o), _, None) => (linear_attention(ctx, &tq, &tk, &tv, o)?, None),
            (None, Some((o, sl)), cu) => {
                let s0 = init.as_ref().map(|x| &x.s);
                let (x, s) = match cu {
                    Some(c) => lightning_attention_varlen_with_state(
                        ctx,
                        &tq,
                        &tk,
                        &tv,
                        Some(&sl[..]),
                        c,
                        s0,
                        o,
                    )?,
                    None => {
                        lightning_attention_with_state(ctx, &tq, &tk, &tv, Some(&sl[..]), s0, o)?
                    }
                };
                (x, Some((s, None)))
            }
            _ => unreachable!("plan sets one"),
        };
        let st = match st {
            Some((s, z)) => {
                let s = s.to_vec(ctx)?;
                let z = match z {
                    Some(z) => z.to_vec(ctx)?,
                    None => vec![0.0; s.len() / g.dv.max(1)],
                };
                Some((s, z))
            }
            None => None,
        };
        Ok((o.to_vec(ctx)?, st))
    };
    let (o, st) = crate::devices::gpu_timed(go)?;
    let f = |x: &[f32]| x.iter().map(|&y| y as f64).collect::<Vec<f64>>();
    Ok((
        o.iter().map(|x| x.to_f64()).collect(),
        st.map(|(s, z)| (f(&s), f(&z))),
    ))
}
