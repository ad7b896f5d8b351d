//! The visual quality score: one number in [0, 1] per item, a weighted mean of parts
//! that each map one signal to [0, 1]. docs/ingest.md gives every part and default.
//!
//! Image parts come from the item's own statistics; `popularity` from where its score
//! and favs stand among the release's items of the same booru and year (a percentile,
//! so a booru whose scores run ten times higher does not win by that alone). A part
//! whose signal is missing (no face search, no score, not a JPEG) is left out and the
//! other weights carry the mean, so records with less metadata are not pushed down.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How much each part counts; any non-negative numbers (they are normalised).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    pub resolution: f64,
    pub entropy: f64,
    pub edges: f64,
    pub colors: f64,
    pub contrast: f64,
    pub jpeg: f64,
    pub composition: f64,
    pub popularity: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            resolution: 0.20,
            entropy: 0.10,
            edges: 0.10,
            colors: 0.05,
            contrast: 0.10,
            jpeg: 0.10,
            composition: 0.15,
            popularity: 0.20,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QualityRules {
    pub weights: Weights,
    /// Resolution scores 0 at `low_megapixels` and 1 at `high_megapixels`, on a log
    /// scale between.
    pub low_megapixels: f64,
    pub high_megapixels: f64,
    /// The values at which entropy (bits), edges (mean Sobel magnitude), distinct
    /// colours (log scale) and contrast (luma standard deviation) score 1.
    pub full_entropy: f64,
    pub full_edges: f64,
    pub full_colors: f64,
    pub full_contrast: f64,
    /// What each composition class scores.
    pub composition: BTreeMap<String, f64>,
}

impl Default for QualityRules {
    fn default() -> Self {
        Self {
            weights: Weights::default(),
            low_megapixels: 0.5,
            high_megapixels: 8.0,
            full_entropy: 7.5,
            full_edges: 40.0,
            full_colors: 65536.0,
            full_contrast: 64.0,
            composition: [
                ("close-up", 1.0),
                ("portrait", 1.0),
                ("upper-body", 0.8),
                ("full-body", 0.7),
                ("group", 0.6),
                ("scene", 0.5),
                ("no-face", 0.3),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        }
    }
}

/// Quality rules that cannot give a score in [0, 1].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRules {
    #[error("quality weights must be numbers of 0 or more")]
    Weights,
    #[error("at least one quality weight must be above 0")]
    NoWeight,
    #[error("quality needs 0 < low_megapixels < high_megapixels")]
    Megapixels,
    #[error("quality's full_* reference points must be above 0 (full_colors above 1)")]
    References,
    #[error("quality's composition score for `{0}` must be within 0 and 1")]
    Composition(String),
}

impl QualityRules {
    /// Refuses weights and reference points that cannot give a score in [0, 1].
    pub fn check(&self) -> Result<(), BadRules> {
        let w = &self.weights;
        let weights = [
            w.resolution,
            w.entropy,
            w.edges,
            w.colors,
            w.contrast,
            w.jpeg,
            w.composition,
            w.popularity,
        ];
        if weights.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(BadRules::Weights);
        }
        if weights.iter().sum::<f64>() <= 0.0 {
            return Err(BadRules::NoWeight);
        }
        if !(self.low_megapixels > 0.0 && self.high_megapixels > self.low_megapixels) {
            return Err(BadRules::Megapixels);
        }
        let full = [
            self.full_entropy,
            self.full_edges,
            self.full_colors,
            self.full_contrast,
        ];
        if full.iter().any(|v| !v.is_finite() || *v <= 0.0) || self.full_colors <= 1.0 {
            return Err(BadRules::References);
        }
        if let Some((class, _)) = self
            .composition
            .iter()
            .find(|(_, v)| !(0.0..=1.0).contains(*v))
        {
            return Err(BadRules::Composition(class.clone()));
        }
        Ok(())
    }

    /// The parts of one record that depend on the record alone.
    fn own_parts(&self, record: &Value) -> Vec<(&'static str, f64)> {
        let clamp = |v: f64| v.clamp(0.0, 1.0);
        let stats = &record["stats"];
        let num = |v: &Value| v.as_f64();
        let mut parts = Vec::new();
        if let (Some(w), Some(h)) = (num(&record["width"]), num(&record["height"])) {
            let mp = (w * h / 1e6).max(f64::MIN_POSITIVE);
            let span = (self.high_megapixels / self.low_megapixels).ln();
            parts.push(("resolution", clamp((mp / self.low_megapixels).ln() / span)));
        }
        if let Some(e) = num(&stats["entropy"]) {
            parts.push(("entropy", clamp(e / self.full_entropy)));
        }
        if let Some(e) = num(&stats["edges"]) {
            parts.push(("edges", clamp(e / self.full_edges)));
        }
        if let Some(c) = num(&stats["colors"]) {
            parts.push(("colors", clamp(c.max(1.0).ln() / self.full_colors.ln())));
        }
        if let Some(s) = num(&stats["std"]) {
            parts.push(("contrast", clamp(s / self.full_contrast)));
        }
        if let Some(q) = num(&stats["jpeg_quality"]) {
            parts.push(("jpeg", clamp(q / 100.0)));
        }
        if let Some(c) = record["composition"].as_str() {
            if let Some(v) = self.composition.get(c) {
                parts.push(("composition", clamp(*v)));
            }
        }
        parts
    }

    fn weight(&self, part: &str) -> f64 {
        let w = &self.weights;
        match part {
            "resolution" => w.resolution,
            "entropy" => w.entropy,
            "edges" => w.edges,
            "colors" => w.colors,
            "contrast" => w.contrast,
            "jpeg" => w.jpeg,
            "composition" => w.composition,
            _ => w.popularity,
        }
    }

    /// Writes `quality` (the score) and `quality_parts` (each part's value) into every
    /// record, popularity ranked within each booru and year of these records.
    pub fn score_all(&self, records: &mut [&mut Value]) {
        let popularity = popularity(records);
        for (record, pop) in records.iter_mut().zip(popularity) {
            let mut parts = self.own_parts(record);
            if let Some(p) = pop {
                parts.push(("popularity", p));
            }
            let (sum, weights) = parts.iter().fold((0.0, 0.0), |(s, w), (name, v)| {
                let weight = self.weight(name);
                (s + weight * v, w + weight)
            });
            let round = |v: f64| (v * 10_000.0).round() / 10_000.0;
            let score = if weights > 0.0 { sum / weights } else { 0.0 };
            record["quality"] = json!(round(score));
            record["quality_parts"] = Value::Object(
                parts
                    .into_iter()
                    .map(|(name, v)| (name.to_string(), json!(round(v))))
                    .collect(),
            );
        }
    }
}

