//! A release folder: the item files a maintainer hands to `publish`.
//!
//! Items are the files named `<key>.<ext>` anywhere under the folder (WebDataset: the key
//! is the name up to its first dot). Scanning checks everything before a byte is written
//! to the store: names, duplicates, symlinks and special files, readability, and each
//! item's JSON record, so a bad release folder fails fast and leaves the store untouched.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde_json::Value;

use crate::name::{split_member_name, Extension, ItemKey, NameError};

/// Names at the top of a release folder that belong to the tools, not to items.
pub const RESERVED_NAMES: &[&str] = &["ingest-report.tsv", ".seedpool"];
/// Volume of items whose record names none.
pub const DEFAULT_VOLUME: &str = "default";
/// Item records are small; a larger `.json` is refused rather than loaded.
pub const MAX_RECORD_BYTES: u64 = crate::index::MAX_RECORD_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("release folder `{0}` holds no item files")]
    Empty(PathBuf),
    #[error("failed to list `{path}`")]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{0}` is a symbolic link; release folders may hold only regular files (copy the target instead)")]
    Symlink(PathBuf),
    #[error("`{path}` is a {kind}, not a regular file")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("file name `{0}` is not valid UTF-8")]
    NotUtf8(PathBuf),
    #[error("file `{path}` gives no item key")]
    BadName {
        path: PathBuf,
        #[source]
        source: NameError,
    },
    #[error("two files for item `{key}` extension `{ext}`: `{first}` and `{second}`")]
    Duplicate {
        key: String,
        ext: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("cannot read `{path}`")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid item JSON `{path}`: {problem}")]
    Record { path: PathBuf, problem: String },
}

/// One file of an item. Its path is its folder (shared by the folder's files) and
/// `<key>.<ext>`: a publish holds one of these per file of the release, so each byte
/// here is megabytes at ten million items.
#[derive(Clone, Debug)]
pub struct Member {
    pub ext: Extension,
    pub dir: Arc<Path>,
    pub size: u64,
}

impl Member {
    /// The file, for the item `key` it belongs to.
    pub fn path(&self, key: &ItemKey) -> PathBuf {
        self.dir.join(format!("{key}.{}", self.ext))
    }
}

#[derive(Clone, Debug)]
pub struct Item {
    pub key: ItemKey,
    /// Sorted by extension.
    pub members: Vec<Member>,
    /// Shared by the items of a volume.
    pub volume: Arc<str>,
}

impl Item {
    pub fn record(&self) -> Option<&Member> {
        self.members.iter().find(|m| m.ext.as_str() == "json")
    }

    /// The path of one of this item's files.
    pub fn path_of(&self, member: &Member) -> PathBuf {
        member.path(&self.key)
    }

    pub fn bytes(&self) -> u64 {
        self.members.iter().map(|m| m.size).sum()
    }
}

fn kind_of(ft: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "named pipe";
        }
        if ft.is_socket() {
            return "socket";
        }
        if ft.is_block_device() {
            return "block device";
        }
        if ft.is_char_device() {
            return "character device";
        }
    }
    let _ = ft;
    "special file"
}

/// What `walk` found in one folder entry.
enum Entry {
    Skipped,
    File(ItemKey, Member),
    Folder(PathBuf),
}

