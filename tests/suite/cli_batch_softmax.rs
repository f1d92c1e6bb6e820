//! `longseq attention --method softmax|diag` and `longseq rope` with `--layout blhd` /
//! `--layout blhd`, `--cu-seqlens NAME` (i32 and i64 offsets) and grouped heads from the k/v
//! shapes: the written output against the library's f64 references, and the exit codes of bad
//! offsets and of methods or devices that do not take them.

use crate::common;

use std::process::Command;

use common::*;
use longseq::attention::SoftmaxAttentionOptions;
use longseq::positions::{Positions, RopeOptions};
use longseq::reference::attention::softmax_attention_batch;
use longseq::reference::positions::rope_batch;
use longseq::types::batch::{CuSeqlens, GqaDims, Layout};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_longseq"))
}

fn tmp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("longseq-cli-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

fn write(path: &str, tensors: &[(&str, Dtype, Vec<usize>, &[u8])]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, std::path::Path::new(path)).unwrap();
}

fn read(path: &str, name: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    (bytemuck::pod_collect_to_vec(t.data()), t.shape().to_vec())
}

const CU: [i64; 4] = [0, 15, 100, 130];
const L: usize = 137;

/// q [1, L, 6, 16], k, v [1, L, 2, 16] in blhd (GQA 6 → 2), cu_seqlens as i64 and i32.
fn input(path: &str) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut r = rng(3);
    let q = randn(&mut r, L * 6 * 16, 1.0);
    let k = randn(&mut r, L * 2 * 16, 1.0);
    let v = randn(&mut r, L * 2 * 16, 1.0);
    let cu32: Vec<i32> = CU.iter().map(|&x| x as i32).collect();
    let bad: Vec<i64> = vec![0, 50, 40];
    write(
        path,
        &[
            ("q", Dtype::F32, vec![1, L, 6, 16], bytemuck::cast_slice(&q)),
            ("k", Dtype::F32, vec![1, L, 2, 16], bytemuck::cast_slice(&k)),
            ("v", Dtype::F32, vec![1, L, 2, 16], bytemuck::cast_slice(&v)),
            ("cu_seqlens", Dtype::I64, vec![4], bytemuck::cast_slice(&CU)),
            ("cu32", Dtype::I32, vec![4], bytemuck::cast_slice(&cu32)),
            ("bad", Dtype::I64, vec![3], bytemuck::cast_slice(&bad)),
        ],
    );
    (q, k, v)
}

