//! The files of a merge: what enters the pool's store layout, and the checks that let it.
//!
//! Order matters, since each step trusts only what the one before checked: the torrent
//! must be the manifest's (info hash, piece length, file list) before anything is
//! copied; the index must match its signed blake3 before it is opened, and its schema
//! and contents must be seedpool's before shards are compared with it; a shard enters
//! only after one pass has checked its blake3, its tar structure and every member the
//! index lists (`shard::check`). Each file is checked under a temporary name beside its
//! place and renamed in after an fsync, so the pool never holds, or seeds, a file that
//! failed.

use std::collections::BTreeSet;
use std::path::Path;

use rayon::prelude::*;

use super::{MergeError, MergePlan, ShardStates};
use crate::files::{file_error, TempFile};
use crate::index::IndexReader;
use crate::manifest::Manifest;
use crate::progress::{Progress, Unit};
use crate::shard::{self, ShardId};
use crate::store::{self, Store};
use crate::torrent::Metainfo;

/// Name prefix of a file being brought into the pool.
const INCOMING: &str = ".incoming-";

/// Removes what a killed merge or sync left in the pool's folder and in each dataset's
/// `shards/` and `index/` (the caller holds the pool's lock, so no live merge owns any
/// of these).
pub(super) fn remove_leftovers(root: &Path, prefixes: &[&str]) {
    let remove_in = |dir: &Path, prefixes: &[&str]| {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if prefixes.iter().any(|p| name.starts_with(p))
                && e.file_type().is_ok_and(|t| t.is_file())
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    };
    remove_in(root, prefixes);
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            for sub in ["shards", "index"] {
                remove_in(&e.path().join(sub), &[INCOMING]);
            }
        }
    }
}

/// The files a merge put in place, removed again unless the merge keeps them: a merge
/// that fails leaves the pool's folder as it found it. (A merge killed outright may
/// leave checked files, which the next merge checks again and reuses.)
#[derive(Default)]
pub(super) struct Placed {
    paths: Vec<std::path::PathBuf>,
    kept: bool,
}

impl Placed {
    fn add(&mut self, path: &Path) {
        self.paths.push(path.to_path_buf());
    }

    /// The merge committed: the files stay.
    pub fn keep(mut self) {
        self.kept = true;
    }

    /// Writes a small file (torrent, manifest) unless it is there with these bytes.
    pub fn write(&mut self, path: &Path, bytes: &[u8]) -> Result<(), MergeError> {
        if std::fs::read(path).is_ok_and(|b| b == bytes) {
            return Ok(());
        }
        let existed = path.exists();
        crate::files::write_atomically(path, bytes)?;
        if !existed {
            self.add(path);
        }
        Ok(())
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        if !self.kept {
            for p in &self.paths {
                let _ = std::fs::remove_file(p);
                // Folders the merge made for them go too (only if empty).
                for dir in p.ancestors().skip(1).take(2) {
                    let _ = std::fs::remove_dir(dir);
                }
            }
        }
    }
}

/// Reads the release's torrent from `source` and checks it against the manifest.
pub(super) fn torrent(source: &Store, m: &Manifest) -> Result<Vec<u8>, MergeError> {
    let path = source.torrent_path(&m.version_name());
    let bytes = crate::torrent::metainfo::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => MergeError::Mismatch {
            path: path.clone(),
            problem: e.to_string(),
        },
        _ => file_error("read torrent", &path)(e).into(),
    })?;
    let mismatch = |problem: String| MergeError::Mismatch {
        path: path.clone(),
        problem,
    };
    let parsed = Metainfo::parse(&bytes).map_err(|e| mismatch(e.to_string()))?;
    m.check_torrent(&parsed).map_err(mismatch)?;
    Ok(bytes)
}

/// A release's files on their way from a store into the pool.
pub(super) struct Import<'a> {
    pub m: &'a Manifest,
    pub source: &'a Store,
    pub target: &'a Store,
    pub plan: &'a MergePlan,
    pub placed: Placed,
}

impl Import<'_> {
    /// Puts the release index in the pool, checked against its size and blake3.
    pub fn index(&mut self) -> Result<(), MergeError> {
        index(
            self.m,
            self.source,
            self.target,
            self.plan,
            &mut self.placed,
        )
    }

    /// Brings the wanted shards the pool lacks (see `shards`).
    pub fn shards(
        &mut self,
        present: &BTreeSet<String>,
        index: &IndexReader,
        progress: &dyn Progress,
    ) -> Result<Imported, MergeError> {
        shards(self, present, index, progress)
    }
}

