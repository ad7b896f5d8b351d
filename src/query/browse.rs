//! What a person looks at in a pool: the overview, a gallery page and its facets, one
//! item, a release against its parent, a hit-parade with the items behind its rows, and
//! the bytes of a member read from its shard.
//!
//! Each is one function from a read-only `Pool` to one serializable struct; `serve`
//! renders that struct as HTML and as JSON, and holds no SQL of its own. A member's bytes
//! are read at the offset the pool recorded, from the shard file named by the pool's own
//! (dataset, shard id), and checked against the member's blake3 before anyone sees them.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use serde_json::Value;

use super::filter::{sql_text, Filter, Presence};
use super::parades::{self, Param, PARADES};
use super::{Params, QueryError, Table};
use crate::pool::Pool;

/// Members larger than this are not read into memory to be served.
pub const MAX_MEMBER: u64 = 64 << 20;
/// Facet counts read the tags of at most this many matching items.
pub const FACET_SAMPLE: u64 = 50_000;
/// Tag categories the facets count, in the order shown.
pub const FACET_CATEGORIES: [&str; 4] = ["artist", "copyright", "character", "general"];

#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("the pool has no item `{}` in dataset `{}`", crate::name::shown(.key), crate::name::shown(.dataset))]
    NoItem { dataset: String, key: String },
    #[error("the pool has no release `{}` of dataset `{}`", crate::name::shown(.version), crate::name::shown(.dataset))]
    NoRelease { dataset: String, version: String },
    #[error("item `{key}` has no file `{}`", crate::name::shown(.ext))]
    NoMember { key: String, ext: String },
    #[error("item `{key}` is in shard `{shard}`, which this pool does not hold (a selective sync left it out)")]
    NotDownloaded { key: String, shard: String },
    #[error("file `{name}` is {length} bytes, more than the {MAX_MEMBER} bytes served")]
    TooLarge { name: String, length: u64 },
    #[error("member `{name}` of shard `{path}` does not match its blake3 in the pool: the shard is damaged; run `seedpool verify`")]
    Damaged { name: String, path: PathBuf },
    #[error("failed to read shard `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown statistic `{}`; one of {}", crate::name::shown(.0), STATS.iter().map(|s| s.name).collect::<Vec<_>>().join(", "))]
    UnknownStat(String),
    #[error("the pool lists an unsafe name `{}`", crate::name::shown(.0))]
    Unsafe(String),
    #[error("parameter `{}` is `{}`: {why}", crate::name::shown(.field), crate::name::shown(.value))]
    BadParam {
        field: String,
        value: String,
        why: &'static str,
    },
}

fn sql(e: rusqlite::Error) -> BrowseError {
    BrowseError::Query(QueryError::Sql(e.to_string()))
}

/// Live items, in SQL over `items l` (the `live` view without its record join).
const LIVE: &str = "l.removed_in IS NULL AND l.duplicate_of IS NULL";

/// One item as a gallery shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Tile {
    pub dataset: String,
    pub key: String,
    pub booru: Option<String>,
    pub rating: Option<String>,
    pub score: Option<i64>,
    pub favs: Option<i64>,
    pub year: Option<i64>,
    pub quality: Option<f64>,
    pub faces: Option<i64>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    /// Whether the pool holds the item's shard (else it is known from the index only).
    pub present: bool,
    /// The picture a gallery shows for it.
    pub thumb: Option<Thumb>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Thumb {
    pub ext: String,
    pub blake3: String,
}

/// A tile's columns over `items l` and `TILE_JOINS`; the last is the thumbnail member
/// as `ext/blake3` (the first of thumb.jpg, thumb.webp, thumb.png, sample.jpg, jpg, png, webp it has).
const TILE_COLUMNS: &str = "d.name, l.key, l.booru, l.rating, l.score, l.favs, l.year, l.quality, l.faces, l.width, l.height, coalesce(s.present, 0),
    (SELECT m.ext || '/' || m.blake3 FROM members m WHERE m.shard = l.shard AND m.item = l.id
       AND m.ext IN ('thumb.jpg', 'thumb.webp', 'thumb.png', 'sample.jpg', 'jpg', 'png', 'webp')
     ORDER BY instr(',thumb.jpg,thumb.webp,thumb.png,sample.jpg,jpg,png,webp,', ',' || m.ext || ',') LIMIT 1)";
/// Columns `TILE_COLUMNS` takes.
const TILE_WIDTH: usize = 13;
const TILE_JOINS: &str = "JOIN datasets d ON d.id = l.dataset LEFT JOIN shards s ON s.dataset = l.dataset AND s.id = l.shard";

fn tile(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Tile> {
    Ok(Tile {
        dataset: r.get(at)?,
        key: r.get(at + 1)?,
        booru: r.get(at + 2)?,
        rating: r.get(at + 3)?,
        score: r.get(at + 4)?,
        favs: r.get(at + 5)?,
        year: r.get(at + 6)?,
        quality: r.get(at + 7)?,
        faces: r.get(at + 8)?,
        width: r.get(at + 9)?,
        height: r.get(at + 10)?,
        present: r.get::<_, i64>(at + 11)? == 1,
        thumb: r.get::<_, Option<String>>(at + 12)?.and_then(|t| {
            let (ext, blake3) = t.split_once('/')?;
            Some(Thumb {
                ext: ext.to_string(),
                blake3: blake3.to_string(),
            })
        }),
    })
}

fn tiles(pool: &Pool, sql_text: &str) -> Result<Vec<Tile>, BrowseError> {
    let conn = pool.connection();
    let mut st = conn.prepare(sql_text).map_err(sql)?;
    let rows = st.query_map([], |r| tile(r, 0)).map_err(sql)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql)
}

/// Ids of the tags a typed name stands for: its canonical name, the canonical name of an
/// alias, and the canonical name of a tag written that way by a source.
fn tag_ids(pool: &Pool, name: &str) -> Result<Vec<i64>, BrowseError> {
    let conn = pool.connection();
    let mut st = conn
        .prepare_cached(
            "SELECT id FROM tags WHERE canonical IN (
               SELECT ?1 UNION SELECT name FROM tag_aliases WHERE alias = ?1
               UNION SELECT canonical FROM tags WHERE name = ?1)
             ORDER BY id",
        )
        .map_err(sql)?;
    let ids = st.query_map([name], |r| r.get(0)).map_err(sql)?;
    ids.collect::<rusqlite::Result<Vec<i64>>>().map_err(sql)
}

fn id_list(ids: &[i64]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The filter as an SQL condition over `l` (`items` or the `live` view), with every
/// typed value quoted. Included tags are ordered rarest first, and only the first may
/// drive the query.
pub fn condition(pool: &Pool, f: &Filter) -> Result<String, BrowseError> {
    let mut parts: Vec<String> = Vec::new();
    if let Some(d) = &f.dataset {
        parts.push(format!(
            "l.dataset = (SELECT id FROM datasets WHERE name = {})",
            sql_text(d)
        ));
    }
    let mut included: Vec<(i64, Vec<i64>)> = Vec::new();
    for t in &f.tags {
        let ids = tag_ids(pool, &t.name)?;
        if t.exclude {
            if !ids.is_empty() {
                parts.push(format!(
                    "NOT EXISTS (SELECT 1 FROM item_tags WHERE item = l.id AND tag IN ({}))",
                    id_list(&ids)
                ));
            }
            continue;
        }
        if ids.is_empty() {
            return Ok("0".into());
        }
        // Live items with the tag, from the count tables: as good an order as the
        // postings' own count, without walking them.
        let postings: i64 = pool
            .connection()
            .query_row(
                &format!(
                    "SELECT coalesce(sum(items), 0) FROM tag_counts
                     WHERE dataset IN (SELECT id FROM datasets)
                       AND canonical IN (SELECT canonical FROM tags WHERE id IN ({}))",
                    id_list(&ids)
                ),
                [],
                |r| r.get(0),
            )
            .map_err(sql)?;
        included.push((postings, ids));
    }
    included.sort();
    let driver = included.first().map_or(0, |(n, _)| *n);
    for (i, (postings, ids)) in included.iter().enumerate() {
        // The rarest tag's postings drive the query. Another tag is read whole into a
        // temporary index when it is not much more common (a range of one index, in
        // order); a common one is looked up per candidate instead, (item, tag) in the
        // primary key, rather than gathering its million postings first.
        let common = *postings > driver.saturating_mul(10);
        parts.push(if i == 0 || !common {
            format!(
                "l.id IN (SELECT item FROM item_tags WHERE tag IN ({}))",
                id_list(ids)
            )
        } else {
            format!(
                "EXISTS (SELECT 1 FROM item_tags WHERE item = l.id AND tag IN ({}))",
                id_list(ids)
            )
        });
    }
    let text = |col: &str, v: &Option<String>, parts: &mut Vec<String>| {
        if let Some(v) = v {
            parts.push(format!("l.{col} = {}", sql_text(v)));
        }
    };
    text("booru", &f.booru, &mut parts);
    text("rating", &f.rating, &mut parts);
    text("volume", &f.volume, &mut parts);
    text("composition", &f.composition, &mut parts);
    let range = |col: &str, lo: Option<String>, hi: Option<String>, parts: &mut Vec<String>| {
        if let Some(lo) = lo {
            parts.push(format!("l.{col} >= {lo}"));
        }
        if let Some(hi) = hi {
            parts.push(format!("l.{col} <= {hi}"));
        }
    };
    let n = |v: Option<i64>| v.map(|v| v.to_string());
    let x = |v: Option<f64>| v.map(|v| format!("{v:?}"));
    range("year", n(f.year_min), n(f.year_max), &mut parts);
    range("faces", n(f.faces_min), n(f.faces_max), &mut parts);
    range("quality", x(f.quality_min), x(f.quality_max), &mut parts);
    range("score", n(f.score_min), None, &mut parts);
    let present =
        "EXISTS (SELECT 1 FROM shards s WHERE s.dataset = l.dataset AND s.id = l.shard AND s.present = 1)";
    match f.shards {
        Presence::Any => {}
        Presence::Present => parts.push(present.into()),
        Presence::Missing => parts.push(format!("NOT {present}")),
    }
    if parts.is_empty() {
        return Ok("1".into());
    }
    Ok(parts.join(" AND "))
}

/// `NOT INDEXED` for a view no index narrows (no booru, no year): left to itself,
/// SQLite reads such a view through a partial index of live items and fetches each row
/// from the table in that index's order, six times slower than reading the table in
/// order (3 s against 0.5 s on a million items). Rowid lookups, which tag filters
/// drive, stay allowed; booru and year have indexes worth using.
fn table_scan(f: &Filter) -> &'static str {
    if f.booru.is_none() && f.year_min.is_none() && f.year_max.is_none() {
        "NOT INDEXED"
    } else {
        ""
    }
}

