//! Training configs: extends, overrides, the resolved values, and errors that name the key and where it was set.

use std::path::{Path, PathBuf};

use ruprompts::data::PreprocessConfig;
use ruprompts::provider::ProviderConfig;
use ruprompts::train::TrainConfig;

const BASE: &str = r#"model:
  path: tests/fixtures/tiny-gpt2-ru
dataset:
  task: terra
  dir: assets/rsg/TERRa
prompt_format:
  template: "<P*10>{premise} Вопрос: {hypothesis}? Ответ:"
preprocessing:
  kind: classification
  verbalizers: {entailment: " да", not_entailment: " нет"}
  truncation_field: premise
optimizer:
  lr: 0.1
output_dir: runs/terra
"#;

/// A folder with `base.yaml` and the given files.
fn configs(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.yaml"), BASE).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn error(dir: &Path, name: &str, overrides: &[&str]) -> (String, PathBuf) {
    let path = dir.join(name);
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    (format!("{:#}", TrainConfig::load(&path, &overrides).unwrap_err()), path)
}

#[test]
fn extends_and_overrides_resolve_with_defaults() {
    let child = "extends: base.yaml\ntraining:\n  batch_size: 4\noptimizer:\n  weight_decay: 0.0\n";
    let dir = configs(&[("child.yaml", child)]);
    let overrides = ["training.max_steps=5".to_string(), "prompt_format.template='<P*20>{premise}'".to_string()];
    let config = TrainConfig::load(&dir.path().join("child.yaml"), &overrides).unwrap();
    assert_eq!(config.training.batch_size, 4);
    assert_eq!(config.training.max_steps, Some(5));
    assert_eq!(config.training.max_grad_norm, Some(1.0));
    assert_eq!(config.optimizer.lr, 0.1);
    assert_eq!(config.optimizer.weight_decay, 0.0);
    assert_eq!(config.optimizer.betas, (0.9, 0.999));
    assert_eq!(config.prompt_format.template, "<P*20>{premise}");
    assert_eq!(config.prompt_provider.provider, ProviderConfig::default());
    assert!(
        matches!(&config.preprocessing, PreprocessConfig::Classification { verbalizers, .. } if verbalizers["entailment"] == " да")
    );
    // The resolved config reads back to the same values.
    let text = serde_yaml::to_string(&config).unwrap();
    std::fs::write(dir.path().join("resolved.yaml"), text).unwrap();
    assert_eq!(TrainConfig::load(&dir.path().join("resolved.yaml"), &[]).unwrap(), config);
}

#[test]
fn bad_keys_types_and_missing_keys_name_the_key_and_line() {
    let dir = configs(&[
        ("typo.yaml", "extends: base.yaml\ntraining:\n  batch_size: 4\n  lerning_rate: 3\n"),
        ("type.yaml", "extends: base.yaml\ntraining:\n  batch_size: many\n"),
        ("kind.yaml", "extends: base.yaml\noptimizer:\n  betas: [0.9, 0.99]\nprompt_provider:\n  kind: gru\n"),
        ("field.yaml", "extends: base.yaml\nprompt_provider:\n  kind: lstm\n  hiden_dim: 3\n"),
        ("nolr.yaml", &BASE.replace("  lr: 0.1", "  weight_decay: 0.0")),
        ("noout.yaml", &BASE.replace("output_dir: runs/terra\n", "")),
        ("syntax.yaml", "model:\n  path: [a\n"),
        ("cycle1.yaml", "extends: cycle2.yaml\n"),
        ("cycle2.yaml", "extends: cycle1.yaml\n"),
    ]);
    let d = dir.path();
    let (err, path) = error(d, "typo.yaml", &[]);
    assert!(
        err.starts_with(&format!(
            "{}:4: `training.lerning_rate`: unknown field `lerning_rate`, expected one of `batch_size`",
            path.display()
        )),
        "{err}"
    );
    let (err, path) = error(d, "type.yaml", &[]);
    assert_eq!(
        err,
        format!("{}:3: `training.batch_size`: invalid type: string \"many\", expected usize", path.display())
    );
    let (err, path) = error(d, "kind.yaml", &[]);
    assert_eq!(
        err,
        format!(
            "{}:4: `prompt_provider`: unknown variant `gru`, expected one of `tensor`, `lstm`, `mlp`, `prefix`",
            path.display()
        )
    );
    // The provider's options sit beside `init_from` (serde's flatten): errors name the section's line.
    let (err, path) = error(d, "field.yaml", &[]);
    assert_eq!(
        err,
        format!(
            "{}:2: `prompt_provider`: unknown field `hiden_dim`, expected one of `hidden_dim`, `input_dim`, \
             `num_layers`",
            path.display()
        )
    );
    let (err, path) = error(d, "nolr.yaml", &[]);
    assert_eq!(err, format!("{}:12: `optimizer`: missing field `lr`", path.display()));
    let (err, path) = error(d, "noout.yaml", &[]);
    assert_eq!(err, format!("{}: missing field `output_dir`", path.display()));
    let (err, path) = error(d, "syntax.yaml", &[]);
    assert!(err.starts_with(&format!("{}:3:1: did not find expected ',' or ']'", path.display())), "{err}");
    let (err, _) = error(d, "cycle1.yaml", &[]);
    assert!(err.ends_with("cycle1.yaml: `extends` makes a cycle back to itself"), "{err}");

    let (err, _) = error(d, "base.yaml", &["training.batch_size=x"]);
    assert_eq!(err, "command-line override `training.batch_size=x`: `training.batch_size`: invalid type: string \"x\", expected usize");
    let (err, _) = error(d, "base.yaml", &["training"]);
    assert_eq!(err, "override `training` is not key=value");
    let (err, _) = error(d, "base.yaml", &["output_dir.x=1"]);
    assert_eq!(err, "override `output_dir.x=1`: `output_dir` is not a mapping");
    let (err, _) = error(d, "missing.yaml", &[]);
    assert!(err.starts_with(&format!("cannot read config {}", d.join("missing.yaml").display())), "{err}");
}

