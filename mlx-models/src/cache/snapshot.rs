//! Coming back to an earlier position: [`Snapshot`].
//!
//! A recurrent layer's state (an [`ArraysCache`]) cannot be trimmed: it folds every position
//! into fixed-size arrays. The reference therefore recomputes a whole prompt whenever a
//! hybrid model must go back (a server turn whose prefix diverges from the cached one,
//! speculative decoding's rejected drafts). A snapshot remembers where every layer was:
//! caches that grow position by position (full-attention, quantized, chunked and batch caches)
//! by their offset, so they are trimmed back and nothing is copied; the others (recurrent
//! state, rotating windows) by value. MLX arrays are immutable, so keeping them costs their
//! memory only once the live cache has moved on, and for recurrent state that is a fixed size
//! per layer, whatever the context.

#[allow(unused_imports)]
use super::*;

#[derive(Debug, Clone)]
enum Layer {
    /// A cache that is trimmed back to this offset.
    Offset(i32),
    /// A cache kept whole.
    Whole(Cache),
    /// The caches of a composite layer.
    List(Vec<Layer>),
}

/// Where a model's caches were at one position; [`Snapshot::restore`] brings them back there.
///
/// ```
/// use mlx_models::cache::{Cache, Snapshot};
/// use mlx_rs::Array;
///
/// let mut caches = vec![Cache::kv(), Cache::arrays(1)];
/// let kv = Array::ones::<f32>(&[1, 1, 3, 4])?;
/// caches[0].update_and_fetch(&kv, &kv)?;
/// if let Cache::Arrays(a) = &mut caches[1] {
///     a.set(0, Array::from_f32(1.0));
/// }
/// let snapshot = Snapshot::take(&caches);
///
/// caches[0].update_and_fetch(&kv, &kv)?;
/// if let Cache::Arrays(a) = &mut caches[1] {
///     a.set(0, Array::from_f32(2.0));
/// }
/// snapshot.restore(&mut caches)?;
/// assert_eq!(caches[0].offset(), 3);
/// # let Cache::Arrays(a) = &caches[1] else { unreachable!() };
/// assert_eq!(a.get(0).unwrap().item::<f32>(), 1.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Snapshot {
    layers: Vec<Layer>,
}

fn take(cache: &Cache) -> Layer {
    match cache {
        Cache::Kv(_) | Cache::Quantized(_) | Cache::Chunked(_) | Cache::Batch(_) => {
            Layer::Offset(cache.offset())
        }
        Cache::Rotating(_) | Cache::Arrays(_) => Layer::Whole(cache.clone()),
        Cache::List(l) => Layer::List(l.iter().map(take).collect()),
    }
}

fn restore(layer: &Layer, cache: &mut Cache, at: &str) -> std::result::Result<(), CacheError> {
    match (layer, cache) {
        (Layer::Whole(saved), cache) if saved.class_name() == cache.class_name() => {
            *cache = saved.clone();
            Ok(())
        }
        (Layer::List(saved), Cache::List(caches)) if saved.len() == caches.len() => saved
            .iter()
            .zip(caches.iter_mut())
            .enumerate()
            .try_for_each(|(i, (s, c))| restore(s, c, &format!("{at}.{i}"))),
        (Layer::Offset(offset), cache) if matches!(take(cache), Layer::Offset(_)) => {
            let now = cache.offset();
            let n = now - offset;
            if n < 0 || cache.trim(n) != n {
                return Err(fmt_err(format!(
                    "layer {at}: a {} at offset {now} cannot go back to offset {offset}",
                    cache.class_name()
                )));
            }
            Ok(())
        }
        (_, cache) => Err(fmt_err(format!(
            "layer {at}: the snapshot was not taken of a cache like this {}",
            cache.class_name()
        ))),
    }
}

impl Snapshot {
    /// Remembers where `caches` are now.
    pub fn take(caches: &[Cache]) -> Self {
        Snapshot {
            layers: caches.iter().map(take).collect(),
        }
    }

    /// Brings `caches` (the ones the snapshot was taken of, moved on since) back to where they
    /// were: growing caches trimmed back, the others replaced by the saved state. An error
    /// when the caches are not those of the snapshot (other kinds or count) or were reset
    /// behind its position.
    pub fn restore(&self, caches: &mut [Cache]) -> std::result::Result<(), CacheError> {
        if caches.len() != self.layers.len() {
            return Err(fmt_err(format!(
                "the snapshot holds {} layers, not {}",
                self.layers.len(),
                caches.len()
            )));
        }
        self.layers
            .iter()
            .zip(caches.iter_mut())
            .enumerate()
            .try_for_each(|(i, (s, c))| restore(s, c, &i.to_string()))
    }

    /// Bytes of the arrays the snapshot keeps by value (recurrent state, windows), counted
    /// whole even while the live caches still share them.
    pub fn nbytes(&self) -> usize {
        fn bytes(l: &Layer) -> usize {
            match l {
                Layer::Offset(_) => 0,
                Layer::Whole(c) => c.nbytes(),
                Layer::List(l) => l.iter().map(bytes).sum(),
            }
        }
        self.layers.iter().map(bytes).sum()
    }

    /// Whether restoring needs no saved state: every layer is trimmed back.
    pub fn is_offsets_only(&self) -> bool {
        fn only(l: &Layer) -> bool {
            match l {
                Layer::Offset(_) => true,
                Layer::Whole(_) => false,
                Layer::List(l) => l.iter().all(only),
            }
        }
        self.layers.iter().all(only)
    }
}
