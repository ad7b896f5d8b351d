//! Face detection for ingest and `seedpool detect` (docs/detect.md).

pub mod cascade;
pub mod faces;
pub mod models;

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::ingest::picture::{self, DecodeLimits};
use crate::progress::{Progress, Unit};
use cascade::{Cascade, CascadeError, Params, Rect};

/// Faces found in one image, in its pixels.
#[derive(Debug, Serialize)]
pub struct ImageFaces {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub faces: Vec<Rect>,
    /// Why the image could not be read; its faces are then empty.
    pub error: Option<String>,
}

pub struct DetectPlan {
    pub images: Vec<PathBuf>,
    pub cascade: PathBuf,
    pub params: Params,
    pub limits: DecodeLimits,
}

/// Loads the cascade (any problem with it stops everything before the first image),
/// then detects in every image in parallel. An unreadable image is reported, not fatal.
pub fn run(plan: &DetectPlan, progress: &dyn Progress) -> Result<Vec<ImageFaces>, CascadeError> {
    let cascade = Cascade::load(&plan.cascade)?;
    progress.stage("detecting faces", plan.images.len() as u64, Unit::Items);
    Ok(plan
        .images
        .par_iter()
        .map(|path| {
            let r = detect_file(&cascade, path, &plan.params, plan.limits);
            progress.advance(1);
            r
        })
        .collect())
}

fn detect_file(
    cascade: &Cascade,
    path: &Path,
    params: &Params,
    limits: DecodeLimits,
) -> ImageFaces {
    match picture::load_rgb(path, limits) {
        Ok(rgb) => {
            let (width, height) = rgb.dimensions();
            let grey = cascade::grey(rgb.as_raw());
            ImageFaces {
                path: path.to_path_buf(),
                width,
                height,
                faces: cascade.detect(&grey, width, height, params),
                error: None,
            }
        }
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
    pub cascade: PathBuf,
    pub rules: faces::FaceRules,
    /// The quality score, computed again for every record once compositions changed.
    pub quality: crate::ingest::quality::QualityRules,
}

#[derive(Debug, Default, Serialize)]
pub struct ReleaseReport {
    pub dir: PathBuf,
    pub records: u64,
    pub updated: u64,
    /// Records that already held this cascade's results with these parameters.
    pub current: u64,
    /// Records without a `<key>.thumb.jpg` or whose thumbnail cannot be read.
    pub skipped: Vec<String>,
    /// Records whose quality score changed with their composition.
    pub rescored: u64,
    /// Records by composition class, over every record with faces.
    pub compositions: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Cascade(#[from] CascadeError),
    #[error(transparent)]
    File(#[from] crate::store::FileError),
    #[error("`{path}`: not a JSON record: {problem}")]
    Record { path: PathBuf, problem: String },
}

/// Searches every record's thumbnail and writes the faces into the record (each file
/// replaced atomically). Records already holding this detector's results are left as
/// they are, so an interrupted run picks up where it stopped.
pub fn run_release(
    plan: &ReleasePlan,
    progress: &dyn Progress,
) -> Result<ReleaseReport, DetectError> {
    use crate::store::file_error;
    let detector = faces::FaceDetector::load(&plan.cascade, &plan.rules)?;
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
    progress.stage("detecting faces", records.len() as u64, Unit::Items);
    let outcomes: Vec<Result<(Outcome, serde_json::Value), DetectError>> = records
        .par_iter()
        .map(|path| {
            let r = update_record(&detector, path);
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
        match outcome {
            Outcome::Updated(c) => {
                report.updated += 1;
                *report.compositions.entry(c).or_default() += 1;
            }
            Outcome::Current(c) => {
                report.current += 1;
                *report.compositions.entry(c).or_default() += 1;
            }
            Outcome::Skipped(why) => report.skipped.push(format!("{}: {why}", path.display())),
        }
    }
    if report.updated > 0 {
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
    rules: &crate::ingest::quality::QualityRules,
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
    let text = std::fs::read(path).map_err(crate::store::file_error("read", path))?;
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
    crate::store::write_atomically(path, text.as_bytes())?;
    Ok(())
}

enum Outcome {
    Updated(String),
    Current(String),
    Skipped(String),
}

fn update_record(
    detector: &faces::FaceDetector,
    path: &Path,
) -> Result<(Outcome, serde_json::Value), DetectError> {
    let mut record = read_record(path)?;
    let class = |r: &serde_json::Value| r["composition"].as_str().unwrap_or("").to_string();
    if detector.is_current(&record) {
        return Ok((Outcome::Current(class(&record)), record));
    }
    let thumb = path.with_extension("thumb.jpg");
    let rgb = match picture::load_rgb(&thumb, DecodeLimits::default()) {
        Ok(rgb) => rgb,
        Err(e) => return Ok((Outcome::Skipped(format!("thumbnail: {e}")), record)),
    };
    let found = detector.find(&rgb);
    detector.annotate(&mut record, &found);
    write_record(path, &record)?;
    Ok((Outcome::Updated(class(&record)), record))
}
