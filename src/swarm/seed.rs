//! `seedpool seed`: seed releases from a store (or a pool, which has the same layout).
//!
//! Every release's torrent points librqbit at the same `<dataset>/` folder, so a shard
//! shared by ten releases is one file on disk seeded by ten torrents. Files are checked
//! before librqbit sees them: librqbit creates missing files when it opens a torrent,
//! which would plant empty shards in the store.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use librqbit::{ManagedTorrent, Session, TorrentStatsState};

use super::{Event, Events, SwarmError, SwarmOptions, TICK};
use crate::files::{file_error, FileError};
use crate::http::server::{Catalog, Entry, Stats};
use crate::manifest::{Manifest, ManifestError};
use crate::store::{Store, StoreError};
use crate::torrent::Metainfo;

#[derive(Clone, Debug)]
pub struct SeedPlan {
    pub manifests: Vec<PathBuf>,
    pub store: PathBuf,
    pub swarm: SwarmOptions,
    /// How often to report totals.
    pub report_every: Duration,
    /// Stops seeding when set (besides Ctrl-C and SIGTERM); for seeding in-process.
    pub stop: Option<Arc<AtomicBool>>,
    /// Stop on SIGINT or SIGTERM too (a process of its own does; a seeder inside a test
    /// must leave its runner's signals alone).
    pub signals: bool,
    /// Also serve the files over HTTP here, as a web seed (`http::server`).
    pub http: Option<std::net::SocketAddr>,
    /// Put the seeded datasets' DHT pointers (`<dataset>.dht.json` in the store) into
    /// the DHT now and every `POINTER_EVERY`, so they outlive the DHT's expiry.
    pub dht_pointers: Option<super::dht::DhtOptions>,
}

/// DHT nodes keep a BEP 44 item about two hours: put it again well before.
pub const POINTER_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    #[error("torrent `{path}`: {problem}")]
    Torrent { path: PathBuf, problem: String },
    #[error("`{path}` is missing or damaged ({problem}); run `seedpool verify` on the store")]
    Damaged { path: PathBuf, problem: String },
    #[error("no release to seed")]
    Nothing,
    #[error("cannot serve HTTP on {addr}: {problem} (pick another address with --http)")]
    HttpListen {
        addr: std::net::SocketAddr,
        problem: String,
    },
}

/// Seeds until Ctrl-C or SIGTERM; returns the bytes uploaded.
pub fn run(plan: &SeedPlan, events: &dyn Events) -> Result<u64, SeedError> {
    let rt = super::runtime(plan.swarm.threads)?;
    let result = rt.block_on(run_async(plan, events));
    rt.shutdown_timeout(Duration::from_millis(500));
    result
}

struct Seeded {
    handle: Arc<ManagedTorrent>,
    dataset_dir: PathBuf,
    torrent: Metainfo,
}

/// The files of the seeded releases by web-seed URL path: each file of each torrent
/// under `/<torrent name>/`, and each manifest and torrent at the top, where `sync` looks
/// for a torrent beside its manifest.
fn catalog(releases: &[(Manifest, Metainfo, Vec<u8>, Store, PathBuf)]) -> Catalog {
    let mut c = Catalog::default();
    for (m, torrent, torrent_bytes, store, manifest_path) in releases {
        let blake3_of: std::collections::BTreeMap<String, String> = m
            .shards
            .iter()
            .map(|s| (format!("shards/{}.tar", s.id), s.id.to_hex()))
            .chain([(m.index.path.clone(), m.index.blake3.clone())])
            .collect();
        for f in torrent.data_files() {
            let Some(blake3) = blake3_of.get(&f.path) else {
                continue;
            };
            let content_type = if f.path.ends_with(".tar") {
                "application/x-tar"
            } else {
                "application/zstd"
            };
            c.insert(
                format!("/{}/{}", torrent.name, f.path),
                Entry {
                    path: store.dataset_dir().join(&f.path),
                    size: f.length,
                    blake3: blake3.clone(),
                    content_type,
                    mutable: false,
                },
            );
        }
        // The feed changes as releases are published: served as it is at each request.
        let feed = store
            .dataset_dir()
            .with_file_name(crate::manifest::feed::Feed::file_name(&m.dataset));
        if feed.is_file() {
            c.insert(
                format!("/{}", crate::manifest::feed::Feed::file_name(&m.dataset)),
                Entry {
                    path: feed,
                    size: 0,
                    blake3: String::new(),
                    content_type: "application/json",
                    mutable: true,
                },
            );
        }
        let version = m.version_name();
        let torrent_path = store.torrent_path(&version);
        for (path, size, hash, content_type) in [
            (
                manifest_path.clone(),
                std::fs::metadata(manifest_path).map_or(0, |md| md.len()),
                crate::files::hash_file(manifest_path).map(|h| h.to_hex().to_string()),
                "application/json",
            ),
            (
                torrent_path.clone(),
                torrent_bytes.len() as u64,
                Ok(blake3::hash(torrent_bytes).to_hex().to_string()),
                "application/x-bittorrent",
            ),
        ] {
            let (Ok(blake3), Some(name)) = (hash, path.file_name()) else {
                continue;
            };
            c.insert(
                format!("/{}", name.to_string_lossy()),
                Entry {
                    path,
                    size,
                    blake3,
                    content_type,
                    mutable: false,
                },
            );
        }
    }
    c
}