/// A page of the gallery.
#[derive(Clone, Debug, Serialize)]
pub struct Gallery {
    pub filter: Filter,
    /// The filter as a query string (`to_query`).
    pub query: String,
    /// Matching items in all.
    pub total: u64,
    pub pages: u64,
    /// Matching items whose shard the pool lacks.
    pub missing: u64,
    pub items: Vec<Tile>,
}

pub fn gallery(pool: &Pool, f: &Filter) -> Result<Gallery, BrowseError> {
    let cond = condition(pool, f)?;
    let conn = pool.connection();
    // Most pools hold every shard: then no item needs its shard looked up to count.
    let any_missing: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM shards WHERE present = 0)",
            [],
            |r| r.get(0),
        )
        .map_err(sql)?;
    let (total, missing): (i64, i64) = if any_missing {
        conn.query_row(
            &format!(
                "SELECT count(*), count(*) - coalesce(sum(coalesce(s.present, 0)), 0)
                 FROM items l LEFT JOIN shards s ON s.dataset = l.dataset AND s.id = l.shard
                 WHERE {LIVE} AND ({cond})"
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    } else {
        conn.query_row(
            &format!("SELECT count(*), 0 FROM items l WHERE {LIVE} AND ({cond})"),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }
    .map_err(sql)?;
    let offset = u64::from(f.page - 1) * u64::from(f.per_page);
    let scan = table_scan(f);
    // The page's ids first, its tiles after: SQLite computes a selected column for
    // every row it sorts, and a tile's thumbnail lookup for every match is most of the
    // cost of a broad view.
    let items = tiles(
        pool,
        &format!(
            "SELECT {TILE_COLUMNS} FROM (
               SELECT l.id FROM items l {scan} WHERE {LIVE} AND ({cond}) ORDER BY {order} LIMIT {} OFFSET {offset}
             ) page JOIN items l ON l.id = page.id {TILE_JOINS} ORDER BY {order}",
            f.per_page,
            order = f.sort.order_sql(),
        ),
    )?;
    let total = total as u64;
    Ok(Gallery {
        query: f.to_query(),
        filter: f.clone(),
        total,
        pages: total.div_ceil(u64::from(f.per_page)).max(1),
        missing: missing as u64,
        items,
    })
}

/// The most frequent tags of each category among a view's items.
#[derive(Clone, Debug, Serialize, Default)]
pub struct Facets {
    pub categories: Vec<FacetGroup>,
    /// When the view holds more than `FACET_SAMPLE` items, the counts are over its first
    /// `FACET_SAMPLE` (in the view's order) and this says how many were read.
    pub sampled: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FacetGroup {
    pub category: String,
    pub tags: Vec<(String, u64)>,
}

pub fn facets(pool: &Pool, f: &Filter, per_category: usize) -> Result<Facets, BrowseError> {
    let cats = FACET_CATEGORIES
        .iter()
        .map(|c| sql_text(c))
        .collect::<Vec<_>>()
        .join(",");
    let (sql_text_, sampled) = if f.is_whole() {
        // The count tables hold these for the whole pool.
        let dataset = match &f.dataset {
            Some(d) => format!(
                "AND dataset = (SELECT id FROM datasets WHERE name = {})",
                sql_text(d)
            ),
            None => String::new(),
        };
        (
            format!(
                "SELECT category, canonical, sum(items) FROM tag_counts
                 WHERE category IN ({cats}) {dataset} GROUP BY category, canonical"
            ),
            None,
        )
    } else {
        let cond = condition(pool, f)?;
        let total: i64 = pool
            .connection()
            .query_row(
                &format!("SELECT count(*) FROM (SELECT 1 FROM items l WHERE {LIVE} AND ({cond}) LIMIT {})", FACET_SAMPLE + 1),
                [],
                |r| r.get(0),
            )
            .map_err(sql)?;
        let scan = table_scan(f);
        let order = if total as u64 > FACET_SAMPLE {
            format!("ORDER BY {}", f.sort.order_sql())
        } else {
            String::new()
        };
        (
            format!(
                "SELECT t.category, t.canonical, count(DISTINCT v.id)
                 FROM (SELECT l.id FROM items l {scan} WHERE {LIVE} AND ({cond}) {order} LIMIT {FACET_SAMPLE}) v
                 JOIN item_tags it ON it.item = v.id JOIN tags t ON t.id = it.tag
                 WHERE t.category IN ({cats}) GROUP BY t.category, t.canonical"
            ),
            (total as u64 > FACET_SAMPLE).then_some(FACET_SAMPLE),
        )
    };
    let conn = pool.connection();
    let mut st = conn.prepare(&sql_text_).map_err(sql)?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(sql)?;
    let mut by_cat: Vec<Vec<(String, u64)>> = vec![Vec::new(); FACET_CATEGORIES.len()];
    for row in rows {
        let (cat, name, n) = row.map_err(sql)?;
        if let Some(i) = FACET_CATEGORIES.iter().position(|c| *c == cat) {
            if n > 0 {
                by_cat[i].push((name, n as u64));
            }
        }
    }
    let chosen: Vec<&str> = f.tags.iter().map(|t| t.name.as_str()).collect();
    let categories = FACET_CATEGORIES
        .iter()
        .zip(by_cat)
        .map(|(c, mut tags)| {
            tags.retain(|(name, _)| !chosen.contains(&name.as_str()));
            tags.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            tags.truncate(per_category);
            FacetGroup {
                category: c.to_string(),
                tags,
            }
        })
        .collect();
    Ok(Facets {
        categories,
        sampled,
    })
}

/// Canonical tag names and aliases starting with `prefix`, most used first.
pub fn complete_tags(
    pool: &Pool,
    prefix: &str,
    limit: usize,
) -> Result<Vec<(String, String, u64)>, BrowseError> {
    let prefix = crate::name::normalize_tag(prefix);
    if prefix.is_empty() {
        return Ok(Vec::new());
    }
    let conn = pool.connection();
    // A range on the name rather than LIKE: LIKE is case-folding and cannot use the index.
    let end = format!("{prefix}\u{10ffff}");
    let mut st = conn
        .prepare_cached(
            "SELECT name, category, uses FROM (
               SELECT t.canonical AS name, t.category AS category,
                      (SELECT coalesce(sum(c.items), 0) FROM tag_counts c
                       WHERE c.dataset IN (SELECT id FROM datasets) AND c.canonical = t.canonical AND c.category = t.category) AS uses
               FROM tags t WHERE t.canonical >= ?1 AND t.canonical < ?2
               GROUP BY t.canonical, t.category
               UNION ALL
               SELECT a.alias || ' → ' || a.name, 'alias', 0 FROM tag_aliases a WHERE a.alias >= ?1 AND a.alias < ?2)
             ORDER BY uses DESC, name LIMIT ?3",
        )
        .map_err(sql)?;
    let rows = st
        .query_map(params![prefix, end, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })
        .map_err(sql)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql)
}

/// Where one file of an item lies.
#[derive(Clone, Debug, Serialize)]
pub struct Member {
    pub ext: String,
    pub offset: u64,
    pub length: u64,
    pub blake3: String,
}

/// A member ready to read: its shard file and where in it.
#[derive(Clone, Debug)]
pub struct Located {
    pub key: String,
    pub path: PathBuf,
    pub shard: String,
    pub present: bool,
    pub member: Member,
}

