//! The built-in example: a small BOORU-CHARS-like dataset made by code (nothing is
//! downloaded). It draws originals and writes them with booru API dumps and a tag list
//! as a maintainer's downloads would look, curates them with ingest, publishes release 1
//! and an incremental release 2, verifies both, seeds them on loopback, syncs them into
//! a pool and queries it. Everything lands in one work folder.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;
use serde_json::json;

use image::ImageEncoder;
use md5::Digest;

use crate::detect::DetectorSpec;
use crate::files::{file_error, FileError};
use crate::ingest::{self, IngestPlan, IngestReport, Rules};
use crate::name::{DatasetName, Version};
use crate::progress::{Progress, Unit};
use crate::publish::{self, PublishPlan, PublishReport};
use crate::query::{self, Params, Table};
use crate::signing::PublisherKey;
use crate::swarm::seed::{self, SeedError, SeedPlan};
use crate::swarm::sync::{self, SyncError, SyncPlan, SyncReport};
use crate::swarm::{Event, Events, SwarmOptions};
use crate::verify::{self, VerifyPlan, VerifyReport};

pub const DATASET: &str = "booru-chars-demo";
/// The demo's publisher key is derived from this public phrase, so the demo signs the
/// same manifests on every machine (the ones in `manifests/`; see docs/guide.md). It
/// protects nothing: real releases are signed with a key from `seedpool key generate`.
const DEMO_KEY_PHRASE: &str = "seedpool demo publisher key - public, not secret";

