//! Clusters of items (docs/mining.md): spherical k-means over IDF-weighted tag vectors
//! (the `vocabulary` most used tags), or over the items' statistics or embedding
//! vectors centred on their mean, seeded by k-means++ on a sample, stored in the pool as a named clustering with each cluster's most characteristic
//! tags and the items nearest its centroid. Merges assign the items they bring to the
//! stored centroids (`pool::clusters::assign`).

use std::collections::HashMap;

use rayon::prelude::*;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{live_ids, one_dataset, MineError};
use crate::pool::clusters::{encode, normalize};
use crate::pool::Pool;

#[derive(Clone, Debug)]
pub struct ClustersPlan {
    pub dataset: Option<String>,
    pub name: String,
    pub k: usize,
    /// The most used tags that make the features.
    pub vocabulary: usize,
    pub iterations: usize,
    pub by: By,
}

pub const DEFAULT_VOCABULARY: usize = 4096;
/// Items k-means++ seeds from.
const SEED_SAMPLE: usize = 20_000;
/// Tags and items listed per cluster.
const TOP_TAGS: usize = 8;
const MEDOIDS: usize = 5;

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ClusterTag {
    pub tag: String,
    pub category: String,
    /// Share of the cluster's items with the tag, and of all items.
    pub share: f64,
    pub overall: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cluster {
    pub cluster: u32,
    /// Live items in it now (merges add theirs).
    pub items: u64,
    pub tags: Vec<ClusterTag>,
    /// Keys of the items nearest its centroid when it was trained.
    pub medoids: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClustersReport {
    pub dataset: String,
    pub name: String,
    /// `tags`, `stats` or `embedding`.
    pub features: String,
    pub k: usize,
    pub trained_items: u64,
    /// Iterations run, and the share of items that changed cluster in the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_moved: Option<f64>,
    pub clusters: Vec<Cluster>,
}

/// What a clustering groups items by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// IDF-weighted tag vectors: the same series, characters and themes.
    Tags,
    /// Image statistics vectors (brightness, contrast, colour, edges): pictures alike
    /// at a glance.
    Stats,
    /// The embedder's vectors (`ingest --embedder`, `detect --embedder`).
    Embedding,
}

impl By {
    pub fn name(self) -> &'static str {
        match self {
            By::Tags => "tags",
            By::Stats => "stats",
            By::Embedding => "embedding",
        }
    }
}

/// Items' feature vectors as k-means reads them: sparse tag weights, or dense vectors.
trait Points: Sync {
    fn len(&self) -> usize;
    fn dims(&self) -> usize;
    /// Item `i`'s cosine with a unit-length centroid.
    fn dot(&self, i: usize, centroid: &[f32]) -> f32;
    fn add_to(&self, i: usize, sum: &mut [f32]);

    fn dense(&self, i: usize) -> Vec<f32> {
        let mut c = vec![0f32; self.dims()];
        self.add_to(i, &mut c);
        c
    }

    fn nearest(&self, i: usize, centroids: &[Vec<f32>]) -> (u32, f32) {
        crate::pool::clusters::nearest_by(centroids, |c| self.dot(i, c))
    }
}

/// Items' tag vectors, one flat list of (feature, weight).
struct Matrix {
    ids: Vec<i64>,
    ends: Vec<usize>,
    feats: Vec<(u32, f32)>,
    dims: usize,
}

impl Matrix {
    fn row(&self, i: usize) -> &[(u32, f32)] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.feats[start..self.ends[i]]
    }
}

impl Points for Matrix {
    fn len(&self) -> usize {
        self.ids.len()
    }
    fn dims(&self) -> usize {
        self.dims
    }
    fn dot(&self, i: usize, centroid: &[f32]) -> f32 {
        self.row(i)
            .iter()
            .map(|&(f, w)| w * centroid[f as usize])
            .sum()
    }
    fn add_to(&self, i: usize, sum: &mut [f32]) {
        for &(f, w) in self.row(i) {
            sum[f as usize] += w;
        }
    }
}

/// Centred unit vectors, `dims` values an item.
struct Dense {
    dims: usize,
    values: Vec<f32>,
}

