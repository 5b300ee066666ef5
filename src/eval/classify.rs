//! Perplexity-based classification: every candidate answer is put into the formatted example, scored by the
//! frozen LM (with a tuned prompt or, zero-shot, without), and the best one is the prediction. Zero-shot and tuned
//! go through this same code; only the format and the injections differ.

use anyhow::{ensure, Result};
use serde_json::Value;

use super::{best, candidate_score, score_naive, score_shared, Candidate, ScoreMode};
use crate::data::Origin;
use crate::format::{PromptFormat, Row};
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

/// The field that, when a format has it, receives each candidate; otherwise the candidate follows the formatted
/// text, as in training's classification preprocessing.
pub const ANSWER_FIELD: &str = "answer";

/// How the formatted item splits around a candidate: context, answer, suffix (token ids, tokenized separately).
fn split(format: &PromptFormat, tokenizer: &Tokenizer, item: &Item, candidate: &str) -> Result<(Vec<i64>, Candidate)> {
    let mut row = item.row.clone();
    if !format.fields().contains(&ANSWER_FIELD) {
        let text = format.format(&row)?.text;
        return Ok((
            tokenizer.encode_ids(&text)?,
            Candidate { answer: tokenizer.encode_ids(candidate)?, suffix: vec![] },
        ));
    }
    row.insert(ANSWER_FIELD.to_string(), Value::String(candidate.to_string()));
    let formatted = format.format(&row)?;
    let span = formatted.spans.iter().find(|s| s.field == ANSWER_FIELD).expect("the format has the field");
    let (before, answer, after) =
        (&formatted.text[..span.bytes.start], &formatted.text[span.bytes.clone()], &formatted.text[span.bytes.end..]);
    let ids = |t: &str| tokenizer.encode_ids(t);
    Ok((ids(before)?, Candidate { answer: ids(answer)?, suffix: ids(after)? }))
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
}

impl Classifier<'_> {
    /// Scores of every candidate of `item` (answer and whole-text log-prob sums).
    fn scored(&self, item: &Item) -> Result<Vec<super::Scored>> {
        let mut context = None;
        let mut candidates = Vec::new();
        for c in &item.candidates {
            let (ctx, cand) = split(self.format, self.tokenizer, item, c)?;
            // Every candidate shares the context: the text before the answer does not depend on it.
            ensure!(context.as_ref().is_none_or(|x| *x == ctx), "the context depends on the answer");
            context = Some(ctx);
            candidates.push(cand);
        }
        let context = context.expect("checked: at least one candidate");
        if self.shared {
            score_shared(self.model, self.injections, &context, &candidates)
        } else {
            score_naive(self.model, self.injections, &context, &candidates)
        }
    }

    /// Predicted candidate index of every item. `content_free` (for [`ScoreMode::Calibrated`]) is a row whose
    /// fields carry no content, e.g. "N/A" in each.
    pub fn predict(&self, items: &[Item], content_free: Option<&Row>) -> Result<Vec<usize>> {
        items
            .iter()
            .map(|item| {
                ensure!(!item.candidates.is_empty(), "{}: no candidate answers", item.origin);
                let scored = self.scored(item).map_err(|e| e.context(item.origin.to_string()))?;
                let free = match (self.mode, content_free) {
                    (ScoreMode::Calibrated, Some(row)) => {
                        Some(self.scored(&Item { row: row.clone(), ..item.clone() })?)
                    }
                    _ => None,
                };
                let scores = scored
                    .iter()
                    .zip(&item.candidates)
                    .enumerate()
                    .map(|(i, (s, text))| candidate_score(self.mode, s, text, free.as_ref().map(|f| &f[i])))
                    .collect::<Result<Vec<f64>>>()?;
                Ok(best(&scores).expect("candidates are not empty"))
            })
            .collect()
    }
}
