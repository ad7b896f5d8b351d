//! `seedpool serve`: a web page over a pool. Every page is one `query::browse` call,
//! rendered as HTML by `pages` and as JSON by serde from the same struct; pictures are
//! members read from their shards by offset and checked against their blake3.
//!
//! Safe by default (docs/serve.md, "Security"): it binds 127.0.0.1 and then answers only
//! requests whose Host names that address (a page elsewhere cannot reach it through
//! DNS rebinding); any other address needs a token on every request. Every parameter is
//! parsed into a bounded type, SQL runs only through the read-only authorizer, every
//! response carries a Content-Security-Policy, and no file is served but members the
//! pool lists, from shard files whose names it computes itself. The one write is the
//! sync that "fetch these" starts, which takes the pool's lock as `seedpool sync` does.

pub mod chart;
pub mod fetch;
pub mod pages;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::Markup;
use serde::Serialize;

use crate::pool::Pool;
use crate::query::browse::{self, BrowseError};
use crate::query::export::{ExportFormat, ExportPlan};
use crate::query::filter::{Filter, FilterError};
use crate::query::QueryError;
pub use fetch::{FetchOptions, FetchStatus};

/// Rows the SQL console shows at most.
pub const SQL_ROWS: usize = 1000;
/// The longest request target (path and query) served.
const MAX_TARGET: usize = 8 << 10;
/// Thumbnails per row of a hit-parade.
const ROW_THUMBS: usize = 4;
/// Items per group of a release review.
const REVIEW_ITEMS: usize = 48;
const CSP: &str = "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
const COOKIE: &str = "seedpool_token";

#[derive(Clone)]
pub struct ServePlan {
    pub pool: PathBuf,
    pub listen: SocketAddr,
    /// Required on every request when set; `start` makes one for a non-loopback bind.
    pub token: Option<String>,
    /// ingest's report of the newest release, for the release review.
    pub ingest_report: Option<PathBuf>,
    pub fetch: FetchOptions,
    /// The SQL console's time limit.
    pub sql_timeout: Duration,
    /// Where exports are written before they are sent (never inside the pool).
    pub scratch: PathBuf,
    /// Where "extract these" writes a view's files, one folder per extract; none turns
    /// it off. Never inside the pool.
    pub extract_to: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Pool(#[from] crate::pool::PoolError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the server stopped: {0}")]
    Stopped(std::io::Error),
    #[error("--extract-to `{0}` is inside the pool; serving never writes into the pool")]
    ExtractIntoPool(PathBuf),
    #[error("ingest report `{path}` cannot be read: {source}")]
    Report {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub token: Option<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), ServeError>>>,
}

impl Server {
    /// The address to open, with the token when one is needed.
    pub fn url(&self) -> String {
        match &self.token {
            Some(t) => format!("http://{}/?token={t}", self.addr),
            None => format!("http://{}/", self.addr),
        }
    }

    /// Stops serving (requests in flight finish first) and waits for the thread.
    pub fn stop(mut self) -> Result<(), ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.join()
    }

