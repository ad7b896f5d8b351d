//! WD14-style multi-label taggers (SmilingWolf's `wd-*-tagger` family and models
//! exported the same way), run with ONNX Runtime during ingest (`--tagger`); their
//! predictions go into records as `predicted_tags`, apart from the booru's tags
//! (docs/detect.md, "Predicted tags").
//!
//! Such a model takes one image `[1, S, S, 3]` (or `[1, 3, S, S]`), BGR, 0-255, padded
//! to a square with white, and gives `[1, N]` probabilities, one per row of its tag
//! list (`selected_tags.csv`: a header naming at least `name` and `category`;
//! category 9 is a rating, 4 a character, 0 a general tag, as Danbooru numbers them).

use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::onnx::{ModelError, Sessions};

#[derive(Clone, Debug)]
pub struct TaggerSpec {
    pub model: PathBuf,
    pub tag_names: PathBuf,
    /// Lowest probability kept for general (and artist, copyright, meta) tags.
    pub general_threshold: f64,
    /// Lowest probability kept for character tags.
    pub character_threshold: f64,
}

/// The record's group for a Danbooru category number.
fn group(category: u32) -> &'static str {
    match category {
        9 => "rating",
        4 => "character",
        1 => "artist",
        3 => "copyright",
        5 => "meta",
        _ => "general",
    }
}

pub struct Tagger {
    sessions: Sessions,
    size: u32,
    channels_first: bool,
    /// Each output's tag name and group.
    tags: Vec<(String, &'static str)>,
    spec: TaggerSpec,
    /// `tagger` in records.
    about: Value,
}

impl Tagger {
    /// Loads the tag list and the model, checks that they fit each other, and runs the
    /// model once on a blank image, before any image is read.
    pub fn load(spec: &TaggerSpec) -> Result<Self, ModelError> {
        let bad_model = |problem: String| ModelError::Model {
            path: spec.model.clone(),
            problem,
        };
        for (name, t) in [
            ("--general-threshold", spec.general_threshold),
            ("--character-threshold", spec.character_threshold),
        ] {
            if !(0.0..=1.0).contains(&t) {
                return Err(bad_model(format!("{name} must be within 0-1 (got {t})")));
            }
        }
        let csv = std::fs::read(&spec.tag_names).map_err(|e| ModelError::Model {
            path: spec.tag_names.clone(),
            problem: e.to_string(),
        })?;
        let tags = parse_tag_names(&csv).map_err(|problem| ModelError::Model {
            path: spec.tag_names.clone(),
            problem,
        })?;
        let mut sessions = Sessions::load(&spec.model)?;
        let (size, channels_first) = check_input(sessions.first()).map_err(bad_model)?;
        if let Some(n) = output_width(sessions.first()).map_err(bad_model)? {
            if n != tags.len() {
                return Err(bad_model(format!(
                    "gives {n} probabilities and `{}` names {} tags",
                    spec.tag_names.display(),
                    tags.len()
                )));
            }
        }
        let about = json!({
            "model": spec.model.file_name().map(|n| n.to_string_lossy().into_owned()),
            "model_blake3": sessions.blake3,
            "tag_names_blake3": blake3::hash(&csv).to_hex().to_string(),
            "input_size": size,
            "general_threshold": spec.general_threshold,
            "character_threshold": spec.character_threshold,
        });
        let tagger = Self {
            sessions,
            size,
            channels_first,
            tags,
            spec: spec.clone(),
            about,
        };
        tagger
            .predict(&image::RgbImage::new(8, 8))
            .map_err(|e| bad_model(format!("fails on a blank image: {e}")))?;
        Ok(tagger)
    }

    /// What records say about the tagger, and what identifies its results.
    pub fn about(&self) -> &Value {
        &self.about
    }

    pub fn fingerprint(&self) -> String {
        blake3::hash(self.about.to_string().as_bytes()).to_hex()[..16].to_string()
    }

    /// Tags above their threshold by group (every rating is kept), most probable first,
    /// probabilities rounded to 4 places.
    pub fn predict(&self, rgb: &image::RgbImage) -> Result<Value, String> {
        let s = self.size as usize;
        let input = square_bgr(rgb, self.size, self.channels_first)?;
        let shape = if self.channels_first {
            [1, 3, s, s]
        } else {
            [1, s, s, 3]
        };
        let (dims, probabilities) = self.sessions.run(shape, input)?;
        if probabilities.len() != self.tags.len() {
            return Err(format!(
                "output {dims:?} has {} values for {} tags",
                probabilities.len(),
                self.tags.len()
            ));
        }
        let mut kept: Vec<(&str, &str, f64)> = self
            .tags
            .iter()
            .zip(&probabilities)
            .map(|((name, g), &p)| (name.as_str(), *g, f64::from(p)))
            .filter(|(_, g, p)| match *g {
                "rating" => true,
                "character" => *p >= self.spec.character_threshold,
                _ => *p >= self.spec.general_threshold,
            })
            .collect();
        kept.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(b.0)));
        let mut groups: Map<String, Value> = Map::new();
        for g in ["rating", "character", "general"] {
            groups.insert(g.into(), Value::Object(Map::new()));
        }
        for (name, g, p) in kept {
            let entry = groups.entry(g).or_insert_with(|| Value::Object(Map::new()));
            entry[name] = json!((p * 10_000.0).round() / 10_000.0);
        }
        Ok(Value::Object(groups))
    }
}

