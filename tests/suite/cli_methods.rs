//! `longseq attention --method softmax|norm|diag|lightning` on the shipped MiniLM data: softmax
//! reproduces the stored float64 `softmax_out`; the others equal an independent computation of
//! their equation; bad flags exit with code 2.

use crate::common;

use std::process::Command;

use common::*;
use longseq::attention::linear::check_shapes;
use longseq::attention::{
    alibi_slopes, Affine, DiagAttentionOptions, DiagWeights, FeatureMap, Norm, NormAttentionOptions,
};
use longseq::reference::attention as reference;
use safetensors::SafeTensors;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/minilm_two_cities_qkv.safetensors"
);

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_longseq"))
}

fn read_f32(path: &str, name: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    (bytemuck::pod_collect_to_vec(t.data()), t.shape().to_vec())
}

fn tmp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("longseq-cli-methods-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_string_lossy().into_owned()
}

/// Runs `longseq attention` on the GPU with `args`, returns tensor `o` and stdout.
fn attention(input: &str, prefix: &str, args: &[&str], out: &str) -> (Vec<f64>, String) {
    let res = bin()
        .args(["attention", "--input", input, "--prefix", prefix])
        .args(["--device", "gpu", "--output", out])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{args:?}: {stderr}");
    let (o, shape) = read_f32(out, "o");
    assert_eq!(shape, [12, 403, 32]);
    (
        to_f64(&o),
        String::from_utf8_lossy(&res.stdout).into_owned(),
    )
}

fn qkv(prefix: &str) -> [Vec<f32>; 3] {
    ["q", "k", "v"].map(|n| read_f32(DATA, &format!("{prefix}{n}")).0)
}

#[test]
fn softmax_reproduces_the_stored_softmax_out() {
    for prefix in ["layer0.", "layer5."] {
        let (o, stdout) = attention(
            DATA,
            prefix,
            &["--method", "softmax"],
            &tmp(&format!("{prefix}soft.safetensors")),
        );
        let (want, _) = read_f32(DATA, &format!("{prefix}softmax_out"));
        let e = rel_err(&o, &to_f64(&want));
        eprintln!("{prefix} softmax vs stored softmax_out: {e:.2e}");
        assert!(e <= 1e-5, "{prefix}: {e:.3e}");
        assert!(stdout.contains("method: softmax"), "{stdout}");
    }
}

#[test]
fn norm_and_diag_equal_their_equations() {
    let d = check_shapes("t", &[12, 403, 32], &[12, 403, 32], &[12, 403, 32]).unwrap();
    for (i, prefix) in ["layer0.", "layer5."].into_iter().enumerate() {
        let [q, k, v] = qkv(prefix);
        let causal = i == 1;
        let mut args = vec![
            "--method",
            "norm",
            "--feature-map",
            "elu",
            "--norm",
            "layernorm",
        ];
        if causal {
            args.push("--causal");
        }
        let (o, _) = attention(DATA, prefix, &args, &tmp(&format!("n{i}.safetensors")));
        let no = NormAttentionOptions {
            feature_map: FeatureMap::Elu,
            causal,
            norm: Norm::LayerNorm,
            eps: 1e-6,
        };
        let want = reference::norm_attention(&q, &k, &v, &d, &Affine::default(), &no).unwrap();
        assert_close(&format!("{prefix} norm"), &o, &want, TOL_F32);

        for (w, relu) in [(16u32, false), (64, true)] {
            let mut args = vec!["--method", "diag"];
            let ws = w.to_string();
            args.extend(["--block", &ws]);
            if relu {
                args.extend(["--weights", "relu", "--norm", "rmsnorm"]);
            }
            if causal {
                args.push("--causal");
            }
            let (o, _) = attention(DATA, prefix, &args, &tmp(&format!("d{i}{w}.safetensors")));
            let dopts = DiagAttentionOptions {
                block: w,
                causal,
                weights: if relu {
                    DiagWeights::Relu
                } else {
                    DiagWeights::Softmax
                },
                norm: Norm::RmsNorm,
                ..Default::default()
            };
            let want =
                reference::diag_attention(&q, &k, &v, &d, &Affine::default(), &dopts).unwrap();
            assert_close(
                &format!("{prefix} diag w={w} relu={relu}"),
                &o,
                &want,
                TOL_F32,
            );
        }
    }
}

/// `o_t = Σ_{j≤t} λ_h^(t−j) (q_t·k_j) v_j`, head by head, straight from the definition.
fn decayed_quadratic(q: &[f32], k: &[f32], v: &[f32], s: &[f32], l: usize, dd: usize) -> Vec<f64> {
    let mut out = vec![0.0; q.len()];
    for (h, &sh) in s.iter().enumerate() {
        let lam = (-(sh as f64)).exp();
        let base = h * l * dd;
        for t in 0..l {
            let mut w = 1.0; // λ^(t−j), j from t down
            for j in (0..=t).rev() {
                let dot: f64 = (0..dd)
                    .map(|a| q[base + t * dd + a] as f64 * k[base + j * dd + a] as f64)
                    .sum();
                for e in 0..dd {
                    out[base + t * dd + e] += w * dot * v[base + j * dd + e] as f64;
                }
                w *= lam;
            }
        }
    }
    out
}

#[test]
fn lightning_equals_its_equation_with_alibi_and_with_a_decay_tensor() {
    let [q, k, v] = qkv("layer5.");
    let (o, stdout) = attention(
        DATA,
        "layer5.",
        &["--method", "lightning"],
        &tmp("l-alibi.safetensors"),
    );
    assert!(stdout.contains("slopes ALiBi"), "{stdout}");
    let want = decayed_quadratic(&q, &k, &v, &alibi_slopes(12), 403, 32);
    assert_close("lightning alibi", &o, &want, TOL_F32);

    // A file with q, k, v and a decay tensor [12] of strong and weak rates.
    let s: Vec<f32> = (0..12).map(|h| [0.01f32, 0.5, 2.0][h % 3]).collect();
    let file = tmp("with_decay.safetensors");
    let bytes = |x: &[f32]| bytemuck::cast_slice::<f32, u8>(x).to_vec();
    let tensors = [
        ("q", vec![12, 403, 32], bytes(&q)),
        ("k", vec![12, 403, 32], bytes(&k)),
        ("v", vec![12, 403, 32], bytes(&v)),
        ("decay", vec![12], bytes(&s)),
        ("decay_short", vec![5], bytes(&s[..5])),
    ];
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, sh, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, sh.clone(), b)
                .unwrap();
            (n.to_string(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, std::path::Path::new(&file)).unwrap();
    let (o, _) = attention(
        &file,
        "",
        &["--method", "lightning", "--decay", "decay", "--block", "64"],
        &tmp("l-decay.safetensors"),
    );
    let want = decayed_quadratic(&q, &k, &v, &s, 403, 32);
    assert_close("lightning decay tensor", &o, &want, TOL_F32);

    // Slopes of the wrong length and block 0 are input errors: exit code 2.
    for args in [
        vec!["--method", "lightning", "--decay", "decay_short"],
        vec!["--method", "lightning", "--decay", "missing"],
        vec!["--method", "diag", "--block", "0"],
    ] {
        let res = bin()
            .args(["attention", "--input", &file, "--device", "gpu"])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(res.status.code(), Some(2), "{args:?}");
    }
}
