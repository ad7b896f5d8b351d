//! File safety: the one way seedpool writes a file others may read (a synced temporary
//! file renamed into place, so a reader sees the old bytes or the new, never half), the
//! temporary files that must not outlive a failure, and the error that names the file
//! and what was being done to it. Every module below `cli` may use it.

use std::path::{Path, PathBuf};

/// A file operation that failed, with what was being done and to which path.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} `{path}`")]
pub struct FileError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// For `map_err`: turns an I/O error into a `FileError` naming `action` and `path`.
pub fn file_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
    let path = path.to_path_buf();
    move |source| FileError {
        action,
        path,
        source,
    }
}

/// blake3 of a file, read in 4 MiB pieces each hashed on all cores. Not mapped: a
/// mapped file's pages count as the process's resident memory while it is hashed,
/// which made a merge of ten million items look 3 GB large for its index alone.
pub fn hash_file(path: &Path) -> std::io::Result<blake3::Hash> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update_rayon(&buf[..n]);
    }
    Ok(hasher.finalize())
}

/// Removes a file when dropped: for temporary files that must not outlive a failure.
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A fresh, empty folder `base/<name>-<pid>` for this process, after removing every
/// folder under `base` whose name ends in the pid of a process that is gone (what a
/// killed process left).
pub fn process_folder(base: &Path, name: &str) -> Result<PathBuf, FileError> {
    let me = std::process::id();
    if let Ok(entries) = std::fs::read_dir(base) {
        for entry in entries.flatten() {
            let entry_name = entry.file_name().to_string_lossy().into_owned();
            let pid = entry_name
                .rsplit('-')
                .next()
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| p != me && !process_alive(p)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let path = base.join(format!("{name}-{me}"));
    if path.exists() {
        std::fs::remove_dir_all(&path).map_err(file_error("clear", &path))?;
    }
    std::fs::create_dir_all(&path).map_err(file_error("create", &path))?;
    Ok(path)
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Writes `bytes` to `path` through a synced temporary file renamed into place.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let tmp = TempFile(path.with_extension("incoming"));
    write_synced(&tmp.0, bytes).map_err(file_error("write", &tmp.0))?;
    std::fs::rename(&tmp.0, path).map_err(file_error("move into place", path))?;
    Ok(())
}

/// Writes a small file and flushes it to disk before it is renamed into place.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The records of a delimited text table (a tag list, a tagger's tag names), with the
/// line each starts on: RFC 4180 quoting through the csv crate, so a quoted field may
/// hold the delimiter, `""` or a newline. A leading byte-order mark and blank lines are
/// skipped; records may have any number of fields (callers name the line that is off).
pub fn delimited_records(
    text: &str,
    delimiter: u8,
) -> impl Iterator<Item = (u64, Result<csv::StringRecord, String>)> + '_ {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes())
        .into_records()
        .filter_map(|r| match r {
            Ok(rec) if rec.iter().all(|f| f.trim().is_empty()) => None,
            Ok(rec) => Some((rec.position().map_or(0, |p| p.line()), Ok(rec))),
            Err(e) => Some((e.position().map_or(0, |p| p.line()), Err(e.to_string()))),
        })
}
