//! `longseq mamba` on a generated file: the written `out` and `last_state` against the f64
//! reference (computed here on the same f32 values), and bad input (a missing tensor, an N
//! mismatch) giving one line and exit code 2.

use crate::common;

use std::process::Command;

use common::files::{draw_uniform as draw, read_f64 as read, write_f32 as write};
use common::*;
use longseq::reference::mamba::{selective_scan_ref, ScanDims, SelectiveScanRef};

const B: usize = 2;
const D: usize = 3;
const N: usize = 5;
const L: usize = 300;

fn tmp(name: &str) -> String {
    files::tmp_in("mamba", name)
}

#[test]
fn mamba_command_writes_the_reference_result() {
    let x = B * D * L;
    let t = vec![
        ("u", vec![B, D, L], draw(x, -1.0, 1.0, 1)),
        ("delta", vec![B, D, L], draw(x, -3.0, 2.0, 2)),
        ("A", vec![D, N], draw(D * N, -4.0, -0.1, 3)),
        ("B", vec![B, N, L], draw(B * N * L, -1.0, 1.0, 4)),
        ("C", vec![B, N, L], draw(B * N * L, -1.0, 1.0, 5)),
        ("D", vec![D], draw(D, -1.0, 1.0, 6)),
        ("z", vec![B, D, L], draw(x, -2.0, 2.0, 7)),
        ("delta_bias", vec![D], draw(D, -0.5, 0.5, 8)),
    ];
    let input = tmp("in.safetensors");
    let output = tmp("out.safetensors");
    write(&input, &t);
    let o = Command::new(env!("CARGO_BIN_EXE_longseq"))
        .args([
            "mamba",
            "--input",
            &input,
            "--delta-softplus",
            "--output",
            &output,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = SelectiveScanRef {
        u: &t[0].2,
        delta: &t[1].2,
        a: &t[2].2,
        b: &t[3].2,
        c: &t[4].2,
        d: Some(&t[5].2),
        z: Some(&t[6].2),
        delta_bias: Some(&t[7].2),
        delta_softplus: true,
        initial_state: None,
    };
    let dims = ScanDims {
        batch: B,
        dim: D,
        state: N,
        len: L,
    };
    let (want, want_last) = selective_scan_ref(dims, &r).unwrap();
    let (out, shape) = read(&output, "out");
    assert_eq!(shape, [B, D, L]);
    assert_close("cli out", &out, &want, TOL_F32);
    let (last, shape) = read(&output, "last_state");
    assert_eq!(shape, [B, D, N]);
    assert_close("cli last_state", &last, &want_last, TOL_F32);
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let x = B * D * L;
    let mut t = vec![
        ("u", vec![B, D, L], draw(x, -1.0, 1.0, 1)),
        ("delta", vec![B, D, L], draw(x, -3.0, 2.0, 2)),
        ("A", vec![D, N], draw(D * N, -4.0, -0.1, 3)),
        // N + 1 states in B: an N mismatch with A.
        ("B", vec![B, N + 1, L], draw(B * (N + 1) * L, -1.0, 1.0, 4)),
        ("C", vec![B, N, L], draw(B * N * L, -1.0, 1.0, 5)),
    ];
    for (name, cut) in [("mismatch", false), ("missing", true)] {
        if cut {
            t.retain(|(n, _, _)| *n != "C");
            t[3] = ("B", vec![B, N, L], draw(B * N * L, -1.0, 1.0, 4));
        }
        let input = tmp(&format!("{name}.safetensors"));
        write(&input, &t);
        let o = Command::new(env!("CARGO_BIN_EXE_longseq"))
            .args(["mamba", "--input", &input, "--device", "cpu"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err}");
        let want = if cut {
            "`C` not found"
        } else {
            "`B` has shape"
        };
        assert!(err.contains(want), "{name}: {err}");
    }
}

/// `--init` draws delta_bias = softplus⁻¹(dt), so it applies softplus even without
/// `--delta-softplus`: the output is finite and agrees with the reference (it used to blow up).
#[test]
fn init_without_the_softplus_flag_stays_finite() {
    let out = tmp("init-no-softplus.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_longseq"))
        .args([
            "mamba", "--init", "--dim", "4", "--state", "16", "--len", "1000",
        ])
        .args(["--device", "gpu,reference", "--output", &out])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (y, _) = read(&out, "out");
    assert!(y.iter().all(|v| v.is_finite()));
}
