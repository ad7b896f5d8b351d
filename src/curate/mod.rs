//! Curation: the rules that decide which items a release keeps and which copy of an
//! item wins. The quality score (`quality`), the duplicate finder (`duplicates`) and
//! the source priority live here, shared by ingest (which drops and ranks the originals
//! of one release) and the pool (which resolves duplicates across releases).

pub mod duplicates;
pub mod quality;

/// The largest perceptual-hash distance ingest and merge accept: past 7 of 64 bits,
/// unrelated pictures start to match (and banding compares more pairs).
pub const MAX_PHASH_DISTANCE: u32 = 7;

/// The boorus seedpool knows, by canonical name (as records and file names write them),
/// from most to least preferred source when two copies have the same size. This is the
/// one list: file-name parsing (`ingest::names`), ingest's default `source_priority`
/// and the pool's duplicate winners all read it, so a new booru is one entry here.
pub const BOORUS: &[&str] = &[
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

/// Where a booru stands in `BOORUS` (unknown sources last).
pub fn source_rank(booru: Option<&str>) -> usize {
    let booru = booru.unwrap_or("").to_ascii_lowercase();
    let normal = booru.replace(['.', '-', '_'], "");
    BOORUS
        .iter()
        .position(|s| s.replace(['.', '-', '_'], "") == normal)
        .unwrap_or(BOORUS.len())
}
