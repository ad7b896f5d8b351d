//! The web-seed server: plain, read-only HTTP over a fixed catalog of files, so that a
//! mirror is reachable by curl, wget and BEP 19 clients as well as by BitTorrent.
//!
//! Nothing from the request reaches the file system: a request path is looked up in the
//! catalog its owner built from the releases it serves, and answered or refused. The
//! files are content-addressed and never change, so a strong ETag is their blake3 and
//! ranges are answered without revalidation.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::io::{AsyncRead, AsyncSeekExt, ReadBuf};

/// One file the server answers for.
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: PathBuf,
    pub size: u64,
    /// The file's blake3 (hex): its strong ETag.
    pub blake3: String,
    pub content_type: &'static str,
    /// A file that changes in place (a release feed): read whole at each request,
    /// its ETag computed then, and never cached for long.
    pub mutable: bool,
}

/// Largest mutable file served (a feed is at most 4 MiB).
const MAX_MUTABLE: u64 = 16 << 20;

/// The files served, by URL path (`/<dataset>/shards/<id>.tar`).
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    files: BTreeMap<String, Entry>,
}

impl Catalog {
    pub fn insert(&mut self, url_path: String, entry: Entry) {
        self.files.insert(url_path, entry);
    }

    fn get(&self, raw_path: &str) -> Option<&Entry> {
        self.files
            .get(raw_path)
            .or_else(|| self.files.get(&percent_decode(raw_path)?))
    }
}

/// What the server has done, for the seeder's totals.
#[derive(Debug, Default)]
pub struct Stats {
    /// Body bytes handed to connections.
    pub bytes: AtomicU64,
}

struct Shared {
    catalog: Catalog,
    stats: Arc<Stats>,
}

/// Read size from disk: large enough that a loopback download is bound by the
/// socket, not by the number of reads.
const CHUNK: usize = 1 << 20;

/// Serves `catalog` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    catalog: Catalog,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared { catalog, stats });
    let app = Router::new().fallback(answer).with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn answer(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "this server is read-only\n",
        )
            .into_response();
    }
    let Some(entry) = shared.catalog.get(request.uri().path()) else {
        return (
            StatusCode::NOT_FOUND,
            "not a file of the releases seeded here\n",
        )
            .into_response();
    };
    let headers = request.headers();
    let fresh;
    let (entry, bytes) = if entry.mutable {
        match read_mutable(entry).await {
            Ok((e, b)) => {
                fresh = e;
                (&fresh, Some(b))
            }
            Err(problem) => {
                return (StatusCode::INTERNAL_SERVER_ERROR, format!("{problem}\n")).into_response()
            }
        }
    } else {
        (entry, None)
    };
    let etag = format!("\"{}\"", entry.blake3);
    if header_names_etag(headers, header::IF_NONE_MATCH, &etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    // A range asked "if the file is still the one I saw" is answered whole otherwise.
    let range_applies = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let range = match headers.get(header::RANGE) {
        Some(v) if range_applies => parse_range(v.as_bytes(), entry.size),
        _ => Range::Whole,
    };
    let (status, start, len) = match range {
        Range::Whole => (StatusCode::OK, 0, entry.size),
        Range::Part(start, end) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Range::Unsatisfiable => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{}", entry.size))],
            )
                .into_response()
        }
    };
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, entry.content_type)
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag)
        .header(
            header::CACHE_CONTROL,
            if entry.mutable {
                "no-cache"
            } else {
                "public, max-age=31536000, immutable"
            },
        );
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{}", start + len - 1, entry.size),
        );
    }
    let body = if method == Method::HEAD || len == 0 {
        Body::empty()
    } else if let Some(bytes) = bytes {
        let part = bytes[start as usize..(start + len) as usize].to_vec();
        shared.stats.bytes.fetch_add(len, Ordering::Relaxed);
        Body::from(part)
    } else {
        match open_at(entry, start).await {
            Ok(file) => Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
                Counted {
                    inner: tokio::io::AsyncReadExt::take(file, len),
                    stats: Arc::clone(&shared.stats),
                },
                CHUNK,
            )),
            Err(problem) => {
                return (StatusCode::INTERNAL_SERVER_ERROR, format!("{problem}\n")).into_response()
            }
        }
    };
    response
        .body(body)
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}

