//! Image embedders: any ONNX image model that turns a picture into one vector (CLIP's
//! or SigLIP's image tower, a DINO backbone, a classifier's pooled features), run with
//! ONNX Runtime during ingest (`--embedder`) or over a release folder (`detect
//! --embedder`). The vector goes into the record as `embedding` (docs/detect.md,
//! "Embeddings"; docs/mining.md reads it).
//!
//! The input contract: one float32 image `[1, 3, S, S]` (or `[1, S, S, 3]`) with a
//! fixed side S, RGB, the picture's shorter side resized to S and the centre cropped,
//! each channel scaled to 0-1 and then normalised as `(v - mean) / std` with the
//! `--embedder-mean` and `--embedder-std` given (ImageNet's by default, which most
//! exports expect; CLIP's are close). The output: float32 `[1, D]` or `[D]`, D from 1
//! to [`MAX_DIMS`]. A token sequence (`[1, T, D]`) is refused: pool it in the export.
//! Vectors are scaled to unit length and stored as base64 of little-endian float16.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::onnx::{ModelError, Sessions};

pub use crate::imaging::embedding::{decode, encode, unit, MAX_DIMS};
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Clone, Debug)]
pub struct EmbedderSpec {
    pub model: PathBuf,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

pub struct Embedder {
    sessions: Sessions,
    size: u32,
    channels_first: bool,
    dims: usize,
    spec: EmbedderSpec,
    /// `embedder` in records.
    about: Value,
}

impl Embedder {
    /// Loads the model, checks its input and output, and runs it once on a blank
    /// image, before any image is read.
    pub fn load(spec: &EmbedderSpec) -> Result<Self, ModelError> {
        let bad_model = |problem: String| ModelError::Model {
            path: spec.model.clone(),
            problem,
        };
        if spec.std.iter().any(|s| !s.is_finite() || *s <= 0.0)
            || spec.mean.iter().any(|m| !m.is_finite())
        {
            return Err(bad_model(format!(
                "--embedder-std must be above 0 and --embedder-mean finite (got mean {:?}, std {:?})",
                spec.mean, spec.std
            )));
        }
        let mut sessions = Sessions::load(&spec.model)?;
        let (size, channels_first) = check_input(sessions.first()).map_err(bad_model)?;
        let declared = output_dims(sessions.first()).map_err(bad_model)?;
        let mut embedder = Self {
            sessions,
            size,
            channels_first,
            dims: 0,
            spec: spec.clone(),
            about: Value::Null,
        };
        let probe = embedder
            .run(&image::RgbImage::from_pixel(
                8,
                8,
                image::Rgb([128, 128, 128]),
            ))
            .map_err(|e| bad_model(format!("fails on a blank image: {e}")))?;
        if probe.is_empty() || probe.len() > MAX_DIMS {
            return Err(bad_model(format!(
                "gives {} values; an embedding has 1 to {MAX_DIMS}",
                probe.len()
            )));
        }
        if declared.is_some_and(|d| d != probe.len()) {
            return Err(bad_model(format!(
                "declares {} dimensions and gives {}",
                declared.unwrap_or(0),
                probe.len()
            )));
        }
        embedder.dims = probe.len();
        embedder.about = json!({
            "model": spec.model.file_name().map(|n| n.to_string_lossy().into_owned()),
            "model_blake3": embedder.sessions.blake3,
            "input_size": size,
            "dims": embedder.dims,
            "mean": spec.mean,
            "std": spec.std,
        });
        embedder.about["space"] = json!(embedder.fingerprint_of());
        Ok(embedder)
    }

    /// What records say about the embedder; `space` names the vectors that can be
    /// compared with each other (same model, same input).
    pub fn about(&self) -> &Value {
        &self.about
    }

    fn fingerprint_of(&self) -> String {
        let mut about = self.about.clone();
        if let Some(o) = about.as_object_mut() {
            o.remove("space");
        }
        blake3::hash(about.to_string().as_bytes()).to_hex()[..16].to_string()
    }

    pub fn fingerprint(&self) -> String {
        self.about["space"].as_str().unwrap_or_default().to_string()
    }

    /// Whether a record holds this embedder's vector (same model, same input).
    pub fn is_current(&self, record: &Value) -> bool {
        record["embedder"]["space"] == self.about["space"] && record["embedding"].is_string()
    }

