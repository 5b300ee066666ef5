//! One task evaluated zero-shot, k-shot and with a tuned prompt, side by side: the items are read once, each
//! setting is scored once through the same classifier (with its own request cache) and every scoring mode derives
//! from those forwards; the metrics, their error bars and the baselines go into a [`Report`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use super::run::{across_ranks, check_sizes, fingerprint, scores_cached, write_report, CachedRun, Shard};
use super::stats;
use crate::data::read_rows;
use crate::format::{PromptFormat, Row, CANDIDATE_SLOT};
use crate::fs::write_atomic;
use crate::model::Backbone;
use crate::progress::Progress;
use crate::prompt::Prompt;
use crate::report::{MetricRow, ModeScore, Report, SettingResult, Spread, TaskResult};
use crate::task::fewshot::{self, FewShotConfig};
use crate::task::{best, EvalTask, ItemScores, Shot};
use crate::task::{Classifier, ScoreMode, TaskFormats, TaskItem};
use crate::tokenizer::{ChatTemplate, Tokenizer};

/// What to evaluate and where to write it.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    pub task: EvalTask,
    /// The split's file (a built-in task's in its official jsonl layout).
    pub data: PathBuf,
    /// Zero-shot format, verbalizers, truncation field.
    pub formats: TaskFormats,
    /// A trained prompt's folder; without one only zero-shot is scored.
    pub prompt: Option<PathBuf>,
    /// The headline scoring mode (every mode is computed and reported).
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
    /// shown as `<P>`), every candidate's score in every mode, the prediction and the gold.
    pub log_samples: bool,
    /// The k-shot settings scored besides zero-shot, and how their demonstrations are drawn.
    pub fewshot: FewShot,
    /// The items this process scores (all of them unless sharded).
    pub shard: Shard,
    /// Each context as the user's turn of the model's chat template, the answer after the assistant's opening
    /// (lm-evaluation-harness's `--apply_chat_template`).
    pub chat: bool,
}

/// Few-shot settings: each `k` of `ks` (0 is zero-shot, always scored) with demonstrations drawn as `config`
/// says from the labelled items of `data`, once with `config.seed` and once with each of `more_seeds` (the
/// report gives the spread over seeds).
#[derive(Debug, Clone, Default)]
pub struct FewShot {
    pub ks: Vec<usize>,
    pub config: FewShotConfig,
    pub data: Option<PathBuf>,
    pub more_seeds: Vec<u64>,
    /// Also score the tuned prompt with each k's demonstrations, every one formatted by the prompt's template
    /// (its soft tokens repeated around each): `tuned+5-shot`.
    pub tuned: bool,
}

/// One setting's results: every item's candidate log-prob sums and, when samples are logged, the rendered contexts.
struct Setting {
    name: String,
    /// The settings that differ only by template or seed share a group (`zero-shot`, `5-shot`).
    group: String,
    shots: usize,
    scores: Vec<ItemScores>,
    contexts: Vec<String>,
}

/// Every candidate's score under one mode, and the predicted candidate of every item.
struct Ranked {
    scores: Vec<Vec<f64>>,
    predictions: Vec<usize>,
}

impl Setting {
    /// Every candidate's score and the predicted candidate of every item under `mode`.
    fn under(&self, mode: ScoreMode, items: &[TaskItem]) -> Result<Ranked> {
        let scores: Vec<Vec<f64>> =
            self.scores.iter().zip(items).map(|(s, t)| s.under(mode, &t.item.candidates)).collect::<Result<_>>()?;
        let predictions = scores.iter().map(|s| best(s).expect("items have candidates")).collect();
        Ok(Ranked { scores, predictions })
    }
}

/// A row with "N/A" in each of the format's fields: the content-free input of calibrated scoring.
fn content_free(format: &PromptFormat) -> Row {
    format.fields().into_iter().filter(|f| *f != CANDIDATE_SLOT).map(|f| (f.to_string(), "N/A".into())).collect()
}

/// Evaluates `request` on `backbone`, writes the report (and the submission file when asked) and returns it;
/// each setting's scoring reports to `progress`. A shard (`request.shard`, or an MPI rank other than 0) writes
/// its items' scores and returns `None`.
pub fn evaluate(backbone: &Backbone, request: &EvalRequest, progress: &dyn Progress) -> Result<Option<Report>> {
    across_ranks(request.shard, |shard| evaluate_shard(backbone, request, shard, progress))
}