    /// Waits until the server stops by itself (it does not, unless it fails).
    pub fn join(mut self) -> Result<(), ServeError> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(ServeError::Stopped(std::io::Error::other(
                "the server thread panicked",
            ))),
            None => Ok(()),
        }
    }

    /// A handle that stops the server from another thread (a signal handler).
    pub fn stopper(&mut self) -> impl FnOnce() + Send + 'static {
        let tx = self.shutdown.take();
        move || {
            if let Some(tx) = tx {
                let _ = tx.send(());
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Binds, checks that the pool opens, and serves on a thread of its own.
pub fn start(mut plan: ServePlan) -> Result<Server, ServeError> {
    drop(Pool::open_read_only(&plan.pool)?);
    if let Some(path) = &plan.ingest_report {
        std::fs::metadata(path).map_err(|source| ServeError::Report {
            path: path.clone(),
            source,
        })?;
    }
    if let Some(dir) = &plan.extract_to {
        let inside = |d: &std::path::Path| {
            let pool = std::fs::canonicalize(&plan.pool).ok()?;
            // The folder may not exist yet: its nearest existing ancestor decides.
            let mut at = d.to_path_buf();
            while !at.exists() {
                at = at.parent()?.to_path_buf();
            }
            Some(std::fs::canonicalize(at).ok()?.starts_with(pool))
        };
        if inside(dir).unwrap_or(false) {
            return Err(ServeError::ExtractIntoPool(dir.clone()));
        }
    }
    let listener =
        std::net::TcpListener::bind(plan.listen).map_err(|source| ServeError::Listen {
            addr: plan.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: plan.listen,
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServeError::Listen { addr, source })?;
    plan.token = token_for(addr, plan.token.take())?;
    // Behind a loopback address only requests naming it are answered: a page on
    // another site that a DNS trick points at 127.0.0.1 sends its own Host.
    let hosts = addr.ip().is_loopback().then(|| {
        let port = addr.port();
        vec![
            addr.to_string(),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ]
    });
    let app = Arc::new(App {
        root: plan.pool.clone(),
        readers: Mutex::new(Vec::new()),
        token: plan.token.clone(),
        hosts,
        ingest_report: plan.ingest_report.clone(),
        fetch_status: Arc::new(Mutex::new(FetchStatus::default())),
        fetch: plan.fetch.clone(),
        sql_timeout: plan.sql_timeout,
        scratch: plan.scratch.clone(),
        extract_to: plan.extract_to.clone(),
        overview: Memo::new(),
        whole_facets: Memo::new(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let listener =
                tokio::net::TcpListener::from_std(listener).map_err(ServeError::Stopped)?;
            axum::serve(listener, router(app))
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .map_err(ServeError::Stopped)
        })
    });
    Ok(Server {
        addr,
        token: plan.token,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

/// The token a server at `addr` requires: the one given, or a new one when it listens
/// on an address other machines can reach.
fn token_for(addr: SocketAddr, given: Option<String>) -> Result<Option<String>, ServeError> {
    if given.is_some() || addr.ip().is_loopback() {
        return Ok(given);
    }
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| ServeError::Runtime(std::io::Error::other(e.to_string())))?;
    Ok(Some(hex::encode(bytes)))
}

struct App {
    root: PathBuf,
    /// Read-only connections to reuse; a request takes one or opens another.
    readers: Mutex<Vec<Pool>>,
    token: Option<String>,
    hosts: Option<Vec<String>>,
    ingest_report: Option<PathBuf>,
    fetch_status: Arc<Mutex<FetchStatus>>,
    fetch: FetchOptions,
    sql_timeout: Duration,
    scratch: PathBuf,
    extract_to: Option<PathBuf>,
    overview: Memo<browse::Overview>,
    /// Facets of whole datasets (by dataset name, "" for all).
    whole_facets: Memo<browse::Facets>,
}

impl App {
    fn facets(
        &self,
        pool: &Pool,
        f: &Filter,
        per_category: usize,
    ) -> Result<browse::Facets, BrowseError> {
        if !f.is_whole() {
            return browse::facets(pool, f, per_category);
        }
        let name = format!("{}/{per_category}", f.dataset.as_deref().unwrap_or(""));
        self.whole_facets
            .get(pool, &name, || browse::facets(pool, f, per_category))
    }

    fn take(&self) -> Result<Pool, Problem> {
        if let Some(p) = self.readers.lock().ok().and_then(|mut r| r.pop()) {
            return Ok(p);
        }
        Pool::open_read_only(&self.root).map_err(|e| Problem::server(e.to_string()))
    }

    fn give(&self, pool: Pool) {
        if let Ok(mut r) = self.readers.lock() {
            if r.len() < 8 {
                r.push(pool);
            }
        }
    }

    fn fetch_status(&self) -> FetchStatus {
        self.fetch_status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

type Shared = Arc<App>;

/// Results that cost a pass over every item, kept per name until the pool changes
/// (`browse::state_key`).
struct Memo<T>(Mutex<std::collections::HashMap<String, (String, T)>>);

impl<T: Clone> Memo<T> {
    fn new() -> Self {
        Self(Mutex::new(Default::default()))
    }

    fn get(
        &self,
        pool: &Pool,
        name: &str,
        compute: impl FnOnce() -> Result<T, BrowseError>,
    ) -> Result<T, BrowseError> {
        let state = browse::state_key(pool)?;
        if let Some((at, value)) = self.0.lock().ok().and_then(|m| m.get(name).cloned()) {
            if at == state {
                return Ok(value);
            }
        }
        let value = compute()?;
        if let Ok(mut m) = self.0.lock() {
            m.insert(name.to_string(), (state, value.clone()));
        }
        Ok(value)
    }
}

/// Runs `work` on a read-only connection, off the async workers.
async fn with_pool<T: Send + 'static>(
    app: &Shared,
    work: impl FnOnce(&Pool) -> Result<T, Problem> + Send + 'static,
) -> Result<T, Problem> {
    let app = Arc::clone(app);
    tokio::task::spawn_blocking(move || {
        let pool = app.take()?;
        let result = work(&pool);
        app.give(pool);
        result
    })
    .await
    .map_err(|_| Problem::server("a request's worker stopped".into()))?
}

/// Whether a route answers with HTML or JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Html,
    Json,
}

/// A request that cannot be answered: a status and a message, as a page or as JSON.
#[derive(Debug)]
struct Problem {
    status: StatusCode,
    message: String,
    json: bool,
}

impl Problem {
    fn new(status: StatusCode, message: String) -> Self {
        Self {
            status,
            message,
            json: false,
        }
    }

    fn bad(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn server(message: String) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    fn in_mode(mut self, mode: Mode) -> Self {
        self.json = mode == Mode::Json;
        self
    }
}

impl From<FilterError> for Problem {
    fn from(e: FilterError) -> Self {
        Self::bad(e.to_string())
    }
}

impl From<BrowseError> for Problem {
    fn from(e: BrowseError) -> Self {
        let status = match &e {
            BrowseError::NoItem { .. }
            | BrowseError::NoRelease { .. }
            | BrowseError::NoMember { .. }
            | BrowseError::NotDownloaded { .. } => StatusCode::NOT_FOUND,
            BrowseError::UnknownStat(_) | BrowseError::BadParam { .. } => StatusCode::BAD_REQUEST,
            BrowseError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BrowseError::Query(q) => match q {
                QueryError::Unknown(_) => StatusCode::NOT_FOUND,
                QueryError::Pool(_) | QueryError::Output(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            },
            BrowseError::Damaged { .. } | BrowseError::Read { .. } | BrowseError::Unsafe(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self::new(status, format!("{:#}", anyhow::Error::from(e)))
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        if self.json {
            let body = serde_json::json!({"error": self.message, "status": self.status.as_u16()});
            return (self.status, axum::Json(body)).into_response();
        }
        let reason = self.status.canonical_reason().unwrap_or("Error");
        html(
            self.status,
            pages::problem(self.status.as_u16(), reason, &self.message),
        )
    }
}

fn html(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// One struct out: JSON as it is, or HTML from `page`, inside the layout.
fn reply<T: Serialize>(
    mode: Mode,
    title: &str,
    json_url: Option<String>,
    data: &T,
    page: impl FnOnce(&T) -> Markup,
) -> Response {
    match mode {
        Mode::Json => axum::Json(data).into_response(),
        Mode::Html => html(
            StatusCode::OK,
            pages::layout(title, json_url.as_deref(), page(data)),
        ),
    }
}

fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

fn router(app: Shared) -> Router {
    use Mode::{Html, Json};
    Router::new()
        .route("/", get(|s: State<Shared>| overview(s, Html)))
        .route("/api/overview", get(|s: State<Shared>| overview(s, Json)))
        .route(
            "/gallery",
            get(|s: State<Shared>, q: RawQuery| gallery(s, q, Html)),
        )
        .route(
            "/api/gallery",
            get(|s: State<Shared>, q: RawQuery| gallery(s, q, Json)),
        )
        .route("/api/facets", get(facets))
        .route("/api/tags", get(tags))
        .route(
            "/item/{dataset}/{key}",
            get(|s: State<Shared>, p: Path<(String, String)>| item(s, p, Html)),
        )
        .route(
            "/api/item/{dataset}/{key}",
            get(|s: State<Shared>, p: Path<(String, String)>| item(s, p, Json)),
        )
        .route("/file/{dataset}/{key}/{ext}", get(file))
        .route("/parades", get(|| parade_list(Html)))
        .route("/api/parades", get(|| parade_list(Json)))
        .route(
            "/parade/{name}",
            get(|s: State<Shared>, p: Path<String>, q: RawQuery| parade(s, p, q, Html)),
        )
        .route(
            "/api/parade/{name}",
            get(|s: State<Shared>, p: Path<String>, q: RawQuery| parade(s, p, q, Json)),
        )
        .route(
            "/release/{dataset}/{version}",
            get(|s: State<Shared>, p: Path<(String, String)>, q: RawQuery| release(s, p, q, Html)),
        )
        .route(
            "/api/release/{dataset}/{version}",
            get(|s: State<Shared>, p: Path<(String, String)>, q: RawQuery| release(s, p, q, Json)),
        )
        .route(
            "/clusters/{dataset}/{name}",
            get(|s: State<Shared>, p: Path<(String, String)>| clusters(s, p, Html)),
        )
        .route(
            "/api/clusters/{dataset}/{name}",
            get(|s: State<Shared>, p: Path<(String, String)>| clusters(s, p, Json)),
        )
        .route(
            "/trends/{dataset}",
            get(|s: State<Shared>, p: Path<String>, q: RawQuery| trends(s, p, q, Html)),
        )
        .route(
            "/api/trends/{dataset}",
            get(|s: State<Shared>, p: Path<String>, q: RawQuery| trends(s, p, q, Json)),
        )
        .route("/sql", get(|s: State<Shared>, q: RawQuery| sql(s, q, Html)))
        .route(
            "/api/sql",
            get(|s: State<Shared>, q: RawQuery| sql(s, q, Json)),
        )
        .route("/fetch", get(|s: State<Shared>| fetch_status(s, Html)))
        .route("/fetch", post(fetch_start))
        .route("/api/fetch", get(|s: State<Shared>| fetch_status(s, Json)))
        .route("/export", get(export))
        .route("/extract", post(extract))
        .route(
            "/api",
            get(|| async { html(StatusCode::OK, pages::api_index()) }),
        )
        .route("/assets/style.css", get(|| asset("text/css", STYLE)))
        .route("/assets/app.js", get(|| asset("text/javascript", SCRIPT)))
        .fallback(|| async {
            Problem::new(StatusCode::NOT_FOUND, "no such page".into()).into_response()
        })
        .layer(middleware::from_fn_with_state(Arc::clone(&app), guard))
        .with_state(app)
}

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/app.js");

async fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The checks every request passes and the headers every response carries.
async fn guard(State(app): State<Shared>, request: Request, next: Next) -> Response {
    let json = request.uri().path().starts_with("/api/");
    let refuse = |status, message: &str| {
        with_headers(
            Problem {
                status,
                message: message.to_string(),
                json,
            }
            .into_response(),
        )
    };
    let target_len = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target_len > MAX_TARGET {
        return refuse(
            StatusCode::URI_TOO_LONG,
            &format!("the request is longer than {MAX_TARGET} bytes"),
        );
    }
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if let Some(hosts) = &app.hosts {
        if !hosts.iter().any(|h| h == host) {
            return refuse(
                StatusCode::MISDIRECTED_REQUEST,
                &format!(
                    "this server answers requests for {} only",
                    hosts.first().map(String::as_str).unwrap_or("")
                ),
            );
        }
    }
    let mut set_cookie = None;
    if let Some(token) = &app.token {
        let from_query = request.uri().query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        });
        let given = bearer(headers)
            .or_else(|| cookie(headers))
            .or(from_query.clone());
        if !given.is_some_and(|g| same(&g, token)) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "this server needs its token: open the address `seedpool serve` printed, with ?token=",
            );
        }
        if from_query.is_some() && cookie(headers).is_none() {
            set_cookie = Some(format!(
                "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
            ));
        }
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        // A form on another site may post here; only this server's own pages may.
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        let site = headers.get("sec-fetch-site").and_then(|o| o.to_str().ok());
        // Browsers say where a request comes from in Sec-Fetch-Site; Origin is the
        // fallback for those that do not (and reads "null" under some referrer
        // policies, so it decides only when the first is absent).
        let foreign = match site {
            Some(s) => s != "same-origin" && s != "none",
            None => origin.is_some_and(|o| o != format!("http://{host}")),
        };
        if foreign {
            return refuse(
                StatusCode::FORBIDDEN,
                "a request from another site is refused",
            );
        }
    }
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, c);
    }
    // The server's own time for the request, for benchmarks and the browser's tools.
    let spent = format!("app;dur={:.2}", started.elapsed().as_secs_f64() * 1000.0);
    if let Ok(v) = HeaderValue::from_str(&spent) {
        response.headers_mut().insert("server-timing", v);
    }
    with_headers(response)
}

fn with_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        })
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn filter_of(query: &Option<String>) -> Result<Filter, Problem> {
    Ok(Filter::from_query(
        query.as_deref().unwrap_or(""),
        &["token"],
    )?)
}

async fn overview(State(app): State<Shared>, mode: Mode) -> Response {
    let memo = Arc::clone(&app);
    let work = with_pool(&app, move |p| {
        Ok(memo.overview.get(p, "", || browse::overview(p))?)
    });
    match work.await {
        Ok(o) => reply(
            mode,
            "Overview",
            Some("/api/overview".into()),
            &o,
            pages::overview,
        ),
        Err(e) => e.in_mode(mode).into_response(),
    }
}

/// A gallery page with its facets.
#[derive(Serialize)]
struct GalleryPage {
    #[serde(flatten)]
    gallery: browse::Gallery,
    facets: browse::Facets,
    /// With one tag asked for: the tags that come with it (`seedpool mine related`).
    #[serde(skip_serializing_if = "Option::is_none")]
    related: Option<crate::mine::related::RelatedReport>,
}

/// Related tags of a gallery asking for exactly one tag, in its dataset and years.
fn related_of(
    pool: &Pool,
    f: &Filter,
) -> Result<Option<crate::mine::related::RelatedReport>, Problem> {
    use crate::mine::related::{related, Measure, RelatedPlan, DEFAULT_SAMPLE};
    let [tag] = f.tags.as_slice() else {
        return Ok(None);
    };
    if tag.exclude {
        return Ok(None);
    }
    let years = match (f.year_min, f.year_max) {
        (None, None) => None,
        (a, b) => Some((a.unwrap_or(i64::MIN), b.unwrap_or(i64::MAX))),
    };
    let plan = RelatedPlan {
        tag: tag.name.clone(),
        category: None,
        dataset: f.dataset.clone(),
        years,
        measure: Measure::Jaccard,
        limit: 15,
        min_count: 2,
        sample: DEFAULT_SAMPLE,
    };
    match related(pool, &plan) {
        Ok(r) => Ok(Some(r)),
        // A tag the pool lacks, or an empty scope: the gallery says so by itself.
        Err(e) if e.is_usage() => Ok(None),
        Err(e) => Err(Problem::server(e.to_string())),
    }
}

async fn gallery(State(app): State<Shared>, RawQuery(q): RawQuery, mode: Mode) -> Response {
    let work = async {
        let f = filter_of(&q)?;
        let memo = Arc::clone(&app);
        with_pool(&app, move |p| {
            Ok(GalleryPage {
                gallery: browse::gallery(p, &f)?,
                facets: memo.facets(p, &f, 12)?,
                related: related_of(p, &f)?,
            })
        })
        .await
    };
    match work.await {
        Ok(g) => {
            let status = app.fetch_status();
            let json_url = with_query("/api/gallery", &g.gallery.query);
            let extract = app.extract_to.is_some();
            reply(mode, "Gallery", Some(json_url), &g, |g| {
                pages::gallery(&g.gallery, &g.facets, g.related.as_ref(), &status, extract)
            })
        }
        Err(e) => e.in_mode(mode).into_response(),
    }
}

async fn facets(State(app): State<Shared>, RawQuery(q): RawQuery) -> Response {
    let work = async {
        let f = filter_of(&q)?;
        let memo = Arc::clone(&app);
        with_pool(&app, move |p| Ok(memo.facets(p, &f, 25)?)).await
    };
    match work.await {
        Ok(f) => axum::Json(f).into_response(),
        Err(e) => e.in_mode(Mode::Json).into_response(),
    }
}

#[derive(Serialize)]
struct Completion {
    name: String,
    category: String,
    items: u64,
}

async fn tags(State(app): State<Shared>, RawQuery(q): RawQuery) -> Response {
    let prefix = q
        .as_deref()
        .and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "prefix")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_default();
    if prefix.chars().count() > crate::query::filter::MAX_VALUE {
        return Problem::bad("the prefix is too long".into())
            .in_mode(Mode::Json)
            .into_response();
    }
    match with_pool(&app, move |p| Ok(browse::complete_tags(p, &prefix, 20)?)).await {
        Ok(list) => axum::Json(
            list.into_iter()
                .map(|(name, category, items)| Completion {
                    name,
                    category,
                    items,
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => e.in_mode(Mode::Json).into_response(),
    }
}

async fn item(
    State(app): State<Shared>,
    Path((dataset, key)): Path<(String, String)>,
    mode: Mode,
) -> Response {
    let json_url = format!(
        "/api/item/{}/{}",
        pages::segment(&dataset),
        pages::segment(&key)
    );
    match with_pool(&app, move |p| Ok(browse::item(p, &dataset, &key)?)).await {
        Ok(v) => reply(mode, &v.tile.key.clone(), Some(json_url), &v, pages::item),
        Err(e) => e.in_mode(mode).into_response(),
    }
}

/// A member's bytes. With `?v=` equal to its blake3 the URL can never name other
/// bytes, so it may be cached for good; without, the browser asks again (ETag).
async fn file(
    State(app): State<Shared>,
    Path((dataset, key, ext)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let version = q.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "v")
            .map(|(_, v)| v.into_owned())
    });
    let seen: Option<String> = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // One trip off the async workers: find the member, and read it unless the
    // browser holds these bytes already.
    let work = with_pool(&app, move |p| {
        let located = browse::locate(p, &dataset, &key, &ext)?;
        let etag = format!("\"{}\"", located.member.blake3);
        let held = seen.is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
        let bytes = if held && located.present {
            None
        } else {
            Some(browse::read(&located)?)
        };
        Ok((located, bytes))
    });
    let (located, bytes) = match work.await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let etag = format!("\"{}\"", located.member.blake3);
    let cache = if version.as_deref() == Some(located.member.blake3.as_str()) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let Some(bytes) = bytes else {
        return (
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag),
                (header::CACHE_CONTROL, cache.to_string()),
            ],
        )
            .into_response();
    };
    let ext = located.member.ext;
    let (kind, inline) = content_type(&ext);
    let mut response = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, kind.to_string()),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache.to_string()),
        ],
        bytes,
    )
        .into_response();
    if !inline {
        response.headers_mut().insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    response
}

