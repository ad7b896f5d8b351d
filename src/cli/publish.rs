//! `seedpool publish`: arguments → `PublishPlan` → `publish::run`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;

use super::output::human_bytes;
use super::{parse_size, CommandResult, Env, Failure};
use crate::name::{DatasetName, Version};
use crate::publish::{self, PublishError, PublishPlan, DEFAULT_REPACK_ABOVE, DEFAULT_SHARD_ITEMS};
use crate::signing::{default_key_path, KeyError};

/// Pack a release folder into shards, an index, a .torrent and a signed manifest.
///
/// Items are the files named `<key>.<ext>` anywhere under RELEASE_DIR (the key is the
/// file name up to its first dot, WebDataset style). An item's `.json` record may name a
/// `volume`; items are grouped by volume, sorted by key and packed into shards of at most
/// --shard-items items. Everything is written to a staging folder in STORE and moved into
/// place at the end, manifest last, so a failed publish leaves the store as it was.
///
/// Afterwards STORE/<dataset>/README.md, a Hugging Face dataset card, names each release
/// with its shards and its records' field types, so `datasets.load_dataset` reads the
/// store folder as it is (docs/format.md, "The dataset card").
#[derive(Args, Debug)]
pub struct PublishArgs {
    /// Folder of item files to publish.
    release_dir: PathBuf,
    /// Dataset name: the torrent's root folder and the prefix of the release's files.
    #[arg(long, value_parser = DatasetName::parse)]
    dataset: DatasetName,
    /// Release version, e.g. `2026.11` or `3`; letters, digits, `.`, `_`, `-`.
    #[arg(long, value_parser = Version::parse)]
    version: Version,
    /// Store folder to write into (created when missing).
    #[arg(long, env = "SEEDPOOL_STORE")]
    store: PathBuf,
    /// Manifest of the previous release: reuse its shards and publish only what changed.
    ///
    /// Every parent shard is kept as it is unless more than --repack-above of its items
    /// were removed or changed; changed and removed items are listed as tombstones in the
    /// index. The parent's torrent, index and shards must be in STORE.
    #[arg(long)]
    parent: Option<PathBuf>,
    /// Most items in one shard.
    #[arg(long, default_value_t = DEFAULT_SHARD_ITEMS as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    shard_items: u64,
    /// Repack a parent shard when more than this fraction of its items are dead.
    #[arg(long, default_value_t = DEFAULT_REPACK_ABOVE)]
    repack_above: f64,
    /// Tracker announce URL (http, https or udp); repeat for more.
    #[arg(long = "tracker", value_name = "URL")]
    trackers: Vec<String>,
    /// How long the store's signed feed (`<dataset>.feed.json`) stays valid: followers
    /// refuse it after that (a stale mirror cannot freeze them on old releases), so
    /// re-sign it in time with `seedpool feed refresh`.
    #[arg(long, default_value = "30days", value_parser = humantime::parse_duration, value_name = "DURATION")]
    feed_valid_for: std::time::Duration,
    /// Web seed URL (BEP 19 url-list): an HTTP folder holding `<dataset>/shards/...`,
    /// such as a mirror's `seedpool seed --http` address. A `/` is added when missing.
    #[arg(long = "web-seed", value_name = "URL")]
    web_seeds: Vec<String>,
    /// Also store the newest release in the mainline DHT (BEP 46): a mutable item signed
    /// by the publisher key, with the dataset name as salt, naming the feed and where to
    /// fetch it. Followers then need only `magnet:?xs=urn:btpk:<key>&s=<dataset>`.
    /// The signed item is kept as STORE/<dataset>.dht.json; `seed` puts it again every
    /// hour, since DHT nodes forget items. Once a store has one, every publish re-signs it.
    #[arg(long)]
    dht: bool,
    /// Where followers can fetch the feed, for the DHT pointer (repeat for more): an
    /// http(s) URL of `<dataset>.feed.json`. Each --web-seed adds its own.
    #[arg(long = "feed-url", value_name = "URL")]
    feed_urls: Vec<String>,
    #[command(flatten)]
    dht_net: super::swarm::DhtArgs,
    /// Publisher key file (make one with `seedpool key generate`).
    /// [default: $XDG_CONFIG_HOME/seedpool/publisher.key]
    #[arg(long, env = "SEEDPOOL_KEY", value_name = "KEYFILE")]
    key: Option<PathBuf>,
    /// Release time, RFC 3339 (`2026-11-25T00:00:00Z`) or Unix seconds. Defaults to
    /// SOURCE_DATE_EPOCH when set, else now. Fix it to make publishing reproducible.
    #[arg(long)]
    created: Option<String>,
    /// Torrent piece length (power of two, e.g. `1MiB`). Default: picked from the size
    /// of the first release, then kept by every child release.
    #[arg(long, value_parser = parse_size)]
    piece_length: Option<u64>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// `--created`, else `SOURCE_DATE_EPOCH`, else now.
pub fn parse_created(text: Option<&str>, env: &Env) -> Result<u64, String> {
    let from_env = env.var_str("SOURCE_DATE_EPOCH");
    let Some(text) = text.or(from_env.as_deref()) else {
        return Ok(env.now());
    };
    if let Ok(secs) = text.trim().parse::<u64>() {
        return Ok(secs);
    }
    humantime::parse_rfc3339_weak(text.trim())
        .map_err(|e| format!("`{text}` is not an RFC 3339 time or Unix seconds: {e}"))
        .and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .map_err(|_| format!("`{text}` is before 1970"))
        })
}

