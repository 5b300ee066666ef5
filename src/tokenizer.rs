//! Byte-level BPE tokenizer of a GPT-2-style checkpoint: `tokenizer.json`, or the `vocab.json` + `merges.txt`
//! pair that ruGPT-3 ships, with special tokens from `special_tokens_map.json` / `tokenizer_config.json`.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::BPE;
use tokenizers::AddedToken;

pub use tokenizers::Encoding;

/// Ids of the special tokens a checkpoint declares (ruGPT-3: `<pad>`=0, `<s>`=1, `</s>`=2, `<unk>`=3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
    pub unk: Option<u32>,
}

/// A tokenizer plus the special-token ids its checkpoint declares.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
}

/// The parts of `tokenizer_config.json` we read; the rest belongs to Python.
#[derive(Debug, Default, Deserialize)]
struct TokenizerConfig {
    #[serde(default)]
    add_prefix_space: bool,
    #[serde(default)]
    added_tokens_decoder: std::collections::BTreeMap<String, AddedTokenSpec>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct AddedTokenSpec {
    content: String,
    #[serde(default)]
    special: bool,
}

impl Tokenizer {
    /// Loads the tokenizer of a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let config: TokenizerConfig = read_json_if_exists(&dir.join("tokenizer_config.json"))?.unwrap_or_default();
        let json = dir.join("tokenizer.json");
        let mut inner = if json.is_file() {
            tokenizers::Tokenizer::from_file(&json).map_err(|e| anyhow!("cannot load {}: {e}", json.display()))?
        } else {
            byte_level_bpe(dir, config.add_prefix_space)?
        };
        // Tokens listed in tokenizer_config.json must be matched whole, as the Python tokenizers do.
        let mut added: Vec<(u32, &AddedTokenSpec)> = Vec::new();
        for (id, spec) in &config.added_tokens_decoder {
            let id: u32 = id.parse().with_context(|| format!("tokenizer_config.json: bad token id '{id}'"))?;
            added.push((id, spec));
        }
        added.sort_by_key(|(id, _)| *id);
        let specials: Vec<AddedToken> =
            added.iter().map(|(_, s)| AddedToken::from(s.content.clone(), s.special)).collect();
        inner
            .add_special_tokens(specials)
            .map_err(|e| anyhow!("cannot add the special tokens of tokenizer_config.json in {}: {e}", dir.display()))?;

        let map: serde_json::Map<String, Value> =
            read_json_if_exists(&dir.join("special_tokens_map.json"))?.unwrap_or_default();
        let id_of = |role: &str| -> Result<Option<u32>> {
            let key = format!("{role}_token");
            let Some(value) = map.get(&key).or_else(|| config.rest.get(&key)) else {
                return Ok(None);
            };
            let content = match value {
                Value::String(s) => s.as_str(),
                Value::Object(o) => o.get("content").and_then(Value::as_str).unwrap_or_default(),
                Value::Null => return Ok(None),
                other => bail!("{key} in {} must be a string, got {other}", dir.display()),
            };
            inner
                .token_to_id(content)
                .map(Some)
                .ok_or_else(|| anyhow!("{key} '{content}' declared in {} is not in the vocabulary", dir.display()))
        };
        let special = SpecialTokens { bos: id_of("bos")?, eos: id_of("eos")?, pad: id_of("pad")?, unk: id_of("unk")? };
        Ok(Self { inner, special })
    }

    pub fn special(&self) -> &SpecialTokens {
        &self.special
    }

    /// Vocabulary size including added tokens (Python's `len(tokenizer)`).
    pub fn len(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encodes without BOS/EOS; offsets are in chars (Unicode code points), as in Python.
    pub fn encode(&self, text: &str) -> Result<Encoding> {
        self.inner.encode_char_offsets(text, false).map_err(|e| anyhow!("cannot tokenize {text:?}: {e}"))
    }

    /// Token ids of `text` as int64, ready for a tensor.
    pub fn encode_ids(&self, text: &str) -> Result<Vec<i64>> {
        Ok(self.encode(text)?.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// Decodes ids back to text, keeping special tokens.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids = ids
            .iter()
            .map(|&id| u32::try_from(id).map_err(|_| anyhow!("token id {id} is out of range")))
            .collect::<Result<Vec<u32>>>()?;
        self.inner.decode(&ids, false).map_err(|e| anyhow!("cannot decode {ids:?}: {e}"))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Adds ordinary (non-special, normalized) tokens such as ruPrompts' `<|P|>` and returns their ids; a
    /// token already present keeps its id.
    pub fn add_tokens(&mut self, tokens: &[&str]) -> Result<Vec<u32>> {
        let added: Vec<AddedToken> = tokens.iter().map(|t| AddedToken::from(t.to_string(), false)).collect();
        self.inner.add_tokens(added).map_err(|e| anyhow!("cannot add tokens {tokens:?}: {e}"))?;
        tokens.iter().map(|t| self.inner.token_to_id(t).ok_or_else(|| anyhow!("token {t:?} was not added"))).collect()
    }
}

/// GPT-2's classic format: byte-level BPE from `vocab.json` + `merges.txt`, configured as Hugging Face's
/// converter does (no prefix space unless asked, untrimmed offsets).
fn byte_level_bpe(dir: &Path, add_prefix_space: bool) -> Result<tokenizers::Tokenizer> {
    let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
    for file in [&vocab, &merges] {
        if !file.is_file() {
            bail!(
                "no tokenizer in {}: expected tokenizer.json, or vocab.json and merges.txt ({} is missing)",
                dir.display(),
                file.display()
            );
        }
    }
    let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .build()
        .map_err(|e| anyhow!("cannot load {} + {}: {e}", vocab.display(), merges.display()))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(add_prefix_space, false, true)))
        .with_decoder(Some(ByteLevel::default()))
        .with_post_processor(Some(ByteLevel::new(true, false, true)));
    Ok(tok)
}

fn read_json_if_exists<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).map(Some).with_context(|| format!("{} is not valid", path.display()))
}
