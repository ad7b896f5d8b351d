//! Writing the files of chosen items out of the pool's shards.
//!
//! Each member is read at its offset in its shard (never unpacking a whole shard),
//! checked against its blake3 from the index, and written under a temporary name then
//! renamed, so an interrupted extract leaves no half-written file.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rusqlite::params;
use serde::Serialize;

use super::{run_sql, QueryError};
use crate::name::split_member_name;
use crate::pool::Pool;
use crate::progress::{Progress, Unit};
use crate::store::{file_error, FileError};

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
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ExtractReport {
    pub items: u64,
    pub files: u64,
    pub bytes: u64,
    /// Items whose shard the pool does not hold (a selective sync skipped it).
    pub not_downloaded: u64,
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
    #[error("the pool lists a member with an unsafe name `{0}`")]
    UnsafeName(String),
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
         FROM live l JOIN datasets d ON d.id = l.dataset LEFT JOIN shards s ON s.id = l.shard
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

    std::fs::create_dir_all(&plan.out).map_err(file_error("create", &plan.out))?;
    progress.stage("extracting", chosen.len() as u64, Unit::Items);
    let results: Vec<Result<(u64, u64, bool), ExtractError>> = chosen
        .par_iter()
        .map(|item| {
            let r = extract_item(&plan.pool, item, &plan.out);
            progress.advance(1);
            r
        })
        .collect();
    let mut report = ExtractReport::default();
    for r in results {
        let (files, bytes, present) = r?;
        if present {
            report.items += 1;
            report.files += files;
            report.bytes += bytes;
        } else {
            report.not_downloaded += 1;
        }
    }
    Ok(report)
}

/// Writes one item's members; returns (files, bytes, whether its shard was present).
fn extract_item(pool: &Path, item: &Chosen, out: &Path) -> Result<(u64, u64, bool), ExtractError> {
    let shard_path = pool
        .join(&item.dataset)
        .join("shards")
        .join(format!("{}.tar", item.shard));
    if !item.present || !shard_path.is_file() {
        return Ok((0, 0, false));
    }
    let mut shard = std::fs::File::open(&shard_path).map_err(file_error("open", &shard_path))?;
    let (mut files, mut bytes) = (0, 0);
    for m in &item.members {
        let name = format!("{}.{}", item.key, m.ext);
        split_member_name(&name).map_err(|_| ExtractError::UnsafeName(name.clone()))?;
        let target = out.join(format!("{}.{}", item.file_stem, m.ext));
        shard
            .seek(SeekFrom::Start(m.offset))
            .map_err(file_error("read", &shard_path))?;
        let mut data = Vec::with_capacity(m.length as usize);
        (&mut shard)
            .take(m.length)
            .read_to_end(&mut data)
            .map_err(file_error("read", &shard_path))?;
        if data.len() as u64 != m.length || blake3::hash(&data).to_hex().as_str() != m.blake3 {
            return Err(ExtractError::Damaged {
                name,
                shard: item.shard.clone(),
            });
        }
        let tmp = out.join(format!(".{}.{}.part", item.key, m.ext));
        let mut f = std::fs::File::create(&tmp).map_err(file_error("write", &tmp))?;
        f.write_all(&data).map_err(file_error("write", &tmp))?;
        drop(f);
        std::fs::rename(&tmp, &target).map_err(file_error("write", &target))?;
        files += 1;
        bytes += m.length;
    }
    Ok((files, bytes, true))
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
