//! `seedpool seed` and `seedpool sync`: arguments → plans → `swarm::{seed, sync}`, and
//! the one view of swarm events both share: bars on a terminal, log lines when piped,
//! JSON lines with `--json`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::output::human_bytes;
use super::{parse_size, CommandResult, Env, Failure, Output};
use crate::swarm::seed::{self, SeedError, SeedPlan};
use crate::swarm::sync::{self, SyncError, SyncPlan, WebSeedPlan, WebSeedPolicy};
use crate::swarm::webseed::{SourceStat, WebSeedOptions};
use crate::swarm::{Event, Events, SwarmError, SwarmOptions};

/// How to reach the swarm; shared by `seed` and `sync`.
#[derive(Args, Debug)]
pub(super) struct SwarmArgs {
    /// Do not use the mainline DHT to find peers.
    #[arg(long)]
    no_dht: bool,
    /// Do not announce to the trackers the torrent names.
    #[arg(long)]
    no_trackers: bool,
    /// Most bytes per second to upload, e.g. `20MiB` (no limit by default).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    upload_limit: Option<u64>,
    /// Most bytes per second to download, e.g. `50MiB` (no limit by default).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    download_limit: Option<u64>,
    /// Threads for the BitTorrent engine: 1 (one thread, fastest on small machines),
    /// N for N threads, 0 for one per core.
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,
    /// Print events as JSON lines on stdout (progress, files, result).
    #[arg(long)]
    pub json: bool,
}

impl SwarmArgs {
    fn options(&self, listen: SocketAddr) -> SwarmOptions {
        SwarmOptions {
            listen,
            dht: !self.no_dht,
            trackers: !self.no_trackers,
            upload_limit: self.upload_limit,
            download_limit: self.download_limit,
            threads: self.threads,
        }
    }
}

/// How to reach the mainline DHT for the dataset pointer (BEP 46); shared by
/// `publish`, `feed refresh`, `seed` and `follow`.
#[derive(Args, Debug, Default)]
pub(super) struct DhtArgs {
    /// A DHT node to join through, `HOST:PORT`, instead of the public routers; repeat
    /// for more (a private or test DHT).
    #[arg(
        long = "dht-bootstrap",
        value_name = "HOST:PORT",
        env = "SEEDPOOL_DHT_BOOTSTRAP",
        value_delimiter = ','
    )]
    bootstrap: Vec<String>,
}

impl DhtArgs {
    pub fn options(&self) -> crate::swarm::dht::DhtOptions {
        crate::swarm::dht::DhtOptions {
            bootstrap: self.bootstrap.clone(),
        }
    }
}

/// Seed releases from a store (or a pool) until Ctrl-C.
///
/// Every release of a dataset shares the store's one copy of each shard. Each file is
/// checked against the torrent's piece hashes before seeding starts, so a damaged store
/// is reported instead of served. Peers find the seeder through the manifests'
/// trackers, the DHT, or by dialing --listen directly.
#[derive(Args, Debug)]
pub struct SeedArgs {
    /// Manifests of the releases to seed (`STORE/<dataset>-<version>.manifest.json`).
    #[arg(required = true)]
    manifests: Vec<PathBuf>,
    /// The store (or pool) holding the releases' files.
    #[arg(long, env = "SEEDPOOL_STORE")]
    store: PathBuf,
    /// Address to accept peers on (TCP and uTP); port 0 picks a free one.
    #[arg(long, default_value = "0.0.0.0:6881")]
    listen: SocketAddr,
    /// Also serve the releases' files over plain HTTP on this address, read-only, as a
    /// BEP 19 web seed: `http://ADDR/<dataset>/shards/<id>.tar`, the index, and each
    /// manifest and torrent at `http://ADDR/<dataset>-<version>.manifest.json`. Answers
    /// Range, HEAD and If-None-Match (the ETag is the file's blake3), so curl, wget,
    /// aria2, libtorrent and `seedpool sync --web-seed` can all fetch from it.
    #[arg(long, value_name = "ADDR", env = "SEEDPOOL_HTTP")]
    http: Option<SocketAddr>,
    /// DHT pointers (`STORE/<dataset>.dht.json`, see `publish --dht`) are put into the
    /// DHT at start and every hour, so followers' magnet links keep resolving; this
    /// happens when the DHT is on, or when --dht-bootstrap names a DHT to use for them.
    #[command(flatten)]
    dht: DhtArgs,
    #[command(flatten)]
    swarm: SwarmArgs,
}

