//! Faces for ingest records: one search of the thumbnail, read at three strictness
//! levels, and the composition class those boxes give (docs/detect.md).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Detector, DetectorError, DetectorSpec};

/// One strictness level: for a cascade `detectMultiScale`'s min-neighbors, for an ONNX
/// model the confidence; for both the smallest face.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Level {
    pub min_neighbors: u32,
    /// Smallest face side in pixels of the searched image (the thumbnail).
    pub min_size: u32,
    /// ONNX models only: the lowest confidence kept.
    #[serde(default = "Level::default_confidence")]
    pub min_confidence: f64,
}

impl Level {
    fn default_confidence() -> f64 {
        0.4
    }
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
    /// Cascades only: each scale is this much larger than the one before.
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
                min_confidence: 0.6,
            },
            medium: Level {
                min_neighbors: 3,
                min_size: 32,
                min_confidence: 0.4,
            },
            relaxed: Level {
                min_neighbors: 1,
                min_size: 24,
                min_confidence: 0.25,
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

/// A loaded detector with the rules it runs under, and what records say about both.
pub struct FaceDetector {
    detector: Box<dyn Detector>,
    rules: FaceRules,
    /// `face_detector` in a record: the detector's file, its blake3 and the parameters.
    about: Value,
}

impl FaceDetector {
    pub fn load(spec: &DetectorSpec, rules: &FaceRules) -> Result<Self, DetectorError> {
        let detector = spec.load()?;
        let mut about = detector.about();
        about.insert("searched".into(), json!("thumbnail"));
        for (name, level) in [
            ("strict", &rules.strict),
            ("medium", &rules.medium),
            ("relaxed", &rules.relaxed),
        ] {
            about.insert(name.into(), detector.level_about(level));
        }
        about.insert("composition".into(), json!(rules.composition));
        Ok(Self {
            detector,
            rules: rules.clone(),
            about: Value::Object(about),
        })
    }

    /// What identifies this detector's results: a different detector or parameters
    /// means they must be computed again.
    pub fn fingerprint(&self) -> String {
        blake3::hash(self.about.to_string().as_bytes()).to_hex()[..16].to_string()
    }

    /// Faces in an RGB image (the thumbnail), as fractions of it, at most
    /// `max_boxes` a level, largest first.
    pub fn find(&self, rgb: &image::RgbImage) -> Result<Faces, String> {
        let r = &self.rules;
        let levels = self
            .detector
            .detect_levels(rgb, &[r.strict, r.medium, r.relaxed])?;
        let (fw, fh) = (f64::from(rgb.width()), f64::from(rgb.height()));
        let round = |v: f64| (v * 10_000.0).round() / 10_000.0;
        let fractions = |found: Vec<super::Found>| -> Vec<Box4> {
            found
                .iter()
                .take(r.max_boxes)
                .map(|f| {
                    let b = f.rect;
                    [
                        round(f64::from(b.x) / fw),
                        round(f64::from(b.y) / fh),
                        round(f64::from(b.width) / fw),
                        round(f64::from(b.height) / fh),
                    ]
                })
                .collect()
        };
        let [strict, medium, relaxed]: [Vec<super::Found>; 3] = levels
            .try_into()
            .map_err(|l: Vec<_>| format!("the detector gave {} levels for 3", l.len()))?;
        Ok(Faces {
            strict: fractions(strict),
            medium: fractions(medium),
            relaxed: fractions(relaxed),
        })
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
