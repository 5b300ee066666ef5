//! `ruprompts generate`: texts (arguments, a jsonl file or stdin) through a prompt pipeline, jsonl out, or one
//! text streamed as it is decoded.

use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use super::bars::Bars;
use super::decoding::DecodingArgs;
use super::Placement;
use crate::data::read_rows;
use crate::format::Row;
use crate::generate::catalogue::{self, Entry};
use crate::generate::{settled, GenerationConfig, Output, Pipeline, Prompts, Request, Task};
use crate::model::Backbone;
use crate::prompt::{MultiPrompt, Prompt};
use crate::resolve;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// A saved prompt folder (ours or Python ruPrompts'), a Hub id (owner/name[@revision]) or the name of a prompt
    /// ruPrompts published (detox_russe, title_mlsum, summarization_mlsum, qa_sberquad, proverb, joke: pulled
    /// with its backbone and decoded with its notebook's recipe, which flags override); repeat as KEY=DIR to
    /// serve several prompts by key. Without it the bare --model decodes the texts: the zero-shot baseline.
    #[arg(long, value_name = "DIR|HUB-ID|NAME|KEY=DIR", required_unless_present = "model")]
    pub prompt: Vec<String>,
    /// Model folder, .gguf file or Hub id; default: the published prompt's backbone, else the model named in
    /// prompt.json (`demo` is the bundled tiny model). Alone (no --prompt), the bare model generates.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Chat: each text is the user's turn in the checkpoint's chat template (a text that is a JSON list of
    /// {"role", "content"} messages is the whole conversation), and the assistant's reply comes back. With a
    /// prompt, its format filled with the text is the user's turn.
    #[arg(long)]
    pub chat: bool,
    /// text2text fills the format from fields and returns the new text; text-generation puts the text after
    /// a field-less prompt and returns the whole text. Default: the published prompt's, else text2text.
    #[arg(long, value_enum)]
    pub task: Option<Task>,
    /// A field value for the format, e.g. --field question="Где живут пингвины?" (repeatable).
    #[arg(long = "field", value_name = "NAME=VALUE")]
    pub fields: Vec<String>,
    /// Which prompt the texts use, when several are loaded.
    #[arg(long)]
    pub key: Option<String>,
    /// Inputs from a jsonl file (each line the format's fields or {"text": ...}, optionally "key"); `-` reads
    /// texts from stdin, one a line.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Write the jsonl results here instead of stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Print the text as it is decoded, token by token (one input, one output, no beams; with several inputs,
    /// whole lines as without it). Ctrl-C stops it, keeping what was printed.
    #[arg(long)]
    pub stream: bool,
    /// Inputs decoded together.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Texts to continue or transform.
    pub texts: Vec<String>,
    #[command(flatten)]
    pub placement: Placement,
    #[command(flatten, next_help_heading = "Decoding (transformers' names; unset: the recipe or the default)")]
    pub decoding: DecodingArgs,
}

fn requests(args: &GenerateArgs) -> Result<Vec<Request>> {
    let mut fields = Row::new();
    for pair in &args.fields {
        let (name, value) = pair.split_once('=').ok_or_else(|| anyhow!("--field {pair:?} is not NAME=VALUE"))?;
        fields.insert(name.to_string(), Value::String(value.to_string()));
    }
    let text = |t: String, origin: String| {
        let mut row = fields.clone();
        row.insert("text".into(), Value::String(t));
        Request { key: args.key.clone(), fields: row, origin: Some(origin) }
    };
    if !args.texts.is_empty() {
        return Ok(args.texts.iter().enumerate().map(|(i, t)| text(t.clone(), format!("text {}", i + 1))).collect());
    }
    match &args.input {
        Some(path) if path.as_os_str() == "-" => {
            let lines = std::io::stdin().lock().lines().collect::<std::io::Result<Vec<_>>>()?;
            let lines = lines.into_iter().enumerate().filter(|(_, l)| !l.trim().is_empty());
            Ok(lines.map(|(i, l)| text(l, format!("stdin:{}", i + 1))).collect())
        }
        Some(path) => read_rows(path)?
            .into_iter()
            .map(|record| {
                let mut row = record.row;
                let key = match row.remove("key") {
                    Some(Value::String(k)) => Some(k),
                    Some(_) => bail!("{}: \"key\" must be a string", record.origin),
                    None => args.key.clone(),
                };
                Ok(Request { key, fields: row, origin: Some(record.origin.to_string()) })
            })
            .collect(),
        None if !fields.is_empty() => Ok(vec![Request { key: args.key.clone(), fields, origin: None }]),
        None => bail!("nothing to generate from: give texts, --field NAME=VALUE, or --input FILE.jsonl (- for stdin)"),
    }
}

/// The published prompt a `--prompt` value names (`KEY=NAME` or `NAME`), unless a folder of that name exists.
fn published(spec: &str) -> Result<Option<Entry>> {
    let name = spec.split_once('=').map_or(spec, |(_, name)| name);
    if Path::new(name).exists() {
        return Ok(None);
    }
    catalogue::find(name)
}

