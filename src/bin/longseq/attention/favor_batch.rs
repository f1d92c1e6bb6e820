//! `longseq attention --feature-map favor|favor-trig` over real-world batches (issue 14):
//! `--layout blhd`, `--cu-seqlens NAME` and, for causal positive features (FAVOR+), a state in
//! and out: `--initial-state NAME` reads S `NAME` [N, H, M, Dv], z `NAME_z` [N, H, M] and the
//! running key maxima `NAME_max` [N, H, M] (what `attention::FavorState` documents), and the
//! output file gets `final_state`, `final_z` and `final_max`. Grouped kv heads (Hkv dividing Hq);
//! Lq = Lk. GPU against the per-sequence f64 reference; `--device cpu` runs that reference (no
//! comparison with `softmax_out` on this path). Tokens past the last
//! packed offset are written as 0 (the GPU op leaves them untouched in a zeroed output).

use half::f16;
use longseq::attention::{
    favor_attention_batch, favor_attention_batch_with_state, FavorKind, FavorOptions, FavorState,
};
use longseq::reference::attention::favor_attention_batch as reference_batch;
use longseq::types::batch::{CuSeqlens, GqaDims, Layout};
use longseq::{Context, Element, Tensor};

use super::{op_from_args, read_cu_seqlens, staging, Args, Method, Phi};
use crate::io::{CliError, HostTensor};
use crate::methods::Op;

/// Whether this path runs: FAVOR features with a layout, packing, an initial state or grouped
/// heads (k's heads not q's).
pub(super) fn wanted(a: &Args, layout: Layout, q: &[usize], k: &[usize]) -> bool {
    let favor = matches!((a.method, a.feature_map), (Method::Linear, Phi::Favor(_)));
    let lead = |x: &[usize]| x[..x.len().saturating_sub(2)].to_vec();
    let grouped = q.len() >= 3 && q.len() == k.len() && lead(q) != lead(k);
    favor
        && (layout != Layout::Bhld
            || a.cu_seqlens.is_some()
            || a.initial_state.is_some()
            || grouped)
}

/// The op after the checks.
struct Run {
    g: GqaDims,
    omega: Vec<f32>,
    m: usize,
    opts: FavorOptions,
    cu: Option<CuSeqlens>,
    /// S `[N, H, M, Dv]`, z and m `[N, H, M]`.
    initial: Option<[Vec<f32>; 3]>,
    /// Causal positive features: the final state is an output.
    stateful: bool,
}

/// The GPU's o and final (S, z, m) as read back.
type Got<T> = (Vec<T>, Option<[Vec<f32>; 3]>);

/// o, and the final (S, z, m) when stateful.
type Outcome = (Vec<f64>, Option<[Vec<f64>; 3]>);

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
    let [q, k, v] = &sg.qkv;
    let ctx = dev.open()?;
    println!(
        "input: {} q {:?}, v {:?} ({}, H = {}, L = {}{}{})",
        a.input,
        sg.shapes.0,
        sg.shapes.2,
        layout.name(),
        g.q_heads,
        g.q_len,
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
    let kind = match r.opts.kind {
        FavorKind::Positive => "favor",
        FavorKind::Trig => "favor-trig",
    };
    let causal = if r.opts.causal {
        "causal"
    } else {
        "non-causal"
    };
    println!(
        "method: performer attention ({kind}, {causal}, M = {})",
        r.m
    );
    let ops = (g.batch * g.q_heads * g.q_len * r.m * (2 * g.dk + g.dv)) as f64 * 2.0;
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
    let hm = vec![n, g.q_heads, r.m];
    let shapes = [vec![n, g.q_heads, r.m, g.dv], hm.clone(), hm];
    let named = |x: Option<Outcome>| {
        x.map(|(o, st)| {
            let st = st.map_or(Vec::new(), |st| {
                let names = ["final_state", "final_z", "final_max"];
                names
                    .into_iter()
                    .zip(shapes.clone())
                    .zip(st)
                    .map(|((n, s), x)| (n, s, x))
                    .collect()
            });
            (o, st)
        })
    };
    staging::finish(a, dtype, &out_shape, [named(gpu), named(cpu), named(refr)])
}

