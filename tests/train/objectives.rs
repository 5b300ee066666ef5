//! Training on Russian SuperGLUE items (tests/fixtures/rsg, the samples in the official layout): the `lm` and
//! `choice` losses equal what one computes by hand from the evaluator's candidate scores; the shared-context
//! batch agrees with items one by one, in loss and gradient; and each objective learns each kind of task.

use crate::common;

use std::path::{Path, PathBuf};

use common::*;
use ruprompts::data::{read_rows, TooLongPolicy};
use ruprompts::format::PromptFormat;
use ruprompts::progress::Silent;
use ruprompts::prompt::Prompt;
use ruprompts::provider::ProviderConfig;
use ruprompts::task::{score_naive, Candidate, Classifier, RsgTask, ScoreMode, TaskFormats};
use ruprompts::tokenizer::Tokenizer;
use ruprompts::train::{choice_loss, encode_items, train, Examples, Objective, TrainConfig, TrainOptions};
use serde_json::Value;

fn rsg(task: &str, split: &str) -> PathBuf {
    fixture(&format!("rsg/{task}/{split}.jsonl"))
}

/// A config training `template` on `train` for `steps` updates, validated on `validation`, into `dir/run`.
fn config(dir: &Path, task: &str, train: &Path, validation: &Path, template: &str, extra: &str) -> TrainConfig {
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!(
            r#"model: {{path: {model}, device: cpu}}
dataset: {{task: {task}, train: {train}, validation: {validation}}}
prompt_format: {{template: "{template}"}}
preprocessing: {{kind: classification, max_tokens: 256, too_long: skip}}
optimizer: {{lr: 0.1, weight_decay: 0.0}}
training: {{batch_size: 4, seed: 7, final: last}}
{extra}
output_dir: {out}
"#,
            model = model_dir().display(),
            train = train.display(),
            validation = validation.display(),
            out = dir.join("run").display(),
        ),
    )
    .unwrap();
    TrainConfig::load(&path, &[]).unwrap()
}

/// The last `eval_loss` of a run's metrics.jsonl.
fn last_eval_loss(out: &Path) -> f64 {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    lines.iter().rev().find_map(|l| l["eval_loss"].as_f64()).unwrap()
}

/// Candidate scores of the one item in `file` under the trained prompt of `out`, as `ruprompts eval` computes
/// them; with the item's context and candidates (token ids).
fn evaluator_view(task: RsgTask, file: &Path, out: &Path) -> (Vec<f64>, usize, Vec<i64>, Vec<Candidate>) {
    let model = tiny_model();
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let prompt = Prompt::from_pretrained(out, model.device()).unwrap();
    let token_id = prompt.add_token(&mut tok).unwrap();
    let injection = [prompt.injection(token_id)];
    let items = task.items(&read_rows(file).unwrap(), &TaskFormats::bundled(task).verbalizers).unwrap();
    let classifier = Classifier {
        model: &model,
        tokenizer: &tok,
        format: prompt.format(),
        injections: &injection,
        mode: ScoreMode::Sum,
        shared: true,
        truncation_field: None,
        max_tokens: Some(256),
        shot_delimiter: "",
        chat: None,
    };
    let scores = tch::no_grad(|| classifier.candidate_scores(&[&items[0].item], None)).unwrap().remove(0);
    let ruprompts::task::Request { context, candidates, .. } = classifier.request(&items[0].item).unwrap();
    (scores, items[0].item.gold.unwrap(), context, candidates)
}

