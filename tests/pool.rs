//! End-to-end tests of `seedpool merge` and `seedpool query` on real pools.

mod common;

use std::path::{Path, PathBuf};

use common::*;

struct Env {
    _t: tempfile::TempDir,
    root: PathBuf,
    store: PathBuf,
    pool: PathBuf,
    key: PathBuf,
    /// Merge in bulk mode (indexes dropped and rebuilt) whatever the release's size.
    bulk: bool,
}

fn env() -> Env {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().to_path_buf();
    Env {
        key: fixed_key(&root),
        store: root.join("store"),
        pool: root.join("pool"),
        root,
        _t: t,
        bulk: false,
    }
}

impl Env {
    fn publish(&self, rel: &Path, version: &str, parent: Option<&str>, extra: &[&str]) {
        let mut args = publish_args(s(rel), s(&self.store), s(&self.key), version);
        let parent_path = parent.map(|p| self.manifest(p));
        if let Some(p) = &parent_path {
            args.extend(["--parent", s(p)]);
        }
        args.extend(extra);
        let r = run(&args);
        assert_eq!(r.code, 0, "publish {version}: {}", r.stderr);
    }

    /// Writes items `range` into `r1`, publishes them as release 1 and merges it; returns
    /// the release folder and the merge report.
    fn release_one(
        &self,
        range: std::ops::Range<usize>,
        payload: usize,
        extra: &[&str],
    ) -> (PathBuf, serde_json::Value) {
        let r1 = self.root.join("r1");
        write_items(&r1, range, payload);
        self.publish(&r1, "1", None, extra);
        (r1, self.merged("1"))
    }

    fn manifest(&self, version: &str) -> PathBuf {
        self.store.join(format!("test-ds-{version}.manifest.json"))
    }

    fn merge(&self, version: &str, extra: &[&str]) -> Run {
        let m = self.manifest(version);
        let mut args = vec![
            "merge",
            s(&m),
            "--pool",
            s(&self.pool),
            "--from",
            s(&self.store),
            "--json",
        ];
        args.extend(extra);
        let min = if self.bulk { "0" } else { "1000000000" };
        run_env(&args, &[("SEEDPOOL_BULK_MERGE_MIN", min)])
    }

    fn merged(&self, version: &str) -> serde_json::Value {
        let r = self.merge(version, &[]);
        assert_eq!(r.code, 0, "merge {version}: {}", r.stderr);
        self.assert_counts_exact();
        serde_json::from_str(&r.stdout).unwrap()
    }