/// The type a member is served as, and whether a browser may show it in place (only
/// pictures and plain data; anything else is a download).
fn content_type(ext: &str) -> (&'static str, bool) {
    let last = ext.rsplit('.').next().unwrap_or(ext);
    match last.to_ascii_lowercase().as_str() {
        "jpg" | "jpeg" => ("image/jpeg", true),
        "png" => ("image/png", true),
        "webp" => ("image/webp", true),
        "gif" => ("image/gif", true),
        "json" => ("application/json", true),
        "txt" | "cls" | "tags" => ("text/plain; charset=utf-8", true),
        _ => ("application/octet-stream", false),
    }
}

#[derive(Serialize)]
struct ParadeEntry {
    name: &'static str,
    description: &'static str,
    parameters: String,
}

async fn parade_list(mode: Mode) -> Response {
    let list = browse::parade_list();
    let entries: Vec<ParadeEntry> = list
        .iter()
        .map(|(name, description, parameters)| ParadeEntry {
            name,
            description,
            parameters: parameters.clone(),
        })
        .collect();
    reply(
        mode,
        "Hit-parades",
        Some("/api/parades".into()),
        &entries,
        |_| pages::parade_list(&list),
    )
}

async fn parade(
    State(app): State<Shared>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    mode: Mode,
) -> Response {
    let q = q.unwrap_or_default();
    let json_url = with_query(&format!("/api/parade/{}", pages::segment(&name)), &q);
    let title = name.clone();
    let work = with_pool(&app, move |p| {
        let params = browse::parade_params(&name, &q, &["token"])?;
        Ok(browse::parade(p, &name, &params, ROW_THUMBS)?)
    });
    match work.await {
        Ok(v) => reply(mode, &title, Some(json_url), &v, pages::parade),
        Err(e) => e.in_mode(mode).into_response(),
    }
}

