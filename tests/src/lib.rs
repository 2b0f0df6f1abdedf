//! Shared helpers of the integration tests.
pub mod cli;
pub mod exit_model;
pub mod parity;
pub mod reference;
