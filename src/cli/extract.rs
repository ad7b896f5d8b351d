//! `seedpool extract` and `seedpool export`: files and tables out of a pool.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::{CommandResult, Env, Failure};
use crate::query::export::{self, ExportFormat, ExportPlan};
use crate::query::extract::{self, ExtractPlan, Names};

/// Write the files of the items matching an SQL condition into a folder.
///
/// The condition is SQL over the `live` view, alias `l` (e.g.
/// `l.booru = 'danbooru' AND l.year = 2024`, or
/// `l.id IN (SELECT item FROM item_tag_names WHERE tag = 'hatsune_miku')`). Each member is
/// read at its offset in its shard and checked against its blake3; whole shards are never
/// unpacked. Items whose shard was not downloaded are counted and skipped. Files are
/// written into a private folder and moved into place only where no file of that name
/// exists (see --overwrite); links in the folder are never followed. Two items that
/// would get the same name (`--names booru`) get distinct ones: the later in key order
/// is written as `<name> [<key>]`, and the output lists it.
#[derive(Args, Debug)]
pub struct ExtractArgs {
    #[arg(long, env = "SEEDPOOL_POOL")]
    pool: PathBuf,
    /// SQL condition over `live` (alias `l`) choosing the items.
    #[arg(long = "where", value_name = "SQL")]
    condition: String,
    /// Folder to write into (created when missing).
    #[arg(long)]
    out: PathBuf,
    /// File names: `key` (`<key>.<ext>`) or `booru`
    /// (`<booru> - <id> - <copyright> ~ <characters> (<artist>).<ext>`).
    #[arg(long, value_enum, default_value = "key")]
    names: Names,
    /// Only these extensions (comma-separated, e.g. `jpg,json`).
    #[arg(long, value_delimiter = ',')]
    ext: Vec<String>,
    /// Replace files in the folder that hold other bytes. Without it they are left as
    /// they are and listed, and the command exits 1 after writing the rest. Files that
    /// already hold the same bytes are skipped either way, so an interrupted extract can
    /// be run again.
    #[arg(long)]
    overwrite: bool,
    #[arg(long)]
    json: bool,
}

pub fn run_extract(args: ExtractArgs, env: &mut Env) -> CommandResult {
    let out = &mut env.out;
    let plan = ExtractPlan {
        pool: args.pool.clone(),
        condition: args.condition.clone(),
        out: args.out.clone(),
        names: args.names,
        exts: args.ext.clone(),
        overwrite: args.overwrite,
    };
    let bars = out.progress();
    let result = extract::run(&plan, &bars);
    bars.finish();
    let r = result.map_err(|e| Failure::Data(anyhow::Error::new(e).context("extract failed")))?;
    if args.json {
        out.json(&r)?;
    } else {
        writeln!(
            out.out,
            "extracted {} items ({} files, {}) into `{}`",
            r.items,
            r.files,
            super::output::human_bytes(r.bytes),
            plan.out.display()
        )?;
        if r.unchanged > 0 {
            writeln!(
                out.out,
                "  {} files were there already with the same bytes",
                r.unchanged
            )?;
        }
        for (key, name) in &r.renamed {
            writeln!(
                out.out,
                "  `{}` took the name of an earlier item: written as `{}`",
                crate::name::shown(key),
                crate::name::shown(name)
            )?;
        }
        if r.not_downloaded > 0 {
            writeln!(
                out.out,
                "  {} matching items were skipped: their shards are not in the pool",
                r.not_downloaded
            )?;
        }
    }
    Ok(())
}

/// Export the pool's live items and their tags as TSV, CSV, JSON Lines or Parquet.
///
/// For analysis beyond one SQLite file: DuckDB (`read_json('items.jsonl')`,
/// `read_csv('items.tsv', delim='\t')`, `read_parquet('items.parquet')`), pandas, Polars
/// or Spark read these directly.
/// Columns: dataset, key, booru, post_id, md5, rating, score, favs, posted, year, width,
/// height, bytes, volume, quality, faces, composition, shard, added_in, changed_in and
/// the tags by category (JSON Lines also carries the full record).
#[derive(Args, Debug)]
pub struct ExportArgs {
    #[arg(long, env = "SEEDPOOL_POOL")]
    pool: PathBuf,
    #[arg(long, value_enum)]
    format: ExportFormat,
    /// File to write (written under a temporary name, then renamed).
    #[arg(long)]
    out: PathBuf,
    /// Only items matching this SQL condition over `live` (alias `l`).
    #[arg(long = "where", value_name = "SQL")]
    condition: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn run_export(args: ExportArgs, env: &mut Env) -> CommandResult {
    let out = &mut env.out;
    let plan = ExportPlan {
        pool: args.pool.clone(),
        format: args.format,
        out: args.out.clone(),
        condition: args.condition.clone(),
    };
    let bars = out.progress();
    let result = export::run(&plan, &bars);
    bars.finish();
    let r = result.map_err(|e| Failure::Data(anyhow::Error::new(e).context("export failed")))?;
    if args.json {
        out.json(&r)?;
    } else {
        writeln!(
            out.out,
            "exported {} items to `{}`",
            r.items,
            r.out.display()
        )?;
    }
    Ok(())
}
