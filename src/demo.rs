//! The bundled demo model: a tiny GPT-2 (2 layers, d=64, vocab 2000, ruGPT-3's special-token layout) that the
//! project makes itself, so the demo needs nothing but this repository. It trains a byte-level BPE tokenizer
//! on the bundled Russian corpus (`assets/corpus_ru.txt.gz`), pretrains the model on it for a few hundred
//! steps, and writes both as a Hugging Face model directory, which is then loaded like any checkpoint.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

use crate::model::{Gpt2Config, Input, Model};
use crate::progress::Progress;

const CORPUS_GZ: &[u8] = include_bytes!("../assets/corpus_ru.txt.gz");
/// ruGPT-3's special tokens, in its id order: `<pad>`=0, `<s>`=1, `</s>`=2, `<unk>`=3, `<mask>`=4.
const SPECIALS: [&str; 5] = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"];

/// How the demo model is made. The defaults take well under a minute on 2 CPU cores.
#[derive(Debug, Clone)]
pub struct TinyModelSpec {
    pub vocab_size: usize,
    pub steps: usize,
    pub batch_size: i64,
    pub seq_len: i64,
    pub learning_rate: f64,
    pub seed: u64,
}

impl Default for TinyModelSpec {
    fn default() -> Self {
        Self { vocab_size: 2000, steps: 800, batch_size: 16, seq_len: 64, learning_rate: 1e-2, seed: 0 }
    }
}

/// What pretraining achieved, for the demo's report.
#[derive(Debug, Clone, Copy)]
pub struct PretrainReport {
    pub initial_loss: f64,
    pub final_loss: f64,
}

/// The bundled corpus, one text per line.
pub fn corpus() -> Result<Vec<String>> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(CORPUS_GZ).read_to_string(&mut text).context("bundled corpus is corrupt")?;
    Ok(text.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect())
}

/// Trains a byte-level BPE tokenizer (no prefix space, untrimmed offsets: ruGPT-3's settings).
pub fn train_tokenizer(lines: &[String], vocab_size: usize) -> Result<tokenizers::Tokenizer> {
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(SPECIALS.iter().map(|s| AddedToken::from(*s, true)).collect())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let mut tok = tokenizers::Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, false, true)))
        .with_decoder(Some(ByteLevel::default()))
        .with_post_processor(Some(ByteLevel::new(true, false, true)));
    tok.train(&mut trainer, lines.iter()).map_err(|e| anyhow!("tokenizer training failed: {e}"))?;
    Ok(tok)
}

/// GPT-2's initialisation: N(0, 0.02) weights, residual projections scaled by 1/sqrt(2 * n_layer).
fn init_for(name: &str, n_layer: i64) -> nn::Init {
    if name.contains("ln_") && name.ends_with(".weight") {
        nn::Init::Const(1.0)
    } else if name.ends_with(".bias") {
        nn::Init::Const(0.0)
    } else if name.ends_with("c_proj.weight") {
        nn::Init::Randn { mean: 0.0, stdev: 0.02 / (2.0 * n_layer as f64).sqrt() }
    } else {
        nn::Init::Randn { mean: 0.0, stdev: 0.02 }
    }
}

/// Pretrains a fresh GPT-2 of `config` on `tokens` (one stream) and returns its weights by HF name. The caller
/// seeds libtorch's generator (`rng::seeded`), so the weights depend on the seed alone.
fn pretrain(
    config: &Gpt2Config,
    tokens: &[i64],
    spec: &TinyModelSpec,
    device: Device,
    progress: &dyn Progress,
) -> Result<(Vec<(String, Tensor)>, PretrainReport)> {
    let vs = nn::VarStore::new(device);
    let params: Vec<(String, Tensor)> = config
        .expected_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let mut parts: Vec<&str> = name.split('.').collect();
            let leaf = parts.pop().expect("names are dotted");
            let path = parts.iter().fold(vs.root(), |p, part| p / *part);
            let var = path.var(leaf, &shape, init_for(&name, config.n_layer));
            (name, var)
        })
        .collect();
    let model = Model::from_tensors(config.clone(), params)?;
    let mut opt = nn::AdamW::default().build(&vs, spec.learning_rate)?;
    let stream = Tensor::from_slice(tokens).to_device(device);
    let span = tokens.len() as i64 - spec.seq_len;
    anyhow::ensure!(span > 0, "corpus of {} tokens is shorter than one sequence", tokens.len());
    let mut report = PretrainReport { initial_loss: f64::NAN, final_loss: f64::NAN };
    let mut smoothed = None;
    for step in 0..spec.steps {
        let starts = Tensor::randint(span, [spec.batch_size, 1], (Kind::Int64, device));
        let batch = stream.take(&(starts + Tensor::arange(spec.seq_len, (Kind::Int64, device))));
        // Linear warm-up over the first 5% of steps, then cosine decay to zero.
        let warmup = (spec.steps / 20).max(1);
        let progress_frac = (step.saturating_sub(warmup)) as f64 / (spec.steps - warmup).max(1) as f64;
        let lr = if step < warmup {
            spec.learning_rate * (step + 1) as f64 / warmup as f64
        } else {
            spec.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * progress_frac).cos())
        };
        opt.set_lr(lr);
        let loss = model.lm_loss(&model.forward(Input::Ids(&batch), None, None)?, &batch);
        opt.backward_step(&loss);
        let value = loss.double_value(&[]);
        if step == 0 {
            report.initial_loss = value;
        }
        let s = smoothed.map_or(value, |s: f64| 0.9 * s + 0.1 * value);
        smoothed = Some(s);
        report.final_loss = s;
        progress.advance(1, &format!("loss {s:.3}"));
    }
    let tensors = vs.variables().into_iter().map(|(n, t)| (n, t.detach().to_device(Device::Cpu))).collect();
    Ok((tensors, report))
}