fn evaluate_shard(
    backbone: &Backbone,
    request: &EvalRequest,
    shard: Shard,
    progress: &dyn Progress,
) -> Result<Option<Report>> {
    check_sizes(request.limit, request.batch_size)?;
    let plan = Plan::read(backbone, request)?;
    let _lock = shard.hold(&request.out)?;
    let mut tokenizer = backbone.tokenizer.clone();
    let prompt = request
        .prompt
        .as_ref()
        .map(|dir| Prompt::load(dir, backbone.model.device()).with_context(|| format!("prompt {}", dir.display())))
        .transpose()?;
    let token_id = prompt.as_ref().map(|p| p.add_token(&mut tokenizer)).transpose()?;
    let zero_shot = PromptFormat::compile(request.formats.zero_shot(), &tokenizer).context("zero_shot format")?;
    let keys = Keys::of(request, &plan)?;
    let scorer = Scorer { backbone, request, plan: &plan, tokenizer: &tokenizer, token_id, shard, progress, keys };
    // A part has scored its items into its folder: the merge makes the report.
    let Some(settings) = scorer.settings(&zero_shot, prompt.as_ref())? else { return Ok(None) };
    let (task, items) = (&request.task, &plan.items);
    if request.log_samples {
        write_samples(request, items, &settings)?;
    }
    // Tuned (zero-shot) comes last: the headline compares it with zero-shot.
    let tuned = prompt.as_ref().map(|_| settings.last().expect("tuned was pushed last"));
    let zero_preds = settings[0].under(request.mode, items)?.predictions;
    let tuned_preds = tuned.map(|t| t.under(request.mode, items)).transpose()?.map(|r| r.predictions);
    let (metrics, setting_results) = if items.iter().all(|t| t.item.gold.is_some()) {
        let rows = metric_rows(task, items, &zero_preds, tuned_preds.as_deref())?;
        (rows, settings.iter().map(|s| setting_result(task, items, s)).collect::<Result<_>>()?)
    } else {
        (Vec::new(), Vec::new())
    };
    if let Some(dir) = &request.submission {
        write_submission(task, items, tuned_preds.as_ref().unwrap_or(&zero_preds), dir)?;
    }
    let result = TaskResult {
        task: task.name().into(),
        data: request.data.display().to_string(),
        items: items.len(),
        zero_shot_format: request.formats.zero_shot().to_string(),
        more_zero_shot_formats: request.formats.zero_shot.all()[1..].to_vec(),
        tuned_format: prompt.as_ref().map(|p| p.format().template().to_string()),
        trainable_parameters: prompt.as_ref().map(Prompt::num_parameters),
        metrics,
        spreads: spreads(&setting_results, request.mode),
        settings: setting_results,
    };
    write_report(backbone, request.mode.name().to_string(), result, &request.out).map(Some)
}

/// What a request scores, read and checked before anything is written: the items, the k of each k-shot setting,
/// the seeds their demonstrations are drawn with and each item's demonstrations per (k, seed), the chat template.
struct Plan<'a> {
    items: Vec<TaskItem>,
    ks: Vec<usize>,
    seeds: Vec<u64>,
    shot_sets: BTreeMap<(usize, u64), Vec<Vec<Shot>>>,
    chat: Option<&'a ChatTemplate>,
}

