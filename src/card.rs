//! The dataset card: `STORE/<dataset>/README.md`, which Hugging Face `datasets` reads
//! when given the dataset folder (`load_dataset("STORE/<dataset>", "<version>")`).
//!
//! Its front matter names one configuration per release, with exactly that release's
//! shards as data files (a store holds the shards of every release, so a glob would mix
//! them) and the newest release as the default, and declares each release's features.
//! Declared features matter: without them the WebDataset loader infers types from the
//! first five items and then fails on the first later item whose field was null in all
//! five ("Couldn't cast array of type int64 to null").
//!
//! Features come from the release's records (`items.record` of its index, the item's
//! `.json` member) and member extensions. Each record field gets the one type its values
//! share, null allowed: integers, with floats, are `float64`; an object whose items
//! carry more than [`MAX_STRUCT_FIELDS`] different keys (a map such as
//! `predicted_tags`' tag → probability) or values of different kinds is `json`.
//!
//! The front matter is written as JSON, which is YAML too, so the next publish reads it
//! back to keep the configurations of earlier releases. Text below the front matter is
//! the maintainer's: seedpool writes a short body only when there is none.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::files::{file_error, FileError};
use crate::index::IndexError;

/// Name of the card in a dataset's folder.
pub const FILE: &str = "README.md";

/// Above this many distinct keys an object is a map (stored as JSON), not a struct.
pub const MAX_STRUCT_FIELDS: usize = 64;
/// Records typed together on every core.
const BATCH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("shard `{path}`: {problem}")]
    Tar { path: PathBuf, problem: String },
    #[error(transparent)]
    Shard(#[from] crate::shard::ShardError),
    #[error("dataset card `{0}` has front matter that is not seedpool's JSON (hand-written YAML?); seedpool would lose it. Move what it holds below the front matter, or remove the file, and publish again")]
    Foreign(PathBuf),
    #[error("index `{path}`: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// The type of one field, as far as its values so far tell.
#[derive(Clone, Debug, PartialEq)]
enum Ty {
    /// Only nulls seen.
    Null,
    Bool,
    Int,
    Float,
    Str,
    List(Box<Ty>),
    /// Field name → type, with names in first-seen order.
    Struct(Vec<(String, Ty)>),
    /// Values of several kinds, or a map with too many keys.
    Json,
}

impl Ty {
    fn of(v: &Value) -> Ty {
        match v {
            Value::Null => Ty::Null,
            Value::Bool(_) => Ty::Bool,
            Value::Number(n) if n.is_f64() => Ty::Float,
            Value::Number(_) => Ty::Int,
            Value::String(_) => Ty::Str,
            Value::Array(items) => Ty::List(Box::new(
                items.iter().fold(Ty::Null, |t, v| t.merge(Ty::of(v))),
            )),
            Value::Object(fields) => Ty::Struct(Vec::new()).merge_object(fields),
        }
    }

    fn merge(self, other: Ty) -> Ty {
        match (self, other) {
            (Ty::Null, t) | (t, Ty::Null) => t,
            (Ty::Json, _) | (_, Ty::Json) => Ty::Json,
            (Ty::Int, Ty::Float) | (Ty::Float, Ty::Int) => Ty::Float,
            (Ty::List(a), Ty::List(b)) => Ty::List(Box::new(a.merge(*b))),
            (Ty::Struct(a), Ty::Struct(b)) => {
                let mut merged = Ty::Struct(a);
                for (name, t) in b {
                    merged = merged.merge_field(name, t);
                }
                merged
            }
            (a, b) if a == b => a,
            _ => Ty::Json,
        }
    }

    fn merge_object(self, fields: &Map<String, Value>) -> Ty {
        fields
            .iter()
            .fold(self, |t, (name, v)| t.merge_field(name.clone(), Ty::of(v)))
    }

    fn merge_field(self, name: String, t: Ty) -> Ty {
        let Ty::Struct(mut fields) = self else {
            return self.merge(Ty::Struct(vec![(name, t)]));
        };
        match fields.iter().position(|(n, _)| *n == name) {
            Some(i) => {
                let old = std::mem::replace(&mut fields[i].1, Ty::Null);
                fields[i].1 = old.merge(t);
            }
            None if fields.len() >= MAX_STRUCT_FIELDS => return Ty::Json,
            None => fields.push((name, t)),
        }
        Ty::Struct(fields)
    }

    /// The type as `datasets` writes it in a card: `{"dtype": ...}`, `{"list": ...}` or
    /// `{"struct": [...]}`, to be merged with the field's name.
    fn yaml(&self) -> Map<String, Value> {
        let dtype = |d: &str| Map::from_iter([("dtype".to_string(), json!(d))]);
        match self {
            Ty::Null => dtype("null"),
            Ty::Bool => dtype("bool"),
            Ty::Int => dtype("int64"),
            Ty::Float => dtype("float64"),
            Ty::Str => dtype("string"),
            Ty::Json => dtype("json"),
            Ty::List(inner) => {
                let inner = inner.yaml();
                // `datasets` writes a list of a plain type as `list: <dtype>`.
                let inner = match (inner.len(), inner.get("dtype")) {
                    (1, Some(d)) => d.clone(),
                    _ => Value::Object(inner),
                };
                Map::from_iter([("list".to_string(), inner)])
            }
            Ty::Struct(fields) => Map::from_iter([(
                "struct".to_string(),
                Value::Array(fields.iter().map(|(n, t)| named(n, t.yaml())).collect()),
            )]),
        }
    }
}

fn named(name: &str, mut ty: Map<String, Value>) -> Value {
    let mut field = Map::from_iter([("name".to_string(), json!(name))]);
    field.append(&mut ty);
    Value::Object(field)
}

/// The type `datasets`' WebDataset loader gives a member, by its last extension.
fn member_dtype(ext: &str) -> &'static str {
    let last = ext.rsplit('.').next().unwrap_or(ext).to_ascii_lowercase();
    match last.as_str() {
        "jpg" | "jpeg" | "png" | "webp" | "gif" | "bmp" | "tif" | "tiff" => "image",
        "txt" | "text" | "transcript" => "string",
        "cls" | "cls2" | "index" | "inx" | "id" => "int64",
        "json" | "jsn" => "json",
        _ => "binary",
    }
}

