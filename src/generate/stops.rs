//! When a row ends (eos, a stop string in its new text), and how much of a growing text is settled.

use anyhow::Result;

use super::GenerationConfig;
use crate::tokenizer::Tokenizer;

/// When a row ends: on eos, or once its new text holds a stop string.
pub(super) struct Stops<'a> {
    tokenizer: &'a Tokenizer,
    eos: Option<i64>,
    strings: &'a [String],
}

impl<'a> Stops<'a> {
    pub fn new(tokenizer: &'a Tokenizer, config: &'a GenerationConfig) -> Self {
        Self { tokenizer, eos: config.eos_token_id, strings: &config.stop_strings }
    }

    /// Whether a row of `input` whose new tokens are `new_ids` has ended.
    pub fn hit(&self, input: &[i64], new_ids: &[i64]) -> Result<bool> {
        if new_ids.last().is_some_and(|&t| Some(t) == self.eos) {
            return Ok(true);
        }
        if self.strings.is_empty() {
            return Ok(false);
        }
        let text = self.tokenizer.decode_after(input, new_ids)?;
        Ok(self.strings.iter().any(|s| text.contains(s.as_str())))
    }
}

/// `text` up to the first stop string in it: what a row that ended there says.
pub fn cut_at_stop<'t>(text: &'t str, stop_strings: &[String]) -> &'t str {
    let end = stop_strings.iter().filter_map(|s| text.find(s.as_str())).min().unwrap_or(text.len());
    &text[..end]
}

/// How much of a growing `text` cannot change any more (bytes): all but an unfinished UTF-8 character (shown by
/// the decoder as U+FFFD) and an ending that could start a stop string. What streams may show so far.
pub fn settled(text: &str, stop_strings: &[String]) -> usize {
    let mut end = text.trim_end_matches('\u{FFFD}').len();
    for stop in stop_strings {
        let held =
            (1..stop.len()).rev().find(|&k| stop.is_char_boundary(k) && text[..end].ends_with(&stop[..k])).unwrap_or(0);
        end -= held;
    }
    end
}
