//! Our side of the side-by-side benchmark against Python ruPrompts + transformers; `bench/compare.py` drives both.
//! `prepare` writes the work both sides share into a folder: token ids (from real DaNetQA and PARus text, through the
//! model's tokenizer and our task formats) and the prompts' initial weights. `run WORKLOAD` times one workload in a
//! fresh process and prints one JSON line: throughput, cold start (from `BENCH_T0`, the driver's clock when it
//! started the process, to the end of the first unit of work), peak RSS, and what was computed, for the driver to
//! check against Python's.
//!
//! `cargo run --release --example bench_vs_python -- prepare --model PATH --work DIR [--items N] [--python-model DIR]`
//! `cargo run --release --example bench_vs_python -- run WORKLOAD --work DIR [--threads N] [--steps N]`
//! with WORKLOAD one of train-tensor, train-lstm, train-prefix, train-peft, score-<task>, lmeval-<task>, generate-1,
//! generate-8, beam-1, beam-8 (<task>: danetqa, parus, terra-5shot, muserc); `-int8` (or `-int4`) after a scoring or
//! generation workload runs it with quantized weights (`Model::quantize`). The model is a Hugging Face folder or a
//! GGUF file; `--python-model` names the folder the Python side loads when it differs (transformers' conversion of
//! that GGUF file). Python's workload names pick its side: train-peft is PEFT's prompt tuning, lmeval-<task>
//! lm-evaluation-harness's HF backend; ours runs the same work for them as for train-tensor and score-<task>.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use ruprompts::data::{read_rows, Record};
use ruprompts::format::PromptFormat;
use ruprompts::generate::{generate, GenerationConfig};
use ruprompts::model::{Backbone, Model, ModelSource, Quantize};
use ruprompts::prompt::Prompt;
use ruprompts::provider::ProviderConfig;
use ruprompts::task::{Classifier, Item, RsgTask, ScoreMode, TaskFormats};
use ruprompts::tokenizer::Tokenizer;
use ruprompts::train::{AdamW, AdamWConfig};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

/// Soft tokens before the text, in training and generation.
/// The scoring workloads (`score-<name>`), see [`items`].
const SCORING: [&str; 4] = ["danetqa", "parus", "terra-5shot", "muserc"];
const PROMPT: usize = 20;
/// Training batch: rows × tokens (prompt included), of which the last `LABELLED` are the target.
const BATCH: usize = 8;
const TOKENS: usize = 128;
const LABELLED: usize = 16;
/// Generation: text tokens after the prompt, new tokens per row, rows.
const GEN_INPUT: usize = 24;
const NEW_TOKENS: usize = 64;
/// Beams of the beam-search workloads.
const BEAMS: usize = 4;
const GEN_ROWS: usize = 8;
const LR: f64 = 1e-3;

/// A path inside the repository.
fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

/// Seconds since the driver started this process (`BENCH_T0`, Unix seconds).
fn since_start() -> f64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs_f64();
    std::env::var("BENCH_T0").ok().and_then(|t| t.parse::<f64>().ok()).map_or(f64::NAN, |t0| now - t0)
}

