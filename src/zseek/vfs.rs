//! A read-only SQLite VFS over seekable zstd files: SQLite opens `file:INDEX.sqlite.zst
//! ?vfs=seedpool-zseek&limit=N&mode=ro&immutable=1` and reads its pages straight from the
//! compressed file, each through the frame that holds it. Nothing is written: opening
//! anything but a main database for reading fails, and so does every write.

use crate::sqlvfs::{default_vfs, full_pathname, registered};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use rusqlite::ffi;

use super::Reader;

/// The VFS's registered name.
pub const NAME: &str = "seedpool-zseek";
const NAME_C: &CStr = c"seedpool-zseek";

/// The SQLite URI that opens seekable zstd file `path` read-only through this VFS,
/// refusing tables that unpack to more than `limit` bytes.
pub fn uri(path: &Path, limit: u64) -> Result<String, rusqlite::Error> {
    register()?;
    Ok(format!(
        "{}?vfs={NAME}&limit={}&mode=ro&immutable=1",
        file_uri(path),
        limit.min(i64::MAX as u64)
    ))
}

/// `file:` and the path, percent-escaped where URI syntax needs it.
pub fn file_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/._-".contains(b) {
            uri.push(char::from(*b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

/// Registers the VFS once per process (not as the default).
fn register() -> Result<(), rusqlite::Error> {
    static REGISTERED: OnceLock<c_int> = OnceLock::new();
    let rc = *REGISTERED.get_or_init(|| unsafe {
        // SAFETY: sqlite3_vfs_find and sqlite3_vfs_register are thread-safe and
        // initialize SQLite when needed; the leaked struct lives as long as the process,
        // as SQLite requires of a registered VFS.
        let default = ffi::sqlite3_vfs_find(std::ptr::null());
        if default.is_null() {
            return ffi::SQLITE_ERROR;
        }
        let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
            iVersion: 2,
            szOsFile: std::mem::size_of::<File>() as c_int,
            mxPathname: (*default).mxPathname,
            pNext: std::ptr::null_mut(),
            zName: NAME_C.as_ptr(),
            pAppData: default.cast(),
            xOpen: Some(open),
            xDelete: Some(delete),
            xAccess: Some(access),
            xFullPathname: Some(full_pathname),
            xDlOpen: None,
            xDlError: None,
            xDlSym: None,
            xDlClose: None,
            xRandomness: Some(randomness),
            xSleep: Some(sleep),
            xCurrentTime: Some(current_time),
            xGetLastError: Some(last_error),
            xCurrentTimeInt64: Some(current_time_int64),
            xSetSystemCall: None,
            xGetSystemCall: None,
            xNextSystemCall: None,
        }));
        ffi::sqlite3_vfs_register(vfs, 0)
    });
    registered(rc, NAME)
}

/// SQLite's file object, extended with the reader (allocated by SQLite, szOsFile bytes).
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    reader: *mut Mutex<Reader>,
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(lock),
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
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let file = file.cast::<File>();
    (*file).base.pMethods = std::ptr::null();
    let wanted = ffi::SQLITE_OPEN_MAIN_DB | ffi::SQLITE_OPEN_READONLY;
    if name.is_null() || flags & wanted != wanted || flags & ffi::SQLITE_OPEN_READWRITE != 0 {
        return ffi::SQLITE_CANTOPEN;
    }
    let limit = ffi::sqlite3_uri_int64(name, c"limit".as_ptr(), 0);
    if limit <= 0 {
        return ffi::SQLITE_CANTOPEN;
    }
    let path = PathBuf::from(std::ffi::OsStr::from_encoded_bytes_unchecked(
        CStr::from_ptr(name).to_bytes(),
    ));
    let reader = match Reader::open(&path, limit as u64) {
        Ok(Some(r)) => r,
        _ => return ffi::SQLITE_CANTOPEN,
    };
    (*file).reader = Box::into_raw(Box::new(Mutex::new(reader)));
    (*file).base.pMethods = &METHODS;
    if !out_flags.is_null() {
        *out_flags = ffi::SQLITE_OPEN_READONLY;
    }
    ffi::SQLITE_OK
}

