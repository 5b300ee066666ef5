//! The prompts ruPrompts published on the Hub for ruGPT-3 Large (`pretrained_prompts/*.yaml`, built into the
//! binary): where each lives, its backbone, the fields its format takes and the decoding recipe of ruPrompts'
//! own notebooks, so `generate --prompt <name>` reproduces them.

use anyhow::{anyhow, ensure, Context, Result};
use serde::Deserialize;

use super::{GenerationConfig, Task};
use crate::format::Row;

/// One published prompt.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// What `--prompt` takes.
    pub name: String,
    /// The prompt's Hub repository and the revision to pull.
    pub hub: String,
    pub revision: String,
    /// The model the prompt was tuned for (a Hub id).
    pub backbone: String,
    pub task: Task,
    /// The fields a request gives (`text` fills a format with one field, whatever its name).
    pub fields: Vec<String>,
    /// A request to try it with.
    pub example: Row,
    /// The notebook of ruPrompts the decoding recipe comes from.
    pub recipe: String,
    pub decoding: GenerationConfig,
}

/// The catalogue's files, by name.
const FILES: [(&str, &str); 6] = [
    ("detox_russe", include_str!("../../pretrained_prompts/detox_russe.yaml")),
    ("title_mlsum", include_str!("../../pretrained_prompts/title_mlsum.yaml")),
    ("summarization_mlsum", include_str!("../../pretrained_prompts/summarization_mlsum.yaml")),
    ("qa_sberquad", include_str!("../../pretrained_prompts/qa_sberquad.yaml")),
    ("proverb", include_str!("../../pretrained_prompts/proverb.yaml")),
    ("joke", include_str!("../../pretrained_prompts/joke.yaml")),
];

/// The catalogue's names, in its order.
pub fn names() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|(name, _)| *name)
}

/// The entry called `name`, if the catalogue has one.
pub fn find(name: &str) -> Result<Option<Entry>> {
    let Some((_, text)) = FILES.iter().find(|(n, _)| *n == name) else { return Ok(None) };
    let file = format!("pretrained_prompts/{name}.yaml");
    let entry: Entry = serde_yaml::from_str(text).with_context(|| format!("{file} (built in)"))?;
    ensure!(entry.name == name, "{file} names itself {:?}", entry.name);
    entry.decoding.validate().map_err(|e| anyhow!("{file}: decoding: {e}"))?;
    Ok(Some(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_loads_and_its_recipe_is_valid() {
        for name in names() {
            let entry = find(name).unwrap().unwrap();
            assert!(entry.hub.starts_with("konodyuk/prompt_rugpt3large_"), "{name}: {}", entry.hub);
            assert_eq!(entry.backbone, "sberbank-ai/rugpt3large_based_on_gpt2");
            assert_eq!(entry.decoding.eos_token_id, Some(0), "{name}: ruPrompts' pipelines end on <pad>");
            let example: Vec<&String> = entry.example.keys().collect();
            match entry.task {
                Task::TextGeneration => assert!(entry.fields.is_empty() && example == ["text"], "{name}"),
                Task::Text2text => assert_eq!(example, entry.fields.iter().collect::<Vec<_>>(), "{name}"),
            }
        }
        let detox = find("detox_russe").unwrap().unwrap();
        assert_eq!((detox.decoding.num_beams, detox.decoding.num_return_sequences), (10, 10));
        assert!(find("no_such_prompt").unwrap().is_none());
    }
}
