//! What the hybrid stacks of Mamba2 mixers and attention share (nemotron_h,
//! granitemoehybrid, falcon_h1):
//!
//! - [`HybridStack`]: embeddings, the layers (any [`HybridLayer`]), the final norm; it makes
//!   each layer's cache from its [`LayerKind`] (an [`ArraysCache`] of two slots for a Mamba2
//!   mixer, a KV cache for attention, a list of both where they run side by side, none for a
//!   feed-forward, as the reference's `make_cache` skips those), and the two masks of a forward;
//! - [`HybridMasks`]: the attention mask and the SSM mask, each made from the cache of the
//!   first layer of its kind, as the reference makes them;
//! - [`layer_caches`]: each layer's cache where only the stateful layers have one;
//! - [`HybridMixer`]: a layer's one mixer, of the kind chosen for that layer (nemotron_h's
//!   `mixer`: Mamba2, attention or a feed-forward);
//! - [`list_parts`] and [`list_parts_mut`]: the attention and state caches of a layer that keeps
//!   both (falcon_h1's cache list, baichuan_m1's keys beside its convolution's state).

use mlx_rs::error::{Exception, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::ModuleParameters;
use mlx_rs::Array;

use crate::cache::{create_attention_mask, create_ssm_mask, ArraysCache, Cache};
use crate::nn::mask::AttentionMask;
use crate::nn::norm::RmsNorm;
use crate::nn::quantized::{Embedding, Linear};
use crate::nn::ssm::Mamba2Mixer;
use crate::nn::transformer::{Attention, Block};

/// What a layer of a hybrid stack keeps between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// A Mamba2 mixer: conv and SSM state, an [`ArraysCache`] of two slots.
    Ssm,
    /// Attention: keys and values, a KV cache.
    Attention,
    /// Attention and a Mamba2 mixer side by side: a list of a KV cache and an
    /// [`ArraysCache`] of two slots.
    Parallel,
    /// A feed-forward: nothing, and no cache.
    Stateless,
}

impl LayerKind {
    /// A fresh cache for a layer of this kind (`None` for a stateless one).
    pub fn new_cache(self) -> Option<Cache> {
        match self {
            LayerKind::Ssm => Some(Cache::arrays(2)),
            LayerKind::Attention => Some(Cache::kv()),
            LayerKind::Parallel => Some(Cache::List(vec![Cache::kv(), Cache::arrays(2)])),
            LayerKind::Stateless => None,
        }
    }
}

/// The caches of a stack whose layers are of `kinds`: one per stateful layer, in order.
pub fn make_cache(kinds: impl IntoIterator<Item = LayerKind>) -> Vec<Cache> {
    kinds.into_iter().filter_map(LayerKind::new_cache).collect()
}

/// Each layer's cache, for a stack whose layers are of `kinds` and whose caches are
/// `cache` (one per stateful layer, as [`make_cache`] makes them, or none at all for a
/// forward without a cache).
pub fn layer_caches<'a>(
    kinds: &[LayerKind],
    cache: &'a mut [Cache],
) -> Result<Vec<Option<&'a mut Cache>>> {
    let stateful = kinds.iter().filter(|k| **k != LayerKind::Stateless).count();
    if !cache.is_empty() && cache.len() != stateful {
        return Err(Exception::custom(format!(
            "this model keeps {stateful} caches (one per Mamba2 or attention layer), got {}",
            cache.len()
        )));
    }
    let mut caches = cache.iter_mut();
    Ok(kinds
        .iter()
        .map(|k| match k {
            LayerKind::Stateless => None,
            _ => caches.next(),
        })
        .collect())
}

/// The arrays cache a Mamba2 layer was given, or an error naming what it got instead.
pub fn ssm_cache(cache: Option<&mut Cache>) -> Result<Option<&mut ArraysCache>> {
    match cache {
        None => Ok(None),
        Some(Cache::Arrays(c)) => Ok(Some(c)),
        Some(other) => Err(Exception::custom(format!(
            "a Mamba2 layer needs an ArraysCache, not a {}",
            other.class_name()
        ))),
    }
}

