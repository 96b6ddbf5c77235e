//! Tidy: cheap textual checks that keep the code base honest.
//!
//! Each rule is a line in a table, so later work adds rules without new code:
//! * every library crate's `lib.rs` (and each binary's `main.rs`) opens with a `//!` module doc;
//! * no line of Rust is longer than 100 characters (rustfmt does not wrap comments);
//! * no stray debugging or unfinished-work markers anywhere;
//! * no ambient randomness or wall clock where determinism is promised.

use std::fs;
use std::path::{Path, PathBuf};

const MAX_LINE: usize = 100;

/// (path prefix, banned text, why). The banned texts are split so this file does not match them.
const BANNED: &[(&str, &[&str], &str)] = &[
    ("", &["db", "g!("], "remove debugging output before committing"),
    ("", &["to", "do!("], "unfinished code must not be committed; file an issue instead"),
    ("", &["FIX", "ME"], "fix it or file an issue"),
    (
        "crates/labrpc/src",
        &["thread", "_rng"],
        "labrpc's randomness must come from its seeded generator",
    ),
    (
        "crates/labrpc/src",
        &["rand", "::"],
        "labrpc's randomness must come from its seeded generator",
    ),
];

/// Runs every check under `root`; prints each problem and returns how many there were.
pub(crate) fn run(root: &Path) -> Result<(), usize> {
    let mut problems = Vec::new();
    for dir in ["crates", "xtask", "benches"] {
        for file in rust_files(&root.join(dir)) {
            let rel = file.strip_prefix(root).unwrap_or(&file).to_string_lossy().into_owned();
            let Ok(text) = fs::read_to_string(&file) else {
                problems.push(format!("{rel}: cannot be read as UTF-8"));
                continue;
            };
            check_file(&rel, &text, &mut problems);
        }
    }
    for p in &problems {
        println!("tidy: {p}");
    }
    if problems.is_empty() {
        println!("tidy: ok");
        Ok(())
    } else {
        Err(problems.len())
    }
}

fn check_file(rel: &str, text: &str, problems: &mut Vec<String>) {
    let is_crate_root = rel.ends_with("src/lib.rs") || rel.ends_with("src/main.rs");
    if is_crate_root && !text.trim_start().starts_with("//!") {
        problems.push(format!("{rel}: must open with a //! module doc explaining the design"));
    }
    for (n, line) in text.lines().enumerate() {
        let width = line.chars().count();
        if width > MAX_LINE {
            problems
                .push(format!("{rel}:{}: line is {width} characters (limit {MAX_LINE})", n + 1));
        }
        for (prefix, parts, why) in BANNED {
            let banned = parts.concat();
            if rel.starts_with(prefix) && line.contains(&banned) {
                problems.push(format!("{rel}:{}: `{banned}`: {why}", n + 1));
            }
        }
    }
}

/// Every `.rs` file under `dir`, sorted, skipping build output.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_none_or(|n| n != "target") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(rel: &str, text: &str) -> Vec<String> {
        let mut p = Vec::new();
        check_file(rel, text, &mut p);
        p
    }

    #[test]
    fn clean_file_passes() {
        assert!(problems("crates/x/src/lib.rs", "//! Docs.\nfn f() {}\n").is_empty());
    }

    #[test]
    fn missing_module_doc_is_reported() {
        let p = problems("crates/x/src/lib.rs", "fn f() {}\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("module doc"));
        assert!(problems("crates/x/src/other.rs", "fn f() {}\n").is_empty());
    }

    #[test]
    fn long_lines_and_banned_text_are_reported() {
        let long = format!("//! d\n{}\n", "x".repeat(MAX_LINE + 1));
        assert_eq!(problems("a.rs", &long).len(), 1);
        let debug = format!("//! d\nfn f() {{ {}1); }}\n", ["db", "g!("].concat());
        assert!(problems("crates/raft/src/lib.rs", &debug)[0].contains("debugging"));
        let rng = format!("let r = {}();\n", ["thread", "_rng"].concat());
        assert_eq!(problems("crates/labrpc/src/x.rs", &rng).len(), 1);
        assert!(problems("crates/raft/src/x.rs", &rng).is_empty(), "rule is scoped to labrpc");
    }
}
