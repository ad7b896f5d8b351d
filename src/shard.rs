//! Shards: reproducible, uncompressed tar files named by the blake3 of their bytes.
//!
//! Layout invariants (docs/format.md pins them):
//! - plain ustar headers only: regular files (`typeflag '0'`), mode 0644, uid/gid 0, empty
//!   user and group names, mtime 0, names `<key>.<ext>` of at most 100 bytes in the `name`
//!   field (no prefix, no `/`), sizes below 8 GiB in octal;
//! - members sorted by (key, extension), so each item's members are consecutive
//!   (WebDataset's rule); each member's data starts at a 512-byte boundary;
//! - the archive ends with two zero blocks and nothing else.
//!
//! So identical members give identical bytes on any machine, and the ID is known to be
//! the same before anyone compares files. Writing streams the members through fixed
//! blocks, and each block is hashed once for everything publishing needs: the shard's
//! blake3, each member's blake3 and the torrent's SHA-1 pieces. The two halves of that
//! work run on two threads (`rayon::join`), so a shard is hashed about as fast as it is
//! copied.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::name::{split_member_name, NameError};
use crate::torrent::pieces::{FilePieces, PieceHasher};

pub const BLOCK: u64 = 512;
/// Largest member size that fits the 11 octal digits of a ustar size field.
pub const MAX_MEMBER_SIZE: u64 = 0o77777777777;
/// How many bytes move through the hashing pipeline at a time.
const PIPELINE_BLOCK: usize = 4 << 20;

/// The blake3 of a shard's bytes, the shard's identity and file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId([u8; 32]);

impl ShardId {
    pub fn from_hash(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }

    pub fn parse(hex_id: &str) -> Result<Self, ShardError> {
        let mut bytes = [0u8; 32];
        if hex_id.len() != 64 || hex::decode_to_slice(hex_id, &mut bytes).is_err() {
            return Err(ShardError::BadId(hex_id.into()));
        }
        if hex_id.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ShardError::BadId(hex_id.into()));
        }
        Ok(Self(bytes))
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// The shard's path inside a dataset folder: `shards/<id>.tar`.
    pub fn relative_path(self) -> String {
        format!("shards/{}.tar", self.to_hex())
    }

    pub fn short(self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("`{0}` is not a shard ID (expected 64 lowercase hex digits)")]
    BadId(String),
    #[error("failed to read `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write shard `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "`{path}` changed while it was being packed: expected {expected} bytes, found {found}"
    )]
    Changed {
        path: PathBuf,
        expected: u64,
        found: String,
    },
    #[error(
        "`{path}` is {size} bytes, more than a shard member may hold ({MAX_MEMBER_SIZE} bytes)"
    )]
    MemberTooLarge { path: PathBuf, size: u64 },
    #[error("shard `{path}` is not a valid seedpool tar at byte {offset}: {problem}")]
    Malformed {
        path: PathBuf,
        offset: u64,
        problem: String,
    },
    #[error("shard `{path}` has a bad member name at byte {offset}")]
    BadMemberName {
        path: PathBuf,
        offset: u64,
        #[source]
        source: NameError,
    },
}

/// One file to pack, with the size it had when the release folder was scanned.
#[derive(Clone, Debug)]
pub struct MemberSource {
    /// `<key>.<ext>`, already checked.
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// Keep a copy of the bytes (item JSON records, which go into the index as well).
    pub capture: bool,
}

#[derive(Clone, Debug)]
pub struct WrittenMember {
    /// Offset of the member's data (after its header) in the shard.
    pub offset: u64,
    pub length: u64,
    pub blake3: blake3::Hash,
    pub captured: Option<Vec<u8>>,
}

#[derive(Clone, Debug)]
pub struct WrittenShard {
    pub id: ShardId,
    pub size: u64,
    pub members: Vec<WrittenMember>,
    pub pieces: FilePieces,
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

/// The exact size of the shard these member sizes make, known before writing.
pub fn shard_size(sizes: impl IntoIterator<Item = u64>) -> u64 {
    sizes.into_iter().map(|s| BLOCK + padded(s)).sum::<u64>() + 2 * BLOCK
}

/// The ustar header of one member, with every variable field fixed.
pub fn header(name: &str, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// A run of one member's data inside a pipeline block.
struct Segment {
    member: usize,
    start: usize,
    end: usize,
}

#[derive(Default)]
struct Block {
    data: Vec<u8>,
    segments: Vec<Segment>,
}

enum Phase {
    Header,
    Data { file: File, remaining: u64 },
    Padding(u64),
    Trailer(u64),
    Done,
}

/// Produces the shard's bytes block by block, reading members as it goes.
struct Assembler<'a> {
    members: &'a [MemberSource],
    index: usize,
    phase: Phase,
}

impl<'a> Assembler<'a> {
    fn new(members: &'a [MemberSource]) -> Self {
        let phase = if members.is_empty() {
            Phase::Trailer(2 * BLOCK)
        } else {
            Phase::Header
        };
        Self {
            members,
            index: 0,
            phase,
        }
    }

