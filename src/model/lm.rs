//! The frozen causal LM the rest of the crate uses: one interface over the architectures (GPT-2; the Llama
//! family), chosen from `config.json`'s `model_type`. Embedding, the input checks, deep prompts, the LM head and
//! the loss are the same for every architecture and live here; each architecture runs its transformer.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use super::cache::KvCache;
use super::deep::DeepKv;
use super::gemv;
use super::gguf;
use super::gpt2::Gpt2;
use super::gpt2_config::Gpt2Config;
use super::llama::Llama;
use super::llama_config::LlamaConfig;
use super::quant::{self, Quantize, Weight};
use crate::device::DeviceMap;
use crate::gguf::Gguf;

/// What the transformer reads: token ids, or embeddings that already contain injected soft prompts.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// `[B, T]` int64 token ids.
    Ids(&'a Tensor),
    /// `[B, T, d]` embeddings (e.g. from [`Model::embed`] with prompt rows replaced), any float dtype.
    Embeds(&'a Tensor),
    /// Embeddings, and keys and values that replace the model's own at some positions in every layer (a deep
    /// prompt's virtual tokens).
    Deep(&'a Tensor, &'a DeepKv),
}

/// The facts of a model that prompts, data and decoding depend on, named as GPT-2's config names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dims {
    pub vocab_size: i64,
    /// The context window: GPT-2's learned positions, a Llama model's `max_position_embeddings`.
    pub n_positions: i64,
    /// Embedding (hidden) size.
    pub n_embd: i64,
    pub n_layer: i64,
    /// Width of one layer's keys (and values) for one position: heads × head size, or key/value heads × head size
    /// with grouped-query attention. A deep prompt gives `2 · n_layer · kv_dim` numbers per virtual token.
    pub kv_dim: i64,
}

impl Dims {
    fn of_gpt2(c: &Gpt2Config) -> Self {
        Self {
            vocab_size: c.vocab_size,
            n_positions: c.n_positions,
            n_embd: c.n_embd,
            n_layer: c.n_layer,
            kv_dim: c.n_embd,
        }
    }

    fn of_llama(c: &LlamaConfig) -> Self {
        Self {
            vocab_size: c.vocab_size,
            n_positions: c.max_position_embeddings,
            n_embd: c.hidden_size,
            n_layer: c.num_hidden_layers,
            kv_dim: c.kv_heads() * c.head_dim(),
        }
    }

    /// The sizes of the checkpoint at `path` (a folder of any family [`Model::from_dir`] reads, a `.gguf` file
    /// or a folder holding one), from its config alone: no weights are read.
    pub fn read(path: &Path) -> Result<Self> {
        if let Some(file) = crate::gguf::checkpoint_file(path)? {
            return Ok(Self::of_llama(&gguf::llama_config(&Gguf::open(&file)?)?));
        }
        Ok(match ConfigFile::read(path)? {
            ConfigFile::Gpt2(c) => Self::of_gpt2(&c),
            ConfigFile::Llama(c) => Self::of_llama(&c),
        })
    }
}

/// A Hugging Face folder's config.json, by its `model_type`.
enum ConfigFile {
    Gpt2(Gpt2Config),
    Llama(LlamaConfig),
}

impl ConfigFile {
    fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let ModelType { model_type } =
            serde_json::from_str(&text).with_context(|| format!("{} is not a model config", path.display()))?;
        match model_type.as_deref().unwrap_or("gpt2") {
            "gpt2" => Ok(Self::Gpt2(Gpt2Config::from_file(&path)?)),
            "llama" | "mistral" | "qwen2" => Ok(Self::Llama(LlamaConfig::from_file(&path)?)),
            other => bail!(
                "{}: model_type '{other}' is not supported; ruprompts runs {} (GPT-2, ruGPT-3, mGPT; Llama 2/3, \
                 Mistral, Qwen2)",
                path.display(),
                SUPPORTED.join(", ")
            ),
        }
    }
}

