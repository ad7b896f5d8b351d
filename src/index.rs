//! The release index: a SQLite file listing every live item of a release, where each of
//! its members lies (shard, offset, length, blake3), its JSON record and its tags, plus
//! the release's shards and its tombstones. Shipped zstd-compressed as
//! `index/<version>.sqlite.zst`; the schema is docs/format.md's "Index".
//!
//! An index is built once, in one transaction, in key order, with fixed pragmas, so the
//! same release gives the same bytes. An index from elsewhere is opened read-only with
//! `trusted_schema=OFF` and SQLite's defensive mode, after its blake3 was checked.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags};

use crate::zseek;

mod runs;

/// Index format version, stored as SQLite's `user_version`.
pub const FORMAT_VERSION: u64 = 1;
/// "SPIX", stored as SQLite's `application_id` so `file(1)`-style tools can tell.
pub const APPLICATION_ID: i32 = 0x5350_4958;
/// zstd level: a good ratio at a speed that keeps up with millions of items.
const ZSTD_LEVEL: i32 = 9;

/// Most bytes of one item's JSON record. `publish` refuses larger records, so every
/// honest release merges; a pool refuses them from an index whoever signed it.
pub const MAX_RECORD_BYTES: u64 = 1 << 20;
/// Most tags one item may have, and the longest tag or category.
pub const MAX_TAGS_PER_ITEM: u64 = 10_000;
pub const MAX_TAG_BYTES: usize = 1024;
/// Most member files of one item.
pub const MAX_MEMBERS_PER_ITEM: u64 = 1024;

/// seedpool's own ceiling on the unpacked size of a release index, whatever its
/// manifest declares: `base` plus `per_item` for each item the manifest counts (whose
/// count must itself be backed by shards, see `Manifest::check`). A release of a
/// million items measured 1.9 KB an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexLimit {
    pub base: u64,
    pub per_item: u64,
    /// A ceiling the user set instead (`--index-limit`).
    pub fixed: Option<u64>,
}

impl Default for IndexLimit {
    fn default() -> Self {
        Self {
            base: 64 << 20,
            per_item: 64 << 10,
            fixed: None,
        }
    }
}

impl IndexLimit {
    /// The ceiling for a release of `items` items.
    pub fn bytes(&self, items: u64) -> u64 {
        self.fixed.unwrap_or_else(|| {
            self.base
                .saturating_add(self.per_item.saturating_mul(items))
        })
    }

    /// The bytes an index may unpack to: what its manifest declares, refused when that
    /// is over the ceiling (a bomb's declaration, or a release too large for the
    /// defaults).
    pub fn check(&self, path: &Path, declared: u64, items: u64) -> Result<u64, IndexError> {
        let ceiling = self.bytes(items);
        if declared > ceiling {
            return Err(IndexError::OverCeiling {
                path: path.to_path_buf(),
                declared,
                items,
                ceiling,
            });
        }
        Ok(declared)
    }
}

