//! Continuation scoring: naive and shared-context scoring agree with each other and with transformers, with and
//! without a prompt whose tokens sit after the answer.

use crate::common;

use common::*;
use ruprompts::format::PromptFormat;
use ruprompts::prompt::Prompt;
use ruprompts::provider::ProviderConfig;
use ruprompts::rng::seeded;
use ruprompts::task::{score_naive, score_shared, score_shared_many, Candidate, Scored};
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

#[test]
fn shared_prefixes_run_once_and_score_as_independent_contexts() {
    let model = tiny_model();
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let format = PromptFormat::compile("<P*2>{passage}<P*2>{question}{@candidate}<P>", &tok).unwrap();
    let prompt = seeded(5, || Prompt::new(format, ProviderConfig::default(), &model)).unwrap();
    let id = prompt.add_token(&mut tok).unwrap();
    let p = prompt.format().prompt_token().to_string();
    // MuSeRC's shape: two passages, each with questions whose answer options share the passage and question;
    // a lone context besides. Zero-shot (no prompt tokens) and tuned (prompt tokens in every prefix and rest).
    let passages = [
        "Москва — столица России, крупнейший по численности населения город страны и её политический центр.",
        "Байкал — озеро тектонического происхождения в южной части Восточной Сибири, самое глубокое на планете.",
    ];
    let questions = ["Что это?", "Где это находится и чем известно?"];
    let options = [" Город.", " Озеро в Сибири.", " Столица."];
    for tuned in [false, true] {
        let (pp, injection) = if tuned { (p.clone(), vec![prompt.injection(id)]) } else { (String::new(), vec![]) };
        let suffix = if tuned { vec![id] } else { vec![] };
        let candidates: Vec<Candidate> = [" да", " нет"]
            .iter()
            .map(|a| Candidate { answer: tok.encode_ids(a).unwrap(), suffix: suffix.clone() })
            .collect();
        let mut texts: Vec<String> = Vec::new();
        for passage in passages {
            for q in questions {
                for o in options {
                    texts.push(format!("{pp}{pp}{passage}{pp}{pp}{q}{o} Ответ:"));
                }
            }
        }
        texts.push(format!("{pp}{pp}Короткий текст.{pp}{pp}Вопрос? Да. Ответ:"));
        let contexts: Vec<Vec<i64>> = texts.iter().map(|t| tok.encode_ids(t).unwrap()).collect();
        for whole_text in [true, false] {
            let requests: Vec<(&[i64], &[Candidate])> =
                contexts.iter().map(|c| (c.as_slice(), &candidates[..])).collect();
            let many = score_shared_many(&model, &injection, &requests, whole_text).unwrap();
            let mut worst = 0.0f64;
            for ((context, cands), scored) in requests.iter().zip(&many) {
                for (x, y) in scored.iter().zip(score_naive(&model, &injection, context, cands, whole_text).unwrap()) {
                    assert_eq!((x.answer_tokens, x.text_tokens), (y.answer_tokens, y.text_tokens));
                    worst = worst.max((x.answer_logprob - y.answer_logprob).abs());
                    worst = worst.max((x.text_logprob - y.text_logprob).abs() / y.text_tokens.max(1) as f64);
                }
            }
            assert!(worst <= tol(1e-5), "tuned {tuned}, whole text {whole_text}: differs by {worst}");
        }
    }
}

#[test]
fn a_prompt_repeated_around_demonstrations_scores_as_the_naive_reference() {
    // Tuned + k-shot: each demonstration is formatted by the prompt's template, so the context holds the prompt's
    // tokens once per demonstration and once more for the item (the last one after the answer). A deep prompt's
    // three virtual tokens lead each copy.
    let model = tiny_model();
    let deep = ProviderConfig::Prefix { num_virtual_tokens: 3, projection: None, init: Default::default() };
    for (provider, lead) in [(ProviderConfig::default(), 2), (deep, 5)] {
        let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
        let format = PromptFormat::compile("<P*2>{q}<P>{@candidate}<P>", &tok).unwrap();
        let prompt = seeded(6, || Prompt::new(format, provider.clone(), &model)).unwrap();
        let id = prompt.add_token(&mut tok).unwrap();
        let p = prompt.format().prompt_token().to_string();
        let head = p.repeat(lead);
        let demo = |q: &str, a: &str| format!("{head}{q}{p}{a}{p}\n\n");
        let contexts: Vec<Vec<i64>> = [
            format!("{}{}{head}Снег белый?{p}", demo("Небо синее?", " да"), demo("Трава красная?", " нет")),
            format!("{}{head}Вода мокрая?{p}", demo("Огонь холодный?", " нет")),
            format!("{}{}{head}Лёд горячий?{p}", demo("Камень твёрдый?", " да"), demo("Пух тяжёлый?", " нет")),
        ]
        .iter()
        .map(|t| tok.encode_ids(t).unwrap())
        .collect();
        let candidates: Vec<Candidate> = [" да", " нет"]
            .iter()
            .map(|a| Candidate { answer: tok.encode_ids(a).unwrap(), suffix: vec![id] })
            .collect();
        let injection = [prompt.injection(id)];
        for whole_text in [true, false] {
            let requests: Vec<(&[i64], &[Candidate])> =
                contexts.iter().map(|c| (c.as_slice(), &candidates[..])).collect();
            // Contexts with two and with one demonstration hold the prompt 3 and 2 times: batched apart, same
            // numbers.
            for run in ruprompts::task::shared_batches(&requests, &[id], whole_text, 256, usize::MAX) {
                let many = score_shared_many(&model, &injection, &requests[run.clone()], whole_text).unwrap();
                for ((context, cands), scored) in requests[run].iter().zip(&many) {
                    same(&score_naive(&model, &injection, context, cands, whole_text).unwrap(), scored);
                }
            }
        }
        // A count that is not a whole number of copies is still refused.
        let once = tok.encode_ids(&format!("{head}Снег белый?{p}")).unwrap();
        let err = score_naive(&model, &injection, &once[1..], &candidates, false).unwrap_err().to_string();
        assert!(err.contains(&format!("holds {} prompt tokens", lead + 1)), "{err}");
    }
}
