//! Exporting a pool's live items with their tags, for tools that take over when a pool
//! outgrows one SQLite file: TSV for spreadsheets and `cut`, JSON Lines for pandas,
//! DuckDB and Spark (`read_json`), one record per line with its tags by category, and
//! Parquet with typed columns for DuckDB, Polars, pandas and Spark.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{stream_sql, QueryError};
use crate::files::{file_error, FileError};
use crate::pool::Pool;
use crate::progress::{Progress, Unit};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Tsv,
    /// RFC 4180 CSV, with a header row.
    Csv,
    Jsonl,
    /// Apache Parquet: typed columns, zstd, row groups of 100,000 items.
    Parquet,
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
    #[error("failed to write Parquet file `{path}`: {message}")]
    Parquet { path: PathBuf, message: String },
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

/// Each tag's category (its index in `TAG_CATEGORIES`) and canonical name, read once:
/// an item's tags are then one lookup of its ids, where five correlated subqueries an
/// item (one per category, each joining `tags`) took most of a million-item export.
/// Names are numbered in their sorted order, so an item's tags sort as numbers.
struct TagNames {
    /// Tag id -> (category, rank of its canonical name).
    ids: std::collections::HashMap<i64, (usize, u32), IdHash>,
    /// Distinct canonical names, sorted: a rank's name.
    names: Vec<String>,
}

/// Tag ids are SQLite rowids, not chosen by anyone who could collide them on purpose:
/// a multiplicative hash is enough, and an export looks up a dozen an item.
#[derive(Default, Clone, Copy)]
struct IdHash;

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(26)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_i64(&mut self, n: i64) {
        self.0 = n as u64;
    }
}

impl TagNames {
    fn load(pool: &Pool) -> Result<Self, QueryError> {
        let sql_err = |e: rusqlite::Error| QueryError::Sql(e.to_string());
        let mut st = pool
            .connection()
            .prepare("SELECT id, category, canonical FROM tags")
            .map_err(sql_err)?;
        let mut rows = st.query([]).map_err(sql_err)?;
        let mut tags: Vec<(String, i64, usize)> = Vec::new();
        while let Some(r) = rows.next().map_err(sql_err)? {
            let category: String = r.get(1).map_err(sql_err)?;
            if let Some(c) = TAG_CATEGORIES.iter().position(|k| *k == category) {
                tags.push((r.get(2).map_err(sql_err)?, r.get(0).map_err(sql_err)?, c));
            }
        }
        tags.sort_unstable();
        let mut ids = std::collections::HashMap::with_capacity_and_hasher(tags.len(), IdHash);
        let mut names: Vec<String> = Vec::new();
        for (name, id, c) in tags {
            if names.last() != Some(&name) {
                names.push(name);
            }
            ids.insert(id, (c, (names.len() - 1) as u32));
        }
        Ok(Self { ids, names })
    }

    /// `item`'s tags as one space-separated, sorted list of distinct canonical names per
    /// category, `Null` where it has none.
    fn of(
        &self,
        st: &mut rusqlite::Statement<'_>,
        item: i64,
    ) -> rusqlite::Result<[Value; TAG_CATEGORIES.len()]> {
        let mut ranks: [Vec<u32>; TAG_CATEGORIES.len()] = Default::default();
        let mut rows = st.query([item])?;
        while let Some(r) = rows.next()? {
            if let Some(&(c, rank)) = self.ids.get(&r.get::<_, i64>(0)?) {
                ranks[c].push(rank);
            }
        }
        Ok(ranks.map(|mut n| {
            n.sort_unstable();
            n.dedup();
            let Some((first, rest)) = n.split_first() else {
                return Value::Null;
            };
            let mut joined = self.names[*first as usize].clone();
            for r in rest {
                joined.push(' ');
                joined.push_str(&self.names[*r as usize]);
            }
            Value::String(joined)
        }))
    }
}