impl<'a> Plan<'a> {
    fn read(backbone: &'a Backbone, request: &EvalRequest) -> Result<Self> {
        let task = &request.task;
        let mut items = task.items(&read_rows(&request.data)?, &request.formats.verbalizers)?;
        items.truncate(request.limit.unwrap_or(usize::MAX));
        anyhow::ensure!(!items.is_empty(), "{}: no items to evaluate", request.data.display());
        anyhow::ensure!(
            request.submission.is_some() || items.iter().all(|t| t.item.gold.is_some()),
            "{}: the items have no labels (a test split?), so there is nothing to score; pass --submission DIR to \
             write the predictions in the leaderboard's layout",
            request.data.display()
        );
        let mut ks: Vec<usize> = request.fewshot.ks.iter().copied().filter(|&k| k > 0).collect();
        ks.sort_unstable();
        ks.dedup();
        let pool = match (&request.fewshot.data, ks.is_empty()) {
            (_, true) => Vec::new(),
            (None, false) => anyhow::bail!("few-shot settings need a split to draw demonstrations from"),
            (Some(file), false) => task
                .items(&read_rows(file).context("the few-shot split")?, &request.formats.verbalizers)
                .with_context(|| format!("few-shot split {}", file.display()))?,
        };
        let chat = match request.chat {
            true => Some(backbone.tokenizer.chat_template().ok_or_else(|| {
                anyhow::anyhow!(
                    "--apply-chat-template: {} has no chat template (GGUF tokenizer.chat_template, \
                     chat_template.jinja or tokenizer_config.json's chat_template)",
                    backbone.dir.display()
                )
            })?),
            false => None,
        };
        let sampling = &request.fewshot.config;
        let seeds: Vec<u64> =
            std::iter::once(sampling.seed).chain(request.fewshot.more_seeds.iter().copied()).collect();
        let mut shot_sets = BTreeMap::new();
        for &k in &ks {
            for &seed in &seeds {
                shot_sets.insert((k, seed), fewshot::choose(&items, &pool, k, sampling.sampler, seed)?);
            }
        }
        Ok(Self { items, ks, seeds, shot_sets, chat })
    }
}

/// Scores the settings of a plan, each through its own request cache.
struct Scorer<'a> {
    backbone: &'a Backbone,
    request: &'a EvalRequest,
    plan: &'a Plan<'a>,
    tokenizer: &'a Tokenizer,
    /// The tuned prompt's token, when there is a prompt.
    token_id: Option<i64>,
    shard: Shard,
    progress: &'a dyn Progress,
    keys: Keys,
}

/// What every setting's cached scores depend on besides its format, prompt and demonstrations: the data file's
/// length, the demonstrations' file and its length, the verbalizers.
struct Keys {
    data_len: String,
    pool_file: String,
    pool_len: String,
    verbalizers: String,
}

impl Keys {
    fn of(request: &EvalRequest, plan: &Plan) -> Result<Self> {
        let pool_len = match &request.fewshot.data {
            Some(f) if !plan.ks.is_empty() => std::fs::metadata(f)?.len().to_string(),
            _ => String::new(),
        };
        Ok(Self {
            data_len: std::fs::metadata(&request.data)?.len().to_string(),
            pool_file: request.fewshot.data.as_ref().map(|f| f.display().to_string()).unwrap_or_default(),
            pool_len,
            verbalizers: serde_json::to_string(&request.formats.verbalizers)?,
        })
    }
}

