//! Finds and reads the weights of a Hugging Face checkpoint directory: `model.safetensors`, a sharded
//! `model.safetensors.index.json`, or `pytorch_model.bin` (also sharded), and checks every tensor against the
//! shapes that `config.json` implies. Errors name the file and the tensor at fault.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

/// Weight file layouts we read, in the order Hugging Face prefers them.
const CANDIDATES: [&str; 4] =
    ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"];

/// Buffers that old checkpoints store beside the weights (GPT-2's causal-mask constants, rotary frequencies);
/// never needed.
fn is_ignored_buffer(name: &str) -> bool {
    name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") || name.ends_with(".rotary_emb.inv_freq")
}

/// What an architecture's `config.json` says the weights are: every tensor's name and shape, and how to name
/// the config's sizes in messages.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Names as the model reads them, after `strip`.
    pub shapes: Vec<(String, Vec<i64>)>,
    /// A prefix checkpoints put before every name (`transformer.` for GPT-2), dropped where present.
    pub strip: &'static str,
    /// The LM head shares the embeddings: a stored `lm_head.weight` is dropped.
    pub tied: bool,
    /// The config's sizes, for messages: `n_embd=768, n_layer=12, …`.
    pub sizes: String,
    /// The config's layer count, for messages: `n_layer=12`.
    pub layers: String,
}

/// The checked weights of one checkpoint, keyed by name without the `transformer.` prefix.
pub struct StateDict {
    pub tensors: HashMap<String, Tensor>,
    /// The file (or index) the weights came from, for messages.
    pub source: PathBuf,
    /// Where [`StateDict::take`] puts tensors: a device map places each block's on its own device.
    pub place: Option<Device>,
}

impl StateDict {
    /// Loads the weights found in `dir`, converted to `kind` on `device`, and checks names and shapes
    /// against `layout`. A tied checkpoint's stored `lm_head.weight` is dropped.
    pub fn load(dir: &Path, layout: &Layout, kind: Kind, device: Device) -> Result<Self> {
        let source = CANDIDATES
            .iter()
            .map(|name| dir.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| anyhow!("no weights in {}: expected one of {}", dir.display(), CANDIDATES.join(", ")))?;
        Self::from_named(read_any(&source)?, source, layout, kind, device)
    }

    /// Checks tensors already in memory (`(name, origin, tensor)`, HF names) as [`StateDict::load`] does.
    pub fn from_named(
        raw: Vec<(String, PathBuf, Tensor)>,
        source: PathBuf,
        layout: &Layout,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        let mut tensors = HashMap::with_capacity(raw.len());
        for (name, file, tensor) in raw {
            let name = name.strip_prefix(layout.strip).unwrap_or(&name).to_string();
            if is_ignored_buffer(&name) || (name == "lm_head.weight" && layout.tied) {
                continue;
            }
            let tensor = tensor
                .f_to_device(device)
                .and_then(|t| t.f_to_kind(kind))
                .with_context(|| format!("{}: cannot move tensor '{name}' to {device:?}", file.display()))?;
            tensors.insert(name, (file, tensor));
        }
        check_shapes(&tensors, layout, &source)?;
        let tensors = tensors.into_iter().map(|(name, (_, t))| (name, t)).collect();
        Ok(Self { tensors, source, place: None })
    }

    /// Takes a tensor out; `load` has already checked that every expected name is present.
    pub fn take(&mut self, name: &str) -> Result<Tensor> {
        let tensor =
            self.tensors.remove(name).ok_or_else(|| anyhow!("{}: tensor '{name}' missing", self.source.display()))?;
        match self.place {
            Some(device) => tensor
                .f_to_device(device)
                .with_context(|| format!("{}: cannot move tensor '{name}' to {device:?}", self.source.display())),
            None => Ok(tensor),
        }
    }
}

/// Where a checkpoint is read to before its tensors are placed: `device`, or the CPU when a device map spreads
/// the blocks (a model split because it fits no single device must not be read onto one).
pub fn staging(device: Device, blocks: &[Device]) -> Device {
    if blocks.iter().all(|d| *d == device) {
        device
    } else {
        Device::Cpu
    }
}

