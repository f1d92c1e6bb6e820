//! The CLI's contracts for a newcomer: every command's help shows a line that runs on the
//! shipped data (run here as written), exit codes (2 bad input, 3 GPU and reference disagree),
//! honest output (no Rust debug text, like-for-like comparisons only), f16 storage rules, the
//! reference's cost bound and adapter selection by backend.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/minilm_two_cities_qkv.safetensors"
);

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_longseq"));
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        c.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    c
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("longseq-contracts-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr lines without Mesa's XDG_RUNTIME_DIR notice.
fn stderr_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .map(String::from)
        .collect()
}

/// Exit code 2 (or `code`) with exactly one line on stderr containing `needle`.
fn assert_one_line(o: &Output, code: i32, needle: &str) {
    let err = stderr_lines(o);
    assert_eq!(o.status.code(), Some(code), "{err:?}\n{}", stdout(o));
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].contains(needle), "`{needle}` not in {err:?}");
}

fn write_qkv(path: &Path, dtype: safetensors::Dtype, q: &[f32]) {
    let shape = vec![2, 7, 4];
    assert_eq!(q.len(), 56);
    let bytes: Vec<u8> = match dtype {
        safetensors::Dtype::F16 => q
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        _ => q.iter().flat_map(|x| x.to_le_bytes()).collect(),
    };
    let t = safetensors::tensor::TensorView::new(dtype, shape, &bytes).unwrap();
    safetensors::serialize_to_file([("q", t.clone()), ("k", t.clone()), ("v", t)], None, path)
        .unwrap();
}

fn ragged(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
        .collect()
}

#[test]
fn every_help_example_runs_on_shipped_data() {
    let cmds = [
        "attention",
        "embed",
        "rope",
        "hippo",
        "discretize",
        "hippo-approx",
        "ssm",
        "mamba",
    ];
    for cmd in cmds {
        let help = stdout(&run(&["help", cmd]));
        let idx = help
            .find("\nExample")
            .unwrap_or_else(|| panic!("`longseq help {cmd}` shows no example:\n{help}"));
        let line = help[idx + 1..].lines().nth(1).unwrap().trim().to_string();
        assert!(line.starts_with(&format!("longseq {cmd} ")) || line.starts_with("longseq hippo "));
        let dir = tmp_dir(cmd);
        for part in line.split(" && ") {
            let args: Vec<String> = part
                .split_whitespace()
                .skip(1)
                .map(|a| {
                    if a.starts_with("data/") {
                        format!("{ROOT}/{a}")
                    } else {
                        a.to_string()
                    }
                })
                .collect();
            let o = bin().args(&args).current_dir(&dir).output().unwrap();
            assert!(
                o.status.success(),
                "`{part}` failed: {:?}\n{}",
                stderr_lines(&o),
                stdout(&o)
            );
            let out = args
                .iter()
                .position(|a| a == "--output")
                .map(|i| dir.join(&args[i + 1]))
                .unwrap();
            assert!(out.exists(), "`{part}` wrote no {}", out.display());
        }
    }
}

