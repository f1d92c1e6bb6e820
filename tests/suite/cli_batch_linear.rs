//! `longseq attention --method linear|lightning` with `--layout blhd`, `--cu-seqlens NAME` (i32
//! and i64), grouped heads and `--initial-state NAME` (+ `NAME_z`): the written `o`,
//! `final_state` and `final_z` against the library's per-sequence f64 references, two CLI calls
//! through the written state equal one, and the exit codes of bad input.

use crate::common;

use std::process::Command;

use common::files::{read_f64 as read, tmp_in};
use common::*;
use longseq::attention::{alibi_slopes, FeatureMap, LinearAttentionOptions};
use longseq::reference::attention::{lightning_attention_varlen, linear_attention_batch};
use longseq::types::batch::{CuSeqlens, GqaDims, Layout};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_longseq"))
}

fn tmp(name: &str) -> String {
    tmp_in("blin", name)
}

fn write(path: &str, tensors: &[(&str, Dtype, Vec<usize>, &[u8])]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, std::path::Path::new(path)).unwrap();
}

const CU: [i64; 4] = [0, 15, 100, 130];
const L: usize = 137;
const D: usize = 16;

fn run(args: &[&str]) -> std::process::Output {
    bin()
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .arg("attention")
        .args(args)
        .output()
        .unwrap()
}

/// q [1, L, 6, D], k, v [1, L, 2, D] in blhd (GQA 6 → 2), offsets as i64 and i32, an initial state
/// for the 3 sequences (`s0`, `s0_z`), and bad offsets.
fn input(path: &str) -> [Vec<f32>; 5] {
    let mut r = rng(5);
    let q = randn(&mut r, L * 6 * D, 0.5);
    let k = randn(&mut r, L * 2 * D, 0.5);
    let v = randn(&mut r, L * 2 * D, 0.5);
    let s0 = randn(&mut r, 3 * 6 * D * D, 0.3);
    let z0: Vec<f32> = randn(&mut r, 3 * 6 * D, 0.3)
        .iter()
        .map(|x| x.abs())
        .collect();
    let cu32: Vec<i32> = CU.iter().map(|&x| x as i32).collect();
    let bad: Vec<i64> = vec![0, 50, 40];
    let past: Vec<i64> = vec![0, 50, 140];
    write(
        path,
        &[
            ("q", Dtype::F32, vec![1, L, 6, D], bytemuck::cast_slice(&q)),
            ("k", Dtype::F32, vec![1, L, 2, D], bytemuck::cast_slice(&k)),
            ("v", Dtype::F32, vec![1, L, 2, D], bytemuck::cast_slice(&v)),
            (
                "s0",
                Dtype::F32,
                vec![3, 6, D, D],
                bytemuck::cast_slice(&s0),
            ),
            ("s0_z", Dtype::F32, vec![3, 6, D], bytemuck::cast_slice(&z0)),
            ("cu_seqlens", Dtype::I64, vec![4], bytemuck::cast_slice(&CU)),
            ("cu32", Dtype::I32, vec![4], bytemuck::cast_slice(&cu32)),
            ("bad", Dtype::I64, vec![3], bytemuck::cast_slice(&bad)),
            ("past", Dtype::I64, vec![3], bytemuck::cast_slice(&past)),
        ],
    );
    [q, k, v, s0, z0]
}

