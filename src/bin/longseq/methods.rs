//! The attention methods behind `longseq attention --method`: one GPU call and one CPU reference
//! call per method.

use longseq::attention::linear::AttnDims;
use longseq::attention::{
    diag_attention, favor_attention, lightning_attention, linear_attention, norm_attention,
    softmax_attention, softmax_attention_positional, Affine, DiagAttentionOptions, FavorKind,
    FavorOptions, LightningOptions, LinearAttentionOptions, NormAttentionOptions,
    PositionalOptions, SoftmaxAttentionOptions,
};
use longseq::attention::{gla, GlaInputs};
use longseq::reference::attention as cpu;
use longseq::reference::gla::{gla_ref, GlaDims, GlaRef};
use longseq::{Context, Element, Result, Tensor};

/// A method with its resolved options.
pub enum Op {
    Linear(LinearAttentionOptions),
    /// Performer: ω `[m, Dk]` row-major.
    Favor {
        omega: Vec<f32>,
        m: usize,
        opts: FavorOptions,
        /// Where ω came from, for the report: "tensor `W`" or "OrthogonalChi draw, seed 3".
        source: String,
    },
    Softmax(SoftmaxAttentionOptions),
    /// Softmax with ALiBi / log-n / window / ReRoPE terms inside the kernel.
    SoftmaxPositional {
        opts: SoftmaxAttentionOptions,
        pos: PositionalOptions<'static>,
        heads: usize,
    },
    Norm(NormAttentionOptions),
    Diag(DiagAttentionOptions),
    /// `slopes: None` means ALiBi.
    Lightning {
        opts: LightningOptions,
        slopes: Option<Vec<f32>>,
        heads: usize,
    },
    /// Gated linear attention: `g` like q (`[.., L, Dk]`, row-major, as stored).
    Gla {
        g: Vec<f32>,
        scale: Option<f32>,
    },
}

impl Op {
    pub fn gpu<T: Element>(
        &self,
        ctx: &Context,
        q: &Tensor<T>,
        k: &Tensor<T>,
        v: &Tensor<T>,
    ) -> Result<Tensor<T>> {
        let none = Affine::default();
        match self {
            Op::Linear(o) => linear_attention(ctx, q, k, v, o),
            Op::Favor { omega, m, opts, .. } => {
                let dk = q.shape()[q.shape().len() - 1];
                let w = Tensor::from_slice(ctx, omega, &[*m, dk])?;
                favor_attention(ctx, q, k, v, &w, opts)
            }
            Op::Softmax(o) => softmax_attention(ctx, q, k, v, o),
            Op::SoftmaxPositional { opts, pos, .. } => {
                softmax_attention_positional(ctx, q, k, v, opts, pos)
            }
            Op::Norm(o) => norm_attention(ctx, q, k, v, &none, o),
            Op::Diag(o) => diag_attention(ctx, q, k, v, &none, o),
            Op::Lightning { opts, slopes, .. } => {
                lightning_attention(ctx, q, k, v, slopes.as_deref(), opts)
            }
            Op::Gla { g, scale } => {
                let gt: Vec<T> = g.iter().map(|&x| T::from_f64(x as f64)).collect();
                let g = Tensor::from_slice(ctx, &gt, q.shape())?;
                if q.shape().len() == 4 {
                    let x = GlaInputs {
                        scale: *scale,
                        ..GlaInputs::new(q, k, v, &g)
                    };
                    return Ok(gla(ctx, &x)?.0);
                }
                // Other leading dims: the rows are contiguous, so [1, rows, L, D] is the same
                // data (copied here: tensors have no reshape).
                let flat = |t: &Tensor<T>| -> Result<Tensor<T>> {
                    let s = t.shape();
                    let rows = s[..s.len() - 2].iter().product();
                    let shape = [1, rows, s[s.len() - 2], s[s.len() - 1]];
                    Tensor::from_slice(ctx, &t.to_vec(ctx)?, &shape)
                };
                let (q4, k4, v4, g4) = (flat(q)?, flat(k)?, flat(v)?, flat(&g)?);
                let x = GlaInputs {
                    scale: *scale,
                    ..GlaInputs::new(&q4, &k4, &v4, &g4)
                };
                let o = gla(ctx, &x)?.0;
                Tensor::from_slice(ctx, &o.to_vec(ctx)?, v.shape())
            }
        }
    }

