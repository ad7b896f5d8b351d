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
//!
//! A merge tallies both sides in memory, in one `Tally`, and writes only the net change
//! of each key at the end: an item whose record changed but whose tags did not touches
//! its tags' score sums and nothing else, and SQLite never sorts the links for a GROUP
//! BY.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use rusqlite::{params, Connection};

/// A multiply-and-rotate hasher for the tallies' small integer keys: millions of
/// lookups per merge, where SipHash's protection against chosen keys buys nothing (the
/// keys are the pool's own ids).
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A HashMap with `IdHasher`.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

pub fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "DROP TABLE IF EXISTS temp.contrib_ids;
         CREATE TEMP TABLE contrib_ids(id INTEGER PRIMARY KEY);",
    )
}

#[derive(Default)]
struct Sums {
    items: i64,
    score: i64,
    favs: i64,
}

/// What one item brings to the counts, apart from its tags.
#[derive(Clone, Copy, Debug)]
pub struct Counted {
    pub dataset: i64,
    pub year: i64,
    pub portrait: bool,
    pub score: i64,
    pub favs: i64,
}

/// SQL columns giving a `Counted` from an `items` row named `i`, in its field order.
pub const COUNTED_COLUMNS: &str = "i.dataset, coalesce(i.year, 0), \
     coalesce(i.faces = 1 AND i.composition IN ('close-up', 'portrait'), 0), \
     coalesce(i.score, 0), coalesce(i.favs, 0)";

impl Counted {
    /// Reads the `COUNTED_COLUMNS` starting at column `at`.
    pub fn read(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Self> {
        Ok(Self {
            dataset: r.get(at)?,
            year: r.get(at + 1)?,
            portrait: r.get::<_, i64>(at + 2)? != 0,
            score: r.get(at + 3)?,
            favs: r.get(at + 4)?,
        })
    }
}

const CATEGORIES: [&str; 5] = ["artist", "copyright", "character", "general", "meta"];
const ARTIST: u8 = 0;
const COPYRIGHT: u8 = 1;
const CHARACTER: u8 = 2;

/// Net count changes, keyed by interned canonical names and categories.
#[derive(Default)]
pub struct Tally {
    canon: Vec<String>,
    canon_ids: HashMap<String, u32>,
    other_categories: Vec<String>,
    /// Pool tag id to (canonical name, category), loaded up to `loaded_up_to`.
    tag_names: IdMap<i64, (u32, u8)>,
    loaded_up_to: i64,
    tags: IdMap<(i64, u32, u8, i64, i64), Sums>,
    pairs: IdMap<(i64, u8, u32, u32), i64>,
    categories: IdMap<(i64, u8), i64>,
    /// Net change of live items per (dataset, pool tag id), and per dataset: what a
    /// merge records in `tag_deltas` and `release_live`.
    tag_ids: IdMap<(i64, i64), i64>,
    live: IdMap<i64, i64>,
    /// Scratch list of one item's (category, name).
    scratch: Vec<(u8, u32)>,
}

impl Tally {
    pub fn new() -> Self {
        Self::default()
    }

