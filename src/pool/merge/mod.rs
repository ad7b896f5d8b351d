//! Merging a release into a pool.
//!
//! Crash safety, the invariant this module keeps: the pool database changes only inside
//! one SQLite transaction per merge (WAL, `synchronous = FULL`). Files come first: each
//! shard and the index are copied (or hard-linked) under a temporary name, checked
//! against the blake3 in the signed manifest, and renamed into place; then the
//! transaction records the release, every item's fate and its provenance, and commits.
//! A merge killed before the commit leaves the database as it was (and maybe verified
//! files no release names yet, which the next merge reuses); after it, fully merged.
//!
//! Item fates, comparing the release's index with the pool's items of the dataset:
//! `added` (new key), `changed` (new content; the replaced version goes to
//! `item_history`), `restored` (a key removed earlier comes back), `moved` (same content
//! in another shard, after a repack: not a content change), `same`, and `removed` (in the
//! pool, not in the release). Merging a release the pool already has changes nothing.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};
use serde::Serialize;

mod files;

use super::{aggregates, duplicates, schema, Pool, PoolError, PoolLock};
use crate::files::{file_error, FileError, TempFile};
use crate::index::{self, IndexError};
use crate::manifest::{Manifest, ManifestError};
use crate::progress::{Progress, Unit};
use crate::shard::ShardId;
use crate::store::{Store, StoreError};

#[derive(Clone, Debug)]
pub struct MergePlan {
    pub manifest: PathBuf,
    pub pool: PathBuf,
    /// The store holding the release's files.
    pub from: PathBuf,
    /// Accept a publisher key other than the one the pool pinned for the dataset.
    pub trust_key: bool,
    /// Accept a release older than the one the pool holds.
    pub allow_older: bool,
    /// Near duplicates: largest Hamming distance between perceptual hashes.
    pub phash_distance: u32,
    /// The shards to bring into the pool (by id); `None` brings them all. The others
    /// are recorded as known but not present, with their items (a selective sync).
    pub selection: Option<BTreeSet<String>>,
    /// Files (by blake3) the caller already checked against the manifest and put in
    /// place in the pool, so they are not read a second time: shards checked with
    /// `shard::check` against this release's index, the index against its blake3
    /// (`sync` downloads and checks them itself).
    pub verified: BTreeSet<String>,
    /// seedpool's ceiling on the unpacked index.
    pub index_limit: crate::index::IndexLimit,
    pub tuning: Tuning,
}

/// What a merge takes from the command's environment rather than its arguments.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// The merge's time (Unix seconds), recorded as the release's `merged_at`.
    pub merged_at: u64,
    /// Fewest new items for the bulk path (which rebuilds the indexes after inserting);
    /// tests lower it to run that path on small releases.
    pub bulk_minimum: i64,
    /// Print each phase's time on stderr.
    pub timings: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            merged_at: crate::manifest::unix_now(),
            bulk_minimum: 10_000,
            timings: false,
        }
    }
}

impl MergePlan {
    /// A plan with the defaults of `seedpool merge`: every shard, nothing pre-verified.
    pub fn new(manifest: PathBuf, pool: PathBuf, from: PathBuf) -> Self {
        Self {
            manifest,
            pool,
            from,
            trust_key: false,
            allow_older: false,
            phash_distance: 3,
            selection: None,
            verified: BTreeSet::new(),
            index_limit: Default::default(),
            tuning: Tuning::default(),
        }
    }