#[test]
fn varlen_gqa_blhd_softmax_writes_the_reference() {
    let path = tmp("in.safetensors");
    let (q, k, v) = input(&path);
    for (name, causal) in [("cu_seqlens", true), ("cu32", false)] {
        let out = tmp(&format!("o-{name}.safetensors"));
        let mut cmd = bin();
        cmd.env("XDG_RUNTIME_DIR", std::env::temp_dir()).args([
            "attention",
            "--input",
            &path,
            "--method",
            "softmax",
            "--layout",
            "blhd",
            "--cu-seqlens",
            name,
            "--output",
            &out,
        ]);
        if causal {
            cmd.arg("--causal");
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (got, shape) = read(&out, "o");
        assert_eq!(shape, vec![1, L, 6, 16]);
        let g = GqaDims::check(
            "t",
            &[1, L, 6, 16],
            &[1, L, 2, 16],
            &[1, L, 2, 16],
            Layout::Blhd,
            causal,
        )
        .unwrap();
        let opts = SoftmaxAttentionOptions {
            causal,
            layout: Layout::Blhd,
            cu_seqlens: Some(CuSeqlens::new("t", &CU, L).unwrap()),
            ..Default::default()
        };
        let mut want = softmax_attention_batch(&q, &k, &v, &g, &opts, &Default::default()).unwrap();
        // Tokens past the last offset are written as 0.
        want.iter_mut()
            .filter(|x| x.is_nan())
            .for_each(|x| *x = 0.0);
        let got: Vec<f64> = got.iter().map(|&x| x as f64).collect();
        assert_close(name, &got, &want, 1e-5);
    }
}

#[test]
fn rope_blhd_varlen_writes_the_reference() {
    let path = tmp("rope.safetensors");
    let (q, _, _) = input(&path);
    let out = tmp("rope-o.safetensors");
    let o = bin()
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .args([
            "rope",
            "--input",
            &path,
            "--tensor",
            "q",
            "--layout",
            "blhd",
            "--cu-seqlens",
            "cu_seqlens",
            "--output",
            &out,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (got, _) = read(&out, "x");
    let opts = RopeOptions {
        seq_layout: Layout::Blhd,
        cu_seqlens: Some(CuSeqlens::new("t", &CU, L).unwrap()),
        ..Default::default()
    };
    let mut want = rope_batch(&q, &[1, L, 6, 16], Positions::Offset(0), &opts).unwrap();
    want.iter_mut()
        .filter(|x| x.is_nan())
        .for_each(|x| *x = 0.0);
    let got: Vec<f64> = got.iter().map(|&x| x as f64).collect();
    assert_close("rope", &got, &want, 1e-5);
    // `--seq-layout` (the spelling before `--layout`) still names the memory layout.
    let out2 = tmp("rope-o2.safetensors");
    let o = bin()
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .args([
            "rope",
            "--input",
            &path,
            "--tensor",
            "q",
            "--seq-layout",
            "blhd",
        ])
        .args(["--cu-seqlens", "cu_seqlens", "--output", &out2])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read(&out2, "x").0, read(&out, "x").0);
}

/// Bad offsets, a method without the flags here, and the CPU path: one line on stderr, exit 2.
#[test]
fn bad_batches_exit_2() {
    let path = tmp("bad.safetensors");
    input(&path);
    let cases: [&[&str]; 4] = [
        &[
            "attention",
            "--method",
            "softmax",
            "--cu-seqlens",
            "bad",
            "--layout",
            "blhd",
        ],
        &[
            "attention",
            "--method",
            "softmax",
            "--cu-seqlens",
            "nope",
            "--layout",
            "blhd",
        ],
        &[
            "attention",
            "--method",
            "softmax",
            "--layout",
            "blhd",
            "--device",
            "cpu",
        ],
        &[
            "rope",
            "--tensor",
            "q",
            "--layout",
            "blhd",
            "--cu-seqlens",
            "bad",
        ],
    ];
    for args in cases {
        let o = bin()
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .args(args)
            .args(["--input", &path])
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// The README's varlen and GQA lines on the shipped file (q [1, 40, 4, 8], k/v [1, 40, 2, 8] in
/// blhd, i32 cu_seqlens [0, 9, 25, 37]) run and agree with the reference.
#[test]
fn readme_lines_run() {
    let data = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/gqa_varlen_blhd.safetensors"
    );
    let lines: [&[&str]; 3] = [
        &[
            "--method",
            "softmax",
            "--layout",
            "blhd",
            "--cu-seqlens",
            "cu_seqlens",
            "--causal",
        ],
        &["--method", "softmax", "--layout", "blhd", "--alibi"],
        // README's FAVOR+ line: grouped heads, packed sequences, causal.
        &[
            "--feature-map",
            "favor",
            "--num-features",
            "64",
            "--causal",
            "--layout",
            "blhd",
            "--cu-seqlens",
            "cu_seqlens",
        ],
    ];
    for args in lines {
        let o = bin()
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .args(["attention", "--input", data])
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// `--nan error` refuses a NaN on the batch path (blhd, packed, grouped heads) as on the plain one.
#[test]
fn nan_policy_error_holds_on_the_batch_path() {
    let path = tmp("nan-in.safetensors");
    let (mut q, k, v) = input(&path);
    q[40] = f32::NAN;
    write(
        &path,
        &[
            ("q", Dtype::F32, vec![1, L, 6, 16], bytemuck::cast_slice(&q)),
            ("k", Dtype::F32, vec![1, L, 2, 16], bytemuck::cast_slice(&k)),
            ("v", Dtype::F32, vec![1, L, 2, 16], bytemuck::cast_slice(&v)),
            ("cu_seqlens", Dtype::I64, vec![4], bytemuck::cast_slice(&CU)),
        ],
    );
    let out = tmp("nan-out.safetensors");
    let o = bin()
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .args(["attention", "--input", &path, "--method", "softmax"])
        .args([
            "--layout",
            "blhd",
            "--cu-seqlens",
            "cu_seqlens",
            "--nan",
            "error",
        ])
        .args(["--output", &out])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("`q` holds NaN"), "{err}");
    assert!(!std::path::Path::new(&out).exists());
}
