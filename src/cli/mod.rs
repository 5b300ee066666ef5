//! Command-line interface: argument definitions and what each command prints.

mod bars;
mod decoding;
mod eval;
mod export;
mod generate;
mod hub;
mod inspect;
mod rsg;
mod serve;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::demo::{self, TinyModelSpec};
use crate::device::{DType, DeviceChoice, DeviceMap};
use crate::dist::Ranks;
use crate::format::PromptFormat;
use crate::generate::{generate, GenerationConfig};
use crate::model::{Backbone, Dims, Model, ModelSource, Quantize};
use crate::progress::{Progress, Silent};
use crate::provider::{Projection, ProviderConfig};
use crate::resolve;
use crate::tokenizer::Tokenizer;
use crate::train::{self, TrainConfig, TrainOptions};
use bars::Bars;

/// The user stopped the command with Ctrl-C and what it had done is kept; `main` exits with 130, the shell's
/// code for an interrupt, without calling it an error.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// ruprompts: continuous prompt tuning (P-tuning) of frozen causal language models.
///
/// A prompt is a format such as `<P*10>{question}<P*5>` plus a small set of trainable embeddings; the
/// language model itself stays frozen: a Hugging Face folder (GPT-2, ruGPT-3, mGPT; Llama, Mistral, Qwen2) or a
/// GGUF file (llama, qwen2). Start with `bash scripts/train.sh` (SmolLM2 learns review sentiment) or `ruprompts
/// demo` (the bundled tiny Russian GPT-2).
#[derive(Debug, Parser)]
#[command(name = "ruprompts", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// CPU threads for tensor work (default: libtorch's choice, one per core).
    #[arg(long, global = true)]
    pub threads: Option<i32>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build (first run only) and load the bundled tiny Russian GPT-2, print its summary and greedy
    /// continuations of a few prompts.
    Demo(DemoArgs),
    /// Print the summary of a checkpoint: a Hugging Face folder (config.json, weights, tokenizer) or a GGUF file.
    Info(ModelArgs),
    /// Train a soft prompt from a YAML config; the frozen model never changes.
    ///
    /// `ruprompts train examples/configs/terra.yaml training.max_steps=200 'prompt_format.template=<P*20>{premise}'`
    /// trains and writes into the config's output_dir: `checkpoint-<step>/` folders, metrics.jsonl, loss.svg,
    /// config.yaml (the resolved config) and the final prompt (prompt.json + weights, ruPrompts' layout).
    /// `ruprompts train --resume OUTPUT_DIR` continues a run from its last complete checkpoint, with the same
    /// losses as if it had never stopped.
    Train(TrainArgs),
    /// Generate with a trained prompt, or with the bare model: text2text (fill the format, return the new text) or
    /// text-generation (prompt as a prefix, return the whole text), batched, jsonl out; greedy, sampling or beam
    /// search, with transformers' knobs and names (stop strings, n-gram blocking, bad words, min/max new tokens).
    ///
    /// `ruprompts generate --prompt runs/detox "Отвали, дурак"`; `ruprompts generate --model model.gguf --chat
    /// "What is the capital of France?"` answers in the checkpoint's chat template;
    /// `ruprompts generate --prompt qa=DIR1 --prompt sum=DIR2 --input requests.jsonl` (each line may name its key);
    /// `ruprompts generate --prompt detox_russe --field toxic_comment="…"` pulls a prompt ruPrompts published and
    /// decodes with its notebook's recipe (10 beams); `--stream` prints one text as it is decoded.
    Generate(generate::GenerateArgs),
    /// Serve the model and any number of prompts behind an OpenAI-compatible API (/v1/completions,
    /// /v1/chat/completions with the checkpoint's chat template, /v1/models), every request decoded in one
    /// continuously refilled batch, whatever prompt it names.
    ///
    /// `ruprompts serve --model demo --prompt sentiment=runs/sentiment --port 8000`, then
    /// `curl localhost:8000/v1/completions -d '{"model": "sentiment", "prompt": "Отличный фильм", "max_tokens": 5}'`
    /// or any OpenAI client with base_url http://127.0.0.1:8000/v1. Also /health, /metrics (Prometheus) and
    /// vLLM's /tokenize, /detokenize and /tokenizer_info, which lm-evaluation-harness's local-completions reads.
    Serve(serve::ServeArgs),
    /// Count the trainable parameters of each prompt provider for a prompt length and embedding size.
    ///
    /// Either give the numbers (`--prompt-length 40 --embedding-dim 1536` is a 40-token prompt for
    /// ruGPT-3 Large) or a model directory and a format, which are read for them. Nothing is allocated.
    Params(ParamsArgs),
    /// Evaluate zero-shot, k-shot and a tuned prompt on a Russian SuperGLUE task or a task file of your own:
    /// every candidate answer is scored by the frozen model, the best wins; prints and writes a report (Markdown,
    /// JSON, SVG bar chart) with every scoring mode, bootstrap error bars and the majority and chance baselines.
    ///
    /// `ruprompts eval --config examples/configs/terra.yaml --num-fewshot 0,1,5 --log-samples` uses the trained
    /// prompt in the config's output_dir; `ruprompts eval --task danetqa --data val.jsonl --prompt runs/danetqa`
    /// works from a prompt folder; `ruprompts eval --task-file examples/tasks/sentiment.yaml --model demo` scores a
    /// task of your own. Scores are cached in `<out>/cache`, so an interrupted run resumes. `--submission DIR` writes
    /// `<Task>.jsonl` for test splits.
    Eval(eval::EvalArgs),
    /// Russian SuperGLUE end to end: for each task train a prompt, score it zero-shot and tuned on the validation
    /// split, and print the CPT paper's table with the leaderboard's total score.
    ///
    /// `ruprompts rsg --model demo --data RSG` reads the official layout (RSG/TERRa/train.jsonl, val.jsonl, …;
    /// RSG/LiDiRus/LiDiRus.jsonl), trains from the built-in per-task configs (src/rsg/configs; or
    /// --config-dir) with any KEY=VALUE overrides, and writes runs/rsg/report.{md,json,svg}. LiDiRus is scored
    /// with the TERRa prompt. Rerunning redoes nothing already done with the same model, config and data; a killed
    /// run continues where it stopped; a failed task is reported in the table, the others still run, and the exit
    /// status is 1.
    Rsg(rsg::RsgArgs),
    /// Push a trained prompt to a Hugging Face Hub repo, with a generated model card (README.md).
    ///
    /// `ruprompts push runs/danetqa alice/rugpt3small-danetqa` creates the repo if needed and commits prompt.json,
    /// the weights (safetensors and ruPrompts' prompt_provider.bin) and the card, which gives the base model,
    /// format, provider, trainable parameters and, when runs/danetqa/eval/report.json exists, the evaluation. Files
    /// the repo already has are not sent again; pushing the same prompt twice commits nothing. Needs a token with
    /// write access (HF_TOKEN, or `hf auth login`); HF_ENDPOINT points it at a mirror.
    Push(hub::PushArgs),
    /// Download a prompt (or with --model a backbone) from the Hub into the Hugging Face cache and print its
    /// folder.
    ///
    /// Anything that takes a prompt or model folder also takes a Hub id and pulls it itself; `pull` fills the
    /// cache ahead of time, e.g. for a machine that will run with HF_HUB_OFFLINE=1.
    Pull(hub::PullArgs),
    /// Write a prompt in another tool's layout.
    ///
    /// `ruprompts export --peft runs/danetqa peft-danetqa` writes a PEFT adapter folder that
    /// `PeftModel.from_pretrained(model, "peft-danetqa")` loads: PREFIX_TUNING for a prefix prompt (whose format
    /// may hold no prompt tokens of its own), PROMPT_TUNING for a prompt whose tokens all come first (<P*N>{text}).
    /// The other way needs no command: a PEFT adapter folder is taken wherever a prompt is.
    Export(export::ExportArgs),
    /// Show what a prompt's soft tokens are near: per token its nearest vocabulary tokens (cosine), its norm
    /// against the vocabulary's norms, and for a training run's folder how far it moved from where it started
    /// (rebuilt from the run's config) at every checkpoint.
    ///
    /// `ruprompts inspect runs/danetqa` (the model the prompt names), `ruprompts inspect DIR --model demo --json`.
    /// A deep prompt's virtual tokens are keys and values, not embeddings: they get norms and distances only.
    Inspect(inspect::InspectArgs),
}

