//! Perplexity-based classification: every candidate answer is put into the formatted example, scored by the
//! frozen LM (with a tuned prompt or, zero-shot, without), and the best one is the prediction. Zero-shot and tuned
//! go through this same code; only the format and the injections differ.

use std::ops::Range;

use anyhow::{ensure, Result};
use serde_json::Value;

use super::{best, candidate_score, score_naive, score_shared_many, shared_batches, Candidate, ScoreMode, Scored};
use crate::data::{Origin, TooLong};
use crate::format::{Formatted, PromptFormat, Row, CANDIDATE_SLOT};
use crate::model::Model;
use crate::prompt::Injection;
use crate::tokenizer::{ChatTemplate, Tokenizer};
use std::collections::HashMap;

/// One multiple-choice question: the fields that fill the format, the candidate answers, where known the index of
/// the right one, and the solved examples shown before it (few-shot; empty zero-shot).
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub row: Row,
    pub candidates: Vec<String>,
    pub gold: Option<usize>,
    pub origin: Origin,
    pub shots: Vec<Shot>,
}

/// A demonstration: another item's fields and its gold answer, formatted like the item and put before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Shot {
    pub row: Row,
    pub answer: String,
}

/// What scoring runs for one item: the context (demonstrations, then the formatted item up to the answer, cut to
/// fit), every candidate's answer and suffix tokens, and how many demonstrations were dropped to make it fit.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub context: Vec<i64>,
    pub candidates: Vec<Candidate>,
    pub dropped_shots: usize,
}

/// Every candidate's log-prob sums for one item, and under the content-free input when calibrating; the scores
/// of every [`ScoreMode`] derive from them, so one scoring pass serves all modes.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct ItemScores {
    pub candidates: Vec<Scored>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content_free: Vec<Scored>,
    #[serde(default)]
    pub dropped_shots: usize,
}

impl ItemScores {
    /// The score of each of the `texts` (the item's candidates) under `mode`, higher is better.
    pub fn under(&self, mode: ScoreMode, texts: &[String]) -> Result<Vec<f64>> {
        self.candidates
            .iter()
            .zip(texts)
            .enumerate()
            .map(|(i, (s, text))| candidate_score(mode, s, text, self.content_free.get(i)))
            .collect()
    }
}

/// The text before a candidate, tokenized, with the token range of the truncation field when it is there.
struct Context {
    ids: Vec<i64>,
    field: Option<Range<usize>>,
}

/// The formatted text of `row` with `candidate` as its answer, split into what comes before the answer, the
/// answer and what follows it, with the formatted spans (the answer goes at the end when the format has no slot).
fn fill(format: &PromptFormat, row: &Row, candidate: &str) -> Result<Formatted> {
    let mut row = row.clone();
    if format.fields().contains(&CANDIDATE_SLOT) {
        row.insert(CANDIDATE_SLOT.to_string(), Value::String(candidate.to_string()));
    }
    Ok(format.format(&row)?)
}

/// A demonstration's whole text: the format filled with its row and gold answer.
fn demonstration(format: &PromptFormat, shot: &Shot) -> Result<String> {
    let formatted = fill(format, &shot.row, &shot.answer)?;
    Ok(if formatted.spans.iter().any(|s| s.field == CANDIDATE_SLOT) {
        formatted.text
    } else {
        formatted.text + &shot.answer
    })
}

/// How the formatted item splits around a candidate: the context (after `prefix`, the demonstrations), then the
/// answer and what follows it. The context is tokenized as one text (as lm-evaluation-harness does), the answer
/// and the rest each on their own, so every candidate shares the context's tokens.
/// With `chat`, the context is the user's turn of the chat template with the assistant's opening after it (what
/// lm-evaluation-harness's `--apply_chat_template` scores), tokenized without added special tokens as the
/// template writes its own.
fn split(
    format: &PromptFormat,
    tokenizer: &Tokenizer,
    item: &Item,
    prefix: &str,
    candidate: &str,
    truncation_field: Option<&str>,
    chat: Option<&ChatTemplate>,
) -> Result<(Context, Candidate)> {
    let formatted = fill(format, &item.row, candidate)?;
    let (before, answer, after) = match formatted.spans.iter().find(|s| s.field == CANDIDATE_SLOT) {
        Some(span) => (
            &formatted.text[..span.bytes.start],
            &formatted.text[span.bytes.clone()],
            &formatted.text[span.bytes.end..],
        ),
        None => (formatted.text.as_str(), candidate, ""),
    };
    let context = format!("{prefix}{before}");
    let (encoding, head) = match chat {
        Some(chat) => {
            let (head, tail) = chat.user_turn(&context)?;
            (tokenizer.encode(&format!("{head}{context}{tail}"))?, head)
        }
        None => (tokenizer.encode_sequence(&context)?, String::new()),
    };
    let ids: Vec<i64> = encoding.get_ids().iter().map(|&id| i64::from(id)).collect();
    let (shift, before_chars) = (head.chars().count() + prefix.chars().count(), before.chars().count());
    // The end of the text before the answer: the end of the ids, or the chat template's text after the turn.
    let end = if chat.is_some() { encoding.char_to_token(shift + before_chars, 0) } else { Some(ids.len()) };
    let token_at = |c: usize| if c >= before_chars { end } else { encoding.char_to_token(shift + c, 0) };
    let field = truncation_field
        .and_then(|f| formatted.spans.iter().find(|s| s.field == f && s.chars.end <= before_chars))
        .and_then(|s| Some(token_at(s.chars.start)?..token_at(s.chars.end)?));
    let candidate = Candidate { answer: tokenizer.encode_ids(answer)?, suffix: tokenizer.encode_ids(after)? };
    Ok((Context { ids, field }, candidate))
}

