//! The one HTTP client: manifests, torrents, models and web-seed ranges are fetched
//! through it, each with a size cap of the caller's, never a length the server declares;
//! and the web-seed server (`server`).

pub mod server;

use std::time::Duration;

/// A request that failed, with the URL and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("cannot fetch `{url}`: {problem}")]
pub struct HttpError {
    pub url: String,
    pub problem: String,
}

/// Checks that `text` is a URL a torrent or manifest may carry: one of `schemes`, a
/// host, at most 2048 bytes, no spaces or control characters. `http://` alone, or
/// `http:/x`, passed the prefix test this replaces. Whether it answers is for whoever
/// dials it. The problem reads as the end of the caller's sentence ("tracker `x` ...").
pub fn check_url(text: &str, schemes: &[&str]) -> Result<(), UrlProblem> {
    if text.len() > 2048 {
        return Err(UrlProblem::TooLong(text.len()));
    }
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(UrlProblem::Unprintable);
    }
    let url = url::Url::parse(text).map_err(|e| UrlProblem::NotAUrl(e.to_string()))?;
    if !schemes.contains(&url.scheme()) || !text.starts_with(&format!("{}://", url.scheme())) {
        return Err(UrlProblem::Scheme(schemes.join(" or ")));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlProblem::NoHost);
    }
    Ok(())
}

/// Why a text is not a URL seedpool accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    #[error("is {0} bytes long, more than 2048")]
    TooLong(usize),
    #[error("holds a space or a control character")]
    Unprintable,
    #[error("is not a URL ({0})")]
    NotAUrl(String),
    #[error("must be a {0} URL")]
    Scheme(String),
    #[error("names no host")]
    NoHost,
}

/// Whether `source` names an http(s) URL rather than a path.
pub fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// The client every request goes through. Redirects are followed at most five times
/// and only to http(s): a manifest URL that redirects to `file://` or `ftp://` is refused.
pub fn client(
    connect_timeout: Duration,
    timeout: Option<Duration>,
) -> Result<reqwest::Client, String> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= 5 {
            let error = format!("more than 5 redirects, the last to `{}`", attempt.url());
            attempt.error(error)
        } else if !matches!(attempt.url().scheme(), "http" | "https") {
            let error = format!(
                "redirected to `{}`, which is not an http(s) URL",
                attempt.url()
            );
            attempt.error(error)
        } else {
            attempt.follow()
        }
    });
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .redirect(policy)
        .user_agent(concat!("seedpool/", env!("CARGO_PKG_VERSION")));
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    builder.build().map_err(|e| e.to_string())
}

