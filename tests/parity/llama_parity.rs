//! The Llama family against transformers 4.57.6 (`reference/llama_family.*`, made with the tiny checkpoints in
//! `llama-family/` by tests/fixtures/scripts/08_llama_family_reference.py): logits of padded batches, the LM loss
//! and greedy ids with and without the KV cache, for Llama (llama3 and dynamic rope scaling), Mistral (sliding
//! window, sharded weights) and Qwen2 (biases, tied embeddings, linear scaling, a sliding layer).

use crate::common;

use common::*;
use ruprompts::model::{Input, Model};
use serde_json::Value;
use tch::{Kind, Tensor};

const MODELS: [&str; 4] = ["tiny-llama", "tiny-llama-dynamic", "tiny-mistral", "tiny-qwen2"];

fn reference() -> Value {
    load_json("reference/llama_family.json")
}

fn logits_reference(name: &str) -> Tensor {
    Tensor::read_safetensors(fixture("reference/llama_family.safetensors"))
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name}"))
        .1
}

fn model(name: &str) -> Model {
    init();
    Model::from_dir(&fixture(&format!("llama-family/{name}")), Kind::Float, device()).unwrap()
}

fn logits(model: &Model, ids: &Tensor, mask: &Tensor) -> Tensor {
    tch::no_grad(|| model.lm_logits(&model.forward(Input::Ids(ids), Some(&mask.to_device(device())), None).unwrap()))
}

#[test]
fn logits_and_loss_match_transformers_on_padded_batches() {
    let spec = reference();
    for name in MODELS {
        let model = model(name);
        let (ids, mask) = (
            ids_tensor(&i64_rows(&spec["models"][name]["right"]["input_ids"])),
            ids_tensor(&i64_rows(&spec["models"][name]["right"]["attention_mask"])),
        );
        let ours = logits(&model, &ids, &mask);
        let real = mask.to_device(device()).unsqueeze(-1).to_kind(Kind::Float);
        let theirs = logits_reference(&format!("{name}.right_logits")).to_device(device());
        let diff = max_abs_diff(&(&ours * &real), &(&theirs * &real));
        assert!(diff <= tol(1e-4), "{name}: right-padded logits differ by {diff}");

        // The LM loss: every real token after the first, predicted by the position before it.
        let labels = ids_tensor(&i64_rows(&spec["models"][name]["labels"])).to_device(device());
        let t = ids.size()[1];
        let loss = ours.narrow(1, 0, t - 1).reshape([-1, ours.size()[2]]).cross_entropy_loss::<Tensor>(
            &labels.narrow(1, 1, t - 1).reshape([-1]),
            None,
            tch::Reduction::Mean,
            -100,
            0.0,
        );
        let expected = spec["models"][name]["loss"].as_f64().unwrap();
        assert!((loss.double_value(&[]) - expected).abs() <= tol(1e-5), "{name}: loss {loss} vs {expected}");

        let (ids, mask) = (
            ids_tensor(&i64_rows(&spec["models"][name]["left"]["input_ids"])),
            ids_tensor(&i64_rows(&spec["models"][name]["left"]["attention_mask"])),
        );
        let last = logits(&model, &ids, &mask).select(1, -1);
        let diff = max_abs_diff(&last, &logits_reference(&format!("{name}.left_last_logits")));
        assert!(diff <= tol(1e-4), "{name}: left-padded last logits differ by {diff}");
    }
}

#[test]
fn greedy_ids_match_transformers_with_and_without_the_cache() {
    let spec = reference();
    for name in MODELS {
        let left = &spec["models"][name]["left"];
        let (ids, mask) = (ids_tensor(&i64_rows(&left["input_ids"])), ids_tensor(&i64_rows(&left["attention_mask"])));
        let model = model(name);
        for use_cache in [true, false] {
            let theirs =
                i64_rows(&spec["models"][name][format!("use_cache_{}", if use_cache { "True" } else { "False" })]);
            assert_eq!(
                greedy(&model, &ids, &mask, theirs[0].len(), use_cache),
                theirs,
                "{name}, use_cache={use_cache}"
            );
        }
    }
}

