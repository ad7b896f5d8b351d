//! Verifying a release in a store: the manifest's signature and format, the torrent's
//! info hash, and every shard's and the index's size and blake3.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::manifest::{Manifest, ManifestError};
use crate::progress::{Progress, Unit};
use crate::store::{FileProblem, Problem, Store, StoreError};
use crate::torrent::Metainfo;

#[derive(Clone, Debug)]
pub struct VerifyPlan {
    pub manifest: PathBuf,
    pub store: PathBuf,
    /// When set, the manifest must be signed by this public key (hex).
    pub public_key: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub dataset: String,
    pub version: String,
    pub public_key: String,
    pub info_hash: String,
    pub files: u64,
    pub bytes: u64,
    pub problems: Vec<FileProblem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("manifest `{path}` is signed by `{found}`, not by the expected key `{expected}`")]
    WrongKey {
        path: PathBuf,
        expected: String,
        found: String,
    },
}

pub fn run(plan: &VerifyPlan, progress: &dyn Progress) -> Result<VerifyReport, VerifyError> {
    let (manifest, _) = Manifest::load(&plan.manifest)?;
    let signer = manifest.public_key().unwrap_or_default().to_string();
    if let Some(expected) = &plan.public_key {
        if !expected.eq_ignore_ascii_case(&signer) {
            return Err(VerifyError::WrongKey {
                path: plan.manifest.clone(),
                expected: expected.clone(),
                found: signer,
            });
        }
    }
    let store = Store::open(&plan.store, &manifest.dataset_name())?;
    let mut problems = Vec::new();
    let torrent_path = store.torrent_path(&manifest.version_name());
    problems.extend(check_torrent(&torrent_path, &manifest));
    let bytes = manifest.counts.bytes;
    progress.stage("verifying files", bytes, Unit::Bytes);
    problems.extend(store.check_files(&manifest, true)?);
    progress.advance(bytes);
    Ok(VerifyReport {
        dataset: manifest.dataset.clone(),
        version: manifest.version.clone(),
        public_key: signer,
        info_hash: manifest.torrent.info_hash.clone(),
        files: manifest.shards.len() as u64 + 1,
        bytes,
        problems,
    })
}

/// The torrent must parse, match the manifest's info hash and list exactly its files.
fn check_torrent(path: &Path, manifest: &Manifest) -> Option<FileProblem> {
    let problem = |text: String| {
        Some(FileProblem {
            path: path.to_path_buf(),
            problem: Problem::Unreadable(text),
        })
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(FileProblem {
                path: path.to_path_buf(),
                problem: Problem::Missing,
            })
        }
        Err(e) => return problem(e.to_string()),
    };
    let torrent = match Metainfo::parse(&bytes) {
        Ok(t) => t,
        Err(e) => return problem(e.to_string()),
    };
    if torrent.info_hash.to_hex() != manifest.torrent.info_hash {
        return problem(format!(
            "info hash is `{}`, the manifest says `{}`",
            torrent.info_hash, manifest.torrent.info_hash
        ));
    }
    let mut listed: Vec<String> = torrent.data_files().map(|f| f.path.clone()).collect();
    let mut expected: Vec<String> = manifest.shard_ids().map(|id| id.relative_path()).collect();
    expected.push(manifest.index.path.clone());
    listed.sort();
    expected.sort();
    if listed != expected || torrent.name != manifest.dataset {
        return problem("lists other files than the manifest".into());
    }
    None
}
