//! The BitTorrent side: librqbit sessions that seed releases from a store or a pool, and
//! download the files a pool lacks.
//!
//! librqbit is async (tokio); the rest of seedpool is not. Each command builds one
//! runtime, runs one future on it with `block_on`, and reports through `Events` from
//! that future only, so the CLI's sinks can borrow its output.

pub mod dht;
pub mod fetch;
pub mod follow;
pub mod resume;
pub mod seed;
pub mod sync;
pub mod webseed;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use librqbit::limits::LimitsConfig;
use librqbit::{
    AddTorrent, AddTorrentOptions, DhtSessionConfig, ListenerMode, ListenerOptions, ManagedTorrent,
    Session, SessionOptions, SessionPersistenceConfig, TorrentStats,
};
use serde::Serialize;

/// How a command joins the swarm.
#[derive(Clone, Debug)]
pub struct SwarmOptions {
    /// Where to accept peers (TCP and uTP). Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Find peers through the mainline DHT.
    pub dht: bool,
    /// Announce to the trackers the torrent names.
    pub trackers: bool,
    /// Bytes per second, `None` for no limit.
    pub upload_limit: Option<u64>,
    pub download_limit: Option<u64>,
    /// Threads for the BitTorrent engine: 1 runs it on one thread (the default), more
    /// gives tokio that many workers, 0 one per core. See `runtime`.
    pub threads: usize,
}

impl SwarmOptions {
    /// Loopback only, no DHT, no trackers: what tests and the demo use.
    pub fn loopback() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            dht: false,
            trackers: false,
            upload_limit: None,
            download_limit: None,
            threads: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("cannot listen on {addr}: {problem} (is another seedpool or BitTorrent client using that port? pick another with --listen)")]
    Listen { addr: SocketAddr, problem: String },
    #[error("cannot start the BitTorrent session: {0}")]
    Session(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("torrent `{name}`: {problem}")]
    Torrent { name: String, problem: String },
}

/// What long swarm work reports; the CLI turns these into bars, log lines or JSON.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The session accepts peers here.
    Listening { addr: String },
    /// A release is being seeded.
    Seeding {
        dataset: String,
        version: String,
        info_hash: String,
        files: u64,
        bytes: u64,
        /// Started from the pieces an earlier seeder verified (see `resume`) instead of
        /// hashing every piece.
        resumed: bool,
        /// How long the torrent took to open and check.
        check_seconds: f64,
    },
    /// Every release is checked and seeded; peers can connect.
    Ready {
        addr: String,
        releases: u64,
        /// The web-seed URL (`seed --http`), for `sync --web-seed` and BEP 19 clients.
        #[serde(skip_serializing_if = "Option::is_none")]
        http: Option<String>,
    },
    /// Seeding totals across every release, every few seconds.
    SeedStats {
        peers: u64,
        uploaded: u64,
        upload_rate: f64,
        /// Body bytes sent over HTTP (`seed --http`).
        http_sent: u64,
    },
    /// What a sync is about to fetch.
    Plan {
        dataset: String,
        version: String,
        phase: Phase,
        files: u64,
        bytes: u64,
        /// Shards of the release the pool already has.
        shards_in_pool: u64,
    },
    /// Download progress, a few times a second.
    Progress {
        phase: Phase,
        /// Bytes of the wanted files on disk and checked, out of `total`.
        have: u64,
        total: u64,
        /// Bytes received from peers so far by this run.
        fetched: u64,
        rate: f64,
        peers: u64,
        eta_seconds: Option<f64>,
        /// Files partly downloaded: (name, have, size).
        active: Vec<(String, u64, u64)>,
        /// The web seeds in use, with the checked bytes each sent.
        web_seeds: Vec<webseed::SourceStat>,
    },
    /// A downloaded file passed its blake3 check and is in the pool.
    Verified { file: String, bytes: u64 },
    /// A downloaded file failed its blake3 check and is fetched again.
    Refetch { file: String, problem: String },
    /// A feed `follow` accepted, and the releases it is about to sync.
    Feed {
        dataset: String,
        sequence: u64,
        expires: String,
        releases: u64,
        to_sync: Vec<String>,
    },
    /// A line worth logging.
    Note { message: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Index,
    Shards,
}

/// Receives events. Called only from the thread that runs the command.
pub trait Events {
    fn emit(&self, event: Event);
}

/// Drops every event.
pub struct Quiet;

impl Events for Quiet {
    fn emit(&self, _: Event) {}
}

