//! The GPT-2 backbone against transformers 4.57 reference outputs (`tests/fixtures/reference/gpt2.json`).

use crate::common;

use common::*;
use ruprompts::model::{Input, Model};
use tch::{Kind, Tensor};

const CASES: [&str; 3] = ["short", "batch", "long"];

fn case_inputs(case: &serde_json::Value) -> (Tensor, Tensor, Vec<i64>) {
    let ids = ids_tensor(&i64_rows(&case["input_ids"]));
    let mask = ids_tensor(&i64_rows(&case["attention_mask"]));
    (ids, mask, i64_vec(&case["lengths"]))
}

/// Max |diff| over the real (unpadded) positions of `[B, T, ..]` tensors (rows of length 0 have none).
fn real_positions_diff(a: &Tensor, b: &Tensor, lengths: &[i64]) -> f64 {
    lengths
        .iter()
        .enumerate()
        .filter(|(_, &len)| len > 0)
        .map(|(row, &len)| max_abs_diff(&a.get(row as i64).narrow(0, 0, len), &b.get(row as i64).narrow(0, 0, len)))
        .fold(0.0, f64::max)
}

fn logits_of(model: &Model, ids: &Tensor, mask: &Tensor) -> Tensor {
    let hidden = tch::no_grad(|| model.forward(Input::Ids(ids), Some(mask), None)).unwrap();
    model.lm_logits(&hidden)
}

#[test]
fn logits_and_final_hidden_states_match_transformers() {
    let model = tiny_model();
    let reference = load_json("reference/gpt2.json");
    for name in CASES {
        let (ids, mask, lengths) = case_inputs(&reference["cases"][name]);
        let hidden = tch::no_grad(|| model.forward(Input::Ids(&ids), Some(&mask), None)).unwrap();
        let logits = model.lm_logits(&hidden);
        assert_eq!(logits.kind(), Kind::Float);
        let diff = real_positions_diff(&logits, &reference_tensor(&format!("{name}.logits")), &lengths);
        eprintln!("{name}: logits max abs diff {diff:.2e}");
        assert!(diff <= tol(1e-4), "{name}: logits differ by {diff}");
        let diff = real_positions_diff(&hidden, &reference_tensor(&format!("{name}.hidden_states.2")), &lengths);
        assert!(diff <= tol(1e-4), "{name}: final hidden states differ by {diff}");
        // Argmax is exact: the smallest top-1/top-2 gap in the reference is 1.2e-3.
        let argmax = i64_rows(&reference["cases"][name]["argmax"]);
        for (row, &len) in lengths.iter().enumerate() {
            let ours = Vec::<i64>::try_from(logits.get(row as i64).narrow(0, 0, len).argmax(-1, false)).unwrap();
            assert_eq!(ours, argmax[row][..len as usize], "{name} row {row}: argmax");
        }
    }
}

#[test]
fn lm_loss_matches_transformers() {
    let model = tiny_model();
    let reference = load_json("reference/gpt2.json");
    for name in CASES {
        let case = &reference["cases"][name];
        let (ids, mask, _) = case_inputs(case);
        let labels = ids.masked_fill(&mask.eq(0), -100);
        let loss = tch::no_grad(|| {
            let hidden = model.forward(Input::Ids(&ids), Some(&mask), None).unwrap();
            model.lm_loss(&hidden, &labels).double_value(&[])
        });
        let expected = case["loss"].as_f64().unwrap();
        eprintln!("{name}: loss diff {:.2e}", (loss - expected).abs());
        assert!((loss - expected).abs() <= tol(1e-5), "{name}: loss {loss} vs {expected}");
    }
}

#[test]
fn pytorch_bin_weights_give_the_same_logits() {
    let st = tiny_model();
    let bin = Model::from_dir(&fixture("tiny-gpt2-ru-bin"), Kind::Float, device()).unwrap();
    let reference = load_json("reference/gpt2.json");
    let (ids, mask, lengths) = case_inputs(&reference["cases"]["batch"]);
    let diff = real_positions_diff(&logits_of(&st, &ids, &mask), &logits_of(&bin, &ids, &mask), &lengths);
    assert!(diff <= tol(1e-6), "bin vs safetensors logits differ by {diff}");
}

#[test]
fn continuation_logprob_sums_match_transformers() {
    let model = tiny_model();
    let reference = load_json("reference/gpt2.json");
    for item in reference["continuation_logprobs"].as_array().unwrap() {
        let context = i64_vec(&item["context_ids"]);
        for cand in item["candidates"].as_array().unwrap() {
            let ids = i64_vec(&cand["input_ids"]);
            let n = i64_vec(&cand["continuation_ids"]).len() as i64;
            let input = ids_tensor(std::slice::from_ref(&ids));
            let logp = tch::no_grad(|| model.lm_logits(&model.forward(Input::Ids(&input), None, None).unwrap()))
                .log_softmax(-1, Kind::Float)
                .get(0);
            let start = context.len() as i64 - 1;
            let targets = Tensor::from_slice(&ids[context.len()..]);
            let sum =
                logp.narrow(0, start, n).gather(1, &targets.unsqueeze(1), false).sum(Kind::Float).double_value(&[]);
            let expected = cand["sum_logprob"].as_f64().unwrap();
            eprintln!("{}: log-prob sum diff {:.2e}", cand["continuation"], (sum - expected).abs());
            assert!((sum - expected).abs() <= tol(1e-4), "{:?}: {sum} vs {expected}", cand["continuation"]);
        }
    }
}

