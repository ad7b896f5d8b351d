//! `seed` and `sync` end to end: real librqbit sessions in separate processes talking
//! over 127.0.0.1 only, with DHT and trackers off. Interoperability with libtorrent is
//! in tests/interop.rs.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use seedpool::manifest::Manifest;
use seedpool::torrent::Metainfo;

const BIN: &str = env!("CARGO_BIN_EXE_seedpool");
const OFFLINE: [&str; 2] = ["--no-dht", "--no-trackers"];

/// Publishes release 1 of `items` items into `dir/store` and seeds it.
fn seed_release_1(
    dir: &Path,
    items: std::ops::Range<usize>,
    payload: usize,
    extra: &[&str],
) -> (PathBuf, PathBuf, Seeder) {
    let store = dir.join("store");
    let m1 = publish(dir, &store, "1", items, payload, None);
    let seeder = Seeder::start(BIN, &store, std::slice::from_ref(&m1), extra);
    (store, m1, seeder)
}

fn sync(manifest: &Path, pool: &Path, peer: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "sync",
        s(manifest),
        "--pool",
        s(pool),
        "--peer",
        peer,
        "--listen",
        "127.0.0.1:0",
        "--json",
    ];
    if !extra.contains(&"--timeout") {
        args.extend(["--timeout", "30s"]);
    }
    args.extend(OFFLINE);
    args.extend(extra);
    run(&args)
}

fn data_size(torrent: &Path) -> (u64, u64) {
    let t = Metainfo::parse(&std::fs::read(torrent).unwrap()).unwrap();
    (t.data_files().map(|f| f.length).sum(), t.piece_length)
}

