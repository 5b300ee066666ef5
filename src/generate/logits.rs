//! From logits to the next token: transformers' logits processors (repetition penalty, no repeated n-grams, bad
//! words, min_new_tokens, in its order and with its formulas), then, when sampling, temperature, top-k and top-p.

use anyhow::{ensure, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use super::GenerationConfig;
use crate::tokenizer::Tokenizer;

/// One row being decoded: its real tokens so far (the input's, prompt tokens included, then the new ones) and
/// how many of them are new.
pub(super) struct Row<'a> {
    pub tokens: &'a [i64],
    pub new: usize,
}

/// The processors `config` turns on, with its bad words as token sequences.
pub(super) struct Processors {
    config: GenerationConfig,
    bad_words: Vec<Vec<i64>>,
}

impl Processors {
    /// Tokenizes `config.bad_words`: each text alone and after a space, as the model meets a word at the start
    /// and inside a text. Sequences with a token outside the model's `vocab` cannot be produced and are left out.
    pub fn new(config: &GenerationConfig, tokenizer: &Tokenizer, vocab: i64) -> Result<Self> {
        let mut bad_words: Vec<Vec<i64>> = Vec::new();
        for word in &config.bad_words {
            let spaced = format!(" {word}");
            let forms = if word.starts_with(' ') { vec![word.as_str()] } else { vec![word.as_str(), &spaced] };
            for form in forms {
                let ids = tokenizer.encode_ids(form)?;
                // A lone eos is not banned (transformers leaves it out too): a row must be able to end.
                let lone_eos = ids.len() == 1 && Some(ids[0]) == config.eos_token_id;
                if !ids.is_empty()
                    && !lone_eos
                    && ids.iter().all(|t| (0..vocab).contains(t))
                    && !bad_words.contains(&ids)
                {
                    bad_words.push(ids);
                }
            }
        }
        Ok(Self { config: config.clone(), bad_words })
    }

    /// `scores: [rows, V]` (logits, or log-probabilities under beam search) after every processor, for `rows`.
    pub fn apply(&self, scores: &Tensor, rows: &[Row]) -> Tensor {
        let vocab = scores.size()[1];
        let mut scores = scores.shallow_clone();
        if self.config.repetition_penalty != 1.0 {
            scores = penalise(&scores, rows, self.config.repetition_penalty);
        }
        let mut banned: Vec<i64> = Vec::new();
        for (r, row) in rows.iter().enumerate() {
            let mut ban = |t: i64| {
                if (0..vocab).contains(&t) {
                    banned.push(r as i64 * vocab + t);
                }
            };
            repeated_ngram_ends(row.tokens, self.config.no_repeat_ngram_size).into_iter().for_each(&mut ban);
            for word in &self.bad_words {
                let (last, prefix) = word.split_last().expect("bad words are not empty");
                if row.tokens.ends_with(prefix) {
                    ban(*last);
                }
            }
            if let Some(eos) = self.config.eos_token_id.filter(|_| row.new < self.config.min_new_tokens) {
                ban(eos);
            }
        }
        if banned.is_empty() {
            return scores;
        }
        let index = Tensor::from_slice(&banned).to_device(scores.device());
        scores.reshape([-1]).index_fill(0, &index, f64::NEG_INFINITY).view([-1, vocab])
    }
}

/// The tokens that would repeat an n-gram of `tokens` (transformers' `NoRepeatNGramLogitsProcessor`): the ends
/// of earlier n-grams that start with the last n − 1 tokens.
fn repeated_ngram_ends(tokens: &[i64], n: usize) -> Vec<i64> {
    if n == 0 || tokens.len() + 1 < n {
        return Vec::new();
    }
    let prefix = &tokens[tokens.len() + 1 - n..];
    tokens.windows(n).filter(|w| &w[..n - 1] == prefix).map(|w| w[n - 1]).collect()
}

/// Divides positive and multiplies negative scores of tokens already in each row by `penalty` (transformers'
/// `RepetitionPenaltyLogitsProcessor`); tokens outside the vocabulary (prompt tokens) are skipped.
fn penalise(scores: &Tensor, rows: &[Row], penalty: f64) -> Tensor {
    let vocab = scores.size()[1];
    let index: Vec<i64> = rows
        .iter()
        .enumerate()
        .flat_map(|(r, row)| {
            row.tokens.iter().filter(|&&t| (0..vocab).contains(&t)).map(move |&t| r as i64 * vocab + t)
        })
        .collect();
    if index.is_empty() {
        return scores.shallow_clone();
    }
    let index = Tensor::from_slice(&index).to_device(scores.device());
    let flat = scores.reshape([-1]);
    let picked = flat.index_select(0, &index);
    let changed = (&picked * penalty).where_self(&picked.lt(0.0), &(&picked / penalty));
    flat.index_copy(0, &index, &changed).view([-1, vocab])
}

