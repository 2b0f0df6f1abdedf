//! State slots of recurrent layers: [`ArraysCache`].

#[allow(unused_imports)]
use super::*;

/// Fixed state slots of a recurrent layer (for example `[conv_state, ssm_state]`), with the
/// batch's left padding and lengths while a padded prompt is processed.
#[derive(Debug, Clone, Default)]
pub struct ArraysCache {
    /// The slots; `None` until the layer first writes one.
    pub cache: Vec<Option<Array>>,
    /// `[B]` padded positions at the start of each sequence.
    pub left_padding: Option<Array>,
    /// `[B]` valid lengths of each sequence.
    pub lengths: Option<Array>,
}

impl ArraysCache {
    /// `size` empty slots.
    pub fn new(size: usize) -> Self {
        Self {
            cache: vec![None; size],
            left_padding: None,
            lengths: None,
        }
    }

    /// Empty slots for a left-padded batch.
    pub fn with_left_padding(size: usize, left_padding: &[i32]) -> Self {
        let lp = (!left_padding.is_empty())
            .then(|| Array::from_slice(left_padding, &[left_padding.len() as i32]));
        Self {
            cache: vec![None; size],
            left_padding: lp,
            lengths: None,
        }
    }

    /// Slot `i`.
    pub fn get(&self, i: usize) -> Option<&Array> {
        self.cache.get(i).and_then(Option::as_ref)
    }

    /// Sets slot `i` (growing the slots if needed).
    pub fn set(&mut self, i: usize, value: Array) {
        if i >= self.cache.len() {
            self.cache.resize(i + 1, None);
        }
        self.cache[i] = Some(value);
    }

    /// Marks `n` positions processed (the padding and lengths move by `n`).
    pub fn advance(&mut self, n: i32) -> Result<()> {
        for a in [&mut self.lengths, &mut self.left_padding]
            .into_iter()
            .flatten()
        {
            *a = a.subtract(Array::from_int(n))?;
        }
        Ok(())
    }

    /// `[B, n]` true where a position is real (after the padding, within the length).
    pub fn make_mask(&self, n: i32) -> Result<Option<Array>> {
        let pos = arange::<_, i32>(0, n, None)?;
        let mut mask: Option<Array> = None;
        if let Some(lp) = &self.left_padding {
            mask = Some(pos.ge(lp.try_index((.., NewAxis))?)?);
        }
        if let Some(len) = &self.lengths {
            let inside = pos.lt(len.try_index((.., NewAxis))?)?;
            mask = Some(match mask {
                Some(m) => m.logical_and(&inside)?,
                None => inside,
            });
        }
        Ok(mask)
    }
}
