//! The Llama family against transformers 4.57.6 (`reference/llama_family.*`, made with the tiny checkpoints in
//! `llama-family/` by tests/fixtures/scripts/08_llama_family_reference.py): logits of padded batches, the LM loss
//! and greedy ids with and without the KV cache, for Llama (llama3 and dynamic rope scaling), Mistral (sliding
//! window, sharded weights) and Qwen2 (biases, tied embeddings, linear scaling, a sliding layer).

mod common;

use common::*;
use ruprompts::model::Llama;
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

fn model(name: &str) -> Llama {
    init();
    Llama::from_dir(&fixture(&format!("llama-family/{name}")), Kind::Float, device()).unwrap()
}

fn logits(model: &Llama, ids: &Tensor, mask: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let embeds = model.embed(ids).unwrap();
        let hidden = model.forward_from(&embeds, None, Some(&mask.to_device(device())), None, 0).unwrap();
        model.lm_logits(&hidden)
    })
}

#[test]
fn logits_and_loss_match_transformers_on_padded_batches() {
    let spec = reference();
    for name in MODELS {
        let model = model(name);
        let (ids, mask) = (
            ids_tensor(&i64_rows(&spec["right"]["input_ids"])),
            ids_tensor(&i64_rows(&spec["right"]["attention_mask"])),
        );
        let ours = logits(&model, &ids, &mask);
        let real = mask.to_device(device()).unsqueeze(-1).to_kind(Kind::Float);
        let theirs = logits_reference(&format!("{name}.right_logits")).to_device(device());
        let diff = max_abs_diff(&(&ours * &real), &(&theirs * &real));
        assert!(diff <= tol(1e-4), "{name}: right-padded logits differ by {diff}");

        // The LM loss: every real token after the first, predicted by the position before it.
        let labels = ids_tensor(&i64_rows(&spec["labels"])).to_device(device());
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

        let (ids, mask) =
            (ids_tensor(&i64_rows(&spec["left"]["input_ids"])), ids_tensor(&i64_rows(&spec["left"]["attention_mask"])));
        let last = logits(&model, &ids, &mask).select(1, -1);
        let diff = max_abs_diff(&last, &logits_reference(&format!("{name}.left_last_logits")));
        assert!(diff <= tol(1e-4), "{name}: left-padded last logits differ by {diff}");
    }
}

/// Greedy decoding of the left-padded batch: with the cache one new token a step, without it the whole rows again.
fn greedy(model: &Llama, ids: &Tensor, mask: &Tensor, steps: usize, use_cache: bool) -> Vec<Vec<i64>> {
    let _guard = tch::no_grad_guard();
    let (mut ids, mut mask) = (ids.to_device(device()), mask.to_device(device()));
    let mut cache = use_cache.then(|| model.new_cache());
    let mut input = ids.shallow_clone();
    let mut out = vec![Vec::new(); ids.size()[0] as usize];
    for _ in 0..steps {
        let embeds = model.embed(&input).unwrap();
        let t = embeds.size()[1];
        let hidden = model.forward_from(&embeds, None, Some(&mask), cache.as_mut(), t - 1).unwrap();
        let next = model.lm_logits(&hidden.select(1, 0)).argmax(-1, false);
        for (row, id) in Vec::<i64>::try_from(&next).unwrap().into_iter().enumerate() {
            out[row].push(id);
        }
        let next = next.unsqueeze(1);
        ids = Tensor::cat(&[&ids, &next], 1);
        mask = Tensor::cat(&[&mask, &next.ones_like()], 1);
        input = if use_cache { next } else { ids.shallow_clone() };
    }
    out
}

#[test]
fn greedy_ids_match_transformers_with_and_without_the_cache() {
    let spec = reference();
    let (ids, mask) =
        (ids_tensor(&i64_rows(&spec["left"]["input_ids"])), ids_tensor(&i64_rows(&spec["left"]["attention_mask"])));
    for name in MODELS {
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