#[test]
fn sync_fetches_only_new_shards_and_merges_like_merge_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let m1 = publish(dir.path(), &store, "1", 0..24, 100_000, None);
    let m2 = publish(dir.path(), &store, "2", 0..36, 100_000, Some("1"));
    let seeder = Seeder::start(BIN, &store, &[m1.clone(), m2.clone()], &[]);

    let pool = dir.path().join("pool");
    let r1 = result(&sync(&m1, &pool, &seeder.addr, &[]));
    let (size1, _) = data_size(&store.join("test-ds-1.torrent"));
    assert_eq!(r1["bytes_downloaded"].as_u64().unwrap(), size1);
    assert_eq!(r1["merge"]["added"], 24);

    let r2 = result(&sync(&m2, &pool, &seeder.addr, &[]));
    // Release 2 reuses release 1's shards: only new shards and the index travel.
    let manifest2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&m2).unwrap()).unwrap();
    let old: std::collections::BTreeSet<String> = {
        let m1v: serde_json::Value = serde_json::from_slice(&std::fs::read(&m1).unwrap()).unwrap();
        m1v["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let new_shards: Vec<&serde_json::Value> = manifest2["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !old.contains(s["id"].as_str().unwrap()))
        .collect();
    assert!(!new_shards.is_empty());
    let new_bytes: u64 = new_shards
        .iter()
        .map(|s| s["size"].as_u64().unwrap())
        .sum::<u64>()
        + manifest2["index"]["size"].as_u64().unwrap();
    let new_files = new_shards.len() as u64 + 1;
    let piece = manifest2["torrent"]["piece_length"].as_u64().unwrap();
    let received = r2["bytes_received"].as_u64().unwrap();
    assert_eq!(r2["bytes_downloaded"].as_u64().unwrap(), new_bytes);
    assert_eq!(r2["shards_downloaded"].as_u64().unwrap(), new_files - 1);
    assert!(
        received <= new_bytes + new_files * piece,
        "received {received} bytes for {new_bytes} bytes of {new_files} new files (piece {piece})"
    );
    let (size2, _) = data_size(&store.join("test-ds-2.torrent"));
    assert!(
        received < size2,
        "received {received} of {size2}: not incremental"
    );
    assert_eq!(r2["merge"]["added"], 12);

    // The same pool built by `merge` from the store has the same items.
    let merged = dir.path().join("merged");
    for m in [&m1, &m2] {
        let r = run(&["merge", s(m), "--pool", s(&merged), "--from", s(&store)]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let items = "SELECT group_concat(key || hash || shard, ',') FROM (SELECT * FROM items WHERE removed_in IS NULL ORDER BY key)";
    let a: String = rusqlite::Connection::open(pool.join("pool.sqlite"))
        .unwrap()
        .query_row(items, [], |r| r.get(0))
        .unwrap();
    let b: String = rusqlite::Connection::open(merged.join("pool.sqlite"))
        .unwrap()
        .query_row(items, [], |r| r.get(0))
        .unwrap();
    assert_eq!(a, b);
    assert_only_verified_shards(&pool);
    assert!(!pool.join(".seedpool-sync").exists(), "staging left behind");
    // The pool holds everything `verify` checks, so it can seed in turn.
    let v = run(&[
        "verify",
        s(&pool.join("test-ds-2.manifest.json")),
        "--store",
        s(&pool),
    ]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);

    // Syncing again fetches nothing and changes nothing.
    let again = result(&sync(&m2, &pool, &seeder.addr, &[]));
    assert_eq!(again["bytes_received"], 0);
    assert_eq!(again["merge"]["already_merged"], true);
}

#[test]
fn selective_sync_fetches_only_matching_shards_then_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (store, m1, seeder) = seed_release_1(dir.path(), 0..32, 10_000, &[]);
    let pool = dir.path().join("pool");

    // The items of one shard, chosen through their records.
    let index = Index::open(&store, "1", dir.path());
    let (first_shard, in_shard): (String, i64) = index
        .reader
        .connection()
        .query_row(
            "SELECT shard, count(*) FROM items GROUP BY shard ORDER BY shard LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let post_ids: String = index
        .reader
        .connection()
        .query_row(
            "SELECT group_concat(json_extract(record, '$.post_id')) FROM items WHERE shard = ?1",
            [&first_shard],
            |r| r.get(0),
        )
        .unwrap();
    let condition = format!("json_extract(record, '$.post_id') IN ({post_ids})");
    let r = result(&sync(&m1, &pool, &seeder.addr, &["--where", &condition]));
    assert_eq!(r["selected_items"], in_shard);
    assert_eq!(r["shards_downloaded"], 1);
    assert_eq!(r["shards_not_selected"], 7);
    assert_eq!(pool_count(&pool, "SELECT count(*) FROM items"), 32);
    assert_eq!(
        pool_count(&pool, "SELECT count(*) FROM shards WHERE present = 1"),
        1
    );
    // Items of absent shards are known but not downloaded.
    assert_eq!(
        pool_count(
            &pool,
            "SELECT count(*) FROM items i JOIN shards s ON s.id = i.shard WHERE s.present = 1"
        ),
        in_shard
    );
    assert_eq!(
        std::fs::read_dir(pool.join("test-ds/shards"))
            .unwrap()
            .count(),
        1
    );
    // extract writes what is present and says what is not.
    let out = dir.path().join("out");
    let x = run(&[
        "extract",
        "--pool",
        s(&pool),
        "--where",
        "1",
        "--out",
        s(&out),
    ]);
    assert_eq!(x.code, 0, "{}", x.stderr);

    // A later full sync fetches the rest and records it as present.
    let all = result(&sync(&m1, &pool, &seeder.addr, &[]));
    assert_eq!(all["shards_downloaded"], 7);
    assert_eq!(all["shards_in_pool"], 1);
    assert_eq!(
        pool_count(&pool, "SELECT count(*) FROM shards WHERE present = 0"),
        0
    );
    assert_only_verified_shards(&pool);

    // SQL that writes or does not parse is refused before any shard moves.
    let bad = sync(
        &m1,
        &pool,
        &seeder.addr,
        &["--where", "1); DROP TABLE items; --"],
    );
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("--where"), "{}", bad.stderr);
}

#[test]
fn a_killed_sync_resumes_without_fetching_finished_shards_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // 8 shards of about 1.2 MB, seeded at 2 MiB/s: long enough to be killed midway.
    let m1 = publish(dir.path(), &store, "1", 0..32, 300_000, None);
    let (total, piece) = data_size(&store.join("test-ds-1.torrent"));
    let seeder = Seeder::start(
        BIN,
        &store,
        std::slice::from_ref(&m1),
        &["--upload-limit", "2MiB"],
    );
    let pool = dir.path().join("pool");

    let start_sync = || {
        Command::new(BIN)
            .args(["sync", s(&m1), "--pool", s(&pool), "--peer", &seeder.addr])
            .args(["--listen", "127.0.0.1:0", "--timeout", "30s", "--json"])
            .args(OFFLINE)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // First kill: as soon as one shard is verified and in the pool.
    let mut child = start_sync();
    let verified = wait_for_event(
        child.stdout.take().unwrap(),
        "verified",
        Duration::from_secs(60),
    );
    // Meanwhile the pool is locked: a second sync or a merge waits its turn.
    let busy = sync(&m1, &pool, &seeder.addr, &[]);
    assert_eq!(busy.code, 1);
    assert!(busy.stderr.contains("is busy"), "{}", busy.stderr);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let verified = verified.expect("a shard was verified before the kill");
    assert_only_verified_shards(&pool);
    assert_eq!(pool_count(&pool, "SELECT count(*) FROM releases"), 0);
    let first_file = verified["bytes"].as_u64().unwrap();

    // Second kill: at a moment that depends on the clock, mid-transfer or mid-check.
    let mut child = start_sync();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let wait = 200 + u64::from(nanos % 600);
    std::thread::sleep(Duration::from_millis(wait));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_only_verified_shards(&pool);
    assert_eq!(pool_count(&pool, "SELECT count(*) FROM releases"), 0);

    let done = result(&sync(&m1, &pool, &seeder.addr, &[]));
    let received = done["bytes_received"].as_u64().unwrap();
    assert!(
        received + first_file <= total + 9 * piece,
        "the resumed sync received {received} of {total} bytes although {first_file} were in the pool"
    );
    assert_eq!(done["merge"]["added"], 32);
    assert_only_verified_shards(&pool);
    assert_eq!(
        pool_count(&pool, "SELECT count(*) FROM shards WHERE present = 1"),
        8
    );
    assert!(!pool.join(".seedpool-sync").exists());
}

#[test]
fn a_shard_that_fails_blake3_after_download_is_refetched_then_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let m1 = publish(dir.path(), &store, "1", 0..8, 5_000, None);
    // A publisher mistake: the torrent carries other bytes under a shard's name. Its
    // piece hashes are right for those bytes, so only blake3 can tell.
    let (manifest, _) = Manifest::load(&m1).unwrap();
    flip_byte(&store, &manifest, 0, 600);
    Published::new(&store, "1").sign(|_| {});

    let seeder = Seeder::start(BIN, &store, std::slice::from_ref(&m1), &[]);
    let pool = dir.path().join("pool");
    let r = sync(&m1, &pool, &seeder.addr, &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("failed its blake3 check twice"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains("\"event\":\"refetch\""), "{}", r.stdout);
    assert_eq!(pool_count(&pool, "SELECT count(*) FROM releases"), 0);
    assert_only_verified_shards(&pool);
}

#[test]
fn faults_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let m1 = publish(dir.path(), &store, "1", 0..8, 5_000, None);
    let pool = dir.path().join("pool");

    // No reachable peer: a bounded wait, then a message.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let started = Instant::now();
    let r = sync(&m1, &pool, &addr, &["--timeout", "2s"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no data arrived for 2 s"), "{}", r.stderr);
    assert!(r.stderr.contains("resume"), "{}", r.stderr);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(pool_count(&pool, "SELECT count(*) FROM releases"), 0);

    // A manifest whose torrent is another release's.
    let m2 = publish(dir.path(), &store, "2", 0..9, 5_000, Some("1"));
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(&m1, other.join("test-ds-1.manifest.json")).unwrap();
    std::fs::copy(
        store.join("test-ds-2.torrent"),
        other.join("test-ds-1.torrent"),
    )
    .unwrap();
    let r = sync(&other.join("test-ds-1.manifest.json"), &pool, &addr, &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("does not belong to this release"),
        "{}",
        r.stderr
    );

    // A folder that is not a pool.
    let notpool = dir.path().join("notpool");
    std::fs::create_dir_all(&notpool).unwrap();
    std::fs::write(notpool.join("photo.jpg"), b"x").unwrap();
    let r = sync(&m2, &notpool, &addr, &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is not a seedpool pool"), "{}", r.stderr);
    assert_eq!(std::fs::read_dir(&notpool).unwrap().count(), 1);

    // A listen port in use, for seed and for sync.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let r = run(&[
        "seed",
        s(&m1),
        "--store",
        s(&store),
        "--listen",
        &busy_addr,
        "--no-dht",
        "--no-trackers",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("cannot listen on {busy_addr}")),
        "{}",
        r.stderr
    );
    let r = run(&[
        "sync",
        s(&m1),
        "--pool",
        s(&pool),
        "--listen",
        &busy_addr,
        "--no-dht",
        "--no-trackers",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("cannot listen on"), "{}", r.stderr);

    // A damaged store is reported instead of seeded.
    let (manifest, _) = Manifest::load(&m1).unwrap();
    flip_byte(&store, &manifest, 1, 100);
    let r = run(&[
        "seed",
        s(&m1),
        "--store",
        s(&store),
        "--listen",
        "127.0.0.1:0",
        "--no-dht",
        "--no-trackers",
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("pass the torrent's piece hashes"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_full_disk_is_refused_before_downloading() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let m1 = publish(dir.path(), &store, "1", 0..16, 200_000, None);
    let mnt = dir.path().join("small");
    let Some(_guard) = tiny_tmpfs(&mnt) else {
        return;
    };
    let seeder = Seeder::start(BIN, &store, std::slice::from_ref(&m1), &[]);
    let pool = mnt.join("pool");
    let r = sync(&m1, &pool, &seeder.addr, &[]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("not enough space"), "{}", r.stderr);
    assert_eq!(pool_count(&pool, "SELECT count(*) FROM releases"), 0);
}

#[test]
fn sync_reads_a_manifest_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _m1, seeder) = seed_release_1(dir.path(), 0..8, 5_000, &[]);
    // A plain HTTP server on loopback serving the store folder.
    let (_server, port) = http_server(&store);

    let url = format!("http://127.0.0.1:{port}/test-ds-1.manifest.json");
    let pool = dir.path().join("pool");
    let mut args = vec!["sync", &url, "--pool", s(&pool), "--peer", &seeder.addr];
    args.extend(["--listen", "127.0.0.1:0", "--json"]);
    args.extend(OFFLINE);
    let r = result(&run(&args));
    assert_eq!(r["merge"]["added"], 8);
    let missing = format!("http://127.0.0.1:{port}/nothing.manifest.json");
    let r = run(&[
        "sync",
        &missing,
        "--pool",
        s(&pool),
        "--no-dht",
        "--no-trackers",
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("404"), "{}", r.stderr);
    let _ = std::io::stdout().flush();
}

#[test]
fn a_seeder_serving_a_damaged_shard_gets_an_error_that_says_so() {
    // The seeder checked its files when it started; the shard was damaged after, so it
    // sends pieces that fail their SHA-1, or none. Before, the sync ended in "check the
    // --peer addresses", with the peer connected all along.
    let dir = tempfile::tempdir().unwrap();
    let (store, m1, seeder) = seed_release_1(dir.path(), 0..8, 5_000, &[]);
    let (manifest, _) = Manifest::load(&m1).unwrap();
    flip_byte(&store, &manifest, 0, 3000);
    let pool = dir.path().join("pool");
    let r = sync(&m1, &pool, &seeder.addr, &["--timeout", "5s"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(
            "that failed the torrent's piece hashes and were dropped: their copies of `shards/"
        ) && r.stderr.contains("are damaged"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("check the --peer addresses"),
        "{}",
        r.stderr
    );
    assert_eq!(pool_count(&pool, "SELECT count(*) FROM releases"), 0);
    assert_only_verified_shards(&pool);
}

/// Starts `seed` on `manifest`, returns its `seeding` event (or its error output when
/// it refuses), and stops it as Ctrl-C would.
fn seed_once(store: &Path, manifest: &Path) -> Result<serde_json::Value, String> {
    let mut child = Command::new(BIN)
        .args(["seed", s(manifest), "--store", s(store), "--json"])
        .args(["--listen", "127.0.0.1:0"])
        .args(OFFLINE)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let seeding = wait_for_event(stdout, "seeding", Duration::from_secs(60));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    seeding.ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_restarted_seeder_trusts_the_pieces_it_verified_only_while_the_files_are_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let m1 = publish(dir.path(), &store, "1", 0..8, 5_000, None);
    let resumed = |r: &Result<serde_json::Value, String>| {
        r.as_ref().map(|v| v["resumed"].as_bool().unwrap()).unwrap()
    };
    // The first start hashes every piece and keeps what it found beside the store.
    assert!(!resumed(&seed_once(&store, &m1)));
    let state = store.join(".seedpool-seed");
    let mut kept: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("session-"))
        .collect();
    kept.sort();
    let hash = Manifest::load(&m1).unwrap().0.torrent.info_hash.to_hex();
    assert_eq!(
        kept,
        [format!("{hash}.bitv"), format!("{hash}.files.json")],
        "a bitfield and the files it covers"
    );
    assert!(resumed(&seed_once(&store, &m1)));

    // A shard damaged in place, its size and modification time put back: the change
    // time still tells, so every piece is hashed again and the damage is found.
    let (manifest, _) = Manifest::load(&m1).unwrap();
    let shard = store
        .join("test-ds/shards")
        .join(format!("{}.tar", manifest.shards[1].id));
    let mtime = std::fs::metadata(&shard).unwrap().modified().unwrap();
    flip_byte(&store, &manifest, 1, 700);
    std::fs::File::options()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let refused = seed_once(&store, &m1).unwrap_err();
    assert!(
        refused.contains("pass the torrent's piece hashes") && refused.contains("shards/"),
        "{refused}"
    );

    // Repaired, the store is checked in full once, then trusted again.
    flip_byte(&store, &manifest, 1, 700);
    assert!(!resumed(&seed_once(&store, &m1)));
    assert!(resumed(&seed_once(&store, &m1)));

    // Where nothing can be kept (here a file is in the folder's way), seeding goes on
    // with full checks.
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::write(&state, "in the way").unwrap();
    assert!(!resumed(&seed_once(&store, &m1)));
    assert!(!resumed(&seed_once(&store, &m1)));
}