/// Reads a manifest and its torrent from the store and checks that every file is there
/// with its size (piece hashes are checked by librqbit when it opens the torrent).
fn prepare(
    manifest: &Path,
    store_root: &Path,
) -> Result<(Manifest, Metainfo, Vec<u8>, Store), SeedError> {
    let (m, _) = Manifest::load(manifest)?;
    let store = Store::open(store_root, &m.dataset_name())?;
    let torrent_path = store.torrent_path(&m.version_name());
    let bytes = std::fs::read(&torrent_path).map_err(file_error("read", &torrent_path))?;
    let torrent = Metainfo::parse(&bytes).map_err(|e| SeedError::Torrent {
        path: torrent_path.clone(),
        problem: e.to_string(),
    })?;
    if torrent.info_hash != m.torrent.info_hash {
        return Err(SeedError::Torrent {
            path: torrent_path,
            problem: format!(
                "info hash `{}`, the manifest `{}` names `{}`",
                torrent.info_hash.to_hex(),
                manifest.display(),
                m.torrent.info_hash
            ),
        });
    }
    for f in torrent.data_files() {
        let path = store.dataset_dir().join(&f.path);
        match std::fs::metadata(&path) {
            Ok(md) if md.len() == f.length => {}
            Ok(md) => {
                return Err(SeedError::Damaged {
                    path,
                    problem: format!("{} bytes, the torrent says {}", md.len(), f.length),
                })
            }
            Err(e) => {
                return Err(SeedError::Damaged {
                    path,
                    problem: e.to_string(),
                })
            }
        }
    }
    Ok((m, torrent, bytes, store))
}

async fn run_async(plan: &SeedPlan, events: &dyn Events) -> Result<u64, SeedError> {
    if plan.manifests.is_empty() {
        return Err(SeedError::Nothing);
    }
    let mut releases = Vec::new();
    for manifest in &plan.manifests {
        let (m, torrent, bytes, store) = prepare(manifest, &plan.store)?;
        releases.push((m, torrent, bytes, store, manifest.clone()));
    }
    let http = match plan.http {
        Some(addr) => {
            let listener =
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| SeedError::HttpListen {
                        addr,
                        problem: e.to_string(),
                    })?;
            let local = listener.local_addr().map_err(|e| SeedError::HttpListen {
                addr,
                problem: e.to_string(),
            })?;
            Some((listener, local, catalog(&releases)))
        }
        None => None,
    };
    // A store the seeder may not write to (a read-only mirror) is seeded all the same,
    // checked in full at every start.
    let resume = match super::resume::Resume::open(&plan.store) {
        Ok(r) => Some(r),
        Err(e) => {
            events.emit(Event::Note {
                message: format!("{e}: every start will hash every piece"),
            });
            None
        }
    };
    let session = super::session(&plan.swarm, &plan.store, resume.as_ref()).await?;
    let result = seed_all(&session, plan, events, releases, http, resume.as_ref()).await;
    session.cancellation_token().cancel();
    result
}

async fn seed_all(
    session: &Arc<Session>,
    plan: &SeedPlan,
    events: &dyn Events,
    releases: Vec<(Manifest, Metainfo, Vec<u8>, Store, PathBuf)>,
    http: Option<(tokio::net::TcpListener, std::net::SocketAddr, Catalog)>,
    resume: Option<&super::resume::Resume>,
) -> Result<u64, SeedError> {
    let mut seeded = Vec::new();
    let mut seeded_manifests = Vec::new();
    for (m, torrent, bytes, store, _) in releases {
        let dir = store.dataset_dir();
        let started = Instant::now();
        let resumed = resume.is_some_and(|r| r.offer(&torrent, &dir));
        let handle = super::add(session, &torrent.name, &bytes, &dir, None, &[]).await?;
        handle
            .wait_until_initialized()
            .await
            .map_err(|e| SwarmError::Torrent {
                name: torrent.name.clone(),
                problem: format!("{e:#}"),
            })?;
        let s = Seeded {
            handle,
            dataset_dir: dir,
            torrent,
        };
        check_complete(&s)?;
        if let Some(Err(e)) = resume.map(|r| r.save(&s.torrent, &s.dataset_dir)) {
            events.emit(Event::Note {
                message: format!("{e}: the next start will hash every piece"),
            });
        }
        events.emit(Event::Seeding {
            dataset: m.dataset.to_string(),
            version: m.version.to_string(),
            info_hash: m.torrent.info_hash.to_hex(),
            files: s.torrent.data_files().count() as u64,
            bytes: s.torrent.data_files().map(|f| f.length).sum(),
            resumed,
            check_seconds: started.elapsed().as_secs_f64(),
        });
        seeded.push(s);
        seeded_manifests.push((m.dataset.clone(), store.dataset_dir()));
    }
    let addr = session
        .listen_addr()
        .map_or_else(|| "nowhere".to_string(), |a| a.to_string());
    // HTTP comes up only once every file passed librqbit's piece check above, so a
    // damaged store is never served over HTTP either.
    let http_stats = Arc::new(Stats::default());
    let mut http_url = None;
    let server = http.map(|(listener, local, catalog)| {
        http_url = Some(format!("http://{local}/"));
        let stats = Arc::clone(&http_stats);
        tokio::spawn(async move {
            crate::http::server::serve(listener, catalog, stats, std::future::pending()).await
        })
    });
    let (notes, notes_rx) = std::sync::mpsc::channel();
    let keeper = plan.dht_pointers.clone().and_then(|opts| {
        let pointers = pointers(&seeded_manifests, events);
        (!pointers.is_empty()).then(|| {
            tokio::spawn(super::dht::keep_alive(
                pointers,
                opts,
                POINTER_EVERY,
                move |m| {
                    let _ = notes.send(m);
                },
            ))
        })
    });
    events.emit(Event::Ready {
        addr,
        releases: seeded.len() as u64,
        http: http_url,
    });
    let result = seed_loop(plan, events, &seeded, &http_stats, &notes_rx).await;
    if let Some(server) = server {
        server.abort();
    }
    if let Some(keeper) = keeper {
        keeper.abort();
    }
    let uploaded = seeded.iter().map(|s| s.handle.stats().uploaded_bytes).sum();
    for s in &seeded {
        let _ = session.delete(s.handle.id().into(), false).await;
    }
    result.map(|()| uploaded)
}

