//! Issue 14 for exact softmax attention and DiagAttention: grouped heads (GQA/MQA), Lq ≠ Lk, the
//! [B, L, H, D] layout through strides, and packed variable-length sequences (cu_seqlens), each
//! against the per-query f64 reference (`reference::attention::softmax_attention_batch`), both
//! tile families, f32 and f16 (native and packed), outputs poisoned with NaN first (tokens past
//! the last packed offset must stay NaN).

use crate::attend_common;
use crate::common;

use attend_common::{assert_close_elementwise, fctx, FAMILIES};
use common::*;
use longseq::attention::{
    diag_attention_into, softmax_attention_into, softmax_attention_positional_into, Affine, Alibi,
    AttentionTiles, DiagAttentionOptions, DiagWeights, PositionalOptions, ReRope,
    SoftmaxAttentionOptions,
};
use longseq::reference::attention::{diag_attention_batch, softmax_attention_batch};
use longseq::types::batch::{CuSeqlens, GqaDims, Layout};
use longseq::types::RopeLayout;
use longseq::{Context, Element, Error, Tensor};

const CU: [i64; 6] = [0, 15, 100, 300, 1200, 2000];

/// q, k, v of the given (B, H, L, D) sizes in `layout`, random.
struct Case {
    b: usize,
    hq: usize,
    hkv: usize,
    lq: usize,
    lk: usize,
    dk: usize,
    dv: usize,
}

impl Case {
    fn shapes(&self, layout: Layout) -> [[usize; 4]; 3] {
        [
            layout.shape(self.b, self.hq, self.lq, self.dk),
            layout.shape(self.b, self.hkv, self.lk, self.dk),
            layout.shape(self.b, self.hkv, self.lk, self.dv),
        ]
    }
}

/// What runs: plain softmax, positional softmax, or DiagAttention.
enum Op<'a> {
    Softmax(SoftmaxAttentionOptions, PositionalOptions<'a>),
    Diag(DiagAttentionOptions),
}

impl Op<'_> {
    fn layout(&self) -> Layout {
        match self {
            Op::Softmax(o, _) => o.layout,
            Op::Diag(o) => o.layout,
        }
    }
}

/// Runs the op into a NaN-poisoned output and the reference on the same (dtype-rounded)
/// inputs; checks normwise and elementwise at `tol`, and that k was not modified.
fn check<T: Element>(ctx: &Context, c: &Case, op: &Op<'_>, seed: u64, tol: f64, label: &str) {
    let layout = op.layout();
    let [qs, ks, vs] = c.shapes(layout);
    let mut r = rng(seed);
    let conv = |x: Vec<f32>| x.iter().map(|&v| T::from_f64(v as f64)).collect::<Vec<T>>();
    let q = conv(randn(&mut r, qs.iter().product(), 1.0));
    let k = conv(randn(&mut r, ks.iter().product(), 1.0));
    let v = conv(randn(&mut r, vs.iter().product(), 1.0));
    let g = GqaDims::check("test", &qs, &ks, &vs, layout, false).unwrap();
    let tq = Tensor::from_slice(ctx, &q, &qs).unwrap();
    let tk = Tensor::from_slice(ctx, &k, &ks).unwrap();
    let tv = Tensor::from_slice(ctx, &v, &vs).unwrap();
    let out = Tensor::<T>::nan(ctx, &g.out_shape).unwrap();
    let want = match op {
        Op::Softmax(o, pos) => {
            if *pos == PositionalOptions::default() {
                softmax_attention_into(ctx, &tq, &tk, &tv, &out, o).unwrap();
            } else {
                softmax_attention_positional_into(ctx, &tq, &tk, &tv, &out, o, pos).unwrap();
            }
            softmax_attention_batch(&q, &k, &v, &g, o, pos).unwrap()
        }
        Op::Diag(o) => {
            diag_attention_into(ctx, &tq, &tk, &tv, &Affine::default(), &out, o).unwrap();
            diag_attention_batch(&q, &k, &v, &g, o).unwrap()
        }
    };
    let got = to_f64(&out.to_vec(ctx).unwrap());
    assert_close(label, &got, &want, tol);
    assert_close_elementwise(label, &got, &want, 10.0 * tol);
    let bits = |x: &[T]| bytemuck::cast_slice::<T, u8>(x).to_vec();
    assert!(
        bits(&tk.to_vec(ctx).unwrap()) == bits(&k),
        "{label}: k was modified"
    );
}

fn soft(causal: bool, layout: Layout, cu: Option<&[i64]>, len: usize) -> SoftmaxAttentionOptions {
    SoftmaxAttentionOptions {
        causal,
        layout,
        cu_seqlens: cu.map(|c| CuSeqlens::new("test", c, len).unwrap()),
        ..Default::default()
    }
}

