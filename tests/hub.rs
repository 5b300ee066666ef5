//! Pulling prompts and models by Hub id, against the stand-in Hub in common/hub.rs on 127.0.0.1: the cache layout
//! Python's huggingface_hub uses, revisions, offline mode, and the error paths (unknown repo or revision, missing
//! file, 401, 403, 500, the Hub unreachable with and without a cached copy).

mod common;
#[path = "common/hub.rs"]
mod fake_hub;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use fake_hub::{Failure, FakeHub};
use ruprompts::format::PromptFormat;
use ruprompts::prompt::Prompt;
use ruprompts::provider::ProviderConfig;
use ruprompts::rng::seeded;
use ruprompts::tokenizer::Tokenizer;

/// The files of a folder, by name.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

/// A prompt saved for the tiny model, naming `model` as its base (a Hub id here).
fn saved_prompt(seed: u64, model: &str) -> tempfile::TempDir {
    let m = tiny_model();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let format = PromptFormat::compile("<P*3>{text}<P*2>", &tok).unwrap();
    let mut prompt = seeded(seed, || Prompt::new(format, ProviderConfig::default(), &m)).unwrap();
    prompt.pretrained_model_name = Some(model.to_string());
    let dir = tempfile::tempdir().unwrap();
    prompt.save_pretrained(dir.path()).unwrap();
    dir
}

