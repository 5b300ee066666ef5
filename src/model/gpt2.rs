//! GPT-2 (Radford et al., 2019, "Language Models are Unsupervised Multitask Learners") in tch, loading
//! Hugging Face checkpoints by their own tensor names. ruGPT-3 and mGPT share this architecture.
//!
//! Weights are plain tensors that never require gradients: the backbone is frozen by construction, while
//! gradients still flow through it to input embeddings (where soft prompts are injected).

use std::path::Path;

use anyhow::{ensure, Context, Result};
use tch::{Device, Kind, Tensor};

use super::cache::{KvCache, LayerKv};
use super::deep::DeepKv;
use super::gpt2_config::{Activation, Gpt2Config};
use super::mask::{attention_bias, position_ids};
use super::quant::{quantize_all, Quantize, Weight};
use super::weights::{staging, StateDict};

/// HF `Conv1D`: `y = x @ W + b`, its `W` (stored `[in, out]` in checkpoints) kept transposed, `[out, in]`.
#[derive(Debug)]
struct Conv1D {
    /// `[out, in]`, contiguous.
    weight: Weight,
    bias: Tensor,
}

/// Up to this many rows a CPU matmul runs faster as `W·xᵀ` (see [`Conv1D::forward`]).
const FEW_ROWS: i64 = 64;

impl Conv1D {
    fn load(sd: &mut StateDict, prefix: &str) -> Result<Self> {
        let weight = Weight::Dense(sd.take(&format!("{prefix}.weight"))?.tr().contiguous());
        Ok(Self { weight, bias: sd.take(&format!("{prefix}.bias"))? })
    }

    /// `[.., in] -> [.., out]` over the flattened rows. CPU BLAS runs a few rows (decoding steps) ~2× faster as
    /// `W·xᵀ` with `W` laid out `[out, in]` than as `x·W` (8 rows × 768×3072 on 2 cores: 1.6 vs 4.2 ms, libtorch
    /// 2.11); many rows go through `linear`, as fast as `x·W` there.
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut out_shape = x.size();
        let input_dim = *out_shape.last().expect("Conv1D input has at least one dimension");
        *out_shape.last_mut().unwrap() = self.bias.size()[0];
        let rows = x.reshape([-1, input_dim]);
        let y = match self.weight.dense() {
            // One row goes to `Weight::linear`'s bandwidth-bound product.
            Some(_) if rows.size()[0] == 1 => self.weight.linear(&rows, Some(&self.bias)),
            Some(w) if rows.device() == Device::Cpu && rows.size()[0] <= FEW_ROWS => {
                self.bias.unsqueeze(1).addmm(w, &rows.tr()).tr()
            }
            _ => self.weight.linear(&rows, Some(&self.bias)),
        };
        y.reshape(out_shape)
    }
}

#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn load(sd: &mut StateDict, prefix: &str, eps: f64) -> Result<Self> {
        Ok(Self { weight: sd.take(&format!("{prefix}.weight"))?, bias: sd.take(&format!("{prefix}.bias"))?, eps })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let d = self.weight.size()[0];
        x.layer_norm([d], Some(&self.weight), Some(&self.bias), self.eps, true)
    }
}

#[derive(Debug)]
struct Attention {
    c_attn: Conv1D,
    c_proj: Conv1D,
    n_head: i64,
    scale: f64,
    layer: i64,
}

impl Attention {
    /// `x: [B, T, d]` → the attention output `[B, T - from, d]` of positions `from..` (keys and values cover
    /// all `T`). `mask: [B, 1, T - from, S]` bool (true = may attend), or `None` for plain causal attention
    /// (only with `from = 0`). `deep` replaces the keys and values of some positions. With a cache, this layer's
    /// keys/values are appended to it and attention covers all `S` positions.
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>, cache: Option<&mut LayerKv>, from: i64, deep: Deep) -> Tensor {
        let (b, t, d) = x.size3().expect("attention input is [B, T, d]");
        let heads = |z: &Tensor| z.view([b, t, self.n_head, d / self.n_head]).transpose(1, 2);
        let qkv = self.c_attn.forward(x).split(d, 2);
        let (k, v) = match deep {
            Some(deep) => deep.apply(self.layer, &qkv[1], &qkv[2]),
            None => (qkv[1].shallow_clone(), qkv[2].shallow_clone()),
        };
        let (q, k, v) = (heads(&qkv[0]).narrow(2, from, t - from), heads(&k), heads(&v));
        let (k, v) = match cache {
            Some(layer) => layer.append(k, v),
            None => (k, v),
        };
        let y = Tensor::scaled_dot_product_attention(&q, &k, &v, mask, 0.0, mask.is_none(), self.scale, false);
        self.c_proj.forward(&y.transpose(1, 2).reshape([b, t - from, d]))
    }
}

