//! `seedpool sync`: download the files of a release that a pool lacks, verify them, move
//! them into the pool, then merge the release.
//!
//! Where bytes live while they travel, which is what makes sync resumable and safe:
//!
//! ```text
//! POOL/.seedpool-sync/<dataset>-<version>/   librqbit's output folder (the torrent's
//!     shards/<id>.tar, index/<v>.sqlite.zst   layout); partial files live only here
//!     .ancestors/<version>/shards/...         an ancestor's torrent, for shards the
//!                                             release inherited (its own folder)
//!     .webseed/shards/...                     what the web seeds fetch: checked pieces
//!                                             and holes, never a file librqbit writes
//! POOL/<dataset>/shards/<id>.tar              only complete files whose blake3 matched
//!                                             the manifest, renamed in after an fsync
//! ```
//!
//! A sync killed at any moment leaves partial files in the staging folder, which the
//! next run hands back to librqbit: it checks their pieces and fetches only what is
//! missing. Files already moved into the pool are not fetched again; they are re-hashed
//! once if the database does not know them yet. The database changes only in the merge
//! at the end (one transaction, see `pool::merge`). Selection by file relies on the
//! torrent's BEP 47 pad files: every file starts on a piece boundary, so fetching one
//! file never fetches a neighbour's bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use librqbit::{ManagedTorrent, Session, TorrentStatsState};
use serde::Serialize;

use super::fetch::{self, FetchError, Release};
use super::webseed::{FileJob, Outcome, SourceStat, WebSeedOptions, WebSeeds};
use super::{Event, Events, Phase, SwarmError, SwarmOptions, TICK};
use crate::files::{file_error, FileError};
use crate::index::{self, IndexError};
use crate::pool::merge::{self, MergeError, MergePlan, MergeReport};
use crate::pool::{Pool, PoolError};
use crate::progress::Silent;
use crate::shard::{self, ShardError, ShardId};
use crate::store::{self, Store, StoreError};

#[derive(Clone, Debug)]
pub struct SyncPlan {
    /// The manifest: a local path or an http(s) URL.
    pub manifest: String,
    pub pool: PathBuf,
    /// Peers to dial at once, on top of what trackers and the DHT find.
    pub peers: Vec<SocketAddr>,
    /// SQL condition on the release index's `items`: fetch only shards holding matches.
    pub selection: Option<String>,
    pub trust_key: bool,
    pub allow_older: bool,
    pub phash_distance: u32,
    pub swarm: SwarmOptions,
    /// Give up when no byte arrives for this long.
    pub stall_timeout: Duration,
    /// seedpool's ceiling on the unpacked index.
    pub index_limit: index::IndexLimit,
    /// The merge's clock and knobs.
    pub tuning: merge::Tuning,
    /// Stop, keeping what arrived, on SIGINT or SIGTERM (a process of its own does;
    /// a sync run inside a test must leave its runner's signals alone).
    pub signals: bool,
    /// HTTP web seeds (BEP 19).
    pub web_seeds: WebSeedPlan,
    /// The blake3 the manifest's bytes must have (a feed names it), checked before
    /// anything else is read.
    pub manifest_blake3: Option<String>,
    /// The key the manifest must be signed by (the feed's).
    pub manifest_key: Option<String>,
}

/// When and from where sync downloads over HTTP.
#[derive(Clone, Debug)]
pub struct WebSeedPlan {
    pub policy: WebSeedPolicy,
    /// Web seeds on top of the manifest's and the torrent's.
    pub extra: Vec<String>,
    /// Under `Fallback`, how long the swarm may deliver nothing before HTTP takes over.
    pub after: Duration,
    pub options: WebSeedOptions,
}

