//! `ruprompts inspect` on real training runs of the demo model: nearest vocabulary tokens, norms, and distances
//! from the start rebuilt from the run's config.

use crate::common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// Trains `provider` with `template` on the DaNetQA fixture for 20 updates at learning rate `lr` (checkpoints at
/// 10 and 20) into `dir/run`.
fn run(dir: &Path, template: &str, provider: &str, lr: &str) -> std::path::PathBuf {
    let config = dir.join("config.yaml");
    let out = dir.join("run");
    std::fs::write(
        &config,
        format!(
            r#"model: {{path: {model}, device: cpu}}
dataset: {{task: danetqa, train: {train}, validation: {train}}}
prompt_format: {{template: "{template}"}}
prompt_provider: {provider}
preprocessing: {{kind: classification, max_tokens: 256, too_long: skip}}
objective: {{kind: choice}}
optimizer: {{lr: {lr}, weight_decay: 0.0}}
scheduler: {{kind: constant}}
training: {{batch_size: 4, seed: 3, max_steps: 20, save_every: 10, final: last}}
output_dir: {out}
"#,
            model = fixture("demo-model").display(),
            train = fixture("rsg/DaNetQA/train.jsonl").display(),
            out = out.display(),
        ),
    )
    .unwrap();
    let (ok, _, stderr) = ruprompts(&["train", config.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    out
}

fn inspect_json(args: &[&str]) -> Value {
    let (ok, stdout, stderr) = ruprompts(&[&["inspect", "--json"], args].concat());
    assert!(ok, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn a_prompt_that_barely_moved_sits_on_its_starting_vocabulary_tokens() {
    // lr 1e-12: the prompt is its start, rows of the vocabulary (random ones, and the phrase's tokens), so each
    // token's nearest vocabulary token is its own row at cosine 1, and it moved ~0 from the rebuilt start.
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), "<P*3>{passage}<P>Ответ:</P>", "{kind: tensor, init: vocab}", "1e-12");
    let report = inspect_json(&[out.to_str().unwrap()]);
    let tokens = report["tokens"].as_array().unwrap();
    let tok = ruprompts::tokenizer::Tokenizer::from_dir(&fixture("demo-model")).unwrap();
    let phrase = tok.encode_ids("Ответ:").unwrap();
    assert_eq!(tokens.len(), 3 + phrase.len());
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(t["kind"], "input");
        let nearest = t["nearest"].as_array().unwrap();
        assert_eq!(nearest.len(), 5);
        assert!((nearest[0]["cosine"].as_f64().unwrap() - 1.0).abs() < 1e-9, "token {i}: {t}");
        assert!(nearest.windows(2).all(|w| w[0]["cosine"].as_f64() >= w[1]["cosine"].as_f64()), "{t}");
        assert!(t["moved"]["distance"].as_f64().unwrap() < 1e-9, "token {i}: {t}");
        let p = t["norm_percentile"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p), "{t}");
        if i >= 3 {
            assert_eq!(nearest[0]["id"].as_i64().unwrap(), phrase[i - 3], "the phrase's own token: {t}");
        }
    }
    let steps: Vec<u64> = report["history"].as_array().unwrap().iter().map(|m| m["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [10, 20]);
}

#[test]
fn a_trained_deep_prompt_reports_its_virtual_and_input_tokens_and_how_far_they_went() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), "{passage}<P*2>", "{kind: prefix, num_virtual_tokens: 3}", "0.1");
    let report = inspect_json(&[out.to_str().unwrap()]);
    assert_eq!(report["provider"], "prefix");
    let tokens = report["tokens"].as_array().unwrap();
    let kinds: Vec<&str> = tokens.iter().map(|t| t["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["virtual", "virtual", "virtual", "input", "input"]);
    assert!(tokens[0]["nearest"].as_array().unwrap().is_empty() && tokens[0].get("norm_percentile").is_none());
    for t in tokens {
        assert!(t["moved"]["distance"].as_f64().unwrap() > 1e-3, "training moved every token: {t}");
    }
    let history = report["history"].as_array().unwrap();
    assert!(history[1]["mean_distance"].as_f64() > history[0]["mean_distance"].as_f64(), "{history:?}");

    // The text report; a folder without a run's config says distances are unknown.
    let (ok, stdout, stderr) = ruprompts(&["inspect", out.join("checkpoint-10").to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("prefix provider, format \"{passage}<P*2>\", 5 soft tokens"), "{stdout}");
    assert!(stdout.contains("(keys and values in every layer)"), "{stdout}");
    assert!(stdout.contains("no config.yaml here (not a training run's folder)"), "{stdout}");
    let (ok, _, stderr) = ruprompts(&["inspect", dir.path().join("nowhere").to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("no folder"), "{stderr}");
}
