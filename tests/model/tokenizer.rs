//! Tokenizer parity with the Python tokenizers that made the fixtures, and the real ruGPT-3 tokenizer.

use crate::common;

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
        let ids = tok.add_prompt_tokens(&[prompt_token]).unwrap();
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

/// The tokenizer kinds of the Llama family and beyond (`tokenizers/`, trained by fixture script 08).
const KINDS: [&str; 5] = ["llama3", "llama2", "mistral", "qwen2", "unigram"];

fn family(kind: &str) -> Tokenizer {
    Tokenizer::from_dir(&fixture(&format!("tokenizers/{kind}"))).unwrap()
}

fn offsets_of(encoding: &ruprompts::tokenizer::Encoding) -> Vec<Vec<i64>> {
    encoding.get_offsets().iter().map(|&(a, b)| vec![a as i64, b as i64]).collect()
}

/// Byte-level BPE with a BOS from tokenizer.json (Llama 3), byte fallback with the legacy normalizer (Llama 2) and
/// with Metaspace (Mistral), Qwen2's (no BOS) and Unigram, against AutoTokenizer (`reference/tokenizers.json`):
/// ids with and without specials, char offsets, decoding (with clean-up where asked), continuations.
#[test]
fn family_tokenizers_match_autotokenizer() {
    let reference = load_json("reference/tokenizers.json");
    for kind in KINDS {
        let spec = &reference[kind];
        let tok = family(kind);
        assert_eq!(tok.len() as u64, spec["len"].as_u64().unwrap(), "{kind}");
        assert_eq!(tok.special().bos.map(i64::from), spec["bos"].as_i64(), "{kind}");
        assert_eq!(tok.special().eos.map(i64::from), spec["eos"].as_i64(), "{kind}");
        for case in spec["texts"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let encoding = tok.encode_sequence(text).unwrap();
            let ids: Vec<i64> = encoding.get_ids().iter().map(|&i| i64::from(i)).collect();
            assert_eq!(ids, i64_vec(&case["ids"]), "{kind} {text:?}");
            assert_eq!(offsets_of(&encoding), i64_rows(&case["offsets"]), "{kind} {text:?}");
            assert_eq!(tok.encode_ids(text).unwrap(), i64_vec(&case["plain_ids"]), "{kind} {text:?}");
            assert_eq!(tok.decode(&ids).unwrap(), case["decoded"].as_str().unwrap(), "{kind} {text:?}");
        }
        for case in spec["continuations"].as_array().unwrap() {
            let (head, new) = (i64_vec(&case["prompt_ids"]), i64_vec(&case["new_ids"]));
            assert_eq!(tok.decode_after(&head, &new).unwrap(), case["text"].as_str().unwrap(), "{kind} {case}");
        }
    }
    // Why continuations are decoded after their context: alone, a SentencePiece-style decoder drops the first space.
    let case = &reference["unigram"]["continuations"][0];
    let alone = family("unigram").decode(&i64_vec(&case["new_ids"])).unwrap();
    assert_eq!((alone.as_str(), case["text"].as_str().unwrap()), ("да", " да"));
}

/// Prompt tokens are found in the raw text by every kind (a normalized one would hide from Llama 2's normalizer
/// after the first), and leading ones go before the BOS, as PEFT puts its virtual tokens; offsets move with them.
#[test]
fn prompt_tokens_lead_the_bos_on_every_family_tokenizer() {
    let reference = load_json("reference/tokenizers.json");
    for kind in KINDS {
        let spec = &reference[kind]["prompt_token"];
        let mut tok = family(kind);
        let id = i64::from(tok.add_prompt_tokens(&["<|P|>"]).unwrap()[0]);
        assert_eq!(id, spec["id"].as_i64().unwrap(), "{kind}");
        let (python, python_offsets) = (i64_vec(&spec["ids"]), i64_rows(&spec["offsets"]));
        assert_eq!(python.iter().filter(|&&t| t == id).count(), 3, "{kind}: {python:?}");
        // Python: [BOS] P P text P text. Ours: P P [BOS] text P text.
        let bos = usize::from(tok.special().bos.is_some_and(|b| i64::from(b) == python[0]));
        fn rotate<T: Clone>(v: &[T], bos: usize) -> Vec<T> {
            let mut v = v.to_vec();
            v[..bos + 2].rotate_left(bos);
            v
        }
        let encoding = tok.encode_sequence(spec["text"].as_str().unwrap()).unwrap();
        let ours: Vec<i64> = encoding.get_ids().iter().map(|&i| i64::from(i)).collect();
        assert_eq!(ours, rotate(&python, bos), "{kind}");
        assert_eq!(offsets_of(&encoding), rotate(&python_offsets, bos), "{kind}");
        assert_eq!(&ours[..2], [id, id], "{kind}");
        // Char 0 (inside the first prompt token) maps to token 0 after the move.
        assert_eq!(encoding.char_to_token(0, 0), Some(0), "{kind}");
    }
}

/// `add_bos_token` / `add_eos_token` in tokenizer_config.json rebuild a Llama tokenizer's post-processor, as
/// transformers' LlamaTokenizerFast does, and `add_prefix_space` reaches a byte-level pre-tokenizer; asking for a
/// BOS the tokenizer lacks is refused with the key's name.
#[test]
fn tokenizer_config_bos_and_eos_flags_are_honoured() {
    let reference = load_json("reference/tokenizers.json");
    let flipped = &reference["llama2_flipped"];
    let dir = copy_fixture("tokenizers/llama2");
    let config = dir.path().join("tokenizer_config.json");
    edit_json(&config, "add_bos_token", false.into());
    edit_json(&config, "add_eos_token", true.into());
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    for case in flipped["texts"].as_array().unwrap() {
        let ids = tok.encode_sequence_ids(case["text"].as_str().unwrap()).unwrap();
        assert_eq!(ids, i64_vec(&case["ids"]));
        assert_eq!(ids.last(), Some(&2));
    }
    // add_prefix_space sets a byte-level pre-tokenizer's own, as transformers does.
    let spaced = copy_fixture("tiny-gpt2-ru");
    edit_json(&spaced.path().join("tokenizer_config.json"), "add_prefix_space", true.into());
    let plain = Tokenizer::from_dir(&model_dir()).unwrap();
    assert_eq!(Tokenizer::from_dir(spaced.path()).unwrap().encode_ids("да").unwrap(), plain.encode_ids(" да").unwrap());
    assert_ne!(plain.encode_ids("да").unwrap(), plain.encode_ids(" да").unwrap());
    // Qwen2's tokenizer has no BOS: a Llama class asking for one is an error, as in Python.
    let qwen2 = copy_fixture("tokenizers/qwen2");
    edit_json(&qwen2.path().join("tokenizer_config.json"), "tokenizer_class", "LlamaTokenizerFast".into());
    let err = Tokenizer::from_dir(qwen2.path()).unwrap_err().to_string();
    assert!(
        err.contains("add_bos_token is true but no bos_token is declared") && err.contains("tokenizer_config.json"),
        "{err}"
    );
}
