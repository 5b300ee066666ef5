//! ggml's tensor types as GGUF stores them, and their dequantization to f32, block by block, as llama.cpp's
//! `dequantize_row_*` computes it (the same products in the same order, so the values are equal to the bit).

use half::{bf16, f16};

/// A tensor type this reader dequantizes: plain floats, and the block quantizations llama.cpp's converters write
/// most (`Q4_0` … `Q8_0`, and the K-quants `Q4_K`, `Q5_K`, `Q6_K` of 256 values a block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4_K,
    Q5_K,
    Q6_K,
}

/// Every type this reader knows, for messages.
pub const READ: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// ggml's names of the types it has and this reader does not, by id, so a refusal names what the file holds.
fn other_name(id: u32) -> Option<&'static str> {
    Some(match id {
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

impl GgmlType {
    /// The type with ggml's id `id`, or an error that names it (and the types that are read).
    pub fn from_id(id: u32) -> Result<Self, String> {
        Ok(match id {
            0 => Self::F32,
            1 => Self::F16,
            30 => Self::BF16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            12 => Self::Q4_K,
            13 => Self::Q5_K,
            14 => Self::Q6_K,
            _ => {
                let known: Vec<&str> = READ.iter().map(|t| t.name()).collect();
                let name = other_name(id).map_or_else(|| format!("unknown type {id}"), |n| format!("type {n} ({id})"));
                return Err(format!("{name}, which ruprompts does not read (it reads {})", known.join(", ")));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q4_K => "Q4_K",
            Self::Q5_K => "Q5_K",
            Self::Q6_K => "Q6_K",
        }
    }

    /// Values a block holds, and its size in bytes.
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q8_0 => (32, 34),
            Self::Q4_K => (256, 144),
            Self::Q5_K => (256, 176),
            Self::Q6_K => (256, 210),
        }
    }
}

fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Dequantizes `bytes` (whole blocks of `ty`) into `out`, which holds exactly their values.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    let (values, size) = ty.block();
    debug_assert_eq!(bytes.len() / size * values, out.len());
    for (b, y) in bytes.chunks_exact(size).zip(out.chunks_exact_mut(values)) {
        match ty {
            GgmlType::F32 => y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            GgmlType::F16 => y[0] = half_at(b, 0),
            GgmlType::BF16 => y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            GgmlType::Q4_0 => q4(half_at(b, 0), None, &b[2..18], y),
            GgmlType::Q4_1 => q4(half_at(b, 0), Some(half_at(b, 2)), &b[4..20], y),
            GgmlType::Q5_0 => q5(half_at(b, 0), None, &b[2..6], &b[6..22], y),
            GgmlType::Q5_1 => q5(half_at(b, 0), Some(half_at(b, 2)), &b[4..8], &b[8..24], y),
            GgmlType::Q8_0 => {
                let d = half_at(b, 0);
                for (y, &q) in y.iter_mut().zip(&b[2..34]) {
                    *y = f32::from(q as i8) * d;
                }
            }
            GgmlType::Q4_K => q4_k(b, y),
            GgmlType::Q5_K => q5_k(b, y),
            GgmlType::Q6_K => q6_k(b, y),
        }
    }
}

/// `Q4_0` (`m` none: values `(q − 8)·d`) and `Q4_1` (`q·d + m`); the low nibbles are the first 16 values.
fn q4(d: f32, m: Option<f32>, qs: &[u8], y: &mut [f32]) {
    for (j, &q) in qs.iter().enumerate() {
        let (lo, hi) = (q & 0x0F, q >> 4);
        (y[j], y[j + 16]) = match m {
            None => ((i32::from(lo) - 8) as f32 * d, (i32::from(hi) - 8) as f32 * d),
            Some(m) => (f32::from(lo) * d + m, f32::from(hi) * d + m),
        };
    }
}

/// `Q5_0` and `Q5_1`: `Q4`'s nibbles with a fifth bit from `qh` (bit j for value j, bit j + 16 for value j + 16).
fn q5(d: f32, m: Option<f32>, qh: &[u8], qs: &[u8], y: &mut [f32]) {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    for (j, &q) in qs.iter().enumerate() {
        let lo = u32::from(q & 0x0F) | (((qh >> j) << 4) & 0x10);
        let hi = u32::from(q >> 4) | ((qh >> (j + 12)) & 0x10);
        (y[j], y[j + 16]) = match m {
            None => ((lo as i32 - 16) as f32 * d, (hi as i32 - 16) as f32 * d),
            Some(m) => (lo as f32 * d + m, hi as f32 * d + m),
        };
    }
}

/// The 6-bit scale and min of sub-block `j` of a K-quant's 12 packed bytes (ggml's `get_scale_min_k4`).
fn scale_min(j: usize, s: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    };
    (f32::from(sc), f32::from(m))
}