/// What the item page shows as its picture, best first.
const SAMPLES: &[&str] = &[
    "sample.jpg",
    "sample.webp",
    "jpg",
    "png",
    "webp",
    "thumb.jpg",
];

/// Finds one member of an item.
pub fn locate(pool: &Pool, dataset: &str, key: &str, ext: &str) -> Result<Located, BrowseError> {
    let conn = pool.connection();
    let found: Option<(i64, String, bool)> = conn
        .prepare_cached(
            "SELECT i.id, i.shard, coalesce(s.present, 0) FROM items i JOIN datasets d ON d.id = i.dataset
             LEFT JOIN shards s ON s.dataset = i.dataset AND s.id = i.shard
             WHERE d.name = ?1 AND i.key = ?2",
        )
        .and_then(|mut st| {
            st.query_row(params![dataset, key], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? == 1))
            })
            .optional()
        })
        .map_err(sql)?;
    let no_item = || BrowseError::NoItem {
        dataset: dataset.to_string(),
        key: key.to_string(),
    };
    let (id, shard, present) = found.ok_or_else(no_item)?;
    let members = members_of(pool, id, &shard)?;
    let member =
        members
            .into_iter()
            .find(|m| m.ext == ext)
            .ok_or_else(|| BrowseError::NoMember {
                key: key.to_string(),
                ext: ext.to_string(),
            })?;
    let dataset_name = crate::name::DatasetName::parse(dataset)
        .map_err(|_| BrowseError::Unsafe(dataset.into()))?;
    let shard_id =
        crate::shard::ShardId::parse(&shard).map_err(|_| BrowseError::Unsafe(shard.clone()))?;
    Ok(Located {
        key: key.to_string(),
        path: pool
            .root()
            .join(dataset_name.as_str())
            .join(shard_id.relative_path()),
        shard,
        present,
        member,
    })
}

fn members_of(pool: &Pool, item: i64, shard: &str) -> Result<Vec<Member>, BrowseError> {
    let conn = pool.connection();
    let mut st = conn
        .prepare_cached(
            "SELECT ext, offset, length, blake3 FROM members WHERE shard = ?1 AND item = ?2 ORDER BY ext",
        )
        .map_err(sql)?;
    let rows = st
        .query_map(params![shard, item], |r| {
            Ok(Member {
                ext: r.get(0)?,
                offset: r.get::<_, i64>(1)? as u64,
                length: r.get::<_, i64>(2)? as u64,
                blake3: r.get(3)?,
            })
        })
        .map_err(sql)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql)
}

/// Reads a located member from its shard and checks it against its blake3.
pub fn read(located: &Located) -> Result<Vec<u8>, BrowseError> {
    let m = &located.member;
    let name = format!("{}.{}", located.key, m.ext);
    if !located.present {
        return Err(BrowseError::NotDownloaded {
            key: located.key.clone(),
            shard: located.shard.clone(),
        });
    }
    if m.length > MAX_MEMBER {
        return Err(BrowseError::TooLarge {
            name,
            length: m.length,
        });
    }
    let path = &located.path;
    let read_error = |source| BrowseError::Read {
        path: path.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let len = file.metadata().map_err(read_error)?.len();
    let damaged = || BrowseError::Damaged {
        name: name.clone(),
        path: path.clone(),
    };
    if m.offset.checked_add(m.length).is_none_or(|end| end > len) {
        return Err(damaged());
    }
    let mut bytes = vec![0u8; m.length as usize];
    file.read_exact_at(&mut bytes, m.offset)
        .map_err(read_error)?;
    if blake3::hash(&bytes).to_hex().as_str() != m.blake3 {
        return Err(damaged());
    }
    Ok(bytes)
}

/// Everything the pool knows about one item.
#[derive(Clone, Debug, Serialize)]
pub struct ItemView {
    pub tile: Tile,
    pub post_id: Option<i64>,
    pub posted: Option<String>,
    pub bytes: Option<i64>,
    pub volume: String,
    pub composition: Option<String>,
    pub shard: String,
    pub hash: String,
    pub phash: Option<String>,
    pub md5: Option<String>,
    pub removed_in: Option<String>,
    /// Tags by category (in `FACET_CATEGORIES` order, then the others), canonical names.
    pub tags: Vec<(String, Vec<String>)>,
    /// Face boxes (x, y, width, height as fractions of the picture) per strictness.
    pub faces: Vec<(String, Vec<[f64; 4]>)>,
    pub quality_parts: Vec<(String, f64)>,
    pub stats: Vec<(String, Value)>,
    pub history: Vec<HistoryEntry>,
    /// The item this one is hidden as a duplicate of.
    pub duplicate_of: Option<Tile>,
    /// Items hidden as duplicates of this one (or of the one it duplicates).
    pub duplicates: Vec<Duplicate>,
    /// Live items nearest by perceptual hash (bits apart), by tags (1 - weighted
    /// Jaccard) and by embedding (1 - cosine; none without one), as `seedpool mine
    /// similar` finds them.
    pub look_alikes: Vec<Nearby>,
    pub similar_tags: Vec<Nearby>,
    pub similar_embedding: Vec<Nearby>,
    pub files: Vec<Member>,
    /// The largest picture to show (the first of `SAMPLES` it has).
    pub sample: Option<Member>,
    pub record: Value,
}

#[derive(Clone, Debug, Serialize)]
pub struct Nearby {
    pub tile: Tile,
    pub distance: f64,
}

/// Items shown beside an item page, per kind.
const NEARBY: usize = 12;

/// The nearest items by `by`, as tiles; none when the item cannot be compared that
/// way (no hash, no tags).
fn nearby(
    pool: &Pool,
    dataset: &str,
    key: &str,
    by: crate::mine::similar::By,
) -> Result<Vec<Nearby>, BrowseError> {
    use crate::mine::similar::{similar, SimilarPlan, DEFAULT_PROBES, DEFAULT_RADIUS};
    let plan = SimilarPlan {
        key: key.to_string(),
        dataset: Some(dataset.to_string()),
        only_dataset: false,
        by,
        limit: NEARBY,
        radius: DEFAULT_RADIUS,
        probes: DEFAULT_PROBES,
    };
    let report = match similar(pool, &plan) {
        Ok(r) => r,
        Err(e) if e.is_usage() => return Ok(Vec::new()),
        Err(e) => return Err(BrowseError::Query(QueryError::Mine(e))),
    };
    let conn = pool.connection();
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {TILE_COLUMNS} FROM items l {TILE_JOINS} WHERE d.name = ?1 AND l.key = ?2"
        ))
        .map_err(sql)?;
    let mut out = Vec::new();
    for s in report.similar {
        let tile = st
            .query_row(params![s.dataset, s.key], |r| tile(r, 0))
            .map_err(sql)?;
        out.push(Nearby {
            tile,
            distance: s.distance,
        });
    }
    Ok(out)
}

