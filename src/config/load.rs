//! Loading a YAML config: `extends:` base files merged under it, `key.sub=value` overrides from the command line
//! on top, then typed deserialization whose errors name the key and where it was written (file:line, or the
//! override).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use super::locate::{join, key_lines};

/// Where a config key was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File { path: PathBuf, line: usize },
    Override(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { path, line } => write!(f, "{}:{line}", path.display()),
            Self::Override(text) => write!(f, "command-line override `{text}`"),
        }
    }
}

/// A merged config before typing: the value and where each key came from.
#[derive(Debug, Default)]
struct Layered {
    value: Mapping,
    sources: HashMap<String, Source>,
}

impl Layered {
    /// Deep-merges `top` over `self`: mappings merge key by key, anything else replaces.
    fn merge(&mut self, top: Layered) {
        merge_mappings(&mut self.value, top.value);
        self.sources.extend(top.sources);
    }
}

fn merge_mappings(base: &mut Mapping, top: Mapping) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(Value::Mapping(b)), Value::Mapping(t)) => merge_mappings(b, t),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// How many values a YAML text may expand to, per byte: aliases repeat their anchor's values, so a few KB of
/// `*a` references can ask for billions (serde_yaml caps the repeats, not what each repeat holds).
const VALUES_PER_BYTE: usize = 8;

/// Parses YAML into a value, refusing one that expands (through aliases) to more than [`VALUES_PER_BYTE`] values
/// per byte of text: memory stays proportional to the file.
fn parse_yaml(text: &str) -> std::result::Result<Value, serde_yaml::Error> {
    use serde::de::DeserializeSeed;
    let budget = std::cell::Cell::new(text.len().saturating_mul(VALUES_PER_BYTE).max(1024));
    bounded::Seed(&budget).deserialize(serde_yaml::Deserializer::from_str(text))
}

/// A YAML value built under a budget of values: each one built spends one, and none left is an error.
mod bounded {
    use std::cell::Cell;
    use std::fmt;

    use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
    use serde_yaml::value::{Tag, TaggedValue};
    use serde_yaml::{Mapping, Value};

    pub struct Seed<'a>(pub &'a Cell<usize>);

    impl<'de> DeserializeSeed<'de> for Seed<'_> {
        type Value = Value;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(Build(self.0))
        }
    }

    struct Build<'a>(&'a Cell<usize>);

    impl Build<'_> {
        fn spend<E: de::Error>(&self, value: Value) -> Result<Value, E> {
            let left = self.0.get();
            if left == 0 {
                return Err(E::custom("the YAML expands (through aliases) to far more values than its size holds"));
            }
            self.0.set(left - 1);
            Ok(value)
        }
    }

    impl<'de> Visitor<'de> for Build<'_> {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any YAML value")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
            self.spend(Value::Bool(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
            self.spend(Value::Number(v.into()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
            self.spend(Value::Number(v.into()))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
            self.spend(Value::Number(v.into()))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
            self.spend(Value::String(v.to_owned()))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
            self.spend(Value::Null)
        }
        fn visit_none<E: de::Error>(self) -> Result<Value, E> {
            self.spend(Value::Null)
        }
        fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            Seed(self.0).deserialize(d)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element_seed(Seed(self.0))? {
                items.push(item);
            }
            self.spend(Value::Sequence(items))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut mapping = Mapping::new();
            while let Some(key) = map.next_key_seed(Seed(self.0))? {
                let value = map.next_value_seed(Seed(self.0))?;
                if mapping.contains_key(&key) {
                    let key = serde_yaml::to_string(&key).unwrap_or_default();
                    return Err(de::Error::custom(format!("duplicate entry with key {}", key.trim_end())));
                }
                mapping.insert(key, value);
            }
            self.spend(Value::Mapping(mapping))
        }
        fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
            let (tag, contents) = data.variant_seed(std::marker::PhantomData::<String>)?;
            let value = contents.newtype_variant_seed(Seed(self.0))?;
            self.spend(Value::Tagged(Box::new(TaggedValue { tag: Tag::new(tag), value })))
        }
    }
}

/// Reads `path` and, first, the files it `extends` (a path or a list, relative to it).
fn read_layered(path: &Path, chain: &mut Vec<PathBuf>) -> Result<Layered> {
    let canonical = path.canonicalize().with_context(|| format!("cannot read config {}", path.display()))?;
    if chain.contains(&canonical) {
        bail!("{}: `extends` makes a cycle back to itself", path.display());
    }
    chain.push(canonical);
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
    let value = parse_yaml(&text).map_err(|e| match e.location() {
        Some(at) => anyhow!("{}:{}:{}: {e}", path.display(), at.line(), at.column()),
        None => anyhow!("{}: {e}", path.display()),
    })?;
    let mut mapping = match value {
        Value::Mapping(m) => m,
        Value::Null => Mapping::new(),
        _ => bail!("{}: a config must be a mapping of keys to values", path.display()),
    };
    let lines = key_lines(&text);
    let source = |key: &str| Source::File { path: path.to_path_buf(), line: lines.get(key).copied().unwrap_or(1) };
    let mut layered = Layered::default();
    if let Some(extends) = mapping.remove("extends") {
        let bases = match extends {
            Value::String(s) => vec![s],
            Value::Sequence(items) => items
                .into_iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| anyhow!("{}: `extends` lists file paths", source("extends")))
                })
                .collect::<Result<_>>()?,
            _ => bail!("{}: `extends` is a file path or a list of them", source("extends")),
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        for base in bases {
            let layer =
                read_layered(&dir.join(&base), chain).with_context(|| format!("extended by {}", source("extends")))?;
            layered.merge(layer);
        }
    }
    let sources = lines.keys().map(|k| (k.clone(), source(k))).collect();
    layered.merge(Layered { value: mapping, sources });
    chain.pop();
    Ok(layered)
}

