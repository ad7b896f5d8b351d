//! An index file from elsewhere: opening it (the exact schema check) and every check
//! a downloader runs on it next must refuse or accept it, never crash.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    file.write_all(data).expect("written");
    let Ok(reader) = seedpool::index::IndexReader::open(file.path()) else {
        return;
    };
    let _ = reader.check_contents(true);
    if let Ok(shards) = reader.shards() {
        for s in shards.iter().take(4) {
            let _ = reader.shard_members(&s.id);
        }
    }
    let _ = reader.for_each_item(|_| Ok(()));
});