/// Where a model is loaded. Flags not given keep a config's `model:` values (with --config), else the defaults.
#[derive(Debug, Args)]
pub struct Placement {
    /// Device for the model: cpu, cuda, or auto (CUDA when available) [default: auto].
    #[arg(long, value_enum)]
    pub device: Option<DeviceChoice>,
    /// Precision of the frozen weights; log-probabilities are always computed in f32 [default: f32].
    #[arg(long, value_enum)]
    pub dtype: Option<DType>,
    /// Store the model's linear layers as int8 (a quarter of f32's bytes) or int4 (an eighth, CPU only): faster
    /// decoding on CPU; for scoring, generation and serving, not training [default: none].
    #[arg(long, value_enum)]
    pub quantize: Option<Quantize>,
    /// Spread the model's blocks over devices: `auto` (the visible GPUs, by free memory) or one device per block,
    /// e.g. `cuda:0,cuda:0,cuda:1,cuda:1`; the embeddings go with the first block, the head with the last.
    #[arg(long, value_name = "auto|DEVICE,...")]
    pub device_map: Option<DeviceMap>,
}

impl Placement {
    /// The model at `path` (a folder, a Hub id or `demo`) placed as asked.
    pub fn model(&self, path: PathBuf) -> ModelSource {
        self.over(ModelSource::local(path))
    }

