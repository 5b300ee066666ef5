//! Property tests: every parser of outside data gets random and mutated input and must answer with a value or an
//! error, never a panic: YAML configs with overrides, jsonl/csv/tsv rows (plain and gzipped), `prompt.json`, the
//! torch pickle of `prompt_provider.bin` (mutated, and as random programs of its opcodes), the safetensors header
//! of `prompt_provider.safetensors` and GGUF checkpoints. (Templates are fuzzed beside their parser, in
//! src/format; files built to amplify are in tests/amplify.rs.)

use crate::common;

use std::io::Write;

use common::*;
use proptest::prelude::*;
use ruprompts::data::read_rows;
use ruprompts::prompt::{Prompt, PROMPT_FILE, TORCH_FILE, WEIGHTS_FILE};
use ruprompts::train::TrainConfig;

/// A few byte edits (position modulo the length, new byte) and an optional cut.
fn edits() -> impl Strategy<Value = (Vec<(usize, u8)>, Option<usize>)> {
    (prop::collection::vec((any::<usize>(), any::<u8>()), 1..6), prop::option::of(any::<usize>()))
}

fn mutate(base: &[u8], (edits, cut): &(Vec<(usize, u8)>, Option<usize>)) -> Vec<u8> {
    let mut out = base.to_vec();
    for &(at, byte) in edits {
        if !out.is_empty() {
            let i = at % out.len();
            out[i] = byte;
        }
    }
    if let Some(cut) = cut {
        out.truncate(cut % (out.len() + 1));
    }
    out
}

const CONFIG: &str = r#"model: {path: tests/fixtures/tiny-gpt2-ru, device: cpu}
dataset: {task: terra, dir: assets/rsg/TERRa}
prompt_format: {template: "<P*4>{premise}<P*2>Вопрос: {hypothesis}? Ответ:"}
preprocessing:
  kind: classification
  verbalizers: {entailment: " да", not_entailment: " нет"}
  truncation_field: premise
optimizer: {lr: 0.1, betas: [0.9, 0.999]}
scheduler: {kind: linear, warmup_steps: 2}
training: {batch_size: 4, max_steps: 6, eval_every: 2, save_total_limit: 1, max_grad_norm: 1.0}
output_dir: runs/terra
"#;

fn override_strategy() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "training.batch_size",
        "training.eval_every",
        "training.max_steps",
        "optimizer.lr",
        "optimizer.betas",
        "scheduler.warmup_steps",
        "prompt_format.template",
        "preprocessing.verbalizers",
        "model",
        "training..x",
        "",
    ]);
    let value = prop::sample::select(vec![
        "0",
        "-1",
        ".nan",
        ".inf",
        "1e400",
        "[0.9]",
        "[1, 2, 3]",
        "{a: 1}",
        "'x'",
        "~",
        "a: b",
        "{",
        "]",
        "'",
        "",
        "<P*99999999>{x}",
        "18446744073709551616",
    ]);
    (key, value, any::<bool>()).prop_map(|(k, v, eq)| if eq { format!("{k}={v}") } else { format!("{k}{v}") })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn configs_with_overrides_never_panic(
        change in edits(),
        overrides in prop::collection::vec(override_strategy(), 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, mutate(CONFIG.as_bytes(), &change)).unwrap();
        let _ = TrainConfig::load(&path, &overrides);
    }

    #[test]
    fn data_files_never_panic(
        text in "(\"|\t|,|\n|\r|\\{|\\}|:|a|я|1|\u{feff}| ){0,40}",
        raw in prop::collection::vec(any::<u8>(), 0..64),
        kind in prop::sample::select(vec!["jsonl", "csv", "tsv", "jsonl.gz", "tsv.gz"]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        for (i, bytes) in [text.as_bytes(), raw.as_slice()].into_iter().enumerate() {
            let path = dir.path().join(format!("rows{i}.{kind}"));
            let bytes = if kind.ends_with(".gz") && i == 0 {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(bytes).unwrap();
                gz.finish().unwrap()
            } else {
                bytes.to_vec()
            };
            std::fs::write(&path, bytes).unwrap();
            let _ = read_rows(&path);
        }
    }
}

/// The fixture prompt saved by Python ruPrompts: `prompt.json`, `prompt_provider.bin`, and ours in safetensors.
fn fixture_prompt() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let python = fixture("reference/ruprompts/prompt_tensor");
    let json = std::fs::read(python.join(PROMPT_FILE)).unwrap();
    let bin = std::fs::read(python.join(TORCH_FILE)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    Prompt::from_pretrained(&python, tch::Device::Cpu).unwrap().save_pretrained(dir.path()).unwrap();
    (json, bin, std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap())
}

