//! The release feed: `<dataset>.feed.json` beside the manifests in a store, listing
//! every release newest first, signed by the publisher like a manifest (canonical JSON,
//! domain line `seedpool-feed-v1\n`, so a manifest's signature can never pass for a
//! feed's).
//!
//! A follower keeps the highest `sequence` it accepted and refuses a lower one (a
//! mirror replaying an old feed to hide a release: rollback), and refuses a feed past
//! `expires` (a mirror that keeps serving a stale feed forever: freeze). So a publisher
//! re-signs the feed before it expires, with `seedpool feed refresh`, even with no new
//! release. Each entry names its manifest by blake3, so the feed vouches for the exact
//! bytes a follower then fetches.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    document_bytes, format_time, sign_document, take_signature, Manifest, Signature,
    SignatureProblem, UniqueKeys,
};
use crate::name::{shown, DatasetName, Version};
use crate::signing::{PublisherKey, SignatureError};

pub const FORMAT: &str = "seedpool-feed";
pub const FORMAT_VERSION: u64 = 1;
const DOMAIN: &[u8] = b"seedpool-feed-v1\n";
/// About 250 bytes a release: room for thousands; anything larger is hostile.
pub const MAX_FEED_BYTES: u64 = 4 << 20;
/// How long a feed stays valid by default: a follower polling daily has weeks to see a
/// refresh, and a frozen feed is noticed within a month.
pub const DEFAULT_VALID_FOR: u64 = 30 * 24 * 3600;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feed {
    pub format: String,
    pub format_version: u64,
    pub dataset: DatasetName,
    /// Grows with every feed the publisher signs.
    pub sequence: u64,
    /// RFC 3339, UTC, seconds.
    pub published: String,
    pub expires: String,
    /// Newest first.
    pub releases: Vec<FeedEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedEntry {
    pub version: Version,
    pub parent: Option<Version>,
    pub created: String,
    /// File name of the manifest, beside the feed.
    pub manifest: String,
    /// blake3 of the manifest file's bytes.
    pub manifest_blake3: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("failed to read feed `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("feed `{path}` is {size} bytes, more than the {MAX_FEED_BYTES} accepted")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("feed `{path}` is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("`{path}` is not a seedpool feed (no `format: \"{FORMAT}\"`)")]
    NotAFeed { path: PathBuf },
    #[error("feed `{path}` has format version `{found}`, but this seedpool reads only version {FORMAT_VERSION}; upgrade seedpool")]
    Version { path: PathBuf, found: String },
    #[error("feed `{path}` has a bad signature: {source}")]
    Signature {
        path: PathBuf,
        source: SignatureError,
    },
    #[error("feed `{path}` is invalid: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("feed `{path}` is signed by `{found}`, not by the publishing key `{expected}`; a feed has one publisher (move the old feed away to start a new one)")]
    OtherKey {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("cannot write feed `{path}`: {source}")]
    Write {
        path: PathBuf,
        source: crate::files::FileError,
    },
}

/// Unix seconds of a time as seedpool writes it.
pub fn parse_time(text: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(text).ok()?;
    if format_time(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs()) != text {
        return None;
    }
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

impl Feed {
    /// File name of a dataset's feed in a store.
    pub fn file_name(dataset: &DatasetName) -> String {
        format!("{dataset}.feed.json")
    }

    pub fn sign(&mut self, key: &PublisherKey) {
        self.signature = None;
        self.signature = Some(sign_document(DOMAIN, self, key));
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        document_bytes(self)
    }

    pub fn public_key(&self) -> Option<&str> {
        self.signature.as_ref().map(|s| s.public_key.as_str())
    }

    pub fn expires_at(&self) -> u64 {
        parse_time(&self.expires).unwrap_or(0)
    }

    pub fn load(path: &Path) -> Result<(Self, Vec<u8>), FeedError> {
        let read_err = |source| FeedError::Read {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read_err)?.len();
        if size > MAX_FEED_BYTES {
            return Err(FeedError::TooLarge {
                path: path.to_path_buf(),
                size,
            });
        }
        let bytes = std::fs::read(path).map_err(read_err)?;
        Ok((Self::from_slice(&bytes, path)?, bytes))
    }

    /// Parses and checks a feed: format, version and signature first, then the fields.
    pub fn from_slice(bytes: &[u8], path: &Path) -> Result<Self, FeedError> {
        let path_buf = || path.to_path_buf();
        if bytes.len() as u64 > MAX_FEED_BYTES {
            return Err(FeedError::TooLarge {
                path: path_buf(),
                size: bytes.len() as u64,
            });
        }
        serde_json::from_slice::<UniqueKeys>(bytes).map_err(|source| FeedError::Json {
            path: path_buf(),
            source,
        })?;
        let mut value: Value = serde_json::from_slice(bytes).map_err(|source| FeedError::Json {
            path: path_buf(),
            source,
        })?;
        if value.get("format").and_then(Value::as_str) != Some(FORMAT) {
            return Err(FeedError::NotAFeed { path: path_buf() });
        }
        match value.get("format_version") {
            Some(v) if v.as_u64() == Some(FORMAT_VERSION) => {}
            other => {
                return Err(FeedError::Version {
                    path: path_buf(),
                    found: other
                        .map_or_else(|| "none".into(), |v| shown(&v.to_string()).into_owned()),
                })
            }
        }
        let invalid = |problem: String| FeedError::Invalid {
            path: path_buf(),
            problem,
        };
        let signature = take_signature(DOMAIN, &mut value).map_err(|p| match p {
            SignatureProblem::Unsigned => invalid("it is not signed".into()),
            SignatureProblem::Invalid(problem) => invalid(problem),
            SignatureProblem::Bad(source) => FeedError::Signature {
                path: path_buf(),
                source,
            },
        })?;
        let mut feed: Feed = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
        feed.signature = Some(signature);
        feed.check().map_err(invalid)?;
        Ok(feed)
    }

    /// What a signature cannot vouch for: names that reach the file system, times, a
    /// list that is one chain of distinct versions.
    fn check(&self) -> Result<(), String> {
        let published = parse_time(&self.published).ok_or_else(|| {
            format!(
                "`published` is `{}`, not an RFC 3339 UTC time",
                shown(&self.published)
            )
        })?;
        let expires = parse_time(&self.expires).ok_or_else(|| {
            format!(
                "`expires` is `{}`, not an RFC 3339 UTC time",
                shown(&self.expires)
            )
        })?;
        if expires <= published {
            return Err(format!(
                "it expires ({}) before it was published ({})",
                self.expires, self.published
            ));
        }
        if self.sequence == 0 {
            return Err("`sequence` is 0; the first feed has 1".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(twice) = self
            .releases
            .iter()
            .find(|e| !seen.insert(e.version.as_str()))
        {
            return Err(format!("release `{}` is listed twice", twice.version));
        }
        for (i, e) in self.releases.iter().enumerate() {
            let expected = Manifest::file_name(&self.dataset, &e.version);
            if e.manifest != expected {
                return Err(format!(
                    "release `{}` names manifest `{}`, not `{expected}`",
                    e.version,
                    shown(&e.manifest)
                ));
            }
            if e.manifest_blake3.len() != 64
                || !e
                    .manifest_blake3
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err(format!(
                    "release `{}` has manifest_blake3 `{}`, not 64 lowercase hex digits",
                    e.version,
                    shown(&e.manifest_blake3)
                ));
            }
            parse_time(&e.created).ok_or_else(|| {
                format!(
                    "release `{}` has `created` `{}`, not an RFC 3339 UTC time",
                    e.version,
                    shown(&e.created)
                )
            })?;
            // Newest first: each entry's parent is the next entry.
            if let (Some(parent), Some(next)) = (&e.parent, self.releases.get(i + 1)) {
                if parent != &next.version {
                    return Err(format!(
                        "release `{}` has parent `{parent}`, but the next release listed is `{}`",
                        e.version, next.version
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Adds a just-published release to the store's feed (creating it), re-signed with a
/// sequence one higher. Publishing the same release again leaves the feed as it is.
pub fn add_release(
    store_root: &Path,
    manifest: &Manifest,
    manifest_bytes: &[u8],
    key: &PublisherKey,
    valid_for: u64,
) -> Result<PathBuf, FeedError> {
    let path = store_root.join(Feed::file_name(&manifest.dataset));
    let old = existing(&path, key)?;
    let entry = FeedEntry {
        version: manifest.version.clone(),
        parent: manifest.parent.as_ref().map(|p| p.version.clone()),
        created: manifest.created.clone(),
        manifest: Manifest::file_name(&manifest.dataset, &manifest.version),
        manifest_blake3: blake3::hash(manifest_bytes).to_hex().to_string(),
    };
    if old.as_ref().is_some_and(|f| f.releases.contains(&entry)) {
        return Ok(path);
    }
    let created = parse_time(&manifest.created).unwrap_or(0);
    let (sequence, published, mut releases) = match old {
        Some(f) => {
            let published = created.max(parse_time(&f.published).unwrap_or(0));
            (f.sequence + 1, published, f.releases)
        }
        None => (1, created, Vec::new()),
    };
    releases.retain(|e| e.version != entry.version);
    releases.insert(0, entry);
    write(
        &path,
        &manifest.dataset,
        sequence,
        published,
        valid_for,
        releases,
        key,
    )?;
    Ok(path)
}

/// Re-signs a store's feed at `now` with a sequence one higher and a new expiry, so
/// followers keep trusting it with no new release.
pub fn refresh(
    store_root: &Path,
    dataset: &DatasetName,
    key: &PublisherKey,
    now: u64,
    valid_for: u64,
) -> Result<Feed, FeedError> {
    let path = store_root.join(Feed::file_name(dataset));
    let Some(old) = existing(&path, key)? else {
        return Err(FeedError::Read {
            path,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no feed yet: `seedpool publish` writes the first",
            ),
        });
    };
    let published = now.max(parse_time(&old.published).unwrap_or(0));
    write(
        &path,
        dataset,
        old.sequence + 1,
        published,
        valid_for,
        old.releases,
        key,
    )
}

/// The feed at `path`, checked and signed by `key`; `None` when there is none.
fn existing(path: &Path, key: &PublisherKey) -> Result<Option<Feed>, FeedError> {
    if !path.exists() {
        return Ok(None);
    }
    let (feed, _) = Feed::load(path)?;
    let found = feed.public_key().unwrap_or_default().to_string();
    if found != key.public_hex() {
        return Err(FeedError::OtherKey {
            path: path.to_path_buf(),
            found,
            expected: key.public_hex(),
        });
    }
    Ok(Some(feed))
}

fn write(
    path: &Path,
    dataset: &DatasetName,
    sequence: u64,
    published: u64,
    valid_for: u64,
    releases: Vec<FeedEntry>,
    key: &PublisherKey,
) -> Result<Feed, FeedError> {
    let mut feed = Feed {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        dataset: dataset.clone(),
        sequence,
        published: format_time(published),
        expires: format_time(published + valid_for.max(1)),
        releases,
        signature: None,
    };
    feed.sign(key);
    crate::files::write_atomically(path, &feed.to_bytes()).map_err(|source| FeedError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(feed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::canonical_json;

    fn entry(version: &str, parent: Option<&str>) -> FeedEntry {
        FeedEntry {
            version: Version::parse(version).unwrap(),
            parent: parent.map(|p| Version::parse(p).unwrap()),
            created: "2026-01-01T00:00:00Z".into(),
            manifest: format!("ds-{version}.manifest.json"),
            manifest_blake3: "ab".repeat(32),
        }
    }

    fn feed() -> Feed {
        Feed {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            dataset: DatasetName::parse("ds").unwrap(),
            sequence: 2,
            published: "2026-01-02T00:00:00Z".into(),
            expires: "2026-02-01T00:00:00Z".into(),
            releases: vec![entry("2", Some("1")), entry("1", None)],
            signature: None,
        }
    }

    fn signed(f: &Feed) -> Vec<u8> {
        let mut f = f.clone();
        f.sign(&PublisherKey::from_seed([9; 32]));
        f.to_bytes()
    }

    #[test]
    fn a_signed_feed_round_trips_and_tampering_fails() {
        let bytes = signed(&feed());
        let back = Feed::from_slice(&bytes, Path::new("f.json")).unwrap();
        assert_eq!(back.releases, feed().releases);
        let tampered = String::from_utf8(bytes)
            .unwrap()
            .replace("\"sequence\": 2", "\"sequence\": 9");
        let e = Feed::from_slice(tampered.as_bytes(), Path::new("f.json")).unwrap_err();
        assert!(e.to_string().contains("bad signature"), "{e}");
    }

    #[test]
    fn a_manifest_signature_does_not_pass_for_a_feed() {
        // The same canonical text signed under the manifest's domain.
        let mut f = feed();
        f.signature = None;
        let unsigned = serde_json::to_value(&f).unwrap();
        let key = PublisherKey::from_seed([9; 32]);
        let mut message = b"seedpool-manifest-v1\n".to_vec();
        message.extend_from_slice(canonical_json(&unsigned).as_bytes());
        f.signature = Some(Signature {
            algorithm: "ed25519".into(),
            public_key: key.public_hex(),
            value: key.sign(&message),
        });
        let e = Feed::from_slice(&f.to_bytes(), Path::new("f.json")).unwrap_err();
        assert!(e.to_string().contains("bad signature"), "{e}");
    }

    #[test]
    fn fields_a_signature_cannot_vouch_for_are_checked() {
        type Edit = Box<dyn Fn(&mut Feed)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|f| f.releases[0].manifest = "../etc/passwd".into()),
                "names manifest",
            ),
            (
                Box::new(|f| f.releases[0].manifest_blake3 = "x".into()),
                "64 lowercase hex",
            ),
            (
                Box::new(|f| f.releases[1] = entry("2", None)),
                "listed twice",
            ),
            (
                Box::new(|f| f.releases[0].parent = Some(Version::parse("0").unwrap())),
                "has parent `0`",
            ),
            (Box::new(|f| f.expires = f.published.clone()), "expires"),
            (
                Box::new(|f| f.published = "yesterday".into()),
                "`published`",
            ),
            (Box::new(|f| f.sequence = 0), "`sequence` is 0"),
        ];
        for (edit, why) in cases {
            let mut f = feed();
            edit(&mut f);
            let e = Feed::from_slice(&signed(&f), Path::new("f.json")).unwrap_err();
            assert!(e.to_string().contains(why), "{why}: {e}");
        }
        let mut huge = signed(&feed());
        huge.resize(MAX_FEED_BYTES as usize + 1, b' ');
        let e = Feed::from_slice(&huge, Path::new("f.json")).unwrap_err();
        assert!(e.to_string().contains("more than the"), "{e}");
    }
}
