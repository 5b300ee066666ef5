//! Agreement with lm-evaluation-harness 0.4.13 (tests/fixtures/lm-eval, made by scripts/lm_eval_reference.py):
//! the same TERRa rows, format and demonstrations scored on the demo model, 0-shot and 2-shot. Our contexts and
//! continuations are its (context, continuation) pairs, our log-likelihoods its own (≤ 1e-4), our `sum` and
//! `per_char` accuracies its `acc` and `acc_norm` exactly, and our bootstrap stderr within 10% of its stderr.

use crate::common;

use common::*;
use ruprompts::eval::{Report, REPORT_JSON};
use serde_json::Value;

#[test]
fn scores_and_accuracies_match_lm_evaluation_harness() {
    let dir = tempfile::tempdir().unwrap();
    // The lm-eval task's doc_to_text, its choices after the " " target delimiter, TERRa's labels.
    let formats = dir.path().join("terra-lm-eval.yaml");
    terra_formats(&formats, "\"{premise}\\nВопрос: {hypothesis}? Ответ:\"");
    let data = fixture("lm-eval/terra");
    let out = dir.path().join("eval");
    let (ok, _, stderr) = ruprompts(&[
        "eval",
        "--task",
        "terra",
        "--data",
        data.join("val.jsonl").to_str().unwrap(),
        "--model",
        fixture("demo-model").to_str().unwrap(),
        "--formats",
        formats.to_str().unwrap(),
        "--num-fewshot",
        "0,2",
        "--fewshot-split",
        data.join("train.jsonl").to_str().unwrap(),
        "--fewshot-sampler",
        "first_n",
        "--log-samples",
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(ok, "{stderr}");
    let report: Report = serde_json::from_str(&std::fs::read_to_string(out.join(REPORT_JSON)).unwrap()).unwrap();
    let samples: Vec<Value> = std::fs::read_to_string(out.join("samples/TERRa.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (shots, setting) in [(0, "zero-shot"), (2, "2-shot")] {
        let reference = load_json(&format!("lm-eval/reference-{shots}shot.json"));
        let expected = reference["samples"].as_array().unwrap();
        assert_eq!(samples.len(), expected.len());
        let mut worst = 0.0f64;
        for (ours, theirs) in samples.iter().zip(expected) {
            let s = &ours[setting];
            assert_eq!(s["dropped_shots"], 0, "nothing is cut: the rows were chosen to fit");
            let arguments = theirs["arguments"].as_array().unwrap();
            for (c, pair) in arguments.iter().enumerate() {
                assert_eq!(s["context"], pair[0], "item {}", ours["item"]);
                assert_eq!(ours["candidates"][c], pair[1]);
                let (a, b) = (s["loglikelihoods"][c].as_f64().unwrap(), theirs["loglikelihoods"][c].as_f64().unwrap());
                worst = worst.max((a - b).abs());
            }
            let right = |mode: &str| f64::from(u8::from(s["predictions"][mode] == ours["gold"]));
            assert_eq!(
                (right("sum"), right("per_char")),
                (theirs["acc"].as_f64().unwrap(), theirs["acc_norm"].as_f64().unwrap())
            );
        }
        assert!(worst <= 1e-4, "{setting}: log-likelihoods differ by up to {worst}");
        let scores = &report.tasks[0].settings.iter().find(|s| s.setting == setting).unwrap().scores;
        for (mode, metric) in [("sum", "acc"), ("per_char", "acc_norm")] {
            let ours = scores.iter().find(|m| m.mode == mode).unwrap();
            assert_eq!(ours.value, reference[metric].as_f64().unwrap(), "{setting} {metric}");
            let theirs = reference[format!("{metric}_stderr")].as_f64().unwrap();
            assert!(
                (ours.stderr - theirs).abs() <= 0.1 * theirs,
                "{setting} {metric} stderr {} vs {theirs}",
                ours.stderr
            );
        }
    }
}
