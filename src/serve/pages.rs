//! The HTML of every page, from the same structs the JSON API returns. Templates only
//! lay data out: what to show was decided by `query::browse`.

use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use super::chart::{self, Bar};
use super::fetch::FetchStatus;
use crate::mine::related::RelatedReport;
use crate::progress::human_bytes;
use crate::query::browse::{
    self, Facets, Gallery, ItemView, Overview, ParadeView, ReleaseReview, SqlView, Tile,
};
use crate::query::browse::{ClustersView, TrendsView};
use crate::query::filter::{Filter, Presence, Sort};

/// A path segment with everything but unreserved characters percent-encoded.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn item_href(dataset: &str, key: &str) -> String {
    format!("/item/{}/{}", segment(dataset), segment(key))
}

/// A member's URL, with its blake3 as `v`: the bytes behind it never change, so the
/// browser may keep them for good.
pub fn file_src(dataset: &str, key: &str, ext: &str, blake3: &str) -> String {
    format!(
        "/file/{}/{}/{}?v={blake3}",
        segment(dataset),
        segment(key),
        segment(ext)
    )
}

fn gallery_href(query: &str) -> String {
    if query.is_empty() {
        "/gallery".into()
    } else {
        format!("/gallery?{query}")
    }
}

/// Every page: the header, the body and, where the page has one, its JSON's URL.
pub fn layout(title: &str, json: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · seedpool" }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "seedpool" }
                    nav {
                        a href="/" { "Overview" }
                        a href="/gallery" { "Gallery" }
                        a href="/parades" { "Hit-parades" }
                        a href="/sql" { "SQL" }
                        a href="/fetch" { "Fetch" }
                    }
                }
                main { (body) }
                footer {
                    @if let Some(json) = json {
                        a.json href=(json) { "this page as JSON" }
                        " · "
                    }
                    a href="/api" { "JSON API" }
                }
            }
        }
    }
}

pub fn problem(status: u16, reason: &str, message: &str) -> Markup {
    layout(
        reason,
        None,
        html! {
            section.problem {
                h1 { (status) " " (reason) }
                p.message { (message) }
                p { a href="/" { "Back to the overview" } }
            }
        },
    )
}

fn tile(t: &Tile) -> Markup {
    let caption = match (t.score, &t.booru) {
        (Some(s), Some(b)) => format!("{b} · {s}"),
        (Some(s), None) => s.to_string(),
        (None, Some(b)) => b.clone(),
        (None, None) => String::new(),
    };
    html! {
        a.tile href=(item_href(&t.dataset, &t.key)) data-key=(t.key) title=(t.key) {
            @match (&t.thumb, t.present) {
                (Some(m), true) => img src=(file_src(&t.dataset, &t.key, &m.ext, &m.blake3)) alt=(t.key) loading="lazy";,
                (_, false) => span.placeholder { "not downloaded" },
                (None, true) => span.placeholder { "no picture" },
            }
            span.caption { (caption) }
        }
    }
}

fn tiles(list: &[Tile]) -> Markup {
    html! {
        div.grid { @for t in list { (tile(t)) } }
    }
}

