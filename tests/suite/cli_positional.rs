//! `longseq attention --method softmax` with `--alibi`, `--log-n-scale`, `--window`, `--rerope`
//! on the shipped MiniLM tensors, against a dense masked computation written here from the
//! equations.

use crate::common;

use std::process::Command;

use common::*;
use safetensors::SafeTensors;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/minilm_two_cities_qkv.safetensors"
);

fn read_f64(path: &str, name: &str) -> (Vec<f64>, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let v: Vec<f32> = bytemuck::pod_collect_to_vec(t.data());
    (v.into_iter().map(f64::from).collect(), t.shape().to_vec())
}

fn tmp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("longseq-cli-posattn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

#[derive(Clone, Copy, Default)]
struct Terms {
    causal: bool,
    alibi: bool,
    log_n: Option<usize>,
    window: Option<usize>,
    rerope: Option<usize>,
}

/// Dense: logits s_ij = κ_i·(q̃_i·k_j)/√D − m_h|i − j| over the unmasked j, softmax, times V;
/// q̃_i = q_i rotated (interleaved pairs, base 10 000) by clamp(i − j, −w, w) for ReRoPE.
fn dense(q: &[f64], k: &[f64], v: &[f64], (h, l, d): (usize, usize, usize), t: Terms) -> Vec<f64> {
    let mut out = vec![0.0; h * l * d];
    for hh in 0..h {
        // ALiBi's reference slopes: for H = 12, the 8-head geometric series 2^-1 .. 2^-8, then
        // the odd terms 2^(-h/2), h = 1, 3, 5, 7, of the 16-head series.
        let p2 = 1usize << (usize::BITS - 1 - h.leading_zeros());
        let slope = if hh < p2 {
            2f64.powf(-8.0 * (hh + 1) as f64 / p2 as f64)
        } else {
            2f64.powf(-8.0 * (2 * (hh - p2) + 1) as f64 / (2 * p2) as f64)
        };
        let at = |x: &[f64], i: usize, a: usize| x[(hh * l + i) * d + a];
        for i in 0..l {
            let js: Vec<usize> = (0..l)
                .filter(|&j| {
                    let causal = t.causal || t.window.is_some();
                    (!causal || j <= i) && t.window.is_none_or(|w| i < j + w)
                })
                .collect();
            let kappa = t.log_n.map_or(1.0, |lt| {
                ((js.len() as f64).ln() / (lt as f64).ln()).max(1.0)
            });
            let logits: Vec<f64> = js
                .iter()
                .map(|&j| {
                    let dot: f64 = match t.rerope {
                        None => (0..d).map(|a| at(q, i, a) * at(k, j, a)).sum(),
                        Some(w) => {
                            let delta = (i as f64 - j as f64).clamp(-(w as f64), w as f64);
                            (0..d / 2)
                                .map(|p| {
                                    let th = delta * 10_000f64.powf(-2.0 * p as f64 / d as f64);
                                    let (qa, qb) = (at(q, i, 2 * p), at(q, i, 2 * p + 1));
                                    let (c, s) = (th.cos(), th.sin());
                                    (qa * c - qb * s) * at(k, j, 2 * p)
                                        + (qa * s + qb * c) * at(k, j, 2 * p + 1)
                                })
                                .sum()
                        }
                    };
                    let bias = if t.alibi {
                        slope * (i as f64 - j as f64).abs()
                    } else {
                        0.0
                    };
                    kappa * dot / (d as f64).sqrt() - bias
                })
                .collect();
            let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = logits.iter().map(|s| (s - m).exp()).collect();
            let z: f64 = w.iter().sum();
            for e in 0..d {
                out[(hh * l + i) * d + e] = js
                    .iter()
                    .zip(&w)
                    .map(|(&j, wj)| wj * at(v, j, e))
                    .sum::<f64>()
                    / z;
            }
        }
    }
    out
}

#[test]
fn softmax_position_flags_equal_the_dense_masked_equation() {
    let (q, shape) = read_f64(DATA, "layer0.q");
    let (k, _) = read_f64(DATA, "layer0.k");
    let (v, _) = read_f64(DATA, "layer0.v");
    let dims = (shape[0], shape[1], shape[2]);
    let base = Terms::default();
    let cases = [
        (
            "--alibi --causal",
            Terms {
                alibi: true,
                causal: true,
                ..base
            },
        ),
        (
            "--alibi",
            Terms {
                alibi: true,
                ..base
            },
        ),
        (
            "--log-n-scale 64",
            Terms {
                log_n: Some(64),
                ..base
            },
        ),
        (
            "--window 50",
            Terms {
                window: Some(50),
                ..base
            },
        ),
        (
            "--rerope 16 --causal",
            Terms {
                rerope: Some(16),
                causal: true,
                ..base
            },
        ),
        (
            "--alibi --log-n-scale 32 --window 100 --rerope 24",
            Terms {
                alibi: true,
                log_n: Some(32),
                window: Some(100),
                rerope: Some(24),
                ..base
            },
        ),
    ];
    for (i, (device, (flags, t))) in ["gpu", "cpu"]
        .into_iter()
        .flat_map(|d| cases.into_iter().map(move |c| (d, c)))
        .enumerate()
    {
        let out = tmp(&format!("o{i}.safetensors"));
        let res = Command::new(env!("CARGO_BIN_EXE_longseq"))
            .args([
                "attention",
                "--input",
                DATA,
                "--prefix",
                "layer0.",
                "--method",
                "softmax",
            ])
            .args(["--device", device, "--output", &out])
            .args(flags.split(' '))
            .output()
            .unwrap();
        assert!(
            res.status.success(),
            "{device} {flags}: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        let (o, _) = read_f64(&out, "o");
        let want = dense(&q, &k, &v, dims, t);
        let e = rel_err(&o, &want);
        eprintln!("{device} {flags}: relative error {e:.2e}");
        assert!(e <= TOL_F32, "{device} {flags}: relative error {e:.3e}");
    }
}

#[test]
fn position_flags_need_softmax() {
    let res = Command::new(env!("CARGO_BIN_EXE_longseq"))
        .args([
            "attention",
            "--input",
            DATA,
            "--prefix",
            "layer0.",
            "--window",
            "8",
        ])
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
}
