//! The DHT pointer (BEP 46 over BEP 44): a mutable item in the mainline DHT, stored
//! under the publisher key with the dataset name as salt, that tells a follower which
//! feed is current and where to fetch it. The item's sequence is the feed's, so it only
//! grows, and its value is small (BEP 44 allows 1000 bytes):
//!
//! ```text
//! d4:feed32:<blake3 of the feed file>2:ih20:<info hash of the newest release>
//!  4:urlsl<feed URL>...ee
//! ```
//!
//! `ih` is BEP 46's own key; `feed` and `urls` are seedpool's. The store keeps the
//! signed item as `<dataset>.dht.json`, so anyone holding the store (`seed`) can put it
//! into the DHT again without the key: DHT nodes forget items after about two hours.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::feed::Feed;
use super::Manifest;
use crate::name::{shown, DatasetName};
use crate::signing::{self, PublisherKey, SignatureError};
use crate::torrent::bencode::{self, Value};
use crate::torrent::InfoHash;

pub const FORMAT: &str = "seedpool-dht-pointer";
pub const FORMAT_VERSION: u64 = 1;
/// BEP 44's limit on the bencoded `v`; the value travels as one byte string, whose
/// length prefix counts too.
pub const MAX_VALUE_BYTES: usize = 994;
/// The pointer file is a few hundred bytes; anything much larger is not one.
pub const MAX_FILE_BYTES: u64 = 64 << 10;
/// Feed URLs one pointer lists at most.
pub const MAX_URLS: usize = 8;

/// What the DHT item says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pointer {
    pub info_hash: InfoHash,
    /// blake3 of the feed file, 64 lowercase hex digits.
    pub feed_blake3: String,
    /// Where the feed can be fetched: http(s) URLs of `<dataset>.feed.json`.
    pub urls: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PointerError {
    #[error("DHT pointer `{origin}` is invalid: {problem}")]
    Invalid { origin: String, problem: String },
    #[error("DHT pointer `{origin}` has a bad signature: {source}")]
    Signature {
        origin: String,
        source: SignatureError,
    },
    #[error("cannot read DHT pointer `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write DHT pointer `{path}`: {source}")]
    Write {
        path: PathBuf,
        source: crate::files::FileError,
    },
    #[error("the DHT pointer of `{dataset}` would be {size} bytes with these feed URLs, more than the {MAX_VALUE_BYTES} a DHT item holds; give fewer or shorter --feed-url")]
    TooLarge { dataset: String, size: usize },
    #[error("the DHT pointer of `{dataset}` would list {count} feed URLs, more than the {MAX_URLS} readers accept; give fewer --feed-url or --web-seed")]
    TooManyUrls { dataset: String, count: usize },
    #[error("the DHT pointer of `{dataset}` names no place to fetch the feed: give --feed-url URL (where the store's `{feed}` is served), or publish with --web-seed")]
    NoUrl { dataset: String, feed: String },
    #[error(transparent)]
    Feed(#[from] super::feed::FeedError),
    #[error(transparent)]
    Manifest(#[from] super::ManifestError),
}

impl Pointer {
    /// The bencoded value: sorted keys, so the same pointer always gives the same bytes.
    pub fn value(&self) -> Vec<u8> {
        let mut feed = [0u8; 32];
        // Checked when the pointer was made or read.
        let _ = hex::decode_to_slice(&self.feed_blake3, &mut feed);
        Value::dict([
            ("feed", Value::Bytes(feed.to_vec())),
            ("ih", Value::Bytes(self.info_hash.0.to_vec())),
            (
                "urls",
                Value::List(self.urls.iter().map(|u| Value::str(u)).collect()),
            ),
        ])
        .encode()
    }

    /// Reads a value from the DHT. Everything in it came from a stranger's node: the
    /// size, the fields and the URLs are checked here, whatever the signature says.
    pub fn from_value(bytes: &[u8], origin: &str) -> Result<Self, PointerError> {
        let invalid = |problem: String| PointerError::Invalid {
            origin: origin.to_string(),
            problem,
        };
        if bytes.len() > MAX_VALUE_BYTES {
            return Err(invalid(format!(
                "its value is {} bytes, more than the {MAX_VALUE_BYTES} a DHT item holds",
                bytes.len()
            )));
        }
        let value = bencode::decode(bytes)
            .map_err(|e| invalid(format!("its value is not bencode: {e}")))?
            .value;
        let Value::Dict(entries) = &value else {
            return Err(invalid("its value is not a dictionary".into()));
        };
        if let Some(k) = entries
            .keys()
            .find(|k| !matches!(k.as_slice(), b"feed" | b"ih" | b"urls"))
        {
            return Err(invalid(format!(
                "its value has an unknown key `{}`",
                shown(&String::from_utf8_lossy(k))
            )));
        }
        let ih: [u8; 20] = value
            .get("ih")
            .and_then(Value::as_bytes)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| invalid("`ih` is not a 20-byte info hash".into()))?;
        let feed: [u8; 32] = value
            .get("feed")
            .and_then(Value::as_bytes)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| invalid("`feed` is not a 32-byte blake3 hash".into()))?;
        let list = value
            .get("urls")
            .and_then(Value::as_list)
            .ok_or_else(|| invalid("`urls` is not a list".into()))?;
        let mut urls = Vec::new();
        for u in list {
            let url = u
                .as_str()
                .ok_or_else(|| invalid("a feed URL is not text".into()))?;
            check_url(url).map_err(invalid)?;
            urls.push(url.to_string());
        }
        if urls.len() > MAX_URLS {
            return Err(invalid(format!(
                "it lists {} feed URLs, more than {MAX_URLS}",
                urls.len()
            )));
        }
        Ok(Self {
            info_hash: InfoHash(ih),
            feed_blake3: hex::encode(feed),
            urls,
        })
    }
}

