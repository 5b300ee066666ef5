//! GGUF checkpoints against transformers 4.57.6's GGUF load (`reference/gguf.*`, made with the files in `gguf/` by
//! tests/fixtures/scripts/09_gguf_reference.py): dequantized values of every tensor type, logits, loss, greedy ids
//! and continuation log-probs, tokenizer ids and decodings, chat-template renders; llama.cpp's rotary factors
//! against the Hugging Face model they came from; and files that lie, refused by name.

use crate::common;

use std::path::PathBuf;

use common::*;
use ruprompts::gguf::Gguf;
use ruprompts::model::{Backbone, Input, ModelSource};
use serde_json::Value;
use tch::{Kind, Tensor};

const FILES: [&str; 3] = ["tiny-llama-mixed", "tiny-qwen2", "tiny-llama-spm"];

fn reference() -> Value {
    load_json("reference/gguf.json")
}

fn reference_tensors() -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(fixture("reference/gguf.safetensors")).unwrap()
}

fn gguf(name: &str) -> PathBuf {
    fixture(&format!("gguf/{name}.gguf"))
}

fn backbone(name: &str) -> Backbone {
    init();
    let mut source = ModelSource::local(gguf(name));
    source.device = ruprompts::device::DeviceChoice::Cpu;
    Backbone::load_local(&source).unwrap()
}

#[test]
fn every_tensor_type_dequantizes_as_the_gguf_package_does() {
    let spec = reference();
    let file = Gguf::open(&gguf("tiny-llama-mixed")).unwrap();
    let tensors = reference_tensors();
    let types = spec["dequant"].as_object().unwrap();
    assert_eq!(types.len(), 14);
    for (name, ty) in types {
        let info = file.tensor(name).unwrap();
        assert_eq!(info.ty.name(), ty.as_str().unwrap(), "{name}");
        let ours = Tensor::from_slice(&file.to_f32(info)).reshape(info.shape()).narrow(0, 0, 2);
        let theirs = &tensors.iter().find(|(n, _)| *n == format!("dequant.{name}")).unwrap().1;
        assert!(ours.equal(theirs), "{name} ({ty}) differs from the gguf package by {}", max_abs_diff(&ours, theirs));
    }
}

#[test]
fn logits_loss_greedy_ids_and_log_probs_match_transformers_gguf_load() {
    let spec = reference();
    let tensors = reference_tensors();
    for name in FILES {
        let case = &spec["files"][name];
        let Backbone { model, tokenizer, .. } = backbone(name);
        let (ids, mask) = (ids_tensor(&i64_rows(&case["input_ids"])), ids_tensor(&i64_rows(&case["attention_mask"])));
        let ours = tch::no_grad(|| model.lm_logits(&model.forward(Input::Ids(&ids), Some(&mask), None).unwrap()));
        let real = mask.unsqueeze(-1).to_kind(Kind::Float);
        let theirs = &tensors.iter().find(|(n, _)| *n == format!("{name}.right_logits")).unwrap().1;
        let diff = max_abs_diff(&(&ours * &real), &(theirs * &real));
        assert!(diff <= 1e-4, "{name}: logits differ by {diff}");

        let labels = ids.masked_fill(&mask.eq(0), -100);
        let loss = tch::no_grad(|| model.loss(Input::Ids(&ids), Some(&mask), &labels).unwrap()).double_value(&[]);
        let expected = case["loss"].as_f64().unwrap();
        assert!((loss - expected).abs() <= 1e-5, "{name}: loss {loss} vs {expected}");

        let texts = &spec["files"][name]["tokenizer"]["texts"];
        for (i, expected) in case["greedy"].as_array().unwrap().iter().enumerate() {
            let prompt = tokenizer.encode_sequence_ids(texts[i]["text"].as_str().unwrap()).unwrap();
            assert_eq!(prompt, i64_vec(&texts[i]["ids"]), "{name}: text {i}'s ids");
            let ids = ids_tensor(&[prompt]);
            let expected = i64_vec(expected);
            assert_eq!(greedy(&model, &ids, &ids.ones_like(), expected.len(), true)[0], expected, "{name}: text {i}");
        }

        for c in case["continuations"].as_array().unwrap() {
            let (head, tail) = (i64_vec(&c["context_ids"]), i64_vec(&c["continuation_ids"]));
            let all = ids_tensor(&[[head.clone(), tail.clone()].concat()]);
            let logits = tch::no_grad(|| model.lm_logits(&model.forward(Input::Ids(&all), None, None).unwrap()));
            let logprobs =
                logits.get(0).narrow(0, head.len() as i64 - 1, tail.len() as i64).log_softmax(-1, Kind::Float);
            let sum = logprobs.gather(1, &Tensor::from_slice(&tail).unsqueeze(1), false).sum(Kind::Double);
            let expected = c["logprob"].as_f64().unwrap();
            assert!((sum.double_value(&[]) - expected).abs() <= 1e-4, "{name}: log-prob {sum} vs {expected}");
        }
    }
}