#[derive(Clone, Debug, Serialize)]
pub struct HistoryEntry {
    pub version: String,
    pub created: String,
    pub action: String,
    pub hash: Option<String>,
    /// For a change: the record's fields it changed (`tags.<category>` for tags).
    pub fields: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Duplicate {
    pub tile: Tile,
    /// Bits apart from this item's perceptual hash, when both have one.
    pub distance: Option<u32>,
    pub same_md5: bool,
}

pub fn item(pool: &Pool, dataset: &str, key: &str) -> Result<ItemView, BrowseError> {
    let conn = pool.connection();
    let row = conn
        .query_row(
            &format!(
                "SELECT {TILE_COLUMNS}, l.id, l.post_id, l.posted, l.bytes, l.volume, l.composition, l.shard,
                        l.hash, l.phash, l.md5, rr.version, l.duplicate_of, r.record
                 FROM items l {TILE_JOINS} LEFT JOIN records r ON r.id = l.record_id
                 LEFT JOIN releases rr ON rr.id = l.removed_in
                 WHERE d.name = ?1 AND l.key = ?2"
            ),
            params![dataset, key],
            |r| {
                Ok((
                    tile(r, 0)?,
                    r.get::<_, i64>(TILE_WIDTH)?,
                    (
                        r.get::<_, Option<i64>>(14)?,
                        r.get::<_, Option<String>>(15)?,
                        r.get::<_, Option<i64>>(16)?,
                        r.get::<_, String>(17)?,
                        r.get::<_, Option<String>>(18)?,
                        r.get::<_, String>(19)?,
                    ),
                    (
                        r.get::<_, String>(20)?,
                        r.get::<_, Option<String>>(21)?,
                        r.get::<_, Option<String>>(22)?,
                        r.get::<_, Option<String>>(23)?,
                        r.get::<_, Option<i64>>(24)?,
                        r.get::<_, Option<String>>(25)?,
                    ),
                ))
            },
        )
        .optional()
        .map_err(sql)?
        .ok_or_else(|| BrowseError::NoItem {
            dataset: dataset.to_string(),
            key: key.to_string(),
        })?;
    let (
        tile_,
        id,
        (post_id, posted, bytes, volume, composition, shard),
        (hash, phash, md5, removed_in, duplicate_of, record),
    ) = row;
    let record: Value = record
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or(Value::Null);

    let mut tags: Vec<(String, Vec<String>)> = Vec::new();
    {
        let mut st = conn
            .prepare_cached(
                "SELECT DISTINCT t.category, t.canonical FROM item_tags it JOIN tags t ON t.id = it.tag
                 WHERE it.item = ?1 ORDER BY t.category, t.canonical",
            )
            .map_err(sql)?;
        let rows = st
            .query_map([id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(sql)?;
        for row in rows {
            let (cat, name) = row.map_err(sql)?;
            match tags.iter_mut().find(|(c, _)| *c == cat) {
                Some((_, names)) => names.push(name),
                None => tags.push((cat, vec![name])),
            }
        }
        let rank = |c: &str| FACET_CATEGORIES.iter().position(|f| *f == c).unwrap_or(9);
        tags.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then_with(|| a.0.cmp(&b.0)));
    }

    let boxes = |v: &Value| -> Vec<[f64; 4]> {
        v.as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|b| {
                        let b = b.as_array()?;
                        let n = |i: usize| b.get(i).and_then(Value::as_f64);
                        Some([n(0)?, n(1)?, n(2)?, n(3)?])
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let faces = match &record["faces"] {
        Value::Object(levels) => ["strict", "medium", "relaxed"]
            .iter()
            .filter_map(|l| levels.get(*l).map(|v| (l.to_string(), boxes(v))))
            .collect(),
        v @ Value::Array(_) => vec![("medium".to_string(), boxes(v))],
        _ => Vec::new(),
    };
    let numbers = |v: &Value| -> Vec<(String, f64)> {
        v.as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let stats = record["stats"]
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();

    let history = history(pool, id, &record)?;

    let winner = duplicate_of.unwrap_or(id);
    let duplicate_of = match duplicate_of {
        Some(w) => tiles(
            pool,
            &format!("SELECT {TILE_COLUMNS} FROM items l {TILE_JOINS} WHERE l.id = {w}"),
        )?
        .into_iter()
        .next(),
        None => None,
    };
    // By `items_hidden`, the partial index of hidden items; naming the dataset too
    // would send SQLite through every item of it.
    let duplicates = {
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {TILE_COLUMNS}, l.phash, l.md5 FROM items l {TILE_JOINS}
                 WHERE l.duplicate_of = ?1 AND l.id != ?2 AND l.removed_in IS NULL ORDER BY l.key LIMIT 100"
            ))
            .map_err(sql)?;
        let rows = st
            .query_map(params![winner, id], |r| {
                let other: Option<String> = r.get(TILE_WIDTH)?;
                let other_md5: Option<String> = r.get(TILE_WIDTH + 1)?;
                Ok(Duplicate {
                    tile: tile(r, 0)?,
                    distance: phash_distance(phash.as_deref(), other.as_deref()),
                    same_md5: md5.is_some() && md5 == other_md5,
                })
            })
            .map_err(sql)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql)?
    };
    let look_alikes = nearby(pool, dataset, key, crate::mine::similar::By::Phash)?;
    let similar_tags = nearby(pool, dataset, key, crate::mine::similar::By::Tags)?;
    let similar_embedding = nearby(pool, dataset, key, crate::mine::similar::By::Embedding)?;
    let files = members_of(pool, id, &shard)?;
    let sample = SAMPLES
        .iter()
        .find_map(|ext| files.iter().find(|m| m.ext == *ext))
        .cloned();
    Ok(ItemView {
        tile: tile_,
        post_id,
        posted,
        bytes,
        volume,
        composition,
        shard,
        hash,
        phash,
        md5,
        removed_in,
        tags,
        faces,
        quality_parts: numbers(&record["quality_parts"]),
        stats,
        history,
        duplicate_of,
        duplicates,
        look_alikes,
        similar_tags,
        similar_embedding,
        files,
        sample,
        record,
    })
}

/// What each release did to item `id`, oldest first, with the fields each change
/// touched (`record` is the item's record now).
fn history(pool: &Pool, id: i64, record: &Value) -> Result<Vec<HistoryEntry>, BrowseError> {
    let conn = pool.connection();
    let mut st = conn
        .prepare_cached(
            // Provenance and history are keyed by release first: one lookup per
            // release. A change's old record is the one history kept at it.
            "SELECT r.version, r.created, p.action, p.hash, hr.record
             FROM releases r JOIN provenance p ON p.release = r.id AND p.item = ?1
             LEFT JOIN item_history h ON h.release = r.id AND h.item = ?1
             LEFT JOIN records hr ON hr.id = h.record_id
             WHERE r.dataset = (SELECT dataset FROM items WHERE id = ?1) ORDER BY r.created, r.id",
        )
        .map_err(sql)?;
    let rows = st
        .query_map([id], |r| {
            Ok((
                HistoryEntry {
                    version: r.get(0)?,
                    created: r.get(1)?,
                    action: r.get(2)?,
                    hash: r.get(3)?,
                    fields: Vec::new(),
                },
                r.get::<_, Option<String>>(4)?,
            ))
        })
        .map_err(sql)?;
    let rows = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql)?;
    // Each change's record before it, against the record after it: the next
    // change's "before", or the item's record now.
    let parse = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
    };
    let mut after = Some(record.clone());
    let mut entries: Vec<HistoryEntry> = Vec::with_capacity(rows.len());
    for (mut entry, before) in rows.into_iter().rev() {
        if let Some(before) = parse(&before) {
            if let Some(after) = &after {
                entry.fields = changed_fields(&before, after);
            }
            after = Some(before);
        }
        entries.push(entry);
    }
    entries.reverse();
    Ok(entries)
}

/// The top-level fields of two records that differ, and `tags.<category>` for each tag
/// category that does, sorted.
fn changed_fields(before: &Value, after: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (a, b) = (
        before.as_object().unwrap_or(&empty),
        after.as_object().unwrap_or(&empty),
    );
    let mut fields = std::collections::BTreeSet::new();
    for k in a.keys().chain(b.keys()) {
        let (x, y) = (a.get(k), b.get(k));
        if x == y {
            continue;
        }
        match (
            k.as_str(),
            x.and_then(Value::as_object),
            y.and_then(Value::as_object),
        ) {
            ("tags", Some(x), Some(y)) => {
                for c in x.keys().chain(y.keys()) {
                    if x.get(c) != y.get(c) {
                        fields.insert(format!("tags.{c}"));
                    }
                }
            }
            _ => {
                fields.insert(k.clone());
            }
        }
    }
    fields.into_iter().collect()
}

fn phash_distance(a: Option<&str>, b: Option<&str>) -> Option<u32> {
    let a = crate::curate::duplicates::parse_phash(a?)?;
    let b = crate::curate::duplicates::parse_phash(b?)?;
    Some((a ^ b).count_ones())
}

