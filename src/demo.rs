//! The built-in example: a small BOORU-CHARS-like dataset made by code (real JPEG
//! images and booru-style JSON records, nothing downloaded), published as release 1 and
//! an incremental release 2, then verified. Everything lands in one work folder.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;
use serde_json::json;

use crate::name::{DatasetName, Version};
use crate::progress::{Progress, Unit};
use crate::publish::{self, PublishPlan, PublishReport};
use crate::query::{self, Params, QueryPlan, Table, What};
use crate::signing::PublisherKey;
use crate::store::{file_error, FileError};
use crate::swarm::seed::{self, SeedError, SeedPlan};
use crate::swarm::sync::{self, SyncError, SyncPlan, SyncReport};
use crate::swarm::{Event, Events, SwarmOptions};
use crate::verify::{self, VerifyPlan, VerifyReport};

pub const DATASET: &str = "booru-chars-demo";
/// The demo's publisher key is derived from this public phrase, so the demo signs the
/// same manifests on every machine (the ones in `manifests/`). It protects nothing:
/// real releases are signed with a key from `seedpool key generate`.
const DEMO_KEY_PHRASE: &str = "seedpool demo publisher key - public, not secret";

pub fn demo_key() -> PublisherKey {
    PublisherKey::from_seed(*blake3::hash(DEMO_KEY_PHRASE.as_bytes()).as_bytes())
}
/// Fixed release times, so the demo's releases are the same bytes on every machine.
const CREATED: [u64; 2] = [1_767_225_600, 1_769_904_000];

#[derive(Clone, Debug)]
pub struct DemoPlan {
    pub workdir: PathBuf,
    /// Items of release 1; release 2 removes two, changes one and adds a quarter more.
    pub items: usize,
    pub shard_items: usize,
}

