//! f64 CPU reference implementations of every wgnorm op: the oracle for tests, `cargo xtask
//! validate` and anyone reading what a kernel must compute. Plain loops written for clarity;
//! variance is always computed in two passes (mean first, then centred squares).
//!
//! Layouts: row norms see `x` as row-major `[rows, n]` (the reduced dims flattened into `n`).

pub mod activation;
pub mod chnorm;
pub mod dual;
pub mod grad;
pub mod poincare;
pub mod powernorm;
pub mod research;
pub mod rownorm;
