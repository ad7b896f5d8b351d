//! Booru API dumps given with `--meta`: Danbooru `posts.json`, Gelbooru and Safebooru
//! DAPI JSON, Moebooru JSON (yande.re, konachan). Each post becomes a `Post` with the
//! record fields seedpool uses; originals are matched to posts by md5, then by booru and
//! post id.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::names::canonical_booru;

/// Tag categories in records, in this order.
pub const CATEGORIES: [&str; 5] = ["artist", "copyright", "character", "general", "meta"];

/// One post as a dump describes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Post {
    pub booru: String,
    pub post_id: u64,
    pub md5: Option<String>,
    /// `g`, `s`, `q` or `e`.
    pub rating: Option<String>,
    pub score: Option<i64>,
    pub favs: Option<i64>,
    /// RFC 3339.
    pub posted: Option<String>,
    pub width: Option<u64>,
    pub height: Option<u64>,
    pub bytes: Option<u64>,
    /// Tags by category; uncategorised dumps put everything in `general` until a tag
    /// list sorts them.
    pub tags: [Vec<String>; 5],
    /// Whether the dump gave categories (Danbooru does; DAPI and Moebooru do not).
    pub categorised: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("`{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` line {line} column {column}: not valid JSON: {problem}")]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        problem: String,
    },
    #[error("`{path}`: {problem}")]
    Format { path: PathBuf, problem: String },
}

impl MetaError {
    pub fn path(&self) -> &Path {
        match self {
            MetaError::Read { path, .. }
            | MetaError::Json { path, .. }
            | MetaError::Format { path, .. } => path,
        }
    }
}

/// Posts of every dump, found by md5 or by (booru, post id).
#[derive(Default)]
pub struct MetaIndex {
    posts: Vec<Post>,
    by_md5: HashMap<String, usize>,
    by_id: HashMap<(String, u64), usize>,
}

impl MetaIndex {
    pub fn add(&mut self, post: Post) {
        let i = self.posts.len();
        if let Some(m) = &post.md5 {
            self.by_md5.insert(m.clone(), i);
        }
        self.by_id.insert((post.booru.clone(), post.post_id), i);
        self.posts.push(post);
    }

    pub fn len(&self) -> usize {
        self.posts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.posts.is_empty()
    }

    pub fn find(&self, md5: &str, booru: Option<&str>, post_id: Option<u64>) -> Option<&Post> {
        if let Some(&i) = self.by_md5.get(md5) {
            return Some(&self.posts[i]);
        }
        let key = (booru?.to_string(), post_id?);
        self.by_id.get(&key).map(|&i| &self.posts[i])
    }
}

/// Reads one dump. `spec` is a path, or `BOORU:PATH` to say which booru it comes from
/// when the format alone cannot tell (Danbooru-format dumps default to danbooru, DAPI to
/// gelbooru, or safebooru when its posts have a `directory`, Moebooru to yande.re).
pub fn load(spec: &str) -> Result<Vec<Post>, MetaError> {
    let (booru, path) = match spec.split_once(':') {
        Some((b, p)) if canonical_booru(b).is_some() && !p.is_empty() => {
            (canonical_booru(b), PathBuf::from(p))
        }
        _ => (None, PathBuf::from(spec)),
    };
    let bytes = std::fs::read(&path).map_err(|source| MetaError::Read {
        path: path.clone(),
        source,
    })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| MetaError::Json {
        path: path.clone(),
        line: e.line(),
        column: e.column(),
        // serde_json's message repeats the position; it is in the fields already.
        problem: e
            .to_string()
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_string(),
    })?;
    parse(&value, booru, &path)
}

fn posts_of(value: &Value) -> Option<&Vec<Value>> {
    match value {
        Value::Array(a) => Some(a),
        Value::Object(o) => o
            .get("post")
            .or_else(|| o.get("posts"))
            .and_then(Value::as_array),
        _ => None,
    }
}

pub fn parse(
    value: &Value,
    booru: Option<&'static str>,
    path: &Path,
) -> Result<Vec<Post>, MetaError> {
    let bad = |problem: String| MetaError::Format {
        path: path.to_path_buf(),
        problem,
    };
    let Some(list) = posts_of(value) else {
        return Err(bad(
            "neither a list of posts nor an object with a `post` list".into(),
        ));
    };
    let mut out = Vec::with_capacity(list.len());
    for (n, v) in list.iter().enumerate() {
        let Some(o) = v.as_object() else {
            return Err(bad(format!("post {} is not an object", n + 1)));
        };
        let dapi = value.get("@attributes").is_some();
        let post = if o.contains_key("tag_string") || o.contains_key("tag_string_general") {
            danbooru(o, booru.unwrap_or("danbooru"))
        } else if o.contains_key("author") || o.get("created_at").is_some_and(Value::is_i64) {
            moebooru(o, booru.unwrap_or("yande.re"))
        } else {
            let guess = if !dapi && o.contains_key("directory") {
                "safebooru"
            } else {
                "gelbooru"
            };
            gelbooru(o, booru.unwrap_or(guess))
        };
        match post {
            Some(p) => out.push(p),
            None => return Err(bad(format!("post {} has no numeric `id`", n + 1))),
        }
    }
    Ok(out)
}