    /// Puts a vector from [`Self::embed`] into a record, with what made it.
    pub fn annotate(&self, record: &mut Value, vector: String) {
        record["embedding"] = Value::String(vector);
        record["embedder"] = self.about.clone();
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    fn run(&self, rgb: &image::RgbImage) -> Result<Vec<f32>, String> {
        let s = self.size as usize;
        let input = centre_crop(rgb, self.size, self.channels_first, &self.spec)?;
        let shape = if self.channels_first {
            [1, 3, s, s]
        } else {
            [1, s, s, 3]
        };
        let (dims, values) = self.sessions.run(shape, input)?;
        match dims[..] {
            [n] | [1, n] if n == values.len() => Ok(values),
            _ => Err(format!("output {dims:?} is not one vector ([1, D] or [D])")),
        }
    }

    /// The picture's vector at unit length, encoded for a record.
    pub fn embed(&self, rgb: &image::RgbImage) -> Result<String, String> {
        let mut v = self.run(rgb)?;
        if v.len() != self.dims {
            return Err(format!("gave {} values, {} before", v.len(), self.dims));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err("gave a value that is not a finite number".into());
        }
        unit(&mut v);
        Ok(encode(&v))
    }
}

/// The input's side and whether channels come first.
fn check_input(session: &ort::session::Session) -> Result<(u32, bool), String> {
    super::onnx::square_image_input(
        session,
        "an embedder takes float32 [1, 3, size, size] (or [1, size, size, 3]) with a fixed size",
    )
}

/// The vector's length where the model declares it; an output that is not one vector
/// is refused.
fn output_dims(session: &ort::session::Session) -> Result<Option<usize>, String> {
    let output = session.outputs().first().ok_or("has no output")?;
    let ort::value::ValueType::Tensor { ty, shape, .. } = output.dtype() else {
        return Err(format!("output `{}` is not a tensor", output.name()));
    };
    let dims: &[i64] = shape;
    let wrong = || {
        format!(
            "output `{}` is {ty} {dims:?}; an embedder gives one float32 vector [1, D] (a token sequence must be pooled in the export)",
            output.name()
        )
    };
    if *ty != ort::value::TensorElementType::Float32 {
        return Err(wrong());
    }
    match *dims {
        [d] => Ok((d > 0).then_some(d as usize)),
        [n, d] if n <= 1 => Ok((d > 0).then_some(d as usize)),
        _ => Err(wrong()),
    }
}

/// The picture's shorter side resized to `size`, the centre cropped, as normalised RGB.
fn centre_crop(
    rgb: &image::RgbImage,
    size: u32,
    channels_first: bool,
    spec: &EmbedderSpec,
) -> Result<Vec<f32>, String> {
    let (w, h) = rgb.dimensions();
    if w == 0 || h == 0 {
        return Err("empty image".into());
    }
    let scale = size as f64 / f64::from(w.min(h));
    let nw = ((f64::from(w) * scale).round() as u32).max(size);
    let nh = ((f64::from(h) * scale).round() as u32).max(size);
    let resized = super::onnx::bilinear(rgb, nw, nh)?;
    let (x0, y0) = ((nw - size) / 2, (nh - size) / 2);
    let n = (size * size) as usize;
    let mut out = vec![0f32; 3 * n];
    for y in 0..size {
        for x in 0..size {
            let from = (((y0 + y) * nw + x0 + x) * 3) as usize;
            let i = (y * size + x) as usize;
            for c in 0..3 {
                let v = (f32::from(resized[from + c]) / 255.0 - spec.mean[c]) / spec.std[c];
                let at = if channels_first { c * n + i } else { i * 3 + c };
                out[at] = v;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn vectors_round_trip_as_float16_and_bad_ones_are_refused() {
        let mut v = vec![3.0f32, 4.0, 0.0];
        unit(&mut v);
        let text = encode(&v);
        let back = decode(&text).unwrap();
        assert!(
            back.iter().zip(&v).all(|(a, b)| (a - b).abs() < 1e-3),
            "{back:?}"
        );
        assert!(decode("!!").unwrap_err().contains("base64"));
        assert!(decode("AA==").unwrap_err().contains("float16"));
        // 0x7c00 is float16 infinity.
        let inf = base64::engine::general_purpose::STANDARD.encode([0x00, 0x7c]);
        assert!(decode(&inf).unwrap_err().contains("finite"));
        let long = encode(&vec![0.0; MAX_DIMS + 1]);
        assert!(decode(&long).unwrap_err().contains("longer"));
    }

    #[test]
    fn pictures_are_centre_cropped_and_normalised() {
        // Left half red, right half blue, 4x2: the crop of side 2 is the middle, one
        // column of each.
        let img = image::RgbImage::from_fn(4, 2, |x, _| {
            if x < 2 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        });
        let spec = EmbedderSpec {
            model: PathBuf::new(),
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        let chw = centre_crop(&img, 2, true, &spec).unwrap();
        // Red plane: left column 1, right column 0.
        assert_eq!(&chw[..4], &[1.0, 0.0, 1.0, 0.0]);
        let spec = EmbedderSpec {
            mean: [0.5; 3],
            std: [0.5; 3],
            ..spec
        };
        let hwc = centre_crop(&img, 2, false, &spec).unwrap();
        assert_eq!(&hwc[..3], &[1.0, -1.0, -1.0]);
    }
}
