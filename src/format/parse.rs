//! Parser of ruPrompts' template language and of its compiled form.
//!
//! Source templates: `<P>` (one trainable token), `<P*N>` / `<SP:N>` (N tokens), `<P>phrase</P>` (one token per
//! token of the phrase, initialised from its embeddings), `{field}` slots, `{{` / `}}` for literal braces, and
//! any other text. `{@candidate}` is the one slot whose name is not a plain name: no data field can take it. Compiled templates (as stored in `prompt.json`) hold the prompt token itself (`<|P|>` or
//! `<|[key]P|>`) once per trainable position, fields and text.

use thiserror::Error;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// `n` consecutive trainable tokens.
    Prompt(usize),
    /// Trainable tokens initialised from this phrase's tokens (source templates only).
    Phrase(String),
    /// A slot filled from the data row.
    Field(String),
    /// Literal text (braces already unescaped).
    Text(String),
}

/// What is wrong with a template, and where (a char index into it).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    #[error("malformed prompt repeat at char {0}: expected <P*N> or <SP:N> with a number N")]
    BadRepeat(usize),
    #[error("<P*0> at char {0}: a repeat needs at least one token")]
    ZeroRepeat(usize),
    #[error("unclosed <P> at char {0}: its phrase runs into a field before </P> at char {1}")]
    UnclosedPhrase(usize, usize),
    #[error("empty phrase <P></P> at char {0}")]
    EmptyPhrase(usize),
    #[error("</P> at char {0} has no opening <P>")]
    UnopenedPhrase(usize),
    #[error("empty field {{}} at char {0}")]
    EmptyField(usize),
    #[error("unclosed {{ at char {0} (write {{{{ for a literal brace)")]
    UnclosedBrace(usize),
    #[error("unmatched }} at char {0} (write }}}} for a literal brace)")]
    UnmatchedBrace(usize),
    #[error("field name {1:?} at char {0} is not a plain name (letters, digits, _)")]
    BadFieldName(usize, String),
    #[error("{1} at char {0} is a compiled prompt token; write <P> in templates")]
    ReservedToken(usize, String),
    #[error("phrase at char {0} tokenizes to nothing")]
    EmptyPhraseTokens(usize),
    #[error("compiled template mixes prompt tokens {0} and {1}")]
    MixedPromptTokens(String, String),
}

/// A piece with the char index where it starts in the template (for messages).
pub type Located = (usize, Piece);

fn starts_with(chars: &[char], at: usize, pat: &str) -> bool {
    (at..).zip(pat.chars()).all(|(i, p)| chars.get(i) == Some(&p))
}

fn find(chars: &[char], from: usize, pat: &str) -> Option<usize> {
    (from..chars.len()).find(|&i| starts_with(chars, i, pat))
}

/// Reads `N>` at `at`; returns (N, index after `>`).
fn repeat_count(chars: &[char], at: usize, start: usize) -> Result<(usize, usize), TemplateError> {
    let digits: String = chars[at..].iter().take_while(|c| c.is_ascii_digit()).collect();
    let end = at + digits.len();
    if digits.is_empty() || chars.get(end) != Some(&'>') {
        return Err(TemplateError::BadRepeat(start));
    }
    let n: usize = digits.parse().map_err(|_| TemplateError::BadRepeat(start))?;
    if n == 0 {
        return Err(TemplateError::ZeroRepeat(start));
    }
    Ok((n, end + 1))
}

/// Parses a `{name}` at `at` (which holds `{` not followed by `{`); returns (name, index after `}`).
fn field(chars: &[char], at: usize) -> Result<(String, usize), TemplateError> {
    let close = (at + 1..chars.len()).find(|&i| chars[i] == '}' || chars[i] == '{');
    let Some(close) = close.filter(|&i| chars[i] == '}') else { return Err(TemplateError::UnclosedBrace(at)) };
    let name: String = chars[at + 1..close].iter().collect();
    if name.is_empty() {
        return Err(TemplateError::EmptyField(at));
    }
    if name != super::CANDIDATE_SLOT && !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Err(TemplateError::BadFieldName(at, name));
    }
    Ok((name, close + 1))
}

/// Starts of the prompt-token syntax of source templates.
const OPENERS: [&str; 3] = ["<P>", "<P*", "<SP:"];