fn index(
    m: &Manifest,
    source: &Store,
    target: &Store,
    plan: &MergePlan,
    placed: &mut Placed,
) -> Result<(), MergeError> {
    let to = target.dataset_dir().join(&m.index.path);
    if plan.verified.contains(&m.index.blake3)
        || store::mismatch(&to, m.index.size, &m.index.blake3).is_ok_and(|p| p.is_none())
    {
        return Ok(());
    }
    let rel = &m.index.path;
    let (size, blake3) = (m.index.size, m.index.blake3.as_str());
    placed.add(&to);
    bring(
        &source.dataset_dir().join(rel),
        &to,
        &blake3[..16],
        |tmp| match store::mismatch(tmp, size, blake3).map_err(file_error("read", tmp))? {
            Some(problem) => Err(MergeError::Mismatch {
                path: source.dataset_dir().join(rel),
                problem,
            }),
            None => Ok(()),
        },
    )
}

/// A failed shard check as a merge reports it, naming the file in the source store.
fn shard_error(e: shard::ShardError, from: &Path) -> MergeError {
    let mismatch = |problem| MergeError::Mismatch {
        path: from.to_path_buf(),
        problem,
    };
    match e {
        shard::ShardError::Size {
            expected, found, ..
        } => mismatch(format!("expected {expected} bytes, found {found}")),
        shard::ShardError::Hash { id, found, .. } => {
            mismatch(format!("blake3 is `{found}`, the manifest says `{id}`"))
        }
        other => MergeError::Shard(other.at(from)),
    }
}

/// What `shards` brought in.
#[derive(Default)]
pub(super) struct Imported {
    pub fetched: u64,
    pub bytes: u64,
    /// Shards checked against this release's index by this merge (or by the sync that
    /// downloaded them), whether copied now or found in place.
    pub checked: BTreeSet<String>,
}

