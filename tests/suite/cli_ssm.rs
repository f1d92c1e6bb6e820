//! `longseq ssm` on a generated model, each mode checked against an independent f64 computation
//! written here: the impulse response of the full N-state recurrence (both modes of each
//! conjugate pair), direct convolution, the step-by-step recurrence.

use crate::common;

use std::collections::HashMap;
use std::process::Command;

use common::*;
use num_complex::Complex64;
use rand::Rng;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

const H: usize = 3;
const N2: usize = 16;
const B: usize = 2;
const L: usize = 257;

fn tmp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("longseq-cli-ssm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

struct Model {
    a: Vec<Complex64>,
    b: Vec<Complex64>,
    c: Vec<Complex64>,
    dt: Vec<f64>,
    d: Vec<f64>,
    u: Vec<f64>,
}

/// Random model and input (f32 values), written to a safetensors file.
fn model(path: &str) -> Model {
    let mut g = rng(2024);
    let f = |x: f64| x as f32 as f64;
    let z = |re: f64, im: f64| Complex64::new(f(re), f(im));
    let a: Vec<Complex64> = (0..H * N2)
        .map(|i| {
            z(
                -g.random_range(0.1..1.0),
                3.0 * (i % N2) as f64 + g.random_range(0.0..1.0),
            )
        })
        .collect();
    let cn = |g: &mut rand::rngs::StdRng| {
        Complex64::new(f(g.random_range(-1.0..1.0)), f(g.random_range(-1.0..1.0)))
    };
    let b: Vec<Complex64> = (0..H * N2).map(|_| cn(&mut g)).collect();
    let c: Vec<Complex64> = (0..H * N2).map(|_| cn(&mut g)).collect();
    let dt: Vec<f64> = (0..H)
        .map(|_| f(10f64.powf(g.random_range(-3.0..-1.0))))
        .collect();
    let d: Vec<f64> = (0..H).map(|_| f(g.random_range(-1.0..1.0))).collect();
    let u: Vec<f64> = randn(&mut g, B * H * L, 1.0)
        .into_iter()
        .map(f64::from)
        .collect();
    let f32s = |v: Vec<f64>| -> Vec<u8> {
        let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
        bytemuck::cast_slice(&v).to_vec()
    };
    let re = |v: &[Complex64]| v.iter().map(|x| x.re).collect::<Vec<_>>();
    let im = |v: &[Complex64]| v.iter().map(|x| x.im).collect::<Vec<_>>();
    let tensors: Vec<(&str, Vec<usize>, Vec<u8>)> = vec![
        ("A_re", vec![H, N2], f32s(re(&a))),
        ("A_im", vec![H, N2], f32s(im(&a))),
        ("B_re", vec![H, N2], f32s(re(&b))),
        ("B_im", vec![H, N2], f32s(im(&b))),
        ("C_re", vec![H, N2], f32s(re(&c))),
        ("C_im", vec![H, N2], f32s(im(&c))),
        ("dt", vec![H], f32s(dt.clone())),
        ("D", vec![H], f32s(d.clone())),
        ("u", vec![B, H, L], f32s(u.clone())),
    ];
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.to_string(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let meta: Option<HashMap<String, String>> = None;
    safetensors::serialize_to_file(views, meta, std::path::Path::new(path)).unwrap();
    Model { a, b, c, dt, d, u }
}

/// ZOH over all N = 2·N2 modes (each stored one and its conjugate): K_l = Σ C Ā^l B̄ by the
/// recurrence x ← Ā x from x = B̄.
fn kernel_dense(m: &Model) -> Vec<f64> {
    let mut k = vec![0.0; H * L];
    for h in 0..H {
        for n in 0..N2 {
            let i = h * N2 + n;
            for (a, b, c) in [
                (m.a[i], m.b[i], m.c[i]),
                (m.a[i].conj(), m.b[i].conj(), m.c[i].conj()),
            ] {
                let ab = (a * m.dt[h]).exp();
                let mut x = (ab - 1.0) / a * b;
                for l in 0..L {
                    k[h * L + l] += (c * x).re;
                    x *= ab;
                }
            }
        }
    }
    k
}

fn run(input: &str, mode: &str, out: &str) -> Vec<f64> {
    let o = Command::new(env!("CARGO_BIN_EXE_longseq"))
        .args(["ssm", "--input", input, "--mode", mode, "--device", "gpu"])
        .args(["--output", out])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let name = if mode == "kernel" { "K" } else { "y" };
    let t = st.tensor(name).unwrap();
    let want_shape = if mode == "kernel" {
        vec![H, L]
    } else {
        vec![B, H, L]
    };
    assert_eq!(t.shape(), want_shape.as_slice());
    let v: Vec<f32> = bytemuck::pod_collect_to_vec(t.data());
    v.into_iter().map(f64::from).collect()
}

#[test]
fn ssm_modes_equal_independent_computations() {
    let input = tmp("model.safetensors");
    let m = model(&input);
    let k = kernel_dense(&m);
    let got = run(&input, "kernel", &tmp("k.safetensors"));
    let e = rel_err(&got, &k);
    println!("kernel vs dense: {e:.2e}");
    assert!(e <= 1e-4);
    let mut y = vec![0.0; B * H * L];
    for r in 0..B * H {
        let h = r % H;
        for t in 0..L {
            y[r * L + t] = m.d[h] * m.u[r * L + t]
                + (0..=t)
                    .map(|s| k[h * L + s] * m.u[r * L + t - s])
                    .sum::<f64>();
        }
    }
    for mode in ["conv", "scan"] {
        let got = run(&input, mode, &tmp(&format!("{mode}.safetensors")));
        let e = rel_err(&got, &y);
        println!("{mode} vs direct convolution: {e:.2e}");
        assert!(e <= 1e-4, "{mode}: {e:.3e}");
    }
}

#[test]
fn ssm_bad_input_exits_2() {
    let input = tmp("bad.safetensors");
    let v: Vec<u8> = bytemuck::cast_slice(&[1.0f32; 6]).to_vec();
    let views = vec![(
        "A_re".to_string(),
        TensorView::new(Dtype::F32, vec![2, 3], &v).unwrap(),
    )];
    let meta: Option<HashMap<String, String>> = None;
    safetensors::serialize_to_file(views, meta, std::path::Path::new(&input)).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_longseq"))
        .args([
            "ssm", "--input", &input, "--mode", "conv", "--device", "cpu",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("A_im"));
}
