//! safetensors in and out for the CLI.

use std::collections::HashMap;
use std::fmt;

use half::f16;
use safetensors::{Dtype, SafeTensors};

/// A CLI failure, printed as one line on stderr.
pub enum CliError {
    /// Bad input: missing tensor, bad shape, bad file, bad option, output folder missing (exit 2).
    Input(String),
    /// The run failed: no adapter, device error (exit 1).
    Run(String),
    /// GPU and reference disagree beyond the stated tolerance (exit 3).
    Mismatch(String),
}

impl CliError {
    /// The process exit code for this failure.
    pub fn code(&self) -> u8 {
        match self {
            CliError::Input(_) => 2,
            CliError::Run(_) => 1,
            CliError::Mismatch(_) => 3,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Input(m) | CliError::Run(m) | CliError::Mismatch(m) => f.write_str(m),
        }
    }
}

impl From<longseq::Error> for CliError {
    fn from(e: longseq::Error) -> Self {
        match e {
            longseq::Error::Shape { .. }
            | longseq::Error::DataLength { .. }
            | longseq::Error::InvalidArgument { .. }
            | longseq::Error::ShapeOverflow { .. }
            | longseq::Error::IndexOutOfRange { .. }
            | longseq::Error::NaN { .. } => CliError::Input(e.to_string()),
            _ => CliError::Run(e.to_string()),
        }
    }
}

/// Checks, before any work runs, that an output file can be created where asked: its folder
/// exists and `path` is not a folder. An input error (exit 2) otherwise.
pub fn check_output(path: Option<&str>) -> Result<(), CliError> {
    let Some(path) = path else { return Ok(()) };
    let p = std::path::Path::new(path);
    if p.is_dir() {
        return Err(CliError::Input(format!(
            "output {path} is a folder; give a file name"
        )));
    }
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() && !d.is_dir() => Err(CliError::Input(format!(
            "output folder {} does not exist (create it first)",
            d.display()
        ))),
        _ => Ok(()),
    }
}

/// Reads a whole input file; a missing or unreadable file is an input error (exit 2).
pub fn read_file(path: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::Input(format!("cannot read {path}: {e}")))
}

/// `f32`, `f16`, `i64`, …: a safetensors dtype as the user writes it.
pub fn dtype_name(d: Dtype) -> String {
    format!("{d:?}").to_lowercase()
}

/// A tensor read from a file, converted to f64, with its stored dtype.
pub struct HostTensor {
    pub data: Vec<f64>,
    pub shape: Vec<usize>,
    pub dtype: Dtype,
}

impl HostTensor {
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&x| x as f32).collect()
    }
}

pub fn parse<'a>(bytes: &'a [u8], path: &str) -> Result<SafeTensors<'a>, CliError> {
    SafeTensors::deserialize(bytes)
        .map_err(|e| CliError::Input(format!("{path} is not a safetensors file: {e}")))
}

/// Reads tensor `name` (f16, f32 or f64) from `st`.
pub fn read(st: &SafeTensors<'_>, name: &str, path: &str) -> Result<HostTensor, CliError> {
    let t = st.tensor(name).map_err(|_| {
        let mut names: Vec<&str> = st.names();
        names.sort();
        CliError::Input(format!(
            "tensor `{name}` not found in {path} (it has: {})",
            names.join(", ")
        ))
    })?;
    let b = t.data();
    let data: Vec<f64> = match t.dtype() {
        Dtype::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(b)
            .into_iter()
            .map(f64::from)
            .collect(),
        Dtype::F16 => bytemuck::pod_collect_to_vec::<u8, f16>(b)
            .into_iter()
            .map(f64::from)
            .collect(),
        Dtype::F64 => bytemuck::pod_collect_to_vec::<u8, f64>(b),
        d => {
            return Err(CliError::Input(format!(
                "tensor `{name}` in {path} has dtype {}; expected f16, f32 or f64",
                dtype_name(d)
            )))
        }
    };
    Ok(HostTensor {
        data,
        shape: t.shape().to_vec(),
        dtype: t.dtype(),
    })
}

/// A tensor to write.
pub enum Out {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Writes `(name, shape, data)` tensors to `path`.
pub fn write(path: &str, tensors: Vec<(&str, Vec<usize>, Out)>) -> Result<(), CliError> {
    let owned: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, d)| match d {
            Out::F32(v) => (
                n.to_string(),
                s,
                Dtype::F32,
                bytemuck::cast_slice(&v).to_vec(),
            ),
            Out::F64(v) => (
                n.to_string(),
                s,
                Dtype::F64,
                bytemuck::cast_slice(&v).to_vec(),
            ),
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(n, s, d, b)| {
            let v = safetensors::tensor::TensorView::new(*d, s.clone(), b)
                .map_err(|e| CliError::Run(format!("cannot build tensor `{n}`: {e}")))?;
            Ok((n.clone(), v))
        })
        .collect::<Result<_, CliError>>()?;
    let meta: Option<HashMap<String, String>> = None;
    safetensors::serialize_to_file(views, meta, std::path::Path::new(path))
        .map_err(|e| CliError::Run(format!("cannot write {path}: {e}")))
}

/// Reads integer tensor `name` (U8, U16, U32, I32 or I64: token ids, positions) from `st` as
/// u32. A negative value or one past u32 is an input error naming its flat index.
pub fn read_u32(
    st: &SafeTensors<'_>,
    name: &str,
    path: &str,
) -> Result<(Vec<u32>, Vec<usize>), CliError> {
    let t = st.tensor(name).map_err(|_| {
        let mut names: Vec<&str> = st.names();
        names.sort();
        CliError::Input(format!(
            "tensor `{name}` not found in {path} (it has: {})",
            names.join(", ")
        ))
    })?;
    let b = t.data();
    let wide: Vec<i64> = match t.dtype() {
        Dtype::U8 => b.iter().map(|&x| x as i64).collect(),
        Dtype::U16 => bytemuck::pod_collect_to_vec::<u8, u16>(b)
            .into_iter()
            .map(i64::from)
            .collect(),
        Dtype::U32 => bytemuck::pod_collect_to_vec::<u8, u32>(b)
            .into_iter()
            .map(i64::from)
            .collect(),
        Dtype::I32 => bytemuck::pod_collect_to_vec::<u8, i32>(b)
            .into_iter()
            .map(i64::from)
            .collect(),
        Dtype::I64 => bytemuck::pod_collect_to_vec::<u8, i64>(b),
        d => {
            return Err(CliError::Input(format!(
                "tensor `{name}` in {path} has dtype {}; expected an integer type \
                 (u8, u16, u32, i32 or i64)",
                dtype_name(d)
            )))
        }
    };
    let data = wide
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            u32::try_from(x).map_err(|_| {
                CliError::Input(format!(
                    "tensor `{name}` in {path} holds {x} at flat index {i}; expected 0 ..= {}",
                    u32::MAX
                ))
            })
        })
        .collect::<Result<Vec<u32>, CliError>>()?;
    Ok((data, t.shape().to_vec()))
}