/// The pool at a glance.
#[derive(Clone, Debug, Serialize)]
pub struct Overview {
    pub datasets: Vec<DatasetView>,
    /// Live items by a column's value, per column shown.
    pub breakdowns: Vec<Breakdown>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DatasetView {
    pub name: String,
    pub public_key: String,
    pub head: Option<String>,
    /// Newest first.
    pub releases: Vec<ReleaseRow>,
    pub live_items: u64,
    pub items_on_disk: u64,
    pub shards: u64,
    pub shards_present: u64,
    pub bytes: u64,
    pub bytes_present: u64,
    /// Stored clusterings (`seedpool mine clusters`), for the cluster browser.
    pub clusterings: Vec<ClusteringLink>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusteringLink {
    pub name: String,
    /// `tags`, `stats` or `embedding`.
    pub features: String,
    pub k: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReleaseRow {
    pub version: String,
    pub parent: Option<String>,
    pub created: String,
    pub merged_at: String,
    pub items: u64,
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Breakdown {
    /// The column (`year`, `booru`, ...) and the filter field that selects one value.
    pub column: String,
    pub field: Option<String>,
    pub values: Vec<(String, u64)>,
}

/// The columns the overview breaks live items down by, and whether by value order
/// (else most items first).
const BREAKDOWNS: &[(&str, bool)] = &[
    ("year", true),
    ("booru", false),
    ("rating", false),
    ("volume", false),
    ("composition", false),
];

/// Values a breakdown shows at most.
const BREAKDOWN_VALUES: usize = 40;

pub fn overview(pool: &Pool) -> Result<Overview, BrowseError> {
    let conn = pool.connection();
    let mut datasets = Vec::new();
    let names: Vec<(i64, String, String, Option<String>)> = {
        let mut st = conn
            .prepare(
                "SELECT d.id, d.name, d.public_key, r.version FROM datasets d
                 LEFT JOIN releases r ON r.id = d.head_release ORDER BY d.name",
            )
            .map_err(sql)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(sql)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql)?
    };
    // One pass over the live items counts them per dataset, on disk or not, and by
    // every breakdown's column: a GROUP BY per column would sort a million rows each.
    let missing: std::collections::HashSet<(i64, String)> = {
        let mut st = conn
            .prepare("SELECT dataset, id FROM shards WHERE present = 0")
            .map_err(sql)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sql)?;
        rows.collect::<rusqlite::Result<_>>().map_err(sql)?
    };
    let mut live: std::collections::HashMap<i64, (u64, u64)> = Default::default();
    let mut counts: Vec<std::collections::HashMap<String, u64>> =
        vec![Default::default(); BREAKDOWNS.len()];
    {
        let columns = BREAKDOWNS
            .iter()
            .map(|(c, _)| format!("CAST(l.{c} AS TEXT)"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut st = conn
            .prepare(&format!(
                "SELECT l.dataset, l.shard, {columns} FROM items l WHERE {LIVE}"
            ))
            .map_err(sql)?;
        let mut rows = st.query([]).map_err(sql)?;
        while let Some(r) = rows.next().map_err(sql)? {
            let dataset: i64 = r.get(0).map_err(sql)?;
            let entry = live.entry(dataset).or_default();
            entry.0 += 1;
            if missing.is_empty() || !missing.contains(&(dataset, r.get(1).map_err(sql)?)) {
                entry.1 += 1;
            }
            for (i, count) in counts.iter_mut().enumerate() {
                if let Some(v) = r.get::<_, Option<String>>(i + 2).map_err(sql)? {
                    match count.get_mut(&v) {
                        Some(n) => *n += 1,
                        None => {
                            count.insert(v, 1);
                        }
                    }
                }
            }
        }
    }
    for (id, name, public_key, head) in names {
        let releases = {
            let mut st = conn
                .prepare(
                    "SELECT version, parent_version, created, merged_at, items, added, changed, removed
                     FROM releases WHERE dataset = ?1 ORDER BY created DESC, id DESC",
                )
                .map_err(sql)?;
            let rows = st
                .query_map([id], |r| {
                    Ok(ReleaseRow {
                        version: r.get(0)?,
                        parent: r.get(1)?,
                        created: r.get(2)?,
                        merged_at: r.get(3)?,
                        items: r.get::<_, i64>(4)? as u64,
                        added: r.get::<_, i64>(5)? as u64,
                        changed: r.get::<_, i64>(6)? as u64,
                        removed: r.get::<_, i64>(7)? as u64,
                    })
                })
                .map_err(sql)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql)?
        };
        let (shards, shards_present, bytes, bytes_present): (i64, i64, i64, i64) = conn
            .query_row(
                "SELECT count(*), coalesce(sum(present), 0), coalesce(sum(size), 0),
                        coalesce(sum(CASE WHEN present = 1 THEN size ELSE 0 END), 0)
                 FROM shards WHERE dataset = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(sql)?;
        let clusterings = {
            let mut st = conn
                .prepare(
                    "SELECT name, features, k FROM clusterings WHERE dataset = ?1 ORDER BY name",
                )
                .map_err(sql)?;
            let rows = st
                .query_map([id], |r| {
                    Ok(ClusteringLink {
                        name: r.get(0)?,
                        features: r.get(1)?,
                        k: r.get::<_, i64>(2)?.max(0) as u64,
                    })
                })
                .map_err(sql)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql)?
        };
        let (live_items, items_on_disk) = live.get(&id).copied().unwrap_or_default();
        datasets.push(DatasetView {
            clusterings,
            name,
            public_key,
            head,
            releases,
            live_items,
            items_on_disk,
            shards: shards as u64,
            shards_present: shards_present as u64,
            bytes: bytes as u64,
            bytes_present: bytes_present as u64,
        });
    }
    let breakdowns = BREAKDOWNS
        .iter()
        .zip(counts)
        .map(|((column, by_value), count)| {
            let mut values: Vec<(String, u64)> = count.into_iter().collect();
            if *by_value {
                values.sort_by(|a, b| a.0.cmp(&b.0));
            } else {
                values.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            }
            values.truncate(BREAKDOWN_VALUES);
            Breakdown {
                column: column.to_string(),
                field: Some(column.to_string()),
                values,
            }
        })
        .collect();
    Ok(Overview {
        datasets,
        breakdowns,
    })
}

/// Changes whenever what the pages show of the pool can: a merge, shards arriving, a
/// tag list imported. Pages that cost a pass over every item are kept until it does.
pub fn state_key(pool: &Pool) -> Result<String, BrowseError> {
    pool.connection()
        .query_row(
            "SELECT coalesce((SELECT group_concat(id || '@' || merged_at) FROM releases), '')
                    || '/' || (SELECT count(*) FROM shards WHERE present = 1)
                    || '/' || (SELECT count(*) FROM tag_aliases)
                    || '/' || (SELECT count(*) FROM tag_info)
                    || '/' || (SELECT coalesce(sum(items), 0) FROM category_counts)
                    || '/' || (SELECT coalesce(group_concat(id), '') FROM clusterings)",
            [],
            |r| r.get(0),
        )
        .map_err(sql)
}

/// A statistic the release review ranks items by.
pub struct Stat {
    pub name: &'static str,
    /// SQL over `items l` joined with `records r`.
    expr: &'static str,
}

pub const STATS: &[Stat] = &[
    Stat {
        name: "quality",
        expr: "l.quality",
    },
    Stat {
        name: "score",
        expr: "l.score",
    },
    Stat {
        name: "favs",
        expr: "l.favs",
    },
    Stat {
        name: "faces",
        expr: "l.faces",
    },
    Stat {
        name: "width",
        expr: "l.width",
    },
    Stat {
        name: "height",
        expr: "l.height",
    },
    Stat {
        name: "bytes",
        expr: "l.bytes",
    },
    Stat {
        name: "entropy",
        expr: "json_extract(r.record, '$.stats.entropy')",
    },
    Stat {
        name: "mean",
        expr: "json_extract(r.record, '$.stats.mean')",
    },
    Stat {
        name: "std",
        expr: "json_extract(r.record, '$.stats.std')",
    },
    Stat {
        name: "skewness",
        expr: "json_extract(r.record, '$.stats.skewness')",
    },
    Stat {
        name: "colors",
        expr: "json_extract(r.record, '$.stats.colors')",
    },
    Stat {
        name: "chroma_mean",
        expr: "json_extract(r.record, '$.stats.chroma_mean')",
    },
    Stat {
        name: "edges",
        expr: "json_extract(r.record, '$.stats.edges')",
    },
    Stat {
        name: "jpeg_quality",
        expr: "json_extract(r.record, '$.stats.jpeg_quality')",
    },
];

/// What one release did, for its maintainer to review.
#[derive(Clone, Debug, Serialize)]
pub struct ReleaseReview {
    pub dataset: String,
    pub release: ReleaseRow,
    /// Per action (added, changed, restored, removed): how many, and the first items.
    pub actions: Vec<ActionGroup>,
    pub outliers: Outliers,
    /// Inputs ingest left out (filtered, duplicate, unreadable), from `--ingest-report`.
    pub ingest: Option<Vec<IngestLine>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ActionGroup {
    pub action: String,
    pub total: u64,
    pub items: Vec<Tile>,
    /// For changes: per item, the record fields this release changed.
    pub fields: Vec<Vec<String>>,
}

/// The items of a release lowest and highest by one statistic.
#[derive(Clone, Debug, Serialize)]
pub struct Outliers {
    pub stat: String,
    pub lowest: Vec<(Tile, Value)>,
    pub highest: Vec<(Tile, Value)>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IngestLine {
    pub input: String,
    pub status: String,
    pub detail: String,
}

/// Lines of an ingest report past this many are not shown.
pub const MAX_INGEST_LINES: usize = 10_000;

pub fn release(
    pool: &Pool,
    dataset: &str,
    version: &str,
    stat: &str,
    per_group: usize,
    ingest_report: Option<&Path>,
) -> Result<ReleaseReview, BrowseError> {
    let stat = STATS
        .iter()
        .find(|s| s.name == stat)
        .ok_or_else(|| BrowseError::UnknownStat(stat.to_string()))?;
    let conn = pool.connection();
    let found = conn
        .query_row(
            "SELECT r.id, r.version, r.parent_version, r.created, r.merged_at, r.items, r.added, r.changed, r.removed
             FROM releases r JOIN datasets d ON d.id = r.dataset WHERE d.name = ?1 AND r.version = ?2",
            params![dataset, version],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    ReleaseRow {
                        version: r.get(1)?,
                        parent: r.get(2)?,
                        created: r.get(3)?,
                        merged_at: r.get(4)?,
                        items: r.get::<_, i64>(5)? as u64,
                        added: r.get::<_, i64>(6)? as u64,
                        changed: r.get::<_, i64>(7)? as u64,
                        removed: r.get::<_, i64>(8)? as u64,
                    },
                ))
            },
        )
        .optional()
        .map_err(sql)?;
    let (id, row) = found.ok_or_else(|| BrowseError::NoRelease {
        dataset: dataset.to_string(),
        version: version.to_string(),
    })?;
    let mut actions = Vec::new();
    for action in ["added", "changed", "restored", "removed"] {
        let total: i64 = conn
            .query_row(
                "SELECT count(*) FROM provenance WHERE release = ?1 AND action = ?2",
                params![id, action],
                |r| r.get(0),
            )
            .map_err(sql)?;
        let items = tiles(
            pool,
            &format!(
                "SELECT {TILE_COLUMNS} FROM provenance p JOIN items l ON l.id = p.item {TILE_JOINS}
                 WHERE p.release = {id} AND p.action = {} ORDER BY l.key LIMIT {per_group}",
                sql_text(action)
            ),
        )?;
        let mut fields = Vec::new();
        if action == "changed" {
            for t in &items {
                let (item_id, record): (i64, Option<String>) = conn
                    .query_row(
                        "SELECT l.id, r.record FROM items l JOIN datasets d ON d.id = l.dataset
                         LEFT JOIN records r ON r.id = l.record_id WHERE d.name = ?1 AND l.key = ?2",
                        params![t.dataset, t.key],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(sql)?;
                let record = record
                    .and_then(|r| serde_json::from_str(&r).ok())
                    .unwrap_or(Value::Null);
                fields.push(
                    history(pool, item_id, &record)?
                        .into_iter()
                        .find(|h| h.version == row.version && h.action == "changed")
                        .map(|h| h.fields)
                        .unwrap_or_default(),
                );
            }
        }
        actions.push(ActionGroup {
            action: action.to_string(),
            total: total as u64,
            items,
            fields,
        });
    }
    // The release's items as it left them: added, changed or restored by it and still live.
    let ranked = |dir: &str| -> Result<Vec<(Tile, Value)>, BrowseError> {
        let mut st = conn
            .prepare(&format!(
                "SELECT {TILE_COLUMNS}, {expr} AS v FROM provenance p JOIN items l ON l.id = p.item {TILE_JOINS}
                 LEFT JOIN records r ON r.id = l.record_id
                 WHERE p.release = {id} AND p.action != 'removed' AND {LIVE} AND v IS NOT NULL
                 ORDER BY v {dir}, l.key LIMIT {per_group}",
                expr = stat.expr
            ))
            .map_err(sql)?;
        let rows = st
            .query_map([], |r| {
                let v = match r.get_ref(TILE_WIDTH)? {
                    rusqlite::types::ValueRef::Integer(n) => Value::from(n),
                    rusqlite::types::ValueRef::Real(x) => {
                        serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
                    }
                    other => Value::String(format!("{other:?}")),
                };
                Ok((tile(r, 0)?, v))
            })
            .map_err(sql)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql)
    };
    let outliers = Outliers {
        stat: stat.name.to_string(),
        lowest: ranked("ASC")?,
        highest: ranked("DESC")?,
    };
    let ingest = ingest_report.map(read_ingest_report).transpose()?;
    Ok(ReleaseReview {
        dataset: dataset.to_string(),
        release: row,
        actions,
        outliers,
        ingest,
    })
}

/// The inputs an ingest report says were left out, at most `MAX_INGEST_LINES`.
pub fn read_ingest_report(path: &Path) -> Result<Vec<IngestLine>, BrowseError> {
    use std::io::BufRead;
    let read_error = |source| BrowseError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(file).lines().skip(1) {
        let line = line.map_err(read_error)?;
        let mut cells = line.splitn(3, '\t');
        let (Some(input), Some(status), detail) = (cells.next(), cells.next(), cells.next()) else {
            continue;
        };
        if status == "kept" {
            continue;
        }
        lines.push(IngestLine {
            input: input.to_string(),
            status: status.to_string(),
            detail: detail.unwrap_or("").to_string(),
        });
        if lines.len() >= MAX_INGEST_LINES {
            break;
        }
    }
    Ok(lines)
}

/// A hit-parade's result with what a page needs around it.
#[derive(Clone, Debug, Serialize)]
pub struct ParadeView {
    pub name: String,
    pub description: String,
    /// The parameters it reads: (field, what it means here, the value given).
    pub params: Vec<(String, String, String)>,
    pub table: Table,
    /// Per row, the filter that shows the items behind it, and the first of them.
    pub rows: Vec<Option<RowItems>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RowItems {
    pub filter: String,
    pub items: Vec<Tile>,
}

/// The URL field of a parameter (its flag without dashes).
pub fn param_field(p: Param) -> &'static str {
    p.flag().trim_start_matches('-')
}

/// Parses a hit-parade's parameters from a URL query string; a field it does not read,
/// or an unknown one, is refused.
pub fn parade_params(name: &str, query: &str, ignore: &[&str]) -> Result<Params, BrowseError> {
    let parade = parades::find(name).ok_or_else(|| QueryError::Unknown(name.to_string()))?;
    let mut p = Params::default();
    let bad = |field: &str, value: &str, why: &'static str| BrowseError::BadParam {
        field: field.to_string(),
        value: value.to_string(),
        why,
    };
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let (k, v) = (k.as_ref(), v.trim());
        if ignore.contains(&k) || v.is_empty() {
            continue;
        }
        if v.chars().count() > super::filter::MAX_VALUE * 4 {
            return Err(bad(k, &v.chars().take(40).collect::<String>(), "too long"));
        }
        if k == "dataset" {
            p.dataset = Some(v.to_string());
            continue;
        }
        let Some(param) = Param::ALL.into_iter().find(|&q| param_field(q) == k) else {
            return Err(bad(k, v, "not a parameter of any hit-parade"));
        };
        if !parade.reads(param) {
            return Err(BrowseError::Query(QueryError::Unread {
                parade: parade.name,
                flag: param.flag(),
                reads: parade.params_text(),
            }));
        }
        match param {
            Param::Tags => {
                p.tags = v
                    .split([',', ' '])
                    .filter(|t| !t.is_empty())
                    .map(crate::name::normalize_tag)
                    .collect()
            }
            Param::Year => p.year = Some(v.parse().map_err(|_| bad(k, v, "not a whole number"))?),
            Param::Booru => p.booru = Some(v.to_string()),
            Param::Metric => p.metric = Some(v.to_string()),
            Param::Composition => p.composition = Some(v.to_string()),
            Param::Portraits => p.portraits = matches!(v, "1" | "on" | "true" | "yes"),
            Param::Limit => match v.parse::<u64>() {
                Ok(n) if (1..=1000).contains(&n) => p.limit = Some(n),
                _ => return Err(bad(k, v, "not a whole number from 1 to 1000")),
            },
        }
    }
    Ok(p)
}