/// The masks of one forward through a hybrid stack.
#[derive(Debug, Clone)]
pub struct HybridMasks {
    /// What the attention layers mask (causal, or the padding of a batch cache).
    pub attention: AttentionMask,
    /// `[B, L]`, false at padded positions, which the Mamba2 layers keep out of their state;
    /// `None` when nothing is padded.
    pub ssm: Option<Array>,
}

impl HybridMasks {
    /// The masks for `n` new positions, from the cache of the first attention layer and the
    /// cache of the first Mamba2 layer (`create_attention_mask` and `create_ssm_mask`).
    pub fn new(n: i32, attention: Option<&Cache>, ssm: Option<&Cache>) -> Result<Self> {
        Ok(HybridMasks {
            attention: create_attention_mask(n, attention, None, false)?,
            ssm: create_ssm_mask(n, ssm)?,
        })
    }

    /// The masks of a stack whose layers are of `kinds`, with one cache per stateful layer
    /// (or none).
    pub fn for_stack(n: i32, kinds: &[LayerKind], cache: &[Cache]) -> Result<Self> {
        let (mut attention, mut ssm) = (None, None);
        let stateful = kinds.iter().filter(|k| **k != LayerKind::Stateless);
        for (kind, c) in stateful.zip(cache) {
            match kind {
                LayerKind::Attention => attention = attention.or(Some(c)),
                LayerKind::Ssm => ssm = ssm.or(Some(c)),
                LayerKind::Parallel => {
                    let (a, s) = list_parts(c)?;
                    attention = attention.or(Some(a));
                    ssm = ssm.or(Some(s));
                }
                LayerKind::Stateless => {}
            }
        }
        Self::new(n, attention, ssm)
    }
}

/// The attention part and the SSM part of a layer's cache list, in either order (the
/// reference's `CacheList(ArraysCache, KVCache)` as a saved prompt cache brings it, or ours).
pub fn list_parts(cache: &Cache) -> Result<(&Cache, &Cache)> {
    match cache {
        Cache::List(parts) => match &parts[..] {
            [ssm @ Cache::Arrays(_), attention] | [attention, ssm @ Cache::Arrays(_)] => {
                Ok((attention, ssm))
            }
            _ => Err(not_a_pair(cache.class_name())),
        },
        _ => Err(not_a_pair(cache.class_name())),
    }
}

/// [`list_parts`], writable: the attention layer's cache and the Mamba2 layer's.
pub fn list_parts_mut(cache: &mut Cache) -> Result<(&mut Cache, &mut ArraysCache)> {
    let class = cache.class_name();
    match cache {
        Cache::List(parts) => match &mut parts[..] {
            [Cache::Arrays(ssm), attention] | [attention, Cache::Arrays(ssm)] => {
                Ok((attention, ssm))
            }
            _ => Err(not_a_pair(class)),
        },
        _ => Err(not_a_pair(class)),
    }
}

fn not_a_pair(class: &str) -> Exception {
    Exception::custom(format!(
        "a layer that keeps attention keys and recurrent state side by side needs a list of a \
         KV cache and an ArraysCache (the model's make_cache), not a {class}"
    ))
}

/// A layer of a [`HybridStack`]: `[B, L, dim]` to `[B, L, dim]`, under the masks of its kind,
/// reading and extending its cache (of its [`LayerKind`]; `None` for a forward without a
/// cache or a stateless layer).
pub trait HybridLayer: ModuleParameters {
    /// The state the layer keeps, hence its cache.
    fn kind(&self) -> LayerKind;

    /// Applies the layer.
    fn forward(&self, x: &Array, masks: &HybridMasks, cache: Option<&mut Cache>) -> Result<Array>;
}

