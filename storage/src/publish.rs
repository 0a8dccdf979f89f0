//! Publishing a file atomically: readers (this process, DuckDB, a backup) see either the old
//! file or the whole new one, never a part, and a crash at any point leaves one of the two.
//! The one way jieneng's server writes a file that others read: readings, rollups, its state.
//!
//! Steps: write `.<name>.tmp` in the same directory (names starting with `.` are skipped by
//! every reader of the layout), fsync it, rename it over `<name>`, fsync the directory so the
//! rename itself is durable.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use parquet::errors::ParquetError;

/// A file that could not be published, and why.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: writing: {source}", path.display())]
    Write { path: PathBuf, source: ParquetError },
}

/// The temp file `name` is written to before it is published.
pub fn temp_name(name: &str) -> String {
    format!(".{name}.tmp")
}

/// Writes `dir/name` atomically with `write` (a Parquet writer over a buffered file, which it
/// gives back when done), creating `dir` if needed.
pub fn publish_file(
    dir: &Path,
    name: &str,
    write: impl FnOnce(BufWriter<File>) -> Result<BufWriter<File>, ParquetError>,
) -> Result<(), PublishError> {
    let path = dir.join(name);
    let io = |source| PublishError::Io {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(temp_name(name));
    let file = File::create(&tmp).map_err(io)?;
    let w = write(BufWriter::new(file)).map_err(|source| PublishError::Write {
        path: path.clone(),
        source,
    })?;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)?;
    sync_dir(dir).map_err(io)
}

/// Writes `bytes` as `path` atomically.
pub fn publish_bytes(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(temp_name(&name));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Makes the entries of `dir` (a rename, a new or removed file) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_file_replaces_the_old_one_whole_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        publish_bytes(&path, b"one").unwrap();
        publish_bytes(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn a_failed_write_names_the_file_and_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let e = publish_file(dir.path(), "part-1-1.parquet", |_| {
            Err(ParquetError::General("disk full".into()))
        })
        .unwrap_err();
        assert!(matches!(e, PublishError::Write { .. }), "{e:?}");
        assert!(e.to_string().contains("part-1-1.parquet"), "{e}");
        assert!(!dir.path().join("part-1-1.parquet").exists());
    }
}
