//! Bad input for `publish`: each case gets a clear error naming the file and the problem,
//! exit code 1 (2 for usage), and leaves the store exactly as it was.

mod common;

use std::path::PathBuf;

use common::*;

/// A store that already holds release 1, a key, and a fresh release folder to break.
struct Setup {
    _t: tempfile::TempDir,
    root: PathBuf,
    store: PathBuf,
    key: PathBuf,
    rel: PathBuf,
}

fn setup() -> Setup {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().to_path_buf();
    let key = fixed_key(&root);
    let store = root.join("store");
    let r1 = root.join("r1");
    write_items(&r1, 0..12, 500);
    let mut args = publish_args(s(&r1), s(&store), s(&key), "1");
    args.extend(["--shard-items", "4"]);
    assert_eq!(run(&args).code, 0);
    let rel = root.join("rel");
    write_items(&rel, 0..6, 500);
    Setup {
        _t: t,
        root,
        store,
        key,
        rel,
    }
}

/// Publishes `rel` as version 2 (with `extra` flags) and checks that it fails with
/// `code`, that stderr holds every `expect`, and that the store did not change.
fn fails(s_: &Setup, extra: &[&str], code: i32, expect: &[&str]) -> String {
    let before = tree(&s_.store);
    let mut args = publish_args(s(&s_.rel), s(&s_.store), s(&s_.key), "2");
    args.extend(extra);
    let r = run(&args);
    assert_eq!(r.code, code, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    for e in expect {
        assert!(r.stderr.contains(e), "expected `{e}` in: {}", r.stderr);
    }
    assert!(tree(&s_.store) == before, "store changed: {}", r.stderr);
    r.stderr
}

#[test]
fn empty_release_folder() {
    let s_ = setup();
    std::fs::remove_dir_all(&s_.rel).unwrap();
    std::fs::create_dir(&s_.rel).unwrap();
    fails(&s_, &[], 1, &["holds no item files", s(&s_.rel)]);
}

#[test]
fn file_name_without_a_key() {
    let s_ = setup();
    std::fs::write(s_.rel.join("README"), b"x").unwrap();
    fails(
        &s_,
        &[],
        1,
        &["README` gives no item key", "has no extension"],
    );
    std::fs::remove_file(s_.rel.join("README")).unwrap();
    std::fs::write(s_.rel.join(".DS_Store"), b"x").unwrap();
    fails(
        &s_,
        &[],
        1,
        &[".DS_Store` gives no item key", "must not start with `.`"],
    );
    std::fs::remove_file(s_.rel.join(".DS_Store")).unwrap();
    std::fs::write(s_.rel.join("a..jpg"), b"x").unwrap();
    fails(
        &s_,
        &[],
        1,
        &["a..jpg` gives no item key", "empty extension part"],
    );
}

#[test]
fn two_files_for_one_key_and_extension() {
    let s_ = setup();
    let sub = s_.rel.join("more");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("danbooru-1001.jpg"), b"other").unwrap();
    fails(
        &s_,
        &[],
        1,
        &[
            "two files for item `danbooru-1001` extension `jpg`",
            "more/danbooru-1001.jpg",
        ],
    );
}

#[test]
fn symlinks_and_special_files() {
    let s_ = setup();
    let link = s_.rel.join("danbooru-9.jpg");
    std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
    fails(&s_, &[], 1, &["danbooru-9.jpg` is a symbolic link"]);
    std::fs::remove_file(&link).unwrap();
    let dir_link = s_.rel.join("sub");
    std::os::unix::fs::symlink("/", &dir_link).unwrap();
    fails(&s_, &[], 1, &["sub` is a symbolic link"]);
    std::fs::remove_file(&dir_link).unwrap();
    let fifo = s_.rel.join("danbooru-9.pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    fails(
        &s_,
        &[],
        1,
        &["danbooru-9.pipe` is a named pipe, not a regular file"],
    );
}

