//! Suggested tags (docs/mining.md): for items missing every tag of a category (no
//! character, no copyright), the tags of that category their nearest items by tags
//! have, each with a confidence: the similarity-weighted share of the neighbours that
//! have it. `evaluate` hides the known tags of items that have some, suggests them
//! back, and reports precision and recall, so a user can see how far to trust it.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::similar::TagSearch;
use super::{one_dataset, MineError};
use crate::pool::Pool;

#[derive(Clone, Debug)]
pub struct SuggestPlan {
    pub dataset: Option<String>,
    pub category: String,
    /// One item (it may have tags of the category already; those are not suggested).
    pub key: Option<String>,
    /// Most items shown (the first ones missing the category, by id).
    pub limit: usize,
    /// Neighbours that vote.
    pub neighbours: usize,
    pub min_confidence: f64,
}

pub const DEFAULT_NEIGHBOURS: usize = 10;
/// Index entries read per item's search: a suggestion needs the near items only.
const SUGGEST_POSTINGS: usize = 20_000;
/// Most tags suggested per item.
const PER_ITEM: usize = 3;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Suggestion {
    pub tag: String,
    pub confidence: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ItemSuggestions {
    pub key: String,
    pub suggestions: Vec<Suggestion>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SuggestReport {
    pub dataset: String,
    pub category: String,
    pub items: Vec<ItemSuggestions>,
}

fn check(category: &str, neighbours: usize, min_confidence: f64) -> Result<(), MineError> {
    if category.trim().is_empty() {
        return Err(MineError::Unanswerable("--category is empty".into()));
    }
    if neighbours == 0 {
        return Err(MineError::Unanswerable(
            "--neighbours 0: at least one neighbour must vote".into(),
        ));
    }
    if !(0.0..=1.0).contains(&min_confidence) {
        return Err(MineError::Unanswerable(format!(
            "--min-confidence {min_confidence} is not between 0 and 1"
        )));
    }
    Ok(())
}

/// Votes of an item's neighbours (found from `query`) for tags of `category`, best
/// first: (tag, confidence).
fn votes(
    search: &mut TagSearch<'_>,
    query: &[u32],
    exclude: i64,
    category: &str,
    neighbours: usize,
) -> Result<Vec<(u32, f64)>, MineError> {
    if query.is_empty() {
        return Ok(Vec::new());
    }
    let (_, near) = search.nearest(query, exclude, None, neighbours)?;
    let mut votes: HashMap<u32, f64> = HashMap::new();
    let mut total = 0.0;
    for n in near {
        let weight = (1.0 - n.distance).max(0.0);
        total += weight;
        for t in search.tags(n.item)? {
            if search.keys[t as usize].1 == category {
                *votes.entry(t).or_default() += weight;
            }
        }
    }
    let mut out: Vec<(u32, f64)> = votes
        .into_iter()
        .map(|(t, v)| (t, if total > 0.0 { v / total } else { 0.0 }))
        .collect();
    out.sort_by(|a, b| {
        b.1.total_cmp(&a.1).then_with(|| {
            search.keys[a.0 as usize]
                .0
                .cmp(&search.keys[b.0 as usize].0)
        })
    });
    Ok(out)
}

/// The category's known names, so a typo is not an empty answer.
fn known_category(conn: &rusqlite::Connection, ds: i64, category: &str) -> Result<(), MineError> {
    let known: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM category_counts WHERE dataset = ?1 AND category = ?2)",
        params![ds, category],
        |r| r.get(0),
    )?;
    if known {
        return Ok(());
    }
    let mut st =
        conn.prepare("SELECT category FROM category_counts WHERE dataset = ?1 ORDER BY category")?;
    let all: Vec<String> = st
        .query_map([ds], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Err(MineError::Unanswerable(format!(
        "no live item has a tag of category `{category}` (the pool has {}): nothing to learn from",
        all.join(", ")
    )))
}

pub fn suggest(pool: &Pool, plan: &SuggestPlan) -> Result<SuggestReport, MineError> {
    check(&plan.category, plan.neighbours, plan.min_confidence)?;
    let conn = pool.connection();
    let _snapshot = super::Snapshot::begin(conn)?;
    let (ds, dataset) = one_dataset(conn, plan.dataset.as_deref())?;
    known_category(conn, ds, &plan.category)?;
    let targets: Vec<(i64, String)> = match &plan.key {
        Some(key) => {
            let id: Option<i64> = conn
                .query_row(
                    "SELECT id FROM items WHERE dataset = ?1 AND key = ?2",
                    params![ds, key],
                    |r| r.get(0),
                )
                .optional()?;
            vec![(
                id.ok_or_else(|| MineError::UnknownItem(key.clone()))?,
                key.clone(),
            )]
        }
        None => {
            // The first live items without a tag of the category (the scan stops there).
            let mut st = conn.prepare(
                "SELECT i.id, i.key FROM items i
                 WHERE i.dataset = ?1 AND i.removed_in IS NULL AND i.duplicate_of IS NULL
                   AND NOT EXISTS (SELECT 1 FROM item_tags it JOIN tags t ON t.id = it.tag
                                   WHERE it.item = i.id AND t.category = ?2)
                 ORDER BY i.id LIMIT ?3",
            )?;
            let rows = st.query_map(params![ds, plan.category, plan.limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect::<Result<_, _>>()?
        }
    };
    let mut search = TagSearch::new(conn, ds)?;
    search.postings = SUGGEST_POSTINGS;
    let mut items = Vec::new();
    for (id, key) in targets {
        let tags = search.tags(id)?;
        let (own, query): (Vec<u32>, Vec<u32>) = tags
            .into_iter()
            .partition(|t| search.keys[*t as usize].1 == plan.category);
        let suggestions = votes(&mut search, &query, id, &plan.category, plan.neighbours)?
            .into_iter()
            .filter(|(t, c)| *c >= plan.min_confidence && !own.contains(t))
            .take(PER_ITEM)
            .map(|(t, confidence)| Suggestion {
                tag: search.keys[t as usize].0.clone(),
                confidence,
            })
            .collect();
        items.push(ItemSuggestions { key, suggestions });
    }
    Ok(SuggestReport {
        dataset,
        category: plan.category.clone(),
        items,
    })
}

#[derive(Clone, Debug)]
pub struct EvaluatePlan {
    pub dataset: Option<String>,
    pub category: String,
    /// Items whose tags of the category are hidden and suggested back.
    pub holdout: usize,
    pub neighbours: usize,
    pub min_confidence: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Score {
    pub min_confidence: f64,
    /// Tags suggested, and those among them that were hidden.
    pub suggested: u64,
    pub correct: u64,
    /// correct / suggested (1 when nothing was suggested), correct / hidden.
    pub precision: f64,
    pub recall: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvaluateReport {
    pub dataset: String,
    pub category: String,
    pub items: u64,
    pub hidden: u64,
    /// At the confidence asked for.
    pub score: Score,
    /// At other confidences, to choose one.
    pub curve: Vec<Score>,
}

pub fn evaluate(pool: &Pool, plan: &EvaluatePlan) -> Result<EvaluateReport, MineError> {
    check(&plan.category, plan.neighbours, plan.min_confidence)?;
    if plan.holdout == 0 {
        return Err(MineError::Unanswerable(
            "--holdout 0: hide the tags of at least one item".into(),
        ));
    }
    let conn = pool.connection();
    let _snapshot = super::Snapshot::begin(conn)?;
    let (ds, dataset) = one_dataset(conn, plan.dataset.as_deref())?;
    known_category(conn, ds, &plan.category)?;
    // Items in a hashed order (as `related` samples), those with tags of the category.
    let mut order = super::live_ids(conn, &[ds])?;
    order.sort_unstable_by_key(|&id| super::related::mix(id));
    let mut search = TagSearch::new(conn, ds)?;
    search.postings = SUGGEST_POSTINGS;
    let mut thresholds: Vec<f64> = vec![0.3, 0.5, 0.7, 0.9];
    if !thresholds.contains(&plan.min_confidence) {
        thresholds.push(plan.min_confidence);
    }
    thresholds.sort_by(f64::total_cmp);
    let mut suggested = vec![0u64; thresholds.len()];
    let mut correct = vec![0u64; thresholds.len()];
    let (mut items, mut hidden) = (0u64, 0u64);
    for id in order {
        if items as usize == plan.holdout {
            break;
        }
        let tags = search.tags(id)?;
        let (own, query): (Vec<u32>, Vec<u32>) = tags
            .into_iter()
            .partition(|t| search.keys[*t as usize].1 == plan.category);
        if own.is_empty() || query.is_empty() {
            continue;
        }
        items += 1;
        hidden += own.len() as u64;
        let votes = votes(&mut search, &query, id, &plan.category, plan.neighbours)?;
        for (i, &t) in thresholds.iter().enumerate() {
            for (tag, _) in votes.iter().filter(|(_, c)| *c >= t).take(PER_ITEM) {
                suggested[i] += 1;
                correct[i] += u64::from(own.contains(tag));
            }
        }
    }
    if items == 0 {
        return Err(MineError::Unanswerable(format!(
            "no live item has both a tag of category `{}` and another tag: nothing to hide",
            plan.category
        )));
    }
    let curve: Vec<Score> = thresholds
        .iter()
        .enumerate()
        .map(|(i, &t)| Score {
            min_confidence: t,
            suggested: suggested[i],
            correct: correct[i],
            precision: match suggested[i] {
                0 => 1.0,
                s => correct[i] as f64 / s as f64,
            },
            recall: correct[i] as f64 / hidden as f64,
        })
        .collect();
    let score = curve
        .iter()
        .find(|s| s.min_confidence == plan.min_confidence)
        .cloned()
        .expect("the asked confidence is on the curve");
    Ok(EvaluateReport {
        dataset,
        category: plan.category.clone(),
        items,
        hidden,
        score,
        curve,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{record, Fixture};

    /// 3 series of 3 characters, 12 items each (108). Each character has a signature
    /// general tag on 11 of its 12 items; every item has its series and 2 of 6 shared
    /// general tags. The last item of each character has no character tag at all.
    fn planted() -> Fixture {
        let f = Fixture::new();
        let shared = [
            "solo",
            "smile",
            "looking_at_viewer",
            "outdoors",
            "hat",
            "night",
        ];
        let mut items: Vec<(String, serde_json::Value)> = Vec::new();
        for c in 0..9u64 {
            let series = format!("series_{}", c / 3);
            let character = format!("char_{c}");
            let signature = format!("sig_{c}");
            for i in 0..12u64 {
                let post = c * 12 + i;
                let mut general: Vec<&str> = vec![
                    shared[(post % 6) as usize],
                    shared[((post / 6) % 6) as usize],
                ];
                if i != 5 {
                    general.push(&signature);
                }
                let characters: Vec<&str> = if i == 11 { vec![] } else { vec![&character] };
                let copyright = [series.as_str()];
                items.push((
                    format!("item-{post:03}"),
                    record(
                        "danbooru",
                        post,
                        &[
                            ("character", &characters),
                            ("copyright", &copyright),
                            ("general", &general),
                        ],
                    ),
                ));
            }
        }
        let items: Vec<(&str, serde_json::Value)> =
            items.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        f.publish("1", None, &items);
        f.merge("1");
        f
    }

    #[test]
    fn items_missing_a_character_get_their_planted_one() {
        let f = planted();
        let pool = f.open_pool();
        let r = suggest(
            &pool,
            &SuggestPlan {
                dataset: None,
                category: "character".into(),
                key: None,
                limit: 50,
                neighbours: DEFAULT_NEIGHBOURS,
                min_confidence: 0.5,
            },
        )
        .unwrap();
        assert_eq!(r.items.len(), 9);
        for (c, item) in r.items.iter().enumerate() {
            assert_eq!(item.key, format!("item-{:03}", c * 12 + 11));
            assert_eq!(item.suggestions.len(), 1, "{item:?}");
            assert_eq!(item.suggestions[0].tag, format!("char_{c}"), "{item:?}");
            assert!(item.suggestions[0].confidence > 0.6, "{item:?}");
        }
    }

    #[test]
    fn holdout_evaluation_reaches_the_planted_precision() {
        let f = planted();
        let pool = f.open_pool();
        let plan = EvaluatePlan {
            dataset: None,
            category: "character".into(),
            holdout: 60,
            neighbours: DEFAULT_NEIGHBOURS,
            min_confidence: 0.5,
        };
        let r = evaluate(&pool, &plan).unwrap();
        assert_eq!((r.items, r.hidden), (60, 60));
        // The signature tag names the character on 11 of 12 items; without it
        // (1 in 12), the series leaves three characters to choose from, none above 0.5.
        assert!(r.score.precision >= 0.95, "{r:?}");
        assert!(r.score.recall >= 0.8, "{r:?}");
        // A lower bar suggests more, and more of them wrong.
        let low = r.curve.iter().find(|s| s.min_confidence == 0.3).unwrap();
        assert!(low.suggested >= r.score.suggested);

        for (bad, says) in [
            (
                EvaluatePlan {
                    holdout: 0,
                    ..plan.clone()
                },
                "--holdout 0",
            ),
            (
                EvaluatePlan {
                    neighbours: 0,
                    ..plan.clone()
                },
                "--neighbours 0",
            ),
            (
                EvaluatePlan {
                    category: "rating".into(),
                    ..plan.clone()
                },
                "no live item has a tag of category `rating`",
            ),
        ] {
            let err = evaluate(&pool, &bad).unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}
