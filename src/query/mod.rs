//! Queries over a pool: any read-only SQL, and named "hit-parades".
//!
//! The pool is opened read-only, and an SQLite authorizer allows reads only: a query
//! that would write, attach a file or change a pragma is refused with the action named,
//! before it runs. Results are small tables printed as text, CSV or JSON.

pub mod browse;
pub mod export;
pub mod extract;
pub mod filter;
pub mod parades;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::types::ValueRef;
use serde_json::Value;

use crate::pool::{Pool, PoolError};
use crate::usersql::{read_only_guard, second_statement, time_limit};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("queries are read-only: {0} is refused")]
    Write(String),
    #[error("invalid SQL: {0}")]
    Sql(String),
    #[error("the SQL holds more than one statement (`{}` follows the first); give one statement", crate::name::shown(.0))]
    Statements(String),
    #[error("the query ran longer than {0:?} and was stopped; pass --timeout to give it longer")]
    Timeout(std::time::Duration),
    #[error("unknown query `{0}`; `seedpool query --list` lists the named queries")]
    Unknown(String),
    #[error("{parade} does not read {flag}; it reads --dataset, {reads}")]
    Unread {
        parade: &'static str,
        flag: &'static str,
        reads: String,
    },
    #[error("failed to write the results")]
    Output(#[source] std::io::Error),
    #[error(transparent)]
    Mine(#[from] crate::mine::MineError),
    #[error("{parade}: {problem}")]
    Param {
        parade: &'static str,
        problem: String,
    },
}

/// Parameters the named queries understand.
#[derive(Clone, Debug, Default)]
pub struct Params {
    pub dataset: Option<String>,
    pub tags: Vec<String>,
    pub year: Option<i64>,
    pub booru: Option<String>,
    pub metric: Option<String>,
    pub composition: Option<String>,
    pub portraits: bool,
    pub limit: Option<u64>,
}

#[derive(Clone, Debug)]
pub enum What {
    Sql(String),
    Named(String),
}

#[derive(Clone, Debug)]
pub struct QueryPlan {
    pub pool: PathBuf,
    pub what: What,
    pub params: Params,
    /// Stop the query after this long.
    pub timeout: Option<std::time::Duration>,
}

/// The default time limit of `seedpool query`.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A query's result.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// Installs the read-only authorizer; the denied action lands in the returned slot.
fn guard(pool: &Pool) -> Arc<Mutex<Option<String>>> {
    read_only_guard(pool.connection())
}

/// Runs SQL with named parameters (those the SQL does not use are skipped).
pub fn run_sql(
    pool: &Pool,
    sql: &str,
    named: &[(&str, rusqlite::types::Value)],
) -> Result<Table, QueryError> {
    let mut rows = Vec::new();
    let columns = stream_sql(pool, sql, named, |row| {
        rows.push(row.to_vec());
        Ok(())
    })?;
    Ok(Table { columns, rows })
}

/// Runs SQL and hands each row to `visit` as it comes: memory stays flat however many
/// rows there are. Returns the column names.
pub fn stream_sql(
    pool: &Pool,
    sql: &str,
    named: &[(&str, rusqlite::types::Value)],
    mut visit: impl FnMut(&[Value]) -> std::io::Result<()>,
) -> Result<Vec<String>, QueryError> {
    stream_sql_until(pool, sql, named, |_, row| visit(row).map(|()| true))
}

/// Like `stream_sql`, with the column names beside each row, stopping when `visit`
/// returns false.
pub fn stream_sql_until(
    pool: &Pool,
    sql: &str,
    named: &[(&str, rusqlite::types::Value)],
    mut visit: impl FnMut(&[String], &[Value]) -> std::io::Result<bool>,
) -> Result<Vec<String>, QueryError> {
    if let Some(rest) = second_statement(sql) {
        return Err(QueryError::Statements(rest.to_string()));
    }
    let denied = guard(pool);
    let explain = |e: rusqlite::Error| match denied.lock().ok().and_then(|mut d| d.take()) {
        Some(what) => QueryError::Write(what),
        None => QueryError::Sql(e.to_string()),
    };
    let conn = pool.connection();
    let mut st = conn.prepare(sql).map_err(explain)?;
    if !st.readonly() {
        return Err(QueryError::Write("a statement that writes".into()));
    }
    let columns: Vec<String> = st.column_names().into_iter().map(String::from).collect();
    for (name, value) in named {
        if let Ok(Some(i)) = st.parameter_index(name) {
            st.raw_bind_parameter(i, value).map_err(explain)?;
        }
    }
    let mut rows = st.raw_query();
    let mut values = Vec::with_capacity(columns.len());
    while let Some(row) = rows.next().map_err(explain)? {
        values.clear();
        for i in 0..columns.len() {
            values.push(match row.get_ref(i).map_err(explain)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => Value::from(n),
                ValueRef::Real(f) => {
                    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                }
                ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::String(hex::encode(b)),
            });
        }
        if !visit(&columns, &values).map_err(QueryError::Output)? {
            break;
        }
    }
    Ok(columns)
}

