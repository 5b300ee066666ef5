//! One token of one row through a Llama-family block in f32 on the CPU, with no libtorch call between the weight
//! products. Decoding a batch of one runs some forty small tensor operations a layer besides the products, and on a
//! narrow, deep model (SmolLM2: 30 layers of width 576) their dispatch cost as much as reading the weights. The
//! arithmetic is the tensor path's (`llama.rs`), in another summation order.

use super::cache::RowKv;
use super::gemv::RowProduct;

/// A block's weights as memory: norms `[d]`, projections `[out, in]` row-major, optional biases `[out]`.
pub(super) struct BlockWeights<'a> {
    pub input_norm: &'a [f32],
    pub post_norm: &'a [f32],
    pub q: Linear<'a>,
    pub k: Linear<'a>,
    pub v: Linear<'a>,
    pub o: Linear<'a>,
    pub gate: Linear<'a>,
    pub up: Linear<'a>,
    pub down: Linear<'a>,
}

/// A projection's weight and bias.
pub(super) struct Linear<'a> {
    pub weight: &'a [f32],
    pub bias: Option<&'a [f32]>,
}

impl Linear<'_> {
    /// `out = weight · x + bias`.
    fn apply(&self, product: RowProduct, x: &[f32], out: &mut [f32]) {
        product.apply(self.weight, x, out);
        if let Some(b) = self.bias {
            out.iter_mut().zip(b).for_each(|(o, b)| *o += b);
        }
    }
}

/// The sizes of a block, and its sliding window (keys that many positions back or more are not seen).
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub eps: f32,
    pub window: Option<usize>,
}

/// Where the token is: `cos`, `sin` (`[head_dim]`, the rotation of its position) and, for each cached position
/// before it, whether that position holds a real token (not padding). Its own position it always sees.
pub(super) struct Token<'a> {
    pub cos: &'a [f32],
    pub sin: &'a [f32],
    pub real: &'a [bool],
}

/// Buffers one step reuses from block to block.
#[derive(Default)]
pub(super) struct Scratch {
    normed: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attended: Vec<f32>,
    scores: Vec<f32>,
    out: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
}

fn sized(buffer: &mut Vec<f32>, n: usize) -> &mut [f32] {
    buffer.resize(n, 0.0);
    buffer
}

/// RMSNorm as transformers computes it in f32: `weight · x / sqrt(mean(x²) + eps)`.
pub(super) fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let mean = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
        *o = w * (v * scale);
    }
}

/// Rotates each head of `x` (`[heads, head_dim]`) by its position: `x · cos + rotate_half(x) · sin`.
fn rope(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let (a, b) = (head[i], head[i + half]);
            head[i] = a * cos[i] - b * sin[i];
            head[i + half] = b * cos[i + half] + a * sin[i + half];
        }
    }
}

/// `x += block(x)` for the token at cache position `kv.len - 1`: its keys and values are written there, and it
/// attends to itself and to the earlier real positions within the block's window.
pub(super) fn block(
    x: &mut [f32],
    w: &BlockWeights,
    s: Shape,
    kv: RowKv,
    token: &Token,
    product: RowProduct,
    scratch: &mut Scratch,
) {
    let d = x.len();
    let (hd, kv_width) = (s.head_dim, s.kv_heads * s.head_dim);
    let normed = sized(&mut scratch.normed, d);
    rms_norm(x, w.input_norm, s.eps, normed);
    let q = sized(&mut scratch.q, s.heads * hd);
    w.q.apply(product, normed, q);
    let k = sized(&mut scratch.k, kv_width);
    w.k.apply(product, normed, k);
    let v = sized(&mut scratch.v, kv_width);
    w.v.apply(product, normed, v);
    rope(q, hd, token.cos, token.sin);
    rope(k, hd, token.cos, token.sin);
    let at = kv.len - 1;
    for h in 0..s.kv_heads {
        let start = h * kv.head_stride + at * kv.pos_stride;
        kv.k[start..start + hd].copy_from_slice(&k[h * hd..(h + 1) * hd]);
        kv.v[start..start + hd].copy_from_slice(&v[h * hd..(h + 1) * hd]);
    }
    let attended = sized(&mut scratch.attended, s.heads * hd);
    let scores = sized(&mut scratch.scores, kv.len);
    attend(q, &kv, s, token.real, scores, attended);
    let out = sized(&mut scratch.out, d);
    w.o.apply(product, attended, out);
    x.iter_mut().zip(out.iter()).for_each(|(x, o)| *x += o);

    rms_norm(x, w.post_norm, s.eps, normed);
    let ffn = w.up.weight.len() / d;
    let gate = sized(&mut scratch.gate, ffn);
    w.gate.apply(product, normed, gate);
    let up = sized(&mut scratch.up, ffn);
    w.up.apply(product, normed, up);
    for (g, u) in gate.iter_mut().zip(up.iter()) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
    w.down.apply(product, gate, out);
    x.iter_mut().zip(out.iter()).for_each(|(x, o)| *x += o);
}

/// Scaled dot-product attention of each query head over the cached keys and values of its key head (grouped-query:
/// query heads `j·n .. (j+1)·n` share key head `j`): the newest position always, earlier ones when `real` and
/// within the window (transformers' rule: key index > query index − window).
fn attend(q: &[f32], kv: &RowKv, s: Shape, real: &[bool], scores: &mut [f32], out: &mut [f32]) {
    let hd = s.head_dim;
    let group = s.heads / s.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let newest = kv.len - 1;
    for h in 0..s.heads {
        let base = (h / group) * kv.head_stride;
        let query = &q[h * hd..(h + 1) * hd];
        let mut max = f32::NEG_INFINITY;
        for (p, score) in scores.iter_mut().enumerate() {
            let seen = real.get(p).copied().unwrap_or(false) && s.window.is_none_or(|w| p + w > newest);
            *score = if p == newest || seen {
                let key = &kv.k[base + p * kv.pos_stride..][..hd];
                query.iter().zip(key).map(|(a, b)| a * b).sum::<f32>() * scale
            } else {
                f32::NEG_INFINITY
            };
            max = max.max(*score);
        }
        let mut total = 0.0;
        for score in scores.iter_mut() {
            *score = (*score - max).exp();
            total += *score;
        }
        let head = &mut out[h * hd..(h + 1) * hd];
        head.fill(0.0);
        for (p, score) in scores.iter().enumerate().filter(|(_, s)| **s > 0.0) {
            let weight = score / total;
            let value = &kv.v[base + p * kv.pos_stride..][..hd];
            head.iter_mut().zip(value).for_each(|(o, v)| *o += weight * v);
        }
    }
}
