//! The one HTTP client: manifests, torrents and models are fetched through it, each
//! with a size cap of the caller's, never a length the server declares.

/// A request that failed, with the URL and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("cannot fetch `{url}`: {problem}")]
pub struct HttpError {
    pub url: String,
    pub problem: String,
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
