//! The pool database schema and its migrations. docs/pool.md documents every table.
//!
//! `user_version` holds the pool format version. Opening a pool applies the migrations
//! it lacks, each in its own transaction; a pool from a newer seedpool is refused
//! rather than guessed at.

/// Migrations, in order: migration `i` takes a pool from format `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 0 -> 1: releases, shards, items with provenance, members, tags. (Index
    // definitions repeated in BULK_INDEXES must stay identical.)
    "
CREATE TABLE datasets(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    public_key TEXT NOT NULL,
    head_release INTEGER
);
CREATE TABLE releases(
    id INTEGER PRIMARY KEY,
    dataset INTEGER NOT NULL REFERENCES datasets(id),
    version TEXT NOT NULL,
    parent_version TEXT,
    manifest_blake3 TEXT NOT NULL,
    created TEXT NOT NULL,
    merged_at TEXT NOT NULL,
    items INTEGER NOT NULL DEFAULT 0,
    added INTEGER NOT NULL DEFAULT 0,
    changed INTEGER NOT NULL DEFAULT 0,
    removed INTEGER NOT NULL DEFAULT 0,
    UNIQUE(dataset, version)
);
CREATE TABLE shards(
    id TEXT PRIMARY KEY,
    dataset INTEGER NOT NULL REFERENCES datasets(id),
    size INTEGER NOT NULL,
    items INTEGER NOT NULL,
    volume TEXT NOT NULL,
    present INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE release_shards(
    release INTEGER NOT NULL REFERENCES releases(id),
    shard TEXT NOT NULL REFERENCES shards(id),
    PRIMARY KEY(release, shard)
) WITHOUT ROWID;
CREATE TABLE items(
    id INTEGER PRIMARY KEY,
    dataset INTEGER NOT NULL REFERENCES datasets(id),
    key TEXT NOT NULL,
    shard TEXT NOT NULL,
    hash TEXT NOT NULL,
    volume TEXT NOT NULL,
    record TEXT,
    booru TEXT,
    post_id INTEGER,
    md5 TEXT,
    rating TEXT,
    score INTEGER,
    favs INTEGER,
    posted TEXT,
    year INTEGER,
    width INTEGER,
    height INTEGER,
    bytes INTEGER,
    quality REAL,
    faces INTEGER,
    composition TEXT,
    phash TEXT,
    added_in INTEGER NOT NULL REFERENCES releases(id),
    changed_in INTEGER REFERENCES releases(id),
    removed_in INTEGER REFERENCES releases(id),
    duplicate_of INTEGER REFERENCES items(id),
    UNIQUE(dataset, key)
);
CREATE INDEX items_by_md5 ON items(dataset, md5) WHERE md5 IS NOT NULL;
CREATE INDEX items_by_shard ON items(shard);
CREATE INDEX items_by_year ON items(year, booru);
CREATE TABLE members(
    item INTEGER NOT NULL REFERENCES items(id),
    ext TEXT NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    blake3 TEXT NOT NULL,
    PRIMARY KEY(item, ext)
) WITHOUT ROWID;
CREATE TABLE tags(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    source TEXT NOT NULL,
    UNIQUE(name, category, source)
);
CREATE TABLE item_tags(
    item INTEGER NOT NULL REFERENCES items(id),
    tag INTEGER NOT NULL REFERENCES tags(id),
    PRIMARY KEY(item, tag)
) WITHOUT ROWID;
CREATE INDEX item_tags_by_tag ON item_tags(tag, item);
CREATE TABLE provenance(
    item INTEGER NOT NULL REFERENCES items(id),
    release INTEGER NOT NULL REFERENCES releases(id),
    action TEXT NOT NULL CHECK(action IN ('added', 'changed', 'removed', 'restored')),
    hash TEXT,
    PRIMARY KEY(item, release)
) WITHOUT ROWID;
CREATE TABLE item_history(
    item INTEGER NOT NULL REFERENCES items(id),
    release INTEGER NOT NULL REFERENCES releases(id),
    hash TEXT NOT NULL,
    shard TEXT NOT NULL,
    record TEXT,
    PRIMARY KEY(item, release)
) WITHOUT ROWID;
CREATE TABLE tag_info(
    name TEXT PRIMARY KEY,
    category TEXT NOT NULL,
    danbooru_id INTEGER,
    post_count INTEGER,
    franchise TEXT,
    mal_id INTEGER,
    mal_name TEXT,
    mal_count INTEGER
) WITHOUT ROWID;
CREATE TABLE tag_aliases(
    alias TEXT PRIMARY KEY,
    name TEXT NOT NULL
) WITHOUT ROWID;
CREATE VIEW live AS
    SELECT * FROM items WHERE removed_in IS NULL AND duplicate_of IS NULL;
CREATE VIEW item_tag_names AS
    SELECT it.item AS item, t.name AS tag, t.category AS category, t.source AS source
    FROM item_tags it JOIN tags t ON t.id = it.tag;
",
    // 1 -> 2: one canonical name per tag across sources (see `tags`).
    "
ALTER TABLE tags ADD COLUMN canonical TEXT;
UPDATE tags SET canonical = coalesce(
    (SELECT a.name FROM tag_aliases a WHERE a.alias = lower(replace(trim(tags.name), ' ', '_'))),
    lower(replace(trim(tags.name), ' ', '_')));
CREATE INDEX tags_by_canonical ON tags(canonical, category);
DROP VIEW item_tag_names;
CREATE VIEW item_tag_names AS
    SELECT it.item AS item, t.canonical AS tag, t.name AS written, t.category AS category, t.source AS source
    FROM item_tags it JOIN tags t ON t.id = it.tag;
",
    // 2 -> 3: counts over live items kept up to date by every merge (see `aggregates`),
    // so hit-parades read thousands of rows instead of every item's tags; and indexes
    // over live items for per-group rankings.
    "
CREATE TABLE tag_counts(
    dataset INTEGER NOT NULL,
    canonical TEXT NOT NULL,
    category TEXT NOT NULL,
    year INTEGER NOT NULL,
    portrait INTEGER NOT NULL,
    items INTEGER NOT NULL,
    score INTEGER NOT NULL,
    favs INTEGER NOT NULL,
    PRIMARY KEY(dataset, canonical, category, year, portrait)
) WITHOUT ROWID;
CREATE INDEX tag_counts_by_category ON tag_counts(category, year);
CREATE TABLE pair_counts(
    dataset INTEGER NOT NULL,
    kind TEXT NOT NULL,
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    items INTEGER NOT NULL,
    PRIMARY KEY(dataset, kind, a, b)
) WITHOUT ROWID;
CREATE TABLE category_counts(
    dataset INTEGER NOT NULL,
    category TEXT NOT NULL,
    items INTEGER NOT NULL,
    PRIMARY KEY(dataset, category)
) WITHOUT ROWID;
CREATE INDEX live_by_score ON items(dataset, booru, year, score) WHERE removed_in IS NULL AND duplicate_of IS NULL;
CREATE INDEX live_by_favs ON items(dataset, booru, year, favs) WHERE removed_in IS NULL AND duplicate_of IS NULL;
CREATE INDEX live_by_quality ON items(quality, key) WHERE removed_in IS NULL AND duplicate_of IS NULL AND quality IS NOT NULL;
CREATE INDEX items_with_phash ON items(dataset) WHERE phash IS NOT NULL;
CREATE INDEX items_hidden ON items(dataset) WHERE duplicate_of IS NOT NULL AND removed_in IS NULL;
CREATE INDEX items_state ON items(dataset, key, hash, shard, removed_in, duplicate_of);
",
    // 3 -> 4: provenance and history keyed by release first: a merge appends its rows
    // in one run of pages instead of touching one page per item, and reads back its
    // own rows as a range.
    "
CREATE TABLE provenance_by_release(
    item INTEGER NOT NULL REFERENCES items(id),
    release INTEGER NOT NULL REFERENCES releases(id),
    action TEXT NOT NULL CHECK(action IN ('added', 'changed', 'removed', 'restored')),
    hash TEXT,
    PRIMARY KEY(release, item)
) WITHOUT ROWID;
INSERT INTO provenance_by_release(item, release, action, hash)
    SELECT item, release, action, hash FROM provenance ORDER BY release, item;
DROP TABLE provenance;
ALTER TABLE provenance_by_release RENAME TO provenance;
CREATE TABLE item_history_by_release(
    item INTEGER NOT NULL REFERENCES items(id),
    release INTEGER NOT NULL REFERENCES releases(id),
    hash TEXT NOT NULL,
    shard TEXT NOT NULL,
    record TEXT,
    PRIMARY KEY(release, item)
) WITHOUT ROWID;
INSERT INTO item_history_by_release(item, release, hash, shard, record)
    SELECT item, release, hash, shard, record FROM item_history ORDER BY release, item;
DROP TABLE item_history;
ALTER TABLE item_history_by_release RENAME TO item_history;
",
    // 4 -> 5: no index of items by shard. Nothing seedpool runs looks items up by shard
    // (extract and export go by item), and every item a release moves to a new shard
    // rewrote its entry there: a fifteenth of the pages an incremental merge dirtied.
    // The item state a merge walks holds 16-character prefixes of hash and shard
    // instead of both 64-character strings: a third of the pages to rewrite when items
    // change (the full values are read for the items whose prefixes differ). And pair
    // counts are keyed by numbers, a kind code and ids of canonical names, instead of
    // 'character-copyright' and two names in every row: a third of the pages, nearly all
    // of which a merge that adds or removes items touches. `pair_count_names` shows
    // them with names.
    "
DROP INDEX items_by_shard;
DROP INDEX items_state;
CREATE INDEX items_state ON items(dataset, key, substr(hash, 1, 16), substr(shard, 1, 16), removed_in);
CREATE TABLE canonical_names(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
INSERT INTO canonical_names(name) SELECT a FROM pair_counts UNION SELECT b FROM pair_counts;
CREATE TABLE pair_counts_by_id(
    dataset INTEGER NOT NULL,
    kind INTEGER NOT NULL CHECK(kind IN (1, 2)),
    a INTEGER NOT NULL REFERENCES canonical_names(id),
    b INTEGER NOT NULL REFERENCES canonical_names(id),
    items INTEGER NOT NULL,
    PRIMARY KEY(dataset, kind, a, b)
) WITHOUT ROWID;
INSERT INTO pair_counts_by_id(dataset, kind, a, b, items)
    SELECT p.dataset, CASE p.kind WHEN 'artist-copyright' THEN 1 ELSE 2 END, na.id, nb.id, p.items
    FROM pair_counts p JOIN canonical_names na ON na.name = p.a JOIN canonical_names nb ON nb.name = p.b
    ORDER BY 1, 2, 3, 4;
DROP TABLE pair_counts;
ALTER TABLE pair_counts_by_id RENAME TO pair_counts;
CREATE VIEW pair_count_names AS
    SELECT p.dataset AS dataset,
           CASE p.kind WHEN 1 THEN 'artist-copyright' ELSE 'character-copyright' END AS kind,
           na.name AS a, nb.name AS b, p.items AS items
    FROM pair_counts p JOIN canonical_names na ON na.id = p.a JOIN canonical_names nb ON nb.id = p.b;
",
    // 5 -> 6: members keyed by shard: a shard's contents never change, so a merge
    // writes the members of each new shard together, once, and never rewrites those of
    // the items that left a shard (the old shard still holds them, and the pool keeps
    // it). Keyed by item, every changed item's files were rewritten in place: a ninth of
    // the pages an incremental merge dirtied. And the md5 index holds 8-character
    // prefixes: a third of its size, and a merge adds new items' md5s to it at random.
    "
CREATE TABLE members_by_shard(
    shard TEXT NOT NULL REFERENCES shards(id),
    item INTEGER NOT NULL REFERENCES items(id),
    ext TEXT NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    blake3 TEXT NOT NULL,
    PRIMARY KEY(shard, item, ext)
) WITHOUT ROWID;
INSERT INTO members_by_shard(shard, item, ext, offset, length, blake3)
    SELECT i.shard, m.item, m.ext, m.offset, m.length, m.blake3
    FROM members m JOIN items i ON i.id = m.item ORDER BY 1, 2, 3;
DROP TABLE members;
ALTER TABLE members_by_shard RENAME TO members;
DROP INDEX items_by_md5;
CREATE INDEX items_by_md5 ON items(dataset, substr(md5, 1, 8)) WHERE md5 IS NOT NULL;
",
    // 6 -> 7: records in their own table, appended as releases bring them: a changed
    // item's row no longer carries 800 bytes of JSON to rewrite in place (the table of
    // items is a third of its size), and its history points at the record it had
    // instead of copying it. `live` and `item_records` show records beside items.
    "
CREATE TABLE records(id INTEGER PRIMARY KEY, record TEXT NOT NULL);
INSERT INTO records(id, record) SELECT id, record FROM items WHERE record IS NOT NULL ORDER BY id;
ALTER TABLE items ADD COLUMN record_id INTEGER REFERENCES records(id);
UPDATE items SET record_id = id WHERE record IS NOT NULL;
CREATE TEMP TABLE history_records AS
    SELECT item, release, hash, shard, record,
           (SELECT coalesce(max(id), 0) FROM records) + row_number() OVER (ORDER BY release, item) AS rid
    FROM item_history;
INSERT INTO records(id, record) SELECT rid, record FROM temp.history_records WHERE record IS NOT NULL ORDER BY rid;
CREATE TABLE item_history_by_record(
    item INTEGER NOT NULL REFERENCES items(id),
    release INTEGER NOT NULL REFERENCES releases(id),
    hash TEXT NOT NULL,
    shard TEXT NOT NULL,
    record_id INTEGER REFERENCES records(id),
    PRIMARY KEY(release, item)
) WITHOUT ROWID;
INSERT INTO item_history_by_record(item, release, hash, shard, record_id)
    SELECT item, release, hash, shard, CASE WHEN record IS NULL THEN NULL ELSE rid END
    FROM temp.history_records ORDER BY release, item;
DROP TABLE temp.history_records;
DROP TABLE item_history;
ALTER TABLE item_history_by_record RENAME TO item_history;
DROP VIEW live;
ALTER TABLE items DROP COLUMN record;
CREATE VIEW live AS
    SELECT i.*, r.record AS record FROM items i LEFT JOIN records r ON r.id = i.record_id
    WHERE i.removed_in IS NULL AND i.duplicate_of IS NULL;
CREATE VIEW item_records AS
    SELECT i.id AS item, r.record AS record FROM items i JOIN records r ON r.id = i.record_id;
",
    // 7 -> 8: shards keyed by (dataset, id). Files live per dataset, so presence must
    // too: keyed by id alone, a second dataset listing a shard of the first (a fork)
    // found it \"present\" and never got its own copy. A shard a second dataset shared
    // was recorded for the first only; the releases of the others list it, and get a row
    // of their own, not present (their folder never received the file).
    "
CREATE TABLE shards_by_dataset(
    dataset INTEGER NOT NULL REFERENCES datasets(id),
    id TEXT NOT NULL,
    size INTEGER NOT NULL,
    items INTEGER NOT NULL,
    volume TEXT NOT NULL,
    present INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(dataset, id)
) WITHOUT ROWID;
INSERT INTO shards_by_dataset(dataset, id, size, items, volume, present)
    SELECT dataset, id, size, items, volume, present FROM shards ORDER BY dataset, id;
INSERT OR IGNORE INTO shards_by_dataset(dataset, id, size, items, volume, present)
    SELECT r.dataset, s.id, s.size, s.items, s.volume, 0
    FROM release_shards rs JOIN releases r ON r.id = rs.release JOIN shards s ON s.id = rs.shard;
DROP TABLE shards;
ALTER TABLE shards_by_dataset RENAME TO shards;
",
    // 8 -> 9: canonical tag names by seedpool's own rule (`name::normalize_tag`, as the
    // SQL function `seedpool_tag`), not by SQLite's ASCII-only `lower` and `trim`; the
    // counts are computed again when a name changed (see `Pool::migrate`).
    "
UPDATE tags SET canonical = coalesce(
    (SELECT a.name FROM tag_aliases a WHERE a.alias = seedpool_tag(tags.name)),
    seedpool_tag(tags.name))
WHERE canonical IS NOT coalesce(
    (SELECT a.name FROM tag_aliases a WHERE a.alias = seedpool_tag(tags.name)),
    seedpool_tag(tags.name));
",
    // 9 -> 10: the newest feed `follow` accepted per dataset (by name: it comes before
    // the first release), so that an older one, a rollback, is refused.
    "
CREATE TABLE feeds(
    dataset TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL,
    published TEXT NOT NULL,
    expires TEXT NOT NULL,
    public_key TEXT NOT NULL,
    source TEXT NOT NULL,
    checked_at TEXT NOT NULL
);
",
    // 10 -> 11: what each merge changed in every tag's live count (`tag_deltas`) and the
    // live items after each merge (`release_live`), so the counts at any release are
    // sums of deltas (`mine trends`); pools merged before start with the current counts
    // as the head release's. And an index of perceptual hashes by 16-bit part
    // (`pool::phash`) for look-alikes. And stored clusterings (`pool::clusters`), which
    // merges extend to the items they bring.
    "
CREATE TABLE tag_deltas(
    release INTEGER NOT NULL REFERENCES releases(id),
    dataset INTEGER NOT NULL REFERENCES datasets(id),
    tag INTEGER NOT NULL REFERENCES tags(id),
    items INTEGER NOT NULL,
    PRIMARY KEY(release, dataset, tag)
) WITHOUT ROWID;
CREATE TABLE release_live(
    dataset INTEGER NOT NULL REFERENCES datasets(id),
    release INTEGER NOT NULL REFERENCES releases(id),
    items INTEGER NOT NULL,
    PRIMARY KEY(dataset, release)
) WITHOUT ROWID;
INSERT INTO tag_deltas(release, dataset, tag, items)
    SELECT d.head_release, i.dataset, it.tag, count(*)
    FROM datasets d JOIN items i ON i.dataset = d.id JOIN item_tags it ON it.item = i.id
    WHERE d.head_release IS NOT NULL AND i.removed_in IS NULL AND i.duplicate_of IS NULL
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
INSERT INTO release_live(dataset, release, items)
    SELECT d.id, d.head_release, (SELECT count(*) FROM items i
        WHERE i.dataset = d.id AND i.removed_in IS NULL AND i.duplicate_of IS NULL)
    FROM datasets d WHERE d.head_release IS NOT NULL;
CREATE TABLE phash_parts(
    part INTEGER NOT NULL,
    value INTEGER NOT NULL,
    item INTEGER NOT NULL REFERENCES items(id),
    phash INTEGER NOT NULL,
    PRIMARY KEY(part, value, item)
) WITHOUT ROWID;
INSERT INTO phash_parts(part, value, item, phash)
    SELECT p.n, seedpool_phash_part(i.phash, p.n), i.id, seedpool_phash(i.phash)
    FROM items i, (SELECT 0 AS n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) p
    WHERE i.removed_in IS NULL AND seedpool_phash(i.phash) IS NOT NULL
    ORDER BY 1, 2, 3;
CREATE TABLE clusterings(
    id INTEGER PRIMARY KEY,
    dataset INTEGER NOT NULL REFERENCES datasets(id),
    name TEXT NOT NULL,
    features TEXT NOT NULL,
    k INTEGER NOT NULL,
    vocabulary TEXT NOT NULL,
    trained_items INTEGER NOT NULL,
    trained_at_release INTEGER REFERENCES releases(id),
    UNIQUE(dataset, name)
);
CREATE TABLE clusters(
    clustering INTEGER NOT NULL REFERENCES clusterings(id),
    cluster INTEGER NOT NULL,
    centroid BLOB NOT NULL,
    tags TEXT NOT NULL,
    medoids TEXT NOT NULL,
    PRIMARY KEY(clustering, cluster)
) WITHOUT ROWID;
CREATE TABLE cluster_items(
    clustering INTEGER NOT NULL REFERENCES clusterings(id),
    item INTEGER NOT NULL REFERENCES items(id),
    cluster INTEGER NOT NULL,
    similarity REAL NOT NULL,
    PRIMARY KEY(clustering, item)
) WITHOUT ROWID;
CREATE INDEX cluster_items_by_cluster ON cluster_items(clustering, cluster, similarity);
",
    // 12: item vectors (image statistics, embeddings) for similar items and clusters.
    "
CREATE TABLE vector_spaces(
    id INTEGER PRIMARY KEY,
    dataset INTEGER NOT NULL REFERENCES datasets(id),
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    dims INTEGER NOT NULL,
    about TEXT,
    UNIQUE(dataset, kind, model)
);
CREATE TABLE item_vectors(
    space INTEGER NOT NULL REFERENCES vector_spaces(id),
    item INTEGER NOT NULL REFERENCES items(id),
    vector BLOB NOT NULL,
    PRIMARY KEY(space, item)
) WITHOUT ROWID;
INSERT INTO vector_spaces(dataset, kind, model, dims) SELECT id, 'stats', 'stats-1', 12 FROM datasets ORDER BY id;
INSERT INTO item_vectors(space, item, vector)
    SELECT s.id, x.id, x.v FROM (
        SELECT i.id AS id, i.dataset AS dataset,
            seedpool_stats_vector(json_extract(r.record, '$.stats')) AS v
        FROM items i JOIN records r ON r.id = i.record_id WHERE i.removed_in IS NULL
    ) x JOIN vector_spaces s ON s.dataset = x.dataset AND s.kind = 'stats'
    WHERE x.v IS NOT NULL ORDER BY x.id;
",
];

/// The format whose migration gives tags their canonical names by seedpool's rule.
pub const RECANONICAL: i64 = 9;

/// Secondary indexes that a bulk merge drops and builds again after its inserts (one
/// sort each instead of millions of random inserts). Their definitions must match the
/// migrations'.
pub const BULK_INDEXES: &[(&str, &str)] = &[
    (
        "items_by_md5",
        "CREATE INDEX items_by_md5 ON items(dataset, substr(md5, 1, 8)) WHERE md5 IS NOT NULL",
    ),
    ("items_by_year", "CREATE INDEX items_by_year ON items(year, booru)"),
    (
        "live_by_score",
        "CREATE INDEX live_by_score ON items(dataset, booru, year, score) WHERE removed_in IS NULL AND duplicate_of IS NULL",
    ),
    (
        "live_by_favs",
        "CREATE INDEX live_by_favs ON items(dataset, booru, year, favs) WHERE removed_in IS NULL AND duplicate_of IS NULL",
    ),
    (
        "live_by_quality",
        "CREATE INDEX live_by_quality ON items(quality, key) WHERE removed_in IS NULL AND duplicate_of IS NULL AND quality IS NOT NULL",
    ),
    ("items_with_phash", "CREATE INDEX items_with_phash ON items(dataset) WHERE phash IS NOT NULL"),
    (
        "items_hidden",
        "CREATE INDEX items_hidden ON items(dataset) WHERE duplicate_of IS NOT NULL AND removed_in IS NULL",
    ),
    (
        "items_state",
        "CREATE INDEX items_state ON items(dataset, key, substr(hash, 1, 16), substr(shard, 1, 16), removed_in)",
    ),
    ("item_tags_by_tag", "CREATE INDEX item_tags_by_tag ON item_tags(tag, item)"),
];

/// The format this seedpool writes.
pub const FORMAT_VERSION: i64 = MIGRATIONS.len() as i64;
/// "SPPL", SQLite's `application_id` of a pool database.
pub const APPLICATION_ID: i64 = 0x5350_504C;

/// The record fields the pool keeps in columns, as SQL over a record (a JSON text)
/// written `$R`. Shared by inserts and updates so both read records the same way.
pub const RECORD_COLUMNS: &[(&str, &str)] = &[
    ("booru", "json_extract($R, '$.booru')"),
    ("post_id", "json_extract($R, '$.post_id')"),
    ("md5", "json_extract($R, '$.md5')"),
    ("rating", "json_extract($R, '$.rating')"),
    ("score", "json_extract($R, '$.score')"),
    ("favs", "json_extract($R, '$.favs')"),
    ("posted", "coalesce(json_extract($R, '$.posted'), json_extract($R, '$.created_at'))"),
    (
        "year",
        "CAST(substr(coalesce(json_extract($R, '$.posted'), json_extract($R, '$.created_at')), 1, 4) AS INTEGER)",
    ),
    ("width", "coalesce(json_extract($R, '$.width'), json_extract($R, '$.image_width'))"),
    ("height", "coalesce(json_extract($R, '$.height'), json_extract($R, '$.image_height'))"),
    ("bytes", "coalesce(json_extract($R, '$.bytes'), json_extract($R, '$.file_size'))"),
    ("quality", "json_extract($R, '$.quality')"),
    (
        "faces",
        "CASE json_type($R, '$.faces') WHEN 'array' THEN json_array_length($R, '$.faces') \
         WHEN 'object' THEN json_array_length($R, '$.faces.medium') ELSE json_extract($R, '$.faces') END",
    ),
    ("composition", "json_extract($R, '$.composition')"),
    ("phash", "json_extract($R, '$.phash')"),
];

/// The `RECORD_COLUMNS` that some index of `items` reads (a unit test checks this
/// against the schema): a merge assigns them only when their values change.
pub const INDEXED_RECORD_COLUMNS: &[&str] =
    &["booru", "md5", "score", "favs", "year", "quality", "phash"];

/// The column names and the matching expressions, for an INSERT ... SELECT.
pub fn record_select(record_sql: &str) -> (String, String) {
    let cols = RECORD_COLUMNS
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(", ");
    let exprs = RECORD_COLUMNS
        .iter()
        .map(|(_, e)| e.replace("$R", record_sql))
        .collect::<Vec<_>>()
        .join(", ");
    (cols, exprs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_8_gives_each_dataset_its_rows_of_shared_shards() {
        // In format 7 a shard two datasets listed had one row, the first one's: the
        // second dataset's files were never brought in, and its row must say so.
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        for step in &MIGRATIONS[..7] {
            conn.execute_batch(step).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO datasets(id, name, public_key) VALUES (1, 'a', 'k'), (2, 'fork', 'k');
             INSERT INTO releases(id, dataset, version, manifest_blake3, created, merged_at)
                 VALUES (1, 1, '1', 'x', 't', 't'), (2, 2, '1', 'y', 't', 't');
             INSERT INTO shards(id, dataset, size, items, volume, present) VALUES ('s', 1, 4096, 2, 'v', 1);
             INSERT INTO release_shards VALUES (1, 's'), (2, 's');",
        )
        .unwrap();
        conn.execute_batch(MIGRATIONS[7]).unwrap();
        let mut st = conn
            .prepare(
                "SELECT dataset, id, size, items, volume, present FROM shards ORDER BY dataset",
            )
            .unwrap();
        let rows: Vec<(i64, String, i64, i64, String, i64)> = st
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (1, "s".into(), 4096, 2, "v".into(), 1),
                (2, "s".into(), 4096, 2, "v".into(), 0)
            ]
        );
    }

    #[test]
    fn format_9_gives_tags_their_canonical_names_by_seedpools_rule() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        crate::pool::sql_functions(&conn).unwrap();
        conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        for step in &MIGRATIONS[..8] {
            conn.execute_batch(step).unwrap();
        }
        // As format 8 computed them: ASCII-only lower() and trim().
        conn.execute_batch(
            "INSERT INTO tag_aliases(alias, name) VALUES ('émile', 'émile_zola');
             INSERT INTO tags(id, name, category, source, canonical) VALUES
                 (1, 'Émile Zola', 'artist', 'danbooru', 'Émile_zola'),
                 (2, 'Émile', 'artist', 'gelbooru', 'Émile'),
                 (3, 'solo', 'general', 'danbooru', 'solo');",
        )
        .unwrap();
        conn.execute_batch(MIGRATIONS[8]).unwrap();
        assert_eq!(conn.changes(), 2);
        let mut st = conn
            .prepare("SELECT canonical FROM tags ORDER BY id")
            .unwrap();
        let names: Vec<String> = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(names, ["émile_zola", "émile_zola", "solo"]);
        assert_eq!(RECANONICAL as usize, 9);
    }

    #[test]
    fn indexed_record_columns_are_those_the_indexes_of_items_read() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        crate::pool::sql_functions(&conn).unwrap();
        for step in MIGRATIONS {
            conn.execute_batch(step).unwrap();
        }
        let mut st = conn
            .prepare("SELECT sql FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'items' AND sql IS NOT NULL")
            .unwrap();
        let sql: Vec<String> = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let words: std::collections::BTreeSet<&str> = sql
            .iter()
            .flat_map(|s| s.split(|c: char| !c.is_alphanumeric() && c != '_'))
            .collect();
        let read: Vec<&str> = RECORD_COLUMNS
            .iter()
            .map(|(c, _)| *c)
            .filter(|c| words.contains(c))
            .collect();
        assert_eq!(read, INDEXED_RECORD_COLUMNS);
    }
}
