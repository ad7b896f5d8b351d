//! A release folder: the item files a maintainer hands to `publish`.
//!
//! Items are the files named `<key>.<ext>` anywhere under the folder (WebDataset: the key
//! is the name up to its first dot). Scanning checks everything before a byte is written
//! to the store: names, duplicates, symlinks and special files, readability, and each
//! item's JSON record, so a bad release folder fails fast and leaves the store untouched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    #[error("release folder `{path}` holds more than {max} files or folders, more than one release may have")]
    TooMany { path: PathBuf, max: u64 },
    #[error("invalid item JSON `{path}`: {problem}")]
    Record { path: PathBuf, problem: String },
}

/// One file of an item as `scan` hands it out: its extension, its folder and its size.
#[derive(Clone, Copy, Debug)]
pub struct Member<'a> {
    pub ext: &'a Extension,
    pub dir: &'a Path,
    pub size: u64,
}

impl Member<'_> {
    /// The file, for the item `key` it belongs to.
    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.{}", self.ext))
    }
}

/// One file as `Items` keeps it, in 24 bytes: a publish holds one per file of the
/// release, ten million of them at BOORU-CHARS' scale, so its key is a place in the
/// scan's text and its folder and extension are numbers.
#[derive(Clone, Copy, Debug)]
struct File {
    /// The key's start in `Items::text` (above the low 8 bits) and its length (those).
    key: u64,
    size: u64,
    dir: u32,
    ext: u32,
}

impl File {
    fn new(start: usize, len: usize, size: u64, dir: u32, ext: u32) -> Self {
        debug_assert!(len <= u8::MAX as usize);
        Self {
            key: (start as u64) << 8 | len as u64,
            size,
            dir,
            ext,
        }
    }

    fn key_range(&self) -> std::ops::Range<usize> {
        let start = (self.key >> 8) as usize;
        start..start + (self.key & 0xff) as usize
    }
}

/// A scanned release folder: its items sorted by key, each with its files sorted by
/// extension and its volume. About 50 bytes an item of one file (a list of `Item`
/// structs with their own strings took 250), so ten million items stay in half a
/// gigabyte.
#[derive(Debug, Default)]
pub struct Items {
    /// Every file's key, end to end, in the order the files were found.
    text: String,
    /// Sorted by key, then extension: an item's files are consecutive.
    files: Vec<File>,
    /// Per item: its first file in `files`, and its volume in `volumes`.
    items: Vec<(u32, u32)>,
    dirs: Vec<PathBuf>,
    exts: Vec<Extension>,
    volumes: Vec<Arc<str>>,
}

/// An item of `Items`, borrowed.
#[derive(Clone, Copy)]
pub struct Item<'a> {
    of: &'a Items,
    index: usize,
}

impl<'a> Item<'a> {
    pub fn key(&self) -> &'a str {
        self.of
            .key_of(&self.of.files[self.of.items[self.index].0 as usize])
    }

    /// Its files, sorted by extension.
    pub fn members(&self) -> impl ExactSizeIterator<Item = Member<'a>> + Clone + 'a {
        let of = self.of;
        of.files[of.file_range(self.index)]
            .iter()
            .map(|f| of.member(f))
    }

    pub fn volume(&self) -> &'a str {
        &self.of.volumes[self.of.items[self.index].1 as usize]
    }

    pub fn record(&self) -> Option<Member<'a>> {
        self.members().find(|m| m.ext.as_str() == "json")
    }

    /// The path of one of this item's files.
    pub fn path_of(&self, member: &Member<'_>) -> PathBuf {
        member.path(self.key())
    }

    pub fn bytes(&self) -> u64 {
        self.members().map(|m| m.size).sum()
    }
}

impl Items {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn get(&self, index: usize) -> Item<'_> {
        assert!(index < self.items.len(), "item {index} of {}", self.len());
        Item { of: self, index }
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = Item<'_>> + '_ {
        (0..self.len()).map(|index| Item { of: self, index })
    }

    /// The item with `key`, or where it would be, as `slice::binary_search` says.
    pub fn search(&self, key: &str) -> Result<usize, usize> {
        self.items
            .binary_search_by(|&(first, _)| self.key_of(&self.files[first as usize]).cmp(key))
    }