#[test]
fn russian_superglue_folders_load_as_distributed() {
    use ruprompts::task::RsgTask;
    use ruprompts::train::DatasetConfig;
    let rsg = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/rsg");
    let load = |task, dir: &str| {
        DatasetConfig { task: Some(task), dir: Some(rsg.join(dir)), ..Default::default() }.load().unwrap()
    };
    // RCB: two train rows spell `negation` as `no_negation` upstream; every row has `negation` after loading.
    let rcb = load(RsgTask::Rcb, "RCB");
    assert_eq!((rcb.train.len(), rcb.validation.len()), (438, 220));
    assert!(rcb.train.iter().all(|r| r.row.contains_key("negation") && !r.row.contains_key("no_negation")));
    // DaNetQA has CRLF line endings; labels are booleans.
    let danetqa = load(RsgTask::Danetqa, "DaNetQA");
    assert_eq!((danetqa.train.len(), danetqa.validation.len()), (1065, 821));
    assert!(danetqa
        .train
        .iter()
        .all(|r| r.row["label"].is_boolean() && !r.row["question"].as_str().unwrap().ends_with('\r')));
    assert_eq!(danetqa.train[4].origin.line, 5);

    let err = DatasetConfig { task: Some(RsgTask::Terra), ..Default::default() }.load().unwrap_err().to_string();
    assert_eq!(err, "dataset.task needs dataset.dir (the folder holding train.jsonl and val.jsonl) or dataset.train");
}

#[test]
fn a_model_path_that_is_neither_a_folder_nor_a_hub_id_is_named() {
    let dir = configs(&[]);
    let path = dir.path().join("base.yaml");
    let config = TrainConfig::load(&path, &["model.path=./no/such/model".to_string()]).unwrap();
    let err = ruprompts::resolve::model_dir(&config.model, &ruprompts::progress::Silent).unwrap_err().to_string();
    assert_eq!(err, "no folder ./no/such/model (model.path, --model), and it is no Hub id (owner/name)");
}

