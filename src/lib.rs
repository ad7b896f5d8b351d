//! seedpool: publish datasets as torrents of content-addressed shards with signed,
//! incremental release manifests, and merge releases into a local pool that can be
//! queried. The binary is a thin layer over these modules, so tests and benchmarks use
//! the same code as the CLI.

pub mod card;
pub mod cli;
pub mod curate;
pub mod demo;
pub mod detect;
pub mod files;
pub mod http;
pub mod imaging;
pub mod index;
pub mod ingest;
pub mod manifest;
pub mod mine;
pub mod name;
pub mod pool;
pub mod progress;
pub mod publish;
pub mod query;
pub mod release;
pub mod serve;
pub mod shard;
pub mod signing;
pub mod sqlvfs;
pub mod store;
pub mod swarm;
pub mod tags;
#[cfg(test)]
mod testing;
pub mod torrent;
pub mod usersql;
pub mod verify;
pub mod zseek;

/// A broken invariant of seedpool's own code: a bug to report, never a problem with
/// the input. Error types that can meet one carry it as a variant, so a broken
/// invariant ends the command with a message instead of a panic.
#[derive(Debug, thiserror::Error)]
#[error("internal error, a bug in seedpool (please report it): {0}")]
pub struct Bug(pub &'static str);

/// Process-wide SQLite settings, applied before the first connection opens (later calls
/// do nothing). SQLite keeps memory statistics by default, taking a global mutex on
/// every allocation and free; a merge allocates a page-cache buffer for each page it
/// touches, and those locks were 6% of an incremental merge's samples.
pub fn tune_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config is called before SQLite initializes (it returns
        // SQLITE_MISUSE, and changes nothing, if something initialized it already).
        unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
                0 as std::os::raw::c_int,
            );
        }
    });
}
