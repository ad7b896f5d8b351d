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
//!
//! The parts, in the order a merge runs them: `files` (shards and index brought into
//! the pool and checked, before the transaction), `classify` (the release against the
//! pool, in key order), `apply` (items updated in place), `tags` (links and new tags);
//! this file holds the transaction that runs them and the counts and duplicates after.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};
use serde::Serialize;

mod apply;
mod classify;
mod files;
mod tags;

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
    /// Records whose `embedding` seedpool refused (not float16 base64, too long, not
    /// finite, or not the length of its space): their items merged without a vector.
    pub embeddings_refused: u64,
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
    report.embeddings_refused = counts.embeddings_refused;
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

/// Whether the pool holds nothing at all, so a first merge may build a new database in
/// its place: no release, and nothing a user put there before one (tags imported, a
/// feed followed), which a new database would lose.
fn is_empty(conn: &Connection) -> Result<bool, MergeError> {
    Ok(conn.query_row(
        "SELECT NOT EXISTS (SELECT 1 FROM releases) AND NOT EXISTS (SELECT 1 FROM tag_info)
             AND NOT EXISTS (SELECT 1 FROM tag_aliases) AND NOT EXISTS (SELECT 1 FROM feeds)",
        [],
        |r| r.get(0),
    )?)
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
    embeddings_refused: u64,
}

/// The merge's page cache for the pool and its temporary tables, in SQLite's units
/// (negative: KiB): 16 MiB. SQLite's sorter (each bulk insert's ORDER BY, each index
/// built) sorts lists of up to this size, on two threads, and lists that fit the
/// processor's caches sort faster than large ones merge: a first merge of a million
/// items took 42 s with 256 MiB and 37.6 s with 16 MiB, an incremental one 14.6 and
/// 15.1 s, and their peaks fell from 0.95 and 0.82 GB to 0.69 and 0.51 GB.
const MERGE_CACHE: i64 = -16_384;

/// The transaction: everything the pool learns from the release, or nothing. Each
/// phase is a method of `MergeTx`, in the order they run.
fn merge_index(
    conn: &mut Connection,
    m: &Manifest,
    manifest_hash: &str,
    index: &index::Unpacked,
    shards: &ShardStates,
    plan: &MergePlan,
    timings: &crate::index::Timings,
) -> Result<Counts, MergeError> {
    conn.execute("ATTACH DATABASE ?1 AS idx", [index.uri()])?;
    // The pool goes through a small page cache (`MERGE_CACHE`) and no memory map: a
    // map of the whole pool put every page the merge read into its resident memory
    // (2.25 GB at a million items, first merge and incremental alike); pages past the
    // cache come from the system's. Temporary tables (`incoming`: a row per item of the
    // release) and the sorter's runs go to temporary files past their cache instead of
    // growing in memory. The index is read through its frames, with a small cache for
    // the B-tree's inner pages.
    conn.execute_batch(&format!(
        "PRAGMA main.cache_size = {MERGE_CACHE}; PRAGMA main.mmap_size = 0;
         PRAGMA idx.cache_size = -32768; PRAGMA idx.mmap_size = 8589934592;
         PRAGMA temp.cache_size = {MERGE_CACHE}; PRAGMA temp_store = FILE; PRAGMA threads = 2;",
    ))?;
    let result = (|| -> Result<Counts, MergeError> {
        let step = |what: &str| timings.step(what);
        let mut t = MergeTx::begin(conn, m, manifest_hash, index, plan)?;
        let same = t.classify(shards)?;
        step("incoming classified");
        let (mut tally, old_links, old_md5s) = t.uncount()?;
        step("counts subtracted");
        // By the hashes changed and removed items have before they are written.
        super::phash::unindex(
            &t.tx,
            "SELECT id FROM temp.removed UNION ALL SELECT item FROM incoming WHERE fate = 'changed'",
        )?;
        let removed = t.remove()?;
        step("removed marked");
        t.write_items()?;
        step("items inserted/updated");
        super::phash::index(
            &t.tx,
            "SELECT item FROM incoming WHERE fate IN ('added', 'changed', 'restored')",
        )?;
        step("perceptual hashes indexed");
        let vectors = super::vectors::write(
            &t.tx,
            t.ds,
            "SELECT id FROM temp.removed UNION ALL SELECT item FROM incoming WHERE fate IN ('changed', 'restored')",
            "SELECT item FROM incoming WHERE fate IN ('added', 'changed', 'restored')",
        )?;
        step("vectors written");
        t.write_members()?;
        step("members");
        // Each linked item counts at once (those found hidden as duplicates below are
        // taken out again) and goes to its stored clusters, which cover the new and
        // changed items without training again; nothing per item is kept.
        let mut clusters = super::clusters::Assigner::new(&t.tx, t.ds)?;
        tally.load_tags(&t.tx)?;
        tags::link_tags(
            &t.tx,
            t.new_items as u64,
            m.counts.items,
            &old_links,
            index.path(),
            |id, counted, tags| {
                tally.linked_item(&t.tx, counted, tags)?;
                if let Some(c) = clusters.as_mut() {
                    c.item(id, tags)?;
                }
                Ok(())
            },
        )?;
        drop((old_links, clusters));
        step("tags linked and clusters assigned");
        if t.bulk {
            for (name, create) in schema::BULK_INDEXES {
                t.tx.execute_batch(create)?;
                step(name);
            }
            step("indexes rebuilt");
        }
        step("members and tags");
        t.record_shards()?;
        let mut counts = t.fates(removed as u64, same)?;
        counts.embeddings_refused = vectors.refused;
        step("shards and fates counted");
        let resolved = t.resolve_duplicates(old_md5s)?;
        counts.duplicates = t.tx.query_row(
            "SELECT count(*) FROM items WHERE dataset = ?1 AND removed_in IS NULL AND duplicate_of IS NOT NULL",
            [t.ds],
            |r| r.get::<_, i64>(0),
        )? as u64;
        step("duplicates resolved");
        t.recount(&mut tally, &resolved)?;
        step("counts tallied");
        tally.write_release(&t.tx, t.rel, t.ds)?;
        tally.write(&t.tx)?;
        let counts = t.finish(counts)?;
        step("counts added");
        Ok(counts)
    })();
    let result = result.map_err(|e| name_bad_record(conn, e, index.path()));
    let detached = conn.execute_batch("DETACH DATABASE idx");
    let counts = result?;
    detached?;
    Ok(counts)
}

