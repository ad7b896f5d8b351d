//! `seedpool verify`: arguments → `VerifyPlan` → `verify::run`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;

use super::{CommandResult, Env, Failure};
use crate::verify::{self, VerifyPlan};

/// Check a release in a store against its signed manifest.
///
/// Checks the manifest's format version, ed25519 signature and fields; that the .torrent
/// has the manifest's info hash, piece length and files; that the index has its size
/// and blake3, then seedpool's exact schema and the manifest's shards and item count;
/// and that every shard has its size and blake3, is a well-formed seedpool tar, and
/// holds every member the index lists at its offset with its blake3 (one read of each
/// shard). Exits 1 listing each bad or missing file.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The release's manifest (`<dataset>-<version>.manifest.json`).
    manifest: PathBuf,
    /// Store folder holding the release.
    #[arg(long, env = "SEEDPOOL_STORE")]
    store: PathBuf,
    /// Require the manifest to be signed by this public key (64 hex digits).
    #[arg(long, value_name = "HEX")]
    public_key: Option<String>,
    #[command(flatten)]
    limits: super::LimitArgs,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: VerifyArgs, env: &mut Env) -> CommandResult {
    let plan = VerifyPlan {
        manifest: args.manifest.clone(),
        store: args.store.clone(),
        public_key: args.public_key.clone(),
        index_limit: args.limits.index_limit(),
        timings: env.var("SEEDPOOL_TIMINGS").is_some(),
    };
    let out = &mut env.out;
    let bars = out.progress();
    let result = verify::run(&plan, &bars);
    bars.finish();
    let report =
        result.map_err(|e| Failure::Data(anyhow::Error::new(e).context("verification failed")))?;
    if args.json {
        out.json(&report)?;
    } else if report.ok() {
        writeln!(
            out.out,
            "ok: {} {}: signature by {}, torrent {}, {} files, {}",
            report.dataset,
            report.version,
            report.public_key,
            report.info_hash,
            report.files,
            super::output::human_bytes(report.bytes)
        )?;
    } else {
        for p in &report.problems {
            writeln!(out.err, "bad: {}", crate::name::shown(&p.to_string()))?;
        }
    }
    if report.ok() {
        Ok(())
    } else {
        Err(Failure::Data(anyhow!(
            "{} of {} files of {} {} are bad or missing",
            report.problems.len(),
            report.files + 1,
            report.dataset,
            report.version
        )))
    }
}
