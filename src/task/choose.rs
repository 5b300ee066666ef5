//! Turning candidate log-probabilities into a choice, by the scoring modes users of lm-evaluation-harness and
//! the CPT paper know: the answer's summed log-prob (lm-eval `acc`), the same per answer char or UTF-8 byte
//! (Cyrillic takes 2 bytes a char, so the two differ), the whole text's mean log-prob (the paper's "perplexity
//! of the resulting fragment"), and calibration against a content-free input.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::Scored;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "cli", value(rename_all = "snake_case"))]
pub enum ScoreMode {
    /// Σ log p of the answer's tokens.
    #[default]
    Sum,
    /// Σ log p of the answer per char of its text.
    PerChar,
    /// Σ log p of the answer per UTF-8 byte of its text.
    PerByte,
    /// Mean log p over every predicted token of the whole text (lowest perplexity wins).
    MeanLoss,
    /// Σ log p of the answer minus the same under a content-free input (e.g. "N/A" in every field).
    Calibrated,
}

impl ScoreMode {
    /// Every mode, in the order reports list them.
    pub const ALL: [ScoreMode; 5] = [Self::Sum, Self::PerChar, Self::PerByte, Self::MeanLoss, Self::Calibrated];

    /// The mode's name as configs and reports spell it (`per_char`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sum => "sum",
            Self::PerChar => "per_char",
            Self::PerByte => "per_byte",
            Self::MeanLoss => "mean_loss",
            Self::Calibrated => "calibrated",
        }
    }

    /// What the answer's Σ log p is divided by: 1 (`sum`), its chars or its UTF-8 bytes, leading whitespace not
    /// counted (lm-evaluation-harness' `acc_norm` and `acc_bytes` measure the choice without the space that
    /// separates it from the context); `None` for the modes that are not a length-normalised answer sum
    /// (`mean_loss`, `calibrated`).
    pub fn divisor(self, answer: &str) -> Option<usize> {
        let text = answer.trim_start();
        match self {
            Self::Sum => Some(1),
            Self::PerChar => Some(text.chars().count()),
            Self::PerByte => Some(text.len()),
            Self::MeanLoss | Self::Calibrated => None,
        }
    }
}

/// The score of one candidate under `mode` (higher is better). `content_free` is the candidate's [`Scored`]
/// under the content-free input, needed by [`ScoreMode::Calibrated`].
pub fn candidate_score(mode: ScoreMode, scored: &Scored, answer: &str, content_free: Option<&Scored>) -> Result<f64> {
    Ok(match mode {
        ScoreMode::Sum | ScoreMode::PerChar | ScoreMode::PerByte => match mode.divisor(answer) {
            Some(0) | None => f64::NEG_INFINITY,
            Some(n) => scored.answer_logprob / n as f64,
        },
        ScoreMode::MeanLoss => {
            if scored.text_tokens == 0 {
                f64::NEG_INFINITY
            } else {
                scored.text_logprob / scored.text_tokens as f64
            }
        }
        ScoreMode::Calibrated => match content_free {
            Some(free) => scored.answer_logprob - free.answer_logprob,
            None => bail!("calibrated scoring needs the candidate's score under a content-free input"),
        },
    })
}

/// Index of the best score (the first on ties), `None` for no candidates.
pub fn best(scores: &[f64]) -> Option<usize> {
    scores
        .iter()
        .enumerate()
        .fold(None, |best: Option<(usize, f64)>, (i, &s)| match best {
            Some((_, b)) if b >= s => best,
            _ => Some((i, s)),
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(answer_logprob: f64, text_logprob: f64, text_tokens: usize) -> Scored {
        Scored { answer_logprob, answer_tokens: 1, text_logprob, text_tokens }
    }

    #[test]
    fn modes_by_hand() {
        let (da, net) = (scored(-4.0, -40.0, 10), scored(-5.0, -44.0, 11));
        let pick = |mode, free: Option<[&Scored; 2]>| {
            let scores: Vec<f64> = [(&da, " да"), (&net, " нет")]
                .iter()
                .enumerate()
                .map(|(i, (s, text))| candidate_score(mode, s, text, free.map(|f| f[i])).unwrap())
                .collect();
            (scores.clone(), best(&scores).unwrap())
        };
        assert_eq!(pick(ScoreMode::Sum, None), (vec![-4.0, -5.0], 0));
        // Without the leading space, " да" is 2 chars / 4 bytes, " нет" 3 chars / 6 bytes.
        assert_eq!(pick(ScoreMode::PerChar, None), (vec![-4.0 / 2.0, -5.0 / 3.0], 1));
        assert_eq!(pick(ScoreMode::PerByte, None), (vec![-4.0 / 4.0, -5.0 / 6.0], 1));
        assert_eq!(pick(ScoreMode::MeanLoss, None), (vec![-4.0, -4.0], 0));
        let (free_da, free_net) = (scored(-1.0, 0.0, 0), scored(-3.0, 0.0, 0));
        assert_eq!(pick(ScoreMode::Calibrated, Some([&free_da, &free_net])), (vec![-3.0, -2.0], 1));
        assert!(candidate_score(ScoreMode::Calibrated, &da, " да", None).is_err());
        assert_eq!(best(&[]), None);
        assert_eq!(best(&[1.0, 3.0, 3.0]), Some(1));
    }
}
