//! Command-line interface: argument definitions and what each command prints.

mod bars;
mod decoding;
mod demo;
mod eval;
mod export;
mod generate;
mod hub;
mod info;
mod inspect;
mod numbers;
mod params;
mod rsg;
mod serve;
mod train;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::device::{DType, DeviceChoice, DeviceMap};
use crate::model::{ModelSource, Quantize};

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
    Demo(demo::DemoArgs),
    /// Print the summary of a checkpoint: a Hugging Face folder (config.json, weights, tokenizer) or a GGUF file.
    Info(info::ModelArgs),
    /// Train a soft prompt from a YAML config; the frozen model never changes.
    ///
    /// `ruprompts train examples/configs/terra.yaml training.max_steps=200 'prompt_format.template=<P*20>{premise}'`
    /// trains and writes into the config's output_dir: `checkpoint-<step>/` folders, metrics.jsonl, loss.svg,
    /// config.yaml (the resolved config) and the final prompt (prompt.json + weights, ruPrompts' layout).
    /// `ruprompts train --resume OUTPUT_DIR` continues a run from its last complete checkpoint, with the same
    /// losses as if it had never stopped.
    Train(train::TrainArgs),
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
    Params(params::ParamsArgs),
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

pub fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        tch::set_num_threads(n);
    }
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Info(args) => info::run(args),
        Command::Params(args) => params::run(args),
        Command::Train(args) => train::run(args),
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
            anyhow::bail!("this build has no Hub client: rebuild with the `hub` cargo feature (on by default)")
        }
    }
}