pub fn demo_key() -> PublisherKey {
    PublisherKey::from_seed(*blake3::hash(DEMO_KEY_PHRASE.as_bytes()).as_bytes())
}
/// Fixed release times, so the demo's releases are the same bytes on every run.
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
    /// What ingest made of the downloads, for each release.
    pub ingested: Vec<IngestReport>,
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
    Ingest(#[from] crate::ingest::IngestError),
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
/// Original sizes, each just over BOORU-CHARS' quality filter (900x900, 1.2 megapixels):
/// 3x4, 1x1 and 2x3 pictures.
const SHAPES: [(u32, u32); 3] = [(960, 1280), (1100, 1100), (900, 1350)];

/// One generated booru post: the original file as the booru serves it, its file name in
/// the BOORU-CHARS convention, and its record in that booru's API dump format.
struct DemoPost {
    booru: &'static str,
    file_name: String,
    original: Vec<u8>,
    picture: image::RgbImage,
    api: serde_json::Value,
}

fn make_post(seed: u64) -> Result<DemoPost, DemoError> {
    let mut rng = Rng(seed);
    let booru = rng.pick(&BOORUS);
    let post_id = 100_000 + rng.below(7_000_000);
    let (w, h) = SHAPES[rng.below(SHAPES.len() as u64) as usize];
    let year = 2023 + rng.below(2);
    let (copyright, characters) = SERIES[rng.below(SERIES.len() as u64) as usize];
    let character = characters[rng.below(3) as usize];
    let artist = rng.pick(&ARTISTS);
    let mut general: Vec<&str> = (0..4).map(|_| rng.pick(&GENERAL)).collect();
    general.sort_unstable();
    general.dedup();
    let picture = draw(&mut rng, w, h);
    // Danbooru serves many originals as PNG; the others here are JPEG.
    let png = booru == "danbooru" && rng.below(2) == 0;
    let mut original = Vec::new();
    if png {
        image::codecs::png::PngEncoder::new(&mut original).write_image(
            picture.as_raw(),
            w,
            h,
            image::ExtendedColorType::Rgb8,
        )?;
    } else {
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut original, 92)
            .encode_image(&picture)?;
    }
    let md5 = format!("{:x}", md5::Md5::digest(&original));
    let score = rng.below(500);
    let favs = rng.below(900);
    let (month, day) = (1 + rng.below(12), 1 + rng.below(28));
    let rating = ["g", "s"][rng.below(2) as usize];
    let flat = || {
        let mut all = vec![artist, copyright, character];
        all.extend(&general);
        all.push("highres");
        all.join(" ")
    };
    // 12:00 UTC on the day, as each API writes a time.
    let unix = days_from_civil(year as i64, month as i64, day as i64) * 86_400 + 43_200;
    let api = match booru {
        "danbooru" => json!({
            "id": post_id, "md5": md5, "rating": rating, "score": score, "fav_count": favs,
            "created_at": format!("{year}-{month:02}-{day:02}T12:00:00.000+00:00"),
            "image_width": w, "image_height": h, "file_size": original.len(),
            "file_ext": if png { "png" } else { "jpg" },
            "tag_string_artist": artist, "tag_string_copyright": copyright,
            "tag_string_character": character, "tag_string_general": general.join(" "),
            "tag_string_meta": "highres", "tag_string": flat(),
        }),
        "safebooru" => json!({
            "id": post_id, "hash": md5, "directory": rng.below(5000), "image": format!("{md5}.jpg"),
            "change": unix, "rating": if rating == "g" { "general" } else { "sensitive" },
            "score": score, "width": w, "height": h, "tags": flat(),
        }),
        "gelbooru" => json!({
            "id": post_id, "md5": md5, "score": score, "width": w, "height": h,
            "rating": if rating == "g" { "general" } else { "sensitive" },
            "created_at": format!("{} {} {day:02} 12:00:00 +0000 {year}",
                ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][((unix / 86_400 + 3) % 7) as usize],
                ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][month as usize - 1]),
            "tags": flat(),
        }),
        // Moebooru (yande.re, konachan).
        _ => json!({
            "id": post_id, "md5": md5, "tags": flat(), "created_at": unix, "author": "uploader",
            "score": score, "rating": rating.replace('g', "s"), "file_size": original.len(),
            "width": w, "height": h,
        }),
    };
    let ext = if png { "png" } else { "jpg" };
    Ok(DemoPost {
        booru,
        file_name: format!("{booru} - {post_id} - {copyright} ~ {character} ({artist}).{ext}"),
        original,
        picture,
        api,
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The demo's face detector: an LBP cascade in OpenCV's format, written for the faces
/// [`draw`] paints (a skin disc with two dark eyes under a ring of hair), so the demo
/// runs the real cascade code with nothing downloaded. Its 36 px window holds a face
/// of radius 14.4 centred at (18, 18), hair to radius 18. Each stage is one stump
/// reading one LBP code (bit 7 the top-left block against the centre, clockwise to bit
/// 0 the left one; a bit is set when that block is at least as bright):
/// - 1: across the eyes, the blocks left and right of the gap between them are darker;
/// - 2, 3: each eye is a block darker than at least 7 of the 8 around it;
/// - 4, 5: each eye is darker than the cheek below it;
/// - 6: above the forehead, the top three blocks (hair) are darker;
/// - 7, 8: beside each cheek, the three outer blocks (hair) are darker.
///
/// Strict "darker" tests fail on flat colour, and the eye tests fail on the hill's
/// stripes, which are the same all the way down.
pub fn demo_cascade() -> String {
    type Accepts = fn(u8) -> bool;
    let stages: [([u32; 4], Accepts); 8] = [
        ([10, 11, 5, 4], |c| c & 0b0001_0001 == 0),
        ([7, 11, 4, 4], |c| c.count_ones() >= 7),
        ([18, 11, 4, 4], |c| c.count_ones() >= 7),
        ([7, 15, 4, 4], |c| c & 0b0100_0000 == 0),
        ([18, 15, 4, 4], |c| c & 0b0100_0000 == 0),
        ([9, 1, 6, 3], |c| c & 0b1110_0000 == 0),
        ([1, 11, 3, 4], |c| c & 0b1000_0011 == 0),
        ([26, 11, 3, 4], |c| c & 0b0011_1000 == 0),
    ];
    let mut xml = String::from(
        "<?xml version=\"1.0\"?>\n<opencv_storage>\n<cascade>\n  <stageType>BOOST</stageType>\n  \
         <featureType>LBP</featureType>\n  <height>36</height>\n  <width>36</width>\n  \
         <featureParams><maxCatCount>256</maxCatCount><featSize>1</featSize></featureParams>\n  ",
    );
    xml += &format!("<stageNum>{}</stageNum>\n  <stages>\n", stages.len());
    for (i, (_, accepts)) in stages.iter().enumerate() {
        let mut subset = [0u32; 8];
        for code in 0..=255u8 {
            if accepts(code) {
                subset[usize::from(code >> 5)] |= 1 << (code & 31);
            }
        }
        let words: Vec<String> = subset.iter().map(|w| (*w as i32).to_string()).collect();
        xml += &format!(
            "    <_><maxWeakCount>1</maxWeakCount><stageThreshold>0</stageThreshold>\
             <weakClassifiers><_><internalNodes>0 -1 {i} {}</internalNodes>\
             <leafValues>1 -1</leafValues></_></weakClassifiers></_>\n",
            words.join(" ")
        );
    }
    xml += "  </stages>\n  <features>\n";
    for ([x, y, w, h], _) in &stages {
        xml += &format!("    <_><rect>{x} {y} {w} {h}</rect></_>\n");
    }
    xml += "  </features>\n</cascade>\n</opencv_storage>\n";
    xml
}

/// A sky, a hill, a sun and a face, each placed and sized at random: real pixels with
/// structure, and layouts far enough apart that no two posts are near duplicates.
fn draw(rng: &mut Rng, w: u32, h: u32) -> image::RgbImage {
    let f = |rng: &mut Rng, lo: f32, hi: f32| lo + (hi - lo) * rng.below(1000) as f32 / 1000.0;
    let sky = [f(rng, 0.0, 220.0), f(rng, 0.0, 220.0), f(rng, 60.0, 255.0)];
    let hill = f(rng, 0.55, 0.9);
    let (sx, sy, sr) = (f(rng, 0.0, 1.0), f(rng, 0.0, 0.4), f(rng, 0.05, 0.15));
    let (cx, cy, r) = (
        w as f32 * f(rng, 0.25, 0.75),
        h as f32 * f(rng, 0.25, 0.55),
        w.min(h) as f32 * f(rng, 0.12, 0.3),
    );
    let band = f(rng, -1.0, 1.0);
    let (wf, hf) = (w as f32, h as f32);
    image::RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let t = fy / hf;
        let mut px = [
            sky[0] * (1.0 - t) + 40.0 * t,
            sky[1] * (1.0 - t) + 90.0 * t,
            sky[2] * (1.0 - t) + 55.0 * t,
        ];
        if ((fx / wf - sx).powi(2) + (t - sy).powi(2)).sqrt() < sr {
            px = [255.0, 230.0, 120.0];
        }
        if (fx / wf + band * t - 0.5).abs() < 0.06 {
            px = px.map(|v| v * 0.6);
        }
        if t > hill + (fx / 37.0).sin() * 0.01 {
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
            px = [90.0, 40.0 + sky[0] / 4.0, 30.0];
        }
        image::Rgb(px.map(|v| v.clamp(0.0, 255.0) as u8))
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), DemoError> {
    std::fs::write(path, bytes).map_err(io("write", path))
}

/// The originals folder as a maintainer's downloads leave it (one folder per booru), and
/// one API dump per booru beside it. Besides the posts, the downloads hold a cross-post
/// of the same file, a re-encoded copy, a picture too small to keep and a download cut
/// short, made from the four `extras`, so that every curation rule has something to do.
fn write_downloads(
    originals: &Path,
    meta: &Path,
    posts: &[&DemoPost],
    extras: [&DemoPost; 4],
) -> Result<(), DemoError> {
    fresh_dir(originals)?;
    fresh_dir(meta)?;
    let mut dumps: std::collections::BTreeMap<&str, Vec<&serde_json::Value>> =
        BOORUS.iter().map(|b| (*b, Vec::new())).collect();
    for b in BOORUS {
        let dir = originals.join(b);
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    }
    for p in posts {
        write_file(&originals.join(p.booru).join(&p.file_name), &p.original)?;
        dumps.get_mut(p.booru).expect("known booru").push(&p.api);
    }
    for (booru, list) in dumps {
        // Gelbooru's DAPI wraps its posts; the others serve a plain list.
        let body = if booru == "gelbooru" {
            json!({"@attributes": {"limit": 100, "offset": 0, "count": list.len()}, "post": list})
        } else {
            json!(list)
        };
        write_file(
            &meta.join(format!("{booru}.json")),
            serde_json::to_string_pretty(&body)
                .expect("json")
                .as_bytes(),
        )?;
    }
    let mut tags = String::from("TAG_CAT;TAG_ID;TAG_NAME;TAG_CNT;FR_ID;MAL_ID;MAL_NAME;MAL_CNT\n");
    let mut id = 0;
    let mut line = |cat: u8, name: &str| {
        id += 1;
        tags.push_str(&format!("{cat};{id};{name};{};;;;\n", 1000 - id));
    };
    ARTISTS.iter().for_each(|a| line(1, a));
    for (copyright, characters) in SERIES {
        line(3, copyright);
        characters.iter().for_each(|c| line(4, c));
    }
    GENERAL.iter().for_each(|g| line(0, g));
    line(5, "highres");
    write_file(&meta.join("tags.csv"), tags.as_bytes())?;

    {
        let [first, second, third, fourth] = extras;
        let dir = originals.join("sankaku");
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        // The same file cross-posted.
        write_file(
            &dir.join(format!(
                "sankaku - 1 - {}",
                first.file_name.splitn(3, " - ").nth(2).unwrap_or("x.jpg")
            )),
            &first.original,
        )?;
        // The same picture saved again at a lower quality: a near duplicate that loses
        // to the larger file.
        let mut again = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut again, 60)
            .encode_image(&second.picture)?;
        write_file(&dir.join("sankaku - 2 - resaved.jpg"), &again)?;
        // Too small for the quality filter.
        let mut small = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut small, 90)
            .encode_image(&image::imageops::thumbnail(&third.picture, 600, 800))?;
        write_file(&dir.join("sankaku - 3 - small.jpg"), &small)?;
        // A download that stopped half-way.
        let cut = &fourth.original[..fourth.original.len() / 2];
        write_file(&dir.join("sankaku - 4 - cut short.jpg"), cut)?;
    }
    Ok(())
}

