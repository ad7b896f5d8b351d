//! Classifying a release against the pool: both walked in key order, each item's fate
//! (added, changed, restored, moved, same; removed for the pool's items the release no
//! longer lists) written to temporary tables the transaction applies.

use std::path::Path;

use rusqlite::{params, Connection};

use super::MergeError;
use crate::index::{self, IndexError};

/// Compares the release's items with the pool's items of dataset `ds`, walking both in
/// key order: what the release brings goes to `temp.incoming` with its fate (`same`
/// items only counted, since nothing happens to them), and the pool's live items the
/// release no longer lists to `temp.removed`. Returns the number of `same` items.
/// Records of added items are kept in `incoming` only with `keep_records`. Every added,
/// changed or restored item with a record gets the id its record will have in
/// `records` (`record_id`): the ids after `last_record`, in key order.
pub(super) fn classify(
    tx: &Connection,
    ds: i64,
    keep_records: bool,
    last_record: i64,
    index_path: &Path,
) -> Result<u64, MergeError> {
    tx.execute_batch(
        "DROP TABLE IF EXISTS temp.incoming;
         CREATE TEMP TABLE incoming(
            key TEXT PRIMARY KEY, shard TEXT, hash TEXT, volume TEXT,
            item INTEGER, old_hash TEXT, fate TEXT, record TEXT, record_id INTEGER
         ) WITHOUT ROWID;
         DROP TABLE IF EXISTS temp.removed;
         CREATE TEMP TABLE removed(id INTEGER PRIMARY KEY);",
    )?;
    // Records come along for what the merge writes, so it reads the release's items once.
    let mut release =
        tx.prepare("SELECT key, shard, hash, volume, record FROM idx.items ORDER BY key")?;
    let mut pool = tx.prepare(CLASSIFY_POOL)?;
    let mut full = tx.prepare("SELECT hash, shard FROM items WHERE id = ?1")?;
    let mut incoming = tx.prepare(
        "INSERT INTO incoming(key, shard, hash, volume, item, old_hash, fate, record, record_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut next_record = last_record;
    let mut record_id = |record: &rusqlite::types::ValueRef<'_>| {
        if matches!(record, rusqlite::types::ValueRef::Null) {
            None
        } else {
            next_record += 1;
            Some(next_record)
        }
    };
    let mut removed = tx.prepare("INSERT INTO temp.removed(id) VALUES (?1)")?;
    let mut release = release.query([])?;
    let mut pool = pool.query([ds])?;
    let mut previous: Vec<u8> = Vec::new();
    let mut r = release.next()?;
    check_release_row(r, &mut previous, index_path)?;
    let mut p = pool.next()?;
    let mut same = 0;
    use std::cmp::Ordering;
    while r.is_some() || p.is_some() {
        let order = match (r, p) {
            // Bytes, as SQLite's BINARY collation orders keys (no UTF-8 check needed).
            (Some(r), Some(p)) => r.get_ref(0)?.as_bytes()?.cmp(p.get_ref(0)?.as_bytes()?),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                let new = r.expect("a release row");
                let record = if keep_records {
                    new.get_ref(4)?.as_str_or_null()?
                } else {
                    None
                };
                incoming.execute(params![
                    new.get_ref(0)?.as_str()?,
                    new.get_ref(1)?.as_str()?,
                    new.get_ref(2)?.as_str()?,
                    new.get_ref(3)?.as_str()?,
                    None::<i64>,
                    None::<String>,
                    "added",
                    record,
                    record_id(&new.get_ref(4)?)
                ])?;
                r = release.next()?;
                check_release_row(r, &mut previous, index_path)?;
            }
            Ordering::Greater => {
                let gone = p.expect("a pool row");
                if !gone.get::<_, bool>(4)? {
                    removed.execute([gone.get::<_, i64>(1)?])?;
                }
                p = pool.next()?;
            }
            Ordering::Equal => {
                let (new, old) = (r.expect("a release row"), p.expect("a pool row"));
                let (hash, shard) = (new.get_ref(2)?.as_str()?, new.get_ref(1)?.as_str()?);
                let removed = old.get::<_, bool>(4)?;
                if !removed
                    && prefix(hash).as_bytes() == old.get_ref(2)?.as_bytes()?
                    && prefix(shard).as_bytes() == old.get_ref(3)?.as_bytes()?
                {
                    same += 1;
                } else {
                    let id: i64 = old.get(1)?;
                    let (old_hash, old_shard): (String, String) =
                        full.query_row([id], |f| Ok((f.get(0)?, f.get(1)?)))?;
                    let fate = if removed {
                        "restored"
                    } else if hash != old_hash {
                        "changed"
                    } else if shard != old_shard {
                        "moved"
                    } else {
                        "same"
                    };
                    if fate == "same" {
                        same += 1;
                    } else {
                        // A moved item keeps its record (same content, same record).
                        let rid = if fate == "moved" {
                            None
                        } else {
                            record_id(&new.get_ref(4)?)
                        };
                        incoming.execute(params![
                            new.get_ref(0)?.as_str()?,
                            shard,
                            hash,
                            new.get_ref(3)?.as_str()?,
                            id,
                            old_hash,
                            fate,
                            new.get_ref(4)?.as_str_or_null()?,
                            rid
                        ])?;
                    }
                }
                r = release.next()?;
                check_release_row(r, &mut previous, index_path)?;
                p = pool.next()?;
            }
        }
    }
    Ok(same)
}

