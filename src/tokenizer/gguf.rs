//! The tokenizer a GGUF file describes in its `tokenizer.*` metadata, built as transformers' GGUF converters build
//! it: `llama` files with a SentencePiece vocabulary (`tokenizer.ggml.model` = `llama`: BPE over the pieces with
//! byte fallback, merges from the file or derived from the scores) or a byte-level one (`gpt2`: Llama 3, SmolLM2),
//! and `qwen2` files (byte-level BPE with Qwen2's split). Which tokens are added to every sequence (BOS, EOS) is
//! the file's `tokenizer.ggml.add_bos_token` / `add_eos_token`, as llama.cpp reads it.

use anyhow::{anyhow, bail, Result};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::byte_level::ByteLevel as ByteLevelProcessor;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::gguf::Gguf;

/// What the metadata gives beside the tokenizer itself.
pub(super) struct Built {
    pub inner: tokenizers::Tokenizer,
    /// `tokenizer.ggml.{bos,eos,padding,unknown}_token_id`, checked against the vocabulary.
    pub ids: [Option<u32>; 4],
    pub add_bos: bool,
    pub add_eos: bool,
    /// transformers' `clean_up_tokenization_spaces` for this kind (true for Llama 3-style vocabularies).
    pub clean_up: bool,
    pub chat_template: Option<String>,
}

/// SentencePiece's word-boundary mark.
const SPACE: &str = "\u{2581}";

/// Qwen2's pre-tokenizer split (transformers' `Qwen2Converter`).
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// ggml's token type of control tokens (`<s>`, `<|im_start|>`): transformers makes them special added tokens.
const CONTROL: i64 = 3;

pub(super) fn build(g: &Gguf) -> Result<Built> {
    let path = g.path().display();
    let arch = g.required("general.architecture", g.string("general.architecture"))?;
    let kind = g.required("tokenizer.ggml.model", g.string("tokenizer.ggml.model"))?;
    let tokens = g.required("tokenizer.ggml.tokens", g.strings("tokenizer.ggml.tokens"))?;
    let n = tokens.len();
    let id = |key: &str| -> Result<Option<u32>> {
        let key = format!("tokenizer.ggml.{key}");
        match g.uint(&key)? {
            Some(i) if (i as usize) < n => Ok(Some(i as u32)),
            Some(i) => bail!("{path}: {key} is {i}, but the vocabulary has {n} tokens"),
            None => Ok(None),
        }
    };
    let ids = [id("bos_token_id")?, id("eos_token_id")?, id("padding_token_id")?, id("unknown_token_id")?];
    let types = g.ints("tokenizer.ggml.token_type")?;
    if let Some(types) = types {
        anyhow::ensure!(
            types.len() == n,
            "{path}: tokenizer.ggml.token_type has {} entries for {n} tokens",
            types.len()
        );
    }
    let add_space_prefix = g.bool("tokenizer.ggml.add_space_prefix")?;
    let (inner, clean_up) = match (arch, kind) {
        ("llama", "llama") => (sentencepiece(g, tokens, types, &ids, add_space_prefix.unwrap_or(true))?, false),
        ("llama", "gpt2") => (byte_level_llama(g, tokens, types, &ids, add_space_prefix.unwrap_or(true))?, true),
        ("qwen2", "gpt2") => (qwen2(g, tokens, add_space_prefix.unwrap_or(false))?, false),
        _ => bail!(
            "{path}: a tokenizer of kind '{kind}' (tokenizer.ggml.model) for architecture '{arch}' is not read \
             (llama files with llama or gpt2 vocabularies, and qwen2 files with gpt2 ones, are)"
        ),
    };
    Ok(Built {
        inner,
        ids,
        // Without the keys, the default of transformers' class for the architecture (Llama's adds BOS).
        add_bos: g.bool("tokenizer.ggml.add_bos_token")?.unwrap_or(arch == "llama"),
        add_eos: g.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
        clean_up,
        chat_template: g.string("tokenizer.chat_template")?.map(str::to_string),
    })
}

/// Token → id; a token listed twice keeps its last id, as Python's dict comprehension does.
fn vocab(tokens: &[String]) -> Vocab {
    tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect()
}

