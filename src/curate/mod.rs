//! Curation: the rules that decide which items a release keeps and which copy of an
//! item wins. The quality score (`quality`) and the source priority live here, shared
//! by ingest (which drops and ranks the originals of one release) and the pool (which
//! resolves duplicates across releases).

pub mod quality;

/// The largest perceptual-hash distance duplicate finding supports: hashes are split
/// into eight 8-bit bands, and two hashes within 7 bits of each other share a band.
pub const MAX_PHASH_DISTANCE: u32 = 7;

/// Booru sources from most to least preferred when two copies have the same size.
pub const SOURCE_PRIORITY: &[&str] = &[
    "safebooru",
    "yande.re",
    "e-shuushuu",
    "konachan",
    "gelbooru",
    "sankaku",
    "zerochan",
    "anime-pictures",
    "danbooru",
];

/// Where a booru stands in `SOURCE_PRIORITY` (unknown sources last).
pub fn source_rank(booru: Option<&str>) -> usize {
    let booru = booru.unwrap_or("").to_ascii_lowercase();
    let normal = booru.replace(['.', '-', '_'], "");
    SOURCE_PRIORITY
        .iter()
        .position(|s| s.replace(['.', '-', '_'], "") == normal)
        .unwrap_or(SOURCE_PRIORITY.len())
}
