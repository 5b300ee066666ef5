//! Positions and attention masks from a padding mask: shared by every architecture, so left padding, caches and
//! joining rows behave alike everywhere.

use tch::{Device, Kind, Tensor};

/// Position ids `[B, T]` for the `T` new tokens: a token's position is the number of real tokens before it in
/// its row, so padding (on the left of a batch, or between a shared prefix and the rest of a row) shifts nothing;
/// padding before the first real token gets position 0. Without a mask, `past..past+T`.
pub(super) fn position_ids(mask: Option<&Tensor>, b: i64, past: i64, t: i64, device: Device) -> Tensor {
    match mask {
        None => Tensor::arange_start(past, past + t, (Kind::Int64, device)).unsqueeze(0).expand([b, t], false),
        Some(m) => (m.to_kind(Kind::Int64).cumsum(1, Kind::Int64) - 1).narrow(1, past, t).clamp_min(0),
    }
}

/// Bool attention mask `[B, 1, T, past+T]`: causal, blind to padded keys, and with a sliding `window` blind to keys
/// `window` or more positions back (Mistral's and transformers' rule: key index > query index − window). Every
/// position may always see itself, so no row is fully masked (which would turn padded rows into NaN and leak
/// through the values).
pub(super) fn attention_bias(
    mask: Option<&Tensor>,
    b: i64,
    past: i64,
    t: i64,
    window: Option<i64>,
    device: Device,
) -> Tensor {
    let s = past + t;
    let q = Tensor::arange_start(past, s, (Kind::Int64, device)).unsqueeze(1);
    let k = Tensor::arange(s, (Kind::Int64, device)).unsqueeze(0);
    let mut causal = k.le_tensor(&q);
    if let Some(w) = window {
        causal = causal.logical_and(&k.gt_tensor(&(&q - w)));
    }
    let allowed = match mask {
        Some(m) => causal.unsqueeze(0).logical_and(&m.ne(0).unsqueeze(1)),
        None => causal.unsqueeze(0).expand([b, t, s], false),
    };
    allowed.logical_or(&k.eq_tensor(&q).unsqueeze(0)).unsqueeze(1)
}
