//! `model.device_map` on a machine without GPUs: every block placed on the CPU one by one runs the code path of a
//! model split over GPUs (activations moved to each block's device, each layer's cache where its block is, the
//! head with the last block) and must give the unsplit model's numbers; wrong maps are refused by name.

use crate::common;

use common::*;
use ruprompts::device::DeviceMap;
use ruprompts::model::{Input, KvCache, Model};
use tch::{Device, Kind, Tensor};

/// Logits of a left-padded batch, then of one more token through the KV cache.
fn logits(model: &Model) -> (Tensor, Tensor) {
    let ids = Tensor::from_slice2(&[[0i64, 0, 11, 12, 13, 14], [21, 22, 23, 24, 25, 26]]);
    let mask = Tensor::from_slice2(&[[0i64, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]);
    tch::no_grad(|| {
        let mut cache: KvCache = model.new_cache();
        let full = model.lm_logits(&model.forward(Input::Ids(&ids), Some(&mask), Some(&mut cache)).unwrap());
        let next = Tensor::from_slice2(&[[15i64], [27]]);
        let mask = Tensor::cat(&[mask, Tensor::ones([2, 1], (Kind::Int64, Device::Cpu))], 1);
        let step = model.lm_logits(&model.forward(Input::Ids(&next), Some(&mask), Some(&mut cache)).unwrap());
        (full, step)
    })
}

#[test]
fn a_model_mapped_block_by_block_computes_what_the_unmapped_one_does() {
    init();
    for folder in ["tiny-gpt2-ru", "llama-family/tiny-mistral", "llama-family/tiny-qwen2"] {
        let dir = fixture(folder);
        let plain = Model::from_dir(&dir, Kind::Float, Device::Cpu).unwrap();
        let blocks = plain.config().n_layer as usize;
        for map in [DeviceMap::Blocks(vec![Device::Cpu; blocks]), DeviceMap::Auto] {
            let mapped = Model::from_dir_mapped(&dir, Kind::Float, Device::Cpu, Some(&map)).unwrap();
            assert_eq!(mapped.device(), Device::Cpu);
            let ((a, b), (c, d)) = (logits(&plain), logits(&mapped));
            assert!(a.equal(&c) && b.equal(&d), "{folder}: {map:?} changed the logits");
        }
    }
}

/// With a GPU (scripts/gpu-check.sh runs it), a real split: the first block on the CPU, the rest and the head on
/// cuda:0.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn a_model_split_between_the_cpu_and_a_gpu_computes_what_the_cpu_does() {
    assert!(tch::Cuda::is_available(), "no CUDA device: run this test where scripts/gpu-check.sh runs");
    init();
    for folder in ["tiny-gpt2-ru", "llama-family/tiny-qwen2"] {
        let dir = fixture(folder);
        let plain = Model::from_dir(&dir, Kind::Float, Device::Cpu).unwrap();
        let blocks = plain.config().n_layer as usize;
        let mut places = vec![Device::Cuda(0); blocks];
        places[0] = Device::Cpu;
        let map = DeviceMap::Blocks(places);
        let split = Model::from_dir_mapped(&dir, Kind::Float, Device::Cpu, Some(&map)).unwrap();
        let ((a, b), (c, d)) = (logits(&plain), logits(&split));
        assert_eq!((c.device(), d.device()), (Device::Cpu, Device::Cpu));
        let diff = max_abs_diff(&a, &c).max(max_abs_diff(&b, &d));
        assert!(diff < 1e-3, "{folder}: split logits differ by {diff}");
    }
}

#[test]
fn device_maps_that_do_not_fit_the_model_or_the_machine_are_refused() {
    init();
    let dir = fixture("tiny-gpt2-ru");
    let three = DeviceMap::Blocks(vec![Device::Cpu; 3]);
    let err = Model::from_dir_mapped(&dir, Kind::Float, Device::Cpu, Some(&three)).unwrap_err();
    assert!(format!("{err:#}").contains("model.device_map lists 3 devices for the model's 2 blocks"), "{err:#}");
    if !tch::Cuda::is_available() {
        let gpu = DeviceMap::Blocks(vec![Device::Cpu, Device::Cuda(3)]);
        let err = Model::from_dir_mapped(&dir, Kind::Float, Device::Cpu, Some(&gpu)).unwrap_err();
        assert!(format!("{err:#}").contains("names cuda:3, but 0 CUDA devices are visible"), "{err:#}");
    }
    // From the command line: a malformed map is refused; a map of one CPU per block generates what no map does.
    let (model, prompt) = (model_dir(), fixture("reference/ruprompts/prompt_tensor"));
    let generate = |map: &[&str]| {
        let base = ["generate", "--prompt", prompt.to_str().unwrap(), "--model", model.to_str().unwrap()];
        ruprompts(&[&base[..], &["--device", "cpu", "--max-new-tokens", "6"], map, &["Кот спит."]].concat())
    };
    let (ok, _, stderr) = generate(&["--device-map", "cpu,gpu0"]);
    assert!(!ok && stderr.contains("`gpu0` is not a device"), "{stderr}");
    let (ok, mapped, stderr) = generate(&["--device-map", "cpu,cpu"]);
    assert!(ok, "{stderr}");
    let (ok, plain, stderr) = generate(&[]);
    assert!(ok, "{stderr}");
    assert_eq!(mapped, plain);
    // In a config, the key is named.
    let dir = tempfile::tempdir().unwrap();
    let config = terra_config(dir.path(), &dir.path().join("run"));
    let err = ruprompts::train::TrainConfig::load(&config, &["model.device_map=[cpu, gpu0]".into()]).unwrap_err();
    assert!(
        format!("{err:#}").contains("device_map") && format!("{err:#}").contains("`gpu0` is not a device"),
        "{err:#}"
    );
}
