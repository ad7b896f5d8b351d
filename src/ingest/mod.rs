//! `seedpool ingest`: originals in, a curated RELEASE_DIR out (docs/ingest.md).
//!
//! Three passes. (1) Every original is read, hashed (md5) and decoded once, in
//! parallel; the thumbnail, the sample, the perceptual hash and the statistics come
//! from that decode and are kept under `RELEASE_DIR/.seedpool/ingest/`, keyed by md5
//! and the output settings, which is what makes a re-run skip work already done.
//! (2) Records are assembled from metadata dumps, then the file name, then the image.
//! (3) Curation: the quality filter, then exact and near duplicates (the best copy
//! wins), then the aspect volume. Kept items are linked into RELEASE_DIR as
//! `<key>.thumb.jpg`, `<key>.sample.jpg` and `<key>.json`, and every input gets a line in
//! `RELEASE_DIR/ingest-report.tsv`. Bad input never stops the run: it lands in the report.

pub mod meta;
pub mod names;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::curate::duplicates::{parse_phash, Groups};
use crate::curate::quality;
use crate::detect::embedder::{Embedder, EmbedderSpec};
use crate::detect::faces::{FaceDetector, FaceRules, Faces};
use crate::detect::tagger::{Tagger, TaggerSpec};
use crate::detect::{DetectorError, DetectorSpec};
use crate::files::{file_error, FileError};
use crate::imaging::{self, DecodeLimits, Sizes, Stats};
use crate::progress::{Progress, Unit};
use meta::{MetaIndex, Post, CATEGORIES};

/// Extensions read as originals (case does not matter).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif"];

/// An aspect volume: width / height within `tolerance` (relative) of `ratio`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Aspect {
    pub name: String,
    pub ratio: f64,
    pub tolerance: f64,
}

/// Curation rules; defaults are BOORU-CHARS'. A TOML file with any of these fields
/// overrides them (`--config`), and flags override the file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    pub min_width: u32,
    pub min_height: u32,
    pub min_megapixels: f64,
    /// Near duplicates: largest Hamming distance between perceptual hashes (0-7).
    pub phash_distance: u32,
    /// Which booru's copy wins a tie, best first.
    pub source_priority: Vec<String>,
    /// Checked in order; the first that fits names the volume, else `other`.
    pub aspects: Vec<Aspect>,
    pub sizes: Sizes,
    pub limits: DecodeLimits,
    /// Face search, when a detector is given (`--cascade` or `--model`).
    pub faces: FaceRules,
    /// The quality score's weights and reference points.
    pub quality: quality::QualityRules,
}

impl Default for Rules {
    fn default() -> Self {
        let aspect = |name: &str, ratio: f64, tolerance: f64| Aspect {
            name: name.into(),
            ratio,
            tolerance,
        };
        Self {
            min_width: 900,
            min_height: 900,
            min_megapixels: 1.2,
            phash_distance: 4,
            source_priority: crate::curate::BOORUS
                .iter()
                .map(|b| b.to_string())
                .collect(),
            aspects: vec![
                aspect("7x10", 0.7, 0.04),
                aspect("3x4", 0.75, 0.10),
                aspect("1x1", 1.0, 0.20),
                aspect("3x2", 1.5, 0.40),
                aspect("2x3", 2.0 / 3.0, 0.40),
            ],
            sizes: Sizes::default(),
            limits: DecodeLimits::default(),
            faces: FaceRules::default(),
            quality: quality::QualityRules::default(),
        }
    }
}

