//! Generation against transformers / ruPrompts references (greedy ids and chosen logits, bare and with the
//! Python-saved prompt), batch independence, sampling reproducibility.

mod common;

use common::*;
use ruprompts::format::PromptFormat;
use ruprompts::generate::{generate, GenerationConfig, Pipeline, Prompts, Request, Task};
use ruprompts::progress::Silent;
use ruprompts::prompt::{MultiPrompt, Prompt};
use ruprompts::provider::ProviderConfig;
use ruprompts::rng::seeded;
use ruprompts::tokenizer::Tokenizer;

fn greedy(max_new_tokens: usize, eos_token_id: Option<i64>, use_cache: bool) -> GenerationConfig {
    GenerationConfig { max_new_tokens, eos_token_id, use_cache, ..Default::default() }
}

fn check_scores(ours: &[f32], theirs: &serde_json::Value, what: &str) {
    for (o, t) in ours.iter().zip(f64_vec(theirs)) {
        assert!((*o as f64 - t).abs() <= tol(1e-4), "{what}: chosen logit {o} vs {t}");
    }
}

#[test]
fn greedy_generation_matches_transformers_with_and_without_cache() {
    let model = tiny_model();
    let gen = &load_json("reference/gpt2.json")["greedy_generation"];
    let prompt = i64_vec(&gen["prompt_ids"]);
    let eos = gen["generation_config"]["eos_token_id"].as_i64();
    let max_new = gen["kwargs"]["max_new_tokens"].as_u64().unwrap() as usize;
    for use_cache in [true, false] {
        let expected = &gen[format!("use_cache_{}", if use_cache { "True" } else { "False" })];
        let out =
            &generate(&model, std::slice::from_ref(&prompt), &[], &greedy(max_new, eos, use_cache)).unwrap()[0][0];
        assert_eq!(out.new_ids, i64_vec(&expected["new_ids"]), "use_cache={use_cache}");
        check_scores(&out.scores, &expected["chosen_token_logits"], &format!("use_cache={use_cache}"));
    }
}

#[test]
fn greedy_generation_with_the_python_prompt_matches_ruprompts() {
    let model = tiny_model();
    let gen = &load_json("reference/ruprompts/tensor_prompt.json")["greedy_generation_with_prompt"];
    let prompt = Prompt::from_pretrained(&fixture("reference/ruprompts/prompt_tensor"), device()).unwrap();
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let id = prompt.add_token(&mut tok).unwrap();
    let input = i64_vec(&gen["input_ids"]);
    assert_eq!(tok.encode_ids(gen["input_text"].as_str().unwrap()).unwrap(), input);
    let max_new = gen["kwargs"]["max_new_tokens"].as_u64().unwrap() as usize;
    for use_cache in [true, false] {
        let key = format!("use_cache_{}", if use_cache { "True" } else { "False" });
        let injection = prompt.injection(id);
        let out = &generate(&model, std::slice::from_ref(&input), &[injection], &greedy(max_new, None, use_cache))
            .unwrap()[0][0];
        assert_eq!(out.new_ids, i64_vec(&gen[&key]), "{key}");
        check_scores(&out.scores, &gen[format!("{key}_chosen_token_logits")], &key);
    }
}

#[test]
fn a_row_decodes_the_same_alone_and_in_a_mixed_batch() {
    let model = tiny_model();
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let prompts = [("sum", "<P*3>{text}<P*2>"), ("qa", "<P>Вопрос:</P>{question}<P*2>")]
        .iter()
        .map(|(key, t)| {
            let format = PromptFormat::compile(t, &tok).unwrap();
            (key.to_string(), seeded(11, || Prompt::new(format, ProviderConfig::default(), &model)).unwrap())
        })
        .collect();
    let multi = MultiPrompt::new(prompts, &mut tok).unwrap();
    let row = |key: &str, field: &str, text: &str| {
        let json = serde_json::json!({ field: text });
        tok.encode_ids(&multi.get(key).unwrap().format().format(json.as_object().unwrap()).unwrap().text).unwrap()
    };
    let inputs = vec![
        row("sum", "text", "Сегодня в Москве весь день шёл сильный дождь, а вечером выглянуло солнце."),
        row("qa", "question", "Где живут пингвины?"),
        tok.encode_ids("Однажды в студёную зимнюю пору").unwrap(),
        row("sum", "text", "Кот."),
    ];
    let injections = multi.injections();
    for use_cache in [true, false] {
        let config = greedy(10, None, use_cache);
        let batched = generate(&model, &inputs, &injections, &config).unwrap();
        for (i, input) in inputs.iter().enumerate() {
            let alone = generate(&model, std::slice::from_ref(input), &injections, &config).unwrap();
            assert_eq!(batched[i][0].new_ids, alone[0][0].new_ids, "row {i}, use_cache={use_cache}");
            for (a, b) in batched[i][0].scores.iter().zip(&alone[0][0].scores) {
                assert!(f64::from((a - b).abs()) <= tol(1e-4), "row {i}: score {a} vs {b}");
            }
        }
    }
}

