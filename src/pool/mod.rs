//! The local pool: one folder holding every release of some datasets, merged.
//!
//! ```text
//! POOL/pool.sqlite                         every item of every release (WAL)
//! POOL/<dataset>-<version>.manifest.json   as in a store, so a pool can seed
//! POOL/<dataset>-<version>.torrent
//! POOL/<dataset>/shards/<id>.tar
//! POOL/<dataset>/index/<version>.sqlite.zst
//! ```
//!
//! A pool is a store plus a database, so a downloader becomes a seeder without a copy.
//! The database changes only inside one transaction per merge (see `merge`), so it is
//! always as before a merge or fully merged.

pub mod aggregates;
pub mod clusters;
pub mod duplicates;
pub mod feeds;
pub mod merge;
pub mod phash;
pub mod schema;
pub mod vectors;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::files::FileError;

pub const DATABASE: &str = "pool.sqlite";

/// Settings every connection to a pool database starts with.
const CONNECTION_SETUP: &str = "PRAGMA trusted_schema = OFF; PRAGMA foreign_keys = OFF;";

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("`{0}` is not a seedpool pool: it is a non-empty folder without `pool.sqlite` (give an empty or new folder to create a pool)")]
    NotAPool(PathBuf),
    #[error("`{0}` does not exist; merge or sync a release to create a pool there")]
    Missing(PathBuf),
    #[error("`{path}` is not a seedpool pool database: {problem}")]
    Foreign { path: PathBuf, problem: String },
    #[error("pool `{path}` has format version {found}, newer than this seedpool's {supported}; upgrade seedpool")]
    Newer {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("pool database `{path}`: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "pool `{0}` is busy: another seedpool sync or merge is changing it; wait for it to end"
    )]
    Busy(PathBuf),
    #[error(transparent)]
    File(#[from] FileError),
}

/// Name of the lock file in a pool's folder.
pub const LOCK: &str = ".seedpool.lock";

/// Holds the pool's write lock while alive: one process at a time syncs or merges into
/// a pool. It is an open-file lock (flock(2), through std), so it belongs to this
/// handle alone: closing some other descriptor of the lock file does not release it,
/// as it would a POSIX record lock, and a killed process never leaves it behind. Work
/// that runs inside a locked step (the merge at the end of a sync) is handed the lock
/// rather than taking it again.
pub struct PoolLock {
    _file: std::fs::File,
    root: PathBuf,
}

impl PoolLock {
    /// The pool folder this lock guards.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// SQL computing a tag's canonical name from `$N` (its name as written), with aliases.
/// `seedpool_tag` is `name::normalize_tag` itself (see `connection_setup`): SQLite's
/// `lower` and `trim` know only ASCII, so an SQL copy of the rule gave `Émile_Zola`
/// where the Rust one, which hit-parade `--tags` uses, gave `émile_zola`.
pub const CANONICAL_TAG_SQL: &str =
    "coalesce((SELECT a.name FROM tag_aliases a WHERE a.alias = seedpool_tag($N)), seedpool_tag($N))";

/// What every pool connection gets: settings and `sql_functions`.
fn connection_setup(conn: &Connection, extra: &str) -> rusqlite::Result<()> {
    conn.execute_batch(&format!("{CONNECTION_SETUP} {extra}"))?;
    sql_functions(conn)
}

/// Registers seedpool's SQL functions on `conn`: `seedpool_tag(name)`, the canonical
/// form of a tag name (`name::normalize_tag`), which `CANONICAL_TAG_SQL` and the
/// migrations use, and those of the perceptual hash index (`phash::sql_functions`).
pub fn sql_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    phash::sql_functions(conn)?;
    vectors::sql_functions(conn)?;
    conn.create_scalar_function(
        "seedpool_tag",
        1,
        FunctionFlags::SQLITE_UTF8
            | FunctionFlags::SQLITE_DETERMINISTIC
            | FunctionFlags::SQLITE_INNOCUOUS,
        |ctx| {
            Ok(match ctx.get_raw(0) {
                rusqlite::types::ValueRef::Text(t) => {
                    Some(crate::name::normalize_tag(&String::from_utf8_lossy(t)))
                }
                _ => None,
            })
        },
    )
}

