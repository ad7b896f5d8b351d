//! Stored clusterings (`seedpool mine clusters`, docs/mining.md): a named model per
//! dataset (its features: a tag vocabulary with weights, or one vector space of
//! `item_vectors` with the centre it was trained around; and one centroid per cluster)
//! and each item's cluster. Training lives in `mine`; what a merge needs lives here: the items a
//! merge adds, changes or restores are assigned to the nearest centroid of every
//! clustering of their dataset, so a clustering covers new releases without being
//! trained again.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

/// What a clustering's centroids are made of.
pub enum Features {
    /// Tag (canonical name, category) to (feature index, weight).
    Tags(HashMap<(String, String), (u32, f32)>),
    /// The items' vectors in one space, less the training items' mean.
    Vectors(VectorFeatures),
}

/// How a clustering by stats or embedding stores its features (`vocabulary` column).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct VectorFeatures {
    pub space: i64,
    pub center: Vec<f32>,
}

/// A clustering's model: its features, and unit-length centroids over them.
pub struct Model {
    pub id: i64,
    pub features: Features,
    pub centroids: Vec<Vec<f32>>,
}

/// A stored vector as a clustering compares it: less the centre, at unit length
/// (empty when it is the centre itself or of another length).
pub fn centred(v: &[f32], center: &[f32]) -> Vec<f32> {
    if v.len() != center.len() {
        return Vec::new();
    }
    let mut x: Vec<f32> = v.iter().zip(center).map(|(a, c)| a - c).collect();
    let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm <= 0.0 || !norm.is_finite() {
        return Vec::new();
    }
    x.iter_mut().for_each(|v| *v /= norm);
    x
}

/// An item's feature vector: the weights of its tags in the vocabulary, scaled to unit
/// length (sorted by feature; empty when it has none of the vocabulary's tags).
pub fn features<'a>(
    vocabulary: &HashMap<(String, String), (u32, f32)>,
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<(u32, f32)> {
    let mut x: Vec<(u32, f32)> = tags
        .into_iter()
        .filter_map(|(n, c)| vocabulary.get(&(n.to_string(), c.to_string())).copied())
        .collect();
    x.sort_unstable_by_key(|f| f.0);
    x.dedup_by_key(|f| f.0);
    normalize(&mut x);
    x
}

pub fn normalize(x: &mut [(u32, f32)]) {
    let norm = x.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
    if norm > 0.0 {
        for f in x.iter_mut() {
            f.1 /= norm;
        }
    }
}

/// The nearest centroid to a sparse feature vector and its cosine similarity; cluster
/// 0 with similarity 0 for an item with no features.
pub fn nearest(centroids: &[Vec<f32>], x: &[(u32, f32)]) -> (u32, f32) {
    nearest_by(centroids, |c| {
        x.iter().map(|&(i, w)| w * c[i as usize]).sum()
    })
}

