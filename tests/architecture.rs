//! Dependencies point one way: every `crate::` path in a module names a module of a
//! lower layer, in the order docs/architecture.md gives. A new edge against the flow
//! fails here with the file and line that made it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The layers of docs/architecture.md's `layers` block, top first.
fn layers() -> Vec<Vec<String>> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/architecture.md")).unwrap();
    let block = doc
        .split("```layers\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/architecture.md has a ```layers block");
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The top-level modules `src/lib.rs` declares.
fn modules() -> Vec<String> {
    let lib = std::fs::read_to_string(Path::new(ROOT).join("src/lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .map(str::to_string)
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module names a line reaches through `crate::`: `crate::a::x` gives `a`,
/// `crate::{a::x, b}` gives `a` and `b`.
fn reached(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in line.match_indices("crate::") {
        if i > 0 && line[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // `seedpool_crate::` and the like
        }
        let rest = &line[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            let mut at_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        if !item.is_empty() {
                            out.push(std::mem::take(&mut item));
                        }
                        at_start = true;
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 && at_start {
                    if c.is_alphanumeric() || c == '_' {
                        item.push(c);
                    } else if !item.is_empty() {
                        out.push(std::mem::take(&mut item));
                        at_start = false;
                    }
                }
            }
            if !item.is_empty() {
                out.push(item);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let layers = layers();
    let mut rank: HashMap<String, usize> = HashMap::new();
    for (i, layer) in layers.iter().enumerate() {
        for m in layer {
            assert!(
                rank.insert(m.clone(), layers.len() - i).is_none(),
                "`{m}` is in two layers of docs/architecture.md"
            );
        }
    }
    let modules = modules();
    for m in &modules {
        assert!(
            rank.contains_key(m),
            "module `{m}` of src/lib.rs is in no layer of docs/architecture.md"
        );
    }
    for m in rank.keys() {
        assert!(
            modules.contains(m),
            "docs/architecture.md names `{m}`, which src/lib.rs does not declare"
        );
    }

    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut against = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let from = first.trim_end_matches(".rs").to_string();
        let Some(&from_rank) = rank.get(&from) else {
            continue; // lib.rs and main.rs sit above every layer
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for to in reached(code) {
                match rank.get(&to) {
                    Some(&to_rank) if to != from && to_rank >= from_rank => against.push(format!(
                        "src/{}:{}: `{from}` uses `{to}`",
                        rel.display(),
                        n + 1
                    )),
                    _ => {}
                }
            }
        }
    }
    assert!(
        against.is_empty(),
        "dependencies against the layers of docs/architecture.md:\n{}",
        against.join("\n")
    );
}

#[test]
fn paths_are_read_as_rust_writes_them() {
    assert_eq!(reached("use crate::pool::{Pool, PoolError};"), ["pool"]);
    assert_eq!(
        reached("use crate::{index::{self, IndexLimit}, manifest, name::Key};"),
        ["index", "manifest", "name"]
    );
    assert_eq!(
        reached("let t = crate::index::Timings::new(\"\"); crate::files::x()"),
        ["index", "files"]
    );
    assert!(reached("use seedpool::pool::Pool;").is_empty());
}