#[test]
fn training_losses_are_what_the_evaluator_scores_give_by_hand() {
    init();
    let dir = tempfile::tempdir().unwrap();
    // One PARus item to validate on; the candidate sits inside the format, prompt tokens after it.
    let one = dir.path().join("one.jsonl");
    let first = std::fs::read_to_string(rsg("PARus", "val")).unwrap().lines().next().unwrap().to_string();
    std::fs::write(&one, first + "\n").unwrap();
    let template = "<P*3>{premise_clause}, {connective}{@candidate}<P*2>.";
    let softmax_nll = |scores: &[f64], gold: usize| {
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + scores.iter().map(|s| (s - max).exp()).sum::<f64>().ln();
        lse - scores[gold]
    };
    let model = tiny_model();
    let eos = Tokenizer::from_dir(&model_dir()).unwrap().special().eos.unwrap() as i64;
    for (objective, name) in [
        ("objective: {kind: choice}", "choice"),
        ("objective: {kind: choice, score: per_char}", "choice per char"),
        ("objective: {kind: lm, eos: false}", "lm"),
        ("objective: {kind: lm}", "lm + eos"),
    ] {
        let sub = dir.path().join(name.replace(' ', "_"));
        std::fs::create_dir_all(&sub).unwrap();
        let extra = format!("{objective}\nscheduler: {{kind: constant}}");
        let mut config = config(&sub, "parus", &rsg("PARus", "train"), &one, template, &extra);
        config.training.max_steps = Some(2);
        train(&config, &backbone(&config), &TrainOptions::default(), &Silent).unwrap();
        let logged = last_eval_loss(&config.output_dir);
        let (scores, gold, context, candidates) = evaluator_view(RsgTask::Parus, &one, &config.output_dir);
        let by_hand = match name {
            "choice" => softmax_nll(&scores, gold),
            "choice per char" => {
                let items = RsgTask::Parus.items(&read_rows(&one).unwrap(), &Default::default()).unwrap();
                let per_char: Vec<f64> = scores
                    .iter()
                    .zip(&items[0].item.candidates)
                    .map(|(s, c)| s / c.trim_start().chars().count() as f64)
                    .collect();
                softmax_nll(&per_char, gold)
            }
            "lm" => -scores[gold] / candidates[gold].answer.len() as f64,
            _ => {
                // −(Σ log p(gold answer) + log p(EOS | the whole text)) / (answer tokens + 1).
                let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
                let prompt = Prompt::from_pretrained(&config.output_dir, model.device()).unwrap();
                let injection = [prompt.injection(prompt.add_token(&mut tok).unwrap())];
                let g = &candidates[gold];
                let whole: Vec<i64> = [&context[..], &g.answer, &g.suffix].concat();
                let after =
                    score_naive(&model, &injection, &whole, &[Candidate { answer: vec![eos], suffix: vec![] }], false)
                        .unwrap()[0]
                        .answer_logprob;
                -(scores[gold] + after) / (g.answer.len() + 1) as f64
            }
        };
        assert!((logged - by_hand).abs() < 1e-4, "{name}: trainer's eval loss {logged} vs by hand {by_hand}");
    }
}

#[test]
fn shared_context_batches_match_items_one_by_one_in_loss_and_gradient() {
    let model = tiny_model();
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let format = PromptFormat::compile("<P*2>{text}<P*2>{query_start}{@candidate}{query_end}<P*2>", &tok).unwrap();
    tch::manual_seed(11);
    let prompt = Prompt::new(format, ProviderConfig::default(), &model).unwrap();
    let token_id = prompt.add_token(&mut tok).unwrap();
    let items = RsgTask::Rucos.items(&read_rows(&rsg("RuCoS", "train")).unwrap(), &Default::default()).unwrap();
    let classifier = Classifier {
        model: &model,
        tokenizer: &tok,
        format: prompt.format(),
        injections: &[],
        mode: ScoreMode::Sum,
        shared: true,
        truncation_field: Some("text"),
        max_tokens: Some(200),
        shot_delimiter: "",
        chat: None,
    };
    let objective = Objective::Choice { score: ScoreMode::Sum };
    let (examples, _) = encode_items(&classifier, &items[..5], &objective, None, TooLongPolicy::Error).unwrap();
    let Examples::Choices(examples) = examples else { panic!("choice examples") };
    assert!(examples.iter().all(|e| e.candidates.len() > 1), "entity choice needs several candidates");
    let weights = prompt.var_store().variables()["weights"].shallow_clone();
    let loss_and_grad = |batch: &[&ruprompts::train::ChoiceExample]| {
        weights.shallow_clone().zero_grad();
        let loss = choice_loss(&model, &[prompt.injection(token_id)], batch).unwrap();
        loss.backward();
        (loss.double_value(&[]), weights.grad().copy())
    };
    let refs: Vec<_> = examples.iter().collect();
    let (batched, batched_grad) = loss_and_grad(&refs);
    let singles: Vec<(f64, tch::Tensor)> = refs.iter().map(|e| loss_and_grad(&[*e])).collect();
    let mean = singles.iter().map(|s| s.0).sum::<f64>() / singles.len() as f64;
    let mean_grad = singles.iter().map(|s| s.1.shallow_clone()).reduce(|a, b| a + b).unwrap() / singles.len() as f64;
    assert!((batched - mean).abs() < 1e-5, "batched loss {batched} vs one by one {mean}");
    let diff = max_abs_diff(&batched_grad, &mean_grad);
    let scale = mean_grad.abs().max().double_value(&[]);
    assert!(scale > 0.0 && diff <= 1e-4 * scale.max(1.0), "gradients differ by {diff} (scale {scale})");
    // And each single item's loss is the cross-entropy of the naive (one forward per candidate) scores.
    let injection = [prompt.injection(token_id)];
    for (e, (loss, _)) in examples.iter().zip(&singles) {
        let naive = tch::no_grad(|| score_naive(&model, &injection, &e.context, &e.candidates, false)).unwrap();
        let scores: Vec<f64> = naive.iter().map(|s| s.answer_logprob).collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + scores.iter().map(|s| (s - max).exp()).sum::<f64>().ln();
        assert!((loss - (lse - scores[e.gold])).abs() < 1e-4, "{loss} vs naive {}", lse - scores[e.gold]);
    }
}

