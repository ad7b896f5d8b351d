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
//! Contributions are counted in memory from one ordered pass over the items' tag links
//! (integers only), then written as one upsert per distinct key: far cheaper than
//! letting SQLite sort every link for each GROUP BY.

use std::collections::{BTreeSet, HashMap};

use rusqlite::{params, Connection};

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

/// Adds (`sign` = 1) or subtracts (-1) the contributions of the items in `contrib_ids`
/// as they are now, then empties `contrib_ids`.
pub fn apply(conn: &Connection, sign: i64) -> rusqlite::Result<()> {
    let timings = super::Timings::new(format!("      counts ({sign:+})"));
    let step = |what: &str| timings.step(what);
    // Tag ids to their canonical name and category, shared by every row.
    let mut names: HashMap<i64, (u32, u8)> = HashMap::new();
    let mut canon: Vec<String> = Vec::new();
    let mut canon_ids: HashMap<String, u32> = HashMap::new();
    let categories = ["artist", "copyright", "character", "general", "meta"];
    let mut other_categories: Vec<String> = Vec::new();
    {
        // All of the pool's tags: far fewer rows than the links to them.
        let mut st = conn.prepare("SELECT id, coalesce(canonical, name), category FROM tags")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let (id, name, category): (i64, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let n = *canon_ids.entry(name.clone()).or_insert_with(|| {
                canon.push(name);
                (canon.len() - 1) as u32
            });
            let c = match categories.iter().position(|k| *k == category) {
                Some(p) => p as u8,
                None => {
                    let p = other_categories
                        .iter()
                        .position(|k| *k == category)
                        .unwrap_or_else(|| {
                            other_categories.push(category.clone());
                            other_categories.len() - 1
                        });
                    (categories.len() + p) as u8
                }
            };
            names.insert(id, (n, c));
        }
    }
    let category_name = |c: u8| -> &str {
        let c = c as usize;
        if c < categories.len() {
            categories[c]
        } else {
            &other_categories[c - categories.len()]
        }
    };

    step("tag names");
    let mut tag_counts: HashMap<(i64, u32, u8, i64, i64), Sums> = HashMap::new();
    let mut pair_counts: HashMap<(i64, u8, u32, u32), i64> = HashMap::new();
    let mut category_counts: HashMap<(i64, u8), i64> = HashMap::new();
    {
        let mut st = conn.prepare(
            "SELECT c.id, i.dataset, coalesce(i.year, 0),
                    coalesce(i.faces = 1 AND i.composition IN ('close-up', 'portrait'), 0),
                    coalesce(i.score, 0), coalesce(i.favs, 0), it.tag
             FROM contrib_ids c JOIN items i ON i.id = c.id JOIN item_tags it ON it.item = c.id
             ORDER BY c.id",
        )?;
        let mut rows = st.query([])?;
        let mut current: Option<(i64, i64, i64, i64, i64, i64)> = None;
        let mut tags: BTreeSet<(u8, u32)> = BTreeSet::new();
        let mut flush = |item: Option<(i64, i64, i64, i64, i64, i64)>,
                         tags: &mut BTreeSet<(u8, u32)>| {
            let Some((_, ds, year, portrait, score, favs)) = item else {
                return;
            };
            let mut seen_categories = BTreeSet::new();
            for &(cat, name) in tags.iter() {
                // Only characters are ranked by year and by portraits; other categories
                // are counted once per tag, which keeps the table small.
                let (year, portrait) = if cat == 2 { (year, portrait) } else { (0, 0) };
                let s = tag_counts
                    .entry((ds, name, cat, year, portrait))
                    .or_default();
                s.items += 1;
                s.score += score;
                s.favs += favs;
                seen_categories.insert(cat);
            }
            for cat in seen_categories {
                *category_counts.entry((ds, cat)).or_default() += 1;
            }
            // Categories 0 (artist) and 2 (character) pair with 1 (copyright).
            for &(cat, a) in tags.iter().filter(|(c, _)| *c == 0 || *c == 2) {
                for &(_, b) in tags.iter().filter(|(c, _)| *c == 1) {
                    *pair_counts.entry((ds, cat, a, b)).or_default() += 1;
                }
            }
            tags.clear();
        };
        while let Some(r) = rows.next()? {
            let row: (i64, i64, i64, i64, i64, i64) = (
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            );
            if current.map(|c| c.0) != Some(row.0) {
                flush(current, &mut tags);
                current = Some(row);
            }
            if let Some(&(name, cat)) = names.get(&r.get::<_, i64>(6)?) {
                tags.insert((cat, name));
            }
        }
        flush(current, &mut tags);
    }

    step("tallied");
    // Each upsert returns the new count; a key that reaches zero is deleted there and
    // then (no sweep over the whole table).
    let mut up_tag = conn.prepare(
        "INSERT INTO tag_counts(dataset, canonical, category, year, portrait, items, score, favs)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(dataset, canonical, category, year, portrait) DO UPDATE SET
            items = items + excluded.items, score = score + excluded.score, favs = favs + excluded.favs
         RETURNING items",
    )?;
    let mut add_tag = conn.prepare(
        "INSERT INTO tag_counts(dataset, canonical, category, year, portrait, items, score, favs)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(dataset, canonical, category, year, portrait) DO UPDATE SET
            items = items + excluded.items, score = score + excluded.score, favs = favs + excluded.favs",
    )?;
    let mut del_tag = conn.prepare(
        "DELETE FROM tag_counts WHERE dataset = ?1 AND canonical = ?2 AND category = ?3 AND year = ?4 AND portrait = ?5",
    )?;
    // Written in key order: B-tree inserts then append instead of jumping around.
    let mut tag_counts: Vec<_> = tag_counts.into_iter().collect();
    tag_counts.sort_by(|a, b| {
        let key = |k: &(i64, u32, u8, i64, i64)| {
            (
                k.0,
                canon[k.1 as usize].as_str(),
                category_name(k.2),
                k.3,
                k.4,
            )
        };
        key(&a.0).cmp(&key(&b.0))
    });
    for ((ds, name, cat, year, portrait), s) in &tag_counts {
        let args = params![
            ds,
            canon[*name as usize],
            category_name(*cat),
            year,
            portrait,
            sign * s.items,
            sign * s.score,
            sign * s.favs
        ];
        // Adding never brings a count to zero: no need to read it back.
        if sign > 0 {
            add_tag.execute(args)?;
            continue;
        }
        let left: i64 = up_tag.query_row(args, |r| r.get(0))?;
        if left == 0 {
            del_tag.execute(params![
                ds,
                canon[*name as usize],
                category_name(*cat),
                year,
                portrait
            ])?;
        }
    }
    let mut up_pair = conn.prepare(
        "INSERT INTO pair_counts(dataset, kind, a, b, items) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(dataset, kind, a, b) DO UPDATE SET items = items + excluded.items RETURNING items",
    )?;
    let mut add_pair = conn.prepare(
        "INSERT INTO pair_counts(dataset, kind, a, b, items) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(dataset, kind, a, b) DO UPDATE SET items = items + excluded.items",
    )?;
    let mut del_pair = conn.prepare(
        "DELETE FROM pair_counts WHERE dataset = ?1 AND kind = ?2 AND a = ?3 AND b = ?4",
    )?;
    let mut pair_counts: Vec<_> = pair_counts.into_iter().collect();
    pair_counts.sort_by(|x, y| {
        let key = |k: &(i64, u8, u32, u32)| {
            (
                k.0,
                k.1,
                canon[k.2 as usize].as_str(),
                canon[k.3 as usize].as_str(),
            )
        };
        key(&x.0).cmp(&key(&y.0))
    });
    for ((ds, cat, a, b), n) in &pair_counts {
        let kind = if *cat == 0 {
            "artist-copyright"
        } else {
            "character-copyright"
        };
        let (a, b) = (&canon[*a as usize], &canon[*b as usize]);
        if sign > 0 {
            add_pair.execute(params![ds, kind, a, b, n])?;
            continue;
        }
        let left: i64 = up_pair.query_row(params![ds, kind, a, b, sign * n], |r| r.get(0))?;
        if left == 0 {
            del_pair.execute(params![ds, kind, a, b])?;
        }
    }
    step("tags and pairs written");
    let mut up_cat = conn.prepare(
        "INSERT INTO category_counts(dataset, category, items) VALUES (?1, ?2, ?3)
         ON CONFLICT(dataset, category) DO UPDATE SET items = items + excluded.items",
    )?;
    for ((ds, cat), n) in &category_counts {
        up_cat.execute(params![ds, category_name(*cat), sign * n])?;
    }
    conn.execute("DELETE FROM category_counts WHERE items = 0", [])?;
    conn.execute_batch("DELETE FROM temp.contrib_ids;")
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