const LAYOUTS: [Layout; 2] = [Layout::Bhld, Layout::Blhd];

#[test]
fn gqa_mqa_and_cross_lengths_both_layouts() {
    let mut seed = 1;
    for fam in FAMILIES {
        let ctx = fctx(fam, true);
        for layout in LAYOUTS {
            for hkv in [2, 1, 6] {
                // Non-causal cross-attention (Lq ≠ Lk) and causal self-attention.
                for (lq, lk, causal) in [(37, 53, false), (70, 9, false), (45, 45, true)] {
                    seed += 1;
                    let c = Case {
                        b: 2,
                        hq: 6,
                        hkv,
                        lq,
                        lk,
                        dk: 24,
                        dv: 20,
                    };
                    let op = Op::Softmax(soft(causal, layout, None, lq), Default::default());
                    let label = format!("{fam:?} {layout:?} Hkv={hkv} Lq={lq} Lk={lk} c={causal}");
                    check::<f32>(ctx, &c, &op, seed, TOL_F32, &label);
                }
            }
        }
    }
}

#[test]
fn gqa_f16_native_and_packed() {
    let mut seed = 50;
    for fam in FAMILIES {
        for native in [true, false] {
            let ctx = fctx(fam, native);
            for layout in LAYOUTS {
                seed += 1;
                let c = Case {
                    b: 2,
                    hq: 6,
                    hkv: 2,
                    lq: 33,
                    lk: 71,
                    dk: 40,
                    dv: 17,
                };
                let op = Op::Softmax(soft(false, layout, None, 33), Default::default());
                let label = format!("f16 {fam:?} native={native} {layout:?}");
                check::<longseq::half::f16>(ctx, &c, &op, seed, TOL_F16, &label);
            }
        }
    }
}

/// fla's test shapes (B, T, H, D), causal and not, in [B, T, H, D].
#[test]
fn fla_shapes_blhd() {
    let mut seed = 100;
    for fam in FAMILIES {
        let ctx = fctx(fam, true);
        for (b, t, h, d) in [(1, 63, 1, 64), (2, 500, 3, 60), (2, 1000, 3, 128)] {
            for causal in [false, true] {
                seed += 1;
                let c = Case {
                    b,
                    hq: h,
                    hkv: h,
                    lq: t,
                    lk: t,
                    dk: d,
                    dv: d,
                };
                let op = Op::Softmax(soft(causal, Layout::Blhd, None, t), Default::default());
                let label = format!("{fam:?} fla ({b}, {t}, {h}, {d}) causal={causal}");
                check::<f32>(ctx, &c, &op, seed, TOL_F32, &label);
            }
        }
    }
}

/// cu_seqlens = [0, 15, 100, 300, 1200, 2000] packed in L = 2011 (11 tokens past the last
/// offset stay NaN), GQA 6 → 2, both layouts, causal and not.
#[test]
fn varlen_softmax() {
    let mut seed = 200;
    for fam in FAMILIES {
        let ctx = fctx(fam, true);
        for layout in LAYOUTS {
            for causal in [false, true] {
                seed += 1;
                let c = Case {
                    b: 1,
                    hq: 6,
                    hkv: 2,
                    lq: 2011,
                    lk: 2011,
                    dk: 32,
                    dv: 24,
                };
                let op = Op::Softmax(soft(causal, layout, Some(&CU), 2011), Default::default());
                let label = format!("{fam:?} varlen {layout:?} causal={causal}");
                check::<f32>(ctx, &c, &op, seed, TOL_F32, &label);
            }
        }
    }
}

/// f16 with packed sequences against the reference, native f16 storage and without SHADER_F16
/// (the staged output starts from the poison: tokens past the last offset stay NaN).
#[test]
fn varlen_f16() {
    let mut seed = 300;
    let cu = [0, 7, 7, 60, 130];
    let c = Case {
        b: 1,
        hq: 3,
        hkv: 1,
        lq: 137,
        lk: 137,
        dk: 16,
        dv: 9,
    };
    for fam in FAMILIES {
        seed += 1;
        let op = Op::Softmax(soft(true, Layout::Blhd, Some(&cu), 137), Default::default());
        let label = format!("f16 {fam:?} varlen");
        check::<longseq::half::f16>(fctx(fam, true), &c, &op, seed, TOL_F16, &label);
        let label = format!("f16 packed {fam:?} varlen");
        check::<longseq::half::f16>(fctx(fam, false), &c, &op, seed, TOL_F16, &label);
    }
}

