//! Tidy: cheap textual checks that keep the code base honest.
//!
//! Each rule is a line in a table, so later work adds rules without new code:
//! * every library crate's `lib.rs` (and each binary's `main.rs`) opens with a `//!` module doc;
//! * no line of Rust is longer than 100 characters (rustfmt does not wrap comments);
//! * no stray debugging or unfinished-work markers anywhere;
//! * no ambient randomness or wall clock where determinism is promised;
//! * the crates depend on each other only along the layers of `docs/architecture.md`
//!   ([`LAYERS`]): a normal dependency on another workspace crate that the table does not
//!   allow fails, and so does a crate the table does not know.

use std::fs;
use std::path::{Path, PathBuf};

const MAX_LINE: usize = 100;

/// A crate root may open with this: its README as the first part of the crate docs.
const README_DOC: &str = "#![doc = include_str!(\"../README.md\")]";

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

/// Each workspace crate under `crates/` and the workspace crates it may depend on (normal
/// dependencies; tests, examples and benchmarks may use anything). This is the graph drawn in
/// `docs/architecture.md`; change both together.
const LAYERS: &[(&str, &[&str])] = &[
    ("labrpc", &[]),
    ("linearizability", &[]),
    ("lsm", &[]),
    ("raft", &[]),
    ("kvproto", &[]),
    ("raft-tcp", &["raft"]),
    ("kvclient", &["kvproto"]),
    ("kvserver", &["kvproto", "lsm", "raft"]),
    ("raftkv", &["kvclient", "kvproto", "kvserver", "lsm", "raft", "raft-tcp"]),
    // Never published: the labrpc adapters for tests, labs and benchmarks.
    ("testkit", &["kvclient", "kvproto", "kvserver", "labrpc", "lsm", "raft", "raft-tcp"]),
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
    check_layers(root, &mut problems);
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
    // A crate root opens with its design (`//!`), or with its README as the crate docs and then
    // the design.
    let opening = text.trim_start();
    let opening = opening.strip_prefix(README_DOC).map_or(opening, str::trim_start);
    if is_crate_root && !opening.starts_with("//!") {
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

/// Checks every `crates/*/Cargo.toml` against [`LAYERS`]. A crate is known by its directory
/// name, which is also the key other crates depend on it by (`raft = { workspace = true }`,
/// the package being `raftkv-raft`).
fn check_layers(root: &Path, problems: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(root.join("crates")) else {
        problems.push("crates/: cannot be listed".into());
        return;
    };
    let mut dirs: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.join("Cargo.toml").is_file()).collect();
    dirs.sort();
    let names: Vec<String> =
        dirs.iter().filter_map(|d| d.file_name()).map(|n| n.to_string_lossy().into()).collect();
    for (dir, name) in dirs.iter().zip(&names) {
        let manifest = dir.join("Cargo.toml");
        let rel = manifest.strip_prefix(root).unwrap_or(&manifest).to_string_lossy().into_owned();
        match fs::read_to_string(&manifest) {
            Ok(text) => layer_problems(&rel, name, &text, &names, problems),
            Err(e) => problems.push(format!("{rel}: cannot be read: {e}")),
        }
    }
}

/// The problems of crate `name`'s manifest: its normal dependencies on `workspace` crates that
/// [`LAYERS`] does not allow.
fn layer_problems(
    rel: &str,
    name: &str,
    text: &str,
    workspace: &[String],
    problems: &mut Vec<String>,
) {
    let Some((_, allowed)) = LAYERS.iter().find(|(n, _)| *n == name) else {
        problems.push(format!(
            "{rel}: crate `{name}` has no place in the layer table (xtask/src/tidy.rs LAYERS); \
             add it there and to docs/architecture.md"
        ));
        return;
    };
    for dep in normal_dependencies(text) {
        if dep != name && workspace.contains(&dep) && !allowed.contains(&dep.as_str()) {
            problems.push(format!(
                "{rel}: `{name}` must not depend on `{dep}` (see docs/architecture.md, \
                 \"Dependency lines\")"
            ));
        }
    }
}

/// The names in the `[dependencies]` sections (plain and per target), not the dev or build
/// ones.
fn normal_dependencies(manifest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]"
                || (line.starts_with("[target.") && line.ends_with(".dependencies]"));
            continue;
        }
        if !in_deps || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.split(['=', '.', ' ']).next().unwrap_or("").trim();
        if !key.is_empty() {
            out.push(key.to_owned());
        }
    }
    out
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
        let readme = format!("{README_DOC}\n//!\n//! # Design\nfn f() {{}}\n");
        assert!(problems("crates/x/src/lib.rs", &readme).is_empty());
        let readme_only = format!("{README_DOC}\nfn f() {{}}\n");
        assert!(problems("crates/x/src/lib.rs", &readme_only)[0].contains("module doc"));
    }

    fn layer_check(manifest: &str) -> Vec<String> {
        let workspace: Vec<String> =
            ["raft", "lsm", "labrpc", "kvserver"].iter().map(|s| s.to_string()).collect();
        let name = manifest.split('"').nth(1).unwrap_or("");
        let mut p = Vec::new();
        layer_problems("crates/x/Cargo.toml", name, manifest, &workspace, &mut p);
        p
    }

    #[test]
    fn dependencies_against_the_layers_are_reported() {
        let raft_ok = "[package]\nname = \"raft\"\n[dependencies]\nbytes.workspace = true\n\
                       [dev-dependencies]\nlabrpc.workspace = true\n";
        assert!(layer_check(raft_ok).is_empty(), "dev-dependencies are free");
        let raft_bad = "[package]\nname = \"raft\"\n[dependencies]\n# a comment\n\
                        labrpc.workspace = true\nlsm = { path = \"../lsm\" }\n";
        let p = layer_check(raft_bad);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("`raft` must not depend on `labrpc`"), "{p:?}");
        assert!(p[1].contains("`raft` must not depend on `lsm`"), "{p:?}");
        let kv = "[package]\nname = \"kvserver\"\n[target.'cfg(unix)'.dependencies]\n\
                  raft = { path = \"../raft\" }\nlabrpc = { path = \"../labrpc\" }\n";
        let p = layer_check(kv);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("on `labrpc`"), "{p:?}");
        let stranger = "[package]\nname = \"newcrate\"\n";
        assert!(layer_check(stranger)[0].contains("no place in the layer table"));
    }

    #[test]
    fn the_workspace_follows_its_layers() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut p = Vec::new();
        check_layers(root, &mut p);
        assert!(p.is_empty(), "{p:?}");
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
