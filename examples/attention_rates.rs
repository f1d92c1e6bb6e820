//! GFLOP/s of every GPU attention kernel on W1-shaped inputs (B·H = 16, D = 64, f32, random
//! uniform [−1, 1) scaled by 1/√D), one table: median of `--runs` timed calls after a warm-up that
//! compiles the pipelines; each call waits for the device. FLOP counts (as the benches define
//! them, counting one FMA as 2):
//! - linear (elu+1), Lightning, NormAttention: `4·L·Dk·Dv` (state and its product with φ(q)),
//!   `+ 4·L·Dk` with the denominator, `+ 2·L·C·(Dk + Dv)` causal (the C = 64 score block and its
//!   product with V);
//! - FAVOR+ (positive, m features): `4·L·D·m` (ω projections of q and k) + linear attention with
//!   Dk = m;
//! - exact softmax: `4·D·pairs` (pairs = L² or L(L + 1)/2); DiagAttention (block w = 64): `4·D·L·w`, causal
//!   `4·D·L·(w + 1)/2`.
//!
//! Exact softmax is quadratic: at L = 4096 it runs B·H = `--softmax-bh` rows (default 2, as the
//! softmax bench; the rate does not depend on B·H once the workgroups fill the adapter).
//!
//! `cargo run --example attention_rates -- [--l 4096] [--runs 3] [--m 64] [--softmax-bh 2]
//! [--only linear,linear_causal,lightning,norm,norm_causal,favor,favor_causal,softmax,
//! softmax_causal,diag,diag_causal]`

#[path = "common/timing.rs"]
mod timing;

use timing::median_ms;

use longseq::attention::{
    diag_attention_into, draw_omega, favor_attention_into, lightning_attention_into,
    linear_attention_into, norm_attention_into, softmax_attention_into, Affine,
    DiagAttentionOptions, FavorOptions, LightningOptions, LinearAttentionOptions,
    NormAttentionOptions, OmegaDraw, SoftmaxAttentionOptions,
};
use longseq::{Context, Tensor};
use rand::{Rng, SeedableRng};

const ALL: [&str; 11] = [
    "linear",
    "linear_causal",
    "lightning",
    "norm",
    "norm_causal",
    "favor",
    "favor_causal",
    "softmax",
    "softmax_causal",
    "diag",
    "diag_causal",
];

