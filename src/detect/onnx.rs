//! Face detection with any ONNX object detector that answers the way YOLO exports do,
//! run by ONNX Runtime through ort (docs/detect.md, "ONNX models").
//!
//! ONNX Runtime is loaded at run time (ort's `load-dynamic`), so seedpool builds
//! offline and runs without it until `--model` is given. The library is looked for in
//! `ORT_DYLIB_PATH`, then in seedpool's models folder, then in the `onnxruntime` package
//! of `python3` (`python3 -m pip install onnxruntime` puts it there).
//!
//! The model takes one float image `[1, 3, S, S]` (RGB, 0-1) and gives one float
//! tensor of candidate boxes: rows `[1, N, 4 + k]` or columns `[1, 4 + k, N]`, each box
//! centre x, centre y, width, height in input pixels followed by, for YOLOv5-style
//! models, an objectness and class scores, or for YOLOv8-style models class scores
//! alone. The image is letterboxed into the input (scaled to fit, centred on grey 114),
//! and boxes are mapped back and put through non-maximum suppression.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::Session;
use ort::value::{Tensor, ValueType};
use serde_json::{json, Map, Value};

use super::cascade::Rect;
use super::faces::Level;
use super::{Detector, Found};

/// Where the class and confidence columns are; see the module comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Yolo {
    /// Rows (`[1, N, 5 + classes]`) carry an objectness, columns do not.
    Auto,
    /// An objectness before the class scores (YOLOv5, v7).
    V5,
    /// Class scores only (YOLOv8, v11).
    V8,
}

/// A model and how to read it.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    pub path: PathBuf,
    /// Side of the square input; `None` takes the model's own, or 640 when the model
    /// accepts any size.
    pub input_size: Option<u32>,
    /// Boxes overlapping a more confident one by more than this (intersection over
    /// union) are the same face.
    pub iou: f64,
    /// The class that is a face; `None` counts every class.
    pub class: Option<usize>,
    pub yolo: Yolo,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "ONNX Runtime is needed for --model and --tagger and was not found ({looked}): install it with \
         `python3 -m pip install onnxruntime`, or set ORT_DYLIB_PATH to its libonnxruntime.so"
    )]
    NoRuntime { looked: String },
    #[error("ONNX Runtime `{path}`: {problem}")]
    Runtime { path: PathBuf, problem: String },
    #[error("model `{path}`: {problem}")]
    Model { path: PathBuf, problem: String },
}

const DEFAULT_INPUT: u32 = 640;
/// Letterbox padding, as YOLO's training used it.
const PAD: f32 = 114.0 / 255.0;

/// The ONNX Runtime library to load; see the module comment for the order.
pub fn find_runtime() -> Result<PathBuf, ModelError> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(p);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(ModelError::Runtime {
                path,
                problem: "ORT_DYLIB_PATH names no file".into(),
            })
        };
    }
    let mut looked = vec!["ORT_DYLIB_PATH unset".to_string()];
    // The runtime is loaded once per process, so it is found from the process's own
    // environment whatever environment a command runs in.
    let mut dirs = vec![super::models::models_dir(|k| std::env::var_os(k))];
    if let Some(package) = python_package() {
        dirs.push(package.join("capi"));
    } else {
        looked.push("no onnxruntime package for python3".into());
    }
    for dir in dirs {
        if let Some(lib) = runtime_in(&dir) {
            return Ok(lib);
        }
        looked.push(format!("none in `{}`", dir.display()));
    }
    Err(ModelError::NoRuntime {
        looked: looked.join(", "),
    })
}

