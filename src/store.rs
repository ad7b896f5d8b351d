//! A store: the folder a publisher writes releases into and a mirror seeds from.
//!
//! ```text
//! STORE/<dataset>-<version>.manifest.json
//! STORE/<dataset>-<version>.torrent
//! STORE/<dataset>/shards/<blake3>.tar      one copy per shard, shared by every release
//! STORE/<dataset>/index/<version>.sqlite.zst
//! STORE/<dataset>/README.md                  the dataset card (`card`), outside the torrent
//! STORE/<dataset>/hidden/<version>.json      keys in a release's shards it does not hold
//! STORE/.seedpool-staging/<version>-<pid>/ work in progress, never read by others
//! STORE/.seedpool-seed/                    what seeders verified (`swarm::resume`)
//! ```
//!
//! `<dataset>/` is the torrent's root folder, so a BitTorrent client given STORE as its
//! download folder finds every release's files where the torrent expects them.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::files::{file_error, hash_file, FileError};
use crate::manifest::Manifest;
use crate::name::{DatasetName, Version};
use crate::shard::ShardId;

const STAGING: &str = ".seedpool-staging";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store `{0}` exists and is not a folder")]
    NotAFolder(PathBuf),
    #[error(transparent)]
    File(#[from] FileError),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let to_file_error = file_error(action, path);
    move |source| StoreError::File(to_file_error(source))
}

pub fn torrent_file_name(dataset: &DatasetName, version: &Version) -> String {
    format!("{dataset}-{version}.torrent")
}

pub struct Store {
    root: PathBuf,
    dataset: DatasetName,
}

impl Store {
    /// A store for reading: the folder must exist.
    pub fn open(root: &Path, dataset: &DatasetName) -> Result<Self, StoreError> {
        let meta = std::fs::metadata(root).map_err(io("open store", root))?;
        if !meta.is_dir() {
            return Err(StoreError::NotAFolder(root.to_path_buf()));
        }
        Ok(Self {
            root: root.to_path_buf(),
            dataset: dataset.clone(),
        })
    }

    /// A store for publishing: created when missing.
    pub fn open_or_create(root: &Path, dataset: &DatasetName) -> Result<Self, StoreError> {
        if root.exists() && !root.is_dir() {
            return Err(StoreError::NotAFolder(root.to_path_buf()));
        }
        std::fs::create_dir_all(root).map_err(io("create store", root))?;
        Self::open(root, dataset)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dataset_dir(&self) -> PathBuf {
        self.root.join(self.dataset.as_str())
    }

    pub fn shard_path(&self, id: ShardId) -> PathBuf {
        self.dataset_dir().join(id.relative_path())
    }

    pub fn manifest_path(&self, version: &Version) -> PathBuf {
        self.root.join(Manifest::file_name(&self.dataset, version))
    }

    pub fn torrent_path(&self, version: &Version) -> PathBuf {
        self.root.join(torrent_file_name(&self.dataset, version))
    }

    /// A fresh staging folder for one publish, after removing those of dead processes.
    pub fn staging(&self, version: &Version) -> Result<Staging, StoreError> {
        let path = crate::files::process_folder(&self.root.join(STAGING), version.as_str())?;
        Ok(Staging { path })
    }

    /// Moves a finished shard into place. A shard with the same ID is the same bytes, so
    /// one already there (with the right size) is kept and the new copy dropped.
    pub fn install_shard(&self, temp: &Path, id: ShardId, size: u64) -> Result<(), StoreError> {
        let target = self.shard_path(id);
        if std::fs::metadata(&target).is_ok_and(|m| m.is_file() && m.len() == size) {
            std::fs::remove_file(temp).map_err(io("remove", temp))?;
            return Ok(());
        }
        self.install(temp, &target)
    }

    pub fn install(&self, temp: &Path, target: &Path) -> Result<(), StoreError> {
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        std::fs::rename(temp, target).map_err(io("move into place", target))
    }

    /// Makes the renames durable: fsync of every folder that received a file.
    pub fn sync_dirs(&self) -> Result<(), StoreError> {
        let dataset = self.dataset_dir();
        for dir in [
            dataset.join("shards"),
            dataset.join("index"),
            dataset,
            self.root.clone(),
        ] {
            if dir.is_dir() {
                std::fs::File::open(&dir)
                    .and_then(|f| f.sync_all())
                    .map_err(io("sync", &dir))?;
            }
        }
        Ok(())
    }

    /// Checks that every file a manifest names is in the store with its size (what a
    /// child release needs of its parent; `verify` checks contents).
    pub fn check_files(&self, manifest: &Manifest) -> Result<Vec<FileProblem>, StoreError> {
        let mut expected: Vec<(PathBuf, u64)> = manifest
            .shards
            .iter()
            .zip(manifest.shard_ids())
            .map(|(e, id)| (self.shard_path(id), e.size))
            .collect();
        expected.push((
            self.dataset_dir().join(&manifest.index.path),
            manifest.index.size,
        ));
        let mut problems: Vec<FileProblem> = expected
            .iter()
            .filter_map(|(path, size)| {
                let problem = match std::fs::symlink_metadata(path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Problem::Missing),
                    Err(e) => Some(Problem::Unreadable(e.to_string())),
                    Ok(m) if !m.is_file() => Some(Problem::NotAFile),
                    Ok(m) if m.len() != *size => Some(Problem::Size {
                        expected: *size,
                        found: m.len(),
                    }),
                    Ok(_) => None,
                };
                problem.map(|problem| FileProblem {
                    path: path.clone(),
                    problem,
                })
            })
            .collect();
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(problems)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FileProblem {
    pub path: PathBuf,
    pub problem: Problem,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    Missing,
    NotAFile,
    Unreadable(String),
    Size {
        expected: u64,
        found: u64,
    },
    Hash {
        found: String,
    },
    /// The bytes are the signed ones, or cannot be, but what they say is wrong (a
    /// shard's structure, an index's schema or contents, a torrent's file list).
    Invalid(String),
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match &self.problem {
            Problem::Missing => write!(f, "`{path}` is missing"),
            Problem::NotAFile => write!(f, "`{path}` is not a regular file"),
            Problem::Unreadable(e) => write!(f, "`{path}` cannot be read: {e}"),
            Problem::Size { expected, found } => {
                write!(f, "`{path}`: expected {expected} bytes, found {found}")
            }
            Problem::Hash { found } => write!(
                f,
                "`{path}` does not match its blake3 in the manifest (found `{found}`)"
            ),
            Problem::Invalid(problem) => f.write_str(problem),
        }
    }
}

/// A staging folder, removed with whatever is left in it when dropped: after a
/// successful publish it is empty, after a failed one it holds the partial work.
pub struct Staging {
    path: PathBuf,
}

impl Staging {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        if let Some(base) = self.path.parent() {
            // Only succeeds when no other publish is staging next to us.
            let _ = std::fs::remove_dir(base);
        }
    }
}

