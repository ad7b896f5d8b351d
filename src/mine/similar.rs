//! Similar items (docs/mining.md): the live items nearest one item by perceptual hash
//! (Hamming distance, through `pool::phash`'s multi-index) or by tags (IDF-weighted
//! Jaccard, through the tag index), each with its distance. Neither reads every item.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::MineError;
use crate::pool::Pool;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// Perceptual hash: look-alike pictures (resized, recompressed, retouched).
    Phash,
    /// Tag sets, rare tags weighing more: the same characters, series and artist.
    Tags,
    /// Image statistics (brightness, contrast, colour, edges): pictures that look
    /// alike at a glance.
    Stats,
    /// The embedder's vectors (records from `ingest --embedder` or `detect
    /// --embedder`): what the model sees as alike.
    Embedding,
}

#[derive(Clone, Debug)]
pub struct SimilarPlan {
    pub key: String,
    /// The item's dataset, when the key is in several; results come from every dataset
    /// unless `only_dataset`.
    pub dataset: Option<String>,
    pub only_dataset: bool,
    pub by: By,
    pub limit: usize,
    /// Most bits apart, by pHash.
    pub radius: u32,
    /// By stats or embedding: clusters searched of the largest stored clustering of the
    /// item's space (0: every vector, exactly).
    pub probes: usize,
}

pub const DEFAULT_RADIUS: u32 = 12;
/// Clusters searched by default: 8 of a clustering of 50 read about a sixth of a space,
/// and find about 9 in 10 of the exact nearest (docs/performance.md, "Mining").
pub const DEFAULT_PROBES: usize = 8;
/// Most items read from the tag index for one search (the rarest tags' lists first).
const TAG_POSTINGS: usize = 60_000;
/// Candidates whose whole tag sets are compared.
const TAG_CANDIDATES: usize = 600;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Similar {
    pub key: String,
    pub dataset: String,
    /// Bits apart by pHash; 1 - weighted Jaccard by tags (0 = the same tags);
    /// Euclidean by statistics; 1 - cosine by embedding.
    pub distance: f64,
    /// Tags both items have (by tags).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_tags: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SimilarReport {
    pub key: String,
    pub dataset: String,
    pub by: By,
    /// Items compared in full.
    pub compared: u64,
    /// By stats or embedding, the clustering whose clusters were searched; none when
    /// every vector was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<Probed>,
    pub similar: Vec<Similar>,
}

/// The clusters an approximate search read.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Probed {
    pub clustering: String,
    pub clusters: usize,
    pub probed: usize,
}

