//! Layers that attend with an earlier layer's keys and values (the "KV-shared" layers of
//! gemma3n and gemma4, after mlx-lm's `models/gemma3n.py` and `models/gemma4_text.py`): the
//! last `num_kv_shared_layers` layers compute only queries, and attend to the keys and values
//! (and the positions) of the last earlier layer of their type, which owns a cache; they have
//! none.
//!
//! - [`KvSources`]: which layer each one borrows from, checked against the layer types;
//! - [`SharedKv`]: what an owner layer hands on in one forward pass (its keys and values as its
//!   cache returned them, and the positions its queries and keys were rotated for);
//! - [`SharedKvAttention`]: the attention of both families: per-head RMS norms on queries and
//!   keys, a scale-free RMS norm on values, a score scale of one, RoPE, and keys and values of
//!   its own or borrowed (its own keys may double as its values: gemma4's `attention_k_eq_v`);
//! - [`SharedKvLayer`] and [`forward_layers`]: the stack's loop (one mask per window made from
//!   the first owner layer with it, caches for the owners only, each shared layer given its
//!   source's keys and values), and [`owner_caches`], the caches it reads.

use mlx_rs::error::{Exception, Result};
use mlx_rs::fast;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::Array;

use crate::args::ArgsError;
use crate::cache::{create_attention_mask, Cache};
use crate::nn::attention::scaled_dot_product_attention;
use crate::nn::blocks::{merge_heads, split_heads, RopeOffset};
use crate::nn::mask::AttentionMask;
use crate::nn::norm::RmsNorm;
use crate::nn::quantized::Linear;
use crate::nn::rope::Rope;

/// For each layer, the layer whose keys and values it attends to: itself for the first
/// `owners` layers, and for each of the last `num_kv_shared_layers` the last owner of the same
/// layer type (`"full_attention"` or `"sliding_attention"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvSources {
    sources: Vec<usize>,
    owners: usize,
}

impl KvSources {
    /// The sources for `layer_types` (one per layer) when the last `num_kv_shared_layers`
    /// layers share: an error naming the keys when there is no owner layer at all, or a shared
    /// layer's type has none (the reference fails on both).
    pub fn new(
        layer_types: &[String],
        num_kv_shared_layers: usize,
    ) -> std::result::Result<Self, ArgsError> {
        let n = layer_types.len();
        let owners = n.checked_sub(num_kv_shared_layers).filter(|&m| m > 0);
        let Some(owners) = owners else {
            return Err(ArgsError::invalid(
                &["num_kv_shared_layers", "num_hidden_layers"],
                format!(
                    "`num_kv_shared_layers` ({num_kv_shared_layers}) leaves no layer of the \
                     {n} to compute keys and values"
                ),
            ));
        };
        let last_owner = |t: &str| layer_types[..owners].iter().rposition(|u| u == t);
        let mut sources: Vec<usize> = (0..owners).collect();
        for (i, t) in layer_types.iter().enumerate().skip(owners) {
            let Some(j) = last_owner(t) else {
                return Err(ArgsError::invalid(
                    &["num_kv_shared_layers", "layer_types"],
                    format!(
                        "KV-shared layer {i} is {t:?}, but none of the first {owners} layers \
                         (which compute keys and values) is"
                    ),
                ));
            };
            sources.push(j);
        }
        Ok(KvSources { sources, owners })
    }

    /// The number of layers that compute their own keys and values (and have a cache): the
    /// first ones.
    pub fn owners(&self) -> usize {
        self.owners
    }

    /// The layer whose keys and values layer `i` borrows; `None` for an owner.
    pub fn source(&self, i: usize) -> Option<usize> {
        self.sources.get(i).copied().filter(|&j| j != i)
    }

    /// Whether layer `i` borrows its keys and values.
    pub fn is_shared(&self, i: usize) -> bool {
        i >= self.owners
    }
}

/// What an owner layer hands to the layers that share its keys and values, within one forward
/// pass: keys and values `[B, kv_heads, K, head_dim]` as its cache returned them (or as
/// computed, without a cache), and the positions of the pass's tokens.
#[derive(Debug, Clone)]
pub struct SharedKv {
    /// The keys, rotated and normed.
    pub keys: Array,
    /// The values, normed.
    pub values: Array,
    /// The positions the new tokens were rotated for.
    pub offset: RopeOffset,
}

/// Where a [`SharedKvAttention`] takes its keys and values from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvProjections {
    /// Its own `k_proj` and `v_proj`.
    KeysAndValues,
    /// Its own `k_proj` only, whose output is the values too (before the keys' norm and
    /// RoPE: gemma4's `attention_k_eq_v`).
    KeysAsValues,
    /// None: the layer borrows another's keys and values (gemma4's KV-shared layers carry no
    /// key or value weights).
    Borrowed,
}

