//! `longseq attention --method gla` with `--layout blhd`, `--cu-seqlens NAME` and/or
//! `--initial-state NAME` (`[B or N, H, Dk, Dv]`, the state before each sequence): the GPU op
//! (strides and packed sequences in the kernel), the f32 CPU path (strides, each packed sequence
//! from zero) and the f64 reference, sequence by sequence; default gpu,reference (cpu,reference
//! without an adapter). o and final_state are both checked against the reference (exit 3 past
//! the dtype's tolerance). Writes `o` (the input's layout, 0 past the last offset) and
//! `final_state` ([B or N, H, Dk, Dv]).

use half::f16;
use longseq::attention::{gla as gla_gpu, GlaInputs};
use longseq::cpu::attention::{gla, GlaHost, GlaShape};
use longseq::reference::gla::{gla_ref, gla_ref_varlen, GlaDims, GlaRef};
use longseq::types::batch::{CuSeqlens, Layout};
use longseq::{Context, Element, Tensor};

use super::{staging, Args, NanPolicy};
use crate::check::{self, StorageDtype};
use crate::devices;
use crate::io::{self, CliError, HostTensor, Out};

/// `[B, H, L, D]` ↔ `layout` (`to_layout` false: from `layout` to `[B, H, L, D]`).
fn permute(
    x: &[f64],
    (b, h, l, d): (usize, usize, usize, usize),
    lay: Layout,
    to: bool,
) -> Vec<f64> {
    let st = lay.strides(h, l, d);
    let mut out = vec![0.0; x.len()];
    for bi in 0..b {
        for hi in 0..h {
            for t in 0..l {
                let (p, s) = (((bi * h + hi) * l + t) * d, st.index(bi, hi, t, 0));
                let (dst, src) = if to { (s, p) } else { (p, s) };
                out[dst..][..d].copy_from_slice(&x[src..][..d]);
            }
        }
    }
    out
}

pub(super) fn run(
    a: &Args,
    st: &safetensors::SafeTensors<'_>,
    (q, k, v): (HostTensor, HostTensor, HostTensor),
    layout: Layout,
) -> Result<(), CliError> {
    let g = io::read(st, &format!("{}g", a.prefix), &a.input)?;
    let rank4 = |t: &HostTensor| -> Result<[usize; 4], CliError> {
        <[usize; 4]>::try_from(&t.shape[..]).map_err(|_| {
            CliError::Input(format!(
                "--layout/--cu-seqlens/--initial-state with gla need rank-4 q, k, v, g; got {:?}",
                t.shape
            ))
        })
    };
    let (b, h, l, dk) = layout.dims(rank4(&q)?);
    let dv = layout.dims(rank4(&v)?).3;
    let want = |d: usize| layout.shape(b, h, l, d).to_vec();
    for (n, t, w) in [
        ("k", &k, want(dk)),
        ("g", &g, want(dk)),
        ("v", &v, want(dv)),
    ] {
        if t.shape != w {
            return Err(CliError::Input(format!(
                "tensor `{}{n}` has shape {:?}, expected {w:?} ({})",
                a.prefix,
                t.shape,
                layout.name()
            )));
        }
    }
    let dtype = StorageDtype::resolve(a.dtype, &[q.dtype, k.dtype, v.dtype, g.dtype]);
    let mut dev = a.device.unwrap_or_default();
    let store = |n: &str, t: &HostTensor| match dev.gpu {
        true => dtype.storable(&format!("{}{n}", a.prefix), t.to_f32()),
        false => Ok(t.to_f32()),
    };
    let (q, k, v, g) = (
        store("q", &q)?,
        store("k", &k)?,
        store("v", &v)?,
        store("g", &g)?,
    );
    if a.nan == NanPolicy::Error {
        longseq::check_no_nan("attention", "g", &g)?;
    }
    if let Some(i) = g.iter().position(|&x| x > 0.0) {
        return Err(CliError::Input(format!(
            "tensor `{}g` holds {} > 0 at flat index {i}; GLA's log forget gates must be <= 0",
            a.prefix, g[i]
        )));
    }
    let cu = match &a.cu_seqlens {
        Some(n) => Some(super::read_cu_seqlens(st, n, &a.input, l)?),
        None => None,
    };
    if cu.is_some() && b != 1 {
        return Err(CliError::Input(format!(
            "--cu-seqlens needs B = 1 (packed sequences), got B = {b}"
        )));
    }
    let slots = cu.as_ref().map_or(b, |c| c.count());
    let h0 = match &a.initial_state {
        Some(n) => Some(staging::read_state(a, st, n, vec![slots, h, dk, dv])?),
        None => None,
    };
    let ctx = dev.open()?;
    println!(
        "input: {} q {:?} ({}), B = {b}, H = {h}, L = {l}, Dk = {dk}, Dv = {dv}{}",
        a.input,
        want(dk),
        layout.name(),
        cu.as_ref().map_or(String::new(), |c| format!(
            ", {} packed sequences",
            c.count()
        ))
    );
    let shapes = (want(dk), want(dv), slots);
    let fs = [slots, h, dk, dv];
    let gpu = match &ctx {
        Some(c) => {
            let x = GpuRun {
                a,
                layout,
                cu: cu.as_ref(),
                shapes,
                h0: h0.as_deref().map(|x| (x, &fs[..])),
            };
            Some(match dtype {
                StorageDtype::F32 => x.run::<f32>(c, [&q, &k, &v, &g], |x| x.to_vec())?,
                StorageDtype::F16 => x.run::<f16>(c, [&q, &k, &v, &g], |x| {
                    x.iter().map(|&y| f16::from_f32(y)).collect()
                })?,
            })
        }
        None => None,
    };
    let cpu = match dev.cpu {
        true => Some(devices::timed("cpu", &devices::cpu_note(), || {
            let x = GlaHost {
                scale: a.scale,
                layout,
                cu_seqlens: cu.as_ref(),
                initial_state: h0.as_deref(),
                ..GlaHost::new(&q, &k, &v, &g)
            };
            let shape = GlaShape {
                batch: b,
                heads: h,
                len: l,
                dk,
                dv,
            };
            let (o, s) = gla(shape, &x)?;
            Ok([o, s]
                .concat()
                .into_iter()
                .map(f64::from)
                .collect::<Vec<f64>>())
        })?),
        false => None,
    };
    let ops = (b * h * l * dk * dv) as f64 * 4.0;
    let reference = dev.reference(a.force_reference, ops, "f64", || {
        let f = |x: &[f32], d: usize| {
            let x: Vec<f64> = x.iter().map(|&y| y as f64).collect();
            permute(&x, (b, h, l, d), layout, false)
        };
        let (q, k, v, g) = (f(&q, dk), f(&k, dk), f(&v, dv), f(&g, dk));
        let s0: Option<Vec<f64>> = h0.as_ref().map(|x| x.iter().map(|&y| y as f64).collect());
        let r = GlaRef {
            q: &q,
            k: &k,
            v: &v,
            g: &g,
            initial_state: s0.as_deref(),
            scale: a.scale.map(f64::from),
        };
        let dims = GlaDims {
            rows: b * h,
            len: l,
            dk,
            dv,
        };
        let (o, s) = match &cu {
            Some(c) => {
                let offs: Vec<usize> = c.offsets().iter().map(|&o| o as usize).collect();
                gla_ref_varlen(dims, &offs, &r)?
            }
            None => gla_ref(dims, &r)?,
        };
        Ok([permute(&o, (b, h, l, dv), layout, true), s].concat())
    })?;
    let n_o = b * h * l * dv;
    // final_state is checked like o (same dtype tolerance, exit 3 past it).
    if let Some(r) = &reference {
        let runs = [
            ("gpu", gpu.as_ref(), dtype),
            ("cpu", cpu.as_ref(), StorageDtype::F32),
        ];
        for (name, x, dt) in runs {
            if let Some(x) = x {
                check::vs_reference(name, "final_state", &x[n_o..], &r[n_o..], dt)?;
            }
        }
    }
    let head = |x: Option<Vec<f64>>| x.map(|mut x| (x.split_off(n_o), x));
    let (gpu, cpu, reference) = (head(gpu), head(cpu), head(reference));
    let last = gpu
        .as_ref()
        .or(cpu.as_ref())
        .or(reference.as_ref())
        .map(|x| x.0.clone());
    let o = devices::report(
        gpu.map(|x| (x.1, dtype)),
        cpu.map(|x| x.1),
        reference.map(|x| x.1),
    )?;
    let (Some(o), Some(last)) = (o, last) else {
        return Ok(());
    };
    if let Some(path) = &a.output {
        let f = |v: Vec<f64>| Out::F32(v.into_iter().map(|x| x as f32).collect());
        let fs = vec![slots, h, dk, dv];
        io::write(
            path,
            vec![("o", want(dv), f(o)), ("final_state", fs.clone(), f(last))],
        )?;
        println!(
            "wrote o {:?} and final_state {fs:?} f32 to {path}",
            want(dv)
        );
    }
    Ok(())
}

