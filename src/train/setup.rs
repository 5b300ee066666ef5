//! What a run is built from: the frozen model, the fresh prompt, the encoded splits and, for a Russian SuperGLUE
//! task, the validation items its metric is computed on. Also the losses and the validation figures of the
//! prompt as it stands.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};
use tch::Tensor;

use super::objective::{choice_loss, encode_items, Examples};
use super::TrainConfig;
use crate::data::{collate, Example, PreprocessConfig, Preprocessor, Record};
use crate::dist::Ranks;
use crate::format::PromptFormat;
use crate::model::{Backbone, Model};
use crate::progress::Progress;
use crate::prompt::{Injection, Prompt};
use crate::task::fewshot::choose;
use crate::task::{Classifier, EvalTask, ScoreMode, TaskFormats, TaskItem};
use crate::tokenizer::Tokenizer;

/// Everything the loop needs, built from the config.
pub(super) struct Setup<'a> {
    pub model: &'a Model,
    pub prompt: Prompt,
    pub tokenizer: Tokenizer,
    pub token_id: i64,
    pub pad_id: i64,
    pub train: Examples,
    pub validation: Examples,
    /// A task's labelled validation items, scored for its metrics.
    pub scoring: Option<Scoring>,
}

/// How a task's validation items are scored: as `ruprompts eval` scores them, read as training reads them.
pub(super) struct Scoring {
    pub task: EvalTask,
    pub items: Vec<TaskItem>,
    pub reading: Reading,
}

/// How training tokenizes and scores a task's items, the same for the examples and the validation metric.
pub(super) struct Reading {
    truncation_field: Option<String>,
    max_tokens: usize,
    mode: ScoreMode,
    /// What separates demonstrations (`fewshot.k`) from each other and from the item.
    delimiter: String,
    /// The context as the user's turn of the chat template (`prompt_format.chat`).
    chat: bool,
}

impl Reading {
    /// The evaluator's classifier for `format` with `injections` (none to tokenize only).
    fn classifier<'a>(
        &'a self,
        model: &'a Model,
        tokenizer: &'a Tokenizer,
        format: &'a PromptFormat,
        injections: &'a [Injection<'a>],
    ) -> Classifier<'a> {
        Classifier {
            model,
            tokenizer,
            format,
            injections,
            mode: self.mode,
            shared: true,
            truncation_field: self.truncation_field.as_deref(),
            max_tokens: Some(self.max_tokens),
            shot_delimiter: &self.delimiter,
            chat: if self.chat { tokenizer.chat_template() } else { None },
        }
    }
}

/// The prompt a run of `config` starts from: the provider initialised with the run's seed, or the parameters of
/// `prompt_provider.init_from`. Deterministic, so the start of a finished run can be rebuilt (`ruprompts inspect`).
pub fn initial_prompt(config: &TrainConfig, model: &Model, tokenizer: &Tokenizer) -> Result<Prompt> {
    let format = PromptFormat::compile(&config.prompt_format.template, tokenizer).context("prompt_format.template")?;
    let section = &config.prompt_provider;
    let mut prompt = crate::rng::seeded(config.training.seed, || Prompt::new(format, section.provider.clone(), model))
        .context("prompt_provider")?;
    if let Some(source) = &section.init_from {
        let what = "prompt_provider.init_from";
        let dir = crate::resolve::prompt_dir(source, what)?;
        let start = Prompt::load(&dir, model.device()).with_context(|| format!("{what}: {}", source.display()))?;
        start.fits(model).with_context(|| format!("{what}: {} does not fit the model", source.display()))?;
        prompt.set_state(&start.state()).with_context(|| format!("{what}: cannot start from {}", source.display()))?;
    }
    Ok(prompt)
}

