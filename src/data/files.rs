//! Reading rows from jsonl, csv and tsv files. Every row remembers its file and line, so any later error about
//! it (a missing field, a bad label, a sequence that cannot fit) can point at the exact place in the data.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::format::Row;

/// Where a row came from: `data/train.jsonl:17`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    /// 1-based line of the row in the file (of its first line for multi-line csv records).
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One data row and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub row: Row,
    pub origin: Origin,
}

/// Reads every row of `path`: `.jsonl` (one JSON object a line; blank lines skipped, CRLF accepted), `.csv` or
/// `.tsv` (a header line, then rows with as many columns; values are text), each optionally gzipped (`.gz`).
/// Both honour double-quoted fields (with `""` inside), as pandas and Python's csv module write them: RUSSE
/// 2022's tsv files hold quoted comments with line breaks.
pub fn read_rows(path: &Path) -> Result<Vec<Record>> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_ascii_lowercase();
    let (name, gzipped) = match name.strip_suffix(".gz") {
        Some(inner) => (inner.to_string(), true),
        None => (name, false),
    };
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bytes = if gzipped {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes.as_slice()), &mut out)
            .with_context(|| format!("{} is not valid gzip", path.display()))?;
        out
    } else {
        bytes
    };
    match name.rsplit('.').next().unwrap_or("") {
        "jsonl" | "ndjson" => read_jsonl(path, &bytes),
        "csv" => read_delimited(path, &bytes, b','),
        "tsv" => read_delimited(path, &bytes, b'\t'),
        _ => bail!("{}: unknown data file type (expected .jsonl, .csv or .tsv, optionally .gz)", path.display()),
    }
}

/// `dir/<split>.jsonl`, or `dir/<split>.jsonl.gz` when only that exists (the name without .gz otherwise, for the
/// error that it is missing).
pub fn split_file(dir: &Path, split: &str) -> PathBuf {
    let plain = dir.join(format!("{split}.jsonl"));
    let gzipped = dir.join(format!("{split}.jsonl.gz"));
    if !plain.exists() && gzipped.exists() {
        gzipped
    } else {
        plain
    }
}

fn read_jsonl(path: &Path, bytes: &[u8]) -> Result<Vec<Record>> {
    let text = std::str::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))?;
    // A byte-order mark (Windows editors write one) is not part of the first row.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let origin = Origin { file: path.to_path_buf(), line: i + 1 };
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(row)) => records.push(Record { row, origin }),
            Ok(other) => bail!("{origin}: expected a JSON object, found {}", json_kind(&other)),
            Err(e) => bail!("{origin}: invalid JSON: {e}"),
        }
    }
    Ok(records)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn read_delimited(path: &Path, bytes: &[u8], delimiter: u8) -> Result<Vec<Record>> {
    if let Some(line) = unclosed_quote(bytes, delimiter) {
        bail!(
            "{}:{line}: a field opens a double quote that is never closed (it would swallow the rest of the file); \
             close it, or double a quote meant literally (\"\")",
            path.display()
        );
    }
    let mut reader = csv::ReaderBuilder::new().delimiter(delimiter).from_reader(bytes);
    let header: Vec<String> = reader
        .headers()
        .with_context(|| format!("{}:1: cannot read the header", path.display()))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_string())
        .collect();
    // Lines are counted from byte offsets, as an editor counts them: the csv reader's own count drifts on CRLF
    // (and a record's offset may sit on the line ending before it, which the reader skips).
    let newlines: Vec<usize> = bytes.iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i).collect();
    let line_at = |pos: &csv::Position| {
        let start = bytes.iter().skip(pos.byte() as usize).take_while(|&&b| b == b'\r' || b == b'\n').count();
        1 + newlines.partition_point(|&at| at < pos.byte() as usize + start)
    };
    let mut records = Vec::new();
    for result in reader.records() {
        let record = result.map_err(|e| match e.position() {
            Some(pos) => anyhow::anyhow!("{}:{}: {}", path.display(), line_at(pos), csv_error_reason(&e, &header)),
            None => anyhow::anyhow!("{}: {e}", path.display()),
        })?;
        let line = record.position().map_or(0, line_at);
        let row = header.iter().zip(record.iter()).map(|(k, v)| (k.clone(), Value::String(v.to_string()))).collect();
        records.push(Record { row, origin: Origin { file: path.to_path_buf(), line } });
    }
    Ok(records)
}

