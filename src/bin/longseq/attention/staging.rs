//! What every batch path of `longseq attention` does around its op (linear family, FAVOR): the
//! rank-3 lift, the dtype, the devices, q/k/v stored in the GPU dtype, the upload, and the output
//! conventions (tokens past the last packed offset written as 0).

use longseq::types::batch::{CuSeqlens, GqaDims};
use longseq::{Context, Element, Tensor};

use super::Args;
use crate::check::StorageDtype;
use crate::devices::Devices;
use crate::io::{CliError, HostTensor};

/// The shapes of q, k and v.
pub(super) type Shapes = (Vec<usize>, Vec<usize>, Vec<usize>);

/// q, k, v of a batch run, ready for the devices.
pub(super) struct Staged {
    /// The inputs were rank 3 (`[H, L, D]`, one batch entry): the output drops B again.
    pub rank3: bool,
    /// q, k, v shapes, rank 4.
    pub shapes: Shapes,
    pub dtype: StorageDtype,
    pub dev: Devices,
    /// q, k, v as f32 (rounded to the GPU dtype when the GPU runs).
    pub qkv: [Vec<f32>; 3],
}

/// The shapes of q, k, v, rank 3 lifted to rank 4, and whether they were rank 3.
pub(super) fn lift((q, k, v): (&HostTensor, &HostTensor, &HostTensor)) -> (bool, Shapes) {
    let rank3 = q.shape.len() == 3 && k.shape.len() == 3 && v.shape.len() == 3;
    let lift = |s: &[usize]| match rank3 {
        true => [&[1][..], s].concat(),
        false => s.to_vec(),
    };
    (rank3, (lift(&q.shape), lift(&k.shape), lift(&v.shape)))
}

/// Resolves the dtype and devices and stores q, k, v (after the op's checks passed).
pub(super) fn stage(
    a: &Args,
    (q, k, v): (HostTensor, HostTensor, HostTensor),
) -> Result<Staged, CliError> {
    let (rank3, shapes) = lift((&q, &k, &v));
    let dtype = StorageDtype::resolve(a.dtype, &[q.dtype, k.dtype, v.dtype]);
    let dev = a.device.unwrap_or_default();
    let store = |n: &str, t: &HostTensor| match dev.gpu {
        true => dtype.storable(&format!("{}{n}", a.prefix), t.to_f32()),
        false => Ok(t.to_f32()),
    };
    let qkv = [store("q", &q)?, store("k", &k)?, store("v", &v)?];
    Ok(Staged {
        rank3,
        shapes,
        dtype,
        dev,
        qkv,
    })
}

impl Staged {
    /// The output shape of `g` (rank 3 again for rank-3 inputs).
    pub fn out_shape(&self, g: &GqaDims) -> Vec<usize> {
        let mut s = g.out_shape.clone();
        if self.rank3 {
            s.remove(0);
        }
        s
    }

    /// q, k, v uploaded as `T` in their rank-4 shapes.
    pub fn upload<T: Element>(
        &self,
        ctx: &Context,
        conv: impl Fn(&[f32]) -> Vec<T>,
    ) -> Result<[Tensor<T>; 3], CliError> {
        let (qs, ks, vs) = &self.shapes;
        let [q, k, v] = &self.qkv;
        Ok([
            Tensor::from_slice(ctx, &conv(q), qs)?,
            Tensor::from_slice(ctx, &conv(k), ks)?,
            Tensor::from_slice(ctx, &conv(v), vs)?,
        ])
    }
}

/// The references mark tokens past the last offset NaN; the op leaves them 0 in a new output.
/// (NaN inside a sequence comes from the inputs and stays.)
pub(super) fn zero_past_last(g: &GqaDims, cu: Option<&CuSeqlens>, o: &mut [f64]) {
    let Some(c) = cu else { return };
    let last = *c.offsets().last().unwrap_or(&0) as usize;
    let s = g.layout.strides(g.q_heads, g.q_len, g.dv);
    for h in 0..g.q_heads {
        for t in last..g.q_len {
            for e in 0..g.dv {
                o[s.index(0, h, t, e)] = 0.0;
            }
        }
    }
}

/// A device's (o, state) as (o, state) options.
pub(super) fn split<S>(x: Option<(Vec<f64>, S)>) -> (Option<Vec<f64>>, Option<S>) {
    match x {
        Some((o, s)) => (Some(o), Some(s)),
        None => (None, None),
    }
}

