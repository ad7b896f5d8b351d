//! `seedpool ingest`: arguments → `IngestPlan` → `ingest::run`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::{CommandResult, Env, Failure};
use crate::detect::tagger::TaggerSpec;
use crate::detect::DetectorSpec;
use crate::ingest::{self, IngestPlan, Rules};

/// Curate downloaded originals into a release folder for `seedpool publish`.
///
/// Scans ORIGINALS (files or folders, recursively) for JPEG, PNG, WebP and GIF images,
/// decodes each once, and writes per kept image `<key>.thumb.jpg` (fits 512x512),
/// `<key>.sample.jpg` (1280 px long side, 1024 for square-ish images, never upscaled)
/// and `<key>.json` (its record), with key `<booru>-<post id>`. Records come from
/// --meta dumps (matched by md5, then booru and post id), then the BOORU-CHARS file
/// name `<booru> - <id> - <copyright> ~ <characters> (<artist>).<ext>`, then the image.
/// Images below the quality floor are filtered; exact and near duplicates keep their best
/// copy. Every input gets a line in RELEASE_DIR/ingest-report.tsv; bad files never stop
/// the run. Re-running skips originals already analysed with the same settings.
#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Files or folders of downloaded originals.
    #[arg(required = true)]
    originals: Vec<PathBuf>,
    /// The release folder to write (created when missing).
    #[arg(long)]
    out: PathBuf,
    /// A booru API dump: Danbooru posts.json, Gelbooru/Safebooru DAPI JSON or Moebooru
    /// JSON; `BOORU:PATH` names its booru when the format cannot (e.g. `konachan:k.json`).
    #[arg(long = "meta", value_name = "FILE")]
    meta: Vec<String>,
    /// A Danbooru-style tag list (`;`-separated, TAG_CAT, TAG_NAME, ...) that sorts the
    /// flat tag lists of Gelbooru and Moebooru dumps into categories.
    #[arg(long, value_name = "CSV")]
    taglist: Option<PathBuf>,
    /// Curation rules in TOML (any of: min_width, min_height, min_megapixels,
    /// phash_distance, source_priority, aspects, sizes, limits); flags override it.
    #[arg(long, value_name = "TOML")]
    config: Option<PathBuf>,
    /// Smallest width kept [default: 900].
    #[arg(long)]
    min_width: Option<u32>,
    /// Smallest height kept [default: 900].
    #[arg(long)]
    min_height: Option<u32>,
    /// Fewest megapixels kept [default: 1.2].
    #[arg(long)]
    min_megapixels: Option<f64>,
    /// Near duplicates: largest Hamming distance between perceptual hashes, 0-7 [default: 4].
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=7))]
    phash_distance: Option<u32>,
    /// Search faces in every thumbnail with this OpenCV LBP cascade (a path, or a model
    /// name from `seedpool models fetch`, e.g. `animeface`) and record boxes at three strictness levels and the
    /// composition (see docs/detect.md; levels and thresholds under [faces] in --config).
    #[arg(long, value_name = "XML|NAME", value_hint = clap::ValueHint::Other)]
    cascade: Option<PathBuf>,
    /// Search faces with the `animeface` model (fetched with `seedpool models fetch
    /// animeface`) unless --cascade or --model names another detector.
    #[arg(long)]
    detect: bool,
    #[command(flatten)]
    model: super::models::ModelArgs,
    /// Predict tags for every thumbnail with a WD14-style tagger in ONNX (input
    /// [1, size, size, 3], BGR 0-255; output one probability per tag) and store them in
    /// records as predicted_tags, apart from the booru's tags. Needs ONNX Runtime, as
    /// --model does.
    #[arg(long, value_name = "ONNX", requires = "tag_names")]
    tagger: Option<PathBuf>,
    /// The tagger's tag list (WD14's selected_tags.csv: a header with name and
    /// category, one row per output).
    #[arg(long, value_name = "CSV", requires = "tagger")]
    tag_names: Option<PathBuf>,
    /// Lowest probability kept for general tags (and artist, copyright, meta).
    #[arg(long, default_value_t = 0.35, value_name = "0-1")]
    general_threshold: f64,
    /// Lowest probability kept for character tags.
    #[arg(long, default_value_t = 0.85, value_name = "0-1")]
    character_threshold: f64,
    #[command(flatten)]
    embedder: super::models::EmbedderArgs,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: IngestArgs, env: &mut Env) -> CommandResult {
    let mut rules = match &args.config {
        Some(path) => Rules::from_toml(path).map_err(|e| Failure::Usage(e.into()))?,
        None => Rules::default(),
    };
    if let Some(v) = args.min_width {
        rules.min_width = v;
    }
    if let Some(v) = args.min_height {
        rules.min_height = v;
    }
    if let Some(v) = args.min_megapixels {
        rules.min_megapixels = v;
    }
    if let Some(v) = args.phash_distance {
        rules.phash_distance = v;
    }
    let cascade = |path| DetectorSpec::Cascade {
        path,
        scale_factor: rules.faces.scale_factor,
        max_size: 0,
    };
    let detector = match (&args.cascade, args.model.spec(), args.detect) {
        (_, Some(model), _) => Some(DetectorSpec::Model(model)),
        (Some(c), None, _) => Some(cascade(super::models::cascade_path(c, env)?)),
        (None, None, true) => Some(cascade(super::models::cascade_path(
            "animeface".as_ref(),
            env,
        )?)),
        (None, None, false) => None,
    };
    let plan = IngestPlan {
        inputs: args.originals.clone(),
        out: args.out.clone(),
        meta: args.meta.clone(),
        taglist: args.taglist.clone(),
        rules,
        detector,
        tagger: match (&args.tagger, &args.tag_names) {
            (Some(model), Some(names)) => Some(TaggerSpec {
                model: model.clone(),
                tag_names: names.clone(),
                general_threshold: args.general_threshold,
                character_threshold: args.character_threshold,
            }),
            _ => None,
        },
        embedder: args.embedder.spec(),
    };
    let out = &mut env.out;
    let bars = out.progress();
    let result = ingest::run(&plan, &bars);
    bars.finish();
    let r = result.map_err(|e| match e {
        ingest::IngestError::Detector(_) | ingest::IngestError::Model(_) => {
            Failure::Usage(e.into())
        }
        e => Failure::Data(anyhow::Error::new(e).context("ingest failed")),
    })?;
    if args.json {
        out.json(&r)?;
        return Ok(());
    }
    let w = &mut out.out;
    writeln!(
        w,
        "ingested {} inputs into `{}` in {:.1} s",
        r.inputs,
        r.out.display(),
        r.seconds
    )?;
    writeln!(
        w,
        "  {} kept, {} filtered, {} duplicates, {} unreadable, {} ignored; {} analyses reused, {} items of an earlier run removed",
        r.kept, r.filtered, r.duplicates, r.unreadable, r.ignored, r.reused, r.removed
    )?;
    if !r.compositions.is_empty() {
        writeln!(
            w,
            "  faces: {}",
            super::detect::composition_counts(&r.compositions)
        )?;
    }
    writeln!(w, "  report: {}", r.report.display())?;
    Ok(())
}
