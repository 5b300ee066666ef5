//! Weight-only int8 quantization of the frozen backbone's linear layers, for inference (scoring, generation,
//! serving): one scale per output row, multiplied by libtorch's `_weight_int8pack_mm`, which computes in bf16.
//! Decoding a row reads every weight once per token, so a quarter of f32's bytes is the speed-up on CPU.

use std::fmt;

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// How the frozen linear layers are stored (`model.quantize`, `--quantize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Quantize {
    /// As loaded (`--dtype`).
    #[default]
    None,
    /// int8 with one scale per output row; activations meet them in bf16.
    Int8,
}

impl fmt::Display for Quantize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Int8 => "int8",
        })
    }
}

/// Up to this many rows an int8 layer runs libtorch's int8 kernel (decoding: bound by reading the weights); more
/// rows run a dense GEMM on the weight dequantized for the call.
const INT8_KERNEL_ROWS: i64 = 16;

/// Rows quantized at a time (4096 × 768 f32 temporaries: 12 MB).
const QUANTIZE_ROWS: i64 = 4096;

/// A linear layer's `[out, in]` weight: dense, or int8 rows with their scales.
#[derive(Debug)]
pub(super) enum Weight {
    Dense(Tensor),
    Int8 { values: Tensor, scales: Tensor },
}

impl Weight {
    /// The int8 form of a dense `[out, in]` weight: each row scaled so its largest magnitude is 127. Rows are
    /// converted a block at a time, so a vocabulary-sized head needs no full-size f32 temporaries.
    pub fn int8(dense: &Tensor) -> Weight {
        let (mut values, mut scales) = (Vec::new(), Vec::new());
        for block in dense.split(QUANTIZE_ROWS, 0) {
            let block = block.to_kind(Kind::Float);
            let scale = block.abs().amax([1i64].as_slice(), false).clamp_min(1e-12) / 127.0;
            values.push((&block / scale.unsqueeze(1)).round().clamp(-127, 127).to_kind(Kind::Int8));
            scales.push(scale.to_kind(Kind::BFloat16));
        }
        Weight::Int8 { values: Tensor::cat(&values, 0).contiguous(), scales: Tensor::cat(&scales, 0) }
    }

    /// `x: [.., in]` times the weight's transpose, plus `bias`: `[.., out]` in `x`'s dtype.
    pub fn linear(&self, x: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let (values, scales) = match self {
            Weight::Dense(w) => return x.linear(w, bias),
            Weight::Int8 { values, scales } => (values, scales),
        };
        let mut shape = x.size();
        let rows = x.reshape([-1, *shape.last().expect("a linear layer's input has a width")]);
        // Many rows (scoring, a prompt's first pass) are arithmetic-bound, where libtorch's int8 kernel is slower
        // than a dense GEMM: the rows meet the weight dequantized for this call.
        let y = if rows.size()[0] > INT8_KERNEL_ROWS {
            let dense = values.to_kind(x.kind()) * scales.to_kind(x.kind()).unsqueeze(1);
            rows.linear(&dense, bias)
        } else {
            let y = rows.to_kind(Kind::BFloat16).internal_weight_int8pack_mm(values, scales).to_kind(x.kind());
            match bias {
                Some(b) => y + b,
                None => y,
            }
        };
        *shape.last_mut().unwrap() = y.size()[1];
        y.reshape(shape)
    }

    /// The dense weight, if the layer is not quantized.
    pub fn dense(&self) -> Option<&Tensor> {
        match self {
            Weight::Dense(w) => Some(w),
            Weight::Int8 { .. } => None,
        }
    }
}

/// Whether this libtorch multiplies int8 weights on `device`: refused with the reason before any weight changes.
pub(super) fn check_int8(device: Device) -> Result<()> {
    let probe = Weight::int8(&Tensor::ones([16, 32], (Kind::Float, device)));
    let Weight::Int8 { values, scales } = probe else { unreachable!("int8 gives int8") };
    Tensor::ones([1, 32], (Kind::BFloat16, device))
        .f_internal_weight_int8pack_mm(&values, &scales)
        .map(|_| ())
        .map_err(|e| anyhow!("int8 weights (--quantize int8) are not supported on {device:?} by this libtorch: {e}"))
}
