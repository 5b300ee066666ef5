//! `ruprompts rsg` on the tiny model over the samples in the official layout (tests/fixtures/rsg): the table with
//! all nine tasks, a rerun that redoes nothing, a run killed mid-task that finishes with the same table, and the
//! submission archive.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ruprompts::rsg::Benchmark;

/// Few updates, an evaluation and a checkpoint every 2: quick, and with something to resume from.
const SETTINGS: [&str; 4] =
    ["training.max_steps=6", "training.eval_every=2", "training.save_every=2", "scheduler.warmup_steps=1"];

fn args(out: &Path) -> Vec<String> {
    let mut args: Vec<String> =
        ["rsg", "--model", model_dir().to_str().unwrap(), "--data", fixture("rsg").to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(["--out".to_string(), out.display().to_string(), "--device".into(), "cpu".into()]);
    args.extend(SETTINGS.iter().map(|s| s.to_string()));
    args
}

fn rsg(out: &Path, extra: &[&str]) -> (String, String) {
    let mut all = args(out);
    all.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let (ok, stdout, stderr) = ruprompts(&refs);
    assert!(ok, "{stderr}");
    (stdout, stderr)
}

fn bench(out: &Path) -> Benchmark {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

/// The table without the timings (which differ between runs).
fn results(b: &Benchmark) -> String {
    let mut b = b.clone();
    for t in &mut b.tasks {
        t.seconds = 0.0;
    }
    serde_json::to_string(&b).unwrap()
}

#[test]
fn the_benchmark_table_has_all_nine_tasks_and_reruns_redo_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rsg");
    let (printed, _) = rsg(&out, &[]);
    let first = bench(&out);
    assert_eq!(first.tasks.len(), 9);
    for t in &first.tasks {
        assert!(t.error.is_none(), "{:?}: {:?}", t.task, t.error);
        assert!(!t.zero_shot.is_empty() && t.zero_shot.len() == t.tuned.len(), "{:?}", t.task);
        assert_eq!(t.items, 16, "{:?}", t.task);
        assert!(t.trainable_parameters.unwrap() > 0);
    }
    // The printed table is the paper's layout, totals as the leaderboard computes them from the cells.
    assert!(
        printed.contains("| approach | Total score | LiDiRus | RCB (F1/Acc) | PARus | MuSeRC (F1a/EM) | TERRa |"),
        "{printed}"
    );
    let total = ruprompts::rsg::total_score(&first.tasks.iter().map(|t| t.tuned.as_slice()).collect::<Vec<_>>());
    assert_eq!(first.total_tuned, total);
    assert!(printed.contains(&format!("| prompt tuning | {:.1} |", total.unwrap() * 100.0)), "{printed}");
    // Every cell carries its bootstrap standard error, as the task's own report gives it.
    let terra = first.tasks.iter().find(|t| t.task == ruprompts::task::RsgTask::Terra).unwrap();
    let (v, e) = (terra.tuned[0].value, terra.tuned[0].stderr.unwrap());
    assert!(printed.contains(&format!("{:.1} ± {:.1}", v * 100.0, e * 100.0)), "{printed}");
    for file in ["report.md", "report.svg", "configs/terra.yaml", "TERRa/prompt/prompt.json", "MuSeRC/eval/report.json"]
    {
        assert!(out.join(file).is_file(), "{file}");
    }

    // A second run trains and scores nothing: every task's outcome is kept as it was.
    let stamp = |t: &str| std::fs::metadata(out.join(t).join("outcome.json")).unwrap().modified().unwrap();
    let before: Vec<_> = ["TERRa", "RuCoS", "LiDiRus"].iter().map(|t| stamp(t)).collect();
    rsg(&out, &[]);
    assert_eq!(results(&bench(&out)), results(&first));
    assert_eq!(["TERRa", "RuCoS", "LiDiRus"].iter().map(|t| stamp(t)).collect::<Vec<_>>(), before);

    // Another setting would replace finished results: refused before any task runs, naming --overwrite, with
    // everything left as it was.
    let report = std::fs::read(out.join("report.json")).unwrap();
    let mut changed = args(&out);
    changed.extend(["--tasks", "parus,terra,lidirus", "training.seed=5"].map(String::from));
    let refs: Vec<&str> = changed.iter().map(String::as_str).collect();
    let (ok, _, stderr) = ruprompts(&refs);
    assert!(!ok);
    assert!(stderr.contains("PARus, TERRa in") && stderr.contains("pass --overwrite to replace them"), "{stderr}");
    assert_eq!(std::fs::read(out.join("report.json")).unwrap(), report);
    assert_eq!(stamp("TERRa"), before[0]);
    // A stray argument (a path where KEY=VALUE belongs) is one error before any task, not nine failed tasks.
    let mut stray = args(&out);
    stray.push(out.display().to_string());
    let refs: Vec<&str> = stray.iter().map(String::as_str).collect();
    let (ok, printed, stderr) = ruprompts(&refs);
    assert!(!ok && printed.is_empty(), "{printed}");
    assert!(stderr.contains("is not key=value"), "{stderr}");
    assert_eq!(std::fs::read(out.join("report.json")).unwrap(), report);
    // A run in which every task fails (no data here; --overwrite, as the data folder is part of the config) keeps
    // the report that has results.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("TERRa")).unwrap();
    let mut no_data = args(&out);
    no_data[4] = empty.display().to_string();
    no_data.extend(["--tasks", "terra", "--overwrite"].map(String::from));
    let refs: Vec<&str> = no_data.iter().map(String::as_str).collect();
    let (ok, _, stderr) = ruprompts(&refs);
    assert!(!ok && stderr.contains("report in") && stderr.contains("is kept as it was"), "{stderr}");
    assert_eq!(std::fs::read(out.join("report.json")).unwrap(), report);

    // With --overwrite the other setting redoes those tasks alone; a task without data fails alone.
    let (printed, _) = rsg(&out, &["--tasks", "parus,terra,lidirus", "training.seed=5", "--overwrite"]);
    let third = bench(&out);
    assert_eq!(third.tasks.len(), 3);
    assert_ne!(stamp("TERRa"), before[0]);
    assert_eq!(stamp("RuCoS"), before[1]);
    assert!(printed.contains("3 of 9 tasks") || printed.contains("3 of 9"), "{printed}");
    let mut all = args(&dir.path().join("other"));
    all[4] = empty.display().to_string();
    all.extend(["--tasks".to_string(), "terra,lidirus".to_string()]);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let (ok, printed, stderr) = ruprompts(&refs);
    // The table is printed, and the exit status says that tasks failed.
    assert!(!ok && stderr.contains("2 of 2 tasks failed (LiDiRus, TERRa): see the table"), "{stderr}");
    assert!(printed.contains("failed:") && printed.contains("train.jsonl"), "{printed}");
    assert!(printed.contains("LiDiRus | 0 | — |") && printed.contains("run TERRa too"), "{printed}");
}

#[test]
fn a_killed_benchmark_finishes_with_the_same_table() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    rsg(&whole, &["--tasks", "rcb,muserc"]);
    let killed = dir.path().join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ruprompts"))
        .args(args(&killed))
        .args(["--tasks", "rcb,muserc"])
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once MuSeRC (the second task) has its first checkpoint: mid-training.
    let started = Instant::now();
    while !killed.join("MuSeRC/prompt/checkpoint-2").exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(started.elapsed() < Duration::from_secs(120), "no checkpoint after two minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!killed.join("MuSeRC/outcome.json").exists());
    rsg(&killed, &["--tasks", "rcb,muserc"]);
    let (a, b) = (bench(&whole), bench(&killed));
    assert_eq!(
        results(&a).replace(&whole.display().to_string(), ""),
        results(&b).replace(&killed.display().to_string(), "")
    );
}

#[test]
fn submission_writes_every_task_file_into_one_archive() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rsg");
    rsg(&out, &["--tasks", "terra,lidirus,muserc", "--submission"]);
    let zip = std::fs::File::open(out.join("submission.zip")).unwrap();
    let mut archive = zip::ZipArchive::new(zip).unwrap();
    let mut names: Vec<String> = archive.file_names().map(String::from).collect();
    names.sort();
    assert_eq!(names, ["LiDiRus.jsonl", "MuSeRC.jsonl", "TERRa.jsonl"]);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut archive.by_name("TERRa.jsonl").unwrap(), &mut text).unwrap();
    // One line per test record (8), each an idx and a TERRa label.
    assert_eq!(text.lines().count(), 8);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            v["idx"].is_u64() && ["entailment", "not_entailment"].contains(&v["label"].as_str().unwrap()),
            "{line}"
        );
    }
}