    /// `source` with the flags given on the command line over its own values.
    pub fn over(&self, source: ModelSource) -> ModelSource {
        ModelSource {
            dtype: self.dtype.unwrap_or(source.dtype),
            device: self.device.unwrap_or(source.device),
            quantize: self.quantize.unwrap_or(source.quantize),
            device_map: self.device_map.clone().or(source.device_map),
            ..source
        }
    }

    /// The device asked for (`auto` unless given).
    pub fn device(&self) -> DeviceChoice {
        self.device.unwrap_or_default()
    }
}

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Hugging Face model directory (config.json, model.safetensors or sharded or pytorch_model.bin,
    /// tokenizer.json or vocab.json + merges.txt), a Hub id (`owner/name[@revision]`, pulled into the Hugging Face
    /// cache) or `demo`.
    pub model: PathBuf,
    #[command(flatten)]
    pub placement: Placement,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo model lives (built there on first use).
    /// Default: $RUPROMPTS_HOME/tiny-gpt2-ru, else ~/.cache/ruprompts/tiny-gpt2-ru.
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// Build the demo model again even if it exists.
    #[arg(long)]
    pub rebuild: bool,
    /// Pretraining steps when building the demo model.
    #[arg(long, default_value_t = TinyModelSpec::default().steps)]
    pub steps: usize,
    /// Tokens to generate per prompt.
    #[arg(long, default_value_t = 24)]
    pub max_new_tokens: usize,
    #[command(flatten)]
    pub placement: Placement,
    /// Prompts to continue (default: three Russian openings).
    pub prompts: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The YAML config (see examples/configs/); not needed with --resume.
    #[arg(required_unless_present = "resume")]
    pub config: Option<PathBuf>,
    /// Overrides of config keys, e.g. training.batch_size=4 optimizer.lr=3e-2 (values are YAML).
    #[arg(value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Continue the run in this output folder from its last complete checkpoint (its config.yaml is used,
    /// with any KEY=VALUE overrides on top).
    #[arg(long, value_name = "OUTPUT_DIR")]
    pub resume: Option<PathBuf>,
    /// Replace a run already in the output folder (without it, such a folder is refused).
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Stop after this many updates now; `--resume` continues later.
    #[arg(long, value_name = "N")]
    pub max_updates_now: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ParamsArgs {
    /// Model folder (any family `info` reads) or GGUF file: its config gives the embedding size, layers and
    /// key width, its tokenizer compiles --format.
    #[arg(long, conflicts_with = "embedding_dim")]
    pub model: Option<PathBuf>,
    /// Prompt format, e.g. "<P*10>{question}<P>Ответ:</P>" (with --model, whose tokenizer splits phrases).
    #[arg(long, conflicts_with = "prompt_length", requires = "model")]
    pub format: Option<String>,
    /// Number of trainable prompt tokens.
    #[arg(long)]
    pub prompt_length: Option<i64>,
    /// Embedding size of the backbone (768 ruGPT-3 small, 1024 medium, 1536 large, 2048 mGPT).
    #[arg(long)]
    pub embedding_dim: Option<i64>,
    /// LSTM hidden size of the lstm provider (default: the embedding size, as in ruPrompts).
    #[arg(long)]
    pub lstm_hidden_dim: Option<i64>,
    /// Size of the lstm provider's learned input (default: the embedding size).
    #[arg(long)]
    pub lstm_input_dim: Option<i64>,
    /// Hidden size of the mlp provider (default: the embedding size).
    #[arg(long)]
    pub mlp_hidden_dim: Option<i64>,
    /// Transformer layers of the backbone, for the prefix provider's count (24 ruGPT-3 large; read from --model).
    #[arg(long, conflicts_with = "model")]
    pub num_layers: Option<i64>,
    /// Hidden size of the prefix provider's projection MLP (default: the key width, as in PEFT).
    #[arg(long)]
    pub prefix_hidden_dim: Option<i64>,
    /// Width of one layer's keys for the prefix provider: key/value heads × head size, less than the embedding
    /// size with grouped-query attention (default: the embedding size; read from --model).
    #[arg(long, conflicts_with = "model")]
    pub kv_dim: Option<i64>,
}

pub fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        tch::set_num_threads(n);
    }
    match cli.command {
        Command::Demo(args) => run_demo(args),
        Command::Info(args) => {
            let backbone = resolve::backbone(&args.placement.model(args.model.clone()), &Bars::default())?;
            print_summary(&backbone.dir, &backbone.model, &backbone.tokenizer);
            Ok(())
        }
        Command::Params(args) => run_params(args),
        Command::Train(args) => run_train(args),
        Command::Generate(args) => generate::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Rsg(args) => rsg::run_rsg(args),
        Command::Export(args) => export::run(args),
        Command::Inspect(args) => inspect::run(args),
        #[cfg(feature = "hub")]
        Command::Push(args) => hub::push(args),
        #[cfg(feature = "hub")]
        Command::Pull(args) => hub::pull(args),
        #[cfg(not(feature = "hub"))]
        Command::Push(_) | Command::Pull(_) => {
            bail!("this build has no Hub client: rebuild with the `hub` cargo feature (on by default)")
        }
    }
}

