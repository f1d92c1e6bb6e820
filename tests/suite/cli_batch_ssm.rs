//! `longseq ssm --mode scan|conv` over real-world batches (issue 14): `--layout blhd`, `--cu-seqlens
//! NAME` (i64 offsets), `--initial-state NAME`, and the `final_state` output, checked against the
//! f64 per-sequence reference; two CLI calls through final_state == one call; bad batches exit 2.

use crate::common;

use common::files::{longseq, read_f64, tmp_in};
use common::*;
use longseq::reference::ssm::{self as rs, SeqBatch};
use longseq::types::batch::{CuSeqlens, Layout};
use num_complex::Complex64;
use safetensors::{tensor::TensorView, Dtype};

const H: usize = 3;
const N2: usize = 8;
const L: usize = 330;
const CU: [i64; 5] = [0, 15, 100, 300, 320];

fn tmp(name: &str) -> String {
    tmp_in("batch-ssm", name)
}

/// f32 values (rounded, as f64) of a random S4D model with S4D-Lin A.
fn model() -> rs::DiagonalSsm {
    let mut g = rng(77);
    let f = |x: f64| x as f32 as f64;
    let mut z = |s: f32| {
        let v = randn(&mut g, 2, s);
        Complex64::new(v[0] as f64, v[1] as f64)
    };
    let a1 = longseq::ssm::s4d_init(longseq::ssm::S4dInit::Lin, N2).unwrap();
    rs::DiagonalSsm {
        h: H,
        n2: N2,
        a: (0..H)
            .flat_map(|_| a1.iter().map(|a| Complex64::new(f(a.re), f(a.im))))
            .collect(),
        b: (0..H * N2).map(|_| z(0.7)).collect(),
        c: (0..H * N2).map(|_| z(0.7)).collect(),
        dt: (0..H).map(|i| f(0.003 * (i + 1) as f64)).collect(),
        d: (0..H).map(|i| f(0.3 - 0.2 * i as f64)).collect(),
    }
}

/// Writes the model, `u` (shape given) and the extra tensors (`(name, dtype, shape, bytes)`).
fn write(
    path: &str,
    m: &rs::DiagonalSsm,
    u: (&[f32], Vec<usize>),
    extra: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
) {
    let part = |f: fn(&Complex64) -> f64, x: &[Complex64]| -> Vec<u8> {
        let v: Vec<f32> = x.iter().map(|z| f(z) as f32).collect();
        bytemuck::cast_slice(&v).to_vec()
    };
    let f32s = |x: &[f64]| -> Vec<u8> {
        let v: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        bytemuck::cast_slice(&v).to_vec()
    };
    let hn = vec![H, N2];
    let mut t: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![
        ("A_re".into(), Dtype::F32, hn.clone(), part(|z| z.re, &m.a)),
        ("A_im".into(), Dtype::F32, hn.clone(), part(|z| z.im, &m.a)),
        ("B_re".into(), Dtype::F32, hn.clone(), part(|z| z.re, &m.b)),
        ("B_im".into(), Dtype::F32, hn.clone(), part(|z| z.im, &m.b)),
        ("C_re".into(), Dtype::F32, hn.clone(), part(|z| z.re, &m.c)),
        ("C_im".into(), Dtype::F32, hn.clone(), part(|z| z.im, &m.c)),
        ("dt".into(), Dtype::F32, vec![H], f32s(&m.dt)),
        ("D".into(), Dtype::F32, vec![H], f32s(&m.d)),
        (
            "u".into(),
            Dtype::F32,
            u.1,
            bytemuck::cast_slice(u.0).to_vec(),
        ),
    ];
    for (n, d, s, b) in extra {
        t.push((n.to_string(), *d, s.clone(), b.clone()));
    }
    let views: Vec<(String, TensorView<'_>)> = t
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, std::path::Path::new(path)).unwrap();
}

fn run_ok(args: &[&str]) {
    let o = longseq(args);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(0), "{args:?}\n{out}\n{err}");
}

#[test]
fn varlen_blhd_with_initial_state_writes_the_reference() {
    for mode in ["scan", "conv"] {
        varlen_blhd_with_initial_state(mode);
    }
}

fn varlen_blhd_with_initial_state(mode: &str) {
    let m = model();
    let u = randn(&mut rng(5), L * H, 1.0);
    let x0 = randn(&mut rng(6), 4 * H * N2 * 2, 0.5);
    let (inp, out) = (
        tmp(&format!("varlen-{mode}.safetensors")),
        tmp(&format!("varlen-{mode}-out.safetensors")),
    );
    let extra = [
        (
            "cu",
            Dtype::I64,
            vec![5],
            bytemuck::cast_slice(&CU).to_vec(),
        ),
        (
            "x0",
            Dtype::F32,
            vec![4, H, N2, 2],
            bytemuck::cast_slice(&x0).to_vec(),
        ),
    ];
    write(&inp, &m, (&u, vec![1, L, H]), &extra);
    run_ok(&[
        "ssm",
        "--input",
        &inp,
        "--mode",
        mode,
        "--layout",
        "blhd",
        "--cu-seqlens",
        "cu",
        "--initial-state",
        "x0",
        "--device",
        "gpu,reference",
        "--output",
        &out,
    ]);
    let cu = CuSeqlens::new("t", &CU, L).unwrap();
    let sb = SeqBatch {
        batch: 1,
        len: L,
        layout: Layout::Blhd,
        cu_seqlens: Some(&cu),
    };
    let x0c: Vec<Complex64> = x0
        .chunks(2)
        .map(|p| Complex64::new(p[0] as f64, p[1] as f64))
        .collect();
    let mut want = vec![0.0; L * H];
    let wfin = rs::s4d_recurrence_batch(
        &m,
        &to_f64(&u),
        &sb,
        Some(&x0c),
        longseq::ssm::Discretization::Zoh,
        &mut want,
    )
    .unwrap();
    let (y, ys) = read_f64(&out, "y");
    let (fin, fs) = read_f64(&out, "final_state");
    assert_eq!((ys, fs), (vec![1, L, H], vec![4, H, N2, 2]));
    // Tokens past the last offset are written as 0.
    assert!(y[320 * H..].iter().all(|&v| v == 0.0));
    assert_close_both(&format!("cli {mode} y"), &y, &want, 1e-4);
    let wf: Vec<f64> = wfin.iter().flat_map(|z| [z.re, z.im]).collect();
    assert_close_both(&format!("cli {mode} final_state"), &fin, &wf, 1e-4);
}

