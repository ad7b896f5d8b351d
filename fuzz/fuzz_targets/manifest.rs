//! The manifest parser: any bytes, refused or accepted, never a panic. Accepted ones
//! must survive the checks a reader makes next.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = seedpool::manifest::Manifest::from_slice(data, std::path::Path::new("fuzz.json")) {
        let _ = m.dataset_name();
        let _ = m.version_name();
        assert_eq!(m.shard_ids().count(), m.shards.len());
    }
});