    pub fn cpu(&self, q: &[f32], k: &[f32], v: &[f32], d: &AttnDims) -> Result<Vec<f64>> {
        let none = Affine::default();
        match self {
            Op::Linear(o) => cpu::linear_attention(q, k, v, d, o),
            Op::Favor { omega, opts, .. } => cpu::favor_attention(q, k, v, d, omega, opts),
            Op::Softmax(o) => cpu::softmax_attention(q, k, v, d, o),
            Op::SoftmaxPositional { opts, pos, heads } => {
                cpu::positional::softmax_attention_positional(q, k, v, d, *heads, opts, pos)
            }
            Op::Norm(o) => cpu::norm_attention(q, k, v, d, &none, o),
            Op::Diag(o) => cpu::diag_attention(q, k, v, d, &none, o),
            Op::Lightning {
                opts,
                slopes,
                heads,
            } => cpu::lightning_attention(q, k, v, d, *heads, slopes.as_deref(), opts),
            Op::Gla { g, scale } => {
                let f = |x: &[f32]| -> Vec<f64> { x.iter().map(|&v| v as f64).collect() };
                let (q, k, v, g) = (f(q), f(k), f(v), f(g));
                let dims = GlaDims {
                    rows: d.rows,
                    len: d.len,
                    dk: d.dk,
                    dv: d.dv,
                };
                let r = GlaRef {
                    q: &q,
                    k: &k,
                    v: &v,
                    g: &g,
                    initial_state: None,
                    scale: scale.map(f64::from),
                };
                Ok(gla_ref(dims, &r)?.0)
            }
        }
    }

    /// On the f32 CPU path (`longseq::cpu`).
    pub fn fast(&self, q: &[f32], k: &[f32], v: &[f32], d: &AttnDims) -> Result<Vec<f64>> {
        use longseq::cpu::attention as fast;
        let none = Affine::default();
        let mut out = vec![0.0f32; d.rows * d.len * d.dv];
        match self {
            Op::Linear(o) => fast::linear_attention_into(q, k, v, d, o, &mut out)?,
            Op::Favor { omega, opts, .. } => {
                fast::favor_attention_into(q, k, v, d, omega, opts, &mut out)?
            }
            Op::Softmax(o) => fast::softmax_attention_into(q, k, v, d, o, &mut out)?,
            Op::SoftmaxPositional { opts, pos, heads } => {
                fast::softmax_attention_positional_into(q, k, v, d, *heads, opts, pos, &mut out)?
            }
            Op::Gla { g, scale } => {
                // The rows (batch · head) are contiguous: one batch of `rows` heads.
                let shape = fast::GlaShape {
                    batch: 1,
                    heads: d.rows,
                    len: d.len,
                    dk: d.dk,
                    dv: d.dv,
                };
                let x = fast::GlaHost {
                    scale: *scale,
                    ..fast::GlaHost::new(q, k, v, g)
                };
                out = fast::gla(shape, &x)?.0;
            }
            Op::Norm(o) => fast::norm_attention(q, k, v, d, &none, o, &mut out)?,
            Op::Diag(o) => fast::diag_attention(q, k, v, d, &none, o, &mut out)?,
            Op::Lightning {
                opts,
                slopes,
                heads,
            } => fast::lightning_attention_into(
                q,
                k,
                v,
                d,
                *heads,
                slopes.as_deref(),
                opts,
                &mut out,
            )?,
        }
        Ok(out.into_iter().map(f64::from).collect())
    }