fn fresh_dir(path: &Path) -> Result<(), DemoError> {
    if path.exists() {
        std::fs::remove_dir_all(path).map_err(io("clear", path))?;
    }
    std::fs::create_dir_all(path).map_err(io("create", path))
}

/// Runs ingest over the downloads into `release`, with every dump and the tag list.
fn ingest(
    originals: &Path,
    meta: &Path,
    release: &Path,
    cascade: &Path,
    progress: &dyn Progress,
) -> Result<IngestReport, DemoError> {
    let rules = Rules::default();
    let dumps = BOORUS
        .iter()
        .map(|b| format!("{b}:{}", meta.join(format!("{b}.json")).display()))
        .collect();
    Ok(ingest::run(
        &IngestPlan {
            inputs: vec![originals.to_path_buf()],
            out: release.to_path_buf(),
            meta: dumps,
            taglist: Some(meta.join("tags.csv")),
            tagger: None,
            embedder: None,
            detector: Some(DetectorSpec::Cascade {
                path: cascade.to_path_buf(),
                scale_factor: rules.faces.scale_factor,
                max_size: 0,
            }),
            rules,
        },
        progress,
    )?)
}

pub fn run(plan: &DemoPlan, progress: &dyn Progress) -> Result<DemoReport, DemoError> {
    let work = &plan.workdir;
    std::fs::create_dir_all(work).map_err(io("create", work))?;
    let key_path = work.join("demo-publisher.key");
    demo_key().save(&key_path, true)?;
    let store = work.join("store");
    fresh_dir(&store)?;

    progress.stage(
        "drawing example originals",
        (plan.items + plan.items / 4 + 1) as u64,
        Unit::Items,
    );
    let count2 = plan.items / 4 + 1;
    let mut all: Vec<DemoPost> = (0..(plan.items + count2) as u64)
        .into_par_iter()
        .map(|i| {
            let post = make_post(0x5eed_0000 + i);
            progress.advance(1);
            post
        })
        .collect::<Result<_, _>>()?;
    let originals = work.join("originals");
    let meta = work.join("meta");
    let release = work.join("release");
    fresh_dir(&release)?;
    let cascade = work.join("demo-faces.xml");
    write_file(&cascade, demo_cascade().as_bytes())?;

    // Release 1: the first downloads, curated by ingest.
    let first: Vec<&DemoPost> = all[..plan.items].iter().collect();
    let extras = [&all[0], &all[1], &all[2], &all[3]];
    write_downloads(&originals, &meta, &first, extras)?;
    let mut ingested = vec![ingest(&originals, &meta, &release, &cascade, progress)?];
    let dataset = DatasetName::parse(DATASET).expect("valid demo name");
    let first_release = publish_version(
        plan, &release, &dataset, 1, None, &store, &key_path, progress,
    )?;

    // Release 2: two posts deleted upstream, one score corrected in its dump, new posts
    // downloaded; ingest runs again into the same folder, reusing its analyses.
    all[5].api["score"] = json!(9999);
    let second: Vec<&DemoPost> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 11)
        .map(|(_, p)| p)
        .collect();
    let extras = [&all[0], &all[1], &all[2], &all[3]];
    write_downloads(&originals, &meta, &second, extras)?;
    ingested.push(ingest(&originals, &meta, &release, &cascade, progress)?);
    let parent = first_release.manifest.clone();
    let releases = vec![
        first_release,
        publish_version(
            plan,
            &release,
            &dataset,
            2,
            Some(parent),
            &store,
            &key_path,
            progress,
        )?,
    ];
    let mut verified = Vec::new();
    for report in &releases {
        let check = verify::run(
            &VerifyPlan {
                manifest: report.manifest.clone(),
                store: store.clone(),
                public_key: None,
                index_limit: Default::default(),
                timings: false,
            },
            progress,
        )?;
        if !check.ok() {
            return Err(DemoError::Unverified(report.version.clone()));
        }
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
    let opened = crate::pool::Pool::open_read_only(&pool).map_err(query::QueryError::from)?;
    for (name, limit) in [("characters-by-year", 3), ("top-items", 1)] {
        let params = Params {
            limit: Some(limit),
            ..Params::default()
        };
        let table = query::parades::run(&opened, name, &params)?;
        parades.push((name.to_string(), table));
    }
    Ok(DemoReport {
        workdir: work.clone(),
        key: key_path,
        store,
        pool,
        releases,
        ingested,
        verified,
        syncs,
        parades,
    })
}

