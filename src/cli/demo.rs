//! `seedpool demo`: run the whole loop on a built-in example.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::output::human_bytes;
use super::{CommandResult, Env};
use crate::demo::{self, DemoPlan};

/// Build a small example dataset, publish it twice, sync it into a pool and query it.
///
/// Draws originals (JPEG and PNG, named as BOORU-CHARS names them) and writes booru API
/// dumps and a tag list beside them, as a maintainer's downloads look (nothing is
/// downloaded). `seedpool ingest` curates them into a release folder: records, samples,
/// thumbnails, duplicates and filtered pictures, and faces found by an LBP cascade
/// written for the drawn faces (demo-faces.xml), with a composition class for each
/// picture. That is published as release 1; then
/// two posts are deleted, one score is corrected and new posts arrive, ingest runs again
/// into the same folder, and release 2 is published, reusing release 1's unchanged
/// shards. Both releases are
/// verified, seeded over BitTorrent on 127.0.0.1 (no DHT, no trackers) and synced into
/// a pool one after the other; two hit-parades of the pool are printed.
/// Everything goes into --workdir; running again starts it afresh.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Work folder for the example (release folders, store, key).
    #[arg(long, default_value = "seedpool-demo")]
    workdir: PathBuf,
    /// Items in release 1.
    #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u64).range(12..=100_000))]
    items: u64,
    /// Items per shard (small, so that reuse shows).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    shard_items: u64,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DemoArgs, env: &mut Env) -> CommandResult {
    let out = &mut env.out;
    let plan = DemoPlan {
        workdir: args.workdir.clone(),
        items: args.items as usize,
        shard_items: args.shard_items as usize,
    };
    let bars = out.progress();
    let result = demo::run(&plan, &bars);
    bars.finish();
    let report = result?;
    let serve = serve_command(&report);
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["serve"] = serve.into();
        out.json(&value)?;
        return Ok(());
    }
    let w = &mut out.out;
    writeln!(w, "seedpool demo in `{}`", report.workdir.display())?;
    writeln!(w, "publisher key `{}`", report.key.display())?;
    for ((r, v), i) in report
        .releases
        .iter()
        .zip(&report.verified)
        .zip(&report.ingested)
    {
        writeln!(w)?;
        writeln!(w, "release {} of {}:", r.version, r.dataset)?;
        writeln!(
            w,
            "  ingest: {} originals: {} kept, {} duplicates, {} filtered, {} unreadable; {} analyses reused, {} items removed (report {})",
            i.inputs,
            i.kept,
            i.duplicates,
            i.filtered,
            i.unreadable,
            i.reused,
            i.removed,
            i.report.display()
        )?;
        writeln!(
            w,
            "  faces (the demo's LBP cascade, demo-faces.xml): {}",
            super::detect::composition_counts(&i.compositions)
        )?;
        if let Some(parent) = &r.parent {
            writeln!(
                w,
                "  from parent {parent}: {} new, {} changed, {} removed items",
                r.new_items, r.changed_items, r.removed_items
            )?;
            writeln!(
                w,
                "  shards: {} reused as they are, {} repacked, {} new; {} tombstones",
                r.reused_shards, r.repacked_shards, r.new_shards, r.tombstones
            )?;
        } else {
            writeln!(w, "  {} items packed into {} shards", r.items, r.new_shards)?;
        }
        writeln!(
            w,
            "  {} items, {} in all, {} new ({:.0}% of the release)",
            r.items,
            human_bytes(r.bytes),
            human_bytes(r.new_bytes),
            100.0 * r.new_bytes as f64 / r.bytes.max(1) as f64
        )?;
        writeln!(w, "  manifest {}", r.manifest.display())?;
        writeln!(
            w,
            "  torrent  {} (info hash {})",
            r.torrent.display(),
            r.info_hash
        )?;
        writeln!(
            w,
            "  verified: signature, torrent and {} files ({})",
            v.files,
            human_bytes(v.bytes)
        )?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "store: `{}` holds both releases, one copy of each shard",
        report.store.display()
    )?;
    writeln!(
        w,
        "seed:  both releases seeded from the store on 127.0.0.1; synced into `{}`:",
        report.pool.display()
    )?;
    for r in &report.syncs {
        let m = &r.merge;
        writeln!(
            w,
            "sync:  release {}: {} of {} shards downloaded, {} received over BitTorrent; {} added, {} changed, {} removed, {} unchanged",
            r.version,
            r.shards_downloaded,
            r.shards,
            human_bytes(r.bytes_received),
            m.added,
            m.changed,
            m.removed,
            m.unchanged
        )?;
    }
    if let [first, second] = &report.syncs[..] {
        writeln!(
            w,
            "       release {} fetched {} of new files ({:.0}% of what release {} fetched; {} on the wire, whole pieces); the rest was already in the pool",
            second.version,
            human_bytes(second.bytes_downloaded),
            100.0 * second.bytes_downloaded as f64 / first.bytes_downloaded.max(1) as f64,
            first.version,
            human_bytes(second.bytes_received),
        )?;
    }
    for (name, table) in &report.parades {
        writeln!(w)?;
        writeln!(w, "seedpool query --pool {} {name}", report.pool.display())?;
        crate::query::write(table, crate::query::Format::Table, &mut **w)?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "look at the pool in a browser (gallery, items with their faces, hit-parades as charts):"
    )?;
    writeln!(w, "    {serve}")?;
    Ok(())
}

/// The command that serves the demo's pool, with the newest release's ingest report.
fn serve_command(report: &demo::DemoReport) -> String {
    let mut command = format!("seedpool serve --pool {}", report.pool.display());
    if let Some(ingest) = report.ingested.last() {
        command.push_str(&format!(" --ingest-report {}", ingest.report.display()));
    }
    command
}