#[test]
fn disagreement_past_the_tolerance_exits_3_and_writes_nothing() {
    let dir = tmp_dir("mismatch");
    let out = dir.join("o.safetensors");
    let o = bin()
        .args(["attention", "--input", DATA, "--prefix", "layer0."])
        .args(["--tolerance", "1e-12", "--output"])
        .arg(&out)
        .output()
        .unwrap();
    assert_one_line(&o, 3, "tolerance 1e-12");
    assert!(!out.exists());
    // The default tolerance is stated and holds.
    let o = run(&["attention", "--input", DATA, "--prefix", "layer0."]);
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    assert!(
        stdout(&o).contains("gpu vs reference (f32 storage, tolerance 1e-4"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn output_in_a_missing_folder_exits_2_for_every_command() {
    let missing = std::env::temp_dir()
        .join("longseq-no-such-dir")
        .join("o.safetensors");
    let m = missing.to_str().unwrap();
    let co2 = format!("{ROOT}/data/co2_mauna_loa_weekly.csv");
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "attention",
            "--input",
            DATA,
            "--prefix",
            "layer0.",
            "--output",
            m,
        ],
        vec![
            "rope", "--input", DATA, "--prefix", "layer0.", "--tensor", "q", "--output", m,
        ],
        vec!["hippo", "--measure", "legs", "--n", "4", "--output", m],
        vec![
            "hippo-approx",
            "--csv",
            &co2,
            "--column",
            "co2",
            "--fill",
            "linear",
        ],
        vec![
            "ssm", "--mode", "kernel", "--init", "s4d-lin", "--len", "8", "--output", m,
        ],
    ];
    for mut c in cases {
        if c[0] == "hippo-approx" {
            c.extend(["--n", "4", "--output", m]);
        }
        assert_one_line(&run(&c), 2, "does not exist");
    }
}

#[test]
fn cpu_path_validates_options_like_the_gpu_path() {
    for device in ["gpu", "cpu", "both"] {
        let base = [
            "attention",
            "--input",
            DATA,
            "--prefix",
            "layer0.",
            "--device",
            device,
        ];
        let block0 = [&base[..], &["--method", "lightning", "--block", "0"]].concat();
        assert_one_line(&run(&block0), 2, "--block 0");
        let eps = [&base[..], &["--eps", "-1"]].concat();
        assert_one_line(&run(&eps), 2, "eps");
    }
    // A negative number where only naturals go is one line too, not a usage dump.
    let o = run(&["attention", "--input", DATA, "--block", "-1"]);
    assert_one_line(&o, 2, "--block");
}

#[test]
fn f16_storage_rules() {
    let dir = tmp_dir("f16");
    // Finite values beyond f16's range: one line, exit 2, with --dtype f16 only.
    let mut q = ragged(56);
    q[13] = 1.0e5;
    let big = dir.join("big.safetensors");
    write_qkv(&big, safetensors::Dtype::F32, &q);
    let b = big.to_str().unwrap();
    assert_one_line(
        &run(&["attention", "--input", b, "--dtype", "f16"]),
        2,
        "beyond f16's range",
    );
    let o = run(&["attention", "--input", b, "--device", "gpu"]);
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    // An f16 file runs in f16 storage unless told otherwise.
    let h = dir.join("h.safetensors");
    write_qkv(&h, safetensors::Dtype::F16, &ragged(56));
    let h = h.to_str().unwrap();
    let o = run(&["attention", "--input", h]);
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    assert!(stdout(&o).contains("GPU storage f16"), "{}", stdout(&o));
    let o = run(&["attention", "--input", h, "--dtype", "f32"]);
    assert!(stdout(&o).contains("GPU storage f32"), "{}", stdout(&o));
    // The CPU-only path says nothing about GPU storage.
    let o = run(&["attention", "--input", h, "--device", "cpu"]);
    assert!(o.status.success());
    assert!(!stdout(&o).contains("GPU storage"), "{}", stdout(&o));
}

#[test]
fn output_has_no_rust_debug_text_and_compares_like_for_like() {
    let debug = [
        "Some(",
        "None",
        "Yarn {",
        "OrthogonalChi",
        "DynamicNtk",
        "Interleaved",
        "LegS",
    ];
    let runs: Vec<Vec<&str>> = vec![
        vec![
            "rope",
            "--input",
            DATA,
            "--prefix",
            "layer0.",
            "--tensor",
            "k",
            "--scaling",
            "yarn",
        ],
        vec![
            "attention",
            "--input",
            DATA,
            "--prefix",
            "layer5.",
            "--feature-map",
            "favor",
        ],
        vec![
            "attention",
            "--input",
            DATA,
            "--prefix",
            "layer5.",
            "--method",
            "softmax",
        ],
        vec![
            "attention",
            "--input",
            DATA,
            "--prefix",
            "layer5.",
            "--method",
            "lightning",
        ],
        vec![
            "attention",
            "--input",
            DATA,
            "--prefix",
            "layer5.",
            "--method",
            "norm",
        ],
        vec![
            "attention",
            "--input",
            DATA,
            "--prefix",
            "layer5.",
            "--method",
            "softmax",
            "--window",
            "16",
        ],
        vec![
            "ssm", "--mode", "scan", "--init", "legs", "--heads", "2", "--state", "8", "--len",
            "50",
        ],
    ];
    for mut r in runs {
        match r[0] {
            "rope" => r.extend(["--factor", "4", "--original-length", "64"]),
            _ if r.contains(&"favor") => r.extend(["--num-features", "64"]),
            _ => {}
        }
        let o = run(&r);
        assert!(o.status.success(), "{r:?}: {:?}", stderr_lines(&o));
        let text = stdout(&o);
        for d in debug {
            assert!(!text.contains(d), "{r:?} prints `{d}`:\n{text}");
        }
        let like_for_like =
            r.contains(&"favor") || (r.contains(&"softmax") && !r.contains(&"--window"));
        assert_eq!(
            text.contains("softmax_out"),
            like_for_like,
            "{r:?}:\n{text}"
        );
    }
    // Errors name options as the user typed them.
    let o = run(&[
        "rope",
        "--input",
        DATA,
        "--prefix",
        "layer0.",
        "--tensor",
        "q",
        "--scaling",
        "dynamic-ntk",
        "--factor",
        "2",
    ]);
    assert_one_line(&o, 2, "--scaling dynamic-ntk");
}

#[test]
fn reference_past_its_cost_bound_is_skipped_with_a_notice() {
    let dir = tmp_dir("skip");
    let out = dir.join("x.safetensors");
    // 403 ids × 30522 × 384: the one-hot reference is ~5e9 multiply-adds, past the bound at the
    // estimate's debug rate; twice the dim at its release rate.
    let dim = if cfg!(debug_assertions) { "384" } else { "768" };
    let o = bin()
        .args([
            "embed",
            "--input",
            DATA,
            "--ids",
            "token_ids",
            "--init",
            "normal",
        ])
        .args(["--vocab", "30522", "--dim", dim, "--output"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    let err = stderr_lines(&o);
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].contains("skipping the f64 reference") && err[0].contains("--force-reference"));
    assert!(out.exists());
}

#[test]
fn info_lists_every_adapter_and_the_backend_picks_one() {
    let o = run(&["info"]);
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    let text = stdout(&o);
    let listed = text
        .lines()
        .filter(|l| l.starts_with("  ") && l.contains("(backend "))
        .count();
    assert!(listed >= 1, "{text}");
    for backend in ["vulkan", "gl"] {
        if !text.contains(&format!("(backend {backend},")) {
            continue;
        }
        let o = bin()
            .arg("info")
            .env("LONGSEQ_ADAPTER", backend)
            .output()
            .unwrap();
        let picked = stdout(&o);
        let picked = &picked[picked.find("picked:").unwrap()..];
        assert!(
            picked.contains(&format!("backend {backend},")),
            "{backend}: {picked}"
        );
    }
    let o = bin()
        .arg("info")
        .env("LONGSEQ_ADAPTER", "no-such-adapter")
        .output()
        .unwrap();
    assert_one_line(&o, 2, "matches no adapter");
    assert!(!stderr_lines(&o)[0].contains("lavapipe"));
}