/// The attention of gemma3n and gemma4: `q_norm` / `k_norm` RMS norms per head, values
/// normed without a scale, RoPE, scores unscaled (the norms set their size); keys and values
/// its own or borrowed from an earlier layer ([`SharedKv`]).
#[derive(Debug, ModuleParameters)]
pub struct SharedKvAttention {
    /// `[n_heads * head_dim, hidden]`.
    #[param]
    pub q_proj: Linear,
    /// `[n_kv_heads * head_dim, hidden]`, unless borrowed.
    #[param]
    pub k_proj: Option<Linear>,
    /// `[n_kv_heads * head_dim, hidden]`, unless borrowed or the keys double as values.
    #[param]
    pub v_proj: Option<Linear>,
    /// `[hidden, n_heads * head_dim]`.
    #[param]
    pub o_proj: Linear,
    /// `[head_dim]`.
    #[param]
    pub q_norm: RmsNorm,
    /// `[head_dim]`, unless borrowed.
    #[param]
    pub k_norm: Option<RmsNorm>,
    /// Query heads.
    pub n_heads: i32,
    /// Key/value heads.
    pub n_kv_heads: i32,
    /// Epsilon of the value norm.
    pub eps: f32,
    /// The rotation of queries and keys.
    pub rope: Rope,
}

impl SharedKvAttention {
    /// `n_heads` query heads and `n_kv_heads` key/value heads of `head_dim` over `hidden`,
    /// norms with `eps`, rotating with `rope`, projections as `kv` says.
    pub fn new(
        hidden: usize,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
        eps: f32,
        rope: Rope,
        kv: KvProjections,
    ) -> Result<Self> {
        let (hidden, d) = (hidden as i32, head_dim as i32);
        let width = |heads: usize| {
            i32::try_from(heads)
                .ok()
                .and_then(|h| h.checked_mul(d))
                .ok_or_else(|| Exception::custom("attention: heads exceed MLX's size limit"))
        };
        let (q_dim, kv_dim) = (width(n_heads)?, width(n_kv_heads)?);
        let own = kv != KvProjections::Borrowed;
        let linear = |on: bool| on.then(|| Linear::new(hidden, kv_dim, false)).transpose();
        Ok(SharedKvAttention {
            q_proj: Linear::new(hidden, q_dim, false)?,
            k_proj: linear(own)?,
            v_proj: linear(kv == KvProjections::KeysAndValues)?,
            o_proj: Linear::new(q_dim, hidden, false)?,
            q_norm: RmsNorm::new(d, eps)?,
            k_norm: own.then(|| RmsNorm::new(d, eps)).transpose()?,
            n_heads: n_heads as i32,
            n_kv_heads: n_kv_heads as i32,
            eps,
            rope,
        })
    }

    /// `x` `[B, L, hidden]` to `[B, L, hidden]`, and the keys and values it attended to (for
    /// the layers that share them). With `shared`, the layer attends to those (rotating its
    /// queries for their positions) and leaves `cache` alone; otherwise it computes its own,
    /// rotated for the positions after what `cache` holds, and appends them to `cache`.
    pub fn forward(
        &self,
        x: &Array,
        mask: &AttentionMask,
        cache: Option<&mut Cache>,
        shared: Option<&SharedKv>,
    ) -> Result<(Array, SharedKv)> {
        let (b, l) = (x.dim(0), x.dim(1));
        let queries = self.q_proj.forward(x)?.reshape(&[b, l, self.n_heads, -1])?;
        let queries = split_heads(&self.q_norm.forward(&queries)?, self.n_heads)?;
        let kv = match shared {
            Some(kv) => kv.clone(),
            None => self.own_keys_and_values(x, cache)?,
        };
        let queries = kv.offset.rotate(&self.rope, &queries)?;
        let output = scaled_dot_product_attention(&queries, &kv.keys, &kv.values, 1.0, mask, None)?;
        Ok((self.o_proj.forward(&merge_heads(&output)?)?, kv))
    }

    fn own_keys_and_values(&self, x: &Array, cache: Option<&mut Cache>) -> Result<SharedKv> {
        let (Some(k_proj), Some(k_norm)) = (&self.k_proj, &self.k_norm) else {
            return Err(Exception::custom(
                "a KV-shared layer was given no keys and values to share",
            ));
        };
        let (b, l) = (x.dim(0), x.dim(1));
        let keys = k_proj.forward(x)?.reshape(&[b, l, self.n_kv_heads, -1])?;
        let values = match &self.v_proj {
            Some(v_proj) => v_proj.forward(x)?.reshape(&[b, l, self.n_kv_heads, -1])?,
            None => keys.clone(),
        };
        let offset = RopeOffset::of(cache.as_deref());
        let keys = offset.rotate(
            &self.rope,
            &split_heads(&k_norm.forward(&keys)?, self.n_kv_heads)?,
        )?;
        let values = split_heads(&fast::rms_norm(&values, None, self.eps)?, self.n_kv_heads)?;
        let (keys, values) = match cache {
            Some(Cache::Quantized(_)) => {
                return Err(Exception::custom(
                    "KV-shared attention cannot use a quantized cache (nor can the reference)",
                ))
            }
            Some(c) => c.update_and_fetch(&keys, &values)?,
            None => (keys, values),
        };
        Ok(SharedKv {
            keys,
            values,
            offset,
        })
    }
}

