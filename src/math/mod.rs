//! Host-side numerics the ops and the reference both build on (f64, no GPU): HiPPO matrices,
//! discretisation, the DPLR SSM's dense algebra and the eigensolver for S4D-LegS.

pub mod discretize;
pub mod dplr;
pub mod eigen;
pub mod hippo;
