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
    /// Make ALIAS another name of NAME in the pool (or every `alias,name` line of a
    /// reviewed CSV file, as `seedpool mine aliases --format csv` writes it): hit-parades
    /// and mining count the two as one tag from then on. Counts are rebuilt in the same
    /// transaction; a bad line changes nothing.
    Alias {
        /// The spelling that becomes an alias.
        #[arg(required_unless_present = "from", requires = "name")]
        alias: Option<String>,
        /// The tag it stands for.
        #[arg(conflicts_with = "from")]
        name: Option<String>,
        /// A CSV file with `alias` and `name` columns (others are ignored).
        #[arg(long, value_name = "CSV")]
        from: Option<PathBuf>,
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
    match cmd {
        TagsCommand::Import { list, pool, json } => {
            let out = &mut env.out;
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
        TagsCommand::Alias {
            alias,
            name,
            from,
            pool,
            json,
        } => {
            let pool = env.path(&pool);
            if !pool.join(crate::pool::DATABASE).is_file() {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "`{}` is not a pool (no {})",
                    pool.display(),
                    crate::pool::DATABASE
                )));
            }
            let pairs = match (from, alias, name) {
                (Some(file), _, _) => {
                    tags::read_alias_file(&env.path(&file)).map_err(|e| Failure::Usage(e.into()))?
                }
                (None, Some(a), Some(n)) => vec![(a, n)],
                _ => unreachable!("clap requires ALIAS and NAME or --from"),
            };
            let r = tags::add_aliases(&pool, &pairs).map_err(|e| match e {
                tags::TagsError::BadAlias { .. } => Failure::Usage(
                    anyhow::Error::new(e).context("no alias written; the pool is unchanged"),
                ),
                e => Failure::Data(
                    anyhow::Error::new(e).context("no alias written; the pool is unchanged"),
                ),
            })?;
            let out = &mut env.out;
            if json {
                out.json(&r)?;
            } else {
                writeln!(
                    out.out,
                    "wrote {} aliases ({} older ones pointed on); {} source tags now count under another name",
                    r.written, r.repointed, r.tags_renamed
                )?;
            }
        }
        TagsCommand::Conflicts { pool, format } => {
            let out = &mut env.out;
            let pool = Pool::open_read_only(&pool)?;
            let table = query::run_sql(&pool, tags::CONFLICTS_SQL, &[])?;
            query::write(&table, format, &mut out.out)?;
        }
    }
    Ok(())
}