/// `libonnxruntime.so` or a versioned name (the wheel ships only
/// `libonnxruntime.so.1.x.y`), not the providers' libraries beside it.
fn runtime_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// The folder of python3's `onnxruntime` package, found without importing it.
fn python_package() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u; s = u.find_spec('onnxruntime'); \
             print(s.submodule_search_locations[0] if s else '')",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let dir = text.trim();
    (out.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The runtime library `--model` would use, loaded, and its build description
/// (`seedpool models runtime`).
pub fn runtime_info() -> Result<(PathBuf, String), ModelError> {
    let (_, path) = environment()?;
    Ok((path, ort::info().to_string()))
}

/// The one ONNX Runtime environment of the process (ort allows one), and the library
/// it was loaded from.
static ENVIRONMENT: Mutex<Option<(ort::environment::Environment, PathBuf)>> = Mutex::new(None);

fn environment() -> Result<(ort::environment::Environment, PathBuf), ModelError> {
    let mut env = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(loaded) = env.as_ref() {
        return Ok(loaded.clone());
    }
    let path = find_runtime()?;
    let runtime = |problem: String| ModelError::Runtime {
        path: path.clone(),
        problem,
    };
    let built = ort::init_from(&path)
        .map_err(|e| runtime(e.to_string()))?
        .with_name("seedpool")
        .with_telemetry(false)
        .build()
        .map_err(|e| runtime(e.to_string()))?;
    *env = Some((built.clone(), path.clone()));
    Ok((built, path))
}

/// How the output tensor is laid out, learnt from the model at load.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// `[1, attributes, boxes]` rather than `[1, boxes, attributes]`.
    columns: bool,
    objectness: bool,
}

/// A model loaded into several sessions: ort runs a session from one thread at a time,
/// and one single-threaded session per core keeps every core busy on its own image.
/// A large model (a tagger can be 400 MB) gets fewer sessions with more threads each,
/// so that they stay within about 4 GiB. Shared by the detector and the tagger.
pub(crate) struct Sessions {
    sessions: Vec<Mutex<Session>>,
    input_name: String,
    /// blake3 of the model file.
    pub blake3: String,
}

impl Sessions {
    /// Loads the runtime and the model at `path` into its sessions.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let (env, _) = environment()?;
        let bad = |problem: String| ModelError::Model {
            path: path.to_path_buf(),
            problem,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let (count, threads) = session_count(bytes.len() as u64, rayon::current_num_threads());
        let mut sessions = Vec::with_capacity(count);
        for _ in 0..count {
            let session = Session::builder(&env)
                .and_then(|b| b.with_intra_threads(threads).map_err(ort::Error::from))
                .and_then(|mut b| b.commit_from_memory(&bytes))
                .map_err(|e| bad(format!("not a model ONNX Runtime can run: {e}")))?;
            sessions.push(Mutex::new(session));
        }
        let input_name = match sessions[0].get_mut().expect("new mutex").inputs() {
            [input] => input.name().to_string(),
            inputs => {
                return Err(bad(format!(
                    "has {} inputs; seedpool gives a model one image",
                    inputs.len()
                )))
            }
        };
        Ok(Self {
            sessions,
            input_name,
            blake3: blake3::hash(&bytes).to_hex().to_string(),
        })
    }

    /// One of the sessions, to read the model's inputs and outputs.
    pub fn first(&mut self) -> &Session {
        self.sessions[0].get_mut().expect("new mutex")
    }

    /// Runs the model on one input of `shape` and returns its first output's shape and
    /// values.
    pub fn run(
        &self,
        shape: [usize; 4],
        input: Vec<f32>,
    ) -> Result<(Vec<usize>, Vec<f32>), String> {
        let tensor = Tensor::from_array((shape, input)).map_err(|e| e.to_string())?;
        let slot = rayon::current_thread_index().unwrap_or(0) % self.sessions.len();
        let mut session = self.sessions[slot]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let outputs = session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(|e| e.to_string())?;
        let (shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| e.to_string())?;
        Ok((
            shape.iter().map(|&d| d.max(0) as usize).collect(),
            data.to_vec(),
        ))
    }
}

