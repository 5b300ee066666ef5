//! A checkpoint's chat template (Jinja), rendered as transformers' `apply_chat_template` renders it: blocks trimmed
//! (`trim_blocks`, `lstrip_blocks`), Python's string methods, `raise_exception`, `strftime_now`, a `tojson` that
//! writes what Python's `json.dumps` writes, and the special tokens' texts as variables.

use std::sync::Arc;

use anyhow::{anyhow, ensure, Result};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::Value as Json;

/// Work a render may do (minijinja's fuel): far more than any real template spends, and a bound on one that a
/// hostile checkpoint could make loop.
const FUEL: u64 = 50_000_000;

/// A compiled chat template.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    /// `bos_token`, `eos_token`, `unk_token`, `pad_token`: the texts templates may print.
    specials: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source`; `specials` are the special tokens' texts by their variable names (`bos_token`, …).
    pub fn new(source: &str, specials: Vec<(&'static str, String)>) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_function("strftime_now", |format: String| strftime_now(&format));
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat_template", source.to_string())
            .map_err(|e| anyhow!("the chat template does not compile: {e:#}"))?;
        Ok(Self { env: Arc::new(env), specials })
    }

    /// The conversation `messages` (objects with `role` and `content`, passed to the template as given) as text,
    /// ending with the assistant's opening when `add_generation_prompt`.
    pub fn render(&self, messages: &[Json], add_generation_prompt: bool) -> Result<String> {
        for (i, m) in messages.iter().enumerate() {
            ensure!(
                m.get("role").is_some_and(Json::is_string),
                "message {i} needs a \"role\" string (system, user or assistant): {m}"
            );
        }
        let mut context: Vec<(&str, Value)> = vec![
            ("messages", Value::from_serialize(messages)),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
        ];
        context.extend(self.specials.iter().map(|(k, v)| (*k, Value::from(v.as_str()))));
        let context: std::collections::BTreeMap<&str, Value> = context.into_iter().collect();
        let template = self.env.get_template("chat_template").expect("added in new");
        template.render(context).map_err(|e| anyhow!("the chat template failed: {e:#}"))
    }
}

impl ChatTemplate {
    /// What the template puts before and after `text` as the user's one turn with the assistant's opening after it:
    /// `head + text + tail` is that render. An error when the template does not write `text` unchanged.
    pub fn user_turn(&self, text: &str) -> Result<(String, String)> {
        let rendered = self.render(&[serde_json::json!({"role": "user", "content": text})], true)?;
        let at = rendered.rfind(text).filter(|_| !text.is_empty()).ok_or_else(|| {
            anyhow!(
                "the chat template changes the user's text (it does not write {text:?} as given), so it cannot wrap it"
            )
        })?;
        Ok((rendered[..at].to_string(), rendered[at + text.len()..].to_string()))
    }
}

/// Python's `json.dumps(x, ensure_ascii=False)` (", " and ": " between items), or with `indent`.
fn tojson(value: Value, indent: Option<usize>) -> Result<Value, Error> {
    let json: Json =
        serde_json::to_value(&value).map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = String::new();
    python_json(&json, indent, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn python_json(v: &Json, indent: Option<usize>, depth: usize, out: &mut String) {
    let (open_sep, item_sep, close_sep) = match indent {
        Some(n) => (
            format!("\n{}", " ".repeat(n * (depth + 1))),
            format!(",\n{}", " ".repeat(n * (depth + 1))),
            format!("\n{}", " ".repeat(n * depth)),
        ),
        None => (String::new(), ", ".to_string(), String::new()),
    };
    match v {
        Json::Array(items) if !items.is_empty() => {
            out.push('[');
            out.push_str(&open_sep);
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&item_sep);
                }
                python_json(item, indent, depth + 1, out);
            }
            out.push_str(&close_sep);
            out.push(']');
        }
        Json::Object(map) if !map.is_empty() => {
            out.push('{');
            out.push_str(&open_sep);
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(&item_sep);
                }
                out.push_str(&Json::String(k.clone()).to_string());
                out.push_str(": ");
                python_json(item, indent, depth + 1, out);
            }
            out.push_str(&close_sep);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The local time formatted with C's `strftime` (what Python's `strftime` calls).
fn strftime_now(format: &str) -> Result<String, Error> {
    let bad = |what: &str| Error::new(ErrorKind::InvalidOperation, format!("strftime_now: {what}"));
    let format = std::ffi::CString::new(format).map_err(|_| bad("the format holds a NUL"))?;
    let mut buf = vec![0u8; 256];
    // SAFETY: `time` and `localtime_r` fill the structs we pass; `strftime` writes at most `buf.len()` bytes.
    let written = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return Err(bad("no local time"));
        }
        libc::strftime(buf.as_mut_ptr().cast(), buf.len(), format.as_ptr(), &tm)
    };
    buf.truncate(written);
    String::from_utf8(buf).map_err(|_| bad("the result is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &str, messages: Json, generation: bool) -> Result<String> {
        let messages = messages.as_array().cloned().unwrap_or_default();
        ChatTemplate::new(source, vec![("bos_token", "<s>".into())])?.render(&messages, generation)
    }

    #[test]
    fn chatml_renders_with_trimmed_blocks() {
        let source = "{% for m in messages %}\n<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n\
                      {% endfor %}\n{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let text = render(source, serde_json::json!([{"role": "user", "content": " Hi "}]), true).unwrap();
        assert_eq!(text, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn python_methods_specials_and_exceptions() {
        let source = "{{ bos_token }}{{ messages[0].content.strip().upper() }}{% if messages|length > 1 %}\
                      {{ raise_exception('one message only') }}{% endif %}";
        assert_eq!(render(source, serde_json::json!([{"role": "user", "content": " a "}]), false).unwrap(), "<s>A");
        let two = serde_json::json!([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]);
        assert!(format!("{:#}", render(source, two, false).unwrap_err()).contains("one message only"));
    }

    #[test]
    fn a_user_turn_is_the_render_around_the_text() {
        let source = "<s>{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}\
                      {% if add_generation_prompt %}[assistant] {% endif %}";
        let chat = ChatTemplate::new(source, vec![]).unwrap();
        assert_eq!(chat.user_turn("Кто там?").unwrap(), ("<s>[user] ".into(), "\n[assistant] ".into()));
        let trims = ChatTemplate::new("{{ messages[0].content | trim }}", vec![]).unwrap();
        assert!(trims.user_turn(" x ").unwrap_err().to_string().contains("changes the user's text"));
    }

    #[test]
    fn tojson_writes_what_python_writes() {
        let out = render("{{ messages[0] | tojson }}", serde_json::json!([{"content": "ё<", "role": "user"}]), false);
        assert_eq!(out.unwrap(), r#"{"content": "ё<", "role": "user"}"#);
    }

    #[test]
    fn a_broken_template_and_a_message_without_role_are_errors() {
        assert!(ChatTemplate::new("{% for %}", vec![]).unwrap_err().to_string().contains("does not compile"));
        let err = render("x", serde_json::json!([{"content": "a"}]), false).unwrap_err();
        assert!(err.to_string().contains("needs a \"role\""));
    }
}