impl Rules {
    pub fn from_toml(path: &Path) -> Result<Self, IngestError> {
        let text = std::fs::read_to_string(path).map_err(file_error("read", path))?;
        let rules: Self = toml::from_str(&text).map_err(|e| IngestError::Config {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
        let max = crate::curate::MAX_PHASH_DISTANCE;
        if rules.phash_distance > max {
            return Err(IngestError::Config {
                path: path.to_path_buf(),
                problem: format!(
                    "`phash_distance` is {}, more than {max}: past that, unrelated \
                     pictures are taken for near duplicates",
                    rules.phash_distance
                ),
            });
        }
        rules
            .quality
            .check()
            .map_err(|problem| IngestError::Config {
                path: path.to_path_buf(),
                problem: problem.to_string(),
            })?;
        Ok(rules)
    }

    fn aspect(&self, w: u32, h: u32) -> &str {
        let r = f64::from(w) / f64::from(h.max(1));
        self.aspects
            .iter()
            .find(|a| (r / a.ratio - 1.0).abs() <= a.tolerance)
            .map_or("other", |a| a.name.as_str())
    }

    fn square_range(&self) -> (f64, f64) {
        self.aspects
            .iter()
            .find(|a| a.name == "1x1")
            .map_or((0.8, 1.2), |a| {
                (a.ratio * (1.0 - a.tolerance), a.ratio * (1.0 + a.tolerance))
            })
    }

    fn priority(&self, booru: &str) -> usize {
        self.source_priority
            .iter()
            .position(|b| b == booru)
            .unwrap_or(self.source_priority.len())
    }
}

#[derive(Clone, Debug)]
pub struct IngestPlan {
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    /// Dumps, each `PATH` or `BOORU:PATH`.
    pub meta: Vec<String>,
    pub taglist: Option<PathBuf>,
    pub rules: Rules,
    /// A face detector (an LBP cascade or an ONNX model) to search every thumbnail with.
    pub detector: Option<DetectorSpec>,
    /// A WD14-style tagger to predict tags for every thumbnail.
    pub tagger: Option<TaggerSpec>,
    /// An image model whose vector of every thumbnail goes into the record.
    pub embedder: Option<EmbedderSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("config `{path}`: {problem}")]
    Config { path: PathBuf, problem: String },
    #[error(transparent)]
    Tags(#[from] crate::tags::TagsError),
    #[error("no originals: `{0}` does not exist")]
    Missing(PathBuf),
    #[error(transparent)]
    Detector(#[from] DetectorError),
    #[error(transparent)]
    /// A tagger or an embedder that cannot be used.
    Model(#[from] crate::detect::onnx::ModelError),
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct IngestReport {
    pub out: PathBuf,
    pub report: PathBuf,
    pub inputs: u64,
    pub kept: u64,
    pub filtered: u64,
    pub duplicates: u64,
    pub unreadable: u64,
    pub ignored: u64,
    /// Originals whose analysis came from an earlier run.
    pub reused: u64,
    /// Items an earlier run into the same folder kept and this one did not (their
    /// original gone, now a duplicate or filtered): their files were removed.
    pub removed: u64,
    pub metadata_posts: u64,
    /// Kept items by composition class, when faces were searched.
    pub compositions: BTreeMap<String, u64>,
    pub seconds: f64,
}

/// The analysis of one original that later runs can reuse.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Analysis {
    md5: String,
    settings: String,
    width: u32,
    height: u32,
    pixels: String,
    phash: String,
    stats: Stats,
    #[serde(default)]
    faces: Option<Faces>,
    #[serde(default)]
    predicted_tags: Option<Value>,
    #[serde(default)]
    embedding: Option<String>,
}

/// What happened to one input, for the report.
#[derive(Clone, Debug)]
enum Fate {
    Kept(String),
    Filtered(String),
    Duplicate(String),
    Unreadable(String),
    Ignored(String),
}

struct Original {
    path: PathBuf,
    bytes: u64,
    analysis: Analysis,
}

const WORK: &str = ".seedpool/ingest";
const CACHE: &str = "analyses.jsonl";
/// The keys the last run kept.
const OUTPUTS: &str = "outputs.txt";
/// The files ingest writes per kept item.
const ITEM_FILES: [&str; 3] = [".thumb.jpg", ".sample.jpg", ".json"];
pub const REPORT: &str = "ingest-report.tsv";

/// Bumped whenever analysing the same bytes gives other results (decoder, statistics),
/// so a re-run does not mix old analyses with new ones.
const ANALYSIS_VERSION: u32 = 2;

/// The models that look at each thumbnail, loaded before any original is read.
#[derive(Default)]
struct Analysers {
    faces: Option<FaceDetector>,
    tagger: Option<Tagger>,
    embedder: Option<Embedder>,
}

fn settings_fingerprint(rules: &Rules, analysers: &Analysers) -> String {
    let text = serde_json::to_string(&(
        env!("CARGO_PKG_VERSION"),
        ANALYSIS_VERSION,
        &rules.sizes,
        &rules.limits,
        rules.square_range().0.to_bits(),
        analysers.faces.as_ref().map(FaceDetector::fingerprint),
        analysers.tagger.as_ref().map(Tagger::fingerprint),
        analysers.embedder.as_ref().map(Embedder::fingerprint),
    ))
    .expect("settings serialise");
    blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
}

pub fn run(plan: &IngestPlan, progress: &dyn Progress) -> Result<IngestReport, IngestError> {
    let started = std::time::Instant::now();
    // A detector or tagger that cannot be used stops the run before any original is
    // read.
    let analysers = Analysers::load(plan)?;
    let work = plan.out.join(WORK);
    std::fs::create_dir_all(&work).map_err(file_error("create", &work))?;
    let mut fates = Fates::new();
    let (index, categories) = load_metadata(plan, progress, &mut fates)?;
    let files = scan_inputs(plan, &mut fates)?;
    let (originals, reused) = analyse_all(&files, plan, &analysers, &work, progress, &mut fates)?;
    // Records, in path order, so nothing below depends on the order of the scan.
    let mut candidates: Vec<Candidate> = originals
        .into_iter()
        .map(|o| candidate(o, &index, categories.as_ref(), &analysers))
        .collect();
    candidates.sort_by(|a, b| a.original.path.cmp(&b.original.path));
    let survivors = filter_quality(candidates, &plan.rules, &mut fates);
    let (kept, compositions) = write_release(survivors, plan, &work, progress, &mut fates)?;
    let removed = remove_stale(&plan.out, &work, &kept)?;

    let report_path = plan.out.join(REPORT);
    let mut report = IngestReport {
        out: plan.out.clone(),
        report: report_path.clone(),
        reused,
        removed,
        metadata_posts: index.len() as u64,
        compositions,
        ..IngestReport::default()
    };
    write_report(&report_path, &fates, &mut report)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What became of each input path, for the report.
type Fates = BTreeMap<PathBuf, Fate>;

impl Analysers {
    fn load(plan: &IngestPlan) -> Result<Self, IngestError> {
        Ok(Self {
            faces: match &plan.detector {
                Some(spec) => Some(FaceDetector::load(spec, &plan.rules.faces)?),
                None => None,
            },
            tagger: match &plan.tagger {
                Some(spec) => Some(Tagger::load(spec)?),
                None => None,
            },
            embedder: match &plan.embedder {
                Some(spec) => Some(Embedder::load(spec)?),
                None => None,
            },
        })
    }
}

/// The booru dumps and the tag list. A malformed dump is reported and skipped, never
/// fatal; a tag list that cannot be read stops the run.
fn load_metadata(
    plan: &IngestPlan,
    progress: &dyn Progress,
    fates: &mut Fates,
) -> Result<(MetaIndex, Option<crate::tags::Categories>), IngestError> {
    let mut index = MetaIndex::default();
    for spec in &plan.meta {
        match meta::load(spec) {
            Ok(posts) => posts.into_iter().for_each(|p| index.add(p)),
            Err(e) => {
                progress.note(&format!("metadata skipped: {e}"));
                fates.insert(e.path().to_path_buf(), Fate::Unreadable(e.to_string()));
            }
        }
    }
    let categories = match &plan.taglist {
        Some(list) => Some(crate::tags::categories(list)?),
        None => None,
    };
    Ok((index, categories))
}

/// The image files under the inputs; everything else goes to the report.
fn scan_inputs(plan: &IngestPlan, fates: &mut Fates) -> Result<Vec<PathBuf>, IngestError> {
    let mut files = Vec::new();
    for input in &plan.inputs {
        if std::fs::symlink_metadata(input).is_err() {
            return Err(IngestError::Missing(input.clone()));
        }
        scan(input, &plan.out, &mut files, fates);
    }
    Ok(files)
}

/// Reads, hashes and analyses every file in parallel, reusing the analyses of earlier
/// runs with the same settings; returns the readable originals and how many analyses
/// were reused.
fn analyse_all(
    files: &[PathBuf],
    plan: &IngestPlan,
    analysers: &Analysers,
    work: &Path,
    progress: &dyn Progress,
    fates: &mut Fates,
) -> Result<(Vec<Original>, u64), IngestError> {
    let rules = &plan.rules;
    let settings = settings_fingerprint(rules, analysers);
    let cache_path = work.join(CACHE);
    let cached = read_cache(&cache_path, &settings);
    let cache_out = Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cache_path)
            .map_err(file_error("open", &cache_path))?,
    );
    progress.stage("analysing originals", files.len() as u64, Unit::Items);
    let reused = std::sync::atomic::AtomicU64::new(0);
    let results: Vec<(PathBuf, Result<Original, String>)> = files
        .par_iter()
        .map(|path| {
            let r = analyse_one(
                path, rules, analysers, &settings, &cached, work, &cache_out, &reused,
            );
            progress.advance(1);
            (path.clone(), r)
        })
        .collect();
    let mut originals = Vec::new();
    for (path, r) in results {
        match r {
            Ok(o) => originals.push(o),
            Err(reason) => {
                fates.insert(path, Fate::Unreadable(reason));
            }
        }
    }
    Ok((originals, reused.into_inner()))
}

/// The candidates that pass the size rules; the others go to the report as filtered.
fn filter_quality(candidates: Vec<Candidate>, rules: &Rules, fates: &mut Fates) -> Vec<Candidate> {
    let mut survivors = Vec::new();
    for c in candidates {
        let (w, h) = (c.original.analysis.width, c.original.analysis.height);
        let mp = f64::from(w) * f64::from(h) / 1e6;
        let reason = if w < rules.min_width {
            Some(format!("width {w} < {}", rules.min_width))
        } else if h < rules.min_height {
            Some(format!("height {h} < {}", rules.min_height))
        } else if mp < rules.min_megapixels {
            Some(format!("{mp:.2} megapixels < {}", rules.min_megapixels))
        } else {
            None
        };
        match reason {
            Some(r) => {
                fates.insert(
                    c.original.path.clone(),
                    Fate::Filtered(format!("quality: {r}")),
                );
            }
            None => survivors.push(c),
        }
    }
    survivors
}

/// Drops the duplicates, scores the kept items and writes them into the release
/// folder; returns the kept keys and the count of each composition.
fn write_release(
    mut survivors: Vec<Candidate>,
    plan: &IngestPlan,
    work: &Path,
    progress: &dyn Progress,
    fates: &mut Fates,
) -> Result<(std::collections::BTreeSet<String>, BTreeMap<String, u64>), IngestError> {
    let rules = &plan.rules;
    let winners = deduplicate(&survivors, rules);
    // Quality last: its popularity part ranks each kept item among the others.
    let mut kept_records: Vec<&mut Value> = survivors
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| winners[*i] == *i)
        .map(|(_, c)| &mut c.record)
        .collect();
    rules.quality.score_all(&mut kept_records);
    progress.stage("writing the release", survivors.len() as u64, Unit::Items);
    let mut kept = std::collections::BTreeSet::new();
    let mut compositions = BTreeMap::new();
    for (i, c) in survivors.iter().enumerate() {
        let w = winners[i];
        if w != i {
            let why = duplicate_reason(c, &survivors[w], rules);
            fates.insert(
                c.original.path.clone(),
                Fate::Duplicate(format!("of {} ({why})", survivors[w].key)),
            );
            continue;
        }
        write_item(&plan.out, work, c, rules)?;
        if let Some(class) = c.record["composition"].as_str() {
            *compositions.entry(class.to_string()).or_default() += 1;
        }
        fates.insert(c.original.path.clone(), Fate::Kept(c.key.clone()));
        kept.insert(c.key.clone());
        progress.advance(1);
    }
    Ok((kept, compositions))
}

/// Walks `input`; images go to `files`, everything else to the report.
fn scan(input: &Path, out: &Path, files: &mut Vec<PathBuf>, fates: &mut Fates) {
    let md = match std::fs::symlink_metadata(input) {
        Ok(md) => md,
        Err(e) => {
            fates.insert(input.to_path_buf(), Fate::Unreadable(e.to_string()));
            return;
        }
    };
    if md.file_type().is_symlink() {
        fates.insert(input.to_path_buf(), Fate::Ignored("symbolic link".into()));
    } else if md.is_dir() {
        if input == out {
            return;
        }
        let entries = match std::fs::read_dir(input) {
            Ok(e) => e,
            Err(e) => {
                fates.insert(
                    input.to_path_buf(),
                    Fate::Unreadable(format!("folder: {e}")),
                );
                return;
            }
        };
        let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        children.sort();
        for child in children {
            scan(&child, out, files, fates);
        }
    } else if md.is_file() {
        let ext = input
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            files.push(input.to_path_buf());
        } else {
            fates.insert(
                input.to_path_buf(),
                Fate::Ignored("not an image file name".into()),
            );
        }
    } else {
        fates.insert(
            input.to_path_buf(),
            Fate::Ignored("not a regular file".into()),
        );
    }
}

fn read_cache(path: &Path, settings: &str) -> HashMap<String, Analysis> {
    let Ok(file) = std::fs::File::open(path) else {
        return HashMap::new();
    };
    // A line cut short by a crash does not parse and is skipped.
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Analysis>(&l).ok())
        .filter(|a| a.settings == settings)
        .map(|a| (a.md5.clone(), a))
        .collect()
}

