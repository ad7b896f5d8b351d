//! SHA-1 piece hashes of one file that starts on a piece boundary.
//!
//! Every file of a seedpool torrent starts on a piece boundary (BEP 47 pad files), so a
//! file's pieces depend on its own bytes only. The one wrinkle is its last, short piece:
//! when another file follows, the piece is completed with the zeros of the pad file; when
//! it is the torrent's last file, it stays short. Which case applies is known only once all
//! files are sorted, so both hashes of the tail are kept.

use sha1::{Digest, Sha1};

pub type PieceHash = [u8; 20];

/// The piece hashes of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePieces {
    /// Hashes of the file's full pieces.
    pub full: Vec<PieceHash>,
    /// The last piece when the file's size is not a multiple of the piece length.
    pub tail: Option<Tail>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tail {
    /// Hash of the tail bytes alone (the file is the torrent's last).
    pub short: PieceHash,
    /// Hash of the tail followed by zeros up to the piece length (a pad file follows).
    pub padded: PieceHash,
}

impl FilePieces {
    /// The piece hashes as they appear in the torrent, given whether the file is last.
    pub fn hashes(&self, last_file: bool) -> impl Iterator<Item = &PieceHash> {
        let tail = self
            .tail
            .as_ref()
            .map(|t| if last_file { &t.short } else { &t.padded });
        self.full.iter().chain(tail)
    }
}

/// Streams bytes of one file and cuts them into pieces.
pub struct PieceHasher {
    piece_length: u64,
    current: Sha1,
    filled: u64,
    full: Vec<PieceHash>,
}

impl PieceHasher {
    pub fn new(piece_length: u64) -> Self {
        debug_assert!(piece_length > 0);
        Self {
            piece_length,
            current: Sha1::new(),
            filled: 0,
            full: Vec::new(),
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (self.piece_length - self.filled) as usize;
            let take = room.min(data.len());
            self.current.update(&data[..take]);
            self.filled += take as u64;
            data = &data[take..];
            if self.filled == self.piece_length {
                let done = std::mem::replace(&mut self.current, Sha1::new());
                self.full.push(done.finalize().into());
                self.filled = 0;
            }
        }
    }

    pub fn finish(self) -> FilePieces {
        let tail = (self.filled > 0).then(|| {
            let short: PieceHash = self.current.clone().finalize().into();
            let mut padded = self.current;
            let zeros = [0u8; 64 * 1024];
            let mut missing = self.piece_length - self.filled;
            while missing > 0 {
                let n = missing.min(zeros.len() as u64) as usize;
                padded.update(&zeros[..n]);
                missing -= n as u64;
            }
            Tail {
                short,
                padded: padded.finalize().into(),
            }
        });
        FilePieces {
            full: self.full,
            tail,
        }
    }
}

/// Hashes bytes that start on a piece boundary: full pieces, and the tail when `data`
/// ends with a short piece (only the last block of a file may).
pub fn hash_aligned(piece_length: u64, data: &[u8]) -> (Vec<PieceHash>, Option<Tail>) {
    let mut hasher = PieceHasher::new(piece_length);
    hasher.update(data);
    let FilePieces { full, tail } = hasher.finish();
    (full, tail)
}

/// Hashes a whole file read from `reader` (used for files written by others).
pub fn hash_reader(
    piece_length: u64,
    mut reader: impl std::io::Read,
) -> std::io::Result<FilePieces> {
    let mut hasher = PieceHasher::new(piece_length);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha1(data: &[u8]) -> PieceHash {
        Sha1::digest(data).into()
    }

    #[test]
    fn pieces_match_direct_hashes_whatever_the_write_sizes() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut h = PieceHasher::new(16384);
        for chunk in data.chunks(777) {
            h.update(chunk);
        }
        let p = h.finish();
        assert_eq!(p.full.len(), 6);
        for (i, hash) in p.full.iter().enumerate() {
            assert_eq!(*hash, sha1(&data[i * 16384..(i + 1) * 16384]));
        }
        let tail = p.tail.unwrap();
        assert_eq!(tail.short, sha1(&data[6 * 16384..]));
        let mut padded = data[6 * 16384..].to_vec();
        padded.resize(16384, 0);
        assert_eq!(tail.padded, sha1(&padded));
    }

    #[test]
    fn exact_multiple_has_no_tail() {
        let mut h = PieceHasher::new(4);
        h.update(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let p = h.finish();
        assert_eq!(p.hashes(false).count(), 2);
        assert!(p.tail.is_none());
    }
}