/// How many sessions of a model of `bytes` to make for `cores` worker threads, and the
/// threads each runs with. A session's memory is taken to be four times the model
/// file (weights plus working buffers).
fn session_count(bytes: u64, cores: usize) -> (usize, usize) {
    const BUDGET: u64 = 4 << 30;
    let cores = cores.max(1);
    let count = (BUDGET / bytes.saturating_mul(4).max(1)).clamp(1, cores as u64) as usize;
    (count, cores.div_ceil(count))
}

pub struct OnnxDetector {
    sessions: Sessions,
    size: u32,
    layout: Layout,
    spec: ModelSpec,
}

impl OnnxDetector {
    /// Loads the runtime and the model, checks its input and output shapes, and runs it
    /// once on a blank image, so a model that cannot work fails here, before any image.
    pub fn load(spec: &ModelSpec) -> Result<Self, ModelError> {
        let bad = |problem: String| ModelError::Model {
            path: spec.path.clone(),
            problem,
        };
        if !(0.0..=1.0).contains(&spec.iou) {
            return Err(bad(format!("--iou must be within 0-1 (got {})", spec.iou)));
        }
        let mut sessions = Sessions::load(&spec.path)?;
        let size = check_input(sessions.first(), spec.input_size).map_err(bad)?;
        let layout = check_output(sessions.first(), spec).map_err(bad)?;
        let detector = Self {
            sessions,
            size,
            layout,
            spec: spec.clone(),
        };
        let blank = image::RgbImage::new(size, size);
        detector
            .candidates(&blank, 1.0)
            .map_err(|e| bad(format!("fails on a blank image: {e}")))?;
        Ok(detector)
    }

    /// Boxes scoring at least `min_confidence`, in the image's pixels, before
    /// suppression.
    fn candidates(
        &self,
        rgb: &image::RgbImage,
        min_confidence: f32,
    ) -> Result<Vec<(Rect, f32)>, String> {
        let (input, fit) = letterbox(rgb, self.size)?;
        let s = self.size as usize;
        let (dims, data) = self.sessions.run([1, 3, s, s], input)?;
        let [1, a, b] = dims[..] else {
            return Err(format!("output has shape {dims:?}, not [1, _, _]"));
        };
        let (boxes, attrs) = if self.layout.columns { (b, a) } else { (a, b) };
        let first_class = if self.layout.objectness { 5 } else { 4 };
        if attrs <= first_class {
            return Err(format!(
                "output rows have {attrs} values, fewer than {}",
                first_class + 1
            ));
        }
        let at = |i: usize, k: usize| {
            if self.layout.columns {
                data[k * boxes + i]
            } else {
                data[i * attrs + k]
            }
        };
        let mut found = Vec::new();
        for i in 0..boxes {
            let class_score = match self.spec.class {
                Some(c) if first_class + c < attrs => at(i, first_class + c),
                Some(_) => 0.0,
                None => (first_class..attrs)
                    .map(|k| at(i, k))
                    .fold(f32::MIN, f32::max),
            };
            let score = if self.layout.objectness {
                at(i, 4) * class_score
            } else {
                class_score
            };
            // NaN scores (a broken model) are no faces.
            if score.is_nan() || score < min_confidence {
                continue;
            }
            let (cx, cy, w, h) = (at(i, 0), at(i, 1), at(i, 2), at(i, 3));
            if let Some(rect) = fit.back(cx - w / 2.0, cy - h / 2.0, w, h) {
                found.push((rect, score));
            }
        }
        Ok(found)
    }
}

