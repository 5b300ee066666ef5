//! SmolLM2-135M-Instruct, the real pretrained model (`scripts/setup.sh` fetches its GGUF file), against
//! transformers' GGUF load of the same file (`reference/smollm2.json`, made by
//! tests/fixtures/scripts/10_smollm2_reference.py): tokenizer ids and decodings of 53 texts, chat-template renders,
//! 40 continuation log-likelihoods, greedy ids; and a prompt that learns on real data.

use crate::common;

use common::*;
use ruprompts::model::{Backbone, Input, ModelSource};
use serde_json::Value;
use tch::{Kind, Tensor};

fn reference() -> Value {
    load_json("reference/smollm2.json")
}

/// The model (134.5 M parameters, dequantized to f32: about 3 s).
fn smollm2() -> Backbone {
    init();
    let mut source = ModelSource::local(real_model());
    source.device = ruprompts::device::DeviceChoice::Cpu;
    Backbone::load_local(&source).unwrap()
}

#[test]
fn tokenizer_ids_decodings_and_chat_template_match_transformers() {
    let spec = reference();
    let tokenizer = &smollm2().tokenizer;
    let texts = spec["texts"].as_array().unwrap();
    assert!(texts.len() >= 50);
    for case in texts {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tokenizer.encode_sequence_ids(text).unwrap(), i64_vec(&case["ids"]), "{text:?}");
        let bare = tokenizer.encode_ids(text).unwrap();
        assert_eq!(bare, i64_vec(&case["ids_no_specials"]), "{text:?} without specials");
        assert_eq!(tokenizer.decode(&bare).unwrap(), case["decoded"].as_str().unwrap(), "decoding {text:?}");
    }
    let template = tokenizer.chat_template().expect("SmolLM2 ships a chat template");
    for case in spec["chat"].as_array().unwrap() {
        let messages = case["messages"].as_array().unwrap();
        for generation in [false, true] {
            let expected = case[format!("generation_prompt_{generation}")].as_str().unwrap();
            assert_eq!(template.render(messages, generation).unwrap(), expected, "{messages:?}");
        }
    }
}

#[test]
fn continuation_log_likelihoods_and_greedy_ids_match_transformers() {
    let spec = reference();
    let Backbone { model, tokenizer, .. } = &smollm2();
    let _guard = tch::no_grad_guard();
    let cases = spec["scoring"].as_array().unwrap();
    assert_eq!(cases.len(), 40);
    let mut worst = 0f64;
    for case in cases {
        let (head, tail) = (i64_vec(&case["context_ids"]), i64_vec(&case["continuation_ids"]));
        assert_eq!(tokenizer.encode_sequence_ids(case["context"].as_str().unwrap()).unwrap(), head);
        let ids = ids_tensor(&[[head.clone(), tail.clone()].concat()]);
        let logits = model.lm_logits(&model.forward(Input::Ids(&ids), None, None).unwrap());
        let logprobs = logits.get(0).narrow(0, head.len() as i64 - 1, tail.len() as i64).log_softmax(-1, Kind::Float);
        let ours = logprobs.gather(1, &Tensor::from_slice(&tail).unsqueeze(1), false).sum(Kind::Double);
        worst = worst.max((ours.double_value(&[]) - case["logprob"].as_f64().unwrap()).abs());
    }
    assert!(worst <= 1e-4, "continuation log-likelihoods differ from transformers' by up to {worst}");
    for case in spec["greedy"].as_array().unwrap() {
        let ids = ids_tensor(&[tokenizer.encode_sequence_ids(case["prompt"].as_str().unwrap()).unwrap()]);
        let expected = i64_vec(&case["ids"]);
        assert_eq!(greedy(model, &ids, &ids.ones_like(), expected.len(), true)[0], expected, "{case}");
    }
}

/// `ruprompts serve` on the real model answers the openai client's chat calls, and knows the capital of France.
#[test]
fn the_chat_endpoint_answers_the_openai_client() {
    let python = repo().join(".cache/client-venv/bin/python");
    assert!(python.exists(), "{} is missing: bash scripts/setup.sh installs the openai client", python.display());
    let model = real_model();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_ruprompts"))
        .args(["serve", "--model", model.to_str().unwrap(), "--served-model-name", "smollm2", "--port", "0"])
        .args(["--device", "cpu"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().unwrap()), &mut line).unwrap();
    let url = line[line.find("http://").expect("the server prints its address")..].split_whitespace().next().unwrap();
    let out = std::process::Command::new(python)
        .arg(repo().join("tests/clients/openai_chat_check.py"))
        .args([url, "smollm2", "", "Paris"])
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("every chat check passed"), "{stdout}");
}

/// A short training on real data must raise the real model's accuracy on the items it trains on: 24 reviews, a
/// 4-token prompt before the zero-shot template, 12 updates; validation is the same items, scored before and after.
#[test]
fn a_prompt_trained_on_real_reviews_raises_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<&str> =
        include_str!("../../assets/reviews/train.jsonl").lines().filter(|l| l.len() < 110).take(24).collect();
    let data = dir.path().join("items.jsonl");
    std::fs::write(&data, rows.join("\n") + "\n").unwrap();
    let task = dir.path().join("task.yaml");
    std::fs::write(
        &task,
        format!(
            "name: reviews\ndata: {{train: {0}, val: {0}}}\nzero_shot: \"Review: {{text}}\\nSentiment:\"\n\
             candidates: {{verbalizers: {{negative: \" negative\", positive: \" positive\"}}}}\ngold: {{label: label}}\n",
            data.display()
        ),
    )
    .unwrap();
    let config = dir.path().join("train.yaml");
    let out = dir.path().join("run");
    std::fs::write(
        &config,
        format!(
            "model: {{path: {model}, device: cpu}}\ndataset: {{task_file: {task}}}\n\
             prompt_format: {{template: \"<P*4>Review: {{text}}\\nSentiment:\"}}\npreprocessing: {{kind: classification}}\n\
             objective: {{kind: choice}}\noptimizer: {{lr: 0.03, weight_decay: 0.0}}\n\
             training: {{batch_size: 8, max_steps: 12, eval_every: 12, save_every: null, seed: 7, final: last}}\n\
             output_dir: {out}\n",
            model = real_model().display(),
            task = task.display(),
            out = out.display()
        ),
    )
    .unwrap();
    let (ok, _, stderr) = ruprompts(&["train", config.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let lines: Vec<Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l.get("eval_accuracy").is_some())
        .collect();
    let (before, after) =
        (lines[0]["eval_accuracy"].as_f64().unwrap(), lines.last().unwrap()["eval_accuracy"].as_f64().unwrap());
    assert!(after > before, "accuracy on the training items went from {before} to {after}");
}
