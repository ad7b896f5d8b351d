//! Writing the files of chosen items out of the pool's shards.
//!
//! Each member is read at its offset in its shard (never unpacking a whole shard),
//! streamed through a fixed buffer into a private folder inside the output folder,
//! checked against its blake3, and moved into place only if no file has that name:
//! an interrupted extract leaves no half-written file, a link planted in the output
//! folder is never followed, and nothing there is overwritten (unless asked, and then
//! by replacing the name, not writing through it). Two items that would get the same
//! file name get distinct ones, decided by key order, and the report lists them.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rusqlite::params;
use serde::Serialize;

use super::{run_sql, QueryError};
use crate::files::{file_error, FileError};
use crate::name::split_member_name;
use crate::pool::Pool;
use crate::progress::{Progress, Unit};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Names {
    /// `<key>.<ext>`, as in the shards.
    Key,
    /// `<booru> - <id> - <copyright> ~ <characters> (<artist>).<ext>`, the BOORU-CHARS
    /// convention for originals.
    Booru,
}

#[derive(Clone, Debug)]
pub struct ExtractPlan {
    pub pool: PathBuf,
    /// An SQL condition over the `live` view (alias `l`).
    pub condition: String,
    pub out: PathBuf,
    pub names: Names,
    /// Only these member extensions (all when empty).
    pub exts: Vec<String>,
    /// Replace files in `out` that hold other bytes (never following a link there).
    pub overwrite: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ExtractReport {
    pub items: u64,
    /// Files written by this run.
    pub files: u64,
    pub bytes: u64,
    /// Items whose shard the pool does not hold (a selective sync skipped it).
    pub not_downloaded: u64,
    /// Files that were there already with the same bytes (an earlier extract).
    pub unchanged: u64,
    /// Items whose file name another item took first, as (key, the name they got).
    pub renamed: Vec<(String, String)>,
    /// Files that were there with other bytes, left as they were (see `--overwrite`).
    pub conflicts: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error("member `{name}` in shard `{shard}` does not match its blake3 in the index: the shard is damaged; run `seedpool verify`")]
    Damaged { name: String, shard: String },
    #[error("shard `{0}` is gone from the pool although the pool database lists it; run `seedpool verify` on the release and merge it again")]
    MissingShard(PathBuf),
    #[error("the pool lists a member with an unsafe name `{}`", crate::name::shown(.0))]
    UnsafeName(String),
    #[error("{failed} items could not be extracted; {files} files ({bytes} bytes) were written into `{out}`, and nothing half-written is left there")]
    Incomplete {
        failed: u64,
        files: u64,
        bytes: u64,
        out: PathBuf,
        #[source]
        source: Box<ExtractError>,
    },
    #[error("{} files already exist in `{out}` with other bytes and were left as they were ({files} other files were written): {}{}; pass --overwrite to replace them", .names.len(), .names.iter().take(5).map(|n| format!("`{}`", crate::name::shown(n))).collect::<Vec<_>>().join(", "), if .names.len() > 5 { ", ..." } else { "" })]
    Conflicts {
        files: u64,
        out: PathBuf,
        names: Vec<String>,
    },
}

struct Member {
    ext: String,
    offset: u64,
    length: u64,
    blake3: String,
}

struct Chosen {
    key: String,
    dataset: String,
    shard: String,
    present: bool,
    file_stem: String,
    members: Vec<Member>,
}