/// The side images are letterboxed to.
fn check_input(session: &Session, wanted: Option<u32>) -> Result<u32, String> {
    let input = &session.inputs()[0];
    let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
        return Err(format!("input `{}` is not a tensor", input.name()));
    };
    if *ty != ort::value::TensorElementType::Float32 {
        return Err(format!(
            "input `{}` holds {ty}; only float32 images are supported",
            input.name()
        ));
    }
    let dims: &[i64] = shape;
    let fixed = |d: i64, want: i64| d < 0 || d == want;
    let &[n, c, h, w] = dims else {
        return Err(format!(
            "input `{}` has shape {dims:?}; an image is [1, 3, height, width]",
            input.name()
        ));
    };
    if !fixed(n, 1) || !fixed(c, 3) {
        return Err(format!(
            "input `{}` has shape {dims:?}; an image is [1, 3, height, width] (3 colour channels)",
            input.name()
        ));
    }
    let size = match (h, w, wanted) {
        (h, w, _) if h > 0 && w > 0 && h != w => {
            return Err(format!(
                "input `{}` is {w}x{h}; only square inputs are supported",
                input.name()
            ))
        }
        (h, _, Some(s)) if h > 0 && h != i64::from(s) => {
            return Err(format!(
                "input `{}` is fixed at {h}x{h}; --input-size {s} does not fit it",
                input.name()
            ))
        }
        (h, _, _) if h > 0 => h as u32,
        (_, _, Some(s)) => s,
        _ => DEFAULT_INPUT,
    };
    if size == 0 || size > 4096 {
        return Err(format!("input size {size} is outside 1-4096"));
    }
    Ok(size)
}

/// Which way round the output is and whether it carries an objectness.
fn check_output(session: &Session, spec: &ModelSpec) -> Result<Layout, String> {
    let Some(output) = session.outputs().first() else {
        return Err("has no output".into());
    };
    let ValueType::Tensor { ty, shape, .. } = output.dtype() else {
        return Err(format!("output `{}` is not a tensor", output.name()));
    };
    if *ty != ort::value::TensorElementType::Float32 {
        return Err(format!(
            "output `{}` holds {ty}; YOLO-style float32 boxes are expected",
            output.name()
        ));
    }
    let dims: &[i64] = shape;
    let &[n, a, b] = dims else {
        return Err(format!(
            "output `{}` has shape {dims:?}; YOLO-style boxes are [1, boxes, 4 + scores] or [1, 4 + scores, boxes]",
            output.name()
        ));
    };
    if n > 1 {
        return Err(format!(
            "output `{}` has batch {n}; one image gives one batch",
            output.name()
        ));
    }
    // Detectors give thousands of candidates and a handful of values each, so the
    // larger side is the boxes'; an unknown side is taken to be the boxes'.
    let columns = match (a, b) {
        (a, b) if a > 0 && b > 0 => a < b,
        (a, _) => a > 0,
    };
    let objectness = match spec.yolo {
        Yolo::Auto => !columns,
        Yolo::V5 => true,
        Yolo::V8 => false,
    };
    let attrs = if columns { a } else { b };
    let needed = if objectness { 6 } else { 5 };
    if attrs > 0 && attrs < needed {
        return Err(format!(
            "output `{}` has shape {dims:?}: {attrs} values a box, fewer than the {needed} of \
             box, {}class score",
            output.name(),
            if objectness { "objectness, " } else { "" }
        ));
    }
    let classes = attrs - needed + 1;
    if let Some(c) = spec.class {
        if attrs > 0 && c as i64 >= classes {
            return Err(format!(
                "--class {c}: output `{}` has {classes} classes",
                output.name()
            ));
        }
    }
    Ok(Layout {
        columns,
        objectness,
    })
}

/// How an image sits in the letterboxed input.
struct Fit {
    scale: f32,
    pad_x: f32,
    pad_y: f32,
    width: u32,
    height: u32,
}

impl Fit {
    /// A box in input pixels as a box in the image's, clipped to it; `None` when
    /// nothing of it is inside.
    fn back(&self, x: f32, y: f32, w: f32, h: f32) -> Option<Rect> {
        let x0 = ((x - self.pad_x) / self.scale).max(0.0);
        let y0 = ((y - self.pad_y) / self.scale).max(0.0);
        let x1 = ((x + w - self.pad_x) / self.scale).min(self.width as f32);
        let y1 = ((y + h - self.pad_y) / self.scale).min(self.height as f32);
        if !(x1 > x0 && y1 > y0) {
            return None;
        }
        Some(Rect {
            x: x0.round() as i32,
            y: y0.round() as i32,
            width: (x1 - x0).round() as i32,
            height: (y1 - y0).round() as i32,
        })
    }
}