/// A release's features in card form, from its (unpacked) index: `__key__`, each member
/// extension, and the records' fields under `json`.
pub fn features(index: &Path) -> Result<Value, CardError> {
    let sql = |source| CardError::Sqlite {
        path: index.to_path_buf(),
        source,
    };
    let conn = rusqlite::Connection::open_with_flags(
        index,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    let mut exts: Vec<String> = conn
        .prepare("SELECT DISTINCT ext FROM members ORDER BY ext")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(sql)?;
    let mut record = Ty::Null;
    {
        let mut stmt = conn
            .prepare("SELECT record FROM items WHERE record IS NOT NULL")
            .map_err(sql)?;
        let mut rows = stmt.query([]).map_err(sql)?;
        // Records are parsed a batch at a time on every core while this thread reads
        // on; the batches merge in their order, so the fields keep first-seen order.
        let mut batch: Vec<String> = Vec::with_capacity(BATCH);
        let typed = |batch: &[String]| {
            use rayon::prelude::*;
            batch
                .par_iter()
                .map(|text| {
                    // The index was checked when written; a record that is not JSON is
                    // not a struct any loader could type.
                    serde_json::from_str::<Value>(text).map_or(Ty::Json, |v| Ty::of(&v))
                })
                .reduce(|| Ty::Null, Ty::merge)
        };
        while let Some(row) = rows.next().map_err(sql)? {
            batch.push(row.get(0).map_err(sql)?);
            if batch.len() == BATCH {
                record = record.merge(typed(&batch));
                batch.clear();
            }
        }
        record = record.merge(typed(&batch));
    }
    let mut out = vec![named("__key__", Ty::Str.yaml())];
    exts.sort();
    for ext in &exts {
        let ty = match (ext.as_str(), &record) {
            ("json", Ty::Struct(_)) => record.yaml(),
            _ => Map::from_iter([("dtype".to_string(), json!(member_dtype(ext)))]),
        };
        out.push(named(ext, ty));
    }
    out.push(named("__url__", Ty::Str.yaml()));
    Ok(Value::Array(out))
}

/// Keys that lie in the release's shards but are not items of the release (replaced or
/// removed by it or an earlier release), by shard id: a loader reading the shards must
/// skip them. `shards` gives each shard's id, the items it holds, and its file; only the
/// shards holding more items than the index lists as live are read (their headers).
pub fn hidden_items(
    index: &Path,
    shards: impl IntoIterator<Item = (crate::shard::ShardId, u64, PathBuf)>,
) -> Result<BTreeMap<String, Vec<String>>, CardError> {
    let sql = |source| CardError::Sqlite {
        path: index.to_path_buf(),
        source,
    };
    let conn =
        rusqlite::Connection::open_with_flags(index, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sql)?;
    let live: BTreeMap<String, u64> = conn
        .prepare("SELECT shard, count(*) FROM items GROUP BY shard")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(sql)?;
    let mut keys = conn
        .prepare("SELECT 1 FROM items WHERE key = ?1 AND shard = ?2")
        .map_err(sql)?;
    let mut hidden = BTreeMap::new();
    for (shard, items, path) in shards {
        let id = shard.to_hex();
        if live.get(&id).copied().unwrap_or(0) >= items {
            continue;
        }
        let map = crate::shard::check::open(&path, shard, None)?;
        let mut reader = crate::shard::tar::Reader::new(&map);
        let mut dead: Vec<String> = Vec::new();
        while let Some(m) = reader.next_member().map_err(|p| CardError::Tar {
            path: path.clone(),
            problem: format!("{p:?}"),
        })? {
            if dead.last().map(String::as_str) == Some(m.key()) {
                continue;
            }
            if !keys.exists(rusqlite::params![m.key(), &id]).map_err(sql)? {
                dead.push(m.key().to_string());
            }
        }
        hidden.insert(id, dead);
    }
    Ok(hidden)
}

/// One release's entry: its version, its shards' paths inside the dataset folder, and
/// its features.
pub struct Release<'a> {
    pub version: &'a str,
    pub shard_paths: Vec<String>,
    pub features: Value,
    /// [`hidden_items`] of the release.
    pub hidden: BTreeMap<String, Vec<String>>,
}

