//! Named queries ("hit-parades") over a pool's live items (`live`: not removed, not a
//! duplicate). `PARADES` is the one table of them: adding one is an entry (its SQL, or a
//! function for one that needs more than a statement) and its test. Each declares the
//! parameters it reads, so `--list`, the CLI's checks and a web form come from the same
//! entry. docs/pool.md lists them with their output columns.

use rusqlite::types::Value as SqlValue;

use super::{run_sql, Params, QueryError, Table};
use crate::pool::Pool;

pub struct Parade {
    pub name: &'static str,
    pub description: &'static str,
    /// The parameters it reads besides `--dataset` (which every one reads), each with
    /// what it means here when that needs saying.
    pub params: &'static [(Param, &'static str)],
    /// Rows kept when `--limit` is not given (per group where the query ranks groups).
    pub default_limit: u64,
    how: How,
}

/// How a hit-parade runs.
enum How {
    /// One SQL statement over the named parameters (`:dataset`, `:limit`, ...), with
    /// `$DATASET` and `$DATASET_OF` replaced by the dataset filters.
    Sql(&'static str),
    /// A function of its own, for a ranking one statement cannot express fast.
    Code(fn(&Pool, &Params, &Bound) -> Result<Table, QueryError>),
}

/// A parameter of a hit-parade: one field of `Params`, one CLI flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    Tags,
    Year,
    Booru,
    Metric,
    Composition,
    Portraits,
    Limit,
}

impl Param {
    pub const ALL: [Param; 7] = [
        Param::Tags,
        Param::Year,
        Param::Booru,
        Param::Metric,
        Param::Composition,
        Param::Portraits,
        Param::Limit,
    ];

    /// The flag of `seedpool query` that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            Param::Tags => "--tags",
            Param::Year => "--year",
            Param::Booru => "--booru",
            Param::Metric => "--metric",
            Param::Composition => "--composition",
            Param::Portraits => "--portraits",
            Param::Limit => "--limit",
        }
    }

    fn given(self, p: &Params) -> bool {
        match self {
            Param::Tags => !p.tags.is_empty(),
            Param::Year => p.year.is_some(),
            Param::Booru => p.booru.is_some(),
            Param::Metric => p.metric.is_some(),
            Param::Composition => p.composition.is_some(),
            Param::Portraits => p.portraits,
            Param::Limit => p.limit.is_some(),
        }
    }
}

impl Parade {
    /// Whether it reads `param`.
    pub fn reads(&self, param: Param) -> bool {
        self.params.iter().any(|(p, _)| *p == param)
    }

    /// Its parameters as `--list` shows them: `--year, --limit per year`.
    pub fn params_text(&self) -> String {
        let shown: Vec<String> = self
            .params
            .iter()
            .map(|(p, about)| {
                if about.is_empty() {
                    p.flag().to_string()
                } else {
                    format!("{} {about}", p.flag())
                }
            })
            .collect();
        shown.join(", ")
    }
}

/// The parameters bound for SQL, by name.
pub struct Bound {
    named: Vec<(&'static str, SqlValue)>,
    /// Tags in canonical form.
    tags: Vec<String>,
    limit: i64,
}

const DATASET: &str =
    "(:dataset IS NULL OR l.dataset IN (SELECT id FROM datasets WHERE name = :dataset))";
// The pair-count hit-parades join with CROSS JOIN, which fixes SQLite's join order: from
// the few top names to their ids to their pairs. Left free, the planner scanned every
// pair of the kind and took 850 ms instead of 520.

/// The same filter for the count tables, whose rows carry `dataset`.
const DATASET_OF: &str =
    "(:dataset IS NULL OR dataset IN (SELECT id FROM datasets WHERE name = :dataset))";

/// `series-by-artist` without `--tags`: from the count tables.
const SERIES: &str = "WITH top AS (
                SELECT canonical AS artist, sum(items) AS artist_items FROM tag_counts
                WHERE category = 'artist' AND $DATASET_OF
                GROUP BY canonical ORDER BY artist_items DESC, canonical LIMIT :limit),
              pairs AS (
                SELECT t.artist, nb.name AS series, sum(p.items) AS items, t.artist_items
                FROM top t CROSS JOIN canonical_names na ON na.name = t.artist
                  CROSS JOIN pair_counts p ON p.kind = 1 AND p.a = na.id
                    AND p.dataset IN (SELECT id FROM datasets WHERE :dataset IS NULL OR name = :dataset)
                  JOIN canonical_names nb ON nb.id = p.b
                GROUP BY t.artist, nb.name),
              ranked AS (
                SELECT *, row_number() OVER (PARTITION BY artist ORDER BY items DESC, series) AS r FROM pairs)
              SELECT artist, series, items, artist_items FROM ranked WHERE r = 1
              ORDER BY artist_items DESC, artist LIMIT :limit";

