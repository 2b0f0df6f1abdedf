//! [`PromptCache`]: the caches of finished requests, kept by the tokens they hold, so that a
//! later prompt sharing a prefix with one (turn N of a conversation) prefills only the rest.

use crate::cache::Cache;

/// Caches of finished requests keyed by their tokens, least recently used dropped first once
/// their size passes a bound.
#[derive(Debug, Default)]
pub struct PromptCache {
    entries: Vec<Entry>,
    max_bytes: usize,
    bytes: usize,
    clock: u64,
    hits: u64,
    reused_tokens: u64,
}

#[derive(Debug)]
struct Entry {
    tokens: Vec<u32>,
    caches: Vec<Cache>,
    bytes: usize,
    used: u64,
}

/// The length of the common prefix of `a` and `b`.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PromptCache {
    /// An empty cache holding at most `max_bytes` (0: nothing is kept).
    pub fn new(max_bytes: usize) -> Self {
        PromptCache {
            max_bytes,
            ..Self::default()
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Lookups that reused a cache, and the prompt tokens they did not have to prefill.
    pub fn hits(&self) -> (u64, u64) {
        (self.hits, self.reused_tokens)
    }

    /// Caches for `prompt` that already hold its first `n` tokens (the most any entry
    /// offers, at most all but the last token, which must be forwarded for its logits),
    /// copied from the entry (which stays). `None` when no entry shares a usable prefix.
    pub fn fetch(&mut self, prompt: &[u32]) -> Option<(Vec<Cache>, usize)> {
        let limit = prompt.len().checked_sub(1)?;
        let mut best: Option<(usize, usize)> = None;
        for (i, e) in self.entries.iter().enumerate() {
            let n = common_prefix(&e.tokens, prompt).min(limit);
            let trimmable = e.caches.iter().all(Cache::is_trimmable);
            if n == 0 || (n < e.tokens.len() && !trimmable) {
                continue;
            }
            if best.is_none_or(|(_, m)| n > m) {
                best = Some((i, n));
            }
        }
        let (i, n) = best?;
        self.clock += 1;
        let entry = &mut self.entries[i];
        entry.used = self.clock;
        let mut caches = entry.caches.clone();
        let extra = entry.tokens.len() - n;
        if extra > 0 {
            let extra = i32::try_from(extra).ok()?;
            for c in &mut caches {
                if c.trim(extra) != extra {
                    return None;
                }
            }
        }
        self.hits += 1;
        self.reused_tokens += n as u64;
        Some((caches, n))
    }

    /// Keeps `caches`, which hold `tokens`; entries whose tokens are a prefix of these are
    /// dropped (this one offers all they did), then the least recently used until the size
    /// fits.
    pub fn insert(&mut self, tokens: Vec<u32>, caches: Vec<Cache>) {
        let bytes: usize = caches.iter().map(Cache::nbytes).sum();
        if bytes > self.max_bytes || tokens.is_empty() {
            return;
        }
        let before = self.entries.len();
        self.entries
            .retain(|e| !(e.tokens.len() <= tokens.len() && tokens.starts_with(&e.tokens)));
        if self.entries.len() != before {
            self.bytes = self.entries.iter().map(|e| e.bytes).sum();
        }
        self.clock += 1;
        self.entries.push(Entry {
            tokens,
            caches,
            bytes,
            used: self.clock,
        });
        self.bytes += bytes;
        while self.bytes > self.max_bytes {
            let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.used)
                .map(|(i, _)| i)
            else {
                break;
            };
            let e = self.entries.swap_remove(oldest);
            self.bytes -= e.bytes;
        }
    }
}