    /// Learns the names of the pool's tags created since the last call (a merge only
    /// adds tags; their canonical names do not change inside it).
    pub fn load_tags(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let mut st = conn.prepare_cached(
            "SELECT id, coalesce(canonical, name), category FROM tags WHERE id > ?1 ORDER BY id",
        )?;
        let mut rows = st.query([self.loaded_up_to])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let name = r.get_ref(1)?.as_str()?;
            let category = r.get_ref(2)?.as_str()?;
            let n = self.intern(name);
            let c = self.category_code(category);
            self.tag_names.insert(id, (n, c));
            self.loaded_up_to = id;
        }
        Ok(())
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&n) = self.canon_ids.get(name) {
            return n;
        }
        self.canon.push(name.to_string());
        let n = (self.canon.len() - 1) as u32;
        self.canon_ids.insert(name.to_string(), n);
        n
    }

    fn category_code(&mut self, category: &str) -> u8 {
        if let Some(p) = CATEGORIES.iter().position(|k| *k == category) {
            return p as u8;
        }
        let p = match self.other_categories.iter().position(|k| k == category) {
            Some(p) => p,
            None => {
                self.other_categories.push(category.to_string());
                self.other_categories.len() - 1
            }
        };
        (CATEGORIES.len() + p) as u8
    }

    fn category_name(&self, c: u8) -> &str {
        let c = c as usize;
        CATEGORIES
            .get(c)
            .copied()
            .unwrap_or_else(|| &self.other_categories[c - CATEGORIES.len()])
    }

    /// Adds (`sign` = 1) or takes out (-1) one item with these pool tag ids (loaded by
    /// `load_tags`; unknown ids are skipped).
    pub fn item(&mut self, item: Counted, tags: impl IntoIterator<Item = i64>, sign: i64) {
        let mut set = std::mem::take(&mut self.scratch);
        set.clear();
        let ds = item.dataset;
        *self.live.entry(ds).or_default() += sign;
        for t in tags {
            // An item's links are distinct (the primary key of `item_tags`).
            *self.tag_ids.entry((ds, t)).or_default() += sign;
            if let Some(&(name, cat)) = self.tag_names.get(&t) {
                set.push((cat, name));
            }
        }
        set.sort_unstable();
        set.dedup();
        // Sorted by category: each category's first tag counts the item once for it.
        let mut last_category = None;
        for &(cat, name) in &set {
            // Only characters are ranked by year and by portraits; other categories
            // are counted once per tag, which keeps the table small.
            let (year, portrait) = if cat == CHARACTER {
                (item.year, i64::from(item.portrait))
            } else {
                (0, 0)
            };
            let s = self
                .tags
                .entry((ds, name, cat, year, portrait))
                .or_default();
            s.items += sign;
            s.score += sign * item.score;
            s.favs += sign * item.favs;
            if last_category != Some(cat) {
                *self.categories.entry((ds, cat)).or_default() += sign;
                last_category = Some(cat);
            }
        }
        // Artists and characters pair with copyrights.
        for &(cat, a) in set.iter().filter(|(c, _)| *c == ARTIST || *c == CHARACTER) {
            for &(_, b) in set.iter().filter(|(c, _)| *c == COPYRIGHT) {
                *self.pairs.entry((ds, cat, a, b)).or_default() += sign;
            }
        }
        self.scratch = set;
    }

    /// Adds one item a merge has just linked, whose tags it may just have created:
    /// their names are learnt first.
    pub fn linked_item(
        &mut self,
        conn: &Connection,
        item: Counted,
        tags: &[i64],
    ) -> rusqlite::Result<()> {
        if tags.iter().any(|&t| t > self.loaded_up_to) {
            self.load_tags(conn)?;
        }
        self.item(item, tags.iter().copied(), 1);
        Ok(())
    }

    /// Adds or takes out the items in `temp.contrib_ids` as they are now, then empties
    /// `contrib_ids`.
    pub fn contrib_ids(&mut self, conn: &Connection, sign: i64) -> rusqlite::Result<()> {
        self.contrib_ids_seen(conn, sign, |_, _, _| {})
    }

    /// `contrib_ids`, also showing `seen` each item's id, md5 and tag ids, so a merge
    /// reads them once (a changed item's old links and md5 are needed again later).
    pub fn contrib_ids_seen(
        &mut self,
        conn: &Connection,
        sign: i64,
        mut seen: impl FnMut(i64, Option<&str>, &[i64]),
    ) -> rusqlite::Result<()> {
        self.load_tags(conn)?;
        let mut st = conn.prepare(&format!(
            "SELECT c.id, {COUNTED_COLUMNS}, i.md5, it.tag
             FROM contrib_ids c JOIN items i ON i.id = c.id LEFT JOIN item_tags it ON it.item = c.id
             ORDER BY c.id"
        ))?;
        let mut rows = st.query([])?;
        let mut current: Option<(i64, Counted, Option<String>)> = None;
        let mut tags: Vec<i64> = Vec::new();
        let mut flush =
            |this: &mut Self, item: Option<(i64, Counted, Option<String>)>, tags: &mut Vec<i64>| {
                if let Some((id, counted, md5)) = item {
                    seen(id, md5.as_deref(), tags);
                    this.item(counted, tags.drain(..), sign);
                }
            };
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            if current.as_ref().map(|c| c.0) != Some(id) {
                flush(self, current.take(), &mut tags);
                current = Some((id, Counted::read(r, 1)?, r.get(6)?));
            }
            if let Some(tag) = r.get(7)? {
                tags.push(tag);
            }
        }
        flush(self, current.take(), &mut tags);
        drop(rows);
        conn.execute_batch("DELETE FROM temp.contrib_ids;")
    }

    /// Writes the net changes: one upsert per key that changed, in key order (B-tree
    /// appends, not jumps), written many rows per statement; then the keys whose count
    /// fell are deleted where it reached zero (a count that grows or keeps its number of
    /// items cannot reach zero: a changed score alone is an upsert and nothing more).
    pub fn write(self, conn: &Connection) -> rusqlite::Result<()> {
        let mut add_tag = super::RowBatch::new(
            conn,
            "INSERT INTO tag_counts(dataset, canonical, category, year, portrait, items, score, favs)",
            8,
            "ON CONFLICT(dataset, canonical, category, year, portrait) DO UPDATE SET
                items = items + excluded.items, score = score + excluded.score, favs = favs + excluded.favs",
        )?;
        let mut tags: Vec<_> = self
            .tags
            .iter()
            .filter(|(_, s)| s.items != 0 || s.score != 0 || s.favs != 0)
            .collect();
        tags.sort_by_cached_key(|(k, _)| {
            (
                k.0,
                self.canon[k.1 as usize].as_str(),
                self.category_name(k.2),
                k.3,
                k.4,
            )
        });
        let mut fell = Vec::new();
        for ((ds, name, cat, year, portrait), s) in tags {
            let (name, cat) = (&self.canon[*name as usize], self.category_name(*cat));
            if s.items < 0 {
                fell.push((*ds, name, cat, *year, *portrait));
            }
            add_tag.push([
                (*ds).into(),
                name.clone().into(),
                cat.to_string().into(),
                (*year).into(),
                (*portrait).into(),
                s.items.into(),
                s.score.into(),
                s.favs.into(),
            ])?;
        }
        add_tag.finish()?;
        let mut del_tag = conn.prepare(
            "DELETE FROM tag_counts
             WHERE dataset = ?1 AND canonical = ?2 AND category = ?3 AND year = ?4 AND portrait = ?5 AND items = 0",
        )?;
        for key in fell {
            del_tag.execute(params![key.0, key.1, key.2, key.3, key.4])?;
        }
        let mut add_pair = super::RowBatch::new(
            conn,
            "INSERT INTO pair_counts(dataset, kind, a, b, items)",
            5,
            "ON CONFLICT(dataset, kind, a, b) DO UPDATE SET items = items + excluded.items",
        )?;
        let kind = |cat: u8| if cat == ARTIST { 1 } else { 2 };
        let ids = self.canonical_ids(conn)?;
        let mut pairs: Vec<_> = self
            .pairs
            .iter()
            .filter(|(_, n)| **n != 0)
            .map(|(&(ds, cat, a, b), &n)| ((ds, kind(cat), ids[a as usize], ids[b as usize]), n))
            .collect();
        pairs.sort_unstable();
        for &((ds, kind, a, b), n) in &pairs {
            add_pair.push([ds.into(), kind.into(), a.into(), b.into(), n.into()])?;
        }
        add_pair.finish()?;
        let mut del_pair = conn.prepare(
            "DELETE FROM pair_counts WHERE dataset = ?1 AND kind = ?2 AND a = ?3 AND b = ?4 AND items = 0",
        )?;
        for ((ds, kind, a, b), _) in pairs.into_iter().filter(|(_, n)| *n < 0) {
            del_pair.execute(params![ds, kind, a, b])?;
        }
        let mut up_cat = conn.prepare(
            "INSERT INTO category_counts(dataset, category, items) VALUES (?1, ?2, ?3)
             ON CONFLICT(dataset, category) DO UPDATE SET items = items + excluded.items",
        )?;
        for ((ds, cat), n) in self.categories.iter().filter(|(_, n)| **n != 0) {
            up_cat.execute(params![ds, self.category_name(*cat), n])?;
        }
        conn.execute("DELETE FROM category_counts WHERE items = 0", [])?;
        Ok(())
    }
}

