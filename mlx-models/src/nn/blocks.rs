//! Small pieces every multi-head attention repeats: the head-count checks of a config, moving
//! heads between `[B, L, heads * head_dim]` and `[B, heads, L, head_dim]`, and the RoPE-then-
//! attend tail (positions from the cache's offset), as mlx-lm's attention modules write them.

use mlx_rs::error::Result;
use mlx_rs::Array;

use crate::args::ArgsError;
use crate::cache::Cache;
use crate::nn::attention::attend;
use crate::nn::mask::AttentionMask;
use crate::nn::rope::Rope;

/// Fills `num_key_value_heads` with `num_attention_heads` when absent and checks that it
/// divides them; unless the config gives `head_dim`, also checks that `hidden_size` divides
/// into the heads. Errors name the keys.
pub fn check_heads(
    hidden_size: usize,
    num_attention_heads: usize,
    num_key_value_heads: &mut Option<usize>,
    explicit_head_dim: bool,
) -> std::result::Result<(), ArgsError> {
    let heads = num_attention_heads;
    let kv_heads = *num_key_value_heads.get_or_insert(heads);
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(ArgsError::invalid(
            &["num_attention_heads", "num_key_value_heads"],
            format!("`num_attention_heads` ({heads}) is not a multiple of `num_key_value_heads` ({kv_heads})"),
        ));
    }
    if !explicit_head_dim && hidden_size % heads != 0 {
        return Err(ArgsError::invalid(
            &["hidden_size", "num_attention_heads"],
            format!("`hidden_size` ({hidden_size}) is not divisible by `num_attention_heads` ({heads})"),
        ));
    }
    Ok(())
}

/// `[B, L, heads * head_dim]` (or `[B, L, heads, head_dim]`) to `[B, heads, L, head_dim]`.
pub fn split_heads(x: &Array, heads: i32) -> Result<Array> {
    let (b, l) = (x.dim(0), x.dim(1));
    x.reshape(&[b, l, heads, -1])?.transpose_axes(&[0, 2, 1, 3])
}

/// `[B, heads, L, head_dim]` to `[B, L, heads * head_dim]`.
pub fn merge_heads(x: &Array) -> Result<Array> {
    let (b, l) = (x.dim(0), x.dim(2));
    x.transpose_axes(&[0, 2, 1, 3])?.reshape(&[b, l, -1])
}

/// Rotates `queries` and `keys` (`[B, heads, L, head_dim]`) for the positions after what
/// `cache` holds, attends through [`attend`] (which stores the keys and values in the cache),
/// and merges the heads of the output: `[B, L, heads * head_dim]`, ready for `o_proj`.
pub fn rope_and_attend(
    queries: &Array,
    keys: &Array,
    values: &Array,
    rope: &Rope,
    cache: Option<&mut Cache>,
    scale: f32,
    mask: &AttentionMask,
) -> Result<Array> {
    let offset = cache.as_ref().map_or(0, |c| c.offset());
    let queries = rope.forward(queries, offset)?;
    let keys = rope.forward(keys, offset)?;
    merge_heads(&attend(&queries, &keys, values, cache, scale, mask, None)?)
}
