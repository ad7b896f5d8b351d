//! Item vectors (docs/mining.md, "Vectors"): what `mine similar --by stats|embedding`
//! and `mine clusters --by stats|embedding` compare. Each dataset has one space of
//! image-statistics vectors, made from every record's `stats` with fixed scales (so a
//! vector never changes when other items arrive), and one space per embedder (the
//! record's `embedder.space`: vectors of different models or inputs are never
//! compared). Merges write the vectors of the items they bring and drop those of the
//! items they change or remove. A space's vectors lie together, in item order (the
//! table is keyed by (space, item)), so a scan of one reads that space alone.

use rusqlite::{params, Connection};
use serde_json::Value;

use crate::imaging::embedding as embedder;

/// The statistics space's name; its number changes with the features' definition.
pub const STATS_MODEL: &str = "stats-1";
pub const STATS_DIMS: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Stats,
    Embedding,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Stats => "stats",
            Self::Embedding => "embedding",
        }
    }
}

/// A record's `stats` as a vector: each statistic on a fixed scale to about 0-1, so
/// that Euclidean distance weighs them alike. `None` when a statistic is missing.
pub fn stats_vector(stats: &Value) -> Option<Vec<f32>> {
    let f = |k: &str| stats.get(k).and_then(Value::as_f64);
    let rgb = stats.get("rgb_mean")?.as_array()?;
    let trim = stats.get("trim")?.as_array()?;
    let channel = |i: usize| rgb.get(i).and_then(Value::as_f64);
    let trimmed = trim.get(2)?.as_f64()? * trim.get(3)?.as_f64()?;
    let v = [
        f("entropy")? / 8.0,
        f("mean")? / 255.0,
        f("std")? / 128.0,
        (f("skewness")? / 2.0).tanh(),
        (f("colors")? + 1.0).log2() / 18.0,
        f("chroma_mean")? / 255.0,
        f("chroma_max")? / 255.0,
        channel(0)? / 255.0,
        channel(1)? / 255.0,
        channel(2)? / 255.0,
        f("edges")?.max(0.0).ln_1p() / 7.3,
        trimmed,
    ];
    v.iter()
        .all(|x| x.is_finite())
        .then(|| v.iter().map(|&x| x as f32).collect())
}

/// A vector's `item_vectors.vector`: the records' float16 encoding, without base64.
pub use crate::imaging::embedding::{from_f16 as from_blob, to_f16 as to_blob};

pub fn sql_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "seedpool_stats_vector",
        1,
        FunctionFlags::SQLITE_UTF8
            | FunctionFlags::SQLITE_DETERMINISTIC
            | FunctionFlags::SQLITE_INNOCUOUS,
        |ctx| {
            Ok(match ctx.get_raw(0) {
                rusqlite::types::ValueRef::Text(t) => serde_json::from_slice::<Value>(t)
                    .ok()
                    .and_then(|s| stats_vector(&s))
                    .map(|v| to_blob(&v)),
                _ => None,
            })
        },
    )
}

/// The id of a dataset's space, made when first needed.
fn space(
    conn: &Connection,
    dataset: i64,
    kind: Kind,
    model: &str,
    dims: usize,
    about: Option<&str>,
) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT OR IGNORE INTO vector_spaces(dataset, kind, model, dims, about) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![dataset, kind.name(), model, dims as i64, about],
    )?;
    conn.query_row(
        "SELECT id FROM vector_spaces WHERE dataset = ?1 AND kind = ?2 AND model = ?3",
        params![dataset, kind.name(), model],
        |r| r.get(0),
    )
}

/// What one merge did to the vectors.
#[derive(Debug, Default)]
pub struct Written {
    pub vectors: u64,
    /// Records whose `embedding` was not a vector seedpool accepts, or whose length
    /// differs from its space's: left without one.
    pub refused: u64,
}

