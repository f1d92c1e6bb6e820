//! Shapes, options and their checks for the attention ops, shared by the GPU ops
//! ([`crate::attention`]) and the CPU reference ([`crate::reference::attention`]).

use std::str::FromStr;

use nalgebra::DMatrix;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::batch::CuSeqlens;
use super::{FeatureMap, GqaDims, Layout, RopeLayout};
use crate::{Error, Result};

/// The op named in errors from the positional checks.
const POSITIONAL_OP: &str = "softmax_attention";

/// Options for [`linear_attention`](crate::attention::linear_attention) and the CPU reference
/// [`crate::reference::attention::linear_attention`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearAttentionOptions {
    /// φ, applied to Q and K.
    pub feature_map: FeatureMap,
    /// Sum over `j ≤ i` only.
    pub causal: bool,
    /// Added to the denominator (default 1e-6). Denominator guard: a row whose denominator is
    /// exactly 0 (ε = 0 and every weight `φ(q_i)·φ(k_j)` 0, e.g. relu of a query ≤ 0, or
    /// features that underflow) outputs 0, never 0/0 = NaN; the CPU reference does the same.
    pub eps: f32,
    /// Divide by `φ(Q_i)ᵀ z + ε` (default true). Off, the output is the numerator alone.
    pub denominator: bool,
    /// Memory layout of q, k, v and the output (default [`Layout::Bhld`], `[B, H, L, D]`);
    /// [`Layout::Blhd`] reads fla's `[B, L, H, D]` through strides and needs rank-4 tensors.
    pub layout: Layout,
}

impl Default for LinearAttentionOptions {
    fn default() -> Self {
        Self {
            feature_map: FeatureMap::Elu1,
            causal: false,
            eps: 1e-6,
            denominator: true,
            layout: Layout::Bhld,
        }
    }
}

/// Sizes of one attention call: `rows` = product of the leading dims (B·H).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttnDims {
    /// Rows R = product of the leading dims (B·H).
    pub rows: usize,
    /// Sequence length L.
    pub len: usize,
    /// Head dim of q and k.
    pub dk: usize,
    /// Head dim of v.
    pub dv: usize,
    /// Shape of the output: q's leading dims, then [L, Dv].
    pub out_shape: Vec<usize>,
}

/// Checks `q, k: [.., L, Dk]`, `v: [.., L, Dv]` (rank 3 `[H, L, D]` or 4 `[B, H, L, D]`) and
/// returns the sizes. Every dim must be at least 1.
pub fn check_shapes(op: &'static str, q: &[usize], k: &[usize], v: &[usize]) -> Result<AttnDims> {
    if !(q.len() == 3 || q.len() == 4) {
        return Err(Error::Shape {
            op,
            name: "q",
            expected: "[H, L, Dk] or [B, H, L, Dk]".into(),
            got: q.to_vec(),
        });
    }
    if q.contains(&0) {
        return Err(Error::Shape {
            op,
            name: "q",
            expected: "every dim >= 1".into(),
            got: q.to_vec(),
        });
    }
    if k != q {
        return Err(Error::Shape {
            op,
            name: "k",
            expected: format!("{q:?} (the shape of q)"),
            got: k.to_vec(),
        });
    }
    let r = q.len();
    if v.len() != r || v[..r - 1] != q[..r - 1] || v[r - 1] == 0 {
        return Err(Error::Shape {
            op,
            name: "v",
            expected: format!("{:?} + [Dv >= 1] (q's leading dims and L)", &q[..r - 1]),
            got: v.to_vec(),
        });
    }
    let mut out_shape = q.to_vec();
    out_shape[r - 1] = v[r - 1];
    Ok(AttnDims {
        rows: q[..r - 2].iter().product(),
        len: q[r - 2],
        dk: q[r - 1],
        dv: v[r - 1],
        out_shape,
    })
}

