//! OpenCV-format boosted LBP cascades (`opencv_storage/cascade`, `featureType` LBP,
//! stumps), evaluated the way OpenCV's `CascadeClassifier::detectMultiScale` evaluates
//! them, so a cascade trained with `opencv_traincascade` finds the same boxes here.
//!
//! Per scale factor s = 1, f, f², ... the grey image is shrunk to (w/s, h/s) with
//! fixed-point bilinear interpolation, its integral image is taken, and the cascade's
//! window (e.g. 24x24) slides over it in steps of 2 pixels (1 from s = 2 on), skipping
//! one more step after a window that fails the first stage. A window passes when every
//! stage's sum of stump outputs reaches the stage threshold. Each stump reads one LBP
//! code: a 3x3 grid of equal blocks, the centre block's sum compared with its eight
//! neighbours' (clockwise from the top-left, highest bit first), and looks the code up
//! in a 256-bit set. Passing windows are mapped back to the image and grouped as
//! `groupRectangles` does: windows whose sides are within 20% are one class, a class
//! needs more than `min_neighbors` members, its box is the members' mean, and a box
//! inside a better-supported one is dropped.

use std::path::{Path, PathBuf};

/// A box in pixels of the image given to [`Cascade::detect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub width: i32,
    pub height: i32,
}