/// Download a release into a pool: only the shards it lacks, verified, then merged.
///
/// Reads the manifest (a path, or an http(s) URL with the torrent beside it) and checks
/// its signature; the pool pins the publisher key on first sync. Shards the pool holds
/// from earlier releases are not fetched again. Files download into
/// POOL/.seedpool-sync/ and enter POOL/<dataset>/shards/ only after their blake3
/// matches the manifest; the release is then merged in one transaction. A killed or
/// interrupted sync resumes where it stopped when run again.
#[derive(Args, Debug)]
pub struct SyncArgs {
    /// The release's manifest: a local path or an http(s) URL.
    manifest: String,
    /// Accept a manifest signed by another key than the one the pool pinned.
    #[arg(long)]
    trust_key: bool,
    /// Accept a release older than the newest one the pool holds.
    #[arg(long)]
    allow_older: bool,
    #[command(flatten)]
    fetch: FetchArgs,
}

/// Where and how a download goes: shared by `sync` and `follow`.
#[derive(Args, Debug)]
pub(super) struct FetchArgs {
    /// The pool folder (created when missing or empty).
    #[arg(long, env = "SEEDPOOL_POOL")]
    pub pool: PathBuf,
    /// A peer to dial, `IP:PORT`; repeat for more.
    #[arg(long = "peer", value_name = "ADDR")]
    peers: Vec<SocketAddr>,
    /// Fetch only the shards holding items that match this SQL condition on the
    /// release index's `items` table, e.g. `volume LIKE '3x4-%'` or
    /// `key IN (SELECT key FROM tags WHERE tag = 'hatsune_miku')`. The index comes first;
    /// the pool then knows every item, with the unselected shards marked not present.
    #[arg(long = "where", value_name = "SQL")]
    selection: Option<String>,
    /// Address to accept peers on while downloading; port 0 picks a free one.
    #[arg(long, default_value = "0.0.0.0:0")]
    listen: SocketAddr,
    /// Give up when no data arrives for this long, e.g. `90s` or `10m`.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    limits: super::LimitArgs,
    #[command(flatten)]
    web: WebSeedArgs,
    #[command(flatten)]
    pub swarm: SwarmArgs,
}

impl FetchArgs {
    /// The plan that syncs `manifest` into the pool.
    pub fn sync_plan(&self, manifest: String, env: &Env) -> Result<SyncPlan, Failure> {
        Ok(SyncPlan {
            manifest,
            pool: self.pool.clone(),
            peers: self.peers.clone(),
            selection: self.selection.clone(),
            trust_key: false,
            allow_older: false,
            phash_distance: 3,
            swarm: self.swarm.options(self.listen),
            stall_timeout: self.timeout,
            index_limit: self.limits.index_limit(),
            tuning: super::merge::tuning(env),
            signals: env.signals,
            web_seeds: self.web.plan()?,
            manifest_blake3: None,
            manifest_key: None,
        })
    }
}

/// HTTP web seeds (BEP 19): where sync turns when the swarm does not deliver.
#[derive(Args, Debug)]
struct WebSeedArgs {
    /// A web seed to use on top of those the manifest and torrent name: an HTTP(S)
    /// folder holding `<dataset>/shards/<id>.tar` (a `seedpool seed --http` mirror, or
    /// any static server that answers Range requests). Repeat for more.
    #[arg(long = "web-seed", value_name = "URL")]
    web_seeds: Vec<String>,
    /// Never download over HTTP, only from the swarm.
    #[arg(long, env = "SEEDPOOL_NO_WEB_SEEDS")]
    no_web_seeds: bool,
    /// When to use the web seeds: `fallback` once the swarm has sent nothing for
    /// --web-seed-after (or at once when no peer can be found), `alongside` from the
    /// start, on files the swarm has not begun.
    #[arg(long, value_enum, default_value_t = PolicyArg::Fallback, value_name = "WHEN")]
    web_seed_policy: PolicyArg,
    /// How long the swarm may send nothing before the web seeds take over.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    web_seed_after: Duration,
    /// HTTP connections at once, over all web seeds.
    #[arg(long, default_value_t = 4, value_name = "N")]
    web_seed_connections: usize,
    /// Drop a web seed that sends nothing for this long.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    web_seed_timeout: Duration,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum PolicyArg {
    Fallback,
    Alongside,
}

