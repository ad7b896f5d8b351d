//! `seedpool merge`: arguments → `MergePlan` → `pool::merge::run`.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::{CommandResult, Env, Failure};
use crate::pool::merge::{self, MergePlan};

/// Merge a release from a store into a local pool.
///
/// Verifies the manifest's signature and every file of the release against it (the
/// torrent's files, the index's blake3 and schema, and each shard's blake3, tar
/// structure and members, as `seedpool verify` does), copies (or hard-links) the shards
/// the pool lacks into POOL/<dataset>/shards/, then records
/// the release in POOL/pool.sqlite in one transaction: new items are added, changed ones
/// updated with their previous version kept in history, removed ones marked, and each
/// change recorded as provenance. Merging the same release twice changes nothing; a
/// merge that is killed leaves the pool as it was. The pool is created when POOL is
/// missing or empty. The first release of a dataset pins its publisher key.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The release's manifest.
    manifest: PathBuf,
    /// The pool folder.
    #[arg(long, env = "SEEDPOOL_POOL")]
    pool: PathBuf,
    /// The store that holds the release's files.
    #[arg(long, env = "SEEDPOOL_STORE")]
    from: PathBuf,
    /// Accept a manifest signed by another key than the one the pool pinned.
    #[arg(long)]
    trust_key: bool,
    /// Accept a release older than the newest one the pool holds.
    #[arg(long)]
    allow_older: bool,
    /// Near duplicates: largest Hamming distance between records' perceptual hashes (0-7).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=7))]
    phash_distance: u32,
    #[command(flatten)]
    limits: super::LimitArgs,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: MergeArgs, env: &mut Env) -> CommandResult {
    let plan = MergePlan {
        trust_key: args.trust_key,
        allow_older: args.allow_older,
        phash_distance: args.phash_distance,
        index_limit: args.limits.index_limit(),
        tuning: tuning(env),
        ..MergePlan::new(args.manifest.clone(), args.pool.clone(), args.from.clone())
    };
    let out = &mut env.out;
    let bars = out.progress();
    let result = merge::run(&plan, &bars);
    bars.finish();
    let r = result.map_err(|e| {
        Failure::Data(
            anyhow::Error::new(e).context(format!("failed to merge `{}`", plan.manifest.display())),
        )
    })?;
    if args.json {
        out.json(&r)?;
        return Ok(());
    }
    let w = &mut out.out;
    if r.already_merged {
        writeln!(
            w,
            "{} {} is already merged into `{}`; nothing changed",
            r.dataset,
            r.version,
            plan.pool.display()
        )?;
        return Ok(());
    }
    writeln!(
        w,
        "merged {} {} into `{}`",
        r.dataset,
        r.version,
        plan.pool.display()
    )?;
    writeln!(
        w,
        "  {} added, {} changed, {} restored, {} removed, {} moved, {} unchanged",
        r.added, r.changed, r.restored, r.removed, r.moved, r.unchanged
    )?;
    writeln!(
        w,
        "  {} live items, {} hidden as duplicates; {} shards fetched ({})",
        r.items,
        r.duplicates,
        r.shards_fetched,
        super::output::human_bytes(r.bytes_fetched)
    )?;
    if r.embeddings_refused > 0 {
        writeln!(
            out.err,
            "warning: {} records' `embedding` refused (not base64 float16, longer than {} dimensions, not finite, or not its space's length); those items merged without a vector",
            r.embeddings_refused,
            crate::imaging::embedding::MAX_DIMS
        )?;
    }
    Ok(())
}

/// What the environment sets for a merge: the clock, and the tuning variables
/// `SEEDPOOL_BULK_MERGE_MIN` (fewest new items for the bulk path; tests lower it) and
/// `SEEDPOOL_TIMINGS` (print each phase's time on stderr).
pub fn tuning(env: &Env) -> merge::Tuning {
    let defaults = merge::Tuning::default();
    merge::Tuning {
        merged_at: env.now(),
        bulk_minimum: env
            .var_str("SEEDPOOL_BULK_MERGE_MIN")
            .and_then(|v| v.parse().ok())
            .unwrap_or(defaults.bulk_minimum),
        timings: env.var("SEEDPOOL_TIMINGS").is_some(),
    }
}
