//! The tokenizer of a checkpoint as transformers' AutoTokenizer loads it: any `tokenizer.json` (byte-level BPE, BPE
//! with byte fallback, Unigram), or the `vocab.json` + `merges.txt` pair that ruGPT-3 ships; special tokens from
//! `special_tokens_map.json` / `tokenizer_config.json`; BOS/EOS from `add_bos_token` / `add_eos_token` where the
//! tokenizer class reads them; decoding with `clean_up_tokenization_spaces`; the chat template. A GGUF file's
//! tokenizer comes from its metadata (the `gguf` submodule).

mod chat;
mod gguf;

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::AddedToken;

pub use chat::ChatTemplate;
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
    /// transformers' `clean_up_tokenization_spaces` (" ." → "." and the like when decoding).
    clean_up: bool,
    /// Ids of the prompt tokens added by [`Tokenizer::add_prompt_tokens`].
    prompt_ids: BTreeSet<u32>,
    /// The checkpoint's chat template, if it has one.
    chat: Option<ChatTemplate>,
}

/// The parts of `tokenizer_config.json` we read; the rest belongs to Python.
#[derive(Debug, Default, Deserialize)]
struct TokenizerConfig {
    add_prefix_space: Option<bool>,
    add_bos_token: Option<bool>,
    add_eos_token: Option<bool>,
    #[serde(default)]
    clean_up_tokenization_spaces: bool,
    tokenizer_class: Option<String>,
    /// A template, or a list of named ones (`default` is used).
    chat_template: Option<Value>,
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
        let class = tokenizer_class(dir, &config)?;
        let mut inner = if json.is_file() {
            tokenizers::Tokenizer::from_file(&json).map_err(|e| anyhow!("cannot load {}: {e}", json.display()))?
        } else {
            byte_level_bpe(dir, config.add_prefix_space.unwrap_or(false))?
        };
        // transformers sets a top-level byte-level pre-tokenizer's prefix space from the config (false if unset),
        // except for the Llama-like classes, whose default is to leave it.
        if let Some(PreTokenizerWrapper::ByteLevel(level)) = inner.get_pre_tokenizer() {
            let wanted = config.add_prefix_space.or((!class.sets_bos_from_config()).then_some(false));
            if let Some(wanted) = wanted.filter(|&w| w != level.add_prefix_space) {
                let mut level = *level;
                level.add_prefix_space = wanted;
                inner.with_pre_tokenizer(Some(level));
            }
        }
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
        let config_file = dir.join("tokenizer_config.json");
        if class.sets_bos_from_config() {
            let (bos, eos) =
                (config.add_bos_token.unwrap_or(class.bos_default()), config.add_eos_token.unwrap_or(false));
            let template = bos_eos_template(&inner, &special, bos, eos, &config_file.display().to_string())?;
            inner.with_post_processor(Some(template));
        }
        let jinja = dir.join("chat_template.jinja");
        let chat = if jinja.is_file() {
            Some(std::fs::read_to_string(&jinja).with_context(|| format!("cannot read {}", jinja.display()))?)
        } else {
            chat_template_of(config.chat_template.as_ref())
                .with_context(|| format!("{}: chat_template", config_file.display()))?
        };
        let mut tokenizer = Self {
            inner,
            special,
            clean_up: config.clean_up_tokenization_spaces,
            prompt_ids: BTreeSet::new(),
            chat: None,
        };
        tokenizer.chat = tokenizer.compile_chat(chat.as_deref(), &dir.display().to_string())?;
        Ok(tokenizer)
    }

    /// Loads the tokenizer of a checkpoint: a Hugging Face folder ([`Tokenizer::from_dir`]) or a GGUF file, given
    /// or alone in its folder ([`Tokenizer::from_gguf`]).
    pub fn load(path: &Path) -> Result<Self> {
        match crate::gguf::checkpoint_file(path)? {
            Some(file) => Self::from_gguf(&crate::gguf::Gguf::open(&file)?),
            None => Self::from_dir(path),
        }
    }

    /// Loads the tokenizer a GGUF file's metadata describes (see the `gguf` submodule), with its chat template.
    pub fn from_gguf(g: &crate::gguf::Gguf) -> Result<Self> {
        let built = gguf::build(g)?;
        let [bos, eos, pad, unk] = built.ids;
        let special = SpecialTokens { bos, eos, pad, unk };
        let mut inner = built.inner;
        if built.add_bos || built.add_eos {
            let origin = format!("{} (tokenizer.ggml.add_bos_token, add_eos_token)", g.path().display());
            let template = bos_eos_template(&inner, &special, built.add_bos, built.add_eos, &origin)?;
            inner.with_post_processor(Some(template));
        }
        let mut tokenizer = Self { inner, special, clean_up: built.clean_up, prompt_ids: BTreeSet::new(), chat: None };
        let origin = format!("{} (tokenizer.chat_template)", g.path().display());
        tokenizer.chat = tokenizer.compile_chat(built.chat_template.as_deref(), &origin)?;
        Ok(tokenizer)
    }

    /// `source` compiled with this tokenizer's special tokens as variables; `origin` names it in errors.
    fn compile_chat(&self, source: Option<&str>, origin: &str) -> Result<Option<ChatTemplate>> {
        let Some(source) = source else { return Ok(None) };
        let special = &self.special;
        let text = |id: Option<u32>| id.and_then(|id| self.inner.id_to_token(id)).unwrap_or_default();
        let specials = vec![
            ("bos_token", text(special.bos)),
            ("eos_token", text(special.eos)),
            ("unk_token", text(special.unk)),
            ("pad_token", text(special.pad)),
        ];
        ChatTemplate::new(source, specials).map(Some).with_context(|| origin.to_string())
    }

    /// The checkpoint's chat template, if it ships one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat.as_ref()
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

    /// Encodes a piece of text that goes inside a sequence (an answer, a phrase): no BOS/EOS. Offsets are in
    /// chars (Unicode code points), as in Python.
    pub fn encode(&self, text: &str) -> Result<Encoding> {
        self.inner.encode_char_offsets(text, false).map_err(|e| anyhow!("cannot tokenize {text:?}: {e}"))
    }

    /// Token ids of a piece of text (no BOS/EOS) as int64, ready for a tensor.
    pub fn encode_ids(&self, text: &str) -> Result<Vec<i64>> {
        Ok(ids_of(&self.encode(text)?))
    }

    /// Encodes `text` as a model input, with the special tokens AutoTokenizer's `tokenizer(text)` adds (Llama's
    /// BOS; none for GPT-2), as ruPrompts, lm-evaluation-harness and transformers' pipelines encode. Prompt tokens
    /// that start the text go before those specials, as PEFT puts its virtual tokens before the input's BOS.
    pub fn encode_sequence(&self, text: &str) -> Result<Encoding> {
        let encoding =
            self.inner.encode_char_offsets(text, true).map_err(|e| anyhow!("cannot tokenize {text:?}: {e}"))?;
        let mask = encoding.get_special_tokens_mask();
        let specials = mask.iter().take_while(|&&m| m == 1).count();
        let prompts = encoding.get_ids()[specials..].iter().take_while(|id| self.prompt_ids.contains(id)).count();
        if specials == 0 || prompts == 0 {
            return Ok(encoding);
        }
        // Rotate [specials, prompt tokens] to [prompt tokens, specials]; the rest keeps its places.
        fn rotated<T: Clone>(v: &[T], specials: usize, prompts: usize) -> Vec<T> {
            let mut v = v.to_vec();
            v[..specials + prompts].rotate_left(specials);
            v
        }
        let rotate = |v: &[u32]| rotated(v, specials, prompts);
        Ok(Encoding::new(
            rotate(encoding.get_ids()),
            rotate(encoding.get_type_ids()),
            rotated(encoding.get_tokens(), specials, prompts),
            rotated(encoding.get_word_ids(), specials, prompts),
            rotated(encoding.get_offsets(), specials, prompts),
            rotate(mask),
            rotate(encoding.get_attention_mask()),
            Vec::new(),
            Default::default(),
        ))
    }

    /// Token ids of `text` as a model input (see [`Tokenizer::encode_sequence`]).
    pub fn encode_sequence_ids(&self, text: &str) -> Result<Vec<i64>> {
        Ok(ids_of(&self.encode_sequence(text)?))
    }

    /// Decodes ids to text as transformers' `tokenizer.decode(ids)` does: special tokens kept, spaces cleaned up
    /// if the checkpoint asks for it.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let text = self.decode_raw(ids)?;
        Ok(if self.clean_up { clean_up_tokenization(&text) } else { text })
    }

    /// The text of one token as it reads inside a text (its own spaces kept, no clean-up).
    pub fn decode_token(&self, id: i64) -> Result<String> {
        self.decode_raw(&[id])
    }

    /// The text `ids` add after `context`, as transformers' text-generation pipeline shows a continuation: the
    /// whole decoded, less the context's decoded length. Decoding `ids` alone would lose the space that a
    /// SentencePiece-style tokenizer strips from a text's first token. Only the context's last tokens are decoded.
    pub fn decode_after(&self, context: &[i64], ids: &[i64]) -> Result<String> {
        let tail = &context[context.len().saturating_sub(CONTEXT_TOKENS)..];
        let head = self.decode(tail)?;
        let whole = self.decode(&[tail, ids].concat())?;
        match whole.strip_prefix(head.as_str()) {
            Some(rest) => Ok(rest.to_string()),
            None => self.decode(ids),
        }
    }

    fn decode_raw(&self, ids: &[i64]) -> Result<String> {
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

    /// Adds prompt tokens such as ruPrompts' `<|P|>` as ordinary tokens and returns their ids; a token already
    /// present keeps its id. They are matched in the raw text: a normalizer that prepends `▁` (Llama 2's) would
    /// hide a normalized one after the first. With GPT-2's tokenizers (no normalizer) this is what ruPrompts does.
    pub fn add_prompt_tokens(&mut self, tokens: &[&str]) -> Result<Vec<u32>> {
        let added: Vec<AddedToken> =
            tokens.iter().map(|t| AddedToken::from(t.to_string(), false).normalized(false)).collect();
        self.inner.add_tokens(added).map_err(|e| anyhow!("cannot add tokens {tokens:?}: {e}"))?;
        let ids = tokens
            .iter()
            .map(|t| self.inner.token_to_id(t).ok_or_else(|| anyhow!("token {t:?} was not added")))
            .collect::<Result<Vec<u32>>>()?;
        self.prompt_ids.extend(&ids);
        Ok(ids)
    }
}