fn work_file(work: &Path, md5: &str, what: &str) -> PathBuf {
    work.join(format!("{md5}.{what}.jpg"))
}

#[allow(clippy::too_many_arguments)]
fn analyse_one(
    path: &Path,
    rules: &Rules,
    analysers: &Analysers,
    settings: &str,
    cached: &HashMap<String, Analysis>,
    work: &Path,
    cache_out: &Mutex<std::fs::File>,
    reused: &std::sync::atomic::AtomicU64,
) -> Result<Original, String> {
    use md5::Digest;
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    let md5 = hex::encode(md5::Md5::digest(&bytes));
    let outputs_exist = |md5: &str| {
        work_file(work, md5, "thumb").is_file() && work_file(work, md5, "sample").is_file()
    };
    if let Some(a) = cached.get(&md5) {
        if outputs_exist(&md5) {
            reused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(Original {
                path: path.to_path_buf(),
                bytes: bytes.len() as u64,
                analysis: a.clone(),
            });
        }
    }
    let pic = imaging::analyse(&bytes, rules.limits, rules.sizes, rules.square_range())
        .map_err(|e| e.to_string())?;
    for (what, data) in [("thumb", &pic.thumb), ("sample", &pic.sample)] {
        let target = work_file(work, &md5, what);
        let tmp = target.with_extension("partial");
        std::fs::write(&tmp, data)
            .and_then(|_| std::fs::rename(&tmp, &target))
            .map_err(|e| format!("writing `{}`: {e}", target.display()))?;
    }
    let faces = analysers
        .faces
        .as_ref()
        .map(|d| d.find(&pic.thumb_pixels))
        .transpose()
        .map_err(|e| format!("face search: {e}"))?;
    let predicted_tags = analysers
        .tagger
        .as_ref()
        .map(|t| t.predict(&pic.thumb_pixels))
        .transpose()
        .map_err(|e| format!("tagger: {e}"))?;
    // From the thumbnail as written, as `detect --embedder` reads it, so that both
    // give an item the same vector.
    let embedding = analysers
        .embedder
        .as_ref()
        .map(|e| {
            let thumb = imaging::decode_rgb(&pic.thumb, rules.limits).map_err(|e| e.to_string())?;
            e.embed(&thumb)
        })
        .transpose()
        .map_err(|e| format!("embedder: {e}"))?;
    let analysis = Analysis {
        md5,
        settings: settings.to_string(),
        width: pic.width,
        height: pic.height,
        pixels: pic.pixels_blake3,
        phash: pic.phash,
        stats: pic.stats,
        faces,
        predicted_tags,
        embedding,
    };
    let line = serde_json::to_string(&analysis).expect("analysis serialises");
    if let Ok(mut f) = cache_out.lock() {
        let _ = writeln!(f, "{line}");
    }
    Ok(Original {
        path: path.to_path_buf(),
        bytes: bytes.len() as u64,
        analysis,
    })
}

