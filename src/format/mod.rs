//! Prompt formats: ruPrompts' template language compiled against a tokenizer, and formatting of data rows into
//! text with the char and byte range of every inserted field (truncation needs them).
//!
//! Deliberate differences from ruPrompts 0.1.4, both where its regex misreads a template: a phrase may span
//! lines (`<P>\nВопрос:</P>` is a phrase; ruPrompts leaves it as text), and `<P>` is one token when another
//! prompt token comes before the next `</P>` (ruPrompts would take `<P>{text}<P>Кратко:</P>` as one phrase
//! `{text}<P>Кратко:`). Formats loaded from a compiled template behave exactly as stored.

mod parse;

use std::collections::BTreeMap;
use std::ops::Range;

use serde_json::Value;
use thiserror::Error;

pub use parse::{Piece, TemplateError};

use crate::tokenizer::Tokenizer;

/// ruPrompts' prompt token, and its keyed form for multi-prompt setups.
pub const PROMPT_TOKEN: &str = "<|P|>";

/// The prompt token of `key` (`<|[key]P|>`), or `<|P|>` without a key.
pub fn prompt_token_for(key: Option<&str>) -> String {
    key.map_or_else(|| PROMPT_TOKEN.to_string(), |k| format!("<|[{k}]P|>"))
}

/// The slot that receives each candidate answer in multiple-choice scoring and training (`{@candidate}`): not a
/// plain name, so it never collides with a data field (MuSeRC's `answer` is one).
pub const CANDIDATE_SLOT: &str = "@candidate";

/// `template` (a source template) with its trainable tokens taken out: `<P*N>` dropped, `<P>phrase</P>` kept as
/// its phrase. What a bare model reads where the prompt would stand: a text-to-text config's zero-shot setting.
pub fn without_prompt(template: &str) -> Result<String, FormatError> {
    let pieces = parse::parse_source(template)
        .map_err(|source| FormatError::Template { template: template.to_string(), source })?;
    let escaped = |t: &str| t.replace('{', "{{").replace('}', "}}");
    Ok(pieces
        .into_iter()
        .map(|(_, piece)| match piece {
            Piece::Prompt(_) => String::new(),
            Piece::Phrase(t) | Piece::Text(t) => escaped(&t),
            Piece::Field(name) => format!("{{{name}}}"),
        })
        .collect())
}

/// A data row: field name → value (strings, or numbers written as text).
pub type Row = serde_json::Map<String, Value>;

#[derive(Debug, Error)]
pub enum FormatError {
    #[error("template {template:?}: {source}")]
    Template { template: String, source: TemplateError },
    #[error("row {row} has no field '{field}' (it has: {available})")]
    MissingField {
        field: String,
        available: String,
        /// The row as compact JSON, shortened to about 80 chars: enough to find it in the data.
        row: String,
    },
    #[error("field '{field}' is {found}; expected text or a number")]
    BadValue { field: String, found: &'static str },
}

/// A compiled prompt format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptFormat {
    template: String,
    /// `Prompt`, `Field` and `Text` pieces only.
    pieces: Vec<Piece>,
    /// Prompt-token index (0-based among prompt tokens) → token id whose embedding initialises it.
    init_tokens: BTreeMap<usize, u32>,
    prompt_token: String,
}

/// A formatted row: the text and where each field's value sits in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Formatted {
    pub text: String,
    pub spans: Vec<FieldSpan>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpan {
    pub field: String,
    /// Range in chars (Unicode code points), as Python and tokenizer char offsets count.
    pub chars: Range<usize>,
    /// Range in UTF-8 bytes, for slicing the Rust string.
    pub bytes: Range<usize>,
}

impl PromptFormat {
    /// Compiles a source template; phrases are tokenized with `tokenizer` (no special tokens added).
    pub fn compile(template: &str, tokenizer: &Tokenizer) -> Result<Self, FormatError> {
        let err = |source| FormatError::Template { template: template.to_string(), source };
        let mut pieces = Vec::new();
        let mut init_tokens = BTreeMap::new();
        let mut prompt_index = 0;
        for (at, piece) in parse::parse_source(template).map_err(err)? {
            match piece {
                Piece::Phrase(phrase) => {
                    let ids = tokenizer.encode(&phrase).map_err(|_| err(TemplateError::EmptyPhraseTokens(at)))?;
                    let ids = ids.get_ids();
                    if ids.is_empty() {
                        return Err(err(TemplateError::EmptyPhraseTokens(at)));
                    }
                    for (k, &id) in ids.iter().enumerate() {
                        init_tokens.insert(prompt_index + k, id);
                    }
                    prompt_index += ids.len();
                    pieces.push(Piece::Prompt(ids.len()));
                }
                Piece::Prompt(n) => {
                    prompt_index += n;
                    pieces.push(Piece::Prompt(n));
                }
                other => pieces.push(other),
            }
        }
        Ok(Self { template: template.to_string(), pieces, init_tokens, prompt_token: PROMPT_TOKEN.to_string() })
    }

