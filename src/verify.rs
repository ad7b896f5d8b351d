//! Verifying a release in a store: the manifest's signature and fields, the torrent
//! against the manifest, the index's blake3 and then its schema and consistency, and
//! every shard in one pass each: its blake3, its tar structure, and every member the
//! index lists (see `shard::check`). What passes here is what `merge` lets into a pool.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::index::{self, IndexLimit};
use crate::manifest::{Manifest, ManifestError};
use crate::progress::{Progress, Unit};
use crate::shard::{self, ShardError};
use crate::store::{FileProblem, Problem, Store, StoreError};
use crate::torrent::Metainfo;

#[derive(Clone, Debug)]
pub struct VerifyPlan {
    pub manifest: PathBuf,
    pub store: PathBuf,
    /// When set, the manifest must be signed by this public key (hex).
    pub public_key: Option<String>,
    pub index_limit: IndexLimit,
    /// Print each phase's time on stderr.
    pub timings: bool,
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
    let timings = crate::index::Timings::new("verify ", plan.timings);
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

    let index_path = store.dataset_dir().join(&manifest.index.path);
    let (index, index_problem) = open_index(&index_path, &manifest, plan, &timings);
    progress.advance(manifest.index.size);
    problems.extend(index_problem);
    // The index's rows are checked on connections of their own while the shards are
    // checked: both are CPU work, and the two together keep every core busy.
    let contents = index.as_ref().map(|(_, reader)| reader.reopen());
    std::thread::scope(|scope| {
        let rows = contents
            .map(|opened| scope.spawn(move || opened.and_then(|r| r.check_contents(false))));
        check_shards(
            &manifest,
            &store,
            index.as_ref().map(|(_, r)| r),
            &index_path,
            progress,
            &mut problems,
        );
        if let Some(handle) = rows {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => problems.push(FileProblem {
                    path: index_path.clone(),
                    problem: Problem::Invalid(e.to_string()),
                }),
                Err(_) => problems.push(FileProblem {
                    path: index_path.clone(),
                    problem: Problem::Invalid("the check of its rows failed (Bug: a panic)".into()),
                }),
            }
        }
    });
    timings.step("shards checked");
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    problems.dedup();
    Ok(VerifyReport {
        dataset: manifest.dataset.to_string(),
        version: manifest.version.to_string(),
        public_key: signer,
        info_hash: manifest.torrent.info_hash.to_hex(),
        files: manifest.shards.len() as u64 + 1,
        bytes,
        problems,
    })
}

/// Checks every shard of the release (see `shard::check`), the members of a batch read
/// from the index first, the batch then checked side by side.
fn check_shards(
    manifest: &Manifest,
    store: &Store,
    index: Option<&index::IndexReader>,
    index_path: &Path,
    progress: &dyn Progress,
    problems: &mut Vec<FileProblem>,
) {
    let mut shards: Vec<(&crate::manifest::ShardEntry, crate::shard::ShardId)> =
        manifest.shards.iter().zip(manifest.shard_ids()).collect();
    if let Some(reader) = index {
        // Only an order: a bad index is reported by the checks that read it.
        let _ = reader.sort_in_key_order(&mut shards, |(e, _)| e.id);
    }
    for chunk in shards.chunks(shard::CHECK_BATCH) {
        // The index is read here (one connection, one sweep for the batch); the shards
        // of a batch are checked side by side, so one shard's tail does not leave a
        // core idle.
        let hex: Vec<String> = chunk.iter().map(|(e, _)| e.id.to_hex()).collect();
        let ids: Vec<&str> = hex.iter().map(String::as_str).collect();
        // With a bad index the shards' own structure is still checked.
        let members = match index.map(|reader| reader.shards_members(&ids)) {
            Some(Ok(members)) => members,
            Some(Err(e)) => {
                problems.push(FileProblem {
                    path: index_path.to_path_buf(),
                    problem: Problem::Invalid(e.to_string()),
                });
                vec![Vec::new(); chunk.len()]
            }
            None => vec![Vec::new(); chunk.len()],
        };
        let batch: Vec<_> = chunk
            .iter()
            .zip(members)
            .map(|((entry, id), members)| (*entry, *id, members))
            .collect();
        let found: Vec<FileProblem> = batch
            .par_iter()
            .filter_map(|(entry, id, members)| {
                let path = store.shard_path(*id);
                let expected = shard::Expected {
                    id: *id,
                    size: entry.size,
                    items: entry.items,
                    members,
                };
                let result = shard::check(&path, &expected);
                progress.advance(entry.size);
                result.err().map(|e| FileProblem {
                    path,
                    problem: shard_problem(e),
                })
            })
            .collect();
        problems.extend(found);
    }
}

/// How a shard check's failure reads in a verify report.
pub fn shard_problem(e: ShardError) -> Problem {
    match e {
        ShardError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Problem::Missing
        }
        ShardError::Read { source, .. } => Problem::Unreadable(source.to_string()),
        ShardError::NotAFile(_) => Problem::NotAFile,
        ShardError::Size {
            expected, found, ..
        } => Problem::Size { expected, found },
        ShardError::Hash { found, .. } => Problem::Hash { found },
        other => Problem::Invalid(other.to_string()),
    }
}