#[test]
fn tokenizers_and_chat_templates_match_transformers() {
    let spec = reference();
    for name in FILES {
        let tokenizer = ruprompts::tokenizer::Tokenizer::load(&gguf(name)).unwrap();
        let reference = &spec["files"][name]["tokenizer"];
        for case in reference["texts"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            assert_eq!(tokenizer.encode_sequence_ids(text).unwrap(), i64_vec(&case["ids"]), "{name}: {text:?}");
            let bare = tokenizer.encode_ids(text).unwrap();
            assert_eq!(bare, i64_vec(&case["ids_no_specials"]), "{name}: {text:?} without specials");
            assert_eq!(
                tokenizer.decode(&bare).unwrap(),
                case["decoded"].as_str().unwrap(),
                "{name}: decoding {text:?}"
            );
        }
        let template = tokenizer.chat_template().unwrap();
        for case in reference["chat"].as_array().unwrap() {
            let messages = case["messages"].as_array().unwrap();
            for generation in [false, true] {
                let rendered = template.render(messages, generation);
                match &case[format!("generation_prompt_{generation}")] {
                    Value::String(expected) => assert_eq!(&rendered.unwrap(), expected, "{name}: {messages:?}"),
                    _ => {
                        let error = format!("{:#}", rendered.unwrap_err());
                        assert!(error.contains(case["error"].as_str().unwrap()), "{name}: {error}");
                    }
                }
            }
        }
    }
}

/// llama.cpp stores Llama 3.1's rope scaling as per-frequency factors (`rope_freqs.weight`); dividing by them gives
/// the Hugging Face model's own logits (transformers' GGUF load drops that tensor).
#[test]
fn rotary_factors_give_the_hugging_face_models_logits() {
    let spec = load_json("reference/llama_family.json");
    let case = &spec["models"]["tiny-llama"]["right"];
    let model = backbone("tiny-llama-rope").model;
    let (ids, mask) = (ids_tensor(&i64_rows(&case["input_ids"])), ids_tensor(&i64_rows(&case["attention_mask"])));
    let ours = tch::no_grad(|| model.lm_logits(&model.forward(Input::Ids(&ids), Some(&mask), None).unwrap()));
    let theirs = Tensor::read_safetensors(fixture("reference/llama_family.safetensors"))
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "tiny-llama.right_logits")
        .unwrap()
        .1;
    let real = mask.unsqueeze(-1).to_kind(Kind::Float);
    let diff = max_abs_diff(&(&ours * &real), &(&theirs * &real));
    assert!(diff <= 1e-4, "logits differ from the Hugging Face model by {diff}");
}