fn run_train(args: TrainArgs) -> Result<()> {
    let (config, resume) = match (&args.resume, &args.config) {
        (Some(dir), first) => {
            // With --resume every positional is an override (clap takes the first for the config).
            let mut overrides: Vec<String> = first.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            overrides.extend(args.overrides.iter().cloned());
            if let Some(bad) = overrides.iter().find(|o| !o.contains('=')) {
                bail!("with --resume the run's own config.yaml is used; `{bad}` is not a KEY=VALUE override");
            }
            (train::resume_config(dir, &overrides)?, true)
        }
        (None, Some(path)) => (TrainConfig::load(path, &args.overrides)?, false),
        (None, None) => bail!("give a config file, or --resume OUTPUT_DIR"),
    };
    // Under mpirun, rank 0 alone shows progress and the summary.
    let root = Ranks::world().is_root();
    let bars = Bars::default();
    let progress: &dyn Progress = if root { &bars } else { &Silent };
    let backbone = resolve::backbone(&config.model, progress).context("model.path")?;
    let options = TrainOptions { resume, overwrite: args.overwrite, max_updates_now: args.max_updates_now };
    let report = train::train(&config, &backbone, &options, progress)?;
    if !root {
        return Ok(());
    }
    println!(
        "{} updates of {} ({} trainable parameters) in {:.1} s, {:.2} updates/s",
        report.steps,
        report.total_steps,
        group_thousands(report.trainable_parameters),
        report.seconds,
        report.steps_per_sec
    );
    if let Some(loss) = report.losses.last() {
        println!("last training loss {loss:.4}");
    }
    if let Some(loss) = report.eval_loss {
        println!("eval loss {loss:.4}");
    }
    if let (Some(best), Some(step)) = (report.best_metric, report.best_step) {
        let kept = match config.training.final_prompt {
            train::FinalPrompt::Best => "the final prompt",
            train::FinalPrompt::Last => "checkpoint kept; the final prompt is the last update's",
        };
        println!("best validation {} {best:.4} at update {step} ({kept})", report.eval_metric);
    }
    if report.stopped_early {
        println!(
            "stopped early at update {}: no better {} in {} evaluations",
            report.steps,
            report.eval_metric,
            config.training.early_stopping_patience.unwrap_or_default()
        );
    }
    if report.steps == report.total_steps || report.stopped_early {
        println!("prompt, metrics.jsonl and loss.svg saved in {}", report.output_dir.display());
    } else {
        println!("stopped at a checkpoint; continue with: ruprompts train --resume {}", report.output_dir.display());
    }
    Ok(())
}

