//! Interoperability with real BitTorrent clients from Debian: libtorrent (python3-libtorrent)
//! parses seedpool torrents and hash-checks the published data against them, and
//! transmission-show reads the same metadata. `.ci/run` installs both.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const PYTHON: &str = "/usr/bin/python3";

fn libtorrent_check(torrent: &Path, save: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/libtorrent_check.py");
    let out = Command::new(PYTHON)
        .arg(&script)
        .arg(torrent)
        .arg(save)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {PYTHON}: {e}; install python3-libtorrent (see .ci/run)")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "libtorrent check failed (is python3-libtorrent installed? see .ci/run): {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
}

fn manifest(store: &Path, version: &str) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(store.join(format!("test-ds-{version}.manifest.json"))).unwrap(),
    )
    .unwrap()
}

/// Checks what libtorrent read against the manifest: info hash, files, alignment.
fn assert_matches_manifest(lt: &serde_json::Value, m: &serde_json::Value) {
    assert_eq!(lt["info_hash"], m["torrent"]["info_hash"]);
    assert_eq!(lt["name"], "test-ds");
    assert_eq!(lt["piece_length"], m["torrent"]["piece_length"]);
    let pl = lt["piece_length"].as_u64().unwrap();
    let files = lt["files"].as_array().unwrap();
    let mut data: Vec<String> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let path = f["path"].as_str().unwrap();
        if f["pad"].as_bool().unwrap() {
            assert!(path.starts_with("test-ds/.pad/"), "{path}");
            // A pad file ends exactly on the next piece boundary.
            let end = f["offset"].as_u64().unwrap() + f["size"].as_u64().unwrap();
            assert_eq!(end % pl, 0, "pad {path} does not end on a piece boundary");
        } else {
            assert_eq!(
                f["offset"].as_u64().unwrap() % pl,
                0,
                "{path} does not start on a piece boundary"
            );
            data.push(path.trim_start_matches("test-ds/").to_string());
            if i + 1 < files.len() && f["size"].as_u64().unwrap() % pl != 0 {
                assert!(
                    files[i + 1]["pad"].as_bool().unwrap(),
                    "no pad after {path}"
                );
            }
        }
    }
    let mut expected: Vec<String> = m["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("shards/{}.tar", s["id"].as_str().unwrap()))
        .collect();
    expected.push(m["index"]["path"].as_str().unwrap().to_string());
    expected.sort();
    assert_eq!(data, expected);
}

#[test]
fn libtorrent_reads_the_torrents_and_checks_the_data() {
    let t = tempfile::tempdir().unwrap();
    let key = fixed_key(t.path());
    let (r1, r2, store) = (
        t.path().join("r1"),
        t.path().join("r2"),
        t.path().join("store"),
    );
    // Payloads that do not fill pieces, so every file but the last needs a pad.
    write_items(&r1, 0..120, 7000);
    let mut args = publish_args(s(&r1), s(&store), s(&key), "1");
    args.extend([
        "--shard-items",
        "10",
        "--piece-length",
        "64KiB",
        "--tracker",
        "http://127.0.0.1:9/announce",
        "--web-seed",
        "http://127.0.0.1:9/data/",
    ]);
    let r = run_binary(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m1 = manifest(&store, "1");
    let lt = libtorrent_check(&store.join("test-ds-1.torrent"), &store);
    assert_matches_manifest(&lt, &m1);
    assert_eq!(
        lt["web_seeds"],
        serde_json::json!(["http://127.0.0.1:9/data/"])
    );
    assert_eq!(
        lt["trackers"],
        serde_json::json!(["http://127.0.0.1:9/announce"])
    );
    assert_eq!(lt["is_seeding"], true, "{lt}");
    assert_eq!(lt["have_pieces"], lt["num_pieces"]);

    // Release 2 reuses release 1's shards with pieces taken from its torrent: libtorrent
    // must agree with every one of them, whichever file is last in either torrent.
    write_items(&r2, 0..200, 7000);
    for i in [3usize, 50, 77] {
        for ext in ["jpg", "json"] {
            std::fs::remove_file(r2.join(format!("danbooru-{}.{ext}", 1000 + i))).unwrap();
        }
    }
    let parent = store.join("test-ds-1.manifest.json");
    let mut args = publish_args(s(&r2), s(&store), s(&key), "2");
    args.extend(["--shard-items", "10", "--parent", s(&parent)]);
    let r = run_binary(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m2 = manifest(&store, "2");
    assert!(m2["counts"]["reused_shards"].as_u64().unwrap() > 0);
    let lt2 = libtorrent_check(&store.join("test-ds-2.torrent"), &store);
    assert_matches_manifest(&lt2, &m2);
    assert_eq!(lt2["is_seeding"], true, "{lt2}");
    // BEP 38: libtorrent reads the parent release's info hash as a similar torrent.
    assert_eq!(
        lt2["similar"],
        serde_json::json!([lt["info_hash"]]),
        "{lt2}"
    );
    assert_eq!(lt["similar"], serde_json::json!([]), "{lt}");

    // One flipped byte in one shard: libtorrent finds exactly one bad piece.
    let id = m2["shards"][0]["id"].as_str().unwrap();
    let shard = store.join(format!("test-ds/shards/{id}.tar"));
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[600] ^= 0xff;
    std::fs::write(&shard, bytes).unwrap();
    let lt3 = libtorrent_check(&store.join("test-ds-2.torrent"), &store);
    assert_eq!(lt3["is_seeding"], false);
    assert_eq!(
        lt3["have_pieces"].as_u64().unwrap() + 1,
        lt3["num_pieces"].as_u64().unwrap()
    );
}

#[test]
fn transmission_show_reads_the_torrent() {
    let t = tempfile::tempdir().unwrap();
    let key = fixed_key(t.path());
    let (rel, store) = (t.path().join("rel"), t.path().join("store"));
    write_items(&rel, 0..30, 5000);
    let mut args = publish_args(s(&rel), s(&store), s(&key), "1");
    args.extend(["--shard-items", "10"]);
    assert_eq!(run_binary(&args).code, 0);
    let m = manifest(&store, "1");
    let out = Command::new("transmission-show")
        .env("TZ", "UTC")
        .arg(store.join("test-ds-1.torrent"))
        .output()
        .expect("transmission-show runs (install transmission-cli, see .ci/run)");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "Hash: {}",
            m["torrent"]["info_hash"].as_str().unwrap()
        )),
        "{text}"
    );
    assert!(text.contains("Created by: seedpool"), "{text}");
    assert!(
        text.contains("Created on: Fri Jan  2 03:04:05 2026"),
        "{text}"
    );
    for shard in m["shards"].as_array().unwrap() {
        assert!(
            text.contains(&format!(
                "test-ds/shards/{}.tar",
                shard["id"].as_str().unwrap()
            )),
            "{text}"
        );
    }
    assert!(text.contains("test-ds/index/1.sqlite.zst"));
}