impl Dense {
    fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dims..(i + 1) * self.dims]
    }
}

impl Points for Dense {
    fn len(&self) -> usize {
        self.values.len() / self.dims.max(1)
    }
    fn dims(&self) -> usize {
        self.dims
    }
    fn dot(&self, i: usize, centroid: &[f32]) -> f32 {
        crate::pool::clusters::dot(self.row(i), centroid)
    }
    fn add_to(&self, i: usize, sum: &mut [f32]) {
        for (s, v) in sum.iter_mut().zip(self.row(i)) {
            *s += v;
        }
    }
    fn nearest(&self, i: usize, centroids: &[Vec<f32>]) -> (u32, f32) {
        crate::pool::clusters::nearest_dense(centroids, self.row(i))
    }
}

fn mix(i: u64) -> u64 {
    super::related::mix(i as i64)
}

/// What k-means found: the centroids, each item's (cluster, similarity), the iterations
/// run and the share of items that moved in the last.
struct Fit {
    centroids: Vec<Vec<f32>>,
    assigned: Vec<(u32, f32)>,
    iterations: usize,
    moved_share: f64,
}

/// Spherical k-means: k-means++ seeds from a hashed sample with a fixed generator (the
/// same pool gives the same clusters), then Lloyd's iterations with the assignments in
/// parallel, stopping once under 0.1% of items move.
fn kmeans(points: &dyn Points, ids: &[i64], k: usize, max_iterations: usize) -> Fit {
    let n = points.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by_key(|&i| mix(ids[i] as u64));
    order.truncate(SEED_SAMPLE.max(k));
    let mut rng = 0x5eed_u64;
    let mut next = || {
        rng = mix(rng.wrapping_add(1));
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut centroids: Vec<Vec<f32>> = vec![points.dense(order[0])];
    let mut dist: Vec<f64> = order
        .iter()
        .map(|&i| 1.0 - f64::from(points.nearest(i, &centroids).1))
        .collect();
    while centroids.len() < k {
        let total: f64 = dist.iter().map(|d| d * d).sum();
        let pick = if total <= 0.0 {
            // Every sampled item sits on a centroid: take the next unused one.
            centroids.len().min(order.len() - 1)
        } else {
            let mut target = next() * total;
            let mut pick = order.len() - 1;
            for (j, d) in dist.iter().enumerate() {
                target -= d * d;
                if target <= 0.0 {
                    pick = j;
                    break;
                }
            }
            pick
        };
        let c = points.dense(order[pick]);
        for (j, &i) in order.iter().enumerate() {
            dist[j] = dist[j].min(1.0 - f64::from(points.dot(i, &c)));
        }
        centroids.push(c);
    }

    let dims = points.dims();
    let mut assigned: Vec<(u32, f32)> = vec![(u32::MAX, 0.0); n];
    let mut iterations = 0;
    let mut moved_share = 1.0;
    for _ in 0..max_iterations {
        iterations += 1;
        let next_assigned: Vec<(u32, f32)> = (0..n)
            .into_par_iter()
            .map(|i| points.nearest(i, &centroids))
            .collect();
        let moved = next_assigned
            .iter()
            .zip(&assigned)
            .filter(|(a, b)| a.0 != b.0)
            .count();
        assigned = next_assigned;
        moved_share = moved as f64 / n as f64;
        let mut sums = vec![vec![0f32; dims]; k];
        let mut sizes = vec![0u64; k];
        for (i, &(c, _)) in assigned.iter().enumerate() {
            sizes[c as usize] += 1;
            points.add_to(i, &mut sums[c as usize]);
        }
        for (c, sum) in sums.iter_mut().enumerate() {
            if sizes[c] == 0 {
                // An empty cluster takes the item farthest from its own centroid.
                let far = (0..n)
                    .min_by(|&a, &b| assigned[a].1.total_cmp(&assigned[b].1))
                    .expect("items");
                *sum = points.dense(far);
                assigned[far] = (c as u32, 1.0);
                continue;
            }
            let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                sum.iter_mut().for_each(|v| *v /= norm);
            }
        }
        centroids = sums;
        if moved_share < 0.001 {
            break;
        }
    }
    let assigned = (0..n)
        .into_par_iter()
        .map(|i| points.nearest(i, &centroids))
        .collect();
    Fit {
        centroids,
        assigned,
        iterations,
        moved_share,
    }
}