    /// The counts merges maintain step by step equal a recomputation from scratch.
    fn assert_counts_exact(&self) {
        let fresh_tags = "SELECT i.dataset, x.canonical, x.category,
                CASE x.category WHEN 'character' THEN coalesce(i.year, 0) ELSE 0 END,
                CASE x.category WHEN 'character'
                    THEN coalesce(i.faces = 1 AND i.composition IN ('close-up', 'portrait'), 0) ELSE 0 END,
                count(*), coalesce(sum(i.score), 0), coalesce(sum(i.favs), 0)
             FROM (SELECT DISTINCT it.item AS id, t.canonical, t.category FROM item_tags it JOIN tags t ON t.id = it.tag) x
             JOIN live i ON i.id = x.id GROUP BY 1, 2, 3, 4, 5";
        let stored_tags = "SELECT dataset, canonical, category, year, portrait, items, score, favs FROM tag_counts";
        let x = "(SELECT DISTINCT it.item AS id, i.dataset, t.canonical, t.category
                FROM item_tags it JOIN tags t ON t.id = it.tag JOIN live i ON i.id = it.item)";
        let fresh_pairs = format!(
            "SELECT a.dataset, a.category || '-copyright', a.canonical, b.canonical, count(*)
             FROM {x} a JOIN {x} b ON b.id = a.id AND b.category = 'copyright'
             WHERE a.category IN ('artist', 'character') GROUP BY 1, 2, 3, 4"
        );
        let stored_pairs = "SELECT dataset, kind, a, b, items FROM pair_count_names";
        let fresh_cats = "SELECT i.dataset, t.category, count(DISTINCT i.id) FROM item_tags it JOIN tags t ON t.id = it.tag
             JOIN live i ON i.id = it.item GROUP BY 1, 2";
        let stored_cats = "SELECT dataset, category, items FROM category_counts";
        for (fresh, stored) in [
            (fresh_tags, stored_tags),
            (fresh_pairs.as_str(), stored_pairs),
            (fresh_cats, stored_cats),
        ] {
            let diff = self.one(&format!(
                "WITH fresh AS ({fresh}), stored AS ({stored})
                 SELECT (SELECT count(*) FROM (SELECT * FROM fresh EXCEPT SELECT * FROM stored))
                      + (SELECT count(*) FROM (SELECT * FROM stored EXCEPT SELECT * FROM fresh))"
            ));
            assert_eq!(
                diff, 0,
                "maintained counts differ from a recount:\n{stored}"
            );
        }
    }

    fn sql(&self, sql: &str) -> Vec<serde_json::Value> {
        let r = run(&[
            "query",
            "--pool",
            s(&self.pool),
            "--sql",
            sql,
            "--format",
            "json",
        ]);
        assert_eq!(r.code, 0, "{sql}: {}", r.stderr);
        serde_json::from_str::<serde_json::Value>(&r.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn one(&self, sql: &str) -> serde_json::Value {
        let rows = self.sql(sql);
        rows[0]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .clone()
    }

    /// A fingerprint of everything the pool database says about items and releases.
    /// Starts a real merge of `version` into `pool` and SIGKILLs it after `delay`.
    fn merge_killed_after(&self, version: &str, pool: &Path, delay: std::time::Duration) {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("seedpool"))
            .args([
                "merge",
                s(&self.manifest(version)),
                "--pool",
                s(pool),
                "--from",
                s(&self.store),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// This environment with another pool.
    fn at(&self, pool: &Path) -> Env {
        Env {
            _t: tempfile::tempdir().unwrap(),
            root: self.root.clone(),
            store: self.store.clone(),
            pool: pool.to_path_buf(),
            key: self.key.clone(),
            bulk: false,
        }
    }

    fn digest(&self) -> String {
        let rows = self.sql(
            "SELECT (SELECT count(*) FROM releases) AS releases,
                    (SELECT count(*) FROM provenance) AS provenance,
                    (SELECT count(*) FROM members) AS members,
                    (SELECT count(*) FROM item_tags) AS item_tags,
                    (SELECT group_concat(key || ':' || hash || ':' || coalesce(removed_in, '-'), ',')
                       FROM (SELECT key, hash, removed_in FROM items ORDER BY key)) AS items",
        );
        blake3::hash(serde_json::to_string(&rows).unwrap().as_bytes())
            .to_hex()
            .to_string()
    }
}

fn remove_item(dir: &Path, i: usize) {
    for ext in ["jpg", "json"] {
        let _ = std::fs::remove_file(dir.join(format!("danbooru-{}.{ext}", 1000 + i)));
    }
}

#[test]
fn merge_records_every_items_fate_and_is_idempotent() {
    let mut e = env();
    e.bulk = true;
    let (_, m1) = e.release_one(0..40, 300, &["--shard-items", "10"]);
    assert_eq!(m1["added"], 40);
    assert_eq!(m1["shards_fetched"], 4);

    // Release 2: two removed, one record changed, five new.
    let r2 = e.root.join("r2");
    write_items(&r2, 0..45, 300);
    remove_item(&r2, 7);
    remove_item(&r2, 8);
    std::fs::write(
        r2.join("danbooru-1003.json"),
        r#"{"booru":"danbooru","score":777,"volume":"1x1-2021"}"#,
    )
    .unwrap();
    e.publish(&r2, "2", Some("1"), &["--shard-items", "10"]);
    let m2 = e.merged("2");
    assert_eq!(
        (
            m2["added"].as_u64(),
            m2["changed"].as_u64(),
            m2["removed"].as_u64()
        ),
        (Some(5), Some(1), Some(2))
    );
    assert_eq!(m2["unchanged"], 37);
    // The changed record lists no tags any more: its links go, its neighbours' stay.
    let links = |key: &str| {
        e.one(&format!(
            "SELECT count(*) FROM item_tags WHERE item = (SELECT id FROM items WHERE key = '{key}')"
        ))
    };
    assert_eq!(links("danbooru-1003"), 0);
    assert_eq!(links("danbooru-1004"), 5);
    assert_eq!(m2["items"], 43);

    assert_eq!(e.one("SELECT count(*) FROM live"), 43);
    assert_eq!(
        e.one("SELECT score FROM items WHERE key = 'danbooru-1003'"),
        777
    );
    // Columns no index reads follow the record too: its post id went.
    assert_eq!(
        e.one(
            "SELECT post_id IS NULL AND booru = 'danbooru' FROM items WHERE key = 'danbooru-1003'"
        ),
        1
    );
    assert_eq!(
        e.one("SELECT json_extract(r.record, '$.score') FROM item_history h JOIN items i ON i.id = h.item JOIN records r ON r.id = h.record_id WHERE i.key = 'danbooru-1003'"),
        3
    );
    let fates = e.sql(
        "SELECT r.version, p.action, count(*) AS n FROM provenance p JOIN releases r ON r.id = p.release
         GROUP BY 1, 2 ORDER BY 1, 2",
    );
    assert_eq!(
        serde_json::to_string(&fates).unwrap(),
        r#"[{"version":"1","action":"added","n":40},{"version":"2","action":"added","n":5},{"version":"2","action":"changed","n":1},{"version":"2","action":"removed","n":2}]"#
    );
    assert_eq!(
        e.one("SELECT count(*) FROM items WHERE removed_in IS NOT NULL"),
        2
    );

    // The same release again: nothing changes.
    let before = e.digest();
    let again = e.merged("2");
    assert_eq!(again["already_merged"], true);
    assert_eq!(e.digest(), before);

    // Release 3 brings a removed item back.
    let r3 = e.root.join("r3");
    copy_dir(&r2, &r3);
    write_items(&r3, 7..8, 300);
    e.publish(&r3, "3", Some("2"), &["--shard-items", "10"]);
    let m3 = e.merged("3");
    assert_eq!(m3["restored"], 1);
    assert_eq!(
        e.one("SELECT removed_in IS NULL FROM items WHERE key = 'danbooru-1007'"),
        1
    );
}

#[test]
fn items_moved_by_a_repack_keep_their_identity_and_new_offsets() {
    let e = env();
    let (r1, _) = e.release_one(0..40, 700, &["--shard-items", "10"]);
    // Drop 8 of the 10 items of one shard: the 2 left are repacked into a new shard.
    let shard = e.one("SELECT shard FROM items WHERE key = 'danbooru-1000'");
    let keys = e.sql(&format!(
        "SELECT key FROM items WHERE shard = '{}' ORDER BY key",
        shard.as_str().unwrap()
    ));
    let r2 = e.root.join("r2");
    copy_dir(&r1, &r2);
    for k in keys.iter().take(8) {
        let key = k["key"].as_str().unwrap();
        for ext in ["jpg", "json"] {
            std::fs::remove_file(r2.join(format!("{key}.{ext}"))).unwrap();
        }
    }
    e.publish(&r2, "2", Some("1"), &["--shard-items", "10"]);
    let m2 = e.merged("2");
    assert_eq!(m2["moved"], 2, "{m2}");
    assert_eq!(m2["changed"], 0);
    assert_eq!(m2["removed"], 8);
    // The moved items point into their new shard, at offsets that hold their bytes.
    let moved = e.sql(&format!(
        "SELECT i.key, i.shard, m.offset, m.length FROM items i JOIN members m ON m.shard = i.shard AND m.item = i.id
         WHERE i.key = '{}' AND m.ext = 'jpg'",
        keys[9]["key"].as_str().unwrap()
    ));
    let row = &moved[0];
    assert_ne!(row["shard"], shard);
    let bytes = std::fs::read(e.pool.join(format!(
        "test-ds/shards/{}.tar",
        row["shard"].as_str().unwrap()
    )))
    .unwrap();
    let (off, len) = (
        row["offset"].as_u64().unwrap() as usize,
        row["length"].as_u64().unwrap() as usize,
    );
    let i: usize = row["key"]
        .as_str()
        .unwrap()
        .trim_start_matches("danbooru-")
        .parse::<usize>()
        .unwrap()
        - 1000;
    assert_eq!(&bytes[off..off + len], &item_files(i, "", 700).1[..]);
    // The old shard still holds the item, and the pool still knows where.
    let old = e.sql(&format!(
        "SELECT count(*) AS n FROM members m JOIN items i ON i.id = m.item
         WHERE i.key = '{}' AND m.shard = '{}'",
        keys[9]["key"].as_str().unwrap(),
        shard.as_str().unwrap()
    ));
    assert_eq!(old[0]["n"], 2);
}

#[test]
fn duplicates_follow_resolution_then_source_then_ancestor() {
    let mut e = env();
    e.bulk = true;
    let rec = |booru: &str, md5: &str, w: u32, phash: &str| {
        format!(
            r#"{{"booru":"{booru}","md5":"{md5}","width":{w},"height":{w},"phash":"{phash}","volume":"v"}}"#
        )
    };
    let r1 = e.root.join("r1");
    std::fs::create_dir_all(&r1).unwrap();
    let put = |dir: &Path, key: &str, record: String| {
        std::fs::write(dir.join(format!("{key}.json")), record).unwrap();
        std::fs::write(dir.join(format!("{key}.jpg")), key.as_bytes()).unwrap();
    };
    put(
        &r1,
        "danbooru-1",
        rec("danbooru", "aaa", 1000, "ffff000000000000"),
    );
    put(
        &r1,
        "gelbooru-9",
        rec("gelbooru", "bbb", 1000, "0000ffff00000000"),
    );
    e.publish(&r1, "1", None, &[]);
    assert_eq!(e.merged("1")["duplicates"], 0);

    let r2 = e.root.join("r2");
    copy_dir(&r1, &r2);
    // Same md5 from a preferred source at the same size: the newer copy wins.
    put(
        &r2,
        "safebooru-5",
        rec("safebooru", "aaa", 1000, "1234123412341234"),
    );
    // Near duplicate of gelbooru-9 (2 bits apart) but smaller: the ancestor stays.
    put(
        &r2,
        "konachan-3",
        rec("konachan", "ccc", 800, "0000ffff00000003"),
    );
    // Two copies inside the release, equal in all but key: the smaller key wins.
    put(
        &r2,
        "yandere-2",
        rec("yande.re", "ddd", 500, "00000000ffff0000"),
    );
    put(
        &r2,
        "yandere-1",
        rec("yande.re", "ddd", 500, "aaaaaaaaaaaaaaaa"),
    );
    e.publish(&r2, "2", Some("1"), &[]);
    let m2 = e.merged("2");
    assert_eq!(m2["duplicates"], 3, "{m2}");
    let live: Vec<String> = e
        .sql("SELECT key FROM live ORDER BY key")
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(live, ["gelbooru-9", "safebooru-5", "yandere-1"]);
    assert_eq!(
        e.one("SELECT w.key FROM items l JOIN items w ON w.id = l.duplicate_of WHERE l.key = 'danbooru-1'"),
        "safebooru-5"
    );
    // With near-duplicate matching off, konachan-3 is its own item again.
    let r3 = e.root.join("r3");
    copy_dir(&r2, &r3);
    put(
        &r3,
        "zerochan-1",
        rec("zerochan", "eee", 100, "0101010101010101"),
    );
    e.publish(&r3, "3", Some("2"), &[]);
    let r = e.merge("3", &["--phash-distance", "0"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    e.assert_counts_exact();
    assert_eq!(
        e.one("SELECT count(*) FROM live WHERE key = 'konachan-3'"),
        1
    );
}

/// Without perceptual hashes a merge recomputes only the md5 groups it touched: a better
/// copy takes over, a removed winner hands over to the next best, and the counts follow.
#[test]
fn md5_groups_touched_by_a_merge_are_resolved_again() {
    let e = env();
    let rec = |booru: &str, md5: &str, w: u32| {
        format!(
            r#"{{"booru":"{booru}","md5":"{md5}","width":{w},"height":{w},"posted":"2020-01-01","tags":{{"character":["c_{md5}"]}}}}"#
        )
    };
    let put = |dir: &Path, key: &str, record: String| {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(format!("{key}.json")), record).unwrap();
    };
    let r1 = e.root.join("r1");
    put(&r1, "danbooru-1", rec("danbooru", "aaa", 1000));
    put(&r1, "gelbooru-1", rec("gelbooru", "aaa", 900));
    put(&r1, "konachan-1", rec("konachan", "bbb", 500));
    put(&r1, "zerochan-1", rec("zerochan", "ccc", 500));
    e.publish(&r1, "1", None, &[]);
    assert_eq!(e.merged("1")["duplicates"], 1);
    let live = |e: &Env| -> Vec<String> {
        e.sql("SELECT key FROM live ORDER BY key")
            .iter()
            .map(|r| r["key"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(live(&e), ["danbooru-1", "konachan-1", "zerochan-1"]);

    // Release 2: the winner of `aaa` goes, a bigger copy of `bbb` arrives, `ccc` changes md5.
    let r2 = e.root.join("r2");
    put(&r2, "gelbooru-1", rec("gelbooru", "aaa", 900));
    put(&r2, "konachan-1", rec("konachan", "bbb", 500));
    put(&r2, "sankaku-7", rec("sankaku", "bbb", 2000));
    put(&r2, "zerochan-1", rec("zerochan", "ddd", 500));
    put(&r2, "safebooru-3", rec("safebooru", "ccc", 100));
    e.publish(&r2, "2", Some("1"), &[]);
    let m2 = e.merged("2");
    assert_eq!(m2["duplicates"], 1, "{m2}");
    assert_eq!(
        live(&e),
        ["gelbooru-1", "safebooru-3", "sankaku-7", "zerochan-1"]
    );

    // Release 3: the winner of `bbb` changes md5, so the copy it hid is alone in its
    // group and visible again; a tagless item joins `ccc` and wins it.
    let r3 = e.root.join("r3");
    put(&r3, "gelbooru-1", rec("gelbooru", "aaa", 900));
    put(&r3, "konachan-1", rec("konachan", "bbb", 500));
    put(&r3, "sankaku-7", rec("sankaku", "eee", 2000));
    put(&r3, "zerochan-1", rec("zerochan", "ddd", 500));
    put(&r3, "safebooru-3", rec("safebooru", "ccc", 100));
    put(
        &r3,
        "yandere-4",
        r#"{"booru":"yande.re","md5":"ccc","width":3000,"height":3000}"#.into(),
    );
    e.publish(&r3, "3", Some("2"), &[]);
    let m3 = e.merged("3");
    assert_eq!(m3["duplicates"], 1, "{m3}");
    assert_eq!(
        live(&e),
        [
            "gelbooru-1",
            "konachan-1",
            "sankaku-7",
            "yandere-4",
            "zerochan-1"
        ]
    );

    // Release 4: the tagless winner goes; the copy it hid comes back.
    std::fs::remove_file(r3.join("yandere-4.json")).unwrap();
    e.publish(&r3, "4", Some("3"), &[]);
    assert_eq!(e.merged("4")["duplicates"], 0);
    assert_eq!(
        live(&e),
        [
            "gelbooru-1",
            "konachan-1",
            "safebooru-3",
            "sankaku-7",
            "zerochan-1"
        ]
    );
}

#[test]
fn the_publisher_key_is_pinned_on_first_merge() {
    let e = env();
    let (r1, _) = e.release_one(0..5, 100, &[]);
    // Release 2 signed by somebody else.
    let other = e.root.join("other.key");
    seedpool::signing::PublisherKey::from_seed([9; 32])
        .save(&other, false)
        .unwrap();
    write_items(&r1, 5..6, 100);
    // The store's feed is the first publisher's, and publish refuses to re-sign it with
    // another key: this publisher starts a feed of its own.
    std::fs::remove_file(e.store.join("test-ds.feed.json")).unwrap();
    let mut args = publish_args(s(&r1), s(&e.store), s(&other), "2");
    let parent = e.manifest("1");
    args.extend(["--parent", s(&parent)]);
    assert_eq!(run(&args).code, 0);
    let before = e.digest();
    let r = e.merge("2", &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("the pool pinned key") && r.stderr.contains("--trust-key"),
        "{}",
        r.stderr
    );
    assert_eq!(e.digest(), before);
    let r = e.merge("2", &["--trust-key"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn bad_releases_and_pools_change_nothing() {
    let e = env();
    let (r1, _) = e.release_one(0..20, 200, &["--shard-items", "5"]);
    write_items(&r1, 20..30, 200);
    e.publish(&r1, "2", Some("1"), &["--shard-items", "5"]);
    let before = e.digest();
    let pool_files = tree(&e.pool);

    // A shard that does not match its hash in the manifest.
    let m2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(e.manifest("2")).unwrap()).unwrap();
    let new_shard = m2["shards"].as_array().unwrap().iter().find(|s| {
        !e.pool
            .join(format!("test-ds/shards/{}.tar", s["id"].as_str().unwrap()))
            .exists()
    });
    let id = new_shard.unwrap()["id"].as_str().unwrap().to_string();
    let path = e.store.join(format!("test-ds/shards/{id}.tar"));
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad[100] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let r = e.merge("2", &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains(&format!("{id}.tar` does not match the manifest: blake3 is")),
        "{}",
        r.stderr
    );
    assert_eq!(e.digest(), before);
    assert_eq!(tree(&e.pool), pool_files, "pool files changed");

    // The shard missing from the store.
    std::fs::remove_file(&path).unwrap();
    let r = e.merge("2", &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains(&format!("shard `{id}` of release `2` is not in")),
        "{}",
        r.stderr
    );
    std::fs::write(&path, &good).unwrap();

    // An index that does not match the manifest.
    let index = e.store.join("test-ds/index/2.sqlite.zst");
    let good_index = std::fs::read(&index).unwrap();
    let mut bad_index = good_index.clone();
    let n = bad_index.len();
    bad_index[n - 5] ^= 1;
    std::fs::write(&index, &bad_index).unwrap();
    let r = e.merge("2", &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("2.sqlite.zst` does not match the manifest"),
        "{}",
        r.stderr
    );
    std::fs::write(&index, &good_index).unwrap();
    assert_eq!(e.digest(), before);

    // A folder that is not a pool.
    let not_pool = e.root.join("r1");
    let m = e.manifest("2");
    let r = run(&[
        "merge",
        s(&m),
        "--pool",
        s(&not_pool),
        "--from",
        s(&e.store),
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is not a seedpool pool"), "{}", r.stderr);

    // Finally the good release merges.
    assert_eq!(e.merged("2")["added"], 10);
}

#[test]
fn a_signed_index_whose_items_name_a_missing_shard_is_refused() {
    let e = env();
    let r1 = e.root.join("r1");
    write_items(&r1, 0..6, 100);
    e.publish(&r1, "1", None, &[]);
    // Rewrite the index so an item points at a shard the manifest does not list, and
    // sign the manifest again, as a buggy or hostile publisher could.
    let zst = e.store.join("test-ds/index/1.sqlite.zst");
    let db = e.root.join("index.sqlite");
    seedpool::index::decompress(&zst, &db, 1 << 30).unwrap();
    {
        let reader = seedpool::index::IndexReader::open(&db).unwrap();
        drop(reader);
        let status = std::process::Command::new("/usr/bin/python3")
            .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE items SET shard='ab'||substr(shard,3) WHERE key='danbooru-1002'\"); c.commit()"])
            .arg(&db)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let packed = e.root.join("index.sqlite.zst");
    let c = seedpool::index::compress(&db, &packed, 262144).unwrap();
    replace_index(
        &e,
        "1",
        &std::fs::read(&packed).unwrap(),
        c.uncompressed_size,
    );
    let r = e.merge("1", &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("item `danbooru-1002` references shard `ab"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("which the manifest does not list"),
        "{}",
        r.stderr
    );
    assert_eq!(e.one("SELECT count(*) FROM releases"), 0);
}

/// Puts `zst` in place of release `version`'s index and signs the release again, as a
/// publisher would, with `uncompressed` as its declared unpacked size.
fn replace_index(e: &Env, version: &str, zst: &[u8], uncompressed: u64) {
    let release = Published::new(&e.store, version);
    std::fs::write(release.index_path(), zst).unwrap();
    release.sign(|m| m.index.uncompressed_size = uncompressed);
}

#[test]
fn indexes_are_read_in_place_and_one_zstd_stream_still_merges() {
    let e = env();
    let r1 = e.root.join("r1");
    write_items(&r1, 0..8, 100);
    e.publish(&r1, "1", None, &[]);
    let zst = e.store.join("test-ds/index/1.sqlite.zst");
    assert!(seedpool::zseek::is_seekable(&zst).unwrap());
    // An index as seedpool wrote them before seekable ones: one zstd stream, which a
    // merge decompresses to a scratch file beside the pool and removes.
    let db = e.root.join("index.sqlite");
    seedpool::index::decompress(&zst, &db, 1 << 30).unwrap();
    let plain = zstd::stream::encode_all(std::fs::File::open(&db).unwrap(), 9).unwrap();
    let unpacked = std::fs::metadata(&db).unwrap().len();
    replace_index(&e, "1", &plain, unpacked);
    let r = e.merge("1", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(e.one("SELECT count(*) FROM items"), 8);
    let left: Vec<_> = std::fs::read_dir(&e.pool)
        .unwrap()
        .flatten()
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n != seedpool::pool::LOCK)
        .collect();
    assert!(left.is_empty(), "scratch files left: {left:?}");
    e.assert_counts_exact();
}

#[test]
fn a_seek_table_larger_than_the_signed_size_is_refused() {
    let e = env();
    let r1 = e.root.join("r1");
    write_items(&r1, 0..4, 100);
    e.publish(&r1, "1", None, &[]);
    let zst = std::fs::read(e.store.join("test-ds/index/1.sqlite.zst")).unwrap();
    // The publisher signs a smaller unpacked size than the frames hold (a bomb's shape).
    replace_index(&e, "1", &zst, 8192);
    let r = e.merge("1", &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("1.sqlite.zst") && r.stderr.contains("more than the 8192 allowed"),
        "{}",
        r.stderr
    );
    assert_eq!(e.one("SELECT count(*) FROM releases"), 0);
}

#[test]
fn queries_refuse_writes_and_bad_sql() {
    let e = env();
    e.release_one(0..10, 100, &[]);
    let before = e.digest();
    for (sql, expect) in [
        (
            "DELETE FROM items",
            "queries are read-only: DELETE from `items` is refused",
        ),
        (
            "UPDATE items SET score = 0",
            "queries are read-only: UPDATE of `items` is refused",
        ),
        (
            "INSERT INTO tags(name, category, source) VALUES ('x','y','z')",
            "INSERT into `tags` is refused",
        ),
        ("ATTACH DATABASE 'x.db' AS x", "ATTACH of `x.db` is refused"),
        (
            "PRAGMA journal_mode = DELETE",
            "PRAGMA `journal_mode` is refused",
        ),
        ("SELEKT 1", "invalid SQL: near \"SELEKT\": syntax error"),
        (
            "SELECT nope FROM items",
            "invalid SQL: no such column: nope",
        ),
    ] {
        let r = run(&["query", "--pool", s(&e.pool), "--sql", sql]);
        assert_eq!(r.code, 1, "{sql}");
        assert!(r.stderr.contains(expect), "{sql}: {}", r.stderr);
    }
    assert_eq!(e.digest(), before);
    let r = run(&["query", "--pool", s(&e.pool), "no-such-parade"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("unknown query `no-such-parade`; `seedpool query --list`"),
        "{}",
        r.stderr
    );
    // Every named query runs on a real pool.
    let list = run(&["query", "--pool", s(&e.pool), "--list", "--format", "json"]);
    for q in serde_json::from_str::<serde_json::Value>(&list.stdout)
        .unwrap()
        .as_array()
        .unwrap()
    {
        let name = q["name"].as_str().unwrap();
        let mut args = vec!["query", "--pool", s(&e.pool), name, "--format", "csv"];
        // related-tags needs its one tag: any the pool has.
        let tag = run(&[
            "query",
            "--pool",
            s(&e.pool),
            "--sql",
            "SELECT canonical FROM tags ORDER BY id LIMIT 1",
            "--format",
            "csv",
        ]);
        let tag = tag.stdout.lines().nth(1).unwrap_or_default().to_string();
        if name == "related-tags" {
            args.extend(["--tags", &tag]);
        }
        let r = run(&args);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
    }
    let r = run(&[
        "query",
        "--pool",
        s(&e.pool),
        "characters-by-year",
        "--format",
        "csv",
    ]);
    assert!(
        r.stdout
            .starts_with("year,rank,character,items,score,favs\n"),
        "{}",
        r.stdout
    );
    // With tags, series-by-artist agrees with a direct count over the items.
    let expected = e.one(
        "SELECT count(*) FROM live l WHERE EXISTS (SELECT 1 FROM item_tag_names n WHERE n.item = l.id AND n.tag = 'solo')
         AND EXISTS (SELECT 1 FROM item_tag_names n WHERE n.item = l.id AND n.tag = 'g1')",
    );
    assert!(expected.as_u64().unwrap() > 0);
    assert_eq!(
        artist_items(&e.pool, Some("solo,G1")),
        expected.as_u64().unwrap()
    );
    assert_eq!(artist_items(&e.pool, None), 10);
}

/// The items series-by-artist counts over its rows, with `--tags` when given.
fn artist_items(pool: &Path, tags: Option<&str>) -> u64 {
    let mut args = vec![
        "query",
        "--pool",
        s(pool),
        "series-by-artist",
        "--format",
        "json",
    ];
    if let Some(t) = tags {
        args.extend(["--tags", t]);
    }
    let r = run(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rows: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["artist_items"].as_u64().unwrap())
        .sum()
}

/// SIGKILL a real merge at spread-out moments: every time the pool is either exactly as
/// before or fully merged, and merging again completes it.
#[test]
fn a_merge_killed_at_any_point_leaves_the_pool_before_or_fully_merged() {
    let e = env();
    let (r1, _) = e.release_one(0..3000, 40, &["--shard-items", "200"]);
    let r2 = e.root.join("r2");
    copy_dir(&r1, &r2);
    for i in (0..3000).step_by(3) {
        remove_item(&r2, i);
    }
    write_items(&r2, 3000..5000, 40);
    e.publish(&r2, "2", Some("1"), &["--shard-items", "200"]);

    let base = e.root.join("pool-base");
    copy_dir(&e.pool, &base);
    let before = e.digest();
    let started = std::time::Instant::now();
    e.merged("2");
    let full_time = started.elapsed();
    let after = e.digest();
    assert_ne!(before, after);

    let mut outcomes = (0, 0);
    for step in 1..=8u32 {
        let pool = e.root.join(format!("pool-{step}"));
        copy_dir(&base, &pool);
        e.merge_killed_after("2", &pool, full_time * step / 9);
        let probe = e.at(&pool);
        let state = probe.digest();
        if state == before {
            outcomes.0 += 1;
        } else {
            assert_eq!(
                state, after,
                "killed at {step}/9 of a merge: the pool is half-merged"
            );
            outcomes.1 += 1;
        }
        probe.merged("2");
        assert_eq!(probe.digest(), after);
    }
    eprintln!(
        "killed merges: {} left the pool as before, {} fully merged",
        outcomes.0, outcomes.1
    );
}

/// A first merge builds the database beside the empty pool and renames it into place:
/// SIGKILLed at any point, the pool has no release or the whole one, and merging again
/// completes it without leaving a half-built file behind.
#[test]
fn a_first_merge_killed_at_any_point_leaves_an_empty_or_full_pool() {
    let e = env();
    let r1 = e.root.join("r1");
    write_items(&r1, 0..4000, 40);
    e.publish(&r1, "1", None, &["--shard-items", "200"]);
    let started = std::time::Instant::now();
    e.merged("1");
    let full_time = started.elapsed();
    let after = e.digest();

    let mut outcomes = (0, 0);
    for step in 1..=8u32 {
        let pool = e.root.join(format!("first-{step}"));
        e.merge_killed_after("1", &pool, full_time * step / 9);
        let probe = e.at(&pool);
        if pool.join("pool.sqlite").exists() {
            let state = probe.digest();
            let empty = probe.one("SELECT count(*) FROM releases") == 0
                && probe.one("SELECT count(*) FROM items") == 0;
            if empty {
                outcomes.0 += 1;
            } else {
                assert_eq!(
                    state, after,
                    "killed at {step}/9 of a first merge: the pool is half-merged"
                );
                outcomes.1 += 1;
            }
        } else {
            outcomes.0 += 1;
        }
        probe.merged("1");
        assert_eq!(probe.digest(), after);
        let leftovers: Vec<_> = std::fs::read_dir(&pool)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".pool-building-") || n.starts_with(".merge-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    eprintln!(
        "killed first merges: {} left the pool empty, {} fully merged",
        outcomes.0, outcomes.1
    );
}

#[test]
fn extract_writes_chosen_members_and_catches_damage() {
    let e = env();
    e.release_one(0..12, 900, &["--shard-items", "4"]);
    let out = e.root.join("out");
    let r = run(&[
        "extract",
        "--pool",
        s(&e.pool),
        "--where",
        "l.score < 5",
        "--out",
        s(&out),
        "--ext",
        "jpg",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["items"], 5);
    for i in 0..5 {
        let bytes = std::fs::read(out.join(format!("danbooru-{}.jpg", 1000 + i))).unwrap();
        assert_eq!(bytes, item_files(i, "", 900).1);
    }
    assert!(
        !out.join("danbooru-1000.json").exists(),
        "--ext jpg wrote a json"
    );

    let named = e.root.join("named");
    let r = run(&[
        "extract",
        "--pool",
        s(&e.pool),
        "--where",
        "l.key = 'danbooru-1001'",
        "--out",
        s(&named),
        "--names",
        "booru",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut names: Vec<String> = std::fs::read_dir(&named)
        .unwrap()
        .map(|d| d.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "danbooru - 1001 - s1 ~ c1 (a1).jpg",
            "danbooru - 1001 - s1 ~ c1 (a1).json"
        ]
    );

    // A damaged shard is caught by the member hashes.
    let shard = e.one("SELECT shard FROM items WHERE key = 'danbooru-1002'");
    let path = e
        .pool
        .join(format!("test-ds/shards/{}.tar", shard.as_str().unwrap()));
    let mut bytes = std::fs::read(&path).unwrap();
    let offset = e.one("SELECT m.offset FROM members m JOIN items i ON i.id = m.item AND i.shard = m.shard WHERE i.key = 'danbooru-1002' AND m.ext = 'jpg'");
    bytes[offset.as_u64().unwrap() as usize + 10] ^= 1;
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let fresh = e.root.join("fresh");
    let r = run(&[
        "extract",
        "--pool",
        s(&e.pool),
        "--where",
        "l.key = 'danbooru-1002'",
        "--out",
        s(&fresh),
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("member `danbooru-1002.jpg` in shard")
            && r.stderr.contains("does not match its blake3"),
        "{}",
        r.stderr
    );
    // A condition that writes is refused like any query.
    let r = run(&[
        "extract",
        "--pool",
        s(&e.pool),
        "--where",
        "1) ; DELETE FROM items; --",
        "--out",
        s(&out),
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("the SQL holds more than one statement (`DELETE FROM items;"),
        "{}",
        r.stderr
    );
    assert_eq!(e.one("SELECT count(*) FROM items"), 12);
}

#[test]
fn export_writes_tsv_and_json_lines() {
    let e = env();
    e.release_one(0..9, 50, &[]);
    let tsv = e.root.join("items.tsv");
    let r = run(&[
        "export",
        "--pool",
        s(&e.pool),
        "--format",
        "tsv",
        "--out",
        s(&tsv),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let text = std::fs::read_to_string(&tsv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10);
    let header: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(header[1], "key");
    let row: Vec<&str> = lines[1].split('\t').collect();
    assert_eq!(row.len(), header.len());
    assert_eq!(row[1], "danbooru-1000");
    let general = header.iter().position(|h| *h == "tags_general").unwrap();
    assert_eq!(row[general], "g0 solo");

    let jsonl = e.root.join("items.jsonl");
    let r = run(&[
        "export",
        "--pool",
        s(&e.pool),
        "--format",
        "jsonl",
        "--out",
        s(&jsonl),
        "--where",
        "l.score >= 4",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0]["tags"]["character"], serde_json::json!(["c4"]));
    assert_eq!(rows[0]["record"]["post_id"], 1004);
    assert_eq!(rows[0]["added_in"], "1");
}

/// Parquet output read back by pyarrow (from PyPI; `.ci/run` installs it), a reader we did
/// not write: same rows and values as the JSON Lines export, typed columns.
#[test]
fn export_writes_parquet_that_pyarrow_reads() {
    let e = env();
    e.release_one(0..25, 50, &[]);
    let parquet = e.root.join("items.parquet");
    let r = run(&[
        "export",
        "--pool",
        s(&e.pool),
        "--format",
        "parquet",
        "--out",
        s(&parquet),
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("\"items\":25"), "{}", r.stdout);
    let jsonl = e.root.join("items.jsonl");
    assert_eq!(
        run(&[
            "export",
            "--pool",
            s(&e.pool),
            "--format",
            "jsonl",
            "--out",
            s(&jsonl)
        ])
        .code,
        0
    );
    let check = r#"
import json, sys
import pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
rows = [json.loads(l) for l in open(sys.argv[2])]
assert t.num_rows == len(rows) == 25, (t.num_rows, len(rows))
assert str(t.schema.field("score").type) == "int64", t.schema
assert str(t.schema.field("quality").type) == "double", t.schema
for i, row in enumerate(rows):
    for col in ("key", "booru", "score", "year", "shard", "added_in"):
        assert t.column(col)[i].as_py() == row[col], (col, i)
    assert t.column("tags_character")[i].as_py() == " ".join(row["tags"]["character"])
    assert json.loads(t.column("record")[i].as_py()) == row["record"]
    assert t.column("quality")[i].as_py() is None
print("ok")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", check])
        .arg(&parquet)
        .arg(&jsonl)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pyarrow check failed (is pyarrow installed? see .ci/run): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tag_lists_systematize_tags_and_conflicts_show_disagreement() {
    let e = env();
    let r1 = e.root.join("r1");
    std::fs::create_dir_all(&r1).unwrap();
    let put = |key: &str, booru: &str, tags: &str| {
        std::fs::write(
            r1.join(format!("{key}.json")),
            format!(r#"{{"booru":"{booru}","year":2020,"posted":"2020-01-01","tags":{tags}}}"#),
        )
        .unwrap();
    };
    put(
        "danbooru-1",
        "danbooru",
        r#"{"character":["hatsune_miku"],"copyright":["vocaloid"]}"#,
    );
    put(
        "gelbooru-2",
        "gelbooru",
        r#"{"character":["Hatsune Miku"],"copyright":["vocaloid_(series)"]}"#,
    );
    put(
        "konachan-3",
        "konachan",
        r#"{"general":["hatsune_miku"],"copyright":["project_diva"]}"#,
    );
    e.publish(&r1, "1", None, &[]);
    e.merged("1");

    let list = e.root.join("tags.csv");
    std::fs::write(
        &list,
        "TAG_CAT;TAG_ID;TAG_NAME;TAG_CNT;FR_ID;MAL_ID;MAL_NAME;MAL_CNT;ALIASES\n\
         3;10;vocaloid;90000;10;;;;vocaloid_(series)\n\
         3;11;project_diva;3000;10;;;;\n\
         4;20;hatsune_miku;80000;10;5;Hatsune Miku;100;\n",
    )
    .unwrap();
    let r = run(&["tags", "import", s(&list), "--pool", s(&e.pool), "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    e.assert_counts_exact();
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (
            report["tags"].as_u64(),
            report["franchises"].as_u64(),
            report["aliases"].as_u64()
        ),
        (Some(3), Some(1), Some(1))
    );
    // The two spellings of the character and the aliased copyright now count as one.
    let rows = run(&[
        "query",
        "--pool",
        s(&e.pool),
        "character-copyrights",
        "--format",
        "json",
    ]);
    let rows: serde_json::Value = serde_json::from_str(&rows.stdout).unwrap();
    assert_eq!(
        rows,
        serde_json::json!([{"character": "hatsune_miku", "copyright": "vocaloid", "items": 2, "share": 1.0}])
    );
    let fr = run(&[
        "query",
        "--pool",
        s(&e.pool),
        "franchises",
        "--format",
        "json",
    ]);
    let fr: serde_json::Value = serde_json::from_str(&fr.stdout).unwrap();
    assert_eq!(
        fr,
        serde_json::json!([{"franchise": "vocaloid", "copyrights": 2, "items_tagged": 3}])
    );
    assert_eq!(
        e.one("SELECT mal_id FROM tag_info WHERE name = 'hatsune_miku'"),
        5
    );

    let c = run(&[
        "tags",
        "conflicts",
        "--pool",
        s(&e.pool),
        "--format",
        "json",
    ]);
    assert_eq!(c.code, 0, "{}", c.stderr);
    let c: serde_json::Value = serde_json::from_str(&c.stdout).unwrap();
    assert_eq!(c.as_array().unwrap().len(), 1, "{c}");
    assert_eq!(c[0]["tag"], "hatsune_miku");
    assert_eq!(c[0]["tag_list_says"], "character");
    assert!(
        c[0]["seen_as"]
            .as_str()
            .unwrap()
            .contains("general on konachan"),
        "{c}"
    );

    // A malformed list names its bad lines and changes nothing.
    let before = e.digest();
    let info_before = e.one("SELECT count(*) FROM tag_info");
    std::fs::write(
        &list,
        "TAG_CAT;TAG_ID;TAG_NAME\n4;30;new_tag\n7;31;bad\n4;x;worse\n",
    )
    .unwrap();
    let r = run(&["tags", "import", s(&list), "--pool", s(&e.pool)]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("line 3: TAG_CAT `7`") && r.stderr.contains("line 4: TAG_ID `x`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("the pool is unchanged"), "{}", r.stderr);
    assert_eq!(e.one("SELECT count(*) FROM tag_info"), info_before);
    assert_eq!(e.digest(), before);
}

#[test]
fn a_format_3_pool_is_migrated_with_its_provenance_and_history_kept() {
    let t = tempfile::tempdir().unwrap();
    let pool = t.path().join("pool");
    std::fs::create_dir(&pool).unwrap();
    // A pool as seedpool wrote it at format 3, with provenance and history of two
    // releases, made by that format's own migrations.
    {
        let db = rusqlite::Connection::open(pool.join("pool.sqlite")).unwrap();
        for step in &seedpool::pool::schema::MIGRATIONS[..3] {
            db.execute_batch(step).unwrap();
        }
        db.execute_batch(&format!(
            "PRAGMA foreign_keys = OFF; PRAGMA application_id = {}; PRAGMA user_version = 3;
             INSERT INTO provenance(item, release, action, hash) VALUES
                 (7, 1, 'added', 'h7'), (3, 1, 'added', 'h3'), (3, 2, 'changed', 'h3b'),
                 (7, 2, 'removed', 'h7');
             INSERT INTO item_history(item, release, hash, shard, record) VALUES
                 (3, 2, 'h3', 's1', '{{\"score\": 1}}');
             INSERT INTO items(id, dataset, key, shard, hash, volume, record, md5, added_in) VALUES
                 (3, 1, 'k3', 's2', 'h3b', 'v', '{{\"score\": 2}}', 'abc', 1);
             INSERT INTO members(item, ext, offset, length, blake3) VALUES (3, 'jpg', 512, 100, 'b');",
            seedpool::pool::schema::APPLICATION_ID
        ))
        .unwrap();
    }
    let q = |sql: &str| {
        let r = run(&["query", "--pool", s(&pool), "--sql", sql, "--format", "csv"]);
        assert_eq!(r.code, 0, "{sql}: {}", r.stderr);
        r.stdout
    };
    // Opening it migrates it: the rows are all there, keyed by release first.
    assert_eq!(
        q("SELECT release, item, action, hash FROM provenance"),
        "release,item,action,hash\n1,3,added,h3\n1,7,added,h7\n2,3,changed,h3b\n2,7,removed,h7\n"
    );
    assert_eq!(
        q(
            "SELECT h.release, h.item, h.hash, json_extract(r.record, '$.score') AS score
           FROM item_history h JOIN records r ON r.id = h.record_id"
        ),
        "release,item,hash,score\n2,3,h3,1\n"
    );
    // Format 7 keeps records in their own table; items point at theirs.
    assert_eq!(
        q("SELECT item, json_extract(record, '$.score') AS score FROM item_records"),
        "item,score\n3,2\n"
    );
    // Format 6 keys members by the shard that holds them.
    assert_eq!(
        q("SELECT shard, item, ext, offset FROM members"),
        "shard,item,ext,offset\ns2,3,jpg,512\n"
    );
    let db = rusqlite::Connection::open(pool.join("pool.sqlite")).unwrap();
    for (table, pk) in [
        ("provenance", &["release", "item"][..]),
        ("item_history", &["release", "item"]),
        ("members", &["shard", "item", "ext"]),
    ] {
        let mut st = db
            .prepare(&format!(
                "SELECT name FROM pragma_table_info('{table}') WHERE pk > 0 ORDER BY pk"
            ))
            .unwrap();
        let key: Vec<String> = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(key, pk, "{table}");
    }
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, seedpool::pool::schema::FORMAT_VERSION);
    let by_shard: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'items_by_shard'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(by_shard, 0, "format 5 has no index of items by shard");
}

#[test]
fn hit_parade_tags_find_tags_written_with_capitals_outside_ascii() {
    // The pool gave `Émile Zola` the canonical name `Émile_zola` (SQLite's ASCII-only
    // lower()), `--tags` looked for `émile_zola`, and the parade counted nothing.
    let e = env();
    let r1 = e.root.join("r1");
    write_items(&r1, 0..4, 64);
    let record = r1.join("danbooru-1001.json");
    let text = std::fs::read_to_string(&record)
        .unwrap()
        .replace(r#""general":["solo""#, r#""general":["Émile Zola","solo""#);
    assert!(text.contains("Émile Zola"));
    std::fs::write(&record, text).unwrap();
    e.publish(&r1, "1", None, &[]);
    e.merged("1");
    for written in ["Émile Zola", "émile_zola", "ÉMILE ZOLA"] {
        assert_eq!(
            artist_items(&e.pool, Some(written)),
            1,
            "--tags {written:?}"
        );
    }
}

#[test]
fn a_tag_list_imported_before_the_first_release_makes_the_pool() {
    // Before: "it is a non-empty folder without pool.sqlite" for an empty folder.
    let e = env();
    let list = e.root.join("tags.csv");
    std::fs::write(
        &list,
        "TAG_CAT;TAG_ID;TAG_NAME;TAG_CNT;FR_ID;MAL_ID;MAL_NAME;MAL_CNT;ALIASES\n\
         4;20;c1;80000;;;;;Character One\n",
    )
    .unwrap();
    for pool in [e.root.join("new"), e.root.join("empty")] {
        if pool.ends_with("empty") {
            std::fs::create_dir(&pool).unwrap();
        }
        let r = run(&["tags", "import", s(&list), "--pool", s(&pool), "--json"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(pool.join("pool.sqlite").is_file());
    }
    // A folder with other files in it is still not made a pool.
    let other = e.root.join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let r = run(&["tags", "import", s(&list), "--pool", s(&other)]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is not a seedpool pool"), "{}", r.stderr);
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);
    // A release merges into the pool the list made.
    let r1 = e.root.join("r1");
    write_items(&r1, 0..4, 64);
    e.publish(&r1, "1", None, &[]);
    let new = e.root.join("new");
    let r = run(&[
        "merge",
        s(&e.manifest("1")),
        "--pool",
        s(&new),
        "--from",
        s(&e.store),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(&[
        "query",
        "--pool",
        s(&new),
        "--sql",
        "SELECT count(*) AS n FROM item_tag_names WHERE tag = 'c1' AND category = 'character'",
        "--format",
        "csv",
    ]);
    assert_eq!(r.stdout, "n\n1\n", "{}", r.stderr);
}

/// Regression: a first merge into a pool with no release built a new database in its
/// place, so tags imported before it (as the guide allows) were silently lost.
#[test]
fn tags_imported_before_the_first_merge_survive_it() {
    let e = env();
    let list = e.root.join("tags.csv");
    std::fs::write(
        &list,
        "TAG_CAT;TAG_ID;TAG_NAME;TAG_CNT;FR_ID;MAL_ID;MAL_NAME;MAL_CNT;ALIASES\n\
         4;20;hatsune_miku;80000;10;5;Hatsune Miku;100;miku\n",
    )
    .unwrap();
    let r = run(&["tags", "import", s(&list), "--pool", s(&e.pool)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r1 = e.root.join("r1");
    write_items(&r1, 0..4, 100);
    e.publish(&r1, "1", None, &[]);
    e.merged("1");
    let conn = rusqlite::Connection::open(e.pool.join("pool.sqlite")).unwrap();
    let aliases: i64 = conn
        .query_row(
            "SELECT count(*) FROM tag_aliases WHERE alias = 'miku'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(aliases, 1);
}
