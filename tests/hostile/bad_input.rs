//! What a user can type or feed that is wrong: each class gets a clear error that names the culprit, nothing is
//! written or lost, and nothing panics. Config values out of range are in tests/train/config.rs, crafted pickles in
//! tests/prompt/prompt_io.rs.

use crate::common;

use std::path::Path;

use common::*;
use ruprompts::fs::DirLock;
use ruprompts::model::{Backbone, Model, ModelSource};
use ruprompts::progress::Silent;
use ruprompts::train::{train, TrainConfig, TrainOptions};
use tch::Tensor;

/// `train CONFIG OVERRIDES...` with the binary; returns (success, stderr).
fn train_cli(config: &Path, overrides: &[&str]) -> (bool, String) {
    let mut args = vec!["train", config.to_str().unwrap()];
    args.extend_from_slice(overrides);
    let (ok, _, stderr) = ruprompts(&args);
    (ok, stderr)
}

#[test]
fn nothing_is_written_before_the_config_is_valid_and_the_data_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let config = terra_config(dir.path(), &out);
    let cases: [(&[&str], &str); 4] = [
        (
            &["training.eval_every=0"],
            "command-line override `training.eval_every=0`: `training.eval_every`: must be at least 1 (0 given)",
        ),
        (&["optimizer.lr=.nan"], "`optimizer.lr`: must be a positive number, not NaN"),
        (&["dataset.train=/no/such/train.jsonl"], "/no/such/train.jsonl"),
        // 25 GB of prompt embeddings would be allocated before: the length is checked against the model first.
        (
            &["prompt_format.template=<P*99999999>{premise}"],
            "the format has 99999999 prompt tokens, more than the model's 256 positions",
        ),
    ];
    for (overrides, message) in cases {
        let (ok, stderr) = train_cli(&config, overrides);
        assert!(!ok && stderr.contains(message), "{overrides:?}: {stderr}");
        assert!(!out.exists(), "{overrides:?} left {}", out.display());
    }
}

#[test]
fn a_finished_run_is_refused_or_replaced_whole_and_a_busy_folder_is_refused() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let config = terra_config(dir.path(), &out);
    let (ok, stderr) = train_cli(&config, &["training.save_every=null"]);
    assert!(ok, "{stderr}");
    let prompt = std::fs::read(out.join("prompt_provider.safetensors")).unwrap();
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();

    // Again into the same folder: refused, and the finished run is untouched (config.yaml included).
    let (ok, stderr) = train_cli(&config, &["optimizer.lr=0.5"]);
    assert!(!ok && stderr.contains("already holds a run (config.yaml, metrics.jsonl"), "{stderr}");
    assert!(stderr.contains("replace it with --overwrite"), "{stderr}");
    assert_eq!(std::fs::read(out.join("prompt_provider.safetensors")).unwrap(), prompt);
    assert!(!std::fs::read_to_string(out.join("config.yaml")).unwrap().contains("lr: 0.5"));

    // A folder with only a metrics file (no checkpoint) counts as a run too.
    let partial = dir.path().join("partial");
    std::fs::create_dir(&partial).unwrap();
    std::fs::write(partial.join("metrics.jsonl"), "{\"step\": 1}\n").unwrap();
    let (ok, stderr) = train_cli(&config, &[&format!("output_dir={}", partial.display())]);
    assert!(!ok && stderr.contains("already holds a run (metrics.jsonl)"), "{stderr}");

    // --overwrite replaces the whole folder: no file of the old run survives.
    std::fs::write(out.join("notes.txt"), "old").unwrap();
    let (ok, stderr) = train_cli(&config, &["--overwrite", "optimizer.lr=0.5", "training.save_every=null"]);
    assert!(ok, "{stderr}");
    assert!(!out.join("notes.txt").exists());
    assert!(std::fs::read_to_string(out.join("config.yaml")).unwrap().contains("lr: 0.5"));
    assert_ne!(std::fs::read_to_string(out.join("metrics.jsonl")).unwrap(), metrics);
    assert!(!out.join(".lock").exists(), "the lock is gone with the run");
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
            .count(),
        0
    );

    // Another process writing into the folder: refused, nothing touched.
    let lock = DirLock::acquire(&out, "output_dir").unwrap();
    let (ok, stderr) = train_cli(&config, &["--overwrite"]);
    assert!(!ok && stderr.contains("is in use by another ruprompts process"), "{stderr}");
    assert!(out.join("prompt.json").is_file());
    drop(lock);

    // --resume takes overrides after the folder.
    let (ok, _, stderr) = ruprompts(&["train", "--resume", out.to_str().unwrap(), "training.max_steps=7"]);
    assert!(!ok && stderr.contains("was made for 6 steps, the config now gives 7"), "{stderr}");
    let (ok, _, stderr) = ruprompts(&["train", "--resume", out.to_str().unwrap(), "config.yaml"]);
    assert!(!ok && stderr.contains("`config.yaml` is not a KEY=VALUE override"), "{stderr}");
}

