//! Feature maps φ for kernelized attention.

use std::str::FromStr;

/// The feature map φ applied elementwise to queries and keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum FeatureMap {
    /// φ(x) = elu(x) + 1: x + 1 for x > 0, eˣ otherwise (Katharopoulos et al. 2020, eq. 7). Positive.
    #[default]
    Elu1,
    /// φ(x) = max(x, 0).
    Relu,
    /// φ(x) = elu(x): x for x > 0, eˣ − 1 otherwise. TransNormer's NormAttention uses it (no
    /// denominator); not positive, so with a denominator it can vanish.
    Elu,
    /// φ(x) = x. Not positive, so the denominator can vanish: use it without the denominator.
    Identity,
}

impl FeatureMap {
    /// φ in f64, the CPU reference's definition. NaN maps to NaN.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            FeatureMap::Elu1 => {
                if x > 0.0 {
                    x + 1.0
                } else {
                    x.exp()
                }
            }
            FeatureMap::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            FeatureMap::Elu => {
                if x > 0.0 {
                    x
                } else {
                    x.exp_m1()
                }
            }
            FeatureMap::Identity => x,
        }
    }

    /// The value of the `FMAP` override constant in the shaders (prelude `FMAP_*` codes).
    pub(crate) fn shader_id(self) -> u32 {
        match self {
            FeatureMap::Elu1 => 0,
            FeatureMap::Relu => 1,
            FeatureMap::Identity => 2,
            FeatureMap::Elu => 3,
        }
    }

    /// The name the CLI takes and prints, e.g. `elu1`.
    pub fn name(self) -> &'static str {
        match self {
            FeatureMap::Elu1 => "elu1",
            FeatureMap::Relu => "relu",
            FeatureMap::Identity => "identity",
            FeatureMap::Elu => "elu",
        }
    }
}

impl FromStr for FeatureMap {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "elu1" => Ok(FeatureMap::Elu1),
            "relu" => Ok(FeatureMap::Relu),
            "identity" => Ok(FeatureMap::Identity),
            "elu" => Ok(FeatureMap::Elu),
            _ => Err(format!(
                "unknown feature map `{s}` (expected elu1, relu, elu or identity)"
            )),
        }
    }
}