#[allow(clippy::too_many_arguments)]
fn publish_version(
    plan: &DemoPlan,
    release: &Path,
    dataset: &DatasetName,
    n: u64,
    parent: Option<PathBuf>,
    store: &Path,
    key: &Path,
    progress: &dyn Progress,
) -> Result<PublishReport, DemoError> {
    Ok(publish::run(
        &PublishPlan {
            release_dir: release.to_path_buf(),
            dataset: dataset.clone(),
            version: Version::parse(&n.to_string()).expect("valid version"),
            store: store.to_path_buf(),
            parent,
            shard_items: plan.shard_items,
            repack_above: publish::DEFAULT_REPACK_ABOVE,
            trackers: Vec::new(),
            web_seeds: Vec::new(),
            key: key.to_path_buf(),
            created: CREATED[(n - 1) as usize],
            piece_length: None,
            direct_io: true,
            feed_valid_for: crate::manifest::feed::DEFAULT_VALID_FOR,
            timings: false,
        },
        progress,
    )?)
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
        // The demo stops its seeder itself; Ctrl-C ends the whole demo.
        signals: false,
        http: None,
        dht_pointers: None,
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
                    index_limit: Default::default(),
                    tuning: Default::default(),
                    signals: false,
                    web_seeds: Default::default(),
                    manifest_blake3: None,
                    manifest_key: None,
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