/// A config training `objective` with `template` on the 16 training items of `folder` of the pretrained demo
/// model (tests/fixtures/demo-model: the random fixture model predicts nearly uniformly, so no prompt can move
/// it), validated on the same items; `training` holds extra keys of the training section.
fn demo_config(dir: &Path, task: &str, folder: &str, template: &str, objective: &str, training: &str) -> TrainConfig {
    let train_file = rsg(folder, "train");
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!(
            r#"model: {{path: {model}, device: cpu}}
dataset: {{task: {task}, train: {train}, validation: {train}}}
prompt_format: {{template: "{template}"}}
preprocessing: {{kind: classification, max_tokens: 256, too_long: skip}}
objective: {objective}
optimizer: {{lr: 0.3, weight_decay: 0.0}}
scheduler: {{kind: constant}}
training: {{batch_size: 4, seed: 7, max_steps: 150, {training}}}
output_dir: {out}
"#,
            model = fixture("demo-model").display(),
            train = train_file.display(),
            out = dir.join("run").display(),
        ),
    )
    .unwrap();
    TrainConfig::load(&path, &[]).unwrap()
}

/// The validation lines of a run's metrics.jsonl.
fn evaluations(out: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|l| l["eval_loss"].is_f64()).collect()
}

/// Training-set accuracy (EM for RuCoS) before and after 150 updates of `objective` (`preprocessing`: one more
/// `key: value` of that section): the step-0 metrics line scores the items with the untrained prompt, the last
/// one with the tuned prompt.
fn learn(task: &str, folder: &str, template: &str, objective: &str, preprocessing: &str) -> (f64, f64) {
    let overrides: Vec<String> = [preprocessing]
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| format!("preprocessing.{}", p.replacen(": ", "=", 1)))
        .collect();
    learn_with(task, folder, template, objective, &overrides)
}

/// [`learn`] with any config overrides (`key.sub=value`).
fn learn_with(task: &str, folder: &str, template: &str, objective: &str, overrides: &[String]) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    demo_config(dir.path(), task, folder, template, objective, "eval_every: 150, final: last");
    let config = TrainConfig::load(&dir.path().join("config.yaml"), overrides).unwrap();
    train(&config, &backbone(&config), &TrainOptions::default(), &Silent).unwrap();
    let evals = evaluations(&config.output_dir);
    let key = if task == "rucos" { "eval_em" } else { "eval_accuracy" };
    let (first, last) = (&evals[0], evals.last().unwrap());
    assert_eq!((first["step"].as_u64(), last["step"].as_u64()), (Some(0), Some(150)));
    (first[key].as_f64().unwrap(), last[key].as_f64().unwrap())
}

/// The prompt weights of a folder in save_pretrained's layout.
fn prompt_weights(dir: &Path) -> tch::Tensor {
    Prompt::from_pretrained(dir, tch::Device::Cpu).unwrap().embeddings()
}