    /// Rebuilds a format from `prompt.json` (`template` and `compiled_template`); the compiled form is the
    /// source of truth, so prompts saved by ruPrompts format exactly as they did there. No init tokens.
    pub fn from_compiled(template: &str, compiled_template: &str) -> Result<Self, FormatError> {
        let (located, token) = parse::parse_compiled(compiled_template)
            .map_err(|source| FormatError::Template { template: compiled_template.to_string(), source })?;
        Ok(Self {
            template: template.to_string(),
            pieces: located.into_iter().map(|(_, p)| p).collect(),
            init_tokens: BTreeMap::new(),
            prompt_token: token.unwrap_or_else(|| PROMPT_TOKEN.to_string()),
        })
    }

    /// The same format with the prompt token of `key` (`<|[key]P|>`), for multi-prompt setups.
    pub fn with_key(mut self, key: Option<&str>) -> Self {
        self.prompt_token = prompt_token_for(key);
        self
    }

    /// The same format with `n` more prompt tokens ahead of everything: the positions of a deep prompt's virtual
    /// tokens. Phrase tokens keep their places among the prompt tokens.
    pub fn with_leading_prompt_tokens(mut self, n: usize) -> Self {
        if n > 0 {
            self.pieces.insert(0, Piece::Prompt(n));
            self.init_tokens = self.init_tokens.into_iter().map(|(k, v)| (k + n, v)).collect();
        }
        self
    }

    /// Prompt tokens before the first field or text.
    pub fn leading_prompt_tokens(&self) -> usize {
        self.pieces.iter().map_while(|p| if let Piece::Prompt(n) = p { Some(*n) } else { None }).sum()
    }

    pub fn template(&self) -> &str {
        &self.template
    }

    /// ruPrompts' compiled template: the prompt token once per trainable position, `{field}`s, text with
    /// braces escaped.
    pub fn compiled_template(&self) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Prompt(n) => out.push_str(&self.prompt_token.repeat(*n)),
                Piece::Field(name) => out.push_str(&format!("{{{name}}}")),
                Piece::Text(text) => out.push_str(&text.replace('{', "{{").replace('}', "}}")),
                Piece::Phrase(_) => unreachable!("phrases are compiled to prompt tokens"),
            }
        }
        out
    }

    /// Number of trainable tokens.
    pub fn prompt_length(&self) -> usize {
        self.pieces.iter().map(|p| if let Piece::Prompt(n) = p { *n } else { 0 }).sum()
    }

    pub fn init_tokens(&self) -> &BTreeMap<usize, u32> {
        &self.init_tokens
    }

    pub fn prompt_token(&self) -> &str {
        &self.prompt_token
    }

    /// Field names in template order (a field used twice appears twice).
    pub fn fields(&self) -> Vec<&str> {
        self.pieces.iter().filter_map(|p| if let Piece::Field(n) = p { Some(n.as_str()) } else { None }).collect()
    }

    /// Whether all prompt tokens come before any field or text (PEFT prompt tuning supports only that).
    pub fn is_prefix(&self) -> bool {
        let first_other = self.pieces.iter().position(|p| !matches!(p, Piece::Prompt(_)));
        self.pieces.iter().skip(first_other.unwrap_or(self.pieces.len())).all(|p| !matches!(p, Piece::Prompt(_)))
    }

    /// Fills the fields from `row` (other keys are ignored) and reports where each value landed.
    pub fn format(&self, row: &Row) -> Result<Formatted, FormatError> {
        let mut text = String::new();
        let mut chars = 0;
        let mut spans = Vec::new();
        for piece in &self.pieces {
            let (value, field) = match piece {
                Piece::Prompt(n) => (self.prompt_token.repeat(*n), None),
                Piece::Text(t) => (t.clone(), None),
                Piece::Field(name) => (field_value(row, name)?, Some(name)),
                Piece::Phrase(_) => unreachable!("phrases are compiled to prompt tokens"),
            };
            let (start_byte, start_char) = (text.len(), chars);
            text.push_str(&value);
            chars += value.chars().count();
            if let Some(name) = field {
                spans.push(FieldSpan { field: name.clone(), chars: start_char..chars, bytes: start_byte..text.len() });
            }
        }
        Ok(Formatted { text, spans })
    }
}