struct Args {
    l: usize,
    runs: usize,
    m: usize,
    softmax_bh: usize,
    only: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        l: 4096,
        runs: 3,
        m: 64,
        softmax_bh: 2,
        only: ALL.iter().map(|s| s.to_string()).collect(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for kv in argv.chunks(2) {
        let [k, v] = kv else { usage() };
        let num = || v.parse().unwrap_or_else(|_| usage());
        match k.as_str() {
            "--l" => a.l = num(),
            "--runs" => a.runs = num(),
            "--m" => a.m = num(),
            "--softmax-bh" => a.softmax_bh = num(),
            "--only" => a.only = v.split(',').map(str::to_string).collect(),
            _ => usage(),
        }
    }
    a
}

fn usage() -> ! {
    eprintln!("usage: attention_rates [--l L] [--runs N] [--m M] [--softmax-bh N] [--only a,b]");
    std::process::exit(2)
}

/// The inputs of one kernel: q, k, v and the output `[1, B·H, L, D]`.
struct Qkv {
    q: Tensor<f32>,
    k: Tensor<f32>,
    v: Tensor<f32>,
    o: Tensor<f32>,
}

/// FLOPs of kernel `name` (see the module docs) and its B·H.
fn flops(a: &Args, name: &str) -> (usize, f64) {
    let causal = name.ends_with("_causal");
    let (lf, df, mf) = (a.l as f64, 64.0, a.m as f64);
    let lin = |dk: f64, den: bool, causal: bool| {
        let intra = if causal {
            2.0 * lf * 64.0 * (dk + df)
        } else {
            0.0
        };
        16.0 * (4.0 * lf * dk * df + if den { 4.0 * lf * dk } else { 0.0 } + intra)
    };
    match name.trim_end_matches("_causal") {
        "linear" => (16, lin(df, true, causal)),
        "lightning" => (16, lin(df, false, true)),
        "norm" => (16, lin(df, false, causal)),
        "favor" => (16, 16.0 * 4.0 * lf * df * mf + lin(mf, true, causal)),
        "softmax" => {
            let pairs = if causal {
                lf * (lf + 1.0) / 2.0
            } else {
                lf * lf
            };
            (a.softmax_bh, a.softmax_bh as f64 * 4.0 * df * pairs)
        }
        "diag" => (16, 16.0 * 4.0 * df * lf * if causal { 32.5 } else { 64.0 }),
        _ => usage(),
    }
}

/// Records and submits one call of kernel `name` (not waited on).
fn run(ctx: &Context, name: &str, x: &Qkv, omega: &Tensor<f32>) -> longseq::Result<()> {
    let causal = name.ends_with("_causal");
    let none = Affine::default();
    let Qkv { q, k, v, o } = x;
    match name.trim_end_matches("_causal") {
        "linear" => {
            let opts = LinearAttentionOptions {
                causal,
                ..Default::default()
            };
            linear_attention_into(ctx, q, k, v, o, &opts)
        }
        "lightning" => {
            lightning_attention_into(ctx, q, k, v, None, o, &LightningOptions::default())
        }
        "norm" => {
            let opts = NormAttentionOptions {
                causal,
                ..Default::default()
            };
            norm_attention_into(ctx, q, k, v, &none, o, &opts)
        }
        "favor" => {
            let opts = FavorOptions {
                causal,
                ..Default::default()
            };
            favor_attention_into(ctx, q, k, v, omega, o, &opts)
        }
        "softmax" => {
            let opts = SoftmaxAttentionOptions {
                causal,
                ..Default::default()
            };
            softmax_attention_into(ctx, q, k, v, o, &opts)
        }
        _ => {
            let opts = DiagAttentionOptions {
                causal,
                ..Default::default()
            };
            diag_attention_into(ctx, q, k, v, &none, o, &opts)
        }
    }
}

fn main() {
    let a = args();
    let ctx = Context::new().expect(
        "attention_rates needs a GPU adapter (lavapipe: apt-get install mesa-vulkan-drivers)",
    );
    eprintln!("adapter: {}", ctx.adapter_line());
    let (d, l) = (64usize, a.l);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut inputs = |bh: usize| {
        let n = bh * l * d;
        let s = 1.0 / (d as f32).sqrt();
        let shape = [1, bh, l, d];
        let mut t = || {
            let x: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0) * s).collect();
            Tensor::from_slice(&ctx, &x, &shape).unwrap()
        };
        let (q, k, v) = (t(), t(), t());
        let o = Tensor::<f32>::empty(&ctx, &shape).unwrap();
        Qkv { q, k, v, o }
    };
    let w1 = inputs(16);
    let soft = inputs(a.softmax_bh);
    let omega = draw_omega(a.m, d, OmegaDraw::OrthogonalChi, 0).unwrap();
    let omega = Tensor::from_slice(&ctx, &omega, &[a.m, d]).unwrap();
    println!("| kernel | B·H | L | ms | GFLOP | GFLOP/s |\n|---|---|---|---|---|---|");
    for name in &a.only {
        let (bh, flop) = flops(&a, name);
        let x = if name.starts_with("softmax") {
            &soft
        } else {
            &w1
        };
        let ms = median_ms(a.runs, || {
            run(&ctx, name, x, &omega).unwrap();
            ctx.wait().unwrap();
        });
        println!(
            "| {name} | {bh} | {l} | {ms:.1} | {:.3} | {:.2} |",
            flop / 1e9,
            flop / ms / 1e6
        );
        // With LONGSEQ_PASS_TIMES=1: where the time went, per pass (summed over warm-up and runs).
        for t in longseq::profile::pass_times() {
            let per = (a.runs + 1) as f64;
            println!(
                "|   pass {} | {} | | {:.1} | | |",
                t.name,
                t.count,
                t.total.as_secs_f64() * 1e3 / per
            );
        }
    }
}