/// Each row of a padded batch (left or right padding) equals the same text run alone.
#[test]
fn padded_batch_rows_equal_unpadded_singles() {
    let model = tiny_model();
    let reference = load_json("reference/gpt2.json");
    let rows: Vec<Vec<i64>> = i64_rows(&reference["cases"]["batch"]["input_ids"]);
    let lengths = i64_vec(&reference["cases"]["batch"]["lengths"]);
    let width = *lengths.iter().max().unwrap() as usize;
    for left in [false, true] {
        let mut ids = Vec::new();
        let mut mask = Vec::new();
        for (row, &len) in rows.iter().zip(&lengths) {
            let real = &row[..len as usize];
            let pad = vec![0i64; width - real.len()];
            let (r, m) = if left {
                ([pad.clone(), real.to_vec()].concat(), [vec![0; pad.len()], vec![1; real.len()]].concat())
            } else {
                ([real.to_vec(), pad.clone()].concat(), [vec![1; real.len()], vec![0; pad.len()]].concat())
            };
            ids.push(r);
            mask.push(m);
        }
        let batch = logits_of(&model, &ids_tensor(&ids), &ids_tensor(&mask));
        for (i, (row, &len)) in rows.iter().zip(&lengths).enumerate() {
            let single_ids = ids_tensor(&[row[..len as usize].to_vec()]);
            let single = logits_of(&model, &single_ids, &Tensor::ones_like(&single_ids));
            let offset = if left { width as i64 - len } else { 0 };
            let diff = max_abs_diff(&batch.get(i as i64).narrow(0, offset, len), &single.get(0));
            eprintln!("left={left} row {i}: batched vs single {diff:.2e}");
            assert!(diff <= tol(1e-5), "left={left} row {i}: batched vs single logits differ by {diff}");
        }
    }
}

/// Feeding a sequence in chunks through the KV cache equals one full forward, also with left padding.
#[test]
fn kv_cache_chunks_equal_full_forward() {
    let model = tiny_model();
    let reference = load_json("reference/gpt2.json");
    let ids: Vec<i64> = i64_rows(&reference["cases"]["long"]["input_ids"])[0][..40].to_vec();
    let padded = ids_tensor(&[[vec![0i64; 5], ids.clone()].concat()]);
    let mask = ids_tensor(&[[vec![0i64; 5], vec![1; ids.len()]].concat()]);
    let full = logits_of(&model, &padded, &mask);
    let mut cache = model.new_cache();
    let mut pieces = Vec::new();
    let mut start = 0;
    for chunk in [20i64, 1, 1, 13, 10] {
        let part = padded.narrow(1, start, chunk);
        let hidden = tch::no_grad(|| {
            model.forward(Input::Ids(&part), Some(&mask.narrow(1, 0, start + chunk)), Some(&mut cache))
        })
        .unwrap();
        pieces.push(model.lm_logits(&hidden));
        start += chunk;
    }
    assert_eq!(cache.len(), 45);
    let chunked = Tensor::cat(&pieces, 1);
    let diff = max_abs_diff(&chunked.narrow(1, 5, 40), &full.narrow(1, 5, 40));
    assert!(diff <= tol(1e-5), "cached vs full logits differ by {diff}");
}

