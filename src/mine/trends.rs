//! Trends across releases: the tags whose share of a dataset's live items grew or fell
//! most between two merged releases (docs/mining.md). Every merge records the net change
//! of each tag's live items (`tag_deltas`) and the live items it left (`release_live`),
//! so a tag's count at a release is the sum of its deltas up to that merge: the cost
//! grows with the tags the releases changed, never with the items.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{one_dataset, MineError};
use crate::pool::Pool;

#[derive(Clone, Debug, Default)]
pub struct TrendsPlan {
    pub dataset: Option<String>,
    /// The earlier release (default: the later one's parent, or the release merged
    /// before it).
    pub from: Option<String>,
    /// The later release (default: the dataset's newest).
    pub to: Option<String>,
    pub category: Option<String>,
    /// Tags shown in each direction.
    pub limit: usize,
    /// Leave out tags on fewer items than this in both releases.
    pub min_items: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trend {
    pub tag: String,
    pub category: String,
    pub before: u64,
    pub after: u64,
    /// Shares of the live items, in percent.
    pub share_before: f64,
    pub share_after: f64,
    /// `share_after - share_before`, in percentage points.
    pub change: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrendsReport {
    pub dataset: String,
    pub from: String,
    pub to: String,
    pub items_before: u64,
    pub items_after: u64,
    /// Largest gains of share first, then largest losses first.
    pub grew: Vec<Trend>,
    pub fell: Vec<Trend>,
}

/// A merged release of the dataset, as trends read it.
struct Release {
    id: i64,
    version: String,
    live: Option<u64>,
}

fn release(
    conn: &rusqlite::Connection,
    ds: i64,
    dataset: &str,
    version: &str,
) -> Result<Release, MineError> {
    let found = conn
        .query_row(
            "SELECT r.id, r.version, l.items FROM releases r
             LEFT JOIN release_live l ON l.dataset = r.dataset AND l.release = r.id
             WHERE r.dataset = ?1 AND r.version = ?2",
            params![ds, version],
            |r| {
                Ok(Release {
                    id: r.get(0)?,
                    version: r.get(1)?,
                    live: r.get::<_, Option<i64>>(2)?.map(|n| n.max(0) as u64),
                })
            },
        )
        .optional()?;
    match found {
        Some(r) => Ok(r),
        None => {
            let mut st =
                conn.prepare("SELECT version FROM releases WHERE dataset = ?1 ORDER BY id")?;
            let all: Vec<String> = st
                .query_map([ds], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            Err(MineError::UnknownRelease {
                dataset: dataset.to_string(),
                version: version.to_string(),
                hint: format!(" (it has {})", all.join(", ")),
            })
        }
    }
}

/// Live items at two releases by (canonical name, category).
type ByName = HashMap<(String, String), (u64, u64)>;

/// Each tag's live items at two releases (the sums of its deltas up to each merge),
/// by canonical name and category: the same tag from two boorus is one trend. Tags are
/// named in id order, which reads the tags table in its own order.
fn counts_between(
    conn: &rusqlite::Connection,
    ds: i64,
    from: i64,
    to: i64,
    category: Option<&str>,
) -> Result<ByName, MineError> {
    let mut st = conn.prepare_cached(
        "SELECT t.canonical, t.category,
                sum(CASE WHEN d.release <= ?1 THEN d.items ELSE 0 END),
                sum(CASE WHEN d.release <= ?2 THEN d.items ELSE 0 END)
         FROM tag_deltas d JOIN tags t ON t.id = d.tag
         WHERE d.dataset = ?3 AND d.release <= max(?1, ?2)
         GROUP BY d.tag ORDER BY d.tag",
    )?;
    let mut rows = st.query(params![from, to, ds])?;
    let mut by_name = ByName::new();
    while let Some(r) = rows.next()? {
        let (name, cat): (String, String) = (r.get(0)?, r.get(1)?);
        if category.is_some_and(|c| c != cat) {
            continue;
        }
        let (before, after): (i64, i64) = (r.get(2)?, r.get(3)?);
        if before <= 0 && after <= 0 {
            continue;
        }
        let e = by_name.entry((name, cat)).or_default();
        e.0 += before.max(0) as u64;
        e.1 += after.max(0) as u64;
    }
    Ok(by_name)
}

pub fn trends(pool: &Pool, plan: &TrendsPlan) -> Result<TrendsReport, MineError> {
    let conn = pool.connection();
    let _snapshot = super::Snapshot::begin(conn)?;
    let (ds, dataset) = one_dataset(conn, plan.dataset.as_deref())?;
    let head: Option<String> = conn
        .query_row(
            "SELECT r.version FROM datasets d JOIN releases r ON r.id = d.head_release
             WHERE d.id = ?1",
            [ds],
            |r| r.get(0),
        )
        .optional()?;
    let to_version = match (&plan.to, head) {
        (Some(v), _) => v.clone(),
        (None, Some(h)) => h,
        (None, None) => {
            return Err(MineError::Unanswerable(format!(
                "dataset `{dataset}` has no merged release"
            )))
        }
    };
    let to = release(conn, ds, &dataset, &to_version)?;
    let from = match &plan.from {
        Some(v) => release(conn, ds, &dataset, v)?,
        None => {
            // The parent when the pool merged it, else the release merged before.
            let earlier: Option<String> = conn
                .query_row(
                    "SELECT coalesce(
                        (SELECT p.version FROM releases r JOIN releases p
                           ON p.dataset = r.dataset AND p.version = r.parent_version
                         WHERE r.id = ?1),
                        (SELECT version FROM releases WHERE dataset = ?2 AND id < ?1
                         ORDER BY id DESC LIMIT 1))",
                    params![to.id, ds],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            let Some(v) = earlier else {
                return Err(MineError::OneRelease {
                    dataset,
                    version: to.version,
                });
            };
            release(conn, ds, &dataset, &v)?
        }
    };
    if from.id == to.id {
        return Err(MineError::Unanswerable(format!(
            "--from and --to are both release {}: nothing to compare",
            to.version
        )));
    }
    for r in [&from, &to] {
        if r.live.is_none() {
            let first: Option<String> = conn
                .query_row(
                    "SELECT r.version FROM release_live l JOIN releases r ON r.id = l.release
                     WHERE l.dataset = ?1 ORDER BY l.release LIMIT 1",
                    [ds],
                    |r| r.get(0),
                )
                .optional()?;
            return Err(MineError::Unanswerable(format!(
                "release {} of `{dataset}` was merged before this pool kept per-release counts{}",
                r.version,
                first.map_or_else(String::new, |f| format!(
                    "; trends can compare releases from {f} on"
                ))
            )));
        }
    }
    let (items_before, items_after) = (from.live.unwrap_or(0), to.live.unwrap_or(0));
    let by_name = counts_between(conn, ds, from.id, to.id, plan.category.as_deref())?;
    let share = |n: u64, of: u64| match of {
        0 => 0.0,
        _ => 100.0 * n as f64 / of as f64,
    };
    let mut all: Vec<Trend> = by_name
        .into_iter()
        .filter(|(_, (b, a))| (*b).max(*a) >= plan.min_items)
        .map(|((tag, category), (b, a))| {
            let (sb, sa) = (share(b, items_before), share(a, items_after));
            Trend {
                tag,
                category,
                before: b,
                after: a,
                share_before: sb,
                share_after: sa,
                change: sa - sb,
            }
        })
        .collect();
    let order = |x: &Trend, y: &Trend| {
        y.change
            .total_cmp(&x.change)
            .then_with(|| x.tag.cmp(&y.tag))
            .then_with(|| x.category.cmp(&y.category))
    };
    all.sort_by(order);
    let grew: Vec<Trend> = all
        .iter()
        .filter(|t| t.change > 0.0)
        .take(plan.limit)
        .cloned()
        .collect();
    let fell: Vec<Trend> = all
        .iter()
        .rev()
        .filter(|t| t.change < 0.0)
        .take(plan.limit)
        .cloned()
        .collect();
    Ok(TrendsReport {
        dataset,
        from: from.version,
        to: to.version,
        items_before,
        items_after,
        grew,
        fell,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{record, Fixture};

    fn items(n: u64, with: impl Fn(u64) -> Vec<&'static str>) -> Vec<(String, serde_json::Value)> {
        (0..n)
            .map(|i| {
                let general = with(i);
                (
                    format!("item-{i:03}"),
                    record("danbooru", i, &[("general", &general)]),
                )
            })
            .collect()
    }

    fn plan() -> TrendsPlan {
        TrendsPlan {
            limit: 10,
            min_items: 1,
            ..TrendsPlan::default()
        }
    }

    #[test]
    fn shares_between_releases_are_as_planted() {
        let f = Fixture::new();
        // Release 1: 20 items, `cat` on 10 (50%), `dog` on 2 (10%), `solo` on all.
        f.release(
            "1",
            None,
            &items(20, |i| {
                let mut t = vec!["solo"];
                if i < 10 {
                    t.push("cat")
                }
                if i < 2 {
                    t.push("dog")
                }
                t
            }),
        );
        // Release 2: 40 items (20 new), `cat` still on 10 (25%), `dog` now on 22 (55%:
        // the 20 new ones), `solo` on all, `bird` arrives on 4 (10%).
        f.release(
            "2",
            Some("1"),
            &items(40, |i| {
                let mut t = vec!["solo"];
                if i < 10 {
                    t.push("cat")
                }
                if !(2..20).contains(&i) {
                    t.push("dog")
                }
                if i >= 36 {
                    t.push("bird")
                }
                t
            }),
        );
        // Release 3 drops the new items again: back to release 1's shares.
        f.release(
            "3",
            Some("2"),
            &items(20, |i| {
                let mut t = vec!["solo"];
                if i < 10 {
                    t.push("cat")
                }
                if i < 2 {
                    t.push("dog")
                }
                t
            }),
        );
        let pool = f.open_pool();
        let mut p = plan();
        p.to = Some("2".into());
        let r = trends(&pool, &p).unwrap();
        assert_eq!((r.from.as_str(), r.to.as_str()), ("1", "2"));
        assert_eq!((r.items_before, r.items_after), (20, 40));
        let grew: Vec<(&str, u64, u64)> = r
            .grew
            .iter()
            .map(|t| (t.tag.as_str(), t.before, t.after))
            .collect();
        assert_eq!(grew, [("dog", 2, 22), ("bird", 0, 4)]);
        assert!((r.grew[0].change - 45.0).abs() < 1e-9, "{:?}", r.grew[0]);
        let fell: Vec<(&str, f64)> = r.fell.iter().map(|t| (t.tag.as_str(), t.change)).collect();
        assert_eq!(fell, [("cat", -25.0)]);
        // `solo` stayed at 100%: neither list.
        assert!(!r.grew.iter().chain(&r.fell).any(|t| t.tag == "solo"));

        // By default the newest against its parent: 2 → 3 mirrors 1 → 2.
        let r = trends(&pool, &plan()).unwrap();
        assert_eq!((r.from.as_str(), r.to.as_str()), ("2", "3"));
        assert_eq!(r.fell[0].tag, "dog");
        assert_eq!((r.fell[0].before, r.fell[0].after), (22, 2));
        assert_eq!(r.grew[0].tag, "cat");
        // 1 → 3: the same items, no trend at all.
        let mut p = plan();
        p.from = Some("1".into());
        let r = trends(&pool, &p).unwrap();
        assert!(r.grew.is_empty() && r.fell.is_empty(), "{r:?}");
        // --min-items leaves out rare tags.
        let mut p = plan();
        p.to = Some("2".into());
        p.min_items = 5;
        let r = trends(&pool, &p).unwrap();
        assert!(r.grew.iter().all(|t| t.tag != "bird"));
    }

    #[test]
    fn releases_that_cannot_be_compared_are_clear_errors() {
        let f = Fixture::new();
        f.release("1", None, &items(4, |_| vec!["solo"]));
        let pool = f.open_pool();
        let err = trends(&pool, &plan()).unwrap_err();
        assert!(err.to_string().contains("only release of"), "{err}");
        let mut p = plan();
        p.from = Some("0.9".into());
        let err = trends(&pool, &p).unwrap_err();
        assert!(
            err.to_string()
                .contains("no merged release `0.9` (it has 1)"),
            "{err}"
        );
        let mut p = plan();
        p.from = Some("1".into());
        let err = trends(&pool, &p).unwrap_err();
        assert!(err.to_string().contains("nothing to compare"), "{err}");
        let mut p = plan();
        p.dataset = Some("other".into());
        assert!(matches!(
            trends(&pool, &p),
            Err(MineError::UnknownDataset(_))
        ));
        drop(pool);

        // A release merged before the pool kept per-release counts.
        f.release("2", Some("1"), &items(6, |_| vec!["solo"]));
        let pool = crate::pool::Pool::open(&f.pool).unwrap();
        pool.connection()
            .execute("DELETE FROM release_live WHERE release = 1", [])
            .unwrap();
        let err = trends(&pool, &plan()).unwrap_err();
        assert!(
            err.to_string().contains("release 1 of `ds` was merged before this pool kept per-release counts; trends can compare releases from 2 on"),
            "{err}"
        );
    }
}