/// `"a b"` merges as pairs; a merge that is not two tokens is an error naming it.
fn merges(g: &Gguf) -> Result<Option<Vec<(String, String)>>> {
    let Some(merges) = g.strings("tokenizer.ggml.merges")? else { return Ok(None) };
    merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (a, b) = m.split_once(' ').ok_or_else(|| {
                anyhow!("{}: tokenizer.ggml.merges[{i}] is {m:?}, not two tokens with a space", g.path().display())
            })?;
            Ok((a.to_string(), b.to_string()))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// The merges transformers derives from SentencePiece scores when a file has none: every split of every piece
/// into two pieces, ordered by the pieces' scores, then (stably) by the merged piece's score, highest first.
fn merges_from_scores(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    let mut score = std::collections::HashMap::with_capacity(tokens.len());
    let mut order = Vec::with_capacity(tokens.len());
    for (t, &s) in tokens.iter().zip(scores) {
        if score.insert(t.as_str(), s).is_none() {
            order.push(t.as_str());
        }
    }
    let desc = |a: f32, b: f32| b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal);
    let mut merges: Vec<(&str, &str, f32)> = Vec::new();
    for piece in order {
        let merged = score[piece];
        let mut local: Vec<(&str, &str, f32)> = piece
            .char_indices()
            .skip(1)
            .map(|(at, _)| piece.split_at(at))
            .filter(|(l, r)| score.contains_key(l) && score.contains_key(r))
            .map(|(l, r)| (l, r, merged))
            .collect();
        local.sort_by(|a, b| desc(score[a.0], score[b.0]).then(desc(score[a.1], score[b.1])));
        merges.extend(local);
    }
    merges.sort_by(|a, b| desc(a.2, b.2));
    merges.into_iter().map(|(l, r, _)| (l.to_string(), r.to_string())).collect()
}

fn bpe(g: &Gguf, tokens: &[String], merges: Vec<(String, String)>, unk: Option<&str>, llama: bool) -> Result<BPE> {
    let mut builder = BPE::builder().vocab_and_merges(vocab(tokens), merges);
    if llama {
        builder = builder.fuse_unk(true).byte_fallback(true);
        if let Some(unk) = unk {
            builder = builder.unk_token(unk.to_string());
        }
    }
    builder.build().map_err(|e| anyhow!("{}: cannot build the tokenizer: {e}", g.path().display()))
}

/// The control tokens (type 3) as special tokens, or without types the unknown, BOS and EOS tokens.
fn specials(tokens: &[String], types: Option<&[i64]>, ids: &[Option<u32>; 4]) -> Vec<AddedToken> {
    let special = |t: &str| AddedToken::from(t.to_string(), true).normalized(false);
    match types {
        Some(types) => tokens.iter().zip(types).filter(|(_, &ty)| ty == CONTROL).map(|(t, _)| special(t)).collect(),
        None => [ids[3], ids[0], ids[1]].into_iter().flatten().map(|i| special(&tokens[i as usize])).collect(),
    }
}

/// transformers also declares the unknown and BOS tokens special (its GGUF converter gives BOS's text for EOS).
fn declared(tokens: &[String], ids: &[Option<u32>; 4]) -> Vec<AddedToken> {
    [ids[3], ids[0]]
        .into_iter()
        .flatten()
        .map(|i| AddedToken::from(tokens[i as usize].clone(), true).normalized(false))
        .collect()
}

fn finish(mut tok: tokenizers::Tokenizer, added: Vec<AddedToken>, g: &Gguf) -> Result<tokenizers::Tokenizer> {
    tok.add_special_tokens(added).map_err(|e| anyhow!("{}: cannot add the special tokens: {e}", g.path().display()))?;
    Ok(tok)
}

