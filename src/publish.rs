//! Publishing a release: release folder → shards, index, torrent and signed manifest in
//! a store.
//!
//! Crash safety: everything is written under `STORE/.seedpool-staging/<version>-<pid>/`
//! and renamed into place only when all of it is complete, the manifest last. A manifest
//! in the store therefore always names files that are there; a publish that fails or is
//! killed leaves at most a staging folder (removed on failure, and by the next publish
//! when its process is gone) and, if killed during the final renames, complete shards
//! that no manifest names yet.
//!
//! Incremental releases (`parent`): an item is unchanged when its members' extensions,
//! sizes and blake3 all match the parent index. Parent shards are reused as they are
//! unless more than `repack_above` of their items are dead (removed or changed, now or
//! earlier), in which case their live items are packed again with the new ones. Reused
//! shards keep their piece hashes (the piece length is the parent's), so only their short
//! last piece is read back.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::files::{file_error, FileError};
use crate::index::{self, IndexError, IndexReader, IndexWriter, ItemRow, MemberRow, ShardRow};
use crate::manifest::{
    self, Counts, IndexRef, Manifest, ManifestError, ParentRef, ShardEntry, TorrentRef,
};
use crate::name::{DatasetName, Version};
use crate::progress::{Progress, Unit};
use crate::release::{self, Item, Items, ReleaseError};
use crate::shard::{self, MemberSource, ShardError, ShardId, WrittenShard};
use crate::signing::{KeyError, PublisherKey};
use crate::store::{self, Store, StoreError};
use crate::torrent::pieces::{FilePieces, PieceHasher};
use crate::torrent::{self, Metainfo, SourceFile, TorrentSpec};

/// Everything `publish` needs, validated by the CLI (or built directly by tests).
#[derive(Clone, Debug)]
pub struct PublishPlan {
    pub release_dir: PathBuf,
    pub dataset: DatasetName,
    pub version: Version,
    pub store: PathBuf,
    pub parent: Option<PathBuf>,
    pub shard_items: usize,
    /// Repack a parent shard when more than this fraction of its items are dead.
    pub repack_above: f64,
    pub trackers: Vec<String>,
    pub web_seeds: Vec<String>,
    pub key: PathBuf,
    /// Unix seconds for the manifest's `created` and the torrent's `creation date`.
    pub created: u64,
    pub piece_length: Option<u64>,
    /// Write shards around the page cache where the file system allows it (the CLI's
    /// default; `SEEDPOOL_NO_DIRECT_IO` turns it off for comparisons).
    pub direct_io: bool,
    /// Seconds the re-signed feed stays valid (`manifest::feed`).
    pub feed_valid_for: u64,
    /// Print each phase's time on stderr (`SEEDPOOL_TIMINGS`).
    pub timings: bool,
}

pub const DEFAULT_SHARD_ITEMS: usize = 1000;
pub const DEFAULT_REPACK_ABOVE: f64 = 0.5;

