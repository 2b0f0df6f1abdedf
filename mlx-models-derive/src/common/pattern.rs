//! Weight patterns (`"model.layers.{n}.mlp"`), checked at compile time. The runtime twin is
//! `mlx_models::weights`; both read the same syntax.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Lit(String),
    Capture(String),
    Star,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub tokens: Vec<Tok>,
}

impl Pattern {
    /// Parses a pattern; the error is a message about `text`.
    pub fn parse(text: &str, allow_star: bool) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("empty weight pattern".to_owned());
        }
        let mut tokens = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        if c == '{' {
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(format!("unbalanced `{{` in weight pattern `{text}`; close the capture with `}}`"));
                    }
                    if name.is_empty() {
                        return Err(format!("empty capture `{{}}` in weight pattern `{text}`; name it, as in `{{n}}`"));
                    }
                    if !is_name(&name) {
                        return Err(format!("capture `{{{name}}}` in weight pattern `{text}` is not a name; use letters, digits and `_`"));
                    }
                    if tokens.iter().any(|t| *t == Tok::Capture(name.clone())) {
                        return Err(format!(
                            "capture `{{{name}}}` appears twice in weight pattern `{text}`"
                        ));
                    }
                    if !lit.is_empty() {
                        tokens.push(Tok::Lit(std::mem::take(&mut lit)));
                    }
                    if matches!(tokens.last(), Some(Tok::Capture(_) | Tok::Star)) {
                        return Err(format!(
                            "two captures touch in weight pattern `{text}`; put text between them"
                        ));
                    }
                    tokens.push(Tok::Capture(name));
                }
                '}' => {
                    return Err(format!(
                        "unbalanced `}}` in weight pattern `{text}`; open the capture with `{{`"
                    ));
                }
                '*' if allow_star => {
                    if !lit.is_empty() {
                        tokens.push(Tok::Lit(std::mem::take(&mut lit)));
                    }
                    tokens.push(Tok::Star);
                }
                '*' => {
                    return Err(format!("`*` in weight pattern `{text}`; only `drop` takes `*`, use a capture such as `{{n}}`"));
                }
                c if c.is_whitespace() => {
                    return Err(format!("whitespace in weight pattern `{text}`"));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            tokens.push(Tok::Lit(lit));
        }
        Ok(Pattern { tokens })
    }

    pub fn captures(&self) -> Vec<&str> {
        self.tokens
            .iter()
            .filter_map(|t| match t {
                Tok::Capture(c) => Some(c.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The pattern with every capture filled by `0`: a key it produces.
    pub fn sample(&self) -> String {
        self.tokens
            .iter()
            .map(|t| match t {
                Tok::Lit(l) => l.as_str(),
                Tok::Capture(_) => "0",
                Tok::Star => "x",
            })
            .collect()
    }

    /// Whether the pattern matches `key` or a prefix of it that ends at a `.`.
    pub fn matches_prefix(&self, key: &str) -> bool {
        self.walk(0, key, 0)
    }

    fn walk(&self, t: usize, key: &str, pos: usize) -> bool {
        let Some(tok) = self.tokens.get(t) else {
            let rest = &key[pos..];
            return rest.is_empty() || rest.starts_with('.');
        };
        match tok {
            Tok::Lit(l) => {
                key[pos..].starts_with(l.as_str()) && self.walk(t + 1, key, pos + l.len())
            }
            Tok::Capture(_) => {
                let seg_end = key[pos..].find('.').map_or(key.len(), |i| pos + i);
                (pos + 1..=seg_end)
                    .any(|end| key.is_char_boundary(end) && self.walk(t + 1, key, end))
            }
            Tok::Star => {
                (pos..=key.len()).any(|end| key.is_char_boundary(end) && self.walk(t + 1, key, end))
            }
        }
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_are_listed_in_order() {
        let p = Pattern::parse("model.layers.{n}.mlp.experts.{e}", false).expect("valid");
        assert_eq!(p.captures(), ["n", "e"]);
        assert_eq!(p.sample(), "model.layers.0.mlp.experts.0");
    }

    #[test]
    fn unbalanced_braces_are_rejected() {
        let e = Pattern::parse("a.{n.b", false).unwrap_err();
        assert!(e.starts_with("unbalanced `{`"), "{e}");
        let e = Pattern::parse("a.n}.b", false).unwrap_err();
        assert!(e.starts_with("unbalanced `}`"), "{e}");
    }

    #[test]
    fn star_only_where_allowed() {
        assert!(Pattern::parse("*.inv_freq", true).is_ok());
        assert!(Pattern::parse("*.inv_freq", false)
            .unwrap_err()
            .contains("only `drop` takes `*`"));
    }

    #[test]
    fn prefix_match_ends_at_a_dot() {
        let p = Pattern::parse("model.norm", false).expect("valid");
        assert!(p.matches_prefix("model.norm.weight"));
        assert!(!p.matches_prefix("model.norm_f.weight"));
    }
}
