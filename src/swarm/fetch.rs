//! Getting a release's manifest and torrent, from a local path or an http(s) URL. The
//! torrent lies next to the manifest, under the name the manifest gives it; it must
//! have the info hash the (signed) manifest names, which makes it as trusted as the
//! manifest.

use std::path::{Path, PathBuf};

use crate::files::{file_error, FileError};
use crate::manifest::{Manifest, ManifestError, MAX_MANIFEST_BYTES};
use crate::torrent::metainfo::MAX_TORRENT_BYTES;
use crate::torrent::Metainfo;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error("torrent `{location}`: {problem}")]
    Torrent { location: String, problem: String },
    #[error("torrent `{location}` has info hash `{found}`, but the manifest names `{expected}`; the torrent does not belong to this release")]
    InfoHash {
        location: String,
        found: String,
        expected: String,
    },
}

/// A release as a downloader first sees it.
pub struct Release {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub torrent: Metainfo,
    pub torrent_bytes: Vec<u8>,
    /// Where the manifest came from, for messages.
    pub origin: String,
}

/// Reads the manifest at `source` (path or URL), checks its signature and fields, then
/// reads its torrent from beside it and checks the info hash.
pub async fn release(source: &str) -> Result<Release, FetchError> {
    let (manifest_bytes, torrent_location) = if crate::http::is_url(source) {
        let bytes = crate::http::get(source, MAX_MANIFEST_BYTES).await?;
        (bytes, None)
    } else {
        let path = Path::new(source);
        let (_, bytes) = Manifest::load(path)?;
        (bytes, Some(path.to_path_buf()))
    };
    let manifest = Manifest::from_slice(&manifest_bytes, Path::new(source))?;
    let (location, torrent_bytes) = match torrent_location {
        Some(path) => {
            let torrent = sibling(&path, &manifest.torrent.file);
            let bytes = read_limited(&torrent)?;
            (torrent.display().to_string(), bytes)
        }
        None => {
            let url = sibling_url(source, &manifest.torrent.file);
            let bytes = crate::http::get(&url, MAX_TORRENT_BYTES as u64).await?;
            (url, bytes)
        }
    };
    let torrent = Metainfo::parse(&torrent_bytes).map_err(|e| FetchError::Torrent {
        location: location.clone(),
        problem: e.to_string(),
    })?;
    if torrent.info_hash != manifest.torrent.info_hash {
        return Err(FetchError::InfoHash {
            location,
            found: torrent.info_hash.to_hex(),
            expected: manifest.torrent.info_hash.to_hex(),
        });
    }
    manifest
        .check_torrent(&torrent)
        .map_err(|problem| FetchError::Torrent {
            location: location.clone(),
            problem: format!("does not match the manifest: {problem}"),
        })?;
    Ok(Release {
        manifest,
        manifest_bytes,
        torrent,
        torrent_bytes,
        origin: source.to_string(),
    })
}

fn sibling(manifest: &Path, name: &str) -> PathBuf {
    manifest.parent().unwrap_or(Path::new(".")).join(name)
}

pub(crate) fn sibling_url(manifest_url: &str, name: &str) -> String {
    let base = manifest_url
        .split(['?', '#'])
        .next()
        .unwrap_or(manifest_url);
    match base.rfind('/') {
        Some(i) => format!("{}{name}", &base[..=i]),
        None => name.to_string(),
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, FetchError> {
    crate::torrent::metainfo::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => FetchError::Torrent {
            location: path.display().to_string(),
            problem: e.to_string(),
        },
        _ => file_error("read the torrent", path)(e).into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torrent_urls_sit_beside_the_manifest() {
        assert_eq!(
            sibling_url("https://h.org/d/x-1.manifest.json?t=1", "x-1.torrent"),
            "https://h.org/d/x-1.torrent"
        );
        assert_eq!(
            sibling_url("http://127.0.0.1:8/m.json", "t.torrent"),
            "http://127.0.0.1:8/t.torrent"
        );
    }
}