/// Drops the vectors of the items `dropped` selects (removed or changed), then writes
/// those of the items `added` selects from their records. The caller's transaction
/// holds both.
pub fn write(
    conn: &Connection,
    dataset: i64,
    dropped: &str,
    added: &str,
) -> rusqlite::Result<Written> {
    conn.execute(
        &format!(
            "DELETE FROM item_vectors WHERE space IN (SELECT id FROM vector_spaces WHERE dataset = ?1)
             AND item IN ({dropped})"
        ),
        [dataset],
    )?;
    let stats_space = space(conn, dataset, Kind::Stats, STATS_MODEL, STATS_DIMS, None)?;
    let mut spaces: std::collections::HashMap<String, (i64, usize)> = Default::default();
    let mut written = Written::default();
    let mut read = conn.prepare(&format!(
        "SELECT i.id, json_extract(r.record, '$.stats', '$.embedding', '$.embedder')
         FROM items i JOIN records r ON r.id = i.record_id
         WHERE i.id IN ({added}) ORDER BY i.id"
    ))?;
    let mut rows = read.query([])?;
    let mut put = crate::pool::RowBatch::new(
        conn,
        "INSERT OR REPLACE INTO item_vectors(space, item, vector)",
        3,
        "",
    )?;
    while let Some(row) = rows.next()? {
        let item: i64 = row.get(0)?;
        let Some(parts) = row
            .get::<_, Option<String>>(1)?
            .and_then(|t| serde_json::from_str::<[Value; 3]>(&t).ok())
        else {
            continue;
        };
        let [stats, embedding, embedder] = parts;
        if let Some(v) = stats_vector(&stats) {
            put.push([stats_space.into(), item.into(), to_blob(&v).into()])?;
            written.vectors += 1;
        }
        let Some(text) = embedding.as_str() else {
            continue;
        };
        let model = embedder
            .get("space")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty() && m.len() <= 64);
        let (Some(model), Ok(v)) = (model, embedder::decode(text)) else {
            written.refused += 1;
            continue;
        };
        let known = match spaces.get(model) {
            Some(&s) => s,
            None => {
                let about = embedder.to_string();
                let about = (about.len() <= 4096).then_some(about);
                let id = space(
                    conn,
                    dataset,
                    Kind::Embedding,
                    model,
                    v.len(),
                    about.as_deref(),
                )?;
                let dims: i64 =
                    conn.query_row("SELECT dims FROM vector_spaces WHERE id = ?1", [id], |r| {
                        r.get(0)
                    })?;
                spaces.insert(model.to_string(), (id, dims as usize));
                (id, dims as usize)
            }
        };
        if known.1 != v.len() {
            written.refused += 1;
            continue;
        }
        put.push([known.0.into(), item.into(), to_blob(&v).into()])?;
        written.vectors += 1;
    }
    put.finish()?;
    Ok(written)
}

/// A space's description.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Space {
    pub id: i64,
    pub kind: Kind,
    pub dims: usize,
}

/// The item's vector of `kind` and its space (the lowest-numbered, where an item has
/// vectors of several embedders).
pub fn item_vector(
    conn: &Connection,
    item: i64,
    kind: Kind,
) -> rusqlite::Result<Option<(Space, Vec<f32>)>> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached(
        "SELECT s.id, s.dims, v.vector FROM item_vectors v JOIN vector_spaces s ON s.id = v.space
         WHERE v.item = ?1 AND s.kind = ?2 ORDER BY s.id LIMIT 1",
    )?
    .query_row(params![item, kind.name()], |r| {
        Ok((
            Space {
                id: r.get(0)?,
                kind,
                dims: r.get::<_, i64>(1)? as usize,
            },
            from_blob(&r.get::<_, Vec<u8>>(2)?),
        ))
    })
    .optional()
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_make_a_vector_on_fixed_scales() {
        let stats = serde_json::json!({
            "trim": [0.0, 0.0, 1.0, 0.5], "entropy": 4.0, "mean": 255.0, "std": 64.0,
            "skewness": 0.0, "colors": 3.0, "chroma_mean": 0.0, "chroma_max": 255.0,
            "rgb_mean": [255.0, 0.0, 51.0], "edges": 0.0,
        });
        let v = stats_vector(&stats).unwrap();
        assert_eq!(v.len(), STATS_DIMS);
        let want = [
            0.5,
            1.0,
            0.5,
            0.0,
            2.0 / 18.0,
            0.0,
            1.0,
            1.0,
            0.0,
            0.2,
            0.0,
            0.5,
        ];
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{v:?}");
        }
        assert_eq!(from_blob(&to_blob(&v)).len(), STATS_DIMS);
        let mut partial = stats.clone();
        partial.as_object_mut().unwrap().remove("edges");
        assert!(stats_vector(&partial).is_none());
    }
}