/// Runs a query and writes its rows to `out` as they come (SQL), or its table (named
/// queries, whose size their limits bound). Returns the number of rows written.
pub fn run(plan: &QueryPlan, format: Format, out: &mut dyn Write) -> Result<u64, QueryError> {
    let pool = Pool::open_read_only(&plan.pool)?;
    let fired = plan.timeout.map(|t| time_limit(pool.connection(), t));
    let timed_out = |e: QueryError| match (&fired, plan.timeout) {
        (Some(f), Some(t)) if f.load(std::sync::atomic::Ordering::Relaxed) => {
            QueryError::Timeout(t)
        }
        _ => e,
    };
    match &plan.what {
        What::Sql(sql) => {
            let limit = plan.params.limit.unwrap_or(u64::MAX);
            let mut writer = RowWriter::new(format, out);
            let mut rows = 0u64;
            // Rows past the limit are never read: the statement stops stepping.
            let columns = stream_sql_until(&pool, sql, &[], |columns, row| {
                if rows >= limit {
                    return Ok(false);
                }
                writer.row(columns, row)?;
                rows += 1;
                Ok(true)
            })
            .map_err(timed_out)?;
            writer.finish(&columns).map_err(QueryError::Output)?;
            Ok(rows)
        }
        What::Named(name) => {
            let table = parades::run(&pool, name, &plan.params).map_err(timed_out)?;
            write(&table, format, out).map_err(QueryError::Output)?;
            Ok(table.rows.len() as u64)
        }
    }
}

/// Runs user SQL as `query --sql` does (read-only, one statement, stopped after
/// `timeout`) and keeps its first `max_rows` rows; says whether more were left unread.
/// For callers that reuse the connection: the time limit is lifted afterwards.
pub fn sql_rows(
    pool: &Pool,
    sql: &str,
    max_rows: usize,
    timeout: std::time::Duration,
) -> Result<(Table, bool), QueryError> {
    let fired = time_limit(pool.connection(), timeout);
    let mut rows = Vec::new();
    let mut more = false;
    let result = stream_sql_until(pool, sql, &[], |_, row| {
        if rows.len() >= max_rows {
            more = true;
            return Ok(false);
        }
        rows.push(row.to_vec());
        Ok(true)
    });
    pool.connection().progress_handler(0, None::<fn() -> bool>);
    let columns = result.map_err(|e| {
        if fired.load(std::sync::atomic::Ordering::Relaxed) {
            QueryError::Timeout(timeout)
        } else {
            e
        }
    })?;
    Ok((Table { columns, rows }, more))
}

