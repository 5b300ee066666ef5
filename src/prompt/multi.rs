//! Several prompts on one frozen model, each with its own keyed prompt token (`<|[key]P|>`). Unlike
//! ruPrompts (one key per batch) rows of one batch may use different prompts.

use anyhow::{anyhow, ensure, Result};
use tch::Tensor;

use super::{inject, Injected, Injection, Prompt};
use crate::model::Model;
use crate::tokenizer::Tokenizer;

#[derive(Debug)]
pub struct MultiPrompt {
    /// (key, prompt with keyed format, its token id), in the order given (token ids follow it, as in ruPrompts).
    prompts: Vec<(String, Prompt, i64)>,
}

impl MultiPrompt {
    /// Keys every prompt's format and adds the keyed prompt tokens to `tokenizer`, in the order given.
    pub fn new(prompts: Vec<(String, Prompt)>, tokenizer: &mut Tokenizer) -> Result<Self> {
        let mut out: Vec<(String, Prompt, i64)> = Vec::new();
        for (key, mut prompt) in prompts {
            ensure!(!key.is_empty() && !key.contains(['[', ']', '|']), "bad prompt key {key:?}");
            ensure!(out.iter().all(|(k, _, _)| *k != key), "prompt key {key:?} given twice");
            prompt.format = prompt.format.clone().with_key(Some(&key));
            let id = prompt.add_token(tokenizer)?;
            out.push((key, prompt, id));
        }
        Ok(Self { prompts: out })
    }

    pub fn get(&self, key: &str) -> Result<&Prompt> {
        self.prompts.iter().find(|(k, _, _)| k == key).map(|(_, p, _)| p).ok_or_else(|| {
            anyhow!("unknown prompt key {key:?} (known: {})", self.keys().collect::<Vec<_>>().join(", "))
        })
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.prompts.iter().map(|(k, _, _)| k.as_str())
    }

    /// Every prompt's embeddings, computed now, each at its keyed token.
    pub fn injections(&self) -> Vec<Injection<'_>> {
        self.prompts.iter().map(|(_, p, id)| p.injection(*id)).collect()
    }

    /// What the model reads for `ids` with every prompt injected where its tokens are; rows may mix keys.
    pub fn embed(&self, model: &Model, ids: &Tensor) -> Result<Injected> {
        inject(model, ids, &self.injections())
    }
}
