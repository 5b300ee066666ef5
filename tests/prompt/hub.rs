//! Pulling and pushing prompts (and pulling models) by Hub id, against the stand-in Hub in common/hub.rs on
//! 127.0.0.1: the cache layout Python's huggingface_hub uses (read by Python itself), revisions and branches,
//! offline mode, the model card, no-op pushes, and the error paths (unknown repo or revision, missing file, no
//! token, 401, 403, 409, 412, 500, a connection dropped mid-transfer, the Hub unreachable with and without a cached
//! copy). Needs the `hub` feature (on by default).
#![cfg(feature = "hub")]

use crate::common;
use crate::fake_hub;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use fake_hub::{Cutter, Failure, FakeHub};
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
    // `ruprompts pull --model` fills the cache ahead of time and says where: HF_HUB_CACHE when set.
    let (fresh, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = [("HF_HUB_CACHE", cache.path().to_str().unwrap())];
    let (ok, pulled_model, stderr) = run(&hub.url, fresh.path(), &env, &["pull", "--model", "alice/tiny-gpt2-ru"]);
    assert!(ok, "{stderr}");
    let model_snap = cache.path().join(format!("models--alice--tiny-gpt2-ru/snapshots/{model_oid}"));
    assert_eq!(pulled_model.trim(), model_snap.display().to_string());
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert_eq!(std::fs::read(model_snap.join(name)).unwrap(), std::fs::read(model_dir().join(name)).unwrap());
    }

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
    assert!(
        err.contains("alice/broken: revision 'main' has no file prompt_provider.safetensors or prompt_provider.bin"),
        "{err}"
    );

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
fn a_prompt_pushed_by_python_as_ruprompts_lays_it_out_pulls_and_loads() {
    let hub = FakeHub::start();
    hub.require_token("hf_py");
    let python_prompt = fixture("reference/ruprompts/prompt_tensor");
    // Pushed by Python's huggingface_hub as ruPrompts does: prompt.json inline, prompt_provider.bin through LFS.
    let home = tempfile::tempdir().unwrap();
    let code = format!(
        "from huggingface_hub import HfApi; api = HfApi(token='hf_py'); \
         api.create_repo('konodyuk/prompt_tiny'); \
         api.upload_folder(repo_id='konodyuk/prompt_tiny', folder_path='{}', \
                           allow_patterns=['prompt.json', 'prompt_provider.bin'])",
        python_prompt.display()
    );
    python(&hub.url, home.path(), false, &code);
    let log = hub.log();
    let lfs_puts = log.iter().filter(|l| l.starts_with("PUT /lfs-upload/")).count();
    assert!(lfs_puts == 1 && log.iter().any(|l| l == "POST /lfs-verify"), "{log:?}");
    let pushed: Vec<String> = hub.files("konodyuk/prompt_tiny", "main").unwrap().into_keys().collect();
    assert_eq!(pushed, [".gitattributes", "prompt.json", "prompt_provider.bin"]);
    let env = [("HF_TOKEN", "hf_py")];
    let (ok, pulled, stderr) = generate(&hub.url, home.path(), &env, "konodyuk/prompt_tiny", Some(&model_dir()));
    assert!(ok, "{stderr}");
    let (ok, local, stderr) =
        generate(&hub.url, home.path(), &env, python_prompt.to_str().unwrap(), Some(&model_dir()));
    assert!(ok, "{stderr}");
    assert_eq!(pulled, local);

    // A cache Python filled (snapshot_download leaves no "this file does not exist" markers) serves offline and
    // with the Hub unreachable: the .bin stands in for the safetensors the repo never had.
    let py_home = tempfile::tempdir().unwrap();
    python(
        &hub.url,
        py_home.path(),
        false,
        "from huggingface_hub import snapshot_download; snapshot_download('konodyuk/prompt_tiny', token='hf_py')",
    );
    assert!(!py_home.path().join("hub/models--konodyuk--prompt_tiny/.no_exist").exists());
    let offline = [("HF_HUB_OFFLINE", "1")];
    let (ok, cached, stderr) = generate(&hub.url, py_home.path(), &offline, "konodyuk/prompt_tiny", Some(&model_dir()));
    assert!(ok, "{stderr}");
    assert_eq!(cached, local);
    drop(hub);
    let closed = "http://127.0.0.1:9";
    let (ok, cached, stderr) = generate(closed, py_home.path(), &[], "konodyuk/prompt_tiny", Some(&model_dir()));
    assert!(ok, "{stderr}");
    assert_eq!(cached, local);
}

