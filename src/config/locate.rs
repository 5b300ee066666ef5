//! Where each key of a YAML file is written: `training.batch_size` → line 12. serde_yaml's values carry no
//! positions, so one pass over yaml-rust2's marked events records them; errors found after files are merged and
//! overridden can then still point at a file and line.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Joins a parent path and a mapping key the way error paths are written (`a.b`, `a[0].b`).
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else if key.starts_with('[') {
        format!("{parent}{key}")
    } else {
        format!("{parent}.{key}")
    }
}

enum Frame {
    Mapping { path: String, key: Option<String> },
    Sequence { path: String, next: usize },
}

#[derive(Default)]
struct Recorder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl Recorder {
    /// The path of the value that starts now, and marks it consumed in its parent.
    fn value_path(&mut self) -> Option<String> {
        match self.stack.last_mut()? {
            Frame::Mapping { path, key } => key.take().map(|k| join(path, &k)),
            Frame::Sequence { path, next } => {
                *next += 1;
                Some(format!("{path}[{}]", *next - 1))
            }
        }
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(text, ..) => {
                if let Some(Frame::Mapping { path, key: key @ None }) = self.stack.last_mut() {
                    self.lines.insert(join(path, &text), mark.line());
                    *key = Some(text);
                } else {
                    self.value_path();
                }
            }
            Event::Alias(_) => {
                self.value_path();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = if self.stack.is_empty() { String::new() } else { self.value_path().unwrap_or_default() };
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Mapping { path, key: None }
                } else {
                    Frame::Sequence { path, next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

/// Line (1-based) of every mapping key in `text`, by its path. Unparsable YAML gives what was read before the
/// fault; the syntax error itself is reported by the YAML loader.
pub fn key_lines(text: &str) -> HashMap<String, usize> {
    let mut recorder = Recorder::default();
    let _ = Parser::new_from_str(text).load(&mut recorder, false);
    recorder.lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_nested_keys_and_sequences() {
        let text = "model:\n  path: x\ntraining:\n  batch_size: 8\n  list:\n    - a: 1\n    - {b: 2}\nflow: {c: 3}\n";
        let lines = key_lines(text);
        assert_eq!(lines["model"], 1);
        assert_eq!(lines["model.path"], 2);
        assert_eq!(lines["training.batch_size"], 4);
        assert_eq!(lines["training.list[0].a"], 6);
        assert_eq!(lines["training.list[1].b"], 7);
        assert_eq!(lines["flow.c"], 8);
    }
}