/// Checks the shapes, reads ω, the offsets and the initial state.
fn plan(
    a: &Args,
    st: &safetensors::SafeTensors<'_>,
    (qs, ks, vs): &(Vec<usize>, Vec<usize>, Vec<usize>),
    layout: Layout,
) -> Result<Run, CliError> {
    // Grouped heads (Hkv dividing Hq) are allowed; Lq = Lk.
    let g = GqaDims::check("attention", qs, ks, vs, layout, true)?;
    let cu = match &a.cu_seqlens {
        Some(n) => Some(read_cu_seqlens(st, n, &a.input, g.q_len)?),
        None => None,
    };
    let Op::Favor { omega, m, opts, .. } = op_from_args(a, st, qs)? else {
        unreachable!("wanted() admits favor features only")
    };
    let stateful = opts.causal && opts.kind == FavorKind::Positive;
    let mut r = Run {
        g,
        omega,
        m,
        opts,
        cu,
        initial: None,
        stateful,
    };
    if let Some(name) = &a.initial_state {
        if !stateful {
            return Err(CliError::Input(
                "--initial-state with favor features needs --causal and --feature-map favor \
                 (positive features)"
                    .into(),
            ));
        }
        let n = r.cu.as_ref().map_or(r.g.batch, CuSeqlens::count);
        let (h, dv) = (r.g.q_heads, r.g.dv);
        let read = |name: &str, want| staging::read_state(a, st, name, want);
        r.initial = Some([
            read(name, vec![n, h, m, dv])?,
            read(&format!("{name}_z"), vec![n, h, m])?,
            read(&format!("{name}_max"), vec![n, h, m])?,
        ]);
    }
    Ok(r)
}

/// The per-sequence f64 reference (tokens past the last offset written as 0, as the op leaves
/// them in a fresh output; a feature no key reached keeps m = f32::MIN, as the op writes it).
fn reference(r: &Run, (q, k, v): (&[f32], &[f32], &[f32])) -> Result<Outcome, CliError> {
    let g = &r.g;
    let f = |x: &[f32]| x.iter().map(|&y| y as f64).collect::<Vec<f64>>();
    let init = r.initial.as_ref().map(|[s, z, m]| [f(s), f(z), f(m)]);
    let init_ref = init.as_ref().map(|[s, z, m]| (&s[..], &z[..], &m[..]));
    let b = reference_batch((q, k, v), g, &r.omega, &r.opts, r.cu.as_ref(), init_ref)?;
    let mut o = b.o;
    staging::zero_past_last(g, r.cu.as_ref(), &mut o);
    let m = b.m.iter().map(|&x| x.max(f32::MIN as f64)).collect();
    Ok((o, r.stateful.then_some([b.s, b.z, m])))
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
    let w = Tensor::from_slice(ctx, &r.omega, &[r.m, g.dk])?;
    let n = r.cu.as_ref().map_or(g.batch, CuSeqlens::count);
    let init = match &r.initial {
        Some([s, z, m]) => Some(FavorState {
            s: Tensor::from_slice(ctx, s, &[n, g.q_heads, r.m, g.dv])?,
            z: Tensor::from_slice(ctx, z, &[n, g.q_heads, r.m])?,
            m: Tensor::from_slice(ctx, m, &[n, g.q_heads, r.m])?,
        }),
        None => None,
    };
    let (cu, qkv) = (r.cu.as_ref(), (&tq, &tk, &tv));
    let go = || -> longseq::Result<Got<T>> {
        if !r.stateful {
            let o = favor_attention_batch(ctx, qkv, &w, g.layout, cu, &r.opts)?;
            return Ok((o.to_vec(ctx)?, None));
        }
        let (o, s) =
            favor_attention_batch_with_state(ctx, qkv, &w, g.layout, cu, init.as_ref(), &r.opts)?;
        let st = [s.s.to_vec(ctx)?, s.z.to_vec(ctx)?, s.m.to_vec(ctx)?];
        Ok((o.to_vec(ctx)?, Some(st)))
    };
    let (o, st) = crate::devices::gpu_timed(go)?;
    let f = |x: &[f32]| x.iter().map(|&y| y as f64).collect::<Vec<f64>>();
    Ok((
        o.iter().map(|x| x.to_f64()).collect(),
        st.map(|[s, z, m]| [f(&s), f(&z), f(&m)]),
    ))
}