    fn key_of(&self, file: &File) -> &str {
        &self.text[file.key_range()]
    }

    fn member(&self, file: &File) -> Member<'_> {
        Member {
            ext: &self.exts[file.ext as usize],
            dir: &self.dirs[file.dir as usize],
            size: file.size,
        }
    }

    fn file_range(&self, index: usize) -> std::ops::Range<usize> {
        let start = self.items[index].0 as usize;
        let end = self
            .items
            .get(index + 1)
            .map_or(self.files.len(), |next| next.0 as usize);
        start..end
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
    File(ItemKey, Extension, u64),
    Folder(PathBuf),
}

/// What `walk` has found so far: the files, not yet sorted, and the extensions by name.
struct Found<'a> {
    root: &'a Path,
    items: Items,
    ext_ids: HashMap<Extension, u32>,
}

impl Found<'_> {
    /// A number for one more of what `Items` counts in 32 bits.
    fn next_id(&self, n: usize) -> Result<u32, ReleaseError> {
        u32::try_from(n).map_err(|_| ReleaseError::TooMany {
            path: self.root.to_path_buf(),
            max: u32::MAX as u64,
        })
    }

    fn file(
        &mut self,
        key: &ItemKey,
        ext: Extension,
        size: u64,
        dir: u32,
    ) -> Result<(), ReleaseError> {
        self.next_id(self.items.files.len())?;
        let ext = match self.ext_ids.get(&ext) {
            Some(&id) => id,
            None => {
                let id = self.next_id(self.items.exts.len())?;
                self.items.exts.push(ext.clone());
                self.ext_ids.insert(ext, id);
                id
            }
        };
        let start = self.items.text.len();
        self.items.text.push_str(key.as_str());
        let file = File::new(start, key.as_str().len(), size, dir, ext);
        self.items.files.push(file);
        Ok(())
    }
}

/// Lists the item files under `dir` into `found`, in a stable order (names sorted,
/// folders where they sort), each split into its item key and member, with every check
/// but the records. A folder's entries are looked at on every core (a million files are
/// a million `stat` calls), then its subfolders in turn.
fn walk(dir: &Path, top: bool, found: &mut Found<'_>) -> Result<(), ReleaseError> {
    let list_err = |source| ReleaseError::List {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(list_err)?
        .collect::<Result<_, _>>()
        .map_err(list_err)?;
    entries.sort_by_key(|e| e.file_name());
    let listed: Vec<Entry> = entries
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
            Ok(Entry::File(key, ext, meta.len()))
        })
        .collect::<Result<_, _>>()?;
    drop(entries);
    let dir_id = found.next_id(found.items.dirs.len())?;
    found.items.dirs.push(dir.to_path_buf());
    for entry in listed {
        match entry {
            Entry::Skipped => {}
            Entry::File(key, ext, size) => found.file(&key, ext, size, dir_id)?,
            Entry::Folder(path) => walk(&path, false, found)?,
        }
    }
    Ok(())
}

/// The volumes records name, numbered as found: one string per volume, not per item.
struct Volumes {
    ids: HashMap<String, u32>,
    /// Volume 0 is the default.
    names: Vec<Arc<str>>,
}

impl Volumes {
    fn id(&mut self, volume: String) -> u32 {
        if let Some(&id) = self.ids.get(&volume) {
            return id;
        }
        // Fewer volumes than items, which `Found` counts in 32 bits.
        let id = self.names.len() as u32;
        self.names.push(Arc::from(volume.as_str()));
        self.ids.insert(volume, id);
        id
    }
}

