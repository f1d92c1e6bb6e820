//! `longseq attention --feature-map favor|favor-trig` on the shipped MiniLM data: with `--omega W`
//! the output equals an independent computation of the FAVOR estimator (no stabiliser, f64).

use crate::common;
use crate::favor_ref;

use std::process::Command;

use common::*;
use favor_ref::unstabilised_favor;
use longseq::attention::{draw_omega, FavorKind, OmegaDraw};
use safetensors::SafeTensors;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/minilm_two_cities_qkv.safetensors"
);
const HEADS: usize = 12;
const L: usize = 403;
const D: usize = 32;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_longseq"))
}

fn tmp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("longseq-cli-favor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

fn read_f32(path: &str, name: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    (bytemuck::pod_collect_to_vec(t.data()), t.shape().to_vec())
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The layer's q, k, v plus `W` (ω) in one file.
fn input_with_omega(prefix: &str, w: &[f32], m: usize) -> String {
    let path = tmp(&format!("{prefix}in.safetensors"));
    let x: Vec<Vec<f32>> = ["q", "k", "v"]
        .iter()
        .map(|n| read_f32(DATA, &format!("{prefix}{n}")).0)
        .collect();
    fn view(d: &[f32], s: Vec<usize>) -> safetensors::tensor::TensorView<'_> {
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s, bytemuck::cast_slice(d))
            .unwrap()
    }
    let s = vec![HEADS, L, D];
    safetensors::serialize_to_file(
        [
            ("q", view(&x[0], s.clone())),
            ("k", view(&x[1], s.clone())),
            ("v", view(&x[2], s)),
            ("W", view(w, vec![m, D])),
        ],
        None,
        std::path::Path::new(&path),
    )
    .unwrap();
    path
}

#[test]
fn favor_with_given_omega_equals_the_unstabilised_estimator() {
    let m = 64;
    for (prefix, seed) in [("layer0.", 1u64), ("layer5.", 2)] {
        let w = draw_omega(m, D, OmegaDraw::OrthogonalChi, seed).unwrap();
        let input = input_with_omega(prefix, &w, m);
        let q = to_f64(&read_f32(DATA, &format!("{prefix}q")).0);
        let k = to_f64(&read_f32(DATA, &format!("{prefix}k")).0);
        let v = to_f64(&read_f32(DATA, &format!("{prefix}v")).0);
        for causal in [false, true] {
            let out = tmp(&format!("{prefix}{causal}.safetensors"));
            let mut cmd = bin();
            cmd.args(["attention", "--input", &input, "--method", "linear"])
                .args(["--feature-map", "favor", "--omega", "W", "--device", "gpu"])
                .args(["--output", &out]);
            if causal {
                cmd.arg("--causal");
            }
            let res = cmd.output().unwrap();
            assert!(res.status.success(), "{}", stderr(&res));
            let stdout = String::from_utf8_lossy(&res.stdout);
            assert!(
                stdout.contains("M = 64") && stdout.contains("tensor `W`"),
                "{stdout}"
            );
            let (o, shape) = read_f32(&out, "o");
            assert_eq!(shape, [HEADS, L, D]);
            let n = L * D;
            let want: Vec<f64> = (0..HEADS)
                .flat_map(|h| {
                    let x = |t: &[f64]| t[h * n..(h + 1) * n].to_vec();
                    unstabilised_favor(
                        &x(&q),
                        &x(&k),
                        &x(&v),
                        (L, D, D),
                        &w,
                        FavorKind::Positive,
                        causal,
                    )
                })
                .collect();
            assert_close(
                &format!("{prefix} causal={causal}"),
                &to_f64(&o),
                &want,
                TOL_F32,
            );
        }
    }
}

#[test]
fn favor_draw_runs_both_devices_and_reports_the_softmax_error() {
    let res = bin()
        .args(["attention", "--input", DATA, "--prefix", "layer5."])
        .args([
            "--feature-map",
            "favor",
            "--num-features",
            "40",
            "--seed",
            "3",
        ])
        .output()
        .unwrap();
    assert!(res.status.success(), "{}", stderr(&res));
    let stdout = String::from_utf8_lossy(&res.stdout);
    for needle in [
        "M = 40",
        "seed 3",
        "gpu vs reference (f32 storage, tolerance 1e-4",
        "relative Frobenius error",
    ] {
        assert!(stdout.contains(needle), "missing `{needle}` in:\n{stdout}");
    }
    let rel: f64 = stdout
        .lines()
        .find(|l| l.starts_with("gpu vs reference ("))
        .and_then(|l| l.rsplit("relative ").next())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(rel <= TOL_F32, "gpu vs reference {rel}");
}

