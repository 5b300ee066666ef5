//! The model card pushed with a prompt: `README.md` with YAML front matter the Hub reads (base model, library,
//! tags, `model-index` results) plus the prompt's own settings, and a body that says how to use it.

use serde::Serialize;

use super::RepoId;
use crate::prompt::Prompt;
use crate::provider::ProviderConfig;
use crate::report::Report;
use crate::task::RsgTask;

#[derive(Debug, Serialize)]
struct FrontMatter<'a> {
    library_name: &'static str,
    /// Only a Hub id: the Hub links it and rejects anything else.
    #[serde(skip_serializing_if = "Option::is_none")]
    base_model: Option<String>,
    tags: [&'static str; 3],
    pipeline_tag: &'static str,
    ruprompts: PromptSettings<'a>,
    #[serde(rename = "model-index", skip_serializing_if = "Vec::is_empty")]
    model_index: Vec<IndexEntry>,
}

#[derive(Debug, Serialize)]
struct PromptSettings<'a> {
    template: &'a str,
    prompt_length: usize,
    embedding_dim: i64,
    provider: &'a ProviderConfig,
    trainable_parameters: i64,
    /// The backbone as training named it (a Hub id or a local folder).
    #[serde(skip_serializing_if = "Option::is_none")]
    backbone: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct IndexEntry {
    name: String,
    results: Vec<IndexResult>,
}

#[derive(Debug, Serialize)]
struct IndexResult {
    task: IndexTask,
    dataset: IndexDataset,
    metrics: Vec<IndexMetric>,
}

#[derive(Debug, Serialize)]
struct IndexTask {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Debug, Serialize)]
struct IndexDataset {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<String>,
}

#[derive(Debug, Serialize)]
struct IndexMetric {
    #[serde(rename = "type")]
    kind: String,
    value: f64,
    name: String,
}

/// The model-index results of `report`: the tuned value of every metric that has one.
fn results(report: &Report) -> Vec<IndexResult> {
    report
        .tasks
        .iter()
        .filter_map(|t| {
            let rsg = RsgTask::ALL.iter().find(|r| r.name() == t.task);
            let metrics: Vec<IndexMetric> = t
                .metrics
                .iter()
                .filter_map(|m| {
                    let value = m.tuned?;
                    Some(IndexMetric { kind: m.metric.clone(), value, name: format!("{} (tuned prompt)", m.metric) })
                })
                .collect();
            (!metrics.is_empty()).then(|| IndexResult {
                task: IndexTask { kind: if rsg.is_some() { "text-classification" } else { "text2text-generation" } },
                dataset: IndexDataset {
                    name: t.task.clone(),
                    kind: if rsg.is_some() { "russian_super_glue".into() } else { t.task.to_lowercase() },
                    config: rsg.map(|r| r.name().to_lowercase()),
                },
                metrics,
            })
        })
        .collect()
}

/// `README.md` for `prompt` pushed to `repo`, with `report` (the run's `eval/report.json`) when there is one.
pub fn model_card(repo: &RepoId, prompt: &Prompt, report: Option<&Report>) -> String {
    let id = format!("{}/{}", repo.owner, repo.name);
    let backbone = prompt.pretrained_model_name.as_deref();
    // A name that is also a folder here is a local path, whatever its shape.
    let base_model = backbone
        .filter(|b| !std::path::Path::new(b).exists())
        .and_then(RepoId::parse)
        .map(|r| format!("{}/{}", r.owner, r.name));
    let template = prompt.format().template();
    let results = report.map(results).unwrap_or_default();
    let front = FrontMatter {
        library_name: "ruprompts",
        base_model: base_model.clone(),
        tags: ["ruprompts", "prompt-tuning", "p-tuning"],
        pipeline_tag: "text-generation",
        ruprompts: PromptSettings {
            template,
            prompt_length: prompt.format().prompt_length(),
            embedding_dim: prompt.embedding_dim(),
            provider: prompt.provider_config(),
            trainable_parameters: prompt.num_parameters(),
            backbone,
        },
        model_index: if results.is_empty() { vec![] } else { vec![IndexEntry { name: id.clone(), results }] },
    };
    let yaml = serde_yaml::to_string(&front).expect("the front matter is plain data");
    let on = match (&base_model, backbone) {
        (Some(b), _) => format!(" for [{b}](https://huggingface.co/{b})"),
        (None, Some(b)) => format!(" for `{b}`"),
        (None, None) => String::new(),
    };
    let fields = prompt.format().fields();
    let run = if fields.is_empty() {
        format!("ruprompts generate --prompt {id} --task text-generation \"Начало текста\"")
    } else {
        let args: Vec<String> = fields.iter().map(|f| format!("--field {f}=\"…\"")).collect();
        format!("ruprompts generate --prompt {id} {}", args.join(" "))
    };
    // ruPrompts has no deep prompts: for those, PEFT is the Python route.
    let python = match prompt.virtual_tokens() {
        0 => format!(
            "With Python ruPrompts (it reads `prompt.json` and `prompt_provider.bin`):\n\n```python\nfrom ruprompts \
             import Prompt\nprompt = Prompt.from_pretrained(\"{id}\")\n```\n"
        ),
        n => format!(
            "A deep prompt: before the format come {n} virtual tokens whose keys and values every layer reads \
             (prefix tuning). Python ruPrompts has no such prompts; `ruprompts export --peft {id} OUT` writes a PEFT \
             PREFIX_TUNING adapter when the format has no prompt tokens of its own.\n"
        ),
    };
    let mut card = format!(
        "---\n{yaml}---\n\n# {id}\n\nA soft prompt{on}, trained with ruprompts (continuous prompt tuning, compatible with \
         [ruPrompts](https://github.com/ai-forever/ru-prompts)): the language model stays frozen; only the prompt's {} \
         parameters (a {} provider) were trained.\n\n## Format\n\n```\n{template}\n```\n\nEach `<P>` is a trained \
         embedding; each `{{field}}` is filled from the input.\n\n## Use\n\n```sh\n{run}\n```\n\n{python}",
        prompt.num_parameters(),
        prompt.provider_config().name(),
    );
    if let Some(report) = report {
        card.push_str("\n## Evaluation\n\n");
        card.push_str(report.markdown().trim_start_matches("# Zero-shot vs tuned\n\n"));
    }
    card
}
