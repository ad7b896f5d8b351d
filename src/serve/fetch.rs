//! "Fetch these": a selective sync of exactly the shards behind a view, run on a thread
//! of its own while the pages keep serving, one at a time.
//!
//! The sync is `swarm::sync` itself, on the dataset's newest release as the pool keeps
//! its manifest, with a selection naming the shards: it takes the pool's lock, checks
//! every shard, and merges in one transaction, so a page never sees half of it. Its
//! events land in a `FetchStatus` that `/api/fetch` returns and the pages poll.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::index::IndexLimit;
use crate::pool::merge::Tuning;
use crate::swarm::sync::{self, SyncPlan};
use crate::swarm::{Event, Events, SwarmOptions};

/// How fetches reach the swarm: `serve`'s own flags.
#[derive(Clone)]
pub struct FetchOptions {
    pub peers: Vec<SocketAddr>,
    pub swarm: SwarmOptions,
    pub stall_timeout: Duration,
    pub index_limit: IndexLimit,
    /// The merge's knobs; `merged_at` is set from `clock` when each fetch starts.
    pub tuning: Tuning,
    /// The time now, in Unix seconds: the command's clock, which a test may fix.
    pub clock: Clock,
}

pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

#[derive(Clone, Debug, Default, Serialize)]
pub struct FetchStatus {
    pub running: bool,
    /// The gallery query string the fetch was started from.
    pub view: Option<String>,
    /// Shards asked for, in all.
    pub shards: u64,
    /// Bytes of the wanted files on disk and checked, out of `total` (of the phase
    /// running now).
    pub have: u64,
    pub total: u64,
    pub rate: f64,
    pub peers: u64,
    /// Shards checked and moved into the pool so far.
    pub verified: u64,
    pub finished: bool,
    pub error: Option<String>,
    /// What each dataset's sync did, as lines.
    pub log: Vec<String>,
}

impl FetchStatus {
    pub fn summary(&self) -> String {
        if let Some(e) = &self.error {
            return format!("fetch failed: {e}");
        }
        if self.running {
            return format!(
                "fetching {} shards: {} of {} checked ({} of {} bytes, {} peers)",
                self.shards, self.verified, self.shards, self.have, self.total, self.peers
            );
        }
        if self.finished {
            return format!("fetched {} shards; the view is up to date", self.shards);
        }
        "no fetch has run".to_string()
    }
}

/// One dataset's part of a fetch: its newest manifest and the shards wanted from it.
#[derive(Clone, Debug)]
pub struct Wanted {
    pub dataset: String,
    pub manifest: PathBuf,
    pub shards: Vec<String>,
}

struct Recorder(Arc<Mutex<FetchStatus>>);

impl Events for Recorder {
    fn emit(&self, event: Event) {
        let Ok(mut s) = self.0.lock() else { return };
        match event {
            Event::Progress {
                have,
                total,
                rate,
                peers,
                ..
            } => {
                s.have = have;
                s.total = total;
                s.rate = rate;
                s.peers = peers;
            }
            Event::Verified { .. } => s.verified += 1,
            Event::Note { message } => s.log.push(message),
            Event::Refetch { file, problem } => {
                s.log.push(format!("{file}: {problem}; fetched again"))
            }
            _ => {}
        }
    }
}

/// Starts a fetch unless one is running; returns false when one is.
pub fn start(
    status: &Arc<Mutex<FetchStatus>>,
    pool: PathBuf,
    options: &FetchOptions,
    view: String,
    wanted: Vec<Wanted>,
) -> bool {
    {
        let Ok(mut s) = status.lock() else {
            return false;
        };
        if s.running {
            return false;
        }
        *s = FetchStatus {
            running: true,
            view: Some(view),
            shards: wanted.iter().map(|w| w.shards.len() as u64).sum(),
            ..FetchStatus::default()
        };
    }
    let status = Arc::clone(status);
    let options = options.clone();
    // A thread of its own: the sync runs its own async runtime, which cannot start
    // inside the server's.
    std::thread::spawn(move || {
        let mut error = None;
        let mut log = Vec::new();
        for w in wanted {
            let selection = format!(
                "shard IN ({})",
                w.shards
                    .iter()
                    .map(|s| crate::query::filter::sql_text(s))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let mut tuning = options.tuning.clone();
            tuning.merged_at = (options.clock)();
            let plan = SyncPlan {
                manifest: w.manifest.to_string_lossy().into_owned(),
                pool: pool.clone(),
                peers: options.peers.clone(),
                selection: Some(selection),
                trust_key: false,
                allow_older: false,
                phash_distance: 3,
                swarm: options.swarm.clone(),
                stall_timeout: options.stall_timeout,
                index_limit: options.index_limit,
                tuning,
                signals: false,
                web_seeds: Default::default(),
                manifest_blake3: None,
                manifest_key: None,
            };
            match sync::run(&plan, &Recorder(Arc::clone(&status))) {
                Ok(r) => log.push(format!(
                    "{} {}: {} shards downloaded ({} bytes), {} already in the pool",
                    r.dataset, r.version, r.shards_downloaded, r.bytes_downloaded, r.shards_in_pool
                )),
                Err(e) => {
                    error = Some(format!("{}: {:#}", w.dataset, anyhow::Error::from(e)));
                    break;
                }
            }
        }
        if let Ok(mut s) = status.lock() {
            s.running = false;
            s.finished = error.is_none();
            s.error = error;
            s.log.extend(log);
        }
    });
    true
}