/// `ruprompts args…` with the Hub at `endpoint` and the cache under `home`; (success, stdout, stderr).
fn run(endpoint: &str, home: &Path, extra_env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ruprompts"));
    cmd.args(args).env("HF_ENDPOINT", endpoint).env("HF_HOME", home).env("OMP_NUM_THREADS", "1");
    for var in ["HF_TOKEN", "HF_TOKEN_PATH", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE"] {
        cmd.env_remove(var);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// `ruprompts generate` with `prompt` (a folder or Hub id) on `model`, or on the model its prompt.json names.
fn generate(
    endpoint: &str,
    home: &Path,
    env: &[(&str, &str)],
    prompt: &str,
    model: Option<&Path>,
) -> (bool, String, String) {
    let mut args = vec!["generate", "--prompt", prompt, "--max-new-tokens", "5", "Заходят в бар"];
    let model = model.map(|m| m.to_string_lossy().into_owned());
    if let Some(m) = &model {
        args.extend(["--model", m.as_str()]);
    }
    run(endpoint, home, env, &args)
}

fn snapshot(home: &Path, repo: &str, commit: &str) -> PathBuf {
    home.join("hub").join(format!("models--{}", repo.replace('/', "--"))).join("snapshots").join(commit)
}

#[test]
fn prompts_and_models_pull_by_hub_id_into_pythons_cache_layout() {
    let hub = FakeHub::start();
    let model_oid = hub.commit("alice/tiny-gpt2-ru", "main", &files(&model_dir()));
    let prompt = saved_prompt(1, "alice/tiny-gpt2-ru");
    let first = hub.commit("alice/joke", "main", &files(prompt.path()));
    let home = tempfile::tempdir().unwrap();

    // The same output as the local folder with the local model.
    let (ok, local, stderr) = generate(&hub.url, home.path(), &[], prompt.path().to_str().unwrap(), Some(&model_dir()));
    assert!(ok, "{stderr}");
    let (ok, pulled, stderr) = generate(&hub.url, home.path(), &[], "alice/joke", None);
    assert!(ok, "{stderr}");
    assert_eq!(pulled, local);

    // Python's layout: snapshots/<commit>/<file> → ../../blobs/<etag>, refs/main holds the commit.
    let snap = snapshot(home.path(), "alice/joke", &first);
    let link = std::fs::read_link(snap.join("prompt.json")).unwrap();
    assert!(link.starts_with("../../blobs"), "{}", link.display());
    let repo_dir = home.path().join("hub/models--alice--joke");
    assert_eq!(std::fs::read_to_string(repo_dir.join("refs/main")).unwrap().trim(), first);
    assert_eq!(
        std::fs::read(snap.join("prompt.json")).unwrap(),
        std::fs::read(prompt.path().join("prompt.json")).unwrap()
    );
    assert!(snapshot(home.path(), "alice/tiny-gpt2-ru", &model_oid).join("model.safetensors").is_file());
    // `ruprompts info` takes a Hub id too.
    let (ok, info, stderr) = run(&hub.url, home.path(), &[], &["info", "alice/tiny-gpt2-ru"]);
    assert!(ok, "{stderr}");
    assert!(info.contains(&snapshot(home.path(), "alice/tiny-gpt2-ru", &model_oid).display().to_string()), "{info}");

    // A new commit on main moves `alice/joke`; `@<first commit>` pins the old prompt.
    let other = saved_prompt(2, "alice/tiny-gpt2-ru");
    hub.commit("alice/joke", "main", &files(other.path()));
    let (ok, pinned, stderr) = generate(&hub.url, home.path(), &[], &format!("alice/joke@{first}"), None);
    assert!(ok, "{stderr}");
    assert_eq!(pinned, local);

    // Offline: the cache serves without a single request; an empty cache says what is missing.
    let before = hub.log().len();
    let (ok, offline, stderr) =
        generate(&hub.url, home.path(), &[("HF_HUB_OFFLINE", "1")], &format!("alice/joke@{first}"), None);
    assert!(ok, "{stderr}");
    assert_eq!((offline, hub.log().len()), (local.clone(), before));
    let empty = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = generate(&hub.url, empty.path(), &[("HF_HUB_OFFLINE", "1")], "alice/joke", None);
    assert!(
        !ok && stderr.contains("alice/joke: prompt.json is not in the Hugging Face cache and HF_HUB_OFFLINE is set"),
        "{stderr}"
    );

    // The Hub unreachable: the cached copy serves; with nothing cached, the error says so.
    drop(hub);
    let closed = "http://127.0.0.1:9";
    let (ok, cached, stderr) = generate(closed, home.path(), &[], &format!("alice/joke@{first}"), None);
    assert!(ok, "{stderr}");
    assert_eq!(cached, local);
    let (ok, _, stderr) = generate(closed, empty.path(), &[], "alice/joke", None);
    assert!(
        !ok && stderr.contains("alice/joke: cannot reach the Hub to get prompt.json, and it is not in the cache"),
        "{stderr}"
    );
}

#[test]
fn hub_errors_say_what_went_wrong_and_leave_no_half_file() {
    let hub = FakeHub::start();
    let prompt = saved_prompt(3, "alice/tiny-gpt2-ru");
    hub.commit("alice/joke", "main", &files(prompt.path()));
    let only_json = tempfile::tempdir().unwrap();
    std::fs::copy(prompt.path().join("prompt.json"), only_json.path().join("prompt.json")).unwrap();
    hub.commit("alice/broken", "main", &files(only_json.path()));
    let home = tempfile::tempdir().unwrap();
    let failed = |prompt: &str, env: &[(&str, &str)]| {
        let (ok, _, stderr) = generate(&hub.url, home.path(), env, prompt, None);
        assert!(!ok, "{prompt} pulled");
        stderr
    };
    let err = failed("alice/nope", &[]);
    assert!(err.contains("alice/nope: no such repository on the Hub"), "{err}");
    let err = failed("alice/joke@v9", &[]);
    assert!(err.contains("alice/joke@v9: the repository has no revision 'v9'"), "{err}");
    let err = failed("alice/broken", &[]);
    assert!(err.contains("alice/broken: revision 'main' has no file prompt_provider.bin"), "{err}");

    hub.fail("prompt.json", Failure::Status(403), 1);
    let err = failed("alice/joke", &[]);
    assert!(err.contains("alice/joke: the token is not allowed to read this repository (403)"), "{err}");
    hub.require_token("hf_secret");
    let err = failed("alice/joke", &[]);
    assert!(err.contains("alice/joke: the Hub asks for authentication (401): set HF_TOKEN"), "{err}");
    let err = failed("alice/joke", &[("HF_TOKEN", "hf_wrong")]);
    assert!(err.contains("(401)"), "{err}");

    // The weights' metadata is served but their download answers 500: an error, and nothing half-written or wrong
    // in the cache — only prompt.json's blob.
    hub.fail("GET /alice/joke/resolve/main/prompt_provider", Failure::Status(500), 100);
    let err = failed("alice/joke", &[("HF_TOKEN", "hf_secret")]);
    // (hf-hub stores the 500 page as the file; the checksum catches it.)
    assert!(
        err.contains(
            "alice/joke: prompt_provider.safetensors: the downloaded 17 bytes do not match the file's checksum"
        ) && err.contains("removed from the cache"),
        "{err}"
    );
    let blobs = home.path().join("hub/models--alice--joke/blobs");
    let names: Vec<String> =
        std::fs::read_dir(&blobs).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(!names[0].ends_with(".incomplete"), "{names:?}");
    hub.stop_failing();
    // With the token the pull works, over the same cache.
    let (ok, _, stderr) =
        generate(&hub.url, home.path(), &[("HF_TOKEN", "hf_secret")], "alice/joke", Some(&model_dir()));
    assert!(ok, "{stderr}");
}

#[test]
fn a_repo_laid_out_as_python_ruprompts_pushes_it_pulls_and_loads() {
    let hub = FakeHub::start();
    let python = shared().join("fixtures/reference/ruprompts/prompt_tensor");
    let kept: Vec<(String, Vec<u8>)> =
        files(&python).into_iter().filter(|(n, _)| n == "prompt.json" || n == "prompt_provider.bin").collect();
    hub.commit("konodyuk/prompt_tiny", "main", &kept);
    let home = tempfile::tempdir().unwrap();
    let (ok, pulled, stderr) = generate(&hub.url, home.path(), &[], "konodyuk/prompt_tiny", Some(&model_dir()));
    assert!(ok, "{stderr}");
    let (ok, local, stderr) = generate(&hub.url, home.path(), &[], python.to_str().unwrap(), Some(&model_dir()));
    assert!(ok, "{stderr}");
    assert_eq!(pulled, local);
}