impl Default for WebSeedPlan {
    fn default() -> Self {
        Self {
            policy: WebSeedPolicy::Fallback,
            extra: Vec::new(),
            after: Duration::from_secs(10),
            options: WebSeedOptions::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebSeedPolicy {
    /// Never use HTTP.
    Off,
    /// HTTP takes over what is left when the swarm delivers nothing for a while, or at
    /// once when no peer can be found (no --peer, no DHT, no trackers).
    Fallback,
    /// HTTP fetches files from the end of the list while the swarm works from the front.
    Alongside,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SyncReport {
    pub dataset: String,
    pub version: String,
    /// Shards in the release.
    pub shards: u64,
    /// Shards the pool had before this sync (from earlier releases or an interrupted run).
    pub shards_in_pool: u64,
    /// Shards downloaded by this run.
    pub shards_downloaded: u64,
    /// Shards left out by `--where`.
    pub shards_not_selected: u64,
    /// Items matching `--where`, when given.
    pub selected_items: Option<u64>,
    /// Size of the files this run downloaded (shards and index).
    pub bytes_downloaded: u64,
    /// Payload bytes received from peers and web seeds (more than `bytes_downloaded`
    /// when pieces came twice or failed their check).
    pub bytes_received: u64,
    /// Of those, the bytes that came over HTTP.
    pub bytes_from_web_seeds: u64,
    /// Each web seed this run used, with the bytes it sent that passed their checks.
    pub web_seeds: Vec<SourceStat>,
    /// Files fetched again after failing their blake3 check.
    pub refetched: u64,
    pub seconds: f64,
    pub merge: MergeReport,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Merge(#[from] MergeError),
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("--where `{sql}` cannot run on the release index: {problem} (it is a condition on the index's `items` table: key, shard, volume, hash, record; see docs/guide.md)")]
    Selection { sql: String, problem: String },
    #[error("not enough space in `{path}`: the download needs {needed} bytes, {free} are free")]
    NoSpace {
        path: PathBuf,
        needed: u64,
        free: u64,
    },
    #[error("no data arrived for {seconds} s ({peers} peers connected, {seen} seen); {hint}. Files fetched so far are kept: run sync again to resume")]
    Stalled {
        seconds: u64,
        peers: u64,
        seen: u64,
        hint: String,
    },
    #[error("`{file}` failed its blake3 check twice after download ({problem}): the seeders' data does not match the signed manifest. Nothing was merged")]
    BadFile { file: String, problem: String },
    #[error("{0}; the file hashes as the signed manifest says, so the publisher made it so: nothing was merged")]
    Refused(ShardError),
    #[error("no peer can be found (no --peer, no DHT, no trackers) and the web seeds cannot serve `{file}`: {reason}. Files fetched so far are kept: run sync again to resume")]
    NoSource { file: String, reason: String },
    #[error("manifest `{manifest}` has blake3 `{found}`, but the feed names `{expected}`: it is not the release the publisher signed the feed for. Nothing was fetched")]
    ManifestHash {
        manifest: String,
        found: String,
        expected: String,
    },
    #[error("manifest `{manifest}` is signed by `{found}`, but the feed that names it by `{expected}`. Nothing was fetched")]
    ManifestKey {
        manifest: String,
        found: String,
        expected: String,
    },
    #[error("interrupted; the files fetched so far are kept: run the same sync again to resume")]
    Interrupted,
    #[error(transparent)]
    Bug(#[from] crate::Bug),
    #[error("the download task failed: {0}")]
    Task(String),
}

/// Runs a sync to the end (see the module doc).
pub fn run(plan: &SyncPlan, events: &dyn Events) -> Result<SyncReport, SyncError> {
    let rt = super::runtime(plan.swarm.threads)?;
    let result = rt.block_on(run_async(plan, events));
    rt.shutdown_timeout(Duration::from_millis(500));
    result
}

/// One file of the torrent that sync may fetch.
#[derive(Clone, Debug)]
struct Wanted {
    /// Index in the torrent's file list, pad entries included.
    index: usize,
    /// Path inside the torrent (and inside the pool's dataset folder).
    path: String,
    size: u64,
    blake3: String,
}

struct Ctx<'a> {
    plan: &'a SyncPlan,
    events: &'a dyn Events,
    release: Release,
    staging: PathBuf,
    /// The pool's dataset folder: `<dataset>/`, laid out like the torrent.
    target: PathBuf,
    session: Option<Arc<Session>>,
    received: u64,
    received_http: u64,
    refetched: u64,
    /// Web seeds: the manifest's, the torrent's and the plan's, each once.
    web_sources: Vec<String>,
    /// Per-source totals of the phases done.
    web_stats: Vec<SourceStat>,
    /// The torrents of the release's ancestors, whose swarms also serve the shards the
    /// release inherited from them.
    ancestors: Vec<Ancestor>,
    /// Shards of the release the pool had before this run (for the plan event).
    in_pool: u64,
    /// The release index, once it is in the pool and checked: shards are checked
    /// against it as they arrive.
    index: Option<index::IndexReader>,
    /// Whether this run downloaded the index.
    fetched_index: bool,
}

async fn run_async(plan: &SyncPlan, events: &dyn Events) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let release = fetch::release(&plan.manifest).await?;
    let m = &release.manifest.clone();
    let dataset = m.dataset_name();
    let version = m.version_name();
    let manifest_hash = blake3::hash(&release.manifest_bytes).to_hex().to_string();
    if let Some(key) = &plan.manifest_key {
        let found = m.public_key().unwrap_or_default();
        if found != key {
            return Err(SyncError::ManifestKey {
                manifest: plan.manifest.clone(),
                found: found.to_string(),
                expected: key.clone(),
            });
        }
    }
    if let Some(expected) = &plan.manifest_blake3 {
        if &manifest_hash != expected {
            return Err(SyncError::ManifestHash {
                manifest: plan.manifest.clone(),
                found: manifest_hash,
                expected: expected.clone(),
            });
        }
    }

    let (pool, lock) = Pool::open_or_create_locked(&plan.pool)?;
    let store = Store::open_or_create(&plan.pool, &dataset)?;
    let mut merge_plan = MergePlan {
        trust_key: plan.trust_key,
        allow_older: plan.allow_older,
        phash_distance: plan.phash_distance,
        tuning: plan.tuning.clone(),
        ..MergePlan::new(
            store.manifest_path(&version),
            plan.pool.clone(),
            plan.pool.clone(),
        )
    };
    // Refuse a changed key, a clashing or older release before fetching anything.
    merge::check_release(pool.connection(), m, &manifest_hash, &merge_plan)?;

    let mut report = SyncReport {
        dataset: m.dataset.to_string(),
        version: m.version.to_string(),
        shards: m.shards.len() as u64,
        ..SyncReport::default()
    };
    let staging = plan
        .pool
        .join(".seedpool-sync")
        .join(format!("{}-{}", m.dataset, m.version));
    let mut ctx = Ctx {
        plan,
        events,
        target: store.dataset_dir(),
        release,
        staging,
        session: None,
        received: 0,
        received_http: 0,
        refetched: 0,
        web_sources: Vec::new(),
        web_stats: Vec::new(),
        ancestors: Vec::new(),
        in_pool: 0,
        index: None,
        fetched_index: false,
    };
    ctx.web_sources = web_sources(&ctx.release, &plan.web_seeds);
    let files = wanted_files(&ctx.release)?;
    let present = merge::present_shards(pool.connection(), &m.dataset)?;
    drop(pool);
    let index = files
        .values()
        .find(|f| f.blake3 == ctx.release.manifest.index.blake3)
        .cloned()
        .ok_or_else(|| SyncError::Task("the torrent lacks the release index".into()))?;
    let shard_files: Vec<&Wanted> = files
        .values()
        .filter(|f| f.blake3 != index.blake3)
        .collect();

    // The index first: every shard is checked against it as it arrives, and a release
    // whose index is refused costs no shard downloads.
    let mut verified = BTreeSet::new();
    let index_path = ctx.target.join(&index.path);
    match store::mismatch(&index_path, index.size, &index.blake3) {
        Ok(None) => {
            verified.insert(index.blake3.clone());
        }
        _ => {
            if index_path.exists() {
                std::fs::remove_file(&index_path).map_err(file_error("remove", &index_path))?;
            }
            let got = ctx.download(Phase::Index, vec![index.clone()]).await?;
            verified.extend(got);
            ctx.fetched_index = true;
        }
    }
    let scratch = index_path.with_extension(format!("sync-{}.sqlite", std::process::id()));
    let opened = (|| -> Result<_, IndexError> {
        let limit =
            plan.index_limit
                .check(&index_path, m.index.uncompressed_size, m.counts.items)?;
        let unpacked = index::Unpacked::open(&index_path, &scratch, limit)?;
        let reader = unpacked.reader()?;
        reader.check_release(m)?;
        // One pass over the index's rows now costs less than downloading shards for a
        // release whose merge would refuse them.
        reader.check_contents(true)?;
        Ok((unpacked, reader))
    })();
    let (unpacked, reader) = match opened {
        Ok(pair) => pair,
        Err(e) => {
            // A refused index does not stay in the pool (where it could be seeded on).
            if ctx.fetched_index {
                let _ = std::fs::remove_file(&index_path);
            }
            return Err(e.into());
        }
    };
    ctx.index = Some(reader);

    // Files in the pool the database does not know yet: left by an interrupted sync
    // (moved in after their check) or by hand. Trust them only after a fresh check.
    for f in &shard_files {
        if present.contains(&f.blake3) {
            continue;
        }
        let path = ctx.target.join(&f.path);
        if path.is_file() {
            let expected = ctx.expected(f)?;
            match shard::check(&path, &expected.as_expected()) {
                Ok(()) => {
                    verified.insert(f.blake3.clone());
                }
                Err(_) => std::fs::remove_file(&path).map_err(file_error("remove", &path))?,
            }
        }
    }
    let have = |f: &Wanted, verified: &BTreeSet<String>| {
        present.contains(&f.blake3) || verified.contains(&f.blake3)
    };
    report.shards_in_pool = shard_files.iter().filter(|f| have(f, &verified)).count() as u64;
    ctx.in_pool = report.shards_in_pool;

    let mut selection = None;
    if let Some(sql) = &plan.selection {
        let reader = ctx
            .index
            .as_ref()
            .ok_or(crate::Bug("the release index is not open for --where"))?;
        let (shards, items) = select(reader, sql)?;
        report.selected_items = Some(items);
        report.shards_not_selected = (shard_files.len() - shards.len()) as u64;
        selection = Some(shards);
    }
    let selected = |f: &Wanted| selection.as_ref().is_none_or(|s| s.contains(&f.blake3));
    let to_fetch: Vec<Wanted> = shard_files
        .iter()
        .filter(|f| !have(f, &verified) && selected(f))
        .map(|f| (*f).clone())
        .collect();
    report.shards_downloaded = to_fetch.len() as u64;
    report.bytes_downloaded = to_fetch.iter().map(|f| f.size).sum::<u64>()
        + if verified.contains(&index.blake3) && ctx.fetched_index {
            index.size
        } else {
            0
        };
    if !to_fetch.is_empty() {
        let missing = to_fetch.iter().map(|f| f.path.clone()).collect();
        ctx.ancestors = ancestors(&ctx.release, &store, missing, ctx.events).await;
        let got = ctx.download(Phase::Shards, to_fetch).await?;
        verified.extend(got);
    }
    if let Some(session) = ctx.session.take() {
        session.cancellation_token().cancel();
    }

    // Everything is in the pool and checked: record the torrent and manifest, merge.
    let t = store.torrent_path(&version);
    crate::files::write_atomically(&t, &ctx.release.torrent_bytes)?;
    let mp = store.manifest_path(&version);
    crate::files::write_atomically(&mp, &ctx.release.manifest_bytes)?;
    merge_plan.selection = selection;
    merge_plan.verified = verified;
    merge_plan.index_limit = plan.index_limit;
    drop(ctx.index.take());
    drop(unpacked);
    ctx.events.emit(Event::Note {
        message: format!("merging {} {} into the pool", m.dataset, m.version),
    });
    report.merge = merge::run_holding(&lock, &merge_plan, &Silent)?;
    if ctx.staging.exists() {
        std::fs::remove_dir_all(&ctx.staging).map_err(file_error("remove", &ctx.staging))?;
    }
    if let Some(parent) = ctx.staging.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    report.bytes_received = ctx.received + ctx.received_http;
    report.bytes_from_web_seeds = ctx.received_http;
    report.web_seeds = ctx.web_stats.clone();
    report.refetched = ctx.refetched;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// An earlier release of the chain, as a second swarm for the shards it shares.
struct Ancestor {
    version: String,
    torrent: crate::torrent::Metainfo,
    torrent_bytes: Vec<u8>,
    /// Its data files by path, with their index in its torrent.
    files: BTreeMap<String, usize>,
}

/// How many releases back sync looks for swarms that hold inherited shards.
const MAX_ANCESTORS: usize = 8;

/// The torrents of the release's ancestors, parent first: from the pool when it has
/// them, else from beside the manifest. Each parent manifest must hash as its child
/// names it, so every one is as trusted as the signed release. Best effort: the chain
/// stops, with a note, where one cannot be had, and once no `missing` shard is left:
/// a release reuses only its parent's shards, so one the parent lacks is new in the
/// child and no older release has it either.
async fn ancestors(
    release: &Release,
    store: &Store,
    mut missing: BTreeSet<String>,
    events: &dyn Events,
) -> Vec<Ancestor> {
    let mut out = Vec::new();
    let mut child = release.manifest.clone();
    while let Some(parent) = child.parent.clone() {
        if out.len() >= MAX_ANCESTORS || missing.is_empty() {
            break;
        }
        let name = crate::manifest::Manifest::file_name(&child.dataset, &parent.version);
        let in_pool = store.manifest_path(&parent.version);
        let source = if in_pool.is_file() {
            in_pool.to_string_lossy().into_owned()
        } else if crate::http::is_url(&release.origin) {
            fetch::sibling_url(&release.origin, &name)
        } else {
            Path::new(&release.origin)
                .with_file_name(&name)
                .to_string_lossy()
                .into_owned()
        };
        let got = match fetch::release(&source).await {
            Ok(r)
                if blake3::hash(&r.manifest_bytes).to_hex().as_str() == parent.manifest_blake3 =>
            {
                r
            }
            Ok(_) => {
                events.emit(Event::Note {
                    message: format!(
                        "`{source}` does not hash as its child names it: its swarm is not used"
                    ),
                });
                break;
            }
            Err(_) => break,
        };
        let files = got
            .torrent
            .files
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.pad)
            .map(|(i, f)| (f.path.clone(), i))
            .collect::<BTreeMap<String, usize>>();
        missing.retain(|p| files.contains_key(p));
        if missing.is_empty() {
            break;
        }
        out.push(Ancestor {
            version: parent.version.to_string(),
            torrent: got.torrent,
            torrent_bytes: got.torrent_bytes,
            files,
        });
        child = got.manifest;
    }
    out
}

/// Every web seed of the release, each once, in the order: the plan's (given at sync
/// time, so probably the nearest), the manifest's, the torrent's.
fn web_sources(release: &Release, plan: &WebSeedPlan) -> Vec<String> {
    if plan.policy == WebSeedPolicy::Off {
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    for url in plan
        .extra
        .iter()
        .chain(&release.manifest.web_seeds)
        .chain(&release.torrent.web_seeds)
    {
        let trimmed = url.trim_end_matches('/');
        if crate::http::check_url(url, &["http", "https"]).is_ok()
            && !out.iter().any(|u| u.trim_end_matches('/') == trimmed)
        {
            out.push(url.clone());
        }
    }
    out
}

/// The torrent's data files, keyed by path, with the blake3 the manifest gives each.
fn wanted_files(release: &Release) -> Result<BTreeMap<String, Wanted>, SyncError> {
    let m = &release.manifest;
    let mut by_path: BTreeMap<String, (u64, String)> = m
        .shards
        .iter()
        .map(|s| (format!("shards/{}.tar", s.id), (s.size, s.id.to_hex())))
        .collect();
    by_path.insert(m.index.path.clone(), (m.index.size, m.index.blake3.clone()));
    let mut out = BTreeMap::new();
    for (i, f) in release.torrent.files.iter().enumerate() {
        if f.pad {
            continue;
        }
        let Some((size, blake3)) = by_path.remove(&f.path) else {
            return Err(SyncError::Task(format!(
                "the torrent holds `{}`, which the manifest does not list",
                f.path
            )));
        };
        if size != f.length {
            return Err(SyncError::Task(format!(
                "the torrent gives `{}` {} bytes, the manifest {size}",
                f.path, f.length
            )));
        }
        out.insert(
            f.path.clone(),
            Wanted {
                index: i,
                path: f.path.clone(),
                size,
                blake3,
            },
        );
    }
    if let Some(missing) = by_path.keys().next() {
        return Err(SyncError::Task(format!(
            "the manifest lists `{missing}`, which the torrent lacks"
        )));
    }
    Ok(out)
}

/// Runs `--where` on the release index; returns the shards holding matches and the
/// number of matching items.
fn select(reader: &index::IndexReader, sql: &str) -> Result<(BTreeSet<String>, u64), SyncError> {
    // A connection of its own: the guard stays on it, not on the reader whose shard
    // checks write a temporary table.
    let selecting = reader.reopen()?;
    let conn = selecting.connection();
    let denied = crate::usersql::read_only_guard(conn);
    let failed = |e: rusqlite::Error| SyncError::Selection {
        sql: sql.to_string(),
        problem: match denied.lock().ok().and_then(|mut d| d.take()) {
            Some(what) => format!("{what} is not allowed, only reads"),
            None => e.to_string(),
        },
    };
    if crate::usersql::statement_end(sql).is_some() {
        return Err(SyncError::Selection {
            sql: sql.to_string(),
            problem: "it holds `;`: give one condition, not statements".into(),
        });
    }
    // On lines of its own, so a trailing `--` comment cannot swallow the parenthesis.
    let mut st = conn
        .prepare(&format!(
            "SELECT shard, count(*) FROM items WHERE (\n{sql}\n) GROUP BY shard"
        ))
        .map_err(failed)?;
    if !st.readonly() {
        return Err(SyncError::Selection {
            sql: sql.to_string(),
            problem: "it writes".into(),
        });
    }
    let mut shards = BTreeSet::new();
    let mut items = 0u64;
    let mut rows = st.query([]).map_err(failed)?;
    while let Some(row) = rows.next().map_err(failed)? {
        shards.insert(row.get::<_, String>(0).map_err(failed)?);
        items += row.get::<_, i64>(1).map_err(failed)? as u64;
    }
    Ok((shards, items))
}

/// Free bytes for an unprivileged writer on the file system holding `path`.
fn free_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Result of checking one downloaded file.
enum Check {
    /// In the pool now.
    Moved,
    /// Not the signed bytes; removed from staging, to be fetched again.
    Bad(String),
    /// The signed bytes, but not a shard that matches its index: no peer can send a
    /// better one. Removed from staging.
    Refused(ShardError),
}

/// What a downloaded file must be.
enum FileCheck {
    /// Size and blake3 (the index).
    Hash { size: u64, blake3: String },
    /// Everything `shard::check` checks.
    Shard(OwnedExpected),
}

/// A `shard::Expected` that owns its members, to move into a checking task.
struct OwnedExpected {
    id: ShardId,
    size: u64,
    items: u64,
    members: Vec<shard::IndexedMember>,
}

impl OwnedExpected {
    fn as_expected(&self) -> shard::Expected<'_> {
        shard::Expected {
            id: self.id,
            size: self.size,
            items: self.items,
            members: &self.members,
        }
    }
}

/// Checks a complete file in staging and renames it into the pool.
fn check_and_move(from: &Path, to: &Path, check: &FileCheck) -> Result<Check, FileError> {
    let problem = match check {
        FileCheck::Hash { size, blake3 } => {
            store::mismatch(from, *size, blake3).map_err(file_error("read", from))?
        }
        FileCheck::Shard(expected) => match shard::check(from, &expected.as_expected()) {
            Ok(()) => None,
            Err(ShardError::Read { source, .. }) => return Err(file_error("read", from)(source)),
            Err(ShardError::Size {
                expected, found, ..
            }) => Some(format!("expected {expected} bytes, found {found}")),
            Err(ShardError::Hash { id, found, .. }) => {
                Some(format!("blake3 is `{found}`, the manifest says `{id}`"))
            }
            Err(other) => {
                std::fs::remove_file(from).map_err(file_error("remove", from))?;
                return Ok(Check::Refused(other.at(to)));
            }
        },
    };
    if let Some(problem) = problem {
        std::fs::remove_file(from).map_err(file_error("remove", from))?;
        return Ok(Check::Bad(problem));
    }
    std::fs::File::open(from)
        .and_then(|f| f.sync_all())
        .map_err(file_error("sync", from))?;
    let dir = to.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(file_error("create", dir))?;
    std::fs::rename(from, to).map_err(file_error("move into place", to))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(file_error("sync", dir))?;
    Ok(Check::Moved)
}

impl Ctx<'_> {
    /// What shard file `f` must be, from the manifest and the index.
    fn expected(&self, f: &Wanted) -> Result<OwnedExpected, SyncError> {
        let m = &self.release.manifest;
        let entry = m
            .shards
            .iter()
            .find(|s| s.id.to_hex() == f.blake3)
            .ok_or_else(|| {
                SyncError::Task(format!("`{}` is not a shard of the release", f.path))
            })?;
        let id = entry.id;
        let members = match &self.index {
            Some(reader) => reader.shard_members(&id.to_hex())?,
            None => return Err(SyncError::Task("shards are checked after the index".into())),
        };
        Ok(OwnedExpected {
            id,
            size: entry.size,
            items: entry.items,
            members,
        })
    }

    async fn session(&mut self) -> Result<Arc<Session>, SyncError> {
        if let Some(s) = &self.session {
            return Ok(Arc::clone(s));
        }
        let s = super::session(&self.plan.swarm, &self.staging, None).await?;
        if let Some(addr) = s.listen_addr() {
            self.events.emit(Event::Listening {
                addr: addr.to_string(),
            });
        }
        self.session = Some(Arc::clone(&s));
        Ok(s)
    }

    async fn add(&mut self, files: &[&Wanted]) -> Result<Arc<ManagedTorrent>, SyncError> {
        let session = self.session().await?;
        let only: Vec<usize> = files.iter().map(|f| f.index).collect();
        Ok(super::add(
            &session,
            &self.release.torrent.name,
            &self.release.torrent_bytes,
            &self.staging,
            Some(only),
            &self.plan.peers,
        )
        .await?)
    }

    async fn drop_torrent(&mut self, handle: &Arc<ManagedTorrent>) {
        if let Some(s) = &self.session {
            let _ = s.delete(handle.id().into(), false).await;
        }
    }

    /// Downloads `files` into staging, checks each as it completes and moves it into
    /// the pool. Returns the blake3 of every file moved.
    async fn download(
        &mut self,
        phase: Phase,
        files: Vec<Wanted>,
    ) -> Result<BTreeSet<String>, SyncError> {
        self.prepare(phase, &files)?;
        let mut d = Download::start(self, phase, files).await?;
        let ctrl_c = super::shutdown_signal(self.plan.signals);
        tokio::pin!(ctrl_c);
        let result = loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = &mut ctrl_c => break Err(SyncError::Interrupted),
            }
            match d.tick(self).await {
                Ok(Tick::Running) => {}
                Ok(Tick::Done) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        if let Some(handle) = d.handle.take() {
            self.drop_torrent(&handle).await;
        }
        if let Some(http) = d.http.take() {
            self.received_http += http.received();
            merge_stats(&mut self.web_stats, http.sources());
        }
        result.map(|()| d.done)
    }

    /// Where a torrent of the swarm writes: the release's in staging, an ancestor's in a
    /// folder of its own (two torrents never write one file).
    fn swarm_dir(&self, of: SwarmOf) -> PathBuf {
        match of {
            SwarmOf::Release => self.staging.clone(),
            SwarmOf::Ancestor(a) => self
                .staging
                .join(".ancestors")
                .join(&self.ancestors[a].version),
        }
    }

    /// Adds ancestor `a`'s torrent, selecting its files `only`.
    async fn add_ancestor(
        &mut self,
        a: usize,
        only: Vec<usize>,
    ) -> Result<Arc<ManagedTorrent>, SyncError> {
        let session = self.session().await?;
        let dir = self.swarm_dir(SwarmOf::Ancestor(a));
        std::fs::create_dir_all(&dir).map_err(file_error("create", &dir))?;
        let ancestor = &self.ancestors[a];
        Ok(super::add(
            &session,
            &ancestor.torrent.name,
            &ancestor.torrent_bytes,
            &dir,
            Some(only),
            &self.plan.peers,
        )
        .await?)
    }

    /// Whether the swarm can find anyone at all: a peer given, the DHT, or trackers.
    fn can_find_peers(&self) -> bool {
        let swarm = &self.plan.swarm;
        !self.plan.peers.is_empty()
            || swarm.dht
            || (swarm.trackers && !self.release.torrent.trackers.is_empty())
    }

    /// Where the web-seed download of a file writes: beside librqbit's files, never in
    /// them, so that the two engines never write one file.
    fn http_staging(&self, f: &Wanted) -> PathBuf {
        self.staging.join(".webseed").join(&f.path)
    }

    /// Refuses a download the disk cannot hold (partial files in staging count as
    /// used), then announces the phase.
    fn prepare(&self, phase: Phase, files: &[Wanted]) -> Result<(), SyncError> {
        let total: u64 = files.iter().map(|f| f.size).sum();
        std::fs::create_dir_all(&self.staging).map_err(file_error("create", &self.staging))?;
        let staged: u64 = files
            .iter()
            .filter_map(|f| std::fs::metadata(self.staging.join(&f.path)).ok())
            .map(|md| md.len())
            .sum();
        let needed = total.saturating_sub(staged);
        if let Some(free) = free_space(&self.staging) {
            if free < needed {
                return Err(SyncError::NoSpace {
                    path: self.plan.pool.clone(),
                    needed,
                    free,
                });
            }
        }
        let m = &self.release.manifest;
        self.events.emit(Event::Plan {
            dataset: m.dataset.to_string(),
            version: m.version.to_string(),
            phase,
            files: files.len() as u64,
            bytes: total,
            shards_in_pool: self.in_pool,
        });
        Ok(())
    }
}

/// Which torrent of the swarm side holds a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SwarmOf {
    Release,
    /// `Ctx::ancestors[i]`.
    Ancestor(usize),
}

/// Adds a phase's per-source totals to those of the phases before.
fn merge_stats(into: &mut Vec<SourceStat>, from: Vec<SourceStat>) {
    for s in from {
        match into.iter_mut().find(|t| t.url == s.url) {
            Some(t) => {
                t.bytes += s.bytes;
                t.dropped = t.dropped.take().or(s.dropped);
            }
            None => into.push(s),
        }
    }
}

/// A file's blake3 (or shard) check, running off the async threads.
type CheckTask = tokio::task::JoinHandle<Result<Check, FileError>>;

/// One download phase as a state machine. Each file goes from wanted to checking (its
/// bytes are all in staging) to done (checked and moved into the pool); a file that
/// fails its check goes back to wanted once. A wanted file is fetched by the swarm (one
/// torrent selecting the swarm's files) or by the web seeds, never by both: HTTP writes
/// its own staging file, and a file handed from one to the other moves its partial
/// file along (see `hand_over`). `tick` looks at both once and moves every file it can.
struct Download {
    phase: Phase,
    files: Vec<Wanted>,
    total: u64,
    /// Blake3 of the files done.
    done: BTreeSet<String>,
    /// Failed checks per file index.
    attempts: BTreeMap<usize, u32>,
    /// Files being checked, and whether the web seeds fetched them.
    checking: Vec<(Wanted, bool, CheckTask)>,
    /// The swarm's torrent, when the swarm has files to fetch.
    handle: Option<Arc<ManagedTorrent>>,
    /// The files the torrent selects.
    swarm_files: BTreeSet<usize>,
    /// Ancestors' torrents selecting the swarm files they hold: index in
    /// `Ctx::ancestors`, the torrent, and release file index to its file index.
    ancestor_torrents: Vec<(usize, Arc<ManagedTorrent>, BTreeMap<usize, usize>)>,
    http: Option<WebSeeds>,
    /// Files the web seeds fetch, and those they completed (to be checked).
    by_http: BTreeSet<usize>,
    http_complete: BTreeSet<usize>,
    /// Files the web seeds gave up: the swarm's for good, with the web seeds' reasons.
    given_back: BTreeSet<usize>,
    http_reasons: BTreeMap<usize, String>,
    /// Whether the web seeds take every file left (the swarm stalled or cannot find
    /// peers) rather than working alongside it.
    http_takes_all: bool,
    /// Bytes earlier torrents of this phase received (a refetch starts a new one).
    received_before: u64,
    /// When the swarm last delivered a byte.
    swarm_change: Instant,
    swarm_seen: u64,
    last_change: Instant,
    last_seen: (u64, u64),
    last_event: Instant,
    /// Bytes per second, smoothed, and when and at what total it was last taken.
    rate: f64,
    rate_at: (Instant, u64),
}

enum Tick {
    Running,
    Done,
}

impl Download {
    async fn start(ctx: &mut Ctx<'_>, phase: Phase, files: Vec<Wanted>) -> Result<Self, SyncError> {
        let now = Instant::now();
        let policy = ctx.plan.web_seeds.policy;
        let http = if policy != WebSeedPolicy::Off && !ctx.web_sources.is_empty() {
            let started = WebSeeds::start(
                ctx.web_sources.clone(),
                &ctx.release.torrent.name,
                ctx.release.torrent.piece_length,
                ctx.plan.web_seeds.options.clone(),
            )
            .map_err(|e| SyncError::Task(format!("cannot start the web-seed client: {e}")))?;
            Some(started)
        } else {
            None
        };
        // With nobody to find in the swarm, the web seeds take everything from the start.
        let http_takes_all = http.is_some() && !ctx.can_find_peers();
        let mut d = Self {
            phase,
            total: files.iter().map(|f| f.size).sum(),
            files,
            done: BTreeSet::new(),
            attempts: BTreeMap::new(),
            checking: Vec::new(),
            handle: None,
            swarm_files: BTreeSet::new(),
            ancestor_torrents: Vec::new(),
            http,
            by_http: BTreeSet::new(),
            http_complete: BTreeSet::new(),
            given_back: BTreeSet::new(),
            http_reasons: BTreeMap::new(),
            http_takes_all,
            received_before: 0,
            swarm_change: now,
            swarm_seen: 0,
            last_change: now,
            last_seen: (0, 0),
            last_event: now - Duration::from_secs(1),
            rate: 0.0,
            rate_at: (now, 0),
        };
        if http_takes_all {
            ctx.events.emit(Event::Note {
                message: format!(
                    "no peer can be found (no --peer, DHT or trackers): fetching from {} web seed(s)",
                    ctx.web_sources.len()
                ),
            });
            d.claim_for_http(ctx, usize::MAX);
        } else {
            let all: Vec<Wanted> = d.files.clone();
            d.restart_swarm(ctx, &all).await?;
        }
        Ok(d)
    }

