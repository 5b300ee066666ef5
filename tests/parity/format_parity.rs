//! Prompt formats against Python ruprompts 0.1.4 (`reference/ruprompts/prompt_format.json`).

use crate::common;

use std::collections::BTreeMap;

use common::*;
use ruprompts::format::{FormatError, PromptFormat, Row};
use ruprompts::tokenizer::Tokenizer;
use serde_json::Value;

/// The one fixture template where ruPrompts' regex (no DOTALL) leaves `<P>\nВопрос:</P>` uncompiled.
const MULTILINE_PHRASE: &str = "<P>Текст:</P>{passage}<P>\nВопрос:</P>{question}";

fn check_ranges(formatted: &ruprompts::format::Formatted, expected: &Value) {
    let expected = expected.as_object().unwrap();
    assert_eq!(formatted.spans.len(), expected.len());
    for span in &formatted.spans {
        let r = &expected[&span.field];
        let range = |a: &str, b: &str| r[a].as_u64().unwrap() as usize..r[b].as_u64().unwrap() as usize;
        assert_eq!(span.chars, range("char_start", "char_stop"), "{}", span.field);
        assert_eq!(span.bytes, range("byte_start", "byte_stop"), "{}", span.field);
        assert_eq!(&formatted.text[span.bytes.clone()], r["value"].as_str().unwrap());
    }
}

#[test]
fn compiled_templates_lengths_init_tokens_and_ranges_match_ruprompts() {
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let reference = load_json("reference/ruprompts/prompt_format.json");
    for spec in reference["formats"].as_array().unwrap() {
        let template = spec["template"].as_str().unwrap();
        let format = PromptFormat::compile(template, &tok).unwrap();
        let row: Row = spec["item"].as_object().unwrap().clone();
        if template == MULTILINE_PHRASE {
            // Ours compiles the second phrase too: Текст: (4 tokens) + \nВопрос: (its own tokens).
            let phrase_ids = tok.encode_ids("\nВопрос:").unwrap();
            assert_eq!(format.prompt_length(), 4 + phrase_ids.len());
            assert_eq!(format.init_tokens().len(), format.prompt_length());
            assert_eq!(format.init_tokens()[&4] as i64, phrase_ids[0]);
            assert_eq!(
                format.compiled_template(),
                format!("<|P|><|P|><|P|><|P|>{{passage}}{}{{question}}", "<|P|>".repeat(phrase_ids.len()))
            );
        } else {
            assert_eq!(format.compiled_template(), spec["compiled_template"].as_str().unwrap(), "{template}");
            assert_eq!(format.prompt_length() as u64, spec["prompt_length"].as_u64().unwrap(), "{template}");
            let init: BTreeMap<usize, u32> = spec["init_tokens"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.parse().unwrap(), v.as_u64().unwrap() as u32))
                .collect();
            assert_eq!(format.init_tokens(), &init, "{template}");
            let formatted = format.format(&row).unwrap();
            assert_eq!(formatted.text, spec["formatted"].as_str().unwrap(), "{template}");
            check_ranges(&formatted, &spec["ranges"]);
            let keyed = format.clone().with_key(Some("k1"));
            assert_eq!(keyed.compiled_template(), spec["with_key_k1"]["compiled_template"].as_str().unwrap());
            assert_eq!(keyed.prompt_token(), "<|[k1]P|>");
        }
        // Rebuilt from what ruPrompts stores in prompt.json, every format (the quirky one too) formats
        // exactly as Python did.
        let stored = PromptFormat::from_compiled(template, spec["compiled_template"].as_str().unwrap()).unwrap();
        assert_eq!(stored.prompt_length() as u64, spec["prompt_length"].as_u64().unwrap());
        let formatted = stored.format(&row).unwrap();
        assert_eq!(formatted.text, spec["formatted"].as_str().unwrap(), "{template}");
        check_ranges(&formatted, &spec["ranges"]);
    }
}

#[test]
fn sp_alias_and_errors_with_positions() {
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let slides = PromptFormat::compile("<SP:3>{question}<SP:3>{answer}<SP:3>", &tok).unwrap();
    let same = PromptFormat::compile("<P*3>{question}<P*3>{answer}<P*3>", &tok).unwrap();
    assert_eq!(slides.compiled_template(), same.compiled_template());
    assert_eq!(slides.prompt_length(), 9);
    assert_eq!(slides.fields(), ["question", "answer"]);

    let err = |t: &str| PromptFormat::compile(t, &tok).unwrap_err().to_string();
    assert_eq!(err("{a}<P*0>"), "template \"{a}<P*0>\": <P*0> at char 3: a repeat needs at least one token");
    assert!(err("x{}").contains("empty field {} at char 1"));
    assert!(err("<P>{q}</P>").contains("unclosed <P> at char 0: its phrase runs into a field before </P> at char 6"));
    assert!(err("ab{q").contains("unclosed { at char 2"));
    assert!(err("a}b").contains("unmatched } at char 1"));
    assert!(err("<P*x>").contains("malformed prompt repeat at char 0"));
    assert!(err("a</P>").contains("</P> at char 1 has no opening <P>"));
    assert!(err("<P></P>").contains("empty phrase <P></P> at char 0"));
    assert!(err("<|P|>{a}").contains("<|P|> at char 0 is a compiled prompt token"));

    let row: Row = serde_json::from_str(r#"{"question": "Да?", "n": 3, "flag": true}"#).unwrap();
    match slides.format(&row) {
        Err(e @ FormatError::MissingField { .. }) => assert_eq!(
            e.to_string(),
            r#"row {"flag":true,"n":3,"question":"Да?"} has no field 'answer' (it has: flag, n, question)"#
        ),
        other => panic!("{other:?}"),
    }
    let long: Row = serde_json::from_str(&format!(r#"{{"question": "{}"}}"#, "я".repeat(200))).unwrap();
    let err = slides.format(&long).unwrap_err().to_string();
    assert!(err.starts_with(&format!(r#"row {{"question":"{}…"#, "я".repeat(67))), "{err}");
    let numbers = PromptFormat::compile("{n}: {{literal}} {flag}", &tok).unwrap();
    assert_eq!(numbers.compiled_template(), "{n}: {{literal}} {flag}");
    let err = numbers.format(&row).unwrap_err().to_string();
    assert_eq!(err, "field 'flag' is a boolean; expected text or a number");
}