/// Every expected tensor present with the right shape, and nothing unexpected (a checkpoint of another size
/// shows up as extra layers or wrong widths).
fn check_shapes(tensors: &HashMap<String, (PathBuf, Tensor)>, layout: &Layout, source: &Path) -> Result<()> {
    let expected = &layout.shapes;
    let missing: Vec<&str> =
        expected.iter().filter(|(n, _)| !tensors.contains_key(n)).map(|(n, _)| n.as_str()).collect();
    if let Some(first) = missing.first() {
        bail!(
            "{}: tensor '{first}' is missing ({} missing in all; config.json: {}, tie_word_embeddings={})",
            source.display(),
            missing.len(),
            layout.layers,
            layout.tied
        );
    }
    for (name, shape) in expected {
        let (file, tensor) = &tensors[name];
        if &tensor.size() != shape {
            bail!(
                "{}: tensor '{name}' has shape {:?} but config.json ({}) implies {:?}: the weights belong to another \
                 model size",
                file.display(),
                tensor.size(),
                layout.sizes,
                shape
            );
        }
    }
    let known: HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let mut unexpected: Vec<&String> = tensors.keys().filter(|n| !known.contains(n.as_str())).collect();
    if !unexpected.is_empty() {
        unexpected.sort();
        bail!(
            "{}: unexpected tensors {:?} (config.json says {}): the weights belong to another model",
            source.display(),
            unexpected,
            layout.layers
        );
    }
    Ok(())
}

/// Reads a weights file or a shard index; each tensor comes with the file it was read from.
fn read_any(path: &Path) -> Result<Vec<(String, PathBuf, Tensor)>> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name.ends_with(".index.json") {
        return read_sharded(path);
    }
    let tensors = if name.ends_with(".safetensors") { read_safetensors(path)? } else { read_pickle(path)? };
    Ok(tensors.into_iter().map(|(n, t)| (n, path.to_path_buf(), t)).collect())
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

fn read_sharded(index_path: &Path) -> Result<Vec<(String, PathBuf, Tensor)>> {
    let text = std::fs::read_to_string(index_path).with_context(|| format!("cannot read {}", index_path.display()))?;
    let index: ShardIndex = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid shard index (needs a weight_map)", index_path.display()))?;
    let dir = index_path.parent().unwrap_or(Path::new("."));
    let shards: BTreeSet<&String> = index.weight_map.values().collect();
    let mut out = Vec::new();
    for shard in shards {
        let shard_path = dir.join(shard);
        if !shard_path.is_file() {
            bail!("{} names shard '{shard}', which does not exist in {}", index_path.display(), dir.display());
        }
        out.extend(read_any(&shard_path)?);
    }
    let read: HashSet<&str> = out.iter().map(|(n, _, _)| n.as_str()).collect();
    for name in index.weight_map.keys() {
        if !read.contains(name.as_str()) {
            bail!(
                "{}: tensor '{name}' is listed but absent from shard '{}'",
                index_path.display(),
                index.weight_map[name]
            );
        }
    }
    Ok(out)
}

/// Reads a safetensors file through a memory map; a truncated or corrupt file is an error naming it.
fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: the hazard of a file map is the file changing under it: another process that truncates or rewrites
    // the file while it is mapped makes reads fault (SIGBUS) or see torn data, which no Rust type rules out. We
    // never write the file; the map lives only for this function, which copies the tensors out; checkpoints are
    // replaced by rename (a new inode), not rewritten in place, by every tool we know (ours, huggingface_hub).
    let mmap = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
    let st = SafeTensors::deserialize(&mmap)
        .map_err(|e| anyhow!("{} is not a valid safetensors file (truncated or corrupt?): {e}", path.display()))?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let kind = match view.dtype() {
                Dtype::F32 => Kind::Float,
                Dtype::F16 => Kind::Half,
                Dtype::BF16 => Kind::BFloat16,
                Dtype::F64 => Kind::Double,
                other => bail!("{}: tensor '{name}' has unsupported dtype {other:?}", path.display()),
            };
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let tensor = Tensor::f_from_data_size(view.data(), &shape, kind)
                .with_context(|| format!("{}: cannot read tensor '{name}'", path.display()))?;
            // The copy is made: let the kernel drop the file's pages now rather than when the map goes, so the
            // peak memory holds the weights once, not twice (a failure only leaves the pages resident).
            let offset = view.data().as_ptr() as usize - mmap.as_ptr() as usize;
            // SAFETY: a read-only file mapping: dropped pages are read again from the file if ever touched.
            let _ =
                unsafe { mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, view.data().len()) };
            Ok((name, tensor))
        })
        .collect()
}

/// Reads a `torch.save` zip archive (`pytorch_model.bin`) with libtorch's own unpickler.
fn read_pickle(path: &Path) -> Result<Vec<(String, Tensor)>> {
    Tensor::loadz_multi(path).map_err(|e| {
        let first_line = e.to_string().lines().next().unwrap_or_default().to_string();
        anyhow!("{} is not a readable PyTorch weights archive (truncated or corrupt?): {first_line}", path.display())
    })
}