fn check_url(url: &str, schemes: &[&str], what: &str) -> Result<(), Failure> {
    crate::http::check_url(url, schemes).map_err(|problem| {
        Failure::Usage(anyhow!("{what} `{}` {problem}", crate::name::shown(url)))
    })
}

fn plan(args: &PublishArgs, env: &Env) -> Result<PublishPlan, Failure> {
    for t in &args.trackers {
        check_url(t, &["http", "https", "udp"], "tracker")?;
    }
    for w in &args.web_seeds {
        check_url(w, &["http", "https"], "web seed")?;
    }
    for f in &args.feed_urls {
        check_url(f, &["http", "https"], "feed URL")?;
    }
    // Said before anything is published: the pointer could name no feed to fetch.
    let pointer = crate::manifest::pointer::path(&args.store, &args.dataset);
    if args.dht && args.feed_urls.is_empty() && args.web_seeds.is_empty() && !pointer.exists() {
        return Err(Failure::Usage(anyhow!(
            "--dht needs a place followers can fetch the feed from: give --feed-url URL (where `{}` is served) or --web-seed URL",
            crate::manifest::feed::Feed::file_name(&args.dataset)
        )));
    }
    if !(0.0..=1.0).contains(&args.repack_above) {
        return Err(Failure::Usage(anyhow!(
            "--repack-above must be between 0 and 1, not {}",
            args.repack_above
        )));
    }
    let created =
        parse_created(args.created.as_deref(), env).map_err(|e| Failure::Usage(anyhow!(e)))?;
    Ok(PublishPlan {
        release_dir: args.release_dir.clone(),
        dataset: args.dataset.clone(),
        version: args.version.clone(),
        store: args.store.clone(),
        parent: args.parent.clone(),
        shard_items: args.shard_items as usize,
        repack_above: args.repack_above,
        trackers: args.trackers.clone(),
        // BEP 19 clients (libtorrent) append the torrent's name and file paths only
        // to a URL that ends in a slash: a folder.
        web_seeds: args
            .web_seeds
            .iter()
            .map(|w| {
                if w.ends_with('/') || w.contains('?') {
                    w.clone()
                } else {
                    format!("{w}/")
                }
            })
            .collect(),
        key: args
            .key
            .clone()
            .unwrap_or_else(|| default_key_path(|k| env.var(k))),
        created,
        piece_length: args.piece_length,
        direct_io: env.var("SEEDPOOL_NO_DIRECT_IO").is_none(),
        feed_valid_for: args.feed_valid_for.as_secs(),
        timings: env.var("SEEDPOOL_TIMINGS").is_some(),
    })
}

