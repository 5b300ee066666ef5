//! What training minimises, and the examples it is computed on. A Russian SuperGLUE task is read by the evaluator's
//! adapters and tokenized by its [`Classifier::request`], so a prompt is trained on exactly the text it is scored
//! on; the `lm` objective learns the gold candidate's tokens, `choice` the evaluator's choice among candidates.

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::data::{Example, TooLong, TooLongPolicy, IGNORE};
use crate::model::Model;
use crate::prompt::Injection;
use crate::task::{answer_logprob_sums, shared_batches, Candidate, Classifier, Request, ScoreMode, TaskItem};

/// The `objective` section of a training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Objective {
    /// −mean log p of the target's tokens (the gold candidate, or text2text's target field) after the formatted
    /// text: ruPrompts' loss.
    Lm {
        /// The EOS token after the text is a target too (ruPrompts counts it).
        #[serde(default = "yes")]
        eos: bool,
    },
    /// −log softmax over the candidates' scores, at the gold one: the score is the evaluator's (`sum`: Σ log p of
    /// the candidate's tokens; `per_char`, `per_byte`: the same divided by its length), so training optimises what
    /// evaluation picks. Needs `dataset.task`.
    Choice {
        #[serde(default)]
        score: ScoreMode,
    },
}

fn yes() -> bool {
    true
}

impl Default for Objective {
    fn default() -> Self {
        Self::Lm { eos: true }
    }
}

impl Objective {
    /// The scoring mode the validation metric is computed with: the `choice` objective's, else `sum`.
    pub fn score_mode(&self) -> ScoreMode {
        match self {
            Self::Lm { .. } => ScoreMode::Sum,
            Self::Choice { score } => *score,
        }
    }

    /// Whether the EOS after the text is a target (`lm`).
    pub fn eos(&self) -> bool {
        matches!(self, Self::Lm { eos: true })
    }
}

/// One multiple-choice item as the evaluator tokenizes it: the shared context, every candidate (answer, then the
/// rest of the format), the divisor of each candidate's score, and the gold candidate.
#[derive(Debug, Clone)]
pub struct ChoiceExample {
    pub context: Vec<i64>,
    pub candidates: Vec<Candidate>,
    pub normalizers: Vec<f64>,
    pub gold: usize,
}

/// The examples of one split, as the objective needs them.
#[derive(Debug)]
pub enum Examples {
    /// Token sequences with labels on the target (`lm`).
    Sequences(Vec<Example>),
    /// Candidates scored against each other (`choice`).
    Choices(Vec<ChoiceExample>),
}

impl Examples {
    pub fn len(&self) -> usize {
        match self {
            Self::Sequences(e) => e.len(),
            Self::Choices(e) => e.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens each example feeds through the model (batches group similar lengths).
    pub fn lengths(&self) -> Vec<usize> {
        match self {
            Self::Sequences(e) => e.iter().map(|e| e.input_ids.len()).collect(),
            Self::Choices(e) => {
                e.iter().map(|e| e.context.len() + e.candidates.iter().map(|c| c.answer.len()).sum::<usize>()).collect()
            }
        }
    }
}

/// Encodes labelled task items for `objective` with `classifier`'s tokenization and truncation (its
/// `max_tokens`). Items too long even after truncation are an error, or with `too_long: skip` left out (their
/// indices are the second value). `eos` is the tokenizer's EOS id, appended for `lm` with `eos: true`.
pub fn encode_items(
    classifier: &Classifier,
    items: &[TaskItem],
    objective: &Objective,
    eos: Option<i64>,
    too_long: TooLongPolicy,
) -> Result<(Examples, Vec<usize>)> {
    let (mut choices, mut skipped) = (Vec::new(), Vec::new());
    for (i, t) in items.iter().enumerate() {
        let item = &t.item;
        let Some(gold) = item.gold else { bail!("{}: the item has no label, so it cannot be trained on", item.origin) };
        let Request { context, candidates, .. } = match classifier.request(item) {
            Ok(request) => request,
            Err(e) if too_long == TooLongPolicy::Skip && e.is::<TooLong>() => {
                skipped.push(i);
                continue;
            }
            Err(e) => return Err(e.context(item.origin.to_string())),
        };
        // The evaluator's divisor; an empty candidate text divides by 1 (its answer has no tokens to score).
        let score = objective.score_mode();
        let normalizers = item
            .candidates
            .iter()
            .map(|c| {
                let n = score.divisor(c).ok_or_else(|| {
                    anyhow::anyhow!("objective.score {score:?} cannot be trained: use sum, per_char or per_byte")
                })?;
                Ok(n.max(1) as f64)
            })
            .collect::<Result<Vec<_>>>()?;
        choices.push(ChoiceExample { context, candidates, normalizers, gold });
    }
    let examples = match objective {
        Objective::Choice { .. } => Examples::Choices(choices),
        Objective::Lm { eos: with_eos } => {
            let eos = if *with_eos {
                Some(eos.ok_or_else(|| anyhow::anyhow!("objective.eos: the tokenizer has no EOS token"))?)
            } else {
                None
            };
            Examples::Sequences(choices.iter().map(|c| gold_sequence(c, eos)).collect())
        }
    };
    Ok((examples, skipped))
}

/// Context, gold answer and the rest of the format (then `eos`), with labels on the answer (and EOS) alone.
fn gold_sequence(example: &ChoiceExample, eos: Option<i64>) -> Example {
    let gold = &example.candidates[example.gold];
    let mut input_ids = example.context.clone();
    let mut labels = vec![IGNORE; input_ids.len()];
    input_ids.extend(&gold.answer);
    labels.extend(&gold.answer);
    input_ids.extend(&gold.suffix);
    labels.extend(std::iter::repeat_n(IGNORE, gold.suffix.len()));
    if let Some(eos) = eos {
        input_ids.push(eos);
        labels.push(eos);
    }
    Example { input_ids, labels }
}

/// The `choice` loss of `examples`: the mean over items of −log softmax(score / normalizer)\[gold\], the
/// candidates of all items scored in one shared-context pass.
pub fn choice_loss(model: &Model, injections: &[Injection], examples: &[&ChoiceExample]) -> Result<Tensor> {
    ensure!(!examples.is_empty(), "an empty batch");
    let requests: Vec<(&[i64], &[Candidate])> =
        examples.iter().map(|e| (e.context.as_slice(), e.candidates.as_slice())).collect();
    // Items whose longest context and longest answer together do not fit in the model go in separate passes.
    let positions = model.config().n_positions as usize;
    let prompt_ids: Vec<i64> = injections.iter().map(|i| i.token_id).collect();
    let sums = shared_batches(&requests, &prompt_ids, false, positions, usize::MAX)
        .into_iter()
        .map(|run| answer_logprob_sums(model, injections, &requests[run]))
        .collect::<Result<Vec<_>>>()?;
    let sums = Tensor::cat(&sums, 0);
    let device = sums.device();
    let (mut offset, mut losses) = (0, Vec::with_capacity(examples.len()));
    for e in examples {
        let k = e.candidates.len() as i64;
        let norm = Tensor::from_slice(&e.normalizers).to_device(device).to_kind(Kind::Float);
        let scores = sums.narrow(0, offset, k) / norm;
        losses.push(-scores.log_softmax(0, Kind::Float).get(e.gold as i64));
        offset += k;
    }
    Ok(Tensor::stack(&losses, 0).mean(Kind::Float))
}