#[derive(Debug)]
enum Arch {
    Gpt2(Gpt2),
    Llama(Llama),
}

/// A frozen causal language model. Its weights never require gradients; gradients still flow through it to input
/// embeddings (where soft prompts are injected) and to a deep prompt's keys and values.
#[derive(Debug)]
pub struct Model {
    arch: Arch,
    dims: Dims,
    kind: Kind,
    device: Device,
    /// The LM head once quantized (the embeddings stay as loaded: lookups and prompts read them); its form is
    /// what [`Model::quantized`] reports.
    head_quantized: Option<Weight>,
}

/// Each block's device under `map` (none without one), and the device inputs and outputs stay on: the first
/// block's, or `device`.
fn placement(map: Option<&DeviceMap>, blocks: i64, device: Device) -> Result<(Vec<Device>, Device)> {
    let blocks = map.map(|m| m.resolve(blocks as usize, device)).transpose()?.unwrap_or_default();
    let device = blocks.first().copied().unwrap_or(device);
    Ok((blocks, device))
}

/// The architectures `from_dir` reads, by `model_type`.
pub const SUPPORTED: [&str; 4] = ["gpt2", "llama", "mistral", "qwen2"];

#[derive(Deserialize)]
struct ModelType {
    #[serde(default)]
    model_type: Option<String>,
}

impl Model {
    /// Loads `config.json` and the weights from a Hugging Face model directory, in `kind` on `device`; the
    /// architecture is `config.json`'s `model_type`.
    pub fn from_dir(dir: &Path, kind: Kind, device: Device) -> Result<Self> {
        Self::from_dir_mapped(dir, kind, device, None)
    }

    /// [`Model::from_dir`] with the blocks spread over devices as `map` says (see [`DeviceMap`]). Inputs and
    /// outputs stay on the first block's device ([`Model::device`]): the rest of the crate sees one device.
    pub fn from_dir_mapped(dir: &Path, kind: Kind, device: Device, map: Option<&DeviceMap>) -> Result<Self> {
        let place = |blocks: i64| placement(map, blocks, device);
        match ConfigFile::read(dir)? {
            ConfigFile::Gpt2(config) => {
                let (blocks, device) = place(config.n_layer)?;
                Ok(Self::gpt2(Gpt2::from_dir(dir, config, kind, device, &blocks)?, kind, device))
            }
            ConfigFile::Llama(config) => {
                let (blocks, device) = place(config.num_hidden_layers)?;
                Ok(Self::llama(Llama::from_dir(dir, config, kind, device, &blocks)?, kind, device))
            }
        }
    }

    /// Loads a GGUF checkpoint (see `model/gguf.rs` for the architectures read), dequantized to `kind` on
    /// `device`, placed as [`Model::from_dir_mapped`] places a folder's.
    pub fn from_gguf(g: &Gguf, kind: Kind, device: Device, map: Option<&DeviceMap>) -> Result<Self> {
        let config = gguf::llama_config(g)?;
        let (blocks, device) = placement(map, config.num_hidden_layers, device)?;
        Ok(Self::llama(Llama::from_gguf(g, config, kind, device, &blocks)?, kind, device))
    }

    /// A GPT-2 built from in-memory tensors named as in a HF checkpoint (checked like files are). Tensors that
    /// require grad stay trainable: the demo pretrains its tiny backbone this way.
    pub fn from_tensors(config: Gpt2Config, tensors: Vec<(String, Tensor)>) -> Result<Self> {
        let (kind, device) = tensors.first().map_or((Kind::Float, Device::Cpu), |(_, t)| (t.kind(), t.device()));
        Ok(Self::gpt2(Gpt2::from_tensors(config, tensors)?, kind, device))
    }