/// The line where a double-quoted field opens that no quote closes (the csv reader would take the rest of the
/// file into it). Quotes count only at the start of a field, and `""` inside one is a literal quote.
fn unclosed_quote(bytes: &[u8], delimiter: u8) -> Option<usize> {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let (mut line, mut field_start, mut open_at) = (1, true, None);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' {
            line += 1;
        }
        if open_at.is_some() {
            if b == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    open_at = None;
                }
            }
            field_start = false;
        } else {
            if b == b'"' && field_start {
                open_at = Some(line);
            }
            field_start = b == delimiter || b == b'\n' || (b == b'\r' && bytes.get(i + 1) == Some(&b'\n'));
        }
        i += 1;
    }
    open_at
}

fn csv_error_reason(e: &csv::Error, header: &[String]) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { len, .. } => {
            format!("the row has {len} columns but the header has {} ({})", header.len(), header.join(", "))
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_bom_is_not_part_of_the_first_row_and_an_unclosed_quote_is_named() {
        let (_d, path) = write("a.jsonl", "\u{feff}{\"q\": 1}\n{\"q\": 2}\n");
        assert_eq!(read_rows(&path).unwrap()[0].row["q"], 1);
        let (_d, path) = write("a.tsv", "a\tb\n\"x\"\"y\"\t1\n\"multi\nline\"\t2\n3\t\"open\n4\t5\n");
        let err = read_rows(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:5: a field opens a double quote that is never closed", path.display())));
        let (_d, path) = write("b.csv", "a,b\r\n\"x,y\",1\r\nsay \"hi\",2\r\n");
        let rows = read_rows(&path).unwrap();
        assert_eq!((rows[0].row["a"].as_str(), rows[1].row["a"].as_str()), (Some("x,y"), Some("say \"hi\"")));
    }

    #[test]
    fn jsonl_with_crlf_and_blank_lines_keeps_line_numbers() {
        let (_d, path) = write("a.jsonl", "{\"q\": \"да?\"}\r\n\r\n{\"q\": \"нет?\", \"n\": 2}\r\n");
        let rows = read_rows(&path).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].row["q"], "нет?");
        assert_eq!(rows[1].origin.to_string(), format!("{}:3", path.display()));
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let (_d, path) = write("a.jsonl", "{\"q\": 1}\n[1, 2]\n");
        assert_eq!(
            read_rows(&path).unwrap_err().to_string(),
            format!("{}:2: expected a JSON object, found a list", path.display())
        );
        let (_d, path) = write("a.jsonl", "{\"q\": 1}\n{\"q\": \n");
        assert!(read_rows(&path).unwrap_err().to_string().starts_with(&format!("{}:2: invalid JSON", path.display())));
        let (_d, path) = write("a.tsv", "text\tlabel\nхорошо\t1\nплохо\n");
        assert_eq!(
            read_rows(&path).unwrap_err().to_string(),
            format!("{}:3: the row has 1 columns but the header has 2 (text, label)", path.display())
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"{\"q\": 1}\n{\"q\": 2}\n").unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        assert_eq!(read_rows(&path).unwrap()[1].origin.to_string(), format!("{}:2", path.display()));
        let (_d, path) = write("a.txt", "");
        assert!(read_rows(&path).unwrap_err().to_string().contains("unknown data file type"));
    }

    /// Line numbers count lines as an editor does, whatever ends them (CRLF, LF) and with or without a BOM.
    #[test]
    fn csv_line_numbers_hold_with_crlf_and_a_bom() {
        for (name, text) in [
            ("crlf.csv", "a,b\r\n1,2\r\n\"x\r\ny\",2\r\n5,6\r\n3\r\n"),
            ("bom.csv", "\u{feff}a,b\n1,2\n\"x\ny\",2\n5,6\n3\n"),
            ("both.tsv", "\u{feff}a\tb\r\n1\t2\r\n\"x\r\ny\"\t2\r\n5\t6\r\n3\r\n"),
        ] {
            let (_d, path) = write(name, text);
            let err = read_rows(&path).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{}:6: the row has 1 columns", path.display())), "{name}: {err}");
            let good = text.trim_end_matches("3\r\n").trim_end_matches("3\n");
            let (_d, path) = write(name, good);
            let lines: Vec<usize> = read_rows(&path).unwrap().iter().map(|r| r.origin.line).collect();
            assert_eq!(lines, [2, 3, 5], "{name}");
        }
    }

    #[test]
    fn quoted_fields_may_hold_delimiters_quotes_and_line_breaks() {
        let (_d, path) = write("a.csv", "text,label\n\"a, \"\"b\"\"\",1\n");
        let rows = read_rows(&path).unwrap();
        assert_eq!(rows[0].row["text"], "a, \"b\"");
        assert_eq!(rows[0].origin.line, 2);
        let (_d, path) = write("a.tsv", "text\tlabel\n\"две\nстроки\"\t0\nтретья\t1\n");
        let rows = read_rows(&path).unwrap();
        assert_eq!(rows[0].row["text"], "две\nстроки");
        assert_eq!(rows[1].origin.line, 4);
    }
}