async fn clusters(
    State(app): State<Shared>,
    Path((dataset, name)): Path<(String, String)>,
    mode: Mode,
) -> Response {
    let json_url = format!(
        "/api/clusters/{}/{}",
        pages::segment(&dataset),
        pages::segment(&name)
    );
    let title = format!("clusters {name}");
    match with_pool(&app, move |p| Ok(browse::clusters(p, &dataset, &name)?)).await {
        Ok(v) => reply(mode, &title, Some(json_url), &v, pages::clusters),
        Err(e) => e.in_mode(mode).into_response(),
    }
}

async fn trends(
    State(app): State<Shared>,
    Path(dataset): Path<String>,
    RawQuery(q): RawQuery,
    mode: Mode,
) -> Response {
    let q = q.unwrap_or_default();
    let (mut from, mut to, mut category) = (None, None, None);
    for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
        let v = (!v.is_empty()).then(|| v.into_owned());
        match k.as_ref() {
            "from" => from = v,
            "to" => to = v,
            "category" => category = v,
            "token" => {}
            other => {
                return Problem::bad(format!(
                    "unknown parameter `{}`; trends read `from`, `to` and `category`",
                    crate::name::shown(other)
                ))
                .in_mode(mode)
                .into_response()
            }
        }
    }
    let json_url = with_query(&format!("/api/trends/{}", pages::segment(&dataset)), &q);
    let title = format!("trends {dataset}");
    let work = with_pool(&app, move |p| {
        Ok(browse::trends(p, &dataset, from, to, category)?)
    });
    match work.await {
        Ok(v) => reply(mode, &title, Some(json_url), &v, pages::trends),
        Err(e) => e.in_mode(mode).into_response(),
    }
}

