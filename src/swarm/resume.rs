//! What a seeder verified, kept beside the store, so that the next start-up need not
//! hash every piece again.
//!
//! librqbit hashes every piece of a torrent it opens, unless its session persistence
//! hands it the bitfield of the pieces it had ("fastresume"): then it hashes one piece
//! of each file and a few dozen more at random, and falls back to the full check when
//! one fails. seedpool keeps that bitfield for every torrent it has seeded complete,
//! in `<store>/.seedpool-seed/<info hash>.bitv`, and beside it, in
//! `<info hash>.files.json`, the size, modification and change times and inode of every
//! file the torrent covers. A start-up offers librqbit the bitfield only when each file
//! still has exactly those: a shard rewritten, replaced, truncated or copied in since
//! means the full check again. (A change that keeps all four, which takes setting the
//! clock back, is left to librqbit's sample and to the peers, which check every piece
//! they receive.)
//!
//! librqbit's own persistence folder is a scratch one per process
//! (`.seedpool-seed/session-<pid>`): librqbit would otherwise restore on its own the
//! torrents it saw last time, and deletes the bitfield of a torrent that leaves its
//! session, neither of which a seeder of changing releases wants.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files::{file_error, FileError};
use crate::torrent::Metainfo;

/// The state folder's name in a store (or pool).
pub const FOLDER: &str = ".seedpool-seed";
const SCRATCH: &str = "session";

/// One file as it was when its torrent was last seen complete.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    path: String,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
}

impl Stamp {
    fn of(dataset_dir: &Path, path: &str) -> std::io::Result<Self> {
        let md = std::fs::metadata(dataset_dir.join(path))?;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Ok(Self {
            path: path.to_string(),
            size: md.len(),
            mtime_ns: ns(md.mtime(), md.mtime_nsec()),
            ctime_ns: ns(md.ctime(), md.ctime_nsec()),
            inode: md.ino(),
        })
    }
}

fn stamps(torrent: &Metainfo, dataset_dir: &Path) -> std::io::Result<Vec<Stamp>> {
    torrent
        .data_files()
        .map(|f| Stamp::of(dataset_dir, &f.path))
        .collect()
}

/// The verified state of a store's seeded torrents, and librqbit's scratch folder for
/// this process (removed when this is dropped).
pub struct Resume {
    dir: PathBuf,
    scratch: PathBuf,
}

impl Resume {
    /// Opens (or creates) the store's state folder, clearing the scratch folders of
    /// seeders that are gone.
    pub fn open(store_root: &Path) -> Result<Self, FileError> {
        let dir = store_root.join(FOLDER);
        let scratch = crate::files::process_folder(&dir, SCRATCH)?;
        Ok(Self { dir, scratch })
    }

    /// The folder to give librqbit's session persistence.
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }

    fn bitv_name(torrent: &Metainfo) -> String {
        // librqbit's name for a torrent's bitfield: the info hash in lowercase hex.
        format!("{}.bitv", torrent.info_hash.to_hex())
    }

    fn stamps_path(&self, torrent: &Metainfo) -> PathBuf {
        self.dir
            .join(format!("{}.files.json", torrent.info_hash.to_hex()))
    }

    /// Puts the saved bitfield of `torrent` where librqbit looks for it, when every
    /// file it covers is as it was when the bitfield was saved; otherwise forgets it.
    /// Returns whether it was offered.
    pub fn offer(&self, torrent: &Metainfo, dataset_dir: &Path) -> bool {
        let saved = self.dir.join(Self::bitv_name(torrent));
        let stamps_path = self.stamps_path(torrent);
        let unchanged = std::fs::read(&stamps_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<Stamp>>(&b).ok())
            .is_some_and(|was| stamps(torrent, dataset_dir).is_ok_and(|now| now == was));
        let offered =
            unchanged && std::fs::copy(&saved, self.scratch.join(Self::bitv_name(torrent))).is_ok();
        if !offered {
            let _ = std::fs::remove_file(&stamps_path);
            let _ = std::fs::remove_file(&saved);
        }
        offered
    }

    /// Keeps the bitfield librqbit holds for `torrent`, which has just been found
    /// complete, with the files as they are now. Nothing is kept when librqbit wrote no
    /// bitfield where it used to (another librqbit): the next start-up checks in full.
    pub fn save(&self, torrent: &Metainfo, dataset_dir: &Path) -> Result<(), FileError> {
        let written = self.scratch.join(Self::bitv_name(torrent));
        let Ok(bits) = std::fs::read(&written) else {
            return Ok(());
        };
        let stamps_path = self.stamps_path(torrent);
        let now = stamps(torrent, dataset_dir).map_err(file_error("read", dataset_dir))?;
        // The stamps go last: without them the bitfield is never offered.
        let _ = std::fs::remove_file(&stamps_path);
        crate::files::write_atomically(&self.dir.join(Self::bitv_name(torrent)), &bits)?;
        let json = serde_json::to_vec(&now).expect("stamps serialize");
        crate::files::write_atomically(&stamps_path, &json)
    }
}

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::torrent::{build, pieces::hash_reader, SourceFile, TorrentSpec};

    fn torrent(dataset_dir: &Path) -> Metainfo {
        let data = vec![7u8; 40_000];
        std::fs::create_dir_all(dataset_dir.join("shards")).unwrap();
        std::fs::write(dataset_dir.join("shards/a.tar"), &data).unwrap();
        let built = build(&TorrentSpec {
            name: "ds".into(),
            piece_length: 16384,
            files: vec![SourceFile {
                path: "shards/a.tar".into(),
                length: data.len() as u64,
                pieces: hash_reader(16384, &data[..]).unwrap(),
            }],
            trackers: vec![],
            web_seeds: vec![],
            similar: vec![],
            created: 1,
        });
        Metainfo::parse(&built.bytes).unwrap()
    }

    #[test]
    fn a_bitfield_is_offered_again_only_while_its_files_are_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let ds = dir.path().join("ds");
        let t = torrent(&ds);
        let bitv = |r: &Resume| r.scratch().join(Resume::bitv_name(&t));
        {
            let r = Resume::open(dir.path()).unwrap();
            assert!(!r.offer(&t, &ds), "nothing saved yet");
            // librqbit wrote no bitfield: nothing is kept.
            r.save(&t, &ds).unwrap();
            assert!(!r.offer(&t, &ds));
            std::fs::write(bitv(&r), [0xe0]).unwrap();
            r.save(&t, &ds).unwrap();
        }
        let r = Resume::open(dir.path()).unwrap();
        assert!(r.offer(&t, &ds));
        assert_eq!(std::fs::read(bitv(&r)).unwrap(), [0xe0]);
        std::fs::remove_file(bitv(&r)).unwrap();

        // Written again with the same bytes: the change time moved, so it is forgotten.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let shard = ds.join("shards/a.tar");
        std::fs::write(&shard, std::fs::read(&shard).unwrap()).unwrap();
        assert!(!r.offer(&t, &ds));
        assert!(!bitv(&r).exists());
        assert!(!r.offer(&t, &ds), "and stays forgotten");
        let scratch = r.scratch().to_path_buf();
        drop(r);
        assert!(!scratch.exists(), "the scratch folder goes with its seeder");
    }
}