    /// The files neither done nor being checked.
    fn pending(&self) -> Vec<Wanted> {
        self.files
            .iter()
            .filter(|f| {
                !self.done.contains(&f.blake3)
                    && !self.checking.iter().any(|(c, _, _)| c.index == f.index)
            })
            .cloned()
            .collect()
    }

    /// The pending files the swarm is to fetch.
    fn swarm_pending(&self) -> Vec<Wanted> {
        self.pending()
            .into_iter()
            .filter(|f| !self.by_http.contains(&f.index))
            .collect()
    }

    /// Replaces the swarm's torrent with one selecting `files` (none: no torrent).
    async fn restart_swarm(
        &mut self,
        ctx: &mut Ctx<'_>,
        files: &[Wanted],
    ) -> Result<(), SyncError> {
        let old: Vec<Arc<ManagedTorrent>> = self
            .handle
            .take()
            .into_iter()
            .chain(self.ancestor_torrents.drain(..).map(|(_, h, _)| h))
            .collect();
        for h in old {
            self.received_before += h
                .stats()
                .live
                .as_ref()
                .map_or(0, |l| l.snapshot.fetched_bytes);
            ctx.drop_torrent(&h).await;
        }
        self.swarm_files = files.iter().map(|f| f.index).collect();
        if !files.is_empty() {
            self.handle = Some(ctx.add(&files.iter().collect::<Vec<_>>()).await?);
        }
        // Shards the release inherited: asked in the swarms of the releases that
        // brought them too, each torrent writing a folder of its own.
        for a in 0..ctx.ancestors.len() {
            let map: BTreeMap<usize, usize> = files
                .iter()
                .filter_map(|f| Some((f.index, *ctx.ancestors[a].files.get(&f.path)?)))
                .collect();
            if map.is_empty() || self.phase != Phase::Shards {
                continue;
            }
            let handle = ctx.add_ancestor(a, map.values().copied().collect()).await?;
            self.ancestor_torrents.push((a, handle, map));
        }
        self.swarm_change = Instant::now();
        Ok(())
    }

