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

pub mod check;
pub mod tar;

pub use check::{check, Expected, IndexedMember, CHECK_BATCH};
use std::path::{Path, PathBuf};
pub use tar::TarMember;

use crate::name::NameError;
use crate::torrent::pieces::FilePieces;

pub const BLOCK: u64 = 512;
/// Largest member size that fits the 11 octal digits of a ustar size field.
pub const MAX_MEMBER_SIZE: u64 = 0o77777777777;
/// How many bytes move through the hashing pipeline at a time.
const PIPELINE_BLOCK: usize = 8 << 20;

/// The blake3 of a shard's bytes, the shard's identity and file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub(crate) [u8; 32]);

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
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// As manifests write it: 64 lower-case hex digits.
impl serde::Serialize for ShardId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for ShardId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let hex_id = String::deserialize(d)?;
        Self::parse(&hex_id).map_err(serde::de::Error::custom)
    }
}

impl rusqlite::ToSql for ShardId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::from(self.to_hex()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("`{0}` is not a shard ID (expected 64 lowercase hex digits)")]
    BadId(String),
    #[error(transparent)]
    Bug(#[from] crate::Bug),
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
    #[error("shard `{path}` has a bad member name at byte {offset}: {source}")]
    BadMemberName {
        path: PathBuf,
        offset: u64,
        source: NameError,
    },
    #[error("`{0}` is not a regular file")]
    NotAFile(PathBuf),
    #[error("shard `{id}` (`{path}`): expected {expected} bytes, found {found}")]
    Size {
        id: ShardId,
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("`{path}` does not match its blake3 in the manifest (found `{found}`)")]
    Hash {
        id: ShardId,
        path: PathBuf,
        found: String,
    },
    #[error("shard `{id}` (`{path}`) does not hold member `{name}` as the index says: {problem}")]
    Member {
        id: ShardId,
        path: PathBuf,
        name: String,
        problem: String,
    },
    #[error("shard `{id}` (`{path}`) holds {found} items, the manifest says {expected}")]
    ItemCount {
        id: ShardId,
        path: PathBuf,
        expected: u64,
        found: u64,
    },
}

impl ShardError {
    /// The same error naming `path` instead: for a check made on a temporary link to
    /// a file, reported as the file the user gave.
    pub fn at(mut self, path: &Path) -> Self {
        match &mut self {
            ShardError::Read { path: p, .. }
            | ShardError::Write { path: p, .. }
            | ShardError::Changed { path: p, .. }
            | ShardError::MemberTooLarge { path: p, .. }
            | ShardError::Malformed { path: p, .. }
            | ShardError::BadMemberName { path: p, .. }
            | ShardError::NotAFile(p)
            | ShardError::Size { path: p, .. }
            | ShardError::Hash { path: p, .. }
            | ShardError::Member { path: p, .. }
            | ShardError::ItemCount { path: p, .. } => *p = path.to_path_buf(),
            ShardError::BadId(_) | ShardError::Bug(_) => {}
        }
        self
    }
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

pub(crate) fn padded(size: u64) -> u64 {
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

/// Alignment of block buffers: what O_DIRECT asks of memory, offsets and lengths.
const ALIGN: usize = 4096;

/// A heap buffer whose usable part starts on an `ALIGN` boundary.
struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let storage = vec![0u8; len + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        Self {
            storage,
            start,
            len,
        }
    }

    fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// One block of the shard's byte stream, shared by the hashing and writing stages; its
/// buffer goes back to the reader when the last stage drops it, which bounds memory.
struct Block {
    buf: Option<AlignedBuf>,
    len: usize,
    segments: Vec<Segment>,
    recycle: std::sync::mpsc::Sender<AlignedBuf>,
}

impl Block {
    fn data(&self) -> &[u8] {
        &self
            .buf
            .as_ref()
            .expect("buffer present until drop")
            .as_slice()[..self.len]
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            let _ = self.recycle.send(buf);
        }
    }
}

enum Phase {
    Header { bytes: Box<[u8; 512]>, at: usize },
    Data { file: File, remaining: u64 },
    Zeros { left: u64, trailer: bool },
    Next,
    Done,
}

/// Produces the shard's bytes in order, reading members as it goes. Blocks are filled
/// completely (a header may straddle two blocks), so every block but the last holds
/// whole torrent pieces.
struct Assembler<'a> {
    members: &'a [MemberSource],
    index: usize,
    phase: Phase,
}

impl<'a> Assembler<'a> {
    fn new(members: &'a [MemberSource]) -> Self {
        Self {
            members,
            index: 0,
            phase: Phase::Next,
        }
    }

