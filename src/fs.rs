//! Files written so that a failure never leaves half of one behind.

use std::path::Path;

use anyhow::{anyhow, Context, Result};

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
}
