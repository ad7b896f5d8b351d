//! Face detection for ingest and `seedpool detect` (docs/detect.md).

pub mod cascade;
pub mod embedder;
pub mod faces;
pub mod models;
pub mod onnx;
pub mod tagger;

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::imaging::{self, DecodeLimits};
use crate::progress::{Progress, Unit};
use cascade::{CascadeDetector, CascadeError, Rect};
use faces::Level;

/// A face in pixels of the searched image, with the model's confidence where the
/// detector gives one (ONNX models; a cascade does not).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Found {
    #[serde(flatten)]
    pub rect: Rect,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
}

/// What both backends do: an LBP cascade ([`CascadeDetector`]) and an ONNX model
/// ([`onnx::OnnxDetector`]).
pub trait Detector: Send + Sync {
    /// The faces in an RGB image at each of `levels`, largest first; one search of the
    /// image serves every level. An error is this image's alone.
    fn detect_levels(
        &self,
        rgb: &image::RgbImage,
        levels: &[Level],
    ) -> Result<Vec<Vec<Found>>, String>;
    /// What records say about the detector: its file, the file's blake3 and the
    /// parameters that change its results.
    fn about(&self) -> serde_json::Map<String, serde_json::Value>;
    /// What a level means to this detector, for records.
    fn level_about(&self, level: &Level) -> serde_json::Value;
}

/// Larger faces first, then top to bottom and left to right, so the order never
/// depends on how a detector happened to find them.
fn largest_first(faces: &mut [Found]) {
    faces.sort_by_key(|f| {
        let r = f.rect;
        (
            std::cmp::Reverse(i64::from(r.width) * i64::from(r.height)),
            r.y,
            r.x,
        )
    });
}

/// Which detector to load, with the parameters that belong to it rather than to a
/// strictness level.
#[derive(Clone, Debug)]
pub enum DetectorSpec {
    Cascade {
        path: PathBuf,
        scale_factor: f64,
        /// Largest face side in pixels; 0: no limit.
        max_size: u32,
    },
    Model(onnx::ModelSpec),
}

