//! Batch conventions shared by every op that takes sequences: the memory layout of a
//! `[B, H, L, D]` tensor (head-first, or fla's and PyTorch's sequence-first `[B, L, H, D]`) and
//! packed variable-length sequences (`cu_seqlens`, as flash-linear-attention defines it).

use crate::{Error, Result};

/// Memory order of a 4-D sequence tensor. Ops read it through strides ([`Strides`]), not a
/// host transpose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `[B, H, L, D]`: each head's sequence is contiguous (this crate's default).
    #[default]
    Bhld,
    /// `[B, L, H, D]`: each token's heads are contiguous (fla's and PyTorch modules' layout).
    Blhd,
}

impl Layout {
    /// The CLI's name: `bhld` or `blhd`.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Bhld => "bhld",
            Layout::Blhd => "blhd",
        }
    }

    /// Parses `bhld` or `blhd` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "bhld" => Some(Layout::Bhld),
            "blhd" => Some(Layout::Blhd),
            _ => None,
        }
    }

    /// `(B, H, L, D)` of a rank-4 `shape` stored in this layout.
    pub fn dims(self, shape: [usize; 4]) -> (usize, usize, usize, usize) {
        match self {
            Layout::Bhld => (shape[0], shape[1], shape[2], shape[3]),
            Layout::Blhd => (shape[0], shape[2], shape[1], shape[3]),
        }
    }

    /// The rank-4 shape that holds `(B, H, L, D)` in this layout.
    pub fn shape(self, b: usize, h: usize, l: usize, d: usize) -> [usize; 4] {
        match self {
            Layout::Bhld => [b, h, l, d],
            Layout::Blhd => [b, l, h, d],
        }
    }

    /// Element strides of a `(B, H, L, D)` tensor stored in this layout.
    pub fn strides(self, h: usize, l: usize, d: usize) -> Strides {
        match self {
            Layout::Bhld => Strides {
                batch: h * l * d,
                head: l * d,
                token: d,
            },
            Layout::Blhd => Strides {
                batch: l * h * d,
                head: d,
                token: h * d,
            },
        }
    }
}

/// Element strides of a sequence tensor (the feature stride is 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strides {
    /// Between batch entries.
    pub batch: usize,
    /// Between heads.
    pub head: usize,
    /// Between tokens (positions).
    pub token: usize,
}

impl Strides {
    /// Flat index of element `d` of token `t` of head `h` in batch entry `b`.
    pub fn index(&self, b: usize, h: usize, t: usize, d: usize) -> usize {
        b * self.batch + h * self.head + t * self.token + d
    }
}

/// Packed variable-length sequences: with B = 1, sequence `i` holds tokens
/// `[offsets[i], offsets[i + 1])` of the packed length L. Tokens past the last offset belong to no
/// sequence (ops leave their outputs untouched). Built by [`CuSeqlens::new`], which checks the
/// offsets, so an op never sees bad ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CuSeqlens {
    offsets: Vec<u32>,
}

impl CuSeqlens {
    /// Checks `offsets` (N + 1 values, N ≥ 1) against the packed length `len`: the first is 0, none
    /// decreases, the last is at most `len`. Empty sequences (equal neighbours) are allowed.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (name `cu_seqlens`) saying which rule failed.
    pub fn new(op: &'static str, offsets: &[i64], len: usize) -> Result<Self> {
        let bad = |reason: String| Error::InvalidArgument {
            op,
            name: "cu_seqlens",
            reason,
        };
        if offsets.len() < 2 {
            return Err(bad(format!(
                "needs at least 2 offsets (N + 1 for N sequences), got {}",
                offsets.len()
            )));
        }
        if offsets[0] != 0 {
            return Err(bad(format!("must start at 0, starts at {}", offsets[0])));
        }
        for (i, w) in offsets.windows(2).enumerate() {
            if w[1] < w[0] {
                return Err(bad(format!(
                    "decreases at index {}: {} after {}",
                    i + 1,
                    w[1],
                    w[0]
                )));
            }
        }
        let last = *offsets.last().unwrap();
        if last > len as i64 || last > u32::MAX as i64 {
            return Err(bad(format!(
                "last offset {last} is past the packed length L = {len}"
            )));
        }
        Ok(Self {
            offsets: offsets.iter().map(|&o| o as u32).collect(),
        })
    }

    /// The N + 1 offsets.
    pub fn offsets(&self) -> &[u32] {
        &self.offsets
    }

    /// Number of sequences N.
    pub fn count(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Token range of sequence `i`.
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        self.offsets[i] as usize..self.offsets[i + 1] as usize
    }

    /// Length of the longest sequence.
    pub fn max_len(&self) -> usize {
        (0..self.count())
            .map(|i| self.range(i).len())
            .max()
            .unwrap_or(0)
    }
}

/// Sizes of an attention call with grouped heads and separate query/key lengths, read in a
/// [`Layout`]: q `[B, Hq, Lq, Dk]`, k `[B, Hkv, Lk, Dk]`, v `[B, Hkv, Lk, Dv]` (or the `[B, L, H, D]`
/// order of each). Query head `h` reads key/value head `h / (Hq / Hkv)` (GQA; MQA when Hkv = 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GqaDims {
    /// Batch B.
    pub batch: usize,
    /// Query heads Hq.
    pub q_heads: usize,
    /// Key/value heads Hkv (divides Hq).
    pub kv_heads: usize,
    /// Query length Lq.
    pub q_len: usize,
    /// Key/value length Lk.
    pub kv_len: usize,
    /// Head dim of q and k.
    pub dk: usize,
    /// Head dim of v.
    pub dv: usize,
    /// The layout all four tensors use.
    pub layout: Layout,
    /// Output shape: `[B, Hq, Lq, Dv]` in `layout`.
    pub out_shape: Vec<usize>,
}

