//! ruPrompts' two pipelines over the batched decoder. `text-generation`: the prompt's format (without fields)
//! is a prefix before the user's text, and the full text comes back. `text2text`: the format is filled from the
//! request's fields, and only the new text comes back. Either way a batch may mix prompts by key.

use std::ops::ControlFlow;

use anyhow::{anyhow, bail, ensure, Result};
use serde::{Deserialize, Serialize};

use super::{cut_at_stop, generate_watched, Generated, GenerationConfig};
use crate::format::{PromptFormat, Row};
use crate::model::Model;
use crate::progress::Progress;
use crate::prompt::{MultiPrompt, Prompt};
use crate::tokenizer::Tokenizer;

/// Which pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// The prompt is a prefix before the text; returns the text and its continuation.
    TextGeneration,
    /// The format is filled from fields; returns only the new text.
    Text2text,
}

/// One input: the text (or fields) and, with several prompts, which one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Request {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Field values for text2text; a lone `text` fills a format with one field, whatever its name.
    pub fields: Row,
    /// Where the input came from (`in.jsonl:7`), for errors and warnings; `input N` of the batch otherwise.
    #[serde(skip)]
    pub origin: Option<String>,
}

/// One text a pipeline returns, and under beam search its score (log-probability over length^length_penalty).
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub text: String,
    pub score: Option<f32>,
}

/// Hears each output's text so far after every new token (see [`Pipeline::run_watched`]).
pub type TextWatch<'a> = dyn FnMut(&[String]) -> Result<ControlFlow<()>> + 'a;

/// The prompts a pipeline serves: one, several by key, or none (the bare model: the zero-shot baseline).
#[derive(Debug)]
pub enum Prompts {
    Single {
        prompt: Box<Prompt>,
        token_id: i64,
    },
    Multi(MultiPrompt),
    /// No prompt: the model reads the text as given, or a format without trainable tokens filled from the fields.
    Bare(Option<PromptFormat>),
}

impl Prompts {
    /// One prompt; its token is added to `tokenizer`.
    pub fn single(prompt: Prompt, tokenizer: &mut Tokenizer) -> Result<Self> {
        let token_id = prompt.add_token(tokenizer)?;
        Ok(Self::Single { prompt: Box::new(prompt), token_id })
    }

    /// The format a request fills (`None` for the bare model without one).
    fn format(&self, key: Option<&str>) -> Result<Option<&PromptFormat>> {
        match (self, key) {
            (Self::Single { prompt, .. }, None) => Ok(Some(prompt.format())),
            (Self::Bare(format), None) => Ok(format.as_ref()),
            (Self::Single { .. }, Some(key)) => bail!("prompt key {key:?} given, but only one prompt is loaded"),
            (Self::Bare(_), Some(key)) => bail!("prompt key {key:?} given, but no prompt is loaded"),
            (Self::Multi(multi), Some(key)) => Ok(Some(multi.get(key)?.format())),
            (Self::Multi(multi), None) => {
                bail!(
                    "several prompts are loaded ({}): say which with a key",
                    multi.keys().collect::<Vec<_>>().join(", ")
                )
            }
        }
    }
}

/// A frozen model, its tokenizer (with the prompt tokens added) and the prompts.
pub struct Pipeline<'a> {
    pub model: &'a Model,
    pub tokenizer: &'a Tokenizer,
    pub prompts: &'a Prompts,
    /// Hears that an input was cut to fit the model.
    pub progress: &'a dyn Progress,
    /// Put each input in the checkpoint's chat template as the user's turn (a text that is a JSON list of
    /// `{role, content}` messages is the conversation itself), and return the assistant's reply alone.
    pub chat: bool,
}