/// Reads and encodes the data of `config` for a fresh prompt; warnings (rows left out) go to `progress`.
pub(super) fn setup<'a>(config: &TrainConfig, backbone: &'a Backbone, progress: &dyn Progress) -> Result<Setup<'a>> {
    ensure!(
        config.fewshot.k == 0 || config.dataset.eval_task().is_some(),
        "`fewshot.k`: demonstrations are solved items of a task: set dataset.task or dataset.task_file"
    );
    let model = &backbone.model;
    let mut tokenizer = match &config.tokenizer {
        Some(dir) => Tokenizer::load(dir).context("tokenizer")?,
        None => backbone.tokenizer.clone(),
    };
    let mut prompt = initial_prompt(config, model, &tokenizer)?;
    // As given in the config (`demo`, a directory, a Hub id): `ruprompts generate` finds the model by it.
    prompt.pretrained_model_name = Some(config.model.path.to_string_lossy().into_owned());
    let token_id = prompt.add_token(&mut tokenizer)?;
    let (max_tokens, positions) = (config.preprocessing.max_tokens(), model.config().n_positions);
    ensure!(
        max_tokens as i64 <= positions,
        "preprocessing.max_tokens {max_tokens} is more than the model's {positions} positions (n_positions)"
    );
    let splits = config.dataset.load().context("dataset")?;
    if let (true, Some(file)) = (splits.validation.is_empty(), &splits.validation_file) {
        progress.warn(&format!(
            "validation: {} has no rows, so training runs without evaluation (no validation loss, no best prompt)",
            file.display()
        ));
    }
    let special = tokenizer.special();
    let pad_id = i64::from(special.pad.or(special.eos).unwrap_or(0));
    let warn_skipped = |split: &str, skipped: &[&crate::data::Origin], rows: usize| {
        if let Some(first) = skipped.first() {
            progress.warn(&format!(
                "{split}: left out {} of {rows} rows longer than max_tokens {max_tokens} (first: {first})",
                skipped.len()
            ));
        }
    };
    ensure!(
        !config.prompt_format.chat || tokenizer.chat_template().is_some(),
        "prompt_format.chat: the model's checkpoint has no chat template (GGUF tokenizer.chat_template, \
         chat_template.jinja or tokenizer_config.json's chat_template)"
    );
    let (train, validation, scoring) = match config.dataset.eval_task() {
        None => {
            let pre = Preprocessor::new(prompt.format(), &tokenizer, &config.preprocessing)
                .context("preprocessing")?
                .counting_eos(config.objective.eos());
            let encode = |rows: &[Record], split: &str| -> Result<Examples> {
                let (examples, skipped) = pre.encode_all(rows)?;
                warn_skipped(split, &skipped.iter().collect::<Vec<_>>(), rows.len());
                Ok(Examples::Sequences(examples))
            };
            (encode(&splits.train, "train")?, encode(&splits.validation, "validation")?, None)
        }
        Some(task) => {
            let (verbalizers, truncation_field) = task_choices(&task, &config.preprocessing, prompt.format())?;
            let eos = special.eos.map(i64::from);
            let reading = Reading {
                truncation_field,
                // An item and its longest candidate fit in max_tokens with the EOS the `lm` objective appends.
                max_tokens: max_tokens - usize::from(config.objective.eos()),
                mode: config.objective.score_mode(),
                delimiter: config.fewshot.delimiter.clone(),
                chat: config.prompt_format.chat,
            };
            let classifier = reading.classifier(model, &tokenizer, prompt.format(), &[]);
            let too_long = config.preprocessing.too_long();
            // With fewshot.k, every item (train and validation) gets k demonstrations from the training split, as
            // `eval` puts them before it: the prompt learns around them.
            let read =
                |rows: &[Record], split: &str| task.items(rows, &verbalizers).with_context(|| format!("{split} split"));
            let pool = read(&splits.train, "train")?;
            let fewshot = &config.fewshot;
            let encode = |rows: &[Record], split: &str| -> Result<(Examples, Vec<TaskItem>)> {
                let mut items = read(rows, split)?;
                if fewshot.k > 0 {
                    let shots = choose(&items, &pool, fewshot.k, fewshot.sampler, fewshot.seed)
                        .with_context(|| format!("fewshot: {split} split"))?;
                    for (t, shots) in items.iter_mut().zip(shots) {
                        t.item.shots = shots;
                    }
                }
                let (examples, skipped) = encode_items(&classifier, &items, &config.objective, eos, too_long)?;
                warn_skipped(split, &skipped.iter().map(|&i| &items[i].item.origin).collect::<Vec<_>>(), items.len());
                let mut kept = vec![true; items.len()];
                for &i in &skipped {
                    kept[i] = false;
                }
                let items = items.into_iter().zip(kept).filter_map(|(t, keep)| keep.then_some(t)).collect();
                Ok((examples, items))
            };
            let (train, _) = encode(&splits.train, "train")?;
            let (validation, items) = encode(&splits.validation, "validation")?;
            let scoring = (!items.is_empty()).then_some(Scoring { task, items, reading });
            (train, validation, scoring)
        }
    };
    ensure!(!train.is_empty(), "no training rows fit in max_tokens {max_tokens}");
    Ok(Setup { model, prompt, tokenizer, token_id, pad_id, train, validation, scoring })
}

