//! Generation against transformers / ruPrompts references (greedy ids and chosen logits, bare and with the
//! Python-saved prompt), batch independence, sampling reproducibility.

use crate::common;

use common::*;
use ruprompts::format::PromptFormat;
use ruprompts::generate::{
    generate, Batcher, Generated, GenerationConfig, Job, Pipeline, Prompts, Request, Task, Update,
};
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
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let gen = &load_json("reference/gpt2.json")["greedy_generation"];
    let prompt = i64_vec(&gen["prompt_ids"]);
    let eos = gen["generation_config"]["eos_token_id"].as_i64();
    let max_new = gen["kwargs"]["max_new_tokens"].as_u64().unwrap() as usize;
    for use_cache in [true, false] {
        let expected = &gen[format!("use_cache_{}", if use_cache { "True" } else { "False" })];
        let out = &generate(&model, &tok, std::slice::from_ref(&prompt), &[], &greedy(max_new, eos, use_cache))
            .unwrap()[0][0];
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
        let out =
            &generate(&model, &tok, std::slice::from_ref(&input), &[injection], &greedy(max_new, None, use_cache))
                .unwrap()[0][0];
        assert_eq!(out.new_ids, i64_vec(&gen[&key]), "{key}");
        check_scores(&out.scores, &gen[format!("{key}_chosen_token_logits")], &key);
    }
}

