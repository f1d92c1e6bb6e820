//! Length extrapolation with RoPE: a head of D = 64 trained at L = 2048, run at 8192.
//! `cargo run --release --example length_extrapolation [-- --out DIR]`
//!
//! 1. Per scaling (none, linear PI, NTK-aware, dynamic NTK, YaRN; s = 4), how far each frequency
//!    band rotates at 8192 compared with the largest angle it saw in training. A band whose
//!    wavelength exceeds L_train never completed a turn in training, so any angle past its
//!    trained maximum is out of distribution (ratio > 1 there is extrapolation).
//! 2. The attention entropy of fixed queries (at the last position) over random keys at
//!    positions 0 .. L−1 as L grows. Keys share a mean direction, as real keys do, so the
//!    rotation matters: without scaling the far keys decorrelate and attention spreads.
//!    RoPE runs on the GPU; the softmax and entropy on the CPU in f64.
//!
//! Writes DIR/length_extrapolation_rotation.png and DIR/length_extrapolation_entropy.png (DIR
//! defaults to `longseq-out/`).

#[path = "common/args.rs"]
mod args;
#[path = "common/plot.rs"]
mod plot;

use longseq::positions::rope::frequencies;
use longseq::positions::{rope, Positions, RopeOptions, RopeScaling};
use longseq::{Context, Tensor};
use plot::{line_plot, Axes, Series};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

const D: usize = 64;
const L_TRAIN: usize = 2048;
const L_RUN: usize = 8192;
const S: f64 = 4.0;

fn scalings() -> Vec<(&'static str, RopeScaling)> {
    vec![
        ("none", RopeScaling::None),
        ("linear", RopeScaling::Linear { factor: S }),
        ("NTK (= dynamic at 8192)", RopeScaling::Ntk { factor: S }),
        (
            "dynamic NTK",
            RopeScaling::DynamicNtk {
                factor: 1.0,
                original_length: L_TRAIN,
            },
        ),
        (
            "YaRN",
            RopeScaling::Yarn {
                factor: S,
                original_length: L_TRAIN,
                alpha: 1.0,
                beta: 32.0,
            },
        ),
    ]
}

fn opts(scaling: RopeScaling) -> RopeOptions {
    RopeOptions {
        scaling,
        ..Default::default()
    }
}

