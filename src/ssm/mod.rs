//! State-space ops: HiPPO matrices, discretisation, HiPPO online function approximation.

pub mod approx;
pub mod discretize;
pub mod hippo;

pub use approx::{hippo_approx, hippo_approx_into, record_hippo_approx, HippoApproxOptions, Step};
pub use discretize::{discretize, discretize_diag, Method};
pub use hippo::{hippo, reconstruct, Measure, StateSpace};
