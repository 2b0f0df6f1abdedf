//! Procedural macros of mlx-models. Use them through the `mlx-models` crate.