impl WebSeedArgs {
    fn plan(&self) -> Result<WebSeedPlan, Failure> {
        for url in &self.web_seeds {
            crate::http::check_url(url, &["http", "https"])
                .map_err(|problem| Failure::Usage(anyhow!("--web-seed `{url}` {problem}")))?;
        }
        if self.web_seed_connections == 0 || self.web_seed_connections > 64 {
            return Err(Failure::Usage(anyhow!(
                "--web-seed-connections must be between 1 and 64, not {}",
                self.web_seed_connections
            )));
        }
        Ok(WebSeedPlan {
            policy: match (self.no_web_seeds, self.web_seed_policy) {
                (true, _) => WebSeedPolicy::Off,
                (false, PolicyArg::Fallback) => WebSeedPolicy::Fallback,
                (false, PolicyArg::Alongside) => WebSeedPolicy::Alongside,
            },
            extra: self.web_seeds.clone(),
            after: self.web_seed_after,
            options: WebSeedOptions {
                connections: self.web_seed_connections,
                read_timeout: self.web_seed_timeout,
                ..WebSeedOptions::default()
            },
        })
    }
}

pub fn run_seed(args: SeedArgs, env: &mut Env) -> CommandResult {
    let out = &mut env.out;
    let plan = SeedPlan {
        manifests: args.manifests.clone(),
        store: args.store.clone(),
        swarm: args.swarm.options(args.listen),
        report_every: if out.color() {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        },
        stop: None,
        signals: env.signals,
        http: args.http,
        dht_pointers: (!args.swarm.no_dht || !args.dht.bootstrap.is_empty())
            .then(|| args.dht.options()),
    };
    let view = View::new(out, args.swarm.json);
    let result = seed::run(&plan, &view);
    view.finish();
    let uploaded = result.map_err(|e| match e {
        SeedError::Swarm(SwarmError::Listen { .. }) | SeedError::HttpListen { .. } => {
            Failure::Usage(anyhow!(e))
        }
        e => Failure::Data(anyhow!(e).context("failed to seed")),
    })?;
    if args.swarm.json {
        out.json(&serde_json::json!({"event": "result", "uploaded": uploaded}))?;
    } else {
        writeln!(out.err, "stopped; uploaded {}", human_bytes(uploaded))?;
    }
    Ok(())
}

pub fn run_sync(args: SyncArgs, env: &mut Env) -> CommandResult {
    // The manifest is a URL or a path; only a path resolves against the folder.
    let manifest = if crate::http::is_url(&args.manifest) {
        args.manifest.clone()
    } else {
        env.path(args.manifest.as_ref())
            .to_string_lossy()
            .into_owned()
    };
    let plan = SyncPlan {
        trust_key: args.trust_key,
        allow_older: args.allow_older,
        ..args.fetch.sync_plan(manifest, env)?
    };
    let json = args.fetch.swarm.json;
    let out = &mut env.out;
    let view = View::new(out, json);
    let result = sync::run(&plan, &view);
    view.finish();
    let r = result.map_err(|e| match e {
        SyncError::Swarm(SwarmError::Listen { .. }) => Failure::Usage(anyhow!(e)),
        e => Failure::Data(anyhow!(e).context(format!("failed to sync `{}`", plan.manifest))),
    })?;
    if json {
        let mut value = serde_json::to_value(&r)?;
        value["event"] = "result".into();
        out.json(&value)?;
        return Ok(());
    }
    write_summary(&mut out.out, &r, &plan.pool)?;
    Ok(())
}

