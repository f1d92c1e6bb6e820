//! The `longseq` binary on the shipped MiniLM data, checked against an independent computation
//! (the quadratic form of the equation), plus its error contract.

use crate::common;

use std::process::Command;

use common::*;
use safetensors::SafeTensors;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/minilm_two_cities_qkv.safetensors"
);

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_longseq"))
}

fn read_f64(path: &str, name: &str) -> (Vec<f64>, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    let v: Vec<f32> = bytemuck::pod_collect_to_vec(t.data());
    (v.into_iter().map(f64::from).collect(), t.shape().to_vec())
}

fn tmp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("longseq-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

/// stderr without Mesa's harmless XDG_RUNTIME_DIR notice.
fn stderr_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .map(String::from)
        .collect()
}

fn elu1(x: f64) -> f64 {
    if x > 0.0 {
        x + 1.0
    } else {
        x.exp()
    }
}

#[test]
fn attention_on_shipped_data_equals_the_equation() {
    // (prefix, feature map, φ, causal, denominator)
    type Case = (&'static str, &'static str, fn(f64) -> f64, bool, bool);
    let cases: [Case; 6] = [
        ("layer0.", "elu1", elu1, false, true),
        ("layer0.", "elu1", elu1, true, true),
        ("layer5.", "relu", |x| x.max(0.0), false, true),
        ("layer5.", "relu", |x| x.max(0.0), true, true),
        ("layer0.", "identity", |x| x, false, false),
        ("layer5.", "identity", |x| x, true, false),
    ];
    for (i, (prefix, fm, phi, causal, den)) in cases.into_iter().enumerate() {
        let out = tmp(&format!("o{i}.safetensors"));
        let mut cmd = bin();
        cmd.args([
            "attention",
            "--input",
            DATA,
            "--prefix",
            prefix,
            "--method",
            "linear",
        ])
        .args(["--feature-map", fm, "--device", "gpu", "--output", &out]);
        if causal {
            cmd.arg("--causal");
        }
        if !den {
            cmd.arg("--no-denominator");
        }
        let res = cmd.output().unwrap();
        assert!(res.status.success(), "{:?}", stderr_lines(&res));
        let stdout = String::from_utf8_lossy(&res.stdout);
        assert!(
            stdout.contains("adapter:") && stdout.contains("gpu:"),
            "{stdout}"
        );
        let (o, shape) = read_f64(&out, "o");
        assert_eq!(shape, [12, 403, 32]);
        let (q, _) = read_f64(DATA, &format!("{prefix}q"));
        let (k, _) = read_f64(DATA, &format!("{prefix}k"));
        let (v, _) = read_f64(DATA, &format!("{prefix}v"));
        let want = naive_linear_attention(&q, &k, &v, (12, 403, 32, 32), phi, causal, 1e-6, den);
        assert_close(
            &format!("{prefix} {fm} causal={causal}"),
            &o,
            &want,
            TOL_F32,
        );
    }
}

#[test]
fn both_devices_agree_and_f16_storage_is_within_tolerance() {
    let out = tmp("o_f16.safetensors");
    let res = bin()
        .args([
            "attention",
            "--input",
            DATA,
            "--prefix",
            "layer0.",
            "--causal",
        ])
        .args(["--dtype", "f16", "--output", &out])
        .output()
        .unwrap();
    assert!(res.status.success(), "{:?}", stderr_lines(&res));
    let stdout = String::from_utf8_lossy(&res.stdout);
    for needle in [
        "gpu:",
        "reference:",
        "gpu vs reference (f16 storage, tolerance 5e-3",
    ] {
        assert!(stdout.contains(needle), "missing `{needle}` in:\n{stdout}");
    }
    // Causal linear attention is not an estimate of the stored non-causal softmax output.
    assert!(!stdout.contains("softmax_out"), "{stdout}");
    let (o, _) = read_f64(&out, "o");
    let (q, _) = read_f64(DATA, "layer0.q");
    let (k, _) = read_f64(DATA, "layer0.k");
    let (v, _) = read_f64(DATA, "layer0.v");
    let want = naive_linear_attention(&q, &k, &v, (12, 403, 32, 32), elu1, true, 1e-6, true);
    assert_close("f16 storage", &o, &want, TOL_F16);
}

#[test]
fn missing_tensor_is_one_line_and_exit_code_2() {
    let res = bin()
        .args(["attention", "--input", DATA, "--prefix", "layer9."])
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
    let err = stderr_lines(&res);
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].contains("layer9.q"), "{err:?}");
}

#[test]
fn shape_mismatch_is_one_line_and_exit_code_2() {
    let path = tmp("bad.safetensors");
    let q = vec![0.5f32; 2 * 5 * 4];
    let k = vec![0.5f32; 2 * 6 * 4];
    let tq = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![2, 5, 4],
        bytemuck::cast_slice(&q),
    )
    .unwrap();
    let tk = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![2, 6, 4],
        bytemuck::cast_slice(&k),
    )
    .unwrap();
    let tv = tq.clone();
    safetensors::serialize_to_file(
        [("q", tq), ("k", tk), ("v", tv)],
        None,
        std::path::Path::new(&path),
    )
    .unwrap();
    let res = bin()
        .args(["attention", "--input", &path])
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
    let err = stderr_lines(&res);
    assert_eq!(err.len(), 1, "{err:?}");
    // Non-causal attention takes Lk ≠ Lq (cross-attention), so the mismatch is v against k.
    assert!(err[0].contains("`v`") && err[0].contains("k's"), "{err:?}");
}

#[test]
fn reference_only_and_cpu_path_only_runs_write_their_result() {
    for (device, tol) in [("reference", 1e-6), ("cpu", TOL_F32)] {
        let out = tmp(&format!("o_{device}.safetensors"));
        let res = bin()
            .args(["attention", "--input", DATA, "--prefix", "layer5."])
            .args(["--device", device, "--output", &out])
            .output()
            .unwrap();
        assert!(res.status.success(), "{:?}", stderr_lines(&res));
        let (o, _) = read_f64(&out, "o");
        let (q, _) = read_f64(DATA, "layer5.q");
        let (k, _) = read_f64(DATA, "layer5.k");
        let (v, _) = read_f64(DATA, "layer5.v");
        let want = naive_linear_attention(&q, &k, &v, (12, 403, 32, 32), elu1, false, 1e-6, true);
        assert_close(device, &o, &want, tol);
    }
}

/// A fresh shell without XDG_RUNTIME_DIR: listing adapters (the GL backend's EGL probe) prints
/// no error line.
#[test]
fn info_without_xdg_runtime_dir_prints_no_error() {
    let o = bin()
        .arg("info")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("XDG_RUNTIME_DIR"), "{err}");
}
