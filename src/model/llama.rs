//! The Llama family (Llama 2/3/3.x, Mistral, Qwen2) in tch, loading Hugging Face checkpoints by their own tensor
//! names: RMSNorm, rotary positions (default, linear, dynamic and llama3 scaling), grouped-query attention, SwiGLU,
//! Qwen2's q/k/v biases, sliding windows, tied or untied LM head. Frozen like GPT-2: weights never
//! require gradients, and positions come from the padding mask the same way.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use tch::{Device, Kind, Tensor};

use super::cache::{KvCache, LayerKv};
use super::deep::DeepKv;
use super::gemv::RowProduct;
use super::gguf;
use super::llama_config::{LlamaConfig, Rope};
use super::llama_row::{self, BlockWeights, Scratch, Shape, Token};
use super::mask::{attention_bias, position_ids};
use super::quant::{quantize_all, Quantize, Weight};
use super::weights::{staging, StateDict};
use crate::gguf::Gguf;

#[derive(Debug)]
struct Linear {
    /// `[out, in]`.
    weight: Weight,
    bias: Option<Tensor>,
}

impl Linear {
    fn load(sd: &mut StateDict, prefix: &str, bias: bool) -> Result<Self> {
        let weight = Weight::Dense(sd.take(&format!("{prefix}.weight"))?);
        let bias = bias.then(|| sd.take(&format!("{prefix}.bias"))).transpose()?;
        Ok(Self { weight, bias })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.weight.linear(x, self.bias.as_ref())
    }
}

/// RMSNorm as transformers computes it: in f32, scaled, cast back, times the weight.
#[derive(Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor) -> Tensor {
        let h = x.to_kind(Kind::Float);
        let variance = h.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        &self.weight * (h * (variance + self.eps).rsqrt()).to_kind(x.kind())
    }
}

#[derive(Debug)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    window: Option<i64>,
    layer: i64,
}

/// Rotates half the head dimensions: `[-x2, x1]`.
fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    Tensor::cat(&[-x.narrow(3, half, half), x.narrow(3, 0, half)], 3)
}

impl Attention {
    /// `x: [B, T, d]` → `[B, T - from, d]`; `cos`/`sin: [B, 1, T, head_dim]`.
    fn forward(
        &self,
        x: &Tensor,
        (cos, sin): (&Tensor, &Tensor),
        mask: Option<&Tensor>,
        cache: Option<&mut LayerKv>,
        from: i64,
        deep: Option<&DeepKv>,
    ) -> Tensor {
        let (b, t, _) = x.size3().expect("attention input is [B, T, d]");
        let split = |z: Tensor, heads: i64| z.view([b, t, heads, self.head_dim]).transpose(1, 2);
        let rope = |z: &Tensor| z * cos + rotate_half(z) * sin;
        let q = rope(&split(self.q.forward(x), self.heads)).narrow(2, from, t - from);
        let k = rope(&split(self.k.forward(x), self.kv_heads));
        let v = split(self.v.forward(x), self.kv_heads);
        // A deep prompt's keys are cache keys: given after the rotation, as PEFT's prefix is.
        let (k, v) = match deep {
            Some(deep) => {
                let flat = |z: &Tensor| z.transpose(1, 2).reshape([b, t, self.kv_heads * self.head_dim]);
                let (k, v) = deep.apply(self.layer, &flat(&k), &flat(&v));
                (split(k, self.kv_heads), split(v, self.kv_heads))
            }
            None => (k, v),
        };
        let (k, v) = match cache {
            Some(layer) => layer.append(k, v),
            None => (k, v),
        };
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let gqa = self.kv_heads != self.heads;
        let y = Tensor::scaled_dot_product_attention(&q, &k, &v, mask, 0.0, mask.is_none(), scale, gqa);
        self.o.forward(&y.transpose(1, 2).reshape([b, t - from, self.heads * self.head_dim]))
    }
}

#[derive(Debug)]
struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.down.forward(&(self.gate.forward(x).silu() * self.up.forward(x)))
    }
}