/// Parses a source template into pieces; consecutive text is merged, prompt runs are not.
pub fn parse_source(template: &str) -> Result<Vec<Located>, TemplateError> {
    let chars: Vec<char> = template.chars().collect();
    let mut out = Vec::new();
    let mut text = String::new();
    let mut text_start = 0;
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        let piece = if starts_with(&chars, i, "<P*") {
            let (n, next) = repeat_count(&chars, i + 3, start)?;
            i = next;
            Piece::Prompt(n)
        } else if starts_with(&chars, i, "<SP:") {
            let (n, next) = repeat_count(&chars, i + 4, start)?;
            i = next;
            Piece::Prompt(n)
        } else if starts_with(&chars, i, "<P>") {
            // `<P>` opens a phrase when `</P>` comes before the next prompt token; otherwise it is one token.
            let close = find(&chars, i + 3, "</P>");
            let next_opener = OPENERS.iter().filter_map(|o| find(&chars, i + 3, o)).min();
            match close.filter(|&c| next_opener.is_none_or(|o| c < o)) {
                Some(close) => {
                    let phrase: String = chars[i + 3..close].iter().collect();
                    if phrase.is_empty() {
                        return Err(TemplateError::EmptyPhrase(start));
                    }
                    if phrase.contains('{') || phrase.contains('}') {
                        return Err(TemplateError::UnclosedPhrase(start, close));
                    }
                    i = close + 4;
                    Piece::Phrase(phrase)
                }
                None => {
                    i += 3;
                    Piece::Prompt(1)
                }
            }
        } else if starts_with(&chars, i, "</P>") {
            return Err(TemplateError::UnopenedPhrase(start));
        } else if let Some(token) = compiled_token_at(&chars, i) {
            return Err(TemplateError::ReservedToken(start, token));
        } else {
            match escaped_or_field(&chars, &mut i)? {
                Ok(c) => {
                    if text.is_empty() {
                        text_start = start;
                    }
                    text.push(c);
                    continue;
                }
                Err(name) => Piece::Field(name),
            }
        };
        if !text.is_empty() {
            out.push((text_start, Piece::Text(std::mem::take(&mut text))));
        }
        out.push((start, piece));
    }
    if !text.is_empty() {
        out.push((text_start, Piece::Text(text)));
    }
    Ok(out)
}

/// At `chars[*i]`: a literal char (`Ok(Ok(c))`, with `{{`/`}}` unescaped) or a field (`Ok(Err(name))`).
fn escaped_or_field(chars: &[char], i: &mut usize) -> Result<Result<char, String>, TemplateError> {
    let c = chars[*i];
    let next = chars.get(*i + 1).copied();
    match (c, next) {
        ('{', Some('{')) | ('}', Some('}')) => {
            *i += 2;
            Ok(Ok(c))
        }
        ('{', _) => {
            let (name, after) = field(chars, *i)?;
            *i = after;
            Ok(Err(name))
        }
        ('}', _) => Err(TemplateError::UnmatchedBrace(*i)),
        _ => {
            *i += 1;
            Ok(Ok(c))
        }
    }
}

/// A compiled prompt token (`<|P|>`, `<|[key]P|>`) starting at `i`, if any.
fn compiled_token_at(chars: &[char], i: usize) -> Option<String> {
    if !starts_with(chars, i, "<|") {
        return None;
    }
    let end = find(chars, i + 2, "|>")?;
    let token: String = chars[i..end + 2].iter().collect();
    let inner = &token[2..token.len() - 2];
    let keyed = inner.strip_prefix('[').and_then(|r| r.strip_suffix("]P")).is_some_and(|k| !k.is_empty());
    (inner == "P" || keyed).then_some(token)
}

/// Parses a compiled template; returns its pieces and the prompt token it uses (if it has any).
pub fn parse_compiled(compiled: &str) -> Result<(Vec<Located>, Option<String>), TemplateError> {
    let chars: Vec<char> = compiled.chars().collect();
    let mut out: Vec<Located> = Vec::new();
    let mut token: Option<String> = None;
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        if let Some(t) = compiled_token_at(&chars, i) {
            match &token {
                Some(seen) if *seen != t => return Err(TemplateError::MixedPromptTokens(seen.clone(), t)),
                _ => token = Some(t.clone()),
            }
            i += t.chars().count();
            match out.last_mut() {
                Some((_, Piece::Prompt(n))) => *n += 1,
                _ => out.push((start, Piece::Prompt(1))),
            }
            continue;
        }
        match escaped_or_field(&chars, &mut i)? {
            Ok(c) => match out.last_mut() {
                Some((_, Piece::Text(t))) => t.push(c),
                _ => out.push((start, Piece::Text(c.to_string()))),
            },
            Err(name) => out.push((start, Piece::Field(name))),
        }
    }
    Ok((out, token))
}