/// Positions restart per sequence: ALiBi distances, windows, log-n counts and ReRoPE (its
/// kernel is `attend`, whatever the family).
#[test]
fn varlen_positional() {
    let cu = [0, 15, 100, 300, 333];
    let slopes = [0.5f32, 0.25, 0.125, 0.0625];
    let positionals = [
        PositionalOptions {
            alibi: Some(Alibi::Standard),
            ..Default::default()
        },
        PositionalOptions {
            alibi: Some(Alibi::Slopes(&slopes)),
            window: Some(20),
            ..Default::default()
        },
        PositionalOptions {
            window: Some(7),
            log_n_train: Some(16),
            ..Default::default()
        },
        PositionalOptions {
            rerope: Some(ReRope {
                window: 12,
                base: 10_000.0,
                layout: RopeLayout::HalfSplit,
            }),
            ..Default::default()
        },
    ];
    let mut seed = 400;
    for fam in FAMILIES {
        let ctx = fctx(fam, true);
        for layout in LAYOUTS {
            for (n, pos) in positionals.iter().enumerate() {
                for causal in [false, true] {
                    seed += 1;
                    let c = Case {
                        b: 1,
                        hq: 4,
                        hkv: 2,
                        lq: 341,
                        lk: 341,
                        dk: 16,
                        dv: 12,
                    };
                    let op = Op::Softmax(soft(causal, layout, Some(&cu), 341), *pos);
                    let label = format!("{fam:?} {layout:?} positional #{n} causal={causal}");
                    check::<f32>(ctx, &c, &op, seed, TOL_F32, &label);
                }
            }
        }
    }
}

/// Grouped heads and layouts with position terms, no packing.
#[test]
fn gqa_positional_blhd() {
    let pos = PositionalOptions {
        alibi: Some(Alibi::Standard),
        log_n_train: Some(8),
        ..Default::default()
    };
    let mut seed = 500;
    for fam in FAMILIES {
        let ctx = fctx(fam, true);
        for causal in [false, true] {
            seed += 1;
            let c = Case {
                b: 2,
                hq: 6,
                hkv: 1,
                lq: 77,
                lk: 77,
                dk: 20,
                dv: 8,
            };
            let op = Op::Softmax(soft(causal, Layout::Blhd, None, 77), pos);
            check::<f32>(
                ctx,
                &c,
                &op,
                seed,
                TOL_F32,
                &format!("{fam:?} alibi gqa c={causal}"),
            );
        }
    }
}

/// DiagAttention (softmax weights) with blocks restarting per sequence, both layouts.
#[test]
fn diag_layout_and_varlen() {
    let mut seed = 600;
    for fam in FAMILIES {
        let ctx = fctx(fam, true);
        for layout in LAYOUTS {
            for causal in [false, true] {
                for cu in [None, Some(&CU[..])] {
                    seed += 1;
                    let c = Case {
                        b: 1,
                        hq: 3,
                        hkv: 3,
                        lq: 2011,
                        lk: 2011,
                        dk: 32,
                        dv: 16,
                    };
                    let o = DiagAttentionOptions {
                        block: 64,
                        causal,
                        layout,
                        cu_seqlens: cu.map(|c| CuSeqlens::new("test", c, 2011).unwrap()),
                        ..Default::default()
                    };
                    let label = format!("{fam:?} diag {layout:?} c={causal} cu={}", cu.is_some());
                    check::<f32>(ctx, &c, &Op::Diag(o), seed, TOL_F32, &label);
                }
            }
        }
    }
    // Relu weights with a blhd layout (the norm runs per token): against bhld on the same data.
    let ctx = fctx(AttentionTiles::Cpu, true);
    let (b, h, l, d) = (2, 3, 50, 8);
    let x: Vec<f32> = randn(&mut rng(7), b * h * l * d, 1.0);
    let bhld = Tensor::from_slice(ctx, &x, &[b, h, l, d]).unwrap();
    let mut xt = vec![0.0f32; x.len()];
    let (sb, sl) = (Layout::Bhld.strides(h, l, d), Layout::Blhd.strides(h, l, d));
    for (bi, hi, ti, di) in itertools_product(b, h, l, d) {
        xt[sl.index(bi, hi, ti, di)] = x[sb.index(bi, hi, ti, di)];
    }
    let blhd = Tensor::from_slice(ctx, &xt, &[b, l, h, d]).unwrap();
    let relu = DiagAttentionOptions {
        block: 16,
        weights: DiagWeights::Relu,
        ..Default::default()
    };
    let relu_t = DiagAttentionOptions {
        layout: Layout::Blhd,
        ..relu.clone()
    };
    let a = longseq::attention::diag_attention(ctx, &bhld, &bhld, &bhld, &Affine::default(), &relu)
        .unwrap()
        .to_vec(ctx)
        .unwrap();
    let t =
        longseq::attention::diag_attention(ctx, &blhd, &blhd, &blhd, &Affine::default(), &relu_t)
            .unwrap()
            .to_vec(ctx)
            .unwrap();
    for (bi, hi, ti, di) in itertools_product(b, h, l, d) {
        let (u, w) = (a[sb.index(bi, hi, ti, di)], t[sl.index(bi, hi, ti, di)]);
        assert!(
            (u - w).abs() <= 1e-6 * (1.0 + u.abs()),
            "relu blhd {u} vs {w}"
        );
    }
}

