//! Exact and near duplicates among a dataset's live items.
//!
//! Two items are duplicates when their records carry the same `md5` of the original, or
//! perceptual hashes (`phash`, 64 bits as hex) within a Hamming distance. In each group
//! one item stays visible and the others get `duplicate_of` = the winner. The winner is
//! the best by, in order: more pixels, then source priority (`curate::BOORUS`), then the
//! older release (ancestor priority: the item already in the pool wins unless the newer
//! one is better), then the smaller key. Because this is one total order, the groups are
//! recomputed from scratch at every merge and always agree with it. The groups are found
//! by `curate::duplicates`, the finder ingest uses within a release.

use rusqlite::{params, Connection};

use crate::curate::duplicates::{parse_phash, Groups};
use crate::curate::source_rank;

struct Candidate {
    id: i64,
    was_hidden: bool,
    md5: Option<String>,
    phash: Option<u64>,
    pixels: i64,
    rank: usize,
    added_in: i64,
    key: String,
}

/// Ordering key: smaller is better.
fn order(c: &Candidate) -> (i64, usize, i64, &str) {
    (-c.pixels, c.rank, c.added_in, c.key.as_str())
}

/// What `resolve` changed.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Items hidden by this call that were visible before.
    pub newly_hidden: Vec<i64>,
    /// Items visible after this call that were hidden before.
    pub newly_visible: Vec<i64>,
}

/// Which groups to recompute.
pub enum Scope<'a> {
    /// Every group of the dataset.
    All,
    /// Only the groups of these md5 values, and these items (valid when no item of the
    /// dataset has a perceptual hash: groups are then md5 groups, and only groups whose
    /// members changed can change).
    Md5s {
        md5s: &'a [String],
        items: &'a [i64],
    },
}

/// The hidden live items of a dataset.
const HIDDEN: &str =
    "SELECT id FROM items WHERE dataset = ?1 AND duplicate_of IS NOT NULL AND removed_in IS NULL";
/// The items whose md5 starts as `?2` does (the index holds prefixes: items sharing one
/// with another md5 only widen a scope).
const SHARING_PREFIX: &str = "SELECT id FROM items
     WHERE dataset = ?1 AND substr(md5, 1, 8) = substr(?2, 1, 8) AND md5 IS NOT NULL";