#[derive(Clone, Debug, Serialize)]
pub struct PublishReport {
    pub dataset: String,
    pub version: String,
    pub parent: Option<String>,
    pub manifest: PathBuf,
    pub torrent: PathBuf,
    /// The store's feed of the dataset, with this release added.
    pub feed: PathBuf,
    pub info_hash: String,
    pub magnet: String,
    pub piece_length: u64,
    pub items: u64,
    pub new_items: u64,
    pub changed_items: u64,
    pub removed_items: u64,
    pub shards: u64,
    pub new_shards: u64,
    pub reused_shards: u64,
    pub repacked_shards: u64,
    pub tombstones: u64,
    pub bytes: u64,
    pub new_bytes: u64,
    /// The store already held this exact release; nothing was changed.
    pub already_published: bool,
    /// The dataset card (`<dataset>/README.md`) that lets Hugging Face `datasets` load
    /// each release.
    pub card: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Card(#[from] crate::card::CardError),
    #[error(transparent)]
    Feed(#[from] crate::manifest::feed::FeedError),
    #[error("parent manifest `{path}` is for dataset `{found}`, not `{expected}`")]
    ParentDataset {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("version `{0}` is the parent's version; a new release needs a new version")]
    SameVersion(String),
    #[error("parent release `{version}` is incomplete in store `{store}`: {problems}")]
    ParentIncomplete {
        version: String,
        store: PathBuf,
        problems: String,
    },
    #[error(
        "a release with --parent keeps the parent's piece length ({parent} bytes), not {asked}"
    )]
    PieceLengthChange { parent: u64, asked: u64 },
    #[error("piece length {0} is not a power of two between 16 KiB and 64 MiB")]
    BadPieceLength(u64),
    #[error("release `{version}` is already published in this store as `{path}` with different content; choose a new version")]
    AlreadyPublished { version: String, path: PathBuf },
    #[error(transparent)]
    File(#[from] FileError),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PublishError {
    let to_file_error = file_error(action, path);
    move |source| PublishError::File(to_file_error(source))
}

/// A parent shard, as the parent manifest and index describe it.
struct ParentShard {
    id: ShardId,
    size: u64,
    items: u64,
    volume: String,
    first_release: String,
}

/// A parent item: where it lives and what it holds, in 48 bytes (a publish with a
/// parent holds those of one chunk of items, see `classify`).
struct ParentItem {
    shard: u32,
    /// `shape_of` its members: another shape is a change seen without reading a file.
    shape: u64,
    /// Its content hash (`index::item_hash`), which a same-shaped item must match.
    hash: [u8; 32],
}

/// A fingerprint of an item's members' extensions and sizes, in extension order.
fn shape_of<'a>(members: impl IntoIterator<Item = (&'a str, u64)>) -> u64 {
    let mut h = blake3::Hasher::new();
    for (ext, size) in members {
        h.update(ext.as_bytes());
        h.update(b"\0");
        h.update(&size.to_le_bytes());
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

struct Parent {
    manifest: Manifest,
    manifest_blake3: String,
    torrent: Metainfo,
    shards: Vec<ParentShard>,
    /// Each shard's place in `shards`, by its hex id.
    position: HashMap<String, u32>,
    index: IndexReader,
    /// The parent's index, for naming it in errors.
    index_path: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    New,
    /// In the parent shard of this number.
    Changed(u32),
    Unchanged(u32),
}

/// Publishes a release into its store. See the module doc for what is written, in which
/// order, and what a failure leaves behind. Each phase is a method of `ReleaseBuild`.
pub fn run(plan: &PublishPlan, progress: &dyn Progress) -> Result<PublishReport, PublishError> {
    let timings = index::Timings::new("publish", plan.timings);
    let build = ReleaseBuild::open(plan, progress)?;
    timings.step("release folder scanned, parent loaded");
    let layout = build.layout()?;
    timings.step("layout");
    let index_sqlite = build.staging.path().join("index.sqlite");
    let writer = IndexWriter::create(&index_sqlite)?;
    let written = build.write_new_shards(&layout, &writer)?;
    timings.step("new shards written and indexed");
    let carried = build.carry_parent(&layout, &writer)?;
    timings.step("parent's rows carried");
    let index = build.finish_index(writer, &index_sqlite, &timings)?;
    let signed = build.sign(&layout, &written, carried, &index)?;
    timings.step("torrent and manifest signed");
    let report = build.commit(&signed, &written, &index);
    timings.step("committed");
    report
}

/// One publish: what every phase reads, from the plan to the staging folder.
struct ReleaseBuild<'a> {
    plan: &'a PublishPlan,
    progress: &'a dyn Progress,
    key: PublisherKey,
    store: Store,
    staging: store::Staging,
    items: Items,
    parent: Option<Parent>,
    piece_length: u64,
}

/// Where each item goes: its fate against the parent, which parent shards stay, and the
/// new shards (item indexes, by volume and key).
struct Layout {
    /// Per item, 8 bytes: a publish holds one per item of the release.
    fates: Vec<Fate>,
    /// Per parent shard: its items that are unchanged in this release.
    live: Vec<u64>,
    /// Per parent shard: kept as it is.
    reused: Vec<bool>,
    repacked: u64,
    new_shards: Vec<Vec<u32>>,
}

/// A new shard, written into the staging folder as `new-<n>.tar`.
struct NewShard {
    written: WrittenShard,
    volume: String,
    items: u64,
}

/// What the parent's index gives this release: its reused shards, and the tombstones
/// of the items that changed or went.
#[derive(Default)]
struct Carried {
    torrent_files: Vec<SourceFile>,
    entries: Vec<ShardEntry>,
    reused: u64,
    tombstones: u64,
    removed_items: u64,
    changed_items: u64,
}

/// The index, compressed in the staging folder.
struct BuiltIndex {
    sqlite: PathBuf,
    zst: PathBuf,
    rel: String,
    compressed: index::Compressed,
    features: serde_json::Value,
}

/// The torrent and the signed manifest, and the report they make.
struct Signed {
    torrent: Vec<u8>,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    report: PublishReport,
}

impl<'a> ReleaseBuild<'a> {
    /// Checks the plan, loads the key, scans the release folder and loads the parent.
    fn open(plan: &'a PublishPlan, progress: &'a dyn Progress) -> Result<Self, PublishError> {
        if let Some(pl) = plan.piece_length {
            if !pl.is_power_of_two() || !(16384..=64 << 20).contains(&pl) {
                return Err(PublishError::BadPieceLength(pl));
            }
        }
        let key = PublisherKey::load(&plan.key)?;
        let store = Store::open_or_create(&plan.store, &plan.dataset)?;
        progress.stage("scanning release folder", 0, Unit::Items);
        let items = release::scan(&plan.release_dir)?;
        progress.note(&format!(
            "found {} items in `{}`",
            items.len(),
            plan.release_dir.display()
        ));
        let staging = store.staging(&plan.version)?;
        let parent = match &plan.parent {
            Some(path) => Some(load_parent(path, plan, &store, staging.path())?),
            None => None,
        };
        let piece_length = match (&parent, plan.piece_length) {
            (Some(p), Some(asked)) if asked != p.torrent.piece_length => {
                return Err(PublishError::PieceLengthChange {
                    parent: p.torrent.piece_length,
                    asked,
                })
            }
            (Some(p), _) => p.torrent.piece_length,
            (None, Some(pl)) => pl,
            (None, None) => torrent::pick_piece_length(
                items.iter().map(|i| i.bytes()).sum(),
                items.len().div_ceil(plan.shard_items.max(1)) as u64,
            ),
        };
        Ok(Self {
            plan,
            progress,
            key,
            store,
            staging,
            items,
            parent,
            piece_length,
        })
    }

    /// Classifies every item against the parent, decides which parent shards stay and
    /// which are repacked, and cuts the rest into new shards.
    fn layout(&self) -> Result<Layout, PublishError> {
        let (items, parent) = (&self.items, &self.parent);
        let fates: Vec<Fate> = match parent {
            None => vec![Fate::New; items.len()],
            Some(p) => classify(items, p, self.progress)?,
        };
        let mut live = vec![0u64; parent.as_ref().map_or(0, |p| p.shards.len())];
        for fate in &fates {
            if let Fate::Unchanged(s) = fate {
                live[*s as usize] += 1;
            }
        }
        let repack_above = self.plan.repack_above;
        let reused: Vec<bool> = match parent {
            None => Vec::new(),
            Some(p) => p
                .shards
                .iter()
                .zip(&live)
                .map(|(s, &l)| l > 0 && (s.items - l) as f64 <= repack_above * s.items as f64)
                .collect(),
        };
        let repacked = live
            .iter()
            .zip(&reused)
            .filter(|(&l, &r)| l > 0 && !r)
            .count() as u64;
        // Items that go into new shards, grouped by volume, in key order, cut into shards.
        let mut by_volume: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (i, (item, fate)) in items.iter().zip(&fates).enumerate() {
            let stays = matches!(fate, Fate::Unchanged(s) if reused[*s as usize]);
            if !stays {
                // `scan` numbers items in 32 bits.
                by_volume.entry(item.volume()).or_default().push(i as u32);
            }
        }
        let shard_items = self.plan.shard_items.max(1);
        let new_shards = by_volume
            .values()
            .flat_map(|keys| keys.chunks(shard_items).map(<[u32]>::to_vec))
            .collect();
        Ok(Layout {
            fates,
            live,
            reused,
            repacked,
            new_shards,
        })
    }

    /// Writes the new shards two at a time (each already uses every core, and two keep
    /// small shards from waiting on each other) on one thread, while this one records
    /// the shards already written in the index: the records are parsed beside the
    /// writing, and at most `AHEAD` batches wait, so the records captured for the index
    /// stay bounded.
    fn write_new_shards(
        &self,
        layout: &Layout,
        writer: &IndexWriter,
    ) -> Result<Vec<NewShard>, PublishError> {
        const BATCH: usize = 2;
        const AHEAD: usize = 2;
        let items = &self.items;
        let total: u64 = layout
            .new_shards
            .iter()
            .map(|s| {
                shard::shard_size(
                    s.iter()
                        .flat_map(|&i| items.get(i as usize).members().map(|m| m.size)),
                )
            })
            .sum();
        self.progress.stage("writing shards", total, Unit::Bytes);
        // Not `self` in the threads: the parent's index connection stays on this one.
        let (staging, progress) = (self.staging.path(), self.progress);
        let (piece_length, direct_io) = (self.piece_length, self.plan.direct_io);
        let write = |batch_no: usize, j: usize, shard_items: &[u32]| {
            let sources: Vec<MemberSource> = shard_items
                .iter()
                .flat_map(|&i| {
                    let item = items.get(i as usize);
                    item.members().map(move |m| MemberSource {
                        name: format!("{}.{}", item.key(), m.ext),
                        path: item.path_of(&m),
                        size: m.size,
                        capture: m.ext.as_str() == "json",
                    })
                })
                .collect();
            let path = new_shard_path(staging, batch_no * BATCH + j);
            let written = shard::write_shard(&sources, &path, piece_length, direct_io, &|n| {
                progress.advance(n)
            })?;
            let records = parse_records(items, shard_items, &written)?;
            Ok::<_, PublishError>((written, records))
        };
        let (batches, written) = std::sync::mpsc::sync_channel(AHEAD);
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for (batch_no, chunk) in layout.new_shards.chunks(BATCH).enumerate() {
                    let results: Vec<_> = chunk
                        .par_iter()
                        .enumerate()
                        .map(|(j, shard_items)| write(batch_no, j, shard_items))
                        .collect();
                    // The receiver is gone only when recording failed; its error is
                    // the one returned.
                    if batches.send((chunk, results)).is_err() {
                        return;
                    }
                }
            });
            let mut out = Vec::new();
            for (chunk, results) in written {
                for (shard_items, result) in chunk.iter().zip(results) {
                    let (mut written, records) = result?;
                    let volume = items.get(shard_items[0] as usize).volume().to_string();
                    record_new_shard(
                        writer,
                        items,
                        shard_items,
                        &written,
                        records,
                        &volume,
                        &self.plan.version,
                    )?;
                    // Indexed now, and 72 bytes a file: kept for every shard, they
                    // were a quarter of a gigabyte at three million items.
                    written.members = Vec::new();
                    out.push(NewShard {
                        written,
                        volume,
                        items: shard_items.len() as u64,
                    });
                }
            }
            Ok(out)
        })
    }

    /// Copies the reused shards' rows from the parent index (pieces from its torrent)
    /// and writes a tombstone for each parent item that changed or went.
    fn carry_parent(&self, layout: &Layout, writer: &IndexWriter) -> Result<Carried, PublishError> {
        let mut carried = Carried::default();
        let Some(p) = &self.parent else {
            return Ok(carried);
        };
        for (s, shard) in p
            .shards
            .iter()
            .enumerate()
            .filter(|(s, _)| layout.reused[*s])
        {
            carried.reused += 1;
            writer.shard(&ShardRow {
                id: shard.id.to_hex(),
                size: shard.size,
                items: shard.items,
                live_items: layout.live[s],
                volume: shard.volume.clone(),
                first_release: shard.first_release.clone(),
            })?;
            carried.torrent_files.push(SourceFile {
                path: shard.id.relative_path(),
                length: shard.size,
                pieces: reused_pieces(p, shard, &self.store)?,
            });
            carried.entries.push(ShardEntry {
                id: shard.id,
                size: shard.size,
                items: shard.items,
                volume: shard.volume.clone(),
            });
        }
        // The items are sorted by key: each parent row finds its fate by search, with
        // no set of keys beside them.
        p.index.for_each_item(|row| {
            let found = self.items.search(&row.key).map(|i| layout.fates[i]);
            match found {
                Ok(Fate::Unchanged(s)) if layout.reused[s as usize] => writer.item(&row)?,
                Ok(Fate::Changed(_)) => {
                    carried.changed_items += 1;
                    carried.tombstones += 1;
                    writer.tombstone(&row.key, &row.shard, "changed")?;
                }
                Err(_) => {
                    carried.removed_items += 1;
                    carried.tombstones += 1;
                    writer.tombstone(&row.key, &row.shard, "removed")?;
                }
                // Unchanged in a shard that is repacked: written with the new shards.
                Ok(_) => {}
            }
            Ok(())
        })?;
        Ok(carried)
    }

    /// Writes the index's metadata, closes it, reads the card's features from it and
    /// compresses it.
    fn finish_index(
        &self,
        writer: IndexWriter,
        sqlite: &Path,
        timings: &index::Timings,
    ) -> Result<BuiltIndex, PublishError> {
        let plan = self.plan;
        writer.meta("dataset", plan.dataset.as_str())?;
        writer.meta("version", plan.version.as_str())?;
        writer.meta(
            "parent",
            self.parent
                .as_ref()
                .map_or("", |p| p.manifest.version.as_str()),
        )?;
        writer.meta("format_version", &index::FORMAT_VERSION.to_string())?;
        writer.finish(timings)?;
        timings.step("index committed and packed");
        let features = crate::card::features(sqlite)?;
        timings.step("card's features read");
        self.progress.stage("compressing index", 0, Unit::Bytes);
        let zst = self.staging.path().join("index.sqlite.zst");
        let compressed = index::compress(sqlite, &zst, self.piece_length)?;
        timings.step("index compressed");
        Ok(BuiltIndex {
            sqlite: sqlite.to_path_buf(),
            zst,
            rel: format!("index/{}.sqlite.zst", plan.version),
            compressed,
            features,
        })
    }

    /// Builds the torrent and the signed manifest over the new and reused shards and
    /// the index.
    fn sign(
        &self,
        layout: &Layout,
        written: &[NewShard],
        carried: Carried,
        index: &BuiltIndex,
    ) -> Result<Signed, PublishError> {
        let plan = self.plan;
        let mut torrent_files: Vec<SourceFile> = written
            .iter()
            .map(|n| SourceFile {
                path: n.written.id.relative_path(),
                length: n.written.size,
                pieces: n.written.pieces.clone(),
            })
            .collect();
        let mut entries: Vec<ShardEntry> = written
            .iter()
            .map(|n| ShardEntry {
                id: n.written.id,
                size: n.written.size,
                items: n.items,
                volume: n.volume.clone(),
            })
            .collect();
        torrent_files.extend(carried.torrent_files);
        entries.extend(carried.entries);
        torrent_files.push(SourceFile {
            path: index.rel.clone(),
            length: index.compressed.size,
            pieces: index.compressed.pieces.clone(),
        });
        entries.sort_by_key(|e| e.id);
        let built = torrent::build(&TorrentSpec {
            name: plan.dataset.to_string(),
            piece_length: self.piece_length,
            files: torrent_files,
            trackers: plan.trackers.clone(),
            web_seeds: plan.web_seeds.clone(),
            similar: self.parent.iter().map(|p| p.torrent.info_hash).collect(),
            created: plan.created,
        });
        let magnet = torrent::magnet_link(
            built.info_hash,
            plan.dataset.as_str(),
            &plan.trackers,
            &plan.web_seeds,
        );
        let compressed = &index.compressed;
        let shard_bytes: u64 = entries.iter().map(|e| e.size).sum();
        let new_bytes: u64 = written.iter().map(|n| n.written.size).sum::<u64>() + compressed.size;
        let live_items = self.items.len() as u64;
        let mut manifest = Manifest {
            format: manifest::FORMAT.into(),
            format_version: manifest::FORMAT_VERSION,
            dataset: plan.dataset.clone(),
            version: plan.version.clone(),
            parent: self.parent.as_ref().map(|p| ParentRef {
                version: p.manifest.version.clone(),
                manifest_blake3: p.manifest_blake3.clone(),
            }),
            created: crate::manifest::format_time(plan.created),
            torrent: TorrentRef {
                file: store::torrent_file_name(&plan.dataset, &plan.version),
                info_hash: built.info_hash,
                magnet: magnet.clone(),
                piece_length: self.piece_length,
            },
            trackers: plan.trackers.clone(),
            web_seeds: plan.web_seeds.clone(),
            index: IndexRef {
                path: index.rel.clone(),
                blake3: compressed.blake3.to_hex().to_string(),
                size: compressed.size,
                uncompressed_size: compressed.uncompressed_size,
                format_version: index::FORMAT_VERSION,
            },
            counts: Counts {
                items: live_items,
                shards: entries.len() as u64,
                new_shards: written.len() as u64,
                reused_shards: carried.reused,
                tombstones: carried.tombstones,
                bytes: shard_bytes + compressed.size,
                new_bytes,
            },
            shards: entries,
            signature: None,
        };
        manifest.sign(&self.key);
        let manifest_bytes = manifest.to_bytes();
        let report = PublishReport {
            dataset: plan.dataset.to_string(),
            version: plan.version.to_string(),
            parent: manifest.parent.as_ref().map(|p| p.version.to_string()),
            manifest: self.store.manifest_path(&plan.version),
            torrent: self.store.torrent_path(&plan.version),
            feed: plan
                .store
                .join(crate::manifest::feed::Feed::file_name(&plan.dataset)),
            info_hash: built.info_hash.to_hex(),
            magnet,
            piece_length: self.piece_length,
            items: live_items,
            new_items: layout.fates.iter().filter(|f| **f == Fate::New).count() as u64,
            changed_items: carried.changed_items,
            removed_items: carried.removed_items,
            shards: manifest.counts.shards,
            new_shards: manifest.counts.new_shards,
            reused_shards: carried.reused,
            repacked_shards: layout.repacked,
            tombstones: carried.tombstones,
            bytes: manifest.counts.bytes,
            new_bytes,
            already_published: false,
            card: self.store.dataset_dir().join(crate::card::FILE),
        };
        Ok(Signed {
            torrent: built.bytes,
            manifest,
            manifest_bytes,
            report,
        })
    }

    /// Moves everything into place, manifest last, then updates the dataset card.
    fn commit(
        self,
        signed: &Signed,
        written: &[NewShard],
        index: &BuiltIndex,
    ) -> Result<PublishReport, PublishError> {
        let (plan, store) = (self.plan, &self.store);
        let hidden = crate::card::hidden_items(
            &index.sqlite,
            signed
                .manifest
                .shards
                .iter()
                .map(|e| (e.id, e.items, store.shard_path(e.id))),
        )?;
        let card = crate::card::Release {
            version: plan.version.as_str(),
            shard_paths: signed
                .manifest
                .shards
                .iter()
                .map(|e| format!("shards/{}.tar", e.id))
                .collect(),
            features: index.features.clone(),
            hidden,
        };
        // A card seedpool cannot update stops the publish here, before anything changes.
        crate::card::existing(&store.dataset_dir())?;

        self.progress.stage("committing", 0, Unit::Items);
        let final_manifest = store.manifest_path(&plan.version);
        match std::fs::read(&final_manifest) {
            Ok(existing) if existing == signed.manifest_bytes => {
                // A publish killed after its manifest may not have written the card
                // or the feed.
                crate::card::write(&store.dataset_dir(), plan.dataset.as_str(), &card)?;
                self.add_to_feed(signed)?;
                return Ok(PublishReport {
                    already_published: true,
                    ..signed.report.clone()
                });
            }
            Ok(_) => {
                return Err(PublishError::AlreadyPublished {
                    version: plan.version.to_string(),
                    path: final_manifest,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("read", &final_manifest)(e)),
        }
        let temp_torrent = self.staging.path().join("release.torrent");
        let temp_manifest = self.staging.path().join("release.manifest.json");
        crate::files::write_synced(&temp_torrent, &signed.torrent)
            .map_err(io("write", &temp_torrent))?;
        crate::files::write_synced(&temp_manifest, &signed.manifest_bytes)
            .map_err(io("write", &temp_manifest))?;
        for (n, shard) in written.iter().enumerate() {
            let path = new_shard_path(self.staging.path(), n);
            store.install_shard(&path, shard.written.id, shard.written.size)?;
        }
        store.install(&index.zst, &store.dataset_dir().join(&index.rel))?;
        store.install(&temp_torrent, &store.torrent_path(&plan.version))?;
        store.install(&temp_manifest, &final_manifest)?;
        store.sync_dirs()?;
        // After the manifest: the card and the feed describe published releases only.
        crate::card::write(&store.dataset_dir(), plan.dataset.as_str(), &card)?;
        self.add_to_feed(signed)?;
        drop(self.staging);
        Ok(signed.report.clone())
    }

    fn add_to_feed(&self, signed: &Signed) -> Result<(), PublishError> {
        crate::manifest::feed::add_release(
            &self.plan.store,
            &signed.manifest,
            &signed.manifest_bytes,
            &self.key,
            self.plan.feed_valid_for,
        )?;
        Ok(())
    }
}

/// Where new shard `n` is written in the staging folder.
fn new_shard_path(staging: &Path, n: usize) -> PathBuf {
    staging.join(format!("new-{n}.tar"))
}

/// Writes a new shard's rows: the shard, then each item with members, record and tags.
/// One item's record as the index stores it: its text and its tags.
struct ParsedRecord {
    text: String,
    tags: Vec<(String, String)>,
}

/// The records captured while `written` was written, parsed, one entry per item of
/// `shard_items` (`None` for an item without a record).
fn parse_records(
    items: &Items,
    shard_items: &[u32],
    written: &WrittenShard,
) -> Result<Vec<Option<ParsedRecord>>, PublishError> {
    let mut members = written.members.iter();
    let mut out = Vec::with_capacity(shard_items.len());
    for &i in shard_items {
        let item = items.get(i as usize);
        let mut record = None;
        for m in item.members() {
            let Some(w) = members.next() else { break };
            if let Some(bytes) = &w.captured {
                let value = release::parse_record(bytes, &item.path_of(&m))?;
                record = Some(ParsedRecord {
                    text: String::from_utf8_lossy(bytes).into_owned(),
                    tags: release::tags_of(&value),
                });
            }
        }
        out.push(record);
    }
    Ok(out)
}

fn record_new_shard(
    writer: &IndexWriter,
    items: &Items,
    shard_items: &[u32],
    written: &WrittenShard,
    records: Vec<Option<ParsedRecord>>,
    volume: &str,
    version: &Version,
) -> Result<(), PublishError> {
    let id = written.id.to_hex();
    writer.shard(&ShardRow {
        id: id.clone(),
        size: written.size,
        items: shard_items.len() as u64,
        live_items: shard_items.len() as u64,
        volume: volume.to_string(),
        first_release: version.to_string(),
    })?;
    let mut members = written.members.iter();
    for (&i, record) in shard_items.iter().zip(records) {
        let item = items.get(i as usize);
        let mut rows = Vec::with_capacity(item.members().len());
        for m in item.members() {
            let w = members.next().ok_or_else(|| {
                PublishError::Shard(ShardError::Malformed {
                    path: PathBuf::from(&id),
                    offset: 0,
                    problem: "internal: fewer members written than planned".into(),
                })
            })?;
            rows.push(MemberRow {
                ext: m.ext.to_string(),
                offset: w.offset,
                length: w.length,
                blake3: w.blake3.to_hex().to_string(),
            });
        }
        let hash = index::item_hash(rows.iter().map(|r| (r.ext.as_str(), r.blake3.as_str())));
        let (record, tags) = record.map_or((None, Vec::new()), |r| (Some(r.text), r.tags));
        writer.item(&ItemRow {
            key: item.key().to_string(),
            shard: id.clone(),
            volume: item.volume().to_string(),
            hash,
            tags,
            record,
            members: rows,
        })?;
    }
    Ok(())
}

fn load_parent(
    path: &Path,
    plan: &PublishPlan,
    store: &Store,
    staging: &Path,
) -> Result<Parent, PublishError> {
    let (manifest, bytes) = Manifest::load(path)?;
    if manifest.dataset != plan.dataset.as_str() {
        return Err(PublishError::ParentDataset {
            path: path.to_path_buf(),
            expected: plan.dataset.to_string(),
            found: manifest.dataset.to_string(),
        });
    }
    if manifest.version == plan.version.as_str() {
        return Err(PublishError::SameVersion(manifest.version.to_string()));
    }
    let incomplete = |problems: Vec<String>| PublishError::ParentIncomplete {
        version: manifest.version.to_string(),
        store: plan.store.clone(),
        problems: problems.join("; "),
    };
    let version = manifest.version_name();
    let torrent_path = store.torrent_path(&version);
    let torrent_bytes = std::fs::read(&torrent_path).map_err(|e| {
        incomplete(vec![format!(
            "cannot read torrent `{}`: {e}",
            torrent_path.display()
        )])
    })?;
    let torrent = Metainfo::parse(&torrent_bytes)
        .map_err(|e| incomplete(vec![format!("torrent `{}`: {e}", torrent_path.display())]))?;
    if torrent.info_hash != manifest.torrent.info_hash {
        return Err(incomplete(vec![format!(
            "torrent `{}` has info hash `{}`, the manifest says `{}`",
            torrent_path.display(),
            torrent.info_hash,
            manifest.torrent.info_hash
        )]));
    }
    let problems = store.check_files(&manifest)?;
    if !problems.is_empty() {
        return Err(incomplete(
            problems.iter().map(ToString::to_string).collect(),
        ));
    }
    let index_zst = store.dataset_dir().join(&manifest.index.path);
    let hash = crate::files::hash_file(&index_zst).map_err(io("read", &index_zst))?;
    if hash.to_hex().as_str() != manifest.index.blake3 {
        return Err(incomplete(vec![format!(
            "index `{}` does not match its blake3 in the manifest",
            index_zst.display()
        )]));
    }
    let scratch = staging.join("parent-index.sqlite");
    let unpacked = index::Unpacked::open(&index_zst, &scratch, manifest.index.uncompressed_size)?;
    let reader = unpacked.reader()?;
    let rows = reader.shards()?;
    let first_release: HashMap<String, String> =
        rows.into_iter().map(|r| (r.id, r.first_release)).collect();
    let shards: Vec<ParentShard> = manifest
        .shards
        .iter()
        .zip(manifest.shard_ids())
        .map(|(e, id)| ParentShard {
            id,
            size: e.size,
            items: e.items,
            volume: e.volume.clone(),
            first_release: first_release
                .get(&e.id.to_hex())
                .cloned()
                .unwrap_or_else(|| manifest.version.to_string()),
        })
        .collect();
    // A manifest is read whole and bounded in bytes, so its shards count in 32 bits.
    let position: HashMap<String, u32> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.to_hex(), i as u32))
        .collect();
    Ok(Parent {
        manifest_blake3: blake3::hash(&bytes).to_hex().to_string(),
        manifest,
        torrent,
        shards,
        position,
        index: reader,
        index_path: index_zst,
    })
}

