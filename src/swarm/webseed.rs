//! Web seeds (BEP 19): downloading a release's files over plain HTTP(S) when the swarm
//! does not deliver them.
//!
//! A file is fetched as spans of whole pieces with Range requests, over several
//! connections and sources at once. Every piece is checked against the torrent's SHA-1
//! as it arrives and written only when it matches, so the staging file holds nothing
//! but checked pieces and holes: a killed sync resumes by re-hashing what is there, and
//! a source that sends one wrong byte has cost one piece. Every seedpool torrent is
//! piece-aligned (BEP 47), so a file's pieces are its own bytes, plus the zeros of the
//! pad file after it, which are never requested.
//!
//! A source is dropped for good when it sends bytes that fail a piece hash, answers
//! with another range or length than asked, sends more than asked, or stalls; one that
//! answers 404 is skipped for that file only; other errors are retried a few times.
//! A file that no source left can serve is given back to the caller (the swarm).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha1::{Digest, Sha1};

use crate::http::{self, RangeProblem};
use crate::torrent::pieces::PieceHash;

/// How the web seeds are used.
#[derive(Clone, Debug)]
pub struct WebSeedOptions {
    /// Connections at once, over all sources.
    pub connections: usize,
    /// A source that sends nothing for this long is dropped.
    pub read_timeout: Duration,
    /// Most bytes one request asks for (rounded to whole pieces).
    pub span: u64,
}

impl Default for WebSeedOptions {
    fn default() -> Self {
        Self {
            connections: 4,
            read_timeout: Duration::from_secs(20),
            span: 16 << 20,
        }
    }
}

/// One file to fetch.
#[derive(Clone, Debug)]
pub struct FileJob {
    /// The caller's handle for the file (its index in the torrent).
    pub index: usize,
    /// Path inside the torrent, after its name: `shards/<id>.tar`.
    pub path: String,
    pub size: u64,
    /// Where the bytes go.
    pub staging: PathBuf,
    /// The file's piece hashes, and the pad zeros that complete its last piece.
    pub pieces: Vec<PieceHash>,
    pub tail_zeros: u64,
}

/// What became of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every piece is in staging and checked.
    Complete(usize),
    /// No source left can serve it.
    GivenUp { index: usize, reason: String },
}

/// One source as the progress shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SourceStat {
    pub url: String,
    /// Bytes received from it that passed their piece check.
    pub bytes: u64,
    /// Why it is no longer used.
    pub dropped: Option<String>,
}

/// A running set of web-seed downloads; dropping it stops them.
pub struct WebSeeds {
    shared: Arc<Shared>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: tokio::sync::Notify,
    client: reqwest::Client,
    opts: WebSeedOptions,
    piece_length: u64,
    /// The torrent's name: the folder under each source's URL.
    name: String,
}

#[derive(Default)]
struct State {
    sources: Vec<Source>,
    files: BTreeMap<usize, FileState>,
    queue: VecDeque<Span>,
    outcomes: Vec<Outcome>,
    /// Every byte received, checked or not.
    received: u64,
}

struct Source {
    base: String,
    good_bytes: u64,
    dropped: Option<String>,
    /// Errors in a row that may pass (5xx, a reset connection).
    failures: u32,
    resting_until: Option<Instant>,
    busy: usize,
}

struct FileState {
    job: FileJob,
    file: Option<Arc<std::fs::File>>,
    verified: Vec<bool>,
    verified_bytes: u64,
    /// Sources that answered 404 for this file.
    lacking: BTreeSet<usize>,
    /// What each source did wrong with this file, for the message when it is given up.
    problems: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
struct Span {
    file: usize,
    first: usize,
    count: usize,
}

/// A span handed to a worker, with the source to ask.
struct Job {
    span: Span,
    source: usize,
    url: String,
    size: u64,
    file: Arc<std::fs::File>,
    hashes: Vec<PieceHash>,
    tail_zeros: u64,
}

/// Errors in a row after which a source is dropped.
const MAX_FAILURES: u32 = 3;

impl WebSeeds {
    /// Starts the workers. `sources` are base URLs: a file is at
    /// `<base>/<name>/<path>`, as BEP 19 lays out a multi-file torrent.
    pub fn start(
        sources: Vec<String>,
        name: &str,
        piece_length: u64,
        opts: WebSeedOptions,
    ) -> Result<Self, String> {
        let client = http::client(Duration::from_secs(10), None)?;
        let state = State {
            sources: sources
                .into_iter()
                .map(|base| Source {
                    base,
                    good_bytes: 0,
                    dropped: None,
                    failures: 0,
                    resting_until: None,
                    busy: 0,
                })
                .collect(),
            ..State::default()
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            wake: tokio::sync::Notify::new(),
            client,
            opts,
            piece_length,
            name: name.to_string(),
        });
        let workers = (0..shared.opts.connections.max(1))
            .map(|_| tokio::spawn(worker(Arc::clone(&shared))))
            .collect();
        Ok(Self { shared, workers })
    }