    /// A GPT-2 of `config`'s shapes with random weights (normal, std 0.02), for benchmarks and shape tests.
    pub fn random(config: Gpt2Config, kind: Kind, device: Device) -> Result<Self> {
        Ok(Self::gpt2(Gpt2::random(config, kind, device)?, kind, device))
    }

    fn gpt2(model: Gpt2, kind: Kind, device: Device) -> Self {
        let dims = Dims::of_gpt2(model.config());
        Self { arch: Arch::Gpt2(model), dims, kind, device, head_quantized: None }
    }

    fn llama(model: Llama, kind: Kind, device: Device) -> Self {
        let dims = Dims::of_llama(model.config());
        Self { arch: Arch::Llama(model), dims, kind, device, head_quantized: None }
    }

    pub fn config(&self) -> &Dims {
        &self.dims
    }

    /// One line on the architecture, for `ruprompts info`.
    pub fn describe(&self) -> String {
        match &self.arch {
            Arch::Gpt2(m) => {
                let c = m.config();
                format!(
                    "GPT-2: {} layers, d_model {}, {} heads, MLP {}, {}",
                    c.n_layer,
                    c.n_embd,
                    c.n_head,
                    c.inner_dim(),
                    c.activation_function
                )
            }
            Arch::Llama(m) => {
                let c = m.config();
                format!(
                    "{:?}: {} layers, d_model {}, {} heads ({} key/value), MLP {}, rope {:?}",
                    c.model_type,
                    c.num_hidden_layers,
                    c.hidden_size,
                    c.num_attention_heads,
                    c.kv_heads(),
                    c.intermediate_size,
                    m.rope()
                )
            }
        }
    }

    /// Number of parameters (tied embeddings counted once).
    pub fn num_parameters(&self) -> i64 {
        let layout = match &self.arch {
            Arch::Gpt2(m) => m.config().layout(),
            Arch::Llama(m) => m.config().layout(),
        };
        layout.shapes.iter().map(|(_, s)| s.iter().product::<i64>()).sum()
    }

