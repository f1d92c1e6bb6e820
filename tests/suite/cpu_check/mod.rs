//! Comparison for the CPU-path tests: normwise (as tests/common) and elementwise
//! `|cpu − ref| ≤ atol + rtol·|ref|` with `atol` relative to the largest |ref|, same NaN and ±Inf
//! pattern.
#![allow(dead_code)]

use half::f16;
use longseq::Element;

/// f32 CPU path: 1e-5 normwise; elementwise rtol 1e-4 over an atol of 1e-6·max|ref|.
pub const F32: Tol = Tol {
    norm: 1e-5,
    rtol: 1e-4,
    atol: 1e-6,
};
/// f16 storage: the output rounding to f16 dominates.
pub const F16: Tol = Tol {
    norm: 2e-3,
    rtol: 2e-3,
    atol: 2e-4,
};

#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub norm: f64,
    pub rtol: f64,
    pub atol: f64,
}

pub fn tol<T: Element>() -> Tol {
    match T::DTYPE {
        longseq::DType::F32 => F32,
        longseq::DType::F16 => F16,
    }
}

/// Panics with `label` unless `got` matches `want` normwise and elementwise under `t`.
pub fn check<T: Element>(label: &str, got: &[T], want: &[f64], t: Tol) {
    assert_eq!(got.len(), want.len(), "{label}: length");
    let scale = want
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0f64, |m, x| m.max(x.abs()));
    let mut diff = 0.0f64;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let g = g.to_f64();
        if w.is_nan() || !w.is_finite() {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{label}: element {i} is {g}, reference {w}"
            );
            continue;
        }
        assert!(g.is_finite(), "{label}: element {i} is {g}, reference {w}");
        let e = (g - w).abs();
        assert!(
            e <= t.atol * scale + t.rtol * w.abs(),
            "{label}: element {i}: {g} vs reference {w} (|diff| {e:.3e}, max|ref| {scale:.3e})"
        );
        diff = diff.max(e);
    }
    let rel = if scale > 0.0 { diff / scale } else { diff };
    assert!(
        rel <= t.norm,
        "{label}: normwise relative error {rel:.3e} > {:.1e}",
        t.norm
    );
}

pub fn to_f16(x: &[f32]) -> Vec<f16> {
    x.iter().map(|&v| f16::from_f32(v)).collect()
}

/// `n` NaN-poisoned outputs.
pub fn poisoned<T: Element>(n: usize) -> Vec<T> {
    vec![T::from_f64(f64::NAN); n]
}
