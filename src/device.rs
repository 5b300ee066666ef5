//! Where tensors live and in which precision: the `cpu | cuda | auto` and `f32 | bf16 | f16` options
//! that every command and config accepts. Nothing else in the crate names a device or dtype directly.

use std::fmt;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

/// The device a user asks for. `Auto` takes the first CUDA GPU when libtorch was built with CUDA and one is
/// visible, and the CPU otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
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
                 (set LIBTORCH to a CUDA build of libtorch, or use --device cpu)",
                if tch::utils::has_cuda() { "a CUDA build, but no GPU is visible" } else { "CPU-only" }
            ),
        }
    }
}

/// Precision of the frozen backbone weights. Log-softmax and losses are always computed in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
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
