//! Training: configs, objectives, end-to-end runs with resume, data-parallel runs under `mpirun`, and the demo.
//!
//! One test binary for the whole area, as each binary links libtorch: a module per file, helpers in tests/common.

#[path = "../common/mod.rs"]
mod common;

mod config;
mod demo_and_cli;
mod mpi;
mod objectives;
mod train;
