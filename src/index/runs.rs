//! The index's rows as they arrive, in sorted runs, merged into its tables.
//!
//! `IndexWriter` receives rows as the shards are written: by volume, then key, then the
//! parent's carried rows in key order. Each volume's rows are therefore already sorted,
//! and the arrived rows are a few sorted runs. Merging the runs' keys gives the order of
//! the whole release as segments: consecutive items of one run, whose rows (and their
//! members' and tags' rows, stored just as consecutively) SQLite copies into the main
//! tables with one statement each. Nothing is sorted twice and nothing is held but a
//! key per run. SQLite's sorter, handed the same rows with `ORDER BY`, wrote all of
//! them out once more as its own runs, so a publish held three copies of its index
//! rows at once (arrived, sorter runs, the tables filling): 12.7 GB each at ten
//! million items.

use std::collections::BinaryHeap;

use rusqlite::{Connection, Row};

/// More runs than this are sorted by SQLite instead: each run holds a prepared statement
/// while the runs are merged, and a release of thousands of tiny volumes is not what
/// the merge is for.
pub const MAX_RUNS: usize = 1024;

/// Rowids in the three arrived tables: items, members, tags.
pub type Rowids = [i64; 3];

/// Where the runs start in the arrived tables, found from the items' keys as they come.
pub struct Runs {
    starts: Vec<Rowids>,
    /// The rowids the next rows will get (SQLite numbers a fresh table's rows from 1).
    next: Rowids,
    last_key: String,
}

impl Default for Runs {
    fn default() -> Self {
        Self {
            starts: Vec::new(),
            next: [1; 3],
            last_key: String::new(),
        }
    }
}

/// Copies one segment's rows of one table, in the table's order (the rowid order).
const COPY: [&str; 3] = [
    "INSERT INTO main.items SELECT key, shard, volume, hash, record FROM arrived.items
     WHERE rowid BETWEEN ?1 AND ?2 ORDER BY rowid",
    "INSERT INTO main.members SELECT key, ext, offset, length, blake3 FROM arrived.members
     WHERE rowid BETWEEN ?1 AND ?2 ORDER BY rowid",
    "INSERT INTO main.tags SELECT key, category, tag FROM arrived.tags
     WHERE rowid BETWEEN ?1 AND ?2 ORDER BY rowid",
];

impl Runs {
    /// Notes an item about to be inserted with its member and tag rows, each in their
    /// table's order, and says where its rows go: a key not above the last one starts
    /// a run.
    pub fn item(&mut self, key: &str, members: usize, tags: usize) -> Rowids {
        if self.starts.is_empty() || key <= self.last_key.as_str() {
            self.starts.push(self.next);
        }
        self.last_key.clear();
        self.last_key.push_str(key);
        let at = self.next;
        self.next[0] += 1;
        self.next[1] += members as i64;
        self.next[2] += tags as i64;
        at
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Moves every arrived row into the main table of the same name, in key order.
    pub fn merge(&self, conn: &Connection) -> rusqlite::Result<()> {
        let ends: Vec<Rowids> = self
            .starts
            .iter()
            .skip(1)
            .copied()
            .chain([self.next])
            .collect();
        let mut copies = COPY
            .iter()
            .map(|sql| conn.prepare(sql))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut copy = |from: Rowids, to: Rowids| -> rusqlite::Result<()> {
            for (t, statement) in copies.iter_mut().enumerate() {
                if to[t] > from[t] {
                    statement.execute([from[t], to[t] - 1])?;
                }
            }
            Ok(())
        };
        let mut statements = self
            .starts
            .iter()
            .map(|_| {
                conn.prepare(
                    "SELECT rowid, key, members_at, tags_at FROM arrived.items
                     WHERE rowid BETWEEN ?1 AND ?2 ORDER BY rowid",
                )
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut cursors = statements
            .iter_mut()
            .zip(self.starts.iter().zip(&ends))
            .map(|(s, (start, end))| s.query([start[0], end[0] - 1]))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // Per run: the rows of its first item not yet copied (its end once all are).
        let mut next_at = ends.clone();
        let mut heap = BinaryHeap::with_capacity(cursors.len());
        for (run, cursor) in cursors.iter_mut().enumerate() {
            let mut head = Head {
                key: String::new(),
                at: [0; 3],
                run,
            };
            if head.fill(cursor.next()?)? {
                next_at[run] = head.at;
                heap.push(head);
            }
        }
        // The segment being gathered: its run and where its rows start.
        let mut segment: Option<(usize, Rowids)> = None;
        while let Some(mut head) = heap.pop() {
            match segment {
                Some((run, _)) if run == head.run => {}
                _ => {
                    if let Some((run, from)) = segment {
                        copy(from, next_at[run])?;
                    }
                    segment = Some((head.run, head.at));
                }
            }
            let run = head.run;
            if head.fill(cursors[run].next()?)? {
                next_at[run] = head.at;
                heap.push(head);
            } else {
                next_at[run] = ends[run];
            }
        }
        if let Some((run, from)) = segment {
            copy(from, next_at[run])?;
        }
        Ok(())
    }
}

/// A run's next item: its key and where its rows start.
struct Head {
    key: String,
    at: Rowids,
    run: usize,
}

impl Head {
    /// Takes `row` in, reusing the key's string; false at the run's end.
    fn fill(&mut self, row: Option<&Row<'_>>) -> rusqlite::Result<bool> {
        let Some(row) = row else {
            return Ok(false);
        };
        self.key.clear();
        self.key
            .push_str(&String::from_utf8_lossy(row.get_ref(1)?.as_bytes()?));
        self.at = [row.get(0)?, row.get(2)?, row.get(3)?];
        Ok(true)
    }
}

impl Ord for Head {
    /// Reversed, so that `BinaryHeap`, a max-heap, pops the lowest key first. Keys
    /// compare as SQLite's BINARY collation does, byte by byte.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.as_bytes().cmp(other.key.as_bytes()).reverse()
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Head {}
