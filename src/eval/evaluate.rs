//! One task evaluated zero-shot and with a tuned prompt, side by side: the items are read once, each setting is
//! scored through the same classifier (with its own request cache), and the metrics go into a [`Report`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use super::run::{fingerprint, scores_cached, CachedRun};
use super::{best, stats, RsgTask};
use super::{Classifier, ScoreMode, TaskFormats, TaskItem};
use crate::data::read_rows;
use crate::format::{PromptFormat, Row, CANDIDATE_SLOT};
use crate::fs::{write_atomic, DirLock};
use crate::model::Backbone;
use crate::progress::Progress;
use crate::prompt::Prompt;
use crate::report::{MetricRow, Report, TaskResult};

/// What to evaluate and where to write it.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    pub task: RsgTask,
    /// The split's file in the task's official jsonl layout.
    pub data: PathBuf,
    /// Zero-shot format, verbalizers, truncation field.
    pub formats: TaskFormats,
    /// A trained prompt's folder; without one only zero-shot is scored.
    pub prompt: Option<PathBuf>,
    pub mode: ScoreMode,
    /// Score each candidate on its own instead of from the shared context's KV cache (same results, slower).
    pub naive: bool,
    /// Items scored together (in order of length).
    pub batch_size: usize,
    /// Only the first N items.
    pub limit: Option<usize>,
    /// Folder for report.{json,md,svg} and the request cache.
    pub out: PathBuf,
    /// Folder for the submission file (`<Task>.jsonl`) of the tuned (else zero-shot) predictions.
    pub submission: Option<PathBuf>,
    /// Also write `<out>/samples/<Task>.jsonl`: per item the exact context scored in each setting (prompt tokens
    /// shown as `<P>`), every candidate's score, the prediction and the gold.
    pub log_samples: bool,
}

/// One setting's results: every candidate's score per item and, when samples are logged, the rendered contexts.
struct Setting {
    scores: Vec<Vec<f64>>,
    predictions: Vec<usize>,
    contexts: Vec<String>,
}

/// A row with "N/A" in each of the format's fields: the content-free input of calibrated scoring.
fn content_free(format: &PromptFormat) -> Row {
    format.fields().into_iter().filter(|f| *f != CANDIDATE_SLOT).map(|f| (f.to_string(), "N/A".into())).collect()
}