fn number(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn overview(o: &Overview) -> Markup {
    html! {
        h1 { "Pool overview" }
        @if o.datasets.is_empty() {
            p { "This pool holds no release yet: " code { "seedpool sync MANIFEST --pool POOL" } " brings one." }
        }
        @for d in &o.datasets {
            section.dataset {
                h2 { (d.name) }
                p.facts {
                    (number(d.live_items)) " live items, " (number(d.items_on_disk)) " on disk; "
                    (number(d.shards_present)) " of " (number(d.shards)) " shards held ("
                    (human_bytes(d.bytes_present)) " of " (human_bytes(d.bytes)) ")"
                    @if d.items_on_disk < d.live_items {
                        " · " a href=(gallery_href(&format!("dataset={}&shards=missing", segment(&d.name)))) { "items only in the index" }
                    }
                }
                p.key { "publisher key " code { (d.public_key) } }
                @if d.releases.len() > 1 || !d.clusterings.is_empty() { p.mining {
                    @if d.releases.len() > 1 {
                        a href=(format!("/trends/{}", segment(&d.name))) { "trends across releases" }
                    }
                    @for (i, c) in d.clusterings.iter().enumerate() {
                        @if i > 0 || d.releases.len() > 1 { " · " }
                        a href=(format!("/clusters/{}/{}", segment(&d.name), segment(&c.name))) {
                            "clusters “" (c.name) "” (" (c.k) " by " (c.features) ")"
                        }
                    }
                } }
                table.releases {
                    thead { tr { th { "release" } th { "parent" } th { "created" } th.n { "items" } th.n { "added" } th.n { "changed" } th.n { "removed" } th { "merged" } } }
                    tbody {
                        @for r in &d.releases {
                            tr {
                                td { a href=(format!("/release/{}/{}", segment(&d.name), segment(&r.version))) { (r.version) }
                                     @if d.head.as_deref() == Some(r.version.as_str()) { " " span.badge { "newest" } } }
                                td { (r.parent.as_deref().unwrap_or("—")) }
                                td { (r.created) }
                                td.n { (number(r.items)) } td.n { (number(r.added)) } td.n { (number(r.changed)) } td.n { (number(r.removed)) }
                                td { (r.merged_at) }
                            }
                        }
                    }
                }
            }
        }
        section.charts {
            @for b in &o.breakdowns {
                @let bars: Vec<Bar> = b.values.iter().map(|(v, n)| Bar {
                    label: v.clone(),
                    value: *n as f64,
                    href: b.field.as_ref().map(|f| {
                        if f == "year" {
                            gallery_href(&format!("year_min={v}&year_max={v}", v = segment(v)))
                        } else {
                            gallery_href(&format!("{f}={}", segment(v)))
                        }
                    }),
                }).collect();
                @if b.column == "year" {
                    (chart::columns(&format!("items by {}", b.column), &bars))
                } @else {
                    (chart::bars(&format!("items by {}", b.column), &bars))
                }
            }
        }
    }
}

/// The gallery's form, its grid and the facets beside it.
pub fn gallery(
    g: &Gallery,
    facets: &Facets,
    related: Option<&RelatedReport>,
    fetch: &FetchStatus,
    extract: bool,
) -> Markup {
    let f = &g.filter;
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let num = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let x = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    html! {
        h1 { "Gallery" }
        form.filter method="get" action="/gallery" {
            label.wide { "tags " input #tags type="search" name="tags" value=(f.tags_text()) list="tag-list" autocomplete="off" placeholder="hakurei_reimu 1girl -solo"; }
            datalist #tag-list {}
            label { "booru " input type="text" name="booru" value=(opt(&f.booru)) size="10"; }
            label { "rating "
                select name="rating" {
                    option value="" { "any" }
                    @for r in ["g", "s", "q", "e"] { option value=(r) selected[f.rating.as_deref() == Some(r)] { (r) } }
                }
            }
            label { "year " input type="number" name="year_min" value=(num(f.year_min)) min="1900" max="2100"; "–" input type="number" name="year_max" value=(num(f.year_max)) min="1900" max="2100"; }
            label { "volume " input type="text" name="volume" value=(opt(&f.volume)) size="9"; }
            label { "composition "
                select name="composition" {
                    option value="" { "any" }
                    @for c in ["close-up", "portrait", "upper-body", "full-body", "wide", "no-face"] { option value=(c) selected[f.composition.as_deref() == Some(c)] { (c) } }
                }
            }
            label { "faces " input type="number" name="faces_min" value=(num(f.faces_min)) min="0"; "–" input type="number" name="faces_max" value=(num(f.faces_max)) min="0"; }
            label { "quality " input type="number" step="0.01" name="quality_min" value=(x(f.quality_min)); "–" input type="number" step="0.01" name="quality_max" value=(x(f.quality_max)); }
            label { "score ≥ " input type="number" name="score_min" value=(num(f.score_min)); }
            label { "shards "
                select name="shards" {
                    option value="" selected[f.shards == Presence::Any] { "any" }
                    option value="present" selected[f.shards == Presence::Present] { "on disk" }
                    option value="missing" selected[f.shards == Presence::Missing] { "not downloaded" }
                }
            }
            label { "sort "
                select name="sort" {
                    @for s in Sort::ALL { option value=(s.name()) selected[f.sort == s] { (s.name()) } }
                }
            }
            @if let Some(d) = &f.dataset { input type="hidden" name="dataset" value=(d); }
            button type="submit" { "Show" }
            a.reset href="/gallery" { "clear" }
        }
        div.gallery {
            section.results {
                p.summary {
                    span #total { (number(g.total)) } " items"
                    @if g.missing > 0 { ", " span #missing { (number(g.missing)) } " not downloaded" }
                    " · page " (f.page) " of " (g.pages)
                    " · export: "
                    @for (fmt, label) in [("tsv", "TSV"), ("csv", "CSV"), ("jsonl", "JSON Lines"), ("parquet", "Parquet")] {
                        a.export href=(format!("/export?format={fmt}{}{}", if g.query.is_empty() { "" } else { "&" }, g.query)) { (label) } " "
                    }
                }
                @if extract && g.total > 0 {
                    form.extract method="post" action="/extract" {
                        input type="hidden" name="view" value=(g.query);
                        button #extract-these type="submit" { "extract these" }
                        " the files of the " (number(g.total - g.missing)) " items on disk to a folder"
                    }
                }
                @if g.missing > 0 || fetch.running {
                    form.fetch method="post" action="/fetch" {
                        input type="hidden" name="view" value=(g.query);
                        button #fetch-these type="submit" disabled[fetch.running] { "fetch these" }
                        " the shards of the " (number(g.missing)) " items not downloaded "
                        progress #fetch-progress value=(fetch.have) max=(fetch.total.max(1)) hidden[!fetch.running] {}
                        span #fetch-state { (fetch.summary()) }
                    }
                }
                (tiles(&g.items))
                nav.pager {
                    @if f.page > 1 { a rel="prev" href=(gallery_href(&f.with_page(f.page - 1).to_query())) { "← previous" } }
                    @if u64::from(f.page) < g.pages { a rel="next" href=(gallery_href(&f.with_page(f.page + 1).to_query())) { "next →" } }
                }
            }
            aside.facets {
                @if let Some(r) = related {
                    @if !r.related.is_empty() {
                        section #related {
                            h3 { "Related (Jaccard)" }
                            ul {
                                @for t in &r.related {
                                    li {
                                        a.facet href=(gallery_href(&f.with_tag(&t.tag).to_query())) data-tag=(t.tag) title=(format!("{} · {} items together", t.category, t.both)) { (t.tag) }
                                        " " span.count { (format!("{:.2}", t.value)) }
                                    }
                                }
                            }
                        }
                    }
                }
                @if let Some(n) = facets.sampled { p.note { "counts over the first " (number(n)) " items" } }
                @for group in &facets.categories {
                    @if !group.tags.is_empty() {
                        h3 { (group.category) }
                        ul {
                            @for (name, n) in &group.tags {
                                li { a.facet href=(gallery_href(&f.with_tag(name).to_query())) data-tag=(name) data-category=(group.category) { (name) } " " span.count { (number(*n)) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn item(v: &ItemView) -> Markup {
    let t = &v.tile;
    let fact = |k: &str, val: Option<String>| {
        html! { @if let Some(val) = val { tr { th { (k) } td { (val) } } } }
    };
    let s = |v: &Option<String>| v.clone();
    let n = |v: Option<i64>| v.map(|v| v.to_string());
    html! {
        h1 { (t.key) }
        div.item {
            section.picture-box {
                @if !v.faces.is_empty() {
                    @for (level, boxes) in &v.faces {
                        input.level type="checkbox" id=(format!("show-{level}")) checked[level == "medium"];
                        label.level for=(format!("show-{level}")) { (level) " (" (boxes.len()) ")" }
                    }
                }
                div.picture {
                    @match (&v.sample, t.present) {
                        (Some(m), true) => img #sample src=(file_src(&t.dataset, &t.key, &m.ext, &m.blake3)) alt=(t.key);,
                        (_, false) => span.placeholder.large { "not downloaded: shard " (v.shard) " is known from the index only" },
                        (None, true) => span.placeholder.large { "no picture" },
                    }
                    @if !v.faces.is_empty() {
                        svg.faces xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1" preserveAspectRatio="none" {
                            @for (level, boxes) in &v.faces {
                                @for b in boxes {
                                    rect class=(format!("face {level}")) x=(b[0]) y=(b[1]) width=(b[2]) height=(b[3]) {}
                                }
                            }
                        }
                    }
                }
            }
            section.facts {
                table {
                    (fact("dataset", Some(t.dataset.clone())))
                    (fact("booru", s(&t.booru)))
                    (fact("post", n(v.post_id)))
                    (fact("rating", s(&t.rating)))
                    (fact("score", n(t.score)))
                    (fact("favs", n(t.favs)))
                    (fact("posted", s(&v.posted)))
                    (fact("size", t.width.zip(t.height).map(|(w, h)| format!("{w} × {h}"))))
                    (fact("bytes", v.bytes.map(|b| human_bytes(b as u64))))
                    (fact("volume", Some(v.volume.clone())))
                    (fact("composition", s(&v.composition)))
                    (fact("faces", n(t.faces)))
                    (fact("quality", t.quality.map(|q| format!("{q:.4}"))))
                    (fact("perceptual hash", s(&v.phash)))
                    (fact("md5", s(&v.md5)))
                    (fact("item hash", Some(v.hash.clone())))
                    (fact("shard", Some(format!("{}{}", v.shard, if t.present { "" } else { " (not downloaded)" }))))
                    (fact("removed in", s(&v.removed_in)))
                }
                @for (category, names) in &v.tags {
                    h3 { (category) }
                    p.tags { @for name in names { a.tag href=(gallery_href(&Filter::new().with_tag(name).to_query())) { (name) } " " } }
                }
            }
        }
        @if !v.quality_parts.is_empty() {
            @let bars: Vec<Bar> = v.quality_parts.iter().map(|(k, x)| Bar { label: k.clone(), value: *x, href: None }).collect();
            (chart::bars(&format!("quality {} and its parts", t.quality.map(|q| format!("{q:.3}")).unwrap_or_default()), &bars))
        }
        @if !v.stats.is_empty() {
            h2 { "Image statistics" }
            table.stats { @for (k, x) in &v.stats { tr { th { (k) } td { (cell(x)) } } } }
        }
        h2 { "History" }
        table.history {
            thead { tr { th { "release" } th { "created" } th { "what it did" } th { "item hash" } } }
            tbody {
                @for h in &v.history {
                    tr {
                        td { (h.version) } td { (h.created) }
                        td { (h.action) @if !h.fields.is_empty() { ": " (h.fields.join(", ")) } }
                        td.hash { (h.hash.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
        @if let Some(w) = &v.duplicate_of {
            h2 { "Hidden as a duplicate of" }
            (tiles(std::slice::from_ref(w)))
        }
        @if !v.duplicates.is_empty() {
            h2 { "Duplicates and near duplicates" }
            div.grid {
                @for d in &v.duplicates {
                    div.dup {
                        (tile(&d.tile))
                        span.why {
                            @if d.same_md5 { "same file" } @else if let Some(n) = d.distance { (n) " bits apart" }
                        }
                    }
                }
            }
        }
        @for (title, list, unit) in [
            ("Look-alikes", &v.look_alikes, "bits apart"),
            ("Drawn alike (by tags)", &v.similar_tags, "apart"),
            ("Seen alike (by embedding)", &v.similar_embedding, "apart"),
        ] {
            @if !list.is_empty() {
                h2 { (title) }
                div.grid.nearby {
                    @for n in list {
                        div.dup {
                            (tile(&n.tile))
                            span.why {
                                @if unit == "bits apart" { (n.distance) " bits apart" }
                                @else { (format!("{:.0}% alike", (1.0 - n.distance) * 100.0)) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Files" }
        table.files {
            thead { tr { th { "file" } th.n { "bytes" } th { "blake3" } } }
            tbody {
                @for m in &v.files {
                    tr {
                        td { @if t.present { a href=(file_src(&t.dataset, &t.key, &m.ext, &m.blake3)) { (t.key) "." (m.ext) } } @else { (t.key) "." (m.ext) } }
                        td.n { (number(m.length)) }
                        td.hash { (m.blake3) }
                    }
                }
            }
        }
        details { summary { "record" } pre { (serde_json::to_string_pretty(&v.record).unwrap_or_default()) } }
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn parade_list(list: &[(&str, &str, String)]) -> Markup {
    html! {
        h1 { "Hit-parades" }
        table.parades {
            thead { tr { th { "name" } th { "what it ranks" } th { "parameters" } } }
            tbody {
                @for (name, description, params) in list {
                    tr { td { a href=(format!("/parade/{name}")) { (name) } } td { (description) } td { (params) } }
                }
            }
        }
    }
}

/// Columns a chart takes its labels from, and its values, best first.
const LABELS: &[&str] = &[
    "character",
    "series",
    "artist",
    "copyright",
    "franchise",
    "key",
    "category",
    "version",
];
const VALUES: &[&str] = &["items", "items_tagged", "score", "favs", "uses", "quality"];

pub fn parade(v: &ParadeView) -> Markup {
    let cols = &v.table.columns;
    let find = |names: &[&str]| names.iter().find_map(|n| cols.iter().position(|c| c == n));
    let (label, value) = (find(LABELS), find(VALUES));
    let year = cols.iter().position(|c| c == "year");
    let charts = match (label, value) {
        (Some(l), Some(x)) => {
            let bar = |i: usize, row: &Vec<Value>| Bar {
                label: cell(&row[l]),
                value: row[x].as_f64().unwrap_or(0.0),
                href: v
                    .rows
                    .get(i)
                    .and_then(|r| r.as_ref())
                    .map(|r| gallery_href(&r.filter)),
            };
            match year {
                // Ranked bars per year.
                Some(y) if cols.iter().any(|c| c == "rank") => {
                    let mut groups: Vec<(String, Vec<Bar>)> = Vec::new();
                    for (i, row) in v.table.rows.iter().enumerate() {
                        let g = cell(&row[y]);
                        match groups.last_mut() {
                            Some((last, bars)) if *last == g => bars.push(bar(i, row)),
                            _ => groups.push((g, vec![bar(i, row)])),
                        }
                    }
                    groups
                        .into_iter()
                        .map(|(g, bars)| {
                            chart::bars(&format!("{} by {} in {g}", cols[x], cols[l]), &bars)
                        })
                        .collect()
                }
                _ => {
                    let bars: Vec<Bar> = v
                        .table
                        .rows
                        .iter()
                        .enumerate()
                        .take(30)
                        .map(|(i, r)| bar(i, r))
                        .collect();
                    vec![chart::bars(&format!("{} by {}", cols[x], cols[l]), &bars)]
                }
            }
        }
        _ => Vec::new(),
    };
    html! {
        h1 { (v.name) }
        p { (v.description) }
        form.params method="get" action=(format!("/parade/{}", v.name)) {
            @for (field, about, given) in &v.params {
                @if field == "portraits" {
                    label { input type="checkbox" name="portraits" checked[!given.is_empty()]; " portraits only " small { (about) } }
                } @else if field == "metric" {
                    label { "metric " select name="metric" { @for m in ["score", "favs"] { option value=(m) selected[given == m] { (m) } } } }
                } @else {
                    label { (field) " " input type=(if field == "year" || field == "limit" { "number" } else { "text" }) name=(field) value=(given); " " small { (about) } }
                }
            }
            button type="submit" { "Run" }
        }
        div.charts #parade-charts { @for c in charts { (c) } }
        table.parade {
            thead { tr { @for c in cols { th { (c) } } th { "items" } } }
            tbody {
                @for (i, row) in v.table.rows.iter().enumerate() {
                    tr {
                        @for x in row { td { (cell(x)) } }
                        td.thumbs {
                            @if let Some(Some(r)) = v.rows.get(i) {
                                @for t in &r.items { (tile(t)) }
                                a.more href=(gallery_href(&r.filter)) { "all →" }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn release(r: &ReleaseReview) -> Markup {
    let rel = &r.release;
    html! {
        h1 { (r.dataset) " " (rel.version) }
        p.facts {
            "created " (rel.created) "; parent " (rel.parent.as_deref().unwrap_or("none")) "; "
            (number(rel.items)) " items: " (number(rel.added)) " added, " (number(rel.changed)) " changed, " (number(rel.removed)) " removed"
        }
        @for g in &r.actions {
            @if g.total > 0 {
                section.action {
                    h2 { (g.action) " (" (number(g.total)) ")" }
                    @if g.fields.is_empty() {
                        (tiles(&g.items))
                    } @else {
                        div.grid {
                            @for (t, f) in g.items.iter().zip(&g.fields) {
                                div.dup { (tile(t)) span.why { @if f.is_empty() { "files" } @else { (f.join(", ")) } } }
                            }
                        }
                    }
                    @if g.total > g.items.len() as u64 { p.note { "the first " (g.items.len()) " by key" } }
                }
            }
        }
        section.outliers {
            h2 { "Outliers" }
            form method="get" {
                label { "statistic " select name="stat" { @for s in browse::STATS { option value=(s.name) selected[s.name == r.outliers.stat] { (s.name) } } } }
                button type="submit" { "Show" }
            }
            @for (title, list) in [("lowest", &r.outliers.lowest), ("highest", &r.outliers.highest)] {
                h3 { (title) " " (r.outliers.stat) }
                div.grid { @for (t, x) in list { div.dup { (tile(t)) span.why { (cell(x)) } } } }
            }
        }
        @if let Some(lines) = &r.ingest {
            section.ingest {
                h2 { "Left out by ingest (" (lines.len()) ")" }
                table { thead { tr { th { "status" } th { "why" } th { "input" } } }
                    tbody { @for l in lines { tr { td { (l.status) } td { (l.detail) } td { (l.input) } } } } }
            }
        }
    }
}

pub fn sql(v: &SqlView) -> Markup {
    html! {
        h1 { "SQL" }
        p { "Read-only SQL over the pool (" a href="https://www.sqlite.org/lang_select.html" { "SQLite" } "); the tables are described in docs/pool.md. Writes, ATTACH and pragmas are refused." }
        form.sql method="get" action="/sql" {
            textarea name="q" rows="5" cols="80" { (v.sql) }
            br;
            button type="submit" { "Run" }
        }
        @if let Some(e) = &v.error { p.error { (e) } }
        @if let Some(t) = &v.table {
            p.summary { (t.rows.len()) " rows" @if v.more { " (the first " (t.rows.len()) "; more were left unread)" } }
            table.result {
                thead { tr { @for c in &t.columns { th { (c) } } } }
                tbody {
                    @for (i, row) in t.rows.iter().enumerate() {
                        tr {
                            @for (j, x) in row.iter().enumerate() {
                                td {
                                    @match (Some(j) == v.key_column, v.items.get(i).and_then(|t| t.as_ref())) {
                                        (true, Some(t)) => { (tile(t)) span.key { (cell(x)) } },
                                        _ => (cell(x)),
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn fetch(s: &FetchStatus) -> Markup {
    html! {
        @if s.running { meta http-equiv="refresh" content="2"; }
        h1 { "Fetch" }
        p #fetch-state { (s.summary()) }
        @if s.running || s.total > 0 {
            progress #fetch-progress value=(s.have) max=(s.total.max(1)) {}
        }
        @if let Some(e) = &s.error { p.error { (e) } }
        @if !s.log.is_empty() { ul.log { @for l in &s.log { li { (l) } } } }
        @if let Some(view) = &s.view { p { a href=(gallery_href(view)) { "back to the view" } } }
    }
}

/// `/api`: the URLs of the JSON API.
pub fn api_index() -> Markup {
    let rows: &[(&str, &str)] = &[
        ("/api/overview", "datasets, releases, holdings, breakdowns"),
        (
            "/api/gallery?FILTER",
            "a page of items matching a filter, with its facets",
        ),
        ("/api/facets?FILTER", "facet counts only"),
        (
            "/api/tags?prefix=TEXT",
            "tag names and aliases starting with TEXT",
        ),
        ("/api/item/DATASET/KEY", "one item"),
        ("/api/parades", "the hit-parades"),
        (
            "/api/parade/NAME?PARAMS",
            "one hit-parade's table and the items behind its rows",
        ),
        (
            "/api/release/DATASET/VERSION?stat=NAME",
            "what a release did, and its outliers",
        ),
        ("/api/sql?q=SQL", "read-only SQL"),
        (
            "/api/fetch",
            "the state of the fetch in progress (POST /fetch starts one)",
        ),
    ];
    layout(
        "JSON API",
        None,
        html! {
            h1 { "JSON API" }
            p { "Every page's data, as JSON; docs/serve.md describes the fields." }
            table { @for (url, what) in rows { tr { td { code { (url) } } td { (what) } } } }
        },
    )
}

pub fn extracted(
    view: &str,
    out: &std::path::Path,
    r: &crate::query::extract::ExtractReport,
) -> Markup {
    html! {
        h1 { "Extracted" }
        p { (number(r.items)) " items: " (number(r.files)) " files (" (human_bytes(r.bytes)) ") written into " code { (out.display()) } }
        @if r.not_downloaded > 0 { p.note { (number(r.not_downloaded)) " items were left out: their shards are not in the pool (fetch them first)" } }
        @if r.unchanged > 0 { p.note { (number(r.unchanged)) " files were there already" } }
        p { a href=(gallery_href(view)) { "back to the view" } }
    }
}

/// Tags whose share of live items grew and fell most between two releases, as bars in
/// percentage points (a click opens the gallery of that tag), with the releases and the
/// category to compare.
pub fn trends(v: &TrendsView) -> Markup {
    let r = &v.report;
    let bars = |trends: &[crate::mine::trends::Trend]| -> Vec<Bar> {
        trends
            .iter()
            .map(|t| Bar {
                label: format!("{} ({})", t.tag, t.category),
                value: (t.change.abs() * 100.0).round() / 100.0,
                href: Some(gallery_href(&Filter::default().with_tag(&t.tag).to_query())),
            })
            .collect()
    };
    let picker = |name: &str, chosen: &str| {
        html! {
            select name=(name) {
                @for version in &v.releases {
                    option value=(version) selected[version == chosen] { (version) }
                }
            }
        }
    };
    html! {
        h1 { "Trends in " (r.dataset) }
        form.trends method="get" {
            label { "from " (picker("from", &r.from)) }
            " "
            label { "to " (picker("to", &r.to)) }
            " "
            label { "category "
                select name="category" {
                    option value="" selected[v.category.is_none()] { "every category" }
                    @for c in crate::query::browse::FACET_CATEGORIES {
                        option value=(c) selected[v.category.as_deref() == Some(c)] { (c) }
                    }
                }
            }
            " "
            button type="submit" { "Compare" }
        }
        p.summary {
            (number(r.items_before)) " live items at " (r.from) ", " (number(r.items_after)) " at " (r.to)
            "; a tag's change is that of its share of the live items, in percentage points"
        }
        @if r.grew.is_empty() && r.fell.is_empty() {
            p.note { "No tag's share changed between these releases." }
        }
        @if !r.grew.is_empty() {
            (chart::bars(&format!("grew from {} to {} (points)", r.from, r.to), &bars(&r.grew)))
        }
        @if !r.fell.is_empty() {
            (chart::bars(&format!("fell from {} to {} (points)", r.from, r.to), &bars(&r.fell)))
        }
    }
}

/// A stored clustering: each cluster's size, characteristic tags (a click opens the
/// gallery of that tag) and the items nearest its centre.
pub fn clusters(v: &ClustersView) -> Markup {
    let r = &v.report;
    html! {
        h1 { "Clustering “" (r.name) "” of " (r.dataset) }
        p.summary { (r.k) " clusters by " (r.features) ", trained on " (number(r.trained_items)) " items by seedpool mine clusters; later merges add theirs" }
        @for (c, medoids) in r.clusters.iter().zip(&v.medoids) {
            section.cluster {
                h2 { "Cluster " (c.cluster) " · " (number(c.items)) " items" }
                p.tags {
                    @for t in &c.tags {
                        a.facet href=(gallery_href(&Filter::default().with_tag(&t.tag).to_query())) data-tag=(t.tag) { (t.tag) }
                        " " span.count { (format!("{:.0}%", t.share * 100.0)) } " "
                    }
                }
                (tiles(medoids))
            }
        }
    }
}