/// A prompt trained on a Llama-family model saves, loads and gives the same logits to the bit; a deep prompt on a
/// grouped-query model has keys of the key/value width, and an unknown architecture names the supported ones.
#[test]
fn prompts_on_llama_family_models_round_trip_and_errors_name_the_cause() {
    use ruprompts::format::PromptFormat;
    use ruprompts::prompt::Prompt;
    use ruprompts::provider::ProviderConfig;
    use ruprompts::tokenizer::Tokenizer;

    let dir = fixture("llama-family/tiny-qwen2");
    let model = model("tiny-qwen2");
    let mut tok = Tokenizer::from_dir(&dir).unwrap();
    let format = PromptFormat::compile("<P*3>{text}<P>Ответ:</P>", &tok).unwrap();
    let prompt = ruprompts::rng::seeded(3, || Prompt::new(format, ProviderConfig::default(), &model)).unwrap();
    let id = prompt.add_token(&mut tok).unwrap();
    let row = serde_json::json!({ "text": "Кот спит." }).as_object().unwrap().clone();
    let ids =
        Tensor::from_slice(&tok.encode_sequence_ids(&prompt.format().format(&row).unwrap().text).unwrap()).unsqueeze(0);
    let logits_of = |p: &Prompt| {
        tch::no_grad(|| {
            model.lm_logits(&model.forward(p.embed(&model, &ids, id).unwrap().input(), None, None).unwrap())
        })
    };
    let saved = tempfile::tempdir().unwrap();
    prompt.save_pretrained(saved.path()).unwrap();
    let loaded = Prompt::from_pretrained(saved.path(), device()).unwrap();
    assert!(logits_of(&loaded).equal(&logits_of(&prompt)));

    // A deep prompt on this grouped-query model is sized by its key width (2 key/value heads × 16), as PEFT sizes it.
    let deep = ProviderConfig::Prefix { num_virtual_tokens: 2, projection: None, init: Default::default() };
    let deep = Prompt::new(PromptFormat::compile("{text}", &tok).unwrap(), deep, &model).unwrap();
    assert_eq!(deep.prefix().unwrap().size(), [2, 2 * 2 * 32]);
    let exported = tempfile::tempdir().unwrap();
    deep.save_peft(exported.path()).unwrap();
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(exported.path().join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!((config["token_dim"].as_i64(), config["num_layers"].as_i64()), (Some(32), Some(2)));

    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("config.json"), r#"{"model_type": "falcon", "vocab_size": 10}"#).unwrap();
    let err = Model::from_dir(other.path(), Kind::Float, device()).unwrap_err().to_string();
    assert!(err.contains("model_type 'falcon' is not supported; ruprompts runs gpt2, llama, mistral, qwen2"), "{err}");
}

/// `ruprompts train`, `eval` and `generate` on a Llama-, a Mistral- and a Qwen2-family checkpoint folder, each
/// with its family's tokenizer (BOS added or not).
#[test]
fn the_command_line_trains_evaluates_and_generates_on_llama_mistral_and_qwen2_checkpoints() {
    for name in ["tiny-llama", "tiny-mistral", "tiny-qwen2"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let folder = fixture(&format!("llama-family/{name}"));
        let model_path = format!("model.path={}", folder.display());
        let data = format!("dataset.dir={}", fixture("rsg/DaNetQA").display());
        let run = format!("output_dir={}", out.display());
        let config = repo().join("examples/configs/danetqa.yaml");
        let args = [
            &model_path,
            &data,
            &run,
            "training.max_steps=8",
            "training.eval_every=4",
            "training.save_every=4",
            "scheduler.warmup_steps=2",
        ];
        let (ok, stdout, stderr) = ruprompts(&[&["train", config.to_str().unwrap()], &args[..]].concat());
        assert!(ok, "{name}: {stderr}");
        assert!(stdout.contains("8 updates of 8"), "{name}: {stdout}");
        let (ok, stdout, stderr) = ruprompts(&[&["eval", "--config", config.to_str().unwrap()], &args[..]].concat());
        assert!(ok, "{name}: {stderr}");
        assert!(stdout.contains("| DaNetQA | tuned | accuracy |"), "{name}: {stdout}");
        let (ok, stdout, stderr) = ruprompts(&[
            "generate",
            "--prompt",
            out.to_str().unwrap(),
            "--model",
            folder.to_str().unwrap(),
            "--max-new-tokens",
            "4",
            "--field",
            "passage=Москва — столица России.",
            "--field",
            "question=Москва столица?",
        ]);
        assert!(ok, "{name}: {stderr}");
        assert!(stdout.starts_with("{\"generated\":["), "{name}: {stdout}");
    }
}

/// PEFT's prefix on the grouped-query Qwen2 (`reference/peft-qwen2`): its logits, and its greedy ids of each text
/// alone, which ours give in one batch. (In a left-padded batch PEFT keeps the prefix ahead of the padding, where
/// Qwen2's sliding window can lose it in short rows; ours keeps it next to the text, so padding changes nothing.)
#[test]
fn a_peft_prefix_on_a_grouped_query_model_matches_peft() {
    use ruprompts::generate::{generate, GenerationConfig};
    use ruprompts::prompt::Prompt;
    use ruprompts::tokenizer::Tokenizer;

    let spec = reference();
    let model = model("tiny-qwen2");
    let mut tok = Tokenizer::from_dir(&fixture("llama-family/tiny-qwen2")).unwrap();
    let prompt = Prompt::load(&fixture("reference/peft-qwen2"), device()).unwrap();
    let id = prompt.add_token(&mut tok).unwrap();
    let n = prompt.virtual_tokens() as usize;
    // The virtual tokens right before each row's text; right padding after it.
    let rows: Vec<Vec<i64>> = i64_rows(&spec["models"]["tiny-qwen2"]["right"]["input_ids"])
        .iter()
        .map(|r| [vec![id; n], r.clone()].concat())
        .collect();
    let masks: Vec<Vec<i64>> = i64_rows(&spec["models"]["tiny-qwen2"]["right"]["attention_mask"])
        .iter()
        .map(|m| [vec![1; n], m.clone()].concat())
        .collect();
    let (ids, mask) = (ids_tensor(&rows), ids_tensor(&masks).to_device(device()));
    let ours = tch::no_grad(|| {
        let injected = prompt.embed(&model, &ids, id).unwrap();
        model.lm_logits(&model.forward(injected.input(), Some(&mask), None).unwrap())
    });
    let t = ids.size()[1] - n as i64;
    let real = mask.narrow(1, n as i64, t).unsqueeze(-1).to_kind(Kind::Float);
    let theirs = logits_reference("qwen2-prefix.right_logits").to_device(device());
    let diff = max_abs_diff(&(ours.narrow(1, n as i64, t) * &real), &(theirs * &real));
    assert!(diff <= tol(1e-4), "logits differ by {diff}");

    let texts: Vec<&str> = spec["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let inputs: Vec<Vec<i64>> =
        texts.iter().map(|t| [vec![id; n], tok.encode_sequence_ids(t).unwrap()].concat()).collect();
    let theirs = i64_rows(&spec["qwen2_prefix"]["generated"]);
    for use_cache in [true, false] {
        let config =
            GenerationConfig { max_new_tokens: theirs[0].len(), eos_token_id: None, use_cache, ..Default::default() };
        let out = tch::no_grad(|| generate(&model, &tok, &inputs, &[prompt.injection(id)], &config)).unwrap();
        let ours: Vec<Vec<i64>> = out.iter().map(|o| o[0].new_ids.clone()).collect();
        assert_eq!(ours, theirs, "use_cache={use_cache}");
    }
}

/// lm-evaluation-harness' log-likelihood on each family: the context encoded as a model input (BOS where the
/// tokenizer adds one), the continuation's own tokens after it. Ours equals transformers' through the naive scorer
/// (one forward, as transformers) and the shared-context one. The shared one is checked within the model's
/// positions, the evaluator's limit: past them a dynamic rope rescales with the length of each pass, so a context
/// run before its answers rotates as transformers' own cache would, not as one whole forward.
#[test]
fn continuation_logprobs_match_transformers() {
    use ruprompts::task::{score_naive, score_shared, Candidate};
    use ruprompts::tokenizer::Tokenizer;

    let spec = reference();
    let mut checked = 0;
    for name in MODELS {
        let model = model(name);
        let tok = Tokenizer::from_dir(&fixture(&format!("llama-family/{name}"))).unwrap();
        for case in spec["models"][name]["continuations"].as_array().unwrap() {
            let context = tok.encode_sequence_ids(case["context"].as_str().unwrap()).unwrap();
            let answer = tok.encode_ids(case["continuation"].as_str().unwrap()).unwrap();
            assert_eq!((&context, &answer), (&i64_vec(&case["context_ids"]), &i64_vec(&case["continuation_ids"])));
            let within = context.len() + answer.len() <= model.config().n_positions as usize;
            let candidates = [Candidate { answer, suffix: vec![] }];
            let theirs = case["logprob"].as_f64().unwrap();
            let naive = score_naive(&model, &[], &context, &candidates, false).unwrap()[0].answer_logprob;
            assert!((naive - theirs).abs() <= tol(1e-4), "{name} {case}: {naive} vs {theirs}");
            if within {
                let shared = score_shared(&model, &[], &context, &candidates, false).unwrap()[0].answer_logprob;
                assert!((shared - theirs).abs() <= tol(1e-4), "{name} {case}: shared {shared} vs {theirs}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 9, "{checked} shared-scorer cases");
}
