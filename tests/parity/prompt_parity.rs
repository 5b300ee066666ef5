//! Providers and prompt injection against Python ruprompts 0.1.4 (`reference/ruprompts/`).

use crate::common;

use common::*;
use ruprompts::format::PromptFormat;
use ruprompts::model::{Input, Model};
use ruprompts::prompt::{MultiPrompt, Prompt};
use ruprompts::provider::{ProviderConfig, TensorInit};
use ruprompts::rng::seeded;
use ruprompts::tokenizer::Tokenizer;
use tch::Tensor;

fn ruprompts_json(name: &str) -> serde_json::Value {
    load_json(&format!("reference/ruprompts/{name}"))
}

fn named_tensors(path: &str) -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(fixture(&format!("reference/ruprompts/{path}"))).unwrap()
}

fn tensor_named(all: &[(String, Tensor)], name: &str) -> Tensor {
    all.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name}")).1.shallow_clone()
}

/// Mean LM loss of `ids` under `labels` with the prompt injected.
fn prompt_loss(model: &Model, embeds: &Tensor, labels: &[i64]) -> Tensor {
    let hidden = model.forward(Input::Embeds(embeds), None, None).unwrap();
    model.lm_loss(&hidden, &Tensor::from_slice(labels).unsqueeze(0))
}

#[test]
fn tensor_provider_vocab_init_follows_ruprompts_rule() {
    let model = tiny_model();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let spec = ruprompts_json("tensor_prompt.json");
    let format = PromptFormat::compile(spec["template"].as_str().unwrap(), &tok).unwrap();
    let prompt = seeded(1, || Prompt::new(format, ProviderConfig::Tensor { init: TensorInit::Vocab }, &model)).unwrap();
    let weights = prompt.embeddings();
    // weights = wte[randperm(V)[:L]], then rows 3..6 replaced by the phrase tokens' embeddings.
    let perm = i64_vec(&spec["randperm_first_L"]);
    let wte = model.token_embeddings();
    let init = spec["init_tokens"].as_object().unwrap();
    for (row, &id) in perm.iter().enumerate() {
        let source = init.get(&row.to_string()).map_or(id, |v| v.as_i64().unwrap());
        assert_eq!(max_abs_diff(&weights.get(row as i64), &wte.get(source)), 0.0, "row {row}");
    }
    assert_eq!(prompt.num_parameters(), 7 * 64);
    assert!(weights.requires_grad());
}

#[test]
fn python_tensor_prompt_gives_python_loss_when_injected() {
    let model = tiny_model();
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let spec = ruprompts_json("tensor_prompt.json");
    let format = PromptFormat::compile(spec["template"].as_str().unwrap(), &tok).unwrap();
    let mut prompt = Prompt::new(format, ProviderConfig::default(), &model).unwrap();
    prompt.set_state(&named_tensors("prompt_tensor/prompt_provider.safetensors")).unwrap();
    let token_id = prompt.add_token(&mut tok).unwrap();
    assert_eq!(token_id, spec["prompt_token_id"].as_i64().unwrap());
    let item = &spec["item0"];
    let ids = Tensor::from_slice(&i64_vec(&item["input_ids"])).unsqueeze(0);
    let embeds = prompt.embed(&model, &ids, token_id).unwrap();
    let loss = tch::no_grad(|| prompt_loss(&model, &embeds.embeds, &i64_vec(&item["labels"]))).double_value(&[]);
    let expected = item["loss"].as_f64().unwrap();
    assert!((loss - expected).abs() <= 1e-5, "loss {loss} vs {expected}");
}

#[test]
fn lstm_provider_loads_pytorch_state_and_matches_output_loss_and_gradients() {
    let model = tiny_model();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let spec = ruprompts_json("lstm_prompt.json");
    let format = PromptFormat::compile(spec["template"].as_str().unwrap(), &tok).unwrap();
    let config = ProviderConfig::Lstm { hidden_dim: Some(32), input_dim: Some(16), num_layers: 2 };
    let mut prompt = Prompt::new(format, config, &model).unwrap();
    let state = named_tensors("lstm_provider_state.safetensors");
    prompt.set_state(&state).unwrap();
    let state_numel: i64 = state.iter().map(|(_, t)| t.numel() as i64).sum();
    assert_eq!(prompt.num_parameters(), state_numel);

    let reference = named_tensors("lstm_provider_tensors.safetensors");
    let output = prompt.embeddings();
    let diff = max_abs_diff(&output, &tensor_named(&reference, "output"));
    assert!(diff <= 1e-5, "LSTM provider output differs by {diff}");

    let ids = Tensor::from_slice(&i64_vec(&spec["lm_loss_item0_input_ids"])).unsqueeze(0);
    let embeds = prompt.embed(&model, &ids, 2000).unwrap();
    let loss = prompt_loss(&model, &embeds.embeds, &i64_vec(&spec["lm_loss_item0_labels"]));
    let expected = spec["lm_loss_item0"].as_f64().unwrap();
    assert!((loss.double_value(&[]) - expected).abs() <= 1e-5);
    loss.backward();
    for (name, var) in prompt.var_store().variables() {
        let theirs = tensor_named(&reference, &format!("grad.{name}"));
        let ours = var.grad();
        let tolerance = (theirs.abs() * 1e-4 + 1e-7) - (&ours - &theirs).abs();
        assert!(tolerance.min().double_value(&[]) >= 0.0, "gradient of {name} differs beyond rtol 1e-4 + atol 1e-7");
    }
}