/// Loads a prompt folder holding `files`; whatever they hold, the answer is a prompt or an error.
fn load(files: &[(&str, &[u8])]) {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let _ = Prompt::from_pretrained(dir.path(), tch::Device::Cpu);
}

/// The `data.pkl` inside a torch.save zip.
fn pickle_of(bin: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bin)).unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut zip.by_name("prompt_provider/data.pkl").unwrap(), &mut out).unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn prompt_files_never_panic(json_change in edits(), weights_change in edits(), pickle_change in edits()) {
        thread_local!(static FIXTURE: (Vec<u8>, Vec<u8>, Vec<u8>) = fixture_prompt());
        FIXTURE.with(|(json, bin, safetensors)| {
            // prompt.json mutated, with good weights.
            load(&[(PROMPT_FILE, &mutate(json, &json_change)), (WEIGHTS_FILE, safetensors)]);
            // The safetensors header (its first bytes: length, then JSON) mutated.
            let header_edits = (weights_change.0.iter().map(|&(at, b)| (at % 96, b)).collect(), weights_change.1);
            load(&[(PROMPT_FILE, json), (WEIGHTS_FILE, &mutate(safetensors, &header_edits))]);
            // The pickle mutated inside a well-formed zip, and the zip itself mutated.
            let dir = tempfile::tempdir().unwrap();
            let bin_path = dir.path().join(TORCH_FILE);
            write_torch_zip(&mutate(&pickle_of(bin), &pickle_change), &bin_path);
            load(&[(PROMPT_FILE, json), (TORCH_FILE, &std::fs::read(&bin_path).unwrap())]);
            load(&[(PROMPT_FILE, json), (TORCH_FILE, &mutate(bin, &pickle_change))]);
        });
    }
}

/// One pickle opcode of those the reader knows (with its argument), or a stray byte.
fn pickle_op() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(vec![b'(']),
        Just(vec![b't']),
        Just(vec![b')']),
        Just(vec![b'}']),
        Just(vec![b'R']),
        Just(vec![b'Q']),
        Just(vec![0x88]),
        (0x85u8..=0x87).prop_map(|op| vec![op]),
        any::<u8>().prop_map(|n| vec![b'K', n]),
        (0u8..4).prop_map(|i| vec![b'q', i]),
        (0u8..4).prop_map(|i| vec![b'h', i]),
        Just(b"ctorch._utils\n_rebuild_tensor_v2\n".to_vec()),
        Just(b"ctorch\nFloatStorage\n".to_vec()),
        Just(b"ccollections\nOrderedDict\n".to_vec()),
        Just(vec![0x8c, 7, b's', b't', b'o', b'r', b'a', b'g', b'e']),
        any::<u8>().prop_map(|b| vec![b]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Programs of the opcodes a tensor's pickle uses, in any order and repeated (memo fetches included): an
    /// error or a tensor, never a panic, and never work beyond the program's length.
    #[test]
    fn pickle_programs_never_panic(ops in prop::collection::vec(pickle_op(), 0..400)) {
        let mut pickle = vec![0x80, 2];
        pickle.extend(ops.concat());
        pickle.push(b'.');
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TORCH_FILE);
        write_torch_zip(&pickle, &path);
        let json = std::fs::read(fixture("reference/ruprompts/prompt_tensor").join(PROMPT_FILE)).unwrap();
        load(&[(PROMPT_FILE, &json), (TORCH_FILE, &std::fs::read(&path).unwrap())]);
    }
}

/// The header, metadata and tensor table of a GGUF fixture (everything before its tensor data).
fn gguf_fixture() -> (Vec<u8>, usize) {
    let path = fixture("gguf/tiny-qwen2.gguf");
    let bytes = std::fs::read(&path).unwrap();
    let file = ruprompts::gguf::Gguf::open(&path).unwrap();
    let header = bytes.len() - file.tensors().iter().map(|t| file.bytes(t).len()).sum::<usize>();
    (bytes, header)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Mutated GGUF headers (counts, lengths, types, dims, offsets, metadata values) and cut files load as a
    /// model with its tokenizer, or fail with an error: never a panic.
    #[test]
    fn gguf_files_never_panic(change in edits()) {
        thread_local!(static FIXTURE: (Vec<u8>, usize) = gguf_fixture());
        FIXTURE.with(|(bytes, header)| {
            let edits = (change.0.iter().map(|&(at, b)| (at % header, b)).collect(), change.1);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("mutated.gguf");
            std::fs::write(&path, mutate(bytes, &edits)).unwrap();
            let source = ruprompts::model::ModelSource::local(&path);
            let _ = ruprompts::model::Backbone::load_local(&source);
        });
    }
}
