//! `longseq embed` and `longseq rope` on the shipped MiniLM tensors (inputs nobody chose for
//! these ops), each checked against an independent computation of its equation, plus the error
//! contract (one line, exit code 2).

use crate::common;

use std::f64::consts::PI;
use std::process::Command;

use common::*;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/minilm_two_cities_qkv.safetensors"
);

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_longseq"))
}

fn tmp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("longseq-cli-pos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

fn read_f32(path: &str, name: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), Dtype::F32);
    (bytemuck::pod_collect_to_vec(t.data()), t.shape().to_vec())
}

fn write(path: &str, tensors: &[(&str, Dtype, Vec<usize>, &[u8])]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, std::path::Path::new(path)).unwrap();
}

fn stderr_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .map(String::from)
        .collect()
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Table = MiniLM layer5 values as [V = 12·403, 32]; ids from the bits of layer0 queries.
fn embed_input(path: &str, bad: Option<(usize, i64)>) -> (Vec<f32>, Vec<i64>) {
    let (table, _) = read_f32(DATA, "layer5.v");
    let (q, _) = read_f32(DATA, "layer0.q");
    let v = table.len() / 32;
    let mut ids: Vec<i64> = q[..3 * 101]
        .iter()
        .map(|x| (x.to_bits() % v as u32) as i64)
        .collect();
    if let Some((i, id)) = bad {
        ids[i] = id;
    }
    write(
        path,
        &[
            (
                "table",
                Dtype::F32,
                vec![v, 32],
                bytemuck::cast_slice(&table),
            ),
            ("ids", Dtype::I64, vec![3, 101], bytemuck::cast_slice(&ids)),
        ],
    );
    (table, ids)
}

#[test]
fn embed_equals_the_gather_of_table_rows() {
    let (input, out) = (tmp("embed_in.safetensors"), tmp("embed_out.safetensors"));
    let (table, ids) = embed_input(&input, None);
    for (device, dtype, tol) in [("gpu", "f32", 0.0), ("both", "f16", TOL_F16)] {
        let res = bin()
            .args(["embed", "--input", &input, "--output", &out])
            .args(["--device", device, "--dtype", dtype])
            .output()
            .unwrap();
        assert!(res.status.success(), "{:?}", stderr_lines(&res));
        let (x, shape) = read_f32(&out, "x");
        assert_eq!(shape, [3, 101, 32]);
        let want: Vec<f64> = ids
            .iter()
            .flat_map(|&id| f64s(&table[id as usize * 32..(id as usize + 1) * 32]))
            .collect();
        assert_close(&format!("embed {dtype}"), &f64s(&x), &want, tol);
        if device == "both" {
            assert!(String::from_utf8_lossy(&res.stdout).contains("gpu vs reference ("));
        }
    }
}

#[test]
fn embed_with_an_id_out_of_range_names_it_and_exits_2() {
    let input = tmp("embed_bad.safetensors");
    embed_input(&input, Some((101 + 7, 12 * 403)));
    let res = bin().args(["embed", "--input", &input]).output().unwrap();
    assert_eq!(res.status.code(), Some(2));
    let err = stderr_lines(&res);
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(
        err[0].contains("[1, 7]") && err[0].contains("4836"),
        "{err:?}"
    );
    embed_input(&input, Some((3, -1)));
    let res = bin().args(["embed", "--input", &input]).output().unwrap();
    assert_eq!(res.status.code(), Some(2));
    assert!(stderr_lines(&res)[0].contains("-1"));
}

/// RoPE written independently: pair (a, b) as the complex number a + ib times scale·e^{iφ}.
fn rope_by_complex(
    x: &[f32],
    (rows, l, d): (usize, usize, usize),
    offset: usize,
    half: bool,
    angle: &dyn Fn(f64, usize) -> f64,
    scale: f64,
) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for r in 0..rows {
        for t in 0..l {
            let row = (r * l + t) * d;
            for i in 0..d / 2 {
                let (ia, ib) = if half {
                    (i, i + d / 2)
                } else {
                    (2 * i, 2 * i + 1)
                };
                let z = (x[row + ia] as f64, x[row + ib] as f64);
                let phi = angle((offset + t) as f64, i);
                let w = (scale * phi.cos(), scale * phi.sin());
                out[row + ia] = z.0 * w.0 - z.1 * w.1;
                out[row + ib] = z.0 * w.1 + z.1 * w.0;
            }
        }
    }
    out
}