/// Each record's popularity in [0, 1]: the mean of its score's and its favs'
/// percentiles among the records of its booru and posting year (ties share the mean
/// rank; a group of one stands at 0.5). None when it has neither.
fn popularity(records: &[&mut Value]) -> Vec<Option<f64>> {
    let group = |r: &Value| {
        let booru = r["booru"].as_str().unwrap_or("").to_string();
        let year = r["posted"].as_str().and_then(|p| p.get(..4)).unwrap_or("");
        (booru, year.to_string())
    };
    let mut sums = vec![(0.0, 0u32); records.len()];
    for field in ["score", "favs"] {
        let mut groups: HashMap<(String, String), Vec<(f64, usize)>> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            if let Some(v) = r[field].as_f64() {
                groups.entry(group(r)).or_default().push((v, i));
            }
        }
        for members in groups.values_mut() {
            members.sort_by(|a, b| a.0.total_cmp(&b.0));
            let n = members.len();
            let mut start = 0;
            while start < n {
                let mut end = start;
                while end + 1 < n && members[end + 1].0 == members[start].0 {
                    end += 1;
                }
                let rank = (start + end) as f64 / 2.0;
                let pct = if n > 1 { rank / (n - 1) as f64 } else { 0.5 };
                for &(_, i) in &members[start..=end] {
                    sums[i].0 += pct;
                    sums[i].1 += 1;
                }
                start = end + 1;
            }
        }
    }
    sums.into_iter()
        .map(|(s, n)| (n > 0).then(|| s / f64::from(n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(score: i64, booru: &str, mp_side: u32, jpeg: Option<u8>) -> Value {
        json!({
            "booru": booru, "posted": "2021-05-01T00:00:00Z", "score": score,
            "width": mp_side, "height": mp_side,
            "stats": {"entropy": 6.0, "edges": 20.0, "colors": 4096, "std": 48.0, "jpeg_quality": jpeg},
        })
    }

    fn scored(mut records: Vec<Value>) -> Vec<Value> {
        let rules = QualityRules::default();
        let mut refs: Vec<&mut Value> = records.iter_mut().collect();
        rules.score_all(&mut refs);
        records
    }

    #[test]
    fn scores_lie_in_the_unit_range_and_follow_each_signal() {
        let r = scored(vec![
            record(10, "danbooru", 1000, Some(90)),
            record(50, "danbooru", 1000, Some(90)),
            record(50, "danbooru", 3000, Some(90)),
            record(50, "danbooru", 3000, Some(40)),
        ]);
        let q: Vec<f64> = r.iter().map(|r| r["quality"].as_f64().unwrap()).collect();
        assert!(q.iter().all(|v| (0.0..=1.0).contains(v)), "{q:?}");
        assert!(q[1] > q[0], "a higher score ranks higher: {q:?}");
        assert!(q[2] > q[1], "more pixels rank higher: {q:?}");
        assert!(q[3] < q[2], "heavier JPEG compression ranks lower: {q:?}");
        assert_eq!(r[0]["quality_parts"]["resolution"], json!(0.25));
    }

    #[test]
    fn popularity_is_a_percentile_within_booru_and_year() {
        // Safebooru's scores run ten times danbooru's: the best of each ties.
        let r = scored(vec![
            record(1, "danbooru", 2000, None),
            record(9, "danbooru", 2000, None),
            record(10, "safebooru", 2000, None),
            record(90, "safebooru", 2000, None),
            record(7, "gelbooru", 2000, None),
        ]);
        let pop = |i: usize| r[i]["quality_parts"]["popularity"].as_f64().unwrap();
        assert_eq!((pop(0), pop(1), pop(2), pop(3)), (0.0, 1.0, 0.0, 1.0));
        assert_eq!(pop(4), 0.5);
        assert_eq!(r[1]["quality"], r[3]["quality"]);
        assert!(r[0]["quality_parts"].get("jpeg").is_none());
    }

    #[test]
    fn missing_signals_leave_their_weight_to_the_others() {
        let mut bare = json!({"width": 8000, "height": 1000});
        QualityRules::default().score_all(&mut [&mut bare]);
        assert_eq!(bare["quality"], json!(1.0));
    }

    #[test]
    fn weights_and_references_are_checked() {
        let mut rules = QualityRules::default();
        rules.weights.edges = -1.0;
        assert_eq!(rules.check(), Err(BadRules::Weights));
        let mut rules = QualityRules::default();
        rules.composition.insert("scene".into(), 2.0);
        assert_eq!(rules.check(), Err(BadRules::Composition("scene".into())));
        let rules = QualityRules {
            high_megapixels: 0.1,
            ..QualityRules::default()
        };
        assert_eq!(rules.check(), Err(BadRules::Megapixels));
        assert!(QualityRules::default().check().is_ok());
    }
}