/// A `--prompt` value: its key and the folder to load (a published prompt's or a Hub id's pulled first).
fn resolve_prompt(spec: &str) -> Result<(Option<String>, PathBuf)> {
    let (key, name) = match spec.split_once('=') {
        Some((k, d)) => (Some(k.to_string()), d),
        None => (None, spec),
    };
    Ok((key, prompt_folder(name, "--prompt")?))
}

/// The folder of a prompt named by a folder, a Hub id owner/name[@rev] or the name of a prompt ruPrompts
/// published; `what` names the argument in errors.
pub(super) fn prompt_folder(name: &str, what: &str) -> Result<PathBuf> {
    let path = match published(name)? {
        Some(e) => PathBuf::from(format!("{}@{}", e.hub, e.revision)),
        // A bare name that is neither a folder nor published: say what the names are.
        None if !name.contains('/') && !Path::new(name).exists() => bail!(
            "no folder {name} ({what}), and no prompt ruPrompts published is called that ({})",
            catalogue::names().collect::<Vec<_>>().join(", ")
        ),
        None => PathBuf::from(name),
    };
    resolve::prompt_dir(&path, what)
}

/// A `--prompt` value's key and the prompt it names, loaded on `device`; errors name the value.
pub(super) fn load_prompt(spec: &str, device: tch::Device) -> Result<(Option<String>, Prompt)> {
    let (key, dir) = resolve_prompt(spec).with_context(|| format!("--prompt {spec}"))?;
    let prompt = Prompt::load(&dir, device).with_context(|| format!("--prompt {spec}"))?;
    Ok((key, prompt))
}

pub fn run(args: GenerateArgs) -> Result<()> {
    ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    // Settings and inputs are checked before anything loads: a published prompt's recipe (when it is the only
    // prompt) under the flags.
    let entry = match args.prompt.as_slice() {
        [one] => published(one).with_context(|| format!("--prompt {one}"))?,
        _ => None,
    };
    let base = entry
        .as_ref()
        .map_or_else(|| GenerationConfig { max_new_tokens: 100, ..Default::default() }, |e| e.decoding.clone());
    let mut config = args.decoding.over(base);
    config.validate()?;
    // Caught from the start, so Ctrl-C while the inputs are read or the model loads ends cleanly too.
    let interrupted = args.stream.then(catch_ctrl_c).transpose()?;
    let requests = requests(&args)?;
    let streaming = args.stream && requests.len() == 1 && config.num_return_sequences == 1;
    ensure!(
        !(args.stream && config.num_beams > 1),
        "--stream prints tokens as they are decoded, but beam search settles its texts only at the end: drop \
         --stream or decode with --num-beams 1"
    );
    let device = args.placement.device().resolve()?;
    let mut loaded = args.prompt.iter().map(|spec| load_prompt(spec, device)).collect::<Result<Vec<_>>>()?;
    let bars = Bars::default();
    let named = entry
        .as_ref()
        .map(|e| e.backbone.clone())
        .or_else(|| loaded.first().and_then(|(_, p)| p.pretrained_model_name.clone()));
    let Backbone { model, mut tokenizer, .. } = match (&args.model, named) {
        (Some(dir), _) => resolve::backbone(&args.placement.model(dir.clone()), &bars).context("--model")?,
        (None, Some(named)) => resolve::backbone(&args.placement.model(named.into()), &bars)
            .context("the prompt's model (pass --model DIR to use another)")?,
        (None, None) => {
            bail!("the prompt's prompt.json names no model (config.pretrained_model_name): pass --model DIR")
        }
    };
    if entry.is_none() && args.decoding.eos_token_id.is_none() {
        config.eos_token_id = tokenizer.special().eos.map(i64::from);
    }
    let prompts = if loaded.is_empty() {
        Prompts::Bare(None)
    } else if loaded.len() == 1 && loaded[0].0.is_none() {
        Prompts::single(loaded.pop().expect("one").1, &mut tokenizer)?
    } else {
        let keyed = loaded
            .into_iter()
            .map(|(k, p)| {
                k.map(|k| (k, p)).ok_or_else(|| anyhow!("with several prompts, give each as --prompt KEY=DIR"))
            })
            .collect::<Result<Vec<_>>>()?;
        Prompts::Multi(MultiPrompt::new(keyed, &mut tokenizer)?)
    };
    let task = args.task.or(entry.as_ref().map(|e| e.task)).unwrap_or(Task::Text2text);
    let pipeline =
        Pipeline { model: &model, tokenizer: &tokenizer, prompts: &prompts, progress: &bars, chat: args.chat };
    let lines = if streaming {
        let interrupted = interrupted.expect("caught with --stream");
        vec![stream(&pipeline, task, &requests[0], &config, &interrupted)?.ok_or(super::Interrupted)?]
    } else {
        Vec::new()
    };
    write_lines(&args, &pipeline, task, &requests, &config, lines)
}

