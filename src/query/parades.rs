//! Named queries ("hit-parades") over a pool's live items (`live`: not removed, not a
//! duplicate). Each is plain SQL with named parameters; docs/pool.md lists them with
//! their output columns.

use rusqlite::types::Value as SqlValue;

use super::{run_sql, Params, QueryError, Table};
use crate::pool::Pool;

pub struct Parade {
    pub name: &'static str,
    pub description: &'static str,
    /// The parameters it reads, for `--list`.
    pub params: &'static str,
    /// Rows kept when `--limit` is not given (per group where the query ranks groups).
    pub default_limit: u64,
    sql: &'static str,
}

const DATASET: &str =
    "(:dataset IS NULL OR l.dataset IN (SELECT id FROM datasets WHERE name = :dataset))";
// The pair-count hit-parades join with CROSS JOIN, which fixes SQLite's join order: from
// the few top names to their ids to their pairs. Left free, the planner scanned every
// pair of the kind and took 850 ms instead of 520.

/// The same filter for the count tables, whose rows carry `dataset`.
const DATASET_OF: &str =
    "(:dataset IS NULL OR dataset IN (SELECT id FROM datasets WHERE name = :dataset))";

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
        params: "--year, --portraits (one face, close-up or portrait), --limit per year",
        default_limit: 10,
        sql: "WITH c AS (
                SELECT year, canonical AS character, sum(items) AS items, sum(score) AS score, sum(favs) AS favs
                FROM tag_counts
                WHERE category = 'character' AND year != 0 AND (:year IS NULL OR year = :year)
                  AND $DATASET_OF AND (:portraits = 0 OR portrait = 1)
                GROUP BY year, canonical)
              SELECT year, rank, character, items, score, favs FROM (
                SELECT *, row_number() OVER (PARTITION BY year ORDER BY items DESC, score DESC, character) AS rank
                FROM c)
              WHERE rank <= :limit ORDER BY year DESC, rank",
    },
    Parade {
        name: "series-by-artist",
        description: "The most prolific artists (of items with all the given tags) and each one's most numerous series",
        params: "--tags a,b (optional), --limit",
        default_limit: 20,
        sql: "WITH top AS (
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
              ORDER BY artist_items DESC, artist LIMIT :limit",
    },
    Parade {
        name: "top-items",
        description: "Top items by score (or favs) per booru and year, normalised by the booru-year mean so boorus compare",
        params: "--metric score|favs, --booru, --year, --limit per booru and year",
        default_limit: 5,
        sql: "",
    },
    Parade {
        name: "tag-stats",
        description: "Tags by category: distinct tags, uses on live items, items tagged",
        params: "",
        default_limit: 100,
        sql: "SELECT t.category, count(DISTINCT t.canonical) AS tags, sum(t.items) AS uses,
                     (SELECT sum(c.items) FROM category_counts c
                      WHERE c.category = t.category AND (:dataset IS NULL OR c.dataset IN
                        (SELECT id FROM datasets WHERE name = :dataset))) AS items
              FROM tag_counts t
              WHERE (:dataset IS NULL OR t.dataset IN (SELECT id FROM datasets WHERE name = :dataset))
              GROUP BY t.category ORDER BY uses DESC LIMIT :limit",
    },
    Parade {
        name: "character-copyrights",
        description: "Copyrights that co-occur with the most drawn characters, with the share of the character's items they tag",
        params: "--limit (rows)",
        default_limit: 50,
        sql: "WITH top AS (
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
    },
    Parade {
        name: "franchises",
        description: "Franchises (copyrights grouped by the imported tag list, else each its own): copyrights and item-copyright tags",
        params: "--limit",
        default_limit: 30,
        sql: "SELECT coalesce(ti.franchise, t.canonical) AS franchise, count(DISTINCT t.canonical) AS copyrights,
                     sum(t.items) AS items_tagged
              FROM tag_counts t LEFT JOIN tag_info ti ON ti.name = t.canonical
              WHERE t.category = 'copyright' AND $DATASET_OF
              GROUP BY 1 ORDER BY items_tagged DESC, franchise LIMIT :limit",
    },
    Parade {
        name: "top-quality",
        description: "Items ranked by their visual quality score",
        params: "--composition, --year, --booru, --limit",
        default_limit: 20,
        sql: "SELECT row_number() OVER (ORDER BY l.quality DESC, l.key) AS rank, l.key, l.booru, l.year,
                     round(l.quality, 4) AS quality, l.composition, l.faces, l.width, l.height
              FROM live l
              WHERE l.quality IS NOT NULL AND $DATASET
                AND (:composition IS NULL OR l.composition = :composition)
                AND (:year IS NULL OR l.year = :year) AND (:booru IS NULL OR l.booru = :booru)
              ORDER BY l.quality DESC, l.key LIMIT :limit",
    },
    Parade {
        name: "releases",
        description: "Releases merged into the pool, with what each added, changed and removed",
        params: "",
        default_limit: 1000,
        sql: "SELECT d.name AS dataset, r.version, r.parent_version AS parent, r.created, r.items,
                     r.added, r.changed, r.removed, r.merged_at
              FROM releases r JOIN datasets d ON d.id = r.dataset
              WHERE (:dataset IS NULL OR d.name = :dataset)
              ORDER BY d.name, r.id LIMIT :limit",
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

pub fn run(pool: &Pool, name: &str, params: &Params) -> Result<Table, QueryError> {
    let parade = find(name).ok_or_else(|| QueryError::Unknown(name.to_string()))?;
    let text = |v: &Option<String>| v.clone().map_or(SqlValue::Null, SqlValue::Text);
    let wanted: Vec<String> = params
        .tags
        .iter()
        .map(|t| crate::name::normalize_tag(t))
        .collect();
    let tags = serde_json::to_string(&wanted).expect("strings serialize");
    let metric = params.metric.clone().unwrap_or_else(|| "score".into());
    let named: Vec<(&str, SqlValue)> = vec![
        (":dataset", text(&params.dataset)),
        (":tags", SqlValue::Text(tags)),
        (
            ":year",
            params.year.map_or(SqlValue::Null, SqlValue::Integer),
        ),
        (":booru", text(&params.booru)),
        (":metric", SqlValue::Text(metric)),
        (":composition", text(&params.composition)),
        (":portraits", SqlValue::Integer(i64::from(params.portraits))),
        (
            ":limit",
            SqlValue::Integer(
                i64::try_from(params.limit.unwrap_or(parade.default_limit)).unwrap_or(i64::MAX),
            ),
        ),
    ];
    match name {
        "top-items" => top_items(pool, params, &named),
        "series-by-artist" if !wanted.is_empty() => {
            // The rarest tag picks the candidates; the others are checked per item.
            let mut counted = Vec::new();
            for tag in &wanted {
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
            let mut named = named;
            named.push((":rarest", SqlValue::Text(rarest)));
            named.push((
                ":others",
                SqlValue::Text(serde_json::to_string(&others).expect("strings serialize")),
            ));
            run_sql(pool, &with_filters(SERIES_WITH_TAGS), &named)
        }
        _ => run_sql(pool, &with_filters(parade.sql), &named),
    }
}

/// Top items per (dataset, booru, year) group by score or favs, each with its value
/// relative to the group's mean and its percentile rank in the group. Every step reads
/// the partial indexes over live items, so the cost grows with the number of groups,
/// not of items.
fn top_items(
    pool: &Pool,
    params: &Params,
    named: &[(&str, SqlValue)],
) -> Result<Table, QueryError> {
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
    let limit = named
        .iter()
        .find(|(n, _)| *n == ":limit")
        .and_then(|(_, v)| {
            if let SqlValue::Integer(i) = v {
                Some(*i)
            } else {
                None
            }
        })
        .unwrap_or(5);
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
            .map(|p| vec![p.name.into(), p.description.into(), p.params.into()])
            .collect(),
    }
}