/// What a sync did, for a person.
pub(super) fn write_summary(
    w: &mut dyn Write,
    r: &sync::SyncReport,
    pool: &std::path::Path,
) -> std::io::Result<()> {
    writeln!(
        w,
        "synced {} {} into `{}` in {:.1} s",
        r.dataset,
        r.version,
        pool.display(),
        r.seconds
    )?;
    writeln!(
        w,
        "  {} shards: {} downloaded ({}; {} received{}), {} already in the pool{}",
        r.shards,
        r.shards_downloaded,
        human_bytes(r.bytes_downloaded),
        human_bytes(r.bytes_received),
        if r.bytes_from_web_seeds > 0 {
            format!(
                ", {} of it from web seeds",
                human_bytes(r.bytes_from_web_seeds)
            )
        } else {
            String::new()
        },
        r.shards_in_pool,
        if r.shards_not_selected > 0 {
            format!(", {} not selected", r.shards_not_selected)
        } else {
            String::new()
        }
    )?;
    if let Some(items) = r.selected_items {
        writeln!(w, "  {items} items match --where")?;
    }
    let m = &r.merge;
    if m.already_merged {
        writeln!(
            w,
            "  the release was merged before; its new shards are recorded"
        )?;
    } else {
        writeln!(
            w,
            "  merged: {} added, {} changed, {} restored, {} removed, {} unchanged; {} live items",
            m.added, m.changed, m.restored, m.removed, m.unchanged, m.items
        )?;
    }
    if m.shards_missing > 0 {
        writeln!(
            w,
            "  {} of the release's shards are in the pool, {} known but not downloaded",
            m.shards_present, m.shards_missing
        )?;
    }
    Ok(())
}

/// Draws swarm events: bars on a terminal, a log line every few seconds when piped, or
/// JSON lines. Events arrive on one thread, hence the `RefCell`.
pub(super) struct View<'a> {
    out: RefCell<&'a mut Output>,
    json: bool,
    bars: Option<Bars>,
    last_log: RefCell<Instant>,
    last_seed_line: RefCell<(u64, u64)>,
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    files: RefCell<BTreeMap<String, ProgressBar>>,
}

/// Most per-file bars shown at once; the total bar covers the rest.
const FILE_BARS: usize = 4;

impl<'a> View<'a> {
    pub(super) fn new(out: &'a mut Output, json: bool) -> Self {
        let bars = (out.color() && !json).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let total = multi.add(ProgressBar::new(0));
            total.set_style(
                ProgressStyle::with_template("{spinner} {msg}").expect("valid template"),
            );
            total.enable_steady_tick(Duration::from_millis(120));
            Bars {
                multi,
                total,
                files: RefCell::new(BTreeMap::new()),
            }
        });
        Self {
            out: RefCell::new(out),
            json,
            bars,
            last_log: RefCell::new(Instant::now()),
            last_seed_line: RefCell::new((0, 0)),
        }
    }

    pub(super) fn finish(&self) {
        if let Some(b) = &self.bars {
            for bar in b.files.borrow().values() {
                bar.finish_and_clear();
            }
            b.total.finish_and_clear();
        }
    }

    fn log(&self, line: &str) {
        if let Some(b) = &self.bars {
            let _ = b.multi.println(line);
        } else {
            let _ = writeln!(self.out.borrow_mut().err, "{line}");
        }
    }

    fn draw_progress(
        &self,
        have: u64,
        total: u64,
        rate: f64,
        peers: u64,
        active: &[(String, u64, u64)],
        web_seeds: &[SourceStat],
    ) {
        let sources = sources_text(peers, web_seeds);
        let Some(b) = &self.bars else {
            let mut last = self.last_log.borrow_mut();
            if last.elapsed() >= Duration::from_secs(5) {
                *last = Instant::now();
                drop(last);
                self.log(&format!(
                    "{} of {} ({:.0}%), {}/s, {sources}",
                    human_bytes(have),
                    human_bytes(total),
                    100.0 * have as f64 / total.max(1) as f64,
                    human_bytes(rate as u64)
                ));
            }
            return;
        };
        if b.total.length() != Some(total) {
            b.total.set_style(
                ProgressStyle::with_template(
                    "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b.total.set_length(total);
        }
        b.total.set_position(have);
        b.total.set_message(sources);
        let mut files = b.files.borrow_mut();
        files.retain(|name, bar| {
            let keep = active.iter().any(|(n, _, _)| n == name);
            if !keep {
                bar.finish_and_clear();
                b.multi.remove(bar);
            }
            keep
        });
        for (name, got, size) in active {
            if !files.contains_key(name) && files.len() >= FILE_BARS {
                continue;
            }
            let bar = files.entry(name.clone()).or_insert_with(|| {
                let bar = b.multi.add(ProgressBar::new(*size));
                bar.set_style(
                    ProgressStyle::with_template("  {msg:30!} [{bar:30}] {bytes}/{total_bytes}")
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                bar.set_message(short_name(name));
                bar
            });
            bar.set_position(*got);
        }
    }
}

/// "3 peers", then each web seed by host with what it sent, or that it was dropped.
fn sources_text(peers: u64, web_seeds: &[SourceStat]) -> String {
    let mut text = format!("{peers} peers");
    for s in web_seeds {
        let host = url::Url::parse(&s.url)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| {
                    u.port()
                        .map_or_else(|| h.to_string(), |p| format!("{h}:{p}"))
                })
            })
            .unwrap_or_else(|| s.url.clone());
        match &s.dropped {
            Some(_) => text.push_str(&format!(", {host} dropped")),
            None => text.push_str(&format!(", {host} {}", human_bytes(s.bytes))),
        }
    }
    text
}

