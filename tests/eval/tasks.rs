//! The nine Russian SuperGLUE adapters on the labelled samples in the official layout (tests/fixtures/rsg, made
//! from tests/fixtures/rsg-samples by scripts/rsg_official.py) and on a hand-made LiDiRus file; the bundled
//! formats; submission files; the zero-shot run with its request cache.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use ruprompts::data::read_rows;
use ruprompts::eval::{evaluate, EvalRequest, Shard, REPORT_JSON};
use ruprompts::format::{PromptFormat, CANDIDATE_SLOT};
use ruprompts::model::{Backbone, ModelSource};
use ruprompts::progress::Silent;
use ruprompts::task::{RsgTask, ScoreMode, TaskFormats};
use ruprompts::tokenizer::Tokenizer;
use serde_json::{json, Value};

/// The training split of `task` in the official layout (tests/fixtures/rsg: the first 16 items of the samples).
fn official_file(task: RsgTask) -> PathBuf {
    fixture(&format!("rsg/{}/train.jsonl", task.name()))
}

/// A hand-made LiDiRus file in the official layout (the diagnostic set ships only as a test file).
fn lidirus_file(dir: &Path) -> PathBuf {
    let rows = [
        ("Кошка спит на диване.", "Кошка спит.", "entailment"),
        ("Кошка спит на диване.", "Собака спит на диване.", "not_entailment"),
        ("Все студенты сдали экзамен.", "Некоторые студенты сдали экзамен.", "entailment"),
        ("Иван не пришёл на работу.", "Иван пришёл на работу.", "not_entailment"),
    ];
    let text: String = rows
        .iter()
        .enumerate()
        .map(|(i, (s1, s2, l))| {
            format!(
                "{}\n",
                json!({"sentence1": s1, "sentence2": s2, "knowledge": "", "lexical-semantics": "", "logic": "",
                       "predicate-argument-structure": "", "idx": i, "label": l})
            )
        })
        .collect();
    let path = dir.join("lidirus.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

fn data_file(task: RsgTask, dir: &Path) -> PathBuf {
    if task == RsgTask::Lidirus {
        lidirus_file(dir)
    } else {
        official_file(task)
    }
}

#[test]
fn every_task_reads_its_official_layout_and_every_bundled_format_fills_its_items() {
    let dir = tempfile::tempdir().unwrap();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    for task in RsgTask::ALL {
        let formats = TaskFormats::bundled(task);
        assert_eq!(formats.task, Some(task));
        let records = read_rows(&data_file(task, dir.path())).unwrap();
        let items = task.items(&records, &formats.verbalizers).unwrap();
        assert!(!items.is_empty(), "{task:?}");
        for template in [formats.zero_shot(), &formats.tunable] {
            let format = PromptFormat::compile(template, &tok).unwrap();
            if let Some(field) = &formats.truncation_field {
                assert!(format.fields().contains(&field.as_str()), "{task:?}: {template}");
            }
            for t in &items {
                assert!(t.item.gold.is_some_and(|g| g < t.item.candidates.len()), "{}", t.item.origin);
                let mut row = t.item.row.clone();
                row.insert(CANDIDATE_SLOT.into(), "x".into());
                format.format(&row).unwrap_or_else(|e| panic!("{task:?} {template:?}: {e}"));
            }
        }
        // Gold predictions score 1 on every metric.
        let golds: Vec<usize> = items.iter().map(|t| t.item.gold.unwrap()).collect();
        for m in task.metrics(&items, &golds).unwrap() {
            assert!((m.value - 1.0).abs() < 1e-12, "{task:?} {}: {}", m.name, m.value);
        }
    }
}

#[test]
fn adapters_build_the_candidates_each_task_needs() {
    let verbalizers = |task| TaskFormats::bundled(task).verbalizers;
    // PARus: the two choices, lower-cased, after the premise's clause and the connective.
    let records = read_rows(&official_file(RsgTask::Parus)).unwrap();
    let parus = RsgTask::Parus.items(&records, &BTreeMap::new()).unwrap();
    let first = &parus[0].item;
    assert_eq!(first.row["premise_clause"], "У моей дочери случился приступ аллергии");
    assert_eq!(first.row["connective"], "поэтому");
    assert_eq!(first.candidates, [" я посоветовал ей дышать глубже.", " я отвёз ее в больницу."]);
    assert_eq!((first.gold, &parus[0].ids), (Some(1), &vec![285]));
    // DaNetQA: labels true/false in that order, verbalized.
    let records = read_rows(&official_file(RsgTask::Danetqa)).unwrap();
    let danetqa = RsgTask::Danetqa.items(&records, &verbalizers(RsgTask::Danetqa)).unwrap();
    assert_eq!(danetqa[0].item.candidates, [" да", " нет"]);
    assert_eq!(danetqa[0].item.gold, Some(1), "the first sample row is false");
    // MuSeRC: one item per option with passage/question/answer ids; EM groups options by question.
    let records = read_rows(&official_file(RsgTask::Muserc)).unwrap();
    let muserc = RsgTask::Muserc.items(&records, &verbalizers(RsgTask::Muserc)).unwrap();
    let options: usize = records
        .iter()
        .flat_map(|r| r.row["passage"]["questions"].as_array().unwrap())
        .map(|q| q["answers"].as_array().unwrap().len())
        .sum();
    assert_eq!(muserc.len(), options);
    assert_eq!(muserc[0].ids, [262, 0, 0]);
    assert_eq!(muserc[0].item.row["answer"], "На надувном батуте.");
    // RuCoS: the query split at @placeholder, distinct entities as candidates, the gold among them.
    let records = read_rows(&official_file(RsgTask::Rucos)).unwrap();
    let rucos = RsgTask::Rucos.items(&records, &BTreeMap::new()).unwrap();
    let r = &rucos[0];
    assert!(r.item.row["query_start"].as_str().unwrap().ends_with("в ответ на его запрос "));
    assert!(r.item.row["query_end"].as_str().unwrap().starts_with(" подтвердила"));
    assert!(r.gold_texts.contains(&r.item.candidates[r.item.gold.unwrap()]));
    let mut seen = r.item.candidates.clone();
    seen.dedup();
    assert_eq!(seen.len(), r.item.candidates.len());
    // RWSD: the spans come up as fields.
    let records = read_rows(&official_file(RsgTask::Rwsd)).unwrap();
    let rwsd = RsgTask::Rwsd.items(&records, &verbalizers(RsgTask::Rwsd)).unwrap();
    assert_eq!(
        (rwsd[0].item.row["span1_text"].as_str(), rwsd[0].item.row["span2_text"].as_str()),
        (Some("Билл"), Some("его"))
    );
}

#[test]
fn metrics_and_submissions_follow_the_official_rules() {
    let dir = tempfile::tempdir().unwrap();
    // LiDiRus: MCC with entailment as the positive class. Predictions e, e, n, n against e, n, e, n:
    // tp 1, fp 1, fn 1, tn 1 → MCC 0.
    let records = read_rows(&lidirus_file(dir.path())).unwrap();
    let lidirus = RsgTask::Lidirus.items(&records, &TaskFormats::bundled(RsgTask::Lidirus).verbalizers).unwrap();
    let m = RsgTask::Lidirus.metrics(&lidirus, &[0, 0, 1, 1]).unwrap();
    assert_eq!((m[0].name.as_str(), m[0].value), ("mcc", 0.0));
    assert_eq!(RsgTask::Lidirus.metrics(&lidirus, &[1, 0, 1, 0]).unwrap()[0].value, -1.0);
    // A TERRa format fills LiDiRus items (sentence1/sentence2 also go by premise/hypothesis).
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let terra = PromptFormat::compile(&TaskFormats::bundled(RsgTask::Terra).tunable, &tok).unwrap();
    let text = terra.format(&lidirus[0].item.row).unwrap().text;
    assert!(text.contains("Кошка спит на диване.") && text.contains("Вопрос: Кошка спит.? Ответ:"), "{text}");
    let lines = RsgTask::Lidirus.submission(&lidirus, &[0, 0, 1, 1]).unwrap();
    assert_eq!(lines[1], json!({"idx": 1, "label": "entailment"}));
    assert_eq!(lines[3], json!({"idx": 3, "label": "not_entailment"}));

    // MuSeRC: predictions nest back under passage and question; every option predicted "1".
    let records = read_rows(&official_file(RsgTask::Muserc)).unwrap();
    let muserc = RsgTask::Muserc.items(&records, &TaskFormats::bundled(RsgTask::Muserc).verbalizers).unwrap();
    let lines = RsgTask::Muserc.submission(&muserc, &vec![0; muserc.len()]).unwrap();
    assert_eq!(lines.len(), records.len());
    // Passages come sorted by idx, as the leaderboard asks, whatever order the file had (it starts with 262).
    let ids: Vec<u64> = lines.iter().map(|l| l["idx"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]) && records[0].row["idx"] == 262, "{ids:?}");
    let first = lines.iter().find(|l| l["idx"] == 262).unwrap();
    assert_eq!(first["passage"]["questions"][0]["answers"][0], json!({"idx": 0, "label": 1}));
    let options: usize = lines
        .iter()
        .flat_map(|l| l["passage"]["questions"].as_array().unwrap().iter())
        .map(|q| q["answers"].as_array().unwrap().len())
        .sum();
    assert_eq!(options, muserc.len());

    // A test split (no labels) scores no metrics, and the error names the row.
    let unlabelled = dir.path().join("test.jsonl");
    std::fs::write(&unlabelled, "{\"premise\": \"А\", \"hypothesis\": \"Б\", \"idx\": 0}\n").unwrap();
    let records = read_rows(&unlabelled).unwrap();
    let items = RsgTask::Terra.items(&records, &TaskFormats::bundled(RsgTask::Terra).verbalizers).unwrap();
    let err = RsgTask::Terra.metrics(&items, &[0]).unwrap_err().to_string();
    assert_eq!(err, format!("{}:1: no gold label, so no metrics", unlabelled.display()));

    // Bad rows: a missing field and an unknown label name the file and line.
    std::fs::write(&unlabelled, "{\"premise\": \"А\", \"idx\": 0, \"label\": \"entailment\"}\n{\"premise\": \"А\", \"hypothesis\": \"Б\", \"idx\": 1, \"label\": \"maybe\"}\n").unwrap();
    let records = read_rows(&unlabelled).unwrap();
    let err = RsgTask::Rcb.items(&records[1..], &TaskFormats::bundled(RsgTask::Rcb).verbalizers).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!("{}:2: label \"maybe\" is not one of RCB's labels", unlabelled.display())),
        "{err}"
    );
    let err = RsgTask::Rwsd.items(&records[..1], &BTreeMap::new()).unwrap_err();
    assert_eq!(err.to_string(), format!("{}:1: the row has no field 'target'", unlabelled.display()));
}

