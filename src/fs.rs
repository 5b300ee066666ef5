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

/// Deletes the folder `dir` by renaming it to a hidden sibling first (`.<name>.deleting`): a kill mid-delete
/// leaves that hidden folder, never a half folder under the old name that a reader could take for whole.
pub fn remove_dir(dir: &Path) -> Result<()> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("folder");
    let doomed = dir.with_file_name(format!(".{name}.deleting"));
    if doomed.exists() {
        std::fs::remove_dir_all(&doomed).with_context(|| format!("cannot delete {}", doomed.display()))?;
    }
    std::fs::rename(dir, &doomed).with_context(|| format!("cannot delete {}", dir.display()))?;
    std::fs::remove_dir_all(&doomed).with_context(|| format!("cannot delete {}", doomed.display()))
}

/// The lock file a run holds in its output folder.
pub const LOCK_FILE: &str = ".lock";

/// An exclusive hold on a folder that one process writes into (a training run's output_dir, an evaluation's
/// report folder): `.lock` in it, locked with the OS (released when the process ends, however it ends) and
/// removed when dropped.
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl DirLock {
    /// Takes the lock of `dir` (which must exist); `what` names the folder in the error when another process
    /// holds it.
    pub fn acquire(dir: &Path, what: &str) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot create the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "{what} {} is in use by another ruprompts process (it holds {}); wait for it to finish or \
                 choose another folder",
                dir.display(),
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
        std::fs::write(&path, format!("{}\n", std::process::id())).ok();
        Ok(Self { path, _file: file })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        std::fs::remove_file(&self.path).ok();
    }
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
    fn a_locked_folder_is_refused_until_the_lock_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path(), "output_dir").unwrap();
        let err = DirLock::acquire(dir.path(), "output_dir").unwrap_err().to_string();
        let expected = format!("output_dir {} is in use by another ruprompts process", dir.path().display());
        assert!(err.starts_with(&expected), "{err}");
        drop(lock);
        assert!(!dir.path().join(LOCK_FILE).exists());
        DirLock::acquire(dir.path(), "output_dir").unwrap();
    }

    #[test]
    fn a_removed_folder_is_gone_with_its_hidden_name() {
        let dir = tempfile::tempdir().unwrap();
        let doomed = dir.path().join("checkpoint-2");
        std::fs::create_dir(&doomed).unwrap();
        std::fs::write(doomed.join("a"), "x").unwrap();
        remove_dir(&doomed).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
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
