//! [`Either`]: a module that is one of two kinds, under one checkpoint name (a hybrid layer
//! whose `temporal_block` or `mixer` is a recurrent block in some layers and attention in
//! others). Its parameters are those of the kind it holds.

use mlx_rs::module::ModuleParameters;

/// One of two modules; its parameters are the held one's, under the field's own name.
#[derive(Debug, Clone)]
pub enum Either<L, R> {
    /// The first kind.
    Left(L),
    /// The second kind.
    Right(R),
}

impl<L: ModuleParameters, R: ModuleParameters> Either<L, R> {
    /// The first kind, if held.
    pub fn left(&self) -> Option<&L> {
        match self {
            Either::Left(l) => Some(l),
            Either::Right(_) => None,
        }
    }

    /// The second kind, if held.
    pub fn right(&self) -> Option<&R> {
        match self {
            Either::Left(_) => None,
            Either::Right(r) => Some(r),
        }
    }
}

variant_parameters!(impl<L: ModuleParameters, R: ModuleParameters> for Either<L, R> { Either::Left, Either::Right });