impl Tally {
    /// Records what this tally changed as release `release`'s deltas (see
    /// `tag_deltas`): the net change of each tag id's live items, and the live items
    /// of the release's dataset and of each other one it touched after the change.
    pub fn write_release(
        &self,
        conn: &Connection,
        release: i64,
        dataset: i64,
    ) -> rusqlite::Result<()> {
        let mut rows: Vec<_> = self
            .tag_ids
            .iter()
            .filter(|(_, n)| **n != 0)
            .map(|(&(ds, tag), &n)| (ds, tag, n))
            .collect();
        rows.sort_unstable();
        let mut add = super::RowBatch::new(
            conn,
            "INSERT INTO tag_deltas(release, dataset, tag, items)",
            4,
            "",
        )?;
        for (ds, tag, n) in rows {
            add.push([release.into(), ds.into(), tag.into(), n.into()])?;
        }
        add.finish()?;
        let mut live = conn.prepare(
            "INSERT INTO release_live(dataset, release, items)
             SELECT ?1, ?2, coalesce((SELECT items FROM release_live WHERE dataset = ?1
                                      ORDER BY release DESC LIMIT 1), 0) + ?3",
        )?;
        let mut datasets: Vec<_> = self.live.iter().map(|(&d, &n)| (d, n)).collect();
        if !self.live.contains_key(&dataset) {
            datasets.push((dataset, 0));
        }
        datasets.sort_unstable();
        for (ds, n) in datasets {
            live.execute(params![ds, release, n])?;
        }
        Ok(())
    }