impl Scorer<'_> {
    /// Every setting in report order: zero-shot under each template, k-shot around the zero-shot format and (when
    /// asked) around the tuned prompt for each k and seed, and the tuned prompt last. `None` for a part.
    fn settings(&self, zero_shot: &PromptFormat, prompt: Option<&Prompt>) -> Result<Option<Vec<Setting>>> {
        let (request, plan) = (self.request, self.plan);
        let mut settings = vec![self.setting("zero-shot".into(), "zero-shot", zero_shot, None, None)?];
        for (j, template) in request.formats.zero_shot.all()[1..].iter().enumerate() {
            let format = PromptFormat::compile(template, self.tokenizer)
                .with_context(|| format!("zero-shot template {}: {template:?}", j + 2))?;
            settings.push(self.setting(format!("zero-shot-t{}", j + 2), "zero-shot", &format, None, None)?);
        }
        let mut around: Vec<(&str, &PromptFormat, Option<&Prompt>)> = vec![("", zero_shot, None)];
        if let (Some(p), true) = (prompt, request.fewshot.tuned) {
            around.push(("tuned+", p.format(), Some(p)));
        }
        for (prefix, format, prompt) in around {
            for &k in &plan.ks {
                let group = format!("{prefix}{k}-shot");
                for (s, &seed) in plan.seeds.iter().enumerate() {
                    let name = if s == 0 { group.clone() } else { format!("{group}-s{seed}") };
                    settings.push(self.setting(name, &group, format, prompt, Some((k, seed)))?);
                }
            }
        }
        if let Some(p) = prompt {
            settings.push(self.setting("tuned".into(), "tuned", p.format(), Some(p), None)?);
        }
        Ok(settings.into_iter().collect())
    }

    /// One setting: its name and group, its format, the tuned prompt or none, and its (k, seed) when few-shot.
    fn setting(
        &self,
        name: String,
        group: &str,
        format: &PromptFormat,
        prompt: Option<&Prompt>,
        shots: Option<(usize, u64)>,
    ) -> Result<Option<Setting>> {
        let (request, plan, tokenizer) = (self.request, self.plan, self.tokenizer);
        let sampling = &request.fewshot.config;
        let injection = prompt.map(|p| p.injection(self.token_id.expect("added with the prompt")));
        let classifier = Classifier {
            model: &self.backbone.model,
            tokenizer,
            format,
            injections: injection.as_slice(),
            mode: request.mode,
            shared: !request.naive,
            truncation_field: request.formats.truncation_field.as_deref(),
            max_tokens: None,
            shot_delimiter: &sampling.delimiter,
            chat: plan.chat,
        };
        // Items are copied only to carry demonstrations.
        let (k, fewshot, with_shots) = match shots {
            None => (0, String::new(), None),
            Some((k, seed)) => {
                let mut with_shots = plan.items.clone();
                for (t, shots) in with_shots.iter_mut().zip(&plan.shot_sets[&(k, seed)]) {
                    t.item.shots = shots.clone();
                }
                let (pool_file, pool_len) = (&self.keys.pool_file, &self.keys.pool_len);
                let fewshot =
                    format!("{k} {:?} {seed} {:?} {pool_file} {pool_len}", sampling.sampler, sampling.delimiter);
                (k, fewshot, Some(with_shots))
            }
        };
        let items = with_shots.as_deref().unwrap_or(&plan.items);
        let fingerprint = fingerprint(
            &[
                "item scores",
                &self.backbone.dir.display().to_string(),
                &self.backbone.weights(),
                &format.compiled_template(),
                request.formats.truncation_field.as_deref().unwrap_or(""),
                &request.data.display().to_string(),
                &self.keys.data_len,
                &self.keys.verbalizers,
                &fewshot,
                if plan.chat.is_some() { "chat" } else { "" },
            ],
            prompt,
        )?;
        let cache = format!("cache/{}-{name}.jsonl", request.task.name());
        let what = format!("{} {name}", request.task.name());
        let (out, batch, shard, progress) = (&request.out, request.batch_size, self.shard, self.progress);
        let run = CachedRun { out, cache: &cache, shard, fingerprint: &fingerprint, batch, progress, what: &what };
        let Some(scores) = scores_cached(&classifier, items, &content_free(format), &run)? else { return Ok(None) };
        let contexts = if request.log_samples {
            let token = format.prompt_token();
            items
                .iter()
                .map(|t| Ok(tokenizer.decode(&classifier.request(&t.item)?.context)?.replace(token, "<P>")))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        Ok(Some(Setting { name, group: group.to_string(), shots: k, scores, contexts }))
    }
}

/// The headline metrics of zero-shot and tuned predictions: bootstrap standard errors (each on the same seeded
/// resamples), the paired interval of their difference, and the majority and chance baselines.
fn metric_rows(
    task: &EvalTask,
    items: &[TaskItem],
    zero_preds: &[usize],
    tuned_preds: Option<&[usize]>,
) -> Result<Vec<MetricRow>> {
    let zero = task.metrics(items, zero_preds)?;
    let tuned = tuned_preds.map(|p| task.metrics(items, p)).transpose()?;
    let zero_draws = stats::bootstrap(task, items, zero_preds)?;
    let tuned_draws = tuned_preds.map(|p| stats::bootstrap(task, items, p)).transpose()?;
    let zero_stderr = stats::stderr(&zero_draws);
    let tuned_stderr = tuned_draws.as_ref().map(|d| stats::stderr(d));
    let intervals = tuned_draws.as_ref().map(|d| stats::difference_interval(d, &zero_draws));
    let (majority, chance) = stats::baselines(task, items)?;
    Ok(zero
        .iter()
        .enumerate()
        .map(|(i, m)| MetricRow {
            zero_shot_stderr: Some(zero_stderr[i]),
            tuned_stderr: tuned_stderr.as_ref().map(|s| s[i]),
            delta_interval: intervals.as_ref().map(|d| d[i]),
            majority: Some(majority[i]),
            chance: Some(chance[i]),
            ..MetricRow::new(&m.name, m.value, tuned.as_ref().map(|t| t[i].value))
        })
        .collect())
}

