//! Builds a soft prompt from a format, attaches it to a frozen GPT-2 and scores candidate answers by their summed
//! log-probability (the move behind perplexity-based classification), next to the same scores without a prompt.
//! Then saves the prompt in ruPrompts' layout, loads it back and checks the scores are unchanged.
//!
//! `cargo run --example score_with_prompt -- [MODEL_DIR] [QUESTION] [CANDIDATE...]`
//! (MODEL_DIR defaults to the demo model that `ruprompts demo` builds).

use anyhow::{ensure, Context, Result};
use ruprompts::format::PromptFormat;
use ruprompts::model::{Input, Model};
use ruprompts::prompt::Prompt;
use ruprompts::provider::ProviderConfig;
use ruprompts::tokenizer::Tokenizer;
use tch::{Device, Kind, Tensor};

/// Sum of log-probabilities of `ids[context_len..]` given what precedes them, for input embeddings `embeds [1, T, d]`.
fn continuation_log_prob(model: &Model, embeds: &Tensor, ids: &[i64], context_len: usize) -> Result<f64> {
    let hidden = tch::no_grad(|| model.forward(Input::Embeds(embeds), None, None))?;
    let logp = model.lm_logits(&hidden).log_softmax(-1, Kind::Float).get(0);
    let n = (ids.len() - context_len) as i64;
    let targets = Tensor::from_slice(&ids[context_len..]).to_device(logp.device()).unsqueeze(1);
    Ok(logp.narrow(0, context_len as i64 - 1, n).gather(1, &targets, false).sum(Kind::Float).double_value(&[]))
}

/// Scores of every candidate after `context` (already formatted text), with `prompt` injected when given.
fn scores(
    model: &Model,
    tok: &Tokenizer,
    prompt: Option<(&Prompt, i64)>,
    context: &str,
    candidates: &[String],
) -> Result<Vec<f64>> {
    let context_ids = tok.encode_ids(context)?;
    candidates
        .iter()
        .map(|candidate| {
            let ids = [context_ids.clone(), tok.encode_ids(candidate)?].concat();
            let input = Tensor::from_slice(&ids).unsqueeze(0);
            let embeds = match prompt {
                Some((prompt, token_id)) => prompt.embed(model, &input, token_id)?.embeds,
                None => model.embed(&input)?,
            };
            continuation_log_prob(model, &embeds, &ids, context_ids.len())
        })
        .collect()
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().map_or_else(ruprompts::demo::default_dir, Into::into);
    let question = args.next().unwrap_or_else(|| "Москва — столица России?".to_string());
    let mut candidates: Vec<String> = args.collect();
    if candidates.is_empty() {
        candidates = vec![" да".into(), " нет".into()];
    }
    ensure!(
        dir.join("config.json").is_file(),
        "no model in {} (run `ruprompts demo` first, or pass a model directory)",
        dir.display()
    );
    let model = Model::from_dir(&dir, Kind::Float, Device::cuda_if_available())?;
    let mut tok = Tokenizer::from_dir(&dir)?;

    // A format: 3 trainable tokens, the question, then a trainable phrase initialised from "Ответ:".
    let format = PromptFormat::compile("<P*3>{question}<P>Ответ:</P>", &tok)?;
    println!("format {:?} compiles to {:?}", format.template(), format.compiled_template());
    let prompt = ruprompts::rng::seeded(0, || Prompt::new(format, ProviderConfig::default(), &model))?;
    let lstm = Prompt::new(
        prompt.format().clone(),
        ProviderConfig::Lstm { hidden_dim: None, input_dim: None, num_layers: 2 },
        &model,
    );
    println!(
        "{} prompt tokens; {} trainable parameters as a tensor{}",
        prompt.format().prompt_length(),
        prompt.num_parameters(),
        // The BiLSTM cannot start from phrase tokens, which this format has: say so instead of a count.
        lstm.map_or_else(|e| format!(" (BiLSTM: {e})"), |l| format!(", {} as a BiLSTM", l.num_parameters()))
    );

    // Attach: the prompt token becomes an added token of the tokenizer; formatting puts it where the format says.
    let token_id = prompt.add_token(&mut tok)?;
    let row = serde_json::json!({ "question": question }).as_object().cloned().context("a row is a JSON object")?;
    let context = prompt.format().format(&row)?.text;
    println!("formatted row: {context:?}\n");

    let zero_shot = scores(&model, &tok, None, &question, &candidates)?;
    let prompted = scores(&model, &tok, Some((&prompt, token_id)), &context, &candidates)?;
    println!("{:<12} {:>12} {:>12}", "candidate", "zero-shot", "prompted");
    for ((candidate, z), p) in candidates.iter().zip(&zero_shot).zip(&prompted) {
        println!("{:<12} {z:>12.4} {p:>12.4}", format!("{candidate:?}"));
    }

    let saved = tempfile::tempdir()?;
    prompt.save_pretrained(saved.path())?;
    let loaded = Prompt::from_pretrained(saved.path(), model.device())?;
    let reloaded = scores(&model, &tok, Some((&loaded, token_id)), &context, &candidates)?;
    ensure!(reloaded == prompted, "scores changed after save/load: {reloaded:?} vs {prompted:?}");
    println!("\nsaved to and reloaded from a ruPrompts-layout folder: scores identical");
    Ok(())
}