pub fn run(args: PublishArgs, env: &mut Env) -> CommandResult {
    let plan = plan(&args, env)?;
    let out = &mut env.out;
    let bars = out.progress();
    let result = publish::run(&plan, &bars);
    bars.finish();
    let report = result.map_err(|e| match e {
        PublishError::Key(KeyError::NoKey { .. })
        | PublishError::BadPieceLength(_)
        | PublishError::PieceLengthChange { .. }
        | PublishError::SameVersion(_) => Failure::Usage(e.into()),
        e => Failure::Data(anyhow::Error::new(e).context(format!(
            "failed to publish `{}`",
            plan.release_dir.display()
        ))),
    })?;
    let dht_pointer = pointer_step(
        &plan.store,
        &plan.dataset,
        &plan.key,
        &args.feed_urls,
        args.dht.then(|| args.dht_net.options()),
    )?;
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        if let Some(p) = &dht_pointer {
            value["dht_pointer"] = serde_json::to_value(p)?;
        }
        out.json(&value)?;
        return Ok(());
    }
    let w = &mut out.out;
    if report.already_published {
        writeln!(
            w,
            "{} {} was already published with this exact content; nothing changed",
            report.dataset, report.version
        )?;
    }
    writeln!(w, "published {} {}", report.dataset, report.version)?;
    if let Some(parent) = &report.parent {
        writeln!(
            w,
            "  parent {parent}: {} new, {} changed, {} removed items; {} shards reused, {} repacked",
            report.new_items, report.changed_items, report.removed_items, report.reused_shards, report.repacked_shards
        )?;
    }
    writeln!(
        w,
        "  {} items in {} shards ({} new), {} tombstones",
        report.items, report.shards, report.new_shards, report.tombstones
    )?;
    writeln!(
        w,
        "  {} in the release, {} new; piece length {}",
        human_bytes(report.bytes),
        human_bytes(report.new_bytes),
        human_bytes(report.piece_length)
    )?;
    writeln!(w, "  manifest  {}", report.manifest.display())?;
    writeln!(w, "  torrent   {}", report.torrent.display())?;
    writeln!(w, "  feed      {}", report.feed.display())?;
    writeln!(w, "  info hash {}", report.info_hash)?;
    writeln!(w, "  card      {}", report.card.display())?;
    if let Some(p) = &dht_pointer {
        write_pointer(w, p)?;
    }
    Ok(())
}

/// The DHT pointer after the feed changed (`swarm::dht::publish_pointer`). A failure
/// here comes after the release or feed is safely in the store: running the command
/// again retries it.
pub(super) fn pointer_step(
    store: &std::path::Path,
    dataset: &DatasetName,
    key_path: &std::path::Path,
    feed_urls: &[String],
    dht: Option<crate::swarm::dht::DhtOptions>,
) -> Result<Option<crate::swarm::dht::PointerReport>, Failure> {
    let path = crate::manifest::pointer::path(store, dataset);
    if dht.is_none() && feed_urls.is_empty() && !path.exists() {
        return Ok(None);
    }
    let key = crate::signing::PublisherKey::load(key_path).map_err(|e| Failure::Usage(e.into()))?;
    crate::swarm::dht::publish_pointer(store, dataset, &key, feed_urls, dht.as_ref()).map(Some).map_err(|e| {
        let usage = matches!(
            e,
            crate::swarm::dht::DhtError::Pointer(
                crate::manifest::pointer::PointerError::NoUrl { .. }
                    | crate::manifest::pointer::PointerError::TooLarge { .. }
                    | crate::manifest::pointer::PointerError::TooManyUrls { .. }
            )
        );
        let e = anyhow::Error::new(e).context(
            "the store is up to date, but its DHT pointer is not: fix this and run the command again",
        );
        if usage {
            Failure::Usage(e)
        } else {
            Failure::Data(e)
        }
    })
}

