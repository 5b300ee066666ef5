//! A GGUF checkpoint as a Llama-family model (`llama`: Llama 2/3, SmolLM2, Mistral written as llama; `qwen2`):
//! the config from the metadata as transformers' GGUF loader maps it, and the tensors renamed to Hugging Face's
//! names, dequantized, with the row permutation llama.cpp's converter applies to `q` and `k` undone.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use tch::Tensor;

use super::llama_config::LlamaConfig;
use crate::gguf::{Gguf, TensorInfo};

/// The `general.architecture` values read, and the `model_type` each becomes.
pub const ARCHITECTURES: [&str; 2] = ["llama", "qwen2"];

/// Rotary scaling factors per frequency (Llama 3.1's scaling, as llama.cpp's converter stores it).
pub const ROPE_FACTORS: &str = "rope_freqs.weight";

/// The architecture a GGUF file declares, refused unless it is one of [`ARCHITECTURES`].
pub fn architecture(g: &Gguf) -> Result<&str> {
    let arch = g.required("general.architecture", g.string("general.architecture"))?;
    if !ARCHITECTURES.contains(&arch) {
        bail!(
            "{}: GGUF architecture '{arch}' is not supported; ruprompts reads {} from GGUF (and GPT-2, Llama, \
             Mistral and Qwen2 from Hugging Face folders)",
            g.path().display(),
            ARCHITECTURES.join(", ")
        );
    }
    Ok(arch)
}

/// The config transformers builds from the metadata (`{arch}.block_count` → `num_hidden_layers`, …); the LM head
/// is tied when the file has no `output.weight`.
pub fn llama_config(g: &Gguf) -> Result<LlamaConfig> {
    let arch = architecture(g)?;
    let key = |k: &str| format!("{arch}.{k}");
    let mut config = Map::new();
    config.insert("model_type".into(), json!(arch));
    let ints = [
        ("block_count", "num_hidden_layers"),
        ("feed_forward_length", "intermediate_size"),
        ("embedding_length", "hidden_size"),
        ("attention.head_count", "num_attention_heads"),
        ("attention.head_count_kv", "num_key_value_heads"),
        ("context_length", "max_position_embeddings"),
        ("vocab_size", "vocab_size"),
    ];
    for (from, to) in ints {
        if let Some(v) = g.uint(&key(from))? {
            config.insert(to.into(), json!(v));
        }
    }
    // transformers reads head_dim from the rotary dimensions for llama only.
    if arch == "llama" {
        if let Some(v) = g.uint(&key("rope.dimension_count"))? {
            config.insert("head_dim".into(), json!(v));
        }
    }
    for (from, to) in [("rope.freq_base", "rope_theta"), ("attention.layer_norm_rms_epsilon", "rms_norm_eps")] {
        if let Some(v) = g.float(&key(from))? {
            config.insert(to.into(), json!(v));
        }
    }
    if !config.contains_key("vocab_size") {
        let tokens = g.strings("tokenizer.ggml.tokens")?.map(<[String]>::len);
        let n = tokens.with_context(|| {
            format!("{}: no {} and no tokenizer.ggml.tokens", g.path().display(), key("vocab_size"))
        })?;
        config.insert("vocab_size".into(), json!(n));
    }
    // The defaults of transformers' config classes.
    config.entry("max_position_embeddings").or_insert(json!(if arch == "qwen2" { 32768 } else { 2048 }));
    match g.string(&key("rope.scaling.type"))? {
        None | Some("none") => {}
        Some("linear") => {
            let factor = g.required(&key("rope.scaling.factor"), g.float(&key("rope.scaling.factor")))?;
            config.insert("rope_scaling".into(), json!({"rope_type": "linear", "factor": factor}));
        }
        Some(other) => bail!(
            "{}: {} is '{other}', which ruprompts does not apply (linear is)",
            g.path().display(),
            key("rope.scaling.type")
        ),
    }
    config.insert("tie_word_embeddings".into(), json!(g.tensor("output.weight").is_none()));
    for required in ["num_hidden_layers", "intermediate_size", "hidden_size", "num_attention_heads"] {
        if !config.contains_key(required) {
            let from = ints.iter().find(|(_, to)| *to == required).map(|(from, _)| key(from)).unwrap_or_default();
            bail!("{}: metadata {from} is missing", g.path().display());
        }
    }
    let config: LlamaConfig = serde_json::from_value(Value::Object(config))
        .with_context(|| format!("{}: the metadata does not make a model config", g.path().display()))?;
    config.validate().with_context(|| format!("{} (GGUF metadata)", g.path().display()))?;
    Ok(config)
}

