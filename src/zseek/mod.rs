//! Seekable zstd: a file cut into independently compressed frames of [`FRAME_SIZE`]
//! bytes and closed by a seek table in a skippable frame (the layout of zstd's "seekable
//! format"), so a reader decompresses the part it needs and never the whole. Any zstd
//! decoder still reads the file as one ordinary stream: it decodes the frames one after
//! another and skips the table.
//!
//! Release indexes are written this way so a merge, a `--where` selection or a parent
//! lookup reads the index's pages where it lies, through the read-only SQLite VFS in
//! [`vfs`], instead of unpacking gigabytes to a temporary file first.

pub mod vfs;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use rayon::prelude::*;

/// Uncompressed bytes per frame: 256 SQLite pages. Smaller frames make a random page
/// cheaper to reach; on a million-item index, 1 MiB frames cost 0.6% of compression
/// ratio against one frame.
pub const FRAME_SIZE: usize = 1 << 20;
/// Frames compressed in parallel at a time.
const BATCH: usize = 64;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
/// Number of frames (u32), descriptor byte, seekable magic (u32).
const FOOTER: u64 = 9;
/// Skippable frame header: magic and content size.
const HEADER: u64 = 8;
/// Largest frame a reader accepts, compressed or not: the format allows any size, so a
/// hostile table could otherwise ask for a huge allocation.
const MAX_FRAME: u32 = 64 << 20;
/// Decoded frames kept: enough for a B-tree walk that steps between neighbouring
/// frames, small beside SQLite's own page cache.
const CACHED_FRAMES: usize = 8;

/// Compresses `input` into `out` as seekable zstd at `level`; returns the bytes read.
/// The output depends only on the input and the level, so it is reproducible.
pub fn compress(input: &mut impl Read, out: &mut impl Write, level: i32) -> io::Result<u64> {
    let mut table: Vec<(u32, u32)> = Vec::new();
    let mut total = 0u64;
    loop {
        let mut chunks = Vec::with_capacity(BATCH);
        while chunks.len() < BATCH {
            let chunk = read_chunk(input)?;
            if chunk.is_empty() {
                break;
            }
            chunks.push(chunk);
        }
        if chunks.is_empty() {
            break;
        }
        let frames: Vec<Vec<u8>> = chunks
            .par_iter()
            .map(|c| zstd::bulk::compress(c, level))
            .collect::<io::Result<_>>()?;
        for (chunk, frame) in chunks.iter().zip(&frames) {
            out.write_all(frame)?;
            table.push((frame.len() as u32, chunk.len() as u32));
            total += chunk.len() as u64;
        }
        if chunks.last().is_some_and(|c| c.len() < FRAME_SIZE) {
            break;
        }
    }
    let entries = table.len() as u64 * 8;
    let mut tail = Vec::with_capacity((HEADER + entries + FOOTER) as usize);
    tail.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    tail.extend_from_slice(&((entries + FOOTER) as u32).to_le_bytes());
    for (compressed, decompressed) in &table {
        tail.extend_from_slice(&compressed.to_le_bytes());
        tail.extend_from_slice(&decompressed.to_le_bytes());
    }
    tail.extend_from_slice(&(table.len() as u32).to_le_bytes());
    tail.push(0); // descriptor: no per-frame checksums (the whole file has a blake3)
    tail.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
    out.write_all(&tail)?;
    Ok(total)
}

/// Up to FRAME_SIZE bytes; short only at the end of the input.
fn read_chunk(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut chunk = Vec::with_capacity(FRAME_SIZE);
    input.take(FRAME_SIZE as u64).read_to_end(&mut chunk)?;
    Ok(chunk)
}

#[derive(Clone, Copy, Debug)]
struct Frame {
    compressed_at: u64,
    decompressed_at: u64,
    compressed: u32,
    decompressed: u32,
}

fn invalid(problem: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, problem)
}

