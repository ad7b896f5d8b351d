//! Tag systematization: one name for a tag across boorus, categories and franchises
//! from a Danbooru-style tag list, and the tags whose category the sources disagree on.
//!
//! Each tag a pool sees is kept as the source wrote it (`tags.name`, per category and
//! source booru) and mapped to a `canonical` name: the normalised name (lower case,
//! trimmed, spaces as `_`), or what an alias of the imported list points to. Queries
//! group by the canonical name, so `Hatsune Miku` on one booru and `hatsune_miku` on
//! another count as one character.

use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::files::{file_error, FileError};
use crate::name::normalize_tag as normalize;
use crate::pool::{Pool, PoolError};

/// Danbooru's category codes.
fn category_of(code: i64) -> Option<&'static str> {
    match code {
        0 => Some("general"),
        1 => Some("artist"),
        3 => Some("copyright"),
        4 => Some("character"),
        5 => Some("meta"),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TagsError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error("tag list `{path}` is malformed:\n{problems}")]
    Malformed { path: PathBuf, problems: String },
    #[error("pool database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("alias `{alias}` of `{name}`: {problem}")]
    BadAlias {
        alias: String,
        name: String,
        problem: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    line: u64,
    category: &'static str,
    id: i64,
    name: String,
    count: Option<i64>,
    franchise_id: Option<i64>,
    mal_id: Option<i64>,
    mal_name: Option<String>,
    mal_count: Option<i64>,
    aliases: Vec<String>,
}