#[test]
fn the_best_checkpoint_by_the_task_metric_is_the_final_prompt_and_patience_stops_the_run() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let training = "eval_every: 25, save_every: 50, save_total_limit: 1, early_stopping_patience: 2";
    let config =
        demo_config(dir.path(), "danetqa", "DaNetQA", "<P*3>{question}<P*3>{passage}<P*3>", "{kind: choice}", training);
    let report = train(&config, &backbone(&config), &TrainOptions::default(), &Silent).unwrap();
    let out = &config.output_dir;
    // The best step is the first of the highest accuracy logged after training began.
    let evals = evaluations(out);
    let scored: Vec<(u64, f64)> =
        evals.iter().skip(1).map(|e| (e["step"].as_u64().unwrap(), e["eval_accuracy"].as_f64().unwrap())).collect();
    let best = scored.iter().fold(scored[0], |b, &x| if x.1 > b.1 { x } else { b });
    assert_eq!(report.eval_metric, "accuracy");
    assert_eq!((report.best_step, report.best_metric), (Some(best.0 as usize), Some(best.1)));
    assert!(best.1 > evals[0]["eval_accuracy"].as_f64().unwrap(), "nothing learnt: {evals:?}");
    // Two evaluations without improvement after the best one end the run there (this data peaks early).
    assert!(report.stopped_early, "{scored:?}");
    assert_eq!(report.steps, best.0 as usize + 2 * 25, "{scored:?}");
    assert_eq!(scored.last().unwrap().0 as usize, report.steps);
    // The best checkpoint survives save_total_limit 1, and its weights are the final prompt.
    let best_dir = out.join(format!("checkpoint-{}", best.0));
    assert!(best_dir.is_dir());
    assert!(prompt_weights(out).equal(&prompt_weights(&best_dir)));
    assert!(!prompt_weights(out).equal(&prompt_weights(&out.join(format!("checkpoint-{}", report.steps)))));
    let state: Value = serde_json::from_str(&std::fs::read_to_string(out.join("trainer_state.json")).unwrap()).unwrap();
    assert_eq!((state["best_step"].as_u64(), state["stopped_early"].as_bool()), (Some(best.0), Some(true)));

    // Stopped after the best evaluation and resumed, the run keeps its best and its patience count: same end.
    let resumed_dir = tempfile::tempdir().unwrap();
    let mut resumed = demo_config(
        resumed_dir.path(),
        "danetqa",
        "DaNetQA",
        "<P*3>{question}<P*3>{passage}<P*3>",
        "{kind: choice}",
        training,
    );
    let stop = TrainOptions { max_updates_now: Some(best.0 as usize + 25), ..Default::default() };
    train(&resumed, &backbone(&resumed), &stop, &Silent).unwrap();
    let again =
        train(&resumed, &backbone(&resumed), &TrainOptions { resume: true, ..Default::default() }, &Silent).unwrap();
    assert_eq!((again.steps, again.best_step, again.stopped_early), (report.steps, report.best_step, true));
    assert!(prompt_weights(&resumed.output_dir).equal(&prompt_weights(out)));

    // `final: last` keeps the last update's prompt instead.
    resumed.training.final_prompt = ruprompts::train::FinalPrompt::Last;
    resumed.output_dir = resumed_dir.path().join("last");
    let last = train(&resumed, &backbone(&resumed), &TrainOptions::default(), &Silent).unwrap();
    let last_dir = resumed.output_dir.join(format!("checkpoint-{}", last.steps));
    assert!(prompt_weights(&resumed.output_dir).equal(&prompt_weights(&last_dir)));
}

#[test]
fn the_choice_objective_learns_each_kind_of_task() {
    init();
    // Yes/no, three-way, two free alternatives, entity choice: figures on 2 CPU cores, seed 7.
    for (task, folder, template, at_least) in [
        ("danetqa", "DaNetQA", "<P*3>{question}<P*3>{passage}<P*3>", 0.3),
        ("rcb", "RCB", "<P*3>{premise}<P*3>{hypothesis}<P*3>", 0.15),
        ("parus", "PARus", "<P*3>{premise_clause}<P*3>{connective}", 0.1),
        ("rucos", "RuCoS", "<P*3>{text}<P*3>{query_start}{@candidate}{query_end}", 0.05),
    ] {
        let (zero, tuned) = learn(task, folder, template, "{kind: choice}", "");
        assert!(tuned - zero >= at_least, "{task}: training-set accuracy {zero} untrained, {tuned} tuned");
    }
}

#[test]
fn the_lm_objective_learns_the_label_distribution() {
    init();
    // With one-token verbalizers (the demo tokenizer splits " нет" in two) the untrained prompt picks " может"
    // for every RCB item; `lm` moves every prediction to the majority label, entailment (11 of 16). It learns no
    // more than that on this model: which label fits which item is what `choice` learns (docs/src/training.md).
    let verbalizers = r#"verbalizers: {entailment: " да", contradiction: " не", neutral: " может"}"#;
    let (zero, tuned) = learn("rcb", "RCB", "<P*3>{premise}<P*3>{hypothesis}<P*3>", "{kind: lm}", verbalizers);
    assert_eq!((zero, tuned), (0.0, 11.0 / 16.0));
}

