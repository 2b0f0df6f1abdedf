//! What both macros share: the error collector, attribute splitting, weight patterns.

pub mod errors;
pub mod meta;
pub mod pattern;

pub use errors::Errors;
pub use meta::MetaValue;