/// Checks q, k, v of an op that takes grouped heads and separate query/key lengths
/// ([`GqaDims::check`]) in `layout`: q `[B, Hq, Lq, Dk]`, k `[B, Hkv, Lk, Dk]`, v `[B, Hkv, Lk, Dv]`
/// (or `[B, L, H, D]` each). With [`Layout::Bhld`], rank-3 `[H, L, D]` tensors are one batch
/// entry, and the output keeps rank 3.
///
/// # Errors
/// [`Error::Shape`] as [`GqaDims::check`]; [`Layout::Blhd`] with a rank other than 4.
pub fn check_gqa(
    op: &'static str,
    q: &[usize],
    k: &[usize],
    v: &[usize],
    layout: Layout,
    causal: bool,
) -> Result<GqaDims> {
    let rank3 = layout == Layout::Bhld && q.len() == 3 && k.len() == 3 && v.len() == 3;
    if !rank3 {
        return GqaDims::check(op, q, k, v, layout, causal);
    }
    let one = |s: &[usize]| [&[1][..], s].concat();
    let mut g = GqaDims::check(op, &one(q), &one(k), &one(v), layout, causal)?;
    g.out_shape.remove(0);
    Ok(g)
}

pub(crate) fn check_options(op: &'static str, opts: &LinearAttentionOptions) -> Result<()> {
    check_eps(op, opts)
}

/// [`check_options`] for the paths that read `[R, L, D]` rows ([`AttnDims`]): they take
/// [`Layout::Bhld`] only, so a `[B, L, H, D]` tensor is never misread.
pub(crate) fn check_rows_options(op: &'static str, opts: &LinearAttentionOptions) -> Result<()> {
    if opts.layout != Layout::Bhld {
        return Err(Error::InvalidArgument {
            op,
            name: "layout",
            reason: format!(
                "{} is not supported here yet (rows [R, L, D] are bhld)",
                opts.layout.name()
            ),
        });
    }
    check_eps(op, opts)
}

fn check_eps(op: &'static str, opts: &LinearAttentionOptions) -> Result<()> {
    if !(opts.eps.is_finite() && opts.eps >= 0.0) {
        return Err(Error::InvalidArgument {
            op,
            name: "eps",
            reason: format!("{} is not a finite number >= 0", opts.eps),
        });
    }
    Ok(())
}

/// Options for [`softmax_attention`](crate::attention::softmax_attention) and the CPU reference
/// [`crate::reference::attention::softmax_attention`].
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SoftmaxAttentionOptions {
    /// Query `i` attends to keys `j ≤ i` only.
    pub causal: bool,
    /// Multiplies `Q Kᵀ`; `None` means `1/√Dk` (Vaswani et al. 2017).
    pub scale: Option<f32>,
    /// Memory order of q, k, v and the output (default `[B, H, L, D]`).
    pub layout: Layout,
    /// Packed variable-length sequences (B = 1, Lq = Lk): query `i` sees only keys of its own
    /// sequence, positions (ALiBi distances, windows) restart per sequence, and outputs past the
    /// last offset are left untouched.
    pub cu_seqlens: Option<CuSeqlens>,
}

impl SoftmaxAttentionOptions {
    /// The scale actually applied for head dim `dk`: `scale`, or `1/√dk` rounded to f32. The GPU
    /// and the CPU reference both use this f32 value.
    pub fn scale_for(&self, dk: usize) -> f32 {
        self.scale
            .unwrap_or_else(|| (1.0 / (dk as f64).sqrt()) as f32)
    }
}

pub(crate) fn check_scale(op: &'static str, scale: Option<f32>) -> Result<()> {
    match scale {
        Some(s) if !s.is_finite() => Err(Error::InvalidArgument {
            op,
            name: "scale",
            reason: format!("{s} is not finite"),
        }),
        _ => Ok(()),
    }
}

/// Options for [`lightning_attention`](crate::attention::lightning_attention) and the CPU reference
/// [`crate::reference::attention::lightning_attention`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LightningOptions {
    /// Rows per block; `None` picks the largest of 64, 32, 16, 8 whose B×B score tile fits the
    /// device's workgroup memory. Any B ≥ 1 that fits is valid; the result does not depend on it.
    pub block: Option<u32>,
    /// φ applied to q and k inside the kernel. The papers apply their activation outside, so the
    /// default is [`FeatureMap::Identity`].
    pub feature_map: FeatureMap,
    /// Memory layout of q, k, v and the output (default [`Layout::Bhld`]); [`Layout::Blhd`]
    /// reads `[B, L, H, D]` through strides and needs rank-4 tensors.
    pub layout: Layout,
}

