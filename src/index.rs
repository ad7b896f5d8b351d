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

/// Index format version, stored as SQLite's `user_version`.
pub const FORMAT_VERSION: u64 = 1;
/// "SPIX", stored as SQLite's `application_id` so `file(1)`-style tools can tell.
pub const APPLICATION_ID: i32 = 0x5350_4958;
/// zstd level: a good ratio at a speed that keeps up with millions of items.
const ZSTD_LEVEL: i32 = 9;

const SCHEMA: &str = "
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
CREATE INDEX items_by_shard ON items(shard, key);
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
CREATE INDEX tags_by_tag ON tags(tag, category);
CREATE TABLE tombstones(
    key TEXT PRIMARY KEY,
    shard TEXT NOT NULL,
    reason TEXT NOT NULL CHECK(reason IN ('removed', 'changed'))
) WITHOUT ROWID;
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

pub struct IndexWriter {
    conn: Connection,
    path: PathBuf,
}

impl IndexWriter {
    pub fn create(path: &Path) -> Result<Self, IndexError> {
        let sql = sql_error(path);
        let conn = Connection::open(path).map_err(sql)?;
        conn.execute_batch(&format!(
            "PRAGMA page_size = 4096; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
             PRAGMA user_version = {FORMAT_VERSION}; PRAGMA application_id = {APPLICATION_ID};
             BEGIN; {SCHEMA}"
        ))
        .map_err(sql)?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
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

    pub fn item(&self, item: &ItemRow) -> Result<(), IndexError> {
        let run = || -> rusqlite::Result<()> {
            self.conn
                .prepare_cached("INSERT INTO items VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![
                    item.key,
                    item.shard,
                    item.volume,
                    item.hash,
                    item.record
                ])?;
            let mut member = self
                .conn
                .prepare_cached("INSERT INTO members VALUES (?1, ?2, ?3, ?4, ?5)")?;
            for m in &item.members {
                member.execute(params![
                    item.key,
                    m.ext,
                    m.offset as i64,
                    m.length as i64,
                    m.blake3
                ])?;
            }
            let mut tag = self
                .conn
                .prepare_cached("INSERT INTO tags VALUES (?1, ?2, ?3)")?;
            for (category, name) in &item.tags {
                tag.execute(params![item.key, category, name])?;
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

    /// Commits, then rewrites the file table by table (`VACUUM INTO`): items, tags and
    /// members were filled side by side, so their pages were interleaved over the whole
    /// file, and a reader of one table would have to unpack every frame of it.
    pub fn finish(self) -> Result<(), IndexError> {
        let packed = self.path.with_extension("packed");
        let _ = std::fs::remove_file(&packed);
        let scratch = crate::store::TempFile(packed.clone());
        self.conn
            .execute_batch("COMMIT")
            .and_then(|()| {
                self.conn
                    .execute("VACUUM INTO ?1", [packed.to_string_lossy()])
                    .map(drop)
            })
            .map_err(|e| self.sql(e))?;
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
    _scratch: Option<crate::store::TempFile>,
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
        let scratch_file = crate::store::TempFile(scratch.to_path_buf());
        decompress(compressed, scratch, limit)?;
        Ok(Self {
            uri: read_only_uri(scratch),
            compressed: compressed.to_path_buf(),
            _scratch: Some(scratch_file),
        })
    }

    /// An SQLite URI that opens (or attaches) the index read-only.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn reader(&self) -> Result<IndexReader, IndexError> {
        IndexReader::open_uri(&self.uri, &self.compressed)
    }
}

/// A read-only view of an index from elsewhere.
pub struct IndexReader {
    conn: Connection,
    path: PathBuf,
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
        conn.execute_batch("PRAGMA trusted_schema = OFF; PRAGMA query_only = ON;")
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
        for table in ["meta", "shards", "items", "members", "tags", "tombstones"] {
            let kind: Option<String> = conn
                .query_row(
                    "SELECT type FROM sqlite_schema WHERE name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .ok();
            if kind.as_deref() != Some("table") {
                return Err(format(format!("`{table}` is missing or not a table")));
            }
        }
        Ok(Self {
            conn,
            path: path.to_path_buf(),
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
            let rows = st.query_map([], |r| {
                Ok(ShardRow {
                    id: r.get(0)?,
                    size: r.get::<_, i64>(1)? as u64,
                    items: r.get::<_, i64>(2)? as u64,
                    live_items: r.get::<_, i64>(3)? as u64,
                    volume: r.get(4)?,
                    first_release: r.get(5)?,
                })
            })?;
            rows.collect()
        };
        run().map_err(|e| self.sql(e))
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
        w.finish().unwrap();
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