/// One merge's transaction and what its phases share.
struct MergeTx<'a> {
    tx: rusqlite::Transaction<'a>,
    m: &'a Manifest,
    plan: &'a MergePlan,
    index: &'a index::Unpacked,
    /// The dataset's and the new release's ids.
    ds: i64,
    rel: i64,
    /// The dataset's first merge: every item is added, records read from the index.
    first: bool,
    /// Items added, changed or restored.
    new_items: i64,
    /// Many new items for the pool's size: the secondary indexes are dropped for the
    /// inserts and built again after.
    bulk: bool,
}

/// The links and md5s of the items whose counts were taken out, as read.
type OldLinks = aggregates::IdMap<i64, Vec<i64>>;

impl<'a> MergeTx<'a> {
    /// Opens the transaction and records the dataset and the release.
    fn begin(
        conn: &'a mut Connection,
        m: &'a Manifest,
        manifest_hash: &str,
        index: &'a index::Unpacked,
        plan: &'a MergePlan,
    ) -> Result<Self, MergeError> {
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
        Ok(Self {
            tx,
            m,
            plan,
            index,
            ds,
            rel,
            first,
            new_items: 0,
            bulk: false,
        })
    }

    /// Classifies the release against the pool (see `classify`), checks the members
    /// the index lists against the shards, and decides whether this is a bulk merge.
    /// Returns the number of unchanged items.
    fn classify(&mut self, shards: &ShardStates) -> Result<u64, MergeError> {
        let (tx, m, plan, ds, first, index) =
            (&self.tx, self.m, self.plan, self.ds, self.first, self.index);
        let last_record: i64 =
            tx.query_row("SELECT coalesce(max(id), 0) FROM records", [], |r| r.get(0))?;
        let same = classify::classify(tx, ds, !first, last_record, index.path())?;
        files::check_members(tx, m, shards, index.path())?;

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
        self.new_items = new_items;
        self.bulk = bulk;
        Ok(same)
    }

    /// Takes out of the counts what is about to change or go (see `aggregates`).
    fn uncount(&self) -> Result<(aggregates::Tally, OldLinks, Vec<String>), MergeError> {
        let (tx, ds) = (&self.tx, self.ds);
        aggregates::prepare(tx)?;
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
        tally.contrib_ids_seen(tx, -1, |id, md5, tags| {
            old_links.insert(id, tags.to_vec());
            old_md5s.extend(md5.map(str::to_string));
        })?;

        Ok((tally, old_links, old_md5s))
    }

    /// Marks what this release removes: live items of the dataset it no longer lists.
    fn remove(&self) -> Result<usize, MergeError> {
        let (tx, rel) = (&self.tx, self.rel);
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

        Ok(removed)
    }