impl Default for LightningOptions {
    fn default() -> Self {
        Self {
            block: None,
            feature_map: FeatureMap::Identity,
            layout: Layout::Bhld,
        }
    }
}

/// ALiBi slopes (Press et al. 2022), TransNormerLLM's default decay rates: `s_h = 2^(−8(h+1)/H)`
/// for H a power of two; otherwise the slopes of the nearest power of two below H followed by
/// every other slope of twice that many, as in the ALiBi reference code.
pub fn alibi_slopes(heads: usize) -> Vec<f32> {
    fn pow2(n: usize) -> Vec<f64> {
        (1..=n)
            .map(|h| 2f64.powf(-8.0 * h as f64 / n as f64))
            .collect()
    }
    if heads == 0 {
        return vec![];
    }
    let p = 1usize << (usize::BITS - 1 - heads.leading_zeros());
    let mut s = pow2(p);
    if p < heads {
        s.extend(pow2(2 * p).into_iter().step_by(2).take(heads - p));
    }
    s.into_iter().map(|x| x as f32).collect()
}

/// Checks `slopes: [H]`, each finite and ≥ 0, or builds the ALiBi ones.
pub(crate) fn resolve_slopes(
    op: &'static str,
    heads: usize,
    slopes: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let Some(s) = slopes else {
        return Ok(alibi_slopes(heads));
    };
    if s.len() != heads {
        return Err(Error::Shape {
            op,
            name: "slopes",
            expected: format!("[{heads}] (one per head)"),
            got: vec![s.len()],
        });
    }
    if let Some(x) = s.iter().find(|x| !(x.is_finite() && **x >= 0.0)) {
        return Err(Error::InvalidArgument {
            op,
            name: "slopes",
            reason: format!("{x} is not a finite decay rate >= 0"),
        });
    }
    Ok(s.to_vec())
}

/// ALiBi slopes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Alibi<'a> {
    /// `2^(−8h/H)` for H a power of two, the reference code's interleaving otherwise
    /// ([`alibi_slopes`]).
    Standard,
    /// One slope per head, `[H]`.
    Slopes(&'a [f32]),
}

/// ReRoPE: rotary inside the kernel with relative positions clipped at `window`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReRope {
    /// Relative positions are clipped at this distance (>= 1).
    pub window: usize,
    /// Rotary base (10 000 in RoFormer).
    pub base: f64,
    /// Pair layout of the rotation.
    pub layout: RopeLayout,
}

/// Position terms for [`softmax_attention_positional`](crate::attention::softmax_attention_positional); the default adds none.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PositionalOptions<'a> {
    /// ALiBi biases, `−slope_h·(i − j)`.
    pub alibi: Option<Alibi<'a>>,
    /// `L_train` for the log-n logit scale (>= 2).
    pub log_n_train: Option<usize>,
    /// Sliding window `w` (>= 1): keys `j ∈ (i − w, i]`, causal whatever `causal` says.
    pub window: Option<usize>,
    /// ReRoPE: rotary with relative positions clipped at a window.
    pub rerope: Option<ReRope>,
}

/// The number of heads H of `q: [H, L, D]` or `[B, H, L, D]`.
pub fn heads_of(shape: &[usize]) -> usize {
    shape[shape.len() - 3]
}

/// The slopes for `heads` heads, checked.
pub fn slopes_for(alibi: &Alibi<'_>, heads: usize) -> Result<Vec<f32>> {
    match alibi {
        Alibi::Standard => Ok(alibi_slopes(heads)),
        Alibi::Slopes(s) => {
            if s.len() != heads {
                return Err(Error::Shape {
                    op: POSITIONAL_OP,
                    name: "alibi slopes",
                    expected: format!("[{heads}] (H of q)"),
                    got: vec![s.len()],
                });
            }
            if let Some(x) = s.iter().find(|x| !x.is_finite()) {
                return Err(Error::InvalidArgument {
                    op: POSITIONAL_OP,
                    name: "alibi slopes",
                    reason: format!("{x} is not finite"),
                });
            }
            Ok(s.to_vec())
        }
    }
}