fn run_params(args: ParamsArgs) -> Result<()> {
    let (embedding_dim, num_layers, kv_dim) = match (&args.model, args.embedding_dim) {
        (Some(dir), _) => {
            let dims = Dims::read(dir)?;
            (dims.n_embd, Some(dims.n_layer), dims.kv_dim)
        }
        (None, Some(d)) => (d, args.num_layers, args.kv_dim.unwrap_or(d)),
        (None, None) => bail!("give --embedding-dim, or --model to read it from config.json"),
    };
    let mut has_phrases = false;
    let prompt_length = match (&args.format, args.prompt_length) {
        (Some(template), _) => {
            let dir = args.model.as_deref().context("--format needs --model: its tokenizer splits <P>phrase</P>")?;
            let format = PromptFormat::compile(template, &Tokenizer::load(dir)?)?;
            has_phrases = !format.init_tokens().is_empty();
            format.prompt_length() as i64
        }
        (None, Some(l)) => l,
        (None, None) => bail!("give --prompt-length, or --format to count its prompt tokens"),
    };
    ensure!(prompt_length >= 1 && embedding_dim >= 1, "the prompt length and embedding size must be positive");
    ensure!(
        num_layers.is_none_or(|n| n >= 1) && kv_dim >= 1,
        "the number of layers and the key width must be positive"
    );
    let sizes = [args.lstm_hidden_dim, args.lstm_input_dim, args.mlp_hidden_dim, args.prefix_hidden_dim];
    ensure!(sizes.iter().flatten().all(|&s| s >= 1), "hidden and input sizes must be positive");
    let mut providers = vec![
        ProviderConfig::default(),
        ProviderConfig::Lstm { hidden_dim: args.lstm_hidden_dim, input_dim: args.lstm_input_dim, num_layers: 2 },
        ProviderConfig::Mlp { hidden_dim: args.mlp_hidden_dim },
    ];
    // A deep prompt of as many virtual tokens, with no input-layer tokens of its own.
    if num_layers.is_some() {
        let prefix = |projection| ProviderConfig::Prefix {
            num_virtual_tokens: prompt_length,
            projection,
            init: Default::default(),
        };
        providers.push(prefix(None));
        providers.push(prefix(Some(Projection { hidden_dim: args.prefix_hidden_dim })));
    }
    let layers = num_layers.map_or(String::new(), |n| format!(" and {n} layers"));
    println!("a prompt of {prompt_length} tokens on a backbone with embedding size {embedding_dim}{layers}:");
    for provider in providers {
        let d = embedding_dim;
        let (name, input_tokens, detail) = match provider {
            ProviderConfig::Tensor { .. } => ("tensor", prompt_length, format!("[{prompt_length}, {d}]")),
            ProviderConfig::Lstm { hidden_dim, input_dim, num_layers } => {
                let (h, i) = (hidden_dim.unwrap_or(d), input_dim.unwrap_or(d));
                ("lstm", prompt_length, format!("hidden {h}, input {i}, {num_layers} layers"))
            }
            ProviderConfig::Mlp { hidden_dim } => ("mlp", prompt_length, format!("hidden {}", hidden_dim.unwrap_or(d))),
            ProviderConfig::Prefix { projection: None, .. } => (
                "prefix",
                0,
                format!("keys and values [{prompt_length}, {} layers × 2 × {kv_dim}]", num_layers.unwrap_or(0)),
            ),
            ProviderConfig::Prefix { projection: Some(p), .. } => (
                "prefix",
                0,
                format!("projection: [{prompt_length}, {kv_dim}] through hidden {}", p.hidden_dim.unwrap_or(kv_dim)),
            ),
        };
        let layers = num_layers.unwrap_or(0);
        let count = provider.num_parameters(input_tokens, embedding_dim, layers, kv_dim).with_context(|| {
            format!("the {name} provider's count does not fit in 64 bits: these sizes are far past any model")
        })?;
        let count = group_thousands(count);
        println!("  {name:<7} {count:>14}  ({detail})");
    }
    if num_layers.is_none() {
        println!("give --num-layers (or --model) to count the prefix provider too");
    }
    if has_phrases {
        println!("the format has <P>phrase</P> tokens, which only the tensor provider can start from");
    }
    Ok(())
}

