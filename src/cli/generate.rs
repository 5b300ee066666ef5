//! `ruprompts generate`: texts (arguments, a jsonl file or stdin) through a prompt pipeline, jsonl out.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use super::bars::Bars;
use super::Placement;
use crate::data::read_rows;
use crate::format::Row;
use crate::generate::{GenerationConfig, Pipeline, Prompts, Request, Task};
use crate::model::Backbone;
use crate::prompt::{MultiPrompt, Prompt};
use crate::resolve;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// A saved prompt folder (ours or Python ruPrompts') or a Hub id (owner/name[@revision]); repeat as KEY=DIR to
    /// serve several prompts by key.
    #[arg(long, required = true, value_name = "DIR|KEY=DIR")]
    pub prompt: Vec<String>,
    /// Model directory; default: the model named in prompt.json (`demo` is the bundled tiny model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// text2text fills the format from fields and returns the new text; text-generation puts the text after
    /// a field-less prompt and returns the whole text.
    #[arg(long, value_enum, default_value_t = Task::Text2text)]
    pub task: Task,
    /// A field value for the format, e.g. --field question="Где живут пингвины?" (repeatable).
    #[arg(long = "field", value_name = "NAME=VALUE")]
    pub fields: Vec<String>,
    /// Which prompt the texts use, when several are loaded.
    #[arg(long)]
    pub key: Option<String>,
    /// Inputs from a jsonl file (each line the format's fields or {"text": ...}, optionally "key"); `-` reads
    /// texts from stdin, one a line.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Write the jsonl results here instead of stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Inputs decoded together.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 100)]
    pub max_new_tokens: usize,
    /// Sample instead of greedy decoding.
    #[arg(long)]
    pub do_sample: bool,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f64,
    /// Stop token (default: the tokenizer's eos; ruPrompts' pipelines use 0, ruGPT-3's <pad>).
    #[arg(long)]
    pub eos_token_id: Option<i64>,
    #[arg(long, default_value_t = 1)]
    pub num_return_sequences: usize,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Re-read the whole sequence every step instead of using the KV cache (slower; for checking).
    #[arg(long)]
    pub no_cache: bool,
    /// Texts to continue or transform.
    pub texts: Vec<String>,
    #[command(flatten)]
    pub placement: Placement,
}

fn requests(args: &GenerateArgs) -> Result<Vec<Request>> {
    let mut fields = Row::new();
    for pair in &args.fields {
        let (name, value) = pair.split_once('=').ok_or_else(|| anyhow!("--field {pair:?} is not NAME=VALUE"))?;
        fields.insert(name.to_string(), Value::String(value.to_string()));
    }
    let text = |t: String, origin: String| {
        let mut row = fields.clone();
        row.insert("text".into(), Value::String(t));
        Request { key: args.key.clone(), fields: row, origin: Some(origin) }
    };
    if !args.texts.is_empty() {
        return Ok(args.texts.iter().enumerate().map(|(i, t)| text(t.clone(), format!("text {}", i + 1))).collect());
    }
    match &args.input {
        Some(path) if path.as_os_str() == "-" => {
            let lines = std::io::stdin().lock().lines().collect::<std::io::Result<Vec<_>>>()?;
            let lines = lines.into_iter().enumerate().filter(|(_, l)| !l.trim().is_empty());
            Ok(lines.map(|(i, l)| text(l, format!("stdin:{}", i + 1))).collect())
        }
        Some(path) => read_rows(path)?
            .into_iter()
            .map(|record| {
                let mut row = record.row;
                let key = match row.remove("key") {
                    Some(Value::String(k)) => Some(k),
                    Some(_) => bail!("{}: \"key\" must be a string", record.origin),
                    None => args.key.clone(),
                };
                Ok(Request { key, fields: row, origin: Some(record.origin.to_string()) })
            })
            .collect(),
        None if !fields.is_empty() => Ok(vec![Request { key: args.key.clone(), fields, origin: None }]),
        None => bail!("nothing to generate from: give texts, --field NAME=VALUE, or --input FILE.jsonl (- for stdin)"),
    }
}

pub fn run(args: GenerateArgs) -> Result<()> {
    ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    let device = args.placement.device.resolve()?;
    let mut loaded = Vec::new();
    for spec in &args.prompt {
        let (key, dir) = match spec.split_once('=') {
            Some((k, d)) => (Some(k.to_string()), PathBuf::from(d)),
            None => (None, PathBuf::from(spec)),
        };
        let dir = resolve::prompt_dir(&dir, "--prompt")?;
        let prompt = Prompt::from_pretrained(&dir, device).with_context(|| format!("--prompt {spec}"))?;
        loaded.push((key, prompt));
    }
    let bars = Bars::default();
    let Backbone { model, mut tokenizer, .. } = match &args.model {
        Some(dir) => resolve::backbone(&args.placement.model(dir.clone()), &bars).context("--model")?,
        None => {
            let named = loaded[0].1.pretrained_model_name.clone().ok_or_else(|| {
                anyhow!("the prompt's prompt.json names no model (config.pretrained_model_name): pass --model DIR")
            })?;
            resolve::backbone(&args.placement.model(named.into()), &bars)
                .context("the model named in prompt.json (pass --model DIR to use another)")?
        }
    };
    let prompts = if loaded.len() == 1 && loaded[0].0.is_none() {
        Prompts::single(loaded.pop().expect("one").1, &mut tokenizer)?
    } else {
        let keyed = loaded
            .into_iter()
            .map(|(k, p)| {
                k.map(|k| (k, p)).ok_or_else(|| anyhow!("with several prompts, give each as --prompt KEY=DIR"))
            })
            .collect::<Result<Vec<_>>>()?;
        Prompts::Multi(MultiPrompt::new(keyed, &mut tokenizer)?)
    };
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        do_sample: args.do_sample,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repetition_penalty,
        eos_token_id: args.eos_token_id.or_else(|| tokenizer.special().eos.map(i64::from)),
        num_return_sequences: args.num_return_sequences,
        seed: args.seed,
        use_cache: !args.no_cache,
    };
    let requests = requests(&args)?;
    let pipeline = Pipeline { model: &model, tokenizer: &tokenizer, prompts: &prompts, progress: &bars };
    // --output is written to a temp file beside it and renamed into place at the end: a failure leaves the
    // file as it was.
    let temp = match &args.output {
        Some(path) => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            Some(tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write {}", path.display()))?)
        }
        None => None,
    };
    let mut out: Box<dyn Write> = match &temp {
        Some(file) => Box::new(std::io::BufWriter::new(file.as_file())),
        None => Box::new(std::io::stdout().lock()),
    };
    for chunk in requests.chunks(args.batch_size) {
        for (request, generated) in chunk.iter().zip(pipeline.run(args.task, chunk, &config)?) {
            let mut line = json!({ "input": request.fields, "generated": generated });
            if let Some(key) = &request.key {
                line["key"] = json!(key);
            }
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    drop(out);
    if let (Some(file), Some(path)) = (temp, &args.output) {
        file.persist(path).map_err(|e| anyhow!("cannot write {}: {}", path.display(), e.error))?;
    }
    Ok(())
}