/// Where the keys a loader must skip are kept, inside the dataset folder.
pub fn hidden_path(version: &str) -> String {
    format!("hidden/{version}.json")
}

/// Writes (or updates) the card of the dataset folder `dir`: this release becomes the
/// default configuration, earlier releases' configurations are kept.
pub fn write(dir: &Path, dataset: &str, release: &Release) -> Result<PathBuf, CardError> {
    let path = dir.join(FILE);
    let (mut front, body) = existing(dir)?;
    let mut configs: BTreeMap<String, (Value, Value)> = BTreeMap::new();
    let infos = front.get("dataset_info").and_then(Value::as_array);
    for c in front
        .get("configs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(name) = c.get("config_name").and_then(Value::as_str) else {
            continue;
        };
        let info = infos
            .into_iter()
            .flatten()
            .find(|i| i.get("config_name").and_then(Value::as_str) == Some(name));
        if let (Some(files), Some(info)) = (c.get("data_files"), info) {
            configs.insert(name.to_string(), (files.clone(), info["features"].clone()));
        }
    }
    configs.insert(
        release.version.to_string(),
        (
            json!([{"split": "train", "path": release.shard_paths}]),
            release.features.clone(),
        ),
    );
    // The maintainer's own keys (license, tags, ...) stay; seedpool owns these three.
    front.entry("pretty_name").or_insert_with(|| json!(dataset));
    front.insert(
        "configs".into(),
        configs
            .iter()
            .map(|(name, (files, _))| {
                let mut c = json!({"config_name": name, "data_files": files});
                if name == release.version {
                    c["default"] = json!(true);
                }
                c
            })
            .collect(),
    );
    front.insert(
        "dataset_info".into(),
        configs
            .iter()
            .map(|(name, (_, features))| json!({"config_name": name, "features": features}))
            .collect(),
    );
    let body = match body.trim() {
        "" => default_body(dataset),
        _ => body.to_string(),
    };
    let text = format!(
        "---\n{}\n---\n{body}",
        serde_json::to_string_pretty(&front).expect("JSON values serialise")
    );
    let hidden = dir.join(hidden_path(release.version));
    if let Some(parent) = hidden.parent() {
        std::fs::create_dir_all(parent).map_err(file_error("create", parent))?;
    }
    let listed = serde_json::to_vec(&release.hidden).expect("JSON values serialise");
    crate::files::write_atomically(&hidden, &listed)?;
    crate::files::write_atomically(&path, text.as_bytes())?;
    Ok(path)
}

/// The card's front matter (empty without a card) and the text after it. A card whose
/// front matter seedpool cannot read back is refused rather than overwritten: publish
/// calls this before it commits, so such a card stops it with nothing changed.
pub fn existing(dir: &Path) -> Result<(Map<String, Value>, String), CardError> {
    let path = dir.join(FILE);
    let old = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(file_error("read", &path)(e).into()),
    };
    match split_front_matter(&old) {
        (None, body) => Ok((Map::new(), body.to_string())),
        (Some(front), body) => match serde_json::from_str(front) {
            Ok(front) => Ok((front, body.to_string())),
            Err(_) => Err(CardError::Foreign(path)),
        },
    }
}

/// The front matter between the opening and closing `---` lines, and the text after.
fn split_front_matter(text: &str) -> (Option<&str>, &str) {
    let Some(rest) = text.strip_prefix("---\n") else {
        return (None, text);
    };
    match rest.find("\n---\n") {
        Some(end) => (Some(&rest[..end]), &rest[end + 5..]),
        None => (None, text),
    }
}