/// `index::check_item_row` on the release's current row, as a merge error.
pub(super) fn check_release_row(
    row: Option<&rusqlite::Row<'_>>,
    previous: &mut Vec<u8>,
    path: &Path,
) -> Result<(), MergeError> {
    match row {
        None => Ok(()),
        Some(r) => index::check_item_row(r, previous).map_err(|(key, problem)| {
            IndexError::BadItem {
                path: path.to_path_buf(),
                key,
                problem,
            }
            .into()
        }),
    }
}

/// The pool's side of `classify`: every item of a dataset in key order, read from the
/// covering index `items_state` alone (prefixes of hash and shard, not the strings).
pub(super) const CLASSIFY_POOL: &str =
    "SELECT key, id, substr(hash, 1, 16), substr(shard, 1, 16), removed_in IS NOT NULL
     FROM items WHERE dataset = ?1 ORDER BY key";

/// The first 16 characters of `s`, as SQLite's `substr(s, 1, 16)` counts them.
pub(super) fn prefix(s: &str) -> &str {
    s.char_indices().nth(16).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::Pool;

    #[test]
    fn the_pool_walk_reads_the_item_state_index_alone() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::open_or_create(dir.path()).unwrap();
        let conn = pool.connection();
        let plan: String = conn
            .query_row(&format!("EXPLAIN QUERY PLAN {CLASSIFY_POOL}"), [1], |r| {
                r.get(3)
            })
            .unwrap();
        assert_eq!(plan, "SEARCH items USING INDEX items_state (dataset=?)");
        // The plan keeps the table open in case an indexed expression needs it; the
        // program must read every column, prefixes included, from the index.
        let mut st = conn.prepare(&format!("EXPLAIN {CLASSIFY_POOL}")).unwrap();
        let code: Vec<(String, i64, i64)> = st
            .query_map([1], |r| Ok((r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let index = code.iter().find(|c| c.0 == "DeferredSeek").map(|c| c.1);
        let read: Vec<i64> = code
            .iter()
            .filter(|c| c.0 == "Column")
            .map(|c| c.1)
            .collect();
        assert_eq!(read.len(), 4, "{code:?}");
        assert!(read.iter().all(|&c| Some(c) == index), "{code:?}");
    }

    #[test]
    fn prefixes_count_characters_as_sqlite_does() {
        assert_eq!(prefix("0123456789abcdef0123"), "0123456789abcdef");
        assert_eq!(prefix("short"), "short");
        assert_eq!(prefix("ééééééééééééééééé"), "éééééééééééééééé");
    }
}