    /// Appends the new records, keeps the replaced versions, updates changed items in
    /// place, inserts the added ones and records each change as provenance.
    fn write_items(&self) -> Result<(), MergeError> {
        let (tx, ds, rel, first) = (&self.tx, self.ds, self.rel, self.first);
        // The release's new records, appended (their ids follow key order). A first
        // merge did not keep them and reads them from the index, in one pass over its
        // items: looking each up by key instead reads the whole row at every step of
        // the search once records outgrow a page's local payload (about 1 KB, as with
        // statistics and an embedding), each such read decoding another zstd frame.
        if first {
            tx.execute(
                "INSERT INTO records(id, record)
                 SELECT n.record_id, x.record FROM idx.items x CROSS JOIN incoming n ON n.key = x.key
                 WHERE n.record_id IS NOT NULL ORDER BY x.key",
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
        apply::update_items(tx, rel)?;
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

        Ok(())
    }

    /// Records where each member lies, for every item whose content or shard is new.
    fn write_members(&self) -> Result<(), MergeError> {
        let tx = &self.tx;
        // Members are keyed by shard, whose contents never change, so these are
        // appended shard by shard and nothing is deleted (a shard the pool knows
        // already, as when an item comes back to it, has them).
        tx.execute_batch(
            "INSERT OR IGNORE INTO members(shard, item, ext, offset, length, blake3)
                SELECT n.shard, n.item, m.ext, m.offset, m.length, m.blake3
                FROM incoming n CROSS JOIN idx.members m ON m.key = n.key WHERE n.fate != 'same'
                ORDER BY n.shard, n.item, m.ext;",
        )?;
        Ok(())
    }

    /// Records the release's shards: the selected ones are verified in the pool by now;
    /// the others are known, with their items, but not present.
    fn record_shards(&self) -> Result<(), MergeError> {
        let (tx, m, plan, ds, rel) = (&self.tx, self.m, self.plan, self.ds, self.rel);
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

        Ok(())
    }

    /// The number of items of each fate.
    fn fates(&self, removed: u64, same: u64) -> Result<Counts, MergeError> {
        let tx = &self.tx;
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
        counts.removed = removed;
        counts.same = same;
        Ok(counts)
    }

    /// Recomputes the duplicate groups this merge can change.
    fn resolve_duplicates(
        &self,
        mut old_md5s: Vec<String>,
    ) -> Result<duplicates::Resolved, MergeError> {
        let (tx, ds, bulk) = (&self.tx, self.ds, self.bulk);
        let phash_distance = self.plan.phash_distance;
        // Without perceptual hashes, only the md5 groups this merge touched can change.
        let has_phash: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM items WHERE dataset = ?1 AND phash IS NOT NULL)",
            [ds],
            |r| r.get(0),
        )?;
        // A bulk merge touches most groups anyway: one pass over all is cheaper.
        let resolved = if has_phash || bulk {
            duplicates::resolve(tx, ds, phash_distance, duplicates::Scope::All)?
        } else {
            // The groups the merge can change: those that visible items left (their old
            // md5s, read with the counts) and those that touched items joined.
            let mut md5s = std::mem::take(&mut old_md5s);
            let mut touched: Vec<i64> = Vec::new();
            let mut st = tx.prepare(
                "SELECT n.item, i.md5 FROM incoming n JOIN items i ON i.id = n.item
                 WHERE n.fate IN ('added', 'changed', 'restored')",
            )?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                touched.push(r.get(0)?);
                // Only text is an md5 (`duplicates` ignores any other value).
                if let Ok(md5) = r.get_ref(1)?.as_str() {
                    md5s.push(md5.to_string());
                }
            }
            md5s.sort_unstable();
            md5s.dedup();
            duplicates::resolve(
                tx,
                ds,
                phash_distance,
                duplicates::Scope::Md5s {
                    md5s: &md5s,
                    items: &touched,
                },
            )?
        };
        Ok(resolved)
    }

    /// Corrects the counts for duplicates: the new and changed items that were counted
    /// as they were linked but are hidden come out again, and other items whose
    /// visibility alone changed go out or in.
    fn recount(
        &self,
        tally: &mut aggregates::Tally,
        resolved: &duplicates::Resolved,
    ) -> Result<(), MergeError> {
        let tx = &self.tx;
        tx.execute(
            "INSERT INTO temp.contrib_ids(id)
             SELECT n.item FROM incoming n JOIN items i ON i.id = n.item
             WHERE n.fate IN ('added', 'changed', 'restored') AND i.duplicate_of IS NOT NULL",
            [],
        )?;
        tally.contrib_ids(tx, -1)?;
        for (ids, sign) in [(&resolved.newly_hidden, -1), (&resolved.newly_visible, 1)] {
            tx.execute(
                "INSERT INTO temp.contrib_ids(id) SELECT value FROM json_each(?1)
                 WHERE value NOT IN (SELECT item FROM incoming WHERE fate IN ('added', 'changed', 'restored'))",
                [serde_json::to_string(ids).expect("ids serialize")],
            )?;
            tally.contrib_ids(tx, sign)?;
        }
        Ok(())
    }

    /// Records the release's totals, makes it the dataset's head and commits.
    fn finish(self, mut counts: Counts) -> Result<Counts, MergeError> {
        let (tx, ds, rel) = (&self.tx, self.ds, self.rel);
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
        self.tx.commit()?;
        Ok(counts)
    }
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

#[cfg(test)]
mod tests {
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