/// Release items classified at a time: their parents' rows (48 bytes each) are held
/// for one chunk, not for the whole release.
const CLASSIFY_CHUNK: usize = 1 << 16;

/// Compares each item with its parent version: extensions and sizes first, then
/// blake3 of the files. The parent index's items are walked in key order beside the
/// release's sorted items, a chunk at a time, so nothing of the parent is kept per
/// item (a map of a million parent items took 150 MB).
fn classify(
    items: &Items,
    parent: &Parent,
    progress: &dyn Progress,
) -> Result<Vec<Fate>, PublishError> {
    let total: u64 = items.iter().map(|i| i.bytes()).sum();
    progress.stage("comparing with parent", total, Unit::Bytes);
    let mut fates: Vec<Fate> = Vec::with_capacity(items.len());
    let mut olds: Vec<Option<ParentItem>> = Vec::with_capacity(CLASSIFY_CHUNK);
    let flush = |fates: &mut Vec<Fate>, olds: &mut Vec<Option<ParentItem>>| {
        let start = fates.len();
        let classified: Vec<Fate> = olds
            .par_iter()
            .enumerate()
            .map(|(i, old)| classify_one(items.get(start + i), old.as_ref(), progress))
            .collect::<Result<_, PublishError>>()?;
        fates.extend(classified);
        olds.clear();
        Ok::<(), PublishError>(())
    };
    let mut next = 0;
    let push = |old: Option<ParentItem>,
                next: &mut usize,
                fates: &mut Vec<Fate>,
                olds: &mut Vec<Option<ParentItem>>| {
        olds.push(old);
        *next += 1;
        if olds.len() == CLASSIFY_CHUNK {
            flush(fates, olds)?;
        }
        Ok::<(), PublishError>(())
    };
    let bad = |problem: String| IndexError::Format {
        path: parent.index_path.clone(),
        problem,
    };
    parent
        .index
        .for_each_item_shape(|key, shard, hash, members| -> Result<(), PublishError> {
            while next < items.len() && items.get(next).key() < key {
                push(None, &mut next, &mut fates, &mut olds)?;
            }
            if next == items.len() || items.get(next).key() != key {
                return Ok(());
            }
            let shard = *parent.position.get(shard).ok_or_else(|| {
                bad(format!(
                    "item `{key}` is in shard `{shard}`, which the manifest does not list"
                ))
            })?;
            let hash = blake3::Hash::from_hex(hash)
                .map_err(|_| bad(format!("item `{key}` has hash `{hash}`, not blake3 hex")))?;
            let old = ParentItem {
                shard,
                shape: shape_of(members.iter().map(|(ext, length)| (ext.as_str(), *length))),
                hash: *hash.as_bytes(),
            };
            push(Some(old), &mut next, &mut fates, &mut olds)
        })?;
    while next < items.len() {
        push(None, &mut next, &mut fates, &mut olds)?;
    }
    flush(&mut fates, &mut olds)?;
    Ok(fates)
}

