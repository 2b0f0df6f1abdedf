//! Shared building blocks of the architecture files.
//!
//! - [`mask`]: causal, sliding-window and padding masks ([`mask::AttentionMask`]);
//! - [`attention`]: the one attention entry over the fused kernel, with grouped-query heads,
//!   sinks and the quantized-cache path;
//! - [`mla`]: multi-head latent attention (deepseek_v3's), with its per-head projections and
//!   the split of a fused `kv_b_proj`, and its plain form expanded through `kv_b_proj`
//!   (deepseek_v2's, minicpm3's);
//! - [`dsa`]: DeepSeek sparse attention, the indexer that picks each query's top-k keys for
//!   a latent attention (deepseek_v32's);
//! - [`block_sparse`]: block-sparse attention (phi3small's local and vertical blocks);
//! - [`rope`]: every RoPE variant, built from a `rope_scaling` / `rope_parameters` config;
//! - [`quantized`]: linear and embedding layers loading mlx-community's quantized layout;
//! - [`switch`]: mixture-of-experts layers over `gather_mm` / `gather_qmm`;
//! - [`moe`]: the routers of the mixture-of-experts families, the sparse block with its shared
//!   expert, and a feed-forward that is dense in some layers and sparse in others;
//! - [`gemma`]: what the gemma family shares (embedding scale, GeGLU MLP, soft-capping,
//!   local/global layers, gemma3n's and gemma4's per-layer inputs);
//! - [`shared_kv`]: layers that attend with an earlier layer's keys and values (gemma3n's and
//!   gemma4's KV-shared layers) and the attention they share;
//! - [`llama4`]: what the Llama 4 text models share: the attention with RoPE in some layers,
//!   weightless q/k norms and temperature tuning, and the layer with its `feed_forward`;
//! - [`gpt`]: the GPT-2 family's layer in its checkpoint names (fused `c_attn`, `c_fc` /
//!   `c_proj` feed-forward, `ln_1` / `ln_2`);
//! - [`gated_delta`]: the gated delta rule of the linear-attention layers (qwen3_next's): the
//!   recurrence over the state `[B, Hv, Dv, Dk]` step by step, or in chunks for a prompt, and
//!   their gated RMSNorm;
//! - [`qwen3_next`]: what qwen3_next and qwen3_5 share: the gated delta net layer, the
//!   attention with an output gate, the hybrid layer and stack;
//! - [`ssm`]: what the state-space families share: the causal depthwise convolution with its
//!   cached state, Mamba2's gated RMSNorm, the SSD scan and Mamba's selective scan;
//! - [`mamba`]: the Mamba (v1) mixer on those blocks (mamba, falcon_mamba, jamba);
//! - [`rglru`]: Griffin's real-gated linear recurrent unit and its linear scan
//!   (recurrent_gemma);
//! - [`either`]: a module of one of two kinds under one name (hybrid layers);
//! - [`hybrid`]: what the stacks of Mamba2 mixers and attention share: each layer's cache by
//!   its kind, the attention and SSM masks, a mixer of the kind chosen per layer;
//! - [`activations`] and [`norm`]: gated activations, RMSNorm and LayerNorm;
//! - [`transformer`]: the llama-style decoder in pieces (attention, gated MLP, pre-norm layer,
//!   the stack with its masks and caches) that llama-like architectures assemble.
//!
//! The caches live in [`crate::cache`].

/// `ModuleParameters` for an enum of modules whose parameters are those of the variant it holds,
/// under the field's own name (a feed-forward that is dense in some layers and sparse in
/// others, a mixer that is recurrent in some layers and attention in others), and the private
/// `inner` / `inner_mut` that give the held variant.
macro_rules! variant_parameters {
    (impl<$($g:ident : $b:path),*> for $ty:ty { $($variant:path),+ $(,)? }) => {
        impl<$($g: $b),*> $ty {
            fn inner(&self) -> &dyn mlx_rs::module::ModuleParameters {
                match self {
                    $($variant(m) => m,)+
                }
            }

            fn inner_mut(&mut self) -> &mut dyn mlx_rs::module::ModuleParameters {
                match self {
                    $($variant(m) => m,)+
                }
            }
        }

        impl<$($g: $b),*> mlx_rs::module::ModuleParameters for $ty {
            fn num_parameters(&self) -> usize {
                self.inner().num_parameters()
            }

            fn parameters(&self) -> mlx_rs::module::ModuleParamRef<'_> {
                self.inner().parameters()
            }

            fn parameters_mut(&mut self) -> mlx_rs::module::ModuleParamMut<'_> {
                self.inner_mut().parameters_mut()
            }

            fn trainable_parameters(&self) -> mlx_rs::module::ModuleParamRef<'_> {
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
    };
}

pub mod activations;
pub mod attention;
pub mod block_sparse;
pub mod blocks;
pub mod dsa;
pub mod either;
pub mod gated_delta;
pub mod gemma;
pub mod gpt;
pub mod hybrid;
pub mod llama4;
pub mod mamba;
pub mod mask;
pub mod mla;
pub mod moe;
pub mod norm;
pub mod quantized;
pub mod qwen3_next;
pub mod rglru;
pub mod rope;
pub mod shared_kv;
pub mod ssm;
pub mod switch;
pub mod transformer;
