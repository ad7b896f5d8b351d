//! `seedpool follow` and `seedpool feed`: keep a pool up to date from a dataset's signed
//! feed, and re-sign a store's feed before it expires.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use clap::{Args, Subcommand};

use super::swarm::{write_summary, DhtArgs, FetchArgs, View};
use super::{CommandResult, Env, Failure};
use crate::manifest::feed;
use crate::name::DatasetName;
use crate::signing::{default_key_path, PublisherKey};
use crate::swarm::follow::{self, FollowError, FollowPlan};
use crate::swarm::sync::SyncError;
use crate::swarm::SwarmError;

/// Follow a dataset: sync every release its signed feed lists that the pool lacks,
/// oldest first, then (with --watch) keep looking for new ones.
///
/// FEED is `<dataset>.feed.json` from a store or mirror: a path, or an http(s) URL
/// such as `http://mirror:8080/booru-chars.feed.json` from `seedpool seed --http`. The
/// manifests and torrents lie beside it. FEED may also be the dataset's DHT link,
/// `magnet:?xs=urn:btpk:<publisher key>&s=<dataset>`, as `publish --dht` prints it:
/// each round then asks the mainline DHT where the newest feed is (BEP 46), needing no
/// fixed address, and the key in the link is required. The feed must be signed by the key the pool
/// pinned (or --key); a feed with a lower sequence number than one the pool accepted
/// (a rollback) or past its expiry (a freeze) is refused and nothing changes. Each
/// manifest must hash as the feed says. With --watch it runs until SIGINT or SIGTERM,
/// backing off after failures: ready to run as a service.
#[derive(Args, Debug)]
pub struct FollowArgs {
    /// The feed: a path, an http(s) URL, or a `magnet:?xs=urn:btpk:…&s=…` link.
    feed: String,
    /// Look at the feed again this often, e.g. `1h`, until SIGINT or SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "INTERVAL")]
    watch: Option<Duration>,
    /// The publisher's public key (hex, from `seedpool key show`): refuse a feed signed
    /// by any other, even on the first look.
    #[arg(long, value_name = "HEX")]
    key: Option<String>,
    /// Accept a feed signed by another key than the one the pool pinned.
    #[arg(long)]
    trust_key: bool,
    #[command(flatten)]
    dht: DhtArgs,
    #[command(flatten)]
    fetch: FetchArgs,
}

pub fn run_follow(args: FollowArgs, env: &mut Env) -> CommandResult {
    let mut key = args.key.as_ref().map(|k| k.to_ascii_lowercase());
    let feed = if args.feed.starts_with("magnet:") {
        let (link_key, _) = crate::manifest::pointer::parse_magnet(&args.feed)
            .map_err(|e| Failure::Usage(anyhow!(e)))?;
        if key.as_ref().is_some_and(|k| *k != link_key) {
            return Err(Failure::Usage(anyhow!(
                "--key {} is not the key of the magnet link ({link_key})",
                args.key.unwrap_or_default()
            )));
        }
        key = Some(link_key);
        args.feed.clone()
    } else if crate::http::is_url(&args.feed) {
        args.feed.clone()
    } else {
        env.path(args.feed.as_ref()).to_string_lossy().into_owned()
    };
    if let Some(k) = &args.key {
        if k.len() != 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Failure::Usage(anyhow!(
                "--key `{k}` is not a public key: 64 hex digits, as `seedpool key show` prints"
            )));
        }
    }
    if args.watch.is_some_and(|w| w < Duration::from_secs(1)) {
        return Err(Failure::Usage(anyhow!("--watch must be at least 1s")));
    }
    let plan = FollowPlan {
        feed,
        dht: args.dht.options(),
        pool: args.fetch.pool.clone(),
        watch: args.watch,
        key,
        trust_key: args.trust_key,
        sync: args.fetch.sync_plan(String::new(), env)?,
        clock: env.clock_fn(),
        signals: env.signals,
    };
    let json = args.fetch.swarm.json;
    let out = &mut env.out;
    let view = View::new(out, json);
    let result = follow::run(&plan, &view);
    view.finish();
    let reports = result.map_err(|e| {
        let usage = matches!(&e, FollowError::Sync { source, .. }
            if matches!(**source, SyncError::Swarm(SwarmError::Listen { .. })));
        if usage {
            Failure::Usage(anyhow!(e))
        } else {
            Failure::Data(anyhow!(e).context(format!("failed to follow `{}`", plan.feed)))
        }
    })?;
    if json {
        for r in &reports {
            let mut value = serde_json::to_value(r)?;
            value["event"] = "result".into();
            out.json(&value)?;
        }
        return Ok(());
    }
    for r in &reports {
        for s in &r.synced {
            write_summary(&mut out.out, s, &plan.pool)?;
        }
    }
    match reports.last() {
        Some(r) => writeln!(
            out.out,
            "{} is up to date with its feed (sequence {}, newest release {}, valid until {})",
            r.dataset,
            r.sequence,
            r.newest.as_deref().unwrap_or("none"),
            r.expires
        )?,
        None => writeln!(out.err, "stopped")?,
    }
    Ok(())
}