#[test]
fn a_row_decodes_the_same_alone_and_in_a_mixed_batch_greedy_sampling_or_beams() {
    let model = tiny_model();
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    // Two input-layer prompts and two deep ones (keys and values in every layer; one with tokens of its own, one
    // projected and of another length) in one batch.
    let deep = ProviderConfig::Prefix { num_virtual_tokens: 3, projection: None, init: Default::default() };
    let prompts = [
        ("sum", "<P*3>{text}<P*2>", ProviderConfig::default()),
        ("qa", "<P>Вопрос:</P>{question}<P*2>", ProviderConfig::default()),
        ("deep", "{text}<P*2>", deep),
        (
            "deep2",
            "{question}",
            ProviderConfig::Prefix {
                num_virtual_tokens: 2,
                projection: Some(ruprompts::provider::Projection { hidden_dim: Some(8) }),
                init: Default::default(),
            },
        ),
    ]
    .into_iter()
    .map(|(key, t, provider)| {
        let format = PromptFormat::compile(t, &tok).unwrap();
        (key.to_string(), seeded(11, || Prompt::new(format, provider, &model)).unwrap())
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
        row("deep", "text", "Учёные нашли в лесах Амазонии новый вид бабочек."),
        row("sum", "text", "Кот."),
        row("deep", "text", "Кот."),
        row("deep2", "question", "Где живут пингвины?"),
    ];
    let injections = multi.injections();
    let sampled = |use_cache| GenerationConfig {
        do_sample: true,
        top_k: Some(40),
        seed: Some(3),
        num_return_sequences: 2,
        ..greedy(10, None, use_cache)
    };
    let beams = |use_cache| GenerationConfig { num_beams: 3, num_return_sequences: 2, ..greedy(6, None, use_cache) };
    for config in
        [greedy(10, None, true), greedy(10, None, false), sampled(true), sampled(false), beams(true), beams(false)]
    {
        let use_cache = config.use_cache;
        let batched = generate(&model, &tok, &inputs, &injections, &config).unwrap();
        for (i, input) in inputs.iter().enumerate() {
            let alone = generate(&model, &tok, std::slice::from_ref(input), &injections, &config).unwrap();
            let ids = |g: &[Generated]| g.iter().map(|g| g.new_ids.clone()).collect::<Vec<_>>();
            assert_eq!(
                ids(&batched[i]),
                ids(&alone[0]),
                "row {i}, do_sample={}, use_cache={use_cache}",
                config.do_sample
            );
            for (a, b) in batched[i][0].scores.iter().zip(&alone[0][0].scores) {
                assert!(f64::from((a - b).abs()) <= tol(1e-4), "row {i}: score {a} vs {b}");
            }
        }
    }
}

/// Jobs joining a running batch at different steps (continuous batching) decode what they decode alone, greedy
/// or seeded sampling, and leave it when done; echoed inputs carry their log-probabilities.
#[test]
fn jobs_joining_a_running_batch_decode_as_they_do_alone() {
    let model = tiny_model();
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let format = PromptFormat::compile("<P*3>{text}", &tok).unwrap();
    let prompt = seeded(5, || Prompt::new(format, ProviderConfig::default(), &model)).unwrap();
    let format = PromptFormat::compile("{text}", &tok).unwrap();
    let deep = ProviderConfig::Prefix { num_virtual_tokens: 4, projection: None, init: Default::default() };
    let deep = seeded(5, || Prompt::new(format, deep, &model)).unwrap();
    let multi = MultiPrompt::new(vec![("p".into(), prompt), ("d".into(), deep)], &mut tok).unwrap();
    let injections = multi.injections();
    let with = |key: &str, text: &str| {
        let json = serde_json::json!({ "text": text });
        tok.encode_ids(&multi.get(key).unwrap().format().format(json.as_object().unwrap()).unwrap().text).unwrap()
    };
    let prompted = |text: &str| with("p", text);
    let sampled = |n| GenerationConfig {
        do_sample: true,
        top_k: Some(40),
        seed: Some(9),
        num_return_sequences: n,
        ..greedy(7, None, true)
    };
    let jobs = [
        (prompted("Сегодня в Москве весь день шёл сильный дождь."), greedy(9, None, true)),
        (tok.encode_ids("Однажды в студёную зимнюю пору").unwrap(), sampled(2)),
        (prompted("Кот."), greedy(4, None, true)),
        (tok.encode_ids("Где живут пингвины? Они живут").unwrap(), sampled(1)),
        (with("d", "Сегодня в Москве весь день шёл сильный дождь."), greedy(8, None, true)),
    ];
    let mut batcher: Batcher<usize> = Batcher::new(&model, &tok, &injections);
    let mut got: Vec<Vec<Vec<i64>>> = jobs.iter().map(|(_, c)| vec![Vec::new(); c.num_return_sequences]).collect();
    let mut heard = |updates: Vec<(usize, Vec<Update>)>| {
        for (key, updates) in updates {
            for u in updates {
                if let Update::Token { seq, id, .. } = u {
                    got[key][seq].push(id);
                }
            }
        }
    };
    // Job 0 alone, then 1 and 2 join after two steps, 3 and the deep-prompted 4 after five (when job 2 has left).
    let job = |i: usize| (i, Job { input: jobs[i].0.clone(), config: jobs[i].1.clone(), logprobs: None, echo: None });
    heard(batcher.admit(vec![job(0)]).unwrap());
    for step in 0..20 {
        match step {
            2 => heard(batcher.admit(vec![job(1), job(2)]).unwrap()),
            5 => heard(batcher.admit(vec![job(3), job(4)]).unwrap()),
            _ => {}
        }
        heard(batcher.step().unwrap());
    }
    assert_eq!(batcher.rows(), 0, "every job left the batch when done");
    for (i, (input, config)) in jobs.iter().enumerate() {
        let alone = generate(&model, &tok, std::slice::from_ref(input), &injections, config).unwrap();
        let alone: Vec<Vec<i64>> = alone[0].iter().map(|g| g.new_ids.clone()).collect();
        assert_eq!(got[i], alone, "job {i}");
    }
    // Echo: every input token after the first with its log-probability under the model (and the prompt).
    let input = prompted("Кот сидит на окне.");
    let echo =
        Job { input: input.clone(), config: greedy(0, None, true), logprobs: Some(2), echo: Some(3..input.len()) };
    let updates = batcher.admit(vec![(7, echo)]).unwrap();
    let Update::Echo(echoed) = &updates[0].1[0] else { panic!("no echo: {updates:?}") };
    assert_eq!(echoed.iter().map(|(id, _)| *id).collect::<Vec<_>>(), input[3..]);
    let ids = tch::Tensor::from_slice(&input).unsqueeze(0);
    let embeds = multi.embed(&model, &ids).unwrap();
    let hidden = model.forward(embeds.input(), None, None).unwrap();
    let logprobs = model.lm_logits(&hidden.get(0)).log_softmax(-1, tch::Kind::Float);
    for (p, (id, lp)) in (3..).zip(echoed) {
        let lp = lp.as_ref().unwrap();
        let expected = logprobs.double_value(&[p as i64 - 1, *id]);
        assert!((f64::from(lp.logprob) - expected).abs() <= tol(1e-4), "token {p}: {} vs {expected}", lp.logprob);
        assert_eq!(lp.top.len(), 2);
        assert!(lp.top[0].1 >= lp.top[1].1 && lp.top[0].1 >= lp.logprob);
    }
    assert!(matches!(updates[0].1[1], Update::Finished { seq: 0, stopped: false }));
    assert_eq!(batcher.rows(), 0, "max_tokens 0 only scores");
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
    let a = generate(&model, &tok, &input, &[], &config).unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].len(), 3);
    assert_eq!(a, generate(&model, &tok, &input, &[], &config).unwrap());
    let other = generate(&model, &tok, &input, &[], &GenerationConfig { seed: Some(6), ..config.clone() }).unwrap();
    assert_ne!(a, other);
    // Stop at eos: make the first sampled token of sequence 0 the eos.
    let eos = a[0][0].new_ids[0];
    let stopped = generate(&model, &tok, &input, &[], &GenerationConfig { eos_token_id: Some(eos), ..config }).unwrap();
    assert_eq!(stopped[0][0].new_ids, [eos]);

    let err = generate(&model, &tok, &[vec![]], &[], &GenerationConfig::default()).unwrap_err().to_string();
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
    let pipeline = Pipeline { model: &model, tokenizer: &tok, prompts: &prompts, progress: &Silent, chat: false };
    // ruPrompts' Text2TextGenerationWithPromptPipeline defaults (eos 0) with do_sample=False, 12 new tokens.
    let config = GenerationConfig { max_new_tokens: 12, eos_token_id: Some(0), ..Default::default() };
    let input = spec["input"].as_str().unwrap();
    let out = pipeline.run(Task::Text2text, &[request(&[("text", input)])], &config).unwrap();
    assert_eq!(out[0][0].text, spec["output"][0]["generated_text"].as_str().unwrap());
    assert_eq!(out[0].len(), 1);

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
    let pipeline = Pipeline { model: &model, tokenizer: &tok, prompts: &prompts, progress: &Silent, chat: false };
    let config = GenerationConfig { max_new_tokens: 6, ..Default::default() };
    let texts = ["Заходят в бар", "Однажды"];
    let out = pipeline.run(Task::TextGeneration, &texts.map(|t| request(&[("text", t)])), &config).unwrap();
    for (text, generated) in texts.iter().zip(&out) {
        let g = &generated[0].text;
        assert!(g.starts_with(text) && g.len() > text.len(), "{generated:?}");
    }
}