    /// Hands up to `most` pending swarm files to the web seeds, those the swarm has
    /// the least of first. The caller takes them out of the torrent.
    fn claim_for_http(&mut self, ctx: &Ctx<'_>, most: usize) -> Vec<usize> {
        if self.http.is_none() {
            return Vec::new();
        }
        // One look at the torrent for all candidates: `stats` copies every file's progress.
        let progress = self
            .handle
            .as_ref()
            .map(|h| h.stats().file_progress)
            .unwrap_or_default();
        let mut candidates: Vec<Wanted> = self
            .swarm_pending()
            .into_iter()
            .filter(|f| !self.given_back.contains(&f.index))
            .collect();
        // Least progress first; among equals the end of the list, which the swarm reaches last.
        candidates.sort_by_key(|f| {
            let got = progress.get(f.index).copied().unwrap_or(0);
            (got, std::cmp::Reverse(f.index))
        });
        let mut claimed = Vec::new();
        for f in candidates {
            if claimed.len() == most {
                break;
            }
            if self.claim(ctx, &f) {
                claimed.push(f.index);
            }
        }
        claimed
    }

    /// Hands one file to the web seeds; false (and the file the swarm's for good) when
    /// it is not piece-aligned, so its pieces cannot be checked on their own.
    fn claim(&mut self, ctx: &Ctx<'_>, f: &Wanted) -> bool {
        let Some(http) = &self.http else {
            return false;
        };
        let aligned = ctx
            .release
            .torrent
            .files
            .get(f.index)
            .and_then(|parsed| ctx.release.torrent.aligned_pieces(parsed));
        let Some((pieces, tail_zeros)) = aligned else {
            self.given_back.insert(f.index);
            return false;
        };
        let staging = ctx.http_staging(f);
        if self.handle.is_none() {
            hand_over(&ctx.staging.join(&f.path), &staging);
        }
        http.add(FileJob {
            index: f.index,
            path: f.path.clone(),
            size: f.size,
            staging,
            pieces: pieces.to_vec(),
            tail_zeros,
        });
        self.by_http.insert(f.index);
        true
    }