/// Lists the item files under `dir` into `out`, in a stable order (names sorted, folders
/// where they sort), each split into its item key and member, with every check but the
/// records. A folder's entries are looked at on every core (a million files are a
/// million `stat` calls), then its subfolders in turn.
fn walk(dir: &Path, top: bool, out: &mut Vec<(ItemKey, Member)>) -> Result<(), ReleaseError> {
    let list_err = |source| ReleaseError::List {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(list_err)?
        .collect::<Result<_, _>>()
        .map_err(list_err)?;
    entries.sort_by_key(|e| e.file_name());
    let shared: Arc<Path> = Arc::from(dir);
    let found: Vec<Entry> = entries
        .par_iter()
        .map(|entry| {
            let path = entry.path();
            let file_name = entry.file_name();
            if top && RESERVED_NAMES.iter().any(|r| file_name == *r) {
                return Ok(Entry::Skipped);
            }
            let meta =
                std::fs::symlink_metadata(&path).map_err(|source| ReleaseError::Unreadable {
                    path: path.clone(),
                    source,
                })?;
            let ft = meta.file_type();
            if ft.is_symlink() {
                return Err(ReleaseError::Symlink(path));
            }
            if ft.is_dir() {
                return Ok(Entry::Folder(path));
            }
            if !ft.is_file() {
                return Err(ReleaseError::NotRegular {
                    path,
                    kind: kind_of(&ft),
                });
            }
            let name = file_name
                .to_str()
                .ok_or_else(|| ReleaseError::NotUtf8(path.clone()))?;
            let (key, ext) =
                split_member_name(name).map_err(|source| ReleaseError::BadName { path, source })?;
            let member = Member {
                ext,
                dir: shared.clone(),
                size: meta.len(),
            };
            Ok(Entry::File(key, member))
        })
        .collect::<Result<_, _>>()?;
    drop(entries);
    for entry in found {
        match entry {
            Entry::Skipped => {}
            Entry::File(key, member) => out.push((key, member)),
            Entry::Folder(path) => walk(&path, false, out)?,
        }
    }
    Ok(())
}

/// Scans a release folder into items sorted by key, reading each item's JSON record.
pub fn scan(dir: &Path) -> Result<Vec<Item>, ReleaseError> {
    let mut named = Vec::new();
    walk(dir, true, &mut named)?;
    if named.is_empty() {
        return Err(ReleaseError::Empty(dir.to_path_buf()));
    }
    // Stable, so of two files for one member the first found is named first. A sorted
    // list grouped in place, not a map of maps: a map per item took a node of eleven
    // members for each, 0.9 KB an item.
    named.par_sort_by(|(ka, a), (kb, b)| ka.cmp(kb).then_with(|| a.ext.cmp(&b.ext)));
    if let Some(pair) = named
        .windows(2)
        .find(|w| w[0].0 == w[1].0 && w[0].1.ext == w[1].1.ext)
    {
        let key = &pair[0].0;
        return Err(ReleaseError::Duplicate {
            key: key.to_string(),
            ext: pair[0].1.ext.to_string(),
            first: pair[0].1.path(key),
            second: pair[1].1.path(key),
        });
    }
    let mut grouped: Vec<(ItemKey, Vec<Member>)> = Vec::new();
    for (key, member) in named {
        match grouped.last_mut() {
            Some((last, members)) if *last == key => members.push(member),
            _ => grouped.push((key, vec![member])),
        }
    }
    // One string per volume, not per item.
    let volumes: std::sync::Mutex<std::collections::HashMap<String, Arc<str>>> = Default::default();
    let default: Arc<str> = Arc::from(DEFAULT_VOLUME);
    grouped
        .into_par_iter()
        .map(|(key, members)| {
            let mut item = Item {
                key,
                members,
                volume: default.clone(),
            };
            for m in &item.members {
                let path = item.path_of(m);
                std::fs::File::open(&path)
                    .map_err(|source| ReleaseError::Unreadable { path, source })?;
            }
            if item.members.len() as u64 > crate::index::MAX_MEMBERS_PER_ITEM {
                return Err(ReleaseError::Record {
                    path: item.path_of(&item.members[0]),
                    problem: format!(
                        "item `{}` has {} files, more than the {} an item may have",
                        item.key,
                        item.members.len(),
                        crate::index::MAX_MEMBERS_PER_ITEM
                    ),
                });
            }
            if let Some(record) = item.record() {
                let path = item.path_of(record);
                let value = read_record(&path, record.size)?;
                check_tags(&value, &path)?;
                if let Some(v) = volume_of(&value, &path)? {
                    let mut volumes = volumes.lock().unwrap_or_else(|e| e.into_inner());
                    item.volume = volumes
                        .entry(v)
                        .or_insert_with_key(|v| Arc::from(v.as_str()))
                        .clone();
                }
            }
            Ok(item)
        })
        .collect()
}

/// Reads and parses an item's JSON record, which must be an object.
pub fn read_record(path: &Path, size: u64) -> Result<Value, ReleaseError> {
    if size > MAX_RECORD_BYTES {
        return Err(ReleaseError::Record {
            path: path.to_path_buf(),
            problem: format!("{size} bytes is more than the {MAX_RECORD_BYTES} a record may have"),
        });
    }
    let bytes = std::fs::read(path).map_err(|source| ReleaseError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    parse_record(&bytes, path)
}

pub fn parse_record(bytes: &[u8], path: &Path) -> Result<Value, ReleaseError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| ReleaseError::Record {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })?;
    if !value.is_object() {
        return Err(ReleaseError::Record {
            path: path.to_path_buf(),
            problem: "the record must be a JSON object".into(),
        });
    }
    Ok(value)
}