/// A case of reference/beam_search.json as our settings: transformers' kwargs read by our `GenerationConfig`
/// (the same names), bad words as the texts the script tokenized.
fn beam_config(case: &serde_json::Value, use_cache: bool) -> GenerationConfig {
    let mut kwargs = case["kwargs"].as_object().unwrap().clone();
    kwargs.remove("bad_words_ids");
    kwargs.entry("eos_token_id").or_insert(serde_json::json!(2));
    if let Some(words) = case.get("bad_words") {
        kwargs.insert("bad_words".into(), words.clone());
    }
    kwargs.insert("use_cache".into(), serde_json::json!(use_cache));
    serde_json::from_value(serde_json::Value::Object(kwargs)).unwrap()
}

#[test]
fn beam_search_matches_transformers_with_and_without_cache() {
    let model = tiny_model();
    let cases = &load_json("reference/beam_search.json")["cases"];
    for (name, case) in cases.as_object().unwrap() {
        let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
        let prompt = case.get("prompt_dir").map(|_| {
            let prompt = Prompt::from_pretrained(&fixture("reference/ruprompts/prompt_tensor"), device()).unwrap();
            let id = prompt.add_token(&mut tok).unwrap();
            (prompt, id)
        });
        let injections: Vec<_> = prompt.iter().map(|(p, id)| p.injection(*id)).collect();
        let inputs: Vec<Vec<i64>> = case["input_ids"].as_array().unwrap().iter().map(i64_vec).collect();
        for (text, ids) in case["inputs"].as_array().unwrap().iter().zip(&inputs) {
            assert_eq!(&tok.encode_ids(text.as_str().unwrap()).unwrap(), ids, "{name}");
        }
        for use_cache in [true, false] {
            let config = beam_config(case, use_cache);
            assert!(config.num_beams > 1 && config.num_return_sequences > 1, "{name}");
            let ours = generate(&model, &tok, &inputs, &injections, &config).unwrap();
            let theirs = case[format!("use_cache_{}", if use_cache { "True" } else { "False" })].as_array().unwrap();
            for (i, (ours, theirs)) in ours.iter().zip(theirs).enumerate() {
                let theirs = theirs.as_array().unwrap();
                assert_eq!(ours.len(), theirs.len(), "{name}: input {i}");
                for (j, (o, t)) in ours.iter().zip(theirs).enumerate() {
                    let what = format!("{name}: input {i}, sequence {j}, use_cache={use_cache}");
                    assert_eq!(o.new_ids, i64_vec(&t["new_ids"]), "{what}");
                    let score = t["sequence_score"].as_f64().unwrap();
                    assert!((o.sequence_score.unwrap() as f64 - score).abs() <= tol(1e-4), "{what}: {o:?} vs {score}");
                    for (a, b) in o.scores.iter().zip(f64_vec(&t["token_scores"])) {
                        assert!((*a as f64 - b).abs() <= tol(1e-4), "{what}: token score {a} vs {b}");
                    }
                }
            }
        }
    }
}