fn field_value(row: &Row, name: &str) -> Result<String, FormatError> {
    match row.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(FormatError::BadValue {
            field: name.to_string(),
            found: match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Array(_) => "a list",
                _ => "an object",
            },
        }),
        None => Err(FormatError::MissingField {
            field: name.to_string(),
            available: row.keys().cloned().collect::<Vec<_>>().join(", "),
            row: shorten(&Value::Object(row.clone()).to_string(), 80),
        }),
    }
}

/// `text` cut to `max` chars, with "…" where it was cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn without_prompt_keeps_phrases_fields_and_braces() {
        assert_eq!(super::without_prompt("<P*3>{text}<P>Кратко:</P> {{x}}<P>").unwrap(), "{text}Кратко: {{x}}");
    }

    use super::*;
    use proptest::prelude::*;

    /// Strings rich in the template syntax's own characters.
    fn syntax_soup() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("<P>".to_string()),
                Just("</P>".to_string()),
                Just("<P*".to_string()),
                Just("<SP:".to_string()),
                Just("<|P|>".to_string()),
                Just("{".to_string()),
                Just("}".to_string()),
                Just(">".to_string()),
                "[0-9]{1,2}",
                "[a-zа-я_ \n]{1,4}",
                any::<char>().prop_map(String::from),
            ],
            0..16,
        )
        .prop_map(|parts| parts.concat())
    }

    /// A valid compiled template (prompt runs, fields and brace-free text) with a value per field.
    fn template_and_row() -> impl Strategy<Value = (String, Row)> {
        let piece = prop_oneof![
            (1usize..4).prop_map(|n| PROMPT_TOKEN.repeat(n)),
            "[a-c]".prop_map(|f| format!("{{{f}}}")),
            "[^{}<]{0,6}",
        ];
        (prop::collection::vec(piece, 0..8), prop::collection::vec(any::<String>(), 3)).prop_map(|(pieces, values)| {
            let row: Row = ["a", "b", "c"].iter().zip(values).map(|(k, v)| (k.to_string(), Value::String(v))).collect();
            (pieces.concat(), row)
        })
    }

    proptest! {
        #[test]
        fn parsers_never_panic(template in syntax_soup()) {
            let _ = parse::parse_source(&template);
            let _ = PromptFormat::from_compiled(&template, &template);
        }

        #[test]
        fn ranges_slice_back_the_inserted_values((compiled, row) in template_and_row()) {
            let format = PromptFormat::from_compiled(&compiled, &compiled).unwrap();
            let formatted = format.format(&row).unwrap();
            prop_assert_eq!(formatted.spans.len(), format.fields().len());
            for span in &formatted.spans {
                let value = row[&span.field].as_str().unwrap();
                prop_assert_eq!(&formatted.text[span.bytes.clone()], value);
                let by_chars: String = formatted.text.chars().skip(span.chars.start).take(span.chars.len()).collect();
                prop_assert_eq!(by_chars, value);
            }
            prop_assert_eq!(formatted.text.matches(PROMPT_TOKEN).count(), format.prompt_length());
            // The compiled form round-trips.
            prop_assert_eq!(format.compiled_template(), compiled);
        }
    }

    #[test]
    fn phrase_versus_single_token() {
        let pieces = |t: &str| parse::parse_source(t).unwrap().into_iter().map(|(_, p)| p).collect::<Vec<_>>();
        assert_eq!(
            pieces("<P>{text}<P>Кратко:</P>"),
            [Piece::Prompt(1), Piece::Field("text".into()), Piece::Phrase("Кратко:".into())]
        );
        assert_eq!(pieces("<P>\nВопрос:</P>"), [Piece::Phrase("\nВопрос:".into())]);
        assert_eq!(pieces("a<P>b"), [Piece::Text("a".into()), Piece::Prompt(1), Piece::Text("b".into())]);
        assert_eq!(pieces("{{x}}"), [Piece::Text("{x}".into())]);
    }

    #[test]
    fn prefix_detection() {
        let f = |c: &str| PromptFormat::from_compiled(c, c).unwrap();
        assert!(f("<|P|><|P|>{text}").is_prefix());
        assert!(!f("<|P|>{text}<|P|>").is_prefix());
        assert!(!f("{text}<|P|>").is_prefix());
    }
}
