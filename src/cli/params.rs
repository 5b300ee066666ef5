//! `ruprompts params`: how many trainable parameters each provider gives a prompt, counted without building it.

use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;

use super::numbers::group_thousands;
use crate::format::PromptFormat;
use crate::model::Dims;
use crate::provider::{Projection, ProviderConfig};
use crate::tokenizer::Tokenizer;

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

pub fn run(args: ParamsArgs) -> Result<()> {
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
