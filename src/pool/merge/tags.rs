//! Tag links of the items a merge brings: tags created with their canonical names,
//! links added and dropped by difference, and what each brings to the counts.

use std::path::Path;

use rusqlite::{params, Connection};

use super::MergeError;
use crate::index::{self, IndexError};
use crate::pool::aggregates;

/// Links the added, changed and restored items to their tags: tags the pool lacks are
/// created (with their canonical names), new items get every link, and changed or
/// restored items only the links they gained and lose only those they dropped (a record
/// whose score changed keeps its twelve links untouched).
///
/// The items come in key order; their tags are read from the release index by key, or,
/// when most of the index's items need links (a first merge), in one sequential pass
/// over the whole tag table walked beside the items, which spares a million seeks.
///
/// `old_links` holds the links of some changed items as the counts read them; the
/// others' are read here. Each item is shown to `linked` with its counted state and
/// its pool tag ids as they are now, and nothing of it is kept: ten million items'
/// links would be a gigabyte.
pub(super) fn link_tags(
    tx: &Connection,
    wanted: u64,
    index_items: u64,
    old_links: &aggregates::IdMap<i64, Vec<i64>>,
    index_path: &Path,
    mut linked: impl FnMut(i64, aggregates::Counted, &[i64]) -> Result<(), MergeError>,
) -> Result<(), MergeError> {
    let mut ids: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    let mut key = String::new();
    {
        let mut st = tx.prepare("SELECT id, name, category, source FROM tags")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            tag_key(
                &mut key,
                r.get_ref(1)?.as_str()?,
                r.get_ref(2)?.as_str()?,
                r.get_ref(3)?.as_str()?,
            );
            ids.insert(key.clone(), r.get(0)?);
        }
    }
    let mut new_tag = tx.prepare(&format!(
        "INSERT INTO tags(name, category, source, canonical) VALUES (?1, ?2, ?3, {}) RETURNING id",
        crate::pool::CANONICAL_TAG_SQL.replace("$N", "?1")
    ))?;
    let mut new_links =
        crate::pool::RowBatch::new(tx, "INSERT OR IGNORE INTO item_tags(item, tag)", 2, "")?;
    let mut unlink = tx.prepare("DELETE FROM item_tags WHERE item = ?1 AND tag = ?2")?;
    let mut links_of = tx.prepare("SELECT tag FROM item_tags WHERE item = ?1")?;
    let mut items = tx.prepare(&format!(
        "SELECT n.key, n.item, n.fate = 'added', coalesce(i.booru, ''), {}
         FROM incoming n JOIN items i ON i.id = n.item
         WHERE n.fate IN ('added', 'changed', 'restored') ORDER BY n.key",
        aggregates::COUNTED_COLUMNS
    ))?;
    let sweep = wanted * 4 > index_items;
    let mut all_tags = tx.prepare("SELECT key, category, tag FROM idx.tags ORDER BY key")?;
    let mut tags_of = tx.prepare("SELECT category, tag FROM idx.tags WHERE key = ?1")?;
    // With `sweep`, the items are walked beside this one pass over every tag row.
    let mut swept = if sweep {
        Some(all_tags.query([])?)
    } else {
        None
    };
    // The swept row read ahead (key, category, tag): it belongs to a later item.
    let mut pending: Option<(String, String, String)> = None;
    let mut new: Vec<i64> = Vec::new();
    let mut old: Vec<i64> = Vec::new();
    let bad_tag = |key: &str, problem: String| -> MergeError {
        IndexError::BadItem {
            path: index_path.to_path_buf(),
            key: key.to_string(),
            problem,
        }
        .into()
    };
    // The index's tags may hold any type SQLite allows; only text is a tag.
    fn text<'a>(
        v: rusqlite::types::ValueRef<'a>,
        what: &str,
        bad: impl Fn(String) -> MergeError,
    ) -> Result<&'a str, MergeError> {
        index::check_tag_text(v, what).map_err(bad)
    }
    let mut rows = items.query([])?;
    while let Some(r) = rows.next()? {
        let item_key = r.get_ref(0)?.as_str()?;
        let id: i64 = r.get(1)?;
        let added: bool = r.get(2)?;
        let source = r.get_ref(3)?.as_str()?;
        let counted = aggregates::Counted::read(r, 4)?;
        new.clear();
        let mut take = |category: &str, tag: &str| -> Result<(), MergeError> {
            if new.len() as u64 >= index::MAX_TAGS_PER_ITEM {
                return Err(bad_tag(
                    item_key,
                    format!("has more than {} tags", index::MAX_TAGS_PER_ITEM),
                ));
            }
            tag_key(&mut key, tag, category, source);
            let tag_id = match ids.get(key.as_str()) {
                Some(&t) => t,
                None => {
                    let t: i64 = new_tag.query_row(params![tag, category, source], |r| r.get(0))?;
                    ids.insert(key.clone(), t);
                    t
                }
            };
            new.push(tag_id);
            Ok(())
        };
        match swept.as_mut() {
            Some(sweep) => {
                use std::cmp::Ordering;
                if let Some((k, category, tag)) = &pending {
                    match k.as_str().cmp(item_key) {
                        Ordering::Greater => {}
                        order => {
                            if order == Ordering::Equal {
                                take(category, tag)?;
                            }
                            pending = None;
                        }
                    }
                }
                while pending.is_none() {
                    let Some(t) = sweep.next()? else { break };
                    let (k, category, tag) = (
                        text(t.get_ref(0)?, "key", |p| bad_tag(item_key, p))?,
                        text(t.get_ref(1)?, "category", |p| bad_tag(item_key, p))?,
                        text(t.get_ref(2)?, "tag", |p| bad_tag(item_key, p))?,
                    );
                    match k.cmp(item_key) {
                        Ordering::Less => {}
                        Ordering::Equal => take(category, tag)?,
                        Ordering::Greater => {
                            pending = Some((k.to_string(), category.to_string(), tag.to_string()));
                        }
                    }
                }
            }
            None => {
                let mut t = tags_of.query([item_key])?;
                while let Some(t) = t.next()? {
                    take(
                        text(t.get_ref(0)?, "category", |p| bad_tag(item_key, p))?,
                        text(t.get_ref(1)?, "tag", |p| bad_tag(item_key, p))?,
                    )?;
                }
            }
        }
        new.sort_unstable();
        new.dedup();
        old.clear();
        if !added {
            match old_links.get(&id) {
                Some(tags) => old.extend_from_slice(tags),
                None => {
                    for tag in links_of.query_map([id], |r| r.get(0))? {
                        old.push(tag?);
                    }
                }
            }
            old.sort_unstable();
        }
        for tag in old.iter().filter(|t| new.binary_search(t).is_err()) {
            unlink.execute(params![id, tag])?;
        }
        for &tag in new.iter().filter(|t| old.binary_search(t).is_err()) {
            new_links.push([id.into(), tag.into()])?;
        }
        linked(id, counted, &new)?;
    }
    new_links.finish()?;
    Ok(())
}

/// A tag's identity in the pool (name, category, source) as one map key, in `key`.
pub(super) fn tag_key(key: &mut String, name: &str, category: &str, source: &str) {
    key.clear();
    for (i, part) in [name, category, source].into_iter().enumerate() {
        if i > 0 {
            key.push('\u{1f}');
        }
        key.push_str(part);
    }
}
