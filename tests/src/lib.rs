//! Shared helpers of the integration tests.
pub mod parity;
pub mod reference;