/// `shards/<64 hex>.tar` → `shards/<12 hex>….tar` for a bar label.
fn short_name(path: &str) -> String {
    match path.strip_prefix("shards/") {
        Some(rest) if rest.len() > 20 => format!("shard {}…", &rest[..12]),
        _ => path.to_string(),
    }
}

impl Events for View<'_> {
    fn emit(&self, event: Event) {
        if self.json {
            let _ = self.out.borrow_mut().json(&event);
            return;
        }
        match event {
            Event::Listening { addr } => self.log(&format!("listening for peers on {addr}")),
            Event::Ready {
                addr,
                releases,
                http,
            } => self.log(&format!(
                "seeding {releases} release(s); accepting peers on {addr}{}; Ctrl-C stops",
                http.map(|u| format!(", web seed at {u}"))
                    .unwrap_or_default()
            )),
            Event::Seeding {
                dataset,
                version,
                info_hash,
                files,
                bytes,
                resumed,
                check_seconds,
            } => self.log(&format!(
                "checked {dataset} {version}: {files} files, {} in {check_seconds:.1} s{} (info hash {info_hash})",
                human_bytes(bytes),
                if resumed {
                    ", resumed from the pieces verified before"
                } else {
                    ""
                }
            )),
            Event::SeedStats {
                peers,
                uploaded,
                upload_rate,
                http_sent,
            } => {
                let line = format!(
                    "{peers} peers, uploaded {}, {}/s{}",
                    human_bytes(uploaded),
                    human_bytes(upload_rate as u64),
                    if http_sent > 0 {
                        format!("; {} over HTTP", human_bytes(http_sent))
                    } else {
                        String::new()
                    }
                );
                match &self.bars {
                    Some(b) => b.total.set_message(line),
                    // A log gets a line when something changed, not a heartbeat.
                    None => {
                        let mut last = self.last_seed_line.borrow_mut();
                        if (peers, uploaded) != *last {
                            *last = (peers, uploaded);
                            drop(last);
                            self.log(&line);
                        }
                    }
                }
            }
            Event::Plan {
                dataset,
                version,
                phase,
                files,
                bytes,
                ..
            } => self.log(&format!(
                "{dataset} {version}: fetching {files} {} ({})",
                match phase {
                    crate::swarm::Phase::Index => "index file",
                    crate::swarm::Phase::Shards => "files",
                },
                human_bytes(bytes)
            )),
            Event::Progress {
                have,
                total,
                rate,
                peers,
                active,
                web_seeds,
                ..
            } => self.draw_progress(have, total, rate, peers, &active, &web_seeds),
            Event::Verified { .. } => {}
            Event::Refetch { file, problem } => self.log(&format!(
                "`{file}` failed its check ({problem}); fetching it again"
            )),
            Event::Note { message } => self.log(&message),
            Event::Feed {
                dataset,
                sequence,
                expires,
                releases,
                to_sync,
            } => self.log(&format!(
                "feed of {dataset}: sequence {sequence}, {releases} release(s), valid until {expires}; {}",
                if to_sync.is_empty() {
                    "the pool is up to date".to_string()
                } else {
                    format!("syncing {}", to_sync.join(", "))
                }
            )),
        }
    }
}
