//! The strict shard parser: members it accepts lie inside the data, in order.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(members) = seedpool::shard::tar::parse(data) {
        for m in &members {
            assert!(m.offset + m.length <= data.len() as u64);
            let _ = (m.key(), m.ext());
        }
    }
});
