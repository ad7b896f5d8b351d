//! What a SQLite VFS shim needs from the default VFS (`zseek::vfs`, which reads seekable
//! zstd indexes, is the one seedpool has): it keeps the default VFS in `pAppData` and
//! forwards to it what it does not do itself.

use std::os::raw::{c_char, c_int};

use rusqlite::ffi;

/// The outcome of registering VFS `name`, as a rusqlite error when it failed.
pub(crate) fn registered(rc: c_int, name: &str) -> Result<(), rusqlite::Error> {
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(
            ffi::Error::new(rc),
            Some(format!("cannot register SQLite VFS `{name}`")),
        ))
    }
}

/// The default VFS, which both of seedpool's VFSs keep in `pAppData`.
pub(crate) fn default_vfs(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: pAppData was set to the default VFS at registration.
    unsafe { (*vfs).pAppData.cast() }
}

/// The default VFS's full path name (a VFS that keeps the default in `pAppData`).
pub(crate) unsafe extern "C" fn full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    let d = default_vfs(vfs);
    match (*d).xFullPathname {
        Some(f) => f(d, name, n, out),
        None => ffi::SQLITE_ERROR,
    }
}
