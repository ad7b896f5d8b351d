//! `seedpool demo` end to end, and the golden manifests it reproduces.
//!
//! The demo draws its originals, curates them with ingest and signs with a fixed demo
//! key, so its manifests are the same bytes on every run: they pin ingest's outputs,
//! the shard layout, the index (through its blake3), the torrent (through its info hash)
//! and the manifest format. Ingest writes the same bytes on every x86-64 CPU (see
//! `imaging`), so they are compared everywhere.
//! After an intended format change, regenerate them with
//! `SEEDPOOL_BLESS=1 cargo test --test demo` and explain the change in docs/format.md.

mod common;

use std::path::Path;

use common::*;

#[test]
fn demo_publishes_two_releases_and_reproduces_the_checked_in_manifests() {
    let t = tempfile::tempdir().unwrap();
    let work = t.path().join("work");
    let r = run_binary(&["demo", "--workdir", s(&work)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("release 2 of booru-chars-demo"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("from parent 1:"), "{}", r.stdout);
    let serve = format!(
        "seedpool serve --pool {} --ingest-report {}",
        work.join("pool").display(),
        work.join("release/ingest-report.tsv").display()
    );
    assert!(r.stdout.contains(&serve), "{}", r.stdout);
    // Both releases were curated by ingest from the drawn downloads: the cross-post and
    // the re-saved copy are duplicates, the small picture is filtered, the cut-short
    // download unreadable; the second run reuses every analysis and drops the two
    // deleted posts.
    for line in [
        "ingest: 52 originals: 48 kept, 2 duplicates, 1 filtered, 1 unreadable; 0 analyses reused, 0 items removed",
        "ingest: 63 originals: 59 kept, 2 duplicates, 1 filtered, 1 unreadable; 49 analyses reused, 2 items removed",
        "from parent 1: 13 new, 1 changed, 2 removed items",
    ] {
        assert!(r.stdout.contains(line), "{line}\n{}", r.stdout);
    }
    let report = std::fs::read_to_string(work.join("release/ingest-report.tsv")).unwrap();
    for status in [
        "\tduplicate\tof ",
        "\tfiltered\tquality: ",
        "\tunreadable\ttruncated JPEG",
    ] {
        assert!(report.contains(status), "{status}\n{report}");
    }
    // A record from a flat-tag dump got its categories from the tag list.
    let gelbooru = std::fs::read_dir(work.join("release"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("gelbooru-") && name.ends_with(".json")
        })
        .expect("a gelbooru item");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&gelbooru).unwrap()).unwrap();
    assert_eq!(
        record["tags"]["character"].as_array().unwrap().len(),
        1,
        "{record}"
    );
    assert_eq!(record["tags"]["meta"][0], "highres", "{record}");
    assert!(record["phash"].as_str().unwrap().len() == 16, "{record}");
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
    // Faces: the demo's own cascade found most drawn faces (those cut by the picture's
    // edge it cannot), and the pool holds the composition of every live item, as
    // ingest counted them.
    let faces_line = r
        .stdout
        .lines()
        .filter(|l| l.contains("faces (the demo's LBP cascade, demo-faces.xml):"))
        .nth(1)
        .unwrap_or_else(|| panic!("no faces line for release 2\n{}", r.stdout))
        .to_string();
    let mut stmt = pool
        .prepare(
            "SELECT composition, count(*) FROM items WHERE removed_in IS NULL \
             GROUP BY composition ORDER BY composition",
        )
        .unwrap();
    let counts: Vec<String> = stmt
        .query_map([], |r| {
            Ok(format!(
                "{} {}",
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        faces_line.ends_with(&counts.join(", ")),
        "{faces_line} / {counts:?}"
    );
    let no_face: i64 = pool
        .query_row(
            "SELECT count(*) FROM items WHERE removed_in IS NULL AND composition = 'no-face'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(no_face <= 10, "{faces_line}");
    assert_eq!(
        record["face_detector"]["cascade"], "demo-faces.xml",
        "{record}"
    );

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
            "{name} differs from manifests/{name}: ingest's output or the published format changed"
        );
    }

    // The checked-in manifests verify against a store the demo built.
    let v = run_binary(&[
        "verify",
        s(&golden.join("booru-chars-demo-2.manifest.json")),
        "--store",
        s(&work.join("store")),
    ]);
    assert_eq!(v.code, 0, "{}", v.stderr);

    // Hugging Face `datasets` loads each release through the card publish wrote, with
    // one type per record field (favs and jpeg_quality are null in some items and
    // numbers in others, which type inference from the first items got wrong).
    let dataset_dir = work.join("store/booru-chars-demo");
    let (front, _) = seedpool::card::existing(&dataset_dir).unwrap();
    let features = front["dataset_info"][1]["features"].to_string();
    assert!(
        !features.contains("\"dtype\":\"json\""),
        "an ingest field without one type: {features}"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/hf_load.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&dataset_dir)
        .args(["1", "2"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "hf_load.py: {}\ninstall `datasets` and Pillow from PyPI (`.ci/run` does)",
        String::from_utf8_lossy(&out.stderr)
    );
    let loaded: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (v, items, in_shards) in [("1", 48, 48), ("2", 59, 62)] {
        let got = &loaded[v];
        assert_eq!(got["rows"], items, "{got}");
        assert_eq!(got["rows_in_shards"], in_shards, "{got}");
        assert_eq!(got["keys"].as_array().unwrap().len(), items, "{got}");
        assert_eq!(got["favs"], "Value('int64')", "{got}");
        assert_eq!(got["jpeg_quality"], "Value('int64')", "{got}");
        let side = got["thumb"].as_array().unwrap();
        assert!(side.iter().all(|s| s.as_u64().unwrap() <= 512), "{got}");
    }
    assert_eq!(loaded["default_rows"], 62);

    // The demo's key file lets a user publish a release 3 on top.
    let r3 = work.join("release-3");
    std::fs::create_dir(&r3).unwrap();
    for e in std::fs::read_dir(work.join("release")).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), r3.join(e.file_name())).unwrap();
        }
    }
    std::fs::write(r3.join("extra-1.json"), r#"{"volume":"1x1-2024"}"#).unwrap();
    let key = work.join("demo-publisher.key");
    let parent = work.join("store/booru-chars-demo-2.manifest.json");
    let r = run_binary(&[
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
    let r = run_binary(&["demo", "--workdir", s(t.path()), "--items", "12", "--json"]);
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