/// The item a search starts from: (id, dataset id, dataset name, pHash text).
fn item(
    conn: &rusqlite::Connection,
    key: &str,
    dataset: Option<&str>,
) -> Result<(i64, i64, String, Option<String>), MineError> {
    // One lookup per dataset by the (dataset, key) index: a key alone has no index.
    let mut names = conn.prepare("SELECT id, name FROM datasets ORDER BY name")?;
    let all: Vec<(i64, String)> = names
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    if let Some(d) = dataset {
        if !all.iter().any(|(_, n)| n == d) {
            return Err(MineError::UnknownDataset(d.to_string()));
        }
    }
    let mut st =
        conn.prepare_cached("SELECT id, phash FROM items WHERE dataset = ?1 AND key = ?2")?;
    let mut found: Vec<(i64, i64, String, Option<String>)> = Vec::new();
    for (ds, name) in all
        .into_iter()
        .filter(|(_, n)| dataset.is_none_or(|d| d == n))
    {
        let row: Option<(i64, Option<String>)> = st
            .query_row(params![ds, key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((id, phash)) = row {
            found.push((id, ds, name, phash));
        }
    }
    match found.len() {
        0 => Err(MineError::UnknownItem(key.to_string())),
        1 => Ok(found.into_iter().next().expect("one")),
        _ => Err(MineError::WhichDataset(
            found
                .into_iter()
                .map(|f| f.2)
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

pub fn similar(pool: &Pool, plan: &SimilarPlan) -> Result<SimilarReport, MineError> {
    let conn = pool.connection();
    let _snapshot = super::Snapshot::begin(conn)?;
    let (id, ds, dataset, phash) = item(conn, &plan.key, plan.dataset.as_deref())?;
    let only = plan.only_dataset.then_some(ds);
    let mut index = None;
    let (compared, found) = match plan.by {
        By::Phash => {
            let Some(hash) = phash
                .as_deref()
                .and_then(crate::curate::duplicates::parse_phash)
            else {
                return Err(MineError::Unanswerable(format!(
                    "item `{}` has no perceptual hash (records get one from `seedpool ingest`)",
                    plan.key
                )));
            };
            let near = crate::pool::phash::near(conn, hash, plan.radius)?;
            let compared = near.len() as u64;
            let mut found: Vec<Neighbour> = Vec::new();
            for n in near.into_iter().filter(|n| n.item != id) {
                if found.len() == plan.limit {
                    break;
                }
                match live_dataset(conn, n.item)? {
                    Some(d) if only.is_none_or(|o| o == d) => found.push(Neighbour {
                        item: n.item,
                        distance: f64::from(n.distance),
                        shared: None,
                    }),
                    _ => {}
                }
            }
            (compared, found)
        }
        By::Tags => {
            let mut search = TagSearch::new(conn, ds)?;
            let query = search.tags(id)?;
            if query.is_empty() {
                return Err(MineError::Unanswerable(format!(
                    "item `{}` has no tags to compare",
                    plan.key
                )));
            }
            search.nearest(&query, id, only, plan.limit)?
        }
        By::Stats | By::Embedding => by_vector(pool, plan, id, ds, &mut index)?,
    };
    let mut names = conn.prepare_cached(
        "SELECT i.key, d.name FROM items i JOIN datasets d ON d.id = i.dataset WHERE i.id = ?1",
    )?;
    let mut similar = Vec::with_capacity(found.len());
    for n in found {
        let (key, dataset) = names.query_row([n.item], |r| Ok((r.get(0)?, r.get(1)?)))?;
        similar.push(Similar {
            key,
            dataset,
            distance: n.distance,
            shared_tags: n.shared,
        });
    }
    Ok(SimilarReport {
        key: plan.key.clone(),
        dataset,
        by: plan.by,
        compared,
        index,
        similar,
    })
}

/// The nearest live items of the item's dataset in the space its vector is in.
fn by_vector(
    pool: &Pool,
    plan: &SimilarPlan,
    id: i64,
    ds: i64,
    index: &mut Option<Probed>,
) -> Result<(u64, Vec<Neighbour>), MineError> {
    use crate::pool::vectors::{self, Kind};
    let conn = pool.connection();
    let kind = if plan.by == By::Stats {
        Kind::Stats
    } else {
        Kind::Embedding
    };
    let found = vectors::item_vector(conn, id, kind)?;
    let Some((space, query)) = found else {
        return Err(MineError::Unanswerable(match kind {
            Kind::Stats => format!(
                "item `{}` has no image statistics (records get them from `seedpool ingest`)",
                plan.key
            ),
            Kind::Embedding => format!(
                "item `{}` has no embedding (records get one from `seedpool ingest --embedder` or `seedpool detect --embedder`)",
                plan.key
            ),
        }));
    };
    let probe = probes(conn, ds, &space, &query, plan.probes)?;
    let from = match &probe {
        Some((clustering, clusters, _)) => super::scan::Candidates::Clusters {
            clustering: *clustering,
            clusters,
        },
        None => super::scan::Candidates::All,
    };
    // Kept beyond the limit: some of the nearest may be duplicates now.
    let keep = plan.limit.saturating_mul(4) + 20;
    let (compared, near) = super::scan::nearest(conn, &space, &from, &query, id, keep)?;
    *index = probe.map(|(_, _, about)| about);
    let mut out = Vec::new();
    for n in near {
        if out.len() == plan.limit {
            break;
        }
        if live_dataset(conn, n.item)?.is_some() {
            let d = f64::from(n.distance);
            out.push(Neighbour {
                item: n.item,
                // Unit vectors: |a - b|^2 = 2 - 2 cos.
                distance: if kind == Kind::Embedding {
                    (d * d / 2.0 * 1e6).round() / 1e6
                } else {
                    (d * 1e6).round() / 1e6
                },
                shared: None,
            });
        }
    }
    Ok((compared, out))
}

/// The `wanted` clusters nearest `query` of the dataset's largest clustering of `space`
/// (the clustering's id, the clusters, and what to report); none when `wanted` is 0 or
/// no clustering has more clusters than that, so searching them would read every vector
/// anyway.
fn probes(
    conn: &rusqlite::Connection,
    ds: i64,
    space: &crate::pool::vectors::Space,
    query: &[f32],
    wanted: usize,
) -> Result<Option<(i64, Vec<u32>, Probed)>, MineError> {
    use crate::pool::clusters::{centred, dot, vector_model, Features};
    if wanted == 0 {
        return Ok(None);
    }
    // On every item page: read the one clustering searched, not every stored model.
    let Some((model, name)) = vector_model(conn, ds, space.id, wanted)? else {
        return Ok(None);
    };
    let Features::Vectors(v) = &model.features else {
        return Ok(None);
    };
    let x = centred(query, &v.center);
    if x.is_empty() {
        return Ok(None);
    }
    let mut ranked: Vec<(f32, u32)> = model
        .centroids
        .iter()
        .enumerate()
        .map(|(c, centroid)| (dot(&x, centroid), c as u32))
        .collect();
    ranked.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let clusters: Vec<u32> = ranked.into_iter().take(wanted).map(|(_, c)| c).collect();
    let about = Probed {
        clustering: name,
        clusters: model.centroids.len(),
        probed: clusters.len(),
    };
    Ok(Some((model.id, clusters, about)))
}

/// An item found near another, with its distance (and, by tags, the tags they share).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Neighbour {
    pub item: i64,
    pub distance: f64,
    pub shared: Option<u64>,
}

/// Nearest items by IDF-weighted Jaccard of tag sets, through the tag index. Tags are
/// (canonical name, category), interned as they are met; each weighs ln(N / n) with n
/// its live items in the dataset and N the dataset's.
pub(crate) struct TagSearch<'c> {
    conn: &'c rusqlite::Connection,
    ds: i64,
    scope: f64,
    pub keys: Vec<(String, String)>,
    ids: HashMap<(String, String), u32>,
    weights: HashMap<u32, f64>,
    /// Items read from the tag index per search (the rarest tags' lists first).
    pub postings: usize,
}

impl<'c> TagSearch<'c> {
    pub fn new(conn: &'c rusqlite::Connection, ds: i64) -> Result<Self, MineError> {
        Ok(Self {
            conn,
            ds,
            scope: super::live_items(conn, ds)?.max(1) as f64,
            keys: Vec::new(),
            ids: HashMap::new(),
            weights: HashMap::new(),
            postings: TAG_POSTINGS,
        })
    }

    fn intern(&mut self, key: (String, String)) -> u32 {
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.keys.len() as u32;
        self.keys.push(key.clone());
        self.ids.insert(key, id);
        id
    }

    /// An item's tags, sorted and distinct.
    pub fn tags(&mut self, item: i64) -> Result<Vec<u32>, MineError> {
        let mut st = self.conn.prepare_cached(
            "SELECT t.canonical, t.category FROM item_tags it JOIN tags t ON t.id = it.tag
             WHERE it.item = ?1",
        )?;
        let rows: Vec<(String, String)> = st
            .query_map([item], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut set: Vec<u32> = rows.into_iter().map(|k| self.intern(k)).collect();
        set.sort_unstable();
        set.dedup();
        Ok(set)
    }

    /// A tag's weight and live items in the dataset.
    fn weight(&mut self, t: u32) -> Result<(f64, u64), MineError> {
        let (name, category) = &self.keys[t as usize];
        let mut st = self.conn.prepare_cached(
            "SELECT coalesce(sum(items), 0) FROM tag_counts WHERE dataset = ?1 AND canonical = ?2 AND category = ?3",
        )?;
        let n: i64 = st.query_row(params![self.ds, name, category], |r| r.get(0))?;
        let n = n.max(1) as u64;
        let w = *self
            .weights
            .entry(t)
            .or_insert_with(|| (self.scope / n as f64).ln().max(0.0) + 1e-3);
        Ok((w, n))
    }

    /// The `limit` nearest live items to a tag set, leaving out `exclude`. Candidates
    /// are the items sharing the query's rarest tags, read rarest first until
    /// `postings` index entries have been read, ranked by the weight they share there;
    /// the best `TAG_CANDIDATES` are compared by their whole tag sets. An item that
    /// shares only common tags with the query is not found: with thousands of such
    /// items, none of them is near. Returns the items compared, and the nearest.
    pub fn nearest(
        &mut self,
        query: &[u32],
        exclude: i64,
        only: Option<i64>,
        limit: usize,
    ) -> Result<(u64, Vec<Neighbour>), MineError> {
        let mut rarity: Vec<(u64, u32)> = Vec::new();
        let mut weight: HashMap<u32, f64> = HashMap::new();
        for &t in query {
            let (w, n) = self.weight(t)?;
            weight.insert(t, w);
            rarity.push((n, t));
        }
        rarity.sort_unstable();
        let conn = self.conn;
        let mut ids_of =
            conn.prepare_cached("SELECT id FROM tags WHERE canonical = ?1 AND category = ?2")?;
        let mut postings =
            conn.prepare_cached("SELECT item FROM item_tags WHERE tag = ?1 LIMIT ?2")?;
        let mut partial: HashMap<i64, f64> = HashMap::new();
        let mut read = 0usize;
        for (i, &(_, t)) in rarity.iter().enumerate() {
            if read >= self.postings && i > 0 {
                break;
            }
            let (name, category) = &self.keys[t as usize];
            let tag_ids: Vec<i64> = ids_of
                .query_map(params![name, category], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for tag_id in tag_ids {
                let left = self.postings.saturating_sub(read).max(1);
                for item in
                    postings.query_map(params![tag_id, left as i64], |r| r.get::<_, i64>(0))?
                {
                    let item = item?;
                    read += 1;
                    if item != exclude {
                        *partial.entry(item).or_default() += weight[&t];
                    }
                }
            }
        }
        let mut candidates: Vec<(i64, f64)> = partial.into_iter().collect();
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        candidates.truncate(TAG_CANDIDATES);
        let compared = candidates.len() as u64;

        let total: f64 = query.iter().map(|t| weight[t]).sum();
        let rarest = self.scope.ln() + 1e-3;
        let mut scored = Vec::new();
        for (item, _) in candidates {
            let Some(d) = live_dataset(conn, item)? else {
                continue;
            };
            if only.is_some_and(|o| o != d) {
                continue;
            }
            let other = self.tags(item)?;
            let (mut both, mut shared, mut extra) = (0.0, 0u64, 0.0);
            for t in &other {
                match weight.get(t) {
                    Some(w) => {
                        both += w;
                        shared += 1;
                    }
                    // Tags only the other item has weigh as in the query's dataset
                    // (known ones), or as the rarest.
                    None => extra += self.weights.get(t).copied().unwrap_or(rarest),
                }
            }
            scored.push(Neighbour {
                item,
                distance: 1.0 - both / (total + extra),
                shared: Some(shared),
            });
        }
        scored.sort_unstable_by(|a, b| a.distance.total_cmp(&b.distance).then(a.item.cmp(&b.item)));
        scored.truncate(limit);
        Ok((compared, scored))
    }
}

/// The dataset of a live item; None when it is removed or hidden.
fn live_dataset(conn: &rusqlite::Connection, item: i64) -> Result<Option<i64>, MineError> {
    let mut st = conn.prepare_cached(
        "SELECT dataset FROM items WHERE id = ?1 AND removed_in IS NULL AND duplicate_of IS NULL",
    )?;
    Ok(st.query_row([item], |r| r.get(0)).optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{record, stats, Fixture};

    /// Statistics whose colour is `(r, g, b)` and otherwise alike.
    #[test]
    fn items_are_found_by_their_statistics_and_embeddings_through_the_vector_index() {
        use crate::imaging::embedding::{encode, unit};
        let f = Fixture::new();
        let embedding = |x: f32, y: f32| {
            let mut v = vec![x, y, 0.1, 0.0];
            unit(&mut v);
            encode(&v)
        };
        let item = |key: &str, i: u64, colour: (f64, f64, f64), e: (f32, f32)| {
            let mut r = record("danbooru", i, &[("general", &["solo"])]);
            r["stats"] = stats(colour.0, colour.1, colour.2);
            r["embedding"] = embedding(e.0, e.1).into();
            r["embedder"] = serde_json::json!({"space": "tiny", "dims": 4});
            (key.to_string(), r)
        };
        // Reds near `red`, blues far; by embedding, `twin` points where `red` does.
        let mut items = vec![
            item("red", 0, (200.0, 20.0, 20.0), (1.0, 0.0)),
            item("red-2", 1, (190.0, 25.0, 20.0), (0.2, 1.0)),
            item("red-3", 2, (180.0, 30.0, 30.0), (0.0, 1.0)),
            item("twin", 3, (20.0, 20.0, 200.0), (0.98, 0.05)),
        ];
        for i in 0..40 {
            let b = 150.0 + i as f64;
            items.push(item(
                &format!("blue-{i:02}"),
                10 + i,
                (20.0, 30.0, b),
                (0.0, -1.0),
            ));
        }
        f.release("1", None, &items);
        let pool = Pool::open(&f.pool).unwrap();
        let mut p = plan("red", By::Stats);
        p.limit = 3;
        let r = similar(&pool, &p).unwrap();
        let keys: Vec<&str> = r.similar.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["red-2", "red-3", "blue-00"], "{r:?}");
        assert!(r.similar[0].distance < r.similar[1].distance);
        let mut p = plan("red", By::Embedding);
        p.limit = 1;
        let r = similar(&pool, &p).unwrap();
        assert_eq!(r.similar[0].key, "twin", "{r:?}");
        assert!(r.similar[0].distance < 0.01, "{r:?}");
        drop(pool);

        // Release 2: `red-2` turns blue and `red-3` is removed; a new red arrives. The
        // merge replaced and dropped their vectors.
        items[1] = item("red-2", 1, (20.0, 30.0, 170.0), (0.0, -1.0));
        items.remove(2);
        items.push(item("red-4", 99, (195.0, 22.0, 21.0), (0.9, 0.1)));
        f.release("2", Some("1"), &items);
        let pool = Pool::open(&f.pool).unwrap();
        let mut p = plan("red", By::Stats);
        p.limit = 2;
        let r = similar(&pool, &p).unwrap();
        let keys: Vec<&str> = r.similar.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["red-4", "blue-00"], "{r:?}");

        // An item without an embedding, and one without statistics, are told apart.
        items.push((
            "plain".into(),
            record("danbooru", 500, &[("general", &["solo"])]),
        ));
        f.release("3", Some("2"), &items);
        let pool = Pool::open(&f.pool).unwrap();
        for by in [By::Stats, By::Embedding] {
            let e = similar(&pool, &plan("plain", by)).unwrap_err();
            assert!(e.is_usage(), "{e}");
            assert!(e.to_string().contains("has no"), "{e}");
        }
    }

    #[test]
    fn a_stored_clustering_is_the_index_that_searches_only_the_nearest_clusters() {
        use crate::imaging::embedding::{encode, unit};
        use crate::mine::clusters::By as ClusterBy;
        let f = Fixture::new();
        // Three planted groups of 20, each around one axis.
        let item = |group: usize, i: usize| {
            let mut v = vec![0.0f32; 4];
            v[group] = 1.0;
            v[3] = (i as f32 - 10.0) * 0.02;
            v[(group + 1) % 3] = i as f32 * 0.01;
            unit(&mut v);
            let n = group * 100 + i;
            let mut r = record("danbooru", n as u64, &[("general", &["solo"])]);
            r["embedding"] = encode(&v).into();
            r["embedder"] = serde_json::json!({"space": "axes"});
            (format!("g{group}-{i:02}"), r)
        };
        let mut items: Vec<_> = (0..3)
            .flat_map(|g| (0..20).map(move |i| item(g, i)))
            .collect();
        f.release("1", None, &items);
        let pool = Pool::open(&f.pool).unwrap();
        let mut p = plan("g0-05", By::Embedding);
        // No clustering yet: every other vector is compared.
        let exact = similar(&pool, &p).unwrap();
        assert_eq!((exact.compared, exact.index.clone()), (59, None));
        f.cluster("axes", ClusterBy::Embedding, 3);
        p.probes = 1;
        let probed = similar(&pool, &p).unwrap();
        assert_eq!(
            probed.index,
            Some(Probed {
                clustering: "axes".into(),
                clusters: 3,
                probed: 1
            })
        );
        assert_eq!(probed.compared, 19, "its own group alone");
        assert_eq!(probed.similar, exact.similar);
        // As many probes as clusters, or 0, is the exact scan.
        for probes in [0, 3] {
            p.probes = probes;
            let r = similar(&pool, &p).unwrap();
            assert_eq!((r.compared, r.index), (59, None), "{probes}");
        }
        drop(pool);

        // A merge puts a new item in its cluster, where the index finds it.
        let mut twin = item(0, 5);
        twin.0 = "new".into();
        twin.1["post_id"] = 999.into();
        items.push(twin);
        f.release("2", Some("1"), &items);
        let pool = Pool::open(&f.pool).unwrap();
        p.probes = 1;
        p.limit = 1;
        let r = similar(&pool, &p).unwrap();
        assert_eq!(
            (r.compared, r.similar[0].key.as_str()),
            (20, "new"),
            "{r:?}"
        );
    }

    fn plan(key: &str, by: By) -> SimilarPlan {
        SimilarPlan {
            key: key.into(),
            dataset: None,
            only_dataset: false,
            by,
            limit: 5,
            radius: DEFAULT_RADIUS,
            probes: DEFAULT_PROBES,
        }
    }

    /// 60 items with random hashes; `twin-a` and `twin-b` are 5 bits from `orig`, `far`
    /// 20 bits; `gone` is 2 bits from `orig` but removed in release 2.
    fn planted() -> Fixture {
        let f = Fixture::new();
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let orig = 0xf0f0_0f0f_3c3c_c3c3u64;
        let mut items: Vec<(String, serde_json::Value)> = Vec::new();
        let mut add = |key: &str, hash: u64, tags: &[&str]| {
            let mut r = record("danbooru", items.len() as u64, &[("general", tags)]);
            r["phash"] = format!("{hash:016x}").into();
            items.push((key.to_string(), r));
        };
        add("orig", orig, &["witch", "broom", "moon", "solo"]);
        add(
            "twin-a",
            orig ^ 0b1_0110_0001,
            &["witch", "broom", "moon", "solo"],
        );
        add(
            "twin-b",
            orig ^ (0b11111 << 40),
            &["witch", "broom", "solo"],
        );
        add("far", orig ^ 0xfffff, &["witch", "solo"]);
        add("gone", orig ^ 0b11, &["solo"]);
        for i in 0..55 {
            add(
                &format!("other-{i:02}"),
                next(),
                &["solo", ["cat", "dog"][i % 2]],
            );
        }
        let v1: Vec<(&str, serde_json::Value)> =
            items.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        f.publish("1", None, &v1);
        f.merge("1");
        let v2: Vec<(&str, serde_json::Value)> =
            v1.into_iter().filter(|(k, _)| *k != "gone").collect();
        f.publish("2", Some("1"), &v2);
        f.merge("2");
        f
    }

    fn keys(r: &SimilarReport) -> Vec<(&str, f64)> {
        r.similar
            .iter()
            .map(|s| (s.key.as_str(), s.distance))
            .collect()
    }

    #[test]
    fn look_alikes_by_phash_within_the_radius() {
        let f = planted();
        let pool = f.open_pool();
        let r = similar(&pool, &plan("orig", By::Phash)).unwrap();
        // The removed near copy is not offered; `far` is past the radius.
        assert_eq!(keys(&r), [("twin-a", 4.0), ("twin-b", 5.0)]);
        let mut p = plan("orig", By::Phash);
        p.radius = 20;
        let r = similar(&pool, &p).unwrap();
        assert!(keys(&r).contains(&("far", 20.0)), "{r:?}");
        // Found by the index as a scan would: every live item within 20 bits.
        let conn = pool.connection();
        let mut st = conn
            .prepare("SELECT key, phash FROM live WHERE key != 'orig'")
            .unwrap();
        let mut scan: Vec<(String, u32)> = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .map(|(k, h)| {
                (
                    k,
                    (u64::from_str_radix(&h, 16).unwrap() ^ 0xf0f0_0f0f_3c3c_c3c3).count_ones(),
                )
            })
            .filter(|(_, d)| *d <= 20)
            .collect();
        scan.sort_by_key(|(k, d)| (*d, k.clone()));
        p.limit = 100;
        let r = similar(&pool, &p).unwrap();
        let found: Vec<(String, u32)> = r
            .similar
            .iter()
            .map(|s| (s.key.clone(), s.distance as u32))
            .collect();
        assert_eq!(found, scan);
    }

    #[test]
    fn look_alikes_by_tags_share_the_rare_ones() {
        let f = planted();
        let pool = f.open_pool();
        let r = similar(&pool, &plan("orig", By::Tags)).unwrap();
        assert_eq!(r.similar[0].key, "twin-a");
        assert!(r.similar[0].distance.abs() < 1e-9, "{r:?}");
        assert_eq!(r.similar[0].shared_tags, Some(4));
        assert_eq!(r.similar[1].key, "twin-b");
        assert_eq!(r.similar[2].key, "far");
        assert!(r.similar[1].distance < r.similar[2].distance);
    }

    #[test]
    fn an_unknown_item_or_one_without_a_hash_is_a_clear_error() {
        let f = planted();
        let pool = f.open_pool();
        let err = similar(&pool, &plan("nope", By::Phash)).unwrap_err();
        assert_eq!(err.to_string(), "the pool has no item `nope`");
        drop(pool);
        let pool = crate::pool::Pool::open(&f.pool).unwrap();
        pool.connection()
            .execute("UPDATE items SET phash = NULL WHERE key = 'orig'", [])
            .unwrap();
        let err = similar(&pool, &plan("orig", By::Phash)).unwrap_err();
        assert!(err.to_string().contains("has no perceptual hash"), "{err}");
    }
}
