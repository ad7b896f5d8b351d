//! `seedpool follow`: keep a pool up to date from a dataset's signed feed
//! (`manifest::feed`). Each round reads the feed, checks its signature against the
//! pinned publisher key, refuses a sequence lower than the last one accepted
//! (rollback) and a feed past its expiry (freeze), then syncs, oldest first, each
//! release newer than the pool's that the feed lists. Every manifest must hash as the
//! feed says, so a mirror can serve the files but cannot choose the release.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::dht::{self, DhtError, DhtOptions};
use super::sync::{self, SyncError, SyncPlan, SyncReport};
use super::{Event, Events};
use crate::manifest::feed::{Feed, FeedError, MAX_FEED_BYTES};
use crate::manifest::format_time;
use crate::manifest::pointer::{self, SignedPointer};
use crate::pool::feeds::{self, FeedState};
use crate::pool::{Pool, PoolError};

pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

#[derive(Clone)]
pub struct FollowPlan {
    /// The feed: a path or an http(s) URL, with the manifests and torrents beside it;
    /// or a `magnet:?xs=urn:btpk:…&s=<dataset>` link, resolved in the DHT each round.
    pub feed: String,
    /// How to reach the DHT, for a magnet link.
    pub dht: DhtOptions,
    pub pool: PathBuf,
    /// Poll again this often, until SIGINT or SIGTERM; `None` for one round.
    pub watch: Option<Duration>,
    /// The publisher key to require (hex), on top of the one the pool pinned.
    pub key: Option<String>,
    /// Accept a feed signed by another key than the pinned one.
    pub trust_key: bool,
    /// How each release is synced; `manifest` and the checks are filled in per release.
    pub sync: SyncPlan,
    pub clock: Clock,
    pub signals: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct FollowReport {
    pub dataset: String,
    pub sequence: u64,
    pub expires: String,
    /// The newest release the feed lists.
    pub newest: Option<String>,
    pub synced: Vec<SyncReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Feed(#[from] FeedError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error("cannot resolve `{link}`: {source}")]
    Dht {
        link: String,
        #[source]
        source: DhtError,
    },
    #[error("the DHT points to feed sequence {seq} of `{dataset}`, but no feed URL it lists served it: {reasons}. Nothing changed")]
    NoFeed {
        dataset: String,
        seq: i64,
        reasons: String,
    },
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("cannot read the pool's feed state: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("failed to sync `{manifest}`: {source}")]
    Sync {
        manifest: String,
        #[source]
        source: Box<SyncError>,
    },
    #[error("feed `{feed}` is signed by `{found}`, but `{pinned}` is the key {why}; pass --trust-key if the publisher really changed keys. Nothing changed")]
    Key {
        feed: String,
        found: String,
        pinned: String,
        why: &'static str,
    },
    #[error("feed `{feed}` has sequence {sequence}, lower than the {seen} this pool accepted before: someone is replaying an old feed to hide newer releases (a rollback). Nothing changed")]
    Rollback {
        feed: String,
        sequence: u64,
        seen: u64,
    },
    #[error("feed `{feed}` expired at {expires} (it is {now} now): the publisher has not re-signed it, or a mirror keeps serving a stale copy to freeze followers on old releases. Nothing changed; ask the publisher to run `seedpool feed refresh`")]
    Expired {
        feed: String,
        expires: String,
        now: String,
    },
}

/// Follows until done (one round) or until a signal (with `watch`); returns the report
/// of every round that succeeded.
pub fn run(plan: &FollowPlan, events: &dyn Events) -> Result<Vec<FollowReport>, FollowError> {
    let mut reports = Vec::new();
    let mut failures = 0u32;
    loop {
        match round(plan, events) {
            Ok(Some(report)) => {
                failures = 0;
                reports.push(report);
            }
            // A signal during a sync: what arrived is kept for the next run.
            Ok(None) => return Ok(reports),
            Err(e) if plan.watch.is_none() => return Err(e),
            Err(e) => {
                failures += 1;
                events.emit(Event::Note {
                    message: format!("{:#}", anyhow::Error::from(e)),
                });
            }
        }
        let Some(every) = plan.watch else {
            return Ok(reports);
        };
        // After failures, wait longer each time (up to a day), so a broken mirror is
        // not hammered.
        let wait = if failures == 0 {
            every
        } else {
            (every * 2u32.pow(failures.min(10))).min(Duration::from_secs(24 * 3600).max(every))
        };
        events.emit(Event::Note {
            message: format!(
                "next look at the feed in {}",
                humantime::format_duration(wait)
            ),
        });
        if wait_or_signal(wait, plan.signals) {
            return Ok(reports);
        }
    }
}

/// Sleeps `wait`; true when a signal came first.
fn wait_or_signal(wait: Duration, signals: bool) -> bool {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        std::thread::sleep(wait);
        return false;
    };
    rt.block_on(async {
        tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = super::shutdown_signal(signals) => true,
        }
    })
}

/// Reads and checks the feed at a path or URL.
fn read_feed(source: &str) -> Result<Feed, FollowError> {
    if crate::http::is_url(source) {
        let bytes = crate::http::get_blocking(source, MAX_FEED_BYTES)?;
        Ok(Feed::from_slice(&bytes, Path::new(source))?)
    } else {
        Ok(Feed::load(Path::new(source))?.0)
    }
}

/// The feed of this round and where it came from (the manifests lie beside it). A
/// magnet link is resolved in the DHT, then the pointer's URLs are tried in turn.
fn locate(plan: &FollowPlan, events: &dyn Events) -> Result<(String, Feed), FollowError> {
    if !plan.feed.starts_with("magnet:") {
        return Ok((plan.feed.clone(), read_feed(&plan.feed)?));
    }
    let dht_err = |source| FollowError::Dht {
        link: plan.feed.clone(),
        source,
    };
    let (key, dataset) = pointer::parse_magnet(&plan.feed).map_err(|problem| {
        dht_err(DhtError::Pointer(pointer::PointerError::Invalid {
            origin: plan.feed.clone(),
            problem,
        }))
    })?;
    let found = dht::resolve(&key, &dataset, &plan.dht).map_err(dht_err)?;
    events.emit(Event::Note {
        message: format!(
            "the DHT points to feed sequence {} of {dataset} (newest release {})",
            found.seq, found.info_hash
        ),
    });
    let mut reasons = Vec::new();
    for url in &found.urls {
        match feed_at(url, &found, &key) {
            Ok(feed) => return Ok((url.clone(), feed)),
            Err(why) => reasons.push(format!("{url}: {why}")),
        }
    }
    if reasons.is_empty() {
        reasons.push("it lists none".into());
    }
    Err(FollowError::NoFeed {
        dataset: dataset.to_string(),
        seq: found.seq,
        reasons: reasons.join("; "),
    })
}

/// The feed at `url` if it is the one the pointer names, or a newer one by the same
/// key (the publisher published again before the DHT caught up).
fn feed_at(url: &str, found: &SignedPointer, key: &str) -> Result<Feed, String> {
    let bytes = crate::http::get_blocking(url, MAX_FEED_BYTES).map_err(|e| e.to_string())?;
    let feed = Feed::from_slice(&bytes, Path::new(url)).map_err(|e| e.to_string())?;
    if feed.public_key() != Some(key) || feed.dataset != found.dataset {
        return Err("it is another publisher's or another dataset's feed".into());
    }
    let same = blake3::hash(&bytes).to_hex().as_str() == found.feed_blake3;
    match i64::try_from(feed.sequence) {
        Ok(seq) if same || seq > found.seq => Ok(feed),
        _ => Err(format!(
            "it serves sequence {}, not the feed the DHT names",
            feed.sequence
        )),
    }
}

/// Where a file named in the feed lies: beside the feed.
fn beside(feed: &str, name: &str) -> String {
    if crate::http::is_url(feed) {
        super::fetch::sibling_url(feed, name)
    } else {
        Path::new(feed)
            .parent()
            .unwrap_or(Path::new("."))
            .join(name)
            .to_string_lossy()
            .into_owned()
    }
}

/// One round: check the feed, then sync what the pool lacks. `None` when a signal
/// stopped a sync.
fn round(plan: &FollowPlan, events: &dyn Events) -> Result<Option<FollowReport>, FollowError> {
    let (origin, feed) = locate(plan, events)?;
    let dataset = feed.dataset.as_str().to_string();
    let found = feed.public_key().unwrap_or_default().to_string();
    let now = (plan.clock)();

    let (have, state) = {
        let pool = Pool::open_or_create(&plan.pool)?;
        let conn = pool.connection();
        let pinned = feeds::pinned_key(conn, &dataset)?;
        let state = feeds::get(conn, &dataset)?;
        // (key, why it is required, whether --trust-key overrides it)
        let required = [
            (plan.key.clone(), "given with --key", false),
            (
                pinned,
                "the pool pinned on its first sync of this dataset",
                true,
            ),
            (
                state.as_ref().map(|s| s.public_key.clone()),
                "of the feed this pool accepted before",
                true,
            ),
        ];
        for (key, why, overridable) in required {
            let Some(key) = key else { continue };
            if key != found && !(overridable && plan.trust_key) {
                return Err(FollowError::Key {
                    feed: plan.feed.clone(),
                    found,
                    pinned: key,
                    why,
                });
            }
        }
        if let Some(seen) = &state {
            if feed.sequence < seen.sequence {
                return Err(FollowError::Rollback {
                    feed: plan.feed.clone(),
                    sequence: feed.sequence,
                    seen: seen.sequence,
                });
            }
        }
        if now >= feed.expires_at() {
            return Err(FollowError::Expired {
                feed: plan.feed.clone(),
                expires: feed.expires.clone(),
                now: format_time(now),
            });
        }
        (feeds::merged_versions(conn, &dataset)?, state)
    };
    let new_state = FeedState {
        sequence: feed.sequence,
        published: feed.published.clone(),
        expires: feed.expires.clone(),
        public_key: found.clone(),
        source: plan.feed.clone(),
        checked_at: format_time(now),
    };
    // Kept before any download, so a rollback is refused even if this round's syncs
    // fail (a first merge keeps it: see `pool::merge`).
    record(&plan.pool, &dataset, &new_state)?;

    // Newest first in the feed: the releases after the newest one the pool holds.
    let newest_held = feed
        .releases
        .iter()
        .position(|e| have.iter().any(|v| v == e.version.as_str()));
    let todo: Vec<_> = feed
        .releases
        .iter()
        .take(newest_held.unwrap_or(feed.releases.len()))
        .rev()
        .collect();
    if state.is_none() && plan.key.is_none() && have.is_empty() {
        events.emit(Event::Note {
            message: format!(
                "first look at `{}`: trusting publisher key {found}",
                plan.feed
            ),
        });
    }
    events.emit(Event::Feed {
        dataset: dataset.clone(),
        sequence: feed.sequence,
        expires: feed.expires.clone(),
        releases: feed.releases.len() as u64,
        to_sync: todo.iter().map(|e| e.version.to_string()).collect(),
    });
    let mut synced = Vec::new();
    for entry in todo {
        let manifest = beside(&origin, &entry.manifest);
        let sync_plan = SyncPlan {
            manifest: manifest.clone(),
            manifest_blake3: Some(entry.manifest_blake3.clone()),
            manifest_key: Some(found.clone()),
            signals: plan.signals,
            ..plan.sync.clone()
        };
        match sync::run(&sync_plan, events) {
            Ok(r) => synced.push(r),
            Err(SyncError::Interrupted) => return Ok(None),
            Err(source) => {
                return Err(FollowError::Sync {
                    manifest,
                    source: Box::new(source),
                })
            }
        }
    }
    Ok(Some(FollowReport {
        dataset,
        sequence: feed.sequence,
        expires: feed.expires.clone(),
        newest: feed.releases.first().map(|e| e.version.to_string()),
        synced,
    }))
}

fn record(pool: &Path, dataset: &str, state: &FeedState) -> Result<(), FollowError> {
    let pool = Pool::open_or_create(pool)?;
    feeds::record(pool.connection(), dataset, state)?;
    Ok(())
}
