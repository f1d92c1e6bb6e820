//! `--device` lists: one timing line per device that ran, each result against the reference,
//! the default's fallback to the CPU path without an adapter, and bad device names.

use std::process::Command;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/minilm_two_cities_qkv.safetensors"
);

/// Runs the binary; `backend` restricts wgpu to those backends (WGPU_BACKEND): a backend this
/// machine lacks (metal on Linux) leaves no adapter at all.
fn run(args: &[&str], backend: Option<&str>) -> (Option<i32>, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_longseq"));
    c.args(args).env_remove("LONGSEQ_ADAPTER");
    if let Some(b) = backend {
        c.env("WGPU_BACKEND", b);
    }
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .collect::<Vec<_>>()
        .join("\n");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        err,
    )
}

/// `relative X` of the line `<name> vs reference (…): …`.
fn rel(stdout: &str, name: &str) -> f64 {
    let l = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{name} vs reference (")))
        .unwrap_or_else(|| panic!("no `{name} vs reference` line in:\n{stdout}"));
    l.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn every_device_times_and_compares_with_the_reference() {
    for method in ["linear", "softmax", "norm", "diag", "lightning"] {
        let a = [
            "attention",
            "--input",
            DATA,
            "--prefix",
            "layer5.",
            "--method",
            method,
            "--causal",
        ];
        let (code, out, err) = run(&[&a[..], &["--device", "gpu,cpu,reference"]].concat(), None);
        assert_eq!(code, Some(0), "{method}: {err}");
        for dev in ["gpu: ", "cpu: ", "reference: "] {
            assert_eq!(
                out.lines().filter(|l| l.starts_with(dev)).count(),
                1,
                "{method} {dev}:\n{out}"
            );
        }
        assert!(rel(&out, "gpu") <= 1e-5, "{method}:\n{out}");
        assert!(rel(&out, "cpu") <= 1e-5, "{method}:\n{out}");
    }
}

#[test]
fn ssm_conv_on_the_cpu_path() {
    let dir = std::env::temp_dir().join(format!("longseq-cli-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A small SSM file in the layout `longseq help ssm` documents.
    let (h, n2, l) = (3usize, 4usize, 300usize);
    let f32s = |n: usize, s: f32| {
        (0..n)
            .map(|i| s * ((i as f32) * 0.37).sin())
            .collect::<Vec<f32>>()
    };
    let tensors: Vec<(&str, Vec<usize>, Vec<f32>)> = vec![
        ("A_re", vec![h, n2], vec![-0.5; h * n2]),
        (
            "A_im",
            vec![h, n2],
            (0..h * n2)
                .map(|i| std::f32::consts::PI * (i % n2) as f32)
                .collect(),
        ),
        ("B_re", vec![h, n2], vec![1.0; h * n2]),
        ("B_im", vec![h, n2], vec![0.0; h * n2]),
        ("C_re", vec![h, n2], f32s(h * n2, 0.7)),
        ("C_im", vec![h, n2], f32s(h * n2, -0.4)),
        ("dt", vec![h], vec![0.01, 0.03, 0.1]),
        ("D", vec![h], vec![1.0, 0.5, -1.0]),
        ("u", vec![2, h, l], f32s(2 * h * l, 1.0)),
    ];
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| bytemuck::cast_slice(&t.2).to_vec())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            (
                t.0.to_string(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.1.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    let input = dir.join("ssm.safetensors");
    safetensors::serialize_to_file(views, None, &input).unwrap();
    for mode in ["kernel", "conv", "scan"] {
        let (code, out, err) = run(
            &[
                "ssm",
                "--input",
                input.to_str().unwrap(),
                "--mode",
                mode,
                "--device",
                "cpu,reference",
            ],
            None,
        );
        assert_eq!(code, Some(0), "{mode}: {err}");
        assert!(rel(&out, "cpu") <= 1e-5, "{mode}:\n{out}");
    }
}

#[test]
fn default_falls_back_to_the_cpu_path_without_an_adapter() {
    const NO_ADAPTER: &str = if cfg!(target_os = "macos") {
        "dx12"
    } else {
        "metal"
    };
    let a = ["attention", "--input", DATA, "--prefix", "layer0."];
    let (code, out, err) = run(&a, Some(NO_ADAPTER));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err.lines().count(), 1, "one notice line: {err}");
    assert!(err.contains("running the CPU path instead"), "{err}");
    assert!(out.lines().any(|l| l.starts_with("cpu: ")), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("gpu: ")), "{out}");
    assert!(rel(&out, "cpu") <= 1e-5, "{out}");
    // An explicit gpu stays an error.
    let (code, _, _) = run(&[&a[..], &["--device", "gpu"]].concat(), Some(NO_ADAPTER));
    assert_ne!(code, Some(0));
    // A device that does not exist is a usage error.
    let (code, _, err) = run(&[&a[..], &["--device", "gpu,tpu"]].concat(), None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown device `tpu`"), "{err}");
}

#[test]
fn every_command_takes_the_device_list_and_prints_one_line_per_device() {
    let co2 = format!(
        "{}/data/co2_mauna_loa_weekly.csv",
        env!("CARGO_MANIFEST_DIR")
    );
    let cases: Vec<Vec<&str>> = vec![
        vec!["attention", "--input", DATA, "--prefix", "layer0."],
        vec![
            "rope", "--input", DATA, "--prefix", "layer0.", "--tensor", "q",
        ],
        vec![
            "embed",
            "--input",
            DATA,
            "--ids",
            "token_ids",
            "--init",
            "normal",
            "--vocab",
            "30522",
            "--dim",
            "8",
        ],
        vec![
            "hippo-approx",
            "--csv",
            &co2,
            "--column",
            "co2",
            "--fill",
            "linear",
            "--n",
            "8",
            "--measure",
            "legt",
            "--theta",
            "0.1",
            "--output",
        ],
        vec![
            "ssm", "--mode", "conv", "--init", "s4d-lin", "--heads", "2", "--state", "8", "--len",
            "200",
        ],
        vec![
            "mamba",
            "--init",
            "--dim",
            "8",
            "--state",
            "4",
            "--len",
            "300",
            "--delta-softplus",
        ],
    ];
    let dir = std::env::temp_dir().join(format!("longseq-cli-every-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out_path = dir.join("c.safetensors");
    for c in cases {
        let mut c = c.clone();
        if c[0] == "hippo-approx" {
            c.push(out_path.to_str().unwrap());
        }
        let (code, out, err) = run(&[&c[..], &["--device", "gpu,cpu,reference"]].concat(), None);
        assert_eq!(code, Some(0), "{}: {err}", c[0]);
        for dev in ["gpu: ", "cpu: ", "reference: "] {
            let n = out.lines().filter(|l| l.starts_with(dev)).count();
            assert_eq!(n, 1, "{} {dev}:\n{out}", c[0]);
        }
        assert!(rel(&out, "gpu") <= 1e-4, "{}:\n{out}", c[0]);
        assert!(rel(&out, "cpu") <= 1e-4, "{}:\n{out}", c[0]);
        assert!(
            out.contains("cpu vs reference (f32, tolerance 1e-4 on max|diff|/max|ref|)"),
            "{}:\n{out}",
            c[0]
        );
        // The default is the same for every command: gpu and reference, compared.
        let (code, out, err) = run(&c, None);
        assert_eq!(code, Some(0), "{}: {err}", c[0]);
        assert!(
            out.lines().any(|l| l.starts_with("gpu: ")),
            "{}:\n{out}",
            c[0]
        );
        assert!(
            out.lines().any(|l| l.starts_with("reference: ")),
            "{}:\n{out}",
            c[0]
        );
        assert!(
            !out.lines().any(|l| l.starts_with("cpu: ")),
            "{}:\n{out}",
            c[0]
        );
    }
}

#[test]
fn a_named_reference_runs_past_the_cost_bound_and_the_default_skips_it() {
    // 403 ids × 30522 × 176: the one-hot reference is ~2.2e9 multiply-adds, estimated just past
    // the 20 s bound with debug assertions (the estimate assumes 1e8/s); a release build assumes
    // 4e8/s, so four times the dim.
    let dim = if cfg!(debug_assertions) { "176" } else { "704" };
    let a = [
        "embed",
        "--input",
        DATA,
        "--ids",
        "token_ids",
        "--init",
        "normal",
        "--vocab",
        "30522",
        "--dim",
        dim,
    ];
    let (code, out, err) = run(&a, None);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("skipping the f64 reference"), "{err}");
    assert!(!out.lines().any(|l| l.starts_with("reference: ")), "{out}");
    // `both` is the default list: skipped too.
    let (_, out, err) = run(&[&a[..], &["--device", "both"]].concat(), None);
    assert!(err.contains("skipping the f64 reference"), "{err}");
    assert!(!out.lines().any(|l| l.starts_with("reference: ")), "{out}");
    // A named reference always runs (here with the CPU path, which is cheap).
    let (code, out, err) = run(&[&a[..], &["--device", "cpu,reference"]].concat(), None);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("skipping"), "{err}");
    assert!(out.lines().any(|l| l.starts_with("reference: ")), "{out}");
    assert!(rel(&out, "cpu") <= 1e-4, "{out}");
}