    /// The `canonical_names` id of each canonical name (by its index in `canon`) that a
    /// changed pair uses, adding the names the table lacks; 0 for the others.
    fn canonical_ids(&self, conn: &Connection) -> rusqlite::Result<Vec<i64>> {
        let mut known: HashMap<String, i64> = HashMap::new();
        {
            let mut st = conn.prepare("SELECT name, id FROM canonical_names")?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                known.insert(r.get(0)?, r.get(1)?);
            }
        }
        let mut add = conn.prepare("INSERT INTO canonical_names(name) VALUES (?1) RETURNING id")?;
        let mut ids = vec![0; self.canon.len()];
        for (&(_, _, a, b), _) in self.pairs.iter().filter(|(_, n)| **n != 0) {
            for i in [a as usize, b as usize] {
                if ids[i] == 0 {
                    let name = &self.canon[i];
                    ids[i] = match known.get(name) {
                        Some(&id) => id,
                        None => {
                            let id: i64 = add.query_row([name], |r| r.get(0))?;
                            known.insert(name.clone(), id);
                            id
                        }
                    };
                }
            }
        }
        Ok(ids)
    }
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
    let mut tally = Tally::new();
    tally.contrib_ids(conn, 1)?;
    tally.write(conn)
}

#[cfg(test)]
mod tests {
    use crate::testing::{record, Fixture};

    fn counts(conn: &rusqlite::Connection) -> Vec<String> {
        let mut all = Vec::new();
        for table in ["tag_counts", "pair_counts", "category_counts"] {
            let mut st = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
            let n = st.column_count();
            let rows = st
                .query_map([], |r| {
                    let cells: Vec<String> = (0..n)
                        .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                        .collect();
                    Ok(format!("{table}: {}", cells.join(" ")))
                })
                .unwrap();
            all.extend(rows.map(Result::unwrap));
        }
        all.sort();
        all
    }

    #[test]
    fn counts_kept_by_merges_equal_counts_rebuilt_from_the_items() {
        let f = Fixture::new();
        let item = |post: u64, character: &str, series: &str, score: i64| {
            let mut r = record(
                "danbooru",
                post,
                &[
                    ("character", &[character]),
                    ("copyright", &[series]),
                    ("artist", &["ann"]),
                ],
            );
            r["score"] = score.into();
            r["posted"] = "2024-01-01T00:00:00Z".into();
            r
        };
        let v1 = [
            ("k1", item(1, "miku", "vocaloid", 3)),
            ("k2", item(2, "rin", "vocaloid", 4)),
            ("k3", item(3, "reimu", "touhou", 5)),
        ];
        f.publish("1", None, &v1);
        f.merge("1");
        // k2's tags change, k3 goes, k4 arrives, k1's score changes.
        let v2 = [
            ("k1", item(1, "miku", "vocaloid", 30)),
            ("k2", item(2, "rin", "touhou", 4)),
            ("k4", item(4, "miku", "vocaloid", 1)),
        ];
        f.publish("2", Some("1"), &v2);
        f.merge("2");

        let pool = crate::pool::Pool::open_or_create(&f.pool).unwrap();
        let kept = counts(pool.connection());
        assert!(
            kept.iter()
                .any(|r| r.contains("\"miku\"") && r.contains("Integer(2)")),
            "{kept:#?}"
        );
        super::rebuild(pool.connection()).unwrap();
        assert_eq!(counts(pool.connection()), kept);

        // The deltas of both merges add up to each tag's live items, and the live items
        // after each merge are recorded.
        let rows = |sql: &str| -> Vec<(i64, i64)> {
            let conn = pool.connection();
            let mut st = conn.prepare(sql).unwrap();
            let r = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
            r.map(Result::unwrap).collect()
        };
        assert_eq!(
            rows("SELECT tag, sum(items) FROM tag_deltas GROUP BY tag HAVING sum(items) != 0 ORDER BY tag"),
            rows("SELECT it.tag, count(*) FROM item_tags it JOIN live l ON l.id = it.item GROUP BY it.tag ORDER BY it.tag")
        );
        assert_eq!(
            rows("SELECT release, items FROM release_live ORDER BY release"),
            [(1, 3), (2, 3)]
        );
    }
}
