//! Weight-only quantization of the frozen backbone's linear layers, for inference (scoring, generation, serving):
//! int8 with one scale per output row (libtorch's `_weight_int8pack_mm`), or int4 with a scale and an offset per
//! group of 32 inputs (libtorch's `_weight_int4pack_mm_for_cpu`); both compute in bf16. Decoding a row reads every
//! weight once per token, so fewer bytes per weight is the speed-up on CPU.

use std::fmt;

use anyhow::{anyhow, ensure, Result};

use super::gemv;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// How the frozen linear layers are stored (`model.quantize`, `--quantize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Quantize {
    /// As loaded (`--dtype`).
    #[default]
    None,
    /// int8 with one scale per output row; activations meet them in bf16.
    Int8,
    /// int4 with a scale and an offset per group of 32 inputs of a row; activations meet them in bf16 (CPU).
    Int4,
}

impl fmt::Display for Quantize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Int8 => "int8",
            Self::Int4 => "int4",
        })
    }
}

/// Up to this many rows an int8 layer runs libtorch's int8 kernel (decoding: bound by reading the weights); more
/// rows run a dense GEMM on the weight dequantized for the call.
const INT8_KERNEL_ROWS: i64 = 16;

/// Rows quantized at a time (4096 × 768 f32 temporaries: 12 MB); a multiple of int4's row blocks.
const QUANTIZE_ROWS: i64 = 4096;

/// Inputs that share an int4 scale and offset.
const INT4_GROUP: i64 = 32;

/// libtorch packs int4 rows in blocks of 16.
const INT4_ROWS: i64 = 16;

/// A linear layer's `[out, in]` weight: dense, int8 rows with their scales, or int4 groups.
#[derive(Debug)]
pub(super) enum Weight {
    Dense(Tensor),
    Int8 {
        values: Tensor,
        scales: Tensor,
    },
    /// libtorch's CPU packing of `[out, in]` 4-bit values (rows padded with zeros to a multiple of 16), with
    /// `[in / 32, rows, 2]` bf16 scales and offsets: a weight is `(q − 8) · scale + offset`. `out` is the real
    /// number of rows.
    Int4 {
        packed: Tensor,
        scales_offsets: Tensor,
        out: i64,
    },
}

impl Weight {
    /// `dense` stored as `to` says.
    pub fn quantized(dense: &Tensor, to: Quantize) -> Result<Weight> {
        match to {
            Quantize::None => Ok(Weight::Dense(dense.shallow_clone())),
            Quantize::Int8 => Ok(Weight::int8(dense)),
            Quantize::Int4 => Weight::int4(dense),
        }
    }

    /// Where the weight lives.
    pub fn device(&self) -> Device {
        match self {
            Weight::Dense(w) => w.device(),
            Weight::Int8 { values, .. } => values.device(),
            Weight::Int4 { packed, .. } => packed.device(),
        }
    }

    /// How the weight is stored.
    pub fn form(&self) -> Quantize {
        match self {
            Weight::Dense(_) => Quantize::None,
            Weight::Int8 { .. } => Quantize::Int8,
            Weight::Int4 { .. } => Quantize::Int4,
        }
    }

    /// The int4 form of a dense `[out, in]` weight: each group of 32 inputs of a row mapped onto 0..15 between its
    /// smallest and largest value (the offset is the value at 8), a block of rows at a time.
    fn int4(dense: &Tensor) -> Result<Weight> {
        let (out, width) = dense.size2()?;
        ensure!(
            width % INT4_GROUP == 0,
            "int4 weights need layer widths divisible by {INT4_GROUP}, and this model has a layer {width} wide: use \
             --quantize int8"
        );
        let (mut packed, mut scales_offsets) = (Vec::new(), Vec::new());
        for block in dense.split(QUANTIZE_ROWS, 0) {
            let rows = block.size()[0];
            let padded = rows + (INT4_ROWS - rows % INT4_ROWS) % INT4_ROWS;
            let block = block.to_kind(Kind::Float).constant_pad_nd([0, 0, 0, padded - rows]);
            let groups = block.view([padded, width / INT4_GROUP, INT4_GROUP]);
            let low = groups.amin([2i64].as_slice(), true);
            let scale = (groups.amax([2i64].as_slice(), true) - &low).clamp_min(1e-6) / 15.0;
            let q = ((&groups - &low) / &scale).round().clamp(0, 15).to_kind(Kind::Int).view([padded, width]);
            packed.push(q.internal_convert_weight_to_int4pack_for_cpu(2));
            let offset = &low + &scale * 8.0;
            scales_offsets.push(Tensor::cat(&[scale, offset], 2).to_kind(Kind::BFloat16));
        }
        let scales_offsets = Tensor::cat(&scales_offsets, 0).transpose(0, 1).contiguous();
        Ok(Weight::Int4 { packed: Tensor::cat(&packed, 0), scales_offsets, out })
    }