/// Tags (canonical name, category) and their weights, in feature order.
type Vocabulary = Vec<(String, String, f32)>;

/// The vocabulary (the most used tags, each weighing ln(N / n), with n its items) and
/// every item's tag vector, from one pass over the tag links in item order. `ids` are
/// sorted.
fn tag_matrix(
    conn: &rusqlite::Connection,
    ds: i64,
    ids: Vec<i64>,
    size: usize,
    n_items: f64,
) -> Result<(Vocabulary, Vec<u64>, Matrix), MineError> {
    let mut vocab: Vocabulary = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    {
        let mut st = conn.prepare(
            "SELECT canonical, category, sum(items) AS n FROM tag_counts WHERE dataset = ?1
             GROUP BY canonical, category ORDER BY n DESC, canonical, category LIMIT ?2",
        )?;
        let rows = st.query_map(params![ds, size as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (n, c, count) = row?;
            let count = count.max(1) as u64;
            vocab.push((n, c, (n_items / count as f64).ln().max(0.0) as f32 + 1e-3));
            counts.push(count);
        }
    }
    // Pool tag ids of the vocabulary's tags.
    let mut of_tag: HashMap<i64, u32> = HashMap::new();
    {
        let mut st =
            conn.prepare_cached("SELECT id FROM tags WHERE canonical = ?1 AND category = ?2")?;
        for (v, (n, c, _)) in vocab.iter().enumerate() {
            for id in st.query_map(params![n, c], |r| r.get::<_, i64>(0))? {
                of_tag.insert(id?, v as u32);
            }
        }
    }
    let mut m = Matrix {
        ids: Vec::new(),
        ends: Vec::with_capacity(ids.len()),
        feats: Vec::new(),
        dims: vocab.len().max(1),
    };
    let mut st = conn.prepare("SELECT item, tag FROM item_tags WHERE item >= ?1 AND item <= ?2")?;
    let (lo, hi) = (ids[0], ids[ids.len() - 1]);
    let mut rows = st.query(params![lo, hi])?;
    let mut at = 0usize;
    let mut row_feats: Vec<(u32, f32)> = Vec::new();
    let flush = |m: &mut Matrix, row: &mut Vec<(u32, f32)>| {
        row.sort_unstable_by_key(|f| f.0);
        row.dedup_by_key(|f| f.0);
        normalize(row);
        m.feats.append(row);
        m.ends.push(m.feats.len());
    };
    while let Some(r) = rows.next()? {
        let item: i64 = r.get(0)?;
        while at < ids.len() && ids[at] < item {
            flush(&mut m, &mut row_feats);
            at += 1;
        }
        if at < ids.len() && ids[at] == item {
            if let Some(&v) = of_tag.get(&r.get::<_, i64>(1)?) {
                row_feats.push((v, vocab[v as usize].2));
            }
        }
    }
    while at < ids.len() {
        flush(&mut m, &mut row_feats);
        at += 1;
    }
    drop(rows);
    m.ids = ids;
    Ok((vocab, counts, m))
}

/// The space a clustering by stats or embedding reads: the dataset's statistics space,
/// or its embedding space with the most vectors.
fn vector_space(
    conn: &rusqlite::Connection,
    ds: i64,
    dataset: &str,
    by: By,
) -> Result<i64, MineError> {
    let kind = match by {
        By::Stats => crate::pool::vectors::Kind::Stats,
        _ => crate::pool::vectors::Kind::Embedding,
    };
    conn.query_row(
        "SELECT s.id FROM vector_spaces s WHERE s.dataset = ?1 AND s.kind = ?2
         AND EXISTS (SELECT 1 FROM item_vectors v WHERE v.space = s.id)
         ORDER BY (SELECT count(*) FROM item_vectors v WHERE v.space = s.id) DESC, s.id LIMIT 1",
        params![ds, kind.name()],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| {
        MineError::Unanswerable(match by {
            By::Stats => format!("no item of `{dataset}` has image statistics"),
            _ => format!(
                "no item of `{dataset}` has an embedding (make them with `seedpool ingest --embedder` or `seedpool detect RELEASE_DIR --embedder`)"
            ),
        })
    })
}

/// The live items with a vector in `space` (sorted by id), and their vectors centred on
/// their mean at unit length; the mean.
fn dense_points(
    conn: &rusqlite::Connection,
    space: i64,
    live: &[i64],
) -> Result<(Vec<i64>, Dense, Vec<f32>), MineError> {
    let mut st =
        conn.prepare("SELECT item, vector FROM item_vectors WHERE space = ?1 ORDER BY item")?;
    let mut rows = st.query([space])?;
    let mut ids = Vec::new();
    let mut raw: Vec<f32> = Vec::new();
    let mut dims = 0usize;
    while let Some(r) = rows.next()? {
        let item: i64 = r.get(0)?;
        if live.binary_search(&item).is_err() {
            continue;
        }
        let v = crate::pool::vectors::from_blob(&r.get::<_, Vec<u8>>(1)?);
        if dims == 0 {
            dims = v.len();
        }
        if v.len() != dims || dims == 0 {
            continue;
        }
        ids.push(item);
        raw.extend_from_slice(&v);
    }
    let n = ids.len().max(1) as f64;
    let mut mean = vec![0f64; dims];
    for row in raw.chunks_exact(dims.max(1)) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += f64::from(*v);
        }
    }
    let center: Vec<f32> = mean.iter().map(|m| (m / n) as f32).collect();
    let mut values = Vec::with_capacity(raw.len());
    let mut kept = Vec::with_capacity(ids.len());
    for (row, &id) in raw.chunks_exact(dims.max(1)).zip(&ids) {
        let x = crate::pool::clusters::centred(row, &center);
        // An item exactly at the centre has no direction; it is left out.
        if !x.is_empty() {
            values.extend_from_slice(&x);
            kept.push(id);
        }
    }
    Ok((kept, Dense { dims, values }, center))
}

