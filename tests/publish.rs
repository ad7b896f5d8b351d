//! End-to-end tests of `seedpool publish` and `seedpool verify` driving the real binary.

mod common;

use std::path::Path;

use common::*;

fn manifest_json(store: &Path, version: &str) -> serde_json::Value {
    let path = store.join(format!("test-ds-{version}.manifest.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn publish_then_verify_a_release() {
    let t = tempfile::tempdir().unwrap();
    let (rel, store) = (t.path().join("release"), t.path().join("store"));
    write_items(&rel, 0..30, 3000);
    let key = fixed_key(t.path());
    let mut args = publish_args(s(&rel), s(&store), s(&key), "1");
    args.extend(["--shard-items", "10", "--json"]);
    let r = run(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["items"], 30);
    // Two volumes of 15 items each, at most 10 a shard: 2 shards each.
    assert_eq!(report["shards"], 4);
    for f in [
        "test-ds-1.manifest.json",
        "test-ds-1.torrent",
        "test-ds/index/1.sqlite.zst",
    ] {
        assert!(store.join(f).is_file(), "{f} missing");
    }
    assert!(
        !store.join(".seedpool-staging").exists(),
        "staging left behind"
    );
    let m = manifest_json(&store, "1");
    for shard in m["shards"].as_array().unwrap() {
        let path = store
            .join("test-ds/shards")
            .join(format!("{}.tar", shard["id"].as_str().unwrap()));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            blake3::hash(&bytes).to_hex().as_str(),
            shard["id"].as_str().unwrap()
        );
    }
    let idx = Index::open(&store, "1", t.path());
    assert_eq!(idx.count("SELECT count(*) FROM items"), 30);
    assert_eq!(idx.count("SELECT count(*) FROM members"), 60);
    assert_eq!(
        idx.count("SELECT count(*) FROM tags WHERE category = 'character'"),
        30
    );
    assert_eq!(
        idx.count("SELECT count(*) FROM items WHERE json_extract(record, '$.post_id') = 1007"),
        1
    );
    // Member offsets point at the member's bytes in the shard.
    let (shard, offset, length): (String, i64, i64) = idx
        .reader
        .connection()
        .query_row(
            "SELECT i.shard, m.offset, m.length FROM members m JOIN items i USING (key) WHERE key = 'danbooru-1007' AND ext = 'jpg'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let bytes = std::fs::read(store.join(format!("test-ds/shards/{shard}.tar"))).unwrap();
    assert_eq!(
        &bytes[offset as usize..(offset + length) as usize],
        &item_files(7, "", 3000).1[..]
    );

    let manifest = store.join("test-ds-1.manifest.json");
    let v = run(&["verify", s(&manifest), "--store", s(&store)]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    assert!(v.stdout.starts_with("ok: test-ds 1"), "{}", v.stdout);
}

#[test]
fn same_input_gives_identical_bytes_whatever_the_copy_order_and_mtimes() {
    let t = tempfile::tempdir().unwrap();
    let key = fixed_key(t.path());
    let a = t.path().join("a");
    write_items(&a, 0..40, 1500);
    // A second copy, written in reverse order, in subfolders, with other mtimes.
    let b = t.path().join("b");
    let mut names: Vec<_> = std::fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    names.reverse();
    for (i, n) in names.iter().enumerate() {
        let sub = b.join(format!("part{}", i % 3));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::copy(a.join(n), sub.join(n)).unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(sub.join(n))
            .unwrap();
        f.set_modified(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + i as u64),
        )
        .unwrap();
    }
    let (sa, sb) = (t.path().join("store-a"), t.path().join("store-b"));
    for (rel, store) in [(&a, &sa), (&b, &sb)] {
        let mut args = publish_args(s(rel), s(store), s(&key), "1");
        args.extend(["--shard-items", "7"]);
        let r = run(&args);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let (ta, tb) = (tree(&sa), tree(&sb));
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (k, v) in &ta {
        assert!(v == &tb[k], "{k} differs between the two publishes");
    }
    // SOURCE_DATE_EPOCH gives the same result as --created.
    let sc = t.path().join("store-c");
    let out = run_env(
        &[
            "publish",
            s(&a),
            "--dataset",
            "test-ds",
            "--version",
            "1",
            "--store",
            s(&sc),
            "--key",
            s(&key),
            "--shard-items",
            "7",
        ],
        &[("SOURCE_DATE_EPOCH", "1767323045")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(tree(&sc), ta);
    // Publishing the same release again into the same store changes nothing.
    let mut args = publish_args(s(&a), s(&sa), s(&key), "1");
    args.extend(["--shard-items", "7"]);
    let again = run(&args);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again
        .stdout
        .contains("already published with this exact content"));
    assert_eq!(tree(&sa), ta);
}

#[test]
fn incremental_release_writes_only_new_and_changed_items() {
    let t = tempfile::tempdir().unwrap();
    let key = fixed_key(t.path());
    let (r1, r2, store) = (
        t.path().join("r1"),
        t.path().join("r2"),
        t.path().join("store"),
    );
    write_items(&r1, 0..500, 2000);
    let mut args = publish_args(s(&r1), s(&store), s(&key), "1");
    args.extend(["--shard-items", "50"]);
    assert_eq!(run(&args).code, 0);

    // Release 2: 2% removed (spread over shards), 10% new, one record changed.
    write_items(&r2, 0..550, 2000);
    for i in (0..500).step_by(50) {
        for ext in ["jpg", "json"] {
            std::fs::remove_file(r2.join(format!("danbooru-{}.{ext}", 1000 + i))).unwrap();
        }
    }
    std::fs::write(
        r2.join("danbooru-1001.json"),
        r#"{"volume":"1x1-2021","score":1}"#,
    )
    .unwrap();
    let parent = store.join("test-ds-1.manifest.json");
    let mut args = publish_args(s(&r2), s(&store), s(&key), "2");
    args.extend(["--shard-items", "50", "--parent", s(&parent), "--json"]);
    let r = run(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["new_items"], 50);
    assert_eq!(report["changed_items"], 1);
    assert_eq!(report["removed_items"], 10);
    assert_eq!(report["repacked_shards"], 0);
    assert_eq!(report["tombstones"], 11);
    assert_eq!(report["items"], 540);

    let m1 = manifest_json(&store, "1");
    let m2 = manifest_json(&store, "2");
    let ids1: std::collections::BTreeSet<_> = m1["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let new: Vec<_> = m2["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !ids1.contains(s["id"].as_str().unwrap()))
        .collect();
    // Every release-1 shard is reused; the new shards hold the 50 new items and the changed one.
    assert_eq!(
        m2["counts"]["reused_shards"],
        m1["shards"].as_array().unwrap().len()
    );
    let new_items: u64 = new.iter().map(|s| s["items"].as_u64().unwrap()).sum();
    assert_eq!(new_items, 51);
    let new_bytes: u64 = new.iter().map(|s| s["size"].as_u64().unwrap()).sum();
    let all_bytes: u64 = m2["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["size"].as_u64().unwrap())
        .sum();
    assert!(
        new_bytes * 100 / all_bytes <= 11,
        "new shards are {new_bytes} of {all_bytes} bytes"
    );
    assert_eq!(m2["parent"]["version"], "1");
    let parent_hash = blake3::hash(&std::fs::read(&parent).unwrap())
        .to_hex()
        .to_string();
    assert_eq!(m2["parent"]["manifest_blake3"], parent_hash.as_str());

    let idx = Index::open(&store, "2", t.path());
    assert_eq!(idx.count("SELECT count(*) FROM items"), 540);
    assert_eq!(
        idx.count("SELECT count(*) FROM tombstones WHERE reason = 'removed'"),
        10
    );
    assert_eq!(
        idx.count(
            "SELECT count(*) FROM tombstones WHERE reason = 'changed' AND key = 'danbooru-1001'"
        ),
        1
    );
    assert_eq!(
        idx.count("SELECT json_extract(record, '$.score') FROM items WHERE key = 'danbooru-1001'"),
        1
    );
    let v = run(&[
        "verify",
        s(&store.join("test-ds-2.manifest.json")),
        "--store",
        s(&store),
    ]);
    assert_eq!(v.code, 0, "{}", v.stderr);

    // Release 3 removes most of one shard's items: that shard is repacked.
    let r3 = t.path().join("r3");
    std::fs::create_dir_all(&r3).unwrap();
    for e in std::fs::read_dir(&r2).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), r3.join(e.file_name())).unwrap();
    }
    let idx1 = Index::open(&store, "1", t.path());
    let victim: String = idx1
        .reader
        .connection()
        .query_row(
            "SELECT shard FROM items WHERE key = 'danbooru-1002'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let keys: Vec<String> = {
        let mut st = idx1
            .reader
            .connection()
            .prepare("SELECT key FROM items WHERE shard = ?1")
            .unwrap();
        st.query_map([&victim], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    for k in keys.iter().take(keys.len() * 3 / 4) {
        for ext in ["jpg", "json"] {
            let _ = std::fs::remove_file(r3.join(format!("{k}.{ext}")));
        }
    }
    let parent2 = store.join("test-ds-2.manifest.json");
    let mut args = publish_args(s(&r3), s(&store), s(&key), "3");
    args.extend(["--shard-items", "50", "--parent", s(&parent2), "--json"]);
    let r = run(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["repacked_shards"], 1);
    let m3 = manifest_json(&store, "3");
    assert!(m3["shards"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["id"] != victim.as_str()));
    let v = run(&[
        "verify",
        s(&store.join("test-ds-3.manifest.json")),
        "--store",
        s(&store),
    ]);
    assert_eq!(v.code, 0, "{}", v.stderr);
}

#[test]
fn verify_lists_each_bad_or_missing_file() {
    let t = tempfile::tempdir().unwrap();
    let (rel, store) = (t.path().join("release"), t.path().join("store"));
    write_items(&rel, 0..20, 1000);
    let key = fixed_key(t.path());
    let mut args = publish_args(s(&rel), s(&store), s(&key), "1");
    args.extend(["--shard-items", "5"]);
    assert_eq!(run(&args).code, 0);
    let m = manifest_json(&store, "1");
    let ids: Vec<&str> = m["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    let shard = |id: &str| store.join(format!("test-ds/shards/{id}.tar"));
    // Flip one byte in one shard, delete another.
    let mut bytes = std::fs::read(shard(ids[0])).unwrap();
    bytes[700] ^= 1;
    std::fs::write(shard(ids[0]), bytes).unwrap();
    std::fs::remove_file(shard(ids[1])).unwrap();
    let manifest = store.join("test-ds-1.manifest.json");
    let v = run(&["verify", s(&manifest), "--store", s(&store)]);
    assert_eq!(v.code, 1);
    assert!(
        v.stderr
            .contains(&format!("{}.tar` does not match its blake3", ids[0])),
        "{}",
        v.stderr
    );
    assert!(
        v.stderr.contains(&format!("{}.tar` is missing", ids[1])),
        "{}",
        v.stderr
    );
    assert!(v.stderr.contains("2 of"), "{}", v.stderr);

    // A torrent that is not the one the manifest names.
    let torrent = store.join("test-ds-1.torrent");
    let mut t_bytes = std::fs::read(&torrent).unwrap();
    let at = t_bytes.len() - 30;
    t_bytes[at] ^= 1;
    std::fs::write(&torrent, t_bytes).unwrap();
    let v = run(&["verify", s(&manifest), "--store", s(&store)]);
    assert_eq!(v.code, 1);
    assert!(v.stderr.contains("test-ds-1.torrent"), "{}", v.stderr);

    // A manifest signed by another key than the one required.
    let v = run(&[
        "verify",
        s(&manifest),
        "--store",
        s(&store),
        "--public-key",
        &"00".repeat(32),
    ]);
    assert_eq!(v.code, 1);
    assert!(v.stderr.contains("not by the expected key"), "{}", v.stderr);
}

#[test]
fn a_hand_written_dataset_card_stops_publish_before_anything_changes() {
    let t = tempfile::tempdir().unwrap();
    let (release, store) = (t.path().join("release"), t.path().join("store"));
    write_items(&release, 0..4, 100);
    let key = fixed_key(t.path());
    let card = store.join("test-ds/README.md");
    std::fs::create_dir_all(card.parent().unwrap()).unwrap();
    let yaml = "---\nlicense: cc-by-4.0\n---\nOur words.\n";
    std::fs::write(&card, yaml).unwrap();
    let r = run(&publish_args(s(&release), s(&store), s(&key), "1"));
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stderr.contains("README.md") && r.stderr.contains("not seedpool's JSON"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read_to_string(&card).unwrap(), yaml);
    let left: Vec<String> = tree(&store).into_keys().collect();
    assert_eq!(left, vec!["test-ds/README.md".to_string()], "{left:?}");
}
