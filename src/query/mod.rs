//! Queries over a pool: any read-only SQL, and named "hit-parades".
//!
//! The pool is opened read-only, and an SQLite authorizer allows reads only: a query
//! that would write, attach a file or change a pragma is refused with the action named,
//! before it runs. Results are small tables printed as text, CSV or JSON.

pub mod export;
pub mod extract;
pub mod parades;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::ValueRef;
use serde_json::Value;

use crate::pool::{Pool, PoolError};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("queries are read-only: {0} is refused")]
    Write(String),
    #[error("invalid SQL: {0}")]
    Sql(String),
    #[error("unknown query `{0}`; `seedpool query --list` lists the named queries")]
    Unknown(String),
    #[error("failed to write the results")]
    Output(#[source] std::io::Error),
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
}

/// A query's result.
#[derive(Clone, Debug, Default, PartialEq)]
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

/// Lets `conn` only read from now on: an authorizer denies writes, ATTACH and pragmas,
/// and names what it denied in the returned slot (for the error message).
pub fn read_only_guard(conn: &rusqlite::Connection) -> Arc<Mutex<Option<String>>> {
    let denied = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&denied);
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        let refuse = |what: String| {
            if let Ok(mut s) = slot.lock() {
                s.get_or_insert(what);
            }
            Authorization::Deny
        };
        match ctx.action {
            AuthAction::Select
            | AuthAction::Read { .. }
            | AuthAction::Function { .. }
            | AuthAction::Recursive => Authorization::Allow,
            AuthAction::Insert { table_name } => refuse(format!("INSERT into `{table_name}`")),
            AuthAction::Update { table_name, .. } => refuse(format!("UPDATE of `{table_name}`")),
            AuthAction::Delete { table_name } => refuse(format!("DELETE from `{table_name}`")),
            AuthAction::Attach { filename } => refuse(format!("ATTACH of `{filename}`")),
            AuthAction::Pragma { pragma_name, .. } => refuse(format!("PRAGMA `{pragma_name}`")),
            other => refuse(format!("{other:?}")),
        }
    }));
    denied
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
        visit(&values).map_err(QueryError::Output)?;
    }
    Ok(columns)
}

pub fn run(plan: &QueryPlan) -> Result<Table, QueryError> {
    let pool = Pool::open_read_only(&plan.pool)?;
    match &plan.what {
        What::Sql(sql) => {
            let mut table = run_sql(&pool, sql, &[])?;
            if let Some(limit) = plan.params.limit {
                table.rows.truncate(limit as usize);
            }
            Ok(table)
        }
        What::Named(name) => parades::run(&pool, name, &plan.params),
    }
}

fn text(v: &Value) -> String {
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

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
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
            writeln!(
                out,
                "{}",
                table
                    .columns
                    .iter()
                    .map(|c| csv_field(c))
                    .collect::<Vec<_>>()
                    .join(",")
            )?;
            for r in &table.rows {
                writeln!(
                    out,
                    "{}",
                    r.iter()
                        .map(|v| csv_field(&text(v)))
                        .collect::<Vec<_>>()
                        .join(",")
                )?;
            }
            Ok(())
        }
        Format::Table => {
            let cells: Vec<Vec<String>> = table
                .rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|v| text(v).replace(['\n', '\t'], " "))
                        .collect()
                })
                .collect();
            let mut widths: Vec<usize> = table.columns.iter().map(|c| c.chars().count()).collect();
            for r in &cells {
                for (w, c) in widths.iter_mut().zip(r) {
                    *w = (*w).max(c.chars().count().min(60));
                }
            }
            let numeric: Vec<bool> = (0..table.columns.len())
                .map(|i| {
                    !table.rows.is_empty()
                        && table
                            .rows
                            .iter()
                            .all(|r| r[i].is_number() || r[i].is_null())
                })
                .collect();
            let line = |cells: &[String]| -> String {
                cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let c: String = c.chars().take(60).collect();
                        if numeric[i] {
                            format!("{c:>w$}", w = widths[i])
                        } else {
                            format!("{c:<w$}", w = widths[i])
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            writeln!(out, "{}", line(&table.columns))?;
            writeln!(
                out,
                "{}",
                widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("  ")
            )?;
            for r in &cells {
                writeln!(out, "{}", line(r))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
