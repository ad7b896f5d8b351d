//! The one duplicate finder: ingest runs it over the originals of a release, the pool
//! over a dataset's live items across releases. Items are joined into groups when they
//! share an exact key (an md5, a pixel hash, a post) or when their 64-bit perceptual
//! hashes lie within a Hamming distance; each group's winner is its best member by an
//! order the caller gives. Groups are transitive: a chain of near copies is one group.

use std::collections::HashMap;
use std::hash::Hash;

/// Duplicate groups over items `0..n` (a union-find).
pub struct Groups {
    parent: Vec<usize>,
}

impl Groups {
    pub fn new(n: usize) -> Self {
        Self {
            parent: (0..n).collect(),
        }
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }

    /// Joins the items that share a key; `keys` yields `(item, key)`, any number per item.
    pub fn join_equal<K: Hash + Eq>(&mut self, keys: impl IntoIterator<Item = (usize, K)>) {
        let mut first: HashMap<K, usize> = HashMap::new();
        for (i, key) in keys {
            match first.get(&key) {
                Some(&j) => self.union(i, j),
                None => {
                    first.insert(key, i);
                }
            }
        }
    }

    /// `join_equal` by sorting `(key, item)` pairs instead of a map: 16 bytes a pair
    /// with a 64-bit key, for the pool's millions of items.
    pub fn join_sorted<K: Ord>(&mut self, mut keys: Vec<(K, usize)>) {
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for pair in keys.windows(2) {
            if pair[0].0 == pair[1].0 {
                self.union(pair[0].1, pair[1].1);
            }
        }
    }

    /// Joins the items whose perceptual hashes (`hashes[i]`, `None` for none) are at
    /// most `distance` bits apart. The 64 bits are split into `distance + 1` bands: two
    /// hashes within the distance agree on at least one band (pigeonhole), so only
    /// items sharing a band are compared, and no pair within the distance is missed.
    /// One band at a time, the hashed items are sorted by its bits and each run of
    /// equal bits compared pairwise: 16 bytes an item, not a map of lists.
    pub fn join_near(&mut self, hashes: &[Option<u64>], distance: u32) {
        let bands = distance.min(63) as usize + 1;
        let width = 64 / bands;
        let mut by_band: Vec<(u64, usize)> = Vec::new();
        for b in 0..bands {
            let bits = if b + 1 == bands {
                64 - b * width
            } else {
                width
            };
            by_band.clear();
            by_band.extend(hashes.iter().enumerate().filter_map(|(i, h)| {
                h.map(|h| ((h >> (b * width)) & (u64::MAX >> (64 - bits)), i))
            }));
            by_band.sort_unstable();
            for run in by_band.chunk_by(|x, y| x.0 == y.0) {
                for (k, &(_, i)) in run.iter().enumerate() {
                    let h = hashes[i].expect("only hashed items are banded");
                    for &(_, j) in &run[..k] {
                        let other = hashes[j].expect("only hashed items are banded");
                        if (h ^ other).count_ones() <= distance {
                            self.union(i, j);
                        }
                    }
                }
            }
        }
    }

    /// The number of members of each item's group, by item.
    pub fn sizes(&mut self) -> Vec<u32> {
        let n = self.parent.len();
        let mut size = vec![0u32; n];
        for i in 0..n {
            let root = self.find(i);
            size[root] += 1;
        }
        (0..n).map(|i| size[self.find(i)]).collect()
    }

    /// For each item, its group's winner: the member with the smallest `order` (which
    /// must be a total order, so the choice never depends on the items' order).
    pub fn winners<K: Ord>(&mut self, order: impl Fn(usize) -> K) -> Vec<usize> {
        let n = self.parent.len();
        let mut best: HashMap<usize, usize> = HashMap::new();
        for i in 0..n {
            let root = self.find(i);
            let e = best.entry(root).or_insert(i);
            if order(i) < order(*e) {
                *e = i;
            }
        }
        (0..n).map(|i| best[&self.find(i)]).collect()
    }
}

/// A perceptual hash as records write it: 16 hex digits, `0x` allowed.
pub fn parse_phash(text: &str) -> Option<u64> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_copies_within_the_distance_join_and_chains_are_one_group() {
        // 0 and 1 are 3 bits apart, 1 and 2 are 3 bits apart (0 and 2: 6), 3 is far.
        let hashes = [
            Some(0u64),
            Some(0b111),
            Some(0b111_111),
            Some(u64::MAX),
            None,
        ];
        let mut g = Groups::new(hashes.len());
        g.join_near(&hashes, 3);
        assert_eq!(g.winners(|i| i), [0, 0, 0, 3, 4]);
        let mut g = Groups::new(hashes.len());
        g.join_near(&hashes, 2);
        assert_eq!(g.winners(|i| i), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn banding_finds_every_pair_a_full_comparison_finds() {
        // Pseudo-random hashes and flips of up to 8 bits, every distance 0 to 7.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut hashes = Vec::new();
        for _ in 0..40 {
            let h = next();
            hashes.push(Some(h));
            let flips = next() % 9;
            let mut near = h;
            for _ in 0..flips {
                near ^= 1 << (next() % 64);
            }
            hashes.push(Some(near));
        }
        for distance in 0..=7 {
            let mut banded = Groups::new(hashes.len());
            banded.join_near(&hashes, distance);
            let mut full = Groups::new(hashes.len());
            for i in 0..hashes.len() {
                for j in 0..i {
                    if (hashes[i].unwrap() ^ hashes[j].unwrap()).count_ones() <= distance {
                        full.union(i, j);
                    }
                }
            }
            assert_eq!(banded.winners(|i| i), full.winners(|i| i), "{distance}");
        }
    }

    #[test]
    fn equal_keys_join_and_the_winner_follows_the_order_not_the_input() {
        let mut g = Groups::new(4);
        g.join_equal([(0, "md5-a"), (1, "md5-b"), (2, "md5-a"), (3, "md5-c")]);
        g.join_equal([(1, 7), (3, 7)]);
        let rank = [5, 2, 1, 9];
        assert_eq!(g.winners(|i| rank[i]), [2, 1, 2, 1]);
        let mut sorted = Groups::new(4);
        sorted.join_sorted(vec![("md5-a", 0), ("md5-b", 1), ("md5-a", 2), ("md5-c", 3)]);
        sorted.join_sorted(vec![(7, 1), (7, 3)]);
        assert_eq!(sorted.winners(|i| rank[i]), [2, 1, 2, 1]);
        assert_eq!(sorted.sizes(), [2, 2, 2, 2]);
        let mut apart = Groups::new(3);
        apart.join_sorted(vec![(1, 0), (2, 1)]);
        assert_eq!(apart.sizes(), [1, 1, 1]);
    }

    #[test]
    fn phashes_parse_with_or_without_a_prefix() {
        assert_eq!(parse_phash("00000000000000ff"), Some(255));
        assert_eq!(parse_phash("0xff"), Some(255));
        assert_eq!(parse_phash("not hex"), None);
    }
}
