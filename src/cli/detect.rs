//! `seedpool detect`: arguments → `DetectPlan` → `detect::run`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::{CommandResult, Env, Failure, Output};
use crate::detect::faces::Level;
use crate::detect::{self, DetectError, DetectPlan, DetectorSpec, ReleasePlan};
use crate::imaging::DecodeLimits;
use crate::ingest::Rules;

/// Find faces in images, or in a release folder's records, with an OpenCV LBP cascade
/// or an ONNX object detector.
///
/// Evaluates a cascade as OpenCV's CascadeClassifier.detectMultiScale does (same
/// scales, window steps, LBP features and grouping); runs an ONNX model with YOLO-style
/// outputs through ONNX Runtime (letterboxed input, confidence threshold, non-maximum
/// suppression). Given images, it searches each at its full size (give samples or
/// thumbnails rather than large originals) and prints the boxes. Given one RELEASE_DIR made by ingest, it searches every record's
/// thumbnail at the three strictness levels of ingest's [faces] rules (--config) and
/// writes faces, face_detector and composition into each `<key>.json`, leaving records
/// that already hold this detector's results, so an interrupted run resumes; then it
/// scores every record's quality again ([quality] of --config), since composition is
/// part of it. For anime
/// faces use nagadomi's lbpcascade_animeface.xml. With --embedder, it also (or only,
/// without a detector) computes every record's image embedding (docs/detect.md,
/// "Embeddings"), leaving records that already hold this embedder's. A cascade or model
/// that cannot be used stops the run before any image; an unreadable image is reported
/// and skipped.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("detector").required(true).multiple(true).args(["cascade", "model", "embedder"])))]
pub struct DetectArgs {
    /// Images (JPEG, PNG, WebP, GIF), or one release folder made by `seedpool ingest`.
    #[arg(required = true, value_name = "IMAGE|RELEASE_DIR")]
    images: Vec<PathBuf>,
    /// With a release folder: ingest's rules in TOML, of which [faces] and [quality] are
    /// used.
    #[arg(long, value_name = "TOML")]
    config: Option<PathBuf>,
    /// The cascade XML (opencv_traincascade's format, LBP features), or the name of a
    /// model fetched with `seedpool models fetch` (e.g. `animeface`).
    #[arg(long, value_name = "XML|NAME", value_hint = clap::ValueHint::Other)]
    cascade: Option<PathBuf>,
    #[command(flatten)]
    model: super::models::ModelArgs,
    #[command(flatten)]
    embedder: super::models::EmbedderArgs,
    /// With a model and images: the lowest confidence kept.
    #[arg(long, default_value_t = 0.25, value_name = "0-1")]
    confidence: f64,
    /// Cascade: each scale is this much larger than the one before.
    #[arg(long, default_value_t = 1.1)]
    scale_factor: f64,
    /// Cascade: a face needs more than this many overlapping windows (0: every window,
    /// ungrouped).
    #[arg(long, default_value_t = 3)]
    min_neighbors: u32,
    /// Smallest face side in pixels (0: the cascade's window).
    #[arg(long, default_value_t = 0)]
    min_size: u32,
    /// Cascade: largest face side in pixels (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_size: u32,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DetectArgs, env: &mut Env) -> CommandResult {
    if args.scale_factor <= 1.0 || !args.scale_factor.is_finite() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--scale-factor must be above 1 (got {})",
            args.scale_factor
        )));
    }
    let cascade = match &args.cascade {
        Some(c) if args.model.model.is_none() => Some(super::models::cascade_path(c, env)?),
        _ => None,
    };
    let detector = |scale_factor, max_size| match (&cascade, args.model.spec()) {
        (_, Some(model)) => Some(DetectorSpec::Model(model)),
        (Some(path), None) => Some(DetectorSpec::Cascade {
            path: path.clone(),
            scale_factor,
            max_size,
        }),
        (None, None) => None,
    };
    let out = &mut env.out;
    if let [dir] = &args.images[..] {
        if dir.is_dir() {
            return run_release(&args, &detector, dir.clone(), out);
        }
    }
    let Some(detector) = detector(args.scale_factor, args.max_size) else {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--embedder works on a release folder made by `seedpool ingest`; to search images for faces, give --cascade or --model"
        )));
    };
    let plan = DetectPlan {
        images: args.images.clone(),
        detector,
        level: Level {
            min_neighbors: args.min_neighbors,
            min_size: args.min_size,
            min_confidence: args.confidence,
        },
        limits: DecodeLimits::default(),
    };
    let bars = out.progress();
    let result = detect::run(&plan, &bars);
    bars.finish();
    let found = result.map_err(|e| Failure::Usage(e.into()))?;
    if args.json {
        out.json(&found)?;
        return Ok(());
    }
    for f in &found {
        match &f.error {
            Some(e) => writeln!(out.err, "{}: unreadable: {e}", f.path.display())?,
            None => {
                let boxes: Vec<String> = f
                    .faces
                    .iter()
                    .map(|f| {
                        let r = f.rect;
                        let b = format!("{}x{}+{}+{}", r.width, r.height, r.x, r.y);
                        match f.confidence {
                            Some(c) => format!("{b}@{c:.2}"),
                            None => b,
                        }
                    })
                    .collect();
                writeln!(
                    out.out,
                    "{}: {} face{} {}",
                    f.path.display(),
                    f.faces.len(),
                    if f.faces.len() == 1 { "" } else { "s" },
                    boxes.join(" ")
                )?;
            }
        }
    }
    Ok(())
}

fn run_release(
    args: &DetectArgs,
    detector: &dyn Fn(f64, u32) -> Option<DetectorSpec>,
    dir: PathBuf,
    out: &mut Output,
) -> CommandResult {
    let rules = match &args.config {
        Some(path) => Rules::from_toml(path).map_err(|e| Failure::Usage(e.into()))?,
        None => Rules::default(),
    };
    let plan = ReleasePlan {
        dir,
        detector: detector(rules.faces.scale_factor, 0),
        embedder: args.embedder.spec(),
        rules: rules.faces,
        quality: rules.quality,
    };
    let bars = out.progress();
    let result = detect::run_release(&plan, &bars);
    bars.finish();
    let report = result.map_err(|e| match e {
        DetectError::Detector(_) | DetectError::Embedder(_) => Failure::Usage(e.into()),
        e => Failure::Data(anyhow::Error::new(e).context("detect failed")),
    })?;
    if args.json {
        out.json(&report)?;
        return Ok(());
    }
    writeln!(
        out.out,
        "{} records in `{}`: {} updated ({} with faces searched, {} embedded), {} already current, {} skipped; {} quality scores changed",
        report.records,
        report.dir.display(),
        report.updated,
        report.searched,
        report.embedded,
        report.current,
        report.skipped.len(),
        report.rescored
    )?;
    if !report.compositions.is_empty() {
        writeln!(
            out.out,
            "compositions: {}",
            composition_counts(&report.compositions)
        )?;
    }
    for s in &report.skipped {
        writeln!(out.err, "skipped {s}")?;
    }
    Ok(())
}

/// `close-up 3, portrait 5, ...`, for ingest's and detect's summaries.
pub fn composition_counts(counts: &std::collections::BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = counts.iter().map(|(c, n)| format!("{c} {n}")).collect();
    parts.join(", ")
}