/// The stack of a hybrid model (`model.*` or `backbone.*` in checkpoints): token embeddings
/// (optionally scaled), the layers, the final RMS norm. A checkpoint that names its parts
/// otherwise (nemotron_h's `embeddings` and `norm_f`) is mapped onto these names by its
/// model's `rename` rules.
#[derive(Debug, ModuleParameters)]
pub struct HybridStack<L: HybridLayer> {
    /// `[vocab, dim]`; also the head of a model with tied embeddings.
    #[param]
    pub embed_tokens: Embedding,
    /// The layers.
    #[param]
    pub layers: Vec<L>,
    /// The final norm.
    #[param]
    pub norm: RmsNorm,
    /// Factor on the embeddings (granite's `embedding_multiplier`; `None`: 1).
    pub embedding_multiplier: Option<f32>,
}

impl<L: HybridLayer> HybridStack<L> {
    /// Embeddings of `vocab` tokens of width `dim`, `layers`, a final RMS norm with `eps`.
    pub fn new(vocab: usize, dim: usize, eps: f32, layers: Vec<L>) -> Result<Self> {
        Ok(HybridStack {
            embed_tokens: Embedding::new(vocab as i32, dim as i32)?,
            layers,
            norm: RmsNorm::new(dim as i32, eps)?,
            embedding_multiplier: None,
        })
    }

    /// Scales the embeddings by `m`, in their type.
    pub fn embedding_multiplier(mut self, m: f32) -> Self {
        self.embedding_multiplier = Some(m);
        self
    }

    /// The kind of each layer.
    pub fn kinds(&self) -> Vec<LayerKind> {
        self.layers.iter().map(HybridLayer::kind).collect()
    }

    /// Token ids `[B, L]` to the normed hidden states `[B, L, dim]`, reading and extending
    /// `cache` (as [`make_cache`](Self::make_cache) makes it, or empty for no cache).
    pub fn forward(&self, inputs: &Array, cache: &mut [Cache]) -> Result<Array> {
        let kinds = self.kinds();
        let mut h = self.embed_tokens.forward(inputs)?;
        if let Some(m) = self.embedding_multiplier {
            h = h.multiply(Array::from_f32(m).as_dtype(h.dtype())?)?;
        }
        let masks = HybridMasks::for_stack(inputs.dim(1), &kinds, cache)?;
        let caches = layer_caches(&kinds, cache)?;
        for (layer, c) in self.layers.iter().zip(caches) {
            h = layer.forward(&h, &masks, c)?;
        }
        self.norm.forward(&h)
    }

    /// The logits of hidden states `h`: through `lm_head`, or the tied embeddings (`None`).
    pub fn logits(&self, h: &Array, lm_head: Option<&Linear>) -> Result<Array> {
        match lm_head {
            Some(head) => head.forward(h),
            None => self.embed_tokens.as_linear(h),
        }
    }

    /// A fresh cache per stateful layer.
    pub fn make_cache(&self) -> Vec<Cache> {
        make_cache(self.kinds())
    }
}

/// A hybrid layer's one mixer, of the kind its layer is: a Mamba2 mixer, attention, or a
/// feed-forward `F`. Its parameters are those of the variant it holds, under the same name.
#[derive(Debug)]
pub enum HybridMixer<F: Block> {
    /// A Mamba2 mixer, reading the SSM mask.
    Mamba(Mamba2Mixer),
    /// Attention, reading the attention mask.
    Attention(Attention),
    /// A feed-forward, which keeps no state.
    FeedForward(F),
}

impl<F: Block> HybridMixer<F> {
    /// The state this mixer keeps.
    pub fn kind(&self) -> LayerKind {
        match self {
            HybridMixer::Mamba(_) => LayerKind::Ssm,
            HybridMixer::Attention(_) => LayerKind::Attention,
            HybridMixer::FeedForward(_) => LayerKind::Stateless,
        }
    }

