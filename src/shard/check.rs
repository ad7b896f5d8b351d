//! Checking a shard against what a signed release says of it, in one pass.
//!
//! The manifest gives the shard's size and blake3 (its ID); the release index gives
//! where each live item's members lie in it and their blake3. A shard passes when its
//! bytes hash to the ID, it parses as a seedpool tar (see `tar`), it holds as many items
//! as the manifest says, and every member the index lists is in it at that offset, with
//! that length and blake3. Only then can `extract` and a web page read members by
//! offset without surprises, and only such shards enter a pool (and get seeded on).
//!
//! The file is mapped once. Its headers are parsed first (a small part of the file),
//! then one pass over the bytes feeds two hashes side by side, window by window
//! (`rayon::join`): the shard's blake3 and each listed member's. So the shard is read
//! once, as hashing it alone did; the second hash is the price of member checks, since
//! a member's blake3 and the shard's are separate trees that share no work.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::tar::{self, TarMember, TarProblem};
use super::{ShardError, ShardId};

/// How many shards a caller checks side by side (their members read from the index
/// first): enough to keep both halves of each check and every core busy, few enough
/// that the member lists held stay small.
pub const CHECK_BATCH: usize = 8;

/// One member as the release index places it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedMember {
    pub key: String,
    pub ext: String,
    pub offset: u64,
    pub length: u64,
    /// blake3 hex of the member's bytes.
    pub blake3: String,
}

/// What a shard must be.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    pub id: ShardId,
    pub size: u64,
    /// Items physically in the shard (live or not), from the manifest.
    pub items: u64,
    /// The members of the release's items in this shard, sorted by (key, ext).
    pub members: &'a [IndexedMember],
}

/// The bytes of a file, mapped (or read, when too small to map usefully).
pub enum Bytes {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Read(v) => v,
        }
    }
}

/// Opens a regular file and maps it (reads it, when small); `expected_size`, when given,
/// is checked first. A link or other non-file is refused.
pub fn open(path: &Path, id: ShardId, expected_size: Option<u64>) -> Result<Bytes, ShardError> {
    let read_err = |source| ShardError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::symlink_metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(ShardError::NotAFile(path.to_path_buf()));
    }
    if let Some(size) = expected_size {
        if meta.len() != size {
            return Err(ShardError::Size {
                id,
                path: path.to_path_buf(),
                expected: size,
                found: meta.len(),
            });
        }
    }
    let file = File::open(path).map_err(read_err)?;
    if meta.len() < 1 << 16 {
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // The size came from the metadata a moment ago: never read more than that.
        (&file)
            .take(meta.len())
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        return Ok(Bytes::Read(bytes));
    }
    // SAFETY: shards are immutable once named by their hash; a file changed under the
    // map fails the check (or, truncated, faults), which is what a damaged shard gets.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(read_err)?;
    Ok(Bytes::Mapped(map))
}

fn tar_error(path: &Path, problem: TarProblem) -> ShardError {
    match problem {
        TarProblem::Malformed { offset, problem } => ShardError::Malformed {
            path: path.to_path_buf(),
            offset,
            problem,
        },
        TarProblem::BadName { offset, source } => ShardError::BadMemberName {
            path: path.to_path_buf(),
            offset,
            source,
        },
    }
}

/// Checks the shard at `path` against `expected` (see the module doc).
pub fn check(path: &Path, expected: &Expected<'_>) -> Result<(), ShardError> {
    let bytes = open(path, expected.id, Some(expected.size))?;
    let mut members = MemberWalk::new(&bytes, expected);
    let mut whole = blake3::Hasher::new();
    for start in (0..bytes.len()).step_by(WINDOW) {
        let end = (start + WINDOW).min(bytes.len());
        rayon::join(
            || {
                whole.update(&bytes[start..end]);
            },
            || members.advance(end as u64),
        );
    }
    let hash = whole.finalize();
    // A file that is not the signed one says so first; its structure is beside the point.
    if ShardId::from_hash(hash) != expected.id {
        return Err(ShardError::Hash {
            id: expected.id,
            path: path.to_path_buf(),
            found: hash.to_hex().to_string(),
        });
    }
    let Some(problem) = members.finish() else {
        return Ok(());
    };
    Err(match problem {
        MemberProblem::Tar(p) => tar_error(path, p),
        MemberProblem::Member { name, problem } => ShardError::Member {
            id: expected.id,
            path: path.to_path_buf(),
            name,
            problem,
        },
        MemberProblem::Items(found) => ShardError::ItemCount {
            id: expected.id,
            path: path.to_path_buf(),
            expected: expected.items,
            found,
        },
    })
}