impl Pipeline<'_> {
    /// The text fed to the model for `request`, and the part of it to return in front of the new text.
    fn input_text(&self, task: Task, request: &Request) -> Result<(String, String)> {
        let Some(format) = self.prompts.format(request.key.as_deref())? else {
            let text = match request.fields.get("text") {
                Some(serde_json::Value::String(s)) if request.fields.len() == 1 => s.clone(),
                _ => bail!("without a prompt there is no format to fill: give one text per input"),
            };
            let head = if task == Task::TextGeneration { text.clone() } else { String::new() };
            return Ok((text, head));
        };
        let fields = format.fields();
        match task {
            Task::TextGeneration => {
                ensure!(
                    fields.is_empty(),
                    "the format {:?} has fields ({}); text-generation puts the text after a prompt without fields, \
                     use text2text",
                    format.template(),
                    fields.join(", ")
                );
                let text = match request.fields.get("text") {
                    Some(serde_json::Value::String(s)) if request.fields.len() == 1 => s.clone(),
                    _ => bail!("text-generation takes one text per input"),
                };
                Ok((format!("{}{text}", format.format(&Row::new())?.text), text))
            }
            Task::Text2text => {
                let mut row = request.fields.clone();
                if fields.len() == 1 && row.len() == 1 && row.contains_key("text") && fields[0] != "text" {
                    let value = row.remove("text").expect("checked");
                    row.insert(fields[0].to_string(), value);
                }
                if let Some(unknown) = row.keys().find(|k| !fields.contains(&k.as_str())) {
                    bail!("unknown field '{unknown}': the format {:?} has {}", format.template(), fields.join(", "));
                }
                Ok((format.format(&row)?.text, String::new()))
            }
        }
    }

    /// Generates for every request in one batch; returns `num_return_sequences` outputs per request.
    pub fn run(&self, task: Task, requests: &[Request], config: &GenerationConfig) -> Result<Vec<Vec<Output>>> {
        self.run_watched(task, requests, config, None)
    }

    /// [`Pipeline::run`], telling `watch` every output's text so far (in request order, `num_return_sequences`
    /// per request) after each new token, for greedy decoding and sampling; `Break` ends decoding there.
    pub fn run_watched(
        &self,
        task: Task,
        requests: &[Request],
        config: &GenerationConfig,
        mut watch: Option<&mut TextWatch>,
    ) -> Result<Vec<Vec<Output>>> {
        let window = self.model.config().n_positions as usize;
        // The prompt embeddings, computed once for the whole request batch.
        let injections = match self.prompts {
            Prompts::Single { prompt, token_id } => vec![prompt.injection(*token_id)],
            Prompts::Multi(multi) => multi.injections(),
            Prompts::Bare(_) => Vec::new(),
        };
        let prompt_ids: Vec<i64> = injections.iter().map(|i| i.token_id).collect();
        let mut inputs = Vec::with_capacity(requests.len());
        let mut heads = Vec::with_capacity(requests.len());
        for (i, request) in requests.iter().enumerate() {
            let name = request.origin.clone().unwrap_or_else(|| format!("input {}", i + 1));
            let (text, head) = self.input_text(task, request).map_err(|e| anyhow!("{name}: {e:#}"))?;
            let (text, head) = match self.chat {
                true => (self.chat_text(&text).map_err(|e| anyhow!("{name}: {e:#}"))?, String::new()),
                false => (text, head),
            };
            // A chat template writes the special tokens itself (transformers' apply_chat_template).
            let encoding =
                if self.chat { self.tokenizer.encode(&text)? } else { self.tokenizer.encode_sequence(&text)? };
            let mut ids: Vec<i64> = encoding.get_ids().iter().map(|&t| i64::from(t)).collect();
            ensure!(!ids.is_empty(), "{name} is empty");
            let room = window.saturating_sub(config.max_new_tokens);
            if ids.len() > room {
                // Prompt tokens and the tokenizer's specials (BOS) stay; the first text tokens go.
                let kept: Vec<bool> = ids
                    .iter()
                    .zip(encoding.get_special_tokens_mask())
                    .map(|(t, &special)| special == 1 || prompt_ids.contains(t))
                    .collect();
                let prompt_tokens = ids.iter().filter(|t| prompt_ids.contains(t)).count();
                ensure!(
                    kept.iter().filter(|&&k| k).count() < room,
                    "{name}: the prompt's {prompt_tokens} tokens and {} new tokens do not fit the model's {window} positions",
                    config.max_new_tokens
                );
                let mut excess = ids.len() - room;
                let warning =
                    format!("{name}: {} tokens do not fit; dropping the first {excess} text tokens", ids.len());
                self.progress.warn(&warning);
                let mut at = 0;
                ids.retain(|_| {
                    let drop = excess > 0 && !kept[at];
                    (excess, at) = (excess - usize::from(drop), at + 1);
                    !drop
                });
            }
            inputs.push(ids);
            heads.push(head);
        }
        let n = config.num_return_sequences;
        let text = |r: usize, g: &Generated| self.text(&heads[r], &inputs[r], g, config);
        let outputs = generate_watched(
            self.model,
            self.tokenizer,
            &inputs,
            &injections,
            config,
            &mut |rows| match watch.as_mut() {
                Some(watch) => {
                    let texts = rows.iter().enumerate().map(|(r, g)| text(r / n, g)).collect::<Result<Vec<_>>>()?;
                    watch(&texts)
                }
                None => Ok(ControlFlow::Continue(())),
            },
        )?;
        outputs
            .into_iter()
            .enumerate()
            .map(|(r, sequences)| {
                sequences.iter().map(|g| Ok(Output { text: text(r, g)?, score: g.sequence_score })).collect()
            })
            .collect()
    }

    /// `text` as the user's turn of a conversation (or, when it is a JSON list of messages, that conversation),
    /// rendered with the assistant's opening after it.
    fn chat_text(&self, text: &str) -> Result<String> {
        let template = self.tokenizer.chat_template().ok_or_else(|| {
            anyhow!("the model's checkpoint has no chat template (GGUF tokenizer.chat_template, chat_template.jinja or tokenizer_config.json's chat_template)")
        })?;
        let messages = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Array(messages)) if text.trim_start().starts_with('[') => messages,
            _ => vec![serde_json::json!({"role": "user", "content": text})],
        };
        template.render(&messages, true)
    }

    /// What `g` says after `head`: its new tokens as text after `input`, eos left out, cut before a stop string.
    fn text(&self, head: &str, input: &[i64], g: &Generated, config: &GenerationConfig) -> Result<String> {
        let ids: Vec<i64> = g.new_ids.iter().copied().filter(|&t| Some(t) != config.eos_token_id).collect();
        Ok(format!("{head}{}", cut_at_stop(&self.tokenizer.decode_after(input, &ids)?, &config.stop_strings)))
    }
}