fn dims() -> GqaDims {
    let (q, kv) = ([1, L, 6, D], [1, L, 2, D]);
    GqaDims::check("t", &q, &kv, &kv, Layout::Blhd, true).unwrap()
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

#[test]
fn varlen_gqa_blhd_linear_writes_the_reference_and_its_state() {
    let path = tmp("in.safetensors");
    let [q, k, v, s0, z0] = input(&path);
    let cu = CuSeqlens::new("t", &CU, L).unwrap();
    for (name, causal, init) in [
        ("cu_seqlens", true, true),
        ("cu32", true, false),
        ("cu32", false, false),
    ] {
        let out = tmp(&format!("o-{name}-{causal}-{init}.safetensors"));
        let mut args = vec![
            "--input",
            &path,
            "--method",
            "linear",
            "--layout",
            "blhd",
            "--cu-seqlens",
            name,
            "--output",
            &out,
        ];
        if causal {
            args.push("--causal");
        }
        if init {
            args.extend(["--initial-state", "s0"]);
        }
        let o = run(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let opts = LinearAttentionOptions {
            feature_map: FeatureMap::Elu1,
            causal,
            layout: Layout::Blhd,
            ..Default::default()
        };
        let (s0d, z0d) = (f64s(&s0), f64s(&z0));
        let initial = init.then_some((&s0d[..], &z0d[..]));
        let mut want =
            linear_attention_batch((&q, &k, &v), &dims(), &opts, Some(&cu), initial).unwrap();
        want.o
            .iter_mut()
            .filter(|x| x.is_nan())
            .for_each(|x| *x = 0.0);
        let (got, shape) = read(&out, "o");
        assert_eq!(shape, vec![1, L, 6, D]);
        let label = format!("{name} causal={causal} init={init}");
        assert_close_both(&label, &got, &want.o, 1e-5);
        if causal {
            let (s, sh) = read(&out, "final_state");
            assert_eq!(sh, vec![3, 6, D, D]);
            assert_close_both(&label, &s, &want.s, 1e-5);
            let (z, _) = read(&out, "final_z");
            assert_close_both(&label, &z, &want.z, 1e-5);
        }
    }
}

/// Two CLI calls (the first 60 tokens of a [2, 3, 97, D] bhld batch, then the rest from the
/// written final_state / final_z) equal one call, for linear and lightning.
#[test]
fn two_calls_through_the_written_state_equal_one() {
    let (b, h, l, split) = (2, 3, 97, 60);
    let mut r = rng(9);
    let x: Vec<Vec<f32>> = (0..3).map(|_| randn(&mut r, b * h * l * D, 0.5)).collect();
    let part = |src: &[f32], t0: usize, t1: usize| -> Vec<f32> {
        let mut y = vec![];
        for row in 0..b * h {
            y.extend_from_slice(&src[(row * l + t0) * D..(row * l + t1) * D]);
        }
        y
    };
    for method in ["linear", "lightning"] {
        let mut outs: Vec<String> = vec![];
        for (i, (t0, t1)) in [(0, l), (0, split), (split, l)].into_iter().enumerate() {
            let inp = tmp(&format!("two-{method}-{i}.safetensors"));
            let n = t1 - t0;
            let sh = vec![b, h, n, D];
            let (q, k, v) = (
                part(&x[0], t0, t1),
                part(&x[1], t0, t1),
                part(&x[2], t0, t1),
            );
            let mut ts: Vec<(&str, Dtype, Vec<usize>, &[u8])> = vec![
                ("q", Dtype::F32, sh.clone(), bytemuck::cast_slice(&q)),
                ("k", Dtype::F32, sh.clone(), bytemuck::cast_slice(&k)),
                ("v", Dtype::F32, sh.clone(), bytemuck::cast_slice(&v)),
            ];
            // Calls 0 and 1 start from a zero state (naming one selects the stateful path, which
            // writes final_state); call 2 from call 1's written state.
            let (s, z): (Vec<f32>, Vec<f32>) = match i {
                2 => {
                    let f = |n: &str| -> Vec<f32> {
                        read(&outs[1], n).0.iter().map(|&x| x as f32).collect()
                    };
                    let z = if method == "linear" {
                        f("final_z")
                    } else {
                        vec![0.0; b * h * D]
                    };
                    (f("final_state"), z)
                }
                _ => (vec![0.0; b * h * D * D], vec![0.0; b * h * D]),
            };
            ts.push(("s", Dtype::F32, vec![b, h, D, D], bytemuck::cast_slice(&s)));
            ts.push(("s_z", Dtype::F32, vec![b, h, D], bytemuck::cast_slice(&z)));
            write(&inp, &ts);
            let out = tmp(&format!("two-{method}-{i}-o.safetensors"));
            let args = [
                "--input",
                &inp,
                "--method",
                method,
                "--causal",
                "--initial-state",
                "s",
                "--output",
                &out,
            ];
            let o = run(&args);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            outs.push(out);
        }
        let (one, _) = read(&outs[0], "o");
        let (a, _) = read(&outs[1], "o");
        let (c, _) = read(&outs[2], "o");
        let mut two = vec![];
        for row in 0..b * h {
            two.extend_from_slice(&a[row * split * D..(row + 1) * split * D]);
            two.extend_from_slice(&c[row * (l - split) * D..(row + 1) * (l - split) * D]);
        }
        assert_close_both(&format!("{method} two calls"), &two, &one, 1e-5);
        let (s1, _) = read(&outs[0], "final_state");
        let (s2, _) = read(&outs[2], "final_state");
        assert_close_both(&format!("{method} two calls state"), &s2, &s1, 1e-5);
    }
}

#[test]
fn varlen_lightning_blhd_writes_the_reference() {
    let path = tmp("in-light.safetensors");
    let mut r = rng(7);
    let x: Vec<Vec<f32>> = (0..3).map(|_| randn(&mut r, L * 3 * D, 0.5)).collect();
    let sh = vec![1, L, 3, D];
    let ts: Vec<(&str, Dtype, Vec<usize>, &[u8])> = vec![
        ("q", Dtype::F32, sh.clone(), bytemuck::cast_slice(&x[0])),
        ("k", Dtype::F32, sh.clone(), bytemuck::cast_slice(&x[1])),
        ("v", Dtype::F32, sh.clone(), bytemuck::cast_slice(&x[2])),
        ("cu", Dtype::I64, vec![4], bytemuck::cast_slice(&CU)),
    ];
    write(&path, &ts);
    let out = tmp("o-light.safetensors");
    let o = run(&[
        "--input",
        &path,
        "--method",
        "lightning",
        "--layout",
        "blhd",
        "--cu-seqlens",
        "cu",
        "--output",
        &out,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let g = GqaDims::check("t", &sh, &sh, &sh, Layout::Blhd, true).unwrap();
    let cu = CuSeqlens::new("t", &CU, L).unwrap();
    let (mut want, want_s) = lightning_attention_varlen(
        (&x[0], &x[1], &x[2]),
        &g,
        &alibi_slopes(3),
        FeatureMap::Identity,
        Some(&cu),
        None,
    )
    .unwrap();
    want.iter_mut()
        .filter(|x| x.is_nan())
        .for_each(|x| *x = 0.0);
    assert_close_both("lightning o", &read(&out, "o").0, &want, 1e-5);
    assert_close_both("lightning S", &read(&out, "final_state").0, &want_s, 1e-5);
}

/// Bad offsets, a state of the wrong shape, a state without causal, a missing z: one line on
/// stderr and exit 2.
#[test]
fn bad_input_exits_2_with_one_line() {
    let path = tmp("in-bad.safetensors");
    input(&path);
    let base = [
        "--input",
        path.as_str(),
        "--method",
        "linear",
        "--layout",
        "blhd",
    ];
    let cases: [&[&str]; 5] = [
        &["--cu-seqlens", "bad", "--causal"],
        &["--cu-seqlens", "past", "--causal"],
        &["--initial-state", "s0"],
        &[
            "--cu-seqlens",
            "cu_seqlens",
            "--causal",
            "--initial-state",
            "s0_z",
        ],
        &["--causal", "--initial-state", "s0"],
    ];
    for extra in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{extra:?}: {err}");
    }
}

/// The README's linear varlen line, on the shipped file: o, final_state [3, 4, 8, 8] and
/// final_z [3, 4, 8] against the reference.
#[test]
fn readme_linear_varlen_line() {
    let input = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/gqa_varlen_blhd.safetensors"
    );
    let out = tmp("readme.safetensors");
    let o = run(&[
        "--input",
        input,
        "--method",
        "linear",
        "--layout",
        "blhd",
        "--cu-seqlens",
        "cu_seqlens",
        "--causal",
        "--output",
        &out,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(input).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let f = |n: &str| -> Vec<f32> { bytemuck::pod_collect_to_vec(st.tensor(n).unwrap().data()) };
    let cu: Vec<i32> = bytemuck::pod_collect_to_vec(st.tensor("cu_seqlens").unwrap().data());
    let cu: Vec<i64> = cu.into_iter().map(i64::from).collect();
    let cs = CuSeqlens::new("t", &cu, 40).unwrap();
    let g = GqaDims::check(
        "t",
        &[1, 40, 4, 8],
        &[1, 40, 2, 8],
        &[1, 40, 2, 8],
        Layout::Blhd,
        true,
    )
    .unwrap();
    let opts = LinearAttentionOptions {
        causal: true,
        layout: Layout::Blhd,
        ..Default::default()
    };
    let mut want =
        linear_attention_batch((&f("q"), &f("k"), &f("v")), &g, &opts, Some(&cs), None).unwrap();
    want.o
        .iter_mut()
        .filter(|x| x.is_nan())
        .for_each(|x| *x = 0.0);
    assert_close_both("readme o", &read(&out, "o").0, &want.o, 1e-5);
    let (s, sh) = read(&out, "final_state");
    assert_eq!(sh, vec![3, 4, 8, 8]);
    assert_close_both("readme S", &s, &want.s, 1e-5);
    assert_close_both("readme z", &read(&out, "final_z").0, &want.z, 1e-5);
}

/// Cross-attention from the CLI for norm, linear and softmax: q [1, 40, 4, D], k, v
/// [1, 90, 2, D] (Lk ≠ Lq and GQA, not causal), GPU against the reference (exit 3 past the
/// tolerance), `o` shaped like q.
#[test]
fn cross_attention_lq_ne_lk() {
    let path = tmp("in-cross.safetensors");
    let mut r = rng(9);
    let (sq, skv) = (vec![1, 40, 4, D], vec![1, 90, 2, D]);
    let q = randn(&mut r, 40 * 4 * D, 0.5);
    let k = randn(&mut r, 90 * 2 * D, 0.5);
    let v = randn(&mut r, 90 * 2 * D, 0.5);
    write(
        &path,
        &[
            ("q", Dtype::F32, sq.clone(), bytemuck::cast_slice(&q)),
            ("k", Dtype::F32, skv.clone(), bytemuck::cast_slice(&k)),
            ("v", Dtype::F32, skv, bytemuck::cast_slice(&v)),
        ],
    );
    for method in ["norm", "linear", "softmax"] {
        let out = tmp(&format!("o-cross-{method}.safetensors"));
        let o = run(&[
            "--input",
            &path,
            "--method",
            method,
            "--layout",
            "blhd",
            "--device",
            "gpu,reference",
            "--output",
            &out,
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{method}: {err}");
        let (got, shape) = read(&out, "o");
        assert_eq!(shape, sq, "{method}");
        assert!(got.iter().all(|x| x.is_finite()), "{method}");
    }
}