struct Candidate {
    original: Original,
    key: String,
    booru: String,
    /// The file name follows the BOORU-CHARS convention: between equal copies, the
    /// one named as the booru serves it wins over a renamed one.
    named: bool,
    record: Value,
}

/// The record: a dump's post first, then what the file name says, then the image.
fn candidate(
    o: Original,
    index: &MetaIndex,
    categories: Option<&HashMap<String, &'static str>>,
    analysers: &Analysers,
) -> Candidate {
    let stem = o
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let named = names::parse(&stem);
    let a = &o.analysis;
    let post: Option<&Post> = index.find(&a.md5, named.booru.as_deref(), named.post_id);
    let booru = post
        .map(|p| p.booru.clone())
        .or(named.booru.clone())
        .unwrap_or_else(|| "local".into());
    let post_id = post.map(|p| p.post_id).or(named.post_id);
    let key = match post_id {
        Some(id) => format!("{}-{id}", names::key_booru(&booru)),
        None => format!("local-{}", &a.md5[..16]),
    };
    let mut tags: [Vec<String>; 5] = post.map(|p| p.tags.clone()).unwrap_or_default();
    if let Some(cats) = categories.filter(|_| post.is_none_or(|p| !p.categorised)) {
        let general = std::mem::take(&mut tags[3]);
        for t in general {
            let i = cats
                .get(&crate::name::normalize_tag(&t))
                .and_then(|c| CATEGORIES.iter().position(|x| x == c))
                .unwrap_or(3);
            tags[i].push(t);
        }
    }
    for (i, from_name) in [
        (0, &named.artists),
        (1, &named.copyrights),
        (2, &named.characters),
    ] {
        if tags[i].is_empty() {
            tags[i] = from_name.clone();
        }
    }
    let tag_map: serde_json::Map<String, Value> = CATEGORIES
        .iter()
        .zip(tags.iter())
        .map(|(c, t)| ((*c).to_string(), json!(t)))
        .collect();
    let mut record = json!({
        "booru": booru,
        "post_id": post_id,
        "md5": a.md5,
        "rating": post.and_then(|p| p.rating.clone()),
        "score": post.and_then(|p| p.score),
        "favs": post.and_then(|p| p.favs),
        "posted": post.and_then(|p| p.posted.clone()),
        "width": a.width,
        "height": a.height,
        "bytes": o.bytes,
        "tags": tag_map,
        "phash": a.phash,
        "pixels_blake3": a.pixels,
        "stats": a.stats,
        "source_file": o.path.file_name().map(|n| n.to_string_lossy().into_owned()),
    });
    if let (Some(found), Some(d)) = (&a.faces, &analysers.faces) {
        d.annotate(&mut record, found);
    }
    if let (Some(predicted), Some(t)) = (&a.predicted_tags, &analysers.tagger) {
        record["predicted_tags"] = predicted.clone();
        record["tagger"] = t.about().clone();
    }
    if let (Some(v), Some(e)) = (&a.embedding, &analysers.embedder) {
        e.annotate(&mut record, v.clone());
    }
    Candidate {
        named: named.post_id.is_some(),
        original: o,
        key,
        booru,
        record,
    }
}