/// For new tokens `ids`: the first step `k` whose token's text follows the previous text cleanly, and a stop
/// string made of the previous text's last character and the new text's first (split across tokens k-1 and k).
fn boundary_stop(tok: &Tokenizer, ids: &[i64]) -> (usize, String, String) {
    let texts: Vec<String> = (1..=ids.len()).map(|n| tok.decode(&ids[..n]).unwrap()).collect();
    let k = (1..texts.len())
        .find(|&k| {
            let (a, b) = (&texts[k - 1], &texts[k]);
            let clean = |t: &str| !t.is_empty() && !t.contains('\u{FFFD}');
            b.starts_with(a.as_str()) && clean(a) && clean(&b[a.len()..])
        })
        .expect("a token whose text follows the previous one's");
    let before = texts[k - 1].clone();
    let last_char = before.chars().last().unwrap();
    let first_next: String = texts[k][before.len()..].chars().take(1).collect();
    let stop = format!("{last_char}{first_next}");
    assert!(!before.contains(&stop), "the stop string must first appear with token {k}");
    (k, stop, before[..before.len() - last_char.len_utf8()].to_string())
}

#[test]
fn stop_strings_end_rows_and_cut_the_text_even_across_tokens() {
    let model = tiny_model();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let input = vec![tok.encode_ids("Однажды в студёную зимнюю пору").unwrap()];
    let free = GenerationConfig { max_new_tokens: 20, eos_token_id: None, ..Default::default() };
    let stops = |stop: &str| vec![stop.to_string(), "никогда-не-встретится".to_string()];
    // Greedy decoding, and sampling at a tiny temperature (the greedy path through the sampler's code).
    let full = &generate(&model, &tok, &input, &[], &free).unwrap()[0][0];
    let (k, stop, kept) = boundary_stop(&tok, &full.new_ids);
    for sample in [false, true] {
        let config = GenerationConfig {
            stop_strings: stops(&stop),
            do_sample: sample,
            temperature: if sample { 1e-6 } else { 1.0 },
            seed: sample.then_some(1),
            ..free.clone()
        };
        let out = &generate(&model, &tok, &input, &[], &config).unwrap()[0][0];
        assert_eq!(out.new_ids, full.new_ids[..=k], "sample={sample}: the row ends on the token completing the stop");
        let text = tok.decode(&out.new_ids).unwrap();
        assert_eq!(ruprompts::generate::cut_at_stop(&text, &config.stop_strings), kept, "sample={sample}");
    }
    // Beam search: a hypothesis whose text holds the stop string is finished there; the others run to the end.
    // No length normalisation, so a short finished hypothesis ranks among those returned.
    let beams = GenerationConfig { num_beams: 3, num_return_sequences: 3, length_penalty: 0.0, ..free.clone() };
    let best = &generate(&model, &tok, &input, &[], &beams).unwrap()[0][0];
    let (_, stop, _) = boundary_stop(&tok, &best.new_ids);
    let out = generate(&model, &tok, &input, &[], &GenerationConfig { stop_strings: stops(&stop), ..beams }).unwrap();
    let mut stopped = 0;
    for g in &out[0] {
        let text = tok.decode(&g.new_ids).unwrap();
        if text.contains(&stop) {
            stopped += 1;
            assert!(!tok.decode(&g.new_ids[..g.new_ids.len() - 1]).unwrap().contains(&stop), "{text:?}");
        } else {
            assert_eq!(g.new_ids.len(), 20, "{text:?}");
        }
    }
    assert!(stopped > 0, "{out:?}");
}

#[test]
fn min_new_tokens_holds_off_eos() {
    let model = tiny_model();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let input = vec![tok.encode_ids("Кот.").unwrap()];
    let free = GenerationConfig { max_new_tokens: 8, eos_token_id: None, ..Default::default() };
    let first = generate(&model, &tok, &input, &[], &free).unwrap()[0][0].new_ids[0];
    // Greedy decoding would end at once on its first token made eos; min_new_tokens bans it for 5 tokens.
    let ends = GenerationConfig { eos_token_id: Some(first), ..free.clone() };
    assert_eq!(generate(&model, &tok, &input, &[], &ends).unwrap()[0][0].new_ids, [first]);
    for num_beams in [1, 2] {
        let held = GenerationConfig { min_new_tokens: 5, num_beams, ..ends.clone() };
        let out = &generate(&model, &tok, &input, &[], &held).unwrap()[0][0];
        assert!(out.new_ids.len() >= 5, "beams={num_beams}: {:?}", out.new_ids);
        assert!(!out.new_ids[..4].contains(&first), "beams={num_beams}: {:?}", out.new_ids);
    }
}