/// Checks the position options against head dim `dk`.
pub fn check_positional(pos: &PositionalOptions<'_>, dk: usize) -> Result<()> {
    let bad = |name, reason: String| Error::InvalidArgument {
        op: POSITIONAL_OP,
        name,
        reason,
    };
    if pos.window == Some(0) {
        return Err(bad("window", "must be >= 1".into()));
    }
    if let Some(n) = pos.log_n_train {
        if n < 2 {
            return Err(bad("log_n_train", format!("{n}: ln L_train must be > 0")));
        }
    }
    if let Some(r) = pos.rerope {
        if r.window == 0 {
            return Err(bad("rerope window", "must be >= 1".into()));
        }
        if !(r.base.is_finite() && r.base > 0.0) {
            return Err(bad("rerope base", format!("{} is not > 0", r.base)));
        }
        if !dk.is_multiple_of(2) {
            return Err(bad(
                "rerope",
                format!("Dk = {dk} is odd; rotary needs pairs"),
            ));
        }
    }
    Ok(())
}

/// cos and sin of `Δ·θ_p` for Δ in [−w, w] and pair p: `[2w + 1, D/2, 2]`, f64 -> f32.
pub(crate) fn rerope_table(w: usize, d: usize, base: f64) -> Vec<f32> {
    let mut t = Vec::with_capacity((2 * w + 1) * d);
    for delta in -(w as i64)..=w as i64 {
        for p in 0..d / 2 {
            let phi = delta as f64 * base.powf(-2.0 * p as f64 / d as f64);
            t.push(phi.cos() as f32);
            t.push(phi.sin() as f32);
        }
    }
    t
}

/// Which random features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum FavorKind {
    /// `exp(ωᵀx' − ‖x'‖²/2)`: positive (FAVOR+), F = M features.
    #[default]
    Positive,
    /// `exp(‖x'‖²/2)·[sin(ωᵀx'), cos(ωᵀx')]`: F = 2M features, not positive.
    Trig,
}

impl FavorKind {
    /// Features per position for `m` random directions.
    pub fn num_features(self, m: usize) -> usize {
        match self {
            FavorKind::Positive => m,
            FavorKind::Trig => 2 * m,
        }
    }
}

/// How [`draw_omega`] draws the random directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum OmegaDraw {
    /// Rows i.i.d. N(0, I_d).
    Gaussian,
    /// Blocks of d mutually orthogonal rows (Q of the QR of a d×d Gaussian, sign-fixed), each
    /// row rescaled to the norm of an independent N(0, I_d) draw (chi-distributed), §2.4.
    #[default]
    OrthogonalChi,
    /// Orthogonal blocks, every row of norm √d.
    OrthogonalSqrtD,
}

/// Options for [`favor_attention`](crate::attention::favor_attention) and the CPU reference
/// [`crate::reference::attention::favor_attention`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FavorOptions {
    /// Positive (FAVOR+) or trigonometric features.
    pub kind: FavorKind,
    /// Sum over `j ≤ i` only.
    pub causal: bool,
}