/// For each candidate, the index of the copy that wins its duplicate group.
fn deduplicate(c: &[Candidate], rules: &Rules) -> Vec<usize> {
    let mut groups = Groups::new(c.len());
    // Exact: same file, same pixels, or the same post downloaded twice.
    groups.join_equal(c.iter().enumerate().flat_map(|(i, x)| {
        [
            (i, (0u8, x.original.analysis.md5.as_str())),
            (i, (1, x.original.analysis.pixels.as_str())),
            (i, (2, x.key.as_str())),
        ]
    }));
    let hashes: Vec<Option<u64>> = c
        .iter()
        .map(|x| parse_phash(&x.original.analysis.phash))
        .collect();
    groups.join_near(&hashes, rules.phash_distance);
    // The best copy of each group: larger resolution, then larger file, then source
    // priority, then a booru-style file name, then key and path (so the choice never
    // depends on scan order).
    groups.winners(|i| {
        use std::cmp::Reverse;
        let k = &c[i];
        let a = &k.original.analysis;
        Reverse((
            u64::from(a.width) * u64::from(a.height),
            k.original.bytes,
            Reverse(rules.priority(&k.booru)),
            k.named,
            Reverse(k.key.clone()),
            Reverse(k.original.path.clone()),
        ))
    })
}