/// `detectMultiScale`'s parameters.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    /// Each scale is this much larger than the previous one (> 1).
    pub scale_factor: f64,
    /// A box needs more than this many overlapping windows; 0 returns every window.
    pub min_neighbors: u32,
    /// Smallest box side in pixels; 0 means the cascade's window.
    pub min_size: u32,
    /// Largest box side in pixels; 0 means the image.
    pub max_size: u32,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            scale_factor: 1.1,
            min_neighbors: 3,
            min_size: 0,
            max_size: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CascadeError {
    #[error("cascade `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cascade `{path}`: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

struct Stump {
    feature: usize,
    subset: [u32; 8],
    left: f32,
    right: f32,
}

struct Stage {
    threshold: f32,
    stumps: std::ops::Range<usize>,
}

/// A loaded LBP cascade.
pub struct Cascade {
    width: u32,
    height: u32,
    stages: Vec<Stage>,
    stumps: Vec<Stump>,
    /// Block rectangles (x, y, block width, block height) in window coordinates.
    features: Vec<[u32; 4]>,
}

/// OpenCV lowers every stage threshold by this much when it reads a cascade, so
/// sums that equal the threshold in the training tool's float arithmetic still pass.
const THRESHOLD_EPS: f32 = 1e-5;

fn round(v: f64) -> i32 {
    // cvRound: to nearest, ties to even.
    v.round_ties_even() as i32
}

impl Cascade {
    pub fn load(path: &Path) -> Result<Self, CascadeError> {
        Ok(Self::read(path)?.0)
    }

    /// The cascade in `path` and the file's bytes (to hash, without reading it again).
    pub fn read(path: &Path) -> Result<(Self, Vec<u8>), CascadeError> {
        let bytes = std::fs::read(path).map_err(|source| CascadeError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |problem: String| CascadeError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| invalid("not UTF-8 text".into()))?;
        let cascade = Self::parse(text).map_err(invalid)?;
        Ok((cascade, bytes))
    }

    /// The window the cascade was trained on.
    pub fn window(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let doc = roxmltree::Document::parse(text).map_err(|e| format!("not valid XML: {e}"))?;
        let cascade = doc
            .descendants()
            .find(|n| n.has_tag_name("cascade"))
            .ok_or("no <cascade> element (old-format Haar cascades are not supported)")?;
        let child = |name: &str| cascade.children().find(|n| n.has_tag_name(name));
        let text_of = |name: &str| -> Result<String, String> {
            Ok(child(name)
                .ok_or(format!("no <{name}> in <cascade>"))?
                .text()
                .unwrap_or("")
                .trim()
                .to_string())
        };
        let stage_type = text_of("stageType")?;
        if stage_type != "BOOST" {
            return Err(format!(
                "stageType `{stage_type}` (only BOOST cascades exist)"
            ));
        }
        let feature_type = text_of("featureType")?;
        if feature_type != "LBP" {
            return Err(format!(
                "featureType `{feature_type}`: only LBP cascades are supported"
            ));
        }
        let number = |name: &str| -> Result<u32, String> {
            let t = text_of(name)?;
            t.parse()
                .map_err(|_| format!("<{name}> `{t}` is not a whole number"))
        };
        let (width, height) = (number("width")?, number("height")?);
        if !(1..=1024).contains(&width) || !(1..=1024).contains(&height) {
            return Err(format!("window {width}x{height} is out of range"));
        }
        let features: Vec<[u32; 4]> = child("features")
            .ok_or("no <features>")?
            .children()
            .filter(|n| n.is_element())
            .enumerate()
            .map(|(i, f)| {
                let rect = f
                    .children()
                    .find(|n| n.has_tag_name("rect"))
                    .and_then(|r| r.text())
                    .ok_or(format!("feature {i} has no <rect>"))?;
                let v: Vec<u32> = rect
                    .split_whitespace()
                    .map(|t| t.parse().map_err(|_| format!("feature {i}: `{t}`")))
                    .collect::<Result<_, _>>()?;
                let [x, y, w, h] = v[..] else {
                    return Err(format!("feature {i}: <rect> needs 4 numbers"));
                };
                if w == 0 || h == 0 || x + 3 * w > width || y + 3 * h > height {
                    return Err(format!(
                        "feature {i}: blocks {x} {y} {w} {h} leave the {width}x{height} window"
                    ));
                }
                Ok([x, y, w, h])
            })
            .collect::<Result<_, String>>()?;

        let mut stages = Vec::new();
        let mut stumps = Vec::new();
        for (si, stage) in child("stages")
            .ok_or("no <stages>")?
            .children()
            .filter(|n| n.is_element())
            .enumerate()
        {
            let threshold: f32 = stage
                .children()
                .find(|n| n.has_tag_name("stageThreshold"))
                .and_then(|n| n.text())
                .and_then(|t| t.trim().parse().ok())
                .ok_or(format!("stage {si}: no numeric <stageThreshold>"))?;
            let first = stumps.len();
            let weak = stage
                .children()
                .find(|n| n.has_tag_name("weakClassifiers"))
                .ok_or(format!("stage {si}: no <weakClassifiers>"))?;
            for (wi, w) in weak.children().filter(|n| n.is_element()).enumerate() {
                let list = |name: &str| -> Result<Vec<&str>, String> {
                    Ok(w.children()
                        .find(|n| n.has_tag_name(name))
                        .and_then(|n| n.text())
                        .ok_or(format!("stage {si} classifier {wi}: no <{name}>"))?
                        .split_whitespace()
                        .collect())
                };
                let nodes = list("internalNodes")?;
                let leaves = list("leafValues")?;
                if nodes.len() != 11 || leaves.len() != 2 {
                    return Err(format!(
                        "stage {si} classifier {wi}: {} node values and {} leaves; \
                         only stumps on 256 LBP codes (11 and 2) are supported",
                        nodes.len(),
                        leaves.len()
                    ));
                }
                let bad = |what: &str| format!("stage {si} classifier {wi}: bad {what}");
                let feature: usize = nodes[2].parse().map_err(|_| bad("feature index"))?;
                if feature >= features.len() {
                    return Err(format!(
                        "stage {si} classifier {wi}: feature {feature} of {}",
                        features.len()
                    ));
                }
                let mut subset = [0u32; 8];
                for (s, t) in subset.iter_mut().zip(&nodes[3..]) {
                    // Stored as signed 32-bit words; only the bits matter.
                    *s = t.parse::<i32>().map_err(|_| bad("category subset"))? as u32;
                }
                let leaf = |t: &str| t.parse::<f32>().map_err(|_| bad("leaf value"));
                stumps.push(Stump {
                    feature,
                    subset,
                    left: leaf(leaves[0])?,
                    right: leaf(leaves[1])?,
                });
            }
            if stumps.len() == first {
                return Err(format!("stage {si} has no classifiers"));
            }
            stages.push(Stage {
                threshold: threshold - THRESHOLD_EPS,
                stumps: first..stumps.len(),
            });
        }
        if stages.is_empty() {
            return Err("no stages".into());
        }
        if let Ok(n) = number("stageNum") {
            if n as usize != stages.len() {
                return Err(format!(
                    "<stageNum> says {n}, {} stages found",
                    stages.len()
                ));
            }
        }
        Ok(Self {
            width,
            height,
            stages,
            stumps,
            features,
        })
    }

    /// Boxes found in a grey image of `w` x `h` pixels (row-major, one byte each).
    pub fn detect(&self, grey: &[u8], w: u32, h: u32, p: &Params) -> Vec<Rect> {
        assert_eq!(grey.len(), (w * h) as usize, "grey image size");
        let (win_w, win_h) = (self.width as i32, self.height as i32);
        let max = if p.max_size == 0 {
            (w as i32, h as i32)
        } else {
            (p.max_size as i32, p.max_size as i32)
        };
        let min = if p.min_size == 0 {
            (win_w, win_h)
        } else {
            (p.min_size as i32, p.min_size as i32)
        };
        let mut scales = Vec::new();
        let mut factor = 1.0f64;
        loop {
            let ws = (
                round(f64::from(win_w) * factor),
                round(f64::from(win_h) * factor),
            );
            if ws.0 > max.0 || ws.1 > max.1 || ws.0 > w as i32 || ws.1 > h as i32 {
                break;
            }
            if ws.0 >= min.0 && ws.1 >= min.1 {
                scales.push(factor as f32);
            }
            factor *= p.scale_factor.max(1.0001);
        }
        let mut candidates = Vec::new();
        for s in scales {
            let sw = round(f64::from(w as f32 / s)).max(0) as u32;
            let sh = round(f64::from(h as f32 / s)).max(0) as u32;
            if sw < self.width || sh < self.height {
                break;
            }
            let small = resize_bilinear(grey, w, h, sw, sh);
            let integral = Integral::new(&small, sw, sh);
            let offsets = self.offsets(integral.stride);
            let step = if s >= 2.0 { 1 } else { 2 };
            let (work_w, work_h) = (sw + 1 - self.width, sh + 1 - self.height);
            let box_w = round(f64::from(self.width as f32 * s));
            let box_h = round(f64::from(self.height as f32 * s));
            let mut y = 0;
            while y < work_h {
                let mut x = 0;
                while x < work_w {
                    let base = y as usize * integral.stride + x as usize;
                    match self.run_at(&integral.sums, &offsets, base) {
                        Verdict::Pass => candidates.push(Rect {
                            x: round(f64::from(x as f32 * s)),
                            y: round(f64::from(y as f32 * s)),
                            width: box_w,
                            height: box_h,
                        }),
                        // Rejected at once: the neighbour is very likely rejected too.
                        Verdict::FirstStage => x += step,
                        Verdict::Later => {}
                    }
                    x += step;
                }
                y += step;
            }
        }
        group_rectangles(candidates, p.min_neighbors, 0.2)
    }

    fn run_at(&self, sums: &[u32], offsets: &[[usize; 16]], base: usize) -> Verdict {
        for (si, stage) in self.stages.iter().enumerate() {
            let mut sum = 0f64;
            for stump in &self.stumps[stage.stumps.clone()] {
                let c = lbp(sums, base, &offsets[stump.feature]);
                let hit = stump.subset[usize::from(c >> 5)] & (1 << (c & 31)) != 0;
                sum += f64::from(if hit { stump.left } else { stump.right });
            }
            if sum < f64::from(stage.threshold) {
                return if si == 0 {
                    Verdict::FirstStage
                } else {
                    Verdict::Later
                };
            }
        }
        Verdict::Pass
    }

    /// For each feature, its 16 grid corners as offsets into an integral image with
    /// `stride` columns, from the window's top-left corner.
    fn offsets(&self, stride: usize) -> Vec<[usize; 16]> {
        self.features
            .iter()
            .map(|&[fx, fy, w, h]| {
                std::array::from_fn(|k| {
                    let (i, j) = ((k % 4) as u32, (k / 4) as u32);
                    (fy + j * h) as usize * stride + (fx + i * w) as usize
                })
            })
            .collect()
    }
}

/// The 8-bit LBP code of a feature's 3x3 blocks: each neighbour block's sum against
/// the centre's, clockwise from the top-left, highest bit first. Sums wrap modulo 2^32;
/// a block's four-corner difference is still exact.
#[inline]
fn lbp(sums: &[u32], base: usize, ofs: &[usize; 16]) -> u8 {
    let c = |k: usize| sums[base + ofs[k]];
    let block = |tl: usize| {
        c(tl)
            .wrapping_sub(c(tl + 1))
            .wrapping_sub(c(tl + 4))
            .wrapping_add(c(tl + 5))
    };
    let centre = block(5);
    // Top-left corners of the blocks in bit order: 0 1 2 / 6 10 9 8 / 4.
    [0usize, 1, 2, 6, 10, 9, 8, 4]
        .iter()
        .fold(0u8, |code, &tl| (code << 1) | u8::from(block(tl) >= centre))
}

enum Verdict {
    Pass,
    FirstStage,
    Later,
}

/// Summed-area table with a zero first row and column, wrapping modulo 2^32.
struct Integral {
    sums: Vec<u32>,
    stride: usize,
}

impl Integral {
    fn new(px: &[u8], w: u32, h: u32) -> Self {
        let stride = w as usize + 1;
        let mut sums = vec![0u32; stride * (h as usize + 1)];
        for y in 0..h as usize {
            let mut row = 0u32;
            for x in 0..w as usize {
                row = row.wrapping_add(u32::from(px[y * w as usize + x]));
                sums[(y + 1) * stride + x + 1] = sums[y * stride + x + 1].wrapping_add(row);
            }
        }
        Self { sums, stride }
    }
}

/// Bilinear shrink with OpenCV's pixel-centre mapping and fixed-point weights (8
/// fractional bits per pass, rounded once at the end), as `INTER_LINEAR_EXACT` does.
fn resize_bilinear(src: &[u8], sw: u32, sh: u32, dw: u32, dh: u32) -> Vec<u8> {
    if (sw, sh) == (dw, dh) {
        return src.to_vec();
    }
    let taps = |from: u32, to: u32| -> Vec<(usize, u32, u32)> {
        let scale = f64::from(from) / f64::from(to);
        (0..to)
            .map(|d| {
                let f = (f64::from(d) + 0.5) * scale - 0.5;
                let i = f.floor();
                let frac = f - i;
                let i = i as i64;
                if i < 0 {
                    (0, 256, 0)
                } else if i >= i64::from(from) - 1 {
                    (from as usize - 1, 256, 0)
                } else {
                    let w1 = (frac * 256.0).round() as u32;
                    (i as usize, 256 - w1, w1)
                }
            })
            .collect()
    };
    let xs = taps(sw, dw);
    let ys = taps(sh, dh);
    let (sw, dw) = (sw as usize, dw as usize);
    let horizontal = |y: usize| -> Vec<u32> {
        let row = &src[y * sw..(y + 1) * sw];
        xs.iter()
            .map(|&(i, w0, w1)| {
                let next = if w1 == 0 { 0 } else { u32::from(row[i + 1]) };
                u32::from(row[i]) * w0 + next * w1
            })
            .collect()
    };
    let mut rows: Vec<Option<Vec<u32>>> = vec![None; sh as usize];
    let mut out = Vec::with_capacity(dw * dh as usize);
    for &(i, v0, v1) in &ys {
        let j = if v1 == 0 { i } else { i + 1 };
        for k in [i, j] {
            if rows[k].is_none() {
                rows[k] = Some(horizontal(k));
            }
        }
        let (a, b) = (rows[i].as_ref().unwrap(), rows[j].as_ref().unwrap());
        out.extend(
            a.iter()
                .zip(b)
                .map(|(&p, &q)| ((p * v0 + q * v1 + (1 << 15)) >> 16) as u8),
        );
        // Rows above the current one are never needed again.
        if i > 0 {
            rows[i - 1] = None;
        }
    }
    out
}

/// OpenCV's `groupRectangles`: clusters of similar boxes, averaged, kept when they
/// have more than `min_neighbors` members and are not inside a stronger cluster.
pub fn group_rectangles(rects: Vec<Rect>, min_neighbors: u32, eps: f64) -> Vec<Rect> {
    if min_neighbors == 0 || rects.is_empty() {
        return rects;
    }
    let n = rects.len();
    let similar = |a: &Rect, b: &Rect| {
        let delta = eps * f64::from(a.width.min(b.width) + a.height.min(b.height)) * 0.5;
        f64::from((a.x - b.x).abs()) <= delta
            && f64::from((a.y - b.y).abs()) <= delta
            && f64::from((a.x + a.width - b.x - b.width).abs()) <= delta
            && f64::from((a.y + a.height - b.y - b.height).abs()) <= delta
    };
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for i in 0..n {
        for j in i + 1..n {
            if similar(&rects[i], &rects[j]) {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                if a != b {
                    parent[b.max(a)] = a.min(b);
                }
            }
        }
    }
    // Classes numbered in order of first appearance, as OpenCV's partition numbers them.
    let mut label_of_root = vec![usize::MAX; n];
    let mut sums: Vec<([i64; 4], i32)> = Vec::new();
    for (i, r) in rects.iter().enumerate() {
        let root = root(&mut parent, i);
        if label_of_root[root] == usize::MAX {
            label_of_root[root] = sums.len();
            sums.push(([0; 4], 0));
        }
        let s = &mut sums[label_of_root[root]];
        s.0[0] += i64::from(r.x);
        s.0[1] += i64::from(r.y);
        s.0[2] += i64::from(r.width);
        s.0[3] += i64::from(r.height);
        s.1 += 1;
    }
    let classes: Vec<(Rect, i32)> = sums
        .iter()
        .map(|(s, count)| {
            let inv = 1.0f32 / *count as f32;
            let avg = |v: i64| (v as f32 * inv).round_ties_even() as i32;
            (
                Rect {
                    x: avg(s[0]),
                    y: avg(s[1]),
                    width: avg(s[2]),
                    height: avg(s[3]),
                },
                *count,
            )
        })
        .collect();
    let threshold = min_neighbors as i32;
    let mut out = Vec::new();
    for (i, &(r1, n1)) in classes.iter().enumerate() {
        if n1 <= threshold {
            continue;
        }
        let inside_stronger = classes.iter().enumerate().any(|(j, &(r2, n2))| {
            if j == i || n2 <= threshold {
                return false;
            }
            let dx = (f64::from(r2.width) * eps).round_ties_even() as i32;
            let dy = (f64::from(r2.height) * eps).round_ties_even() as i32;
            r1.x >= r2.x - dx
                && r1.y >= r2.y - dy
                && r1.x + r1.width <= r2.x + r2.width + dx
                && r1.y + r1.height <= r2.y + r2.height + dy
                && (n2 > n1.max(3) || n1 < 3)
        });
        if !inside_stronger {
            out.push(r1);
        }
    }
    out
}

/// Grey levels as OpenCV's `cvtColor(RGB2GRAY)` computes them (fixed point, 14 bits).
pub fn grey(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .map(|p| {
            ((u32::from(p[0]) * 4899 + u32::from(p[1]) * 9617 + u32::from(p[2]) * 1868 + 8192)
                >> 14) as u8
        })
        .collect()
}

/// A cascade as a [`Detector`](super::Detector): one scan of the image with every
/// window kept, from the smallest size any level accepts, then grouped for each level.
/// That gives the same boxes as separate `detectMultiScale` runs, since a level's
/// larger min-size only drops whole scales.
pub struct CascadeDetector {
    cascade: Cascade,
    name: Option<String>,
    blake3: String,
    scale_factor: f64,
    max_size: u32,
}

impl CascadeDetector {
    pub fn load(path: &Path, scale_factor: f64, max_size: u32) -> Result<Self, CascadeError> {
        let (cascade, bytes) = Cascade::read(path)?;
        Ok(Self {
            cascade,
            name: path.file_name().map(|n| n.to_string_lossy().into_owned()),
            blake3: blake3::hash(&bytes).to_hex().to_string(),
            scale_factor,
            max_size,
        })
    }
}

impl super::Detector for CascadeDetector {
    fn detect_levels(
        &self,
        rgb: &image::RgbImage,
        levels: &[super::faces::Level],
    ) -> Result<Vec<Vec<super::Found>>, String> {
        let (w, h) = rgb.dimensions();
        let windows = self.cascade.detect(
            &grey(rgb.as_raw()),
            w,
            h,
            &Params {
                scale_factor: self.scale_factor,
                min_neighbors: 0,
                min_size: levels.iter().map(|l| l.min_size).min().unwrap_or(0),
                max_size: self.max_size,
            },
        );
        Ok(levels
            .iter()
            .map(|level| {
                let kept: Vec<Rect> = windows
                    .iter()
                    .filter(|r| {
                        r.width >= level.min_size as i32 && r.height >= level.min_size as i32
                    })
                    .copied()
                    .collect();
                let mut faces: Vec<super::Found> = group_rectangles(kept, level.min_neighbors, 0.2)
                    .into_iter()
                    .map(|rect| super::Found {
                        rect,
                        confidence: None,
                    })
                    .collect();
                super::largest_first(&mut faces);
                faces
            })
            .collect())
    }

    fn about(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("cascade".into(), serde_json::json!(self.name));
        m.insert("cascade_blake3".into(), serde_json::json!(self.blake3));
        m.insert("scale_factor".into(), serde_json::json!(self.scale_factor));
        m
    }

    fn level_about(&self, level: &super::faces::Level) -> serde_json::Value {
        serde_json::json!({"min_neighbors": level.min_neighbors, "min_size": level.min_size})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3x3-window cascade with one stump on a 1x1-block feature whose code set is
    /// all ones, so the left leaf (1.0) is always taken; `threshold` decides.
    fn tiny(threshold: f32) -> Cascade {
        let xml = format!(
            "<?xml version=\"1.0\"?><opencv_storage><cascade><stageType>BOOST</stageType>\
             <featureType>LBP</featureType><height>3</height><width>3</width>\
             <stageNum>1</stageNum><stages><_><maxWeakCount>1</maxWeakCount>\
             <stageThreshold>{threshold}</stageThreshold><weakClassifiers><_>\
             <internalNodes>0 -1 0 -1 -1 -1 -1 -1 -1 -1 -1</internalNodes>\
             <leafValues>1 -1</leafValues></_></weakClassifiers></_></stages>\
             <features><_><rect>0 0 1 1</rect></_></features></cascade></opencv_storage>"
        );
        Cascade::parse(&xml).unwrap()
    }

    #[test]
    fn windows_step_by_two_at_each_scale() {
        let img = vec![7u8; 8 * 6];
        let one_scale = Params {
            scale_factor: 10.0,
            min_neighbors: 0,
            ..Params::default()
        };
        let found = tiny(-1.0).detect(&img, 8, 6, &one_scale);
        let at: Vec<(i32, i32)> = found.iter().map(|r| (r.x, r.y)).collect();
        assert_eq!(at, [(0, 0), (2, 0), (4, 0), (0, 2), (2, 2), (4, 2)]);
        assert!(found.iter().all(|r| (r.width, r.height) == (3, 3)));
        assert!(tiny(2.0).detect(&img, 8, 6, &one_scale).is_empty());
    }

    #[test]
    fn grouping_averages_neighbours_and_drops_lone_and_nested_boxes() {
        let r = |x, y, w| Rect {
            x,
            y,
            width: w,
            height: w,
        };
        let mut rects = vec![
            r(100, 100, 50),
            r(102, 101, 50),
            r(98, 99, 52),
            r(101, 100, 48),
        ];
        rects.push(r(400, 400, 30)); // alone
                                     // Four windows on a small box inside the big one, fewer than the big one's.
        rects.extend([r(110, 110, 20); 4]);
        rects.extend([r(100, 100, 50); 2]);
        assert_eq!(group_rectangles(rects.clone(), 0, 0.2).len(), rects.len());
        let grouped = group_rectangles(rects, 3, 0.2);
        assert_eq!(grouped, [r(100, 100, 50)]);
    }

    #[test]
    fn shrinking_keeps_flat_images_flat_and_maps_pixel_centres() {
        assert_eq!(
            resize_bilinear(&[9; 40 * 30], 40, 30, 13, 7),
            vec![9; 13 * 7]
        );
        // Halving a ramp averages neighbouring pairs.
        let ramp: Vec<u8> = (0..8).map(|x| x * 10).collect();
        assert_eq!(resize_bilinear(&ramp, 8, 1, 4, 1), [5, 25, 45, 65]);
    }
}
