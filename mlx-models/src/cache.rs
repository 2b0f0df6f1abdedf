//! Per-layer caches. (Filled in by the shared-blocks work; the registry refers to `Cache`.)

/// The cache of one layer.
pub enum Cache {}
