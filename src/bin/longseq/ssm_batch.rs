//! `longseq ssm --mode scan|conv` over real-world batches (issue 14): `--layout blhd` (u, y as
//! [B, L, H]), `--cu-seqlens NAME` (packed sequences, B = 1), `--initial-state NAME`
//! ([N, H, N2, 2]: each stored mode's complex state as (re, im)); writes y and `final_state`
//! ([N, H, N2, 2]). Tokens past the last packed offset are written as 0 (the GPU op leaves them
//! untouched in a zeroed output; the reference does not write them).

use longseq::reference::ssm::{self as rs, SeqBatch};
use longseq::ssm::{s4d_conv_batch, s4d_scan_batch, DiagonalSsm, Discretization, S4dBatch};
use longseq::types::batch::{CuSeqlens, Layout};
use longseq::{Context, Tensor};
use num_complex::Complex64;

use crate::check::StorageDtype;
use crate::devices::{self, Devices};
use crate::io::{self, CliError, Out};

/// What the batch path needs from the command line.
pub struct Batch<'a> {
    pub layout: Layout,
    pub cu_seqlens: Option<&'a str>,
    pub initial_state: Option<&'a str>,
    pub input: Option<&'a str>,
    pub output: Option<&'a str>,
    pub force_reference: bool,
    /// The convolution mode (`s4d_conv_batch`) rather than the scan.
    pub conv: bool,
}

impl Batch<'_> {
    /// Whether the flags ask for this path.
    pub fn wanted(&self) -> bool {
        self.layout != Layout::Bhld || self.cu_seqlens.is_some() || self.initial_state.is_some()
    }
}

/// The offsets and the initial state named on the command line, read from --input.
fn read_extra(
    a: &Batch<'_>,
    (b, h, n2, len): (usize, usize, usize, usize),
) -> Result<(Option<CuSeqlens>, Option<Vec<f64>>), CliError> {
    if a.cu_seqlens.is_none() && a.initial_state.is_none() {
        return Ok((None, None));
    }
    let path = a.input.ok_or_else(|| {
        CliError::Input("--cu-seqlens and --initial-state name tensors in --input".into())
    })?;
    let bytes = io::read_file(path)?;
    let st = io::parse(&bytes, path)?;
    let cu = match a.cu_seqlens {
        Some(name) => {
            let (offs, shape) = io::read_u32(&st, name, path)?;
            if shape.len() != 1 {
                return Err(CliError::Input(format!(
                    "--cu-seqlens tensor `{name}` has shape {shape:?}; expected [N + 1]"
                )));
            }
            let offs: Vec<i64> = offs.into_iter().map(i64::from).collect();
            Some(CuSeqlens::new("ssm", &offs, len)?)
        }
        None => None,
    };
    if cu.is_some() && b != 1 {
        return Err(CliError::Input(format!(
            "--cu-seqlens needs B = 1 (packed sequences), u has B = {b}"
        )));
    }
    let n = cu.as_ref().map_or(b, |c| c.count());
    let x0 = match a.initial_state {
        Some(name) => {
            let t = io::read(&st, name, path)?;
            if t.shape != [n, h, n2, 2] {
                return Err(CliError::Input(format!(
                    "tensor `{name}` has shape {:?}, expected [{n}, {h}, {n2}, 2] \
                     ([N, H, N2, (re, im)])",
                    t.shape
                )));
            }
            if t.data.iter().any(|x| !x.is_finite()) {
                return Err(CliError::Input(format!("tensor `{name}` has NaN or ±Inf")));
            }
            Some(t.data)
        }
        None => None,
    };
    Ok((cu, x0))
}

/// Runs the scan or the convolution on the GPU and/or the reference and writes y and final_state.
pub fn run(
    a: &Batch<'_>,
    m: &rs::DiagonalSsm,
    (u, shape): (&[f64], &[usize]),
    disc: Discretization,
    dev: &mut Devices,
    ctx: Option<&Context>,
) -> Result<(), CliError> {
    if dev.cpu {
        return Err(CliError::Input(
            "--layout blhd, --cu-seqlens and --initial-state run on gpu and reference, not cpu"
                .into(),
        ));
    }
    let (h, n2) = (m.h, m.n2);
    let (b, len) = match a.layout {
        Layout::Bhld => (shape[0], shape[2]),
        Layout::Blhd => (shape[0], shape[1]),
    };
    let (cu, x0) = read_extra(a, (b, h, n2, len))?;
    let n = cu.as_ref().map_or(b, |c| c.count());
    let st_shape = [n, h, n2, 2];
    let gpu = match ctx {
        Some(c) => {
            let dm = DiagonalSsm::<f32>::from_host(c, m)?;
            let u32s: Vec<f32> = u.iter().map(|&x| x as f32).collect();
            let tu = Tensor::from_slice(c, &u32s, shape)?;
            let tx0 = match &x0 {
                Some(x) => Some(Tensor::from_slice(
                    c,
                    &x.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                    &st_shape,
                )?),
                None => None,
            };
            let opts = S4dBatch {
                layout: a.layout,
                cu_seqlens: cu.as_ref(),
                initial_state: tx0.as_ref(),
            };
            let go = || -> longseq::Result<Vec<f32>> {
                let (y, fin) = match a.conv {
                    true => s4d_conv_batch(c, &dm, &tu, disc, &opts)?,
                    false => s4d_scan_batch(c, &dm, &tu, disc, &opts)?,
                };
                Ok([y.to_vec(c)?, fin.to_vec(c)?].concat())
            };
            let o = devices::gpu_timed(go)?;
            Some((
                o.into_iter().map(f64::from).collect::<Vec<f64>>(),
                StorageDtype::F32,
            ))
        }
        None => None,
    };
    let ops = (b * h * n2 * len) as f64 * 8.0;
    let reference = dev.reference(a.force_reference, ops, "f64", || {
        let sb = SeqBatch {
            batch: b,
            len,
            layout: a.layout,
            cu_seqlens: cu.as_ref(),
        };
        let x0c: Option<Vec<Complex64>> = x0
            .as_ref()
            .map(|x| x.chunks(2).map(|p| Complex64::new(p[0], p[1])).collect());
        let mut y = vec![0.0; u.len()];
        let fin = rs::s4d_recurrence_batch(m, u, &sb, x0c.as_deref(), disc, &mut y)?;
        y.extend(fin.iter().flat_map(|z| [z.re, z.im]));
        Ok(y)
    })?;
    let Some(result) = devices::report(gpu, None, reference)? else {
        return Ok(());
    };
    if let Some(path) = a.output {
        let f: Vec<f32> = result.iter().map(|&x| x as f32).collect();
        let (y, fin) = f.split_at(u.len());
        io::write(
            path,
            vec![
                ("y", shape.to_vec(), Out::F32(y.to_vec())),
                ("final_state", st_shape.to_vec(), Out::F32(fin.to_vec())),
            ],
        )?;
        println!("wrote y {shape:?} and final_state {st_shape:?} f32 to {path}");
    }
    Ok(())
}
