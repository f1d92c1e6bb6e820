//! `longseq hippo`, `discretize` and `hippo-approx` against independent computations: numpy's
//! HiPPO matrices and scipy's cont2discrete (tests/data, generated once by the scripts beside
//! them), and the f64 reference recurrence on the real Mauna Loa series.

use std::collections::HashMap;
use std::process::Command;

use safetensors::{Dtype, SafeTensors};

const CO2: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/co2_mauna_loa_weekly.csv");

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_longseq"))
}

fn tmp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("longseq-cli-hippo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

fn read(path: &str, name: &str) -> (Vec<f64>, Vec<usize>, Dtype) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let v = match t.dtype() {
        Dtype::F64 => bytemuck::pod_collect_to_vec::<u8, f64>(t.data()),
        Dtype::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(t.data())
            .into_iter()
            .map(f64::from)
            .collect(),
        d => panic!("unexpected dtype {d:?}"),
    };
    (v, t.shape().to_vec(), t.dtype())
}

fn write_f64(path: &str, tensors: &[(&str, Vec<usize>, &[f64])]) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, d)| (n.to_string(), s.clone(), bytemuck::cast_slice(d).to_vec()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| {
            let v = safetensors::tensor::TensorView::new(Dtype::F64, s.clone(), b).unwrap();
            (n.clone(), v)
        })
        .collect();
    let meta: Option<HashMap<String, String>> = None;
    safetensors::serialize_to_file(views, meta, std::path::Path::new(path)).unwrap();
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rel(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (g, w)| m.max((g - w).abs()));
    assert!(diff.is_finite());
    diff / scale
}

/// Blocks of `case ...` headers followed by `rows` lines of numbers.
fn cases(text: &str, rows: usize) -> Vec<(Vec<String>, Vec<Vec<f64>>)> {
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    let mut out = vec![];
    while let Some(h) = lines.next() {
        let head: Vec<String> = h.split_whitespace().skip(1).map(String::from).collect();
        let mats = (0..rows)
            .map(|_| {
                let l = lines.next().unwrap();
                l.split_whitespace().map(|v| v.parse().unwrap()).collect()
            })
            .collect();
        out.push((head, mats));
    }
    out
}

#[test]
fn hippo_command_equals_numpy() {
    let all = cases(include_str!("../data/hippo_numpy.txt"), 2);
    assert_eq!(all.len(), 15);
    for (head, mats) in all {
        let (measure, n, theta) = (&head[0], &head[1], &head[2]);
        let path = tmp(&format!("hippo-{measure}-{n}.safetensors"));
        ok(bin().args([
            "hippo",
            "--measure",
            measure,
            "--n",
            n,
            "--theta",
            theta,
            "--output",
            &path,
        ]));
        let (a, sa, da) = read(&path, "A");
        let (b, sb, _) = read(&path, "B");
        let n: usize = n.parse().unwrap();
        assert_eq!((sa, sb, da), (vec![n, n], vec![n, 1], Dtype::F64));
        let (ea, eb) = (rel(&a, &mats[0]), rel(&b, &mats[1]));
        assert!(
            ea <= 1e-12 && eb <= 1e-12,
            "{measure} N={n}: {ea:.2e} {eb:.2e}"
        );
    }
}

#[test]
fn discretize_command_equals_scipy() {
    let all = cases(include_str!("../data/cont2discrete.txt"), 4);
    let mut worst = 0.0f64;
    for (i, (head, m)) in all.iter().enumerate() {
        let (method, dt) = (&head[0], &head[1]);
        let (n, k): (usize, usize) = (head[2].parse().unwrap(), head[3].parse().unwrap());
        let (inp, out) = (
            tmp(&format!("ab{i}.safetensors")),
            tmp(&format!("d{i}.safetensors")),
        );
        write_f64(&inp, &[("A", vec![n, n], &m[0]), ("B", vec![n, k], &m[1])]);
        let method = if method == "backward_diff" {
            "backward-euler"
        } else {
            method
        };
        ok(bin().args([
            "discretize",
            "--input",
            &inp,
            "--method",
            method,
            "--dt",
            dt,
            "--output",
            &out,
        ]));
        let (ad, sa, _) = read(&out, "Ab");
        let (bd, sb, _) = read(&out, "Bb");
        assert_eq!((sa, sb), (vec![n, n], vec![n, k]));
        let e = rel(&ad, &m[2]).max(rel(&bd, &m[3]));
        assert!(e <= 1e-9, "{method} dt={dt} n={n}: {e:.2e}");
        worst = worst.max(e);
    }
    eprintln!("discretize CLI vs scipy: worst relative error {worst:.2e}");
}

#[test]
fn discretize_command_rejects_bad_input_with_exit_code_2() {
    let inp = tmp("bad.safetensors");
    write_f64(
        &inp,
        &[("A", vec![2, 3], &[0.0; 6]), ("B", vec![2, 1], &[1.0, 1.0])],
    );
    let out = bin()
        .args([
            "discretize",
            "--input",
            &inp,
            "--method",
            "zoh",
            "--dt",
            "0.1",
            "--output",
            &tmp("x"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`A` has shape [2, 3]"));
}

#[test]
fn hippo_approx_on_mauna_loa_refuses_gaps_then_matches_the_reference() {
    let path = tmp("co2.safetensors");
    let base = ["hippo-approx", "--csv", CO2, "--column", "co2", "--n", "16"];
    let out = bin().args(base).args(["--output", &path]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("59 of 2284 values are missing"));

    for measure in ["legs", "legt"] {
        let stdout = ok(bin().args(base).args([
            "--fill",
            "linear",
            "--measure",
            measure,
            "--theta",
            "0.25",
            "--device",
            "both",
            "--output",
            &path,
        ]));
        let line = stdout
            .lines()
            .find(|l| l.starts_with("gpu vs reference ("))
            .unwrap();
        let rel: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(rel <= 1e-4, "{measure}: {line}");
        let (f, sf, _) = read(&path, "f");
        let (c, sc, dc) = read(&path, "c");
        let (r, _, _) = read(&path, "recon");
        assert_eq!((sf, sc, dc), (vec![2284], vec![2284, 16], Dtype::F32));
        assert!(
            f.iter().all(|x| (300.0..450.0).contains(x)),
            "filled series out of range"
        );
        assert!(c.iter().chain(&r).all(|x| x.is_finite()));
    }
}

#[test]
fn hippo_approx_reports_an_overflowing_recurrence() {
    // Forward Euler at step 1/k multiplies mode n by (1 − (n+1)/k): binomial growth past f32.
    let out = bin()
        .args([
            "hippo-approx",
            "--csv",
            CO2,
            "--column",
            "co2",
            "--n",
            "128",
            "--fill",
            "linear",
        ])
        .args(["--method", "euler", "--output", &tmp("euler.safetensors")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use --method bilinear"));
}