#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub workdir: PathBuf,
    pub key: PathBuf,
    pub store: PathBuf,
    pub pool: PathBuf,
    pub releases: Vec<PublishReport>,
    pub verified: Vec<VerifyReport>,
    /// Both releases synced over loopback BitTorrent from an in-process seeder.
    pub syncs: Vec<SyncReport>,
    /// Two hit-parades of the merged pool: (name, columns, rows).
    #[serde(skip)]
    pub parades: Vec<(String, Table)>,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("failed to encode a demo image")]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    Key(#[from] crate::signing::KeyError),
    #[error(transparent)]
    Publish(#[from] crate::publish::PublishError),
    #[error(transparent)]
    Verify(#[from] crate::verify::VerifyError),
    #[error(transparent)]
    Seed(#[from] SeedError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error("demo seeder: {0}")]
    Seeder(String),
    #[error(transparent)]
    Query(#[from] crate::query::QueryError),
    #[error("demo release `{0}` failed verification")]
    Unverified(String),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DemoError {
    let to_file_error = file_error(action, path);
    move |source| DemoError::File(to_file_error(source))
}

/// SplitMix64: a tiny deterministic generator, so the demo is the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const BOORUS: [&str; 5] = ["safebooru", "danbooru", "gelbooru", "yande.re", "konachan"];
const ARTISTS: [&str; 6] = [
    "kantoku",
    "ask_(askzy)",
    "tony_taka",
    "misaka_12003-gou",
    "fuzichoco",
    "hiten_(hitenkei)",
];
const SERIES: [(&str, [&str; 3]); 4] = [
    (
        "vocaloid",
        ["hatsune_miku", "kagamine_rin", "megurine_luka"],
    ),
    (
        "touhou",
        ["hakurei_reimu", "kirisame_marisa", "izayoi_sakuya"],
    ),
    ("fate_(series)", ["saber", "tohsaka_rin", "matou_sakura"]),
    (
        "original",
        ["original_girl", "original_boy", "original_cat"],
    ),
];
const GENERAL: [&str; 10] = [
    "1girl",
    "solo",
    "long_hair",
    "smile",
    "looking_at_viewer",
    "blue_eyes",
    "short_hair",
    "dress",
    "outdoors",
    "portrait",
];
/// (aspect volume, width, height): sizes a thumbnail pipeline would see.
const SHAPES: [(&str, u32, u32); 3] = [("3x4", 480, 640), ("1x1", 512, 512), ("2x3", 428, 640)];

/// One generated item: a JPEG with a drawn "character" and its booru record.
struct DemoItem {
    key: String,
    jpeg: Vec<u8>,
    record: serde_json::Value,
}

fn make_item(seed: u64) -> Result<DemoItem, DemoError> {
    let mut rng = Rng(seed);
    let booru = rng.pick(&BOORUS);
    let post_id = 100_000 + rng.below(7_000_000);
    let (aspect, w, h) = SHAPES[rng.below(SHAPES.len() as u64) as usize];
    let year = 2023 + rng.below(2);
    let (copyright, characters) = SERIES[rng.below(SERIES.len() as u64) as usize];
    let character = characters[rng.below(3) as usize];
    let artist = rng.pick(&ARTISTS);
    let mut general: Vec<&str> = (0..4).map(|_| rng.pick(&GENERAL)).collect();
    general.sort_unstable();
    general.dedup();

    // A gradient sky, a hill and a face: real pixels with structure, cheap to draw.
    let hue = [
        rng.below(200) as f32,
        rng.below(200) as f32,
        rng.below(200) as f32,
    ];
    let (cx, cy, r) = (
        w as f32 * 0.5,
        h as f32 * 0.42,
        w.min(h) as f32 * (0.18 + rng.below(10) as f32 / 100.0),
    );
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let t = fy / h as f32;
        let mut px = [
            hue[0] * (1.0 - t) + 40.0 * t,
            hue[1] * (1.0 - t) + 90.0 * t,
            hue[2] + 55.0 * t,
        ];
        if fy > h as f32 * 0.75 + (fx / 37.0).sin() * 12.0 {
            px = [60.0, 120.0 + (fx % 17.0), 50.0];
        }
        let d = ((fx - cx).powi(2) + (fy - cy).powi(2)).sqrt();
        if d < r {
            px = [250.0, 220.0, 200.0];
            let eye =
                |ex: f32| ((fx - ex).powi(2) + (fy - (cy - r * 0.1)).powi(2)).sqrt() < r * 0.14;
            if eye(cx - r * 0.38) || eye(cx + r * 0.38) {
                px = [30.0, 60.0, 160.0];
            }
        } else if d < r * 1.25 && fy < cy + r * 0.3 {
            px = [90.0, 40.0 + hue[0] / 4.0, 30.0];
        }
        image::Rgb(px.map(|v| v.clamp(0.0, 255.0) as u8))
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 88).encode_image(&img)?;
    let key = format!("{}-{post_id}", booru.replace('.', ""));
    let rating = ["g", "s"][rng.below(2) as usize];
    let record = json!({
        "booru": booru,
        "post_id": post_id,
        "md5": format!("{:x}", md5_like(&jpeg)),
        "rating": rating,
        "score": rng.below(500),
        "favs": rng.below(900),
        "posted": format!("{year}-{:02}-{:02}T12:00:00Z", 1 + rng.below(12), 1 + rng.below(28)),
        "width": w,
        "height": h,
        "bytes": jpeg.len(),
        "tags": {
            "artist": [artist],
            "copyright": [copyright],
            "character": [character],
            "general": general,
            "meta": ["highres"],
        },
        "volume": format!("{aspect}-{year}"),
    });
    Ok(DemoItem { key, jpeg, record })
}

/// A stand-in for the original's md5 (the demo has no originals): the first 16 bytes of
/// the image's blake3, printed as hex.
fn md5_like(bytes: &[u8]) -> u128 {
    let h = blake3::hash(bytes);
    u128::from_be_bytes(h.as_bytes()[..16].try_into().expect("16 bytes"))
}

fn write_item(dir: &Path, item: &DemoItem) -> Result<(), DemoError> {
    let jpg = dir.join(format!("{}.jpg", item.key));
    std::fs::write(&jpg, &item.jpeg).map_err(io("write", &jpg))?;
    let json_path = dir.join(format!("{}.json", item.key));
    let text = serde_json::to_string_pretty(&item.record).expect("json");
    std::fs::write(&json_path, text).map_err(io("write", &json_path))
}

fn fresh_dir(path: &Path) -> Result<(), DemoError> {
    if path.exists() {
        std::fs::remove_dir_all(path).map_err(io("clear", path))?;
    }
    std::fs::create_dir_all(path).map_err(io("create", path))
}

pub fn run(plan: &DemoPlan, progress: &dyn Progress) -> Result<DemoReport, DemoError> {
    let work = &plan.workdir;
    std::fs::create_dir_all(work).map_err(io("create", work))?;
    let key_path = work.join("demo-publisher.key");
    demo_key().save(&key_path, true)?;
    let store = work.join("store");
    fresh_dir(&store)?;

    progress.stage(
        "drawing example images",
        (plan.items + plan.items / 4 + 1) as u64,
        Unit::Items,
    );
    let count2 = plan.items / 4 + 1;
    let all: Vec<DemoItem> = (0..(plan.items + count2) as u64)
        .into_par_iter()
        .map(|i| {
            let item = make_item(0x5eed_0000 + i);
            progress.advance(1);
            item
        })
        .collect::<Result<_, _>>()?;
    let (first, added) = all.split_at(plan.items);

    let r1 = work.join("release-1");
    fresh_dir(&r1)?;
    for item in first {
        write_item(&r1, item)?;
    }
    // Release 2: two items withdrawn, one record corrected, new items added.
    let r2 = work.join("release-2");
    fresh_dir(&r2)?;
    for (i, item) in first.iter().enumerate() {
        if i == 3 || i == 11 {
            continue;
        }
        if i == 5 {
            let mut changed = DemoItem {
                key: item.key.clone(),
                jpeg: item.jpeg.clone(),
                record: item.record.clone(),
            };
            changed.record["score"] = json!(9999);
            write_item(&r2, &changed)?;
        } else {
            write_item(&r2, item)?;
        }
    }
    for item in added {
        write_item(&r2, item)?;
    }

    let dataset = DatasetName::parse(DATASET).expect("valid demo name");
    let mut releases = Vec::new();
    let mut verified = Vec::new();
    let mut parent: Option<PathBuf> = None;
    for (n, dir) in [(1u64, &r1), (2, &r2)] {
        let version = Version::parse(&n.to_string()).expect("valid version");
        let report = publish::run(
            &PublishPlan {
                release_dir: dir.clone(),
                dataset: dataset.clone(),
                version,
                store: store.clone(),
                parent: parent.clone(),
                shard_items: plan.shard_items,
                repack_above: publish::DEFAULT_REPACK_ABOVE,
                trackers: Vec::new(),
                web_seeds: Vec::new(),
                key: key_path.clone(),
                created: CREATED[(n - 1) as usize],
                piece_length: None,
            },
            progress,
        )?;
        let check = verify::run(
            &VerifyPlan {
                manifest: report.manifest.clone(),
                store: store.clone(),
                public_key: None,
            },
            progress,
        )?;
        if !check.ok() {
            return Err(DemoError::Unverified(report.version.clone()));
        }
        parent = Some(report.manifest.clone());
        releases.push(report);
        verified.push(check);
    }
    // A downloader's view: both releases synced from a seeder on loopback into a pool,
    // release 1 then release 2, then two hit-parades.
    let pool = work.join("pool");
    if pool.exists() {
        std::fs::remove_dir_all(&pool).map_err(io("clear", &pool))?;
    }
    progress.stage("seeding and syncing on loopback", 0, Unit::Items);
    let manifests: Vec<PathBuf> = releases.iter().map(|r| r.manifest.clone()).collect();
    let syncs = seed_and_sync(&store, &manifests, &pool)?;
    let mut parades = Vec::new();
    for (name, limit) in [("characters-by-year", 3), ("top-items", 1)] {
        let table = query::run(&QueryPlan {
            pool: pool.clone(),
            what: What::Named(name.into()),
            params: Params {
                limit: Some(limit),
                ..Params::default()
            },
        })?;
        parades.push((name.to_string(), table));
    }
    Ok(DemoReport {
        workdir: work.clone(),
        key: key_path,
        store,
        pool,
        releases,
        verified,
        syncs,
        parades,
    })
}

/// Passes the seeder's address out of its thread once it is ready.
struct ReadySignal(std::sync::mpsc::Sender<String>);

impl Events for ReadySignal {
    fn emit(&self, event: Event) {
        if let Event::Ready { addr, .. } = event {
            let _ = self.0.send(addr);
        }
    }
}

/// Seeds the releases from `store` in a thread and syncs them one by one into `pool`.
fn seed_and_sync(
    store: &Path,
    manifests: &[PathBuf],
    pool: &Path,
) -> Result<Vec<SyncReport>, DemoError> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let plan = SeedPlan {
        manifests: manifests.to_vec(),
        store: store.to_path_buf(),
        swarm: SwarmOptions::loopback(),
        report_every: std::time::Duration::from_secs(3600),
        stop: Some(stop.clone()),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let seeder = std::thread::spawn(move || seed::run(&plan, &ReadySignal(tx)));
    let result = (|| -> Result<Vec<SyncReport>, DemoError> {
        let Ok(addr) = rx.recv_timeout(std::time::Duration::from_secs(60)) else {
            return Ok(Vec::new());
        };
        let peer = addr
            .parse()
            .map_err(|_| DemoError::Seeder(format!("bad address {addr}")))?;
        let mut syncs = Vec::new();
        for m in manifests {
            syncs.push(sync::run(
                &SyncPlan {
                    manifest: m.to_string_lossy().into_owned(),
                    pool: pool.to_path_buf(),
                    peers: vec![peer],
                    selection: None,
                    trust_key: false,
                    allow_older: false,
                    phash_distance: 3,
                    swarm: SwarmOptions::loopback(),
                    stall_timeout: std::time::Duration::from_secs(60),
                },
                &crate::swarm::Quiet,
            )?);
        }
        Ok(syncs)
    })();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seeded = seeder
        .join()
        .map_err(|_| DemoError::Seeder("the seeder thread panicked".into()))?;
    seeded?;
    let syncs = result?;
    if syncs.is_empty() {
        return Err(DemoError::Seeder("the seeder never became ready".into()));
    }
    Ok(syncs)
}
