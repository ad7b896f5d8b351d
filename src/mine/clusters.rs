//! Clusters of items by their tags (docs/mining.md): spherical k-means over IDF-weighted
//! tag vectors (the `vocabulary` most used tags), seeded by k-means++ on a sample,
//! stored in the pool as a named clustering with each cluster's most characteristic
//! tags and the items nearest its centroid. Merges assign the items they bring to the
//! stored centroids (`pool::clusters::assign`).

use std::collections::HashMap;

use rayon::prelude::*;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{live_ids, one_dataset, MineError};
use crate::pool::clusters::{encode, nearest, normalize};
use crate::pool::Pool;

#[derive(Clone, Debug)]
pub struct ClustersPlan {
    pub dataset: Option<String>,
    pub name: String,
    pub k: usize,
    /// The most used tags that make the features.
    pub vocabulary: usize,
    pub iterations: usize,
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
    pub k: usize,
    pub trained_items: u64,
    /// Iterations run, and the share of items that changed cluster in the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_moved: Option<f64>,
    pub clusters: Vec<Cluster>,
}

/// Items' feature vectors, one flat list.
struct Matrix {
    ids: Vec<i64>,
    ends: Vec<usize>,
    feats: Vec<(u32, f32)>,
}

impl Matrix {
    fn row(&self, i: usize) -> &[(u32, f32)] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.feats[start..self.ends[i]]
    }
}

fn mix(i: u64) -> u64 {
    super::related::mix(i as i64)
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
    let ids = live_ids(conn, &[ds])?;
    if plan.k > ids.len() {
        return Err(MineError::Unanswerable(format!(
            "--k {} is more than the {} live items of `{dataset}`",
            plan.k,
            ids.len()
        )));
    }
    let n_items = ids.len() as f64;

    // The vocabulary: the most used tags, each weighing ln(N / n).
    let mut vocab: Vec<(String, String, f32)> = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    {
        let mut st = conn.prepare(
            "SELECT canonical, category, sum(items) AS n FROM tag_counts WHERE dataset = ?1
             GROUP BY canonical, category ORDER BY n DESC, canonical, category LIMIT ?2",
        )?;
        let rows = st.query_map(params![ds, plan.vocabulary as i64], |r| {
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
    let index: HashMap<(String, String), u32> = vocab
        .iter()
        .enumerate()
        .map(|(i, (n, c, _))| ((n.clone(), c.clone()), i as u32))
        .collect();
    // Pool tag ids of the vocabulary's tags.
    let mut of_tag: HashMap<i64, u32> = HashMap::new();
    {
        let mut st =
            conn.prepare_cached("SELECT id FROM tags WHERE canonical = ?1 AND category = ?2")?;
        for ((n, c), &v) in &index {
            for id in st.query_map(params![n, c], |r| r.get::<_, i64>(0))? {
                of_tag.insert(id?, v);
            }
        }
    }

    // Every live item's features, from one pass over the tag links in item order.
    let matrix = {
        let mut m = Matrix {
            ids: Vec::new(),
            ends: Vec::with_capacity(ids.len()),
            feats: Vec::new(),
        };
        let mut st =
            conn.prepare("SELECT item, tag FROM item_tags WHERE item >= ?1 AND item <= ?2")?;
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
        m
    };
    let n = matrix.ids.len();
    let dims = vocab.len().max(1);

    // k-means++ seeds from a hashed sample, with a fixed generator: the same pool gives
    // the same clusters.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by_key(|&i| mix(matrix.ids[i] as u64));
    order.truncate(SEED_SAMPLE.max(plan.k));
    let mut rng = 0x5eed_u64;
    let mut next = || {
        rng = mix(rng.wrapping_add(1));
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    let dense = |row: &[(u32, f32)]| {
        let mut c = vec![0f32; dims];
        for &(i, w) in row {
            c[i as usize] = w;
        }
        c
    };
    let mut centroids: Vec<Vec<f32>> = vec![dense(matrix.row(order[0]))];
    let mut dist: Vec<f64> = order
        .iter()
        .map(|&i| 1.0 - f64::from(nearest(&centroids, matrix.row(i)).1))
        .collect();
    while centroids.len() < plan.k {
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
        let c = dense(matrix.row(order[pick]));
        for (j, &i) in order.iter().enumerate() {
            let s: f32 = matrix.row(i).iter().map(|&(f, w)| w * c[f as usize]).sum();
            dist[j] = dist[j].min(1.0 - f64::from(s));
        }
        centroids.push(c);
    }

    // Lloyd's iterations, assignments in parallel.
    let mut assigned: Vec<(u32, f32)> = vec![(u32::MAX, 0.0); n];
    let mut iterations = 0;
    let mut moved_share = 1.0;
    for _ in 0..plan.iterations {
        iterations += 1;
        let next_assigned: Vec<(u32, f32)> = (0..n)
            .into_par_iter()
            .map(|i| nearest(&centroids, matrix.row(i)))
            .collect();
        let moved = next_assigned
            .iter()
            .zip(&assigned)
            .filter(|(a, b)| a.0 != b.0)
            .count();
        assigned = next_assigned;
        moved_share = moved as f64 / n as f64;
        let mut sums = vec![vec![0f32; dims]; plan.k];
        let mut sizes = vec![0u64; plan.k];
        for (i, &(c, _)) in assigned.iter().enumerate() {
            sizes[c as usize] += 1;
            for &(f, w) in matrix.row(i) {
                sums[c as usize][f as usize] += w;
            }
        }
        for (c, sum) in sums.iter_mut().enumerate() {
            if sizes[c] == 0 {
                // An empty cluster takes the item farthest from its own centroid.
                let far = (0..n)
                    .min_by(|&a, &b| assigned[a].1.total_cmp(&assigned[b].1))
                    .expect("items");
                *sum = dense(matrix.row(far));
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
    let assigned: Vec<(u32, f32)> = (0..n)
        .into_par_iter()
        .map(|i| nearest(&centroids, matrix.row(i)))
        .collect();

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
    let vocabulary = serde_json::to_string(&vocab).expect("a vocabulary serializes");
    tx.execute(
        "INSERT INTO clusterings(dataset, name, features, k, vocabulary, trained_items, trained_at_release)
         VALUES (?1, ?2, 'tags', ?3, ?4, ?5, (SELECT head_release FROM datasets WHERE id = ?1))",
        params![ds, name, plan.k as i64, vocabulary, n as i64],
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
            "SELECT id, k, trained_items FROM clusterings WHERE dataset = ?1 AND name = ?2",
            params![ds, name],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            },
        )
        .optional()?;
    let Some((id, k, trained)) = found else {
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
    use crate::testing::{record, Fixture};

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
}