/// A layer of a stack with KV-shared layers, for [`forward_layers`].
pub trait SharedKvLayer {
    /// The attention window of a sliding-window layer; `None`: full attention.
    fn window(&self) -> Option<i32>;

    /// The layer on `x`, with its slice of the per-layer inputs (`[B, L, width]`) when the
    /// stack has them, attending to `shared` when given (a KV-shared layer) or to its own keys
    /// and values (appended to `cache`); returns its output and the keys and values it used.
    fn forward(
        &self,
        x: &Array,
        mask: &AttentionMask,
        cache: Option<&mut Cache>,
        per_layer_input: Option<&Array>,
        shared: Option<&SharedKv>,
    ) -> Result<(Array, SharedKv)>;
}

/// Runs `layers` on `x` (whatever the layers carry from one to the next) for `n` new tokens:
/// one mask per distinct window, made from the cache of the first layer with that window (an
/// owner, as [`KvSources`] checks); `cache` holds one entry per owner layer (or none at all),
/// and the KV-shared layers attend with their source's keys and values from this same pass.
/// `per_layer` (`[B, L, layers, width]`) gives each layer its slice.
pub fn forward_layers<L: SharedKvLayer>(
    layers: &[L],
    sources: &KvSources,
    mut x: Array,
    n: i32,
    per_layer: Option<&Array>,
    cache: &mut [Cache],
) -> Result<Array> {
    let mut masks: Vec<(Option<i32>, AttentionMask)> = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let window = layer.window();
        if masks.iter().all(|(w, _)| *w != window) {
            let mask = create_attention_mask(n, cache.get(i), window, false)?;
            masks.push((window, mask));
        }
    }
    let mut kvs: Vec<Option<SharedKv>> = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let window = layer.window();
        let mask = masks
            .iter()
            .find(|(w, _)| *w == window)
            .map(|(_, m)| m)
            .ok_or_else(|| Exception::custom("no mask for a layer's attention window"))?;
        let input = per_layer
            .map(|p| p.try_index((.., .., i as i32, ..)))
            .transpose()?;
        let (shared, c) = match sources.source(i) {
            Some(j) => {
                let kv = kvs
                    .get(j)
                    .and_then(Option::as_ref)
                    .ok_or_else(|| Exception::custom("a KV-shared layer's source has not run"))?;
                (Some(kv), None)
            }
            None => (None, cache.get_mut(i)),
        };
        let (out, kv) = layer.forward(&x, mask, c, input.as_ref(), shared)?;
        x = out;
        kvs.push((!sources.is_shared(i)).then_some(kv));
    }
    Ok(x)
}

/// The caches of a stack with KV-shared layers: one per owner layer, rotating over its window
/// for a sliding-window layer, growing for a full-attention one.
pub fn owner_caches<L: SharedKvLayer>(layers: &[L], sources: &KvSources) -> Vec<Cache> {
    layers
        .iter()
        .take(sources.owners())
        .map(|l| match l.window() {
            Some(window) => Cache::rotating(window, 0),
            None => Cache::kv(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| format!("{s}_attention")).collect()
    }

    #[test]
    fn shared_layers_borrow_from_the_last_owner_of_their_type() {
        let t = types(&["sliding", "full", "sliding", "full", "sliding", "full"]);
        let s = KvSources::new(&t, 3).expect("sources");
        assert_eq!(s.owners(), 3);
        let got: Vec<Option<usize>> = (0..6).map(|i| s.source(i)).collect();
        assert_eq!(got, [None, None, None, Some(1), Some(2), Some(1)]);
        assert!(s.is_shared(3) && !s.is_shared(2));
    }

    #[test]
    fn a_shared_type_without_an_owner_or_no_owner_at_all_is_refused() {
        let t = types(&["sliding", "sliding", "full"]);
        let err = KvSources::new(&t, 1).unwrap_err();
        assert!(err.to_string().contains("KV-shared layer 2"), "{err}");
        let err = KvSources::new(&t, 3).unwrap_err();
        assert!(err.to_string().contains("num_kv_shared_layers"), "{err}");
        assert!(KvSources::new(&t, 7).is_err());
        assert_eq!(KvSources::new(&t, 0).expect("none shared").owners(), 3);
    }
}