impl GqaDims {
    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.q_heads / self.kv_heads
    }

    /// The key/value head that query head `h` reads.
    pub fn kv_head(&self, h: usize) -> usize {
        h / self.group()
    }

    /// Checks rank-4 q, k, v in `layout`. `causal` requires Lq = Lk (a causal mask over
    /// different lengths is not defined here).
    ///
    /// # Errors
    /// [`Error::Shape`] naming the tensor: wrong rank, a zero dim, B or Dk that differ, Hkv that
    /// does not divide Hq, k and v that differ in Hkv or Lk, or Lq ≠ Lk when causal.
    pub fn check(
        op: &'static str,
        q: &[usize],
        k: &[usize],
        v: &[usize],
        layout: Layout,
        causal: bool,
    ) -> Result<Self> {
        let pattern = match layout {
            Layout::Bhld => "[B, H, L, D]",
            Layout::Blhd => "[B, L, H, D]",
        };
        let rank4 = |name: &'static str, s: &[usize]| -> Result<(usize, usize, usize, usize)> {
            if s.len() != 4 || s.contains(&0) {
                return Err(Error::Shape {
                    op,
                    name,
                    expected: format!("{pattern} with every dim >= 1"),
                    got: s.to_vec(),
                });
            }
            Ok(layout.dims([s[0], s[1], s[2], s[3]]))
        };
        let (b, hq, lq, dk) = rank4("q", q)?;
        let (kb, hkv, lk, kd) = rank4("k", k)?;
        let (vb, vh, vl, dv) = rank4("v", v)?;
        let mismatch = |name: &'static str, got: &[usize], expected: String| Error::Shape {
            op,
            name,
            expected,
            got: got.to_vec(),
        };
        if kb != b || kd != dk || hq % hkv != 0 || (causal && lk != lq) {
            let lk_rule = if causal { "Lk = Lq (causal)" } else { "any Lk" };
            return Err(mismatch(
                "k",
                k,
                format!(
                    "{pattern} with B = {b}, Dk = {dk}, H dividing Hq = {hq}, {lk_rule} (q is {q:?})"
                ),
            ));
        }
        if vb != b || vh != hkv || vl != lk {
            return Err(mismatch(
                "v",
                v,
                format!("{pattern} with B = {b}, H = {hkv}, L = {lk} (k's B, H and L)"),
            ));
        }
        Ok(Self {
            batch: b,
            q_heads: hq,
            kv_heads: hkv,
            q_len: lq,
            kv_len: lk,
            dk,
            dv,
            layout,
            out_shape: layout.shape(b, hq, lq, dv).to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_index_the_same_element_in_both_layouts() {
        let (b, h, l, d) = (2, 3, 5, 4);
        let sb = Layout::Bhld.strides(h, l, d);
        let sl = Layout::Blhd.strides(h, l, d);
        // Element (1, 2, 3, 1): bhld = ((1*3+2)*5+3)*4+1, blhd = ((1*5+3)*3+2)*4+1.
        assert_eq!(sb.index(1, 2, 3, 1), ((3 + 2) * 5 + 3) * 4 + 1);
        assert_eq!(sl.index(1, 2, 3, 1), ((5 + 3) * 3 + 2) * 4 + 1);
        assert_eq!(
            Layout::Blhd.dims(Layout::Blhd.shape(b, h, l, d)),
            (b, h, l, d)
        );
    }

    #[test]
    fn gqa_dims_read_both_layouts() {
        let g = GqaDims::check(
            "t",
            &[2, 7, 6, 5],
            &[2, 9, 3, 5],
            &[2, 9, 3, 4],
            Layout::Blhd,
            false,
        )
        .unwrap();
        assert_eq!((g.q_heads, g.kv_heads, g.q_len, g.kv_len), (6, 3, 7, 9));
        assert_eq!(g.kv_head(5), 2);
        assert_eq!(g.out_shape, vec![2, 7, 6, 4]);
        // Causal needs Lq = Lk; Hkv must divide Hq; v must match k.
        let bad = [
            (
                &[1, 4, 8, 5][..],
                &[1, 2, 9, 5][..],
                &[1, 2, 9, 5][..],
                true,
            ),
            (
                &[1, 3, 8, 5][..],
                &[1, 2, 8, 5][..],
                &[1, 2, 8, 5][..],
                false,
            ),
            (
                &[1, 4, 8, 5][..],
                &[1, 2, 8, 5][..],
                &[1, 2, 7, 5][..],
                false,
            ),
        ];
        for (q, k, v, causal) in bad {
            assert!(GqaDims::check("t", q, k, v, Layout::Bhld, causal).is_err());
        }
    }

    #[test]
    fn cu_seqlens_rules() {
        let ok = CuSeqlens::new("t", &[0, 15, 100, 100, 300], 310).unwrap();
        assert_eq!(ok.count(), 4);
        assert_eq!(ok.range(1), 15..100);
        assert_eq!(ok.max_len(), 200);
        for bad in [&[][..], &[0], &[1, 5], &[0, 5, 3], &[0, 311]] {
            assert!(matches!(
                CuSeqlens::new("t", bad, 310),
                Err(Error::InvalidArgument {
                    name: "cu_seqlens",
                    ..
                })
            ));
        }
    }
}