/// Keeps the `k` largest logits of each row; the rest become −∞.
fn top_k(logits: &Tensor, k: usize) -> Tensor {
    let k = (k as i64).min(logits.size()[1]).max(1);
    let (values, _) = logits.topk(k, -1, true, true);
    let threshold = values.narrow(1, k - 1, 1);
    logits.masked_fill(&logits.lt_tensor(&threshold), f64::NEG_INFINITY)
}

/// Keeps the smallest set of most likely tokens whose probability reaches `p` (at least one).
fn top_p(logits: &Tensor, p: f64) -> Tensor {
    let (sorted, indices) = logits.sort(-1, false);
    let cumulative = sorted.softmax(-1, Kind::Float).cumsum(-1, Kind::Float);
    let remove = cumulative.le(1.0 - p);
    let last = remove.size()[1] - 1;
    let _ = remove.narrow(1, last, 1).fill_(0);
    let remove = remove.scatter(1, &indices, &remove);
    logits.masked_fill(&remove, f64::NEG_INFINITY)
}

/// Each row's own random stream for sampling, so a row's draws depend on its seed alone and never on the rows
/// decoded beside it: with a seed, sequence j of every input draws from stream j of that seed (the same request
/// samples the same text alone or in any batch); without one, every row from fresh entropy.
pub(super) struct Streams(Vec<ChaCha8Rng>);

impl Streams {
    /// Streams for `inputs` inputs of `n` sequences each, in that order.
    pub fn new(seed: Option<u64>, inputs: usize, n: usize) -> Self {
        let stream = |j: usize| {
            let mut rng = match seed {
                Some(seed) => ChaCha8Rng::seed_from_u64(seed),
                None => ChaCha8Rng::from_os_rng(),
            };
            rng.set_stream(j as u64);
            rng
        };
        Self((0..inputs).flat_map(|_| (0..n).map(stream)).collect())
    }

    /// One token per row of `probs: [B, V]` (rows summing to more than 0), drawn by inverse CDF from the row's
    /// own stream.
    fn draw(&mut self, probs: &Tensor) -> Result<Vec<i64>> {
        let (b, v) = probs.size2()?;
        ensure!(b as usize == self.0.len(), "{} sampling streams for {b} rows", self.0.len());
        let probs = Vec::<f32>::try_from(probs.to_device(tch::Device::Cpu).to_kind(Kind::Float).reshape([-1]))?;
        Ok(probs
            .chunks(v as usize)
            .zip(&mut self.0)
            .map(|(row, rng)| {
                let total: f64 = row.iter().map(|&p| f64::from(p)).sum();
                let target = rng.random::<f64>() * total;
                let mut acc = 0.0;
                row.iter()
                    .position(|&p| {
                        acc += f64::from(p);
                        p > 0.0 && acc > target
                    })
                    // The last token with probability left, for a target that rounding puts past the sum.
                    .unwrap_or_else(|| row.iter().rposition(|&p| p > 0.0).unwrap_or(0)) as i64
            })
            .collect())
    }
}

/// A NaN logit (an overflowing half-precision model) is never chosen.
pub(super) fn finite(logits: &Tensor) -> Tensor {
    logits.nan_to_num(f64::NEG_INFINITY, None, None)
}