/// Streams the exported rows: `COLUMNS`, then the tags by category, then the record.
fn stream_rows(
    pool: &Pool,
    plan: &ExportPlan,
    mut visit: impl FnMut(&mut [Value]) -> std::io::Result<()>,
) -> Result<(), QueryError> {
    let tags = TagNames::load(pool)?;
    // One dataset at a time, in name order: each is then one walk of the pool's
    // (dataset, key) index, where ordering by the dataset's name made SQLite sort every
    // row, records included, in a temporary B-tree.
    let sql = format!(
        "SELECT l.id, d.name AS dataset, l.key, l.booru, l.post_id, l.md5, l.rating, l.score, l.favs, l.posted, l.year,
                l.width, l.height, l.bytes, l.volume, l.quality, l.faces, l.composition, l.shard,
                ra.version AS added_in, rc.version AS changed_in, l.record
         FROM live l JOIN datasets d ON d.id = l.dataset
         JOIN releases ra ON ra.id = l.added_in LEFT JOIN releases rc ON rc.id = l.changed_in
         WHERE l.dataset = :dataset AND ({})
         ORDER BY l.key",
        plan.condition.as_deref().unwrap_or("1")
    );
    let datasets: Vec<i64> = pool
        .connection()
        .prepare("SELECT id FROM datasets ORDER BY name")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| QueryError::Sql(e.to_string()))?;
    let mut row: Vec<Value> = Vec::with_capacity(COLUMNS.len() + TAG_CATEGORIES.len() + 1);
    let mut item_tags = pool
        .connection()
        .prepare("SELECT tag FROM item_tags WHERE item = ?1")
        .map_err(|e| QueryError::Sql(e.to_string()))?;
    for dataset in datasets {
        let named = [(":dataset", rusqlite::types::Value::Integer(dataset))];
        stream_sql(pool, &sql, &named, |values| {
            let id = values[0].as_i64().unwrap_or_default();
            row.clear();
            row.extend_from_slice(&values[1..=COLUMNS.len()]);
            row.extend(tags.of(&mut item_tags, id).map_err(std::io::Error::other)?);
            row.push(values[COLUMNS.len() + 1].clone());
            visit(&mut row)
        })?;
    }
    Ok(())
}