/// The published JSON Schema accepts real manifests (first and child releases) and
/// rejects a broken one, checked by python3-jsonschema, a validator we did not write.
#[test]
fn manifests_follow_the_published_json_schema() {
    let t = tempfile::tempdir().unwrap();
    let key = fixed_key(t.path());
    let (r1, store) = (t.path().join("r1"), t.path().join("store"));
    write_items(&r1, 0..20, 100);
    let mut args = publish_args(s(&r1), s(&store), s(&key), "1");
    args.extend(["--tracker", "udp://127.0.0.1:9/announce"]);
    assert_eq!(run_binary(&args).code, 0);
    write_items(&r1, 20..25, 100);
    let parent = store.join("test-ds-1.manifest.json");
    let mut args = publish_args(s(&r1), s(&store), s(&key), "2");
    args.extend(["--parent", s(&parent)]);
    assert_eq!(run_binary(&args).code, 0);
    let broken = t.path().join("broken.json");
    let text = std::fs::read_to_string(&parent).unwrap();
    std::fs::write(
        &broken,
        text.replacen("\"format_version\": 1", "\"format_version\": \"1\"", 1),
    )
    .unwrap();

    let schema =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/schema/manifest-v1.schema.json");
    let check = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
for path in sys.argv[2:]:
    errors = list(v.iter_errors(json.load(open(path))))
    print(path, "valid" if not errors else "invalid: " + errors[0].message)
"#;
    let out = Command::new(PYTHON)
        .args(["-c", check])
        .arg(&schema)
        .arg(&parent)
        .arg(store.join("test-ds-2.manifest.json"))
        .arg(&broken)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python3-jsonschema missing? {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].ends_with("valid") && !lines[0].contains("invalid"),
        "{text}"
    );
    assert!(lines[1].ends_with(" valid"), "{text}");
    assert!(lines[2].contains("invalid"), "{text}");
}

const BIN: &str = env!("CARGO_BIN_EXE_seedpool");