fn duplicate_reason(a: &Candidate, b: &Candidate, rules: &Rules) -> String {
    let (x, y) = (&a.original.analysis, &b.original.analysis);
    if x.md5 == y.md5 {
        "same file".into()
    } else if x.pixels == y.pixels {
        "same pixels".into()
    } else if a.key == b.key {
        "same post".into()
    } else {
        let d =
            (parse_phash(&x.phash).unwrap_or(0) ^ parse_phash(&y.phash).unwrap_or(0)).count_ones();
        format!(
            "perceptual hash {d} bits apart, at most {}",
            rules.phash_distance
        )
    }
}

fn write_item(out: &Path, work: &Path, c: &Candidate, rules: &Rules) -> Result<(), IngestError> {
    let a = &c.original.analysis;
    let year = c.record["posted"]
        .as_str()
        .and_then(|p| p.get(..4))
        .filter(|y| y.chars().all(|ch| ch.is_ascii_digit()))
        .unwrap_or("unknown")
        .to_string();
    let mut record = c.record.clone();
    record["volume"] = json!(format!("{}-{year}", rules.aspect(a.width, a.height)));
    for what in ["thumb", "sample"] {
        let from = work_file(work, &a.md5, what);
        let to = out.join(format!("{}.{what}.jpg", c.key));
        let _ = std::fs::remove_file(&to);
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).map_err(file_error("copy", &from))?;
        }
    }
    let json_path = out.join(format!("{}.json", c.key));
    keep_earlier_quality(&json_path, &mut record);
    let text = serde_json::to_string_pretty(&record).expect("record serialises");
    std::fs::write(&json_path, text + "\n").map_err(file_error("write", &json_path))?;
    Ok(())
}

