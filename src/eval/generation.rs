//! Text-to-text evaluation (detoxification and the like): generation with a trained prompt (greedy unless the
//! decoding settings say otherwise) for every row of a split, and by the bare model reading the format without its
//! trainable tokens (zero-shot); chrF and BLEU against the target field, next to the copy-the-input baseline (the
//! source sentence given back unchanged, RUSSE 2022's "duplicate" baseline). Predictions are cached per row, so a
//! stopped run resumes.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{json, Value};

use super::overlap::{bleu, chrf};
use super::run::{across_ranks, check_sizes, fingerprint, write_report, CachedRun, Shard};
use crate::data::{read_rows, Record};
use crate::format::Row;
use crate::format::{without_prompt, PromptFormat};
use crate::fs::write_atomic;
use crate::generate::{GenerationConfig, Pipeline, Prompts, Request, Task};
use crate::model::Backbone;
use crate::progress::Progress;
use crate::prompt::Prompt;
use crate::report::{MetricRow, Report, TaskResult};
use crate::tokenizer::Tokenizer;

pub const PREDICTIONS_FILE: &str = "predictions.jsonl";

#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// What the report calls the task (the config's name, e.g. `detox`).
    pub name: String,
    /// The trained prompt's folder.
    pub prompt: PathBuf,
    /// Rows with the format's fields and the target field.
    pub data: PathBuf,
    pub target_field: String,
    /// How to decode; no `eos_token_id` means the tokenizer's. The prediction is each row's first output.
    pub decoding: GenerationConfig,
    pub batch_size: usize,
    pub limit: Option<usize>,
    /// Folder for predictions.jsonl, the report and the cache.
    pub out: PathBuf,
    /// The rows this process generates for (all of them unless sharded).
    pub shard: Shard,
    /// Each formatted row as the user's turn of the model's chat template; the reply is the prediction.
    pub chat: bool,
}

/// Generates for every row with `backbone`, writes predictions.jsonl and the report, and returns the report;
/// generation reports to `progress`. A shard (`request.shard`, or an MPI rank other than 0) writes its rows'
/// predictions and returns `None`.
pub fn evaluate_generation(
    backbone: &Backbone,
    request: &GenerationRequest,
    progress: &dyn Progress,
) -> Result<Option<Report>> {
    across_ranks(request.shard, |shard| generate_shard(backbone, request, shard, progress))
}

fn generate_shard(
    backbone: &Backbone,
    request: &GenerationRequest,
    shard: Shard,
    progress: &dyn Progress,
) -> Result<Option<Report>> {
    check_sizes(request.limit, request.batch_size)?;
    let mut tokenizer = backbone.tokenizer.clone();
    let prompt = Prompt::load(&request.prompt, backbone.model.device())
        .with_context(|| format!("prompt {}", request.prompt.display()))?;
    let template = prompt.format().template().to_string();
    let fields: Vec<String> = prompt.format().fields().iter().map(|f| f.to_string()).collect();
    let Some(source_field) = fields.first().cloned() else {
        bail!("the prompt's format {template:?} has no field to fill from the data")
    };
    let num_parameters = prompt.num_parameters();
    let data_len = std::fs::metadata(&request.data)
        .with_context(|| format!("cannot read {}", request.data.display()))?
        .len()
        .to_string();
    // The bare model reads the format without its trainable tokens: the zero-shot row.
    let bare_template = without_prompt(&template)?;
    let bare = PromptFormat::compile(&bare_template, &tokenizer)?;
    let fingerprint_of = |format: &str, prompt: Option<&Prompt>| -> Result<String> {
        fingerprint(
            &[
                &backbone.dir.display().to_string(),
                &backbone.weights(),
                format,
                &request.data.display().to_string(),
                &data_len,
                &request.target_field,
                &serde_json::to_string(&request.decoding)?,
                if request.chat { "chat" } else { "" },
            ],
            prompt,
        )
    };
    let tuned_fingerprint = fingerprint_of(&prompt.format().compiled_template(), Some(&prompt))?;
    let bare_fingerprint = fingerprint_of(&bare.compiled_template(), None)?;
    let tuned = Prompts::single(prompt, &mut tokenizer)?;
    let bare = Prompts::Bare(Some(bare));

    let records = read_rows(&request.data)?;
    let rows = Rows::read(&records, &fields, &request.target_field, request.limit)?;
    ensure!(!rows.requests.is_empty(), "{}: no rows to evaluate", request.data.display());
    let sources: Vec<String> =
        rows.requests.iter().map(|r| r.fields[&source_field].as_str().unwrap_or("").to_string()).collect();
    let mut config = request.decoding.clone();
    config.eos_token_id = config.eos_token_id.or(tokenizer.special().eos.map(i64::from));
    // The folder is made and held only once the prompt and the rows have loaded.
    let _lock = shard.hold(&request.out)?;
    let generator =
        Generator { backbone, request, tokenizer: &tokenizer, config: &config, rows: &rows, shard, progress };
    let lengths: Vec<usize> = sources.iter().map(String::len).collect();
    let what = format!("{} generating zero-shot", request.name);
    let zero_shot = generator.run(&bare, &lengths, "cache/generation-bare.jsonl", &bare_fingerprint, &what)?;
    let what = format!("{} generating", request.name);
    let predictions = generator.run(&tuned, &lengths, "cache/generation.jsonl", &tuned_fingerprint, &what)?;
    let (Some(zero_shot), Some(predictions)) = (zero_shot, predictions) else { return Ok(None) };
    let references = &rows.references;
    write_predictions(&request.out.join(PREDICTIONS_FILE), &records, &predictions, &zero_shot, references)?;
    let result = TaskResult {
        task: request.name.clone(),
        data: request.data.display().to_string(),
        items: predictions.len(),
        zero_shot_format: bare_template,
        more_zero_shot_formats: vec![],
        tuned_format: Some(template),
        trainable_parameters: Some(num_parameters),
        metrics: overlap_metrics(&sources, &zero_shot, &predictions, references),
        settings: vec![],
        spreads: vec![],
    };
    write_report(backbone, config.describe(), result, &request.out).map(Some)
}