/// `tokenizer.ggml.model` = `llama`: pieces with scores, `▁` for spaces (legacy normalizer), byte fallback.
fn sentencepiece(
    g: &Gguf,
    tokens: &[String],
    types: Option<&[i64]>,
    ids: &[Option<u32>; 4],
    add_prefix_space: bool,
) -> Result<tokenizers::Tokenizer> {
    let merges = match merges(g)? {
        Some(m) => m,
        None => {
            let scores = g.required("tokenizer.ggml.scores", g.floats("tokenizer.ggml.scores"))?;
            anyhow::ensure!(
                scores.len() == tokens.len(),
                "{}: tokenizer.ggml.scores has {} entries for {} tokens",
                g.path().display(),
                scores.len(),
                tokens.len()
            );
            merges_from_scores(tokens, scores)
        }
    };
    let unk = ids[3].map(|i| tokens[i as usize].as_str());
    let mut tok = tokenizers::Tokenizer::new(bpe(g, tokens, merges, unk, true)?);
    let mut normalizers = Vec::new();
    if add_prefix_space {
        normalizers.push(Prepend::new(SPACE.into()).into());
    }
    normalizers.push(Replace::new(" ", SPACE).map_err(|e| anyhow!("{e}"))?.into());
    tok.with_normalizer(Some(NormalizerSequence::new(normalizers))).map_err(|e| anyhow!("{e}"))?;
    let mut decoders: Vec<DecoderWrapper> = vec![
        ByteFallback::new().into(),
        Fuse::new().into(),
        Replace::new(SPACE, " ").map_err(|e| anyhow!("{e}"))?.into(),
    ];
    if add_prefix_space {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(decoders)));
    let mut added = specials(tokens, types, ids);
    added.extend(declared(tokens, ids));
    finish(tok, added, g)
}

/// `tokenizer.ggml.model` = `gpt2` in a `llama` file (Llama 3, SmolLM2): byte-level BPE with GPT-2's split. As in
/// transformers, decoding drops a text's first space unless the file sets `add_space_prefix` false (SmolLM2 does).
fn byte_level_llama(
    g: &Gguf,
    tokens: &[String],
    types: Option<&[i64]>,
    ids: &[Option<u32>; 4],
    add_space_prefix: bool,
) -> Result<tokenizers::Tokenizer> {
    let merges = g.required("tokenizer.ggml.merges", merges(g))?;
    let unk = ids[3].map(|i| tokens[i as usize].as_str());
    let mut tok = tokenizers::Tokenizer::new(bpe(g, tokens, merges, unk, true)?);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, false, true)));
    let mut decoders: Vec<DecoderWrapper> = vec![
        ByteFallback::new().into(),
        Fuse::new().into(),
        Replace::new(SPACE, " ").map_err(|e| anyhow!("{e}"))?.into(),
        ByteLevel::new(false, false, true).into(),
    ];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(decoders)));
    let mut added = specials(tokens, types, ids);
    added.extend(declared(tokens, ids));
    finish(tok, added, g)
}

/// A `qwen2` file: byte-level BPE after NFC and Qwen2's split; its three chat tokens special.
fn qwen2(g: &Gguf, tokens: &[String], add_prefix_space: bool) -> Result<tokenizers::Tokenizer> {
    let merges = g.required("tokenizer.ggml.merges", merges(g))?;
    let mut tok = tokenizers::Tokenizer::new(bpe(g, tokens, merges, None, false)?);
    tok.with_normalizer(Some(NFC)).map_err(|e| anyhow!("{e}"))?;
    let split = Split::new(SplitPattern::Regex(QWEN2_SPLIT.into()), SplitDelimiterBehavior::Isolated, false)
        .map_err(|e| anyhow!("Qwen2's split pattern: {e}"))?;
    tok.with_pre_tokenizer(Some(PreSequence::new(vec![
        split.into(),
        ByteLevel::new(add_prefix_space, true, false).into(),
    ])));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.with_post_processor(Some(ByteLevelProcessor::new(true, false, true)));
    let added = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(|t| AddedToken::from(t.to_string(), true).normalized(false))
        .to_vec();
    finish(tok, added, g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_from_scores_follow_the_merged_pieces_scores() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"].map(String::from).to_vec();
        let scores = [-1.0, -2.0, -3.0, -0.5, -0.7, -0.1];
        let merges = merges_from_scores(&tokens, &scores);
        let pairs: Vec<(&str, &str)> = merges.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        // "abc" (score -0.1) first: its splits by their pieces' scores, "ab"+"c" (-0.5) before "a"+"bc" (-1.0).
        assert_eq!(pairs, [("ab", "c"), ("a", "bc"), ("a", "b"), ("b", "c")]);
    }
}
