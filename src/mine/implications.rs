//! Tag implications to review (docs/mining.md): pairs where items with tag A almost
//! always have tag B, as a booru's implication list would say `A → B` (a character
//! implies their series, a costume its character). Counted over every live item's
//! tags (or a hashed sample of them), one pass, pairs of tags that are frequent enough
//! to qualify only, each from the narrower tag to the broader one.

use serde::Serialize;

use super::{datasets, live_ids, MineError, Vocabulary};
use crate::pool::aggregates::IdMap;
use crate::pool::Pool;

#[derive(Clone, Debug)]
pub struct ImplicationsPlan {
    pub dataset: Option<String>,
    /// Least share of A's items that have B.
    pub min_confidence: f64,
    /// Least live items with A.
    pub min_support: u64,
    /// Only A of this category, and B of that one.
    pub category: Option<String>,
    pub implied_category: Option<String>,
    pub limit: usize,
    /// Read the tags of at most this many items (hashed sample above).
    pub sample: usize,
}

/// Shares from 200,000 items are within about 0.2 percentage points (two standard
/// errors) of the whole pool's; the pass costs about a second per 100,000 items.
pub const DEFAULT_SAMPLE: usize = 200_000;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Implication {
    pub tag: String,
    pub category: String,
    pub implies: String,
    pub implied_category: String,
    /// Live items with A, and with B (exact).
    pub items: u64,
    pub implied_items: u64,
    /// Items read with A, and with both.
    pub read: u64,
    pub both: u64,
    /// both / read.
    pub confidence: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ImplicationsReport {
    pub scope_items: u64,
    pub read_items: u64,
    pub implications: Vec<Implication>,
}

pub fn implications(pool: &Pool, plan: &ImplicationsPlan) -> Result<ImplicationsReport, MineError> {
    if !(0.0..=1.0).contains(&plan.min_confidence) {
        return Err(MineError::Unanswerable(format!(
            "--min-confidence {} is not between 0 and 1",
            plan.min_confidence
        )));
    }
    let conn = pool.connection();
    let _snapshot = super::Snapshot::begin(conn)?;
    let ds = datasets(conn, plan.dataset.as_deref())?;
    let ids = live_ids(conn, &ds)?;
    if ids.is_empty() {
        return Err(MineError::Empty {
            scope: String::new(),
        });
    }
    let scope_items = ids.len() as u64;
    let vocab = Vocabulary::read(conn, &ds)?;
    let read = super::related::sample(ids, plan.sample.max(1));
    // A tag can be A or B only with enough items (B: at least the confidence's share
    // of A's); the others are never counted in pairs.
    let least = ((plan.min_support as f64) * plan.min_confidence)
        .floor()
        .max(1.0) as u64;
    let wanted = |c: &Option<String>, v: u32| {
        c.as_ref()
            .is_none_or(|want| *want == vocab.keys[v as usize].1)
    };
    let frequent: Vec<bool> = (0..vocab.keys.len() as u32)
        .map(|v| {
            vocab.items[v as usize] >= least
                && (wanted(&plan.category, v) || wanted(&plan.implied_category, v))
        })
        .collect();
    // A tag on more than half the items is implied by almost anything, by its share
    // alone: it is never B.
    let common = |v: u32| vocab.items[v as usize] * 2 > scope_items;
    let can_imply =
        |v: u32| vocab.items[v as usize] >= plan.min_support && wanted(&plan.category, v);
    let can_be_implied = |v: u32| !common(v) && wanted(&plan.implied_category, v);
    // B is the broader tag; of two as broad, the later id (listed once).
    let broader = |a: u32, b: u32| {
        let (na, nb) = (vocab.items[a as usize], vocab.items[b as usize]);
        nb > na || (nb == na && b > a)
    };
    let mut single = vec![0u64; vocab.keys.len()];
    let mut pairs: IdMap<u64, u32> = IdMap::default();
    let mut kept: Vec<u32> = Vec::new();
    vocab.each_item(conn, &read, |_, tags| {
        kept.clear();
        kept.extend(tags.iter().copied().filter(|&t| frequent[t as usize]));
        for &a in &kept {
            single[a as usize] += 1;
            if !can_imply(a) {
                continue;
            }
            for &b in &kept {
                if b != a && broader(a, b) && can_be_implied(b) {
                    *pairs.entry(u64::from(a) << 32 | u64::from(b)).or_default() += 1;
                }
            }
        }
    })?;
    let mut out = Vec::new();
    for (&key, &both) in &pairs {
        let (a, b) = ((key >> 32) as u32, key as u32);
        let (na, nb) = (vocab.items[a as usize], vocab.items[b as usize]);
        let seen = single[a as usize];
        let confidence = f64::from(both) / seen.max(1) as f64;
        if confidence < plan.min_confidence {
            continue;
        }
        let (ka, kb) = (&vocab.keys[a as usize], &vocab.keys[b as usize]);
        out.push(Implication {
            tag: ka.0.clone(),
            category: ka.1.clone(),
            implies: kb.0.clone(),
            implied_category: kb.1.clone(),
            items: na,
            implied_items: nb,
            read: seen,
            both: u64::from(both),
            confidence,
        });
    }
    out.sort_by(|x, y| {
        y.confidence
            .total_cmp(&x.confidence)
            .then(y.items.cmp(&x.items))
            .then_with(|| x.tag.cmp(&y.tag))
            .then_with(|| x.implies.cmp(&y.implies))
    });
    out.truncate(plan.limit);
    Ok(ImplicationsReport {
        scope_items,
        read_items: read.len() as u64,
        implications: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{record, Fixture};

    pub(crate) fn plan() -> ImplicationsPlan {
        ImplicationsPlan {
            dataset: None,
            min_confidence: 0.9,
            min_support: 5,
            category: None,
            implied_category: None,
            limit: 50,
            sample: DEFAULT_SAMPLE,
        }
    }

    #[test]
    fn planted_implications_are_found_and_chance_ones_are_not() {
        let f = Fixture::new();
        // 60 items. Every `rin` (10) is in `vocaloid` (20 items, with `miku`); 9 of
        // the 10 `witch` items have `hat` (found at 0.9, not at 0.95); `cat` and `dog`
        // alternate, independent of anything.
        let items: Vec<(String, serde_json::Value)> = (0..60u64)
            .map(|i| {
                let character: &[&str] = match i {
                    0..=9 => &["rin"],
                    10..=19 => &["miku"],
                    _ => &[],
                };
                let copyright: &[&str] = if i < 20 { &["vocaloid"] } else { &[] };
                let mut general = vec![["cat", "dog"][i as usize % 2]];
                if (30..40).contains(&i) {
                    general.push("witch");
                    if i != 39 {
                        general.push("hat");
                    }
                }
                if (40..45).contains(&i) {
                    general.push("hat");
                }
                (
                    format!("item-{i:02}"),
                    record(
                        "danbooru",
                        i,
                        &[
                            ("character", character),
                            ("copyright", copyright),
                            ("general", &general),
                        ],
                    ),
                )
            })
            .collect();
        let items: Vec<(&str, serde_json::Value)> =
            items.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        f.publish("1", None, &items);
        f.merge("1");
        let pool = f.open_pool();
        let r = implications(&pool, &plan()).unwrap();
        let found: Vec<(&str, &str, f64)> = r
            .implications
            .iter()
            .map(|i| (i.tag.as_str(), i.implies.as_str(), i.confidence))
            .collect();
        assert_eq!(
            found,
            [
                ("miku", "vocaloid", 1.0),
                ("rin", "vocaloid", 1.0),
                ("witch", "hat", 0.9)
            ]
        );
        assert_eq!(r.scope_items, 60);
        let mut p = plan();
        p.min_confidence = 0.95;
        p.implied_category = Some("copyright".into());
        let r = implications(&pool, &p).unwrap();
        assert_eq!(r.implications.len(), 2);
        // Support: with at least 11 items, only tags with more than `rin` and `miku`.
        let mut p = plan();
        p.min_support = 11;
        assert!(implications(&pool, &p).unwrap().implications.is_empty());
        // A sample of half the items still finds the certain ones.
        let mut p = plan();
        p.sample = 30;
        p.min_support = 10;
        let r = implications(&pool, &p).unwrap();
        assert_eq!(r.read_items, 30);
        assert!(r
            .implications
            .iter()
            .any(|i| i.tag == "rin" && i.implies == "vocaloid" && i.confidence == 1.0));
        let mut p = plan();
        p.min_confidence = 1.5;
        assert!(implications(&pool, &p)
            .unwrap_err()
            .to_string()
            .contains("between 0 and 1"));
    }
}