/// The chain of a reqwest error, which names the cause (refused, reset, redirect).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// GET with a size cap, so a hostile server cannot make us buffer without end.
pub async fn get(url: &str, limit: u64) -> Result<Vec<u8>, HttpError> {
    let failed = |problem: String| HttpError {
        url: url.to_string(),
        problem,
    };
    let client = client(Duration::from_secs(20), Some(Duration::from_secs(300))).map_err(failed)?;
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| failed(describe(&e)))?;
    if response.status().is_redirection() {
        // reqwest hands back, unfollowed, a redirect to a scheme it does not speak.
        let to = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("nowhere");
        return Err(failed(format!(
            "the server answered {} to `{to}`, which is not an http(s) URL that can be followed",
            response.status()
        )));
    }
    if !response.status().is_success() {
        return Err(failed(format!("the server answered {}", response.status())));
    }
    if let Some(len) = response.content_length() {
        if len > limit {
            return Err(failed(format!(
                "it is {len} bytes, more than the {limit} accepted"
            )));
        }
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| failed(describe(&e)))? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(failed(format!("more than the {limit} bytes accepted")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Why a ranged GET failed; the web-seed fallback treats each kind differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeProblem {
    /// 404 or 410: this server lacks the file (it may have others).
    #[error("the server answered {0}: it does not have the file")]
    Missing(u16),
    #[error("the server answered {0}")]
    Status(u16),
    /// The answer is not the bytes asked for: a wrong length, range or total size.
    #[error("{0}")]
    Mismatch(String),
    #[error("the server sent more bytes than the {0} asked for")]
    TooMuch(u64),
    #[error("the answer ended after {got} of {asked} bytes")]
    Short { got: u64, asked: u64 },
    #[error("no byte arrived for {0} s")]
    Stalled(u64),
    #[error("{0}")]
    Transport(String),
}

/// The body of a ranged GET that answered with exactly the bytes asked for.
pub struct RangeBody {
    response: reqwest::Response,
    left: u64,
    asked: u64,
    read_timeout: Duration,
}

/// GETs bytes `start..=end` of a file of `total` bytes, and checks before reading any
/// body that the answer is those bytes: `206` with that Content-Range (or `200` with the
/// whole file when the whole file was asked for) and a Content-Length that agrees.
pub async fn get_range(
    client: &reqwest::Client,
    url: &str,
    start: u64,
    end: u64,
    total: u64,
    read_timeout: Duration,
) -> Result<RangeBody, RangeProblem> {
    let asked = end - start + 1;
    let send = client
        .get(url)
        .header(reqwest::header::RANGE, format!("bytes={start}-{end}"))
        .send();
    let response = match tokio::time::timeout(read_timeout, send).await {
        Err(_) => return Err(RangeProblem::Stalled(read_timeout.as_secs())),
        Ok(r) => r.map_err(|e| RangeProblem::Transport(describe(&e)))?,
    };
    let status = response.status().as_u16();
    match status {
        206 => {
            let range = response
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let expected = format!("bytes {start}-{end}/{total}");
            if range != expected {
                return Err(RangeProblem::Mismatch(format!(
                    "the server answered with Content-Range `{range}`, not `{expected}`"
                )));
            }
        }
        200 if start == 0 && end + 1 == total => {}
        200 => {
            return Err(RangeProblem::Mismatch(
                "the server ignores Range requests (it answered 200 with the whole file)".into(),
            ))
        }
        404 | 410 => return Err(RangeProblem::Missing(status)),
        _ => return Err(RangeProblem::Status(status)),
    }
    if let Some(len) = response.content_length() {
        if len != asked {
            return Err(RangeProblem::Mismatch(format!(
                "the server announced {len} bytes (Content-Length) for a range of {asked}"
            )));
        }
    }
    Ok(RangeBody {
        response,
        left: asked,
        asked,
        read_timeout,
    })
}

impl RangeBody {
    /// The next bytes, or `None` once every asked byte arrived. Fails when the body
    /// stalls, ends early or goes on past the range.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, RangeProblem> {
        let next = tokio::time::timeout(self.read_timeout, self.response.chunk())
            .await
            .map_err(|_| RangeProblem::Stalled(self.read_timeout.as_secs()))?
            .map_err(|e| RangeProblem::Transport(describe(&e)))?;
        match next {
            Some(chunk) if chunk.len() as u64 > self.left => Err(RangeProblem::TooMuch(self.asked)),
            Some(chunk) => {
                self.left -= chunk.len() as u64;
                Ok(Some(chunk))
            }
            None if self.left > 0 => Err(RangeProblem::Short {
                got: self.asked - self.left,
                asked: self.asked,
            }),
            None => Ok(None),
        }
    }
}

/// `get` for callers outside an async runtime: runs it on a runtime of its own.
pub fn get_blocking(url: &str, limit: u64) -> Result<Vec<u8>, HttpError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| HttpError {
            url: url.to_string(),
            problem: format!("cannot start the async runtime: {e}"),
        })?;
    rt.block_on(get(url, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers `/moved` with a redirect to `file://`, `/big` with a
    /// Content-Length past any cap, and `/endless` with a chunked body that never ends.
    async fn rude_server() -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = vec![0u8; 2048];
                    let n = c.read(&mut head).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&head[..n]).to_string();
                    if head.starts_with("GET /moved") {
                        let _ = c
                            .write_all(b"HTTP/1.1 302 Found\r\nlocation: file:///etc/passwd\r\ncontent-length: 0\r\n\r\n")
                            .await;
                    } else if head.starts_with("GET /big") {
                        let _ = c
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999\r\n\r\n")
                            .await;
                    } else {
                        let _ = c
                            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                            .await;
                        let chunk = format!("{:x}\r\n{}\r\n", 4096, "x".repeat(4096));
                        while c.write_all(chunk.as_bytes()).await.is_ok() {}
                    }
                });
            }
        });
        base
    }

    #[tokio::test(flavor = "current_thread")]
    async fn redirects_stay_on_http_and_bodies_stop_at_the_cap() {
        let base = rude_server().await;
        let e = get(&format!("{base}/moved"), 1 << 20).await.unwrap_err();
        assert!(e.to_string().contains("not an http(s) URL"), "{e}");
        let e = get(&format!("{base}/big"), 1 << 20).await.unwrap_err();
        assert!(
            e.to_string().contains("more than the 1048576 accepted"),
            "{e}"
        );
        let e = get(&format!("{base}/endless"), 1 << 20).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("more than the 1048576 bytes accepted"),
            "{e}"
        );
    }

    #[test]
    fn urls_need_a_scheme_we_take_and_a_host() {
        let web = ["http", "https"];
        assert_eq!(check_url("https://mirror.example.org/data", &web), Ok(()));
        assert_eq!(check_url("http://127.0.0.1:8080", &web), Ok(()));
        for (bad, why) in [
            ("http://", "is not a URL"),
            ("http:/x.org/a", "must be a http or https URL"),
            ("ftp://x.org/a", "must be a http or https URL"),
            ("HTTP//x.org", "is not a URL"),
            ("http://x.org/a b", "a space"),
            ("http://x.org/\u{1b}[2J", "a control character"),
        ] {
            let e = check_url(bad, &web).unwrap_err();
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
        }
        assert_eq!(
            check_url(&format!("http://x.org/{}", "a".repeat(2100)), &web),
            Err(UrlProblem::TooLong(2113))
        );
        assert_eq!(
            check_url("udp://tracker.example.org:1337/announce", &["udp"]),
            Ok(())
        );
    }
}