/// Columns whose values are tags the gallery can filter by.
const TAG_COLUMNS: &[&str] = &["character", "artist", "series", "copyright"];

pub fn parade(
    pool: &Pool,
    name: &str,
    params: &Params,
    thumbs_per_row: usize,
) -> Result<ParadeView, BrowseError> {
    let parade = parades::find(name).ok_or_else(|| QueryError::Unknown(name.to_string()))?;
    let table = parades::run(pool, name, params)?;
    let column = |n: &str| table.columns.iter().position(|c| c == n);
    let tag_cols: Vec<usize> = TAG_COLUMNS.iter().filter_map(|c| column(c)).collect();
    let (key_col, year_col, booru_col) = (column("key"), column("year"), column("booru"));
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let mut rows = Vec::new();
    for (i, row) in table.rows.iter().enumerate() {
        if i >= 100 || (tag_cols.is_empty() && key_col.is_none()) {
            rows.push(None);
            continue;
        }
        let mut f = Filter::new();
        f.per_page = thumbs_per_row.max(1) as u32;
        f.dataset = params.dataset.clone();
        for &c in &tag_cols {
            if let Some(t) = text(&row[c]) {
                f = f.with_tag(&t);
            }
        }
        for t in &params.tags {
            f = f.with_tag(t);
        }
        if let Some(y) = year_col.and_then(|c| row[c].as_i64()).or(params.year) {
            f.year_min = Some(y);
            f.year_max = Some(y);
        }
        f.booru = booru_col
            .and_then(|c| text(&row[c]))
            .or(params.booru.clone());
        let items = match key_col.and_then(|c| text(&row[c])) {
            Some(key) => tiles(
                pool,
                &format!(
                    "SELECT {TILE_COLUMNS} FROM items l {TILE_JOINS} WHERE l.key = {} AND {LIVE} LIMIT 1",
                    sql_text(&key)
                ),
            )?,
            None => gallery(pool, &f)?.items,
        };
        f.per_page = super::filter::DEFAULT_PER_PAGE;
        rows.push(Some(RowItems {
            filter: f.to_query(),
            items,
        }));
    }
    let given = |p: Param| -> String {
        match p {
            Param::Tags => params.tags.join(","),
            Param::Year => params.year.map(|y| y.to_string()).unwrap_or_default(),
            Param::Booru => params.booru.clone().unwrap_or_default(),
            Param::Metric => params.metric.clone().unwrap_or_default(),
            Param::Composition => params.composition.clone().unwrap_or_default(),
            Param::Portraits => {
                if params.portraits {
                    "on".into()
                } else {
                    String::new()
                }
            }
            Param::Limit => params.limit.map(|y| y.to_string()).unwrap_or_default(),
        }
    };
    Ok(ParadeView {
        name: parade.name.to_string(),
        description: parade.description.to_string(),
        params: parade
            .params
            .iter()
            .map(|(p, about)| (param_field(*p).to_string(), about.to_string(), given(*p)))
            .collect(),
        table,
        rows,
    })
}

