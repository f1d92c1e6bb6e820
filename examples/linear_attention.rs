//! Quick start: causal linear attention on random data, on the GPU and the CPU reference.
//! `cargo run --release --example linear_attention`

use longseq::attention::linear::check_shapes;
use longseq::attention::{linear_attention, FeatureMap, LinearAttentionOptions};
use longseq::{reference, Context, Tensor};

fn main() -> longseq::Result<()> {
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.adapter_line());
    let (b, h, l, dk, dv) = (2, 4, 1000, 64, 64);
    let gen = |n: usize, s: f32| {
        (0..n)
            .map(|i| (i as f32 * s).sin() * 0.8)
            .collect::<Vec<f32>>()
    };
    let (q, k, v) = (
        gen(b * h * l * dk, 0.37),
        gen(b * h * l * dk, 0.91),
        gen(b * h * l * dv, 1.3),
    );
    let (sqk, sv) = ([b, h, l, dk], [b, h, l, dv]);
    let opts = LinearAttentionOptions {
        feature_map: FeatureMap::Elu1,
        causal: true,
        ..Default::default()
    };
    let o = linear_attention(
        &ctx,
        &Tensor::from_slice(&ctx, &q, &sqk)?,
        &Tensor::from_slice(&ctx, &k, &sqk)?,
        &Tensor::from_slice(&ctx, &v, &sv)?,
        &opts,
    )?
    .to_vec(&ctx)?;
    let dims = check_shapes("example", &sqk, &sqk, &sv)?;
    let want = reference::attention::linear_attention(&q, &k, &v, &dims, &opts)?;
    let err = o
        .iter()
        .zip(&want)
        .map(|(g, c)| (*g as f64 - c).abs())
        .fold(0.0, f64::max);
    println!("o: {:?}, max |gpu - cpu| = {err:.2e}", dims.out_shape);
    Ok(())
}