/// Brings the wanted shards the pool lacks into it, each checked in one pass against
/// the manifest and the index (`shard::check`).
fn shards(
    import: &mut Import<'_>,
    present: &BTreeSet<String>,
    index: &IndexReader,
    progress: &dyn Progress,
) -> Result<Imported, MergeError> {
    let (m, source, target, plan) = (import.m, import.source, import.target, import.plan);
    let placed = &mut import.placed;
    let mut todo: Vec<(ShardId, &crate::manifest::ShardEntry)> = m
        .shards
        .iter()
        .filter(|e| !present.contains(&e.id.to_hex()) && plan.wants(e.id))
        .map(|e| (e.id, e))
        .collect();
    index.sort_in_key_order(&mut todo, |(_, e)| e.id)?;
    progress.stage(
        "checking shards",
        todo.iter().map(|(_, e)| e.size).sum(),
        Unit::Bytes,
    );
    let mut out = Imported::default();
    for chunk in todo.chunks(shard::CHECK_BATCH) {
        // The index is read here (one connection, one sweep for the batch); the shards
        // of a batch are checked side by side.
        let mut batch = Vec::with_capacity(chunk.len());
        for &(id, entry) in chunk {
            out.checked.insert(entry.id.to_hex());
            let to = target.shard_path(id);
            if plan.verified.contains(&entry.id.to_hex())
                && std::fs::metadata(&to).is_ok_and(|md| md.len() == entry.size)
            {
                progress.advance(entry.size);
                continue;
            }
            batch.push((id, entry, to));
        }
        let ids: Vec<String> = batch.iter().map(|(_, e, _)| e.id.to_hex()).collect();
        let members = index.shards_members(&ids.iter().map(String::as_str).collect::<Vec<_>>())?;
        let results: Vec<Result<Option<std::path::PathBuf>, MergeError>> = batch
            .into_par_iter()
            .zip(members)
            .map(|((id, entry, to), members)| {
                let expected = shard::Expected {
                    id,
                    size: entry.size,
                    items: entry.items,
                    members: &members,
                };
                let result = bring_shard(m, source, id, entry, &to, &expected);
                progress.advance(entry.size);
                result.map(|brought| brought.then_some(to))
            })
            .collect();
        let mut first_error = None;
        for r in results {
            match r {
                Ok(Some(to)) => {
                    placed.add(&to);
                    out.fetched += 1;
                    out.bytes += std::fs::metadata(&to).map_or(0, |md| md.len());
                }
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
    }
    Ok(out)
}

/// Puts one shard in place at `to`, checked; returns whether it was copied (false when
/// a file there, left by a killed merge or a sync's download, passes the same check).
fn bring_shard(
    m: &Manifest,
    source: &Store,
    id: ShardId,
    entry: &crate::manifest::ShardEntry,
    to: &Path,
    expected: &shard::Expected<'_>,
) -> Result<bool, MergeError> {
    if std::fs::symlink_metadata(to).is_ok_and(|md| md.is_file())
        && shard::check(to, expected).is_ok()
    {
        return Ok(false);
    }
    let from = source.shard_path(id);
    if !from.is_file() {
        return Err(MergeError::MissingShard {
            shard: entry.id.to_hex(),
            version: m.version.to_string(),
            store: source.root().to_path_buf(),
        });
    }
    bring(&from, to, &entry.id.to_hex()[..16], |tmp| {
        shard::check(tmp, expected).map_err(|e| shard_error(e, &from))
    })?;
    Ok(true)
}

/// Puts a copy of `from` at `to` once `check` passes on it: a hard link when the two
/// share a file system (shards never change, so sharing the inode is safe), else a
/// copy, under a temporary name that goes when the check fails.
fn bring(
    from: &Path,
    to: &Path,
    tag: &str,
    check: impl FnOnce(&Path) -> Result<(), MergeError>,
) -> Result<(), MergeError> {
    let dir = to.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(file_error("create", dir))?;
    let tmp = TempFile(dir.join(format!("{INCOMING}{}-{tag}", std::process::id())));
    let _ = std::fs::remove_file(&tmp.0);
    if std::fs::hard_link(from, &tmp.0).is_err() {
        std::fs::copy(from, &tmp.0).map_err(file_error("copy", from))?;
    }
    check(&tmp.0)?;
    std::fs::File::open(&tmp.0)
        .and_then(|f| f.sync_all())
        .map_err(file_error("sync", &tmp.0))?;
    std::fs::rename(&tmp.0, to).map_err(file_error("move into place", to))?;
    Ok(())
}

/// Checks the members the merge is about to record, for items whose shard this merge
/// has not checked against this release's index (run in the merge's transaction, after
/// `classify` filled `incoming`). A shard the pool got with an earlier release that now
/// receives items is read and checked again. A shard the pool does not hold (left out
/// by `sync --where`) cannot be compared with its bytes yet, so its members must at
/// least be safe to record: names that split into the item's key and an extension,
/// data inside the shard on a block boundary, blake3 hex, a bounded number per item.
pub(super) fn check_members(
    tx: &rusqlite::Connection,
    m: &Manifest,
    shards: &ShardStates,
    index_path: &Path,
) -> Result<(), MergeError> {
    let receiving: Vec<String> = {
        let mut st = tx.prepare("SELECT DISTINCT shard FROM incoming WHERE fate != 'same'")?;
        let rows = st.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let entries: std::collections::HashMap<String, (ShardId, &crate::manifest::ShardEntry)> = m
        .shards
        .iter()
        .map(|e| (e.id.to_hex(), (e.id, e)))
        .collect();
    let mut unchecked = Vec::new();
    for shard in &receiving {
        if shards.checked.contains(shard) {
            continue;
        }
        let Some(&(id, entry)) = entries.get(shard.as_str()) else {
            return Err(crate::index::IndexError::Inconsistent {
                version: m.version.to_string(),
                problem: format!(
                    "items reference shard `{shard}`, which the manifest does not list"
                ),
            }
            .into());
        };
        if shards.present_before.contains(shard) {
            let members = shards.reader.shard_members(shard)?;
            let path = shards.dataset_dir.join(id.relative_path());
            shard::check(
                &path,
                &shard::Expected {
                    id,
                    size: entry.size,
                    items: entry.items,
                    members: &members,
                },
            )?;
            continue;
        }
        unchecked.push((shard.as_str(), entry.size));
    }
    if unchecked.is_empty() {
        return Ok(());
    }
    tx.execute_batch(
        "DROP TABLE IF EXISTS temp.unchecked;
         CREATE TEMP TABLE unchecked(id TEXT PRIMARY KEY, size INTEGER NOT NULL) WITHOUT ROWID;",
    )?;
    {
        let mut add = tx.prepare("INSERT INTO temp.unchecked(id, size) VALUES (?1, ?2)")?;
        for (id, size) in &unchecked {
            add.execute(rusqlite::params![id, *size as i64])?;
        }
    }
    let mut st = tx.prepare(
        "SELECT n.key, m.ext, m.offset, m.length, m.blake3, u.size
         FROM incoming n JOIN temp.unchecked u ON u.id = n.shard CROSS JOIN idx.members m ON m.key = n.key
         WHERE n.fate != 'same' ORDER BY n.key, m.ext",
    )?;
    let mut rows = st.query([])?;
    let mut last_key = Vec::new();
    let mut per_item = 0u64;
    while let Some(r) = rows.next()? {
        let bad = |(key, problem): (String, String)| -> MergeError {
            crate::index::IndexError::BadItem {
                path: index_path.to_path_buf(),
                key,
                problem,
            }
            .into()
        };
        let key = r.get_ref(0)?.as_bytes()?;
        if key != last_key.as_slice() {
            last_key.clear();
            last_key.extend_from_slice(key);
            per_item = 0;
        }
        per_item += 1;
        if per_item > crate::index::MAX_MEMBERS_PER_ITEM {
            return Err(bad((
                String::from_utf8_lossy(key).into_owned(),
                format!(
                    "has more than {} members",
                    crate::index::MAX_MEMBERS_PER_ITEM
                ),
            )));
        }
        let size = r.get::<_, i64>(5)? as u64;
        crate::index::check_member_row(r, Some(size)).map_err(bad)?;
    }
    drop(rows);
    drop(st);
    tx.execute_batch("DROP TABLE temp.unchecked;")?;
    Ok(())
}
