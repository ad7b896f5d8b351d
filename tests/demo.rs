//! `seedpool demo` end to end, and the golden manifests it reproduces.
//!
//! The demo draws its images, writes its records and signs with a fixed demo key, so its
//! manifests are the same bytes on every run: they pin the shard layout, the index
//! (through its blake3), the torrent (through its info hash) and the manifest format.
//! After an intended format change, regenerate them with
//! `SEEDPOOL_BLESS=1 cargo test --test demo` and explain the change in docs/format.md.

mod common;

use std::path::Path;

use common::*;

#[test]
fn demo_publishes_two_releases_and_reproduces_the_checked_in_manifests() {
    let t = tempfile::tempdir().unwrap();
    let work = t.path().join("work");
    let r = run(&["demo", "--workdir", s(&work)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("release 2 of booru-chars-demo"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("from parent 1:"), "{}", r.stdout);
    assert!(
        r.stdout.contains("verified: signature, torrent and"),
        "{}",
        r.stdout
    );
    // Release 2 came over BitTorrent from the demo's loopback seeder, new shards only.
    assert!(
        r.stdout
            .contains("sync:  release 2: 5 of 13 shards downloaded"),
        "{}",
        r.stdout
    );
    let pool = rusqlite::Connection::open(work.join("pool/pool.sqlite")).unwrap();
    let live: i64 = pool
        .query_row(
            "SELECT count(*) FROM items WHERE removed_in IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(live, 59);

    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    for v in ["1", "2"] {
        let name = format!("booru-chars-demo-{v}.manifest.json");
        let made = std::fs::read(work.join("store").join(&name)).unwrap();
        if std::env::var_os("SEEDPOOL_BLESS").is_some() {
            std::fs::write(golden.join(&name), &made).unwrap();
        }
        let expected = std::fs::read(golden.join(&name)).unwrap();
        assert!(
            made == expected,
            "{name} differs from manifests/{name}: the published format changed"
        );
    }

    // The checked-in manifests verify against a store the demo built.
    let v = run(&[
        "verify",
        s(&golden.join("booru-chars-demo-2.manifest.json")),
        "--store",
        s(&work.join("store")),
    ]);
    assert_eq!(v.code, 0, "{}", v.stderr);

    // The demo's key file lets a user publish a release 3 on top.
    let r3 = work.join("release-3");
    std::fs::create_dir(&r3).unwrap();
    for e in std::fs::read_dir(work.join("release-2")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), r3.join(e.file_name())).unwrap();
    }
    std::fs::write(r3.join("extra-1.json"), r#"{"volume":"1x1-2024"}"#).unwrap();
    let key = work.join("demo-publisher.key");
    let parent = work.join("store/booru-chars-demo-2.manifest.json");
    let r = run(&[
        "publish",
        s(&r3),
        "--dataset",
        "booru-chars-demo",
        "--version",
        "3",
        "--store",
        s(&work.join("store")),
        "--parent",
        s(&parent),
        "--key",
        s(&key),
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["new_items"], 1);
    assert_eq!(report["new_shards"], 1);
}

#[test]
fn demo_json_output_is_machine_readable() {
    let t = tempfile::tempdir().unwrap();
    let r = run(&["demo", "--workdir", s(t.path()), "--items", "12", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["releases"].as_array().unwrap().len(), 2);
    assert_eq!(v["releases"][0]["items"], 12);
    assert!(v["verified"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["problems"].as_array().unwrap().is_empty()));
}