/// ω `[m, dk]` row-major f32, drawn from `seed` (rand's `StdRng`). `m` need not be a multiple
/// of `dk`: the last orthogonal block keeps its first `m mod dk` rows.
/// Errors: [`Error::InvalidArgument`] when `m` or `dk` is 0.
pub fn draw_omega(m: usize, dk: usize, draw: OmegaDraw, seed: u64) -> Result<Vec<f32>> {
    for (name, v) in [("num_features", m), ("dk", dk)] {
        if v == 0 {
            return Err(Error::InvalidArgument {
                op: "draw_omega",
                name,
                reason: "must be >= 1".into(),
            });
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut normal = move || -> f64 { rng.sample(StandardNormal) };
    let mut w = Vec::with_capacity(m * dk);
    if draw == OmegaDraw::Gaussian {
        w.extend((0..m * dk).map(|_| normal() as f32));
        return Ok(w);
    }
    while w.len() < m * dk {
        let g = DMatrix::<f64>::from_fn(dk, dk, |_, _| normal());
        let qr = g.qr();
        let (q, r) = (qr.q(), qr.r());
        // Columns of Q, signs fixed by diag(R) so the block is Haar-distributed.
        for c in 0..dk {
            if w.len() == m * dk {
                break;
            }
            let sign = if r[(c, c)] < 0.0 { -1.0 } else { 1.0 };
            let norm = match draw {
                OmegaDraw::OrthogonalChi => (0..dk).map(|_| normal().powi(2)).sum::<f64>().sqrt(),
                _ => (dk as f64).sqrt(),
            };
            w.extend((0..dk).map(|a| (sign * norm * q[(a, c)]) as f32));
        }
    }
    Ok(w)
}

/// Checks `omega: [M, Dk]` with M >= 1 against the inputs' Dk; returns M.
pub(crate) fn check_omega(op: &'static str, omega: &[usize], dk: usize) -> Result<usize> {
    if omega.len() != 2 || omega[1] != dk {
        return Err(Error::Shape {
            op,
            name: "omega",
            expected: format!("[M, {dk}] (M random directions of q's head dim)"),
            got: omega.to_vec(),
        });
    }
    if omega[0] == 0 {
        return Err(Error::InvalidArgument {
            op,
            name: "omega",
            reason: "M = 0 random features".into(),
        });
    }
    Ok(omega[0])
}

/// The output norm over Dv (`x` one output row, `d = Dv`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Norm {
    /// `x / (‖x‖₂ · d^(−1/2) + ε)`, TransNormer's default.
    #[default]
    SimpleRmsNorm,
    /// `g ⊙ x / (‖x‖₂ · d^(−1/2) + ε) + b` (TransNormer's RMSNorm: ε outside the root).
    RmsNorm,
    /// `g ⊙ (x − mean) / √(var + ε) + b`, biased variance (as torch.nn.LayerNorm).
    LayerNorm,
}

impl Norm {
    /// The name the CLI takes and prints, e.g. `simple-rmsnorm`.
    pub fn name(self) -> &'static str {
        match self {
            Norm::SimpleRmsNorm => "simple-rmsnorm",
            Norm::RmsNorm => "rmsnorm",
            Norm::LayerNorm => "layernorm",
        }
    }

    /// Applies the norm to one row in place (the CPU reference's definition, f64).
    pub fn apply(self, x: &mut [f64], eps: f64, gain: Option<&[f32]>, bias: Option<&[f32]>) {
        let n = x.len() as f64;
        let g = |d: usize| gain.map_or(1.0, |g| g[d] as f64);
        let b = |d: usize| bias.map_or(0.0, |b| b[d] as f64);
        match self {
            Norm::SimpleRmsNorm | Norm::RmsNorm => {
                let rms = x.iter().map(|v| v * v).sum::<f64>().sqrt() / n.sqrt();
                for (d, v) in x.iter_mut().enumerate() {
                    *v = g(d) * (*v / (rms + eps)) + b(d);
                }
            }
            Norm::LayerNorm => {
                let mean = x.iter().sum::<f64>() / n;
                let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                let inv = 1.0 / (var + eps).sqrt();
                for (d, v) in x.iter_mut().enumerate() {
                    *v = g(d) * (*v - mean) * inv + b(d);
                }
            }
        }
    }

    pub(crate) fn shader_id(self) -> u32 {
        match self {
            Norm::SimpleRmsNorm => 0,
            Norm::RmsNorm => 1,
            Norm::LayerNorm => 2,
        }
    }
}

impl FromStr for Norm {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "simple-rmsnorm" => Ok(Norm::SimpleRmsNorm),
            "rmsnorm" => Ok(Norm::RmsNorm),
            "layernorm" => Ok(Norm::LayerNorm),
            _ => Err(format!(
                "unknown norm `{s}` (expected simple-rmsnorm, rmsnorm or layernorm)"
            )),
        }
    }
}

/// The norm's learned parameters, host values of length Dv: gain `g` (default ones) and bias
/// `b` (default zeros). SimpleRMSNorm takes neither.
#[derive(Clone, Copy, Debug, Default)]
pub struct Affine<'a> {
    /// Gain `g`, length Dv; `None` is ones.
    pub gain: Option<&'a [f32]>,
    /// Bias `b`, length Dv; `None` is zeros.
    pub bias: Option<&'a [f32]>,
}

/// Options for [`norm_attention`](crate::attention::norm_attention) and [`crate::reference::attention::norm_attention`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormAttentionOptions {
    /// φ for Q and K; the paper's code uses [`FeatureMap::Elu`] (the default here).
    pub feature_map: FeatureMap,
    /// Sum over `j ≤ i` only.
    pub causal: bool,
    /// The norm applied to the unnormalised output.
    pub norm: Norm,
    /// ε of the norm (default 1e-6).
    pub eps: f32,
}