/// `series-by-artist` with `--tags`: items are chosen one by one, starting from the
/// rarest tag (`:rarest`) and checking the others (`:others`) per item.
const SERIES_WITH_TAGS: &str = "WITH chosen AS (
        SELECT DISTINCT it.item AS id FROM tags t JOIN item_tags it ON it.tag = t.id JOIN live l ON l.id = it.item
        WHERE t.canonical = :rarest AND $DATASET AND NOT EXISTS (
          SELECT 1 FROM json_each(:others) w WHERE NOT EXISTS (
            SELECT 1 FROM item_tags it2 JOIN tags t2 ON t2.id = it2.tag
            WHERE it2.item = it.item AND t2.canonical = w.value))),
      pairs AS (
        SELECT a.canonical AS artist, s.canonical AS series, count(DISTINCT c.id) AS items
        FROM chosen c
        JOIN item_tags ia ON ia.item = c.id JOIN tags a ON a.id = ia.tag AND a.category = 'artist'
        JOIN item_tags isr ON isr.item = c.id JOIN tags s ON s.id = isr.tag AND s.category = 'copyright'
        GROUP BY 1, 2),
      ranked AS (
        SELECT *, row_number() OVER (PARTITION BY artist ORDER BY items DESC, series) AS r,
               sum(items) OVER (PARTITION BY artist) AS artist_items
        FROM pairs)
      SELECT artist, series, items, artist_items FROM ranked WHERE r = 1
      ORDER BY items DESC, artist LIMIT :limit";