/// The hit-parades a pool can run, for the index page.
pub fn parade_list() -> Vec<(&'static str, &'static str, String)> {
    PARADES
        .iter()
        .map(|p| (p.name, p.description, p.params_text()))
        .collect()
}

/// The shards behind a view that the pool lacks, per dataset: what "fetch these" syncs.
pub fn missing_shards(pool: &Pool, f: &Filter) -> Result<Vec<(String, Vec<String>)>, BrowseError> {
    let cond = condition(pool, f)?;
    let conn = pool.connection();
    let mut st = conn
        .prepare(&format!(
            "SELECT DISTINCT d.name, l.shard FROM items l JOIN datasets d ON d.id = l.dataset
             LEFT JOIN shards s ON s.dataset = l.dataset AND s.id = l.shard
             WHERE {LIVE} AND ({cond}) AND coalesce(s.present, 0) = 0 ORDER BY d.name, l.shard"
        ))
        .map_err(sql)?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(sql)?;
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for row in rows {
        let (d, shard) = row.map_err(sql)?;
        match out.last_mut() {
            Some((last, list)) if *last == d => list.push(shard),
            _ => out.push((d, vec![shard])),
        }
    }
    Ok(out)
}

/// The manifest of a dataset's newest merged release, as the pool keeps it.
pub fn head_manifest(pool: &Pool, dataset: &str) -> Result<PathBuf, BrowseError> {
    let version: Option<String> = pool
        .connection()
        .query_row(
            "SELECT r.version FROM datasets d JOIN releases r ON r.id = d.head_release WHERE d.name = ?1",
            [dataset],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql)?;
    let version = version.ok_or_else(|| BrowseError::NoRelease {
        dataset: dataset.to_string(),
        version: "(newest)".to_string(),
    })?;
    let d = crate::name::DatasetName::parse(dataset)
        .map_err(|_| BrowseError::Unsafe(dataset.into()))?;
    let v =
        crate::name::Version::parse(&version).map_err(|_| BrowseError::Unsafe(version.clone()))?;
    Ok(pool.root().join(format!("{d}-{v}.manifest.json")))
}

/// The SQL console: the statement, its first rows, and the item behind each row when
/// a column is named `key`.
#[derive(Clone, Debug, Serialize, Default)]
pub struct SqlView {
    pub sql: String,
    pub table: Option<Table>,
    /// More rows were left unread.
    pub more: bool,
    pub error: Option<String>,
    pub key_column: Option<usize>,
    pub items: Vec<Option<Tile>>,
}