#[test]
fn invalid_item_json_names_file_line_and_column() {
    let s_ = setup();
    std::fs::write(
        s_.rel.join("danbooru-1002.json"),
        "{\n  \"score\": 3,\n  \"tags\": [\n}",
    )
    .unwrap();
    fails(
        &s_,
        &[],
        1,
        &["invalid item JSON", "danbooru-1002.json", "line 4 column 1"],
    );
    std::fs::write(s_.rel.join("danbooru-1002.json"), "[1, 2]").unwrap();
    fails(
        &s_,
        &[],
        1,
        &["danbooru-1002.json`: the record must be a JSON object"],
    );
    std::fs::write(s_.rel.join("danbooru-1002.json"), r#"{"volume": "../up"}"#).unwrap();
    fails(&s_, &[], 1, &["danbooru-1002.json`: `volume`"]);
}

#[test]
fn unreadable_file() {
    use std::os::unix::fs::PermissionsExt;
    let s_ = setup();
    let secret = s_.rel.join("danbooru-1003.jpg");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let before = tree(&s_.store);
    // Root reads anything, so the binary runs as `nobody` when the tests run as root.
    let (mut cmd, as_nobody) = unprivileged_seedpool(&s_.root);
    cmd.args(publish_args(s(&s_.rel), s(&s_.store), s(&s_.key), "2"));
    if as_nobody {
        for p in [&s_.root, &s_.rel, &s_.store] {
            open_up(p);
        }
        std::os::unix::fs::chown(&s_.key, Some(65534), Some(65534)).unwrap();
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot read")
            && stderr.contains("danbooru-1003.jpg")
            && stderr.contains("ermission denied"),
        "{stderr}"
    );
    assert!(tree(&s_.store) == before);
}

#[test]
fn parent_with_bad_signature() {
    let s_ = setup();
    let parent = s_.root.join("tampered.manifest.json");
    let text = std::fs::read_to_string(s_.store.join("test-ds-1.manifest.json")).unwrap();
    std::fs::write(&parent, text.replacen("\"items\": 4", "\"items\": 5", 1)).unwrap();
    fails(
        &s_,
        &["--parent", s(&parent)],
        1,
        &[
            "tampered.manifest.json` has a bad signature",
            "signature does not match",
        ],
    );
}

#[test]
fn parent_with_unknown_format_version() {
    let s_ = setup();
    let parent = s_.root.join("future.manifest.json");
    let text = std::fs::read_to_string(s_.store.join("test-ds-1.manifest.json")).unwrap();
    std::fs::write(
        &parent,
        text.replacen("\"format_version\": 1", "\"format_version\": 7", 1),
    )
    .unwrap();
    fails(
        &s_,
        &["--parent", s(&parent)],
        1,
        &[
            "future.manifest.json` has format version `7`",
            "upgrade seedpool",
        ],
    );
}

#[test]
fn parent_whose_shards_are_missing_from_the_store() {
    let s_ = setup();
    let parent = s_.store.join("test-ds-1.manifest.json");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&parent).unwrap()).unwrap();
    let id = m["shards"][1]["id"].as_str().unwrap().to_string();
    let shard = s_.store.join(format!("test-ds/shards/{id}.tar"));
    let moved = s_.root.join("moved.tar");
    std::fs::rename(&shard, &moved).unwrap();
    fails(
        &s_,
        &["--parent", s(&parent)],
        1,
        &[
            "parent release `1` is incomplete",
            &format!("{id}.tar` is missing"),
        ],
    );
    // A parent from another dataset.
    std::fs::rename(&moved, &shard).unwrap();
    let mut args = publish_args(s(&s_.rel), s(&s_.store), s(&s_.key), "2");
    args[3] = "other-ds";
    args.extend(["--parent", s(&parent)]);
    let r = run(&args);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("is for dataset `test-ds`, not `other-ds`"),
        "{}",
        r.stderr
    );
}

#[test]
fn republishing_a_version_with_other_content_is_refused() {
    let s_ = setup();
    let before = tree(&s_.store);
    let mut args = publish_args(s(&s_.rel), s(&s_.store), s(&s_.key), "1");
    args.extend(["--shard-items", "4"]);
    let r = run(&args);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("release `1` is already published in this store"),
        "{}",
        r.stderr
    );
    assert!(tree(&s_.store) == before);
}

#[test]
fn missing_key_and_bad_flags_are_usage_errors() {
    let s_ = setup();
    let nokey = s_.root.join("nokey");
    let mut args = publish_args(s(&s_.rel), s(&s_.store), s(&nokey), "2");
    let r = run(&args);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("no publisher key at") && r.stderr.contains("seedpool key generate"),
        "{}",
        r.stderr
    );
    args[9] = s(&s_.key);
    for (flag, value, expect) in [
        (
            "--tracker",
            "ftp://x",
            "tracker `ftp://x` must be a http or https or udp URL",
        ),
        // A prefix test let these through.
        ("--web-seed", "http://", "web seed `http://` is not a URL"),
        (
            "--tracker",
            "http:/x.org",
            "tracker `http:/x.org` must be a http or https or udp URL",
        ),
        (
            "--piece-length",
            "1000",
            "piece length 1000 is not a power of two",
        ),
        (
            "--created",
            "yesterday",
            "`yesterday` is not an RFC 3339 time",
        ),
        (
            "--repack-above",
            "1.5",
            "--repack-above must be between 0 and 1",
        ),
    ] {
        let mut a = args.clone();
        if flag == "--created" {
            a.truncate(a.len() - 2);
        }
        a.extend([flag, value]);
        let r = run(&a);
        assert_eq!(r.code, 2, "{flag}: {}", r.stderr);
        assert!(r.stderr.contains(expect), "{flag}: {}", r.stderr);
    }
}

/// A store on a 1 MiB file system: the publish runs out of space while writing shards,
/// fails with the OS error, and leaves neither staging files nor partial shards.
#[test]
fn full_disk_leaves_the_store_as_it_was() {
    let t = tempfile::tempdir().unwrap();
    let key = fixed_key(t.path());
    let rel = t.path().join("rel");
    write_items(&rel, 0..40, 60_000);
    let mnt = t.path().join("tiny");
    let Some(_guard) = tiny_tmpfs(&mnt) else {
        return;
    };
    let store = mnt.join("store");
    std::fs::create_dir(&store).unwrap();
    std::fs::write(store.join("keep.txt"), b"existing").unwrap();
    let before = tree(&store);
    let r = run(&publish_args(s(&rel), s(&store), s(&key), "1"));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("No space left on device"), "{}", r.stderr);
    assert!(tree(&store) == before, "store changed");
    assert!(!store.join(".seedpool-staging").exists());
}