/// The index, checked against its blake3, then opened and checked against the
/// manifest; `None` and the problem when any of that fails.
fn open_index(
    path: &Path,
    manifest: &Manifest,
    plan: &VerifyPlan,
    timings: &crate::index::Timings,
) -> (
    Option<(index::Unpacked, index::IndexReader)>,
    Option<FileProblem>,
) {
    let problem = |problem| {
        Some(FileProblem {
            path: path.to_path_buf(),
            problem,
        })
    };
    let m = &manifest.index;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (None, problem(Problem::Missing))
        }
        Err(e) => return (None, problem(Problem::Unreadable(e.to_string()))),
        Ok(md) if !md.is_file() => return (None, problem(Problem::NotAFile)),
        Ok(md) if md.len() != m.size => {
            return (
                None,
                problem(Problem::Size {
                    expected: m.size,
                    found: md.len(),
                }),
            )
        }
        Ok(_) => {}
    }
    match crate::files::hash_file(path) {
        Err(e) => return (None, problem(Problem::Unreadable(e.to_string()))),
        Ok(h) if h.to_hex().as_str() != m.blake3 => {
            return (
                None,
                problem(Problem::Hash {
                    found: h.to_hex().to_string(),
                }),
            )
        }
        Ok(_) => {}
    }
    let scratch = plan.store.join(format!(
        ".verify-{}-{}.sqlite",
        manifest.version,
        std::process::id()
    ));
    let opened = plan
        .index_limit
        .check(path, m.uncompressed_size, manifest.counts.items)
        .and_then(|limit| index::Unpacked::open(path, &scratch, limit))
        .and_then(|unpacked| {
            let reader = unpacked.reader()?;
            timings.step("index hashed and opened");
            reader.check_release(manifest)?;
            timings.step("index checked against the manifest");
            Ok((unpacked, reader))
        });
    match opened {
        Ok(pair) => (Some(pair), None),
        Err(e) => (None, problem(Problem::Invalid(e.to_string()))),
    }
}

/// The torrent must parse and agree with the manifest (`Manifest::check_torrent`).
fn check_torrent(path: &Path, manifest: &Manifest) -> Option<FileProblem> {
    let problem = |text: String| {
        Some(FileProblem {
            path: path.to_path_buf(),
            problem: Problem::Invalid(text),
        })
    };
    let bytes = match crate::torrent::metainfo::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(FileProblem {
                path: path.to_path_buf(),
                problem: Problem::Missing,
            })
        }
        Err(e) => {
            return Some(FileProblem {
                path: path.to_path_buf(),
                problem: Problem::Unreadable(e.to_string()),
            })
        }
    };
    let torrent = match Metainfo::parse(&bytes) {
        Ok(t) => t,
        Err(e) => return problem(format!("`{}`: {e}", path.display())),
    };
    manifest.check_torrent(&torrent).err().and_then(|p| {
        problem(format!(
            "torrent `{}` does not match the manifest: {p}",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FileProblem, Problem};
    use crate::testing::{record, Fixture};

    fn check(f: &Fixture) -> VerifyReport {
        run(
            &VerifyPlan {
                manifest: f.manifest("1"),
                store: f.store.clone(),
                public_key: None,
                index_limit: Default::default(),
                timings: false,
            },
            &crate::progress::Silent,
        )
        .unwrap()
    }

    #[test]
    fn every_bad_file_is_reported_by_path_not_only_the_first() {
        let f = Fixture::new();
        let items: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|k| (*k, record("danbooru", 1, &[])))
            .collect();
        let report = f.publish("1", None, &items);
        let good = check(&f);
        assert!(good.ok(), "{:?}", good.problems);
        assert_eq!(good.files, 3, "two shards and the index");

        let (m, _) = Manifest::load(&report.manifest).unwrap();
        let shards = f.store.join("ds/shards");
        let first = shards.join(format!("{}.tar", m.shards[0].id.to_hex()));
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[600] ^= 1;
        std::fs::write(&first, bytes).unwrap();
        let second = shards.join(format!("{}.tar", m.shards[1].id.to_hex()));
        std::fs::remove_file(&second).unwrap();

        let bad = check(&f);
        assert!(!bad.ok());
        let found: Vec<&FileProblem> = bad.problems.iter().collect();
        assert!(
            found
                .iter()
                .any(|p| p.path == first && matches!(p.problem, Problem::Hash { .. })),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.path == second && p.problem == Problem::Missing),
            "{found:?}"
        );
    }

    #[test]
    fn a_manifest_signed_by_another_key_than_the_expected_one_is_refused() {
        let f = Fixture::new();
        f.publish("1", None, &[("a", record("danbooru", 1, &[]))]);
        let other = crate::signing::PublisherKey::from_seed([9; 32]).public_hex();
        let e = run(
            &VerifyPlan {
                manifest: f.manifest("1"),
                store: f.store.clone(),
                public_key: Some(other),
                index_limit: Default::default(),
                timings: false,
            },
            &crate::progress::Silent,
        )
        .unwrap_err();
        assert!(matches!(e, VerifyError::WrongKey { .. }), "{e}");
    }
}