#[derive(Debug)]
struct Block {
    input_norm: RmsNorm,
    attn: Attention,
    post_norm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    /// The block's weights as memory for [`llama_row`]: `None` unless every one is a dense, contiguous f32 CPU
    /// tensor.
    fn row_weights(&self) -> Option<BlockWeights<'_>> {
        fn linear(l: &Linear) -> Option<llama_row::Linear<'_>> {
            let bias = match &l.bias {
                Some(b) => Some(floats(b)?),
                None => None,
            };
            Some(llama_row::Linear { weight: floats(l.weight.dense()?)?, bias })
        }
        let (a, m) = (&self.attn, &self.mlp);
        Some(BlockWeights {
            input_norm: floats(&self.input_norm.weight)?,
            post_norm: floats(&self.post_norm.weight)?,
            q: linear(&a.q)?,
            k: linear(&a.k)?,
            v: linear(&a.v)?,
            o: linear(&a.o)?,
            gate: linear(&m.gate)?,
            up: linear(&m.up)?,
            down: linear(&m.down)?,
        })
    }
}

/// A frozen weight's numbers, if it is a contiguous f32 tensor on the CPU.
fn floats(t: &Tensor) -> Option<&[f32]> {
    let fits = t.kind() == Kind::Float && t.device() == Device::Cpu && t.is_contiguous() && t.numel() > 0;
    // SAFETY: a contiguous f32 CPU tensor of `numel` numbers, not empty (so its pointer is real), borrowed for the
    // slice's life; the model's weights are frozen, so nothing writes them while it is read.
    fits.then(|| unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, t.numel()) })
}

/// The Llama family's transformer; one implementation behind `Model`.
#[derive(Debug)]
pub struct Llama {
    config: LlamaConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: RmsNorm,
    /// `None` when tied to the embeddings.
    lm_head: Option<Tensor>,
    rope: Rope,
    /// The inverse rotary frequencies on the device, for every rope but dynamic (whose depend on the call).
    fixed_inv_freq: Option<Tensor>,
    kind: Kind,
    device: Device,
}

impl Llama {
    /// Loads the weights of `config` from a Hugging Face model directory, in `kind` on `device`, or block `i` on
    /// `places[i]` when a device map gives them (the embeddings on `device`, the final norm and the head with the
    /// last block).
    pub(super) fn from_dir(
        dir: &Path,
        config: LlamaConfig,
        kind: Kind,
        device: Device,
        places: &[Device],
    ) -> Result<Self> {
        let sd = StateDict::load(dir, &config.layout(), kind, staging(device, places))?;
        Self::from_state_dict(sd, config, kind, device, places)
    }

    /// Loads the weights of `config` from a GGUF file (see [`super::gguf`]), placed as [`Llama::from_dir`] places
    /// them. Rotary factors in the file (Llama 3.1's scaling) divide the frequencies, as llama.cpp applies them.
    pub(super) fn from_gguf(
        g: &Gguf,
        config: LlamaConfig,
        kind: Kind,
        device: Device,
        places: &[Device],
    ) -> Result<Self> {
        let (tensors, factors) = gguf::tensors(g, &config)?;
        let staged = staging(device, places);
        let sd = StateDict::from_named(tensors, g.path().to_path_buf(), &config.layout(), kind, staged)?;
        let mut llama = Self::from_state_dict(sd, config, kind, device, places)?;
        if let Some(factors) = factors {
            let half = llama.config.head_dim() / 2;
            ensure!(
                factors.size() == [half],
                "{}: {} has shape {:?}, but heads of {} need {half} factors",
                g.path().display(),
                gguf::ROPE_FACTORS,
                factors.size(),
                half * 2
            );
            let inv = llama.fixed_inv_freq.as_ref().context("rotary factors with dynamic scaling")?;
            llama.fixed_inv_freq = Some(inv / factors.to_device(device));
        }
        Ok(llama)
    }

