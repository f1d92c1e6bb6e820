//! Shared types: what each op computes (dims, options, host parameters, their checks), used by
//! both the GPU ops and the CPU reference. Nothing here touches the GPU, and nothing here imports
//! an op module or the reference.

pub mod attention;
pub mod batch;
pub mod feature_map;
pub mod positions;
pub mod ssm;
pub mod tiles;

pub use batch::{CuSeqlens, GqaDims, Layout, Strides};
pub use feature_map::FeatureMap;
pub use positions::RopeLayout;
pub use tiles::TileFamily;
