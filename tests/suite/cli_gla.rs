//! `longseq attention --method gla` on generated files ([B, H, L, D] and [H, L, D]): the written
//! `o` against the f64 recurrence on the same f32 values, and a missing or misshapen `g` giving
//! one line and exit code 2.

use crate::common;

use common::files::{draw_uniform as draw, longseq, write_f32 as write};
use common::*;
use longseq::reference::gla::{gla_ref, gla_ref_varlen, GlaDims, GlaRef};
use safetensors::SafeTensors;

const L: usize = 150;
const DK: usize = 6;
const DV: usize = 5;

fn tmp(name: &str) -> String {
    files::tmp_in("gla", name)
}

/// q, k, v, g with leading dims `lead` (rows = their product).
fn tensors(lead: &[usize]) -> Vec<(&'static str, Vec<usize>, Vec<f64>)> {
    let rows: usize = lead.iter().product();
    let sh = |d: usize| [lead, &[L, d]].concat();
    vec![
        ("q", sh(DK), draw(rows * L * DK, -1.0, 1.0, 1)),
        ("k", sh(DK), draw(rows * L * DK, -1.0, 1.0, 2)),
        ("v", sh(DV), draw(rows * L * DV, -1.0, 1.0, 3)),
        ("g", sh(DK), draw(rows * L * DK, -3.0, 0.0, 4)),
    ]
}