/// A model's one image input: its square side and whether channels come first, or
/// why it is not float32 `[1, 3, S, S]` or `[1, S, S, 3]` with a fixed S (`wants`
/// says what the caller takes).
pub(crate) fn square_image_input(session: &Session, wants: &str) -> Result<(u32, bool), String> {
    let input = &session.inputs()[0];
    let ort::value::ValueType::Tensor { ty, shape, .. } = input.dtype() else {
        return Err(format!("input `{}` is not a tensor", input.name()));
    };
    let dims: &[i64] = shape;
    let wrong = || format!("input `{}` is {ty} {dims:?}; {wants}", input.name());
    if *ty != ort::value::TensorElementType::Float32 {
        return Err(wrong());
    }
    match *dims {
        [n, 3, h, w] if n <= 1 && h > 0 && h == w => Ok((h as u32, true)),
        [n, h, w, 3] if n <= 1 && h > 0 && h == w => Ok((h as u32, false)),
        _ => Err(wrong()),
    }
}

/// An RGB picture resized to `w` x `h` by bilinear interpolation (what detectors and
/// taggers are fed; their training pipelines resize this way), as packed RGB bytes.
pub(crate) fn bilinear(rgb: &image::RgbImage, w: u32, h: u32) -> Result<Vec<u8>, String> {
    use fast_image_resize::images::{Image, ImageRef};
    use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
    let src = ImageRef::new(rgb.width(), rgb.height(), rgb.as_raw(), PixelType::U8x3)
        .map_err(|e| e.to_string())?;
    let mut dst = Image::new(w, h, PixelType::U8x3);
    Resizer::new()
        .resize(
            &src,
            &mut dst,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
        )
        .map_err(|e| e.to_string())?;
    Ok(dst.into_vec())
}

/// The image scaled to fit `size` x `size`, centred on grey, as planar RGB in 0-1.
fn letterbox(rgb: &image::RgbImage, size: u32) -> Result<(Vec<f32>, Fit), String> {
    let (w, h) = rgb.dimensions();
    if w == 0 || h == 0 {
        return Err("empty image".into());
    }
    let scale = (size as f32 / w as f32).min(size as f32 / h as f32);
    let nw = ((w as f32 * scale).round() as u32).clamp(1, size);
    let nh = ((h as f32 * scale).round() as u32).clamp(1, size);
    let pixels = bilinear(rgb, nw, nh)?;
    let s = size as usize;
    let (px, py) = ((size - nw) / 2, (size - nh) / 2);
    let mut planes = vec![PAD; 3 * s * s];
    for y in 0..nh as usize {
        for x in 0..nw as usize {
            let from = (y * nw as usize + x) * 3;
            let to = (y + py as usize) * s + x + px as usize;
            for c in 0..3 {
                planes[c * s * s + to] = f32::from(pixels[from + c]) / 255.0;
            }
        }
    }
    Ok((
        planes,
        Fit {
            scale,
            pad_x: px as f32,
            pad_y: py as f32,
            width: w,
            height: h,
        },
    ))
}