fn publish_one(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = fixed_key(dir);
    let release = dir.join("release");
    write_items(&release, 0..24, 120_000);
    let store = dir.join("store");
    let mut args = publish_args(s(&release), s(&store), s(&key), "1");
    args.extend(["--shard-items", "5"]);
    let r = run_binary(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    (store.clone(), store.join("test-ds-1.manifest.json"))
}

/// Every data file of the torrent, byte for byte, in two folders laid out like a store.
fn assert_same_files(torrent: &Path, a: &Path, b: &Path) {
    let t = seedpool::torrent::Metainfo::parse(&std::fs::read(torrent).unwrap()).unwrap();
    for f in t.data_files() {
        let x = std::fs::read(a.join(&f.path)).unwrap();
        let y = std::fs::read(b.join(&f.path)).unwrap_or_else(|e| panic!("{}: {e}", f.path));
        assert!(x == y, "`{}` differs", f.path);
    }
}

/// libtorrent downloads release 1 of `store` in `mode` (`download IP:PORT` from a peer,
/// `webseed URL` from a web seed alone) and must end with the store's exact files.
fn libtorrent_downloads(t: &Path, store: &Path, mode: &str, from: &str) {
    let torrent = store.join("test-ds-1.torrent");
    let save = t.join("lt-download");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/libtorrent_peer.py");
    let out = Command::new(PYTHON)
        .arg(&script)
        .args([mode, s(&torrent), s(&save), from])
        .output()
        .expect("python3-libtorrent (see .ci/run)");
    assert!(
        out.status.success(),
        "libtorrent download failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["bytes"].as_u64().unwrap() > 2_000_000, "{report}");
    // libtorrent saves under the torrent's name, which is the dataset folder.
    assert_same_files(&torrent, &store.join("test-ds"), &save.join("test-ds"));
}

#[test]
fn libtorrent_downloads_a_release_from_seedpool_seed() {
    let t = tempfile::tempdir().unwrap();
    let (store, manifest) = publish_one(t.path());
    let seeder = Seeder::start(BIN, &store, &[manifest], &[]);
    libtorrent_downloads(t.path(), &store, "download", &seeder.addr);
}

#[test]
fn libtorrent_downloads_a_release_from_seed_http_as_a_web_seed_alone() {
    let t = tempfile::tempdir().unwrap();
    let (store, manifest) = publish_one(t.path());
    let seeder = Seeder::start(BIN, &store, &[manifest], &["--http", "127.0.0.1:0"]);
    let url = seeder.http.clone().expect("seed --http prints its URL");
    libtorrent_downloads(t.path(), &store, "webseed", &url);
}

#[test]
fn seedpool_sync_downloads_a_release_from_a_libtorrent_seeder() {
    use std::io::{BufRead, BufReader};
    let t = tempfile::tempdir().unwrap();
    let (store, manifest) = publish_one(t.path());
    let torrent = store.join("test-ds-1.torrent");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/libtorrent_peer.py");
    // libtorrent seeds from the store's folder (save path = STORE, torrent name = dataset).
    let mut seeder = Command::new(PYTHON)
        .arg(&script)
        .args(["seed", s(&torrent), s(&store)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3-libtorrent (see .ci/run)");
    let mut first = String::new();
    BufReader::new(seeder.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let port = serde_json::from_str::<serde_json::Value>(&first)
        .unwrap_or_else(|_| panic!("libtorrent seeder did not start: {first}"))["port"]
        .as_u64()
        .unwrap();
    let pool = t.path().join("pool");
    let r = run_binary(&[
        "sync",
        s(&manifest),
        "--pool",
        s(&pool),
        "--peer",
        &format!("127.0.0.1:{port}"),
        "--listen",
        "127.0.0.1:0",
        "--timeout",
        "30s",
        "--no-dht",
        "--no-trackers",
    ]);
    drop(seeder.stdin.take());
    let _ = seeder.wait();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("24 added"), "{}", r.stdout);
    assert_same_files(&torrent, &store.join("test-ds"), &pool.join("test-ds"));
}

/// A release's inherited shards come from the swarm of the release that brought them:
/// one peer seeds only release 1 (seedpool), the other only release 2's new shards
/// (libtorrent with part of the data), and neither alone can serve release 2.
#[test]
fn a_peer_seeding_only_release_1_serves_the_shards_release_2_inherits() {
    use std::io::{BufRead, BufReader};
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let m1 = publish(t.path(), &store, "1", 0..16, 50_000, None);
    let m2 = publish(t.path(), &store, "2", 0..24, 50_000, Some("1"));
    let old = Seeder::start(BIN, &store, std::slice::from_ref(&m1), &[]);

    let partial = t.path().join("partial");
    copy_dir(&store, &partial);
    let release_1 = seedpool::manifest::Manifest::load(&m1).unwrap().0;
    for s in &release_1.shards {
        std::fs::remove_file(partial.join(format!("test-ds/shards/{}.tar", s.id))).unwrap();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/libtorrent_peer.py");
    let mut lt = Command::new(PYTHON)
        .arg(&script)
        .args([
            "partial",
            s(&partial.join("test-ds-2.torrent")),
            s(&partial),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("python3-libtorrent (see .ci/run)");
    let mut first = String::new();
    BufReader::new(lt.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _lt = KillOnDrop(lt);
    let port: serde_json::Value = serde_json::from_str(&first).expect("the partial seeder's port");
    let new_peer = format!("127.0.0.1:{}", port["port"]);

    let pool = t.path().join("pool");
    let r = run_binary(&[
        "sync",
        s(&m2),
        "--pool",
        s(&pool),
        "--peer",
        &old.addr,
        "--peer",
        &new_peer,
        "--listen",
        "127.0.0.1:0",
        "--no-dht",
        "--no-trackers",
        "--no-web-seeds",
        "--timeout",
        "30s",
        "--json",
    ]);
    let report = result(&r);
    assert_eq!(report["shards_downloaded"], 6, "{report}");
    assert_eq!(pool_count(&pool, "SELECT count(*) FROM items"), 24);
    assert_only_verified_shards(&pool);
}