/// Reads the seek table at the end of `file`: `None` when the file has none (an
/// ordinary zstd stream), an error when it has one that does not describe the file or
/// unpacks to more than `limit` bytes.
fn read_table(file: &File, limit: u64) -> io::Result<Option<Vec<Frame>>> {
    let len = file.metadata()?.len();
    if len < HEADER + FOOTER {
        return Ok(None);
    }
    let mut footer = [0u8; FOOTER as usize];
    file.read_exact_at(&mut footer, len - FOOTER)?;
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    if word(&footer[5..9]) != SEEKABLE_MAGIC {
        return Ok(None);
    }
    let count = u64::from(word(&footer[0..4]));
    if footer[4] & 0x7c != 0 {
        return Err(invalid(
            "seek table: reserved descriptor bits are set".into(),
        ));
    }
    let entry = if footer[4] & 0x80 != 0 { 12 } else { 8 };
    let table_len = HEADER + count * entry + FOOTER;
    if table_len > len {
        return Err(invalid(format!(
            "seek table: {count} frames do not fit in a file of {len} bytes"
        )));
    }
    let mut table = vec![0u8; table_len as usize];
    file.read_exact_at(&mut table, len - table_len)?;
    if word(&table[0..4]) != SKIPPABLE_MAGIC || u64::from(word(&table[4..8])) != table_len - HEADER
    {
        return Err(invalid("seek table: its frame header is wrong".into()));
    }
    let mut frames = Vec::with_capacity(count as usize);
    let (mut compressed_at, mut decompressed_at) = (0u64, 0u64);
    for e in table[HEADER as usize..]
        .chunks_exact(entry as usize)
        .take(count as usize)
    {
        let (compressed, decompressed) = (word(&e[0..4]), word(&e[4..8]));
        if compressed > MAX_FRAME || decompressed > MAX_FRAME {
            return Err(invalid(format!(
                "seek table: frame {} is larger than {MAX_FRAME} bytes",
                frames.len()
            )));
        }
        frames.push(Frame {
            compressed_at,
            decompressed_at,
            compressed,
            decompressed,
        });
        compressed_at += u64::from(compressed);
        decompressed_at += u64::from(decompressed);
    }
    if compressed_at + table_len != len {
        return Err(invalid(format!(
            "seek table: its frames cover {compressed_at} bytes, the file has {}",
            len - table_len
        )));
    }
    if decompressed_at > limit {
        return Err(invalid(format!(
            "seek table: it unpacks to {decompressed_at} bytes, more than the {limit} allowed"
        )));
    }
    Ok(Some(frames))
}

/// Whether `path` is seekable zstd (it ends with a seek table), without checking more.
pub fn is_seekable(path: &Path) -> io::Result<bool> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len < HEADER + FOOTER {
        return Ok(false);
    }
    let mut magic = [0u8; 4];
    file.read_exact_at(&mut magic, len - 4)?;
    Ok(u32::from_le_bytes(magic) == SEEKABLE_MAGIC)
}

/// Frames decoded by every reader of this process, for `SEEDPOOL_TIMINGS`.
pub static DECODED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A frame decoder: its own context and a buffer for the compressed bytes.
struct Decoder {
    dctx: zstd::bulk::Decompressor<'static>,
    compressed: Vec<u8>,
}

impl Decoder {
    fn new() -> io::Result<Self> {
        let mut dctx = zstd::bulk::Decompressor::new()?;
        // Frames that ask for a window above 128 MiB are refused instead of allocated.
        dctx.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(27))?;
        Ok(Self {
            dctx,
            compressed: Vec::new(),
        })
    }

    /// Decodes frame `i` of `file` into `data` (cleared first), checking its size
    /// against the table.
    fn decode(
        &mut self,
        file: &File,
        frames: &[Frame],
        i: usize,
        data: &mut Vec<u8>,
    ) -> io::Result<()> {
        DECODED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let f = frames[i];
        self.compressed.resize(f.compressed as usize, 0);
        file.read_exact_at(&mut self.compressed, f.compressed_at)?;
        data.clear();
        data.reserve_exact(f.decompressed as usize);
        let n = self
            .dctx
            .decompress_to_buffer(&self.compressed, data)
            .map_err(|e| invalid(format!("frame {i}: {e}")))?;
        if n != f.decompressed as usize {
            return Err(invalid(format!(
                "frame {i} unpacks to {n} bytes, the seek table says {}",
                f.decompressed
            )));
        }
        Ok(())
    }
}

/// Frames asked of the read-ahead thread and not started yet, at most.
const AHEAD_WANTED: usize = 2;
/// Frames it decoded and nobody took yet, at most (the oldest go first).
const AHEAD_READY: usize = 4;

