//! Data mining over a pool, from what it already holds (docs/mining.md): related tags,
//! implications and aliases to review, trends across releases, look-alike items and
//! suggested tags.

use std::collections::HashMap;

use rusqlite::OptionalExtension;

use crate::pool::PoolError;

pub mod aliases;
pub mod clusters;
pub mod implications;
pub mod related;
pub mod scan;
pub mod similar;
pub mod suggest;
pub mod trends;

#[derive(Debug, thiserror::Error)]
pub enum MineError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("cannot read the pool: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the pool has no tag `{tag}`{hint}")]
    UnknownTag { tag: String, hint: String },
    #[error("the pool has no live items{scope}: nothing to mine")]
    Empty { scope: String },
    #[error("no dataset `{0}` in the pool")]
    UnknownDataset(String),
    #[error("the pool holds several datasets ({0}): name one with --dataset")]
    WhichDataset(String),
    #[error("dataset `{dataset}` has no merged release `{version}`{hint}")]
    UnknownRelease {
        dataset: String,
        version: String,
        hint: String,
    },
    #[error("{0}")]
    Unanswerable(String),
    #[error("release {version} is the only release of `{dataset}` in the pool: trends compare two (merge another, or name one with --from)")]
    OneRelease { dataset: String, version: String },
    #[error("the pool has no item `{0}`")]
    UnknownItem(String),
}

impl MineError {
    /// Whether the user asked for something the pool cannot answer (exit 2), rather
    /// than the pool failing to be read.
    pub fn is_usage(&self) -> bool {
        !matches!(self, MineError::Pool(_) | MineError::Sql(_))
    }
}

/// The canonical name a user's tag stands for in this pool.
pub(crate) fn canonical(conn: &rusqlite::Connection, tag: &str) -> Result<String, MineError> {
    let name = crate::name::normalize_tag(tag);
    let aliased: Option<String> = conn
        .query_row(
            "SELECT name FROM tag_aliases WHERE alias = ?1",
            [&name],
            |r| r.get(0),
        )
        .optional()?;
    Ok(aliased.unwrap_or(name))
}

