//! Stop strings matched in the decoded text, across token boundaries: [`StopStrings`] holds
//! back any tail of the text that could still become a stop string, so that no part of one
//! is ever emitted.
//!
//! ```
//! use mlx_models::stop::StopStrings;
//!
//! let mut stops = StopStrings::new(["\n\nUser:"]).unwrap();
//! assert_eq!(stops.push("Hello\n"), ("Hello".to_string(), false)); // "\n" is held back
//! assert_eq!(stops.push("\nUs"), (String::new(), false));
//! assert_eq!(stops.push("er: hi"), (String::new(), true)); // the stop string is not emitted
//! ```

/// The stop strings of one generation and the text held back.
#[derive(Debug, Clone)]
pub struct StopStrings {
    stops: Vec<String>,
    pending: String,
    stopped: bool,
}

/// A stop string that cannot match anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a stop string must not be empty")]
pub struct EmptyStopString;

impl StopStrings {
    /// Matches any of `stops` (none of them empty).
    pub fn new<S: Into<String>>(
        stops: impl IntoIterator<Item = S>,
    ) -> Result<Self, EmptyStopString> {
        let stops: Vec<String> = stops.into_iter().map(Into::into).collect();
        if stops.iter().any(String::is_empty) {
            return Err(EmptyStopString);
        }
        Ok(StopStrings {
            stops,
            pending: String::new(),
            stopped: false,
        })
    }

    /// True when there is no stop string.
    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// True once a stop string was found.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Adds the next piece of text; returns the text that can be emitted now and whether a stop
    /// string was found (then the text before it is returned, and the rest is dropped). After a
    /// stop, every push returns nothing.
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        self.pending.push_str(piece);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = first {
            self.stopped = true;
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        // Hold back the longest tail that is the start of a stop string.
        let held = self
            .pending
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.pending[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.pending.len());
        let out = self.pending[..held].to_string();
        self.pending.drain(..held);
        (out, false)
    }

    /// The text held back, at the end of the generation (it did not become a stop string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` and returns what was emitted and whether it stopped.
    fn feed(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut s = StopStrings::new(stops.iter().copied()).unwrap();
        let mut out = String::new();
        for p in pieces {
            let (text, hit) = s.push(p);
            out.push_str(&text);
            if hit {
                return (out, true);
            }
        }
        out.push_str(&s.finish());
        (out, false)
    }

    #[test]
    fn a_stop_split_over_pieces_is_caught_and_not_emitted() {
        assert_eq!(
            feed(&["END"], &["ab", "cE", "N", "Dxyz"]),
            ("abc".into(), true)
        );
        assert_eq!(feed(&["END"], &["abEND"]), ("ab".into(), true));
        assert_eq!(feed(&["END"], &["END"]), (String::new(), true));
    }

    #[test]
    fn a_false_start_is_released() {
        // "EN" looked like the start of "END", then was not.
        assert_eq!(feed(&["END"], &["aEN", "x", "b"]), ("aENxb".into(), false));
        // Held back at the end and released by finish.
        assert_eq!(feed(&["END"], &["aE"]), ("aE".into(), false));
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        assert_eq!(feed(&["xyz", "b"], &["axyzb"]), ("a".into(), true));
        assert_eq!(feed(&["yz", "xy"], &["axyz"]), ("a".into(), true));
    }

    #[test]
    fn multibyte_text_is_cut_on_character_boundaries() {
        assert_eq!(feed(&["é!"], &["café", "!", "x"]), ("caf".into(), true));
        assert_eq!(feed(&["日本"], &["今日", "は"]), ("今日は".into(), false));
        assert_eq!(feed(&["本語"], &["日本", "語です"]), ("日".into(), true));
    }

    #[test]
    fn empty_stop_strings_are_refused_and_no_stops_pass_everything() {
        assert!(StopStrings::new([""]).is_err());
        assert_eq!(feed(&[], &["a", "b"]), ("ab".into(), false));
    }
}