/// One item against its parent version (`None`: the parent lacks it).
fn classify_one(
    item: Item<'_>,
    old: Option<&ParentItem>,
    progress: &dyn Progress,
) -> Result<Fate, PublishError> {
    let Some(old) = old else {
        progress.advance(item.bytes());
        return Ok(Fate::New);
    };
    let shape = shape_of(item.members().map(|m| (m.ext.as_str(), m.size)));
    if shape != old.shape {
        progress.advance(item.bytes());
        return Ok(Fate::Changed(old.shard));
    }
    let mut hashes = Vec::with_capacity(item.members().len());
    for n in item.members() {
        let path = item.path_of(&n);
        let hash = crate::files::hash_file(&path)
            .map_err(|source| ReleaseError::Unreadable { path, source })?;
        progress.advance(n.size);
        hashes.push(hash.to_hex());
    }
    let hash = index::item_hash(
        item.members()
            .zip(&hashes)
            .map(|(m, h)| (m.ext.as_str(), h.as_str())),
    );
    if hash != blake3::Hash::from_bytes(old.hash).to_hex().as_str() {
        return Ok(Fate::Changed(old.shard));
    }
    Ok(Fate::Unchanged(old.shard))
}

/// Pieces of a reused shard: full pieces from the parent torrent, the short last piece
/// read back from the store (its padded and unpadded hashes differ).
fn reused_pieces(
    parent: &Parent,
    shard: &ParentShard,
    store: &Store,
) -> Result<FilePieces, PublishError> {
    let rel = shard.id.relative_path();
    let torrent_path = store.torrent_path(&parent.manifest.version_name());
    let file = parent
        .torrent
        .file(&rel)
        .ok_or_else(|| PublishError::ParentIncomplete {
            version: parent.manifest.version.to_string(),
            store: store.root().to_path_buf(),
            problems: format!("torrent `{}` does not hold `{rel}`", torrent_path.display()),
        })?;
    let full = parent
        .torrent
        .full_piece_hashes(file)
        .filter(|_| file.length == shard.size)
        .ok_or_else(|| PublishError::ParentIncomplete {
            version: parent.manifest.version.to_string(),
            store: store.root().to_path_buf(),
            problems: format!(
                "`{rel}` is not piece-aligned in torrent `{}`",
                torrent_path.display()
            ),
        })?
        .to_vec();
    let pl = parent.torrent.piece_length;
    let tail_len = shard.size % pl;
    let tail = if tail_len == 0 {
        None
    } else {
        let path = store.shard_path(shard.id);
        let mut f = std::fs::File::open(&path).map_err(io("read", &path))?;
        f.seek(SeekFrom::Start(shard.size - tail_len))
            .map_err(io("read", &path))?;
        let mut buf = vec![0u8; tail_len as usize];
        f.read_exact(&mut buf).map_err(io("read", &path))?;
        let mut h = PieceHasher::new(pl);
        h.update(&buf);
        h.finish().tail
    };
    Ok(FilePieces { full, tail })
}