#[test]
fn a_diverging_run_stops_with_an_error_and_saves_no_prompt() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let config = TrainConfig::load(&terra_config(dir.path(), &out), &[]).unwrap();
    // The fixture model with an infinite final layer-norm weight: every logit, and so the loss, is not finite.
    let source = ModelSource::local(model_dir());
    let mut tensors = Tensor::read_safetensors(model_dir().join("model.safetensors")).unwrap();
    for (name, tensor) in &mut tensors {
        if name.ends_with("ln_f.weight") {
            *tensor = tensor.full_like(f64::INFINITY);
        }
    }
    let fixture = Backbone::load_local(&source).unwrap();
    let gpt2 = ruprompts::model::Gpt2Config::from_file(&model_dir().join("config.json")).unwrap();
    let model = Model::from_tensors(gpt2, tensors).unwrap();
    let poisoned = Backbone { model, ..fixture };
    let err = train(&config, &poisoned, &TrainOptions::default(), &Silent).unwrap_err().to_string();
    assert!(err.starts_with("update 1: the loss is NaN"), "{err}");
    assert!(err.contains("training diverged"), "{err}");
    assert!(!out.join("prompt.json").exists());
    assert!(ruprompts::train::checkpoint::list(&out).unwrap().is_empty());

    // A learning rate that is finite but overflows f32 breaks the weights themselves: stopped before any
    // checkpoint holds them (save_every 1 would save one after the first update).
    let huge = dir.path().join("huge");
    let config = TrainConfig::load(
        &terra_config(dir.path(), &huge),
        &["optimizer.lr=1e300".into(), "scheduler.warmup_steps=0".into(), "training.save_every=1".into()],
    )
    .unwrap();
    let err = train(&config, &backbone(&config), &TrainOptions::default(), &Silent).unwrap_err().to_string();
    assert!(err.starts_with("update 1: the prompt's weights are no longer finite after the update"), "{err}");
    assert!(ruprompts::train::checkpoint::list(&huge).unwrap().is_empty());
}

#[test]
fn decoding_settings_are_checked_and_a_failed_run_keeps_the_output_file() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let prompt = fixture("reference/ruprompts/prompt_tensor");
    let output = dir.path().join("out.jsonl");
    std::fs::write(&output, "{\"earlier\": \"results\"}\n").unwrap();
    let model = model_dir();
    let generate = |flags: &[&str]| {
        let mut args = vec!["generate", "--prompt", prompt.to_str().unwrap(), "--model", model.to_str().unwrap()];
        args.extend_from_slice(&["--device", "cpu", "--output", output.to_str().unwrap()]);
        if !flags.contains(&"--max-new-tokens") {
            args.extend_from_slice(&["--max-new-tokens", "4"]);
        }
        args.extend_from_slice(flags);
        args.push("Привет");
        ruprompts(&args)
    };
    let cases: [(&[&str], &str); 14] = [
        (&["--num-beams", "0"], "num_beams (--num-beams) must be at least 1 (1 = no beam search)"),
        (
            &["--num-beams", "2", "--num-return-sequences", "3"],
            "num_return_sequences (--num-return-sequences) is 3, more than num_beams (--num-beams) 2",
        ),
        (
            &["--num-beams", "2", "--do-sample"],
            "beam search with sampling (num_beams > 1 with do_sample) is not supported",
        ),
        (&["--stop", ""], "a stop string (stop_strings, --stop) is empty"),
        (
            &["--min-new-tokens", "9"],
            "min_new_tokens (--min-new-tokens) is 9, more than max_new_tokens (--max-new-tokens) 4",
        ),
        (&["--num-beams", "2", "--stream"], "--stream prints tokens as they are decoded, but beam search settles"),
        (&["--do-sample", "--top-p", "0"], "top_p (--top-p) must be in (0, 1], not 0"),
        (&["--do-sample", "--top-p", "1.5"], "top_p (--top-p) must be in (0, 1], not 1.5"),
        (&["--do-sample", "--top-k", "0"], "top_k (--top-k) must be at least 1"),
        (
            &["--do-sample", "--repetition-penalty", "0"],
            "repetition_penalty (--repetition-penalty) must be a positive number (1 = none), not 0",
        ),
        (
            &["--repetition-penalty=-1"],
            "repetition_penalty (--repetition-penalty) must be a positive number (1 = none), not -1",
        ),
        (&["--temperature", "0"], "temperature (--temperature) must be a positive number, not 0"),
        (&["--num-return-sequences", "0"], "num_return_sequences (--num-return-sequences) must be at least 1"),
        (&["--max-new-tokens", "0"], "max_new_tokens (--max-new-tokens) must be at least 1"),
    ];
    for (flags, message) in cases {
        let (ok, _, stderr) = generate(flags);
        assert!(!ok && stderr.contains(message), "{flags:?}: {stderr}");
        assert_eq!(std::fs::read_to_string(&output).unwrap(), "{\"earlier\": \"results\"}\n", "{flags:?}");
    }
    // A denormal temperature panicked in the sampler; it is greedy in the limit.
    let (ok, _, stderr) = generate(&["--do-sample", "--temperature", "1e-45", "--seed", "1"]);
    assert!(ok, "{stderr}");
    let sampled = std::fs::read_to_string(&output).unwrap();
    let (ok, _, stderr) = generate(&[]);
    assert!(ok, "{stderr}");
    assert_eq!(std::fs::read_to_string(&output).unwrap(), sampled);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file is left beside the output");
}

