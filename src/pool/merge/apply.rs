//! Applying a classified release to the pool's items: changed, restored and moved
//! items updated in place, touching only the indexes whose columns change.

use std::collections::HashMap;

use rusqlite::Connection;

use crate::pool::schema;

/// Updates the changed, restored and moved items in place. SQLite rewrites an item's
/// entry in every index whose columns an UPDATE assigns, whether the value changed or
/// not (a seek to delete it, one to insert it, and its page goes to the log), so each
/// row assigns only the indexed record columns whose values differ: a changed score
/// touches the score index and no other.
pub(super) fn update_items(tx: &Connection, rel: i64) -> rusqlite::Result<()> {
    let record = schema::RECORD_COLUMNS;
    let indexed = schema::INDEXED_RECORD_COLUMNS;
    let new_values: Vec<String> = record
        .iter()
        .map(|(_, e)| e.replace("$R", "n.record"))
        .collect();
    let old_values: Vec<String> = indexed.iter().map(|c| format!("i.{c}")).collect();
    let mut rows = tx.prepare(&format!(
        "SELECT n.item, n.shard, n.hash, n.volume,
                CASE n.fate WHEN 'moved' THEN i.record_id ELSE n.record_id END,
                {}, i.changed_in, n.fate, {}
         FROM incoming n JOIN items i ON i.id = n.item
         WHERE n.fate IN ('changed', 'restored', 'moved') ORDER BY n.item",
        new_values.join(", "),
        old_values.join(", ")
    ))?;
    // Parameters: ?1 item, ?2 shard, ?3 hash, ?4 volume, ?5 record id, then the record
    // columns, then changed_in; the statement for a set of changed indexed columns
    // (bit k: indexed[k]) and a restore names those it assigns.
    let changed_in = 6 + record.len();
    // Where each indexed column is among the record columns (its parameter is 6 + that).
    let indexed_at: Vec<usize> = indexed
        .iter()
        .map(|c| {
            record
                .iter()
                .position(|(r, _)| r == c)
                .expect("an indexed column is a record column")
        })
        .collect();
    let mut statements: HashMap<(u32, bool), rusqlite::Statement<'_>> = HashMap::new();
    let mut values: Vec<rusqlite::types::Value> = Vec::with_capacity(changed_in);
    let mut rows = rows.query([])?;
    while let Some(r) = rows.next()? {
        values.clear();
        for c in 0..changed_in - 1 {
            values.push(r.get(c)?);
        }
        let fate = r.get_ref(changed_in)?.as_str()?;
        let restored = fate == "restored";
        values.push(if fate == "moved" {
            r.get(changed_in - 1)?
        } else {
            rel.into()
        });
        let mut mask = 0u32;
        for (k, &at) in indexed_at.iter().enumerate() {
            let old: rusqlite::types::Value = r.get(changed_in + 1 + k)?;
            if values[5 + at] != old {
                mask |= 1 << k;
            }
        }
        let st = match statements.entry((mask, restored)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut set = vec![
                    "shard = ?2".to_string(),
                    "hash = ?3".into(),
                    "volume = ?4".into(),
                    "record_id = ?5".into(),
                ];
                for (j, (column, _)) in record.iter().enumerate() {
                    let k = indexed_at.iter().position(|&at| at == j);
                    if k.is_none_or(|k| mask & (1 << k) != 0) {
                        set.push(format!("{column} = ?{}", 6 + j));
                    }
                }
                set.push(format!("changed_in = ?{changed_in}"));
                if restored {
                    set.push("removed_in = NULL".into());
                }
                e.insert(tx.prepare(&format!(
                    "UPDATE items SET {} WHERE id = ?1",
                    set.join(", ")
                ))?)
            }
        };
        st.execute(rusqlite::params_from_iter(values.iter()))?;
    }
    Ok(())
}
