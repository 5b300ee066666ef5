//! ruprompts: continuous prompt tuning ("P-tuning") of frozen causal language models on libtorch.
//!
//! Modules, each depending only on those above it:
//! - [`gguf`] — llama.cpp's GGUF files: a bounded reader of their metadata and tensors, dequantization.
//! - [`tokenizer`] — the checkpoints' tokenizers as transformers loads them (from a folder or GGUF metadata), with
//!   added prompt tokens, and their chat templates.
//! - [`format`](mod@format) — ruPrompts' template language (`<P*N>{field}`, `<P>phrase</P>`) compiled against a
//!   tokenizer.
//! - [`data`] — rows of jsonl/csv/tsv files with their origin, preprocessing into examples, batching.
//! - [`device`], [`rng`], [`fs`], [`progress`] — device and dtype choice; seeded draws from libtorch's one
//!   generator; atomic files, run locks and resumable JSON-lines logs; how long work reports on itself.
//! - [`dist`] — the job's processes: this one alone, or `mpirun`'s ranks (the `mpi` feature).
//! - [`model`] — the frozen backbone (GPT-2 and the Llama family from Hugging Face folders or GGUF files, KV cache,
//!   f32/bf16/f16, int8/int4) and [`model::Backbone`], a model with its tokenizer loaded from a local checkpoint.
//! - [`demo`] — the tiny Russian model the project builds for its demo.
//! - [`config`] — reading YAML configs (`extends`, overrides, errors with file:line).
//! - [`provider`] — what produces the soft tokens: a plain tensor, a BiLSTM or an MLP.
//! - [`prompt`] — format + provider: injection into the model, multi-prompts, save/load, ruPrompts/PEFT files.
//! - [`generate`] — decoding: greedy and sampling, with a KV cache, prompts injected anywhere.
//! - [`report`] — the zero-shot vs tuned report.
//! - [`task`] — the tasks (the nine Russian SuperGLUE ones, task files) and the scorer: items, formats,
//!   demonstrations, candidates scored by the frozen LM, official metrics; what evaluation and training share.
//! - [`eval`] — evaluation runs: zero-shot vs k-shot vs tuned, text2text, cached and sharded, and their report.
//! - [`hub`] — the Hugging Face Hub (the `hub` feature): prompts and models pulled into Python's cache, prompts
//!   pushed with a card.
//! - [`resolve`] — the edge where `demo` and Hub ids become local folders.
//! - [`train`] — the training config and loop: the `lm` and `choice` objectives on the tasks' items, AdamW on
//!   the prompt only, schedules, the best checkpoint by a task metric, early stopping, exact resume.
//! - [`rsg`] — the whole Russian SuperGLUE benchmark: nine prompts trained and scored, the paper's table.
//! - [`serve`] — `ruprompts serve`: an OpenAI-compatible server of many prompts on one model, continuously
//!   batched.
//! - [`cli`] — the `ruprompts` command line.
//!
//! The core path: load a backbone, compile a format, make a prompt for it, score answers with it injected.
//!
//! ```
//! use ruprompts::task::{score_shared, Candidate};
//! use ruprompts::format::PromptFormat;
//! use ruprompts::model::{Backbone, ModelSource};
//! use ruprompts::prompt::Prompt;
//! use ruprompts::provider::ProviderConfig;
//!
//! # fn main() -> anyhow::Result<()> {
//! // A Hugging Face GPT-2 folder: here the test fixture (`resolve::backbone` also takes `demo` or a Hub id).
//! let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-gpt2-ru");
//! let Backbone { model, mut tokenizer, .. } = Backbone::load_local(&ModelSource::local(dir))?;
//! // Four trainable tokens before the question and two after it, as a fresh tensor prompt.
//! let format = PromptFormat::compile("<P*4>{question}<P*2> Ответ:", &tokenizer)?;
//! let prompt = Prompt::new(format, ProviderConfig::default(), &model)?;
//! let token = prompt.add_token(&mut tokenizer)?;
//! // The log-probabilities of two answers after the formatted question, the prompt injected.
//! let row = serde_json::json!({"question": "Москва — столица России?"});
//! let context = tokenizer.encode_sequence_ids(&prompt.format().format(row.as_object().unwrap())?.text)?;
//! let answers = [" да", " нет"].map(|a| Candidate { answer: tokenizer.encode_ids(a).unwrap(), suffix: vec![] });
//! let scored = score_shared(&model, &[prompt.injection(token)], &context, &answers, false)?;
//! assert!(scored.iter().all(|s| s.answer_tokens == 1 && s.answer_logprob < 0.0));
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod data;
pub mod demo;
pub mod device;
pub mod dist;
pub mod eval;
pub mod format;
pub mod fs;
pub mod generate;
pub mod gguf;
pub mod hub;
pub mod model;
pub mod progress;
pub mod prompt;
pub mod provider;
pub mod report;
pub mod resolve;
pub mod rng;
pub mod rsg;
#[cfg(feature = "serve")]
pub mod serve;
pub mod task;
pub mod tokenizer;
pub mod train;
