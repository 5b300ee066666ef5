//! Saving and loading prompts: Python ruPrompts' own files, our round trips, PEFT adapters, refused input.

use crate::common;

use std::path::{Path, PathBuf};

use common::*;
use ruprompts::format::PromptFormat;
use ruprompts::model::{Gpt2Config, Input, Model};
use ruprompts::prompt::{
    Prompt, PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, PROMPT_FILE, STATE_FILE, TORCH_FILE, WEIGHTS_FILE,
};
use ruprompts::provider::{ProviderConfig, TensorInit};
use ruprompts::rng::seeded;
use ruprompts::tokenizer::Tokenizer;
use serde_json::json;
use tch::{Device, Kind, Tensor};

fn python_prompt(name: &str) -> PathBuf {
    fixture(&format!("reference/ruprompts/{name}"))
}

/// A copy of `src` holding only the files named in `keep`.
fn copy_only(src: &Path, keep: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in keep {
        std::fs::copy(src.join(name), dir.path().join(name)).unwrap();
    }
    dir
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

/// Logits of `text` formatted into the prompt (its token added to a fresh tokenizer).
fn logits_of(prompt: &Prompt, model: &Model, text: &str) -> Tensor {
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let id = prompt.add_token(&mut tok).unwrap();
    let row = serde_json::json!({ "text": text }).as_object().unwrap().clone();
    let ids = tok.encode_ids(&prompt.format().format(&row).unwrap().text).unwrap();
    let ids = Tensor::from_slice(&ids).unsqueeze(0);
    tch::no_grad(|| {
        let embeds = prompt.embed(model, &ids, id).unwrap();
        model.lm_logits(&model.forward(embeds.input(), None, None).unwrap())
    })
}

/// Loss of the fixture's `item0` under the ruPrompts reference prompt `spec`.
fn item0_loss(prompt: &Prompt, model: &Model, ids: &[i64], labels: &[i64]) -> f64 {
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let id = prompt.add_token(&mut tok).unwrap();
    let embeds = prompt.embed(model, &Tensor::from_slice(ids).unsqueeze(0), id).unwrap();
    tch::no_grad(|| {
        let hidden = model.forward(embeds.input(), None, None).unwrap();
        model.lm_loss(&hidden, &Tensor::from_slice(labels).unsqueeze(0)).double_value(&[])
    })
}

fn zip_entry(path: &Path, name: &str) -> Vec<u8> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut zip.by_name(name).unwrap(), &mut out).unwrap();
    out
}

#[test]
fn python_saved_tensor_prompt_gives_python_loss_from_safetensors_and_from_bin() {
    let model = tiny_model();
    let spec = load_json("reference/ruprompts/tensor_prompt.json");
    let item = &spec["item0"];
    let (ids, labels) = (i64_vec(&item["input_ids"]), i64_vec(&item["labels"]));
    let expected = item["loss"].as_f64().unwrap();

    let saved = Prompt::from_pretrained(&python_prompt("prompt_tensor"), Device::Cpu).unwrap();
    assert_eq!(saved.pretrained_model_name.as_deref(), Some("tiny-gpt2-ru"));
    assert_eq!(saved.format().template(), spec["template"].as_str().unwrap());
    assert_eq!(saved.format().prompt_length(), 7);
    let loss = item0_loss(&saved, &model, &ids, &labels);
    assert!((loss - expected).abs() <= 1e-5, "loss {loss} vs {expected}");

    // ruPrompts itself reads only the pickled tensor: so must we, to the same numbers.
    let bin_only = copy_only(&python_prompt("prompt_tensor"), &[PROMPT_FILE, TORCH_FILE]);
    let from_bin = Prompt::from_pretrained(bin_only.path(), Device::Cpu).unwrap();
    assert!(from_bin.embeddings().equal(&saved.embeddings()));
    let loss = item0_loss(&from_bin, &model, &ids, &labels);
    assert!((loss - expected).abs() <= 1e-5, "loss from .bin {loss} vs {expected}");
}