/// Reports totals until told to stop; fails when a torrent fails.
async fn seed_loop(
    plan: &SeedPlan,
    events: &dyn Events,
    seeded: &[Seeded],
    http_stats: &Stats,
    notes: &std::sync::mpsc::Receiver<String>,
) -> Result<(), SeedError> {
    let stop = super::shutdown_signal(plan.signals);
    tokio::pin!(stop);
    let mut last = (Instant::now(), 0u64);
    let mut last_report = Instant::now();
    let mut rate = 0.0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = &mut stop => break,
        }
        while let Ok(message) = notes.try_recv() {
            events.emit(Event::Note { message });
        }
        if plan
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            break;
        }
        let mut uploaded = 0u64;
        let mut peers = 0;
        for s in seeded {
            let stats = s.handle.stats();
            if let TorrentStatsState::Error = stats.state {
                return Err(SwarmError::Torrent {
                    name: s.torrent.name.clone(),
                    problem: stats.error.unwrap_or_default(),
                }
                .into());
            }
            uploaded += stats.uploaded_bytes;
            peers += super::peers(&stats);
        }
        let now = Instant::now();
        let dt = now.duration_since(last.0).as_secs_f64();
        if dt >= 1.0 {
            let instant = uploaded.saturating_sub(last.1) as f64 / dt;
            rate = 0.5 * rate + 0.5 * instant;
            last = (now, uploaded);
        }
        if now.duration_since(last_report) >= plan.report_every {
            last_report = now;
            events.emit(Event::SeedStats {
                peers,
                uploaded,
                upload_rate: rate,
                http_sent: http_stats.bytes.load(Ordering::Relaxed),
            });
        }
    }
    Ok(())
}

/// The checked DHT pointers the store keeps for the seeded datasets, once each. One
/// that fails its check is reported and left out: seeding goes on without it.
fn pointers(
    seeded: &[(crate::name::DatasetName, PathBuf)],
    events: &dyn Events,
) -> Vec<crate::manifest::pointer::SignedPointer> {
    let mut out: Vec<crate::manifest::pointer::SignedPointer> = Vec::new();
    for (dataset, dir) in seeded {
        let path = dir.with_file_name(crate::manifest::pointer::SignedPointer::file_name(dataset));
        if out.iter().any(|p| &p.dataset == dataset) || !path.is_file() {
            continue;
        }
        match crate::manifest::pointer::SignedPointer::load(&path) {
            Ok(p) if &p.dataset == dataset => out.push(p),
            Ok(_) => events.emit(Event::Note {
                message: format!(
                    "{} names another dataset: not put in the DHT",
                    path.display()
                ),
            }),
            Err(e) => events.emit(Event::Note {
                message: format!("{e}: not put in the DHT"),
            }),
        }
    }
    out
}

/// After librqbit's piece check every file must be complete: a flipped byte in the
/// store would otherwise be served as "missing" and quietly re-downloaded by nobody.
fn check_complete(s: &Seeded) -> Result<(), SeedError> {
    let stats = s.handle.stats();
    for (i, f) in s.torrent.files.iter().enumerate() {
        if f.pad {
            continue;
        }
        let have = stats.file_progress.get(i).copied().unwrap_or(0);
        if have != f.length {
            return Err(SeedError::Damaged {
                path: s.dataset_dir.join(&f.path),
                problem: format!(
                    "only {have} of its {} bytes pass the torrent's piece hashes",
                    f.length
                ),
            });
        }
    }
    Ok(())
}