/// Manage a store's signed release feed (`<dataset>.feed.json`), which `publish`
/// keeps and `follow` reads.
#[derive(Subcommand, Debug)]
pub enum FeedCommand {
    /// Re-sign the feed with a higher sequence and a new expiry, with no new release:
    /// followers refuse an expired feed, so run this before it expires (from cron,
    /// say, weekly with the default 30 days).
    Refresh {
        /// The store holding the feed.
        #[arg(long, env = "SEEDPOOL_STORE")]
        store: PathBuf,
        #[arg(long)]
        dataset: String,
        /// Publisher key file (the one that signed the feed).
        /// [default: $XDG_CONFIG_HOME/seedpool/publisher.key]
        #[arg(long, env = "SEEDPOOL_KEY", value_name = "KEYFILE")]
        key: Option<PathBuf>,
        /// How long the re-signed feed stays valid.
        #[arg(long, default_value = "30days", value_parser = humantime::parse_duration, value_name = "DURATION")]
        valid_for: Duration,
        /// Also put the re-signed DHT pointer into the mainline DHT (see `publish --dht`).
        #[arg(long)]
        dht: bool,
        /// Where followers can fetch the feed, added to the DHT pointer's URLs.
        #[arg(long = "feed-url", value_name = "URL")]
        feed_urls: Vec<String>,
        #[command(flatten)]
        dht_net: DhtArgs,
        #[arg(long)]
        json: bool,
    },
}

pub fn run_feed(cmd: FeedCommand, env: &mut Env) -> CommandResult {
    let FeedCommand::Refresh {
        store,
        dataset,
        key,
        valid_for,
        dht,
        feed_urls,
        dht_net,
        json,
    } = cmd;
    let dataset = DatasetName::parse(&dataset).map_err(|e| Failure::Usage(anyhow!(e)))?;
    let key_path = key.unwrap_or_else(|| default_key_path(|k| env.var(k)));
    let key = PublisherKey::load(&env.path(&key_path)).map_err(|e| Failure::Usage(anyhow!(e)))?;
    let valid = valid_for.as_secs().max(1);
    for u in &feed_urls {
        crate::http::check_url(u, &["http", "https"])
            .map_err(|p| Failure::Usage(anyhow!("feed URL `{}` {p}", crate::name::shown(u))))?;
    }
    let store = env.path(&store);
    let f = feed::refresh(&store, &dataset, &key, env.now(), valid)
        .map_err(|e| Failure::Data(anyhow!(e).context("failed to refresh the feed")))?;
    let pointer = super::publish::pointer_step(
        &store,
        &dataset,
        &env.path(&key_path),
        &feed_urls,
        dht.then(|| dht_net.options()),
    )?;
    if json {
        env.out.json(&serde_json::json!({
            "dataset": dataset.as_str(),
            "sequence": f.sequence,
            "published": f.published,
            "expires": f.expires,
            "releases": f.releases.len(),
            "dht_pointer": pointer,
        }))?;
    } else {
        writeln!(
            env.out.out,
            "re-signed the feed of {dataset}: sequence {}, valid until {}",
            f.sequence, f.expires
        )?;
        if let Some(p) = &pointer {
            super::publish::write_pointer(&mut env.out.out, p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Env;

    fn follow(link: &str, extra: &[&str]) -> (i32, String) {
        let t = tempfile::tempdir().unwrap();
        let pool = t.path().join("pool");
        let mut args = vec!["seedpool", "follow", link, "--pool", pool.to_str().unwrap()];
        args.extend(extra);
        let mut env = Env::new(args, t.path());
        let code = super::super::run(&mut env);
        assert!(!pool.join("pool.sqlite").exists(), "nothing is written");
        (code, env.out.stderr())
    }

    #[test]
    fn a_bad_magnet_link_is_a_usage_error() {
        let (code, err) = follow("magnet:?xs=urn:btpk:1234&s=ds", &[]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("64-hex-digit public key"), "{err}");
        let key = "ab".repeat(32);
        let (code, err) = follow(&format!("magnet:?xs=urn:btpk:{key}"), &[]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("no `s=` naming the dataset"), "{err}");
        let other = "cd".repeat(32);
        let link = format!("magnet:?xs=urn:btpk:{key}&s=ds");
        let (code, err) = follow(&link, &["--key", &other]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("is not the key of the magnet link"), "{err}");
    }
}
