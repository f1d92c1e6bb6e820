//! Files for the CLI tests: f32 safetensors inputs written from f64 values, outputs read back as
//! f64, and the `longseq` binary.

use std::process::{Command, Output};

use rand::Rng;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

/// `name` inside this process's temporary folder for the test file `group`.
pub fn tmp_in(group: &str, name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("longseq-cli-{group}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

/// Writes `(name, shape, values)` as f32 tensors.
pub fn write_f32(path: &str, tensors: &[(&str, Vec<usize>, Vec<f64>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            bytemuck::cast_slice(&v).to_vec()
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            let v = TensorView::new(Dtype::F32, s.clone(), b).unwrap();
            (n.to_string(), v)
        })
        .collect();
    safetensors::serialize_to_file(views, None, std::path::Path::new(path)).unwrap();
}

/// [`write_f32`] plus i64 vectors (`cu_seqlens` offsets, as fla writes them).
pub fn write_f32_i64(
    path: &str,
    tensors: &[(&str, Vec<usize>, Vec<f64>)],
    ints: &[(&str, Vec<i64>)],
) {
    let mut bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| {
            let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            bytemuck::cast_slice(&v).to_vec()
        })
        .collect();
    bytes.extend(ints.iter().map(|(_, v)| bytemuck::cast_slice(v).to_vec()));
    let shapes = tensors.iter().map(|(n, s, _)| (*n, Dtype::F32, s.clone()));
    let shapes = shapes.chain(ints.iter().map(|(n, v)| (*n, Dtype::I64, vec![v.len()])));
    let views: Vec<(String, TensorView<'_>)> = shapes
        .zip(&bytes)
        .map(|((n, dt, s), b)| (n.to_string(), TensorView::new(dt, s, b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, std::path::Path::new(path)).unwrap();
}

/// Uniform draws in [lo, hi), already rounded to f32 (the files store f32).
pub fn draw_uniform(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
    let mut g = super::rng(seed);
    (0..n)
        .map(|_| g.random_range(lo..hi) as f32 as f64)
        .collect()
}

/// The f32 tensor `name` of the file at `path`, as f64, with its shape.
pub fn read_f64(path: &str, name: &str) -> (Vec<f64>, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let v: Vec<f32> = bytemuck::pod_collect_to_vec(t.data());
    (v.into_iter().map(f64::from).collect(), t.shape().to_vec())
}

/// Runs the `longseq` binary with `args`.
pub fn longseq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_longseq"))
        .args(args)
        .output()
        .unwrap()
}