unsafe fn reader<'a>(file: *mut ffi::sqlite3_file) -> &'a Mutex<Reader> {
    // SAFETY: set by `open` before pMethods, so every method sees a live reader.
    &*(*file.cast::<File>()).reader
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let file = file.cast::<File>();
    if !(*file).reader.is_null() {
        drop(Box::from_raw((*file).reader));
        (*file).reader = std::ptr::null_mut();
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let Ok(mut r) = reader(file).lock() else {
        return ffi::SQLITE_IOERR_READ;
    };
    let buf = std::slice::from_raw_parts_mut(buf.cast::<u8>(), amount.max(0) as usize);
    match r.read_at(buf, offset.max(0) as u64) {
        Ok(n) if n == buf.len() => ffi::SQLITE_OK,
        Ok(n) => {
            // SQLite requires the unread tail zeroed on a short read.
            buf[n..].fill(0);
            ffi::SQLITE_IOERR_SHORT_READ
        }
        Err(_) => ffi::SQLITE_IOERR_READ,
    }
}

unsafe extern "C" fn write(
    _file: *mut ffi::sqlite3_file,
    _buf: *const c_void,
    _amount: c_int,
    _offset: ffi::sqlite3_int64,
) -> c_int {
    ffi::SQLITE_READONLY
}

unsafe extern "C" fn truncate(_file: *mut ffi::sqlite3_file, _size: ffi::sqlite3_int64) -> c_int {
    ffi::SQLITE_READONLY
}

unsafe extern "C" fn sync(_file: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn file_size(
    file: *mut ffi::sqlite3_file,
    size: *mut ffi::sqlite3_int64,
) -> c_int {
    match reader(file).lock() {
        Ok(r) => {
            *size = r.len() as ffi::sqlite3_int64;
            ffi::SQLITE_OK
        }
        Err(_) => ffi::SQLITE_IOERR_FSTAT,
    }
}

/// The file never changes (shards and indexes are immutable), so there is nothing to lock.
unsafe extern "C" fn lock(_file: *mut ffi::sqlite3_file, _level: c_int) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn check_reserved_lock(_file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    *out = 0;
    ffi::SQLITE_OK
}

unsafe extern "C" fn file_control(
    _file: *mut ffi::sqlite3_file,
    _op: c_int,
    _arg: *mut c_void,
) -> c_int {
    ffi::SQLITE_NOTFOUND
}

unsafe extern "C" fn sector_size(_file: *mut ffi::sqlite3_file) -> c_int {
    4096
}

unsafe extern "C" fn device_characteristics(_file: *mut ffi::sqlite3_file) -> c_int {
    ffi::SQLITE_IOCAP_IMMUTABLE
}

unsafe extern "C" fn delete(
    _vfs: *mut ffi::sqlite3_vfs,
    _name: *const c_char,
    _sync: c_int,
) -> c_int {
    ffi::SQLITE_IOERR_DELETE
}

/// No journal, WAL or other side file exists for a read-only compressed database.
unsafe extern "C" fn access(
    _vfs: *mut ffi::sqlite3_vfs,
    _name: *const c_char,
    _flags: c_int,
    out: *mut c_int,
) -> c_int {
    *out = 0;
    ffi::SQLITE_OK
}

unsafe extern "C" fn randomness(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    let d = default_vfs(vfs);
    (*d).xRandomness.map_or(0, |f| f(d, n, out))
}

unsafe extern "C" fn sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    let d = default_vfs(vfs);
    (*d).xSleep.map_or(0, |f| f(d, micros))
}

unsafe extern "C" fn current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    let d = default_vfs(vfs);
    (*d).xCurrentTime.map_or(ffi::SQLITE_ERROR, |f| f(d, out))
}

unsafe extern "C" fn current_time_int64(
    vfs: *mut ffi::sqlite3_vfs,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    let d = default_vfs(vfs);
    match (*d).xCurrentTimeInt64 {
        Some(f) => f(d, out),
        None => ffi::SQLITE_ERROR,
    }
}

unsafe extern "C" fn last_error(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    let d = default_vfs(vfs);
    (*d).xGetLastError.map_or(0, |f| f(d, n, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};

    #[test]
    fn sqlite_reads_a_database_in_place_and_cannot_write_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("plain db.sqlite");
        {
            let c = Connection::open(&db).unwrap();
            c.execute_batch(
                "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
                 INSERT INTO t SELECT i, printf('%08d-%s', i, hex(randomblob(40))) FROM n;",
            )
            .unwrap();
        }
        let packed = dir.path().join("packed db.sqlite.zst");
        let mut out = std::fs::File::create(&packed).unwrap();
        let size =
            super::super::compress(&mut std::fs::File::open(&db).unwrap(), &mut out, 3).unwrap();
        drop(out);
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
        let c = Connection::open_with_flags(uri(&packed, size).unwrap(), flags).unwrap();
        let (n, sum): (i64, i64) = c
            .query_row(
                "SELECT count(*), sum(k) FROM t WHERE v LIKE '%-%'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((n, sum), (20000, 20000 * 20001 / 2));
        let v: String = c
            .query_row("SELECT v FROM t WHERE k = 12345", [], |r| r.get(0))
            .unwrap();
        assert!(v.starts_with("00012345-"));
        assert!(c.execute("DELETE FROM t", []).is_err());
        // Attached the same way, as a merge does.
        let main = Connection::open_in_memory().unwrap();
        main.execute("ATTACH DATABASE ?1 AS idx", [uri(&packed, size).unwrap()])
            .unwrap();
        let n: i64 = main
            .query_row("SELECT count(*) FROM idx.t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 20000);
        // A limit below the unpacked size, or a file without a seek table, cannot open.
        assert!(
            Connection::open_with_flags(uri(&packed, size - 1).unwrap(), flags)
                .and_then(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)))
                .is_err()
        );
        assert!(
            Connection::open_with_flags(uri(&db, u64::MAX / 2).unwrap(), flags)
                .and_then(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)))
                .is_err()
        );
    }
}