    /// The `method:` line of the report.
    pub fn describe(&self) -> String {
        let causal = |c: bool| if c { "causal" } else { "non-causal" };
        let scale = |s: Option<f32>| s.map_or("1/sqrt(Dk)".to_string(), |s| s.to_string());
        match self {
            Op::Linear(o) => format!(
                "linear, feature map {}, {}, eps {}, denominator {}",
                o.feature_map.name(),
                causal(o.causal),
                o.eps,
                o.denominator
            ),
            Op::Favor {
                m, opts, source, ..
            } => format!(
                "linear, feature map {}, M = {m} random features (omega: {source}), {}",
                match opts.kind {
                    FavorKind::Positive => "favor",
                    FavorKind::Trig => "favor-trig",
                },
                causal(opts.causal)
            ),
            Op::Softmax(o) => format!("softmax, {}, scale {}", causal(o.causal), scale(o.scale)),
            Op::SoftmaxPositional { opts, pos, .. } => {
                let mut parts = vec![format!(
                    "softmax, {}, scale {}",
                    causal(opts.causal || pos.window.is_some()),
                    scale(opts.scale)
                )];
                if pos.alibi.is_some() {
                    parts.push("ALiBi".into());
                }
                if let Some(n) = pos.log_n_train {
                    parts.push(format!("log-n scale (L_train {n})"));
                }
                if let Some(w) = pos.window {
                    parts.push(format!("window {w}"));
                }
                if let Some(r) = pos.rerope {
                    parts.push(format!(
                        "ReRoPE (window {}, base {}, {} pairs)",
                        r.window,
                        r.base,
                        match r.layout {
                            longseq::positions::RopeLayout::Interleaved => "interleaved",
                            longseq::positions::RopeLayout::HalfSplit => "half",
                        }
                    ));
                }
                parts.join(", ")
            }
            Op::Norm(o) => format!(
                "norm, feature map {}, {}, norm {}, eps {}",
                o.feature_map.name(),
                causal(o.causal),
                o.norm.name(),
                o.eps
            ),
            Op::Diag(o) => format!(
                "diag, block {}, {} weights, {}, scale {}{}",
                o.block,
                match o.weights {
                    longseq::attention::DiagWeights::Relu => "relu",
                    longseq::attention::DiagWeights::Softmax => "softmax",
                },
                causal(o.causal),
                scale(o.scale),
                match o.weights {
                    longseq::attention::DiagWeights::Relu => format!(", norm {}", o.norm.name()),
                    longseq::attention::DiagWeights::Softmax => String::new(),
                }
            ),
            Op::Lightning { opts, slopes, .. } => format!(
                "lightning (causal), block {}, slopes {}",
                opts.block.map_or("auto".into(), |b| b.to_string()),
                slopes.as_ref().map_or("ALiBi".into(), |s| s
                    .iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(", "))
            ),
            Op::Gla { scale: s, .. } => format!("gla (causal, gates g), scale {}", scale(*s)),
        }
    }

    /// Multiply-adds of the f64 reference, for its time estimate.
    pub fn reference_ops(&self, d: &AttnDims) -> f64 {
        let (r, l, dk, dv) = (d.rows as f64, d.len as f64, d.dk as f64, d.dv as f64);
        let keys = |causal: bool| if causal { l / 2.0 } else { l };
        match self {
            Op::Linear(_) | Op::Norm(_) | Op::Lightning { .. } | Op::Gla { .. } => {
                r * l * dk * dv * 2.0
            }
            Op::Favor { m, .. } => r * l * *m as f64 * (2.0 * dk + dv),
            Op::Softmax(o) => r * l * keys(o.causal) * (dk + dv),
            // The dense masked reference visits every key.
            Op::SoftmaxPositional { .. } => r * l * l * (dk + dv + 8.0),
            Op::Diag(o) => r * l * (o.block as f64).min(l) * (dk + dv),
        }
    }

    /// Whether the stored exact non-causal softmax output is a like-for-like target, and what the
    /// comparison then measures: softmax itself (default scale, no position terms) reproduces it;
    /// non-causal FAVOR+ is an unbiased estimator of it. Other methods compute something else.
    pub fn compares_to_softmax(&self) -> Option<&'static str> {
        match self {
            Op::Softmax(o) if !o.causal && o.scale.is_none() => {
                Some("should match to f32 rounding")
            }
            Op::Favor { opts, .. } if !opts.causal => Some("FAVOR+ estimates it"),
            _ => None,
        }
    }
}