#[test]
fn two_cli_calls_through_final_state_equal_one() {
    for mode in ["scan", "conv"] {
        two_cli_calls(mode);
    }
}

fn two_cli_calls(mode: &str) {
    let m = model();
    let (b, cut) = (2, 123);
    let u = randn(&mut rng(8), b * H * L, 1.0);
    // [B, H, L] rows split at `cut`.
    let part = |t0: usize, t1: usize| -> Vec<f32> {
        (0..b * H)
            .flat_map(|r| u[r * L + t0..r * L + t1].to_vec())
            .collect()
    };
    let t = |n: &str| tmp(&format!("{mode}-{n}.safetensors"));
    let (f1, f2, fall) = (t("p1"), t("p2"), t("all"));
    let (o1, o2, oall) = (t("o1"), t("o2"), t("oall"));
    let zero = vec![0f32; b * H * N2 * 2];
    let x0 = [(
        "x0",
        Dtype::F32,
        vec![b, H, N2, 2],
        bytemuck::cast_slice(&zero).to_vec(),
    )];
    write(&fall, &m, (&u, vec![b, H, L]), &x0);
    write(&f1, &m, (&part(0, cut), vec![b, H, cut]), &x0);
    let scan = |i: &str, o: &str| {
        run_ok(&[
            "ssm",
            "--input",
            i,
            "--mode",
            mode,
            "--initial-state",
            "x0",
            "--device",
            "gpu",
            "--output",
            o,
        ]);
    };
    scan(&fall, &oall);
    scan(&f1, &o1);
    let (s1, _) = read_f64(&o1, "final_state");
    let s1: Vec<f32> = s1.iter().map(|&x| x as f32).collect();
    let x1 = [(
        "x0",
        Dtype::F32,
        vec![b, H, N2, 2],
        bytemuck::cast_slice(&s1).to_vec(),
    )];
    write(&f2, &m, (&part(cut, L), vec![b, H, L - cut]), &x1);
    scan(&f2, &o2);
    let (yall, _) = read_f64(&oall, "y");
    let (y1, _) = read_f64(&o1, "y");
    let (y2, _) = read_f64(&o2, "y");
    let joined: Vec<f64> = (0..b * H)
        .flat_map(|r| {
            [
                &y1[r * cut..(r + 1) * cut],
                &y2[r * (L - cut)..(r + 1) * (L - cut)],
            ]
            .concat()
        })
        .collect();
    assert_close_both(&format!("{mode} two calls y"), &joined, &yall, 1e-4);
    let (fa, _) = read_f64(&oall, "final_state");
    let (fb, _) = read_f64(&o2, "final_state");
    assert_close_both(&format!("{mode} two calls state"), &fb, &fa, 1e-4);
}

#[test]
fn bad_batches_exit_2_with_one_line() {
    let m = model();
    let u = randn(&mut rng(9), L * H, 1.0);
    let inp = tmp("bad.safetensors");
    let bad: [i64; 3] = [0, 50, 40];
    let x0 = vec![0f32; 3 * H * N2 * 2];
    let extra = [
        (
            "cu",
            Dtype::I64,
            vec![5],
            bytemuck::cast_slice(&CU).to_vec(),
        ),
        (
            "bad",
            Dtype::I64,
            vec![3],
            bytemuck::cast_slice(&bad).to_vec(),
        ),
        (
            "x0",
            Dtype::F32,
            vec![3, H, N2, 2],
            bytemuck::cast_slice(&x0).to_vec(),
        ),
    ];
    write(&inp, &m, (&u, vec![1, H, L]), &extra);
    let base = ["ssm", "--input", &inp];
    for extra in [
        &["--mode", "scan", "--cu-seqlens", "bad"][..],
        &["--mode", "scan", "--cu-seqlens", "missing"],
        &[
            "--mode",
            "scan",
            "--cu-seqlens",
            "cu",
            "--initial-state",
            "x0",
        ],
        &["--mode", "kernel", "--cu-seqlens", "cu"],
        &["--mode", "conv", "--cu-seqlens", "bad"],
        &["--mode", "scan", "--layout", "blhd"],
        &["--mode", "scan", "--layout", "blhd", "--device", "cpu"],
    ] {
        let args = [&base[..], extra].concat();
        let o = longseq(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        // The software adapter's own XDG_RUNTIME_DIR warning is not ours.
        let ours = err.lines().filter(|l| !l.contains("XDG_RUNTIME_DIR"));
        assert_eq!(ours.count(), 1, "{args:?}: {err}");
    }
}