/// Scans a release folder into items sorted by key, reading each item's JSON record.
pub fn scan(dir: &Path) -> Result<Items, ReleaseError> {
    let mut found = Found {
        root: dir,
        items: Items::default(),
        ext_ids: HashMap::new(),
    };
    walk(dir, true, &mut found)?;
    let mut all = found.items;
    if all.files.is_empty() {
        return Err(ReleaseError::Empty(dir.to_path_buf()));
    }
    // In place (a stable sort takes a copy of the list): a file found earlier has its
    // key earlier in the text, so ties broken by that place keep the order found, and
    // of two files for one member the first found is named first.
    {
        let Items {
            text, files, exts, ..
        } = &mut all;
        files.par_sort_unstable_by(|a, b| {
            text[a.key_range()]
                .cmp(&text[b.key_range()])
                .then_with(|| exts[a.ext as usize].cmp(&exts[b.ext as usize]))
                .then(a.key.cmp(&b.key))
        });
    }
    let path_of = |f: &File| all.member(f).path(all.key_of(f));
    if let Some(pair) = all
        .files
        .windows(2)
        .find(|w| all.key_of(&w[0]) == all.key_of(&w[1]) && w[0].ext == w[1].ext)
    {
        return Err(ReleaseError::Duplicate {
            key: all.key_of(&pair[0]).to_string(),
            ext: all.exts[pair[0].ext as usize].to_string(),
            first: path_of(&pair[0]),
            second: path_of(&pair[1]),
        });
    }
    let mut items = Vec::new();
    for (i, f) in all.files.iter().enumerate() {
        if i == 0 || all.key_of(f) != all.key_of(&all.files[i - 1]) {
            items.push((i as u32, 0));
        }
    }
    all.items = items;
    let named = Mutex::new(Volumes {
        ids: HashMap::new(),
        names: vec![Arc::from(DEFAULT_VOLUME)],
    });
    let volumes: Vec<u32> = (0..all.len())
        .into_par_iter()
        .map(|i| {
            let item = all.get(i);
            for m in item.members() {
                let path = item.path_of(&m);
                std::fs::File::open(&path)
                    .map_err(|source| ReleaseError::Unreadable { path, source })?;
            }
            if item.members().len() as u64 > crate::index::MAX_MEMBERS_PER_ITEM {
                return Err(ReleaseError::Record {
                    path: item.path_of(&item.members().next().expect("an item has a file")),
                    problem: format!(
                        "item `{}` has {} files, more than the {} an item may have",
                        item.key(),
                        item.members().len(),
                        crate::index::MAX_MEMBERS_PER_ITEM
                    ),
                });
            }
            let Some(record) = item.record() else {
                return Ok(0);
            };
            let path = item.path_of(&record);
            let value = read_record(&path, record.size)?;
            check_tags(&value, &path)?;
            let Some(v) = volume_of(&value, &path)? else {
                return Ok(0);
            };
            Ok(named.lock().unwrap_or_else(|e| e.into_inner()).id(v))
        })
        .collect::<Result<_, _>>()?;
    for (item, volume) in all.items.iter_mut().zip(volumes) {
        item.1 = volume;
    }
    all.volumes = named.into_inner().unwrap_or_else(|e| e.into_inner()).names;
    Ok(all)
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
    fn of_two_files_for_one_member_the_first_found_is_named_first() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["a", "b"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            // Enough other files that the sort has ties to break among many.
            for i in 0..200 {
                std::fs::write(dir.path().join(format!("{sub}/{sub}{i}.jpg")), b"x").unwrap();
            }
            std::fs::write(dir.path().join(format!("{sub}/k.jpg")), b"x").unwrap();
        }
        match scan(dir.path()) {
            Err(ReleaseError::Duplicate {
                key, first, second, ..
            }) => {
                assert_eq!(key, "k");
                assert_eq!(first, dir.path().join("a/k.jpg"));
                assert_eq!(second, dir.path().join("b/k.jpg"));
            }
            other => panic!("expected a duplicate, got {:?}", other.map(|i| i.len())),
        }
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
        assert_eq!(items.get(0).key(), "k0");
        assert_eq!(items.get(0).volume(), DEFAULT_VOLUME);
        assert_eq!(items.get(1).volume(), "3x4-2020");
        let exts: Vec<_> = items.get(1).members().map(|m| m.ext.as_str()).collect();
        assert_eq!(exts, ["jpg", "json"]);
        let paths: Vec<_> = items
            .get(1)
            .members()
            .map(|m| items.get(1).path_of(&m))
            .collect();
        assert_eq!(
            paths,
            [dir.path().join("k1.jpg"), dir.path().join("sub/k1.json")]
        );
        assert_eq!(items.search("k1"), Ok(1));
        assert_eq!(items.search("k05"), Err(1));
    }
}