    /// Fills `dst` from the stream; returns how many bytes it wrote (less than
    /// `dst.len()` only at the end of the shard).
    fn fill(&mut self, dst: &mut [u8], segments: &mut Vec<Segment>) -> Result<usize, ShardError> {
        let mut at = 0;
        while at < dst.len() {
            match &mut self.phase {
                Phase::Done => break,
                Phase::Next => {
                    self.phase = match self.members.get(self.index) {
                        None => Phase::Zeros {
                            left: 2 * BLOCK,
                            trailer: true,
                        },
                        Some(m) => {
                            if m.size > MAX_MEMBER_SIZE {
                                return Err(ShardError::MemberTooLarge {
                                    path: m.path.clone(),
                                    size: m.size,
                                });
                            }
                            Phase::Header {
                                bytes: Box::new(header(&m.name, m.size)),
                                at: 0,
                            }
                        }
                    };
                }
                Phase::Header { bytes, at: done } => {
                    let n = (bytes.len() - *done).min(dst.len() - at);
                    dst[at..at + n].copy_from_slice(&bytes[*done..*done + n]);
                    *done += n;
                    at += n;
                    if *done == bytes.len() {
                        let m = &self.members[self.index];
                        let file = File::open(&m.path).map_err(|source| ShardError::Read {
                            path: m.path.clone(),
                            source,
                        })?;
                        self.phase = Phase::Data {
                            file,
                            remaining: m.size,
                        };
                    }
                }
                Phase::Data { file, remaining } => {
                    let m = &self.members[self.index];
                    let read_err = |source| ShardError::Read {
                        path: m.path.clone(),
                        source,
                    };
                    if *remaining == 0 {
                        let mut probe = [0u8; 1];
                        if file.read(&mut probe).map_err(read_err)? != 0 {
                            return Err(ShardError::Changed {
                                path: m.path.clone(),
                                expected: m.size,
                                found: "more".into(),
                            });
                        }
                        self.phase = Phase::Zeros {
                            left: padded(m.size) - m.size,
                            trailer: false,
                        };
                        continue;
                    }
                    let take =
                        (dst.len() - at).min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    let start = at;
                    while at < start + take {
                        let n = file.read(&mut dst[at..start + take]).map_err(read_err)?;
                        if n == 0 {
                            return Err(ShardError::Changed {
                                path: m.path.clone(),
                                expected: m.size,
                                found: (m.size - *remaining + (at - start) as u64).to_string(),
                            });
                        }
                        at += n;
                    }
                    *remaining -= take as u64;
                    segments.push(Segment {
                        member: self.index,
                        start,
                        end: at,
                    });
                }
                Phase::Zeros { left, trailer } => {
                    let n = (dst.len() - at).min(usize::try_from(*left).unwrap_or(usize::MAX));
                    dst[at..at + n].fill(0);
                    at += n;
                    *left -= n as u64;
                    if *left == 0 {
                        if *trailer {
                            self.phase = Phase::Done;
                        } else {
                            self.index += 1;
                            self.phase = Phase::Next;
                        }
                    }
                }
            }
        }
        Ok(at)
    }
}

/// The pool that hashes torrent pieces. Its tasks never block, so it cannot deadlock
/// with callers that wait for them, whatever pool those callers run in.
fn piece_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(
                std::thread::available_parallelism()
                    .map_or(2, |n| n.get())
                    .max(2),
            )
            .thread_name(|i| format!("seedpool-sha1-{i}"))
            .build()
            .expect("a thread pool can be created")
    })
}