fn check_url(url: &str) -> Result<(), String> {
    if !crate::http::is_url(url) || url.len() > 512 || url.chars().any(char::is_control) {
        return Err(format!(
            "feed URL `{}` is not an http(s) URL of at most 512 characters",
            shown(url)
        ));
    }
    Ok(())
}

/// The bytes a BEP 44 mutable item's signature covers.
pub fn signable(salt: &[u8], seq: i64, value: &[u8]) -> Vec<u8> {
    let mut out = format!("4:salt{}:", salt.len()).into_bytes();
    out.extend_from_slice(salt);
    out.extend_from_slice(format!("3:seqi{seq}e1:v{}:", value.len()).as_bytes());
    out.extend_from_slice(value);
    out
}

/// A pointer signed as a BEP 44 item: what the store keeps and the DHT serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedPointer {
    pub format: String,
    pub format_version: u64,
    /// Also the item's salt.
    pub dataset: DatasetName,
    pub public_key: String,
    /// The feed's sequence.
    pub seq: i64,
    pub info_hash: InfoHash,
    pub feed_blake3: String,
    pub urls: Vec<String>,
    pub signature: String,
}

impl SignedPointer {
    pub fn file_name(dataset: &DatasetName) -> String {
        format!("{dataset}.dht.json")
    }

    pub fn sign(
        dataset: &DatasetName,
        seq: i64,
        pointer: Pointer,
        key: &PublisherKey,
    ) -> Result<Self, PointerError> {
        let value = pointer.value();
        if value.len() > MAX_VALUE_BYTES {
            return Err(PointerError::TooLarge {
                dataset: dataset.to_string(),
                size: value.len(),
            });
        }
        let signature = key.sign(&signable(dataset.as_str().as_bytes(), seq, &value));
        Ok(Self {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            dataset: dataset.clone(),
            public_key: key.public_hex(),
            seq,
            info_hash: pointer.info_hash,
            feed_blake3: pointer.feed_blake3,
            urls: pointer.urls,
            signature,
        })
    }

    /// Builds one from an item the DHT returned, checked as `verify` does.
    pub fn from_item(
        dataset: &DatasetName,
        public_key: &[u8; 32],
        seq: i64,
        value: &[u8],
        signature: &[u8; 64],
        origin: &str,
    ) -> Result<Self, PointerError> {
        let pointer = Pointer::from_value(value, origin)?;
        let signed = Self {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            dataset: dataset.clone(),
            public_key: hex::encode(public_key),
            seq,
            info_hash: pointer.info_hash,
            feed_blake3: pointer.feed_blake3,
            urls: pointer.urls,
            signature: hex::encode(signature),
        };
        // Re-encoding must give the bytes that were signed: otherwise the value had a
        // form (unsorted keys, say) this reader would not write, and is refused.
        if signed.value() != value {
            return Err(PointerError::Invalid {
                origin: origin.to_string(),
                problem: "its value is not in canonical bencode (sorted keys)".into(),
            });
        }
        signed.verify(origin)?;
        Ok(signed)
    }