const TABLES: &str = "
CREATE TABLE meta(name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE shards(
    id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    items INTEGER NOT NULL,
    live_items INTEGER NOT NULL,
    volume TEXT NOT NULL,
    first_release TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE items(
    key TEXT PRIMARY KEY,
    shard TEXT NOT NULL REFERENCES shards(id),
    volume TEXT NOT NULL,
    hash TEXT NOT NULL,
    record TEXT
) WITHOUT ROWID;
CREATE TABLE members(
    key TEXT NOT NULL REFERENCES items(key),
    ext TEXT NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    blake3 TEXT NOT NULL,
    PRIMARY KEY(key, ext)
) WITHOUT ROWID;
CREATE TABLE tags(
    key TEXT NOT NULL REFERENCES items(key),
    category TEXT NOT NULL,
    tag TEXT NOT NULL,
    PRIMARY KEY(key, category, tag)
) WITHOUT ROWID;
CREATE TABLE tombstones(
    key TEXT PRIMARY KEY,
    shard TEXT NOT NULL,
    reason TEXT NOT NULL CHECK(reason IN ('removed', 'changed'))
) WITHOUT ROWID;
";
/// Built by `IndexWriter::finish` over the filled tables: kept up row by row, the tag
/// index took a random page for each of a release's tags, and its spills through the
/// page cache were most of a publish. `VACUUM INTO` writes tables then indexes, each in
/// the order of the schema, so the file is the same bytes either way.
const INDEXES: &str = "
CREATE INDEX items_by_shard ON items(shard, key);
CREATE INDEX tags_by_tag ON tags(tag, category);
";

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index `{path}`: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("failed to read or write index `{path}`")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("index `{path}` decompresses to more than the {limit} bytes its manifest declares")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("index `{path}` is not a seedpool index of format {FORMAT_VERSION}: {problem}")]
    Format { path: PathBuf, problem: String },
    #[error("index `{path}` declares {declared} unpacked bytes, more than seedpool's ceiling of {ceiling} for a release of {items} items; pass --index-limit to accept it")]
    OverCeiling {
        path: PathBuf,
        declared: u64,
        items: u64,
        ceiling: u64,
    },
    #[error("index `{path}` is invalid: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("index of release `{version}` is inconsistent: {problem}")]
    Inconsistent { version: String, problem: String },
    #[error("index `{path}`: item `{}` {problem}", crate::name::shown(.key))]
    BadItem {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

/// For `map_err`: a SQLite error on the index at `path`.
fn sql_error(path: &Path) -> impl Fn(rusqlite::Error) -> IndexError + Copy + '_ {
    move |source| IndexError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// One member row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRow {
    pub ext: String,
    pub offset: u64,
    pub length: u64,
    pub blake3: String,
}

/// One item with everything the index says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemRow {
    pub key: String,
    pub shard: String,
    pub volume: String,
    pub hash: String,
    pub record: Option<String>,
    pub members: Vec<MemberRow>,
    pub tags: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardRow {
    pub id: String,
    pub size: u64,
    pub items: u64,
    pub live_items: u64,
    pub volume: String,
    pub first_release: String,
}

/// The content hash of an item: blake3 over its members' extensions and hashes, so two
/// items are equal exactly when every member is.
pub fn item_hash<'a>(members: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut h = blake3::Hasher::new();
    for (ext, hash) in members {
        h.update(ext.as_bytes());
        h.update(b"\0");
        h.update(hash.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

/// Where item rows land as they come, in the order shards are written (by volume, then
/// key), until `IndexWriter::finish` merges them into the index's key-ordered tables.
/// An item's row notes the rowids of its first member and tag rows (see `runs`).
/// Inserted straight into those, a million items across a hundred volumes landed in
/// the middle of large B-trees, each insert on another page, and took most of a publish.
const ARRIVED: &str = "
CREATE TABLE arrived.items(key, shard, volume, hash, record, members_at, tags_at);
CREATE TABLE arrived.members(key, ext, offset, length, blake3);
CREATE TABLE arrived.tags(key, category, tag);
";

/// Moves the arrived rows into the index, each table in its key order so SQLite appends:
/// for more sorted runs than `runs::MAX_RUNS`, which the merge of runs does not take.
const SORT_ARRIVED: &str = "
INSERT INTO main.items SELECT key, shard, volume, hash, record FROM arrived.items ORDER BY key;
INSERT INTO main.members SELECT key, ext, offset, length, blake3 FROM arrived.members ORDER BY key, ext;
INSERT INTO main.tags SELECT key, category, tag FROM arrived.tags ORDER BY key, category, tag;
";

pub struct IndexWriter {
    conn: Connection,
    path: PathBuf,
    /// The `arrived` database, removed when the writer goes.
    arrived: crate::files::TempFile,
    runs: std::cell::RefCell<runs::Runs>,
}

impl IndexWriter {
    pub fn create(path: &Path) -> Result<Self, IndexError> {
        let sql = sql_error(path);
        let arrived = crate::files::TempFile(path.with_extension("arrived"));
        let _ = std::fs::remove_file(&arrived.0);
        let conn = Connection::open(path).map_err(sql)?;
        conn.execute("ATTACH ?1 AS arrived", [arrived.0.to_string_lossy()])
            .map_err(sql)?;
        // The sorts at the end take this much memory per run before they spill to
        // temporary files, and sort on two threads. 16 MiB, not more: runs that fit the
        // processor's caches sort faster than large ones merge, and each of the three
        // sorter lists may grow to it (a million items' rows sorted in, indexes built
        // and packed in 16.8 s and 0.5 GB with 128 MiB, 14.9 s and 70 MB with 16 MiB).
        // Foreign keys (on by default in the SQLite seedpool links) looked up the item of
        // every member and tag row as it was sorted in: rows written here reference
        // items of the same shard by construction, and readers check them anyway.
        conn.execute_batch(&format!(
            "PRAGMA foreign_keys = OFF;
             PRAGMA page_size = 4096; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
             PRAGMA arrived.journal_mode = OFF; PRAGMA arrived.synchronous = OFF;
             PRAGMA cache_size = -16384; PRAGMA threads = 2;
             PRAGMA user_version = {FORMAT_VERSION}; PRAGMA application_id = {APPLICATION_ID};
             BEGIN; {TABLES} {ARRIVED}"
        ))
        .map_err(sql)?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            arrived,
            runs: Default::default(),
        })
    }

    fn sql(&self, source: rusqlite::Error) -> IndexError {
        sql_error(&self.path)(source)
    }

    pub fn meta(&self, name: &str, value: &str) -> Result<(), IndexError> {
        self.conn
            .execute("INSERT INTO meta VALUES (?1, ?2)", params![name, value])
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    pub fn shard(&self, s: &ShardRow) -> Result<(), IndexError> {
        self.conn
            .prepare_cached("INSERT INTO shards VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .and_then(|mut st| {
                st.execute(params![
                    s.id,
                    s.size as i64,
                    s.items as i64,
                    s.live_items as i64,
                    s.volume,
                    s.first_release
                ])
            })
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Adds an item's rows. Items come in runs of ascending keys (a release's shards
    /// are written volume by volume, each in key order), which `finish` merges.
    pub fn item(&self, item: &ItemRow) -> Result<(), IndexError> {
        // A run's rows must be in their table's order: an item's members by extension,
        // its tags by category and name, as publish gives them; others are sorted here.
        let mut members = std::borrow::Cow::Borrowed(&item.members[..]);
        if !members.windows(2).all(|w| w[0].ext < w[1].ext) {
            members.to_mut().sort_by(|a, b| a.ext.cmp(&b.ext));
        }
        let mut tags = std::borrow::Cow::Borrowed(&item.tags[..]);
        if !tags.windows(2).all(|w| w[0] < w[1]) {
            tags.to_mut().sort();
        }
        let at = self
            .runs
            .borrow_mut()
            .item(&item.key, members.len(), tags.len());
        let run = || -> rusqlite::Result<()> {
            self.conn
                .prepare_cached(
                    "INSERT INTO arrived.items(rowid, key, shard, volume, hash, record,
                     members_at, tags_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    at[0],
                    item.key,
                    item.shard,
                    item.volume,
                    item.hash,
                    item.record,
                    at[1],
                    at[2]
                ])?;
            let mut member = self
                .conn
                .prepare_cached("INSERT INTO arrived.members(rowid, key, ext, offset, length, blake3) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
            for (m, rowid) in members.iter().zip(at[1]..) {
                member.execute(params![
                    rowid,
                    item.key,
                    m.ext,
                    m.offset as i64,
                    m.length as i64,
                    m.blake3
                ])?;
            }
            let mut tag = self.conn.prepare_cached(
                "INSERT INTO arrived.tags(rowid, key, category, tag) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for ((category, name), rowid) in tags.iter().zip(at[2]..) {
                tag.execute(params![rowid, item.key, category, name])?;
            }
            Ok(())
        };
        run().map_err(|e| self.sql(e))
    }

    pub fn tombstone(&self, key: &str, shard: &str, reason: &str) -> Result<(), IndexError> {
        self.conn
            .prepare_cached("INSERT INTO tombstones VALUES (?1, ?2, ?3)")
            .and_then(|mut st| st.execute(params![key, shard, reason]))
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Sorts the arrived rows in, builds the indexes, commits, then rewrites the file
    /// table by table (`VACUUM INTO`), so that a reader of one table unpacks only its
    /// frames, and the bytes depend on the rows alone, not on the order they came in.
    pub fn finish(self, timings: &Timings) -> Result<(), IndexError> {
        let packed = self.path.with_extension("packed");
        let _ = std::fs::remove_file(&packed);
        let scratch = crate::files::TempFile(packed.clone());
        let runs = self.runs.borrow();
        if runs.len() <= runs::MAX_RUNS {
            runs.merge(&self.conn)
        } else {
            self.conn.execute_batch(SORT_ARRIVED)
        }
        .map_err(|e| self.sql(e))?;
        drop(runs);
        self.conn
            .execute_batch("COMMIT; DETACH arrived")
            .map_err(|e| self.sql(e))?;
        // Gone before the indexes are built and the packed copy is written: the arrived
        // rows are as large as the tables (1.3 GB at a million items).
        drop(self.arrived);
        timings.step("index rows sorted into their tables");
        self.conn
            .execute_batch(&format!("BEGIN; {INDEXES} COMMIT;"))
            .map_err(sql_error(&self.path))?;
        timings.step("index's indexes built");
        self.conn
            .execute("VACUUM INTO ?1", [packed.to_string_lossy()])
            .map_err(sql_error(&self.path))?;
        let path = self.path.clone();
        self.conn.close().map_err(|(_, e)| IndexError::Sqlite {
            path: path.clone(),
            source: e,
        })?;
        std::fs::rename(&scratch.0, &path).map_err(|source| IndexError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(())
    }
}

/// Step timings of long work over a release index (merge, verify), printed on stderr
/// when `on` (the CLI sets it from `SEEDPOOL_TIMINGS`; docs/performance.md uses them).
pub struct Timings {
    start: std::time::Instant,
    prefix: String,
    on: bool,
}

impl Timings {
    pub fn new(prefix: impl Into<String>, on: bool) -> Self {
        Self {
            start: std::time::Instant::now(),
            prefix: prefix.into(),
            on,
        }
    }

    /// Prints how long after the start `what` ended, and the process's peak memory so
    /// far (where the system tells it), so a profile shows which step grew it.
    pub fn step(&self, what: &str) {
        if self.on {
            let peak = peak_rss_mib().map_or(String::new(), |m| format!(", peak {m} MiB"));
            eprintln!(
                "{}{:>8.3}s {what} ({} index frames decoded{peak})",
                self.prefix,
                self.start.elapsed().as_secs_f64(),
                crate::zseek::DECODED.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    }
}

/// The process's peak resident memory in MiB, from Linux's `/proc/self/status`.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// What compressing an index produced.
pub struct Compressed {
    pub size: u64,
    pub uncompressed_size: u64,
    pub blake3: blake3::Hash,
    pub pieces: crate::torrent::pieces::FilePieces,
}

/// A writer that hashes what passes through it, for hashing while compressing.
struct HashingWriter<W> {
    inner: W,
    blake3: blake3::Hasher,
    pieces: crate::torrent::pieces::PieceHasher,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.blake3.update(&buf[..n]);
        self.pieces.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses `sqlite` into `out` as seekable zstd (see `zseek`), hashing the compressed
/// bytes on the way.
pub fn compress(sqlite: &Path, out: &Path, piece_length: u64) -> Result<Compressed, IndexError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IndexError::Io { path, source }
    };
    let input = std::fs::File::open(sqlite).map_err(io_err(sqlite))?;
    let file = std::fs::File::create(out).map_err(io_err(out))?;
    let mut writer = HashingWriter {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        blake3: blake3::Hasher::new(),
        pieces: crate::torrent::pieces::PieceHasher::new(piece_length),
        written: 0,
    };
    let uncompressed_size =
        zseek::compress(&mut std::io::BufReader::new(input), &mut writer, ZSTD_LEVEL)
            .map_err(io_err(out))?;
    writer.flush().map_err(io_err(out))?;
    let HashingWriter {
        inner,
        blake3,
        pieces,
        written,
    } = writer;
    inner
        .into_inner()
        .map_err(|e| IndexError::Io {
            path: out.to_path_buf(),
            source: e.into_error(),
        })?
        .sync_all()
        .map_err(io_err(out))?;
    Ok(Compressed {
        size: written,
        uncompressed_size,
        blake3: blake3.finalize(),
        pieces: pieces.finish(),
    })
}

/// Decompresses an index into `out`, refusing more than `limit` bytes of output.
pub fn decompress(compressed: &Path, out: &Path, limit: u64) -> Result<(), IndexError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IndexError::Io { path, source }
    };
    let input = std::fs::File::open(compressed).map_err(io_err(compressed))?;
    let mut decoder = zstd::stream::Decoder::new(input).map_err(io_err(compressed))?;
    // Frames that ask for a window above 128 MiB are refused instead of allocated.
    decoder.window_log_max(27).map_err(io_err(compressed))?;
    // Large writes: the default 8 KiB copy made a quarter of a million system calls
    // for a million-item index.
    let mut output = std::io::BufWriter::with_capacity(
        4 << 20,
        std::fs::File::create(out).map_err(io_err(out))?,
    );
    let copied = std::io::copy(&mut decoder.by_ref().take(limit + 1), &mut output)
        .map_err(io_err(compressed))?;
    output.flush().map_err(io_err(out))?;
    if copied > limit {
        return Err(IndexError::TooLarge {
            path: compressed.to_path_buf(),
            limit,
        });
    }
    Ok(())
}

/// The SQLite URI that opens an unpacked index file read-only, as never changing.
fn read_only_uri(path: &Path) -> String {
    format!("{}?mode=ro&immutable=1", zseek::vfs::file_uri(path))
}

/// A compressed release index made readable by SQLite: read in place, frame by frame,
/// when it is seekable zstd (every index since seedpool wrote them so), else
/// decompressed to a scratch file that goes when this is dropped (older indexes).
pub struct Unpacked {
    uri: String,
    compressed: PathBuf,
    _scratch: Option<crate::files::TempFile>,
}

impl Unpacked {
    /// Makes `compressed` readable, refusing more than `limit` unpacked bytes; `scratch`
    /// is where an index without a seek table is decompressed.
    pub fn open(compressed: &Path, scratch: &Path, limit: u64) -> Result<Self, IndexError> {
        let io_err = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::InvalidData => IndexError::Format {
                path: compressed.to_path_buf(),
                problem: source.to_string(),
            },
            _ => IndexError::Io {
                path: compressed.to_path_buf(),
                source,
            },
        };
        // Reading the seek table here reports a bad one (or one over the limit) as such,
        // rather than as SQLite failing to open the file.
        if zseek::Reader::open(compressed, limit)
            .map_err(io_err)?
            .is_some()
        {
            let uri = zseek::vfs::uri(compressed, limit).map_err(sql_error(compressed))?;
            return Ok(Self {
                uri,
                compressed: compressed.to_path_buf(),
                _scratch: None,
            });
        }
        let scratch_file = crate::files::TempFile(scratch.to_path_buf());
        decompress(compressed, scratch, limit)?;
        Ok(Self {
            uri: read_only_uri(scratch),
            compressed: compressed.to_path_buf(),
            _scratch: Some(scratch_file),
        })
    }

    /// The compressed index file.
    pub fn path(&self) -> &Path {
        &self.compressed
    }

    /// An SQLite URI that opens (or attaches) the index read-only.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn reader(&self) -> Result<IndexReader, IndexError> {
        IndexReader::open_uri(&self.uri, &self.compressed)
    }
}

/// The schema objects of an index as seedpool writes it: (type, name, table, sql).
type SchemaRows = Vec<(String, String, String, Option<String>)>;

fn schema_rows(conn: &Connection) -> rusqlite::Result<SchemaRows> {
    let mut st = conn.prepare(
        "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name, tbl_name, sql",
    )?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    rows.collect()
}

/// The index schema must be exactly the one `IndexWriter` creates: the same tables,
/// columns, indexes and SQL text, nothing more. So no generated or hidden columns, no
/// virtual tables, views or triggers, no collations but the default, and no statistics
/// that steer query plans can come in with a release.
fn check_schema(conn: &Connection) -> Result<(), String> {
    static EXPECTED: std::sync::OnceLock<SchemaRows> = std::sync::OnceLock::new();
    let expected = EXPECTED.get_or_init(|| {
        let c = Connection::open_in_memory().expect("an in-memory database opens");
        c.execute_batch(TABLES)
            .and_then(|()| c.execute_batch(INDEXES))
            .expect("the index schema is valid");
        schema_rows(&c).expect("the schema can be listed")
    });
    let found = schema_rows(conn).map_err(|e| e.to_string())?;
    if let Some(extra) = found.iter().find(|f| !expected.contains(f)) {
        let sql: String = extra
            .3
            .as_deref()
            .unwrap_or("no SQL")
            .chars()
            .take(200)
            .collect();
        return Err(format!(
            "its schema has {} `{}` ({}), which seedpool indexes do not have",
            extra.0,
            crate::name::shown(&extra.1),
            crate::name::shown(&sql)
        ));
    }
    if let Some(missing) = expected.iter().find(|e| !found.contains(e)) {
        return Err(format!("its schema lacks {} `{}`", missing.0, missing.1));
    }
    Ok(())
}

/// A read-only view of an index from elsewhere.
pub struct IndexReader {
    conn: Connection,
    path: PathBuf,
    /// What opened it, for a second connection to the same index.
    uri: String,
}

impl IndexReader {
    /// Opens an unpacked index file.
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        Self::open_uri(&read_only_uri(path), path)
    }

    /// Opens the index at SQLite URI `uri`; errors name `path`.
    pub fn open_uri(uri: &str, path: &Path) -> Result<Self, IndexError> {
        let sql = sql_error(path);
        let conn = Connection::open_with_flags(
            uri,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(sql)?;
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
            .map_err(sql)?;
        // cell_size_check: a B-tree page of a hostile file is checked before use, not
        // only when SQLite happens to notice. The file is opened read-only; `query_only`
        // is not set, since `shards_members` writes a temporary table of its own.
        // A 64 MiB page cache (taken as used): shard checks read the members of one shard
        // after another, and a shard's members lie a volume's stride apart over the key
        // range it covers; with shards taken in key order (`shards_in_key_order`) the
        // pages of that range stay cached instead of being unpacked again per shard.
        conn.execute_batch(
            "PRAGMA trusted_schema = OFF; PRAGMA cell_size_check = ON;
             PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY;",
        )
        .map_err(sql)?;
        let format = |problem: String| IndexError::Format {
            path: path.to_path_buf(),
            problem,
        };
        let (version, app): (i64, i64) = conn
            .query_row("SELECT user_version, application_id FROM pragma_user_version, pragma_application_id", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(|e| format(e.to_string()))?;
        if app != i64::from(APPLICATION_ID) {
            return Err(format(format!("application id is {app:#x}")));
        }
        if version != FORMAT_VERSION as i64 {
            return Err(format(format!("format version is {version}")));
        }
        check_schema(&conn).map_err(format)?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            uri: uri.to_string(),
        })
    }

    fn sql(&self, source: rusqlite::Error) -> IndexError {
        sql_error(&self.path)(source)
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn shards(&self) -> Result<Vec<ShardRow>, IndexError> {
        let run = || -> rusqlite::Result<Vec<ShardRow>> {
            let mut st = self.conn.prepare(
                "SELECT id, size, items, live_items, volume, first_release FROM shards ORDER BY id",
            )?;
            let count = |r: &rusqlite::Row<'_>, i: usize| -> rusqlite::Result<u64> {
                let v: i64 = r.get(i)?;
                u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, v))
            };
            let rows = st.query_map([], |r| {
                Ok(ShardRow {
                    id: r.get(0)?,
                    size: count(r, 1)?,
                    items: count(r, 2)?,
                    live_items: count(r, 3)?,
                    volume: r.get(4)?,
                    first_release: r.get(5)?,
                })
            })?;
            rows.collect()
        };
        run().map_err(|e| self.sql(e))
    }

    /// The index must describe the release `m` names: its dataset and version, shards
    /// that the manifest lists with the same size, item count and volume, items only in
    /// those shards, and the manifest's item count.
    pub fn check_release(&self, m: &crate::manifest::Manifest) -> Result<(), IndexError> {
        let conn = &self.conn;
        let inconsistent = |problem: String| IndexError::Inconsistent {
            version: m.version.to_string(),
            problem,
        };
        let meta = |name: &str| -> Option<String> {
            conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .ok()
        };
        if meta("dataset").as_deref() != Some(m.dataset.as_str())
            || meta("version").as_deref() != Some(m.version.as_str())
        {
            return Err(inconsistent(
                "its dataset or version is not the manifest's".into(),
            ));
        }
        let listed: std::collections::BTreeMap<String, &crate::manifest::ShardEntry> =
            m.shards.iter().map(|s| (s.id.to_hex(), s)).collect();
        let rows = self.shards().map_err(|e| match e {
            IndexError::Sqlite { source, .. } => {
                inconsistent(format!("its shards table cannot be read: {source}"))
            }
            other => other,
        })?;
        for row in &rows {
            let Some(entry) = listed.get(row.id.as_str()) else {
                return Err(inconsistent(format!(
                    "shard `{}` is not in the manifest",
                    crate::name::shown(&row.id)
                )));
            };
            if (row.size, row.items, row.volume.as_str())
                != (entry.size, entry.items, entry.volume.as_str())
            {
                return Err(inconsistent(format!(
                    "shard `{}` has {} bytes, {} items and volume `{}`; the manifest says {}, {} and `{}`",
                    row.id,
                    row.size,
                    row.items,
                    crate::name::shown(&row.volume),
                    entry.size,
                    entry.items,
                    entry.volume
                )));
            }
        }
        let orphan: Option<(String, String)> = conn
            .query_row(
                "SELECT key, CAST(shard AS TEXT) FROM items WHERE shard NOT IN (SELECT id FROM shards) LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok();
        // The shards table is a subset of the manifest's, so this finds every stray item.
        if let Some((key, shard)) = orphan {
            return Err(inconsistent(format!(
                "item `{}` references shard `{}`, which the manifest does not list",
                crate::name::shown(&key),
                crate::name::shown(&shard)
            )));
        }
        let items: i64 = conn
            .query_row("SELECT count(*) FROM items", [], |r| r.get(0))
            .map_err(|e| self.sql(e))?;
        if items as u64 != m.counts.items {
            return Err(inconsistent(format!(
                "{items} items, the manifest says {}",
                m.counts.items
            )));
        }
        Ok(())
    }

    /// A second connection to the same index, for work on another thread.
    pub fn reopen(&self) -> Result<IndexReader, IndexError> {
        Self::open_uri(&self.uri, &self.path)
    }

    /// Checks every row an item is made of (see `check_item_row`, `check_tag_text`,
    /// `check_member_row`) and the bounds on tags and members per item, one pass over
    /// each table, the tables side by side on connections of their own: what `verify`
    /// and `sync` run before trusting an index, so a release that passes merges (a
    /// merge makes the same checks as it reads). `members` leaves out the members'
    /// table for a caller that reads it through `shard_members`, which checks each row.
    pub fn check_contents(&self, members: bool) -> Result<(), IndexError> {
        // A connection is not shared between threads: each pass gets its own.
        let (tags, rest) = (self.reopen()?, members.then(|| self.reopen()).transpose()?);
        std::thread::scope(|scope| {
            let tags = scope.spawn(move || tags.check_tags());
            let members = scope.spawn(move || rest.map_or(Ok(()), |r| r.check_members()));
            let items = self.check_items();
            let joined = |h: std::thread::ScopedJoinHandle<'_, Result<(), IndexError>>| {
                h.join().unwrap_or_else(|_| {
                    Err(IndexError::Invalid {
                        path: self.path.clone(),
                        problem: "a check of the index failed (Bug: a panic)".into(),
                    })
                })
            };
            items.and(joined(tags)).and(joined(members))
        })
    }

    fn bad_item(&self) -> impl Fn(RowProblem) -> IndexError + '_ {
        |(key, problem)| IndexError::BadItem {
            path: self.path.clone(),
            key,
            problem,
        }
    }

    fn check_items(&self) -> Result<(), IndexError> {
        let (bad, sql) = (self.bad_item(), sql_error(&self.path));
        let mut st = self
            .conn
            .prepare(
                "SELECT key, shard, hash, volume, record, record IS NULL OR json_valid(record)
                 FROM items ORDER BY key",
            )
            .map_err(sql)?;
        let mut rows = st.query([]).map_err(sql)?;
        let mut previous = Vec::new();
        while let Some(r) = rows.next().map_err(sql)? {
            check_item_row(r, &mut previous).map_err(&bad)?;
            if !r.get::<_, bool>(5).map_err(sql)? {
                let key = String::from_utf8_lossy(&previous).into_owned();
                return Err(bad((key, "has a record that is not JSON".into())));
            }
        }
        Ok(())
    }

    fn check_tags(&self) -> Result<(), IndexError> {
        self.per_item(
            "SELECT key, category, tag FROM tags ORDER BY key",
            MAX_TAGS_PER_ITEM,
            "tags",
            &|r| {
                let key = || r.get_ref(0).map(value_text).unwrap_or_default();
                for (i, what) in [(1, "category"), (2, "tag")] {
                    let v = r.get_ref(i).map_err(|e| (key(), e.to_string()))?;
                    check_tag_text(v, what).map_err(|p| (key(), p))?;
                }
                Ok(())
            },
        )
    }

    fn check_members(&self) -> Result<(), IndexError> {
        self.per_item(
            "SELECT key, ext, offset, length, blake3 FROM members ORDER BY key, ext",
            MAX_MEMBERS_PER_ITEM,
            "members",
            &|r| check_member_row(r, None),
        )
    }

    /// Runs `check` on each row of `sql` (key first, in key order), counting the rows
    /// of each key against `max`.
    fn per_item(
        &self,
        sql: &str,
        max: u64,
        what: &str,
        check: RowCheck<'_>,
    ) -> Result<(), IndexError> {
        let (bad, sql_err) = (self.bad_item(), sql_error(&self.path));
        let mut st = self.conn.prepare(sql).map_err(sql_err)?;
        let mut rows = st.query([]).map_err(sql_err)?;
        let (mut last, mut count) = (Vec::new(), 0u64);
        while let Some(r) = rows.next().map_err(sql_err)? {
            let key = r.get_ref(0).map_err(sql_err)?;
            let key_bytes = match key {
                rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => t,
                _ => &[][..],
            };
            if key_bytes != last.as_slice() {
                last.clear();
                last.extend_from_slice(key_bytes);
                count = 0;
            }
            count += 1;
            if count > max {
                return Err(bad((
                    value_text(key),
                    format!("has more than {max} {what}"),
                )));
            }
            check(r).map_err(&bad)?;
        }
        Ok(())
    }

    /// Sorts `shards` (whose IDs `id` gives) by the first key each holds (shards
    /// without items first): the order in which checking them reads the index's
    /// members sequentially, since shards of different volumes interleave in key order.
    pub fn sort_in_key_order<T>(
        &self,
        shards: &mut [T],
        id: impl Fn(&T) -> crate::shard::ShardId,
    ) -> Result<(), IndexError> {
        // One seek in `items_by_shard` a shard: a scan of the whole index would decode
        // every frame of it for a merge that brings a few shards.
        let mut st = self
            .conn
            .prepare_cached("SELECT min(key) FROM items WHERE shard = ?1")
            .map_err(|e| self.sql(e))?;
        let mut first = std::collections::HashMap::with_capacity(shards.len());
        for shard in shards.iter() {
            let key = st
                .query_row([id(shard)], |r| {
                    Ok(match r.get_ref(0)? {
                        rusqlite::types::ValueRef::Text(t) => t.to_vec(),
                        _ => Vec::new(),
                    })
                })
                .map_err(|e| self.sql(e))?;
            first.insert(id(shard), key);
        }
        shards.sort_by(|a, b| (&first[&id(a)], id(a)).cmp(&(&first[&id(b)], id(b))));
        Ok(())
    }

    /// The members of the release's items in shard `shard`, in (key, ext) order, as a
    /// shard check wants them; values of the wrong type or sign are refused here.
    pub fn shard_members(
        &self,
        shard: &str,
    ) -> Result<Vec<crate::shard::IndexedMember>, IndexError> {
        Ok(self.shards_members(&[shard])?.pop().unwrap_or_default())
    }

    /// `shard_members` for several shards at once, in the order given. The items of a
    /// shard made by a later release are scattered over the key space, so looking up
    /// each shard's members in turn would sweep the members table once a shard (and
    /// unpack its frames each time); here the keys of all the shards are looked up in
    /// one key-ordered sweep.
    pub fn shards_members(
        &self,
        shards: &[&str],
    ) -> Result<Vec<Vec<crate::shard::IndexedMember>>, IndexError> {
        // The batch's keys go into a temporary table (this connection's own), whose
        // key order then drives the lookups of members.
        let sql = |e| self.sql(e);
        self.conn
            .execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS batch(key TEXT PRIMARY KEY, n INTEGER NOT NULL)
                   WITHOUT ROWID;
                 DELETE FROM temp.batch;",
            )
            .map_err(sql)?;
        {
            let mut add = self
                .conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO temp.batch SELECT key, ?2 FROM items WHERE shard = ?1",
                )
                .map_err(sql)?;
            for (n, shard) in shards.iter().enumerate() {
                add.execute(rusqlite::params![shard, n as i64])
                    .map_err(sql)?;
            }
        }
        let mut out = vec![Vec::new(); shards.len()];
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT m.key, m.ext, m.offset, m.length, m.blake3, b.n
                 FROM temp.batch b JOIN members m ON m.key = b.key ORDER BY b.key, m.ext",
            )
            .map_err(sql)?;
        let mut rows = st.query([]).map_err(sql)?;
        while let Some(r) = rows.next().map_err(sql)? {
            let n: i64 = r.get(5).map_err(sql)?;
            out[n as usize].push(self.member_row(r)?);
        }
        Ok(out)
    }

    /// One row of `members` (key, ext, offset, length, blake3), checked.
    fn member_row(&self, r: &rusqlite::Row<'_>) -> Result<crate::shard::IndexedMember, IndexError> {
        let invalid = |problem: String| IndexError::Invalid {
            path: self.path.clone(),
            problem,
        };
        check_member_row(r, None).map_err(self.bad_item())?;
        let text = |i: usize, what: &str| -> Result<String, IndexError> {
            match r.get_ref(i).map_err(|e| self.sql(e))? {
                rusqlite::types::ValueRef::Text(t) => std::str::from_utf8(t)
                    .map(str::to_string)
                    .map_err(|_| invalid(format!("a member's {what} is not UTF-8"))),
                other => Err(invalid(format!(
                    "a member's {what} is {}, not text",
                    other.data_type()
                ))),
            }
        };
        let key = text(0, "key")?;
        let ext = text(1, "extension")?;
        let name = || crate::name::shown(&format!("{key}.{ext}")).into_owned();
        let number = |i: usize, what: &str| -> Result<u64, IndexError> {
            match r.get_ref(i).map_err(|e| self.sql(e))? {
                rusqlite::types::ValueRef::Integer(n) if n >= 0 => Ok(n as u64),
                other => Err(invalid(format!(
                    "member `{}` has {what} `{}`",
                    name(),
                    value_text(other)
                ))),
            }
        };
        let offset = number(2, "offset")?;
        let length = number(3, "length")?;
        let blake3 = text(4, "blake3")?;
        Ok(crate::shard::IndexedMember {
            key,
            ext,
            offset,
            length,
            blake3,
        })
    }

    /// Every item's key, shard, hash and members' (extension, length), in key order: a
    /// merge join of `items` and `members` without records or tags, for comparing a
    /// release with its parent. Keys out of order are an error (a caller walks its own
    /// sorted list beside them).
    pub fn for_each_item_shape<E: From<IndexError>>(
        &self,
        mut visit: impl FnMut(&str, &str, &str, &[(String, u64)]) -> Result<(), E>,
    ) -> Result<(), E> {
        let sql = |e| self.sql(e);
        let mut items = self
            .conn
            .prepare("SELECT key, shard, hash FROM items ORDER BY key")
            .map_err(sql)?;
        let mut members = self
            .conn
            .prepare("SELECT key, ext, length FROM members ORDER BY key, ext")
            .map_err(sql)?;
        let mut item_rows = items.query([]).map_err(sql)?;
        let mut member_rows = members.query([]).map_err(sql)?;
        let mut next_member = member_rows.next().map_err(sql)?;
        let (mut key, mut shard, mut hash) = (String::new(), String::new(), String::new());
        let mut shape: Vec<(String, u64)> = Vec::new();
        while let Some(r) = item_rows.next().map_err(sql)? {
            let text = |i: usize, into: &mut String| -> Result<(), IndexError> {
                into.clear();
                into.push_str(r.get_ref(i).and_then(|v| Ok(v.as_str()?)).map_err(sql)?);
                Ok(())
            };
            let previous = std::mem::take(&mut key);
            text(0, &mut key)?;
            if !previous.is_empty() && key.as_str() <= previous.as_str() {
                return Err(IndexError::Format {
                    path: self.path.clone(),
                    problem: format!("item `{key}` comes after `{previous}`: keys out of order"),
                }
                .into());
            }
            text(1, &mut shard)?;
            text(2, &mut hash)?;
            shape.clear();
            while let Some(m) = next_member {
                if m.get_ref(0).and_then(|v| Ok(v.as_str()?)).map_err(sql)? != key {
                    break;
                }
                shape.push((
                    m.get(1).map_err(sql)?,
                    m.get::<_, i64>(2).map_err(sql)? as u64,
                ));
                next_member = member_rows.next().map_err(sql)?;
            }
            visit(&key, &shard, &hash, &shape)?;
        }
        Ok(())
    }

    /// Every item in key order, with its members and tags, visited one at a time.
    pub fn for_each_item(
        &self,
        mut visit: impl FnMut(ItemRow) -> Result<(), IndexError>,
    ) -> Result<(), IndexError> {
        let sql = |e| self.sql(e);
        let mut items = self
            .conn
            .prepare("SELECT key, shard, volume, hash, record FROM items ORDER BY key")
            .map_err(sql)?;
        let mut members = self
            .conn
            .prepare("SELECT key, ext, offset, length, blake3 FROM members ORDER BY key, ext")
            .map_err(sql)?;
        let mut tags = self
            .conn
            .prepare("SELECT key, category, tag FROM tags ORDER BY key, category, tag")
            .map_err(sql)?;
        let mut item_rows = items.query([]).map_err(sql)?;
        let mut member_rows = members.query([]).map_err(sql)?;
        let mut tag_rows = tags.query([]).map_err(sql)?;
        let mut next_member = member_rows.next().map_err(sql)?;
        let mut next_tag = tag_rows.next().map_err(sql)?;
        // A merge join of three key-ordered streams: memory stays flat in the item count.
        while let Some(r) = item_rows.next().map_err(sql)? {
            let mut item = ItemRow {
                key: r.get(0).map_err(sql)?,
                shard: r.get(1).map_err(sql)?,
                volume: r.get(2).map_err(sql)?,
                hash: r.get(3).map_err(sql)?,
                record: r.get(4).map_err(sql)?,
                members: Vec::new(),
                tags: Vec::new(),
            };
            while let Some(m) = next_member {
                let key: String = m.get(0).map_err(sql)?;
                if key != item.key {
                    break;
                }
                item.members.push(MemberRow {
                    ext: m.get(1).map_err(sql)?,
                    offset: m.get::<_, i64>(2).map_err(sql)? as u64,
                    length: m.get::<_, i64>(3).map_err(sql)? as u64,
                    blake3: m.get(4).map_err(sql)?,
                });
                next_member = member_rows.next().map_err(sql)?;
            }
            while let Some(t) = next_tag {
                let key: String = t.get(0).map_err(sql)?;
                if key != item.key {
                    break;
                }
                item.tags
                    .push((t.get(1).map_err(sql)?, t.get(2).map_err(sql)?));
                next_tag = tag_rows.next().map_err(sql)?;
            }
            visit(item)?;
        }
        Ok(())
    }
}

