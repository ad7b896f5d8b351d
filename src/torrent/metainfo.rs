//! Writing and reading the metainfo (.torrent) of a release.
//!
//! A release torrent is v1 multi-file: root folder = dataset name, files sorted by path,
//! a BEP 47 pad file (`attr: "p"`, path `.pad/<size>`) after every file but the last so
//! that each file starts on a piece boundary. That alignment is what lets a shard keep the
//! same pieces in every release and lets a client holding release N fetch only the new
//! shards of N+1.

use std::fmt;

use super::bencode::{self, Value};
use super::pieces::{FilePieces, PieceHash};

/// The SHA-1 of the bencoded info dictionary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

impl InfoHash {
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn parse(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 20];
        (text.len() == 40 && !text.chars().any(|c| c.is_ascii_uppercase()))
            .then_some(())
            .and_then(|()| hex::decode_to_slice(text, &mut bytes).ok())
            .map(|()| Self(bytes))
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// As manifests write it: 40 lower-case hex digits.
impl serde::Serialize for InfoHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for InfoHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "info hash `{}` is not 40 lower-case hex digits",
                crate::name::shown(&text)
            ))
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TorrentError {
    #[error(transparent)]
    Bencode(#[from] bencode::DecodeError),
    #[error("torrent has no `{0}` field or it has the wrong type")]
    Missing(&'static str),
    #[error("torrent field `{field}` is invalid: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error(
        "torrent path `{0}` is unsafe (empty part, `.`, `..`, separator or control character)"
    )]
    UnsafePath(String),
}

/// One data file of a release torrent.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// Path inside the dataset folder, e.g. `shards/<id>.tar`.
    pub path: String,
    pub length: u64,
    pub pieces: FilePieces,
}

#[derive(Clone, Debug)]
pub struct TorrentSpec {
    pub name: String,
    pub piece_length: u64,
    pub files: Vec<SourceFile>,
    pub trackers: Vec<String>,
    pub web_seeds: Vec<String>,
    /// Torrents holding some of the same files (BEP 38 `similar`, in the info dict):
    /// the parent release's, so a client that has it finds the shared shards on disk.
    pub similar: Vec<InfoHash>,
    /// Unix seconds, written as `creation date`.
    pub created: u64,
}

pub struct BuiltTorrent {
    pub bytes: Vec<u8>,
    pub info_hash: InfoHash,
}

fn int(n: u64) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Bencodes a release torrent. Files are sorted by path here, whatever order they came in.
pub fn build(spec: &TorrentSpec) -> BuiltTorrent {
    let mut files: Vec<&SourceFile> = spec.files.iter().collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut entries = Vec::new();
    let mut pieces = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let last = i + 1 == files.len();
        let path = f.path.split('/').map(Value::str).collect();
        entries.push(Value::dict([
            ("length", int(f.length)),
            ("path", Value::List(path)),
        ]));
        for h in f.pieces.hashes(last) {
            pieces.extend_from_slice(h);
        }
        let pad = (spec.piece_length - f.length % spec.piece_length) % spec.piece_length;
        if !last && pad > 0 {
            entries.push(Value::dict([
                ("attr", Value::str("p")),
                ("length", int(pad)),
                (
                    "path",
                    Value::List(vec![Value::str(".pad"), Value::str(&pad.to_string())]),
                ),
            ]));
        }
    }
    let mut info = vec![
        ("files", Value::List(entries)),
        ("name", Value::str(&spec.name)),
        ("piece length", int(spec.piece_length)),
        ("pieces", Value::Bytes(pieces)),
    ];
    if !spec.similar.is_empty() {
        let hashes = spec.similar.iter().map(|h| Value::Bytes(h.0.to_vec()));
        info.push(("similar", Value::List(hashes.collect())));
    }
    let info = Value::dict(info);
    let info_bytes = info.encode();
    let info_hash = InfoHash(sha1_of(&info_bytes));
    let mut top = vec![
        (
            "created by",
            Value::str(concat!("seedpool ", env!("CARGO_PKG_VERSION"))),
        ),
        ("creation date", int(spec.created)),
        ("info", info),
    ];
    if let Some(first) = spec.trackers.first() {
        top.push(("announce", Value::str(first)));
        top.push((
            "announce-list",
            Value::List(
                spec.trackers
                    .iter()
                    .map(|t| Value::List(vec![Value::str(t)]))
                    .collect(),
            ),
        ));
    }
    if !spec.web_seeds.is_empty() {
        top.push((
            "url-list",
            Value::List(spec.web_seeds.iter().map(|u| Value::str(u)).collect()),
        ));
    }
    BuiltTorrent {
        bytes: Value::dict(top).encode(),
        info_hash,
    }
}