pub(super) fn write_pointer(
    w: &mut dyn Write,
    p: &crate::swarm::dht::PointerReport,
) -> std::io::Result<()> {
    match p.stored_at {
        Some(n) => writeln!(
            w,
            "  dht       sequence {} put on {n} nodes; follow with `{}`",
            p.sequence, p.magnet
        ),
        None => writeln!(
            w,
            "  dht       {} re-signed (sequence {}); `seed` or `--dht` puts it in the DHT",
            p.path.display(),
            p.sequence
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// A release folder of `items` small items, a store path and a key file in `dir`.
    fn release_and_key(dir: &Path, items: usize) -> (PathBuf, PathBuf, PathBuf) {
        let (rel, store, key) = (dir.join("rel"), dir.join("store"), dir.join("k.key"));
        std::fs::create_dir(&rel).unwrap();
        for i in 0..items {
            std::fs::write(rel.join(format!("item-{i}.txt")), format!("payload {i}")).unwrap();
        }
        crate::signing::PublisherKey::from_seed([1; 32])
            .save(&key, false)
            .unwrap();
        (rel, store, key)
    }

    #[test]
    fn publish_and_verify_print_what_they_did() {
        let t = tempfile::tempdir().unwrap();
        let (rel, store, key) = release_and_key(t.path(), 3);
        let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
        let args = [
            "seedpool",
            "publish",
            &s(&rel),
            "--dataset",
            "ds",
            "--version",
            "1",
            "--store",
            &s(&store),
            "--key",
            &s(&key),
            "--created",
            "0",
        ];
        let mut env = Env::new(args, t.path());
        assert_eq!(super::super::run(&mut env), 0, "{}", env.out.stderr());
        let text = env.out.stdout();
        assert!(
            text.starts_with("published ds 1\n  3 items in 1 shards (1 new), 0 tombstones\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "  manifest  {}",
                store.join("ds-1.manifest.json").display()
            )),
            "{text}"
        );

        let manifest = s(&store.join("ds-1.manifest.json"));
        let mut env = Env::new(
            ["seedpool", "verify", &manifest, "--store", &s(&store)],
            t.path(),
        );
        assert_eq!(super::super::run(&mut env), 0);
        let out = &env.out;
        let public = crate::signing::PublisherKey::from_seed([1; 32]).public_hex();
        assert!(
            out.stdout()
                .starts_with(&format!("ok: ds 1: signature by {public}, torrent ")),
            "{}",
            out.stdout()
        );
        assert!(
            out.stderr().is_empty(),
            "piped output must stay quiet: {}",
            out.stderr()
        );
    }

    #[test]
    fn dht_without_a_feed_url_is_refused_before_anything_is_published() {
        let t = tempfile::tempdir().unwrap();
        let (rel, store, key) = release_and_key(t.path(), 1);
        let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
        let (rel, store_s, key) = (s(&rel), s(&store), s(&key));
        let base = [
            "seedpool",
            "publish",
            &rel,
            "--dataset",
            "ds",
            "--version",
            "1",
            "--store",
            &store_s,
            "--key",
            &key,
            "--created",
            "0",
            "--dht",
        ];
        let mut env = Env::new(base, t.path());
        assert_eq!(super::super::run(&mut env), 2);
        assert!(
            env.out
                .stderr()
                .contains("--dht needs a place followers can fetch the feed"),
            "{}",
            env.out.stderr()
        );
        assert!(!store.exists());
        let mut args = base.to_vec();
        args.extend(["--feed-url", "ftp://mirror/ds.feed.json"]);
        let mut env = Env::new(args, t.path());
        assert_eq!(super::super::run(&mut env), 2);
        assert!(
            env.out.stderr().contains("feed URL `ftp://"),
            "{}",
            env.out.stderr()
        );
        assert!(!store.exists());
    }
}