pub const PARADES: &[Parade] = &[
    Parade {
        name: "characters-by-year",
        description: "Most popular characters in each year of posting: items, total score and favs",
        params: &[
            (Param::Year, ""),
            (Param::Portraits, "(one face, close-up or portrait)"),
            (Param::Limit, "per year"),
        ],
        default_limit: 10,
        how: How::Sql(
            "WITH c AS (
                SELECT year, canonical AS character, sum(items) AS items, sum(score) AS score, sum(favs) AS favs
                FROM tag_counts
                WHERE category = 'character' AND year != 0 AND (:year IS NULL OR year = :year)
                  AND $DATASET_OF AND (:portraits = 0 OR portrait = 1)
                GROUP BY year, canonical)
              SELECT year, rank, character, items, score, favs FROM (
                SELECT *, row_number() OVER (PARTITION BY year ORDER BY items DESC, score DESC, character) AS rank
                FROM c)
              WHERE rank <= :limit ORDER BY year DESC, rank",
        ),
    },
    Parade {
        name: "series-by-artist",
        description: "The most prolific artists (of items with all the given tags) and each one's most numerous series",
        params: &[(Param::Tags, "a,b (optional)"), (Param::Limit, "")],
        default_limit: 20,
        how: How::Code(series_by_artist),
    },
    Parade {
        name: "related-tags",
        description: "The tags that come with one tag more often than chance (Jaccard), as `seedpool mine related` ranks them",
        params: &[
            (Param::Tags, "exactly one tag"),
            (Param::Year, ""),
            (Param::Limit, ""),
        ],
        default_limit: 25,
        how: How::Code(related_tags),
    },
    Parade {
        name: "tag-trends",
        description: "The tags whose share of live items grew or fell most from the newest release's parent to it, as `seedpool mine trends` finds them",
        params: &[(Param::Limit, "per direction")],
        default_limit: 10,
        how: How::Code(tag_trends),
    },
    Parade {
        name: "top-items",
        description: "Top items by score (or favs) per booru and year, normalised by the booru-year mean so boorus compare",
        params: &[
            (Param::Metric, "score|favs"),
            (Param::Booru, ""),
            (Param::Year, ""),
            (Param::Limit, "per booru and year"),
        ],
        default_limit: 5,
        how: How::Code(top_items),
    },
    Parade {
        name: "tag-stats",
        description: "Tags by category: distinct tags, uses on live items, items tagged",
        params: &[(Param::Limit, "")],
        default_limit: 100,
        how: How::Sql(
            "SELECT t.category, count(DISTINCT t.canonical) AS tags, sum(t.items) AS uses,
                     (SELECT sum(c.items) FROM category_counts c
                      WHERE c.category = t.category AND (:dataset IS NULL OR c.dataset IN
                        (SELECT id FROM datasets WHERE name = :dataset))) AS items
              FROM tag_counts t
              WHERE (:dataset IS NULL OR t.dataset IN (SELECT id FROM datasets WHERE name = :dataset))
              GROUP BY t.category ORDER BY uses DESC LIMIT :limit",
        ),
    },
    Parade {
        name: "character-copyrights",
        description: "Copyrights that co-occur with the most drawn characters, with the share of the character's items they tag",
        params: &[(Param::Limit, "(rows)")],
        default_limit: 50,
        how: How::Sql(
            "WITH top AS (
                SELECT canonical AS character, sum(items) AS total FROM tag_counts
                WHERE category = 'character' AND $DATASET_OF
                GROUP BY canonical ORDER BY total DESC, canonical LIMIT :limit)
              SELECT t.character, nb.name AS copyright, sum(p.items) AS items,
                     round(1.0 * sum(p.items) / t.total, 3) AS share
              FROM top t CROSS JOIN canonical_names na ON na.name = t.character
                CROSS JOIN pair_counts p ON p.kind = 2 AND p.a = na.id
                  AND p.dataset IN (SELECT id FROM datasets WHERE :dataset IS NULL OR name = :dataset)
                JOIN canonical_names nb ON nb.id = p.b
              GROUP BY t.character, nb.name
              ORDER BY t.total DESC, t.character, items DESC, copyright LIMIT :limit",
        ),
    },
    Parade {
        name: "franchises",
        description: "Franchises (copyrights grouped by the imported tag list, else each its own): copyrights and item-copyright tags",
        params: &[(Param::Limit, "")],
        default_limit: 30,
        how: How::Sql(
            "SELECT coalesce(ti.franchise, t.canonical) AS franchise, count(DISTINCT t.canonical) AS copyrights,
                     sum(t.items) AS items_tagged
              FROM tag_counts t LEFT JOIN tag_info ti ON ti.name = t.canonical
              WHERE t.category = 'copyright' AND $DATASET_OF
              GROUP BY 1 ORDER BY items_tagged DESC, franchise LIMIT :limit",
        ),
    },
    Parade {
        name: "top-quality",
        description: "Items ranked by their visual quality score",
        params: &[
            (Param::Composition, ""),
            (Param::Year, ""),
            (Param::Booru, ""),
            (Param::Limit, ""),
        ],
        default_limit: 20,
        how: How::Sql(
            "SELECT row_number() OVER (ORDER BY l.quality DESC, l.key) AS rank, l.key, l.booru, l.year,
                     round(l.quality, 4) AS quality, l.composition, l.faces, l.width, l.height
              FROM live l
              WHERE l.quality IS NOT NULL AND $DATASET
                AND (:composition IS NULL OR l.composition = :composition)
                AND (:year IS NULL OR l.year = :year) AND (:booru IS NULL OR l.booru = :booru)
              ORDER BY l.quality DESC, l.key LIMIT :limit",
        ),
    },
    Parade {
        name: "releases",
        description: "Releases merged into the pool, with what each added, changed and removed",
        params: &[(Param::Limit, "")],
        default_limit: 1000,
        how: How::Sql(
            "SELECT d.name AS dataset, r.version, r.parent_version AS parent, r.created, r.items,
                     r.added, r.changed, r.removed, r.merged_at
              FROM releases r JOIN datasets d ON d.id = r.dataset
              WHERE (:dataset IS NULL OR d.name = :dataset)
              ORDER BY d.name, r.id LIMIT :limit",
        ),
    },
];

