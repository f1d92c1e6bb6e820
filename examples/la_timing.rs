use longseq::attention::linear::check_shapes;
use longseq::attention::{linear_attention_into, LinearAttentionOptions};
use longseq::{reference, Context, Tensor};
use std::time::Instant;
fn main() {
    let ctx = Context::new().unwrap();
    let (rows, d) = (16usize, 64usize);
    for l in [1024usize, 4096] {
        for causal in [false, true] {
            let n = rows * l * d;
            let x: Vec<f32> = (0..3 * n).map(|i| ((i as f32) * 0.618).sin()).collect();
            let (q, k, v) = (&x[..n], &x[n..2 * n], &x[2 * n..]);
            let shape = [rows, l, d];
            let opts = LinearAttentionOptions { causal, ..Default::default() };
            let tq = Tensor::from_slice(&ctx, q, &shape).unwrap();
            let tk = Tensor::from_slice(&ctx, k, &shape).unwrap();
            let tv = Tensor::from_slice(&ctx, v, &shape).unwrap();
            let out = Tensor::<f32>::empty(&ctx, &shape).unwrap();
            linear_attention_into(&ctx, &tq, &tk, &tv, &out, &opts).unwrap();
            ctx.wait().unwrap();
            let t = Instant::now();
            for _ in 0..3 { linear_attention_into(&ctx, &tq, &tk, &tv, &out, &opts).unwrap(); ctx.wait().unwrap(); }
            let g = t.elapsed().as_secs_f64() / 3.0;
            let dims = check_shapes("t", &shape, &shape, &shape).unwrap();
            let t = Instant::now();
            reference::attention::linear_attention(q, k, v, &dims, &opts).unwrap();
            let c = t.elapsed().as_secs_f64();
            println!("L={l} causal={causal}: gpu {:.1} ms cpu {:.1} ms", g * 1e3, c * 1e3);
        }
    }
}