#[test]
fn values_out_of_range_are_refused_on_load_naming_the_key_and_where_it_was_set() {
    let dir = configs(&[("zero.yaml", "extends: base.yaml\ntraining:\n  batch_size: 4\n  save_every: 0\n")]);
    let d = dir.path();
    let (err, path) = error(d, "zero.yaml", &[]);
    assert_eq!(err, format!("{}:4: `training.save_every`: must be at least 1 (0 given)", path.display()));
    let cases = [
        ("training.eval_every=0", "`training.eval_every`: must be at least 1 (0 given)"),
        ("training.log_every=0", "`training.log_every`: must be at least 1 (0 given)"),
        ("training.batch_size=0", "`training.batch_size`: must be at least 1 (0 given)"),
        ("training.grad_accumulation=0", "`training.grad_accumulation`: must be at least 1 (0 given)"),
        ("training.max_steps=0", "`training.max_steps`: must be at least 1 (0 given)"),
        ("training.save_total_limit=0", "`training.save_total_limit`: must be at least 1 (0 given)"),
        ("preprocessing.max_tokens=0", "`preprocessing.max_tokens`: must be at least 1 (0 given)"),
        ("training.max_grad_norm=0", "`training.max_grad_norm`: must be a positive number or null, not 0"),
        ("optimizer.lr=.nan", "`optimizer.lr`: must be a positive number, not NaN"),
        ("optimizer.lr=-0.1", "`optimizer.lr`: must be a positive number, not -0.1"),
        ("optimizer.lr=.inf", "`optimizer.lr`: must be a positive number, not inf"),
        ("optimizer.betas=[0.9, 1.0]", "`optimizer.betas`: beta2 must be in [0, 1), not 1"),
        ("optimizer.betas=[-0.1, 0.9]", "`optimizer.betas`: beta1 must be in [0, 1), not -0.1"),
        ("optimizer.eps=0", "`optimizer.eps`: must be a positive number, not 0"),
        ("optimizer.weight_decay=-1", "`optimizer.weight_decay`: must be a number ≥ 0, not -1"),
        ("prompt_format.template=' '", "`prompt_format.template`: is empty"),
        ("fewshot.split=''", "`fewshot.split`: is empty: name a split (train) or a file"),
        ("training.early_stopping_patience=0", "`training.early_stopping_patience`: must be at least 1 (0 given)"),
        ("training.eval_metric=f1a", "`training.eval_metric`: \"f1a\" is not a metric of TERRa: use loss, accuracy"),
    ];
    for (set, reason) in cases {
        let (err, _) = error(d, "base.yaml", &[set]);
        assert_eq!(err, format!("command-line override `{set}`: {reason}"));
    }
    // objective.score is checked with the choice objective, which needs a task; without one only `loss` picks.
    let (err, _) = error(d, "base.yaml", &["objective={kind: choice, score: calibrated}"]);
    assert!(err.ends_with("`objective.score`: Calibrated cannot be trained: use sum, per_char or per_byte"), "{err}");
    let no_task = ["dataset={train: x.jsonl}"];
    let (err, _) = error(d, "base.yaml", &[&no_task[..], &["objective={kind: choice}"]].concat());
    assert!(err.ends_with("`objective.kind`: choice needs dataset.task (the candidates come from the task)"), "{err}");
    let (err, _) = error(d, "base.yaml", &[&no_task[..], &["training.eval_metric=accuracy"]].concat());
    assert!(err.ends_with("\"accuracy\" is not a metric of no dataset.task: use loss"), "{err}");
    let (err, _) = error(d, "base.yaml", &["training.max_steps=5", "scheduler.warmup_steps=10"]);
    assert_eq!(
        err,
        "command-line override `scheduler.warmup_steps=10`: `scheduler.warmup_steps`: 10 is more than \
         training.max_steps 5: the learning rate would never reach optimizer.lr"
    );
}

#[test]
fn an_override_that_replaces_a_section_is_named_for_errors_inside_it() {
    let dir = configs(&[]);
    // The base file sets optimizer.lr on its line 13; the override replaces the whole section.
    let (err, _) = error(dir.path(), "base.yaml", &["optimizer={lr: fast}"]);
    assert_eq!(
        err,
        "command-line override `optimizer={lr: fast}`: `optimizer.lr`: invalid type: string \"fast\", expected f64"
    );
}

/// A misspelt key or an unknown variant given on the command line is the override's error, not the base file's
/// line for the section it lands in.
#[test]
fn unknown_keys_and_variants_from_overrides_name_the_override() {
    let dir = configs(&[]);
    let (err, _) = error(dir.path(), "base.yaml", &["trainig.max_steps=5"]);
    assert!(
        err.starts_with("command-line override `trainig.max_steps=5`: `trainig`: unknown field `trainig`"),
        "{err}"
    );
    let (err, _) = error(dir.path(), "base.yaml", &["prompt_provider.kind=transformer"]);
    assert!(
        err.starts_with(
            "command-line override `prompt_provider.kind=transformer`: `prompt_provider`: unknown variant `transformer`"
        ),
        "{err}"
    );
}

#[test]
fn override_values_that_read_as_yaml_structure_are_taken_as_text() {
    let dir = configs(&[]);
    let path = dir.path().join("base.yaml");
    // The book's own override (docs/src/training.md): YAML would read `…Вопрос: {…}` as a mapping with a broken flow mapping inside.
    let template = "<P*20>{premise} Вопрос: {hypothesis}? Ответ:";
    let config = TrainConfig::load(&path, &[format!("prompt_format.template={template}")]).unwrap();
    assert_eq!(config.prompt_format.template, template);
    // Braces still make a mapping, and a mapping where text belongs gets a hint to quote.
    let (err, _) = error(dir.path(), "base.yaml", &["prompt_format.template={a: 1}"]);
    assert!(err.contains("invalid type: map, expected a string"), "{err}");
    assert!(err.ends_with("(override values are read as YAML: quote a text, e.g. 'key=\"1e-3\"')"), "{err}");
}