/// Parses a tag list, collecting every problem with its line number.
fn parse(text: &str, path: &Path) -> Result<Vec<Entry>, TagsError> {
    let mut problems = Vec::new();
    let mut records = crate::files::delimited_records(text, b';');
    let malformed = |problems: String| TagsError::Malformed {
        path: path.to_path_buf(),
        problems,
    };
    let header = match records.next() {
        None => {
            return Err(malformed(
                "  the file is empty (expected a header line: TAG_CAT;TAG_ID;TAG_NAME;...)".into(),
            ))
        }
        Some((line, Err(e))) => return Err(malformed(format!("  line {line}: {e}"))),
        Some((_, Ok(header))) => header,
    };
    let columns: Vec<String> = header
        .iter()
        .map(|c| c.trim().to_ascii_uppercase())
        .collect();
    let col = |name: &str| columns.iter().position(|c| c == name);
    let (Some(cat_i), Some(id_i), Some(name_i)) = (col("TAG_CAT"), col("TAG_ID"), col("TAG_NAME"))
    else {
        return Err(malformed(format!(
            "  line 1: the header needs TAG_CAT, TAG_ID and TAG_NAME; found `{}`",
            header.iter().collect::<Vec<_>>().join(";")
        )));
    };
    let (cnt_i, fr_i, mal_i, maln_i, malc_i, alias_i) = (
        col("TAG_CNT"),
        col("FR_ID"),
        col("MAL_ID"),
        col("MAL_NAME"),
        col("MAL_CNT"),
        col("ALIASES"),
    );
    let mut entries = Vec::new();
    for (line_no, record) in records {
        let fields = match record {
            Ok(fields) => fields,
            Err(e) => {
                problems.push(format!("  line {line_no}: {e}"));
                continue;
            }
        };
        if fields.len() != columns.len() {
            problems.push(format!(
                "  line {line_no}: {} fields, the header has {}",
                fields.len(),
                columns.len()
            ));
            continue;
        }
        let field = |i: Option<usize>| i.map(|i| fields[i].trim()).filter(|f| !f.is_empty());
        let mut number = |i: Option<usize>, what: &str| -> Option<i64> {
            let f = field(i)?;
            match f.parse::<i64>() {
                Ok(v) => Some(v),
                Err(_) => {
                    problems.push(format!(
                        "  line {line_no}: {what} `{f}` is not a whole number"
                    ));
                    None
                }
            }
        };
        let code = number(Some(cat_i), "TAG_CAT");
        let id = number(Some(id_i), "TAG_ID");
        let count = number(cnt_i, "TAG_CNT");
        let franchise_id = number(fr_i, "FR_ID");
        let mal_id = number(mal_i, "MAL_ID");
        let mal_count = number(malc_i, "MAL_CNT");
        let category = match code.map(|c| (c, category_of(c))) {
            Some((_, Some(cat))) => Some(cat),
            Some((c, None)) => {
                problems.push(format!(
                    "  line {line_no}: TAG_CAT `{c}` is not 0, 1, 3, 4 or 5"
                ));
                None
            }
            None => {
                if field(Some(cat_i)).is_none() {
                    problems.push(format!("  line {line_no}: TAG_CAT is empty"));
                }
                None
            }
        };
        let Some(name) = field(Some(name_i)).map(normalize) else {
            problems.push(format!("  line {line_no}: TAG_NAME is empty"));
            continue;
        };
        if let (Some(category), Some(id)) = (category, id) {
            entries.push(Entry {
                line: line_no,
                category,
                id,
                name,
                count,
                franchise_id,
                mal_id,
                mal_name: field(maln_i).map(String::from),
                mal_count,
                aliases: field(alias_i)
                    .map(|a| {
                        a.split(',')
                            .map(normalize)
                            .filter(|a| !a.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        } else if id.is_none() && field(Some(id_i)).is_none() {
            problems.push(format!("  line {line_no}: TAG_ID is empty"));
        }
    }
    if !problems.is_empty() {
        let shown = problems.len().min(20);
        let mut text = problems[..shown].join("\n");
        if problems.len() > shown {
            text.push_str(&format!("\n  ... and {} more", problems.len() - shown));
        }
        return Err(TagsError::Malformed {
            path: path.to_path_buf(),
            problems: text,
        });
    }
    Ok(entries)
}

/// Each tag's category by normalised name, aliases included.
pub type Categories = std::collections::HashMap<String, &'static str>;

/// Reads a tag list and returns each tag's category by normalised name, aliases
/// included (for `ingest`, which sorts uncategorised booru tags with it).
pub fn categories(list: &Path) -> Result<Categories, TagsError> {
    let text = std::fs::read_to_string(list).map_err(file_error("read tag list", list))?;
    let mut out = std::collections::HashMap::new();
    for e in parse(&text, list)? {
        for alias in &e.aliases {
            out.insert(normalize(alias), e.category);
        }
        out.insert(normalize(&e.name), e.category);
    }
    Ok(out)
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportReport {
    pub tags: u64,
    pub franchises: u64,
    pub with_mal_id: u64,
    pub aliases: u64,
    /// Distinct canonical tags of the pool that the list describes.
    pub pool_tags_matched: u64,
}

/// Imports a tag list into a pool in one transaction: all of it or, on any problem,
/// nothing. A missing or empty folder becomes a new pool, as merge and sync make one:
/// importing the list before the first release is a natural first step.
pub fn import(pool_root: &Path, list: &Path) -> Result<ImportReport, TagsError> {
    let text = std::fs::read_to_string(list).map_err(file_error("read tag list", list))?;
    let entries = parse(&text, list)?;
    let by_id: std::collections::HashMap<i64, &str> =
        entries.iter().map(|e| (e.id, e.name.as_str())).collect();
    let (mut pool, _lock) = Pool::open_or_create_locked(pool_root)?;
    let tx = pool.connection_mut().transaction()?;
    let mut report = ImportReport::default();
    {
        let mut info = tx.prepare(
            "INSERT OR REPLACE INTO tag_info(name, category, danbooru_id, post_count, franchise, mal_id, mal_name, mal_count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut alias =
            tx.prepare("INSERT OR REPLACE INTO tag_aliases(alias, name) VALUES (?1, ?2)")?;
        let mut franchises = std::collections::BTreeSet::new();
        for e in &entries {
            let franchise = e.franchise_id.map(|f| {
                by_id
                    .get(&f)
                    .map_or_else(|| format!("franchise-{f}"), |n| n.to_string())
            });
            if let Some(f) = &franchise {
                franchises.insert(f.clone());
            }
            info.execute(params![
                e.name,
                e.category,
                e.id,
                e.count,
                franchise,
                e.mal_id,
                e.mal_name,
                e.mal_count
            ])?;
            for a in e.aliases.iter().filter(|a| **a != e.name) {
                alias.execute(params![a, e.name])?;
                report.aliases += 1;
            }
            report.with_mal_id += u64::from(e.mal_id.is_some());
            let _ = e.line;
        }
        report.tags = entries.len() as u64;
        report.franchises = franchises.len() as u64;
    }
    tx.execute(
        &format!(
            "UPDATE tags SET canonical = {}",
            crate::pool::CANONICAL_TAG_SQL.replace("$N", "tags.name")
        ),
        [],
    )?;
    // Canonical names changed: the counts the hit-parades read follow.
    crate::pool::aggregates::rebuild(&tx)?;
    report.pool_tags_matched = tx.query_row(
        "SELECT count(DISTINCT t.canonical) FROM tags t JOIN tag_info i ON i.name = t.canonical",
        [],
        |r| r.get::<_, i64>(0),
    )? as u64;
    tx.commit()?;
    Ok(report)
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct AliasReport {
    /// Aliases written, and older aliases pointed on to the new name (an alias of an
    /// alias is followed once, so the chain is shortened).
    pub written: u64,
    pub repointed: u64,
    /// Source tags whose canonical name changed.
    pub tags_renamed: u64,
}

/// Writes `(alias, name)` pairs into the pool's aliases, in one transaction with the
/// counts they change: every source tag spelled as an alias is counted as its name
/// from then on, in hit-parades and mining. Both sides are normalised as tags are.
pub fn add_aliases(pool_root: &Path, pairs: &[(String, String)]) -> Result<AliasReport, TagsError> {
    let (mut pool, _lock) = Pool::open_or_create_locked(pool_root)?;
    let tx = pool.connection_mut().transaction()?;
    let mut report = AliasReport::default();
    for (alias, name) in pairs {
        let (alias, mut name) = (normalize(alias), normalize(name));
        let bad = |name: &str, problem: &str| TagsError::BadAlias {
            alias: alias.clone(),
            name: name.to_string(),
            problem: problem.to_string(),
        };
        if alias.is_empty() || name.is_empty() {
            return Err(bad(&name, "a tag name is empty"));
        }
        let target: Option<String> = tx
            .query_row(
                "SELECT name FROM tag_aliases WHERE alias = ?1",
                [&name],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(t) = target {
            name = t;
        }
        if alias == name {
            return Err(bad(&name, "the two are one tag already"));
        }
        tx.execute(
            "INSERT OR REPLACE INTO tag_aliases(alias, name) VALUES (?1, ?2)",
            params![alias, name],
        )?;
        report.written += 1;
        report.repointed += tx.execute(
            "UPDATE tag_aliases SET name = ?2 WHERE name = ?1",
            params![alias, name],
        )? as u64;
    }
    let canonical = crate::pool::CANONICAL_TAG_SQL.replace("$N", "tags.name");
    report.tags_renamed = tx.execute(
        &format!("UPDATE tags SET canonical = {canonical} WHERE canonical IS NOT {canonical}"),
        [],
    )? as u64;
    if report.tags_renamed > 0 {
        crate::pool::aggregates::rebuild(&tx)?;
    }
    tx.commit()?;
    Ok(report)
}

/// Reads reviewed `(alias, name)` pairs from a CSV file with `alias` and `name`
/// columns (others are ignored), as `seedpool mine aliases --format csv` writes it.
pub fn read_alias_file(path: &Path) -> Result<Vec<(String, String)>, TagsError> {
    let text = std::fs::read_to_string(path).map_err(file_error("read alias list", path))?;
    let malformed = |problems: String| TagsError::Malformed {
        path: path.to_path_buf(),
        problems,
    };
    let mut records = crate::files::delimited_records(&text, b',');
    let header = match records.next() {
        None => {
            return Err(malformed(
                "  the file is empty (expected a header line: alias,name)".into(),
            ))
        }
        Some((line, Err(e))) => return Err(malformed(format!("  line {line}: {e}"))),
        Some((_, Ok(h))) => h,
    };
    let col = |want: &str| {
        header
            .iter()
            .position(|c| c.trim().eq_ignore_ascii_case(want))
    };
    let (Some(a), Some(n)) = (col("alias"), col("name")) else {
        return Err(malformed(format!(
            "  line 1: the header needs `alias` and `name` columns; found `{}`",
            header.iter().collect::<Vec<_>>().join(",")
        )));
    };
    let mut pairs = Vec::new();
    let mut problems = Vec::new();
    for (line, record) in records {
        match record {
            Ok(r) => match (r.get(a), r.get(n)) {
                (Some(x), Some(y)) if !x.trim().is_empty() && !y.trim().is_empty() => {
                    pairs.push((x.to_string(), y.to_string()))
                }
                _ => problems.push(format!("  line {line}: no alias or no name")),
            },
            Err(e) => problems.push(format!("  line {line}: {e}")),
        }
    }
    if !problems.is_empty() {
        return Err(malformed(problems.join("\n")));
    }
    Ok(pairs)
}

/// SQL listing canonical tags whose category differs between sources or from the list.
pub const CONFLICTS_SQL: &str = "
    SELECT t.canonical AS tag,
           group_concat(DISTINCT t.category || ' on ' || CASE t.source WHEN '' THEN '?' ELSE t.source END) AS seen_as,
           i.category AS tag_list_says
    FROM tags t LEFT JOIN tag_info i ON i.name = t.canonical
    GROUP BY t.canonical
    HAVING count(DISTINCT t.category) > 1 OR (i.category IS NOT NULL AND sum(t.category != i.category) > 0)
    ORDER BY t.canonical";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_lists_parse_with_optional_columns_and_quotes() {
        let text = "TAG_CAT;TAG_ID;TAG_NAME;TAG_CNT;FR_ID;MAL_ID;MAL_NAME;MAL_CNT\n\
                    3;100;Vocaloid;5000;100;;;\n\
                    4;200;hatsune_miku;4000;100;1;\"Miku; the \"\"singer\"\"\";12\n";
        let e = parse(text, Path::new("t.csv")).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].name, "vocaloid");
        assert_eq!(e[0].category, "copyright");
        assert_eq!(e[1].mal_name.as_deref(), Some("Miku; the \"singer\""));
        assert_eq!(e[1].franchise_id, Some(100));
    }

    #[test]
    fn a_quoted_field_may_hold_a_newline() {
        // Split by lines, the quoted name broke its row in two and shifted every line
        // number after it.
        let text = "\u{feff}TAG_CAT;TAG_ID;TAG_NAME;MAL_NAME\n\
                    \n\
                    4;1;miku;\"Hatsune\nMiku\"\n\
                    4;2;rin;Rin\n\
                    9;3;bad;x\n";
        let err = parse(text, Path::new("t.csv")).unwrap_err().to_string();
        assert!(err.contains("line 6: TAG_CAT `9`"), "{err}");
        let e = parse(&text.replace("9;3", "4;3"), Path::new("t.csv")).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].mal_name.as_deref(), Some("Hatsune\nMiku"));
        assert_eq!((e[1].name.as_str(), e[1].line), ("rin", 5));
    }

    #[test]
    fn malformed_lists_name_every_bad_line() {
        let text = "TAG_CAT;TAG_ID;TAG_NAME\n4;1;ok\n9;2;bad_cat\nx;3;bad_num\n4;4\n4;5;\n";
        let err = parse(text, Path::new("t.csv")).unwrap_err().to_string();
        assert!(
            err.contains("line 3: TAG_CAT `9` is not 0, 1, 3, 4 or 5"),
            "{err}"
        );
        assert!(
            err.contains("line 4: TAG_CAT `x` is not a whole number"),
            "{err}"
        );
        assert!(err.contains("line 5: 2 fields, the header has 3"), "{err}");
        assert!(err.contains("line 6: TAG_NAME is empty"), "{err}");
        let err = parse("NAME;ID\n", Path::new("t.csv"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 1: the header needs TAG_CAT, TAG_ID and TAG_NAME"),
            "{err}"
        );
    }

    #[test]
    fn normalisation_matches_the_sql() {
        assert_eq!(normalize("  Hatsune Miku "), "hatsune_miku");
    }
}