#[derive(Debug)]
struct Mlp {
    c_fc: Conv1D,
    c_proj: Conv1D,
    activation: Activation,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.c_proj.forward(&self.activation.apply(&self.c_fc.forward(x)))
    }
}

#[derive(Debug)]
struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    fn load(sd: &mut StateDict, i: i64, cfg: &Gpt2Config) -> Result<Self> {
        let p = format!("h.{i}");
        let eps = cfg.layer_norm_epsilon;
        let mut scale = if cfg.scale_attn_weights { 1.0 / (cfg.head_dim() as f64).sqrt() } else { 1.0 };
        if cfg.scale_attn_by_inverse_layer_idx {
            scale /= (i + 1) as f64;
        }
        Ok(Self {
            ln_1: LayerNorm::load(sd, &format!("{p}.ln_1"), eps)?,
            attn: Attention {
                c_attn: Conv1D::load(sd, &format!("{p}.attn.c_attn"))?,
                c_proj: Conv1D::load(sd, &format!("{p}.attn.c_proj"))?,
                n_head: cfg.n_head,
                scale,
                layer: i,
            },
            ln_2: LayerNorm::load(sd, &format!("{p}.ln_2"), eps)?,
            mlp: Mlp {
                c_fc: Conv1D::load(sd, &format!("{p}.mlp.c_fc"))?,
                c_proj: Conv1D::load(sd, &format!("{p}.mlp.c_proj"))?,
                activation: cfg.activation()?,
            },
        })
    }

    /// Output `[B, T - from, d]` of positions `from..` of `x: [B, T, d]` (see [`Attention::forward`]).
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>, cache: Option<&mut LayerKv>, from: i64, deep: Deep) -> Tensor {
        let attended = self.attn.forward(&self.ln_1.forward(x), mask, cache, from, deep);
        let x = x.narrow(1, from, x.size()[1] - from) + attended;
        &x + self.mlp.forward(&self.ln_2.forward(&x))
    }
}

/// Replaced keys and values, if any (see [`DeepKv`]).
type Deep<'a> = Option<&'a DeepKv>;
/// GPT-2's transformer: learned positions, LayerNorm, Conv1D layers; one implementation behind
/// `Model`.
#[derive(Debug)]
pub struct Gpt2 {
    config: Gpt2Config,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// `None` when tied to `wte` (the usual case).
    lm_head: Option<Tensor>,
    device: Device,
}

impl Gpt2 {
    /// Loads the weights of `config` from a Hugging Face model directory, in `kind` on `device`, or block `i` on
    /// `blocks[i]` when a device map gives them (the embeddings on `device`, the final norm and the head with the
    /// last block).
    pub(super) fn from_dir(
        dir: &Path,
        config: Gpt2Config,
        kind: Kind,
        device: Device,
        blocks: &[Device],
    ) -> Result<Self> {
        let sd = StateDict::load(dir, &config.layout(), kind, staging(device, blocks))?;
        Self::from_state_dict(config, sd, device, blocks)
    }

    /// Builds a model from in-memory tensors named as in a HF checkpoint (checked like files are). Tensors
    /// that require grad stay trainable: the demo pretrains its tiny backbone this way. Checkpoints loaded
    /// from disk never require grad.
    pub(super) fn from_tensors(config: Gpt2Config, tensors: Vec<(String, Tensor)>) -> Result<Self> {
        config.validate().context("the model config")?;
        let (kind, device) = tensors.first().map_or((Kind::Float, Device::Cpu), |(_, t)| (t.kind(), t.device()));
        let origin = std::path::PathBuf::from("<memory>");
        let named = tensors.into_iter().map(|(n, t)| (n, origin.clone(), t)).collect();
        let sd = StateDict::from_named(named, origin, &config.layout(), kind, device)?;
        Self::from_state_dict(config, sd, device, &[])
    }