/// Hidden states from a later position (the last block run there only) are the full forward's, with padding,
/// without a mask, and through the cache; the loss that uses them equals the loss of the full forward, and so do
/// its gradients.
#[test]
fn states_from_a_later_position_equal_the_full_forwards_tail() {
    let model = tiny_model();
    let reference = load_json("reference/gpt2.json");
    let (ids, mask, lengths) = case_inputs(&reference["cases"]["batch"]);
    let t = ids.size()[1];
    let full = tch::no_grad(|| model.forward(Input::Ids(&ids), Some(&mask), None)).unwrap();
    let plain = tch::no_grad(|| model.forward(Input::Ids(&ids), None, None)).unwrap();
    for from in [0, 1, t / 2, t - 1] {
        let tail = tch::no_grad(|| model.forward_from(Input::Ids(&ids), Some(&mask), None, from)).unwrap();
        assert_eq!(tail.size(), [ids.size()[0], t - from, model.config().n_embd]);
        // Compare the positions each row really has (right padding past its length).
        let kept: Vec<i64> = lengths.iter().map(|&n| (n - from).max(0)).collect();
        let diff = real_positions_diff(&tail, &full.narrow(1, from, t - from), &kept);
        assert!(diff <= tol(1e-5), "from {from}: states differ by {diff}");
        let tail = tch::no_grad(|| model.forward_from(Input::Ids(&ids), None, None, from)).unwrap();
        let diff = max_abs_diff(&tail, &plain.narrow(1, from, t - from));
        assert!(diff <= tol(1e-5), "from {from}, no mask: states differ by {diff}");
    }
    let reference_hidden = reference_tensor("batch.hidden_states.2");
    let last = tch::no_grad(|| model.forward_from(Input::Ids(&ids), Some(&mask), None, t - 1)).unwrap();
    // Row 1 fills the batch: its last state is transformers' too.
    let diff = max_abs_diff(&last.get(1), &reference_hidden.get(1).narrow(0, t - 1, 1));
    assert!(lengths[1] == t && diff <= tol(1e-4), "the last state differs from transformers' by {diff}");
    assert!(
        matches!(model.forward_from(Input::Ids(&ids), None, None, t), Err(e) if e.to_string().contains("from position"))
    );

    // Through the cache: the whole prefix is cached even though only its last state comes back.
    let mut cache = model.new_cache();
    let prefix = ids.narrow(1, 0, t - 3);
    let states = tch::no_grad(|| {
        model.forward_from(Input::Ids(&prefix), Some(&mask.narrow(1, 0, t - 3)), Some(&mut cache), t - 4)
    })
    .unwrap();
    assert_eq!((cache.len(), states.size()[1]), (t - 3, 1));
    let rest =
        tch::no_grad(|| model.forward(Input::Ids(&ids.narrow(1, t - 3, 3)), Some(&mask), Some(&mut cache))).unwrap();
    let kept: Vec<i64> = lengths.iter().map(|&n| (n - (t - 3)).max(0)).collect();
    let diff = real_positions_diff(&rest, &full.narrow(1, t - 3, 3), &kept);
    assert!(diff <= tol(1e-5), "continuation after a tail-only prefix differs by {diff}");

    // The training loss: rows labelled from different columns (and one row labelled only at its end).
    let labels = ids.copy();
    let _ = labels.narrow(1, 0, 5).get(0).fill_(-100);
    let _ = labels.narrow(1, 0, t - 2).get(1).fill_(-100);
    let labels = labels.where_self(&mask.ne(0), &Tensor::from(-100i64));
    let embeds = model.embed(&ids).unwrap().detach().set_requires_grad(true);
    let quick = model.loss(Input::Embeds(&embeds), Some(&mask), &labels).unwrap();
    let quick_grad = Tensor::run_backward(&[&quick], &[&embeds], false, false).pop().unwrap();
    let slow = model.lm_loss(&model.forward(Input::Embeds(&embeds), Some(&mask), None).unwrap(), &labels);
    let slow_grad = Tensor::run_backward(&[&slow], &[&embeds], false, false).pop().unwrap();
    assert!((quick.double_value(&[]) - slow.double_value(&[])).abs() <= tol(1e-6));
    let diff = max_abs_diff(&quick_grad, &slow_grad);
    assert!(diff <= tol(1e-6) && slow_grad.abs().max().double_value(&[]) > 1e-4, "gradients differ by {diff}");
}

/// Soft prompts train through the frozen model: gradients reach input embeddings, never the weights.
#[test]
fn gradients_flow_to_input_embeddings_only() {
    let model = tiny_model();
    let ids = Tensor::from_slice(&[409i64, 278, 332, 17, 95]).unsqueeze(0);
    let embeds = model.embed(&ids).unwrap().detach().set_requires_grad(true);
    assert!(!model.token_embeddings().requires_grad(), "backbone weights must be frozen");
    let hidden = model.forward(Input::Embeds(&embeds), None, None).unwrap();
    let loss = model.lm_loss(&hidden, &ids);
    loss.backward();
    let grad = embeds.grad();
    assert!(grad.defined() && grad.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    assert!(!model.token_embeddings().grad().defined(), "no gradient may be allocated for the backbone");
    // Same input as embeddings or as ids: same loss.
    let from_ids = tch::no_grad(|| model.lm_loss(&model.forward(Input::Ids(&ids), None, None).unwrap(), &ids));
    assert!((loss.double_value(&[]) - from_ids.double_value(&[])).abs() < tol(1e-6));
}

/// Half-precision weights run and stay close to f32; logits always come back as f32.
#[test]
fn half_precision_backbones_agree_with_f32() {
    common::init();
    let reference = load_json("reference/gpt2.json");
    let (ids, mask, lengths) = case_inputs(&reference["cases"]["batch"]);
    let f32_logits = logits_of(&tiny_model(), &ids, &mask);
    for kind in [Kind::BFloat16, Kind::Half] {
        let model = Model::from_dir(&model_dir(), kind, device()).unwrap();
        assert_eq!(model.token_embeddings().kind(), kind);
        let logits = logits_of(&model, &ids, &mask);
        assert_eq!(logits.kind(), Kind::Float);
        let diff = real_positions_diff(&logits, &f32_logits, &lengths);
        eprintln!("{kind:?} vs f32 logits {diff:.2e}");
        assert!(diff < 0.05, "{kind:?} logits differ from f32 by {diff}");
    }
}
