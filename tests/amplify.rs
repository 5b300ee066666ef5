//! Small files built to amplify: each reader of outside bytes gets one and must answer with a clean error that
//! names the file, within a time and memory bound, not spend memory or work out of proportion to the file. One
//! test, so that the process's peak memory (reset before each case) is that case's alone.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use ruprompts::prompt::{Prompt, PROMPT_FILE, TORCH_FILE, WEIGHTS_FILE};
use ruprompts::train::TrainConfig;

/// Peak resident memory since the last reset, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Runs `read`, which must fail with an error mentioning every one of `needles`, within 10 s and 256 MiB more
/// than the process held before.
fn bounded(case: &str, needles: &[&str], read: impl FnOnce() -> anyhow::Result<()>) {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = peak_rss();
    let start = Instant::now();
    let err = match read() {
        Ok(()) => panic!("{case}: read without an error"),
        Err(e) => format!("{e:#}"),
    };
    let (took, grew) = (start.elapsed(), peak_rss().saturating_sub(before));
    for needle in needles {
        assert!(err.contains(needle), "{case}: error lacks {needle:?}: {err}");
    }
    assert!(took < Duration::from_secs(10), "{case}: took {took:?}");
    assert!(grew < 256 << 20, "{case}: peak memory grew by {} MiB", grew >> 20);
    eprintln!("{case}: {took:?}, +{} MiB: {err}", grew >> 20);
}

/// A prompt folder holding the fixture's `prompt.json` beside `file` (written by `write`).
fn prompt_dir(file: &str, write: impl FnOnce(&Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let python = fixture("reference/ruprompts/prompt_tensor");
    std::fs::copy(python.join(PROMPT_FILE), dir.path().join(PROMPT_FILE)).unwrap();
    write(&dir.path().join(file));
    dir
}

/// A pickle that memoises a tuple of 64 ints, then 40 times builds a tuple of 64 fetches of the last one: 64^41
/// values if fetches copied, in about 5 KB. All in one tuple, so the pickle holds one object.
fn memo_bomb() -> Vec<u8> {
    let mut p = vec![0x80, 2, b'(', b'('];
    p.extend(std::iter::repeat_n([b'K', 7], 64).flatten());
    p.extend([b't', b'q', 0]);
    for level in 1..=40u8 {
        p.push(b'(');
        p.extend(std::iter::repeat_n([b'h', level - 1], 64).flatten());
        p.extend([b't', b'q', level]);
    }
    p.extend([b't', b'.']);
    p
}

#[test]
fn files_built_to_amplify_are_refused_in_bounded_time_and_memory() {
    init();
    let python = fixture("reference/ruprompts/prompt_tensor");
    let fixture_bin = std::fs::read(python.join(TORCH_FILE)).unwrap();
    let mut fixture_pickle = Vec::new();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&fixture_bin)).unwrap();
    std::io::Read::read_to_end(&mut zip.by_name("prompt_provider/data.pkl").unwrap(), &mut fixture_pickle).unwrap();

    // The pickle's memo: fetching one memoised tuple many times.
    let dir = prompt_dir(TORCH_FILE, |p| write_torch_zip(&memo_bomb(), p));
    bounded("pickle memo", &[TORCH_FILE, "holds an object, not a tensor"], || {
        Prompt::from_pretrained(dir.path(), tch::Device::Cpu).map(drop)
    });

    // A deflated storage: 64 MiB of zeros in about 64 KB.
    let dir = prompt_dir(TORCH_FILE, |p| {
        write_prompt_zip(p, &[("data.pkl", &fixture_pickle), ("data/0", &vec![0; 64 << 20])])
    });
    bounded("zip deflate", &[TORCH_FILE, "entry prompt_provider/data/0 unpacks to more than"], || {
        Prompt::from_pretrained(dir.path(), tch::Device::Cpu).map(drop)
    });

    // A deflated pickle past the size any tensor's pickle has.
    let dir = prompt_dir(TORCH_FILE, |p| {
        let mut pickle = fixture_pickle.clone();
        pickle.splice(2..2, std::iter::repeat_n([b'K', 0, b'0'], 1 << 20).flatten());
        write_torch_zip(&pickle, p)
    });
    bounded("large pickle", &[TORCH_FILE, "entry prompt_provider/data.pkl unpacks to more than"], || {
        Prompt::from_pretrained(dir.path(), tch::Device::Cpu).map(drop)
    });

    // A safetensors header that claims a terabyte.
    let dir = prompt_dir(WEIGHTS_FILE, |p| {
        let mut bytes = (1u64 << 40).to_le_bytes().to_vec();
        bytes.extend(b"{}");
        std::fs::write(p, bytes).unwrap();
    });
    bounded("safetensors header", &[WEIGHTS_FILE], || Prompt::from_pretrained(dir.path(), tch::Device::Cpu).map(drop));

    // A PEFT adapter config nested a million deep.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("adapter_config.json"), format!("{{\"x\": {}", "[".repeat(1 << 20))).unwrap();
    bounded("adapter_config.json", &["adapter_config.json"], || Prompt::load(dir.path(), tch::Device::Cpu).map(drop));

    // YAML aliases: 20,000 references to a list of 20,000 values (4e8 values) in 200 KB.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let mut yaml = String::from("anchor: &a [");
    yaml.push_str(&"0,".repeat(20_000));
    yaml.push_str("]\nrepeats: [");
    yaml.push_str(&"*a,".repeat(20_000));
    yaml.push_str("]\n");
    std::fs::write(&config, yaml).unwrap();
    bounded("yaml aliases", &["config.yaml", "expands (through aliases)"], || {
        ruprompts::config::load::<TrainConfig>(&config, &[]).map(drop)
    });

    // GGUF: a metadata array that claims 2^60 strings, and a tensor table that claims 2^40 tensors.
    for (case, body) in [
        (
            "gguf array",
            [
                &0u64.to_le_bytes()[..],
                &1u64.to_le_bytes(),
                &1u64.to_le_bytes(),
                b"a",
                &9u32.to_le_bytes(),
                &8u32.to_le_bytes(),
                &(1u64 << 60).to_le_bytes(),
            ]
            .concat(),
        ),
        ("gguf tensors", [&(1u64 << 40).to_le_bytes()[..], &0u64.to_le_bytes()].concat()),
    ] {
        let path = dir.path().join("model.gguf");
        std::fs::write(&path, [&b"GGUF"[..], &3u32.to_le_bytes(), &body].concat()).unwrap();
        bounded(case, &["model.gguf"], || ruprompts::gguf::Gguf::open(&path).map(drop));
    }
}