/// A hint for a tag the pool does not have: the most used ones that start alike.
pub(crate) fn hint(conn: &rusqlite::Connection, tag: &str) -> Result<String, MineError> {
    let prefix: String = tag.chars().take(4).collect();
    let mut st = conn.prepare(
        "SELECT canonical FROM tag_counts WHERE canonical >= ?1 AND canonical < ?1 || char(1114111)
         GROUP BY canonical ORDER BY sum(items) DESC LIMIT 5",
    )?;
    let near: Vec<String> = st
        .query_map([&prefix], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(match near.is_empty() {
        true => String::new(),
        false => format!(" (did you mean {}?)", near.join(", ")),
    })
}

pub(crate) fn datasets(
    conn: &rusqlite::Connection,
    name: Option<&str>,
) -> Result<Vec<i64>, MineError> {
    let ids: Vec<i64> = match name {
        Some(n) => {
            let id: Option<i64> = conn
                .query_row("SELECT id FROM datasets WHERE name = ?1", [n], |r| r.get(0))
                .optional()?;
            vec![id.ok_or_else(|| MineError::UnknownDataset(n.to_string()))?]
        }
        None => {
            let mut st = conn.prepare("SELECT id FROM datasets ORDER BY id")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        }
    };
    Ok(ids)
}

/// The one dataset a mining command is about: the one named, or the pool's only one.
pub(crate) fn one_dataset(
    conn: &rusqlite::Connection,
    name: Option<&str>,
) -> Result<(i64, String), MineError> {
    if let Some(n) = name {
        let id = datasets(conn, Some(n))?[0];
        return Ok((id, n.to_string()));
    }
    let mut st = conn.prepare("SELECT id, name FROM datasets ORDER BY name")?;
    let all: Vec<(i64, String)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    match all.len() {
        0 => Err(MineError::Empty {
            scope: String::new(),
        }),
        1 => Ok(all.into_iter().next().expect("one")),
        _ => Err(MineError::WhichDataset(
            all.into_iter()
                .map(|(_, n)| n)
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// Live items of a dataset after its newest merge, as the merge recorded them.
pub(crate) fn live_items(conn: &rusqlite::Connection, dataset: i64) -> Result<u64, MineError> {
    let n: Option<i64> = conn
        .query_row(
            "SELECT items FROM release_live WHERE dataset = ?1 ORDER BY release DESC LIMIT 1",
            [dataset],
            |r| r.get(0),
        )
        .optional()?;
    Ok(n.unwrap_or(0).max(0) as u64)
}

/// The canonical tags (name, category) of a scope, with their live items, and which
/// pool tag ids spell each: what the pair analyses count with.
pub(crate) struct Vocabulary {
    pub keys: Vec<(String, String)>,
    pub items: Vec<u64>,
    pub of_tag: HashMap<i64, u32>,
}

impl Vocabulary {
    pub fn read(conn: &rusqlite::Connection, datasets: &[i64]) -> Result<Self, MineError> {
        let mut index: HashMap<(String, String), u32> = HashMap::new();
        let mut v = Vocabulary {
            keys: Vec::new(),
            items: Vec::new(),
            of_tag: HashMap::new(),
        };
        let mut st = conn.prepare(
            "SELECT canonical, category, sum(items) FROM tag_counts WHERE dataset = ?1
             GROUP BY canonical, category",
        )?;
        for d in datasets {
            let mut rows = st.query([d])?;
            while let Some(r) = rows.next()? {
                let key: (String, String) = (r.get(0)?, r.get(1)?);
                let n = r.get::<_, i64>(2)?.max(0) as u64;
                let next = v.keys.len() as u32;
                let i = *index.entry(key.clone()).or_insert_with(|| {
                    v.keys.push(key);
                    v.items.push(0);
                    next
                });
                v.items[i as usize] += n;
            }
        }
        let mut st = conn.prepare("SELECT id, canonical, category FROM tags")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let key: (String, String) = (r.get(1)?, r.get(2)?);
            if let Some(&i) = index.get(&key) {
                v.of_tag.insert(r.get(0)?, i);
            }
        }
        Ok(v)
    }

    /// Reads each item's tags by primary key and hands them to `visit` as sorted,
    /// distinct vocabulary ids.
    pub fn each_item(
        &self,
        conn: &rusqlite::Connection,
        items: &[i64],
        mut visit: impl FnMut(i64, &[u32]),
    ) -> Result<(), MineError> {
        let mut st = conn.prepare_cached("SELECT tag FROM item_tags WHERE item = ?1")?;
        let mut set: Vec<u32> = Vec::new();
        for &item in items {
            set.clear();
            for t in st.query_map([item], |r| r.get::<_, i64>(0))? {
                if let Some(&v) = self.of_tag.get(&t?) {
                    set.push(v);
                }
            }
            set.sort_unstable();
            set.dedup();
            visit(item, &set);
        }
        Ok(())
    }
}

/// The live items of the datasets, by id.
pub(crate) fn live_ids(
    conn: &rusqlite::Connection,
    datasets: &[i64],
) -> Result<Vec<i64>, MineError> {
    let mut st = conn.prepare(
        "SELECT id FROM items WHERE dataset = ?1 AND removed_in IS NULL AND duplicate_of IS NULL",
    )?;
    let mut ids = Vec::new();
    for d in datasets {
        for id in st.query_map([d], |r| r.get(0))? {
            ids.push(id?);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// One read transaction around an analysis: SQLite then takes its locks and checks
/// the log once, and keeps its page cache between statements, where each statement on
/// its own is a transaction that starts cold (thousands of index probes read the same
/// inner pages again each time). Nothing when a transaction is already open, or when
/// the connection may not open one (a hit-parade runs under the read-only authorizer
/// of `query`): the analysis is then as right, only slower.
pub(crate) struct Snapshot<'c>(Option<&'c rusqlite::Connection>);

impl<'c> Snapshot<'c> {
    pub fn begin(conn: &'c rusqlite::Connection) -> Result<Self, MineError> {
        if !conn.is_autocommit() || conn.execute_batch("BEGIN").is_err() {
            return Ok(Self(None));
        }
        Ok(Self(Some(conn)))
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.0 {
            // A read transaction: ending it cannot lose anything.
            let _ = conn.execute_batch("COMMIT");
        }
    }
}
