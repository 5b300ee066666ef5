//! int8 weights (`--quantize int8`): log-probs close to f32's on GPT-2 and the Llama family, the same choices on the
//! demo model's TERRa sample, and training refused with the key named.

mod common;

use common::*;
use ruprompts::model::{Input, Model, Quantize};
use tch::{Device, Kind, Tensor};

fn log_probs(model: &Model, ids: &Tensor) -> Tensor {
    tch::no_grad(|| model.lm_logits(&model.forward(Input::Ids(ids), None, None).unwrap()).log_softmax(-1, Kind::Float))
}

/// The largest |Δ log p| of the next token over every position of a Russian text, int8 against f32: the whole
/// text (more rows than the int8 kernel takes: the dense path) and its first 12 tokens (the int8 kernel's path).
fn max_delta(folder: &std::path::Path) -> f64 {
    init();
    let tok = ruprompts::tokenizer::Tokenizer::from_dir(folder).unwrap();
    let text = "Сегодня в Москве весь день шёл сильный дождь, и кот спал на тёплом окне.";
    let ids = Tensor::from_slice(&tok.encode_sequence_ids(text).unwrap()).unsqueeze(0);
    let dense = Model::from_dir(folder, Kind::Float, Device::Cpu).unwrap();
    let mut int8 = Model::from_dir(folder, Kind::Float, Device::Cpu).unwrap();
    int8.quantize(Quantize::Int8).unwrap();
    assert_eq!(int8.quantized(), Quantize::Int8);
    assert!(ids.size()[1] > 16);
    let mut worst: f64 = 0.0;
    for ids in [ids.shallow_clone(), ids.narrow(1, 0, 12)] {
        let (a, b) = (log_probs(&dense, &ids), log_probs(&int8, &ids));
        // Only the tokens that occur: the model's own next-token log-probs.
        let next = ids.narrow(1, 1, ids.size()[1] - 1).unsqueeze(-1);
        let pick = |t: &Tensor| t.narrow(1, 0, ids.size()[1] - 1).gather(2, &next, false);
        let delta = (pick(&a) - pick(&b)).abs().max().double_value(&[]);
        assert!(delta > 0.0, "{}: int8 changed nothing", folder.display());
        worst = worst.max(delta);
    }
    worst
}

#[test]
fn int8_log_probs_stay_close_to_f32() {
    for folder in ["demo-model", "tiny-gpt2-ru", "llama-family/tiny-llama", "llama-family/tiny-qwen2"] {
        let delta = max_delta(&fixture(folder));
        eprintln!("{folder}: max |Δ log p| {delta}");
        // Measured: demo 0.021, tiny-gpt2-ru 0.003, tiny-llama 0.083, tiny-qwen2 0.077 (random weights of std 0.15).
        let bound = if folder == "demo-model" { 0.05 } else { 0.15 };
        assert!(delta < bound, "{folder}: {delta}");
    }
}

/// The answer log-probs of every item in an evaluation's score cache, by item.
fn cached_scores(out: &std::path::Path) -> std::collections::BTreeMap<u64, Vec<f64>> {
    let text = std::fs::read_to_string(out.join("cache/TERRa-zero-shot.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|r| {
            let scores = r["result"]["candidates"].as_array().unwrap();
            (r["item"].as_u64().unwrap(), scores.iter().map(|c| c["answer_logprob"].as_f64().unwrap()).collect())
        })
        .collect()
}

/// `ruprompts eval --quantize int8` on the demo model's first 64 TERRa validation items: every answer log-prob
/// within 0.06 of f32's and the same choice on every item (measured: 0.030, 64 of 64); the int8 run does not reuse
/// the f32 run's cached scores in the same folder, and its report names the weights.
#[test]
fn int8_evaluation_chooses_as_f32_and_keeps_its_own_cache() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("eval");
    let demo = fixture("demo-model");
    let data = repo().join("assets/rsg/TERRa/val.jsonl.gz");
    let mut scores = Vec::new();
    for quantize in ["none", "int8"] {
        let args = [
            "eval",
            "--task",
            "terra",
            "--model",
            demo.to_str().unwrap(),
            "--device",
            "cpu",
            "--data",
            data.to_str().unwrap(),
            "--limit",
            "64",
            "--quantize",
            quantize,
            "--out",
            out.to_str().unwrap(),
        ];
        let (ok, _, stderr) = ruprompts(&args);
        assert!(ok, "{quantize}: {stderr}");
        scores.push(cached_scores(&out));
    }
    let (dense, int8) = (&scores[0], &scores[1]);
    assert_eq!(dense.len(), 64);
    let mut delta: f64 = 0.0;
    for (item, a) in dense {
        let b = &int8[item];
        delta = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(delta, f64::max);
        assert_eq!(a[0] > a[1], b[0] > b[1], "item {item}: {a:?} vs {b:?}");
    }
    assert!(delta > 0.0 && delta <= 0.06, "max |Δ| {delta}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert!(report["model"].as_str().unwrap().ends_with("demo-model (int8)"), "{}", report["model"]);
}

/// Training refuses int8 weights, naming the key, before anything loads.
#[test]
fn training_refuses_quantized_weights() {
    let dir = tempfile::tempdir().unwrap();
    let config = repo().join("examples/configs/danetqa.yaml");
    let (ok, _, stderr) = ruprompts(&[
        "train",
        config.to_str().unwrap(),
        &format!("model.path={}", fixture("demo-model").display()),
        &format!("output_dir={}", dir.path().join("run").display()),
        "model.quantize=int8",
    ]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("model.quantize") && stderr.contains("int8 weights are for scoring, generation and serving"),
        "{stderr}"
    );
    assert!(!dir.path().join("run").exists(), "a refused run leaves no folder");
}
