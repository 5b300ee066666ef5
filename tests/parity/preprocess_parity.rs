//! Preprocessing and batching against Python ruprompts 0.1.4 (`reference/ruprompts/preprocessing.json`).

use crate::common;

use common::*;
use ruprompts::data::{collate, Example, Origin, PreprocessConfig, Preprocessor, Record, TooLongPolicy};
use ruprompts::format::PromptFormat;
use ruprompts::tokenizer::Tokenizer;

fn record(row: &serde_json::Value, line: usize) -> Record {
    Record { row: row.as_object().unwrap().clone(), origin: Origin { file: "items.jsonl".into(), line } }
}

fn setup(spec: &serde_json::Value) -> (PromptFormat, Tokenizer) {
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let format = PromptFormat::compile(spec["template"].as_str().unwrap(), &tok).unwrap();
    assert_eq!(tok.add_prompt_tokens(&[format.prompt_token()]).unwrap(), [2000]);
    (format, tok)
}

fn text2text(truncation_field: Option<&str>, max_tokens: usize) -> PreprocessConfig {
    PreprocessConfig::Text2text {
        target_field: "summary".into(),
        truncation_field: truncation_field.map(Into::into),
        max_tokens,
        too_long: TooLongPolicy::Error,
    }
}

#[test]
fn text2text_matches_ruprompts_with_and_without_truncation() {
    let spec = load_json("reference/ruprompts/preprocessing.json");
    let (format, tok) = setup(&spec);
    let truncating = text2text(Some("text"), 48);
    let untruncated = text2text(None, 1 << 20);
    let (cut, whole) = (
        Preprocessor::new(&format, &tok, &truncating).unwrap(),
        Preprocessor::new(&format, &tok, &untruncated).unwrap(),
    );
    let items = spec["items"].as_array().unwrap();
    let mut examples = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let rec = record(&item["item"], i + 1);
        let ex = cut.encode(&rec).unwrap();
        assert_eq!(ex.input_ids, i64_vec(&item["output"]["input_ids"]), "item {i} ids");
        assert_eq!(ex.labels, i64_vec(&item["output"]["labels"]), "item {i} labels");
        let full = whole.encode(&rec).unwrap();
        assert_eq!(full.input_ids, i64_vec(&item["output_without_truncation"]["input_ids"]), "item {i}");
        assert_eq!(full.labels, i64_vec(&item["output_without_truncation"]["labels"]), "item {i}");
        examples.push(ex);
    }
    assert!(examples[2].input_ids.len() == 48 && items[2]["truncated_tokens"] == 56);

    let collated = &spec["collated_first_two"];
    let batch = collate(&[&examples[0], &examples[1]], 0);
    assert_eq!(batch.input_ids, ids_tensor(&i64_rows(&collated["input_ids"])));
    assert_eq!(batch.attention_mask, ids_tensor(&i64_rows(&collated["attention_mask"])));
    assert_eq!(batch.labels, ids_tensor(&i64_rows(&collated["labels"])));
}