    /// Takes a file on: re-hashes what staging already holds (off the async threads),
    /// then queues the pieces that are missing.
    pub fn add(&self, job: FileJob) {
        let index = job.index;
        let pieces = job.pieces.len();
        self.shared.lock().files.insert(
            index,
            FileState {
                job: job.clone(),
                file: None,
                verified: vec![false; pieces],
                verified_bytes: 0,
                lacking: BTreeSet::new(),
                problems: Vec::new(),
            },
        );
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let pl = shared.piece_length;
            let opened = tokio::task::spawn_blocking(move || open_and_check(&job, pl)).await;
            let mut st = shared.lock();
            let Some(fs) = st.files.get_mut(&index) else {
                return;
            };
            match opened {
                Ok(Ok((file, verified))) => {
                    fs.verified_bytes = verified
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| **v)
                        .map(|(i, _)| piece_size(&fs.job, pl, i))
                        .sum();
                    fs.verified = verified;
                    fs.file = Some(Arc::new(file));
                    let spans = missing_spans(index, &fs.verified, pl, shared.opts.span);
                    if spans.is_empty() {
                        st.files.remove(&index);
                        st.outcomes.push(Outcome::Complete(index));
                    } else {
                        st.queue.extend(spans);
                    }
                }
                Ok(Err(problem)) => give_up(&mut st, index, problem),
                Err(e) => give_up(&mut st, index, format!("the check task failed: {e}")),
            }
            drop(st);
            shared.wake.notify_waiters();
        });
    }

    /// Files finished or given up since the last call.
    pub fn outcomes(&self) -> Vec<Outcome> {
        std::mem::take(&mut self.shared.lock().outcomes)
    }

    /// Checked bytes of a file being fetched (0 for one not known).
    pub fn progress(&self, index: usize) -> u64 {
        self.shared
            .lock()
            .files
            .get(&index)
            .map_or(0, |f| f.verified_bytes)
    }

    /// Every byte received so far, checked or not.
    pub fn received(&self) -> u64 {
        self.shared.lock().received
    }

    /// Whether no source is left.
    pub fn exhausted(&self) -> bool {
        self.shared
            .lock()
            .sources
            .iter()
            .all(|s| s.dropped.is_some())
    }

    pub fn sources(&self) -> Vec<SourceStat> {
        self.shared
            .lock()
            .sources
            .iter()
            .map(|s| SourceStat {
                url: s.base.clone(),
                bytes: s.good_bytes,
                dropped: s.dropped.clone(),
            })
            .collect()
    }
}

