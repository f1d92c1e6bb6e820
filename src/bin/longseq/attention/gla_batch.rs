//! `longseq attention --method gla` with `--layout blhd` and/or `--cu-seqlens NAME`: the f32 CPU
//! path (which reads either layout through strides and runs each packed sequence from zero)
//! and the f64 reference, sequence by sequence. The GPU op has no cu_seqlens or blhd yet: these
//! run on cpu,reference by default, and an explicit gpu exits 2. Writes `o` (the input's layout,
//! 0 past the last offset) and `final_state` ([B or N, H, Dk, Dv]).

use longseq::cpu::attention::{gla, GlaHost, GlaShape};
use longseq::reference::gla::{gla_ref, gla_ref_varlen, GlaDims, GlaRef};
use longseq::types::batch::Layout;

use super::{Args, NanPolicy};
use crate::devices::{self, Devices};
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
                "--layout/--cu-seqlens with gla need rank-4 q, k, v, g; got {:?}",
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
    let (q, k, v, g) = (q.to_f32(), k.to_f32(), v.to_f32(), g.to_f32());
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
    let dev: Devices = match a.device {
        Some(d) => d,
        None => "cpu,reference".parse().map_err(CliError::Input)?,
    };
    if dev.gpu {
        return Err(CliError::Input(
            "gla with --layout blhd or --cu-seqlens runs on --device cpu and reference; the GPU op \
             has neither yet"
                .into(),
        ));
    }
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
    let slots = cu.as_ref().map_or(b, |c| c.count());
    let cpu = match dev.cpu {
        true => Some(devices::timed("cpu", &devices::cpu_note(), || {
            let x = GlaHost {
                scale: a.scale,
                layout,
                cu_seqlens: cu.as_ref(),
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
        let r = GlaRef {
            q: &q,
            k: &k,
            v: &v,
            g: &g,
            initial_state: None,
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
    let Some(mut o) = devices::report(None, cpu, reference)? else {
        return Ok(());
    };
    let last = o.split_off(b * h * l * dv);
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