/// An item whose record is what an earlier run wrote, apart from its quality, keeps
/// that run's quality: popularity ranks an item among the release's others, so without
/// this every new release would change the score of items that did not change, and
/// publish would ship them again.
fn keep_earlier_quality(path: &Path, record: &mut Value) {
    let Ok(text) = std::fs::read(path) else {
        return;
    };
    let Ok(Value::Object(mut earlier)) = serde_json::from_slice::<Value>(&text) else {
        return;
    };
    let (Some(quality), Some(parts)) = (earlier.remove("quality"), earlier.remove("quality_parts"))
    else {
        return;
    };
    let Value::Object(now) = record else {
        return;
    };
    let same = earlier.len() + 2 == now.len()
        && now
            .iter()
            .filter(|(k, _)| *k != "quality" && *k != "quality_parts")
            .all(|(k, v)| earlier.get(k) == Some(v));
    if same {
        now.insert("quality".into(), quality);
        now.insert("quality_parts".into(), parts);
    }
}

/// The keys this run kept, listed in the work folder; the files of keys that an earlier
/// run listed and this one did not keep are removed, so the release holds exactly what
/// this run kept. Files ingest never wrote are left alone.
fn remove_stale(
    out: &Path,
    work: &Path,
    kept: &std::collections::BTreeSet<String>,
) -> Result<u64, IngestError> {
    let list = work.join(OUTPUTS);
    let earlier = std::fs::read_to_string(&list).unwrap_or_default();
    let mut removed = 0;
    for key in earlier
        .lines()
        .filter(|k| !k.is_empty() && !kept.contains(*k))
    {
        // A key is a file name the parser made (no separators); check anyway, since
        // the list is a file on disk.
        if key.contains('/') || key.starts_with('.') {
            continue;
        }
        for suffix in ITEM_FILES {
            let path = out.join(format!("{key}{suffix}"));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(file_error("remove", &path)(e).into()),
            }
        }
        removed += 1;
    }
    let text: String = kept.iter().map(|k| format!("{k}\n")).collect();
    crate::files::write_atomically(&list, text.as_bytes())?;
    Ok(removed)
}