#[test]
fn rows_that_cannot_be_encoded_are_named() {
    let spec = load_json("reference/ruprompts/preprocessing.json");
    let (format, tok) = setup(&spec);
    let item = &spec["items"][2]["item"];

    // No truncation field and too long; too long even with the field emptied; a missing target.
    let config = text2text(None, 48);
    let err = Preprocessor::new(&format, &tok, &config).unwrap().encode(&record(item, 3)).unwrap_err().to_string();
    assert_eq!(err, "items.jsonl:3: 104 tokens, more than max_tokens 48, and no truncation_field is set");
    let config = text2text(Some("text"), 15);
    let err = Preprocessor::new(&format, &tok, &config).unwrap().encode(&record(item, 3)).unwrap_err().to_string();
    assert_eq!(err, "items.jsonl:3: 104 tokens; even without field 'text' (85 tokens) it exceeds max_tokens 15");
    let mut row = item.clone();
    row.as_object_mut().unwrap().remove("summary");
    let config = text2text(Some("text"), 48);
    let err = Preprocessor::new(&format, &tok, &config).unwrap().encode(&record(&row, 7)).unwrap_err().to_string();
    assert_eq!(err, "items.jsonl:7: the row has no field 'summary'");
    let mut row = item.clone();
    row.as_object_mut().unwrap().remove("text");
    let err = format!("{:#}", Preprocessor::new(&format, &tok, &config).unwrap().encode(&record(&row, 7)).unwrap_err());
    assert!(
        err.starts_with("items.jsonl:7: row {\"summary\":\"Венера похожа на Землю.\"} has no field 'text'"),
        "{err}"
    );

    // With `too_long: skip` such rows are left out and named instead.
    let mut skipping = text2text(Some("text"), 15);
    if let PreprocessConfig::Text2text { too_long, .. } = &mut skipping {
        *too_long = TooLongPolicy::Skip;
    }
    let records: Vec<Record> =
        spec["items"].as_array().unwrap().iter().enumerate().map(|(i, it)| record(&it["item"], i + 1)).collect();
    let (kept, skipped) = Preprocessor::new(&format, &tok, &skipping).unwrap().encode_all(&records).unwrap();
    assert_eq!(skipped.iter().map(|o| o.line).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(kept.len(), 1);
    let (kept, skipped) =
        Preprocessor::new(&format, &tok, &text2text(Some("text"), 48)).unwrap().encode_all(&records[..2]).unwrap();
    assert_eq!((kept.len(), skipped.len()), (2, 0));

    let config = text2text(Some("summary"), 48);
    let err = Preprocessor::new(&format, &tok, &config).unwrap_err().to_string();
    assert_eq!(
        err,
        "truncation_field 'summary' is not a field of the format \"<P*3>{text}<P>Кратко:</P>\" (its fields: text)"
    );
}

#[test]
fn classification_targets_are_verbalized_labels() {
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let format = PromptFormat::compile("<P*2>{premise} Вопрос: {hypothesis}? Ответ:", &tok).unwrap();
    tok.add_prompt_tokens(&[format.prompt_token()]).unwrap();
    let verbalizers = [("entailment", " да"), ("not_entailment", " нет")];
    let config = PreprocessConfig::Classification {
        label_field: "label".into(),
        verbalizers: verbalizers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        truncation_field: Some("premise".into()),
        max_tokens: 64,
        too_long: TooLongPolicy::Error,
    };
    let pre = Preprocessor::new(&format, &tok, &config).unwrap();
    let row =
        serde_json::json!({"premise": "Кошка спит.", "hypothesis": "Кошка бодрствует", "label": "not_entailment"});
    let ex: Example = pre.encode(&record(&row, 1)).unwrap();
    let target_ids: Vec<i64> = ex.labels.iter().copied().filter(|&l| l != -100).collect();
    assert_eq!(target_ids, [tok.encode_ids(" нет").unwrap(), vec![2]].concat());
    assert_eq!(&ex.input_ids[ex.input_ids.len() - target_ids.len()..], target_ids.as_slice());

    let bad = serde_json::json!({"premise": "а", "hypothesis": "б", "label": "neutral"});
    let err = pre.encode(&record(&bad, 9)).unwrap_err().to_string();
    assert_eq!(err, "items.jsonl:9: label \"neutral\" has no verbalizer (known: entailment, not_entailment)");
}

/// On a tokenizer that adds a BOS (the Mistral kind in `tokenizers/`), a row is encoded as AutoTokenizer encodes
/// the formatted text (ruPrompts' `tokenizer(text)`: BOS included), with the format's leading prompt tokens moved
/// before the BOS (as PEFT puts virtual tokens); the labels still cover the target and EOS exactly.
#[test]
fn rows_on_a_bos_tokenizer_start_with_the_prompt_tokens_then_the_bos() {
    let mut tok = Tokenizer::from_dir(&fixture("tokenizers/mistral")).unwrap();
    let format = PromptFormat::compile("<P*2>{text}<P>", &tok).unwrap();
    let p = i64::from(tok.add_prompt_tokens(&[format.prompt_token()]).unwrap()[0]);
    let config = text2text(None, 1 << 20);
    let preprocessor = Preprocessor::new(&format, &tok, &config).unwrap();
    let row = serde_json::json!({"text": "Кот спит?", "summary": " Да, спит."});
    let ex = preprocessor.encode(&record(&row, 1)).unwrap();
    let (bos, eos) = (i64::from(tok.special().bos.unwrap()), i64::from(tok.special().eos.unwrap()));
    assert_eq!(ex.input_ids[..3], [p, p, bos]);
    assert_eq!(ex.input_ids.iter().filter(|&&t| t == p).count(), 3);
    assert_eq!((ex.input_ids.last(), ex.input_ids.iter().filter(|&&t| t == bos).count()), (Some(&eos), 1));
    let start = ex.labels.iter().position(|&l| l != ruprompts::data::IGNORE).unwrap();
    assert_eq!(ex.labels[start..], ex.input_ids[start..]);
    assert_eq!(tok.decode_after(&ex.input_ids[..start], &ex.input_ids[start..]).unwrap(), " Да, спит.</s>");
}
