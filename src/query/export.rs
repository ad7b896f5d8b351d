//! Exporting a pool's live items with their tags, for tools that take over when a pool
//! outgrows one SQLite file: TSV for spreadsheets and `cut`, JSON Lines for pandas,
//! DuckDB and Spark (`read_json`), one record per line with its tags by category.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{stream_sql, QueryError};
use crate::pool::Pool;
use crate::progress::{Progress, Unit};
use crate::store::{file_error, FileError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Tsv,
    Jsonl,
}

#[derive(Clone, Debug)]
pub struct ExportPlan {
    pub pool: PathBuf,
    pub format: ExportFormat,
    pub out: PathBuf,
    /// An SQL condition over `live` (alias `l`); all live items when `None`.
    pub condition: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExportReport {
    pub items: u64,
    pub out: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    File(#[from] FileError),
}

/// Exported columns, in order; tag columns follow.
const COLUMNS: &[&str] = &[
    "dataset",
    "key",
    "booru",
    "post_id",
    "md5",
    "rating",
    "score",
    "favs",
    "posted",
    "year",
    "width",
    "height",
    "bytes",
    "volume",
    "quality",
    "faces",
    "composition",
    "shard",
    "added_in",
    "changed_in",
];
const TAG_CATEGORIES: &[&str] = &["artist", "copyright", "character", "general", "meta"];

fn tsv_field(v: &Value) -> String {
    let s = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    s.replace(['\t', '\n', '\r'], " ")
}

pub fn run(plan: &ExportPlan, progress: &dyn Progress) -> Result<ExportReport, ExportError> {
    let pool = Pool::open_read_only(&plan.pool).map_err(QueryError::from)?;
    let tag_cols: Vec<String> = TAG_CATEGORIES
        .iter()
        .map(|c| {
            format!(
                "(SELECT group_concat(name, ' ') FROM (SELECT DISTINCT t.canonical AS name FROM item_tags it JOIN tags t ON t.id = it.tag
                   WHERE it.item = l.id AND t.category = '{c}' ORDER BY t.name)) AS tags_{c}"
            )
        })
        .collect();
    let sql = format!(
        "SELECT d.name AS dataset, l.key, l.booru, l.post_id, l.md5, l.rating, l.score, l.favs, l.posted, l.year,
                l.width, l.height, l.bytes, l.volume, l.quality, l.faces, l.composition, l.shard,
                ra.version AS added_in, rc.version AS changed_in, {}, l.record
         FROM live l JOIN datasets d ON d.id = l.dataset
         JOIN releases ra ON ra.id = l.added_in LEFT JOIN releases rc ON rc.id = l.changed_in
         WHERE ({})
         ORDER BY d.name, l.key",
        tag_cols.join(", "),
        plan.condition.as_deref().unwrap_or("1")
    );
    progress.stage("exporting", 0, Unit::Items);
    let tmp = plan.out.with_extension("part");
    let file = std::fs::File::create(&tmp).map_err(file_error("write", &tmp))?;
    let mut w = std::io::BufWriter::new(file);
    if plan.format == ExportFormat::Tsv {
        let mut header: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
        header.extend(TAG_CATEGORIES.iter().map(|c| format!("tags_{c}")));
        writeln!(w, "{}", header.join("\t")).map_err(file_error("write", &tmp))?;
    }
    let mut items = 0u64;
    let streamed = stream_sql(&pool, &sql, &[], |row| {
        items += 1;
        progress.advance(1);
        match plan.format {
            ExportFormat::Tsv => {
                let fields: Vec<String> = row[..row.len() - 1].iter().map(tsv_field).collect();
                writeln!(w, "{}", fields.join("\t"))
            }
            ExportFormat::Jsonl => {
                let mut obj = Map::new();
                for (name, v) in COLUMNS.iter().zip(row) {
                    obj.insert(name.to_string(), v.clone());
                }
                let mut tags = Map::new();
                for (i, c) in TAG_CATEGORIES.iter().enumerate() {
                    let names: Vec<Value> = row[COLUMNS.len() + i]
                        .as_str()
                        .map(|s| s.split(' ').map(|t| Value::String(t.into())).collect())
                        .unwrap_or_default();
                    tags.insert(c.to_string(), Value::Array(names));
                }
                obj.insert("tags".into(), Value::Object(tags));
                let record = row
                    .last()
                    .and_then(Value::as_str)
                    .and_then(|r| serde_json::from_str(r).ok());
                obj.insert("record".into(), record.unwrap_or(Value::Null));
                serde_json::to_writer(&mut w, &obj).map_err(std::io::Error::other)?;
                writeln!(w)
            }
        }
    });
    let finished = streamed.map_err(ExportError::from).and_then(|_| {
        w.flush()
            .and_then(|()| w.get_ref().sync_all())
            .map_err(|e| file_error("write", &tmp)(e).into())
    });
    if let Err(e) = finished {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &plan.out).map_err(file_error("write", &plan.out))?;
    Ok(ExportReport {
        items,
        out: plan.out.clone(),
    })
}