    /// Lets the web seeds take every file the swarm has not delivered.
    async fn http_take_all(&mut self, ctx: &mut Ctx<'_>, why: &str) -> Result<(), SyncError> {
        self.http_takes_all = true;
        ctx.events.emit(Event::Note {
            message: format!(
                "{why}: fetching the rest from {} web seed(s)",
                ctx.web_sources.len()
            ),
        });
        // The torrent goes first, so librqbit no longer writes the files handed over.
        let keep: Vec<Wanted> = Vec::new();
        self.restart_swarm(ctx, &keep).await?;
        self.claim_for_http(ctx, usize::MAX);
        let back: Vec<Wanted> = self
            .swarm_pending()
            .into_iter()
            .filter(|f| self.given_back.contains(&f.index))
            .collect();
        if !back.is_empty() {
            self.restart_swarm(ctx, &back).await?;
        }
        Ok(())
    }

    async fn tick(&mut self, ctx: &mut Ctx<'_>) -> Result<Tick, SyncError> {
        let stats = self.handle.as_ref().map(|h| h.stats());
        let ancestor_stats: Vec<librqbit::TorrentStats> = self
            .ancestor_torrents
            .iter()
            .map(|(_, h, _)| h.stats())
            .collect();
        let fetched_now = stats
            .iter()
            .chain(&ancestor_stats)
            .filter_map(|s| s.live.as_ref())
            .map(|l| l.snapshot.fetched_bytes)
            .sum::<u64>();
        for st in stats.iter().chain(&ancestor_stats) {
            if let TorrentStatsState::Error = st.state {
                return Err(SwarmError::Torrent {
                    name: ctx.release.torrent.name.clone(),
                    problem: st.error.clone().unwrap_or_default(),
                }
                .into());
            }
        }
        let peers: u64 = stats.iter().chain(&ancestor_stats).map(super::peers).sum();
        let swarm_back = self.take_http_outcomes(ctx)?;
        self.start_checks(ctx, stats.as_ref(), &ancestor_stats)?;
        let refetch = self.collect_checks(ctx).await?;

        let got: BTreeMap<usize, u64> = self
            .files
            .iter()
            .map(|f| {
                let n = if self.by_http.contains(&f.index) {
                    self.http.as_ref().map_or(0, |h| h.progress(f.index))
                } else {
                    self.swarm_progress(f.index, stats.as_ref(), &ancestor_stats)
                        .0
                };
                (f.index, n)
            })
            .collect();
        let progress = |i: usize| got.get(&i).copied().unwrap_or(0);
        let have: u64 = self
            .files
            .iter()
            .map(|f| {
                if self.done.contains(&f.blake3) || self.http_complete.contains(&f.index) {
                    f.size
                } else {
                    progress(f.index)
                }
            })
            .sum();
        let http_received = self.http.as_ref().map_or(0, WebSeeds::received);
        let swarm_received = self.received_before + fetched_now;
        let received = swarm_received + http_received;
        let now = Instant::now();
        self.measure_rate(now, received);
        let initializing = stats
            .iter()
            .chain(&ancestor_stats)
            .any(|s| matches!(s.state, TorrentStatsState::Initializing { .. }));
        if (have, received) != self.last_seen || initializing || !self.checking.is_empty() {
            self.last_seen = (have, received);
            self.last_change = now;
        }
        if swarm_received != self.swarm_seen || initializing {
            self.swarm_seen = swarm_received;
            self.swarm_change = now;
        }
        if self.done.len() == self.files.len() {
            ctx.received += swarm_received;
            self.emit_progress(ctx, have, received, 0.0, peers, Vec::new());
            return Ok(Tick::Done);
        }
        if now.duration_since(self.last_event) >= Duration::from_millis(500) {
            self.last_event = now;
            let active: Vec<(String, u64, u64)> = self
                .files
                .iter()
                .filter(|f| !self.done.contains(&f.blake3))
                .map(|f| (f.path.clone(), progress(f.index), f.size))
                .filter(|(_, got, _)| *got > 0)
                .collect();
            self.emit_progress(ctx, have, received, self.rate, peers, active);
        }

        // The swarm delivered nothing for a while: the web seeds take over.
        let http_usable = self.http.as_ref().is_some_and(|h| !h.exhausted());
        if http_usable
            && !self.http_takes_all
            && now.duration_since(self.swarm_change) >= ctx.plan.web_seeds.after
            && self
                .swarm_pending()
                .iter()
                .any(|f| !self.given_back.contains(&f.index))
        {
            let why = format!(
                "the swarm sent nothing for {} s",
                ctx.plan.web_seeds.after.as_secs()
            );
            self.http_take_all(ctx, &why).await?;
            return Ok(Tick::Running);
        }
        // Alongside the swarm, the web seeds keep a few files of their own in flight.
        if http_usable
            && !self.http_takes_all
            && ctx.plan.web_seeds.policy == WebSeedPolicy::Alongside
        {
            let in_flight = self.by_http.len() - self.http_complete.len();
            let want = ctx.plan.web_seeds.options.connections * 2;
            let swarm_left = self.swarm_pending().len();
            let room = want
                .saturating_sub(in_flight)
                .min(swarm_left.saturating_sub(1));
            let live = stats
                .as_ref()
                .is_some_and(|s| matches!(s.state, TorrentStatsState::Live));
            if room > 0 && live {
                let claimed = self.claim_for_http(ctx, room);
                if !claimed.is_empty() {
                    self.select_swarm_files(ctx).await?;
                }
            }
        }

        if now.duration_since(self.last_change) >= ctx.plan.stall_timeout {
            return Err(self.stalled(ctx, stats.as_ref()));
        }
        if refetch || swarm_back {
            // Files the swarm must fetch (again): librqbit believes it has a removed
            // file's pieces, so a fresh torrent re-checks staging and fetches it.
            let again = self.swarm_pending();
            if !again.is_empty() && self.handle.is_none() && !ctx.can_find_peers() {
                let f = &again[0];
                return Err(SyncError::NoSource {
                    file: f.path.clone(),
                    reason: self.http_reason(f.index),
                });
            }
            for f in &again {
                hand_over(&ctx.http_staging(f), &ctx.staging.join(&f.path));
            }
            self.restart_swarm(ctx, &again).await?;
            self.last_change = Instant::now();
        }
        Ok(Tick::Running)
    }