#[derive(Default)]
struct AheadState {
    wanted: VecDeque<usize>,
    busy: Option<usize>,
    ready: Vec<(usize, Vec<u8>)>,
    stop: bool,
}

/// A thread that decodes the frame after the ones a sequential reader is reading, so a
/// B-tree walk through the index finds it decoded: on a merge the release index's
/// frames cost a core's worth of decompression, and SQLite leaves the other core idle.
struct Ahead {
    shared: std::sync::Arc<(std::sync::Mutex<AheadState>, std::sync::Condvar)>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Ahead {
    fn start(file: &File, frames: &[Frame]) -> io::Result<Self> {
        let shared = std::sync::Arc::new((
            std::sync::Mutex::new(AheadState::default()),
            std::sync::Condvar::new(),
        ));
        let (file, frames, theirs) = (file.try_clone()?, frames.to_vec(), shared.clone());
        let mut decoder = Decoder::new()?;
        let worker = std::thread::Builder::new()
            .name("zseek-ahead".into())
            .spawn(move || {
                let (lock, signal) = &*theirs;
                loop {
                    let i = {
                        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
                        while st.wanted.is_empty() && !st.stop {
                            st = signal.wait(st).unwrap_or_else(|e| e.into_inner());
                        }
                        if st.stop {
                            return;
                        }
                        let i = st.wanted.pop_front().expect("a wanted frame");
                        st.busy = Some(i);
                        i
                    };
                    let mut data = Vec::new();
                    // A frame that fails here is decoded again by the reader, which
                    // reports the error.
                    let ok = decoder.decode(&file, &frames, i, &mut data).is_ok();
                    let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
                    st.busy = None;
                    if ok {
                        if st.ready.len() >= AHEAD_READY {
                            st.ready.remove(0);
                        }
                        st.ready.push((i, data));
                    }
                    signal.notify_all();
                }
            })?;
        Ok(Self {
            shared,
            worker: Some(worker),
        })
    }

    /// Asks for frame `i` unless it is on its way already.
    fn want(&self, i: usize) {
        let (lock, signal) = &*self.shared;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        if st.busy == Some(i) || st.wanted.contains(&i) || st.ready.iter().any(|r| r.0 == i) {
            return;
        }
        if st.wanted.len() >= AHEAD_WANTED {
            st.wanted.pop_front();
        }
        st.wanted.push_back(i);
        signal.notify_all();
    }

    /// Frame `i` if it was decoded ahead, waiting when it is being decoded now; a
    /// request not started yet is withdrawn (the caller decodes it at once).
    fn take(&self, i: usize) -> Option<Vec<u8>> {
        let (lock, signal) = &*self.shared;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(at) = st.ready.iter().position(|r| r.0 == i) {
                return Some(st.ready.swap_remove(at).1);
            }
            if st.busy != Some(i) {
                st.wanted.retain(|&w| w != i);
                return None;
            }
            st = signal.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        let (lock, signal) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        signal.notify_all();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Random reads from a seekable zstd file, decompressing one frame at a time. A reader
/// that reads frames in order gets the next one decoded ahead on another thread.
pub struct Reader {
    file: File,
    frames: Vec<Frame>,
    len: u64,
    decoder: Decoder,
    /// Recently decoded frames, most recent first.
    cache: VecDeque<(usize, Vec<u8>)>,
    /// The last frames that were not in the cache, to tell sequential reading.
    missed: [usize; 4],
    ahead: Option<Ahead>,
}

impl Reader {
    /// Opens `path`; `None` when it is an ordinary zstd stream without a seek table.
    pub fn open(path: &Path, limit: u64) -> io::Result<Option<Self>> {
        let file = File::open(path)?;
        let Some(frames) = read_table(&file, limit)? else {
            return Ok(None);
        };
        let len = frames
            .last()
            .map_or(0, |f| f.decompressed_at + u64::from(f.decompressed));
        Ok(Some(Self {
            file,
            frames,
            len,
            decoder: Decoder::new()?,
            cache: VecDeque::with_capacity(CACHED_FRAMES),
            missed: [usize::MAX; 4],
            ahead: None,
        }))
    }

    /// Uncompressed length.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills `buf` from uncompressed offset `at`; returns how many bytes were there
    /// (fewer than asked only at the end).
    pub fn read_at(&mut self, buf: &mut [u8], at: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let pos = at + done as u64;
            if pos >= self.len {
                break;
            }
            let i = self.frames.partition_point(|f| f.decompressed_at <= pos) - 1;
            let frame = self.frames[i];
            let data = self.frame(i)?;
            let from = (pos - frame.decompressed_at) as usize;
            let n = (data.len() - from).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&data[from..from + n]);
            done += n;
        }
        Ok(done)
    }

    /// Frame `i`, decoded: from the cache, from the read-ahead thread or from the file.
    fn frame(&mut self, i: usize) -> io::Result<&[u8]> {
        if let Some(hit) = self.cache.iter().position(|(f, _)| *f == i) {
            let entry = self.cache.remove(hit).expect("a cached frame");
            self.cache.push_front(entry);
            return Ok(&self.cache[0].1);
        }
        let mut data = match self.cache.len() {
            n if n >= CACHED_FRAMES => self.cache.pop_back().expect("a full cache").1,
            _ => Vec::new(),
        };
        match self.ahead.as_ref().and_then(|a| a.take(i)) {
            Some(decoded) => data = decoded,
            None => self
                .decoder
                .decode(&self.file, &self.frames, i, &mut data)?,
        }
        self.cache.push_front((i, data));
        // A frame right after one read recently: the next one will be wanted too.
        let sequential = i > 0 && self.missed.contains(&(i - 1));
        self.missed.rotate_right(1);
        self.missed[0] = i;
        let next = i + 1;
        if sequential && next < self.frames.len() && !self.cache.iter().any(|c| c.0 == next) {
            if self.ahead.is_none() {
                // Without a thread, reading goes on one frame at a time.
                self.ahead = Ahead::start(&self.file, &self.frames).ok();
            }
            if let Some(ahead) = &self.ahead {
                ahead.want(next);
            }
        }
        Ok(&self.cache[0].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that compress somewhat and differ everywhere, so a misplaced read shows.
    fn sample(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9u32;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if i % 7 == 0 {
                    (x >> 24) as u8
                } else {
                    (i / 4096) as u8
                }
            })
            .collect()
    }

    fn packed(data: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.zst");
        let mut out = Vec::new();
        let n = compress(&mut &data[..], &mut out, 3).unwrap();
        assert_eq!(n, data.len() as u64);
        std::fs::write(&path, out).unwrap();
        (dir, path)
    }

    #[test]
    fn random_reads_match_the_input_and_any_zstd_decoder_reads_it_whole() {
        let data = sample(3 * FRAME_SIZE + 12_345);
        let (_dir, path) = packed(&data);
        let whole = zstd::stream::decode_all(File::open(&path).unwrap()).unwrap();
        assert!(
            whole == data,
            "a plain decoder reads the frames and skips the table"
        );
        let mut r = Reader::open(&path, data.len() as u64).unwrap().unwrap();
        assert_eq!(r.len(), data.len() as u64);
        for (at, len) in [
            (0, 4096),
            (FRAME_SIZE as u64 - 100, 300),
            (3 * FRAME_SIZE as u64 - 1, 2 * FRAME_SIZE),
            (5, 0),
            (data.len() as u64 - 10, 10),
            (12, 9),
        ] {
            let mut buf = vec![0u8; len];
            let n = r.read_at(&mut buf, at).unwrap();
            let end = (at as usize + len).min(data.len());
            assert_eq!(n, end - at as usize);
            assert!(buf[..n] == data[at as usize..end], "read at {at}");
        }
        let mut past = [0u8; 8];
        assert_eq!(r.read_at(&mut past, data.len() as u64 + 5).unwrap(), 0);
    }

    #[test]
    fn sequential_reads_get_frames_decoded_ahead_and_their_errors_still_surface() {
        let data = sample(6 * FRAME_SIZE + 77);
        let (_dir, path) = packed(&data);
        let mut r = Reader::open(&path, data.len() as u64).unwrap().unwrap();
        let mut buf = vec![0u8; 4096];
        for at in (0..data.len()).step_by(4096) {
            let n = r.read_at(&mut buf, at as u64).unwrap();
            assert!(buf[..n] == data[at..at + n], "read at {at}");
        }
        assert!(r.ahead.is_some(), "a sequential walk starts the read-ahead");
        // Frame 4 damaged: decoding it ahead fails quietly, and reading it reports it.
        let mut bytes = std::fs::read(&path).unwrap();
        let r0 = Reader::open(&path, u64::MAX).unwrap().unwrap();
        let at = r0.frames[4].compressed_at as usize;
        bytes[at..at + 4].fill(0xff);
        std::fs::write(&path, &bytes).unwrap();
        let mut r = Reader::open(&path, data.len() as u64).unwrap().unwrap();
        let mut failed = None;
        for at in (0..data.len()).step_by(4096) {
            match r.read_at(&mut buf, at as u64) {
                Ok(n) => assert!(buf[..n] == data[at..at + n], "read at {at}"),
                Err(e) => {
                    failed = Some((at / FRAME_SIZE, e.to_string()));
                    break;
                }
            }
        }
        let (frame, problem) = failed.expect("the damaged frame fails");
        assert_eq!(frame, 4);
        assert!(problem.contains("frame 4"), "{problem}");
    }

    #[test]
    fn output_is_reproducible_and_an_empty_input_has_a_table() {
        let data = sample(FRAME_SIZE + 1);
        let (_a, a) = packed(&data);
        let (_b, b) = packed(&data);
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
        let (_e, empty) = packed(&[]);
        let r = Reader::open(&empty, 0).unwrap().unwrap();
        assert!(r.is_empty());
    }

    #[test]
    fn plain_zstd_is_not_seekable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.zst");
        std::fs::write(&path, zstd::encode_all(&sample(5000)[..], 3).unwrap()).unwrap();
        assert!(!is_seekable(&path).unwrap());
        assert!(Reader::open(&path, u64::MAX).unwrap().is_none());
    }