/// Writes `members` (sorted by the caller) as a shard into `out`, hashing as it goes.
///
/// `out` is a temporary file; the caller renames it to the ID once it is complete.
/// Four stages run at once: this thread reads members into blocks of whole pieces; the
/// piece pool hashes each block's SHA-1 pieces (blocks in parallel); one thread feeds
/// the shard's and the members' blake3; one thread writes. Blocks are recycled, so
/// memory stays at a few blocks whatever the shard's size. `direct_io` writes around
/// the page cache where the file system allows it (a shard is not read back soon).
pub fn write_shard(
    members: &[MemberSource],
    out: &Path,
    piece_length: u64,
    direct_io: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WrittenShard, ShardError> {
    use std::sync::mpsc;
    use std::sync::Arc;

    let write_err = |source| ShardError::Write {
        path: out.to_path_buf(),
        source,
    };
    let block_size =
        usize::try_from(piece_length.max(PIPELINE_BLOCK as u64)).unwrap_or(PIPELINE_BLOCK);
    let block_size = block_size - block_size % usize::try_from(piece_length).unwrap_or(1).max(1);
    let mut file = ShardFile::create(out, direct_io).map_err(write_err)?;
    let expected_size = shard_size(members.iter().map(|m| m.size));

    // Blocks in flight: enough to keep the disk and both hashers busy (measured in
    // docs/performance.md). Buffers are made on demand, no larger than the shard.
    const DEPTH: usize = 12;
    let buffer_len = block_size.min(
        usize::try_from(expected_size)
            .unwrap_or(block_size)
            .div_ceil(ALIGN)
            * ALIGN,
    );
    let (free_tx, free_rx) = mpsc::channel::<AlignedBuf>();
    let mut allocated = 0;
    let (hash_tx, hash_rx) = mpsc::sync_channel::<Arc<Block>>(DEPTH);
    let (write_tx, write_rx) = mpsc::sync_channel::<Arc<Block>>(DEPTH);
    let (piece_tx, piece_rx) = mpsc::channel::<(
        usize,
        Vec<crate::torrent::pieces::PieceHash>,
        Option<crate::torrent::pieces::Tail>,
    )>();

    let (hashes, written, read_result) = std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut shard_hash = blake3::Hasher::new();
            let mut member_hashes: Vec<blake3::Hasher> = vec![blake3::Hasher::new(); members.len()];
            let mut captured: Vec<Option<Vec<u8>>> = members
                .iter()
                .map(|m| m.capture.then(|| Vec::with_capacity(m.size as usize)))
                .collect();
            for block in hash_rx {
                let data = block.data();
                shard_hash.update(data);
                for seg in &block.segments {
                    let bytes = &data[seg.start..seg.end];
                    member_hashes[seg.member].update(bytes);
                    if let Some(buf) = &mut captured[seg.member] {
                        buf.extend_from_slice(bytes);
                    }
                }
            }
            (shard_hash, member_hashes, captured)
        });
        let writer = scope.spawn(move || -> std::io::Result<(ShardFile, u64)> {
            let mut size = 0u64;
            for block in write_rx {
                file.write_block(block.data())?;
                size += block.len as u64;
                progress(block.len as u64);
            }
            Ok((file, size))
        });

        let mut assembler = Assembler::new(members);
        let mut block_no = 0usize;
        let read_result = (|| -> Result<(), ShardError> {
            loop {
                let next = match free_rx.try_recv() {
                    Ok(buf) => Ok(buf),
                    Err(_) if allocated < DEPTH => {
                        allocated += 1;
                        Ok(AlignedBuf::new(buffer_len))
                    }
                    Err(_) => free_rx.recv(),
                };
                let Ok(mut buf) = next else {
                    return Ok(());
                };
                let mut segments = Vec::new();
                let len = assembler.fill(buf.as_mut_slice(), &mut segments)?;
                if len == 0 {
                    return Ok(());
                }
                let block = Arc::new(Block {
                    buf: Some(buf),
                    len,
                    segments,
                    recycle: free_tx.clone(),
                });
                let for_pieces = Arc::clone(&block);
                let tx = piece_tx.clone();
                let no = block_no;
                piece_pool().spawn(move || {
                    let (full, tail) =
                        crate::torrent::pieces::hash_aligned(piece_length, for_pieces.data());
                    drop(for_pieces);
                    let _ = tx.send((no, full, tail));
                });
                block_no += 1;
                // A closed channel means that stage failed; its error is reported below.
                if hash_tx.send(Arc::clone(&block)).is_err() || write_tx.send(block).is_err() {
                    return Ok(());
                }
                if len < buffer_len {
                    return Ok(());
                }
            }
        })();
        drop(hash_tx);
        drop(write_tx);
        let hashes = hasher.join();
        let written = writer.join();
        (hashes, written, read_result)
    });
    read_result?;
    let hashes = hashes.map_err(|_| crate::Bug("a shard's hashing thread panicked"))?;
    let written = written.map_err(|_| crate::Bug("a shard's writing thread panicked"))?;
    let (file, size) = written.map_err(write_err)?;
    if size != expected_size {
        return Err(ShardError::Write {
            path: out.to_path_buf(),
            source: std::io::Error::other(format!("wrote {size} bytes, planned {expected_size}")),
        });
    }
    file.finish().map_err(write_err)?;

    drop(piece_tx);
    let mut blocks: Vec<_> = piece_rx.into_iter().collect();
    blocks.sort_by_key(|(no, _, _)| *no);
    let mut full = Vec::new();
    let mut tail = None;
    for (_, f, t) in blocks {
        full.extend(f);
        tail = t.or(tail);
    }

    let (shard_hash, member_hashes, captured) = hashes;
    let mut offset = 0u64;
    let members_written = members
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
    Ok(WrittenShard {
        id: ShardId::from_hash(shard_hash.finalize()),
        size,
        members: members_written,
        pieces: FilePieces { full, tail },
    })
}