/// The spread of each metric under `mode` over the settings of every group with more than one.
fn spreads(settings: &[SettingResult], mode: ScoreMode) -> Vec<Spread> {
    let mut groups: Vec<&str> = Vec::new();
    for s in settings {
        if !groups.contains(&s.group.as_str()) {
            groups.push(&s.group);
        }
    }
    let mut out = Vec::new();
    for group in groups {
        let members: Vec<&SettingResult> = settings.iter().filter(|s| s.group == group).collect();
        if members.len() < 2 {
            continue;
        }
        let headline = |s: &'_ SettingResult| -> Vec<(String, f64)> {
            s.scores.iter().filter(|m| m.mode == mode.name()).map(|m| (m.metric.clone(), m.value)).collect()
        };
        for (i, (metric, _)) in headline(members[0]).into_iter().enumerate() {
            let values: Vec<f64> = members.iter().map(|s| headline(s)[i].1).collect();
            out.push(Spread {
                group: group.to_string(),
                settings: values.len(),
                metric,
                mean: values.iter().sum::<f64>() / values.len() as f64,
                sd: stats::sample_stddev(&values),
                min: values.iter().copied().fold(f64::INFINITY, f64::min),
                max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            });
        }
    }
    out
}

/// A setting's metrics with bootstrap standard errors under every scoring mode, and its dropped demonstrations.
fn setting_result(task: &EvalTask, items: &[TaskItem], setting: &Setting) -> Result<SettingResult> {
    let mut scores = Vec::new();
    for mode in ScoreMode::ALL {
        let predictions = setting.under(mode, items)?.predictions;
        let stderr = stats::stderr(&stats::bootstrap(task, items, &predictions)?);
        for (m, e) in task.metrics(items, &predictions)?.into_iter().zip(stderr) {
            scores.push(ModeScore { mode: mode.name().into(), metric: m.name, value: m.value, stderr: e });
        }
    }
    Ok(SettingResult {
        setting: setting.name.clone(),
        group: setting.group.clone(),
        shots: setting.shots,
        items_dropping_shots: setting.scores.iter().filter(|s| s.dropped_shots > 0).count(),
        dropped_shots: setting.scores.iter().map(|s| s.dropped_shots).sum(),
        scores,
    })
}

/// `<out>/samples/<Task>.jsonl`: a line per item with its origin, ids, candidates and gold, and per setting the
/// context as scored, each candidate's score in every mode, the prediction under the headline mode and the
/// demonstrations dropped to fit.
fn write_samples(request: &EvalRequest, items: &[TaskItem], settings: &[Setting]) -> Result<()> {
    let dir = request.out.join("samples");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let per_mode: Vec<Vec<Ranked>> = settings
        .iter()
        .map(|s| ScoreMode::ALL.iter().map(|&m| s.under(m, items)).collect::<Result<_>>())
        .collect::<Result<_>>()?;
    let headline = ScoreMode::ALL.iter().position(|&m| m == request.mode).expect("ALL holds every mode");
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
        for (s, modes) in settings.iter().zip(&per_mode) {
            let scores: serde_json::Map<String, Value> =
                ScoreMode::ALL.iter().zip(modes).map(|(m, r)| (m.name().into(), r.scores[i].clone().into())).collect();
            let predictions: serde_json::Map<String, Value> =
                ScoreMode::ALL.iter().zip(modes).map(|(m, r)| (m.name().into(), r.predictions[i].into())).collect();
            line[s.name.as_str()] = serde_json::json!({
                "context": s.contexts[i],
                "shots": s.shots,
                "dropped_shots": s.scores[i].dropped_shots,
                "loglikelihoods": s.scores[i].candidates.iter().map(|c| c.answer_logprob).collect::<Vec<_>>(),
                "scores": scores,
                "predictions": predictions,
                "prediction": modes[headline].predictions[i],
            });
        }
        text += &format!("{line}\n");
    }
    let path = dir.join(format!("{}.jsonl", request.task.name()));
    write_atomic(&path, |p| Ok(std::fs::write(p, text)?))
}

/// Writes `<Task>.jsonl` in the official submission layout into `dir`.
pub fn write_submission(task: &EvalTask, items: &[TaskItem], predictions: &[usize], dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(task.submission_file());
    let lines: String = task.submission(items, predictions)?.iter().map(|v: &Value| format!("{v}\n")).collect();
    write_atomic(&path, |p| Ok(std::fs::write(p, lines)?))?;
    Ok(path)
}