fn int(o: &Map<String, Value>, k: &str) -> Option<i64> {
    match o.get(k)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(o: &Map<String, Value>, k: &str) -> Option<String> {
    o.get(k)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn words(s: Option<String>) -> Vec<String> {
    s.map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

fn rating(r: Option<String>) -> Option<String> {
    let r = r?.to_ascii_lowercase();
    let letter = match r.as_str() {
        "g" | "general" => "g",
        "s" | "safe" | "sensitive" => "s",
        "q" | "questionable" => "q",
        "e" | "explicit" => "e",
        _ => return None,
    };
    Some(letter.to_string())
}

fn md5_of(o: &Map<String, Value>) -> Option<String> {
    text(o, "md5")
        .or_else(|| text(o, "hash"))
        .map(|m| m.to_ascii_lowercase())
        .filter(|m| m.len() == 32 && m.chars().all(|c| c.is_ascii_hexdigit()))
}

fn base(o: &Map<String, Value>, booru: &str) -> Option<Post> {
    Some(Post {
        booru: booru.to_string(),
        post_id: u64::try_from(int(o, "id")?).ok()?,
        md5: md5_of(o),
        rating: rating(text(o, "rating")),
        score: int(o, "score"),
        width: int(o, "image_width")
            .or_else(|| int(o, "width"))
            .and_then(|v| u64::try_from(v).ok()),
        height: int(o, "image_height")
            .or_else(|| int(o, "height"))
            .and_then(|v| u64::try_from(v).ok()),
        bytes: int(o, "file_size").and_then(|v| u64::try_from(v).ok()),
        ..Post::default()
    })
}

fn danbooru(o: &Map<String, Value>, booru: &str) -> Option<Post> {
    let mut p = base(o, booru)?;
    p.favs = int(o, "fav_count");
    p.posted = text(o, "created_at");
    for (i, cat) in CATEGORIES.iter().enumerate() {
        p.tags[i] = words(text(o, &format!("tag_string_{cat}")));
    }
    if p.tags.iter().all(Vec::is_empty) {
        p.tags[3] = words(text(o, "tag_string"));
    } else {
        p.categorised = true;
    }
    Some(p)
}

/// A field in Unix seconds, as RFC 3339.
fn unix_time(o: &Map<String, Value>, k: &str) -> Option<String> {
    let t = u64::try_from(int(o, k)?).ok()?;
    Some(
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(t),
        )
        .to_string(),
    )
}

fn moebooru(o: &Map<String, Value>, booru: &str) -> Option<Post> {
    let mut p = base(o, booru)?;
    p.favs = int(o, "fav_count");
    p.posted = unix_time(o, "created_at");
    p.tags[3] = words(text(o, "tags"));
    Some(p)
}

fn gelbooru(o: &Map<String, Value>, booru: &str) -> Option<Post> {
    let mut p = base(o, booru)?;
    p.favs = int(o, "fav_count");
    p.posted = text(o, "created_at").map(|d| ctime_to_rfc3339(&d).unwrap_or(d));
    if p.posted.is_none() {
        // Safebooru's dump has only `change`, the last edit, in Unix seconds.
        p.posted = unix_time(o, "change");
    }
    p.tags[3] = words(text(o, "tags"));
    Some(p)
}

/// Gelbooru writes `Sat Jan 01 12:34:56 -0500 2022`; records use RFC 3339.
fn ctime_to_rfc3339(d: &str) -> Option<String> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let f: Vec<&str> = d.split_whitespace().collect();
    let [_, mon, day, time, zone, year] = f[..] else {
        return None;
    };
    let m = MONTHS.iter().position(|x| *x == mon)? + 1;
    let day: u32 = day.parse().ok()?;
    if zone.len() != 5 || time.len() != 8 {
        return None;
    }
    Some(format!(
        "{year}-{m:02}-{day:02}T{time}{}:{}",
        &zone[..3],
        &zone[3..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_three_dump_formats() {
        let p = Path::new("x.json");
        let d = parse(
            &json!([{"id": 5, "md5": "0123456789abcdef0123456789ABCDEF", "rating": "s", "score": 10,
                     "fav_count": 3, "created_at": "2024-02-03T04:05:06.000-05:00",
                     "image_width": 1200, "image_height": 1600, "file_size": 900000,
                     "tag_string_artist": "a1", "tag_string_copyright": "c1 c2",
                     "tag_string_character": "ch1", "tag_string_general": "solo smile",
                     "tag_string_meta": "highres", "tag_string": "a1 c1 c2 ch1 solo smile highres"}]),
            None,
            p,
        )
        .unwrap();
        assert_eq!(d[0].booru, "danbooru");
        assert_eq!(
            d[0].md5.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(d[0].tags[1], ["c1", "c2"]);
        assert!(d[0].categorised);
        let g = parse(
            &json!({"@attributes": {"count": 1}, "post": [{"id": 9, "md5": "ffffffffffffffffffffffffffffffff",
                    "rating": "general", "score": 2, "created_at": "Sat Jan 01 12:34:56 -0500 2022",
                    "width": 900, "height": 900, "tags": "x y"}]}),
            None,
            p,
        )
        .unwrap();
        assert_eq!(g[0].booru, "gelbooru");
        assert_eq!(g[0].posted.as_deref(), Some("2022-01-01T12:34:56-05:00"));
        assert_eq!(g[0].rating.as_deref(), Some("g"));
        assert_eq!(g[0].tags[3], ["x", "y"]);
        let m = parse(
            &json!([{"id": 77, "md5": "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "created_at": 1700000000,
                     "author": "who", "rating": "q", "tags": "t1", "width": 2000, "height": 1000}]),
            Some("konachan"),
            p,
        )
        .unwrap();
        assert_eq!(m[0].booru, "konachan");
        assert_eq!(m[0].posted.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert!(parse(&json!({"nope": 1}), None, p).is_err());
    }
}