/// The md5s among `md5s` whose group may need a new winner, and the items among
/// `items` that are hidden. A group of one item needs work only when that item is
/// hidden; a group of several (removed items included: the index keeps them) always.
/// Both lookups go by index.
fn narrow(
    conn: &Connection,
    ds: i64,
    md5s: &[String],
    items: &[i64],
) -> rusqlite::Result<(Vec<String>, Vec<i64>)> {
    let mut st = conn.prepare(HIDDEN)?;
    let hidden: std::collections::HashSet<i64> = st
        .query_map([ds], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut ids_of = conn.prepare(SHARING_PREFIX)?;
    let mut groups = Vec::new();
    for md5 in md5s {
        let ids: Vec<i64> = ids_of
            .query_map(params![ds, md5], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if ids.len() > 1 || ids.iter().any(|i| hidden.contains(i)) {
            groups.push(md5.clone());
        }
    }
    let items = items
        .iter()
        .copied()
        .filter(|i| hidden.contains(i))
        .collect();
    Ok((groups, items))
}

/// The columns a `Candidate` is read from, of `items` as `i`.
const CANDIDATE_COLUMNS: &str =
    "i.id, i.md5, i.phash, coalesce(i.width, 0) * coalesce(i.height, 0), \
     i.booru, i.added_in, i.key, i.duplicate_of";

fn candidate(r: &rusqlite::Row<'_>) -> rusqlite::Result<Candidate> {
    let booru: Option<String> = r.get(4).ok().flatten();
    Ok(Candidate {
        id: r.get(0)?,
        md5: md5_text(r.get_ref(1)?).map(str::to_string),
        phash: phash_value(r.get_ref(2)?),
        pixels: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
        rank: source_rank(booru.as_deref()),
        added_in: r.get(5)?,
        key: r.get(6)?,
        was_hidden: r.get::<_, Option<i64>>(7)?.is_some(),
    })
}

/// An item's md5 as a group key: non-empty text only.
fn md5_text(v: rusqlite::types::ValueRef<'_>) -> Option<&str> {
    v.as_str().ok().filter(|m| !m.is_empty())
}

fn phash_value(v: rusqlite::types::ValueRef<'_>) -> Option<u64> {
    v.as_str().ok().and_then(parse_phash)
}

/// Recomputes the duplicate groups of dataset `ds` (or those in `scope`), changing only
/// the items whose `duplicate_of` changes.
pub fn resolve(
    conn: &Connection,
    ds: i64,
    phash_distance: u32,
    scope: Scope<'_>,
) -> rusqlite::Result<Resolved> {
    let distance = phash_distance.min(crate::curate::MAX_PHASH_DISTANCE);
    let mut out = Resolved::default();
    // Hidden items of the dataset that are no longer candidates (their md5 and phash
    // went away) become visible again.
    let mut stale = conn.prepare(
        "SELECT id FROM items WHERE dataset = ?1 AND removed_in IS NULL AND duplicate_of IS NOT NULL
         AND md5 IS NULL AND phash IS NULL",
    )?;
    let stale: Vec<i64> = stale
        .query_map([ds], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut set = conn.prepare("UPDATE items SET duplicate_of = ?2 WHERE id = ?1")?;
    for id in stale {
        set.execute(params![id, Option::<i64>::None])?;
        out.newly_visible.push(id);
    }
    let candidates = match scope {
        Scope::All => grouped(conn, &mut set, ds, distance, &mut out)?,
        Scope::Md5s { md5s, items } => {
            // Narrow the md5 scope to the groups that can change, from the md5 index
            // (most touched md5s belong to one item, which then stays visible).
            let (md5s, items) = narrow(conn, ds, md5s, items)?;
            // Two indexed lookups; an OR of the two would scan every item.
            let mut st = conn.prepare(&format!(
                "SELECT {CANDIDATE_COLUMNS} FROM json_each(?2) j CROSS JOIN items i
                 ON i.dataset = ?1 AND substr(i.md5, 1, 8) = substr(j.value, 1, 8) AND i.md5 = j.value
                 WHERE i.removed_in IS NULL AND i.md5 IS NOT NULL
                 UNION
                 SELECT {CANDIDATE_COLUMNS} FROM json_each(?3) j CROSS JOIN items i ON i.id = j.value
                 WHERE i.dataset = ?1 AND i.removed_in IS NULL"
            ))?;
            let md5s = serde_json::to_string(&md5s).expect("md5s serialize");
            let items = serde_json::to_string(&items).expect("ids serialize");
            let rows = st.query_map(params![ds, md5s, items], candidate)?;
            rows.collect::<rusqlite::Result<_>>()?
        }
    };
    settle(&mut set, candidates, distance, &mut out)?;
    Ok(out)
}

/// Every candidate of the dataset, grouped compactly first: an id, a 64-bit digest of
/// the md5 and the perceptual hash an item (about 40 bytes, where a full candidate
/// with its key and md5 is 170), so ten million items fit in a few hundred megabytes.
/// Equal digests join items with equal md5s and perhaps, once in billions, two
/// without: these groups hold the exact ones. Items alone in theirs are visible (the
/// hidden ones among them are made so, into `out`); the full candidates of the others
/// are returned, read by id, for `settle` to group exactly.
fn grouped(
    conn: &Connection,
    set: &mut rusqlite::Statement<'_>,
    ds: i64,
    distance: u32,
    out: &mut Resolved,
) -> rusqlite::Result<Vec<Candidate>> {
    let mut ids: Vec<i64> = Vec::new();
    let mut hidden: Vec<bool> = Vec::new();
    let mut hashes: Vec<Option<u64>> = Vec::new();
    let mut digests: Vec<(u64, usize)> = Vec::new();
    {
        let mut st = conn.prepare(
            "SELECT id, md5, phash, duplicate_of IS NOT NULL FROM items
             WHERE dataset = ?1 AND removed_in IS NULL AND (md5 IS NOT NULL OR phash IS NOT NULL)",
        )?;
        let mut rows = st.query([ds])?;
        while let Some(r) = rows.next()? {
            let i = ids.len();
            ids.push(r.get(0)?);
            if let Some(md5) = md5_text(r.get_ref(1)?) {
                digests.push((digest(md5), i));
            }
            hashes.push(phash_value(r.get_ref(2)?));
            hidden.push(r.get(3)?);
        }
    }
    let mut groups = Groups::new(ids.len());
    groups.join_sorted(digests);
    groups.join_near(&hashes, distance);
    drop(hashes);
    let sizes = groups.sizes();
    drop(groups);
    let mut shared: Vec<i64> = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        if size > 1 {
            shared.push(ids[i]);
        } else if hidden[i] {
            set.execute(params![ids[i], Option::<i64>::None])?;
            out.newly_visible.push(ids[i]);
        }
    }
    drop((ids, hidden, sizes));
    let mut st = conn.prepare(&format!(
        "SELECT {CANDIDATE_COLUMNS} FROM json_each(?1) j CROSS JOIN items i ON i.id = j.value"
    ))?;
    let json = serde_json::to_string(&shared).expect("ids serialize");
    drop(shared);
    let rows = st.query_map([json], candidate)?;
    rows.collect()
}

/// An md5's 64-bit group key (SipHash with fixed keys: the same in every run).
fn digest(md5: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    md5.hash(&mut h);
    h.finish()
}

/// Groups `items` exactly (md5s equal, perceptual hashes within `distance`) and writes
/// each one's winner where it is hidden or its visibility changes.
fn settle(
    set: &mut rusqlite::Statement<'_>,
    items: Vec<Candidate>,
    distance: u32,
    out: &mut Resolved,
) -> rusqlite::Result<()> {
    let mut groups = Groups::new(items.len());
    groups.join_equal(
        items
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.md5.as_deref().map(|m| (i, m))),
    );
    let hashes: Vec<Option<u64>> = items.iter().map(|c| c.phash).collect();
    groups.join_near(&hashes, distance);
    let winner_of: Vec<Option<usize>> = groups
        .winners(|i| order(&items[i]))
        .into_iter()
        .enumerate()
        .map(|(i, w)| (w != i).then_some(w))
        .collect();
    for (i, c) in items.iter().enumerate() {
        let target = winner_of[i].map(|w| items[w].id);
        // Winners can change within a group while an item stays hidden: always write
        // hidden items' targets, and visibility changes are what the counts need.
        if target.is_some() || c.was_hidden {
            set.execute(params![c.id, target])?;
        }
        match (c.was_hidden, target.is_some()) {
            (false, true) => out.newly_hidden.push(c.id),
            (true, false) => out.newly_visible.push(c.id),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_goes_by_index() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::pool::Pool::open_or_create(dir.path()).unwrap();
        let plan = |sql: &str, args: &[i64]| -> String {
            pool.connection()
                .query_row(
                    &format!("EXPLAIN QUERY PLAN {sql}"),
                    rusqlite::params_from_iter(args),
                    |r| r.get(3),
                )
                .unwrap()
        };
        // Both by index; SQLite may read the rows found to check the partial indexes'
        // conditions (hidden items are few, and an md5 prefix matches about one item).
        assert!(
            plan(HIDDEN, &[1]).ends_with("INDEX items_hidden (dataset=?)"),
            "{}",
            plan(HIDDEN, &[1])
        );
        assert!(
            plan(SHARING_PREFIX, &[1, 2]).ends_with("INDEX items_by_md5 (dataset=? AND <expr>=?)"),
            "{}",
            plan(SHARING_PREFIX, &[1, 2])
        );
    }

    #[test]
    fn source_priority_ignores_punctuation_and_case() {
        assert_eq!(source_rank(Some("yandere")), 1);
        assert_eq!(source_rank(Some("Yande.re")), 1);
        assert_eq!(source_rank(Some("danbooru")), 8);
        assert_eq!(source_rank(Some("pixiv")), 9);
        assert_eq!(source_rank(None), 9);
    }
}
