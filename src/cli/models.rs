//! `seedpool models`: the cascades seedpool knows by name, and the ONNX Runtime it
//! loads for ONNX models.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::{CommandResult, Env, Failure};
use crate::detect::models::{self, ModelError, MODELS};

/// Fetch and list the face cascades seedpool knows by name (`--cascade animeface`), and
/// check the ONNX Runtime that `--model` and `--tagger` load.
#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Download a model from its canonical address into the models folder
    /// ($SEEDPOOL_DATA/models, else $XDG_DATA_HOME/seedpool/models, else
    /// ~/.local/share/seedpool/models), after checking that it loads.
    Fetch {
        /// The model's name (see `seedpool models list`).
        name: String,
        /// Download from this URL instead (a mirror).
        #[arg(long, value_name = "URL")]
        from: Option<String>,
        /// Put it in this folder instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// List the models, their canonical addresses and whether they are fetched.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Find and load the ONNX Runtime library that --model and --tagger use
    /// (ORT_DYLIB_PATH, else the models folder, else python3's onnxruntime package) and
    /// print where it is and what build it is.
    Runtime {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ModelsCommand, env: &mut Env) -> CommandResult {
    let models_dir = models_dir(env);
    let out = &mut env.out;
    match cmd {
        ModelsCommand::Fetch {
            name,
            from,
            dir,
            json,
        } => {
            let dir = dir.unwrap_or(models_dir);
            let path = models::fetch(&name, from.as_deref(), &dir).map_err(|e| match e {
                ModelError::Unknown(_) => Failure::Usage(e.into()),
                e => Failure::Data(e.into()),
            })?;
            if json {
                out.json(&json!({"name": name, "path": path}))?;
            } else {
                writeln!(out.out, "{name}: {}", path.display())?;
            }
        }
        ModelsCommand::List { json } => {
            let dir = models_dir;
            let rows: Vec<_> = MODELS
                .iter()
                .map(|m| {
                    let path = dir.join(m.file);
                    json!({"name": m.name, "about": m.about, "url": m.url,
                           "path": path, "fetched": path.is_file()})
                })
                .collect();
            if json {
                out.json(&rows)?;
            } else {
                for (m, r) in MODELS.iter().zip(&rows) {
                    let state = if r["fetched"] == true {
                        format!("fetched: {}", dir.join(m.file).display())
                    } else {
                        "not fetched".to_string()
                    };
                    writeln!(
                        out.out,
                        "{}  {} ({})\n    {}",
                        m.name, m.about, state, m.url
                    )?;
                }
            }
        }
        ModelsCommand::Runtime { json } => {
            let (path, info) =
                crate::detect::onnx::runtime_info().map_err(|e| Failure::Data(e.into()))?;
            if json {
                out.json(&json!({"path": path, "build": info}))?;
            } else {
                writeln!(out.out, "ONNX Runtime: {}\n  {info}", path.display())?;
            }
        }
    }
    Ok(())
}

/// The models folder the environment names.
fn models_dir(env: &Env) -> PathBuf {
    env.path(&models::models_dir(|k| env.var(k)))
}

/// A `--cascade` argument as a path: a file (relative to the working folder), or a
/// fetched model's name.
pub fn cascade_path(arg: &std::path::Path, env: &Env) -> Result<PathBuf, Failure> {
    let file = env.path(arg);
    if file.exists() {
        return Ok(file);
    }
    models::resolve(arg, &models_dir(env)).map_err(|e| Failure::Usage(e.into()))
}

/// `--model` and how to read it, shared by `ingest` and `detect`.
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// Search faces with an ONNX object detector with YOLO-style outputs (e.g. a YOLOv8
    /// face model exported to ONNX) instead of a cascade. Needs ONNX Runtime: `python3
    /// -m pip install onnxruntime`, or ORT_DYLIB_PATH naming libonnxruntime.so. Boxes
    /// are kept by the strictness levels' min_confidence ([faces] in --config), or by
    /// --confidence when `detect` is given images.
    #[arg(long, value_name = "ONNX", conflicts_with = "cascade")]
    pub model: Option<PathBuf>,
    /// The model's square input side in pixels [default: the model's own, else 640].
    #[arg(long, value_name = "PX", requires = "model")]
    pub input_size: Option<u32>,
    /// Boxes overlapping a more confident one by more than this (intersection over
    /// union) are dropped as the same face.
    #[arg(long, default_value_t = 0.45, value_name = "0-1")]
    pub iou: f64,
    /// The model's class that is a face, counted from 0 [default: every class].
    #[arg(long, value_name = "N", requires = "model")]
    pub class: Option<usize>,
    /// The output's columns: v5 has an objectness before the class scores, v8 has
    /// none; auto takes v5 for [1, boxes, values] and v8 for [1, values, boxes].
    #[arg(long, value_enum, default_value_t = crate::detect::onnx::Yolo::Auto)]
    pub yolo: crate::detect::onnx::Yolo,
}

impl ModelArgs {
    pub fn spec(&self) -> Option<crate::detect::onnx::ModelSpec> {
        self.model
            .as_ref()
            .map(|path| crate::detect::onnx::ModelSpec {
                path: path.clone(),
                input_size: self.input_size,
                iou: self.iou,
                class: self.class,
                yolo: self.yolo,
            })
    }
}

/// `--embedder` and how to feed it, shared by `ingest` and `detect`.
#[derive(clap::Args, Debug)]
pub struct EmbedderArgs {
    /// Compute an image embedding of every thumbnail with an ONNX image model (input
    /// float32 [1, 3, S, S] or [1, S, S, 3], RGB scaled to 0-1 then normalised by
    /// --embedder-mean and --embedder-std; output one vector [1, D]) and store it in the
    /// record as `embedding`, which merges index for `mine similar --by embedding` and
    /// `mine clusters --by embedding`. Needs ONNX Runtime, as --model does.
    #[arg(long, value_name = "ONNX")]
    pub embedder: Option<PathBuf>,
    /// The mean subtracted from each channel (on the 0-1 scale) before dividing by
    /// --embedder-std [default: ImageNet's 0.485,0.456,0.406].
    #[arg(long, value_name = "R,G,B", value_parser = parse_rgb, requires = "embedder")]
    pub embedder_mean: Option<[f32; 3]>,
    /// Each channel's divisor [default: ImageNet's 0.229,0.224,0.225; CLIP exports
    /// expect 0.2686,0.2613,0.2758 with mean 0.4815,0.4578,0.4082].
    #[arg(long, value_name = "R,G,B", value_parser = parse_rgb, requires = "embedder")]
    pub embedder_std: Option<[f32; 3]>,
}

impl EmbedderArgs {
    pub fn spec(&self) -> Option<crate::detect::embedder::EmbedderSpec> {
        use crate::detect::embedder::{EmbedderSpec, IMAGENET_MEAN, IMAGENET_STD};
        self.embedder.as_ref().map(|model| EmbedderSpec {
            model: model.clone(),
            mean: self.embedder_mean.unwrap_or(IMAGENET_MEAN),
            std: self.embedder_std.unwrap_or(IMAGENET_STD),
        })
    }
}

/// Three comma-separated numbers, one per channel.
fn parse_rgb(text: &str) -> Result<[f32; 3], String> {
    let values: Vec<f32> = text
        .split(',')
        .map(|v| v.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{text}`: {e}"))?;
    <[f32; 3]>::try_from(values).map_err(|v| {
        format!(
            "`{text}`: {} numbers, one per channel R,G,B takes 3",
            v.len()
        )
    })
}
