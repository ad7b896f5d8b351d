//! Helpers shared by the end-to-end tests: release folders, keys, running the CLI in
//! process or as the binary.
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

/// Runs seedpool's CLI in this process, with no environment variables: output is
/// captured and relative paths resolve against the test's working folder.
pub fn run(args: &[&str]) -> Run {
    run_env(args, &[])
}

/// Runs seedpool's CLI in this process with the environment variables `envs` only.
pub fn run_env(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let all = std::iter::once("seedpool").chain(args.iter().copied());
    let dir = std::env::current_dir().expect("a working folder");
    let mut env = seedpool::cli::Env::new(all, dir);
    for (k, v) in envs {
        env = env.var_set(k, v);
    }
    let code = seedpool::cli::run(&mut env);
    Run {
        code,
        stdout: env.out.stdout(),
        stderr: env.out.stderr(),
    }
}

/// Runs the seedpool binary, for what needs a process of its own: the demo a newcomer
/// runs, other BitTorrent clients, kills and signals.
pub fn run_binary(args: &[&str]) -> Run {
    run_binary_env(args, &[])
}

/// Runs the seedpool binary with extra environment variables.
pub fn run_binary_env(args: &[&str], envs: &[(&str, &str)]) -> Run {
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

/// Copies the folder tree `from` to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
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

/// A published release in a store, as a publisher who holds the key can rewrite it:
/// the hostile inputs of the tests are made this way, so each carries a valid signature
/// by the key the pool trusts (the fixed test key).
pub struct Published {
    pub store: PathBuf,
    pub dataset: String,
    pub version: String,
}

impl Published {
    pub fn new(store: &Path, version: &str) -> Self {
        Self {
            store: store.to_path_buf(),
            dataset: "test-ds".into(),
            version: version.into(),
        }
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.store
            .join(format!("{}-{}.manifest.json", self.dataset, self.version))
    }

    /// The manifest as it is on disk, not checked.
    pub fn manifest(&self) -> seedpool::manifest::Manifest {
        serde_json::from_slice(&std::fs::read(self.manifest_path()).unwrap()).unwrap()
    }

    pub fn dataset_dir(&self) -> PathBuf {
        self.store.join(&self.dataset)
    }

    pub fn shard_path(&self, id: &str) -> PathBuf {
        self.dataset_dir().join(format!("shards/{id}.tar"))
    }

    pub fn index_path(&self) -> PathBuf {
        self.dataset_dir()
            .join(format!("index/{}.sqlite.zst", self.version))
    }

    /// Runs `sql` on the release index (unpacked, changed, packed again in place).
    pub fn edit_index(&self, sql: &str) {
        let zst = self.index_path();
        let db = zst.with_extension("edit");
        seedpool::index::decompress(&zst, &db, 1 << 32).unwrap();
        let conn = rusqlite::Connection::open(&db).unwrap();
        // A publisher edits as they like: nothing enforces the index's references.
        conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        conn.execute_batch(sql).unwrap();
        drop(conn);
        let piece = self.manifest().torrent.piece_length;
        seedpool::index::compress(&db, &zst, piece).unwrap();
        std::fs::remove_file(&db).unwrap();
    }

    /// Puts `bytes` in place of shard `old` under their own blake3, in the manifest and
    /// the index; returns the new ID. Call `sign` after.
    pub fn replace_shard(&self, old: &str, bytes: &[u8]) -> String {
        let id = blake3::hash(bytes).to_hex().to_string();
        std::fs::remove_file(self.shard_path(old)).unwrap();
        std::fs::write(self.shard_path(&id), bytes).unwrap();
        self.edit_index(&format!(
            "UPDATE shards SET id = '{id}', size = {len} WHERE id = '{old}';
             UPDATE items SET shard = '{id}' WHERE shard = '{old}';",
            len = bytes.len()
        ));
        let path = self.manifest_path();
        let mut m = self.manifest();
        for s in &mut m.shards {
            if s.id.to_hex() == old {
                s.id = seedpool::shard::ShardId::parse(&id).unwrap();
                s.size = bytes.len() as u64;
            }
        }
        m.shards.sort_by_key(|s| s.id);
        std::fs::write(path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        id
    }

    /// Makes the torrent and the manifest say what the files now are (sizes, hashes,
    /// pieces, info hash, counts), applies `edit`, and signs with the test key.
    pub fn sign(&self, edit: impl FnOnce(&mut seedpool::manifest::Manifest)) {
        self.sign_torrent(None, &[], edit)
    }

    /// `sign`, with a torrent of another piece length or with more files than the
    /// manifest lists.
    pub fn sign_torrent(
        &self,
        piece_length: Option<u64>,
        extra_files: &[(&str, &[u8])],
        edit: impl FnOnce(&mut seedpool::manifest::Manifest),
    ) {
        use seedpool::torrent::metainfo::{build, magnet_link, SourceFile, TorrentSpec};
        let mut m = self.manifest();
        let index = std::fs::read(self.index_path()).unwrap();
        m.index.blake3 = blake3::hash(&index).to_hex().to_string();
        m.index.size = index.len() as u64;
        let unpacked = self.index_path().with_extension("size");
        seedpool::index::decompress(&self.index_path(), &unpacked, 1 << 32).unwrap();
        m.index.uncompressed_size = std::fs::metadata(&unpacked).unwrap().len();
        std::fs::remove_file(&unpacked).unwrap();
        let mut files = vec![(m.index.path.clone(), index)];
        for s in &mut m.shards {
            let bytes = std::fs::read(self.shard_path(&s.id.to_hex())).unwrap();
            s.size = bytes.len() as u64;
            files.push((format!("shards/{}.tar", s.id), bytes));
        }
        m.counts.bytes = files.iter().map(|(_, b)| b.len() as u64).sum();
        m.counts.shards = m.shards.len() as u64;
        files.extend(extra_files.iter().map(|(p, b)| (p.to_string(), b.to_vec())));
        let piece_length = piece_length.unwrap_or(m.torrent.piece_length);
        let spec = TorrentSpec {
            name: self.dataset.clone(),
            piece_length,
            files: files
                .iter()
                .map(|(path, bytes)| {
                    let mut h = seedpool::torrent::pieces::PieceHasher::new(piece_length);
                    h.update(bytes);
                    SourceFile {
                        path: path.clone(),
                        length: bytes.len() as u64,
                        pieces: h.finish(),
                    }
                })
                .collect(),
            trackers: m.trackers.clone(),
            web_seeds: m.web_seeds.clone(),
            similar: Vec::new(),
            created: 0,
        };
        let built = build(&spec);
        std::fs::write(
            self.store
                .join(format!("{}-{}.torrent", self.dataset, self.version)),
            &built.bytes,
        )
        .unwrap();
        m.torrent.info_hash = built.info_hash;
        m.torrent.magnet = magnet_link(built.info_hash, &self.dataset, &m.trackers, &m.web_seeds);
        edit(&mut m);
        m.sign(&seedpool::signing::PublisherKey::from_seed([42; 32]));
        std::fs::write(self.manifest_path(), m.to_bytes()).unwrap();
    }
}

/// A `seedpool seed` process, killed when dropped.
pub struct Seeder {
    _child: KillOnDrop,
    pub addr: String,
    /// The web-seed URL, when started with `--http`.
    pub http: Option<String>,
}

impl Seeder {
    pub fn start(bin: &str, store: &Path, manifests: &[PathBuf], extra: &[&str]) -> Self {
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("seed")
            .args(manifests)
            .args(["--store", s(store), "--listen", "127.0.0.1:0", "--json"])
            .args(["--no-dht", "--no-trackers"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("seedpool seed starts");
        let stdout = child.stdout.take().unwrap();
        let ready = wait_for_event(stdout, "ready", std::time::Duration::from_secs(60));
        let Some(ready) = ready else {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "seeder never became ready: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        Seeder {
            _child: KillOnDrop(child),
            addr: ready["addr"].as_str().unwrap().to_string(),
            http: ready["http"].as_str().map(str::to_string),
        }
    }
}

/// Reads JSON lines until one has `event == name`, on a thread so a silent process
/// cannot hang the test. The rest of the output is drained in the background.
pub fn wait_for_event(
    stdout: std::process::ChildStdout,
    name: &str,
    within: std::time::Duration,
) -> Option<serde_json::Value> {
    let (tx, rx) = std::sync::mpsc::channel();
    let name = name.to_string();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            if sent {
                continue;
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["event"] == name.as_str() {
                    let _ = tx.send(v);
                    sent = true;
                }
            }
        }
    });
    rx.recv_timeout(within).ok()
}

/// Publishes `items` items of `payload` bytes as version `version` of `test-ds`.
pub fn publish(
    dir: &Path,
    store: &Path,
    version: &str,
    items: std::ops::Range<usize>,
    payload: usize,
    parent: Option<&str>,
) -> PathBuf {
    let release = dir.join(format!("release-{version}"));
    write_items(&release, items, payload);
    let key = fixed_key(dir);
    let mut args = publish_args(s(&release), s(store), s(&key), version);
    args.extend(["--shard-items", "4"]);
    let parent_manifest;
    if let Some(p) = parent {
        parent_manifest = store.join(format!("test-ds-{p}.manifest.json"));
        args.extend(["--parent", s(&parent_manifest)]);
    }
    let r = run(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    store.join(format!("test-ds-{version}.manifest.json"))
}

/// The `result` event of a `--json` sync.
pub fn result(r: &Run) -> serde_json::Value {
    assert_eq!(r.code, 0, "sync failed: {}{}", r.stdout, r.stderr);
    let last = r.stdout.lines().last().expect("a result line");
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["event"], "result", "{last}");
    v
}

pub fn pool_count(pool: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(pool.join("pool.sqlite")).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Every file among the pool's shards is complete and named by its blake3.
pub fn assert_only_verified_shards(pool: &Path) {
    let dir = pool.join("test-ds/shards");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let id = name
            .strip_suffix(".tar")
            .unwrap_or_else(|| panic!("stray file `{name}` among the pool's shards"));
        let hash = blake3::hash(&std::fs::read(&path).unwrap());
        assert_eq!(hash.to_hex().as_str(), id, "unverified shard `{name}`");
    }
}

/// Damages shard `shard` of a release in `store` by flipping the byte at `offset`.
pub fn flip_byte(
    store: &Path,
    manifest: &seedpool::manifest::Manifest,
    shard: usize,
    offset: usize,
) {
    let path = store
        .join("test-ds/shards")
        .join(format!("{}.tar", manifest.shards[shard].id));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[offset] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
}

/// Debian's nginx-light serving `root` on 127.0.0.1 (a static server seedpool did not
/// write, which answers Range requests), killed when dropped.
pub struct Nginx {
    _child: KillOnDrop,
    pub url: String,
    /// One line per request: `$request $status $body_bytes_sent`.
    pub access_log: PathBuf,
}

impl Nginx {
    /// `extra` goes inside the server block (`limit_rate 1m;`, locations).
    pub fn start(work: &Path, root: &Path, extra: &str) -> Self {
        std::fs::create_dir_all(work.join("tmp")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let w = work.display();
        let config = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {w}/nginx.pid;\n\
             error_log {w}/error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n\
             log_format bytes '$request $status $body_bytes_sent';\n\
             access_log {w}/access.log bytes;\n\
             client_body_temp_path {w}/tmp; proxy_temp_path {w}/tmp; fastcgi_temp_path {w}/tmp;\n\
             uwsgi_temp_path {w}/tmp; scgi_temp_path {w}/tmp;\n\
             default_type application/octet-stream;\n\
             server {{ listen 127.0.0.1:{port}; root {}; {extra} }}\n}}\n",
            root.display()
        );
        let conf = work.join("nginx.conf");
        std::fs::write(&conf, config).unwrap();
        let child = std::process::Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(work)
            .arg("-e")
            .arg(work.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx-light (see .ci/run)");
        let child = KillOnDrop(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nginx did not start: {}",
                std::fs::read_to_string(work.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Nginx {
            _child: child,
            url: format!("http://127.0.0.1:{port}/"),
            access_log: work.join("access.log"),
        }
    }

    /// Body bytes sent so far, over every request.
    pub fn bytes_sent(&self) -> u64 {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}