/// A mutable file's bytes now, and its entry with the size and blake3 they have.
async fn read_mutable(entry: &Entry) -> Result<(Entry, Vec<u8>), String> {
    let failed = |e: std::io::Error| format!("cannot read `{}`: {e}", entry.path.display());
    let size = tokio::fs::metadata(&entry.path)
        .await
        .map_err(failed)?
        .len();
    if size > MAX_MUTABLE {
        return Err(format!(
            "`{}` is larger than {MAX_MUTABLE} bytes",
            entry.path.display()
        ));
    }
    let bytes = tokio::fs::read(&entry.path).await.map_err(failed)?;
    let fresh = Entry {
        size: bytes.len() as u64,
        blake3: blake3::hash(&bytes).to_hex().to_string(),
        ..entry.clone()
    };
    Ok((fresh, bytes))
}

/// Opens a catalog file at `start`, refusing one whose size is no longer the one listed
/// (a store changed under the server must not be served as the release).
async fn open_at(entry: &Entry, start: u64) -> Result<tokio::fs::File, String> {
    let failed = |e: std::io::Error| format!("cannot read `{}`: {e}", entry.path.display());
    let mut file = tokio::fs::File::open(&entry.path).await.map_err(failed)?;
    let size = file.metadata().await.map_err(failed)?.len();
    if size != entry.size {
        return Err(format!(
            "`{}` is {size} bytes, the release says {}",
            entry.path.display(),
            entry.size
        ));
    }
    file.seek(SeekFrom::Start(start)).await.map_err(failed)?;
    Ok(file)
}

fn header_names_etag(headers: &HeaderMap, name: header::HeaderName, etag: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v: &HeaderValue| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag == etag || tag.strip_prefix("W/") == Some(etag))
}

/// The answer to a Range header, for a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Range {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range; anything else (other units, several ranges, garbage) is answered
/// with the whole file, which RFC 9110 allows a server to do.
fn parse_range(value: &[u8], size: u64) -> Range {
    let Some(spec) = std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Range::Whole;
    };
    if spec.contains(',') {
        return Range::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Range::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (number(first), number(last), first.trim().is_empty()) {
        // The last N bytes.
        (None, Some(n), true) => {
            if n == 0 || size == 0 {
                Range::Unsatisfiable
            } else {
                Range::Part(size.saturating_sub(n), size - 1)
            }
        }
        (Some(a), None, false) if last.trim().is_empty() => {
            if a >= size {
                Range::Unsatisfiable
            } else {
                Range::Part(a, size - 1)
            }
        }
        (Some(a), Some(b), false) if a <= b => {
            if a >= size {
                Range::Unsatisfiable
            } else {
                Range::Part(a, b.min(size - 1))
            }
        }
        _ => Range::Whole,
    }
}

fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return None;
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A reader that counts what it hands out.
struct Counted<R> {
    inner: R,
    stats: Arc<Stats>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        self.stats.bytes.fetch_add(read, Ordering::Relaxed);
        poll
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        let r = |v: &str| parse_range(v.as_bytes(), 1000);
        assert_eq!(r("bytes=0-99"), Range::Part(0, 99));
        assert_eq!(r("bytes=900-"), Range::Part(900, 999));
        assert_eq!(r("bytes=-100"), Range::Part(900, 999));
        assert_eq!(r("bytes=-5000"), Range::Part(0, 999));
        assert_eq!(r("bytes=990-5000"), Range::Part(990, 999));
        assert_eq!(r("bytes=1000-"), Range::Unsatisfiable);
        assert_eq!(r("bytes=1000-1200"), Range::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Range::Unsatisfiable);
        for whole in [
            "bytes=5-1",
            "bytes=0-1,5-9",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
            "",
        ] {
            assert_eq!(r(whole), Range::Whole, "{whole:?}");
        }
        assert_eq!(parse_range(b"bytes=0-", 0), Range::Unsatisfiable);
    }

    /// Serves one file of `bytes` at `/d/shards/f.tar`; returns the base URL.
    pub(crate) async fn serve_one(dir: &std::path::Path, bytes: &[u8]) -> String {
        let path = dir.join("f.tar");
        std::fs::write(&path, bytes).unwrap();
        let mut c = Catalog::default();
        c.insert(
            "/d/shards/f.tar".into(),
            Entry {
                path,
                size: bytes.len() as u64,
                blake3: blake3::hash(bytes).to_hex().to_string(),
                content_type: "application/x-tar",
                mutable: false,
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(serve(listener, c, Arc::default(), std::future::pending()));
        url
    }

    #[tokio::test]
    async fn answers_ranges_head_and_etags_and_nothing_else() {
        let t = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let base = serve_one(t.path(), &bytes).await;
        let url = format!("{base}d/shards/f.tar");
        let client = reqwest::Client::new();
        let etag = format!("\"{}\"", blake3::hash(&bytes).to_hex());

        let whole = client.get(&url).send().await.unwrap();
        assert_eq!(whole.status(), 200);
        assert_eq!(whole.headers()["etag"], etag.as_str());
        assert_eq!(whole.headers()["accept-ranges"], "bytes");
        assert_eq!(whole.bytes().await.unwrap(), bytes);

        let part = client
            .get(&url)
            .header("range", "bytes=1000-1999")
            .send()
            .await
            .unwrap();
        assert_eq!(part.status(), 206);
        assert_eq!(part.headers()["content-range"], "bytes 1000-1999/100000");
        assert_eq!(part.bytes().await.unwrap(), &bytes[1000..2000]);

        let head = client.head(&url).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["content-length"], "100000");

        let same = client
            .get(&url)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(same.status(), 304);
        // A range "if still the file I saw" of another file gets the whole file.
        let stale = client
            .get(&url)
            .header("range", "bytes=0-9")
            .header("if-range", "\"other\"")
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), 200);
        let past = client
            .get(&url)
            .header("range", "bytes=200000-")
            .send()
            .await
            .unwrap();
        assert_eq!(past.status(), 416);
        assert_eq!(past.headers()["content-range"], "bytes */100000");

        for (method, path, status) in [
            (reqwest::Method::POST, "d/shards/f.tar", 405),
            (reqwest::Method::PUT, "d/shards/f.tar", 405),
            (reqwest::Method::GET, "d/shards/g.tar", 404),
            (reqwest::Method::GET, "f.tar", 404),
        ] {
            let r = client
                .request(method.clone(), format!("{base}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), status, "{method} {path}");
        }
        // Sent raw: a client library would resolve the dot segments first.
        for target in [
            "/d/shards/../shards/f.tar",
            "/d/%2e%2e/d/shards/f.tar",
            "/../../etc/passwd",
        ] {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let addr = base.trim_start_matches("http://").trim_end_matches('/');
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request =
                format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            c.write_all(request.as_bytes()).await.unwrap();
            let mut answer = String::new();
            c.read_to_string(&mut answer).await.unwrap();
            assert!(answer.starts_with("HTTP/1.1 404"), "{target}: {answer}");
        }
    }

    #[test]
    fn paths_match_raw_or_percent_decoded() {
        let mut c = Catalog::default();
        let entry = Entry {
            path: "/nowhere".into(),
            size: 1,
            blake3: "ab".into(),
            content_type: "application/x-tar",
            mutable: false,
        };
        c.insert("/d/shards/a b.tar".into(), entry);
        assert!(c.get("/d/shards/a%20b.tar").is_some());
        assert!(c.get("/d/shards/a%2").is_none());
        assert!(c.get("/d/shards/../a b.tar").is_none());
    }
}
