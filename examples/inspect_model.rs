//! Loads a Hugging Face GPT-2 checkpoint and scores candidate continuations of a context by summed
//! log-probability, the basic move of perplexity-based classification.
//!
//! `cargo run --example inspect_model -- MODEL_DIR "Вопрос: Москва — столица России? Ответ:" " да" " нет"`

use anyhow::{bail, Result};
use ruprompts::model::{Gpt2, Input};
use ruprompts::tokenizer::Tokenizer;
use tch::{Device, Kind, Tensor};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, context, candidates @ ..] = args.as_slice() else {
        bail!("usage: inspect_model MODEL_DIR CONTEXT CANDIDATE...");
    };
    let dir = std::path::Path::new(dir);
    let model = Gpt2::from_dir(dir, Kind::Float, Device::cuda_if_available())?;
    let tokenizer = Tokenizer::from_dir(dir)?;
    let context_ids = tokenizer.encode_ids(context)?;
    for candidate in candidates {
        let ids = [context_ids.clone(), tokenizer.encode_ids(candidate)?].concat();
        let input = Tensor::from_slice(&ids).unsqueeze(0);
        let logp = tch::no_grad(|| model.forward(Input::Ids(&input), None, None))
            .map(|h| model.lm_logits(&h).log_softmax(-1, Kind::Float).get(0))?;
        let start = context_ids.len() as i64 - 1;
        let n = (ids.len() - context_ids.len()) as i64;
        let targets = Tensor::from_slice(&ids[context_ids.len()..]).to_device(logp.device()).unsqueeze(1);
        let sum = logp.narrow(0, start, n).gather(1, &targets, false).sum(Kind::Float).double_value(&[]);
        println!("{candidate:?}: sum log-prob {sum:.4} over {n} tokens");
    }
    Ok(())
}
