//! Many short packed sequences through `linear_attention_varlen` (issue 14): 1000 sequences of
//! 10 tokens (one run of equal lengths: one set of dispatches), 1000 of 5..=15 tokens (a run per
//! change of length), and the same 10 000 tokens as a dense `[1000, H, 10, D]` batch for scale.
//! Prints the median wall time of `--runs` runs (pipelines compiled by a first run), readback
//! included.
//!
//! `cargo run --example varlen_many -- --runs 5`
//!
//! Measured 2026-12-02 on lavapipe under load ~22 on 2 cores (six helpers building; absolute
//! figures inflated, ratios meaningful), `--runs 3`, H = 4, D = 64, blhd: non-causal 1000 × 10
//! 5447 ms vs dense [1000, 10, 4, 64] 5643 ms (a run of equal lengths costs what the dense batch
//! does); 1000 × 5..=15 11 872 ms (one set of dispatches per run of equal lengths: 2.2×);
//! causal 1000 × 10 10 865 ms.

use std::time::Instant;

use longseq::attention::{linear_attention, linear_attention_varlen, LinearAttentionOptions};
use longseq::types::{CuSeqlens, Layout};
use longseq::{Context, Tensor};

fn median(mut x: Vec<f64>) -> f64 {
    x.sort_by(f64::total_cmp);
    x[x.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

fn main() -> longseq::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(5usize);
    let ctx = Context::new()?;
    let (h, d, n) = (4usize, 64usize, 1000usize);
    let equal: Vec<i64> = (0..=n as i64).map(|i| 10 * i).collect();
    let mut mixed = vec![0i64];
    for i in 0..n {
        // Lengths 5..=15 in a fixed, scrambled order (mean 10).
        mixed.push(mixed.last().unwrap() + 5 + ((i * 7919) % 11) as i64);
    }
    for causal in [false, true] {
        let opts = LinearAttentionOptions {
            causal,
            layout: Layout::Blhd,
            ..Default::default()
        };
        for (name, cu) in [("1000 x 10", &equal), ("1000 x 5..=15", &mixed)] {
            let l = *cu.last().unwrap() as usize;
            let x: Vec<f32> = (0..l * h * d).map(|i| (i as f32 * 0.37).sin()).collect();
            let t = Tensor::from_slice(&ctx, &x, &[1, l, h, d])?;
            let c = CuSeqlens::new("example", cu, l)?;
            let ms = time(runs, || {
                let o = linear_attention_varlen(&ctx, &t, &t, &t, &c, &opts).unwrap();
                o.to_vec(&ctx).unwrap();
            });
            println!("varlen {name} (L = {l}, H = {h}, D = {d}, causal = {causal}): {ms:.1} ms");
        }
        let x: Vec<f32> = (0..n * 10 * h * d)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let t = Tensor::from_slice(&ctx, &x, &[n, 10, h, d])?;
        let ms = time(runs, || {
            let o = linear_attention(&ctx, &t, &t, &t, &opts).unwrap();
            o.to_vec(&ctx).unwrap();
        });
        println!("dense [1000, 10, {h}, {d}] blhd (causal = {causal}): {ms:.1} ms");
    }
    Ok(())
}