/// Makes the demo model directory at `dir` (tokenizer, config, safetensors weights). Writes into a sibling
/// temp folder and renames it into place, so an interrupted run leaves nothing half-written.
pub fn build_tiny_model(
    dir: &Path,
    spec: &TinyModelSpec,
    device: Device,
    progress: &dyn Progress,
) -> Result<PretrainReport> {
    let lines = corpus()?;
    let tokenizer = train_tokenizer(&lines, spec.vocab_size)?;
    let mut tokens = Vec::new();
    let eos = tokenizer.token_to_id("</s>").expect("specials are trained in") as i64;
    let encodings = tokenizer.encode_batch(lines.clone(), false).map_err(|e| anyhow!("cannot tokenize corpus: {e}"))?;
    for enc in encodings {
        tokens.extend(enc.get_ids().iter().map(|&i| i as i64));
        tokens.push(eos);
    }
    let config = Gpt2Config {
        model_type: "gpt2".into(),
        vocab_size: tokenizer.get_vocab_size(true) as i64,
        n_positions: 256,
        n_embd: 64,
        n_layer: 2,
        n_head: 4,
        n_inner: None,
        activation_function: "gelu_new".into(),
        layer_norm_epsilon: 1e-5,
        scale_attn_weights: true,
        scale_attn_by_inverse_layer_idx: false,
        reorder_and_upcast_attn: false,
        tie_word_embeddings: true,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        pad_token_id: Some(0),
    };
    progress.start("pretraining the demo model", spec.steps as u64, 0);
    let (weights, report) = crate::rng::seeded(spec.seed, || pretrain(&config, &tokens, spec, device, progress))?;
    progress.finish();

    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = tempfile::Builder::new().prefix(".tiny-model-").tempdir_in(parent)?;
    let out = tmp.path();
    let named: Vec<(String, &Tensor)> = weights.iter().map(|(n, t)| (format!("transformer.{n}"), t)).collect();
    let named: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    Tensor::write_safetensors(&named, out.join("model.safetensors"))?;
    let mut config_json = serde_json::to_value(&config)?;
    config_json["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&config_json)?)?;
    tokenizer.save(out.join("tokenizer.json"), false).map_err(|e| anyhow!("cannot save tokenizer: {e}"))?;
    let specials = serde_json::json!({
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>"
    });
    std::fs::write(out.join("special_tokens_map.json"), serde_json::to_string_pretty(&specials)?)?;
    let mut tok_config = specials.clone();
    tok_config["tokenizer_class"] = "GPT2Tokenizer".into();
    tok_config["add_prefix_space"] = false.into();
    tok_config["model_max_length"] = config.n_positions.into();
    std::fs::write(out.join("tokenizer_config.json"), serde_json::to_string_pretty(&tok_config)?)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    std::fs::rename(tmp.keep(), dir).with_context(|| format!("cannot move the demo model into {}", dir.display()))?;
    Ok(report)
}

/// Builds the demo model in `dir` when it is not there yet (or `rebuild`); returns the pretraining report when
/// it built one.
pub fn build_if_missing(
    dir: &Path,
    spec: &TinyModelSpec,
    rebuild: bool,
    device: Device,
    progress: &dyn Progress,
) -> Result<Option<PretrainReport>> {
    if !rebuild && dir.join("config.json").is_file() {
        return Ok(None);
    }
    progress.warn(&format!("building the demo model in {} (once)", dir.display()));
    build_tiny_model(dir, spec, device, progress).map(Some)
}

/// The demo model's default directory, built there first (about 40 s) if it is not yet.
pub fn ensure_model(device: Device, progress: &dyn Progress) -> Result<std::path::PathBuf> {
    let dir = default_dir();
    build_if_missing(&dir, &TinyModelSpec::default(), false, device, progress)?;
    Ok(dir)
}

/// Default home of the demo model: `$RUPROMPTS_HOME/tiny-gpt2-ru`, else `$XDG_CACHE_HOME/ruprompts/...`,
/// else `~/.cache/ruprompts/...`.
pub fn default_dir() -> std::path::PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    let home = env("RUPROMPTS_HOME")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("ruprompts")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/ruprompts")))
        .unwrap_or_else(|| std::path::PathBuf::from(".ruprompts"));
    home.join("tiny-gpt2-ru")
}