/// The Hugging Face name of a llama.cpp tensor name (unknown names are kept, so the shape check names them).
fn hf_name(name: &str) -> String {
    let fixed = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(fixed) = fixed {
        return fixed.to_string();
    }
    let Some((layer, rest)) = name.strip_prefix("blk.").and_then(|r| r.split_once('.')) else {
        return name.to_string();
    };
    let Some((part, suffix)) = rest.split_once('.') else { return name.to_string() };
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return name.to_string(),
    };
    format!("model.layers.{layer}.{hf}.{suffix}")
}

/// A tensor dequantized to f32 in torch's shape.
pub fn dequantized(g: &Gguf, t: &TensorInfo) -> Result<Tensor> {
    Tensor::f_from_slice(&g.to_f32(t))
        .and_then(|x| x.f_reshape(t.shape()))
        .with_context(|| format!("{}: cannot read tensor '{}'", g.path().display(), t.name))
}

/// llama.cpp's converter interleaves the two rotary halves of each head's rows of `q` and `k` (its rope rotates
/// neighbouring pairs); transformers' reverse: `[heads, half, 2, …]` → `[heads, 2, half, …]`.
fn unpermute(w: &Tensor, heads: i64) -> Tensor {
    let shape = w.size();
    let mut view = vec![heads, shape[0] / heads / 2, 2];
    view.extend(&shape[1..]);
    w.reshape(view.as_slice()).transpose(1, 2).reshape(shape.as_slice())
}

/// Tensors under their Hugging Face names, each with the file it came from (what `StateDict` checks).
pub type Named = Vec<(String, PathBuf, Tensor)>;

/// Every tensor of the file under its Hugging Face name, dequantized to f32, with the file as its origin, and
/// the rotary factors if the file has them. `llama` files get `q` and `k` unpermuted.
pub fn tensors(g: &Gguf, config: &LlamaConfig) -> Result<(Named, Option<Tensor>)> {
    let permuted = architecture(g)? == "llama";
    let mut out = Vec::with_capacity(g.tensors().len());
    let mut factors = None;
    for t in g.tensors() {
        let tensor = dequantized(g, t)?;
        if t.name == ROPE_FACTORS {
            factors = Some(tensor);
            continue;
        }
        let name = hf_name(&t.name);
        let tensor = match name.rsplit('.').nth(1) {
            Some("q_proj") if permuted => unpermute(&tensor, config.num_attention_heads),
            Some("k_proj") if permuted => unpermute(&tensor, config.kv_heads()),
            _ => tensor,
        };
        out.push((name, g.path().to_path_buf(), tensor));
    }
    Ok((out, factors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_transformers_names() {
        assert_eq!(hf_name("blk.11.attn_q.bias"), "model.layers.11.self_attn.q_proj.bias");
        assert_eq!(hf_name("blk.0.ffn_norm.weight"), "model.layers.0.post_attention_layernorm.weight");
        assert_eq!(hf_name("output.weight"), "lm_head.weight");
        assert_eq!(hf_name("blk.0.attn_qkv.weight"), "blk.0.attn_qkv.weight");
    }

    #[test]
    fn unpermute_undoes_the_converters_permutation() {
        // llama.cpp: reshape(heads, 2, half, in).swapaxes(1, 2).
        let w = Tensor::arange(2 * 8 * 3, (tch::Kind::Float, tch::Device::Cpu)).reshape([16, 3]);
        let permuted = w.reshape([2, 2, 4, 3]).transpose(1, 2).reshape([16, 3]);
        assert!(unpermute(&permuted, 2).equal(&w));
    }
}
