//! [`Either`]: a module that is one of two kinds, under one checkpoint name (a hybrid layer
//! whose `temporal_block` or `mixer` is a recurrent block in some layers and attention in
//! others). Its parameters are those of the kind it holds.

use mlx_rs::module::{ModuleParamMut, ModuleParamRef, ModuleParameters};

/// One of two modules; its parameters are the held one's, under the field's own name.
#[derive(Debug, Clone)]
pub enum Either<L, R> {
    /// The first kind.
    Left(L),
    /// The second kind.
    Right(R),
}

impl<L: ModuleParameters, R: ModuleParameters> Either<L, R> {
    fn inner(&self) -> &dyn ModuleParameters {
        match self {
            Either::Left(l) => l,
            Either::Right(r) => r,
        }
    }

    fn inner_mut(&mut self) -> &mut dyn ModuleParameters {
        match self {
            Either::Left(l) => l,
            Either::Right(r) => r,
        }
    }

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

impl<L: ModuleParameters, R: ModuleParameters> ModuleParameters for Either<L, R> {
    fn num_parameters(&self) -> usize {
        self.inner().num_parameters()
    }

    fn parameters(&self) -> ModuleParamRef<'_> {
        self.inner().parameters()
    }

    fn parameters_mut(&mut self) -> ModuleParamMut<'_> {
        self.inner_mut().parameters_mut()
    }

    fn trainable_parameters(&self) -> ModuleParamRef<'_> {
        self.inner().trainable_parameters()
    }

    fn freeze_parameters(&mut self, recursive: bool) {
        self.inner_mut().freeze_parameters(recursive)
    }

    fn unfreeze_parameters(&mut self, recursive: bool) {
        self.inner_mut().unfreeze_parameters(recursive)
    }

    fn all_frozen(&self) -> Option<bool> {
        self.inner().all_frozen()
    }

    fn any_frozen(&self) -> Option<bool> {
        self.inner().any_frozen()
    }
}