#[test]
fn bad_settings_are_refused_before_any_work() {
    let model = tiny_model();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let input = vec![tok.encode_ids("Кот.").unwrap()];
    let err = |config: GenerationConfig| generate(&model, &tok, &input, &[], &config).unwrap_err().to_string();
    let d = GenerationConfig::default;
    assert_eq!(
        err(GenerationConfig { num_beams: 0, ..d() }),
        "num_beams (--num-beams) must be at least 1 (1 = no beam search)"
    );
    assert!(err(GenerationConfig { num_beams: 2, num_return_sequences: 3, ..d() })
        .starts_with("num_return_sequences (--num-return-sequences) is 3, more than num_beams (--num-beams) 2"));
    assert!(err(GenerationConfig { num_beams: 2, do_sample: true, ..d() })
        .starts_with("beam search with sampling (num_beams > 1 with do_sample) is not supported"));
    assert!(err(GenerationConfig { stop_strings: vec![String::new()], ..d() })
        .starts_with("a stop string (stop_strings, --stop) is empty"));
    assert_eq!(
        err(GenerationConfig { min_new_tokens: 40, max_new_tokens: 10, ..d() }),
        "min_new_tokens (--min-new-tokens) is 40, more than max_new_tokens (--max-new-tokens) 10"
    );
    assert_eq!(
        err(GenerationConfig { num_beams: 1001, num_return_sequences: 1, ..d() }),
        "num_beams (--num-beams) 1001 is more than half the model's 2000 tokens"
    );
    assert!(err(GenerationConfig { num_return_sequences: usize::MAX, ..d() }).starts_with(
        "inputs (1) × sequences per input (18446744073709551615: num_return_sequences, num_beams) is more"
    ));
    // So large that twice it overflows.
    assert!(err(GenerationConfig { num_beams: usize::MAX, num_return_sequences: 1, ..d() })
        .ends_with("is more than half the model's 2000 tokens"));
}

#[test]
fn bad_words_and_repeated_ngrams_never_come_out() {
    let model = tiny_model();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let input = vec![tok.encode_ids("Однажды в студёную зимнюю пору").unwrap()];
    let free = GenerationConfig { max_new_tokens: 16, eos_token_id: None, ..Default::default() };
    for num_beams in [1, 3] {
        let plain =
            &generate(&model, &tok, &input, &[], &GenerationConfig { num_beams, ..free.clone() }).unwrap()[0][0];
        // The tiny model repeats itself; with n-gram blocking no bigram occurs twice.
        let blocked = GenerationConfig { no_repeat_ngram_size: 2, num_beams, ..free.clone() };
        let out = &generate(&model, &tok, &input, &[], &blocked).unwrap()[0][0];
        let row: Vec<i64> = input[0].iter().chain(&out.new_ids).copied().collect();
        let mut bigrams: Vec<&[i64]> = row.windows(2).collect();
        bigrams.sort();
        let total = bigrams.len();
        bigrams.dedup();
        assert_eq!(bigrams.len(), total, "beams={num_beams}: {row:?}");
        // The plain output's most frequent token, as text, banned: it never comes out again.
        let word = tok.decode(&plain.new_ids[..1]).unwrap();
        let banned = GenerationConfig { bad_words: vec![word.trim().to_string()], num_beams, ..free.clone() };
        let out = &generate(&model, &tok, &input, &[], &banned).unwrap()[0][0];
        assert!(!out.new_ids.contains(&plain.new_ids[0]), "beams={num_beams}: {word:?} in {:?}", out.new_ids);
    }
}

#[test]
fn a_watcher_sees_every_token_and_can_stop_decoding() {
    let model = tiny_model();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let input = vec![tok.encode_ids("Кот.").unwrap()];
    let config = GenerationConfig { max_new_tokens: 10, eos_token_id: None, ..Default::default() };
    let mut seen = Vec::new();
    let out = ruprompts::generate::generate_watched(&model, &tok, &input, &[], &config, &mut |rows| {
        seen.push(rows[0].new_ids.len());
        Ok(if rows[0].new_ids.len() == 3 {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        })
    })
    .unwrap();
    assert_eq!(seen, [1, 2, 3]);
    let full = generate(&model, &tok, &input, &[], &config).unwrap();
    assert_eq!(out[0][0].new_ids, full[0][0].new_ids[..3]);
}
