//! Training runs end to end on the fixture model: outputs, checkpoint pruning, and resuming (after a planned
//! stop and after SIGKILL) with exactly the losses of an uninterrupted run.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use ruprompts::progress::Silent;
use ruprompts::prompt::Prompt;
use ruprompts::train::TrainConfig;
use ruprompts::train::{checkpoint, train, TrainOptions};
use tch::{Device, Kind, Tensor};

fn config(data: &Path, output_dir: &Path, extra: &[&str]) -> TrainConfig {
    let overrides: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    TrainConfig::load(&terra_config(data, output_dir), &overrides).unwrap()
}

fn metrics(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap()
}

fn weights(dir: &Path) -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(dir.join("provider_state.safetensors")).unwrap()
}

#[test]
fn a_run_writes_prompt_checkpoints_metrics_and_plot() {
    init();
    let (data, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = config(data.path(), out.path(), &[]);
    let report = train(&config, &backbone(&config), &TrainOptions::default(), &Silent).unwrap();
    assert_eq!((report.steps, report.total_steps, report.losses.len()), (6, 6, 6));
    assert_eq!(report.trainable_parameters, 6 * 64);

    let records: Vec<serde_json::Value> =
        metrics(out.path()).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let evals: Vec<(u64, f64)> =
        records.iter().filter_map(|r| Some((r["step"].as_u64()?, r["eval_loss"].as_f64()?))).collect();
    assert_eq!(evals.iter().map(|e| e.0).collect::<Vec<_>>(), [0, 2, 4, 6]);
    assert!(evals[3].1 < evals[0].1, "tuning lowers the eval loss: {evals:?}");
    let logged: Vec<f64> = records.iter().filter_map(|r| r["loss"].as_f64()).collect();
    assert_eq!(logged, report.losses);
    let svg = std::fs::read_to_string(out.path().join("loss.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("eval"));

    // save_total_limit 1 keeps the newest checkpoint and the best one.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("trainer_state.json")).unwrap()).unwrap();
    let best = state["best_step"].as_u64().unwrap() as usize;
    let mut expected = vec![best, 6];
    expected.sort();
    expected.dedup();
    assert_eq!(checkpoint::list(out.path()).unwrap(), expected);
    let resolved = TrainConfig::load(&out.path().join("config.yaml"), &[]).unwrap();
    assert_eq!(resolved, config);

    // The final prompt is the last checkpoint's, and loads like any saved prompt.
    let model = tiny_model();
    let final_prompt = Prompt::from_pretrained(out.path(), Device::Cpu).unwrap();
    let last = Prompt::from_pretrained(&checkpoint::checkpoint_dir(out.path(), 6), Device::Cpu).unwrap();
    assert!(terra_logits(&final_prompt, &model).equal(&terra_logits(&last, &model)));

    // `ruprompts generate` finds the model through the trained prompt's prompt.json.
    let out_dir = out.path().to_str().unwrap();
    let generated = Command::new(env!("CARGO_BIN_EXE_ruprompts"))
        .args([
            "generate",
            "--prompt",
            out_dir,
            "--max-new-tokens",
            "4",
            "--field",
            "premise=Кошка спит.",
            "--field",
            "hypothesis=Кошка бодрствует",
        ])
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    let line: serde_json::Value = serde_json::from_slice(&generated.stdout).unwrap();
    assert_eq!(line["generated"].as_array().unwrap().len(), 1);

    let err = train(&config, &backbone(&config), &TrainOptions::default(), &Silent).unwrap_err().to_string();
    assert!(
        err.contains(
            "already holds a run (config.yaml, metrics.jsonl, loss.svg, trainer_state.json, prompt.json, \
             checkpoint-6); resume it with --resume, replace it with --overwrite"
        ),
        "{err}"
    );
    let fresh = tempfile::tempdir().unwrap();
    let fresh_config = TrainConfig { output_dir: fresh.path().into(), ..config };
    let err =
        train(&fresh_config, &backbone(&fresh_config), &TrainOptions { resume: true, ..Default::default() }, &Silent)
            .unwrap_err()
            .to_string();
    assert!(err.starts_with("nothing to resume"), "{err}");
}

#[test]
fn a_stopped_run_resumes_with_the_uninterrupted_losses() {
    init();
    let (data, whole, split) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let whole_config = config(data.path(), whole.path(), &[]);
    let uninterrupted = train(&whole_config, &backbone(&whole_config), &TrainOptions::default(), &Silent).unwrap();
    let config = config(data.path(), split.path(), &[]);
    let first =
        train(&config, &backbone(&config), &TrainOptions { max_updates_now: Some(3), ..Default::default() }, &Silent)
            .unwrap();
    assert_eq!(first.steps, 3);
    let second =
        train(&config, &backbone(&config), &TrainOptions { resume: true, ..Default::default() }, &Silent).unwrap();
    assert_eq!([first.losses, second.losses].concat(), uninterrupted.losses);
    assert_eq!(metrics(split.path()), metrics(whole.path()));
    for ((n, a), (_, b)) in weights(split.path()).iter().zip(weights(whole.path()).iter()) {
        assert!(a.equal(b), "{n}");
    }
}

#[test]
fn a_run_killed_anywhere_keeps_whole_checkpoints_and_resumes_exactly() {
    init();
    let (data, whole, killed) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let settings = [
        "training.max_steps=30",
        "training.save_every=1",
        "training.save_total_limit=null",
        "training.eval_every=null",
    ];
    let whole_config = config(data.path(), whole.path(), &settings);
    train(&whole_config, &backbone(&whole_config), &TrainOptions::default(), &Silent).unwrap();
    config(data.path(), killed.path(), &settings);
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ruprompts")).args(args).env("OMP_NUM_THREADS", "1").spawn().unwrap()
    };
    let config_path = data.path().join("config.yaml");
    let mut child = run(&[&["train", config_path.to_str().unwrap()][..], &settings].concat());
    // SIGKILL once a few checkpoints exist: saving happens every update, so the kill often lands inside one.
    let deadline = Instant::now() + Duration::from_secs(120);
    while checkpoint::list(killed.path()).map_or(true, |l| l.len() < 4) && Instant::now() < deadline {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!killed.path().join("prompt.json").exists(), "the run was killed before it finished");
    let steps = checkpoint::list(killed.path()).unwrap();
    assert!(!steps.is_empty());
    for step in &steps {
        let dir = checkpoint::checkpoint_dir(killed.path(), *step);
        Prompt::from_pretrained(&dir, Device::Cpu).unwrap_or_else(|e| panic!("{}: {e:#}", dir.display()));
        assert!(dir.join("optimizer.safetensors").is_file() && dir.join("trainer_state.json").is_file());
    }
    let status = run(&["train", "--resume", killed.path().to_str().unwrap()]).wait().unwrap();
    assert!(status.success());
    assert_eq!(metrics(killed.path()), metrics(whole.path()));
    for ((n, a), (_, b)) in weights(killed.path()).iter().zip(weights(whole.path()).iter()) {
        assert!(a.to_kind(Kind::Float).equal(b), "{n}");
    }
}
