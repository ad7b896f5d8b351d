//! A SQLite VFS shim for the pool's read-write connections that gathers the writes to a
//! write-ahead log into large ones.
//!
//! SQLite appends each log frame as two writes, a 24-byte header and the page, so a
//! commit of 180,000 changed pages made 360,000 system calls, each paying the kernel's
//! per-call and per-page costs for a few kilobytes (the frames are not page-aligned, so
//! most writes touch two pages of the page cache). Here the log's consecutive writes
//! wait in a 120 KiB buffer and go out together.
//!
//! What SQLite relies on still holds: a write is durable only after `xSync`, which
//! writes the buffer first; SQLite publishes frames to other connections (in the
//! shared-memory index) only after that sync; anything it reads back, or asks the size
//! of, sees the buffer written first. A process killed with data in the buffer loses
//! frames of a transaction that had not committed, which recovery ignores as it would
//! frames the kernel never wrote. Every other file, the database itself included,
//! is the default VFS's own, untouched.

use std::ffi::{c_int, c_void, CStr};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The VFS's registered name.
pub const NAME: &str = "seedpool-walbuf";
const NAME_C: &CStr = c"seedpool-walbuf";
/// Bytes gathered before they are written: the default VFS writes at most 128 KiB
/// in one call (it masks larger sizes), so a little less.
const BUFFER: usize = 120 << 10;

/// Registers the VFS once per process (not as the default).
pub fn register() -> Result<(), rusqlite::Error> {
    static REGISTERED: OnceLock<c_int> = OnceLock::new();
    let rc = *REGISTERED.get_or_init(|| unsafe {
        // SAFETY: sqlite3_vfs_find and sqlite3_vfs_register are thread-safe and
        // initialize SQLite when needed; the leaked struct lives as long as the process,
        // as SQLite requires of a registered VFS. Every method but xOpen is the default
        // VFS's own, called with the default VFS (kept in pAppData).
        let default = ffi::sqlite3_vfs_find(std::ptr::null());
        if default.is_null() {
            return ffi::SQLITE_ERROR;
        }
        let mut vfs = *default;
        vfs.szOsFile = (*default)
            .szOsFile
            .max(std::mem::size_of::<LogFile>() as c_int);
        vfs.pNext = std::ptr::null_mut();
        vfs.zName = NAME_C.as_ptr();
        vfs.pAppData = default.cast();
        vfs.xOpen = Some(open);
        vfs.xDelete = Some(delete);
        vfs.xAccess = Some(access);
        vfs.xFullPathname = Some(crate::sqlvfs::full_pathname);
        ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 0)
    });
    crate::sqlvfs::registered(rc, NAME)
}

/// A log file: SQLite's file object, extended with the default VFS's file it wraps and
/// the gathered writes.
#[repr(C)]
struct LogFile {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// The allocation size of `inner`.
    inner_size: usize,
    /// Bytes to write at `at`, contiguous.
    pending: *mut Vec<u8>,
    at: i64,
}

static LOG_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let default = crate::sqlvfs::default_vfs(vfs);
    let Some(open) = (*default).xOpen else {
        return ffi::SQLITE_CANTOPEN;
    };
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // Not a log: the default VFS's file, in place (szOsFile covers it).
        return open(default, name, file, flags, out_flags);
    }
    let log = file.cast::<LogFile>();
    (*log).base.pMethods = std::ptr::null();
    let size = (*default).szOsFile as usize;
    let Ok(layout) = std::alloc::Layout::from_size_align(size.max(1), 16) else {
        return ffi::SQLITE_NOMEM;
    };
    let inner = std::alloc::alloc_zeroed(layout).cast::<ffi::sqlite3_file>();
    if inner.is_null() {
        return ffi::SQLITE_NOMEM;
    }
    let rc = open(default, name, inner, flags, out_flags);
    if rc != ffi::SQLITE_OK {
        // A failed open may still have methods to close with (SQLite's rule).
        if !(*inner).pMethods.is_null() {
            if let Some(close) = (*(*inner).pMethods).xClose {
                close(inner);
            }
        }
        std::alloc::dealloc(inner.cast(), layout);
        return rc;
    }
    (*log).inner = inner;
    (*log).inner_size = size.max(1);
    (*log).pending = Box::into_raw(Box::new(Vec::with_capacity(BUFFER)));
    (*log).at = 0;
    (*log).base.pMethods = &LOG_METHODS;
    ffi::SQLITE_OK
}

unsafe extern "C" fn delete(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const std::ffi::c_char,
    sync_dir: c_int,
) -> c_int {
    let default = crate::sqlvfs::default_vfs(vfs);
    match (*default).xDelete {
        Some(delete) => delete(default, name, sync_dir),
        None => ffi::SQLITE_IOERR_DELETE,
    }
}

unsafe extern "C" fn access(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const std::ffi::c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    let default = crate::sqlvfs::default_vfs(vfs);
    match (*default).xAccess {
        Some(access) => access(default, name, flags, out),
        None => ffi::SQLITE_IOERR_ACCESS,
    }
}

unsafe fn log<'a>(file: *mut ffi::sqlite3_file) -> &'a mut LogFile {
    // SAFETY: only log files get LOG_METHODS, after `open` filled them in.
    &mut *file.cast::<LogFile>()
}

unsafe fn methods(log: &LogFile) -> &ffi::sqlite3_io_methods {
    &*(*log.inner).pMethods
}

