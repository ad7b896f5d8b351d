//! `seedpool query`: run a named hit-parade or read-only SQL on a pool.

use std::path::PathBuf;

use clap::Args;

use super::{CommandResult, Env, Failure};
use crate::query::{self, parades, Format, Params, QueryError, QueryPlan, What};

/// Query a pool: a named hit-parade, or any read-only SQL.
///
/// Named queries rank the pool's live items (not removed, not hidden as duplicates);
/// `--list` shows them. `--sql` runs any SELECT over the pool database (tables and views
/// in docs/pool.md: `live` (live items with their records), `items`, `records`,
/// `item_records`, `tags`, `item_tags`, `item_tag_names`, `releases`, `provenance`, ...).
/// Statements that would write are refused before they run, as is more than one
/// statement; rows are printed as they come, and a query is stopped after --timeout.
#[derive(Args, Debug)]
pub struct QueryArgs {
    /// Name of a hit-parade (see --list).
    #[arg(conflicts_with_all = ["sql", "list"], required_unless_present_any = ["sql", "list"])]
    name: Option<String>,
    /// The pool folder.
    #[arg(long, env = "SEEDPOOL_POOL")]
    pool: PathBuf,
    /// Run this SQL instead of a named query (read-only).
    #[arg(long)]
    sql: Option<String>,
    /// List the named queries with their descriptions.
    #[arg(long)]
    list: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Most rows (for ranked queries: per group).
    #[arg(long)]
    limit: Option<u64>,
    /// Only items that have all these tags (comma-separated).
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// Only this year of posting.
    #[arg(long)]
    year: Option<i64>,
    /// Only this booru.
    #[arg(long)]
    booru: Option<String>,
    /// Rank by `score` or `favs`.
    #[arg(long, value_parser = ["score", "favs"])]
    metric: Option<String>,
    /// Only this composition class (close-up, portrait, upper-body, full-body, scene, group, no-face).
    #[arg(long)]
    composition: Option<String>,
    /// Only portraits: one face, close-up or portrait composition.
    #[arg(long)]
    portraits: bool,
    /// Only this dataset (a pool may hold several).
    #[arg(long)]
    dataset: Option<String>,
    /// Stop a query that runs longer than this, e.g. `5m` (`0` for no limit).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
}

pub fn run(args: QueryArgs, env: &mut Env) -> CommandResult {
    let out = &mut env.out;
    if args.list {
        query::write(&parades::list(), args.format, &mut out.out)?;
        return Ok(());
    }
    let what = match (&args.sql, &args.name) {
        (Some(sql), _) => What::Sql(sql.clone()),
        (None, Some(name)) => What::Named(name.clone()),
        (None, None) => unreachable!("clap requires a name, --sql or --list"),
    };
    let plan = QueryPlan {
        pool: args.pool.clone(),
        what,
        params: Params {
            dataset: args.dataset.clone(),
            tags: args
                .tags
                .iter()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
            year: args.year,
            booru: args.booru.clone(),
            metric: args.metric.clone(),
            composition: args.composition.clone(),
            portraits: args.portraits,
            limit: args.limit,
        },
        timeout: (!args.timeout.is_zero()).then_some(args.timeout),
    };
    query::run(&plan, args.format, &mut out.out).map_err(|e| match e {
        QueryError::Unknown(_) | QueryError::Statements(_) | QueryError::Unread { .. } => {
            Failure::Usage(e.into())
        }
        QueryError::Output(io) => Failure::Data(anyhow::Error::new(io)),
        e => Failure::Data(e.into()),
    })?;
    Ok(())
}