#[test]
fn python_saved_lstm_prompt_is_its_baked_output() {
    let model = tiny_model();
    let spec = load_json("reference/ruprompts/lstm_prompt.json");
    let loaded = Prompt::from_pretrained(&python_prompt("prompt_lstm"), Device::Cpu).unwrap();
    // ruPrompts saves only the BiLSTM's output, so what comes back is a tensor prompt of that output.
    assert_eq!(loaded.provider_config(), &ProviderConfig::Tensor { init: TensorInit::Vocab });
    let reference = Tensor::read_safetensors(fixture("reference/ruprompts/lstm_provider_tensors.safetensors")).unwrap();
    let output = &reference.iter().find(|(n, _)| n == "output_grad_mode").unwrap().1;
    assert!(loaded.embeddings().equal(output));
    let loss = item0_loss(
        &loaded,
        &model,
        &i64_vec(&spec["lm_loss_item0_input_ids"]),
        &i64_vec(&spec["lm_loss_item0_labels"]),
    );
    let expected = spec["lm_loss_item0"].as_f64().unwrap();
    assert!((loss - expected).abs() <= 1e-5, "loss {loss} vs {expected}");
}

#[test]
fn written_prompt_provider_bin_is_what_torch_save_writes() {
    let python = python_prompt("prompt_tensor");
    let prompt = Prompt::from_pretrained(&python, Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    prompt.save_pretrained(dir.path()).unwrap();
    let (ours, theirs) = (dir.path().join(TORCH_FILE), python.join(TORCH_FILE));
    for entry in ["data.pkl", "data/0", "byteorder", "version", ".format_version", ".storage_alignment"] {
        let name = format!("prompt_provider/{entry}");
        assert_eq!(zip_entry(&ours, &name), zip_entry(&theirs, &name), "{name}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(PROMPT_FILE)).unwrap()).unwrap();
    let python_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(python.join(PROMPT_FILE)).unwrap()).unwrap();
    assert_eq!(json["format"], python_json["format"]);
    assert_eq!(json["config"], python_json["config"]);
}

#[test]
fn save_then_load_gives_bitwise_identical_logits_and_full_state_for_every_provider() {
    let model = tiny_model();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let providers = [
        ("<P*2>{text}<P>Кратко:</P>", ProviderConfig::Tensor { init: TensorInit::Random }),
        ("<P*4>{text}<P*2>", ProviderConfig::Lstm { hidden_dim: Some(32), input_dim: Some(16), num_layers: 2 }),
        ("<P*3>{text}", ProviderConfig::Mlp { hidden_dim: Some(24) }),
    ];
    for (template, config) in providers {
        let format = PromptFormat::compile(template, &tok).unwrap();
        let mut prompt = seeded(3, || Prompt::new(format, config.clone(), &model)).unwrap();
        prompt.pretrained_model_name = Some("tiny-gpt2-ru".into());
        let dir = tempfile::tempdir().unwrap();
        prompt.save_pretrained(dir.path()).unwrap();
        // Saving again over the old files works and leaves no temp files behind.
        prompt.save_pretrained(dir.path()).unwrap();
        assert_eq!(file_names(dir.path()), [PROMPT_FILE, TORCH_FILE, WEIGHTS_FILE, STATE_FILE], "{template}");

        let loaded = Prompt::from_pretrained(dir.path(), Device::Cpu).unwrap();
        assert_eq!(loaded.provider_config(), &config);
        assert_eq!(loaded.format().compiled_template(), prompt.format().compiled_template());
        assert_eq!(loaded.pretrained_model_name.as_deref(), Some("tiny-gpt2-ru"));
        let text = "Москва — столица России.";
        assert!(logits_of(&loaded, &model, text).equal(&logits_of(&prompt, &model, text)), "{template}");
        // Every provider parameter comes back, trainable: training can resume.
        let (theirs, ours) = (prompt.var_store().variables(), loaded.var_store().variables());
        assert_eq!(ours.len(), theirs.len());
        for (name, value) in &theirs {
            assert!(ours[name].equal(value), "{template}: {name}");
            assert!(ours[name].requires_grad(), "{template}: {name}");
        }
    }
}

/// A randomly initialised GPT-2 with another embedding size than the fixture's.
fn model_with_embedding_size(n_embd: i64) -> Model {
    let mut config = Gpt2Config::from_file(&model_dir().join("config.json")).unwrap();
    config.n_embd = n_embd;
    Model::random(config, Kind::Float, Device::Cpu).unwrap()
}

#[test]
fn prompt_for_another_embedding_size_is_an_error_naming_both() {
    init();
    let prompt = Prompt::from_pretrained(&python_prompt("prompt_tensor"), Device::Cpu).unwrap();
    let model = model_with_embedding_size(32);
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let id = prompt.add_token(&mut tok).unwrap();
    let ids = Tensor::from_slice(&[id, id, id, 5, id, id, id, id]).unsqueeze(0);
    let err = format!("{:#}", prompt.embed(&model, &ids, id).unwrap_err());
    assert_eq!(
        err,
        "the prompt <|P|> does not fit this model: it was made for a model with embedding size 64, but this model \
         has 32 (n_embd)"
    );

    // A prompt.json whose embedding size disagrees with its tensor is refused too.
    let dir = copy_only(&python_prompt("prompt_tensor"), &[TORCH_FILE]);
    let json = std::fs::read_to_string(python_prompt("prompt_tensor").join(PROMPT_FILE)).unwrap();
    std::fs::write(dir.path().join(PROMPT_FILE), json.replace("\"embedding_dim\": 64", "\"embedding_dim\": 32"))
        .unwrap();
    let err = format!("{:#}", Prompt::from_pretrained(dir.path(), Device::Cpu).unwrap_err());
    assert!(err.contains(&format!("cannot load the prompt in {}", dir.path().display())), "{err}");
    assert!(
        err.contains("parameter 'weights' has shape [7, 32] in the tensor provider but [7, 64] was given"),
        "{err}"
    );
}

/// A `prompt_provider.bin` whose `data.pkl` is `pickle`, beside the fixture's `prompt.json`.
fn prompt_dir_with_pickle(pickle: &[u8]) -> tempfile::TempDir {
    let dir = copy_only(&python_prompt("prompt_tensor"), &[PROMPT_FILE]);
    write_torch_zip(pickle, &dir.path().join(TORCH_FILE));
    dir
}

#[test]
fn pickles_that_are_not_a_plain_tensor_are_refused_without_running_them() {
    let cases: [(&[u8], &str); 4] = [
        // os.system("touch pwned"): the classic pickle payload.
        (b"\x80\x02cos\nsystem\nq\x00X\x0b\x00\x00\x00touch pwnedq\x01\x85q\x02Rq\x03.", "refers to os.system"),
        // A state dict {"weights": ...} rather than a bare tensor.
        (b"\x80\x02}q\x00X\x07\x00\x00\x00weightsq\x01K\x01s.", "uses pickle opcode 0x73"),
        // builtins.eval smuggled through the storage class slot.
        (b"\x80\x02cbuiltins\neval\nq\x00.", "refers to builtins.eval"),
        (b"\x80\x02K\x01", "pickle ends early"),
    ];
    for (pickle, reason) in cases {
        let dir = prompt_dir_with_pickle(pickle);
        let err = format!("{:#}", Prompt::from_pretrained(dir.path(), Device::Cpu).unwrap_err());
        let file = dir.path().join(TORCH_FILE);
        assert!(err.starts_with(&format!("{} is not a torch.save file of one plain tensor", file.display())), "{err}");
        assert!(err.contains(reason), "{err}");
    }
    assert!(!Path::new("pwned").exists());

    let dir = copy_only(&python_prompt("prompt_tensor"), &[PROMPT_FILE]);
    std::fs::write(dir.path().join(TORCH_FILE), b"not a zip").unwrap();
    let err = format!("{:#}", Prompt::from_pretrained(dir.path(), Device::Cpu).unwrap_err());
    assert!(err.contains("is not a torch.save file of one plain tensor"), "{err}");
}

#[test]
fn missing_or_malformed_prompt_files_are_named() {
    let dir = copy_only(&python_prompt("prompt_tensor"), &[PROMPT_FILE]);
    let err = format!("{:#}", Prompt::from_pretrained(dir.path(), Device::Cpu).unwrap_err());
    assert_eq!(err, format!("no prompt weights in {}: expected {WEIGHTS_FILE} or {TORCH_FILE}", dir.path().display()));

    std::fs::write(dir.path().join(PROMPT_FILE), "{\"format\": {\"template\": \"<P>{x}\"}}").unwrap();
    let err = format!("{:#}", Prompt::from_pretrained(dir.path(), Device::Cpu).unwrap_err());
    let path = dir.path().join(PROMPT_FILE);
    assert!(
        err.starts_with(&format!("{} is not a valid prompt file: missing field `compiled_template`", path.display())),
        "{err}"
    );

    let empty = tempfile::tempdir().unwrap();
    let err = format!("{:#}", Prompt::from_pretrained(empty.path(), Device::Cpu).unwrap_err());
    assert!(err.starts_with(&format!("cannot read {}", empty.path().join(PROMPT_FILE).display())), "{err}");

    // Sizes out of range (the fuzz test found a negative one reaching an allocation) are refused by name.
    let all = [PROMPT_FILE, WEIGHTS_FILE, TORCH_FILE];
    for (value, expected) in
        [(-3, "config.embedding_dim is -3; expected 1 to 1048576"), (1i64 << 40, "is 1099511627776")]
    {
        let dir = copy_only(&python_prompt("prompt_tensor"), &all);
        let path = dir.path().join(PROMPT_FILE);
        let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        json["config"]["embedding_dim"] = value.into();
        std::fs::write(&path, json.to_string()).unwrap();
        let err = format!("{:#}", Prompt::from_pretrained(dir.path(), Device::Cpu).unwrap_err());
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn peft_prompt_tuning_adapters_export_and_import_leading_prompts_only() {
    let model = tiny_model();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let format = PromptFormat::compile("<P*5>{text}", &tok).unwrap();
    let prompt = seeded(4, || Prompt::new(format, ProviderConfig::Mlp { hidden_dim: Some(16) }, &model)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    prompt.save_peft(dir.path()).unwrap();
    assert_eq!(file_names(dir.path()), [PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE]);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(PEFT_CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(config["peft_type"], "PROMPT_TUNING");
    assert_eq!(config["task_type"], "CAUSAL_LM");
    assert_eq!(config["num_virtual_tokens"], 5);
    assert_eq!(config["token_dim"], 64);
    let tensors = Tensor::read_safetensors(dir.path().join(PEFT_WEIGHTS_FILE)).unwrap();
    assert_eq!(tensors.len(), 1);
    assert_eq!(tensors[0].0, "prompt_embeddings");
    assert!(tensors[0].1.equal(&prompt.embeddings()));

    let imported = Prompt::from_peft(dir.path(), None, Device::Cpu).unwrap();
    assert_eq!(imported.format().compiled_template(), "<|P|><|P|><|P|><|P|><|P|>{text}");
    let text = "Москва — столица России.";
    assert!(logits_of(&imported, &model, text).equal(&logits_of(&prompt, &model, text)));

    // PEFT prepends its virtual tokens to the text's embeddings: the injected prefix is exactly that.
    let text_ids = Tensor::from_slice(&tok.encode_ids(text).unwrap()).unsqueeze(0);
    let concat = Tensor::cat(&[prompt.embeddings().unsqueeze(0), model.embed(&text_ids).unwrap()], 1);
    let peft_logits = tch::no_grad(|| model.lm_logits(&model.forward(Input::Embeds(&concat), None, None).unwrap()));
    assert!(peft_logits.equal(&logits_of(&prompt, &model, text)));

    let suffix = Prompt::from_pretrained(&python_prompt("prompt_tensor"), Device::Cpu).unwrap();
    let err = suffix.save_peft(dir.path()).unwrap_err().to_string();
    assert!(err.starts_with("the format \"<P*3>{text}<P>Кратко:</P>\" has prompt tokens after other text"), "{err}");

    let wrong = PromptFormat::compile("<P*4>{question}", &tok).unwrap();
    let err = Prompt::from_peft(dir.path(), Some(wrong), Device::Cpu).unwrap_err().to_string();
    assert_eq!(
        err,
        "the format \"<P*4>{question}\" must start with the adapter's 5 prompt tokens and have no others (it has 4)"
    );

    std::fs::write(dir.path().join(PEFT_CONFIG_FILE), r#"{"peft_type": "LORA", "r": 8}"#).unwrap();
    let err = Prompt::from_peft(dir.path(), None, Device::Cpu).unwrap_err().to_string();
    let path = dir.path().join(PEFT_CONFIG_FILE);
    assert_eq!(
        err,
        format!(
            "{}: a LORA adapter holds no soft prompt (expected PROMPT_TUNING, P_TUNING or PREFIX_TUNING)",
            path.display()
        )
    );
}

#[test]
fn pickled_views_outside_their_storage_are_refused_not_crashed_on() {
    // The fixture's own pickle (a [7, 64] float tensor over 448 elements) with its size or stride bent: such a
    // file reached libtorch's as_strided and aborted the process.
    let zip = std::fs::File::open(python_prompt("prompt_tensor").join(TORCH_FILE)).unwrap();
    let mut zip = zip::ZipArchive::new(zip).unwrap();
    let mut pickle = Vec::new();
    std::io::Read::read_to_end(&mut zip.by_name("prompt_provider/data.pkl").unwrap(), &mut pickle).unwrap();
    let bend = |from: &[u8], to: &[u8]| {
        let at = pickle.windows(from.len()).position(|w| w == from).unwrap();
        [&pickle[..at], to, &pickle[at + from.len()..]].concat()
    };
    let cases: [(Vec<u8>, &str); 5] = [
        (bend(b"K\x07K@\x86", b"J\xf9\xff\xff\xffK@\x86"), "negative size -7 in [-7, 64]"),
        (bend(b"K@K\x01\x86", b"J\xc0\xff\xff\xffK\x01\x86"), "negative stride -64 in [-64, 1]"),
        (bend(b"K\x07K@\x86", b"K\x08K@\x86"), "it reads element 511 of a storage of 448"),
        (bend(b"M\xc0\x01", b"J\xff\xff\xff\x7f"), "storage 0 is truncated (1792 bytes, 8589934588 needed)"),
        (bend(b"M\xc0\x01", b"J\xf9\xff\xff\xff"), "storage 0 has -7 elements"),
    ];
    for (pickle, reason) in cases {
        let dir = prompt_dir_with_pickle(&pickle);
        let err = format!("{:#}", Prompt::from_pretrained(dir.path(), Device::Cpu).unwrap_err());
        assert!(err.contains(&dir.path().join(TORCH_FILE).display().to_string()), "{err}");
        assert!(err.contains(reason), "{reason}: {err}");
    }
}

/// A deep prompt saves its full state and its keys and values, no ruPrompts `.bin`, and loads back to the same
/// numbers; one without prompt tokens of its own exports as a PEFT prefix adapter from the command line.
#[test]
fn deep_prompts_round_trip_and_export_from_the_command_line() {
    let model = tiny_model();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let projection = Some(ruprompts::provider::Projection { hidden_dim: Some(16) });
    let seeded_deep = |seed, template: &str, projection| {
        let format = PromptFormat::compile(template, &tok).unwrap();
        let provider = ProviderConfig::Prefix { num_virtual_tokens: 3, projection, init: TensorInit::Vocab };
        seeded(seed, || Prompt::new(format, provider, &model)).unwrap()
    };
    let deep = |template: &str, projection| seeded_deep(5, template, projection);
    let text = "Москва — столица России.";
    for (template, projection) in [("<P*2>{text}", projection), ("{text}", None)] {
        let prompt = deep(template, projection);
        let dir = tempfile::tempdir().unwrap();
        prompt.save_pretrained(dir.path()).unwrap();
        assert_eq!(file_names(dir.path()), [PROMPT_FILE, WEIGHTS_FILE, STATE_FILE], "{template}");
        let loaded = Prompt::from_pretrained(dir.path(), Device::Cpu).unwrap();
        assert_eq!(loaded.format().compiled_template(), prompt.format().compiled_template());
        assert_eq!((loaded.virtual_tokens(), loaded.num_parameters()), (3, prompt.num_parameters()));
        assert!(logits_of(&loaded, &model, text).equal(&logits_of(&prompt, &model, text)), "{template}");
        // The keys and values steer the model: other ones give other logits.
        let other = seeded_deep(6, template, projection);
        assert!(max_abs_diff(&logits_of(&other, &model, text), &logits_of(&prompt, &model, text)) > 1e-3, "{template}");
    }
    // A phrase beside the prefix starts from its tokens' embeddings, as with a tensor prompt.
    let phrase = deep("<P>Ответ:</P>{text}", None);
    let ids = Tensor::from_slice(&tok.encode_ids("Ответ:").unwrap()).to_device(model.device());
    assert!(phrase.embeddings().equal(&model.token_embeddings().index_select(0, &ids)));
    let with_tokens = deep("<P*2>{text}", None);
    let err = with_tokens.save_peft(tempfile::tempdir().unwrap().path()).unwrap_err().to_string();
    assert!(err.contains("has 2 prompt tokens of its own besides the prefix"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    deep("{text}", projection).save_pretrained(&dir.path().join("deep")).unwrap();
    let out = dir.path().join("peft");
    let (ok, stdout, stderr) =
        ruprompts(&["export", "--peft", dir.path().join("deep").to_str().unwrap(), out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("wrote adapter_config.json and adapter_model.safetensors"), "{stdout}");
    let exported = Prompt::load(&out, Device::Cpu).unwrap();
    let original = Prompt::load(&dir.path().join("deep"), Device::Cpu).unwrap();
    let diff = max_abs_diff(&logits_of(&exported, &model, text), &logits_of(&original, &model, text));
    assert!(diff <= 1e-5, "exported logits differ by {diff}");

    // A folder that holds an adapter is not replaced without --overwrite, and is left as it was.
    let before = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
    let (ok, _, stderr) =
        ruprompts(&["export", "--peft", dir.path().join("deep").to_str().unwrap(), out.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("already holds an adapter (adapter_config.json, adapter_model.safetensors)"), "{stderr}");
    assert!(stderr.contains("--overwrite"), "{stderr}");
    assert_eq!(std::fs::read(out.join("adapter_model.safetensors")).unwrap(), before);
    let (ok, _, stderr) = ruprompts(&[
        "export",
        "--peft",
        "--overwrite",
        dir.path().join("deep").to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");

    let (ok, _, stderr) = ruprompts(&[
        "export",
        "--peft",
        "--overwrite",
        python_prompt("prompt_tensor").to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("has prompt tokens after other text"), "{stderr}");
    let (ok, _, stderr) = ruprompts(&["export", dir.path().join("deep").to_str().unwrap(), out.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("say which layout to export to: --peft"), "{stderr}");
}

/// Replaces every tensor of the safetensors file `path` with one of its shape whose first value is `value`.
fn poison(path: &Path, value: f64) {
    let tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .map(|(name, t)| {
            let t = t.copy();
            let _ = t.view([-1]).get(0).fill_(value);
            (name, t)
        })
        .collect();
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Tensor::write_safetensors(&named, path).unwrap();
}

#[test]
fn prompts_with_nan_or_infinite_numbers_are_refused_naming_the_file() {
    let model = tiny_model();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let format = PromptFormat::compile("<P*3>{text}", &tok).unwrap();
    let prompt = seeded(5, || Prompt::new(format, ProviderConfig::default(), &model)).unwrap();
    for (value, file) in [(f64::NAN, STATE_FILE), (f64::INFINITY, STATE_FILE), (f64::NEG_INFINITY, PEFT_WEIGHTS_FILE)] {
        let dir = tempfile::tempdir().unwrap();
        match file {
            PEFT_WEIGHTS_FILE => prompt.save_peft(dir.path()).unwrap(),
            _ => prompt.save_pretrained(dir.path()).unwrap(),
        }
        for name in file_names(dir.path()).iter().filter(|n| n.ends_with(".safetensors")) {
            poison(&dir.path().join(name), value);
        }
        let err = format!("{:#}", Prompt::load(dir.path(), Device::Cpu).expect_err("a poisoned prompt loaded"));
        assert!(err.contains("holds NaN or infinite values (1 of 192)"), "{value}: {err}");
        let named = if file == STATE_FILE { dir.path().display().to_string() } else { file.to_string() };
        assert!(err.contains(&named), "{value}: {err}");
    }
}

/// PEFT adapters whose `adapter_config.json` contradicts their tensor are refused on load, naming the field; one
/// whose numbers multiply out right but belong to another model (layers and key width swapped) loads, and is
/// refused where it meets the model (generation, evaluation, serving, `init_from`: one shared check), not
/// reinterpreted.
#[test]
fn peft_adapters_that_contradict_their_tensor_or_model_are_refused() {
    let model = tiny_model();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let load_err = |dir: &Path| format!("{:#}", Prompt::load(dir, Device::Cpu).unwrap_err());

    let tuning = tempfile::tempdir().unwrap();
    let format = PromptFormat::compile("<P*5>{text}", &tok).unwrap();
    seeded(3, || Prompt::new(format, ProviderConfig::default(), &model)).unwrap().save_peft(tuning.path()).unwrap();
    let config = tuning.path().join(PEFT_CONFIG_FILE);
    edit_json(&config, "token_dim", json!(32));
    assert!(load_err(tuning.path()).contains("token_dim is 32 but 'prompt_embeddings'"), "{}", load_err(tuning.path()));
    edit_json(&config, "token_dim", json!(64));
    edit_json(&config, "num_attention_heads", json!(5));
    let err = load_err(tuning.path());
    assert!(err.contains("num_attention_heads 5 does not divide token_dim 64"), "{err}");

    let prefix = tempfile::tempdir().unwrap();
    let format = PromptFormat::compile("{text}", &tok).unwrap();
    let provider = ProviderConfig::Prefix { num_virtual_tokens: 3, projection: None, init: TensorInit::Vocab };
    seeded(3, || Prompt::new(format, provider, &model)).unwrap().save_peft(prefix.path()).unwrap();
    let config = prefix.path().join(PEFT_CONFIG_FILE);
    // The tiny model: 2 layers of 64. 4 layers of 32 make the same 256 numbers per token.
    edit_json(&config, "num_layers", json!(4));
    edit_json(&config, "token_dim", json!(32));
    let swapped = Prompt::load(prefix.path(), Device::Cpu).unwrap();
    let err = format!("{:#}", swapped.fits(&model).unwrap_err());
    assert_eq!(err, "it was made for a model with layers 4, but this model has 2 (n_layer)");
    let mut tokenizer = tok.clone();
    let id = swapped.add_token(&mut tokenizer).unwrap();
    let ids = Tensor::from_slice(&[id, id, id, 5, 6]).unsqueeze(0);
    let err = format!("{:#}", swapped.embed(&model, &ids, id).unwrap_err());
    assert!(err.contains("does not fit this model: it was made for a model with layers 4"), "{err}");
    let (ok, _, stderr) = ruprompts(&[
        "generate",
        "--model",
        model_dir().to_str().unwrap(),
        "--prompt",
        prefix.path().to_str().unwrap(),
        "--device",
        "cpu",
        "Кот",
    ]);
    assert!(!ok);
    assert!(stderr.contains("made for a model with layers 4, but this model has 2 (n_layer)"), "{stderr}");
}