/// Writes what is gathered.
unsafe fn flush(log: &mut LogFile) -> c_int {
    let pending = &mut *log.pending;
    if pending.is_empty() {
        return ffi::SQLITE_OK;
    }
    let Some(write) = methods(log).xWrite else {
        pending.clear();
        return ffi::SQLITE_IOERR_WRITE;
    };
    let rc = write(
        log.inner,
        pending.as_ptr().cast(),
        pending.len() as c_int,
        log.at,
    );
    // Written or failed, the bytes leave the buffer: SQLite sees the error and rolls
    // the transaction back, and nothing after it is appended to a gap.
    pending.clear();
    rc
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let log = log(file);
    let flushed = flush(log);
    let closed = methods(log).xClose.map_or(ffi::SQLITE_OK, |c| c(log.inner));
    // The same layout `open` allocated with, which was valid then.
    if let Ok(layout) = std::alloc::Layout::from_size_align(log.inner_size, 16) {
        std::alloc::dealloc(log.inner.cast(), layout);
    }
    drop(Box::from_raw(log.pending));
    log.base.pMethods = std::ptr::null();
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        closed
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    n: c_int,
    offset: i64,
) -> c_int {
    let log = log(file);
    let bytes = std::slice::from_raw_parts(data.cast::<u8>(), n.max(0) as usize);
    let pending = &mut *log.pending;
    let follows = log.at + pending.len() as i64 == offset;
    if !(follows && pending.len() + bytes.len() <= BUFFER) {
        let rc = flush(log);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        if bytes.len() >= BUFFER {
            return match methods(log).xWrite {
                Some(write) => write(log.inner, data, n, offset),
                None => ffi::SQLITE_IOERR_WRITE,
            };
        }
        log.at = offset;
    }
    (*log.pending).extend_from_slice(bytes);
    ffi::SQLITE_OK
}

/// The log file with its gathered bytes written, or the error writing them gave.
unsafe fn flushed<'a>(file: *mut ffi::sqlite3_file) -> Result<&'a mut LogFile, c_int> {
    let log = log(file);
    match flush(log) {
        ffi::SQLITE_OK => Ok(log),
        rc => Err(rc),
    }
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    n: c_int,
    offset: i64,
) -> c_int {
    match flushed(file) {
        Ok(log) => match methods(log).xRead {
            Some(read) => read(log.inner, buf, n, offset),
            None => ffi::SQLITE_IOERR_READ,
        },
        Err(rc) => rc,
    }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    match flushed(file) {
        Ok(log) => match methods(log).xTruncate {
            Some(truncate) => truncate(log.inner, size),
            None => ffi::SQLITE_IOERR_TRUNCATE,
        },
        Err(rc) => rc,
    }
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    match flushed(file) {
        Ok(log) => match methods(log).xSync {
            Some(sync) => sync(log.inner, flags),
            None => ffi::SQLITE_IOERR_FSYNC,
        },
        Err(rc) => rc,
    }
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    match flushed(file) {
        Ok(log) => match methods(log).xFileSize {
            Some(file_size) => file_size(log.inner, size),
            None => ffi::SQLITE_IOERR_FSTAT,
        },
        Err(rc) => rc,
    }
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let log = log(file);
    methods(log)
        .xLock
        .map_or(ffi::SQLITE_OK, |f| f(log.inner, level))
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let log = log(file);
    methods(log)
        .xUnlock
        .map_or(ffi::SQLITE_OK, |f| f(log.inner, level))
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    let log = log(file);
    match methods(log).xCheckReservedLock {
        Some(f) => f(log.inner, out),
        None => {
            *out = 0;
            ffi::SQLITE_OK
        }
    }
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // Controls may look at or change the file (a size hint extends it): the gathered
    // bytes go first.
    match flushed(file) {
        Ok(log) => methods(log)
            .xFileControl
            .map_or(ffi::SQLITE_NOTFOUND, |f| f(log.inner, op, arg)),
        Err(rc) => rc,
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    let log = log(file);
    methods(log).xSectorSize.map_or(4096, |f| f(log.inner))
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let log = log(file);
    methods(log)
        .xDeviceCharacteristics
        .map_or(0, |f| f(log.inner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};

    #[test]
    fn gathered_log_writes_read_back_and_commit_whole() {
        register().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let w = Connection::open_with_flags_and_vfs(&path, OpenFlags::default(), NAME).unwrap();
        // A tiny cache spills pages to the log inside the transaction, so SQLite reads
        // some back from it before the commit.
        w.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA cache_size = 8;
             PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t(x INTEGER PRIMARY KEY, y BLOB, z TEXT UNIQUE);",
        )
        .unwrap();
        let r = Connection::open(&path).unwrap();
        w.execute_batch("BEGIN").unwrap();
        for i in 0..3000 {
            w.execute(
                "INSERT INTO t VALUES (?1, zeroblob(900), printf('%08d', (?1 * 7919) % 3000))",
                [i],
            )
            .unwrap();
        }
        let inside: (i64, i64) = w
            .query_row("SELECT count(*), sum(length(y)) FROM t", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(inside, (3000, 2_700_000));
        let before: i64 = r
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(before, 0, "nothing shows before the commit");
        w.execute_batch("COMMIT").unwrap();
        let after: i64 = r
            .query_row("SELECT count(*) FROM t WHERE z IS NOT NULL", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(after, 3000);
        w.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        drop(w);
        let check: String = r
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
}