#[cfg(test)]
mod tests {
    use crate::testing::{record, Fixture};

    fn items(keys: &[(&'static str, i64)]) -> Vec<(&'static str, serde_json::Value)> {
        keys.iter()
            .map(|(k, score)| {
                let mut r = record("danbooru", 1, &[]);
                r["score"] = (*score).into();
                (*k, r)
            })
            .collect()
    }

    #[test]
    fn a_child_release_reuses_the_shards_it_did_not_change() {
        let f = Fixture::new();
        let first = f.publish("1", None, &items(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)]));
        assert_eq!((first.items, first.shards, first.new_shards), (4, 2, 2));
        // c and d share a shard: d changes, so the new shard holds d and e, and d's old
        // copy stays in its shard as a tombstone; both old shards are reused.
        let second = f.publish(
            "2",
            Some("1"),
            &items(&[("a", 1), ("b", 1), ("c", 1), ("d", 2), ("e", 1)]),
        );
        assert_eq!(second.parent.as_deref(), Some("1"));
        assert_eq!(
            (second.new_items, second.changed_items, second.removed_items),
            (1, 1, 0)
        );
        assert_eq!(
            (second.reused_shards, second.new_shards, second.tombstones),
            (2, 1, 1),
            "{second:?}"
        );
        let (m1, _) = crate::manifest::Manifest::load(&first.manifest).unwrap();
        let (m2, _) = crate::manifest::Manifest::load(&second.manifest).unwrap();
        let shared = m2
            .shards
            .iter()
            .filter(|s| m1.shards.iter().any(|p| p.id == s.id));
        assert_eq!(shared.count(), 2);
    }

    #[test]
    fn a_version_published_with_other_content_is_refused_and_kept() {
        let f = Fixture::new();
        let list = items(&[("a", 1), ("b", 2), ("c", 3)]);
        let first = f.publish("1", None, &list);
        let before = crate::testing::tree(&f.store);
        // The fixture's clock moved on, so this is other content under the same version.
        let e = f.try_publish("1", None, &list).unwrap_err();
        assert!(
            matches!(&e, super::PublishError::AlreadyPublished { path, .. } if *path == first.manifest),
            "{e}"
        );
        assert_eq!(crate::testing::tree(&f.store), before);
    }
}