#[test]
fn rope_equals_the_rotation_for_every_scaling_and_layout() {
    let (x, shape) = read_f32(DATA, "layer0.q");
    let (rows, l, d) = (shape[0], shape[1], shape[2]);
    let input = tmp("rope_in.safetensors");
    write(
        &input,
        &[("x", Dtype::F32, shape.clone(), bytemuck::cast_slice(&x))],
    );
    let out = tmp("rope_out.safetensors");
    let (base, s, l_train, offset) = (10_000.0f64, 4.0f64, 128usize, 1500usize);
    let df = d as f64;
    let theta = move |b: f64, i: usize| b.powf(-2.0 * i as f64 / df);
    // n = largest position + 1; here s·n/L_train − (s − 1) for dynamic NTK.
    let n = (offset + l) as f64;
    let dyn_s = s * n / l_train as f64 - (s - 1.0);
    type Case<'a> = (&'a str, Vec<&'a str>, Box<dyn Fn(f64, usize) -> f64>, f64);
    let cases: Vec<Case<'_>> = vec![
        (
            "none",
            vec![],
            Box::new(move |m, i| m * theta(base, i)),
            1.0,
        ),
        (
            "linear",
            vec!["--factor", "4"],
            Box::new(move |m, i| m / s * theta(base, i)),
            1.0,
        ),
        (
            "ntk",
            vec!["--factor", "4"],
            Box::new(move |m, i| m * theta(base * s.powf(df / (df - 2.0)), i)),
            1.0,
        ),
        (
            "dynamic-ntk",
            vec!["--factor", "4", "--original-length", "128"],
            Box::new(move |m, i| m * theta(base * dyn_s.powf(df / (df - 2.0)), i)),
            1.0,
        ),
        (
            "yarn",
            vec!["--factor", "4", "--original-length", "128"],
            Box::new(move |m, i| {
                let th = theta(base, i);
                let rotations = l_train as f64 / (2.0 * PI / th);
                let g = ((rotations - 1.0) / (32.0 - 1.0)).clamp(0.0, 1.0);
                m * ((1.0 - g) * th / s + g * th)
            }),
            0.1 * s.ln() + 1.0,
        ),
    ];
    for (name, extra, angle, scale) in &cases {
        // `--layout half` is the older spelling of `--pairs half`.
        for (flag, layout, half) in [
            ("--pairs", "interleaved", false),
            ("--pairs", "half", true),
            ("--layout", "half", true),
        ] {
            let res = bin()
                .args([
                    "rope", "--input", &input, "--output", &out, "--device", "gpu",
                ])
                .args(["--scaling", name, flag, layout, "--offset", "1500"])
                .args(extra)
                .output()
                .unwrap();
            assert!(res.status.success(), "{name}: {:?}", stderr_lines(&res));
            let (got, got_shape) = read_f32(&out, "x");
            assert_eq!(got_shape, shape);
            let want = rope_by_complex(&x, (rows, l, d), offset, half, angle, *scale);
            assert_close(
                &format!("rope {name} {flag} {layout}"),
                &f64s(&got),
                &want,
                TOL_F32,
            );
        }
    }
}

#[test]
fn rope_bad_options_are_one_line_and_exit_2() {
    let input = tmp("rope_odd.safetensors");
    let x = vec![0.5f32; 3 * 5];
    write(
        &input,
        &[("x", Dtype::F32, vec![3, 5], bytemuck::cast_slice(&x))],
    );
    let res = bin().args(["rope", "--input", &input]).output().unwrap();
    assert_eq!(res.status.code(), Some(2));
    let err = stderr_lines(&res);
    assert!(err.len() == 1 && err[0].contains("D even"), "{err:?}");
    let (q, shape) = read_f32(DATA, "layer0.q");
    let good = tmp("rope_good.safetensors");
    write(&good, &[("x", Dtype::F32, shape, bytemuck::cast_slice(&q))]);
    for args in [
        vec!["--scaling", "linear", "--factor", "0.5"],
        vec!["--scaling", "yarn", "--factor", "2"],
        vec![
            "--scaling",
            "yarn",
            "--factor",
            "2",
            "--original-length",
            "64",
            "--yarn-alpha",
            "40",
        ],
        vec!["--base=-3"],
        vec!["--layout", "half", "--pairs", "interleaved"],
    ] {
        let res = bin()
            .args(["rope", "--input", &good])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(res.status.code(), Some(2), "{args:?}");
        assert_eq!(
            stderr_lines(&res).len(),
            1,
            "{args:?}: {:?}",
            stderr_lines(&res)
        );
    }
}