async fn release(
    State(app): State<Shared>,
    Path((dataset, version)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    mode: Mode,
) -> Response {
    let q = q.unwrap_or_default();
    let mut stat = "quality".to_string();
    for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
        match k.as_ref() {
            "stat" if !v.is_empty() => stat = v.into_owned(),
            "stat" | "token" => {}
            other => {
                return Problem::bad(format!(
                    "unknown parameter `{}`; the release review reads `stat`",
                    crate::name::shown(other)
                ))
                .in_mode(mode)
                .into_response()
            }
        }
    }
    let json_url = with_query(
        &format!(
            "/api/release/{}/{}",
            pages::segment(&dataset),
            pages::segment(&version)
        ),
        &q,
    );
    let title = format!("{dataset} {version}");
    let report = app.ingest_report.clone();
    let work = with_pool(&app, move |p| {
        // The report is ingest's for the release being published, the newest one.
        let head = p
            .connection()
            .query_row(
                "SELECT r.version FROM datasets d JOIN releases r ON r.id = d.head_release WHERE d.name = ?1",
                [&dataset],
                |r| r.get::<_, String>(0),
            )
            .ok();
        let report = report.filter(|_| head.as_deref() == Some(version.as_str()));
        Ok(browse::release(
            p,
            &dataset,
            &version,
            &stat,
            REVIEW_ITEMS,
            report.as_deref(),
        )?)
    });
    match work.await {
        Ok(v) => reply(mode, &title, Some(json_url), &v, pages::release),
        Err(e) => e.in_mode(mode).into_response(),
    }
}

async fn sql(State(app): State<Shared>, RawQuery(q): RawQuery, mode: Mode) -> Response {
    let q = q.unwrap_or_default();
    let mut text = String::new();
    for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
        match k.as_ref() {
            "q" => text = v.into_owned(),
            "token" => {}
            other => {
                return Problem::bad(format!(
                    "unknown parameter `{}`; the SQL console reads `q`",
                    crate::name::shown(other)
                ))
                .in_mode(mode)
                .into_response()
            }
        }
    }
    let json_url = with_query("/api/sql", &q);
    if text.trim().is_empty() {
        let empty = browse::SqlView {
            sql: "SELECT key, booru, score FROM live ORDER BY score DESC LIMIT 20".into(),
            ..browse::SqlView::default()
        };
        return reply(mode, "SQL", None, &empty, pages::sql);
    }
    let timeout = app.sql_timeout;
    let sql_text = text.clone();
    let result = with_pool(&app, move |p| {
        Ok(browse::sql_console(p, &sql_text, SQL_ROWS, timeout)?)
    })
    .await;
    match result {
        Ok(v) => reply(mode, "SQL", Some(json_url), &v, pages::sql),
        Err(e) if e.status == StatusCode::BAD_REQUEST && mode == Mode::Html => {
            let view = browse::SqlView {
                sql: text,
                error: Some(e.message),
                ..browse::SqlView::default()
            };
            html(
                StatusCode::BAD_REQUEST,
                pages::layout("SQL", None, pages::sql(&view)),
            )
        }
        Err(e) => e.in_mode(mode).into_response(),
    }
}

async fn fetch_status(State(app): State<Shared>, mode: Mode) -> Response {
    let s = app.fetch_status();
    reply(mode, "Fetch", Some("/api/fetch".into()), &s, pages::fetch)
}

#[derive(serde::Deserialize)]
struct FetchForm {
    view: String,
    #[serde(default)]
    #[allow(dead_code)]
    token: Option<String>,
}

async fn fetch_start(
    State(app): State<Shared>,
    axum::Form(form): axum::Form<FetchForm>,
) -> Response {
    let json = false;
    let view = form.view;
    let work = async {
        let mut f = Filter::from_query(&view, &["token"])?;
        f.page = 1;
        with_pool(&app, move |p| {
            let missing = browse::missing_shards(p, &f)?;
            missing
                .into_iter()
                .map(|(dataset, shards)| {
                    Ok(fetch::Wanted {
                        manifest: browse::head_manifest(p, &dataset)?,
                        dataset,
                        shards,
                    })
                })
                .collect::<Result<Vec<_>, Problem>>()
        })
        .await
    };
    let wanted = match work.await {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    if wanted.is_empty() {
        return Redirect::to(&with_query("/gallery", &view)).into_response();
    }
    if !fetch::start(
        &app.fetch_status,
        app.root.clone(),
        &app.fetch,
        view.clone(),
        wanted,
    ) {
        return Problem {
            status: StatusCode::CONFLICT,
            message: "a fetch is running already; wait for it to finish".into(),
            json,
        }
        .into_response();
    }
    Redirect::to(&with_query("/gallery", &view)).into_response()
}

/// What "extract these" did, for its page.
struct Extracted {
    view: String,
    out: PathBuf,
    report: crate::query::extract::ExtractReport,
}

async fn extract(State(app): State<Shared>, axum::Form(form): axum::Form<FetchForm>) -> Response {
    let Some(root) = app.extract_to.clone() else {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "this server does not extract: start it with --extract-to DIR".into(),
        )
        .into_response();
    };
    let view = form.view;
    let f = match Filter::from_query(&view, &["token"]) {
        Ok(f) => f,
        Err(e) => return Problem::from(e).into_response(),
    };
    let pool = app.root.clone();
    let clock = Arc::clone(&app.fetch.clock);
    let shown = view.clone();
    let work = with_pool(&app, move |p| {
        let condition = browse::condition(p, &f)?;
        let out = root.join(format!("view-{}", clock()));
        let plan = crate::query::extract::ExtractPlan {
            pool,
            condition,
            out: out.clone(),
            names: crate::query::extract::Names::Key,
            exts: Vec::new(),
            overwrite: false,
        };
        let report = crate::query::extract::run(&plan, &crate::progress::Silent)
            .map_err(|e| Problem::server(format!("{:#}", anyhow::Error::from(e))))?;
        Ok(Extracted {
            view: shown,
            out,
            report,
        })
    });
    match work.await {
        Ok(x) => html(
            StatusCode::OK,
            pages::layout(
                "Extracted",
                None,
                pages::extracted(&x.view, &x.out, &x.report),
            ),
        ),
        Err(e) => e.into_response(),
    }
}