/// Peak resident memory of this process in MiB (`VmHWM`).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The scoring workloads (`danetqa`, `parus`, `terra-5shot`, `muserc`): each one's task and items as the evaluator
/// reads them. TERRa 5-shot puts the same five train items before each (first_n, as fixed few-shot sets are).
/// MuSeRC's items are answer options, four per question as in the real task (our sample keeps one option per
/// question, so each question gets its own and the next three rows' options), in order, so those of one
/// question share a batch.
fn items(workload: &str, n: usize) -> Result<(TaskFormats, Vec<Item>)> {
    let task = match workload {
        "danetqa" => RsgTask::Danetqa,
        "parus" => RsgTask::Parus,
        "terra-5shot" => RsgTask::Terra,
        "muserc" => RsgTask::Muserc,
        other => bail!("unknown scoring workload {other}"),
    };
    let formats = TaskFormats::bundled(task);
    let records = match task {
        RsgTask::Danetqa => read_rows(&repo("assets/rsg/DaNetQA/val.jsonl.gz"))?,
        RsgTask::Terra => read_rows(&repo("assets/rsg/TERRa/val.jsonl.gz"))?,
        RsgTask::Muserc => {
            muserc_questions(&read_rows(&repo("tests/fixtures/rsg-samples/muserc/train_sample_dev.jsonl"))?)?
        }
        _ => read_rows(&repo("tests/fixtures/rsg-samples/parus/train_sample_dev.jsonl"))?
            .into_iter()
            .map(|Record { mut row, origin }| {
                let label = row.remove("target").context("PARus sample row without target")?;
                row.insert("label".into(), label);
                let id = row.remove("id").context("PARus sample row without id")?;
                row.insert("idx".into(), id);
                Ok(Record { row, origin })
            })
            .collect::<Result<_>>()?,
    };
    let mut all = task.items(&records, &formats.verbalizers)?;
    all.truncate(n);
    if workload == "terra-5shot" {
        let pool = task.items(&read_rows(&repo("assets/rsg/TERRa/train.jsonl.gz"))?, &formats.verbalizers)?;
        let shots = ruprompts::task::fewshot::choose(&all, &pool, 5, ruprompts::task::fewshot::Sampler::FirstN, 0)?;
        for (t, shots) in all.iter_mut().zip(shots) {
            t.item.shots = shots;
        }
    }
    Ok((formats, all.into_iter().map(|t| t.item).collect()))
}

/// Official-layout MuSeRC records from the flattened sample rows (passage, question, answer, target): row i's
/// passage and question with the answers of rows i..i+4 as its options.
fn muserc_questions(rows: &[Record]) -> Result<Vec<Record>> {
    let text =
        |r: &Record, key: &str| r.row.get(key).and_then(Value::as_str).map(String::from).context(key.to_string());
    rows.windows(4)
        .step_by(4)
        .enumerate()
        .map(|(i, w)| {
            let answers: Vec<Value> = w
                .iter()
                .enumerate()
                .map(|(j, r)| Ok(json!({"idx": j, "text": text(r, "answer")?, "label": r.row.get("target").cloned().unwrap_or(json!(0))})))
                .collect::<Result<_>>()?;
            let question = json!({"idx": 0, "question": text(&w[0], "question")?, "answers": answers});
            let row = json!({"idx": i, "passage": {"text": text(&w[0], "passage")?, "questions": [question]}});
            Ok(Record { row: serde_json::from_value(row)?, origin: w[0].origin.clone() })
        })
        .collect()
}

fn classifier<'a>(
    model: &'a Model,
    tok: &'a Tokenizer,
    format: &'a PromptFormat,
    trunc: Option<&'a str>,
) -> Classifier<'a> {
    Classifier {
        model,
        tokenizer: tok,
        format,
        injections: &[],
        mode: ScoreMode::Sum,
        shared: true,
        truncation_field: trunc,
        max_tokens: None,
        shot_delimiter: "\n\n",
        chat: None,
    }
}

/// The text tokens of DaNetQA passages: `rows` runs of `len` tokens, one passage each (those long enough).
fn passages(tok: &Tokenizer, rows: usize, len: usize) -> Result<Vec<Vec<i64>>> {
    let records = read_rows(&repo("assets/rsg/DaNetQA/val.jsonl.gz"))?;
    let mut out = Vec::new();
    for r in records {
        let ids = tok.encode_ids(r.row["passage"].as_str().unwrap_or_default())?;
        if ids.len() >= len {
            out.push(ids[..len].to_vec());
        }
        if out.len() == rows {
            return Ok(out);
        }
    }
    bail!("fewer than {rows} DaNetQA passages of {len} tokens")
}

