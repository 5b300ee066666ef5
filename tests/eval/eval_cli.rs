//! End to end: a prompt trained on the tiny model for TERRa, then `ruprompts eval --config` writes the
//! zero-shot vs tuned report, and `--submission` the official file for the test split; a text2text prompt is
//! evaluated by generation (chrF, BLEU).

use crate::common;

use std::process::Command;

use common::*;
use ruprompts::data::read_rows;
use ruprompts::eval::{overlap, Report, PREDICTIONS_FILE, REPORT_JSON, REPORT_MD, REPORT_SVG};
use ruprompts::progress::Silent;
use ruprompts::task::ScoreMode;
use ruprompts::train::TrainConfig;
use ruprompts::train::{train, TrainOptions};
use serde_json::Value;

#[test]
fn train_then_report_zero_shot_vs_tuned() {
    init();
    let dir = tempfile::tempdir().unwrap();
    small_terra(dir.path(), &[("train", 64), ("val", 40), ("test", 10)]);
    let config_path = dir.path().join("terra.yaml");
    std::fs::write(
        &config_path,
        format!(
            r#"model: {{path: {model}, device: cpu}}
dataset: {{task: terra, dir: {data}}}
prompt_format: {{template: "<P*4>{{premise}}<P*2>Вопрос: {{hypothesis}}? Ответ:"}}
preprocessing:
  kind: classification
  verbalizers: {{entailment: " да", not_entailment: " нет"}}
  truncation_field: premise
  max_tokens: 200
optimizer: {{lr: 0.1, weight_decay: 0.0}}
training: {{batch_size: 8, max_steps: 16, eval_every: null, save_every: null, seed: 3}}
output_dir: {out}
"#,
            model = model_dir().display(),
            data = dir.path().display(),
            out = dir.path().join("run").display()
        ),
    )
    .unwrap();
    let config = TrainConfig::load(&config_path, &[]).unwrap();
    // Demonstrations are solved items of a task: without one, fewshot.k is refused, not ignored.
    let train_file = format!("dataset={{train: {}}}", dir.path().join("train.jsonl").display());
    let fewshot = TrainConfig::load(&config_path, &["fewshot.k=2".into(), train_file]).unwrap();
    let err = train(&fewshot, &backbone(&config), &TrainOptions::default(), &Silent).unwrap_err().to_string();
    assert!(err.starts_with("`fewshot.k`: demonstrations are solved items of a task"), "{err}");
    let trained = train(&config, &backbone(&config), &TrainOptions::default(), &Silent).unwrap();

    let eval = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ruprompts"))
            .args([&["eval", "--config", config_path.to_str().unwrap(), "--device", "cpu"][..], extra].concat())
            .env("OMP_NUM_THREADS", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let printed = eval(&[]);
    let out = dir.path().join("run/eval");
    let report: Report = serde_json::from_str(&std::fs::read_to_string(out.join(REPORT_JSON)).unwrap()).unwrap();
    let t = &report.tasks[0];
    assert_eq!((t.task.as_str(), t.items, t.trainable_parameters), ("TERRa", 40, Some(trained.trainable_parameters)));
    assert_eq!(t.tuned_format.as_deref(), Some("<P*4>{premise}<P*2>Вопрос: {hypothesis}? Ответ:"));
    let m = &t.metrics[0];
    assert_eq!(m.metric, "accuracy");
    let tuned = m.tuned.unwrap();
    // Accuracies over 40 items are multiples of 1/40; the delta is their difference.
    for v in [m.zero_shot, tuned] {
        assert!((v * 40.0 - (v * 40.0).round()).abs() < 1e-9 && (0.0..=1.0).contains(&v), "{v}");
    }
    assert!((m.delta.unwrap() - (tuned - m.zero_shot)).abs() < 1e-12);
    // Error bars: the bootstrap stderr of an accuracy is close to the binomial sqrt(p(1 − p)/n); the paired
    // interval holds the difference; majority and chance are the gold's largest share and 1/2.
    for (v, e) in [(m.zero_shot, m.zero_shot_stderr.unwrap()), (tuned, m.tuned_stderr.unwrap())] {
        let binomial = (v * (1.0 - v) / 40.0).sqrt();
        assert!((e - binomial).abs() <= 0.15 * binomial + 1e-9, "stderr {e} vs binomial {binomial}");
    }
    let (lo, hi) = m.delta_interval.unwrap();
    assert!(lo <= m.delta.unwrap() && m.delta.unwrap() <= hi, "{lo} {hi}");
    let golds: Vec<bool> =
        read_rows(&dir.path().join("val.jsonl")).unwrap().iter().map(|r| r.row["label"] == "entailment").collect();
    let share = golds.iter().filter(|&&g| g).count() as f64 / 40.0;
    assert_eq!(m.majority, Some(share.max(1.0 - share)));
    assert!((m.chance.unwrap() - 0.5).abs() < 0.05, "{:?}", m.chance);
    let markdown = std::fs::read_to_string(out.join(REPORT_MD)).unwrap();
    let significant = if lo > 0.0 || hi < 0.0 { " *" } else { "" };
    let row = format!(
        "| TERRa | accuracy | {:.3} ± {:.3} | {tuned:.3} ± {:.3} | {:+.3} [{lo:+.3}, {hi:+.3}]{significant} | {:.3} | {:.3} | {} | 40 |",
        m.zero_shot,
        m.zero_shot_stderr.unwrap(),
        m.tuned_stderr.unwrap(),
        tuned - m.zero_shot,
        m.majority.unwrap(),
        m.chance.unwrap(),
        trained.trainable_parameters
    );
    assert!(markdown.contains(&row), "{markdown}");
    assert!(printed.contains(&row), "{printed}");
    assert!(std::fs::read_to_string(out.join(REPORT_SVG)).unwrap().starts_with("<svg"));

    // --log-samples with a 2-shot setting: a line per item with, per setting, the context as scored, every
    // candidate's score in every mode and the predictions; every figure of the report follows from it.
    eval(&["--log-samples", "--num-fewshot", "0,2", "--fewshot-sampler", "balanced", "--tuned-fewshot"]);
    let report: Report = serde_json::from_str(&std::fs::read_to_string(out.join(REPORT_JSON)).unwrap()).unwrap();
    let settings = &report.tasks[0].settings;
    let names: Vec<&str> = settings.iter().map(|s| s.setting.as_str()).collect();
    assert_eq!(names, ["zero-shot", "2-shot", "tuned+2-shot", "tuned"]);
    let samples: Vec<Value> = std::fs::read_to_string(out.join("samples/TERRa.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(samples.len(), 40);
    let train: Vec<String> = read_rows(&dir.path().join("train.jsonl"))
        .unwrap()
        .iter()
        .map(|r| r.row["premise"].as_str().unwrap().into())
        .collect();
    for setting in settings {
        for mode in ScoreMode::ALL {
            let mut right = 0;
            for line in &samples {
                let s = &line[setting.setting.as_str()];
                let scores: Vec<f64> =
                    s["scores"][mode.name()].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                let best = if scores[1] > scores[0] { 1 } else { 0 };
                assert_eq!(s["predictions"][mode.name()], best);
                right += usize::from(s["predictions"][mode.name()] == line["gold"]);
            }
            let reported = setting.scores.iter().find(|m| m.mode == mode.name()).unwrap();
            assert_eq!((reported.metric.as_str(), reported.value), ("accuracy", right as f64 / 40.0));
            assert!(reported.stderr > 0.0);
        }
    }
    for line in &samples {
        assert_eq!(line["candidates"], serde_json::json!([" да", " нет"]));
        assert_eq!(line["zero-shot"]["prediction"], line["zero-shot"]["predictions"]["sum"]);
        // The tuned context holds the prompt's 6 tokens (<P*4> and <P*2>), the others none; the 2-shot one is two
        // solved train items ("... Ответ: да") and the zero-shot context, each followed by a blank line, less the
        // demonstrations dropped to fit the model's 256 positions.
        assert_eq!(line["tuned"]["context"].as_str().unwrap().matches("<P>").count(), 6);
        // Tuned + 2-shot: the prompt around each demonstration it kept, and around the item.
        let around = &line["tuned+2-shot"];
        let kept = 2 - around["dropped_shots"].as_u64().unwrap() as usize;
        assert_eq!(around["context"].as_str().unwrap().matches("<P>").count(), 6 * (kept + 1));
        let zero = line["zero-shot"]["context"].as_str().unwrap();
        let two = line["2-shot"]["context"].as_str().unwrap();
        let demos: Vec<&str> = two.strip_suffix(zero).unwrap().split_terminator("\n\n").collect();
        assert_eq!(demos.len() as u64 + line["2-shot"]["dropped_shots"].as_u64().unwrap(), 2, "{two}");
        for demo in demos {
            assert!(demo.ends_with("Ответ: да") || demo.ends_with("Ответ: нет"), "{demo}");
            assert!(train.iter().any(|p| demo.starts_with(p.as_str())), "{demo}");
        }
    }
    let markdown = std::fs::read_to_string(out.join(REPORT_MD)).unwrap();
    assert!(markdown.contains("| TERRa | 2-shot | accuracy |"), "{markdown}");

    // The test split has no labels: no metrics, but a submission file with every idx.
    let submission = dir.path().join("submission");
    let test = dir.path().join("test.jsonl");
    eval(&[
        "--data",
        test.to_str().unwrap(),
        "--out",
        dir.path().join("test-eval").to_str().unwrap(),
        "--submission",
        submission.to_str().unwrap(),
    ]);
    let lines: Vec<Value> = std::fs::read_to_string(submission.join("TERRa.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<Value> = std::fs::read_to_string(&test)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["idx"].clone())
        .collect();
    assert_eq!(lines.iter().map(|l| l["idx"].clone()).collect::<Vec<_>>(), ids);
    assert!(lines.iter().all(|l| l["label"] == "entailment" || l["label"] == "not_entailment"));

    // Without a trained prompt the error says what to run.
    let untrained = Command::new(env!("CARGO_BIN_EXE_ruprompts"))
        .args(["eval", "--config", config_path.to_str().unwrap(), "output_dir=/nonexistent"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&untrained.stderr);
    assert!(err.contains("no trained prompt in /nonexistent (output_dir): run `ruprompts train"), "{err}");
}

#[test]
fn text2text_configs_are_evaluated_by_generation_with_chrf_and_bleu() {
    init();
    let dir = tempfile::tempdir().unwrap();
    // 24 informal → polite pairs to train on, 12 to evaluate (tests/fixtures/text2text, written for these tests).
    let data = fixture("text2text");
    let config_path = dir.path().join("polite.yaml");
    std::fs::write(
        &config_path,
        format!(
            r#"model: {{path: {model}, device: cpu}}
dataset: {{train: {data}/train.tsv, validation: {data}/dev.tsv}}
prompt_format: {{template: "<P*4>{{informal}}<P*2>"}}
preprocessing: {{kind: text2text, target_field: polite, truncation_field: informal, max_tokens: 160}}
optimizer: {{lr: 0.1}}
training: {{batch_size: 4, max_steps: 4, eval_every: null, save_every: null}}
output_dir: {d}/run
"#,
            model = model_dir().display(),
            data = data.display(),
            d = dir.path().display()
        ),
    )
    .unwrap();
    let config = TrainConfig::load(&config_path, &[]).unwrap();
    train(&config, &backbone(&config), &TrainOptions::default(), &Silent).unwrap();
    let eval_into = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let result = Command::new(env!("CARGO_BIN_EXE_ruprompts"))
            .args(["eval", "--config", config_path.to_str().unwrap(), "--max-new-tokens", "8", "--batch-size", "5"])
            .args(["--out", out.to_str().unwrap()])
            .args(extra)
            .env("OMP_NUM_THREADS", "1")
            .output()
            .unwrap();
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        let report = std::fs::read_to_string(out.join(REPORT_JSON)).ok();
        let report = report.map(|r| serde_json::from_str::<Report>(&r).unwrap());
        (report, std::fs::read_to_string(out.join(PREDICTIONS_FILE)).ok(), String::from_utf8(result.stdout).unwrap())
    };
    let eval = |extra: &[&str]| {
        let (report, predictions, _) = eval_into("run/eval", extra);
        (report.unwrap(), predictions.unwrap())
    };
    let (report, predictions) = eval(&[]);
    let lines: Vec<Value> = predictions.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 12);
    let dev = read_rows(&data.join("dev.tsv")).unwrap();
    let field = |name: &str| dev.iter().map(|r| r.row[name].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let (sources, references) = (field("informal"), field("polite"));
    let generated: Vec<String> = lines.iter().map(|l| l["prediction"].as_str().unwrap().to_string()).collect();
    assert_eq!(lines.iter().map(|l| l["reference"].as_str().unwrap()).collect::<Vec<_>>(), references);
    let t = &report.tasks[0];
    assert_eq!((t.task.as_str(), t.items), ("polite", 12));
    let [chrf_row, bleu_row] = &t.metrics[..] else { panic!("{:?}", t.metrics) };
    assert_eq!((chrf_row.metric.as_str(), bleu_row.metric.as_str()), ("chrf", "bleu"));
    // Zero-shot is the bare model on the format without its trainable tokens (here the informal text alone), and
    // giving the input back unchanged is the baseline beside it.
    let bare: Vec<String> = lines.iter().map(|l| l["zero_shot"].as_str().unwrap().to_string()).collect();
    assert_eq!(t.zero_shot_format, "{informal}");
    assert_eq!(chrf_row.zero_shot, overlap::chrf(&bare, &references));
    assert_eq!(chrf_row.copy_input, Some(overlap::chrf(&sources, &references)));
    assert_eq!(bleu_row.copy_input, Some(overlap::bleu(&sources, &references)));
    assert_eq!(chrf_row.tuned, Some(overlap::chrf(&generated, &references)));
    assert_eq!(bleu_row.tuned, Some(overlap::bleu(&generated, &references)));
    let (ok, stdout, stderr) =
        ruprompts(&["generate", "--model", model_dir().to_str().unwrap(), "--max-new-tokens", "8", &sources[0]]);
    assert!(ok, "{stderr}");
    let line: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["generated"][0].as_str().unwrap().trim(), bare[0], "the bare model, as `generate` runs it");
    // A second run takes every prediction from the cache: same report, same file.
    assert_eq!(eval(&[]), (report.clone(), predictions.clone()));
    // Two shards (every other row each), then the merge: the same report and predictions.
    for shard in ["0/2", "1/2"] {
        let (report, _, stdout) = eval_into("sharded", &["--shard", shard]);
        assert!(report.is_none() && stdout.contains(&format!("shard {shard}: its results are in")), "{stdout}");
    }
    let (merged, merged_predictions, _) = eval_into("sharded", &["--merge"]);
    assert_eq!((merged.unwrap(), merged_predictions.unwrap()), (report, predictions));
    // Beam search, as `generate` decodes it: the prediction is the best beam (the cache is keyed by the settings).
    let (_, beamed) = eval(&["--num-beams", "3", "--no-repeat-ngram-size", "2"]);
    let first: Value = serde_json::from_str(beamed.lines().next().unwrap()).unwrap();
    let field = format!("informal={}", sources[0]);
    let args = ["generate", "--prompt", "run", "--max-new-tokens", "8", "--num-beams", "3", "--no-repeat-ngram-size"];
    let out = Command::new(env!("CARGO_BIN_EXE_ruprompts"))
        .current_dir(dir.path())
        .args(args)
        .args(["2", "--field", &field])
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first["prediction"].as_str().unwrap(), line["generated"][0].as_str().unwrap().trim());
}

#[test]
fn shards_that_do_not_exist_or_have_not_run_are_refused() {
    let task = repo().join("examples/tasks/sentiment.yaml");
    let (model, out) = (model_dir(), tempfile::tempdir().unwrap());
    let base = ["eval", "--task-file", task.to_str().unwrap(), "--model", model.to_str().unwrap(), "--out"];
    let base = [&base[..], &[out.path().to_str().unwrap()]].concat();
    for (extra, message) in [
        (&["--shard", "2/2"][..], "shard 2 of 2 does not exist: shards run from 0 to 1"),
        (&["--shard", "half"], "`half` is not a shard: write i/n, e.g. 0/4 for the first of 4"),
        (&["--shard", "0/2", "--merge"], "cannot be used with"),
        (&["--merge"], "holds no shards: run each with --shard i/n first"),
    ] {
        let (ok, _, stderr) = ruprompts(&[&base[..], extra].concat());
        assert!(!ok && stderr.contains(message), "{extra:?}: {stderr}");
    }
}

#[test]
fn decoding_flags_are_refused_where_nothing_is_generated() {
    let task = repo().join("examples/tasks/sentiment.yaml");
    let model = model_dir();
    let args = ["eval", "--task-file", task.to_str().unwrap(), "--model", model.to_str().unwrap(), "--num-beams", "2"];
    let (ok, _, stderr) = ruprompts(&args);
    assert!(
        !ok && stderr.contains("the decoding flags (--max-new-tokens, --num-beams, ...) apply to text-to-text"),
        "{stderr}"
    );
}
