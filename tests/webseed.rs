//! Web seeds end to end: `sync` downloading over plain HTTP from `seed --http` and from
//! Debian's nginx (a server seedpool did not write), sources that lie, stall or lack a
//! file, a sync killed mid-download, and the swarm handing over to HTTP. 127.0.0.1 only;
//! DHT and trackers off.

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_seedpool");
const OFFLINE: [&str; 2] = ["--no-dht", "--no-trackers"];

/// `sync --json` with the given web seeds and no BitTorrent peer.
fn sync_http(manifest: &str, pool: &Path, web_seeds: &[&str], extra: &[&str]) -> Run {
    let mut args = vec![
        "sync",
        manifest,
        "--pool",
        s(pool),
        "--listen",
        "127.0.0.1:0",
        "--json",
        "--timeout",
        "30s",
    ];
    for w in web_seeds {
        args.extend(["--web-seed", w]);
    }
    args.extend(OFFLINE);
    args.extend(extra);
    run_binary(&args)
}

/// Bytes of the shards and index of a release.
fn release_bytes(manifest: &Path) -> u64 {
    let m = seedpool::manifest::Manifest::load(manifest).unwrap().0;
    m.shards.iter().map(|s| s.size).sum::<u64>() + m.index.size
}

/// The report's entry for the web seed at `url`.
fn source<'a>(report: &'a serde_json::Value, url: &str) -> &'a serde_json::Value {
    report["web_seeds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["url"] == url)
        .unwrap_or_else(|| panic!("no web seed `{url}` in {report}"))
}

/// A TCP server that accepts connections and never answers.
fn silent_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    url
}

#[test]
fn a_sync_with_no_peer_completes_from_seed_http() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    // 200 kB items, four per shard: shards of several pieces each.
    let m1 = publish(t.path(), &store, "1", 0..24, 200_000, None);
    let m2 = publish(t.path(), &store, "2", 0..32, 200_000, Some("1"));
    let seeder = Seeder::start(BIN, &store, &[m1.clone(), m2], &["--http", "127.0.0.1:0"]);
    let http = seeder.http.clone().expect("seed --http prints its URL");

    let pool = t.path().join("pool");
    let r = result(&sync_http(s(&m1), &pool, &[&http], &[]));
    assert_eq!(r["shards_downloaded"], 6, "{r}");
    assert_eq!(
        r["bytes_downloaded"].as_u64(),
        Some(release_bytes(&m1)),
        "{r}"
    );
    assert_eq!(r["bytes_from_web_seeds"], r["bytes_received"], "{r}");
    assert!(source(&r, &http)["dropped"].is_null(), "{r}");
    assert_eq!(pool_count(&pool, "SELECT count(*) FROM items"), 24);
    assert_only_verified_shards(&pool);

    // The mirror serves the manifest and torrent too: release 2 by URL alone, and only
    // its new shards travel.
    let url = format!("{http}test-ds-2.manifest.json");
    let r = result(&sync_http(&url, &pool, &[&http], &[]));
    assert_eq!(r["shards_in_pool"], 6, "{r}");
    assert_eq!(r["shards_downloaded"], 2, "{r}");
    assert_eq!(
        pool_count(&pool, "SELECT count(*) FROM items WHERE removed_in IS NULL"),
        32
    );
    assert_only_verified_shards(&pool);
}

