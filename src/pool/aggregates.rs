//! Counts over live items that the hit-parades read: per tag and year (`tag_counts`),
//! per artist or character and copyright (`pair_counts`), per tag category
//! (`category_counts`).
//!
//! They are kept exact by every merge, inside its transaction: the contributions of
//! items whose counted state may change are subtracted before the change and added
//! after it. An item counts when it is live (not removed, not a hidden duplicate), with
//! its tags' canonical names, its year and whether it is a portrait (one face, close-up
//! or portrait composition). `rebuild` recomputes everything, after a tag import changes
//! canonical names.

use rusqlite::{params, Connection};

/// Item ids whose contributions are added or subtracted go into this temp table.
pub const IDS: &str = "temp.contrib_ids";

pub fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "DROP TABLE IF EXISTS temp.contrib_ids;
         CREATE TEMP TABLE contrib_ids(id INTEGER PRIMARY KEY);",
    )
}

/// Adds (`sign` = 1) or subtracts (-1) the contributions of the items in `contrib_ids`
/// as they are now, then empties `contrib_ids`.
pub fn apply(conn: &Connection, sign: i64) -> rusqlite::Result<()> {
    conn.execute_batch(
        "DROP TABLE IF EXISTS temp.contrib_tags;
         CREATE TEMP TABLE contrib_tags AS
            SELECT DISTINCT c.id AS id, i.dataset AS dataset, t.canonical AS canonical, t.category AS category
            FROM contrib_ids c JOIN items i ON i.id = c.id
            JOIN item_tags it ON it.item = c.id JOIN tags t ON t.id = it.tag;
         CREATE INDEX temp.contrib_tags_by_id ON contrib_tags(id, category);",
    )?;
    conn.execute(
        "INSERT INTO tag_counts(dataset, canonical, category, year, portrait, items, score, favs)
         SELECT x.dataset, x.canonical, x.category, coalesce(i.year, 0),
                coalesce(i.faces = 1 AND i.composition IN ('close-up', 'portrait'), 0),
                ?1 * count(*), ?1 * coalesce(sum(i.score), 0), ?1 * coalesce(sum(i.favs), 0)
         FROM contrib_tags x JOIN items i ON i.id = x.id
         WHERE true
         GROUP BY 1, 2, 3, 4, 5
         ON CONFLICT(dataset, canonical, category, year, portrait) DO UPDATE SET
            items = items + excluded.items, score = score + excluded.score, favs = favs + excluded.favs",
        params![sign],
    )?;
    conn.execute(
        "INSERT INTO pair_counts(dataset, kind, a, b, items)
         SELECT a.dataset, a.category || '-copyright', a.canonical, b.canonical, ?1 * count(*)
         FROM contrib_tags a JOIN contrib_tags b ON b.id = a.id AND b.category = 'copyright'
         WHERE a.category IN ('artist', 'character')
         GROUP BY 1, 2, 3, 4
         ON CONFLICT(dataset, kind, a, b) DO UPDATE SET items = items + excluded.items",
        params![sign],
    )?;
    conn.execute(
        "INSERT INTO category_counts(dataset, category, items)
         SELECT dataset, category, ?1 * count(DISTINCT id) FROM contrib_tags WHERE true GROUP BY 1, 2
         ON CONFLICT(dataset, category) DO UPDATE SET items = items + excluded.items",
        params![sign],
    )?;
    conn.execute_batch(
        "DELETE FROM tag_counts WHERE items = 0;
         DELETE FROM pair_counts WHERE items = 0;
         DELETE FROM category_counts WHERE items = 0;
         DROP TABLE temp.contrib_tags;
         DELETE FROM temp.contrib_ids;",
    )
}

/// Recomputes every count from the live items.
pub fn rebuild(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "DELETE FROM tag_counts; DELETE FROM pair_counts; DELETE FROM category_counts;",
    )?;
    prepare(conn)?;
    conn.execute(
        "INSERT INTO temp.contrib_ids(id) SELECT id FROM items WHERE removed_in IS NULL AND duplicate_of IS NULL",
        [],
    )?;
    apply(conn, 1)
}