pub fn run(plan: &ExportPlan, progress: &dyn Progress) -> Result<ExportReport, ExportError> {
    let pool = Pool::open_read_only(&plan.pool).map_err(QueryError::from)?;
    progress.stage("exporting", 0, Unit::Items);
    if plan.format == ExportFormat::Parquet {
        return parquet::export(&pool, plan, progress);
    }
    let tmp = plan.out.with_extension("part");
    let file = std::fs::File::create(&tmp).map_err(file_error("write", &tmp))?;
    let mut w = std::io::BufWriter::new(file);
    let mut header: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
    header.extend(TAG_CATEGORIES.iter().map(|c| format!("tags_{c}")));
    match plan.format {
        ExportFormat::Tsv => {
            writeln!(w, "{}", header.join("\t")).map_err(file_error("write", &tmp))?
        }
        ExportFormat::Csv => super::write_csv(&mut w, header.iter().map(|c| c.as_str()))
            .map_err(file_error("write", &tmp))?,
        _ => {}
    }
    let mut items = 0u64;
    let streamed = stream_rows(&pool, plan, |row| {
        items += 1;
        progress.advance(1);
        match plan.format {
            ExportFormat::Tsv => {
                let fields: Vec<String> = row[..row.len() - 1].iter().map(tsv_field).collect();
                writeln!(w, "{}", fields.join("\t"))
            }
            ExportFormat::Csv => {
                let fields: Vec<String> = row[..row.len() - 1].iter().map(super::text).collect();
                super::write_csv(&mut w, fields.iter().map(|c| c.as_str()))
            }
            ExportFormat::Parquet => unreachable!("Parquet is written by `parquet::export`"),
            ExportFormat::Jsonl => {
                let mut obj = Map::new();
                for (name, v) in COLUMNS.iter().zip(row.iter()) {
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
    commit(&tmp, plan, finished, items)
}

/// Ends an export written to `tmp`: renamed into place when `finished` is Ok, removed
/// otherwise, so a failed export never leaves a partial file under the wanted name.
fn commit(
    tmp: &std::path::Path,
    plan: &ExportPlan,
    finished: Result<(), ExportError>,
    items: u64,
) -> Result<ExportReport, ExportError> {
    if let Err(e) = finished {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    std::fs::rename(tmp, &plan.out).map_err(file_error("write", &plan.out))?;
    Ok(ExportReport {
        items,
        out: plan.out.clone(),
    })
}

mod parquet {
    //! Parquet output: flat, typed, nullable columns in the order of `COLUMNS`, then the
    //! tags by category (space-separated, as in TSV) and the record as JSON text.

    use std::sync::Arc;

    use parquet::basic::{Compression, ZstdLevel};
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use serde_json::Value;

    use super::{ExportError, ExportPlan, ExportReport, COLUMNS, TAG_CATEGORIES};
    use crate::files::file_error;
    use crate::pool::Pool;
    use crate::progress::Progress;

    const ROW_GROUP: usize = 100_000;
    const INTEGERS: &[&str] = &[
        "post_id", "score", "favs", "year", "width", "height", "bytes", "faces",
    ];
    const DOUBLES: &[&str] = &["quality"];

    enum Column {
        /// A row group's texts end to end, where each ends, and the definition levels:
        /// one allocation a column rather than one a value, which the writer thread
        /// would free (glibc's frees across threads were a fifth of an export).
        Text(Vec<u8>, Vec<usize>, Vec<i16>),
        Int(Vec<i64>, Vec<i16>),
        Double(Vec<f64>, Vec<i16>),
    }

    impl Column {
        fn push(&mut self, v: Value) {
            match self {
                Column::Text(buf, ends, defs) => {
                    match v {
                        Value::Null => defs.push(0),
                        Value::String(s) => {
                            buf.extend_from_slice(s.as_bytes());
                            ends.push(buf.len());
                            defs.push(1);
                        }
                        other => {
                            buf.extend_from_slice(other.to_string().as_bytes());
                            ends.push(buf.len());
                            defs.push(1);
                        }
                    };
                }
                Column::Int(values, defs) => {
                    let n = v.as_i64().or_else(|| v.as_f64().map(|f| f as i64));
                    defs.push(i16::from(n.is_some()));
                    values.extend(n);
                }
                Column::Double(values, defs) => {
                    let f = v.as_f64();
                    defs.push(i16::from(f.is_some()));
                    values.extend(f);
                }
            }
        }
    }

    fn names() -> Vec<String> {
        let mut names: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
        names.extend(TAG_CATEGORIES.iter().map(|c| format!("tags_{c}")));
        names.push("record".into());
        names
    }

    fn schema() -> String {
        let fields: Vec<String> = names()
            .iter()
            .map(|n| {
                if INTEGERS.contains(&n.as_str()) {
                    format!("OPTIONAL INT64 {n};")
                } else if DOUBLES.contains(&n.as_str()) {
                    format!("OPTIONAL DOUBLE {n};")
                } else {
                    format!("OPTIONAL BYTE_ARRAY {n} (UTF8);")
                }
            })
            .collect();
        format!("message item {{ {} }}", fields.join(" "))
    }

    fn empty_columns() -> Vec<Column> {
        names()
            .iter()
            .map(|n| {
                if INTEGERS.contains(&n.as_str()) {
                    Column::Int(Vec::new(), Vec::new())
                } else if DOUBLES.contains(&n.as_str()) {
                    Column::Double(Vec::new(), Vec::new())
                } else {
                    Column::Text(Vec::new(), Vec::new(), Vec::new())
                }
            })
            .collect()
    }

    fn write_group(
        writer: &mut SerializedFileWriter<std::fs::File>,
        columns: &[Column],
    ) -> parquet::errors::Result<()> {
        let mut group = writer.next_row_group()?;
        for column in columns {
            let mut w = group
                .next_column()?
                .ok_or_else(|| parquet::errors::ParquetError::General("missing column".into()))?;
            match column {
                Column::Text(buf, ends, d) => {
                    let all = bytes::Bytes::copy_from_slice(buf);
                    let mut start = 0;
                    let values: Vec<ByteArray> = ends
                        .iter()
                        .map(|&end| {
                            let v = ByteArray::from(all.slice(start..end));
                            start = end;
                            v
                        })
                        .collect();
                    w.typed::<ByteArrayType>()
                        .write_batch(&values, Some(d), None)?;
                }
                Column::Int(v, d) => {
                    w.typed::<Int64Type>().write_batch(v, Some(d), None)?;
                }
                Column::Double(v, d) => {
                    w.typed::<DoubleType>().write_batch(v, Some(d), None)?;
                }
            }
            w.close()?;
        }
        group.close()?;
        Ok(())
    }

    pub fn export(
        pool: &Pool,
        plan: &ExportPlan,
        progress: &dyn Progress,
    ) -> Result<ExportReport, ExportError> {
        let tmp = plan.out.with_extension("part");
        let err = |e: parquet::errors::ParquetError| ExportError::Parquet {
            path: plan.out.clone(),
            message: e.to_string(),
        };
        let schema = Arc::new(parse_message_type(&schema()).map_err(err)?);
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(err)?))
                .set_created_by(concat!("seedpool ", env!("CARGO_PKG_VERSION")).into())
                .build(),
        );
        let file = std::fs::File::create(&tmp).map_err(file_error("write", &tmp))?;
        let mut writer = SerializedFileWriter::new(file, schema, props).map_err(err)?;
        let mut columns = empty_columns();
        let mut rows_in_group = 0usize;
        let mut items = 0u64;
        // Row groups are encoded and compressed on a second thread while the next is
        // read from the pool: the two take about as long as each other. One group waits
        // in the channel at most, so memory stays at three groups whatever the pool's size.
        let (groups, arriving) = std::sync::mpsc::sync_channel::<Vec<Column>>(1);
        let finished = std::thread::scope(|scope| {
            let tmp = &tmp;
            let written = scope.spawn(move || -> Result<(), ExportError> {
                for columns in arriving {
                    write_group(&mut writer, &columns).map_err(err)?;
                }
                let file = writer.into_inner().map_err(err)?;
                file.sync_all()
                    .map_err(|e| ExportError::from(file_error("write", tmp)(e)))
            });
            let streamed = super::stream_rows(pool, plan, |row| {
                for (column, value) in columns.iter_mut().zip(row) {
                    column.push(std::mem::take(value));
                }
                rows_in_group += 1;
                items += 1;
                progress.advance(1);
                if rows_in_group == ROW_GROUP {
                    rows_in_group = 0;
                    // A send fails only when the writer stopped on an error, which
                    // `written` returns below.
                    let full = std::mem::replace(&mut columns, empty_columns());
                    groups
                        .send(full)
                        .map_err(|_| std::io::Error::other("the Parquet writer stopped"))?;
                }
                Ok(())
            });
            if streamed.is_ok() && rows_in_group > 0 {
                let _ = groups.send(std::mem::take(&mut columns));
            }
            drop(groups);
            let written = written.join().unwrap_or_else(|_| {
                Err(err(parquet::errors::ParquetError::General(
                    "the writer panicked".into(),
                )))
            });
            // The writer's own error explains a stopped stream better than the stream's.
            written.and(streamed.map_err(ExportError::from))
        });
        super::commit(&tmp, plan, finished, items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{record, Fixture};

    #[test]
    fn tags_come_sorted_and_distinct_by_category_and_rows_in_key_order() {
        let f = Fixture::new();
        f.publish(
            "1",
            None,
            &[
                (
                    "b-2",
                    record(
                        "b",
                        2,
                        &[
                            ("general", &["solo", "Blue_Hair", "blue_hair", "1girl"]),
                            ("character", &["miku"]),
                            ("other", &["ignored"]),
                        ],
                    ),
                ),
                ("a-1", record("a", 1, &[("artist", &["someone"])])),
            ],
        );
        f.merge("1");
        let out = f.dir.path().join("items.tsv");
        let plan = |condition: Option<&str>| ExportPlan {
            pool: f.pool.clone(),
            format: ExportFormat::Tsv,
            out: out.clone(),
            condition: condition.map(String::from),
        };
        let report = run(&plan(None), &crate::progress::Silent).unwrap();
        assert_eq!(report.items, 2);
        let text = std::fs::read_to_string(&out).unwrap();
        let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
        let col = |name: &str| rows[0].iter().position(|h| *h == name).unwrap();
        assert_eq!(rows[1][col("key")], "a-1");
        assert_eq!(rows[1][col("tags_artist")], "someone");
        assert_eq!(rows[1][col("tags_general")], "");
        assert_eq!(rows[2][col("key")], "b-2");
        assert_eq!(rows[2][col("tags_general")], "1girl blue_hair solo");
        assert_eq!(rows[2][col("tags_character")], "miku");
        // A condition may name the dataset through `d`, as before rows went dataset by dataset.
        let report = run(
            &plan(Some("d.name = 'ds' AND l.key > 'a-1'")),
            &crate::progress::Silent,
        )
        .unwrap();
        assert_eq!(report.items, 1);
    }
}