fn provider(kind: &str) -> ProviderConfig {
    match kind {
        "lstm" => ProviderConfig::Lstm { hidden_dim: None, input_dim: None, num_layers: 2 },
        "prefix" => {
            ProviderConfig::Prefix { num_virtual_tokens: PROMPT as i64, projection: None, init: Default::default() }
        }
        _ => ProviderConfig::default(),
    }
}

/// `<P*20>{text}`; for a deep prompt `{text}`, its 20 virtual tokens going first (the same token ids).
fn prefix_format(kind: &str) -> Result<PromptFormat> {
    if kind == "prefix" {
        return Ok(PromptFormat::from_compiled("{text}", "{text}")?);
    }
    let compiled = format!("{}{{text}}", ruprompts::format::PROMPT_TOKEN.repeat(PROMPT));
    Ok(PromptFormat::from_compiled(&format!("<P*{PROMPT}>{{text}}"), &compiled)?)
}

/// The prompt of `kind` (tensor, lstm, prefix) with the initial weights `prepare` wrote.
fn load_prompt(model: &Model, work: &Path, kind: &str) -> Result<Prompt> {
    let mut prompt = Prompt::new(prefix_format(kind)?, provider(kind), model)?;
    let state = Tensor::read_safetensors(work.join(format!("init_{kind}.safetensors")))?;
    prompt.set_state(&state)?;
    Ok(prompt)
}

/// The model (f32, CPU) and its tokenizer from a Hugging Face folder or a GGUF file.
fn load(path: &Path) -> Result<(Model, Tokenizer)> {
    let source = ModelSource { device: ruprompts::device::DeviceChoice::Cpu, ..ModelSource::local(path) };
    let Backbone { model, tokenizer, .. } = Backbone::load_local(&source)?;
    Ok((model, tokenizer))
}

fn prepare(model_path: &Path, python_model: &Path, work: &Path, n: usize) -> Result<()> {
    std::fs::create_dir_all(work)?;
    let (model, tok) = load(model_path)?;
    for (seed, kind) in [(1, "tensor"), (2, "lstm"), (3, "prefix")] {
        let prompt = ruprompts::rng::seeded(seed, || Prompt::new(prefix_format(kind)?, provider(kind), &model))?;
        let vars: Vec<(String, Tensor)> = prompt.var_store().variables().into_iter().collect();
        let named: Vec<(&str, &Tensor)> = vars.iter().map(|(n, t)| (n.as_str(), t)).collect();
        Tensor::write_safetensors(&named, work.join(format!("init_{kind}.safetensors")))?;
    }
    let mut score = serde_json::Map::new();
    for workload in SCORING {
        let (formats, items) = items(workload, n)?;
        let format = PromptFormat::compile(formats.zero_shot(), &tok)?;
        let c = classifier(&model, &tok, &format, formats.truncation_field.as_deref());
        let requests: Vec<Value> = items
            .iter()
            .map(|item| {
                let ruprompts::task::Request { context, candidates, .. } = c.request(item)?;
                let answers: Vec<&Vec<i64>> = candidates.iter().map(|k| &k.answer).collect();
                Ok(json!({ "context": context, "answers": answers }))
            })
            .collect::<Result<_>>()?;
        score.insert(workload.to_string(), Value::Array(requests));
    }
    let spec = json!({
        "model": std::fs::canonicalize(model_path)?,
        "python_model": std::fs::canonicalize(python_model)?,
        "prompt_length": PROMPT,
        "train": { "ids": passages(&tok, BATCH, TOKENS - PROMPT)?, "labelled": LABELLED, "lr": LR },
        "score": score,
        "generate": { "inputs": passages(&tok, GEN_ROWS, GEN_INPUT)?, "new_tokens": NEW_TOKENS },
    });
    std::fs::write(work.join("spec.json"), serde_json::to_string(&spec)?)?;
    Ok(())
}