#[test]
fn favor_bad_arguments_exit_2_with_one_line() {
    let input = input_with_omega("layer5.", &[0.5; 8 * D], 8);
    let cases: [&[&str]; 4] = [
        &["--feature-map", "favor"],
        &[
            "--feature-map",
            "favor",
            "--omega",
            "W",
            "--num-features",
            "9",
        ],
        &["--feature-map", "favor", "--omega", "q"],
        &["--feature-map", "elu1", "--num-features", "9"],
    ];
    for args in cases {
        let res = bin()
            .args(["attention", "--input", &input])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(res.status.code(), Some(2), "{args:?}: {}", stderr(&res));
        assert_eq!(
            stderr(&res).lines().count(),
            1,
            "{args:?}: {}",
            stderr(&res)
        );
    }
}

/// Issue 14: `--layout blhd --cu-seqlens` with causal FAVOR+ writes o and the per-sequence state
/// (final_state, final_z, final_max); fed back with `--initial-state`, the second half of each
/// sequence matches one run over the whole of it (two calls = one call), and bad state tensors
/// exit 2 with one line.
#[test]
fn favor_packed_sequences_carry_the_state_through_the_cli() {
    use common::files::{draw_uniform, read_f64, tmp_in, write_f32_i64};
    let (h, d, m) = (2, 12, 16);
    // Two sequences of 40 and 25 tokens; the second call gets their last 15 and 10 tokens.
    let (l, cu) = (65usize, [0i64, 40, 65]);
    let (l1, cu1) = (40usize, [0i64, 25, 40]);
    let x: Vec<Vec<f64>> = (0..3)
        .map(|i| draw_uniform(l * h * d, -1.0, 1.0, 70 + i))
        .collect();
    // Tokens of the packed [1, L, H, D] tensor: first part (0..25, 40..55) and the rest.
    let rows = |v: &[f64], r: &[std::ops::Range<usize>]| -> Vec<f64> {
        r.iter()
            .flat_map(|t| v[t.start * h * d..t.end * h * d].iter().copied())
            .collect()
    };
    let (first, rest) = ([0..25, 40..55], [25..40, 55..65]);
    let w = draw_omega(m, d, OmegaDraw::OrthogonalChi, 5).unwrap();
    let wv: Vec<f64> = w.iter().map(|&y| y as f64).collect();
    let file = |name: &str,
                parts: Option<&[std::ops::Range<usize>]>,
                n: usize,
                cu: &[i64],
                extra: Vec<(&str, Vec<usize>, Vec<f64>)>| {
        let path = tmp_in("favor-batch", name);
        let pick = |v: &[f64]| parts.map_or(v.to_vec(), |p| rows(v, p));
        let mut t = vec![
            ("q", vec![1, n, h, d], pick(&x[0])),
            ("k", vec![1, n, h, d], pick(&x[1])),
            ("v", vec![1, n, h, d], pick(&x[2])),
            ("W", vec![m, d], wv.clone()),
        ];
        t.extend(extra);
        write_f32_i64(&path, &t, &[("cu", cu.to_vec())]);
        path
    };
    let run = |input: &str, out: &str, init: Option<&str>| {
        let mut args = vec![
            "attention",
            "--input",
            input,
            "--feature-map",
            "favor",
            "--omega",
            "W",
            "--causal",
            "--layout",
            "blhd",
            "--cu-seqlens",
            "cu",
            "--output",
            out,
        ];
        if let Some(n) = init {
            args.extend(["--initial-state", n]);
        }
        common::files::longseq(&args)
    };
    let whole = file("whole.safetensors", None, l, &cu, vec![]);
    let o_whole = tmp_in("favor-batch", "o_whole.safetensors");
    let r = run(&whole, &o_whole, None);
    assert!(r.status.success(), "{}", stderr(&r));
    let part1 = file("part1.safetensors", Some(&first), l1, &cu1, vec![]);
    let o1 = tmp_in("favor-batch", "o1.safetensors");
    let r = run(&part1, &o1, None);
    assert!(r.status.success(), "{}", stderr(&r));
    let st: Vec<(Vec<f64>, Vec<usize>)> = ["final_state", "final_z", "final_max"]
        .iter()
        .map(|n| read_f64(&o1, n))
        .collect();
    assert_eq!(st[0].1, vec![2, h, m, d]);
    assert_eq!(st[2].1, vec![2, h, m]);
    let extra = vec![
        ("s0", st[0].1.clone(), st[0].0.clone()),
        ("s0_z", st[1].1.clone(), st[1].0.clone()),
        ("s0_max", st[2].1.clone(), st[2].0.clone()),
    ];
    let part2 = file(
        "part2.safetensors",
        Some(&rest),
        l - l1,
        &[0, 15, 25],
        extra,
    );
    let o2 = tmp_in("favor-batch", "o2.safetensors");
    let r = run(&part2, &o2, Some("s0"));
    assert!(r.status.success(), "{}", stderr(&r));
    let (ow, _) = read_f64(&o_whole, "o");
    let (b2, _) = read_f64(&o2, "o");
    assert_close("second call = one call", &b2, &rows(&ow, &rest), 1e-5);
    for n in ["final_state", "final_z", "final_max"] {
        assert_close(n, &read_f64(&o2, n).0, &read_f64(&o_whole, n).0, 1e-5);
    }
    // A state tensor of the wrong shape; a state with non-causal attention.
    let bad = file(
        "bad.safetensors",
        None,
        l,
        &cu,
        vec![("s0", vec![1, h, m, d], vec![0.0; h * m * d])],
    );
    let r = run(&bad, &tmp_in("favor-batch", "x.safetensors"), Some("s0"));
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert_eq!(stderr(&r).lines().count(), 1, "{}", stderr(&r));
}