    /// The most of file `i` any of the swarm's torrents has, and which torrent.
    fn swarm_progress(
        &self,
        i: usize,
        stats: Option<&librqbit::TorrentStats>,
        ancestor_stats: &[librqbit::TorrentStats],
    ) -> (u64, SwarmOf) {
        let main = stats
            .and_then(|s| s.file_progress.get(i).copied())
            .unwrap_or(0);
        let mut best = (main, SwarmOf::Release);
        for ((a, _, map), st) in self.ancestor_torrents.iter().zip(ancestor_stats) {
            let got = map
                .get(&i)
                .and_then(|j| st.file_progress.get(*j).copied())
                .unwrap_or(0);
            if got > best.0 {
                best = (got, SwarmOf::Ancestor(*a));
            }
        }
        best
    }

    /// Narrows the live torrent to the files still the swarm's.
    async fn select_swarm_files(&mut self, ctx: &mut Ctx<'_>) -> Result<(), SyncError> {
        let (Some(handle), Some(session)) = (&self.handle, &ctx.session) else {
            return Ok(());
        };
        let keep: std::collections::HashSet<usize> =
            self.swarm_pending().iter().map(|f| f.index).collect();
        if keep.is_empty() {
            return Ok(());
        }
        if let Err(e) = session.update_only_files(handle, &keep).await {
            // The swarm keeps fetching them too; only bytes are wasted.
            ctx.events.emit(Event::Note {
                message: format!("cannot narrow the torrent's files: {e:#}"),
            });
        }
        self.swarm_files = keep.into_iter().collect();
        Ok(())
    }