    pub fn pointer(&self) -> Pointer {
        Pointer {
            info_hash: self.info_hash,
            feed_blake3: self.feed_blake3.clone(),
            urls: self.urls.clone(),
        }
    }

    pub fn value(&self) -> Vec<u8> {
        self.pointer().value()
    }

    pub fn verify(&self, origin: &str) -> Result<(), PointerError> {
        let invalid = |problem: String| PointerError::Invalid {
            origin: origin.to_string(),
            problem,
        };
        if self.format != FORMAT || self.format_version != FORMAT_VERSION {
            return Err(invalid(format!(
                "it is `{}` version {}, not `{FORMAT}` version {FORMAT_VERSION}",
                shown(&self.format),
                self.format_version
            )));
        }
        if self.seq < 1 {
            return Err(invalid(format!("its sequence is {}", self.seq)));
        }
        if self.feed_blake3.len() != 64
            || !self
                .feed_blake3
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(invalid(
                "`feed_blake3` is not 64 lowercase hex digits".into(),
            ));
        }
        for u in &self.urls {
            check_url(u).map_err(invalid)?;
        }
        let value = self.value();
        if value.len() > MAX_VALUE_BYTES {
            return Err(invalid(format!(
                "its value is {} bytes, more than {MAX_VALUE_BYTES}",
                value.len()
            )));
        }
        signing::verify(
            &self.public_key,
            &signable(self.dataset.as_str().as_bytes(), self.seq, &value),
            &self.signature,
        )
        .map_err(|source| PointerError::Signature {
            origin: origin.to_string(),
            source,
        })
    }

    pub fn public_key_bytes(&self) -> [u8; 32] {
        let mut k = [0u8; 32];
        let _ = hex::decode_to_slice(&self.public_key, &mut k);
        k
    }

    pub fn signature_bytes(&self) -> [u8; 64] {
        let mut s = [0u8; 64];
        let _ = hex::decode_to_slice(&self.signature, &mut s);
        s
    }

    pub fn load(path: &Path) -> Result<Self, PointerError> {
        let read = |source| PointerError::Read {
            path: path.to_path_buf(),
            source,
        };
        let origin = path.display().to_string();
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > MAX_FILE_BYTES {
            return Err(PointerError::Invalid {
                origin,
                problem: format!("it is {size} bytes, more than {MAX_FILE_BYTES}"),
            });
        }
        let bytes = std::fs::read(path).map_err(read)?;
        let p: Self = serde_json::from_slice(&bytes).map_err(|e| PointerError::Invalid {
            origin: origin.clone(),
            problem: e.to_string(),
        })?;
        p.verify(&origin)?;
        Ok(p)
    }

    fn save(&self, path: &Path) -> Result<(), PointerError> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a pointer serializes");
        bytes.push(b'\n');
        crate::files::write_atomically(path, &bytes).map_err(|source| PointerError::Write {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Where `store_root` keeps the dataset's pointer.
pub fn path(store_root: &Path, dataset: &DatasetName) -> PathBuf {
    store_root.join(SignedPointer::file_name(dataset))
}

/// The feed URL of a web seed: the store root it names serves the feed beside the
/// dataset's folder, as `seed --http` and a web server over the store both do.
pub fn feed_url(web_seed: &str, dataset: &DatasetName) -> String {
    format!(
        "{}/{}",
        web_seed.trim_end_matches('/'),
        Feed::file_name(dataset)
    )
}

/// Re-signs the store's pointer after its feed changed: the feed's sequence and
/// blake3, the newest release's info hash, and as feed URLs the ones the pointer
/// listed before, then `extra_urls`, then one per web seed of the newest release.
pub fn update(
    store_root: &Path,
    dataset: &DatasetName,
    key: &PublisherKey,
    extra_urls: &[String],
) -> Result<SignedPointer, PointerError> {
    let feed_path = store_root.join(Feed::file_name(dataset));
    let (feed, feed_bytes) = Feed::load(&feed_path)?;
    let newest = feed.releases.first().ok_or_else(|| PointerError::Invalid {
        origin: feed_path.display().to_string(),
        problem: "the feed lists no release".into(),
    })?;
    let (manifest, _) = Manifest::load(&store_root.join(&newest.manifest))?;
    let file = path(store_root, dataset);
    let mut urls = match file.exists() {
        true => SignedPointer::load(&file)?.urls,
        false => Vec::new(),
    };
    let derived = manifest.web_seeds.iter().map(|w| feed_url(w, dataset));
    for u in extra_urls.iter().cloned().chain(derived) {
        check_url(&u).map_err(|problem| PointerError::Invalid {
            origin: "--feed-url".into(),
            problem,
        })?;
        if !urls.contains(&u) {
            urls.push(u);
        }
    }
    if urls.is_empty() {
        return Err(PointerError::NoUrl {
            dataset: dataset.to_string(),
            feed: Feed::file_name(dataset),
        });
    }
    if urls.len() > MAX_URLS {
        return Err(PointerError::TooManyUrls {
            dataset: dataset.to_string(),
            count: urls.len(),
        });
    }
    let pointer = Pointer {
        info_hash: manifest.torrent.info_hash,
        feed_blake3: blake3::hash(&feed_bytes).to_hex().to_string(),
        urls,
    };
    let seq = i64::try_from(feed.sequence).unwrap_or(i64::MAX);
    let signed = SignedPointer::sign(dataset, seq, pointer, key)?;
    signed.save(&file)?;
    Ok(signed)
}

/// A `magnet:?xs=urn:btpk:<key hex>&s=<salt>` link (BEP 46): the publisher key and the
/// dataset. BEP 46 writes the salt in hex; seedpool prints the dataset name as it is,
/// and reads both (a salt that decodes from hex to a valid dataset name is taken as hex).
pub fn parse_magnet(link: &str) -> Result<(String, DatasetName), String> {
    let query = link
        .strip_prefix("magnet:?")
        .ok_or_else(|| format!("`{}` is not a magnet link", shown(link)))?;
    let mut key = None;
    let mut salt = None;
    for part in query.split('&') {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k {
            "xs" => key = v.strip_prefix("urn:btpk:").map(str::to_ascii_lowercase),
            "s" => salt = Some(v.to_string()),
            _ => {}
        }
    }
    let key = key
        .filter(|k| k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            format!(
                "magnet link `{}` has no `xs=urn:btpk:` with a 64-hex-digit public key",
                shown(link)
            )
        })?;
    let salt = salt.ok_or_else(|| {
        format!(
            "magnet link `{}` has no `s=` naming the dataset",
            shown(link)
        )
    })?;
    let from_hex = hex::decode(&salt)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| DatasetName::parse(&s).ok());
    let dataset = match from_hex {
        Some(d) => d,
        None => {
            DatasetName::parse(&salt).map_err(|e| format!("magnet link `{}`: {e}", shown(link)))?
        }
    };
    Ok((key, dataset))
}

