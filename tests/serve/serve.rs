//! `ruprompts serve` on 127.0.0.1: answers that do not depend on the batch, errors in OpenAI's shape, the real
//! `openai` client and lm-evaluation-harness (from `.cache/client-venv`, which scripts/setup.sh installs), a
//! bounded load test, and draining on SIGTERM.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ruprompts::format::PromptFormat;
use ruprompts::prompt::Prompt;
use ruprompts::provider::ProviderConfig;
use ruprompts::rng::seeded;
use ruprompts::tokenizer::Tokenizer;
use serde_json::{json, Value};

/// A running server; stopped with SIGTERM when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    /// `ruprompts serve` on the tiny model with the prompts `short` (`<P*3>{text}`) and `qa` (two fields, deep) in
    /// `dir`.
    fn start(dir: &Path, extra: &[&str]) -> Self {
        let (short, qa) = prompts(dir);
        Self::start_on(&model_dir(), &[("short", &short), ("qa", &qa)], extra)
    }

    /// `ruprompts serve` on `model` (served as `tiny`) with `prompts` (name, folder), on a free port.
    fn start_on(model: &Path, prompts: &[(&str, &Path)], extra: &[&str]) -> Self {
        let mut args = vec![
            "serve".to_string(),
            "--model".into(),
            model.to_string_lossy().into_owned(),
            "--served-model-name".into(),
            "tiny".into(),
            "--port".into(),
            "0".into(),
            "--device".into(),
            "cpu".into(),
        ];
        for (name, path) in prompts {
            args.extend(["--prompt".to_string(), format!("{name}={}", path.display())]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_ruprompts"))
            .args(&args)
            .env("OMP_NUM_THREADS", "1")
            .env_remove("RUPROMPTS_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let Some(at) = line.find("http://") else {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("the server did not start: {line} {err}");
        };
        let url = line[at..].split_whitespace().next().unwrap().trim_end_matches("/v1").to_string();
        Self { child, url }
    }

    fn request(&self, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> (u16, String) {
        let mut request = ureq::request(method, &format!("{}{path}", self.url)).timeout(Duration::from_secs(120));
        if let Some(key) = key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        let response = match body {
            Some(body) => request.set("Content-Type", "application/json").send_string(body),
            None => request.call(),
        };
        match response {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    /// POSTs a completion request; the status and the JSON answer.
    fn complete(&self, body: &Value) -> (u16, Value) {
        let (status, text) = self.request("POST", "/v1/completions", None, Some(&body.to_string()));
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
    }

    /// A metric's value from /metrics.
    fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.request("GET", "/metrics", None, None);
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "the server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Two fresh prompts for the tiny model, saved in `dir`: `short` (`<P*3>{text}`) and `qa` (two fields, a deep
/// prompt: keys and values of 4 virtual tokens in every layer besides its own prompt tokens).
fn prompts(dir: &Path) -> (PathBuf, PathBuf) {
    let model = tiny_model();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let deep = ProviderConfig::Prefix { num_virtual_tokens: 4, projection: None, init: Default::default() };
    let mut out = Vec::new();
    for (name, template, seed, provider) in [
        ("short", "<P*3>{text}", 3, ProviderConfig::default()),
        ("qa", "<P*2>{context}\nВопрос: {question}\nОтвет:<P>", 4, deep),
    ] {
        let path = dir.join(name);
        if !path.exists() {
            let format = PromptFormat::compile(template, &tok).unwrap();
            let prompt = seeded(seed, || Prompt::new(format, provider, &model)).unwrap();
            prompt.save_pretrained(&path).unwrap();
        }
        out.push(path);
    }
    (out[0].clone(), out[1].clone())
}

/// The Python with the openai client and lm-eval, or `None` (the test says it skips) where setup has not run.
/// The Python that has the pinned clients; the tests that need it are `#[ignore]`d, and `scripts/test.sh` runs
/// them once setup.sh has installed the venv.
fn client_python() -> PathBuf {
    let python = repo().join(".cache/client-venv/bin/python");
    assert!(python.exists(), "no {} (scripts/setup.sh --tests installs openai and lm-eval there)", python.display());
    python
}

/// What a batch-invariance check compares: every choice's text and finish reason.
fn texts(answer: &Value) -> Vec<(String, String)> {
    answer["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["text"].as_str().unwrap().to_string(), c["finish_reason"].as_str().unwrap_or("").to_string()))
        .collect()
}

/// Requests of every kind: prompts and the bare model, greedy and seeded sampling, several sequences, stop strings.
fn mixed_requests() -> Vec<Value> {
    let texts = ["Кот сидит на окне", "Однажды в студёную зимнюю пору", "Привет", "Где живут пингвины? Они живут"];
    let mut out = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        out.push(json!({"model": "short", "prompt": text, "max_tokens": 6 + i, "temperature": 0}));
        out.push(json!({"model": "tiny", "prompt": text, "max_tokens": 8, "temperature": 0.8, "seed": i, "n": 2}));
        out.push(json!({"model": "qa", "prompt": text, "fields": {"context": "Текст."}, "max_tokens": 5,
                        "temperature": 0.7, "top_p": 0.9, "seed": 11, "stop": ["о"]}));
    }
    out
}

/// On the Llama-, Mistral- and Qwen2-family checkpoints: the bare model's completion of each reference text is
/// transformers' greedy continuation (the server encodes as AutoTokenizer, BOS included, and decodes after the
/// prompt), and prompted rows (a tensor prompt, and a deep one whose virtual tokens go before the BOS) answer the
/// same alone and batched with the others.
#[test]
fn llama_family_checkpoints_are_served() {
    let reference = load_json("reference/llama_family.json");
    for name in ["tiny-llama", "tiny-mistral", "tiny-qwen2"] {
        let folder = fixture(&format!("llama-family/{name}"));
        let model = ruprompts::model::Model::from_dir(&folder, tch::Kind::Float, tch::Device::Cpu).unwrap();
        let tok = Tokenizer::from_dir(&folder).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let deep = ProviderConfig::Prefix { num_virtual_tokens: 2, projection: None, init: Default::default() };
        let mut paths = Vec::new();
        for (prompt, template, provider) in
            [("tensor", "<P*3>{text}", ProviderConfig::default()), ("deep", "{text}<P>Ответ:</P>", deep)]
        {
            let format = PromptFormat::compile(template, &tok).unwrap();
            let path = dir.path().join(prompt);
            seeded(5, || Prompt::new(format, provider, &model)).unwrap().save_pretrained(&path).unwrap();
            paths.push(path);
        }
        let server = Server::start_on(&folder, &[("tensor", &paths[0]), ("deep", &paths[1])], &["--max-batch", "8"]);

        let spec = &reference["models"][name];
        let eos = tok.special().eos.map(i64::from);
        let sources = reference["texts"].as_array().unwrap();
        let mut said = 0;
        for (r, (row, mask)) in
            i64_rows(&spec["left"]["input_ids"]).iter().zip(i64_rows(&spec["left"]["attention_mask"])).enumerate()
        {
            let input: Vec<i64> = row.iter().zip(&mask).filter(|(_, &m)| m == 1).map(|(&t, _)| t).collect();
            let greedy = &i64_rows(&spec["use_cache_True"])[r];
            let until_eos: Vec<i64> = greedy.iter().copied().take_while(|&t| Some(t) != eos).collect();
            let body = json!({"model": "tiny", "prompt": sources[r], "max_tokens": greedy.len(), "temperature": 0});
            let (status, answer) = server.complete(&body);
            assert_eq!(status, 200, "{name}: {answer}");
            let expected = tok.decode_after(&input, &until_eos).unwrap();
            assert_eq!(answer["choices"][0]["text"], expected, "{name}, text {r}");
            said += expected.chars().count();
            assert_eq!(answer["usage"]["prompt_tokens"], input.len(), "{name}, text {r}");
        }
        // (Ids past the tokenizer's 1000 tokens decode to nothing: the texts compared must not all be empty.)
        assert!(said > 5, "{name}: the greedy continuations say {said} chars");

        let requests: Vec<Value> = sources
            .iter()
            .flat_map(|t| {
                [
                    json!({"model": "tensor", "prompt": t, "max_tokens": 5, "temperature": 0}),
                    json!({"model": "deep", "prompt": t, "max_tokens": 4, "temperature": 0.9, "seed": 2}),
                    json!({"model": "tiny", "prompt": t, "max_tokens": 6, "temperature": 0}),
                ]
            })
            .collect();
        let alone: Vec<Value> = requests.iter().map(|r| server.complete(r).1).collect();
        let together: Vec<Value> = std::thread::scope(|s| {
            let handles: Vec<_> = requests.iter().map(|r| s.spawn(|| server.complete(r).1)).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
            assert_eq!(texts(a), texts(b), "{name}: {}", requests[i]);
        }
    }
}

#[test]
fn an_answer_is_the_same_served_alone_or_batched_with_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-batch", "16"]);
    let requests = mixed_requests();
    let alone: Vec<Value> = requests.iter().map(|r| server.complete(r).1).collect();
    // The same requests three times over, all at once: they share batches, join and leave them mid-way.
    let count = requests.len();
    let together: Vec<(usize, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3 * count)
            .map(|i| {
                let (server, request) = (&server, &requests[i % count]);
                s.spawn(move || (i % count, server.complete(request)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .map(|(i, (status, a))| {
                assert_eq!(status, 200, "{a}");
                (i, a)
            })
            .collect()
    });
    for (i, answer) in &together {
        assert_eq!(texts(answer), texts(&alone[*i]), "request {i}: {}", requests[*i]);
    }
    assert!(
        server.metric("ruprompts_batch_rows_sum") > server.metric("ruprompts_batch_rows_count"),
        "rows shared steps"
    );
    // Sampling with a seed is reproducible, and several sequences differ.
    let sampled = &alone[1]["choices"];
    assert_ne!(sampled[0]["text"], sampled[1]["text"]);
}

#[test]
fn errors_come_in_openai_shape_with_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--api-key", "sesame", "--max-n", "4", "--max-body-bytes", "4000"]);
    let key = Some("sesame");
    let post = |body: &str| server.request("POST", "/v1/completions", key, Some(body));
    let error = |(status, text): (u16, String)| -> (u16, Value) {
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string(), "not OpenAI's shape: {v}");
        (status, v["error"].clone())
    };
    assert_eq!(server.request("GET", "/health", None, None).0, 200, "health needs no key");
    let (status, e) = error(server.request("GET", "/v1/models", None, None));
    assert_eq!((status, e["code"].as_str()), (401, Some("invalid_api_key")));
    assert_eq!(error(server.request("GET", "/v1/models", Some("open"), None)).0, 401);
    assert_eq!(server.request("GET", "/v1/models", key, None).0, 200);
    // The scheme is case-insensitive (RFC 7235), and the space after it may be several.
    for value in ["bearer sesame", "BEARER  sesame", "Bearer\tsesame"] {
        let response = ureq::get(&format!("{}/v1/models", server.url)).set("Authorization", value).call();
        assert_eq!(response.map(|r| r.status()).unwrap_or_else(|e| panic!("{value}: {e}")), 200, "{value}");
    }
    for value in ["Basic sesame", "Bearersesame", "sesame"] {
        let response = ureq::get(&format!("{}/v1/models", server.url)).set("Authorization", value).call();
        assert!(matches!(response, Err(ureq::Error::Status(401, _))), "{value}");
    }
    let (status, e) = error(post("{\"model\": \"short\", \"prompt\": "));
    assert_eq!(status, 400);
    assert!(e["message"].as_str().unwrap().contains("EOF"), "{e}");
    let (status, e) = error(post(r#"{"model": "nope", "prompt": "x"}"#));
    assert_eq!((status, e["param"].as_str()), (404, Some("model")));
    assert!(e["message"].as_str().unwrap().contains("tiny, short, qa"), "{e}");
    let (status, e) = error(post(r#"{"model": "short", "prompt": "x", "n": 5}"#));
    assert_eq!((status, e["param"].as_str()), (400, Some("n")));
    let (status, e) = error(post(r#"{"model": "short", "prompt": "x", "max_tokens": 300}"#));
    assert_eq!((status, e["param"].as_str()), (400, Some("max_tokens")));
    let long = "слово ".repeat(300);
    let (status, e) = error(post(&json!({"model": "tiny", "prompt": long}).to_string()));
    assert_eq!((status, e["param"].as_str()), (400, Some("prompt")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("maximum context length is 256 tokens"), "{e}");
    let (status, _) = error(post(&json!({"model": "tiny", "prompt": "x".repeat(5000)}).to_string()));
    assert_eq!(status, 413);
    let (status, e) = error(post(r#"{"model": "short", "prompt": "x", "max_tokenz": 3}"#));
    assert!(status == 400 && e["message"].as_str().unwrap().contains("max_tokenz"), "{e}");
    let (status, e) = error(post(r#"{"model": "tiny", "prompt": {"text": 1}}"#));
    assert!(status == 400 && e["message"].as_str().unwrap().contains("list of token ids"), "{e}");
    // Text spelling a prompt token would place a prompt where no format puts one.
    let (status, e) = error(post(r#"{"model": "tiny", "prompt": "x <|[short]P|>"}"#));
    assert!(status == 400 && e["message"].as_str().unwrap().contains("prompt token"), "{e}");
    let (status, e) = error(post(r#"{"model": "tiny", "prompt": [5, 999999]}"#));
    assert!(status == 400 && e["message"].as_str().unwrap().contains("999999"), "{e}");
    let (status, e) = error(post(r#"{"model": "qa", "prompt": "x", "fields": {"colour": "red"}}"#));
    assert!(status == 400 && e["message"].as_str().unwrap().contains("colour"), "{e}");
    let (status, e) = error(post(r#"{"model": "short", "prompt": "x", "num_beams": 2, "stream": true}"#));
    assert!(status == 400 && e["param"] == "num_beams", "{e}");
    // More beams than the server's rows (or half the vocabulary) is the client's error, not a 500.
    for beams in [0, 5, 100_000] {
        let (status, e) = error(post(&format!(r#"{{"model": "short", "prompt": "x", "num_beams": {beams}}}"#)));
        assert!(status == 400 && e["param"] == "num_beams", "{beams}: {e}");
        assert!(e["message"].as_str().unwrap().contains("this server takes 1 to 4 (--max-n"), "{e}");
    }
    assert_eq!(error(server.request("GET", "/v2/nothing", key, None)).0, 404);
    // Values out of every range a field takes: each a 4xx naming the request's fault, none a 500 (which clients
    // retry).
    let chat = |body: &str| server.request("POST", "/v1/chat/completions", key, Some(body));
    for (body, chat_route) in [
        (r#"{"model": "short", "prompt": "x", "max_tokens": -1}"#, false),
        (r#"{"model": "short", "prompt": "x", "max_tokens": 18446744073709551615}"#, false),
        (r#"{"model": "short", "prompt": "x", "temperature": -1}"#, false),
        (r#"{"model": "short", "prompt": "x", "temperature": 1e308}"#, false),
        (r#"{"model": "short", "prompt": "x", "top_p": 2}"#, false),
        (r#"{"model": "short", "prompt": "x", "top_k": -5}"#, false),
        (r#"{"model": "short", "prompt": "x", "logprobs": 1000}"#, false),
        (r#"{"model": "short", "prompt": "x", "logprobs": -1}"#, false),
        (r#"{"model": "short", "prompt": "x", "n": 0}"#, false),
        (r#"{"model": "short", "prompt": "x", "stop": [1, 2]}"#, false),
        (r#"{"model": "short", "prompt": "x", "stop": ""}"#, false),
        (r#"{"model": "short", "prompt": "x", "min_tokens": 10, "max_tokens": 2}"#, false),
        (r#"{"model": "short", "prompt": "x", "repetition_penalty": 0}"#, false),
        (r#"{"model": "short", "prompt": "x", "num_beams": 2, "temperature": 1, "n": 3}"#, false),
        (r#"{"model": "tiny", "prompt": [-1]}"#, false),
        (r#"{"model": "tiny", "prompt": [[]]}"#, false),
        (r#"{"model": "tiny", "prompt": [[1, [2]]]}"#, false),
        (r#"{"model": "tiny", "prompt": []}"#, false),
        (r#"{"model": "tiny", "prompt": ""}"#, false),
        (r#"{"model": "tiny"}"#, false),
        (r#"{"prompt": "x"}"#, false),
        (r#"[]"#, false),
        (r#"{"model": "tiny", "messages": []}"#, true),
        (r#"{"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}"#, true),
        (r#"{"model": "tiny", "messages": [{"role": "user"}]}"#, true),
        (r#"{"model": "tiny", "messages": "hello"}"#, true),
    ] {
        let (status, text) = if chat_route { chat(body) } else { post(body) };
        assert!((400..500).contains(&status), "{body}: {status} {text}");
        let (_, e) = error((status, text));
        assert!(!e["message"].as_str().unwrap().is_empty(), "{body}: {e}");
    }
    // After all that the server still answers.
    let (status, _) = post(r#"{"model": "short", "prompt": "Кот", "max_tokens": 2}"#);
    assert_eq!(status, 200);
}

#[test]
#[ignore = "needs .cache/client-venv (scripts/setup.sh --tests); scripts/test.sh runs it"]
fn the_openai_client_parses_every_answer() {
    let python = client_python();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--api-key", "sesame"]);
    let out = Command::new(python)
        .arg(repo().join("tests/clients/openai_check.py"))
        .args([&format!("{}/v1", server.url), "sesame", "tiny"])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("every check passed"), "{stdout}");
}

/// lm-evaluation-harness's `local-completions` model on our server, with `model=short`, scores a multiple-choice
/// task built from TERRa rows exactly as `ruprompts eval` scores it with the same prompt.
#[test]
#[ignore = "needs .cache/client-venv (scripts/setup.sh --tests); scripts/test.sh runs it"]
fn lm_eval_through_the_server_agrees_with_ruprompts_eval() {
    let python = client_python();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // One field per row: the lm-eval TERRa context, so a one-field prompt format takes it whole.
    let rows: Vec<Value> = std::fs::read_to_string(fixture("lm-eval/terra/val.jsonl"))
        .unwrap()
        .lines()
        .take(24)
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            let text =
                format!("{}\nВопрос: {}? Ответ:", r["premise"].as_str().unwrap(), r["hypothesis"].as_str().unwrap());
            json!({"text": text, "label": r["label"]})
        })
        .collect();
    let data = root.join("val.jsonl");
    std::fs::write(&data, rows.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
    std::fs::write(
        root.join("terra_served.yaml"),
        format!(
            "task: terra_served\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    validation: {}\n\
             output_type: multiple_choice\nvalidation_split: validation\ndoc_to_text: \"{{{{text}}}}\"\n\
             doc_to_choice: [\"да\", \"нет\"]\ndoc_to_target: \"{{{{0 if label == 'entailment' else 1}}}}\"\n\
             target_delimiter: \" \"\nmetric_list:\n  - metric: acc\n",
            data.display()
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("task.yaml"),
        "name: terra_served\ndata: {val: val.jsonl}\nzero_shot: \"{text}\"\n\
         candidates:\n  verbalizers: {entailment: \" да\", not_entailment: \" нет\"}\ngold: {label: label}\n\
         metrics: [accuracy]\n",
    )
    .unwrap();
    let server = Server::start(root, &[]);
    let out = Command::new(&python)
        .args(["-m", "lm_eval", "--model", "local-completions", "--tasks", "terra_served", "--include_path"])
        .arg(root)
        .arg("--model_args")
        .arg(format!("model=short,base_url={}/v1/completions,num_concurrent=4,max_retries=1", server.url))
        .args(["--log_samples", "--output_path"])
        .arg(root.join("lm-eval"))
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", root.join("hf"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lm_eval failed:\n{}\n{stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("remote tokenizer"), "lm-eval tokenized through the server's /tokenize:\n{stderr}");
    let find = |prefix: &str| {
        let mut found = Vec::new();
        let mut stack = vec![root.join("lm-eval")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.file_name().unwrap().to_string_lossy().starts_with(prefix) {
                    found.push(p);
                }
            }
        }
        assert_eq!(found.len(), 1, "{prefix}: {found:?}");
        std::fs::read_to_string(&found[0]).unwrap()
    };
    let results: Value = serde_json::from_str(&find("results_")).unwrap();
    let theirs_acc = results["results"]["terra_served"]["acc,none"].as_f64().unwrap();
    let mut theirs: Vec<(u64, Vec<f64>)> = find("samples_terra_served")
        .lines()
        .map(|l| {
            let s: Value = serde_json::from_str(l).unwrap();
            // Each choice's response is [[log-likelihood, is_greedy]], the numbers written as text.
            let number = |v: &Value| v.as_f64().or_else(|| v.as_str()?.parse().ok());
            let lls = s["resps"].as_array().unwrap().iter().map(|r| number(&r[0][0]).unwrap_or_else(|| panic!("{s}")));
            let lls = lls.collect();
            (s["doc_id"].as_u64().unwrap(), lls)
        })
        .collect();
    theirs.sort_by_key(|(id, _)| *id);
    drop(server);

    let (ok, _, stderr) = ruprompts(&[
        "eval",
        "--task-file",
        root.join("task.yaml").to_str().unwrap(),
        "--prompt",
        root.join("short").to_str().unwrap(),
        "--model",
        model_dir().to_str().unwrap(),
        "--log-samples",
        "--out",
        root.join("eval").to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(ok, "{stderr}");
    let samples: Vec<Value> = std::fs::read_to_string(root.join("eval/samples/terra_served.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(samples.len(), theirs.len());
    let (mut worst, mut right) = (0.0f64, 0);
    for (ours, (_, theirs)) in samples.iter().zip(&theirs) {
        let tuned = &ours["tuned"];
        for (c, theirs) in theirs.iter().enumerate() {
            worst = worst.max((tuned["loglikelihoods"][c].as_f64().unwrap() - theirs).abs());
        }
        right += u32::from(tuned["predictions"]["sum"] == ours["gold"]);
    }
    assert!(worst <= 1e-4, "per-sample log-likelihoods differ by up to {worst}");
    let ours_acc = f64::from(right) / samples.len() as f64;
    assert_eq!(ours_acc, theirs_acc, "accuracy: ruprompts eval {ours_acc}, lm-eval through the server {theirs_acc}");
}

/// A streamed answer read whole: each choice's text, assembled from the chunks, and its finish reason.
fn read_stream(reader: impl std::io::Read) -> Vec<(String, String)> {
    let mut choices: Vec<(String, String)> = Vec::new();
    let mut done = false;
    for line in BufReader::new(reader).lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if data == "[DONE]" {
            done = true;
            break;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        for c in chunk["choices"].as_array().unwrap() {
            let i = c["index"].as_u64().unwrap() as usize;
            if choices.len() <= i {
                choices.resize(i + 1, Default::default());
            }
            choices[i].0.push_str(c["text"].as_str().unwrap());
            if let Some(reason) = c["finish_reason"].as_str() {
                choices[i].1 = reason.to_string();
            }
        }
    }
    assert!(done, "the stream ended without [DONE]");
    choices
}

fn stream_request(server: &Server, body: &Value) -> ureq::Response {
    ureq::post(&format!("{}/v1/completions", server.url)).timeout(Duration::from_secs(120)).send_json(body).unwrap()
}

/// 64 clients × 8 requests at once, mixed prompts and settings, a third streamed and some streams dropped after
/// their first chunk: every request is answered exactly as when served alone, nothing is left decoding, and the
/// server's memory after the load is where it was after a first round.
#[test]
fn a_bounded_load_is_answered_whole_with_nothing_lost_or_crossed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-batch", "32"]);
    let requests = mixed_requests();
    let alone: Vec<Vec<(String, String)>> = requests.iter().map(|r| texts(&server.complete(r).1)).collect();
    let round = |clients: usize, per_client: usize| {
        std::thread::scope(|s| {
            for c in 0..clients {
                let (server, requests, alone) = (&server, &requests, &alone);
                s.spawn(move || {
                    for k in 0..per_client {
                        let i = (c * 7 + k * 5) % requests.len();
                        let mut body = requests[i].clone();
                        match (c + k) % 6 {
                            // Streamed, read to the end.
                            0 | 3 => {
                                body["stream"] = json!(true);
                                let got = read_stream(stream_request(server, &body).into_reader());
                                assert_eq!(got, alone[i], "client {c} request {k} (streamed): {body}");
                            }
                            // Streamed, and the client goes away after the first chunk.
                            5 => {
                                body["stream"] = json!(true);
                                body["max_tokens"] = json!(200);
                                let mut reader = BufReader::new(stream_request(server, &body).into_reader());
                                let mut first = String::new();
                                reader.read_line(&mut first).unwrap();
                                assert!(first.starts_with("data: "), "{first}");
                            }
                            _ => {
                                let (status, answer) = server.complete(&body);
                                assert_eq!(status, 200, "{answer}");
                                assert_eq!(texts(&answer), alone[i], "client {c} request {k}: {body}");
                            }
                        }
                    }
                });
            }
        })
    };
    let idle = |server: &Server| {
        let start = Instant::now();
        while server.metric("ruprompts_running_rows") > 0.0 || server.metric("ruprompts_queue_length") > 0.0 {
            assert!(start.elapsed() < Duration::from_secs(60), "rows still decoding a minute after the load");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    round(64, 1);
    idle(&server);
    let warm = server.rss_kib();
    let started = Instant::now();
    round(64, 8);
    let seconds = started.elapsed().as_secs_f64();
    idle(&server);
    let after = server.rss_kib();
    eprintln!(
        "load: 512 requests from 64 clients in {seconds:.1} s; RSS {warm} KiB after a first round, {after} KiB after"
    );
    assert!(after <= warm + warm / 4 + 32 * 1024, "memory grew from {warm} KiB to {after} KiB over the load");
}

#[test]
fn a_client_that_goes_away_frees_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let body = json!({"model": "tiny", "prompt": "Кот", "max_tokens": 250, "temperature": 0, "stream": true});
    let mut reader = BufReader::new(stream_request(&server, &body).into_reader());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    drop(reader);
    let start = Instant::now();
    while server.metric("ruprompts_running_rows") > 0.0 {
        assert!(start.elapsed() < Duration::from_secs(30), "the rows of a gone client are still decoding");
        std::thread::sleep(Duration::from_millis(5));
    }
    let generated = server.metric("ruprompts_completion_tokens_total");
    assert!(generated < 200.0, "{generated} of 250 tokens were generated for a client that left after one");
    // A client that gives up waiting for a whole answer is let go too.
    let body =
        json!({"model": "tiny", "prompt": "Кот", "max_tokens": 250, "min_tokens": 250, "temperature": 0, "n": 16});
    let url = format!("{}/v1/completions", server.url);
    match ureq::post(&url).timeout(Duration::from_millis(100)).send_json(&body) {
        Err(ureq::Error::Transport(_)) => {}
        other => panic!("expected the client to time out, got {other:?}"),
    }
    let start = Instant::now();
    while server.metric("ruprompts_running_rows") > 0.0 {
        assert!(start.elapsed() < Duration::from_secs(30), "the rows of a gone client are still decoding");
        std::thread::sleep(Duration::from_millis(5));
    }
    let more = server.metric("ruprompts_completion_tokens_total") - generated;
    assert!(more > 0.0, "the request never started");
    // Left to the end, min_tokens would make it exactly 4000.
    assert!(more < 4000.0, "all {more} tokens were generated for a client that left");
}

#[test]
fn sigterm_finishes_the_requests_in_flight_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let body = json!({"model": "short", "prompt": "Кот", "max_tokens": 240, "temperature": 0, "min_tokens": 240});
    std::thread::scope(|s| {
        let url = format!("{}/v1/completions", server.url);
        let answer = s.spawn(move || {
            let response = ureq::post(&url).timeout(Duration::from_secs(120)).send_json(&body).unwrap();
            (response.status(), response.into_json::<Value>().unwrap())
        });
        let start = Instant::now();
        while server.metric("ruprompts_running_rows") == 0.0 {
            assert!(start.elapsed() < Duration::from_secs(30), "the request never started decoding");
            std::thread::sleep(Duration::from_millis(2));
        }
        let status = server.terminate();
        assert!(status.success(), "the server exited with {status}");
        let (code, answer) = answer.join().unwrap();
        assert_eq!(code, 200, "{answer}");
        assert_eq!(answer["usage"]["completion_tokens"], 240, "{answer}");
    });
}

/// The chat API on a GGUF checkpoint with a chat template (ChatML): the openai client's chat calls (messages, n,
/// stop, logprobs, streaming, a prompt key as the model, errors) all parse; the greedy reply is what
/// `ruprompts generate --chat` decodes for the same question; a checkpoint without a template is refused with the
/// reason.
#[test]
#[ignore = "needs .cache/client-venv (scripts/setup.sh --tests); scripts/test.sh runs it"]
fn the_openai_client_chats_with_a_chat_template() {
    let python = client_python();
    let gguf = fixture("gguf/tiny-qwen2.gguf");
    let dir = tempfile::tempdir().unwrap();
    let backbone = ruprompts::model::Backbone::load_local(&ruprompts::model::ModelSource::local(&gguf)).unwrap();
    let format = PromptFormat::compile("<P*3>{text}", &backbone.tokenizer).unwrap();
    let prompt = seeded(5, || Prompt::new(format, ProviderConfig::default(), &backbone.model)).unwrap();
    let short = dir.path().join("short");
    prompt.save_pretrained(&short).unwrap();
    let server = Server::start_on(&gguf, &[("short", &short)], &[]);
    let out = Command::new(&python)
        .arg(repo().join("tests/clients/openai_chat_check.py"))
        .args([&format!("{}/v1", server.url), "tiny", "short"])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("every chat check passed"), "{stdout}");

    let question = json!({"model": "tiny", "messages": [{"role": "user", "content": "What is the capital of France?"}],
                          "max_tokens": 8, "temperature": 0});
    let (status, body) = server.request("POST", "/v1/chat/completions", None, Some(&question.to_string()));
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    let (ok, stdout, stderr) = ruprompts(&[
        "generate",
        "--model",
        gguf.to_str().unwrap(),
        "--chat",
        "--max-new-tokens",
        "8",
        "--device",
        "cpu",
        "What is the capital of France?",
    ]);
    assert!(ok, "{stderr}");
    let line: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["generated"][0], reply["choices"][0]["message"]["content"], "{stdout} vs {body}");

    let plain = Server::start(dir.path(), &[]);
    let (status, body) = plain.request("POST", "/v1/chat/completions", None, Some(&question.to_string()));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("has no chat template"), "{body}");
}

#[test]
fn settings_that_leave_the_server_open_or_useless_are_refused_at_start() {
    let refused = |args: &[&str], env_key: Option<&str>| -> String {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ruprompts"));
        command.args(["serve", "--model"]).arg(model_dir()).args(["--port", "0", "--device", "cpu"]).args(args);
        command.env_remove("RUPROMPTS_API_KEY").env("OMP_NUM_THREADS", "1");
        if let Some(key) = env_key {
            command.env("RUPROMPTS_API_KEY", key);
        }
        let mut child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(60) {
                child.kill().unwrap();
                panic!("{args:?} started a server instead of being refused");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        err
    };
    assert!(refused(&["--api-key", ""], None).contains("--api-key (or RUPROMPTS_API_KEY) is empty"));
    assert!(refused(&[], Some("")).contains("is empty"));
    assert!(refused(&["--api-key", "two words"], None).contains("not sendable as a bearer token"));
    assert!(refused(&["--max-body-bytes", "0"], None).contains("--max-body-bytes 0: no request fits"));
    assert!(refused(&["--max-batch-tokens", "0"], None).contains("--max-batch-tokens must be at least 1"));
    assert!(refused(&["--max-connections", "0"], None).contains("--max-connections must be at least 1"));
    assert!(refused(&["--header-timeout", "0"], None).contains("--header-timeout 0: give seconds above 0"));
    assert!(refused(&["--max-queue", "4", "--max-n", "8"], None).contains("--max-queue 4 is below --max-n 8"));
}

/// Waits until the server has `jobs` or more waiting for room in the batch.
fn wait_for_queue(server: &Server, jobs: f64) {
    let start = Instant::now();
    while server.metric("ruprompts_queue_length") < jobs {
        assert!(start.elapsed() < Duration::from_secs(60), "the request was never queued");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A request of hundreds of prompts beside small ones: requests take turns in the batch, so each small one is
/// answered in a fraction of the large one's time, not after it; the wait shows in /metrics.
#[test]
fn a_huge_request_does_not_hold_back_small_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-batch", "8"]);
    let huge = json!({"model": "short", "prompt": vec!["Кот сидит"; 400], "max_tokens": 24, "min_tokens": 24,
                      "temperature": 0});
    let small = json!({"model": "short", "prompt": "Кот", "max_tokens": 4, "min_tokens": 4, "temperature": 0});
    std::thread::scope(|s| {
        let url = format!("{}/v1/completions", server.url);
        let huge = s.spawn(move || {
            let start = Instant::now();
            let response = ureq::post(&url).timeout(Duration::from_secs(300)).send_json(&huge).unwrap();
            let answer: Value = response.into_json().unwrap();
            assert_eq!(answer["choices"].as_array().unwrap().len(), 400);
            start.elapsed()
        });
        wait_for_queue(&server, 100.0);
        let mut slowest = Duration::ZERO;
        for _ in 0..5 {
            let start = Instant::now();
            let (status, answer) = server.complete(&small);
            assert_eq!(status, 200, "{answer}");
            slowest = slowest.max(start.elapsed());
        }
        let huge = huge.join().unwrap();
        assert!(huge > Duration::from_millis(500), "the large request took only {huge:?}: too small to tell");
        assert!(slowest * 5 < huge, "a small request took {slowest:?} beside a large one of {huge:?}");
    });
    assert!(server.metric("ruprompts_queue_wait_seconds_count") >= 405.0);
}

/// Past --max-queue waiting rows a request gets 429 with Retry-After, and one larger than the queue a 400 naming
/// `prompt`; the queue frees as rows are admitted.
#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-batch", "1", "--max-queue", "20"]);
    let body = |prompts: usize| {
        json!({"model": "short", "prompt": vec!["Кот"; prompts], "max_tokens": 16, "min_tokens": 16,
               "temperature": 0})
    };
    let (status, answer) = server.complete(&body(21));
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["param"], "prompt", "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("queues at most 20 (--max-queue)"), "{answer}");
    std::thread::scope(|s| {
        let url = format!("{}/v1/completions", server.url);
        let first = body(20);
        let first = s.spawn(move || ureq::post(&url).timeout(Duration::from_secs(120)).send_json(&first).unwrap());
        wait_for_queue(&server, 10.0);
        let url = format!("{}/v1/completions", server.url);
        match ureq::post(&url).send_json(body(5)) {
            Err(ureq::Error::Status(429, response)) => {
                assert_eq!(response.header("Retry-After"), Some("1"));
                let answer: Value = response.into_json().unwrap();
                assert_eq!(answer["error"]["type"], "rate_limit_error", "{answer}");
                assert!(answer["error"]["message"].as_str().unwrap().contains("the server is busy"), "{answer}");
            }
            other => panic!("expected 429, got {other:?}"),
        }
        assert_eq!(first.join().unwrap().status(), 200);
    });
    let (status, answer) = server.complete(&body(5));
    assert_eq!(status, 200, "{answer}");
}

/// Sockets that send nothing are closed after --header-timeout, and past --max-connections a new client waits
/// for a slot instead of the server holding sockets without bound.
#[test]
fn idle_connections_are_closed_and_capped() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-connections", "3", "--header-timeout", "1"]);
    let address = server.url.trim_start_matches("http://").to_string();
    let idle: Vec<std::net::TcpStream> = (0..3).map(|_| std::net::TcpStream::connect(&address).unwrap()).collect();
    // A fourth client waits for a slot: an idle socket's timeout frees one.
    let start = Instant::now();
    let (status, _) = server.request("GET", "/health", None, None);
    let waited = start.elapsed();
    assert_eq!(status, 200);
    assert!(waited > Duration::from_millis(500), "served at once beside 3 idle connections: {waited:?}");
    assert!(waited < Duration::from_secs(10), "waited {waited:?} for a slot");
    // The idle sockets were closed by the server: reading ends (or fails), it does not hang.
    for mut socket in idle {
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        match socket.read(&mut buf) {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("an idle socket got {n} bytes"),
        }
        assert!(start.elapsed() < Duration::from_secs(10), "an idle socket stayed open");
    }
    // A slow but live client (headers in pieces within the timeout) is served.
    let mut slow = std::net::TcpStream::connect(&address).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    slow.write_all(b"Host: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
