//! An index of perceptual hashes for look-alike search (`seedpool mine similar --by
//! phash`): multi-index hashing. Each 64-bit hash is cut into `PARTS` parts of 16 bits,
//! and `phash_parts` holds one row per item and part, keyed by (part, value). Two hashes
//! within Hamming distance `r` agree to within `r / PARTS` bits in at least one part
//! (pigeonhole), so a search probes, in each part, every value within that many bits of
//! the query's, and compares the full hashes of the items found. Nothing scans `items`.
//!
//! A merge takes out the rows of the items it changes or removes before it writes them,
//! and adds those of the items it adds, changes or restores after. Hidden duplicates
//! keep their rows; a search skips items that are not live.

use rusqlite::{params, Connection};

use crate::curate::duplicates::parse_phash;

pub const PARTS: u32 = 4;
const BITS: u32 = 64 / PARTS;

/// The value of part `part` of a hash.
pub fn part_value(hash: u64, part: u32) -> i64 {
    ((hash >> (part * BITS)) & ((1 << BITS) - 1)) as i64
}

/// Registers `seedpool_phash(text)` (the hash as a signed 64-bit integer, its bits
/// unchanged) and `seedpool_phash_part(text, part)`.
pub fn sql_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    let flags = FunctionFlags::SQLITE_UTF8
        | FunctionFlags::SQLITE_DETERMINISTIC
        | FunctionFlags::SQLITE_INNOCUOUS;
    let hash_of = |ctx: &rusqlite::functions::Context<'_>| match ctx.get_raw(0) {
        rusqlite::types::ValueRef::Text(t) => std::str::from_utf8(t).ok().and_then(parse_phash),
        _ => None,
    };
    conn.create_scalar_function("seedpool_phash", 1, flags, move |ctx| {
        Ok(hash_of(ctx).map(|h| h as i64))
    })?;
    conn.create_scalar_function("seedpool_phash_part", 2, flags, move |ctx| {
        let part: i64 = ctx.get(1)?;
        Ok(match (hash_of(ctx), u32::try_from(part)) {
            (Some(h), Ok(p)) if p < PARTS => Some(part_value(h, p)),
            _ => None,
        })
    })
}

/// Rows of `phash_parts` for the items `items_sql` selects (a query of item ids). Each
/// item's hash is parsed once (the materialized `h`), its parts cut with integer
/// arithmetic (`>>` keeps the sign, the mask drops it).
fn rows_of(items_sql: &str) -> String {
    format!(
        "WITH h AS MATERIALIZED (
             SELECT id, seedpool_phash(phash) AS hash FROM items
             WHERE id IN ({items_sql}) AND phash IS NOT NULL)
         SELECT p.n AS part, (h.hash >> (p.n * {BITS})) & {MASK} AS value, h.id AS item,
                h.hash AS phash
         FROM h, (SELECT 0 AS n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) p
         WHERE h.hash IS NOT NULL"
    )
}

const MASK: u64 = (1 << BITS) - 1;

/// Takes the rows of the items `items_sql` selects out, by their current hashes.
pub fn unindex(conn: &Connection, items_sql: &str) -> rusqlite::Result<()> {
    conn.execute(
        &format!(
            "DELETE FROM phash_parts WHERE (part, value, item) IN
             (SELECT part, value, item FROM ({}))",
            rows_of(items_sql)
        ),
        [],
    )?;
    Ok(())
}

/// Adds the rows of the items `items_sql` selects, with their current hashes.
pub fn index(conn: &Connection, items_sql: &str) -> rusqlite::Result<()> {
    conn.execute(
        &format!(
            "INSERT OR REPLACE INTO phash_parts(part, value, item, phash)
             SELECT * FROM ({}) ORDER BY 1, 2, 3",
            rows_of(items_sql)
        ),
        [],
    )?;
    Ok(())
}

/// Every value within `bits` bits of `value` in a part.
fn probes(value: u64, bits: u32) -> Vec<u64> {
    let mut out = vec![value];
    let mut frontier = vec![(value, 0u32)];
    for _ in 0..bits {
        let mut next = Vec::new();
        for &(v, from) in &frontier {
            // Flip bits in increasing order only, so each set of flips comes once.
            for b in from..BITS {
                let w = v ^ (1 << b);
                out.push(w);
                next.push((w, b + 1));
            }
        }
        frontier = next;
    }
    out
}

/// A live item found near a hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Near {
    pub item: i64,
    pub distance: u32,
}

/// The items whose indexed hash is within `radius` bits of `hash`, nearest first, then
/// by id. Hidden duplicates keep their rows: callers choose which items they show.
pub fn near(conn: &Connection, hash: u64, radius: u32) -> rusqlite::Result<Vec<Near>> {
    let per_part = radius / PARTS;
    let mut st =
        conn.prepare_cached("SELECT item, phash FROM phash_parts WHERE part = ?1 AND value = ?2")?;
    let mut found: Vec<Near> = Vec::new();
    for part in 0..PARTS {
        for v in probes(part_value(hash, part) as u64, per_part) {
            let rows = st.query_map(params![part, v as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (item, other) = row?;
                let distance = (hash ^ other as u64).count_ones();
                if distance <= radius {
                    found.push(Near { item, distance });
                }
            }
        }
    }
    found.sort_unstable_by_key(|n| (n.item, n.distance));
    found.dedup_by_key(|n| n.item);
    found.sort_unstable_by_key(|n| (n.distance, n.item));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_every_value_within_the_bits_once() {
        let p = probes(0b1010, 2);
        // 1 + 16 + 120 values.
        assert_eq!(p.len(), 137);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 137);
        assert!(p
            .iter()
            .all(|v| (v ^ 0b1010).count_ones() <= 2 && *v < 1 << 16));
        assert_eq!(probes(7, 0), [7]);
    }

    #[test]
    fn parts_cover_the_hash() {
        let h = 0x0123_4567_89ab_cdefu64;
        let parts: Vec<i64> = (0..PARTS).map(|p| part_value(h, p)).collect();
        assert_eq!(parts, [0xcdef, 0x89ab, 0x4567, 0x0123]);
    }
}
