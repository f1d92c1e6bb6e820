//! Issue 14 for RoPE: the [B, L, H, D] layout through the kernel's position index, and packed
//! sequences (positions restart per sequence, each sequence's own dynamic-NTK frequencies,
//! tokens past the last offset untouched), against the per-sequence f64 reference
//! (`reference::positions::rope_batch`), f32 and f16 (native and packed), every scaling.

use crate::common;

use common::*;
use longseq::positions::{rope, rope_into, Positions, RopeLayout, RopeOptions, RopeScaling};
use longseq::reference::positions::rope_batch;
use longseq::types::batch::{CuSeqlens, Layout};
use longseq::{Context, Element, Error, Tensor};

fn scalings() -> [RopeScaling; 5] {
    [
        RopeScaling::None,
        RopeScaling::Linear { factor: 4.0 },
        RopeScaling::Ntk { factor: 8.0 },
        RopeScaling::DynamicNtk {
            factor: 2.0,
            original_length: 300,
        },
        RopeScaling::Yarn {
            factor: 4.0,
            original_length: 256,
            alpha: 1.0,
            beta: 32.0,
        },
    ]
}

/// GPU into a NaN-poisoned output vs the reference; returns the normwise error after checking
/// the NaN pattern elementwise.
fn run<T: Element>(
    ctx: &Context,
    shape: &[usize],
    pos: Positions<'_>,
    o: &RopeOptions,
    seed: u64,
) -> f64 {
    let n = shape.iter().product();
    let x: Vec<T> = randn(&mut rng(seed), n, 1.0)
        .iter()
        .map(|&v| T::from_f64(v as f64))
        .collect();
    let tx = Tensor::from_slice(ctx, &x, shape).unwrap();
    let out = Tensor::<T>::nan(ctx, shape).unwrap();
    rope_into(ctx, &tx, pos, &out, o).unwrap();
    let got = to_f64(&out.to_vec(ctx).unwrap());
    let want = rope_batch(&x, shape, pos, o).unwrap();
    assert_eq!(
        to_f64(&tx.to_vec(ctx).unwrap()),
        to_f64(&x),
        "x was modified"
    );
    // The NaN pattern (untouched tokens) elementwise; accuracy normwise below.
    let (e, i) = elem_err(&got, &want, 1e-2, 1e-2);
    assert!(
        e.is_finite(),
        "element {i}: gpu {} vs ref {}",
        got[i],
        want[i]
    );
    rel_err(&got, &want)
}

fn opts(
    scaling: RopeScaling,
    pairs: RopeLayout,
    layout: Layout,
    cu: Option<&[i64]>,
    len: usize,
) -> RopeOptions {
    RopeOptions {
        scaling,
        layout: pairs,
        seq_layout: layout,
        cu_seqlens: cu.map(|c| CuSeqlens::new("test", c, len).unwrap()),
        ..Default::default()
    }
}

/// fla's shapes (B, T, H, D) in [B, T, H, D], every scaling, both pair layouts.
#[test]
fn blhd_matches_the_reference_at_fla_shapes() {
    let mut seed = 1;
    for (b, t, h, d) in [(1, 63, 1, 64), (2, 500, 3, 60), (2, 1000, 3, 128)] {
        for s in scalings() {
            for pairs in [RopeLayout::Interleaved, RopeLayout::HalfSplit] {
                seed += 1;
                let o = opts(s, pairs, Layout::Blhd, None, t);
                let e = run::<f32>(ctx(), &[b, t, h, d], Positions::Offset(5), &o, seed);
                assert!(
                    e <= TOL_F32,
                    "({b}, {t}, {h}, {d}) {s:?} {pairs:?}: {e:.2e}"
                );
            }
        }
    }
}

