//! The bencode decoder and the torrent parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = seedpool::torrent::bencode::decode(data);
    if let Ok(t) = seedpool::torrent::Metainfo::parse(data) {
        for f in t.data_files() {
            let _ = t.full_piece_hashes(f);
        }
    }
});