/// (units per second after the first, seconds to the end of the first, what was computed).
type Timed = (f64, f64, Value);

fn train(model: &Model, spec: &Value, work: &Path, kind: &str, steps: usize) -> Result<Timed> {
    let prompt = load_prompt(model, work, kind)?;
    let mut opt = AdamW::new(
        AdamWConfig { lr: LR, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0 },
        prompt.var_store().variables().into_iter().collect(),
    );
    let prompt_id = model.config().vocab_size;
    let rows: Vec<Vec<i64>> = serde_json::from_value(spec["train"]["ids"].clone())?;
    let ids: Vec<i64> = rows.iter().flat_map(|r| [vec![prompt_id; PROMPT], r.clone()].concat()).collect();
    let ids = Tensor::from_slice(&ids).view([BATCH as i64, TOKENS as i64]);
    let keep = Tensor::arange(TOKENS as i64, (Kind::Int64, Device::Cpu)).ge((TOKENS - LABELLED) as i64).unsqueeze(0);
    let labels = ids.where_self(&keep, &Tensor::from(-100i64));
    let (mut first, mut losses, mut cold) = (Instant::now(), Vec::new(), 0.0);
    for step in 0..steps {
        opt.zero_grad();
        let loss = model.loss(prompt.embed(model, &ids, prompt_id)?.input(), None, &labels)?;
        loss.backward();
        opt.step(LR);
        losses.push(loss.double_value(&[]));
        if step == 0 {
            cold = since_start();
            first = Instant::now();
        }
    }
    Ok(((steps - 1) as f64 / first.elapsed().as_secs_f64(), cold, json!({ "losses": losses })))
}

fn score(model: &Model, tok: &Tokenizer, workload: &str, n: usize) -> Result<Timed> {
    let (formats, items) = items(workload, n)?;
    let format = PromptFormat::compile(formats.zero_shot(), tok)?;
    let c = classifier(model, tok, &format, formats.truncation_field.as_deref());
    // Chunks of 8 items, as `eval --batch-size 8` scores them.
    let scores = |items: &[Item]| -> Result<Vec<Vec<f64>>> {
        let mut out = Vec::new();
        for chunk in items.chunks(8) {
            out.extend(c.candidate_scores(&chunk.iter().collect::<Vec<_>>(), None)?);
        }
        Ok(out)
    };
    let mut sums = scores(&items[..1])?;
    let cold = since_start();
    let start = Instant::now();
    sums.extend(scores(&items[1..])?);
    let rate = (items.len() - 1) as f64 / start.elapsed().as_secs_f64();
    let predictions: Vec<usize> = sums.iter().map(|s| ruprompts::task::best(s).unwrap_or(0)).collect();
    Ok((rate, cold, json!({ "predictions": predictions, "sums": sums })))
}

fn generation(
    model: &Model,
    tok: &Tokenizer,
    spec: &Value,
    work: &Path,
    batch: usize,
    num_beams: usize,
) -> Result<Timed> {
    let prompt = load_prompt(model, work, "tensor")?;
    let prompt_id = model.config().vocab_size;
    let injections = [prompt.injection(prompt_id)];
    let rows: Vec<Vec<i64>> = serde_json::from_value(spec["generate"]["inputs"].clone())?;
    let inputs: Vec<Vec<i64>> = rows.iter().map(|r| [vec![prompt_id; PROMPT], r.clone()].concat()).collect();
    let config = GenerationConfig { max_new_tokens: NEW_TOKENS, eos_token_id: None, num_beams, ..Default::default() };
    // Batch 1: the rows one by one; batch 8: all rows at once, three times.
    let chunks: Vec<&[Vec<i64>]> =
        if batch == 1 { inputs.chunks(1).take(4).collect() } else { vec![&inputs[..], &inputs[..], &inputs[..]] };
    let (mut generated, mut cold, mut start) = (Vec::new(), 0.0, Instant::now());
    for (i, chunk) in chunks.iter().enumerate() {
        for out in generate(model, tok, chunk, &injections, &config)? {
            generated.push(out[0].new_ids.clone());
        }
        if i == 0 {
            cold = since_start();
            start = Instant::now();
        }
    }
    let tokens = (chunks.len() - 1) * chunks[0].len() * NEW_TOKENS;
    let distinct: Vec<&Vec<i64>> = generated.iter().take(if batch == 1 { 4 } else { GEN_ROWS }).collect();
    Ok((tokens as f64 / start.elapsed().as_secs_f64(), cold, json!({ "generated": distinct })))
}

