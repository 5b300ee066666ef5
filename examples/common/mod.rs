//! What the benchmark programs share: their few flags, the two models they time, and the prompt they use.

use anyhow::{Context, Result};
use ruprompts::device::DeviceChoice;
use ruprompts::format::{PromptFormat, PROMPT_TOKEN};
use ruprompts::model::{Gpt2, Gpt2Config};
use ruprompts::prompt::Prompt;
use ruprompts::provider::ProviderConfig;
use tch::{Device, Kind};

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

    fn value(&self, flag: &str) -> Option<&str> {
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

/// The tiny fixture model and a ruGPT-3-small-shaped one with random weights, with their table names.
pub fn models(device: Device) -> Result<[(&'static str, Gpt2); 2]> {
    let shared = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    let tiny = Gpt2::from_dir(&shared.join("fixtures/tiny-gpt2-ru"), Kind::Float, device)?;
    let config = Gpt2Config::from_file(&shared.join("tokenizers/rugpt3/config.json"))?;
    let small = ruprompts::rng::seeded(0, || Gpt2::random(config, Kind::Float, device))?;
    Ok([("tiny (2×64, vocab 2000)", tiny), ("ruGPT-3-small shape (12×768, vocab 50264)", small)])
}

/// A `length`-token tensor prompt before a `{text}` field; its token id is the vocabulary size, as in ruPrompts.
pub fn prefix_prompt(model: &Gpt2, length: usize) -> Result<(Prompt, i64)> {
    let compiled = format!("{}{{text}}", PROMPT_TOKEN.repeat(length));
    let format = PromptFormat::from_compiled(&format!("<P*{length}>{{text}}"), &compiled)?;
    Ok((Prompt::new(format, ProviderConfig::default(), model)?, model.config().vocab_size))
}