    fn wants(&self, shard: ShardId) -> bool {
        self.selection
            .as_ref()
            .is_none_or(|s| s.contains(&shard.to_hex()))
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct MergeReport {
    pub dataset: String,
    pub version: String,
    pub items: u64,
    pub added: u64,
    pub changed: u64,
    pub restored: u64,
    pub moved: u64,
    pub removed: u64,
    pub unchanged: u64,
    /// Live items hidden as duplicates of another item after this merge.
    pub duplicates: u64,
    pub shards_fetched: u64,
    pub bytes_fetched: u64,
    /// Shards of the release the pool holds after this merge, and those it only knows.
    pub shards_present: u64,
    pub shards_missing: u64,
    pub already_merged: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error("the pool pinned key `{pinned}` for dataset `{dataset}`, but this manifest is signed by `{found}`; pass --trust-key if the publisher really changed keys")]
    KeyChanged {
        dataset: String,
        pinned: String,
        found: String,
    },
    #[error("the pool already holds a different release `{version}` of `{dataset}` (another manifest with the same version)")]
    VersionClash { dataset: String, version: String },
    #[error("release `{version}` ({created}) is older than release `{head}` ({head_created}) that the pool holds; pass --allow-older to merge it anyway")]
    Older {
        version: String,
        created: String,
        head: String,
        head_created: String,
    },
    #[error("`{path}` does not match the manifest: {problem}")]
    Mismatch { path: PathBuf, problem: String },
    #[error("shard `{shard}` of release `{version}` is not in `{store}`")]
    MissingShard {
        shard: String,
        version: String,
        store: PathBuf,
    },
    #[error(transparent)]
    Shard(#[from] crate::shard::ShardError),
    #[error("pool database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl From<rusqlite::types::FromSqlError> for MergeError {
    fn from(e: rusqlite::types::FromSqlError) -> Self {
        MergeError::Sqlite(rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Null,
            Box::new(e),
        ))
    }
}

/// Merges one release from a store into a pool (see the module doc).
pub fn run(plan: &MergePlan, progress: &dyn Progress) -> Result<MergeReport, MergeError> {
    let (pool, _lock) = Pool::open_or_create_locked(&plan.pool)?;
    merge_into(pool, plan, progress)
}

/// [`run`] for a caller that already holds the pool's lock (sync, which took it before
/// fetching anything); `plan.pool` must be the locked pool.
pub fn run_holding(
    lock: &PoolLock,
    plan: &MergePlan,
    progress: &dyn Progress,
) -> Result<MergeReport, MergeError> {
    debug_assert_eq!(
        lock.root(),
        plan.pool.as_path(),
        "merge plan for another pool"
    );
    merge_into(Pool::open_or_create_held(lock)?, plan, progress)
}

fn merge_into(
    mut pool: Pool,
    plan: &MergePlan,
    progress: &dyn Progress,
) -> Result<MergeReport, MergeError> {
    let timings = crate::index::Timings::new("", plan.tuning.timings);
    let (manifest, manifest_bytes) = Manifest::load(&plan.manifest)?;
    let dataset = manifest.dataset_name();
    let version = manifest.version_name();
    let manifest_hash = blake3::hash(&manifest_bytes).to_hex().to_string();
    files::remove_leftovers(pool.root(), &[BUILDING, UNPACKED_INDEX]);

    let mut report = MergeReport {
        dataset: manifest.dataset.to_string(),
        version: manifest.version.to_string(),
        ..MergeReport::default()
    };
    let already = check_release(pool.connection(), &manifest, &manifest_hash, plan)?;

    // Files first, each checked before the next trusts it (see `files`).
    let source = Store::open(&plan.from, &dataset)?;
    let target = pool.store(&dataset)?;
    let torrent_bytes = files::torrent(&source, &manifest)?;
    let mut import = files::Import {
        m: &manifest,
        source: &source,
        target: &target,
        plan,
        placed: files::Placed::default(),
    };
    import.index()?;
    // The index, read in place; one from before seekable indexes is decompressed next
    // to the pool for the merge and removed afterwards.
    let scratch = pool.root().join(format!(
        "{UNPACKED_INDEX}{}-{}.sqlite",
        version,
        std::process::id()
    ));
    let index_zst = target.dataset_dir().join(&manifest.index.path);
    let limit = plan.index_limit.check(
        &index_zst,
        manifest.index.uncompressed_size,
        manifest.counts.items,
    )?;
    let unpacked = index::Unpacked::open(&index_zst, &scratch, limit)?;
    let reader = unpacked.reader()?;
    timings.step("index opened");
    reader.check_release(&manifest)?;
    timings.step("index checked");
    let present = present_shards(pool.connection(), &manifest.dataset)?;
    let imported = import.shards(&present, &reader, progress)?;
    timings.step("shards checked");
    let mut placed = import.placed;
    placed.write(&target.torrent_path(&version), &torrent_bytes)?;
    placed.write(&target.manifest_path(&version), &manifest_bytes)?;
    report.shards_fetched = imported.fetched;
    report.bytes_fetched = imported.bytes;
    if let Some(items) = already {
        // The release is merged; a later sync may only have brought shards it lacked.
        mark_present(pool.connection_mut(), &manifest, plan)?;
        placed.keep();
        report.already_merged = true;
        report.items = items;
        (report.shards_present, report.shards_missing) =
            shard_presence(pool.connection(), &manifest_hash)?;
        return Ok(report);
    }

    let shards = ShardStates {
        present_before: present,
        checked: imported.checked,
        reader,
        dataset_dir: target.dataset_dir(),
    };
    progress.stage("merging into the pool", 0, Unit::Items);
    let counts = if is_empty(pool.connection())? {
        let (filled, counts) = merge_into_empty(
            pool,
            &manifest,
            &manifest_hash,
            &unpacked,
            &shards,
            plan,
            &timings,
        )?;
        pool = filled;
        counts
    } else {
        merge_index(
            pool.connection_mut(),
            &manifest,
            &manifest_hash,
            &unpacked,
            &shards,
            plan,
            &timings,
        )?
    };
    placed.keep();
    timings.step("committed");
    report.added = counts.added;
    report.changed = counts.changed;
    report.restored = counts.restored;
    report.moved = counts.moved;
    report.removed = counts.removed;
    report.unchanged = counts.same;
    report.duplicates = counts.duplicates;
    report.items = counts.items;
    (report.shards_present, report.shards_missing) =
        shard_presence(pool.connection(), &manifest_hash)?;
    Ok(report)
}

/// What the merge knows of the release's shards, for checking the members it records.
struct ShardStates {
    /// Present in the pool before this merge (checked against an earlier index).
    present_before: BTreeSet<String>,
    /// Checked against this release's index by this merge or its sync.
    checked: BTreeSet<String>,
    /// The release index, for checking a shard again.
    reader: index::IndexReader,
    /// The pool's folder of the dataset, where its shards are.
    dataset_dir: PathBuf,
}

/// Whether the pool holds no release at all.
fn is_empty(conn: &Connection) -> Result<bool, MergeError> {
    Ok(
        conn.query_row("SELECT NOT EXISTS (SELECT 1 FROM releases)", [], |r| {
            r.get(0)
        })?,
    )
}

/// Name prefix of a pool database being built by a first merge.
const BUILDING: &str = ".pool-building-";
/// Name prefix of a release index decompressed for a merge.
const UNPACKED_INDEX: &str = ".merge-";

/// A first merge into an empty pool (every downloader's first sync): the database is
/// built beside the pool without a journal, synced, and renamed over the empty
/// `pool.sqlite`. A rename is as atomic as a commit, and the build writes each page
/// once where WAL writes it twice (into the log, then into the database). Killed
/// before the rename, the pool is the empty one it was; the next merge removes the
/// half-built file.
fn merge_into_empty(
    pool: Pool,
    m: &Manifest,
    manifest_hash: &str,
    index: &index::Unpacked,
    shards: &ShardStates,
    plan: &MergePlan,
    timings: &crate::index::Timings,
) -> Result<(Pool, Counts), MergeError> {
    let root = pool.root().to_path_buf();
    let building = TempFile(root.join(format!("{BUILDING}{}.sqlite", std::process::id())));
    let mut fresh = Pool::create_unjournaled(&root, &building.0)?;
    let counts = merge_index(
        fresh.connection_mut(),
        m,
        manifest_hash,
        index,
        shards,
        plan,
        timings,
    )?;
    fresh.finish_unjournaled(&building.0)?;
    // The empty database closes first, so its log is checkpointed and removed and
    // cannot be replayed into the new file.
    drop(pool);
    let db = root.join(super::DATABASE);
    for suffix in ["-wal", "-shm"] {
        let side = root.join(format!("{}{suffix}", super::DATABASE));
        match std::fs::remove_file(&side) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(crate::files::file_error("remove", &side)(e).into())
            }
            _ => {}
        }
    }
    std::fs::rename(&building.0, &db).map_err(file_error("move into place", &db))?;
    std::fs::File::open(&root)
        .and_then(|d| d.sync_all())
        .map_err(file_error("sync", &root))?;
    Ok((Pool::open(&root)?, counts))
}