/// Applies `key.sub=value` (the value read as YAML: `1e-3`, `true`, `'<P*20>{text}'`, `[a, b]`, `{a: 1}`). A value
/// that is not valid YAML, or reads as a block mapping (`text: more`) without braces, is taken as the text it
/// is: `prompt_format.template=<P*20>{premise} Вопрос: {hypothesis}? Ответ:` needs no extra quotes.
fn apply_override(layered: &mut Layered, text: &str) -> Result<()> {
    let (key, raw) = text.split_once('=').ok_or_else(|| anyhow!("override `{text}` is not key=value"))?;
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("override `{text}`: `{key}` is not a dotted key");
    }
    let value = match parse_yaml(raw) {
        Ok(Value::Mapping(_)) if !raw.trim_start().starts_with('{') => Value::String(raw.to_string()),
        Ok(value) => value,
        Err(_) => Value::String(raw.to_string()),
    };
    let mut node = &mut layered.value;
    let mut path = String::new();
    for part in &parts[..parts.len() - 1] {
        path = join(&path, part);
        let child = node.entry(Value::from(*part)).or_insert_with(|| Value::Mapping(Mapping::new()));
        if child.is_null() {
            *child = Value::Mapping(Mapping::new());
        }
        node = child.as_mapping_mut().ok_or_else(|| anyhow!("override `{text}`: `{path}` is not a mapping"))?;
    }
    node.insert(Value::from(parts[parts.len() - 1]), value);
    // The override replaced everything under `key`: the files' lines for those keys no longer say where a value
    // came from, so an error there names the override.
    layered.sources.retain(|k, _| !(k.starts_with(&format!("{key}.")) || k.starts_with(&format!("{key}["))));
    layered.sources.insert(key.to_string(), Source::Override(text.to_string()));
    Ok(())
}

/// A config that checks its values once typed, so that a bad value is refused on load, before anything runs.
pub trait Validate {
    /// The first value out of range: `Err((key, reason))`, the key dotted as in the YAML (`training.eval_every`).
    fn check(&self) -> std::result::Result<(), (String, String)>;
}

/// Loads `path` with its bases and `overrides`, and types it as `T`.
pub fn load<T: DeserializeOwned>(path: &Path, overrides: &[String]) -> Result<T> {
    let layered = layered(path, overrides)?;
    typed(path, &layered)
}

/// [`load`], then [`Validate::check`]: a value out of range is reported with the file:line (or the override)
/// that set it, as type errors are.
pub fn load_valid<T: DeserializeOwned + Validate>(path: &Path, overrides: &[String]) -> Result<T> {
    let layered = layered(path, overrides)?;
    let config: T = typed(path, &layered)?;
    config.check().map_err(|(key, reason)| located(path, &layered, &key, &reason))?;
    Ok(config)
}

fn layered(path: &Path, overrides: &[String]) -> Result<Layered> {
    let mut layered = read_layered(path, &mut Vec::new())?;
    for text in overrides {
        apply_override(&mut layered, text)?;
    }
    Ok(layered)
}

fn typed<T: DeserializeOwned>(path: &Path, layered: &Layered) -> Result<T> {
    let value = Value::Mapping(layered.value.clone());
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let key = e
            .path()
            .iter()
            .map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => format!("[{index}]"),
                serde_path_to_error::Segment::Map { key } => key.clone(),
                serde_path_to_error::Segment::Enum { variant } => variant.clone(),
                serde_path_to_error::Segment::Unknown => "?".to_string(),
            })
            .fold(String::new(), |path, s| join(&path, &s));
        located(path, layered, &key, &e.inner().to_string())
    })
}

/// `reason` about `key`, prefixed with where the innermost written part of the key was set. An override under
/// the key (`trainig.max_steps=5` for the unknown field `trainig`, `prompt_provider.kind=…` for the provider's
/// unknown variant) is named before a file line above it: serde stops at the key, but the override wrote it.
fn located(path: &Path, layered: &Layered, key: &str, reason: &str) -> anyhow::Error {
    let below = format!("{key}.");
    let under = layered
        .sources
        .iter()
        .filter(|(k, s)| matches!(s, Source::Override(_)) && !key.is_empty() && k.starts_with(&below))
        .min_by_key(|(k, _)| k.as_str())
        .map(|(_, s)| s);
    let mut prefix = key;
    let mut found = None;
    loop {
        if let Some(source) = layered.sources.get(prefix) {
            found = Some(source);
            break;
        }
        match prefix.rfind(['.', '[']) {
            Some(at) => prefix = &prefix[..at],
            None => break,
        }
    }
    let source = match found {
        Some(source @ Source::Override(_)) => Some(source),
        other => under.or(other),
    };
    match source {
        Some(source) => {
            let hint = match source {
                Source::Override(_) if reason.starts_with("invalid type") && reason.ends_with("expected a string") => {
                    " (override values are read as YAML: quote a text, e.g. 'key=\"1e-3\"')"
                }
                _ => "",
            };
            anyhow!("{source}: `{key}`: {reason}{hint}")
        }
        None if key.is_empty() || key == "?" => anyhow!("{}: {reason}", path.display()),
        None => anyhow!("{}: `{key}`: {reason}", path.display()),
    }
}