    /// `[B, L, dim]` to `[B, L, dim]`, under the mask of its kind, reading and extending
    /// `cache` (its own kind of cache; `None` for a feed-forward or a forward without cache).
    pub fn forward(
        &self,
        x: &Array,
        masks: &HybridMasks,
        cache: Option<&mut Cache>,
    ) -> Result<Array> {
        match self {
            HybridMixer::Mamba(m) => m.forward(x, masks.ssm.as_ref(), ssm_cache(cache)?),
            HybridMixer::Attention(a) => a.forward(x, &masks.attention, cache),
            HybridMixer::FeedForward(f) => f.forward(x),
        }
    }
}

variant_parameters!(impl<F: Block> for HybridMixer<F> { HybridMixer::Mamba, HybridMixer::Attention, HybridMixer::FeedForward });

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [LayerKind; 4] = [
        LayerKind::Ssm,
        LayerKind::Stateless,
        LayerKind::Attention,
        LayerKind::Ssm,
    ];

    #[test]
    fn stateless_layers_get_no_cache() {
        let mut caches = make_cache(KINDS);
        assert!(matches!(
            caches[..],
            [Cache::Arrays(_), Cache::Kv(_), Cache::Arrays(_)]
        ));
        let per_layer = layer_caches(&KINDS, &mut caches).expect("caches");
        let has: Vec<bool> = per_layer.iter().map(Option::is_some).collect();
        assert_eq!(has, [true, false, true, true]);
        assert!(matches!(per_layer[2].as_deref(), Some(Cache::Kv(_))));
    }

    #[test]
    fn a_wrong_number_of_caches_is_an_error() {
        let mut caches = vec![Cache::kv()];
        assert!(layer_caches(&KINDS, &mut caches).is_err());
        assert!(layer_caches(&KINDS, &mut []).is_ok_and(|c| c.iter().all(Option::is_none)));
    }

    #[test]
    fn the_ssm_mask_comes_from_the_first_mamba_layer() {
        let caches: Vec<Cache> = make_cache(KINDS)
            .iter()
            .map(|c| c.batched(&[0, 2]).expect("batched"))
            .collect();
        let masks = HybridMasks::for_stack(3, &KINDS, &caches).expect("masks");
        let ssm = masks.ssm.expect("a padded batch has an SSM mask");
        assert_eq!(ssm.shape(), &[2, 3]);
        assert!(masks.attention.array().is_some());
        let masks = HybridMasks::for_stack(3, &KINDS, &[]).expect("masks");
        assert!(masks.ssm.is_none() && matches!(masks.attention, AttentionMask::Causal));
    }

    #[test]
    fn parallel_layers_get_a_list_and_both_masks_from_it() {
        let kinds = [LayerKind::Parallel, LayerKind::Parallel];
        let caches: Vec<Cache> = make_cache(kinds)
            .iter()
            .map(|c| c.batched(&[1, 0]).expect("batched"))
            .collect();
        assert!(matches!(&caches[0], Cache::List(l) if l.len() == 2));
        let masks = HybridMasks::for_stack(4, &kinds, &caches).expect("masks");
        assert!(masks.ssm.is_some() && masks.attention.array().is_some());
    }

    #[test]
    fn list_parts_take_either_order() {
        let mut ours = Cache::List(vec![Cache::kv(), Cache::arrays(2)]);
        let mut theirs = Cache::List(vec![Cache::arrays(2), Cache::kv()]);
        for cache in [&mut ours, &mut theirs] {
            let (attention, ssm) = list_parts(cache).expect("parts");
            assert!(matches!((attention, ssm), (Cache::Kv(_), Cache::Arrays(_))));
            let (attention, ssm) = list_parts_mut(cache).expect("parts");
            assert!(matches!(attention, Cache::Kv(_)) && ssm.cache.len() == 2);
        }
        assert!(list_parts(&Cache::kv()).is_err());
        assert!(list_parts(&Cache::List(vec![Cache::kv(), Cache::kv()])).is_err());
    }
}
