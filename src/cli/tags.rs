//! `seedpool tags`: tag systematization for a pool.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;

use super::{CommandResult, Env, Failure};
use crate::pool::Pool;
use crate::query::{self, Format};
use crate::tags;

/// Systematize tags: categories, franchises, MyAnimeList ids, names across boorus.
#[derive(Subcommand, Debug)]
pub enum TagsCommand {
    /// Import a Danbooru-style tag list into a pool.
    ///
    /// The list is `;`-separated with a header line. Columns: TAG_CAT (0 general,
    /// 1 artist, 3 copyright, 4 character, 5 meta), TAG_ID, TAG_NAME, and optionally
    /// TAG_CNT, FR_ID (the TAG_ID of the franchise's main copyright), MAL_ID, MAL_NAME,
    /// MAL_CNT and ALIASES (comma-separated other names). Tag names are matched across
    /// boorus by their normalised form (lower case, `_` for spaces) and the aliases.
    /// A malformed list changes nothing; the error names every bad line.
    Import {
        /// The tag list file.
        list: PathBuf,
        #[arg(long, env = "SEEDPOOL_POOL")]
        pool: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List tags whose category differs between sources, or from the imported list.
    Conflicts {
        #[arg(long, env = "SEEDPOOL_POOL")]
        pool: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

pub fn run(cmd: TagsCommand, env: &mut Env) -> CommandResult {
    let out = &mut env.out;
    match cmd {
        TagsCommand::Import { list, pool, json } => {
            let r = tags::import(&pool, &list).map_err(|e| {
                Failure::Data(
                    anyhow::Error::new(e).context("tag import failed; the pool is unchanged"),
                )
            })?;
            if json {
                out.json(&r)?;
            } else {
                writeln!(
                    out.out,
                    "imported {} tags ({} franchises, {} with a MyAnimeList id, {} aliases); {} of the pool's tags are described",
                    r.tags, r.franchises, r.with_mal_id, r.aliases, r.pool_tags_matched
                )?;
            }
        }
        TagsCommand::Conflicts { pool, format } => {
            let pool = Pool::open_read_only(&pool)?;
            let table = query::run_sql(&pool, tags::CONFLICTS_SQL, &[])?;
            query::write(&table, format, &mut out.out)?;
        }
    }
    Ok(())
}