/// The tags of a record must be within what a pool accepts of an item (see `index`),
/// so that every release publish writes can be merged.
fn check_tags(record: &Value, path: &Path) -> Result<(), ReleaseError> {
    let tags = tags_of(record);
    let problem = if tags.len() as u64 > crate::index::MAX_TAGS_PER_ITEM {
        Some(format!(
            "{} tags, more than the {} an item may have",
            tags.len(),
            crate::index::MAX_TAGS_PER_ITEM
        ))
    } else {
        tags.iter()
            .flat_map(|(c, t)| [c, t])
            .find(|t| t.len() > crate::index::MAX_TAG_BYTES || t.chars().any(char::is_control))
            .map(|t| {
                format!(
                    "tag `{}` is longer than {} bytes or holds control characters",
                    crate::name::shown(&t.chars().take(60).collect::<String>()),
                    crate::index::MAX_TAG_BYTES
                )
            })
    };
    match problem {
        Some(problem) => Err(ReleaseError::Record {
            path: path.to_path_buf(),
            problem,
        }),
        None => Ok(()),
    }
}

fn volume_of(record: &Value, path: &Path) -> Result<Option<String>, ReleaseError> {
    match record.get("volume") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(v)) => crate::name::Version::parse(v)
            .map(|_| Some(v.clone()))
            .map_err(|e| ReleaseError::Record {
                path: path.to_path_buf(),
                problem: format!("`volume`: {}", e.to_string().replace("version", "volume")),
            }),
        Some(other) => Err(ReleaseError::Record {
            path: path.to_path_buf(),
            problem: format!("`volume` must be a string, found `{other}`"),
        }),
    }
}

/// Tags of a record as (category, tag) pairs: `tags` may be an object of categories
/// (each a list or a space-separated string), a list, or a space-separated string; the
/// last two count as `general`.
pub fn tags_of(record: &Value) -> Vec<(String, String)> {
    fn names(v: &Value) -> Vec<String> {
        match v {
            Value::String(s) => s.split_whitespace().map(String::from).collect(),
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        }
    }
    let mut out: Vec<(String, String)> = match record.get("tags") {
        Some(Value::Object(cats)) => cats
            .iter()
            .flat_map(|(cat, v)| names(v).into_iter().map(move |t| (cat.clone(), t)))
            .collect(),
        Some(v) => names(v)
            .into_iter()
            .map(|t| ("general".into(), t))
            .collect(),
        None => Vec::new(),
    };
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_come_in_three_shapes() {
        let v: Value =
            serde_json::json!({"tags": {"character": ["hatsune_miku"], "general": "1girl  solo"}});
        assert_eq!(
            tags_of(&v),
            vec![
                ("character".into(), "hatsune_miku".into()),
                ("general".into(), "1girl".into()),
                ("general".into(), "solo".into())
            ]
        );
        assert_eq!(
            tags_of(&serde_json::json!({"tags": ["a", "a"]})),
            vec![("general".into(), "a".into())]
        );
        assert!(tags_of(&serde_json::json!({})).is_empty());
    }

    #[test]
    fn members_group_by_key_in_subfolders() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("k1.jpg"), b"x").unwrap();
        std::fs::write(dir.path().join("sub/k1.json"), br#"{"volume":"3x4-2020"}"#).unwrap();
        std::fs::write(dir.path().join("k0.thumb.jpg"), b"yy").unwrap();
        std::fs::write(dir.path().join("ingest-report.tsv"), b"ignored").unwrap();
        let items = scan(dir.path()).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].key.as_str(), "k0");
        assert_eq!(&*items[0].volume, DEFAULT_VOLUME);
        assert_eq!(&*items[1].volume, "3x4-2020");
        let exts: Vec<_> = items[1].members.iter().map(|m| m.ext.as_str()).collect();
        assert_eq!(exts, ["jpg", "json"]);
    }
}
