//! Continuation scoring: naive and shared-context scoring agree with each other and with transformers, with and
//! without a prompt whose tokens sit after the answer.

mod common;

use common::*;
use ruprompts::eval::{score_naive, score_shared, score_shared_many, Candidate, Scored};
use ruprompts::format::PromptFormat;
use ruprompts::prompt::Prompt;
use ruprompts::provider::ProviderConfig;
use ruprompts::rng::seeded;
use ruprompts::tokenizer::Tokenizer;

fn same(a: &[Scored], b: &[Scored]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!((x.answer_tokens, x.text_tokens), (y.answer_tokens, y.text_tokens));
        assert!((x.answer_logprob - y.answer_logprob).abs() <= tol(1e-4), "{x:?} vs {y:?}");
        assert!((x.text_logprob - y.text_logprob).abs() <= tol(1e-4), "{x:?} vs {y:?}");
    }
}

#[test]
fn both_scorers_match_transformers_continuation_logprobs() {
    let model = tiny_model();
    for case in load_json("reference/gpt2.json")["continuation_logprobs"].as_array().unwrap() {
        let context = i64_vec(&case["context_ids"]);
        let candidates: Vec<Candidate> = case["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| Candidate { answer: i64_vec(&c["continuation_ids"]), suffix: vec![] })
            .collect();
        // Answers alone (one forward for one-token answers) and the whole text give the same answer sums.
        for whole_text in [true, false] {
            let naive = score_naive(&model, &[], &context, &candidates, whole_text).unwrap();
            let shared = score_shared(&model, &[], &context, &candidates, whole_text).unwrap();
            same(&naive, &shared);
            for (scored, c) in shared.iter().zip(case["candidates"].as_array().unwrap()) {
                let expected = c["sum_logprob"].as_f64().unwrap();
                assert!(
                    (scored.answer_logprob - expected).abs() <= tol(1e-4),
                    "{} vs {expected}",
                    scored.answer_logprob
                );
                assert_eq!(scored.text_tokens > 0, whole_text);
            }
        }
    }
}

#[test]
fn shared_context_equals_naive_with_prompt_tokens_after_the_answer() {
    let model = tiny_model();
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    // The slides' DaNetQA shape: trainable tokens before the question, between it and the answer, and after it.
    let format = PromptFormat::compile("<P*3>{question}<P*2>{@candidate}<P*2>", &tok).unwrap();
    let prompt = seeded(9, || Prompt::new(format, ProviderConfig::default(), &model)).unwrap();
    let id = prompt.add_token(&mut tok).unwrap();
    let p = prompt.format().prompt_token().to_string();
    let context = tok.encode_ids(&format!("{p}{p}{p}Москва — столица России?{p}{p}")).unwrap();
    let candidates: Vec<Candidate> = [" да", " нет", " может быть, но не точно"]
        .iter()
        .map(|a| Candidate { answer: tok.encode_ids(a).unwrap(), suffix: vec![id, id] })
        .collect();
    let injection = [prompt.injection(id)];
    let naive = score_naive(&model, &injection, &context, &candidates, true).unwrap();
    let shared = score_shared(&model, &injection, &context, &candidates, true).unwrap();
    same(&naive, &shared);
    let answers_only = score_shared(&model, &injection, &context, &candidates, false).unwrap();
    for (a, b) in answers_only.iter().zip(&naive) {
        assert!((a.answer_logprob - b.answer_logprob).abs() <= tol(1e-4) && a.answer_tokens == b.answer_tokens);
    }
    // Prompt tokens are never scored; the context starts with one, so every real token of it is predicted.
    let real_context = context.iter().filter(|&&t| t != id).count();
    assert_eq!(shared[0].text_tokens, real_context + shared[0].answer_tokens);
    // Several contexts of different lengths in one left-padded batch: each scores as it does alone.
    let contexts: Vec<Vec<i64>> =
        ["Москва — столица России?", "Снег белый?", "Можно ли пересечь Атлантику на лодке за неделю?"]
            .iter()
            .map(|q| tok.encode_ids(&format!("{p}{p}{p}{q}{p}{p}")).unwrap())
            .collect();
    for whole_text in [true, false] {
        let requests: Vec<(&[i64], &[Candidate])> =
            contexts.iter().map(|c| (c.as_slice(), &candidates[..1 + c.len() % 3])).collect();
        let many = score_shared_many(&model, &injection, &requests, whole_text).unwrap();
        for ((context, cands), scored) in requests.iter().zip(&many) {
            same(&score_naive(&model, &injection, context, cands, whole_text).unwrap(), scored);
        }
    }
    let err = score_shared(&model, &injection, &[], &candidates, true).unwrap_err().to_string();
    assert_eq!(err, "scoring needs a non-empty context");
}
