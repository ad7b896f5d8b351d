//! Faces for ingest records: one cascade scan of the thumbnail, read at three strictness
//! levels, and the composition class those boxes give (docs/detect.md).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::cascade::{self, group_rectangles, Cascade, CascadeError, Params, Rect};

/// One strictness level: `detectMultiScale`'s min-neighbors and min-size.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Level {
    pub min_neighbors: u32,
    /// Smallest face side in pixels of the searched image (the thumbnail).
    pub min_size: u32,
}

/// Face height as a fraction of the image height at which each composition begins;
/// smaller faces are a scene.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CompositionRules {
    pub close_up: f64,
    pub portrait: f64,
    pub upper_body: f64,
    pub full_body: f64,
}

impl Default for CompositionRules {
    fn default() -> Self {
        Self {
            close_up: 0.45,
            portrait: 0.25,
            upper_body: 0.12,
            full_body: 0.06,
        }
    }
}

/// How faces are searched; `[faces]` in ingest's TOML.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FaceRules {
    pub scale_factor: f64,
    pub strict: Level,
    pub medium: Level,
    pub relaxed: Level,
    /// Boxes kept per level, largest first.
    pub max_boxes: usize,
    pub composition: CompositionRules,
}

impl Default for FaceRules {
    fn default() -> Self {
        Self {
            scale_factor: 1.1,
            strict: Level {
                min_neighbors: 5,
                min_size: 48,
            },
            medium: Level {
                min_neighbors: 3,
                min_size: 32,
            },
            relaxed: Level {
                min_neighbors: 1,
                min_size: 24,
            },
            max_boxes: 5,
            composition: CompositionRules::default(),
        }
    }
}

/// Boxes as fractions of the searched image: x, y, width, height.
pub type Box4 = [f64; 4];

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Faces {
    pub strict: Vec<Box4>,
    pub medium: Vec<Box4>,
    pub relaxed: Vec<Box4>,
}

/// A loaded cascade with the rules it runs under, and what records say about both.
pub struct FaceDetector {
    cascade: Cascade,
    rules: FaceRules,
    /// `face_detector` in a record: the cascade's name and blake3 and the parameters.
    about: Value,
}

impl FaceDetector {
    pub fn load(path: &Path, rules: &FaceRules) -> Result<Self, CascadeError> {
        let (cascade, bytes) = Cascade::read(path)?;
        let level = |l: Level| json!({"min_neighbors": l.min_neighbors, "min_size": l.min_size});
        let about = json!({
            "cascade": path.file_name().map(|n| n.to_string_lossy().into_owned()),
            "cascade_blake3": blake3::hash(&bytes).to_hex().to_string(),
            "searched": "thumbnail",
            "scale_factor": rules.scale_factor,
            "strict": level(rules.strict),
            "medium": level(rules.medium),
            "relaxed": level(rules.relaxed),
            "composition": rules.composition,
        });
        Ok(Self {
            cascade,
            rules: rules.clone(),
            about,
        })
    }

    /// What identifies this detector's results: a different cascade or parameters
    /// means they must be computed again.
    pub fn fingerprint(&self) -> String {
        blake3::hash(self.about.to_string().as_bytes()).to_hex()[..16].to_string()
    }

    /// Faces in an RGB image (the thumbnail).
    pub fn find(&self, rgb: &image::RgbImage) -> Faces {
        find(
            &self.cascade,
            &cascade::grey(rgb.as_raw()),
            rgb.width(),
            rgb.height(),
            &self.rules,
        )
    }

    /// Writes `faces`, `face_detector` and `composition` into a record.
    pub fn annotate(&self, record: &mut Value, faces: &Faces) {
        record["faces"] = json!(faces);
        record["face_detector"] = self.about.clone();
        record["composition"] = json!(composition(faces, &self.rules.composition));
    }

    /// Whether a record already holds this detector's results.
    pub fn is_current(&self, record: &Value) -> bool {
        record.get("face_detector") == Some(&self.about)
    }
}

/// Scans once with every window kept, from the smallest size any level accepts, then
/// groups for each level: the same boxes as three separate `detectMultiScale` runs,
/// since a level's larger min-size only drops whole scales.
pub fn find(cascade: &Cascade, grey: &[u8], w: u32, h: u32, rules: &FaceRules) -> Faces {
    let levels = [rules.strict, rules.medium, rules.relaxed];
    let smallest = levels.iter().map(|l| l.min_size).min().unwrap_or(0);
    let windows = cascade.detect(
        grey,
        w,
        h,
        &Params {
            scale_factor: rules.scale_factor,
            min_neighbors: 0,
            min_size: smallest,
            max_size: 0,
        },
    );
    let (fw, fh) = (f64::from(w), f64::from(h));
    let at = |level: Level| -> Vec<Box4> {
        let kept: Vec<Rect> = windows
            .iter()
            .filter(|r| r.width >= level.min_size as i32 && r.height >= level.min_size as i32)
            .copied()
            .collect();
        let mut boxes = group_rectangles(kept, level.min_neighbors, 0.2);
        boxes.sort_by_key(|r| std::cmp::Reverse(i64::from(r.width) * i64::from(r.height)));
        boxes.truncate(rules.max_boxes);
        let round = |v: f64| (v * 10_000.0).round() / 10_000.0;
        boxes
            .iter()
            .map(|r| {
                [
                    round(f64::from(r.x) / fw),
                    round(f64::from(r.y) / fh),
                    round(f64::from(r.width) / fw),
                    round(f64::from(r.height) / fh),
                ]
            })
            .collect()
    };
    Faces {
        strict: at(rules.strict),
        medium: at(rules.medium),
        relaxed: at(rules.relaxed),
    }
}

/// The composition the medium level's boxes give: `no-face`, `group` (2 or more),
/// else by the face's height against the image's.
pub fn composition(faces: &Faces, rules: &CompositionRules) -> &'static str {
    match faces.medium[..] {
        [] => "no-face",
        [[_, _, _, h]] => {
            if h >= rules.close_up {
                "close-up"
            } else if h >= rules.portrait {
                "portrait"
            } else if h >= rules.upper_body {
                "upper-body"
            } else if h >= rules.full_body {
                "full-body"
            } else {
                "scene"
            }
        }
        _ => "group",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composition_follows_the_face_height() {
        let rules = CompositionRules::default();
        let one = |h: f64| Faces {
            medium: vec![[0.1, 0.1, h, h]],
            ..Faces::default()
        };
        assert_eq!(composition(&Faces::default(), &rules), "no-face");
        assert_eq!(composition(&one(0.5), &rules), "close-up");
        assert_eq!(composition(&one(0.3), &rules), "portrait");
        assert_eq!(composition(&one(0.2), &rules), "upper-body");
        assert_eq!(composition(&one(0.08), &rules), "full-body");
        assert_eq!(composition(&one(0.03), &rules), "scene");
        let two = Faces {
            medium: vec![[0.1, 0.1, 0.3, 0.3], [0.5, 0.1, 0.3, 0.3]],
            ..Faces::default()
        };
        assert_eq!(composition(&two, &rules), "group");
    }
}