pub fn find(name: &str) -> Option<&'static Parade> {
    PARADES.iter().find(|p| p.name == name)
}

/// SQL with the dataset filters in place.
fn with_filters(sql: &str) -> String {
    sql.replace("$DATASET_OF", DATASET_OF)
        .replace("$DATASET", DATASET)
}

/// Runs hit-parade `name`; a parameter it does not read is refused rather than ignored.
pub fn run(pool: &Pool, name: &str, params: &Params) -> Result<Table, QueryError> {
    let parade = find(name).ok_or_else(|| QueryError::Unknown(name.to_string()))?;
    if let Some(p) = Param::ALL
        .into_iter()
        .find(|&p| p.given(params) && !parade.reads(p))
    {
        return Err(QueryError::Unread {
            parade: parade.name,
            flag: p.flag(),
            reads: parade.params_text(),
        });
    }
    let bound = bind(parade, params);
    match parade.how {
        How::Sql(sql) => run_sql(pool, &with_filters(sql), &bound.named),
        How::Code(f) => f(pool, params, &bound),
    }
}

/// Every parameter as SQL values; a statement uses the ones it names.
fn bind(parade: &Parade, params: &Params) -> Bound {
    let text = |v: &Option<String>| v.clone().map_or(SqlValue::Null, SqlValue::Text);
    let tags: Vec<String> = params
        .tags
        .iter()
        .map(|t| crate::name::normalize_tag(t))
        .collect();
    let limit = i64::try_from(params.limit.unwrap_or(parade.default_limit)).unwrap_or(i64::MAX);
    let named = vec![
        (":dataset", text(&params.dataset)),
        (
            ":year",
            params.year.map_or(SqlValue::Null, SqlValue::Integer),
        ),
        (":booru", text(&params.booru)),
        (":composition", text(&params.composition)),
        (":portraits", SqlValue::Integer(i64::from(params.portraits))),
        (":limit", SqlValue::Integer(limit)),
    ];
    Bound { named, tags, limit }
}

/// `series-by-artist`: from the count tables, or with `--tags` from the items that
/// carry them all, the rarest tag picking the candidates and the others checked per
/// item.
fn series_by_artist(pool: &Pool, _: &Params, bound: &Bound) -> Result<Table, QueryError> {
    if bound.tags.is_empty() {
        return run_sql(pool, &with_filters(SERIES), &bound.named);
    }
    let mut counted = Vec::new();
    for tag in &bound.tags {
        let n = run_sql(
            pool,
            "SELECT coalesce(sum(items), 0) FROM tag_counts WHERE canonical = :tag",
            &[(":tag", SqlValue::Text(tag.clone()))],
        )?;
        counted.push((n.rows[0][0].as_i64().unwrap_or(0), tag.clone()));
    }
    counted.sort();
    let rarest = counted[0].1.clone();
    let others: Vec<&String> = counted[1..].iter().map(|(_, t)| t).collect();
    let mut named = bound.named.clone();
    named.push((":rarest", SqlValue::Text(rarest)));
    named.push((
        ":others",
        SqlValue::Text(serde_json::to_string(&others).expect("strings serialize")),
    ));
    run_sql(pool, &with_filters(SERIES_WITH_TAGS), &named)
}