fn iou(a: &Rect, b: &Rect) -> f32 {
    let w = (a.x + a.width).min(b.x + b.width) - a.x.max(b.x);
    let h = (a.y + a.height).min(b.y + b.height) - a.y.max(b.y);
    let inter = (w.max(0) as f32) * (h.max(0) as f32);
    let union = (a.width * a.height + b.width * b.height) as f32 - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Greedy non-maximum suppression: the most confident box of each overlapping group.
fn suppress(mut boxes: Vec<(Rect, f32)>, threshold: f32) -> Vec<(Rect, f32)> {
    boxes.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept: Vec<(Rect, f32)> = Vec::new();
    for b in boxes {
        if kept.iter().all(|k| iou(&k.0, &b.0) <= threshold) {
            kept.push(b);
        }
    }
    kept
}

impl Detector for OnnxDetector {
    fn detect_levels(
        &self,
        rgb: &image::RgbImage,
        levels: &[Level],
    ) -> Result<Vec<Vec<Found>>, String> {
        let lowest = levels
            .iter()
            .map(|l| l.min_confidence as f32)
            .fold(f32::INFINITY, f32::min);
        let all = self.candidates(rgb, lowest)?;
        Ok(levels
            .iter()
            .map(|level| {
                let passing: Vec<(Rect, f32)> = all
                    .iter()
                    .filter(|(r, score)| {
                        *score >= level.min_confidence as f32
                            && r.width >= level.min_size as i32
                            && r.height >= level.min_size as i32
                    })
                    .copied()
                    .collect();
                let mut faces: Vec<Found> = suppress(passing, self.spec.iou as f32)
                    .into_iter()
                    .map(|(rect, score)| Found {
                        rect,
                        confidence: Some((score * 10_000.0).round() / 10_000.0),
                    })
                    .collect();
                super::largest_first(&mut faces);
                faces
            })
            .collect())
    }

    fn about(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "model".into(),
            json!(self
                .spec
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())),
        );
        m.insert("model_blake3".into(), json!(self.sessions.blake3));
        m.insert("input_size".into(), json!(self.size));
        m.insert(
            "yolo".into(),
            json!(if self.layout.objectness { "v5" } else { "v8" }),
        );
        m.insert("class".into(), json!(self.spec.class));
        m.insert("iou".into(), json!(self.spec.iou));
        m
    }

    fn level_about(&self, level: &Level) -> Value {
        json!({"min_confidence": level.min_confidence, "min_size": level.min_size})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(x: i32, y: i32, w: i32, h: i32) -> Rect {
        Rect {
            x,
            y,
            width: w,
            height: h,
        }
    }

    #[test]
    fn letterbox_centres_the_image_and_boxes_map_back() {
        let mut img = image::RgbImage::new(128, 64);
        img.put_pixel(0, 0, image::Rgb([255, 0, 0]));
        let (planes, fit) = letterbox(&img, 64).unwrap();
        assert_eq!(planes.len(), 3 * 64 * 64);
        assert_eq!((fit.scale, fit.pad_x, fit.pad_y), (0.5, 0.0, 16.0));
        // Padding rows are grey, the image's rows are not.
        assert_eq!(planes[0], PAD);
        assert!(planes[16 * 64] > 0.0 && planes[16 * 64] < PAD);
        assert_eq!(fit.back(32.0, 16.0, 16.0, 16.0), Some(rect(64, 0, 32, 32)));
        // Clipped to the image; nothing inside is nothing.
        assert_eq!(fit.back(-8.0, 40.0, 16.0, 40.0), Some(rect(0, 48, 16, 16)));
        assert_eq!(fit.back(0.0, 0.0, 16.0, 10.0), None);
    }

    #[test]
    fn large_models_get_fewer_sessions_with_more_threads() {
        assert_eq!(session_count(5 << 20, 16), (16, 1));
        assert_eq!(session_count(400 << 20, 16), (2, 8));
        assert_eq!(session_count(2 << 30, 16), (1, 16));
        assert_eq!(session_count(5 << 20, 0), (1, 1));
    }

    #[test]
    fn suppression_keeps_the_most_confident_of_overlapping_boxes() {
        let kept = suppress(
            vec![
                (rect(0, 0, 10, 10), 0.5),
                (rect(1, 1, 10, 10), 0.9),
                (rect(30, 30, 10, 10), 0.3),
            ],
            0.45,
        );
        assert_eq!(
            kept,
            vec![(rect(1, 1, 10, 10), 0.9), (rect(30, 30, 10, 10), 0.3)]
        );
        assert!((iou(&rect(0, 0, 10, 10), &rect(5, 0, 10, 10)) - 1.0 / 3.0).abs() < 1e-6);
    }
}