/// Context tokens [`Tokenizer::decode_after`] decodes before the new ones: enough for any decoder's start-of-text
/// rule and a character split across tokens.
const CONTEXT_TOKENS: usize = 4;

fn ids_of(encoding: &Encoding) -> Vec<i64> {
    encoding.get_ids().iter().map(|&id| i64::from(id)).collect()
}

/// transformers' `clean_up_tokenization` replacements, in its order: spaces before punctuation and English
/// contractions.
const CLEAN_UP: [(&str, &str); 10] = [
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
];

fn clean_up_tokenization(text: &str) -> String {
    CLEAN_UP.iter().fold(text.to_string(), |t, (from, to)| t.replace(from, to))
}

/// The transformers tokenizer class a folder loads as, as far as it changes the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Llama, CodeLlama, Gemma, Cohere: the post-processor is rebuilt from `add_bos_token` (default true) and
    /// `add_eos_token`.
    LlamaLike,
    /// GPT-NeoX: the same with `add_bos_token` false by default.
    NeoX,
    /// Every other class: `tokenizer.json`'s post-processor as saved.
    Other,
}

impl Class {
    fn sets_bos_from_config(self) -> bool {
        self != Class::Other
    }

    fn bos_default(self) -> bool {
        self == Class::LlamaLike
    }
}

