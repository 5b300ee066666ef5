//! Deep prompts (the `prefix` provider) against PEFT 0.21.2's PREFIX_TUNING on the demo model
//! (`reference/peft/`, made by tests/fixtures/scripts/07_peft_reference.py): logits of right- and left-padded
//! batches, the LM loss and its gradient for every prefix parameter, greedy generation; and PEFT's adapter files,
//! read and written.

use crate::common;

use common::*;
use ruprompts::format::PromptFormat;
use ruprompts::generate::{generate, GenerationConfig};
use ruprompts::model::Model;
use ruprompts::prompt::{Prompt, PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE};
use ruprompts::provider::{Projection, ProviderConfig};
use ruprompts::tokenizer::Tokenizer;
use serde_json::Value;
use tch::{Kind, Tensor};

const CASES: [&str; 2] = ["plain", "projection"];

fn reference() -> Value {
    load_json("reference/peft/prefix.json")
}

fn demo_model() -> Model {
    init();
    Model::from_dir(&fixture("demo-model"), Kind::Float, device()).unwrap()
}

fn tensors(file: &str) -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(fixture(&format!("reference/peft/{file}"))).unwrap()
}

fn named(all: &[(String, Tensor)], name: &str) -> Tensor {
    all.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name}")).1.to_device(device())
}

/// The case's provider, as PEFT configured it.
fn provider(case: &Value) -> ProviderConfig {
    let config = &case["config"];
    let projection = config["prefix_projection"]
        .as_bool()
        .unwrap_or(false)
        .then(|| Projection { hidden_dim: config["encoder_hidden_size"].as_i64() });
    ProviderConfig::Prefix {
        num_virtual_tokens: config["num_virtual_tokens"].as_i64().unwrap(),
        projection,
        init: Default::default(),
    }
}

/// A `{text}` prompt with the case's PEFT encoder parameters, its token added to the tokenizer.
fn prompt(model: &Model, name: &str) -> (Prompt, Tokenizer, i64) {
    let mut tok = Tokenizer::from_dir(&fixture("demo-model")).unwrap();
    let format = PromptFormat::compile("{text}", &tok).unwrap();
    let mut prompt = Prompt::new(format, provider(&reference()["cases"][name]), model).unwrap();
    prompt.set_state(&tensors(&format!("{name}_encoder.safetensors"))).unwrap();
    let id = prompt.add_token(&mut tok).unwrap();
    (prompt, tok, id)
}

/// Our rows for PEFT's padded batch: the virtual tokens go right before each row's text (after left padding),
/// with the mask's ones; PEFT keeps them in the cache ahead of the whole row. Returns ids, mask and labels.
fn rows(padded: &Value, labels: Option<&Value>, virtual_tokens: usize, id: i64) -> (Tensor, Tensor, Tensor) {
    let (ids, mask) = (i64_rows(&padded["input_ids"]), i64_rows(&padded["attention_mask"]));
    let labels = labels.map(i64_rows);
    let (mut out_ids, mut out_mask, mut out_labels) = (Vec::new(), Vec::new(), Vec::new());
    for (r, (row, m)) in ids.iter().zip(&mask).enumerate() {
        let pad = m.iter().take_while(|&&x| x == 0).count();
        let insert = |values: &[i64], fill: i64| {
            let mut v = values[..pad].to_vec();
            v.extend(std::iter::repeat_n(fill, virtual_tokens));
            v.extend_from_slice(&values[pad..]);
            v
        };
        out_ids.push(insert(row, id));
        out_mask.push(insert(m, 1));
        out_labels.push(labels.as_ref().map_or_else(Vec::new, |l| insert(&l[r], -100)));
    }
    let labels =
        if labels.is_some() { ids_tensor(&out_labels) } else { Tensor::zeros([0], (Kind::Int64, tch::Device::Cpu)) };
    (ids_tensor(&out_ids), ids_tensor(&out_mask), labels)
}

/// Logits of the real positions of PEFT's batch, ours shifted past the virtual tokens.
fn check_logits(model: &Model, prompt: &Prompt, id: i64, padded: &Value, theirs: &Tensor, what: &str) {
    let n = prompt.virtual_tokens() as usize;
    let (ids, mask, _) = rows(padded, None, n, id);
    let mask = mask.to_device(device());
    let logits = tch::no_grad(|| {
        let injected = prompt.embed(model, &ids, id).unwrap();
        model.lm_logits(&model.forward(injected.input(), Some(&mask), None).unwrap())
    });
    let theirs_mask = ids_tensor(&i64_rows(&padded["attention_mask"])).to_device(device());
    let t = theirs.size()[1];
    // Real positions of PEFT's batch sit at the same index in ours plus n (left padding stays in front).
    let real = theirs_mask.unsqueeze(-1).to_kind(Kind::Float);
    let ours = logits.narrow(1, n as i64, t);
    let diff = max_abs_diff(&(ours * &real), &(theirs * &real));
    assert!(diff <= tol(1e-5), "{what}: logits differ by {diff}");
}

