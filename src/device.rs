//! Where tensors live and in which precision: the `cpu | cuda | auto` and `f32 | bf16 | f16` options
//! that every command and config accepts. Nothing else in the crate names a device or dtype directly.

use std::fmt;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

/// The device a user asks for. `Auto` takes the first CUDA GPU when libtorch was built with CUDA and one is
/// visible, and the CPU otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    Cpu,
    Cuda,
    #[default]
    Auto,
}

impl DeviceChoice {
    /// Resolves the choice to a tch device; `cuda` without a usable GPU is an error, not a silent CPU run.
    ///
    /// ```
    /// use ruprompts::device::DeviceChoice;
    /// assert_eq!(DeviceChoice::Cpu.resolve().unwrap(), tch::Device::Cpu);
    /// if !tch::Cuda::is_available() {
    ///     assert_eq!(DeviceChoice::Auto.resolve().unwrap(), tch::Device::Cpu);
    ///     assert!(DeviceChoice::Cuda.resolve().is_err());
    /// }
    /// ```
    pub fn resolve(self) -> anyhow::Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto => Ok(Device::cuda_if_available()),
            Self::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            Self::Cuda => anyhow::bail!(
                "device 'cuda' was requested but no CUDA device is usable: libtorch in use is {} \
                 (set LIBTORCH to a CUDA build of libtorch, or run on the CPU: `--device cpu` where the command has it, \
                 `model.device=cpu` for a training config)",
                if tch::utils::has_cuda() { "a CUDA build, but no GPU is visible" } else { "CPU-only" }
            ),
        }
    }
}

/// Precision of the frozen backbone weights. Log-softmax and losses are always computed in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum DType {
    #[default]
    F32,
    Bf16,
    F16,
}

impl DType {
    pub fn kind(self) -> Kind {
        match self {
            Self::F32 => Kind::Float,
            Self::Bf16 => Kind::BFloat16,
            Self::F16 => Kind::Half,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        })
    }
}

/// How a model's blocks are spread over devices (`model.device_map`, `--device-map`): `auto` fills the visible
/// GPUs in order, each taking blocks in proportion to its free memory (with one GPU or none everything stays on
/// `model.device`), or one device per block (`cpu`, `cuda`, `cuda:N`). The embeddings go with the first block, the
/// final norm and the LM head with the last; activations move between them, and each block's KV cache stays on
/// its device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MapSpec", into = "MapSpec")]
pub enum DeviceMap {
    Auto,
    Blocks(Vec<Device>),
}

/// A device map as YAML writes it: `auto`, or a list of devices.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum MapSpec {
    Word(String),
    List(Vec<String>),
}

impl TryFrom<MapSpec> for DeviceMap {
    type Error = String;

    fn try_from(spec: MapSpec) -> Result<Self, String> {
        match spec {
            MapSpec::Word(word) if word == "auto" => Ok(Self::Auto),
            MapSpec::Word(word) => word.parse(),
            MapSpec::List(names) => Ok(Self::Blocks(names.iter().map(|n| parse_device(n)).collect::<Result<_, _>>()?)),
        }
    }
}

impl From<DeviceMap> for MapSpec {
    fn from(map: DeviceMap) -> Self {
        match map {
            DeviceMap::Auto => MapSpec::Word("auto".into()),
            DeviceMap::Blocks(devices) => MapSpec::List(devices.into_iter().map(device_name).collect()),
        }
    }
}

/// `auto`, or devices separated by commas (`cuda:0,cuda:0,cuda:1`), as `--device-map` takes them.
impl std::str::FromStr for DeviceMap {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim() == "auto" {
            return Ok(Self::Auto);
        }
        Ok(Self::Blocks(text.split(',').map(|n| parse_device(n.trim())).collect::<Result<_, _>>()?))
    }
}

fn parse_device(name: &str) -> Result<Device, String> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        _ => name.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(Device::Cuda).ok_or_else(|| {
            format!("`{name}` is not a device: a device map is `auto` or devices (cpu, cuda, cuda:N), one per block")
        }),
    }
}

fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".into(),
    }
}

impl DeviceMap {
    /// The device of each of a model's `blocks`; `default` is `model.device`, resolved.
    pub fn resolve(&self, blocks: usize, default: Device) -> anyhow::Result<Vec<Device>> {
        let gpus = if tch::Cuda::is_available() { tch::Cuda::device_count() as usize } else { 0 };
        match self {
            Self::Auto if gpus <= 1 || default == Device::Cpu => Ok(vec![default; blocks]),
            Self::Auto => Ok(spread(blocks, &free_memory(gpus)).into_iter().map(Device::Cuda).collect()),
            Self::Blocks(devices) => {
                anyhow::ensure!(
                    devices.len() == blocks,
                    "model.device_map lists {} devices for the model's {blocks} blocks: give one per block, or auto",
                    devices.len()
                );
                if let Some(Device::Cuda(n)) = devices.iter().find(|d| matches!(d, Device::Cuda(n) if *n >= gpus)) {
                    anyhow::bail!("model.device_map names cuda:{n}, but {gpus} CUDA devices are visible");
                }
                Ok(devices.clone())
            }
        }
    }
}

/// Block `i` of `blocks` goes to the GPU whose share of the total free memory covers the block's middle.
fn spread(blocks: usize, free: &[f64]) -> Vec<usize> {
    let total: f64 = free.iter().sum();
    (0..blocks)
        .map(|i| {
            let at = (i as f64 + 0.5) / blocks as f64 * total;
            let mut sum = 0.0;
            free.iter()
                .position(|f| {
                    sum += f;
                    sum >= at
                })
                .unwrap_or(free.len() - 1)
        })
        .collect()
}

/// Free memory of each of `gpus` GPUs (MiB) as `nvidia-smi` reports it; equal shares when it cannot say.
fn free_memory(gpus: usize) -> Vec<f64> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=memory.free", "--format=csv,noheader,nounits"])
        .output();
    let free: Vec<f64> = match out {
        Ok(out) if out.status.success() => {
            String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
        }
        _ => Vec::new(),
    };
    if free.len() >= gpus && free[..gpus].iter().all(|f| *f > 0.0) {
        free[..gpus].to_vec()
    } else {
        vec![1.0; gpus]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_spread_in_proportion_to_free_memory() {
        assert_eq!(spread(4, &[1.0, 1.0]), [0, 0, 1, 1]);
        assert_eq!(spread(6, &[2.0, 1.0]), [0, 0, 0, 0, 1, 1]);
        assert_eq!(spread(3, &[1.0, 1.0, 1.0]), [0, 1, 2]);
    }

    #[test]
    fn device_maps_parse_from_flags_and_yaml() {
        assert_eq!("auto".parse::<DeviceMap>().unwrap(), DeviceMap::Auto);
        let two = DeviceMap::Blocks(vec![Device::Cpu, Device::Cuda(1)]);
        assert_eq!("cpu, cuda:1".parse::<DeviceMap>().unwrap(), two);
        assert_eq!(serde_yaml::from_str::<DeviceMap>("[cpu, 'cuda:1']").unwrap(), two);
        assert_eq!(serde_yaml::from_str::<DeviceMap>(&serde_yaml::to_string(&two).unwrap()).unwrap(), two);
        let err = "cpu,gpu0".parse::<DeviceMap>().unwrap_err();
        assert!(err.contains("`gpu0` is not a device"), "{err}");
    }
}