fn sha1_of(bytes: &[u8]) -> [u8; 20] {
    use sha1::Digest;
    sha1::Sha1::digest(bytes).into()
}

/// A file entry read back from a torrent, with its offset in the torrent's byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedFile {
    pub path: String,
    pub length: u64,
    pub offset: u64,
    pub pad: bool,
}

impl ParsedFile {
    pub fn first_piece(&self, piece_length: u64) -> usize {
        (self.offset / piece_length) as usize
    }
}

#[derive(Clone, Debug)]
pub struct Metainfo {
    pub info_hash: InfoHash,
    pub name: String,
    pub piece_length: u64,
    pub files: Vec<ParsedFile>,
    pub pieces: Vec<PieceHash>,
    pub trackers: Vec<String>,
    pub web_seeds: Vec<String>,
    /// BEP 38 `similar` of the info dict.
    pub similar: Vec<InfoHash>,
}

/// Largest torrent file accepted: 20 TB at 16 MiB pieces needs about 25 MB of hashes.
pub const MAX_TORRENT_BYTES: usize = 128 << 20;

/// Reads a torrent file, refusing one larger than any release needs before reading it.
pub fn read(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size > MAX_TORRENT_BYTES as u64 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{size} bytes, more than the {MAX_TORRENT_BYTES} a torrent may have"),
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_TORRENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn safe_component(c: &str) -> bool {
    !c.is_empty()
        && c != "."
        && c != ".."
        && !c.contains(['/', '\\'])
        && !c.chars().any(char::is_control)
}

impl Metainfo {
    /// Parses a torrent from someone else, refusing unsafe paths and inconsistent sizes.
    pub fn parse(bytes: &[u8]) -> Result<Self, TorrentError> {
        if bytes.len() > MAX_TORRENT_BYTES {
            return Err(TorrentError::Invalid {
                field: "file",
                problem: format!(
                    "{} bytes is more than the {MAX_TORRENT_BYTES} accepted",
                    bytes.len()
                ),
            });
        }
        let decoded = bencode::decode(bytes)?;
        let (start, end) = decoded.info_span.ok_or(TorrentError::Missing("info"))?;
        let info_hash = InfoHash(sha1_of(&bytes[start..end]));
        let top = &decoded.value;
        let info = top.get("info").ok_or(TorrentError::Missing("info"))?;
        let name = info
            .get("name")
            .and_then(Value::as_str)
            .ok_or(TorrentError::Missing("name"))?
            .to_string();
        if !safe_component(&name) {
            return Err(TorrentError::UnsafePath(name));
        }
        let piece_length = info
            .get("piece length")
            .and_then(Value::as_int)
            .ok_or(TorrentError::Missing("piece length"))?;
        let piece_length = u64::try_from(piece_length)
            .ok()
            .filter(|p| *p >= 16384 && p.is_power_of_two())
            .ok_or_else(|| TorrentError::Invalid {
                field: "piece length",
                problem: format!("`{piece_length}` is not a power of two of at least 16 KiB"),
            })?;
        let raw_pieces = info
            .get("pieces")
            .and_then(Value::as_bytes)
            .ok_or(TorrentError::Missing("pieces"))?;
        if raw_pieces.len() % 20 != 0 {
            return Err(TorrentError::Invalid {
                field: "pieces",
                problem: format!("length {} is not a multiple of 20", raw_pieces.len()),
            });
        }
        let pieces: Vec<PieceHash> = raw_pieces
            .chunks_exact(20)
            .map(|c| c.try_into().expect("chunks of 20"))
            .collect();
        let list = info
            .get("files")
            .and_then(Value::as_list)
            .ok_or(TorrentError::Missing("files"))?;
        let mut files = Vec::with_capacity(list.len());
        let mut offset = 0u64;
        for entry in list {
            let length = entry
                .get("length")
                .and_then(Value::as_int)
                .and_then(|l| u64::try_from(l).ok())
                .ok_or(TorrentError::Missing("files.length"))?;
            let parts = entry
                .get("path")
                .and_then(Value::as_list)
                .ok_or(TorrentError::Missing("files.path"))?;
            let parts: Vec<&str> = parts
                .iter()
                .map(|p| p.as_str().ok_or(TorrentError::Missing("files.path")))
                .collect::<Result<_, _>>()?;
            let path = parts.join("/");
            if parts.is_empty() || !parts.iter().all(|p| safe_component(p)) {
                return Err(TorrentError::UnsafePath(path));
            }
            let pad = entry
                .get("attr")
                .and_then(Value::as_str)
                .is_some_and(|a| a.contains('p'));
            files.push(ParsedFile {
                path,
                length,
                offset,
                pad,
            });
            offset = offset.checked_add(length).ok_or(TorrentError::Invalid {
                field: "files",
                problem: "total size overflows".into(),
            })?;
        }
        let expected = offset.div_ceil(piece_length);
        if expected != pieces.len() as u64 {
            return Err(TorrentError::Invalid {
                field: "pieces",
                problem: format!(
                    "{} hashes for {offset} bytes at {piece_length} bytes a piece (expected {expected})",
                    pieces.len()
                ),
            });
        }
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_list)
                .map(|l| {
                    l.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut trackers: Vec<String> = top
            .get("announce-list")
            .and_then(Value::as_list)
            .map(|tiers| tiers.iter().flat_map(|t| strings(Some(t))).collect())
            .unwrap_or_default();
        if trackers.is_empty() {
            trackers.extend(
                top.get("announce")
                    .and_then(Value::as_str)
                    .map(String::from),
            );
        }
        let mut similar = Vec::new();
        if let Some(list) = info.get("similar") {
            let bad = |problem: &str| TorrentError::Invalid {
                field: "similar",
                problem: problem.into(),
            };
            let list = list.as_list().ok_or_else(|| bad("is not a list"))?;
            if list.len() > 64 {
                return Err(bad("lists more than 64 torrents"));
            }
            for h in list {
                let bytes = h.as_bytes().and_then(|b| <[u8; 20]>::try_from(b).ok());
                similar.push(InfoHash(bytes.ok_or_else(|| {
                    bad("holds a value that is not a 20-byte info hash")
                })?));
            }
        }
        Ok(Metainfo {
            info_hash,
            name,
            piece_length,
            files,
            pieces,
            trackers,
            web_seeds: strings(top.get("url-list")),
            similar,
        })
    }

    /// The data files (pad files left out).
    pub fn data_files(&self) -> impl Iterator<Item = &ParsedFile> {
        self.files.iter().filter(|f| !f.pad)
    }

    pub fn file(&self, path: &str) -> Option<&ParsedFile> {
        self.data_files().find(|f| f.path == path)
    }

    /// The piece hashes of a piece-aligned data file, with the number of pad-file zeros
    /// that complete its last piece; `None` when one of its pieces also holds bytes of
    /// another data file, so that the file's bytes alone cannot be checked.
    pub fn aligned_pieces(&self, file: &ParsedFile) -> Option<(&[PieceHash], u64)> {
        let pl = self.piece_length;
        if !file.offset.is_multiple_of(pl) {
            return None;
        }
        let total = self.files.last().map_or(0, |f| f.offset + f.length);
        let end = file.offset + file.length;
        let piece_end = (end.div_ceil(pl) * pl).min(total);
        let shares = self
            .files
            .iter()
            .any(|f| !f.pad && f.length > 0 && f.offset < piece_end && f.offset + f.length > end);
        if shares {
            return None;
        }
        let first = file.first_piece(pl);
        let count = file.length.div_ceil(pl) as usize;
        Some((self.pieces.get(first..first + count)?, piece_end - end))
    }

    /// The full-piece hashes of a piece-aligned file (its last, short piece left out).
    pub fn full_piece_hashes(&self, file: &ParsedFile) -> Option<&[PieceHash]> {
        if !file.offset.is_multiple_of(self.piece_length) {
            return None;
        }
        let first = file.first_piece(self.piece_length);
        let full = (file.length / self.piece_length) as usize;
        self.pieces.get(first..first + full)
    }
}

/// A magnet link (BEP 9) with display name, trackers and web seeds (`ws`).
pub fn magnet_link(
    info_hash: InfoHash,
    name: &str,
    trackers: &[String],
    web_seeds: &[String],
) -> String {
    let mut link = format!(
        "magnet:?xt=urn:btih:{}&dn={}",
        info_hash,
        percent_encode(name)
    );
    for t in trackers {
        link.push_str("&tr=");
        link.push_str(&percent_encode(t));
    }
    for w in web_seeds {
        link.push_str("&ws=");
        link.push_str(&percent_encode(w));
    }
    link
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Piece length for a first release of `total` bytes in about `shards` shards: the
/// smallest power of two that keeps the torrent near 2048 pieces, but no more than a
/// sixteenth of the mean shard while that keeps it under 2^18 pieces (5 MiB of hashes),
/// between 256 KiB and 16 MiB. Each shard starts a piece, so its last piece is padded
/// with zeros that librqbit downloads too, and a restarted seeder hashes a shard's
/// first and last pieces (see `swarm::resume`): with shards of a few pieces only, both
/// are a large part of the store. Later releases keep their parent's piece length, so
/// that shared shards keep identical pieces.
pub fn pick_piece_length(total: u64, shards: u64) -> u64 {
    const MIN: u64 = 256 << 10;
    const MAX: u64 = 16 << 20;
    const MOST_PIECES: u64 = 1 << 18;
    let near_2048 = total.div_ceil(2048).next_power_of_two();
    let per_shard = (total / shards.max(1) / 16)
        .checked_ilog2()
        .map_or(0, |log| 1 << log);
    let fewest = total.div_ceil(MOST_PIECES).next_power_of_two();
    near_2048.min(per_shard).max(fewest).clamp(MIN, MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::torrent::pieces::hash_reader;

    fn file(path: &str, data: &[u8], pl: u64) -> SourceFile {
        SourceFile {
            path: path.into(),
            length: data.len() as u64,
            pieces: hash_reader(pl, data).unwrap(),
        }
    }

    #[test]
    fn built_torrent_parses_back_with_aligned_files() {
        let pl = 16384;
        let a = vec![1u8; 20000];
        let b = vec![2u8; 16384];
        let c = vec![3u8; 5];
        let spec = TorrentSpec {
            name: "ds".into(),
            piece_length: pl,
            files: vec![
                file("shards/b.tar", &b, pl),
                file("index/1.sqlite.zst", &c, pl),
                file("shards/a.tar", &a, pl),
            ],
            trackers: vec!["http://127.0.0.1:1/announce".into()],
            web_seeds: vec!["http://127.0.0.1:2/data/".into()],
            similar: vec![InfoHash([7; 20])],
            created: 1_700_000_000,
        };
        let built = build(&spec);
        let m = Metainfo::parse(&built.bytes).unwrap();
        assert_eq!(m.info_hash, built.info_hash);
        assert_eq!(m.similar, [InfoHash([7; 20])]);
        let data: Vec<_> = m
            .data_files()
            .map(|f| (f.path.as_str(), f.offset))
            .collect();
        assert_eq!(
            data,
            vec![
                ("index/1.sqlite.zst", 0),
                ("shards/a.tar", pl),
                ("shards/b.tar", 3 * pl)
            ]
        );
        assert_eq!(m.pieces.len(), 4);
        assert_eq!(m.files.iter().filter(|f| f.pad).count(), 2);
        assert_eq!(m.web_seeds, spec.web_seeds);
        assert_eq!(m.trackers, spec.trackers);
        // The stream of the torrent with pads as zeros hashes to the same pieces.
        let mut stream = c.clone();
        stream.resize(pl as usize, 0);
        stream.extend_from_slice(&a);
        stream.resize(3 * pl as usize, 0);
        stream.extend_from_slice(&b);
        assert_eq!(hash_reader(pl, &stream[..]).unwrap().full, m.pieces);
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for path in ["../x", "/abs", "a//b", "a/./b"] {
            let parts: Vec<Value> = path.split('/').map(Value::str).collect();
            let info = Value::dict([
                (
                    "files",
                    Value::List(vec![Value::dict([
                        ("length", Value::Int(1)),
                        ("path", Value::List(parts)),
                    ])]),
                ),
                ("name", Value::str("n")),
                ("piece length", Value::Int(16384)),
                ("pieces", Value::Bytes(vec![0; 20])),
            ]);
            let bytes = Value::dict([("info", info)]).encode();
            assert!(
                matches!(Metainfo::parse(&bytes), Err(TorrentError::UnsafePath(_))),
                "{path}"
            );
        }
    }

    #[test]
    fn piece_length_grows_with_size_and_stays_a_small_part_of_a_shard() {
        assert_eq!(pick_piece_length(1000, 1), 256 << 10);
        assert_eq!(pick_piece_length(2 << 30, 2), 1 << 20);
        assert_eq!(pick_piece_length(20 << 40, 20_000), 16 << 20);
        // A terabyte in 10,000 shards of 100 MB: 4 MiB pieces (238,419 of them), not 16.
        assert_eq!(pick_piece_length(1_000_000_000_000, 10_000), 4 << 20);
        // Many tiny shards: the floor, as before.
        assert_eq!(pick_piece_length(500 << 20, 1000), 256 << 10);
    }

    #[test]
    fn magnet_escapes_parameters() {
        let link = magnet_link(
            InfoHash([0xab; 20]),
            "BOORU CHARS",
            &["udp://t:1/a".into()],
            &[],
        );
        assert_eq!(
            link,
            format!(
                "magnet:?xt=urn:btih:{}&dn=BOORU%20CHARS&tr=udp%3A%2F%2Ft%3A1%2Fa",
                "ab".repeat(20)
            )
        );
    }
}
