//! What the benchmark programs share: their few flags, the models they time, the prompt they use, and the timed
//! training step and generation run.
#![allow(dead_code)] // each example uses its own subset

use std::time::Instant;

use anyhow::{Context, Result};
use ruprompts::device::DeviceChoice;
use ruprompts::format::{PromptFormat, PROMPT_TOKEN};
use ruprompts::generate::{generate, GenerationConfig};
use ruprompts::model::{Gpt2Config, Model};
use ruprompts::prompt::Prompt;
use ruprompts::provider::ProviderConfig;
use ruprompts::tokenizer::Tokenizer;
use ruprompts::train::{AdamW, AdamWConfig};
use tch::{Device, Kind, Tensor};

/// `--flag value` pairs from the command line.
pub struct Flags(Vec<String>);

impl Flags {
    pub fn parse() -> Self {
        Self(std::env::args().skip(1).collect())
    }

    /// The number after `flag`, or `default`.
    pub fn number(&self, flag: &str, default: usize) -> Result<usize> {
        self.value(flag).map_or(Ok(default), |s| s.parse().with_context(|| format!("{flag} {s}")))
    }

    /// The text after `flag`, if given.
    pub fn value(&self, flag: &str) -> Option<&str> {
        self.0.iter().position(|a| a == flag).and_then(|i| self.0.get(i + 1)).map(String::as_str)
    }

    /// Applies `--threads N` and resolves `--device cpu|cuda` (default cpu).
    pub fn device(&self) -> Result<Device> {
        if let Some(n) = self.value("--threads") {
            tch::set_num_threads(n.parse().context("--threads")?);
        }
        match self.value("--device") {
            Some("cuda") => DeviceChoice::Cuda,
            Some("cpu") | None => DeviceChoice::Cpu,
            Some(other) => anyhow::bail!("--device {other}: expected cpu or cuda"),
        }
        .resolve()
    }
}

/// A file of the repository: where the example was built, or `RUPROMPTS_REPO` when it runs from a copy elsewhere
/// (scripts/gpu-check.sh on a GPU machine).
pub fn repo_file(path: &str) -> std::path::PathBuf {
    std::env::var_os("RUPROMPTS_REPO")
        .map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from)
        .join(path)
}

