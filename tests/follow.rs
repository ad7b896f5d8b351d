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