/// The nearest centroid to a dense unit vector (centred vectors lie on both sides of
/// the centre, so the similarity runs from -1 to 1).
pub fn nearest_dense(centroids: &[Vec<f32>], x: &[f32]) -> (u32, f32) {
    let (c, s) = nearest_by_signed(centroids, |c| dot(x, c));
    (c, s.max(-1.0))
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The centroid with the highest `similarity`, and it at least 0.
pub fn nearest_by(centroids: &[Vec<f32>], similarity: impl Fn(&[f32]) -> f32) -> (u32, f32) {
    let (c, s) = nearest_by_signed(centroids, similarity);
    (c, s.max(0.0))
}

fn nearest_by_signed(centroids: &[Vec<f32>], similarity: impl Fn(&[f32]) -> f32) -> (u32, f32) {
    let mut best = (0u32, f32::MIN);
    for (c, centroid) in centroids.iter().enumerate() {
        let s = similarity(centroid);
        if s > best.1 {
            best = (c as u32, s);
        }
    }
    best
}

pub fn encode(centroid: &[f32]) -> Vec<u8> {
    centroid.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn decode(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The models of a dataset's clusterings.
pub fn models(conn: &Connection, dataset: i64) -> rusqlite::Result<Vec<Model>> {
    let mut st = conn.prepare(
        "SELECT id, features, vocabulary FROM clusterings WHERE dataset = ?1 ORDER BY id",
    )?;
    let rows: Vec<(i64, String, String)> = st
        .query_map([dataset], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for (id, features, vocabulary) in rows {
        out.push(model(conn, id, &features, &vocabulary)?);
    }
    Ok(out)
}

/// The dataset's clustering of vector space `space` with the most clusters, above
/// `more_than`, and its name; only that clustering's centroids are read.
pub fn vector_model(
    conn: &Connection,
    dataset: i64,
    space: i64,
    more_than: usize,
) -> rusqlite::Result<Option<(Model, String)>> {
    let mut st = conn.prepare_cached(
        "SELECT id, name, features, vocabulary FROM clusterings
         WHERE dataset = ?1 AND features != 'tags' AND k > ?2 ORDER BY k DESC, id",
    )?;
    let rows: Vec<(i64, String, String, String)> = st
        .query_map(params![dataset, more_than as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    for (id, name, features, vocabulary) in rows {
        let of_space =
            serde_json::from_str::<VectorFeatures>(&vocabulary).is_ok_and(|v| v.space == space);
        if of_space {
            return Ok(Some((model(conn, id, &features, &vocabulary)?, name)));
        }
    }
    Ok(None)
}

fn model(conn: &Connection, id: i64, features: &str, vocabulary: &str) -> rusqlite::Result<Model> {
    let bad = |e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    };
    let features = if features == "tags" {
        let list: Vec<(String, String, f32)> = serde_json::from_str(vocabulary).map_err(bad)?;
        Features::Tags(
            list.into_iter()
                .enumerate()
                .map(|(i, (n, c, w))| ((n, c), (i as u32, w)))
                .collect(),
        )
    } else {
        Features::Vectors(serde_json::from_str(vocabulary).map_err(bad)?)
    };
    let mut st =
        conn.prepare("SELECT centroid FROM clusters WHERE clustering = ?1 ORDER BY cluster")?;
    let centroids = st
        .query_map([id], |r| Ok(decode(&r.get::<_, Vec<u8>>(0)?)))?
        .collect::<Result<_, _>>()?;
    Ok(Model {
        id,
        features,
        centroids,
    })
}

/// Assigns items (id, pool tag ids) to the nearest cluster of every clustering of the
/// dataset, one at a time as a merge links them, replacing what they had (a changed
/// item may move). A clustering by vectors reads each item's vector in its space (the
/// merge wrote them first); an item without one leaves it.
pub struct Assigner<'c> {
    models: Vec<Model>,
    names: HashMap<i64, (String, String)>,
    name_of: rusqlite::CachedStatement<'c>,
    put: rusqlite::CachedStatement<'c>,
    unput: rusqlite::CachedStatement<'c>,
    vector_of: rusqlite::CachedStatement<'c>,
}

impl<'c> Assigner<'c> {
    /// None when the dataset has no clustering (the usual case), so a merge does
    /// nothing per item.
    pub fn new(conn: &'c Connection, dataset: i64) -> rusqlite::Result<Option<Self>> {
        let models = models(conn, dataset)?;
        if models.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            models,
            names: HashMap::new(),
            name_of: conn.prepare_cached(
                "SELECT coalesce(canonical, name), category FROM tags WHERE id = ?1",
            )?,
            put: conn.prepare_cached(
                "INSERT OR REPLACE INTO cluster_items(clustering, item, cluster, similarity) VALUES (?1, ?2, ?3, ?4)",
            )?,
            unput: conn
                .prepare_cached("DELETE FROM cluster_items WHERE clustering = ?1 AND item = ?2")?,
            vector_of: conn.prepare_cached(
                "SELECT vector FROM item_vectors WHERE space = ?1 AND item = ?2",
            )?,
        }))
    }

    /// Assigns one item with these pool tag ids.
    pub fn item(&mut self, item: i64, tags: &[i64]) -> rusqlite::Result<()> {
        for &t in tags {
            if let std::collections::hash_map::Entry::Vacant(e) = self.names.entry(t) {
                let name = self
                    .name_of
                    .query_row([t], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                if let Some(name) = name {
                    e.insert(name);
                }
            }
        }
        let tag_names: Vec<(&str, &str)> = tags
            .iter()
            .filter_map(|t| self.names.get(t))
            .map(|(n, c)| (n.as_str(), c.as_str()))
            .collect();
        for m in &self.models {
            let (cluster, similarity) = match &m.features {
                Features::Tags(vocabulary) => {
                    let x = features(vocabulary, tag_names.iter().copied());
                    nearest(&m.centroids, &x)
                }
                Features::Vectors(v) => {
                    let blob: Option<Vec<u8>> = self
                        .vector_of
                        .query_row(params![v.space, item], |r| r.get(0))
                        .optional()?;
                    let x = blob
                        .map(|b| centred(&super::vectors::from_blob(&b), &v.center))
                        .unwrap_or_default();
                    if x.is_empty() {
                        self.unput.execute(params![m.id, item])?;
                        continue;
                    }
                    nearest_dense(&m.centroids, &x)
                }
            };
            self.put
                .execute(params![m.id, item, cluster, f64::from(similarity)])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centroids_round_trip_and_the_nearest_is_by_cosine() {
        let c = vec![0.5f32, -1.25, 3.0];
        assert_eq!(decode(&encode(&c)), c);
        let vocabulary: HashMap<(String, String), (u32, f32)> = [
            (("cat".into(), "general".into()), (0, 1.0)),
            (("dog".into(), "general".into()), (1, 2.0)),
        ]
        .into_iter()
        .collect();
        let x = features(&vocabulary, [("dog", "general"), ("bird", "general")]);
        assert_eq!(x, [(1, 1.0)]);
        let centroids = vec![vec![1.0, 0.0], vec![0.6, 0.8]];
        assert_eq!(nearest(&centroids, &x), (1, 0.8));
        assert_eq!(nearest(&centroids, &[]), (0, 0.0));
        // Dense vectors are compared around the centre, on both of its sides.
        let x = centred(&[2.0, 1.0], &[1.0, 1.0]);
        assert_eq!(x, [1.0, 0.0]);
        assert_eq!(
            nearest_dense(&[vec![-1.0, 0.0], vec![0.0, 1.0]], &x),
            (1, 0.0)
        );
        assert_eq!(nearest_dense(&[vec![-1.0, 0.0]], &x), (0, -1.0));
        assert!(centred(&[1.0, 1.0], &[1.0, 1.0]).is_empty());
    }
}