/// The GPU op on one context: q, k, v, g uploaded in T in the file's layout.
struct GpuRun<'a> {
    a: &'a Args,
    layout: Layout,
    cu: Option<&'a CuSeqlens>,
    /// q's and v's shapes in the layout, and the state slots (B or N).
    shapes: (Vec<usize>, Vec<usize>, usize),
    /// The initial state f32 and its shape `[slots, H, Dk, Dv]`, if any.
    h0: Option<(&'a [f32], &'a [usize])>,
}

impl GpuRun<'_> {
    /// Runs once to compile the pipelines, then times one run; `o` then `final_state`, as f64.
    fn run<T: Element>(
        &self,
        ctx: &Context,
        [q, k, v, g]: [&[f32]; 4],
        conv: impl Fn(&[f32]) -> Vec<T>,
    ) -> Result<Vec<f64>, CliError> {
        let (qs, vs, _) = &self.shapes;
        let up = |x: &[f32], s: &[usize]| Tensor::from_slice(ctx, &conv(x), s);
        let (tq, tk, tv, tg) = (up(q, qs)?, up(k, qs)?, up(v, vs)?, up(g, qs)?);
        let ts0 = match self.h0 {
            Some((s0, shape)) => Some(Tensor::<f32>::from_slice(ctx, s0, shape)?),
            None => None,
        };
        let x = GlaInputs {
            scale: self.a.scale,
            layout: self.layout,
            cu_seqlens: self.cu,
            initial_state: ts0.as_ref(),
            ..GlaInputs::new(&tq, &tk, &tv, &tg)
        };
        let go = || -> longseq::Result<(Vec<T>, Vec<f32>)> {
            let (o, s) = gla_gpu(ctx, &x)?;
            Ok((o.to_vec(ctx)?, s.to_vec(ctx)?))
        };
        let (o, s) = devices::gpu_timed(go)?;
        Ok(o.iter()
            .map(|x| x.to_f64())
            .chain(s.iter().map(|&x| x as f64))
            .collect())
    }
}