fn print_summary(dir: &Path, model: &Model, tokenizer: &Tokenizer) {
    let c = model.config();
    let special = tokenizer.special();
    let name = |id: Option<u32>| id.map_or("-".to_string(), |i| i.to_string());
    println!("model        {}", dir.display());
    println!("architecture {}", model.describe());
    println!(
        "vocabulary   {} embeddings; tokenizer {} tokens (bos {}, eos {}, pad {}, unk {})",
        c.vocab_size,
        tokenizer.len(),
        name(special.bos),
        name(special.eos),
        name(special.pad),
        name(special.unk)
    );
    println!("context      {} positions", c.n_positions);
    println!(
        "parameters   {} (frozen), {:?} on {:?}",
        group_thousands(model.num_parameters()),
        model.kind(),
        model.device()
    );
    if let Ok(g) = crate::gguf::Gguf::open(dir) {
        let mut types: Vec<(&str, usize)> = Vec::new();
        for t in g.tensors() {
            match types.iter_mut().find(|(n, _)| *n == t.ty.name()) {
                Some((_, count)) => *count += 1,
                None => types.push((t.ty.name(), 1)),
            }
        }
        let types: Vec<String> = types.iter().map(|(n, k)| format!("{n} ×{k}")).collect();
        println!("file         GGUF v{}: {} (dequantized on load)", g.version, types.join(", "));
    }
    println!("chat         {}", if tokenizer.chat_template().is_some() { "template" } else { "no template" });
}

fn group_thousands(n: i64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn run_demo(args: DemoArgs) -> Result<()> {
    let dir = args.model_dir.unwrap_or_else(demo::default_dir);
    let spec = TinyModelSpec { steps: args.steps, ..TinyModelSpec::default() };
    let start = Instant::now();
    let device = args.placement.device().resolve()?;
    if let Some(report) = demo::build_if_missing(&dir, &spec, args.rebuild, device, &Bars::default())? {
        println!(
            "trained a {}-token BPE tokenizer and pretrained {} steps in {:.1} s: loss {:.2} -> {:.2}\n",
            spec.vocab_size,
            spec.steps,
            start.elapsed().as_secs_f64(),
            report.initial_loss,
            report.final_loss
        );
    }
    let Backbone { dir, model, tokenizer, .. } = Backbone::load(&args.placement.model(dir.clone()), &dir)?;
    print_summary(&dir, &model, &tokenizer);
    let prompts = if args.prompts.is_empty() {
        vec!["Москва — столица".to_string(), "Солнце — это".to_string(), "В России самая длинная река".to_string()]
    } else {
        args.prompts
    };
    println!("\ngreedy continuations ({} new tokens at most):", args.max_new_tokens);
    let eos = tokenizer.special().eos.map(i64::from);
    let config = GenerationConfig { max_new_tokens: args.max_new_tokens, eos_token_id: eos, ..Default::default() };
    let inputs = prompts.iter().map(|p| tokenizer.encode_sequence_ids(p)).collect::<Result<Vec<_>>>()?;
    let outputs = generate(&model, &tokenizer, &inputs, &[], &config)?;
    for ((prompt, input), out) in prompts.iter().zip(&inputs).zip(outputs) {
        let new_ids: Vec<i64> = out[0].new_ids.iter().copied().filter(|&id| Some(id) != eos).collect();
        println!("  {prompt} ▸ {}", tokenizer.decode_after(input, &new_ids)?);
    }
    Ok(())
}
