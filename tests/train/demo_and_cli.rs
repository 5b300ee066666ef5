//! The self-built demo model and the `ruprompts` binary.

use crate::common;

use common::*;
use ruprompts::demo::{build_tiny_model, TinyModelSpec};
use ruprompts::model::{Input, Model};
use ruprompts::progress::Silent;
use ruprompts::tokenizer::{SpecialTokens, Tokenizer};
use tch::{Device, Kind, Tensor};

#[test]
fn demo_model_is_built_atomically_and_loads_like_a_checkpoint() {
    init();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("tiny");
    let spec = TinyModelSpec { steps: 30, batch_size: 4, seq_len: 32, ..TinyModelSpec::default() };
    let report = build_tiny_model(&dir, &spec, Device::Cpu, &Silent).unwrap();
    assert!(report.final_loss < report.initial_loss - 0.3, "{report:?}");
    // Only the finished directory remains: no temp folder beside it.
    let entries: Vec<_> = std::fs::read_dir(parent.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("tiny")]);

    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.len(), 2000);
    assert_eq!(tok.special(), &SpecialTokens { bos: Some(1), eos: Some(2), pad: Some(0), unk: Some(3) });
    let text = "Является ли Москва столицей России?";
    let ids = tok.encode_ids(text).unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), text);
    assert!(ids.len() < text.chars().count() / 2, "a trained BPE merges Russian: {} tokens", ids.len());

    let model = Model::from_dir(&dir, Kind::Float, Device::Cpu).unwrap();
    assert_eq!(model.num_parameters(), 244_480);
    let input = Tensor::from_slice(&ids).unsqueeze(0);
    let loss = tch::no_grad(|| model.lm_loss(&model.forward(Input::Ids(&input), None, None).unwrap(), &input));
    assert!(loss.double_value(&[]) < report.initial_loss, "the saved weights are the pretrained ones");
}

#[test]
fn info_prints_the_summary_of_a_checkpoint() {
    let dir = model_dir();
    let (ok, stdout, stderr) = ruprompts(&["info", dir.to_str().unwrap(), "--device", "cpu", "--dtype", "bf16"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("GPT-2: 2 layers, d_model 64, 4 heads, MLP 256, gelu_new"), "{stdout}");
    assert!(stdout.contains("parameters   244,480 (frozen), BFloat16 on Cpu"), "{stdout}");
    assert!(stdout.contains("tokenizer 2000 tokens (bos 1, eos 2, pad 0, unk 3)"), "{stdout}");
}

#[test]
fn params_reports_provider_sizes_of_the_cpt_slides() {
    // ruGPT-3 Large (d=1536), 40 prompt tokens: ~60K as a tensor, ~3.2M as a BiLSTM of width 256.
    let args = [
        "params",
        "--prompt-length",
        "40",
        "--embedding-dim",
        "1536",
        "--lstm-hidden-dim",
        "256",
        "--lstm-input-dim",
        "256",
    ];
    let (ok, stdout, stderr) = ruprompts(&args);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("tensor          61,440  ([40, 1536])"), "{stdout}");
    assert!(stdout.contains("lstm         3,165,952  (hidden 256, input 256, 2 layers)"), "{stdout}");
    assert!(stdout.contains("give --num-layers (or --model) to count the prefix provider too"), "{stdout}");
    // A deep prompt of 40 virtual tokens on its 24 layers: keys and values 40 × 24 × 2 × 1536.
    let deep = [&args[..], &["--num-layers", "24", "--prefix-hidden-dim", "512"]].concat();
    let (ok, stdout, stderr) = ruprompts(&deep);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("prefix       2,949,120  (keys and values [40, 24 layers × 2 × 1536])"), "{stdout}");
    assert!(stdout.contains("prefix      38,670,848  (projection: [40, 1536] through hidden 512)"), "{stdout}");

    let dir = model_dir();
    let format = "<P*3>{text}<P>Кратко:</P>";
    let (ok, stdout, stderr) = ruprompts(&["params", "--model", dir.to_str().unwrap(), "--format", format]);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("a prompt of 7 tokens on a backbone with embedding size 64 and 2 layers:"), "{stdout}");
    assert!(stdout.contains("only the tensor provider can start from"), "{stdout}");

    let (ok, _, stderr) = ruprompts(&["params", "--prompt-length", "3"]);
    assert!(!ok);
    assert!(stderr.contains("give --embedding-dim, or --model to read it from config.json"), "{stderr}");

    // A Llama-family folder (grouped-query attention: keys of 2 heads × 8 = 16, not the embedding size 64) is read
    // as `info` reads it; the counts are those of the prompts the model builds.
    let mistral = fixture("llama-family/tiny-mistral");
    let (ok, stdout, stderr) = ruprompts(&["params", "--model", mistral.to_str().unwrap(), "--prompt-length", "4"]);
    assert!(ok, "{stderr}");
    let backbone = ruprompts::model::Backbone::load_local(&ruprompts::model::ModelSource::local(&mistral)).unwrap();
    for projection in [None, Some(ruprompts::provider::Projection { hidden_dim: None })] {
        let format = ruprompts::format::PromptFormat::compile("{text}", &backbone.tokenizer).unwrap();
        let provider =
            ruprompts::provider::ProviderConfig::Prefix { num_virtual_tokens: 4, projection, init: Default::default() };
        let built = ruprompts::prompt::Prompt::new(format, provider, &backbone.model).unwrap().num_parameters();
        let digits: String = built.to_string();
        let grouped = digits
            .chars()
            .rev()
            .collect::<Vec<_>>()
            .chunks(3)
            .map(|c| c.iter().rev().collect::<String>())
            .rev()
            .collect::<Vec<_>>()
            .join(",");
        assert!(stdout.contains(&format!("prefix {grouped:>15}")), "{built}: {stdout}");
    }
    assert!(stdout.contains("keys and values [4, 2 layers × 2 × 16]"), "{stdout}");
    // Sizes past 64 bits are an error, not a negative count.
    let (ok, stdout, stderr) = ruprompts(&["params", "--prompt-length", "9", "--embedding-dim", "9000000000"]);
    assert!(!ok && !stdout.contains('-'), "{stdout}");
    assert!(stderr.contains("the lstm provider's count does not fit in 64 bits"), "{stderr}");
}

