//! Speed of one training step of the `choice` objective (forward, backward, AdamW) on CPU (or `--device cuda`):
//! ours ([`choice_loss`]: each item's context once, then its candidates continuing from the KV cache) against the
//! naive way (every candidate as a whole sequence, context included, in one padded batch), side by side in one
//! run, on the tiny fixture model and a ruGPT-3-small-shaped one with random weights. Two workloads: RuCoS-like
//! (4 items, 120-token contexts, 5 candidates of 3 tokens) and PARus-like (4 items, 40-token contexts, 2
//! candidates of 12 tokens). For reference, the positions run through the model: B·k·(L + a) naive against
//! B·(L + k·a) shared (the linear part of the work; attention, quadratic in length, can push a speed-up past it).
//!
//! `cargo run --release --example bench_choice -- [--steps N] [--device cpu|cuda] [--threads N]`

mod common;

use anyhow::Result;
use ruprompts::model::{pad, Model, Side};
use ruprompts::task::Candidate;
use ruprompts::train::{choice_loss, ChoiceExample};
use tch::{Kind, Tensor};

/// `items` items of a `context`-token context (the prompt first) and `k` candidates of `a` tokens, gold 0.
fn workload(model: &Model, prompt_id: i64, items: usize, context: usize, k: usize, a: usize) -> Vec<ChoiceExample> {
    let vocab = model.config().vocab_size;
    let random =
        |n: usize| Vec::<i64>::try_from(Tensor::randint(vocab, [n as i64], (Kind::Int64, tch::Device::Cpu))).unwrap();
    (0..items)
        .map(|_| {
            let mut ids = vec![prompt_id; common::PROMPT];
            ids.extend(random(context - common::PROMPT));
            ChoiceExample {
                context: ids,
                candidates: (0..k).map(|_| Candidate { answer: random(a), suffix: vec![] }).collect(),
                normalizers: vec![1.0; k],
                gold: 0,
            }
        })
        .collect()
}

/// The naive loss: every candidate row (context + answer) through the model, answer log-probs summed per row.
fn naive_loss(
    model: &Model,
    prompt: &ruprompts::prompt::Prompt,
    prompt_id: i64,
    examples: &[ChoiceExample],
) -> Result<Tensor> {
    let rows: Vec<Vec<i64>> =
        examples.iter().flat_map(|e| e.candidates.iter().map(move |c| [&e.context[..], &c.answer].concat())).collect();
    let slices: Vec<&[i64]> = rows.iter().map(Vec::as_slice).collect();
    let (ids, mask) = pad(&slices, 0, Side::Right);
    let device = model.device();
    let embeds = prompt.embed(model, &ids.to_device(device), prompt_id)?;
    let hidden = model.forward(embeds.input(), Some(&mask.to_device(device)), None)?;
    let mut losses = Vec::new();
    let mut r = 0;
    for e in examples {
        let mut scores = Vec::new();
        for c in &e.candidates {
            let start = e.context.len() as i64 - 1;
            let h = hidden.get(r).narrow(0, start, c.answer.len() as i64);
            let logp = model.lm_logits(&h).log_softmax(-1, Kind::Float);
            let target = Tensor::from_slice(&c.answer).to_device(device).unsqueeze(1);
            scores.push(logp.gather(1, &target, false).sum(Kind::Float));
            r += 1;
        }
        losses.push(-Tensor::stack(&scores, 0).log_softmax(0, Kind::Float).get(e.gold as i64));
    }
    Ok(Tensor::stack(&losses, 0).mean(Kind::Float))
}

fn step_seconds(model: &Model, examples: &[ChoiceExample], naive: bool, steps: usize) -> Result<f64> {
    let (prompt, prompt_id) = common::prefix_prompt(model, common::PROMPT)?;
    let refs: Vec<&ChoiceExample> = examples.iter().collect();
    common::timed_steps(&prompt, steps, || {
        if naive {
            naive_loss(model, &prompt, prompt_id, examples)
        } else {
            choice_loss(model, &[prompt.injection(prompt_id)], &refs)
        }
    })
}

fn main() -> Result<()> {
    let flags = common::Flags::parse();
    let steps = flags.number("--steps", 3)?;
    let device = flags.device()?;
    let models = common::models(device)?;
    println!("{steps} timed steps, {device:?}, {} threads\n", tch::get_num_threads());
    println!("| model | workload | naive s/step | shared s/step | speed-up | positions naive / shared |");
    println!("|---|---|---:|---:|---:|---:|");
    tch::manual_seed(0);
    for (name, model) in &models {
        let prompt_id = model.config().vocab_size;
        for (label, items, context, k, a) in [("RuCoS-like", 4, 120, 5, 3), ("PARus-like", 4, 40, 2, 12)] {
            let examples = workload(model, prompt_id, items, context, k, a);
            let naive = step_seconds(model, &examples, true, steps)?;
            let shared = step_seconds(model, &examples, false, steps)?;
            let positions = (items * k * (context + a)) as f64 / (items * (context + k * a)) as f64;
            println!(
                "| {name} | {label} ({items} × {context} + {k} × {a}) | {naive:.3} | {shared:.3} | {:.2} | {positions:.2} |",
                naive / shared
            );
        }
    }
    Ok(())
}
