//! The release manifest: a small signed JSON file that names everything a release is.
//!
//! The signature covers the canonical form of the manifest without its `signature`
//! member: object keys sorted by their UTF-8 bytes, no insignificant whitespace, numbers
//! as integers, prefixed by the domain line `seedpool-manifest-v1\n`. So the file itself
//! can be pretty-printed, and any reader in any language can check it (docs/manifest.md).
//! Readers check the format version and the signature before they look at anything else.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::name::{shown, DatasetName, Version, Volume};
use crate::shard::ShardId;
use crate::signing::{self, PublisherKey, SignatureError};
use crate::torrent::{InfoHash, Metainfo};

pub mod feed;
pub mod pointer;

pub const FORMAT: &str = "seedpool-manifest";
pub const FORMAT_VERSION: u64 = 1;
const DOMAIN: &[u8] = b"seedpool-manifest-v1\n";
/// Manifests are small (about 150 bytes a shard); anything much larger is hostile.
pub const MAX_MANIFEST_BYTES: u64 = 256 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub format_version: u64,
    pub dataset: DatasetName,
    pub version: Version,
    pub parent: Option<ParentRef>,
    /// RFC 3339, UTC, seconds.
    pub created: String,
    pub torrent: TorrentRef,
    pub trackers: Vec<String>,
    pub web_seeds: Vec<String>,
    pub index: IndexRef,
    pub shards: Vec<ShardEntry>,
    pub counts: Counts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentRef {
    pub version: Version,
    /// blake3 of the parent manifest file's bytes.
    pub manifest_blake3: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorrentRef {
    /// File name of the .torrent next to the manifest.
    pub file: String,
    pub info_hash: InfoHash,
    pub magnet: String,
    pub piece_length: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexRef {
    /// Path inside the dataset folder: `index/<version>.sqlite.zst`.
    pub path: String,
    pub blake3: String,
    pub size: u64,
    pub uncompressed_size: u64,
    pub format_version: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    pub id: ShardId,
    pub size: u64,
    /// Items physically in the shard (some may be hidden by later releases).
    pub items: u64,
    pub volume: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    /// Live items of the release.
    pub items: u64,
    pub shards: u64,
    pub new_shards: u64,
    pub reused_shards: u64,
    pub tombstones: u64,
    /// Bytes of all shards and the index.
    pub bytes: u64,
    /// Bytes of the shards first written by this release, plus the index.
    pub new_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub algorithm: String,
    pub public_key: String,
    pub value: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("failed to read manifest `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest `{path}` is {size} bytes, more than the {MAX_MANIFEST_BYTES} accepted")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("manifest `{path}` is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("`{path}` is not a seedpool manifest (no `format: \"{FORMAT}\"`)")]
    NotAManifest { path: PathBuf },
    #[error("manifest `{path}` has format version `{found}`, but this seedpool reads only version {FORMAT_VERSION}; upgrade seedpool")]
    UnknownVersion { path: PathBuf, found: String },
    #[error("manifest `{path}` is not signed")]
    Unsigned { path: PathBuf },
    #[error("manifest `{path}` has a bad signature: {source}")]
    BadSignature {
        path: PathBuf,
        source: SignatureError,
    },
    #[error("manifest `{path}` is invalid: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// The canonical text the signature covers (see the module doc).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn signed_message(domain: &[u8], unsigned: &Value) -> Vec<u8> {
    let mut message = domain.to_vec();
    message.extend_from_slice(canonical_json(unsigned).as_bytes());
    message
}

/// A signed document (a manifest, a feed) as seedpool writes it: its signature by `key`
/// over its canonical form without `signature`, under `domain`.
fn sign_document(domain: &[u8], unsigned: &impl Serialize, key: &PublisherKey) -> Signature {
    let unsigned = serde_json::to_value(unsigned).expect("a document serializes");
    Signature {
        algorithm: "ed25519".into(),
        public_key: key.public_hex(),
        value: key.sign(&signed_message(domain, &unsigned)),
    }
}

/// Pretty JSON with a final newline: the bytes a document is written as.
fn document_bytes(document: &impl Serialize) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(document).expect("a document serializes");
    bytes.push(b'\n');
    bytes
}

/// Why a document's signature cannot be checked, for the caller's error type.
enum SignatureProblem {
    Unsigned,
    Invalid(String),
    Bad(SignatureError),
}

/// Takes the `signature` out of a parsed document and checks it over the rest.
fn take_signature(domain: &[u8], value: &mut Value) -> Result<Signature, SignatureProblem> {
    let signature = value
        .as_object_mut()
        .and_then(|o| o.remove("signature"))
        .ok_or(SignatureProblem::Unsigned)?;
    let signature: Signature = serde_json::from_value(signature)
        .map_err(|e| SignatureProblem::Invalid(format!("signature: {e}")))?;
    if signature.algorithm != "ed25519" {
        return Err(SignatureProblem::Invalid(format!(
            "signature algorithm `{}` is not `ed25519`",
            shown(&signature.algorithm)
        )));
    }
    signing::verify(
        &signature.public_key,
        &signed_message(domain, value),
        &signature.value,
    )
    .map_err(SignatureProblem::Bad)?;
    Ok(signature)
}

impl Manifest {
    /// File name of a release's manifest in a store.
    pub fn file_name(dataset: &DatasetName, version: &Version) -> String {
        format!("{dataset}-{version}.manifest.json")
    }

    /// Signs the manifest with `key`, replacing any earlier signature.
    pub fn sign(&mut self, key: &PublisherKey) {
        self.signature = None;
        self.signature = Some(sign_document(DOMAIN, self, key));
    }

    /// The bytes written to disk: pretty JSON with a final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        document_bytes(self)
    }

    pub fn load(path: &Path) -> Result<(Self, Vec<u8>), ManifestError> {
        let read_err = |source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read_err)?.len();
        if size > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                path: path.to_path_buf(),
                size,
            });
        }
        let bytes = std::fs::read(path).map_err(read_err)?;
        let manifest = Self::from_slice(&bytes, path)?;
        Ok((manifest, bytes))
    }

    /// Parses and checks a manifest: format, version, signature, then the fields.
    pub fn from_slice(bytes: &[u8], path: &Path) -> Result<Self, ManifestError> {
        let path_buf = || path.to_path_buf();
        // A key given twice would be read one way here and maybe another elsewhere (most
        // parsers keep the last, some the first): the signed text must mean one thing.
        serde_json::from_slice::<UniqueKeys>(bytes).map_err(|source| ManifestError::Json {
            path: path_buf(),
            source,
        })?;
        let mut value: Value =
            serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
                path: path_buf(),
                source,
            })?;
        if value.get("format").and_then(Value::as_str) != Some(FORMAT) {
            return Err(ManifestError::NotAManifest { path: path_buf() });
        }
        match value.get("format_version") {
            Some(v) if v.as_u64() == Some(FORMAT_VERSION) => {}
            other => {
                return Err(ManifestError::UnknownVersion {
                    path: path_buf(),
                    found: other.map_or_else(|| "missing".into(), Value::to_string),
                })
            }
        }
        let signature = take_signature(DOMAIN, &mut value).map_err(|p| match p {
            SignatureProblem::Unsigned => ManifestError::Unsigned { path: path_buf() },
            SignatureProblem::Invalid(problem) => ManifestError::Invalid {
                path: path_buf(),
                problem,
            },
            SignatureProblem::Bad(source) => ManifestError::BadSignature {
                path: path_buf(),
                source,
            },
        })?;
        let mut manifest: Manifest =
            serde_json::from_value(value).map_err(|e| ManifestError::Invalid {
                path: path_buf(),
                problem: e.to_string(),
            })?;
        manifest.signature = Some(signature);
        manifest.check(path)?;
        Ok(manifest)
    }

    /// Field checks that serde cannot express: names that become paths, IDs, hashes.
    fn check(&self, path: &Path) -> Result<(), ManifestError> {
        let invalid = |problem: String| ManifestError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
        // Dataset and versions were checked as they were parsed (their types).
        let (dataset, version) = (&self.dataset, &self.version);
        if let Some(parent) = &self.parent {
            check_hex(&parent.manifest_blake3, 64)
                .map_err(|p| invalid(format!("parent manifest_blake3 {p}")))?;
        }
        let expected_index = format!("index/{version}.sqlite.zst");
        if self.index.path != expected_index {
            return Err(invalid(format!(
                "index path `{}` should be `{expected_index}`",
                self.index.path
            )));
        }
        check_hex(&self.index.blake3, 64).map_err(|p| invalid(format!("index blake3 {p}")))?;
        let expected_torrent = format!("{dataset}-{version}.torrent");
        if self.torrent.file != expected_torrent {
            return Err(invalid(format!(
                "torrent file `{}` should be `{expected_torrent}`",
                self.torrent.file
            )));
        }
        if !self.torrent.piece_length.is_power_of_two() || self.torrent.piece_length < 16384 {
            return Err(invalid(format!(
                "piece length `{}` is not a power of two of at least 16 KiB",
                self.torrent.piece_length
            )));
        }
        check_created(&self.created).map_err(invalid)?;
        for (what, urls) in [("tracker", &self.trackers), ("web seed", &self.web_seeds)] {
            if let Some(bad) = urls.iter().find(|u| !plausible_url(u)) {
                return Err(invalid(format!("{what} `{}` is not a URL", shown(bad))));
            }
        }
        let xt = format!("xt=urn:btih:{}", self.torrent.info_hash);
        if self.torrent.magnet.len() > 64 << 10
            || !self.torrent.magnet.starts_with("magnet:?")
            || !self.torrent.magnet.split(['?', '&']).any(|p| p == xt)
        {
            return Err(invalid(format!(
                "`torrent.magnet` is not a magnet link to info hash `{}`",
                self.torrent.info_hash
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut physical = 0u64;
        let mut bytes = self.index.size;
        for shard in &self.shards {
            let id = shard.id;
            if !seen.insert(&shard.id) {
                return Err(invalid(format!("shard `{}` is listed twice", shard.id)));
            }
            Volume::parse(&shard.volume).map_err(|e| invalid(format!("shard `{id}`: {e}")))?;
            // Every item takes at least one 512-byte header, and two zero blocks end
            // the file: so item counts are backed by bytes someone has to send.
            let most = shard.size.saturating_sub(1024) / 512;
            if shard.size < 1024 || shard.items == 0 || shard.items > most {
                return Err(invalid(format!(
                    "shard `{id}` of {} bytes cannot hold {} items",
                    shard.size, shard.items
                )));
            }
            physical += shard.items;
            bytes = bytes.saturating_add(shard.size);
        }
        if self.counts.shards != self.shards.len() as u64 {
            return Err(invalid(format!(
                "counts.shards is {} but {} shards are listed",
                self.counts.shards,
                self.shards.len()
            )));
        }
        if self.counts.items > physical {
            return Err(invalid(format!(
                "counts.items is {} but its shards hold {physical} items",
                self.counts.items
            )));
        }
        if self.counts.bytes != bytes {
            return Err(invalid(format!(
                "counts.bytes is {} but the shards and the index are {bytes} bytes",
                self.counts.bytes
            )));
        }
        Ok(())
    }

    /// Checks a torrent against this manifest: the info hash it names, the dataset as
    /// its folder, the piece length, and exactly the manifest's files with their sizes,
    /// each starting on a piece boundary (the padding selective downloads rely on).
    pub fn check_torrent(&self, torrent: &Metainfo) -> Result<(), String> {
        if torrent.info_hash != self.torrent.info_hash {
            return Err(format!(
                "its info hash is `{}`, the manifest says `{}`",
                torrent.info_hash, self.torrent.info_hash
            ));
        }
        if torrent.name != self.dataset {
            return Err(format!(
                "its folder is `{}`, not the dataset `{}`",
                shown(&torrent.name),
                self.dataset
            ));
        }
        if torrent.piece_length != self.torrent.piece_length {
            return Err(format!(
                "its piece length is {}, the manifest says {}",
                torrent.piece_length, self.torrent.piece_length
            ));
        }
        let mut expected: std::collections::BTreeMap<String, u64> = self
            .shards
            .iter()
            .map(|s| (format!("shards/{}.tar", s.id), s.size))
            .collect();
        expected.insert(self.index.path.clone(), self.index.size);
        for f in &torrent.files {
            if f.pad {
                if !f.path.starts_with(".pad/") {
                    return Err(format!(
                        "pad file `{}` is not under `.pad/`",
                        shown(&f.path)
                    ));
                }
                continue;
            }
            match expected.remove(&f.path) {
                None => {
                    return Err(format!(
                        "it holds `{}`, which the manifest does not list (or lists once)",
                        shown(&f.path)
                    ))
                }
                Some(size) if size != f.length => {
                    return Err(format!(
                        "it gives `{}` {} bytes, the manifest {size}",
                        f.path, f.length
                    ))
                }
                Some(_) => {}
            }
            if f.offset % torrent.piece_length != 0 {
                return Err(format!(
                    "`{}` does not start on a piece boundary (no pad file before it)",
                    f.path
                ));
            }
        }
        if let Some(missing) = expected.keys().next() {
            return Err(format!("it lacks `{missing}`, which the manifest lists"));
        }
        Ok(())
    }

    pub fn dataset_name(&self) -> DatasetName {
        self.dataset.clone()
    }

    pub fn version_name(&self) -> Version {
        self.version.clone()
    }

    pub fn shard_ids(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.shards.iter().map(|s| s.id)
    }

    pub fn public_key(&self) -> Option<&str> {
        self.signature.as_ref().map(|s| s.public_key.as_str())
    }
}

/// A time as seedpool writes it (`created`, a pool's merge times): RFC 3339 in UTC, to
/// the second.
pub fn format_time(unix_seconds: u64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_seconds),
    )
    .to_string()
}

/// Unix seconds now; 0 on a clock set before 1970.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `created` as seedpool writes it: RFC 3339 in UTC, to the second.
fn check_created(text: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "`created` is `{}`, not an RFC 3339 UTC time in seconds like `2026-01-02T03:04:05Z`",
            shown(text)
        )
    };
    let time = humantime::parse_rfc3339(text).map_err(|_| bad())?;
    if humantime::format_rfc3339_seconds(time).to_string() != text {
        return Err(bad());
    }
    Ok(())
}