enum MemberProblem {
    Tar(TarProblem),
    Member { name: String, problem: String },
    Items(u64),
}

/// Bytes hashed at a time: the shard's hash and the members' side run on two threads
/// over the same window, so each window is read from memory (or disk) once, and the
/// reading of the next overlaps the hashing of this one.
const WINDOW: usize = 4 << 20;

/// The members' side of a check: reads headers as the pass reaches them, pairs each
/// with the index's member of that name, and hashes the listed ones.
struct MemberWalk<'b, 'e> {
    bytes: &'b [u8],
    reader: tar::Reader<'b>,
    expected: &'e Expected<'e>,
    /// The next listed member not yet found in the tar.
    next_listed: usize,
    /// The member being hashed, which runs past the window read so far, and where its
    /// hashing got to.
    current: Option<(TarMember, Option<&'e IndexedMember>, blake3::Hasher, u64)>,
    keys: u64,
    last_key: String,
    finished: bool,
    problem: Option<MemberProblem>,
}

impl<'b, 'e> MemberWalk<'b, 'e> {
    fn new(bytes: &'b [u8], expected: &'e Expected<'e>) -> Self {
        Self {
            bytes,
            reader: tar::Reader::new(bytes),
            expected,
            next_listed: 0,
            current: None,
            keys: 0,
            last_key: String::new(),
            finished: false,
            problem: None,
        }
    }

    /// Does all the member work on bytes before `end`.
    fn advance(&mut self, end: u64) {
        while self.problem.is_none() && !self.finished {
            if let Some((m, want, mut hasher, from)) = self.current.take() {
                let member_end = m.offset + m.length;
                let to = member_end.min(end);
                if want.is_some() {
                    hasher.update(&self.bytes[from as usize..to as usize]);
                }
                if member_end > end {
                    self.current = Some((m, want, hasher, to));
                    return;
                }
                if let Some(want) = want {
                    let found = hasher.finalize();
                    if found.to_hex().as_str() != want.blake3 {
                        self.problem = Some(MemberProblem::Member {
                            name: m.name.clone(),
                            problem: format!(
                                "its blake3 is `{}`, the index says `{}`",
                                found.to_hex(),
                                want.blake3
                            ),
                        });
                    }
                }
                continue;
            }
            if self.reader.position() >= end {
                return;
            }
            match self.reader.next_member() {
                Err(p) => self.problem = Some(MemberProblem::Tar(p)),
                Ok(None) => self.finished = true,
                Ok(Some(m)) => {
                    if m.key() != self.last_key || self.keys == 0 {
                        self.keys += 1;
                        self.last_key = m.key().to_string();
                    }
                    match self.listed(&m) {
                        Ok(want) => {
                            let from = m.offset;
                            self.current = Some((m, want, blake3::Hasher::new(), from));
                        }
                        Err(p) => self.problem = Some(p),
                    }
                }
            }
        }
    }

    /// The index's member for tar member `m`, if the index lists it (members it does not
    /// list are dead: removed or replaced by a later release). Listed members that sort
    /// before `m` are missing from the shard.
    fn listed(&mut self, m: &TarMember) -> Result<Option<&'e IndexedMember>, MemberProblem> {
        let listed = self.expected.members;
        if let Some(want) = listed.get(self.next_listed) {
            if (want.key.as_str(), want.ext.as_str()) < (m.key(), m.ext()) {
                return Err(missing(want));
            }
            if want.key == m.key() && want.ext == m.ext() {
                self.next_listed += 1;
                if (m.offset, m.length) != (want.offset, want.length) {
                    return Err(MemberProblem::Member {
                        name: m.name.clone(),
                        problem: format!(
                            "the index places it at byte {} with {} bytes, the shard at byte {} with {} bytes",
                            want.offset, want.length, m.offset, m.length
                        ),
                    });
                }
                return Ok(Some(want));
            }
        }
        Ok(None)
    }

    /// The first problem found, once every byte has been through `advance`.
    fn finish(self) -> Option<MemberProblem> {
        if self.problem.is_some() {
            return self.problem;
        }
        if let Some(want) = self.expected.members.get(self.next_listed) {
            return Some(missing(want));
        }
        (self.keys != self.expected.items).then_some(MemberProblem::Items(self.keys))
    }
}