/// A frozen model, its tokenizer (prompt tokens added), a format and the prompt injections (none zero-shot).
#[derive(Debug)]
pub struct Classifier<'a> {
    pub model: &'a Model,
    pub tokenizer: &'a Tokenizer,
    pub format: &'a PromptFormat,
    pub injections: &'a [Injection<'a>],
    pub mode: ScoreMode,
    /// Score with the shared-context scorer (same results as the naive one, faster).
    pub shared: bool,
    /// The field whose last tokens are dropped when an item does not fit.
    pub truncation_field: Option<&'a str>,
    /// The most tokens an item may take with its longest candidate (training's `preprocessing.max_tokens`);
    /// `None`: the model's positions.
    pub max_tokens: Option<usize>,
    /// What separates demonstrations from each other and from the item (few-shot).
    pub shot_delimiter: &'a str,
    /// Put each context in the chat template as the user's turn, the answer after the assistant's opening.
    pub chat: Option<&'a ChatTemplate>,
}

/// Cached context positions that one scoring batch may copy across its candidate rows (rows × context length):
/// bounds the memory of batching many items with many candidates (RuCoS). A single item always runs.
const BATCH_POSITIONS: usize = 8192;

impl Classifier<'_> {
    /// The context and the candidates of `item`, as token ids: exactly what scoring runs (the side-by-side
    /// benchmark hands them to the Python reference). When the item does not fit, whole demonstrations are
    /// dropped first (the farthest from the item first), then the truncation field's last tokens.
    pub fn request(&self, item: &Item) -> Result<Request> {
        ensure!(!item.candidates.is_empty(), "no candidate answers");
        let demos: Vec<String> = item.shots.iter().map(|s| demonstration(self.format, s)).collect::<Result<_>>()?;
        let positions = self.model.config().n_positions as usize;
        let (limit, what) = match self.max_tokens {
            Some(max) if max < positions => (max, format!("max_tokens {max}")),
            _ => (positions, format!("the model's {positions} positions")),
        };
        for dropped in 0..=demos.len() {
            let prefix: String = demos[dropped..].iter().map(|d| format!("{d}{}", self.shot_delimiter)).collect();
            let mut context: Option<Context> = None;
            let mut candidates = Vec::new();
            for c in &item.candidates {
                let (ctx, cand) =
                    split(self.format, self.tokenizer, item, &prefix, c, self.truncation_field, self.chat)?;
                // Every candidate shares the context: the text before the answer does not depend on it.
                ensure!(context.as_ref().is_none_or(|x| x.ids == ctx.ids), "the context depends on the answer");
                context = Some(ctx);
                candidates.push(cand);
            }
            let Context { ids: mut context, field } = context.expect("checked: at least one candidate");
            let longest = candidates.iter().map(|c| c.answer.len() + c.suffix.len()).max().unwrap_or(0);
            let excess = (context.len() + longest).saturating_sub(limit);
            if excess > 0 && dropped < demos.len() {
                continue;
            }
            if excess > 0 {
                let fits = field.as_ref().is_some_and(|f| f.len() >= excess);
                if !fits {
                    return Err(TooLong(format!(
                        "{} tokens with the longest candidate, more than {what}{}",
                        context.len() + longest,
                        match (self.truncation_field, &field) {
                            (None, _) => " (set a truncation field to shorten it)".to_string(),
                            (Some(f), None) => format!(" (truncation field '{f}' is not before the answer)"),
                            (Some(f), Some(r)) => format!(" even without field '{f}' ({} tokens)", r.len()),
                        }
                    ))
                    .into());
                }
                let end = field.expect("checked").end;
                context.drain(end - excess..end);
            }
            return Ok(Request { context, candidates, dropped_shots: dropped });
        }
        unreachable!("the last round has no demonstrations left to drop and returns")
    }

    /// Log-prob sums of every candidate of every request (with `whole_text`, the whole text's too); shared-context
    /// scoring runs them in batches of similar size.
    fn score(&self, requests: &[&Request], whole_text: bool) -> Result<Vec<Vec<Scored>>> {
        if !self.shared {
            return requests
                .iter()
                .map(|r| score_naive(self.model, self.injections, &r.context, &r.candidates, whole_text))
                .collect();
        }
        let refs: Vec<(&[i64], &[Candidate])> =
            requests.iter().map(|r| (r.context.as_slice(), r.candidates.as_slice())).collect();
        let positions = self.model.config().n_positions as usize;
        let mut out = Vec::with_capacity(requests.len());
        let prompt_ids: Vec<i64> = self.injections.iter().map(|i| i.token_id).collect();
        for run in shared_batches(&refs, &prompt_ids, whole_text, positions, BATCH_POSITIONS) {
            out.extend(score_shared_many(self.model, self.injections, &refs[run], whole_text)?);
        }
        Ok(out)
    }

    /// Every candidate's log-prob sums for each item (with `whole_text` the whole text's too, which `mean_loss`
    /// needs) and, given a `content_free` row (e.g. "N/A" in each field, for calibration), the same with that row
    /// in place of the item's fields. Identical content-free inputs (fixed verbalizers, no demonstrations: all of
    /// them) are scored once.
    pub fn scored(&self, items: &[&Item], content_free: Option<&Row>, whole_text: bool) -> Result<Vec<ItemScores>> {
        let requests: Vec<Request> = items
            .iter()
            .map(|item| self.request(item).map_err(|e| e.context(item.origin.to_string())))
            .collect::<Result<_>>()?;
        let (mut free_requests, mut free_of) = (Vec::<Request>::new(), Vec::new());
        if let Some(row) = content_free {
            let mut seen: HashMap<(Vec<i64>, Vec<Candidate>), usize> = HashMap::new();
            for item in items {
                let free = Item { row: row.clone(), ..(*item).clone() };
                let r = self.request(&free).map_err(|e| e.context(format!("{} (content-free)", item.origin)))?;
                let next = free_requests.len();
                let index = *seen.entry((r.context.clone(), r.candidates.clone())).or_insert(next);
                if index == next {
                    free_requests.push(r);
                }
                free_of.push(index);
            }
        }
        let all: Vec<&Request> = requests.iter().chain(&free_requests).collect();
        let mut scored = self.score(&all, whole_text)?;
        let free_scored = scored.split_off(requests.len());
        Ok(requests
            .iter()
            .zip(scored)
            .enumerate()
            .map(|(i, (r, candidates))| ItemScores {
                candidates,
                content_free: free_of.get(i).map_or_else(Vec::new, |&f| free_scored[f].clone()),
                dropped_shots: r.dropped_shots,
            })
            .collect())
    }

    /// The score of every candidate of each item under the classifier's mode (higher is better), the items scored
    /// together. `content_free` (for [`ScoreMode::Calibrated`]) is a row whose fields carry no content.
    pub fn candidate_scores(&self, items: &[&Item], content_free: Option<&Row>) -> Result<Vec<Vec<f64>>> {
        let calibrate = content_free.filter(|_| self.mode == ScoreMode::Calibrated);
        self.scored(items, calibrate, self.mode == ScoreMode::MeanLoss)?
            .iter()
            .zip(items)
            .map(|(s, item)| s.under(self.mode, &item.candidates))
            .collect()
    }

    /// Predicted candidate index of every item (see [`Self::candidate_scores`]), scored in chunks of `batch`.
    /// Items may be given as they are or borrowed (`&[Item]`, `&[&Item]`).
    pub fn predict<I: std::borrow::Borrow<Item>>(
        &self,
        items: &[I],
        content_free: Option<&Row>,
        batch: usize,
    ) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(batch.max(1)) {
            let refs: Vec<&Item> = chunk.iter().map(|i| i.borrow()).collect();
            for scores in self.candidate_scores(&refs, content_free)? {
                out.push(best(&scores).expect("candidates are not empty"));
            }
        }
        Ok(out)
    }
}
