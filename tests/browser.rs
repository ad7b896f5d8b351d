//! `seedpool serve` in a real browser: Debian's Chromium, headless, driven over W3C
//! WebDriver through chromedriver, on the demo's pool. What a person would see is
//! checked: pictures decoded, a facet click that narrows the grid to the right items,
//! face boxes drawn over an item, a hit-parade's chart, a page that fits a phone, and
//! "fetch these" filling in a selectively synced pool from a loopback seeder. Each page
//! is saved as a screenshot under target/browser/ for a reviewer to open.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_seedpool");
const DATASET: &str = "booru-chars-demo";

/// The demo's work folder, made once for every test of this file, beside the
/// screenshots (each run starts it afresh).
fn demo() -> &'static Path {
    static DEMO: OnceLock<PathBuf> = OnceLock::new();
    DEMO.get_or_init(|| {
        let work = shots().join("demo");
        let r = run_binary(&["demo", "--workdir", s(&work)]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        work
    })
}

/// target/browser/, where a reviewer finds the screenshots.
fn shots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `seedpool serve` process; its URL from the JSON line it prints.
struct Served {
    _child: KillOnDrop,
    url: String,
}

fn serve(pool: &Path, extra: &[&str]) -> Served {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--pool",
            s(pool),
            "--listen",
            "127.0.0.1:0",
            "--json",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("seedpool serve starts");
    let stdout = child.stdout.take().unwrap();
    let event = wait_for_event(stdout, "listening", Duration::from_secs(30));
    let child = KillOnDrop(child);
    let url = event.expect("serve printed its address")["url"]
        .as_str()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    Served { _child: child, url }
}

/// A WebDriver session on a chromedriver of its own, with a fresh profile.
struct Browser {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    session: String,
    _driver: KillOnDrop,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Self {
        for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: install Debian's chromium and chromium-driver (.ci/run does)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = KillOnDrop(driver);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            rt,
            http,
            base,
            session: String::new(),
            _driver: driver,
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while b.raw("GET", "/status", None).is_err() {
            assert!(Instant::now() < deadline, "chromedriver never answered");
            std::thread::sleep(Duration::from_millis(100));
        }
        let args = json!([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1280,1000",
            format!("--user-data-dir={}", b._profile.path().display()),
        ]);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
        }}});
        let session = b
            .raw("POST", "/session", Some(caps))
            .expect("a browser session");
        b.session = session["value"]["sessionId"].as_str().unwrap().to_string();
        b
    }

    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let req = match method {
                "GET" => self.http.get(&url),
                "DELETE" => self.http.delete(&url),
                _ => self
                    .http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.unwrap_or(json!({})).to_string()),
            };
            let response = req
                .timeout(Duration::from_secs(120))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(|e| e.to_string())?;
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!("{method} {path}: {status}: {v}"));
            }
            Ok(v)
        })
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.raw(method, &path, Some(body)).unwrap()["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({"url": url}));
    }

    fn script(&self, js: &str) -> Value {
        self.call("POST", "/execute/sync", json!({"script": js, "args": []}))
    }

    /// Runs `js` until it returns something other than null or false.
    fn wait_for(&self, what: &str, js: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.script(js);
            if !v.is_null() && v != json!(false) {
                return v;
            }
            if Instant::now() >= deadline {
                let page = self.script(
                    "return location.href + '\\n' + document.body.innerText.slice(0, 600);",
                );
                panic!(
                    "timed out waiting for {what}; the page:\n{}",
                    page.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn click(&self, css: &str) {
        let found = self.call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        let id = found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_string();
        self.call("POST", &format!("/element/{id}/click"), json!({}));
    }

    fn window(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            json!({"width": width, "height": height}),
        );
    }

    fn screenshot(&self, name: &str) {
        use base64_png::decode;
        let png = self.call("GET", "/screenshot", json!({}));
        let bytes = decode(png.as_str().unwrap());
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(shots().join(format!("{name}.png")), bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.raw("DELETE", &format!("/session/{}", self.session), None);
    }
}

/// WebDriver sends screenshots as base64; the tests need no crate for that.
mod base64_png {
    pub fn decode(text: &str) -> Vec<u8> {
        let value = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64"),
        };
        let clean: Vec<u8> = text.bytes().filter(|c| *c != b'=' && *c != b'\n').collect();
        let mut out = Vec::with_capacity(clean.len() * 3 / 4);
        for chunk in clean.chunks(4) {
            let v: Vec<u32> = chunk.iter().map(|c| u32::from(value(*c))).collect();
            let n = v
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, x)| n | x << (18 - 6 * i));
            for i in 0..chunk.len().saturating_sub(1) {
                out.push((n >> (16 - 8 * i)) as u8);
            }
        }
        out
    }
}