#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    #[error(transparent)]
    Cascade(#[from] CascadeError),
    #[error(transparent)]
    Model(#[from] onnx::ModelError),
}

impl DetectorSpec {
    pub fn load(&self) -> Result<Box<dyn Detector>, DetectorError> {
        Ok(match self {
            Self::Cascade {
                path,
                scale_factor,
                max_size,
            } => Box::new(CascadeDetector::load(path, *scale_factor, *max_size)?),
            Self::Model(spec) => Box::new(onnx::OnnxDetector::load(spec)?),
        })
    }
}

/// Faces found in one image, in its pixels.
#[derive(Debug, Serialize)]
pub struct ImageFaces {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub faces: Vec<Found>,
    /// Why the image could not be read or searched; its faces are then empty.
    pub error: Option<String>,
}

pub struct DetectPlan {
    pub images: Vec<PathBuf>,
    pub detector: DetectorSpec,
    pub level: Level,
    pub limits: DecodeLimits,
}

/// Loads the detector (any problem with it stops everything before the first image),
/// then detects in every image in parallel. An unreadable image is reported, not fatal.
pub fn run(plan: &DetectPlan, progress: &dyn Progress) -> Result<Vec<ImageFaces>, DetectorError> {
    let detector = plan.detector.load()?;
    progress.stage("detecting faces", plan.images.len() as u64, Unit::Items);
    Ok(plan
        .images
        .par_iter()
        .map(|path| {
            let r = detect_file(detector.as_ref(), path, &plan.level, plan.limits);
            progress.advance(1);
            r
        })
        .collect())
}

fn detect_file(
    detector: &dyn Detector,
    path: &Path,
    level: &Level,
    limits: DecodeLimits,
) -> ImageFaces {
    let searched = imaging::load_rgb(path, limits)
        .map_err(|e| e.to_string())
        .and_then(|rgb| {
            let mut levels = detector.detect_levels(&rgb, std::slice::from_ref(level))?;
            Ok((rgb.dimensions(), levels.pop().unwrap_or_default()))
        });
    match searched {
        Ok(((width, height), faces)) => ImageFaces {
            path: path.to_path_buf(),
            width,
            height,
            faces,
            error: None,
        },
        Err(e) => ImageFaces {
            path: path.to_path_buf(),
            width: 0,
            height: 0,
            faces: Vec::new(),
            error: Some(e),
        },
    }
}

/// `seedpool detect RELEASE_DIR`: faces for the records of a release ingest made.
pub struct ReleasePlan {
    pub dir: PathBuf,
    /// A face detector, an embedder or both (the command line asks for one at least).
    pub detector: Option<DetectorSpec>,
    pub embedder: Option<embedder::EmbedderSpec>,
    pub rules: faces::FaceRules,
    /// The quality score, computed again for every record once compositions changed.
    pub quality: crate::curate::quality::QualityRules,
}

#[derive(Debug, Default, Serialize)]
pub struct ReleaseReport {
    pub dir: PathBuf,
    pub records: u64,
    /// Records rewritten: with faces searched, embedded, or both.
    pub updated: u64,
    pub searched: u64,
    pub embedded: u64,
    /// Records that already held this detector's results with these parameters, and
    /// this embedder's vector.
    pub current: u64,
    /// Records without a `<key>.thumb.jpg`, or whose thumbnail cannot be read or searched.
    pub skipped: Vec<String>,
    /// Records whose quality score changed with their composition.
    pub rescored: u64,
    /// Records by composition class, over every record with faces.
    pub compositions: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Detector(#[from] DetectorError),
    #[error(transparent)]
    Embedder(#[from] onnx::ModelError),
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    #[error("`{path}`: not a JSON record: {problem}")]
    Record { path: PathBuf, problem: String },
}

/// The models `detect RELEASE_DIR` runs on each thumbnail.
struct Analysers {
    faces: Option<faces::FaceDetector>,
    embedder: Option<embedder::Embedder>,
}

/// Searches every record's thumbnail and writes the faces, the embedding or both into
/// the record (each file replaced atomically). Records already holding these results
/// are left as they are, so an interrupted run picks up where it stopped.
pub fn run_release(
    plan: &ReleasePlan,
    progress: &dyn Progress,
) -> Result<ReleaseReport, DetectError> {
    use crate::files::file_error;
    let analysers = Analysers {
        faces: match &plan.detector {
            Some(spec) => Some(faces::FaceDetector::load(spec, &plan.rules)?),
            None => None,
        },
        embedder: match &plan.embedder {
            Some(spec) => Some(embedder::Embedder::load(spec)?),
            None => None,
        },
    };
    let mut records: Vec<PathBuf> = std::fs::read_dir(&plan.dir)
        .map_err(file_error("read", &plan.dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    records.sort();
    let stage = match (&analysers.faces, &analysers.embedder) {
        (Some(_), Some(_)) => "detecting faces and embedding",
        (None, Some(_)) => "embedding",
        _ => "detecting faces",
    };
    progress.stage(stage, records.len() as u64, Unit::Items);
    let outcomes: Vec<Result<(Outcome, serde_json::Value), DetectError>> = records
        .par_iter()
        .map(|path| {
            let r = update_record(&analysers, path);
            progress.advance(1);
            r
        })
        .collect();
    let mut report = ReleaseReport {
        dir: plan.dir.clone(),
        records: records.len() as u64,
        ..ReleaseReport::default()
    };
    let mut contents = Vec::with_capacity(records.len());
    for (path, outcome) in records.iter().zip(outcomes) {
        let (outcome, record) = outcome?;
        contents.push(record);
        let class = match outcome {
            Outcome::Updated {
                class,
                searched,
                embedded,
            } => {
                report.updated += 1;
                report.searched += u64::from(searched);
                report.embedded += u64::from(embedded);
                class
            }
            Outcome::Current(class) => {
                report.current += 1;
                class
            }
            Outcome::Skipped(why) => {
                report.skipped.push(format!("{}: {why}", path.display()));
                continue;
            }
        };
        if analysers.faces.is_some() {
            *report.compositions.entry(class).or_default() += 1;
        }
    }
    if report.searched > 0 {
        report.rescored = rescore(&records, contents, &plan.quality)?;
    }
    Ok(report)
}

/// Scores every record's quality again (composition is one of its parts, and
/// popularity ranks each record among all of them); rewrites those whose score changed.
/// `records` are the records as the search left them, in the order of `paths`.
fn rescore(
    paths: &[PathBuf],
    mut records: Vec<serde_json::Value>,
    rules: &crate::curate::quality::QualityRules,
) -> Result<u64, DetectError> {
    let before: Vec<(serde_json::Value, serde_json::Value)> = records
        .iter()
        .map(|r| (r["quality"].clone(), r["quality_parts"].clone()))
        .collect();
    let mut refs: Vec<&mut serde_json::Value> = records.iter_mut().collect();
    rules.score_all(&mut refs);
    let mut changed = 0;
    for ((path, record), (quality, parts)) in paths.iter().zip(&records).zip(before) {
        if record["quality"] != quality || record["quality_parts"] != parts {
            write_record(path, record)?;
            changed += 1;
        }
    }
    Ok(changed)
}

fn read_record(path: &Path) -> Result<serde_json::Value, DetectError> {
    let text = std::fs::read(path).map_err(crate::files::file_error("read", path))?;
    let record: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| DetectError::Record {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
    if !record.is_object() {
        return Err(DetectError::Record {
            path: path.to_path_buf(),
            problem: "not an object".into(),
        });
    }
    Ok(record)
}

fn write_record(path: &Path, record: &serde_json::Value) -> Result<(), DetectError> {
    let mut text = serde_json::to_string_pretty(record).expect("record serialises");
    text.push('\n');
    crate::files::write_atomically(path, text.as_bytes())?;
    Ok(())
}

enum Outcome {
    /// The record's composition class, and what was done to it.
    Updated {
        class: String,
        searched: bool,
        embedded: bool,
    },
    Current(String),
    Skipped(String),
}

fn update_record(
    analysers: &Analysers,
    path: &Path,
) -> Result<(Outcome, serde_json::Value), DetectError> {
    let mut record = read_record(path)?;
    let class = |r: &serde_json::Value| r["composition"].as_str().unwrap_or("").to_string();
    let faces = analysers.faces.as_ref().filter(|d| !d.is_current(&record));
    let embedder = analysers
        .embedder
        .as_ref()
        .filter(|e| !e.is_current(&record));
    if faces.is_none() && embedder.is_none() {
        return Ok((Outcome::Current(class(&record)), record));
    }
    let thumb = path.with_extension("thumb.jpg");
    let rgb = match imaging::load_rgb(&thumb, DecodeLimits::default()) {
        Ok(rgb) => rgb,
        Err(e) => return Ok((Outcome::Skipped(format!("thumbnail: {e}")), record)),
    };
    // Both results are worked out before either is written, so a record is never left
    // with one of them when the other fails.
    let found = match faces.map(|d| d.find(&rgb)).transpose() {
        Ok(found) => found,
        Err(e) => return Ok((Outcome::Skipped(format!("search: {e}")), record)),
    };
    let vector = match embedder.map(|e| e.embed(&rgb)).transpose() {
        Ok(vector) => vector,
        Err(e) => return Ok((Outcome::Skipped(format!("embedder: {e}")), record)),
    };
    if let (Some(d), Some(found)) = (faces, &found) {
        d.annotate(&mut record, found);
    }
    if let (Some(e), Some(vector)) = (embedder, vector) {
        e.annotate(&mut record, vector);
    }
    write_record(path, &record)?;
    let outcome = Outcome::Updated {
        class: class(&record),
        searched: faces.is_some(),
        embedded: embedder.is_some(),
    };
    Ok((outcome, record))
}