/// Writes a jsonl line per request: to `--output` (through a temp file renamed into place at the end, so a
/// failure leaves the file as it was) or, unless it was streamed, stdout. `done` holds outputs already made.
fn write_lines(
    args: &GenerateArgs,
    pipeline: &Pipeline,
    task: Task,
    requests: &[Request],
    config: &GenerationConfig,
    done: Vec<Vec<Output>>,
) -> Result<()> {
    let temp = match &args.output {
        Some(path) => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            Some(tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write {}", path.display()))?)
        }
        None if !done.is_empty() => return Ok(()),
        None => None,
    };
    let mut out: Box<dyn Write> = match &temp {
        Some(file) => Box::new(std::io::BufWriter::new(file.as_file())),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut done = done.into_iter();
    for chunk in requests.chunks(args.batch_size) {
        let outputs = match done.next() {
            Some(outputs) => vec![outputs],
            None => pipeline.run(task, chunk, config)?,
        };
        for (request, generated) in chunk.iter().zip(outputs) {
            let texts: Vec<&str> = generated.iter().map(|o| o.text.as_str()).collect();
            let mut line = json!({ "input": request.fields, "generated": texts });
            if config.num_beams > 1 {
                line["scores"] = json!(generated.iter().map(|o| o.score).collect::<Vec<_>>());
            }
            if let Some(key) = &request.key {
                line["key"] = json!(key);
            }
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    drop(out);
    if let (Some(file), Some(path)) = (temp, &args.output) {
        file.persist(path).map_err(|e| anyhow!("cannot write {}: {}", path.display(), e.error))?;
    }
    Ok(())
}

/// A flag Ctrl-C sets instead of killing the process.
fn catch_ctrl_c() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).context("cannot catch Ctrl-C")?;
    Ok(stop)
}

/// Prints `request`'s text to stdout as it is decoded and returns its outputs, or `None` when `stop` was set
/// (Ctrl-C): what was printed stays, ended by a newline.
fn stream(
    pipeline: &Pipeline,
    task: Task,
    request: &Request,
    config: &GenerationConfig,
    stop: &AtomicBool,
) -> Result<Option<Vec<Output>>> {
    let mut printer = Printer { shown: 0, stop_strings: &config.stop_strings, out: std::io::stdout() };
    let stopped = || stop.load(Ordering::SeqCst);
    let mut watch = |texts: &[String]| {
        printer.show(&texts[0], false)?;
        Ok(if stopped() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
    };
    let outputs = match stopped() {
        true => None,
        false => Some(pipeline.run_watched(task, std::slice::from_ref(request), config, Some(&mut watch))?),
    };
    match outputs {
        Some(mut outputs) if !stopped() => {
            let outputs = outputs.remove(0);
            printer.finish(Some(&outputs[0].text))?;
            Ok(Some(outputs))
        }
        _ => {
            printer.finish(None)?;
            Ok(None)
        }
    }
}

/// Writes a growing text's new part, holding back what may still change: an unfinished UTF-8 character (shown
/// by the decoder as U+FFFD) and an ending that could start a stop string.
struct Printer<'a, W: Write> {
    shown: usize,
    stop_strings: &'a [String],
    out: W,
}

impl<W: Write> Printer<'_, W> {
    fn show(&mut self, text: &str, last: bool) -> Result<()> {
        let end = if last { text.len() } else { settled(text, self.stop_strings) };
        if let Some(new) = text.get(self.shown..end).filter(|n| !n.is_empty()) {
            self.out.write_all(new.as_bytes())?;
            self.out.flush()?;
            self.shown = end;
        }
        Ok(())
    }

    /// Writes the rest of the final `text` (none when interrupted) and a newline.
    fn finish(&mut self, text: Option<&str>) -> Result<()> {
        if let Some(text) = text {
            self.show(text, true)?;
        }
        writeln!(self.out)?;
        Ok(self.out.flush()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printer_holds_back_unfinished_characters_and_stop_string_starts() {
        let stops = ["###".to_string()];
        let mut printer = Printer { shown: 0, stop_strings: &stops, out: Vec::new() };
        for (text, shown) in [
            ("При", "При"),
            ("Привет\u{FFFD}", "Привет"),
            ("Привет, ми", "Привет, ми"),
            ("Привет, мир#", "Привет, мир"),
            ("Привет, мир##", "Привет, мир"),
            ("Привет, мир##!", "Привет, мир##!"),
        ] {
            printer.show(text, false).unwrap();
            assert_eq!(String::from_utf8(printer.out.clone()).unwrap(), shown, "after {text:?}");
        }
        printer.finish(Some("Привет, мир##! Пока")).unwrap();
        assert_eq!(String::from_utf8(printer.out.clone()).unwrap(), "Привет, мир##! Пока\n");
        let mut cut = Printer { shown: 0, stop_strings: &stops, out: Vec::new() };
        cut.show("Да#", false).unwrap();
        cut.finish(None).unwrap();
        assert_eq!(String::from_utf8(cut.out).unwrap(), "Да\n");
    }
}