    fn from_state_dict(
        mut sd: StateDict,
        config: LlamaConfig,
        kind: Kind,
        device: Device,
        places: &[Device],
    ) -> Result<Self> {
        let eps = config.rms_norm_eps;
        let norm = |sd: &mut StateDict, name: &str| -> Result<RmsNorm> { Ok(RmsNorm { weight: sd.take(name)?, eps }) };
        let (qkv_bias, o_bias) = config.attention_biases();
        let mut blocks = Vec::new();
        for i in 0..config.num_hidden_layers {
            sd.place = places.get(i as usize).copied();
            let p = format!("model.layers.{i}");
            let a = format!("{p}.self_attn");
            let m = format!("{p}.mlp");
            blocks.push(Block {
                input_norm: norm(&mut sd, &format!("{p}.input_layernorm.weight"))?,
                attn: Attention {
                    q: Linear::load(&mut sd, &format!("{a}.q_proj"), qkv_bias)?,
                    k: Linear::load(&mut sd, &format!("{a}.k_proj"), qkv_bias)?,
                    v: Linear::load(&mut sd, &format!("{a}.v_proj"), qkv_bias)?,
                    o: Linear::load(&mut sd, &format!("{a}.o_proj"), o_bias)?,
                    heads: config.num_attention_heads,
                    kv_heads: config.kv_heads(),
                    head_dim: config.head_dim(),
                    window: config.window(i),
                    layer: i,
                },
                post_norm: norm(&mut sd, &format!("{p}.post_attention_layernorm.weight"))?,
                mlp: Mlp {
                    gate: Linear::load(&mut sd, &format!("{m}.gate_proj"), config.mlp_bias)?,
                    up: Linear::load(&mut sd, &format!("{m}.up_proj"), config.mlp_bias)?,
                    down: Linear::load(&mut sd, &format!("{m}.down_proj"), config.mlp_bias)?,
                },
            });
        }
        sd.place = places.last().copied();
        let final_norm = norm(&mut sd, "model.norm.weight")?;
        let lm_head = if config.tie_word_embeddings { None } else { Some(sd.take("lm_head.weight")?) };
        sd.place = places.first().copied();
        let mut llama = Self {
            embed: sd.take("model.embed_tokens.weight")?,
            norm: final_norm,
            lm_head,
            rope: config.rope()?,
            fixed_inv_freq: None,
            blocks,
            config,
            kind,
            device,
        };
        if !matches!(llama.rope, Rope::Dynamic { .. }) {
            llama.fixed_inv_freq = Some(llama.inv_freq(0).to_device(device));
        }
        Ok(llama)
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub(super) fn rope(&self) -> Rope {
        self.rope
    }

    /// The token embedding matrix `[vocab, d]`.
    pub(super) fn embeddings(&self) -> &Tensor {
        &self.embed
    }

    /// Stores every block's linear layers as `to` says (embeddings, norms and the head stay as loaded).
    pub(super) fn quantize_blocks(&mut self, to: Quantize) -> Result<()> {
        let mut weights = Vec::new();
        for b in &mut self.blocks {
            let (a, m) = (&mut b.attn, &mut b.mlp);
            for layer in [&mut a.q, &mut a.k, &mut a.v, &mut a.o, &mut m.gate, &mut m.up, &mut m.down] {
                weights.push(&mut layer.weight);
            }
        }
        quantize_all(weights, to)
    }

    /// The LM head `[vocab, d]` (the embeddings when tied).
    pub(super) fn head(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Inverse rotary frequencies `[head_dim / 2]` (f32) for a call whose largest position is `max_position`, as
    /// transformers computes them (dynamic scaling grows the base once the sequence passes the window).
    fn inv_freq(&self, max_position: i64) -> Tensor {
        let dim = self.config.head_dim();
        let exponents =
            Tensor::arange_start_step(0, dim, 2, (Kind::Int64, Device::Cpu)).to_kind(Kind::Float) / dim as f64;
        let mut base = self.config.rope_theta;
        if let Rope::Dynamic { factor } = self.rope {
            let max = self.config.max_position_embeddings as f64;
            let seq_len = ((max_position + 1) as f64).max(max);
            base *= (factor * seq_len / max - (factor - 1.0)).powf(dim as f64 / (dim as f64 - 2.0));
        }
        let inv = (Tensor::from(base).to_kind(Kind::Float).pow(&exponents)).reciprocal();
        match self.rope {
            Rope::Linear { factor } => inv / factor,
            Rope::Llama3 { factor, low, high, original } => {
                let (low_wavelen, high_wavelen) = (original as f64 / low, original as f64 / high);
                let wavelen = inv.reciprocal() * (2.0 * std::f64::consts::PI);
                let scaled = inv.where_self(&wavelen.le(low_wavelen), &(&inv / factor));
                let smooth = (wavelen.reciprocal() * original as f64 - low) / (high - low);
                let smoothed: Tensor = (smooth.ones_like() - &smooth) * &scaled / factor + &smooth * &scaled;
                let medium = wavelen.ge(high_wavelen).logical_and(&wavelen.le(low_wavelen));
                smoothed.where_self(&medium, &scaled)
            }
            Rope::Default | Rope::Dynamic { .. } => inv,
        }
    }

    /// `cos`, `sin`: `[B, 1, T, head_dim]` in the model's dtype, for position ids `[B, T]`.
    fn rotary(&self, positions: &Tensor) -> (Tensor, Tensor) {
        let inv = match &self.fixed_inv_freq {
            Some(inv) => inv.shallow_clone(),
            None => {
                let max_position = if positions.numel() > 0 { positions.max().int64_value(&[]) } else { 0 };
                self.inv_freq(max_position).to_device(self.device)
            }
        };
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * inv.view([1, 1, -1]);
        let emb = Tensor::cat(&[&freqs, &freqs], -1);
        (emb.cos().to_kind(self.kind).unsqueeze(1), emb.sin().to_kind(self.kind).unsqueeze(1))
    }

    /// The next token of one row through every block in [`llama_row`], where it applies: f32 weights, all dense,
    /// on the CPU (one with AVX2 and FMA), rotary frequencies that do not depend on the call, and a cache that holds
    /// the row's earlier positions. `None` (nothing changed) sends the caller to the tensor path.
    fn forward_row(&self, embeds: &Tensor, mask: Option<&Tensor>, cache: &mut KvCache) -> Result<Option<Tensor>> {
        let applies = self.kind == Kind::Float && self.device == Device::Cpu && cache.one_row_ready();
        let (Some(product), Some(inv_freq)) = (RowProduct::detect(), self.fixed_inv_freq.as_ref().filter(|_| applies))
        else {
            return Ok(None);
        };
        let Some(weights) = self.blocks.iter().map(Block::row_weights).collect::<Option<Vec<_>>>() else {
            return Ok(None);
        };
        let Some(final_norm) = floats(&self.norm.weight) else { return Ok(None) };
        let past = cache.len() as usize;
        // Its position: the real tokens before it (the mask is [1, past + 1], checked by the caller; positions are
        // counted as `position_ids` counts them).
        let marks: Vec<i64> = match mask {
            Some(m) => Vec::try_from(m.reshape([-1]).to_kind(Kind::Int64))?,
            None => vec![1; past + 1],
        };
        let position = (marks.iter().sum::<i64>() - 1).max(0);
        let real: Vec<bool> = marks.iter().map(|&v| v != 0).collect();
        let inv: Vec<f32> = Vec::try_from(inv_freq.reshape([-1]).to_kind(Kind::Float))?;
        let angles: Vec<f32> = inv.iter().chain(&inv).map(|f| position as f32 * f).collect();
        let (cos, sin): (Vec<f32>, Vec<f32>) = angles.iter().map(|a| (a.cos(), a.sin())).unzip();
        let mut x: Vec<f32> = Vec::try_from(embeds.reshape([-1]).to_kind(Kind::Float))?;
        let mut scratch = Scratch::default();
        let token = Token { cos: &cos, sin: &sin, real: &real[..past] };
        for (i, (block, w)) in self.blocks.iter().zip(&weights).enumerate() {
            let kv = cache.layer_mut(i).next_position().context("the cache was checked to take one more row")?;
            let shape = Shape {
                heads: block.attn.heads as usize,
                kv_heads: block.attn.kv_heads as usize,
                head_dim: block.attn.head_dim as usize,
                eps: block.input_norm.eps as f32,
                window: block.attn.window.map(|w| w.max(0) as usize),
            };
            llama_row::block(&mut x, w, shape, kv, &token, product, &mut scratch);
        }
        let mut out = vec![0.0; x.len()];
        llama_row::rms_norm(&x, final_norm, self.norm.eps as f32, &mut out);
        Ok(Some(Tensor::from_slice(&out).view([1, 1, -1])))
    }

    /// The final hidden states `[B, T - from, d]` of positions `from..` of `embeds: [B, T, d]` (in the model's
    /// dtype, on its device), as `Model::forward_from` describes.
    pub(super) fn forward_from(
        &self,
        embeds: Tensor,
        deep: Option<&DeepKv>,
        mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
        from: i64,
    ) -> Result<Tensor> {
        let (b, t, _) = embeds.size3()?;
        if let (1, 1, 0, None, Some(c)) = (b, t, from, deep, cache.as_deref_mut()) {
            if let Some(hidden) = self.forward_row(&embeds, mask, c)? {
                return Ok(hidden);
            }
        }
        let past = cache.as_ref().map_or(0, |c| c.len());
        let positions = position_ids(mask, b, past, t, self.device);
        let (cos, sin) = self.rotary(&positions);
        // Plain causal attention needs no mask tensor; padding, a cache offset, queries from a later position or a
        // sliding window do. One mask per distinct window.
        let needs_mask = mask.is_some() || past > 0 || from > 0;
        let mut masks: Vec<(Option<i64>, Option<Tensor>)> = Vec::new();
        for window in self.blocks.iter().map(|b| b.attn.window) {
            if !masks.iter().any(|(w, _)| *w == window) {
                let m = (needs_mask || window.is_some()).then(|| attention_bias(mask, b, past, t, window, self.device));
                masks.push((window, m));
            }
        }
        let mut x = embeds;
        let last = self.blocks.len().saturating_sub(1);
        for (i, block) in self.blocks.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| c.layer_mut(i));
            let from = if i == last { from } else { 0 };
            let full = &masks.iter().find(|(w, _)| *w == block.attn.window).expect("made above").1;
            // Under a device map the activations follow the blocks (a no-op on one device).
            let device = block.input_norm.weight.device();
            let layer_mask = full.as_ref().map(|m| m.narrow(2, from, t - from).to_device(device));
            x = x.to_device(device);
            let attended = block.attn.forward(
                &block.input_norm.forward(&x),
                (&cos.to_device(device), &sin.to_device(device)),
                layer_mask.as_ref(),
                layer_cache,
                from,
                deep,
            );
            let h = x.narrow(1, from, t - from) + attended;
            x = &h + block.mlp.forward(&block.post_norm.forward(&h));
        }
        if self.blocks.is_empty() {
            x = x.narrow(1, from, t - from);
        }
        Ok(self.norm.forward(&x.to_device(self.norm.weight.device())).to_device(self.device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(name: &str) -> Llama {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama-family").join(name);
        let config = LlamaConfig::from_file(&dir.join("config.json")).unwrap();
        Llama::from_dir(&dir, config, Kind::Float, Device::Cpu, &[]).unwrap()
    }

    /// The last of `n` positions, computed by the tensor path over the whole row at once and by the row path as a
    /// cached step after the others, with `padding` masked positions before the text.
    fn both_ways(llama: &Llama, n: i64, padding: i64) -> (Tensor, Tensor) {
        let d = llama.embed.size()[1];
        let embeds = crate::rng::unseeded(|| Tensor::randn([1, n, d], (Kind::Float, Device::Cpu)));
        let mask = Tensor::cat(
            &[
                Tensor::zeros([1, padding], (Kind::Int64, Device::Cpu)),
                Tensor::ones([1, n - padding], (Kind::Int64, Device::Cpu)),
            ],
            1,
        );
        let mask = (padding > 0).then_some(mask);
        let whole = llama.forward_from(embeds.shallow_clone(), None, mask.as_ref(), None, n - 1).unwrap();
        let mut cache = KvCache::new(llama.blocks.len());
        let before = mask.as_ref().map(|m| m.narrow(1, 0, n - 1));
        let _ = llama.forward_from(embeds.narrow(1, 0, n - 1), None, before.as_ref(), Some(&mut cache), 0).unwrap();
        let step = llama.forward_row(&embeds.narrow(1, n - 1, 1), mask.as_ref(), &mut cache).unwrap();
        (whole, step.expect("the row path applies: one f32 row on the CPU, dense weights, a filled cache"))
    }

    #[test]
    fn a_cached_step_of_one_row_is_the_tensor_paths_last_position() {
        if RowProduct::detect().is_none() {
            return; // the row path needs AVX2 and FMA; the tensor path serves such CPUs
        }
        // Grouped-query heads (llama), one key head and a window of 6 (mistral), biases and a window on some layers
        // (qwen2); rows longer than the window, with and without left padding.
        for name in ["tiny-llama", "tiny-mistral", "tiny-qwen2"] {
            let llama = tiny(name);
            for (n, padding) in [(2, 0), (9, 0), (11, 3)] {
                let (whole, step) = both_ways(&llama, n, padding);
                let diff = (whole - step).abs().max().double_value(&[]);
                assert!(diff < 1e-5, "{name}, {n} positions, {padding} padded: {diff}");
            }
        }
        // Dynamic rotary scaling depends on the call: the tensor path keeps it.
        let dynamic = tiny("tiny-llama-dynamic");
        let mut cache = KvCache::new(dynamic.blocks.len());
        let embeds = Tensor::zeros([1, 2, dynamic.embed.size()[1]], (Kind::Float, Device::Cpu));
        let _ = dynamic.forward_from(embeds.narrow(1, 0, 1), None, None, Some(&mut cache), 0).unwrap();
        assert!(dynamic.forward_row(&embeds.narrow(1, 1, 1), None, &mut cache).unwrap().is_none());
    }
}
