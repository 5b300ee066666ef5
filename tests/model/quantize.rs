//! int8 and int4 weights (`--quantize`): log-probs close to f32's on GPT-2 and the Llama family, the same choices on
//! the demo model's TERRa sample, widths int4 cannot group refused with nothing changed, and training refused with
//! the key named.

use crate::common;

use common::*;
use ruprompts::model::{Input, Model, Quantize};
use tch::{Device, Kind, Tensor};

fn log_probs(model: &Model, ids: &Tensor) -> Tensor {
    tch::no_grad(|| model.lm_logits(&model.forward(Input::Ids(ids), None, None).unwrap()).log_softmax(-1, Kind::Float))
}

/// The largest |Δ log p| of the next token over every position of a Russian text, quantized `to` against f32:
/// the whole text (more rows than the int8 kernel takes: the dense path) and its first 12 tokens (the kernel's).
fn max_delta(folder: &std::path::Path, to: Quantize) -> f64 {
    init();
    let tok = ruprompts::tokenizer::Tokenizer::from_dir(folder).unwrap();
    let text = "Сегодня в Москве весь день шёл сильный дождь, и кот спал на тёплом окне.";
    let ids = Tensor::from_slice(&tok.encode_sequence_ids(text).unwrap()).unsqueeze(0);
    let dense = Model::from_dir(folder, Kind::Float, Device::Cpu).unwrap();
    let mut int8 = Model::from_dir(folder, Kind::Float, Device::Cpu).unwrap();
    int8.quantize(to).unwrap();
    assert_eq!(int8.quantized(), to);
    assert!(ids.size()[1] > 16);
    let mut worst: f64 = 0.0;
    for ids in [ids.shallow_clone(), ids.narrow(1, 0, 12)] {
        let (a, b) = (log_probs(&dense, &ids), log_probs(&int8, &ids));
        // Only the tokens that occur: the model's own next-token log-probs.
        let next = ids.narrow(1, 1, ids.size()[1] - 1).unsqueeze(-1);
        let pick = |t: &Tensor| t.narrow(1, 0, ids.size()[1] - 1).gather(2, &next, false);
        let delta = (pick(&a) - pick(&b)).abs().max().double_value(&[]);
        assert!(delta > 0.0, "{}: {to} changed nothing", folder.display());
        worst = worst.max(delta);
    }
    worst
}

#[test]
fn quantized_log_probs_stay_close_to_f32() {
    for folder in ["demo-model", "tiny-gpt2-ru", "llama-family/tiny-llama", "llama-family/tiny-qwen2"] {
        let int8 = max_delta(&fixture(folder), Quantize::Int8);
        let int4 = max_delta(&fixture(folder), Quantize::Int4);
        eprintln!("{folder}: max |Δ log p| int8 {int8}, int4 {int4}");
        // Measured: int8 demo 0.021, tiny-gpt2-ru 0.003, tiny-llama 0.083, tiny-qwen2 0.077 (random weights of
        // std 0.15); int4 demo 0.181, tiny-gpt2-ru 0.045, tiny-llama 0.881, tiny-qwen2 1.434.
        let (bound8, bound4) = if folder == "demo-model" { (0.05, 0.4) } else { (0.15, 2.5) };
        assert!(int8 < bound8 && int4 < bound4, "{folder}: int8 {int8}, int4 {int4}");
        assert!(int4 > int8, "{folder}: int4 keeps fewer bits, so it moves log-probs more");
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

/// `ruprompts eval --quantize int8` and `int4` on the demo model's first 64 TERRa validation items: every answer
/// log-prob within 0.06 (int8) or 0.4 (int4) of f32's and the same choice on every item; a quantized run does not
/// reuse the other runs' cached scores in the same folder, and its report names the weights.
#[test]
fn quantized_evaluation_chooses_as_f32_and_keeps_its_own_cache() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("eval");
    let demo = fixture("demo-model");
    let data = repo().join("assets/rsg/TERRa/val.jsonl.gz");
    let mut scores = Vec::new();
    for quantize in ["none", "int8", "int4"] {
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
    // Measured: int8 0.030, int4 0.187; every choice the same.
    for (q, bound) in [(&scores[1], 0.06), (&scores[2], 0.4)] {
        assert_eq!(q.len(), 64);
        let mut delta: f64 = 0.0;
        for (item, a) in &scores[0] {
            let b = &q[item];
            delta = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(delta, f64::max);
            assert_eq!(a[0] > a[1], b[0] > b[1], "item {item}: {a:?} vs {b:?}");
        }
        assert!(delta > 0.0 && delta <= bound, "max |Δ| {delta}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert!(report["model"].as_str().unwrap().ends_with("demo-model (int4)"), "{}", report["model"]);
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

/// int4 groups 32 inputs: a model 48 wide is refused with the way out, and left as it was (f32, same logits).
#[test]
fn int4_refuses_widths_it_cannot_group_and_changes_nothing() {
    init();
    let mut config = ruprompts::model::Gpt2Config::from_file(&model_dir().join("config.json")).unwrap();
    (config.n_embd, config.n_head) = (48, 4);
    let mut model = Model::random(config, Kind::Float, Device::Cpu).unwrap();
    let ids = Tensor::from_slice(&[5i64, 17, 42]).unsqueeze(0);
    let before = log_probs(&model, &ids);
    let err = model.quantize(Quantize::Int4).unwrap_err();
    assert!(
        format!("{err:#}").contains(
            "int4 weights need layer widths divisible by 32, and this model has a layer 48 wide: use --quantize int8"
        ),
        "{err:#}"
    );
    assert_eq!(model.quantized(), Quantize::None);
    assert!(log_probs(&model, &ids).equal(&before));
    model.quantize(Quantize::Int8).unwrap();
}

/// `eval --config` takes `--quantize` over the config's model (it once kept the config's f32 silently).
#[test]
fn eval_with_a_config_takes_the_quantize_flag() {
    let dir = tempfile::tempdir().unwrap();
    let config = terra_config(dir.path(), &dir.path().join("run"));
    let config = config.to_str().unwrap();
    let task = ["dataset.task=terra", "preprocessing.label_field=label"];
    let (ok, _, stderr) =
        ruprompts(&[&["train", config, "training.max_steps=2", "training.eval_every=null"][..], &task].concat());
    assert!(ok, "{stderr}");
    let out = dir.path().join("eval");
    let (ok, _, stderr) = ruprompts(
        &[
            &["eval", "--config", config][..],
            &task,
            &["--quantize", "int4", "--limit", "4", "--out", out.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(ok, "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert!(report["model"].as_str().unwrap().ends_with("(int4)"), "{}", report["model"]);
}
