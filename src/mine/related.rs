//! Related tags: the tags that co-occur with one tag over the pool's live items,
//! ranked by a measure of association (docs/mining.md). Tag A's items come from the
//! `item_tags_by_tag` index; above twice `sample` of them a hash of the item id picks
//! about `sample` whose tags are read, and co-occurrence counts are scaled back up. Each
//! other tag's own count comes from `tag_counts`, which every merge keeps, so nothing
//! scans the pool.

use std::collections::HashMap;

use rusqlite::params;
use serde::Serialize;

use super::{canonical, datasets, hint, MineError};
use crate::pool::Pool;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Measure {
    /// Items holding both tags.
    Count,
    /// |A∩B| / |A∪B|: both tags mostly come together.
    Jaccard,
    /// |A∩B| / sqrt(|A|·|B|).
    Cosine,
    /// |A∩B| / min(|A|, |B|): one tag is (nearly) inside the other.
    Overlap,
    /// Normalised pointwise mutual information, from -1 (never together) through 0
    /// (independent) to 1 (always together).
    Npmi,
}

impl Measure {
    /// The measure's value for co-occurrence `both` of tags with `a` and `b` items among
    /// `n`.
    pub fn of(self, both: f64, a: f64, b: f64, n: f64) -> f64 {
        if both <= 0.0 {
            return match self {
                Measure::Npmi => -1.0,
                _ => 0.0,
            };
        }
        match self {
            Measure::Count => both,
            Measure::Jaccard => both / (a + b - both).max(both),
            Measure::Cosine => both / (a * b).sqrt().max(both),
            Measure::Overlap => both / a.min(b).max(both),
            Measure::Npmi => {
                let p = (both / n).min(1.0);
                if p >= 1.0 {
                    return 1.0;
                }
                ((both * n) / (a * b)).ln() / -p.ln()
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct RelatedPlan {
    /// The tag as a user writes it; normalised and followed through the pool's aliases.
    pub tag: String,
    /// Only related tags of this category.
    pub category: Option<String>,
    pub dataset: Option<String>,
    /// Only items posted in these years (inclusive).
    pub years: Option<(i64, i64)>,
    pub measure: Measure,
    pub limit: usize,
    /// Leave out tags seen with A on fewer items than this (in the items read).
    pub min_count: u64,
    /// Read the tags of at most this many of A's items (see `sample`).
    pub sample: usize,
}

/// Enough for a share to be within about 1.4 percentage points (two standard errors);
/// each item read is a random page of the tag links, so the cost grows with it.
pub const DEFAULT_SAMPLE: usize = 5_000;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Related {
    pub tag: String,
    pub category: String,
    /// Items with both tags (scaled up from the sample when one was taken).
    pub both: u64,
    /// Items with this tag, in the same scope.
    pub items: u64,
    pub value: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RelatedReport {
    pub tag: String,
    pub measure: Measure,
    /// Live items in scope, and those with the tag.
    pub scope_items: u64,
    pub tag_items: u64,
    /// How many of the tag's items were read, when not all were.
    pub sampled: Option<u64>,
    pub related: Vec<Related>,
}

pub fn related(pool: &Pool, plan: &RelatedPlan) -> Result<RelatedReport, MineError> {
    let conn = pool.connection();
    let _snapshot = super::Snapshot::begin(conn)?;
    let datasets = datasets(conn, plan.dataset.as_deref())?;
    let scope_items = scope_count(conn, &datasets, plan.years)?;
    if scope_items == 0 {
        return Err(MineError::Empty {
            scope: scope_text(plan),
        });
    }
    let tag = canonical(conn, &plan.tag)?;
    let ids: Vec<i64> = {
        let mut st = conn.prepare_cached("SELECT id FROM tags WHERE canonical = ?1")?;
        let rows = st.query_map([&tag], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    if ids.is_empty() {
        return Err(MineError::UnknownTag {
            hint: hint(conn, &tag)?,
            tag,
        });
    }
    let (from, to) = plan.years.unwrap_or((i64::MIN, i64::MAX));
    let year_sql = match plan.years {
        Some(_) => "AND i.year BETWEEN ?3 AND ?4",
        None => "AND ?3 <= ?4",
    };

    // A's live items in scope: all of them, or those whose multiplicatively hashed id
    // falls under a threshold, decided inside SQLite on the index entries before any
    // item row is read. Fibonacci hashing spreads any arithmetic progression of ids
    // evenly, so the periods of publish order (boorus, volumes, years) do not alias.
    let own_total = total_items(conn, &tag, &datasets)?;
    let rate = (own_total > 2 * plan.sample as u64).then(|| plan.sample as f64 / own_total as f64);
    let threshold: i64 = rate.map_or(1 << 32, |r| (r * 4_294_967_296.0).ceil() as i64);
    let mut read: Vec<i64> = Vec::new();
    {
        let sql = format!(
            "SELECT it.item FROM item_tags it JOIN items i ON i.id = it.item
             WHERE it.tag = ?1 AND ((it.item * 2654435769) & 4294967295) < ?5
               AND i.dataset = ?2 AND i.removed_in IS NULL AND i.duplicate_of IS NULL {year_sql}"
        );
        let mut st = conn.prepare(&sql)?;
        for id in &ids {
            for d in &datasets {
                let rows = st.query_map(params![id, d, from, to, threshold], |r| r.get(0))?;
                for r in rows {
                    read.push(r?);
                }
            }
        }
    }
    read.sort_unstable();
    read.dedup();
    let tag_items = match (rate, plan.years) {
        (None, _) => read.len() as u64,
        // `tag_counts` is exact over all years.
        (Some(_), None) => own_total,
        (Some(r), Some(_)) => (read.len() as f64 / r).round() as u64,
    };
    if read.is_empty() {
        return Ok(RelatedReport {
            tag,
            measure: plan.measure,
            scope_items,
            tag_items: 0,
            sampled: None,
            related: Vec::new(),
        });
    }
    let scale = tag_items as f64 / read.len() as f64;

    // Each read item's tag ids by primary key; each id's canonical name and category
    // looked up once, when first met.
    let mut names = Names::default();
    let mut counts: HashMap<(u32, u32), u64> = HashMap::new();
    {
        let mut st = conn.prepare_cached("SELECT tag FROM item_tags WHERE item = ?1")?;
        let mut seen: Vec<(u32, u32)> = Vec::new();
        for item in &read {
            seen.clear();
            for t in st.query_map([item], |r| r.get::<_, i64>(0))? {
                seen.push(names.of(conn, t?)?);
            }
            seen.sort_unstable();
            seen.dedup();
            for k in &seen {
                *counts.entry(*k).or_default() += 1;
            }
        }
    }
    let own = names.canonical_index(&tag);

    // Candidates by co-occurrence, most first. For count, Jaccard and cosine a
    // candidate's value is at most a function of its co-occurrence alone (|B| ≥
    // |A∩B|), so once that bound falls below the list's last value, no later
    // candidate can enter it and their counts are never looked up.
    let mut candidates: Vec<((u32, u32), u64)> = counts
        .into_iter()
        .filter(|((c, cat), n)| {
            Some(*c) != own
                && *n >= plan.min_count
                && plan
                    .category
                    .as_ref()
                    .is_none_or(|want| *want == names.categories[*cat as usize])
        })
        .map(|(k, n)| (k, ((n as f64 * scale).round() as u64).min(tag_items)))
        .collect();
    candidates.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let a = tag_items as f64;
    let bound = |both: f64| match plan.measure {
        Measure::Count => both,
        Measure::Jaccard => both / a,
        Measure::Cosine => (both / a).sqrt(),
        Measure::Overlap | Measure::Npmi => f64::INFINITY,
    };
    let year_filter = match plan.years {
        Some(_) => "AND year BETWEEN ?4 AND ?5",
        None => "AND ?4 <= ?5",
    };
    let mut st = conn.prepare(&format!(
        "SELECT coalesce(sum(items), 0) FROM tag_counts
         WHERE dataset = ?1 AND canonical = ?2 AND category = ?3 {year_filter}"
    ))?;
    let mut out: Vec<Related> = Vec::new();
    // The best `limit` values so far, ascending.
    let mut best: Vec<f64> = Vec::new();
    for ((c, cat), both) in candidates {
        if plan.limit == 0 || (best.len() >= plan.limit && bound(both as f64) < best[0]) {
            break;
        }
        let category = &names.categories[cat as usize];
        let name = &names.canonical[c as usize];
        let mut b = 0u64;
        for d in &datasets {
            let v: i64 = st.query_row(params![d, name, category, from, to], |r| r.get(0))?;
            b += v.max(0) as u64;
        }
        // The counts table and the sample can disagree by rounding; never below both.
        let b = b.max(both);
        let value = plan
            .measure
            .of(both as f64, a, b as f64, scope_items as f64);
        let at = best.partition_point(|v| *v < value);
        best.insert(at, value);
        if best.len() > plan.limit {
            best.remove(0);
        }
        out.push(Related {
            tag: name.clone(),
            category: category.clone(),
            both,
            items: b,
            value,
        });
    }
    out.sort_by(|x, y| {
        y.value
            .total_cmp(&x.value)
            .then(y.both.cmp(&x.both))
            .then_with(|| x.tag.cmp(&y.tag))
            .then_with(|| x.category.cmp(&y.category))
    });
    out.truncate(plan.limit);
    Ok(RelatedReport {
        tag,
        measure: plan.measure,
        scope_items,
        tag_items,
        sampled: rate.map(|_| read.len() as u64),
        related: out,
    })
}

/// Live items with the canonical tag in the datasets, over all years (`tag_counts`).
fn total_items(conn: &rusqlite::Connection, tag: &str, datasets: &[i64]) -> Result<u64, MineError> {
    let mut st = conn.prepare_cached(
        "SELECT coalesce(sum(items), 0) FROM tag_counts WHERE dataset = ?1 AND canonical = ?2",
    )?;
    let mut n = 0u64;
    for d in datasets {
        n += st
            .query_row(params![d, tag], |r| r.get::<_, i64>(0))?
            .max(0) as u64;
    }
    Ok(n)
}

/// Pool tag ids to interned (canonical name, category), looked up as they are met.
#[derive(Default)]
struct Names {
    of_id: HashMap<i64, (u32, u32)>,
    canonical: Vec<String>,
    canonical_ids: HashMap<String, u32>,
    categories: Vec<String>,
}

impl Names {
    fn of(&mut self, conn: &rusqlite::Connection, id: i64) -> Result<(u32, u32), MineError> {
        if let Some(&k) = self.of_id.get(&id) {
            return Ok(k);
        }
        let mut st = conn
            .prepare_cached("SELECT coalesce(canonical, name), category FROM tags WHERE id = ?1")?;
        let (name, category): (String, String) =
            st.query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let c = match self.canonical_ids.get(&name) {
            Some(&c) => c,
            None => {
                self.canonical.push(name.clone());
                let c = (self.canonical.len() - 1) as u32;
                self.canonical_ids.insert(name, c);
                c
            }
        };
        let k = match self.categories.iter().position(|x| *x == category) {
            Some(k) => k as u32,
            None => {
                self.categories.push(category);
                (self.categories.len() - 1) as u32
            }
        };
        self.of_id.insert(id, (c, k));
        Ok((c, k))
    }

    fn canonical_index(&self, name: &str) -> Option<u32> {
        self.canonical_ids.get(name).copied()
    }
}

/// An item id mixed by splitmix64's finaliser: the order samples take items in.
pub(super) fn mix(id: i64) -> u64 {
    let mut z = (id as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(super) fn sample(mut items: Vec<i64>, n: usize) -> Vec<i64> {
    if items.len() <= n {
        return items;
    }
    items.select_nth_unstable_by_key(n - 1, |id| mix(*id));
    items.truncate(n);
    items.sort_unstable();
    items
}

fn scope_text(plan: &RelatedPlan) -> String {
    let mut s = String::new();
    if let Some(d) = &plan.dataset {
        s += &format!(" in dataset `{d}`");
    }
    if let Some((a, b)) = plan.years {
        s += &format!(" posted in {a}..{b}");
    }
    s
}

/// Live items in scope.
fn scope_count(
    conn: &rusqlite::Connection,
    datasets: &[i64],
    years: Option<(i64, i64)>,
) -> Result<u64, MineError> {
    let Some((from, to)) = years else {
        // Every merge records the live items it leaves.
        let mut n = 0;
        for d in datasets {
            n += super::live_items(conn, *d)?;
        }
        return Ok(n);
    };
    let mut st = conn.prepare(
        "SELECT count(*) FROM items WHERE dataset = ?1
         AND removed_in IS NULL AND duplicate_of IS NULL AND year BETWEEN ?2 AND ?3",
    )?;
    let mut n = 0i64;
    for d in datasets {
        n += st.query_row(params![d, from, to], |r| r.get::<_, i64>(0))?;
    }
    Ok(n.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{record, Fixture};

    /// 40 items. `witch` is on 10 of them, always with `broom`, which is nowhere else;
    /// `hat` is on 5 of witch's and 5 others (more often with witch than without);
    /// `solo` is on every item.
    fn planted() -> Fixture {
        let f = Fixture::new();
        let mut items = Vec::new();
        for i in 0..40u64 {
            let mut general: Vec<&str> = vec!["solo"];
            if i < 10 {
                general.extend(["witch", "broom"]);
            }
            if i < 5 || (10..15).contains(&i) {
                general.push("hat");
            }
            let character: &[&str] = if i % 2 == 0 { &["Alice"] } else { &["Bob"] };
            items.push((
                format!("item-{i:02}"),
                record(
                    "danbooru",
                    i,
                    &[("general", &general), ("character", character)],
                ),
            ));
        }
        let items: Vec<(&str, serde_json::Value)> =
            items.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        f.publish("1", None, &items);
        f.merge("1");
        f
    }

    fn plan(tag: &str, measure: Measure) -> RelatedPlan {
        RelatedPlan {
            tag: tag.into(),
            category: None,
            dataset: None,
            years: None,
            measure,
            limit: 10,
            min_count: 1,
            sample: DEFAULT_SAMPLE,
        }
    }

    fn ranked(r: &RelatedReport) -> Vec<(&str, u64)> {
        r.related.iter().map(|x| (x.tag.as_str(), x.both)).collect()
    }

    #[test]
    fn planted_co_occurrences_rank_as_built() {
        let f = planted();
        let pool = f.open_pool();
        // By count, the tag on everything comes first; by association, the one that
        // only ever comes with `witch`.
        let r = related(&pool, &plan("witch", Measure::Count)).unwrap();
        assert_eq!((r.tag_items, r.scope_items, r.sampled), (10, 40, None));
        assert_eq!(ranked(&r)[..2], [("broom", 10), ("solo", 10)]);
        assert_eq!(r.related.iter().find(|x| x.tag == "hat").unwrap().both, 5);
        for m in [Measure::Jaccard, Measure::Cosine, Measure::Npmi] {
            let r = related(&pool, &plan("witch", m)).unwrap();
            assert_eq!(r.related[0].tag, "broom", "{m:?}");
            assert!(
                (r.related[0].value - 1.0).abs() < 1e-9,
                "{m:?}: {:?}",
                r.related[0]
            );
            let solo = r.related.iter().position(|x| x.tag == "solo").unwrap();
            let hat = r.related.iter().position(|x| x.tag == "hat").unwrap();
            if m == Measure::Npmi {
                // A tag on every item tells nothing: independent, 0.
                assert!(r.related[solo].value.abs() < 1e-9, "{:?}", r.related[solo]);
                assert!(hat < solo);
            }
        }
        // Jaccard of witch and hat: 5 / (10 + 10 - 5).
        let r = related(&pool, &plan("witch", Measure::Jaccard)).unwrap();
        let hat = r.related.iter().find(|x| x.tag == "hat").unwrap();
        assert_eq!((hat.both, hat.items), (5, 10));
        assert!((hat.value - 1.0 / 3.0).abs() < 1e-9, "{hat:?}");
        // Overlap: broom lies inside witch, and so does witch inside solo.
        let r = related(&pool, &plan("broom", Measure::Overlap)).unwrap();
        assert_eq!(r.related[0].value, 1.0);

        // A short list is the head of the long one: the bound that stops the lookups
        // never drops a tag that belongs in it.
        for m in [
            Measure::Count,
            Measure::Jaccard,
            Measure::Cosine,
            Measure::Overlap,
            Measure::Npmi,
        ] {
            for tag in ["witch", "hat", "solo"] {
                let long = related(&pool, &plan(tag, m)).unwrap();
                let mut p = plan(tag, m);
                p.limit = 2;
                let short = related(&pool, &p).unwrap();
                assert_eq!(short.related[..], long.related[..2], "{tag} {m:?}");
            }
        }

        // Per category, and with a written form the pool normalises.
        let mut p = plan(" Witch ", Measure::Count);
        p.category = Some("character".into());
        let r = related(&pool, &p).unwrap();
        assert_eq!(ranked(&r), [("alice", 5), ("bob", 5)]);
    }

    #[test]
    fn a_sample_scales_counts_back_up() {
        // 400 items: `witch` on every fourth, always with `broom`; `solo` on all.
        let f = Fixture::new();
        let items: Vec<(String, serde_json::Value)> = (0..400u64)
            .map(|i| {
                let general: &[&str] = if i % 4 == 0 {
                    &["solo", "witch", "broom"]
                } else {
                    &["solo"]
                };
                (
                    format!("item-{i:03}"),
                    record("danbooru", i, &[("general", general)]),
                )
            })
            .collect();
        let items: Vec<(&str, serde_json::Value)> =
            items.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        f.publish("1", None, &items);
        f.merge("1");
        let pool = f.open_pool();
        let mut p = plan("solo", Measure::Count);
        p.sample = 100;
        let r = related(&pool, &p).unwrap();
        let read = r.sampled.unwrap();
        assert!((70..=130).contains(&read), "{r:?}");
        // |A| is exact (the count table), the co-occurrences scaled from the sample.
        assert_eq!(r.tag_items, 400);
        let est = |t: &str| r.related.iter().find(|x| x.tag == t).unwrap().clone();
        let (witch, broom) = (est("witch"), est("broom"));
        assert_eq!(witch.both, broom.both);
        assert!((60..=140).contains(&witch.both), "{witch:?}");
        assert_eq!(witch.items, witch.both.max(100));
        // A sample is the same every time.
        assert_eq!(related(&pool, &p).unwrap().related, r.related);
        // A year range without items is an empty scope, sampled or not.
        p.years = Some((1900, 2100));
        let err = related(&pool, &p).unwrap_err();
        assert!(
            err.to_string()
                .contains("no live items posted in 1900..2100"),
            "{err}"
        );
    }

    #[test]
    fn a_sample_is_spread_over_the_ids() {
        // Every third id of 30,000: a stride would take one residue class only.
        let picked = sample((0..30_000).collect(), 3000);
        assert_eq!(picked.len(), 3000);
        for r in 0..3 {
            let n = picked.iter().filter(|&&id| id % 3 == r).count();
            assert!((900..1100).contains(&n), "residue {r}: {n}");
        }
        assert_eq!(sample((0..10).collect(), 20), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn an_unknown_tag_an_unknown_dataset_and_an_empty_scope_are_clear_errors() {
        let f = planted();
        let pool = f.open_pool();
        let err = related(&pool, &plan("witc", Measure::Count)).unwrap_err();
        assert!(
            err.to_string() == "the pool has no tag `witc` (did you mean witch?)",
            "{err}"
        );
        let mut p = plan("witch", Measure::Count);
        p.dataset = Some("nope".into());
        let err = related(&pool, &p).unwrap_err();
        assert!(err.to_string().contains("no dataset `nope`"), "{err}");
        let mut p = plan("witch", Measure::Count);
        p.years = Some((1990, 1991));
        let err = related(&pool, &p).unwrap_err();
        assert!(
            err.to_string()
                .contains("no live items posted in 1990..1991"),
            "{err}"
        );
    }
}