    /// An empty KV cache sized for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.dims.n_layer as usize)
    }

    /// Stores the blocks' linear layers and the LM head as `to` asks, for inference: scoring, generation and
    /// serving.
    /// Gradients do not flow through quantized weights, so training refuses a quantized model.
    pub fn quantize(&mut self, to: Quantize) -> Result<()> {
        if to == self.quantized() {
            return Ok(());
        }
        ensure!(self.quantized() == Quantize::None, "the model is already stored as {}", self.quantized());
        quant::check(to, self.device)?;
        // Nothing changes until every layer is quantized: int4 refuses some widths.
        let head = Weight::quantized(self.head(), to)?;
        match &mut self.arch {
            Arch::Gpt2(m) => m.quantize_blocks(to)?,
            Arch::Llama(m) => m.quantize_blocks(to)?,
        }
        self.head_quantized = Some(head);
        Ok(())
    }

    /// How the blocks' linear layers are stored.
    pub fn quantized(&self) -> Quantize {
        self.head_quantized.as_ref().map_or(Quantize::None, Weight::form)
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// dtype of the weights (and of hidden states).
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The token embedding matrix `[vocab, d]` (providers initialise soft prompts from its rows).
    pub fn token_embeddings(&self) -> &Tensor {
        match &self.arch {
            Arch::Gpt2(m) => m.embeddings(),
            Arch::Llama(m) => m.embeddings(),
        }
    }

    fn head(&self) -> &Tensor {
        match &self.arch {
            Arch::Gpt2(m) => m.head(),
            Arch::Llama(m) => m.head(),
        }
    }

    /// Token embeddings of `ids: [B, T]` → `[B, T, d]`. An id outside the embedding matrix is an error (ruPrompts
    /// gives prompt tokens the id `vocab_size`: they must be replaced by prompt embeddings, not looked up).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let ids = ids.to_device(self.device);
        if ids.numel() > 0 {
            let (lo, hi) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
            ensure!(
                lo >= 0 && hi < self.dims.vocab_size,
                "token id {} is outside the embedding matrix (vocab_size={})",
                if lo < 0 { lo } else { hi },
                self.dims.vocab_size
            );
        }
        Ok(Tensor::embedding(self.token_embeddings(), &ids, -1, false, false))
    }

    /// Runs the transformer and returns the final hidden states `[B, T, d]` (after the final norm).
    ///
    /// `attention_mask: [B, past + T]` (1 = real token, 0 = padding) covers the cached positions too; padding
    /// may sit on the left, the right or both. Position ids count real tokens from the first one, so a
    /// left-padded row gets the same positions as the row without padding. With `cache`, keys and values are
    /// appended to it, and `T` new positions follow the cached ones.
    pub fn forward(
        &self,
        input: Input<'_>,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        self.forward_from(input, attention_mask, cache, 0)
    }

    /// [`Model::forward`] returning only the hidden states of positions `from..` (`[B, T - from, d]`): the last
    /// block computes its attention output and MLP there alone (keys, values and the cache still cover every
    /// position). For callers that read the last states only, or the labelled tail of a training batch.
    pub fn forward_from(
        &self,
        input: Input<'_>,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        from: i64,
    ) -> Result<Tensor> {
        let d = self.dims.n_embd;
        let (embeds, deep) = match input {
            Input::Ids(ids) => {
                ensure!(ids.dim() == 2, "input ids must be [batch, seq], got {:?}", ids.size());
                (self.embed(ids)?, None)
            }
            Input::Embeds(e) | Input::Deep(e, _) => {
                ensure!(
                    e.dim() == 3 && e.size()[2] == d,
                    "input embeddings must be [batch, seq, {d}], got {:?}",
                    e.size()
                );
                let deep = match input {
                    Input::Deep(_, deep) => Some(self.deep(deep)?),
                    _ => None,
                };
                (e.to_device(self.device).to_kind(self.kind), deep)
            }
        };
        let (b, t, _) = embeds.size3()?;
        ensure!((0..t.max(1)).contains(&from), "hidden states from position {from} of a {t}-token input");
        let past = cache.as_ref().map_or(0, |c| c.len());
        if let Some(c) = cache.as_ref() {
            ensure!(c.is_empty() || c.batch_size() == b, "KV cache holds batch {}, input has {b}", c.batch_size());
        }
        let mask = match attention_mask {
            Some(m) => {
                ensure!(m.size() == [b, past + t], "attention mask must be [{b}, {}], got {:?}", past + t, m.size());
                Some(m.to_device(self.device))
            }
            None => None,
        };
        match &self.arch {
            Arch::Gpt2(m) => m.forward_from(embeds, deep.as_ref(), mask.as_ref(), cache, from),
            Arch::Llama(m) => m.forward_from(embeds, deep.as_ref(), mask.as_ref(), cache, from),
        }
    }

    /// A deep prompt's keys and values checked against this model and made ready for its device and dtype.
    fn deep(&self, deep: &DeepKv) -> Result<DeepKv> {
        let width = 2 * self.dims.n_layer * self.dims.kv_dim;
        ensure!(
            deep.width() == width,
            "a deep prompt of width {} (layers · 2 · key size) cannot run on this model: it has {} layers with keys \
             of size {} (width {width})",
            deep.width(),
            self.dims.n_layer,
            self.dims.kv_dim
        );
        Ok(deep.prepared(self.device, self.kind))
    }

    /// Projects hidden states `[.., d]` to f32 logits `[.., vocab]`. Callers that need only some positions
    /// should select them first: the projection is the largest matmul of the model.
    pub fn lm_logits(&self, hidden: &Tensor) -> Tensor {
        // The head sits with the last block under a device map; the logits come back to the hidden states' device.
        let logits = match &self.head_quantized {
            Some(head) => head.linear(&hidden.to_device(head.device()), None),
            None => hidden.to_device(self.head().device()).matmul(&self.head().tr()),
        };
        logits.to_kind(Kind::Float).to_device(hidden.device())
    }

    /// [`Model::lm_logits`] of the next token of each decoding row, `hidden: [rows, d]` → `[rows, vocab]`. CPU
    /// BLAS multiplies a few rows by the `[vocab, d]` matrix much faster as W·hᵀ than as h·Wᵀ (8 rows × 50k tokens
    /// on 2 cores: 23 vs 63 ms, libtorch 2.11); past ~128 rows the usual order wins. Decoding alone uses it, so
    /// training and scoring keep their numbers.
    pub fn next_token_logits(&self, hidden: &Tensor) -> Tensor {
        let weight = self.head();
        let rows = hidden.size().first().copied().unwrap_or(0);
        if self.head_quantized.is_none() && hidden.dim() == 2 && rows == 1 {
            if let Some(logits) = gemv::row_times(weight, hidden, None) {
                return logits;
            }
        }
        if self.head_quantized.is_none()
            && self.device == Device::Cpu
            && hidden.dim() == 2
            && (2..=128).contains(&rows)
            && weight.size()[0] >= 16384
        {
            return weight.mm(&hidden.tr()).tr().contiguous().to_kind(Kind::Float);
        }
        self.lm_logits(hidden)
    }

    /// [`Model::lm_loss`] of `labels` for `input`, with the last block run from the first position that predicts
    /// a label on (see [`Model::forward_from`]): the same loss for less arithmetic, which is what training wants.
    /// A deep prompt's virtual tokens predict nothing (see [`DeepKv`]).
    pub fn loss(&self, input: Input<'_>, attention_mask: Option<&Tensor>, labels: &Tensor) -> Result<Tensor> {
        let labels = &Self::loss_labels(input, labels);
        let labelled = Vec::<bool>::try_from(labels.ne(-100).any_dim(0, false))?;
        let from = labelled.iter().position(|&l| l).map_or(0, |first| first.saturating_sub(1)) as i64;
        let hidden = self.forward_from(input, attention_mask, None, from)?;
        let t = labels.size()[1];
        Ok(self.lm_loss(&hidden, &labels.narrow(1, from, t - from)))
    }

    /// How many targets [`Model::loss`] averages over for `labels` (those after the first position, less the
    /// followers of a deep prompt's virtual tokens): data-parallel training weighs each rank's mean by it.
    pub fn loss_targets(input: Input<'_>, labels: &Tensor) -> i64 {
        let labels = Self::loss_labels(input, labels);
        let t = labels.size()[1];
        labels.narrow(1, 1, (t - 1).max(0)).ne(-100).sum(Kind::Int64).int64_value(&[])
    }

    /// The labels [`Model::loss`] learns: a deep prompt's virtual tokens predict nothing (see [`DeepKv`]).
    fn loss_labels(input: Input<'_>, labels: &Tensor) -> Tensor {
        match input {
            Input::Deep(_, deep) => deep.unlabel_followers(labels),
            _ => labels.shallow_clone(),
        }
    }

    /// Mean next-token cross-entropy of `labels: [B, T]` (−100 = ignored), shifted inside like HF's
    /// `labels=` argument. Only labelled positions are projected to the vocabulary.
    pub fn lm_loss(&self, hidden: &Tensor, labels: &Tensor) -> Tensor {
        let d = self.dims.n_embd;
        let t = hidden.size()[1];
        let h = hidden.narrow(1, 0, t - 1).reshape([-1, d]);
        let targets = labels.narrow(1, 1, t - 1).reshape([-1]).to_device(self.device);
        let keep = targets.ne(-100).nonzero().squeeze_dim(1);
        let logits = self.lm_logits(&h.index_select(0, &keep));
        logits.cross_entropy_for_logits(&targets.index_select(0, &keep))
    }
}