/// Records the selected shards of an already merged release as present.
fn mark_present(conn: &mut Connection, m: &Manifest, plan: &MergePlan) -> Result<(), MergeError> {
    let tx = conn.transaction()?;
    {
        let mut st = tx.prepare(
            "UPDATE shards SET present = 1
             WHERE dataset = (SELECT id FROM datasets WHERE name = ?1) AND id = ?2 AND present = 0",
        )?;
        for s in m.shards.iter().filter(|s| plan.wants(s.id)) {
            st.execute(rusqlite::params![m.dataset, s.id])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// (present, missing) shard counts of the release with this manifest.
fn shard_presence(conn: &Connection, manifest_hash: &str) -> Result<(u64, u64), MergeError> {
    Ok(conn.query_row(
        "SELECT coalesce(sum(s.present), 0), count(*) - coalesce(sum(s.present), 0)
         FROM releases r JOIN release_shards rs ON rs.release = r.id
         JOIN shards s ON s.dataset = r.dataset AND s.id = rs.shard
         WHERE r.manifest_blake3 = ?1",
        [manifest_hash],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
    )?)
}

/// Returns the live item count when this exact release is merged already; refuses
/// clashes, changed keys and older releases.
pub(crate) fn check_release(
    conn: &Connection,
    m: &Manifest,
    manifest_hash: &str,
    plan: &MergePlan,
) -> Result<Option<u64>, MergeError> {
    let signer = m.public_key().unwrap_or_default();
    let pinned: Option<(i64, String)> = conn
        .query_row(
            "SELECT id, public_key FROM datasets WHERE name = ?1",
            [&m.dataset],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok();
    let Some((ds, key)) = pinned else {
        return Ok(None);
    };
    if key != signer && !plan.trust_key {
        return Err(MergeError::KeyChanged {
            dataset: m.dataset.to_string(),
            pinned: key,
            found: signer.to_string(),
        });
    }
    let existing: Option<(String, i64)> = conn
        .query_row(
            "SELECT manifest_blake3, items FROM releases WHERE dataset = ?1 AND version = ?2",
            params![ds, m.version],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok();
    if let Some((hash, items)) = existing {
        if hash == manifest_hash {
            return Ok(Some(items as u64));
        }
        return Err(MergeError::VersionClash {
            dataset: m.dataset.to_string(),
            version: m.version.to_string(),
        });
    }
    let head: Option<(String, String)> = conn
        .query_row(
            "SELECT r.version, r.created FROM datasets d JOIN releases r ON r.id = d.head_release WHERE d.id = ?1",
            [ds],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok();
    if let Some((head, head_created)) = head {
        if m.created < head_created && !plan.allow_older {
            return Err(MergeError::Older {
                version: m.version.to_string(),
                created: m.created.clone(),
                head,
                head_created,
            });
        }
    }
    Ok(None)
}

/// The shards of `dataset` the pool holds. Presence is per dataset: two datasets may
/// list the same shard (a fork), and each keeps its own copy in its own folder.
pub(crate) fn present_shards(
    conn: &Connection,
    dataset: &str,
) -> Result<BTreeSet<String>, MergeError> {
    let mut st = conn.prepare(
        "SELECT s.id FROM shards s JOIN datasets d ON d.id = s.dataset
         WHERE d.name = ?1 AND s.present = 1",
    )?;
    let ids = st
        .query_map([dataset], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids)
}

#[derive(Default)]
struct Counts {
    items: u64,
    added: u64,
    changed: u64,
    restored: u64,
    moved: u64,
    same: u64,
    removed: u64,
    duplicates: u64,
}

/// The transaction: everything the pool learns from the release, or nothing.
fn merge_index(
    conn: &mut Connection,
    m: &Manifest,
    manifest_hash: &str,
    index: &index::Unpacked,
    shards: &ShardStates,
    plan: &MergePlan,
    timings: &crate::index::Timings,
) -> Result<Counts, MergeError> {
    let phash_distance = plan.phash_distance;
    conn.execute("ATTACH DATABASE ?1 AS idx", [index.uri()])?;
    // The pool is read through a memory map, so only the pages the merge changes are
    // copied into the 1 GiB cache (0.6 s of 14 on the incremental benchmark); the index
    // is read through its frames, with a small cache for the B-tree's inner pages.
    conn.execute_batch(
        "PRAGMA main.cache_size = -1048576; PRAGMA main.mmap_size = 8589934592;
         PRAGMA idx.cache_size = -32768; PRAGMA idx.mmap_size = 8589934592;
         PRAGMA temp.cache_size = -262144; PRAGMA temp_store = MEMORY;",
    )?;
    let result = (|| -> Result<Counts, MergeError> {
        let step = |what: &str| timings.step(what);
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let signer = m.public_key().unwrap_or_default();
        tx.execute(
            "INSERT INTO datasets(name, public_key) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET public_key = excluded.public_key",
            params![m.dataset, signer],
        )?;
        let ds: i64 = tx.query_row(
            "SELECT id FROM datasets WHERE name = ?1",
            [&m.dataset],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO releases(dataset, version, parent_version, manifest_blake3, created, merged_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                ds,
                m.version,
                m.parent.as_ref().map(|p| p.version.clone()),
                manifest_hash,
                m.created,
                crate::manifest::format_time(plan.tuning.merged_at)
            ],
        )?;
        let rel = tx.last_insert_rowid();

        // A dataset's first merge adds every item: its records are read from the index
        // as they are inserted, in key order, instead of being held in `incoming` (a
        // million records would be half a gigabyte of memory there).
        let first: bool = tx.query_row(
            "SELECT NOT EXISTS (SELECT 1 FROM items WHERE dataset = ?1)",
            [ds],
            |r| r.get(0),
        )?;
        let last_record: i64 =
            tx.query_row("SELECT coalesce(max(id), 0) FROM records", [], |r| r.get(0))?;
        let same = classify(&tx, ds, !first, last_record, index.path())?;
        files::check_members(&tx, m, shards, index.path())?;

        // A bulk merge (many new items for the pool's size) builds the secondary
        // indexes once after its inserts instead of inserting into them at random.
        let (new_items, pool_items): (i64, i64) = tx.query_row(
            "SELECT (SELECT count(*) FROM incoming WHERE fate IN ('added', 'changed', 'restored')),
                    (SELECT count(*) FROM items)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let bulk = new_items > plan.tuning.bulk_minimum && new_items * 3 > pool_items;
        if bulk {
            for (name, _) in schema::BULK_INDEXES {
                tx.execute_batch(&format!("DROP INDEX {name}"))?;
            }
        }
        step("incoming classified");
        // Counts: take out what is about to change or go (see `aggregates`).
        aggregates::prepare(&tx)?;
        let mut tally = aggregates::Tally::new();
        // Removed and changed items were live (classify says so) and count unless hidden
        // as duplicates, which an index lists without reading the items.
        tx.execute(
            "INSERT INTO temp.contrib_ids(id)
             SELECT id FROM temp.removed
             UNION SELECT item FROM incoming WHERE fate = 'changed'
             EXCEPT SELECT id FROM items WHERE dataset = ?1 AND duplicate_of IS NOT NULL AND removed_in IS NULL",
            [ds],
        )?;
        // The old links and md5s of these items are needed again below: kept as read.
        let mut old_links: aggregates::IdMap<i64, Vec<i64>> = Default::default();
        let mut old_md5s: Vec<String> = Vec::new();
        tally.contrib_ids_seen(&tx, -1, |id, md5, tags| {
            old_links.insert(id, tags.to_vec());
            old_md5s.extend(md5.map(str::to_string));
        })?;

        step("counts subtracted");
        // What this release removes: live items of the dataset it no longer lists.
        tx.execute(
            "INSERT INTO provenance(item, release, action, hash)
             SELECT i.id, ?1, 'removed', i.hash FROM temp.removed r JOIN items i ON i.id = r.id
             ORDER BY i.id",
            [rel],
        )?;
        let removed = tx.execute(
            "UPDATE items SET removed_in = ?1, duplicate_of = NULL WHERE id IN (SELECT id FROM temp.removed)",
            [rel],
        )?;

        step("removed marked");
        // The release's new records, appended (their ids follow key order). A first
        // merge did not keep them and reads them from the index.
        if first {
            tx.execute(
                "INSERT INTO records(id, record)
                 SELECT n.record_id, x.record FROM incoming n JOIN idx.items x ON x.key = n.key
                 WHERE n.record_id IS NOT NULL ORDER BY n.key",
                [],
            )?;
        } else {
            tx.execute(
                "INSERT INTO records(id, record)
                 SELECT record_id, record FROM incoming WHERE record_id IS NOT NULL ORDER BY key",
                [],
            )?;
        }
        // Changed content: keep the replaced version (its record stays where it is),
        // then update in place.
        tx.execute(
            "INSERT INTO item_history(item, release, hash, shard, record_id)
             SELECT i.id, ?1, i.hash, i.shard, i.record_id FROM incoming n JOIN items i ON i.id = n.item
             WHERE n.fate = 'changed' OR (n.fate = 'restored' AND n.old_hash != n.hash)
             ORDER BY i.id",
            [rel],
        )?;
        update_items(&tx, rel)?;
        let (record, from) = if first {
            (
                "r.record",
                "incoming n LEFT JOIN records r ON r.id = n.record_id",
            )
        } else {
            ("n.record", "incoming n")
        };
        let (cols, exprs) = schema::record_select(record);
        tx.execute(
            &format!(
                "INSERT INTO items(dataset, key, shard, hash, volume, record_id, {cols}, added_in)
                 SELECT ?1, n.key, n.shard, n.hash, n.volume, n.record_id, {exprs}, ?2
                 FROM {from}
                 WHERE n.fate = 'added' ORDER BY n.key"
            ),
            params![ds, rel],
        )?;
        tx.execute(
            "UPDATE incoming SET item = (SELECT id FROM items WHERE dataset = ?1 AND key = incoming.key)
             WHERE fate = 'added'",
            [ds],
        )?;
        tx.execute(
            "INSERT INTO provenance(item, release, action, hash)
             SELECT item, ?1, fate, hash FROM incoming WHERE fate IN ('added', 'changed', 'restored')
             ORDER BY item",
            [rel],
        )?;

        step("items inserted/updated");
        // Where each member lies, for every item whose content or shard is new: members
        // are keyed by shard, whose contents never change, so these are appended shard
        // by shard and nothing is deleted (a shard the pool knows already, as when an
        // item comes back to it, has them).
        tx.execute_batch(
            "INSERT OR IGNORE INTO members(shard, item, ext, offset, length, blake3)
                SELECT n.shard, n.item, m.ext, m.offset, m.length, m.blake3
                FROM incoming n CROSS JOIN idx.members m ON m.key = n.key WHERE n.fate != 'same'
                ORDER BY n.shard, n.item, m.ext;",
        )?;
        step("members");
        let linked = link_tags(
            &tx,
            new_items as u64,
            m.counts.items,
            &old_links,
            index.path(),
        )?;
        drop(old_links);
        step("tags linked");
        if bulk {
            for (name, create) in schema::BULK_INDEXES {
                tx.execute_batch(create)?;
                step(name);
            }
            step("indexes rebuilt");
        }

        step("members and tags");
        // Shards of the release: the selected ones are verified in the pool by now; the
        // others are known, with their items, but not present.
        {
            let mut shard = tx.prepare(
                "INSERT INTO shards(id, dataset, size, items, volume, present) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(dataset, id) DO UPDATE SET present = max(present, excluded.present)",
            )?;
            let mut link =
                tx.prepare("INSERT OR IGNORE INTO release_shards(release, shard) VALUES (?1, ?2)")?;
            for s in &m.shards {
                let present = plan.wants(s.id);
                shard.execute(params![
                    s.id,
                    ds,
                    s.size as i64,
                    s.items as i64,
                    s.volume,
                    present
                ])?;
                link.execute(params![rel, s.id])?;
            }
        }

        let mut counts = Counts::default();
        {
            let mut st = tx.prepare("SELECT fate, count(*) FROM incoming GROUP BY fate")?;
            let rows = st.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?;
            for row in rows {
                let (fate, n) = row?;
                match fate.as_str() {
                    "added" => counts.added = n,
                    "changed" => counts.changed = n,
                    "restored" => counts.restored = n,
                    "moved" => counts.moved = n,
                    _ => {}
                }
            }
        }
        counts.removed = removed as u64;
        counts.same = same;
        step("shards and fates counted");
        // Without perceptual hashes, only the md5 groups this merge touched can change.
        let has_phash: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM items WHERE dataset = ?1 AND phash IS NOT NULL)",
            [ds],
            |r| r.get(0),
        )?;
        // A bulk merge touches most groups anyway: one pass over all is cheaper.
        let resolved = if has_phash || bulk {
            duplicates::resolve(&tx, ds, phash_distance, duplicates::Scope::All)?
        } else {
            // The groups the merge can change: those that visible items left (their old
            // md5s, read with the counts) and those that touched items joined.
            let mut md5s = std::mem::take(&mut old_md5s);
            md5s.extend(linked.md5s.iter().cloned());
            md5s.sort_unstable();
            md5s.dedup();
            let mut st = tx.prepare(
                "SELECT item FROM incoming WHERE fate IN ('added', 'changed', 'restored')",
            )?;
            let touched: Vec<i64> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            duplicates::resolve(
                &tx,
                ds,
                phash_distance,
                duplicates::Scope::Md5s {
                    md5s: &md5s,
                    items: &touched,
                },
            )?
        };
        counts.duplicates = tx.query_row(
            "SELECT count(*) FROM items WHERE dataset = ?1 AND removed_in IS NULL AND duplicate_of IS NOT NULL",
            [ds],
            |r| r.get::<_, i64>(0),
        )? as u64;
        step("duplicates resolved");
        // Counts: add what is new or changed and visible (its tags are at hand), and
        // items whose visibility alone changed (their tags did not).
        let hidden: std::collections::HashSet<i64> = {
            let mut st = tx.prepare(
                "SELECT n.item FROM incoming n JOIN items i ON i.id = n.item
                 WHERE n.fate IN ('added', 'changed', 'restored') AND i.duplicate_of IS NOT NULL",
            )?;
            let ids = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            ids
        };
        tally.load_tags(&tx)?;
        for (item, counted, tags) in linked.iter() {
            if !hidden.contains(&item) {
                tally.item(counted, tags.iter().copied(), 1);
            }
        }
        drop(linked);
        for (ids, sign) in [(&resolved.newly_hidden, -1), (&resolved.newly_visible, 1)] {
            tx.execute(
                "INSERT INTO temp.contrib_ids(id) SELECT value FROM json_each(?1)
                 WHERE value NOT IN (SELECT item FROM incoming WHERE fate IN ('added', 'changed', 'restored'))",
                [serde_json::to_string(ids).expect("ids serialize")],
            )?;
            tally.contrib_ids(&tx, sign)?;
        }
        step("counts tallied");
        tally.write(&tx)?;
        counts.items = tx.query_row(
            "SELECT count(*) FROM items WHERE dataset = ?1 AND removed_in IS NULL",
            [ds],
            |r| r.get::<_, i64>(0),
        )? as u64;
        tx.execute(
            "UPDATE releases SET items = ?2, added = ?3, changed = ?4, removed = ?5 WHERE id = ?1",
            params![
                rel,
                counts.items as i64,
                (counts.added + counts.restored) as i64,
                counts.changed as i64,
                counts.removed as i64
            ],
        )?;
        tx.execute(
            "UPDATE datasets SET head_release = ?2 WHERE id = ?1",
            params![ds, rel],
        )?;
        tx.execute_batch("DROP TABLE temp.incoming; DROP TABLE temp.removed;")?;
        step("counts added");
        tx.commit()?;
        Ok(counts)
    })();
    let result = result.map_err(|e| name_bad_record(conn, e, index.path()));
    let detached = conn.execute_batch("DETACH DATABASE idx");
    let counts = result?;
    detached?;
    Ok(counts)
}

/// SQLite says only "malformed JSON" when a record it reads is not JSON: the item is
/// found and named (after the rollback, with the index still attached).
fn name_bad_record(conn: &Connection, e: MergeError, path: &Path) -> MergeError {
    let MergeError::Sqlite(sql) = &e else {
        return e;
    };
    if !sql.to_string().contains("JSON") {
        return e;
    }
    let bad: Option<(String, String)> = conn
        .query_row(
            "SELECT key, substr(record, 1, 60) FROM idx.items
             WHERE record IS NOT NULL AND NOT json_valid(record) ORDER BY key LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok();
    match bad {
        Some((key, start)) => IndexError::BadItem {
            path: path.to_path_buf(),
            key,
            problem: format!(
                "has a record that is not JSON (it starts `{}`)",
                crate::name::shown(&start)
            ),
        }
        .into(),
        None => e,
    }
}

/// Updates the changed, restored and moved items in place. SQLite rewrites an item's
/// entry in every index whose columns an UPDATE assigns, whether the value changed or
/// not (a seek to delete it, one to insert it, and its page goes to the log), so each
/// row assigns only the indexed record columns whose values differ: a changed score
/// touches the score index and no other.
fn update_items(tx: &Connection, rel: i64) -> rusqlite::Result<()> {
    let record = schema::RECORD_COLUMNS;
    let indexed = schema::INDEXED_RECORD_COLUMNS;
    let new_values: Vec<String> = record
        .iter()
        .map(|(_, e)| e.replace("$R", "n.record"))
        .collect();
    let old_values: Vec<String> = indexed.iter().map(|c| format!("i.{c}")).collect();
    let mut rows = tx.prepare(&format!(
        "SELECT n.item, n.shard, n.hash, n.volume,
                CASE n.fate WHEN 'moved' THEN i.record_id ELSE n.record_id END,
                {}, i.changed_in, n.fate, {}
         FROM incoming n JOIN items i ON i.id = n.item
         WHERE n.fate IN ('changed', 'restored', 'moved') ORDER BY n.item",
        new_values.join(", "),
        old_values.join(", ")
    ))?;
    // Parameters: ?1 item, ?2 shard, ?3 hash, ?4 volume, ?5 record id, then the record
    // columns, then changed_in; the statement for a set of changed indexed columns
    // (bit k: indexed[k]) and a restore names those it assigns.
    let changed_in = 6 + record.len();
    // Where each indexed column is among the record columns (its parameter is 6 + that).
    let indexed_at: Vec<usize> = indexed
        .iter()
        .map(|c| {
            record
                .iter()
                .position(|(r, _)| r == c)
                .expect("an indexed column is a record column")
        })
        .collect();
    let mut statements: HashMap<(u32, bool), rusqlite::Statement<'_>> = HashMap::new();
    let mut values: Vec<rusqlite::types::Value> = Vec::with_capacity(changed_in);
    let mut rows = rows.query([])?;
    while let Some(r) = rows.next()? {
        values.clear();
        for c in 0..changed_in - 1 {
            values.push(r.get(c)?);
        }
        let fate = r.get_ref(changed_in)?.as_str()?;
        let restored = fate == "restored";
        values.push(if fate == "moved" {
            r.get(changed_in - 1)?
        } else {
            rel.into()
        });
        let mut mask = 0u32;
        for (k, &at) in indexed_at.iter().enumerate() {
            let old: rusqlite::types::Value = r.get(changed_in + 1 + k)?;
            if values[5 + at] != old {
                mask |= 1 << k;
            }
        }
        let st = match statements.entry((mask, restored)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut set = vec![
                    "shard = ?2".to_string(),
                    "hash = ?3".into(),
                    "volume = ?4".into(),
                    "record_id = ?5".into(),
                ];
                for (j, (column, _)) in record.iter().enumerate() {
                    let k = indexed_at.iter().position(|&at| at == j);
                    if k.is_none_or(|k| mask & (1 << k) != 0) {
                        set.push(format!("{column} = ?{}", 6 + j));
                    }
                }
                set.push(format!("changed_in = ?{changed_in}"));
                if restored {
                    set.push("removed_in = NULL".into());
                }
                e.insert(tx.prepare(&format!(
                    "UPDATE items SET {} WHERE id = ?1",
                    set.join(", ")
                ))?)
            }
        };
        st.execute(rusqlite::params_from_iter(values.iter()))?;
    }
    Ok(())
}

/// The tag links of the incoming items that are new or changed, with what each brings
/// to the counts: one flat list of tag ids, so a million items cost a few bytes each.
#[derive(Default)]
struct Linked {
    items: Vec<(i64, aggregates::Counted, usize)>,
    tags: Vec<i64>,
    /// The md5s of the items, as they are after the merge.
    md5s: Vec<String>,
}

impl Linked {
    /// (item id, counted state, pool tag ids) of each item.
    fn iter(&self) -> impl Iterator<Item = (i64, aggregates::Counted, &[i64])> + '_ {
        let mut start = 0;
        self.items.iter().map(move |&(id, counted, end)| {
            let tags = &self.tags[start..end];
            start = end;
            (id, counted, tags)
        })
    }
}

/// Links the added, changed and restored items to their tags: tags the pool lacks are
/// created (with their canonical names), new items get every link, and changed or
/// restored items only the links they gained and lose only those they dropped (a record
/// whose score changed keeps its twelve links untouched).
///
/// The items come in key order; their tags are read from the release index by key, or,
/// when most of the index's items need links (a first merge), in one sequential pass
/// over the whole tag table walked beside the items, which spares a million seeks.
///
/// `old_links` holds the links of some changed items as the counts read them; the
/// others' are read here.
fn link_tags(
    tx: &Connection,
    wanted: u64,
    index_items: u64,
    old_links: &aggregates::IdMap<i64, Vec<i64>>,
    index_path: &Path,
) -> Result<Linked, MergeError> {
    let mut ids: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    let mut key = String::new();
    {
        let mut st = tx.prepare("SELECT id, name, category, source FROM tags")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            tag_key(
                &mut key,
                r.get_ref(1)?.as_str()?,
                r.get_ref(2)?.as_str()?,
                r.get_ref(3)?.as_str()?,
            );
            ids.insert(key.clone(), r.get(0)?);
        }
    }
    let mut new_tag = tx.prepare(&format!(
        "INSERT INTO tags(name, category, source, canonical) VALUES (?1, ?2, ?3, {}) RETURNING id",
        crate::pool::CANONICAL_TAG_SQL.replace("$N", "?1")
    ))?;
    let mut new_links =
        super::RowBatch::new(tx, "INSERT OR IGNORE INTO item_tags(item, tag)", 2, "")?;
    let mut unlink = tx.prepare("DELETE FROM item_tags WHERE item = ?1 AND tag = ?2")?;
    let mut links_of = tx.prepare("SELECT tag FROM item_tags WHERE item = ?1")?;
    let mut items = tx.prepare(&format!(
        "SELECT n.key, n.item, n.fate = 'added', coalesce(i.booru, ''), {}, i.md5
         FROM incoming n JOIN items i ON i.id = n.item
         WHERE n.fate IN ('added', 'changed', 'restored') ORDER BY n.key",
        aggregates::COUNTED_COLUMNS
    ))?;
    let sweep = wanted * 4 > index_items;
    let mut all_tags = tx.prepare("SELECT key, category, tag FROM idx.tags ORDER BY key")?;
    let mut tags_of = tx.prepare("SELECT category, tag FROM idx.tags WHERE key = ?1")?;
    // With `sweep`, the items are walked beside this one pass over every tag row.
    let mut swept = if sweep {
        Some(all_tags.query([])?)
    } else {
        None
    };
    // The swept row read ahead (key, category, tag): it belongs to a later item.
    let mut pending: Option<(String, String, String)> = None;
    let mut out = Linked::default();
    let mut new: Vec<i64> = Vec::new();
    let mut old: Vec<i64> = Vec::new();
    let bad_tag = |key: &str, problem: String| -> MergeError {
        IndexError::BadItem {
            path: index_path.to_path_buf(),
            key: key.to_string(),
            problem,
        }
        .into()
    };
    // The index's tags may hold any type SQLite allows; only text is a tag.
    fn text<'a>(
        v: rusqlite::types::ValueRef<'a>,
        what: &str,
        bad: impl Fn(String) -> MergeError,
    ) -> Result<&'a str, MergeError> {
        index::check_tag_text(v, what).map_err(bad)
    }
    let mut rows = items.query([])?;
    while let Some(r) = rows.next()? {
        let item_key = r.get_ref(0)?.as_str()?;
        let id: i64 = r.get(1)?;
        let added: bool = r.get(2)?;
        let source = r.get_ref(3)?.as_str()?;
        let counted = aggregates::Counted::read(r, 4)?;
        if let Some(md5) = r.get_ref(9)?.as_str_or_null()? {
            out.md5s.push(md5.to_string());
        }
        new.clear();
        let mut take = |category: &str, tag: &str| -> Result<(), MergeError> {
            if new.len() as u64 >= index::MAX_TAGS_PER_ITEM {
                return Err(bad_tag(
                    item_key,
                    format!("has more than {} tags", index::MAX_TAGS_PER_ITEM),
                ));
            }
            tag_key(&mut key, tag, category, source);
            let tag_id = match ids.get(key.as_str()) {
                Some(&t) => t,
                None => {
                    let t: i64 = new_tag.query_row(params![tag, category, source], |r| r.get(0))?;
                    ids.insert(key.clone(), t);
                    t
                }
            };
            new.push(tag_id);
            Ok(())
        };
        match swept.as_mut() {
            Some(sweep) => {
                use std::cmp::Ordering;
                if let Some((k, category, tag)) = &pending {
                    match k.as_str().cmp(item_key) {
                        Ordering::Greater => {}
                        order => {
                            if order == Ordering::Equal {
                                take(category, tag)?;
                            }
                            pending = None;
                        }
                    }
                }
                while pending.is_none() {
                    let Some(t) = sweep.next()? else { break };
                    let (k, category, tag) = (
                        text(t.get_ref(0)?, "key", |p| bad_tag(item_key, p))?,
                        text(t.get_ref(1)?, "category", |p| bad_tag(item_key, p))?,
                        text(t.get_ref(2)?, "tag", |p| bad_tag(item_key, p))?,
                    );
                    match k.cmp(item_key) {
                        Ordering::Less => {}
                        Ordering::Equal => take(category, tag)?,
                        Ordering::Greater => {
                            pending = Some((k.to_string(), category.to_string(), tag.to_string()));
                        }
                    }
                }
            }
            None => {
                let mut t = tags_of.query([item_key])?;
                while let Some(t) = t.next()? {
                    take(
                        text(t.get_ref(0)?, "category", |p| bad_tag(item_key, p))?,
                        text(t.get_ref(1)?, "tag", |p| bad_tag(item_key, p))?,
                    )?;
                }
            }
        }
        new.sort_unstable();
        new.dedup();
        old.clear();
        if !added {
            match old_links.get(&id) {
                Some(tags) => old.extend_from_slice(tags),
                None => {
                    for tag in links_of.query_map([id], |r| r.get(0))? {
                        old.push(tag?);
                    }
                }
            }
            old.sort_unstable();
        }
        for tag in old.iter().filter(|t| new.binary_search(t).is_err()) {
            unlink.execute(params![id, tag])?;
        }
        for &tag in new.iter().filter(|t| old.binary_search(t).is_err()) {
            new_links.push([id.into(), tag.into()])?;
        }
        out.tags.extend_from_slice(&new);
        out.items.push((id, counted, out.tags.len()));
    }
    new_links.finish()?;
    Ok(out)
}

/// A tag's identity in the pool (name, category, source) as one map key, in `key`.
fn tag_key(key: &mut String, name: &str, category: &str, source: &str) {
    key.clear();
    for (i, part) in [name, category, source].into_iter().enumerate() {
        if i > 0 {
            key.push('\u{1f}');
        }
        key.push_str(part);
    }
}

/// Compares the release's items with the pool's items of dataset `ds`, walking both in
/// key order: what the release brings goes to `temp.incoming` with its fate (`same`
/// items only counted, since nothing happens to them), and the pool's live items the
/// release no longer lists to `temp.removed`. Returns the number of `same` items.
/// Records of added items are kept in `incoming` only with `keep_records`. Every added,
/// changed or restored item with a record gets the id its record will have in
/// `records` (`record_id`): the ids after `last_record`, in key order.
fn classify(
    tx: &Connection,
    ds: i64,
    keep_records: bool,
    last_record: i64,
    index_path: &Path,
) -> Result<u64, MergeError> {
    tx.execute_batch(
        "DROP TABLE IF EXISTS temp.incoming;
         CREATE TEMP TABLE incoming(
            key TEXT PRIMARY KEY, shard TEXT, hash TEXT, volume TEXT,
            item INTEGER, old_hash TEXT, fate TEXT, record TEXT, record_id INTEGER
         ) WITHOUT ROWID;
         DROP TABLE IF EXISTS temp.removed;
         CREATE TEMP TABLE removed(id INTEGER PRIMARY KEY);",
    )?;
    // Records come along for what the merge writes, so it reads the release's items once.
    let mut release =
        tx.prepare("SELECT key, shard, hash, volume, record FROM idx.items ORDER BY key")?;
    let mut pool = tx.prepare(CLASSIFY_POOL)?;
    let mut full = tx.prepare("SELECT hash, shard FROM items WHERE id = ?1")?;
    let mut incoming = tx.prepare(
        "INSERT INTO incoming(key, shard, hash, volume, item, old_hash, fate, record, record_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut next_record = last_record;
    let mut record_id = |record: &rusqlite::types::ValueRef<'_>| {
        if matches!(record, rusqlite::types::ValueRef::Null) {
            None
        } else {
            next_record += 1;
            Some(next_record)
        }
    };
    let mut removed = tx.prepare("INSERT INTO temp.removed(id) VALUES (?1)")?;
    let mut release = release.query([])?;
    let mut pool = pool.query([ds])?;
    let mut previous: Vec<u8> = Vec::new();
    let mut r = release.next()?;
    check_release_row(r, &mut previous, index_path)?;
    let mut p = pool.next()?;
    let mut same = 0;
    use std::cmp::Ordering;
    while r.is_some() || p.is_some() {
        let order = match (r, p) {
            // Bytes, as SQLite's BINARY collation orders keys (no UTF-8 check needed).
            (Some(r), Some(p)) => r.get_ref(0)?.as_bytes()?.cmp(p.get_ref(0)?.as_bytes()?),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                let new = r.expect("a release row");
                let record = if keep_records {
                    new.get_ref(4)?.as_str_or_null()?
                } else {
                    None
                };
                incoming.execute(params![
                    new.get_ref(0)?.as_str()?,
                    new.get_ref(1)?.as_str()?,
                    new.get_ref(2)?.as_str()?,
                    new.get_ref(3)?.as_str()?,
                    None::<i64>,
                    None::<String>,
                    "added",
                    record,
                    record_id(&new.get_ref(4)?)
                ])?;
                r = release.next()?;
                check_release_row(r, &mut previous, index_path)?;
            }
            Ordering::Greater => {
                let gone = p.expect("a pool row");
                if !gone.get::<_, bool>(4)? {
                    removed.execute([gone.get::<_, i64>(1)?])?;
                }
                p = pool.next()?;
            }
            Ordering::Equal => {
                let (new, old) = (r.expect("a release row"), p.expect("a pool row"));
                let (hash, shard) = (new.get_ref(2)?.as_str()?, new.get_ref(1)?.as_str()?);
                let removed = old.get::<_, bool>(4)?;
                if !removed
                    && prefix(hash).as_bytes() == old.get_ref(2)?.as_bytes()?
                    && prefix(shard).as_bytes() == old.get_ref(3)?.as_bytes()?
                {
                    same += 1;
                } else {
                    let id: i64 = old.get(1)?;
                    let (old_hash, old_shard): (String, String) =
                        full.query_row([id], |f| Ok((f.get(0)?, f.get(1)?)))?;
                    let fate = if removed {
                        "restored"
                    } else if hash != old_hash {
                        "changed"
                    } else if shard != old_shard {
                        "moved"
                    } else {
                        "same"
                    };
                    if fate == "same" {
                        same += 1;
                    } else {
                        // A moved item keeps its record (same content, same record).
                        let rid = if fate == "moved" {
                            None
                        } else {
                            record_id(&new.get_ref(4)?)
                        };
                        incoming.execute(params![
                            new.get_ref(0)?.as_str()?,
                            shard,
                            hash,
                            new.get_ref(3)?.as_str()?,
                            id,
                            old_hash,
                            fate,
                            new.get_ref(4)?.as_str_or_null()?,
                            rid
                        ])?;
                    }
                }
                r = release.next()?;
                check_release_row(r, &mut previous, index_path)?;
                p = pool.next()?;
            }
        }
    }
    Ok(same)
}