/// `Q4_K`: 8 sub-blocks of 32 with their own scale and min; values `d·sc·q − dmin·m`.
fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin, scales, qs) = (half_at(b, 0), half_at(b, 2), &b[4..16], &b[16..144]);
    for (chunk, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let ((sc1, m1), (sc2, m2)) = (scale_min(2 * chunk, scales), scale_min(2 * chunk + 1, scales));
        let (d1, m1, d2, m2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
        for (l, &q) in q.iter().enumerate() {
            y[l] = d1 * f32::from(q & 0x0F) - m1;
            y[l + 32] = d2 * f32::from(q >> 4) - m2;
        }
    }
}

/// `Q5_K`: `Q4_K` with a fifth bit per value from `qh` (two bits of each byte per 64 values).
fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin, scales, qh, qs) = (half_at(b, 0), half_at(b, 2), &b[4..16], &b[16..48], &b[48..176]);
    for (chunk, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let ((sc1, m1), (sc2, m2)) = (scale_min(2 * chunk, scales), scale_min(2 * chunk + 1, scales));
        let (d1, m1, d2, m2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        for (l, &q) in q.iter().enumerate() {
            let high = |bit: u8| if qh[l] & bit != 0 { 16.0 } else { 0.0 };
            y[l] = d1 * (f32::from(q & 0x0F) + high(u1)) - m1;
            y[l + 32] = d2 * (f32::from(q >> 4) + high(u2)) - m2;
        }
    }
}

/// `Q6_K`: 16 sub-blocks of 16 with signed 8-bit scales; values `d·sc·(q − 32)` from 4 low and 2 high bits.
fn q6_k(b: &[u8], y: &mut [f32]) {
    let (ql, qh, sc, d) = (&b[0..128], &b[128..192], &b[192..208], half_at(b, 208));
    for half in 0..2 {
        let (ql, qh, sc, y) = (&ql[64 * half..], &qh[32 * half..], &sc[8 * half..], &mut y[128 * half..]);
        for l in 0..32 {
            let is = l / 16;
            let q = |low: u8, shift: u32| f32::from(((low | (((qh[l] >> shift) & 3) << 4)) as i8) - 32);
            let scale = |k: usize| d * f32::from(sc[is + k] as i8);
            y[l] = scale(0) * q(ql[l] & 0x0F, 0);
            y[l + 32] = scale(2) * q(ql[l + 32] & 0x0F, 2);
            y[l + 64] = scale(4) * q(ql[l] >> 4, 4);
            y[l + 96] = scale(6) * q(ql[l + 32] >> 4, 6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_block(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
        let mut out = vec![0.0; ty.block().0];
        dequantize(ty, bytes, &mut out);
        out
    }

    #[test]
    fn q8_0_is_scale_times_code() {
        let mut b = f16::from_f32(0.5).to_le_bytes().to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let y = one_block(GgmlType::Q8_0, &b);
        assert_eq!(y[0], -8.0);
        assert_eq!(y[31], 7.5);
    }

    #[test]
    fn q4_1_puts_low_nibbles_first() {
        let mut b = [f16::from_f32(2.0).to_le_bytes(), f16::from_f32(-1.0).to_le_bytes()].concat();
        b.extend([0x31u8; 16]);
        let y = one_block(GgmlType::Q4_1, &b);
        assert_eq!((y[0], y[16]), (1.0 * 2.0 - 1.0, 3.0 * 2.0 - 1.0));
    }

    #[test]
    fn q5_0_takes_the_fifth_bit_from_qh() {
        let mut b = f16::from_f32(1.0).to_le_bytes().to_vec();
        // Bit 0 (value 0) and bit 16 (value 16) set.
        b.extend(0x0001_0001u32.to_le_bytes());
        b.extend([0u8; 16]);
        let y = one_block(GgmlType::Q5_0, &b);
        assert_eq!((y[0], y[1], y[16], y[17]), (0.0, -16.0, 0.0, -16.0));
    }

    #[test]
    fn k_quant_scales_unpack_as_ggml_does() {
        // Sub-block 5's scale takes its low bits from byte 9 and its high bits from byte 1.
        let mut s = [0u8; 12];
        s[9] = 0x2A;
        s[1] = 0b1100_0000;
        assert_eq!(scale_min(5, &s), (f32::from(0x0Au8 | (3 << 4)), 2.0));
        assert_eq!(scale_min(1, &s), (0.0, 0.0));
    }

    #[test]
    fn unknown_types_are_named() {
        assert!(GgmlType::from_id(10).unwrap_err().starts_with("type Q2_K (10)"));
        assert!(GgmlType::from_id(99).unwrap_err().contains("unknown type 99"));
    }
}