/// The link `follow` resolves, as `publish --dht` prints it.
pub fn magnet(public_key: &str, dataset: &DatasetName) -> String {
    format!("magnet:?xs=urn:btpk:{public_key}&s={dataset}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointer() -> Pointer {
        Pointer {
            info_hash: InfoHash([7; 20]),
            feed_blake3: hex::encode([9u8; 32]),
            urls: vec!["http://mirror.example/booru-chars.feed.json".into()],
        }
    }

    fn dataset() -> DatasetName {
        DatasetName::parse("booru-chars").unwrap()
    }

    #[test]
    fn signs_what_bep44_signs() {
        // BEP 44's own test vector for a salted item's signed bytes.
        assert_eq!(
            signable(b"foobar", 1, b"Hello World!"),
            b"4:salt6:foobar3:seqi1e1:v12:Hello World!".to_vec()
        );
    }

    #[test]
    fn a_signed_pointer_round_trips_and_a_changed_one_fails() {
        let key = PublisherKey::from_seed([3; 32]);
        let signed = SignedPointer::sign(&dataset(), 4, pointer(), &key).unwrap();
        let back = SignedPointer::from_item(
            &dataset(),
            &signed.public_key_bytes(),
            4,
            &signed.value(),
            &signed.signature_bytes(),
            "test",
        )
        .unwrap();
        assert_eq!(back, signed);
        assert_eq!(back.pointer(), pointer());

        // Another sequence, another dataset, another value: each breaks the signature.
        let err = SignedPointer::from_item(
            &dataset(),
            &signed.public_key_bytes(),
            5,
            &signed.value(),
            &signed.signature_bytes(),
            "test",
        )
        .unwrap_err();
        assert!(matches!(err, PointerError::Signature { .. }), "{err}");
        let other = DatasetName::parse("other").unwrap();
        let err = SignedPointer::from_item(
            &other,
            &signed.public_key_bytes(),
            4,
            &signed.value(),
            &signed.signature_bytes(),
            "test",
        )
        .unwrap_err();
        assert!(matches!(err, PointerError::Signature { .. }), "{err}");
        let mut moved = signed.clone();
        moved.urls = vec!["http://evil.example/booru-chars.feed.json".into()];
        assert!(matches!(
            moved.verify("test"),
            Err(PointerError::Signature { .. })
        ));
    }

    #[test]
    fn hostile_values_are_refused() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![b'x'; MAX_VALUE_BYTES + 1], "more than"),
            (b"i3e".to_vec(), "not a dictionary"),
            (b"d1:x1:ye".to_vec(), "unknown key `x`"),
            (
                Value::dict([
                    ("feed", Value::Bytes(vec![0; 32])),
                    ("ih", Value::Bytes(vec![0; 19])),
                    ("urls", Value::List(vec![])),
                ])
                .encode(),
                "20-byte",
            ),
            (
                Value::dict([
                    ("feed", Value::Bytes(vec![0; 32])),
                    ("ih", Value::Bytes(vec![0; 20])),
                    ("urls", Value::List(vec![Value::str("file:///etc/passwd")])),
                ])
                .encode(),
                "not an http(s) URL",
            ),
            (b"d4:feed".to_vec(), "not bencode"),
        ];
        for (bytes, expected) in cases {
            let err = Pointer::from_value(&bytes, "node 127.0.0.1:1").unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
            assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
        }
        let mut unsorted = b"d2:ih20:".to_vec();
        unsorted.extend([0u8; 20]);
        unsorted.extend(b"4:feed32:");
        unsorted.extend([0u8; 32]);
        unsorted.extend(b"4:urlslee");
        let key = PublisherKey::from_seed([3; 32]);
        let sig: [u8; 64] = hex::decode(key.sign(&signable(b"booru-chars", 1, &unsorted)))
            .unwrap()
            .try_into()
            .unwrap();
        let public: [u8; 32] = hex::decode(key.public_hex()).unwrap().try_into().unwrap();
        match SignedPointer::from_item(&dataset(), &public, 1, &unsorted, &sig, "n") {
            // The strict decoder may refuse unsorted keys itself; either way it is out.
            Err(PointerError::Invalid { .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn too_many_urls_do_not_fit_a_dht_item() {
        let key = PublisherKey::from_seed([3; 32]);
        let mut p = pointer();
        p.urls = (0..8)
            .map(|i| {
                format!(
                    "https://{}.example/{i}/booru-chars.feed.json",
                    "m".repeat(100)
                )
            })
            .collect();
        let err = SignedPointer::sign(&dataset(), 1, p, &key).unwrap_err();
        assert!(matches!(err, PointerError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn magnet_links_name_the_key_and_the_dataset() {
        let key = "ab".repeat(32);
        let (k, d) = parse_magnet(&magnet(&key, &dataset())).unwrap();
        assert_eq!((k.as_str(), d.as_str()), (key.as_str(), "booru-chars"));
        // BEP 46's own form: the salt in hex.
        let link = format!(
            "magnet:?xs=urn:btpk:{}&s={}",
            key.to_uppercase(),
            hex::encode("booru-chars")
        );
        let (k, d) = parse_magnet(&link).unwrap();
        assert_eq!((k.as_str(), d.as_str()), (key.as_str(), "booru-chars"));
        for (bad, expected) in [
            ("http://x/feed.json", "not a magnet link"),
            ("magnet:?xt=urn:btih:00&s=x", "xs=urn:btpk"),
            ("magnet:?xs=urn:btpk:1234&s=x", "64-hex-digit"),
        ] {
            let err = parse_magnet(bad).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
        let err = parse_magnet(&format!("magnet:?xs=urn:btpk:{key}")).unwrap_err();
        assert!(err.contains("no `s=`"), "{err}");
        let err = parse_magnet(&format!("magnet:?xs=urn:btpk:{key}&s=../x")).unwrap_err();
        assert!(err.contains("magnet link"), "{err}");
    }
}
