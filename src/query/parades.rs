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

pub const PARADES: &[Parade] = &[
    Parade {
        name: "characters-by-year",
        description: "Most popular characters in each year of posting: items, total score and favs",
        params: "--year, --portraits (one face, close-up or portrait), --limit per year",
        default_limit: 10,
        sql: "WITH c AS (
                SELECT l.year AS year, t.canonical AS character, count(*) AS items,
                       sum(l.score) AS score, sum(l.favs) AS favs
                FROM tags t JOIN item_tags it ON it.tag = t.id JOIN live l ON l.id = it.item
                WHERE t.category = 'character' AND l.year IS NOT NULL
                  AND (:year IS NULL OR l.year = :year) AND $DATASET
                  AND (:portraits = 0 OR (l.faces = 1 AND l.composition IN ('close-up', 'portrait')))
                GROUP BY l.year, t.canonical)
              SELECT year, rank, character, items, score, favs FROM (
                SELECT *, row_number() OVER (PARTITION BY year ORDER BY items DESC, score DESC, character) AS rank
                FROM c)
              WHERE rank <= :limit ORDER BY year DESC, rank",
    },
    Parade {
        name: "series-by-artist",
        description: "For items with all the given tags: each artist's most numerous series (copyright)",
        params: "--tags a,b (optional), --limit",
        default_limit: 20,
        sql: "WITH chosen AS (
                SELECT l.id FROM live l
                WHERE $DATASET AND (json_array_length(:tags) = 0 OR l.id IN (
                  SELECT it.item FROM tags t JOIN item_tags it ON it.tag = t.id
                  WHERE t.canonical IN (SELECT value FROM json_each(:tags))
                  GROUP BY it.item HAVING count(DISTINCT t.canonical) = json_array_length(:tags)))),
              pairs AS (
                SELECT a.canonical AS artist, s.canonical AS series, count(*) AS items
                FROM chosen c
                JOIN item_tags ia ON ia.item = c.id JOIN tags a ON a.id = ia.tag AND a.category = 'artist'
                JOIN item_tags isr ON isr.item = c.id JOIN tags s ON s.id = isr.tag AND s.category = 'copyright'
                GROUP BY a.canonical, s.canonical),
              ranked AS (
                SELECT *, row_number() OVER (PARTITION BY artist ORDER BY items DESC, series) AS r,
                       sum(items) OVER (PARTITION BY artist) AS artist_items
                FROM pairs)
              SELECT artist, series, items, artist_items FROM ranked WHERE r = 1
              ORDER BY items DESC, artist LIMIT :limit",
    },
    Parade {
        name: "top-items",
        description: "Top items by score (or favs) per booru and year, normalised by the booru-year mean so boorus compare",
        params: "--metric score|favs, --booru, --year, --limit per booru and year",
        default_limit: 5,
        sql: "WITH m AS (
                SELECT l.key, l.booru, l.year, CASE :metric WHEN 'favs' THEN l.favs ELSE l.score END AS value
                FROM live l
                WHERE l.booru IS NOT NULL AND l.year IS NOT NULL AND $DATASET
                  AND (:booru IS NULL OR l.booru = :booru) AND (:year IS NULL OR l.year = :year)),
              n AS (
                SELECT *, avg(value) OVER w AS mean, percent_rank() OVER (w ORDER BY value) AS pct,
                       row_number() OVER (w ORDER BY value DESC, key) AS rank
                FROM m WHERE value IS NOT NULL WINDOW w AS (PARTITION BY booru, year))
              SELECT year, booru, rank, key, value, round(value / nullif(mean, 0), 3) AS normalized,
                     round(pct, 4) AS percentile
              FROM n WHERE rank <= :limit ORDER BY year DESC, booru, rank",
    },
    Parade {
        name: "tag-stats",
        description: "Tags by category: distinct tags, uses on live items, items tagged",
        params: "",
        default_limit: 100,
        sql: "SELECT t.category, count(DISTINCT t.canonical) AS tags, count(*) AS uses, count(DISTINCT it.item) AS items
              FROM item_tags it JOIN tags t ON t.id = it.tag JOIN live l ON l.id = it.item
              WHERE $DATASET
              GROUP BY t.category ORDER BY uses DESC LIMIT :limit",
    },
    Parade {
        name: "character-copyrights",
        description: "Copyrights that co-occur with each character, with their share of the character's items",
        params: "--limit (rows)",
        default_limit: 50,
        sql: "WITH pairs AS (
                SELECT c.canonical AS character, s.canonical AS copyright, count(*) AS items
                FROM tags c JOIN item_tags ic ON ic.tag = c.id JOIN live l ON l.id = ic.item
                JOIN item_tags isr ON isr.item = l.id JOIN tags s ON s.id = isr.tag AND s.category = 'copyright'
                WHERE c.category = 'character' AND $DATASET
                GROUP BY c.canonical, s.canonical),
              totals AS (SELECT character, sum(items) AS total FROM pairs GROUP BY character)
              SELECT p.character, p.copyright, p.items, round(1.0 * p.items / t.total, 3) AS share
              FROM pairs p JOIN totals t USING (character)
              ORDER BY t.total DESC, p.character, p.items DESC, p.copyright LIMIT :limit",
    },
    Parade {
        name: "franchises",
        description: "Items per franchise: copyrights grouped by the imported tag list's franchise (else by themselves)",
        params: "--limit",
        default_limit: 30,
        sql: "SELECT coalesce(ti.franchise, t.canonical) AS franchise, count(DISTINCT t.canonical) AS copyrights,
                     count(DISTINCT l.id) AS items
              FROM tags t JOIN item_tags it ON it.tag = t.id JOIN live l ON l.id = it.item
              LEFT JOIN tag_info ti ON ti.name = t.canonical
              WHERE t.category = 'copyright' AND $DATASET
              GROUP BY 1 ORDER BY items DESC, franchise LIMIT :limit",
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

/// The SQL of a named query, with the dataset filter in place.
pub fn sql_of(parade: &Parade) -> String {
    parade.sql.replace("$DATASET", DATASET)
}

pub fn run(pool: &Pool, name: &str, params: &Params) -> Result<Table, QueryError> {
    let parade = find(name).ok_or_else(|| QueryError::Unknown(name.to_string()))?;
    let text = |v: &Option<String>| v.clone().map_or(SqlValue::Null, SqlValue::Text);
    let wanted: Vec<String> = params
        .tags
        .iter()
        .map(|t| crate::tags::normalize(t))
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
    let mut table = run_sql(pool, &sql_of(parade), &named)?;
    if name == "top-items" {
        if let Some(col) = table.columns.iter_mut().find(|c| *c == "value") {
            *col = params.metric.clone().unwrap_or_else(|| "score".into());
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
