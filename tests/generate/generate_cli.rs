//! `ruprompts generate` from the command line: beams with scores in the jsonl, `--stream` printing the same text
//! as the jsonl line, and Ctrl-C ending a stream cleanly.

use crate::common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn python_prompt() -> String {
    fixture("reference/ruprompts/prompt_tensor").display().to_string()
}

fn base_args(extra: &[&str]) -> Vec<String> {
    let model = model_dir().display().to_string();
    let mut args: Vec<String> =
        ["generate", "--prompt", &python_prompt(), "--model", &model, "--device", "cpu", "--max-new-tokens", "12"]
            .map(String::from)
            .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn run(extra: &[&str]) -> (bool, String, String) {
    let args = base_args(extra);
    ruprompts(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn beams_come_back_best_first_with_their_scores() {
    let (ok, out, stderr) = run(&["--num-beams", "4", "--num-return-sequences", "3", "Кот спит."]);
    assert!(ok, "{stderr}");
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let scores: Vec<f64> = line["scores"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect();
    assert_eq!(line["generated"].as_array().unwrap().len(), 3);
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // --no-cache re-reads the whole sequence every step: the same beams.
    let (ok, again, stderr) = run(&["--num-beams", "4", "--num-return-sequences", "3", "--no-cache", "Кот спит."]);
    assert!(ok, "{stderr}");
    let again: serde_json::Value = serde_json::from_str(again.trim()).unwrap();
    assert_eq!(again["generated"], line["generated"]);
}

#[test]
fn a_stream_prints_what_the_jsonl_line_says() {
    let (ok, jsonl, stderr) = run(&["--stop", "никогда", "Кот спит."]);
    assert!(ok, "{stderr}");
    let line: serde_json::Value = serde_json::from_str(jsonl.trim()).unwrap();
    let (ok, streamed, stderr) = run(&["--stream", "--stop", "никогда", "Кот спит."]);
    assert!(ok, "{stderr}");
    assert_eq!(streamed, format!("{}\n", line["generated"][0].as_str().unwrap()));
    // With two inputs, whole jsonl lines as without --stream.
    let (ok, lines, stderr) = run(&["--stream", "Кот спит.", "Кот спит."]);
    assert!(ok, "{stderr}");
    assert_eq!(lines, format!("{}{}", jsonl, jsonl));
}

/// Whether process `pid` has a handler for SIGINT (Linux: bit 1 of SigCgt in /proc/PID/status).
fn catches_sigint(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & 0b10 != 0)
}

#[test]
#[cfg(target_os = "linux")]
fn ctrl_c_ends_a_stream_cleanly() {
    let args = base_args(&["--stream", "--input", "-"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ruprompts"))
        .args(&args)
        .env("OMP_NUM_THREADS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While it waits for its input, with the handler in place, Ctrl-C; then the input arrives.
    let start = std::time::Instant::now();
    while !catches_sigint(child.id()) {
        assert!(start.elapsed().as_secs() < 60, "the handler never came");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let killed = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all("Кот спит.\n".as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "\n");
    assert!(!stderr.contains("error") && !stderr.contains("panicked"), "{stderr}");
}