#[test]
fn nginx_serves_a_release_and_lying_stalling_or_empty_sources_are_dropped() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let m1 = publish(t.path(), &store, "1", 0..24, 200_000, None);
    let manifest = seedpool::manifest::Manifest::load(&m1).unwrap().0;
    let good = Nginx::start(
        &t.path().join("nginx-good"),
        &store,
        "location /moved/ { return 302 ftp://127.0.0.1/x; }",
    );
    // A copy whose every shard has one flipped byte, a server with nothing, one that
    // never answers.
    let damaged = t.path().join("damaged");
    copy_dir(&store, &damaged);
    for i in 0..manifest.shards.len() {
        flip_byte(&damaged, &manifest, i, 300_000);
    }
    let liar = Nginx::start(&t.path().join("nginx-liar"), &damaged, "");
    let empty_root = t.path().join("empty");
    std::fs::create_dir_all(&empty_root).unwrap();
    let empty = Nginx::start(&t.path().join("nginx-empty"), &empty_root, "");
    let silent = silent_server();

    // A manifest URL that redirects away from http(s) is refused before anything.
    let pool = t.path().join("pool");
    let moved = format!("{}moved/test-ds-1.manifest.json", good.url);
    let r = sync_http(&moved, &pool, &[], &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("not an http(s) URL"), "{}", r.stderr);
    assert!(!pool.join("pool.sqlite").exists());

    let sources = [liar.url.as_str(), &empty.url, &silent, &good.url];
    let r = result(&sync_http(
        s(&m1),
        &pool,
        &sources,
        &["--web-seed-timeout", "2s"],
    ));
    assert_eq!(pool_count(&pool, "SELECT count(*) FROM items"), 24);
    assert_only_verified_shards(&pool);
    let why = |url: &str| {
        source(&r, url)["dropped"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(why(&liar.url).contains("SHA-1"), "{r}");
    assert!(why(&silent).contains("no byte arrived"), "{r}");
    // A server that lacks a file is skipped for it, not dropped.
    assert_eq!(
        source(&r, &empty.url)["dropped"],
        serde_json::Value::Null,
        "{r}"
    );
    assert!(source(&r, &good.url)["bytes"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn with_no_peer_and_no_web_seed_that_has_the_files_nothing_is_merged() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let m1 = publish(t.path(), &store, "1", 0..8, 20_000, None);
    let empty_root = t.path().join("empty");
    std::fs::create_dir_all(&empty_root).unwrap();
    let empty = Nginx::start(&t.path().join("nginx"), &empty_root, "");
    let pool = t.path().join("pool");
    let r = sync_http(s(&m1), &pool, &[&empty.url], &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("no peer can be found")
            && r.stderr.contains("answered 404")
            && r.stderr.contains("index/1.sqlite.zst"),
        "{}",
        r.stderr
    );
    assert_eq!(pool_count(&pool, "SELECT count(*) FROM releases"), 0);
}

#[test]
fn a_sync_killed_mid_http_download_resumes_without_fetching_twice() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    // About 19 MB, served at 1 MB/s per connection: a few seconds with four.
    let m1 = publish(t.path(), &store, "1", 0..96, 200_000, None);
    let total = release_bytes(&m1);
    let nginx = Nginx::start(&t.path().join("nginx"), &store, "limit_rate 1m;");
    let pool = t.path().join("pool");

    let mut child = Command::new(BIN)
        .args([
            "sync",
            s(&m1),
            "--pool",
            s(&pool),
            "--json",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--web-seed", &nginx.url])
        .args(OFFLINE)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["event"] == "progress" && v["phase"] == "shards" {
            let have = v["have"].as_u64().unwrap();
            if have * 10 >= v["total"].as_u64().unwrap() * 4 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the download never got to 40%");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = nginx.bytes_sent();
    assert!(
        before < total,
        "killed after the whole release ({before} bytes)"
    );

    let r = result(&sync_http(s(&m1), &pool, &[&nginx.url], &[]));
    assert_eq!(pool_count(&pool, "SELECT count(*) FROM items"), 96);
    assert_only_verified_shards(&pool);
    let sent = nginx.bytes_sent();
    assert!(
        sent as f64 <= total as f64 * 1.1,
        "{sent} bytes sent for a release of {total} ({before} before the kill): {r}"
    );
}

#[test]
fn a_swarm_that_stops_delivering_hands_the_rest_to_the_web_seeds() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let m1 = publish(t.path(), &store, "1", 0..16, 100_000, None);
    let m2 = publish(t.path(), &store, "2", 0..24, 100_000, Some("1"));
    // The only peer seeds release 1 alone: it can serve the shards release 2 inherited
    // (through release 1's swarm), then nothing, so the new shards come over HTTP.
    let peer = Seeder::start(BIN, &store, std::slice::from_ref(&m1), &[]);
    let mirror = Seeder::start(BIN, &store, &[m1, m2.clone()], &["--http", "127.0.0.1:0"]);
    let http = mirror.http.clone().unwrap();
    let pool = t.path().join("pool");
    let r = sync_http(
        s(&m2),
        &pool,
        &[&http],
        &["--peer", &peer.addr, "--web-seed-after", "2s"],
    );
    assert!(
        r.stdout.contains("the swarm sent nothing for 2 s"),
        "{}",
        r.stdout
    );
    // How much the old swarm sends before the hand-over is a matter of timing; the new
    // shards can only come over HTTP.
    let report = result(&r);
    assert!(
        report["bytes_from_web_seeds"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert_eq!(pool_count(&pool, "SELECT count(*) FROM items"), 24);
    assert_only_verified_shards(&pool);
}

#[test]
fn alongside_the_swarm_both_deliver() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let m1 = publish(t.path(), &store, "1", 0..48, 100_000, None);
    // A slow BitTorrent side, so the web seed has files left to take.
    let mirror = Seeder::start(
        BIN,
        &store,
        std::slice::from_ref(&m1),
        &["--http", "127.0.0.1:0", "--upload-limit", "400KiB"],
    );
    let http = mirror.http.clone().unwrap();
    let pool = t.path().join("pool");
    let r = result(&sync_http(
        s(&m1),
        &pool,
        &[&http],
        &["--peer", &mirror.addr, "--web-seed-policy", "alongside"],
    ));
    let from_http = r["bytes_from_web_seeds"].as_u64().unwrap();
    let all = r["bytes_received"].as_u64().unwrap();
    assert!(from_http > 0 && from_http < all, "{r}");
    assert_eq!(pool_count(&pool, "SELECT count(*) FROM items"), 48);
    assert_only_verified_shards(&pool);
}

/// Other HTTP clients against `seed --http`: aria2 splitting one shard over four ranged
/// connections, and wget resuming a half-downloaded one (`-c`, a Range from its end).
#[test]
fn aria2_and_wget_fetch_from_seed_http() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    // Shards of 4 MB, so aria2 has something to split.
    let m1 = publish(t.path(), &store, "1", 0..8, 1_000_000, None);
    let seeder = Seeder::start(
        BIN,
        &store,
        std::slice::from_ref(&m1),
        &["--http", "127.0.0.1:0"],
    );
    let http = seeder.http.clone().unwrap();
    let manifest = seedpool::manifest::Manifest::load(&m1).unwrap().0;
    let (a, b) = (manifest.shards[0].id, manifest.shards[1].id);
    let original = |id| std::fs::read(store.join(format!("test-ds/shards/{id}.tar"))).unwrap();

    let out = t.path().join("aria2");
    let r = Command::new("aria2c")
        .args([
            "-q",
            "-x4",
            "-s4",
            "-k1M",
            "--min-split-size=1M",
            "--no-conf",
        ])
        .args(["--allow-overwrite=true", "--auto-file-renaming=false"])
        .arg(format!("--dir={}", out.display()))
        .arg(format!("{http}test-ds/shards/{a}.tar"))
        .output()
        .expect("aria2 (see .ci/run)");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(std::fs::read(out.join(format!("{a}.tar"))).unwrap() == original(a));

    let half = t.path().join(format!("{b}.tar"));
    let whole = original(b);
    std::fs::write(&half, &whole[..whole.len() / 2]).unwrap();
    let r = Command::new("wget")
        .args(["-q", "-c", "-O"])
        .arg(&half)
        .arg(format!("{http}test-ds/shards/{b}.tar"))
        .output()
        .expect("wget (see .ci/run)");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(std::fs::read(&half).unwrap() == whole);
}