/// A tracker or web seed as a URL (see `http::check_url`).
fn plausible_url(url: &str) -> bool {
    crate::http::check_url(url, &["http", "https", "udp", "wss"]).is_ok()
}

/// Any JSON value, refused when an object names a key twice.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(self)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "the key `{}` appears twice in one object",
                    shown(&key)
                )));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(self)
    }
}

fn check_hex(text: &str, len: usize) -> Result<(), String> {
    if text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not {len} lowercase hex digits",
            shown(text)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            dataset: DatasetName::parse("demo").unwrap(),
            version: Version::parse("1").unwrap(),
            parent: None,
            created: "2026-01-01T00:00:00Z".into(),
            torrent: TorrentRef {
                file: "demo-1.torrent".into(),
                info_hash: InfoHash::parse(&"ab".repeat(20)).unwrap(),
                magnet: format!("magnet:?xt=urn:btih:{}", "ab".repeat(20)),
                piece_length: 262144,
            },
            trackers: vec![],
            web_seeds: vec![],
            index: IndexRef {
                path: "index/1.sqlite.zst".into(),
                blake3: "cd".repeat(32),
                size: 10,
                uncompressed_size: 20,
                format_version: 1,
            },
            shards: vec![ShardEntry {
                id: ShardId::parse(&"ef".repeat(32)).unwrap(),
                size: 2048,
                items: 1,
                volume: "default".into(),
            }],
            counts: Counts {
                items: 1,
                shards: 1,
                bytes: 2058,
                ..Counts::default()
            },
            signature: None,
        }
    }

    #[test]
    fn canonical_form_sorts_keys_and_drops_whitespace() {
        let v: Value =
            serde_json::from_str(r#"{ "b": [1, {"z": "é", "a": null}], "a": "x\"" }"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":"x\"","b":[1,{"a":null,"z":"é"}]}"#
        );
    }

    #[test]
    fn signed_manifest_round_trips_and_tampering_fails() {
        let key = PublisherKey::from_seed([3; 32]);
        let mut m = sample();
        m.sign(&key);
        let bytes = m.to_bytes();
        let p = Path::new("m.json");
        assert_eq!(Manifest::from_slice(&bytes, p).unwrap(), m);
        let tampered = String::from_utf8(bytes)
            .unwrap()
            .replace("\"items\": 1", "\"items\": 2");
        let err = Manifest::from_slice(tampered.as_bytes(), p)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("has a bad signature: signature does not match"),
            "{err}"
        );
    }

    fn signed(m: &Manifest) -> Vec<u8> {
        let mut m = m.clone();
        m.sign(&PublisherKey::from_seed([3; 32]));
        m.to_bytes()
    }

    fn refused(bytes: &[u8]) -> String {
        Manifest::from_slice(bytes, Path::new("m.json"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn fields_a_signature_cannot_vouch_for_are_checked() {
        type Edit = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|m| m.created = "yesterday".into()),
                "`created` is `yesterday`, not an RFC 3339 UTC time",
            ),
            (
                Box::new(|m| m.created = "2026-01-01T00:00:00.5Z".into()),
                "not an RFC 3339 UTC time in seconds",
            ),
            (
                Box::new(|m| m.shards[0].volume = "../x".into()),
                "volume `../x` contains `/`",
            ),
            (
                Box::new(|m| m.shards[0].items = 3),
                "of 2048 bytes cannot hold 3 items",
            ),
            (
                Box::new(|m| m.counts.items = 2),
                "counts.items is 2 but its shards hold 1 items",
            ),
            (
                Box::new(|m| m.counts.bytes = 1),
                "counts.bytes is 1 but the shards and the index are 2058 bytes",
            ),
            (
                Box::new(|m| m.web_seeds = vec!["file:///etc".into()]),
                "web seed `file:///etc` is not a URL",
            ),
            (
                Box::new(|m| m.trackers = vec!["http://x/\u{1b}[2J".into()]),
                "tracker `http://x/\\u{1b}[2J` is not a URL",
            ),
        ];
        for (edit, expect) in cases {
            let mut m = sample();
            edit(&mut m);
            let err = refused(&signed(&m));
            assert!(err.contains(expect), "expected `{expect}` in `{err}`");
        }
        assert!(Manifest::from_slice(&signed(&sample()), Path::new("m.json")).is_ok());
    }

    #[test]
    fn duplicate_keys_are_refused_even_when_signed() {
        let bytes = String::from_utf8(signed(&sample())).unwrap();
        // The signature covers the parsed value, which keeps the last of two keys.
        let twice = bytes.replacen(
            "\"version\": \"1\",",
            "\"version\": \"evil\", \"version\": \"1\",",
            1,
        );
        assert_ne!(twice, bytes);
        let err = refused(twice.as_bytes());
        assert!(
            err.contains("the key `version` appears twice in one object"),
            "{err}"
        );
    }

    #[test]
    fn unknown_version_is_refused_before_the_signature() {
        let text = serde_json::json!({"format": FORMAT, "format_version": 2}).to_string();
        let err = Manifest::from_slice(text.as_bytes(), Path::new("m.json"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "manifest `m.json` has format version `2`, but this seedpool reads only version 1; upgrade seedpool"
        );
    }
}