/// The tiny fixture model and a ruGPT-3-small-shaped one with random weights, with their table names.
pub fn models(device: Device) -> Result<[(&'static str, Model); 2]> {
    let fixtures = repo_file("tests/fixtures");
    let tiny = Model::from_dir(&fixtures.join("tiny-gpt2-ru"), Kind::Float, device)?;
    let config = Gpt2Config::from_file(&fixtures.join("rugpt3/config.json"))?;
    let small = ruprompts::rng::seeded(0, || Model::random(config, Kind::Float, device))?;
    Ok([("tiny (2×64, vocab 2000)", tiny), ("ruGPT-3-small shape (12×768, vocab 50264)", small)])
}

/// The tokenizers of [`models`], in its order: the tiny model's and the real ruGPT-3 one.
pub fn tokenizers() -> Result<[Tokenizer; 2]> {
    let fixtures = repo_file("tests/fixtures");
    Ok([Tokenizer::from_dir(&fixtures.join("tiny-gpt2-ru"))?, Tokenizer::from_dir(&fixtures.join("rugpt3"))?])
}

/// A `length`-token tensor prompt before a `{text}` field; its token id is the vocabulary size, as in ruPrompts.
pub fn prefix_prompt(model: &Model, length: usize) -> Result<(Prompt, i64)> {
    let compiled = format!("{}{{text}}", PROMPT_TOKEN.repeat(length));
    let format = PromptFormat::from_compiled(&format!("<P*{length}>{{text}}"), &compiled)?;
    Ok((Prompt::new(format, ProviderConfig::default(), model)?, model.config().vocab_size))
}

/// Prompt tokens before the text in every timed workload.
pub const PROMPT: usize = 20;
/// The training batch: rows × tokens, of which the last `TRAIN_LABELLED` of each row are labelled.
pub const TRAIN_BATCH: i64 = 8;
pub const TRAIN_TOKENS: i64 = 128;
pub const TRAIN_LABELLED: i64 = 16;
/// Text tokens after the prompt of a generation input (a little fewer in some rows, for left padding).
pub const GEN_TEXT: usize = 12;

/// Mean seconds per training step (forward, backward, AdamW) over `steps`, after one warm-up step; the loss
/// projects every position to the vocabulary (`full_projection`, as transformers' `labels=` loss does) or only
/// the labelled ones ([`Model::loss`], ours).
pub fn train_step_seconds(model: &Model, full_projection: bool, steps: usize) -> Result<f64> {
    let (prompt, prompt_id) = prefix_prompt(model, PROMPT)?;
    let device = model.device();
    let vocab = model.config().vocab_size;
    let (batch, tokens) = (TRAIN_BATCH, TRAIN_TOKENS);
    let text = Tensor::randint(vocab, [batch, tokens - PROMPT as i64], (Kind::Int64, device));
    let ids = Tensor::cat(&[Tensor::full([batch, PROMPT as i64], prompt_id, (Kind::Int64, device)), text], 1);
    let keep = Tensor::arange(tokens, (Kind::Int64, device)).ge(tokens - TRAIN_LABELLED).unsqueeze(0);
    let labels = ids.where_self(&keep, &Tensor::full([1], -100, (Kind::Int64, device)));
    timed_steps(&prompt, steps, || {
        let embeds = prompt.embed(model, &ids, prompt_id)?;
        if full_projection {
            let hidden = model.forward(embeds.input(), None, None)?;
            let logits = model.lm_logits(&hidden.narrow(1, 0, tokens - 1));
            Ok(logits.reshape([-1, vocab]).cross_entropy_loss::<Tensor>(
                &labels.narrow(1, 1, tokens - 1).reshape([-1]),
                None,
                tch::Reduction::Mean,
                -100,
                0.0,
            ))
        } else {
            model.loss(embeds.input(), None, &labels)
        }
    })
}

/// Mean seconds of `steps` training steps of `prompt` (the `loss`, backward, AdamW), after one warm-up step.
pub fn timed_steps(prompt: &Prompt, steps: usize, mut loss: impl FnMut() -> Result<Tensor>) -> Result<f64> {
    let mut opt = AdamW::new(
        AdamWConfig { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0 },
        prompt.var_store().variables().into_iter().collect(),
    );
    let mut total = 0.0;
    for step in 0..=steps {
        let start = Instant::now();
        opt.zero_grad();
        let loss = loss()?;
        loss.backward();
        opt.step(1e-3);
        let _ = loss.double_value(&[]); // waits for the device
        if step > 0 {
            total += start.elapsed().as_secs_f64();
        }
    }
    Ok(total / steps as f64)
}

/// Seconds to generate `new_tokens` for each of `batch` prompt + text rows (after one warm-up run), greedily or
/// with `num_beams` beams.
pub fn generation_seconds(
    model: &Model,
    tok: &Tokenizer,
    batch: usize,
    new_tokens: usize,
    use_cache: bool,
    num_beams: usize,
) -> Result<f64> {
    let (prompt, token_id) = prefix_prompt(model, PROMPT)?;
    let vocab = model.config().vocab_size;
    // Rows of slightly different lengths, so batches carry left padding as real ones do.
    let inputs: Vec<Vec<i64>> = (0..batch)
        .map(|r| {
            let text = (0..GEN_TEXT - r % 3).map(|i| ((r * 7919 + i * 104729) as i64) % vocab);
            std::iter::repeat_n(token_id, PROMPT).chain(text).collect()
        })
        .collect();
    let config = GenerationConfig { max_new_tokens: new_tokens, use_cache, num_beams, ..Default::default() };
    let injection = [prompt.injection(token_id)];
    generate(model, tok, &inputs, &injection, &GenerationConfig { max_new_tokens: 2, ..config.clone() })?;
    let start = Instant::now();
    let out = generate(model, tok, &inputs, &injection, &config)?;
    let seconds = start.elapsed().as_secs_f64();
    anyhow::ensure!(out.iter().all(|o| o[0].new_ids.len() == new_tokens), "a row stopped early");
    Ok(seconds)
}