/// chrF and BLEU of the bare model's texts and the prompt's against the references, beside the copy-the-input
/// baseline.
fn overlap_metrics(
    sources: &[String],
    zero_shot: &[String],
    predictions: &[String],
    references: &[String],
) -> Vec<MetricRow> {
    vec![
        MetricRow {
            copy_input: Some(chrf(sources, references)),
            ..MetricRow::new("chrf", chrf(zero_shot, references), Some(chrf(predictions, references)))
        },
        MetricRow {
            copy_input: Some(bleu(sources, references)),
            ..MetricRow::new("bleu", bleu(zero_shot, references), Some(bleu(predictions, references)))
        },
    ]
}

/// Generates for the rows of a split through the cached loop, a batch of rows at a time; each row's prediction is
/// its first output, trimmed.
struct Generator<'a> {
    backbone: &'a Backbone,
    request: &'a GenerationRequest,
    tokenizer: &'a Tokenizer,
    config: &'a GenerationConfig,
    rows: &'a Rows,
    shard: Shard,
    progress: &'a dyn Progress,
}

impl Generator<'_> {
    /// Every row's prediction with `prompts` (`None` for a part), cached in `cache` under `fingerprint`, progress
    /// reported as `what`.
    fn run(
        &self,
        prompts: &Prompts,
        lengths: &[usize],
        cache: &str,
        fingerprint: &str,
        what: &str,
    ) -> Result<Option<Vec<String>>> {
        let (request, progress) = (self.request, self.progress);
        let pipeline =
            Pipeline { model: &self.backbone.model, tokenizer: self.tokenizer, prompts, progress, chat: request.chat };
        let (out, batch, shard) = (&request.out, request.batch_size, self.shard);
        let run = CachedRun { out, cache, shard, fingerprint, batch, progress, what };
        run.run(
            lengths,
            |_, _: &String| true,
            |chunk| {
                let batch: Vec<Request> = chunk.iter().map(|&i| self.rows.requests[i].clone()).collect();
                let outputs = pipeline.run(Task::Text2text, &batch, self.config)?;
                Ok(outputs
                    .into_iter()
                    .map(|g| g.into_iter().next().map_or_else(String::new, |o| o.text.trim().to_string()))
                    .collect())
            },
        )
    }
}

/// The generation requests of a split (the format's fields of each row, which says where it came from) and the
/// reference text of each.
struct Rows {
    requests: Vec<Request>,
    references: Vec<String>,
}

impl Rows {
    /// The first `limit` records; a row without one of `fields` or `target`, or with a non-text value there, is an
    /// error naming its file:line.
    fn read(records: &[Record], fields: &[String], target: &str, limit: Option<usize>) -> Result<Self> {
        let records = &records[..records.len().min(limit.unwrap_or(usize::MAX))];
        let (mut requests, mut references) = (Vec::with_capacity(records.len()), Vec::with_capacity(records.len()));
        for r in records {
            let text = |name: &str| match r.row.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(anyhow!("{}: field '{name}' is not text", r.origin)),
                None => Err(anyhow!("{}: the row has no field '{name}'", r.origin)),
            };
            let row: Row = fields.iter().map(|f| Ok((f.clone(), Value::String(text(f)?)))).collect::<Result<_>>()?;
            requests.push(Request { key: None, fields: row, origin: Some(r.origin.to_string()) });
            references.push(text(target)?);
        }
        Ok(Self { requests, references })
    }
}

/// `predictions.jsonl`: each row's origin, prediction (and the bare model's) and reference, written atomically.
fn write_predictions(
    path: &Path,
    records: &[Record],
    predictions: &[String],
    zero_shot: &[String],
    references: &[String],
) -> Result<()> {
    let lines: String = (0..predictions.len())
        .map(|i| {
            let line = json!({
                "origin": records[i].origin.to_string(),
                "prediction": predictions[i],
                "zero_shot": zero_shot[i],
                "reference": references[i],
            });
            format!("{line}\n")
        })
        .collect();
    write_atomic(path, |p| Ok(std::fs::write(p, lines)?))
}