/// Little-endian GGUF v3 built by hand: `kv` metadata entries (key, type, value bytes) and tensor entries.
fn gguf_bytes(tensor_count: u64, kv: &[(&str, u32, Vec<u8>)], tensors: &[u8]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(tensor_count.to_le_bytes());
    out.extend((kv.len() as u64).to_le_bytes());
    for (key, ty, value) in kv {
        out.extend((key.len() as u64).to_le_bytes());
        out.extend(key.as_bytes());
        out.extend(ty.to_le_bytes());
        out.extend(value);
    }
    out.extend(tensors);
    out
}

fn string(s: &str) -> Vec<u8> {
    [(s.len() as u64).to_le_bytes().to_vec(), s.as_bytes().to_vec()].concat()
}

fn open_error(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lying.gguf");
    std::fs::write(&path, bytes).unwrap();
    format!("{:#}", Gguf::open(&path).unwrap_err())
}

#[test]
fn files_that_lie_are_refused_by_name_before_anything_is_allocated() {
    let arch = ("general.architecture", 8, string("llama"));
    let huge_array =
        [9u32.to_le_bytes().to_vec(), 8u32.to_le_bytes().to_vec(), u64::MAX.to_le_bytes().to_vec()].concat();
    let tensor = |dims: &[u64], ty: u32, offset: u64| {
        let mut t = string("w");
        t.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| t.extend(d.to_le_bytes()));
        t.extend(ty.to_le_bytes());
        t.extend(offset.to_le_bytes());
        t
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"GGML\x03\0\0\0".to_vec(), "not GGUF's magic"),
        (gguf_bytes(u64::MAX, &[], &[]), "the tensor count says 18446744073709551615"),
        (
            gguf_bytes(0, &[("tokenizer.ggml.tokens", 9, huge_array)], &[]),
            "metadata tokenizer.ggml.tokens's element count",
        ),
        (gguf_bytes(0, &[("k", 8, u64::MAX.to_le_bytes().to_vec())], &[]), "metadata k's length"),
        (gguf_bytes(0, &[("k", 13, vec![])], &[]), "metadata k has value type 13"),
        (gguf_bytes(0, &[arch.clone(), arch.clone()], &[]), "metadata general.architecture appears twice"),
        (gguf_bytes(1, std::slice::from_ref(&arch), &tensor(&[32, 4], 10, 0)), "tensor 'w' has type Q2_K (10)"),
        (gguf_bytes(1, std::slice::from_ref(&arch), &tensor(&[u64::MAX, 4], 0, 0)), "more values than the file"),
        (gguf_bytes(1, std::slice::from_ref(&arch), &tensor(&[16], 2, 0)), "not whole blocks of 32"),
        (gguf_bytes(1, std::slice::from_ref(&arch), &tensor(&[8, 8], 0, 0)), "run past the file's end"),
        (gguf_bytes(1, std::slice::from_ref(&arch), &tensor(&[4, 4, 4, 4, 4], 0, 0)), "has 5 dimensions"),
        ([gguf_bytes(0, &[], &[])[..4].to_vec(), 3u32.to_be_bytes().to_vec()].concat(), "big-endian"),
    ];
    for (bytes, expected) in cases {
        let error = open_error(&bytes);
        assert!(error.contains("lying.gguf") && error.contains(expected), "expected {expected:?} in: {error}");
    }
    // A readable file whose metadata is wrong for a model: the key is named.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    let kv = [("general.architecture", 8, string("falcon"))];
    std::fs::write(&path, gguf_bytes(0, &kv, &[])).unwrap();
    let source = ModelSource::local(&path);
    let error = format!("{:#}", Backbone::load_local(&source).err().unwrap());
    assert!(error.contains("GGUF architecture 'falcon' is not supported") && error.contains("llama, qwen2"), "{error}");
    let kv = [("general.architecture", 8, string("llama")), ("llama.block_count", 8, string("two"))];
    std::fs::write(&path, gguf_bytes(0, &kv, &[])).unwrap();
    let error = format!("{:#}", Backbone::load_local(&source).err().unwrap());
    assert!(error.contains("metadata llama.block_count should be a non-negative integer"), "{error}");
}