#[test]
fn deep_prompts_learn_with_and_without_projection_and_beside_prompt_tokens() {
    init();
    // Training-set accuracy untrained → tuned, 2 CPU cores, seed 7: 0.375 → 0.81, 0.375 → 0.63, 0.69 → 0.94.
    let template = "{passage} Вопрос: {question} Ответ:";
    for (task, folder, template, provider, at_least) in [
        ("danetqa", "DaNetQA", template, "{kind: prefix, num_virtual_tokens: 8}", 0.3),
        ("danetqa", "DaNetQA", template, "{kind: prefix, num_virtual_tokens: 8, projection: {hidden_dim: 32}}", 0.15),
        ("rcb", "RCB", "<P*3>{premise}<P*3>{hypothesis}<P*3>", "{kind: prefix, num_virtual_tokens: 4}", 0.15),
    ] {
        let (zero, tuned) =
            learn_with(task, folder, template, "{kind: choice}", &[format!("prompt_provider={provider}")]);
        assert!(tuned - zero >= at_least, "{task} {provider}: training-set accuracy {zero} untrained, {tuned} tuned");
    }
}

/// `prompt_provider.init_from` starts a run where another ended (its step-0 evaluation is the other's last), takes
/// a PEFT adapter, and names both shapes when the providers differ.
#[test]
fn init_from_continues_a_prompt_and_names_mismatched_shapes() {
    init();
    let template = "{passage} Вопрос: {question} Ответ:";
    let first = tempfile::tempdir().unwrap();
    demo_config(first.path(), "danetqa", "DaNetQA", template, "{kind: choice}", "eval_every: 40, final: last");
    let deep = "prompt_provider={kind: prefix, num_virtual_tokens: 4}".to_string();
    let load = |dir: &Path, extra: &[String]| {
        let overrides: Vec<String> = [&[deep.clone(), "training.max_steps=40".to_string()][..], extra].concat();
        TrainConfig::load(&dir.join("config.yaml"), &overrides).unwrap()
    };
    let config = load(first.path(), &[]);
    train(&config, &backbone(&config), &TrainOptions::default(), &Silent).unwrap();
    let ended = evaluations(&config.output_dir).last().unwrap().clone();

    let second = tempfile::tempdir().unwrap();
    demo_config(second.path(), "danetqa", "DaNetQA", template, "{kind: choice}", "eval_every: 40, final: last");
    let from = format!("prompt_provider.init_from={}", config.output_dir.display());
    let continued = load(second.path(), std::slice::from_ref(&from));
    train(&continued, &backbone(&continued), &TrainOptions::default(), &Silent).unwrap();
    let started = evaluations(&continued.output_dir)[0].clone();
    assert_eq!(started["step"], 0);
    assert_eq!(
        (started["eval_loss"].as_f64(), started["eval_accuracy"].as_f64()),
        (ended["eval_loss"].as_f64(), ended["eval_accuracy"].as_f64())
    );

    // PEFT's adapter of the same shape (reference/peft/plain: 4 virtual tokens on the demo model), all but kept by
    // a learning rate of 1e-12 (Adam moves each value by about lr a step): the run's prompt is the adapter's.
    let peft = format!("prompt_provider.init_from={}", fixture("reference/peft/plain").display());
    let out = format!("output_dir={}", second.path().join("peft").display());
    let from_peft = load(second.path(), &[peft, out, "optimizer.lr=1e-12".to_string()]);
    train(&from_peft, &backbone(&from_peft), &TrainOptions::default(), &Silent).unwrap();
    let imported = Prompt::load(&fixture("reference/peft/plain"), tch::Device::Cpu).unwrap();
    let kept = Prompt::load(&from_peft.output_dir, tch::Device::Cpu).unwrap();
    let moved = max_abs_diff(&kept.prefix().unwrap(), &imported.prefix().unwrap());
    assert!(moved <= 1e-9, "the PEFT adapter's keys and values moved by {moved}");

    let wrong = load(second.path(), &[from, "prompt_provider.num_virtual_tokens=6".to_string()]);
    let err = format!("{:#}", train(&wrong, &backbone(&wrong), &TrainOptions::default(), &Silent).unwrap_err());
    assert!(err.contains("prompt_provider.init_from"), "{err}");
    assert!(
        err.contains("parameter 'embedding.weight' has shape [6, 256] in the prefix provider but [4, 256] was given"),
        "{err}"
    );
}
