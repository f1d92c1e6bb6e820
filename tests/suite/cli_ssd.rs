//! `longseq ssd` on a generated file: the written `Y` and `final_state` against the f64
//! reference (computed here on the same f32 values), `--init` checked GPU against reference,
//! and bad input (a missing tensor, an n mismatch) giving one line and exit code 2.

use crate::common;

use common::files::{draw_uniform as draw, longseq, read_f64 as read, write_f32 as write};
use common::*;
use longseq::reference::ssd::{ssd_ref, ssd_ref_varlen, SsdDims, SsdRef};

const B: usize = 2;
const L: usize = 300;
const H: usize = 3;
const P: usize = 5;
const N: usize = 4;

fn tmp(name: &str) -> String {
    files::tmp_in("ssd", name)
}

#[test]
fn ssd_command_writes_the_reference_result() {
    let tok = B * L * H;
    let t = vec![
        ("X", vec![B, L, H, P], draw(tok * P, -1.0, 1.0, 1)),
        ("A", vec![B, L, H], draw(tok, -2.0, 0.0, 2)),
        ("B", vec![B, L, H, N], draw(tok * N, -1.0, 1.0, 3)),
        ("C", vec![B, L, H, N], draw(tok * N, -1.0, 1.0, 4)),
        (
            "initial_state",
            vec![B, H, N, P],
            draw(B * H * N * P, -1.0, 1.0, 5),
        ),
    ];
    let (input, output) = (tmp("in.safetensors"), tmp("out.safetensors"));
    write(&input, &t);
    let o = longseq(&["ssd", "--input", &input, "--output", &output]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = SsdRef {
        x: &t[0].2,
        a: &t[1].2,
        b: &t[2].2,
        c: &t[3].2,
        initial_state: Some(&t[4].2),
    };
    let dims = SsdDims {
        batch: B,
        len: L,
        heads: H,
        head_dim: P,
        state: N,
    };
    let (want, want_last) = ssd_ref(dims, &r).unwrap();
    let (y, shape) = read(&output, "Y");
    assert_eq!(shape, [B, L, H, P]);
    assert_close_both("cli Y", &y, &want, TOL_F32);
    let (last, shape) = read(&output, "final_state");
    assert_eq!(shape, [B, H, N, P]);
    assert_close_both("cli final_state", &last, &want_last, TOL_F32);
}

#[test]
fn init_runs_without_a_file_and_agrees_with_the_reference() {
    let o = longseq(&[
        "ssd",
        "--init",
        "--heads",
        "2",
        "--head-dim",
        "40",
        "--state",
        "8",
        "--len",
        "200",
        "--device",
        "gpu,reference",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let tok = B * L * H;
    let mut t = vec![
        ("X", vec![B, L, H, P], draw(tok * P, -1.0, 1.0, 1)),
        ("A", vec![B, L, H], draw(tok, -2.0, 0.0, 2)),
        ("B", vec![B, L, H, N], draw(tok * N, -1.0, 1.0, 3)),
        // n + 1 columns in C: an n mismatch with B.
        ("C", vec![B, L, H, N + 1], draw(tok * (N + 1), -1.0, 1.0, 4)),
    ];
    for (name, cut) in [("mismatch", false), ("missing", true)] {
        if cut {
            t.retain(|(n, _, _)| *n != "C");
        }
        let input = tmp(&format!("{name}.safetensors"));
        write(&input, &t);
        let o = longseq(&["ssd", "--input", &input, "--device", "cpu"]);
        assert_eq!(o.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err}");
        let want = if cut {
            "`C` not found"
        } else {
            "`C` has shape"
        };
        assert!(err.contains(want), "{name}: {err}");
    }
}

/// A positive log-decay in `A` (the state would grow without bound) is bad input.
#[test]
fn positive_log_decay_exits_2_with_one_line() {
    let tok = B * L * H;
    let mut a = draw(tok, -2.0, 0.0, 2);
    a[5] = 0.25;
    let t = vec![
        ("X", vec![B, L, H, P], draw(tok * P, -1.0, 1.0, 1)),
        ("A", vec![B, L, H], a),
        ("B", vec![B, L, H, N], draw(tok * N, -1.0, 1.0, 3)),
        ("C", vec![B, L, H, N], draw(tok * N, -1.0, 1.0, 4)),
    ];
    let input = tmp("positive-a.safetensors");
    write(&input, &t);
    let o = longseq(&["ssd", "--input", &input, "--device", "cpu"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("`A` holds 0.25 > 0"), "{err}");
}

#[test]
fn cu_seqlens_runs_each_sequence_from_its_state_on_every_device() {
    let cu = [0usize, 15, 100, 300, 1200, 2000];
    let (l, h, p, n, ns) = (2000, 2, 5, 4, cu.len() - 1);
    let tok = l * h;
    let t = vec![
        ("X", vec![1, l, h, p], draw(tok * p, -1.0, 1.0, 11)),
        ("A", vec![1, l, h], draw(tok, -2.0, 0.0, 12)),
        ("B", vec![1, l, h, n], draw(tok * n, -1.0, 1.0, 13)),
        ("C", vec![1, l, h, n], draw(tok * n, -1.0, 1.0, 14)),
        (
            "initial_state",
            vec![ns, h, n, p],
            draw(ns * h * n * p, -1.0, 1.0, 15),
        ),
    ];
    let input = tmp("cu.safetensors");
    let offs: Vec<i64> = cu.iter().map(|&o| o as i64).collect();
    files::write_f32_i64(&input, &t, &[("cu", offs)]);
    let r = SsdRef {
        x: &t[0].2,
        a: &t[1].2,
        b: &t[2].2,
        c: &t[3].2,
        initial_state: Some(&t[4].2),
    };
    let dims = SsdDims {
        batch: 1,
        len: l,
        heads: h,
        head_dim: p,
        state: n,
    };
    let (want, want_last) = ssd_ref_varlen(dims, &cu, &r).unwrap();
    for dev in ["gpu,reference", "cpu,reference"] {
        let output = tmp(&format!("cu-{dev}.safetensors"));
        let o = longseq(&[
            "ssd",
            "--input",
            &input,
            "--cu-seqlens",
            "cu",
            "--device",
            dev,
            "--output",
            &output,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (y, _) = read(&output, "Y");
        assert_close_both(&format!("cli cu Y {dev}"), &y, &want, TOL_F32);
        let (last, shape) = read(&output, "final_state");
        assert_eq!(shape, [ns, h, n, p]);
        assert_close_both(
            &format!("cli cu final_state {dev}"),
            &last,
            &want_last,
            TOL_F32,
        );
    }
}