/// `index::check_item_row` on the release's current row, as a merge error.
fn check_release_row(
    row: Option<&rusqlite::Row<'_>>,
    previous: &mut Vec<u8>,
    path: &Path,
) -> Result<(), MergeError> {
    match row {
        None => Ok(()),
        Some(r) => index::check_item_row(r, previous).map_err(|(key, problem)| {
            IndexError::BadItem {
                path: path.to_path_buf(),
                key,
                problem,
            }
            .into()
        }),
    }
}

/// The pool's side of `classify`: every item of a dataset in key order, read from the
/// covering index `items_state` alone (prefixes of hash and shard, not the strings).
const CLASSIFY_POOL: &str =
    "SELECT key, id, substr(hash, 1, 16), substr(shard, 1, 16), removed_in IS NOT NULL
     FROM items WHERE dataset = ?1 ORDER BY key";

/// The first 16 characters of `s`, as SQLite's `substr(s, 1, 16)` counts them.
fn prefix(s: &str) -> &str {
    s.char_indices().nth(16).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_walk_reads_the_item_state_index_alone() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::open_or_create(dir.path()).unwrap();
        let conn = pool.connection();
        let plan: String = conn
            .query_row(&format!("EXPLAIN QUERY PLAN {CLASSIFY_POOL}"), [1], |r| {
                r.get(3)
            })
            .unwrap();
        assert_eq!(plan, "SEARCH items USING INDEX items_state (dataset=?)");
        // The plan keeps the table open in case an indexed expression needs it; the
        // program must read every column, prefixes included, from the index.
        let mut st = conn.prepare(&format!("EXPLAIN {CLASSIFY_POOL}")).unwrap();
        let code: Vec<(String, i64, i64)> = st
            .query_map([1], |r| Ok((r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let index = code.iter().find(|c| c.0 == "DeferredSeek").map(|c| c.1);
        let read: Vec<i64> = code
            .iter()
            .filter(|c| c.0 == "Column")
            .map(|c| c.1)
            .collect();
        assert_eq!(read.len(), 4, "{code:?}");
        assert!(read.iter().all(|&c| Some(c) == index), "{code:?}");
    }

    #[test]
    fn prefixes_count_characters_as_sqlite_does() {
        assert_eq!(prefix("0123456789abcdef0123"), "0123456789abcdef");
        assert_eq!(prefix("short"), "short");
        assert_eq!(prefix("ééééééééééééééééé"), "éééééééééééééééé");
    }

    fn items(list: &[(&'static str, i64)]) -> Vec<(&'static str, serde_json::Value)> {
        list.iter()
            .map(|(key, score)| {
                let mut r = crate::testing::record("danbooru", 1, &[("general", &["solo"])]);
                r["score"] = (*score).into();
                (*key, r)
            })
            .collect()
    }

    #[test]
    fn each_release_is_classified_against_the_pool_and_a_second_merge_changes_nothing() {
        let f = crate::testing::Fixture::new();
        f.publish("1", None, &items(&[("a", 1), ("b", 2), ("c", 3), ("d", 4)]));
        let r = f.merge("1");
        assert_eq!((r.added, r.changed, r.removed, r.unchanged), (4, 0, 0, 0));
        // b changes, c goes, e arrives, a and d stay.
        f.publish(
            "2",
            Some("1"),
            &items(&[("a", 1), ("b", 20), ("d", 4), ("e", 5)]),
        );
        let r = f.merge("2");
        assert_eq!(
            (r.added, r.changed, r.removed, r.unchanged, r.restored),
            (1, 1, 1, 2, 0)
        );
        assert_eq!(r.items, 4);
        let again = f.merge("2");
        assert!(again.already_merged);
        // c comes back as it was.
        f.publish(
            "3",
            Some("2"),
            &items(&[("a", 1), ("b", 20), ("c", 3), ("d", 4), ("e", 5)]),
        );
        let r = f.merge("3");
        assert_eq!((r.added, r.changed, r.removed, r.restored), (0, 0, 0, 1));

        let pool = f.open_pool();
        let history: Vec<(String, String, String)> = pool
            .connection()
            .prepare(
                "SELECT i.key, r.version, p.action FROM provenance p JOIN items i ON i.id = p.item
                 JOIN releases r ON r.id = p.release WHERE i.key IN ('b', 'c') ORDER BY 1, 2",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let want = [
            ("b", "1", "added"),
            ("b", "2", "changed"),
            ("c", "1", "added"),
            ("c", "2", "removed"),
            ("c", "3", "restored"),
        ];
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        assert_eq!(history, want);
        let merged_at: String = pool
            .connection()
            .query_row("SELECT merged_at FROM releases LIMIT 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(merged_at, "2026-01-01T00:00:00Z", "the plan's clock");
    }

    #[test]
    fn an_older_release_is_refused_unless_allowed() {
        let f = crate::testing::Fixture::new();
        f.publish("1", None, &items(&[("a", 1)]));
        f.publish("2", Some("1"), &items(&[("a", 2)]));
        f.merge("2");
        let e = f.try_merge("1").unwrap_err();
        assert!(e.to_string().contains("older"), "{e}");
    }
}