/// cu_seqlens = [0, 15, 100, 300, 1200, 2000] in L = 2011, both layouts, offsets and explicit
/// positions; f16 native and packed.
#[test]
fn varlen_positions_restart_per_sequence() {
    let cu = [0i64, 15, 100, 300, 1200, 2000];
    let explicit: Vec<u32> = (0..2011u32).map(|t| (t * 7) % 3001).collect();
    let mut seed = 100;
    for layout in [Layout::Bhld, Layout::Blhd] {
        let shape = layout.shape(1, 3, 2011, 24);
        for s in scalings() {
            for pos in [
                Positions::Offset(0),
                Positions::Offset(1000),
                Positions::Explicit(&explicit),
            ] {
                seed += 1;
                let o = opts(s, RopeLayout::HalfSplit, layout, Some(&cu), 2011);
                let e = run::<f32>(ctx(), &shape, pos, &o, seed);
                assert!(e <= TOL_F32, "{layout:?} {s:?} {pos:?}: {e:.2e}");
            }
        }
        seed += 1;
        let dyn_ntk = RopeScaling::DynamicNtk {
            factor: 2.0,
            original_length: 64,
        };
        let o = opts(dyn_ntk, RopeLayout::Interleaved, layout, Some(&cu), 2011);
        let e = run::<longseq::half::f16>(ctx(), &shape, Positions::Offset(3), &o, seed);
        assert!(e <= TOL_F16, "f16 {layout:?}: {e:.2e}");
        // Without SHADER_F16 the staged output starts from the poison: untouched tokens stay NaN.
        let e = run::<longseq::half::f16>(ctx_packed(), &shape, Positions::Offset(3), &o, seed);
        assert!(e <= TOL_F16, "f16 packed {layout:?}: {e:.2e}");
    }
}

/// A sequence rotated inside a pack equals the same sequence rotated alone.
#[test]
fn packed_sequence_equals_its_own_call() {
    let c = ctx();
    let (l, h, d) = (130, 2, 16);
    let x = randn(&mut rng(9), l * h * d, 1.0);
    let tx = Tensor::from_slice(c, &x, &[1, l, h, d]).unwrap();
    let s = RopeScaling::DynamicNtk {
        factor: 2.0,
        original_length: 20,
    };
    let o = opts(
        s,
        RopeLayout::Interleaved,
        Layout::Blhd,
        Some(&[0, 50, 130]),
        l,
    );
    let packed = rope(c, &tx, Positions::Offset(0), &o)
        .unwrap()
        .to_vec(c)
        .unwrap();
    let alone_x = x[50 * h * d..].to_vec();
    let ta = Tensor::from_slice(c, &alone_x, &[1, 80, h, d]).unwrap();
    let oa = opts(s, RopeLayout::Interleaved, Layout::Blhd, None, 80);
    let alone = rope(c, &ta, Positions::Offset(0), &oa)
        .unwrap()
        .to_vec(c)
        .unwrap();
    assert_eq!(&packed[50 * h * d..], &alone[..]);
}

#[test]
fn bad_batches_are_typed_errors() {
    let c = ctx();
    let t = |s: &[usize]| Tensor::<f32>::from_slice(c, &vec![0.5; s.iter().product()], s).unwrap();
    let cu = |l| Some(CuSeqlens::new("test", &[0, 3, 8], l).unwrap());
    let packed = RopeOptions {
        cu_seqlens: cu(8),
        ..Default::default()
    };
    let e = rope(c, &t(&[2, 2, 8, 4]), Positions::Offset(0), &packed).map(|_| ());
    assert!(matches!(e, Err(Error::Shape { .. })), "{e:?}");
    let e = rope(c, &t(&[1, 2, 6, 4]), Positions::Offset(0), &packed).map(|_| ());
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
    let blhd = RopeOptions {
        seq_layout: Layout::Blhd,
        ..Default::default()
    };
    let e = rope(c, &t(&[2, 8, 4]), Positions::Offset(0), &blhd).map(|_| ());
    assert!(matches!(e, Err(Error::Shape { .. })), "{e:?}");
    // The f32 CPU path reads plain rows only.
    let x = vec![0.5f32; 64];
    let e = longseq::cpu::positions::rope(&x, &[2, 8, 4], Positions::Offset(0), &blhd);
    assert!(
        matches!(
            e,
            Err(Error::InvalidArgument {
                name: "seq_layout",
                ..
            })
        ),
        "{e:?}"
    );
    let e = longseq::cpu::positions::rope(&x, &[1, 2, 8, 4], Positions::Offset(0), &packed);
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
}