#[test]
fn a_mistyped_folder_is_reported_as_a_missing_folder_first() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("runs/danetqa");
    let (ok, _, stderr) = ruprompts(&["generate", "--prompt", missing.to_str().unwrap(), "Привет"]);
    assert!(!ok && stderr.contains(&format!("no folder {} (--prompt)", missing.display())), "{stderr}");
    // A relative name that reads as owner/name: the folder first, then what the Hub said (here: unreachable).
    let (ok, _, stderr) = ruprompts(&["generate", "--prompt", "runs/danetqa", "Привет"]);
    assert!(!ok && stderr.contains("no folder runs/danetqa (--prompt), and as a Hub id runs/danetqa"), "{stderr}");
    let file = dir.path().join("prompt.json");
    std::fs::write(&file, "{}").unwrap();
    let (ok, _, stderr) = ruprompts(&["generate", "--prompt", file.to_str().unwrap(), "Привет"]);
    assert!(!ok && stderr.contains(&format!("{} (--prompt) is a file, not a folder", file.display())), "{stderr}");
}

#[test]
fn input_file_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "\u{feff}{\"text\": \"Кот.\"}\n\n{\"question\": \"Где?\"}\n").unwrap();
    let prompt = fixture("reference/ruprompts/prompt_tensor");
    let (model, input_arg) = (model_dir(), input.to_str().unwrap().to_string());
    let base = ["generate", "--prompt", prompt.to_str().unwrap(), "--model", model.to_str().unwrap()];
    let (ok, _, stderr) = ruprompts(&[&base[..], &["--input", &input_arg, "--device", "cpu"]].concat());
    assert!(!ok && stderr.contains(&format!("{}:3: unknown field 'question'", input.display())), "{stderr}");
    let (ok, _, stderr) = ruprompts(&[&base[..], &["--batch-size", "0", "Кот."]].concat());
    assert!(!ok && stderr.contains("--batch-size must be at least 1"), "{stderr}");
}

#[test]
fn evaluations_that_would_score_nothing_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let test_split = dir.path().join("test.jsonl");
    let rows = ruprompts::data::read_rows(&asset("rsg/TERRa/test.jsonl.gz")).unwrap();
    let lines: String = rows.iter().take(3).map(|r| format!("{}\n", serde_json::to_string(&r.row).unwrap())).collect();
    std::fs::write(&test_split, lines).unwrap();
    let out = dir.path().join("eval");
    let model = model_dir();
    let base = ["eval", "--task", "terra", "--model", model.to_str().unwrap(), "--device", "cpu"];
    let data = ["--data", test_split.to_str().unwrap(), "--out", out.to_str().unwrap()];
    let (ok, _, stderr) = ruprompts(&[&base[..], &data, &["--limit", "0"]].concat());
    assert!(!ok && stderr.contains("--limit 0 leaves nothing to evaluate"), "{stderr}");
    let (ok, _, stderr) = ruprompts(&[&base[..], &data].concat());
    assert!(
        !ok && stderr.contains("the items have no labels (a test split?), so there is nothing to score"),
        "{stderr}"
    );
    assert!(!out.exists(), "a refused evaluation leaves no folder");
    let submission = dir.path().join("submission");
    let (ok, _, stderr) = ruprompts(&[&base[..], &data, &["--submission", submission.to_str().unwrap()]].concat());
    assert!(ok, "{stderr}");
    assert_eq!(std::fs::read_to_string(submission.join("TERRa.jsonl")).unwrap().lines().count(), 3);
}

/// An empty validation file trains (there is nothing wrong with the training data) but says that nothing will be
/// evaluated; an empty training file is refused naming it.
#[test]
fn empty_data_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let config = terra_config(dir.path(), &out);
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let validation = format!("dataset.validation={}", empty.display());
    let (ok, stderr) = train_cli(&config, &[&validation, "training.max_steps=2"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(&format!("validation: {} has no rows, so training runs without evaluation", empty.display())),
        "{stderr}"
    );
    let train = format!("dataset.train={}", empty.display());
    let (ok, stderr) = train_cli(&config, &[&train, "output_dir=/nonexistent/never"]);
    assert!(!ok && stderr.contains(&format!("{}: the training data has no rows", empty.display())), "{stderr}");
}