    /// Reasons the web seeds gave for a file, kept when they gave it up.
    fn http_reason(&self, index: usize) -> String {
        self.http_reasons
            .get(&index)
            .cloned()
            .unwrap_or_else(|| "there is no web seed".into())
    }
}

impl Download {
    /// Takes in what the web seeds finished or gave up; returns whether files went back
    /// to the swarm.
    fn take_http_outcomes(&mut self, ctx: &Ctx<'_>) -> Result<bool, SyncError> {
        let Some(http) = &self.http else {
            return Ok(false);
        };
        let mut back = false;
        for outcome in http.outcomes() {
            match outcome {
                Outcome::Complete(i) => {
                    self.http_complete.insert(i);
                }
                Outcome::GivenUp { index, reason } => {
                    let path = self
                        .files
                        .iter()
                        .find(|f| f.index == index)
                        .map_or_else(String::new, |f| f.path.clone());
                    ctx.events.emit(Event::Note {
                        message: format!("the web seeds cannot serve `{path}`: {reason}"),
                    });
                    self.by_http.remove(&index);
                    self.given_back.insert(index);
                    self.http_reasons.insert(index, reason);
                    back = true;
                }
            }
        }
        Ok(back)
    }

    /// Starts checking every file whose bytes have all arrived, from either engine.
    fn start_checks(
        &mut self,
        ctx: &Ctx<'_>,
        stats: Option<&librqbit::TorrentStats>,
        ancestor_stats: &[librqbit::TorrentStats],
    ) -> Result<(), SyncError> {
        for f in self.pending() {
            let via_http = self.by_http.contains(&f.index);
            let from = if via_http {
                if !self.http_complete.remove(&f.index) {
                    continue;
                }
                ctx.http_staging(&f)
            } else if self.swarm_files.contains(&f.index) {
                match self.swarm_progress(f.index, stats, ancestor_stats) {
                    (got, from) if got == f.size => ctx.swarm_dir(from).join(&f.path),
                    _ => continue,
                }
            } else {
                continue;
            };
            let to = ctx.target.join(&f.path);
            let check = match self.phase {
                Phase::Index => FileCheck::Hash {
                    size: f.size,
                    blake3: f.blake3.clone(),
                },
                Phase::Shards => FileCheck::Shard(ctx.expected(&f)?),
            };
            let task = tokio::task::spawn_blocking(move || check_and_move(&from, &to, &check));
            self.checking.push((f, via_http, task));
        }
        Ok(())
    }