    #[test]
    fn bad_tables_and_frames_are_refused_with_the_problem() {
        let data = sample(2 * FRAME_SIZE + 10);
        let (_dir, path) = packed(&data);
        let good = std::fs::read(&path).unwrap();
        let err = |bytes: &[u8], limit: u64| {
            std::fs::write(&path, bytes).unwrap();
            match Reader::open(&path, limit) {
                Ok(Some(mut r)) => {
                    let mut buf = vec![0u8; data.len()];
                    r.read_at(&mut buf, 0).err().map(|e| e.to_string())
                }
                Ok(None) => Some("not seekable".into()),
                Err(e) => Some(e.to_string()),
            }
            .expect("an error")
        };
        assert!(err(&good, 1000).contains("more than the 1000 allowed"));
        let n = good.len();
        let table_at = n - 9 - 3 * 8;
        // A frame said to be larger than it is: the frames no longer tile the file.
        let mut longer = good.clone();
        longer[table_at] ^= 1;
        assert!(
            err(&longer, u64::MAX).contains("cover"),
            "{}",
            err(&longer, u64::MAX)
        );
        // A frame count that runs past the start of the file.
        let mut many = good.clone();
        many[n - 9..n - 5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(err(&many, u64::MAX).contains("do not fit"));
        // A frame that claims 64 MiB and more.
        let mut huge = good.clone();
        huge[table_at + 4..table_at + 8].copy_from_slice(&(MAX_FRAME + 1).to_le_bytes());
        assert!(err(&huge, u64::MAX).contains("larger than"));
        // A frame that unpacks to less than the table says.
        let mut short = good.clone();
        let first = u32::from_le_bytes(good[table_at + 4..table_at + 8].try_into().unwrap());
        short[table_at + 4..table_at + 8].copy_from_slice(&(first + 1).to_le_bytes());
        assert!(err(&short, u64::MAX).contains("frame 0"));
        // A damaged frame header. (Damage inside a block may decode to wrong bytes of
        // the right length: the file's blake3, checked before any read, catches that.)
        let mut damaged = good.clone();
        damaged[0..4].fill(0xff);
        assert!(err(&damaged, u64::MAX).contains("frame 0"));
        // Truncated: the footer is gone, so the file reads as plain zstd.
        assert_eq!(err(&good[..n - 3], u64::MAX), "not seekable");
    }
}