impl Default for NormAttentionOptions {
    fn default() -> Self {
        Self {
            feature_map: FeatureMap::Elu,
            causal: false,
            norm: Norm::SimpleRmsNorm,
            eps: 1e-6,
        }
    }
}

/// How DiagAttention weighs the keys of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DiagWeights {
    /// `softmax_j(scale · q_i·k_j)` over the block.
    #[default]
    Softmax,
    /// `relu(scale · q_i·k_j)`, the weighted sum then normalised by the options' norm.
    Relu,
}

/// Options for [`diag_attention`](crate::attention::diag_attention) and [`crate::reference::attention::diag_attention`].
#[derive(Clone, Debug, PartialEq)]
pub struct DiagAttentionOptions {
    /// Block length w ≥ 1 (default 64); the last block is ragged.
    pub block: u32,
    /// Causal within and across blocks.
    pub causal: bool,
    /// Logit scale; `None` means `1/√Dk`.
    pub scale: Option<f32>,
    /// Softmax or relu weights inside a block.
    pub weights: DiagWeights,
    /// The norm after relu weights (ignored for softmax).
    pub norm: Norm,
    /// ε of the norm (default 1e-6).
    pub eps: f32,
    /// Memory order of q, k, v and the output (default `[B, H, L, D]`).
    pub layout: Layout,
    /// Packed variable-length sequences (B = 1): blocks restart at each sequence, nothing crosses
    /// a sequence boundary, outputs past the last offset are left untouched (softmax weights only).
    pub cu_seqlens: Option<CuSeqlens>,
}

impl Default for DiagAttentionOptions {
    fn default() -> Self {
        Self {
            block: 64,
            causal: false,
            scale: None,
            weights: DiagWeights::Softmax,
            norm: Norm::SimpleRmsNorm,
            eps: 1e-6,
            layout: Layout::Bhld,
            cu_seqlens: None,
        }
    }
}

impl DiagAttentionOptions {
    /// The logit scale: `scale`, or `1/√Dk` when it is `None`.
    pub fn scale_for(&self, dk: usize) -> f32 {
        self.scale
            .unwrap_or_else(|| (1.0 / (dk as f64).sqrt()) as f32)
    }
}

pub(crate) fn check_norm(
    op: &'static str,
    norm: Norm,
    eps: f32,
    affine: &Affine<'_>,
    dv: usize,
) -> Result<()> {
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::InvalidArgument {
            op,
            name: "eps",
            reason: format!("{eps} is not a finite number >= 0"),
        });
    }
    for (name, x) in [("gain", affine.gain), ("bias", affine.bias)] {
        let Some(x) = x else { continue };
        if norm == Norm::SimpleRmsNorm {
            return Err(Error::InvalidArgument {
                op,
                name: if name == "gain" { "gain" } else { "bias" },
                reason: "simple-rmsnorm has no learned parameters".into(),
            });
        }
        if x.len() != dv {
            return Err(Error::Shape {
                op,
                name: if name == "gain" { "gain" } else { "bias" },
                expected: format!("[{dv}] (Dv)"),
                got: vec![x.len()],
            });
        }
    }
    Ok(())
}

pub(crate) fn check_diag(op: &'static str, o: &DiagAttentionOptions) -> Result<()> {
    if o.block == 0 {
        return Err(Error::InvalidArgument {
            op,
            name: "block",
            reason: "the block length must be >= 1".into(),
        });
    }
    check_scale(op, o.scale)
}

/// The paths that read plain `[R, L, D]` rows (the f32 CPU path, the classic references) take
/// neither a blhd layout nor packed sequences.
pub(crate) fn check_plain(op: &'static str, layout: Layout, cu: Option<&CuSeqlens>) -> Result<()> {
    if layout != Layout::Bhld || cu.is_some() {
        return Err(Error::InvalidArgument {
            op,
            name: if cu.is_some() { "cu_seqlens" } else { "layout" },
            reason: "blhd layouts and packed sequences are not supported on this path (use the \
                     GPU op, or reference::attention::softmax_attention_batch)"
                .into(),
        });
    }
    Ok(())
}