    /// The int8 form of a dense `[out, in]` weight: each row scaled so its largest magnitude is 127. Rows are
    /// converted a block at a time, so a vocabulary-sized head needs no full-size f32 temporaries.
    fn int8(dense: &Tensor) -> Weight {
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
        if let Weight::Dense(w) = self {
            // One row (decoding a token): the bandwidth-bound product of our own where it applies.
            let one_row = x.size().iter().rev().skip(1).all(|&d| d == 1);
            if let Some(y) = one_row.then(|| gemv::row_times(w, &x.reshape([1, -1]), bias)).flatten() {
                return y.reshape(out_shape(x.size(), w.size()[0]));
            }
            return x.linear(w, bias);
        }
        let mut shape = x.size();
        let rows = x.reshape([-1, *shape.last().expect("a linear layer's input has a width")]);
        let y = match self {
            Weight::Dense(_) => unreachable!("returned above"),
            // Many rows (scoring, a prompt's first pass) are arithmetic-bound, where libtorch's int8 kernel is
            // slower than a dense GEMM: the rows meet the weight dequantized for this call.
            Weight::Int8 { values, scales } if rows.size()[0] > INT8_KERNEL_ROWS => {
                let dense = values.to_kind(x.kind()) * scales.to_kind(x.kind()).unsqueeze(1);
                return rows.linear(&dense, bias).reshape(out_shape(shape, dense.size()[0]));
            }
            Weight::Int8 { values, scales } => rows.to_kind(Kind::BFloat16).internal_weight_int8pack_mm(values, scales),
            // libtorch keeps no unpacking of its int4 layout, so every row count runs the int4 kernel.
            Weight::Int4 { packed, scales_offsets, out } => rows
                .to_kind(Kind::BFloat16)
                .internal_weight_int4pack_mm_for_cpu(packed, INT4_GROUP, scales_offsets)
                .narrow(1, 0, *out),
        };
        let y = y.to_kind(x.kind());
        let y = match bias {
            Some(b) => y + b,
            None => y,
        };
        *shape.last_mut().unwrap() = y.size()[1];
        y.reshape(shape)
    }

    /// The dense weight, if the layer is not quantized.
    pub fn dense(&self) -> Option<&Tensor> {
        match self {
            Weight::Dense(w) => Some(w),
            Weight::Int8 { .. } | Weight::Int4 { .. } => None,
        }
    }
}

/// Stores every one of `weights` (dense) as `to` says, or none: a layer that cannot be (int4's widths) leaves
/// the model as it was.
pub(super) fn quantize_all(weights: Vec<&mut Weight>, to: Quantize) -> Result<()> {
    let done = weights
        .iter()
        .map(|w| Weight::quantized(w.dense().ok_or_else(|| anyhow!("the model is already quantized"))?, to))
        .collect::<Result<Vec<_>>>()?;
    for (w, q) in weights.into_iter().zip(done) {
        *w = q;
    }
    Ok(())
}

/// `shape` with its last dimension `width`.
fn out_shape(mut shape: Vec<i64>, width: i64) -> Vec<i64> {
    *shape.last_mut().expect("a linear layer's input has a width") = width;
    shape
}

/// Whether this libtorch multiplies `to`'s weights on `device`: refused with the reason before any weight
/// changes.
pub(super) fn check(to: Quantize, device: Device) -> Result<()> {
    let x = Tensor::ones([1, 32], (Kind::BFloat16, device));
    let probe = match to {
        Quantize::None => return Ok(()),
        Quantize::Int8 => Weight::int8(&Tensor::ones([16, 32], (Kind::Float, device))),
        // The packing itself is a CPU operation: on another device it fails here, before any layer is touched.
        Quantize::Int4 => match Weight::quantized(&Tensor::ones([16, 32], (Kind::Float, Device::Cpu)), to) {
            Ok(w) if device == Device::Cpu => w,
            _ => return Err(anyhow!("int4 weights (--quantize int4) run on the CPU only; use int8 on {device:?}")),
        },
    };
    let done = match &probe {
        Weight::Int8 { values, scales } => x.f_internal_weight_int8pack_mm(values, scales),
        Weight::Int4 { packed, scales_offsets, .. } => {
            x.f_internal_weight_int4pack_mm_for_cpu(packed, INT4_GROUP, scales_offsets)
        }
        Weight::Dense(_) => unreachable!("a quantized probe"),
    };
    done.map(|_| ())
        .map_err(|e| anyhow!("{to} weights (--quantize {to}) are not supported on {device:?} by this libtorch: {e}"))
}
