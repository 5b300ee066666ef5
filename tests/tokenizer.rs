//! Tokenizer parity with the Python tokenizers that made the fixtures, and the real ruGPT-3 tokenizer.

mod common;

use common::*;
use ruprompts::tokenizer::{SpecialTokens, Tokenizer};

/// Every text of `gpt2.json` with the ids Python gave it (real positions only).
fn reference_texts() -> Vec<(String, Vec<i64>)> {
    let reference = load_json("reference/gpt2.json");
    let mut out = Vec::new();
    for case in reference["cases"].as_object().unwrap().values() {
        let lengths = i64_vec(&case["lengths"]);
        for ((text, ids), len) in
            case["texts"].as_array().unwrap().iter().zip(i64_rows(&case["input_ids"])).zip(lengths)
        {
            out.push((text.as_str().unwrap().to_string(), ids[..len as usize].to_vec()));
        }
    }
    let gen = &reference["greedy_generation"];
    out.push((gen["prompt"].as_str().unwrap().to_string(), i64_vec(&gen["prompt_ids"])));
    for item in reference["continuation_logprobs"].as_array().unwrap() {
        out.push((item["context"].as_str().unwrap().to_string(), i64_vec(&item["context_ids"])));
        for cand in item["candidates"].as_array().unwrap() {
            out.push((cand["continuation"].as_str().unwrap().to_string(), i64_vec(&cand["continuation_ids"])));
        }
    }
    out
}

/// The fixture tokenizer in its classic form only: vocab.json + merges.txt, no tokenizer.json.
fn classic_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(model_dir().join(name), dir.path().join(name)).unwrap();
    }
    dir
}

#[test]
fn ids_match_python_for_tokenizer_json_and_vocab_merges() {
    let classic_dir = classic_copy();
    let texts = reference_texts();
    assert!(texts.len() >= 8);
    for tok in [Tokenizer::from_dir(&model_dir()).unwrap(), Tokenizer::from_dir(classic_dir.path()).unwrap()] {
        assert_eq!(tok.len(), 2000);
        assert_eq!(tok.special(), &SpecialTokens { bos: Some(1), eos: Some(2), pad: Some(0), unk: Some(3) });
        for (text, ids) in &texts {
            assert_eq!(&tok.encode_ids(text).unwrap(), ids, "{text:?}");
            assert_eq!(&tok.decode(ids).unwrap(), text);
        }
        // Special tokens in text are matched whole.
        assert_eq!(tok.encode_ids("<s>да</s><pad>").unwrap()[..2], [1, tok.encode_ids("да").unwrap()[0]]);
    }
}

/// ruPrompts adds `<|P|>` as a normal added token; formatted prompts must tokenize to Python's ids with
/// Python's char offsets.
#[test]
fn added_prompt_tokens_and_char_offsets_match_python() {
    let formats = load_json("reference/ruprompts/prompt_format.json");
    for format in formats["formats"].as_array().unwrap() {
        let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
        let prompt_token = format["prompt_token"].as_str().unwrap();
        let ids = tok.add_tokens(&[prompt_token]).unwrap();
        assert_eq!(ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>(), i64_vec(&format["prompt_token_ids"]));
        assert_eq!(tok.len() as u64, format["tokenizer_len_after_add_tokens"].as_u64().unwrap());
        let expected = &format["tokenized_after_add_tokens"];
        let encoding = tok.encode(format["formatted"].as_str().unwrap()).unwrap();
        let ours: Vec<i64> = encoding.get_ids().iter().map(|&i| i64::from(i)).collect();
        assert_eq!(ours, i64_vec(&expected["input_ids"]), "{}", format["template"]);
        let offsets: Vec<Vec<i64>> = encoding.get_offsets().iter().map(|&(a, b)| vec![a as i64, b as i64]).collect();
        assert_eq!(offsets, i64_rows(&expected["offsets_char"]), "{}", format["template"]);
    }
}

#[test]
fn real_rugpt3_tokenizer_loads_and_round_trips_russian() {
    let tok = Tokenizer::from_dir(&fixture("rugpt3")).unwrap();
    assert_eq!(tok.len(), 50257);
    assert_eq!(tok.special(), &SpecialTokens { bos: Some(1), eos: Some(2), pad: Some(0), unk: Some(3) });
    let texts = [
        "Привет, мир!",
        "Вене́ра — вторая по удалённости от Солнца планета.",
        "  Двойные  пробелы,\tтабуляция и\nперевод строки\r\n",
        "Ёжик в тумане 🦔 и 漢字; «кавычки» — тире, 2026 год.",
        "ЗАГЛАВНЫЕ буквы и ещё: ъ, ы, ь, э, ю, я.",
    ];
    for text in texts {
        let encoding = tok.encode(text).unwrap();
        let ids: Vec<i64> = encoding.get_ids().iter().map(|&i| i64::from(i)).collect();
        assert!(ids.iter().all(|&id| id < 50257));
        assert_eq!(tok.decode(&ids).unwrap(), text);
        // Offsets are chars, contiguous, and cover the whole text (no trimming).
        let chars = text.chars().count();
        let offsets = encoding.get_offsets();
        assert_eq!(offsets.first().unwrap().0, 0);
        assert_eq!(offsets.last().unwrap().1, chars, "{text:?}");
        assert!(offsets.windows(2).all(|w| w[0].1 <= w[1].0 + 1 && w[0].0 <= w[1].0));
    }
    // Russian is compact under its own tokenizer: well under one token per char.
    let n = tok.encode_ids("Москва — столица России.").unwrap().len();
    assert!(n <= 8, "{n} tokens");
}

#[test]
fn missing_tokenizer_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("expected tokenizer.json, or vocab.json and merges.txt") && err.contains("vocab.json"),
        "{err}"
    );
    std::fs::write(dir.path().join("tokenizer_config.json"), "{ not json").unwrap();
    let err = format!("{:#}", Tokenizer::from_dir(dir.path()).unwrap_err());
    assert!(err.contains("tokenizer_config.json is not valid"), "{err}");
}
