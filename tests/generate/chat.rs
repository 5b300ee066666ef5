//! Chat templates beyond rendering (tests/model/gguf.rs checks the renders against transformers): `eval
//! --apply-chat-template` scores each context as the user's turn with the answer after the assistant's opening
//! (lm-evaluation-harness's meaning), training with `prompt_format.chat` puts the format, prompt tokens and all,
//! inside the user's turn and evaluation scores it so, `generate` without a prompt is the bare model, and a
//! checkpoint without a template is refused by name. On the Qwen2 GGUF fixture (ChatML template).

use crate::common;

use std::path::{Path, PathBuf};

use common::*;
use ruprompts::model::{Backbone, Input, ModelSource};
use serde_json::Value;
use tch::{Kind, Tensor};

fn qwen2() -> PathBuf {
    fixture("gguf/tiny-qwen2.gguf")
}

fn task() -> PathBuf {
    repo().join("examples/tasks/sentiment.yaml")
}

/// Each line of `<out>/samples/sentiment.jsonl`.
fn samples(out: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(out.join("samples/sentiment.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The log-probability of `answer` after `context`, both tokenized without added special tokens.
fn logprob(backbone: &Backbone, context: &str, answer: &str) -> f64 {
    let (head, tail) =
        (backbone.tokenizer.encode_ids(context).unwrap(), backbone.tokenizer.encode_ids(answer).unwrap());
    let ids = ids_tensor(&[[head.clone(), tail.clone()].concat()]);
    let model = &backbone.model;
    let logits = tch::no_grad(|| model.lm_logits(&model.forward(Input::Ids(&ids), None, None).unwrap()));
    let lp = logits.get(0).narrow(0, head.len() as i64 - 1, tail.len() as i64).log_softmax(-1, Kind::Float);
    lp.gather(1, &Tensor::from_slice(&tail).unsqueeze(1), false).sum(Kind::Double).double_value(&[])
}

#[test]
fn eval_scores_each_context_as_the_users_turn() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("chat");
    let (ok, _, stderr) = ruprompts(&[
        "eval",
        "--task-file",
        task().to_str().unwrap(),
        "--model",
        qwen2().to_str().unwrap(),
        "--apply-chat-template",
        "--log-samples",
        "--limit",
        "3",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let backbone = Backbone::load_local(&ModelSource::local(qwen2())).unwrap();
    let template = backbone.tokenizer.chat_template().unwrap();
    for sample in samples(&out) {
        let scored = &sample["zero-shot"];
        let context = scored["context"].as_str().unwrap();
        // The formatted item is the user's message; the assistant's opening ends the context.
        let user = context
            .strip_prefix("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
            .and_then(|c| c.strip_suffix("<|im_end|>\n<|im_start|>assistant\n"))
            .unwrap_or_else(|| panic!("not a ChatML user turn: {context:?}"));
        let rendered = template.render(&[serde_json::json!({"role": "user", "content": user})], true).unwrap();
        assert_eq!(rendered, context);
        for (answer, expected) in
            sample["candidates"].as_array().unwrap().iter().zip(scored["loglikelihoods"].as_array().unwrap())
        {
            let ours = logprob(&backbone, context, answer.as_str().unwrap());
            assert!((ours - expected.as_f64().unwrap()).abs() < 1e-4, "{answer}: {ours} vs {expected}");
        }
    }
}

#[test]
fn a_prompt_trained_inside_the_users_turn_is_scored_there() {
    let dir = tempfile::tempdir().unwrap();
    let (config, run) = (dir.path().join("chat.yaml"), dir.path().join("run"));
    std::fs::write(
        &config,
        format!(
            "model: {{path: {model}, device: cpu}}\ndataset: {{task_file: {task}}}\n\
             prompt_format: {{template: \"<P*2>Отзыв: {{text}}\\nОтзыв<P>\", chat: true}}\n\
             preprocessing: {{kind: classification, max_tokens: 120}}\nobjective: {{kind: choice}}\noptimizer: {{lr: 0.05}}\n\
             training: {{batch_size: 4, max_steps: 3, save_every: null}}\noutput_dir: {run}\n",
            model = qwen2().display(),
            task = task().display(),
            run = run.display()
        ),
    )
    .unwrap();
    let (ok, _, stderr) = ruprompts(&["train", config.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let out = dir.path().join("eval");
    let (ok, _, stderr) = ruprompts(&[
        "eval",
        "--config",
        config.to_str().unwrap(),
        "--log-samples",
        "--limit",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    for sample in samples(&out) {
        let tuned = sample["tuned"]["context"].as_str().unwrap();
        assert!(tuned.starts_with("<|im_start|>system\n") && tuned.ends_with("<|im_end|>\n<|im_start|>assistant\n"));
        assert!(tuned.contains("<|im_start|>user\n<P><P>Отзыв: ") && tuned.contains("\nОтзыв<P><|im_end|>"), "{tuned}");
    }
    // Without a task's items there is nothing to put in the turn; a checkpoint without a template has none to use.
    let (ok, _, stderr) = ruprompts(&["train", config.to_str().unwrap(), "dataset={train: x.jsonl}", "--overwrite"]);
    assert!(
        !ok && stderr.contains("prompt_format.chat") && stderr.contains("puts a task's items in the chat template"),
        "{stderr}"
    );
    let tiny = format!("model.path={}", model_dir().display());
    let (ok, _, stderr) = ruprompts(&["train", config.to_str().unwrap(), &tiny, "--overwrite"]);
    assert!(!ok && stderr.contains("prompt_format.chat: the model's checkpoint has no chat template"), "{stderr}");
}

#[test]
fn generate_without_a_prompt_is_the_bare_model() {
    let reference = load_json("reference/gguf.json");
    let case = &reference["files"]["tiny-qwen2"];
    let text = case["tokenizer"]["texts"][0]["text"].as_str().unwrap();
    let expected = i64_vec(&case["greedy"][0]);
    let backbone = Backbone::load_local(&ModelSource::local(qwen2())).unwrap();
    let eos = i64::from(backbone.tokenizer.special().eos.unwrap());
    let prompt = backbone.tokenizer.encode_sequence_ids(text).unwrap();
    let upto: Vec<i64> = expected.iter().copied().take_while(|&t| t != eos).collect();
    let (ok, stdout, stderr) = ruprompts(&[
        "generate",
        "--model",
        qwen2().to_str().unwrap(),
        "--max-new-tokens",
        "8",
        "--device",
        "cpu",
        text,
    ]);
    assert!(ok, "{stderr}");
    let line: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["generated"][0], backbone.tokenizer.decode_after(&prompt, &upto).unwrap(), "{stdout}");
    // text-generation gives the text back with its continuation.
    let (ok, stdout, _) = ruprompts(&[
        "generate",
        "--model",
        qwen2().to_str().unwrap(),
        "--max-new-tokens",
        "8",
        "--task",
        "text-generation",
        "--device",
        "cpu",
        text,
    ]);
    assert!(
        ok && stdout.contains(&format!("\"generated\":[{}", serde_json::json!(text).to_string().trim_end_matches('"'))),
        "{stdout}"
    );
    let (ok, _, stderr) = ruprompts(&["generate", "--model", model_dir().to_str().unwrap(), "--chat", "Привет"]);
    assert!(!ok && stderr.contains("has no chat template"), "{stderr}");
    let (ok, _, stderr) = ruprompts(&["generate", "Привет"]);
    assert!(!ok && stderr.contains("required arguments were not provided") && stderr.contains("--prompt"), "{stderr}");
}

/// `generate --chat` takes a JSON list of messages as the whole conversation: the reply is what the server answers
/// for the same messages, and a message without a role is refused by name.
#[test]
fn generate_takes_a_conversation_as_json_messages() {
    let messages = r#"[{"role": "system", "content": "Будь краток."}, {"role": "user", "content": "Привет"}]"#;
    let model = qwen2();
    let args = ["generate", "--model", model.to_str().unwrap(), "--chat", "--max-new-tokens", "6", "--device", "cpu"];
    let (ok, stdout, stderr) = ruprompts(&[&args[..], &[messages]].concat());
    assert!(ok, "{stderr}");
    let line: Value = serde_json::from_str(stdout.trim()).unwrap();
    let backbone = Backbone::load_local(&ModelSource::local(qwen2())).unwrap();
    let conversation: Vec<Value> = serde_json::from_str(messages).unwrap();
    let text = backbone.tokenizer.chat_template().unwrap().render(&conversation, true).unwrap();
    let ids = ids_tensor(&[backbone.tokenizer.encode_ids(&text).unwrap()]);
    let eos = i64::from(backbone.tokenizer.special().eos.unwrap());
    let greedy: Vec<i64> =
        greedy(&backbone.model, &ids, &ids.ones_like(), 6, true)[0].iter().copied().take_while(|&t| t != eos).collect();
    let context: Vec<i64> = Vec::<i64>::try_from(ids.get(0)).unwrap();
    assert_eq!(line["generated"][0], backbone.tokenizer.decode_after(&context, &greedy).unwrap(), "{stdout}");
    let (ok, _, stderr) = ruprompts(&[&args[..], &[r#"[{"content": "x"}]"#]].concat());
    assert!(!ok && stderr.contains("needs a \"role\""), "{stderr}");
}
