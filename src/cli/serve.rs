//! `seedpool serve`: arguments → `ServePlan` → `serve::start`, then wait for Ctrl-C.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;

use super::{CommandResult, Env, Failure};
use crate::serve::{self, FetchOptions, ServePlan};
use crate::swarm::SwarmOptions;

/// Serve a web page over a pool: overview, gallery, items, hit-parades, SQL.
///
/// Opens the pool read-only and serves, until Ctrl-C, pages that need no internet
/// access: an overview of its datasets and releases, a gallery of thumbnails read from
/// the shards and filtered by tags, booru, rating, year, faces, quality and score (the
/// filter lives in the URL), each item with its face boxes, tags, statistics and
/// history, every hit-parade as a form, table and chart, a release review, a read-only
/// SQL console, and every page's data as JSON under /api/. "fetch these" on a view
/// downloads the shards behind it that the pool lacks (a selective `seedpool sync`).
///
/// It binds 127.0.0.1 by default and then answers only requests addressed to it. Any
/// other address requires a token on every request: --token, or one made up and printed
/// at start. docs/serve.md describes every page, the JSON API and the security model.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The pool folder.
    #[arg(long, env = "SEEDPOOL_POOL")]
    pool: PathBuf,
    /// Address to serve on; port 0 picks a free one. An address other than loopback
    /// needs a token.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SEEDPOOL_LISTEN")]
    listen: SocketAddr,
    /// Require this token on every request (as `?token=`, a cookie the first such
    /// request sets, or `Authorization: Bearer`). Made up when --listen is not loopback.
    #[arg(long, env = "SEEDPOOL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// ingest's report (RELEASE_DIR/ingest-report.tsv) of the newest release: the
    /// release review then lists the inputs ingest filtered or dropped as duplicates.
    #[arg(long, value_name = "FILE")]
    ingest_report: Option<PathBuf>,
    /// Let "extract these" write a view's files into a new folder under DIR (named
    /// `view-<unix time>`), as `seedpool extract` does. Off unless given; never inside
    /// the pool.
    #[arg(long, value_name = "DIR")]
    extract_to: Option<PathBuf>,
    /// Time limit of a query in the SQL console.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    sql_timeout: Duration,
    /// "fetch these": a peer to dial, `IP:PORT`; repeat for more.
    #[arg(long = "peer", value_name = "ADDR")]
    peers: Vec<SocketAddr>,
    /// "fetch these": do not use the mainline DHT to find peers.
    #[arg(long)]
    no_dht: bool,
    /// "fetch these": do not announce to the trackers.
    #[arg(long)]
    no_trackers: bool,
    /// "fetch these": address to accept peers on while downloading.
    #[arg(long, default_value = "0.0.0.0:0")]
    fetch_listen: SocketAddr,
    /// "fetch these": give up when no data arrives for this long.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    fetch_timeout: Duration,
    #[command(flatten)]
    limits: super::LimitArgs,
    /// Print the address as a JSON line on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ServeArgs, env: &mut Env) -> CommandResult {
    let tuning = super::merge::tuning(env);
    let plan = ServePlan {
        pool: args.pool.clone(),
        listen: args.listen,
        token: args.token.clone(),
        ingest_report: args.ingest_report.clone(),
        fetch: FetchOptions {
            peers: args.peers.clone(),
            swarm: SwarmOptions {
                listen: args.fetch_listen,
                dht: !args.no_dht,
                trackers: !args.no_trackers,
                ..SwarmOptions::loopback()
            },
            stall_timeout: args.fetch_timeout,
            index_limit: args.limits.index_limit(),
            tuning,
            clock: env.clock_fn(),
        },
        sql_timeout: args.sql_timeout,
        scratch: env
            .var_str("TMPDIR")
            .map(|t| env.path(std::path::Path::new(&t)))
            .unwrap_or_else(|| PathBuf::from("/tmp")),
        extract_to: args.extract_to.clone(),
    };
    let mut server = serve::start(plan).map_err(|e| match e {
        serve::ServeError::Listen { .. }
        | serve::ServeError::Report { .. }
        | serve::ServeError::ExtractIntoPool(_) => Failure::Usage(anyhow!(e)),
        e => Failure::Data(anyhow!(e).context(format!("cannot serve `{}`", args.pool.display()))),
    })?;
    let out = &mut env.out;
    if args.json {
        out.json(&serde_json::json!({
            "event": "listening",
            "addr": server.addr.to_string(),
            "url": server.url(),
            "token": server.token,
        }))?;
    } else {
        writeln!(
            out.out,
            "serving `{}` at {} (Ctrl-C stops)",
            args.pool.display(),
            server.url()
        )?;
    }
    out.out.flush()?;
    if env.signals {
        let stop = server.stopper();
        let waiter = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::spawn(move || {
            waiter.block_on(crate::swarm::shutdown_signal(true));
            stop();
        });
    }
    server.join()?;
    Ok(())
}
