//! Nearest neighbours in a vector space (docs/mining.md, "Vectors"), keeping the nearest
//! in a bounded heap. Exact: a scan of the space's vectors in the pool, one read of 2
//! bytes a dimension an item (24 MB for image statistics at a million items).
//! Approximate: the items of the clusters nearest the query in a stored clustering of
//! the space, an inverted-file index that merges already keep (they assign new items to
//! their clusters). Distances are Euclidean; embeddings are unit vectors, for which
//! that orders as cosine does.

use std::collections::BinaryHeap;

use rusqlite::{params, Connection};

use super::MineError;
use crate::pool::vectors::Space;

/// An item and its distance from the query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Near {
    pub item: i64,
    pub distance: f32,
}

/// Orders by distance, then item, so the heap's top is the farthest kept.
#[derive(PartialEq)]
struct Kept(f32, i64);

impl Eq for Kept {}

impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Kept {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// Where a search takes its candidates from.
pub enum Candidates<'a> {
    /// Every vector of the space: exact.
    All,
    /// The items of some clusters of a clustering over the space: an inverted-file
    /// index, approximate (a neighbour in a cluster not probed is missed).
    Clusters {
        clustering: i64,
        clusters: &'a [u32],
    },
}

/// The `keep` nearest items to `query` in `space` among `from`, nearest first, leaving
/// out `exclude` (the query's own item). Returns the vectors compared, and the nearest.
pub fn nearest(
    conn: &Connection,
    space: &Space,
    from: &Candidates,
    query: &[f32],
    exclude: i64,
    keep: usize,
) -> Result<(u64, Vec<Near>), MineError> {
    let mut heap = Heap {
        kept: BinaryHeap::with_capacity(keep + 1),
        keep,
        compared: 0,
        v: Vec::with_capacity(space.dims),
    };
    match from {
        Candidates::All => {
            let mut st = conn.prepare_cached(
                "SELECT item, vector FROM item_vectors WHERE space = ?1 AND item != ?2",
            )?;
            heap.consider(query, st.query(params![space.id, exclude])?)?;
        }
        Candidates::Clusters {
            clustering,
            clusters,
        } => {
            // The clusters' items first (from the index by cluster), then their vectors
            // in item order: lookups in the clusters' order would jump about the table.
            let mut members = conn.prepare_cached(
                "SELECT item FROM cluster_items WHERE clustering = ?1 AND cluster = ?2",
            )?;
            let mut items: Vec<i64> = Vec::new();
            for &cluster in *clusters {
                let rows = members.query_map(params![clustering, cluster], |r| r.get(0))?;
                for item in rows {
                    items.push(item?);
                }
            }
            items.sort_unstable();
            let mut st = conn.prepare_cached(
                "SELECT item, vector FROM item_vectors WHERE space = ?1 AND item = ?2",
            )?;
            for item in items.into_iter().filter(|&i| i != exclude) {
                heap.consider(query, st.query(params![space.id, item])?)?;
            }
        }
    }
    let near = heap
        .kept
        .into_sorted_vec()
        .into_iter()
        .map(|Kept(distance, item)| Near { item, distance })
        .collect();
    Ok((heap.compared, near))
}

/// The nearest kept so far, in a heap whose top is the farthest of them.
struct Heap {
    kept: BinaryHeap<Kept>,
    keep: usize,
    compared: u64,
    /// The vector being compared, decoded in place.
    v: Vec<f32>,
}

impl Heap {
    fn consider(&mut self, query: &[f32], mut rows: rusqlite::Rows) -> Result<(), MineError> {
        while let Some(r) = rows.next()? {
            let item: i64 = r.get(0)?;
            let blob = r.get_ref(1)?.as_blob().unwrap_or_default();
            if blob.len() != query.len() * 2 {
                continue;
            }
            self.v.clear();
            crate::imaging::embedding::extend_f16(&mut self.v, blob);
            self.compared += 1;
            let d = distance(query, &self.v);
            if self.kept.len() < self.keep {
                self.kept.push(Kept(d, item));
            } else if self.kept.peek().is_some_and(|top| Kept(d, item) < *top) {
                self.kept.pop();
                self.kept.push(Kept(d, item));
            }
        }
        Ok(())
    }
}

pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}
