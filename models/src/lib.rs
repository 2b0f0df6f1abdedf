//! The architectures of mlx-models, one file per `model_type`.