fn missing(want: &IndexedMember) -> MemberProblem {
    MemberProblem::Member {
        name: format!("{}.{}", want.key, want.ext),
        problem: "the index lists it, the shard does not hold it".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(
        dir: &Path,
        members: &[(&str, &[u8])],
    ) -> (std::path::PathBuf, ShardId, Vec<IndexedMember>) {
        let bytes = tar::image(members);
        let id = ShardId::from_hash(blake3::hash(&bytes));
        let path = dir.join(format!("{id}.tar"));
        std::fs::write(&path, &bytes).unwrap();
        let listed = tar::parse(&bytes)
            .unwrap()
            .into_iter()
            .zip(members)
            .map(|(m, (_, data))| IndexedMember {
                key: m.key().into(),
                ext: m.ext().into(),
                offset: m.offset,
                length: m.length,
                blake3: blake3::hash(data).to_hex().to_string(),
            })
            .collect();
        (path, id, listed)
    }

    fn check_with(path: &Path, id: ShardId, items: u64, members: &[IndexedMember]) -> String {
        let size = std::fs::metadata(path).unwrap().len();
        match check(
            path,
            &Expected {
                id,
                size,
                items,
                members,
            },
        ) {
            Ok(()) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_shard_matching_its_index_passes_and_dead_members_may_stay() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![7u8; 200_000];
        let (path, id, listed) = shard(
            dir.path(),
            &[
                ("a.jpg", &big),
                ("a.json", b"{}"),
                ("b.json", b"{\"x\":1}"),
                ("c.txt", b""),
            ],
        );
        assert_eq!(check_with(&path, id, 3, &listed), "ok");
        // An index that no longer lists `b` (a later release removed it) still passes.
        let live: Vec<_> = listed.iter().filter(|m| m.key != "b").cloned().collect();
        assert_eq!(check_with(&path, id, 3, &live), "ok");
    }

    #[test]
    fn members_that_span_windows_are_hashed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..2 * WINDOW + 1000).map(|i| (i % 251) as u8).collect();
        let tail: Vec<u8> = (0..WINDOW - 300).map(|i| (i % 13) as u8).collect();
        let (path, id, listed) = shard(
            dir.path(),
            &[
                ("a.bin", &big),
                ("a.json", b"{}"),
                ("b.bin", &tail),
                ("c.txt", b"end"),
            ],
        );
        assert_eq!(check_with(&path, id, 3, &listed), "ok");
        for i in [0, 2, 3] {
            let mut wrong = listed.clone();
            wrong[i].blake3 = "00".repeat(32);
            let msg = check_with(&path, id, 3, &wrong);
            assert!(
                msg.contains(&format!(
                    "`{}.{}` as the index says: its blake3 is",
                    wrong[i].key, wrong[i].ext
                )),
                "{msg}"
            );
        }
    }

    #[test]
    fn index_members_that_do_not_match_the_shard_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (path, id, listed) = shard(dir.path(), &[("a.jpg", b"12345"), ("b.json", b"{}")]);
        let mut moved = listed.clone();
        moved[1].offset = 4096;
        assert!(check_with(&path, id, 2, &moved)
            .contains("member `b.json` as the index says: the index places it at byte 4096 with 2 bytes, the shard at byte 1536 with 2 bytes"));
        let mut huge = listed.clone();
        huge[0].length = 1 << 62;
        assert!(check_with(&path, id, 2, &huge).contains("with 4611686018427387904 bytes"));
        let mut wrong_hash = listed.clone();
        wrong_hash[0].blake3 = "00".repeat(32);
        assert!(check_with(&path, id, 2, &wrong_hash).contains("its blake3 is"));
        let mut absent = listed.clone();
        absent.insert(
            1,
            IndexedMember {
                key: "a".into(),
                ext: "png".into(),
                ..listed[0].clone()
            },
        );
        assert!(check_with(&path, id, 2, &absent).contains(
            "member `a.png` as the index says: the index lists it, the shard does not hold it"
        ));
        assert!(check_with(&path, id, 3, &listed).contains("holds 2 items, the manifest says 3"));
    }

    #[test]
    fn size_and_hash_come_before_structure() {
        let dir = tempfile::tempdir().unwrap();
        let (path, id, listed) = shard(dir.path(), &[("a.jpg", b"12345")]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[600] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(check_with(&path, id, 1, &listed).contains("does not match its blake3"));
        let err = check(
            &path,
            &Expected {
                id,
                size: 10,
                items: 1,
                members: &listed,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("expected 10 bytes, found 2048"), "{err}");
        let link = dir.path().join("link.tar");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(check_with(&link, id, 1, &listed).contains("is not a regular file"));
    }

    #[test]
    fn random_bytes_whose_hash_was_signed_are_not_a_shard() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect();
        let id = ShardId::from_hash(blake3::hash(&bytes));
        let path = dir.path().join("r.tar");
        std::fs::write(&path, &bytes).unwrap();
        let msg = check_with(&path, id, 1, &[]);
        assert!(
            msg.contains("is not a valid seedpool tar at byte 0"),
            "{msg}"
        );
    }
}