#[test]
fn zero_shot_evaluation_writes_a_report_and_resumes_from_its_cache() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let backbone = Backbone::load_local(&ModelSource::local(model_dir())).unwrap();
    let request = |task: RsgTask, out: &str| EvalRequest {
        task: task.into(),
        data: data_file(task, dir.path()),
        formats: TaskFormats::bundled(task),
        prompt: None,
        mode: ScoreMode::Sum,
        naive: false,
        batch_size: 4,
        limit: Some(6),
        out: dir.path().join(out),
        submission: Some(dir.path().join("submission")),
        log_samples: false,
        fewshot: Default::default(),
        shard: Shard::All,
        chat: false,
    };
    // Every task runs end to end on the tiny model (RuCoS and MuSeRC passages are cut to its 256 positions).
    for task in RsgTask::ALL {
        let report = evaluate(&backbone, &request(task, &format!("{task:?}")), &Silent).unwrap().unwrap();
        let t = &report.tasks[0];
        assert_eq!((t.task.as_str(), t.items), (task.name(), 6.min(t.items)));
        assert!(t.metrics.iter().all(|m| (0.0..=1.0).contains(&m.zero_shot) || m.metric == "mcc"));
        assert!(dir.path().join("submission").join(task.submission_file()).is_file());
    }
    // The cache: a rerun reads every item from it; a damaged cache line is scored again, same report.
    let terra = request(RsgTask::Terra, "terra");
    let first = evaluate(&backbone, &terra, &Silent).unwrap().unwrap();
    let cache = dir.path().join("terra/cache/TERRa-zero-shot.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(&cache).unwrap().lines().map(String::from).collect();
    assert_eq!(lines.len(), 6);
    std::fs::write(&cache, format!("{}\n{}\n{{\"fingerp", lines[0], lines[1])).unwrap();
    assert_eq!(evaluate(&backbone, &terra, &Silent).unwrap().unwrap(), first);
    assert_eq!(std::fs::read_to_string(&cache).unwrap().lines().count(), 6);
    // Naive scoring (its own cache folder) gives the same report.
    let naive = EvalRequest { naive: true, batch_size: 1, out: dir.path().join("terra-naive"), ..terra.clone() };
    assert_eq!(evaluate(&backbone, &naive, &Silent).unwrap().unwrap().tasks, first.tasks);
    // Three shards, each scoring every third item into its own folder, then the merge: the same report. A merge
    // before the last shard has run names what is missing.
    let sharded = |shard| EvalRequest { shard, out: dir.path().join("terra-sharded"), ..terra.clone() };
    for index in 0..3 {
        if index == 2 {
            let err = evaluate(&backbone, &sharded(Shard::Merge), &Silent).unwrap_err();
            assert!(format!("{err:#}").contains("--merge: 2 of 6 items of TERRa zero-shot have no result"), "{err:#}");
        }
        assert!(evaluate(&backbone, &sharded(Shard::Part { index, count: 3 }), &Silent).unwrap().is_none());
        let part = dir.path().join(format!("terra-sharded/shards/{index}-of-3/cache/TERRa-zero-shot.jsonl"));
        assert_eq!(std::fs::read_to_string(part).unwrap().lines().count(), 2);
    }
    let merged = evaluate(&backbone, &sharded(Shard::Merge), &Silent).unwrap().unwrap();
    assert_eq!(merged, first);
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("terra").join(REPORT_JSON)).unwrap()).unwrap();
    assert_eq!(json["tasks"][0]["metrics"][0]["metric"], "accuracy");
}
