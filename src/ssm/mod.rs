//! State-space ops: HiPPO matrices, discretisation, HiPPO online function approximation, and
//! reading a series with gaps.

pub mod approx;
pub mod discretize;
pub mod hippo;
pub mod series;

pub use approx::{
    hippo_approx, hippo_approx_into, record_hippo_approx, sample_grid, HippoApproxOptions, Step,
};
pub use discretize::{discretize, discretize_diag, Method};
pub use hippo::{hippo, reconstruct, Measure, StateSpace};