#[test]
fn gla_method_writes_the_reference_result() {
    for (i, lead) in [vec![2, 3], vec![3]].into_iter().enumerate() {
        let t = tensors(&lead);
        let (input, output) = (
            tmp(&format!("in{i}.safetensors")),
            tmp(&format!("o{i}.safetensors")),
        );
        write(&input, &t);
        let o = longseq(&[
            "attention",
            "--input",
            &input,
            "--method",
            "gla",
            "--scale",
            "0.5",
            "--output",
            &output,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let dims = GlaDims {
            rows: lead.iter().product(),
            len: L,
            dk: DK,
            dv: DV,
        };
        let r = GlaRef {
            q: &t[0].2,
            k: &t[1].2,
            v: &t[2].2,
            g: &t[3].2,
            initial_state: None,
            scale: Some(0.5),
        };
        let want = gla_ref(dims, &r).unwrap().0;
        let bytes = std::fs::read(&output).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let got = st.tensor("o").unwrap();
        assert_eq!(got.shape(), [&lead[..], &[L, DV]].concat());
        let got: Vec<f32> = bytemuck::pod_collect_to_vec(got.data());
        let got: Vec<f64> = got.into_iter().map(f64::from).collect();
        assert_close_both(&format!("cli gla {lead:?}"), &got, &want, TOL_F32);
    }
}

#[test]
fn missing_or_misshapen_gates_exit_2_with_one_line() {
    let mut t = tensors(&[2, 3]);
    t[3].1 = vec![2, 3, L, DK - 1];
    t[3].2.truncate(2 * 3 * L * (DK - 1));
    for (name, cut) in [("mismatch", false), ("missing", true)] {
        if cut {
            t.pop();
        }
        let input = tmp(&format!("{name}.safetensors"));
        write(&input, &t);
        let o = longseq(&[
            "attention",
            "--input",
            &input,
            "--method",
            "gla",
            "--device",
            "cpu",
        ]);
        assert_eq!(o.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err}");
        let want = if cut {
            "`g` not found"
        } else {
            "`g` has shape"
        };
        assert!(err.contains(want), "{name}: {err}");
    }
}

/// A positive log gate (the state would grow without bound) and, with `--nan error`, a NaN gate
/// are bad input: one line, exit 2, nothing written.
#[test]
fn positive_or_nan_gates_exit_2_with_one_line() {
    for (name, bad, extra) in [
        ("positive", 0.5, None),
        ("nan", f64::NAN, Some(["--nan", "error"])),
    ] {
        let mut t = tensors(&[2, 3]);
        t[3].2[17] = bad;
        let input = tmp(&format!("{name}-gate.safetensors"));
        let output = tmp(&format!("{name}-gate-out.safetensors"));
        write(&input, &t);
        let mut args = vec![
            "attention",
            "--input",
            &input,
            "--method",
            "gla",
            "--device",
            "cpu",
            "--output",
            &output,
        ];
        args.extend(extra.iter().flatten());
        let o = longseq(&args);
        assert_eq!(o.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err}");
        assert!(err.contains("`g`"), "{name}: {err}");
        assert!(!std::path::Path::new(&output).exists(), "{name}");
    }
}

#[test]
fn blhd_and_cu_seqlens_run_on_the_gpu_the_cpu_path_and_the_reference() {
    let cu = [0usize, 15, 100, 300, 1200, 2000];
    let (h, l) = (2, 2000);
    // [1, H, L, D] values, written as [1, L, H, D].
    let bhld: Vec<Vec<f64>> = [
        (DK, 21, -1.0),
        (DK, 22, -1.0),
        (DV, 23, -1.0),
        (DK, 24, -3.0),
    ]
    .iter()
    .map(|&(d, seed, lo)| draw(h * l * d, lo, if lo < -2.0 { 0.0 } else { 1.0 }, seed))
    .collect();
    let blhd = |x: &[f64], d: usize| -> Vec<f64> {
        let mut o = vec![0.0; x.len()];
        for hi in 0..h {
            for t in 0..l {
                o[(t * h + hi) * d..][..d].copy_from_slice(&x[(hi * l + t) * d..][..d]);
            }
        }
        o
    };
    let names = ["q", "k", "v", "g"];
    let dims = [DK, DK, DV, DK];
    let t: Vec<(&str, Vec<usize>, Vec<f64>)> = (0..4)
        .map(|i| (names[i], vec![1, l, h, dims[i]], blhd(&bhld[i], dims[i])))
        .collect();
    let input = tmp("cu.safetensors");
    files::write_f32_i64(
        &input,
        &t,
        &[("cu", cu.iter().map(|&o| o as i64).collect())],
    );
    let r = GlaRef {
        q: &bhld[0],
        k: &bhld[1],
        v: &bhld[2],
        g: &bhld[3],
        initial_state: None,
        scale: None,
    };
    let gd = GlaDims {
        rows: h,
        len: l,
        dk: DK,
        dv: DV,
    };
    let (want, want_last) = gla_ref_varlen(gd, &cu, &r).unwrap();
    let want = blhd(&want, DV);
    let output = tmp("cu-o.safetensors");
    let args = [
        "attention",
        "--input",
        &input,
        "--method",
        "gla",
        "--layout",
        "blhd",
        "--cu-seqlens",
        "cu",
        "--output",
        &output,
    ];
    // The CPU path and the reference, then the GPU (the default) and the reference.
    for (dev, line) in [
        ("cpu,reference", "cpu vs reference"),
        ("gpu", "gpu vs reference"),
    ] {
        let dev_args = match dev {
            "gpu" => vec![],
            d => vec!["--device", d],
        };
        let o = longseq(&[&args[..], &dev_args].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(stdout.contains(line), "{stdout}");
        let (got, shape) = files::read_f64(&output, "o");
        assert_eq!(shape, [1, l, h, DV]);
        assert_close_both(&format!("cli gla blhd cu o {dev}"), &got, &want, TOL_F32);
        let (last, shape) = files::read_f64(&output, "final_state");
        assert_eq!(shape, [cu.len() - 1, h, DK, DV]);
        let label = format!("cli gla blhd cu final_state {dev}");
        assert_close_both(&label, &last, &want_last, TOL_F32);
    }
}

/// `--initial-state`: the first 70 tokens, then the rest from the written `final_state`, equal the
/// f64 recurrence over all tokens (o and final_state), on the GPU and on the CPU path.
#[test]
fn initial_state_two_calls_equal_one_call() {
    let (b, h, cut) = (2, 3, 70);
    let t = tensors(&[b, h]);
    let part = |lo: usize, hi: usize| -> Vec<(&'static str, Vec<usize>, Vec<f64>)> {
        t.iter()
            .map(|(n, s, x)| {
                let d = s[3];
                let mut y = Vec::new();
                for r in 0..b * h {
                    y.extend_from_slice(&x[(r * L + lo) * d..(r * L + hi) * d]);
                }
                (*n, vec![b, h, hi - lo, d], y)
            })
            .collect()
    };
    let run = |input: &str, output: &str, dev: &str, s0: bool| {
        let mut args = vec![
            "attention",
            "--input",
            input,
            "--method",
            "gla",
            "--device",
            dev,
            "--output",
            output,
        ];
        if s0 {
            args.extend(["--initial-state", "s0"]);
        }
        let o = longseq(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (
            files::read_f64(output, "o").0,
            files::read_f64(output, "final_state").0,
        )
    };
    let r = GlaRef {
        q: &t[0].2,
        k: &t[1].2,
        v: &t[2].2,
        g: &t[3].2,
        initial_state: None,
        scale: None,
    };
    let gd = GlaDims {
        rows: b * h,
        len: L,
        dk: DK,
        dv: DV,
    };
    let (want_o, want_s) = gla_ref(gd, &r).unwrap();
    for dev in ["gpu,reference", "cpu,reference"] {
        let first = tmp("s0-a.safetensors");
        write(&first, &part(0, cut));
        let (o1, s1) = run(&first, &tmp("s0-a-o.safetensors"), dev, false);
        let mut rest = part(cut, L);
        rest.push(("s0", vec![b, h, DK, DV], s1));
        let second = tmp("s0-b.safetensors");
        write(&second, &rest);
        let (o2, s2) = run(&second, &tmp("s0-b-o.safetensors"), dev, true);
        let mut got = Vec::new();
        for r in 0..b * h {
            got.extend_from_slice(&o1[r * cut * DV..(r + 1) * cut * DV]);
            got.extend_from_slice(&o2[r * (L - cut) * DV..(r + 1) * (L - cut) * DV]);
        }
        assert_close_both(
            &format!("cli gla two calls o {dev}"),
            &got,
            &want_o,
            TOL_F32,
        );
        assert_close_both(&format!("cli gla two calls S {dev}"), &s2, &want_s, TOL_F32);
    }
    // A NaN in the state with `--nan error`: one line, exit 2.
    let mut rest = part(cut, L);
    let mut s0 = vec![0.5; b * h * DK * DV];
    s0[7] = f64::NAN;
    rest.push(("s0", vec![b, h, DK, DV], s0));
    let bad = tmp("s0-nan.safetensors");
    write(&bad, &rest);
    let o = longseq(&[
        "attention",
        "--input",
        &bad,
        "--method",
        "gla",
        "--initial-state",
        "s0",
        "--nan",
        "error",
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