/// Rows for one INSERT written `ROWS` at a time: one multi-row statement per batch
/// instead of a statement per row, which is most of the cost of writing millions of
/// small rows (tag links, counts) from Rust.
pub struct RowBatch<'c> {
    one: rusqlite::Statement<'c>,
    many: rusqlite::Statement<'c>,
    values: Vec<rusqlite::types::Value>,
    width: usize,
}

impl<'c> RowBatch<'c> {
    const ROWS: usize = 128;

    /// `head` is the statement up to `VALUES`, `tail` what follows the rows (an ON
    /// CONFLICT clause, or nothing); rows have `width` values.
    pub fn new(
        conn: &'c Connection,
        head: &str,
        width: usize,
        tail: &str,
    ) -> rusqlite::Result<Self> {
        let row = format!("({})", vec!["?"; width].join(", "));
        let rows = vec![row.as_str(); Self::ROWS].join(", ");
        Ok(Self {
            one: conn.prepare(&format!("{head} VALUES {row} {tail}"))?,
            many: conn.prepare(&format!("{head} VALUES {rows} {tail}"))?,
            values: Vec::with_capacity(width * Self::ROWS),
            width,
        })
    }

    pub fn push(
        &mut self,
        row: impl IntoIterator<Item = rusqlite::types::Value>,
    ) -> rusqlite::Result<()> {
        self.values.extend(row);
        debug_assert_eq!(self.values.len() % self.width, 0);
        if self.values.len() == self.width * Self::ROWS {
            self.many
                .execute(rusqlite::params_from_iter(self.values.drain(..)))?;
        }
        Ok(())
    }

    /// Writes the rows still waiting.
    pub fn finish(mut self) -> rusqlite::Result<()> {
        let values = std::mem::take(&mut self.values);
        for row in values.chunks(self.width) {
            self.one.execute(rusqlite::params_from_iter(row))?;
        }
        Ok(())
    }
}

pub struct Pool {
    root: PathBuf,
    conn: Connection,
}

impl Pool {
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn connection_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    pub fn database_path(&self) -> PathBuf {
        self.root.join(DATABASE)
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> PoolError + '_ {
        move |source| PoolError::Sqlite {
            path: self.database_path(),
            source,
        }
    }

    /// Opens a pool, creating it when `root` is missing or an empty folder.
    pub fn open_or_create(root: &Path) -> Result<Self, PoolError> {
        Self::check_creatable(root)?;
        Self::open_with(root, OpenFlags::default())
    }

    /// Opens a pool for a merge or sync, creating it when `root` is missing or empty,
    /// with its write lock taken before the database is created or migrated: two
    /// processes that both found no pool cannot both create one.
    pub fn open_or_create_locked(root: &Path) -> Result<(Self, PoolLock), PoolError> {
        // A folder with a lock file is a pool, or one another process is making (whose
        // files come and go until it is done): its lock decides, and the folder is
        // checked again once it is ours.
        if !root.join(LOCK).exists() {
            Self::check_creatable(root)?;
        }
        let lock = Self::lock_at(root)?;
        Self::check_creatable(root)?;
        let pool = Self::open_with(root, OpenFlags::default())?;
        Ok((pool, lock))
    }

    /// Opens or creates the pool whose lock the caller already holds (a step inside a
    /// locked one: taking the lock again would find it busy).
    pub fn open_or_create_held(lock: &PoolLock) -> Result<Self, PoolError> {
        Self::check_creatable(&lock.root)?;
        Self::open_with(&lock.root, OpenFlags::default())
    }