/// The shard file being written. Where the file system allows it, data goes with
/// O_DIRECT: no copy into the page cache and no backlog of dirty pages for the final
/// fsync to wait on (publishing writes each byte once and does not read it back). Else,
/// and for an unaligned tail, buffered writes with early writeback.
struct ShardFile {
    file: File,
    direct: bool,
    offset: u64,
}

impl ShardFile {
    fn create(path: &Path, direct_io: bool) -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::OpenOptionsExt;
            if direct_io {
                let direct = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(path);
                if let Ok(file) = direct {
                    return Ok(Self {
                        file,
                        direct: true,
                        offset: 0,
                    });
                }
            }
        }
        Ok(Self {
            file: File::create(path)?,
            direct: false,
            offset: 0,
        })
    }

    fn write_block(&mut self, data: &[u8]) -> io::Result<()> {
        let mut at = 0;
        while at < data.len() {
            if self.direct && (data.len() - at) < ALIGN {
                self.stop_direct()?;
            }
            let end = if self.direct {
                at + (data.len() - at) / ALIGN * ALIGN
            } else {
                data.len()
            };
            match self.file.write(&data[at..end]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    at += n;
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Some file systems accept O_DIRECT at open but not these writes.
                Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                    self.stop_direct()?
                }
                Err(e) => return Err(e),
            }
        }
        if !self.direct {
            self.start_writeback(data.len() as u64);
        }
        Ok(())
    }

    fn stop_direct(&mut self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = self.file.as_raw_fd();
            // SAFETY: fcntl on a file descriptor this struct owns, with valid flags.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
            if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        self.direct = false;
        Ok(())
    }

    /// Asks the kernel to start writing what was just written, so the final fsync has
    /// little left to wait for.
    fn start_writeback(&self, len: u64) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let start = self.offset - len;
            // SAFETY: a hint on a file descriptor this struct owns; failure is harmless.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    start as libc::off64_t,
                    len as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        let _ = len;
    }

    fn finish(self) -> io::Result<()> {
        self.file.sync_all()
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
        let shard = write_shard(&members, &out, 16384, true, &|_| {}).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(shard.size, bytes.len() as u64);
        assert_eq!(shard.size, shard_size([big.len() as u64, 7, 0]));
        assert_eq!(shard.id, ShardId::from_hash(blake3::hash(&bytes)));
        let listed = tar::parse(&std::fs::read(&out).unwrap()).unwrap();
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
    fn pieces_larger_than_a_block_and_headers_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let mut members = Vec::new();
        // Sizes chosen so headers and padding land on block boundaries at odd places.
        for (i, len) in [
            PIPELINE_BLOCK - 700,
            3,
            PIPELINE_BLOCK + 511,
            0,
            PIPELINE_BLOCK / 2 + 1,
        ]
        .iter()
        .enumerate()
        {
            let data: Vec<u8> = (0..*len).map(|j| ((i + 1) * j % 251) as u8).collect();
            members.push(source(dir.path(), &format!("k{i}.bin"), &data));
        }
        for piece_length in [16384, 1 << 20, 16 << 20] {
            let out = dir.path().join(format!("s{piece_length}.tar"));
            let shard = write_shard(&members, &out, piece_length, true, &|_| {}).unwrap();
            let bytes = std::fs::read(&out).unwrap();
            assert_eq!(shard.id, ShardId::from_hash(blake3::hash(&bytes)));
            assert_eq!(
                shard.pieces,
                crate::torrent::pieces::hash_reader(piece_length, &bytes[..]).unwrap()
            );
            let listed = tar::parse(&std::fs::read(&out).unwrap()).unwrap();
            assert_eq!(listed.len(), members.len());
            for ((m, w), src) in listed.iter().zip(&shard.members).zip(&members) {
                let data = &bytes[m.offset as usize..(m.offset + m.length) as usize];
                assert_eq!(data, &std::fs::read(&src.path).unwrap()[..]);
                assert_eq!(blake3::hash(data), w.blake3);
            }
        }
    }

    #[test]
    fn system_tar_reads_our_shards() {
        let dir = tempfile::tempdir().unwrap();
        let members = vec![
            source(dir.path(), "k-1.json", b"{}"),
            source(dir.path(), "k-2.txt", b"hello"),
        ];
        let out = dir.path().join("s.tar");
        write_shard(&members, &out, 16384, true, &|_| {}).unwrap();
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
        let err = write_shard(&[m], &dir.path().join("o.tar"), 16384, true, &|_| {}).unwrap_err();
        assert!(
            err.to_string()
                .contains("changed while it was being packed: expected 10 bytes, found 5"),
            "{err}"
        );
    }

    #[test]
    fn shard_ids_parse_strictly() {
        assert!(ShardId::parse(&"ab".repeat(32)).is_ok());
        assert!(ShardId::parse(&"AB".repeat(32)).is_err());
        assert!(ShardId::parse("../x").is_err());
    }
}