/// A Python with huggingface_hub, which scripts/setup.sh installs into .cache/hub-venv.
fn python_hub() -> PathBuf {
    let python = std::env::var_os("RUPROMPTS_HUB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/hub-venv/bin/python"));
    assert!(python.is_file(), "{} is missing: run scripts/setup.sh", python.display());
    python
}

/// Runs `code` in Python's huggingface_hub with the Hub at `endpoint` and the cache under `home`; its stdout.
fn python(endpoint: &str, home: &Path, offline: bool, code: &str) -> String {
    let mut cmd = Command::new(python_hub());
    cmd.args(["-c", code])
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", home)
        .env("HF_HUB_DISABLE_XET", "1")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env_remove("HF_TOKEN");
    if offline {
        cmd.env("HF_HUB_OFFLINE", "1");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The YAML front matter of a model card.
fn front_matter(card: &str) -> serde_yaml::Value {
    let yaml = card.strip_prefix("---\n").and_then(|rest| rest.split_once("\n---\n")).unwrap().0;
    serde_yaml::from_str(yaml).unwrap()
}

#[test]
fn a_trained_prompt_pushes_and_pulls_back_into_an_empty_cache_with_identical_logits() {
    let hub = FakeHub::start();
    hub.commit("alice/tiny-gpt2-ru", "main", &files(&model_dir()));
    hub.require_token("hf_write");
    let token = [("HF_TOKEN", "hf_write")];
    let (home, data, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = out.path().join("run");
    // Train on the backbone by its Hub id, then score the validation rows: the card's evaluation.
    let config = terra_config(data.path(), &out);
    let config = config.to_str().unwrap();
    let (ok, _, stderr) = run(&hub.url, home.path(), &token, &["train", config, "model.path=alice/tiny-gpt2-ru"]);
    assert!(ok, "{stderr}");
    let val = data.path().join("val.jsonl");
    let (ok, _, stderr) = run(
        &hub.url,
        home.path(),
        &token,
        &["eval", "--task", "terra", "--data", val.to_str().unwrap(), "--prompt", out.to_str().unwrap()],
    );
    assert!(ok, "{stderr}");

    let push = |dir: &Path, extra: &[&str]| {
        let mut args = vec!["push", dir.to_str().unwrap(), "alice/terra-prompt"];
        args.extend(extra);
        run(&hub.url, home.path(), &token, &args)
    };
    let (ok, stdout, stderr) = push(&out, &["--private"]);
    assert!(ok, "{stderr}");
    let head = hub.head("alice/terra-prompt", "main").unwrap();
    assert!(stdout.starts_with(&format!("committed {head} to alice/terra-prompt@main: ")), "{stdout}");
    assert!(hub.is_private("alice/terra-prompt"));
    let pushed = hub.files("alice/terra-prompt", "main").unwrap();
    let names: Vec<&str> = pushed.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            ".gitattributes",
            "README.md",
            "prompt.json",
            "prompt_provider.bin",
            "prompt_provider.safetensors",
            "provider_state.safetensors"
        ]
    );
    for name in &names[2..] {
        assert_eq!(pushed[*name], std::fs::read(out.join(name)).unwrap(), "{name}");
    }

    // The card: front matter with the base model, the prompt's settings and the evaluation as model-index.
    let card = String::from_utf8(pushed["README.md"].clone()).unwrap();
    let meta = front_matter(&card);
    assert_eq!(meta["base_model"].as_str(), Some("alice/tiny-gpt2-ru"));
    assert_eq!(meta["library_name"].as_str(), Some("ruprompts"));
    let settings = &meta["ruprompts"];
    assert_eq!(settings["template"].as_str(), Some("<P*4>{premise}<P*2>Вопрос: {hypothesis}? Ответ:"));
    assert_eq!(settings["provider"]["kind"].as_str(), Some("tensor"));
    let d = tiny_model().config().n_embd;
    assert_eq!(settings["trainable_parameters"].as_i64(), Some(6 * d));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval/report.json")).unwrap()).unwrap();
    let accuracy = report["tasks"][0]["metrics"][0]["tuned"].as_f64().unwrap();
    let result = &meta["model-index"][0]["results"][0];
    assert_eq!(result["dataset"]["config"].as_str(), Some("terra"));
    assert_eq!(result["metrics"][0]["type"].as_str(), Some("accuracy"));
    assert_eq!(result["metrics"][0]["value"].as_f64(), Some(accuracy));
    assert!(card.contains("| TERRa | accuracy |"), "{card}");
    assert!(
        card.contains("ruprompts generate --prompt alice/terra-prompt --field premise=\"…\" --field hypothesis="),
        "{card}"
    );

    // The same prompt again, with the token from the file `hf auth login` writes: nothing is committed.
    let commits = |log: Vec<String>| log.iter().filter(|l| l.contains("/commit/")).count();
    let before = commits(hub.log());
    std::fs::write(home.path().join("token"), "hf_write\n").unwrap();
    let (ok, stdout, stderr) = run(&hub.url, home.path(), &[], &["push", out.to_str().unwrap(), "alice/terra-prompt"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!(
            "nothing changed: alice/terra-prompt@main already holds this prompt (commit {head}); nothing committed"
        )
    );
    assert_eq!((commits(hub.log()), hub.head("alice/terra-prompt", "main")), (before, Some(head.clone())));

    // Pulled into an empty cache: the same bytes and, on the model, the same logits bit for bit.
    let fresh = tempfile::tempdir().unwrap();
    let log_before_pull = hub.log();
    let (ok, stdout, stderr) = run(&hub.url, fresh.path(), &token, &["pull", "alice/terra-prompt"]);
    assert!(ok, "{stderr}");
    let snap = PathBuf::from(stdout.trim());
    assert_eq!(snap, snapshot(fresh.path(), "alice/terra-prompt", &head));
    let model = tiny_model();
    let (local, pulled) = (
        Prompt::from_pretrained(&out, tch::Device::Cpu).unwrap(),
        Prompt::from_pretrained(&snap, tch::Device::Cpu).unwrap(),
    );
    assert!(terra_logits(&local, &model).equal(&terra_logits(&pulled, &model)));

    // `eval --prompt` by Hub id (into another empty cache) asks the Hub for each file once, as pull does, and
    // scores as the local folder did.
    let resolves = |log: &[String]| log.iter().filter(|l| l.contains("/alice/terra-prompt/resolve/")).count();
    let pulled_with = resolves(&hub.log()) - resolves(&log_before_pull);
    let (again, report_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let before = hub.log();
    let args = ["eval", "--task", "terra", "--data", val.to_str().unwrap(), "--prompt", "alice/terra-prompt"];
    let out_dir = report_dir.path().to_str().unwrap();
    let (ok, _, stderr) = run(&hub.url, again.path(), &token, &[&args[..], &["--out", out_dir]].concat());
    assert!(ok, "{stderr}");
    assert_eq!(resolves(&hub.log()) - resolves(&before), pulled_with);
    let by_id: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(by_id["tasks"][0]["metrics"][0]["tuned"].as_f64(), Some(accuracy));

    // Python's huggingface_hub reads that cache offline, and downloads the pushed files byte for byte.
    let code = "from huggingface_hub import snapshot_download; print(snapshot_download('alice/terra-prompt'))";
    assert_eq!(python(&hub.url, fresh.path(), true, code), snap.display().to_string());
    let py_home = tempfile::tempdir().unwrap();
    let code = "from huggingface_hub import hf_hub_download as d; \
                print(d('alice/terra-prompt', 'prompt_provider.safetensors', token='hf_write'))";
    hub.require_token("hf_write");
    let path = python(&hub.url, py_home.path(), false, code);
    assert_eq!(std::fs::read(path).unwrap(), std::fs::read(out.join("prompt_provider.safetensors")).unwrap());

    // A branch: created from main, so the same prompt changes nothing there; a prompt in ruPrompts' layout
    // (prompt.json + prompt_provider.bin) replaces the files and removes those it lacks; main stays.
    let (ok, stdout, stderr) = push(&out, &["--revision", "dev"]);
    assert!(ok && stdout.starts_with("nothing changed: alice/terra-prompt@dev"), "{stdout}{stderr}");
    let python_prompt = fixture("reference/ruprompts/prompt_tensor");
    let layout = tempfile::tempdir().unwrap();
    for name in ["prompt.json", "prompt_provider.bin"] {
        std::fs::copy(python_prompt.join(name), layout.path().join(name)).unwrap();
    }
    let (ok, stdout, stderr) = push(layout.path(), &["--revision", "dev"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("removed prompt_provider.safetensors, provider_state.safetensors"), "{stdout}");
    let dev: Vec<String> = hub.files("alice/terra-prompt", "dev").unwrap().into_keys().collect();
    assert_eq!(dev, [".gitattributes", "README.md", "prompt.json", "prompt_provider.bin"]);
    // Its card: prompt.json names the backbone "tiny-gpt2-ru", which is no Hub id, so no base_model; no
    // evaluation, as the folder has none.
    let card = hub.files("alice/terra-prompt", "dev").unwrap().remove("README.md").unwrap();
    let meta = front_matter(std::str::from_utf8(&card).unwrap());
    assert!(meta.get("base_model").is_none() && meta.get("model-index").is_none(), "{meta:?}");
    assert_eq!(meta["ruprompts"]["backbone"].as_str(), Some("tiny-gpt2-ru"));
    assert_eq!(meta["ruprompts"]["trainable_parameters"].as_i64(), Some(7 * 64));
    assert_eq!(hub.head("alice/terra-prompt", "main"), Some(head));
    let (ok, stdout, stderr) = run(&hub.url, fresh.path(), &token, &["pull", "alice/terra-prompt@dev"]);
    assert!(ok, "{stderr}");
    let pulled = Prompt::from_pretrained(Path::new(stdout.trim()), tch::Device::Cpu).unwrap();
    let reference = Prompt::from_pretrained(&python_prompt, tch::Device::Cpu).unwrap();
    assert!(pulled.embeddings().equal(&reference.embeddings()));
}

#[test]
fn push_errors_say_what_went_wrong_and_a_dropped_push_is_safe_to_repeat() {
    let hub = FakeHub::start();
    let prompt = saved_prompt(4, "alice/tiny-gpt2-ru");
    let dir = prompt.path().to_str().unwrap();
    let home = tempfile::tempdir().unwrap();
    let push = |endpoint: &str, env: &[(&str, &str)], dir: &str, repo: &str| {
        let (ok, stdout, stderr) = run(endpoint, home.path(), env, &["push", dir, repo]);
        (ok, stdout + &stderr)
    };
    let failed = |env: &[(&str, &str)], dir: &str, repo: &str| {
        let (ok, out) = push(&hub.url, env, dir, repo);
        assert!(!ok, "pushed: {out}");
        out
    };
    // Before any request: no token, no prompt, no repo id.
    let err = failed(&[], dir, "alice/p");
    assert!(err.contains("pushing to the Hub needs a token with write access: set HF_TOKEN"), "{err}");
    assert!(hub.log().is_empty(), "{:?}", hub.log());
    let token = [("HF_TOKEN", "hf_write")];
    let err = failed(&token, "/no/such/run", "alice/p");
    assert!(err.contains("/no/such/run: no such folder"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = failed(&token, empty.path().to_str().unwrap(), "alice/p");
    assert!(err.contains("no prompt.json here: not a saved prompt"), "{err}");
    let err = failed(&token, dir, "alice");
    assert!(err.contains("'alice' is not a Hub repo id such as owner/name"), "{err}");
    let err = failed(&token, dir, "alice/p@v1");
    assert!(err.contains("give the branch with --revision, not as alice/p@v1"), "{err}");

    // What the Hub answers: 401 and 403 apart, a conflict, a moved branch, a server error.
    hub.require_token("hf_write");
    let err = failed(&[("HF_TOKEN", "hf_read")], dir, "alice/p");
    assert!(err.contains("alice/p@main: the Hub rejected the token (401) while creating the repository"), "{err}");
    hub.fail("POST /api/repos/create", Failure::Status(403), 1);
    let err = failed(&token, dir, "bob/p");
    assert!(err.contains("bob/p@main: the token may not write to this repository (403)"), "{err}");
    assert!(err.contains("'bob' is neither your account nor an organization you can write to"), "{err}");
    hub.fail("/commit/main", Failure::Status(409), 10);
    let err = failed(&token, dir, "alice/p");
    assert!(err.contains("alice/p@main: the Hub reported a conflict (409) while committing"), "{err}");
    hub.fail("/commit/main", Failure::Status(412), 10);
    let err = failed(&token, dir, "alice/p");
    assert!(err.contains("alice/p@main: 'main' moved while pushing (412"), "{err}");
    hub.fail("/commit/main", Failure::Status(500), 100);
    let err = failed(&token, dir, "alice/p");
    assert!(err.contains("alice/p@main: committing failed: HTTP error: 500"), "{err}");
    hub.stop_failing();
    assert_eq!(hub.files("alice/p", "main").unwrap().len(), 1, "only .gitattributes");

    // The connection drops while the commit's answer comes back: the commit was made, so pushing again finds
    // nothing to do.
    let cutter = Cutter::start(&hub.url, "POST /api/models/alice/p/commit/main");
    let (ok, err) = push(&cutter.url, &token, dir, "alice/p");
    assert!(!ok && err.contains("alice/p@main: the connection to the Hub failed while committing"), "{err}");
    assert!(err.contains("pushing again is safe"), "{err}");
    let (ok, out) = push(&hub.url, &token, dir, "alice/p");
    assert!(ok && out.starts_with("nothing changed: alice/p@main"), "{out}");
    assert_eq!(
        hub.files("alice/p", "main").unwrap()["prompt.json"],
        std::fs::read(prompt.path().join("prompt.json")).unwrap()
    );

    // A pull whose download drops mid-file: a clear error and nothing half-written in the cache.
    drop(cutter);
    let cutter = Cutter::start(&hub.url, "GET /alice/p/resolve/main/prompt_provider.safetensors");
    let fresh = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(&cutter.url, fresh.path(), &token, &["pull", "alice/p"]);
    assert!(!ok && err.contains("alice/p: the transfer of prompt_provider.safetensors broke off ("), "{err}");
    assert!(err.contains("nothing partial was kept in the cache; try again"), "{err}");
    let blobs = fresh.path().join("hub/models--alice--p/blobs");
    let names: Vec<String> =
        std::fs::read_dir(&blobs).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 1, "only prompt.json's blob: {names:?}");
    let (ok, _, err) = run(&cutter.url, fresh.path(), &token, &["pull", "alice/p"]);
    assert!(ok, "{err}");
}

#[test]
fn a_published_prompt_by_catalogue_name_pulls_prompt_and_backbone_and_decodes_with_its_recipe() {
    let hub = FakeHub::start();
    // detox_russe laid out as ruPrompts publishes it: prompt.json (its format takes toxic_comment, its model is
    // the backbone's Hub id) and prompt_provider.bin; the tiny model stands in for ruGPT-3 Large.
    let python_prompt = fixture("reference/ruprompts/prompt_tensor");
    let mut prompt_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(python_prompt.join("prompt.json")).unwrap()).unwrap();
    for key in ["template", "compiled_template"] {
        let text = prompt_json["format"][key].as_str().unwrap().replace("{text}", "{toxic_comment}");
        prompt_json["format"][key] = text.into();
    }
    prompt_json["config"]["pretrained_model_name"] = "sberbank-ai/rugpt3large_based_on_gpt2".into();
    let published = vec![
        ("prompt.json".to_string(), serde_json::to_vec(&prompt_json).unwrap()),
        ("prompt_provider.bin".to_string(), std::fs::read(python_prompt.join("prompt_provider.bin")).unwrap()),
    ];
    hub.commit("konodyuk/prompt_rugpt3large_detox_russe", "main", &published);
    hub.commit("sberbank-ai/rugpt3large_based_on_gpt2", "main", &files(&model_dir()));
    let local = tempfile::tempdir().unwrap();
    for (name, bytes) in &published {
        std::fs::write(local.path().join(name), bytes).unwrap();
    }
    let home = tempfile::tempdir().unwrap();
    let field = "toxic_comment=Какого черта ты сюда припёрся?";
    let (ok, pulled, stderr) =
        run(&hub.url, home.path(), &[], &["generate", "--prompt", "detox_russe", "--field", field]);
    assert!(ok, "{stderr}");
    // The notebook's recipe, spelled out on the local copy with the local model.
    let model = model_dir().display().to_string();
    let recipe = [
        "--num-beams",
        "10",
        "--num-return-sequences",
        "10",
        "--do-sample=false",
        "--max-new-tokens",
        "100",
        "--eos-token-id",
        "0",
    ];
    let mut args = vec!["generate", "--prompt", local.path().to_str().unwrap(), "--model", &model, "--field", field];
    args.extend(recipe);
    let (ok, spelled, stderr) = run(&hub.url, home.path(), &[], &args);
    assert!(ok, "{stderr}");
    assert_eq!(pulled, spelled);
    let line: serde_json::Value = serde_json::from_str(pulled.trim()).unwrap();
    assert_eq!(line["generated"].as_array().unwrap().len(), 10);
    assert_eq!(line["scores"].as_array().unwrap().len(), 10);
    // Flags override the recipe; a name the catalogue lacks gets the catalogue's names.
    let args = ["generate", "--prompt", "detox_russe", "--num-return-sequences", "3", "--field", field];
    let (ok, fewer, stderr) = run(&hub.url, home.path(), &[], &args);
    assert!(ok, "{stderr}");
    let fewer: serde_json::Value = serde_json::from_str(fewer.trim()).unwrap();
    assert_eq!(fewer["generated"].as_array().unwrap()[..], line["generated"].as_array().unwrap()[..3]);
    let (ok, _, stderr) = run(&hub.url, home.path(), &[], &["generate", "--prompt", "detox_rusей", "--field", field]);
    let expected = "no folder detox_rusей (--prompt), and no prompt ruPrompts published is called that \
                    (detox_russe, title_mlsum, summarization_mlsum, qa_sberquad, proverb, joke)";
    assert!(!ok && stderr.contains(expected), "{stderr}");
}

/// One GGUF file of a model repo, `owner/name/FILE.gguf`: only that file is pulled (its metadata is the config and
/// the tokenizer), into Python's cache layout, and the model loads from it; a file the repo lacks is named.
#[test]
fn one_gguf_file_of_a_repo_pulls_by_its_path() {
    let hub = FakeHub::start();
    let gguf = fixture("gguf/tiny-qwen2.gguf");
    let bytes = std::fs::read(&gguf).unwrap();
    let files =
        vec![("q/tiny-qwen2.gguf".to_string(), bytes.clone()), ("other.gguf".to_string(), b"not this".to_vec())];
    let commit = hub.commit("bob/tiny-qwen2-GGUF", "main", &files);
    let home = tempfile::tempdir().unwrap();
    let (ok, info, stderr) = run(&hub.url, home.path(), &[], &["info", "bob/tiny-qwen2-GGUF/q/tiny-qwen2.gguf"]);
    assert!(ok, "{stderr}");
    let cached = snapshot(home.path(), "bob/tiny-qwen2-GGUF", &commit).join("q/tiny-qwen2.gguf");
    assert!(info.contains(&cached.display().to_string()) && info.contains("file         GGUF v3"), "{info}");
    assert_eq!(std::fs::read(&cached).unwrap(), bytes);
    assert!(!snapshot(home.path(), "bob/tiny-qwen2-GGUF", &commit).join("other.gguf").exists());
    let (ok, _, stderr) = run(&hub.url, home.path(), &[], &["info", "bob/tiny-qwen2-GGUF/missing.gguf"]);
    assert!(!ok && stderr.contains("has no file missing.gguf"), "{stderr}");
}