fn run(workload: &str, work: &Path, steps: usize) -> Result<Value> {
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(work.join("spec.json"))?)?;
    let (mut model, tok) = load(Path::new(spec["model"].as_str().context("spec.json: model")?))?;
    // `<workload>-int8` / `-int4`: the same work with the linear layers quantized (Python stays in f32).
    let quantized = [("-int8", Quantize::Int8), ("-int4", Quantize::Int4)]
        .into_iter()
        .find_map(|(suffix, q)| workload.strip_suffix(suffix).map(|base| (base, q)));
    let base = match quantized {
        Some((base, q)) => {
            model.quantize(q)?;
            base
        }
        None => workload,
    };
    let n = |task: &str| spec["score"][task].as_array().map_or(0, Vec::len);
    let ((rate, cold, check), unit) = match base {
        // PEFT's prompt tuning on the Python side is ours with a tensor provider.
        "train-tensor" | "train-peft" => (train(&model, &spec, work, "tensor", steps)?, "steps/s"),
        "train-lstm" => (train(&model, &spec, work, "lstm", steps)?, "steps/s"),
        "train-prefix" => (train(&model, &spec, work, "prefix", steps)?, "steps/s"),
        // lm-evaluation-harness on the Python side scores the same requests: ours is the evaluator either way.
        w if w.starts_with("score-") || w.starts_with("lmeval-") => {
            let name = w.split_once('-').map_or("", |(_, name)| name);
            (score(&model, &tok, name, n(name))?, "items/s")
        }
        "generate-1" => (generation(&model, &tok, &spec, work, 1, 1)?, "tokens/s"),
        "generate-8" => (generation(&model, &tok, &spec, work, 8, 1)?, "tokens/s"),
        "beam-1" => (generation(&model, &tok, &spec, work, 1, BEAMS)?, "tokens/s"),
        "beam-8" => (generation(&model, &tok, &spec, work, 8, BEAMS)?, "tokens/s"),
        other => bail!("unknown workload {other}"),
    };
    Ok(json!({
        "side": "ours", "workload": workload, "throughput": rate, "unit": unit, "cold_start_s": cold,
        "peak_rss_mib": peak_rss_mib(), "threads": tch::get_num_threads(), "check": check,
    }))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let work = PathBuf::from(flag(&args, "--work").context("--work DIR")?);
    if let Some(n) = flag(&args, "--threads") {
        tch::set_num_threads(n.parse().context("--threads")?);
    }
    match args.first().map(String::as_str) {
        Some("prepare") => {
            let model = PathBuf::from(flag(&args, "--model").context("--model PATH")?);
            let python_model = flag(&args, "--python-model").map_or_else(|| model.clone(), PathBuf::from);
            let n = flag(&args, "--items").map_or(Ok(16), |s| s.parse()).context("--items")?;
            prepare(&model, &python_model, &work, n)
        }
        Some("run") => {
            let workload = args.get(1).context("run WORKLOAD")?;
            let steps = flag(&args, "--steps").map_or(Ok(6), |s| s.parse()).context("--steps")?;
            println!("{}", run(workload, &work, steps)?);
            Ok(())
        }
        _ => bail!("usage: bench_vs_python prepare --model PATH --work DIR | run WORKLOAD --work DIR"),
    }
}
