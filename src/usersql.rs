//! SQL a user gives (`query --sql`, `--where` of sync and extract), run on seedpool's
//! own connections: one statement only (SQLite would compile the first and ignore the
//! rest), reads only (an authorizer, whatever the statement claims), and a time limit.

use std::sync::{Arc, Mutex};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};

/// Where the first statement of `sql` ends: the byte offset of the first `;` outside
/// string literals, quoted names and comments, if there is one.
pub fn statement_end(sql: &str) -> Option<usize> {
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' | '"' | '`' | '[' => {
                let close = if c == '[' { ']' } else { c };
                for (_, d) in chars.by_ref() {
                    if d == close {
                        break;
                    }
                }
            }
            '-' if chars.peek().map(|p| p.1) == Some('-') => {
                for (_, d) in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek().map(|p| p.1) == Some('*') => {
                chars.next();
                let mut star = false;
                for (_, d) in chars.by_ref() {
                    if star && d == '/' {
                        break;
                    }
                    star = d == '*';
                }
            }
            ';' => return Some(i),
            _ => {}
        }
    }
    None
}

/// What follows the first statement of `sql`, when it is more than semicolons, spaces
/// and comments: SQLite compiles only the first statement and would ignore the rest.
pub fn second_statement(sql: &str) -> Option<&str> {
    let mut rest = sql;
    while let Some(end) = statement_end(rest) {
        rest = &rest[end + 1..];
        let trimmed = strip_trivia(rest);
        if trimmed.is_empty() {
            return None;
        }
        if !trimmed.starts_with(';') {
            let shown_len = trimmed
                .char_indices()
                .nth(40)
                .map_or(trimmed.len(), |(i, _)| i);
            return Some(&trimmed[..shown_len]);
        }
    }
    None
}

/// `sql` without its leading spaces and comments.
fn strip_trivia(mut sql: &str) -> &str {
    loop {
        let t = sql.trim_start();
        if let Some(rest) = t.strip_prefix("--") {
            sql = rest.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(rest) = t.strip_prefix("/*") {
            sql = rest.split_once("*/").map_or("", |(_, r)| r);
        } else {
            return t;
        }
    }
}

/// Stops statements on `conn` once `limit` has passed (SQLite's progress handler,
/// checked every few thousand virtual machine steps); returns the flag that says it
/// fired, to tell a timeout from other interruptions.
pub fn time_limit(
    conn: &rusqlite::Connection,
    limit: std::time::Duration,
) -> Arc<std::sync::atomic::AtomicBool> {
    let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&fired);
    let deadline = std::time::Instant::now() + limit;
    conn.progress_handler(
        10_000,
        Some(move || {
            let over = std::time::Instant::now() >= deadline;
            if over {
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            over
        }),
    );
    fired
}

/// Lets `conn` only read from now on: an authorizer denies writes, ATTACH and pragmas,
/// and names what it denied in the returned slot (for the error message).
pub fn read_only_guard(conn: &rusqlite::Connection) -> Arc<Mutex<Option<String>>> {
    let denied = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&denied);
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        let refuse = |what: String| {
            if let Ok(mut s) = slot.lock() {
                s.get_or_insert(what);
            }
            Authorization::Deny
        };
        match ctx.action {
            AuthAction::Select
            | AuthAction::Read { .. }
            | AuthAction::Function { .. }
            | AuthAction::Recursive => Authorization::Allow,
            AuthAction::Insert { table_name } => refuse(format!("INSERT into `{table_name}`")),
            AuthAction::Update { table_name, .. } => refuse(format!("UPDATE of `{table_name}`")),
            AuthAction::Delete { table_name } => refuse(format!("DELETE from `{table_name}`")),
            AuthAction::Attach { filename } => refuse(format!("ATTACH of `{filename}`")),
            AuthAction::Pragma { pragma_name, .. } => refuse(format!("PRAGMA `{pragma_name}`")),
            other => refuse(format!("{other:?}")),
        }
    }));
    denied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_statement_is_taken() {
        assert_eq!(second_statement("SELECT 1"), None);
        assert_eq!(second_statement("SELECT 1;"), None);
        assert_eq!(second_statement("SELECT ';' ; -- done\n ; /* x */ "), None);
        assert_eq!(
            second_statement("SELECT 1; DELETE FROM items"),
            Some("DELETE FROM items")
        );
        assert_eq!(
            second_statement("SELECT 1;;\n/*c*/ SELECT 2"),
            Some("SELECT 2")
        );
        assert_eq!(statement_end("key = 'a;b' AND \"x;\" = 1 -- ;\n"), None);
        assert_eq!(statement_end("1 /* ; */ ; 2"), Some(10));
    }
}
