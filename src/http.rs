//! The one HTTP client: manifests, torrents and models are fetched through it, each
//! with a size cap of the caller's, never a length the server declares.

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

/// GET with a size cap, so a hostile server cannot make us buffer without end.
pub async fn get(url: &str, limit: u64) -> Result<Vec<u8>, HttpError> {
    let failed = |problem: String| HttpError {
        url: url.to_string(),
        problem,
    };
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(20))
        .timeout(std::time::Duration::from_secs(300))
        .user_agent(concat!("seedpool/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| failed(format!("{e:#}")))?;
    if !response.status().is_success() {
        return Err(failed(format!("the server answered {}", response.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| failed(format!("{e:#}")))?
    {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(failed(format!("more than the {limit} bytes accepted")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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