impl Drop for WebSeeds {
    fn drop(&mut self) {
        for w in &self.workers {
            w.abort();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked holding the lock left counters, not broken invariants.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Bytes of piece `i` of a file that belong to the file.
fn piece_size(job: &FileJob, pl: u64, i: usize) -> u64 {
    let start = i as u64 * pl;
    pl.min(job.size.saturating_sub(start))
}

/// Opens (or creates, at its full size) the staging file and checks each piece already
/// there; a new file is all holes and is not read.
fn open_and_check(job: &FileJob, pl: u64) -> Result<(std::fs::File, Vec<bool>), String> {
    use std::io::Read;
    let path = &job.staging;
    let failed = |what: &str, e: std::io::Error| format!("cannot {what} `{}`: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| failed("create the folder of", e))?;
    }
    let existed = path.exists();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| failed("open", e))?;
    let had = file.metadata().map_err(|e| failed("read", e))?.len();
    if had != job.size {
        file.set_len(job.size).map_err(|e| failed("size", e))?;
    }
    let mut verified = vec![false; job.pieces.len()];
    if existed && had > 0 {
        let mut reader = std::io::BufReader::with_capacity(1 << 20, &file);
        let mut buf = vec![0u8; pl as usize];
        for (i, v) in verified.iter_mut().enumerate() {
            let n = piece_size(job, pl, i) as usize;
            reader
                .read_exact(&mut buf[..n])
                .map_err(|e| failed("read", e))?;
            *v = piece_matches(&buf[..n], last_zeros(job, i), &job.pieces[i]);
        }
    }
    Ok((file, verified))
}

fn last_zeros(job: &FileJob, i: usize) -> u64 {
    if i + 1 == job.pieces.len() {
        job.tail_zeros
    } else {
        0
    }
}

fn piece_matches(bytes: &[u8], zeros: u64, expected: &PieceHash) -> bool {
    let mut h = Sha1::new();
    h.update(bytes);
    let pad = [0u8; 64 * 1024];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(pad.len() as u64) as usize;
        h.update(&pad[..n]);
        left -= n as u64;
    }
    let got: PieceHash = h.finalize().into();
    &got == expected
}

/// Runs of missing pieces, cut to at most `span` bytes each.
fn missing_spans(file: usize, verified: &[bool], pl: u64, span: u64) -> Vec<Span> {
    let per_span = (span / pl).max(1) as usize;
    let mut out = Vec::new();
    let mut i = 0;
    while i < verified.len() {
        if verified[i] {
            i += 1;
            continue;
        }
        let first = i;
        while i < verified.len() && !verified[i] && i - first < per_span {
            i += 1;
        }
        out.push(Span {
            file,
            first,
            count: i - first,
        });
    }
    out
}

/// Drops a file: its spans leave the queue and the caller hears why.
fn give_up(st: &mut State, index: usize, reason: String) {
    st.queue.retain(|s| s.file != index);
    st.files.remove(&index);
    st.outcomes.push(Outcome::GivenUp { index, reason });
}

/// `<base>/<name>/<path>`, each segment percent-encoded.
pub fn file_url(base: &str, name: &str, path: &str) -> String {
    let mut url = base.trim_end_matches('/').to_string();
    for segment in std::iter::once(name).chain(path.split('/')) {
        url.push('/');
        for b in segment.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                url.push(char::from(b));
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
    }
    url
}

/// Picks the next span and a source for it, giving up files no source can serve.
fn next_job(shared: &Shared, st: &mut State) -> Option<Job> {
    let now = Instant::now();
    let mut i = 0;
    while i < st.queue.len() {
        let span = st.queue[i];
        let Some(fs) = st.files.get(&span.file) else {
            st.queue.remove(i);
            continue;
        };
        let usable: Vec<usize> = st
            .sources
            .iter()
            .enumerate()
            .filter(|(k, s)| s.dropped.is_none() && !fs.lacking.contains(k))
            .map(|(k, _)| k)
            .collect();
        if usable.is_empty() {
            let reason = if fs.problems.is_empty() {
                "every web seed was dropped".to_string()
            } else {
                fs.problems.join("; ")
            };
            give_up(st, span.file, reason);
            i = 0;
            continue;
        }
        let best = usable
            .into_iter()
            .filter(|k| st.sources[*k].resting_until.is_none_or(|t| t <= now))
            .min_by_key(|k| st.sources[*k].busy);
        let (Some(source), Some(file)) = (best, fs.file.clone()) else {
            i += 1;
            continue;
        };
        let last = span.first + span.count == fs.job.pieces.len();
        let job = Job {
            span,
            source,
            url: file_url(&st.sources[source].base, &shared.name, &fs.job.path),
            size: fs.job.size,
            file,
            hashes: fs.job.pieces[span.first..span.first + span.count].to_vec(),
            tail_zeros: if last { fs.job.tail_zeros } else { 0 },
        };
        st.queue.remove(i);
        st.sources[source].busy += 1;
        return Some(job);
    }
    None
}

async fn worker(shared: Arc<Shared>) {
    loop {
        let job = {
            let mut st = shared.lock();
            next_job(&shared, &mut st)
        };
        match job {
            Some(job) => run(&shared, job).await,
            // Woken when work arrives; the timeout covers a source coming out of rest.
            None => {
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), shared.wake.notified()).await;
            }
        }
    }
}

/// What ended a span early.
enum Failed {
    Http(RangeProblem),
    BadPiece(usize),
    Write(String),
}