#[test]
fn sampling_is_reproducible_with_a_seed_and_stops_at_eos() {
    let model = tiny_model();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let input = vec![tok.encode_ids("Жили-были дед да баба").unwrap()];
    let config = GenerationConfig {
        max_new_tokens: 12,
        do_sample: true,
        temperature: 0.8,
        top_k: Some(50),
        top_p: Some(0.95),
        repetition_penalty: 1.2,
        num_return_sequences: 3,
        seed: Some(5),
        ..Default::default()
    };
    let a = generate(&model, &input, &[], &config).unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].len(), 3);
    assert_eq!(a, generate(&model, &input, &[], &config).unwrap());
    let other = generate(&model, &input, &[], &GenerationConfig { seed: Some(6), ..config.clone() }).unwrap();
    assert_ne!(a, other);
    // Stop at eos: make the first sampled token of sequence 0 the eos.
    let eos = a[0][0].new_ids[0];
    let stopped = generate(&model, &input, &[], &GenerationConfig { eos_token_id: Some(eos), ..config }).unwrap();
    assert_eq!(stopped[0][0].new_ids, [eos]);

    let err = generate(&model, &[vec![]], &[], &GenerationConfig::default()).unwrap_err().to_string();
    assert_eq!(err, "an input is empty: generation needs at least one token");
}

fn request(pairs: &[(&str, &str)]) -> Request {
    let fields = pairs.iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string()))).collect();
    Request { key: None, fields, origin: None }
}

#[test]
fn text2text_pipeline_gives_ruprompts_output_and_names_bad_input() {
    let model = tiny_model();
    let spec = &load_json("reference/ruprompts/tensor_prompt.json")["greedy_generation_with_prompt"]["pipeline"];
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let prompt = Prompt::from_pretrained(&fixture("reference/ruprompts/prompt_tensor"), device()).unwrap();
    let prompts = Prompts::single(prompt, &mut tok).unwrap();
    let pipeline = Pipeline { model: &model, tokenizer: &tok, prompts: &prompts, progress: &Silent };
    // ruPrompts' Text2TextGenerationWithPromptPipeline defaults (eos 0) with do_sample=False, 12 new tokens.
    let config = GenerationConfig { max_new_tokens: 12, eos_token_id: Some(0), ..Default::default() };
    let input = spec["input"].as_str().unwrap();
    let out = pipeline.run(Task::Text2text, &[request(&[("text", input)])], &config).unwrap();
    assert_eq!(out, [[spec["output"][0]["generated_text"].as_str().unwrap()]]);

    let err =
        |task, req: Request, config: &GenerationConfig| pipeline.run(task, &[req], config).unwrap_err().to_string();
    assert_eq!(
        err(Task::Text2text, request(&[("text", "a"), ("summary", "b")]), &config),
        "input 1: unknown field 'summary': the format \"<P*3>{text}<P>Кратко:</P>\" has text"
    );
    assert!(err(Task::TextGeneration, request(&[("text", "a")]), &config)
        .contains("text-generation puts the text after a prompt without fields"));
    assert_eq!(
        err(Task::Text2text, Request { key: Some("qa".into()), ..request(&[("text", "a")]) }, &config),
        "input 1: prompt key \"qa\" given, but only one prompt is loaded"
    );

    // Too long for the 256 positions: the oldest text tokens go, every prompt token stays.
    let long = "Сегодня в Москве весь день шёл сильный дождь. ".repeat(40);
    let out = pipeline.run(Task::Text2text, &[request(&[("text", &long)])], &config).unwrap();
    assert_eq!(out[0].len(), 1);
    let big = GenerationConfig { max_new_tokens: 250, ..config };
    assert_eq!(
        err(Task::Text2text, request(&[("text", "a")]), &big),
        "input 1: the prompt's 7 tokens and 250 new tokens do not fit the model's 256 positions"
    );
}

#[test]
fn text_generation_pipeline_returns_the_text_and_its_continuation() {
    let model = tiny_model();
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let format = PromptFormat::compile("<P*5>", &tok).unwrap();
    let prompt = seeded(2, || Prompt::new(format, ProviderConfig::default(), &model)).unwrap();
    let prompts = Prompts::single(prompt, &mut tok).unwrap();
    let pipeline = Pipeline { model: &model, tokenizer: &tok, prompts: &prompts, progress: &Silent };
    let config = GenerationConfig { max_new_tokens: 6, ..Default::default() };
    let texts = ["Заходят в бар", "Однажды"];
    let out = pipeline.run(Task::TextGeneration, &texts.map(|t| request(&[("text", t)])), &config).unwrap();
    for (text, generated) in texts.iter().zip(&out) {
        assert!(generated[0].starts_with(text) && generated[0].len() > text.len(), "{generated:?}");
    }
}