#[test]
fn multi_prompt_matches_python_and_mixes_keys_in_one_batch() {
    let model = tiny_model();
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let spec = ruprompts_json("multiprompt.json");
    let weights = named_tensors("multiprompt.safetensors");
    let templates = [("sum", "<P*3>{text}<P*2>"), ("qa", "<P>Вопрос:</P>{question}<P*2>")];
    let prompts = templates
        .iter()
        .map(|(key, template)| {
            let format = PromptFormat::compile(template, &tok).unwrap();
            let mut prompt = Prompt::new(format, ProviderConfig::default(), &model).unwrap();
            prompt.set_state(&[("weights".to_string(), tensor_named(&weights, &format!("{key}.weights")))]).unwrap();
            (key.to_string(), prompt)
        })
        .collect();
    let multi = MultiPrompt::new(prompts, &mut tok).unwrap();
    let mut rows = Vec::new();
    for (key, _) in templates {
        let example = &spec["examples"][key];
        let prompt_spec = &spec["prompts"][key];
        let format = multi.get(key).unwrap().format();
        assert_eq!(format.compiled_template(), prompt_spec["compiled_template"].as_str().unwrap());
        let ids = i64_vec(&example["input_ids"]);
        assert_eq!(tok.encode_ids(example["text"].as_str().unwrap()).unwrap(), ids);
        let input = Tensor::from_slice(&ids).unsqueeze(0);
        let logits = tch::no_grad(|| {
            let embeds = multi.embed(&model, &input).unwrap();
            model.lm_logits(&model.forward(embeds.input(), None, None).unwrap())
        });
        let diff = max_abs_diff(&logits.get(0), &tensor_named(&weights, &format!("{key}.logits")));
        assert!(diff <= 1e-5, "{key}: logits differ by {diff}");
        rows.push((ids, logits.get(0)));
    }
    // One right-padded batch holding a "sum" row and a "qa" row: each equals its single run.
    let width = rows.iter().map(|(ids, _)| ids.len()).max().unwrap();
    let padded: Vec<Vec<i64>> =
        rows.iter().map(|(ids, _)| [ids.clone(), vec![0; width - ids.len()]].concat()).collect();
    let mask: Vec<Vec<i64>> =
        rows.iter().map(|(ids, _)| [vec![1; ids.len()], vec![0; width - ids.len()]].concat()).collect();
    let batch = ids_tensor(&padded);
    let logits = tch::no_grad(|| {
        let embeds = multi.embed(&model, &batch).unwrap();
        model.lm_logits(&model.forward(embeds.input(), Some(&ids_tensor(&mask)), None).unwrap())
    });
    for (i, (ids, single)) in rows.iter().enumerate() {
        let diff = max_abs_diff(&logits.get(i as i64).narrow(0, 0, ids.len() as i64), single);
        assert!(diff <= 1e-5, "mixed batch row {i} differs by {diff}");
    }
    let err = multi.get("nope").unwrap_err().to_string();
    assert_eq!(err, "unknown prompt key \"nope\" (known: sum, qa)");
}

#[test]
fn wrong_prompt_token_count_is_an_error_naming_the_row() {
    let model = tiny_model();
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let format = PromptFormat::compile("<P*3>{text}", &tok).unwrap();
    let prompt = Prompt::new(format, ProviderConfig::default(), &model).unwrap();
    let id = prompt.add_token(&mut tok).unwrap();
    let ids = Tensor::from_slice(&[id, id, id, 5, 6, 7, id, id, 0, 5, 6, 7]).view([2, 6]);
    let err = prompt.embed(&model, &ids, id).unwrap_err().to_string();
    assert_eq!(err, "row 1 holds 2 prompt tokens <|P|> but the prompt has 3 (was the prompt truncated?)");
}

#[test]
fn mlp_provider_uses_peft_names_and_trains() {
    let model = tiny_model();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let format = PromptFormat::compile("<P*4>{text}", &tok).unwrap();
    let prompt = Prompt::new(format, ProviderConfig::Mlp { hidden_dim: Some(32) }, &model).unwrap();
    let mut names: Vec<String> = prompt.var_store().variables().into_keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "embedding.weight",
            "mlp_head.0.bias",
            "mlp_head.0.weight",
            "mlp_head.2.bias",
            "mlp_head.2.weight",
            "mlp_head.4.bias",
            "mlp_head.4.weight"
        ]
    );
    assert_eq!(prompt.num_parameters(), 4 * 64 + (64 * 32 + 32) + (32 * 32 + 32) + (32 * 64 + 64));
    assert_eq!(prompt.embeddings().size(), [4, 64]);
    let err = Prompt::new(
        PromptFormat::compile("<P>Вопрос:</P>{q}", &tok).unwrap(),
        ProviderConfig::Lstm { hidden_dim: None, input_dim: None, num_layers: 2 },
        &model,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("lstm provider cannot start from phrase tokens"), "{err}");
}