/// The runtime the engine runs on. librqbit moves every chunk's disk write and read off
/// the async workers with `block_in_place`, which on a multi-threaded runtime hands the
/// worker to another thread each time; on one thread it just calls the function. One
/// thread moved 1 GiB over loopback 1.5x faster on 2 cores (docs/performance.md), and
/// leaves the other cores to blake3 checks, which run on tokio's blocking pool anyway.
pub(crate) fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, SwarmError> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            b.worker_threads(threads);
        }
        b
    };
    builder
        .enable_all()
        .thread_name("seedpool-swarm")
        .build()
        .map_err(SwarmError::Runtime)
}

fn limit(bps: Option<u64>) -> Option<NonZeroU32> {
    bps.and_then(|b| NonZeroU32::new(b.min(u64::from(u32::MAX)) as u32))
}

/// Starts a librqbit session: listening where asked, no local service discovery, no
/// UPnP, and no persistence (seedpool keeps its own state in the pool) but, for a
/// seeder, the pieces it verified before (`resume`).
pub(crate) async fn session(
    opts: &SwarmOptions,
    default_folder: &Path,
    resume: Option<&resume::Resume>,
) -> Result<Arc<Session>, SwarmError> {
    let dht = opts.dht.then(|| DhtSessionConfig {
        persistence: None,
        ..Default::default()
    });
    let options = SessionOptions {
        dht,
        persistence: resume.map(|r| SessionPersistenceConfig::Json {
            folder: Some(r.scratch().to_path_buf()),
        }),
        fastresume: resume.is_some(),
        disable_trackers: !opts.trackers,
        disable_local_service_discovery: true,
        listen: Some(ListenerOptions {
            mode: ListenerMode::TcpAndUtp,
            listen_addr: opts.listen,
            enable_upnp_port_forwarding: false,
            ipv4_only: opts.listen.is_ipv4(),
            ..Default::default()
        }),
        ratelimits: LimitsConfig {
            upload_bps: limit(opts.upload_limit),
            download_bps: limit(opts.download_limit),
        },
        client_name_and_version: Some(format!("seedpool {}", env!("CARGO_PKG_VERSION"))),
        ..Default::default()
    };
    Session::new_with_opts(default_folder.to_path_buf(), options)
        .await
        .map_err(|e| {
            let text = format!("{e:#}");
            if text.contains("listener") {
                SwarmError::Listen {
                    addr: opts.listen,
                    problem: root_cause(&e),
                }
            } else {
                SwarmError::Session(text)
            }
        })
}

fn root_cause(e: &anyhow::Error) -> String {
    e.chain()
        .last()
        .map_or_else(|| e.to_string(), ToString::to_string)
}

/// Adds a torrent from its bytes. `only_files` are indexes in the torrent's file list,
/// pad entries included (as librqbit counts them).
pub(crate) async fn add(
    session: &Arc<Session>,
    name: &str,
    torrent: &[u8],
    folder: &Path,
    only_files: Option<Vec<usize>>,
    peers: &[SocketAddr],
) -> Result<Arc<ManagedTorrent>, SwarmError> {
    let options = AddTorrentOptions {
        output_folder: Some(folder.to_string_lossy().into_owned()),
        only_files,
        // Needed to open files that exist: librqbit then checks their pieces and
        // fetches only what is missing or bad.
        overwrite: true,
        initial_peers: (!peers.is_empty()).then(|| peers.to_vec()),
        ..Default::default()
    };
    let failed = |problem: String| SwarmError::Torrent {
        name: name.to_string(),
        problem,
    };
    let response = session
        .add_torrent(AddTorrent::from_bytes(torrent.to_vec()), Some(options))
        .await
        .map_err(|e| failed(format!("{e:#}")))?;
    response
        .into_handle()
        .ok_or_else(|| failed("librqbit listed the torrent instead of adding it".into()))
}

/// Live peers of a torrent.
pub(crate) fn peers(stats: &TorrentStats) -> u64 {
    stats
        .live
        .as_ref()
        .map_or(0, |l| u64::from(l.snapshot.peer_stats.live))
}

/// Seconds a poll loop waits between looks at librqbit's stats.
pub(crate) const TICK: Duration = Duration::from_millis(200);

/// Resolves on Ctrl-C or SIGTERM when `listen`; never otherwise.
pub(crate) async fn shutdown_signal(listen: bool) {
    use tokio::signal::unix::{signal, SignalKind};
    if !listen {
        return std::future::pending().await;
    }
    let mut term = signal(SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
