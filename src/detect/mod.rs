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
    let outcomes: Vec<Result<Outcome, DetectError>> = records
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
    for (path, outcome) in records.iter().zip(outcomes) {
        match outcome? {
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
    Ok(report)
}

enum Outcome {
    Updated(String),
    Current(String),
    Skipped(String),
}

fn update_record(detector: &faces::FaceDetector, path: &Path) -> Result<Outcome, DetectError> {
    use crate::store::file_error;
    let text = std::fs::read(path).map_err(file_error("read", path))?;
    let mut record: serde_json::Value =
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
    let class = |r: &serde_json::Value| r["composition"].as_str().unwrap_or("").to_string();
    if detector.is_current(&record) {
        return Ok(Outcome::Current(class(&record)));
    }
    let thumb = path.with_extension("thumb.jpg");
    let rgb = match picture::load_rgb(&thumb, DecodeLimits::default()) {
        Ok(rgb) => rgb,
        Err(e) => return Ok(Outcome::Skipped(format!("thumbnail: {e}"))),
    };
    let found = detector.find(&rgb);
    detector.annotate(&mut record, &found);
    let mut text = serde_json::to_string_pretty(&record).expect("record serialises");
    text.push('\n');
    crate::store::write_atomically(path, text.as_bytes())?;
    Ok(Outcome::Updated(class(&record)))
}