/// Fetches one span from one source, checking and writing piece by piece; whatever is
/// not written goes back to the queue.
async fn run(shared: &Shared, job: Job) {
    let mut done = 0usize;
    let result = fetch_span(shared, &job, &mut done).await;
    let mut guard = shared.lock();
    let st = &mut *guard;
    st.sources[job.source].busy -= 1;
    let index = job.span.file;
    if done < job.span.count && st.files.contains_key(&index) {
        st.queue.push_front(Span {
            file: index,
            first: job.span.first + done,
            count: job.span.count - done,
        });
    }
    let base = st.sources[job.source].base.clone();
    let dropped = match result {
        Ok(()) => {
            st.sources[job.source].failures = 0;
            None
        }
        Err(Failed::Http(RangeProblem::Missing(status))) => {
            if let Some(fs) = st.files.get_mut(&index) {
                fs.lacking.insert(job.source);
                fs.problems.push(format!("`{base}` answered {status}"));
            }
            None
        }
        Err(Failed::Http(
            p @ (RangeProblem::Status(_) | RangeProblem::Transport(_) | RangeProblem::Short { .. }),
        )) => {
            let s = &mut st.sources[job.source];
            s.failures += 1;
            s.resting_until = Some(Instant::now() + Duration::from_millis(250 << s.failures));
            (s.failures >= MAX_FAILURES).then(|| format!("{p} ({} times in a row)", s.failures))
        }
        Err(Failed::Http(p)) => Some(p.to_string()),
        Err(Failed::BadPiece(piece)) => Some(format!(
            "it sent bytes that fail the SHA-1 of piece {piece} of `{}`",
            job.url.rsplit('/').next().unwrap_or("")
        )),
        // A failing disk is not the source's fault: the file is given up, the source kept.
        Err(Failed::Write(problem)) => {
            give_up(st, index, problem);
            None
        }
    };
    if let Some(problem) = dropped {
        if let Some(fs) = st.files.get_mut(&index) {
            fs.problems.push(format!("`{base}` was dropped: {problem}"));
        }
        st.sources[job.source].dropped = Some(problem);
    }
    if st
        .files
        .get(&index)
        .is_some_and(|fs| fs.verified.iter().all(|v| *v))
    {
        st.files.remove(&index);
        st.outcomes.push(Outcome::Complete(index));
    }
    drop(guard);
    shared.wake.notify_waiters();
}