/// Top items per (dataset, booru, year) group by score or favs, each with its value
/// relative to the group's mean and its percentile rank in the group. Every step reads
/// the partial indexes over live items, so the cost grows with the number of groups,
/// not of items.
/// `related-tags`: `mine::related` with its defaults, as a table.
fn related_tags(pool: &Pool, params: &Params, bound: &Bound) -> Result<Table, QueryError> {
    use crate::mine::related::{related, Measure, RelatedPlan, DEFAULT_SAMPLE};
    let [tag] = params.tags.as_slice() else {
        return Err(QueryError::Param {
            parade: "related-tags",
            problem: format!(
                "give exactly one tag with --tags, not {}",
                params.tags.len()
            ),
        });
    };
    let report = related(
        pool,
        &RelatedPlan {
            tag: tag.clone(),
            category: None,
            dataset: params.dataset.clone(),
            years: params.year.map(|y| (y, y)),
            measure: Measure::Jaccard,
            limit: usize::try_from(bound.limit).unwrap_or(usize::MAX),
            min_count: 2,
            sample: DEFAULT_SAMPLE,
        },
    )?;
    Ok(Table {
        columns: ["tag", "category", "both", "items", "jaccard"]
            .iter()
            .map(|c| c.to_string())
            .collect(),
        rows: report
            .related
            .into_iter()
            .map(|r| {
                vec![
                    r.tag.into(),
                    r.category.into(),
                    r.both.into(),
                    r.items.into(),
                    serde_json::Number::from_f64((r.value * 1e4).round() / 1e4)
                        .map_or(serde_json::Value::Null, serde_json::Value::Number),
                ]
            })
            .collect(),
    })
}