fn main() -> std::process::ExitCode {
    args::main_with(run)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = args::Args::new().out_dir()?.display().to_string();
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.adapter_line());

    // 1. Rotation per band.
    let (theta, _) = frequencies(D, (L_TRAIN - 1) as u32, &opts(RopeScaling::None));
    let trained: Vec<f64> = theta.iter().map(|t| (L_TRAIN - 1) as f64 * t).collect();
    let mut rot_series = Vec::new();
    let mut ratios = Vec::new();
    for (name, sc) in scalings() {
        let (th, _) = frequencies(D, (L_RUN - 1) as u32, &opts(sc));
        let r: Vec<f64> = th
            .iter()
            .zip(&trained)
            .map(|(t, tr)| (L_RUN - 1) as f64 * t / tr)
            .collect();
        rot_series.push(Series {
            name: name.into(),
            points: r.iter().enumerate().map(|(i, &v)| (i as f64, v)).collect(),
            ..Default::default()
        });
        ratios.push((name, r));
    }
    println!(
        "\nMax angle at L = {L_RUN} over max angle in training (L = {L_TRAIN}), per band i \
         (θ_i = 10000^(−2i/{D}), s = {S}); * = wavelength > L_train (never a full turn in training)"
    );
    print!("{:>4} {:>10} {:>12}", "i", "wavelength", "trained rad");
    for (n, _) in &ratios {
        print!(" {:>12}", n.split(' ').next().unwrap());
    }
    println!();
    for i in [0, 4, 8, 12, 16, 18, 20, 22, 24, 26, 28, 30, 31] {
        let wl = 2.0 * std::f64::consts::PI / theta[i];
        let star = if wl > L_TRAIN as f64 { "*" } else { " " };
        print!("{i:>4} {wl:>10.1}{star} {:>11.2}", trained[i]);
        for (_, r) in &ratios {
            print!(" {:>12.3}", r[i]);
        }
        println!();
    }

    // 2. Entropy of fixed queries over random keys.
    let mut g = rand::rngs::StdRng::seed_from_u64(7);
    let mut randn = |n: usize| -> Vec<f64> { (0..n).map(|_| g.sample(StandardNormal)).collect() };
    // |μ| ≈ 8, query noise ≈ 2, key noise ≈ 4: logits of a few units, as in trained heads.
    let unit = 1.0 / (D as f64).sqrt();
    let mu: Vec<f64> = randn(D).iter().map(|x| x * unit * 8.0).collect();
    let nq = 8;
    let queries: Vec<f32> = (0..nq)
        .flat_map(|_| {
            let e = randn(D);
            (0..D)
                .map(|a| (mu[a] + e[a] * unit * 2.0) as f32)
                .collect::<Vec<_>>()
        })
        .collect();
    let lengths = [256usize, 512, 1024, 2048, 4096, 8192, 16384];
    let max_l = *lengths.last().unwrap();
    let keys: Vec<f32> = (0..max_l)
        .flat_map(|_| {
            let e = randn(D);
            (0..D)
                .map(|a| (mu[a] + e[a] * unit * 4.0) as f32)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut ent_series: Vec<Series> = Vec::new();
    let mut table: Vec<(String, Vec<f64>)> = Vec::new();
    for (name, sc) in scalings() {
        let mut row = Vec::new();
        for &l in &lengths {
            let o = opts(sc);
            let tk = Tensor::from_slice(&ctx, &keys[..l * D], &[l, D])?;
            let k = rope(&ctx, &tk, Positions::Offset(0), &o)?.to_vec(&ctx)?;
            let tq = Tensor::from_slice(&ctx, &queries, &[nq, 1, D])?;
            let q = rope(&ctx, &tq, Positions::Offset((l - 1) as u32), &o)?.to_vec(&ctx)?;
            let mut h = 0.0;
            for qi in 0..nq {
                let logits: Vec<f64> = (0..l)
                    .map(|j| {
                        (0..D)
                            .map(|a| q[qi * D + a] as f64 * k[j * D + a] as f64)
                            .sum::<f64>()
                            / (D as f64).sqrt()
                    })
                    .collect();
                let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = logits.iter().map(|x| (x - m).exp()).sum();
                h -= logits
                    .iter()
                    .map(|x| {
                        let p = (x - m).exp() / z;
                        if p > 0.0 {
                            p * p.ln()
                        } else {
                            0.0
                        }
                    })
                    .sum::<f64>();
            }
            row.push(h / nq as f64);
        }
        ent_series.push(Series {
            name: name.into(),
            points: lengths
                .iter()
                .map(|&l| (l as f64).log2())
                .zip(row.clone())
                .collect(),
            ..Default::default()
        });
        table.push((name.to_string(), row));
    }
    ent_series.push(Series {
        name: "ln L (uniform)".into(),
        points: lengths
            .iter()
            .map(|&l| ((l as f64).log2(), (l as f64).ln()))
            .collect(),
        ..Default::default()
    });
    println!(
        "\nAttention entropy (nats) of {nq} fixed queries at position L−1 over L random keys \
         sharing a mean direction; trained length {L_TRAIN}"
    );
    print!("{:>24}", "L");
    for l in lengths {
        print!(" {l:>7}");
    }
    println!();
    for (name, row) in &table {
        print!("{name:>24}");
        for h in row {
            print!(" {h:>7.3}");
        }
        println!();
    }
    print!("{:>24}", "ln L");
    for l in lengths {
        print!(" {:>7.3}", (l as f64).ln());
    }
    println!();

    let p1 = format!("{out_dir}/length_extrapolation_rotation.png");
    line_plot(
        &p1,
        &Axes {
            title: "RoPE D=64 trained at 2048, run at 8192: max angle / trained max angle",
            x_label: "frequency band i (θ_i = 10000^(−2i/64); high i = long wavelength)",
            y_label: "angle at 8192 / angle at 2048 (>1 = unseen)",
            log_x: false,
            log_y: true,
        },
        &rot_series,
    )?;
    let p2 = format!("{out_dir}/length_extrapolation_entropy.png");
    line_plot(
        &p2,
        &Axes {
            title: "Attention entropy of fixed queries over random keys (trained at 2048)",
            x_label: "log2 L (11 = trained length 2048, 13 = 8192)",
            y_label: "entropy (nats)",
            log_x: false,
            log_y: false,
        },
        &ent_series,
    )?;
    println!("\nwrote {p1} and {p2}");
    Ok(())
}
