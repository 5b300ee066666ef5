//! Perplexity-based classification: every candidate answer is put into the formatted example, scored by the
//! frozen LM (with a tuned prompt or, zero-shot, without), and the best one is the prediction. Zero-shot and tuned
//! go through this same code; only the format and the injections differ.

use std::ops::Range;

use anyhow::{ensure, Result};
use serde_json::Value;

use super::{best, candidate_score, score_naive, score_shared_many, shared_batches, Candidate, ScoreMode, Scored};
use crate::data::{Origin, TooLong};
use crate::format::{PromptFormat, Row, CANDIDATE_SLOT};
use crate::model::Gpt2;
use crate::prompt::Injection;
use crate::tokenizer::Tokenizer;

/// One multiple-choice question: the fields that fill the format, the candidate answers and, where known, the
/// index of the right one.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub row: Row,
    pub candidates: Vec<String>,
    pub gold: Option<usize>,
    pub origin: Origin,
}

/// The text before a candidate, tokenized, with the token range of the truncation field when it is there.
struct Context {
    ids: Vec<i64>,
    field: Option<Range<usize>>,
}

/// How the formatted item splits around a candidate: the context, then the answer and what follows it (each
/// tokenized on its own, so every candidate shares the context's tokens).
fn split(
    format: &PromptFormat,
    tokenizer: &Tokenizer,
    item: &Item,
    candidate: &str,
    truncation_field: Option<&str>,
) -> Result<(Context, Candidate)> {
    let mut row = item.row.clone();
    let has_answer = format.fields().contains(&CANDIDATE_SLOT);
    if has_answer {
        row.insert(CANDIDATE_SLOT.to_string(), Value::String(candidate.to_string()));
    }
    let formatted = format.format(&row)?;
    let (before, answer, after) = match formatted.spans.iter().find(|s| has_answer && s.field == CANDIDATE_SLOT) {
        Some(span) => (
            &formatted.text[..span.bytes.start],
            &formatted.text[span.bytes.clone()],
            &formatted.text[span.bytes.end..],
        ),
        None => (formatted.text.as_str(), candidate, ""),
    };
    let encoding = tokenizer.encode(before)?;
    let ids: Vec<i64> = encoding.get_ids().iter().map(|&id| i64::from(id)).collect();
    let before_chars = before.chars().count();
    let token_at = |c: usize| if c >= before_chars { Some(ids.len()) } else { encoding.char_to_token(c, 0) };
    let field = truncation_field
        .and_then(|f| formatted.spans.iter().find(|s| s.field == f && s.chars.end <= before_chars))
        .and_then(|s| Some(token_at(s.chars.start)?..token_at(s.chars.end)?));
    let candidate = Candidate { answer: tokenizer.encode_ids(answer)?, suffix: tokenizer.encode_ids(after)? };
    Ok((Context { ids, field }, candidate))
}

/// A frozen model, its tokenizer (prompt tokens added), a format and the prompt injections (none zero-shot).
#[derive(Debug)]
pub struct Classifier<'a> {
    pub model: &'a Gpt2,
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
}

/// Cached context positions that one scoring batch may copy across its candidate rows (rows × context length):
/// bounds the memory of batching many items with many candidates (RuCoS). A single item always runs.
const BATCH_POSITIONS: usize = 8192;

impl Classifier<'_> {
    /// The context (truncated to fit) and the candidates of `item`, as token ids: exactly what scoring runs (the
    /// side-by-side benchmark hands them to the Python reference).
    pub fn request(&self, item: &Item) -> Result<(Vec<i64>, Vec<Candidate>)> {
        ensure!(!item.candidates.is_empty(), "no candidate answers");
        let mut context: Option<Context> = None;
        let mut candidates = Vec::new();
        for c in &item.candidates {
            let (ctx, cand) = split(self.format, self.tokenizer, item, c, self.truncation_field)?;
            // Every candidate shares the context: the text before the answer does not depend on it.
            ensure!(context.as_ref().is_none_or(|x| x.ids == ctx.ids), "the context depends on the answer");
            context = Some(ctx);
            candidates.push(cand);
        }
        let Context { ids: mut context, field } = context.expect("checked: at least one candidate");
        let longest = candidates.iter().map(|c| c.answer.len() + c.suffix.len()).max().unwrap_or(0);
        let positions = self.model.config().n_positions as usize;
        let (limit, what) = match self.max_tokens {
            Some(max) if max < positions => (max, format!("max_tokens {max}")),
            _ => (positions, format!("the model's {positions} positions")),
        };
        let excess = (context.len() + longest).saturating_sub(limit);
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
        Ok((context, candidates))
    }

    /// Scores (answer and whole-text log-prob sums) of every candidate of every request; shared-context scoring
    /// runs them in batches of similar size.
    fn score(&self, requests: &[(Vec<i64>, Vec<Candidate>)]) -> Result<Vec<Vec<Scored>>> {
        // Only the mean loss looks past the answer.
        let whole_text = self.mode == ScoreMode::MeanLoss;
        if !self.shared {
            return requests
                .iter()
                .map(|(c, cands)| score_naive(self.model, self.injections, c, cands, whole_text))
                .collect();
        }
        let refs: Vec<(&[i64], &[Candidate])> = requests.iter().map(|(c, k)| (c.as_slice(), k.as_slice())).collect();
        let positions = self.model.config().n_positions as usize;
        let mut out = Vec::with_capacity(requests.len());
        for run in shared_batches(&refs, whole_text, positions, BATCH_POSITIONS) {
            out.extend(score_shared_many(self.model, self.injections, &refs[run], whole_text)?);
        }
        Ok(out)
    }

    /// The score of every candidate of each item under the mode (higher is better), the items scored together.
    /// `content_free` (for [`ScoreMode::Calibrated`]) is a row whose fields carry no content, e.g. "N/A" in each.
    pub fn candidate_scores(&self, items: &[&Item], content_free: Option<&Row>) -> Result<Vec<Vec<f64>>> {
        let calibrate = match (self.mode, content_free) {
            (ScoreMode::Calibrated, Some(row)) => Some(row),
            _ => None,
        };
        let mut requests = Vec::new();
        for item in items {
            requests.push(self.request(item).map_err(|e| e.context(item.origin.to_string()))?);
            if let Some(row) = calibrate {
                let free = Item { row: row.clone(), ..(*item).clone() };
                requests.push(self.request(&free).map_err(|e| e.context(format!("{} (content-free)", item.origin)))?);
            }
        }
        let scored = self.score(&requests)?;
        let per_item = if calibrate.is_some() { 2 } else { 1 };
        items
            .iter()
            .zip(scored.chunks(per_item))
            .map(|(item, s)| {
                let free = s.get(1);
                s[0].iter()
                    .zip(&item.candidates)
                    .enumerate()
                    .map(|(i, (s, text))| candidate_score(self.mode, s, text, free.map(|f| &f[i])))
                    .collect()
            })
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
