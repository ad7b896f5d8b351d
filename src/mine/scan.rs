//! Nearest neighbours in a vector space (docs/mining.md, "Vectors"): an exact scan of
//! the space's vectors in the pool, keeping the nearest in a bounded heap. It costs one
//! read of the space (2 bytes a dimension an item: 24 MB for image statistics at a
//! million items) and no derived file to keep in step with merges. Distances are
//! Euclidean; embeddings are unit vectors, for which that orders as cosine does.

use std::collections::BinaryHeap;

use rusqlite::{params, Connection};

use super::MineError;
use crate::pool::vectors::{from_blob, Space};

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

/// The `keep` nearest items to `query` in `space`, nearest first, leaving out
/// `exclude` (the query's own item). Returns the vectors compared, and the nearest.
pub fn nearest(
    conn: &Connection,
    space: &Space,
    query: &[f32],
    exclude: i64,
    keep: usize,
) -> Result<(u64, Vec<Near>), MineError> {
    let mut st = conn
        .prepare_cached("SELECT item, vector FROM item_vectors WHERE space = ?1 AND item != ?2")?;
    let mut rows = st.query(params![space.id, exclude])?;
    let mut heap: BinaryHeap<Kept> = BinaryHeap::with_capacity(keep + 1);
    let mut compared = 0u64;
    let mut v: Vec<f32> = Vec::with_capacity(space.dims);
    while let Some(r) = rows.next()? {
        let item: i64 = r.get(0)?;
        let blob = r.get_ref(1)?.as_blob().unwrap_or_default();
        v.clear();
        v.extend(from_blob(blob));
        if v.len() != query.len() {
            continue;
        }
        compared += 1;
        let d = distance(query, &v);
        if heap.len() < keep {
            heap.push(Kept(d, item));
        } else if heap.peek().is_some_and(|top| Kept(d, item) < *top) {
            heap.pop();
            heap.push(Kept(d, item));
        }
    }
    let near = heap
        .into_sorted_vec()
        .into_iter()
        .map(|Kept(distance, item)| Near { item, distance })
        .collect();
    Ok((compared, near))
}

pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}