/// Trains and stores a clustering (replacing one of the same name), in one
/// transaction; the pool is locked by the caller's handle.
pub fn train(pool: &mut Pool, plan: &ClustersPlan) -> Result<ClustersReport, MineError> {
    let (ds, dataset, name) = {
        let conn = pool.connection();
        let (ds, dataset) = one_dataset(conn, plan.dataset.as_deref())?;
        (ds, dataset, plan.name.clone())
    };
    if plan.k == 0 {
        return Err(MineError::Unanswerable(
            "--k 0: a clustering needs at least one cluster".into(),
        ));
    }
    if plan.vocabulary == 0 || plan.iterations == 0 {
        return Err(MineError::Unanswerable(
            "--vocabulary and --iterations must be at least 1".into(),
        ));
    }
    if name.trim().is_empty() || name.len() > 64 {
        return Err(MineError::Unanswerable(
            "--name must be 1 to 64 characters".into(),
        ));
    }
    let conn = pool.connection();
    let live = live_ids(conn, &[ds])?;
    // Tag weights and shares are over every live item, whatever the features.
    let n_items = live.len() as f64;
    // By vectors, the items that have one; their features, and what is stored to
    // compare later items the same way.
    let (ids, dense, stored_features) = match plan.by {
        By::Tags => (live, None, None),
        By::Stats | By::Embedding => {
            let space = vector_space(conn, ds, &dataset, plan.by)?;
            let (ids, dense, center) = dense_points(conn, space, &live)?;
            let features = crate::pool::clusters::VectorFeatures { space, center };
            (ids, Some(dense), Some(features))
        }
    };
    if ids.is_empty() || plan.k > ids.len() {
        let what = match plan.by {
            By::Tags => "live items".to_string(),
            by => format!("live items with {} vectors", by.name()),
        };
        return Err(MineError::Unanswerable(format!(
            "--k {} is more than the {} {what} of `{dataset}`",
            plan.k,
            ids.len()
        )));
    }
    let n = ids.len();
    // The tag vectors: the features by tags, and what names each cluster otherwise.
    let (vocab, counts, matrix) = tag_matrix(conn, ds, ids, plan.vocabulary, n_items)?;
    let points: &dyn Points = match &dense {
        Some(d) => d,
        None => &matrix,
    };
    let Fit {
        centroids,
        assigned,
        iterations,
        moved_share,
    } = kmeans(points, &matrix.ids, plan.k, plan.iterations);

    // Each cluster's characteristic tags (share in it × ln of its lift) and medoids.
    let mut sizes = vec![0u64; plan.k];
    let mut tag_counts: Vec<HashMap<u32, u64>> = vec![HashMap::new(); plan.k];
    let mut best: Vec<Vec<(f32, usize)>> = vec![Vec::new(); plan.k];
    for (i, &(c, s)) in assigned.iter().enumerate() {
        let c = c as usize;
        sizes[c] += 1;
        for &(f, _) in matrix.row(i) {
            *tag_counts[c].entry(f).or_default() += 1;
        }
        best[c].push((s, i));
    }
    let mut stored = Vec::new();
    for c in 0..plan.k {
        let size = sizes[c].max(1) as f64;
        let mut tags: Vec<ClusterTag> = tag_counts[c]
            .iter()
            .map(|(&f, &count)| {
                let (name, category, _) = &vocab[f as usize];
                ClusterTag {
                    tag: name.clone(),
                    category: category.clone(),
                    share: count as f64 / size,
                    overall: counts[f as usize] as f64 / n_items,
                }
            })
            .filter(|t| t.share >= 0.02 && t.share > t.overall)
            .collect();
        let score = |t: &ClusterTag| t.share * (t.share / t.overall.max(1e-9)).ln();
        tags.sort_by(|a, b| {
            score(b)
                .total_cmp(&score(a))
                .then_with(|| a.tag.cmp(&b.tag))
        });
        tags.truncate(TOP_TAGS);
        best[c].sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let medoids: Vec<i64> = best[c]
            .iter()
            .take(MEDOIDS)
            .map(|&(_, i)| matrix.ids[i])
            .collect();
        stored.push((tags, medoids));
    }

    // Stored in one transaction, replacing a clustering of the same name.
    let tx = pool.connection_mut().transaction()?;
    let old: Option<i64> = tx
        .query_row(
            "SELECT id FROM clusterings WHERE dataset = ?1 AND name = ?2",
            params![ds, name],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(old) = old {
        for table in ["cluster_items", "clusters"] {
            tx.execute(&format!("DELETE FROM {table} WHERE clustering = ?1"), [old])?;
        }
        tx.execute("DELETE FROM clusterings WHERE id = ?1", [old])?;
    }
    let vocabulary = match &stored_features {
        Some(f) => serde_json::to_string(f),
        None => serde_json::to_string(&vocab),
    }
    .expect("features serialize");
    tx.execute(
        "INSERT INTO clusterings(dataset, name, features, k, vocabulary, trained_items, trained_at_release)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, (SELECT head_release FROM datasets WHERE id = ?1))",
        params![ds, name, plan.by.name(), plan.k as i64, vocabulary, n as i64],
    )?;
    let id = tx.last_insert_rowid();
    {
        let mut put = tx.prepare(
            "INSERT INTO clusters(clustering, cluster, centroid, tags, medoids) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (c, (tags, medoids)) in stored.iter().enumerate() {
            put.execute(params![
                id,
                c as i64,
                encode(&centroids[c]),
                serde_json::to_string(tags).expect("tags serialize"),
                serde_json::to_string(medoids).expect("ids serialize"),
            ])?;
        }
        let mut rows: Vec<(i64, u32, f32)> = assigned
            .iter()
            .enumerate()
            .map(|(i, &(c, s))| (matrix.ids[i], c, s))
            .collect();
        rows.sort_unstable_by_key(|r| r.0);
        let mut add = crate::pool::RowBatch::new(
            &tx,
            "INSERT INTO cluster_items(clustering, item, cluster, similarity)",
            4,
            "",
        )?;
        for (item, c, s) in rows {
            add.push([
                id.into(),
                item.into(),
                i64::from(c).into(),
                f64::from(s).into(),
            ])?;
        }
        add.finish()?;
    }
    tx.commit()?;
    let mut report = show(pool, plan.dataset.as_deref(), &name)?;
    report.iterations = Some(iterations);
    report.last_moved = Some(moved_share);
    Ok(report)
}

/// A stored clustering, with each cluster's live items now.
pub fn show(pool: &Pool, dataset: Option<&str>, name: &str) -> Result<ClustersReport, MineError> {
    let conn = pool.connection();
    let (ds, dataset) = one_dataset(conn, dataset)?;
    let found = conn
        .query_row(
            "SELECT id, k, trained_items, features FROM clusterings WHERE dataset = ?1 AND name = ?2",
            params![ds, name],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            },
        )
        .optional()?;
    let Some((id, k, trained, features)) = found else {
        let mut st =
            conn.prepare("SELECT name FROM clusterings WHERE dataset = ?1 ORDER BY name")?;
        let names: Vec<String> = st
            .query_map([ds], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        return Err(MineError::Unanswerable(format!(
            "dataset `{dataset}` has no clustering `{name}`{}",
            match names.is_empty() {
                true => " (make one with `seedpool mine clusters --k N`)".to_string(),
                false => format!(" (it has {})", names.join(", ")),
            }
        )));
    };
    let mut sizes: HashMap<u32, u64> = HashMap::new();
    {
        let mut st = conn.prepare(
            "SELECT ci.cluster, count(*) FROM cluster_items ci JOIN items i ON i.id = ci.item
             WHERE ci.clustering = ?1 AND i.removed_in IS NULL AND i.duplicate_of IS NULL
             GROUP BY ci.cluster",
        )?;
        for row in st.query_map([id], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)?)))? {
            let (c, n) = row?;
            sizes.insert(c, n.max(0) as u64);
        }
    }
    let mut key_of = conn.prepare_cached("SELECT key FROM items WHERE id = ?1")?;
    let mut st = conn.prepare(
        "SELECT cluster, tags, medoids FROM clusters WHERE clustering = ?1 ORDER BY cluster",
    )?;
    let rows: Vec<(u32, String, String)> = st
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut clusters = Vec::new();
    for (c, tags, medoids) in rows {
        let tags: Vec<ClusterTag> = serde_json::from_str(&tags).unwrap_or_default();
        let medoid_ids: Vec<i64> = serde_json::from_str(&medoids).unwrap_or_default();
        let mut medoids = Vec::new();
        for m in medoid_ids {
            medoids.push(key_of.query_row([m], |r| r.get::<_, String>(0))?);
        }
        clusters.push(Cluster {
            cluster: c,
            items: sizes.get(&c).copied().unwrap_or(0),
            tags,
            medoids,
        });
    }
    clusters.sort_by(|a, b| b.items.cmp(&a.items).then(a.cluster.cmp(&b.cluster)));
    Ok(ClustersReport {
        dataset,
        name: name.to_string(),
        features,
        k: k as usize,
        trained_items: trained.max(0) as u64,
        iterations: None,
        last_moved: None,
        clusters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{record, stats, Fixture};

    /// Three planted groups of 20 items: each its own series and 3 themed tags (each on
    /// most of its items), plus tags every group shares.
    fn items(groups: &[usize], per: u64, offset: u64) -> Vec<(String, serde_json::Value)> {
        let themes = [
            ["sword", "armor", "castle"],
            ["beach", "swimsuit", "sun"],
            ["robot", "city", "neon"],
        ];
        let mut out = Vec::new();
        for &g in groups {
            for i in 0..per {
                let post = offset + g as u64 * 1000 + i;
                let mut general: Vec<&str> =
                    vec!["solo", ["smile", "looking_at_viewer"][(i % 2) as usize]];
                for (t, theme) in themes[g].iter().enumerate() {
                    if !(i + t as u64).is_multiple_of(4) {
                        general.push(theme);
                    }
                }
                let series = [format!("series_{g}")];
                let series: Vec<&str> = series.iter().map(String::as_str).collect();
                out.push((
                    format!("g{g}-{post:05}"),
                    record(
                        "danbooru",
                        post,
                        &[("copyright", &series), ("general", &general)],
                    ),
                ));
            }
        }
        out
    }

    fn plan(k: usize) -> ClustersPlan {
        ClustersPlan {
            dataset: None,
            name: "tags".into(),
            k,
            vocabulary: DEFAULT_VOCABULARY,
            iterations: 20,
            by: By::Tags,
        }
    }

    #[test]
    fn planted_groups_are_found_stored_and_extended_by_merges() {
        let f = Fixture::new();
        let v1 = items(&[0, 1, 2], 20, 0);
        f.release("1", None, &v1);
        let mut pool = crate::pool::Pool::open(&f.pool).unwrap();
        let r = train(&mut pool, &plan(3)).unwrap();
        assert_eq!(r.trained_items, 60);
        assert_eq!(r.clusters.len(), 3);
        // Each cluster is one group: 20 items, its series first among its tags, and
        // medoids of that group only.
        let mut series: Vec<String> = Vec::new();
        for c in &r.clusters {
            assert_eq!(c.items, 20, "{c:?}");
            let s = c.tags.iter().find(|t| t.category == "copyright").unwrap();
            assert_eq!(s.share, 1.0, "{c:?}");
            let g = &s.tag["series_".len()..];
            assert!(
                c.medoids.iter().all(|m| m.starts_with(&format!("g{g}-"))),
                "{c:?}"
            );
            assert!(!c.tags.iter().any(|t| t.tag == "solo"), "{c:?}");
            series.push(s.tag.clone());
        }
        series.sort();
        assert_eq!(series, ["series_0", "series_1", "series_2"]);
        drop(pool);

        // Release 2 adds 10 items of group 1: the merge puts them in its cluster.
        let mut v2 = v1.clone();
        v2.extend(items(&[1], 10, 500));
        f.release("2", Some("1"), &v2);
        let pool = f.open_pool();
        let r = show(&pool, None, "tags").unwrap();
        assert_eq!(r.clusters[0].items, 30);
        assert!(r.clusters[0].tags.iter().any(|t| t.tag == "series_1"));
        assert_eq!(r.trained_items, 60);
    }

    #[test]
    fn bad_k_and_unknown_clusterings_are_clear_errors_that_write_nothing() {
        let f = Fixture::new();
        f.release("1", None, &items(&[0, 1], 5, 0));
        let mut pool = crate::pool::Pool::open(&f.pool).unwrap();
        for (k, says) in [(0, "--k 0"), (11, "--k 11 is more than the 10 live items")] {
            let err = train(&mut pool, &plan(k)).unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
        let err = show(&pool, None, "tags").unwrap_err();
        assert!(
            err.to_string().contains("has no clustering `tags`"),
            "{err}"
        );
        let n: i64 = pool
            .connection()
            .query_row("SELECT count(*) FROM clusterings", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        // Trained again under the same name, it replaces the first.
        train(&mut pool, &plan(2)).unwrap();
        train(&mut pool, &plan(1)).unwrap();
        let r = show(&pool, None, "tags").unwrap();
        assert_eq!((r.k, r.clusters.len(), r.clusters[0].items), (1, 1, 10));
    }

    #[test]
    fn planted_colours_and_embedding_directions_cluster_and_merges_extend_them() {
        use crate::imaging::embedding::{encode, unit};
        let f = Fixture::new();
        // Three colour groups of 8 (reds, greens, blues, each a little spread); each
        // group's embedding points one way, except that the greens point as the reds do.
        let item = |key: String, i: u64, colour: (f64, f64, f64), e: [f32; 3]| {
            let mut r = record("danbooru", i, &[("general", &["solo"])]);
            r["stats"] = stats(colour.0, colour.1, colour.2);
            let mut v = e.to_vec();
            unit(&mut v);
            r["embedding"] = encode(&v).into();
            r["embedder"] = serde_json::json!({"space": "tiny", "dims": 3});
            (key, r)
        };
        let mut items = Vec::new();
        for i in 0..8u64 {
            let d = i as f64 * 3.0;
            let e = i as f32 * 0.02;
            items.push(item(
                format!("red-{i}"),
                i,
                (200.0 + d, 20.0, 20.0),
                [1.0, e, 0.0],
            ));
            items.push(item(
                format!("green-{i}"),
                100 + i,
                (20.0, 200.0 + d, 20.0),
                [1.0, 0.0, e],
            ));
            items.push(item(
                format!("blue-{i}"),
                200 + i,
                (20.0, 20.0, 200.0 + d),
                [0.0, 1.0, e],
            ));
        }
        // An item without statistics or embedding is in no clustering by them.
        items.push((
            "plain".into(),
            record("danbooru", 999, &[("general", &["solo"])]),
        ));
        f.release("1", None, &items);
        let mut pool = crate::pool::Pool::open(&f.pool).unwrap();
        let groups = |r: &ClustersReport| -> Vec<Vec<String>> {
            let mut g: Vec<Vec<String>> = r
                .clusters
                .iter()
                .map(|c| {
                    let mut kinds: Vec<String> = c
                        .medoids
                        .iter()
                        .map(|m| m.split('-').next().unwrap().to_string())
                        .collect();
                    kinds.dedup();
                    kinds
                })
                .collect();
            g.sort();
            g
        };
        let mut p = plan(3);
        p.by = By::Stats;
        p.name = "colour".into();
        let r = train(&mut pool, &p).unwrap();
        assert_eq!(
            (r.features.as_str(), r.trained_items),
            ("stats", 24),
            "{r:?}"
        );
        assert!(r.clusters.iter().all(|c| c.items == 8), "{r:?}");
        assert_eq!(groups(&r), [["blue"], ["green"], ["red"]], "{r:?}");
        let mut p = plan(2);
        p.by = By::Embedding;
        p.name = "look".into();
        let r = train(&mut pool, &p).unwrap();
        let sizes: Vec<u64> = r.clusters.iter().map(|c| c.items).collect();
        assert_eq!(sizes, [16, 8], "{r:?}");
        assert_eq!(groups(&r)[0], ["blue"], "{r:?}");
        // More clusters than items with vectors is refused, and nothing is stored.
        let mut p = plan(25);
        p.by = By::Stats;
        let err = train(&mut pool, &p).unwrap_err();
        assert!(
            err.to_string()
                .contains("--k 25 is more than the 24 live items with stats vectors"),
            "{err}"
        );
        drop(pool);

        // Release 2 adds a red and a blue: the merge puts them in their colour's
        // cluster and their direction's, without training again.
        items.push(item(
            "red-new".into(),
            50,
            (210.0, 25.0, 15.0),
            [1.0, 0.05, 0.0],
        ));
        items.push(item(
            "blue-new".into(),
            250,
            (15.0, 25.0, 215.0),
            [0.0, 1.0, 0.0],
        ));
        f.release("2", Some("1"), &items);
        let pool = f.open_pool();
        let cluster_of = |name: &str, key: &str| -> i64 {
            pool.connection()
                .query_row(
                    "SELECT ci.cluster FROM cluster_items ci JOIN clusterings c ON c.id = ci.clustering
                     JOIN items i ON i.id = ci.item WHERE c.name = ?1 AND i.key = ?2",
                    params![name, key],
                    |r| r.get(0),
                )
                .unwrap()
        };
        for name in ["colour", "look"] {
            assert_eq!(
                cluster_of(name, "red-new"),
                cluster_of(name, "red-0"),
                "{name}"
            );
            assert_eq!(
                cluster_of(name, "blue-new"),
                cluster_of(name, "blue-3"),
                "{name}"
            );
        }
        let r = show(&pool, None, "colour").unwrap();
        assert_eq!(r.trained_items, 24);
        assert_eq!(r.clusters.iter().map(|c| c.items).sum::<u64>(), 26);
        let unassigned: i64 = pool
            .connection()
            .query_row(
                "SELECT count(*) FROM cluster_items ci JOIN items i ON i.id = ci.item WHERE i.key = 'plain'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(unassigned, 0);
    }

    #[test]
    fn clusters_by_a_vector_the_pool_lacks_are_refused() {
        let f = Fixture::new();
        f.release("1", None, &items(&[0], 5, 0));
        let mut pool = crate::pool::Pool::open(&f.pool).unwrap();
        for (by, says) in [
            (By::Stats, "has image statistics"),
            (By::Embedding, "has an embedding (make them with"),
        ] {
            let mut p = plan(2);
            p.by = by;
            let err = train(&mut pool, &p).unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}