#[test]
fn every_task_trains_through_ruprompts_train_from_its_shipped_config() {
    let dir = tempfile::tempdir().unwrap();
    for task in ["DaNetQA", "TERRa", "RCB", "PARus", "MuSeRC", "RuCoS", "RUSSE", "RWSD"] {
        let config = repo().join(format!("src/rsg/configs/{}.yaml", task.to_lowercase()));
        let out = dir.path().join(task);
        let (ok, stdout, stderr) = ruprompts(&[
            "train",
            config.to_str().unwrap(),
            &format!("model.path={}", model_dir().display()),
            "model.device=cpu",
            &format!("dataset.dir={}", fixture("rsg").join(task).display()),
            &format!("output_dir={}", out.display()),
            "training.max_steps=3",
            "training.eval_every=3",
            "scheduler.warmup_steps=1",
        ]);
        assert!(ok, "{task}: {stderr}");
        assert!(stdout.contains("3 updates of 3") && stdout.contains("best validation"), "{task}: {stdout}");
        assert!(out.join("prompt.json").is_file(), "{task}");
        // Validation figures of the task's own metrics are logged with the loss.
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let main = match task {
            "RCB" => "eval_macro_f1",
            "MuSeRC" => "eval_f1a",
            "RuCoS" => "eval_f1",
            _ => "eval_accuracy",
        };
        assert!(metrics.lines().last().unwrap().contains(main), "{task}: {metrics}");
    }
}
