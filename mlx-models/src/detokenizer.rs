//! A streaming detokenizer: turns tokens into text one token at a time and only ever hands out
//! whole characters.
//!
//! It works with any `tokenizers` tokenizer (byte-level BPE, SentencePiece with byte fallback,
//! WordPiece, ...): it decodes a short window of recent tokens twice, without and with the new
//! token, and emits the difference once the decoded text no longer ends in an incomplete
//! character (which the decoders render as U+FFFD). The window starts one emission back, so
//! decoders that treat the first token specially (a stripped leading space) see the same first
//! token in both decodes. At the end, [`StreamingDetokenizer::text`] equals the tokenizer's
//! decode of all the tokens (special tokens kept, as the reference's detokenizers do).

use std::sync::Arc;

use crate::tokenizer::TokenizerError;

/// Incremental decoding of a token stream.
#[derive(Debug, Clone)]
pub struct StreamingDetokenizer {
    tokenizer: Arc<tokenizers::Tokenizer>,
    tokens: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    text: String,
    last_segment_at: usize,
}

impl StreamingDetokenizer {
    /// A detokenizer over `tokenizer`.
    pub fn new(tokenizer: Arc<tokenizers::Tokenizer>) -> Self {
        StreamingDetokenizer {
            tokenizer,
            tokens: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
            text: String::new(),
            last_segment_at: 0,
        }
    }

    /// Forgets every token.
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.prefix_offset = 0;
        self.read_offset = 0;
        self.text.clear();
        self.last_segment_at = 0;
    }

    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        // `tokenizers` panics on some decoder configurations it does not check (a `Strip`
        // decoder past a token's length): an error, as `Tokenizer::decode` gives.
        crate::tokenizer::guarded(|| self.tokenizer.decode(ids, false))
            .map_err(|what| TokenizerError::Decode(format!("the tokenizers crate failed: {what}")))?
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// Adds a token and returns the text it completes (possibly empty: an incomplete character
    /// is held back until a later token completes it).
    pub fn add_token(&mut self, token: u32) -> Result<String, TokenizerError> {
        self.tokens.push(token);
        let prefix = self.decode(&self.tokens[self.prefix_offset..self.read_offset])?;
        let full = self.decode(&self.tokens[self.prefix_offset..])?;
        if full.ends_with('\u{FFFD}') || full.len() <= prefix.len() {
            return Ok(String::new());
        }
        let Some(new) = full.strip_prefix(prefix.as_str()) else {
            // The decoder rewrote earlier text (rare normalisations): wait for more tokens.
            return Ok(String::new());
        };
        let new = new.to_string();
        self.text.push_str(&new);
        self.prefix_offset = self.read_offset;
        self.read_offset = self.tokens.len();
        Ok(new)
    }

    /// Emits whatever is held back (an incomplete character at the very end is emitted as
    /// U+FFFD, as a full decode would show it).
    pub fn finalize(&mut self) -> Result<String, TokenizerError> {
        if self.read_offset == self.tokens.len() {
            return Ok(String::new());
        }
        let prefix = self.decode(&self.tokens[self.prefix_offset..self.read_offset])?;
        let full = self.decode(&self.tokens[self.prefix_offset..])?;
        let new = match full.strip_prefix(prefix.as_str()) {
            Some(rest) => rest.to_string(),
            None => {
                // Re-decode everything and take what was not emitted yet.
                let all = self.decode(&self.tokens)?;
                all.get(self.text.len()..).unwrap_or_default().to_string()
            }
        };
        self.text.push_str(&new);
        self.prefix_offset = self.tokens.len();
        self.read_offset = self.tokens.len();
        Ok(new)
    }

    /// All the text emitted so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text emitted since the previous call (the reference's `last_segment`).
    pub fn last_segment(&mut self) -> String {
        let seg = self.text[self.last_segment_at..].to_string();
        self.last_segment_at = self.text.len();
        seg
    }

    /// Every token added.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
}