async fn export(State(app): State<Shared>, RawQuery(q): RawQuery) -> Response {
    let q = q.unwrap_or_default();
    let mut format = None;
    // The serializer is not Send: it must be gone before the first await.
    let rest = {
        let mut rest = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            if k == "format" {
                format = Some(v.into_owned());
            } else {
                rest.append_pair(&k, &v);
            }
        }
        rest.finish()
    };
    let (format, ext, kind) = match format.as_deref() {
        Some("tsv") => (ExportFormat::Tsv, "tsv", "text/tab-separated-values"),
        Some("csv") => (ExportFormat::Csv, "csv", "text/csv"),
        Some("jsonl") => (ExportFormat::Jsonl, "jsonl", "application/jsonl"),
        Some("parquet") => (
            ExportFormat::Parquet,
            "parquet",
            "application/vnd.apache.parquet",
        ),
        _ => {
            return Problem::bad("`format` must be tsv, csv, jsonl or parquet".into())
                .into_response()
        }
    };
    let f = match Filter::from_query(&rest, &["token"]) {
        Ok(f) => f,
        Err(e) => return Problem::from(e).into_response(),
    };
    let root = app.root.clone();
    let scratch = app.scratch.clone();
    let work = with_pool(&app, move |p| {
        let condition = browse::condition(p, &f)?;
        let mut nonce = [0u8; 8];
        let _ = getrandom::getrandom(&mut nonce);
        // Outside the pool: serving never writes into it.
        let out = scratch.join(format!(
            "seedpool-export-{}-{}.{ext}",
            std::process::id(),
            hex::encode(nonce)
        ));
        let plan = ExportPlan {
            pool: root,
            format,
            out: out.clone(),
            condition: Some(condition),
        };
        crate::query::export::run(&plan, &crate::progress::Silent)
            .map_err(|e| Problem::server(format!("{:#}", anyhow::Error::from(e))))?;
        let file = std::fs::File::open(&out).map_err(|e| Problem::server(e.to_string()));
        let _ = std::fs::remove_file(&out);
        file
    });
    let file = match work.await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    (
        [
            (header::CONTENT_TYPE, kind.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"seedpool-export.{ext}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{record, Fixture};
    use std::io::{Read, Write};

    fn fixture() -> Fixture {
        let f = Fixture::new();
        let items: Vec<(String, serde_json::Value)> = (1..=4)
            .map(|i| {
                let mut r = record(
                    "danbooru",
                    i,
                    &[("character", &[if i % 2 == 0 { "miku" } else { "rin" }])],
                );
                r["score"] = (i * 10).into();
                (format!("danbooru-{i}"), r)
            })
            .collect();
        let thumbs: Vec<(String, Vec<u8>)> = (1..=4)
            .map(|i| {
                (
                    format!("danbooru-{i}.thumb.jpg"),
                    format!("jpeg {i}").into_bytes(),
                )
            })
            .collect();
        let items: Vec<(&str, serde_json::Value)> =
            items.iter().map(|(k, r)| (k.as_str(), r.clone())).collect();
        let files: Vec<(&str, &[u8])> = thumbs
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        f.try_publish_with("1", None, &items, &files).unwrap();
        f.merge("1");
        f
    }

    fn server(f: &Fixture, token: Option<&str>) -> Server {
        start(plan(f, token)).unwrap()
    }

    fn plan(f: &Fixture, token: Option<&str>) -> ServePlan {
        ServePlan {
            pool: f.pool.clone(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: token.map(str::to_string),
            ingest_report: None,
            fetch: FetchOptions {
                peers: Vec::new(),
                swarm: crate::swarm::SwarmOptions::loopback(),
                stall_timeout: Duration::from_secs(5),
                index_limit: Default::default(),
                tuning: Default::default(),
                clock: Arc::new(|| 1_767_225_600),
            },
            sql_timeout: Duration::from_secs(5),
            scratch: f.dir.path().to_path_buf(),
            extract_to: Some(f.dir.path().join("extracts")),
        }
    }

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    /// One HTTP/1.1 request on a fresh connection, headers as given (Host included),
    /// so a test can send what a browser never would.
    fn request(
        s: &Server,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut c = std::net::TcpStream::connect(s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut head = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            head.push_str(&format!("Host: {}\r\n", s.addr));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        head.push_str(body);
        c.write_all(head.as_bytes()).unwrap();
        let mut raw = Vec::new();
        c.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        let chunked = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
        if chunked {
            let mut out = Vec::new();
            let mut rest = &body[..];
            loop {
                let end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
                let n =
                    usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap().trim(), 16)
                        .unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&rest[end + 2..end + 2 + n]);
                rest = &rest[end + 4 + n..];
            }
            body = out;
        }
        Reply {
            status,
            headers,
            body,
        }
    }

    fn get(s: &Server, target: &str) -> Reply {
        request(s, "GET", target, &[], "")
    }

    #[test]
    fn every_page_answers_in_html_and_json_with_a_content_security_policy() {
        let f = fixture();
        let s = server(&f, None);
        for page in [
            "/",
            "/gallery?tags=miku",
            "/item/ds/danbooru-2",
            "/parades",
            "/parade/characters-by-year",
            "/release/ds/1",
            "/sql?q=SELECT+key+FROM+live",
            "/fetch",
            "/api",
        ] {
            let r = get(&s, page);
            assert_eq!(r.status, 200, "{page}: {}", r.text());
            assert!(
                r.header("content-type").unwrap().starts_with("text/html"),
                "{page}"
            );
            assert!(
                r.header("content-security-policy")
                    .unwrap()
                    .contains("default-src 'none'"),
                "{page}"
            );
            assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
            assert!(r.header("server-timing").unwrap().starts_with("app;dur="));
        }
        let g: serde_json::Value =
            serde_json::from_slice(&get(&s, "/api/gallery?tags=miku").body).unwrap();
        assert_eq!(g["total"], 2);
        assert_eq!(g["items"][0]["key"], "danbooru-4");
        assert_eq!(g["facets"]["categories"][2]["category"], "character");
        let item: serde_json::Value =
            serde_json::from_slice(&get(&s, "/api/item/ds/danbooru-4").body).unwrap();
        assert_eq!(item["tile"]["score"], 40);
        let tags: serde_json::Value =
            serde_json::from_slice(&get(&s, "/api/tags?prefix=mi").body).unwrap();
        assert_eq!(tags[0]["name"], "miku");
        for api in [
            "/api/overview",
            "/api/parades",
            "/api/parade/tag-stats",
            "/api/release/ds/1",
            "/api/sql?q=SELECT+1",
            "/api/fetch",
            "/api/facets?tags=rin",
        ] {
            let r = get(&s, api);
            assert_eq!(r.status, 200, "{api}");
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap();
        }
        let gallery = get(&s, "/gallery").text();
        assert!(
            gallery.contains("href=\"/gallery?tags=miku\""),
            "a facet adds its tag"
        );
        s.stop().unwrap();
    }

    #[test]
    fn an_item_page_shows_its_look_alikes_and_a_one_tag_gallery_its_related_tags() {
        let f = Fixture::new();
        let hash = |i: u64| match i {
            // danbooru-2 is danbooru-1 with 5 bits flipped: alike, not a duplicate.
            2 => 0x0f0f_3c3c_a5a5_5a5au64 ^ 0b11111,
            1 => 0x0f0f_3c3c_a5a5_5a5a,
            i => i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        };
        let items: Vec<(String, serde_json::Value)> = (1..=6u64)
            .map(|i| {
                let general: &[&str] = if i <= 3 {
                    &["miku", "twintails"]
                } else {
                    &["rin", "bow"]
                };
                let mut r = record("danbooru", i, &[("general", general)]);
                r["phash"] = format!("{:016x}", hash(i)).into();
                // Embeddings: item 4 points the way item 1 does, the rest elsewhere;
                // item 6 has none.
                let v: [f32; 3] = match i {
                    1 => [1.0, 0.0, 0.0],
                    4 => [0.96, 0.28, 0.0],
                    _ => [0.0, 0.0, 1.0],
                };
                if i != 6 {
                    r["embedding"] = crate::imaging::embedding::encode(&v).into();
                    r["embedder"] = serde_json::json!({"space": "test-3"});
                }
                (format!("danbooru-{i}"), r)
            })
            .collect();
        let items: Vec<(&str, serde_json::Value)> =
            items.iter().map(|(k, r)| (k.as_str(), r.clone())).collect();
        f.publish("1", None, &items);
        f.merge("1");
        let s = server(&f, None);
        let page = get(&s, "/item/ds/danbooru-1").text();
        assert!(page.contains("Look-alikes"), "{page}");
        assert!(page.contains("5 bits apart"), "{page}");
        assert!(page.contains("Drawn alike (by tags)"), "{page}");
        let item: serde_json::Value =
            serde_json::from_slice(&get(&s, "/api/item/ds/danbooru-1").body).unwrap();
        assert_eq!(item["look_alikes"][0]["tile"]["key"], "danbooru-2");
        assert_eq!(item["similar_tags"][0]["distance"], 0.0);
        assert!(page.contains("Seen alike (by embedding)"), "{page}");
        assert!(page.contains("96% alike"), "{page}");
        assert_eq!(item["similar_embedding"][0]["tile"]["key"], "danbooru-4");
        let unseen: serde_json::Value =
            serde_json::from_slice(&get(&s, "/api/item/ds/danbooru-6").body).unwrap();
        assert_eq!(unseen["similar_embedding"], serde_json::json!([]));
        assert!(!get(&s, "/item/ds/danbooru-6")
            .text()
            .contains("by embedding"));
        let g: serde_json::Value =
            serde_json::from_slice(&get(&s, "/api/gallery?tags=miku").body).unwrap();
        assert_eq!(g["related"]["related"][0]["tag"], "twintails");
        let page = get(&s, "/gallery?tags=miku").text();
        assert!(page.contains("id=\"related\""), "{page}");
        // The cluster browser: none stored yet, then one.
        let r = get(&s, "/clusters/ds/tags");
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("no clustering `tags`"), "{}", r.text());
        f.cluster("tags", crate::mine::clusters::By::Tags, 2);
        let page = get(&s, "/clusters/ds/tags").text();
        assert!(
            page.contains("Cluster 0") && page.contains("3 items"),
            "{page}"
        );
        let v: serde_json::Value =
            serde_json::from_slice(&get(&s, "/api/clusters/ds/tags").body).unwrap();
        assert_eq!(v["medoids"].as_array().unwrap().len(), 2);
        // Two tags, or one left out: no related tags.
        let g: serde_json::Value =
            serde_json::from_slice(&get(&s, "/api/gallery?tags=miku+twintails").body).unwrap();
        assert!(g.get("related").is_none());
        s.stop().unwrap();
    }

    #[test]
    fn the_trends_page_charts_what_grew_and_fell_and_the_overview_links_mining_pages() {
        let f = Fixture::new();
        let item = |i: u64, tag: &str| {
            (
                format!("danbooru-{i}"),
                record("danbooru", i, &[("general", &[tag])]),
            )
        };
        let mut items: Vec<(String, serde_json::Value)> = (1..=6)
            .map(|i| item(i, if i <= 4 { "miku" } else { "bow" }))
            .collect();
        f.release("1", None, &items);
        let s = server(&f, None);
        // One release: nothing to compare yet, and no link to trends.
        assert!(!get(&s, "/").text().contains("/trends/ds"));
        s.stop().unwrap();
        // Release 2: four more `bow`, so its share grows from 1/3 to 3/5.
        items.extend((7..=10).map(|i| item(i, "bow")));
        f.release("2", Some("1"), &items);
        let s = server(&f, None);
        let overview = get(&s, "/").text();
        assert!(overview.contains("href=\"/trends/ds\""), "{overview}");
        let page = get(&s, "/trends/ds").text();
        assert!(page.contains("grew from 1 to 2"), "{page}");
        assert!(page.contains("fell from 1 to 2"), "{page}");
        assert!(page.contains("href=\"/gallery?tags=bow"), "{page}");
        let v: serde_json::Value =
            serde_json::from_slice(&get(&s, "/api/trends/ds?category=general").body).unwrap();
        assert_eq!(v["report"]["grew"][0]["tag"], "bow", "{v}");
        assert!(
            (v["report"]["grew"][0]["change"].as_f64().unwrap() - 26.67).abs() < 0.01,
            "{v}"
        );
        assert_eq!(v["releases"], serde_json::json!(["2", "1"]));
        let r = get(&s, "/trends/ds?from=9");
        assert_eq!(r.status, 400, "{}", r.text());
        let r = get(&s, "/trends/ds?colour=red");
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(
            r.text().contains("unknown parameter `colour`"),
            "{}",
            r.text()
        );
        // A stored clustering is linked from the overview.
        f.cluster("looks", crate::mine::clusters::By::Tags, 2);
        let overview = get(&s, "/").text();
        assert!(
            overview.contains("href=\"/clusters/ds/looks\""),
            "{overview}"
        );
        s.stop().unwrap();
    }

    #[test]
    fn a_request_for_another_host_is_refused() {
        let f = fixture();
        let s = server(&f, None);
        let r = request(
            &s,
            "GET",
            "/",
            &[("Host", &format!("evil.example:{}", s.addr.port()))],
            "",
        );
        assert_eq!(r.status, 421);
        let r = request(
            &s,
            "GET",
            "/",
            &[("Host", &format!("localhost:{}", s.addr.port()))],
            "",
        );
        assert_eq!(r.status, 200);
    }

    #[test]
    fn with_a_token_every_request_must_carry_it() {
        let f = fixture();
        let s = server(&f, Some("s3cret"));
        assert_eq!(get(&s, "/").status, 401);
        assert_eq!(get(&s, "/api/overview").status, 401);
        assert_eq!(get(&s, "/?token=wrong").status, 401);
        let first = get(&s, "/?token=s3cret");
        assert_eq!(first.status, 200);
        let cookie = first.header("set-cookie").unwrap();
        assert!(cookie.starts_with("seedpool_token=s3cret;") && cookie.contains("HttpOnly"));
        let r = request(
            &s,
            "GET",
            "/gallery",
            &[("Cookie", "seedpool_token=s3cret")],
            "",
        );
        assert_eq!(r.status, 200);
        let r = request(
            &s,
            "GET",
            "/api/overview",
            &[("Authorization", "Bearer s3cret")],
            "",
        );
        assert_eq!(r.status, 200);
        assert_eq!(s.url(), format!("http://{}/?token=s3cret", s.addr));
        // Other machines can reach a non-loopback bind: it always gets a token.
        let any = SocketAddr::from(([0, 0, 0, 0], 8080));
        assert_eq!(token_for(any, None).unwrap().unwrap().len(), 32);
        assert_eq!(
            token_for(any, Some("t".into())).unwrap().as_deref(),
            Some("t")
        );
        assert_eq!(
            token_for(SocketAddr::from(([127, 0, 0, 1], 8080)), None).unwrap(),
            None
        );
    }

    #[test]
    fn a_file_is_its_blake3_as_etag_and_cached_for_good_only_under_its_versioned_url() {
        let f = fixture();
        let s = server(&f, None);
        let p = f.open_pool();
        let at = browse::locate(&p, "ds", "danbooru-3", "thumb.jpg").unwrap();
        let b3 = at.member.blake3.clone();
        let r = get(&s, &format!("/file/ds/danbooru-3/thumb.jpg?v={b3}"));
        assert_eq!((r.status, r.body.as_slice()), (200, &b"jpeg 3"[..]));
        assert_eq!(r.header("content-type"), Some("image/jpeg"));
        assert_eq!(r.header("etag"), Some(format!("\"{b3}\"").as_str()));
        assert!(r.header("cache-control").unwrap().contains("immutable"));
        let r = get(&s, "/file/ds/danbooru-3/thumb.jpg");
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        let r = request(
            &s,
            "GET",
            "/file/ds/danbooru-3/thumb.jpg",
            &[("If-None-Match", &format!("\"{b3}\""))],
            "",
        );
        assert_eq!((r.status, r.body.len()), (304, 0));
        let r = get(&s, "/file/ds/danbooru-3/bin");
        assert_eq!(
            r.header("content-disposition"),
            Some("attachment"),
            "not a picture: a download"
        );
        assert_eq!(get(&s, "/file/ds/danbooru-9/thumb.jpg").status, 404);
        assert_eq!(get(&s, "/file/ds/danbooru-3/png").status, 404);
        assert_eq!(get(&s, "/file/ds/..%2F..%2Fetc/passwd").status, 404);
        let mut bytes = std::fs::read(&at.path).unwrap();
        bytes[at.member.offset as usize] ^= 1;
        std::fs::write(&at.path, &bytes).unwrap();
        let r = get(&s, "/file/ds/danbooru-3/thumb.jpg");
        assert_eq!(r.status, 500);
        assert!(
            r.text().contains("does not match its blake3"),
            "{}",
            r.text()
        );
    }

    #[test]
    fn bad_requests_get_a_4xx_page_and_change_nothing() {
        let f = fixture();
        let s = server(&f, None);
        let before = crate::testing::tree(&f.pool);
        let cases: &[(&str, u16, &str)] = &[
            ("/gallery?per_page=500", 400, "per_page"),
            ("/gallery?colour=red", 400, "unknown filter field"),
            ("/api/gallery?year_min=soon", 400, "not a whole number"),
            ("/item/ds/danbooru-99", 404, "no item"),
            ("/parade/nothing", 404, "unknown query"),
            ("/parade/tag-stats?year=2020", 400, "does not read --year"),
            ("/release/ds/9", 404, "no release"),
            ("/release/ds/1?stat=colour", 400, "unknown statistic"),
            ("/sql?q=DELETE+FROM+items", 400, "read-only"),
            (
                "/api/sql?q=SELECT+1%3B+DROP+TABLE+items",
                400,
                "more than one statement",
            ),
            ("/nowhere", 404, "no such page"),
        ];
        for (target, status, says) in cases {
            let r = get(&s, target);
            assert_eq!(r.status, *status, "{target}: {}", r.text());
            assert!(r.text().contains(says), "{target}: {}", r.text());
        }
        let long = format!("/gallery?tags={}", "a".repeat(9000));
        assert_eq!(get(&s, &long).status, 414);
        let form = "view=tags%3Dmiku";
        let foreign = [
            ("Origin", "http://evil.example"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ];
        assert_eq!(request(&s, "POST", "/fetch", &foreign, form).status, 403);
        let cross = [
            ("Sec-Fetch-Site", "cross-site"),
            ("Origin", "null"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ];
        assert_eq!(request(&s, "POST", "/fetch", &cross, form).status, 403);
        // A browser on our own page under no-referrer sends Origin "null".
        let own = [
            ("Sec-Fetch-Site", "same-origin"),
            ("Origin", "null"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ];
        assert_eq!(request(&s, "POST", "/fetch", &own, form).status, 303);
        let ours = [("Content-Type", "application/x-www-form-urlencoded")];
        // Nothing is missing, so nothing is fetched: back to the view.
        assert_eq!(request(&s, "POST", "/fetch", &ours, form).status, 303);
        assert_eq!(crate::testing::tree(&f.pool).len(), before.len());
        assert_eq!(
            browse::gallery(&f.open_pool(), &Filter::new())
                .unwrap()
                .total,
            4
        );
    }

    #[test]
    fn extract_writes_the_views_files_outside_the_pool() {
        let f = fixture();
        let s = server(&f, None);
        let form = [("Content-Type", "application/x-www-form-urlencoded")];
        let r = request(&s, "POST", "/extract", &form, "view=tags%3Dmiku");
        assert_eq!(r.status, 200, "{}", r.text());
        let out = f.dir.path().join("extracts/view-1767225600");
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 6, "{names:?}");
        assert!(
            names.contains(&"danbooru-2.thumb.jpg".to_string()),
            "{names:?}"
        );
        // Into the pool, never.
        let inside = ServePlan {
            extract_to: Some(f.pool.join("out")),
            ..plan(&f, None)
        };
        let e = start(inside).err().unwrap();
        assert!(e.to_string().contains("inside the pool"), "{e}");
        let off = ServePlan {
            extract_to: None,
            ..plan(&f, None)
        };
        let s = start(off).unwrap();
        let r = request(&s, "POST", "/extract", &form, "view=tags%3Dmiku");
        assert_eq!(r.status, 403);
        assert!(!get(&s, "/gallery").text().contains("extract these"));
    }

    #[test]
    fn export_downloads_the_view() {
        let f = fixture();
        let s = server(&f, None);
        let r = get(&s, "/export?format=csv&tags=miku");
        assert_eq!(r.status, 200);
        assert!(r
            .header("content-disposition")
            .unwrap()
            .contains("seedpool-export.csv"));
        let text = r.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("dataset,key,"));
        let r = get(&s, "/export?format=jsonl");
        assert_eq!(r.text().lines().count(), 4);
        assert_eq!(get(&s, "/export?format=xls").status, 400);
    }
}