/// Writes rows as they come: CSV and JSON at once; aligned text from the widths of the
/// first rows (a thousand), so an endless query never fills memory.
struct RowWriter<'o> {
    format: Format,
    out: &'o mut dyn Write,
    /// Text rows held until the widths are known.
    held: Option<Table>,
    widths: Vec<usize>,
    numeric: Vec<bool>,
    started: bool,
}

impl<'o> RowWriter<'o> {
    const HOLD: usize = 1000;

    fn new(format: Format, out: &'o mut dyn Write) -> Self {
        Self {
            format,
            out,
            held: Some(Table::default()),
            widths: Vec::new(),
            numeric: Vec::new(),
            started: false,
        }
    }

    fn row(&mut self, columns: &[String], row: &[Value]) -> std::io::Result<()> {
        match self.format {
            Format::Csv => {
                if !self.started {
                    self.started = true;
                    write_csv(self.out, columns.iter().map(|c| c.as_str()))?;
                }
                let cells: Vec<String> = row.iter().map(text).collect();
                write_csv(self.out, cells.iter().map(|c| c.as_str()))
            }
            Format::Json => {
                self.out.write_all(if self.started { b"," } else { b"[" })?;
                self.started = true;
                let object: serde_json::Map<String, Value> =
                    columns.iter().cloned().zip(row.iter().cloned()).collect();
                serde_json::to_writer(&mut *self.out, &object).map_err(std::io::Error::other)
            }
            Format::Table => match &mut self.held {
                Some(table) => {
                    table.rows.push(row.to_vec());
                    if table.rows.len() >= Self::HOLD {
                        table.columns = columns.to_vec();
                        self.flush_held()?;
                    }
                    Ok(())
                }
                None => {
                    let line = table_line(&table_cells(row), &self.widths, &self.numeric);
                    writeln!(self.out, "{line}")
                }
            },
        }
    }

    /// Prints the held rows with the widths they give, then streams with those.
    fn flush_held(&mut self) -> std::io::Result<()> {
        if let Some(table) = self.held.take() {
            let (widths, numeric) = table_layout(&table);
            write_table_head(&table.columns, &widths, &numeric, &mut *self.out)?;
            for r in &table.rows {
                writeln!(
                    self.out,
                    "{}",
                    table_line(&table_cells(r), &widths, &numeric)
                )?;
            }
            self.widths = widths;
            self.numeric = numeric;
        }
        Ok(())
    }

    fn finish(mut self, columns: &[String]) -> std::io::Result<()> {
        match self.format {
            Format::Csv if !self.started => write_csv(self.out, columns.iter().map(|c| c.as_str())),
            Format::Csv => Ok(()),
            Format::Json => writeln!(self.out, "{}", if self.started { "]" } else { "[]" }),
            Format::Table => {
                if let Some(table) = &mut self.held {
                    table.columns = columns.to_vec();
                }
                self.flush_held()
            }
        }
    }
}

pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.4}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string(),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// Writes one CSV record: RFC 4180 quoting by the csv crate, `\n` line ends.
pub(crate) fn write_csv<'a>(
    out: &mut dyn Write,
    cells: impl IntoIterator<Item = &'a str>,
) -> std::io::Result<()> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .buffer_capacity(1024)
        .from_writer(out);
    w.write_record(cells).map_err(std::io::Error::other)?;
    w.flush()
}

/// A row's cells as aligned text shows them: one line each, control characters
/// escaped (a value from a record must not drive the terminal).
fn table_cells(row: &[Value]) -> Vec<String> {
    row.iter()
        .map(|v| crate::name::shown(&text(v).replace(['\n', '\t'], " ")).into_owned())
        .collect()
}

