//! Perplexity-based classification on TERRa rows: zero-shot and with a prompt, every scoring mode, the
//! shared-context scorer predicting exactly what the naive one does.

use crate::common;

use common::*;
use ruprompts::data::{read_rows, Origin};
use ruprompts::format::{PromptFormat, Row};
use ruprompts::prompt::Prompt;
use ruprompts::provider::ProviderConfig;
use ruprompts::rng::seeded;
use ruprompts::task::{metrics, Classifier, Item, ScoreMode};
use ruprompts::tokenizer::Tokenizer;

fn terra_items(n: usize) -> Vec<Item> {
    read_rows(&asset("rsg/TERRa/val.jsonl.gz"))
        .unwrap()
        .into_iter()
        .take(n)
        .map(|r| {
            let gold = Some(usize::from(r.row["label"] != "entailment"));
            let row: Row = ["premise", "hypothesis"].iter().map(|k| (k.to_string(), r.row[*k].clone())).collect();
            Item { row, candidates: vec![" да".into(), " нет".into()], gold, origin: r.origin, shots: vec![] }
        })
        .collect()
}

#[test]
fn shared_context_predicts_what_naive_does_zero_shot_and_tuned() {
    let model = tiny_model();
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let items = terra_items(16);
    let golds: Vec<usize> = items.iter().map(|i| i.gold.unwrap()).collect();
    let content_free: Row =
        [("premise", "N/A"), ("hypothesis", "N/A")].iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();

    let zero_shot = PromptFormat::compile("{premise} Вопрос: {hypothesis}? Ответ:", &tok).unwrap();
    let tuned_format = PromptFormat::compile("<P*3>{premise}<P*2>{hypothesis}? Ответ:{@candidate}<P*2>", &tok).unwrap();
    let prompt = seeded(4, || Prompt::new(tuned_format, ProviderConfig::default(), &model)).unwrap();
    let id = prompt.add_token(&mut tok).unwrap();
    let injection = [prompt.injection(id)];
    for (format, injections) in [(&zero_shot, &[][..]), (prompt.format(), &injection[..])] {
        for mode in [ScoreMode::Sum, ScoreMode::PerChar, ScoreMode::PerByte, ScoreMode::MeanLoss, ScoreMode::Calibrated]
        {
            let classifier = |shared| Classifier {
                model: &model,
                tokenizer: &tok,
                format,
                injections,
                mode,
                shared,
                truncation_field: None,
                max_tokens: None,
                shot_delimiter: "",
                chat: None,
            };
            let naive = classifier(false).predict(&items, Some(&content_free), 1).unwrap();
            let shared = classifier(true).predict(&items, Some(&content_free), 5).unwrap();
            assert_eq!(naive, shared, "{} {mode:?}", format.template());
            let accuracy = metrics::accuracy(&shared, &golds);
            assert!((0.0..=1.0).contains(&accuracy));
        }
    }

    let mut broken = items[0].clone();
    broken.row.remove("hypothesis");
    broken.origin = Origin { file: "val.jsonl".into(), line: 7 };
    let classifier = Classifier {
        model: &model,
        tokenizer: &tok,
        format: &zero_shot,
        injections: &[],
        mode: ScoreMode::Sum,
        shared: true,
        truncation_field: None,
        max_tokens: None,
        shot_delimiter: "",
        chat: None,
    };
    let err = format!("{:#}", classifier.predict(&[broken], None, 4).unwrap_err());
    assert!(err.starts_with("val.jsonl:7: row {\"premise\":"), "{err}");
    let calibrated = Classifier { mode: ScoreMode::Calibrated, ..classifier };
    assert!(calibrated.predict(&items[..1], None, 4).unwrap_err().to_string().contains("content-free"));
}