pub fn sql_console(
    pool: &Pool,
    sql_: &str,
    max_rows: usize,
    timeout: std::time::Duration,
) -> Result<SqlView, BrowseError> {
    let (table, more) = super::sql_rows(pool, sql_, max_rows, timeout)?;
    let key_column = table.columns.iter().position(|c| c == "key");
    let mut items = Vec::new();
    if let Some(k) = key_column {
        let conn = pool.connection();
        // By the (dataset, key) index, one range per dataset: a key alone has no index.
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {TILE_COLUMNS} FROM items l {TILE_JOINS} WHERE l.dataset IN (SELECT id FROM datasets) AND l.key = ?1 ORDER BY l.removed_in IS NOT NULL, l.dataset LIMIT 1"
            ))
            .map_err(sql)?;
        for row in &table.rows {
            items.push(match &row[k] {
                Value::String(key) => st
                    .query_row([key], |r| tile(r, 0))
                    .optional()
                    .map_err(sql)?,
                _ => None,
            });
        }
    }
    Ok(SqlView {
        sql: sql_.to_string(),
        table: Some(table),
        more,
        error: None,
        key_column,
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{record, Fixture};

    /// Five items of two years with characters, artists and scores, and a thumbnail each.
    fn pool() -> Fixture {
        let f = Fixture::new();
        let items = items(&[
            (1, 2020, 5, "miku", "ann"),
            (2, 2020, 9, "miku", "ann"),
            (3, 2020, 1, "rin", "bob"),
            (4, 2021, 4, "rin", "ann"),
            (5, 2021, 7, "reimu", "bob"),
        ]);
        let thumbs: Vec<(String, Vec<u8>)> = (1..=5)
            .map(|i| {
                (
                    format!("danbooru-{i}.thumb.jpg"),
                    format!("thumb {i}").into_bytes(),
                )
            })
            .collect();
        publish(&f, "1", None, &items, &thumbs);
        f.merge("1");
        f
    }

    fn items(list: &[(u64, i64, i64, &str, &str)]) -> Vec<(String, Value)> {
        list.iter()
            .map(|&(post, year, score, character, artist)| {
                let mut r = record(
                    "danbooru",
                    post,
                    &[
                        ("character", &[character]),
                        ("artist", &[artist]),
                        ("general", &["solo"]),
                    ],
                );
                r["score"] = score.into();
                r["posted"] = format!("{year}-06-01T00:00:00Z").into();
                r["faces"] = serde_json::json!({"strict": [], "medium": [[0.1, 0.2, 0.3, 0.4]]});
                (format!("danbooru-{post}"), r)
            })
            .collect()
    }

    fn publish(
        f: &Fixture,
        version: &str,
        parent: Option<&str>,
        items: &[(String, Value)],
        files: &[(String, Vec<u8>)],
    ) {
        let items: Vec<(&str, Value)> =
            items.iter().map(|(k, r)| (k.as_str(), r.clone())).collect();
        let files: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        f.try_publish_with(version, parent, &items, &files)
            .expect("the release publishes");
    }

    fn keys(g: &Gallery) -> Vec<&str> {
        g.items.iter().map(|t| t.key.as_str()).collect()
    }

    fn filter(q: &str) -> Filter {
        Filter::from_query(q, &[]).unwrap()
    }

    #[test]
    fn the_gallery_filters_by_tags_ranges_and_pages_in_score_order() {
        let f = pool();
        let p = f.open_pool();
        let g = gallery(&p, &filter("")).unwrap();
        assert_eq!(
            keys(&g),
            [
                "danbooru-2",
                "danbooru-5",
                "danbooru-1",
                "danbooru-4",
                "danbooru-3"
            ]
        );
        assert_eq!((g.total, g.pages, g.missing), (5, 1, 0));
        assert_eq!(g.items[0].thumb.as_ref().unwrap().ext, "thumb.jpg");
        assert_eq!(
            keys(&gallery(&p, &filter("tags=miku")).unwrap()),
            ["danbooru-2", "danbooru-1"]
        );
        assert_eq!(
            keys(&gallery(&p, &filter("tags=ann+-miku")).unwrap()),
            ["danbooru-4"]
        );
        assert_eq!(
            keys(&gallery(&p, &filter("tags=solo+bob&year_min=2021")).unwrap()),
            ["danbooru-5"]
        );
        assert_eq!(
            keys(&gallery(&p, &filter("tags=nobody")).unwrap()),
            Vec::<&str>::new()
        );
        assert_eq!(
            keys(&gallery(&p, &filter("score_min=5&sort=key")).unwrap()),
            ["danbooru-1", "danbooru-2", "danbooru-5"]
        );
        let page = gallery(&p, &filter("per_page=2&page=2")).unwrap();
        assert_eq!(
            (keys(&page), page.pages),
            (vec!["danbooru-1", "danbooru-4"], 3)
        );
        // A typed value is a literal, never SQL.
        assert_eq!(gallery(&p, &filter("booru=x'+OR+'1'='1")).unwrap().total, 0);
    }

    #[test]
    fn an_alias_finds_the_items_of_its_tag() {
        let f = pool();
        let p = crate::pool::Pool::open(&f.pool).unwrap();
        p.connection()
            .execute(
                "INSERT INTO tag_aliases(alias, name) VALUES ('hatsune_miku', 'miku')",
                [],
            )
            .unwrap();
        assert_eq!(gallery(&p, &filter("tags=Hatsune_Miku")).unwrap().total, 2);
        let completions = complete_tags(&p, "mi", 10).unwrap();
        assert_eq!(
            completions[0],
            ("miku".to_string(), "character".to_string(), 2)
        );
        let aliases = complete_tags(&p, "hats", 10).unwrap();
        assert_eq!(aliases[0].0, "hatsune_miku → miku");
    }

    #[test]
    fn facets_count_the_view_and_the_whole_pool_from_its_count_tables() {
        let f = pool();
        let p = f.open_pool();
        let whole = facets(&p, &filter(""), 10).unwrap();
        // The same view computed from the items' tags instead of the count tables.
        let scanned = facets(&p, &filter("year_min=0"), 10).unwrap();
        assert_eq!(
            serde_json::to_value(&whole).unwrap(),
            serde_json::to_value(&scanned).unwrap()
        );
        let artists = &whole.categories[0];
        assert_eq!(
            artists.tags,
            [("ann".to_string(), 3), ("bob".to_string(), 2)]
        );
        let view = facets(&p, &filter("tags=rin"), 10).unwrap();
        let characters = &view.categories[2];
        assert_eq!(characters.category, "character");
        assert!(
            characters.tags.is_empty(),
            "the chosen tag is not offered again"
        );
        assert_eq!(
            view.categories[0].tags,
            [("ann".to_string(), 1), ("bob".to_string(), 1)]
        );
    }

    #[test]
    fn an_item_shows_its_tags_faces_files_and_history_across_releases() {
        let f = pool();
        let mut changed = items(&[(1, 2020, 50, "miku", "ann"), (2, 2020, 9, "miku", "ann")]);
        changed.extend(items(&[(6, 2022, 3, "len", "cid")]));
        publish(&f, "2", Some("1"), &changed, &[]);
        f.merge("2");
        let p = f.open_pool();
        let v = item(&p, "ds", "danbooru-1").unwrap();
        assert_eq!(v.tile.score, Some(50));
        assert_eq!(v.tags[0], ("artist".to_string(), vec!["ann".to_string()]));
        assert_eq!(
            v.faces[1],
            ("medium".to_string(), vec![[0.1, 0.2, 0.3, 0.4]])
        );
        let history: Vec<(&str, &str)> = v
            .history
            .iter()
            .map(|h| (h.version.as_str(), h.action.as_str()))
            .collect();
        assert_eq!(history, [("1", "added"), ("2", "changed")]);
        assert_eq!(
            v.history[1].fields,
            ["score"],
            "release 2 changed its score"
        );
        assert!(v.history[0].fields.is_empty());
        let exts: Vec<&str> = v.files.iter().map(|m| m.ext.as_str()).collect();
        assert_eq!(exts, ["bin", "json"], "release 2 brought no thumbnail");
        assert!(v.sample.is_none());
        let gone = item(&p, "ds", "danbooru-3").unwrap();
        assert_eq!(gone.removed_in.as_deref(), Some("2"));
        assert!(matches!(
            item(&p, "ds", "danbooru-99"),
            Err(BrowseError::NoItem { .. })
        ));

        let review = release(&p, "ds", "2", "score", 10, None).unwrap();
        let counts: Vec<(&str, u64)> = review
            .actions
            .iter()
            .map(|a| (a.action.as_str(), a.total))
            .collect();
        // Both kept items lost their thumbnail, which changes them.
        assert_eq!(
            counts,
            [
                ("added", 1),
                ("changed", 2),
                ("restored", 0),
                ("removed", 3)
            ]
        );
        let changed = &review.actions[1];
        assert_eq!(changed.items[0].key, "danbooru-1");
        assert_eq!(
            changed.fields,
            [vec!["score".to_string()], vec![]],
            "danbooru-2 lost only its thumbnail"
        );
        let highest: Vec<&str> = review
            .outliers
            .highest
            .iter()
            .map(|(t, _)| t.key.as_str())
            .collect();
        assert_eq!(
            highest,
            ["danbooru-1", "danbooru-2", "danbooru-6"],
            "release 2's own items, by score"
        );
        assert!(matches!(
            release(&p, "ds", "2", "colour", 10, None),
            Err(BrowseError::UnknownStat(_))
        ));
        assert!(matches!(
            release(&p, "ds", "9", "score", 10, None),
            Err(BrowseError::NoRelease { .. })
        ));
    }

    #[test]
    fn a_member_is_read_at_its_offset_and_checked_against_its_blake3() {
        let f = pool();
        let p = f.open_pool();
        let at = locate(&p, "ds", "danbooru-4", "thumb.jpg").unwrap();
        assert_eq!(read(&at).unwrap(), b"thumb 4");
        assert!(matches!(
            locate(&p, "ds", "danbooru-4", "png"),
            Err(BrowseError::NoMember { .. })
        ));
        let mut bytes = std::fs::read(&at.path).unwrap();
        let i = at.member.offset as usize;
        bytes[i] ^= 1;
        std::fs::write(&at.path, &bytes).unwrap();
        let e = read(&at).unwrap_err().to_string();
        assert!(e.contains("does not match its blake3"), "{e}");
    }

    #[test]
    fn items_whose_shard_is_missing_are_placeholders_and_fetch_names_their_shards() {
        let f = pool();
        let p = crate::pool::Pool::open(&f.pool).unwrap();
        let shard: String = p
            .connection()
            .query_row(
                "SELECT shard FROM items WHERE key = 'danbooru-1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        p.connection()
            .execute("UPDATE shards SET present = 0 WHERE id = ?1", [&shard])
            .unwrap();
        let g = gallery(&p, &filter("tags=miku")).unwrap();
        assert_eq!(g.missing, 2, "danbooru-1 and -2 share a shard");
        assert!(g.items.iter().all(|t| !t.present));
        assert_eq!(gallery(&p, &filter("shards=missing")).unwrap().total, 2);
        assert_eq!(gallery(&p, &filter("shards=present")).unwrap().total, 3);
        assert_eq!(
            missing_shards(&p, &filter("")).unwrap(),
            [("ds".to_string(), vec![shard])]
        );
        assert!(missing_shards(&p, &filter("tags=rin")).unwrap().is_empty());
        let at = locate(&p, "ds", "danbooru-1", "bin").unwrap();
        assert!(matches!(read(&at), Err(BrowseError::NotDownloaded { .. })));
        assert_eq!(
            head_manifest(&p, "ds").unwrap(),
            f.pool.join("ds-1.manifest.json")
        );
    }

    #[test]
    fn the_console_refuses_writes_and_pairs_keys_with_their_items() {
        let f = pool();
        let p = f.open_pool();
        let t = std::time::Duration::from_secs(5);
        let v = sql_console(&p, "SELECT key, score FROM live ORDER BY score DESC", 2, t).unwrap();
        assert!(v.more);
        assert_eq!(v.key_column, Some(0));
        assert_eq!(v.items[0].as_ref().unwrap().key, "danbooru-2");
        let e = sql_console(&p, "DELETE FROM items", 2, t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("read-only"), "{e}");
        assert_eq!(gallery(&p, &filter("")).unwrap().total, 5);
    }

    #[test]
    fn a_parade_row_links_to_the_items_behind_it() {
        let f = pool();
        let p = f.open_pool();
        let params = parade_params("characters-by-year", "year=2020", &[]).unwrap();
        let v = parade(&p, "characters-by-year", &params, 3).unwrap();
        let first = v.rows[0].as_ref().unwrap();
        assert_eq!(first.filter, "tags=miku&year_min=2020&year_max=2020");
        let keys: Vec<&str> = first.items.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["danbooru-2", "danbooru-1"]);
        let e = parade_params("tag-stats", "year=2020", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not read --year"), "{e}");
        let e = parade_params("characters-by-year", "limit=0", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("from 1 to 1000"), "{e}");
    }
}

/// A stored clustering for the cluster browser: each cluster with its characteristic
/// tags and its medoids as tiles.
#[derive(Clone, Debug, Serialize)]
pub struct ClustersView {
    pub report: crate::mine::clusters::ClustersReport,
    pub medoids: Vec<Vec<Tile>>,
}

/// Tags that grew and fell between two releases, for the trends chart, with the
/// releases one can pick between.
#[derive(Clone, Debug, Serialize)]
pub struct TrendsView {
    pub report: crate::mine::trends::TrendsReport,
    pub category: Option<String>,
    /// The dataset's merged releases, newest first.
    pub releases: Vec<String>,
}

/// Tags shown in each direction on the trends page.
pub const TRENDS_SHOWN: usize = 15;

pub fn trends(
    pool: &Pool,
    dataset: &str,
    from: Option<String>,
    to: Option<String>,
    category: Option<String>,
) -> Result<TrendsView, BrowseError> {
    let plan = crate::mine::trends::TrendsPlan {
        dataset: Some(dataset.to_string()),
        from,
        to,
        category: category.clone(),
        limit: TRENDS_SHOWN,
        min_items: 1,
    };
    let report = crate::mine::trends::trends(pool, &plan)
        .map_err(|e| BrowseError::Query(QueryError::Mine(e)))?;
    let mut st = pool
        .connection()
        .prepare(
            "SELECT r.version FROM releases r JOIN datasets d ON d.id = r.dataset
             WHERE d.name = ?1 ORDER BY r.created DESC, r.id DESC",
        )
        .map_err(sql)?;
    let releases = st
        .query_map([dataset], |r| r.get(0))
        .map_err(sql)?
        .collect::<rusqlite::Result<Vec<String>>>()
        .map_err(sql)?;
    Ok(TrendsView {
        report,
        category,
        releases,
    })
}

pub fn clusters(pool: &Pool, dataset: &str, name: &str) -> Result<ClustersView, BrowseError> {
    let report = crate::mine::clusters::show(pool, Some(dataset), name)
        .map_err(|e| BrowseError::Query(QueryError::Mine(e)))?;
    let conn = pool.connection();
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {TILE_COLUMNS} FROM items l {TILE_JOINS} WHERE d.name = ?1 AND l.key = ?2"
        ))
        .map_err(sql)?;
    let mut medoids = Vec::new();
    for c in &report.clusters {
        let mut tiles = Vec::new();
        for key in &c.medoids {
            if let Some(t) = st
                .query_row(params![dataset, key], |r| tile(r, 0))
                .optional()
                .map_err(sql)?
            {
                tiles.push(t);
            }
        }
        medoids.push(tiles);
    }
    Ok(ClustersView { report, medoids })
}