    /// Takes in the checks that finished; returns whether the swarm must fetch a file
    /// again (one the web seeds fetched goes back to them).
    async fn collect_checks(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, SyncError> {
        let mut restart = false;
        let mut i = 0;
        while i < self.checking.len() {
            if !self.checking[i].2.is_finished() {
                i += 1;
                continue;
            }
            let (f, via_http, task) = self.checking.swap_remove(i);
            let result = task.await.map_err(|e| SyncError::Task(e.to_string()))?;
            match result? {
                Check::Moved => {
                    ctx.events.emit(Event::Verified {
                        file: f.path.clone(),
                        bytes: f.size,
                    });
                    self.by_http.remove(&f.index);
                    self.done.insert(f.blake3.clone());
                }
                Check::Refused(e) => return Err(SyncError::Refused(e)),
                Check::Bad(problem) => {
                    let n = self.attempts.entry(f.index).or_default();
                    *n += 1;
                    if *n >= 2 {
                        return Err(SyncError::BadFile {
                            file: f.path.clone(),
                            problem,
                        });
                    }
                    ctx.refetched += 1;
                    ctx.events.emit(Event::Refetch {
                        file: f.path.clone(),
                        problem,
                    });
                    if via_http {
                        // Every piece passed its SHA-1, so the whole file failing its
                        // blake3 means a SHA-1 collision or a broken disk: once more.
                        self.by_http.remove(&f.index);
                        self.claim(ctx, &f);
                    } else {
                        restart = true;
                    }
                }
            }
        }
        Ok(restart)
    }

    fn measure_rate(&mut self, now: Instant, received: u64) {
        let dt = now.duration_since(self.rate_at.0).as_secs_f64();
        if dt >= 0.5 {
            let instant = received.saturating_sub(self.rate_at.1) as f64 / dt;
            self.rate = if self.rate == 0.0 {
                instant
            } else {
                0.6 * self.rate + 0.4 * instant
            };
            self.rate_at = (now, received);
        }
    }

    fn emit_progress(
        &self,
        ctx: &Ctx<'_>,
        have: u64,
        received: u64,
        rate: f64,
        peers: u64,
        active: Vec<(String, u64, u64)>,
    ) {
        let eta_seconds = (rate > 0.0).then(|| self.total.saturating_sub(have) as f64 / rate);
        let web_seeds = self
            .http
            .as_ref()
            .map(WebSeeds::sources)
            .unwrap_or_default();
        ctx.events.emit(Event::Progress {
            phase: self.phase,
            have,
            total: self.total,
            fetched: received,
            rate,
            peers,
            eta_seconds,
            active,
            web_seeds,
        });
    }

    /// Why nothing arrived for the stall timeout, as precisely as the stats allow.
    fn stalled(&self, ctx: &Ctx<'_>, stats: Option<&librqbit::TorrentStats>) -> SyncError {
        let live = stats.and_then(|s| s.live.as_ref());
        let (peers, seen) = live.map_or((0, 0), |l| {
            (
                u64::from(l.snapshot.peer_stats.live),
                u64::from(l.snapshot.peer_stats.seen),
            )
        });
        let missing: Vec<String> = self
            .files
            .iter()
            .filter(|f| !self.done.contains(&f.blake3))
            .take(3)
            .map(|f| format!("`{}`", f.path))
            .collect();
        // Bytes that arrived but never passed a piece check: librqbit drops a
        // peer that sends such pieces, so this says more than the peer count.
        let failed = live.map_or(0, |l| {
            l.snapshot
                .fetched_bytes
                .saturating_sub(l.snapshot.downloaded_and_checked_bytes)
        });
        let mut hint = if failed >= ctx.release.torrent.piece_length {
            format!(
                "peers sent {failed} bytes that failed the torrent's piece hashes and were dropped: their copies of {} are damaged, so another seeder is needed",
                missing.join(", ")
            )
        } else if peers == 0 {
            "check the --peer addresses, or that trackers or the DHT can reach a seeder of this release".to_string()
        } else {
            format!(
                "the connected peers do not send the missing pieces of {}: they lack them (a seeder whose copy is damaged cannot serve the pieces that fail its own check), so another seeder is needed",
                missing.join(", ")
            )
        };
        if let Some(http) = &self.http {
            let dropped: Vec<String> = http
                .sources()
                .into_iter()
                .filter_map(|s| {
                    s.dropped
                        .map(|why| format!("`{}` was dropped: {why}", s.url))
                })
                .collect();
            if !dropped.is_empty() {
                hint.push_str("; web seeds: ");
                hint.push_str(&dropped.join("; "));
            }
        } else if ctx.web_sources.is_empty() && ctx.plan.web_seeds.policy != WebSeedPolicy::Off {
            hint.push_str("; the release names no web seed (add one with --web-seed URL)");
        }
        SyncError::Stalled {
            seconds: ctx.plan.stall_timeout.as_secs(),
            peers,
            seen,
            hint,
        }
    }
}

/// Moves a partial file from one engine's staging path to the other's, so the bytes
/// already checked are not fetched again; nothing to do when the target exists.
fn hand_over(from: &Path, to: &Path) {
    if from.is_file() && !to.exists() {
        if let Some(dir) = to.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::rename(from, to);
    }
}
