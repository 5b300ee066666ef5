//! Bad checkpoints give errors that name the file and the tensor; nothing panics.

use crate::common;

use std::path::Path;

use common::*;
use ruprompts::model::{Gpt2Config, Input, Model};
use tch::{Device, Kind, Tensor};

/// A writable copy of a fixture model directory.
fn copy_model(name: &str) -> tempfile::TempDir {
    init();
    copy_fixture(name)
}

fn load_err(dir: &Path) -> String {
    format!("{:#}", Model::from_dir(dir, Kind::Float, Device::Cpu).unwrap_err())
}

fn edit_config(dir: &Path, key: &str, value: serde_json::Value) {
    edit_json(&dir.join("config.json"), key, value);
}

#[test]
fn missing_directory_and_missing_weights() {
    let err = load_err(Path::new("/nonexistent/model"));
    assert!(err.contains("cannot read /nonexistent/model/config.json"), "{err}");
    let dir = copy_model("tiny-gpt2-ru");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("no weights in")
            && err.contains("model.safetensors, model.safetensors.index.json, pytorch_model.bin"),
        "{err}"
    );
}

#[test]
fn truncated_or_corrupt_weight_files() {
    for (model, file) in [("tiny-gpt2-ru", "model.safetensors"), ("tiny-gpt2-ru-bin", "pytorch_model.bin")] {
        let dir = copy_model(model);
        let path = dir.path().join(file);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_err(dir.path());
        assert!(err.contains(&path.display().to_string()) && err.contains("truncated or corrupt"), "{file}: {err}");
        std::fs::write(&path, b"definitely not weights").unwrap();
        let err = load_err(dir.path());
        assert!(err.contains(&path.display().to_string()) && err.contains("truncated or corrupt"), "{file}: {err}");
    }
}

#[test]
fn config_and_weights_of_different_sizes() {
    let dir = copy_model("tiny-gpt2-ru");
    edit_config(dir.path(), "n_layer", 3.into());
    let err = load_err(dir.path());
    assert!(err.contains("tensor 'h.2.ln_1.weight' is missing") && err.contains("model.safetensors"), "{err}");

    edit_config(dir.path(), "n_layer", 1.into());
    let err = load_err(dir.path());
    assert!(err.contains("unexpected tensors") && err.contains("h.1.attn.c_attn.bias"), "{err}");

    edit_config(dir.path(), "n_layer", 2.into());
    edit_config(dir.path(), "n_embd", 128.into());
    let err = load_err(dir.path());
    assert!(err.contains("tensor 'wte.weight' has shape [2000, 64]") && err.contains("implies [2000, 128]"), "{err}");
}

#[test]
fn unsupported_architecture_and_malformed_config() {
    let dir = copy_model("tiny-gpt2-ru");
    edit_config(dir.path(), "model_type", "falcon".into());
    let err = load_err(dir.path());
    assert!(err.contains("config.json: model_type 'falcon' is not supported; ruprompts runs gpt2, llama"), "{err}");
    // A supported family whose config lacks that family's fields.
    edit_config(dir.path(), "model_type", "llama".into());
    let err = load_err(dir.path());
    assert!(err.contains("is not a Llama-family config: missing field `hidden_size`"), "{err}");
    std::fs::write(dir.path().join("config.json"), r#"{"n_embd": 64}"#).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("config.json is not a valid GPT-2 config") && err.contains("vocab_size"), "{err}");
}

/// A checkpoint split into shards with an index loads to the same model, and a missing shard is named.
#[test]
fn sharded_safetensors_checkpoint() {
    let dir = copy_model("tiny-gpt2-ru");
    let tensors = Tensor::read_safetensors(dir.path().join("model.safetensors")).unwrap();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let (first, second): (Vec<_>, Vec<_>) = tensors.iter().partition(|(n, _)| n.contains("h.0.") || n.contains("wte"));
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in [("model-00001-of-00002.safetensors", &first), ("model-00002-of-00002.safetensors", &second)] {
        let named: Vec<(&str, &Tensor)> = part.iter().map(|(n, t)| (n.as_str(), t)).collect();
        Tensor::write_safetensors(&named, dir.path().join(shard)).unwrap();
        for (n, _) in part.iter() {
            weight_map.insert(n.clone(), shard.into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();

    let sharded = Model::from_dir(dir.path(), Kind::Float, Device::Cpu).unwrap();
    let ids = Tensor::from_slice(&[409i64, 278, 332]).unsqueeze(0);
    let logits = |m: &Model| tch::no_grad(|| m.lm_logits(&m.forward(Input::Ids(&ids), None, None).unwrap()));
    assert_eq!(max_abs_diff(&logits(&sharded), &logits(&tiny_model())), 0.0);

    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = load_err(dir.path());
    assert!(err.contains("names shard 'model-00002-of-00002.safetensors', which does not exist"), "{err}");
}

#[test]
fn bad_forward_inputs_are_errors() {
    let model = tiny_model();
    let ids = Tensor::zeros([1, 300], (Kind::Int64, Device::Cpu));
    let err = model.forward(Input::Ids(&ids), None, None).unwrap_err().to_string();
    assert!(err.contains("exceeds the model's context window n_positions=256"), "{err}");
    let embeds = Tensor::zeros([1, 3, 32], (Kind::Float, Device::Cpu));
    let err = model.forward(Input::Embeds(&embeds), None, None).unwrap_err().to_string();
    assert!(err.contains("input embeddings must be [batch, seq, 64]"), "{err}");
    let ids = Tensor::from_slice(&[5i64, 2000, 7]).unsqueeze(0);
    let err = model.forward(Input::Ids(&ids), None, None).unwrap_err().to_string();
    assert!(err.contains("token id 2000 is outside the embedding matrix (vocab_size=2000)"), "{err}");
    let ids = Tensor::zeros([2, 3], (Kind::Int64, Device::Cpu));
    let mask = Tensor::ones([2, 4], (Kind::Int64, Device::Cpu));
    let err = model.forward(Input::Ids(&ids), Some(&mask), None).unwrap_err().to_string();
    assert!(err.contains("attention mask must be [2, 3]"), "{err}");
}

#[test]
fn real_rugpt3_small_config_loads_although_it_has_n_ctx_and_n_positions() {
    let config = Gpt2Config::from_file(&fixture("rugpt3/config.json")).unwrap();
    assert_eq!(
        (config.n_layer, config.n_embd, config.n_head, config.n_positions, config.vocab_size),
        (12, 768, 12, 2048, 50264)
    );
    // transformers' GPT2LMHeadModel(config).num_parameters() for these shapes (tied head).
    assert_eq!(config.num_parameters(), 125_231_616);
}

#[test]
fn models_built_in_code_check_their_config_too() {
    let mut config = Gpt2Config::from_file(&model_dir().join("config.json")).unwrap();
    config.n_head = 0;
    let err = format!("{:#}", Model::random(config.clone(), Kind::Float, Device::Cpu).unwrap_err());
    assert_eq!(err, "the model config: n_head=0 must be positive");
    config.n_head = 3;
    let err = format!("{:#}", Model::from_tensors(config, Vec::new()).unwrap_err());
    assert_eq!(err, "the model config: n_embd=64 is not divisible by n_head=3");
}