/// `tag-trends`: `mine::trends` with its defaults, gains then losses, as one table.
fn tag_trends(pool: &Pool, params: &Params, bound: &Bound) -> Result<Table, QueryError> {
    use crate::mine::trends::{trends, TrendsPlan};
    use crate::mine::MineError;
    let columns: Vec<String> = [
        "tag",
        "category",
        "release",
        "before",
        "after",
        "share_before",
        "share_after",
        "change",
    ]
    .iter()
    .map(|c| c.to_string())
    .collect();
    let report = match trends(
        pool,
        &TrendsPlan {
            dataset: params.dataset.clone(),
            limit: usize::try_from(bound.limit).unwrap_or(usize::MAX),
            min_items: 10,
            ..TrendsPlan::default()
        },
    ) {
        Ok(r) => r,
        // One release has no trend yet: an empty ranking, as for an empty pool.
        Err(MineError::OneRelease { .. }) => {
            return Ok(Table {
                columns,
                rows: Vec::new(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let round = |v: f64| {
        serde_json::Number::from_f64((v * 1e4).round() / 1e4)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)
    };
    Ok(Table {
        columns,
        rows: report
            .grew
            .iter()
            .chain(&report.fell)
            .map(|t| {
                vec![
                    t.tag.clone().into(),
                    t.category.clone().into(),
                    format!("{} → {}", report.from, report.to).into(),
                    t.before.into(),
                    t.after.into(),
                    round(t.share_before),
                    round(t.share_after),
                    round(t.change),
                ]
            })
            .collect(),
    })
}

fn top_items(pool: &Pool, params: &Params, bound: &Bound) -> Result<Table, QueryError> {
    let named = &bound.named[..];
    let metric = match params.metric.as_deref() {
        Some("favs") => "favs",
        _ => "score",
    };
    let live = "removed_in IS NULL AND duplicate_of IS NULL";
    let groups = run_sql(
        pool,
        &format!(
            "SELECT dataset, booru, year, count(*), avg({metric}) FROM items INDEXED BY live_by_{metric}
             WHERE {live} AND booru IS NOT NULL AND year IS NOT NULL AND {metric} IS NOT NULL
               AND (:dataset IS NULL OR dataset IN (SELECT id FROM datasets WHERE name = :dataset))
               AND (:booru IS NULL OR booru = :booru) AND (:year IS NULL OR year = :year)
             GROUP BY dataset, booru, year ORDER BY year DESC, booru, dataset"
        ),
        named,
    )?;
    let limit = bound.limit;
    let mut table = Table {
        columns: [
            "year",
            "booru",
            "rank",
            "key",
            metric,
            "normalized",
            "percentile",
        ]
        .iter()
        .map(|c| c.to_string())
        .collect(),
        rows: Vec::new(),
    };
    for g in &groups.rows {
        let (count, mean) = (g[3].as_i64().unwrap_or(0), g[4].as_f64().unwrap_or(0.0));
        let group: Vec<(&str, SqlValue)> = vec![
            (":ds", SqlValue::Integer(g[0].as_i64().unwrap_or(0))),
            (
                ":booru",
                SqlValue::Text(g[1].as_str().unwrap_or("").to_string()),
            ),
            (":year", SqlValue::Integer(g[2].as_i64().unwrap_or(0))),
            (":limit", SqlValue::Integer(limit)),
        ];
        let top = run_sql(
            pool,
            &format!(
                "SELECT key, {metric}, (SELECT count(*) FROM items b WHERE b.dataset = :ds AND b.booru = :booru
                        AND b.year = :year AND b.{live} AND b.{metric} >= t.{metric}) AS at_or_above
                 FROM items t WHERE dataset = :ds AND booru = :booru AND year = :year AND {live}
                   AND {metric} IS NOT NULL
                 ORDER BY {metric} DESC, key LIMIT :limit"
            ),
            &group,
        )?;
        for (rank, row) in top.rows.iter().enumerate() {
            let value = row[1].as_f64().unwrap_or(0.0);
            // Items below = the group's count minus those at or above: the latter are few
            // for top items, so this reads a short stretch of the index.
            let below = count as f64 - row[2].as_f64().unwrap_or(0.0);
            let round = |x: f64, d: i32| (x * 10f64.powi(d)).round() / 10f64.powi(d);
            let normalized = if mean == 0.0 {
                serde_json::Value::Null
            } else {
                serde_json::json!(round(value / mean, 3))
            };
            let percentile = if count > 1 {
                round(below / (count - 1) as f64, 4)
            } else {
                0.0
            };
            table.rows.push(vec![
                g[2].clone(),
                g[1].clone(),
                serde_json::json!(rank + 1),
                row[0].clone(),
                row[1].clone(),
                normalized,
                serde_json::json!(percentile),
            ]);
        }
    }
    Ok(table)
}

/// The list `seedpool query --list` prints.
pub fn list() -> Table {
    Table {
        columns: vec!["name".into(), "description".into(), "parameters".into()],
        rows: PARADES
            .iter()
            .map(|p| vec![p.name.into(), p.description.into(), p.params_text().into()])
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{record, Fixture};

    fn pool() -> Fixture {
        let f = Fixture::new();
        let item =
            |post: u64, year: i64, score: i64, character: &str, artist: &str, series: &str| {
                let mut r = record(
                    "danbooru",
                    post,
                    &[
                        ("character", &[character]),
                        ("artist", &[artist]),
                        ("copyright", &[series]),
                    ],
                );
                r["score"] = score.into();
                r["posted"] = format!("{year}-06-01T00:00:00Z").into();
                (format!("danbooru-{post}"), r)
            };
        let items = [
            item(1, 2020, 5, "miku", "ann", "vocaloid"),
            item(2, 2020, 9, "miku", "ann", "vocaloid"),
            item(3, 2020, 1, "rin", "bob", "vocaloid"),
            item(4, 2021, 4, "rin", "ann", "touhou"),
            item(5, 2021, 7, "reimu", "bob", "touhou"),
        ];
        let items: Vec<(&str, serde_json::Value)> =
            items.iter().map(|(k, r)| (k.as_str(), r.clone())).collect();
        f.publish("1", None, &items);
        f.merge("1");
        f
    }

    fn rows(t: &Table) -> Vec<String> {
        t.rows
            .iter()
            .map(|r| {
                let cells: Vec<String> = r.iter().map(|v| v.to_string()).collect();
                cells.join(" ")
            })
            .collect()
    }

    #[test]
    fn each_parade_runs_on_a_real_pool_with_its_own_parameters() {
        let f = pool();
        let pool = f.open_pool();
        let by_year = run(&pool, "characters-by-year", &Params::default()).unwrap();
        assert_eq!(
            rows(&by_year),
            [
                r#"2021 1 "reimu" 1 7 0"#,
                r#"2021 2 "rin" 1 4 0"#,
                r#"2020 1 "miku" 2 14 0"#,
                r#"2020 2 "rin" 1 1 0"#
            ]
        );
        let one_a_year = Params {
            limit: Some(1),
            year: Some(2020),
            ..Params::default()
        };
        let t = run(&pool, "characters-by-year", &one_a_year).unwrap();
        assert_eq!(rows(&t), [r#"2020 1 "miku" 2 14 0"#]);

        let series = run(&pool, "series-by-artist", &Params::default()).unwrap();
        assert_eq!(
            rows(&series),
            [r#""ann" "vocaloid" 2 3"#, r#""bob" "touhou" 1 2"#]
        );
        // With --tags the items are chosen first: only rin's.
        let rin = Params {
            tags: vec![" Rin ".into()],
            ..Params::default()
        };
        let t = run(&pool, "series-by-artist", &rin).unwrap();
        assert_eq!(
            rows(&t),
            [r#""ann" "touhou" 1 1"#, r#""bob" "vocaloid" 1 1"#]
        );

        let top = run(&pool, "top-items", &Params::default()).unwrap();
        assert_eq!(top.columns[4], "score");
        assert_eq!(
            rows(&top)[0],
            r#"2021 "danbooru" 1 "danbooru-5" 7 1.273 1.0"#
        );
        // related-tags needs its one tag; with it, the others on rin's items.
        let err = run(&pool, "related-tags", &Params::default()).unwrap_err();
        assert!(err.to_string().contains("exactly one tag"), "{err}");
        let t = run(&pool, "related-tags", &rin).unwrap();
        assert_eq!(t.columns, ["tag", "category", "both", "items", "jaccard"]);
        // tag-trends compares two releases: with one, nothing has a trend yet.
        let t = run(&pool, "tag-trends", &Params::default()).unwrap();
        assert!(t.rows.is_empty());
        drop(pool);
        let one = record("danbooru", 1, &[("character", &["miku"])]);
        f.publish("2", Some("1"), &[("danbooru-1", one)]);
        f.merge("2");
        let pool = f.open_pool();
        let t = run(&pool, "tag-trends", &Params::default()).unwrap();
        assert_eq!(
            t.columns[..5],
            ["tag", "category", "release", "before", "after"]
        );
        for p in PARADES {
            let params = match p.name {
                "related-tags" => &rin,
                _ => &Params::default(),
            };
            run(&pool, p.name, params).unwrap_or_else(|e| panic!("{}: {e}", p.name));
        }
    }

    #[test]
    fn a_parameter_a_parade_does_not_read_is_refused() {
        let f = pool();
        let pool = f.open_pool();
        let params = Params {
            metric: Some("favs".into()),
            ..Params::default()
        };
        let e = run(&pool, "characters-by-year", &params).unwrap_err();
        assert_eq!(
            e.to_string(),
            "characters-by-year does not read --metric; it reads --dataset, --year, \
             --portraits (one face, close-up or portrait), --limit per year"
        );
        assert!(run(&pool, "top-items", &params).is_ok());
        assert!(matches!(
            run(&pool, "no-such", &Params::default()),
            Err(QueryError::Unknown(_))
        ));
    }

    #[test]
    fn the_list_shows_every_parade_and_its_flags() {
        let list = list();
        assert_eq!(list.rows.len(), PARADES.len());
        let names: std::collections::BTreeSet<_> = PARADES.iter().map(|p| p.name).collect();
        assert_eq!(names.len(), PARADES.len(), "two parades share a name");
        let top = find("top-items").unwrap();
        assert_eq!(
            top.params_text(),
            "--metric score|favs, --booru, --year, --limit per booru and year"
        );
    }
}