fn itertools_product(b: usize, h: usize, l: usize, d: usize) -> Vec<(usize, usize, usize, usize)> {
    let mut v = Vec::new();
    for bi in 0..b {
        for hi in 0..h {
            for ti in 0..l {
                for di in 0..d {
                    v.push((bi, hi, ti, di));
                }
            }
        }
    }
    v
}

/// Bad batches are typed errors: causal with Lq ≠ Lk, Hkv not dividing Hq, cu_seqlens with
/// B > 1 or past L, relu DiagAttention with packed sequences; the CPU path refuses both.
#[test]
fn bad_batches_are_typed_errors() {
    let ctx = fctx(AttentionTiles::Cpu, true);
    let t =
        |s: &[usize]| Tensor::<f32>::from_slice(ctx, &vec![0.5; s.iter().product()], s).unwrap();
    let opts = |causal| soft(causal, Layout::Bhld, None, 0);
    let (q, k) = (t(&[1, 4, 8, 5]), t(&[1, 2, 9, 5]));
    let e = longseq::attention::softmax_attention(ctx, &q, &k, &k, &opts(true)).map(|_| ());
    assert!(matches!(e, Err(Error::Shape { name: "k", .. })), "{e:?}");
    assert!(longseq::attention::softmax_attention(ctx, &q, &k, &k, &opts(false)).is_ok());
    let k3 = t(&[1, 3, 8, 5]);
    let e = longseq::attention::softmax_attention(ctx, &q, &k3, &k3, &opts(false)).map(|_| ());
    assert!(matches!(e, Err(Error::Shape { name: "k", .. })), "{e:?}");
    let cu = CuSeqlens::new("test", &[0, 3, 8], 8).unwrap();
    let packed = SoftmaxAttentionOptions {
        cu_seqlens: Some(cu.clone()),
        ..Default::default()
    };
    let q2 = t(&[2, 4, 8, 5]);
    let e = longseq::attention::softmax_attention(ctx, &q2, &q2, &q2, &packed).map(|_| ());
    assert!(matches!(e, Err(Error::Shape { .. })), "{e:?}");
    let q6 = t(&[1, 4, 6, 5]);
    let e = longseq::attention::softmax_attention(ctx, &q6, &q6, &q6, &packed).map(|_| ());
    assert!(
        matches!(
            e,
            Err(Error::InvalidArgument {
                name: "cu_seqlens",
                ..
            })
        ),
        "{e:?}"
    );
    let relu = DiagAttentionOptions {
        weights: DiagWeights::Relu,
        cu_seqlens: Some(cu.clone()),
        ..Default::default()
    };
    let q8 = t(&[1, 4, 8, 5]);
    let e = longseq::attention::diag_attention(ctx, &q8, &q8, &q8, &Affine::default(), &relu)
        .map(|_| ());
    assert!(
        matches!(
            e,
            Err(Error::InvalidArgument {
                name: "cu_seqlens",
                ..
            })
        ),
        "{e:?}"
    );
    // The f32 CPU path reads plain [R, L, D] rows only.
    let d =
        longseq::types::attention::check_shapes("t", &[4, 8, 5], &[4, 8, 5], &[4, 8, 5]).unwrap();
    let x = vec![0.5f32; 160];
    let e = longseq::cpu::attention::softmax::softmax_attention(&x, &x, &x, &d, &packed);
    assert!(
        matches!(
            e,
            Err(Error::InvalidArgument {
                name: "cu_seqlens",
                ..
            })
        ),
        "{e:?}"
    );
    let blhd = SoftmaxAttentionOptions {
        layout: Layout::Blhd,
        ..Default::default()
    };
    let e = longseq::cpu::attention::softmax::softmax_attention(&x, &x, &x, &d, &blhd);
    assert!(
        matches!(e, Err(Error::InvalidArgument { name: "layout", .. })),
        "{e:?}"
    );
}