/// The tag list's rows as (name, group), in output order.
fn parse_tag_names(bytes: &[u8]) -> Result<Vec<(String, &'static str)>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    let mut records = crate::files::delimited_records(text, b',');
    let header = match records.next() {
        None => return Err("empty: a header line is needed".into()),
        Some((line, Err(e))) => return Err(format!("line {line}: {e}")),
        Some((_, Ok(header))) => header,
    };
    let find = |want: &str| {
        header.iter().position(|c| c.trim() == want).ok_or(format!(
            "the header `{}` has no `{want}` column (WD14's selected_tags.csv has tag_id,name,category,count)",
            header.iter().collect::<Vec<_>>().join(",")
        ))
    };
    let (name_at, category_at) = (find("name")?, find("category")?);
    let mut tags = Vec::new();
    for (line, fields) in records {
        let fields = fields.map_err(|e| format!("line {line}: {e}"))?;
        let field = |at: usize| {
            fields
                .get(at)
                .map(str::trim)
                .ok_or(format!("line {line}: {} fields, too few", fields.len()))
        };
        let name = field(name_at)?;
        if name.is_empty() {
            return Err(format!("line {line}: empty tag name"));
        }
        let category = field(category_at)?;
        let category: u32 = category
            .parse()
            .map_err(|_| format!("line {line}: category `{category}` is not a number"))?;
        tags.push((name.to_string(), group(category)));
    }
    if tags.is_empty() {
        return Err("no tags under the header".into());
    }
    Ok(tags)
}

/// The input's side and whether channels come first.
fn check_input(session: &ort::session::Session) -> Result<(u32, bool), String> {
    super::onnx::square_image_input(
        session,
        "a WD14-style tagger takes float32 [1, size, size, 3] (or [1, 3, size, size]) with a fixed size",
    )
}

/// The number of probabilities the first output gives, when the model says.
fn output_width(session: &ort::session::Session) -> Result<Option<usize>, String> {
    let output = session.outputs().first().ok_or("has no output")?;
    let ort::value::ValueType::Tensor { ty, shape, .. } = output.dtype() else {
        return Err(format!("output `{}` is not a tensor", output.name()));
    };
    let dims: &[i64] = shape;
    match *dims {
        [n, k] if n <= 1 && *ty == ort::value::TensorElementType::Float32 => {
            Ok((k > 0).then_some(k as usize))
        }
        _ => Err(format!(
            "output `{}` is {ty} {dims:?}; a tagger gives float32 [1, tags]",
            output.name()
        )),
    }
}

/// The picture centred on a white square, resized to `size`, as BGR floats 0-255.
fn square_bgr(rgb: &image::RgbImage, size: u32, channels_first: bool) -> Result<Vec<f32>, String> {
    let (w, h) = rgb.dimensions();
    if w == 0 || h == 0 {
        return Err("empty image".into());
    }
    let side = w.max(h);
    let mut square = image::RgbImage::from_pixel(side, side, image::Rgb([255, 255, 255]));
    image::imageops::replace(
        &mut square,
        rgb,
        i64::from((side - w) / 2),
        i64::from((side - h) / 2),
    );
    let pixels = super::onnx::bilinear(&square, size, size)?;
    let n = (size * size) as usize;
    let mut out = vec![0f32; 3 * n];
    for (i, px) in pixels.chunks_exact(3).enumerate() {
        for (c, &v) in [px[2], px[1], px[0]].iter().enumerate() {
            let at = if channels_first { c * n + i } else { i * 3 + c };
            out[at] = f32::from(v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_lists_read_as_wd14_writes_them() {
        let csv = b"tag_id,name,category,count\n9999999,general,9,807691\n470575,1girl,0,4225150\n1,\"a,b\",4,3\n";
        let tags = parse_tag_names(csv).unwrap();
        assert_eq!(
            tags,
            vec![
                ("general".to_string(), "rating"),
                ("1girl".to_string(), "general"),
                ("a,b".to_string(), "character"),
            ]
        );
        let e = parse_tag_names(b"id,tag\n1,x\n").unwrap_err();
        assert!(e.contains("no `name` column"), "{e}");
        let e = parse_tag_names(b"name,category\nx,nine\n").unwrap_err();
        assert!(e.contains("line 2: category `nine`"), "{e}");
        // A quoted newline stays inside its field, and later lines keep their numbers.
        let tags = parse_tag_names(b"name,category\n\"two\nlines\",0\ny,z\n").unwrap_err();
        assert!(tags.contains("line 4: category `z`"), "{tags}");
        let tags = parse_tag_names(b"name,category\n\"two\nlines\",0\n").unwrap();
        assert_eq!(tags, vec![("two\nlines".to_string(), "general")]);
    }

    #[test]
    fn pictures_are_padded_white_and_turned_bgr() {
        let img = image::RgbImage::from_pixel(4, 2, image::Rgb([255, 0, 0]));
        let hwc = square_bgr(&img, 4, false).unwrap();
        // Row 0 is padding (white), rows 1-2 the red picture: B, G, R = 0, 0, 255.
        assert_eq!(&hwc[..3], &[255.0, 255.0, 255.0]);
        assert_eq!(&hwc[4 * 3 + 3..4 * 3 + 6], &[0.0, 0.0, 255.0]);
        let chw = square_bgr(&img, 4, true).unwrap();
        assert_eq!((chw[4], chw[16 + 4], chw[32 + 4]), (0.0, 0.0, 255.0));
    }
}
