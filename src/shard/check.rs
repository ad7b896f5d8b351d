//! Checking a shard against what a signed release says of it, in one pass.
//!
//! The manifest gives the shard's size and blake3 (its ID); the release index gives
//! where each live item's members lie in it and their blake3. A shard passes when its
//! bytes hash to the ID, it parses as a seedpool tar (see `tar`), it holds as many items
//! as the manifest says, and every member the index lists is in it at that offset, with
//! that length and blake3. Only then can `extract` and a web page read members by
//! offset without surprises, and only such shards enter a pool (and get seeded on).
//!
//! The file is mapped once; the shard's blake3 and the member checks (the headers and
//! each listed member's blake3) run side by side on the same pages (`rayon::join`), so
//! a check reads the shard once, as hashing it alone did.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use rayon::prelude::*;

use super::tar::{self, TarMember, TarProblem};
use super::{ShardError, ShardId};

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
enum Bytes {
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

/// Opens a regular file and maps it; `expected_size`, when given, is checked first.
fn open(path: &Path, id: ShardId, expected_size: Option<u64>) -> Result<Bytes, ShardError> {
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

/// The member table of a shard file, parsed strictly (see `tar`).
pub fn read_members(path: &Path) -> Result<Vec<TarMember>, ShardError> {
    let bytes = open(path, ShardId([0; 32]), None)?;
    tar::parse(&bytes).map_err(|p| tar_error(path, p))
}

/// Checks the shard at `path` against `expected` (see the module doc).
pub fn check(path: &Path, expected: &Expected<'_>) -> Result<(), ShardError> {
    let bytes = open(path, expected.id, Some(expected.size))?;
    let (hash, members) = rayon::join(
        || {
            let mut h = blake3::Hasher::new();
            h.update_rayon(&bytes);
            h.finalize()
        },
        || check_members(&bytes, expected),
    );
    // A file that is not the signed one says so first; its structure is beside the point.
    if ShardId::from_hash(hash) != expected.id {
        return Err(ShardError::Hash {
            id: expected.id,
            path: path.to_path_buf(),
            found: hash.to_hex().to_string(),
        });
    }
    members.map_err(|e| match e {
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

fn check_members(bytes: &[u8], expected: &Expected<'_>) -> Result<(), MemberProblem> {
    let found = tar::parse(bytes).map_err(MemberProblem::Tar)?;
    let keys = 1 + found
        .windows(2)
        .filter(|w| w[0].key() != w[1].key())
        .count() as u64;
    let keys = if found.is_empty() { 0 } else { keys };
    if keys != expected.items {
        return Err(MemberProblem::Items(keys));
    }
    // Both lists are in (key, ext) order: one walk pairs each listed member with its
    // place in the tar.
    let mut pairs: Vec<(&IndexedMember, &TarMember)> = Vec::with_capacity(expected.members.len());
    let mut tar_members = found.iter().peekable();
    for want in expected.members {
        let name = || format!("{}.{}", want.key, want.ext);
        while tar_members
            .peek()
            .is_some_and(|m| (m.key(), m.ext()) < (want.key.as_str(), want.ext.as_str()))
        {
            tar_members.next();
        }
        match tar_members.next() {
            Some(m) if m.key() == want.key && m.ext() == want.ext => {
                if (m.offset, m.length) != (want.offset, want.length) {
                    return Err(MemberProblem::Member {
                        name: name(),
                        problem: format!(
                            "the index places it at byte {} with {} bytes, the shard at byte {} with {} bytes",
                            want.offset, want.length, m.offset, m.length
                        ),
                    });
                }
                pairs.push((want, m));
            }
            _ => {
                return Err(MemberProblem::Member {
                    name: name(),
                    problem: "the index lists it, the shard does not hold it".into(),
                })
            }
        }
    }
    let bad = pairs.par_iter().find_first(|(want, m)| {
        let data = &bytes[m.offset as usize..(m.offset + m.length) as usize];
        blake3::hash(data).to_hex().as_str() != want.blake3
    });
    match bad {
        Some((want, m)) => {
            let data = &bytes[m.offset as usize..(m.offset + m.length) as usize];
            Err(MemberProblem::Member {
                name: m.name.clone(),
                problem: format!(
                    "its blake3 is `{}`, the index says `{}`",
                    blake3::hash(data).to_hex(),
                    want.blake3
                ),
            })
        }
        None => Ok(()),
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