/// Characters that no file name may hold on common systems become `_`.
pub fn safe_file_name(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_control() || "/\\:*?\"<>|".contains(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').to_string();
    // Leave room for the extension within the usual 255-byte limit.
    let mut end = trimmed.len().min(200);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    trimmed[..end].trim_end().to_string()
}

/// `<booru> - <id> - <copyright> ~ <characters> (<artist>)`.
fn booru_name(
    booru: &str,
    post_id: &str,
    copyrights: &str,
    characters: &str,
    artists: &str,
) -> String {
    let mut name = format!("{booru} - {post_id}");
    if !copyrights.is_empty() || !characters.is_empty() {
        name.push_str(" -");
        if !copyrights.is_empty() {
            name.push_str(&format!(" {copyrights}"));
        }
        if !characters.is_empty() {
            name.push_str(&format!(" ~ {characters}"));
        }
    }
    if !artists.is_empty() {
        name.push_str(&format!(" ({artists})"));
    }
    safe_file_name(&name)
}

pub fn run(plan: &ExtractPlan, progress: &dyn Progress) -> Result<ExtractReport, ExtractError> {
    let pool = Pool::open_read_only(&plan.pool).map_err(QueryError::from)?;
    let tags = |cat: &str| {
        format!(
            "(SELECT group_concat(name, ' ') FROM (SELECT DISTINCT t.canonical AS name FROM item_tags it JOIN tags t ON t.id = it.tag
               WHERE it.item = l.id AND t.category = '{cat}' ORDER BY t.name))"
        )
    };
    let sql = format!(
        "SELECT l.id, l.key, d.name, l.shard, s.present, coalesce(l.booru, ''), coalesce(CAST(l.post_id AS TEXT), l.key),
                coalesce({}, ''), coalesce({}, ''), coalesce({}, '')
         FROM live l JOIN datasets d ON d.id = l.dataset LEFT JOIN shards s ON s.dataset = l.dataset AND s.id = l.shard
         WHERE ({})
         ORDER BY l.key",
        tags("copyright"),
        tags("character"),
        tags("artist"),
        plan.condition
    );
    let table = run_sql(&pool, &sql, &[])?;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut chosen = Vec::with_capacity(table.rows.len());
    let mut members = pool
        .connection()
        .prepare(
            "SELECT ext, offset, length, blake3 FROM members WHERE shard = ?1 AND item = ?2 ORDER BY ext",
        )
        .map_err(|e| QueryError::Sql(e.to_string()))?;
    for row in &table.rows {
        let key = text(&row[1]);
        let file_stem = match plan.names {
            Names::Key => key.clone(),
            Names::Booru => booru_name(
                &text(&row[5]),
                &text(&row[6]),
                &text(&row[7]),
                &text(&row[8]),
                &text(&row[9]),
            ),
        };
        let list = members
            .query_map(params![text(&row[3]), row[0].as_i64().unwrap_or(-1)], |r| {
                Ok(Member {
                    ext: r.get(0)?,
                    offset: r.get::<_, i64>(1)? as u64,
                    length: r.get::<_, i64>(2)? as u64,
                    blake3: r.get(3)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| QueryError::Sql(e.to_string()))?;
        chosen.push(Chosen {
            key,
            dataset: text(&row[2]),
            shard: text(&row[3]),
            present: row[4].as_i64() == Some(1),
            file_stem,
            members: list
                .into_iter()
                .filter(|m| plan.exts.is_empty() || plan.exts.contains(&m.ext))
                .collect(),
        });
    }
    drop(members);

    let names = assign_names(&mut chosen);
    std::fs::create_dir_all(&plan.out).map_err(file_error("create", &plan.out))?;
    let work = WorkDir::create(&plan.out)?;
    progress.stage("extracting", chosen.len() as u64, Unit::Items);
    let results: Vec<Result<ItemOutcome, ExtractError>> = chosen
        .par_iter()
        .map(|item| {
            let r = extract_item(&plan.pool, item, &plan.out, work.path(), plan.overwrite);
            progress.advance(1);
            r
        })
        .collect();
    drop(work);
    let mut report = ExtractReport {
        renamed: names,
        ..ExtractReport::default()
    };
    let mut first_error = None;
    let mut failed = 0u64;
    for r in results {
        match r {
            Ok(o) if !o.present => report.not_downloaded += 1,
            Ok(o) => {
                report.items += 1;
                report.files += o.files;
                report.bytes += o.bytes;
                report.unchanged += o.unchanged;
                report.conflicts.extend(o.conflicts);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    report.conflicts.sort();
    if let Some(error) = first_error {
        return Err(ExtractError::Incomplete {
            failed,
            files: report.files,
            bytes: report.bytes,
            out: plan.out.clone(),
            source: Box::new(error),
        });
    }
    if !report.conflicts.is_empty() {
        return Err(ExtractError::Conflicts {
            files: report.files,
            out: plan.out.clone(),
            names: report.conflicts.clone(),
        });
    }
    Ok(report)
}

/// Gives every item a file stem of its own: when two items would write the same file
/// (`--names booru` makes the same name for two posts of one booru id and tags, or a
/// name that cleaning made equal), the later one in key order gets `<stem> [<key>]`.
/// Returns the renamed items as (key, stem).
fn assign_names(chosen: &mut [Chosen]) -> Vec<(String, String)> {
    let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut renamed = Vec::new();
    for item in chosen.iter_mut() {
        let files = |stem: &str| -> Vec<String> {
            item.members
                .iter()
                .map(|m| format!("{stem}.{}", m.ext))
                .collect()
        };
        if files(&item.file_stem).iter().any(|f| taken.contains(f)) {
            let stem = format!("{} [{}]", item.file_stem, item.key);
            renamed.push((item.key.clone(), stem.clone()));
            item.file_stem = stem;
        }
        taken.extend(files(&item.file_stem));
    }
    renamed
}

/// A private folder inside the output folder where files are written before they are
/// moved into place: nobody else can have planted a link there, and an interrupted
/// extract leaves nothing half-written among the results.
struct WorkDir(std::path::PathBuf);

impl WorkDir {
    const PREFIX: &'static str = ".seedpool-extract-";

    fn create(out: &Path) -> Result<Self, ExtractError> {
        // Folders of extracts that were killed.
        if let Ok(entries) = std::fs::read_dir(out) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name
                    .strip_prefix(Self::PREFIX)
                    .and_then(|rest| rest.split('-').next())
                    .and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists())
                    && e.file_type().is_ok_and(|t| t.is_dir())
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let mut nonce = [0u8; 8];
        let _ = getrandom::getrandom(&mut nonce);
        let path = out.join(format!(
            "{}{}-{}",
            Self::PREFIX,
            std::process::id(),
            hex::encode(nonce)
        ));
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(file_error("create", &path))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What extracting one item did.
#[derive(Default)]
struct ItemOutcome {
    present: bool,
    files: u64,
    bytes: u64,
    /// Files already there with the same bytes.
    unchanged: u64,
    /// Files already there with other bytes, left as they were.
    conflicts: Vec<String>,
}

/// Copies `length` bytes from `shard` into `out`, hashing them, through a fixed buffer
/// (a member's length comes from the database, never an allocation's size).
fn copy_hashed(
    shard: &mut std::fs::File,
    length: u64,
    out: &mut impl Write,
) -> std::io::Result<(u64, blake3::Hash)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = length;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = shard.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok((length - left, hasher.finalize()))
}

/// Whether the file at `path` is a regular file (not a link) holding exactly the bytes
/// with this blake3.
fn same_file(path: &Path, length: u64, blake3_hex: &str) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == length)
        && crate::files::hash_file(path).is_ok_and(|h| h.to_hex().as_str() == blake3_hex)
}

/// Moves `from` to `to` unless `to` exists (any kind of file, a link included):
/// `renameat2(RENAME_NOREPLACE)`, or a hard link and an unlink where the file system
/// lacks it. Returns false when `to` exists.
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c =
        |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths, resolved against the working directory.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EEXIST) => Ok(false),
        Some(libc::EINVAL) | Some(libc::ENOSYS) => match std::fs::hard_link(from, to) {
            Ok(()) => {
                std::fs::remove_file(from)?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        },
        _ => Err(e),
    }
}

/// Writes one item's members (see the module doc).
fn extract_item(
    pool: &Path,
    item: &Chosen,
    out: &Path,
    work: &Path,
    overwrite: bool,
) -> Result<ItemOutcome, ExtractError> {
    let shard_path = pool
        .join(&item.dataset)
        .join("shards")
        .join(format!("{}.tar", item.shard));
    if !item.present || !shard_path.is_file() {
        return Ok(ItemOutcome::default());
    }
    let mut shard = std::fs::File::open(&shard_path).map_err(file_error("open", &shard_path))?;
    let shard_len = shard
        .metadata()
        .map_err(file_error("read", &shard_path))?
        .len();
    let mut outcome = ItemOutcome {
        present: true,
        ..ItemOutcome::default()
    };
    for m in &item.members {
        let name = format!("{}.{}", item.key, m.ext);
        split_member_name(&name).map_err(|_| ExtractError::UnsafeName(name.clone()))?;
        let damaged = || ExtractError::Damaged {
            name: name.clone(),
            shard: item.shard.clone(),
        };
        if m.offset
            .checked_add(m.length)
            .is_none_or(|end| end > shard_len)
        {
            return Err(damaged());
        }
        let file_name = format!("{}.{}", item.file_stem, m.ext);
        let target = out.join(&file_name);
        if same_file(&target, m.length, &m.blake3) {
            outcome.unchanged += 1;
            continue;
        }
        shard
            .seek(SeekFrom::Start(m.offset))
            .map_err(file_error("read", &shard_path))?;
        let tmp = crate::files::TempFile(work.join(format!("{}.{}", item.key, m.ext)));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp.0)
            .map_err(file_error("write", &tmp.0))?;
        let (copied, hash) = copy_hashed(&mut shard, m.length, &mut f).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                damaged()
            } else {
                ExtractError::File(file_error("write", &tmp.0)(e))
            }
        })?;
        if copied != m.length || hash.to_hex().as_str() != m.blake3 {
            return Err(damaged());
        }
        drop(f);
        let placed = if overwrite {
            match std::fs::symlink_metadata(&target) {
                Ok(md) if md.is_dir() => false,
                _ => {
                    std::fs::rename(&tmp.0, &target).map_err(file_error("write", &target))?;
                    true
                }
            }
        } else {
            rename_no_replace(&tmp.0, &target).map_err(file_error("write", &target))?
        };
        if !placed {
            outcome.conflicts.push(file_name);
            continue;
        }
        outcome.files += 1;
        outcome.bytes += m.length;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booru_names_follow_the_convention_and_are_safe() {
        assert_eq!(
            booru_name(
                "danbooru",
                "4213377",
                "vocaloid",
                "hatsune_miku kagamine_rin",
                "kantoku"
            ),
            "danbooru - 4213377 - vocaloid ~ hatsune_miku kagamine_rin (kantoku)"
        );
        assert_eq!(
            booru_name("yande.re", "1", "a/b", "", ""),
            "yande.re - 1 - a_b"
        );
        assert_eq!(safe_file_name("../x: y?"), "_x_ y_");
        assert!(safe_file_name(&"é".repeat(300)).len() <= 200);
    }
}
