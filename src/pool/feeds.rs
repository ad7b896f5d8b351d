//! What a follower remembers of each dataset's feed: the newest sequence it accepted,
//! so that an older feed (a rollback) is refused. See `manifest::feed`.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FeedState {
    pub sequence: u64,
    pub published: String,
    pub expires: String,
    pub public_key: String,
    /// Where the feed was read.
    pub source: String,
    pub checked_at: String,
}

pub fn get(conn: &Connection, dataset: &str) -> rusqlite::Result<Option<FeedState>> {
    conn.query_row(
        "SELECT sequence, published, expires, public_key, source, checked_at
         FROM feeds WHERE dataset = ?1",
        [dataset],
        |r| {
            Ok(FeedState {
                sequence: r.get::<_, i64>(0)? as u64,
                published: r.get(1)?,
                expires: r.get(2)?,
                public_key: r.get(3)?,
                source: r.get(4)?,
                checked_at: r.get(5)?,
            })
        },
    )
    .optional()
}

/// Records an accepted feed; a lower sequence than the one kept changes nothing.
pub fn record(conn: &Connection, dataset: &str, state: &FeedState) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO feeds(dataset, sequence, published, expires, public_key, source, checked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(dataset) DO UPDATE SET sequence = excluded.sequence,
             published = excluded.published, expires = excluded.expires,
             public_key = excluded.public_key, source = excluded.source,
             checked_at = excluded.checked_at
         WHERE excluded.sequence >= feeds.sequence",
        params![
            dataset,
            state.sequence as i64,
            state.published,
            state.expires,
            state.public_key,
            state.source,
            state.checked_at
        ],
    )?;
    Ok(())
}

/// The key the pool pinned for a dataset on its first merge.
pub fn pinned_key(conn: &Connection, dataset: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT public_key FROM datasets WHERE name = ?1",
        [dataset],
        |r| r.get(0),
    )
    .optional()
}

/// The versions of a dataset the pool merged.
pub fn merged_versions(conn: &Connection, dataset: &str) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare(
        "SELECT r.version FROM releases r JOIN datasets d ON d.id = r.dataset WHERE d.name = ?1",
    )?;
    let rows = st.query_map([dataset], |r| r.get(0))?;
    rows.collect()
}
