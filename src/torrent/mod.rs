//! The `.torrent` of a release: bencode, SHA-1 pieces of piece-aligned files, the
//! metainfo with BEP 47 pad files and BEP 19 web seeds, and magnet links. seedpool writes
//! the metainfo itself because librqbit's creator has no pad files, no url-list and no
//! stable file order (see docs/format.md).

pub mod bencode;
pub mod metainfo;
pub mod pieces;

pub use metainfo::{
    build, magnet_link, pick_piece_length, InfoHash, Metainfo, SourceFile, TorrentError,
    TorrentSpec,
};