/// A named output tensor: (name, shape, values).
pub(super) type Named = (&'static str, Vec<usize>, Vec<f64>);

/// Checks each device's final-state tensors against the reference's (the dtype's tolerance, exit 3
/// past it), reports o (exit 3 past its tolerance), and writes o (`out_shape`) and the state
/// tensors: the GPU's, else the CPU path's, else the reference's.
pub(super) fn finish(
    a: &Args,
    dtype: StorageDtype,
    out_shape: &[usize],
    [gpu, cpu, refr]: [Option<(Vec<f64>, Vec<Named>)>; 3],
) -> Result<(), CliError> {
    if let Some((_, rs)) = &refr {
        for (name, x) in [("gpu", gpu.as_ref()), ("cpu", cpu.as_ref())] {
            for ((what, _, s), (_, _, r)) in x.map_or(&[][..], |x| &x.1).iter().zip(rs) {
                crate::check::vs_reference(name, what, s, r, dtype)?;
            }
        }
    }
    let (go, gs) = split(gpu);
    let (co, cs) = split(cpu);
    let (ro, rs) = split(refr);
    let Some(o) = crate::devices::report(go.map(|o| (o, dtype)), co, ro)? else {
        return Ok(());
    };
    let Some(path) = &a.output else {
        return Ok(());
    };
    let f32s = |x: &[f64]| crate::io::Out::F32(x.iter().map(|&y| y as f32).collect());
    let mut outs = vec![("o", out_shape.to_vec(), f32s(&o))];
    for (name, shape, x) in gs.or(cs).or(rs).unwrap_or_default() {
        outs.push((name, shape, f32s(&x)));
    }
    let names: Vec<&str> = outs.iter().map(|x| x.0).collect();
    crate::io::write(path, outs)?;
    println!(
        "wrote {} ({}; o {out_shape:?} f32) to {path}",
        names.join(", "),
        a.layout
    );
    Ok(())
}

/// The initial-state tensor `name` of the input file, which must have shape `want` (its first
/// dim: the N sequences).
pub(super) fn read_state(
    a: &Args,
    st: &safetensors::SafeTensors<'_>,
    name: &str,
    want: Vec<usize>,
) -> Result<Vec<f32>, CliError> {
    let t = crate::io::read(st, name, &a.input)?;
    if t.shape != want {
        return Err(CliError::Input(format!(
            "initial state tensor `{name}` has shape {:?}; expected {want:?} (N = {} sequences)",
            t.shape, want[0]
        )));
    }
    let x = t.to_f32();
    if a.nan == super::NanPolicy::Error {
        longseq::check_no_nan("attention", "initial_state", &x)?;
    }
    Ok(x)
}

/// Runs what `dev` asks for: the GPU on `ctx` (`gpu32` / `gpu16` by the staged dtype), the CPU
/// path (the per-sequence f64 reference: no f32 CPU path reads strides, packed sequences or a
/// state yet) and the reference (`ops` sizes its time bound). Returns [gpu, cpu, reference].
pub(super) fn run_devices<O>(
    a: &Args,
    (dev, ctx, dtype): (&Devices, Option<&Context>, StorageDtype),
    ops: f64,
    (gpu32, gpu16): (
        impl Fn(&Context) -> Result<O, CliError>,
        impl Fn(&Context) -> Result<O, CliError>,
    ),
    reference: impl Fn() -> Result<O, CliError>,
) -> Result<[Option<O>; 3], CliError> {
    let gpu = match (ctx, dtype) {
        (Some(c), StorageDtype::F32) => Some(gpu32(c)?),
        (Some(c), StorageDtype::F16) => Some(gpu16(c)?),
        (None, _) => None,
    };
    let note = "no f32 CPU path reads blhd, packed sequences or a state yet: the per-sequence f64 \
                reference";
    let cpu = match dev.cpu {
        true => Some(crate::devices::timed("cpu", note, &reference)?),
        false => None,
    };
    let refr = dev.reference(a.force_reference, ops, "f64", || {
        reference().map_err(|e| longseq::Error::InvalidArgument {
            op: "attention",
            name: "reference",
            reason: e.to_string(),
        })
    })?;
    Ok([gpu, cpu, refr])
}

/// f16 storage of f32 values.
pub(super) fn f16s(x: &[f32]) -> Vec<half::f16> {
    x.iter().map(|&y| half::f16::from_f32(y)).collect()
}