#[test]
fn logits_match_peft_on_right_and_left_padded_batches() {
    let model = demo_model();
    let spec = reference();
    for name in CASES {
        let (prompt, _, id) = prompt(&model, name);
        let all = tensors(&format!("{name}_tensors.safetensors"));
        check_logits(&model, &prompt, id, &spec["right"], &named(&all, "right_logits"), &format!("{name} right"));
        check_logits(&model, &prompt, id, &spec["left"], &named(&all, "left_logits"), &format!("{name} left"));
    }
}

#[test]
fn loss_and_gradients_match_peft_and_reach_only_the_prefix() {
    let model = demo_model();
    let spec = reference();
    for name in CASES {
        let (prompt, _, id) = prompt(&model, name);
        let n = prompt.virtual_tokens() as usize;
        let (ids, mask, labels) = rows(&spec["right"], Some(&spec["labels"]), n, id);
        let injected = prompt.embed(&model, &ids, id).unwrap();
        let loss = model.loss(injected.input(), Some(&mask.to_device(device())), &labels.to_device(device())).unwrap();
        let theirs = spec["cases"][name]["loss"].as_f64().unwrap();
        assert!(
            (loss.double_value(&[]) - theirs).abs() <= tol(1e-5),
            "{name}: loss {} vs {theirs}",
            loss.double_value(&[])
        );
        loss.backward();
        let all = tensors(&format!("{name}_tensors.safetensors"));
        let variables = prompt.var_store().variables();
        assert_eq!(variables.len(), all.iter().filter(|(k, _)| k.starts_with("grad.")).count(), "{name}: parameters");
        for (var_name, var) in variables {
            let diff = max_abs_diff(&var.grad(), &named(&all, &format!("grad.{var_name}")));
            assert!(diff <= tol(1e-5), "{name}: gradient of {var_name} differs by {diff}");
        }
        // The frozen model has no parameters that require grad: nothing there collects a gradient.
        assert!(!model.token_embeddings().requires_grad());
    }
}

#[test]
fn greedy_generation_matches_peft() {
    let model = demo_model();
    let spec = reference();
    for name in CASES {
        let (prompt, tok, id) = prompt(&model, name);
        let n = prompt.virtual_tokens() as usize;
        let texts: Vec<&str> = spec["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        let inputs: Vec<Vec<i64>> = texts.iter().map(|t| [vec![id; n], tok.encode_ids(t).unwrap()].concat()).collect();
        for use_cache in [true, false] {
            let config = GenerationConfig { max_new_tokens: 6, eos_token_id: Some(2), use_cache, ..Default::default() };
            let out = tch::no_grad(|| generate(&model, &tok, &inputs, &[prompt.injection(id)], &config)).unwrap();
            for (i, theirs) in i64_rows(&spec["cases"][name]["generated"]).iter().enumerate() {
                // transformers pads a row that ended with eos; ours stops there.
                let end = theirs.iter().position(|&t| t == 2).map_or(theirs.len(), |p| p + 1);
                assert_eq!(out[i][0].new_ids, theirs[..end], "{name}, input {i}, cache {use_cache}");
            }
        }
    }
}

/// PEFT's saved adapter (keys and values baked) reads as a deep prompt that computes PEFT's logits, and ours
/// writes the same files back.
#[test]
fn peft_prefix_adapters_import_and_export() {
    let model = demo_model();
    let spec = reference();
    for name in CASES {
        let dir = fixture(&format!("reference/peft/{name}"));
        let imported = Prompt::load(&dir, device()).unwrap();
        assert_eq!(imported.virtual_tokens(), spec["cases"][name]["config"]["num_virtual_tokens"].as_i64().unwrap());
        let mut tok = Tokenizer::from_dir(&fixture("demo-model")).unwrap();
        let id = imported.add_token(&mut tok).unwrap();
        let all = tensors(&format!("{name}_tensors.safetensors"));
        check_logits(&model, &imported, id, &spec["right"], &named(&all, "right_logits"), &format!("{name} import"));

        // Our export of the trained-parameter prompt holds PEFT's numbers.
        let (ours, _, _) = prompt(&model, name);
        let out = tempfile::tempdir().unwrap();
        ours.save_peft(out.path()).unwrap();
        let read = |d: &std::path::Path| Tensor::read_safetensors(d.join(PEFT_WEIGHTS_FILE)).unwrap().remove(0).1;
        let diff = max_abs_diff(&read(out.path()), &read(&dir));
        assert!(diff <= tol(1e-5), "{name}: exported keys and values differ by {diff}");
        let config = |d: &std::path::Path| -> Value {
            serde_json::from_str(&std::fs::read_to_string(d.join(PEFT_CONFIG_FILE)).unwrap()).unwrap()
        };
        let (mine, theirs) = (config(out.path()), config(&dir));
        for key in ["peft_type", "task_type", "num_virtual_tokens", "token_dim", "num_layers", "prefix_projection"] {
            assert_eq!(mine[key], theirs[key], "{name}: adapter_config.json {key}");
        }
        if theirs["prefix_projection"].as_bool().unwrap() {
            assert_eq!(mine["encoder_hidden_size"], theirs["encoder_hidden_size"], "{name}: encoder_hidden_size");
        }
    }
}
