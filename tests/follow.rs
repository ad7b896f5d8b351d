//! `seedpool follow` end to end: a pool following a store's signed feed through a plain
//! static server (nginx), picking up new releases, refusing a frozen (expired) and a
//! rolled-back feed, and running as a service until SIGTERM. 127.0.0.1 only.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_seedpool");

fn follow(feed: &str, pool: &Path, web_seed: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "follow",
        feed,
        "--pool",
        s(pool),
        "--web-seed",
        web_seed,
        "--listen",
        "127.0.0.1:0",
        "--no-dht",
        "--no-trackers",
        "--timeout",
        "30s",
    ];
    args.extend(extra);
    run_binary(&args)
}

fn releases(pool: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(pool.join("pool.sqlite")).unwrap();
    let mut st = conn
        .prepare("SELECT version FROM releases ORDER BY id")
        .unwrap();
    let rows = st.query_map([], |r| r.get(0)).unwrap();
    rows.map(Result::unwrap).collect()
}

#[test]
fn a_follower_gets_each_new_release_and_refuses_frozen_and_rolled_back_feeds() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    publish(t.path(), &store, "1", 0..12, 50_000, None);
    let nginx = Nginx::start(&t.path().join("nginx"), &store, "");
    let feed_url = format!("{}test-ds.feed.json", nginx.url);
    let feed_path = store.join("test-ds.feed.json");
    let pool = t.path().join("pool");

    // Published on 2026-01-02 and valid for 30 days: long expired, so refused.
    let r = follow(&feed_url, &pool, &nginx.url, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("expired at 2026-02-01T03:04:05Z") && r.stderr.contains("freeze"),
        "{}",
        r.stderr
    );
    assert!(!pool.join("pool.sqlite").exists() || releases(&pool).is_empty());

    // The publisher re-signs it; the follower gets release 1.
    let key = fixed_key(t.path());
    let r = run_binary(&[
        "feed",
        "refresh",
        "--store",
        s(&store),
        "--dataset",
        "test-ds",
        "--key",
        s(&key),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("sequence 2"), "{}", r.stdout);
    let r = follow(&feed_url, &pool, &nginx.url, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("newest release 1"), "{}", r.stdout);
    assert_eq!(releases(&pool), ["1"]);
    let old_feed = std::fs::read(&feed_path).unwrap();

    // Release 2 appears in the feed: only it is synced. Following again changes nothing.
    publish(t.path(), &store, "2", 0..16, 50_000, Some("1"));
    let r = follow(&feed_url, &pool, &nginx.url, &["--json"]);
    let last: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["sequence"], 3, "{}", r.stdout);
    assert_eq!(last["synced"].as_array().unwrap().len(), 1, "{last}");
    assert_eq!(last["synced"][0]["version"], "2", "{last}");
    assert_eq!(releases(&pool), ["1", "2"]);
    let r = follow(&feed_url, &pool, &nginx.url, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("the pool is up to date"), "{}", r.stderr);

    // A mirror serving the older (validly signed) feed: a rollback, refused.
    let new_feed = std::fs::read(&feed_path).unwrap();
    std::fs::write(&feed_path, &old_feed).unwrap();
    let r = follow(&feed_url, &pool, &nginx.url, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("sequence 2, lower than the 3") && r.stderr.contains("rollback"),
        "{}",
        r.stderr
    );
    // Another publisher's key: refused before anything.
    std::fs::write(&feed_path, &new_feed).unwrap();
    let stranger = "ab".repeat(32);
    let r = follow(&feed_url, &pool, &nginx.url, &["--key", &stranger]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("given with --key"), "{}", r.stderr);
    assert_eq!(releases(&pool), ["1", "2"]);

    // As a service: it picks up release 3 when it is published, and stops on SIGTERM.
    let mut service = Command::new(BIN)
        .args([
            "follow",
            &feed_url,
            "--pool",
            s(&pool),
            "--web-seed",
            &nginx.url,
        ])
        .args([
            "--watch",
            "1s",
            "--listen",
            "127.0.0.1:0",
            "--no-dht",
            "--no-trackers",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    publish(t.path(), &store, "3", 0..20, 50_000, Some("2"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while releases(&pool).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the follower never merged release 3"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(releases(&pool), ["1", "2", "3"]);
    unsafe { libc::kill(service.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = service.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = service.kill();
            panic!("the follower did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut service.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status}: {err}");
}

/// A feed validly signed by the trusted key that names a manifest by another blake3 (a
/// mirror that swapped the manifest, or a publisher's mistake): refused before anything
/// is fetched, and nothing is merged.
#[test]
fn a_manifest_that_does_not_hash_as_the_feed_says_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    publish(t.path(), &store, "1", 0..8, 20_000, None);
    let feed_path = store.join("test-ds.feed.json");
    let (mut feed, _) = seedpool::manifest::feed::Feed::load(&feed_path).unwrap();
    feed.releases[0].manifest_blake3 = "0".repeat(64);
    feed.expires = "2100-01-01T00:00:00Z".into();
    feed.sign(&seedpool::signing::PublisherKey::from_seed([42; 32]));
    std::fs::write(&feed_path, feed.to_bytes()).unwrap();
    let nginx = Nginx::start(&t.path().join("nginx"), &store, "");
    let pool = t.path().join("pool");
    let r = follow(
        &format!("{}test-ds.feed.json", nginx.url),
        &pool,
        &nginx.url,
        &[],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("but the feed names `0000") && r.stderr.contains("Nothing was fetched"),
        "{}",
        r.stderr
    );
    assert!(releases(&pool).is_empty());
    assert!(
        !pool.join("test-ds/shards").exists()
            || std::fs::read_dir(pool.join("test-ds/shards"))
                .unwrap()
                .next()
                .is_none()
    );
}

/// BEP 46: the publisher puts a pointer to the feed into a DHT (a local testnet on
/// 127.0.0.1), and a follower that knows only `magnet:?xs=urn:btpk:<key>&s=<dataset>`
/// finds each new release. A store's `seed` keeps the pointer alive in a DHT that
/// never saw the publisher; a mirror serving an older feed than the pointer names is
/// refused; a stranger's key finds nothing.
#[test]
fn a_follower_finds_new_releases_through_the_dht_pointer() {
    let testnet = mainline::Testnet::builder(4).build().unwrap();
    let bootstrap = testnet.bootstrap.join(",");
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    publish(t.path(), &store, "1", 0..12, 50_000, None);
    let nginx = Nginx::start(&t.path().join("nginx"), &store, "");
    let feed_url = format!("{}test-ds.feed.json", nginx.url);
    let key = fixed_key(t.path());
    let pool = t.path().join("pool");

    // Re-signing the (expired) feed with --dht writes the pointer and puts it.
    let r = run_binary(&[
        "feed",
        "refresh",
        "--store",
        s(&store),
        "--dataset",
        "test-ds",
        "--key",
        s(&key),
        "--dht",
        "--dht-bootstrap",
        &bootstrap,
        "--feed-url",
        &feed_url,
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let refreshed: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let pointer = &refreshed["dht_pointer"];
    assert_eq!(pointer["sequence"], 2, "{refreshed}");
    assert!(pointer["stored_at"].as_u64().unwrap() > 0, "{refreshed}");
    let magnet = pointer["magnet"].as_str().unwrap().to_string();
    let public = seedpool::signing::PublisherKey::from_seed([42; 32]).public_hex();
    assert_eq!(magnet, format!("magnet:?xs=urn:btpk:{public}&s=test-ds"));
    assert!(store.join("test-ds.dht.json").is_file());

    let follow_dht = |link: &str, bootstrap: &str| {
        follow(link, &pool, &nginx.url, &["--dht-bootstrap", bootstrap])
    };
    let r = follow_dht(&magnet, &bootstrap);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("the DHT points to feed sequence 2"),
        "{}",
        r.stderr
    );
    assert_eq!(releases(&pool), ["1"]);

    // Release 2, published with --dht: the next look finds it.
    let old_feed = std::fs::read(store.join("test-ds.feed.json")).unwrap();
    let release = t.path().join("release-2");
    write_items(&release, 0..16, 50_000);
    let mut args = publish_args(s(&release), s(&store), s(&key), "2");
    let parent = store.join("test-ds-1.manifest.json");
    args.extend(["--shard-items", "4", "--parent", s(&parent)]);
    args.extend(["--dht", "--dht-bootstrap", &bootstrap]);
    let r = run_binary(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("sequence 3 put on"), "{}", r.stdout);
    let r = follow_dht(&magnet, &bootstrap);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("newest release 2"), "{}", r.stdout);
    assert_eq!(releases(&pool), ["1", "2"]);

    // A mirror still serving the feed before release 2: not what the DHT names.
    let new_feed = std::fs::read(store.join("test-ds.feed.json")).unwrap();
    std::fs::write(store.join("test-ds.feed.json"), &old_feed).unwrap();
    let r = follow_dht(&magnet, &bootstrap);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("serves sequence 2, not the feed the DHT names"),
        "{}",
        r.stderr
    );
    std::fs::write(store.join("test-ds.feed.json"), &new_feed).unwrap();

    // Another key (or another dataset) finds nothing, and says so.
    let stranger = format!("magnet:?xs=urn:btpk:{}&s=test-ds", "ab".repeat(32));
    let r = follow_dht(&stranger, &bootstrap);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("holds no pointer"), "{}", r.stderr);
    assert_eq!(releases(&pool), ["1", "2"]);

    // A fresh DHT has never seen the pointer; a seeder of the store puts it there.
    let fresh = mainline::Testnet::builder(4).build().unwrap();
    let fresh_bootstrap = fresh.bootstrap.join(",");
    let r = follow_dht(&magnet, &fresh_bootstrap);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let manifests = [
        store.join("test-ds-1.manifest.json"),
        store.join("test-ds-2.manifest.json"),
    ];
    let _seeder = Seeder::start(
        BIN,
        &store,
        &manifests,
        &["--dht-bootstrap", &fresh_bootstrap],
    );
    // The seeder puts it just after it comes up; look until it is there.
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        let r = follow_dht(&magnet, &fresh_bootstrap);
        if r.code == 0 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("the DHT points to feed sequence 3"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("the pool is up to date"), "{}", r.stderr);
}