    fn fill(&mut self, block: &mut Block) -> Result<(), ShardError> {
        block.data.clear();
        block.segments.clear();
        loop {
            let room = PIPELINE_BLOCK - block.data.len();
            if room == 0 {
                return Ok(());
            }
            match &mut self.phase {
                Phase::Done => return Ok(()),
                Phase::Header => {
                    if room < BLOCK as usize {
                        return Ok(());
                    }
                    let m = &self.members[self.index];
                    if m.size > MAX_MEMBER_SIZE {
                        return Err(ShardError::MemberTooLarge {
                            path: m.path.clone(),
                            size: m.size,
                        });
                    }
                    let file = File::open(&m.path).map_err(|source| ShardError::Read {
                        path: m.path.clone(),
                        source,
                    })?;
                    block.data.extend_from_slice(&header(&m.name, m.size));
                    self.phase = Phase::Data {
                        file,
                        remaining: m.size,
                    };
                }
                Phase::Data { file, remaining } => {
                    let m = &self.members[self.index];
                    if *remaining == 0 {
                        let mut probe = [0u8; 1];
                        let extra = file.read(&mut probe).map_err(|source| ShardError::Read {
                            path: m.path.clone(),
                            source,
                        })?;
                        if extra != 0 {
                            return Err(ShardError::Changed {
                                path: m.path.clone(),
                                expected: m.size,
                                found: "more".into(),
                            });
                        }
                        self.phase = Phase::Padding(padded(m.size) - m.size);
                        continue;
                    }
                    let take = room.min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    let start = block.data.len();
                    block.data.resize(start + take, 0);
                    let mut got = 0;
                    while got < take {
                        let n = file
                            .read(&mut block.data[start + got..start + take])
                            .map_err(|source| ShardError::Read {
                                path: m.path.clone(),
                                source,
                            })?;
                        if n == 0 {
                            return Err(ShardError::Changed {
                                path: m.path.clone(),
                                expected: m.size,
                                found: (m.size - *remaining + got as u64).to_string(),
                            });
                        }
                        got += n;
                    }
                    *remaining -= take as u64;
                    block.segments.push(Segment {
                        member: self.index,
                        start,
                        end: start + take,
                    });
                }
                Phase::Padding(left) | Phase::Trailer(left) => {
                    let take = (room as u64).min(*left);
                    block.data.resize(block.data.len() + take as usize, 0);
                    *left -= take;
                    if *left == 0 {
                        self.phase = match self.phase {
                            Phase::Trailer(_) => Phase::Done,
                            _ => {
                                self.index += 1;
                                if self.index == self.members.len() {
                                    Phase::Trailer(2 * BLOCK)
                                } else {
                                    Phase::Header
                                }
                            }
                        };
                    }
                }
            }
        }
    }
}

/// Writes `members` (sorted by the caller) as a shard into `out`, hashing as it goes.
///
/// `out` is a temporary file; the caller renames it to the ID once it is complete.
pub fn write_shard(
    members: &[MemberSource],
    out: &Path,
    piece_length: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WrittenShard, ShardError> {
    let write_err = |source| ShardError::Write {
        path: out.to_path_buf(),
        source,
    };
    let mut file = File::create(out).map_err(write_err)?;
    let mut assembler = Assembler::new(members);
    let mut shard_hash = blake3::Hasher::new();
    let mut pieces = PieceHasher::new(piece_length);
    let mut member_hashes: Vec<blake3::Hasher> = vec![blake3::Hasher::new(); members.len()];
    let mut captured: Vec<Option<Vec<u8>>> = members
        .iter()
        .map(|m| m.capture.then(|| Vec::with_capacity(m.size as usize)))
        .collect();
    let mut size = 0u64;

    let mut current = Block::default();
    let mut next = Block::default();
    assembler.fill(&mut current)?;
    while !current.data.is_empty() {
        let block = &current;
        let (ahead, ()) = rayon::join(
            || -> Result<(), ShardError> {
                file.write_all(&block.data).map_err(write_err)?;
                shard_hash.update(&block.data);
                assembler.fill(&mut next)
            },
            || {
                pieces.update(&block.data);
                for seg in &block.segments {
                    let bytes = &block.data[seg.start..seg.end];
                    member_hashes[seg.member].update(bytes);
                    if let Some(buf) = &mut captured[seg.member] {
                        buf.extend_from_slice(bytes);
                    }
                }
            },
        );
        ahead?;
        size += current.data.len() as u64;
        progress(current.data.len() as u64);
        std::mem::swap(&mut current, &mut next);
    }
    file.sync_all().map_err(write_err)?;

    let mut offset = 0u64;
    let written = members
        .iter()
        .zip(member_hashes)
        .zip(captured)
        .map(|((m, h), captured)| {
            let member = WrittenMember {
                offset: offset + BLOCK,
                length: m.size,
                blake3: h.finalize(),
                captured,
            };
            offset += BLOCK + padded(m.size);
            member
        })
        .collect();
    debug_assert_eq!(size, shard_size(members.iter().map(|m| m.size)));
    Ok(WrittenShard {
        id: ShardId::from_hash(shard_hash.finalize()),
        size,
        members: written,
        pieces: pieces.finish(),
    })
}

/// A member found by reading a shard's headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarMember {
    pub name: String,
    pub offset: u64,
    pub length: u64,
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// Reads the member table of a shard that came from someone else, refusing anything a
/// seedpool shard never holds: links, devices, directories, long-name extensions, names
/// with separators or `..`, sizes beyond the end of the file, trailing garbage.
pub fn read_members(path: &Path) -> Result<Vec<TarMember>, ShardError> {
    let read_err = |source| ShardError::Read {
        path: path.to_path_buf(),
        source,
    };
    let malformed = |offset: u64, problem: String| ShardError::Malformed {
        path: path.to_path_buf(),
        offset,
        problem,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let len = file.metadata().map_err(read_err)?.len();
    let mut reader = io::BufReader::new(&mut file);
    let mut members = Vec::new();
    let mut offset = 0u64;
    let mut h = [0u8; 512];
    loop {
        if offset + BLOCK > len {
            return Err(malformed(
                offset,
                "truncated before the end-of-archive blocks".into(),
            ));
        }
        reader.read_exact(&mut h).map_err(read_err)?;
        if h.iter().all(|&b| b == 0) {
            if offset + 2 * BLOCK != len {
                return Err(malformed(
                    offset,
                    format!(
                        "expected the archive to end at byte {}, but the file has {len} bytes",
                        offset + 2 * BLOCK
                    ),
                ));
            }
            let mut second = [0u8; 512];
            reader.read_exact(&mut second).map_err(read_err)?;
            if second.iter().any(|&b| b != 0) {
                return Err(malformed(
                    offset + BLOCK,
                    "second end-of-archive block is not zero".into(),
                ));
            }
            return Ok(members);
        }
        let stored = parse_octal(&h[148..156])
            .ok_or_else(|| malformed(offset, "unreadable header checksum".into()))?;
        let mut copy = h;
        copy[148..156].copy_from_slice(b"        ");
        let sum: u64 = copy.iter().map(|&b| u64::from(b)).sum();
        if sum != stored {
            return Err(malformed(
                offset,
                format!("header checksum {stored} does not match {sum}"),
            ));
        }
        if &h[257..263] != b"ustar\0" {
            return Err(malformed(offset, "not a ustar header".into()));
        }
        let typeflag = h[156];
        if typeflag != b'0' && typeflag != 0 {
            return Err(malformed(
                offset,
                format!(
                    "member type `{}` is not a regular file",
                    char::from(typeflag).escape_default()
                ),
            ));
        }
        if h[345..500].iter().any(|&b| b != 0) {
            return Err(malformed(
                offset,
                "member name uses the ustar prefix field".into(),
            ));
        }
        let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = std::str::from_utf8(&h[..name_end])
            .map_err(|_| malformed(offset, "member name is not UTF-8".into()))?;
        split_member_name(name).map_err(|source| ShardError::BadMemberName {
            path: path.to_path_buf(),
            offset,
            source,
        })?;
        let size = parse_octal(&h[124..136])
            .ok_or_else(|| malformed(offset, "unreadable member size".into()))?;
        let data = offset + BLOCK;
        if data + padded(size) + 2 * BLOCK > len {
            return Err(malformed(
                offset,
                format!("member `{name}` of {size} bytes runs past the end of the file"),
            ));
        }
        if let Some(prev) = members.last() {
            let prev: &TarMember = prev;
            if prev.name.as_str() >= name {
                return Err(malformed(
                    offset,
                    format!("member `{name}` is out of order or repeated"),
                ));
            }
        }
        members.push(TarMember {
            name: name.to_string(),
            offset: data,
            length: size,
        });
        reader
            .seek_relative(padded(size) as i64)
            .map_err(read_err)?;
        offset = data + padded(size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(dir: &Path, name: &str, bytes: &[u8]) -> MemberSource {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        MemberSource {
            name: name.into(),
            path,
            size: bytes.len() as u64,
            capture: name.ends_with(".json"),
        }
    }

    #[test]
    fn shard_round_trips_and_offsets_point_at_data() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..(PIPELINE_BLOCK + 1000))
            .map(|i| (i % 253) as u8)
            .collect();
        let members = vec![
            source(dir.path(), "a.jpg", &big),
            source(dir.path(), "a.json", b"{\"x\":1}"),
            source(dir.path(), "b.txt", b""),
        ];
        let out = dir.path().join("out.tar");
        let shard = write_shard(&members, &out, 16384, &|_| {}).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(shard.size, bytes.len() as u64);
        assert_eq!(shard.size, shard_size([big.len() as u64, 7, 0]));
        assert_eq!(shard.id, ShardId::from_hash(blake3::hash(&bytes)));
        let listed = read_members(&out).unwrap();
        assert_eq!(listed.len(), 3);
        for (m, w) in listed.iter().zip(&shard.members) {
            assert_eq!(m.offset, w.offset);
            let data = &bytes[m.offset as usize..(m.offset + m.length) as usize];
            assert_eq!(blake3::hash(data), w.blake3);
        }
        assert_eq!(
            shard.members[1].captured.as_deref(),
            Some(&b"{\"x\":1}"[..])
        );
        let pieces = crate::torrent::pieces::hash_reader(16384, &bytes[..]).unwrap();
        assert_eq!(pieces, shard.pieces);
    }

    #[test]
    fn system_tar_reads_our_shards() {
        let dir = tempfile::tempdir().unwrap();
        let members = vec![
            source(dir.path(), "k-1.json", b"{}"),
            source(dir.path(), "k-2.txt", b"hello"),
        ];
        let out = dir.path().join("s.tar");
        write_shard(&members, &out, 16384, &|_| {}).unwrap();
        let listing = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&out)
            .output()
            .unwrap();
        assert!(listing.status.success());
        let text = String::from_utf8_lossy(&listing.stdout);
        assert!(
            text.contains("k-1.json") && text.contains("k-2.txt"),
            "{text}"
        );
    }

    #[test]
    fn file_that_shrinks_while_packing_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = source(dir.path(), "a.bin", b"12345");
        m.size = 10;
        let err = write_shard(&[m], &dir.path().join("o.tar"), 16384, &|_| {}).unwrap_err();
        assert!(
            err.to_string()
                .contains("changed while it was being packed: expected 10 bytes, found 5"),
            "{err}"
        );
    }

    fn tar_with(name: &str, typeflag: u8) -> Vec<u8> {
        let mut h = header("x.txt", 3);
        h[..100].fill(0);
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[156] = typeflag;
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut out = h.to_vec();
        out.extend_from_slice(b"abc");
        out.resize(512 * 4, 0);
        out
    }

    #[test]
    fn hostile_members_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("../evil.txt", b'0', "bad member name"),
            ("/etc/passwd.txt", b'0', "bad member name"),
            ("link.txt", b'2', "is not a regular file"),
            ("dev.txt", b'3', "is not a regular file"),
            ("dir.d", b'5', "is not a regular file"),
        ];
        for (name, flag, expect) in cases {
            let p = dir.path().join("bad.tar");
            std::fs::write(&p, tar_with(name, flag)).unwrap();
            let err = read_members(&p).unwrap_err().to_string();
            assert!(err.contains(expect), "{name}: {err}");
        }
        let p = dir.path().join("trunc.tar");
        std::fs::write(&p, &tar_with("ok.txt", b'0')[..1000]).unwrap();
        assert!(read_members(&p)
            .unwrap_err()
            .to_string()
            .contains("not a valid seedpool tar"));
    }

    #[test]
    fn shard_ids_parse_strictly() {
        assert!(ShardId::parse(&"ab".repeat(32)).is_ok());
        assert!(ShardId::parse(&"AB".repeat(32)).is_err());
        assert!(ShardId::parse("../x").is_err());
    }
}
