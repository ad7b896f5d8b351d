//! Hostile content from a trusted publisher: releases signed by the key the pool
//! trusts, whose manifests, torrents, indexes or shards are built to crash seedpool,
//! fill a disk or lose files. Each test is named after what it proves is refused, and
//! checks that the message names the file, shard or item and the problem, and that the
//! pool and the output folders are as they were.
//!
//! The CLI runs in process (`common::run`) where it can.

mod common;

use std::path::PathBuf;

use common::*;

/// A pool that merged release 1 (items 0..4, two a shard) of a store that also holds
/// release 2 (items 0..6, so one new shard of items 4 and 5), both signed by the test
/// key. Each case works on copies, so it starts from the same state.
struct Fixture {
    _t: tempfile::TempDir,
    root: PathBuf,
    store: PathBuf,
    pool: PathBuf,
    /// The shard release 2 adds.
    new_shard: String,
}

fn fixture() -> Fixture {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().to_path_buf();
    let key = fixed_key(&root);
    let store = root.join("store");
    let rel = root.join("r");
    write_items(&rel, 0..4, 700);
    let mut args = publish_args(s(&rel), s(&store), s(&key), "1");
    args.extend(["--shard-items", "2"]);
    assert_eq!(run(&args).code, 0);
    write_items(&rel, 4..6, 700);
    let parent = store.join("test-ds-1.manifest.json");
    let mut args = publish_args(s(&rel), s(&store), s(&key), "2");
    args.extend(["--shard-items", "2", "--parent", s(&parent)]);
    let r = run(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let pool = root.join("pool");
    let r = run(&["merge", s(&parent), "--pool", s(&pool), "--from", s(&store)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let one = Published::new(&store, "1").manifest();
    let two = Published::new(&store, "2").manifest();
    let new_shard = two
        .shards
        .iter()
        .find(|s| !one.shards.iter().any(|o| o.id == s.id))
        .unwrap()
        .id
        .to_hex();
    Fixture {
        _t: t,
        root,
        store,
        pool,
        new_shard,
    }
}

/// A copy of the fixture's store and pool, for one hostile case.
struct Case {
    store: PathBuf,
    pool: PathBuf,
    release: Published,
}

impl Fixture {
    /// Runs `sql` on the index of a copy of release 2, signs it, and expects both
    /// `verify` and `merge` to refuse it with every one of `expect`.
    fn index_edit_refused(&self, name: &str, sql: &str, expect: &[&str]) {
        let case = self.case(name);
        case.release.edit_index(sql);
        case.release.sign(|_| {});
        case.verify_refused(expect);
        case.merge_refused(expect);
    }

    fn case(&self, name: &str) -> Case {
        let dir = self.root.join(name);
        let store = dir.join("store");
        let pool = dir.join("pool");
        copy_dir(&self.store, &store);
        copy_dir(&self.pool, &pool);
        Case {
            release: Published::new(&store, "2"),
            store,
            pool,
        }
    }
}

impl Case {
    fn manifest(&self) -> PathBuf {
        self.release.manifest_path()
    }

    fn verify(&self) -> Run {
        run(&["verify", s(&self.manifest()), "--store", s(&self.store)])
    }

    fn merge(&self) -> Run {
        run(&[
            "merge",
            s(&self.manifest()),
            "--pool",
            s(&self.pool),
            "--from",
            s(&self.store),
        ])
    }

    /// Merges, expecting a refusal whose message holds every one of `expect`, and
    /// checks that the pool's folder did not change.
    fn merge_refused(&self, expect: &[&str]) -> String {
        let before = tree(&self.pool);
        let r = self.merge();
        assert_eq!(r.code, 1, "merge accepted it: {}{}", r.stdout, r.stderr);
        for e in expect {
            assert!(r.stderr.contains(e), "expected `{e}` in: {}", r.stderr);
        }
        assert!(
            !r.stderr.contains('\u{1b}'),
            "a raw escape reached the terminal"
        );
        assert_eq!(
            tree(&self.pool).keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>(),
            "the pool's files changed"
        );
        assert_eq!(tree(&self.pool), before, "the pool's bytes changed");
        r.stderr
    }

    fn verify_refused(&self, expect: &[&str]) {
        let r = self.verify();
        assert_eq!(r.code, 1, "verify accepted it: {}{}", r.stdout, r.stderr);
        for e in expect {
            assert!(r.stderr.contains(e), "expected `{e}` in: {}", r.stderr);
        }
    }
}

/// Rewrites the header at `at` with `edit` and fixes its checksum.
fn edit_header(bytes: &mut [u8], at: usize, edit: impl FnOnce(&mut [u8])) {
    let h = &mut bytes[at..at + 512];
    edit(h);
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn set_name(h: &mut [u8], name: &[u8]) {
    h[..100].fill(0);
    h[..name.len()].copy_from_slice(name);
}

#[test]
fn hostile_tar_structure_is_refused_by_verify_and_merge() {
    let f = fixture();
    let good = std::fs::read(f.store.join(format!("test-ds/shards/{}.tar", f.new_shard))).unwrap();
    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "dotdot",
            Box::new(|b| edit_header(b, 0, |h| set_name(h, b"../danbooru-1004.jpg"))),
            "has a bad member name at byte 0",
        ),
        (
            "absolute",
            Box::new(|b| edit_header(b, 0, |h| set_name(h, b"/tmp/danbooru-1004.jpg"))),
            "has a bad member name at byte 0",
        ),
        (
            "symlink",
            Box::new(|b| {
                edit_header(b, 0, |h| {
                    h[156] = b'2';
                    h[157..168].copy_from_slice(b"/etc/passwd");
                })
            }),
            "member type `2` (a symbolic link) is not a regular file",
        ),
        (
            "hardlink",
            Box::new(|b| edit_header(b, 0, |h| h[156] = b'1')),
            "(a hard link) is not a regular file",
        ),
        (
            "device",
            Box::new(|b| edit_header(b, 0, |h| h[156] = b'3')),
            "(a character device) is not a regular file",
        ),
        (
            "nul",
            Box::new(|b| edit_header(b, 0, |h| h[5] = 0)),
            "holds a NUL byte inside it",
        ),
        (
            "past-end",
            Box::new(|b| edit_header(b, 0, |h| h[124..136].copy_from_slice(b"07777777777\0"))),
            "runs past the end of the file",
        ),
        (
            "mode",
            Box::new(|b| edit_header(b, 0, |h| h[100..108].copy_from_slice(b"0004755\0"))),
            "header field `mode` of member `danbooru-100",
        ),
        (
            "trailing",
            Box::new(|b| b.extend_from_slice(b"hidden payload")),
            "bytes follow the end-of-archive blocks",
        ),
        (
            "no-end",
            Box::new(|b| {
                let n = b.len() - 1024;
                b.truncate(n);
            }),
            "truncated",
        ),
        (
            "random",
            Box::new(|b| {
                for (i, x) in b.iter_mut().enumerate() {
                    *x = (i as u32).wrapping_mul(2654435761).to_le_bytes()[2];
                }
            }),
            "is not a valid seedpool tar at byte 0",
        ),
    ];
    for (name, edit, expect) in cases {
        let case = f.case(name);
        let mut bytes = good.clone();
        edit(&mut bytes);
        let id = case.release.replace_shard(&f.new_shard, &bytes);
        case.release.sign(|_| {});
        case.verify_refused(&[&format!("{id}.tar"), expect]);
        case.merge_refused(&[&format!("{id}.tar"), expect]);
    }
    // Untouched, the same release passes both.
    let case = f.case("good");
    assert_eq!(case.verify().code, 0);
    assert_eq!(case.merge().code, 0);
}

#[test]
fn index_members_that_the_shard_does_not_hold_are_refused_by_verify_and_merge() {
    // Before: `verify` said ok, and `extract` then said "damaged" (or aborted on an
    // allocation of 2^62 bytes).
    let f = fixture();
    for (name, sql, expect) in [
        ("hash", "UPDATE members SET blake3 = printf('%064d', 0) WHERE key = 'danbooru-1004' AND ext = 'jpg'", "member `danbooru-1004.jpg` as the index says: its blake3 is"),
        ("huge", "UPDATE members SET length = 4611686018427387904 WHERE key = 'danbooru-1005' AND ext = 'jpg'", "with 4611686018427387904 bytes, the shard at byte"),
        ("negative", "UPDATE members SET length = -1 WHERE key = 'danbooru-1005' AND ext = 'jpg'", "length `-1`"),
        ("offset", "UPDATE members SET offset = 7 WHERE key = 'danbooru-1004' AND ext = 'json'", "the index places it at byte 7"),
        ("absent", "INSERT INTO members VALUES ('danbooru-1004', 'png', 512, 3, printf('%064d', 0))", "member `danbooru-1004.png` as the index says: the index lists it, the shard does not hold it"),
    ] {
        f.index_edit_refused(name, sql, &[expect]);
    }
}

#[test]
fn an_index_cannot_unpack_past_seedpools_own_ceiling() {
    let f = fixture();
    // The manifest declares a huge unpacked size (a bomb would): seedpool's ceiling for
    // six items is far below it, whatever the signature says.
    let case = f.case("declared");
    case.release.sign(|m| m.index.uncompressed_size = 3 << 30);
    let msg = case.merge_refused(&[
        "2.sqlite.zst` declares 3221225472 unpacked bytes, more than seedpool's ceiling",
        "pass --index-limit",
    ]);
    assert!(msg.contains("for a release of 6 items"), "{msg}");
    case.verify_refused(&["more than seedpool's ceiling"]);
    // A one-stream index of 1 GiB of zeros (a few dozen KB compressed), declared at its
    // size, then declared small: refused by the ceiling, then by the decompression.
    let zeros = std::io::Read::take(std::io::repeat(0), 1 << 30);
    let bomb = zstd::stream::encode_all(zeros, 1).unwrap();
    assert!(bomb.len() < 200_000, "{}", bomb.len());
    for (name, declared, expect) in [
        ("bomb", 1u64 << 30, "more than seedpool's ceiling"),
        (
            "bomb-small",
            1 << 20,
            "decompresses to more than the 1048576 bytes its manifest declares",
        ),
    ] {
        let case = f.case(name);
        std::fs::write(case.release.index_path(), &bomb).unwrap();
        case.release.sign(|m| m.index.uncompressed_size = declared);
        case.merge_refused(&[expect]);
    }
    // --index-limit raises the ceiling for a release that needs it (here: refused only
    // by the frames, which unpack past what the manifest declares).
    let case = f.case("raised");
    case.release.sign(|m| m.index.uncompressed_size = 1 << 27);
    let r = run(&[
        "merge",
        s(&case.manifest()),
        "--pool",
        s(&case.pool),
        "--from",
        s(&case.store),
        "--index-limit",
        "1GiB",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn an_index_schema_other_than_seedpools_is_refused() {
    let f = fixture();
    for (name, sql, expect) in [
        // A virtual column computed on each read turned a 22 KB index into a 2.95 GB pool.
        ("generated", "ALTER TABLE items ADD COLUMN x TEXT GENERATED ALWAYS AS (hex(zeroblob(1000000))) VIRTUAL", "its schema has table `items`"),
        ("view", "CREATE VIEW v AS SELECT 1", "its schema has view `v`"),
        ("trigger", "CREATE TRIGGER t AFTER INSERT ON meta BEGIN SELECT 1; END", "its schema has trigger `t`"),
        ("index", "CREATE INDEX x ON items(record COLLATE NOCASE)", "its schema has index `x`"),
        ("stats", "ANALYZE", "its schema has table `sqlite_stat1`"),
        ("dropped", "DROP TABLE tombstones", "its schema lacks table `tombstones`"),
    ] {
        f.index_edit_refused(name, sql, &["2.sqlite.zst` is not a seedpool index of format 1", expect]);
    }
}

#[test]
fn records_and_tags_are_bounded_per_item() {
    let f = fixture();
    let big = "UPDATE items SET record = '{\"pad\":\"' || hex(zeroblob(600000)) || '\"}' WHERE key = 'danbooru-1004'";
    let many = "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
                INSERT INTO tags SELECT 'danbooru-1005', 'general', 't' || i FROM n";
    let long = "INSERT INTO tags VALUES ('danbooru-1005', 'general', hex(zeroblob(600)))";
    for (name, sql, expect) in [
        ("record", big, "item `danbooru-1004` has a record of 1200010 bytes, more than the 1048576 a record may have"),
        ("tags", many, "item `danbooru-1005` has more than 10000 tags"),
        ("long", long, "item `danbooru-1005` has tag `"),
    ] {
        f.index_edit_refused(name, sql, &[expect]);
    }
}

#[test]
fn unsafe_item_keys_volumes_and_records_are_refused_at_merge() {
    let f = fixture();
    // Only the item row is renamed: its members, under the old key, then describe a
    // dead member of the shard, so the shard passes and the key itself is judged.
    let rename = |to: &str| format!("UPDATE items SET key = {to} WHERE key = 'danbooru-1004'");
    for (name, sql, expect) in [
        (
            "dotdot",
            rename("'../../etc/x'"),
            "item `../../etc/x` is refused: item key `../../etc/x` contains `.`",
        ),
        (
            "absolute",
            rename("'/etc/x'"),
            "item `/etc/x` is refused: item key `/etc/x` contains `/`",
        ),
        (
            "newline",
            rename("'a' || char(10) || 'b'"),
            "contains `\\n`",
        ),
        ("empty", rename("''"), "item key `` is empty"),
        (
            "escape",
            rename("'x' || char(27) || ']0;owned' || char(7)"),
            "\\u{1b}]0;owned",
        ),
        // A TEXT column stores numbers as text; a blob it keeps as it is.
        ("blob", rename("X'2e2e2f78'"), "has a key of type Blob"),
        (
            "volume",
            "UPDATE items SET volume = '../v' WHERE key = 'danbooru-1004'".to_string(),
            "item `danbooru-1004` is refused: volume `../v` contains `/`",
        ),
        (
            "hash",
            "UPDATE items SET hash = 'x' WHERE key = 'danbooru-1004'".to_string(),
            "item `danbooru-1004` has hash `x`, not 64 lowercase hex digits",
        ),
        (
            "json",
            "UPDATE items SET record = 'not {json' WHERE key = 'danbooru-1005'".to_string(),
            "item `danbooru-1005` has a record that is not JSON",
        ),
    ] {
        let case = f.case(name);
        case.release.edit_index(&sql);
        case.release.sign(|_| {});
        case.merge_refused(&["2.sqlite.zst", expect]);
    }
    // An extension that climbs out of the output folder is refused as a name before
    // any shard is read for it.
    let case = f.case("ext");
    case.release.edit_index(
        "UPDATE members SET ext = 'x/../..' WHERE key = 'danbooru-1004' AND ext = 'jpg'",
    );
    case.release.sign(|_| {});
    case.merge_refused(&[
        "item `danbooru-1004` has a member refused as a file name",
        "`danbooru-1004.x/../..`",
    ]);
    case.verify_refused(&["has a member refused as a file name"]);
}

#[test]
fn a_torrent_that_differs_from_the_manifest_is_refused_before_anything_is_copied() {
    let f = fixture();
    let case = f.case("extra-file");
    case.release
        .sign_torrent(None, &[("shards/evil.tar", b"x")], |_| {});
    case.merge_refused(&["test-ds-2.torrent` does not match the manifest: it holds `shards/evil.tar`, which the manifest does not list"]);
    case.verify_refused(&["it holds `shards/evil.tar`"]);
    let case = f.case("piece-length");
    let pl = case.release.manifest().torrent.piece_length;
    case.release.sign_torrent(Some(pl * 2), &[], |_| {});
    case.merge_refused(&[&format!(
        "its piece length is {}, the manifest says {pl}",
        pl * 2
    )]);
    case.verify_refused(&["its piece length is"]);
}

#[test]
fn manifests_with_duplicate_keys_or_bad_fields_are_refused() {
    let f = fixture();
    let case = f.case("dup");
    let text = std::fs::read_to_string(case.manifest()).unwrap();
    let twice = text.replacen(
        "\"version\": \"2\",",
        "\"version\": \"2\", \"version\": \"2\",",
        1,
    );
    std::fs::write(case.manifest(), twice).unwrap();
    case.merge_refused(&[
        "test-ds-2.manifest.json` is not valid JSON: the key `version` appears twice in one object",
    ]);
    let case = f.case("created");
    case.release
        .sign(|m| m.created = "2026-13-01T00:00:00Z".into());
    case.merge_refused(&["`created` is `2026-13-01T00:00:00Z`, not an RFC 3339 UTC time"]);
    let case = f.case("volume");
    case.release.sign(|m| m.shards[0].volume = "a b".into());
    case.merge_refused(&["volume `a b` contains ` `"]);
}

#[test]
fn two_datasets_whose_shards_share_ids_each_get_their_own_files() {
    // A fork republishes the same items under another name: same shards, same IDs.
    let t = tempfile::tempdir().unwrap();
    let key = fixed_key(t.path());
    let store = t.path().join("store");
    let rel = t.path().join("r");
    write_items(&rel, 0..4, 300);
    for dataset in ["test-ds", "fork-ds"] {
        let mut args = publish_args(s(&rel), s(&store), s(&key), "1");
        args[3] = dataset;
        assert_eq!(run(&args).code, 0);
    }
    let pool = t.path().join("pool");
    for dataset in ["test-ds", "fork-ds"] {
        let m = store.join(format!("{dataset}-1.manifest.json"));
        let r = run(&[
            "merge",
            s(&m),
            "--pool",
            s(&pool),
            "--from",
            s(&store),
            "--json",
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(report["shards_missing"], 0, "{dataset}: {report}");
    }
    let a: Vec<_> = std::fs::read_dir(pool.join("test-ds/shards"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let b: Vec<_> = std::fs::read_dir(pool.join("fork-ds/shards"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(a.len(), b.len());
    assert!(!b.is_empty());
    let out = t.path().join("out");
    let r = run(&[
        "extract",
        "--pool",
        s(&pool),
        "--where",
        "l.dataset = (SELECT id FROM datasets WHERE name = 'fork-ds')",
        "--out",
        s(&out),
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (report["items"].as_u64(), report["not_downloaded"].as_u64()),
        (Some(4), Some(0))
    );
}

#[test]
fn a_stale_incoming_file_is_removed_by_the_next_merge() {
    let f = fixture();
    let case = f.case("stale");
    let stale = case
        .pool
        .join("test-ds/shards/.incoming-4194304-0123456789abcdef");
    std::fs::write(&stale, b"left by a killed merge").unwrap();
    assert_eq!(case.merge().code, 0);
    assert!(!stale.exists());
}

#[test]
fn extract_never_writes_through_a_planted_link_and_never_overwrites() {
    let f = fixture();
    let out = f.root.join("out");
    let outside = f.root.join("outside");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(&outside, b"precious").unwrap();
    // A link where extract wrote its temporary file, one where a result goes, and a
    // user's file with other bytes under a result's name.
    std::os::unix::fs::symlink(&outside, out.join(".danbooru-1000.jpg.part")).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("danbooru-1001.jpg")).unwrap();
    std::fs::write(out.join("danbooru-1002.jpg"), b"mine").unwrap();
    let before_outside = std::fs::read(&outside).unwrap();
    let r = run(&[
        "extract",
        "--pool",
        s(&f.pool),
        "--where",
        "1",
        "--out",
        s(&out),
        "--json",
    ]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("2 files already exist in")
            && r.stderr
                .contains("`danbooru-1001.jpg`, `danbooru-1002.jpg`")
            && r.stderr.contains("6 other files were written")
            && r.stderr.contains("--overwrite"),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read(&outside).unwrap(),
        before_outside,
        "wrote through a link"
    );
    assert_eq!(
        std::fs::read(out.join("danbooru-1002.jpg")).unwrap(),
        b"mine"
    );
    assert_eq!(
        std::fs::read(out.join("danbooru-1000.jpg")).unwrap(),
        item_files(0, "", 700).1
    );
    let leftovers: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".seedpool-extract-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Run again: what is there with the same bytes is skipped; --overwrite replaces
    // the names (the link itself, not its target).
    let r = run(&[
        "extract",
        "--pool",
        s(&f.pool),
        "--where",
        "1",
        "--out",
        s(&out),
        "--overwrite",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (report["files"].as_u64(), report["unchanged"].as_u64()),
        (Some(2), Some(6))
    );
    assert_eq!(std::fs::read(&outside).unwrap(), before_outside);
    assert!(!std::fs::symlink_metadata(out.join("danbooru-1001.jpg"))
        .unwrap()
        .is_symlink());
}

#[test]
fn extract_gives_items_that_would_share_a_name_their_own() {
    // Two posts with the same booru, id and tags make the same `--names booru` name:
    // before, 177 items were reported and 174 files were on disk.
    let t = tempfile::tempdir().unwrap();
    let key = fixed_key(t.path());
    let rel = t.path().join("r");
    std::fs::create_dir_all(&rel).unwrap();
    for (key_name, bytes) in [("danbooru-1", b"one".as_slice()), ("copy-1", b"two")] {
        std::fs::write(rel.join(format!("{key_name}.jpg")), bytes).unwrap();
        std::fs::write(
            rel.join(format!("{key_name}.json")),
            br#"{"booru":"danbooru","post_id":1}"#,
        )
        .unwrap();
    }
    let store = t.path().join("store");
    assert_eq!(run(&publish_args(s(&rel), s(&store), s(&key), "1")).code, 0);
    let pool = t.path().join("pool");
    let m = store.join("test-ds-1.manifest.json");
    assert_eq!(
        run(&["merge", s(&m), "--pool", s(&pool), "--from", s(&store)]).code,
        0
    );
    let out = t.path().join("out");
    let r = run(&[
        "extract",
        "--pool",
        s(&pool),
        "--where",
        "1",
        "--out",
        s(&out),
        "--names",
        "booru",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(
            "`danbooru-1` took the name of an earlier item: written as `danbooru - 1 [danbooru-1]`"
        ),
        "{}",
        r.stdout
    );
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "danbooru - 1 [danbooru-1].jpg",
            "danbooru - 1 [danbooru-1].json",
            "danbooru - 1.jpg",
            "danbooru - 1.json"
        ]
    );
    assert_eq!(std::fs::read(out.join("danbooru - 1.jpg")).unwrap(), b"two");
}

#[test]
fn extract_on_a_tampered_pool_says_damaged_instead_of_aborting() {
    let f = fixture();
    let pool = f.root.join("tampered");
    copy_dir(&f.pool, &pool);
    rusqlite::Connection::open(pool.join("pool.sqlite"))
        .unwrap()
        .execute_batch("UPDATE members SET length = 4611686018427387904 WHERE ext = 'jpg'")
        .unwrap();
    let out = f.root.join("out-t");
    let r = run(&[
        "extract",
        "--pool",
        s(&pool),
        "--where",
        "l.key = 'danbooru-1000'",
        "--out",
        s(&out),
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("member `danbooru-1000.jpg` in shard") && r.stderr.contains("is damaged"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("0 files (0 bytes) were written"),
        "{}",
        r.stderr
    );
}

#[test]
fn queries_take_one_statement_stop_at_their_timeout_and_stream_to_their_limit() {
    let f = fixture();
    let p = s(&f.pool);
    let r = run(&["query", "--pool", p, "--sql", "SELECT 1; DELETE FROM items"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("more than one statement (`DELETE FROM items` follows the first)"),
        "{}",
        r.stderr
    );
    let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c";
    let started = std::time::Instant::now();
    let count =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    let r = run(&[
        "query",
        "--pool",
        p,
        "--sql",
        count,
        "--timeout",
        "1s",
        "--format",
        "csv",
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("ran longer than 1s and was stopped"),
        "{}",
        r.stderr
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    // With --limit, rows past it are never computed: an endless query ends.
    let r = run(&[
        "query", "--pool", p, "--sql", endless, "--limit", "3", "--format", "csv",
    ]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "x\n1\n2\n3\n"),
        "{}",
        r.stderr
    );
    let r = run(&[
        "query",
        "--pool",
        p,
        "--sql",
        "SELECT count(*) AS n FROM items",
        "--format",
        "json",
    ]);
    assert_eq!(r.stdout, "[{\"n\":4}]\n");
}

#[test]
fn two_merges_racing_to_create_a_pool_never_half_create_it() {
    let f = fixture();
    let m = f.store.join("test-ds-1.manifest.json");
    for round in 0..4 {
        let pool = f.root.join(format!("race-{round}"));
        let spawn = || {
            std::process::Command::new(assert_cmd::cargo::cargo_bin("seedpool"))
                .args(["merge", s(&m), "--pool", s(&pool), "--from", s(&f.store)])
                .output()
                .unwrap()
        };
        let (a, b) = std::thread::scope(|sc| {
            let a = sc.spawn(spawn);
            let b = sc.spawn(spawn);
            (a.join().unwrap(), b.join().unwrap())
        });
        for o in [&a, &b] {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                o.status.success()
                    || err.contains("is busy: another seedpool sync or merge is changing it"),
                "round {round}: {err}"
            );
        }
        assert!(
            a.status.success() || b.status.success(),
            "round {round}: neither merged"
        );
        let r = run(&[
            "query",
            "--pool",
            s(&pool),
            "--sql",
            "SELECT count(*) AS n FROM items",
            "--format",
            "csv",
        ]);
        assert_eq!(r.stdout, "n\n4\n", "round {round}: {}", r.stderr);
    }
}

#[test]
fn a_read_only_pool_can_be_queried() {
    let f = fixture();
    let pool = f.root.join("ro-pool");
    copy_dir(&f.pool, &pool);
    for side in ["pool.sqlite-wal", "pool.sqlite-shm"] {
        let _ = std::fs::remove_file(pool.join(side));
    }
    open_up(&f.root);
    let (mut cmd, switched) = unprivileged_seedpool(&f.root);
    use std::os::unix::fs::PermissionsExt;
    let lock_down = |mode| {
        std::fs::set_permissions(&pool, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::set_permissions(
            pool.join("pool.sqlite"),
            std::fs::Permissions::from_mode(mode & 0o666),
        )
        .unwrap();
    };
    lock_down(0o555);
    let out = cmd
        .args([
            "query",
            "--pool",
            s(&pool),
            "--sql",
            "SELECT count(*) AS n FROM items",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    lock_down(0o755);
    if !switched {
        eprintln!(
            "running as a user who may write anyway: the pool is read-only only by its modes"
        );
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n\n4\n");
}

#[test]
fn embeddings_seedpool_cannot_use_are_refused_item_by_item_and_nothing_else_is_lost() {
    use seedpool::imaging::embedding::{encode, MAX_DIMS};
    let t = tempfile::tempdir().unwrap();
    let key = fixed_key(t.path());
    let (store, rel, pool) = (
        t.path().join("store"),
        t.path().join("r"),
        t.path().join("pool"),
    );
    write_items(&rel, 0..7, 100);
    let space = serde_json::json!({"space": "s", "dims": 4});
    let embeddings = [
        (encode(&[1.0, 0.0, 0.0, 0.0]), space.clone()),
        (encode(&[0.9, 0.1, 0.0, 0.0]), space.clone()),
        ("!!not base64".to_string(), space.clone()),
        // Its space's vectors have 4 dimensions.
        (encode(&[1.0, 0.0, 0.0]), space.clone()),
        (encode(&vec![0.0; MAX_DIMS + 1]), space.clone()),
        // No space named: nothing to compare it with.
        (
            encode(&[1.0, 0.0, 0.0, 0.0]),
            serde_json::json!({"dims": 4}),
        ),
        // float16 infinity, four times.
        ("AHwAfAB8AHw=".to_string(), space.clone()),
    ];
    for (i, (embedding, embedder)) in embeddings.iter().enumerate() {
        let path = rel.join(format!("danbooru-{}.json", 1000 + i));
        let mut record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        record["embedding"] = embedding.clone().into();
        record["embedder"] = embedder.clone();
        std::fs::write(&path, record.to_string()).unwrap();
    }
    let r = run(&publish_args(s(&rel), s(&store), s(&key), "1"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let manifest = store.join("test-ds-1.manifest.json");
    let merge = |json: bool| {
        let mut args = vec![
            "merge",
            s(&manifest),
            "--pool",
            s(&pool),
            "--from",
            s(&store),
        ];
        if json {
            args.push("--json");
        }
        run(&args)
    };
    let m = merge(false);
    assert_eq!(m.code, 0, "{}", m.stderr);
    assert!(
        m.stderr.contains("warning: 5 records' `embedding` refused"),
        "{}",
        m.stderr
    );
    // Every item merged, with its record as published; only two have a vector.
    let sql = |q: &str| {
        let r = run(&["query", "--pool", s(&pool), "--sql", q, "--format", "csv"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.stdout
    };
    assert_eq!(sql("SELECT count(*) AS n FROM live"), "n\n7\n");
    assert_eq!(
        sql(
            "SELECT json_extract(record, '$.embedding') AS e FROM live WHERE key = 'danbooru-1002'"
        ),
        "e\n!!not base64\n"
    );
    assert_eq!(
        sql("SELECT i.key FROM item_vectors v JOIN vector_spaces s ON s.id = v.space JOIN items i ON i.id = v.item WHERE s.kind = 'embedding' ORDER BY i.key"),
        "key\ndanbooru-1000\ndanbooru-1001\n"
    );
    let similar = |key: &str| {
        run(&[
            "mine",
            "similar",
            key,
            "--by",
            "embedding",
            "--pool",
            s(&pool),
            "--json",
        ])
    };
    let r = similar("danbooru-1000");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["similar"][0]["key"], "danbooru-1001", "{v}");
    assert_eq!(v["similar"].as_array().unwrap().len(), 1, "{v}");
    for bad in ["danbooru-1002", "danbooru-1004", "danbooru-1006"] {
        let r = similar(bad);
        assert_eq!(r.code, 2, "{bad}: {}", r.stderr);
        assert!(r.stderr.contains("has no embedding"), "{bad}: {}", r.stderr);
    }
}