/// Grouped heads (GQA, [B, H, L, D] and [H, L, D] without other batch flags): q with 4 heads, k
/// and v with 2; the written `o` equals the f64 per-sequence reference, causal and not.
#[test]
fn favor_grouped_heads_through_the_cli() {
    let (hq, hkv, l, d, m) = (4, 2, 50, 12, 16);
    for rank3 in [false, true] {
        grouped_run((hq, hkv, l, d, m), rank3);
    }
}

fn grouped_run((hq, hkv, l, d, m): (usize, usize, usize, usize, usize), rank3: bool) {
    use common::files::{draw_uniform, read_f64, tmp_in, write_f32};
    use longseq::attention::FavorOptions;
    use longseq::reference::attention::favor_attention_batch;
    use longseq::types::{attention::check_gqa, Layout};
    let lead: &[usize] = if rank3 { &[] } else { &[1] };
    let (sq, skv) = ([lead, &[hq, l, d]].concat(), [lead, &[hkv, l, d]].concat());
    let q = draw_uniform(hq * l * d, -1.0, 1.0, 90);
    let k = draw_uniform(hkv * l * d, -1.0, 1.0, 91);
    let v = draw_uniform(hkv * l * d, -1.0, 1.0, 92);
    let w = draw_omega(m, d, OmegaDraw::OrthogonalChi, 6).unwrap();
    let input = tmp_in("favor-gqa", &format!("in{rank3}.safetensors"));
    let wv: Vec<f64> = w.iter().map(|&y| y as f64).collect();
    write_f32(
        &input,
        &[
            ("q", sq.clone(), q.clone()),
            ("k", skv.clone(), k.clone()),
            ("v", skv.clone(), v.clone()),
            ("W", vec![m, d], wv),
        ],
    );
    let g = check_gqa("test", &sq, &skv, &skv, Layout::Bhld, true).unwrap();
    let f32s = |x: &[f64]| x.iter().map(|&y| y as f32).collect::<Vec<f32>>();
    for causal in [false, true] {
        let out = tmp_in("favor-gqa", &format!("o{causal}{rank3}.safetensors"));
        let mut args = vec!["attention", "--input", &input, "--feature-map", "favor"];
        args.extend(["--omega", "W", "--output", &out]);
        if causal {
            args.push("--causal");
        }
        let r = common::files::longseq(&args);
        assert!(r.status.success(), "{}", stderr(&r));
        let opts = FavorOptions {
            kind: FavorKind::Positive,
            causal,
        };
        let (qf, kf, vf) = (f32s(&q), f32s(&k), f32s(&v));
        let want = favor_attention_batch((&qf, &kf, &vf), &g, &w, &opts, None, None)
            .unwrap()
            .o;
        let (got, shape) = read_f64(&out, "o");
        assert_eq!(shape, sq);
        assert_close_both(
            &format!("cli favor gqa causal={causal}"),
            &got,
            &want,
            TOL_F32,
        );
    }
}
