//! Face detection for ingest and `seedpool detect` (docs/detect.md).

pub mod cascade;
pub mod faces;

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
    let decoded = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| picture::decode_rgb(&bytes, limits));
    match decoded {
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
