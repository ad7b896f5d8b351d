//! Writes a store whose release has SHARDS shards of SHARD_BYTES bytes each as sparse
//! files (all zeros, no disk used), with a real torrent and manifest, for timing how
//! long `seedpool seed` takes to come up on a store of that size (benches/seed_startup.sh).
//! The shard ids are made up (blake3 of the shard's number): `seed` checks the files
//! against the torrent's piece hashes, not their blake3, and a terabyte of blake3 would
//! take longer than the bench. Signed with a fixed key. Prints the manifest's path.
//!
//! Usage: cargo bench --bench sparse_store -- OUT SHARDS SHARD_BYTES

use std::path::Path;

use seedpool::manifest::{Counts, IndexRef, Manifest, ShardEntry, TorrentRef};
use seedpool::shard::ShardId;
use seedpool::torrent::pieces::hash_reader;
use seedpool::torrent::{build, magnet_link, pick_piece_length, SourceFile, TorrentSpec};

fn sparse(path: &Path, size: u64) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("folder");
    let f = std::fs::File::create(path).expect("create");
    f.set_len(size).expect("set length");
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [out, shards, shard_bytes] = &args[..] else {
        eprintln!("usage: sparse_store OUT SHARDS SHARD_BYTES");
        std::process::exit(2);
    };
    let (shards, shard_bytes): (u64, u64) = (
        shards.parse().expect("SHARDS"),
        shard_bytes.parse().expect("SHARD_BYTES"),
    );
    let out = Path::new(out);
    let dataset: seedpool::name::DatasetName = "sparse".parse().expect("name");
    let version: seedpool::name::Version = "1".parse().expect("version");
    let dir = out.join(dataset.as_str());
    let index_bytes = 1 << 20;
    let total = shards * shard_bytes + index_bytes;
    let piece_length = pick_piece_length(total, shards);
    // Every shard holds the same zeros, so one hashing serves them all.
    let zeros = |n: u64| std::io::repeat(0).take(n);
    use std::io::Read;
    let shard_pieces = hash_reader(piece_length, zeros(shard_bytes)).expect("hash");
    let index_pieces = hash_reader(piece_length, zeros(index_bytes)).expect("hash");
    let index_path = format!("index/{version}.sqlite.zst");
    sparse(&dir.join(&index_path), index_bytes);
    let mut files = vec![SourceFile {
        path: index_path.clone(),
        length: index_bytes,
        pieces: index_pieces,
    }];
    let mut entries = Vec::new();
    for i in 0..shards {
        let id = ShardId::from_hash(blake3::hash(&i.to_le_bytes()));
        let path = format!("shards/{id}.tar");
        sparse(&dir.join(&path), shard_bytes);
        files.push(SourceFile {
            path,
            length: shard_bytes,
            pieces: shard_pieces.clone(),
        });
        entries.push(ShardEntry {
            id,
            size: shard_bytes,
            items: 1,
            volume: "sparse".into(),
        });
    }
    entries.sort_by_key(|e| e.id.to_string());
    let built = build(&TorrentSpec {
        name: dataset.to_string(),
        piece_length,
        files,
        trackers: vec![],
        web_seeds: vec![],
        similar: vec![],
        created: 1,
    });
    let torrent_file = seedpool::store::torrent_file_name(&dataset, &version);
    std::fs::write(out.join(&torrent_file), &built.bytes).expect("torrent");
    let manifest = Manifest {
        format: seedpool::manifest::FORMAT.into(),
        format_version: seedpool::manifest::FORMAT_VERSION,
        dataset: dataset.clone(),
        version: version.clone(),
        parent: None,
        created: seedpool::manifest::format_time(1),
        torrent: TorrentRef {
            file: torrent_file,
            info_hash: built.info_hash,
            magnet: magnet_link(built.info_hash, dataset.as_str(), &[], &[]),
            piece_length,
        },
        trackers: vec![],
        web_seeds: vec![],
        index: IndexRef {
            path: index_path,
            blake3: "0".repeat(64),
            size: index_bytes,
            uncompressed_size: index_bytes,
            format_version: seedpool::index::FORMAT_VERSION,
        },
        counts: Counts {
            items: shards,
            shards,
            new_shards: shards,
            reused_shards: 0,
            tombstones: 0,
            bytes: total,
            new_bytes: total,
        },
        shards: entries,
        signature: None,
    };
    let mut manifest = manifest;
    manifest.sign(&seedpool::signing::PublisherKey::from_seed([7; 32]));
    let path = out.join(Manifest::file_name(&dataset, &version));
    std::fs::write(&path, manifest.to_bytes()).expect("manifest");
    println!("{}", path.display());
}