/// Evaluates `request` on `backbone`, writes the report (and the submission file when asked) and returns it;
/// each setting's scoring reports to `progress`.
pub fn evaluate(backbone: &Backbone, request: &EvalRequest, progress: &dyn Progress) -> Result<Report> {
    let (model_dir, model, mut tokenizer) = (&backbone.dir, &backbone.model, backbone.tokenizer.clone());
    let device = model.device();
    anyhow::ensure!(request.limit != Some(0), "--limit 0 leaves nothing to evaluate: give at least 1");
    anyhow::ensure!(request.batch_size >= 1, "--batch-size must be at least 1");
    let records = read_rows(&request.data)?;
    let mut items = request.task.items(&records, &request.formats.verbalizers)?;
    items.truncate(request.limit.unwrap_or(usize::MAX));
    anyhow::ensure!(!items.is_empty(), "{}: no items to evaluate", request.data.display());
    anyhow::ensure!(
        request.submission.is_some() || items.iter().all(|t| t.item.gold.is_some()),
        "{}: the items have no labels (a test split?), so there is nothing to score; pass --submission DIR to write \
         the predictions in the leaderboard's layout",
        request.data.display()
    );
    // The folder is made and held only once the request has proved it can be evaluated.
    std::fs::create_dir_all(&request.out).with_context(|| format!("cannot create {}", request.out.display()))?;
    let _lock = DirLock::acquire(&request.out, "the evaluation folder")?;

    let prompt = request
        .prompt
        .as_ref()
        .map(|dir| Prompt::from_pretrained(dir, device).with_context(|| format!("prompt {}", dir.display())))
        .transpose()?;
    let token_id = prompt.as_ref().map(|p| p.add_token(&mut tokenizer)).transpose()?;
    let zero_shot = PromptFormat::compile(&request.formats.zero_shot, &tokenizer).context("zero_shot format")?;
    let data_len = std::fs::metadata(&request.data)?.len().to_string();
    let verbalizers = serde_json::to_string(&request.formats.verbalizers)?;
    let mode = serde_json::to_value(request.mode)?.as_str().unwrap_or_default().to_string();

    let score = |name: &str, format: &PromptFormat, prompt: Option<&Prompt>| -> Result<Setting> {
        let injection = prompt.map(|p| p.injection(token_id.expect("added with the prompt")));
        let classifier = Classifier {
            model,
            tokenizer: &tokenizer,
            format,
            injections: injection.as_slice(),
            mode: request.mode,
            shared: !request.naive,
            truncation_field: request.formats.truncation_field.as_deref(),
            max_tokens: None,
        };
        let fingerprint = fingerprint(
            &[
                &model_dir.display().to_string(),
                &format!("{:?}", backbone.source.dtype),
                &format.compiled_template(),
                &mode,
                request.formats.truncation_field.as_deref().unwrap_or(""),
                &request.data.display().to_string(),
                &data_len,
                &verbalizers,
            ],
            prompt,
        )?;
        let cache = request.out.join("cache").join(format!("{}-{name}.jsonl", request.task.name()));
        let what = format!("{} {name}", request.task.name());
        let run =
            CachedRun { cache: &cache, fingerprint: &fingerprint, batch: request.batch_size, progress, what: &what };
        let scores = scores_cached(&classifier, &items, Some(&content_free(format)), &run)?;
        let predictions = scores.iter().map(|s| best(s).expect("items have candidates")).collect();
        let contexts = if request.log_samples {
            let token = format.prompt_token();
            items
                .iter()
                .map(|t| Ok(tokenizer.decode(&classifier.request(&t.item)?.0)?.replace(token, "<P>")))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        Ok(Setting { scores, predictions, contexts })
    };
    let zero = score("zero-shot", &zero_shot, None)?;
    let tuned = prompt.as_ref().map(|p| score("tuned", p.format(), Some(p))).transpose()?;
    if request.log_samples {
        write_samples(request, &items, &[("zero-shot", Some(&zero)), ("tuned", tuned.as_ref())])?;
    }
    let zero_preds = zero.predictions;
    let tuned_preds = tuned.map(|t| t.predictions);

    let labelled = items.iter().all(|t| t.item.gold.is_some());
    let metrics = if labelled {
        let task = request.task;
        let zero = task.metrics(&items, &zero_preds)?;
        let tuned = tuned_preds.as_ref().map(|p| task.metrics(&items, p)).transpose()?;
        // Each setting's metrics on the same seeded resamples: standard errors, and paired differences.
        let zero_draws = stats::bootstrap(task, &items, &zero_preds)?;
        let tuned_draws = tuned_preds.as_ref().map(|p| stats::bootstrap(task, &items, p)).transpose()?;
        let zero_stderr = stats::stderr(&zero_draws);
        let tuned_stderr = tuned_draws.as_ref().map(|d| stats::stderr(d));
        let intervals = tuned_draws.as_ref().map(|d| stats::difference_interval(d, &zero_draws));
        let (majority, chance) = stats::baselines(task, &items)?;
        zero.iter()
            .enumerate()
            .map(|(i, m)| MetricRow {
                zero_shot_stderr: Some(zero_stderr[i]),
                tuned_stderr: tuned_stderr.as_ref().map(|s| s[i]),
                delta_interval: intervals.as_ref().map(|d| d[i]),
                majority: Some(majority[i]),
                chance: Some(chance[i]),
                ..MetricRow::new(&m.name, m.value, tuned.as_ref().map(|t| t[i].value))
            })
            .collect()
    } else {
        Vec::new()
    };
    if let Some(dir) = &request.submission {
        write_submission(request.task, &items, tuned_preds.as_ref().unwrap_or(&zero_preds), dir)?;
    }
    let report = Report {
        model: backbone.source.path.display().to_string(),
        mode,
        tasks: vec![TaskResult {
            task: request.task.name().into(),
            data: request.data.display().to_string(),
            items: items.len(),
            zero_shot_format: request.formats.zero_shot.clone(),
            tuned_format: prompt.as_ref().map(|p| p.format().template().to_string()),
            trainable_parameters: prompt.as_ref().map(Prompt::num_parameters),
            metrics,
        }],
    };
    report.write(&request.out)?;
    Ok(report)
}

/// `<out>/samples/<Task>.jsonl`: a line per item with its origin, ids, candidates and gold, and per setting the
/// context as scored, each candidate's score under the request's mode and the prediction.
fn write_samples(request: &EvalRequest, items: &[TaskItem], settings: &[(&str, Option<&Setting>)]) -> Result<()> {
    let dir = request.out.join("samples");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut text = String::new();
    for (i, t) in items.iter().enumerate() {
        let mut line = serde_json::json!({
            "item": i,
            "origin": t.item.origin.to_string(),
            "ids": t.ids,
            "candidates": t.item.candidates,
            "gold": t.item.gold,
            "mode": request.mode,
        });
        for (name, setting) in settings {
            if let Some(s) = setting {
                line[*name] = serde_json::json!({
                    "context": s.contexts[i],
                    "scores": s.scores[i],
                    "prediction": s.predictions[i],
                });
            }
        }
        text += &format!("{line}\n");
    }
    let path = dir.join(format!("{}.jsonl", request.task.name()));
    write_atomic(&path, |p| Ok(std::fs::write(p, text)?))
}

/// Writes `<Task>.jsonl` in the official submission layout into `dir`.
pub fn write_submission(task: RsgTask, items: &[TaskItem], predictions: &[usize], dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(task.submission_file());
    let lines: String = task.submission(items, predictions)?.iter().map(|v: &Value| format!("{v}\n")).collect();
    write_atomic(&path, |p| Ok(std::fs::write(p, lines)?))?;
    Ok(path)
}