async fn fetch_span(shared: &Shared, job: &Job, done: &mut usize) -> Result<(), Failed> {
    let pl = shared.piece_length;
    let start = job.span.first as u64 * pl;
    let end = ((job.span.first + job.span.count) as u64 * pl).min(job.size) - 1;
    let mut body = http::get_range(
        &shared.client,
        &job.url,
        start,
        end,
        job.size,
        shared.opts.read_timeout,
    )
    .await
    .map_err(Failed::Http)?;
    let mut buf: Vec<u8> = Vec::with_capacity(pl as usize);
    loop {
        while *done < job.span.count {
            let piece = job.span.first + *done;
            let want = pl.min(job.size - piece as u64 * pl) as usize;
            if buf.len() < want {
                break;
            }
            let rest = buf.split_off(want);
            let bytes = std::mem::replace(&mut buf, rest);
            let last = *done + 1 == job.span.count;
            let zeros = if last { job.tail_zeros } else { 0 };
            let expected = job.hashes[*done];
            let file = Arc::clone(&job.file);
            let offset = piece as u64 * pl;
            let written = tokio::task::spawn_blocking(move || {
                if !piece_matches(&bytes, zeros, &expected) {
                    return Ok(false);
                }
                std::os::unix::fs::FileExt::write_all_at(&*file, &bytes, offset)
                    .map(|()| true)
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| Failed::Write(e.to_string()))?
            .map_err(Failed::Write)?;
            if !written {
                return Err(Failed::BadPiece(piece));
            }
            let mut st = shared.lock();
            st.sources[job.source].good_bytes += want as u64;
            if let Some(fs) = st.files.get_mut(&job.span.file) {
                if !fs.verified[piece] {
                    fs.verified[piece] = true;
                    fs.verified_bytes += want as u64;
                }
            }
            drop(st);
            *done += 1;
        }
        match body.chunk().await.map_err(Failed::Http)? {
            Some(chunk) => {
                shared.lock().received += chunk.len() as u64;
                buf.extend_from_slice(&chunk);
            }
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_bep_19_layout() {
        assert_eq!(
            file_url("http://m.org/data/", "booru-chars", "shards/ab.tar"),
            "http://m.org/data/booru-chars/shards/ab.tar"
        );
        assert_eq!(
            file_url("http://m.org", "a b", "index/1.0.sqlite.zst"),
            "http://m.org/a%20b/index/1.0.sqlite.zst"
        );
    }

    #[test]
    fn spans_cover_runs_of_missing_pieces() {
        let v = [true, false, false, false, true, false];
        let spans: Vec<(usize, usize)> = missing_spans(7, &v, 10, 20)
            .iter()
            .map(|s| (s.first, s.count))
            .collect();
        assert_eq!(spans, [(1, 2), (3, 1), (5, 1)]);
        assert!(missing_spans(7, &[true; 3], 10, 20).is_empty());
    }

    /// How a hostile web seed answers a ranged GET.
    #[derive(Clone, Copy)]
    enum Lie {
        /// Another range than asked, with the right bytes.
        OtherRange,
        /// Another total size than the file's.
        OtherTotal,
        /// A Content-Length longer than the range.
        LongerLength,
        /// The right headers, then more bytes than asked (chunked, so no length says so).
        MoreBytes,
        /// 200 and the whole file, for a part.
        NoRanges,
        /// 404 for everything.
        Missing,
    }

    /// A server that answers every ranged GET of `bytes` the way `lie` says.
    async fn liar(bytes: Vec<u8>, lie: Lie) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let bytes = Arc::new(bytes);
        tokio::spawn(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                let bytes = Arc::clone(&bytes);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if c.read(&mut b).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(b[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_lowercase();
                    let range = head
                        .split("range: bytes=")
                        .nth(1)
                        .and_then(|r| r.split("\r\n").next())
                        .and_then(|r| r.split_once('-'))
                        .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()));
                    let Some((a, z)) = range else { return };
                    let n = bytes.len();
                    let part = &bytes[a..=z];
                    let (status, headers, body): (&str, String, Vec<u8>) = match lie {
                        Lie::OtherRange => (
                            "206 Partial Content",
                            format!(
                                "content-range: bytes {}-{}/{n}\r\ncontent-length: {}\r\n",
                                a + 1,
                                z + 1,
                                part.len()
                            ),
                            part.to_vec(),
                        ),
                        Lie::OtherTotal => (
                            "206 Partial Content",
                            format!(
                                "content-range: bytes {a}-{z}/{}\r\ncontent-length: {}\r\n",
                                n + 1,
                                part.len()
                            ),
                            part.to_vec(),
                        ),
                        Lie::LongerLength => {
                            let mut body = part.to_vec();
                            body.extend_from_slice(&[7; 10]);
                            (
                                "206 Partial Content",
                                format!(
                                    "content-range: bytes {a}-{z}/{n}\r\ncontent-length: {}\r\n",
                                    body.len()
                                ),
                                body,
                            )
                        }
                        Lie::MoreBytes => {
                            let mut chunked = format!("{:x}\r\n", part.len()).into_bytes();
                            chunked.extend_from_slice(part);
                            chunked.extend_from_slice(b"\r\n64\r\n");
                            chunked.extend_from_slice(&[7; 100]);
                            chunked.extend_from_slice(b"\r\n0\r\n\r\n");
                            (
                                "206 Partial Content",
                                format!("content-range: bytes {a}-{z}/{n}\r\ntransfer-encoding: chunked\r\n"),
                                chunked,
                            )
                        }
                        Lie::NoRanges => {
                            ("200 OK", format!("content-length: {n}\r\n"), bytes.to_vec())
                        }
                        Lie::Missing => {
                            ("404 Not Found", "content-length: 0\r\n".into(), Vec::new())
                        }
                    };
                    let reply = format!("HTTP/1.1 {status}\r\n{headers}connection: close\r\n\r\n");
                    let _ = c.write_all(reply.as_bytes()).await;
                    let _ = c.write_all(&body).await;
                });
            }
        });
        url
    }

    /// A file of 20 pieces of 16 KiB plus a tail, its job, and what became of it when
    /// fetched from `sources` (served by `start` given the bytes).
    async fn fetch_with(
        dir: &std::path::Path,
        lies: &[Lie],
        with_good: bool,
    ) -> (Vec<u8>, Outcome, Vec<SourceStat>) {
        let pl = 16 << 10;
        let bytes: Vec<u8> = (0..(20 * pl + 5000) as u32)
            .map(|i| (i * 7 % 253) as u8)
            .collect();
        let mut hasher = crate::torrent::pieces::PieceHasher::new(pl as u64);
        hasher.update(&bytes);
        let pieces = hasher.finish().hashes(true).copied().collect();
        let mut sources = Vec::new();
        for lie in lies {
            sources.push(liar(bytes.clone(), *lie).await);
        }
        if with_good {
            sources.push(crate::http::server::tests::serve_one(&dir.join("served"), &bytes).await);
        }
        let opts = WebSeedOptions {
            connections: 3,
            read_timeout: Duration::from_secs(5),
            span: pl as u64,
        };
        let seeds = WebSeeds::start(sources, "d", pl as u64, opts).unwrap();
        let staging = dir.join("staging/shards/f.tar");
        seeds.add(FileJob {
            index: 3,
            path: "shards/f.tar".into(),
            size: bytes.len() as u64,
            staging: staging.clone(),
            pieces,
            tail_zeros: 0,
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let outcome = loop {
            if let Some(o) = seeds.outcomes().pop() {
                break o;
            }
            assert!(
                Instant::now() < deadline,
                "no outcome: {:?}",
                seeds.sources()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if outcome == Outcome::Complete(3) {
            assert_eq!(std::fs::read(&staging).unwrap(), bytes);
        }
        (bytes, outcome, seeds.sources())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sources_that_answer_other_bytes_than_asked_are_dropped() {
        for (lie, why) in [
            (Lie::OtherRange, "Content-Range `bytes"),
            (Lie::OtherTotal, "Content-Range `bytes"),
            (Lie::LongerLength, "(Content-Length)"),
            (Lie::MoreBytes, "more bytes than"),
            (Lie::NoRanges, "ignores Range requests"),
        ] {
            let t = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(t.path().join("served")).unwrap();
            let (_, outcome, stats) = fetch_with(t.path(), &[lie], true).await;
            assert_eq!(outcome, Outcome::Complete(3), "{why}: {stats:?}");
            let dropped = stats[0].dropped.clone().unwrap_or_default();
            assert!(dropped.contains(why), "{why}: {stats:?}");
            assert!(
                stats[1].dropped.is_none() && stats[1].bytes > 0,
                "{stats:?}"
            );
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_file_no_source_can_serve_is_given_back_with_the_reasons() {
        let t = tempfile::tempdir().unwrap();
        let (_, outcome, stats) =
            fetch_with(t.path(), &[Lie::Missing, Lie::OtherRange], false).await;
        let Outcome::GivenUp { index: 3, reason } = outcome else {
            panic!("{outcome:?}");
        };
        assert!(
            reason.contains("answered 404") && reason.contains("was dropped"),
            "{reason}"
        );
        assert!(
            stats[0].dropped.is_none(),
            "a 404 is not a reason to drop: {stats:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_resumed_file_fetches_only_the_pieces_it_lacks() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("served")).unwrap();
        let (bytes, outcome, stats) = fetch_with(t.path(), &[], true).await;
        assert_eq!(outcome, Outcome::Complete(3));
        assert_eq!(stats[0].bytes, bytes.len() as u64);
        // Punch out two pieces (as a kill would leave holes), then fetch again.
        let staging = t.path().join("staging/shards/f.tar");
        let mut partial = bytes.clone();
        partial[16 << 10..3 * (16 << 10)].fill(0);
        std::fs::write(&staging, &partial).unwrap();
        let (_, outcome, stats) = fetch_with(t.path(), &[], true).await;
        assert_eq!(outcome, Outcome::Complete(3));
        assert_eq!(stats[0].bytes, 2 * (16 << 10), "{stats:?}");
    }

    #[test]
    fn a_last_piece_is_checked_with_its_pad_zeros() {
        let tail = b"tail";
        let mut padded = tail.to_vec();
        padded.resize(16, 0);
        let hash: PieceHash = Sha1::digest(&padded).into();
        assert!(piece_matches(tail, 12, &hash));
        assert!(!piece_matches(tail, 0, &hash));
        assert!(!piece_matches(b"tai!", 12, &hash));
    }
}