/// Rows of `seedpool query --sql` as JSON: the answer from outside the page.
fn query(pool: &Path, sql: &str) -> Vec<Value> {
    let r = run_binary(&["query", "--pool", s(pool), "--sql", sql, "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    serde_json::from_str::<Value>(&r.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Pictures in the grid that are complete and decoded, once all of them are.
const DECODED: &str = "const imgs = [...document.querySelectorAll('.grid img')];
    return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0) ? imgs.length : null;";

#[test]
fn the_demo_pool_is_browsable_in_chromium() {
    let work = demo();
    let pool = work.join("pool");
    let report = work.join("release/ingest-report.tsv");
    let served = serve(&pool, &["--ingest-report", s(&report)]);
    let b = Browser::start();
    let url = |path: &str| format!("{}{path}", served.url);
    let within = Duration::from_secs(30);

    // Overview: charts of the pool.
    b.goto(&url("/"));
    let charts = b.script("return document.querySelectorAll('figure.chart svg').length;");
    assert!(charts.as_u64().unwrap() >= 3, "{charts}");
    b.screenshot("overview");

    // Gallery: every thumbnail decoded. The page loads them lazily: those in view
    // first, then all of them once told not to wait for scrolling.
    b.goto(&url("/gallery"));
    b.wait_for(
        "the first thumbnails",
        "const imgs = [...document.querySelectorAll('.grid img')].slice(0, 6);
         return imgs.length === 6 && imgs.every(i => i.complete && i.naturalWidth > 0);",
        within,
    );
    b.screenshot("gallery");
    b.script("document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager');");
    let decoded = b.wait_for("every thumbnail", DECODED, within);
    let live = query(&pool, "SELECT count(*) AS n FROM live");
    assert_eq!(decoded, live[0]["n"], "one decoded picture per live item");

    // A facet click narrows the grid to exactly the items with that tag.
    let tag = b
        .script("return document.querySelector('a.facet[data-category=character]').dataset.tag;")
        .as_str()
        .unwrap()
        .to_string();
    b.click("a.facet[data-category=character]");
    b.wait_for(
        "the filtered gallery",
        "return location.search.includes('tags=') && document.readyState === 'complete';",
        within,
    );
    let shown = b.script(
        "return [...document.querySelectorAll('.grid a.tile')].map(a => a.dataset.key).sort();",
    );
    let expected: Vec<Value> = query(
        &pool,
        &format!(
            "SELECT DISTINCT l.key FROM live l JOIN item_tag_names t ON t.item = l.id
             WHERE t.tag = '{tag}' AND t.category = 'character' ORDER BY l.key"
        ),
    )
    .into_iter()
    .map(|r| r["key"].clone())
    .collect();
    assert!(!expected.is_empty());
    assert_eq!(
        shown,
        Value::Array(expected),
        "the grid after clicking {tag}"
    );
    // One tag asked for: the tags that come with it are listed beside the grid.
    let related = b.script(
        "const s = document.getElementById('related');
         return s && s.getBoundingClientRect().height > 0
             ? [...s.querySelectorAll('a.facet')].map(a => a.dataset.tag) : null;",
    );
    let related = related
        .as_array()
        .expect("a related-tags panel beside the grid");
    assert!(
        !related.is_empty() && !related.contains(&json!(tag)),
        "{related:?}"
    );
    b.screenshot("gallery-facet");

    // An item with faces: its sample decoded and the boxes drawn over it; the strict
    // level's boxes appear when its box is ticked.
    let key = query(
        &pool,
        "SELECT key FROM live WHERE faces > 0 ORDER BY key LIMIT 1",
    )[0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    b.goto(&url(&format!("/item/{DATASET}/{key}")));
    b.wait_for(
        "the sample",
        "const i = document.getElementById('sample'); return i && i.complete && i.naturalWidth > 0;",
        within,
    );
    let drawn = "return [...document.querySelectorAll('rect.face.LEVEL')]
        .filter(r => getComputedStyle(r).display !== 'none' && r.getBoundingClientRect().width > 4).length;";
    let medium = b.script(&drawn.replace("LEVEL", "medium"));
    assert!(
        medium.as_u64().unwrap() >= 1,
        "medium boxes drawn: {medium}"
    );
    assert_eq!(
        b.script(&drawn.replace("LEVEL", "strict")),
        json!(0),
        "strict hidden at first"
    );
    b.click("label[for=show-strict]");
    let strict = b.script(&drawn.replace("LEVEL", "strict"));
    let strict_boxes = b.script("return document.querySelectorAll('rect.face.strict').length;");
    assert_eq!(strict, strict_boxes, "every strict box drawn once ticked");
    b.screenshot("item");
    // Below: the items drawn alike (by tags), as tiles with how alike they are.
    let alike = b.script(
        "const g = [...document.querySelectorAll('div.nearby')];
         if (g.length) g[g.length - 1].scrollIntoView();
         return g.map(x => x.querySelectorAll('a.tile').length);",
    );
    assert!(
        alike
            .as_array()
            .is_some_and(|g| g.iter().any(|n| n.as_u64() > Some(0))),
        "look-alike tiles on the item page: {alike}"
    );
    b.screenshot("item-nearby");

    // The cluster browser, over a clustering made by the real binary: each cluster
    // with its tags and the pictures nearest its centre, decoded.
    let r = run_binary(&[
        "mine",
        "clusters",
        "--pool",
        s(&pool),
        "--k",
        "3",
        "--name",
        "browser",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    b.goto(&url(&format!("/clusters/{DATASET}/browser")));
    b.wait_for("the medoids", DECODED, within);
    let sections = b.script(
        "return [...document.querySelectorAll('section.cluster')]
            .map(s => [s.querySelectorAll('a.facet').length, s.querySelectorAll('a.tile').length]);",
    );
    let sections = sections.as_array().unwrap();
    assert_eq!(sections.len(), 3, "{sections:?}");
    assert!(
        sections.iter().all(|c| c[1].as_u64() > Some(0)),
        "{sections:?}"
    );
    b.screenshot("clusters");

    // Clustered by image statistics too: the overview links both clusterings and the
    // trends between the demo's two releases, whose chart has a bar per tag listed and
    // whose form compares another category.
    let r = run_binary(&[
        "mine",
        "clusters",
        "--pool",
        s(&pool),
        "--k",
        "2",
        "--by",
        "stats",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    b.goto(&url("/"));
    let links = b.script(
        "return [...document.querySelectorAll('p.mining a')].map(a => a.getAttribute('href')).sort();",
    );
    assert_eq!(
        links,
        json!([
            format!("/clusters/{DATASET}/browser"),
            format!("/clusters/{DATASET}/stats"),
            format!("/trends/{DATASET}"),
        ])
    );
    b.click("p.mining a[href^='/trends/']");
    let bars = b.wait_for(
        "the trends chart",
        "if (!location.pathname.startsWith('/trends/')) return null;
         const bars = [...document.querySelectorAll('figure.chart rect.bar')]
             .filter(r => r.getBoundingClientRect().width > 0);
         return bars.length > 0 ? bars.length : null;",
        within,
    );
    assert!(bars.as_u64() > Some(0), "{bars}");
    b.screenshot("trends");
    b.script("document.querySelector('form.trends select[name=category]').value = 'character'; document.querySelector('form.trends').submit(); return null;");
    b.wait_for(
        "the character trends",
        "return location.search.includes('category=character') && document.querySelector('h1') !== null;",
        within,
    );
    let labels = b.script(
        "return [...document.querySelectorAll('figure.chart text.label')].map(t => t.textContent);",
    );
    let labels = labels.as_array().unwrap();
    assert!(
        !labels.is_empty()
            && labels
                .iter()
                .all(|l| l.as_str().unwrap().ends_with("(character)")),
        "{labels:?}"
    );

    // A hit-parade: a chart of bars, and the thumbnails behind its rows.
    b.goto(&url("/parade/characters-by-year"));
    let bars = b.script("return [...document.querySelectorAll('figure.chart rect.bar')].filter(r => r.getBoundingClientRect().width > 0).length;");
    let rows = b.script("return document.querySelectorAll('table.parade tbody tr').length;");
    assert_eq!(bars, rows, "one bar per row of the table");
    b.wait_for(
        "row thumbnails",
        "const imgs = [...document.querySelectorAll('td.thumbs img')].slice(0, 4);
         return imgs.length === 4 && imgs.every(i => i.complete && i.naturalWidth > 0);",
        within,
    );
    b.screenshot("parade");

    // The release review lists what ingest left out, from its report.
    b.goto(&url(&format!("/release/{DATASET}/2")));
    let left_out = b.script("return [...document.querySelectorAll('section.ingest td:first-child')].map(t => t.textContent).sort();");
    assert_eq!(
        left_out,
        json!(["duplicate", "duplicate", "filtered", "unreadable"])
    );
    b.screenshot("release");

    // The SQL console shows the item behind each key.
    b.goto(&url(
        "/sql?q=SELECT+key,+score+FROM+live+ORDER+BY+score+DESC+LIMIT+5",
    ));
    let shown = b.wait_for(
        "the console's pictures",
        "const imgs = [...document.querySelectorAll('table.result img')];
         return imgs.length === 5 && imgs.every(i => i.complete && i.naturalWidth > 0) ? imgs.length : null;",
        within,
    );
    assert_eq!(shown, json!(5));
    b.screenshot("sql");

    // On a phone's screen the gallery fits its width.
    b.window(390, 844);
    b.goto(&url("/gallery"));
    let fits = b.script("return document.documentElement.scrollWidth <= window.innerWidth + 1;");
    assert_eq!(fits, json!(true));
    b.screenshot("gallery-phone");
}

#[test]
fn fetch_these_brings_the_missing_shards_from_a_seeder() {
    let work = demo();
    let store = work.join("store");
    let manifest = store.join(format!("{DATASET}-1.manifest.json"));
    let seeder = Seeder::start(BIN, &store, std::slice::from_ref(&manifest), &[]);
    let t = tempfile::tempdir().unwrap();
    let pool = t.path().join("pool");
    // A selective sync: one item's shard only.
    let one = query(
        &work.join("pool"),
        "SELECT key FROM live ORDER BY key LIMIT 1",
    )[0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = run_binary(&[
        "sync",
        s(&manifest),
        "--pool",
        s(&pool),
        "--peer",
        &seeder.addr,
        "--where",
        &format!("key = '{one}'"),
        "--listen",
        "127.0.0.1:0",
        "--no-dht",
        "--no-trackers",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let missing = "SELECT count(*) AS n FROM shards WHERE present = 0";
    assert!(query(&pool, missing)[0]["n"].as_u64().unwrap() > 0);

    let served = serve(
        &pool,
        &[
            "--peer",
            &seeder.addr,
            "--no-dht",
            "--no-trackers",
            "--fetch-listen",
            "127.0.0.1:0",
        ],
    );
    let b = Browser::start();
    b.goto(&format!("{}/gallery", served.url));
    let placeholders = "return document.querySelectorAll('.grid .placeholder').length;";
    assert!(b.script(placeholders).as_u64().unwrap() > 0);
    b.screenshot("fetch-before");
    b.click("#fetch-these");
    // The page follows the fetch and reloads when the shards are in the pool.
    b.wait_for(
        "the view to fill in",
        "return document.readyState === 'complete'
            && document.querySelectorAll('.grid .placeholder').length === 0
            && document.querySelectorAll('.grid img').length > 0;",
        Duration::from_secs(90),
    );
    b.script("document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager');");
    b.wait_for("every thumbnail", DECODED, Duration::from_secs(30));
    b.screenshot("fetch-after");
    assert_eq!(
        query(&pool, missing)[0]["n"],
        json!(0),
        "every shard is in the pool"
    );
    let status = b.script("return fetch('/api/fetch').then(r => r.json());");
    assert_eq!(status["finished"], json!(true), "{status}");
}