fn default_body(dataset: &str) -> String {
    format!(
        "\n# {dataset}\n\n\
         Published with seedpool: every release is a configuration (the newest is the\n\
         default) listing exactly its shards, WebDataset-style tar files of keyed items.\n\
         A shard kept from an earlier release may still hold items this release replaced\n\
         or removed; `hidden/<version>.json` lists them by shard, to be skipped:\n\n\
         ```python\n\
         import json, os\n\
         from datasets import load_dataset\n\n\
         root, version = \"path/to/store/{dataset}\", \"1\"\n\
         hidden = json.load(open(f\"{{root}}/hidden/{{version}}.json\"))\n\
         ds = load_dataset(root, version, split=\"train\").filter(\n\
         \x20   lambda x: x[\"__key__\"] not in hidden.get(os.path.basename(x[\"__url__\"])[:-4], ())\n\
         )\n\
         ```\n\n\
         The manifests beside this folder (`{dataset}-<version>.manifest.json`) are\n\
         signed; `seedpool verify` checks the files against them.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(values: &[Value]) -> Ty {
        values.iter().fold(Ty::Null, |t, v| t.merge(Ty::of(v)))
    }

    #[test]
    fn a_field_null_in_some_items_keeps_its_type() {
        let t = ty(&[
            json!({"favs": null, "stats": {"jpeg_quality": null, "mean": 1.5}}),
            json!({"favs": 3, "stats": {"jpeg_quality": 90, "mean": 2}}),
        ]);
        assert_eq!(
            Value::Object(t.yaml()),
            json!({"struct": [
                {"name": "favs", "dtype": "int64"},
                {"name": "stats", "struct": [
                    {"name": "jpeg_quality", "dtype": "int64"},
                    {"name": "mean", "dtype": "float64"},
                ]},
            ]})
        );
    }

    #[test]
    fn lists_maps_and_mixed_values_get_the_types_datasets_reads() {
        let faces = ty(&[json!([]), json!([[0.1, 0.2, 0.3, 0.4]])]);
        assert_eq!(
            Value::Object(faces.yaml()),
            json!({"list": {"list": "float64"}})
        );
        assert_eq!(ty(&[json!("a"), json!(1)]), Ty::Json);
        let many: Vec<Value> = (0..=MAX_STRUCT_FIELDS)
            .map(|i| json!({ format!("tag_{i}"): 0.5 }))
            .collect();
        assert_eq!(ty(&many), Ty::Json);
        assert!(matches!(ty(&many[..3]), Ty::Struct(f) if f.len() == 3));
    }

    #[test]
    fn a_hand_written_card_is_refused_not_overwritten_and_own_keys_stay() {
        let t = tempfile::tempdir().unwrap();
        let release = Release {
            version: "1",
            shard_paths: vec!["shards/1.tar".into()],
            features: json!([]),
            hidden: BTreeMap::new(),
        };
        let yaml = "---\nlicense: cc-by-4.0\n---\n# Mine\n";
        std::fs::write(t.path().join(FILE), yaml).unwrap();
        let err = write(t.path(), "ds", &release).unwrap_err().to_string();
        assert!(
            err.contains("README.md") && err.contains("not seedpool's JSON"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(t.path().join(FILE)).unwrap(), yaml);
        assert!(!t.path().join("hidden").exists());
        std::fs::write(
            t.path().join(FILE),
            "---\n{\"license\": \"cc-by-4.0\"}\n---\n# Mine\n",
        )
        .unwrap();
        write(t.path(), "ds", &release).unwrap();
        let (front, body) = existing(t.path()).unwrap();
        assert_eq!(front["license"], "cc-by-4.0");
        assert_eq!(front["configs"][0]["config_name"], "1");
        assert_eq!(body, "# Mine\n");
    }

    #[test]
    fn the_card_keeps_earlier_releases_and_the_maintainers_text() {
        let t = tempfile::tempdir().unwrap();
        let release = |v: &'static str| Release {
            version: v,
            shard_paths: vec![format!("shards/{v}.tar")],
            features: json!([{"name": "__key__", "dtype": "string"}]),
            hidden: BTreeMap::new(),
        };
        write(t.path(), "ds", &release("1")).unwrap();
        let card = std::fs::read_to_string(t.path().join(FILE)).unwrap();
        assert!(card.contains("# ds"), "{card}");
        let edited = card.replace("# ds", "# ds\n\nOur own words.");
        std::fs::write(t.path().join(FILE), edited).unwrap();
        write(t.path(), "ds", &release("2")).unwrap();
        let card = std::fs::read_to_string(t.path().join(FILE)).unwrap();
        assert!(card.contains("Our own words."), "{card}");
        let (front, _) = split_front_matter(&card);
        let front: Value = serde_json::from_str(front.unwrap()).unwrap();
        let configs = front["configs"].as_array().unwrap();
        assert_eq!(configs.len(), 2);
        assert_eq!(configs[1]["config_name"], "2");
        assert_eq!(configs[1]["default"], true);
        assert!(configs[0].get("default").is_none());
        assert_eq!(configs[0]["data_files"][0]["path"][0], "shards/1.tar");
    }
}