    /// A model of `config`'s shapes with random weights (normal, std 0.02, as GPT-2 initialises them), for
    /// benchmarks and shape tests: speed does not depend on the weights' values.
    pub(super) fn random(config: Gpt2Config, kind: Kind, device: Device) -> Result<Self> {
        config.validate().context("the model config")?;
        let tensors = crate::rng::unseeded(|| {
            config
                .expected_shapes()
                .into_iter()
                .map(|(name, shape)| {
                    (name, (Tensor::randn(shape.as_slice(), (Kind::Float, device)) * 0.02).to_kind(kind))
                })
                .collect()
        });
        Self::from_tensors(config, tensors)
    }

    fn from_state_dict(config: Gpt2Config, mut sd: StateDict, device: Device, places: &[Device]) -> Result<Self> {
        let mut blocks = Vec::new();
        for i in 0..config.n_layer {
            sd.place = places.get(i as usize).copied();
            blocks.push(Block::load(&mut sd, i, &config)?);
        }
        sd.place = places.last().copied();
        let ln_f = LayerNorm::load(&mut sd, "ln_f", config.layer_norm_epsilon)?;
        let lm_head = if config.tie_word_embeddings { None } else { Some(sd.take("lm_head.weight")?) };
        sd.place = places.first().copied();
        Ok(Self { wte: sd.take("wte.weight")?, wpe: sd.take("wpe.weight")?, ln_f, lm_head, blocks, config, device })
    }

    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// The token embedding matrix `[vocab, d]`.
    pub(super) fn embeddings(&self) -> &Tensor {
        &self.wte
    }

    /// Stores every block's linear layers as `to` says (embeddings, norms and the head stay as loaded).
    pub(super) fn quantize_blocks(&mut self, to: Quantize) -> Result<()> {
        let mut weights = Vec::new();
        for b in &mut self.blocks {
            for layer in [&mut b.attn.c_attn, &mut b.attn.c_proj, &mut b.mlp.c_fc, &mut b.mlp.c_proj] {
                weights.push(&mut layer.weight);
            }
        }
        quantize_all(weights, to)
    }

    /// The LM head `[vocab, d]` (the embeddings when tied).
    pub(super) fn head(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.wte)
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
        let past = cache.as_ref().map_or(0, |c| c.len());
        ensure!(
            past + t <= self.config.n_positions,
            "sequence of {} tokens exceeds the model's context window n_positions={}",
            past + t,
            self.config.n_positions
        );
        let positions = position_ids(mask, b, past, t, self.device);
        let mut x = embeds + Tensor::embedding(&self.wpe, &positions, -1, false, false);
        // Plain causal attention needs no mask tensor; padding, a cache offset or queries from a later position do.
        let attn_mask =
            (mask.is_some() || past > 0 || from > 0).then(|| attention_bias(mask, b, past, t, None, self.device));
        // The last block's queries start at `from`.
        let tail_mask = attn_mask.as_ref().map(|m| m.narrow(2, from, t - from));
        let last = self.blocks.len().saturating_sub(1);
        for (i, block) in self.blocks.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| c.layer_mut(i));
            let (from, mask) = if i == last { (from, tail_mask.as_ref()) } else { (0, attn_mask.as_ref()) };
            // Under a device map the activations follow the blocks (a no-op on one device).
            let device = block.ln_1.weight.device();
            let mask = mask.map(|m| m.to_device(device));
            x = block.forward(&x.to_device(device), mask.as_ref(), layer_cache, from, deep);
        }
        if self.blocks.is_empty() {
            x = x.narrow(1, from, t - from);
        }
        Ok(self.ln_f.forward(&x.to_device(self.ln_f.weight.device())).to_device(self.device))
    }
}