/// `tokenizer_config.json`'s `tokenizer_class`, or else the class AutoTokenizer maps `config.json`'s model type to.
fn tokenizer_class(dir: &Path, config: &TokenizerConfig) -> Result<Class> {
    let name = match &config.tokenizer_class {
        Some(class) => class.trim_end_matches("Fast").to_string(),
        None => {
            let model: serde_json::Map<String, Value> =
                read_json_if_exists(&dir.join("config.json"))?.unwrap_or_default();
            match model.get("model_type").and_then(Value::as_str) {
                Some("llama" | "mistral" | "mixtral") => "LlamaTokenizer".to_string(),
                Some("gemma" | "gemma2") => "GemmaTokenizer".to_string(),
                Some("gpt_neox") => "GPTNeoXTokenizer".to_string(),
                _ => String::new(),
            }
        }
    };
    Ok(match name.as_str() {
        "LlamaTokenizer" | "CodeLlamaTokenizer" | "GemmaTokenizer" | "CohereTokenizer" => Class::LlamaLike,
        "GPTNeoXTokenizer" => Class::NeoX,
        _ => Class::Other,
    })
}

/// `tokenizer_config.json`'s `chat_template`: a string, or a list of `{name, template}` of which `default` is used.
fn chat_template_of(value: Option<&Value>) -> Result<Option<String>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(named)) => {
            let default = named.iter().find(|t| t.get("name").and_then(Value::as_str) == Some("default"));
            let template = default.and_then(|t| t.get("template")).and_then(Value::as_str);
            template.map(|t| Some(t.to_string())).context("a list of templates needs one named \"default\"")
        }
        Some(other) => bail!("expected a string or a list of named templates, got {other}"),
    }
}

/// The post-processor transformers' Llama-like classes build: `[bos] $A [eos]`. `origin` names the settings that
/// asked for it, for errors.
fn bos_eos_template(
    inner: &tokenizers::Tokenizer,
    special: &SpecialTokens,
    add_bos: bool,
    add_eos: bool,
    origin: &str,
) -> Result<TemplateProcessing> {
    let mut tokens = Vec::new();
    for (add, id, key) in [(add_bos, special.bos, "bos"), (add_eos, special.eos, "eos")] {
        if add {
            let id = id.ok_or_else(|| anyhow!("{origin}: add_{key}_token is true but no {key}_token is declared"))?;
            let token = inner.id_to_token(id).ok_or_else(|| anyhow!("{key} token id {id} has no text"))?;
            tokens.push((token, id));
        }
    }
    let bos = add_bos.then(|| tokens[0].0.clone());
    let eos = add_eos.then(|| tokens[tokens.len() - 1].0.clone());
    let seq = |s: &str, type_id: u32| {
        let mut parts: Vec<String> = bos.iter().map(|b| format!("{b}:{type_id}")).collect();
        parts.push(format!("${s}:{type_id}"));
        parts.extend(eos.iter().map(|e| format!("{e}:{type_id}")));
        parts.join(" ")
    };
    TemplateProcessing::builder()
        .try_single(seq("A", 0))
        .map_err(|e| anyhow!("BOS/EOS template: {e}"))?
        .try_pair(format!("{} {}", seq("A", 0), seq("B", 1)))
        .map_err(|e| anyhow!("BOS/EOS template: {e}"))?
        .special_tokens(tokens)
        .build()
        .map_err(|e| anyhow!("BOS/EOS template: {e}"))
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