fn write_report(
    path: &Path,
    fates: &BTreeMap<PathBuf, Fate>,
    report: &mut IngestReport,
) -> Result<(), IngestError> {
    let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
    let mut text = String::from("input\tstatus\tdetail\n");
    for (path, fate) in fates {
        let (status, detail) = match fate {
            Fate::Kept(k) => {
                report.kept += 1;
                ("kept", k.clone())
            }
            Fate::Filtered(r) => {
                report.filtered += 1;
                ("filtered", r.clone())
            }
            Fate::Duplicate(r) => {
                report.duplicates += 1;
                ("duplicate", r.clone())
            }
            Fate::Unreadable(r) => {
                report.unreadable += 1;
                ("unreadable", r.clone())
            }
            Fate::Ignored(r) => {
                report.ignored += 1;
                ("ignored", r.clone())
            }
        };
        text.push_str(&format!(
            "{}\t{status}\t{}\n",
            clean(&path.to_string_lossy()),
            clean(&detail)
        ));
    }
    report.inputs = fates.len() as u64;
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, text).map_err(file_error("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(file_error("move into place", path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_phash_distance_past_the_bands_is_refused() {
        // The flag allowed 0-7, the config anything: 9 missed near duplicates silently.
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("rules.toml");
        std::fs::write(&path, "phash_distance = 9\n").unwrap();
        let e = Rules::from_toml(&path).unwrap_err().to_string();
        assert!(
            e.contains("rules.toml`: `phash_distance` is 9, more than 7"),
            "{e}"
        );
        std::fs::write(&path, "phash_distance = 7\n").unwrap();
        assert_eq!(Rules::from_toml(&path).unwrap().phash_distance, 7);
    }

    #[test]
    fn the_documented_configuration_is_the_default() {
        let doc = include_str!("../../docs/ingest.md");
        let toml_text = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("docs/ingest.md has a toml block");
        let rules: Rules = toml::from_str(toml_text).unwrap();
        assert_eq!(rules, Rules::default());
    }

    #[test]
    fn aspects_follow_the_documented_order() {
        let r = Rules::default();
        assert_eq!(r.aspect(700, 1000), "7x10");
        assert_eq!(r.aspect(750, 1000), "3x4");
        assert_eq!(r.aspect(1000, 1000), "1x1");
        assert_eq!(r.aspect(1500, 1000), "3x2");
        assert_eq!(r.aspect(1000, 1500), "2x3");
        assert_eq!(r.aspect(600, 1000), "2x3");
        assert_eq!(r.aspect(3000, 1000), "other");
    }
}
