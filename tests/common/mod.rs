//! Helpers shared by the end-to-end tests: release folders, keys, running the binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

pub fn seedpool() -> Command {
    let mut cmd = Command::cargo_bin("seedpool").expect("binary built");
    cmd.env_remove("SEEDPOOL_STORE")
        .env_remove("SEEDPOOL_KEY")
        .env_remove("SOURCE_DATE_EPOCH");
    cmd
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(args: &[&str]) -> Run {
    run_env(args, &[])
}

/// Runs seedpool with extra environment variables.
pub fn run_env(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut cmd = seedpool();
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out: Output = cmd.args(args).output().expect("seedpool runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A key file with a fixed seed, so tests that compare bytes get the same signatures.
pub fn fixed_key(dir: &Path) -> PathBuf {
    let path = dir.join("publisher.key");
    seedpool::signing::PublisherKey::from_seed([42; 32])
        .save(&path, true)
        .unwrap();
    path
}

/// A record and a payload for item `i` of a test release.
pub fn item_files(i: usize, volume: &str, payload_len: usize) -> (String, Vec<u8>, String) {
    let key = format!("danbooru-{}", 1000 + i);
    let payload: Vec<u8> = (0..payload_len)
        .map(|j| ((i * 31 + j * 7) % 251) as u8)
        .collect();
    let record = format!(
        r#"{{"booru":"danbooru","post_id":{},"score":{},"volume":"{volume}","tags":{{"artist":["a{}"],"copyright":["s{}"],"character":["c{}"],"general":["solo","g{}"]}}}}"#,
        1000 + i,
        i % 97,
        i % 4,
        i % 2,
        i % 5,
        i % 3
    );
    (key, payload, record)
}

/// Writes items `range` into `dir`: `<key>.jpg` (payload) and `<key>.json`.
pub fn write_items(dir: &Path, range: std::ops::Range<usize>, payload_len: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in range {
        let volume = if i % 2 == 0 { "3x4-2020" } else { "1x1-2021" };
        let (key, payload, record) = item_files(i, volume, payload_len);
        std::fs::write(dir.join(format!("{key}.jpg")), payload).unwrap();
        std::fs::write(dir.join(format!("{key}.json")), record).unwrap();
    }
}

/// Every file under `dir`, relative path → bytes, for comparing stores.
pub fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    fn walk(base: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

pub fn publish_args<'a>(
    release: &'a str,
    store: &'a str,
    key: &'a str,
    version: &'a str,
) -> Vec<&'a str> {
    vec![
        "publish",
        release,
        "--dataset",
        "test-ds",
        "--version",
        version,
        "--store",
        store,
        "--key",
        key,
        "--created",
        "2026-01-02T03:04:05Z",
    ]
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A release's index, decompressed into `dir` and opened as a downloader would.
pub struct Index {
    pub reader: seedpool::index::IndexReader,
}

impl Index {
    pub fn open(store: &Path, version: &str, dir: &Path) -> Self {
        let zst = store
            .join("test-ds/index")
            .join(format!("{version}.sqlite.zst"));
        let out = dir.join(format!("index-{version}.sqlite"));
        seedpool::index::decompress(&zst, &out, 1 << 30).unwrap();
        Index {
            reader: seedpool::index::IndexReader::open(&out).unwrap(),
        }
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.reader
            .connection()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    }
}

/// Unmounts a test file system when dropped.
pub struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts a 1 MiB tmpfs at `mnt` (created), a real full disk for tests; `None` when
/// mounting is not allowed (tests run as root in CI).
pub fn tiny_tmpfs(mnt: &Path) -> Option<Unmount> {
    std::fs::create_dir_all(mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs", s(mnt)])
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
        return None;
    }
    Some(Unmount(mnt.to_path_buf()))
}

/// A child process (a seeder, a server) killed when the test ends, pass or fail.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A command running seedpool as `nobody` when the tests run as root (root reads
/// anything, so permission tests need another user), else as the current user. Returns
/// whether it switches user. `nobody` may not reach the build folder (a checkout under
/// /root, say), so it runs a copy of the binary placed in `scratch`.
pub fn unprivileged_seedpool(scratch: &Path) -> (std::process::Command, bool) {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let bin = assert_cmd::cargo::cargo_bin("seedpool");
    if !is_root {
        return (std::process::Command::new(bin), false);
    }
    let copy = scratch.join("seedpool-bin");
    std::fs::copy(&bin, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = std::process::Command::new(&copy);
    cmd.uid(65534).gid(65534);
    (cmd, true)
}

/// Lets another user walk and write a test folder tree.
pub fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            open_up(&p);
        }
    }
}

/// `python3 -m http.server` on 127.0.0.1 serving `dir`, and its port.
pub fn http_server(dir: &Path) -> (KillOnDrop, String) {
    use std::io::BufRead;
    let mut server = std::process::Command::new("python3")
        .args([
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs");
    let mut first = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let port = first
        .split("port ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("http.server prints its port")
        .to_string();
    (KillOnDrop(server), port)
}