/// Next token of every row of `logits: [B, V]` (f32) after `processors`, greedy or sampled as the validated
/// `config` says.
pub(super) fn next_tokens(
    logits: &Tensor,
    rows: &[Row],
    processors: &Processors,
    config: &GenerationConfig,
    streams: &mut Streams,
) -> Result<Tensor> {
    let mut scores = processors.apply(&finite(logits), rows);
    let greedy = scores.argmax(-1, false);
    if !config.do_sample {
        return Ok(greedy);
    }
    if config.temperature != 1.0 {
        // Each row's largest score moved to 0 first: a tiny temperature then sends the others to −∞ (greedy in
        // the limit) instead of overflowing to +∞ and a NaN softmax.
        scores = (&scores - scores.amax([-1], true)) / config.temperature;
    }
    if let Some(k) = config.top_k.filter(|&k| k > 0) {
        scores = top_k(&scores, k);
    }
    if let Some(p) = config.top_p.filter(|&p| p < 1.0) {
        scores = top_p(&scores, p);
    }
    let probs = scores.softmax(-1, Kind::Float).nan_to_num(0.0, Some(0.0), Some(0.0));
    // A row with no finite probability left (every logit −∞ or +∞) takes its most likely token.
    let empty = probs.sum_dim_intlist(-1, false, Kind::Float).le(0.0);
    let probs =
        probs.where_self(&empty.logical_not().unsqueeze(-1), &greedy.one_hot(probs.size()[1]).to_kind(Kind::Float));
    Ok(Tensor::from_slice(&streams.draw(&probs)?).to_device(logits.device()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_follow_transformers() {
        let logits = Tensor::from_slice(&[1.0f32, 3.0, 2.0, -1.0]).unsqueeze(0);
        let kept = |t: Tensor| {
            Vec::<f32>::try_from(t.squeeze_dim(0)).unwrap().iter().map(|v| v.is_finite()).collect::<Vec<_>>()
        };
        assert_eq!(kept(top_k(&logits, 2)), [false, true, true, false]);
        // softmax ≈ [0.087, 0.644, 0.237, 0.032]: p=0.7 needs the two most likely, p=0.5 only the first.
        assert_eq!(kept(top_p(&logits, 0.7)), [false, true, true, false]);
        assert_eq!(kept(top_p(&logits, 0.5)), [false, true, false, false]);
        // Prompt tokens (outside the vocabulary) and repeats are skipped or penalised once.
        let penalised = penalise(&logits, &[Row { tokens: &[1, 3, 9, 1], new: 0 }], 2.0);
        assert_eq!(Vec::<f32>::try_from(penalised.squeeze_dim(0)).unwrap(), [1.0, 1.5, 2.0, -2.0]);
    }

    #[test]
    fn processors_ban_repeated_ngrams_bad_words_and_an_early_eos() {
        assert_eq!(repeated_ngram_ends(&[5, 6, 7, 5, 6], 3), [7]);
        assert_eq!(repeated_ngram_ends(&[5, 6, 5, 8, 5], 2), [6, 8]);
        assert!(repeated_ngram_ends(&[5, 6], 3).is_empty());
        assert!(repeated_ngram_ends(&[5, 6, 5], 0).is_empty());
        let config = GenerationConfig {
            no_repeat_ngram_size: 2,
            min_new_tokens: 2,
            eos_token_id: Some(0),
            ..Default::default()
        };
        let processors = Processors { config: config.clone(), bad_words: vec![vec![4], vec![2, 3]] };
        let scores = Tensor::zeros([2, 6], (Kind::Float, tch::Device::Cpu));
        // Row 0: 1 new token (eos banned), ends with 2 (so 3 is banned), 2 was followed by 5 before.
        // Row 1: 2 new tokens (eos allowed), no repeated n-gram; the lone bad word 4 is banned everywhere.
        let rows = [Row { tokens: &[2, 5, 1, 2], new: 1 }, Row { tokens: &[1, 5], new: 2 }];
        let kept = processors.apply(&scores, &rows).isfinite();
        let kept = Vec::<bool>::try_from(kept.reshape([-1])).unwrap();
        assert_eq!(&kept[..6], [false, true, true, false, false, false]);
        assert_eq!(&kept[6..], [true, true, true, true, false, true]);
    }

    #[test]
    fn sampling_never_hands_non_finite_probabilities_to_the_sampler() {
        let sample = |values: &[f32], temperature: f64| {
            let config = GenerationConfig { do_sample: true, temperature, ..Default::default() };
            let logits = Tensor::from_slice(values).unsqueeze(0);
            let processors = Processors { config: config.clone(), bad_words: Vec::new() };
            let rows = [Row { tokens: &[], new: 0 }];
            let mut streams = Streams::new(Some(1), 1, 1);
            Vec::<i64>::try_from(next_tokens(&logits, &rows, &processors, &config, &mut streams).unwrap()).unwrap()[0]
        };
        // A denormal temperature is greedy in the limit (it overflowed to a NaN softmax and panicked before).
        assert_eq!(sample(&[1.0, 3.0, 2.0, -1.0], 1e-45), 1);
        // NaN logits are never drawn; +∞ leaves no finite probability, so the row is decoded greedily.
        assert_eq!(sample(&[f32::NAN, 3.0, f32::INFINITY, -1.0], 0.5), 2);
        assert!((0..4).contains(&sample(&[f32::NEG_INFINITY; 4], 1.0)));
        assert_eq!(sample(&[f32::NAN, f32::NAN, 5.0, f32::NAN], 1.0), 2);
    }
}