#[test]
fn train_reports_config_errors_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, "model: {path: x}\ntraining:\n  batch_size: 4\n  lerning_rate: 3\n").unwrap();
    let (ok, _, stderr) = ruprompts(&["train", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{}:4: `training.lerning_rate`: unknown field `lerning_rate`", config.display())),
        "{stderr}"
    );
    let (ok, _, stderr) = ruprompts(&["train"]);
    assert!(!ok && stderr.contains("<CONFIG>"), "{stderr}");
    let (ok, stdout, _) = ruprompts(&["train", "--help"]);
    assert!(ok && stdout.contains("--resume <OUTPUT_DIR>") && stdout.contains("checkpoint-<step>"), "{stdout}");
}

#[test]
fn generate_writes_jsonl_for_texts_and_files() {
    let prompt = fixture("reference/ruprompts/prompt_tensor");
    let model = model_dir();
    let base =
        ["generate", "--prompt", prompt.to_str().unwrap(), "--model", model.to_str().unwrap(), "--device", "cpu"];
    let greedy = ["--max-new-tokens", "12", "--eos-token-id", "0"];
    let text = "Сегодня в Москве весь день шёл сильный дождь.";
    let (ok, stdout, stderr) = ruprompts(&[&base[..], &greedy, &[text, "Кот."]].concat());
    assert!(ok, "{stderr}");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["input"]["text"], text);
    assert_eq!(lines[0]["generated"], serde_json::json!(["::::::::::::"]));

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, format!("{{\"text\": \"{text}\"}}\n")).unwrap();
    let output = dir.path().join("out.jsonl");
    let file_args = ["--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()];
    let (ok, _, stderr) = ruprompts(&[&base[..], &greedy, &file_args].concat());
    assert!(ok, "{stderr}");
    let written: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&output).unwrap().trim()).unwrap();
    assert_eq!(written["generated"], lines[0]["generated"]);

    let (ok, _, stderr) = ruprompts(&base);
    assert!(!ok && stderr.contains("nothing to generate from: give texts"), "{stderr}");
    let (ok, _, stderr) = ruprompts(&[&base[..], &["--field", "question=Где?"]].concat());
    assert!(!ok && stderr.contains("input 1: unknown field 'question'"), "{stderr}");
    let keyed = format!("qa={}", prompt.display());
    let (ok, _, stderr) =
        ruprompts(&["generate", "--prompt", &keyed, "--model", model.to_str().unwrap(), "--key", "sum", "Кот."]);
    assert!(!ok && stderr.contains("unknown prompt key \"sum\" (known: qa)"), "{stderr}");
}

#[test]
fn cli_errors_name_the_problem() {
    let (ok, _, stderr) = ruprompts(&["info", "/nonexistent/model", "--device", "cpu"]);
    assert!(!ok);
    assert!(
        stderr.contains("error: no folder /nonexistent/model (model.path, --model), and it is no Hub id (owner/name)"),
        "{stderr}"
    );
    if !tch::Cuda::is_available() {
        let (ok, _, stderr) = ruprompts(&["info", model_dir().to_str().unwrap(), "--device", "cuda"]);
        assert!(!ok);
        assert!(stderr.contains("device 'cuda' was requested but no CUDA device is usable"), "{stderr}");
        // `train` has no --device: the way out names the config key too.
        assert!(stderr.contains("`model.device=cpu` for a training config"), "{stderr}");
    }
    let (ok, _, stderr) = ruprompts(&["info", "x", "--dtype", "f64"]);
    assert!(!ok && stderr.contains("invalid value 'f64'"), "{stderr}");
    // An end-of-text id the model never decodes would never end a row.
    let model = model_dir();
    let generate = ["generate", "--model", model.to_str().unwrap(), "--device", "cpu", "--eos-token-id"];
    let (ok, _, stderr) = ruprompts(&[&generate[..], &["2000", "Кот"]].concat());
    assert!(!ok && stderr.contains("eos_token_id (--eos-token-id) 2000 is not one of the model's 2000"), "{stderr}");
}

/// Output piped into a reader that has gone (`| head`) ends the program quietly, as SIGPIPE ends other tools,
/// not with a panic on the closed stdout.
#[test]
fn a_closed_stdout_ends_the_program_without_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_ruprompts"))
        .args(["params", "--prompt-length", "20", "--embedding-dim", "768", "--num-layers", "24"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(13), "{:?}: {stderr}", out.status);
}