/// Column widths (at most 60 characters) and which columns are numbers, from a table.
fn table_layout(table: &Table) -> (Vec<usize>, Vec<bool>) {
    let mut widths: Vec<usize> = table.columns.iter().map(|c| c.chars().count()).collect();
    for r in &table.rows {
        for (w, c) in widths.iter_mut().zip(table_cells(r)) {
            *w = (*w).max(c.chars().count().min(60));
        }
    }
    let numeric: Vec<bool> = (0..table.columns.len())
        .map(|i| {
            !table.rows.is_empty()
                && table
                    .rows
                    .iter()
                    .all(|r| r.get(i).is_some_and(|v| v.is_number() || v.is_null()))
        })
        .collect();
    (widths, numeric)
}

fn table_line(cells: &[String], widths: &[usize], numeric: &[bool]) -> String {
    cells
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let c: String = c.chars().take(60).collect();
            let w = widths.get(i).copied().unwrap_or(0);
            if numeric.get(i).copied().unwrap_or(false) {
                format!("{c:>w$}")
            } else {
                format!("{c:<w$}")
            }
        })
        .collect::<Vec<_>>()
        .join("  ")
        .trim_end()
        .to_string()
}

fn write_table_head(
    columns: &[String],
    widths: &[usize],
    numeric: &[bool],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let names: Vec<String> = columns
        .iter()
        .map(|c| crate::name::shown(c).into_owned())
        .collect();
    writeln!(out, "{}", table_line(&names, widths, numeric))?;
    writeln!(
        out,
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  ")
    )
}

/// Prints a table as aligned text, RFC 4180 CSV, or a JSON array of objects.
pub fn write(table: &Table, format: Format, out: &mut dyn Write) -> std::io::Result<()> {
    match format {
        Format::Json => {
            let rows: Vec<serde_json::Map<String, Value>> = table
                .rows
                .iter()
                .map(|r| {
                    table
                        .columns
                        .iter()
                        .cloned()
                        .zip(r.iter().cloned())
                        .collect()
                })
                .collect();
            serde_json::to_writer(&mut *out, &rows).map_err(std::io::Error::other)?;
            writeln!(out)
        }
        Format::Csv => {
            write_csv(out, table.columns.iter().map(|c| c.as_str()))?;
            for r in &table.rows {
                let cells: Vec<String> = r.iter().map(text).collect();
                write_csv(out, cells.iter().map(|c| c.as_str()))?;
            }
            Ok(())
        }
        Format::Table => {
            let (widths, numeric) = table_layout(table);
            write_table_head(&table.columns, &widths, &numeric, out)?;
            for r in &table.rows {
                writeln!(out, "{}", table_line(&table_cells(r), &widths, &numeric))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_rows_print_as_whole_tables_do() {
        let t = Table {
            columns: vec!["a".into(), "n".into()],
            rows: vec![
                vec![Value::from("x\u{1b}[2J"), Value::from(2)],
                vec![Value::from("yy"), Value::Null],
            ],
        };
        for format in [Format::Table, Format::Csv, Format::Json] {
            let mut whole = Vec::new();
            write(&t, format, &mut whole).unwrap();
            let mut streamed = Vec::new();
            let mut w = RowWriter::new(format, &mut streamed);
            for r in &t.rows {
                w.row(&t.columns, r).unwrap();
            }
            w.finish(&t.columns).unwrap();
            assert_eq!(
                String::from_utf8(streamed).unwrap(),
                String::from_utf8(whole).unwrap(),
                "{format:?}"
            );
        }
        let mut out = Vec::new();
        write(&t, Format::Table, &mut out).unwrap();
        assert!(!out.contains(&0x1b), "an escape reached the terminal");
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let t = Table {
            columns: vec!["a".into(), "b".into()],
            rows: vec![
                vec![Value::from("x,y"), Value::from(2)],
                vec![Value::from("say \"hi\""), Value::Null],
            ],
        };
        let mut out = Vec::new();
        write(&t, Format::Csv, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a,b\n\"x,y\",2\n\"say \"\"hi\"\"\",\n"
        );
        let mut out = Vec::new();
        write(&t, Format::Table, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a         b\n--------  -\nx,y       2\nsay \"hi\"\n"
        );
    }
}