/// A problem found in one row of an index: (the item's key, what is wrong).
pub type RowProblem = (String, String);

/// Checks one row of a table of an index.
type RowCheck<'a> = &'a dyn Fn(&rusqlite::Row<'_>) -> Result<(), RowProblem>;

/// Whether a value is 64 lowercase hex digits (a blake3).
fn is_blake3_hex(v: rusqlite::types::ValueRef<'_>) -> bool {
    matches!(v, rusqlite::types::ValueRef::Text(t)
        if t.len() == 64 && t.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Checks one row of `items` (key, shard, hash, volume, record) from an index made
/// elsewhere, where SQLite stores any type in any column. Keys must be item keys (they
/// become file names) and strictly increasing (a damaged B-tree could return them out
/// of order, and a merge's walk relies on the order); shard and hash must be blake3
/// hex, the volume a label, the record text of bounded size. `previous` holds the key
/// of the row before. A problem comes back as (key, what is wrong).
pub fn check_item_row(row: &rusqlite::Row<'_>, previous: &mut Vec<u8>) -> Result<(), RowProblem> {
    use rusqlite::types::ValueRef;
    let get = |i| row.get_ref(i).map_err(|e| (String::new(), e.to_string()));
    let key_value = get(0)?;
    let key = match key_value {
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        other => value_text(other),
    };
    let bad = |problem: String| (key.clone(), problem);
    let ValueRef::Text(key_bytes) = key_value else {
        return Err(bad(format!("has a key of type {}", key_value.data_type())));
    };
    let key_text =
        std::str::from_utf8(key_bytes).map_err(|_| bad("has a key that is not UTF-8".into()))?;
    crate::name::ItemKey::parse(key_text).map_err(|e| bad(format!("is refused: {e}")))?;
    if !previous.is_empty() && previous.as_slice() >= key_bytes {
        return Err(bad(format!(
            "comes after `{}`: the index's items are not in key order (a damaged file)",
            crate::name::shown(&String::from_utf8_lossy(previous))
        )));
    }
    previous.clear();
    previous.extend_from_slice(key_bytes);
    for (i, what) in [(1, "shard"), (2, "hash")] {
        let v = get(i)?;
        if !is_blake3_hex(v) {
            return Err(bad(format!(
                "has {what} `{}`, not 64 lowercase hex digits",
                value_text(v)
            )));
        }
    }
    match get(3)? {
        ValueRef::Text(t) => {
            let volume =
                std::str::from_utf8(t).map_err(|_| bad("has a volume that is not UTF-8".into()))?;
            crate::name::Volume::parse(volume).map_err(|e| bad(format!("is refused: {e}")))?;
        }
        other => return Err(bad(format!("has volume `{}`, not text", value_text(other)))),
    }
    match get(4)? {
        ValueRef::Null => {}
        ValueRef::Text(t) if t.len() as u64 <= MAX_RECORD_BYTES => {
            std::str::from_utf8(t).map_err(|_| bad("has a record that is not UTF-8".into()))?;
        }
        ValueRef::Text(t) => {
            return Err(bad(format!(
                "has a record of {} bytes, more than the {MAX_RECORD_BYTES} a record may have",
                t.len()
            )))
        }
        other => {
            return Err(bad(format!(
                "has a record of type {}, not text",
                other.data_type()
            )))
        }
    }
    Ok(())
}

/// Checks a tag row's category or name: text, not empty, bounded, no control characters.
pub fn check_tag_text<'a>(v: rusqlite::types::ValueRef<'a>, what: &str) -> Result<&'a str, String> {
    let rusqlite::types::ValueRef::Text(t) = v else {
        return Err(format!("has a {what} of type {}", v.data_type()));
    };
    let text = std::str::from_utf8(t).map_err(|_| format!("has a {what} that is not UTF-8"))?;
    if text.is_empty() || text.len() > MAX_TAG_BYTES || text.chars().any(char::is_control) {
        return Err(format!(
            "has {what} `{}`: empty, longer than {MAX_TAG_BYTES} bytes or with control characters",
            crate::name::shown(&text.chars().take(80).collect::<String>())
        ));
    }
    Ok(text)
}

/// Checks a member row (key, ext, offset, length, blake3) on its own: a name that
/// splits into the key and an extension, non-negative integer offset and length, a
/// blake3. Where the member lies is for the shard check (or, for a shard not present,
/// `within`: the data must lie inside a shard of that size, on a block boundary).
pub fn check_member_row(row: &rusqlite::Row<'_>, within: Option<u64>) -> Result<(), RowProblem> {
    use rusqlite::types::ValueRef;
    let get = |i| row.get_ref(i).map_err(|e| (String::new(), e.to_string()));
    let key = match get(0)? {
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        other => value_text(other),
    };
    let bad = |problem: String| (key.clone(), problem);
    let ext = match get(1)? {
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        other => {
            return Err(bad(format!(
                "has a member extension of type {}",
                other.data_type()
            )))
        }
    };
    let name = format!("{key}.{ext}");
    match crate::name::split_member_name(&name) {
        Ok((k, _)) if k.as_str() == key => {}
        Ok(_) => {
            return Err(bad(format!(
                "has member extension `{}`, which changes its key",
                crate::name::shown(&ext)
            )))
        }
        Err(e) => return Err(bad(format!("has a member refused as a file name: {e}"))),
    }
    let (offset, length) = match (get(2)?, get(3)?) {
        (ValueRef::Integer(o), ValueRef::Integer(l)) if o >= 0 && l >= 0 => (o as u64, l as u64),
        (o, l) => {
            return Err(bad(format!(
                "has member `{}` at offset `{}` with length `{}`",
                crate::name::shown(&name),
                value_text(o),
                value_text(l)
            )))
        }
    };
    if let Some(size) = within {
        let block = crate::shard::BLOCK;
        let inside = offset >= block
            && offset % block == 0
            && offset
                .checked_add(length)
                .and_then(|end| end.checked_add(2 * block))
                .is_some_and(|end| end <= size);
        if !inside {
            return Err(bad(format!(
                "has member `{}` at byte {offset} with {length} bytes, which does not lie inside its shard of {size} bytes",
                crate::name::shown(&name)
            )));
        }
    }
    let b = get(4)?;
    if !is_blake3_hex(b) {
        return Err(bad(format!(
            "has member `{}` with blake3 `{}`",
            crate::name::shown(&name),
            value_text(b)
        )));
    }
    Ok(())
}

/// A value of a hostile index as a message shows it (short, escaped).
pub fn value_text(v: rusqlite::types::ValueRef<'_>) -> String {
    use rusqlite::types::ValueRef;
    let text = match v {
        ValueRef::Null => "NULL".to_string(),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) => String::from_utf8_lossy(&t[..t.len().min(80)]).into_owned(),
        ValueRef::Blob(b) => format!("a blob of {} bytes", b.len()),
    };
    crate::name::shown(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str) -> ItemRow {
        ItemRow {
            key: key.into(),
            shard: "s".into(),
            volume: "default".into(),
            hash: "h".into(),
            record: Some("{}".into()),
            members: vec![MemberRow {
                ext: "jpg".into(),
                offset: 512,
                length: 3,
                blake3: "b".into(),
            }],
            tags: vec![("general".into(), key.to_uppercase())],
        }
    }

    #[test]
    fn written_index_reads_back_through_compression() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("i.sqlite");
        let w = IndexWriter::create(&db).unwrap();
        w.shard(&ShardRow {
            id: "s".into(),
            size: 2048,
            items: 2,
            live_items: 2,
            volume: "default".into(),
            first_release: "1".into(),
        })
        .unwrap();
        w.item(&row("a")).unwrap();
        w.item(&row("b")).unwrap();
        w.finish(&Timings::new("", false)).unwrap();
        let zst = dir.path().join("i.sqlite.zst");
        let c = compress(&db, &zst, 16384).unwrap();
        let back = dir.path().join("back.sqlite");
        decompress(&zst, &back, c.uncompressed_size).unwrap();
        let r = IndexReader::open(&back).unwrap();
        let mut seen = Vec::new();
        r.for_each_item(|i| {
            seen.push(i);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![row("a"), row("b")]);
        assert!(matches!(
            decompress(&zst, &dir.path().join("bomb.sqlite"), 100),
            Err(IndexError::TooLarge { .. })
        ));
    }

    /// An index of `keys`' rows, written in the order given.
    fn index_of(dir: &Path, name: &str, keys: &[String]) -> Vec<u8> {
        let db = dir.join(name);
        let w = IndexWriter::create(&db).unwrap();
        for key in keys {
            let mut r = row(key);
            // Out of order within the item too: the writer sorts what a run needs sorted.
            r.members.insert(
                0,
                MemberRow {
                    ext: "txt".into(),
                    ..r.members[0].clone()
                },
            );
            r.tags.insert(0, ("rating".into(), "s".into()));
            w.item(&r).unwrap();
        }
        w.finish(&Timings::new("", false)).unwrap();
        std::fs::read(&db).unwrap()
    }

    #[test]
    fn rows_in_runs_or_in_any_order_give_the_same_index() {
        let dir = tempfile::tempdir().unwrap();
        let sorted: Vec<String> = (0..3000).map(|i| format!("k{i:05}")).collect();
        let one_run = index_of(dir.path(), "sorted.sqlite", &sorted);
        // Three volumes' worth of interleaved keys, each run in key order: merged.
        let mut in_runs: Vec<String> = Vec::new();
        for volume in 0..3 {
            in_runs.extend(sorted.iter().skip(volume).step_by(3).cloned());
        }
        let merged = index_of(dir.path(), "runs.sqlite", &in_runs);
        // Descending: a run per item, more than the merge takes, so SQLite sorts them.
        let reversed: Vec<String> = sorted.iter().rev().cloned().collect();
        assert!(reversed.len() > runs::MAX_RUNS);
        let sorted_by_sqlite = index_of(dir.path(), "reversed.sqlite", &reversed);
        assert!(
            one_run == merged,
            "a merge of runs changed the index's bytes"
        );
        assert!(
            one_run == sorted_by_sqlite,
            "SQLite's sort changed the index's bytes"
        );
        let r = IndexReader::open(&dir.path().join("runs.sqlite")).unwrap();
        let mut seen = Vec::new();
        r.for_each_item(|i| {
            seen.push((i.key, i.members.len(), i.tags));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 3000);
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(seen[7].1, 2);
        assert_eq!(
            seen[7].2,
            [
                ("general".into(), "K00007".into()),
                ("rating".into(), "s".into())
            ]
        );
    }

    #[test]
    fn foreign_sqlite_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.sqlite");
        Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE t(x)")
            .unwrap();
        let err = IndexReader::open(&db).err().unwrap().to_string();
        assert!(err.contains("is not a seedpool index"), "{err}");
    }
}