    /// A pool may be made at `root`: it holds a pool database, or is a missing (then
    /// created) or empty folder (the lock file aside).
    fn check_creatable(root: &Path) -> Result<(), PoolError> {
        if root.join(DATABASE).exists() {
            return Ok(());
        }
        match std::fs::read_dir(root) {
            Ok(entries) => {
                let other = entries
                    .flatten()
                    .any(|e| e.file_name() != LOCK && e.file_name() != DATABASE);
                if other {
                    return Err(PoolError::NotAPool(root.to_path_buf()));
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(root)
                .map_err(|e| crate::files::file_error("create pool", root)(e).into()),
            Err(e) => Err(crate::files::file_error("read pool", root)(e).into()),
        }
    }

    /// Takes the pool's write lock, or fails at once when another process holds it.
    pub fn lock(&self) -> Result<PoolLock, PoolError> {
        Self::lock_at(&self.root)
    }

    fn lock_at(root: &Path) -> Result<PoolLock, PoolError> {
        let path = root.join(LOCK);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(crate::files::file_error("create", &path))?;
        match file.try_lock() {
            Ok(()) => Ok(PoolLock {
                _file: file,
                root: root.to_path_buf(),
            }),
            Err(std::fs::TryLockError::WouldBlock) => Err(PoolError::Busy(root.to_path_buf())),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(crate::files::file_error("lock", &path)(e).into())
            }
        }
    }

    /// Opens an existing pool for changes.
    pub fn open(root: &Path) -> Result<Self, PoolError> {
        Self::check_exists(root)?;
        Self::open_with(root, OpenFlags::default())
    }

    /// Opens an existing pool for queries, read-only. A pool of an older format is
    /// migrated first (that one time, for writing).
    pub fn open_read_only(root: &Path) -> Result<Self, PoolError> {
        Self::check_exists(root)?;
        let version: i64 =
            Connection::open_with_flags(root.join(DATABASE), OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
                .unwrap_or(schema::FORMAT_VERSION);
        if version < schema::FORMAT_VERSION {
            drop(Self::open(root)?);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        Self::open_with(root, flags)
    }

    /// A new pool database at `file` (not yet the pool's), for a first merge to fill
    /// before it is renamed to `pool.sqlite`: without a journal, since a failed build is
    /// thrown away whole; `finish_unjournaled` makes it an ordinary WAL pool.
    pub fn create_unjournaled(root: &Path, file: &Path) -> Result<Self, PoolError> {
        let sql = |source| PoolError::Sqlite {
            path: file.to_path_buf(),
            source,
        };
        let _ = std::fs::remove_file(file);
        let conn = Connection::open(file).map_err(sql)?;
        connection_setup(
            &conn,
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;",
        )
        .map_err(sql)?;
        let pool = Self {
            root: root.to_path_buf(),
            conn,
        };
        pool.migrate(0)?;
        Ok(pool)
    }

    /// Switches a database made by `create_unjournaled` to WAL and syncs it to disk.
    pub fn finish_unjournaled(self, file: &Path) -> Result<(), PoolError> {
        self.conn
            .execute_batch("PRAGMA journal_mode = WAL;")
            .map_err(|source| PoolError::Sqlite {
                path: file.to_path_buf(),
                source,
            })?;
        drop(self.conn);
        std::fs::File::open(file)
            .and_then(|f| f.sync_all())
            .map_err(crate::files::file_error("sync", file))?;
        Ok(())
    }

    fn check_exists(root: &Path) -> Result<(), PoolError> {
        if !root.exists() {
            return Err(PoolError::Missing(root.to_path_buf()));
        }
        if !root.join(DATABASE).is_file() {
            return Err(PoolError::NotAPool(root.to_path_buf()));
        }
        Ok(())
    }

    /// A read-only connection. A WAL database needs its `-shm` file, which a reader
    /// creates when it is missing; where it cannot (a pool on read-only media, or one
    /// the user may read but not write) and there is no log to read either, the file
    /// is opened as immutable: nobody can be writing to it, since a writer would need
    /// those same files.
    fn open_reader(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(path, flags)?;
        let readable = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0));
        let side = |suffix: &str| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            std::path::PathBuf::from(p)
        };
        match readable {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen
                ) && !side("-wal").exists() =>
            {
                drop(conn);
                let uri = format!("{}?mode=ro&immutable=1", crate::zseek::vfs::file_uri(path));
                Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
            }
            _ => Ok(conn),
        }
    }

    fn open_with(root: &Path, flags: OpenFlags) -> Result<Self, PoolError> {
        let path = root.join(DATABASE);
        let sql = |source| PoolError::Sqlite {
            path: path.clone(),
            source,
        };
        let read_only = flags.contains(OpenFlags::SQLITE_OPEN_READ_ONLY);
        let conn = if read_only {
            Self::open_reader(&path, flags)
        } else {
            Connection::open_with_flags(&path, flags)
        }
        .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(sql)?;
        connection_setup(&conn, "").map_err(sql)?;
        let pool = Self {
            root: root.to_path_buf(),
            conn,
        };
        let (app, version): (i64, i64) = pool
            .conn
            .query_row(
                "SELECT application_id, user_version FROM pragma_application_id, pragma_user_version",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| PoolError::Foreign {
                path: path.clone(),
                problem: e.to_string(),
            })?;
        let fresh = app == 0 && version == 0 && pool.table_count()? == 0;
        if !fresh && app != schema::APPLICATION_ID {
            return Err(PoolError::Foreign {
                path,
                problem: format!("application id is {app:#x}"),
            });
        }
        if version > schema::FORMAT_VERSION {
            return Err(PoolError::Newer {
                path,
                found: version,
                supported: schema::FORMAT_VERSION,
            });
        }
        if !read_only {
            pool.conn
                .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
                .map_err(pool.sql())?;
            pool.migrate(version)?;
        } else if version < schema::FORMAT_VERSION {
            return Err(PoolError::Foreign {
                path,
                problem: format!(
                    "format {version} needs upgrading: run a merge, or open it once for writing"
                ),
            });
        }
        Ok(pool)
    }

    fn table_count(&self) -> Result<i64, PoolError> {
        self.conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(self.sql())
    }

    fn migrate(&self, from: i64) -> Result<(), PoolError> {
        // Pools from before the counts existed, and those whose canonical tag names
        // changed, get their counts computed again.
        let mut recount = from > 0 && from < 3;
        for (i, step) in schema::MIGRATIONS.iter().enumerate().skip(from as usize) {
            let to = i as i64 + 1;
            // The version is read again inside the write transaction: another process
            // opening the same pool may have applied this step since it was read.
            let mut run = || -> rusqlite::Result<()> {
                self.conn.execute_batch("BEGIN IMMEDIATE")?;
                let now: i64 = self
                    .conn
                    .query_row("PRAGMA user_version", [], |r| r.get(0))?;
                if now < to {
                    self.conn.execute_batch(step)?;
                    if to == schema::RECANONICAL && self.conn.changes() > 0 {
                        recount = true;
                    }
                    self.conn.execute_batch(&format!(
                        "PRAGMA application_id = {}; PRAGMA user_version = {to};",
                        schema::APPLICATION_ID
                    ))?;
                }
                self.conn.execute_batch("COMMIT")
            };
            if let Err(e) = run() {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(self.sql()(e));
            }
        }
        if recount {
            let rebuild = || -> rusqlite::Result<()> {
                self.conn.execute_batch("BEGIN IMMEDIATE")?;
                aggregates::rebuild(&self.conn)?;
                self.conn.execute_batch("COMMIT")
            };
            if let Err(e) = rebuild() {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(self.sql()(e));
            }
        }
        Ok(())
    }

    /// The store view of the pool: the same layout, so shards and indexes live where a
    /// BitTorrent client or `seedpool seed` expects them.
    pub fn store(
        &self,
        dataset: &crate::name::DatasetName,
    ) -> Result<crate::store::Store, crate::store::StoreError> {
        crate::store::Store::open(&self.root, dataset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_holds_until_its_own_handle_closes() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("pool");
        let (_pool, lock) = Pool::open_or_create_locked(&root).unwrap();
        // A POSIX record lock was the process's: a second take in this process passed,
        // and closing that second descriptor released the first holder's lock too.
        assert!(matches!(Pool::lock_at(&root), Err(PoolError::Busy(_))));
        drop(std::fs::File::open(root.join(LOCK)).unwrap());
        assert!(matches!(Pool::lock_at(&root), Err(PoolError::Busy(_))));
        // Work inside the locked step opens the pool with the lock it is handed.
        let inner = Pool::open_or_create_held(&lock).unwrap();
        drop(inner);
        assert!(matches!(Pool::lock_at(&root), Err(PoolError::Busy(_))));
        drop(lock);
        Pool::lock_at(&root).unwrap();
    }

    #[test]
    fn sql_and_rust_give_a_tag_the_same_canonical_name() {
        // SQLite's lower() and trim() are ASCII-only: `Émile Zola` was `Émile_zola` in
        // the pool and `émile_zola` for hit-parade --tags, which then found nothing.
        let t = tempfile::tempdir().unwrap();
        let p = Pool::open_or_create(&t.path().join("p")).unwrap();
        for name in [
            "Émile Zola",
            "\u{a0}Hatsune Miku\u{a0}",
            "ÄRGER",
            "straße",
            "  plain tag ",
            "ΣΊΣΥΦΟΣ",
        ] {
            let sql: String = p
                .connection()
                .query_row(
                    &format!("SELECT {}", CANONICAL_TAG_SQL.replace("$N", "?1")),
                    [name],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(sql, crate::name::normalize_tag(name), "{name:?}");
        }
        let null: Option<String> = p
            .connection()
            .query_row("SELECT seedpool_tag(NULL)", [], |r| r.get(0))
            .unwrap();
        assert_eq!(null, None);
    }

    #[test]
    fn a_new_pool_is_created_in_a_missing_or_empty_folder_only() {
        let t = tempfile::tempdir().unwrap();
        let p = Pool::open_or_create(&t.path().join("new")).unwrap();
        let v: i64 = p
            .connection()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, schema::FORMAT_VERSION);
        drop(p);
        Pool::open(&t.path().join("new")).unwrap();
        std::fs::write(t.path().join("stuff.txt"), b"x").unwrap();
        let err = Pool::open_or_create(t.path()).err().unwrap().to_string();
        assert!(err.contains("is not a seedpool pool"), "{err}");
    }

    #[test]
    fn an_older_pool_is_migrated_when_opened() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("p");
        std::fs::create_dir(&root).unwrap();
        let conn = Connection::open(root.join(DATABASE)).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA application_id = {}; PRAGMA user_version = 1;",
            schema::APPLICATION_ID
        ))
        .unwrap();
        conn.execute(
            "INSERT INTO tags(name, category, source) VALUES ('Hatsune Miku', 'character', 'x')",
            [],
        )
        .unwrap();
        drop(conn);
        let pool = Pool::open_read_only(&root).unwrap();
        let canonical: String = pool
            .connection()
            .query_row("SELECT canonical FROM tags", [], |r| r.get(0))
            .unwrap();
        assert_eq!(canonical, "hatsune_miku");
    }

    #[test]
    fn pools_from_newer_versions_and_other_databases_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("p");
        drop(Pool::open_or_create(&root).unwrap());
        Connection::open(root.join(DATABASE))
            .unwrap()
            .execute_batch("PRAGMA user_version = 99")
            .unwrap();
        let err = Pool::open(&root).err().unwrap().to_string();
        assert!(
            err.contains(&format!(
                "format version 99, newer than this seedpool's {}; upgrade seedpool",
                schema::FORMAT_VERSION
            )),
            "{err}"
        );

        let other = t.path().join("o");
        std::fs::create_dir(&other).unwrap();
        Connection::open(other.join(DATABASE))
            .unwrap()
            .execute_batch("CREATE TABLE x(y)")
            .unwrap();
        let err = Pool::open(&other).err().unwrap().to_string();
        assert!(err.contains("is not a seedpool pool database"), "{err}");
    }
}