/// A task's verbalizers and truncation field: the config's, else those of its bundled `prompt_formats/` file or
/// its task file (the truncation field only when the format has it).
fn task_choices(
    task: &EvalTask,
    preprocessing: &PreprocessConfig,
    format: &PromptFormat,
) -> Result<(BTreeMap<String, String>, Option<String>)> {
    let PreprocessConfig::Classification { verbalizers, truncation_field, label_field, .. } = preprocessing else {
        bail!("preprocessing: dataset.task trains the task's multiple-choice items: use kind: classification")
    };
    ensure!(
        label_field == "label",
        "preprocessing.label_field: a task's items carry their own labels; leave label_field out with dataset.task"
    );
    let bundled = match task {
        EvalTask::Rsg(task) => TaskFormats::bundled(*task),
        EvalTask::File(file) => file.formats(),
    };
    let verbalizers = if verbalizers.is_empty() { bundled.verbalizers } else { verbalizers.clone() };
    let truncation_field = match truncation_field {
        Some(field) => {
            ensure!(
                format.fields().contains(&field.as_str()),
                "preprocessing.truncation_field '{field}' is not a field of the format {:?} (its fields: {})",
                format.template(),
                format.fields().join(", ")
            );
            Some(field.clone())
        }
        None => bundled.truncation_field.filter(|f| format.fields().contains(&f.as_str())),
    };
    Ok((verbalizers, truncation_field))
}

impl Setup<'_> {
    /// Mean loss of the examples at `indices` of `examples` under the prompt (graph kept for backward), and what
    /// it is the mean over: the target tokens of sequences, the items of choices. An empty `indices` (a rank's
    /// share of a short batch) is `None`.
    pub fn loss(&self, examples: &Examples, indices: &[usize]) -> Result<Option<(Tensor, f64)>> {
        if indices.is_empty() {
            return Ok(None);
        }
        let device = self.model.device();
        let loss = match examples {
            Examples::Sequences(all) => {
                let picked: Vec<&Example> = indices.iter().map(|&i| &all[i]).collect();
                let batch = collate(&picked, self.pad_id);
                let embeds = self.prompt.embed(self.model, &batch.input_ids.to_device(device), self.token_id)?;
                let labels = &batch.labels;
                let loss = self.model.loss(embeds.input(), Some(&batch.attention_mask.to_device(device)), labels)?;
                (loss, Model::loss_targets(embeds.input(), &labels.to_device(device)) as f64)
            }
            Examples::Choices(all) => {
                let picked: Vec<_> = indices.iter().map(|&i| &all[i]).collect();
                let loss = choice_loss(self.model, &[self.prompt.injection(self.token_id)], &picked)?;
                (loss, indices.len() as f64)
            }
        };
        Ok(Some(loss))
    }

    /// The validation loss: token-weighted for sequences (every target token counts once), item-weighted for
    /// choices; `None` without validation data. The batches are split among `ranks` and the sums added up.
    pub fn eval_loss(&self, batch_size: usize, ranks: &Ranks) -> Result<Option<f64>> {
        if self.validation.is_empty() {
            return Ok(None);
        }
        // Σ mean × weight, and Σ weight.
        let mut totals = [0.0; 2];
        tch::no_grad(|| -> Result<()> {
            let all: Vec<usize> = (0..self.validation.len()).collect();
            for chunk in all.chunks(batch_size.max(1)).skip(ranks.rank).step_by(ranks.size) {
                if let Some((loss, weight)) = self.loss(&self.validation, chunk)? {
                    totals[0] += loss.double_value(&[]) * weight;
                    totals[1] += weight;
                }
            }
            Ok(())
        })?;
        ranks.sum_f64(&mut totals);
        Ok(Some(totals[0] / totals[1].max(1.0)))
    }

    /// The task's official metrics on the validation items, scored by the evaluator with the prompt as it stands
    /// (`None` without a task or validation items).
    pub fn metrics(&self, batch_size: usize) -> Result<Option<Vec<crate::task::Metric>>> {
        let Some(s) = &self.scoring else { return Ok(None) };
        let _guard = tch::no_grad_guard();
        let injection = [self.prompt.injection(self.token_id)];
        let classifier = s.reading.classifier(self.model, &self.tokenizer, self.prompt.format(), &injection);
        let items: Vec<_> = s.items.iter().map(|t| &t.item).collect();
        let predictions = classifier.predict(&items, None, batch_size)?;
        Ok(Some(s.task.metrics(&s.items, &predictions)?))
    }
}
