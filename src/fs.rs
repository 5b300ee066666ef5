//! Files written so that a failure never leaves half of one behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

/// Writes `path` through a temp file in the same folder and renames it into place: a failure leaves the old
/// file (or none), never a half-written one, and no temp file.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temp file in {}", dir.display()))?
        .into_temp_path();
    write(&tmp).with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path).map_err(|e| anyhow!("cannot move {} into place: {}", path.display(), e.error))?;
    Ok(())
}

/// An append-only JSON-lines file that a rerun continues (training metrics, evaluation results). Opening keeps
/// the records `keep` accepts, verbatim, and drops an unfinished last line (the process was killed mid-write).
#[derive(Debug)]
pub struct JsonLines {
    path: PathBuf,
}

impl JsonLines {
    /// Opens `path` (creating it) with the kept records, which it also returns.
    pub fn open(path: &Path, mut keep: impl FnMut(&Value) -> bool) -> Result<(Self, Vec<Value>)> {
        let kept: Vec<(String, Value)> =
            if path.is_file() { read_json_lines(path)?.into_iter().filter(|(_, v)| keep(v)).collect() } else { vec![] };
        let text: String = kept.iter().map(|(l, _)| format!("{l}\n")).collect();
        write_atomic(path, |p| Ok(std::fs::write(p, text)?))?;
        Ok((Self { path: path.to_path_buf() }, kept.into_iter().map(|(_, v)| v).collect()))
    }

    pub fn append(&self, record: &Value) -> Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot append to {}", self.path.display()))?;
        writeln!(file, "{record}").with_context(|| format!("cannot append to {}", self.path.display()))
    }
}

/// Every complete line of a JSON-lines file, verbatim and parsed; an unfinished last line (no newline) is left
/// out, an unparsable complete one is an error naming its line.
pub fn read_json_lines(path: &Path) -> Result<Vec<(String, Value)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .split('\n')
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let value =
                serde_json::from_str(l).with_context(|| format!("{}:{}: invalid JSON", path.display(), i + 1))?;
            Ok((l.to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_keeps_the_old_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        write_atomic(&path, |p| Ok(std::fs::write(p, "old")?)).unwrap();
        let err = write_atomic(&path, |p| {
            std::fs::write(p, "half")?;
            anyhow::bail!("disk full")
        })
        .unwrap_err();
        assert_eq!(format!("{err:#}"), format!("cannot write {}: disk full", path.display()));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn json_lines_keep_what_is_asked_and_drop_an_unfinished_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n{\"ste").unwrap();
        let (log, kept) = JsonLines::open(&path, |v| v["step"] != 2).unwrap();
        assert_eq!(kept, [serde_json::json!({"step": 1}), serde_json::json!({"step": 3})]);
        log.append(&serde_json::json!({"step": 4})).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"step\":1}\n{\"step\":3}\n{\"step\":4}\n");
        std::fs::write(&path, "{\"step\":1}\nnot json\n").unwrap();
        let err = format!("{:#}", JsonLines::open(&path, |_| true).unwrap_err());
        assert_eq!(err, format!("{}:2: invalid JSON: expected ident at line 1 column 2", path.display()));
    }
}