/// How the file at `path` differs from what a manifest says of it, size first, then
/// blake3; `None` when it matches.
pub fn mismatch(path: &Path, size: u64, blake3_hex: &str) -> std::io::Result<Option<String>> {
    let found = std::fs::metadata(path)?.len();
    if found != size {
        return Ok(Some(format!("expected {size} bytes, found {found}")));
    }
    let hash = hash_file(path)?;
    Ok((hash.to_hex().as_str() != blake3_hex).then(|| {
        format!(
            "blake3 is `{}`, the manifest says `{blake3_hex}`",
            hash.to_hex()
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let ds = DatasetName::parse("ds").unwrap();
        let store = Store::open_or_create(t.path(), &ds).unwrap();
        (t, store)
    }

    #[test]
    fn a_shard_already_in_place_is_kept_and_the_new_copy_dropped() {
        let (t, store) = store();
        let id = ShardId::from_hash(blake3::hash(b"shard"));
        let temp = t.path().join("new.tar");
        std::fs::write(&temp, b"shard").unwrap();
        store.install_shard(&temp, id, 5).unwrap();
        assert_eq!(std::fs::read(store.shard_path(id)).unwrap(), b"shard");
        let again = t.path().join("again.tar");
        std::fs::write(&again, b"other").unwrap();
        store.install_shard(&again, id, 5).unwrap();
        assert!(!again.exists(), "the new copy is dropped");
        assert_eq!(std::fs::read(store.shard_path(id)).unwrap(), b"shard");
    }

    #[test]
    fn staging_clears_the_folders_of_dead_processes_only() {
        let (_t, store) = store();
        let base = store.root().join(STAGING);
        // No process has this id (beyond the kernel's pid_max).
        let dead = base.join("1-4194305");
        let ours_before = base.join(format!("0-{}", std::process::id()));
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::create_dir_all(&ours_before).unwrap();
        let version = Version::parse("2").unwrap();
        let staging = store.staging(&version).unwrap();
        assert!(!dead.exists());
        assert!(
            ours_before.exists(),
            "this process may be staging another release"
        );
        assert!(staging.path().is_dir());
        let path = staging.path().to_path_buf();
        drop(staging);
        assert!(!path.exists(), "a staging folder goes when dropped");
    }
}
